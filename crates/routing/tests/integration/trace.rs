//! `meshbox trace` at the routing layer: each step the trace records (listener,
//! virtual host, rules tried and why they failed, the rule that matched with its file
//! and line, destinations, endpoints, the next hop) and each way a request is refused
//! (404 NR at a gateway, 502 block_all, 503 NC, 503 UH), with what would change it.

use crate::common::*;
use meshbox_config::{MeshOptions, Store};
use meshbox_routing::trace::{render, trace, Step, Trace, TraceContext, TraceRequest};
use meshbox_routing::{MeshState, WorkloadInstance};

const SERVICE_A: &str = "service-a-v1-deployment-1";

/// Traces `url` (with `headers`) from the pod `from` of `pods`, with the mesh's context.
fn trace_from(
    store: &Store,
    mesh: &MeshOptions,
    pods: &[WorkloadInstance],
    from: &str,
    method: &str,
    url: &str,
    headers: &[&str],
) -> Trace {
    let state = MeshState::new(store, mesh, pods);
    let pod = find(pods, from);
    let is_gateway = pod.name.starts_with("istio-");
    let tables = if is_gateway {
        state.gateway_tables(pod, GATEWAY_PORTS)
    } else {
        state.sidecar_tables(pod)
    };
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let request = TraceRequest::parse(method, url, &headers).expect("request");
    let ctx = TraceContext {
        state: &state,
        proxy: pod,
    };
    trace(&tables, &request, Some(&ctx))
}

fn course_store(files: &[&str]) -> Store {
    let mut store = Store::new();
    for f in files {
        apply_example(&mut store, f);
    }
    store
}

const PRODUCER_WITH_RULES: &str = "
apiVersion: v1
kind: Service
metadata:
  name: producer-internal-host
spec:
  ports:
    - port: 80
      name: http-80
      targetPort: 8082
  selector:
    app: service-b-app
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host]
  http:
    - name: only-a
      match:
        - uri:
            exact: /a
      route:
        - destination:
            host: producer-internal-host
    - name: jason
      match:
        - headers:
            end-user:
              exact: jason
      timeout: 3s
      route:
        - destination:
            host: producer-internal-host
    - name: rest
      rewrite:
        uri: /v2
      route:
        - destination:
            host: producer-internal-host
";

fn rules_of(trace: &Trace) -> Vec<(String, Option<String>)> {
    trace
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::RuleSkipped { rule, reason } => {
                Some((rule.route_name.clone(), Some(reason.clone())))
            }
            Step::RuleMatched { rule } => Some((rule.route_name.clone(), None)),
            _ => None,
        })
        .collect()
}

#[test]
fn earlier_rules_say_why_they_did_not_match_and_the_match_names_its_file_and_line() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_WITH_RULES);
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/b?x=1",
        &[],
    );
    assert_eq!(
        rules_of(&t),
        vec![
            (
                "only-a".to_string(),
                Some("uri \"/b\" does not match exact \"/a\"".to_string())
            ),
            (
                "jason".to_string(),
                Some("header end-user is absent".to_string())
            ),
            ("rest".to_string(), None),
        ]
    );
    let matched = t
        .steps
        .iter()
        .find_map(|s| match s {
            Step::RuleMatched { rule } => Some(rule.clone()),
            _ => None,
        })
        .expect("a matched rule");
    assert_eq!(
        matched.virtual_service.as_deref(),
        Some("dev-service-mesh/producer")
    );
    assert_eq!(matched.rule, Some(2));
    // The VirtualService is the second document of test.yaml, starting after `---`.
    assert_eq!(matched.origin.as_deref(), Some("test.yaml:14"));
    let Some(Step::VirtualHost { name, domain, why }) = t
        .steps
        .iter()
        .find(|s| matches!(s, Step::VirtualHost { .. }))
    else {
        panic!("no virtual host step: {t:#?}");
    };
    assert_eq!(
        name,
        "producer-internal-host.dev-service-mesh.svc.cluster.local:80"
    );
    assert_eq!(domain, "producer-internal-host");
    assert!(why.contains("is one of its domains"), "{why}");
    let Some(Step::Forward {
        clusters, rewrite, ..
    }) = t.steps.iter().find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward step");
    };
    assert_eq!(clusters.len(), 1);
    assert_eq!(
        clusters[0].cluster,
        svc_cluster("producer-internal-host", 80)
    );
    assert_eq!(clusters[0].endpoints[0].address, "127.0.0.12:8082");
    assert_eq!(
        clusters[0].endpoints[0].pod.as_deref(),
        Some("service-b-deployment-1")
    );
    assert_eq!(
        rewrite.as_deref(),
        Some("\"/b?x=1\" is sent upstream as \"/v2b?x=1\"")
    );
    assert!(t.verdict.forwarded);
    let text = render(&t);
    assert!(text.contains("Tried rule \"only-a\" (http[0], match 0) of VirtualService dev-service-mesh/producer (test.yaml:14): no match, uri \"/b\" does not match exact \"/a\""), "{text}");
    assert!(
        text.contains(
            "Matched rule \"rest\" (http[2]) of VirtualService dev-service-mesh/producer"
        ),
        "{text}"
    );
    assert!(text.contains("Defined at test.yaml:14."), "{text}");
}

#[test]
fn a_header_selects_the_second_rule_with_its_timeout() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_WITH_RULES);
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "producer-internal-host/b",
        &["End-User: jason"],
    );
    let rules = rules_of(&t);
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[1], ("jason".to_string(), None));
    let Some(Step::Forward { timeout, .. }) =
        t.steps.iter().find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward step");
    };
    assert_eq!(timeout, "3s");
}

#[test]
fn weighted_split_shows_both_clusters_with_their_weights_and_pods() {
    let store = course_store(&course_to_split());
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    let Some(Step::Forward { clusters, .. }) =
        t.steps.iter().find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward step: {t:#?}");
    };
    let got: Vec<(String, u32, String)> = clusters
        .iter()
        .map(|c| (c.cluster.clone(), c.weight, c.share.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                svc_cluster("producer-internal-host", 80),
                50,
                "50%".to_string()
            ),
            (svc_cluster("service-c-srv", 80), 50, "50%".to_string()),
        ]
    );
    assert_eq!(
        clusters[1].endpoints[0].pod.as_deref(),
        Some("service-c-deployment-1")
    );
    let text = render(&t);
    assert!(
        text.contains("Defined at test.yaml:1."),
        "the rule names its file and line: {text}"
    );
    assert!(
        text.contains(
            "50% outbound|80||service-c-srv.dev-service-mesh.svc.cluster.local (weight 50)"
        ),
        "{text}"
    );
}

#[test]
fn registry_only_block_all_answers_502_and_asks_for_a_service_entry() {
    let store = course_store(&course_to_split());
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        "service-c-deployment-1",
        "GET",
        "http://worldtimeapi.org/api/timezone/Europe",
        &[],
    );
    assert!(
        t.steps
            .iter()
            .any(|s| matches!(s, Step::CatchAll { route, .. } if route == "block_all")),
        "{t:#?}"
    );
    assert_eq!(t.verdict.status, Some(502));
    assert!(!t.verdict.forwarded);
    assert!(
        t.verdict.fixes[0].starts_with("add a ServiceEntry for worldtimeapi.org"),
        "{:?}",
        t.verdict.fixes
    );
    let text = render(&t);
    assert!(text.contains("REGISTRY_ONLY"), "{text}");
    assert!(text.contains("502 Bad Gateway"), "{text}");
}

#[test]
fn allow_any_passes_unknown_hosts_through() {
    let store = course_store(&course_to_split());
    let pods = course_pods();
    let t = trace_from(
        &store,
        &mesh_with(&["meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY"]),
        &pods,
        "service-c-deployment-1",
        "GET",
        "http://worldtimeapi.org/api/timezone/Europe",
        &[],
    );
    assert!(t
        .steps
        .iter()
        .any(|s| matches!(s, Step::Passthrough { host, port: 80 } if host == "worldtimeapi.org")));
    assert!(t.verdict.forwarded);
    assert!(t.verdict.summary.contains("PassthroughCluster"));
}

#[test]
fn a_port_no_service_uses_falls_to_the_catch_all() {
    let store = course_store(&course_to_split());
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host:9090/",
        &[],
    );
    let Step::Listener { route_table, .. } = &t.steps[0] else {
        panic!("first step is the listener");
    };
    assert_eq!(route_table, &None);
    assert_eq!(t.verdict.status, Some(502));
    assert!(
        t.verdict.fixes[0].contains("no HTTP port 9090")
            || t.verdict.fixes[0].contains("port 9090"),
        "{:?}",
        t.verdict.fixes
    );
}

#[test]
fn the_sidecar_follows_the_request_into_the_egress_gateway() {
    let mut files = course_to_split();
    files.extend([
        "worldtime-host-se.yml",
        "worldtime-gw.yml",
        "outbound-srv-c-to-worldtime-vs.yml",
    ]);
    let store = course_store(&files);
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        "service-c-deployment-1",
        "GET",
        "http://worldtimeapi.org/api/timezone/Europe",
        &[],
    );
    let Some(Step::Forward { clusters, .. }) =
        t.steps.iter().find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward step: {t:#?}");
    };
    assert_eq!(
        clusters[0].cluster,
        "outbound|80||istio-egressgateway.istio-system.svc.cluster.local"
    );
    let next = clusters[0]
        .next_hop
        .as_ref()
        .expect("the egress gateway hop");
    assert_eq!(next.proxy, "istio-egressgateway-1");
    assert_eq!(next.port, 80);
    assert_eq!(next.authority, "worldtimeapi.org");
    let Some(Step::Forward {
        clusters: at_gw, ..
    }) = next
        .steps
        .iter()
        .find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward at the gateway: {next:#?}");
    };
    assert_eq!(at_gw[0].cluster, "outbound|80||worldtimeapi.org");
    assert_eq!(at_gw[0].discovery, "STRICT_DNS");
    assert!(
        t.verdict.summary.contains("outbound|80||worldtimeapi.org"),
        "{}",
        t.verdict.summary
    );
    let text = render(&t);
    assert!(
        text.contains("Then, at the gateway istio-egressgateway-1"),
        "{text}"
    );
    assert!(text.contains("   | 4. Destination:"), "{text}");
}

#[test]
fn at_the_egress_gateway_the_second_rule_sends_to_worldtimeapi() {
    let mut files = course_to_split();
    files.extend([
        "worldtime-host-se.yml",
        "worldtime-gw.yml",
        "outbound-srv-c-to-worldtime-vs.yml",
    ]);
    let store = course_store(&files);
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        "istio-egressgateway-1",
        "GET",
        "http://worldtimeapi.org/api/timezone/Europe",
        &[],
    );
    let matched = t.steps.iter().find_map(|s| match s {
        Step::RuleMatched { rule } => Some(rule.clone()),
        _ => None,
    });
    let matched = matched.expect("matched");
    assert_eq!(matched.rule, Some(1));
    assert!(t.verdict.summary.contains("outbound|80||worldtimeapi.org"));
}

#[test]
fn gateway_without_a_gateway_resource_is_404_nr_and_names_the_missing_gateway() {
    // The VirtualService is bound to service-a-gw, which is not applied.
    let store = course_store(&[
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "inbound-to-serviceA-vs.yml",
    ]);
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        "istio-ingressgateway-1",
        "GET",
        "http://192.168.49.2/service-a",
        &[],
    );
    assert_eq!(t.verdict.status, Some(404));
    assert_eq!(t.verdict.flags, "NR");
    let fixes = t.verdict.fixes.join("\n");
    assert!(
        fixes.contains("VirtualService dev-service-mesh/inbound-to-service-a-vs")
            && fixes.contains("Gateway dev-service-mesh/service-a-gw, which does not exist"),
        "{fixes}"
    );
    let text = render(&t);
    assert!(
        text.contains("Result: refused, 404 (response flag NR)"),
        "{text}"
    );
    assert!(text.contains("What would change it:"), "{text}");
}

#[test]
fn gateway_host_not_listed_is_404_nr_with_the_hosts_it_answers() {
    let mut store = Store::new();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: shop-gw
spec:
  selector:
    istio: ingressgateway
  servers:
    - port: {number: 80, name: http, protocol: HTTP}
      hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: shop
spec:
  hosts: [shop.example.com, other.example.com]
  gateways: [shop-gw]
  http:
    - route:
        - destination:
            host: service-a-srv
",
    );
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        "istio-ingressgateway-1",
        "GET",
        "http://192.168.49.2/",
        &["Host: other.example.com"],
    );
    assert!(
        t.steps
            .iter()
            .any(|s| matches!(s, Step::NoVirtualHost { authority, .. } if authority == "other.example.com")),
        "{t:#?}"
    );
    assert_eq!(t.verdict.status, Some(404));
    assert_eq!(t.verdict.flags, "NR");
    assert!(
        t.verdict
            .fixes
            .iter()
            .any(|f| f.contains("do not include \"other.example.com\"")),
        "{:?}",
        t.verdict.fixes
    );
    assert!(
        t.verdict.summary.contains("shop.example.com"),
        "{}",
        t.verdict.summary
    );
}

#[test]
fn gateway_request_port_maps_container_and_listen_ports_to_the_service_port() {
    let store = course_store(&[
        "serviceA-v1-deployment.yml",
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
    ]);
    let pods = course_pods();
    // 8080 is the container port; 127.0.0.21:8080 is where the test pod listens.
    for url in [
        "http://gw:8080/service-a",
        "http://gw/service-a",
        "http://127.0.0.21:8080/service-a",
    ] {
        let t = trace_from(
            &store,
            &course_mesh(),
            &pods,
            "istio-ingressgateway-1",
            "GET",
            url,
            &[],
        );
        assert_eq!(t.port, 80, "{url}");
        assert!(t.verdict.forwarded, "{url}: {:?}", t.verdict);
    }
}

#[test]
fn missing_subset_is_503_nc_and_names_the_destination_rule() {
    let mut store = course_store(&["service-b-deployment.yml", "producer-internal-host.yml"]);
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: producer-internal-host
            subset: v2
",
    );
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    assert_eq!(t.verdict.status, Some(503));
    assert_eq!(t.verdict.flags, "NC");
    assert!(
        t.verdict
            .fixes
            .iter()
            .any(|f| f.contains("defines subset \"v2\"")),
        "{:?}",
        t.verdict.fixes
    );
}

#[test]
fn unknown_destination_host_is_503_nc() {
    let mut store = course_store(&["service-b-deployment.yml", "producer-internal-host.yml"]);
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: no-such-service
",
    );
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    assert_eq!(
        (t.verdict.status, t.verdict.flags.as_str()),
        (Some(503), "NC")
    );
    assert!(
        t.verdict.fixes[0].contains(
            "no Service or ServiceEntry defines no-such-service.dev-service-mesh.svc.cluster.local"
        ),
        "{:?}",
        t.verdict.fixes
    );
}

#[test]
fn service_without_pods_is_503_uh_and_names_its_selector() {
    let store = course_store(&[
        "producer-internal-host.yml",
        "producer-internal-host-vs.yml",
    ]);
    // No ServiceB pod runs.
    let pods: Vec<WorkloadInstance> = course_pods()
        .into_iter()
        .filter(|p| !p.name.starts_with("service-b"))
        .collect();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    assert_eq!(
        (t.verdict.status, t.verdict.flags.as_str()),
        (Some(503), "UH")
    );
    assert!(
        t.verdict.fixes[0].contains("selects pods labelled app=service-b-app"),
        "{:?}",
        t.verdict.fixes
    );
    assert!(render(&t).contains("503 UH"));
}

#[test]
fn requests_parse_like_curl() {
    let r = TraceRequest::parse(
        "post",
        "producer-internal-host:8080/x?y=1",
        &["X-A: b".into()],
    )
    .expect("parse");
    assert_eq!(r.method, "POST");
    assert_eq!(r.scheme, "http");
    assert_eq!(r.authority, "producer-internal-host:8080");
    assert_eq!(r.port, 8080);
    assert_eq!(r.path_and_query, "/x?y=1");
    assert_eq!(r.headers, vec![("X-A".to_string(), "b".to_string())]);
    let r = TraceRequest::parse("GET", "https://example.com", &[]).expect("parse");
    assert_eq!((r.port, r.path_and_query.as_str()), (443, "/"));
    assert!(TraceRequest::parse("GET", "http://x/", &["no colon".into()]).is_err());
    assert!(TraceRequest::parse("GET", "ftp://x/", &[]).is_err());
}

#[test]
fn the_trace_serializes_to_json_with_tagged_steps() {
    let store = course_store(&course_to_split());
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&t.to_json()).expect("json");
    assert_eq!(v["steps"][0]["step"], "listener");
    assert_eq!(v["kind"], "sidecar");
    assert_eq!(v["verdict"]["forwarded"], true);
}

#[test]
fn destination_rule_subset_and_load_balancing_show_in_the_destination() {
    let mut store = course_store(&["service-b-deployment.yml", "producer-internal-host.yml"]);
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: producer
spec:
  host: producer-internal-host
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
  subsets:
    - name: v1
      labels:
        version: v1
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: producer-internal-host
            subset: v1
",
    );
    let pods = course_pods();
    let t = trace_from(
        &store,
        &course_mesh(),
        &pods,
        SERVICE_A,
        "GET",
        "http://producer-internal-host/",
        &[],
    );
    let Some(Step::Forward { clusters, .. }) =
        t.steps.iter().find(|s| matches!(s, Step::Forward { .. }))
    else {
        panic!("no forward step: {t:#?}");
    };
    assert_eq!(
        clusters[0].cluster,
        "outbound|80|v1|producer-internal-host.dev-service-mesh.svc.cluster.local"
    );
    assert_eq!(
        clusters[0].endpoints[0].pod.as_deref(),
        Some("service-b-deployment-1")
    );
    assert!(
        clusters[0]
            .policy
            .contains(&"load balancing: LEAST_REQUEST".to_string()),
        "{:?}",
        clusters[0].policy
    );
    assert!(render(&t).contains("       load balancing: LEAST_REQUEST"));
}
