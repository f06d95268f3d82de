//! VirtualService `tls` and `tcp` rules and DestinationRule `tls`, compiled into a
//! proxy's tables the way istiod compiles them (istio/istio
//! pilot/pkg/networking/core/tls.go, gateway.go, cluster_tls.go).

use crate::common::*;
use meshbox_config::Store;
use meshbox_routing::cluster_policy::{CaSource, ClientCert, ClusterTls, TlsMode};
use meshbox_routing::l4::{self, L4Protocol};
use meshbox_routing::MeshState;

const CNN: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: cnn
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
---
";

/// istio.io "Egress Gateways", "Egress gateway for HTTPS traffic", verbatim but for
/// the namespace.
const CNN_EGRESS: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts:
    - edition.cnn.com
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-cnn
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: cnn
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-cnn-through-egress-gateway
spec:
  hosts:
  - edition.cnn.com
  gateways:
  - mesh
  - istio-egressgateway
  tls:
  - match:
    - gateways:
      - mesh
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: cnn
        port:
          number: 443
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
      sniHosts:
      - edition.cnn.com
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
      weight: 100
";

fn client() -> meshbox_routing::WorkloadInstance {
    pod("client-1", NS, &[("app", "client")], 10, &[8080])
}

/// A ServiceEntry port with protocol TLS and no VirtualService: Istio's default filter
/// chain to `outbound|443||host` ("HTTPS or TLS ports without associated virtual
/// service"); HTTP ports get no L4 entry.
#[test]
fn tls_service_entry_port_gets_the_default_chain() {
    let mut store = Store::new();
    apply(&mut store, NS, CNN);
    let mesh = course_mesh();
    let pods = vec![client(), egress_pod()];
    let tables = MeshState::new(&store, &mesh, &pods).sidecar_tables(&pods[0]);
    let svc = tables
        .l4
        .sidecar_service("edition.cnn.com", 443)
        .expect("port 443");
    assert_eq!(svc.protocol, L4Protocol::Tls);
    assert!(svc.routes.is_empty());
    assert_eq!(
        svc.default_cluster.as_deref(),
        Some("outbound|443||edition.cnn.com")
    );
    assert!(tables
        .clusters
        .contains_key("outbound|443||edition.cnn.com"));
    assert!(tables.l4.sidecar_service("edition.cnn.com", 80).is_none());
    assert!(tables.l4.sidecar_service("other.com", 443).is_none());
}

/// The `tls` rules with `gateways: [mesh]` become the sidecar's chain (by sniHosts) to
/// the egress gateway subset; those for the gateway become the gateway's PASSTHROUGH
/// chain to the external host. A VirtualService chain replaces the default one.
#[test]
fn egress_gateway_for_https_traffic_compiles_both_sides() {
    let mut store = Store::new();
    apply(&mut store, NS, &format!("{CNN}{CNN_EGRESS}"));
    let mesh = course_mesh();
    let pods = vec![client(), egress_pod()];
    let state = MeshState::new(&store, &mesh, &pods);
    let side = state.sidecar_tables(&pods[0]);
    let svc = side.l4.sidecar_service("edition.cnn.com", 443).unwrap();
    assert_eq!(svc.default_cluster, None);
    let route = l4::select(&svc.routes, Some("edition.cnn.com"), None).unwrap();
    assert_eq!(
        route.clusters[0].cluster,
        "outbound|443|cnn|istio-egressgateway.istio-system.svc.cluster.local"
    );
    assert!(l4::select(&svc.routes, Some("evil.com"), None).is_none());

    let gw = state.gateway_tables(&pods[1], GATEWAY_PORTS);
    let port = gw
        .l4
        .gateway
        .get(&443)
        .expect("a PASSTHROUGH server on 443");
    assert_eq!(port.protocol, L4Protocol::Tls);
    assert_eq!(port.gateways, vec![format!("{NS}/istio-egressgateway")]);
    let route = l4::select(&port.routes, Some("edition.cnn.com"), None).unwrap();
    assert_eq!(route.clusters[0].cluster, "outbound|443||edition.cnn.com");
    assert_eq!(
        route.source.virtual_service,
        format!("{NS}/direct-cnn-through-egress-gateway")
    );
    assert_eq!(route.source.rule, 1);
    assert!(l4::select(&port.routes, Some("www.cnn.com"), None).is_none());
    assert!(
        gw.route_table(443).is_none(),
        "a PASSTHROUGH server has no HTTP routes"
    );
}

/// tls.go matchTLS: a match's `sourceLabels` and `port` are static predicates; a match
/// for other workloads or another port gives no chain.
#[test]
fn tls_matches_for_other_workloads_or_ports_are_left_out() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: only-for-billing
spec:
  hosts:
  - edition.cnn.com
  tls:
  - match:
    - sniHosts: [edition.cnn.com]
      sourceLabels:
        app: billing
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
  - match:
    - sniHosts: [edition.cnn.com]
      port: 8443
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
";
    let mut store = Store::new();
    apply(&mut store, NS, &format!("{CNN}{yaml}"));
    let mesh = course_mesh();
    let billing = pod("billing-1", NS, &[("app", "billing")], 11, &[8080]);
    let pods = vec![client(), billing];
    let state = MeshState::new(&store, &mesh, &pods);
    let other = state.sidecar_tables(&pods[0]);
    let svc = other.l4.sidecar_service("edition.cnn.com", 443).unwrap();
    assert!(svc.routes.is_empty());
    assert_eq!(
        svc.default_cluster.as_deref(),
        Some("outbound|443||edition.cnn.com")
    );
    let billing = state.sidecar_tables(&pods[1]);
    let svc = billing.l4.sidecar_service("edition.cnn.com", 443).unwrap();
    assert_eq!(svc.routes.len(), 1);
}

/// Gateway servers: `protocol: TCP` without `tls` takes the first `tcp` rule that
/// matches the port and gateway (gateway.go buildGatewayNetworkFiltersFromTCPRoutes);
/// TLS termination (mode SIMPLE) is not an L4 port.
#[test]
fn gateway_tcp_server_takes_the_first_matching_tcp_rule() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts: [db.example.com]
  ports:
  - number: 5432
    name: postgres
    protocol: TCP
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: istio-egressgateway
spec:
  selector:
    istio: egressgateway
  servers:
  - port: {number: 443, name: tcp, protocol: TCP}
    hosts: [db.example.com]
  - port: {number: 80, name: https, protocol: HTTPS}
    hosts: [db.example.com]
    tls:
      mode: SIMPLE
      credentialName: db-cert
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db
spec:
  hosts: [db.example.com]
  gateways: [istio-egressgateway]
  tcp:
  - match:
    - port: 9999
    route:
    - destination: {host: nowhere.example.com}
  - match:
    - port: 443
    route:
    - destination:
        host: db.example.com
        port: {number: 5432}
";
    let mut store = Store::new();
    apply(&mut store, NS, yaml);
    let mesh = course_mesh();
    let pods = vec![egress_pod()];
    let gw = MeshState::new(&store, &mesh, &pods).gateway_tables(&pods[0], GATEWAY_PORTS);
    let port = gw.l4.gateway.get(&443).unwrap();
    assert_eq!(port.protocol, L4Protocol::Tcp);
    assert_eq!(port.routes.len(), 1);
    assert_eq!(
        port.routes[0].clusters[0].cluster,
        "outbound|5432||db.example.com"
    );
    assert_eq!(port.routes[0].source.rule, 1);
    assert!(!gw.l4.gateway.contains_key(&80));
}

/// ClientTLSSettings compiled as cluster_tls.go reads them: port-level settings win over
/// the top level, `caCertificates` defaults to `system`, DISABLE and ISTIO_MUTUAL
/// originate nothing.
#[test]
fn destination_rule_tls_becomes_the_cluster_tls_policy() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: site
spec:
  hosts: [site.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP, targetPort: 443}
  - {number: 443, name: https, protocol: HTTPS}
  - {number: 8443, name: https-alt, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: site
spec:
  host: site.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      subjectAltNames: [backend.example.com]
    portLevelSettings:
    - port: {number: 80}
      tls:
        mode: SIMPLE
        sni: front.example.com
    - port: {number: 8443}
      tls:
        mode: DISABLE
";
    let mut store = Store::new();
    apply(&mut store, NS, yaml);
    let mesh = course_mesh();
    let pods = vec![client()];
    let tables = MeshState::new(&store, &mesh, &pods).sidecar_tables(&pods[0]);
    let cluster = |name: &str| {
        tables
            .clusters
            .get(name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        cluster("outbound|80||site.example.com").policy.tls,
        Some(ClusterTls {
            mode: TlsMode::Simple,
            credential_name: None,
            ca: CaSource::System,
            client_cert: None,
            sni: Some("front.example.com".into()),
            subject_alt_names: vec![],
            insecure_skip_verify: false,
        })
    );
    assert_eq!(
        cluster("outbound|443||site.example.com").policy.tls,
        Some(ClusterTls {
            mode: TlsMode::Mutual,
            credential_name: None,
            ca: CaSource::File("/etc/certs/ca.pem".into()),
            client_cert: Some(ClientCert::Files {
                cert: "/etc/certs/client.pem".into(),
                key: "/etc/certs/key.pem".into()
            }),
            sni: None,
            subject_alt_names: vec!["backend.example.com".into()],
            insecure_skip_verify: false,
        })
    );
    assert_eq!(cluster("outbound|8443||site.example.com").policy.tls, None);
    // ServiceEntry targetPort: port 80's endpoints are the host's port 443.
    assert_eq!(
        cluster("outbound|80||site.example.com").endpoints,
        meshbox_routing::tables::ClusterEndpoints::Dns(vec![("site.example.com".into(), 443)])
    );
}

/// `apply` no longer warns about `tls` / `tcp` rules or DestinationRule `tls` (they are
/// enforced), but still names what is not: ISTIO_MUTUAL and Gateway TLS termination.
#[test]
fn warnings_name_only_what_is_not_enforced() {
    let yaml = format!(
        "{CNN}{CNN_EGRESS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mtls
spec:
  host: edition.cnn.com
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: terminating
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ['*']
    tls:
      mode: SIMPLE
      credentialName: cert
"
    );
    let resources =
        meshbox_config::load_str("t.yaml", &yaml, &meshbox_config::LoadOptions::default()).unwrap();
    let notes: Vec<String> = resources
        .iter()
        .flat_map(meshbox_routing::unsupported::unsupported_features)
        .collect();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(
        notes[0].contains(
            "destinationrule.networking.istio.io/mtls: spec.trafficPolicy.tls.mode ISTIO_MUTUAL"
        ),
        "{notes:#?}"
    );
    assert!(notes[1].contains("gateway.networking.istio.io/terminating: spec.servers[0].tls.mode SIMPLE (TLS termination)"), "{notes:#?}");
}
