//! Upstream connection pooling and swapping a proxy's tables under load.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// An echo app `svc` behind its pod's sidecar, and a client's sidecar (seeded with
/// `seed`) whose tables know it.
async fn echo_service_and_client(seed: u64) -> (Upstream, Pod, Running) {
    let app = echo_upstream("svc").await;
    let pod = pod("svc-1", "svc", 8080, app.addr).await;
    let tables = sidecar_tables(
        &store(&service_yaml("svc", "svc", 8080)),
        &registry_only(),
        std::slice::from_ref(&pod.instance),
    );
    let sidecar = sidecar(tables, Vec::new(), seed).await;
    (app, pod, sidecar)
}

/// Envoy keeps upstream HTTP/1.1 connections in a per-cluster pool and reuses an idle
/// one for the next request: sequential requests, even from separate client
/// connections (separate curl calls), travel over ONE connection from the caller's
/// sidecar to the pod and ONE from the pod's sidecar to the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let (app, pod, sidecar) = echo_service_and_client(9).await;
    const N: usize = 5;
    let mut clients = BTreeSet::new();
    for i in 0..N {
        let mut conn = Conn::open(sidecar.addr).await;
        clients.insert(conn.local);
        let reply = conn.send(get(&format!("http://svc/{i}"), "svc")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.echo().uri, format!("/{i}"));
    }
    assert_eq!(
        clients.len(),
        N,
        "each request came on its own client connection"
    );
    assert_eq!(app.requests.load(Ordering::SeqCst), N);
    assert_eq!(
        app.accepted.load(Ordering::SeqCst),
        1,
        "the pod's sidecar reused its connection to the app"
    );
    // Caller's sidecar → pod: one local address for every request, and the pod's
    // sidecar saw every request come from it.
    let out: BTreeSet<String> = sidecar
        .log
        .wait_for(N)
        .await
        .iter()
        .map(|l| LogLine::parse(l).upstream_local_address)
        .collect();
    let inbound: BTreeSet<String> = pod
        .log
        .wait_for(N)
        .await
        .iter()
        .map(|l| LogLine::parse(l).downstream_remote_address)
        .collect();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out, inbound);
}

/// Istio pushes new config to Envoy, which swaps its route tables for new requests
/// while requests in flight finish on the route they were given: `Proxy::update`
/// during a slow request lets it complete against the old route, and the next request
/// takes the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_during_in_flight_request_keeps_old_route_for_it_and_new_route_after() {
    let (hold, mut control) = hold();
    let old_app = held_upstream("old", hold).await;
    let new_app = echo_upstream("new").await;
    let old_pod = pod("old-1", "old", 8080, old_app.addr).await;
    let new_pod = pod("new-1", "new", 8080, new_app.addr).await;
    // `producer` is a Service of its own (with no pods): the VirtualService for it
    // decides where its traffic goes.
    let services = format!(
        "{}{}{}",
        service_yaml("producer", "nobody", 8080),
        service_yaml("old-svc", "old", 8080),
        service_yaml("new-svc", "new", 8080)
    );
    let vs_to = |dest: &str| {
        format!(
            "{services}apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: producer-vs
spec:
  hosts:
    - producer
  http:
    - name: to-{dest}
      route:
        - destination:
            host: {dest}
            port:
              number: 80
"
        )
    };
    let pods = [old_pod.instance.clone(), new_pod.instance.clone()];
    let mesh = registry_only();
    let sidecar = sidecar(
        sidecar_tables(&store(&vs_to("old-svc")), &mesh, &pods),
        Vec::new(),
        11,
    )
    .await;

    // A request on the old route, held by its upstream.
    let addr = sidecar.addr;
    let in_flight =
        tokio::spawn(async move { send(addr, get("http://producer/first", "producer")).await });
    assert_eq!(control.next_arrival().await, "/first");

    sidecar
        .proxy
        .update(sidecar_tables(&store(&vs_to("new-svc")), &mesh, &pods));

    let next = send(sidecar.addr, get("http://producer/second", "producer")).await;
    assert_eq!(next.status, 200);
    assert_eq!(
        next.echo().upstream,
        "new",
        "the next request takes the new route"
    );
    assert!(!in_flight.is_finished(), "the first request is still held");

    control.release_one();
    let first = in_flight.await.expect("in-flight request task");
    assert_eq!(first.status, 200);
    let echo = first.echo();
    assert_eq!(
        echo.upstream, "old",
        "the in-flight request ends on its old route"
    );
    assert_eq!(echo.uri, "/first");

    let first_line = sidecar.log.find(|l| l.path == "/first").await;
    assert_eq!(first_line.route_name, "to-old-svc");
    assert_eq!(
        first_line.upstream_cluster,
        "outbound|80||old-svc.dev-service-mesh.svc.cluster.local"
    );
    let second_line = sidecar.log.find(|l| l.path == "/second").await;
    assert_eq!(second_line.route_name, "to-new-svc");
    assert_eq!(
        second_line.upstream_cluster,
        "outbound|80||new-svc.dev-service-mesh.svc.cluster.local"
    );
    assert_eq!(old_app.requests.load(Ordering::SeqCst), 1);
    assert_eq!(new_app.requests.load(Ordering::SeqCst), 1);
}

/// Requests written back to back on one connection (HTTP/1.1 pipelining) are answered
/// in order; a request with a body on the same connection after them is served too
/// (the fast path for requests without a body hands the connection to hyper with the
/// bytes it has read, h1_server.rs), and so is the request without a body after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_a_request_with_a_body_share_one_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_app, _pod, sidecar) = echo_service_and_client(11).await;
    let mut client = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    client
        .write_all(
            b"GET http://svc/one HTTP/1.1\r\nhost: svc\r\n\r\n\
              GET http://svc/two HTTP/1.1\r\nhost: svc\r\n\r\n\
              POST http://svc/three HTTP/1.1\r\nhost: svc\r\ncontent-length: 4\r\n\r\nbody\
              GET http://svc/four HTTP/1.1\r\nhost: svc\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    // The last request asks to close: the proxy closes after its answer.
    let mut answers = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.read_to_end(&mut answers),
    )
    .await
    .expect("all answers in time")
    .expect("read");
    let text = String::from_utf8_lossy(&answers);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 4, "{text}");
    let order: Vec<usize> = ["/one", "/two", "/three", "/four"]
        .iter()
        .map(|path| {
            text.find(path)
                .unwrap_or_else(|| panic!("{path} in {text}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

/// An app on loopback that answers `ok` to each request on a connection, and counts
/// the connections that the other side closed.
async fn app_counting_closes() -> (SocketAddr, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            count.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, closed)
}

/// Envoy closes an upstream connection once it has been idle for its idle timeout
/// (HTTP protocol options `idle_timeout`), whether or not its cluster sees another
/// request: the proxy's pool sweep does the same here (timeout 60 s, a sweep every
/// 30 s), with no request to the app after the first. Time is moved on by tokio's
/// paused clock, not waited for.
#[tokio::test]
async fn an_idle_upstream_connection_closes_after_the_idle_timeout_without_another_request() {
    let (app, closed) = app_counting_closes().await;
    let pod = pod("svc-1", "svc", 8080, app).await;
    let reply = send(pod.inbound, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "the connection is kept idle"
    );

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(91)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the idle connection to the app is still open 91 s (virtual) after its request"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// DestinationRule `connectionPool.http.idleTimeout` (Istio sets it as the cluster's
/// `common_http_protocol_options.idle_timeout`, pilot's `applyConnectionPool`): the
/// connection a request through that cluster used closes once it has been idle that
/// long. With a 2 s timeout the sweep runs every second: still open 1.5 s (virtual)
/// after the request, closed by 3.5 s, where the default minute would keep it.
#[tokio::test]
async fn a_destination_rule_idle_timeout_closes_the_clusters_idle_connections() {
    let (app, closed) = app_counting_closes().await;
    let yaml = with_rule("    connectionPool:\n      http:\n        idleTimeout: 2s\n");
    let pods = [bare_pod("svc-1", "svc", 8080, app)];
    let client = sidecar(
        sidecar_tables(&store(&yaml), &registry_only(), &pods),
        Vec::new(),
        5,
    )
    .await;
    let reply = send(client.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 200);

    tokio::time::pause();
    let advance = |by: Duration| async move {
        tokio::time::advance(by).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    };
    advance(Duration::from_millis(1500)).await;
    assert_eq!(
        closed.load(Ordering::SeqCst),
        0,
        "closed before its idle timeout"
    );
    advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    while closed.load(Ordering::SeqCst) < 1 {
        assert!(
            Instant::now() < deadline,
            "the idle connection is still open 3.5 s (virtual) after its request, past the rule's 2 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// DestinationRule `connectionPool.http.maxRequestsPerConnection` (Istio sets it as
/// the cluster's `common_http_protocol_options.max_requests_per_connection`, pilot's
/// `applyConnectionPool`): with 2, the app sees its connection closed after every
/// second request through the sidecar; 1 turns keep-alive off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_closes_connections_after_that_many_requests() {
    for (limit, requests, closes) in [(2, 4, 2), (1, 3, 3)] {
        let (app, closed) = app_counting_closes().await;
        let yaml = with_rule(&format!(
            "    connectionPool:\n      http:\n        maxRequestsPerConnection: {limit}\n"
        ));
        let pods = [bare_pod("svc-1", "svc", 8080, app)];
        let client = sidecar(
            sidecar_tables(&store(&yaml), &registry_only(), &pods),
            Vec::new(),
            5,
        )
        .await;
        for _ in 0..requests {
            let reply = send(client.addr, get("http://svc/", "svc")).await;
            assert_eq!(reply.status, 200);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while closed.load(Ordering::SeqCst) < closes {
            assert!(
                Instant::now() < deadline,
                "limit {limit}: {} of {closes} connections closed after {requests} requests",
                closed.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(closed.load(Ordering::SeqCst), closes, "limit {limit}");
    }
}
