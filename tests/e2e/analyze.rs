//! `meshbox analyze` end to end: the real binary on the course's manifests, on
//! deliberately broken files, and against a running mesh.

use crate::common;
use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use crate::common::{manifest, meshbox, MeshProcess};

const NS: &str = "dev-service-mesh";

/// The course's step-5 state: ingress to ServiceA, all traffic to ServiceC, egress
/// through the egress gateway.
fn final_state() -> Vec<&'static str> {
    common::course(&[&common::course_to_c(), &common::WORLDTIME_EGRESS])
}

/// What `istioctl install --set components.egressGateways[0]...` asks for, as a file.
const EGRESS_IOP: &str = "\
apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: course-install
spec:
  meshConfig:
    accessLogFile: /dev/stdout
    outboundTrafficPolicy:
      mode: REGISTRY_ONLY
  components:
    egressGateways:
      - name: istio-egressgateway
        enabled: true
";

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

fn analyze(args: &[String], stdin: Option<&str>) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    let mut child = meshbox()
        .arg("analyze")
        .args(args)
        .env("MESHBOX_HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshbox analyze");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("write stdin");
    drop(input);
    child.wait_with_output().expect("wait for meshbox analyze")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn with_files(files: &[String]) -> Vec<String> {
    let mut args = vec!["-n".to_string(), NS.to_string()];
    for f in files {
        args.push("-f".into());
        args.push(f.clone());
    }
    args
}

#[test]
fn the_course_final_state_is_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files: Vec<String> = final_state().iter().map(|f| manifest(f)).collect();
    files.push(write(dir.path(), "install.yaml", EGRESS_IOP));
    let out = analyze(&with_files(&files), None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "\u{2714} No validation issues found when analyzing namespace: dev-service-mesh.\n"
    );

    // Without the egress gateway installed, its Gateway selects no workload and the
    // route to its Service goes nowhere: istioctl's IST0101, twice.
    files.pop();
    let out = analyze(&with_files(&files), None);
    assert_eq!(out.status.code(), Some(79));
    let gw = manifest("worldtime-gw.yml");
    let vs = manifest("outbound-srv-c-to-worldtime-vs.yml");
    assert_eq!(
        text(&out.stdout),
        format!(
            "Error [IST0101] (Gateway dev-service-mesh/istio-egressgateway {gw}:7) Referenced selector not found: \"istio=egressgateway\"\n\
             Error [IST0101] (VirtualService dev-service-mesh/outbound-srv-c-to-worldtime-vs {vs}:18) Referenced host not found: \"istio-egressgateway.istio-system.svc.cluster.local\"\n"
        )
    );
}

const MISSING_GATEWAY_VS: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: to-b
spec:
  hosts:
    - \"*\"
  gateways:
    - bar
  http:
    - route:
        - destination:
            host: producer-internal-host
            port:
              number: 80
";

const SUBSETS_DR: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: producer
spec:
  host: producer-internal-host
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
";

const CATCH_ALL_FIRST_VS: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: producer-internal-host-vs
spec:
  hosts:
    - producer-internal-host
  http:
    - route:
        - destination:
            host: producer-internal-host
            subset: v1
    - match:
        - uri:
            prefix: /v2
      route:
        - destination:
            host: producer-internal-host
            subset: v2
";

const SCHEMA_ERROR_VS: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: typo
spec:
  hosts:
    - typo.example.com
  http:
    - route:
        - destination:
            host: producer-internal-host
            prot: 80
";

#[test]
fn broken_configs_give_istio_codes_and_exit_79() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = write(dir.path(), "missing-gw.yaml", MISSING_GATEWAY_VS);
    let dr = write(dir.path(), "dr.yaml", SUBSETS_DR);
    let vs = write(dir.path(), "catch-all.yaml", CATCH_ALL_FIRST_VS);
    let files = vec![
        manifest("service-b-deployment.yml"),
        manifest("producer-internal-host.yml"),
        gw.clone(),
        dr.clone(),
        vs.clone(),
        "-".to_string(),
    ];
    let out = analyze(&with_files(&files), Some(SCHEMA_ERROR_VS));
    assert_eq!(
        out.status.code(),
        Some(79),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let expected = [
        format!("Error [IST0101] (VirtualService dev-service-mesh/to-b {gw}:9) Referenced gateway not found: \"bar\""),
        "Error [IST0106] (VirtualService dev-service-mesh/typo STDIN:12) Schema validation error: spec.http[0].route[0].destination.prot: unknown field `prot`, expected one of `host`, `subset`, `port`".to_string(),
        format!("Error [IST0173] (DestinationRule dev-service-mesh/producer {dr}:11) The Subset v2 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."),
        format!("Warning [IST0130] (VirtualService dev-service-mesh/producer-internal-host-vs {vs}:13) VirtualService rule #1 not used (route without matches defined before)."),
        format!("Warning [IST0132] (VirtualService dev-service-mesh/to-b {gw}:9) one or more host [*] defined in VirtualService dev-service-mesh/to-b not found in Gateway dev-service-mesh/bar."),
    ];
    let stdout = text(&out.stdout);
    let got: Vec<&str> = stdout.lines().collect();
    assert_eq!(got, expected, "{stdout}");
    assert_eq!(
        text(&out.stderr),
        "Error: Analyzers found issues when analyzing namespace: dev-service-mesh.\n\
         See https://istio.io/latest/docs/reference/config/analysis for more information about causes and resolutions.\n"
    );

    // Warnings alone do not fail, as with istioctl's default failure threshold.
    let dr_v1 = write(
        dir.path(),
        "dr-v1.yaml",
        &SUBSETS_DR.replace("    - name: v2\n      labels:\n        version: v2\n", ""),
    );
    let vs_v1 = write(
        dir.path(),
        "catch-all-v1.yaml",
        &CATCH_ALL_FIRST_VS.replace("subset: v2", "subset: v1"),
    );
    let files = vec![
        manifest("service-b-deployment.yml"),
        manifest("producer-internal-host.yml"),
        dr_v1,
        vs_v1.clone(),
    ];
    let out = analyze(&with_files(&files), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Warning [IST0130] (VirtualService dev-service-mesh/producer-internal-host-vs {vs_v1}:13) VirtualService rule #1 not used (route without matches defined before).\n")
    );
    assert_eq!(text(&out.stderr), "");

    // A DestinationRule for a host that is no service: a warning only.
    let unknown = write(
        dir.path(),
        "unknown.yaml",
        &SUBSETS_DR.replace("host: producer-internal-host", "host: nowhere"),
    );
    let out = analyze(&with_files(std::slice::from_ref(&unknown)), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("Warning [IST0174] (DestinationRule dev-service-mesh/producer {unknown}:6) The host nowhere defined in the DestinationRule does not match any services in the mesh.\n")
    );
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn analyzes_the_running_mesh_with_its_pods_and_gateways() {
    let mut args = vec!["-n".to_string(), NS.to_string()];
    for f in [
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
    ] {
        args.push(manifest(f));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mesh = MeshProcess::start(&refs);

    let out = mesh.run(&["analyze", "-n", NS]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "\u{2714} No validation issues found when analyzing namespace: dev-service-mesh.\n"
    );

    // The running pod carries version: v1, not v2; no egress gateway runs.
    let dir = tempfile::tempdir().expect("tempdir");
    let dr = write(
        dir.path(),
        "dr.yaml",
        &SUBSETS_DR
            .replace("name: producer", "name: service-a")
            .replace("host: producer-internal-host", "host: service-a-srv"),
    );
    let gw = write(
        dir.path(),
        "egress-gw.yaml",
        &std::fs::read_to_string(manifest("worldtime-gw.yml")).unwrap(),
    );
    mesh.ok(&["apply", "-n", NS, "-f", &dr, "-f", &gw]);
    let out = mesh.run(&["analyze", "-n", NS]);
    assert_eq!(out.status.code(), Some(79), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!(
            "Error [IST0101] (Gateway dev-service-mesh/istio-egressgateway {gw}:1) Referenced selector not found: \"istio=egressgateway\"\n\
             Error [IST0173] (DestinationRule dev-service-mesh/service-a {dr}:1) The Subset v2 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).\n"
        )
    );
    // Another namespace has nothing to report.
    let out = mesh.run(&["analyze", "-n", "other"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stderr),
        "\u{2714} No validation issues found when analyzing namespace: other.\n"
    );

    // Installing the egress gateway gives the Gateway its workload.
    mesh.ok(&[
        "install",
        "--set",
        "components.egressGateways[0].name=istio-egressgateway",
        "--set",
        "components.egressGateways[0].enabled=true",
    ]);
    let out = mesh.run(&["analyze", "-A"]);
    assert_eq!(out.status.code(), Some(79));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("IST0101"), "{stdout}");
    assert!(stdout.contains("Error [IST0173]"), "{stdout}");
    assert!(
        text(&out.stderr).contains("when analyzing all namespaces."),
        "{}",
        text(&out.stderr)
    );
}
