//! ServiceA, ServiceB and ServiceC.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::client::{self, build_client, ClientConfig, Outcome};
use crate::non_empty_env;

/// Where ServiceA's producer lives unless `PRODUCER_URL` says otherwise.
pub const DEFAULT_PRODUCER_URL: &str = "http://producer-internal-host:80/";
/// What ServiceC calls unless `WORLDTIME_URL` says otherwise.
pub const DEFAULT_WORLDTIME_URL: &str = "http://worldtimeapi.org/api/timezone/Europe";

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// What ServiceA needs: the producer's URL and the client to call it with.
#[derive(Debug, Clone)]
pub struct ServiceAConfig {
    /// URL of the producer, `http://producer-internal-host:80/` in the scenario.
    pub producer_url: String,
    /// The outbound client, shared by every request.
    pub client: reqwest::Client,
}

impl ServiceAConfig {
    /// `PRODUCER_URL` (default [`DEFAULT_PRODUCER_URL`]) and a client built from
    /// [`ClientConfig::from_env`].
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(ServiceAConfig {
            producer_url: non_empty_env("PRODUCER_URL")
                .unwrap_or_else(|| DEFAULT_PRODUCER_URL.to_string()),
            client: build_client(&ClientConfig::from_env()?)?,
        })
    }
}

/// What ServiceC needs: the worldtime URL and the client to call it with.
#[derive(Debug, Clone)]
pub struct ServiceCConfig {
    /// URL called, `http://worldtimeapi.org/api/timezone/Europe` in the scenario.
    pub worldtime_url: String,
    /// The outbound client, shared by every request.
    pub client: reqwest::Client,
}

impl ServiceCConfig {
    /// `WORLDTIME_URL` (default [`DEFAULT_WORLDTIME_URL`]) and a client built from
    /// [`ClientConfig::from_env`].
    pub fn from_env() -> anyhow::Result<Self> {
        Ok(ServiceCConfig {
            worldtime_url: non_empty_env("WORLDTIME_URL")
                .unwrap_or_else(|| DEFAULT_WORLDTIME_URL.to_string()),
            client: build_client(&ClientConfig::from_env()?)?,
        })
    }
}

/// Serves ServiceA on `listener` with explicit settings, until the process ends.
pub async fn serve_service_a(listener: TcpListener, config: ServiceAConfig) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(service_a))
        .with_state(Arc::new(config));
    serve(listener, app).await
}

/// Serves ServiceC on `listener` with explicit settings, until the process ends.
pub async fn serve_service_c(listener: TcpListener, config: ServiceCConfig) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(service_c))
        .with_state(Arc::new(config));
    serve(listener, app).await
}

pub(crate) async fn serve_service_b(listener: TcpListener) -> anyhow::Result<()> {
    serve(listener, Router::new().route("/", get(service_b))).await
}

async fn serve(listener: TcpListener, app: Router) -> anyhow::Result<()> {
    axum::serve(listener, app).await?;
    Ok(())
}

fn text(body: String) -> impl IntoResponse {
    ([(CONTENT_TYPE, TEXT_PLAIN)], body)
}

async fn service_a(State(config): State<Arc<ServiceAConfig>>) -> impl IntoResponse {
    let outcome = match client::get(&config.client, &config.producer_url).await {
        Outcome::Success(body) => format!("Received response from Producer Service: {body}"),
        Outcome::Status(message) | Outcome::Io(message) => message,
    };
    text(format!(
        "Hello from ServiceA! Calling Producer Service... {outcome}\n"
    ))
}

async fn service_b() -> impl IntoResponse {
    text("Hello from ServiceB!\n".to_string())
}

async fn service_c(State(config): State<Arc<ServiceCConfig>>) -> impl IntoResponse {
    let outcome = match client::get(&config.client, &config.worldtime_url).await {
        Outcome::Success(body) => {
            let head: String = body.chars().take(100).collect();
            format!(
                "Received response from worldtimeapi.org: {head}... (printed only 100 symbols from response body beginning)"
            )
        }
        Outcome::Status(message) | Outcome::Io(message) => message,
    };
    text(format!(
        "Hello from ServiceC! Calling worldtimeapi.org API... {outcome}\n"
    ))
}
