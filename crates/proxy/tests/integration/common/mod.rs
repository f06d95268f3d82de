//! Shared fixtures for the proxy's in-process integration tests: configuration from
//! YAML strings, real upstream servers on 127.0.0.1:0 that echo what they received or
//! misbehave, pods whose sidecar inbound listener fronts such an upstream, sidecars and
//! gateways serving real listeners, an HTTP/1.1 client over real sockets, and a
//! parser for Istio's default TEXT access log line.
//!
//! Nothing waits a fixed time for readiness: every listener is bound before it is
//! served, and access log lines (written when a response body finishes, as Envoy logs
//! at the end of a stream) are polled for with a deadline.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use meshbox_config::mesh::parse_set_flags;
use meshbox_config::{load_str, LoadOptions, MeshOptions, Store};
use meshbox_proxy::{
    AccessLogSink, Encoding, ListenerRole, Override, Proxy, ProxySettings, Resolver,
};
use meshbox_routing::{MeshState, ProxyTables, WorkloadInstance};

/// The course's namespace.
pub const NS: &str = "dev-service-mesh";

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------- configuration

/// A store holding the YAML documents, objects without a namespace landing in `NS`
/// (as `kubectl apply -n dev-service-mesh -f` would load them).
pub fn store(yaml: &str) -> Store {
    let opts = LoadOptions {
        namespace: NS.to_string(),
        namespace_explicit: false,
    };
    let resources = load_str("test.yaml", yaml, &opts).unwrap_or_else(|e| panic!("{e}"));
    let mut store = Store::new();
    store.apply(resources);
    store
}

/// Install options from istioctl `--set` flags over the default profile.
pub fn mesh_with(flags: &[&str]) -> MeshOptions {
    let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    let layer = parse_set_flags(&flags).expect("flags");
    MeshOptions::from_layers(&[layer]).expect("mesh options")
}

/// The course's install: access log on, REGISTRY_ONLY.
pub fn registry_only() -> MeshOptions {
    mesh_with(&[
        "meshConfig.accessLogFile=/dev/stdout",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
    ])
}

/// Istio's default outbound policy, access log on.
pub fn allow_any() -> MeshOptions {
    mesh_with(&[
        "meshConfig.accessLogFile=/dev/stdout",
        "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
    ])
}

/// A Kubernetes Service `name` in `NS`: port 80 to `target_port`, selecting `app: APP`.
pub fn service_yaml(name: &str, app: &str, target_port: u32) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {app}
  ports:
    - name: http
      port: 80
      targetPort: {target_port}
---
"
    )
}

/// Service `svc` (port 80 to 8080) and a DestinationRule for it whose `trafficPolicy`
/// is `policy` (YAML indented under it).
pub fn with_rule(policy: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc-dr
spec:
  host: svc
  trafficPolicy:
{policy}",
        service_yaml("svc", "svc", 8080)
    )
}

/// Service `svc` (port 80 to 8080) and a VirtualService for it with these `http`
/// rules (YAML indented as under `http:`).
pub fn vs(http: &str) -> String {
    format!(
        "{}apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc-vs
spec:
  hosts:
    - svc
  http:
{http}",
        service_yaml("svc", "svc", 8080)
    )
}

/// The workload whose sidecar sends the test's outbound requests.
pub fn client_instance() -> WorkloadInstance {
    WorkloadInstance {
        name: "client-pod-1".into(),
        namespace: NS.into(),
        labels: [("app".to_string(), "client".to_string())].into(),
        inbound: BTreeMap::new(),
        named_ports: BTreeMap::new(),
    }
}

/// The client sidecar's tables for this config and these running pods.
pub fn sidecar_tables(
    store: &Store,
    mesh: &MeshOptions,
    workloads: &[WorkloadInstance],
) -> ProxyTables {
    MeshState::new(store, mesh, workloads).sidecar_tables(&client_instance())
}

// ---------------------------------------------------------------- access log

/// A test access log: every line, in order.
#[derive(Default)]
pub struct LogLines(Mutex<Vec<String>>);

impl AccessLogSink for LogLines {
    fn write_line(&self, line: &str) {
        self.0.lock().unwrap().push(line.to_string());
    }
}

impl LogLines {
    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// Waits (with a deadline) until at least `n` lines were written; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} access log lines, got {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the `n`-th line (1-based) and parses it.
    pub async fn line(&self, n: usize) -> LogLine {
        let lines = self.wait_for(n).await;
        LogLine::parse(&lines[n - 1])
    }

    /// Waits (with a deadline) for a line that satisfies `pred`; returns it parsed.
    pub async fn find(&self, pred: impl Fn(&LogLine) -> bool) -> LogLine {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let lines = self.lines();
            if let Some(l) = lines.iter().map(|l| LogLine::parse(l)).find(|l| pred(l)) {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no access log line as expected among {lines:#?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for exactly one line and parses it; fails if there are more.
    pub async fn only_line(&self) -> LogLine {
        let lines = self.wait_for(1).await;
        assert_eq!(lines.len(), 1, "expected one access log line: {lines:#?}");
        LogLine::parse(&lines[0])
    }
}

/// One line of Istio's default TEXT access log, split into its fields (quotes removed
/// from the fields Istio quotes):
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%"
/// %RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
/// "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%"
/// "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW%
/// %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS%
/// %REQUESTED_SERVER_NAME% %ROUTE_NAME%` (istio/istio pkg/config/mesh, EnvoyTextLogFormat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub raw: String,
    pub start_time: String,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub response_code: String,
    pub response_flags: String,
    pub response_code_details: String,
    pub connection_termination_details: String,
    pub upstream_transport_failure_reason: String,
    pub bytes_received: String,
    pub bytes_sent: String,
    pub duration: String,
    pub upstream_service_time: String,
    pub x_forwarded_for: String,
    pub user_agent: String,
    pub request_id: String,
    pub authority: String,
    pub upstream_host: String,
    pub upstream_cluster: String,
    pub upstream_local_address: String,
    pub downstream_local_address: String,
    pub downstream_remote_address: String,
    pub requested_server_name: String,
    pub route_name: String,
}

/// Splits a log line into tokens: `[...]`, `"..."` (kept with their delimiters) and
/// bare words, separated by single spaces.
fn tokens(line: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let end = match rest.as_bytes()[0] {
            b'"' => rest[1..].find('"').map(|i| i + 2),
            b'[' => rest.find(']').map(|i| i + 1),
            _ => Some(rest.find(' ').unwrap_or(rest.len())),
        }
        .unwrap_or_else(|| panic!("unterminated field in {line:?}"));
        out.push(&rest[..end]);
        rest = &rest[end..];
        if let Some(r) = rest.strip_prefix(' ') {
            assert!(!r.starts_with(' '), "double space in {line:?}");
            rest = r;
        } else {
            assert!(
                rest.is_empty(),
                "fields not separated by a space in {line:?}"
            );
        }
    }
    out
}

fn quoted<'a>(tok: &'a str, line: &str) -> &'a str {
    tok.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("field {tok:?} should be quoted in {line:?}"))
}

fn bare<'a>(tok: &'a str, line: &str) -> &'a str {
    assert!(
        !tok.starts_with('"') && !tok.starts_with('[') && !tok.is_empty(),
        "field {tok:?} should be a bare word in {line:?}"
    );
    tok
}

impl LogLine {
    /// Parses a TEXT line, checking the quoting and the number of fields.
    pub fn parse(line: &str) -> LogLine {
        let t = tokens(line);
        assert_eq!(
            t.len(),
            22,
            "Istio's TEXT format has 22 fields: {line:?} {t:#?}"
        );
        let start_time = t[0]
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or_else(|| panic!("start time should be bracketed in {line:?}"));
        let request_line: Vec<&str> = quoted(t[1], line).split(' ').collect();
        assert_eq!(
            request_line.len(),
            3,
            "\"METHOD PATH PROTOCOL\" in {line:?}"
        );
        let s = |x: &str| x.to_string();
        LogLine {
            raw: line.to_string(),
            start_time: s(start_time),
            method: s(request_line[0]),
            path: s(request_line[1]),
            protocol: s(request_line[2]),
            response_code: s(bare(t[2], line)),
            response_flags: s(bare(t[3], line)),
            response_code_details: s(bare(t[4], line)),
            connection_termination_details: s(bare(t[5], line)),
            upstream_transport_failure_reason: s(quoted(t[6], line)),
            bytes_received: s(bare(t[7], line)),
            bytes_sent: s(bare(t[8], line)),
            duration: s(bare(t[9], line)),
            upstream_service_time: s(bare(t[10], line)),
            x_forwarded_for: s(quoted(t[11], line)),
            user_agent: s(quoted(t[12], line)),
            request_id: s(quoted(t[13], line)),
            authority: s(quoted(t[14], line)),
            upstream_host: s(quoted(t[15], line)),
            upstream_cluster: s(bare(t[16], line)),
            upstream_local_address: s(bare(t[17], line)),
            downstream_local_address: s(bare(t[18], line)),
            downstream_remote_address: s(bare(t[19], line)),
            requested_server_name: s(bare(t[20], line)),
            route_name: s(bare(t[21], line)),
        }
    }
}

// ---------------------------------------------------------------- upstreams

/// A real upstream server on 127.0.0.1.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Requests received so far.
    pub requests: Arc<AtomicUsize>,
}

/// Makes an upstream hold each request until the test releases it.
#[derive(Clone)]
pub struct Hold {
    /// Receives the request URI as each request arrives.
    arrived: mpsc::UnboundedSender<String>,
    release: Arc<Semaphore>,
}

/// The test's side of a `Hold`.
pub struct HoldControl {
    pub arrived: mpsc::UnboundedReceiver<String>,
    release: Arc<Semaphore>,
}

impl HoldControl {
    /// Waits (with a deadline) for the next held request; returns its URI.
    pub async fn next_arrival(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.arrived.recv())
            .await
            .expect("a held request within the deadline")
            .expect("upstream still running")
    }

    /// Lets one held request answer.
    pub fn release_one(&self) {
        self.release.add_permits(1);
    }
}

/// A hold and its control.
pub fn hold() -> (Hold, HoldControl) {
    let (tx, rx) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    (
        Hold {
            arrived: tx,
            release: release.clone(),
        },
        HoldControl {
            arrived: rx,
            release,
        },
    )
}

/// An upstream that answers 200 with JSON describing the request it received:
/// `{"upstream", "method", "uri", "version", "headers": {name: value}, "body"}`.
pub async fn echo_upstream(name: &str) -> Upstream {
    upstream(name, None).await
}

/// An echo upstream that holds every request until released.
pub async fn held_upstream(name: &str, hold: Hold) -> Upstream {
    upstream(name, Some(hold)).await
}

async fn upstream(name: &str, hold: Option<Hold>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let addr = listener.local_addr().expect("upstream addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (acc, reqs, upstream_name) = (accepted.clone(), requests.clone(), name.to_string());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let (reqs, name, hold) = (reqs.clone(), upstream_name.clone(), hold.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (reqs, name, hold) = (reqs.clone(), name.clone(), hold.clone());
                    async move {
                        reqs.fetch_add(1, Ordering::SeqCst);
                        if let Some(h) = &hold {
                            let _ = h.arrived.send(req.uri().to_string());
                            if let Ok(permit) = h.release.acquire().await {
                                permit.forget();
                            }
                        }
                        Ok::<_, Infallible>(echo(&name, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Upstream {
        name: name.to_string(),
        addr,
        accepted,
        requests,
    }
}

async fn echo(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for key in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        headers.insert(key.as_str().to_string(), values.join(", ").into());
    }
    let json = serde_json::json!({
        "upstream": name,
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", name)
        .body(Full::new(Bytes::from(json.to_string())))
        .expect("echo response")
}

/// An address where nothing listens: connections to it are refused.
pub async fn refusing_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

/// An upstream that accepts, reads the request, and closes the connection without
/// answering (a disconnect before response headers).
pub async fn closing_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                drop(stream);
            });
        }
    });
    Upstream {
        name: "closing".into(),
        addr,
        accepted,
        requests: Arc::new(AtomicUsize::new(0)),
    }
}

// ---------------------------------------------------------------- pods and proxies

/// Settings for a test proxy with its own access log.
pub fn settings(name: &str, overrides: Vec<Override>, seed: u64) -> (ProxySettings, Arc<LogLines>) {
    let log = Arc::new(LogLines::default());
    let sink: Arc<dyn AccessLogSink> = log.clone();
    (
        ProxySettings {
            name: name.to_string(),
            resolver: Arc::new(Resolver::new(overrides)),
            access_log: Some((sink, Encoding::Text)),
            seed,
            workers: Default::default(),
        },
        log,
    )
}

/// A running pod: its sidecar's inbound listener for one container port forwards to
/// the app (a test upstream), and its instance names that listener as the pod address.
pub struct Pod {
    pub instance: WorkloadInstance,
    /// The pod's sidecar (its inbound listener).
    pub proxy: Arc<Proxy>,
    /// The pod sidecar's access log (inbound lines).
    pub log: Arc<LogLines>,
    /// Where the sidecar's inbound listener is.
    pub inbound: SocketAddr,
}

/// A pod `name` in `NS` with labels `app: APP`, `version: v1`, whose container port
/// `container_port` is served by `app_addr` behind the pod's sidecar.
pub async fn pod(name: &str, app: &str, container_port: u32, app_addr: SocketAddr) -> Pod {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind inbound");
    let inbound = listener.local_addr().expect("inbound addr");
    let instance = bare_pod(name, app, container_port, inbound);
    let (settings, log) = settings(name, Vec::new(), 0);
    let tables =
        MeshState::new(&Store::new(), &MeshOptions::default(), &[]).sidecar_tables(&instance);
    let proxy = Proxy::new(settings, tables);
    tokio::spawn(proxy.clone().serve(
        listener,
        ListenerRole::SidecarInbound {
            port: container_port,
            app: app_addr,
        },
    ));
    Pod {
        instance,
        proxy,
        log,
        inbound,
    }
}

/// A pod instance whose address for `container_port` is `addr` itself (no sidecar in
/// front): for endpoints that refuse or misbehave at the TCP level.
pub fn bare_pod(name: &str, app: &str, container_port: u32, addr: SocketAddr) -> WorkloadInstance {
    WorkloadInstance {
        name: name.to_string(),
        namespace: NS.to_string(),
        labels: [
            ("app".to_string(), app.to_string()),
            ("version".to_string(), "v1".to_string()),
        ]
        .into(),
        inbound: [(container_port, addr)].into(),
        named_ports: BTreeMap::new(),
    }
}

/// A proxy serving one listener (a sidecar's outbound port or a gateway port).
pub struct Running {
    pub proxy: Arc<Proxy>,
    pub addr: SocketAddr,
    pub log: Arc<LogLines>,
}

/// The client's sidecar: its outbound listener, which the client uses as HTTP_PROXY.
pub async fn sidecar(tables: ProxyTables, overrides: Vec<Override>, seed: u64) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind outbound");
    let addr = listener.local_addr().expect("outbound addr");
    let (settings, log) = settings("client-pod-1", overrides, seed);
    let proxy = Proxy::new(settings, tables);
    tokio::spawn(proxy.clone().serve(listener, ListenerRole::SidecarOutbound));
    Running { proxy, addr, log }
}

/// The ingress gateway's instance, listening on `addr` for container port 8080.
pub fn ingress_instance(addr: SocketAddr) -> WorkloadInstance {
    WorkloadInstance {
        name: "istio-ingressgateway-1".into(),
        namespace: "istio-system".into(),
        labels: [
            ("app".to_string(), "istio-ingressgateway".to_string()),
            ("istio".to_string(), "ingressgateway".to_string()),
        ]
        .into(),
        inbound: [(8080, addr)].into(),
        named_ports: BTreeMap::new(),
    }
}

/// The ingress gateway, serving Service port 80 (container port 8080) with the tables
/// this config gives it.
pub async fn ingress_gateway(
    store: &Store,
    mesh: &MeshOptions,
    pods: &[WorkloadInstance],
) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gateway");
    let addr = listener.local_addr().expect("gateway addr");
    let instance = ingress_instance(addr);
    let mut workloads = pods.to_vec();
    workloads.push(instance.clone());
    let tables = MeshState::new(store, mesh, &workloads).gateway_tables(&instance, &[(8080, 80)]);
    let (settings, log) = settings(&instance.name, Vec::new(), 0);
    let proxy = Proxy::new(settings, tables);
    tokio::spawn(
        proxy
            .clone()
            .serve(listener, ListenerRole::Gateway { service_port: 80 }),
    );
    Running { proxy, addr, log }
}

// ---------------------------------------------------------------- client

/// A response as the client got it, body read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The echo upstream's description of the request it received.
    pub fn echo(&self) -> Echo {
        let v: serde_json::Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not an echo ({e}): {} {:?}", self.status, self.body));
        let headers = v["headers"]
            .as_object()
            .expect("headers")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        Echo {
            upstream: v["upstream"].as_str().unwrap_or_default().to_string(),
            method: v["method"].as_str().unwrap_or_default().to_string(),
            uri: v["uri"].as_str().unwrap_or_default().to_string(),
            headers,
            body: v["body"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// A response header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What an echo upstream received.
#[derive(Debug)]
pub struct Echo {
    pub upstream: String,
    pub method: String,
    pub uri: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

impl Echo {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A request with these headers and body (use an absolute URI for requests sent to a
/// sidecar as HTTP_PROXY, and give the Host header explicitly, as curl does).
pub fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

/// `GET uri` with `Host: host`.
pub fn get(uri: &str, host: &str) -> Request<Full<Bytes>> {
    request("GET", uri, &[("host", host)], "")
}

/// One client connection (HTTP/1.1 keep-alive).
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    /// The client's end of the connection.
    pub local: SocketAddr,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let local = stream.local_addr().expect("local addr");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { sender, local }
    }

    /// Sends a request and reads the whole response (with a deadline).
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Reply {
        tokio::time::timeout(DEADLINE, async {
            self.sender.ready().await.expect("connection ready");
            let resp = self.sender.send_request(req).await.expect("response");
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.expect("body").to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body: String::from_utf8_lossy(&body).into_owned(),
            }
        })
        .await
        .expect("a response within the deadline")
    }
}

/// Sends one request on a new connection, as a separate curl call would.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    Conn::open(addr).await.send(req).await
}

/// Whether `s` looks like the UUID (version 4) Envoy generates for x-request-id.
pub fn is_uuid_v4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12]
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        })
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b'])
}
