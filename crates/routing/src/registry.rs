//! The service registry as istiod sees it: Kubernetes Services with their endpoints
//! (the running replicas), ServiceEntries, and the Services of the installed gateways.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use meshbox_config::istio::Labels;
use meshbox_config::kube::IntOrString;
use meshbox_config::{Kind, MeshOptions, Spec, Store};

/// Kubernetes' cluster domain; Istio's `domainSuffix`.
pub const DOMAIN_SUFFIX: &str = "svc.cluster.local";

/// One running replica (a pod) as the control plane knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInstance {
    /// Pod name, e.g. `service-b-deployment-7d9c6b-x2kq4`.
    pub name: String,
    /// The pod's namespace; a Service selects pods in its own namespace only.
    pub namespace: String,
    /// The pod's labels, read by Service selectors, DestinationRule subsets, Gateway
    /// selectors and `sourceLabels`.
    pub labels: Labels,
    /// For each container (target) port, the address where this pod's proxy accepts
    /// inbound traffic for it: the pod IP and port of a real cluster.
    pub inbound: BTreeMap<u32, SocketAddr>,
    /// Named container ports, for Services whose targetPort is a name.
    pub named_ports: BTreeMap<String, u32>,
}

/// How a port's traffic is understood, from its protocol or name (Istio's protocol selection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Protocol {
    /// HTTP (also HTTP/2, gRPC, and ports of unknown protocol): the only protocol with HTTP routes.
    Http,
    /// `https`: HTTP inside TLS; no HTTP routes.
    Https,
    /// `tls`: opaque TLS; no HTTP routes.
    Tls,
    /// `tcp` and TCP-based protocols (mongo, mysql, redis); no HTTP routes.
    Tcp,
}

impl Protocol {
    /// Istio's `protocol.Parse` for the `protocol` field of Istio's own ports
    /// (ServiceEntry ports, Gateway servers), where `TCP` means opaque TCP: unlike a
    /// Kubernetes Service port's `protocol: TCP`, which is the transport only.
    pub fn istio(protocol: &str, name: &str) -> Protocol {
        match protocol.to_ascii_uppercase().as_str() {
            "TCP" | "MONGO" | "MYSQL" | "REDIS" => Protocol::Tcp,
            "TLS" => Protocol::Tls,
            "HTTPS" => Protocol::Https,
            _ => Protocol::select(Some(protocol), None, Some(name)),
        }
    }

    /// Istio's protocol selection: explicit protocol, else `appProtocol`, else the port
    /// name prefix (`http-...`), else HTTP (meshbox treats sniffed ports as HTTP).
    pub fn select(
        protocol: Option<&str>,
        app_protocol: Option<&str>,
        name: Option<&str>,
    ) -> Protocol {
        let from = |s: &str| -> Option<Protocol> {
            let lower = s.to_ascii_lowercase();
            let head = lower.split(['-', '_']).next().unwrap_or("");
            match head {
                "http" | "http2" | "grpc" | "grpc-web" | "h2c" => Some(Protocol::Http),
                "https" => Some(Protocol::Https),
                "tls" => Some(Protocol::Tls),
                "tcp" | "mongo" | "mysql" | "redis" => Some(Protocol::Tcp),
                _ => None,
            }
        };
        if let Some(p) = protocol.and_then(|p| {
            if p.eq_ignore_ascii_case("TCP")
                || p.eq_ignore_ascii_case("UDP")
                || p.eq_ignore_ascii_case("SCTP")
            {
                None
            } else {
                from(p)
            }
        }) {
            return p;
        }
        app_protocol
            .and_then(from)
            .or_else(|| name.and_then(from))
            .unwrap_or(Protocol::Http)
    }
}

/// Where a service port's traffic goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPort {
    /// A container port number.
    Number(u32),
    /// A named container port, looked up in each pod's `named_ports`.
    Name(String),
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// The port's name (empty when unnamed); protocol selection reads its prefix.
    pub name: String,
    /// The service port, as clients address it (the `PORT` of `outbound|PORT||HOST`).
    pub port: u32,
    /// Where the traffic goes on the endpoint: `targetPort`, else the port itself.
    pub target: TargetPort,
    /// How the port's traffic is understood; only HTTP ports get routes.
    pub protocol: Protocol,
}

/// How the endpoints of a service are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceSource {
    /// A Kubernetes Service: the pods its selector picks in its namespace.
    Kubernetes {
        /// The Service's `spec.selector` (empty: no endpoints).
        selector: Labels,
    },
    /// A ServiceEntry.
    External {
        /// The ServiceEntry's `resolution`: how its cluster finds endpoints.
        resolution: Resolution,
        /// `location` is MESH_EXTERNAL (the default), not MESH_INTERNAL.
        mesh_external: bool,
        /// Its `endpoints`, if any.
        endpoints: Vec<ExternalEndpoint>,
    },
}

/// One `endpoints[]` entry of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalEndpoint {
    /// IP address or DNS name.
    pub address: String,
    /// `ports`: the endpoint's own port for a ServiceEntry port name (overrides the
    /// port's targetPort for this endpoint, as in Istio's WorkloadEntry ports).
    pub ports: BTreeMap<String, u32>,
}

/// ServiceEntry `resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Resolution {
    /// `NONE` (the default): forward to the request's original destination.
    None,
    /// `STATIC`: the ServiceEntry's endpoint addresses.
    Static,
    /// `DNS`: the endpoints' names (or the host) resolved when used.
    Dns,
    /// `DNS_ROUND_ROBIN`: treated like `DNS`: names resolved when used.
    DnsRoundRobin,
}

/// A service in the registry, by its fully qualified host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `name.namespace.svc.cluster.local`, or the ServiceEntry host.
    pub hostname: String,
    /// Namespace of the defining object: where its pods are, and where DestinationRules are
    /// looked up after the client's.
    pub namespace: String,
    /// The object that defined it, `Service/ns/name` or `ServiceEntry/ns/name`.
    pub defined_by: String,
    /// The service's ports.
    pub ports: Vec<ServicePortInfo>,
    /// Where its endpoints come from.
    pub source: ServiceSource,
    /// The namespaces that see it: a ServiceEntry's `exportTo`, a Service's
    /// `networking.istio.io/exportTo` annotation.
    pub export_to: ExportTo,
}

impl ServiceInfo {
    /// The port with this number.
    pub fn port(&self, number: u32) -> Option<&ServicePortInfo> {
        self.ports.iter().find(|p| p.port == number)
    }
}

/// Which namespaces see an object: Istio's `exportTo` (pkg/config/visibility). An
/// empty list means Istio's default, `*` (meshConfig `defaultServiceExportTo`,
/// `defaultVirtualServiceExportTo` and `defaultDestinationRuleExportTo` unset).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExportTo {
    /// `*` (or no `exportTo`): every namespace.
    #[default]
    Public,
    /// `~`: no namespace at all.
    Nobody,
    /// `.` (the object's own namespace) and namespace names.
    Namespaces(BTreeSet<String>),
}

impl ExportTo {
    /// Reads `exportTo` entries of an object in namespace `own`: as push_context.go
    /// indexes them, `*` wins over everything, then `~` hides the object, `.` is `own`.
    pub fn parse<S: AsRef<str>>(entries: &[S], own: &str) -> ExportTo {
        let entries: Vec<&str> = entries
            .iter()
            .map(|e| e.as_ref().trim())
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() || entries.contains(&"*") {
            return ExportTo::Public;
        }
        if entries.contains(&"~") {
            return ExportTo::Nobody;
        }
        ExportTo::Namespaces(
            entries
                .iter()
                .map(|e| {
                    if *e == "." {
                        own.to_string()
                    } else {
                        e.to_string()
                    }
                })
                .collect(),
        )
    }

    /// Whether a proxy in namespace `ns` sees the object.
    pub fn visible_to(&self, ns: &str) -> bool {
        match self {
            ExportTo::Public => true,
            ExportTo::Nobody => false,
            ExportTo::Namespaces(set) => set.contains(ns),
        }
    }

    /// Whether only the object's own namespace (`own`) sees it, as Istio's
    /// `isPrivateOnly` for DestinationRules.
    pub fn private_to(&self, own: &str) -> bool {
        matches!(self, ExportTo::Namespaces(set) if set.len() == 1 && set.contains(own))
    }
}

/// The annotation that gives a Kubernetes Service an `exportTo`
/// (comma-separated, as Istio's Kubernetes registry reads it).
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// All services, keyed by host name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Services by lower-case host name (FQDN or ServiceEntry host): the first
    /// definition of each host.
    pub services: BTreeMap<String, ServiceInfo>,
    /// Further definitions of a host from other namespaces (ServiceEntries for the
    /// same host, each with its own `exportTo`). Istio keeps one service per host and
    /// namespace; a proxy sees the one its namespace may see (see [`Registry::visible`]).
    pub others: Vec<ServiceInfo>,
}

impl Registry {
    /// Builds the registry from the applied objects and the installed gateways.
    pub fn build(store: &Store, mesh: &MeshOptions) -> Registry {
        let mut services = BTreeMap::new();
        for gw in mesh.enabled_gateways() {
            let hostname = format!("{}.{}.{}", gw.name, gw.namespace, DOMAIN_SUFFIX);
            let ports = gw
                .service_ports()
                .iter()
                .map(|(name, port, target)| ServicePortInfo {
                    name: name.to_string(),
                    port: *port,
                    target: TargetPort::Number(*target),
                    protocol: if *port == 443 {
                        Protocol::Https
                    } else if *port == 15021 {
                        Protocol::Tcp
                    } else {
                        Protocol::Http
                    },
                })
                .collect();
            services.insert(
                hostname.clone(),
                ServiceInfo {
                    hostname,
                    namespace: gw.namespace.clone(),
                    defined_by: format!("Service/{}/{} (installed gateway)", gw.namespace, gw.name),
                    ports,
                    source: ServiceSource::Kubernetes {
                        selector: gw.labels.clone(),
                    },
                    export_to: ExportTo::Public,
                },
            );
        }
        for r in store.of_kind(Kind::Service) {
            let Spec::Service(spec) = &r.spec else {
                continue;
            };
            let hostname = format!("{}.{}.{}", r.metadata.name, r.namespace(), DOMAIN_SUFFIX);
            let ports = spec
                .ports
                .iter()
                .map(|p| ServicePortInfo {
                    name: p.name.clone().unwrap_or_default(),
                    port: p.port,
                    target: match &p.target_port {
                        None => TargetPort::Number(p.port),
                        Some(IntOrString::Int(n)) => TargetPort::Number(*n),
                        Some(IntOrString::String(s)) => match s.parse::<u32>() {
                            Ok(n) => TargetPort::Number(n),
                            Err(_) => TargetPort::Name(s.clone()),
                        },
                    },
                    protocol: Protocol::select(None, p.app_protocol.as_deref(), p.name.as_deref()),
                })
                .collect();
            services.insert(
                hostname.clone(),
                ServiceInfo {
                    hostname,
                    namespace: r.namespace().to_string(),
                    defined_by: format!("Service/{}/{}", r.namespace(), r.metadata.name),
                    ports,
                    source: ServiceSource::Kubernetes {
                        selector: spec.selector.clone(),
                    },
                    // Istio's Kubernetes registry: the annotation, split at commas.
                    export_to: match r.metadata.annotations.get(EXPORT_TO_ANNOTATION) {
                        Some(v) => {
                            ExportTo::parse(&v.split(',').collect::<Vec<_>>(), r.namespace())
                        }
                        None => ExportTo::Public,
                    },
                },
            );
        }
        let mut others: Vec<ServiceInfo> = Vec::new();
        for r in store.of_kind(Kind::ServiceEntry) {
            let Spec::ServiceEntry(spec) = &r.spec else {
                continue;
            };
            let resolution = match spec.resolution.as_deref() {
                Some("STATIC") => Resolution::Static,
                Some("DNS") => Resolution::Dns,
                Some("DNS_ROUND_ROBIN") => Resolution::DnsRoundRobin,
                _ => Resolution::None,
            };
            let mesh_external = spec.location.as_deref() != Some("MESH_INTERNAL");
            for host in &spec.hosts {
                let ports = spec
                    .ports
                    .iter()
                    .map(|p| ServicePortInfo {
                        name: p.name.clone(),
                        port: p.number,
                        target: TargetPort::Number(p.target_port.unwrap_or(p.number)),
                        protocol: Protocol::istio(&p.protocol, &p.name),
                    })
                    .collect();
                let key = host.to_ascii_lowercase();
                let info = ServiceInfo {
                    hostname: key.clone(),
                    namespace: r.namespace().to_string(),
                    defined_by: format!("ServiceEntry/{}/{}", r.namespace(), r.metadata.name),
                    ports,
                    source: ServiceSource::External {
                        resolution,
                        mesh_external,
                        endpoints: spec
                            .endpoints
                            .iter()
                            .filter_map(|e| {
                                Some(ExternalEndpoint {
                                    address: e.address.clone()?,
                                    ports: e.ports.clone(),
                                })
                            })
                            .collect(),
                    },
                    export_to: ExportTo::parse(&spec.export_to, r.namespace()),
                };
                match services.get(&key) {
                    // A Kubernetes Service of the same name wins, as in Istio; so does the
                    // first definition in the same namespace.
                    Some(existing) if existing.namespace == info.namespace => {}
                    Some(_) => {
                        if !others
                            .iter()
                            .any(|o| o.hostname == key && o.namespace == info.namespace)
                        {
                            others.push(info);
                        }
                    }
                    None => {
                        services.insert(key, info);
                    }
                }
            }
        }
        Registry { services, others }
    }

    /// Every definition of a host: the first, then those of other namespaces.
    pub fn definitions<'r>(&'r self, host: &str) -> impl Iterator<Item = &'r ServiceInfo> + 'r {
        // Further definitions are rare: copy the host name only when there are some.
        let others: &'r [ServiceInfo] = &self.others;
        let host_copy = (!others.is_empty()).then(|| host.to_string());
        self.services.get(host).into_iter().chain(
            others
                .iter()
                .filter(move |o| host_copy.as_deref() == Some(o.hostname.as_str())),
        )
    }

    /// The definition of `host` a proxy in namespace `ns` sees, if any: only those
    /// exported to `ns` count, and one of `ns` itself is preferred (Istio's
    /// servicesExportedToNamespace lists private services first; sidecar.go's
    /// selectServices prefers the config namespace's), then the first definition.
    pub fn visible(&self, host: &str, ns: &str) -> Option<&ServiceInfo> {
        pick_visible(self.definitions(host), ns)
    }

    /// The services a proxy in namespace `ns` sees, one per host name, by host name.
    pub fn visible_services<'r>(
        &'r self,
        ns: &'r str,
    ) -> impl Iterator<Item = &'r ServiceInfo> + 'r {
        // Every host of `others` also has a first definition in `services`. The
        // further definitions are indexed by host once, not scanned per host.
        let mut others: HashMap<&'r str, Vec<&'r ServiceInfo>> = HashMap::new();
        for o in &self.others {
            others.entry(o.hostname.as_str()).or_default().push(o);
        }
        self.services.iter().filter_map(move |(h, first)| {
            let further = others.get(h.as_str()).map_or(&[][..], Vec::as_slice);
            pick_visible(std::iter::once(first).chain(further.iter().copied()), ns)
        })
    }

    /// The service a destination host names, after Istio's short-name expansion
    /// relative to `namespace` (a name without dots gets `.NS.svc.cluster.local`).
    pub fn lookup(&self, host: &str, namespace: &str) -> Option<&ServiceInfo> {
        self.services.get(&resolve_short_name(host, namespace))
    }
}

/// Among the definitions of one host (the first definition first), the one a proxy
/// in namespace `ns` sees: see [`Registry::visible`].
fn pick_visible<'r>(
    definitions: impl Iterator<Item = &'r ServiceInfo>,
    ns: &str,
) -> Option<&'r ServiceInfo> {
    let mut visible = definitions.filter(|s| s.export_to.visible_to(ns));
    let first = visible.next()?;
    if first.namespace == ns {
        return Some(first);
    }
    Some(visible.find(|s| s.namespace == ns).unwrap_or(first))
}

/// Istio's `ResolveShortnameToFQDN`: `reviews` in namespace `ns` is
/// `reviews.ns.svc.cluster.local`; a name with a dot or a wildcard is kept as is.
pub fn resolve_short_name(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "*" || host.contains('.') {
        host
    } else {
        format!("{host}.{namespace}.{DOMAIN_SUFFIX}")
    }
}

/// [`resolve_short_name`], borrowing `host` when it is already a lower-case name with
/// a dot (or `*`) and no trailing dot, as most hosts are.
pub(crate) fn resolve_short_name_cow<'h>(host: &'h str, namespace: &str) -> Cow<'h, str> {
    let kept_as_is = !host.ends_with('.')
        && !host.bytes().any(|b| b.is_ascii_uppercase())
        && (host == "*" || host.contains('.'));
    if kept_as_is {
        Cow::Borrowed(host)
    } else {
        Cow::Owned(resolve_short_name(host, namespace))
    }
}

/// Whether `labels` has every label of `selector` (an empty selector selects nothing,
/// as a Service without selector has no automatic endpoints).
pub fn selects(selector: &Labels, labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_by_namespace() {
        assert_eq!(
            resolve_short_name("producer-internal-host", "dev-service-mesh"),
            "producer-internal-host.dev-service-mesh.svc.cluster.local"
        );
        assert_eq!(
            resolve_short_name("worldtimeapi.org", "x"),
            "worldtimeapi.org"
        );
        assert_eq!(resolve_short_name("Reviews.Other", "x"), "reviews.other");
    }

    #[test]
    fn protocol_from_port_name() {
        assert_eq!(
            Protocol::select(None, None, Some("http-80")),
            Protocol::Http
        );
        assert_eq!(Protocol::select(None, None, Some("tcp-db")), Protocol::Tcp);
        assert_eq!(
            Protocol::select(Some("TLS"), None, Some("x")),
            Protocol::Tls
        );
        assert_eq!(
            Protocol::select(Some("TCP"), Some("http"), None),
            Protocol::Http
        );
        assert_eq!(Protocol::select(None, None, None), Protocol::Http);
    }
}
