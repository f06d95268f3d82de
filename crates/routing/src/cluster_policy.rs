//! A cluster's traffic policy from its DestinationRule: load balancing, connection
//! pool limits, outlier detection and TLS origination (`tls`), merged the way Istio merges them (top level,
//! then the port's `portLevelSettings`, then the subset's policy and its port level).

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
}

impl ClusterPolicy {
    /// The policy for `port` and `subset` of a host, given its DestinationRule.
    pub fn from_rule(dr: Option<&DestinationRuleSpec>, port: u32, subset: &str) -> ClusterPolicy {
        let mut policy = ClusterPolicy::default();
        let Some(dr) = dr else { return policy };
        policy.overlay_traffic_policy(dr.traffic_policy.as_ref(), port);
        if let Some(s) = dr
            .subsets
            .iter()
            .find(|s| s.name == subset && !subset.is_empty())
        {
            policy.overlay_traffic_policy(s.traffic_policy.as_ref(), port);
        }
        policy
    }

    fn overlay_traffic_policy(&mut self, tp: Option<&TrafficPolicy>, port: u32) {
        let Some(tp) = tp else { return };
        self.overlay(
            tp.load_balancer.as_ref(),
            tp.connection_pool.as_ref(),
            tp.outlier_detection.as_ref(),
        );
        // Istio (MergeTrafficPolicy): a `tls` given replaces the one before it, the
        // port's over the top level's, the subset's over the rule's.
        if let Some(tls) = &tp.tls {
            self.tls = ClusterTls::compile(tls);
        }
        for pl in &tp.port_level_settings {
            if pl.port.as_ref().and_then(|p| p.number) == Some(port) {
                self.overlay(
                    pl.load_balancer.as_ref(),
                    pl.connection_pool.as_ref(),
                    pl.outlier_detection.as_ref(),
                );
                if let Some(tls) = &pl.tls {
                    self.tls = ClusterTls::compile(tls);
                }
            }
        }
    }

    fn overlay(
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
            }
            if let Some(http) = &pool.http {
                // Istio's validation refuses durations under 1 ms (validate.rs).
                if let Some(d) = http.idle_timeout.as_deref().and_then(parse_duration) {
                    self.idle_timeout = Some(d);
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

    #[test]
    fn the_http_idle_timeout_comes_from_the_rule_and_a_subset_overrides_it() {
        let d = dr("  host: svc\n  trafficPolicy:\n    connectionPool:\n      http:\n        idleTimeout: 4s\n  subsets:\n  - name: v1\n    trafficPolicy:\n      connectionPool:\n        http:\n          idleTimeout: 1500ms\n  - name: v2\n    trafficPolicy:\n      connectionPool:\n        tcp:\n          maxConnections: 3\n");
        let at = |subset| ClusterPolicy::from_rule(Some(&d), 80, subset).idle_timeout;
        assert_eq!(at(""), Some(Duration::from_secs(4)));
        assert_eq!(at("v1"), Some(Duration::from_millis(1500)));
        assert_eq!(at("v2"), Some(Duration::from_secs(4)));
        assert_eq!(ClusterPolicy::from_rule(None, 80, "").idle_timeout, None);
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
