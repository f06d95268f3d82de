#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! Pure translation from meshbox's configuration to each proxy's routing tables, the
//! way istiod translates Istio config for Envoy. No I/O: the data plane, `trace` and
//! `proxy-config` all read what this crate builds.

pub mod analyze;
pub mod build;
pub mod cluster_policy;
pub mod dump;
pub mod l4;
pub mod policy;
pub mod registry;
pub mod tables;
pub mod trace;
pub mod unsupported;

pub use build::{MeshState, MESH_GATEWAY};
pub use registry::{Registry, WorkloadInstance};
pub use tables::{ProxyKind, ProxyTables, RequestView, RouteAction};
