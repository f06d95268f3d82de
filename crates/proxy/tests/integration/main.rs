//! This crate's integration tests, one module per subject.
//! One test binary for all of them (each binary links every dependency: ~40 separate ones took
//! gigabytes of disk); run one module with `cargo test --test integration MODULE::`.

mod common;
mod tls_common;

mod bypass;
mod connections_and_updates;
mod destination_rules;
mod egress;
mod gateway;
mod https_egress;
mod load_balancing;
mod route_policies;
mod sidecar_outbound;
mod tls_origination;
mod upstream_failures;
