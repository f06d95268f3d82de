//! Sidecar outbound routing: virtual host domains, VirtualService binding and
//! precedence, the catch-all virtual host, source matching.

use crate::common::*;
use meshbox_config::{Kind, ObjectKey, Store};
use meshbox_routing::tables::CatchAll;
use meshbox_routing::MeshState;

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

const SERVICE_C_SVC: &str = "
apiVersion: v1
kind: Service
metadata:
  name: service-c-srv
spec:
  ports:
    - port: 80
      name: http-80
      targetPort: 8083
  selector:
    app: service-c-app
";

const PRODUCER_VHOST: &str = "producer-internal-host.dev-service-mesh.svc.cluster.local:80";

fn base_store() -> Store {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    apply(&mut store, NS, SERVICE_C_SVC);
    store
}

fn other_ns_pod() -> meshbox_routing::WorkloadInstance {
    pod("client-1", "other", &[("app", "client")], 31, &[9000])
}

// Istio: a sidecar's virtual host for a Service of its own namespace answers the short
// name, `name.ns`, `name.ns.svc` and the FQDN (GenerateAltVirtualHosts), and the route
// configuration ignores the port in host matching (IgnorePortInHostMatching).
#[test]
fn istio_short_name_expands_by_namespace_for_same_namespace_sidecar() {
    let store = base_store();
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    for host in [
        "producer-internal-host",
        "producer-internal-host:80",
        "producer-internal-host.dev-service-mesh",
        "producer-internal-host.dev-service-mesh:80",
        "producer-internal-host.dev-service-mesh.svc",
        "producer-internal-host.dev-service-mesh.svc.cluster.local",
        "producer-internal-host.dev-service-mesh.svc.cluster.local:80",
        "Producer-Internal-Host",
        "producer-internal-host:8080",
    ] {
        assert_eq!(vhost_name(&t, 80, host), PRODUCER_VHOST, "Host {host}");
    }
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: from another namespace the bare short name is not a domain of the service
// (it would mean `name.<own ns>`), but `name.ns` and `name.ns.svc` are.
#[test]
fn istio_other_namespace_sidecar_gets_name_ns_but_not_bare_short_name() {
    let store = base_store();
    let mesh = course_mesh();
    let pods = vec![other_ns_pod()];
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(&pods[0]);
    assert_eq!(vhost_name(&t, 80, "producer-internal-host"), "block_all");
    assert_eq!(vhost_name(&t, 80, "producer-internal-host:80"), "block_all");
    assert_eq!(
        vhost_name(&t, 80, "producer-internal-host.dev-service-mesh"),
        PRODUCER_VHOST
    );
    assert_eq!(
        vhost_name(&t, 80, "producer-internal-host.dev-service-mesh.svc"),
        PRODUCER_VHOST
    );
    assert_eq!(
        vhost_name(
            &t,
            80,
            "producer-internal-host.dev-service-mesh.svc.cluster.local"
        ),
        PRODUCER_VHOST
    );
}

// Istio (generateAltVirtualHostsForKubernetesService): the alternate names are `name`,
// `name.ns` and `name.ns.svc`; `name.ns.svc.cluster` is not one of them and falls to
// the catch-all virtual host.
#[test]
fn istio_alt_domains_do_not_include_name_ns_svc_cluster() {
    let store = base_store();
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        vhost_name(
            &t,
            80,
            "producer-internal-host.dev-service-mesh.svc.cluster"
        ),
        "block_all"
    );
}

// Istio: a VirtualService without `gateways` is bound to `mesh` (every sidecar).
#[test]
fn istio_gateways_omitted_means_mesh() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: to-c
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: service-c-srv
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("service-c-srv", 80)
    );
    // Also from another namespace, by `name.ns`.
    let other = vec![other_ns_pod()];
    let state = MeshState::new(&store, &mesh, &other);
    let t = state.sidecar_tables(&other[0]);
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host.dev-service-mesh", "/"),
        svc_cluster("service-c-srv", 80)
    );
}

// Istio: a VirtualService bound only to a Gateway is not used by sidecars; they keep
// the default route to the service itself.
#[test]
fn istio_vs_bound_only_to_gateway_does_not_affect_sidecars() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: gw-only
spec:
  hosts: [producer-internal-host]
  gateways: [service-a-gw]
  http:
    - route:
        - destination:
            host: service-c-srv
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: a VirtualService is bound by its top-level `gateways` only (PushContext indexes
// it by them); a rule whose `match.gateways` names `mesh` does not bind a VirtualService
// whose top-level list lacks `mesh`.
#[test]
fn istio_rule_level_match_gateways_does_not_bind_vs_to_mesh() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: gw-only
spec:
  hosts: [producer-internal-host]
  gateways: [service-a-gw]
  http:
    - match:
        - gateways: [mesh]
      route:
        - destination:
            host: service-c-srv
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: rule-level `match.gateways` overrides the top-level list: a rule for
// `mesh` only is not seen at the gateway and vice versa (sourceMatchHTTP).
#[test]
fn istio_rule_level_match_gateways_selects_rules_per_gateway() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: split
spec:
  hosts: [producer-internal-host]
  gateways: [mesh, service-a-gw]
  http:
    - match:
        - gateways: [service-a-gw]
      route:
        - destination:
            host: service-c-srv
    - route:
        - destination:
            host: producer-internal-host
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    let route = route_for(&t, 80, &get("producer-internal-host", "/")).expect("route");
    assert_eq!(route.source.as_ref().map(|s| s.rule), Some(1));
    assert_eq!(
        forward(route).clusters[0].cluster,
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: when two VirtualServices name the same host, the sidecar keeps the virtual
// host of the one created first (the later one is a duplicate virtual host).
#[test]
fn istio_first_created_vs_wins_for_same_host_on_sidecars() {
    let first = "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: zz-first
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: service-c-srv
";
    let second = "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: aa-second
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  http:
    - route:
        - destination:
            host: producer-internal-host
";
    let mut store = base_store();
    apply(&mut store, NS, first);
    apply(&mut store, NS, second);
    let mesh = course_mesh();
    let pods = course_pods();
    {
        let state = MeshState::new(&store, &mesh, &pods);
        let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
        assert_eq!(
            cluster_of(&t, 80, "producer-internal-host", "/"),
            svc_cluster("service-c-srv", 80)
        );
    }
    // Configuring the older one again keeps its creation time.
    apply(
        &mut store,
        NS,
        &first.replace(
            "service-c-srv",
            "service-c-srv.dev-service-mesh.svc.cluster.local",
        ),
    );
    {
        let state = MeshState::new(&store, &mesh, &pods);
        let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
        assert_eq!(
            cluster_of(&t, 80, "producer-internal-host", "/"),
            svc_cluster("service-c-srv", 80)
        );
    }
    // Deleting it lets the other apply.
    store.delete(&ObjectKey {
        kind: Kind::VirtualService,
        namespace: NS.into(),
        name: "zz-first".into(),
    });
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: a VirtualService none of whose rules apply on a port yields no virtual host
// there (BuildHTTPRoutesForVirtualService: "no routes matched"), so it does not hide a
// later VirtualService for the same host.
#[test]
fn istio_older_vs_without_routes_on_port_does_not_shadow_later_vs() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: only-81
spec:
  hosts: [producer-internal-host]
  http:
    - match:
        - port: 81
      route:
        - destination:
            host: producer-internal-host
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: to-c
spec:
  hosts: [producer-internal-host]
  http:
    - route:
        - destination:
            host: service-c-srv
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&t, 80, "producer-internal-host", "/"),
        svc_cluster("service-c-srv", 80)
    );
}

// Istio (meshConfig.outboundTrafficPolicy REGISTRY_ONLY): a host that is no service
// lands on the `block_all` virtual host, which answers 502 with an empty body.
#[test]
fn istio_registry_only_unknown_host_hits_block_all_502() {
    let store = base_store();
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-c-deployment-1"));
    let vh = vhost(&t, 80, "worldtimeapi.org").expect("catch-all");
    assert_eq!(vh.name, "block_all");
    assert_eq!(vh.catch_all, Some(CatchAll::BlockAll));
    assert_eq!(
        outcome(&t, 80, &get("worldtimeapi.org", "/api/timezone/Europe")),
        "direct 502 \"\""
    );
    // A port no service uses: the catch-all table only.
    let table = state.catch_all_table(8081);
    let vh = table
        .select_virtual_host("example.com:8081")
        .expect("catch-all");
    assert_eq!(vh.catch_all, Some(CatchAll::BlockAll));
}

// Istio (ALLOW_ANY, the default profile): unknown hosts go to the PassthroughCluster
// through the `allow_any` virtual host.
#[test]
fn istio_allow_any_unknown_host_passes_through() {
    let store = base_store();
    let mesh = mesh_with(&[]);
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-c-deployment-1"));
    let vh = vhost(&t, 80, "worldtimeapi.org").expect("catch-all");
    assert_eq!(vh.name, "allow_any");
    assert_eq!(vh.catch_all, Some(CatchAll::AllowAny));
    assert_eq!(
        outcome(&t, 80, &get("worldtimeapi.org", "/")),
        "passthrough"
    );
    let table = state.catch_all_table(9999);
    let vh = table
        .select_virtual_host("example.com:9999")
        .expect("catch-all");
    assert_eq!(vh.catch_all, Some(CatchAll::AllowAny));
    let route = vh
        .select_route(&get("example.com:9999", "/"))
        .expect("route");
    assert!(matches!(
        route.action,
        meshbox_routing::RouteAction::Passthrough
    ));
}

// Istio: a mesh VirtualService for a host that is no service gets a virtual host on
// port 80 only ("enable VirtualService configuration to affect traffic to hosts
// outside of the service registry on port 80"), whatever port its destination uses.
#[test]
fn istio_vs_for_non_registry_host_gets_vhost_on_port_80_only() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: v1
kind: Service
metadata:
  name: web-8080
spec:
  ports:
    - port: 8080
      name: http
  selector:
    app: web
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: example
spec:
  hosts: [example.com]
  http:
    - route:
        - destination:
            host: web-8080
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(vhost_name(&t, 80, "example.com"), "example.com:80");
    assert_eq!(
        cluster_of(&t, 80, "example.com", "/"),
        svc_cluster("web-8080", 8080)
    );
    assert_eq!(vhost_name(&t, 8080, "example.com"), "block_all");
}

// Istio (sourceMatchHTTP): a match with `sourceLabels` applies only to sidecars whose
// pod has those labels; `sourceNamespace` only to sidecars of that namespace.
#[test]
fn istio_source_labels_and_namespace_limit_rules_to_matching_sidecars() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: by-source
spec:
  hosts: [producer-internal-host]
  http:
    - match:
        - sourceLabels:
            app: service-a-app
      route:
        - destination:
            host: service-c-srv
    - match:
        - sourceNamespace: other
      route:
        - destination:
            host: service-c-srv
            port:
              number: 80
    - route:
        - destination:
            host: producer-internal-host
",
    );
    let mesh = course_mesh();
    let mut pods = course_pods();
    pods.push(other_ns_pod());
    let state = MeshState::new(&store, &mesh, &pods);
    let a = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(
        cluster_of(&a, 80, "producer-internal-host", "/"),
        svc_cluster("service-c-srv", 80)
    );
    let c = state.sidecar_tables(find(&pods, "service-c-deployment-1"));
    assert_eq!(
        cluster_of(&c, 80, "producer-internal-host", "/"),
        svc_cluster("producer-internal-host", 80)
    );
    let other = state.sidecar_tables(find(&pods, "client-1"));
    let route = route_for(
        &other,
        80,
        &get("producer-internal-host.dev-service-mesh", "/"),
    )
    .expect("route");
    assert_eq!(route.source.as_ref().map(|s| s.rule), Some(1));
}

// Istio (GetDestinationCluster): a destination without a port on a service with
// several ports uses the port the request came in on (the listener port).
#[test]
fn istio_destination_port_defaults_to_listener_port_for_multi_port_service() {
    let mut store = base_store();
    apply(
        &mut store,
        NS,
        "
apiVersion: v1
kind: Service
metadata:
  name: multi
spec:
  ports:
    - port: 80
      name: http
    - port: 8080
      name: http-alt
  selector:
    app: multi
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: multi
spec:
  hosts: [multi]
  http:
    - route:
        - destination:
            host: multi
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    assert_eq!(cluster_of(&t, 80, "multi", "/"), svc_cluster("multi", 80));
    assert_eq!(
        cluster_of(&t, 8080, "multi:8080", "/"),
        svc_cluster("multi", 8080)
    );
    assert!(t.clusters.contains_key(&svc_cluster("multi", 8080)));
}
