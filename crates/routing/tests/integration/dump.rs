//! `meshbox proxy-config` rows at the routing layer: routes, clusters, listeners and
//! endpoints read from the course's compiled tables, as tables and as JSON.

use crate::common::*;
use meshbox_config::Store;
use meshbox_routing::dump::{
    describe_match, proxy_config, render, short_domains, short_match, ListenerRole, ProxyConfig,
    ProxyListener, View,
};
use meshbox_routing::MeshState;

fn course_store() -> Store {
    let mut store = Store::new();
    for f in course(&[&course_to_split(), &WORLDTIME_EGRESS]) {
        apply_example(&mut store, f);
    }
    store
}

fn sidecar_config(pod: &str) -> ProxyConfig {
    let store = course_store();
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let w = find(&pods, pod);
    let tables = state.sidecar_tables(w);
    let mut listeners = vec![ProxyListener {
        address: "127.0.0.13:15001".into(),
        role: ListenerRole::SidecarOutbound,
    }];
    for (port, addr) in &w.inbound {
        listeners.push(ProxyListener {
            address: addr.to_string(),
            role: ListenerRole::SidecarInbound {
                port: *port,
                app: Some(format!("127.0.0.1:{port}")),
            },
        });
    }
    proxy_config(&tables, &listeners)
}

fn gateway_config(pod: &str) -> ProxyConfig {
    let store = course_store();
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let w = find(&pods, pod);
    let tables = state.gateway_tables(w, GATEWAY_PORTS);
    let listeners: Vec<ProxyListener> = GATEWAY_PORTS
        .iter()
        .map(|(c, s)| ProxyListener {
            address: w.inbound[c].to_string(),
            role: ListenerRole::Gateway {
                container_port: *c,
                service_port: *s,
            },
        })
        .collect();
    proxy_config(&tables, &listeners)
}

#[test]
fn sidecar_routes_name_their_virtual_service_and_end_with_block_all() {
    let c = sidecar_config("service-c-deployment-1");
    assert_eq!(c.kind, "sidecar");
    let producer = c
        .routes
        .iter()
        .find(|r| r.vhost_name == "producer-internal-host.dev-service-mesh.svc.cluster.local:80")
        .expect("producer route");
    assert_eq!(producer.name, "80");
    assert_eq!(producer.match_, "/*");
    assert_eq!(
        producer.virtual_service,
        "producer-internal-host-vs.dev-service-mesh"
    );
    assert_eq!(producer.rule, Some(0));
    assert!(producer
        .origin
        .as_deref()
        .is_some_and(|o| o == "test.yaml:1"));
    assert!(producer.action.contains("50%"), "{}", producer.action);
    assert!(producer
        .domains
        .contains(&"producer-internal-host".to_string()));
    let last = c.routes.last().expect("rows");
    assert_eq!(
        (last.vhost_name.as_str(), last.route_name.as_str()),
        ("block_all", "block_all")
    );
    assert_eq!(last.action, "direct response 502");
    let table = render(&c, View::Routes, None).expect("table");
    let header = table.lines().next().expect("header");
    assert!(header.starts_with("NAME"), "{header}");
    for col in ["VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        table.contains("producer-internal-host + 7 more..."),
        "{table}"
    );
    assert!(
        table.contains("outbound-srv-c-to-worldtime-vs.dev-service-mesh"),
        "{table}"
    );
}

#[test]
fn sidecar_clusters_have_istio_types_and_the_special_clusters() {
    let c = sidecar_config("service-c-deployment-1");
    let row = |fqdn: &str| {
        c.clusters
            .iter()
            .find(|r| r.service_fqdn == fqdn)
            .unwrap_or_else(|| panic!("no cluster for {fqdn}: {:#?}", c.clusters))
    };
    let w = row("worldtimeapi.org");
    assert_eq!(
        (
            w.port.as_str(),
            w.subset.as_str(),
            w.direction.as_str(),
            w.type_.as_str()
        ),
        ("80", "-", "outbound", "STRICT_DNS")
    );
    assert_eq!(
        row("service-c-srv.dev-service-mesh.svc.cluster.local").type_,
        "EDS"
    );
    assert_eq!(row("BlackHoleCluster").type_, "STATIC");
    assert_eq!(row("PassthroughCluster").type_, "ORIGINAL_DST");
    let inbound = c
        .clusters
        .iter()
        .find(|r| r.direction == "inbound")
        .expect("inbound cluster");
    assert_eq!(
        (inbound.port.as_str(), inbound.cluster.as_str()),
        ("8083", "inbound|8083||")
    );
    let table = render(&c, View::Clusters, None).expect("table");
    assert!(table.starts_with("SERVICE FQDN"), "{table}");
    for col in ["PORT", "SUBSET", "DIRECTION", "TYPE"] {
        assert!(table.lines().next().unwrap_or("").contains(col), "{table}");
    }
}

#[test]
fn endpoints_list_pod_addresses_dns_names_and_the_app() {
    let c = sidecar_config("service-c-deployment-1");
    let has = |ep: &str, cluster: &str| {
        c.endpoints
            .iter()
            .any(|e| e.endpoint == ep && e.cluster == cluster && e.status == "HEALTHY")
    };
    assert!(
        has(
            "127.0.0.12:8082",
            &svc_cluster("producer-internal-host", 80)
        ),
        "{:#?}",
        c.endpoints
    );
    assert!(has(
        "127.0.0.22:8080",
        "outbound|80||istio-egressgateway.istio-system.svc.cluster.local"
    ));
    assert!(has("worldtimeapi.org:80", "outbound|80||worldtimeapi.org"));
    assert!(has("127.0.0.1:8083", "inbound|8083||"));
    let table = render(&c, View::Endpoints, None).expect("table");
    assert!(table.starts_with("ENDPOINT"), "{table}");
}

#[test]
fn listeners_say_what_each_address_carries() {
    let c = sidecar_config("service-c-deployment-1");
    assert_eq!(c.listeners[0].address, "127.0.0.13");
    assert_eq!(c.listeners[0].port, 15001);
    assert!(c.listeners[0].carries.starts_with("sidecar outbound"));
    assert!(c.listeners[0].destination.contains("BlackHoleCluster"));
    assert_eq!(c.listeners[1].carries, "inbound 8083");
    let g = gateway_config("istio-egressgateway-1");
    assert_eq!(g.kind, "gateway");
    assert_eq!(
        g.listeners[0].carries,
        "gateway port 80 (container port 8080)"
    );
    assert_eq!(g.listeners[0].destination, "Route: http.80");
    assert!(
        g.listeners[1].destination.contains("no route table"),
        "{:?}",
        g.listeners[1]
    );
    let routes = render(&g, View::Routes, None).expect("table");
    assert!(routes.contains("http.80"), "{routes}");
    assert!(routes.contains("worldtimeapi.org:80"), "{routes}");
    let clusters = render(&g, View::Clusters, None).expect("table");
    assert!(
        !clusters.contains("BlackHoleCluster"),
        "gateways have no catch-all: {clusters}"
    );
}

#[test]
fn json_views_are_arrays_of_rows_and_all_is_one_object() {
    let c = sidecar_config("service-a-v1-deployment-1");
    for (view, key) in [
        (View::Routes, "vhost_name"),
        (View::Clusters, "service_fqdn"),
        (View::Listeners, "carries"),
        (View::Endpoints, "endpoint"),
    ] {
        let text = render(&c, view, Some("json")).expect("json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid json");
        let rows = v.as_array().expect("an array");
        assert!(!rows.is_empty(), "{view:?}");
        assert!(rows[0].get(key).is_some(), "{view:?}: {text}");
    }
    let all: serde_json::Value =
        serde_json::from_str(&render(&c, View::All, Some("json")).expect("json")).expect("valid");
    assert_eq!(all["proxy"], "service-a-v1-deployment-1");
    assert!(all["routes"].is_array() && all["clusters"].is_array());
    assert!(render(&c, View::Routes, Some("yaml")).is_err());
}

#[test]
fn views_parse_istioctl_names() {
    assert_eq!(View::parse("routes"), Ok(View::Routes));
    assert_eq!(View::parse("cluster"), Ok(View::Clusters));
    assert_eq!(View::parse("l"), Ok(View::Listeners));
    assert_eq!(View::parse("ep"), Ok(View::Endpoints));
    assert!(View::parse("secrets").is_err());
}

#[test]
fn matches_and_domains_in_short_form() {
    let mut store = Store::new();
    apply(
        &mut store,
        NS,
        "
apiVersion: v1
kind: Service
metadata: {name: shop}
spec:
  selector: {app: shop}
  ports: [{port: 80, name: http}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop]
  http:
    - match:
        - uri: {prefix: /api}
          method: {exact: GET}
      route: [{destination: {host: shop}}]
    - match:
        - uri: {regex: '/v[0-9]+/.*'}
      route: [{destination: {host: shop}}]
    - match:
        - uri: {exact: /x}
      route: [{destination: {host: shop}}]
",
    );
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    let vh = vhost(&t, 80, "shop").expect("vhost");
    let got: Vec<String> = vh.routes.iter().map(|r| short_match(&r.matcher)).collect();
    assert_eq!(got, vec!["/api* (+1 condition)", "~/v[0-9]+/.*", "/x"]);
    assert_eq!(
        describe_match(&vh.routes[0].matcher),
        "uri prefix \"/api\", method exact \"GET\""
    );
    assert_eq!(short_domains(&vh.domains), "shop + 7 more...");
    assert_eq!(short_domains(&["*".to_string()]), "*");
}
