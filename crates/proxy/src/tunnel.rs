//! Connections that are not HTTP requests: a workload's `CONNECT host:port` through its
//! sidecar (`HTTPS_PROXY`), and a gateway port served as TLS passthrough or opaque TCP.
//! Both end in Envoy's `tcp_proxy`: one upstream connection, bytes relayed both ways,
//! and one access log line in Istio's TCP form when the connection closes
//! (`"- - -" 0 - - - "-" RECEIVED SENT DURATION - ... CLUSTER ... SNI -`).
//!
//! At a sidecar, meshbox stands where Istio's iptables capture stands: the CONNECT
//! target is the destination the application asked for. The tunnel is allowed to a
//! service port of the registry with protocol TLS, HTTPS or TCP (routed by the
//! VirtualService `tls` / `tcp` chains of l4.rs, as Istio's outbound filter chains do),
//! else by the outbound traffic policy: ALLOW_ANY tunnels to the resolved host
//! (PassthroughCluster), REGISTRY_ONLY refuses with 502 (BlackHoleCluster) and logs the
//! host and port asked for.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use meshbox_config::OutboundPolicy;
use meshbox_routing::l4::{self, L4Protocol, L4Service};
use meshbox_routing::tables::{Cluster, PASSTHROUGH_CLUSTER};
use meshbox_routing::ProxyTables;

use crate::access_log::AccessLogEntry;
use crate::body::LoggedBody;
use crate::proxy::{split_authority, Outcome, Proxy};
use crate::sni::{inspect, Inspected};

/// Istio's name for the cluster that drops traffic (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// Envoy's `listener_filters_timeout`: how long the proxy waits for a ClientHello.
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(15);

/// Where an accepted tunnel goes.
struct Upstream {
    stream: TcpStream,
    cluster: String,
    host: SocketAddr,
    local: Option<SocketAddr>,
    /// The registry service, when the tunnel is to one (its host covers the SNI).
    service: Option<L4Service>,
}

/// The facts of a TCP connection for its log line.
struct TcpLog {
    start: Instant,
    start_time: chrono::DateTime<Utc>,
    downstream_local: SocketAddr,
    downstream_remote: SocketAddr,
}

impl Proxy {
    /// `CONNECT host:port` from the workload, at the sidecar's outbound listener.
    pub(crate) async fn connect(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Response<LoggedBody> {
        let log = TcpLog {
            start: Instant::now(),
            start_time: Utc::now(),
            downstream_local: local,
            downstream_remote: peer,
        };
        let authority = req.uri().authority().map(|a| a.as_str().to_string());
        let user_agent = req
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let on_upgrade = hyper::upgrade::on(&mut req);
        let refuse = |outcome: Outcome, route: Option<&str>| {
            self.connect_refused(&log, authority.clone(), user_agent.clone(), outcome, route)
        };
        let Some(authority) = authority.clone() else {
            return refuse(
                Outcome::local(
                    StatusCode::BAD_REQUEST,
                    "CONNECT needs host:port\n",
                    "-",
                    "missing_host_header",
                ),
                None,
            );
        };
        // `CONNECT user@host:port`, a port out of range or a name with odd characters
        // could be read differently further on: refused (400), as for HTTP requests.
        if !crate::proxy::valid_authority(&authority) {
            tracing::warn!(proxy = %self.name, "refused CONNECT to {authority:?}: not host:port");
            return refuse(
                Outcome::local(
                    StatusCode::BAD_REQUEST,
                    "CONNECT needs host:port\n",
                    "-",
                    "invalid_authority",
                ),
                None,
            );
        }
        let (host, port) = split_authority(&authority, 443);
        let tables = self.tables();
        let upstream = match self.tunnel_upstream(&tables, &host, port, local).await {
            Ok(u) => u,
            Err((outcome, route)) => {
                if outcome.cluster.as_deref() == Some(BLACKHOLE_CLUSTER) {
                    tracing::warn!(
                        proxy = %self.name,
                        "refused CONNECT to {host}:{port}: no ServiceEntry lists it with protocol TLS, HTTPS or TCP (REGISTRY_ONLY)"
                    );
                }
                return refuse(outcome, route);
            }
        };
        let proxy = self.clone();
        let registry_only = tables.outbound_policy == OutboundPolicy::RegistryOnly;
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut down = TokioIo::new(upgraded);
            let mut first = Vec::new();
            let mut sni = None;
            if let Some(service) = &upstream.service {
                if service.protocol == L4Protocol::Tls {
                    match inspect(&mut down, &mut first, CLIENT_HELLO_TIMEOUT).await {
                        Inspected::Tls { sni: s } => sni = s,
                        Inspected::NotTls | Inspected::Incomplete if registry_only => {
                            // A TLS port's chains match TLS only: anything else finds no
                            // filter chain.
                            proxy.write_tcp_log(&log, None, None, "NR", first.len() as u64, 0);
                            return;
                        }
                        _ => {}
                    }
                    // In REGISTRY_ONLY the ClientHello must name the host the tunnel was
                    // allowed for: another SNI would reach a host no ServiceEntry lists.
                    if let (true, Some(s)) = (registry_only, &sni) {
                        let covered = *s == service.host
                            || (service.host.starts_with('*')
                                && meshbox_routing::build::host_matches(&service.host, s));
                        if !covered {
                            tracing::warn!(
                                proxy = %proxy.name,
                                "refused CONNECT to {}: its ClientHello asks for {s}, which no ServiceEntry lists (REGISTRY_ONLY)",
                                service.host
                            );
                            proxy.write_tcp_log(
                                &log,
                                Some(BLACKHOLE_CLUSTER.to_string()),
                                sni,
                                "NR",
                                first.len() as u64,
                                0,
                            );
                            return;
                        }
                    }
                }
            }
            proxy.relay(down, first, upstream, sni, log).await;
        });
        let mut resp = Response::new(LoggedBody::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
            None,
        ));
        *resp.status_mut() = StatusCode::OK;
        resp
    }

    /// The upstream of a CONNECT tunnel, connected; or the refusal, with its route name.
    async fn tunnel_upstream(
        &self,
        tables: &ProxyTables,
        host: &str,
        port: u16,
        listener: SocketAddr,
    ) -> Result<Upstream, (Outcome, Option<&'static str>)> {
        let service = tables.l4.sidecar_service(host, u32::from(port)).cloned();
        let chosen = service.as_ref().and_then(|svc| {
            if svc.routes.is_empty() {
                return svc.default_cluster.clone();
            }
            // The chain for the SNI the client will send: the CONNECT host. The
            // destination address is the host's, when it is an IP literal.
            let ip = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok();
            l4::select(&svc.routes, Some(host), ip)
                .and_then(|r| r.pick(self.next_random()))
                .map(|c| c.cluster.clone())
                .or_else(|| svc.default_cluster.clone())
        });
        let Some(cluster_name) = chosen else {
            return match tables.outbound_policy {
                OutboundPolicy::AllowAny => {
                    let addr = match self.resolver.resolve(host, port).await {
                        Ok(addrs) => addrs.first().copied(),
                        Err(e) => {
                            return Err((
                                crate::proxy::dns_failure(&e.host)
                                    .with_cluster(PASSTHROUGH_CLUSTER),
                                Some("allow_any"),
                            ))
                        }
                    };
                    let Some(addr) = addr else {
                        return Err((
                            crate::proxy::dns_failure(host).with_cluster(PASSTHROUGH_CLUSTER),
                            Some("allow_any"),
                        ));
                    };
                    // A tunnel to this very listener would loop through the sidecar
                    // (Istio drops traffic to the outbound listener's own port).
                    if addr == listener {
                        return Err((
                            Outcome::local(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "no healthy upstream",
                                "UH",
                                "no_healthy_upstream",
                            )
                            .with_cluster(PASSTHROUGH_CLUSTER),
                            Some("allow_any"),
                        ));
                    }
                    // The passthrough cluster has the mesh's connect timeout.
                    let (stream, local) = dial(addr, crate::pool::DEFAULT_CONNECT_TIMEOUT)
                        .await
                        .map_err(|o| (o.with_cluster(PASSTHROUGH_CLUSTER), Some("allow_any")))?;
                    Ok(Upstream {
                        stream,
                        cluster: PASSTHROUGH_CLUSTER.to_string(),
                        host: addr,
                        local,
                        service: None,
                    })
                }
                OutboundPolicy::RegistryOnly => Err((
                    Outcome::local(StatusCode::BAD_GATEWAY, "", "-", "direct_response")
                        .with_cluster(BLACKHOLE_CLUSTER),
                    Some("block_all"),
                )),
            };
        };
        let Some(cluster) = tables.clusters.get(&cluster_name) else {
            return Err((
                Outcome::local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "",
                    "NC",
                    "cluster_not_found",
                ),
                None,
            ));
        };
        let (stream, addr, local) = self
            .dial_cluster(cluster, host, port)
            .await
            .map_err(|o| (o.with_cluster(cluster_name.as_str()), None))?;
        Ok(Upstream {
            stream,
            cluster: cluster_name,
            host: addr,
            local,
            service,
        })
    }

    /// Picks an endpoint of `cluster` (for original-destination clusters, `host:port`)
    /// and connects to it.
    async fn dial_cluster(
        &self,
        cluster: &Cluster,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr, Option<SocketAddr>), Outcome> {
        let state = self
            .cluster_states
            .load()
            .get(&cluster.name)
            .unwrap_or_default();
        let endpoint = match self.endpoint(cluster, &state, None, host, port).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return Err(Outcome::local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy upstream",
                    "UH",
                    "no_healthy_upstream",
                ))
            }
            Err(outcome) => return Err(outcome),
        };
        let connect_timeout = crate::pool::ConnPolicy::of(&cluster.policy).connect_timeout;
        let (stream, local) = dial(endpoint, connect_timeout).await?;
        Ok((stream, endpoint, local))
    }

    /// Writes the access log line of a refused or failed CONNECT (an HTTP exchange:
    /// `"CONNECT - HTTP/1.1" 502 ... "host:port" ... block_all`) and answers it.
    fn connect_refused(
        &self,
        log: &TcpLog,
        authority: Option<String>,
        user_agent: Option<String>,
        outcome: Outcome,
        route: Option<&str>,
    ) -> Response<LoggedBody> {
        let entry = AccessLogEntry {
            start_time: Some(log.start_time),
            method: Method::CONNECT.to_string(),
            path: "-".into(),
            protocol: "HTTP/1.1",
            response_code: outcome.response.status().as_u16(),
            response_flags: outcome.flags,
            response_code_details: outcome.details,
            upstream_transport_failure_reason: outcome.transport_failure.clone(),
            user_agent,
            authority,
            upstream_host: outcome.upstream_host,
            upstream_cluster: outcome.cluster.as_deref().map(str::to_string),
            downstream_local_address: Some(log.downstream_local),
            downstream_remote_address: Some(log.downstream_remote),
            route_name: route.map(str::to_string),
            ..Default::default()
        };
        let labels = self.metrics.labels(
            false,
            &crate::metrics::Destination {
                cluster: outcome.cluster.as_deref(),
                route,
                host: entry.authority.as_deref().unwrap_or_default(),
                upstream: outcome.upstream_host,
            },
            "tcp",
            None,
            outcome.flags,
        );
        self.metrics.tcp_open(&labels);
        self.metrics.tcp_close(&labels, 0, 0);
        let pending = self.pending_log(entry, log.start, 0);
        let (parts, body) = outcome.response.into_parts();
        Response::from_parts(parts, LoggedBody::new(body, pending.map(Box::new)))
    }

    /// A gateway connection on a port that Gateway servers make TLS passthrough or
    /// opaque TCP: read the SNI (TLS), choose the chain, relay to the chosen endpoint.
    pub(crate) async fn serve_l4_gateway(
        self: Arc<Self>,
        mut stream: TcpStream,
        local: SocketAddr,
        peer: SocketAddr,
        service_port: u32,
    ) {
        let log = TcpLog {
            start: Instant::now(),
            start_time: Utc::now(),
            downstream_local: local,
            downstream_remote: peer,
        };
        let tables = self.tables();
        let Some(port) = tables.l4.gateway.get(&service_port) else {
            return;
        };
        let mut first = Vec::new();
        let sni = match port.protocol {
            L4Protocol::Tls => match inspect(&mut stream, &mut first, CLIENT_HELLO_TIMEOUT).await {
                Inspected::Tls { sni } => sni,
                _ => {
                    self.write_tcp_log(&log, None, None, "NR", first.len() as u64, 0);
                    return;
                }
            },
            L4Protocol::Tcp => None,
        };
        let route = l4::select(&port.routes, sni.as_deref(), Some(local.ip()));
        let Some(choice) = route.and_then(|r| r.pick(self.next_random())) else {
            // Envoy: no filter chain matches (an SNI no Gateway server and
            // VirtualService lists): the connection is closed.
            tracing::debug!(proxy = %self.name, "no filter chain for SNI {sni:?} on port {service_port}");
            self.write_tcp_log(&log, None, sni, "NR", first.len() as u64, 0);
            return;
        };
        let Some(cluster) = tables.clusters.get(&choice.cluster) else {
            self.write_tcp_log(&log, None, sni, "NC", first.len() as u64, 0);
            return;
        };
        // Original-destination clusters (resolution NONE) go where the SNI names.
        let target_host = sni.clone().unwrap_or_default();
        let port_number = u16::try_from(cluster.port).unwrap_or(0);
        match self.dial_cluster(cluster, &target_host, port_number).await {
            Ok((up, addr, up_local)) => {
                let upstream = Upstream {
                    stream: up,
                    cluster: cluster.name.to_string(),
                    host: addr,
                    local: up_local,
                    service: None,
                };
                self.relay(stream, first, upstream, sni, log).await;
            }
            Err(outcome) => {
                let labels = self.tcp_labels(
                    Some(&cluster.name),
                    sni.as_deref(),
                    outcome.upstream_host,
                    outcome.flags,
                );
                self.metrics.tcp_open(&labels);
                self.metrics.tcp_close(&labels, first.len() as u64, 0);
                let mut entry = tcp_entry(&log, Some(cluster.name.to_string()), sni);
                entry.response_flags = outcome.flags;
                entry.upstream_host = outcome.upstream_host;
                entry.upstream_transport_failure_reason = outcome.transport_failure;
                if let Some(p) = self.pending_log(entry, log.start, first.len() as u64) {
                    p.emit(0);
                }
            }
        }
    }

    /// Relays bytes both ways until both sides are done, then logs the connection.
    async fn relay<D>(
        &self,
        mut down: D,
        first: Vec<u8>,
        mut upstream: Upstream,
        sni: Option<String>,
        log: TcpLog,
    ) where
        D: AsyncRead + AsyncWrite + Unpin,
    {
        let opened = self.tcp_labels(
            Some(&upstream.cluster),
            sni.as_deref(),
            Some(upstream.host),
            "-",
        );
        self.metrics.tcp_open(&opened);
        let mut received = first.len() as u64;
        let mut sent = 0;
        let mut flags = "-";
        if !first.is_empty() && upstream.stream.write_all(&first).await.is_err() {
            flags = "UC";
        } else {
            match tokio::io::copy_bidirectional(&mut down, &mut upstream.stream).await {
                Ok((to_up, to_down)) => {
                    received += to_up;
                    sent = to_down;
                }
                Err(e) => {
                    tracing::debug!(proxy = %self.name, "tunnel ended: {e}");
                }
            }
        }
        let closed = if flags == "-" {
            opened
        } else {
            self.tcp_labels(
                Some(&upstream.cluster),
                sni.as_deref(),
                Some(upstream.host),
                flags,
            )
        };
        self.metrics.tcp_close(&closed, received, sent);
        let mut entry = tcp_entry(&log, Some(upstream.cluster), sni);
        entry.response_flags = flags;
        entry.upstream_host = Some(upstream.host);
        entry.upstream_local_address = upstream.local;
        if let Some(p) = self.pending_log(entry, log.start, received) {
            p.emit(sent);
        }
    }

    /// Logs a TCP connection that was closed without an upstream.
    fn write_tcp_log(
        &self,
        log: &TcpLog,
        cluster: Option<String>,
        sni: Option<String>,
        flags: &'static str,
        received: u64,
        sent: u64,
    ) {
        let labels = self.tcp_labels(cluster.as_deref(), sni.as_deref(), None, flags);
        self.metrics.tcp_open(&labels);
        self.metrics.tcp_close(&labels, received, sent);
        let mut entry = tcp_entry(log, cluster, sni);
        entry.response_flags = flags;
        if flags == "NR" {
            entry.response_code_details = "filter_chain_not_found";
        }
        if let Some(p) = self.pending_log(entry, log.start, received) {
            p.emit(sent);
        }
    }

    /// The metric labels of a connection this proxy reports as source.
    fn tcp_labels(
        &self,
        cluster: Option<&str>,
        sni: Option<&str>,
        upstream: Option<SocketAddr>,
        flags: &'static str,
    ) -> crate::metrics::Labels {
        let host = sni
            .map(str::to_string)
            .or_else(|| upstream.map(|a| a.to_string()))
            .unwrap_or_default();
        self.metrics.labels(
            false,
            &crate::metrics::Destination {
                cluster,
                route: None,
                host: &host,
                upstream,
            },
            "tcp",
            None,
            flags,
        )
    }

    fn pending_log(
        &self,
        entry: AccessLogEntry,
        start: Instant,
        received: u64,
    ) -> Option<crate::body::PendingLog> {
        let (sink, encoding) = self.access_log_target()?;
        Some(crate::body::PendingLog {
            entry,
            start,
            sink,
            encoding,
            received: Some(Arc::new(AtomicU64::new(received))),
        })
    }
}

/// A TCP line's fields: Istio's default format with no HTTP request
/// (`"- - -" 0 - - - "-" ...`).
fn tcp_entry(log: &TcpLog, cluster: Option<String>, sni: Option<String>) -> AccessLogEntry {
    AccessLogEntry {
        start_time: Some(log.start_time),
        method: "-".into(),
        path: "-".into(),
        protocol: "-",
        response_code: 0,
        response_flags: "-",
        response_code_details: "-",
        upstream_cluster: cluster,
        downstream_local_address: Some(log.downstream_local),
        downstream_remote_address: Some(log.downstream_remote),
        requested_server_name: sni,
        ..Default::default()
    }
}

/// Opens a TCP connection within the cluster's `connect_timeout`, as Envoy's tcp_proxy
/// does: a failure is `UF` with the reason.
async fn dial(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<(TcpStream, Option<SocketAddr>), Outcome> {
    let failure = |reason: String| {
        let mut o = Outcome::local(
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
            "UF",
            "upstream_reset_before_response_started{connection_failure}",
        );
        o.upstream_host = Some(addr);
        o.transport_failure = Some(reason);
        o
    };
    match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            let local = stream.local_addr().ok();
            Ok((stream, local))
        }
        Ok(Err(e)) => Err(failure(format!("delayed connect error: {e}"))),
        Err(_) => Err(failure("connection timeout".into())),
    }
}
