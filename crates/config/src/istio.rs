//! The networking.istio.io resource model: Gateway, VirtualService, DestinationRule,
//! ServiceEntry and Sidecar, field for field as Istio's CRDs spell them
//! (`../shared/reference/istio-crds.yaml`). Unknown fields are rejected, as
//! `kubectl apply` with server-side validation rejects them.
//!
//! Enumerations (TLS modes, resolutions, ...) are kept as the strings the user wrote;
//! [`crate::validate`] checks them against the values the CRD lists, so that an
//! error names the field and the accepted values.
//!
//! `tests/integration/crd_schema.rs` checks, for every served version, that this model accepts
//! every field of the CRD schemas and nothing else.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A map of label or header names to values.
pub type Labels = BTreeMap<String, String>;

/// `StringMatch`: exactly one of exact, prefix or regex. An empty object matches presence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Matches the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// Matches a leading part of the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// RE2 regular expression over the whole value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

// ---------------------------------------------------------------------------
// VirtualService
// ---------------------------------------------------------------------------

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct VirtualServiceSpec {
    /// Destination hosts the rules apply to (names, wildcards `*.x`, or IPs). Empty for
    /// a delegate virtual service.
    pub hosts: Vec<String>,
    /// Gateways (`ns/name`, `name`, or `mesh`) and sidecars the rules apply to; empty
    /// means `mesh`.
    pub gateways: Vec<String>,
    /// Ordered HTTP rules; the first that matches wins.
    pub http: Vec<HttpRoute>,
    /// Ordered rules for unterminated TLS and HTTPS traffic.
    pub tls: Vec<TlsRoute>,
    /// Ordered rules for opaque TCP traffic.
    pub tcp: Vec<TcpRoute>,
    /// Namespaces this virtual service is visible to (`.`, `*`, or names).
    pub export_to: Vec<String>,
}

/// One `http` rule of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRoute {
    /// Name of the rule, for logs and debugging.
    pub name: Option<String>,
    /// Conditions (ORed) that select requests for this rule; empty matches all.
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<HttpRedirect>,
    /// Answer directly with a fixed response instead of forwarding.
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the rule to another (delegate) virtual service.
    pub delegate: Option<Delegate>,
    /// Rewrite the URI or authority before forwarding.
    pub rewrite: Option<HttpRewrite>,
    /// Timeout for the whole request (a duration such as `10s`).
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: Option<HttpRetry>,
    /// Fault injection (delays and aborts).
    pub fault: Option<HttpFaultInjection>,
    /// Mirror (shadow) traffic to this destination.
    pub mirror: Option<Destination>,
    /// Mirror traffic to several destinations.
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// Deprecated: percentage of traffic to mirror (use `mirrorPercentage`).
    pub mirror_percent: Option<u32>,
    /// The snake_case spelling `mirror_percent`, which Istio's CRD also accepts.
    #[serde(rename = "mirror_percent")]
    pub mirror_percent_alias: Option<u32>,
    /// Percentage of traffic to mirror.
    pub mirror_percentage: Option<Percent>,
    /// Cross-origin resource sharing policy.
    pub cors_policy: Option<CorsPolicy>,
    /// Header manipulation for all destinations of the rule.
    pub headers: Option<Headers>,
}

/// `HTTPMatchRequest`: all given conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMatchRequest {
    /// Name of the match, appended to the rule's name.
    pub name: Option<String>,
    /// Condition on the request path.
    pub uri: Option<StringMatch>,
    /// Condition on the URI scheme.
    pub scheme: Option<StringMatch>,
    /// Condition on the HTTP method.
    pub method: Option<StringMatch>,
    /// Condition on the authority (Host header).
    pub authority: Option<StringMatch>,
    /// Conditions on request headers (an empty match tests presence).
    pub headers: BTreeMap<String, StringMatch>,
    /// Port the request was addressed to.
    pub port: Option<u32>,
    /// Labels the calling workload must carry.
    pub source_labels: Labels,
    /// Gateways this match applies to (overrides the virtual service's).
    pub gateways: Vec<String>,
    /// Conditions on query parameters.
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match the URI case-insensitively.
    pub ignore_uri_case: Option<bool>,
    /// Headers that must not match.
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Namespace the calling workload must be in.
    pub source_namespace: Option<String>,
    /// Prefix for the route's statistics.
    pub stat_prefix: Option<String>,
}

/// A weighted destination of an HTTP rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    pub destination: Destination,
    /// Relative share of the traffic (0..100).
    pub weight: Option<i32>,
    /// Header manipulation for this destination.
    pub headers: Option<Headers>,
}

/// A weighted destination of a TCP or TLS rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RouteDestination {
    /// Where to send the connection.
    pub destination: Destination,
    /// Relative share of the traffic (0..100).
    pub weight: Option<i32>,
}

/// `Destination`: a service host (registry name), optional subset and port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Destination {
    /// Service name from the registry (Kubernetes service or ServiceEntry host).
    pub host: String,
    /// Subset defined by a DestinationRule.
    pub subset: Option<String>,
    /// Port of the service.
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortSelector {
    /// The port number.
    pub number: Option<u32>,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRedirect {
    /// Replaces the whole path.
    pub uri: Option<String>,
    /// Replaces the matched prefix of the path.
    pub prefix_rewrite: Option<String>,
    /// Replaces the authority (host).
    pub authority: Option<String>,
    /// Port of the redirect location.
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<String>,
    /// `http` or `https`.
    pub scheme: Option<String>,
    /// Status code of the redirect (3xx, default 301).
    pub redirect_code: Option<u32>,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpDirectResponse {
    /// HTTP status of the response.
    pub status: u32,
    /// Body of the response.
    pub body: Option<HttpBody>,
}

/// Body of a direct response: a string or base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpBody {
    /// The body as text.
    pub string: Option<String>,
    /// The body as base64-encoded bytes.
    pub bytes: Option<String>,
}

/// `Delegate`: hands matching to another VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Delegate {
    /// Name of the delegate virtual service.
    pub name: Option<String>,
    /// Its namespace (default: the delegating one's).
    pub namespace: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRewrite {
    /// Replaces the matched part of the path (the prefix, or the whole exact match).
    pub uri: Option<String>,
    /// Replaces the authority (Host header).
    pub authority: Option<String>,
    /// Rewrites the path with a regular expression.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RegexRewrite {
    /// RE2 expression to match.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    /// Replacement, with `\1`-style group references.
    pub rewrite: Option<String>,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpRetry {
    /// Number of retries.
    pub attempts: Option<i32>,
    /// Timeout of each attempt (a duration).
    pub per_try_timeout: Option<String>,
    /// Comma-separated retry conditions (`5xx`, `connect-failure`, status codes...).
    pub retry_on: Option<String>,
    /// Retry on endpoints in other localities.
    pub retry_remote_localities: Option<bool>,
    /// Avoid hosts already tried.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries (a duration).
    pub backoff: Option<String>,
}

/// `HTTPFaultInjection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpFaultInjection {
    /// Delay some requests.
    pub delay: Option<FaultDelay>,
    /// Fail some requests.
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultDelay {
    /// Fixed delay (a duration).
    pub fixed_delay: Option<String>,
    /// Exponential delay (a duration; not supported by Istio yet).
    pub exponential_delay: Option<String>,
    /// Share of requests to delay.
    pub percentage: Option<Percent>,
    /// Deprecated integer share of requests to delay.
    pub percent: Option<i32>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FaultAbort {
    /// HTTP status to answer with.
    pub http_status: Option<i32>,
    /// gRPC status to answer with (e.g. `UNAVAILABLE`).
    pub grpc_status: Option<String>,
    /// HTTP/2 error to answer with (not supported by Istio yet).
    pub http2_error: Option<String>,
    /// Share of requests to abort.
    pub percentage: Option<Percent>,
}

/// `Percent`: a value in [0, 100].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Percent {
    /// The percentage.
    pub value: Option<f64>,
}

/// `HTTPMirrorPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpMirrorPolicy {
    /// Where to mirror to.
    pub destination: Destination,
    /// Share of traffic to mirror.
    pub percentage: Option<Percent>,
}

/// `CorsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct CorsPolicy {
    /// Deprecated exact origins (use `allowOrigins`).
    pub allow_origin: Vec<String>,
    /// Origins allowed to make requests.
    pub allow_origins: Vec<StringMatch>,
    /// Methods allowed (`Access-Control-Allow-Methods`).
    pub allow_methods: Vec<String>,
    /// Headers allowed (`Access-Control-Allow-Headers`).
    pub allow_headers: Vec<String>,
    /// Headers exposed (`Access-Control-Expose-Headers`).
    pub expose_headers: Vec<String>,
    /// How long preflight results may be cached (a duration).
    pub max_age: Option<String>,
    /// Whether credentials are allowed.
    pub allow_credentials: Option<bool>,
    /// `UNSPECIFIED`, `FORWARD` or `IGNORE`.
    pub unmatched_preflights: Option<String>,
}

/// `Headers`: manipulations of request and response headers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Headers {
    /// Applied to the request before forwarding.
    pub request: Option<HeaderOperations>,
    /// Applied to the response before returning it.
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HeaderOperations {
    /// Headers to overwrite.
    pub set: BTreeMap<String, String>,
    /// Headers to append.
    pub add: BTreeMap<String, String>,
    /// Headers to remove.
    pub remove: Vec<String>,
}

/// One `tls` rule of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsRoute {
    /// Conditions (ORed) that select connections.
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsMatchAttributes {
    /// SNI names to match (subsets of the virtual service's hosts).
    pub sni_hosts: Vec<String>,
    /// Destination IPs or CIDR blocks.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Labels the calling workload must carry.
    pub source_labels: Labels,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Namespace the calling workload must be in.
    pub source_namespace: Option<String>,
}

/// One `tcp` rule of a VirtualService.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpRoute {
    /// Conditions (ORed) that select connections.
    #[serde(rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct L4MatchAttributes {
    /// Destination IPs or CIDR blocks.
    pub destination_subnets: Vec<String>,
    /// Destination port.
    pub port: Option<u32>,
    /// Source IP or CIDR block.
    pub source_subnet: Option<String>,
    /// Labels the calling workload must carry.
    pub source_labels: Labels,
    /// Gateways this match applies to.
    pub gateways: Vec<String>,
    /// Namespace the calling workload must be in.
    pub source_namespace: Option<String>,
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct GatewaySpec {
    /// Labels of the gateway workloads (pods) this configuration applies to.
    pub selector: Labels,
    /// The listeners.
    pub servers: Vec<Server>,
}

/// A `Gateway` server: a port, its protocol, and the hosts it exposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Server {
    /// The port to listen on, with its protocol and name.
    pub port: Port,
    /// IP or `unix://` socket to bind to.
    pub bind: Option<String>,
    /// Hosts exposed (`ns/host`, `host`, `*.x`, `*`).
    pub hosts: Vec<String>,
    /// TLS settings (HTTPS and TLS ports, or `httpsRedirect`).
    pub tls: Option<ServerTlsSettings>,
    /// Where to forward ingress traffic by default (`127.0.0.1:PORT`...).
    pub default_endpoint: Option<String>,
    /// Name of the server, for statistics.
    pub name: Option<String>,
}

/// A port with its protocol, as in Gateway servers, ServiceEntry ports and Sidecar
/// listeners.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Port {
    /// The port number.
    pub number: u32,
    /// `HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `MONGO`, `TCP`, `TLS`, ...
    pub protocol: String,
    /// Name of the port.
    pub name: String,
    /// Port on the endpoints (ServiceEntry only).
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings` of a Gateway server or Sidecar ingress listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    /// Redirect plain HTTP requests to HTTPS (301).
    pub https_redirect: Option<bool>,
    /// `PASSTHROUGH`, `SIMPLE`, `MUTUAL`, `AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`, `OPTIONAL_MUTUAL`.
    pub mode: Option<String>,
    /// Path of the server certificate file.
    pub server_certificate: Option<String>,
    /// Path of the private key file.
    pub private_key: Option<String>,
    /// Path of the CA bundle for client certificates.
    pub ca_certificates: Option<String>,
    /// Path of the certificate revocation list.
    pub ca_crl: Option<String>,
    /// Secret holding the certificate and key.
    pub credential_name: Option<String>,
    /// Up to two secrets (RSA and ECDSA) holding certificates and keys.
    pub credential_names: Vec<String>,
    /// Secret holding only the CA certificate.
    pub ca_cert_credential_name: Option<String>,
    /// Up to two inline certificate file sets.
    pub tls_certificates: Vec<TlsCertificate>,
    /// Accepted subject alternative names of client certificates.
    pub subject_alt_names: Vec<String>,
    /// Accepted SPKI hashes of client certificates.
    pub verify_certificate_spki: Vec<String>,
    /// Accepted hashes of client certificates.
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version (`TLS_AUTO`, `TLSV1_0` ... `TLSV1_3`).
    pub min_protocol_version: Option<String>,
    /// Highest TLS version.
    pub max_protocol_version: Option<String>,
    /// Cipher suites offered.
    pub cipher_suites: Vec<String>,
    /// ECDH curves offered.
    pub ecdh_curves: Vec<String>,
    /// Skip verification of client certificates.
    pub insecure_skip_verify: Option<bool>,
}

/// `ServerTLSSettings.TLSCertificate`: one certificate set given by file paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TlsCertificate {
    /// Path of the server certificate file.
    pub server_certificate: Option<String>,
    /// Path of the private key file.
    pub private_key: Option<String>,
    /// Path of the CA bundle.
    pub ca_certificates: Option<String>,
}

// ---------------------------------------------------------------------------
// ServiceEntry
// ---------------------------------------------------------------------------

/// `ServiceEntry.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceEntrySpec {
    /// Host names of the service (`*.x` allowed, `*` alone not).
    pub hosts: Vec<String>,
    /// Virtual IPs or CIDR blocks of the service.
    pub addresses: Vec<String>,
    /// Ports of the service.
    pub ports: Vec<Port>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<String>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN` or `DYNAMIC_DNS`.
    pub resolution: Option<String>,
    /// Endpoints of the service.
    pub endpoints: Vec<WorkloadEntrySpec>,
    /// Selects WorkloadEntries and pods as endpoints (exclusive with `endpoints`).
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces this entry is visible to (`.`, `*`, `~`, or names).
    pub export_to: Vec<String>,
    /// Accepted subject alternative names of the server certificates.
    pub subject_alt_names: Vec<String>,
}

/// `WorkloadEntry` (used inline as a ServiceEntry endpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadEntrySpec {
    /// IP, host name, or `unix://` socket of the endpoint.
    pub address: Option<String>,
    /// Port number per service port name.
    pub ports: BTreeMap<String, u32>,
    /// Labels of the endpoint.
    pub labels: Labels,
    /// Network the endpoint is in.
    pub network: Option<String>,
    /// Locality (`region/zone/subzone`).
    pub locality: Option<String>,
    /// Load-balancing weight.
    pub weight: Option<u32>,
    /// Service account of the workload.
    pub service_account: Option<String>,
}

/// `WorkloadSelector` of ServiceEntry and Sidecar: pod labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadSelector {
    /// Labels the workloads must carry.
    pub labels: Labels,
}

/// `istio.type.v1beta1.WorkloadSelector`, as DestinationRule spells it: `matchLabels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkloadLabelSelector {
    /// Labels the workloads must carry.
    pub match_labels: Labels,
}

// ---------------------------------------------------------------------------
// DestinationRule
// ---------------------------------------------------------------------------

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DestinationRuleSpec {
    /// Service name from the registry the rule applies to.
    pub host: String,
    /// Policies for all traffic to the host.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named versions of the service.
    pub subsets: Vec<Subset>,
    /// Namespaces this rule is visible to.
    pub export_to: Vec<String>,
    /// Workloads (clients) the rule applies to.
    pub workload_selector: Option<WorkloadLabelSelector>,
}

/// `Subset`: a named group of endpoints selected by labels.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Subset {
    /// Name of the subset (a DNS-1123 label).
    pub name: String,
    /// Labels the endpoints of the subset carry.
    pub labels: Labels,
    /// Policies overriding the rule's for this subset.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `TrafficPolicy`: load balancing, connection pool, outlier detection and client TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the endpoints (TLS origination).
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// Tunnel (HTTP CONNECT or POST) to the endpoints.
    pub tunnel: Option<TunnelSettings>,
    /// PROXY protocol header sent to the endpoints.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Limit on concurrent retries.
    pub retry_budget: Option<RetryBudget>,
}

/// `TrafficPolicy.PortTrafficPolicy`: policies for one port of the destination.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PortTrafficPolicy {
    /// The port the policies apply to.
    pub port: Option<PortSelector>,
    /// Load-balancing algorithm.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Ejection of failing endpoints.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the endpoints.
    pub tls: Option<ClientTlsSettings>,
}

/// `LoadBalancerSettings`: one of `simple`, `consistentHash` or `backendUtilization`,
/// plus locality and warm-up settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancerSettings {
    /// `UNSPECIFIED`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`.
    pub simple: Option<String>,
    /// Session affinity by hashing a request attribute.
    pub consistent_hash: Option<ConsistentHashLb>,
    /// Weighted round robin by reported backend utilization.
    pub backend_utilization: Option<BackendUtilizationLb>,
    /// Locality-aware load balancing.
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Deprecated slow-start window (a duration; use `warmup`).
    pub warmup_duration_secs: Option<String>,
    /// Slow start of new endpoints.
    pub warmup: Option<WarmupConfiguration>,
    /// Zone-aware load balancing.
    pub zone_aware_lb_setting: Option<ZoneAwareLbSetting>,
}

/// `LoadBalancerSettings.ConsistentHashLB`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConsistentHashLb {
    /// Hash on this request header.
    pub http_header_name: Option<String>,
    /// Hash on this cookie (generated if absent).
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash algorithm.
    pub ring_hash: Option<RingHash>,
    /// Maglev algorithm.
    pub maglev: Option<MagLev>,
    /// Deprecated ring size (use `ringHash`).
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpCookie {
    /// Name of the cookie.
    pub name: String,
    /// Path of the cookie.
    pub path: Option<String>,
    /// Lifetime of the cookie (a duration).
    pub ttl: Option<String>,
    /// Extra cookie attributes.
    pub attributes: Vec<HttpCookieAttribute>,
}

/// One attribute of a generated cookie.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpCookieAttribute {
    /// Attribute name.
    pub name: String,
    /// Attribute value.
    pub value: Option<String>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RingHash {
    /// Minimum number of virtual nodes on the ring.
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MagLev {
    /// Lookup table size (a prime number).
    pub table_size: Option<u64>,
}

/// `LoadBalancerSettings.BackendUtilizationLB`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct BackendUtilizationLb {
    /// Penalty applied to the error rate.
    pub error_utilization_penalty_percent: Option<u32>,
    /// Named metrics used to compute utilization.
    pub metric_names_for_computing_utilization: Vec<String>,
    /// How long a reported weight stays valid (a duration).
    pub weight_expiration_period: Option<String>,
    /// Delay before a new weight is used (a duration).
    pub weight_stabilization_period: Option<String>,
    /// How often weights are recomputed (a duration).
    pub weight_update_period: Option<String>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityLbSetting {
    /// Traffic distribution by locality.
    pub distribute: Vec<LocalityDistribute>,
    /// Failover between regions.
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels used for failover priority.
    pub failover_priority: Vec<String>,
    /// Enables locality load balancing.
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityDistribute {
    /// Origin locality (`region/zone/subzone`, `*` allowed).
    pub from: Option<String>,
    /// Weight per destination locality (summing to 100).
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LocalityFailover {
    /// Origin region.
    pub from: Option<String>,
    /// Region to fail over to.
    pub to: Option<String>,
}

/// `WarmupConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WarmupConfiguration {
    /// Length of the warm-up window (a duration).
    pub duration: String,
    /// Traffic share a new endpoint starts with.
    pub minimum_percent: Option<f64>,
    /// Curve of the ramp-up.
    pub aggression: Option<f64>,
}

/// `ZoneAwareLoadBalancerSetting`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ZoneAwareLbSetting {
    /// Enables zone-aware load balancing.
    pub enabled: Option<bool>,
    /// Failover between zones.
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels used for failover priority.
    pub failover_priority: Vec<String>,
    /// Minimum cluster size for zone awareness.
    pub min_cluster_size: Option<u32>,
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpSettings {
    /// Maximum connections to the destination.
    pub max_connections: Option<i32>,
    /// TCP connect timeout (a duration).
    pub connect_timeout: Option<String>,
    /// TCP keepalive probes.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum lifetime of a connection (a duration).
    pub max_connection_duration: Option<String>,
    /// Idle timeout of a connection (a duration).
    pub idle_timeout: Option<String>,
}

/// `TCPSettings.TcpKeepalive`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TcpKeepalive {
    /// Unanswered probes before the connection is dead.
    pub probes: Option<u32>,
    /// Idle time before probes start (a duration).
    pub time: Option<String>,
    /// Interval between probes (a duration).
    pub interval: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Maximum queued requests.
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests.
    pub http2_max_requests: Option<i32>,
    /// Maximum requests per connection.
    pub max_requests_per_connection: Option<i32>,
    /// Maximum outstanding retries.
    pub max_retries: Option<i32>,
    /// Idle timeout of pooled connections (a duration).
    pub idle_timeout: Option<String>,
    /// `DEFAULT`, `DO_NOT_UPGRADE` or `UPGRADE`.
    pub h2_upgrade_policy: Option<String>,
    /// Use the client's protocol towards the destination.
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: Option<i32>,
    /// HTTP/2 PING keepalive.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// `HTTPSettings.Http2KeepAlive`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Http2KeepAlive {
    /// Interval between PINGs (a duration).
    pub interval: Option<String>,
    /// Time to wait for a PING response (a duration).
    pub timeout: Option<String>,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutlierDetection {
    /// Count locally originated failures separately.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<u32>,
    /// Gateway errors (502, 503, 504) before ejection.
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx errors before ejection.
    pub consecutive_5xx_errors: Option<u32>,
    /// Deprecated: errors before ejection.
    pub consecutive_errors: Option<i32>,
    /// Interval between ejection sweeps (a duration).
    pub interval: Option<String>,
    /// Minimum ejection duration (a duration).
    pub base_ejection_time: Option<String>,
    /// Maximum share of endpoints ejected.
    pub max_ejection_percent: Option<i32>,
    /// Healthy share below which outlier detection is disabled.
    pub min_health_percent: Option<i32>,
    /// Status codes counted as errors.
    pub outlier_detection_http_error_codes: Vec<u32>,
}

/// `ClientTLSSettings`: TLS towards the destination (TLS origination).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL` or `ISTIO_MUTUAL`.
    pub mode: Option<String>,
    /// Path of the client certificate file (MUTUAL).
    pub client_certificate: Option<String>,
    /// Path of the private key file (MUTUAL).
    pub private_key: Option<String>,
    /// Path of the CA bundle that verifies the server.
    pub ca_certificates: Option<String>,
    /// Secret holding the client certificate, key and CA.
    pub credential_name: Option<String>,
    /// Accepted subject alternative names of the server certificate.
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    pub sni: Option<String>,
    /// Skip verification of the server certificate.
    pub insecure_skip_verify: Option<bool>,
    /// Path of the certificate revocation list.
    pub ca_crl: Option<String>,
}

/// `TrafficPolicy.TunnelSettings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TunnelSettings {
    /// `CONNECT` (default) or `POST`.
    pub protocol: Option<String>,
    /// Host the tunnel leads to.
    pub target_host: String,
    /// Port the tunnel leads to.
    pub target_port: u32,
}

/// `TrafficPolicy.ProxyProtocol`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyProtocol {
    /// `V1` or `V2`.
    pub version: Option<String>,
}

/// `TrafficPolicy.RetryBudget`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryBudget {
    /// Share of active requests that may be retries.
    pub percent: Option<f64>,
    /// Retries always allowed.
    pub min_retry_concurrency: Option<u32>,
    /// Window over which the budget is computed (a duration).
    pub budget_interval: Option<String>,
}

// ---------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------

/// `Sidecar.spec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SidecarSpec {
    /// Workloads the configuration applies to (all of the namespace when absent).
    pub workload_selector: Option<WorkloadSelector>,
    /// Inbound listeners.
    pub ingress: Vec<IstioIngressListener>,
    /// Outbound listeners and the hosts they reach.
    pub egress: Vec<IstioEgressListener>,
    /// Connection pool for all inbound listeners.
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
    /// What to do with traffic to hosts outside the registry.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

/// `IstioIngressListener`: an inbound port of the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioIngressListener {
    /// The port, its protocol and name.
    pub port: Port,
    /// IP to bind to.
    pub bind: Option<String>,
    /// `DEFAULT`, `IPTABLES` or `NONE`.
    pub capture_mode: Option<String>,
    /// Where to forward (`127.0.0.1:PORT`, `0.0.0.0:PORT`, `unix://...`).
    pub default_endpoint: Option<String>,
    /// TLS termination.
    pub tls: Option<ServerTlsSettings>,
    /// Connection pool for this listener.
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// `IstioEgressListener`: outbound port and the hosts it may reach.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IstioEgressListener {
    /// The port (all ports when absent).
    pub port: Option<Port>,
    /// IP or `unix://` socket to bind to.
    pub bind: Option<String>,
    /// `DEFAULT`, `IPTABLES` or `NONE`.
    pub capture_mode: Option<String>,
    /// Hosts reachable, as `namespace/dnsName` (`*/x`, `./x`, `~/x` allowed).
    pub hosts: Vec<String>,
}

/// `OutboundTrafficPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OutboundTrafficPolicy {
    /// `REGISTRY_ONLY` or `ALLOW_ANY`.
    pub mode: Option<String>,
    /// Where to send traffic to unknown hosts (ALLOW_ANY only).
    pub egress_proxy: Option<Destination>,
}
