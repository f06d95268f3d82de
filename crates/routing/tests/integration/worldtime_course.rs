//! The course's manifests (examples/worldtime) applied step by step in
//! `dev-service-mesh`, with the course's install flags (REGISTRY_ONLY, egress gateway).

use crate::common::*;
use meshbox_config::Store;
use meshbox_routing::tables::ClusterEndpoints;
use meshbox_routing::{MeshState, ProxyTables};

const EGRESS_CLUSTER: &str = "outbound|80||istio-egressgateway.istio-system.svc.cluster.local";
const WORLDTIME_CLUSTER: &str = "outbound|80||worldtimeapi.org";

/// The store after each course step (1..=5).
fn course_store(step: u32) -> Store {
    let mut store = Store::new();
    let steps: &[&[&str]] = &[
        &[
            "serviceA-v1-deployment.yml",
            "serviceA-srv.yml",
            "serviceA-gw.yml",
            "inbound-to-serviceA-vs.yml",
        ],
        &[
            "service-b-deployment.yml",
            "producer-internal-host.yml",
            "producer-internal-host-vs.yml",
            "service-b-gw.yml",
            "inbound-to-service-b-vs.yml",
        ],
        &[
            "service-c-deployment.yml",
            "service-c-srv.yml",
            "producer-internal-host-50-c-vs.yml",
        ],
        &[
            "worldtime-host-se.yml",
            "worldtime-gw.yml",
            "outbound-srv-c-to-worldtime-vs.yml",
        ],
        &["producer-internal-host-100-c-vs.yml"],
    ];
    for files in &steps[..step as usize] {
        for f in *files {
            apply_example(&mut store, f);
        }
    }
    store
}

fn ingress(state: &MeshState<'_>, pods: &[meshbox_routing::WorkloadInstance]) -> ProxyTables {
    state.gateway_tables(find(pods, "istio-ingressgateway-1"), GATEWAY_PORTS)
}

fn egress(state: &MeshState<'_>, pods: &[meshbox_routing::WorkloadInstance]) -> ProxyTables {
    state.gateway_tables(find(pods, "istio-egressgateway-1"), GATEWAY_PORTS)
}

// Istio: step 1, the ingress gateway routes exactly `/service-a` (any Host, server
// hosts `*`) to service-a-srv:80, rewriting the path to `/`; anything else is 404.
#[test]
fn istio_course_step1_ingress_exact_service_a_rewritten_to_root() {
    let store = course_store(1);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = ingress(&state, &pods);
    assert_eq!(t.gateway_ports, GATEWAY_PORTS);
    for host in ["192.168.49.2", "localhost:8080", "anything.example.com"] {
        let req = get(host, "/service-a");
        let route = route_for(&t, 80, &req).expect("route");
        let f = forward(route);
        assert_eq!(f.clusters[0].cluster, svc_cluster("service-a-srv", 80));
        assert_eq!(
            f.uri_rewrite.as_ref().map(|r| r.apply("/service-a")),
            Some("/".to_string())
        );
        assert_eq!(
            f.uri_rewrite.as_ref().map(|r| r.apply("/service-a?x=1")),
            Some("/?x=1".to_string())
        );
    }
    assert_eq!(
        outcome(&t, 80, &get("gw", "/service-a?debug=1")),
        svc_cluster("service-a-srv", 80)
    );
    assert_eq!(outcome(&t, 80, &get("gw", "/service-a/")), "404");
    assert_eq!(outcome(&t, 80, &get("gw", "/")), "404");
    // The cluster's endpoints: the ServiceA pod at targetPort 8081.
    let c = &t.clusters[&svc_cluster("service-a-srv", 80)];
    assert_eq!(c.endpoints, ClusterEndpoints::Static(vec![addr(11, 8081)]));
    // The egress gateway is selected by no Gateway yet.
    let e = egress(&state, &pods);
    assert!(e
        .route_tables
        .values()
        .all(|rt| rt.virtual_hosts.is_empty()));
}

// Istio: two Gateways (service-a-gw, service-b-gw) on port 80 with hosts `*` share the
// ingress listener; the VirtualServices bound to each give virtual hosts `*` whose
// routes are merged, so BOTH `/service-a` and `/service-b` route.
#[test]
fn istio_course_duplicate_star_vhosts_merge_routes_on_ingress() {
    let store = course_store(2);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = ingress(&state, &pods);
    let rt = t.route_table(80).expect("http.80");
    assert_eq!(rt.name, "http.80");
    assert_eq!(rt.virtual_hosts.len(), 1, "one merged `*` virtual host");
    assert_eq!(
        outcome(&t, 80, &get("gw", "/service-a")),
        svc_cluster("service-a-srv", 80)
    );
    assert_eq!(
        outcome(&t, 80, &get("gw", "/service-b")),
        svc_cluster("producer-internal-host", 80)
    );
    let route = route_for(&t, 80, &get("gw", "/service-b")).expect("route");
    assert_eq!(
        forward(route)
            .uri_rewrite
            .as_ref()
            .map(|r| r.apply("/service-b")),
        Some("/".into())
    );
}

// Istio: step 2, ServiceA's sidecar routes producer-internal-host:80 to the Service
// of that name, whose endpoint is ServiceB's pod at targetPort 8082.
#[test]
fn istio_course_step2_producer_internal_host_reaches_service_b() {
    let store = course_store(2);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host:80", "/"),
        svc_cluster("producer-internal-host", 80)
    );
    let c = &t.clusters[&svc_cluster("producer-internal-host", 80)];
    assert_eq!(c.endpoints, ClusterEndpoints::Static(vec![addr(12, 8082)]));
}

fn share_of(t: &ProxyTables, cluster: &str) -> usize {
    let route = route_for(t, 80, &get("producer-internal-host", "/")).expect("route");
    let f = forward(route);
    (0..100u64)
        .filter(|r| f.pick(*r).map(|c| c.cluster.as_str()) == Some(cluster))
        .count()
}

// Istio: weighted destinations split traffic by weight (50/50, 10/90, 100).
#[test]
fn istio_course_step3_weights_split_between_b_and_c() {
    let mesh = course_mesh();
    let pods = course_pods();
    let b = svc_cluster("producer-internal-host", 80);
    let c = svc_cluster("service-c-srv", 80);
    let mut store = course_store(3);
    {
        let state = MeshState::new(&store, &mesh, &pods);
        let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
        assert_eq!((share_of(&t, &b), share_of(&t, &c)), (50, 50));
    }
    apply_example(&mut store, "producer-internal-host-10-c-vs.yml");
    {
        let state = MeshState::new(&store, &mesh, &pods);
        let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
        assert_eq!((share_of(&t, &b), share_of(&t, &c)), (90, 10));
    }
    apply_example(&mut store, "producer-internal-host-90-c-vs.yml");
    {
        let state = MeshState::new(&store, &mesh, &pods);
        let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
        assert_eq!((share_of(&t, &b), share_of(&t, &c)), (10, 90));
    }
    apply_example(&mut store, "producer-internal-host-100-c-vs.yml");
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!((share_of(&t, &b), share_of(&t, &c)), (0, 100));
}

// Istio: step 3, in REGISTRY_ONLY mode ServiceC's sidecar refuses worldtimeapi.org
// (no ServiceEntry yet): 502 with no body.
#[test]
fn istio_course_step3_registry_only_refuses_worldtimeapi() {
    let store = course_store(3);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-c-deployment-1"));
    assert_eq!(
        outcome(&t, 80, &get("worldtimeapi.org", "/api/timezone/Europe")),
        "direct 502 \"\""
    );
}

// Istio: step 4, outbound-srv-c-to-worldtime-vs is bound to `mesh` and the egress
// Gateway; its rule for `mesh` sends worldtimeapi.org:80 from every sidecar to the
// egress gateway, its rule for the egress Gateway sends it on to worldtimeapi.org:80.
#[test]
fn istio_course_step4_egress_through_gateway() {
    let store = course_store(4);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    for name in [
        "service-a-v1-deployment-1",
        "service-b-deployment-1",
        "service-c-deployment-1",
    ] {
        let t = state.sidecar_tables(find(&pods, name));
        assert_eq!(
            cluster_of(&t, 80, "worldtimeapi.org", "/api/timezone/Europe"),
            EGRESS_CLUSTER,
            "{name}"
        );
        assert_eq!(
            cluster_of(&t, 80, "worldtimeapi.org:80", "/"),
            EGRESS_CLUSTER,
            "{name}"
        );
        let c = &t.clusters[EGRESS_CLUSTER];
        assert_eq!(
            c.endpoints,
            ClusterEndpoints::Static(vec![addr(22, 8080)]),
            "egress pod at targetPort 8080"
        );
    }
    let e = egress(&state, &pods);
    assert_eq!(
        cluster_of(&e, 80, "worldtimeapi.org", "/api/timezone/Europe"),
        WORLDTIME_CLUSTER
    );
    let c = &e.clusters[WORLDTIME_CLUSTER];
    assert_eq!(
        c.endpoints,
        ClusterEndpoints::Dns(vec![("worldtimeapi.org".to_string(), 80)])
    );
    // The egress Gateway's server only exposes worldtimeapi.org.
    assert!(vhost(&e, 80, "example.com").is_none());
    // The ingress gateway does not carry the egress rule.
    let i = ingress(&state, &pods);
    assert_eq!(
        outcome(&i, 80, &get("worldtimeapi.org", "/api/timezone/Europe")),
        "404"
    );
    assert!(!i.clusters.contains_key(WORLDTIME_CLUSTER));
}

// Istio: step 5, every call to producer-internal-host goes to ServiceC, and ServiceC's
// call to worldtimeapi.org still leaves through the egress gateway.
#[test]
fn istio_course_step5_all_traffic_to_service_c() {
    let store = course_store(5);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let a = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&a, 80, "producer-internal-host", "/"),
        svc_cluster("service-c-srv", 80)
    );
    assert_eq!(
        a.clusters[&svc_cluster("service-c-srv", 80)].endpoints,
        ClusterEndpoints::Static(vec![addr(13, 8083)])
    );
    let c = state.sidecar_tables(find(&pods, "service-c-deployment-1"));
    assert_eq!(
        cluster_of(&c, 80, "worldtimeapi.org", "/api/timezone/Europe"),
        EGRESS_CLUSTER
    );
}
