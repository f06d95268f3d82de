//! One proxy (a sidecar or a gateway): its listeners, and the request path that
//! reads its current tables, routes, forwards over pooled connections and logs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use chrono::Utc;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::{HttpConnector, HttpInfo};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use meshbox_config::OutboundPolicy;
use meshbox_routing::tables::PASSTHROUGH_CLUSTER;
use meshbox_routing::{ProxyTables, RequestView, RouteAction};

use crate::access_log::{AccessLogEntry, AccessLogSink, Encoding};
use crate::balancer::{Clock, ClusterStates};
use crate::body::{AbandonGuard, BoxError, CountingBody, LoggedBody, PendingLog, ProxyBody};
use crate::resolver::Resolver;

/// Where a request came from, handed down the routing functions as a parameter (kept
/// out of the request's extensions, whose map costs allocations on every request).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Downstream {
    /// The downstream peer (for `useSourceIp` hashing).
    pub(crate) peer: SocketAddr,
    /// The address of the listener that received the request: forwarding there again
    /// would send the request round the same proxy (see [`Proxy::forward`]).
    pub(crate) local: SocketAddr,
}

/// What a listener of a proxy is for.
#[derive(Debug, Clone, Copy)]
pub enum ListenerRole {
    /// The sidecar's outbound port, which workloads use as `HTTP_PROXY`.
    SidecarOutbound,
    /// The sidecar's inbound port for one container port: everything goes to the app.
    SidecarInbound {
        /// The container port this listener stands for (the `inbound|PORT||` cluster).
        port: u32,
        /// Where the application itself listens.
        app: SocketAddr,
    },
    /// A gateway port carrying the Service port (the Gateway server port) `service_port`.
    Gateway {
        /// The Service port, which selects the `http.PORT` route table.
        service_port: u32,
    },
}

/// Settings of one proxy that do not change with routing config.
pub struct ProxySettings {
    /// The proxy's name: its pod's name.
    pub name: String,
    /// Resolves upstream names (DNS clusters, passthrough, the `DF` check), with the mesh's
    /// overrides.
    pub resolver: Arc<Resolver>,
    /// `None` when `meshConfig.accessLogFile` is empty.
    pub access_log: Option<(Arc<dyn AccessLogSink>, Encoding)>,
    /// Seed for weighted choices (set it for reproducible splits in tests).
    pub seed: u64,
    /// The worker threads that serve its connections (none: the current runtime).
    pub workers: crate::workers::Workers,
}

/// Where a proxy's access log lines go, and how they are encoded.
struct AccessLogTarget {
    sink: Arc<dyn AccessLogSink>,
    encoding: Encoding,
}

/// A running proxy; share it with `Arc`.
pub struct Proxy {
    pub(crate) name: String,
    /// Endpoint health, load and pool limits, carried across table updates.
    pub(crate) cluster_states: ArcSwap<ClusterStates>,
    /// Time base for outlier ejections.
    pub(crate) clock: Clock,
    tables: ArcSwap<ProxyTables>,
    /// Plain-text upstream connections, pooled per endpoint (pool.rs).
    pub(crate) pool: crate::pool::UpstreamPool,
    /// hyper-util's pooled client, for mirrored requests (fire and forget, in tasks of
    /// their own).
    pub(crate) client: Client<HttpConnector, ProxyBody>,
    /// TLS origination (DestinationRule `tls`): certificates by policy, and a pooled
    /// client whose connector makes the TLS connections.
    pub(crate) tls: crate::tls::TlsClients,
    pub(crate) tls_client: Client<crate::tls::TlsConnector, ProxyBody>,
    pub(crate) resolver: Arc<Resolver>,
    /// Swappable, so that `install` can turn access logs on, off or to JSON.
    access_log: ArcSwapOption<AccessLogTarget>,
    random: crate::sharded::ShardedRandom,
    /// Istio's standard metrics of this proxy.
    pub(crate) metrics: Arc<crate::metrics::ProxyMetrics>,
    workers: crate::workers::Workers,
    /// Told of every table update, so that the pool's sweeper takes a shorter idle
    /// timeout at once.
    tables_changed: Arc<tokio::sync::Notify>,
}

/// Headers that are about one hop and are not forwarded (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
];

// Header names the request path uses, made once: a `&str` name is parsed and hashed
// again on every lookup.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// The outcome of routing one request, before logging.
pub(crate) struct Outcome {
    pub(crate) response: Response<ProxyBody>,
    pub(crate) flags: &'static str,
    pub(crate) details: &'static str,
    pub(crate) upstream_host: Option<SocketAddr>,
    pub(crate) upstream_local: Option<SocketAddr>,
    /// Shared with the tables (no copy per request).
    pub(crate) cluster: Option<Arc<str>>,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) service_time_ms: Option<u64>,
    pub(crate) transport_failure: Option<String>,
    /// Kept alive until the response body is done (a connection-pool admission).
    pub(crate) hold: Option<Box<dyn Send + Sync>>,
}

/// `before` (a response's flags: `-` or one flag) with `flag` added, in the fixed order
/// in which Envoy prints its response flags (stream_info/utility.h: DC LH UH UT LR UR UF
/// UC UO URX NR DI FI ... UPE). The flags are static texts, so the pairs that occur are
/// listed; for any other `before`, `flag` alone (a flag added to `-`, or one that
/// replaces what a retry or a reset made moot).
pub(crate) fn add_flag(before: &'static str, flag: &'static str) -> &'static str {
    match (before, flag) {
        ("UT", "URX") => "UT,URX",
        ("UF", "URX") => "UF,URX",
        ("UC", "URX") => "UC,URX",
        ("UPE", "URX") => "URX,UPE",
        ("UT", "UO") => "UT,UO",
        ("UF", "UO") => "UF,UO",
        ("UC", "UO") => "UC,UO",
        ("UPE", "UO") => "UO,UPE",
        ("DI", "UT") => "UT,DI",
        ("DI", "UC") => "UC,DI",
        ("DI", "UPE") => "DI,UPE",
        _ => flag,
    }
}

impl Outcome {
    pub(crate) fn local(
        status: StatusCode,
        body: &str,
        flags: &'static str,
        details: &'static str,
    ) -> Outcome {
        Outcome {
            response: local_reply(status, body),
            flags,
            details,
            upstream_host: None,
            upstream_local: None,
            cluster: None,
            route: None,
            service_time_ms: None,
            transport_failure: None,
            hold: None,
        }
    }

    fn with_route(mut self, route: impl Into<Arc<str>>) -> Outcome {
        self.route = Some(route.into());
        self
    }

    /// Envoy's route timeout reply: 504 `upstream request timeout`, flag UT.
    pub(crate) fn upstream_timeout(endpoint: Option<SocketAddr>) -> Outcome {
        let mut o = Outcome::local(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream request timeout",
            "UT",
            "response_timeout",
        );
        o.upstream_host = endpoint;
        o
    }

    pub(crate) fn with_cluster(mut self, cluster: impl Into<Arc<str>>) -> Outcome {
        self.cluster = Some(cluster.into());
        self
    }
}

fn local_reply(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(crate::body::bytes_body(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if !body.is_empty() {
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    headers.insert(
        http::header::SERVER,
        HeaderValue::from_static("istio-envoy"),
    );
    resp
}

/// hyper-util's pooled client (TLS origination, mirrors) with the pool's limits.
fn pooled_client<C>(connector: C) -> Client<C, ProxyBody>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(crate::pool::IDLE_TIMEOUT)
        .pool_max_idle_per_host(crate::pool::MAX_IDLE_PER_ENDPOINT)
        .set_host(false)
        .build(connector)
}

impl Proxy {
    /// A proxy with its first tables.
    pub fn new(settings: ProxySettings, tables: ProxyTables) -> Arc<Proxy> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(crate::pool::DEFAULT_CONNECT_TIMEOUT));
        let client = pooled_client(connector);
        let tls = crate::tls::TlsClients::new();
        let tls_client = pooled_client(tls.connector());
        let metrics = Arc::new(crate::metrics::ProxyMetrics::new());
        metrics.intern_clusters(tables.clusters.keys().map(String::as_str));
        let proxy = Arc::new(Proxy {
            metrics,
            name: settings.name,
            cluster_states: ArcSwap::from_pointee(ClusterStates::carry_over(
                &ClusterStates::default(),
                &tables,
            )),
            clock: Clock::new(),
            tables: ArcSwap::from_pointee(tables),
            pool: crate::pool::UpstreamPool::new(),
            client,
            tls,
            tls_client,
            resolver: settings.resolver,
            access_log: ArcSwapOption::from(
                settings
                    .access_log
                    .map(|(sink, encoding)| Arc::new(AccessLogTarget { sink, encoding })),
            ),
            random: crate::sharded::ShardedRandom::new(settings.seed),
            workers: settings.workers,
            tables_changed: Arc::default(),
        });
        proxy.spawn_pool_sweeper();
        proxy
    }

    /// Sweeps the upstream pool (pool.rs) every half of the shortest idle timeout in the
    /// tables (a cluster's `connectionPool.http.idleTimeout`, else
    /// [`crate::pool::IDLE_TIMEOUT`]) while the proxy lives, on its first worker (or the
    /// runtime it is made on; made outside a runtime, as some unit tests do, it has no
    /// sweeper): connections idle longer than their timeout close within one and a half
    /// timeouts even if their endpoint is never used again (Envoy closes each at its
    /// timeout, with a timer per connection; here no request pays for a timer). A table
    /// update wakes the sweeper, which then sweeps and takes the new period.
    fn spawn_pool_sweeper(self: &Arc<Self>) {
        let runtime = match self.workers.listener_runtime() {
            Some(handle) => handle.clone(),
            None => match tokio::runtime::Handle::try_current() {
                Ok(handle) => handle,
                Err(_) => return,
            },
        };
        let proxy = Arc::downgrade(self);
        let changed = self.tables_changed.clone();
        let mut period = self.sweep_period();
        runtime.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = changed.notified() => {}
                }
                let Some(proxy) = proxy.upgrade() else {
                    return;
                };
                period = proxy.sweep_period();
                // tokio's clock (the same as std's, except in tests that pause time).
                let swept = proxy.pool.sweep(tokio::time::Instant::now().into_std());
                if swept.closed > 0 || swept.forgotten > 0 {
                    tracing::debug!(
                        proxy = %proxy.name,
                        "closed {} idle upstream connections, forgot {} endpoints",
                        swept.closed,
                        swept.forgotten
                    );
                }
            }
        });
    }

    /// Half the shortest idle timeout of the current tables' clusters and the default,
    /// at least 50 ms.
    fn sweep_period(&self) -> Duration {
        let shortest = self
            .tables
            .load()
            .clusters
            .values()
            .flat_map(|c| [c.policy.idle_timeout, c.policy.max_connection_duration])
            .flatten()
            .fold(crate::pool::IDLE_TIMEOUT, Duration::min);
        (shortest / 2).max(Duration::from_millis(50))
    }

    /// The proxy's name (its pod).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the tables; requests in flight finish on the tables they started with.
    pub fn update(&self, tables: ProxyTables) {
        let states = ClusterStates::carry_over(&self.cluster_states.load(), &tables);
        self.cluster_states.store(Arc::new(states));
        self.metrics
            .intern_clusters(tables.clusters.keys().map(String::as_str));
        self.tables.store(Arc::new(tables));
        self.tables_changed.notify_one();
        // Certificate files named by DestinationRules are read again after a change.
        self.tls.reload();
    }

    /// Where DestinationRule `credentialName` secrets are read from: `DIR/NAME/` with
    /// `tls.crt`, `tls.key` and `ca.crt` (or `cert`, `key`, `cacert`). `meshbox up`
    /// uses `$MESHBOX_HOME/credentials`; `None` (the default) makes `credentialName` a
    /// connection failure.
    pub fn set_credentials_dir(&self, dir: Option<std::path::PathBuf>) {
        self.tls.set_credentials_dir(dir);
    }

    /// The access log sink and encoding in force, if access logs are on.
    pub(crate) fn access_log_target(&self) -> Option<(Arc<dyn AccessLogSink>, Encoding)> {
        self.access_log
            .load()
            .as_ref()
            .map(|t| (t.sink.clone(), t.encoding))
    }

    /// Replaces where access log lines go (`None`: no access log, Istio's default).
    pub fn set_access_log(&self, access_log: Option<(Arc<dyn AccessLogSink>, Encoding)>) {
        self.access_log
            .store(access_log.map(|(sink, encoding)| Arc::new(AccessLogTarget { sink, encoding })));
    }

    /// The proxy's metrics (Istio's standard metrics), to scrape or to give the
    /// proxy's workload identity and the mesh's endpoints.
    pub fn metrics(&self) -> &Arc<crate::metrics::ProxyMetrics> {
        &self.metrics
    }

    /// The current tables.
    pub fn tables(&self) -> Arc<ProxyTables> {
        self.tables.load_full()
    }

    /// Serves a listener until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, role: ListenerRole) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(proxy = %self.name, "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().unwrap_or(peer);
            let proxy = self.clone();
            // A gateway port that Gateway servers make TLS PASSTHROUGH or TCP carries
            // connections, not HTTP requests (tunnel.rs).
            if let ListenerRole::Gateway { service_port } = role {
                if self.tables.load().l4.gateway.contains_key(&service_port) {
                    tokio::spawn(proxy.serve_l4_gateway(stream, local, peer, service_port));
                    continue;
                }
            }
            // Each connection is served on the next worker thread in turn.
            self.workers
                .spawn_connection(stream, move |stream| async move {
                    // Requests without a body are read and answered here; hyper takes
                    // the connection from the first request that is not one.
                    let serving = Box::pin(proxy.serve_simple_requests(stream, role, local, peer));
                    let Some(stream) = serving.await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let proxy = proxy.clone();
                        async move {
                            // CONNECT from the workload (HTTPS_PROXY) opens a tunnel (tunnel.rs).
                            if req.method() == Method::CONNECT
                                && matches!(role, ListenerRole::SidecarOutbound)
                            {
                                // Boxed: the tunnel's state is large and only
                                // CONNECT requests need it.
                                let tunnel = Box::pin(proxy.connect(req, local, peer));
                                return Ok::<_, Infallible>(tunnel.await);
                            }
                            Ok::<_, Infallible>(proxy.handle(req, role, local, peer).await)
                        }
                    });
                    // HTTP/1.1, or HTTP/2 with prior knowledge (h2c, as gRPC clients and
                    // h2load speak it), told apart by the connection preface, as Envoy's
                    // HTTP connection manager does with `codec_type: AUTO`.
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    if let Err(e) = conn.await {
                        tracing::debug!("connection from {peer} ended: {e}");
                    }
                });
        }
    }

    /// A pseudo-random number for weighted choices and request ids (splitmix64 over a
    /// counter per worker thread: lock-free, no cache line shared between workers,
    /// reproducible from the seed on one thread).
    pub(crate) fn next_random(&self) -> u64 {
        self.random.next()
    }

    /// Serves a connection's requests without a body (h1_server.rs) until one comes
    /// that the fast path does not take: then returns the connection, with the bytes
    /// read so far, for hyper. `None`: the connection is done.
    async fn serve_simple_requests(
        &self,
        mut stream: tokio::net::TcpStream,
        role: ListenerRole,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Option<crate::h1_server::Prefixed> {
        use crate::h1_server::{poll_fill, read_request, write_response, Parsed, Prefixed};
        let mut read = bytes::BytesMut::new();
        let mut out = Vec::new();
        loop {
            let (request, close, trailers) = match read_request(&mut stream, &mut read).await {
                Some(Parsed::Simple {
                    request,
                    close,
                    trailers,
                }) => (request, close, trailers),
                Some(_) => return Some(Prefixed::new(read.freeze(), stream)),
                None => return None,
            };
            let is_head = request.method() == Method::HEAD;
            let response = {
                let mut handling = std::pin::pin!(self.handle(request, role, local, peer));
                // While the answer is on its way, the downstream is watched: if it
                // goes away, the request is dropped (its access log line says DC), as
                // hyper's server drops it (`mid_message_detect_eof`: not once bytes of
                // a next request are waiting, which are kept).
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(response) = handling.as_mut().poll(cx) {
                        return Poll::Ready(Some(response));
                    }
                    while read.is_empty() {
                        match poll_fill(&mut stream, &mut read, cx) {
                            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                            Poll::Ready(Ok(_)) => {}
                            Poll::Pending => break,
                        }
                    }
                    Poll::Pending
                })
                .await
            };
            let response = response?;
            match write_response(&mut stream, &mut out, response, is_head, !close, trailers).await {
                Ok(true) => {}
                Ok(false) => {
                    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
                    return None;
                }
                Err(()) => return None,
            }
        }
    }

    async fn handle<B>(
        &self,
        mut req: Request<B>,
        role: ListenerRole,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Response<LoggedBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        if !req.headers().contains_key(&X_REQUEST_ID) {
            let id = new_request_id(self.next_random(), self.next_random());
            if let Ok(v) = HeaderValue::from_bytes(&id) {
                req.headers_mut().insert(&X_REQUEST_ID, v);
            }
        }
        let authority = request_authority(&req);
        // Shared with the request's URI (no copy); borrowed by the routing below.
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let path = path_and_query.as_str();
        if let ListenerRole::Gateway { .. } = role {
            append_forwarded_for(req.headers_mut(), peer);
        }
        // Request body bytes, counted as the upstream reads them: only for a request
        // that has a body.
        let received =
            (!hyper::body::Body::is_end_stream(req.body())).then(|| Arc::new(AtomicU64::new(0)));
        // The access log entry is only gathered when access logs are on (Istio's
        // default is off): the request path does no work for a line nobody writes.
        let pending_log = self.access_log.load().as_ref().map(|target| {
            let header = |name: &HeaderName| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            Box::new(PendingLog {
                entry: AccessLogEntry {
                    start_time: Some(Utc::now()),
                    method: req.method().as_str().to_string(),
                    path: path.to_string(),
                    protocol: version_str(req.version()),
                    user_agent: header(&http::header::USER_AGENT),
                    request_id: header(&X_REQUEST_ID),
                    x_forwarded_for: header(&X_FORWARDED_FOR),
                    authority: authority.clone(),
                    downstream_local_address: Some(local),
                    downstream_remote_address: Some(peer),
                    ..Default::default()
                },
                start,
                sink: target.sink.clone(),
                encoding: target.encoding,
                received: received.clone(),
            })
        });
        let metric_received = received.clone();
        let req = match received {
            Some(counter) => {
                req.map(move |body| CountingBody::new(body, counter).map_err(Into::into).boxed())
            }
            None => req.map(|_| crate::body::empty_body()),
        };
        let from = Downstream { peer, local };
        let mut guard = AbandonGuard(pending_log);
        let outcome = match role {
            // The routing futures are boxed: kept inline, their state machines made this
            // future some 18 KB, copied whole as hyper moves it; boxed, it is a fraction.
            // Each box is made in a statement of its own: a temporary in the statement
            // that awaits stays in the caller's state (the whole unboxed future, here).
            ListenerRole::SidecarInbound { port, app } => {
                let forward =
                    Box::pin(self.forward(req, from, app, authority.as_deref(), None, None));
                let mut outcome = forward.await.with_route("default");
                outcome.cluster = Some(format!("inbound|{port}||").into());
                outcome
            }
            ListenerRole::SidecarOutbound => {
                let route = Box::pin(self.route_outbound(req, from, authority.as_deref(), path));
                route.await
            }
            ListenerRole::Gateway { service_port } => {
                self.route_at_gateway(req, from, authority.as_deref(), path, service_port)
                    .await
            }
        };
        let mut log = guard.complete();
        // The host and port asked for: a refusal's log line and its metrics name both,
        // even when the Host header carried no port.
        let default_port = match role {
            ListenerRole::Gateway { service_port } => u16::try_from(service_port).unwrap_or(80),
            ListenerRole::SidecarInbound { port, .. } => u16::try_from(port).unwrap_or(80),
            ListenerRole::SidecarOutbound => 80,
        };
        let refused = outcome.route.as_deref() == Some("block_all")
            || matches!(outcome.flags, "NR" | "DF" | "NC");
        let inbound = matches!(role, ListenerRole::SidecarInbound { .. });
        // Only refusals, catch-all clusters and inbound traffic name the host asked for.
        let names_host = refused
            || inbound
            || outcome.cluster.is_none()
            || matches!(
                outcome.cluster.as_deref(),
                Some(PASSTHROUGH_CLUSTER | crate::tunnel::BLACKHOLE_CLUSTER)
            );
        let asked = authority.as_deref().filter(|_| names_host).map(|a| {
            let (host, port) = split_authority(a, default_port);
            if host.contains(':') && !host.starts_with('[') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        });
        let metric = {
            let dest = crate::metrics::Destination {
                cluster: outcome.cluster.as_deref(),
                route: outcome.route.as_deref(),
                host: asked.as_deref().unwrap_or_default(),
                upstream: outcome.upstream_host,
            };
            let labels = self.metrics.labels(
                inbound,
                &dest,
                "http",
                Some(outcome.response.status().as_u16()),
                outcome.flags,
            );
            Some(crate::body::PendingMetric {
                metrics: self.metrics.clone(),
                labels,
                start,
                received: metric_received,
            })
        };
        if let Some(entry) = log.as_mut().map(|p| &mut p.entry) {
            if refused {
                if let Some(a) = &asked {
                    entry.authority = Some(a.clone());
                }
            }
            entry.response_code = outcome.response.status().as_u16();
            entry.response_flags = outcome.flags;
            entry.response_code_details = outcome.details;
            entry.upstream_host = outcome.upstream_host;
            entry.upstream_local_address = outcome.upstream_local;
            entry.upstream_cluster = outcome.cluster.as_deref().map(str::to_string);
            entry.route_name = outcome
                .route
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(str::to_string);
            entry.upstream_service_time_ms = outcome.service_time_ms;
            entry.upstream_transport_failure_reason = outcome.transport_failure;
        }
        let (mut parts, body) = outcome.response.into_parts();
        if let Some(t) = outcome.service_time_ms {
            parts
                .headers
                .insert(&X_ENVOY_UPSTREAM_SERVICE_TIME, service_time_value(t));
        }
        Response::from_parts(
            parts,
            LoggedBody::new(body, log)
                .holding(outcome.hold)
                .with_metric(metric),
        )
    }

    /// A workload's outbound request, sent through its sidecar as `HTTP_PROXY`.
    async fn route_outbound(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        authority: Option<&str>,
        path: &str,
    ) -> Outcome {
        let authority = match routable_authority(&req, authority) {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        let default_port = if req.uri().scheme_str() == Some("https") {
            443
        } else {
            80
        };
        let (host, port) = split_authority(authority, default_port);
        let tables = self.tables.load();
        let Some(table) = tables.route_table(u32::from(port)) else {
            let catch_all =
                Box::pin(self.catch_all(req, from, authority, &host, port, &tables, None));
            return catch_all.await;
        };
        let Some(vhost) = table.select_virtual_host(authority) else {
            return Outcome::local(StatusCode::NOT_FOUND, "", "NR", "route_not_found");
        };
        if vhost.catch_all.is_some() {
            let route = vhost.routes.first().map(|r| r.name.clone());
            let catch_all =
                Box::pin(self.catch_all(req, from, authority, &host, port, &tables, route));
            return catch_all.await;
        }
        self.route_in_vhost(req, from, &tables, vhost, authority, &host, port, path)
            .await
    }

    /// A request arriving at a gateway port.
    async fn route_at_gateway(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        authority: Option<&str>,
        path: &str,
        service_port: u32,
    ) -> Outcome {
        let authority = match routable_authority(&req, authority) {
            Ok(a) => a,
            Err(refused) => return refused,
        };
        let (host, port) = split_authority(authority, u16::try_from(service_port).unwrap_or(80));
        let tables = self.tables.load();
        let vhost = tables
            .route_table(service_port)
            .and_then(|t| t.select_virtual_host(authority));
        let Some(vhost) = vhost else {
            return Outcome::local(StatusCode::NOT_FOUND, "", "NR", "route_not_found");
        };
        self.route_in_vhost(req, from, &tables, vhost, authority, &host, port, path)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn route_in_vhost(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        tables: &ProxyTables,
        vhost: &meshbox_routing::tables::VirtualHost,
        authority: &str,
        host: &str,
        port: u16,
        path: &str,
    ) -> Outcome {
        let scheme = req.uri().scheme_str().unwrap_or("http");
        let view = RequestView {
            method: req.method().as_str(),
            scheme,
            authority,
            path_and_query: path,
            headers: req.headers(),
        };
        let Some(route) = vhost.select_route(&view) else {
            return Outcome::local(StatusCode::NOT_FOUND, "", "NR", "route_not_found");
        };
        let outcome = match &route.action {
            RouteAction::DirectResponse { status, body } => Outcome::local(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                body,
                "-",
                "direct_response",
            ),
            RouteAction::Passthrough => {
                let passthrough = Box::pin(self.passthrough(req, from, host, port, authority));
                passthrough.await
            }
            RouteAction::Redirect(redirect) => {
                let location = redirect.location(scheme, authority, path);
                let status =
                    StatusCode::from_u16(redirect.code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let mut o = Outcome::local(status, "", "-", "direct_response");
                if let Ok(v) = HeaderValue::from_str(&location) {
                    o.response.headers_mut().insert(http::header::LOCATION, v);
                }
                o
            }
            RouteAction::Forward(fwd) => {
                let forward = Box::pin(
                    self.forward_route(req, from, tables, fwd, authority, host, port, path),
                );
                forward.await
            }
        };
        outcome.with_route(route.name.clone())
    }

    /// A host the registry does not know: Passthrough (ALLOW_ANY) or BlackHole
    /// (REGISTRY_ONLY), after the name lookup a pod's application would have made.
    #[allow(clippy::too_many_arguments)]
    async fn catch_all(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        authority: &str,
        host: &str,
        port: u16,
        tables: &ProxyTables,
        route: Option<Arc<str>>,
    ) -> Outcome {
        let policy = tables.outbound_policy;
        let route = route.unwrap_or_else(|| match policy {
            OutboundPolicy::AllowAny => "allow_any".into(),
            OutboundPolicy::RegistryOnly => "block_all".into(),
        });
        // A Kubernetes Service name that the sidecar's tables do not hold (hidden by
        // a Sidecar's egress hosts or by exportTo) still resolves in a pod: cluster
        // DNS gives its ClusterIP, which kube-proxy sends to one of its endpoints.
        let cluster_dns = tables.cluster_address(host, u32::from(port));
        let outcome = match (policy, cluster_dns) {
            (OutboundPolicy::AllowAny, Some(endpoints)) => match endpoints.first() {
                Some(addr) => self
                    .forward(req, from, *addr, Some(authority), None, None)
                    .await
                    .with_cluster(PASSTHROUGH_CLUSTER),
                // The ClusterIP has no such port, or the Service no endpoint.
                None => {
                    let mut o = Outcome::local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                        "UF",
                        "upstream_reset_before_response_started{connection_failure}",
                    );
                    o.transport_failure = Some(format!("{host}:{port} has no endpoint"));
                    o.with_cluster(PASSTHROUGH_CLUSTER)
                }
            },
            // Envoy forwards a passthrough request as the application sent it: the
            // Host header stays as it was (no port added, case kept).
            (OutboundPolicy::AllowAny, None) => {
                self.passthrough(req, from, host, port, authority).await
            }
            // Istio's REGISTRY_ONLY catch-all: 502, no body, no upstream.
            (OutboundPolicy::RegistryOnly, Some(_)) => {
                Outcome::local(StatusCode::BAD_GATEWAY, "", "-", "direct_response")
            }
            (OutboundPolicy::RegistryOnly, None) => match self.resolver.resolve(host, port).await {
                Err(e) => dns_failure(&e.host),
                Ok(_) => Outcome::local(StatusCode::BAD_GATEWAY, "", "-", "direct_response"),
            },
        };
        outcome.with_route(route)
    }

    async fn passthrough(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        host: &str,
        port: u16,
        authority: &str,
    ) -> Outcome {
        match self.resolver.resolve(host, port).await {
            Err(e) => dns_failure(&e.host).with_cluster(PASSTHROUGH_CLUSTER),
            Ok(addrs) => match addrs.first() {
                Some(addr) => self
                    .forward(req, from, *addr, Some(authority), None, None)
                    .await
                    .with_cluster(PASSTHROUGH_CLUSTER),
                None => dns_failure(host).with_cluster(PASSTHROUGH_CLUSTER),
            },
        }
    }

    /// Sends the request to one endpoint over a pooled connection.
    pub(crate) async fn forward(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        endpoint: SocketAddr,
        authority: Option<&str>,
        new_path: Option<&str>,
        timeout: Option<Duration>,
    ) -> Outcome {
        let (mut parts, body) = req.into_parts();
        if prepare_upstream(&mut parts, authority, new_path).is_err() {
            return invalid_path();
        }
        let tls = parts.extensions.remove::<crate::tls::UpstreamTls>();
        let conn_policy = crate::pool::ConnPolicy::default();
        self.forward_prepared(&parts, body, tls, from, endpoint, timeout, conn_policy)
            .await
    }

    /// Sends a request whose head [`prepare_upstream`] has made ready to one endpoint:
    /// plain text to this proxy's own pool, TLS origination (DestinationRule `tls`) to
    /// hyper-util's client. The head is only borrowed: a request without a body is
    /// written from it as it is, so further tries need no copy of it.
    ///
    /// An endpoint that is the very listener the request came in on (a workload calling
    /// its sidecar's own address, passed through under ALLOW_ANY) would loop through this
    /// proxy without end. Istio's outbound listener drops such traffic (its
    /// `virtualOutbound-blackhole` filter chain sends traffic addressed to the listener's
    /// own port to BlackHoleCluster); here the proxy answers 503 `UH` without
    /// connecting.
    ///
    /// `conn_policy`: how the cluster opens and reuses plain-text connections (its
    /// DestinationRule's `connectionPool`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward_prepared(
        &self,
        parts: &http::request::Parts,
        body: ProxyBody,
        tls: Option<crate::tls::UpstreamTls>,
        from: Downstream,
        endpoint: SocketAddr,
        timeout: Option<Duration>,
        conn_policy: crate::pool::ConnPolicy,
    ) -> Outcome {
        if from.local == endpoint {
            return Outcome::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
                "UH",
                "no_healthy_upstream",
            );
        }
        // TLS origination: the TLS client, pooled per endpoint with SNI and policy
        // under a name of its own, in absolute form.
        let upstream = match &tls {
            None => Upstream::Plain(body),
            Some(t) => match self.tls.target(endpoint, t) {
                Ok(key) => {
                    let path = parts
                        .uri
                        .path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/"));
                    let Ok(uri) = Uri::builder()
                        .scheme("https")
                        .authority(format!("{key}:{}", endpoint.port()))
                        .path_and_query(path)
                        .build()
                    else {
                        return invalid_path();
                    };
                    let mut req = copy_request(parts, body);
                    *req.uri_mut() = uri;
                    Upstream::Tls(Box::new(req))
                }
                Err(reason) => {
                    let mut o = Outcome::local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &format!("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {reason}"),
                        "UF",
                        "upstream_reset_before_response_started{connection_failure}",
                    );
                    o.upstream_host = Some(endpoint);
                    o.transport_failure = Some(reason);
                    return o;
                }
            },
        };
        let sent_at = Instant::now();
        // Made where it is awaited (see forward_route's tries).
        let call = move || async move {
            match upstream {
                Upstream::Tls(upstream_req) => match self.tls_client.request(*upstream_req).await {
                    Ok(resp) => {
                        let local = resp
                            .extensions()
                            .get::<HttpInfo>()
                            .map(|i| i.local_addr())
                            .or_else(|| {
                                resp.extensions()
                                    .get::<crate::tls::UpstreamAddrs>()
                                    .map(|a| a.local)
                            });
                        Ok((resp.map(|b| b.map_err(BoxError::from).boxed()), local))
                    }
                    Err(e) => Err(client_failure(&e, endpoint)),
                },
                Upstream::Plain(body) => {
                    match self.pool.send(endpoint, parts, body, conn_policy).await {
                        Ok((resp, local)) => Ok((resp, Some(local))),
                        Err(e) => Err(pool_failure(&e, endpoint)),
                    }
                }
            }
        };
        let result = match timeout {
            // Boxed: a per-try or route timeout is the rare case.
            Some(t) => {
                let bounded = Box::pin(tokio::time::timeout(t, call()));
                match bounded.await {
                    Ok(r) => r,
                    Err(_) => return Outcome::upstream_timeout(Some(endpoint)),
                }
            }
            None => call().await,
        };
        match result {
            Ok((resp, local)) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Outcome {
                    response: Response::from_parts(parts, body),
                    flags: "-",
                    details: "via_upstream",
                    upstream_host: Some(endpoint),
                    upstream_local: local,
                    cluster: None,
                    route: None,
                    service_time_ms: Some(
                        u64::try_from(sent_at.elapsed().as_millis()).unwrap_or(u64::MAX),
                    ),
                    transport_failure: None,
                    hold: None,
                }
            }
            Err(outcome) => outcome,
        }
    }
}

/// How a try goes upstream.
enum Upstream {
    /// Plain text, through this proxy's pool, with this body.
    Plain(ProxyBody),
    /// TLS origination, through hyper-util's client, in absolute form.
    Tls(Box<Request<ProxyBody>>),
}

/// Makes a request head ready to go upstream, the same for every try: the path as
/// received or as rewritten, in origin form (an unchanged path is reused as it was
/// parsed, not written out and parsed again); HTTP/1.1; no hop-by-hop fields; the Host
/// sent upstream; `x-forwarded-proto`.
pub(crate) fn prepare_upstream(
    parts: &mut http::request::Parts,
    authority: Option<&str>,
    new_path: Option<&str>,
) -> Result<(), InvalidPath> {
    let path = match new_path {
        Some(p) => PathAndQuery::try_from(p).map_err(|_| InvalidPath)?,
        None => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let mut origin_form = http::uri::Parts::default();
    origin_form.path_and_query = Some(path);
    parts.uri = Uri::from_parts(origin_form).map_err(|_| InvalidPath)?;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The Host sent upstream; most often the one the request came with.
    if let Some(a) = authority {
        if parts.headers.get(HOST).map(HeaderValue::as_bytes) != Some(a.as_bytes()) {
            if let Ok(v) = HeaderValue::from_str(a) {
                parts.headers.insert(HOST, v);
            }
        }
    }
    if !parts.headers.contains_key(&X_FORWARDED_PROTO) {
        parts
            .headers
            .insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    Ok(())
}

/// A request with a copy of these parts and `body` (the parts are kept for further
/// tries).
pub(crate) fn copy_request(parts: &http::request::Parts, body: ProxyBody) -> Request<ProxyBody> {
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

/// A path that cannot be sent upstream (a rewrite made it invalid).
pub(crate) struct InvalidPath;

/// The answer to an [`InvalidPath`]: 400.
pub(crate) fn invalid_path() -> Outcome {
    Outcome::local(
        StatusCode::BAD_REQUEST,
        "invalid request path\n",
        "-",
        "invalid_path",
    )
}

/// 503 in Envoy's words: `UF` (connection failure) when `reset` is `None` (the
/// connection could not be opened), else `UC` (connection termination) or `UPE`
/// (protocol error: an answer that is not HTTP).
fn reset_before_headers(
    reset: Option<crate::reset::ResetReason>,
    endpoint: SocketAddr,
    reason: String,
) -> Outcome {
    let (flags, details, words) = match reset {
        None => (
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
            "connection failure",
        ),
        Some(reset) => (reset.flag(), reset.before_response(), reset.words()),
    };
    let body =
        format!("upstream connect error or disconnect/reset before headers. reset reason: {words}");
    let mut o = Outcome::local(StatusCode::SERVICE_UNAVAILABLE, &body, flags, details);
    o.upstream_host = Some(endpoint);
    o.transport_failure = Some(reason);
    o
}

/// A failure of the pooled plain-text exchange.
fn pool_failure(e: &crate::pool::UpstreamError, endpoint: SocketAddr) -> Outcome {
    reset_before_headers(e.reset_reason(), endpoint, e.reason())
}

/// A failure of hyper-util's client (TLS origination).
fn client_failure(e: &hyper_util::client::legacy::Error, endpoint: SocketAddr) -> Outcome {
    // A TLS handshake that failed: Envoy's reason in its own words.
    if let Some(reason) = crate::tls::connect_failure_reason(e) {
        let body = format!("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {reason}");
        let mut o = Outcome::local(
            StatusCode::SERVICE_UNAVAILABLE,
            &body,
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
        );
        o.upstream_host = Some(endpoint);
        o.transport_failure = Some(reason);
        return o;
    }
    // A TLS alert after the handshake (a server refusing the client certificate under
    // TLS 1.3) is still a TLS error in Envoy's words.
    let reason = crate::tls::tls_error_reason(e).unwrap_or_else(|| error_chain(e));
    let reset = (!e.is_connect()).then(|| crate::reset::ResetReason::of(e));
    reset_before_headers(reset, endpoint, reason)
}

/// 503 DF: the name is known neither to the mesh nor to DNS. In a pod, the
/// application's own lookup would fail; the sidecar says so, naming the host.
pub(crate) fn dns_failure(host: &str) -> Outcome {
    let body = format!(
        "DNS resolution failed for {host}: the name is neither a mesh service nor known to DNS"
    );
    Outcome::local(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        "DF",
        "dns_resolution_failure",
    )
}

/// An error with its sources, `: `-separated (double quotes made single, for the
/// access log).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s.replace('"', "'")
}

/// Whether `name` is one of [`HOP_BY_HOP`]: one match on the name's text (static for
/// the standard names) rather than up to eight `HeaderName` comparisons per header.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "proxy-connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names they have says so,
    // cheaper than a removal per hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in &HOP_BY_HOP {
        headers.remove(n);
    }
}

/// Appends the downstream peer's address to `x-forwarded-for` (a gateway's step, as
/// Envoy's `use_remote_address`). The name is hashed once (one entry for the read and
/// the write), and the value is made in a buffer of its exact size, which becomes the
/// header value's without a copy or a second allocation (`Bytes::from` a `Vec` whose
/// length is its capacity).
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip();
    let ip_len = ip_text_len(ip);
    let entry = headers.entry(&X_FORWARDED_FOR);
    let existing = match &entry {
        http::header::Entry::Occupied(e) => e.get().to_str().ok(),
        http::header::Entry::Vacant(_) => None,
    };
    let len = existing.map_or(0, |e| e.len() + 2) + ip_len;
    let mut value = String::with_capacity(len);
    if let Some(e) = existing {
        value.push_str(e);
        value.push_str(", ");
    }
    push_ip(&mut value, ip);
    let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) else {
        return;
    };
    match entry {
        http::header::Entry::Occupied(mut e) => {
            e.insert(value);
        }
        http::header::Entry::Vacant(e) => {
            e.insert(value);
        }
    }
}

/// The length of `ip` as [`push_ip`] writes it.
fn ip_text_len(ip: std::net::IpAddr) -> usize {
    match ip {
        std::net::IpAddr::V4(v4) => {
            3 + v4
                .octets()
                .iter()
                .map(|o| 1 + usize::from(*o >= 10) + usize::from(*o >= 100))
                .sum::<usize>()
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let mut text = String::new();
            let _ = write!(text, "{v6}");
            text.len()
        }
    }
}

/// Appends `ip` as text. IPv4 addresses, the common case on every request, are written
/// digit by digit: `Ipv4Addr`'s `Display` goes through the formatting machinery and cost
/// about 1,100 instructions per address (callgrind).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + (octet / 10) % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `addr` as `ip:port` (`[v6]:port`), as `SocketAddr`'s `Display` writes it.
pub(crate) fn socket_addr_text(addr: SocketAddr) -> String {
    if addr.is_ipv6() {
        // Scope ids and the bracket form: `Display` knows them all.
        return addr.to_string();
    }
    let mut out = String::with_capacity(21);
    push_ip(&mut out, addr.ip());
    out.push(':');
    let mut digits = [0u8; 5];
    let mut n = addr.port();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for d in digits[..len].iter().rev() {
        out.push(char::from(*d));
    }
    out
}

/// The request's authority: from an absolute-form URI (as a proxy receives it), else
/// the Host header. A Host that is not ASCII (an IDN in UTF-8) is kept, lossily, so that
/// its refusal (`ambiguous_target`) logs the host asked for.
fn request_authority<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
}

/// The authority a request is routed by, or the 400 that refuses it: an ambiguous
/// target (see [`ambiguous_target`]) or no Host at all (the rare case; a large `Err` is
/// accepted for it).
#[allow(clippy::result_large_err)]
fn routable_authority<'a, B>(
    req: &Request<B>,
    authority: Option<&'a str>,
) -> Result<&'a str, Outcome> {
    if let Some(refused) = ambiguous_target(req, authority) {
        return Err(refused);
    }
    authority.ok_or_else(|| {
        Outcome::local(
            StatusCode::BAD_REQUEST,
            "missing Host header\n",
            "-",
            "missing_host_header",
        )
    })
}

/// A request whose target could be read two ways is refused before routing (400), so
/// that no proxy or server further on can read it differently from the policy check:
/// more than one Host header (RFC 9112 §3.2), or an authority that is not a plain
/// `host[:port]` (userinfo such as `allowed@other`, a port that is not a number below
/// 65536, characters no DNS name or IP literal has).
fn ambiguous_target<B>(req: &Request<B>, authority: Option<&str>) -> Option<Outcome> {
    let hosts = req.headers().get_all(HOST).iter().count();
    if hosts <= 1 && authority.is_none_or(valid_authority) {
        return None;
    }
    tracing::warn!(
        "refused a request for {:?} ({hosts} Host headers): ambiguous target",
        authority.unwrap_or("-")
    );
    Some(Outcome::local(
        StatusCode::BAD_REQUEST,
        "invalid Host header or request target\n",
        "-",
        "invalid_authority",
    ))
}

/// Whether `authority` is `host[:port]` with a DNS-style name or an IP literal
/// (`[v6]` bracketed), and a port, if any, that is a number below 65536.
pub(crate) fn valid_authority(authority: &str) -> bool {
    let host = meshbox_routing::tables::strip_port(authority);
    let port_ok = match &authority[host.len()..] {
        "" => true,
        rest => rest
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok()),
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        }
    };
    port_ok && host_ok
}

/// The `x-envoy-upstream-service-time` value for `ms`: the common values (under a
/// second) are made once and shared, so that a response does not allocate for it.
fn service_time_value(ms: u64) -> HeaderValue {
    static COMMON: std::sync::LazyLock<Vec<HeaderValue>> =
        std::sync::LazyLock::new(|| (0..1000u64).map(HeaderValue::from).collect());
    usize::try_from(ms)
        .ok()
        .and_then(|i| COMMON.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(ms))
}

/// `host[:port]` → (lower-case host, port).
pub fn split_authority(authority: &str, default_port: u16) -> (std::borrow::Cow<'_, str>, u16) {
    let host_part = meshbox_routing::tables::strip_port(authority);
    let port = authority[host_part.len()..]
        .strip_prefix(':')
        .and_then(|p| p.parse().ok())
        .unwrap_or(default_port);
    let host = host_part.trim_end_matches('.');
    // Most hosts come lower-case already: borrowed, not copied.
    let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    };
    (host, port)
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// A UUID-shaped (version 4, variant 1) request id, as Envoy generates for
/// `x-request-id`: `xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx`, written without formatting
/// machinery (it is made for every request that comes without one).
fn new_request_id(a: u64, b: u64) -> [u8; 36] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = (b & 0x3FFF_FFFF_FFFF_FFFF) | 0x8000_0000_0000_0000;
    let a = (a & 0xFFFF_FFFF_FFFF_0FFF) | 0x0000_0000_0000_4000;
    // Two hex digits per byte, then the dashes put in by whole groups: no per-digit
    // position checks.
    let mut digits = [0u8; 32];
    for (i, byte) in a
        .to_be_bytes()
        .into_iter()
        .chain(b.to_be_bytes())
        .enumerate()
    {
        digits[2 * i] = HEX[usize::from(byte >> 4)];
        digits[2 * i + 1] = HEX[usize::from(byte & 0xF)];
    }
    let mut out = [b'-'; 36];
    out[..8].copy_from_slice(&digits[..8]);
    out[9..13].copy_from_slice(&digits[8..12]);
    out[14..18].copy_from_slice(&digits[12..16]);
    out[19..23].copy_from_slice(&digits[16..20]);
    out[24..].copy_from_slice(&digits[20..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_match_names_exactly_the_hop_by_hop_list() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        for other in [
            "host",
            "x-request-id",
            "transfer-encoding",
            "content-length",
            "tee",
        ] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(other)), "{other}");
        }
    }

    #[test]
    fn authority_splits_into_host_and_port() {
        assert_eq!(
            split_authority("Producer-Internal-Host", 80),
            ("producer-internal-host".into(), 80)
        );
        assert_eq!(
            split_authority("worldtimeapi.org:8080", 80),
            ("worldtimeapi.org".into(), 8080)
        );
        assert_eq!(split_authority("[::1]:81", 80), ("[::1]".into(), 81));
    }

    #[test]
    fn socket_addresses_are_written_as_display_writes_them() {
        for text in [
            "127.0.0.1:8080",
            "0.0.0.0:0",
            "10.20.255.1:65535",
            "192.168.100.9:80",
            "[::1]:443",
            "[2001:db8::1:0]:9",
        ] {
            let addr: SocketAddr = text.parse().expect("address");
            assert_eq!(socket_addr_text(addr), addr.to_string());
        }
        for text in [
            "1.22.203.4",
            "0.0.0.0",
            "255.255.255.255",
            "10.0.99.100",
            "::1",
            "2001:db8::7",
        ] {
            let addr: std::net::IpAddr = text.parse().expect("ip");
            let mut ip = String::new();
            push_ip(&mut ip, addr);
            assert_eq!(ip, text);
            assert_eq!(ip_text_len(addr), text.len());
        }
    }

    /// Flags added to a response's keep Envoy's order.
    #[test]
    fn added_flags_keep_envoys_order() {
        assert_eq!(add_flag("-", "UC"), "UC");
        assert_eq!(add_flag("DI", "UT"), "UT,DI");
        assert_eq!(add_flag("DI", "UC"), "UC,DI");
        assert_eq!(add_flag("DI", "UPE"), "DI,UPE");
        assert_eq!(add_flag("UF", "URX"), "UF,URX");
        assert_eq!(add_flag("UPE", "URX"), "URX,UPE");
        assert_eq!(add_flag("-", "URX"), "URX");
    }

    #[test]
    fn a_gateway_appends_the_peer_to_x_forwarded_for() {
        let peer: SocketAddr = "10.1.2.3:4567".parse().expect("peer");
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, peer);
        assert_eq!(
            headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["10.1.2.3"]
        );
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.9"));
        append_forwarded_for(&mut headers, peer);
        // The first value is extended and replaces every earlier field (HeaderMap::insert).
        assert_eq!(
            headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["10.1.2.3, 10.1.2.3"]
        );
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210);
        // Version nibble 4, variant bits 10.
        assert_eq!(&id, b"01234567-89ab-4def-bedc-ba9876543210");
        let id = new_request_id(0, 0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
    }
}
