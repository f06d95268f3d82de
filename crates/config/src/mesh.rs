//! Install options, as `istioctl install --set ...` and an IstioOperator spell them:
//! the mesh config meshbox honours and the gateways it runs.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::istio::Labels;

/// `meshConfig.outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum OutboundPolicy {
    /// Unknown hosts pass through (Istio's default).
    AllowAny,
    /// Only hosts in the service registry are reachable.
    RegistryOnly,
}

/// Which side of the mesh a gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum GatewayRole {
    /// Traffic entering the mesh.
    Ingress,
    /// Traffic leaving the mesh.
    Egress,
}

/// One `components.ingressGateways[i]` or `components.egressGateways[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayComponent {
    /// Deployment and Service name, e.g. `istio-ingressgateway`.
    pub name: String,
    /// Namespace, `istio-system` unless given.
    pub namespace: String,
    /// Pod labels, which Gateway selectors match (`istio: ingressgateway`).
    pub labels: Labels,
    /// Ingress or egress.
    pub role: GatewayRole,
    /// Whether the gateway runs.
    pub enabled: bool,
}

impl GatewayComponent {
    /// The Service ports `istioctl install` gives this gateway: (name, port, targetPort).
    pub fn service_ports(&self) -> &'static [(&'static str, u32, u32)] {
        match self.role {
            GatewayRole::Ingress => &[
                ("status-port", 15021, 15021),
                ("http2", 80, 8080),
                ("https", 443, 8443),
            ],
            GatewayRole::Egress => &[("http2", 80, 8080), ("https", 443, 8443)],
        }
    }
}

/// The effective install options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MeshOptions {
    /// `meshConfig.outboundTrafficPolicy.mode`.
    pub outbound_policy: OutboundPolicy,
    /// `meshConfig.accessLogFile`: empty disables access logs (Istio's default).
    pub access_log_file: String,
    /// `meshConfig.accessLogEncoding`: TEXT or JSON.
    pub access_log_encoding: String,
    /// Enabled and disabled gateways, ingress first.
    pub gateways: Vec<GatewayComponent>,
}

/// The spec of Istio's `default` profile, the base every option overlays.
pub fn default_profile() -> Value {
    serde_json::json!({
        "meshConfig": {
            "accessLogFile": "",
            "accessLogEncoding": "TEXT",
            "outboundTrafficPolicy": { "mode": "ALLOW_ANY" }
        },
        "components": {
            "ingressGateways": [ { "name": "istio-ingressgateway", "enabled": true } ],
            "egressGateways": [ { "name": "istio-egressgateway", "enabled": false } ]
        }
    })
}

/// Turns `--set path=value` flags into an IstioOperator spec fragment.
pub fn parse_set_flags(flags: &[String]) -> Result<Value, String> {
    let mut root = Value::Object(Map::new());
    for flag in flags {
        let (path, raw) = flag
            .split_once('=')
            .ok_or_else(|| format!("--set {flag:?}: expected PATH=VALUE"))?;
        let value = match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => raw
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.to_string())),
        };
        set_path(&mut root, path, value).map_err(|e| format!("--set {flag:?}: {e}"))?;
    }
    Ok(root)
}

fn set_path(root: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let mut cur = root;
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err("empty path segment".into());
    }
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let (key, index) = match seg.split_once('[') {
            Some((k, rest)) => {
                let idx = rest
                    .strip_suffix(']')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| format!("bad index in {seg:?}"))?;
                (k, Some(idx))
            }
            None => (*seg, None),
        };
        let obj = cur
            .as_object_mut()
            .ok_or_else(|| format!("{key:?} is not an object"))?;
        let slot = obj.entry(key.to_string()).or_insert(Value::Null);
        cur = match index {
            None => slot,
            Some(idx) => {
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let arr = slot.as_array_mut().ok_or("not a list")?;
                while arr.len() <= idx {
                    arr.push(Value::Object(Map::new()));
                }
                &mut arr[idx]
            }
        };
        if last {
            *cur = value;
            return Ok(());
        }
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
    }
    Ok(())
}

/// Overlays `top` on `base`: objects merge by key, lists merge by index, scalars replace.
pub fn overlay(base: &mut Value, top: &Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                overlay(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(b), Value::Array(t)) => {
            for (i, v) in t.iter().enumerate() {
                if i < b.len() {
                    overlay(&mut b[i], v);
                } else {
                    b.push(v.clone());
                }
            }
        }
        (b, t) => *b = t.clone(),
    }
}

impl Default for MeshOptions {
    fn default() -> Self {
        // The default profile is well-formed by construction.
        MeshOptions::from_spec(&default_profile()).unwrap_or(MeshOptions {
            outbound_policy: OutboundPolicy::AllowAny,
            access_log_file: String::new(),
            access_log_encoding: "TEXT".into(),
            gateways: Vec::new(),
        })
    }
}

impl MeshOptions {
    /// Default profile overlaid with each spec in order (IstioOperator documents, then
    /// `--set` flags).
    pub fn from_layers(layers: &[Value]) -> Result<Self, String> {
        let mut spec = default_profile();
        for layer in layers {
            overlay(&mut spec, layer);
        }
        Self::from_spec(&spec)
    }

    /// Interprets a complete IstioOperator spec.
    pub fn from_spec(spec: &Value) -> Result<Self, String> {
        let mesh = spec.get("meshConfig");
        let mode = mesh
            .and_then(|m| m.get("outboundTrafficPolicy"))
            .and_then(|o| o.get("mode"))
            .and_then(Value::as_str)
            .unwrap_or("ALLOW_ANY");
        let outbound_policy = match mode {
            "ALLOW_ANY" => OutboundPolicy::AllowAny,
            "REGISTRY_ONLY" => OutboundPolicy::RegistryOnly,
            other => {
                return Err(format!(
                    "meshConfig.outboundTrafficPolicy.mode: {other:?} is not one of ALLOW_ANY, REGISTRY_ONLY"
                ))
            }
        };
        let string_at = |key: &str, default: &str| -> Result<String, String> {
            match mesh.and_then(|m| m.get(key)) {
                None | Some(Value::Null) => Ok(default.to_string()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("meshConfig.{key}: expected a string, got {other}")),
            }
        };
        let access_log_file = string_at("accessLogFile", "")?;
        let access_log_encoding = string_at("accessLogEncoding", "TEXT")?;
        if access_log_encoding != "TEXT" && access_log_encoding != "JSON" {
            return Err(format!(
                "meshConfig.accessLogEncoding: {access_log_encoding:?} is not one of TEXT, JSON"
            ));
        }
        let mut gateways = Vec::new();
        for (field, role) in [
            ("ingressGateways", GatewayRole::Ingress),
            ("egressGateways", GatewayRole::Egress),
        ] {
            let list = spec.get("components").and_then(|c| c.get(field));
            let Some(list) = list else { continue };
            let items = list
                .as_array()
                .ok_or_else(|| format!("components.{field}: expected a list"))?;
            for (i, item) in items.iter().enumerate() {
                gateways.push(gateway_component(
                    item,
                    role,
                    &format!("components.{field}[{i}]"),
                )?);
            }
        }
        Ok(MeshOptions {
            outbound_policy,
            access_log_file,
            access_log_encoding,
            gateways,
        })
    }

    /// The enabled gateways.
    pub fn enabled_gateways(&self) -> impl Iterator<Item = &GatewayComponent> {
        self.gateways.iter().filter(|g| g.enabled)
    }
}

fn gateway_component(
    item: &Value,
    role: GatewayRole,
    field: &str,
) -> Result<GatewayComponent, String> {
    let name = item
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{field}.name: required"))?
        .to_string();
    let enabled = match item.get("enabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "{field}.enabled: expected true or false, got {other}"
            ))
        }
    };
    let namespace = item
        .get("namespace")
        .and_then(Value::as_str)
        .unwrap_or("istio-system")
        .to_string();
    let mut labels = Labels::new();
    labels.insert("app".into(), name.clone());
    let istio_label = match (role, name.as_str()) {
        (GatewayRole::Ingress, "istio-ingressgateway") => "ingressgateway".to_string(),
        (GatewayRole::Egress, "istio-egressgateway") => "egressgateway".to_string(),
        _ => name.strip_prefix("istio-").unwrap_or(&name).to_string(),
    };
    labels.insert("istio".into(), istio_label);
    if let Some(extra) = item.get("label").and_then(Value::as_object) {
        for (k, v) in extra {
            if let Some(v) = v.as_str() {
                labels.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok(GatewayComponent {
        name,
        namespace,
        labels,
        role,
        enabled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn course_install_flags_enable_egress_gateway_and_registry_only() {
        let flags: Vec<String> = [
            "meshConfig.outboundTrafficPolicy.mode=REGISTRY_ONLY",
            "meshConfig.accessLogFile=/dev/stdout",
            "components.egressGateways[0].name=istio-egressgateway",
            "components.egressGateways[0].enabled=true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let layer = parse_set_flags(&flags).unwrap();
        let opts = MeshOptions::from_layers(&[layer]).unwrap();
        assert_eq!(opts.outbound_policy, OutboundPolicy::RegistryOnly);
        assert_eq!(opts.access_log_file, "/dev/stdout");
        let names: Vec<&str> = opts.enabled_gateways().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["istio-ingressgateway", "istio-egressgateway"]);
        let egress = opts.enabled_gateways().nth(1).unwrap();
        assert_eq!(
            egress.labels.get("istio").map(String::as_str),
            Some("egressgateway")
        );
    }

    #[test]
    fn default_profile_has_only_ingress_and_allow_any() {
        let opts = MeshOptions::default();
        assert_eq!(opts.outbound_policy, OutboundPolicy::AllowAny);
        assert_eq!(opts.enabled_gateways().count(), 1);
        assert_eq!(opts.access_log_file, "");
    }

    #[test]
    fn bad_mode_is_named() {
        let layer =
            parse_set_flags(&["meshConfig.outboundTrafficPolicy.mode=NOPE".into()]).unwrap();
        let e = MeshOptions::from_layers(&[layer]).unwrap_err();
        assert!(e.contains("outboundTrafficPolicy.mode"), "{e}");
    }
}
