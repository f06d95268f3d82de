//! From the applied configuration to each proxy's tables, as istiod translates
//! Istio config for Envoy (pilot/pkg/networking/core: sidecar outbound route
//! configurations per port, gateway route configurations `http.PORT`, clusters
//! `outbound|PORT|SUBSET|HOST`).

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use meshbox_config::istio::{
    Destination, DestinationRuleSpec, HttpMatchRequest, HttpRoute, StringMatch, VirtualServiceSpec,
};
use meshbox_config::validate::parse_duration;
use meshbox_config::{Kind, MeshOptions, OutboundPolicy, Resource, Spec, Store};

use crate::cluster_policy::ClusterPolicy;
use crate::policy::{Cors, Fault, HeaderOps, Mirror, Redirect, RegexRewrite, RetryPolicy};
use crate::registry::{
    resolve_short_name, selects, Protocol, Registry, Resolution, ServiceInfo, ServiceSource,
    TargetPort, WorkloadInstance, DOMAIN_SUFFIX,
};
use crate::tables::{
    outbound_cluster_name, CatchAll, Cluster, ClusterEndpoints, ForwardAction, HeaderCondition,
    ProxyKind, ProxyTables, Route, RouteAction, RouteMatch, RouteSource, RouteTable, StrMatcher,
    UriRewrite, VirtualHost, WeightedCluster, ALLOW_ANY_ROUTE, BLOCK_ALL_ROUTE,
};

/// The name of the implicit gateway that means "every sidecar".
pub const MESH_GATEWAY: &str = "mesh";

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
    /// VirtualServices, oldest first (Istio orders by creation time).
    virtual_services: Vec<&'a Resource>,
}

impl<'a> MeshState<'a> {
    /// Prepares the registry and ordering shared by every proxy's build.
    pub fn new(store: &'a Store, mesh: &'a MeshOptions, workloads: &'a [WorkloadInstance]) -> Self {
        let mut virtual_services: Vec<&Resource> = store.of_kind(Kind::VirtualService).collect();
        virtual_services.sort_by_key(|r| store.creation_index(&r.key()));
        MeshState {
            store,
            mesh,
            registry: Registry::build(store, mesh),
            workloads,
            virtual_services,
        }
    }

    /// The tables of the sidecar beside `workload`.
    pub fn sidecar_tables(&self, workload: &WorkloadInstance) -> ProxyTables {
        let mut builder = TableBuilder::new(self, workload);
        let ns = workload.namespace.as_str();
        // Per port: virtual hosts keyed by service host name.
        let mut per_port: BTreeMap<u32, BTreeMap<String, VirtualHost>> = BTreeMap::new();
        for svc in self.registry.services.values() {
            for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Http) {
                let cluster = builder.cluster_for(svc, port.port, "");
                per_port.entry(port.port).or_default().insert(
                    svc.hostname.clone(),
                    VirtualHost {
                        name: format!("{}:{}", svc.hostname, port.port),
                        domains: service_domains(svc, port.port, ns),
                        routes: vec![Route {
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
                        }],
                        catch_all: None,
                    },
                );
            }
        }
        // VirtualServices bound to the mesh replace the default route of their hosts.
        let mut claimed: BTreeSet<(u32, String)> = BTreeSet::new();
        for vs_res in &self.virtual_services {
            let Spec::VirtualService(vs) = &vs_res.spec else {
                continue;
            };
            let vs_ns = vs_res.namespace();
            if !binds_to(vs, vs_ns, MESH_GATEWAY) {
                continue;
            }
            for host in &vs.hosts {
                let fqdn = resolve_short_name(host, vs_ns);
                let matching: Vec<&ServiceInfo> = self
                    .registry
                    .services
                    .values()
                    .filter(|s| host_matches(&fqdn, &s.hostname))
                    .collect();
                if matching.is_empty() {
                    // A host that is no service: Istio gives it a virtual host on port 80
                    // only ("to affect traffic to hosts outside of the service registry
                    // on port 80", pilot/pkg/networking/core/route).
                    let port = 80;
                    if claimed.contains(&(port, fqdn.clone())) {
                        continue;
                    }
                    let routes = builder.http_routes(vs_res, vs, MESH_GATEWAY, port);
                    if routes.is_empty() {
                        continue; // no rule applies on this port: no virtual host
                    }
                    claimed.insert((port, fqdn.clone()));
                    let domains = vec![fqdn.clone(), format!("{fqdn}:{port}")];
                    per_port.entry(port).or_default().insert(
                        fqdn.clone(),
                        VirtualHost {
                            name: format!("{fqdn}:{port}"),
                            domains,
                            routes,
                            catch_all: None,
                        },
                    );
                    continue;
                }
                for svc in matching {
                    for port in svc.ports.iter().filter(|p| p.protocol == Protocol::Http) {
                        if claimed.contains(&(port.port, svc.hostname.clone())) {
                            continue; // an older VirtualService already owns this host
                        }
                        let routes = builder.http_routes(vs_res, vs, MESH_GATEWAY, port.port);
                        if routes.is_empty() {
                            // No rule applies on this port: Istio emits no virtual host for
                            // this VirtualService, so the default route stays and a later
                            // VirtualService may still claim the host.
                            continue;
                        }
                        claimed.insert((port.port, svc.hostname.clone()));
                        if let Some(vh) = per_port
                            .get_mut(&port.port)
                            .and_then(|m| m.get_mut(&svc.hostname))
                        {
                            vh.routes = routes;
                        }
                    }
                }
            }
        }
        let catch_all = match self.mesh.outbound_policy {
            OutboundPolicy::AllowAny => CatchAll::AllowAny,
            OutboundPolicy::RegistryOnly => CatchAll::BlockAll,
        };
        let mut route_tables = BTreeMap::new();
        for (port, hosts) in per_port {
            let mut vhosts: Vec<VirtualHost> = hosts.into_values().collect();
            vhosts.push(catch_all_vhost(catch_all));
            route_tables.insert(port, RouteTable::new(port.to_string(), vhosts));
        }
        ProxyTables {
            proxy: workload.name.clone(),
            namespace: workload.namespace.clone(),
            kind: ProxyKind::Sidecar,
            outbound_policy: self.mesh.outbound_policy,
            route_tables,
            clusters: builder.finish(),
            gateway_ports: Vec::new(),
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
                let protocol = Protocol::select(Some(&server.port.protocol), None, None);
                if protocol != Protocol::Http {
                    continue; // TLS and TCP servers are not served yet
                }
                let port = server.port.number;
                let vhosts = per_port.entry(port).or_default();
                for vs_res in &self.virtual_services {
                    let Spec::VirtualService(vs) = &vs_res.spec else {
                        continue;
                    };
                    let vs_ns = vs_res.namespace();
                    if !binds_to(vs, vs_ns, &gw_id) {
                        continue;
                    }
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
        ProxyTables {
            proxy: workload.name.clone(),
            namespace: workload.namespace.clone(),
            kind: ProxyKind::Gateway,
            outbound_policy: self.mesh.outbound_policy,
            route_tables,
            clusters: builder.finish(),
            gateway_ports: service_ports.to_vec(),
        }
    }

    /// DestinationRules for a host, Istio's lookup order: the client's namespace, then
    /// the service's namespace, then the root namespace (`istio-system`).
    fn destination_rule(
        &self,
        fqdn: &str,
        client_ns: &str,
        service_ns: &str,
    ) -> Option<&DestinationRuleSpec> {
        let rules: Vec<(&str, &DestinationRuleSpec)> = self
            .store
            .of_kind(Kind::DestinationRule)
            .filter_map(|r| match &r.spec {
                Spec::DestinationRule(dr)
                    if host_matches(&resolve_short_name(&dr.host, r.namespace()), fqdn) =>
                {
                    Some((r.namespace(), dr))
                }
                _ => None,
            })
            .collect();
        [client_ns, service_ns, "istio-system"]
            .iter()
            .find_map(|ns| rules.iter().find(|(rns, _)| rns == ns).map(|(_, dr)| *dr))
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
            name: name.to_string(),
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
    let mut names = Vec::new();
    let suffix = format!(".{}.{DOMAIN_SUFFIX}", svc.namespace);
    if let Some(short) = svc.hostname.strip_suffix(&suffix) {
        if svc.namespace == client_ns {
            names.push(short.to_string());
        }
        names.push(format!("{short}.{}", svc.namespace));
        names.push(format!("{short}.{}.svc", svc.namespace));
    }
    names.push(svc.hostname.clone());
    let mut domains = Vec::with_capacity(names.len() * 2);
    for n in names {
        domains.push(format!("{n}:{port}"));
        domains.push(n);
    }
    domains
}

/// Whether a VirtualService applies at `gateway` (`mesh` or `namespace/name`). Istio
/// indexes VirtualServices by their top-level `gateways` only; a rule's
/// `match.gateways` then narrows, never widens, where the VirtualService applies.
fn binds_to(vs: &VirtualServiceSpec, vs_ns: &str, gateway: &str) -> bool {
    effective_gateways(&vs.gateways, vs_ns)
        .iter()
        .any(|g| g == gateway)
}

/// Gateway names resolved to `namespace/name`; an empty list means `mesh`.
fn effective_gateways(list: &[String], vs_ns: &str) -> Vec<String> {
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
fn gateway_host_intersection(
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
struct TableBuilder<'s, 'a> {
    state: &'s MeshState<'a>,
    /// The workload whose proxy the tables are for (source labels, namespace).
    proxy: &'s WorkloadInstance,
    clusters: HashMap<String, Cluster>,
}

impl<'s, 'a> TableBuilder<'s, 'a> {
    fn new(state: &'s MeshState<'a>, proxy: &'s WorkloadInstance) -> Self {
        TableBuilder {
            state,
            proxy,
            clusters: HashMap::new(),
        }
    }

    fn finish(self) -> HashMap<String, Cluster> {
        self.clusters
    }

    /// Registers the cluster for a service port (and subset) and returns its name.
    fn cluster_for(&mut self, svc: &ServiceInfo, port: u32, subset: &str) -> String {
        let name = outbound_cluster_name(port, subset, &svc.hostname);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let dr = self
            .state
            .destination_rule(&svc.hostname, &self.proxy.namespace, &svc.namespace);
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
                let target = u16::try_from(target).unwrap_or(0);
                match resolution {
                    Resolution::None => ClusterEndpoints::OriginalDestination,
                    Resolution::Static => ClusterEndpoints::Static(
                        endpoints
                            .iter()
                            .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
                            .map(|ip| SocketAddr::new(ip, target))
                            .collect(),
                    ),
                    Resolution::Dns | Resolution::DnsRoundRobin => {
                        if endpoints.is_empty() {
                            ClusterEndpoints::Dns(vec![(svc.hostname.clone(), target)])
                        } else {
                            ClusterEndpoints::Dns(
                                endpoints.iter().map(|e| (e.clone(), target)).collect(),
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
        let vs_id = format!("{vs_ns}/{}", vs_res.metadata.name);
        let top_gateways = effective_gateways(&vs.gateways, vs_ns);
        let proxy = self.proxy;
        let mut routes = Vec::new();
        for (rule_index, rule) in vs.http.iter().enumerate() {
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
                top_gateways.iter().any(|g| g == gateway)
                    && m.source_labels
                        .iter()
                        .all(|(k, v)| proxy.labels.get(k) == Some(v))
                    && m.source_namespace
                        .as_deref()
                        .is_none_or(|ns| ns == proxy.namespace)
            };
            let conditions: Vec<(Option<usize>, Option<&HttpMatchRequest>)> =
                if rule.matches.is_empty() {
                    if top_gateways.iter().any(|g| g == gateway) {
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
                    },
                    matcher,
                    action,
                    source: Some(RouteSource {
                        virtual_service: vs_id.clone(),
                        rule: rule_index,
                        match_index,
                        origin: vs_res.origin.clone(),
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
        let matched_prefix = match m.and_then(|m| m.uri.as_ref()) {
            None => Some("/".to_string()),
            Some(StringMatch {
                prefix: Some(p), ..
            }) => Some(p.clone()),
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
            return RouteAction::Redirect(Redirect::compile(r, matched_prefix.as_deref()));
        }
        let mut clusters = Vec::new();
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
                matched_prefix: matched_prefix.clone(),
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
        RouteAction::Forward(Box::new(ForwardAction {
            clusters,
            total_weight,
            uri_rewrite,
            authority_rewrite: rule.rewrite.as_ref().and_then(|r| r.authority.clone()),
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
    fn destination_cluster(&mut self, d: &Destination, vs_ns: &str, listener_port: u32) -> String {
        let fqdn = resolve_short_name(&d.host, vs_ns);
        let subset = d.subset.clone().unwrap_or_default();
        let port = d.port.as_ref().and_then(|p| p.number);
        match self.state.registry.services.get(&fqdn) {
            Some(svc) => {
                let port = port
                    .or_else(|| (svc.ports.len() == 1).then(|| svc.ports[0].port))
                    .unwrap_or(listener_port);
                self.cluster_for(svc, port, &subset)
            }
            None => outbound_cluster_name(port.unwrap_or(listener_port), &subset, &fqdn),
        }
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
