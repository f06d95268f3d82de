//! Shared fixtures: configuration from YAML strings (as `kubectl apply` would load it),
//! pods with fake loopback addresses, and helpers that walk a proxy's tables the way
//! the data plane does (route table by port, virtual host by Host, route by request).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::LazyLock;

use http::HeaderMap;
use meshbox_config::mesh::parse_set_flags;
use meshbox_config::{load_str, LoadOptions, MeshOptions, Store};
use meshbox_routing::tables::{ForwardAction, Route, VirtualHost};
use meshbox_routing::{ProxyTables, RequestView, RouteAction, WorkloadInstance};

mod course;
#[allow(unused_imports)]
pub use course::*;

/// The course's namespace.
pub const NS: &str = "dev-service-mesh";

/// Ports of the installed gateways' pods: (container port, Service port).
pub const GATEWAY_PORTS: &[(u32, u32)] = &[(8080, 80), (8443, 443)];

static EMPTY_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);

/// Loads YAML documents into the store, objects without a namespace landing in `ns`.
pub fn apply(store: &mut Store, ns: &str, yaml: &str) {
    let opts = LoadOptions {
        namespace: ns.to_string(),
        namespace_explicit: false,
    };
    let resources = load_str("test.yaml", yaml, &opts).unwrap_or_else(|e| panic!("{e}"));
    store.apply(resources);
}

/// Applies one of the course's manifests from `examples/worldtime`, in `dev-service-mesh`.
pub fn apply_example(store: &mut Store, file: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/worldtime")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    apply(store, NS, &text);
}

/// The course's install: `istioctl install --set ...` flags.
pub fn course_mesh() -> MeshOptions {
    mesh_with(&[
        "meshConfig.accessLogFile=/dev/stdout",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "components.egressGateways[0].name=istio-egressgateway",
        "components.egressGateways[0].enabled=true",
    ])
}

/// Install options from `--set` flags over the default profile.
pub fn mesh_with(flags: &[&str]) -> MeshOptions {
    let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    let layer = parse_set_flags(&flags).expect("flags");
    MeshOptions::from_layers(&[layer]).expect("mesh options")
}

/// A pod: `ports` are the container ports it serves, each given a fake loopback
/// address `127.0.0.<host>:<port>`.
pub fn pod(
    name: &str,
    ns: &str,
    labels: &[(&str, &str)],
    host: u8,
    ports: &[u16],
) -> WorkloadInstance {
    WorkloadInstance {
        name: name.to_string(),
        namespace: ns.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inbound: ports
            .iter()
            .map(|p| (u32::from(*p), addr(host, *p)))
            .collect(),
        named_ports: BTreeMap::new(),
    }
}

/// `127.0.0.<host>:<port>`.
pub fn addr(host: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, host], port))
}

/// The course's pods (ServiceA, ServiceB, ServiceC) and the two installed gateways.
pub fn course_pods() -> Vec<WorkloadInstance> {
    vec![
        pod(
            "service-a-v1-deployment-1",
            NS,
            &[("app", "service-a-app"), ("version", "v1")],
            11,
            &[8081],
        ),
        pod(
            "service-b-deployment-1",
            NS,
            &[("app", "service-b-app"), ("version", "v1")],
            12,
            &[8082],
        ),
        pod(
            "service-c-deployment-1",
            NS,
            &[("app", "service-c-app"), ("version", "v1")],
            13,
            &[8083],
        ),
        ingress_pod(),
        egress_pod(),
    ]
}

pub fn ingress_pod() -> WorkloadInstance {
    pod(
        "istio-ingressgateway-1",
        "istio-system",
        &[("app", "istio-ingressgateway"), ("istio", "ingressgateway")],
        21,
        &[8080, 8443],
    )
}

pub fn egress_pod() -> WorkloadInstance {
    pod(
        "istio-egressgateway-1",
        "istio-system",
        &[("app", "istio-egressgateway"), ("istio", "egressgateway")],
        22,
        &[8080, 8443],
    )
}

/// The pod of `pods` with this name.
pub fn find<'a>(pods: &'a [WorkloadInstance], name: &str) -> &'a WorkloadInstance {
    pods.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name}"))
}

/// A GET request view without headers.
pub fn get<'a>(authority: &'a str, path_and_query: &'a str) -> RequestView<'a> {
    request("GET", authority, path_and_query, &EMPTY_HEADERS)
}

/// A request view.
pub fn request<'a>(
    method: &'a str,
    authority: &'a str,
    path_and_query: &'a str,
    headers: &'a HeaderMap,
) -> RequestView<'a> {
    RequestView {
        method,
        scheme: "http",
        authority,
        path_and_query,
        headers,
    }
}

/// Header map from pairs.
pub fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, v.parse().expect("header value"));
    }
    map
}

/// The virtual host a request for `authority` on `port` lands on.
pub fn vhost<'t>(tables: &'t ProxyTables, port: u32, authority: &str) -> Option<&'t VirtualHost> {
    tables.route_table(port)?.select_virtual_host(authority)
}

/// The name of the virtual host for `authority` on `port` (`-` when none).
pub fn vhost_name(tables: &ProxyTables, port: u32, authority: &str) -> String {
    vhost(tables, port, authority).map_or_else(|| "-".to_string(), |v| v.name.clone())
}

/// The route a request lands on.
pub fn route_for<'t>(
    tables: &'t ProxyTables,
    port: u32,
    req: &RequestView<'_>,
) -> Option<&'t Route> {
    vhost(tables, port, req.authority)?.select_route(req)
}

/// The forwarding action of a route (panics on other actions).
pub fn forward(route: &Route) -> &ForwardAction {
    match &route.action {
        RouteAction::Forward(f) => f,
        other => panic!("route {} is not a forward: {other:?}", route.name),
    }
}

/// The single cluster a GET lands on (panics if it is not a forward to one cluster).
pub fn cluster_of(tables: &ProxyTables, port: u32, authority: &str, path: &str) -> String {
    let req = get(authority, path);
    let route = route_for(tables, port, &req)
        .unwrap_or_else(|| panic!("no route for {authority}{path} on {port}"));
    let f = forward(route);
    assert_eq!(f.clusters.len(), 1, "{:?}", f.clusters);
    f.clusters[0].cluster.clone()
}

/// The cluster of a GET, or a word for what else happens: `404` (no virtual host or
/// no route), `direct 502 ""`, `passthrough`.
pub fn outcome(tables: &ProxyTables, port: u32, req: &RequestView<'_>) -> String {
    let Some(vh) = tables
        .route_table(port)
        .and_then(|t| t.select_virtual_host(req.authority))
    else {
        return "404".into();
    };
    let Some(route) = vh.select_route(req) else {
        return "404".into();
    };
    match &route.action {
        RouteAction::Forward(f) => f
            .clusters
            .iter()
            .map(|c| c.cluster.as_str())
            .collect::<Vec<_>>()
            .join(","),
        RouteAction::DirectResponse { status, body } => format!("direct {status} {body:?}"),
        RouteAction::Passthrough => "passthrough".into(),
        RouteAction::Redirect(r) => {
            format!("redirect {} {}", r.code, r.location("http", "host", "/"))
        }
    }
}

/// `outbound|PORT||HOST` for a Service in the course namespace.
pub fn svc_cluster(name: &str, port: u32) -> String {
    format!("outbound|{port}||{name}.{NS}.svc.cluster.local")
}
