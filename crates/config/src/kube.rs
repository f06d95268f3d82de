//! The Kubernetes kinds meshbox reads: Service, Deployment and Namespace. Fields
//! meshbox does not use are accepted when Kubernetes has them and rejected when it
//! does not, so a typo is caught the way `kubectl apply --validate=strict` catches it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

use crate::istio::Labels;

/// `metadata` of any object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ObjectMeta {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(skip_serializing)]
    pub generate_name: Option<String>,
    #[serde(skip_serializing)]
    pub uid: Option<String>,
    #[serde(skip_serializing)]
    pub resource_version: Option<String>,
    #[serde(skip_serializing)]
    pub generation: Option<i64>,
    #[serde(skip_serializing)]
    pub creation_timestamp: Option<Value>,
    #[serde(skip_serializing)]
    pub deletion_timestamp: Option<Value>,
    #[serde(skip_serializing)]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing)]
    pub finalizers: Vec<String>,
    #[serde(skip_serializing)]
    pub owner_references: Vec<Value>,
    #[serde(skip_serializing)]
    pub managed_fields: Vec<Value>,
    #[serde(skip_serializing)]
    pub self_link: Option<String>,
}

/// `Service.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSpec {
    pub ports: Vec<ServicePort>,
    pub selector: Labels,
    #[serde(rename = "type")]
    pub service_type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub external_name: Option<String>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Vec<String>,
    pub session_affinity: Option<String>,
    pub session_affinity_config: Option<Value>,
    pub ip_families: Vec<String>,
    pub ip_family_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    pub external_traffic_policy: Option<String>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    pub load_balancer_source_ranges: Vec<String>,
    pub load_balancer_class: Option<String>,
    pub allocate_load_balancer_node_ports: Option<bool>,
    pub health_check_node_port: Option<u32>,
    pub publish_not_ready_addresses: Option<bool>,
    pub traffic_distribution: Option<String>,
}

/// One port of a Service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: u32,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
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
    pub replicas: Option<u32>,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub strategy: Option<Value>,
    pub min_ready_seconds: Option<u32>,
    pub revision_history_limit: Option<u32>,
    pub progress_deadline_seconds: Option<u32>,
    pub paused: Option<bool>,
}

/// `LabelSelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Value>,
}

/// `PodTemplateSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PodTemplateSpec {
    pub metadata: ObjectMeta,
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
    pub containers: Vec<Container>,
    pub init_containers: Vec<Container>,
    /// Kubernetes fields with no meaning for a local process, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// One container of a pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    pub name: String,
    pub image: Option<String>,
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub ports: Vec<ContainerPort>,
    pub env: Vec<EnvVar>,
    /// Kubernetes fields with no meaning for a local process, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// `ContainerPort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ContainerPort {
    pub container_port: u32,
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub host_port: Option<u32>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// `EnvVar`: a literal value (valueFrom is accepted but not resolved locally).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
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
    pub finalizers: Vec<String>,
}
