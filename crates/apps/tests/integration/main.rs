//! This crate's integration tests, one module per subject.
//! One test binary for all of them (each binary links every dependency: ~40 separate ones took
//! gigabytes of disk); run one module with `cargo test --test integration MODULE::`.

mod common;

mod echo;
mod services;
mod static1k;
mod worldtime;
