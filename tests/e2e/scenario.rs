//! The worldtime egress scenario of ../shared/scenario/README.md, step by step,
//! through a real `meshbox up`, with the course's manifests as they are.

use crate::common::MeshProcess;

const GREETING_A: &str = "Hello from ServiceA! Calling Producer Service... ";
const FROM_B: &str = "Received response from Producer Service: Hello from ServiceB!";
const FROM_C: &str = "Received response from Producer Service: Hello from ServiceC!";
const COURSE_INSTALL: [&str; 8] = [
    "--set",
    "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
    "--set",
    "meshConfig.accessLogFile=/dev/stdout",
    "--set",
    "components.egressGateways[0].name=istio-egressgateway",
    "--set",
    "components.egressGateways[0].enabled=true",
];

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn course_steps_one_to_five() {
    // The cluster starts with REGISTRY_ONLY and access logs on; the egress gateway
    // comes with step 4 (`istioctl install ... egressGateways[0].enabled=true`).
    let mesh = MeshProcess::start(&[
        "-n",
        "dev-service-mesh",
        "--seed",
        "7",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
    ]);

    // Step 1: ingress to ServiceA; producer-internal-host does not exist yet.
    mesh.apply(&[
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
    ]);
    let (status, body) = mesh.wait_for("/service-a", |s, b| s == 200 && b.starts_with(GREETING_A));
    assert_eq!(status, 200);
    assert!(
        body.contains("producer-internal-host"),
        "step 1 must name the unknown host: {body:?}"
    );
    assert!(body.ends_with('\n'));
    let (status, _) = mesh.get("/nothing-here");
    assert_eq!(status, 404, "no route at the ingress is 404 (NR)");
    let ingress_log = mesh.wait_for_log("istio-ingressgateway", "istio-system", |l| {
        l.contains("\"GET /nothing-here HTTP/1.1\" 404 NR route_not_found")
    });
    assert!(
        ingress_log.contains("\"GET /service-a HTTP/1.1\" 200 - via_upstream"),
        "{ingress_log}"
    );
    assert!(
        ingress_log.contains("outbound|80||service-a-srv.dev-service-mesh.svc.cluster.local"),
        "{ingress_log}"
    );

    // Step 2: ServiceA to ServiceB.
    mesh.apply(&[
        "service-b-deployment.yml",
        "producer-internal-host.yml",
        "producer-internal-host-vs.yml",
    ]);
    mesh.wait_for("/service-a", |_, b| b.contains(FROM_B));
    for _ in 0..20 {
        let (status, body) = mesh.get("/service-a");
        assert_eq!(status, 200);
        assert_eq!(body, format!("{GREETING_A}{FROM_B}\n\n"));
    }

    // The earlier exercise: ingress straight to the producer at /service-b.
    mesh.apply(&["service-b-gw.yml", "inbound-to-service-b-vs.yml"]);
    let (_, body) = mesh.wait_for("/service-b", |s, _| s == 200);
    assert_eq!(body, "Hello from ServiceB!\n");
    assert_eq!(
        mesh.get("/service-a").0,
        200,
        "both gateways' routes live together on port 80"
    );

    // Step 3: 50/50 between ServiceB and ServiceC; REGISTRY_ONLY blocks worldtimeapi.org.
    mesh.apply(&[
        "service-c-deployment.yml",
        "service-c-srv.yml",
        "producer-internal-host-50-c-vs.yml",
    ]);
    mesh.wait_for("/service-a", |_, b| b.contains(FROM_C));
    let mut from_c = 0;
    for _ in 0..400 {
        let (status, body) = mesh.get("/service-a");
        assert_eq!(status, 200);
        if body.contains(FROM_C) {
            from_c += 1;
            assert!(
                body.ends_with("Calling worldtimeapi.org API... 502 Bad Gateway: [no body]\n\n"),
                "{body:?}"
            );
        } else {
            assert!(body.contains(FROM_B), "{body:?}");
        }
    }
    let share = from_c as f64 / 400.0;
    assert!(
        (0.43..=0.57).contains(&share),
        "ServiceC answered {from_c} of 400"
    );
    let c_log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("block_all")
    });
    assert!(
        c_log.contains("\"GET /api/timezone/Europe HTTP/1.1\" 502 - direct_response"),
        "{c_log}"
    );

    // Step 4: egress through the egress gateway.
    mesh.apply(&[
        "worldtime-host-se.yml",
        "worldtime-gw.yml",
        "outbound-srv-c-to-worldtime-vs.yml",
    ]);
    mesh.ok(&[&["install"][..], &COURSE_INSTALL[..]].concat());
    mesh.wait_for("/service-a", |_, b| {
        b.contains("Received response from worldtimeapi.org")
    });
    let egress_before = count_lines(
        &mesh.logs("istio-egressgateway", "istio-system"),
        "\"GET /api/timezone/Europe",
    );
    let mut c_calls = 0;
    for _ in 0..60 {
        let (status, body) = mesh.get("/service-a");
        assert_eq!(status, 200);
        assert!(
            !body.contains("502") && !body.contains("503"),
            "every answer succeeds: {body:?}"
        );
        if body.contains(FROM_C) {
            c_calls += 1;
            assert!(
                body.contains(
                    "Received response from worldtimeapi.org: Europe/Amsterdam\nEurope/Andorra"
                ),
                "{body:?}"
            );
            assert!(
                body.ends_with("... (printed only 100 symbols from response body beginning)\n\n"),
                "{body:?}"
            );
        }
    }
    assert!(c_calls > 10, "ServiceC answered only {c_calls} of 60");
    let egress_log = mesh.wait_for_log("istio-egressgateway", "istio-system", |l| {
        count_lines(l, "\"GET /api/timezone/Europe") == egress_before + c_calls
    });
    assert!(egress_log.contains("\"worldtimeapi.org\""), "{egress_log}");
    assert!(
        egress_log.contains("outbound|80||worldtimeapi.org"),
        "{egress_log}"
    );
    let c_log = mesh.logs("service-c-deployment", "dev-service-mesh");
    assert!(
        c_log.contains("outbound|80||istio-egressgateway.istio-system.svc.cluster.local"),
        "ServiceC's sidecar routes worldtimeapi.org to the egress gateway:\n{c_log}"
    );

    // Step 5: all traffic to ServiceC.
    mesh.apply(&["producer-internal-host-100-c-vs.yml"]);
    mesh.wait_for("/service-a", |_, b| b.contains(FROM_C));
    for _ in 0..30 {
        let (_, body) = mesh.get("/service-a");
        assert!(
            body.contains(FROM_C) && body.contains("Europe/Amsterdam"),
            "{body:?}"
        );
    }

    // A broken change is refused whole, named precisely, and the mesh keeps serving.
    let bad = mesh.home().join("bad-vs.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata:\n  name: producer-internal-host-vs\nspec:\n  hosts: [producer-internal-host]\n  http:\n  - route:\n    - destination:\n        host: service-b-srv\n        prot: 80\n",
    )
    .unwrap();
    let out = mesh.run(&[
        "apply",
        "-n",
        "dev-service-mesh",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad-vs.yaml:11") && err.contains("spec.http[0].route[0].destination.prot"),
        "{err}"
    );
    let (_, body) = mesh.get("/service-a");
    assert!(
        body.contains(FROM_C),
        "last good config still serves: {body:?}"
    );

    let pods = mesh.ok(&["get", "pods", "-A"]);
    assert!(
        pods.contains("istio-egressgateway") && pods.contains("service-c-deployment"),
        "{pods}"
    );
    let vs = mesh.ok(&["get", "vs", "-n", "dev-service-mesh"]);
    assert!(vs.contains("outbound-srv-c-to-worldtime-vs"), "{vs}");
}

#[test]
fn allow_any_without_service_entry_reaches_the_stand_in_directly() {
    let mesh = MeshProcess::start(&[
        "-n",
        "dev-service-mesh",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
    ]);
    mesh.apply(&[
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
        "service-c-deployment.yml",
        "service-c-srv.yml",
        "producer-internal-host.yml",
        "producer-internal-host-100-c-vs.yml",
    ]);
    let (_, body) = mesh.wait_for("/service-a", |_, b| {
        b.contains("worldtimeapi.org: Europe/Amsterdam")
    });
    assert!(body.contains(FROM_C), "{body:?}");
    let c_log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("PassthroughCluster")
    });
    assert!(c_log.contains("allow_any"), "{c_log}");
}

#[test]
fn registry_only_with_service_entry_reaches_the_stand_in_from_the_sidecar() {
    let mesh = MeshProcess::start(&[
        "-n",
        "dev-service-mesh",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
    ]);
    mesh.apply(&[
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
        "service-c-deployment.yml",
        "service-c-srv.yml",
        "producer-internal-host.yml",
        "producer-internal-host-100-c-vs.yml",
        "worldtime-host-se.yml",
    ]);
    let (_, body) = mesh.wait_for("/service-a", |_, b| {
        b.contains("worldtimeapi.org: Europe/Amsterdam")
    });
    assert!(body.contains(FROM_C), "{body:?}");
    let c_log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("outbound|80||worldtimeapi.org")
    });
    assert!(
        !c_log.contains("istio-egressgateway"),
        "no egress gateway in this run: {c_log}"
    );
    let pods = mesh.ok(&["get", "pods", "-A"]);
    assert!(!pods.contains("istio-egressgateway"), "{pods}");
}
