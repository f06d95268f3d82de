//! DestinationRule traffic policies on real traffic: load balancing (RANDOM,
//! LEAST_REQUEST, consistent hash by header, cookie and source IP), connection-pool
//! limits (503 UO on overflow) and outlier detection (ejecting a failing endpoint).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::common::*;
use meshbox_routing::WorkloadInstance;

async fn sidecar_for(yaml: &str, pods: &[WorkloadInstance]) -> Running {
    sidecar(
        sidecar_tables(&store(yaml), &registry_only(), pods),
        Vec::new(),
        17,
    )
    .await
}

async fn two_echoes() -> (Upstream, Upstream, Vec<WorkloadInstance>) {
    let a = echo_upstream("a").await;
    let b = echo_upstream("b").await;
    let pods = vec![
        bare_pod("svc-a", "svc", 8080, a.addr),
        bare_pod("svc-b", "svc", 8080, b.addr),
    ];
    (a, b, pods)
}

/// An upstream that always answers `status`.
async fn fixed_status(status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .body(Full::new(Bytes::from("bad")))
                            .expect("response"),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn spread(sidecar: &Running, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let mut h = vec![("host", "svc")];
        h.extend_from_slice(headers);
        let reply = send(sidecar.addr, request("GET", "http://svc/", &h, "")).await;
        *seen.entry(reply.echo().upstream).or_insert(0) += 1;
    }
    seen
}

/// `loadBalancer.simple: RANDOM` spreads requests over both endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_endpoints() {
    let (_a, _b, pods) = two_echoes().await;
    let sidecar = sidecar_for(
        &with_rule("    loadBalancer:\n      simple: RANDOM\n"),
        &pods,
    )
    .await;
    let seen = spread(&sidecar, 200, &[]).await;
    let a = seen.get("a").copied().unwrap_or(0);
    assert!((60..=140).contains(&a), "a got {a} of 200: {seen:?}");
}

/// `consistentHash.httpHeaderName`: the same header value always lands on the same
/// endpoint; different values use both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_header_is_sticky() {
    let (_a, _b, pods) = two_echoes().await;
    let sidecar = sidecar_for(
        &with_rule("    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n"),
        &pods,
    )
    .await;
    for user in ["alice", "bob", "carol", "dave"] {
        let seen = spread(&sidecar, 10, &[("x-user", user)]).await;
        assert_eq!(seen.len(), 1, "{user} stuck to one endpoint: {seen:?}");
    }
    let mut owners = std::collections::HashSet::new();
    for i in 0..20 {
        let user = format!("user-{i}");
        owners.extend(spread(&sidecar, 1, &[("x-user", &user)]).await.into_keys());
    }
    assert_eq!(owners.len(), 2, "keys spread over both endpoints");
}

/// `consistentHash.httpCookie` with a ttl: Envoy sets the cookie when the request has
/// none, and requests carrying it stick to one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_cookie_is_generated_and_sticky() {
    let (_a, _b, pods) = two_echoes().await;
    let sidecar = sidecar_for(
        &with_rule("    loadBalancer:\n      consistentHash:\n        httpCookie:\n          name: session\n          ttl: 60s\n          path: /\n"),
        &pods,
    )
    .await;
    let first = send(sidecar.addr, get("http://svc/", "svc")).await;
    let set_cookie = first
        .header("set-cookie")
        .expect("a Set-Cookie")
        .to_string();
    assert!(
        set_cookie.starts_with("session=\"")
            && set_cookie.contains("Max-Age=60")
            && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let seen = spread(&sidecar, 10, &[("cookie", &cookie)]).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        seen.contains_key(&first.echo().upstream),
        "the first answer's endpoint keeps the session"
    );
}

/// `consistentHash.useSourceIp`: one client address, one endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_source_ip_is_sticky() {
    let (_a, _b, pods) = two_echoes().await;
    let sidecar = sidecar_for(
        &with_rule("    loadBalancer:\n      consistentHash:\n        useSourceIp: true\n"),
        &pods,
    )
    .await;
    assert_eq!(spread(&sidecar, 10, &[]).await.len(), 1);
}

/// `LEAST_REQUEST`: with one endpoint busy, new requests go to the idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_the_busy_endpoint() {
    let (hold, mut control) = hold();
    let busy = held_upstream("busy", hold).await;
    let idle = echo_upstream("idle").await;
    let pods = vec![
        bare_pod("svc-a", "svc", 8080, busy.addr),
        bare_pod("svc-b", "svc", 8080, idle.addr),
    ];
    let sidecar = sidecar_for(
        &with_rule("    loadBalancer:\n      simple: LEAST_REQUEST\n"),
        &pods,
    )
    .await;
    // Keep sending until one request is parked at the busy endpoint.
    let addr = sidecar.addr;
    let mut parked = Vec::new();
    loop {
        let task = tokio::spawn(async move { send(addr, get("http://svc/park", "svc")).await });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if busy.requests.load(Ordering::SeqCst) > 0 {
            parked.push(task);
            break;
        }
        let reply = task.await.expect("task");
        assert_eq!(reply.echo().upstream, "idle");
    }
    assert_eq!(control.next_arrival().await, "/park");
    // Envoy's power of two choices draws two endpoints at random (with replacement):
    // the busy one loses every comparison, so it only gets a request when drawn twice
    // (1 in 4 with two endpoints). A request that lands on it waits there, so a try is
    // counted as soon as it is answered or seen at the busy endpoint; a slow answer
    // (a loaded machine) is waited for, not counted as a miss.
    let mut to_idle = 0;
    for _ in 0..40 {
        let busy_before = busy.requests.load(Ordering::SeqCst);
        let mut try_once = Box::pin(send(addr, get("http://svc/", "svc")));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(300), &mut try_once).await {
                Ok(reply) => {
                    assert_eq!(reply.echo().upstream, "idle");
                    to_idle += 1;
                    break;
                }
                Err(_) if busy.requests.load(Ordering::SeqCst) > busy_before => break,
                Err(_) => assert!(
                    std::time::Instant::now() < deadline,
                    "a request neither answered nor at the busy endpoint"
                ),
            }
        }
    }
    // Expected 30 of 40; a round-robin balancer would give 20.
    assert!(
        to_idle >= 24,
        "only {to_idle} of 40 went to the idle endpoint"
    );
    for _ in 0..50 {
        control.release_one();
    }
    for t in parked {
        t.await.expect("task");
    }
}

/// `connectionPool`: `maxConnections: 1` and `http1MaxPendingRequests: 1`: one
/// request in flight, one waiting, the third overflows with 503 UO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_pool_overflow_is_503_uo() {
    let (hold, mut control) = hold();
    let slow = held_upstream("slow", hold).await;
    let sidecar = sidecar_for(
        &with_rule("    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n"),
        &[bare_pod("svc-1", "svc", 8080, slow.addr)],
    )
    .await;
    let addr = sidecar.addr;
    let first = tokio::spawn(async move { send(addr, get("http://svc/1", "svc")).await });
    assert_eq!(control.next_arrival().await, "/1");
    // Two more at once: one waits in the pending queue, the other overflows at once.
    let mut second = tokio::spawn(async move { send(addr, get("http://svc/2", "svc")).await });
    let mut third = tokio::spawn(async move { send(addr, get("http://svc/3", "svc")).await });
    let (overflowed, waiting) = tokio::select! {
        r = &mut second => (r.expect("second"), third),
        r = &mut third => (r.expect("third"), second),
    };
    assert_eq!(overflowed.status, 503);
    assert_eq!(
        overflowed.body,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow"
    );
    let line = sidecar.log.find(|l| l.response_flags == "UO").await;
    assert_eq!(
        line.response_code_details,
        "upstream_reset_before_response_started{overflow}"
    );
    control.release_one();
    assert_eq!(first.await.expect("first").status, 200);
    control.next_arrival().await;
    control.release_one();
    assert_eq!(waiting.await.expect("waiting").status, 200);
}

/// `outlierDetection`: after `consecutive5xxErrors` failures an endpoint is ejected
/// for `baseEjectionTime`; traffic then goes to the healthy endpoint only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_ejects_a_failing_endpoint() {
    let bad = fixed_status(500).await;
    let good = echo_upstream("good").await;
    let pods = vec![
        bare_pod("svc-bad", "svc", 8080, bad),
        bare_pod("svc-good", "svc", 8080, good.addr),
    ];
    let sidecar = sidecar_for(
        &with_rule("    outlierDetection:\n      consecutive5xxErrors: 2\n      interval: 1s\n      baseEjectionTime: 60s\n      maxEjectionPercent: 100\n"),
        &pods,
    )
    .await;
    let mut failures = 0;
    for _ in 0..10 {
        if send(sidecar.addr, get("http://svc/", "svc")).await.status == 500 {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "two 500s eject the bad endpoint; round robin sends the rest to the good one"
    );
    for _ in 0..10 {
        assert_eq!(
            send(sidecar.addr, get("http://svc/", "svc")).await.status,
            200
        );
    }
}

/// `consistentHash.httpQueryParameterName`: the same parameter value, the same endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_by_query_parameter_is_sticky() {
    let (_a, _b, pods) = two_echoes().await;
    let sidecar = sidecar_for(
        &with_rule(
            "    loadBalancer:\n      consistentHash:\n        httpQueryParameterName: user\n",
        ),
        &pods,
    )
    .await;
    for user in ["alice", "bob", "carol"] {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..8 {
            let reply = send(
                sidecar.addr,
                get(&format!("http://svc/?user={user}&x=1"), "svc"),
            )
            .await;
            seen.insert(reply.echo().upstream);
        }
        assert_eq!(seen.len(), 1, "{user}: {seen:?}");
    }
}

/// `outlierDetection.consecutiveGatewayErrors`: 502/503/504 count; an endpoint answering
/// 502 twice is ejected (502 is not in Istio's default retry conditions, so each try
/// is one request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_on_gateway_errors() {
    let bad = fixed_status(502).await;
    let good = echo_upstream("good").await;
    let pods = vec![
        bare_pod("svc-bad", "svc", 8080, bad),
        bare_pod("svc-good", "svc", 8080, good.addr),
    ];
    let sidecar = sidecar_for(
        &with_rule("    outlierDetection:\n      consecutive5xxErrors: 0\n      consecutiveGatewayErrors: 2\n      baseEjectionTime: 60s\n      maxEjectionPercent: 50\n"),
        &pods,
    )
    .await;
    let mut bad_answers = 0;
    for _ in 0..12 {
        if send(sidecar.addr, get("http://svc/", "svc")).await.status == 502 {
            bad_answers += 1;
        }
    }
    assert_eq!(bad_answers, 2);
}

/// `loadBalancer.simple: PASSTHROUGH`: no balancing; the request goes to the address its
/// host resolves to (here a ServiceEntry host sent to a local server by `--resolve`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_goes_to_the_resolved_address() {
    let target = echo_upstream("resolved").await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [ext.example]
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  resolution: DNS
  endpoints:
  - address: 192.0.2.1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: ext
spec:
  host: ext.example
  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
",
        port = target.addr.port()
    );
    let overrides = vec![meshbox_proxy::Override::parse_resolve(&format!(
        "ext.example:{}:127.0.0.1",
        target.addr.port()
    ))
    .expect("override")];
    let sidecar = sidecar(
        sidecar_tables(&store(&yaml), &registry_only(), &[]),
        overrides,
        3,
    )
    .await;
    let host = format!("ext.example:{}", target.addr.port());
    let reply = send(sidecar.addr, get(&format!("http://{host}/"), &host)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.echo().upstream,
        "resolved",
        "not the ServiceEntry's endpoint 192.0.2.1"
    );
}

/// A listener whose accept queue is full (backlog 1, never accepting): the kernel
/// drops further SYNs, so a connection to it is neither made nor refused. The listener
/// and the connections that filled its queue are returned to be kept open.
async fn unanswering_listener() -> (SocketAddr, TcpListener, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    let mut held = Vec::new();
    // Fill the queue; the connections that get in are kept open.
    for _ in 0..4 {
        let attempt = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(s)) =
            tokio::time::timeout(std::time::Duration::from_millis(300), attempt).await
        {
            held.push(s);
        }
    }
    (addr, listener, held)
}

/// DestinationRule `connectionPool.tcp.connectTimeout` is the cluster's connect
/// timeout (pilot `applyConnectionPool`: `cluster.ConnectTimeout`): an endpoint that
/// does not answer the handshake gives 503 UF once it passes (after Istio's default
/// retries on connect failure, `UF,URX`), not after the mesh's 10 s. The bound of 5 s
/// on the wait is twenty times the rule's three tries of 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_of_the_rule_ends_a_connection_that_is_not_answered() {
    let (addr, _listener, _held) = unanswering_listener().await;
    let yaml = with_rule("    connectionPool:\n      tcp:\n        connectTimeout: 250ms\n");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, addr)]).await;
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(sidecar.addr, get("http://svc/", "svc")),
    )
    .await
    .expect("an answer within the rule's connect timeout, not the mesh's 10 s");
    assert_eq!(reply.status, 503);
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "UF,URX", "{}", line.raw);
    assert!(
        line.upstream_transport_failure_reason.contains("timed out"),
        "{}",
        line.raw
    );
}
