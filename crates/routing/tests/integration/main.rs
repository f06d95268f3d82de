//! This crate's integration tests, one module per subject.
//! One test binary for all of them (each binary links every dependency: ~40 separate ones took
//! gigabytes of disk); run one module with `cargo test --test integration MODULE::`.

mod common;

mod clusters;
mod dump;
mod gateway_routing;
mod matching;
mod sidecar_resource;
mod sidecar_routing;
mod tls_and_tcp_routes;
mod trace;
mod worldtime_course;
