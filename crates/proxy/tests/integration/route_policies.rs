//! VirtualService HTTP route policies on real traffic: redirect, header operations,
//! fault injection, retries, mirrors, CORS and regex rewrites, in the order of
//! Istio's HTTP filter chain (CORS, fault, router).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        11,
    )
    .await
}

/// An upstream that answers `status` to its first `failures` requests, then 200.
async fn flaky_upstream(failures: usize, status: u16) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req: Request<Incoming>| {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let code = if n < failures { status } else { 200 };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(code)
                                .body(Full::new(Bytes::from(format!("try {}", n + 1))))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Istio `redirect`: 301 by default, Location built from the request, query kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_answers_with_location() {
    let yaml = vs("    - match:
        - uri:
            prefix: /old
      redirect:
        uri: /new
        authority: other.example
    - match:
        - uri:
            prefix: /secure
      redirect:
        scheme: https
        redirectCode: 308
");
    let sidecar = sidecar_for(&yaml, &[]).await;
    let reply = send(sidecar.addr, get("http://svc/old/x?q=1", "svc")).await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("http://other.example/new?q=1")
    );
    let reply = send(sidecar.addr, get("http://svc/secure", "svc")).await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("https://svc/secure"));
    let line = sidecar.log.line(1).await;
    assert_eq!(line.response_code, "301");
    assert_eq!(line.upstream_cluster, "-");
}

/// Istio `headers`: request set/add/remove before forwarding, response set/add/remove
/// on the answer; route-level first, then the destination's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_operations_on_request_and_response() {
    let up = echo_upstream("svc").await;
    let yaml = vs("    - headers:
        request:
          set:
            x-set: route
          add:
            x-added: one
          remove:
            - x-secret
        response:
          set:
            x-resp: route
          remove:
            - x-upstream
      route:
        - destination:
            host: svc
          headers:
            request:
              set:
                x-dest: yes
            response:
              add:
                x-resp-dest: d
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up.addr)]).await;
    let reply = send(
        sidecar.addr,
        request(
            "GET",
            "http://svc/",
            &[("host", "svc"), ("x-secret", "s"), ("x-set", "client")],
            "",
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    let echo = reply.echo();
    assert_eq!(echo.header("x-set"), Some("route"));
    assert_eq!(echo.header("x-added"), Some("one"));
    assert_eq!(echo.header("x-dest"), Some("yes"));
    assert_eq!(echo.header("x-secret"), None);
    assert_eq!(reply.header("x-resp"), Some("route"));
    assert_eq!(reply.header("x-resp-dest"), Some("d"));
    assert_eq!(reply.header("x-upstream"), None);
}

/// Istio `fault.abort` at 100%: the answer is the given status with Envoy's body
/// `fault filter abort`, flag FI, and nothing reaches the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_abort_and_delay() {
    let up = echo_upstream("svc").await;
    let yaml = vs("    - match:
        - uri:
            prefix: /abort
      fault:
        abort:
          httpStatus: 418
          percentage:
            value: 100
      route:
        - destination:
            host: svc
    - fault:
        delay:
          fixedDelay: 0.2s
          percentage:
            value: 100
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up.addr)]).await;
    let reply = send(sidecar.addr, get("http://svc/abort", "svc")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.body, "fault filter abort");
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    let line = sidecar.log.line(1).await;
    assert_eq!(line.response_flags, "FI");
    assert_eq!(line.response_code_details, "fault_filter_abort");
    let started = Instant::now();
    let reply = send(sidecar.addr, get("http://svc/slow", "svc")).await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    let line = sidecar.log.line(2).await;
    assert_eq!(line.response_flags, "DI");
}

/// Istio `retries` with `retryOn: 5xx`: an upstream failing twice with 500 succeeds
/// on the third try; with `attempts: 0` the first failure is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_on_5xx_until_success_and_none_with_zero_attempts() {
    let (addr, seen) = flaky_upstream(2, 500).await;
    let yaml = vs("    - match:
        - uri:
            prefix: /none
      retries:
        attempts: 0
      route:
        - destination:
            host: svc
    - retries:
        attempts: 3
        retryOn: 5xx
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, addr)]).await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "try 3");
    assert_eq!(seen.load(Ordering::SeqCst), 3);

    let (addr, seen) = flaky_upstream(5, 500).await;
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, addr)]).await;
    let reply = send(sidecar.addr, get("http://svc/none", "svc")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// Istio's default retry policy (no `retries`): a 503 is tried twice more, and when
/// every try fails the last answer is passed on with flag URX; a 500 is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_default_policy_retries_503_but_not_500() {
    let (addr, seen) = flaky_upstream(10, 503).await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        &[bare_pod("svc-1", "svc", 8080, addr)],
    )
    .await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "try 3");
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    assert_eq!(sidecar.log.only_line().await.response_flags, "URX");

    let (addr, seen) = flaky_upstream(10, 500).await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        &[bare_pod("svc-1", "svc", 8080, addr)],
    )
    .await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 500);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// Istio `mirror`: a copy goes to the mirror (Envoy adds `-shadow` to its host); the
/// answer comes from the primary and is not delayed by the mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_a_copy_and_never_delays_the_answer() {
    let primary = echo_upstream("primary").await;
    let (hold, mut control) = hold();
    let shadow = held_upstream("shadow", hold).await;
    let yaml = format!(
        "{}{}",
        service_yaml("shadow", "shadow", 9090),
        vs("    - route:
        - destination:
            host: svc
      mirror:
        host: shadow
      mirrorPercentage:
        value: 100
")
    );
    let sidecar = sidecar_for(
        &yaml,
        &[
            bare_pod("svc-1", "svc", 8080, primary.addr),
            bare_pod("shadow-1", "shadow", 9090, shadow.addr),
        ],
    )
    .await;
    // The shadow holds its request forever; the real answer still comes at once.
    let reply = send(
        sidecar.addr,
        request("POST", "http://svc/orders", &[("host", "svc")], "payload"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.echo().upstream, "primary");
    assert_eq!(reply.echo().body, "payload");
    assert_eq!(control.next_arrival().await, "/orders");
    assert_eq!(shadow.requests.load(Ordering::SeqCst), 1);
}

/// Istio `corsPolicy`: an allowed preflight is answered by the proxy; a GET from an
/// allowed origin gets Access-Control-Allow-Origin; another origin gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_simple_requests() {
    let up = echo_upstream("svc").await;
    let yaml = vs("    - corsPolicy:
        allowOrigins:
          - exact: https://good.example
        allowMethods: [GET, POST]
        allowHeaders: [x-custom]
        maxAge: 24h
        allowCredentials: true
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up.addr)]).await;
    let preflight = send(
        sidecar.addr,
        request(
            "OPTIONS",
            "http://svc/",
            &[
                ("host", "svc"),
                ("origin", "https://good.example"),
                ("access-control-request-method", "POST"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(preflight.status, 200);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://good.example")
    );
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(preflight.header("access-control-max-age"), Some("86400"));
    assert_eq!(
        up.requests.load(Ordering::SeqCst),
        0,
        "the preflight is answered by the proxy"
    );
    let ok = send(
        sidecar.addr,
        request(
            "GET",
            "http://svc/",
            &[("host", "svc"), ("origin", "https://good.example")],
            "",
        ),
    )
    .await;
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://good.example")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let other = send(
        sidecar.addr,
        request(
            "GET",
            "http://svc/",
            &[("host", "svc"), ("origin", "https://evil.example")],
            "",
        ),
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
}

/// Istio `rewrite.uriRegexRewrite`: the path is rewritten with groups; the query stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_rewrite_of_the_path() {
    let up = echo_upstream("svc").await;
    let yaml = vs("    - rewrite:
        uriRegexRewrite:
          match: ^/service/([^/]+)(/.*)$
          rewrite: \\2/instance/\\1
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up.addr)]).await;
    let reply = send(
        sidecar.addr,
        get("http://svc/service/foo/v1/api?x=1", "svc"),
    )
    .await;
    assert_eq!(reply.echo().uri, "/v1/api/instance/foo?x=1");
    assert_eq!(
        reply.echo().header("x-envoy-original-path"),
        Some("/service/foo/v1/api?x=1")
    );
}

/// An upstream that answers 503 to every request: at once on `/b`, and on `/a` only
/// when the test releases it. Reports each `/a` arrival and counts the `/b` requests.
async fn failing_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<tokio::sync::Semaphore>,
    Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let b_count = Arc::new(AtomicUsize::new(0));
    let (release_up, b_up) = (release.clone(), b_count.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived_tx, release, b_count) =
                (arrived_tx.clone(), release_up.clone(), b_up.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let (arrived_tx, release, b_count) =
                        (arrived_tx.clone(), release.clone(), b_count.clone());
                    async move {
                        if req.uri().path() == "/a" {
                            let _ = arrived_tx.send(());
                            if let Ok(permit) = release.acquire().await {
                                permit.forget();
                            }
                        } else {
                            b_count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::from("down")))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, arrived, release, b_count)
}

/// Waits (with a deadline) for the next `/a` request held by a [`failing_upstream`].
async fn next_held(arrived: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    tokio::time::timeout(Duration::from_secs(20), arrived.recv())
        .await
        .expect("an /a request")
        .expect("upstream running");
}

/// DestinationRule `connectionPool.http.maxRetries` is Envoy's `max_retries` circuit
/// breaker: retries to the cluster under way at once. With 1 and request A's retry in
/// flight (held by the upstream), request B's 503 is not retried: it stands, with flag
/// `UO` (router.cc on `RetryStatus::NoOverflow`), and the upstream sees B once. Without
/// the limit B is retried as its route says (`URX` when the tries run out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_retries_limits_the_retries_under_way_at_once() {
    let route = "    - retries:
        attempts: 3
        retryOn: 5xx
      route:
        - destination:
            host: svc
";
    for limited in [true, false] {
        let (addr, mut arrived, release, b_count) = failing_upstream().await;
        let mut yaml = vs(route);
        if limited {
            yaml.push_str(
                "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc-dr
spec:
  host: svc
  trafficPolicy:
    connectionPool:
      http:
        maxRetries: 1
",
            );
        }
        let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, addr)]).await;
        let a = tokio::spawn(send(sidecar.addr, get("http://svc/a", "svc")));
        next_held(&mut arrived).await;
        release.add_permits(1);
        // A's first 503 is retried: the retry is now in flight, held by the upstream.
        next_held(&mut arrived).await;

        let b = send(sidecar.addr, get("http://svc/b", "svc")).await;
        assert_eq!(b.status, 503);
        let b_line = sidecar.log.line(1).await;
        assert_eq!(b_line.path, "/b", "{}", b_line.raw);
        if limited {
            assert_eq!(b_count.load(Ordering::SeqCst), 1, "B not retried");
            assert_eq!(b_line.response_flags, "UO", "{}", b_line.raw);
        } else {
            assert_eq!(b_count.load(Ordering::SeqCst), 4, "B retried three times");
            assert_eq!(b_line.response_flags, "URX", "{}", b_line.raw);
        }

        // A goes on: its retries take the place its first retry gives back.
        release.add_permits(3);
        let a = a.await.expect("A's task");
        assert_eq!(a.status, 503);
        let a_line = sidecar.log.line(2).await;
        assert_eq!(a_line.response_flags, "URX", "{}", a_line.raw);
    }
}
