//! TLS origination: a DestinationRule's `trafficPolicy.tls` (SIMPLE, MUTUAL) at the
//! sidecar and at the egress gateway, with ServiceEntry `targetPort`, against real TLS
//! servers whose CA the tests make. The cases follow istio.io's "Egress TLS
//! Origination" and "Egress Gateways with TLS Origination" tasks and istiod's
//! pilot/pkg/networking/core/cluster_tls.go (auto SNI, auto SAN validation, system
//! roots by default); failures are 503 with Envoy's reason in
//! %UPSTREAM_TRANSPORT_FAILURE_REASON%.

use std::sync::atomic::Ordering;

use crate::common::*;
use crate::tls_common::*;
use meshbox_proxy::Override;

fn connect_to(host_port: &str, addr: std::net::SocketAddr) -> Override {
    Override::parse_connect_to(&format!("{host_port}:127.0.0.1:{}", addr.port())).unwrap()
}

/// The course's next exercise (istio.io "Egress TLS Origination"): the ServiceEntry's
/// port 80 has `targetPort: 443`, and a DestinationRule originates TLS on port 80; the
/// application calls `http://`, the mesh upgrades the call. `tls` is the YAML of the
/// port-level `tls` block.
fn origination_yaml(host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: site
spec:
  hosts:
  - {host}
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: site
spec:
  host: {host}
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
{tls}
"
    )
}

/// A sidecar in REGISTRY_ONLY with `yaml`, resolving `site.test:443` to `server`.
async fn sidecar_with(yaml: &str, server: &TlsServer) -> Running {
    let store = store(yaml);
    let tables = sidecar_tables(&store, &registry_only(), &[]);
    sidecar(tables, vec![connect_to("site.test:443", server.addr)], 1).await
}

/// `GET http://site.test/page` through the sidecar, as the application sends it.
async fn get_site(sidecar: &Running) -> Reply {
    send(sidecar.addr, get("http://site.test/page", "site.test")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_tls_origination_upgrades_an_http_call_on_port_80_to_https_on_443() {
    let pki = Pki::new("test CA");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let server = tls_server("site", &pki.server(&["site.test"], Validity::Current), None).await;
    let yaml = origination_yaml(
        "site.test",
        &format!("        mode: SIMPLE\n        caCertificates: {ca}"),
    );
    let sidecar = sidecar_with(&yaml, &server).await;
    for _ in 0..3 {
        let reply = get_site(&sidecar).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body, "hello from site over TLS /page");
    }
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    // Envoy's auto_sni: the SNI is the request's Host.
    assert_eq!(seen[0].sni.as_deref(), Some("site.test"));
    assert_eq!(seen[0].host.as_deref(), Some("site.test"));
    assert!(!seen[0].client_cert);
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        1,
        "TLS connections are pooled and reused"
    );
    let line = sidecar.log.line(1).await;
    assert_eq!(line.response_code, "200");
    assert_eq!(line.upstream_cluster, "outbound|80||site.test");
    assert_eq!(line.upstream_host, server.addr.to_string());
    assert_eq!(line.upstream_transport_failure_reason, "-");
}

/// The three classic failures, each a 503 (after Istio's default retries on
/// connect-failure) with the reason in %UPSTREAM_TRANSPORT_FAILURE_REASON%: a
/// certificate from another CA, a certificate for another name (auto SAN validation
/// against the SNI), and an expired certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_wrong_name_and_expired_certificate_give_503_with_the_reason() {
    let pki = Pki::new("test CA");
    let other_ca = Pki::new("another CA");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let cases = [
        (
            "wrong CA",
            other_ca.server(&["site.test"], Validity::Current),
            "unable to get local issuer certificate",
        ),
        (
            "wrong name",
            pki.server(&["other.test"], Validity::Current),
            "verify cert failed: verify SAN list",
        ),
        (
            "expired",
            pki.server(&["site.test"], Validity::Expired),
            "certificate has expired",
        ),
    ];
    for (case, cert, reason) in cases {
        let server = tls_server("site", &cert, None).await;
        let yaml = origination_yaml(
            "site.test",
            &format!("        mode: SIMPLE\n        caCertificates: {ca}"),
        );
        let sidecar = sidecar_with(&yaml, &server).await;
        let reply = get_site(&sidecar).await;
        assert_eq!(reply.status, 503, "{case}: {reply:?}");
        let line = sidecar.log.only_line().await;
        assert_eq!(line.response_code, "503", "{case}");
        assert!(
            line.response_flags.starts_with("UF"),
            "{case}: {}",
            line.raw
        );
        assert_eq!(line.upstream_cluster, "outbound|80||site.test");
        assert_eq!(line.upstream_host, server.addr.to_string());
        assert!(
            line.upstream_transport_failure_reason.contains(
                "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED"
            ) && line.upstream_transport_failure_reason.contains(reason),
            "{case}: {}",
            line.raw
        );
        assert!(
            server.seen.lock().unwrap().is_empty(),
            "{case}: no request got through"
        );
    }
}

/// `subjectAltNames` replace the SNI as the names to verify; an explicit `sni` is sent
/// as is; `insecureSkipVerify` accepts a certificate no CA vouches for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_alt_names_sni_and_insecure_skip_verify() {
    let pki = Pki::new("test CA");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let server = tls_server(
        "site",
        &pki.server(&["backend.internal"], Validity::Current),
        None,
    )
    .await;

    let sans = origination_yaml(
        "site.test",
        &format!(
            "        mode: SIMPLE\n        caCertificates: {ca}\n        subjectAltNames:\n        - backend.internal"
        ),
    );
    let sidecar = sidecar_with(&sans, &server).await;
    assert_eq!(get_site(&sidecar).await.status, 200);
    assert_eq!(
        server.seen.lock().unwrap().last().unwrap().sni.as_deref(),
        Some("site.test"),
        "auto SNI still sends the Host"
    );

    let sni = origination_yaml(
        "site.test",
        &format!(
            "        mode: SIMPLE\n        caCertificates: {ca}\n        sni: backend.internal"
        ),
    );
    let sidecar = sidecar_with(&sni, &server).await;
    assert_eq!(get_site(&sidecar).await.status, 200);
    assert_eq!(
        server.seen.lock().unwrap().last().unwrap().sni.as_deref(),
        Some("backend.internal")
    );

    let wrong_sans = origination_yaml(
        "site.test",
        &format!(
            "        mode: SIMPLE\n        caCertificates: {ca}\n        subjectAltNames:\n        - site.test"
        ),
    );
    let sidecar = sidecar_with(&wrong_sans, &server).await;
    assert_eq!(get_site(&sidecar).await.status, 503);

    let stranger = Pki::new("unknown CA");
    let untrusted = tls_server(
        "site",
        &stranger.server(&["x.invalid"], Validity::Expired),
        None,
    )
    .await;
    let insecure = origination_yaml(
        "site.test",
        "        mode: SIMPLE\n        insecureSkipVerify: true",
    );
    let sidecar = sidecar_with(&insecure, &untrusted).await;
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// No `caCertificates`: Istio's default is the system roots (meshbox: the web PKI roots
/// of webpki-roots), which do not trust a test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roots_are_the_web_pki() {
    let pki = Pki::new("test CA");
    let server = tls_server("site", &pki.server(&["site.test"], Validity::Current), None).await;
    let yaml = origination_yaml("site.test", "        mode: SIMPLE");
    let sidecar = sidecar_with(&yaml, &server).await;
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 503);
    let line = sidecar.log.only_line().await;
    assert!(
        line.upstream_transport_failure_reason
            .contains("unable to get local issuer certificate"),
        "{}",
        line.raw
    );
}

/// MUTUAL: the client certificate and key from files, or from `credentialName`
/// (meshbox's mapping: `CREDENTIALS/NAME/{tls.crt,tls.key,ca.crt}`); without a client
/// certificate the server's refusal is the failure reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_files_and_with_credential_name() {
    let pki = Pki::new("test CA");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let client = pki.client("client.test");
    let cert = write(&dir, "client.pem", &client.cert_pem);
    let key = write(&dir, "client-key.pem", &client.key_pem);
    let server = tls_server(
        "site",
        &pki.server(&["site.test"], Validity::Current),
        Some(&pki),
    )
    .await;

    let files = origination_yaml(
        "site.test",
        &format!(
            "        mode: MUTUAL\n        caCertificates: {ca}\n        clientCertificate: {cert}\n        privateKey: {key}"
        ),
    );
    let sidecar = sidecar_with(&files, &server).await;
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(server.seen.lock().unwrap().last().unwrap().client_cert);

    let creds = temp_dir();
    write(&creds, "site-credential/tls.crt", &client.cert_pem);
    write(&creds, "site-credential/tls.key", &client.key_pem);
    write(&creds, "site-credential/ca.crt", &pki.ca_pem);
    let named = origination_yaml(
        "site.test",
        "        mode: MUTUAL\n        credentialName: site-credential",
    );
    let sidecar = sidecar_with(&named, &server).await;
    sidecar.proxy.set_credentials_dir(Some(creds.clone()));
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 200, "{reply:?}");

    let simple = origination_yaml(
        "site.test",
        &format!("        mode: SIMPLE\n        caCertificates: {ca}"),
    );
    let sidecar = sidecar_with(&simple, &server).await;
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 503);
    let line = sidecar.log.only_line().await;
    assert!(
        line.upstream_transport_failure_reason
            .starts_with("TLS_error:"),
        "{}",
        line.raw
    );
    // Under TLS 1.3 the refusal comes after the client's handshake: the connected
    // transport failed (UC), it is not an answer that does not parse (UPE).
    assert_eq!(line.response_flags, "UC", "{}", line.raw);

    let missing = origination_yaml(
        "site.test",
        "        mode: MUTUAL\n        credentialName: no-such-secret",
    );
    let sidecar = sidecar_with(&missing, &server).await;
    sidecar.proxy.set_credentials_dir(Some(creds));
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 503);
    let line = sidecar.log.only_line().await;
    assert!(
        line.upstream_transport_failure_reason
            .contains("no-such-secret"),
        "{}",
        line.raw
    );
}

/// istio.io "Egress Gateways with TLS Origination": the sidecar sends plain HTTP to the
/// egress gateway's port 80; the gateway routes to the external host's port 443, where
/// a DestinationRule (portLevelSettings 443, SIMPLE) originates TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_gateway_originates_tls() {
    let pki = Pki::new("test CA");
    let dir = temp_dir();
    let ca = write(&dir, "ca.pem", &pki.ca_pem);
    let server = tls_server("site", &pki.server(&["site.test"], Validity::Current), None).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: site
spec:
  hosts:
  - site.test
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: https
    protocol: HTTPS
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
      number: 80
      name: https-port-for-tls-origination
      protocol: HTTP
    hosts:
    - site.test
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: egressgateway-for-site
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets:
  - name: site
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: direct-site-through-egress-gateway
spec:
  hosts:
  - site.test
  gateways:
  - istio-egressgateway
  - mesh
  http:
  - match:
    - gateways:
      - mesh
      port: 80
    route:
    - destination:
        host: istio-egressgateway.istio-system.svc.cluster.local
        subset: site
        port:
          number: 80
      weight: 100
  - match:
    - gateways:
      - istio-egressgateway
      port: 80
    route:
    - destination:
        host: site.test
        port:
          number: 443
      weight: 100
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: originate-tls-for-site
spec:
  host: site.test
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE
        caCertificates: {ca}
"
    );
    let mesh = with_egress_gateway();
    let store = store(&yaml);
    let gateway = EgressGateway::bind()
        .await
        .start(
            &store,
            &mesh,
            &[],
            vec![connect_to("site.test:443", server.addr)],
        )
        .await;
    let tables = sidecar_tables(&store, &mesh, std::slice::from_ref(&gateway.instance));
    let sidecar = sidecar(tables, Vec::new(), 1).await;
    let reply = get_site(&sidecar).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body, "hello from site over TLS /page");
    let side = sidecar.log.only_line().await;
    assert_eq!(
        side.upstream_cluster,
        "outbound|80|site|istio-egressgateway.istio-system.svc.cluster.local"
    );
    let gw = gateway.log.only_line().await;
    assert_eq!(gw.upstream_cluster, "outbound|443||site.test");
    assert_eq!(gw.upstream_host, server.addr.to_string());
    assert_eq!(
        server.seen.lock().unwrap()[0].sni.as_deref(),
        Some("site.test")
    );
}
