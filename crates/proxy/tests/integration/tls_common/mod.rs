//! TLS fixtures for the proxy's in-process tests: a test CA made with rcgen that
//! issues server and client certificates (valid, expired, for any names), real TLS
//! servers on 127.0.0.1 that answer HTTP/1.1 and report what they saw (SNI, client
//! certificate), a plain TCP echo server, the egress gateway of the course's install,
//! and a client that opens a CONNECT tunnel through a sidecar and speaks TLS inside it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use meshbox_config::{MeshOptions, Store};
use meshbox_proxy::{ListenerRole, Override, Proxy};
use meshbox_routing::{MeshState, WorkloadInstance};

use crate::common::{mesh_with, settings, LogLines, DEADLINE};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test certificate authority.
pub struct Pki {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// How long an issued certificate is valid.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From 2020 to 2100.
    Current,
    /// 2000 to 2001: expired.
    Expired,
}

impl Pki {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Pki {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).expect("CA certificate");
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str], validity: Validity) -> Issued {
        self.issue(names, validity, ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate (for MUTUAL).
    pub fn client(&self, name: &str) -> Issued {
        self.issue(
            &[name],
            Validity::Current,
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }

    fn issue(&self, names: &[&str], validity: Validity, usage: ExtendedKeyUsagePurpose) -> Issued {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<String>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("x"));
        params.extended_key_usages = vec![usage];
        let (from, to) = match validity {
            Validity::Current => ((2020, 1, 1), (2100, 1, 1)),
            Validity::Expired => ((2000, 1, 1), (2001, 1, 1)),
        };
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Client roots that trust this CA.
    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("add root");
        }
        roots
    }
}

/// Writes `content` to `dir/name` and returns the path as a string.
pub fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(&path, content).expect("write");
    path.display().to_string()
}

/// What a TLS server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub sni: Option<String>,
    pub client_cert: bool,
    pub host: Option<String>,
    pub path: String,
}

/// A real TLS server on 127.0.0.1 answering HTTP/1.1.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Completed handshakes' requests.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

/// A TLS server named `name` with this certificate; with `client_ca`, it requires a
/// client certificate issued by that CA. Every request is answered
/// `200 hello from NAME over TLS PATH` (or, for `/api/timezone/Europe`, the zone list
/// worldtimeapi.org gives).
pub async fn tls_server(name: &str, cert: &Issued, client_ca: Option<&Pki>) -> TlsServer {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
            .map(|c| c.expect("cert"))
            .collect();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .expect("client verifier"),
        ),
    };
    let config = Arc::new(builder.with_single_cert(chain, key).expect("server config"));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (acc, seen2, name) = (accepted.clone(), seen.clone(), name.to_string());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            acc.fetch_add(1, Ordering::SeqCst);
            let (acceptor, seen, name) = (acceptor.clone(), seen2.clone(), name.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                let client_cert = tls.get_ref().1.peer_certificates().is_some();
                let service = service_fn(move |req: Request<Incoming>| {
                    let (seen, name, sni) = (seen.clone(), name.clone(), sni.clone());
                    async move {
                        let path = req.uri().path().to_string();
                        seen.lock().unwrap().push(Seen {
                            sni,
                            client_cert,
                            host: req
                                .headers()
                                .get("host")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                            path: path.clone(),
                        });
                        let body = if path == "/api/timezone/Europe" {
                            "Europe/Amsterdam\nEurope/Andorra\nEurope/Astrakhan\nEurope/Athens\n"
                                .to_string()
                        } else {
                            format!("hello from {name} over TLS {path}")
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "text/plain")
                                .body(Full::new(Bytes::from(body)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    TlsServer {
        addr,
        accepted,
        seen,
    }
}

/// A plain TCP server that answers every chunk it reads with `NAME:` and the chunk.
pub async fn tcp_echo(name: &str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut out = format!("{name}:").into_bytes();
                            out.extend_from_slice(&buf[..n]);
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------- client

/// Sends `CONNECT authority` to a sidecar's outbound listener; returns the status and,
/// for 200, the tunnel.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to sidecar");
    let req = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: curl/8.5.0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write CONNECT");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(DEADLINE, s.read(&mut byte))
            .await
            .expect("CONNECT answer within the deadline")
            .expect("read");
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, s)
}

/// TLS over `stream` to `sni`, trusting `ca`; `GET path`; returns the body, or the
/// error (handshake refused, connection closed).
pub async fn tls_get(stream: TcpStream, sni: &str, ca: &Pki, path: &str) -> Result<String, String> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let work = async {
        let mut tls = connector
            .connect(name, stream)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") {
            return Err(head.to_string());
        }
        Ok(body.to_string())
    };
    tokio::time::timeout(DEADLINE, work)
        .await
        .map_err(|_| "timed out".to_string())?
}

// ---------------------------------------------------------------- egress gateway

/// The course's install with the egress gateway enabled; REGISTRY_ONLY, access log on.
pub fn with_egress_gateway() -> MeshOptions {
    mesh_with(&[
        "meshConfig.accessLogFile=/dev/stdout",
        "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
        "components.egressGateways[0].name=istio-egressgateway",
        "components.egressGateways[0].enabled=true",
    ])
}

/// The egress gateway's pod, serving Service ports 80 and 443 (container ports 8080
/// and 8443) on real listeners.
pub struct EgressGateway {
    pub instance: WorkloadInstance,
    pub proxy: Arc<Proxy>,
    pub log: Arc<LogLines>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    http_listener: Option<TcpListener>,
    https_listener: Option<TcpListener>,
}

impl EgressGateway {
    /// Binds the gateway's listeners (nothing is served until `start`).
    pub async fn bind() -> EgressGateway {
        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 80");
        let https_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 443");
        let (http, https) = (
            http_listener.local_addr().expect("addr"),
            https_listener.local_addr().expect("addr"),
        );
        let instance = WorkloadInstance {
            name: "istio-egressgateway-1".into(),
            namespace: "istio-system".into(),
            labels: [
                ("app".to_string(), "istio-egressgateway".to_string()),
                ("istio".to_string(), "egressgateway".to_string()),
            ]
            .into(),
            inbound: [(8080, http), (8443, https)].into(),
            named_ports: BTreeMap::new(),
        };
        let (settings, log) = settings(&instance.name, Vec::new(), 0);
        let tables = MeshState::new(&Store::new(), &MeshOptions::default(), &[])
            .gateway_tables(&instance, &[(8080, 80), (8443, 443)]);
        EgressGateway {
            proxy: Proxy::new(settings, tables),
            instance,
            log,
            http,
            https,
            http_listener: Some(http_listener),
            https_listener: Some(https_listener),
        }
    }

    /// Gives the gateway its tables for this config and starts serving, resolving
    /// names with `overrides`.
    pub async fn start(
        mut self,
        store: &Store,
        mesh: &MeshOptions,
        workloads: &[WorkloadInstance],
        overrides: Vec<Override>,
    ) -> EgressGateway {
        let (settings, log) = settings(&self.instance.name, overrides, 0);
        let mut all = workloads.to_vec();
        all.push(self.instance.clone());
        let tables = MeshState::new(store, mesh, &all)
            .gateway_tables(&self.instance, &[(8080, 80), (8443, 443)]);
        let proxy = Proxy::new(settings, tables);
        if let Some(l) = self.http_listener.take() {
            tokio::spawn(
                proxy
                    .clone()
                    .serve(l, ListenerRole::Gateway { service_port: 80 }),
            );
        }
        if let Some(l) = self.https_listener.take() {
            tokio::spawn(
                proxy
                    .clone()
                    .serve(l, ListenerRole::Gateway { service_port: 443 }),
            );
        }
        self.proxy = proxy;
        self.log = log;
        self
    }
}

/// A fresh temporary directory for certificate files.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meshbox-tls-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
