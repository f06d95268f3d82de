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
