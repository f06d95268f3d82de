//! `meshbox trace` and `meshbox proxy-config` through the real binary: against a
//! running mesh that follows the course's steps, and offline on manifest files
//! (including a deliberately broken configuration).

use crate::common;
use crate::common::{manifest, meshbox, MeshProcess};

const NS: &str = "dev-service-mesh";
const PRODUCER: &str = "outbound|80||producer-internal-host.dev-service-mesh.svc.cluster.local";
const SERVICE_C: &str = "outbound|80||service-c-srv.dev-service-mesh.svc.cluster.local";
const EGRESS: &str = "outbound|80||istio-egressgateway.istio-system.svc.cluster.local";
const WORLDTIME: &str = "outbound|80||worldtimeapi.org";

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The `forward` steps of a JSON trace (its own, not the next hops').
fn forward_clusters(trace: &serde_json::Value) -> Vec<(String, u64)> {
    trace["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["step"] == "forward")
        .flat_map(|s| s["clusters"].as_array().cloned().unwrap_or_default())
        .map(|c| {
            (
                c["cluster"].as_str().unwrap_or_default().to_string(),
                c["weight"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn trace_and_proxy_config_follow_the_running_course_mesh() {
    let mesh = MeshProcess::start(&[
        "-n",
        NS,
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--stand-in",
        "worldtimeapi.org:80=worldtime",
    ]);
    mesh.apply(&common::course_to_split());
    mesh.wait_for("/service-a", |s, _| s == 200);

    // Step 3: ServiceA's sidecar splits producer-internal-host 50/50.
    let out = mesh.ok(&[
        "trace",
        "--from",
        "service-a-v1-deployment",
        "-n",
        NS,
        "http://producer-internal-host/",
    ]);
    assert!(
        out.contains(&format!("50% {PRODUCER} (weight 50)"))
            && out.contains(&format!("50% {SERVICE_C} (weight 50)")),
        "{out}"
    );
    assert!(
        out.contains(
            "Matched rule http[0] of VirtualService dev-service-mesh/producer-internal-host-vs"
        ),
        "{out}"
    );
    assert!(
        out.contains("producer-internal-host-50-c-vs.yml:1"),
        "the rule names the file it came from: {out}"
    );
    assert!(out.contains("(pod service-b-deployment-"), "{out}");
    let t = json(&mesh.ok(&[
        "trace",
        "--from",
        "service-a-v1-deployment",
        "-n",
        NS,
        "-o",
        "json",
        "http://producer-internal-host/",
    ]));
    assert_eq!(
        forward_clusters(&t),
        vec![(PRODUCER.to_string(), 50), (SERVICE_C.to_string(), 50)]
    );
    assert_eq!(t["kind"], "sidecar");

    // REGISTRY_ONLY: ServiceC cannot reach worldtimeapi.org yet.
    let out = mesh.ok(&[
        "trace",
        "--from",
        "service-c-deployment",
        "-n",
        NS,
        "http://worldtimeapi.org/api/timezone/Europe",
    ]);
    assert!(out.contains("block_all"), "{out}");
    assert!(out.contains("Result: 502"), "{out}");
    assert!(
        out.contains("add a ServiceEntry for worldtimeapi.org"),
        "{out}"
    );

    // At the ingress gateway, as curl http://$GATEWAY_URL/service-a sends it.
    let url = format!("http://{}/service-a", mesh.gateway_url);
    let out = mesh.ok(&[
        "trace",
        "--from",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        &url,
    ]);
    assert!(out.contains("route table \"http.80\""), "{out}");
    assert!(
        out.contains("VirtualService dev-service-mesh/inbound-to-service-a-vs"),
        "{out}"
    );
    assert!(
        out.contains("\"/service-a\" is sent upstream as \"/\""),
        "{out}"
    );
    assert!(
        out.contains(
            "Result: forwarded to outbound|80||service-a-srv.dev-service-mesh.svc.cluster.local"
        ),
        "{out}"
    );
    let url = format!("http://{}/nothing-here", mesh.gateway_url);
    let out = mesh.ok(&[
        "trace",
        "--from",
        "istio-ingressgateway",
        "-n",
        "istio-system",
        "-H",
        "Host: x",
        &url,
    ]);
    assert!(
        out.contains("no match, uri \"/nothing-here\" does not match exact \"/service-a\""),
        "{out}"
    );
    assert!(
        out.contains("Result: refused, 404 (response flag NR)"),
        "{out}"
    );

    // Step 4: the egress gateway.
    mesh.apply(&common::WORLDTIME_EGRESS);
    mesh.ok(&[
        "install",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "components.egressGateways[0].name=istio-egressgateway",
        "--set",
        "components.egressGateways[0].enabled=true",
    ]);
    let out = mesh.ok(&[
        "trace",
        "--from",
        "service-c-deployment",
        "-n",
        NS,
        "http://worldtimeapi.org/api/timezone/Europe",
    ]);
    assert!(out.contains(&format!("100% {EGRESS}")), "{out}");
    assert!(
        out.contains("VirtualService dev-service-mesh/outbound-srv-c-to-worldtime-vs"),
        "{out}"
    );
    assert!(
        out.contains("Then, at the gateway istio-egressgateway-"),
        "the trace follows the request into the egress gateway: {out}"
    );
    assert!(out.contains(&format!("|    - 100% {WORLDTIME}")), "{out}");
    let t = json(&mesh.ok(&[
        "trace",
        "--from",
        "service-c-deployment",
        "-n",
        NS,
        "-o",
        "json",
        "http://worldtimeapi.org/api/timezone/Europe",
    ]));
    assert_eq!(forward_clusters(&t), vec![(EGRESS.to_string(), 100)]);

    // At the egress gateway itself.
    let out = mesh.ok(&[
        "trace",
        "--from",
        "istio-egressgateway",
        "-n",
        "istio-system",
        "http://worldtimeapi.org/api/timezone/Europe",
    ]);
    assert!(
        out.contains(&format!("Result: forwarded to {WORLDTIME}")),
        "{out}"
    );
    assert!(
        out.contains("worldtimeapi.org:80 (resolved by DNS"),
        "{out}"
    );

    // proxy-config: ServiceC's sidecar.
    let routes = mesh.ok(&["proxy-config", "routes", "service-c-deployment", "-n", NS]);
    let header = routes.lines().next().unwrap_or_default();
    for col in ["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"] {
        assert!(header.contains(col), "{routes}");
    }
    assert!(
        routes.contains("producer-internal-host-vs.dev-service-mesh")
            && routes.contains("outbound-srv-c-to-worldtime-vs.dev-service-mesh")
            && routes.contains("block_all"),
        "{routes}"
    );
    let clusters = mesh.ok(&["proxy-config", "clusters", "service-c-deployment", "-n", NS]);
    assert!(clusters.starts_with("SERVICE FQDN"), "{clusters}");
    assert!(
        clusters
            .lines()
            .any(|l| l.starts_with("worldtimeapi.org") && l.contains("STRICT_DNS")),
        "{clusters}"
    );
    assert!(clusters.contains("BlackHoleCluster"), "{clusters}");
    let endpoints = mesh.ok(&[
        "proxy-config",
        "endpoints",
        "service-c-deployment",
        "-n",
        NS,
    ]);
    assert!(endpoints.starts_with("ENDPOINT"), "{endpoints}");
    assert!(
        endpoints
            .lines()
            .any(|l| l.contains("HEALTHY") && l.ends_with(EGRESS)),
        "{endpoints}"
    );
    let listeners = mesh.ok(&[
        "proxy-config",
        "listeners",
        "service-c-deployment",
        "-n",
        NS,
    ]);
    assert!(listeners.contains("sidecar outbound"), "{listeners}");
    assert!(listeners.contains("inbound 8083"), "{listeners}");
    for view in ["routes", "clusters", "endpoints", "listeners"] {
        let v = json(&mesh.ok(&[
            "proxy-config",
            view,
            "service-c-deployment",
            "-n",
            NS,
            "-o",
            "json",
        ]));
        assert!(
            v.as_array().is_some_and(|rows| !rows.is_empty()),
            "{view}: {v}"
        );
    }
    let v = json(&mesh.ok(&[
        "proxy-config",
        "routes",
        "istio-egressgateway",
        "-n",
        "istio-system",
        "-o",
        "json",
    ]));
    let rows = v.as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|r| r["name"] == "http.80" && r["vhost_name"] == "worldtimeapi.org:80"),
        "{v}"
    );
    let listeners = mesh.ok(&[
        "proxy-config",
        "listeners",
        "istio-ingressgateway",
        "-n",
        "istio-system",
    ]);
    let port = mesh.gateway_url.rsplit(':').next().unwrap_or_default();
    assert!(
        listeners.lines().any(|l| l.contains(port)
            && l.contains("gateway port 80")
            && l.contains("Route: http.80")),
        "{listeners}"
    );

    // Unknown names and views are errors.
    let out = mesh.run(&["proxy-config", "routes", "no-such-thing", "-n", NS]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    let out = mesh.run(&["proxy-config", "secrets", "service-c-deployment"]);
    assert!(!out.status.success());
    let out = mesh.run(&["trace", "--from", "no-such-thing", "http://x/"]);
    assert!(!out.status.success());
}

fn offline(args: &[&str]) -> (bool, String, String) {
    let out = meshbox()
        .args(args)
        .env("MESHBOX_HOME", "/nonexistent-meshbox-home")
        .output()
        .expect("run meshbox");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_files(files: &[&str], rest: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for f in files {
        args.push("-f".into());
        args.push(manifest(f));
    }
    args.extend(rest.iter().map(|s| s.to_string()));
    args
}

#[test]
fn offline_trace_explains_a_virtual_service_bound_to_a_missing_gateway() {
    // serviceA-gw.yml is left out: the VirtualService names a Gateway that does not exist.
    let mut args = vec!["trace".to_string()];
    args.extend(with_files(
        &[
            "serviceA-v1-deployment.yml",
            "serviceA-srv.yml",
            "inbound-to-serviceA-vs.yml",
        ],
        &[
            "-n",
            NS,
            "--from",
            "istio-ingressgateway",
            "http://192.168.49.2/service-a",
        ],
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = offline(&refs);
    assert!(ok, "{err}");
    assert!(out.contains("there is no route table http.80"), "{out}");
    assert!(
        out.contains("Result: refused, 404 (response flag NR)"),
        "{out}"
    );
    assert!(
        out.contains("VirtualService dev-service-mesh/inbound-to-service-a-vs")
            && out.contains(
                "is bound to Gateway dev-service-mesh/service-a-gw, which does not exist"
            ),
        "{out}"
    );
    assert!(out.contains("inbound-to-serviceA-vs.yml:1"), "{out}");
}

#[test]
fn offline_trace_and_proxy_config_on_the_course_files() {
    // The 50/50 split, REGISTRY_ONLY, from ServiceA's would-be pod.
    let mut args = vec!["trace".to_string()];
    args.extend(with_files(
        &common::course_to_split(),
        &[
            "-n",
            NS,
            "--set",
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "--from",
            "service-a-v1-deployment",
            "-o",
            "json",
            "http://producer-internal-host/",
        ],
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = offline(&refs);
    assert!(ok, "{err}");
    let t = json(&out);
    assert_eq!(
        forward_clusters(&t),
        vec![(PRODUCER.to_string(), 50), (SERVICE_C.to_string(), 50)]
    );
    // Placeholder addresses for would-be pods.
    assert!(out.contains("10.0.0."), "{out}");

    // Later files replace earlier ones, as successive applies do.
    let mut files = common::course_to_split();
    files.push("producer-internal-host-100-c-vs.yml");
    let mut args = vec!["trace".to_string()];
    args.extend(with_files(
        &files,
        &[
            "-n",
            NS,
            "--from",
            "service-a-v1-deployment",
            "http://producer-internal-host/",
        ],
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = offline(&refs);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("100% {SERVICE_C}")), "{out}");

    // proxy-config offline, as a table and as JSON.
    let mut args = vec![
        "proxy-config".to_string(),
        "clusters".into(),
        "service-a-v1-deployment".into(),
    ];
    args.extend(with_files(&common::course_to_split(), &["-n", NS]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = offline(&refs);
    assert!(ok, "{err}");
    assert!(out.starts_with("SERVICE FQDN"), "{out}");
    assert!(
        out.contains("service-c-srv.dev-service-mesh.svc.cluster.local"),
        "{out}"
    );
    let mut args = vec![
        "proxy-config".to_string(),
        "routes".into(),
        "istio-ingressgateway".into(),
    ];
    args.extend(with_files(
        &common::course_to_split(),
        &["-n", NS, "-o", "json"],
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = offline(&refs);
    assert!(ok, "{err}");
    let v = json(&out);
    assert_eq!(v[0]["name"], "http.80");
    assert_eq!(
        v[0]["virtual_service"],
        "inbound-to-service-a-vs.dev-service-mesh"
    );

    // An unknown --from names what there is.
    let mut args = vec!["trace".to_string()];
    args.extend(with_files(
        &common::course_to_split(),
        &["--from", "nope", "http://x/"],
    ));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, _, err) = offline(&refs);
    assert!(!ok);
    assert!(err.contains("service-a-v1-deployment"), "{err}");
}
