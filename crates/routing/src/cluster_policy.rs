//! A cluster's traffic policy from its DestinationRule: load balancing, connection
//! pool limits, outlier detection and TLS origination (`tls`), chosen the way Istio
//! chooses them (top level or the port's `portLevelSettings`, then the subset's policy
//! or its port level; each part whole, see [`PolicyParts`]).

use std::time::Duration;

use meshbox_config::istio::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, LoadBalancerSettings,
    OutlierDetection, TrafficPolicy,
};
use meshbox_config::validate::parse_duration;

/// How a cluster picks an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (meshbox's default, as the scenario issue asks; Istio's own
    /// default is LEAST_REQUEST).
    #[default]
    RoundRobin,
    /// `LEAST_REQUEST`: Envoy's power of two choices on active requests.
    LeastRequest,
    /// `RANDOM`.
    Random,
    /// `PASSTHROUGH`: the original destination, no balancing.
    Passthrough,
    /// `consistentHash`.
    ConsistentHash(HashKey),
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `httpHeaderName`.
    Header(String),
    /// `httpCookie`: generated (and set on the response) when absent and `ttl` is given.
    Cookie {
        /// Cookie name.
        name: String,
        /// Cookie path.
        path: Option<String>,
        /// Cookie lifetime; without it a missing cookie hashes nothing.
        ttl: Option<Duration>,
    },
    /// `useSourceIp`.
    SourceIp,
    /// `httpQueryParameterName`.
    QueryParam(String),
}

/// `connectionPool` limits (Envoy's circuit breakers). Istio leaves them unlimited
/// unless set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLimits {
    /// `tcp.maxConnections`: requests in flight at once over HTTP/1.1.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests allowed to wait for a connection.
    pub max_pending: u32,
    /// `http.http2MaxRequests`: requests in flight at once, whatever the protocol.
    pub max_requests: u32,
}

/// `outlierDetection`: passive health checking that ejects failing endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// `consecutive5xxErrors` (0: off).
    pub consecutive_5xx: u32,
    /// `consecutiveGatewayErrors` (502, 503, 504; 0: off).
    pub consecutive_gateway: u32,
    /// `baseEjectionTime`: an ejection lasts this times the number of ejections.
    pub base_ejection: Duration,
    /// `maxEjectionPercent` (at least one endpoint may always be ejected, as in Envoy).
    pub max_ejection_percent: u32,
}

/// `ClientTLSSettings.mode` for TLS origination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum TlsMode {
    /// `SIMPLE`: TLS towards the endpoints, the server verified.
    Simple,
    /// `MUTUAL`: TLS with a client certificate.
    Mutual,
}

/// Where a cluster's CA bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum CaSource {
    /// No `caCertificates`: Istio's default `system` roots (meshbox: the web PKI roots
    /// of webpki-roots).
    System,
    /// `caCertificates: PATH`: a PEM bundle.
    File(String),
}

/// Where a client certificate and key come from (MUTUAL).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ClientCert {
    /// `clientCertificate` and `privateKey` file paths.
    Files {
        /// PEM certificate chain.
        cert: String,
        /// PEM private key.
        key: String,
    },
}

/// TLS origination of one cluster: a DestinationRule's `trafficPolicy.tls` (or its
/// `portLevelSettings`), compiled as istiod does in pilot/pkg/networking/core/cluster_tls.go
/// (`constructUpstreamTLS`, `setAutoSniAndAutoSanValidation`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct ClusterTls {
    /// SIMPLE or MUTUAL.
    pub mode: TlsMode,
    /// `credentialName`: a secret, which meshbox reads from
    /// `$MESHBOX_HOME/credentials/NAME/` (`tls.crt`, `tls.key`, `ca.crt`); it replaces the
    /// file paths below, as in Istio.
    pub credential_name: Option<String>,
    /// The CA that verifies the server (`caCertificates`, default `system`).
    pub ca: CaSource,
    /// MUTUAL: the client certificate and key (`clientCertificate`, `privateKey`).
    pub client_cert: Option<ClientCert>,
    /// `sni`; `None` means Envoy's `auto_sni`: the request's Host, without its port.
    pub sni: Option<String>,
    /// `subjectAltNames`: the server certificate must carry one of them. Empty with no
    /// `sni`: Envoy's `auto_san_validation` against the SNI sent. Empty with an explicit
    /// `sni`: the chain is verified but not the name (Istio sets neither).
    pub subject_alt_names: Vec<String>,
    /// `insecureSkipVerify`: no verification of the server certificate at all.
    pub insecure_skip_verify: bool,
}

impl ClusterTls {
    /// Compiles `ClientTLSSettings`; `None` for `DISABLE`, no mode, and `ISTIO_MUTUAL`
    /// (meshbox has no mesh identities: traffic between proxies stays plain text).
    pub fn compile(tls: &ClientTlsSettings) -> Option<ClusterTls> {
        let mode = match tls.mode.as_deref()? {
            "SIMPLE" => TlsMode::Simple,
            "MUTUAL" => TlsMode::Mutual,
            _ => return None,
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let client_cert = match (
            nonempty(&tls.client_certificate),
            nonempty(&tls.private_key),
        ) {
            (Some(cert), Some(key)) => Some(ClientCert::Files { cert, key }),
            _ => None,
        };
        Some(ClusterTls {
            mode,
            credential_name: nonempty(&tls.credential_name),
            ca: match nonempty(&tls.ca_certificates) {
                None => CaSource::System,
                Some(s) if s == "system" => CaSource::System,
                Some(path) => CaSource::File(path),
            },
            client_cert,
            sni: nonempty(&tls.sni),
            subject_alt_names: tls.subject_alt_names.clone(),
            insecure_skip_verify: tls.insecure_skip_verify == Some(true),
        })
    }
}

/// The four parts of a traffic policy that make a cluster's policy, chosen the way
/// Istio chooses them (pilot `MergeTrafficPolicy` and `GetPortLevelTrafficPolicy`):
/// each part is taken whole, never merged field by field; a subset's part replaces the
/// rule's; and a `portLevelSettings` entry for the cluster's port replaces all four
/// parts of the policy it belongs to, defaults where it gives none ("settings
/// specified at the destination-level will not be inherited when overridden by
/// port-level settings", DestinationRule reference).
#[derive(Default, Clone, Copy)]
struct PolicyParts<'a> {
    load_balancer: Option<&'a LoadBalancerSettings>,
    connection_pool: Option<&'a ConnectionPoolSettings>,
    outlier_detection: Option<&'a OutlierDetection>,
    tls: Option<&'a ClientTlsSettings>,
}

impl<'a> PolicyParts<'a> {
    /// The rule's policy for `port`, then the subset's over it.
    fn merged(
        rule: Option<&'a TrafficPolicy>,
        subset: Option<&'a TrafficPolicy>,
        port: u32,
    ) -> PolicyParts<'a> {
        let mut parts = rule.map(|tp| Self::at_port(tp, port)).unwrap_or_default();
        if let Some(sub) = subset {
            let own = Self::top_level(sub);
            parts.load_balancer = own.load_balancer.or(parts.load_balancer);
            parts.connection_pool = own.connection_pool.or(parts.connection_pool);
            parts.outlier_detection = own.outlier_detection.or(parts.outlier_detection);
            parts.tls = own.tls.or(parts.tls);
            if let Some(at_port) = Self::port_level(sub, port) {
                parts = at_port;
            }
        }
        parts
    }

    /// A policy's own parts for `port`: its port-level entry if it has one, else its
    /// top level.
    fn at_port(tp: &'a TrafficPolicy, port: u32) -> PolicyParts<'a> {
        Self::port_level(tp, port).unwrap_or_else(|| Self::top_level(tp))
    }

    fn top_level(tp: &'a TrafficPolicy) -> PolicyParts<'a> {
        PolicyParts {
            load_balancer: tp.load_balancer.as_ref(),
            connection_pool: tp.connection_pool.as_ref(),
            outlier_detection: tp.outlier_detection.as_ref(),
            tls: tp.tls.as_ref(),
        }
    }

    fn port_level(tp: &'a TrafficPolicy, port: u32) -> Option<PolicyParts<'a>> {
        let pl = tp
            .port_level_settings
            .iter()
            .find(|pl| pl.port.as_ref().and_then(|p| p.number) == Some(port))?;
        Some(PolicyParts {
            load_balancer: pl.load_balancer.as_ref(),
            connection_pool: pl.connection_pool.as_ref(),
            outlier_detection: pl.outlier_detection.as_ref(),
            tls: pl.tls.as_ref(),
        })
    }
}

/// The policy of one cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// Endpoint selection.
    pub lb: LbPolicy,
    /// Circuit-breaker limits, if any.
    pub limits: Option<PoolLimits>,
    /// Outlier detection, if configured.
    pub outlier: Option<OutlierPolicy>,
    /// TLS origination towards the endpoints (`trafficPolicy.tls`), if any.
    pub tls: Option<ClusterTls>,
    /// `connectionPool.http.idleTimeout`: how long an upstream connection may stay
    /// without a request before it is closed (Istio sets it as the cluster's
    /// `common_http_protocol_options.idle_timeout`; `None`: the proxy's default).
    pub idle_timeout: Option<Duration>,
    /// `connectionPool.http.maxRequestsPerConnection`: requests an upstream connection
    /// serves before it is closed (Istio sets it as the cluster's
    /// `common_http_protocol_options.max_requests_per_connection` when above 0; 1
    /// turns keep-alive off; `None`: no limit).
    pub max_requests_per_connection: Option<u32>,
    /// `connectionPool.tcp.connectTimeout`: how long opening a connection to an
    /// endpoint may take (Istio sets it as the cluster's `connect_timeout`; `None`: the
    /// mesh's, 10 s).
    pub connect_timeout: Option<Duration>,
    /// `connectionPool.tcp.maxConnectionDuration`: how long after it opened an upstream
    /// connection is closed, once no request is on it (Istio sets it as the cluster's
    /// `common_http_protocol_options.max_connection_duration`; `None`: no limit).
    pub max_connection_duration: Option<Duration>,
    /// `connectionPool.http.maxRetries`: retries to the cluster under way at once
    /// (Envoy's `max_retries` circuit breaker; `None`: no limit, Istio's default).
    pub max_retries: Option<u32>,
}

impl ClusterPolicy {
    /// The policy for `port` and `subset` of a host, given its DestinationRule.
    pub fn from_rule(dr: Option<&DestinationRuleSpec>, port: u32, subset: &str) -> ClusterPolicy {
        let mut policy = ClusterPolicy::default();
        let Some(dr) = dr else { return policy };
        let subset_policy = dr
            .subsets
            .iter()
            .find(|s| s.name == subset && !subset.is_empty())
            .and_then(|s| s.traffic_policy.as_ref());
        let parts = PolicyParts::merged(dr.traffic_policy.as_ref(), subset_policy, port);
        policy.compile_parts(
            parts.load_balancer,
            parts.connection_pool,
            parts.outlier_detection,
        );
        policy.tls = parts.tls.and_then(ClusterTls::compile);
        policy
    }

    /// Fills in the parts that are given; the others keep Istio's defaults.
    fn compile_parts(
        &mut self,
        lb: Option<&LoadBalancerSettings>,
        pool: Option<&ConnectionPoolSettings>,
        outlier: Option<&OutlierDetection>,
    ) {
        if let Some(lb) = lb {
            if let Some(simple) = lb.simple.as_deref() {
                self.lb = match simple {
                    "LEAST_REQUEST" | "LEAST_CONN" => LbPolicy::LeastRequest,
                    "RANDOM" => LbPolicy::Random,
                    "PASSTHROUGH" => LbPolicy::Passthrough,
                    _ => LbPolicy::RoundRobin,
                };
            }
            if let Some(ch) = &lb.consistent_hash {
                let key = if let Some(h) = &ch.http_header_name {
                    Some(HashKey::Header(h.to_ascii_lowercase()))
                } else if let Some(c) = &ch.http_cookie {
                    Some(HashKey::Cookie {
                        name: c.name.clone(),
                        path: c.path.clone(),
                        ttl: c
                            .ttl
                            .as_deref()
                            .and_then(parse_duration)
                            .filter(|d| !d.is_zero()),
                    })
                } else if ch.use_source_ip == Some(true) {
                    Some(HashKey::SourceIp)
                } else {
                    ch.http_query_parameter_name
                        .clone()
                        .map(HashKey::QueryParam)
                };
                if let Some(key) = key {
                    self.lb = LbPolicy::ConsistentHash(key);
                }
            }
        }
        if let Some(pool) = pool {
            let limit = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
            let mut limits = self.limits.unwrap_or(PoolLimits {
                max_connections: u32::MAX,
                max_pending: u32::MAX,
                max_requests: u32::MAX,
            });
            if let Some(tcp) = &pool.tcp {
                if let Some(n) = limit(tcp.max_connections) {
                    limits.max_connections = n;
                }
                if let Some(d) = tcp.connect_timeout.as_deref().and_then(parse_duration) {
                    self.connect_timeout = Some(d);
                }
                if let Some(d) = tcp
                    .max_connection_duration
                    .as_deref()
                    .and_then(parse_duration)
                    .filter(|d| !d.is_zero())
                {
                    self.max_connection_duration = Some(d);
                }
            }
            // `http.idleTimeout`, else `tcp.idleTimeout` (pilot `applyConnectionPool`:
            // "if idleTimeout == nil { idleTimeout = settings.Tcp.IdleTimeout }"). Zero
            // turns Envoy's idle timeout off (the connection stays until it closes).
            let idle = pool
                .http
                .as_ref()
                .and_then(|h| h.idle_timeout.as_deref())
                .or_else(|| pool.tcp.as_ref().and_then(|t| t.idle_timeout.as_deref()));
            if let Some(d) = idle.and_then(parse_duration) {
                self.idle_timeout = Some(if d.is_zero() { Duration::MAX } else { d });
            }
            if let Some(http) = &pool.http {
                if let Some(n) = limit(http.max_requests_per_connection) {
                    self.max_requests_per_connection = Some(n);
                }
                if let Some(n) = limit(http.max_retries) {
                    self.max_retries = Some(n);
                }
                if let Some(n) = limit(http.http1_max_pending_requests) {
                    limits.max_pending = n;
                }
                if let Some(n) = limit(http.http2_max_requests) {
                    limits.max_requests = n;
                }
            }
            let unlimited = limits.max_connections == u32::MAX
                && limits.max_pending == u32::MAX
                && limits.max_requests == u32::MAX;
            self.limits = (!unlimited).then_some(limits);
        }
        if let Some(o) = outlier {
            // Istio's defaults: 5 consecutive 5xx, 30 s base ejection, 10% at most.
            let consecutive_5xx = o.consecutive_5xx_errors.unwrap_or(5);
            let consecutive_gateway = o
                .consecutive_gateway_errors
                .or_else(|| o.consecutive_errors.and_then(|n| u32::try_from(n).ok()))
                .unwrap_or(0);
            self.outlier = Some(OutlierPolicy {
                consecutive_5xx,
                consecutive_gateway,
                base_ejection: o
                    .base_ejection_time
                    .as_deref()
                    .and_then(parse_duration)
                    .unwrap_or(Duration::from_secs(30)),
                max_ejection_percent: o
                    .max_ejection_percent
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(10),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbox_config::{load_str, LoadOptions, Spec};

    fn dr(yaml_spec: &str) -> DestinationRuleSpec {
        let yaml = format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n{yaml_spec}");
        match load_str("d.yaml", &yaml, &LoadOptions::default())
            .unwrap()
            .remove(0)
            .spec
        {
            Spec::DestinationRule(d) => *d,
            _ => unreachable!(),
        }
    }

    #[test]
    fn subset_and_port_level_settings_override_the_top_level() {
        let d = dr("  host: svc\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n    portLevelSettings:\n    - port:\n        number: 8080\n      loadBalancer:\n        simple: LEAST_REQUEST\n  subsets:\n  - name: v2\n    labels:\n      version: v2\n    trafficPolicy:\n      loadBalancer:\n        consistentHash:\n          httpHeaderName: X-User\n");
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 80, "").lb,
            LbPolicy::Random
        );
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 8080, "").lb,
            LbPolicy::LeastRequest
        );
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 80, "v2").lb,
            LbPolicy::ConsistentHash(HashKey::Header("x-user".into()))
        );
        assert_eq!(
            ClusterPolicy::from_rule(None, 80, "").lb,
            LbPolicy::RoundRobin
        );
    }

    /// A subset's `connectionPool` replaces the rule's whole (pilot
    /// `MergeTrafficPolicy`): v2 sets only `tcp.maxConnections`, so it has no idle
    /// timeout of the rule's.
    #[test]
    fn the_http_idle_timeout_comes_from_the_rule_and_a_subsets_pool_replaces_it() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      http:\n        idleTimeout: 4s\n  subsets:\n  - name: v1\n    trafficPolicy:\n      connectionPool:\n        http:\n          idleTimeout: 1500ms\n  - name: v2\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          maxConnections: 3\n  - name: v3\n    trafficPolicy:\n      loadBalancer:\n        simple: RANDOM\n");
        let at = |subset| ClusterPolicy::from_rule(Some(&d), 80, subset).idle_timeout;
        assert_eq!(at(""), Some(Duration::from_secs(4)));
        assert_eq!(at("v1"), Some(Duration::from_millis(1500)));
        assert_eq!(at("v2"), None);
        assert_eq!(at("v3"), Some(Duration::from_secs(4)), "no pool of its own");
        assert_eq!(ClusterPolicy::from_rule(None, 80, "").idle_timeout, None);
    }

    /// `tcp.connectTimeout` is the cluster's connect timeout (pilot `applyConnectionPool`).
    #[test]
    fn the_connect_timeout_comes_from_the_tcp_pool_settings() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: 250ms\n");
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 80, "").connect_timeout,
            Some(Duration::from_millis(250))
        );
        assert_eq!(ClusterPolicy::from_rule(None, 80, "").connect_timeout, None);
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnectionDuration: 30s\n");
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 80, "").max_connection_duration,
            Some(Duration::from_secs(30))
        );
    }

    /// `http.maxRequestsPerConnection` above 0 limits a connection's requests (pilot
    /// `applyConnectionPool`); 0 means no limit.
    #[test]
    fn max_requests_per_connection_above_zero_is_a_limit() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRequestsPerConnection: 1\n  subsets:\n  - name: zero\n    trafficPolicy:\n      connectionPool:\n        http:\n          maxRequestsPerConnection: 0\n");
        let at =
            |subset| ClusterPolicy::from_rule(Some(&d), 80, subset).max_requests_per_connection;
        assert_eq!(at(""), Some(1));
        assert_eq!(at("zero"), None);
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      http:\n        maxRetries: 2\n");
        assert_eq!(
            ClusterPolicy::from_rule(Some(&d), 80, "").max_retries,
            Some(2)
        );
    }

    /// Istio's HTTP idle timeout falls back to `tcp.idleTimeout` (pilot
    /// `applyConnectionPool`); zero turns it off.
    #[test]
    fn the_tcp_idle_timeout_stands_in_for_the_http_one() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        idleTimeout: 3s\n  subsets:\n  - name: both\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          idleTimeout: 3s\n        http:\n          idleTimeout: 1s\n  - name: off\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          idleTimeout: 0s\n");
        let at = |subset| ClusterPolicy::from_rule(Some(&d), 80, subset).idle_timeout;
        assert_eq!(at(""), Some(Duration::from_secs(3)));
        assert_eq!(at("both"), Some(Duration::from_secs(1)));
        assert_eq!(at("off"), Some(Duration::MAX));
    }

    /// A `portLevelSettings` entry replaces all four parts of its policy, with defaults
    /// where it gives none: TLS and the pool of the top level are not inherited
    /// (DestinationRule reference, pilot `GetPortLevelTrafficPolicy`); the subset's
    /// parts then replace those they give, and the subset's own entry for the port
    /// replaces everything again.
    #[test]
    fn a_port_level_entry_replaces_the_whole_policy_it_belongs_to() {
        let d = dr("  host: svc\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOM\n    connectionPool:\n      tcp:\n        maxConnections: 7\n    tls:\n      mode: SIMPLE\n    portLevelSettings:\n    - port:\n        number: 8080\n      loadBalancer:\n        simple: LEAST_REQUEST\n  subsets:\n  - name: pooled\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          maxConnections: 2\n  - name: own-port\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          maxConnections: 2\n      portLevelSettings:\n      - port:\n          number: 8080\n        tls:\n          mode: SIMPLE\n");
        let top = ClusterPolicy::from_rule(Some(&d), 80, "");
        assert_eq!(top.lb, LbPolicy::Random);
        assert!(top.tls.is_some());
        assert_eq!(top.limits.map(|l| l.max_connections), Some(7));
        let port = ClusterPolicy::from_rule(Some(&d), 8080, "");
        assert_eq!(port.lb, LbPolicy::LeastRequest);
        assert_eq!(port.tls, None, "not inherited from the top level");
        assert_eq!(port.limits, None, "not inherited from the top level");
        let pooled = ClusterPolicy::from_rule(Some(&d), 8080, "pooled");
        assert_eq!(
            pooled.lb,
            LbPolicy::LeastRequest,
            "the rule's entry for the port"
        );
        assert_eq!(pooled.limits.map(|l| l.max_connections), Some(2));
        let own = ClusterPolicy::from_rule(Some(&d), 8080, "own-port");
        assert_eq!(
            own.lb,
            LbPolicy::RoundRobin,
            "the subset's entry gives none"
        );
        assert_eq!(own.limits, None, "the subset's entry gives none");
        assert!(own.tls.is_some());
        let other_port = ClusterPolicy::from_rule(Some(&d), 80, "own-port");
        assert_eq!(other_port.limits.map(|l| l.max_connections), Some(2));
        assert_eq!(other_port.lb, LbPolicy::Random);
    }

    #[test]
    fn pool_limits_and_outlier_defaults() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n    outlierDetection:\n      consecutive5xxErrors: 2\n      baseEjectionTime: 1s\n");
        let p = ClusterPolicy::from_rule(Some(&d), 80, "");
        assert_eq!(
            p.limits,
            Some(PoolLimits {
                max_connections: 1,
                max_pending: 1,
                max_requests: u32::MAX
            })
        );
        assert_eq!(
            p.outlier,
            Some(OutlierPolicy {
                consecutive_5xx: 2,
                consecutive_gateway: 0,
                base_ejection: Duration::from_secs(1),
                max_ejection_percent: 10
            })
        );
    }
}
