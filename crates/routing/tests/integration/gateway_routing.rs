//! Gateway routing: which Gateways select a gateway pod, how server hosts and
//! VirtualService hosts meet, and how virtual hosts merge.

use crate::common::*;
use meshbox_config::Store;
use meshbox_routing::MeshState;

const SERVICES: &str = "
apiVersion: v1
kind: Service
metadata:
  name: service-a-srv
spec:
  ports:
    - port: 80
      name: http-80
      targetPort: 8081
  selector:
    app: service-a-app
---
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

fn gateway(name: &str, selector: &str, hosts: &[&str]) -> String {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| format!("        - \"{h}\"\n"))
        .collect();
    format!(
        "
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: {name}
spec:
{selector}
  servers:
    - port:
        number: 80
        name: http
        protocol: HTTP
      hosts:
{}",
        hosts.concat()
    )
}

fn vs_to(name: &str, hosts: &str, gateways: &str, uri: &str, dest: &str) -> String {
    format!(
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: {name}
spec:
  hosts: {hosts}
  gateways: {gateways}
  http:
    - match:
        - uri:
            prefix: {uri}
      route:
        - destination:
            host: {dest}
"
    )
}

fn store_with(docs: &[(&str, String)]) -> Store {
    let mut store = Store::new();
    apply(&mut store, NS, SERVICES);
    for (ns, doc) in docs {
        apply(&mut store, ns, doc);
    }
    store
}

// Istio: a Gateway applies to the gateway pods whose labels its `selector` matches:
// `istio: ingressgateway` configures the ingress gateway, not the egress gateway.
#[test]
fn istio_gateway_selector_picks_pods_by_labels() {
    let store = store_with(&[
        (
            NS,
            gateway("in-gw", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (
            NS,
            vs_to("in-vs", "[\"*\"]", "[in-gw]", "/a", "service-a-srv"),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let i = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(&i, 80, &get("x", "/a")),
        svc_cluster("service-a-srv", 80)
    );
    let e = state.gateway_tables(&egress_pod(), GATEWAY_PORTS);
    assert_eq!(outcome(&e, 80, &get("x", "/a")), "404");
    assert!(e.route_tables.is_empty());
}

// Istio (mergeGateways): a Gateway without selector "applies to all workloads asking
// for the gateway".
#[test]
fn istio_gateway_without_selector_applies_to_every_gateway_pod() {
    let store = store_with(&[
        (NS, gateway("any-gw", "", &["*"])),
        (
            NS,
            vs_to("any-vs", "[\"*\"]", "[any-gw]", "/a", "service-a-srv"),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    for gw in [ingress_pod(), egress_pod()] {
        let t = state.gateway_tables(&gw, GATEWAY_PORTS);
        assert_eq!(
            outcome(&t, 80, &get("x", "/a")),
            svc_cluster("service-a-srv", 80),
            "{}",
            gw.name
        );
    }
}

// Istio: a server host names the only Host the server answers; a VirtualService of
// host `*` bound to it gets a virtual host for that name (the more specific host of
// the intersection); other Hosts find no virtual host (404).
#[test]
fn istio_specific_server_host_limits_star_vs() {
    let store = store_with(&[
        (
            NS,
            gateway(
                "gw",
                "  selector:\n    istio: ingressgateway",
                &["bookinfo.example.com"],
            ),
        ),
        (NS, vs_to("vs", "[\"*\"]", "[gw]", "/", "service-a-srv")),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        vhost_name(&t, 80, "bookinfo.example.com"),
        "bookinfo.example.com:80"
    );
    assert_eq!(
        vhost_name(&t, 80, "bookinfo.example.com:80"),
        "bookinfo.example.com:80"
    );
    assert_eq!(
        vhost_name(&t, 80, "BookInfo.Example.com"),
        "bookinfo.example.com:80"
    );
    assert!(vhost(&t, 80, "other.example.com").is_none());
    assert_eq!(outcome(&t, 80, &get("other.example.com", "/")), "404");
}

// Istio: server hosts `*` take any VirtualService host; a wildcard server host
// `*.example.com` takes the VirtualService's specific host.
#[test]
fn istio_star_and_wildcard_server_hosts_intersect_with_vs_hosts() {
    let store = store_with(&[
        (
            NS,
            gateway(
                "gw",
                "  selector:\n    istio: ingressgateway",
                &["*.example.com"],
            ),
        ),
        (
            NS,
            vs_to(
                "vs",
                "[a.example.com, b.other.org]",
                "[gw]",
                "/",
                "service-a-srv",
            ),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(vhost_name(&t, 80, "a.example.com"), "a.example.com:80");
    assert!(vhost(&t, 80, "c.example.com").is_none());
    assert!(vhost(&t, 80, "b.other.org").is_none());
}

// Istio: a server host `ns/host` only takes VirtualServices of namespace `ns`; `./host`
// those of the Gateway's namespace; `*/host` any namespace.
#[test]
fn istio_namespaced_server_hosts_filter_vs_by_namespace() {
    let store = store_with(&[
        (
            NS,
            gateway(
                "gw",
                "  selector:\n    istio: ingressgateway",
                &[
                    "dev-service-mesh/a.example.com",
                    "./b.example.com",
                    "*/c.example.com",
                    "team-x/d.example.com",
                ],
            ),
        ),
        (
            NS,
            vs_to(
                "vs-a",
                "[a.example.com, b.example.com, c.example.com, d.example.com]",
                "[gw]",
                "/",
                "service-a-srv",
            ),
        ),
        (
            "team-x",
            vs_to(
                "vs-x",
                "[a.example.com, b.example.com, c.example.com, d.example.com]",
                "[dev-service-mesh/gw]",
                "/",
                "producer-internal-host.dev-service-mesh.svc.cluster.local",
            ),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    let a = svc_cluster("service-a-srv", 80);
    let b = svc_cluster("producer-internal-host", 80);
    assert_eq!(outcome(&t, 80, &get("a.example.com", "/")), a);
    assert_eq!(outcome(&t, 80, &get("b.example.com", "/")), a);
    // `*/c.example.com`: both VirtualServices; the older one's route comes first.
    assert_eq!(outcome(&t, 80, &get("c.example.com", "/")), a);
    assert_eq!(outcome(&t, 80, &get("d.example.com", "/")), b);
}

// Istio: VirtualService hosts are resolved to FQDNs in the VirtualService's namespace
// before they meet the Gateway's hosts, so a short host `service-a-srv` on a `*`
// server answers `service-a-srv.dev-service-mesh.svc.cluster.local`, not `service-a-srv`.
#[test]
fn istio_short_vs_host_on_gateway_resolves_to_fqdn() {
    let store = store_with(&[
        (
            NS,
            gateway("gw", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (
            NS,
            vs_to("vs", "[service-a-srv]", "[gw]", "/", "service-a-srv"),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(
            &t,
            80,
            &get("service-a-srv.dev-service-mesh.svc.cluster.local", "/")
        ),
        svc_cluster("service-a-srv", 80)
    );
    assert_eq!(outcome(&t, 80, &get("service-a-srv", "/")), "404");
}

// Istio (SortVHostRoutes): when routes of several VirtualServices merge into one
// gateway virtual host, catch-all routes move after the others, so an older
// VirtualService's catch-all does not hide a newer one's `/service-b`.
#[test]
fn istio_merged_gateway_vhost_puts_catch_all_routes_last() {
    let catch_all = "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: catch-all
spec:
  hosts: [\"*\"]
  gateways: [gw-a]
  http:
    - route:
        - destination:
            host: service-a-srv
";
    let store = store_with(&[
        (
            NS,
            gateway("gw-a", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (
            NS,
            gateway("gw-b", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (NS, catch_all.to_string()),
        (
            NS,
            vs_to(
                "vs-b",
                "[\"*\"]",
                "[gw-b]",
                "/service-b",
                "producer-internal-host",
            ),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(&t, 80, &get("x", "/service-b")),
        svc_cluster("producer-internal-host", 80)
    );
    assert_eq!(
        outcome(&t, 80, &get("x", "/other")),
        svc_cluster("service-a-srv", 80)
    );
}

// Istio (BuildHTTPRoutesForVirtualService): routes after a catch-all route of the same
// VirtualService are dropped ("we will never go beyond this match"); sorting merged
// routes does not bring them back.
#[test]
fn istio_routes_after_catch_all_in_same_vs_stay_unreachable() {
    let a = "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: a
spec:
  hosts: [\"*\"]
  gateways: [gw-a]
  http:
    - match:
        - uri:
            prefix: /
      route:
        - destination:
            host: service-a-srv
    - match:
        - uri:
            prefix: /x
      route:
        - destination:
            host: producer-internal-host
";
    let store = store_with(&[
        (
            NS,
            gateway("gw-a", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (
            NS,
            gateway("gw-b", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (NS, a.to_string()),
        (
            NS,
            vs_to("vs-b", "[\"*\"]", "[gw-b]", "/y", "producer-internal-host"),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(&t, 80, &get("x", "/x")),
        svc_cluster("service-a-srv", 80)
    );
    assert_eq!(
        outcome(&t, 80, &get("x", "/y")),
        svc_cluster("producer-internal-host", 80)
    );
}

// Istio: a gateway has no catch-all virtual host: a Host no server exposes is 404
// (no virtual host), and a virtual host whose routes do not match is 404 too.
#[test]
fn istio_gateway_404_without_vhost_or_route() {
    let store = store_with(&[
        (
            NS,
            gateway(
                "gw",
                "  selector:\n    istio: ingressgateway",
                &["a.example.com"],
            ),
        ),
        (
            NS,
            vs_to("vs", "[a.example.com]", "[gw]", "/api", "service-a-srv"),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    let rt = t.route_table(80).expect("http.80");
    assert!(rt.select_virtual_host("b.example.com").is_none());
    let vh = rt.select_virtual_host("a.example.com").expect("vhost");
    assert!(vh.select_route(&get("a.example.com", "/web")).is_none());
    assert!(vh.select_route(&get("a.example.com", "/api/v1")).is_some());
}

// Istio: a rule whose `match.port` differs from the Gateway server port does not apply.
#[test]
fn istio_gateway_rule_port_match_uses_server_port() {
    let store = store_with(&[
        (
            NS,
            gateway("gw", "  selector:\n    istio: ingressgateway", &["*"]),
        ),
        (
            NS,
            "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: ports
spec:
  hosts: [\"*\"]
  gateways: [gw]
  http:
    - match:
        - port: 443
      route:
        - destination:
            host: producer-internal-host
    - match:
        - port: 80
      route:
        - destination:
            host: service-a-srv
"
            .to_string(),
        ),
    ]);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.gateway_tables(&ingress_pod(), GATEWAY_PORTS);
    assert_eq!(
        outcome(&t, 80, &get("x", "/")),
        svc_cluster("service-a-srv", 80)
    );
}
