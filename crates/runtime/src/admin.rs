//! The mesh's admin listener: every proxy's Prometheus metrics (Istio's standard
//! metrics) over plain HTTP on 127.0.0.1, one path per proxy, as each Envoy serves
//! `:15090/stats/prometheus` in a cluster:
//!
//! - `GET /stats/prometheus` lists the scrape URLs, one per line;
//! - `GET /stats/prometheus/NAMESPACE/POD` is one proxy's metrics (OpenMetrics text).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use meshbox_proxy::ProxyMetrics;

/// Each running proxy's metrics by (namespace, pod).
pub type MetricsIndex = Arc<RwLock<BTreeMap<(String, String), Arc<ProxyMetrics>>>>;

/// The path prefix of the metrics endpoints.
pub const METRICS_PATH: &str = "/stats/prometheus";

/// The content type of prometheus-client's text exposition.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints until the task is dropped.
pub async fn serve_admin(listener: TcpListener, index: MetricsIndex) {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let index = index.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let index = index.clone();
                async move { Ok::<_, Infallible>(answer(&index, addr, req.uri().path())) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(index: &MetricsIndex, addr: SocketAddr, path: &str) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let Ok(index) = index.read() else {
        return reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            String::new(),
        );
    };
    let rest = path.trim_end_matches('/');
    if rest.is_empty() || rest == METRICS_PATH {
        let list: String = index
            .keys()
            .map(|(ns, pod)| format!("http://{addr}{METRICS_PATH}/{ns}/{pod}\n"))
            .collect();
        return reply(StatusCode::OK, "text/plain", list);
    }
    let found = rest
        .strip_prefix(METRICS_PATH)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.split_once('/'))
        .and_then(|(ns, pod)| index.get(&(ns.to_string(), pod.to_string())));
    match found {
        Some(m) => reply(StatusCode::OK, OPENMETRICS, m.encode()),
        None => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("no proxy at {path}; {METRICS_PATH} lists them\n"),
        ),
    }
}
