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
            if dr.traffic_policy.is_some() || dr.subsets.iter().any(|s| s.traffic_policy.is_some())
            {
                note("spec.trafficPolicy".into());
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
