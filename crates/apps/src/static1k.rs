//! `static-1k`: a benchmark upstream that answers every request, whatever its method and
//! path, with the same 1024-byte `text/plain` body (the 1 KB payload of Istio's
//! published performance figures). It does no work per request beyond writing that body,
//! so a benchmark measures the proxies in front of it, not the workload.

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;

/// The body's length in bytes.
pub const STATIC_1K_LEN: usize = 1024;

/// The body: 1023 `x` and a newline.
pub fn static_1k_body() -> &'static [u8] {
    static BODY: [u8; STATIC_1K_LEN] = {
        let mut b = [b'x'; STATIC_1K_LEN];
        b[STATIC_1K_LEN - 1] = b'\n';
        b
    };
    &BODY
}

/// Serves the fixed 1 KB body on `listener` until the process ends.
pub async fn serve_static_1k(listener: TcpListener) -> anyhow::Result<()> {
    let app = Router::new().fallback(answer);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn answer() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/plain")], static_1k_body())
}
