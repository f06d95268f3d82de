#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! meshbox's data plane: sidecars and gateways on tokio and hyper. Each proxy reads
//! an immutable snapshot of its tables (swapped whole on change), routes with
//! Istio's semantics, forwards over pooled keep-alive connections, and writes
//! Istio's access log.

pub mod access_log;
mod balancer;
pub mod body;
mod forwarding;
mod h1;
mod h1_server;
pub mod metrics;
mod pool;
pub mod proxy;
mod reset;
pub mod resolver;
mod sharded;
pub mod sni;
mod tls;
mod tunnel;
pub mod workers;

pub use access_log::{AccessLogSink, Encoding};
pub use metrics::{ProxyMetrics, WorkloadIdentity};
pub use proxy::{ListenerRole, Proxy, ProxySettings};
pub use resolver::{Override, Resolver};
pub use tls::handshake_failure_reason;
pub use tunnel::BLACKHOLE_CLUSTER;
pub use workers::Workers;
