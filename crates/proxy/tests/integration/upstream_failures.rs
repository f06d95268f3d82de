//! What the sidecar answers when the upstream cannot serve: Envoy's local replies,
//! response flags and response code details.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::common::*;
use meshbox_routing::WorkloadInstance;

/// A sidecar for a mesh of `yaml` and these pods.
async fn sidecar_for(yaml: &str, pods: &[WorkloadInstance]) -> Running {
    sidecar(
        sidecar_tables(&store(yaml), &registry_only(), pods),
        Vec::new(),
        5,
    )
    .await
}

/// Envoy: a cluster with no healthy endpoint gives 503 `no healthy upstream`, flag UH,
/// details `no_healthy_upstream` (here a Service whose selector matches no pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_without_endpoints_is_503_uh_no_healthy_upstream() {
    let sidecar = sidecar_for(&service_yaml("lonely", "nobody", 8080), &[]).await;
    let reply = send(sidecar.addr, get("http://lonely/", "lonely")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "no healthy upstream");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_code, "503");
    assert_eq!(line.response_flags, "UH");
    assert_eq!(line.response_code_details, "no_healthy_upstream");
    assert_eq!(
        line.upstream_cluster,
        "outbound|80||lonely.dev-service-mesh.svc.cluster.local"
    );
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.upstream_service_time, "-");
    assert_eq!(line.route_name, "default");
}

/// Istio keeps a route whose destination host is not in the registry; the cluster it
/// names does not exist, and Envoy's router answers 503 with no body, flag NC,
/// details `cluster_not_found`, and no upstream cluster in the log (Envoy sets the
/// upstream cluster info only once the cluster is found).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_host_not_in_registry_is_503_nc() {
    let app = echo_upstream("svc").await;
    let pod = pod("svc-1", "svc", 8080, app.addr).await;
    let yaml = vs("    - route:
        - destination:
            host: not-a-service
            port:
              number: 80
");
    let sidecar = sidecar_for(&yaml, std::slice::from_ref(&pod.instance)).await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.body, "");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "NC");
    assert_eq!(line.response_code_details, "cluster_not_found");
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.upstream_cluster, "-");
    assert_eq!(line.route_name, "-");
    assert_eq!(app.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// An endpoint that refuses the connection: Istio's default retry policy
/// (`connect-failure`, 2 retries) tries twice more, then Envoy answers 503 with the
/// body `upstream connect error or disconnect/reset before headers. retried and the
/// latest reset reason: connection failure`, flags UF and URX, and the endpoint as
/// upstream host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_is_503_uf_urx_after_istio_default_retries() {
    let refusing: SocketAddr = refusing_addr().await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        &[bare_pod("svc-1", "svc", 8080, refusing)],
    )
    .await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection failure"
    );
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "UF,URX");
    assert_eq!(
        line.response_code_details,
        "upstream_reset_before_response_started{connection_failure}"
    );
    assert_ne!(line.upstream_transport_failure_reason, "-");
    assert_eq!(line.upstream_service_time, "-");
    assert_eq!(line.upstream_host, refusing.to_string());
    assert_eq!(
        line.upstream_cluster,
        "outbound|80||svc.dev-service-mesh.svc.cluster.local"
    );
}

/// The same at the destination's sidecar: its app is not listening, so its inbound
/// listener (which does not retry) answers 503 UF. The caller's sidecar retries that
/// 503 twice (Istio's default `retriable-status-codes: 503`), then passes it on as the
/// upstream's answer (`via_upstream`) with flag URX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_not_listening_behind_inbound_sidecar_is_503_uf_at_the_inbound() {
    let refusing = refusing_addr().await;
    let pod = pod("svc-1", "svc", 8080, refusing).await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        std::slice::from_ref(&pod.instance),
    )
    .await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.ends_with("reset reason: connection failure"),
        "{reply:?}"
    );
    let tries = pod.log.wait_for(3).await;
    assert_eq!(tries.len(), 3, "one try and two retries: {tries:#?}");
    let inbound = pod.log.line(1).await;
    assert_eq!(inbound.response_flags, "UF");
    assert_eq!(inbound.upstream_cluster, "inbound|8080||");
    assert_eq!(inbound.upstream_host, refusing.to_string());
    let outbound = sidecar.log.only_line().await;
    assert_eq!(outbound.response_code, "503");
    assert_eq!(outbound.response_flags, "URX");
    assert_eq!(outbound.response_code_details, "via_upstream");
}

/// An upstream that closes the connection before answering: Envoy's 503 with reset
/// reason `connection termination`, flag UC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_before_headers_is_503_uc() {
    let closing = closing_upstream().await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        &[bare_pod("svc-1", "svc", 8080, closing.addr)],
    )
    .await;
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
    );
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "UC");
    assert_eq!(
        line.response_code_details,
        "upstream_reset_before_response_started{connection_termination}"
    );
    assert_eq!(line.upstream_host, closing.addr.to_string());
}

/// A VirtualService `timeout` is Envoy's route timeout: when the upstream has not
/// answered in time, 504 `upstream request timeout`, flag UT, details
/// `response_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_against_slow_upstream_is_504_ut() {
    let (hold, mut control) = hold();
    let slow = held_upstream("slow", hold).await;
    let pod = pod("svc-1", "svc", 8080, slow.addr).await;
    let yaml = vs("    - timeout: 0.2s
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, std::slice::from_ref(&pod.instance)).await;
    let started = Instant::now();
    // The upstream never answers: only the route timeout can end this request.
    let reply = send(sidecar.addr, get("http://svc/slow", "svc")).await;
    let elapsed = started.elapsed();
    assert_eq!(
        control.next_arrival().await,
        "/slow",
        "the request reached the app"
    );
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body, "upstream request timeout");
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_code, "504");
    assert_eq!(line.response_flags, "UT");
    assert_eq!(line.response_code_details, "response_timeout");
    assert_eq!(
        line.upstream_service_time, "-",
        "no upstream response headers"
    );
    assert_eq!(line.upstream_host, pod.inbound.to_string());
    assert_eq!(
        line.upstream_cluster,
        "outbound|80||svc.dev-service-mesh.svc.cluster.local"
    );
    assert!(line.duration.parse::<u64>().unwrap() >= 200, "{}", line.raw);
}

/// Envoy logs a request whose downstream went away before the answer: response code
/// 0, flag DC, details `downstream_remote_disconnect`. Here the caller's sidecar gives
/// up (route timeout) and closes its connection to the callee's sidecar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_request_is_logged_as_dc_by_the_callee_sidecar() {
    let (hold, mut control) = hold();
    let slow = held_upstream("slow", hold).await;
    let pod = pod("svc-1", "svc", 8080, slow.addr).await;
    let yaml = vs("    - timeout: 0.2s
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, std::slice::from_ref(&pod.instance)).await;
    let reply = send(sidecar.addr, get("http://svc/abandoned", "svc")).await;
    assert_eq!(control.next_arrival().await, "/abandoned");
    assert_eq!(reply.status, 504);
    let line = pod.log.find(|l| l.path == "/abandoned").await;
    assert_eq!(line.response_code, "0");
    assert_eq!(line.response_flags, "DC");
    assert_eq!(line.response_code_details, "downstream_remote_disconnect");
}

/// A client that goes away before its answer comes: the request is abandoned (the
/// upstream exchange dropped) and its line says so as Envoy's does: response code 0,
/// flag DC, details `downstream_remote_disconnect`. A request without a body, so the
/// fast path (h1_server.rs) serves it and watches the client while it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_before_its_answer_is_logged_dc() {
    use tokio::io::AsyncWriteExt;
    let (hold, mut control) = hold();
    let slow = held_upstream("slow", hold).await;
    let pod = pod("svc-1", "svc", 8080, slow.addr).await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        std::slice::from_ref(&pod.instance),
    )
    .await;
    let mut client = tokio::net::TcpStream::connect(sidecar.addr)
        .await
        .expect("connect");
    client
        .write_all(b"GET http://svc/slow HTTP/1.1\r\nhost: svc\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(control.next_arrival().await, "/slow");
    drop(client);
    let line = sidecar.log.find(|l| l.response_flags == "DC").await;
    assert_eq!(line.response_code, "0");
    assert_eq!(line.response_code_details, "downstream_remote_disconnect");
    assert_eq!(line.path, "/slow");
}

/// What a [`scripted_upstream`] does after its first bytes.
#[derive(Clone, Copy)]
enum Then {
    /// Sends nothing more and waits for the proxy to close the connection.
    Stall,
    /// Closes the connection.
    Close,
    /// Sends these bytes after this long, then waits as `Stall`.
    Send(&'static [u8], Duration),
}

/// An upstream that answers every request with `answer`, then does `then`. Reports
/// each connection's end by the proxy on the returned channel.
async fn scripted_upstream(
    answer: &'static [u8],
    then: Then,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if conn.write_all(answer).await.is_err() {
                    return;
                }
                match then {
                    Then::Close => return,
                    Then::Stall => {}
                    Then::Send(rest, after) => {
                        tokio::time::sleep(after).await;
                        if conn.write_all(rest).await.is_err() {
                            return;
                        }
                    }
                }
                // Wait for the proxy to close the connection.
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = closed_tx.send(());
            });
        }
    });
    (addr, closed)
}

/// A 200 head promising ten bytes, and five of them.
const FIVE_OF_TEN: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello";

/// The same request without a body (served by the fast path, h1_server.rs) and with
/// one (served by hyper).
const GET_AND_POST: [&[u8]; 2] = [
    b"GET http://svc/cut HTTP/1.1\r\nhost: svc\r\n\r\n",
    b"POST http://svc/cut HTTP/1.1\r\nhost: svc\r\ncontent-length: 2\r\n\r\nhi",
];

/// Sends `request` on a new connection and reads until the sidecar closes it.
async fn until_closed(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    client.write_all(request).await.expect("write");
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), client.read_to_end(&mut got))
        .await
        .expect("the sidecar closes the connection")
        .expect("read");
    String::from_utf8_lossy(&got).into_owned()
}

/// The `istio_requests_total` series with this response code.
fn request_counter(sidecar: &Running, code: u16) -> String {
    let metrics = sidecar.proxy.metrics().encode();
    metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(&format!("response_code=\"{code}\""))
        })
        .unwrap_or_else(|| panic!("a request counter: {metrics}"))
        .to_string()
}

/// A VirtualService `timeout` covers the whole response, as Envoy's route timeout does
/// ("wait for the upstream to respond with a complete response", Envoy's timeouts
/// FAQ): a body still coming when it passes is cut off. The 200 head has gone out, so
/// Envoy resets the stream (router.cc `onUpstreamAbort`): the HTTP/1.1 client sees the
/// connection close short of the promised length, the line keeps code 200 with flag
/// UT and details `response_timeout`, and the upstream connection is closed. Both a
/// bodiless request (served by the fast path) and one with a body (served by hyper),
/// with and without retries (the retry loop has its own deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_cuts_off_a_response_body_still_coming() {
    let (up, mut closed) = scripted_upstream(FIVE_OF_TEN, Then::Stall).await;
    for (n, retries) in ["", "      retries:\n        attempts: 2\n"]
        .into_iter()
        .enumerate()
    {
        let yaml = vs(&format!(
            "    - timeout: 0.3s
{retries}      route:
        - destination:
            host: svc
"
        ));
        let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up)]).await;
        for (i, request) in GET_AND_POST.into_iter().enumerate() {
            let got = until_closed(sidecar.addr, request).await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            let body = got.split("\r\n\r\n").nth(1).unwrap_or_default();
            assert_eq!(body, "hello", "only what came before the timeout: {got}");
            let line = sidecar.log.line(i + 1).await;
            assert_eq!(line.response_code, "200", "{}", line.raw);
            assert_eq!(line.response_flags, "UT", "{}", line.raw);
            assert_eq!(line.response_code_details, "response_timeout");
            assert_eq!(line.bytes_sent, "5", "{}", line.raw);
            tokio::time::timeout(Duration::from_secs(20), closed.recv())
                .await
                .unwrap_or_else(|_| panic!("variant {n}: the upstream connection is closed"));
        }
        // Istio's request metric is recorded at the stream's end, with the same flag.
        let cut = request_counter(&sidecar, 200);
        assert!(cut.contains("response_flags=\"UT\""), "{cut}");
        assert!(cut.ends_with(" 2"), "{cut}");
    }
}

/// The same route timeout does not cut off a body that completes in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_lets_a_body_complete_in_time_through() {
    let (up, _closed) = scripted_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234",
        Then::Send(b"56789", Duration::from_millis(100)),
    )
    .await;
    let yaml = vs("    - timeout: 10s
      route:
        - destination:
            host: svc
");
    let sidecar = sidecar_for(&yaml, &[bare_pod("svc-1", "svc", 8080, up)]).await;
    let reply = send(sidecar.addr, get("http://svc/whole", "svc")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "0123456789");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "-", "{}", line.raw);
    assert_eq!(line.response_code_details, "via_upstream");
}

/// An upstream that breaks off its answer after the 200 head has gone out: Envoy
/// resets the downstream stream and logs the status sent with the reset's flag and
/// details `upstream_reset_after_response_started{REASON}` (router.cc
/// `onUpstreamReset`). Closing the connection is a connection termination (UC); a
/// chunk that does not parse is a protocol error (UPE; codec_client.cc `onEvent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_broken_off_after_its_head_is_logged_with_the_resets_flag() {
    let cases: [(&[u8], Then, &str, &str); 2] = [
        (
            FIVE_OF_TEN,
            Then::Close,
            "UC",
            "upstream_reset_after_response_started{connection_termination}",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            Then::Stall,
            "UPE",
            "upstream_reset_after_response_started{protocol_error}",
        ),
    ];
    for (answer, then, flag, details) in cases {
        let (up, _closed) = scripted_upstream(answer, then).await;
        let sidecar = sidecar_for(
            &service_yaml("svc", "svc", 8080),
            &[bare_pod("svc-1", "svc", 8080, up)],
        )
        .await;
        for (i, request) in GET_AND_POST.into_iter().enumerate() {
            let got = until_closed(sidecar.addr, request).await;
            assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
            assert!(!got.ends_with("0\r\n\r\n"), "no end of the body: {got}");
            let line = sidecar.log.line(i + 1).await;
            assert_eq!(line.response_code, "200", "{}", line.raw);
            assert_eq!(line.response_flags, flag, "{}", line.raw);
            assert_eq!(line.response_code_details, details, "{}", line.raw);
        }
        let counter = request_counter(&sidecar, 200);
        assert!(
            counter.contains(&format!("response_flags=\"{flag}\"")),
            "{counter}"
        );
    }
}

/// An answer that is not HTTP is a protocol error before the response started:
/// 503 with Envoy's reset body, flag UPE, details
/// `upstream_reset_before_response_started{protocol_error}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_http_is_503_upe() {
    let (up, _closed) = scripted_upstream(b"this is not http\r\n\r\n", Then::Stall).await;
    let sidecar = sidecar_for(
        &service_yaml("svc", "svc", 8080),
        &[bare_pod("svc-1", "svc", 8080, up)],
    )
    .await;
    for (i, request) in GET_AND_POST.into_iter().enumerate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut client = tokio::net::TcpStream::connect(sidecar.addr)
            .await
            .expect("connect");
        client.write_all(request).await.expect("write");
        let mut got = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), client.read(&mut got))
            .await
            .expect("an answer")
            .expect("read");
        let got = String::from_utf8_lossy(&got[..n]).into_owned();
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
        assert!(
            got.ends_with(
                "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
            ),
            "{got}"
        );
        let line = sidecar.log.line(i + 1).await;
        assert_eq!(line.response_code, "503", "{}", line.raw);
        assert_eq!(line.response_flags, "UPE", "{}", line.raw);
        assert_eq!(
            line.response_code_details,
            "upstream_reset_before_response_started{protocol_error}"
        );
    }
}
