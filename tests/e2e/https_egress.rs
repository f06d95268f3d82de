//! HTTPS egress and TLS origination through a real `meshbox up`, against TLS servers
//! this test runs on 127.0.0.1 with a CA it makes (rcgen): the course's next exercise
//! (istio.io "Egress TLS Origination": ServiceC calls `http://worldtimeapi.org` and the
//! mesh upgrades the call to HTTPS), and a workload's CONNECT tunnel through its sidecar
//! and the egress gateway, routed by SNI (istio.io "Egress Gateways", "Egress gateway
//! for HTTPS traffic").

use crate::common;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::common::MeshProcess;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA and one server certificate it issued.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(ca_name: &str, server_name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, ca_name);
        let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![server_name.to_string()]).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("cert");
        Pki {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.expect("pem")).expect("root");
        }
        roots
    }
}

/// An HTTPS server on 127.0.0.1 (a thread per connection, keep-alive): `GET
/// /api/timezone/Europe` gives worldtimeapi.org's zone list as text, any other path
/// `hello from NAME over TLS PATH`.
fn https_server(name: &'static str, pki: &Pki) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).expect("key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for tcp in listener.incoming().map_while(Result::ok) {
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                loop {
                    let mut request_line = String::new();
                    if tls.read_line(&mut request_line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut line = String::new();
                    let mut close = false;
                    while tls.read_line(&mut line).unwrap_or(0) > 2 {
                        close |= line.to_ascii_lowercase().starts_with("connection: close");
                        line.clear();
                    }
                    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                    let body = if path == "/api/timezone/Europe" {
                        "Europe/Amsterdam\nEurope/Andorra\nEurope/Astrakhan\nEurope/Athens\nEurope/Belgrade\nEurope/Berlin\nEurope/Bratislava\nEurope/Brussels\n".to_string()
                    } else {
                        format!("hello from {name} over TLS {path}")
                    };
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.get_mut().write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                    let _ = tls.get_mut().flush();
                    if close {
                        tls.get_mut().conn.send_close_notify();
                        let _ = tls.get_mut().flush();
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn write_file(mesh: &MeshProcess, name: &str, content: &str) -> String {
    let path = mesh.home().join(name);
    std::fs::write(&path, content).expect("write");
    path.display().to_string()
}

fn apply_yaml(mesh: &MeshProcess, name: &str, yaml: &str) -> String {
    let path = write_file(mesh, name, yaml);
    mesh.ok(&["apply", "-n", "dev-service-mesh", "-f", &path])
}

/// istio.io "Egress TLS Origination" for the course's worldtimeapi.org: port 80 of the
/// ServiceEntry goes to port 443 (`targetPort`), where the DestinationRule originates
/// TLS (`mode: SIMPLE`, the test's CA as `caCertificates`).
fn origination(ca: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: worldtime-host-se
spec:
  hosts:
  - worldtimeapi.org
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: worldtimeapi-tls
spec:
  host: worldtimeapi.org
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE
        caCertificates: {ca}
"
    )
}

#[test]
fn service_c_gets_the_https_only_site_because_the_mesh_originates_tls() {
    let pki = Pki::new("meshbox e2e CA", "worldtimeapi.org");
    let site = https_server("worldtimeapi", &pki);
    let connect_to = format!("worldtimeapi.org:443:127.0.0.1:{}", site.port());
    let mesh = MeshProcess::start(&[
        "-n",
        "dev-service-mesh",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--connect-to",
        &connect_to,
    ]);
    mesh.apply(&common::course_to_c());
    let ca = write_file(&mesh, "ca.pem", &pki.ca_pem);
    let out = apply_yaml(&mesh, "origination.yaml", &origination(&ca));
    assert!(!out.contains("not enforced"), "{out}");
    let (_, body) = mesh.wait_for("/service-a", |s, b| {
        s == 200 && b.contains("Received response from worldtimeapi.org")
    });
    assert!(
        body.contains("Hello from ServiceC! Calling worldtimeapi.org API... Received response from worldtimeapi.org: Europe/Amsterdam\nEurope/Andorra"),
        "{body:?}"
    );
    let log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("outbound|80||worldtimeapi.org")
    });
    let line = log
        .lines()
        .find(|l| l.contains("outbound|80||worldtimeapi.org"))
        .unwrap();
    assert!(
        line.contains("\"GET /api/timezone/Europe HTTP/1.1\" 200"),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"127.0.0.1:{}\"", site.port())),
        "{line}"
    );

    // The same site behind a CA the DestinationRule does not name: 503, and the
    // sidecar's log says why.
    let stranger = Pki::new("another CA", "worldtimeapi.org");
    let other_ca = write_file(&mesh, "other-ca.pem", &stranger.ca_pem);
    apply_yaml(&mesh, "origination.yaml", &origination(&other_ca));
    let (_, body) = mesh.wait_for("/service-a", |_, b| b.contains("503 Service Unavailable"));
    assert!(
        body.contains("Calling worldtimeapi.org API... 503"),
        "{body:?}"
    );
    let log = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("CERTIFICATE_VERIFY_FAILED")
    });
    assert!(
        log.contains("unable to get local issuer certificate"),
        "{log}"
    );
}

/// istio.io "Egress Gateways", "Egress gateway for HTTPS traffic", with
/// secure.example.test for edition.cnn.com.
const EGRESS_HTTPS: &str = "apiVersion: networking.istio.io/v1
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

/// Sends `CONNECT authority` to `proxy`; the status, and the stream for the tunnel.
fn connect(proxy: &str, authority: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(proxy).expect("connect to the sidecar");
    s.set_read_timeout(Some(Duration::from_secs(20))).ok();
    write!(
        s,
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
    )
    .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

#[test]
fn a_workloads_https_goes_through_its_sidecar_and_the_egress_gateway_by_sni() {
    let pki = Pki::new("meshbox e2e CA", "secure.example.test");
    let site = https_server("secure", &pki);
    let connect_to = format!("secure.example.test:443:127.0.0.1:{}", site.port());
    let mesh = MeshProcess::start(&[
        "-n",
        "dev-service-mesh",
        "--set",
        "meshConfig.accessLogFile=/dev/stdout",
        "--set",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "--set",
        "components.egressGateways[0].name=istio-egressgateway",
        "--set",
        "components.egressGateways[0].enabled=true",
        "--connect-to",
        &connect_to,
    ]);
    mesh.apply(&["service-c-deployment.yml"]);
    let out = apply_yaml(&mesh, "egress-https.yaml", EGRESS_HTTPS);
    assert!(!out.contains("not enforced"), "{out}");
    // The workload's HTTPS_PROXY: its sidecar's outbound listener.
    let proxy = mesh
        .ok(&[
            "exec",
            "service-c-deployment",
            "-n",
            "dev-service-mesh",
            "--",
            "printenv",
            "HTTPS_PROXY",
        ])
        .trim()
        .trim_start_matches("http://")
        .to_string();

    let (status, tunnel) = connect(&proxy, "secure.example.test:443");
    assert_eq!(status, 200);
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(pki.roots())
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("secure.example.test").expect("name"),
    )
    .expect("client");
    let mut tls = rustls::StreamOwned::new(conn, tunnel);
    tls.write_all(
        b"GET /politics HTTP/1.1\r\nHost: secure.example.test\r\nConnection: close\r\n\r\n",
    )
    .expect("request through the tunnel");
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("hello from secure over TLS /politics"),
        "{text}"
    );
    drop(tls);

    let sidecar = mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.contains("outbound|443|secure|istio-egressgateway.istio-system.svc.cluster.local")
    });
    let line = sidecar
        .lines()
        .find(|l| l.contains("outbound|443|secure|istio-egressgateway"))
        .unwrap();
    assert!(line.contains("\"- - -\" 0 - - -"), "{line}");
    assert!(
        line.contains(" secure.example.test -"),
        "SNI logged: {line}"
    );
    let gateway = mesh.wait_for_log("istio-egressgateway", "istio-system", |l| {
        l.contains("outbound|443||secure.example.test")
    });
    let line = gateway
        .lines()
        .find(|l| l.contains("outbound|443||secure.example.test"))
        .unwrap();
    assert!(
        line.contains(&format!("\"127.0.0.1:{}\"", site.port())),
        "{line}"
    );
    assert!(line.contains(" secure.example.test -"), "{line}");

    // A host no ServiceEntry lists: refused, and the log names it.
    let (status, _) = connect(&proxy, "unlisted.example.test:443");
    assert_eq!(status, 502);
    mesh.wait_for_log("service-c-deployment", "dev-service-mesh", |l| {
        l.lines().any(|line| {
            line.contains("\"CONNECT - HTTP/1.1\" 502")
                && line.contains("\"unlisted.example.test:443\"")
                && line.contains("BlackHoleCluster")
        })
    });
}
