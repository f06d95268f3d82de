//! A REGISTRY_ONLY that holds: each test is one attempt a workload could make to reach a
//! host that no ServiceEntry lists, sent as raw bytes over a TcpStream (a client library
//! would normalise most of these attacks away). The "secret" upstreams are reachable
//! only if the policy is bypassed: the sidecar's (and egress gateway's) resolver sends
//! `secret.example.test`, the unlisted port and the punycode name to them, and the IP
//! literals point straight at them. Every test fails if a secret upstream records a
//! connection. docs/EGRESS_BYPASS.md lists the attempts, what meshbox does and the test.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use crate::tls_common::*;
use meshbox_proxy::Override;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The registry: an HTTP host on port 80, a TLS host on 443, a host with
/// `resolution: NONE` on both, and another host on port 8080 (so that port 8080 has a
/// route table of its own, without `allowed.example.test` in it).
const REGISTRY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: allowed
spec:
  hosts: [allowed.example.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: secure
spec:
  hosts: [secure.example.test]
  ports:
  - {number: 443, name: tls, protocol: TLS}
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: none
spec:
  hosts: [none.example.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
  resolution: NONE
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: other
spec:
  hosts: [other.example.test]
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  resolution: DNS
  location: MESH_EXTERNAL
---
";

/// The punycode form of `sécret.example.test`.
const PUNY: &str = "xn--scret-bsa.example.test";

/// The world of one test: listed upstreams, secret upstreams, the client's sidecar.
struct World {
    allowed: Upstream,
    secret: Upstream,
    /// The secret HTTP upstream on [::1], when this machine has IPv6 loopback.
    secret_v6: Option<Upstream>,
    allowed_tls: TlsServer,
    secret_tls: TlsServer,
    pki: Pki,
    sidecar: Running,
}

fn to(host_port: &str, addr: SocketAddr) -> Override {
    Override::parse_connect_to(&format!("{host_port}:127.0.0.1:{}", addr.port())).unwrap()
}

/// Where every name goes: listed names to the listed upstreams; the secret name, the
/// punycode name and the listed name on an unlisted port to the secret ones.
fn overrides(
    allowed: SocketAddr,
    secret: SocketAddr,
    allowed_tls: SocketAddr,
    secret_tls: SocketAddr,
) -> Vec<Override> {
    vec![
        to("allowed.example.test:80", allowed),
        to("none.example.test:80", allowed),
        to("secure.example.test:443", allowed_tls),
        to("none.example.test:443", allowed_tls),
        to("secret.example.test:80", secret),
        to("secret.example.test:443", secret_tls),
        to(&format!("{PUNY}:80"), secret),
        to("allowed.example.test:8080", secret),
        to("secure.example.test:8443", secret_tls),
        // The listed name on the secret's own port (Host with an unusual port).
        to(&format!("allowed.example.test:{}", secret.port()), secret),
    ]
}

async fn world() -> World {
    let allowed = echo_upstream("allowed").await;
    let secret = echo_upstream("secret").await;
    let secret_v6 = match tokio::net::TcpListener::bind("[::1]:0").await {
        Ok(l) => {
            drop(l);
            Some(v6_upstream().await)
        }
        Err(_) => None,
    };
    let pki = Pki::new("bypass test CA");
    let allowed_tls = tls_server(
        "allowed",
        &pki.server(
            &["secure.example.test", "none.example.test"],
            Validity::Current,
        ),
        None,
    )
    .await;
    let secret_tls = tls_server(
        "secret",
        &pki.server(&["secret.example.test"], Validity::Current),
        None,
    )
    .await;
    let store = store(REGISTRY);
    let tables = sidecar_tables(&store, &registry_only(), &[]);
    let sidecar = sidecar(
        tables,
        overrides(allowed.addr, secret.addr, allowed_tls.addr, secret_tls.addr),
        1,
    )
    .await;
    World {
        allowed,
        secret,
        secret_v6,
        allowed_tls,
        secret_tls,
        pki,
        sidecar,
    }
}

/// An echo upstream on [::1] (the common fixture binds 127.0.0.1 only).
async fn v6_upstream() -> Upstream {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind v6");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let _ = s
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nsecret",
                )
                .await;
        }
    });
    Upstream {
        name: "secret-v6".into(),
        addr,
        accepted: accepted.clone(),
        requests: accepted,
    }
}

impl World {
    /// Fails if anything reached a secret upstream.
    fn assert_secret_untouched(&self, attempt: &str) {
        assert_eq!(
            self.secret.accepted.load(Ordering::SeqCst),
            0,
            "{attempt}: a connection reached the secret upstream"
        );
        assert_eq!(
            self.secret.requests.load(Ordering::SeqCst),
            0,
            "{attempt}: a request reached the secret upstream"
        );
        if let Some(v6) = &self.secret_v6 {
            assert_eq!(
                v6.accepted.load(Ordering::SeqCst),
                0,
                "{attempt}: a connection reached the secret upstream on [::1]"
            );
        }
        assert_eq!(
            self.secret_tls.accepted.load(Ordering::SeqCst),
            0,
            "{attempt}: a connection reached the secret TLS server"
        );
    }

    /// Sends `request` to the sidecar; returns the status code and the raw answer.
    async fn send(&self, request: &str) -> (u16, String) {
        raw(self.sidecar.addr, request.as_bytes()).await
    }

    /// Waits for the access log line of the request for `authority` and checks it
    /// names the host asked for with this status.
    /// (A refusal's line may give the authority as asked or normalised to
    /// `host:port`, lower case, without a trailing dot.)
    /// For 502 (a refusal), a 503 `DF` (a name DNS does not know either) counts too.
    async fn logged(&self, authority: &str, status: u16) -> LogLine {
        let line = self.sidecar.log.find(|l| names(l, authority)).await;
        if status == 502 {
            assert!(
                (line.response_code == "502" && line.route_name == "block_all")
                    || (line.response_code == "503" && line.response_flags == "DF")
                    || (line.response_code == "502" && line.method == "CONNECT"),
                "{}",
                line.raw
            );
        } else {
            assert_eq!(line.response_code, status.to_string(), "{}", line.raw);
        }
        line
    }
}

/// Whether the log line names `authority`, as asked or normalised.
fn names(line: &LogLine, authority: &str) -> bool {
    if line.authority == authority {
        return true;
    }
    let lower = authority.to_ascii_lowercase();
    let (host, port) = match lower.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (h, p),
        _ => (lower.as_str(), "80"),
    };
    line.authority == format!("{}:{port}", host.trim_end_matches('.'))
}

impl World {}

/// Writes `bytes` on a new connection and reads the answer until the proxy closes the
/// connection (or stays silent for a second); returns the first status code (0 if
/// none) and everything read.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect to proxy");
    s.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(target: &str, host: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// Positive control: the listed hosts are reachable through the same sidecar, so the
/// refusals below are the policy's and not a broken fixture's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_listed_hosts_are_reachable() {
    let w = world().await;
    let (status, text) = w
        .send(&get("http://allowed.example.test/", "allowed.example.test"))
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upstream\":\"allowed\""), "{text}");
    let (status, text) = w
        .send(&get("http://none.example.test/", "none.example.test"))
        .await;
    assert_eq!(status, 200, "{text}");
    let (status, tunnel) = connect(w.sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    let body = tls_get(tunnel, "secure.example.test", &w.pki, "/ok").await;
    assert_eq!(body.as_deref(), Ok("hello from allowed over TLS /ok"));
    assert_eq!(w.allowed.requests.load(Ordering::SeqCst), 2);
    assert_eq!(w.allowed_tls.accepted.load(Ordering::SeqCst), 1);
    w.assert_secret_untouched("control");
}

/// Absolute-form target and Host header disagree. A proxy routes by the absolute URI
/// and replaces Host with it (RFC 9112 §3.2.2): a listed URI with `Host: secret`
/// reaches the listed host, which sees `Host: allowed.example.test`; a secret URI with
/// a listed Host is refused (502, the log names the secret host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_unlike_absolute_uri() {
    let w = world().await;
    let (status, text) = w
        .send(&get("http://allowed.example.test/", "secret.example.test"))
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upstream\":\"allowed\""), "{text}");
    assert!(text.contains("\"host\":\"allowed.example.test\""), "{text}");
    let (status, _) = w
        .send(&get("http://secret.example.test/", "allowed.example.test"))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    let line = w.logged("secret.example.test", 502).await;
    assert_eq!(line.route_name, "block_all");
    w.assert_secret_untouched("Host unlike absolute URI");
}

/// `Host: allowed.example.test:PORT` where PORT is where the secret listens, absolute
/// or origin form: the port picks the route table; no ServiceEntry lists it: 502.
/// Ports that are not a number below 65536 (`:65616` = 80 + 65536, `:80abc`, `:`) are
/// refused with 400 instead of being read as some default port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_unusual_port() {
    let w = world().await;
    let port = w.secret.addr.port();
    let authority = format!("allowed.example.test:{port}");
    let (status, _) = w.send(&get("/", &authority)).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged(&authority, 502).await;
    let (status, _) = w
        .send(&get(&format!("http://{authority}/"), &authority))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    for odd in [
        "allowed.example.test:65616",
        "allowed.example.test:80abc",
        "allowed.example.test:",
    ] {
        let (status, text) = w.send(&get("/", odd)).await;
        assert_eq!(status, 400, "{odd}: {text}");
        w.logged(odd, 400).await;
    }
    w.assert_secret_untouched("Host with unusual port");
}

/// A trailing dot (the FQDN form) is the same name: `secret.example.test.` is refused,
/// `allowed.example.test.` reaches the listed host; `allowed.example.test.:80` (dot
/// before the port) matches no virtual host and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_trailing_dot() {
    let w = world().await;
    let (status, _) = w.send(&get("/", "secret.example.test.")).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged("secret.example.test.", 502).await;
    let (status, _) = w
        .send(&get("http://secret.example.test./", "secret.example.test."))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    let (status, text) = w.send(&get("/", "allowed.example.test.")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upstream\":\"allowed\""), "{text}");
    let (status, _) = w.send(&get("/", "secret.example.test.:80")).await;
    assert_ne!(status, 200);
    w.assert_secret_untouched("Host with trailing dot");
}

/// Host names are case-insensitive: `SECRET.Example.TEST` is the unlisted host (502,
/// logged as sent), `ALLOWED.example.TEST` the listed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_mixed_case() {
    let w = world().await;
    let (status, _) = w.send(&get("/", "SECRET.Example.TEST")).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged("SECRET.Example.TEST", 502).await;
    let (status, _) = w
        .send(&get("http://SeCrEt.example.test/", "SeCrEt.example.test"))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    let (status, text) = w.send(&get("/", "ALLOWED.example.TEST")).await;
    assert_eq!(status, 200, "{text}");
    w.assert_secret_untouched("Host with mixed case");
}

/// Userinfo in the authority (`http://allowed.example.test@secret.example.test/`, whose
/// host is secret.example.test; or the other way round, or in the Host header): refused
/// with 400 whichever way a later reader would split it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_with_userinfo() {
    let w = world().await;
    for (target, host) in [
        (
            "http://allowed.example.test@secret.example.test/",
            "secret.example.test",
        ),
        (
            "http://secret.example.test@allowed.example.test/",
            "allowed.example.test",
        ),
        (
            "http://user:pass@secret.example.test/",
            "secret.example.test",
        ),
        ("/", "allowed.example.test@secret.example.test"),
        ("/", "secret.example.test@allowed.example.test"),
    ] {
        let (status, text) = w.send(&get(target, host)).await;
        assert_eq!(status, 400, "{target} Host {host}: {text}");
    }
    w.logged("allowed.example.test@secret.example.test", 400)
        .await;
    w.assert_secret_untouched("Host with userinfo");
}

/// IP literals pointing at the secret upstream: IPv4, IPv6, and the decimal
/// (`2130706433`) and octal (`0177.0.0.1`), hex and short forms that C's `inet_aton`
/// reads as 127.0.0.1. None is a listed host: 502 (or 503 DF for the forms that are
/// no address and no DNS name either); meshbox never reads the odd forms as addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literals() {
    let w = world().await;
    let port = w.secret.addr.port();
    let mut targets: Vec<String> = [
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
    ]
    .iter()
    .map(|h| format!("{h}:{port}"))
    .collect();
    if let Some(v6) = &w.secret_v6 {
        targets.push(format!("[::1]:{}", v6.addr.port()));
    }
    for authority in &targets {
        for request in [
            get(&format!("http://{authority}/"), authority),
            get("/", authority),
        ] {
            let (status, text) = w.send(&request).await;
            assert!(
                status == 502 || status == 503,
                "{authority}: {status} {text}"
            );
        }
        let line = w.sidecar.log.find(|l| l.authority == *authority).await;
        assert!(
            line.response_code == "502" || line.response_code == "503",
            "{}",
            line.raw
        );
    }
    // On port 80 (which has a route table) an IP literal is the catch-all's.
    let (status, _) = w.send(&get("http://127.0.0.1/", "127.0.0.1")).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.assert_secret_untouched("IP literals");
}

/// IDN: a name in UTF-8 is not a valid request target or Host value (400); its
/// punycode form is an ordinary DNS name that no ServiceEntry lists (502, logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idn_and_punycode_names() {
    let w = world().await;
    let (status, text) = w
        .send(&get("http://sécret.example.test/", "sécret.example.test"))
        .await;
    assert_eq!(status, 400, "{text}");
    let (status, text) = w.send(&get("/", "sécret.example.test")).await;
    assert_eq!(status, 400, "{text}");
    w.logged("sécret.example.test", 400).await;
    let (status, _) = w.send(&get(&format!("http://{PUNY}/"), PUNY)).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged(PUNY, 502).await;
    w.assert_secret_untouched("IDN and punycode");
}

/// CONNECT to a host no ServiceEntry lists, to a listed host on a port it does not
/// list, to IP literals and to `user@host`: refused before any upstream connection
/// (502, or 400 for userinfo), each logged with the host:port asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_unlisted_host_or_port() {
    let w = world().await;
    let secret_port = w.secret_tls.addr.port();
    for (target, expected) in [
        ("secret.example.test:443".to_string(), 502),
        ("secure.example.test:8443".to_string(), 502),
        (format!("127.0.0.1:{secret_port}"), 502),
        (format!("2130706433:{secret_port}"), 502),
        (format!("secure.example.test:{secret_port}"), 502),
        ("allowed.example.test:80".to_string(), 502),
        (
            "secure.example.test@secret.example.test:443".to_string(),
            400,
        ),
    ] {
        let (status, _) = connect(w.sidecar.addr, &target).await;
        assert_eq!(status, expected, "CONNECT {target}");
        w.logged(&target, expected).await;
    }
    let line = w.logged("secret.example.test:443", 502).await;
    assert_eq!(line.upstream_cluster, "BlackHoleCluster");
    w.assert_secret_untouched("CONNECT to unlisted host or port");
}

/// CONNECT to a listed name, then a ClientHello for another SNI: the sidecar reads the
/// ClientHello and closes the tunnel (NR, the SNI logged) before anything is sent on.
/// Also for the `resolution: NONE` host, and for plain HTTP inside a TLS-port tunnel. A
/// ClientHello without SNI is harmless: the tunnel's destination is the listed host's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_listed_name_then_other_sni() {
    let w = world().await;
    for listed in ["secure.example.test:443", "none.example.test:443"] {
        let (status, tunnel) = connect(w.sidecar.addr, listed).await;
        assert_eq!(status, 200, "{listed}");
        let result = tls_get(tunnel, "secret.example.test", &w.pki, "/").await;
        assert!(result.is_err(), "{listed}: {result:?}");
    }
    let line = w
        .sidecar
        .log
        .find(|l| l.requested_server_name == "secret.example.test")
        .await;
    assert_eq!(line.response_flags, "NR");
    assert_eq!(line.upstream_cluster, "BlackHoleCluster");
    // Plain HTTP for the secret host inside a tunnel to a TLS port.
    let (status, mut tunnel) = connect(w.sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    tunnel
        .write_all(get("http://secret.example.test/", "secret.example.test").as_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tunnel.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        w.allowed_tls.seen.lock().unwrap().is_empty(),
        "nothing reached the listed server either"
    );
    // A ClientHello without SNI (rustls sends none for an IP address): nothing to
    // check, and the tunnel goes where the CONNECT target resolves, the listed server.
    // (The sidecar connects upstream before it answers 200, so each tunnel above
    // opened a TCP connection to the listed server and closed it unused.)
    let before = w.allowed_tls.accepted.load(Ordering::SeqCst);
    let (status, tunnel) = connect(w.sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    let _ = tls_get(tunnel, "127.0.0.1", &w.pki, "/").await;
    assert_eq!(w.allowed_tls.accepted.load(Ordering::SeqCst), before + 1);
    w.assert_secret_untouched("CONNECT then another SNI");
}

/// HTTP/1.0 without Host: origin form has no host to route by (400); absolute form
/// is routed by its URI like any other request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_host() {
    let w = world().await;
    let (status, text) = w.send("GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 400, "{text}");
    let (status, _) = w
        .send("GET http://secret.example.test/ HTTP/1.0\r\n\r\n")
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged("secret.example.test", 502).await;
    let (status, text) = w
        .send("GET http://allowed.example.test/ HTTP/1.0\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{text}");
    w.assert_secret_untouched("HTTP/1.0 without Host");
}

/// Two Host headers (either order, origin or absolute form): 400, as RFC 9112 §3.2
/// requires, so that no later hop can pick the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers() {
    let w = world().await;
    for (target, first, second) in [
        ("/", "allowed.example.test", "secret.example.test"),
        ("/", "secret.example.test", "allowed.example.test"),
        (
            "http://allowed.example.test/",
            "allowed.example.test",
            "secret.example.test",
        ),
    ] {
        let request = format!(
            "GET {target} HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\nConnection: close\r\n\r\n"
        );
        let (status, text) = w.send(&request).await;
        assert_eq!(status, 400, "{request}: {text}");
    }
    // Host folded over two lines (obs-fold), and with a space before the colon: the
    // request does not parse (400).
    for request in [
        "GET / HTTP/1.1\r\nHost: allowed.example.test\r\n secret.example.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : secret.example.test\r\nHost: allowed.example.test\r\nConnection: close\r\n\r\n",
    ] {
        let (status, text) = w.send(request).await;
        assert_eq!(status, 400, "{request}: {text}");
    }
    assert_eq!(w.allowed.requests.load(Ordering::SeqCst), 0);
    w.assert_secret_untouched("two Host headers");
}

/// Content-Length and Transfer-Encoding together, with a request for the secret host
/// smuggled after the chunked body: hyper reads the body as chunked (Transfer-Encoding
/// wins, RFC 9112 §6.3), forwards it chunked without Content-Length to the listed host
/// and ends the connection after the response, so the smuggled bytes are never read as
/// a request; `Transfer-Encoding: identity` is 400. Whatever the framing, every request
/// the sidecar parses passes the policy, and its upstream connections go only to listed
/// hosts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_length_and_transfer_encoding() {
    let w = world().await;
    let smuggled = "GET http://secret.example.test/ HTTP/1.1\r\nHost: secret.example.test\r\nConnection: close\r\n\r\n";
    for (cl_first, te) in [(true, "chunked"), (false, "chunked"), (true, "identity")] {
        let body = "0\r\n\r\n";
        let headers = if cl_first {
            format!(
                "Content-Length: {}\r\nTransfer-Encoding: {te}\r\n",
                body.len() + smuggled.len()
            )
        } else {
            format!(
                "Transfer-Encoding: {te}\r\nContent-Length: {}\r\n",
                body.len()
            )
        };
        let request = format!(
            "POST http://allowed.example.test/ HTTP/1.1\r\nHost: allowed.example.test\r\n{headers}\r\n{body}{smuggled}"
        );
        let (status, text) = w.send(&request).await;
        assert!(!text.contains("\"upstream\":\"secret\""), "{text}");
        if te == "chunked" {
            assert_eq!(status, 200, "{text}");
            assert!(text.contains("\"body\":\"\""), "chunked wins: {text}");
            assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one answer: {text}");
        } else {
            assert_eq!(status, 400, "{text}");
        }
    }
    w.assert_secret_untouched("conflicting Content-Length and Transfer-Encoding");
}

/// A listed host on a port its ServiceEntry does not list (port 8080 has a route table,
/// for another host): 502, logged with the port; the resolver would have sent it to
/// the secret upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_the_service_entry_does_not_list() {
    let w = world().await;
    let (status, _) = w
        .send(&get(
            "http://allowed.example.test:8080/",
            "allowed.example.test:8080",
        ))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged("allowed.example.test:8080", 502).await;
    let (status, _) = w.send(&get("/", "allowed.example.test:8080")).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.assert_secret_untouched("port the ServiceEntry does not list");
}

/// The course's egress gateway set-up for allowed.example.test (Gateway on port 80
/// listing it, VirtualService mesh → egress gateway → allowed.example.test).
const EGRESS_HTTP: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [allowed.example.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: allowed-through-egress-gateway
spec:
  hosts: [allowed.example.test]
  gateways: [istio-egressgateway, mesh]
  http:
  - match:
    - gateways: [mesh]
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        port: {number: 80}
  - match:
    - gateways: [istio-egressgateway]
      port: 80
    route:
    - destination:
        host: allowed.example.test
        port: {number: 80}
";

/// A workload that calls the egress gateway itself for a host its Gateway does not
/// list: directly on the gateway's port (Host or absolute URI naming the secret host),
/// through its sidecar with the gateway as URI and the secret as Host (the sidecar
/// replaces Host with the URI's authority), and TLS with the secret's SNI to the
/// gateway's 443. The gateway has no virtual host for it: 404 NR, logged with the
/// host; TLS finds no server. The listed host still goes through (control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_called_directly_for_unlisted_host() {
    let allowed = echo_upstream("allowed").await;
    let secret = echo_upstream("secret").await;
    let pki = Pki::new("bypass test CA");
    let secret_tls = tls_server(
        "secret",
        &pki.server(&["secret.example.test"], Validity::Current),
        None,
    )
    .await;
    let mesh = with_egress_gateway();
    let store = store(&format!("{REGISTRY}{EGRESS_HTTP}"));
    let routes = overrides(allowed.addr, secret.addr, secret_tls.addr, secret_tls.addr);
    let gateway = EgressGateway::bind()
        .await
        .start(&store, &mesh, &[], routes.clone())
        .await;
    let tables = sidecar_tables(&store, &mesh, std::slice::from_ref(&gateway.instance));
    let sidecar = sidecar(tables, routes, 1).await;

    // Control: the listed host, through sidecar and gateway.
    let (status, text) = raw(
        sidecar.addr,
        get("http://allowed.example.test/", "allowed.example.test").as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    gateway
        .log
        .find(|l| l.authority == "allowed.example.test" && l.response_code == "200")
        .await;

    for request in [
        get("/", "secret.example.test"),
        get("http://secret.example.test/", "allowed.example.test"),
        get("/", "secret.example.test:80"),
    ] {
        let (status, text) = raw(gateway.http, request.as_bytes()).await;
        assert_eq!(status, 404, "{request}: {text}");
    }
    let line = gateway.log.find(|l| names(l, "secret.example.test")).await;
    assert_eq!(
        (line.response_code.as_str(), line.response_flags.as_str()),
        ("404", "NR")
    );

    let gw_host = "istio-egressgateway.istio-system.svc.cluster.local";
    let (status, text) = raw(
        sidecar.addr,
        get(&format!("http://{gw_host}/"), "secret.example.test").as_bytes(),
    )
    .await;
    assert_eq!(status, 404, "{text}");
    gateway
        .log
        .find(|l| names(l, gw_host) && l.response_code == "404")
        .await;

    let stream = TcpStream::connect(gateway.https).await.unwrap();
    let result = tls_get(stream, "secret.example.test", &pki, "/").await;
    assert!(result.is_err(), "{result:?}");
    let (status, tunnel) = connect(sidecar.addr, &format!("{gw_host}:443")).await;
    if status == 200 {
        let result = tls_get(tunnel, "secret.example.test", &pki, "/").await;
        assert!(result.is_err(), "{result:?}");
    }

    assert_eq!(secret.accepted.load(Ordering::SeqCst), 0, "secret reached");
    assert_eq!(
        secret_tls.accepted.load(Ordering::SeqCst),
        0,
        "secret TLS reached"
    );
}

/// ServiceEntry `resolution: NONE`. Istio documents that with NONE "the destination
/// address of the connection" is used, so a workload can connect to any address with a
/// listed Host (Host spoofing). meshbox has no captured destination: the workload names
/// its destination only in the request target, and the sidecar routes and resolves by
/// that name. So a listed Host with a secret address in the URI is refused, a listed
/// name reaches only its own address, and a port the entry does not list is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolution_none_host_spoofing() {
    let w = world().await;
    let secret = w.secret.addr;
    let (status, _) = w
        .send(&get(&format!("http://{secret}/"), "none.example.test"))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.logged(&secret.to_string(), 502).await;
    let (status, text) = w.send(&get("/", "none.example.test")).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"upstream\":\"allowed\""), "{text}");
    let (status, _) = w
        .send(&get("/", &format!("none.example.test:{}", secret.port())))
        .await;
    assert!(status == 502 || status == 503, "refused: {status}");
    // CONNECT to the secret address, then a request with the listed Host inside.
    let (status, _) = connect(w.sidecar.addr, &secret.to_string()).await;
    assert!(status == 502 || status == 503, "refused: {status}");
    w.assert_secret_untouched("resolution NONE Host spoofing");
}
