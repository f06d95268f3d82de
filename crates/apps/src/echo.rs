//! `echo`: a workload for tests and experiments that answers every request, whatever its
//! method and path, with a description of the request it received, one `Key=value` per
//! line (the shape of Istio's own echo test server):
//!
//! ```text
//! ServiceVersion=v1
//! Hostname=echo-v1-0
//! Method=GET
//! URL=/path?query
//! Proto=HTTP/1.1
//! Host=echo
//! RequestHeader=host:echo
//! RequestHeader=x-custom:some-value
//! ```
//!
//! `Hostname` is `POD_NAME` (else `HOSTNAME`, else `echo`) and `ServiceVersion` is
//! `SERVICE_VERSION` (empty when unset), so a test can tell which replica and which
//! version answered. Header names are as received (lower case), in the order received.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, Method, Uri, Version};
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;

use crate::non_empty_env;

/// Who this echo server is: its replica and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoIdentity {
    /// The replica's name (`Hostname=`).
    pub hostname: String,
    /// The version it reports (`ServiceVersion=`).
    pub version: String,
}

impl EchoIdentity {
    /// `POD_NAME` (else `HOSTNAME`, else `echo`) and `SERVICE_VERSION` (else empty).
    pub fn from_env() -> EchoIdentity {
        EchoIdentity {
            hostname: non_empty_env("POD_NAME")
                .or_else(|| non_empty_env("HOSTNAME"))
                .unwrap_or_else(|| "echo".to_string()),
            version: non_empty_env("SERVICE_VERSION").unwrap_or_default(),
        }
    }
}

/// Serves the echo workload on `listener` with this identity, until the process ends.
pub async fn serve_echo(listener: TcpListener, identity: EchoIdentity) -> anyhow::Result<()> {
    let app = Router::new()
        .fallback(answer)
        .with_state(Arc::new(identity));
    axum::serve(listener, app).await?;
    Ok(())
}

async fn answer(State(identity): State<Arc<EchoIdentity>>, req: Request) -> impl IntoResponse {
    let text = describe_request(
        &identity,
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
    );
    ([(CONTENT_TYPE, "text/plain; charset=utf-8")], text)
}

/// The description the echo workload answers with (see the module documentation).
pub fn describe_request(
    identity: &EchoIdentity,
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> String {
    let url = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let proto = match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    };
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    let mut out = String::new();
    let _ = writeln!(out, "ServiceVersion={}", identity.version);
    let _ = writeln!(out, "Hostname={}", identity.hostname);
    let _ = writeln!(out, "Method={method}");
    let _ = writeln!(out, "URL={url}");
    let _ = writeln!(out, "Proto={proto}");
    let _ = writeln!(out, "Host={host}");
    for (name, value) in headers {
        let _ = writeln!(
            out,
            "RequestHeader={}:{}",
            name.as_str(),
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    out
}
