#![deny(unsafe_code)]
#![warn(missing_docs)]
//! The local mesh: runs gateways, sidecar proxies and workload processes on one
//! machine, applies configuration changes without restarts, and serves the control
//! API that `apply`, `get`, `delete`, `install`, `logs` and `exec` use.

pub mod admin;
pub mod control;
pub mod format;
pub mod images;
pub mod mesh;
mod orphans;
pub mod paths;
pub mod ports;
pub mod supervisor;
pub mod up;

pub use control::{ControlRequest, ControlResponse, PodLocation};
pub use up::{control, run_up, UpOptions};
