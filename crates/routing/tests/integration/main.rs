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
