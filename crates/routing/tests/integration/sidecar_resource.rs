//! The Sidecar resource, exportTo and VirtualService delegation, as Istio applies them
//! when it builds a proxy's tables:
//!
//! - Sidecar selection and scope: pilot/pkg/model/push_context.go (getSidecarScope)
//!   and pilot/pkg/model/sidecar.go (ConvertToSidecarScope, selectServices,
//!   GetEgressListenerForRDS); istio.io/latest/docs/reference/config/networking/sidecar.
//! - exportTo: push_context.go (initServiceRegistry, initVirtualServices,
//!   VirtualServicesForGateway, setDestinationRules, destinationRule).
//! - Delegation: pilot/pkg/model/virtualservice.go (mergeVirtualServicesIfNeeded,
//!   mergeHTTPRoute, mergeHTTPMatchRequest, hasConflict).

use crate::common::*;
use meshbox_config::{MeshOptions, OutboundPolicy, Store};
use meshbox_routing::tables::RouteAction;
use meshbox_routing::trace::{render, trace, Step, TraceContext, TraceRequest};
use meshbox_routing::{MeshState, ProxyTables, WorkloadInstance};

const SERVICES: &str = "
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
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: worldtime
spec:
  hosts: [worldtimeapi.org]
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
---
apiVersion: v1
kind: Service
metadata:
  name: backend
  namespace: other
spec:
  ports:
  - port: 80
    name: http
    targetPort: 9000
  selector:
    app: other
";

const P: &str = "producer-internal-host.dev-service-mesh.svc.cluster.local";
const C: &str = "service-c-srv.dev-service-mesh.svc.cluster.local";
const BACKEND: &str = "backend.other.svc.cluster.local";
const INGRESS: &str = "istio-ingressgateway.istio-system.svc.cluster.local";
const WORLDTIME: &str = "worldtimeapi.org";

const SERVICE_A: &str = "service-a-v1-deployment-1";
const SERVICE_C: &str = "service-c-deployment-1";
const OTHER: &str = "other-1";

/// What a sidecar's catch-all does: REGISTRY_ONLY's 502, ALLOW_ANY's passthrough.
const BLOCK: &str = "direct 502 \"\"";
const PASS: &str = "passthrough";

fn store_with(extra: &str) -> Store {
    let mut store = Store::new();
    apply(&mut store, NS, SERVICES);
    if !extra.trim().is_empty() {
        apply(&mut store, NS, extra);
    }
    store
}

fn pods() -> Vec<WorkloadInstance> {
    let mut pods = course_pods();
    pods.push(pod(OTHER, "other", &[("app", "other")], 31, &[9000]));
    pods
}

fn registry_only() -> MeshOptions {
    mesh_with(&["meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY"])
}

fn allow_any() -> MeshOptions {
    mesh_with(&["meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY"])
}

fn sidecar_of(store: &Store, mesh: &MeshOptions, name: &str) -> ProxyTables {
    let pods = pods();
    MeshState::new(store, mesh, &pods).sidecar_tables(find(&pods, name))
}

/// Where a GET for `authority` on `port` goes, as the proxy decides it: a cluster,
/// or the catch-all (also when no route table serves the port).
fn fate(t: &ProxyTables, port: u32, authority: &str) -> String {
    fate_of(t, port, authority, "/")
}

fn fate_of(t: &ProxyTables, port: u32, authority: &str, path: &str) -> String {
    match t.route_table(port) {
        None => match t.outbound_policy {
            OutboundPolicy::AllowAny => PASS.to_string(),
            OutboundPolicy::RegistryOnly => BLOCK.to_string(),
        },
        Some(_) => outcome(t, port, &get(authority, path)),
    }
}

fn cluster(host: &str) -> String {
    format!("outbound|80||{host}")
}

// ---------------------------------------------------------------------------
// Which Sidecar applies
// ---------------------------------------------------------------------------

// Istio (getSidecarScope): a Sidecar with a workloadSelector applies to the pods of
// its namespace that carry its labels, and only to them.
#[test]
fn istio_sidecar_with_workload_selector_applies_to_matching_pods_only() {
    let store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: service-c-registry-only
spec:
  workloadSelector:
    labels:
      app: service-c-app
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
",
    );
    let mesh = allow_any();
    let c = sidecar_of(&store, &mesh, SERVICE_C);
    assert_eq!(c.outbound_policy, OutboundPolicy::RegistryOnly);
    assert_eq!(fate(&c, 80, "example.com"), BLOCK);
    assert_eq!(fate(&c, 8080, "example.com:8080"), BLOCK);
    // Without egress, the Sidecar imports */*: everything stays visible.
    assert_eq!(fate(&c, 80, "producer-internal-host"), cluster(P));
    assert_eq!(fate(&c, 80, WORLDTIME), cluster(WORLDTIME));
    let a = sidecar_of(&store, &mesh, SERVICE_A);
    assert_eq!(a.outbound_policy, OutboundPolicy::AllowAny);
    assert_eq!(fate(&a, 80, "example.com"), PASS);
}

// Istio: sidecars with a selector take precedence; the namespace's selector-less
// Sidecar applies to the other pods of the namespace.
#[test]
fn istio_namespace_sidecar_applies_when_no_selector_matches() {
    let store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts: ['./producer-internal-host.dev-service-mesh.svc.cluster.local']
  outboundTrafficPolicy:
    mode: ALLOW_ANY
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: service-c
spec:
  workloadSelector:
    labels:
      app: service-c-app
  egress:
  - hosts: ['*/*']
",
    );
    let mesh = registry_only();
    let a = sidecar_of(&store, &mesh, SERVICE_A);
    assert_eq!(a.outbound_policy, OutboundPolicy::AllowAny);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(P));
    // worldtimeapi.org is not imported: like an unknown host, it passes through.
    assert_eq!(fate(&a, 80, WORLDTIME), PASS);
    let c = sidecar_of(&store, &mesh, SERVICE_C);
    assert_eq!(c.outbound_policy, OutboundPolicy::RegistryOnly);
    assert_eq!(fate(&c, 80, WORLDTIME), cluster(WORLDTIME));
    assert_eq!(fate(&c, 80, "example.com"), BLOCK);
}

// Istio: the root namespace's selector-less Sidecar applies to every namespace without
// a Sidecar of its own; `./` in it means the namespace of the proxy.
#[test]
fn istio_root_namespace_sidecar_applies_to_namespaces_without_their_own() {
    let store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  egress:
  - hosts: ['./*', 'istio-system/*']
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
",
    );
    let mesh = allow_any();
    let a = sidecar_of(&store, &mesh, SERVICE_A);
    assert_eq!(a.outbound_policy, OutboundPolicy::RegistryOnly);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(P));
    assert_eq!(fate(&a, 80, INGRESS), cluster(INGRESS));
    assert_eq!(fate(&a, 80, BACKEND), BLOCK);
    let other = sidecar_of(&store, &mesh, OTHER);
    assert_eq!(fate(&other, 80, "backend"), cluster(BACKEND));
    assert_eq!(fate(&other, 80, P), BLOCK);

    // A namespace with its own selector-less Sidecar does not use the root's.
    let mut store = store;
    apply(
        &mut store,
        "other",
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  egress:
  - hosts: ['*/*']
",
    );
    let other = sidecar_of(&store, &mesh, OTHER);
    assert_eq!(other.outbound_policy, OutboundPolicy::AllowAny);
    assert_eq!(fate(&other, 80, P), cluster(P));
}

// Istio: a Sidecar with a selector in the root namespace applies only to the root
// namespace's own pods.
#[test]
fn istio_root_namespace_sidecar_with_selector_stays_in_the_root_namespace() {
    let store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: for-service-a
  namespace: istio-system
spec:
  workloadSelector:
    labels:
      app: service-a-app
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
",
    );
    let a = sidecar_of(&store, &allow_any(), SERVICE_A);
    assert_eq!(a.outbound_policy, OutboundPolicy::AllowAny);
}

// Istio: gateways always use the default scope; no Sidecar resource changes them.
#[test]
fn istio_gateways_ignore_sidecar_resources() {
    let mut store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: istio-system
spec:
  egress:
  - hosts: ['~/*']
  outboundTrafficPolicy:
    mode: REGISTRY_ONLY
",
    );
    for f in [
        "serviceA-srv.yml",
        "serviceA-gw.yml",
        "inbound-to-serviceA-vs.yml",
    ] {
        apply_example(&mut store, f);
    }
    let pods = pods();
    let mesh = allow_any();
    let state = MeshState::new(&store, &mesh, &pods);
    let gw = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(&gw, 80, &get("192.168.49.2", "/service-a")),
        svc_cluster("service-a-srv", 80)
    );
}

// ---------------------------------------------------------------------------
// egress hosts
// ---------------------------------------------------------------------------

fn sidecar_for_service_a(egress: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: service-a
spec:
  workloadSelector:
    labels:
      app: service-a-app
  egress:
{egress}
"
    )
}

// Istio: `./*` imports the services of the sidecar's namespace only; a service not
// imported is handled like an unknown host (the catch-all).
#[test]
fn istio_egress_dot_namespace_imports_only_own_namespace() {
    let store = store_with(&sidecar_for_service_a("  - hosts: ['./*']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(P));
    assert_eq!(fate(&a, 80, WORLDTIME), cluster(WORLDTIME));
    assert_eq!(fate(&a, 80, BACKEND), BLOCK);
    assert_eq!(fate(&a, 80, INGRESS), BLOCK);
    assert!(!a.clusters.contains_key(&cluster(BACKEND)));
    // The same hidden service under ALLOW_ANY passes through, outside the mesh's routing.
    let a = sidecar_of(&store, &allow_any(), SERVICE_A);
    assert_eq!(fate(&a, 80, BACKEND), PASS);
    // Other pods keep seeing everything.
    let c = sidecar_of(&store, &registry_only(), SERVICE_C);
    assert_eq!(fate(&c, 80, BACKEND), cluster(BACKEND));
}

// Istio: `ns/host` imports that host from that namespace only; `*/host` from any.
#[test]
fn istio_egress_namespace_and_host() {
    let store = store_with(&sidecar_for_service_a(
        "  - hosts: ['other/backend.other.svc.cluster.local', '*/worldtimeapi.org']",
    ));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, BACKEND), cluster(BACKEND));
    assert_eq!(fate(&a, 80, WORLDTIME), cluster(WORLDTIME));
    assert_eq!(fate(&a, 80, "producer-internal-host"), BLOCK);
    assert_eq!(fate(&a, 80, C), BLOCK);

    // worldtimeapi.org's ServiceEntry lives in dev-service-mesh, not in `other`.
    let store = store_with(&sidecar_for_service_a(
        "  - hosts: ['other/worldtimeapi.org']",
    ));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, WORLDTIME), BLOCK);
}

// Istio: `~/*` imports nothing (no service is in namespace `~`).
#[test]
fn istio_egress_tilde_imports_nothing() {
    let store = store_with(&sidecar_for_service_a("  - hosts: ['~/*']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert!(a.route_tables.is_empty(), "{:?}", a.route_tables.keys());
    assert_eq!(fate(&a, 80, "producer-internal-host"), BLOCK);
}

// In a pod, cluster DNS resolves every Kubernetes Service name whatever the Sidecar
// imports (and kube-proxy sends a ClusterIP to the Service's endpoints): the tables
// keep them apart from Envoy's routes, so a hidden Service meets the catch-all
// rather than a DNS failure. ServiceEntry hosts are no cluster DNS names.
#[test]
fn hidden_kubernetes_services_stay_known_to_cluster_dns() {
    let store = store_with(&sidecar_for_service_a("  - hosts: ['~/*']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(
        a.cluster_address("producer-internal-host", 80),
        Some(&[addr(12, 8082)][..])
    );
    assert_eq!(
        a.cluster_address("Producer-Internal-Host.dev-service-mesh.svc.", 80),
        Some(&[addr(12, 8082)][..])
    );
    assert_eq!(
        a.cluster_address("backend.other", 80),
        Some(&[addr(31, 9000)][..])
    );
    assert_eq!(a.cluster_address(BACKEND, 80), Some(&[addr(31, 9000)][..]));
    assert_eq!(
        a.cluster_address("backend", 80),
        None,
        "short names resolve in the pod's namespace only"
    );
    assert_eq!(
        a.cluster_address("producer-internal-host", 8080),
        Some(&[][..])
    );
    assert_eq!(a.cluster_address(WORLDTIME, 80), None);
    let pods = pods();
    let mesh = registry_only();
    let state = MeshState::new(&store, &mesh, &pods);
    assert!(state
        .gateway_tables(&ingress_pod(), GATEWAY_PORTS)
        .cluster_dns
        .is_empty());
}

// Istio (host.Name SubsetOf): `*.example.com` imports the hosts under it; a DNS name in
// egress hosts is matched as a fully qualified name, so a short name imports nothing.
#[test]
fn istio_egress_wildcard_and_fqdn_host_names() {
    let se = "
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: example
spec:
  hosts: [api.example.com, example.org]
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
";
    let store = store_with(&(sidecar_for_service_a("  - hosts: ['*/*.example.com']") + se));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "api.example.com"), cluster("api.example.com"));
    assert_eq!(fate(&a, 80, "example.org"), BLOCK);

    let store = store_with(&sidecar_for_service_a(
        "  - hosts: ['./producer-internal-host']",
    ));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), BLOCK);
}

const PRODUCER_TO_C_VS: &str = "
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: producer-vs
spec:
  hosts: [producer-internal-host]
  http:
  - route:
    - destination:
        host: service-c-srv
";

// Istio (sidecar.go): a VirtualService is imported with its host; the services it
// routes to get clusters even when the egress hosts leave them out, but no virtual
// host of their own.
#[test]
fn istio_virtual_service_destinations_get_clusters_not_virtual_hosts() {
    let store = store_with(
        &(sidecar_for_service_a(
            "  - hosts: ['./producer-internal-host.dev-service-mesh.svc.cluster.local']",
        ) + PRODUCER_TO_C_VS),
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(C));
    assert!(a.clusters.contains_key(&cluster(C)));
    assert_eq!(fate(&a, 80, "service-c-srv"), BLOCK);
}

// Istio (SelectVirtualServices): a VirtualService is imported through the namespace
// it lives in: one in `other` for a host of dev-service-mesh needs `other/...` or
// `*/...` in the egress hosts.
#[test]
fn istio_virtual_service_is_imported_through_its_own_namespace() {
    let vs_in_other = "
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: producer-to-backend
  namespace: other
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  http:
  - route:
    - destination:
        host: backend
";
    // No Sidecar: the public VirtualService applies.
    let store = store_with(vs_in_other);
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(BACKEND));
    // Importing `other/backend...` does not import a VirtualService for another host.
    let store = store_with(
        &(sidecar_for_service_a("  - hosts: ['./*', 'other/backend.other.svc.cluster.local']")
            + vs_in_other),
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(P));
    // `other/producer-internal-host...` does.
    let store = store_with(
        &(sidecar_for_service_a(
            "  - hosts: ['./*', 'other/producer-internal-host.dev-service-mesh.svc.cluster.local']",
        ) + vs_in_other),
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(BACKEND));
}

const MULTI_PORT_SVC: &str = "
---
apiVersion: v1
kind: Service
metadata:
  name: multi
spec:
  ports:
  - port: 80
    name: http
    targetPort: 8082
  - port: 9080
    name: http-alt
    targetPort: 8082
  selector:
    app: service-b-app
";

// Istio (GetEgressListenerForRDS, serviceMatchingListenerPort): an egress listener
// with a port builds that port's route table from its own hosts, with the services'
// matching port only; other ports use the listener without port.
#[test]
fn istio_egress_port_listener_serves_its_port_only() {
    let store = store_with(
        &(sidecar_for_service_a(
            "  - port: {number: 9080, protocol: HTTP, name: http-alt}
    hosts: ['./*']
  - hosts: ['istio-system/*']",
        ) + MULTI_PORT_SVC),
    );
    let multi = "multi.dev-service-mesh.svc.cluster.local";
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(
        fate(&a, 9080, "multi:9080"),
        format!("outbound|9080||{multi}")
    );
    assert_eq!(fate(&a, 80, "multi"), BLOCK);
    assert_eq!(fate(&a, 80, "producer-internal-host"), BLOCK);
    assert_eq!(fate(&a, 80, INGRESS), cluster(INGRESS));
    assert!(!a.clusters.contains_key(&format!("outbound|80||{multi}")));

    // Without a catch-all listener, no route table serves the other ports.
    let store = store_with(
        &(sidecar_for_service_a(
            "  - port: {number: 9080, protocol: HTTP, name: http-alt}
    hosts: ['*/*']",
        ) + MULTI_PORT_SVC),
    );
    let a = sidecar_of(&store, &allow_any(), SERVICE_A);
    assert!(a.route_table(80).is_none());
    assert_eq!(fate(&a, 80, "producer-internal-host"), PASS);
    assert_eq!(
        fate(&a, 9080, "multi:9080"),
        format!("outbound|9080||{multi}")
    );
}

// ---------------------------------------------------------------------------
// outboundTrafficPolicy
// ---------------------------------------------------------------------------

// Istio: the Sidecar's outboundTrafficPolicy replaces the mesh's, both ways; its
// mode defaults to the enum's zero value, REGISTRY_ONLY.
#[test]
fn istio_sidecar_outbound_traffic_policy_overrides_the_mesh() {
    let sidecar = |policy: &str| {
        format!(
            "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
spec:
  outboundTrafficPolicy: {policy}
"
        )
    };
    let store = store_with(&sidecar("{mode: ALLOW_ANY}"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "example.com"), PASS);
    assert_eq!(fate(&a, 8080, "example.com:8080"), PASS);
    let store = store_with(&sidecar("{mode: REGISTRY_ONLY}"));
    let a = sidecar_of(&store, &allow_any(), SERVICE_A);
    assert_eq!(fate(&a, 80, "example.com"), BLOCK);
    let store = store_with(&sidecar("{}"));
    let a = sidecar_of(&store, &allow_any(), SERVICE_A);
    assert_eq!(a.outbound_policy, OutboundPolicy::RegistryOnly);
    let pods = pods();
    let mesh = allow_any();
    let state = MeshState::new(&store, &mesh, &pods);
    assert_eq!(
        state.outbound_policy_for(find(&pods, SERVICE_A)),
        OutboundPolicy::RegistryOnly
    );
}

// ---------------------------------------------------------------------------
// exportTo
// ---------------------------------------------------------------------------

fn producer_vs_exported(export_to: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: producer-vs
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  exportTo: {export_to}
  http:
  - route:
    - destination:
        host: service-c-srv
"
    )
}

// Istio: a VirtualService with exportTo `.` is seen in its own namespace only; one
// exported to a namespace by name is seen there (and, without `.`, not at home).
#[test]
fn istio_virtual_service_export_to() {
    let store = store_with(&producer_vs_exported("['.']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(C));
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, P), cluster(P));

    let store = store_with(&producer_vs_exported("[other]"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(P));
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, P), cluster(C));

    let store = store_with(&producer_vs_exported("['*']"));
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, P), cluster(C));
}

// Istio (VirtualServicesForGateway): a VirtualService exported only to the proxy's
// namespace comes before public ones, whatever their age ("consumer override").
#[test]
fn istio_private_virtual_service_beats_an_older_public_one() {
    let mut store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: public-producer
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  http:
  - route:
    - destination:
        host: service-c-srv
",
    );
    apply(
        &mut store,
        "other",
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: my-producer
spec:
  hosts: [producer-internal-host.dev-service-mesh.svc.cluster.local]
  exportTo: ['.']
  http:
  - route:
    - destination:
        host: backend
",
    );
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, P), cluster(BACKEND));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "producer-internal-host"), cluster(C));
}

// Istio: a gateway proxy sees the VirtualServices exported to its own namespace
// (istio-system): exportTo `.` in the application's namespace hides a VirtualService
// from the ingress gateway.
#[test]
fn istio_gateway_sees_only_virtual_services_exported_to_its_namespace() {
    let gw_vs = |export_to: &str| {
        format!(
            "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ['*']
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: via-gw
spec:
  hosts: ['*']
  gateways: [gw]
  exportTo: {export_to}
  http:
  - route:
    - destination:
        host: producer-internal-host
"
        )
    };
    let pods = pods();
    for (export_to, expected) in [
        ("['.']", "404".to_string()),
        ("[istio-system]", cluster(P)),
        ("['*']", cluster(P)),
    ] {
        let store = store_with(&gw_vs(export_to));
        let mesh = registry_only();
        let state = MeshState::new(&store, &mesh, &pods);
        let gw = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
        assert_eq!(outcome(&gw, 80, &get("x", "/")), expected, "{export_to}");
    }
}

// Istio: a ServiceEntry exported to `.` is unknown to other namespaces; `~` hides it
// everywhere, its own namespace included.
#[test]
fn istio_service_entry_export_to() {
    let se = |export_to: &str| {
        format!(
            "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin
spec:
  hosts: [httpbin.org]
  exportTo: {export_to}
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: DNS
"
        )
    };
    let store = store_with(&se("['.']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "httpbin.org"), cluster("httpbin.org"));
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, "httpbin.org"), BLOCK);
    let store = store_with(&se("['~']"));
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, "httpbin.org"), BLOCK);
}

// Istio keeps one service per host and namespace: two namespaces may each define
// the same external host for themselves (exportTo `.`), each seeing its own.
#[test]
fn istio_same_host_service_entries_in_two_namespaces() {
    let se = |ns_port: u32| {
        format!(
            "
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: httpbin
spec:
  hosts: [httpbin.org]
  exportTo: ['.']
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: {ns_port}
  resolution: DNS
"
        )
    };
    let mut store = store_with(&se(8001));
    apply(&mut store, "other", &se(8002));
    let pods = pods();
    let mesh = registry_only();
    let state = MeshState::new(&store, &mesh, &pods);
    for (pod, port) in [(SERVICE_A, 8001), (OTHER, 8002)] {
        let t = state.sidecar_tables(find(&pods, pod));
        let c = &t.clusters[&cluster("httpbin.org")];
        assert_eq!(
            c.endpoints,
            meshbox_routing::tables::ClusterEndpoints::Dns(vec![("httpbin.org".into(), port)]),
            "{pod}"
        );
    }
}

// Istio's Kubernetes registry reads exportTo from the Service annotation
// networking.istio.io/exportTo. A route to a service not exported to the proxy's
// namespace has no cluster (503 NC).
#[test]
fn istio_service_export_to_annotation() {
    let mut store = Store::new();
    apply(
        &mut store,
        "other",
        "
apiVersion: v1
kind: Service
metadata:
  name: backend
  annotations:
    networking.istio.io/exportTo: '.'
spec:
  ports:
  - port: 80
    name: http
    targetPort: 9000
  selector:
    app: other
",
    );
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: to-backend
spec:
  hosts: [example.com]
  http:
  - route:
    - destination:
        host: backend.other.svc.cluster.local
",
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, BACKEND), BLOCK);
    assert_eq!(fate(&a, 80, "example.com"), cluster(BACKEND));
    assert!(!a.clusters.contains_key(&cluster(BACKEND)), "503 NC");
    let other = sidecar_of(&store, &registry_only(), OTHER);
    assert_eq!(fate(&other, 80, "backend"), cluster(BACKEND));
    assert!(other.clusters.contains_key(&cluster(BACKEND)));

    // "other, dev-service-mesh": both see it.
    apply(
        &mut store,
        "other",
        "
apiVersion: v1
kind: Service
metadata:
  name: backend
  annotations:
    networking.istio.io/exportTo: 'other, dev-service-mesh'
spec:
  ports:
  - port: 80
    name: http
  selector:
    app: other
",
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(fate(&a, 80, BACKEND), cluster(BACKEND));
}

/// A DestinationRule defining one subset, for the host `producer-internal-host`.
fn producer_dr(name: &str, host: &str, subset: &str, export_to: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
spec:
  host: {host}
  exportTo: {export_to}
  subsets:
  - name: {subset}
    labels:
      app: service-b-app
"
    )
}

fn subset_cluster(subset: &str) -> String {
    format!("outbound|80|{subset}|{P}")
}

/// The subsets of the producer that a pod's tables have clusters for, when a
/// VirtualService in its namespace routes to subsets v1, v2 and v3.
fn producer_subsets(store: &mut Store, pod: &str, ns: &str) -> Vec<String> {
    apply(
        store,
        ns,
        &format!(
            "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: subsets
spec:
  hosts: [subsets.example]
  http:
  - route:
    - destination: {{host: {P}, subset: v1}}
      weight: 40
    - destination: {{host: {P}, subset: v2}}
      weight: 30
    - destination: {{host: {P}, subset: v3}}
      weight: 30
"
        ),
    );
    let t = sidecar_of(store, &registry_only(), pod);
    ["v1", "v2", "v3"]
        .into_iter()
        .filter(|s| t.clusters.contains_key(&subset_cluster(s)))
        .map(str::to_string)
        .collect()
}

// Istio (destinationRule): the client's namespace first, then rules the service's
// namespace exports to the client, then the root namespace's; exportTo `.` keeps a
// rule at home.
#[test]
fn istio_destination_rule_export_to_and_lookup_order() {
    // Exported to all (the default): clients elsewhere use it.
    let mut store = store_with(&producer_dr("dr", "producer-internal-host", "v1", "['*']"));
    assert_eq!(producer_subsets(&mut store, OTHER, "other"), ["v1"]);
    // Private to dev-service-mesh: others fall through to the root namespace's rule.
    let mut store = store_with(&producer_dr("dr", "producer-internal-host", "v1", "['.']"));
    apply(
        &mut store,
        "istio-system",
        &producer_dr("root-dr", P, "v3", "['*']"),
    );
    assert_eq!(producer_subsets(&mut store, OTHER, "other"), ["v3"]);
    assert_eq!(producer_subsets(&mut store, SERVICE_A, NS), ["v1"]);
    // Exported to `other` by name.
    let mut store = store_with(&producer_dr(
        "dr",
        "producer-internal-host",
        "v1",
        "[other]",
    ));
    assert_eq!(producer_subsets(&mut store, OTHER, "other"), ["v1"]);
    // A rule in the client's namespace comes first.
    let mut store = store_with(&producer_dr("dr", "producer-internal-host", "v1", "['*']"));
    apply(&mut store, "other", &producer_dr("mine", P, "v2", "['.']"));
    assert_eq!(producer_subsets(&mut store, OTHER, "other"), ["v2"]);
}

// Istio (MostSpecificHostMatch): an exact host beats a wildcard whatever their age.
#[test]
fn istio_destination_rule_most_specific_host_wins() {
    let mut store = store_with(&producer_dr(
        "wide",
        "'*.dev-service-mesh.svc.cluster.local'",
        "v1",
        "['*']",
    ));
    apply(
        &mut store,
        NS,
        &producer_dr("exact", "producer-internal-host", "v2", "['*']"),
    );
    assert_eq!(producer_subsets(&mut store, SERVICE_A, NS), ["v2"]);
}

// Istio: a DestinationRule with a workloadSelector applies only to the workloads of
// its namespace that it selects.
#[test]
fn istio_destination_rule_workload_selector() {
    let mut store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: for-service-c
spec:
  host: producer-internal-host
  workloadSelector:
    matchLabels:
      app: service-c-app
  subsets:
  - name: v2
    labels:
      app: service-b-app
",
    );
    assert_eq!(producer_subsets(&mut store, SERVICE_C, NS), ["v2"]);
    assert!(producer_subsets(&mut store, SERVICE_A, NS).is_empty());
}

// ---------------------------------------------------------------------------
// VirtualService delegation
// ---------------------------------------------------------------------------

const ROOT_VS: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: root
spec:
  hosts: [producer-internal-host]
  http:
  - name: api
    match:
    - uri:
        prefix: /api
    delegate:
      name: api-routes
      namespace: other
    timeout: 5s
  - route:
    - destination:
        host: producer-internal-host
";

const DELEGATE_VS: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api-routes
spec:
  http:
  - name: v2
    match:
    - uri:
        prefix: /api/v2
    route:
    - destination:
        host: backend
  - match:
    - uri:
        prefix: /elsewhere
    route:
    - destination:
        host: backend
  - route:
    - destination:
        host: service-c-srv.dev-service-mesh.svc.cluster.local
    timeout: 1s
";

fn delegation_store(delegate: &str) -> Store {
    let mut store = store_with(ROOT_VS);
    apply(&mut store, "other", delegate);
    store
}

// Istio (mergeHTTPRoutes): the root rule is replaced by the delegate's rules, each
// match merged with the root's; a delegate match outside the root's (prefix
// /elsewhere under /api) conflicts and its rule is dropped; a delegate rule without
// match takes the root's. Short names in the delegate resolve in its own namespace.
#[test]
fn istio_delegate_rules_replace_the_root_rule_with_merged_matches() {
    let store = delegation_store(DELEGATE_VS);
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(
        fate_of(&a, 80, "producer-internal-host", "/api/v2/items"),
        cluster(BACKEND)
    );
    assert_eq!(
        fate_of(&a, 80, "producer-internal-host", "/api/v1"),
        cluster(C)
    );
    assert_eq!(
        fate_of(&a, 80, "producer-internal-host", "/elsewhere"),
        cluster(P)
    );
    assert_eq!(fate_of(&a, 80, "producer-internal-host", "/"), cluster(P));
    let vh = vhost(&a, 80, "producer-internal-host").unwrap();
    let names: Vec<&str> = vh.routes.iter().map(|r| &*r.name).collect();
    // Names join root-delegate; a delegate rule without name takes the root's.
    assert_eq!(names, ["api-v2", "api", ""]);
    // The route says where it came from: root rule 0, delegate rule 2.
    let source = vh.routes[1].source.as_ref().unwrap();
    assert_eq!(source.virtual_service, "dev-service-mesh/root");
    assert_eq!(source.rule, 0);
    let delegate = source.delegate.as_ref().unwrap();
    assert_eq!(delegate.virtual_service, "other/api-routes");
    assert_eq!(delegate.rule, 2);
    // What the delegate rule sets wins (timeout 1s); what it leaves unset comes
    // from the root rule (timeout 5s).
    let timeout = |i: usize| match &vh.routes[i].action {
        RouteAction::Forward(f) => f.timeout,
        _ => None,
    };
    assert_eq!(timeout(0), Some(std::time::Duration::from_secs(5)));
    assert_eq!(timeout(1), Some(std::time::Duration::from_secs(1)));
}

// Istio (mergeHTTPMatchRequest): headers of the root match constrain the delegate's.
#[test]
fn istio_delegate_match_keeps_the_root_headers() {
    let mut store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: root
spec:
  hosts: [producer-internal-host]
  http:
  - match:
    - headers:
        x-user:
          exact: tester
    delegate:
      name: d
  - route:
    - destination:
        host: producer-internal-host
",
    );
    apply(
        &mut store,
        NS,
        "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: d
spec:
  http:
  - match:
    - uri:
        prefix: /v
    route:
    - destination:
        host: service-c-srv
",
    );
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    let hs = headers(&[("x-user", "tester")]);
    let with_header = request("GET", "producer-internal-host", "/v1", &hs);
    assert_eq!(outcome(&a, 80, &with_header), cluster(C));
    assert_eq!(fate_of(&a, 80, "producer-internal-host", "/v1"), cluster(P));
}

// Istio: a delegate that is missing, not exported to the root's namespace, or has
// hosts of its own (so is no delegate) drops only the rule that names it.
#[test]
fn istio_unusable_delegates_drop_their_rule() {
    let private = DELEGATE_VS.replace("spec:\n", "spec:\n  exportTo: ['.']\n");
    let with_hosts = DELEGATE_VS.replace("spec:\n", "spec:\n  hosts: [api.other]\n");
    for (what, store) in [
        ("missing", store_with(ROOT_VS)),
        ("private", delegation_store(&private)),
        ("has hosts", delegation_store(&with_hosts)),
    ] {
        let a = sidecar_of(&store, &registry_only(), SERVICE_A);
        assert_eq!(
            fate_of(&a, 80, "producer-internal-host", "/api/v2"),
            cluster(P),
            "{what}"
        );
    }
    // Exported to the root's namespace by name: used.
    let exported = DELEGATE_VS.replace("spec:\n", "spec:\n  exportTo: [dev-service-mesh]\n");
    let a = sidecar_of(&delegation_store(&exported), &registry_only(), SERVICE_A);
    assert_eq!(
        fate_of(&a, 80, "producer-internal-host", "/api/v2"),
        cluster(BACKEND)
    );
}

// Istio: a delegate VirtualService has no hosts, so it makes no virtual host of its
// own; its rules apply only through the root.
#[test]
fn istio_delegate_is_not_used_on_its_own() {
    let mut store = store_with("");
    apply(&mut store, "other", DELEGATE_VS);
    let a = sidecar_of(&store, &registry_only(), SERVICE_A);
    assert_eq!(
        fate_of(&a, 80, "producer-internal-host", "/api/v2"),
        cluster(P)
    );
    assert!(a
        .route_tables
        .values()
        .flat_map(|t| &t.virtual_hosts)
        .flat_map(|v| &v.routes)
        .all(|r| r.source.is_none()));
}

// Delegation works the same at gateways (Istio merges before binding to gateways).
#[test]
fn istio_delegate_at_a_gateway() {
    let mut store = store_with(
        "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
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
  gateways: [gw]
  http:
  - match:
    - uri:
        prefix: /api
    delegate:
      name: api-routes
      namespace: other
",
    );
    apply(&mut store, "other", DELEGATE_VS);
    let pods = pods();
    let mesh = registry_only();
    let state = MeshState::new(&store, &mesh, &pods);
    let gw = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(outcome(&gw, 80, &get("x", "/api/v2")), cluster(BACKEND));
    assert_eq!(outcome(&gw, 80, &get("x", "/api/v1")), cluster(C));
    assert_eq!(outcome(&gw, 80, &get("x", "/other")), "404");
}

// ---------------------------------------------------------------------------
// trace
// ---------------------------------------------------------------------------

// `meshbox trace` names the Sidecar that hides a service and that sets the policy.
#[test]
fn trace_names_the_sidecar_that_hides_a_service() {
    let store = store_with(&sidecar_for_service_a("  - hosts: ['./*']").replace(
        "  egress:",
        "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n  egress:",
    ));
    let pods = pods();
    let mesh = allow_any();
    let state = MeshState::new(&store, &mesh, &pods);
    let pod = find(&pods, SERVICE_A);
    let tables = state.sidecar_tables(pod);
    let request = TraceRequest::parse("GET", "http://backend.other/", &[]).unwrap();
    let ctx = TraceContext {
        state: &state,
        proxy: pod,
    };
    let t = trace(&tables, &request, Some(&ctx));
    assert_eq!(t.verdict.status, Some(502));
    let why = t
        .steps
        .iter()
        .find_map(|s| match s {
            Step::CatchAll { why, .. } => Some(why.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        why.contains("egress hosts of Sidecar dev-service-mesh/service-a (dev-service-mesh/*)"),
        "{why}"
    );
    assert!(
        why.contains(
            "Sidecar dev-service-mesh/service-a's outboundTrafficPolicy.mode is REGISTRY_ONLY"
        ),
        "{why}"
    );
    assert!(
        t.verdict.fixes[0].contains("include other/backend.other.svc.cluster.local"),
        "{:?}",
        t.verdict.fixes
    );
    let text = render(&t);
    assert!(
        text.contains("Sidecar dev-service-mesh/service-a"),
        "{text}"
    );
}

// `meshbox trace` shows the delegate rule behind a route.
#[test]
fn trace_shows_the_delegate_rule() {
    let store = delegation_store(DELEGATE_VS);
    let pods = pods();
    let mesh = registry_only();
    let state = MeshState::new(&store, &mesh, &pods);
    let pod = find(&pods, SERVICE_A);
    let tables = state.sidecar_tables(pod);
    let request = TraceRequest::parse("GET", "http://producer-internal-host/api/v2", &[]).unwrap();
    let ctx = TraceContext {
        state: &state,
        proxy: pod,
    };
    let text = render(&trace(&tables, &request, Some(&ctx)));
    assert!(
        text.contains("of VirtualService dev-service-mesh/root, delegated to rule http[0] (match 0) of VirtualService other/api-routes at test.yaml:"),
        "{text}"
    );
}
