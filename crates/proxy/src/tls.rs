//! TLS origination: a DestinationRule's `trafficPolicy.tls` (SIMPLE, MUTUAL) towards a
//! cluster's endpoints, as Envoy's upstream `TlsContext` does it with the settings
//! istiod writes (pilot/pkg/networking/core/cluster_tls.go):
//!
//! - roots: `caCertificates` (a PEM file), else Istio's default `system`, which meshbox
//!   takes from webpki-roots (the web PKI roots); `insecureSkipVerify` verifies nothing;
//! - SNI: `sni`, else Envoy's `auto_sni`, the request's Host without its port;
//! - name check: `subjectAltNames` when given; else, with no `sni`, Envoy's
//!   `auto_san_validation` against the SNI sent; an explicit `sni` without
//!   `subjectAltNames` verifies the chain only, as Istio configures Envoy;
//! - MUTUAL: `clientCertificate` and `privateKey`, or `credentialName`, which meshbox
//!   reads from `CREDENTIALS/NAME/` (`tls.crt`, `tls.key`, `ca.crt`, or `cert`, `key`,
//!   `cacert`), CREDENTIALS being `$MESHBOX_HOME/credentials` for `meshbox up`.
//!
//! Connections are pooled by hyper-util's legacy client through [`TlsConnector`]; a
//! failed handshake is a connection failure (503 `UF`) whose reason goes to
//! `%UPSTREAM_TRANSPORT_FAILURE_REASON%` in Envoy's words
//! (`TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:...`).

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;

use meshbox_routing::cluster_policy::{CaSource, ClientCert, ClusterTls, TlsMode};

/// The TLS policy of one upstream request: the cluster's settings and the SNI it sends.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTls {
    /// The cluster's compiled `trafficPolicy.tls`.
    pub(crate) policy: Arc<ClusterTls>,
    /// The server name to send and (unless told otherwise) verify: `sni`, else the Host.
    pub(crate) server_name: String,
}

impl UpstreamTls {
    /// The policy for a request whose (upstream) Host is `authority`.
    pub(crate) fn for_request(policy: &ClusterTls, authority: &str) -> UpstreamTls {
        let server_name = match &policy.sni {
            Some(sni) => sni.clone(),
            None => {
                let host = meshbox_routing::tables::strip_port(authority);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .trim_end_matches('.')
                    .to_ascii_lowercase()
            }
        };
        UpstreamTls {
            policy: Arc::new(policy.clone()),
            server_name,
        }
    }
}

/// The proxy's TLS client state: client configurations by policy, and the targets
/// its connector dials.
pub(crate) struct TlsClients {
    configs: Mutex<HashMap<ClusterTls, Result<Arc<ClientConfig>, String>>>,
    credentials: RwLock<Option<PathBuf>>,
    targets: Arc<Mutex<HashMap<String, TlsTarget>>>,
    generation: std::sync::atomic::AtomicU64,
}

/// Where one pooled TLS connection goes and how it is made.
#[derive(Clone)]
struct TlsTarget {
    addr: SocketAddr,
    server_name: ServerName<'static>,
    config: Arc<ClientConfig>,
}

impl TlsClients {
    pub(crate) fn new() -> TlsClients {
        TlsClients {
            configs: Mutex::new(HashMap::new()),
            credentials: RwLock::new(None),
            targets: Arc::new(Mutex::new(HashMap::new())),
            generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The connector for the proxy's TLS client.
    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector {
            targets: self.targets.clone(),
        }
    }

    /// Where `credentialName` secrets are read from.
    pub(crate) fn set_credentials_dir(&self, dir: Option<PathBuf>) {
        if let Ok(mut c) = self.credentials.write() {
            *c = dir;
        }
        self.reload();
    }

    /// Forgets loaded certificates (read again on next use) and, for new requests,
    /// the pooled connections made with them.
    pub(crate) fn reload(&self) {
        if let Ok(mut c) = self.configs.lock() {
            c.clear();
        }
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn config(&self, policy: &ClusterTls) -> Result<Arc<ClientConfig>, String> {
        if let Some(found) = self
            .configs
            .lock()
            .ok()
            .and_then(|c| c.get(policy).cloned())
        {
            return found;
        }
        let dir = self.credentials.read().ok().and_then(|d| d.clone());
        let built = build_config(policy, dir.as_deref()).map(Arc::new);
        if let Ok(mut c) = self.configs.lock() {
            c.insert(policy.clone(), built.clone());
        }
        built
    }

    /// The URI authority under which requests to `addr` with this policy are pooled,
    /// registering the target for the connector; `Err` with Envoy-style failure reason
    /// when the certificates cannot be loaded or the name is not valid.
    pub(crate) fn target(&self, addr: SocketAddr, tls: &UpstreamTls) -> Result<String, String> {
        let config = self.config(&tls.policy)?;
        let server_name = if tls.server_name.is_empty() {
            ServerName::IpAddress(addr.ip().into())
        } else {
            ServerName::try_from(tls.server_name.clone()).map_err(|_| {
                format!(
                    "TLS_error:|invalid server name {:?}:TLS_error_end",
                    tls.server_name
                )
            })?
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.generation
            .load(std::sync::atomic::Ordering::Relaxed)
            .hash(&mut h);
        addr.hash(&mut h);
        tls.server_name.hash(&mut h);
        tls.policy.hash(&mut h);
        let key = format!("t{:016x}.meshbox-tls.invalid", h.finish());
        if let Ok(mut targets) = self.targets.lock() {
            if targets.len() > 4096 {
                targets.clear();
            }
            targets.entry(key.clone()).or_insert(TlsTarget {
                addr,
                server_name,
                config,
            });
        }
        Ok(key)
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "TLS_error:|cannot read {what} {}: {e}:TLS_error_end",
            path.display()
        )
    })
}

/// The first of `names` that exists in `dir`.
fn credential_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

/// Builds the rustls client configuration of a policy.
fn build_config(policy: &ClusterTls, credentials: Option<&Path>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // credentialName replaces the file paths (a Kubernetes TLS secret's keys, or the
    // generic secret's `cert`, `key`, `cacert`).
    let (ca_file, client_files) = match &policy.credential_name {
        Some(name) => {
            let Some(root) = credentials else {
                return Err(format!(
                    "TLS_error:|credentialName {name}: no credentials directory:TLS_error_end"
                ));
            };
            let dir = root.join(name);
            if !dir.is_dir() {
                return Err(format!(
                    "TLS_error:|credentialName {name}: {} does not exist:TLS_error_end",
                    dir.display()
                ));
            }
            let ca = credential_file(&dir, &["ca.crt", "cacert"]);
            let cert = credential_file(&dir, &["tls.crt", "cert"]);
            let key = credential_file(&dir, &["tls.key", "key"]);
            let client = match (cert, key) {
                (Some(c), Some(k)) => Some((c, k)),
                _ => None,
            };
            (ca, client)
        }
        None => (
            match &policy.ca {
                CaSource::System => None,
                CaSource::File(p) => Some(PathBuf::from(p)),
            },
            policy.client_cert.as_ref().map(|c| match c {
                ClientCert::Files { cert, key } => (PathBuf::from(cert), PathBuf::from(key)),
            }),
        ),
    };
    let verifier: Arc<dyn ServerCertVerifier> = if policy.insecure_skip_verify {
        Arc::new(NoVerification(provider.clone()))
    } else {
        let mut roots = RootCertStore::empty();
        match &ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let pem = read_file(path, "caCertificates")?;
                for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(format!(
                        "TLS_error:|no CA certificate in {}:TLS_error_end",
                        path.display()
                    ));
                }
            }
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("TLS_error:|{e}:TLS_error_end"))?;
        let names = if policy.subject_alt_names.is_empty() {
            if policy.sni.is_some() {
                NameCheck::ChainOnly
            } else {
                NameCheck::Sni
            }
        } else {
            NameCheck::AnyOf(
                policy
                    .subject_alt_names
                    .iter()
                    .filter_map(|n| ServerName::try_from(n.clone()).ok())
                    .collect(),
            )
        };
        Arc::new(IstioVerifier { inner, names })
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS_error:|{e}:TLS_error_end"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (policy.mode, client_files) {
        (TlsMode::Mutual, None) => Err(
            "TLS_error:|client certificate and private key must not be empty (MUTUAL):TLS_error_end"
                .into(),
        ),
        (_, Some((cert, key))) if policy.mode == TlsMode::Mutual => {
            let cert_pem = read_file(&cert, "clientCertificate")?;
            let key_pem = read_file(&key, "privateKey")?;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
                .flatten()
                .collect();
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                format!("TLS_error:|bad private key {}: {e}:TLS_error_end", key.display())
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("TLS_error:|{e}:TLS_error_end"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// Which names the server certificate must carry.
#[derive(Debug)]
enum NameCheck {
    /// The SNI sent (`auto_san_validation`).
    Sni,
    /// One of `subjectAltNames`.
    AnyOf(Vec<ServerName<'static>>),
    /// An explicit `sni` and no `subjectAltNames`: Istio sets no SAN matcher, so Envoy
    /// verifies the chain only.
    ChainOnly,
}

/// The web PKI verifier with Istio's choice of names.
#[derive(Debug)]
struct IstioVerifier {
    inner: Arc<WebPkiServerVerifier>,
    names: NameCheck,
}

fn is_name_error(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
        )
    )
}

impl ServerCertVerifier for IstioVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verify = |name: &ServerName<'_>| {
            self.inner
                .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        };
        match &self.names {
            NameCheck::Sni => verify(server_name),
            NameCheck::ChainOnly => match verify(server_name) {
                Err(e) if is_name_error(&e) => Ok(ServerCertVerified::assertion()),
                other => other,
            },
            NameCheck::AnyOf(names) => {
                let mut last = Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName,
                ));
                for n in names {
                    last = verify(n);
                    match &last {
                        Ok(_) => return last,
                        Err(e) if is_name_error(e) => continue,
                        Err(_) => return last,
                    }
                }
                last
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `insecureSkipVerify: true`: any certificate is accepted (the handshake's signatures
/// are still checked, as TLS requires).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake failure in Envoy's words, for `%UPSTREAM_TRANSPORT_FAILURE_REASON%`:
/// certificate problems as BoringSSL's CERTIFICATE_VERIFY_FAILED with the X.509 reason
/// (as Envoy 1.37 adds it), other failures with rustls's description.
pub fn handshake_failure_reason(e: &rustls::Error) -> String {
    let verify_failed = |detail: &str| {
        format!(
            "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:{detail}:TLS_error_end"
        )
    };
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                verify_failed("certificate has expired")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                verify_failed("certificate is not yet valid")
            }
            CertificateError::UnknownIssuer => {
                verify_failed("unable to get local issuer certificate")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                verify_failed("verify cert failed: verify SAN list")
            }
            CertificateError::BadSignature => verify_failed("certificate signature failure"),
            CertificateError::Revoked => verify_failed("certificate revoked"),
            other => verify_failed(&format!("{other:?}").replace('"', "'")),
        },
        other => format!(
            "TLS_error:|{}:TLS_error_end",
            other.to_string().replace('"', "'")
        ),
    }
}

/// Why the TLS connector could not give a connection.
#[derive(Debug)]
pub(crate) struct ConnectError {
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub(crate) reason: String,
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for ConnectError {}

/// The addresses of an upstream connection (the TLS connector's `HttpInfo`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpstreamAddrs {
    pub(crate) local: SocketAddr,
}

/// hyper-util connector: TCP, then the TLS handshake of the target registered under
/// the URI's host by [`TlsClients::target`].
#[derive(Clone)]
pub(crate) struct TlsConnector {
    targets: Arc<Mutex<HashMap<String, TlsTarget>>>,
}

/// How long a connection (TCP and TLS handshake) to an upstream may take: the mesh's
/// connect timeout (a DestinationRule's own is not applied to TLS origination; `apply`
/// says so).
const CONNECT_TIMEOUT: Duration = crate::pool::DEFAULT_CONNECT_TIMEOUT;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsConn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsConn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let target = uri
            .host()
            .and_then(|h| self.targets.lock().ok()?.get(h).cloned());
        Box::pin(async move {
            let Some(t) = target else {
                return Err(ConnectError {
                    reason: format!("no TLS target for {uri}"),
                });
            };
            let connect = async {
                let tcp = TcpStream::connect(t.addr).await.map_err(|e| ConnectError {
                    reason: format!("delayed connect error: {e}"),
                })?;
                let _ = tcp.set_nodelay(true);
                let local = tcp.local_addr().map_err(|e| ConnectError {
                    reason: e.to_string(),
                })?;
                let tls = tokio_rustls::TlsConnector::from(t.config)
                    .connect(t.server_name, tcp)
                    .await
                    .map_err(|e| {
                        let reason = match e
                            .get_ref()
                            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                        {
                            Some(tls_error) => handshake_failure_reason(tls_error),
                            None => format!("TLS_error:|{e}:TLS_error_end"),
                        };
                        ConnectError { reason }
                    })?;
                Ok(TlsConn {
                    io: TokioIo::new(tls),
                    local,
                })
            };
            match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                Ok(r) => r,
                Err(_) => Err(ConnectError {
                    reason: "connection timeout".into(),
                }),
            }
        })
    }
}

/// A TLS connection to an upstream, as hyper reads and writes it.
pub(crate) struct TlsConn {
    io: TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl Connection for TlsConn {
    fn connected(&self) -> Connected {
        Connected::new().extra(UpstreamAddrs { local: self.local })
    }
}

impl hyper::rt::Read for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The transport failure reason of a client error from the TLS connector, if that is
/// where it failed.
pub(crate) fn connect_failure_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(c) = err.downcast_ref::<ConnectError>() {
            return Some(c.reason.clone());
        }
        source = err.source();
    }
    None
}

/// The reason of a rustls error somewhere in an error's chain (an I/O error on a TLS
/// connection carries it), in Envoy's words.
pub(crate) fn tls_error_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(handshake_failure_reason(t));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(handshake_failure_reason(t));
            }
        }
        source = err.source();
    }
    None
}
