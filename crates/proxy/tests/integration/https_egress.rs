//! HTTPS from workloads: `CONNECT host:port` through the sidecar (`HTTPS_PROXY`), TLS
//! passthrough by SNI at the egress gateway, and TCP routes, with real TLS servers whose
//! CA the tests make. Each test names the Istio behaviour it follows: the istio.io tasks
//! "Accessing External Services" (REGISTRY_ONLY, ServiceEntry with protocol TLS),
//! "Egress Gateways" (section "Egress gateway for HTTPS traffic") and "Egress using
//! Wildcard Hosts", and pilot/pkg/networking/core/tls.go and gateway.go.

use crate::common::*;
use crate::tls_common::*;
use meshbox_proxy::Override;

/// A ServiceEntry for an HTTPS-only external host, as in "Accessing External Services"
/// (edition.cnn.com port 443, protocol TLS, resolution DNS).
const SECURE_SE: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: secure
spec:
  hosts:
  - secure.example.test
  ports:
  - number: 443
    name: tls
    protocol: TLS
  resolution: DNS
  location: MESH_EXTERNAL
---
";

/// A sidecar whose mesh has one ordinary Service, plus `yaml`.
async fn sidecar_for(
    mesh: &meshbox_config::MeshOptions,
    yaml: &str,
    overrides: Vec<Override>,
) -> Running {
    let app = echo_upstream("svc").await;
    let pod = pod("svc-1", "svc", 8080, app.addr).await;
    let store = store(&format!("{}{yaml}", service_yaml("svc", "svc", 8080)));
    let tables = sidecar_tables(&store, mesh, std::slice::from_ref(&pod.instance));
    sidecar(tables, overrides, 1).await
}

fn connect_to(host_port: &str, addr: std::net::SocketAddr) -> Override {
    Override::parse_connect_to(&format!("{host_port}:127.0.0.1:{}", addr.port())).unwrap()
}

/// REGISTRY_ONLY with a ServiceEntry listing the host on port 443 with protocol TLS:
/// the workload's CONNECT gets 200, the TLS session goes end to end (the sidecar does
/// not terminate it), and the sidecar logs one TCP line in Istio's format: `"- - -" 0`,
/// bytes both ways, cluster `outbound|443||secure.example.test`, the SNI as
/// %REQUESTED_SERVER_NAME%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_tunnels_connect_to_a_service_entry_tls_port() {
    let pki = Pki::new("test CA");
    let server = tls_server(
        "secure",
        &pki.server(&["secure.example.test"], Validity::Current),
        None,
    )
    .await;
    let sidecar = sidecar_for(
        &registry_only(),
        SECURE_SE,
        vec![connect_to("secure.example.test:443", server.addr)],
    )
    .await;
    let (status, tunnel) = connect(sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    let body = tls_get(tunnel, "secure.example.test", &pki, "/page")
        .await
        .unwrap();
    assert_eq!(body, "hello from secure over TLS /page");
    assert_eq!(
        server.seen.lock().unwrap()[0].sni.as_deref(),
        Some("secure.example.test"),
        "the workload's own ClientHello reaches the server"
    );
    let line = sidecar.log.only_line().await;
    assert_eq!(
        (
            line.method.as_str(),
            line.path.as_str(),
            line.protocol.as_str()
        ),
        ("-", "-", "-")
    );
    assert_eq!(line.response_code, "0");
    assert_eq!(line.response_flags, "-");
    assert_eq!(line.upstream_cluster, "outbound|443||secure.example.test");
    assert_eq!(line.upstream_host, server.addr.to_string());
    assert_eq!(line.requested_server_name, "secure.example.test");
    assert!(
        line.bytes_received.parse::<u64>().unwrap() > 100,
        "{}",
        line.raw
    );
    assert!(
        line.bytes_sent.parse::<u64>().unwrap() > 100,
        "{}",
        line.raw
    );
    assert_ne!(line.upstream_local_address, "-");
}

/// REGISTRY_ONLY refuses a tunnel to a host no ServiceEntry lists, and to a port of a
/// listed host that the ServiceEntry does not list: 502, and the access log names the
/// host and port asked for (which Istio's blocked-TLS lines do not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_refuses_connect_to_unlisted_hosts_and_ports_naming_them() {
    let sidecar = sidecar_for(&registry_only(), SECURE_SE, Vec::new()).await;
    for target in ["unlisted.example.test:443", "secure.example.test:8443"] {
        let (status, _) = connect(sidecar.addr, target).await;
        assert_eq!(status, 502, "{target}");
        let line = sidecar.log.find(|l| l.authority == target).await;
        assert_eq!(line.method, "CONNECT");
        assert_eq!(line.response_code, "502");
        assert_eq!(line.upstream_cluster, "BlackHoleCluster");
        assert_eq!(line.route_name, "block_all");
        assert_eq!(line.user_agent, "curl/8.5.0");
    }
}

/// ALLOW_ANY (Istio's default outbound policy): any CONNECT is tunnelled to the
/// resolved host (honouring --connect-to overrides) through PassthroughCluster, TLS or
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_tunnels_connect_to_anything_through_passthrough() {
    let pki = Pki::new("test CA");
    let server = tls_server(
        "anything",
        &pki.server(&["anything.test"], Validity::Current),
        None,
    )
    .await;
    let echo = tcp_echo("raw").await;
    let sidecar = sidecar_for(
        &allow_any(),
        "",
        vec![
            connect_to("anything.test:443", server.addr),
            connect_to("raw.test:7000", echo),
        ],
    )
    .await;
    let (status, tunnel) = connect(sidecar.addr, "anything.test:443").await;
    assert_eq!(status, 200);
    let body = tls_get(tunnel, "anything.test", &pki, "/").await.unwrap();
    assert_eq!(body, "hello from anything over TLS /");
    let line = sidecar
        .log
        .find(|l| l.upstream_host == server.addr.to_string())
        .await;
    assert_eq!(line.upstream_cluster, "PassthroughCluster");

    // Not TLS at all: bytes are relayed as they are.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (status, mut tunnel) = connect(sidecar.addr, "raw.test:7000").await;
    assert_eq!(status, 200);
    tunnel.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 8];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"raw:ping");
    drop(tunnel);
    let line = sidecar
        .log
        .find(|l| l.upstream_host == echo.to_string())
        .await;
    assert_eq!(line.upstream_cluster, "PassthroughCluster");
    assert_eq!(line.bytes_received, "4");
    assert_eq!(line.bytes_sent, "8");
    assert_eq!(line.requested_server_name, "-");

    // A tunnel to the sidecar's own listener would loop: refused, 503 UH.
    let own = sidecar.addr.to_string();
    let (status, _) = connect(sidecar.addr, &own).await;
    assert_eq!(status, 503);
    let line = sidecar.log.find(|l| l.authority == own).await;
    assert_eq!(line.response_flags, "UH");
}

/// REGISTRY_ONLY: a tunnel allowed for a listed name, whose ClientHello then asks for
/// another server, is closed before anything reaches the upstream; the log shows the SNI
/// asked for and NR (no filter chain matches it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_closes_a_tunnel_whose_sni_names_another_host() {
    let pki = Pki::new("test CA");
    let server = tls_server(
        "secure",
        &pki.server(&["evil.test"], Validity::Current),
        None,
    )
    .await;
    let sidecar = sidecar_for(
        &registry_only(),
        SECURE_SE,
        vec![connect_to("secure.example.test:443", server.addr)],
    )
    .await;
    let (status, tunnel) = connect(sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    let result = tls_get(tunnel, "evil.test", &pki, "/").await;
    assert!(result.is_err(), "{result:?}");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "NR");
    assert_eq!(line.requested_server_name, "evil.test");
    assert_eq!(line.upstream_cluster, "BlackHoleCluster");
    assert!(
        server.seen.lock().unwrap().is_empty(),
        "nothing reached the server"
    );
}

/// istio.io "Egress Gateways", section "Egress gateway for HTTPS traffic", with
/// secure.example.test for edition.cnn.com: a Gateway server on port 443 with protocol
/// TLS and `tls.mode: PASSTHROUGH`, and one VirtualService whose `tls` rules send
/// sidecar traffic (`gateways: [mesh]`, sniHosts) to the egress gateway's port 443 and
/// the egress gateway's traffic (`gateways: [istio-egressgateway]`) to the external
/// host. The TLS session is the workload's own, end to end.
const EGRESS_HTTPS: &str = "apiVersion: networking.istio.io/v1
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
    - secure.example.test
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-secure
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: secure
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-secure-through-egress-gateway
spec:
  hosts:
  - secure.example.test
  gateways:
  - mesh
  - istio-egressgateway
  tls:
  - match:
    - gateways:
      - mesh
      port: 443
      sniHosts:
      - secure.example.test
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: secure
        port:
          number: 443
  - match:
    - gateways:
      - istio-egressgateway
      port: 443
      sniHosts:
      - secure.example.test
    route:
    - destination:
        host: secure.example.test
        port:
          number: 443
      weight: 100
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_goes_through_the_egress_gateway_by_sni_without_termination() {
    let pki = Pki::new("test CA");
    let server = tls_server(
        "secure",
        &pki.server(&["secure.example.test"], Validity::Current),
        None,
    )
    .await;
    let mesh = with_egress_gateway();
    let store = store(&format!("{SECURE_SE}{EGRESS_HTTPS}"));
    let gateway = EgressGateway::bind().await;
    let gateway = gateway
        .start(
            &store,
            &mesh,
            &[],
            vec![connect_to("secure.example.test:443", server.addr)],
        )
        .await;
    let tables = sidecar_tables(&store, &mesh, std::slice::from_ref(&gateway.instance));
    // The sidecar itself could not reach the external host: no override there.
    let sidecar = sidecar(tables, Vec::new(), 1).await;

    let (status, tunnel) = connect(sidecar.addr, "secure.example.test:443").await;
    assert_eq!(status, 200);
    let body = tls_get(tunnel, "secure.example.test", &pki, "/politics")
        .await
        .unwrap();
    assert_eq!(body, "hello from secure over TLS /politics");

    let side = sidecar.log.only_line().await;
    assert_eq!(
        side.upstream_cluster,
        "outbound|443|secure|istio-egressgateway.istio-system.svc.cluster.local"
    );
    assert_eq!(side.upstream_host, gateway.https.to_string());
    assert_eq!(side.requested_server_name, "secure.example.test");
    let gw = gateway.log.only_line().await;
    assert_eq!((gw.method.as_str(), gw.response_code.as_str()), ("-", "0"));
    assert_eq!(gw.upstream_cluster, "outbound|443||secure.example.test");
    assert_eq!(gw.upstream_host, server.addr.to_string());
    assert_eq!(gw.downstream_local_address, gateway.https.to_string());
    assert_eq!(gw.requested_server_name, "secure.example.test");
    assert_eq!(
        gw.bytes_sent, side.bytes_sent,
        "the same bytes pass both proxies"
    );
}

/// At the egress gateway, a ClientHello whose SNI no `tls` match lists finds no filter
/// chain (gateway.go builds chains from sniHosts only): the connection is closed and
/// logged `NR filter_chain_not_found` with the SNI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_closes_connections_for_sni_it_does_not_route() {
    let pki = Pki::new("test CA");
    let mesh = with_egress_gateway();
    let store = store(&format!("{SECURE_SE}{EGRESS_HTTPS}"));
    let gateway = EgressGateway::bind()
        .await
        .start(&store, &mesh, &[], Vec::new())
        .await;
    let stream = tokio::net::TcpStream::connect(gateway.https).await.unwrap();
    let result = tls_get(stream, "other.example.test", &pki, "/").await;
    assert!(result.is_err(), "{result:?}");
    let line = gateway.log.only_line().await;
    assert_eq!(line.response_flags, "NR");
    assert_eq!(line.response_code_details, "filter_chain_not_found");
    assert_eq!(line.requested_server_name, "other.example.test");
    assert_eq!(line.upstream_cluster, "-");
}

/// A Gateway server with `protocol: TCP` and a VirtualService `tcp` rule bound to it
/// (gateway.go buildGatewayNetworkFiltersFromTCPRoutes: the first rule whose port and
/// gateways match): the gateway relays plain bytes to the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_gateway_tcp_server_relays_bytes_by_tcp_route() {
    let echo = tcp_echo("db").await;
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts:
  - db.example.test
  ports:
  - number: 5432
    name: tcp
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
  - port:
      number: 443
      name: tcp
      protocol: TCP
    hosts:
    - db.example.test
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db-through-egress
spec:
  hosts:
  - db.example.test
  gateways:
  - istio-egressgateway
  tcp:
  - match:
    - port: 443
    route:
    - destination:
        host: db.example.test
        port:
          number: 5432
";
    let mesh = with_egress_gateway();
    let store = store(yaml);
    let gateway = EgressGateway::bind()
        .await
        .start(
            &store,
            &mesh,
            &[],
            vec![connect_to("db.example.test:5432", echo)],
        )
        .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(gateway.https).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"db:hello");
    drop(s);
    let line = gateway.log.only_line().await;
    assert_eq!(line.upstream_cluster, "outbound|5432||db.example.test");
    assert_eq!(line.upstream_host, echo.to_string());
    assert_eq!(
        (line.bytes_received.as_str(), line.bytes_sent.as_str()),
        ("5", "8")
    );
    assert_eq!(line.requested_server_name, "-");
}

/// A sidecar `tcp` rule for a ServiceEntry's TCP port (tls.go
/// buildSidecarOutboundTCPFilterChainOpts: a rule without destination subnets is the
/// terminal chain) sends the tunnel to the rule's destination instead of the host's own
/// cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_tcp_route_redirects_a_tunnel_to_a_service_entry_port() {
    let primary = tcp_echo("primary").await;
    let replica = tcp_echo("replica").await;
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts:
  - db.example.test
  ports:
  - number: 5432
    name: postgres
    protocol: TCP
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db-replica
spec:
  hosts:
  - replica.example.test
  ports:
  - number: 5432
    name: postgres
    protocol: TCP
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: db-to-replica
spec:
  hosts:
  - db.example.test
  tcp:
  - match:
    - port: 5432
    route:
    - destination:
        host: replica.example.test
        port:
          number: 5432
";
    let sidecar = sidecar_for(
        &registry_only(),
        yaml,
        vec![
            connect_to("db.example.test:5432", primary),
            connect_to("replica.example.test:5432", replica),
        ],
    )
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (status, mut tunnel) = connect(sidecar.addr, "db.example.test:5432").await;
    assert_eq!(status, 200);
    tunnel.write_all(b"q").await.unwrap();
    let mut buf = [0u8; 9];
    tunnel.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"replica:q");
    drop(tunnel);
    let line = sidecar.log.only_line().await;
    assert_eq!(line.upstream_cluster, "outbound|5432||replica.example.test");
}

/// istio.io "Egress using Wildcard Hosts": a ServiceEntry for `*.wikipedia.org` on port
/// 443 (protocol TLS, resolution NONE) lets every subdomain through; the tunnel goes to
/// the host the workload asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_service_entry_allows_every_subdomain() {
    let pki = Pki::new("test CA");
    let en = tls_server(
        "en",
        &pki.server(&["en.wikipedia.test"], Validity::Current),
        None,
    )
    .await;
    let de = tls_server(
        "de",
        &pki.server(&["de.wikipedia.test"], Validity::Current),
        None,
    )
    .await;
    let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wikipedia
spec:
  hosts:
  - \"*.wikipedia.test\"
  ports:
  - number: 443
    name: tls
    protocol: TLS
";
    let sidecar = sidecar_for(
        &registry_only(),
        yaml,
        vec![
            connect_to("en.wikipedia.test:443", en.addr),
            connect_to("de.wikipedia.test:443", de.addr),
        ],
    )
    .await;
    for (host, name) in [("en.wikipedia.test", "en"), ("de.wikipedia.test", "de")] {
        let (status, tunnel) = connect(sidecar.addr, &format!("{host}:443")).await;
        assert_eq!(status, 200);
        let body = tls_get(tunnel, host, &pki, "/").await.unwrap();
        assert_eq!(body, format!("hello from {name} over TLS /"));
        let line = sidecar.log.find(|l| l.requested_server_name == host).await;
        assert_eq!(line.upstream_cluster, "outbound|443||*.wikipedia.test");
    }
    let (status, _) = connect(sidecar.addr, "wikipedia.test:443").await;
    assert_eq!(
        status, 502,
        "the bare domain is not covered by *.wikipedia.test"
    );
}
