//! The Sidecar resource with real traffic through a running mesh: Istio's
//! "externalservice" case (tests/integration/pilot: REGISTRY_ONLY through a Sidecar
//! for one workload, ALLOW_ANY for another, the external host reached through a
//! ServiceEntry once it is registered), and egress hosts that make a service invisible
//! to one workload while the others still reach it.

use crate::common;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::MeshProcess;

const NS: &str = "dev-service-mesh";

/// Two Deployments of the built-in ServiceC (which calls worldtimeapi.org), each
/// behind a Service, reachable through the ingress gateway at /restricted and /open.
const TWO_SERVICE_CS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: restricted-c
spec:
  replicas: 1
  selector:
    matchLabels: {app: restricted-c}
  template:
    metadata:
      labels: {app: restricted-c}
    spec:
      containers:
      - name: app
        image: meshbox/service-c
        ports:
        - containerPort: 8083
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: open-c
spec:
  replicas: 1
  selector:
    matchLabels: {app: open-c}
  template:
    metadata:
      labels: {app: open-c}
    spec:
      containers:
      - name: app
        image: meshbox/service-c
        ports:
        - containerPort: 8083
---
apiVersion: v1
kind: Service
metadata:
  name: restricted-c
spec:
  selector: {app: restricted-c}
  ports:
  - {port: 80, name: http, targetPort: 8083}
---
apiVersion: v1
kind: Service
metadata:
  name: open-c
spec:
  selector: {app: open-c}
  ports:
  - {port: 80, name: http, targetPort: 8083}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: edge
spec:
  hosts: ['*']
  gateways: [edge]
  http:
  - match:
    - uri: {exact: /restricted}
    rewrite: {uri: /}
    route:
    - destination: {host: restricted-c}
  - match:
    - uri: {exact: /open}
    rewrite: {uri: /}
    route:
    - destination: {host: open-c}
";

/// REGISTRY_ONLY for the restricted workload only.
const RESTRICTED_REGISTRY_ONLY: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: restricted
spec:
  workloadSelector:
    labels: {app: restricted-c}
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
";

/// The same, and its egress hosts import only the installed gateways' namespace.
const RESTRICTED_ISTIO_SYSTEM_ONLY: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: restricted
spec:
  workloadSelector:
    labels: {app: restricted-c}
  egress:
  - hosts: ['istio-system/*']
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
";

const WORLDTIME_SE: &str = "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: worldtime
spec:
  hosts: [worldtimeapi.org]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
  location: MESH_EXTERNAL
";

const ZONES: &str = "Received response from worldtimeapi.org: Europe/Amsterdam";
const REFUSED: &str = "Calling worldtimeapi.org API... 502 Bad Gateway: [no body]";

/// Writes YAML to a file of its own and applies it in dev-service-mesh.
fn apply_yaml(mesh: &MeshProcess, dir: &tempfile::TempDir, name: &str, yaml: &str) -> String {
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    mesh.ok(&["apply", "-n", NS, "-f", path.to_str().unwrap()])
}

/// Polls `GET path` at the ingress gateway until the body contains `needle`.
fn wait_for_body(mesh: &MeshProcess, path: &str, needle: &str) -> String {
    mesh.wait_for(path, |status, body| status == 200 && body.contains(needle))
        .1
}

/// Asserts that `GET path` keeps answering with `needle` (a few calls, to be sure a
/// refusal is not a race with the config push).
fn always(mesh: &MeshProcess, path: &str, needle: &str) {
    for _ in 0..5 {
        let (status, body) = mesh.get(path);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains(needle), "GET {path}: {body}");
    }
}

#[test]
fn externalservice_registry_only_through_a_sidecar_for_one_workload_allow_any_for_another() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::start(&[
        "-n",
        NS,
        "--seed",
        "7",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
    ]);
    apply_yaml(&mesh, &dir, "apps.yaml", TWO_SERVICE_CS);
    wait_for_body(&mesh, "/restricted", ZONES);
    wait_for_body(&mesh, "/open", ZONES);

    // The Sidecar makes the restricted workload REGISTRY_ONLY: worldtimeapi.org is in
    // no registry, so its sidecar's block_all answers 502; the open workload is still
    // ALLOW_ANY and passes through to the stand-in.
    let out = apply_yaml(&mesh, &dir, "sidecar.yaml", RESTRICTED_REGISTRY_ONLY);
    assert!(
        !out.contains("not enforced"),
        "a Sidecar with selector and outboundTrafficPolicy is enforced: {out}"
    );
    wait_for_body(&mesh, "/restricted", REFUSED);
    always(&mesh, "/restricted", REFUSED);
    always(&mesh, "/open", ZONES);
    mesh.wait_for_log("restricted-c", NS, |l| {
        l.lines().any(|line| {
            line.contains("\"GET /api/timezone/Europe HTTP/1.1\" 502")
                && line.ends_with(" block_all")
        })
    });
    mesh.wait_for_log("open-c", NS, |l| l.contains("PassthroughCluster"));

    // A ServiceEntry registers the host: REGISTRY_ONLY lets it out through its cluster.
    apply_yaml(&mesh, &dir, "se.yaml", WORLDTIME_SE);
    wait_for_body(&mesh, "/restricted", ZONES);
    mesh.wait_for_log("restricted-c", NS, |l| {
        l.contains("outbound|80||worldtimeapi.org")
    });

    // Egress hosts that leave the ServiceEntry's namespace out hide it again from the
    // restricted workload only.
    apply_yaml(&mesh, &dir, "sidecar.yaml", RESTRICTED_ISTIO_SYSTEM_ONLY);
    wait_for_body(&mesh, "/restricted", REFUSED);
    always(&mesh, "/open", ZONES);
    mesh.wait_for_log("open-c", NS, |l| {
        l.contains("outbound|80||worldtimeapi.org")
    });

    // Without the Sidecar the mesh's ALLOW_ANY applies again.
    let path = dir.path().join("sidecar.yaml");
    mesh.ok(&["delete", "-n", NS, "-f", path.to_str().unwrap()]);
    wait_for_body(&mesh, "/restricted", ZONES);
}

const HIDE_PRODUCER_FROM_SERVICE_A: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: service-a
spec:
  workloadSelector:
    labels: {app: service-a-app}
  egress:
  - hosts: ['istio-system/*']
";

const SHOW_PRODUCER_TO_SERVICE_A: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: service-a
spec:
  workloadSelector:
    labels: {app: service-a-app}
  egress:
  - hosts:
    - istio-system/*
    - ./producer-internal-host.dev-service-mesh.svc.cluster.local
";

#[test]
fn egress_hosts_make_a_service_invisible_to_one_workload() {
    let dir = tempfile::tempdir().unwrap();
    let mesh = MeshProcess::start(&[
        "-n",
        NS,
        "--seed",
        "7",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
    ]);
    mesh.apply(&common::course(&[
        &common::COURSE_START,
        &common::SERVICE_C,
    ]));
    wait_for_body(&mesh, "/service-a", "Hello from ServiceB!");

    // ServiceA's Sidecar imports only istio-system: producer-internal-host is unknown
    // to its sidecar, and REGISTRY_ONLY refuses it.
    apply_yaml(&mesh, &dir, "sidecar.yaml", HIDE_PRODUCER_FROM_SERVICE_A);
    let refused = "Calling Producer Service... 502 Bad Gateway: [no body]";
    wait_for_body(&mesh, "/service-a", refused);
    always(&mesh, "/service-a", refused);
    mesh.wait_for_log("service-a-v1-deployment", NS, |l| {
        l.lines().any(|line| {
            line.contains("\"producer-internal-host:80\"") && line.ends_with(" block_all")
        })
    });
    // Another workload still reaches it (exec runs with the workload's sidecar as
    // HTTP proxy).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = mesh.ok(&[
            "exec",
            "service-c-deployment",
            "-n",
            NS,
            "--",
            "curl",
            "-s",
            "http://producer-internal-host/",
        ]);
        if out.contains("Hello from ServiceB!") {
            break;
        }
        assert!(Instant::now() < deadline, "service-c got: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // `meshbox trace` says why.
    let trace = mesh.ok(&[
        "trace",
        "--from",
        "service-a-v1-deployment",
        "-n",
        NS,
        "http://producer-internal-host/",
    ]);
    assert!(
        trace.contains("egress hosts of Sidecar dev-service-mesh/service-a"),
        "{trace}"
    );

    // Under ALLOW_ANY the hidden Service is still reached the way a pod reaches it
    // without the mesh's routing: cluster DNS and kube-proxy, through
    // PassthroughCluster; so the VirtualService that sends producer traffic to
    // ServiceC does not apply to ServiceA, while it does to the others.
    mesh.ok(&[
        "install",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
    ]);
    mesh.apply(&["producer-internal-host-100-c-vs.yml"]);
    let from_b = "Received response from Producer Service: Hello from ServiceB!";
    wait_for_body(&mesh, "/service-a", from_b);
    always(&mesh, "/service-a", from_b);
    mesh.wait_for_log("service-a-v1-deployment", NS, |l| {
        l.lines().any(|line| {
            line.contains("\"producer-internal-host\"")
                && line.contains(" PassthroughCluster ")
                && line.ends_with(" allow_any")
        })
    });

    // Importing the host makes it visible again, with its VirtualService.
    apply_yaml(&mesh, &dir, "sidecar.yaml", SHOW_PRODUCER_TO_SERVICE_A);
    wait_for_body(
        &mesh,
        "/service-a",
        "Received response from Producer Service: Hello from ServiceC!",
    );
}
