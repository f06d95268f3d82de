//! What an applied object asks for that meshbox's data plane does not do yet. The
//! object is accepted (it is valid Istio config); `apply` prints these as warnings so
//! nobody mistakes an ignored field for a working one.

use meshbox_config::{Resource, Spec};

/// Whether `tls` makes the proxy open TLS to the endpoints itself (SIMPLE, MUTUAL).
fn originates_tls(tls: &meshbox_config::istio::ClientTlsSettings) -> bool {
    matches!(tls.mode.as_deref(), Some("SIMPLE" | "MUTUAL"))
}

/// Warnings for the fields of `r` that are accepted but not enforced.
pub fn unsupported_features(r: &Resource) -> Vec<String> {
    let mut notes = Vec::new();
    let mut note = |field: String| notes.push(field);
    match &r.spec {
        Spec::VirtualService(vs) => {
            // `tls` and `tcp` rules are enforced (l4.rs); `sourceSubnet` is not (Istio
            // reads it at gateways only, and ignores it there too).
            for (i, rule) in vs.tcp.iter().enumerate() {
                for (j, m) in rule.matches.iter().enumerate() {
                    if m.source_subnet.is_some() {
                        note(format!("spec.tcp[{i}].match[{j}].sourceSubnet"));
                    }
                }
            }
        }
        // Gateway servers: HTTP, TLS PASSTHROUGH and opaque TCP are served; TLS
        // termination is not.
        Spec::Gateway(gw) => {
            for (i, server) in gw.servers.iter().enumerate() {
                let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
                if let Some(
                    m @ ("SIMPLE" | "MUTUAL" | "ISTIO_MUTUAL" | "OPTIONAL_MUTUAL"
                    | "AUTO_PASSTHROUGH"),
                ) = mode
                {
                    note(format!("spec.servers[{i}].tls.mode {m} (TLS termination)"));
                }
            }
        }
        Spec::DestinationRule(dr) => {
            let mut policies: Vec<(String, &meshbox_config::istio::TrafficPolicy)> = Vec::new();
            if let Some(tp) = &dr.traffic_policy {
                policies.push(("spec.trafficPolicy".into(), tp));
            }
            for (i, s) in dr.subsets.iter().enumerate() {
                if let Some(tp) = &s.traffic_policy {
                    policies.push((format!("spec.subsets[{i}].trafficPolicy"), tp));
                }
            }
            // A subset's connections inherit the rule's TLS origination.
            let dr_originates = dr.traffic_policy.as_ref().is_some_and(|tp| {
                tp.tls
                    .iter()
                    .chain(tp.port_level_settings.iter().filter_map(|p| p.tls.as_ref()))
                    .any(originates_tls)
            });
            for (path, tp) in policies {
                let mut check = |name: &str, present: bool| {
                    if present {
                        note(format!("{path}.{name}"));
                    }
                };
                // TLS origination (SIMPLE, MUTUAL) is enforced (cluster_policy.rs,
                // meshbox-proxy tls.rs); ISTIO_MUTUAL (mesh identities) and CRLs are not.
                let tls_settings = tp
                    .tls
                    .iter()
                    .chain(tp.port_level_settings.iter().filter_map(|p| p.tls.as_ref()));
                let (mut istio_mutual, mut crl, mut originates) = (false, false, false);
                for t in tls_settings {
                    istio_mutual |= t.mode.as_deref() == Some("ISTIO_MUTUAL");
                    originates |= originates_tls(t);
                    crl |= t.ca_crl.as_deref().is_some_and(|c| !c.is_empty());
                }
                check(
                    "tls.mode ISTIO_MUTUAL (traffic stays plain text)",
                    istio_mutual,
                );
                check("tls.caCrl", crl);
                check("tunnel", tp.tunnel.is_some());
                check("proxyProtocol", tp.proxy_protocol.is_some());
                check("retryBudget", tp.retry_budget.is_some());
                let lbs = tp.load_balancer.iter().chain(
                    tp.port_level_settings
                        .iter()
                        .filter_map(|p| p.load_balancer.as_ref()),
                );
                let mut lb_extras = false;
                for lb in lbs {
                    lb_extras |= lb.locality_lb_setting.is_some()
                        || lb.warmup.is_some()
                        || lb.warmup_duration_secs.is_some();
                }
                check("loadBalancer (locality and warmup settings)", lb_extras);
                let pools = tp.connection_pool.iter().chain(
                    tp.port_level_settings
                        .iter()
                        .filter_map(|p| p.connection_pool.as_ref()),
                );
                let mut pool_extras = false;
                let mut connection_settings = false;
                for pool in pools {
                    if let Some(tcp) = &pool.tcp {
                        pool_extras |= tcp.tcp_keepalive.is_some();
                        // (`tcp.idleTimeout` is Istio's HTTP idle timeout when
                        // `http.idleTimeout` is not given.)
                        connection_settings |= tcp.idle_timeout.is_some()
                            || tcp.connect_timeout.is_some()
                            || tcp.max_connection_duration.is_some();
                    }
                    if let Some(http) = &pool.http {
                        pool_extras |= http.h2_upgrade_policy.is_some();
                        connection_settings |= http.idle_timeout.is_some()
                            || http.max_requests_per_connection.is_some();
                    }
                }
                check(
                    "connectionPool (tcp.tcpKeepalive, http.h2UpgradePolicy)",
                    pool_extras,
                );
                // The idle timeouts, `http.maxRequestsPerConnection`, `tcp.connectTimeout`
                // and `tcp.maxConnectionDuration` are enforced on plain-text upstream
                // connections (meshbox-proxy pool.rs, tunnel.rs); TLS origination keeps
                // its client's.
                check(
                    "connectionPool connection settings (idleTimeout, maxRequestsPerConnection, connectTimeout, maxConnectionDuration) with TLS origination (those connections keep a 60 s idle timeout, a 10 s connect timeout and no limits)",
                    connection_settings && (originates || dr_originates),
                );
            }
        }
        // The Sidecar resource: workloadSelector, egress hosts and ports and
        // outboundTrafficPolicy.mode are enforced (build.rs SidecarScope); the rest not.
        Spec::Sidecar(sc) => {
            if !sc.ingress.is_empty() {
                note("spec.ingress".into());
            }
            if sc.inbound_connection_pool.is_some() {
                note("spec.inboundConnectionPool".into());
            }
            for (i, e) in sc.egress.iter().enumerate() {
                if e.bind.as_deref().is_some_and(|b| !b.is_empty()) {
                    note(format!("spec.egress[{i}].bind"));
                }
                if e.capture_mode.as_deref().is_some_and(|m| m != "DEFAULT") {
                    note(format!("spec.egress[{i}].captureMode"));
                }
                if e.port
                    .as_ref()
                    .is_some_and(|p| p.protocol.eq_ignore_ascii_case("HTTP_PROXY"))
                {
                    note(format!("spec.egress[{i}].port.protocol HTTP_PROXY"));
                }
            }
            if sc
                .outbound_traffic_policy
                .as_ref()
                .is_some_and(|p| p.egress_proxy.is_some())
            {
                note("spec.outboundTrafficPolicy.egressProxy".into());
            }
        }
        _ => {}
    }
    notes
        .into_iter()
        .map(|field| {
            format!(
                "Warning: {}/{}: {field} is valid Istio config but not enforced by meshbox yet",
                r.kind.resource_name(),
                r.metadata.name
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshbox_config::{load_str, LoadOptions};

    #[test]
    fn ignored_fields_are_named_and_supported_ones_are_not() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [a]\n  exportTo: ['.']\n  http:\n  - delegate:\n      name: b\n  - retries:\n      attempts: 3\n    route:\n    - destination:\n        host: a\n";
        let r = &load_str("r.yaml", yaml, &LoadOptions::default()).unwrap()[0];
        assert_eq!(unsupported_features(r), Vec::<String>::new());
    }

    // `connectionPool.http.idleTimeout` is enforced on plain-text connections; a rule
    // that also originates TLS (top level or in the subset) is told its TLS connections
    // keep their client's timeout.
    #[test]
    fn an_http_idle_timeout_is_named_only_beside_tls_origination() {
        let rule = |subset_tls: &str| {
            format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      http:\n        idleTimeout: 5s\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n    trafficPolicy:\n      connectionPool:\n        http:\n          idleTimeout: 2s\n{subset_tls}")
        };
        let notes = |yaml: &str| {
            unsupported_features(&load_str("d.yaml", yaml, &LoadOptions::default()).unwrap()[0])
        };
        assert_eq!(notes(&rule("")), Vec::<String>::new());
        let with_tls = notes(&rule("      tls:\n        mode: SIMPLE\n"));
        assert_eq!(with_tls.len(), 1, "{with_tls:?}");
        assert!(
            with_tls[0].contains("spec.subsets[0].trafficPolicy.connectionPool connection settings (idleTimeout, maxRequestsPerConnection, connectTimeout, maxConnectionDuration) with TLS origination"),
            "{with_tls:?}"
        );
    }

    // The Sidecar's workloadSelector, egress hosts and ports and outboundTrafficPolicy
    // are enforced; ingress listeners are not.
    #[test]
    fn sidecar_ingress_is_named_and_egress_is_not() {
        let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: s\nspec:\n  workloadSelector:\n    labels:\n      app: a\n  ingress:\n  - port:\n      number: 9080\n      protocol: HTTP\n      name: http\n    defaultEndpoint: 127.0.0.1:8080\n  egress:\n  - hosts: ['./*']\n  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n";
        let r = &load_str("s.yaml", yaml, &LoadOptions::default()).unwrap()[0];
        let notes = unsupported_features(r);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("sidecar.networking.istio.io/s: spec.ingress "),
            "{notes:?}"
        );
    }
}
