//! What an applied object asks for that meshbox's data plane does not do yet. The
//! object is accepted (it is valid Istio config); `apply` prints these as warnings so
//! nobody mistakes an ignored field for a working one.

use meshbox_config::{Resource, Spec};

/// Warnings for the fields of `r` that are accepted but not enforced.
pub fn unsupported_features(r: &Resource) -> Vec<String> {
    let mut notes = Vec::new();
    let mut note = |field: String| notes.push(field);
    match &r.spec {
        Spec::VirtualService(vs) => {
            if !vs.tcp.is_empty() {
                note("spec.tcp".into());
            }
            if !vs.tls.is_empty() {
                note("spec.tls".into());
            }
            if !vs.export_to.is_empty() {
                note("spec.exportTo".into());
            }
            for (i, rule) in vs.http.iter().enumerate() {
                let p = format!("spec.http[{i}]");
                let fields = [("delegate", rule.delegate.is_some())];
                for (name, present) in fields {
                    if present {
                        note(format!("{p}.{name}"));
                    }
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
            for (path, tp) in policies {
                let mut check = |name: &str, present: bool| {
                    if present {
                        note(format!("{path}.{name}"));
                    }
                };
                check(
                    "tls",
                    tp.tls.is_some() || tp.port_level_settings.iter().any(|p| p.tls.is_some()),
                );
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
                for pool in pools {
                    if let Some(tcp) = &pool.tcp {
                        pool_extras |= tcp.connect_timeout.is_some()
                            || tcp.tcp_keepalive.is_some()
                            || tcp.max_connection_duration.is_some()
                            || tcp.idle_timeout.is_some();
                    }
                    if let Some(http) = &pool.http {
                        pool_extras |= http.max_requests_per_connection.is_some()
                            || http.max_retries.is_some()
                            || http.idle_timeout.is_some()
                            || http.h2_upgrade_policy.is_some();
                    }
                }
                check(
                    "connectionPool (timeouts, keepalives and per-connection limits)",
                    pool_extras,
                );
            }
            if !dr.export_to.is_empty() {
                note("spec.exportTo".into());
            }
        }
        Spec::Sidecar(_) => note("spec (the Sidecar resource)".into()),
        Spec::ServiceEntry(se) if !se.export_to.is_empty() => note("spec.exportTo".into()),
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
        let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\nspec:\n  hosts: [a]\n  http:\n  - delegate:\n      name: b\n  - retries:\n      attempts: 3\n    route:\n    - destination:\n        host: a\n";
        let r = &load_str("r.yaml", yaml, &LoadOptions::default()).unwrap()[0];
        let notes = unsupported_features(r);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("virtualservice.networking.istio.io/r: spec.http[0].delegate"),
            "{notes:?}"
        );
    }
}
