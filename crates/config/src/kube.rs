//! The Kubernetes kinds meshbox reads: Service, Deployment and Namespace. Fields
//! meshbox does not use are accepted when Kubernetes has them and rejected when it
//! does not, so a typo is caught the way `kubectl apply --validate=strict` catches it.

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

use crate::istio::Labels;

/// `metadata` of any object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ObjectMeta {
    /// Object name (required).
    pub name: String,
    /// Namespace; the loader fills it in for namespaced kinds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Accepted and ignored (server-populated or unused locally), as are the fields below.
    #[serde(skip_serializing)]
    pub generate_name: Option<String>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub uid: Option<String>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub resource_version: Option<String>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub generation: Option<i64>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub creation_timestamp: Option<Value>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub deletion_timestamp: Option<Value>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub deletion_grace_period_seconds: Option<i64>,
    /// Ignored locally.
    #[serde(skip_serializing)]
    pub finalizers: Vec<String>,
    /// Ignored locally.
    #[serde(skip_serializing)]
    pub owner_references: Vec<Value>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub managed_fields: Vec<Value>,
    /// Server-assigned; ignored.
    #[serde(skip_serializing)]
    pub self_link: Option<String>,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSpec {
    /// The ports the service exposes.
    pub ports: Vec<ServicePort>,
    /// Labels of the pods behind the service.
    pub selector: Labels,
    /// `ClusterIP` (default), `NodePort`, `LoadBalancer` or `ExternalName`.
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    /// Virtual IP, or `None` for a headless service.
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    /// Virtual IPs (dual stack).
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    /// DNS name an `ExternalName` service aliases.
    pub external_name: Option<String>,
    /// Extra IPs that route to the service.
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    /// `None` or `ClientIP`.
    pub session_affinity: Option<String>,
    /// Session affinity settings (accepted, unused).
    pub session_affinity_config: Option<Value>,
    /// IP families (accepted, unused).
    pub ip_families: Vec<String>,
    /// IP family policy (accepted, unused).
    pub ip_family_policy: Option<String>,
    /// `Cluster` or `Local` (accepted, unused).
    pub internal_traffic_policy: Option<String>,
    /// `Cluster` or `Local` (accepted, unused).
    pub external_traffic_policy: Option<String>,
    /// Requested load balancer IP (accepted, unused).
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    /// Allowed client ranges of the load balancer (accepted, unused).
    pub load_balancer_source_ranges: Vec<String>,
    /// Load balancer implementation (accepted, unused).
    pub load_balancer_class: Option<String>,
    /// Whether node ports are allocated (accepted, unused).
    pub allocate_load_balancer_node_ports: Option<bool>,
    /// Health check node port (accepted, unused).
    pub health_check_node_port: Option<u32>,
    /// Publish endpoints of unready pods (accepted, unused).
    pub publish_not_ready_addresses: Option<bool>,
    /// Traffic distribution preference (accepted, unused).
    pub traffic_distribution: Option<String>,
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePort {
    /// Port name (required when the service has several ports).
    pub name: Option<String>,
    /// Port the service listens on.
    pub port: u32,
    /// Container port (number or name) traffic goes to; defaults to `port`.
    pub target_port: Option<IntOrString>,
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// Application protocol hint (e.g. `http`).
    pub app_protocol: Option<String>,
    /// Node port (NodePort and LoadBalancer services).
    pub node_port: Option<u32>,
}

/// Kubernetes `IntOrString`: a port number or a named container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    /// A port number.
    Int(u32),
    /// The name of a container port.
    String(String),
}

/// `Deployment.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeploymentSpec {
    /// Number of pods (default 1).
    #[serde(deserialize_with = "non_negative")]
    pub replicas: Option<u32>,
    /// Which pods belong to the deployment; must match the template's labels.
    pub selector: LabelSelector,
    /// The pods to run.
    pub template: PodTemplateSpec,
    /// Rollout strategy (accepted, unused).
    pub strategy: Option<Value>,
    /// Accepted, unused.
    pub min_ready_seconds: Option<u32>,
    /// Accepted, unused.
    pub revision_history_limit: Option<u32>,
    /// Accepted, unused.
    pub progress_deadline_seconds: Option<u32>,
    /// Accepted, unused.
    pub paused: Option<bool>,
}

/// A count that Kubernetes requires to be `>= 0`, with the API server's message. The
/// check runs inside the visitor so that the YAML parser stamps the error with the
/// position of the number.
fn non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = Option<u32>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a non-negative integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_i64(self)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
            if n < 0 {
                return Err(E::custom(format!(
                    "Invalid value: {n}: must be greater than or equal to 0"
                )));
            }
            self.visit_u64(n as u64)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
            u32::try_from(n)
                .map(Some)
                .map_err(|_| E::custom(format!("Invalid value: {n}: must be at most {}", u32::MAX)))
        }
    }
    d.deserialize_option(Count)
}

/// `LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelector {
    /// Labels that must be present with these values.
    pub match_labels: Labels,
    /// Set-based requirements (`key`, `operator`, `values`).
    pub match_expressions: Vec<Value>,
}

/// `PodTemplateSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodTemplateSpec {
    /// Metadata of the pods (their labels).
    pub metadata: ObjectMeta,
    /// Spec of the pods.
    pub spec: PodSpec,
}

/// The Kubernetes PodSpec fields meshbox accepts without using them.
const POD_SPEC_OTHER_FIELDS: &[&str] = &[
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "imagePullSecrets",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
];

/// The Kubernetes Container fields meshbox accepts without using them.
const CONTAINER_OTHER_FIELDS: &[&str] = &[
    "envFrom",
    "imagePullPolicy",
    "lifecycle",
    "livenessProbe",
    "readinessProbe",
    "resizePolicy",
    "resources",
    "restartPolicy",
    "securityContext",
    "startupProbe",
    "stdin",
    "stdinOnce",
    "terminationMessagePath",
    "terminationMessagePolicy",
    "tty",
    "volumeDevices",
    "volumeMounts",
];

/// `PodSpec`: the containers meshbox runs, plus the Kubernetes fields it accepts and ignores.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The containers.
    pub containers: Vec<Container>,
    /// Containers run to completion before the others start.
    pub init_containers: Vec<Container>,
    /// Kubernetes fields with no meaning for a local process, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// Container name, unique in the pod.
    pub name: String,
    /// Image reference.
    pub image: Option<String>,
    /// Entrypoint (replaces the image's).
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    pub args: Vec<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Ports the container listens on.
    pub ports: Vec<ContainerPort>,
    /// Environment variables.
    pub env: Vec<EnvVar>,
    /// Kubernetes fields with no meaning for a local process, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `ContainerPort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerPort {
    /// The port number.
    pub container_port: u32,
    /// Port name (an IANA service name), unique in the pod.
    pub name: Option<String>,
    /// `TCP` (default), `UDP` or `SCTP`.
    pub protocol: Option<String>,
    /// Host port (accepted, unused).
    pub host_port: Option<u32>,
    /// Host IP (accepted, unused).
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// `EnvVar`: a literal value (valueFrom is accepted but not resolved locally).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvVar {
    /// Variable name.
    pub name: String,
    /// Literal value.
    pub value: Option<String>,
    /// Reference to a secret, config map or field (accepted, not resolved).
    pub value_from: Option<Value>,
}

impl PodSpec {
    /// Field paths (relative to the pod spec) that Kubernetes would not accept.
    pub fn unknown_fields(&self) -> Vec<String> {
        let mut unknown: Vec<String> = self
            .other
            .keys()
            .filter(|k| !POD_SPEC_OTHER_FIELDS.contains(&k.as_str()))
            .cloned()
            .collect();
        for (i, c) in self.containers.iter().enumerate() {
            for k in c.other.keys() {
                if !CONTAINER_OTHER_FIELDS.contains(&k.as_str()) {
                    unknown.push(format!("containers[{i}].{k}"));
                }
            }
        }
        unknown
    }
}

/// `Namespace.spec` (nothing meshbox uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NamespaceSpec {
    /// Accepted, unused.
    pub finalizers: Vec<String>,
}
