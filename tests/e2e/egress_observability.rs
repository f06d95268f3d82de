//! Issue 4, items 3 and 5, with real traffic: enrichment at the egress gateway (an
//! Authorization header read from a file or meshbox's environment, never shown), and
//! seeing egress (refusals logged with host and port; Istio's standard metrics with
//! BlackHoleCluster and PassthroughCluster).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::common::MeshProcess;

/// The stand-in `echo` at api.example.test:80 answers with the headers it received.
const EGRESS_VIA_GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts:
  - api.example.test
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - api.example.test
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-through-egress-gateway
spec:
  hosts:
  - api.example.test
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        port:
          number: 80
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    headers:
      request:
        set:
          Authorization: \"Bearer ${file:TOKEN_FILE}\"
        add:
          X-Api-Key: \"${env:MESHBOX_TEST_API_KEY}\"
    route:
    - destination:
        host: api.example.test
        port:
          number: 80
";

fn start_mesh(env: &[(&str, &str)]) -> MeshProcess {
    MeshProcess::start_with_env(
        &[
            "-n",
            "dev-service-mesh",
            "--set",
            "meshConfig.accessLogFile=/dev/stdout",
            "--set",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "--set",
            "components.egressGateways[0].name=istio-egressgateway",
            "--set",
            "components.egressGateways[0].enabled=true",
            "--stand-in",
            "api.example.test:80=echo",
            "--stand-in",
            "open.example.test:80=echo",
        ],
        env,
    )
}

fn write_file(mesh: &MeshProcess, name: &str, content: &str) -> String {
    let path = mesh.home().join(name);
    std::fs::write(&path, content).expect("write");
    path.display().to_string()
}

fn apply_yaml(mesh: &MeshProcess, name: &str, yaml: &str) -> std::process::Output {
    let path = write_file(mesh, name, yaml);
    mesh.run(&["apply", "-n", "dev-service-mesh", "-f", &path])
}

/// The workload's HTTP_PROXY: its sidecar's outbound listener.
fn sidecar_of(mesh: &MeshProcess, deployment: &str) -> String {
    mesh.ok(&[
        "exec",
        deployment,
        "-n",
        "dev-service-mesh",
        "--",
        "printenv",
        "HTTP_PROXY",
    ])
    .trim()
    .trim_start_matches("http://")
    .trim_end_matches('/')
    .to_string()
}

/// A workload's request as it leaves the workload: absolute-form URI through its
/// sidecar, with exactly these headers. Returns the status and the raw response.
fn via_proxy(proxy: &str, host: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).expect("connect to the sidecar");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    write!(
        s,
        "GET http://{host}{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn wait_via_proxy(
    proxy: &str,
    host: &str,
    path: &str,
    accept: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, text) = via_proxy(proxy, host, path);
        if accept(status, &text) {
            return (status, text);
        }
        assert!(
            Instant::now() < deadline,
            "never the expected answer; last: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_egress_gateway_adds_a_secret_header_that_the_workload_never_sees_or_shows() {
    let mesh = start_mesh(&[("MESHBOX_TEST_API_KEY", "key-from-env-7781")]);
    mesh.apply(&["service-c-deployment.yml"]);
    let token = write_file(&mesh, "token", "s3cr3t-token-4242\n");
    let yaml = EGRESS_VIA_GATEWAY.replace("TOKEN_FILE", &token);

    // A file that does not exist is an error at apply time naming file, document and field.
    let missing = yaml.replace(&token, "/nonexistent/meshbox-token");
    let out = apply_yaml(&mesh, "missing.yaml", &missing);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing.yaml")
            && err.contains("VirtualService/api-through-egress-gateway")
            && err.contains("spec.http[1].headers.request.set.Authorization")
            && err.contains("/nonexistent/meshbox-token"),
        "{err}"
    );

    let out = apply_yaml(&mesh, "api.yaml", &yaml);
    assert!(out.status.success(), "{out:?}");
    let proxy = sidecar_of(&mesh, "service-c-deployment");
    let (_, text) = wait_via_proxy(&proxy, "api.example.test", "/v1/things", |s, _| s == 200);
    // What the upstream received: the secret from the file and the one from the env.
    assert!(
        text.contains("RequestHeader=authorization:Bearer s3cr3t-token-4242"),
        "{text}"
    );
    assert!(
        text.contains("RequestHeader=x-api-key:key-from-env-7781"),
        "{text}"
    );
    // The workload's own request (above, exactly as sent) had no Authorization; nor
    // does what its sidecar forwarded to the gateway: the echo saw one value only.
    assert_eq!(text.matches("RequestHeader=authorization:").count(), 1);

    // Never shown: get -o yaml, proxy-config, trace, logs.
    let secret = "s3cr3t-token-4242";
    let shown = [
        mesh.ok(&["get", "vs", "-n", "dev-service-mesh", "-o", "yaml"]),
        mesh.ok(&[
            "proxy-config",
            "all",
            "istio-egressgateway",
            "-n",
            "istio-system",
            "-o",
            "json",
        ]),
        mesh.ok(&[
            "trace",
            "--from",
            "service-c-deployment",
            "-n",
            "dev-service-mesh",
            "http://api.example.test/v1/things",
        ]),
        mesh.logs("istio-egressgateway", "istio-system"),
        mesh.logs("service-c-deployment", "dev-service-mesh"),
    ];
    for s in &shown {
        assert!(
            !s.contains(secret) && !s.contains("key-from-env-7781"),
            "{s}"
        );
    }
    assert!(shown[2].contains("(secret redacted)"), "{}", shown[2]);

    // Re-read on each config change.
    std::fs::write(&token, "rotated-token-9999\n").expect("rotate");
    let out = apply_yaml(&mesh, "api.yaml", &yaml);
    assert!(out.status.success(), "{out:?}");
    wait_via_proxy(&proxy, "api.example.test", "/v1/things", |_, t| {
        t.contains("RequestHeader=authorization:Bearer rotated-token-9999")
    });
}

/// One sample's value from a Prometheus exposition: the first line of `name` whose
/// labels include all of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn refusals_name_host_and_port_and_metrics_count_blackhole_and_passthrough() {
    let mesh = start_mesh(&[("MESHBOX_TEST_API_KEY", "k")]);
    let printed = mesh.stdout.lock().unwrap().join("\n");
    let list_url = printed
        .lines()
        .find_map(|l| l.split("the list: http://").nth(1))
        .and_then(|r| r.split(',').next())
        .expect("meshbox up prints the metrics address")
        .to_string();
    let admin = list_url.split('/').next().unwrap().to_string();
    mesh.apply(&["service-c-deployment.yml"]);
    let token = write_file(&mesh, "token", "t\n");
    let out = apply_yaml(
        &mesh,
        "api.yaml",
        &EGRESS_VIA_GATEWAY.replace("TOKEN_FILE", &token),
    );
    assert!(out.status.success(), "{out:?}");
    let proxy = sidecar_of(&mesh, "service-c-deployment");

    // Through the egress gateway.
    wait_via_proxy(&proxy, "api.example.test", "/", |s, _| s == 200);
    // REGISTRY_ONLY refuses an unknown host: 502, logged with host:port.
    let (status, _) = via_proxy(&proxy, "open.example.test", "/blocked");
    assert_eq!(status, 502);
    let log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("/blocked")
    });
    let line = log.lines().find(|l| l.contains("/blocked")).unwrap();
    assert!(line.contains("\"open.example.test:80\""), "{line}");
    assert!(line.contains("block_all"), "{line}");

    // The same workload under ALLOW_ANY (a Sidecar's outboundTrafficPolicy): passthrough.
    let out = apply_yaml(
        &mesh,
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
",
    );
    assert!(out.status.success(), "{out:?}");
    wait_via_proxy(&proxy, "open.example.test", "/open", |s, _| s == 200);

    // `meshbox metrics` lists the scrape URLs; one per proxy.
    let listed = mesh.ok(&["metrics"]);
    assert!(
        listed.contains(&format!(
            "http://{admin}/stats/prometheus/dev-service-mesh/service-c-deployment-"
        )),
        "{listed}"
    );
    assert!(
        listed.contains("/stats/prometheus/istio-system/istio-egressgateway-"),
        "{listed}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let sidecar = loop {
        let text = mesh.ok(&["metrics", "service-c-deployment", "-n", "dev-service-mesh"]);
        if text.contains("PassthroughCluster") && text.contains("BlackHoleCluster") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let source = [
        "reporter=\"source\"",
        "source_workload=\"service-c-deployment\"",
        "source_workload_namespace=\"dev-service-mesh\"",
        "source_app=\"service-c-app\"",
        "source_version=\"v1\"",
        "request_protocol=\"http\"",
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        source
            .iter()
            .copied()
            .chain(extra.iter().copied())
            .collect()
    };
    let blocked = sample(
        &sidecar,
        "istio_requests_total",
        &with(&[
            "destination_service_name=\"BlackHoleCluster\"",
            "response_code=\"502\"",
        ]),
    );
    assert_eq!(blocked, Some(1.0), "{sidecar}");
    let passed = sample(
        &sidecar,
        "istio_requests_total",
        &with(&[
            "destination_service_name=\"PassthroughCluster\"",
            "response_code=\"200\"",
        ]),
    );
    assert!(passed >= Some(1.0), "{sidecar}");
    let to_gateway = sample(
        &sidecar,
        "istio_requests_total",
        &with(&[
            "destination_workload=\"istio-egressgateway\"",
            "destination_workload_namespace=\"istio-system\"",
            "destination_service=\"istio-egressgateway.istio-system.svc.cluster.local\"",
            "destination_service_name=\"istio-egressgateway\"",
            "destination_service_namespace=\"istio-system\"",
            "response_code=\"200\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"unknown\"",
        ]),
    );
    assert!(to_gateway >= Some(1.0), "{sidecar}");
    assert!(
        sidecar.contains("# TYPE istio_request_duration_milliseconds histogram"),
        "{sidecar}"
    );
    assert!(
        sidecar.contains("istio_request_duration_milliseconds_bucket{"),
        "{sidecar}"
    );
    assert!(sidecar.contains("istio_request_bytes_count{"), "{sidecar}");
    assert!(sidecar.contains("istio_response_bytes_sum{"), "{sidecar}");

    // The gateway reports as source, its destination the external service.
    let gateway = mesh.ok(&["metrics", "istio-egressgateway", "-n", "istio-system"]);
    let out_of_mesh = sample(
        &gateway,
        "istio_requests_total",
        &[
            "reporter=\"source\"",
            "source_workload=\"istio-egressgateway\"",
            "destination_service=\"api.example.test\"",
            "response_code=\"200\"",
        ],
    );
    assert!(out_of_mesh >= Some(1.0), "{gateway}");

    // Inside the mesh: the caller's sidecar reports as source, naming the workload
    // behind the endpoint; the callee's inbound listener reports as destination.
    mesh.apply(&["service-c-srv.yml"]);
    wait_via_proxy(&proxy, "service-c-srv", "/", |s, _| s == 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = mesh.ok(&["metrics", "service-c-deployment", "-n", "dev-service-mesh"]);
        let outbound = sample(
            &text,
            "istio_requests_total",
            &[
                "reporter=\"source\"",
                "destination_workload=\"service-c-deployment\"",
                "destination_app=\"service-c-app\"",
                "destination_version=\"v1\"",
                "destination_service_name=\"service-c-srv\"",
                "destination_service_namespace=\"dev-service-mesh\"",
            ],
        );
        let inbound = sample(
            &text,
            "istio_requests_total",
            &[
                "reporter=\"destination\"",
                "source_workload=\"unknown\"",
                "destination_workload=\"service-c-deployment\"",
                "destination_workload_namespace=\"dev-service-mesh\"",
                "response_code=\"200\"",
                "connection_security_policy=\"none\"",
            ],
        );
        if outbound >= Some(1.0) && inbound >= Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refused_and_passed_tunnels_are_counted_as_tcp_connections() {
    let mesh = start_mesh(&[("MESHBOX_TEST_API_KEY", "k")]);
    mesh.apply(&["service-c-deployment.yml"]);
    let proxy = sidecar_of(&mesh, "service-c-deployment");
    // REGISTRY_ONLY: CONNECT to an unlisted host is refused and logged with host:port.
    let mut s = TcpStream::connect(&proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "CONNECT unlisted.example.test:8443 HTTP/1.1\r\nHost: unlisted.example.test:8443\r\n\r\n"
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 502"));
    drop(s);
    let log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("CONNECT")
    });
    assert!(log.contains("\"unlisted.example.test:8443\""), "{log}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = mesh.ok(&["metrics", "service-c-deployment", "-n", "dev-service-mesh"]);
        let labels = [
            "reporter=\"source\"",
            "destination_service=\"unlisted.example.test:8443\"",
            "destination_service_name=\"BlackHoleCluster\"",
            "request_protocol=\"tcp\"",
        ];
        let opened = sample(&text, "istio_tcp_connections_opened_total", &labels);
        let closed = sample(&text, "istio_tcp_connections_closed_total", &labels);
        if opened == Some(1.0) && closed == Some(1.0) {
            assert!(
                text.lines()
                    .filter(|l| l.starts_with("istio_tcp_"))
                    .all(|l| !l.contains("response_code")),
                "TCP metrics carry no response_code: {text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // ALLOW_ANY (the workload's Sidecar): the tunnel goes through PassthroughCluster.
    let out = apply_yaml(
        &mesh,
        "sidecar.yaml",
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
",
    );
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(&proxy).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        write!(
            s,
            "CONNECT open.example.test:80 HTTP/1.1\r\nHost: open.example.test:80\r\n\r\n"
        )
        .unwrap();
        let n = s.read(&mut buf).unwrap_or(0);
        if String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            write!(
                s,
                "GET /tunnelled HTTP/1.1\r\nHost: open.example.test\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            assert!(String::from_utf8_lossy(&rest).contains("/tunnelled"));
            break;
        }
        assert!(Instant::now() < deadline, "CONNECT never allowed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = mesh.ok(&["metrics", "service-c-deployment", "-n", "dev-service-mesh"]);
        let labels = [
            "reporter=\"source\"",
            "destination_service_name=\"PassthroughCluster\"",
            "request_protocol=\"tcp\"",
        ];
        let closed = sample(&text, "istio_tcp_connections_closed_total", &labels);
        let sent = sample(&text, "istio_tcp_sent_bytes_total", &labels);
        let received = sample(&text, "istio_tcp_received_bytes_total", &labels);
        if closed == Some(1.0) {
            assert_eq!(
                sample(&text, "istio_tcp_connections_opened_total", &labels),
                Some(1.0)
            );
            assert!(sent > Some(0.0) && received > Some(0.0), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dns_failures_and_gateway_route_misses_are_logged_with_host_and_port() {
    let mesh = start_mesh(&[("MESHBOX_TEST_API_KEY", "k")]);
    mesh.apply(&["service-c-deployment.yml"]);
    let proxy = sidecar_of(&mesh, "service-c-deployment");
    // A name no DNS knows: 503 DF, the authority with its port.
    let (status, _) = via_proxy(&proxy, "nowhere.invalid", "/df");
    assert_eq!(status, 503);
    let log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("/df")
    });
    let line = log.lines().find(|l| l.contains("/df")).unwrap();
    assert!(
        line.contains(" DF ") && line.contains("\"nowhere.invalid:80\""),
        "{line}"
    );
    // The ingress gateway with no route for the Host: 404 NR, host and port logged.
    let mut s = TcpStream::connect(&mesh.gateway_url).expect("connect to the gateway");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET /nr HTTP/1.1\r\nHost: nobody.example.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let status: u16 = String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert_eq!(status, 404);
    let log = mesh.wait_for_log("istio-ingressgateway", "istio-system", |l| {
        l.contains("/nr")
    });
    let line = log.lines().find(|l| l.contains("/nr")).unwrap();
    assert!(
        line.contains(" NR ") && line.contains("\"nobody.example.test:80\""),
        "{line}"
    );
}
