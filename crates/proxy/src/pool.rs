//! Keep-alive HTTP/1.1 connections to plain-text upstream endpoints, pooled per
//! endpoint address.
//!
//! Written here rather than taken from hyper-util's legacy client, whose pool the
//! profile showed as the largest piece of the request path still in meshbox's hands
//! (about 8k instructions a request with the send: a pool keyed by scheme and
//! authority, hashed byte by byte with SipHash, and a connection put back through a
//! spawned readiness check). Here the key is the endpoint's `SocketAddr`, each endpoint
//! has its own short lock (held to push or pop one connection; never a lock over all
//! endpoints on the request path once an endpoint is known), and a connection goes back
//! to its endpoint when its response body ends. TLS origination still goes through
//! hyper-util's client (tls.rs).
//!
//! A request without a body (most requests) is exchanged by the request's own task
//! over an [`H1Connection`] (h1.rs); a request with a body goes through hyper's client
//! connection, which sends the body while it reads the answer. Each kind has its own
//! idle connections.
//!
//! As Envoy and hyper-util do, a request that a reused connection could not take (the
//! upstream closed it while idle) is sent again on a new connection. A connection idle
//! longer than its timeout (its cluster's DestinationRule `connectionPool.http.idleTimeout`,
//! else [`IDLE_TIMEOUT`]) is closed when its endpoint is next used, and in any case by
//! [`UpstreamPool::sweep`], which the proxy runs every half of the shortest timeout in its
//! tables; the sweep also drops connections the upstream has closed and forgets endpoints left
//! with no connection (a pod deleted, a DNS answer changed), as Envoy drains the pools
//! of hosts that leave a cluster. Without it, a connection to an endpoint never used
//! again would stay open for good (half closed once the upstream goes, holding a
//! descriptor), and the endpoint's entry with it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::body::{BoxError, ProxyBody};
use crate::h1::{H1Body, H1Connection, H1Error};
use crate::sharded::CopyOnWriteMap;

/// How long an idle upstream connection is kept when its cluster sets no
/// `connectionPool.http.idleTimeout` (and always in hyper-util's clients for TLS
/// origination and mirrors). Envoy's default is one hour (envoyproxy.io, FAQ "How do I
/// configure timeouts?": HTTP protocol `idle_timeout`); meshbox keeps a minute, so that
/// connections to endpoints that are gone do not wait an hour to close.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Istio's connect timeout for a cluster whose DestinationRule sets none
/// (`meshConfig.connectTimeout`, 10 s by default).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a cluster's upstream connections are opened and reused (its DestinationRule's
/// `connectionPool`: Istio sets `tcp.connectTimeout` as the cluster's
/// `connect_timeout`, and the idle timeout and request limit as its
/// `common_http_protocol_options`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnPolicy {
    /// How long opening a connection may take (`tcp.connectTimeout`, else
    /// [`DEFAULT_CONNECT_TIMEOUT`]).
    pub(crate) connect_timeout: Duration,
    /// How long a connection may stay idle (`idleTimeout`, else [`IDLE_TIMEOUT`]).
    pub(crate) idle_timeout: Duration,
    /// How many requests a connection serves before it closes
    /// (`maxRequestsPerConnection`; 1 turns keep-alive off; `u32::MAX`: no limit).
    pub(crate) max_requests: u32,
    /// How long after it opened a connection is closed once idle
    /// (`tcp.maxConnectionDuration`; `None`: no limit).
    pub(crate) max_duration: Option<Duration>,
}

impl ConnPolicy {
    /// What a cluster's DestinationRule asks for.
    pub(crate) fn of(policy: &meshbox_routing::cluster_policy::ClusterPolicy) -> ConnPolicy {
        ConnPolicy {
            connect_timeout: policy.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            idle_timeout: policy.idle_timeout.unwrap_or(IDLE_TIMEOUT),
            max_requests: policy.max_requests_per_connection.unwrap_or(u32::MAX),
            max_duration: policy.max_connection_duration,
        }
    }
}

impl Default for ConnPolicy {
    fn default() -> ConnPolicy {
        ConnPolicy {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            max_requests: u32::MAX,
            max_duration: None,
        }
    }
}

/// Idle connections kept per endpoint: as many as Envoy's default circuit breaker
/// allows connections (`max_connections` 1024), so that a burst of concurrent requests
/// (HTTP/2 streams from one client, for one) does not end in closing and reopening
/// connections. The same limit holds for hyper-util's clients.
pub(crate) const MAX_IDLE_PER_ENDPOINT: usize = 1024;

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub(crate) enum UpstreamError {
    /// The TCP connection could not be opened (Envoy: connection failure, `UF`).
    Connect(std::io::Error),
    /// The connection failed or was closed while the request was sent or before the
    /// response headers arrived (Envoy: connection termination, `UC`).
    Exchange(hyper::Error),
    /// The same, on a connection this proxy drives itself (a request without a body).
    Plain(H1Error),
}

impl UpstreamError {
    /// Why the exchange broke off; `None` when the connection could not be opened.
    pub(crate) fn reset_reason(&self) -> Option<crate::reset::ResetReason> {
        match self {
            UpstreamError::Connect(_) => None,
            UpstreamError::Exchange(e) => Some(crate::reset::ResetReason::of(e)),
            UpstreamError::Plain(e) => Some(crate::reset::ResetReason::of_h1(e)),
        }
    }

    /// The failure in words (`%UPSTREAM_TRANSPORT_FAILURE_REASON%`).
    pub(crate) fn reason(&self) -> String {
        match self {
            UpstreamError::Connect(e) => format!("tcp connect error: {e}"),
            UpstreamError::Exchange(e) => crate::proxy::error_chain(e),
            UpstreamError::Plain(e) => e.to_string(),
        }
    }
}

/// One proxy's pooled upstream connections.
pub(crate) struct UpstreamPool {
    /// By endpoint and worker thread; read without a lock.
    endpoints: CopyOnWriteMap<(SocketAddr, usize), Arc<EndpointConnections>>,
}

/// The idle connections to one endpoint, most recently used last.
#[derive(Default)]
struct EndpointConnections {
    /// hyper's client connections (and their local addresses), for requests with a
    /// body.
    idle: Mutex<Vec<Idle<HyperConnection>>>,
    /// Connections for requests without a body.
    plain: Mutex<Vec<Idle<H1Connection>>>,
}

/// One of hyper's client connections and its local address.
type HyperConnection = (SendRequest<ProxyBody>, SocketAddr);

/// An idle connection, since when it is idle, how long it may stay so (its cluster's
/// idle timeout), when its cluster's maximum connection duration retires it, and its
/// [`Usage`].
struct Idle<C> {
    conn: C,
    since: Instant,
    timeout: Duration,
    retire_at: Option<Instant>,
    usage: Usage,
}

impl<C> Idle<C> {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) > self.timeout
            || self.retire_at.is_some_and(|at| now >= at)
    }
}

/// What a connection has been used for so far: when it opened, and how many requests
/// it has served (the one in flight included while it is lent).
#[derive(Debug, Clone, Copy)]
struct Usage {
    opened: Instant,
    served: u32,
}

impl Usage {
    /// A connection opened now for its first request.
    fn first() -> Usage {
        Usage {
            opened: Instant::now(),
            served: 1,
        }
    }

    /// The same connection lent for one more request.
    fn next(self) -> Usage {
        Usage {
            served: self.served.saturating_add(1),
            ..self
        }
    }
}

/// Puts `conn`, used as `usage` says, with the idle connections of `idle` (dropping
/// the oldest ones whose timeout has passed), unless its cluster's policy retires it
/// (it closes, as Envoy closes a connection that reached `max_requests_per_connection`
/// or, once idle, `max_connection_duration`) or [`MAX_IDLE_PER_ENDPOINT`] are kept
/// already.
fn keep_idle<C>(idle: &Mutex<Vec<Idle<C>>>, conn: C, policy: ConnPolicy, usage: Usage) {
    if usage.served >= policy.max_requests {
        return;
    }
    let now = Instant::now();
    let retire_at = policy
        .max_duration
        .and_then(|d| usage.opened.checked_add(d));
    if retire_at.is_some_and(|at| now >= at) {
        return;
    }
    if let Ok(mut idle) = idle.lock() {
        drop_stale(&mut idle, now);
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(Idle {
                conn,
                since: now,
                timeout: policy.idle_timeout,
                retire_at,
                usage,
            });
        }
    }
}

/// Drops (closes) the connections at the front of `idle` whose timeout has passed at
/// `now`; returns how many. The oldest are first (connections are pushed as they
/// become idle and taken from the end), so with one timeout per endpoint (the common
/// case) these are all the expired ones; the sweep removes any others.
fn drop_stale<C>(idle: &mut Vec<Idle<C>>, now: Instant) -> usize {
    let stale = idle.iter().take_while(|c| c.expired(now)).count();
    idle.drain(..stale);
    stale
}

impl EndpointConnections {
    /// Closes the connections idle too long at `now` and drops those the upstream has
    /// closed meanwhile (a connection to an endpoint that went away would otherwise
    /// wait out the timeout half closed); returns how many, and whether any connection
    /// is left.
    fn sweep(&self, now: Instant) -> (usize, bool) {
        let mut closed = 0;
        let mut left = false;
        if let Ok(mut idle) = self.idle.lock() {
            let before = idle.len();
            idle.retain(|c| !c.expired(now) && !c.conn.0.is_closed());
            closed += before - idle.len();
            left |= !idle.is_empty();
        }
        if let Ok(mut plain) = self.plain.lock() {
            let before = plain.len();
            plain.retain_mut(|c| !c.expired(now) && c.conn.is_open_when_idle());
            closed += before - plain.len();
            left |= !plain.is_empty();
        }
        (closed, left)
    }
}

/// What one [`UpstreamPool::sweep`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Idle connections closed: idle too long, or closed by the upstream.
    pub(crate) closed: usize,
    /// Endpoints forgotten (no connection left, none lent).
    pub(crate) forgotten: usize,
}

/// A connection lent to one request until its response body ends.
pub(crate) struct Lease {
    endpoint: Arc<EndpointConnections>,
    sender: SendRequest<ProxyBody>,
    local: SocketAddr,
    /// Set once the request body has been sent whole; `None`: the request had none.
    request_sent: Option<Arc<AtomicBool>>,
    /// How the cluster whose request this is reuses connections.
    policy: ConnPolicy,
    /// What the connection has been used for, this request included.
    usage: Usage,
}

impl Lease {
    /// Gives the connection back for the next request, unless it is closing or still
    /// sending the request body: an upstream may answer before it has read the body
    /// (a refusal, say), and a request lent that connection would wait behind the rest
    /// of the body, for good if it never comes. Such a connection finishes its request
    /// and closes.
    fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        if let Some(sent) = &self.request_sent {
            if !sent.load(Ordering::Acquire) {
                return;
            }
        }
        keep_idle(
            &self.endpoint.idle,
            (self.sender, self.local),
            self.policy,
            self.usage,
        );
    }
}

impl UpstreamPool {
    /// An empty pool.
    pub(crate) fn new() -> UpstreamPool {
        UpstreamPool {
            endpoints: CopyOnWriteMap::default(),
        }
    }

    /// The connections to `addr` of the calling worker thread: each worker keeps its
    /// own (as each Envoy worker has its own pools), so a connection's task and the
    /// requests on it share a thread.
    fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointConnections> {
        let key = (addr, crate::workers::current_worker().unwrap_or(0));
        self.endpoints.get_or_add(&key, Arc::default)
    }

    /// Closes the connections idle longer than their timeout at `now`, drops those the
    /// upstream has closed, and forgets the endpoints that are left with none and that
    /// no request holds (a response still being read holds its endpoint until its
    /// connection is back). A request that looked its endpoint up just before may still
    /// get the forgotten entry: its connection then closes when the request ends instead
    /// of waiting idle.
    pub(crate) fn sweep(&self, now: Instant) -> Swept {
        let mut swept = Swept::default();
        swept.forgotten = self.endpoints.retain(|_, endpoint| {
            let (closed, left) = endpoint.sweep(now);
            swept.closed += closed;
            // One count is the map's own.
            left || Arc::strong_count(endpoint) > 1
        });
        swept
    }

    /// Sends a request (`parts`: origin-form URI, its own Host header) to `addr` on a
    /// pooled connection, or a new one; returns the response, whose body hands the
    /// connection back when it ends, and the local address of the connection. The head
    /// of a request without a body is written from `parts` as they are; a request with
    /// a body gets a copy of them. The connection is opened, given back or closed as
    /// the cluster's `policy` says.
    pub(crate) async fn send(
        &self,
        addr: SocketAddr,
        parts: &http::request::Parts,
        body: ProxyBody,
        policy: ConnPolicy,
    ) -> Result<(Response<ProxyBody>, SocketAddr), UpstreamError> {
        let endpoint = self.endpoint(addr);
        if body.is_end_stream() {
            return self.send_bodiless(addr, endpoint, parts, policy).await;
        }
        // Boxed: the rarer case, kept out of the state of every request without a body.
        let req = crate::proxy::copy_request(parts, body);
        let send = Box::pin(self.send_with_body(addr, endpoint, req, policy));
        send.await
    }

    /// A request without a body, on this proxy's own connections (h1.rs).
    async fn send_bodiless(
        &self,
        addr: SocketAddr,
        endpoint: Arc<EndpointConnections>,
        parts: &http::request::Parts,
        policy: ConnPolicy,
    ) -> Result<(Response<ProxyBody>, SocketAddr), UpstreamError> {
        loop {
            let reused = endpoint.plain.lock().ok().and_then(|mut idle| idle.pop());
            let Some(mut idle) = reused else { break };
            if idle.expired(Instant::now()) || !idle.conn.is_open_when_idle() {
                continue;
            }
            let local = idle.conn.local();
            match idle.conn.exchange(parts).await {
                Ok(resp) => {
                    let lent = lend_plain(resp, endpoint, policy, idle.usage.next());
                    return Ok((lent, local));
                }
                // Closed by the upstream as it was reused, before a byte of an answer:
                // an idempotent request goes again on another connection, as HTTP
                // clients do (RFC 9110 §9.2.2).
                Err(e) if e.is_unanswered() && parts.method.is_idempotent() => continue,
                Err(e) => return Err(UpstreamError::Plain(e)),
            }
        }
        // Boxed: a new connection is the rare case, kept out of every request's state.
        let usage = Usage::first();
        let connect = Box::pin(H1Connection::connect(addr, policy.connect_timeout));
        let conn = connect.await.map_err(UpstreamError::Connect)?;
        let local = conn.local();
        match conn.exchange(parts).await {
            Ok(resp) => Ok((lend_plain(resp, endpoint, policy, usage), local)),
            Err(e) => Err(UpstreamError::Plain(e)),
        }
    }

    /// A request with a body, on hyper's client connections.
    async fn send_with_body(
        &self,
        addr: SocketAddr,
        endpoint: Arc<EndpointConnections>,
        mut req: Request<ProxyBody>,
        policy: ConnPolicy,
    ) -> Result<(Response<ProxyBody>, SocketAddr), UpstreamError> {
        // The request says when its body has been sent whole (see `Lease`).
        let sent = Arc::new(AtomicBool::new(false));
        req = req.map(|body| sent_body(body, sent.clone()).boxed());
        let request_sent = Some(sent);
        loop {
            let reused = endpoint.idle.lock().ok().and_then(|mut idle| idle.pop());
            let Some(idle) = reused else {
                break;
            };
            let expired = idle.expired(Instant::now());
            let usage = idle.usage.next();
            let (mut sender, local) = idle.conn;
            if expired || sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease {
                        endpoint,
                        sender,
                        local,
                        request_sent,
                        policy,
                        usage,
                    };
                    return Ok(lend(resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not sent: the connection was closed meanwhile; try the next one.
                    Some(unsent) => req = unsent,
                    None => return Err(UpstreamError::Exchange(e.into_error())),
                },
            }
        }
        let usage = Usage::first();
        let (mut sender, local) = self.connect(addr, policy.connect_timeout).await?;
        match sender.send_request(req).await {
            Ok(resp) => {
                let lease = Lease {
                    endpoint,
                    sender,
                    local,
                    request_sent,
                    policy,
                    usage,
                };
                Ok(lend(resp, lease))
            }
            Err(e) => Err(UpstreamError::Exchange(e)),
        }
    }

    async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(SendRequest<ProxyBody>, SocketAddr), UpstreamError> {
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
            Err(_) => {
                return Err(UpstreamError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection timed out",
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().map_err(UpstreamError::Connect)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamError::Exchange)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("upstream connection to {addr} ended: {e}");
            }
        });
        Ok((sender, local))
    }
}

/// The response of a request with a body, whose body gives the connection back (see
/// [`Lease`]) when it ends.
fn lend(resp: Response<Incoming>, lease: Lease) -> (Response<ProxyBody>, SocketAddr) {
    let local = lease.local;
    let resp = resp.map(|inner| pooled_body(inner, lease).map_err(BoxError::from).boxed());
    (resp, local)
}

/// The response of a bodiless request, whose body puts the connection back in the
/// endpoint's pool when it ends.
/// `usage`: what the connection has been used for, this request included.
fn lend_plain(
    resp: Response<H1Body>,
    endpoint: Arc<EndpointConnections>,
    policy: ConnPolicy,
    usage: Usage,
) -> Response<ProxyBody> {
    resp.map(|inner| {
        let mut body = Watched {
            inner,
            state: (endpoint, policy, usage),
            watch: |body, (endpoint, policy, usage), seen| {
                if seen != Seen::Pending {
                    give_back_plain(body, endpoint, *policy, *usage);
                }
            },
        };
        // A response without a body (204, 304, HEAD) frees the connection at once.
        let (endpoint, policy, usage) = &body.state;
        give_back_plain(&mut body.inner, endpoint, *policy, *usage);
        body.map_err(BoxError::from).boxed()
    })
}

/// Puts the connection of a body that has ended back with its endpoint.
fn give_back_plain(
    body: &mut H1Body,
    endpoint: &EndpointConnections,
    policy: ConnPolicy,
    usage: Usage,
) {
    let Some(conn) = body.take_reusable() else {
        return;
    };
    keep_idle(&endpoint.plain, conn, policy, usage);
}

/// What a poll of a body gave, as far as a [`Watched`] body's watcher cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing yet.
    Pending,
    /// A frame; the body goes on.
    Frame,
    /// The last frame, or the end.
    End,
    /// An error.
    Failed,
}

/// A body passed through unchanged, with `watch` told of each poll's outcome; what
/// `watch` needs to remember is kept in `state`.
pub(crate) struct Watched<B, S> {
    inner: B,
    state: S,
    watch: fn(&mut B, &mut S, Seen),
}

impl<B, S> Body for Watched<B, S>
where
    B: Body<Data = Bytes> + Unpin,
    S: Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let seen = match &polled {
            Poll::Pending => Seen::Pending,
            Poll::Ready(None) => Seen::End,
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Seen::End,
            Poll::Ready(Some(Ok(_))) => Seen::Frame,
            Poll::Ready(Some(Err(_))) => Seen::Failed,
        };
        (this.watch)(&mut this.inner, &mut this.state, seen);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that sets its flag once it has been read to its end.
fn sent_body(body: ProxyBody, sent: Arc<AtomicBool>) -> Watched<ProxyBody, Arc<AtomicBool>> {
    Watched {
        inner: body,
        state: sent,
        watch: |_, sent, seen| {
            if seen == Seen::End {
                sent.store(true, Ordering::Release);
            }
        },
    }
}

/// A response body from one of hyper's pooled connections: the connection goes back
/// to its endpoint's pool when the body has been read to its end. A body dropped
/// before its end takes the connection with it (HTTP/1.1 cannot policy it mid-message).
type PooledBody = Watched<Incoming, Option<Lease>>;

fn pooled_body(inner: Incoming, lease: Lease) -> PooledBody {
    let mut body = Watched {
        inner,
        state: Some(lease),
        watch: |_, lease, seen| match seen {
            Seen::End => release(lease),
            // An error leaves the connection unusable: drop it.
            Seen::Failed => *lease = None,
            Seen::Pending | Seen::Frame => {}
        },
    };
    // A response without a body (204, 304, HEAD) frees the connection at once.
    if body.inner.is_end_stream() {
        release(&mut body.state);
    }
    body
}

fn release(lease: &mut Option<Lease>) {
    if let Some(lease) = lease.take() {
        lease.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An HTTP/1.1 server on loopback that answers `ok` to every request; with
    /// `close_after_each`, it closes the connection after each answer without saying so
    /// (as an upstream whose idle timeout is short does). Returns its address and the
    /// count of connections it accepted.
    async fn upstream(close_after_each: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let (addr, accepted, _) = upstream_counting_closes(close_after_each).await;
        (addr, accepted)
    }

    /// [`upstream`], also counting the connections that the client side closed.
    async fn upstream_counting_closes(
        close_after_each: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let closes = closed.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let closes = closes.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            closes.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                            if close_after_each {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted, closed)
    }

    fn get() -> Request<ProxyBody> {
        Request::builder()
            .uri("/")
            .header(http::header::HOST, "upstream")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("request")
    }

    /// `pool.send` with a whole request, for a cluster with the default idle timeout.
    async fn send(
        pool: &UpstreamPool,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, SocketAddr), UpstreamError> {
        send_reusing(pool, addr, req, ConnPolicy::default()).await
    }

    /// The same for a cluster that reuses its connections as `policy` says.
    async fn send_reusing(
        pool: &UpstreamPool,
        addr: SocketAddr,
        req: Request<ProxyBody>,
        policy: ConnPolicy,
    ) -> Result<(Response<ProxyBody>, SocketAddr), UpstreamError> {
        let (parts, body) = req.into_parts();
        pool.send(addr, &parts, body, policy).await
    }

    /// Sends `req` as a request of a cluster with `policy` and checks the answer.
    async fn answered(
        pool: &UpstreamPool,
        addr: SocketAddr,
        req: Request<ProxyBody>,
        policy: ConnPolicy,
    ) {
        let (resp, _) = send_reusing(pool, addr, req, policy).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
    }

    /// A cluster whose connections may stay idle `idle_timeout`.
    fn idle_for(idle_timeout: Duration) -> ConnPolicy {
        ConnPolicy {
            idle_timeout,
            ..ConnPolicy::default()
        }
    }

    async fn body_of(resp: Response<ProxyBody>) -> Bytes {
        resp.into_body().collect().await.expect("body").to_bytes()
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (addr, accepted) = upstream(false).await;
        let pool = UpstreamPool::new();
        for _ in 0..5 {
            let (resp, _) = send(&pool, addr, get()).await.expect("answer");
            assert_eq!(body_of(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
        let (addr, accepted) = upstream(true).await;
        let pool = UpstreamPool::new();
        for _ in 0..3 {
            let (resp, _) = send(&pool, addr, get()).await.expect("answer");
            assert_eq!(body_of(resp).await, "ok");
            // Let the client side notice the close before the next request, or not:
            // either way the request must succeed.
            tokio::task::yield_now().await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_does_not_return_its_connection() {
        let (addr, accepted) = upstream(false).await;
        let pool = UpstreamPool::new();
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        drop(resp);
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    /// A request body that arrives in pieces, from a channel.
    struct Trickle(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Trickle {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    fn post(body: Trickle) -> Request<ProxyBody> {
        Request::builder()
            .method(http::Method::POST)
            .uri("/")
            .header(http::header::HOST, "upstream")
            .body(body.boxed())
            .expect("request")
    }

    /// A streamed request body (no length known) is sent piece by piece as the pieces
    /// come, and the connection goes back to the pool afterwards.
    #[tokio::test]
    async fn a_body_that_arrives_in_pieces_is_sent_whole_by_the_waiting_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Response::new(http_body_util::Full::new(Bytes::from(
                    body.len().to_string(),
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for piece in ["hello", " ", "world"] {
                tokio::task::yield_now().await;
                let _ = tx.send(Bytes::from(piece)).await;
            }
        });
        let pool = UpstreamPool::new();
        let (resp, _) = send(&pool, addr, post(Trickle(rx))).await.expect("answer");
        assert_eq!(body_of(resp).await, "11");
        // The upstream serves one connection only: the second request with a body
        // reuses it.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Bytes::from("again")).await.expect("send");
        drop(tx);
        let next = tokio::time::timeout(
            Duration::from_secs(10),
            send(&pool, addr, post(Trickle(rx))),
        );
        let (resp, _) = next.await.expect("reused").expect("answer");
        assert_eq!(body_of(resp).await, "5");
    }

    /// An upstream may answer before it has read the request body. The connection is
    /// then still busy when the answer ends: it is not lent again, and the next request
    /// gets a connection of its own instead of waiting behind a body that never ends.
    #[tokio::test]
    async fn a_connection_still_sending_a_body_is_not_lent_again() {
        let (addr, accepted) = upstream(false).await;
        let pool = UpstreamPool::new();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Bytes::from("start")).await.expect("send");
        let (resp, _) = send(&pool, addr, post(Trickle(rx))).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        // Lent again, the busy connection would hold this request for good.
        let next = tokio::time::timeout(Duration::from_secs(10), send(&pool, addr, get()));
        let (resp, _) = next.await.expect("not held").expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(tx);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let pool = UpstreamPool::new();
        let Err(err) = send(&pool, addr, get()).await else {
            panic!("nothing listens at {addr}, yet an answer came");
        };
        assert!(err.reset_reason().is_none(), "a connect failure: {err:?}");
        assert!(
            err.reason().starts_with("tcp connect error: "),
            "{}",
            err.reason()
        );
    }

    /// A request with a whole body (hyper's client connections).
    fn post_bytes(body: &'static str) -> Request<ProxyBody> {
        Request::builder()
            .method(http::Method::POST)
            .uri("/")
            .header(http::header::HOST, "upstream")
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(
                http_body_util::Full::new(Bytes::from_static(body.as_bytes()))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .expect("request")
    }

    /// Waits (with a deadline) until `count` reaches `n`.
    async fn until_count(count: &AtomicUsize, n: usize, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: {} of {n} after 10 s",
                count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Envoy closes an upstream connection idle for its idle timeout and drains the
    /// pools of hosts that leave a cluster; here the sweep does both, for either kind
    /// of connection, whether or not the endpoint is used again.
    #[tokio::test]
    async fn a_sweep_closes_connections_idle_too_long_and_forgets_their_endpoint() {
        let (addr, accepted, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        let (resp, _) = send(&pool, addr, post_bytes("x")).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        // Just idle: kept.
        assert_eq!(pool.sweep(Instant::now()), Swept::default());
        assert_eq!(closed.load(Ordering::SeqCst), 0);

        let later = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1);
        let swept = pool.sweep(later);
        assert_eq!(
            swept,
            Swept {
                closed: 2,
                forgotten: 1
            }
        );
        until_count(&closed, 2, "connections the upstream saw closed").await;
        assert!(pool.endpoints.with(&(addr, 0), |_| ()).is_none());

        // The endpoint is met again as a new one.
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// DestinationRule `connectionPool.http.idleTimeout` (Envoy's cluster
    /// `common_http_protocol_options.idle_timeout`): each connection keeps the timeout of
    /// the cluster whose request gave it back. A sweep past the short timeout closes
    /// those connections only; a request after it does not policy one.
    #[tokio::test]
    async fn each_connection_keeps_its_clusters_idle_timeout() {
        let (addr, accepted, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let short = Duration::from_secs(2);
        // Two connections of a cluster with a 2 s timeout, one of each kind.
        answered(&pool, addr, get(), idle_for(short)).await;
        answered(&pool, addr, post_bytes("x"), idle_for(short)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2);

        let past_short = Instant::now() + short + Duration::from_millis(500);
        assert_eq!(
            pool.sweep(past_short),
            Swept {
                closed: 2,
                forgotten: 1
            }
        );
        until_count(&closed, 2, "connections the upstream saw closed").await;

        // A connection of the default cluster outlives the short timeout.
        answered(&pool, addr, get(), ConnPolicy::default()).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.sweep(Instant::now() + short * 2), Swept::default());
    }

    /// DestinationRule `connectionPool.http.maxRequestsPerConnection` (Envoy's
    /// `max_requests_per_connection`): a connection closes after that many requests,
    /// with or without a body, and the next request opens another; 1 turns keep-alive
    /// off.
    #[tokio::test]
    async fn a_connection_closes_after_its_clusters_max_requests() {
        let (addr, accepted, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let two = ConnPolicy {
            max_requests: 2,
            ..ConnPolicy::default()
        };
        answered(&pool, addr, get(), two).await;
        answered(&pool, addr, get(), two).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        until_count(&closed, 1, "closed after its second request").await;
        answered(&pool, addr, post_bytes("x"), two).await;
        answered(&pool, addr, post_bytes("y"), two).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a second connection");
        until_count(&closed, 2, "closed after its second request").await;

        let one = ConnPolicy {
            max_requests: 1,
            ..ConnPolicy::default()
        };
        for n in 3..6 {
            answered(&pool, addr, get(), one).await;
            assert_eq!(accepted.load(Ordering::SeqCst), n, "no keep-alive");
        }
    }

    /// DestinationRule `connectionPool.tcp.maxConnectionDuration` (Envoy's
    /// `max_connection_duration`): a connection older than that is not lent again (a
    /// new one is opened) and the sweep closes it while idle.
    #[tokio::test]
    async fn a_connection_past_its_maximum_duration_is_retired() {
        let (addr, accepted, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let short = ConnPolicy {
            max_duration: Some(Duration::from_secs(1)),
            ..ConnPolicy::default()
        };
        answered(&pool, addr, get(), short).await;
        answered(&pool, addr, get(), short).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused while young");
        // The time the limit is about, on the real clock the pool reads.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        answered(&pool, addr, get(), short).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
        until_count(&closed, 1, "the retired connection closed").await;
        let later = Instant::now() + Duration::from_millis(1200);
        assert_eq!(pool.sweep(later).closed, 1, "the sweep retires the second");
        until_count(&closed, 2, "the second connection closed").await;
    }

    /// A connection given back after its maximum duration, or at its request limit, is
    /// closed rather than kept.
    #[test]
    fn a_connection_at_its_limits_is_not_kept_idle() {
        let idle: Mutex<Vec<Idle<()>>> = Mutex::default();
        let policy = ConnPolicy {
            max_duration: Some(Duration::from_secs(5)),
            max_requests: 3,
            ..ConnPolicy::default()
        };
        let young = Usage::first();
        keep_idle(&idle, (), policy, young);
        let old = Usage {
            opened: Instant::now()
                .checked_sub(Duration::from_secs(6))
                .expect("a monotonic clock more than 6 s old"),
            served: 1,
        };
        keep_idle(&idle, (), policy, old);
        let worn = Usage { served: 3, ..young };
        keep_idle(&idle, (), policy, worn);
        assert_eq!(idle.lock().expect("idle").len(), 1, "only the young one");
    }

    /// A connection whose idle timeout has passed is closed, not lent, when the next
    /// request to its endpoint comes before any sweep.
    #[tokio::test]
    async fn a_connection_past_its_idle_timeout_is_not_lent_again() {
        let (addr, accepted, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let short = Duration::from_millis(50);
        answered(&pool, addr, get(), idle_for(short)).await;
        // The time the timeout is about, on the real clock the pool reads.
        tokio::time::sleep(short * 3).await;
        answered(&pool, addr, get(), idle_for(short)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection");
        until_count(&closed, 1, "the expired connection closed").await;
    }

    /// A response still being read holds its endpoint: the sweep keeps the entry, and
    /// the connection goes back to it when the body ends, to be closed by a later sweep.
    #[tokio::test]
    async fn a_sweep_keeps_an_endpoint_whose_connection_is_lent() {
        let (addr, _, closed) = upstream_counting_closes(false).await;
        let pool = UpstreamPool::new();
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        let later = Instant::now() + IDLE_TIMEOUT + Duration::from_secs(1);
        assert_eq!(pool.sweep(later), Swept::default());
        assert_eq!(body_of(resp).await, "ok");
        let much_later = later + IDLE_TIMEOUT + Duration::from_secs(1);
        assert_eq!(
            pool.sweep(much_later),
            Swept {
                closed: 1,
                forgotten: 1
            }
        );
        until_count(&closed, 1, "connections the upstream saw closed").await;
    }

    /// A connection the upstream closed while idle is dropped by the next sweep, not
    /// kept half closed until its timeout.
    #[tokio::test]
    async fn a_sweep_drops_connections_the_upstream_closed() {
        // An upstream that answers one request and closes when told to.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (close, closing) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 1024];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "the pool closed the connection first");
                head.extend_from_slice(&buf[..n]);
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            stream.write_all(answer).await.expect("write");
            let _ = closing.await;
        });
        let pool = UpstreamPool::new();
        let (resp, _) = send(&pool, addr, get()).await.expect("answer");
        assert_eq!(body_of(resp).await, "ok");
        // Idle and open: kept.
        assert_eq!(pool.sweep(Instant::now()), Swept::default());
        close.send(()).expect("upstream waiting");
        // The close reaches this side's reactor a moment later.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let swept = pool.sweep(Instant::now());
            if swept != Swept::default() {
                assert_eq!(
                    swept,
                    Swept {
                        closed: 1,
                        forgotten: 1
                    }
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection the upstream closed is still pooled after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
