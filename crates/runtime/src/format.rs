//! `meshbox get`: kubectl-style tables of applied objects and running pods.

use meshbox_config::{Kind, Resource, Spec};

use crate::mesh::Mesh;

/// Formats `get KIND [NAME]`.
pub fn get(
    mesh: &Mesh,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    all_namespaces: bool,
    output: Option<&str>,
) -> Result<String, String> {
    let ns_filter = if all_namespaces {
        None
    } else {
        Some(namespace.unwrap_or("default"))
    };
    let lower = kind.to_ascii_lowercase();
    if matches!(lower.as_str(), "pods" | "pod" | "po") {
        let rows: Vec<Vec<String>> = mesh
            .pod_rows(ns_filter)
            .into_iter()
            .filter(|r| name.is_none_or(|n| r[1] == n))
            .map(|r| {
                let mut v = Vec::new();
                if all_namespaces {
                    v.push(r[0].clone());
                }
                v.extend(r[1..].iter().cloned());
                v
            })
            .collect();
        let mut header = vec!["NAME", "READY", "STATUS", "RESTARTS", "ADDRESSES"];
        if all_namespaces {
            header.insert(0, "NAMESPACE");
        }
        if rows.is_empty() {
            return Ok(format!(
                "No resources found in {} namespace.\n",
                ns_filter.unwrap_or("any")
            ));
        }
        return Ok(table(&header, rows));
    }
    let kind = Kind::from_cli_name(kind).ok_or_else(|| {
        format!("error: the server doesn't have a resource type {kind:?} (try vs, dr, se, gw, svc, deploy, sidecar, ns, pods)")
    })?;
    let objects: Vec<&Resource> = mesh
        .store()
        .of_kind(kind)
        .filter(|r| !kind.namespaced() || ns_filter.is_none_or(|ns| r.namespace() == ns))
        .filter(|r| name.is_none_or(|n| r.metadata.name == n))
        .collect();
    if objects.is_empty() {
        return match name {
            Some(n) => Err(format!(
                "Error from server (NotFound): {} {n:?} not found",
                kind.resource_name()
            )),
            None => Ok(format!(
                "No resources found in {} namespace.\n",
                ns_filter.unwrap_or("any")
            )),
        };
    }
    match output {
        Some("yaml") => {
            return Ok(objects
                .iter()
                .map(|r| serde_norway::to_string(r).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("---\n"))
        }
        Some("json") => return serde_json::to_string_pretty(&objects).map_err(|e| e.to_string()),
        Some(other) => {
            return Err(format!(
                "error: output format {other:?} not supported (yaml, json)"
            ))
        }
        None => {}
    }
    let (mut header, rows): (Vec<&str>, Vec<Vec<String>>) = match kind {
        Kind::VirtualService => (
            vec!["NAME", "GATEWAYS", "HOSTS"],
            objects
                .iter()
                .map(|r| match &r.spec {
                    Spec::VirtualService(vs) => {
                        vec![r.metadata.name.clone(), list(&vs.gateways), list(&vs.hosts)]
                    }
                    _ => vec![],
                })
                .collect(),
        ),
        Kind::ServiceEntry => (
            vec!["NAME", "HOSTS", "LOCATION", "RESOLUTION"],
            objects
                .iter()
                .map(|r| match &r.spec {
                    Spec::ServiceEntry(se) => vec![
                        r.metadata.name.clone(),
                        list(&se.hosts),
                        se.location.clone().unwrap_or_default(),
                        se.resolution.clone().unwrap_or_default(),
                    ],
                    _ => vec![],
                })
                .collect(),
        ),
        Kind::DestinationRule => (
            vec!["NAME", "HOST"],
            objects
                .iter()
                .map(|r| match &r.spec {
                    Spec::DestinationRule(dr) => vec![r.metadata.name.clone(), dr.host.clone()],
                    _ => vec![],
                })
                .collect(),
        ),
        Kind::Service => (
            vec!["NAME", "PORT(S)"],
            objects
                .iter()
                .map(|r| match &r.spec {
                    Spec::Service(s) => vec![
                        r.metadata.name.clone(),
                        s.ports
                            .iter()
                            .map(|p| {
                                format!(
                                    "{}/{}",
                                    p.port,
                                    p.protocol.clone().unwrap_or_else(|| "TCP".into())
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    ],
                    _ => vec![],
                })
                .collect(),
        ),
        Kind::Deployment => (
            vec!["NAME", "REPLICAS"],
            objects
                .iter()
                .map(|r| match &r.spec {
                    Spec::Deployment(d) => {
                        vec![r.metadata.name.clone(), d.replicas.unwrap_or(1).to_string()]
                    }
                    _ => vec![],
                })
                .collect(),
        ),
        _ => (
            vec!["NAME"],
            objects
                .iter()
                .map(|r| vec![r.metadata.name.clone()])
                .collect(),
        ),
    };
    let rows = if all_namespaces && kind.namespaced() {
        header.insert(0, "NAMESPACE");
        objects
            .iter()
            .zip(rows)
            .map(|(r, mut row)| {
                row.insert(0, r.namespace().to_string());
                row
            })
            .collect()
    } else {
        rows
    };
    Ok(table(&header, rows))
}

fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.len());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in &rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
