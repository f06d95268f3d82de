//! Clusters and their endpoints: Kubernetes Services (port to targetPort, selector,
//! namespace), ServiceEntries (DNS, NONE, STATIC), subsets, missing destinations.

use crate::common::*;
use meshbox_config::Store;
use meshbox_routing::tables::{Cluster, ClusterEndpoints};
use meshbox_routing::{MeshState, WorkloadInstance};

const PRODUCER_SVC: &str = "
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
";

fn client() -> WorkloadInstance {
    pod(
        "service-a-v1-deployment-1",
        NS,
        &[("app", "service-a-app")],
        11,
        &[8081],
    )
}

fn producer_endpoints(store: &Store, pods: &[WorkloadInstance]) -> ClusterEndpoints {
    let mesh = course_mesh();
    let state = MeshState::new(store, &mesh, pods);
    let t = state.sidecar_tables(&client());
    t.clusters[&svc_cluster("producer-internal-host", 80)]
        .endpoints
        .clone()
}

// Istio/Kubernetes: a Service port's endpoints are the selected pods at the Service's
// `targetPort` (the pod's inbound address for that container port), not at `port`.
#[test]
fn istio_service_port_maps_to_target_port() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    let pods = vec![
        client(),
        pod(
            "b-1",
            NS,
            &[("app", "service-b-app")],
            12,
            &[80, 8082, 9000],
        ),
    ];
    assert_eq!(
        producer_endpoints(&store, &pods),
        ClusterEndpoints::Static(vec![addr(12, 8082)])
    );
}

// Kubernetes: a named `targetPort` is looked up in each pod's named container ports.
#[test]
fn istio_named_target_port_uses_pod_named_ports() {
    let mut store = Store::new();
    apply(
        &mut store,
        NS,
        &PRODUCER_SVC.replace("targetPort: 8082", "targetPort: web"),
    );
    let mut b1 = pod("b-1", NS, &[("app", "service-b-app")], 12, &[8082]);
    b1.named_ports.insert("web".into(), 8082);
    let mut b2 = pod("b-2", NS, &[("app", "service-b-app")], 14, &[9090]);
    b2.named_ports.insert("web".into(), 9090);
    let b3 = pod("b-3-no-name", NS, &[("app", "service-b-app")], 15, &[8082]);
    let pods = vec![client(), b1, b2, b3];
    assert_eq!(
        producer_endpoints(&store, &pods),
        ClusterEndpoints::Static(vec![addr(12, 8082), addr(14, 9090)])
    );
}

// Kubernetes: a Service selects pods of its own namespace whose labels include its
// selector; other pods are not endpoints. A Service with no endpoints still has a
// cluster (Envoy answers 503 UH).
#[test]
fn istio_endpoints_only_from_selected_pods_of_same_namespace() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    let pods = vec![
        client(),
        pod(
            "b-1",
            NS,
            &[("app", "service-b-app"), ("version", "v1")],
            12,
            &[8082],
        ),
        pod(
            "b-other-ns",
            "other",
            &[("app", "service-b-app")],
            16,
            &[8082],
        ),
        pod("c-1", NS, &[("app", "service-c-app")], 13, &[8082]),
    ];
    assert_eq!(
        producer_endpoints(&store, &pods),
        ClusterEndpoints::Static(vec![addr(12, 8082)])
    );
    assert_eq!(
        producer_endpoints(&store, &[client()]),
        ClusterEndpoints::Static(vec![])
    );
}

// Envoy's default load balancing for Istio clusters is round robin: next_index cycles.
#[test]
fn istio_round_robin_cycles_endpoints() {
    let c = Cluster::new(
        "outbound|80||x".into(),
        ClusterEndpoints::Static(vec![addr(1, 1), addr(2, 1), addr(3, 1)]),
        80,
    );
    let seq: Vec<usize> = (0..7).map(|_| c.next_index(3)).collect();
    assert_eq!(seq, [0, 1, 2, 0, 1, 2, 0]);
    assert_eq!(c.next_index(1), 0);
    assert_eq!(c.next_index(0), 0);
}

fn service_entry(resolution: &str, extra: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [ext.example.com]
  ports:
    - number: 80
      name: http
      protocol: HTTP
{extra}
  resolution: {resolution}
  location: MESH_EXTERNAL
"
    )
}

fn ext_cluster(store: &Store) -> (ClusterEndpoints, u32) {
    let mesh = course_mesh();
    let pods = vec![client()];
    let state = MeshState::new(store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    assert_eq!(
        cluster_of(&t, 80, "ext.example.com", "/"),
        "outbound|80||ext.example.com"
    );
    let c = &t.clusters["outbound|80||ext.example.com"];
    (c.endpoints.clone(), c.port)
}

// Istio: a DNS ServiceEntry without endpoints resolves its host; the port traffic goes
// to is the port's `targetPort` when set (here 443 for port 80), else the port.
#[test]
fn istio_service_entry_dns_endpoints_and_target_port() {
    let mut store = Store::new();
    apply(&mut store, NS, &service_entry("DNS", ""));
    assert_eq!(
        ext_cluster(&store),
        (
            ClusterEndpoints::Dns(vec![("ext.example.com".into(), 80)]),
            80
        )
    );
    let mut store = Store::new();
    apply(
        &mut store,
        NS,
        &service_entry("DNS", "      targetPort: 443"),
    );
    assert_eq!(
        ext_cluster(&store),
        (
            ClusterEndpoints::Dns(vec![("ext.example.com".into(), 443)]),
            80
        )
    );
}

// Istio: the course's ServiceEntry (worldtime-host-se.yml) gives a DNS cluster for
// worldtimeapi.org:80, and the sidecar's virtual host for it.
#[test]
fn istio_course_service_entry_is_dns_cluster() {
    let mut store = Store::new();
    apply_example(&mut store, "worldtime-host-se.yml");
    let mesh = course_mesh();
    let pods = vec![client()];
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    assert_eq!(
        cluster_of(&t, 80, "worldtimeapi.org", "/api/timezone/Europe"),
        "outbound|80||worldtimeapi.org"
    );
    assert_eq!(
        t.clusters["outbound|80||worldtimeapi.org"].endpoints,
        ClusterEndpoints::Dns(vec![("worldtimeapi.org".into(), 80)])
    );
}

// Istio: resolution NONE forwards to the request's original destination.
#[test]
fn istio_service_entry_resolution_none_is_original_destination() {
    let mut store = Store::new();
    apply(&mut store, NS, &service_entry("NONE", ""));
    assert_eq!(ext_cluster(&store).0, ClusterEndpoints::OriginalDestination);
}

// Istio: resolution STATIC uses the endpoints' addresses at the target port.
#[test]
fn istio_service_entry_static_uses_endpoint_addresses() {
    let mut store = Store::new();
    let se = service_entry("STATIC", "").replace(
        "  resolution: STATIC",
        "  resolution: STATIC\n  endpoints:\n    - address: 127.0.0.41\n    - address: 127.0.0.42",
    );
    apply(&mut store, NS, &se);
    assert_eq!(
        ext_cluster(&store).0,
        ClusterEndpoints::Static(vec![addr(41, 80), addr(42, 80)])
    );
}

fn route_vs(dest: &str) -> String {
    format!(
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
{dest}
"
    )
}

// Istio: a destination host that is no service still gives a route, to a cluster that
// does not exist (Envoy answers 503 with flag NC).
#[test]
fn istio_unknown_destination_host_names_absent_cluster() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    apply(
        &mut store,
        NS,
        &route_vs("            host: nope\n            port:\n              number: 80"),
    );
    let mesh = course_mesh();
    let pods = vec![client()];
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    let cluster = cluster_of(&t, 80, "producer-internal-host", "/");
    assert_eq!(cluster, svc_cluster("nope", 80));
    assert!(!t.clusters.contains_key(&cluster));
    // Without a port, the listener port is used (GetDestinationCluster).
    let mut store2 = Store::new();
    apply(&mut store2, NS, PRODUCER_SVC);
    apply(
        &mut store2,
        NS,
        &route_vs("            host: nope.example.com"),
    );
    let state = MeshState::new(&store2, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        "outbound|80||nope.example.com"
    );
    // A port the service does not have: no cluster either.
    let mut store3 = Store::new();
    apply(&mut store3, NS, PRODUCER_SVC);
    apply(&mut store3, NS, &route_vs("            host: producer-internal-host\n            port:\n              number: 8080"));
    let state = MeshState::new(&store3, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    let cluster = cluster_of(&t, 80, "producer-internal-host", "/");
    assert_eq!(cluster, svc_cluster("producer-internal-host", 8080));
    assert!(!t.clusters.contains_key(&cluster));
}

const SUBSET_DEST: &str = "            host: producer-internal-host\n            subset: v2";

fn producer_pods() -> Vec<WorkloadInstance> {
    vec![
        client(),
        pod(
            "b-v1",
            NS,
            &[("app", "service-b-app"), ("version", "v1")],
            12,
            &[8082],
        ),
        pod(
            "b-v2",
            NS,
            &[("app", "service-b-app"), ("version", "v2")],
            14,
            &[8082],
        ),
    ]
}

fn destination_rule(ns: &str, host: &str, v2_labels: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata:
  name: producer
  namespace: {ns}
spec:
  host: {host}
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
{v2_labels}
"
    )
}

// Istio: a subset no DestinationRule defines has no cluster (503 NC).
#[test]
fn istio_subset_without_destination_rule_has_no_cluster() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    apply(&mut store, NS, &route_vs(SUBSET_DEST));
    let mesh = course_mesh();
    let pods = producer_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    let cluster = cluster_of(&t, 80, "producer-internal-host", "/");
    assert_eq!(
        cluster,
        "outbound|80|v2|producer-internal-host.dev-service-mesh.svc.cluster.local"
    );
    assert!(!t.clusters.contains_key(&cluster));
}

// Istio: a subset defined by a DestinationRule selects only the service's pods that
// have the subset's labels.
#[test]
fn istio_subset_with_destination_rule_selects_matching_pods() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    apply(
        &mut store,
        NS,
        &destination_rule(NS, "producer-internal-host", "        version: v2"),
    );
    apply(&mut store, NS, &route_vs(SUBSET_DEST));
    let mesh = course_mesh();
    let pods = producer_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    let cluster = cluster_of(&t, 80, "producer-internal-host", "/");
    assert_eq!(
        t.clusters[&cluster].endpoints,
        ClusterEndpoints::Static(vec![addr(14, 8082)])
    );
}

// Istio: DestinationRules are looked up in the client's namespace first, then the
// service's namespace, then the root namespace.
#[test]
fn istio_destination_rule_of_client_namespace_wins() {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    apply(
        &mut store,
        NS,
        &destination_rule(NS, "producer-internal-host", "        version: v2"),
    );
    apply(
        &mut store,
        "other",
        &destination_rule(
            "other",
            "producer-internal-host.dev-service-mesh.svc.cluster.local",
            "        version: v1",
        ),
    );
    apply(
        &mut store,
        "other",
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  http:
    - route:
        - destination:
            host: producer-internal-host.dev-service-mesh.svc.cluster.local
            subset: v2
",
    );
    let mesh = course_mesh();
    let mut pods = producer_pods();
    pods.push(pod(
        "client-other",
        "other",
        &[("app", "client")],
        31,
        &[9000],
    ));
    let state = MeshState::new(&store, &mesh, &pods);
    // From `other`, its own DestinationRule defines v2 as version v1.
    let t = state.sidecar_tables(find(&pods, "client-other"));
    let cluster = cluster_of(&t, 80, "producer-internal-host.dev-service-mesh", "/");
    assert_eq!(
        t.clusters[&cluster].endpoints,
        ClusterEndpoints::Static(vec![addr(12, 8082)])
    );
    // From the service's namespace, the service namespace's rule applies.
    let t = state.sidecar_tables(&pods[0]);
    let cluster = cluster_of(&t, 80, "producer-internal-host", "/");
    assert_eq!(
        t.clusters[&cluster].endpoints,
        ClusterEndpoints::Static(vec![addr(14, 8082)])
    );
}

// Istio: an endpoint's `ports` map (ServiceEntry port name → the endpoint's port)
// overrides the port's target for that endpoint (WorkloadEntry.ports).
#[test]
fn istio_service_entry_endpoint_ports_override_the_target() {
    let mut store = Store::new();
    let se = service_entry("STATIC", "").replace(
        "  resolution: STATIC",
        "  resolution: STATIC\n  endpoints:\n    - address: 127.0.0.41\n      ports:\n        http: 9001\n    - address: 127.0.0.42",
    );
    apply(&mut store, NS, &se);
    assert_eq!(
        ext_cluster(&store).0,
        ClusterEndpoints::Static(vec![addr(41, 9001), addr(42, 80)])
    );
    let mut store = Store::new();
    let se = service_entry("DNS", "").replace(
        "  resolution: DNS",
        "  resolution: DNS\n  endpoints:\n    - address: a.example.com\n      ports:\n        http: 8443",
    );
    apply(&mut store, NS, &se);
    assert_eq!(
        ext_cluster(&store).0,
        ClusterEndpoints::Dns(vec![("a.example.com".into(), 8443)])
    );
}
