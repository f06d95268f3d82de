//! `meshbox analyze`: static checks of a configuration, with the message codes,
//! levels and wording of `istioctl analyze` (istio/istio
//! `pkg/config/analysis/msg/messages.yaml` and the analyzers that report them), so
//! that a problem found here reads as the message Istio prints for the same YAML.
//!
//! Everything here is pure. [`analyze`] takes the applied objects, the install
//! options and the pods (the running ones, or [`workloads_from_config`] when nothing
//! runs) and returns the messages; [`analyze_sources`] does the same for a set of
//! files, adding IST0106 for every document the loader rejects and pointing each
//! message at the line of the field it is about.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

use meshbox_config::istio::{
    Destination, DestinationRuleSpec, GatewaySpec, HttpMatchRequest, Labels, VirtualServiceSpec,
};
use meshbox_config::locate::{locate, scalar_at};
use meshbox_config::{
    load_str, split_documents, Kind, LoadError, LoadOptions, MeshOptions, ObjectKey, Resource,
    Source, Spec, Store,
};

use crate::build::MESH_GATEWAY;
use crate::registry::{resolve_short_name, WorkloadInstance, DOMAIN_SUFFIX};

/// How serious a message is, as istioctl ranks them (errors first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// The configuration is broken; `meshbox analyze` exits with 79.
    Error,
    /// Probably not what was meant.
    Warning,
    /// Worth knowing.
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// The object a message is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageResource {
    /// The kind as YAML spells it, e.g. `VirtualService`.
    pub kind: String,
    /// Its namespace (empty for cluster-scoped kinds).
    pub namespace: String,
    /// `metadata.name` (empty when the document has none).
    pub name: String,
}

/// Where in a file a message points.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageOrigin {
    /// The file as the user named it (`STDIN` for standard input).
    pub file: String,
    /// 1-based line: of the field the message is about when known, else of the
    /// document.
    pub line: usize,
}

/// One finding, as `istioctl analyze` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Error, Warning or Info.
    pub level: Level,
    /// Istio's code, e.g. `IST0101`.
    pub code: String,
    /// Istio's name for the message, e.g. `ReferencedResourceNotFound`.
    pub name: String,
    /// The object concerned, when there is one.
    pub resource: Option<MessageResource>,
    /// Where the object (or its field) was read.
    pub origin: Option<MessageOrigin>,
    /// Dotted path of the field concerned (`spec.gateways[0]`), used to point
    /// `origin.line` at it when the file's text is at hand.
    pub field: Option<String>,
    /// The message, in Istio's words.
    pub text: String,
}

impl fmt::Display for Message {
    /// istioctl's log format: `Error [IST0101] (VirtualService ns/name file:line) text`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        let mut parts = Vec::new();
        if let Some(r) = self.resource.as_ref().filter(|r| !r.name.is_empty()) {
            if r.namespace.is_empty() {
                parts.push(format!("{} {}", r.kind, r.name));
            } else {
                parts.push(format!("{} {}/{}", r.kind, r.namespace, r.name));
            }
        }
        if let Some(o) = self.origin.as_ref().filter(|o| !o.file.is_empty()) {
            parts.push(format!("{}:{}", o.file, o.line));
        }
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(" "))?;
        }
        write!(f, " {}", self.text)
    }
}

/// A message kind from Istio's catalogue.
struct MessageType {
    level: Level,
    code: &'static str,
    name: &'static str,
}

const REFERENCED_RESOURCE_NOT_FOUND: MessageType = MessageType {
    level: Level::Error,
    code: "IST0101",
    name: "ReferencedResourceNotFound",
};
const SCHEMA_VALIDATION_ERROR: MessageType = MessageType {
    level: Level::Error,
    code: "IST0106",
    name: "SchemaValidationError",
};
const CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS: MessageType = MessageType {
    level: Level::Error,
    code: "IST0109",
    name: "ConflictingMeshGatewayVirtualServiceHosts",
};
const VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED: MessageType = MessageType {
    level: Level::Error,
    code: "IST0112",
    name: "VirtualServiceDestinationPortSelectorRequired",
};
const VIRTUAL_SERVICE_UNREACHABLE_RULE: MessageType = MessageType {
    level: Level::Warning,
    code: "IST0130",
    name: "VirtualServiceUnreachableRule",
};
const VIRTUAL_SERVICE_INEFFECTIVE_MATCH: MessageType = MessageType {
    level: Level::Info,
    code: "IST0131",
    name: "VirtualServiceIneffectiveMatch",
};
const VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY: MessageType = MessageType {
    level: Level::Warning,
    code: "IST0132",
    name: "VirtualServiceHostNotFoundInGateway",
};
const DESTINATION_RULE_SUBSET_NOT_SELECT_PODS: MessageType = MessageType {
    level: Level::Error,
    code: "IST0173",
    name: "DestinationRuleSubsetNotSelectPods",
};
const UNKNOWN_DESTINATION_RULE_HOST: MessageType = MessageType {
    level: Level::Warning,
    code: "IST0174",
    name: "UnknownDestinationRuleHost",
};

/// The messages istioctl exits 79 for: any error.
pub fn has_errors(messages: &[Message]) -> bool {
    messages.iter().any(|m| m.level == Level::Error)
}

fn message(t: &MessageType, r: &Resource, field: Option<String>, text: String) -> Message {
    Message {
        level: t.level,
        code: t.code.to_string(),
        name: t.name.to_string(),
        resource: Some(MessageResource {
            kind: r.kind.as_str().to_string(),
            namespace: r.namespace().to_string(),
            name: r.metadata.name.clone(),
        }),
        origin: (!r.origin.file.is_empty()).then(|| MessageOrigin {
            file: r.origin.file.clone(),
            line: r.origin.line,
        }),
        field,
        text,
    }
}

/// `Referenced %s not found: %q`.
fn not_found(r: &Resource, field: String, reftype: &str, refval: &str) -> Message {
    message(
        &REFERENCED_RESOURCE_NOT_FOUND,
        r,
        Some(field),
        format!("Referenced {reftype} not found: {refval:?}"),
    )
}

/// Go's `%v` of a slice: `[a b]`.
fn go_list<T: fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("[{}]", parts.join(" "))
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Every message for the objects of `store`, given the install options and the pods
/// (`workloads`: the running replicas and gateways, or [`workloads_from_config`]).
/// Unsorted; see [`sorted`] and [`in_namespace`].
pub fn analyze(store: &Store, mesh: &MeshOptions, workloads: &[WorkloadInstance]) -> Vec<Message> {
    let mut a = Analyzer {
        store,
        workloads,
        services: services(store, mesh),
        subsets: destination_subsets(store),
        out: Vec::new(),
    };
    for r in store.of_kind(Kind::VirtualService) {
        if let Spec::VirtualService(vs) = &r.spec {
            a.virtual_service_gateways(r, vs);
            a.virtual_service_destinations(r, vs);
            unreachable_rules(r, vs, &mut a.out);
        }
    }
    a.mesh_gateway_host_conflicts();
    for r in store.of_kind(Kind::Gateway) {
        if let Spec::Gateway(gw) = &r.spec {
            a.gateway_selector(r, gw);
        }
    }
    for r in store.of_kind(Kind::DestinationRule) {
        if let Spec::DestinationRule(dr) = &r.spec {
            a.destination_rule(r, dr);
        }
    }
    a.out
}

/// The pods a configuration would run when nothing runs yet: one per Deployment with
/// replicas (its pod template's labels), and one per enabled installed gateway (its
/// labels, `istio: ingressgateway` / `istio: egressgateway`).
pub fn workloads_from_config(store: &Store, mesh: &MeshOptions) -> Vec<WorkloadInstance> {
    let mut pods = Vec::new();
    for gw in mesh.enabled_gateways() {
        pods.push(WorkloadInstance {
            name: gw.name.clone(),
            namespace: gw.namespace.clone(),
            labels: gw.labels.clone(),
            inbound: BTreeMap::new(),
            named_ports: BTreeMap::new(),
        });
    }
    for r in store.of_kind(Kind::Deployment) {
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        if d.replicas == Some(0) {
            continue;
        }
        pods.push(WorkloadInstance {
            name: r.metadata.name.clone(),
            namespace: r.namespace().to_string(),
            labels: d.template.metadata.labels.clone(),
            inbound: BTreeMap::new(),
            named_ports: BTreeMap::new(),
        });
    }
    pods
}

/// Keeps the messages about objects in `namespace` (and those about no object), as
/// `istioctl analyze -n` does; `None` keeps all (`-A`).
pub fn in_namespace(messages: Vec<Message>, namespace: Option<&str>) -> Vec<Message> {
    let Some(ns) = namespace else {
        return messages;
    };
    messages
        .into_iter()
        .filter(|m| match &m.resource {
            None => true,
            Some(r) => r.namespace.is_empty() || r.namespace == ns,
        })
        .collect()
}

/// In istioctl's order (errors, warnings, infos; then code, object, place, text),
/// without repeats.
pub fn sorted(mut messages: Vec<Message>) -> Vec<Message> {
    messages.sort_by(|a, b| {
        (a.level, &a.code, &a.resource, &a.origin, &a.text).cmp(&(
            b.level,
            &b.code,
            &b.resource,
            &b.origin,
            &b.text,
        ))
    });
    messages.dedup_by(|a, b| a.to_string() == b.to_string());
    messages
}

/// What analyzing a set of files found.
#[derive(Debug, Clone, Default)]
pub struct FileAnalysis {
    /// The messages, sorted, every one pointing at its file and line.
    pub messages: Vec<Message>,
    /// Documents left out: kinds Istio has that meshbox does not model yet.
    pub skipped: Vec<String>,
}

/// `meshbox analyze -f`: loads every document of `sources` on its own (objects with
/// no namespace get `namespace`), reports each one the loader rejects as IST0106,
/// and analyzes the others, with the install options of their IstioOperator
/// documents and the pods their Deployments and gateways would run. Nothing else is
/// taken into account, as with `istioctl analyze --use-kube=false`.
pub fn analyze_sources(sources: &[Source], namespace: &str) -> FileAnalysis {
    let opts = LoadOptions {
        namespace: namespace.to_string(),
        namespace_explicit: false,
    };
    let mut messages = Vec::new();
    let mut skipped = Vec::new();
    let mut resources: Vec<Resource> = Vec::new();
    for source in sources {
        for (index, doc) in split_documents(&source.text).into_iter().enumerate() {
            // Padding keeps the loader's line numbers those of the whole file.
            let padded = format!("{}{}", "\n".repeat(doc.first_line - 1), doc.text);
            match load_str(&source.name, &padded, &opts) {
                Ok(loaded) => {
                    for mut r in loaded {
                        r.origin.document = index + 1;
                        r.origin.line = doc.first_line;
                        if let Some(first) = resources.iter().find(|o| o.key() == r.key()) {
                            messages.push(message(
                                &SCHEMA_VALIDATION_ERROR,
                                &r,
                                None,
                                format!(
                                    "Schema validation error: the same object is also defined at {}:{}",
                                    first.origin.file, first.origin.line
                                ),
                            ));
                        } else {
                            resources.push(r);
                        }
                    }
                }
                Err(errors) => {
                    for e in errors.0 {
                        if is_unsupported_kind(&e) {
                            skipped.push(format!(
                                "{}:{}: {}: {}; not analyzed",
                                e.file,
                                e.line.unwrap_or(doc.first_line),
                                e.object.as_deref().unwrap_or(""),
                                e.message
                            ));
                            continue;
                        }
                        messages.push(schema_error(&e, doc.text, doc.first_line, namespace));
                    }
                }
            }
        }
    }
    let mut store = Store::new();
    store.apply(resources);
    let mesh = match mesh_options(&store) {
        Ok(m) => m,
        Err(e) => {
            for r in store.of_kind(Kind::IstioOperator) {
                messages.push(message(
                    &SCHEMA_VALIDATION_ERROR,
                    r,
                    None,
                    format!("Schema validation error: {e}"),
                ));
            }
            MeshOptions::default()
        }
    };
    let workloads = workloads_from_config(&store, &mesh);
    messages.extend(analyze(&store, &mesh, &workloads));
    point_at_fields(&mut messages, sources);
    FileAnalysis {
        messages: sorted(messages),
        skipped,
    }
}

/// Istio's default profile overlaid with the IstioOperator objects, oldest first.
pub fn mesh_options(store: &Store) -> Result<MeshOptions, String> {
    let mut iops: Vec<&Resource> = store.of_kind(Kind::IstioOperator).collect();
    iops.sort_by_key(|r| store.creation_index(&r.key()));
    let layers: Vec<serde_json::Value> = iops
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::IstioOperator(v) => Some(v.clone()),
            _ => None,
        })
        .collect();
    MeshOptions::from_layers(&layers)
}

/// A kind Istio has but meshbox does not model: not a schema error of the input.
fn is_unsupported_kind(e: &LoadError) -> bool {
    e.field.as_deref() == Some("kind") && e.message.contains("not supported by meshbox")
}

/// IST0106 for one problem the loader found.
fn schema_error(e: &LoadError, doc: &str, first_line: usize, namespace: &str) -> Message {
    let resource = e.object.as_deref().map(|object| {
        let (kind, name) = object.split_once('/').unwrap_or((object, ""));
        let namespaced = Kind::from_kind_field(kind).is_none_or(Kind::namespaced);
        MessageResource {
            kind: kind.to_string(),
            namespace: if namespaced {
                scalar_at(doc, "metadata.namespace").unwrap_or_else(|| namespace.to_string())
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    });
    let text = match &e.field {
        Some(field) => format!("Schema validation error: {field}: {}", e.message),
        None => format!("Schema validation error: {}", e.message),
    };
    Message {
        level: SCHEMA_VALIDATION_ERROR.level,
        code: SCHEMA_VALIDATION_ERROR.code.to_string(),
        name: SCHEMA_VALIDATION_ERROR.name.to_string(),
        resource,
        origin: Some(MessageOrigin {
            file: e.file.clone(),
            line: e.line.unwrap_or(first_line),
        }),
        field: None,
        text,
    }
}

// ---------------------------------------------------------------------------
// The checks
// ---------------------------------------------------------------------------

/// A service as the analyzers see it: a host, its ports and where its endpoints are.
struct AnalyzedService<'a> {
    /// Lower-case FQDN (Kubernetes) or ServiceEntry host (short ones expanded).
    host: String,
    namespace: String,
    ports: Vec<u32>,
    endpoints: Endpoints<'a>,
}

enum Endpoints<'a> {
    /// The pods in the service's namespace that carry these labels (a Service's
    /// selector, an installed gateway's labels, a ServiceEntry's workloadSelector);
    /// empty: endpoints not known from the configuration.
    Pods(&'a Labels),
    /// A ServiceEntry's own endpoints, by their labels.
    Entries(Vec<&'a Labels>),
}

fn services<'a>(store: &'a Store, mesh: &'a MeshOptions) -> Vec<AnalyzedService<'a>> {
    let mut out = Vec::new();
    for gw in mesh.enabled_gateways() {
        out.push(AnalyzedService {
            host: format!("{}.{}.{}", gw.name, gw.namespace, DOMAIN_SUFFIX),
            namespace: gw.namespace.clone(),
            ports: gw.service_ports().iter().map(|(_, p, _)| *p).collect(),
            endpoints: Endpoints::Pods(&gw.labels),
        });
    }
    for r in store.of_kind(Kind::Service) {
        if let Spec::Service(s) = &r.spec {
            out.push(AnalyzedService {
                host: resolve_short_name(&r.metadata.name, r.namespace()),
                namespace: r.namespace().to_string(),
                ports: s.ports.iter().map(|p| p.port).collect(),
                endpoints: Endpoints::Pods(&s.selector),
            });
        }
    }
    for r in store.of_kind(Kind::ServiceEntry) {
        if let Spec::ServiceEntry(se) = &r.spec {
            for host in &se.hosts {
                out.push(AnalyzedService {
                    host: resolve_short_name(host, r.namespace()),
                    namespace: r.namespace().to_string(),
                    ports: se.ports.iter().map(|p| p.number).collect(),
                    endpoints: match &se.workload_selector {
                        Some(ws) => Endpoints::Pods(&ws.labels),
                        None => {
                            Endpoints::Entries(se.endpoints.iter().map(|e| &e.labels).collect())
                        }
                    },
                });
            }
        }
    }
    out
}

/// Every `(host FQDN, subset)` a DestinationRule defines.
fn destination_subsets(store: &Store) -> BTreeSet<(String, String)> {
    let mut set = BTreeSet::new();
    for r in store.of_kind(Kind::DestinationRule) {
        if let Spec::DestinationRule(dr) = &r.spec {
            let host = resolve_short_name(&dr.host, r.namespace());
            for s in &dr.subsets {
                set.insert((host.clone(), s.name.clone()));
            }
        }
    }
    set
}

/// `labels` has every label of `selector` (an empty selector selects everything, as
/// a Kubernetes label selector built from an empty set does).
fn labels_match(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio's `host.Name.Matches`, case-insensitive: whether two host names overlap.
fn hosts_overlap(a: &str, b: &str) -> bool {
    meshbox_config::validate::hosts_overlap(&a.to_ascii_lowercase(), &b.to_ascii_lowercase())
}

/// A gateway reference of a VirtualService as `(namespace, name)`: `ns/name`,
/// `name` (the VirtualService's namespace) or `name.ns[.svc.cluster.local]`, read
/// the way the route builder reads it.
fn gateway_ref(reference: &str, vs_ns: &str) -> (String, String) {
    if let Some((ns, name)) = reference.split_once('/') {
        return (ns.to_string(), name.to_string());
    }
    match reference.split_once('.') {
        Some((name, rest)) => (
            rest.split('.').next().unwrap_or(vs_ns).to_string(),
            name.to_string(),
        ),
        None => (vs_ns.to_string(), reference.to_string()),
    }
}

/// A destination of a VirtualService with the path of its `host` field.
struct RouteDestination<'a> {
    destination: &'a Destination,
    field: String,
    mirror: bool,
}

fn route_destinations(vs: &VirtualServiceSpec) -> Vec<RouteDestination<'_>> {
    let mut out = Vec::new();
    for (i, rule) in vs.http.iter().enumerate() {
        for (j, d) in rule.route.iter().enumerate() {
            out.push(RouteDestination {
                destination: &d.destination,
                field: format!("spec.http[{i}].route[{j}].destination.host"),
                mirror: false,
            });
        }
        if let Some(m) = &rule.mirror {
            out.push(RouteDestination {
                destination: m,
                field: format!("spec.http[{i}].mirror.host"),
                mirror: true,
            });
        }
        for (j, m) in rule.mirrors.iter().enumerate() {
            out.push(RouteDestination {
                destination: &m.destination,
                field: format!("spec.http[{i}].mirrors[{j}].destination.host"),
                mirror: true,
            });
        }
    }
    for (kind, rules) in [
        (
            "tcp",
            vs.tcp.iter().map(|r| &r.route[..]).collect::<Vec<_>>(),
        ),
        ("tls", vs.tls.iter().map(|r| &r.route[..]).collect()),
    ] {
        for (i, route) in rules.into_iter().enumerate() {
            for (j, d) in route.iter().enumerate() {
                out.push(RouteDestination {
                    destination: &d.destination,
                    field: format!("spec.{kind}[{i}].route[{j}].destination.host"),
                    mirror: false,
                });
            }
        }
    }
    out
}

struct Analyzer<'a> {
    store: &'a Store,
    workloads: &'a [WorkloadInstance],
    services: Vec<AnalyzedService<'a>>,
    subsets: BTreeSet<(String, String)>,
    out: Vec<Message>,
}

impl Analyzer<'_> {
    /// Istio's `GetDestinationHost`: the service a host names, seen from `namespace`
    /// (short names expanded; wildcard ServiceEntry hosts cover their subdomains).
    fn service(&self, host: &str, namespace: &str) -> Option<&AnalyzedService<'_>> {
        let fqdn = resolve_short_name(host, namespace);
        if let Some(s) = self.services.iter().find(|s| s.host == fqdn) {
            return Some(s);
        }
        let bare = fqdn.trim_start_matches('*');
        self.services
            .iter()
            .find(|s| s.host.starts_with('*') && bare.ends_with(&s.host[1..]))
    }

    /// IST0101 (gateway not found) and IST0132 (VirtualService host not in the
    /// Gateway), as `virtualservice.GatewayAnalyzer`.
    fn virtual_service_gateways(&mut self, r: &Resource, vs: &VirtualServiceSpec) {
        let vs_ns = r.namespace();
        for (i, reference) in vs.gateways.iter().enumerate() {
            if reference == MESH_GATEWAY {
                continue;
            }
            let field = format!("spec.gateways[{i}]");
            let (gw_ns, gw_name) = gateway_ref(reference, vs_ns);
            let gateway = self.store.get(&ObjectKey {
                kind: Kind::Gateway,
                namespace: gw_ns.clone(),
                name: gw_name.clone(),
            });
            if gateway.is_none() {
                self.out
                    .push(not_found(r, field.clone(), "gateway", reference));
            }
            let gateway_hosts: Vec<String> = match gateway.map(|g| &g.spec) {
                Some(Spec::Gateway(gw)) => gateway_hosts_for(gw, &gw_ns, vs_ns),
                _ => Vec::new(),
            };
            let found = gateway_hosts
                .iter()
                .any(|gh| vs.hosts.iter().any(|vh| hosts_overlap(gh, vh)));
            if !found {
                self.out.push(message(
                    &VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                    r,
                    Some(field),
                    format!(
                        "one or more host {} defined in VirtualService {}/{} not found in Gateway {}/{}.",
                        go_list(&vs.hosts),
                        vs_ns,
                        r.metadata.name,
                        gw_ns,
                        gw_name
                    ),
                ));
            }
        }
    }

    /// IST0101 for destination hosts, ports and subsets that do not exist, and
    /// IST0112 for a destination without port on a service with several, as
    /// `virtualservice.DestinationHostAnalyzer` and `DestinationRuleAnalyzer`.
    fn virtual_service_destinations(&mut self, r: &Resource, vs: &VirtualServiceSpec) {
        let ns = r.namespace();
        for d in route_destinations(vs) {
            let host = d.destination.host.as_str();
            let Some(ports) = self.service(host, ns).map(|s| s.ports.clone()) else {
                let reftype = if d.mirror { "mirror host" } else { "host" };
                self.out.push(not_found(r, d.field, reftype, host));
                continue;
            };
            match d.destination.port.as_ref().and_then(|p| p.number) {
                None if ports.len() > 1 => {
                    let text = format!(
                        "This VirtualService routes to a service {host:?} that exposes multiple ports {}. Specifying a port in the destination is required to disambiguate.",
                        go_list(&ports)
                    );
                    self.out.push(message(
                        &VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                        r,
                        Some(d.field.clone()),
                        text,
                    ));
                }
                Some(port) if !ports.is_empty() && !ports.contains(&port) => {
                    self.out.push(not_found(
                        r,
                        d.field.clone(),
                        "host:port",
                        &format!("{host}:{port}"),
                    ));
                }
                _ => {}
            }
            if let Some(subset) = d.destination.subset.as_deref().filter(|s| !s.is_empty()) {
                let key = (resolve_short_name(host, ns), subset.to_string());
                if !self.subsets.contains(&key) {
                    let reftype = if d.mirror {
                        "mirror+subset in destinationrule"
                    } else {
                        "host+subset in destinationrule"
                    };
                    self.out
                        .push(not_found(r, d.field, reftype, &format!("{host}+{subset}")));
                }
            }
        }
    }

    /// IST0109: several VirtualServices bound to the mesh gateway for the same host
    /// (in the same export scope), as `ConflictingMeshGatewayHostsAnalyzer`.
    fn mesh_gateway_host_conflicts(&mut self) {
        let mut by_host: BTreeMap<String, Vec<&Resource>> = BTreeMap::new();
        for r in self.store.of_kind(Kind::VirtualService) {
            let Spec::VirtualService(vs) = &r.spec else {
                continue;
            };
            let on_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == MESH_GATEWAY);
            if !on_mesh {
                continue;
            }
            let ns = r.namespace();
            let scopes: BTreeSet<String> =
                if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
                    BTreeSet::from(["*".to_string()])
                } else {
                    vs.export_to
                        .iter()
                        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
                        .collect()
                };
            for scope in &scopes {
                for host in &vs.hosts {
                    let list = by_host
                        .entry(format!("{scope}/{}", resolve_short_name(host, ns)))
                        .or_default();
                    if !list.iter().any(|o| o.key() == r.key()) {
                        list.push(r);
                    }
                }
            }
        }
        for (scoped_host, list) in by_host {
            if list.len() < 2 {
                continue;
            }
            let names: Vec<String> = list
                .iter()
                .map(|r| format!("{}/{}", r.namespace(), r.metadata.name))
                .collect();
            for r in list {
                self.out.push(message(
                    &CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                    r,
                    Some("metadata.name".into()),
                    format!(
                        "The VirtualServices {} associated with mesh gateway define the same host {scoped_host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                        names.join(",")
                    ),
                ));
            }
        }
    }

    /// IST0101 for a Gateway whose selector matches no pod, as
    /// `gateway.IngressGatewayPortAnalyzer`.
    fn gateway_selector(&mut self, r: &Resource, gw: &GatewaySpec) {
        if self
            .workloads
            .iter()
            .any(|w| labels_match(&gw.selector, &w.labels))
        {
            return;
        }
        let selector: Vec<String> = gw
            .selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let field = match gw.selector.keys().next() {
            Some(k) => format!("spec.selector.{k}"),
            None => "spec".to_string(),
        };
        self.out
            .push(not_found(r, field, "selector", &selector.join(",")));
    }

    /// IST0174 for a DestinationRule host that is no service, IST0173 for a subset
    /// that selects no endpoint of its service, as `destinationrule.PodNotSelectedAnalyzer`
    /// (with the service's own selector and namespace taken into account).
    fn destination_rule(&mut self, r: &Resource, dr: &DestinationRuleSpec) {
        let ns = r.namespace();
        if dr.host.starts_with('*') {
            let fqdn = dr.host.to_ascii_lowercase();
            if !self.services.iter().any(|s| hosts_overlap(&fqdn, &s.host)) {
                self.unknown_host(r, dr);
            }
            return;
        }
        let Some(svc) = self.service(&dr.host, ns) else {
            self.unknown_host(r, dr);
            return;
        };
        let mut missing = Vec::new();
        for (i, subset) in dr.subsets.iter().enumerate() {
            let selected = match &svc.endpoints {
                Endpoints::Pods(selector) if selector.is_empty() => true,
                Endpoints::Pods(selector) => self.workloads.iter().any(|w| {
                    w.namespace == svc.namespace
                        && labels_match(selector, &w.labels)
                        && labels_match(&subset.labels, &w.labels)
                }),
                Endpoints::Entries(entries) => {
                    subset.labels.is_empty()
                        || entries.iter().any(|l| labels_match(&subset.labels, l))
                }
            };
            if !selected {
                missing.push((i, subset.name.clone()));
            }
        }
        for (i, name) in missing {
            self.out.push(message(
                &DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                r,
                Some(format!("spec.subsets[{i}]")),
                format!(
                    "The Subset {name} defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."
                ),
            ));
        }
    }

    fn unknown_host(&mut self, r: &Resource, dr: &DestinationRuleSpec) {
        self.out.push(message(
            &UNKNOWN_DESTINATION_RULE_HOST,
            r,
            Some("spec.host".into()),
            format!(
                "The host {} defined in the DestinationRule does not match any services in the mesh.",
                dr.host
            ),
        ));
    }
}

/// The hosts of a Gateway's servers that a VirtualService in `vs_ns` may bind to
/// (`ns/host` entries of other namespaces left out), as Istio's
/// `sanitizeServerHostNamespace` and `host.NamesForNamespace` read them.
fn gateway_hosts_for(gw: &GatewaySpec, gw_ns: &str, vs_ns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for server in &gw.servers {
        for h in &server.hosts {
            let h = match h.split_once('/') {
                Some((".", host)) => format!("{gw_ns}/{host}"),
                Some(("*", "*")) => "*".to_string(),
                Some(("*", host)) => host.to_string(),
                _ => h.clone(),
            };
            match h.split_once('/') {
                Some((ns, host)) if ns == vs_ns || ns == "*" => out.push(host.to_string()),
                Some(_) => {}
                None => out.push(h),
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// IST0130 and IST0131: rules and matches a VirtualService never reaches
// ---------------------------------------------------------------------------

/// Istio's `routeName`: `"name"` for a named HTTP rule, else `#index`.
fn route_name(name: Option<&str>, index: usize) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(n) => format!("{n:?}"),
        None => format!("#{index}"),
    }
}

/// One rule, reduced to what the unreachable-rule analysis compares.
struct RuleView {
    name: String,
    field: String,
    /// For each match: its name (`#i` or `"name"`), its configuration without the
    /// name (as JSON, Istio's `asJSON`), and for HTTP matches on a URI prefix, the
    /// prefix and the rest of the match (as JSON).
    matches: Vec<MatchView>,
}

struct MatchView {
    name: String,
    json: String,
    prefix: Option<(String, String)>,
}

fn http_match_view(m: &HttpMatchRequest, index: usize) -> MatchView {
    let mut anonymous = m.clone();
    anonymous.name = None;
    let json = serde_json::to_string(&anonymous).unwrap_or_default();
    let prefix = m
        .uri
        .as_ref()
        .and_then(|u| u.prefix.clone())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut rest = anonymous.clone();
            rest.uri = None;
            (p, serde_json::to_string(&rest).unwrap_or_default())
        });
    MatchView {
        name: route_name(m.name.as_deref(), index),
        json,
        prefix,
    }
}

fn plain_match_view<T: Serialize>(m: &T, index: usize) -> MatchView {
    MatchView {
        name: format!("#{index}"),
        json: serde_json::to_string(m).unwrap_or_default(),
        prefix: None,
    }
}

/// IST0130 and IST0131 for the `http`, `tcp` and `tls` rules of one VirtualService,
/// as Istio's validation (`analyzeUnreachableHTTPRules`) reports them.
fn unreachable_rules(r: &Resource, vs: &VirtualServiceSpec, out: &mut Vec<Message>) {
    let http: Vec<RuleView> = vs
        .http
        .iter()
        .enumerate()
        .map(|(i, rule)| RuleView {
            name: route_name(rule.name.as_deref(), i),
            field: format!("spec.http[{i}]"),
            matches: rule
                .matches
                .iter()
                .enumerate()
                .map(|(j, m)| http_match_view(m, j))
                .collect(),
        })
        .collect();
    let tcp: Vec<RuleView> = vs
        .tcp
        .iter()
        .enumerate()
        .map(|(i, rule)| RuleView {
            name: format!("#{i}"),
            field: format!("spec.tcp[{i}]"),
            matches: rule
                .matches
                .iter()
                .enumerate()
                .map(|(j, m)| plain_match_view(m, j))
                .collect(),
        })
        .collect();
    let tls: Vec<RuleView> = vs
        .tls
        .iter()
        .enumerate()
        .map(|(i, rule)| RuleView {
            name: format!("#{i}"),
            field: format!("spec.tls[{i}]"),
            matches: rule
                .matches
                .iter()
                .enumerate()
                .map(|(j, m)| plain_match_view(m, j))
                .collect(),
        })
        .collect();
    for rules in [http, tcp, tls] {
        unreachable_in(r, &rules, out);
    }
}

fn unreachable_in(r: &Resource, rules: &[RuleView], out: &mut Vec<Message>) {
    let unreachable = |rule: &RuleView, reason: &str| {
        message(
            &VIRTUAL_SERVICE_UNREACHABLE_RULE,
            r,
            Some(rule.field.clone()),
            format!("VirtualService rule {} not used ({reason}).", rule.name),
        )
    };
    let ineffective = |rule: &RuleView, matchno: &str, dupno: &str| {
        message(
            &VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
            r,
            Some(rule.field.clone()),
            format!(
                "VirtualService rule {} match {matchno} is not used (duplicate/overlapping match in rule {dupno}).",
                rule.name
            ),
        )
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut catch_all_before = false;
    // (rule index, match name, prefix, rest of the match)
    let mut prefixed: Vec<(usize, &str, &str, &str)> = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if rule.matches.is_empty() {
            if catch_all_before {
                out.push(unreachable(rule, "only the last rule can have no matches"));
            }
            catch_all_before = true;
            continue;
        }
        let mut duplicates = 0;
        for m in &rule.matches {
            if catch_all_before {
                out.push(unreachable(rule, "route without matches defined before"));
                continue;
            }
            if let Some(&earlier) = seen.get(m.json.as_str()) {
                out.push(ineffective(rule, &m.name, &rules[earlier].name));
                duplicates += 1;
                continue;
            }
            seen.insert(&m.json, i);
            if let Some((prefix, rest)) = &m.prefix {
                prefixed.push((i, &m.name, prefix, rest));
            }
        }
        if duplicates == rule.matches.len() {
            out.push(unreachable(rule, "all matches used by prior rules"));
        }
    }
    // A URI prefix match covered by an earlier, shorter prefix with the same other
    // conditions (Istio's overlapping-match validation).
    for (a, &(ra, ma, pa, resta)) in prefixed.iter().enumerate() {
        for &(rb, mb, pb, restb) in &prefixed[a + 1..] {
            if pb != pa && pb.starts_with(pa) && restb == resta {
                out.push(ineffective(
                    &rules[rb],
                    &format!("{mb} of prefix {pb}"),
                    &format!("{ma} of prefix {pa} on {}", rules[ra].name),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Documents and lines
// ---------------------------------------------------------------------------

/// Points each message that names a field at the line of that field in its file.
fn point_at_fields(messages: &mut [Message], sources: &[Source]) {
    for m in messages {
        let (Some(field), Some(origin)) = (&m.field, &mut m.origin) else {
            continue;
        };
        let Some(source) = sources.iter().find(|s| s.name == origin.file) else {
            continue;
        };
        let doc = split_documents(&source.text)
            .into_iter()
            .find(|d| d.first_line == origin.line);
        if let Some((line, _)) = doc.and_then(|d| locate(d.text, field)) {
            origin.line += line - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "dev-service-mesh";

    fn run(files: &[(&str, &str)]) -> Vec<Message> {
        let sources: Vec<Source> = files
            .iter()
            .map(|(name, text)| Source {
                name: name.to_string(),
                text: text.to_string(),
            })
            .collect();
        analyze_sources(&sources, NS).messages
    }

    fn lines(messages: &[Message]) -> Vec<String> {
        messages.iter().map(ToString::to_string).collect()
    }

    fn codes(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.code.as_str()).collect()
    }

    const SERVICE_B: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: service-b
spec:
  selector:
    matchLabels:
      app: service-b
  template:
    metadata:
      labels:
        app: service-b
        version: v1
    spec:
      containers:
        - name: b
          image: meshbox/service-b
---
apiVersion: v1
kind: Service
metadata:
  name: service-b
spec:
  ports:
    - port: 80
      name: http
      targetPort: 8082
  selector:
    app: service-b
";

    const GATEWAY: &str = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
    - port:
        number: 80
        name: http
        protocol: HTTP
      hosts:
        - \"b.example.com\"
";

    fn vs(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n{spec}"
        )
    }

    fn dr(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n{spec}"
        )
    }

    #[test]
    fn a_consistent_set_is_clean() {
        let v = vs("  hosts: [b.example.com]
  gateways: [gw]
  http:
    - route:
        - destination:
            host: service-b
            subset: v1
");
        let d = dr("  host: service-b
  subsets:
    - name: v1
      labels:
        version: v1
");
        let m = run(&[
            ("b.yaml", SERVICE_B),
            ("gw.yaml", GATEWAY),
            ("vs.yaml", &v),
            ("dr.yaml", &d),
        ]);
        assert!(m.is_empty(), "{:#?}", lines(&m));
    }

    #[test]
    fn ist0101_missing_gateway_with_its_line_and_ist0132() {
        let v = vs("  hosts:
    - b.example.com
  gateways:
    - mesh
    - bar
  http:
    - route:
        - destination:
            host: service-b
");
        let m = run(&[("b.yaml", SERVICE_B), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            [
                "Error [IST0101] (VirtualService dev-service-mesh/vs x.yaml:10) Referenced gateway not found: \"bar\"",
                "Warning [IST0132] (VirtualService dev-service-mesh/vs x.yaml:10) one or more host [b.example.com] defined in VirtualService dev-service-mesh/vs not found in Gateway dev-service-mesh/bar.",
            ]
        );
        assert!(has_errors(&m));
    }

    #[test]
    fn ist0101_missing_destination_host_port_and_subset() {
        let v = vs("  hosts: [b.example.com]
  gateways: [gw]
  http:
    - match: [{port: 1}]
      route:
        - destination:
            host: nope
      mirror:
        host: nope-either
    - match: [{port: 2}]
      route:
        - destination:
            host: service-b
            port:
              number: 81
    - route:
        - destination:
            host: service-b.dev-service-mesh.svc.cluster.local
            subset: v9
");
        let m = run(&[("b.yaml", SERVICE_B), ("gw.yaml", GATEWAY), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            [
                "Error [IST0101] (VirtualService dev-service-mesh/vs x.yaml:12) Referenced host not found: \"nope\"",
                "Error [IST0101] (VirtualService dev-service-mesh/vs x.yaml:14) Referenced mirror host not found: \"nope-either\"",
                "Error [IST0101] (VirtualService dev-service-mesh/vs x.yaml:18) Referenced host:port not found: \"service-b:81\"",
                "Error [IST0101] (VirtualService dev-service-mesh/vs x.yaml:23) Referenced host+subset in destinationrule not found: \"service-b.dev-service-mesh.svc.cluster.local+v9\"",
            ]
        );
        // The installed gateways' Services, ServiceEntries and wildcard entries count.
        let v = vs("  hosts: [b.example.com]
  gateways: [gw]
  http:
    - route:
        - destination:
            host: istio-ingressgateway.istio-system.svc.cluster.local
            port: {number: 80}
          weight: 50
        - destination:
            host: api.example.org
          weight: 50
");
        let se = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wild
spec:
  hosts: ['*.example.org']
  ports: [{number: 80, name: http, protocol: HTTP}]
";
        let m = run(&[("gw.yaml", GATEWAY), ("x.yaml", &v), ("se.yaml", se)]);
        assert!(m.is_empty(), "{:#?}", lines(&m));
    }

    #[test]
    fn ist0112_port_required_on_a_multi_port_service() {
        let v = vs("  hosts: [b.example.com]
  gateways: [gw]
  http:
    - route:
        - destination:
            host: istio-ingressgateway.istio-system.svc.cluster.local
");
        let m = run(&[("gw.yaml", GATEWAY), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            ["Error [IST0112] (VirtualService dev-service-mesh/vs x.yaml:11) This VirtualService routes to a service \"istio-ingressgateway.istio-system.svc.cluster.local\" that exposes multiple ports [15021 80 443]. Specifying a port in the destination is required to disambiguate."]
        );
    }

    #[test]
    fn ist0101_gateway_selector_without_workload() {
        let egress = GATEWAY
            .replace("ingressgateway", "egressgateway")
            .replace("name: gw", "name: egress");
        // The default profile runs no egress gateway.
        let m = run(&[("egress.yaml", &egress)]);
        assert_eq!(
            lines(&m),
            ["Error [IST0101] (Gateway dev-service-mesh/egress egress.yaml:7) Referenced selector not found: \"istio=egressgateway\""]
        );
        // An IstioOperator that enables it, among the files.
        let iop = "apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata:
  name: egress
spec:
  components:
    egressGateways:
      - name: istio-egressgateway
        enabled: true
";
        assert!(run(&[("egress.yaml", &egress), ("iop.yaml", iop)]).is_empty());
        // A Deployment's pods count too.
        let own = GATEWAY.replace("istio: ingressgateway", "app: service-b");
        assert!(run(&[("b.yaml", SERVICE_B), ("gw.yaml", &own)]).is_empty());
        let nobody = GATEWAY.replace("istio: ingressgateway", "app: nobody");
        assert_eq!(codes(&run(&[("gw.yaml", &nobody)])), ["IST0101"]);
    }

    #[test]
    fn ist0101_selector_against_running_pods() {
        let store = store_of(GATEWAY);
        let mesh = MeshOptions::default();
        let pod = |labels: &[(&str, &str)]| WorkloadInstance {
            name: "p".into(),
            namespace: "istio-system".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            inbound: BTreeMap::new(),
            named_ports: BTreeMap::new(),
        };
        assert!(analyze(&store, &mesh, &[pod(&[("istio", "ingressgateway")])]).is_empty());
        let m = analyze(&store, &mesh, &[pod(&[("istio", "other")])]);
        assert_eq!(codes(&m), ["IST0101"]);
    }

    fn store_of(text: &str) -> Store {
        let mut store = Store::new();
        store.apply(
            load_str(
                "x.yaml",
                text,
                &LoadOptions {
                    namespace: NS.into(),
                    namespace_explicit: false,
                },
            )
            .unwrap(),
        );
        store
    }

    #[test]
    fn ist0106_schema_errors_keep_the_other_documents() {
        let text = format!(
            "{SERVICE_B}---\n{}",
            vs("  hosts: [service-b]
  http:
    - route:
        - destination:
            host: service-b
            prot: 80
")
        );
        let m = run(&[("bad.yaml", &text)]);
        assert_eq!(m.len(), 1, "{:#?}", lines(&m));
        let line = m[0].to_string();
        assert!(
            line.starts_with("Error [IST0106] (VirtualService dev-service-mesh/vs bad.yaml:41) Schema validation error: spec.http[0].route[0].destination.prot: unknown field `prot`"),
            "{line}"
        );
        // A YAML syntax error has no object.
        let m = run(&[("broken.yaml", "kind: [\n")]);
        assert_eq!(codes(&m), ["IST0106"]);
        assert!(
            m[0].to_string()
                .starts_with("Error [IST0106] (broken.yaml:"),
            "{}",
            m[0]
        );
        // A kind Istio has and meshbox does not model is skipped, not an error.
        let sources = [Source {
            name: "authz.yaml".into(),
            text: "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: a\nspec: {}\n".into(),
        }];
        let r = analyze_sources(&sources, NS);
        assert!(r.messages.is_empty());
        assert_eq!(r.skipped.len(), 1);
        // The same object twice.
        let twice = format!("{SERVICE_B}---\n{SERVICE_B}");
        let m = run(&[("twice.yaml", &twice)]);
        assert_eq!(codes(&m), ["IST0106", "IST0106"]);
    }

    #[test]
    fn ist0109_two_virtual_services_for_one_mesh_host() {
        let a = vs("  hosts: [service-b]
  http:
    - route:
        - destination:
            host: service-b
");
        let b = a.replace("name: vs", "name: vs2");
        let m = run(&[("b.yaml", SERVICE_B), ("a.yaml", &a), ("b2.yaml", &b)]);
        assert_eq!(
            lines(&m),
            [
                "Error [IST0109] (VirtualService dev-service-mesh/vs a.yaml:4) The VirtualServices dev-service-mesh/vs,dev-service-mesh/vs2 associated with mesh gateway define the same host */service-b.dev-service-mesh.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                "Error [IST0109] (VirtualService dev-service-mesh/vs2 b2.yaml:4) The VirtualServices dev-service-mesh/vs,dev-service-mesh/vs2 associated with mesh gateway define the same host */service-b.dev-service-mesh.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
            ]
        );
        // Bound to a gateway only, or exported to different namespaces: no conflict.
        let gw_only = b.replace("  http:", "  gateways: [gw]\n  http:");
        let m = run(&[("b.yaml", SERVICE_B), ("a.yaml", &a), ("b2.yaml", &gw_only)]);
        assert!(!codes(&m).contains(&"IST0109"), "{:#?}", lines(&m));
        let a_local = a.replace("  http:", "  exportTo: ['.']\n  http:");
        let b_other = b.replace("  http:", "  exportTo: [other]\n  http:");
        let m = run(&[
            ("b.yaml", SERVICE_B),
            ("a.yaml", &a_local),
            ("b2.yaml", &b_other),
        ]);
        assert!(m.is_empty(), "{:#?}", lines(&m));
    }

    #[test]
    fn ist0130_rule_after_a_catch_all_and_duplicate_rules() {
        let v = vs("  hosts: [service-b]
  http:
    - route:
        - destination:
            host: service-b
    - match:
        - uri:
            prefix: /a
      route:
        - destination:
            host: service-b
    - name: last
      route:
        - destination:
            host: service-b
");
        let m = run(&[("b.yaml", SERVICE_B), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            [
                "Warning [IST0130] (VirtualService dev-service-mesh/vs x.yaml:11) VirtualService rule #1 not used (route without matches defined before).",
                "Warning [IST0130] (VirtualService dev-service-mesh/vs x.yaml:17) VirtualService rule \"last\" not used (only the last rule can have no matches).",
            ]
        );
        assert!(!has_errors(&m));
        // All matches of a rule already used: unreachable, and each match ineffective.
        let v = vs("  hosts: [service-b]
  http:
    - match:
        - uri: {exact: /a}
      route:
        - destination: {host: service-b}
    - match:
        - name: again
          uri: {exact: /a}
      route:
        - destination: {host: service-b}
");
        let m = run(&[("b.yaml", SERVICE_B), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            [
                "Warning [IST0130] (VirtualService dev-service-mesh/vs x.yaml:12) VirtualService rule #1 not used (all matches used by prior rules).",
                "Info [IST0131] (VirtualService dev-service-mesh/vs x.yaml:12) VirtualService rule #1 match \"again\" is not used (duplicate/overlapping match in rule #0).",
            ]
        );
    }

    #[test]
    fn ist0131_duplicate_and_covered_matches() {
        let v = vs("  hosts: [service-b]
  http:
    - match:
        - uri: {prefix: /api}
      route:
        - destination: {host: service-b}
    - match:
        - uri: {prefix: /api/v2}
        - uri: {exact: /other}
        - uri: {prefix: /api}
      route:
        - destination: {host: service-b}
");
        let m = run(&[("b.yaml", SERVICE_B), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            [
                "Info [IST0131] (VirtualService dev-service-mesh/vs x.yaml:12) VirtualService rule #1 match #0 of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0).",
                "Info [IST0131] (VirtualService dev-service-mesh/vs x.yaml:12) VirtualService rule #1 match #2 is not used (duplicate/overlapping match in rule #0).",
            ]
        );
        // Different other conditions: nothing to report.
        let v = vs("  hosts: [service-b]
  http:
    - match:
        - uri: {prefix: /api}
          headers: {x: {exact: y}}
      route:
        - destination: {host: service-b}
    - match:
        - uri: {prefix: /api/v2}
      route:
        - destination: {host: service-b}
    - route:
        - destination: {host: service-b}
");
        assert!(run(&[("b.yaml", SERVICE_B), ("x.yaml", &v)]).is_empty());
    }

    #[test]
    fn ist0132_virtual_service_host_not_in_gateway() {
        let v = vs("  hosts: [other.example.com]
  gateways: [gw]
  http:
    - route:
        - destination: {host: service-b}
");
        let m = run(&[("b.yaml", SERVICE_B), ("gw.yaml", GATEWAY), ("x.yaml", &v)]);
        assert_eq!(
            lines(&m),
            ["Warning [IST0132] (VirtualService dev-service-mesh/vs x.yaml:7) one or more host [other.example.com] defined in VirtualService dev-service-mesh/vs not found in Gateway dev-service-mesh/gw."]
        );
        // Wildcards on either side, and `ns/host` of the VirtualService's namespace.
        for (gw_host, vs_host) in [
            ("*", "anything.io"),
            ("*.example.com", "b.example.com"),
            ("b.example.com", "*.example.com"),
            ("./b.example.com", "b.example.com"),
            ("*/b.example.com", "b.example.com"),
            ("dev-service-mesh/b.example.com", "b.example.com"),
        ] {
            let g = GATEWAY.replace("\"b.example.com\"", &format!("\"{gw_host}\""));
            let v = vs(&format!(
                "  hosts: [\"{vs_host}\"]\n  gateways: [gw]\n  http:\n    - route:\n        - destination: {{host: service-b}}\n"
            ));
            let m = run(&[("b.yaml", SERVICE_B), ("gw.yaml", &g), ("x.yaml", &v)]);
            assert!(m.is_empty(), "{gw_host} / {vs_host}: {:#?}", lines(&m));
        }
        let g = GATEWAY.replace("\"b.example.com\"", "\"other-ns/b.example.com\"");
        let v = vs("  hosts: [b.example.com]\n  gateways: [gw]\n  http:\n    - route:\n        - destination: {host: service-b}\n");
        let m = run(&[("b.yaml", SERVICE_B), ("gw.yaml", &g), ("x.yaml", &v)]);
        assert_eq!(codes(&m), ["IST0132"]);
    }

    #[test]
    fn ist0173_subset_without_pods() {
        let d = dr("  host: service-b
  subsets:
    - name: v1
      labels:
        version: v1
    - name: v2
      labels:
        version: v2
");
        let m = run(&[("b.yaml", SERVICE_B), ("dr.yaml", &d)]);
        assert_eq!(
            lines(&m),
            ["Error [IST0173] (DestinationRule dev-service-mesh/dr dr.yaml:11) The Subset v2 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."]
        );
        // A pod with the subset's labels behind another service does not count.
        let other = SERVICE_B
            .replace("service-b", "service-c")
            .replace("version: v1", "version: v2");
        let m = run(&[("b.yaml", SERVICE_B), ("c.yaml", &other), ("dr.yaml", &d)]);
        assert_eq!(codes(&m), ["IST0173"]);
        // No replicas, no pods.
        let scaled = SERVICE_B.replace("spec:\n  selector:", "spec:\n  replicas: 0\n  selector:");
        let d1 = dr("  host: service-b\n  subsets:\n    - name: v1\n      labels: {version: v1}\n");
        assert_eq!(
            codes(&run(&[("b.yaml", &scaled), ("dr.yaml", &d1)])),
            ["IST0173"]
        );
        assert!(run(&[("b.yaml", SERVICE_B), ("dr.yaml", &d1)]).is_empty());
        // ServiceEntry endpoints by their labels.
        let se = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: ext
spec:
  hosts: [ext.example.org]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints:
    - address: 10.0.0.1
      labels: {version: v1}
";
        let d = dr("  host: ext.example.org\n  subsets:\n    - name: v1\n      labels: {version: v1}\n    - name: v2\n      labels: {version: v2}\n");
        let m = run(&[("se.yaml", se), ("dr.yaml", &d)]);
        assert_eq!(lines(&m).len(), 1);
        assert!(m[0].text.starts_with("The Subset v2 "), "{}", m[0]);
    }

    #[test]
    fn ist0174_destination_rule_for_an_unknown_host() {
        let d = dr("  host: nowhere\n");
        let m = run(&[("dr.yaml", &d)]);
        assert_eq!(
            lines(&m),
            ["Warning [IST0174] (DestinationRule dev-service-mesh/dr dr.yaml:6) The host nowhere defined in the DestinationRule does not match any services in the mesh."]
        );
        assert!(!has_errors(&m));
        for host in [
            "service-b",
            "service-b.dev-service-mesh.svc.cluster.local",
            "*.dev-service-mesh.svc.cluster.local",
        ] {
            let d = dr(&format!("  host: \"{host}\"\n"));
            assert!(
                run(&[("b.yaml", SERVICE_B), ("dr.yaml", &d)]).is_empty(),
                "{host}"
            );
        }
    }

    #[test]
    fn namespace_filter_and_order() {
        let d = dr("  host: nowhere\n").replace("name: dr", "name: dr\n  namespace: other");
        let v = vs("  hosts: [service-b]\n  gateways: [missing]\n  http:\n    - route:\n        - destination: {host: service-b}\n");
        let m = run(&[("b.yaml", SERVICE_B), ("dr.yaml", &d), ("x.yaml", &v)]);
        assert_eq!(codes(&m), ["IST0101", "IST0132", "IST0174"]);
        assert_eq!(
            codes(&in_namespace(m.clone(), Some(NS))),
            ["IST0101", "IST0132"]
        );
        assert_eq!(codes(&in_namespace(m.clone(), Some("other"))), ["IST0174"]);
        assert_eq!(in_namespace(m, None).len(), 3);
    }
}
