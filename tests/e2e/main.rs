//! The end-to-end tests: each module starts the real `meshbox` binary and sends real requests.
//! One test binary for all of them (each binary links every dependency: ~40 separate ones took
//! gigabytes of disk); run one module with `cargo test --test e2e MODULE::`.

mod common;

mod analyze;
mod conformance;
mod egress_observability;
mod http2;
mod https_egress;
mod mesh_behaviour;
mod scenario;
mod sidecar_resource;
mod trace_and_proxy_config;
mod walkthrough_https;
mod workers;
