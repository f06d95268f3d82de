//! The workloads of the worldtime egress scenario (see `shared/scenario/README.md` beside the project):
//! ServiceA, ServiceB, ServiceC, and `worldtime`, a local stand-in for worldtimeapi.org; and
//! `echo`, which answers with a description of the request it received (for tests); and
//! `static-1k`, which answers a fixed 1 KB body (the benchmark's upstream).
//!
//! Each `run_*` function serves one workload on a listener until the process ends. The
//! services know nothing about the mesh: their outbound calls go to fixed URLs, through the
//! HTTP proxy named by `HTTP_PROXY` when one is set, and the mesh decides where they land.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod echo;
mod services;
mod static1k;
mod worldtime;

use std::net::SocketAddr;

use anyhow::{bail, Context};
use tokio::net::TcpListener;

pub use client::{build_client, ClientConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT};
pub use echo::{describe_request, serve_echo, EchoIdentity};
pub use services::{
    serve_service_a, serve_service_c, ServiceAConfig, ServiceCConfig, DEFAULT_PRODUCER_URL,
    DEFAULT_WORLDTIME_URL,
};
pub use static1k::{serve_static_1k, static_1k_body, STATIC_1K_LEN};
pub use worldtime::zone_names;

/// The names of the workloads this crate can run, as accepted by [`run_app`].
pub fn app_names() -> &'static [&'static str] {
    &[
        "service-a",
        "service-b",
        "service-c",
        "worldtime",
        "echo",
        "static-1k",
    ]
}

/// The port the course gives a workload (ServiceA 8081, ServiceB 8082, ServiceC 8083,
/// worldtime 8080; echo and static-1k, not the course's, 8080 too), or `None` for an unknown name.
pub fn default_port(name: &str) -> Option<u16> {
    match name {
        "service-a" => Some(8081),
        "service-b" => Some(8082),
        "service-c" => Some(8083),
        "worldtime" | "echo" | "static-1k" => Some(8080),
        _ => None,
    }
}

/// Serves ServiceA on `listener`: `GET /` greets and calls the producer. The producer URL
/// (`PRODUCER_URL`, default `http://producer-internal-host:80/`) and the HTTP client
/// settings (see [`ClientConfig::from_env`]) come from the environment.
pub async fn run_service_a(listener: TcpListener) -> anyhow::Result<()> {
    serve_service_a(listener, ServiceAConfig::from_env()?).await
}

/// Serves ServiceB on `listener`: `GET /` answers `Hello from ServiceB!\n`.
pub async fn run_service_b(listener: TcpListener) -> anyhow::Result<()> {
    services::serve_service_b(listener).await
}

/// Serves ServiceC on `listener`: `GET /` greets and calls worldtimeapi.org. The URL
/// (`WORLDTIME_URL`, default `http://worldtimeapi.org/api/timezone/Europe`) and the HTTP
/// client settings (see [`ClientConfig::from_env`]) come from the environment.
pub async fn run_service_c(listener: TcpListener) -> anyhow::Result<()> {
    serve_service_c(listener, ServiceCConfig::from_env()?).await
}

/// Serves the worldtimeapi.org stand-in on `listener` (`/api/timezone[...]`, times computed
/// from the IANA database compiled into chrono-tz).
pub async fn run_worldtime(listener: TcpListener) -> anyhow::Result<()> {
    worldtime::serve(listener).await
}

/// Serves the echo workload on `listener`: every request is answered with a description of
/// it (method, URL, headers) and of the replica (`POD_NAME`, `SERVICE_VERSION`).
pub async fn run_echo(listener: TcpListener) -> anyhow::Result<()> {
    serve_echo(listener, EchoIdentity::from_env()).await
}

/// Runs the workload called `name` (one of [`app_names`]) on `listener`; an error for an
/// unknown name.
pub async fn run_app(name: &str, listener: TcpListener) -> anyhow::Result<()> {
    match name {
        "service-a" => run_service_a(listener).await,
        "service-b" => run_service_b(listener).await,
        "service-c" => run_service_c(listener).await,
        "worldtime" => run_worldtime(listener).await,
        "echo" => run_echo(listener).await,
        "static-1k" => serve_static_1k(listener).await,
        other => bail!(
            "unknown app {other:?}; known apps: {}",
            app_names().join(", ")
        ),
    }
}

/// The body of each binary: binds `BIND_ADDRESS` (default `0.0.0.0`) on `PORT` (default
/// [`default_port`]), prints `listening on ADDR` to stderr and runs the workload `name`.
pub async fn main_for(name: &str) -> anyhow::Result<()> {
    let default = default_port(name).with_context(|| {
        format!(
            "unknown app {name:?}; known apps: {}",
            app_names().join(", ")
        )
    })?;
    let port = match non_empty_env("PORT") {
        Some(raw) => raw
            .trim()
            .parse::<u16>()
            .with_context(|| format!("invalid PORT {raw:?}"))?,
        None => default,
    };
    let bind = non_empty_env("BIND_ADDRESS").unwrap_or_else(|| "0.0.0.0".to_string());
    let listener = bind_listener(bind.trim(), port).await?;
    let local: SocketAddr = listener.local_addr()?;
    eprintln!("listening on {local}");
    run_app(name, listener).await
}

/// Set to `1` by meshbox when it holds `PORT` reserved for this process with
/// `SO_REUSEPORT` (bound, never listening): the app then binds with `SO_REUSEPORT` too,
/// and is the only one that accepts on the port.
const REUSEPORT_ENV: &str = "MESHBOX_REUSEPORT";

async fn bind_listener(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    // Accept `::1` as well as `[::1]` for IPv6 addresses.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let context = || format!("cannot listen on {host}:{port}");
    if non_empty_env(REUSEPORT_ENV).as_deref() != Some("1") {
        return TcpListener::bind((host, port)).await.with_context(context);
    }
    let addr = tokio::net::lookup_host((host, port))
        .await
        .with_context(context)?
        .next()
        .with_context(context)?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .with_context(context)?;
    socket.set_reuseaddr(true).with_context(context)?;
    socket.set_reuseport(true).with_context(context)?;
    socket.bind(addr).with_context(context)?;
    socket.listen(1024).with_context(context)
}

/// The value of an environment variable, `None` when unset or empty.
pub(crate) fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}
