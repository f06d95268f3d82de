//! From the applied configuration to each proxy's tables, as istiod translates
//! Istio config for Envoy (pilot/pkg/networking/core: sidecar outbound route
//! configurations per port, gateway route configurations `http.PORT`, clusters
//! `outbound|PORT|SUBSET|HOST`).

use regex::Regex;
use rustc_hash::FxHashMap;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use meshbox_config::istio::{
    Destination, DestinationRuleSpec, HttpMatchRequest, HttpRoute, IstioEgressListener,
    SidecarSpec, StringMatch, VirtualServiceSpec,
};
use meshbox_config::validate::parse_duration;
use meshbox_config::{Kind, MeshOptions, ObjectKey, OutboundPolicy, Resource, Spec, Store};

use crate::cluster_policy::ClusterPolicy;
use crate::policy::{Cors, Fault, HeaderOps, Mirror, Redirect, RegexRewrite, RetryPolicy};
use crate::registry::{
    resolve_short_name, resolve_short_name_cow, selects, ExportTo, Protocol, Registry, Resolution,
    ServiceInfo, ServiceSource, TargetPort, WorkloadInstance, DOMAIN_SUFFIX,
};
use crate::tables::{
    outbound_cluster_name, CatchAll, Cluster, ClusterEndpoints, DelegateSource, ForwardAction,
    HeaderCondition, ProxyKind, ProxyTables, Route, RouteAction, RouteMatch, RouteSource,
    RouteTable, StrMatcher, UriRewrite, VirtualHost, WeightedCluster, ALLOW_ANY_ROUTE,
    BLOCK_ALL_ROUTE,
};

/// From this many objects on, [`MeshState::new`] prepares on two threads.
const PARALLEL_OBJECTS: usize = 2048;

/// The name of the implicit gateway that means "every sidecar".
pub const MESH_GATEWAY: &str = "mesh";

/// Istio's root configuration namespace (`meshConfig.rootNamespace`, default
/// `istio-system`): its selector-less Sidecar applies to namespaces without their own,
/// and its DestinationRules are looked up last.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Everything the control plane knows, from which each proxy's tables are built.
pub struct MeshState<'a> {
    /// The applied objects: Services, ServiceEntries, Gateways, VirtualServices, DestinationRules.
    pub store: &'a Store,
    /// The install options: outbound traffic policy, enabled gateways.
    pub mesh: &'a MeshOptions,
    /// The service registry built from `store` and the installed gateways.
    pub registry: Registry,
    /// Every running replica, gateways included.
    pub workloads: &'a [WorkloadInstance],
    /// VirtualServices, oldest first (Istio orders by creation time), with what every
    /// proxy's build reads of them worked out once.
    virtual_services: Vec<VsInfo<'a>>,
    /// Position of each VirtualService in `virtual_services`, by namespace and name.
    vs_index: HashMap<(&'a str, &'a str), usize>,
    /// DestinationRules, oldest first, each with its host resolved in its namespace.
    destination_rules: Vec<(&'a Resource, &'a DestinationRuleSpec, String)>,
    /// Sidecar resources, oldest first.
    sidecars: Vec<(&'a Resource, &'a SidecarSpec)>,
}

/// The VirtualServices of the store, oldest first (Istio orders by creation time),
/// prepared for the table builds.
fn prepare_virtual_services(store: &Store) -> Vec<VsInfo<'_>> {
    let mut by_age: Vec<(&Resource, u64)> =
        store.of_kind_with_creation(Kind::VirtualService).collect();
    by_age.sort_by_key(|(_, created)| *created);
    by_age
        .into_iter()
        .filter_map(|(r, _)| match &r.spec {
            Spec::VirtualService(vs) => {
                let ns = r.namespace();
                Some(VsInfo {
                    res: r,
                    spec: vs,
                    id: format!("{ns}/{}", r.metadata.name),
                    gateways: if vs.gateways.is_empty() {
                        Vec::new()
                    } else {
                        effective_gateways(&vs.gateways, ns)
                    },
                    export_to: ExportTo::parse(&vs.export_to, ns),
                    hosts: vs
                        .hosts
                        .iter()
                        .map(|h| resolve_short_name_cow(h, ns))
                        .collect(),
                    rules: effective_rules(store, r, vs),
                })
            }
            _ => None,
        })
        .collect()
}

impl VsInfo<'_> {
    /// Whether the VirtualService applies at `gateway` (see [`binds_to`]).
    fn binds_to(&self, gateway: &str) -> bool {
        if self.gateways.is_empty() {
            gateway == MESH_GATEWAY
        } else {
            self.gateways.iter().any(|g| g == gateway)
        }
    }
}

/// A VirtualService as the table builds read it, prepared once per [`MeshState`].
struct VsInfo<'a> {
    /// The object.
    res: &'a Resource,
    /// Its spec.
    spec: &'a VirtualServiceSpec,
    /// `namespace/name`, as routes name their VirtualService.
    id: String,
    /// Its top-level `gateways`, resolved to `namespace/name`; empty when it names
    /// none (then it is bound to `mesh`).
    gateways: Vec<String>,
    /// Its `exportTo`.
    export_to: ExportTo,
    /// Its `hosts`, resolved to FQDNs in its namespace.
    hosts: Vec<Cow<'a, str>>,
    /// Its HTTP rules with delegates merged in.
    rules: Vec<EffectiveRule<'a>>,
}

impl<'a> MeshState<'a> {
    /// Prepares the registry and ordering shared by every proxy's build.
    pub fn new(store: &'a Store, mesh: &'a MeshOptions, workloads: &'a [WorkloadInstance]) -> Self {
        // The registry and the VirtualServices are prepared independently: side by
        // side on two threads when the store is large.
        let (registry, virtual_services) = if store.len() >= PARALLEL_OBJECTS {
            std::thread::scope(|scope| {
                let registry = scope.spawn(|| Registry::build(store, mesh));
                let virtual_services = prepare_virtual_services(store);
                match registry.join() {
                    Ok(registry) => (registry, virtual_services),
                    // A panic while building is a bug: let it surface as it would
                    // have without the thread.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            })
        } else {
            (
                Registry::build(store, mesh),
                prepare_virtual_services(store),
            )
        };
        let vs_index = virtual_services
            .iter()
            .enumerate()
            .map(|(i, v)| ((v.res.namespace(), v.res.metadata.name.as_str()), i))
            .collect();
        let mut destination_rules: Vec<(&Resource, &DestinationRuleSpec, u64)> = store
            .of_kind_with_creation(Kind::DestinationRule)
            .filter_map(|(r, created)| match &r.spec {
                Spec::DestinationRule(dr) => Some((r, &**dr, created)),
                _ => None,
            })
            .collect();
        destination_rules.sort_by_key(|(_, _, created)| *created);
        let destination_rules = destination_rules
            .into_iter()
            .map(|(r, dr, _)| (r, dr, resolve_short_name(&dr.host, r.namespace())))
            .collect();
        let mut sidecars: Vec<(&Resource, &SidecarSpec, u64)> = store
            .of_kind_with_creation(Kind::Sidecar)
            .filter_map(|(r, created)| match &r.spec {
                Spec::Sidecar(s) => Some((r, s, created)),
                _ => None,
            })
            .collect();
        sidecars.sort_by_key(|(_, _, created)| *created);
        MeshState {
            store,
            mesh,
            registry,
            workloads,
            virtual_services,
            vs_index,
            destination_rules,
            sidecars: sidecars.into_iter().map(|(r, s, _)| (r, s)).collect(),
        }
    }

    /// Every VirtualService, oldest first.
    pub(crate) fn virtual_services_by_age(&self) -> impl Iterator<Item = &'a Resource> + '_ {
        self.virtual_services.iter().map(|v| v.res)
    }

    /// The prepared form of a VirtualService of the store.
    fn vs_info(&self, vs_res: &Resource) -> Option<&VsInfo<'a>> {
        self.vs_index
            .get(&(vs_res.namespace(), vs_res.metadata.name.as_str()))
            .map(|&i| &self.virtual_services[i])
    }

    /// The Sidecar resource that configures `workload`'s sidecar, as Istio picks it
    /// (pilot/pkg/model/push_context.go getSidecarScope): in the workload's namespace,
    /// the oldest Sidecar whose `workloadSelector` matches its labels, else the
    /// namespace's selector-less Sidecar, else the selector-less Sidecar of the root
    /// namespace (`istio-system`). Gateways never use one.
    pub fn sidecar_for(&self, workload: &WorkloadInstance) -> Option<&'a Resource> {
        let sidecars = &self.sidecars;
        let ns = workload.namespace.as_str();
        let in_ns = || sidecars.iter().filter(|(r, _)| r.namespace() == ns);
        in_ns()
            .find(|(_, s)| {
                s.workload_selector.as_ref().is_some_and(|ws| {
                    ws.labels
                        .iter()
                        .all(|(k, v)| workload.labels.get(k) == Some(v))
                })
            })
            .or_else(|| in_ns().find(|(_, s)| s.workload_selector.is_none()))
            .or_else(|| {
                sidecars
                    .iter()
                    .find(|(r, s)| r.namespace() == ROOT_NAMESPACE && s.workload_selector.is_none())
            })
            .map(|(r, _)| *r)
    }

    /// The outbound traffic policy of `workload`'s sidecar: its Sidecar's
    /// `outboundTrafficPolicy.mode` when it has one, else the mesh's.
    pub fn outbound_policy_for(&self, workload: &WorkloadInstance) -> OutboundPolicy {
        self.sidecar_scope(workload).outbound_policy
    }

    /// Where `workload`'s outbound traffic policy comes from, when a Sidecar sets it:
    /// `Sidecar NS/NAME's outboundTrafficPolicy.mode`; `None` when the mesh's applies.
    pub fn outbound_policy_origin(&self, workload: &WorkloadInstance) -> Option<String> {
        let r = self.sidecar_for(workload)?;
        match &r.spec {
            Spec::Sidecar(s) if s.outbound_traffic_policy.is_some() => Some(format!(
                "Sidecar {}/{}'s outboundTrafficPolicy.mode",
                r.namespace(),
                r.metadata.name
            )),
            _ => None,
        }
    }

    /// Why a sidecar does not see `host` (a service of the registry), in words; `None`
    /// when it does. For `trace`: a service hidden by `exportTo` or by the egress hosts
    /// of the workload's Sidecar is handled like an unknown host.
    pub fn hidden_reason(
        &self,
        workload: &WorkloadInstance,
        host: &str,
        port: u32,
    ) -> Option<String> {
        let ns = workload.namespace.as_str();
        let first = self.registry.definitions(host).next()?;
        let Some(svc) = self.registry.visible(host, ns) else {
            return Some(format!(
                "{host} is {} but it is not exported to namespace {ns} (exportTo)",
                first.defined_by
            ));
        };
        let scope = self.sidecar_scope(workload);
        let sidecar = scope
            .sidecar
            .map(|r| format!("Sidecar {}/{}", r.namespace(), r.metadata.name))
            .unwrap_or_default();
        match scope.listener_index(port).map(|i| &scope.listeners[i]) {
            None => Some(format!(
                "{host} is {}, but {sidecar} has no egress listener for port {port}",
                svc.defined_by
            )),
            Some(l) if !l.imports_service(svc) => Some(format!(
                "{host} is {}, but the egress hosts of {sidecar} ({}) do not include it",
                svc.defined_by,
                l.describe_hosts()
            )),
            Some(_) => None,
        }
    }

    /// What the Sidecar resource of a workload lets its sidecar see (Istio's
    /// SidecarScope, pilot/pkg/model/sidecar.go ConvertToSidecarScope): without one,
    /// one egress listener importing `*/*` and the mesh's outbound traffic policy.
    fn sidecar_scope(&self, workload: &WorkloadInstance) -> SidecarScope<'a> {
        let sidecar = self.sidecar_for(workload);
        let spec = sidecar.and_then(|r| match &r.spec {
            Spec::Sidecar(s) => Some(s),
            _ => None,
        });
        let ns = workload.namespace.as_str();
        let listeners = match spec {
            // "If egress not set, setup a default listener" importing */*.
            Some(s) if !s.egress.is_empty() => s
                .egress
                .iter()
                .map(|e| EgressScope::from_listener(e, ns))
                .collect(),
            _ => vec![EgressScope::everything()],
        };
        let outbound_policy = match spec.and_then(|s| s.outbound_traffic_policy.as_ref()) {
            // The Sidecar's policy replaces the mesh's; its `mode` defaults to the proto
            // enum's zero value, REGISTRY_ONLY.
            Some(p) if p.mode.as_deref() == Some("ALLOW_ANY") => OutboundPolicy::AllowAny,
            Some(_) => OutboundPolicy::RegistryOnly,
            None => self.mesh.outbound_policy,
        };
        SidecarScope {
            sidecar,
            listeners,
            outbound_policy,
        }
    }

    /// The VirtualServices bound to `gateway` (`mesh` or `namespace/name`) that a
    /// proxy in `proxy_ns` sees, in Istio's order (push_context.go
    /// VirtualServicesForGateway): those exported to `proxy_ns` as their own namespace
    /// (`.`), then those exported to it by name, then the public ones, each group
    /// oldest first. Delegates (no hosts) are never used on their own.
    fn virtual_services_for(&self, proxy_ns: &str, gateway: &str) -> Vec<&'a Resource> {
        self.vs_infos_for(proxy_ns, gateway)
            .into_iter()
            .map(|v| v.res)
            .collect()
    }

    /// [`MeshState::virtual_services_for`], in their prepared form.
    fn vs_infos_for(&self, proxy_ns: &str, gateway: &str) -> Vec<&VsInfo<'a>> {
        let (mut private, mut exported, mut public) = (Vec::new(), Vec::new(), Vec::new());
        for v in &self.virtual_services {
            if v.spec.hosts.is_empty() || !v.binds_to(gateway) {
                continue;
            }
            match &v.export_to {
                ExportTo::Public => public.push(v),
                ExportTo::Nobody => {}
                ExportTo::Namespaces(set) if set.contains(proxy_ns) => {
                    if v.res.namespace() == proxy_ns {
                        private.push(v);
                    } else {
                        exported.push(v);
                    }
                }
                ExportTo::Namespaces(_) => {}
            }
        }
        private.into_iter().chain(exported).chain(public).collect()
    }

    /// The Kubernetes Service names cluster DNS resolves for a pod in `ns`, each with
    /// its ports' endpoints (what kube-proxy would pick from), whatever the pod's
    /// Sidecar and exportTo let its sidecar see.
    fn cluster_dns(&self, ns: &str) -> HashMap<String, BTreeMap<u32, Vec<SocketAddr>>> {
        let mut out = HashMap::new();
        let all = self.registry.services.values().chain(&self.registry.others);
        for svc in all {
            let ServiceSource::Kubernetes { selector } = &svc.source else {
                continue;
            };
            let Some(short) = svc
                .hostname
                .strip_suffix(&format!(".{}.{DOMAIN_SUFFIX}", svc.namespace))
            else {
                continue;
            };
            let ports: BTreeMap<u32, Vec<SocketAddr>> = svc
                .ports
                .iter()
                .map(|p| {
                    let addrs = self
                        .workloads
                        .iter()
                        .filter(|w| w.namespace == svc.namespace && selects(selector, &w.labels))
                        .filter_map(|w| {
                            let target = match &p.target {
                                TargetPort::Number(n) => Some(*n),
                                TargetPort::Name(n) => w.named_ports.get(n).copied(),
                            };
                            target.and_then(|t| w.inbound.get(&t)).copied()
                        })
                        .collect();
                    (p.port, addrs)
                })
                .collect();
            let mut names = vec![
                format!("{short}.{}", svc.namespace),
                format!("{short}.{}.svc", svc.namespace),
                svc.hostname.clone(),
            ];
            if svc.namespace == ns {
                names.push(short.to_string());
            }
            for n in names {
                out.insert(n, ports.clone());
            }
        }
        out
    }

    /// The tables of the sidecar beside `workload`: per port, a virtual host for each
    /// service the workload's Sidecar scope imports (all services exported to its
    /// namespace when no Sidecar applies), VirtualServices bound to the mesh replacing
    /// their default routes, and the catch-all of the scope's outbound traffic policy.
    pub fn sidecar_tables(&self, workload: &WorkloadInstance) -> ProxyTables {
        let scope = self.sidecar_scope(workload);
        let mut builder = TableBuilder::new(self, workload);
        builder.sidecar_resource = scope.sidecar.is_some();
        let ns = workload.namespace.as_str();
        // Services exported to the proxy's namespace (push_context.go
        // servicesExportedToNamespace), one per host name, and VirtualServices bound to
        // the mesh that it sees.
        let visible: Vec<&ServiceInfo> = self.registry.visible_services(ns).collect();
        let virtual_services = self.vs_infos_for(ns, MESH_GATEWAY);
        // About one cluster per service.
        builder.clusters.reserve(visible.len());
        // Per port: virtual hosts keyed by host name. VirtualServices bound to the mesh
        // replace the default route of their hosts (the first to do so claims the host).
        let mut per_port: BTreeMap<u32, BTreeMap<Cow<'_, str>, SidecarHost<'_>>> = BTreeMap::new();
        for (index, listener) in scope.listeners.iter().enumerate() {
            // The route table of a port is built from the egress listener that port
            // selects (sidecar.go GetEgressListenerForRDS), with only what it imports.
            let serves = |port: u32| {
                scope.listener_index(port) == Some(index) && listener.port.is_none_or(|p| p == port)
            };
            let services: Vec<&ServiceInfo> = visible
                .iter()
                .copied()
                .filter(|s| listener.imports_service(s))
                .collect();
            // Exact VirtualService hosts find their service by name, not by a scan of
            // every service (which made compiling N VirtualServices over N services
            // quadratic); only wildcard hosts scan.
            let by_name: HashMap<&str, &ServiceInfo> =
                services.iter().map(|s| (s.hostname.as_str(), *s)).collect();
            for svc in &services {
                for port in svc
                    .ports
                    .iter()
                    .filter(|p| p.protocol == Protocol::Http && serves(p.port))
                {
                    let cluster = builder.cluster_for(svc, port.port, "");
                    per_port.entry(port.port).or_default().insert(
                        Cow::Borrowed(svc.hostname.as_str()),
                        SidecarHost::Service {
                            svc,
                            port: port.port,
                            cluster,
                            routes: None,
                        },
                    );
                }
            }
            for info in &virtual_services {
                let (vs_res, vs) = (info.res, info.spec);
                if !listener.imports_hosts(&info.hosts, vs_res.namespace()) {
                    continue;
                }
                for fqdn in &info.hosts {
                    let fqdn: &str = fqdn;
                    let single: [&ServiceInfo; 1];
                    let wildcard: Vec<&ServiceInfo>;
                    let matching: &[&ServiceInfo] = if fqdn.starts_with('*') {
                        wildcard = services
                            .iter()
                            .copied()
                            .filter(|s| host_matches(fqdn, &s.hostname))
                            .collect();
                        &wildcard
                    } else {
                        match by_name.get(fqdn) {
                            Some(svc) => {
                                single = [*svc];
                                &single
                            }
                            None => &[],
                        }
                    };
                    if matching.is_empty() {
                        // A host that is no service: Istio gives it a virtual host on port 80
                        // only ("to affect traffic to hosts outside of the service registry
                        // on port 80", pilot/pkg/networking/core/route).
                        let port = 80;
                        let claimed = per_port
                            .get(&port)
                            .and_then(|m| m.get(fqdn))
                            .is_some_and(SidecarHost::claimed);
                        if !serves(port) || claimed {
                            continue;
                        }
                        let routes = builder.http_routes(vs_res, vs, MESH_GATEWAY, port);
                        if routes.is_empty() {
                            continue; // no rule applies on this port: no virtual host
                        }
                        let domains = vec![fqdn.to_string(), format!("{fqdn}:{port}")];
                        per_port.entry(port).or_default().insert(
                            Cow::Owned(fqdn.to_string()),
                            SidecarHost::Other(VirtualHost {
                                name: format!("{fqdn}:{port}"),
                                domains,
                                routes,
                                catch_all: None,
                            }),
                        );
                        continue;
                    }
                    for svc in matching {
                        for port in svc
                            .ports
                            .iter()
                            .filter(|p| p.protocol == Protocol::Http && serves(p.port))
                        {
                            let entry = per_port
                                .get_mut(&port.port)
                                .and_then(|m| m.get_mut(svc.hostname.as_str()));
                            if entry.as_deref().is_some_and(SidecarHost::claimed) {
                                continue; // an older VirtualService already owns this host
                            }
                            let routes = builder.http_routes(vs_res, vs, MESH_GATEWAY, port.port);
                            if routes.is_empty() {
                                // No rule applies on this port: Istio emits no virtual host for
                                // this VirtualService, so the default route stays and a later
                                // VirtualService may still claim the host.
                                continue;
                            }
                            if let Some(SidecarHost::Service { routes: slot, .. }) = entry {
                                *slot = Some(routes);
                            }
                        }
                    }
                }
            }
        }
        let catch_all = match scope.outbound_policy {
            OutboundPolicy::AllowAny => CatchAll::AllowAny,
            OutboundPolicy::RegistryOnly => CatchAll::BlockAll,
        };
        let mut route_tables = BTreeMap::new();
        for (port, hosts) in per_port {
            let mut vhosts: Vec<VirtualHost> = Vec::with_capacity(hosts.len() + 1);
            vhosts.extend(hosts.into_values().map(|h| h.into_virtual_host(ns)));
            vhosts.push(catch_all_vhost(catch_all));
            route_tables.insert(port, RouteTable::new(port.to_string(), vhosts));
        }
        // TLS, HTTPS and TCP ports (l4.rs): the services and VirtualServices that an
        // egress listener of the scope imports.
        let l4_services: Vec<&ServiceInfo> = visible
            .iter()
            .copied()
            .filter(|s| scope.listeners.iter().any(|l| l.imports_service(s)))
            .collect();
        // The VirtualServices matter only to services with a port that is not HTTP.
        let any_l4_port = l4_services
            .iter()
            .any(|s| s.ports.iter().any(|p| p.protocol != Protocol::Http));
        let l4_virtual_services: Vec<&Resource> = if any_l4_port {
            virtual_services
                .iter()
                .filter(|v| {
                    scope
                        .listeners
                        .iter()
                        .any(|l| l.imports_hosts(&v.hosts, v.res.namespace()))
                })
                .map(|v| v.res)
                .collect()
        } else {
            Vec::new()
        };
        let l4 = crate::l4::sidecar_l4(&mut builder, &l4_services, &l4_virtual_services);
        ProxyTables {
            proxy: workload.name.clone(),
            namespace: workload.namespace.clone(),
            kind: ProxyKind::Sidecar,
            outbound_policy: scope.outbound_policy,
            route_tables,
            l4,
            clusters: builder.finish(),
            gateway_ports: Vec::new(),
            cluster_dns: self.cluster_dns(ns),
        }
    }

    /// A route table with only the catch-all virtual host, for sidecar traffic to a
    /// port that no service uses.
    pub fn catch_all_table(&self, port: u32) -> RouteTable {
        let catch_all = match self.mesh.outbound_policy {
            OutboundPolicy::AllowAny => CatchAll::AllowAny,
            OutboundPolicy::RegistryOnly => CatchAll::BlockAll,
        };
        RouteTable::new(port.to_string(), vec![catch_all_vhost(catch_all)])
    }

    /// The tables of a gateway pod: the Gateways that select it and the
    /// VirtualServices bound to those Gateways.
    pub fn gateway_tables(
        &self,
        workload: &WorkloadInstance,
        service_ports: &[(u32, u32)],
    ) -> ProxyTables {
        let mut builder = TableBuilder::new(self, workload);
        // (port) -> host -> vhost; hosts merge routes across VirtualServices, as
        // Istio's gateway route builder merges duplicate virtual hosts.
        let mut per_port: BTreeMap<u32, Vec<VirtualHost>> = BTreeMap::new();
        let mut https_redirects: Vec<(u32, String)> = Vec::new();
        let mut gateways: Vec<&Resource> = self
            .store
            .of_kind(Kind::Gateway)
            .filter(|g| match &g.spec {
                // Istio (mergeGateways): a Gateway without selector "applies to all
                // workloads asking for the gateway".
                Spec::Gateway(spec) => {
                    spec.selector.is_empty() || selects(&spec.selector, &workload.labels)
                }
                _ => false,
            })
            .collect();
        gateways.sort_by_key(|g| self.store.creation_index(&g.key()));
        for gw_res in gateways {
            let Spec::Gateway(gw) = &gw_res.spec else {
                continue;
            };
            let gw_id = format!("{}/{}", gw_res.namespace(), gw_res.metadata.name);
            for server in &gw.servers {
                let protocol = Protocol::istio(&server.port.protocol, &server.port.name);
                if protocol != Protocol::Http {
                    continue; // TLS PASSTHROUGH and TCP servers: see l4.rs
                }
                let port = server.port.number;
                if server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true) {
                    for h in &server.hosts {
                        let host = h.split_once('/').map_or(h.as_str(), |(_, h)| h);
                        https_redirects.push((port, host.to_ascii_lowercase()));
                    }
                }
                let vhosts = per_port.entry(port).or_default();
                // The VirtualServices bound to this Gateway that are exported to the
                // gateway pod's namespace.
                for vs_res in self.virtual_services_for(&workload.namespace, &gw_id) {
                    let Spec::VirtualService(vs) = &vs_res.spec else {
                        continue;
                    };
                    let vs_ns = vs_res.namespace();
                    for vs_host in &vs.hosts {
                        // Istio resolves VirtualService hosts to FQDNs in the VirtualService's
                        // namespace before they meet the Gateway's hosts.
                        let vs_host = resolve_short_name(vs_host, vs_ns);
                        for server_host in &server.hosts {
                            let Some(host) = gateway_host_intersection(
                                server_host,
                                gw_res.namespace(),
                                &vs_host,
                                vs_ns,
                            ) else {
                                continue;
                            };
                            let routes = builder.http_routes(vs_res, vs, &gw_id, port);
                            if routes.is_empty() {
                                continue;
                            }
                            let name = format!("{host}:{port}");
                            match vhosts.iter_mut().find(|v| v.name == name) {
                                Some(existing) => {
                                    let already = existing.routes.iter().any(|r| {
                                        r.source.as_ref().map(|s| &s.virtual_service)
                                            == routes[0].source.as_ref().map(|s| &s.virtual_service)
                                    });
                                    if !already {
                                        existing.routes.extend(routes);
                                    }
                                }
                                None => {
                                    let domains = if host == "*" {
                                        vec!["*".to_string()]
                                    } else {
                                        vec![host.clone(), format!("{host}:{port}")]
                                    };
                                    vhosts.push(VirtualHost {
                                        name,
                                        domains,
                                        routes,
                                        catch_all: None,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        // `tls.httpsRedirect`: Envoy's `require_tls: ALL` on the server's hosts, a 301 to
        // https for every request (virtual hosts made for hosts no VirtualService covers).
        for (port, host) in https_redirects {
            let vhosts = per_port.entry(port).or_default();
            let name = format!("{host}:{port}");
            let redirect = Route {
                name: "".into(),
                matcher: RouteMatch::default(),
                action: RouteAction::Redirect(Redirect {
                    scheme: Some("https".into()),
                    code: 301,
                    ..Default::default()
                }),
                source: None,
            };
            match vhosts.iter_mut().find(|v| v.name == name) {
                Some(v) => v.routes = vec![redirect],
                None => {
                    let domains = if host == "*" {
                        vec!["*".to_string()]
                    } else {
                        vec![host.clone(), format!("{host}:{port}")]
                    };
                    vhosts.push(VirtualHost {
                        name,
                        domains,
                        routes: vec![redirect],
                        catch_all: None,
                    });
                }
            }
        }
        let route_tables = per_port
            .into_iter()
            .map(|(port, mut vhosts)| {
                for vh in &mut vhosts {
                    // Istio's SortVHostRoutes: catch-all routes of merged virtual hosts go last.
                    let routes = std::mem::take(&mut vh.routes);
                    let (catch_all, rest): (Vec<Route>, Vec<Route>) =
                        routes.into_iter().partition(|r| is_catch_all(&r.matcher));
                    vh.routes = rest.into_iter().chain(catch_all).collect();
                }
                (port, RouteTable::new(format!("http.{port}"), vhosts))
            })
            .collect();
        // TLS PASSTHROUGH and TCP servers, and VirtualService `tls` / `tcp` rules (l4.rs).
        let l4 = crate::l4::gateway_l4(&mut builder);
        ProxyTables {
            proxy: workload.name.clone(),
            namespace: workload.namespace.clone(),
            kind: ProxyKind::Gateway,
            outbound_policy: self.mesh.outbound_policy,
            route_tables,
            l4,
            clusters: builder.finish(),
            gateway_ports: service_ports.to_vec(),
            cluster_dns: HashMap::new(),
        }
    }

    /// The DestinationRule for a host as a client in `client_ns` (with these labels)
    /// sees it, Istio's lookup order (push_context.go destinationRule): the rules of
    /// the client's namespace (`istio-system`'s private ones for a client there),
    /// then those the service's namespace exports to the client, then those the root
    /// namespace exports to it. In each, an exact host beats the longest wildcard
    /// (MostSpecificHostMatch), and the oldest rule wins a tie. A rule with a
    /// `workloadSelector` stays private to its namespace and applies only to the
    /// workloads it selects.
    fn destination_rule(
        &self,
        fqdn: &str,
        client_ns: &str,
        client_labels: &meshbox_config::istio::Labels,
        service_ns: &str,
    ) -> Option<&'a DestinationRuleSpec> {
        struct Candidate<'r> {
            ns: &'r str,
            host: String,
            export: ExportTo,
            selected: bool,
            spec: &'r DestinationRuleSpec,
        }
        if self.destination_rules.is_empty() {
            return None;
        }
        let candidates: Vec<Candidate<'a>> = self
            .destination_rules
            .iter()
            .filter_map(|(r, dr, host)| {
                let (r, dr): (&'a Resource, &'a DestinationRuleSpec) = (r, dr);
                if !host_matches(host, fqdn) {
                    return None;
                }
                let host = host.clone();
                let (export, selected) = match &dr.workload_selector {
                    None => (ExportTo::parse(&dr.export_to, r.namespace()), true),
                    Some(ws) => (
                        ExportTo::parse(&["."], r.namespace()),
                        ws.match_labels
                            .iter()
                            .all(|(k, v)| client_labels.get(k) == Some(v)),
                    ),
                };
                Some(Candidate {
                    ns: r.namespace(),
                    host,
                    export,
                    selected,
                    spec: dr,
                })
            })
            .collect();
        // The most specific host of a pool: the exact host, else the longest wildcard.
        let most_specific = |pool: &[&Candidate<'a>]| -> Option<String> {
            if pool.iter().any(|c| c.host == fqdn) {
                return Some(fqdn.to_string());
            }
            pool.iter()
                .map(|c| &c.host)
                .max_by_key(|h| h.len())
                .cloned()
        };
        // 1. The client's namespace: every rule there that its own namespace sees
        //    (in the root namespace, its private ones only).
        let local: Vec<&Candidate> = candidates
            .iter()
            .filter(|c| c.ns == client_ns && c.selected)
            .filter(|c| {
                if client_ns == ROOT_NAMESPACE {
                    c.export.private_to(client_ns)
                } else {
                    c.export.visible_to(client_ns)
                }
            })
            .collect();
        if let Some(host) = most_specific(&local) {
            return local.iter().find(|c| c.host == host).map(|c| c.spec);
        }
        // 2. Then rules the service's namespace exports (not private-only), 3. then the
        //    root namespace's: the most specific host first, then only the rules for it
        //    that are exported to the client (getExportedDestinationRuleFromNamespace).
        for ns in [service_ns, ROOT_NAMESPACE] {
            let pool: Vec<&Candidate> = candidates
                .iter()
                .filter(|c| c.ns == ns && !c.export.private_to(ns))
                .collect();
            if let Some(host) = most_specific(&pool) {
                if let Some(c) = pool
                    .iter()
                    .find(|c| c.host == host && c.export.visible_to(client_ns))
                {
                    return Some(c.spec);
                }
            }
        }
        None
    }
}

/// A virtual host of a sidecar's route table while it is built.
enum SidecarHost<'r> {
    /// A service's virtual host on one of its ports: the default route to `cluster`
    /// until a VirtualService claims the host with its `routes`.
    Service {
        svc: &'r ServiceInfo,
        port: u32,
        cluster: String,
        routes: Option<Vec<Route>>,
    },
    /// The virtual host a VirtualService made for a host that is no service.
    Other(VirtualHost),
}

impl SidecarHost<'_> {
    /// Whether a VirtualService owns the host.
    fn claimed(&self) -> bool {
        match self {
            SidecarHost::Service { routes, .. } => routes.is_some(),
            SidecarHost::Other(_) => true,
        }
    }

    /// The finished virtual host, for a sidecar in `client_ns`.
    fn into_virtual_host(self, client_ns: &str) -> VirtualHost {
        match self {
            SidecarHost::Service {
                svc,
                port,
                cluster,
                routes,
            } => VirtualHost {
                name: format!("{}:{port}", svc.hostname),
                domains: service_domains(svc, port, client_ns),
                routes: routes.unwrap_or_else(|| vec![default_route(cluster)]),
                catch_all: None,
            },
            SidecarHost::Other(vh) => vh,
        }
    }
}

/// The route of a service's virtual host that no VirtualService claims.
fn default_route(cluster: String) -> Route {
    Route {
        name: "default".into(),
        matcher: RouteMatch::default(),
        action: RouteAction::Forward(Box::new(ForwardAction {
            clusters: vec![WeightedCluster {
                cluster,
                weight: 100,
                ..Default::default()
            }],
            total_weight: 100,
            // The default route carries Istio's default retry policy.
            ..Default::default()
        })),
        source: None,
    }
}

fn catch_all_vhost(catch_all: CatchAll) -> VirtualHost {
    let (name, action) = match catch_all {
        CatchAll::AllowAny => (ALLOW_ANY_ROUTE, RouteAction::Passthrough),
        // Istio's REGISTRY_ONLY catch-all answers 502 with no body
        // (pilot/pkg/networking/core: BlackHole route for the "block_all" virtual host).
        CatchAll::BlockAll => (
            BLOCK_ALL_ROUTE,
            RouteAction::DirectResponse {
                status: 502,
                body: String::new(),
            },
        ),
    };
    VirtualHost {
        name: name.to_string(),
        domains: vec!["*".into()],
        routes: vec![Route {
            name: name.into(),
            matcher: RouteMatch::default(),
            action,
            source: None,
        }],
        catch_all: Some(catch_all),
    }
}

/// The domains a sidecar's virtual host answers for a service, as Istio generates
/// them (generateAltVirtualHostsForKubernetesService): `name` only from the same
/// namespace, `name.ns`, `name.ns.svc` and the FQDN, each also with `:port`.
fn service_domains(svc: &ServiceInfo, port: u32, client_ns: &str) -> Vec<String> {
    // `short` when the host name is `short.NAMESPACE.svc.cluster.local`.
    let short = svc
        .hostname
        .strip_suffix(DOMAIN_SUFFIX)
        .and_then(|h| h.strip_suffix('.'))
        .and_then(|h| h.strip_suffix(svc.namespace.as_str()))
        .and_then(|h| h.strip_suffix('.'));
    let mut domains = Vec::with_capacity(if short.is_some() { 8 } else { 2 });
    let mut push = |name: String| {
        domains.push(format!("{name}:{port}"));
        domains.push(name);
    };
    if let Some(short) = short {
        if svc.namespace == client_ns {
            push(short.to_string());
        }
        push(format!("{short}.{}", svc.namespace));
        push(format!("{short}.{}.svc", svc.namespace));
    }
    push(svc.hostname.clone());
    domains
}

/// Whether a VirtualService applies at `gateway` (`mesh` or `namespace/name`). Istio
/// indexes VirtualServices by their top-level `gateways` only; a rule's
/// `match.gateways` then narrows, never widens, where the VirtualService applies.
pub(crate) fn binds_to(vs: &VirtualServiceSpec, vs_ns: &str, gateway: &str) -> bool {
    if vs.gateways.is_empty() {
        return gateway == MESH_GATEWAY; // without building the list `[mesh]`
    }
    effective_gateways(&vs.gateways, vs_ns)
        .iter()
        .any(|g| g == gateway)
}

/// Gateway names resolved to `namespace/name`; an empty list means `mesh`.
pub(crate) fn effective_gateways(list: &[String], vs_ns: &str) -> Vec<String> {
    if list.is_empty() {
        return vec![MESH_GATEWAY.to_string()];
    }
    list.iter()
        .map(|g| {
            if g == MESH_GATEWAY || g.contains('/') {
                g.clone()
            } else {
                // `name` or `name.namespace.svc.cluster.local`-style references.
                match g.split_once('.') {
                    Some((name, rest)) => {
                        format!("{}/{name}", rest.split('.').next().unwrap_or(vs_ns))
                    }
                    None => format!("{vs_ns}/{g}"),
                }
            }
        })
        .collect()
}

/// Whether a (possibly wildcard) VirtualService host covers a registry host name.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => pattern == host,
    }
}

/// The host a gateway virtual host is built for, when a Gateway server host
/// (`[ns/]host`) and a VirtualService host overlap: the more specific of the two.
pub(crate) fn gateway_host_intersection(
    server_host: &str,
    gw_ns: &str,
    vs_host: &str,
    vs_ns: &str,
) -> Option<String> {
    let (ns_part, host_part) = match server_host.split_once('/') {
        Some((ns, h)) => (Some(ns), h),
        None => (None, server_host),
    };
    match ns_part {
        Some("*") | None => {}
        Some(".") if vs_ns == gw_ns => {}
        Some(ns) if ns == vs_ns => {}
        _ => return None,
    }
    let server = host_part.to_ascii_lowercase();
    let vs = vs_host.to_ascii_lowercase();
    if host_matches(&server, &vs) || server == vs {
        Some(vs)
    } else if host_matches(&vs, &server) {
        Some(server)
    } else {
        None
    }
}

/// Accumulates the clusters that routes refer to.
pub(crate) struct TableBuilder<'s, 'a> {
    pub(crate) state: &'s MeshState<'a>,
    /// The workload whose proxy the tables are for (source labels, namespace).
    pub(crate) proxy: &'s WorkloadInstance,
    /// A Sidecar resource configures the proxy (its scope then also holds the
    /// destinations of its VirtualServices in its own namespace).
    sidecar_resource: bool,
    clusters: FxHashMap<String, Cluster>,
}

impl<'s, 'a> TableBuilder<'s, 'a> {
    fn new(state: &'s MeshState<'a>, proxy: &'s WorkloadInstance) -> Self {
        TableBuilder {
            state,
            proxy,
            sidecar_resource: false,
            clusters: FxHashMap::default(),
        }
    }

    fn finish(self) -> FxHashMap<String, Cluster> {
        self.clusters
    }

    /// Registers the cluster for a service port (and subset) and returns its name.
    pub(crate) fn cluster_for(&mut self, svc: &ServiceInfo, port: u32, subset: &str) -> String {
        let name = outbound_cluster_name(port, subset, &svc.hostname);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let dr = self.state.destination_rule(
            &svc.hostname,
            &self.proxy.namespace,
            &self.proxy.labels,
            &svc.namespace,
        );
        let policy = ClusterPolicy::from_rule(dr, port, subset);
        let subset_labels = if subset.is_empty() {
            None
        } else {
            match dr.and_then(|dr| dr.subsets.iter().find(|s| s.name == subset)) {
                Some(s) => Some(s.labels.clone()),
                // An undefined subset has no cluster: requests get 503 NC, as in Istio.
                None => return name,
            }
        };
        let Some(service_port) = svc.port(port) else {
            return name;
        };
        let endpoints = match &svc.source {
            ServiceSource::Kubernetes { selector } => {
                let mut addrs: Vec<SocketAddr> = Vec::new();
                for w in self.state.workloads {
                    if w.namespace != svc.namespace || !selects(selector, &w.labels) {
                        continue;
                    }
                    if let Some(labels) = &subset_labels {
                        if !labels.iter().all(|(k, v)| w.labels.get(k) == Some(v)) {
                            continue;
                        }
                    }
                    let target = match &service_port.target {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(n) => w.named_ports.get(n).copied(),
                    };
                    if let Some(addr) = target.and_then(|t| w.inbound.get(&t)) {
                        addrs.push(*addr);
                    }
                }
                ClusterEndpoints::Static(addrs)
            }
            ServiceSource::External {
                resolution,
                endpoints,
                ..
            } => {
                let target = match &service_port.target {
                    TargetPort::Number(n) => *n,
                    TargetPort::Name(_) => port,
                };
                // An endpoint's `ports` entry for this port's name overrides the target.
                let port_of = |e: &crate::registry::ExternalEndpoint| {
                    let p = e.ports.get(&service_port.name).copied().unwrap_or(target);
                    u16::try_from(p).unwrap_or(0)
                };
                let target = u16::try_from(target).unwrap_or(0);
                match resolution {
                    Resolution::None => ClusterEndpoints::OriginalDestination,
                    Resolution::Static => ClusterEndpoints::Static(
                        endpoints
                            .iter()
                            .filter_map(|e| {
                                let ip = e.address.parse::<std::net::IpAddr>().ok()?;
                                Some(SocketAddr::new(ip, port_of(e)))
                            })
                            .collect(),
                    ),
                    Resolution::Dns | Resolution::DnsRoundRobin => {
                        if endpoints.is_empty() {
                            ClusterEndpoints::Dns(vec![(svc.hostname.clone(), target)])
                        } else {
                            ClusterEndpoints::Dns(
                                endpoints
                                    .iter()
                                    .map(|e| (e.address.clone(), port_of(e)))
                                    .collect(),
                            )
                        }
                    }
                }
            }
        };
        self.clusters.insert(
            name.clone(),
            Cluster::new(name.clone(), endpoints, port).with_policy(policy),
        );
        name
    }

    /// Compiles a VirtualService's HTTP rules as seen at `gateway` on `port`: one
    /// route per match condition (as Istio emits one Envoy route per match), rules
    /// whose matches all belong to other gateways or ports left out.
    fn http_routes(
        &mut self,
        vs_res: &Resource,
        vs: &VirtualServiceSpec,
        gateway: &str,
        port: u32,
    ) -> Vec<Route> {
        let vs_ns = vs_res.namespace();
        let proxy = self.proxy;
        let state = self.state;
        let info = state.vs_info(vs_res);
        let vs_id = match info {
            Some(info) => info.id.clone(),
            None => format!("{vs_ns}/{}", vs_res.metadata.name),
        };
        // Whether the VirtualService's own `gateways` include `gateway`.
        let top_binds = match info {
            Some(info) => info.binds_to(gateway),
            None => binds_to(vs, vs_ns, gateway),
        };
        let rules = info.map_or(&[][..], |v| v.rules.as_slice());
        // At most one route per match (one for a rule without), allocated once: most
        // VirtualServices give one or two routes, and an empty Vec would grow to four.
        let mut routes = Vec::with_capacity(
            rules
                .iter()
                .map(|e| e.rule.matches.len().max(1))
                .sum::<usize>(),
        );
        // Rules with `delegate` are replaced by the delegate's rules, merged with them.
        for effective in rules {
            let rule: &HttpRoute = &effective.rule;
            let rule_index = effective.index;
            // Istio's TranslateRoute/sourceMatchHTTP: the port must be the listener's;
            // match-level gateways, when given, decide alone; otherwise sourceLabels and
            // sourceNamespace must fit the proxy's workload.
            let applies = |m: &HttpMatchRequest| -> bool {
                if m.port.is_some_and(|p| p != port) {
                    return false;
                }
                if !m.gateways.is_empty() {
                    return effective_gateways(&m.gateways, vs_ns)
                        .iter()
                        .any(|g| g == gateway);
                }
                top_binds
                    && m.source_labels
                        .iter()
                        .all(|(k, v)| proxy.labels.get(k) == Some(v))
                    && m.source_namespace
                        .as_deref()
                        .is_none_or(|ns| ns == proxy.namespace)
            };
            let conditions: Vec<(Option<usize>, Option<&HttpMatchRequest>)> =
                if rule.matches.is_empty() {
                    if top_binds {
                        vec![(None, None)]
                    } else {
                        vec![]
                    }
                } else {
                    rule.matches
                        .iter()
                        .enumerate()
                        .filter(|(_, m)| applies(m))
                        .map(|(i, m)| (Some(i), Some(m)))
                        .collect()
                };
            let mut catch_all = rule.matches.is_empty();
            for (match_index, m) in conditions {
                let matcher = m.map(compile_match).unwrap_or_default();
                let action = self.action_for(rule, m, vs_ns, port);
                let last = is_catch_all(&matcher);
                routes.push(Route {
                    // Istio names the Envoy route after the rule, with `.MATCH` when the
                    // match is named too; an unnamed rule gives an empty name (`-` in logs).
                    name: match (&rule.name, m.and_then(|m| m.name.as_ref())) {
                        (Some(r), Some(mn)) => format!("{r}.{mn}"),
                        (Some(r), None) => r.clone(),
                        (None, _) => String::new(),
                    }
                    .into(),
                    matcher,
                    action,
                    source: Some(RouteSource {
                        virtual_service: vs_id.clone(),
                        rule: rule_index,
                        match_index: match_index.and_then(|i| effective.match_origin[i].0),
                        origin: vs_res.origin.clone(),
                        delegate: effective.delegate.clone().map(|d| DelegateSource {
                            match_index: match_index.and_then(|i| effective.match_origin[i].1),
                            ..d
                        }),
                    }),
                });
                if last {
                    catch_all = true;
                    break;
                }
            }
            if catch_all {
                // Istio stops at a catch-all route: "we will never go beyond this match".
                break;
            }
        }
        routes
    }

    fn action_for(
        &mut self,
        rule: &HttpRoute,
        m: Option<&HttpMatchRequest>,
        vs_ns: &str,
        listener_port: u32,
    ) -> RouteAction {
        let matched_prefix: Option<&str> = match m.and_then(|m| m.uri.as_ref()) {
            None => Some("/"),
            Some(StringMatch {
                prefix: Some(p), ..
            }) => Some(p.as_str()),
            Some(_) => None,
        };
        if let Some(dr) = &rule.direct_response {
            let body = dr
                .body
                .as_ref()
                .and_then(|b| b.string.clone())
                .unwrap_or_default();
            return RouteAction::DirectResponse {
                status: u16::try_from(dr.status).unwrap_or(500),
                body,
            };
        }
        if let Some(r) = &rule.redirect {
            return RouteAction::Redirect(Redirect::compile(r, matched_prefix, listener_port));
        }
        let mut clusters = Vec::with_capacity(rule.route.len());
        for d in &rule.route {
            let cluster = self.destination_cluster(&d.destination, vs_ns, listener_port);
            let weight = match (rule.route.len(), d.weight) {
                (1, _) => 100,
                (_, Some(w)) => u32::try_from(w).unwrap_or(0),
                (_, None) => 0,
            };
            clusters.push(WeightedCluster {
                cluster,
                weight,
                request_headers: HeaderOps::compile(
                    d.headers.as_ref().and_then(|h| h.request.as_ref()),
                ),
                response_headers: HeaderOps::compile(
                    d.headers.as_ref().and_then(|h| h.response.as_ref()),
                ),
            });
        }
        let total_weight = clusters.iter().map(|c| c.weight).sum();
        let uri_rewrite = rule
            .rewrite
            .as_ref()
            .and_then(|r| r.uri.clone())
            .map(|replacement| UriRewrite {
                matched_prefix: matched_prefix.map(str::to_string),
                replacement,
            });
        let mut mirrors: Vec<Mirror> = Vec::new();
        if let Some(dest) = &rule.mirror {
            // `mirrorPercentage`, else the old integer `mirrorPercent`, else 100%.
            let percent = rule
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(rule.mirror_percent.map(f64::from))
                .unwrap_or(100.0);
            mirrors.push(Mirror {
                cluster: self.destination_cluster(dest, vs_ns, listener_port),
                percent,
            });
        }
        for mp in &rule.mirrors {
            mirrors.push(Mirror {
                cluster: self.destination_cluster(&mp.destination, vs_ns, listener_port),
                percent: mp
                    .percentage
                    .as_ref()
                    .and_then(|p| p.value)
                    .unwrap_or(100.0),
            });
        }
        // Istio's precedence: rewrite.authority, then the rule's request header
        // `:authority`/`host`, then the only destination's (each destination's own when
        // there are several: applied per pick in the proxy).
        let authority_rewrite = rule
            .rewrite
            .as_ref()
            .and_then(|r| r.authority.clone())
            .or_else(|| {
                HeaderOps::compile(rule.headers.as_ref().and_then(|h| h.request.as_ref())).authority
            })
            .or_else(|| {
                (clusters.len() == 1)
                    .then(|| clusters[0].request_headers.authority.clone())
                    .flatten()
            });
        RouteAction::Forward(Box::new(ForwardAction {
            clusters,
            total_weight,
            uri_rewrite,
            authority_rewrite,
            timeout: rule
                .timeout
                .as_deref()
                .and_then(parse_duration)
                .filter(|d| !d.is_zero()),
            request_headers: HeaderOps::compile(
                rule.headers.as_ref().and_then(|h| h.request.as_ref()),
            ),
            response_headers: HeaderOps::compile(
                rule.headers.as_ref().and_then(|h| h.response.as_ref()),
            ),
            fault: Fault::compile(rule.fault.as_ref()),
            retry: RetryPolicy::compile(rule.retries.as_ref()),
            mirrors,
            cors: Cors::compile(rule.cors_policy.as_ref()),
            regex_rewrite: rule
                .rewrite
                .as_ref()
                .and_then(|r| r.uri_regex_rewrite.as_ref())
                .and_then(|rr| {
                    RegexRewrite::compile(
                        rr.pattern.as_deref()?,
                        rr.rewrite.as_deref().unwrap_or(""),
                    )
                }),
        }))
    }

    /// The cluster a destination names: Istio's GetDestinationCluster takes the
    /// destination's port, else the service's only port, else the listener port. A
    /// host that is no service gives a cluster name that does not exist (503 NC).
    pub(crate) fn destination_cluster(
        &mut self,
        d: &Destination,
        vs_ns: &str,
        listener_port: u32,
    ) -> String {
        let fqdn = resolve_short_name_cow(&d.host, vs_ns);
        let subset = d.subset.as_deref().unwrap_or_default();
        let port = d.port.as_ref().and_then(|p| p.number);
        match self.destination_service(&fqdn) {
            Some(svc) => {
                let port = port
                    .or_else(|| (svc.ports.len() == 1).then(|| svc.ports[0].port))
                    .unwrap_or(listener_port);
                self.cluster_for(svc, port, subset)
            }
            None => outbound_cluster_name(port.unwrap_or(listener_port), subset, &fqdn),
        }
    }

    /// The service a route's destination reaches from this proxy: the definition
    /// exported to its namespace; with a Sidecar resource, also one in its own
    /// namespace (sidecar.go adds VirtualService destinations of the config namespace
    /// without an exportTo check). `None`: no cluster, 503 NC.
    pub(crate) fn destination_service(&self, fqdn: &str) -> Option<&'s ServiceInfo> {
        let state = self.state;
        let ns = self.proxy.namespace.as_str();
        state.registry.visible(fqdn, ns).or_else(|| {
            if self.sidecar_resource {
                state.registry.definitions(fqdn).find(|s| s.namespace == ns)
            } else {
                None
            }
        })
    }
}

fn compile_string_match(m: &StringMatch, lowercase: bool) -> Option<StrMatcher> {
    let fold = |s: &String| {
        if lowercase {
            s.to_ascii_lowercase()
        } else {
            s.clone()
        }
    };
    if let Some(e) = &m.exact {
        Some(StrMatcher::Exact(fold(e)))
    } else if let Some(p) = &m.prefix {
        Some(StrMatcher::Prefix(fold(p)))
    } else if let Some(r) = &m.regex {
        // Envoy ignores `case_sensitive` for `safe_regex`: Istio's ignoreUriCase applies
        // to exact and prefix matches only.
        let pattern = format!("^(?:{r})$");
        // Validation rejects bad regexes before they reach here; a pattern that still
        // fails to compile matches nothing rather than everything.
        Some(StrMatcher::Regex(
            Regex::new(&pattern).unwrap_or_else(|_| never_matches()),
        ))
    } else {
        None
    }
}

fn never_matches() -> Regex {
    // `[^\s\S]` is a valid pattern that matches no character.
    Regex::new(r"[^\s\S]").unwrap_or_else(|_| unreachable!("constant pattern"))
}

/// Istio's canBeConvertedToPresentMatch: an empty StringMatch or the regex `*` is a
/// presence match (`None`).
fn presence_or_match(m: &StringMatch) -> Option<StrMatcher> {
    if m.regex.as_deref() == Some("*") {
        return None;
    }
    compile_string_match(m, false)
}

/// Compiles one `HTTPMatchRequest`.
pub fn compile_match(m: &HttpMatchRequest) -> RouteMatch {
    let ignore_case = m.ignore_uri_case.unwrap_or(false);
    let mut headers: Vec<HeaderCondition> = m
        .headers
        .iter()
        .map(|(name, v)| HeaderCondition {
            name: name.to_ascii_lowercase(),
            value: presence_or_match(v),
            invert: false,
        })
        .collect();
    headers.extend(m.without_headers.iter().map(|(name, v)| HeaderCondition {
        name: name.to_ascii_lowercase(),
        value: presence_or_match(v),
        invert: true,
    }));
    RouteMatch {
        uri: m
            .uri
            .as_ref()
            .and_then(|u| compile_string_match(u, ignore_case)),
        ignore_uri_case: ignore_case,
        scheme: m
            .scheme
            .as_ref()
            .and_then(|s| compile_string_match(s, false)),
        method: m
            .method
            .as_ref()
            .and_then(|s| compile_string_match(s, false)),
        authority: m
            .authority
            .as_ref()
            .and_then(|s| compile_string_match(s, false)),
        headers,
        // A presence match is an empty prefix: the parameter must be there, with any value.
        query_params: m
            .query_params
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    presence_or_match(v).unwrap_or_else(|| StrMatcher::Prefix(String::new())),
                )
            })
            .collect(),
    }
}

/// Istio's IsCatchAllRoute: path prefix `/` (or regex `.*`) with no header, method,
/// authority, scheme or query condition.
fn is_catch_all(m: &RouteMatch) -> bool {
    let any_path = match &m.uri {
        None => true,
        Some(StrMatcher::Prefix(p)) => p == "/",
        Some(StrMatcher::Regex(r)) => r.as_str() == "^(?:.*)$",
        Some(StrMatcher::Exact(_)) => false,
    };
    any_path
        && m.scheme.is_none()
        && m.method.is_none()
        && m.authority.is_none()
        && m.headers.is_empty()
        && m.query_params.is_empty()
}

// ---------------------------------------------------------------------------
// Sidecar resource: the scope of a workload's sidecar
// ---------------------------------------------------------------------------

/// What a workload's sidecar sees (Istio's SidecarScope, pilot/pkg/model/sidecar.go).
struct SidecarScope<'a> {
    /// The Sidecar resource that applies, if any.
    sidecar: Option<&'a Resource>,
    /// Its egress listeners, in order; a catch-all (no port) is last.
    listeners: Vec<EgressScope>,
    /// `outboundTrafficPolicy.mode` of the Sidecar, else the mesh's.
    outbound_policy: OutboundPolicy,
}

impl SidecarScope<'_> {
    /// The egress listener whose route table serves `port` (sidecar.go
    /// GetEgressListenerForRDS): the first catch-all listener or the first listener on
    /// that port, whichever comes first; `None` when no listener serves it (traffic
    /// then meets the outbound traffic policy's catch-all).
    fn listener_index(&self, port: u32) -> Option<usize> {
        self.listeners
            .iter()
            .position(|l| l.port.is_none_or(|p| p == port))
    }
}

/// One egress listener: the hosts it imports, by namespace.
struct EgressScope {
    /// The listener's port; `None` for the catch-all listener.
    port: Option<u32>,
    /// Imported DNS names by namespace (`*` for any namespace, `~` for none); `.` is
    /// the proxy's namespace.
    hosts: BTreeMap<String, Vec<String>>,
}

impl EgressScope {
    /// The default listener: `*/*`.
    fn everything() -> EgressScope {
        EgressScope {
            port: None,
            hosts: BTreeMap::from([("*".to_string(), vec!["*".to_string()])]),
        }
    }

    /// Reads an `egress` listener of a Sidecar applied to a proxy in `proxy_ns`
    /// (sidecar.go convertIstioListenerToWrapper: `./host` is the config namespace,
    /// which for a root-namespace Sidecar is the proxy's; a host without `/` is
    /// ignored).
    fn from_listener(l: &IstioEgressListener, proxy_ns: &str) -> EgressScope {
        let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in &l.hosts {
            let Some((ns, name)) = h.split_once('/') else {
                continue;
            };
            let ns = if ns == "." { proxy_ns } else { ns };
            hosts
                .entry(ns.to_string())
                .or_default()
                .push(name.trim_end_matches('.').to_ascii_lowercase());
        }
        EgressScope {
            // A port of 0 is a Unix domain socket listener: it serves no TCP port.
            port: l.port.as_ref().map(|p| p.number),
            hosts,
        }
    }

    /// The imported names that apply to an object of namespace `ns`: those of `ns/`
    /// and those of `*/`.
    fn hosts_for<'h>(&'h self, ns: &str) -> impl Iterator<Item = &'h String> + 'h {
        self.hosts
            .get(ns)
            .into_iter()
            .chain(self.hosts.get("*"))
            .flatten()
    }

    /// Whether the listener imports a service (sidecar.go selectServices: the
    /// service's host name is within an imported host of its namespace or of `*`).
    fn imports_service(&self, svc: &ServiceInfo) -> bool {
        self.hosts_for(&svc.namespace)
            .any(|h| host_subset_of(&svc.hostname, h))
    }

    /// Whether the listener imports a VirtualService (virtualservice.go
    /// SelectVirtualServices: one of its hosts overlaps an imported host of its
    /// namespace or of `*`).
    /// `resolved_hosts` are the VirtualService's hosts, resolved in its namespace.
    fn imports_hosts(&self, resolved_hosts: &[Cow<'_, str>], vs_ns: &str) -> bool {
        resolved_hosts
            .iter()
            .any(|vh| self.hosts_for(vs_ns).any(|h| hosts_overlap(vh, h)))
    }

    /// The imported hosts as the Sidecar spells them, for messages.
    fn describe_hosts(&self) -> String {
        self.hosts
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |n| format!("{ns}/{n}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Istio's host.Name SubsetOf: every name `host` covers is covered by `pattern`.
fn host_subset_of(host: &str, pattern: &str) -> bool {
    if host == pattern || pattern == "*" {
        return true;
    }
    match (host.strip_prefix('*'), pattern.strip_prefix('*')) {
        (_, None) => false,
        (Some(h), Some(p)) => h.ends_with(p),
        (None, Some(p)) => host.ends_with(p),
    }
}

/// Istio's host.Name Matches: the two (possibly wildcard) names share a name.
fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(x), Some(y)) => x.ends_with(y) || y.ends_with(x),
        (Some(x), None) => b.ends_with(x),
        (None, Some(y)) => a.ends_with(y),
        (None, None) => a == b,
    }
}

// ---------------------------------------------------------------------------
// VirtualService delegation
// ---------------------------------------------------------------------------

/// One HTTP rule of a VirtualService as proxies use it: its own rule, or, for a rule
/// with `delegate`, one rule of the delegate merged with it.
struct EffectiveRule<'a> {
    /// The rule (merged rules have their destinations and gateways resolved to
    /// fully qualified names in their own namespace).
    rule: Cow<'a, HttpRoute>,
    /// Index of the rule in the VirtualService's `http` list.
    index: usize,
    /// For each match of `rule`: the root rule's match index and the delegate rule's.
    match_origin: Vec<(Option<usize>, Option<usize>)>,
    /// The delegate rule it came from (`match_index` left for each route to fill).
    delegate: Option<DelegateSource>,
}

/// A VirtualService's rules with delegation resolved, as Istio's
/// mergeVirtualServicesIfNeeded (pilot/pkg/model/virtualservice.go) does: a rule with
/// `delegate` is replaced by the delegate's rules, each merged with it
/// (mergeHTTPRoute); a delegate that does not exist, has hosts (so is no delegate)
/// or is not exported to the root's namespace drops the rule.
fn effective_rules<'a>(
    store: &'a Store,
    vs_res: &'a Resource,
    vs: &'a VirtualServiceSpec,
) -> Vec<EffectiveRule<'a>> {
    let root_ns = vs_res.namespace();
    let mut out = Vec::new();
    for (index, rule) in vs.http.iter().enumerate() {
        let Some(d) = &rule.delegate else {
            out.push(EffectiveRule {
                rule: Cow::Borrowed(rule),
                index,
                match_origin: (0..rule.matches.len()).map(|i| (Some(i), None)).collect(),
                delegate: None,
            });
            continue;
        };
        let d_ns = d
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or(root_ns);
        let d_name = d.name.as_deref().unwrap_or_default();
        let key = ObjectKey {
            kind: Kind::VirtualService,
            namespace: d_ns.to_string(),
            name: d_name.to_string(),
        };
        let Some(d_res) = store.get(&key) else {
            continue; // "delegate not found, ignore only the current HTTP route"
        };
        let Spec::VirtualService(d_vs) = &d_res.spec else {
            continue;
        };
        if !d_vs.hosts.is_empty() || !ExportTo::parse(&d_vs.export_to, d_ns).visible_to(root_ns) {
            continue;
        }
        for (j, sub) in d_vs.http.iter().enumerate() {
            if sub.delegate.is_some() {
                continue; // one level only: validation rejects a delegate's delegate
            }
            if let Some((merged, match_origin)) = merge_http_route(rule, root_ns, sub, d_ns) {
                out.push(EffectiveRule {
                    rule: Cow::Owned(merged),
                    index,
                    match_origin,
                    delegate: Some(DelegateSource {
                        virtual_service: format!("{d_ns}/{d_name}"),
                        rule: j,
                        match_index: None,
                        origin: d_res.origin.clone(),
                    }),
                });
            }
        }
    }
    out
}

/// Istio's mergeHTTPRoute: the delegate's rule, its matches merged with the root's
/// (`None` on a conflict: the delegate rule is dropped), and what it leaves unset
/// (rewrite, directResponse, timeout, retries, fault, mirrors, corsPolicy, headers)
/// taken from the root rule. Names join as `root-delegate`. Destination hosts are
/// resolved in the namespace that wrote them (resolveVirtualServiceShortnames runs
/// before the merge).
type MatchOrigin = Vec<(Option<usize>, Option<usize>)>;

fn merge_http_route(
    root: &HttpRoute,
    root_ns: &str,
    leaf: &HttpRoute,
    leaf_ns: &str,
) -> Option<(HttpRoute, MatchOrigin)> {
    let (matches, origin) = merge_match_requests(
        &resolve_match_gateways(&root.matches, root_ns),
        &resolve_match_gateways(&leaf.matches, leaf_ns),
    )?;
    let mut out = leaf.clone();
    resolve_rule_hosts(&mut out, leaf_ns);
    let mut root = root.clone();
    resolve_rule_hosts(&mut root, root_ns);
    out.matches = matches;
    out.delegate = None;
    out.name = match (root.name.as_deref(), leaf.name.as_deref()) {
        (r, None | Some("")) => r.map(str::to_string),
        (None | Some(""), Some(l)) => Some(l.to_string()),
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
    };
    macro_rules! inherit {
        ($($field:ident),*) => {
            $(if out.$field.is_none() {
                out.$field = root.$field.clone();
            })*
        };
    }
    inherit!(
        rewrite,
        direct_response,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percent_alias,
        mirror_percentage,
        cors_policy,
        headers
    );
    if out.mirrors.is_empty() {
        out.mirrors = root.mirrors.clone();
    }
    Some((out, origin))
}

/// Match-level gateways resolved to `namespace/name` in the namespace that wrote them.
fn resolve_match_gateways(matches: &[HttpMatchRequest], ns: &str) -> Vec<HttpMatchRequest> {
    matches
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if !m.gateways.is_empty() {
                m.gateways = effective_gateways(&m.gateways, ns);
            }
            m
        })
        .collect()
}

/// Destination and mirror hosts resolved to fully qualified names in `ns`.
fn resolve_rule_hosts(rule: &mut HttpRoute, ns: &str) {
    for d in &mut rule.route {
        d.destination.host = resolve_short_name(&d.destination.host, ns);
    }
    if let Some(m) = &mut rule.mirror {
        m.host = resolve_short_name(&m.host, ns);
    }
    for m in &mut rule.mirrors {
        m.destination.host = resolve_short_name(&m.destination.host, ns);
    }
}

/// Istio's mergeHTTPMatchRequests: each delegate match must fit at least one root
/// match without conflict, and gives one merged match per root match it fits.
fn merge_match_requests(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<(Vec<HttpMatchRequest>, MatchOrigin)> {
    if root.is_empty() {
        return Some((
            leaf.to_vec(),
            (0..leaf.len()).map(|j| (None, Some(j))).collect(),
        ));
    }
    if leaf.is_empty() {
        return Some((
            root.to_vec(),
            (0..root.len()).map(|i| (Some(i), None)).collect(),
        ));
    }
    let mut out = Vec::new();
    let mut origin = Vec::new();
    for (j, sub) in leaf.iter().enumerate() {
        let mut found = false;
        for (i, r) in root.iter().enumerate() {
            if match_conflict(r, sub) {
                continue;
            }
            out.push(merge_match_request(r, sub));
            origin.push((Some(i), Some(j)));
            found = true;
        }
        if !found {
            return None;
        }
    }
    (!out.is_empty()).then_some((out, origin))
}

/// Istio's mergeHTTPMatchRequest: the delegate's match, with the root's conditions
/// it does not set; header, withoutHeader, query parameter and source label maps
/// merged (the delegate's value wins on the same key).
fn merge_match_request(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (root.name.as_deref(), leaf.name.as_deref()) {
        (r, None | Some("")) => r.map(str::to_string),
        (None | Some(""), Some(l)) => Some(l.to_string()),
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
    };
    macro_rules! inherit {
        ($($field:ident),*) => {
            $(if out.$field.is_none() {
                out.$field = root.$field.clone();
            })*
        };
    }
    inherit!(
        uri,
        scheme,
        method,
        authority,
        port,
        source_namespace,
        stat_prefix
    );
    fn merged<V: Clone>(
        root: &BTreeMap<String, V>,
        leaf: &BTreeMap<String, V>,
    ) -> BTreeMap<String, V> {
        let mut m = root.clone();
        m.extend(leaf.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    }
    out.headers = merged(&root.headers, &leaf.headers);
    out.without_headers = merged(&root.without_headers, &leaf.without_headers);
    out.query_params = merged(&root.query_params, &leaf.query_params);
    out.source_labels = merged(&root.source_labels, &leaf.source_labels);
    if out.gateways.is_empty() {
        out.gateways = root.gateways.clone();
    }
    out
}

/// Istio's hasConflict: whether a delegate match asks for something outside its
/// root match.
fn match_conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_match_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    let map_conflict = |r: &BTreeMap<String, StringMatch>, l: &BTreeMap<String, StringMatch>| {
        l.iter()
            .any(|(k, lv)| string_match_conflict(r.get(k), Some(lv)))
    };
    if map_conflict(&root.headers, &leaf.headers)
        || map_conflict(&root.without_headers, &leaf.without_headers)
        || map_conflict(&root.query_params, &leaf.query_params)
    {
        return true;
    }
    if root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false) {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port.filter(|p| *p > 0), leaf.port.filter(|p| *p > 0)) {
        if r != l {
            return true;
        }
    }
    if let Some(r) = root.source_namespace.as_deref().filter(|s| !s.is_empty()) {
        if leaf.source_namespace.as_deref() != Some(r) {
            return true;
        }
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    // The root's gateways must be a superset of the delegate's.
    if !root.gateways.is_empty() && !leaf.gateways.is_empty() {
        let root_gws: BTreeSet<&String> = root.gateways.iter().collect();
        if root.gateways.len() < leaf.gateways.len()
            || leaf.gateways.iter().any(|g| !root_gws.contains(g))
        {
            return true;
        }
    }
    false
}

/// Istio's stringMatchConflict: a delegate's exact or prefix match must lie within
/// the root's; regexes combine with nothing.
fn string_match_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false; // no conflict when either is unset
    };
    fn set(v: &Option<String>) -> Option<&str> {
        v.as_deref().filter(|s| !s.is_empty())
    }
    let any = |m: &StringMatch| set(&m.regex).or(set(&m.prefix)).or(set(&m.exact)).is_some();
    if set(&root.regex).is_some() && any(leaf) {
        return true;
    }
    if set(&leaf.regex).is_some() && any(root) {
        return true;
    }
    if let Some(exact) = set(&root.exact) {
        return set(&leaf.prefix).is_some() || set(&leaf.exact) != Some(exact);
    }
    if let Some(prefix) = set(&root.prefix) {
        if let Some(p) = set(&leaf.prefix) {
            return !p.starts_with(prefix);
        }
        if let Some(e) = set(&leaf.exact) {
            return !e.starts_with(prefix);
        }
    }
    true
}
