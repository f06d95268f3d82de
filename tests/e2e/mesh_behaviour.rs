//! The local mesh's own promises: hot changes that fail no request, restarts with
//! backoff, owner-only control, IstioOperator documents, delete, exec, stdin, and no
//! orphaned processes.

use crate::common;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{http_get, manifest, meshbox, MeshProcess};

fn start_course_mesh(extra: &[&str]) -> MeshProcess {
    let mut args = vec![
        "-n",
        "dev-service-mesh",
        "--seed",
        "3",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
    ];
    args.extend_from_slice(extra);
    let mesh = MeshProcess::start(&args);
    mesh.apply(&common::course_a_to_b());
    mesh.wait_for("/service-a", |_, b| b.contains("Hello from ServiceB!"));
    mesh
}

/// Pids of processes whose environment has `POD_NAME=<pod>`.
fn pids_of_pod(pod: &str) -> Vec<u32> {
    let needle = format!("POD_NAME={pod}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(entry.path().join("environ")) {
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn pod_name(mesh: &MeshProcess, deployment: &str) -> String {
    let pods = mesh.ok(&["get", "pods", "-n", "dev-service-mesh"]);
    pods.lines()
        .find(|l| l.starts_with(deployment))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no pod of {deployment} in:\n{pods}"))
        .to_string()
}

#[test]
fn config_changes_fail_no_request_in_flight() {
    let mesh = start_course_mesh(&[
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
    ]);
    mesh.apply(&["service-c-deployment.yml", "service-c-srv.yml"]);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let url = mesh.gateway_url.clone();
    let load = {
        let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (status, body) = http_get(&url, "/service-a", &[]);
                total.fetch_add(1, Ordering::Relaxed);
                let good = status == 200
                    && (body.contains("Hello from ServiceB!") || body.contains("Europe/Amsterdam"));
                if !good {
                    eprintln!("failed during a change: {status} {body:?}");
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    for variant in ["10", "50", "90", "100", "50", "10"]
        .iter()
        .cycle()
        .take(12)
    {
        mesh.apply(&[&format!("producer-internal-host-{variant}-c-vs.yml")]);
    }
    mesh.apply(&["producer-internal-host-vs.yml"]);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    assert!(total.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {} requests",
        total.load(Ordering::Relaxed)
    );
    // Routing changes restart nothing.
    let pods = mesh.ok(&["get", "pods", "-n", "dev-service-mesh"]);
    for line in pods.lines().skip(1) {
        assert_eq!(
            line.split_whitespace().nth(3),
            Some("0"),
            "no restarts: {pods}"
        );
    }
}

#[test]
fn a_workload_that_exits_is_restarted_and_serves_again() {
    let mesh = start_course_mesh(&[]);
    let pod = pod_name(&mesh, "service-b-deployment");
    let pids = pids_of_pod(&pod);
    assert_eq!(pids.len(), 1, "one process for {pod}");
    std::process::Command::new("kill")
        .arg("-KILL")
        .arg(pids[0].to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pods = mesh.ok(&["get", "pods", "-n", "dev-service-mesh"]);
        let restarts = pods
            .lines()
            .find(|l| l.starts_with(&pod))
            .and_then(|l| l.split_whitespace().nth(3))
            .unwrap_or("0")
            .to_string();
        if restarts == "1" && pods.contains("Running") {
            break;
        }
        assert!(Instant::now() < deadline, "no restart seen:\n{pods}");
        std::thread::sleep(Duration::from_millis(50));
    }
    mesh.wait_for("/service-a", |_, b| b.contains("Hello from ServiceB!"));
    let new_pids = pids_of_pod(&pod);
    assert_eq!(new_pids.len(), 1);
    assert_ne!(new_pids, pids);
}

#[test]
fn an_app_that_does_not_listen_gives_503_uf() {
    let mesh = start_course_mesh(&[]);
    // A container that runs but never listens on its declared port.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sleeper.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: sleeper\nspec:\n  selector:\n    matchLabels: {app: sleeper}\n  template:\n    metadata:\n      labels: {app: sleeper}\n    spec:\n      containers:\n      - name: main\n        image: busybox\n        command: [sleep, \"600\"]\n        ports:\n        - containerPort: 9000\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: sleeper\nspec:\n  selector: {app: sleeper}\n  ports:\n  - name: http\n    port: 80\n    targetPort: 9000\n",
    )
    .unwrap();
    mesh.ok(&[
        "apply",
        "-n",
        "dev-service-mesh",
        "-f",
        file.to_str().unwrap(),
    ]);
    let proxy = mesh.ok(&[
        "exec",
        "service-a-v1-deployment",
        "-n",
        "dev-service-mesh",
        "--",
        "sh",
        "-c",
        "echo $HTTP_PROXY",
    ]);
    let proxy = proxy.trim().trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&proxy).unwrap();
    stream
        .write_all(b"GET http://sleeper/ HTTP/1.1\r\nHost: sleeper\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.ends_with("upstream connect error or disconnect/reset before headers. reset reason: connection failure"), "{answer}");
    let log = mesh.wait_for_log("sleeper", "dev-service-mesh", |l| l.contains(" 503 UF "));
    assert!(log.contains("inbound|9000||"), "{log}");
}

#[test]
fn control_is_owner_only_and_state_is_private() {
    let mesh = start_course_mesh(&[]);
    let socket = mesh.home().join("control.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode");
    let dir_mode = std::fs::metadata(mesh.home()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "state directory mode");
    // A second mesh in the same state directory is refused.
    let second = meshbox()
        .arg("up")
        .env("MESHBOX_HOME", mesh.home())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
}

#[test]
fn istio_operator_document_installs_the_egress_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let iop = dir.path().join("iop.yaml");
    std::fs::write(
        &iop,
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: course\n  namespace: istio-system\nspec:\n  meshConfig:\n    accessLogFile: /dev/stdout\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n  components:\n    egressGateways:\n    - name: istio-egressgateway\n      enabled: true\n",
    )
    .unwrap();
    let mesh = MeshProcess::start(&[iop.to_str().unwrap()]);
    let pods = mesh.ok(&["get", "pods", "-A"]);
    assert!(
        pods.contains("istio-egressgateway") && pods.contains("istio-ingressgateway"),
        "{pods}"
    );
    // Deleting the IstioOperator returns to the default profile: no egress gateway.
    mesh.ok(&["delete", "-f", iop.to_str().unwrap()]);
    let pods = mesh.ok(&["get", "pods", "-A"]);
    assert!(!pods.contains("istio-egressgateway"), "{pods}");
}

#[test]
fn delete_stdin_and_get_follow_kubectl() {
    let mesh = start_course_mesh(&[]);
    let out = mesh.ok(&["get", "vs", "-n", "dev-service-mesh"]);
    assert!(
        out.starts_with("NAME")
            && out.contains("inbound-to-service-a-vs")
            && out.contains("[\"service-a-gw\"]"),
        "{out}"
    );
    // Applying the same file again changes nothing.
    let again = mesh.ok(&[
        "apply",
        "-n",
        "dev-service-mesh",
        "-f",
        &manifest("serviceA-gw.yml"),
    ]);
    assert_eq!(
        again.trim(),
        "gateway.networking.istio.io/service-a-gw unchanged"
    );
    // `-f -` reads standard input.
    let mut child = meshbox()
        .args(["delete", "-n", "dev-service-mesh", "-f", "-"])
        .env("MESHBOX_HOME", mesh.home())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read_to_string(manifest("inbound-to-serviceA-vs.yml")).unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "virtualservice.networking.istio.io/inbound-to-service-a-vs deleted"
    );
    mesh.wait_for("/service-a", |s, _| s == 404);
    let missing = mesh.run(&[
        "get",
        "vs",
        "inbound-to-service-a-vs",
        "-n",
        "dev-service-mesh",
    ]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"));
}

#[test]
fn exec_runs_inside_the_workload_with_its_sidecar_as_proxy() {
    let mesh = start_course_mesh(&[]);
    let out = mesh.ok(&[
        "exec",
        "service-a-v1-deployment",
        "-n",
        "dev-service-mesh",
        "--",
        "sh",
        "-c",
        "echo $HTTP_PROXY $POD_NAMESPACE",
    ]);
    let mut parts = out.split_whitespace();
    let proxy = parts
        .next()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    assert_eq!(parts.next(), Some("dev-service-mesh"));
    // A request sent the way `curl` in that pod would send it: absolute-form to the sidecar.
    let mut stream = std::net::TcpStream::connect(&proxy).unwrap();
    stream
        .write_all(b"GET http://producer-internal-host/ HTTP/1.1\r\nHost: producer-internal-host\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("Hello from ServiceB!\n"),
        "{answer}"
    );
}

#[test]
fn stopping_the_mesh_leaves_no_process_behind() {
    let mesh = start_course_mesh(&[]);
    let pod = pod_name(&mesh, "service-b-deployment");
    assert_eq!(pids_of_pod(&pod).len(), 1);
    drop(mesh);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_of_pod(&pod).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes of {pod} outlived the mesh"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn install_turns_access_logs_on_and_to_json_without_restarts() {
    // Istio's default profile writes no access log (meshConfig.accessLogFile is empty).
    let mesh = MeshProcess::start(&["-n", "dev-service-mesh"]);
    mesh.apply(&common::course_a_to_b());
    mesh.wait_for("/service-a", |_, b| b.contains("Hello from ServiceB!"));
    assert_eq!(
        mesh.logs("istio-ingressgateway", "istio-system"),
        "",
        "no access log by default"
    );
    mesh.ok(&["install", "--set", "meshConfig.accessLogFile=/dev/stdout"]);
    mesh.get("/service-a");
    mesh.wait_for_log("istio-ingressgateway", "istio-system", |l| {
        l.contains("\"GET /service-a HTTP/1.1\" 200")
    });
    mesh.ok(&[
        "install",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.accessLogEncoding=JSON",
    ]);
    mesh.get("/service-a");
    let log = mesh.wait_for_log("istio-ingressgateway", "istio-system", |l| {
        l.contains("\"response_code\":200")
    });
    let json_line = log.lines().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(json_line).unwrap();
    assert_eq!(v["path"], "/service-a");
    assert_eq!(
        v["upstream_cluster"],
        "outbound|80||service-a-srv.dev-service-mesh.svc.cluster.local"
    );
    let pods = mesh.ok(&["get", "pods", "-n", "dev-service-mesh"]);
    for line in pods.lines().skip(1) {
        assert_eq!(
            line.split_whitespace().nth(3),
            Some("0"),
            "no restarts: {pods}"
        );
    }
}
