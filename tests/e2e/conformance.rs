//! Conformance with Istio's own routing cases.
//!
//! Each test here is one case of Istio's traffic integration tests
//! (tests/integration/pilot/common/routing.go in istio/istio), named after it, written
//! anew for meshbox: the same configuration and the same checks, with real traffic
//! through a running `meshbox up`. Istio's tests call between "echo" workloads; here the
//! built-in `echo` app plays them (it answers with a description of the request it
//! received). A call "from a" is what workload `a` would send: an HTTP proxy request to
//! a's sidecar, the address a finds in its `HTTP_PROXY`.
//!
//! docs/CONFORMANCE.md lists every case and its state.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::MeshProcess;

/// The namespace of every workload and object of these tests.
const NS: &str = "conformance";

/// The seed of weighted choices: the traffic-shifting counts are reproducible.
const SEED: &str = "7";

// ---------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------

/// An echo workload: a Deployment running `meshbox/echo` and a Service of the same
/// name (port 80, and for `b` also port 85, as Istio's echo `b` has a second HTTP port).
#[derive(Clone, Copy)]
struct App {
    name: &'static str,
    replicas: u32,
}

const fn app(name: &'static str) -> App {
    App { name, replicas: 1 }
}

fn app_manifest(a: App) -> String {
    let name = a.name;
    let extra_port = if name == "b" {
        "  - name: http2\n    port: 85\n    targetPort: 8080\n"
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
        version: v1
        class: standard
    spec:
      containers:
      - name: echo
        image: meshbox/echo
        ports:
        - containerPort: 8080
        env:
        - name: SERVICE_VERSION
          value: v1
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - name: http
    port: 80
    targetPort: 8080
{extra_port}---
"#,
        replicas = a.replicas
    )
}

// ---------------------------------------------------------------------------------------
// The mesh
// ---------------------------------------------------------------------------------------

/// A running mesh with echo workloads, and a client that calls as they would.
struct Mesh {
    mesh: MeshProcess,
    applied: AtomicUsize,
}

impl Mesh {
    /// `meshbox up` (seeded, access logs on, plus `args`), then the apps, waiting until
    /// every replica of each answers through a's sidecar.
    fn start(apps: &[App], args: &[&str]) -> Mesh {
        let mut up = vec![
            "-n",
            NS,
            "--seed",
            SEED,
            "--set",
            "meshConfig.accessLogFile=/dev/stdout",
        ];
        up.extend_from_slice(args);
        let mesh = Mesh {
            mesh: MeshProcess::start(&up),
            applied: AtomicUsize::new(0),
        };
        let manifests: String = apps.iter().map(|a| app_manifest(*a)).collect();
        mesh.apply(&manifests);
        for a in apps {
            mesh.wait_for_replicas(a);
        }
        mesh
    }

    /// `meshbox apply -n conformance -f FILE` with this YAML; returns apply's output.
    fn apply(&self, yaml: &str) -> String {
        let n = self.applied.fetch_add(1, Ordering::Relaxed);
        let path = self.mesh.home().join(format!("applied-{n}.yaml"));
        std::fs::write(&path, yaml).expect("write manifest");
        self.mesh
            .ok(&["apply", "-n", NS, "-f", &path.display().to_string()])
    }

    /// The sidecar address a workload finds in its `HTTP_PROXY` (`host:port`).
    fn sidecar_of(&self, deployment: &str) -> String {
        let out = self
            .mesh
            .ok(&["exec", deployment, "-n", NS, "--", "printenv", "HTTP_PROXY"]);
        out.trim()
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("HTTP_PROXY of {deployment} is {out:?}"))
            .trim_end_matches('/')
            .to_string()
    }

    /// Sends `req` as workload `from` would: through its sidecar.
    fn call_from(&self, from: &str, req: &Req) -> Reply {
        send(&self.sidecar_of(from), req)
    }

    /// Sends `req` as workload `a` would.
    fn call(&self, req: &Req) -> Reply {
        self.call_from("a", req)
    }

    /// Sends `req` (origin form, with its own Host) to the ingress gateway.
    fn call_ingress(&self, req: &Req) -> Reply {
        send(&self.mesh.gateway_url, req)
    }

    fn wait_for_replicas(&self, a: &App) {
        let proxy = self.sidecar_of("a");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = BTreeSet::new();
        loop {
            let reply = send(&proxy, &Req::get(&format!("http://{}/", a.name)));
            if reply.status == 200 {
                if let Some(e) = reply.try_echo() {
                    seen.insert(e.hostname);
                }
            }
            if seen.len() >= a.replicas as usize {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never answered with {} replicas; last: {reply:?}",
                a.name,
                a.replicas
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The access log of a workload's sidecar (for failure messages).
    fn log(&self, deployment: &str) -> String {
        self.mesh.logs(deployment, NS)
    }
}

// ---------------------------------------------------------------------------------------
// The client: HTTP/1.1 over a real socket, one connection per request
// ---------------------------------------------------------------------------------------

/// A request as a client sends it.
#[derive(Debug, Clone)]
struct Req {
    method: String,
    /// The request target as on the request line: an absolute URL for a proxy, a path
    /// for a gateway.
    target: String,
    /// The Host header.
    host: String,
    headers: Vec<(String, String)>,
    /// Follow redirects, as Istio's `FollowRedirects: true`.
    follow: bool,
}

impl Req {
    /// `GET url` through a proxy: the URL's authority is also the Host header.
    fn get(url: &str) -> Req {
        let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
        let host = rest.split(['/', '?']).next().unwrap_or("").to_string();
        Req {
            method: "GET".into(),
            target: url.to_string(),
            host,
            headers: Vec::new(),
            follow: false,
        }
    }

    /// `GET path` with this Host header (origin form, as a client sends to a gateway).
    fn origin(path: &str, host: &str) -> Req {
        Req {
            method: "GET".into(),
            target: path.to_string(),
            host: host.to_string(),
            headers: Vec::new(),
            follow: false,
        }
    }

    fn method(mut self, m: &str) -> Req {
        self.method = m.to_string();
        self
    }

    fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    fn follow_redirects(mut self) -> Req {
        self.follow = true;
        self
    }
}

/// An answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// For a followed redirect: the statuses and Locations on the way.
    redirects: Vec<(u16, String)>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn try_echo(&self) -> Option<Echo> {
        Echo::parse(&self.body)
    }

    /// The echo server's description of the request it received.
    fn echo(&self) -> Echo {
        self.try_echo()
            .unwrap_or_else(|| panic!("not an echo answer: {self:?}"))
    }
}

/// What the echo workload says it received.
#[derive(Debug, Clone)]
struct Echo {
    hostname: String,
    method: String,
    url: String,
    host: String,
    headers: Vec<(String, String)>,
}

impl Echo {
    fn parse(body: &str) -> Option<Echo> {
        let mut fields = BTreeMap::new();
        let mut headers = Vec::new();
        for line in body.lines() {
            let (k, v) = line.split_once('=')?;
            if k == "RequestHeader" {
                let (name, value) = v.split_once(':')?;
                headers.push((name.to_string(), value.to_string()));
            } else {
                fields.insert(k.to_string(), v.to_string());
            }
        }
        Some(Echo {
            hostname: fields.remove("Hostname")?,
            method: fields.remove("Method")?,
            url: fields.remove("URL")?,
            host: fields.remove("Host")?,
            headers,
        })
    }

    /// Every value of a request header the echo server received.
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends one request over a fresh connection to `addr` and reads the whole answer;
/// follows redirects (through the same address) when the request asks to.
fn send(addr: &str, req: &Req) -> Reply {
    let mut redirects = Vec::new();
    let mut current = req.clone();
    for _ in 0..5 {
        let mut reply = send_once(addr, &current);
        let location = reply.header("location").map(str::to_string);
        match location {
            Some(loc) if req.follow && matches!(reply.status, 301 | 302 | 303 | 307 | 308) => {
                redirects.push((reply.status, loc.clone()));
                let headers = current.headers.clone();
                current = Req::get(&loc);
                current.headers = headers;
            }
            _ => {
                reply.redirects = redirects;
                return reply;
            }
        }
    }
    panic!("too many redirects: {redirects:?}");
}

fn send_once(addr: &str, req: &Req) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\n",
        req.method, req.target, req.host
    );
    for (k, v) in &req.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if req.method == "POST" {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    if let Err(e) = stream.read_to_end(&mut raw) {
        panic!(
            "no complete answer from {addr} to {} {} within 15 s: {e} (read so far: {:?})",
            req.method,
            req.target,
            String::from_utf8_lossy(&raw)
        );
    }
    parse_reply(&raw).unwrap_or_else(|| {
        panic!(
            "not an HTTP answer from {addr} to {} {}: {:?}",
            req.method,
            req.target,
            String::from_utf8_lossy(&raw)
        )
    })
}

fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    Some(Reply {
        status,
        headers,
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
        redirects: Vec::new(),
    })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A VirtualService named `default` (as Istio's cases name theirs) with this `spec`
/// body, indented two spaces.
fn virtual_service(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n{spec}"
    )
}

/// Asserts `reply` is a 200 from the echo server and returns what it received.
fn ok_echo(reply: &Reply, what: &str) -> Echo {
    assert_eq!(reply.status, 200, "{what}: {reply:?}");
    reply.echo()
}

// ---------------------------------------------------------------------------------------
// virtualServiceCases
// ---------------------------------------------------------------------------------------

/// routing.go, virtualServiceCases: "added header".
#[test]
fn added_header() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
    headers:
      request:
        add:
          istio-custom-header: user-defined-value
",
    ));
    let echo = ok_echo(&mesh.call(&Req::get("http://b/")), "added header");
    assert_eq!(
        echo.header("Istio-Custom-Header"),
        ["user-defined-value"],
        "{echo:?}"
    );
}

/// routing.go, virtualServiceCases: "set header".
#[test]
fn set_header() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
    headers:
      request:
        set:
          x-custom: some-value
",
    ));
    // The client's own value is replaced, not kept beside the new one.
    let echo = ok_echo(
        &mesh.call(&Req::get("http://b/").header("X-Custom", "client-value")),
        "set header",
    );
    assert_eq!(echo.header("X-Custom"), ["some-value"], "{echo:?}");
}

/// The Host the echo server received, for the authority cases.
fn host_after(mesh: &Mesh, vs_spec: &str) -> String {
    mesh.apply(&virtual_service("default", vs_spec));
    ok_echo(&mesh.call(&Req::get("http://b/")), "authority case").host
}

/// routing.go, virtualServiceCases: "set authority header".
#[test]
fn set_authority_header() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    let host = host_after(
        &mesh,
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
    headers:
      request:
        set:
          :authority: my-custom-authority
",
    );
    assert_eq!(host, "my-custom-authority", "{}", mesh.log("a"));
}

/// routing.go, virtualServiceCases: "set host header in destination".
#[test]
fn set_host_header_in_destination() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    let host = host_after(
        &mesh,
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      headers:
        request:
          set:
            Host: my-custom-authority
",
    );
    assert_eq!(host, "my-custom-authority");
}

/// routing.go, virtualServiceCases: "set authority header in destination".
#[test]
fn set_authority_header_in_destination() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    let host = host_after(
        &mesh,
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      headers:
        request:
          set:
            :authority: my-custom-authority
",
    );
    assert_eq!(host, "my-custom-authority");
}

/// routing.go, virtualServiceCases: "set host header in route and destination".
#[test]
fn set_host_header_in_route_and_destination() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    let host = host_after(
        &mesh,
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      headers:
        request:
          set:
            Host: dest-authority
    headers:
      request:
        set:
          :authority: route-authority
",
    );
    assert_eq!(host, "route-authority");
}

/// routing.go, virtualServiceCases: "set host header in route and multi destination".
#[test]
fn set_host_header_in_route_and_multi_destination() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      headers:
        request:
          set:
            Host: dest-authority
      weight: 50
    - destination:
        host: b
      weight: 50
    headers:
      request:
        set:
          :authority: route-authority
",
    ));
    // Istio sends one call; both destinations must give the route's authority, so
    // several calls make sure both were taken.
    for i in 0..10 {
        let echo = ok_echo(&mesh.call(&Req::get("http://b/")), "multi destination");
        assert_eq!(echo.host, "route-authority", "call {i}");
    }
}

/// routing.go, virtualServiceCases: "set host header multi destination".
#[test]
fn set_host_header_multi_destination() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      headers:
        request:
          set:
            Host: dest-authority
      weight: 50
    - destination:
        host: b
      headers:
        request:
          set:
            Host: dest-authority
      weight: 50
",
    ));
    for i in 0..10 {
        let echo = ok_echo(&mesh.call(&Req::get("http://b/")), "multi destination");
        assert_eq!(echo.host, "dest-authority", "call {i}");
    }
}

/// routing.go, virtualServiceCases: "redirect".
#[test]
fn redirect() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        exact: /foo
    redirect:
      uri: /new/path
  - match:
    - uri:
        exact: /new/path
    route:
    - destination:
        host: b
",
    ));
    let reply = mesh.call(&Req::get("http://b/foo?key=value").follow_redirects());
    let echo = ok_echo(&reply, "redirect, followed");
    assert_eq!(echo.url, "/new/path?key=value", "{reply:?}");
}

/// routing.go, virtualServiceCases: "redirect port and scheme".
#[test]
fn redirect_port_and_scheme() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        exact: /foo
    redirect:
      derivePort: FROM_REQUEST_PORT
      scheme: https
",
    ));
    let reply = mesh.call(&Req::get("http://b/foo"));
    assert_eq!(reply.status, 301, "{reply:?}");
    // The request came in on port 80: with the scheme changed to https, that port is
    // no longer the default one and is written out.
    assert_eq!(
        reply.header("location"),
        Some("https://b:80/foo"),
        "{reply:?}"
    );
}

/// routing.go, virtualServiceCases: "redirect request port" and its four calls. Istio's
/// calls pick the port (80 or b's second port, 85) and the Host header separately; a
/// workload here reaches its sidecar as an HTTP proxy, where the URL's authority is both,
/// so "non-default" and "non-default with host port" are the same request.
#[test]
fn redirect_request_port() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        exact: /foo
    redirect:
      derivePort: FROM_REQUEST_PORT
",
    ));
    let cases = [
        // "to default": no port, as 80 is http's default.
        ("to default", "http://b/foo", "http://b/foo"),
        // "to default with host port": 80 kept, as the Host header had it.
        (
            "to default with host port",
            "http://b:80/foo",
            "http://b:80/foo",
        ),
        // "non-default": 85 is not http's default.
        ("non-default", "http://b:85/foo", "http://b:85/foo"),
        (
            "non-default with host port",
            "http://b:85/foo",
            "http://b:85/foo",
        ),
    ];
    let mut failures = Vec::new();
    for (name, url, location) in cases {
        let reply = mesh.call(&Req::get(url));
        if reply.status != 301 || reply.header("location") != Some(location) {
            failures.push(format!(
                "{name}: GET {url}: expected 301 to {location}, got {} to {:?}",
                reply.status,
                reply.header("location")
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// routing.go, virtualServiceCases: "redirect prefix_rewrite".
#[test]
fn redirect_prefix_rewrite() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        prefix: /foo/
    redirect:
      prefixRewrite: /new/
  - match:
    - uri:
        prefix: /new/
    route:
    - destination:
        host: b
",
    ));
    let reply = mesh.call(&Req::get("http://b/foo/bar").follow_redirects());
    let echo = ok_echo(&reply, "redirect prefix_rewrite, followed");
    assert_eq!(echo.url, "/new/bar", "{reply:?}");
}

/// Istio's header name made of every special character a header name may contain.
const ABSURD_HEADER: &str = "a!#$%&'*+-.^_`|~z";

/// routing.go, virtualServiceCases: "weird header matches" ("no match" and "match").
#[test]
fn weird_header_matches() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        &format!(
            "  hosts:
  - b
  http:
  - match:
    - headers:
        \"{ABSURD_HEADER}\":
          exact: why
    route:
    - destination:
        host: b
"
        ),
    ));
    let no_match = mesh.call(&Req::get("http://b/"));
    assert_eq!(no_match.status, 404, "no match: {no_match:?}");
    let matched = mesh.call(&Req::get("http://b/").header(ABSURD_HEADER, "why"));
    let echo = ok_echo(&matched, "match");
    assert_eq!(echo.header(ABSURD_HEADER), ["why"]);
}

/// routing.go, virtualServiceCases: "pseudo header matches" ("no match" and "match").
#[test]
fn pseudo_header_matches() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - headers:
        :method:
          exact: GET
    route:
    - destination:
        host: b
",
    ));
    let post = mesh.call(&Req::get("http://b/").method("POST"));
    assert_eq!(post.status, 404, "no match (POST): {post:?}");
    let get = mesh.call(&Req::get("http://b/"));
    assert_eq!(ok_echo(&get, "match (GET)").method, "GET");
}

/// routing.go, virtualServiceCases: "rewrite uri". Istio's client is asked for
/// `/foo?key=value#hash`; a client never sends the fragment, so neither does this one.
#[test]
fn rewrite_uri() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        exact: /foo
    rewrite:
      uri: /new/path
    route:
    - destination:
        host: b
",
    ));
    let echo = ok_echo(
        &mesh.call(&Req::get("http://b/foo?key=value")),
        "rewrite uri",
    );
    assert_eq!(echo.url, "/new/path?key=value");
}

/// routing.go, virtualServiceCases: "rewrite authority".
#[test]
fn rewrite_authority() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        exact: /foo
    rewrite:
      authority: new-authority
    route:
    - destination:
        host: b
",
    ));
    let echo = ok_echo(&mesh.call(&Req::get("http://b/foo")), "rewrite authority");
    assert_eq!(echo.host, "new-authority");
}

/// routing.go, virtualServiceCases: "cors" ("preflight", "get", "get no origin match"),
/// and a GET whose Origin is not allowed.
#[test]
fn cors() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - corsPolicy:
      allowOrigins:
      - exact: cors.com
      allowMethods:
      - POST
      - GET
      allowCredentials: false
      allowHeaders:
      - X-Foo-Bar
      - X-Foo-Baz
      maxAge: \"24h\"
    route:
    - destination:
        host: b
",
    ));
    let preflight = mesh.call(
        &Req::get("http://b/")
            .method("OPTIONS")
            .header("Origin", "cors.com")
            .header("Access-Control-Request-Method", "DELETE"),
    );
    assert_eq!(preflight.status, 200, "preflight: {preflight:?}");
    for (name, value) in [
        ("Access-Control-Allow-Origin", "cors.com"),
        ("Access-Control-Allow-Methods", "POST,GET"),
        ("Access-Control-Allow-Headers", "X-Foo-Bar,X-Foo-Baz"),
        ("Access-Control-Max-Age", "86400"),
    ] {
        assert_eq!(
            preflight.header(name),
            Some(value),
            "preflight {name}: {preflight:?}"
        );
    }

    let get = mesh.call(&Req::get("http://b/").header("Origin", "cors.com"));
    ok_echo(&get, "get");
    assert_eq!(
        get.header("Access-Control-Allow-Origin"),
        Some("cors.com"),
        "get: {get:?}"
    );

    let no_origin = mesh.call(&Req::get("http://b/"));
    ok_echo(&no_origin, "get no origin match");
    assert_eq!(
        no_origin.header("Access-Control-Allow-Origin"),
        None,
        "get no origin match: {no_origin:?}"
    );

    let other_origin = mesh.call(&Req::get("http://b/").header("Origin", "not-cors.com"));
    ok_echo(&other_origin, "get from another origin");
    assert_eq!(
        other_origin.header("Access-Control-Allow-Origin"),
        None,
        "get from another origin: {other_origin:?}"
    );
}

/// routing.go, virtualServiceCases: "retry conditions" (the config is accepted and
/// traffic flows; retries themselves are not exercised, as in Istio).
#[test]
fn retry_conditions() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream,reset-before-request
      retryRemoteLocalities: true
",
    ));
    ok_echo(&mesh.call(&Req::get("http://b/")), "retry conditions");
}

/// routing.go, virtualServiceCases: "fault abort".
#[test]
fn fault_abort() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: 418
",
    ));
    let reply = mesh.call(&Req::get("http://b/"));
    assert_eq!(reply.status, 418, "{reply:?}");
}

/// routing.go, virtualServiceCases: "catch all route short circuit the other routes".
#[test]
fn catch_all_route_short_circuit_the_other_routes() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "default",
        "  hosts:
  - b
  http:
  - match:
    - uri:
        regex: .*
    route:
    - destination:
        host: b
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: 418
  - route:
    - destination:
        host: b
",
    ));
    for path in ["/", "/foo", "/any/path?x=1"] {
        let reply = mesh.call(&Req::get(&format!("http://b{path}")));
        assert_eq!(reply.status, 418, "{path}: {reply:?}");
    }
}

/// 100 calls to `b` split over b, c and d; each count within ± 10 of its weight.
fn shifting(split: [u32; 3]) {
    let mesh = Mesh::start(&[app("a"), app("b"), app("c"), app("d")], &[]);
    mesh.apply(&virtual_service(
        "default",
        &format!(
            "  hosts:
  - b
  http:
  - route:
    - destination:
        host: b
      weight: {}
    - destination:
        host: c
      weight: {}
    - destination:
        host: d
      weight: {}
",
            split[0], split[1], split[2]
        ),
    ));
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..100 {
        let echo = ok_echo(&mesh.call(&Req::get("http://b/")), &format!("call {i}"));
        let service = echo.hostname.split('-').next().unwrap_or("").to_string();
        *counts.entry(service).or_default() += 1;
    }
    eprintln!("split {split:?} over b, c, d: {counts:?}");
    for (service, expected) in ["b", "c", "d"].into_iter().zip(split) {
        let got = counts.get(service).copied().unwrap_or(0);
        assert!(
            got.abs_diff(expected) <= 10,
            "{service}: expected {expected} ± 10 of 100 calls, got {got} ({counts:?})"
        );
    }
}

/// routing.go, virtualServiceCases: "shifting-50" (50/25/25 over three services).
#[test]
fn shifting_50() {
    shifting([50, 25, 25]);
}

/// routing.go, virtualServiceCases: "shifting-80" (80/10/10 over three services).
#[test]
fn shifting_80() {
    shifting([80, 10, 10]);
}

/// The three `withoutHeaders` cases: the rule with `condition` aborts with 403, the
/// next routes to b. `expect` gives the status for `end-user: jason`, for an empty
/// `end-user`, and for no `end-user` header.
fn without_headers_case(condition: &str, expect: [(&str, Option<&str>, u16); 3]) {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&virtual_service(
        "vs",
        &format!(
            "  hosts:
  - b
  http:
  - match:
    - withoutHeaders:
        end-user:
          {condition}
    route:
    - destination:
        host: b
    fault:
      abort:
        percentage:
          value: 100
        httpStatus: 403
  - route:
    - destination:
        host: b
"
        ),
    ));
    let mut failures = Vec::new();
    for (name, value, status) in expect {
        let mut req = Req::get("http://b/foo");
        if let Some(v) = value {
            req = req.header("end-user", v);
        }
        let reply = mesh.call(&req);
        if reply.status != status {
            failures.push(format!("{name}: expected {status}, got {reply:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// routing.go, virtualServiceCases: "without headers".
#[test]
fn without_headers() {
    without_headers_case(
        "exact: jason",
        [
            ("end-user is jason", Some("jason"), 200),
            ("end-user is not jason", Some("not-jason"), 403),
            ("do not have end-user header", None, 403),
        ],
    );
}

/// routing.go, virtualServiceCases: "without headers regex convert to present_match".
#[test]
fn without_headers_regex_convert_to_present_match() {
    without_headers_case(
        "regex: \"*\"",
        [
            ("have end-user header and value", Some("jason"), 200),
            ("have end-user header but value is empty", Some(""), 200),
            ("do not have end-user header", None, 403),
        ],
    );
}

/// routing.go, virtualServiceCases: "without headers regex match any string".
#[test]
fn without_headers_regex_match_any_string() {
    without_headers_case(
        "regex: .*",
        [
            ("have end-user header and value", Some("jason"), 200),
            ("have end-user header but value is empty", Some(""), 200),
            ("do not have end-user header", None, 200),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// gatewayCases
// ---------------------------------------------------------------------------------------

fn http_gateway(tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - \"*\"
{tls}"
    )
}

/// routing.go, gatewayCases: "404" (a Gateway for every host, no VirtualService).
#[test]
fn gateway_404() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&http_gateway(""));
    let reply = mesh.call_ingress(&Req::origin("/", "foo.bar"));
    assert_eq!(reply.status, 404, "{reply:?}");
}

/// routing.go, gatewayCases: "https redirect" (a Gateway server with
/// `tls.httpsRedirect`, no VirtualService, called with the service's FQDN as Host).
#[test]
fn https_redirect() {
    let mesh = Mesh::start(&[app("a"), app("b")], &[]);
    mesh.apply(&http_gateway("    tls:\n      httpsRedirect: true\n"));
    let host = format!("b.{NS}.svc.cluster.local");
    let reply = mesh.call_ingress(&Req::origin("/", &host));
    assert_eq!(reply.status, 301, "{reply:?}");
    assert_eq!(
        reply.header("location"),
        Some(format!("https://{host}/").as_str()),
        "{reply:?}"
    );
}

// ---------------------------------------------------------------------------------------
// consistentHashCases
// ---------------------------------------------------------------------------------------

/// A Service selecting the pods of b, c and d (as Istio's selects every standard echo
/// pod), so that balancing has several endpoints to choose from.
const CONSISTENT_HASH_SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: consistent-hash
spec:
  selector:
    class: standard
  ports:
  - name: http
    port: 80
    targetPort: 8080
";

fn consistent_hash_mesh(hash: Option<&str>) -> Mesh {
    let mesh = Mesh::start(&[app("a"), app("b"), app("c"), app("d")], &[]);
    let mut yaml = CONSISTENT_HASH_SERVICE.to_string();
    if let Some(hash) = hash {
        yaml.push_str(&format!(
            "---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: consistent-hash
spec:
  host: consistent-hash
  trafficPolicy:
    loadBalancer:
      consistentHash:
        {hash}
"
        ));
    }
    mesh.apply(&yaml);
    mesh
}

/// The replicas that answered 10 calls, each call built by `req` (given the earlier
/// answers, for cookies).
fn hostnames_of_ten_calls(mesh: &Mesh, req: impl Fn(&[Reply]) -> Req) -> Vec<String> {
    let mut names = Vec::new();
    let mut replies: Vec<Reply> = Vec::new();
    for i in 0..10 {
        let reply = mesh.call(&req(&replies));
        names.push(ok_echo(&reply, &format!("call {i}")).hostname);
        replies.push(reply);
    }
    names
}

fn hash_call(_: &[Reply]) -> Req {
    Req::get("http://consistent-hash/?some-query-param=bar").header("x-some-header", "baz")
}

fn assert_one_host(names: &[String]) {
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), 1, "expected one destination, got {names:?}");
}

/// routing.go, consistentHashCases: "no consistent" (without a hash policy the calls
/// spread, which shows the other cases' stickiness is not an accident).
#[test]
fn no_consistent() {
    let mesh = consistent_hash_mesh(None);
    let names = hostnames_of_ten_calls(&mesh, hash_call);
    let unique: BTreeSet<&String> = names.iter().collect();
    assert!(
        unique.len() > 1,
        "expected an inconsistent hash, but all calls went to {unique:?}"
    );
}

/// routing.go, consistentHashCases: "source ip".
#[test]
fn source_ip() {
    let mesh = consistent_hash_mesh(Some("useSourceIp: true"));
    assert_one_host(&hostnames_of_ten_calls(&mesh, hash_call));
}

/// routing.go, consistentHashCases: "query param".
#[test]
fn query_param() {
    let mesh = consistent_hash_mesh(Some("httpQueryParameterName: some-query-param"));
    assert_one_host(&hostnames_of_ten_calls(&mesh, hash_call));
}

/// routing.go, consistentHashCases: "http header".
#[test]
fn http_header() {
    let mesh = consistent_hash_mesh(Some("httpHeaderName: x-some-header"));
    assert_one_host(&hostnames_of_ten_calls(&mesh, hash_call));
}

/// routing.go, consistentHashCases: "http cookie with ttl" (skipped in Istio, whose
/// framework cannot send the cookie back, istio/istio#48156; this client keeps the
/// cookie the first answer sets, as a browser would, and sends it from then on).
#[test]
fn http_cookie_with_ttl() {
    let mesh = consistent_hash_mesh(Some(
        "httpCookie:\n          name: session-cookie\n          ttl: 3600s",
    ));
    let names = hostnames_of_ten_calls(&mesh, |earlier| {
        let mut req = hash_call(earlier);
        let cookie = earlier
            .iter()
            .find_map(|r| r.header("set-cookie"))
            .and_then(|c| c.split(';').next())
            .map(str::to_string);
        if let Some(c) = cookie {
            req = req.header("Cookie", &c);
        }
        req
    });
    assert_one_host(&names);
}

/// routing.go, consistentHashCases: "http cookie without ttl" (skipped in Istio, as
/// above): the client always sends `session-cookie=somecookie`.
#[test]
fn http_cookie_without_ttl() {
    let mesh = consistent_hash_mesh(Some("httpCookie:\n          name: session-cookie"));
    let names = hostnames_of_ten_calls(&mesh, |earlier| {
        hash_call(earlier).header("Cookie", "session-cookie=somecookie")
    });
    assert_one_host(&names);
}

// ---------------------------------------------------------------------------------------
// TestExternalService
// ---------------------------------------------------------------------------------------

/// routing.go, TestExternalService: a Sidecar makes workload `a` REGISTRY_ONLY while the
/// mesh is ALLOW_ANY. `a` reaches the external host that a ServiceEntry lists ("traffic
/// from outboundTrafficPolicy REGISTRY_ONLY to allowed host"); `b`, still ALLOW_ANY,
/// reaches it and a host nobody listed ("traffic from outboundTrafficPolicy
/// PASS_THROUGH to any host"). That `a` cannot reach the unlisted host is what makes
/// the Sidecar's policy visible. The external hosts are echo stand-ins.
#[test]
fn external_service() {
    let mesh = Mesh::start(
        &[app("a"), app("b")],
        &[
            "--set",
            "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
            "--stand-in",
            "external.example.com:80=echo",
            "--stand-in",
            "unlisted.example.com:80=echo",
        ],
    );
    mesh.apply(&format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-service
spec:
  hosts:
  - external.example.com
  location: MESH_EXTERNAL
  resolution: DNS
  ports:
  - number: 80
    name: http
    protocol: HTTP
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: restrict-external-service
  namespace: {NS}
spec:
  workloadSelector:
    labels:
      app: a
  outboundTrafficPolicy:
    mode: \"REGISTRY_ONLY\"
"
    ));
    let cases = [
        ("a", "external.example.com", 200),
        ("b", "external.example.com", 200),
        ("b", "unlisted.example.com", 200),
        ("a", "unlisted.example.com", 502),
    ];
    let mut failures = Vec::new();
    for (from, host, status) in cases {
        let reply = mesh.call_from(from, &Req::get(&format!("http://{host}/")));
        if reply.status != status || (status == 200 && reply.try_echo().is_none()) {
            failures.push(format!(
                "{from} to {host}: expected {status}, got {reply:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------------
// trafficLoopCases
// ---------------------------------------------------------------------------------------

/// routing.go, trafficLoopCases: "15001". Istio calls a pod on its sidecar's outbound
/// capture port and expects an error, not a request that goes round the sidecar until
/// something gives. Here the outbound port is the sidecar address in `HTTP_PROXY`: `a`
/// calls b's and its own through its sidecar (ALLOW_ANY, so the unknown address is
/// passed through). Each call must fail promptly, and the mesh must still serve.
#[test]
fn traffic_loop_15001() {
    let mesh = Mesh::start(
        &[app("a"), app("b")],
        &["--set", "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY"],
    );
    for target in [mesh.sidecar_of("b"), mesh.sidecar_of("a")] {
        let started = Instant::now();
        let reply = mesh.call(&Req::get(&format!("http://{target}/")));
        assert!(
            reply.status >= 400,
            "a call to the sidecar address {target} must fail: {reply:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the call to {target} took {:?}",
            started.elapsed()
        );
    }
    ok_echo(&mesh.call(&Req::get("http://b/")), "the mesh still serves");
}
