//! One loaded object: its kind, identity, spec, and where it came from.

use serde::Serialize;
use std::fmt;

use crate::istio::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
};
use crate::kube::{DeploymentSpec, NamespaceSpec, ObjectMeta, ServiceSpec};

/// The kinds meshbox understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    /// `v1` Namespace.
    Namespace,
    /// `v1` Service.
    Service,
    /// `apps/v1` Deployment.
    Deployment,
    /// `networking.istio.io` Gateway.
    Gateway,
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `install.istio.io` IstioOperator (install options).
    IstioOperator,
}

impl Kind {
    /// Every kind, in the order `get all` lists them.
    pub const ALL: [Kind; 9] = [
        Kind::Namespace,
        Kind::Service,
        Kind::Deployment,
        Kind::Gateway,
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::IstioOperator,
    ];

    /// The kind as YAML spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Deployment => "Deployment",
            Kind::Gateway => "Gateway",
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::IstioOperator => "IstioOperator",
        }
    }

    /// The resource name kubectl prints, e.g. `virtualservice.networking.istio.io`.
    pub fn resource_name(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Service => "service",
            Kind::Deployment => "deployment.apps",
            Kind::Gateway => "gateway.networking.istio.io",
            Kind::VirtualService => "virtualservice.networking.istio.io",
            Kind::DestinationRule => "destinationrule.networking.istio.io",
            Kind::ServiceEntry => "serviceentry.networking.istio.io",
            Kind::Sidecar => "sidecar.networking.istio.io",
            Kind::IstioOperator => "istiooperator.install.istio.io",
        }
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace)
    }

    /// The API versions accepted for this kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace | Kind::Service => &["v1"],
            Kind::Deployment => &["apps/v1"],
            Kind::Gateway
            | Kind::VirtualService
            | Kind::DestinationRule
            | Kind::ServiceEntry
            | Kind::Sidecar => &[
                "networking.istio.io/v1",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3",
            ],
            Kind::IstioOperator => &["install.istio.io/v1alpha1"],
        }
    }

    /// Parses a kind from YAML's `kind` field.
    pub fn from_kind_field(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// Parses what a user types after `get`: kubectl's plural, singular and short names.
    pub fn from_cli_name(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let base = lower.split('.').next().unwrap_or("");
        Some(match base {
            "ns" | "namespace" | "namespaces" => Kind::Namespace,
            "svc" | "service" | "services" => Kind::Service,
            "deploy" | "deployment" | "deployments" => Kind::Deployment,
            "gw" | "gateway" | "gateways" => Kind::Gateway,
            "vs" | "virtualservice" | "virtualservices" => Kind::VirtualService,
            "dr" | "destinationrule" | "destinationrules" => Kind::DestinationRule,
            "se" | "serviceentry" | "serviceentries" => Kind::ServiceEntry,
            "sidecar" | "sidecars" => Kind::Sidecar,
            "iop" | "istiooperator" | "istiooperators" => Kind::IstioOperator,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an object was read from, for messages that point at the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    /// The file name as the user gave it (`-` for standard input).
    pub file: String,
    /// 1-based index of the YAML document in the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file, self.line, self.document
        )
    }
}

/// The spec of an object, by kind.
// The largest spec, a DestinationRule with its typed traffic policies, is boxed:
// a store can hold tens of thousands of objects.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Spec {
    /// A Namespace's spec.
    Namespace(NamespaceSpec),
    /// A Service's spec.
    Service(ServiceSpec),
    /// A Deployment's spec.
    Deployment(DeploymentSpec),
    /// A Gateway's spec.
    Gateway(GatewaySpec),
    /// A VirtualService's spec.
    VirtualService(VirtualServiceSpec),
    /// A DestinationRule's spec (boxed: with its typed traffic policies it is several
    /// times larger than the other specs, and every object would pay for it).
    DestinationRule(Box<DestinationRuleSpec>),
    /// A ServiceEntry's spec.
    ServiceEntry(ServiceEntrySpec),
    /// A Sidecar's spec.
    Sidecar(SidecarSpec),
    /// IstioOperator's spec, interpreted by [`crate::mesh::MeshOptions`].
    IstioOperator(serde_json::Value),
}

/// Identity of an object under kubectl-apply semantics: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind.resource_name(), self.name)
        } else {
            write!(
                f,
                "{}/{} (namespace {})",
                self.kind.resource_name(),
                self.name,
                self.namespace
            )
        }
    }
}

/// A loaded object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resource {
    /// `apiVersion` as written (one of [`Kind::api_versions`]).
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// `metadata`, with the namespace filled in for namespaced kinds.
    pub metadata: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// Where the object was read (not part of its configuration).
    #[serde(skip)]
    pub origin: Origin,
}

impl Resource {
    /// The identity of this object.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            kind: self.kind,
            namespace: self.namespace().to_string(),
            name: self.metadata.name.clone(),
        }
    }

    /// The object's namespace (set by the loader for namespaced kinds).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("")
    }

    /// Whether two objects hold the same configuration (ignoring where they were read).
    pub fn same_config(&self, other: &Resource) -> bool {
        self.api_version == other.api_version
            && self.metadata == other.metadata
            && self.spec == other.spec
    }
}
