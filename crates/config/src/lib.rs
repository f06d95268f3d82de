#![forbid(unsafe_code)]
#![warn(missing_docs)]
//! meshbox's configuration: the Istio and Kubernetes resource model, YAML loading
//! with precise errors, Istio's per-object validation, the kubectl-apply store, and
//! install options.

pub mod istio;
pub mod kube;
pub mod load;
pub mod locate;
pub mod mesh;
pub mod resource;
pub mod store;
pub mod validate;

pub use load::{
    load_sources, load_str, read_sources, split_documents, DocumentText, LoadError, LoadErrors,
    LoadOptions, Source,
};
pub use mesh::{GatewayComponent, GatewayRole, MeshOptions, OutboundPolicy};
pub use resource::{Kind, ObjectKey, Origin, Resource, Spec};
pub use store::{ApplyAction, Store};
