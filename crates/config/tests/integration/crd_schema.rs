//! The Istio model against Istio's own CRD schemas
//! (`shared/reference/istio-crds.yaml` beside the project checkout).
//!
//! For each kind and each served version, one "maximal" spec is generated from
//! `openAPIV3Schema.properties.spec`: every property is set, recursively. Where a
//! `oneOf` makes properties mutually exclusive, variant *k* keeps the *k*-th
//! alternative, so that the variants together set every property. Each document must
//!
//! 1. deserialize into the typed spec struct (the model accepts every schema field),
//! 2. load through [`meshbox_config::load_str`] without any unknown-field error
//!    (validation may reject the dummy values; that is not what is checked here), and
//! 3. serialize back (from the typed struct) to fields that all exist in the schema
//!    (the model has no field the schema lacks).

use meshbox_config::istio::{
    DestinationRuleSpec, GatewaySpec, ServiceEntrySpec, SidecarSpec, VirtualServiceSpec,
};
use meshbox_config::{load_str, LoadOptions};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::path::PathBuf;

const KINDS: [&str; 5] = [
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
    "Sidecar",
];
const VERSIONS: [&str; 3] = ["v1alpha3", "v1beta1", "v1"];

fn crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/istio-crds.yaml")
}

/// Every CustomResourceDefinition of the reference file, as JSON values.
fn crds() -> Vec<Value> {
    let path = crd_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the Istio CRD reference {} cannot be read ({e}); this test needs it and does not skip",
            path.display()
        )
    });
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("the CRD reference is valid YAML"))
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .collect()
}

/// The `spec` schema of `kind` at `version`, if that version is served.
fn spec_schema(crds: &[Value], kind: &str, version: &str) -> Option<Value> {
    let crd = crds.iter().find(|c| {
        c.pointer("/spec/names/kind").and_then(Value::as_str) == Some(kind)
            && c.pointer("/spec/group").and_then(Value::as_str) == Some("networking.istio.io")
    })?;
    let versions = crd.pointer("/spec/versions")?.as_array()?;
    let v = versions
        .iter()
        .find(|v| v.get("name").and_then(Value::as_str) == Some(version))?;
    if v.get("served").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    v.pointer("/schema/openAPIV3Schema/properties/spec")
        .cloned()
}

/// `oneOf` groups of a schema (directly or under `allOf`), each as the list of its
/// alternatives' required property names (the `not anyOf` "none" alternative dropped).
fn one_of_groups(schema: &Value) -> Vec<Vec<Vec<String>>> {
    let mut groups = Vec::new();
    let mut collect = |s: &Value| {
        if let Some(alts) = s.get("oneOf").and_then(Value::as_array) {
            let group: Vec<Vec<String>> = alts
                .iter()
                .filter_map(|a| a.get("required").and_then(Value::as_array))
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .collect();
            if !group.is_empty() {
                groups.push(group);
            }
        }
    };
    collect(schema);
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            collect(s);
        }
    }
    groups
}

/// How many variants are needed so that every `oneOf` alternative is chosen once.
fn variants_needed(schema: &Value) -> usize {
    let mut n = one_of_groups(schema)
        .iter()
        .map(Vec::len)
        .max()
        .unwrap_or(1);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for p in props.values() {
            n = n.max(variants_needed(p));
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = schema.get(key).filter(|s| s.is_object()) {
            n = n.max(variants_needed(sub));
        }
    }
    n
}

fn is_duration(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .is_some_and(|rules| {
            rules.iter().any(|r| {
                r.get("rule")
                    .and_then(Value::as_str)
                    .is_some_and(|s| s.contains("duration(self)"))
            })
        })
}

/// A value that sets every property of `schema` (see the module documentation).
fn maximal(schema: &Value, variant: usize) -> Value {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("object");
    match ty {
        "object" => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                let mut excluded: Vec<String> = Vec::new();
                for group in one_of_groups(schema) {
                    let chosen = &group[variant.min(group.len() - 1)];
                    for alt in &group {
                        excluded.extend(alt.iter().filter(|f| !chosen.contains(f)).cloned());
                    }
                }
                let mut out = Map::new();
                for (name, sub) in props {
                    if !excluded.contains(name) {
                        out.insert(name.clone(), maximal(sub, variant));
                    }
                }
                Value::Object(out)
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                json!({ "x": maximal(ap, variant) })
            } else {
                json!({})
            }
        }
        "array" => json!([maximal(
            schema.get("items").unwrap_or(&json!({"type": "string"})),
            variant
        )]),
        "string" => {
            if let Some(first) = schema
                .get("enum")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
            {
                first.clone()
            } else if schema.get("format").and_then(Value::as_str) == Some("byte") {
                json!("eA==")
            } else if is_duration(schema) {
                json!("1s")
            } else {
                json!("x")
            }
        }
        "integer" => {
            let min = schema.get("minimum").and_then(Value::as_i64).unwrap_or(1);
            json!(min.max(1))
        }
        "number" => json!(1.0),
        "boolean" => json!(true),
        other => panic!("schema type {other:?} is not handled by the generator"),
    }
}

/// Deserializes `spec` into `S`. Each unknown field is recorded, removed, and the
/// attempt repeated, so that one run lists every field the model lacks.
fn typed_round_trip<S: DeserializeOwned + Serialize>(
    mut spec: Value,
    missing: &mut Vec<String>,
) -> Option<Value> {
    for _ in 0..500 {
        let result: Result<S, _> = serde_path_to_error::deserialize(spec.clone());
        match result {
            Ok(typed) => return Some(serde_json::to_value(&typed).expect("serialize")),
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().to_string();
                missing.push(format!("spec.{path}: {message}"));
                if !message.starts_with("unknown field") || !remove_path(&mut spec, &path) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the value at a serde_path_to_error path such as `http[0].route[0].weight`.
fn remove_path(root: &mut Value, path: &str) -> bool {
    let mut segments: Vec<String> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            segments.push(rest[..i].to_string());
            rest = &rest[i..];
            while let Some(end) = rest.find(']') {
                segments.push(rest[..=end].to_string());
                rest = &rest[end + 1..];
            }
        } else {
            segments.push(rest.to_string());
        }
    }
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = root;
    for seg in parents {
        cur = match seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => match i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            None => match cur.get_mut(seg.as_str()) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    cur.as_object_mut()
        .is_some_and(|m| m.remove(last.as_str()).is_some())
}

/// Fields of `value` (a serialized model) that the schema does not define.
fn fields_outside_schema(value: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, v) in map {
                let child = format!("{path}.{k}");
                match (props.and_then(|p| p.get(k)), additional) {
                    (Some(sub), _) => fields_outside_schema(v, sub, &child, out),
                    (None, Some(ap)) => fields_outside_schema(v, ap, &child, out),
                    (None, None) => out.push(child),
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    fields_outside_schema(v, sub, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn check_kind<S: DeserializeOwned + Serialize>(
    kind: &str,
    version: &str,
    schema: &Value,
    problems: &mut Vec<String>,
) {
    for variant in 0..variants_needed(schema) {
        let spec = maximal(schema, variant);
        let label = format!("{kind} networking.istio.io/{version} (variant {variant})");

        // 1. The typed model accepts every field.
        let mut missing = Vec::new();
        let round_trip = typed_round_trip::<S>(spec.clone(), &mut missing);
        for m in &missing {
            problems.push(format!("{label}: the model rejects {m}"));
        }

        // 2. The loader reports no unknown field.
        let doc = json!({
            "apiVersion": format!("networking.istio.io/{version}"),
            "kind": kind,
            "metadata": { "name": "maximal" },
            "spec": spec,
        });
        let yaml = serde_norway::to_string(&doc).expect("yaml");
        if let Err(errors) = load_str("maximal.yaml", &yaml, &LoadOptions::default()) {
            for e in &errors.0 {
                if e.message.contains("unknown field") {
                    problems.push(format!("{label}: load_str: {e}"));
                }
            }
        }

        // 3. The model defines no field the schema lacks.
        if let Some(serialized) = round_trip {
            let mut extra = Vec::new();
            fields_outside_schema(&serialized, schema, "spec", &mut extra);
            for f in extra {
                problems.push(format!(
                    "{label}: the model has field {f}, which the schema does not define"
                ));
            }
        }
    }
}

#[test]
fn model_matches_istio_crd_schemas() {
    let crds = crds();
    let mut problems = Vec::new();
    let mut checked = 0;
    for kind in KINDS {
        for version in VERSIONS {
            let Some(schema) = spec_schema(&crds, kind, version) else {
                continue;
            };
            checked += 1;
            match kind {
                "Gateway" => check_kind::<GatewaySpec>(kind, version, &schema, &mut problems),
                "VirtualService" => {
                    check_kind::<VirtualServiceSpec>(kind, version, &schema, &mut problems)
                }
                "DestinationRule" => {
                    check_kind::<DestinationRuleSpec>(kind, version, &schema, &mut problems)
                }
                "ServiceEntry" => {
                    check_kind::<ServiceEntrySpec>(kind, version, &schema, &mut problems)
                }
                "Sidecar" => check_kind::<SidecarSpec>(kind, version, &schema, &mut problems),
                _ => unreachable!(),
            }
        }
    }
    assert_eq!(
        checked, 15,
        "expected 5 kinds x 3 served versions in the CRD reference"
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn generator_sets_every_property() {
    // The generator itself: a schema with a oneOf yields one variant per alternative,
    // and across the variants every property is set.
    let schema = json!({
        "type": "object",
        "oneOf": [
            {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}]}},
            {"required": ["exact"]},
            {"required": ["prefix"]}
        ],
        "properties": {
            "exact": {"type": "string"},
            "prefix": {"type": "string"},
            "n": {"type": "integer"},
            "m": {"type": "object", "additionalProperties": {"type": "boolean"}},
            "d": {"type": "string", "x-kubernetes-validations": [{"rule": "duration(self) >= duration('1ms')"}]}
        }
    });
    assert_eq!(variants_needed(&schema), 2);
    assert_eq!(
        maximal(&schema, 0),
        json!({"exact": "x", "n": 1, "m": {"x": true}, "d": "1s"})
    );
    assert_eq!(
        maximal(&schema, 1),
        json!({"prefix": "x", "n": 1, "m": {"x": true}, "d": "1s"})
    );
}
