//! TLS and TCP routing: VirtualService `tls` and `tcp` rules, compiled the way istiod
//! compiles them into Envoy filter chains with a `tcp_proxy` (istio/istio
//! pilot/pkg/networking/core/tls.go `buildSidecarOutboundTLSFilterChainOpts`,
//! `buildSidecarOutboundTCPFilterChainOpts`, and gateway.go
//! `buildGatewayNetworkFiltersFromTLSRoutes`, `buildGatewayNetworkFiltersFromTCPRoutes`).
//!
//! - At a sidecar, a registry service port whose protocol is TLS, HTTPS or TCP gets
//!   filter chains: one per applicable `tls` match (by SNI and destination subnets), or
//!   the `tcp` rules, or else the default chain to `outbound|PORT||HOST`. meshbox's
//!   workloads reach them with `CONNECT host:port` through `HTTPS_PROXY`.
//! - At a gateway, a Gateway server with `protocol: TLS` (or HTTPS) and `tls.mode:
//!   PASSTHROUGH` gets one chain per `tls` match of the VirtualServices bound to it,
//!   chosen by the SNI of the ClientHello, without terminating TLS; a `protocol: TCP`
//!   server without `tls` gets the first `tcp` rule whose match holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use meshbox_config::istio::{RouteDestination, VirtualServiceSpec};
use meshbox_config::{Kind, Resource, Spec};

use crate::build::{
    binds_to, effective_gateways, gateway_host_intersection, host_matches, TableBuilder,
    MESH_GATEWAY,
};
use crate::registry::{resolve_short_name, resolve_short_name_cow, selects, Protocol, ServiceInfo};
use crate::tables::{RouteSource, WeightedCluster};

/// How an L4 port's connections are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum L4Protocol {
    /// TLS (TLS and HTTPS ports, gateway PASSTHROUGH servers): by the SNI of the
    /// ClientHello, which is read but not terminated.
    Tls,
    /// Opaque TCP: by port (and destination subnet at sidecars) only.
    Tcp,
}

/// An IP network, `a.b.c.d/n` or an address alone (a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `ADDR[/LEN]`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One filter chain: its runtime match (SNI, destination subnets) and the weighted
/// clusters of its `tcp_proxy`.
#[derive(Debug, Clone)]
pub struct L4Route {
    /// `sniHosts` (lower-case, `*.x` wildcards allowed); empty: any SNI, or none.
    pub sni_hosts: Vec<String>,
    /// `destinationSubnets`; empty: any destination.
    pub destination_subnets: Vec<Cidr>,
    /// The rule's destinations, each with its weight.
    pub clusters: Vec<WeightedCluster>,
    /// Sum of the weights.
    pub total_weight: u32,
    /// The VirtualService rule (index into `tls` or `tcp`) it came from.
    pub source: RouteSource,
}

impl L4Route {
    /// How specifically this chain matches a connection, Envoy's way
    /// (FilterChainMatch: destination IP by longest prefix, then server name exact before
    /// the longest wildcard before none); `None` when it does not match.
    pub fn specificity(&self, sni: Option<&str>, destination: Option<IpAddr>) -> Option<(u8, u16)> {
        let ip_rank = if self.destination_subnets.is_empty() {
            0
        } else {
            let ip = destination?;
            1 + self
                .destination_subnets
                .iter()
                .filter(|c| c.contains(ip))
                .map(|c| c.prefix)
                .max()?
        };
        let sni_rank = if self.sni_hosts.is_empty() {
            0
        } else {
            let sni = sni?.trim_end_matches('.').to_ascii_lowercase();
            self.sni_hosts
                .iter()
                .filter_map(|h| {
                    if *h == sni {
                        Some(u16::MAX)
                    } else if h.starts_with('*') && host_matches(h, &sni) {
                        Some(u16::try_from(h.len()).unwrap_or(u16::MAX - 1))
                    } else {
                        None
                    }
                })
                .max()?
        };
        Some((ip_rank, sni_rank))
    }

    /// Picks a cluster for a random value, by weight.
    pub fn pick(&self, random: u64) -> Option<&WeightedCluster> {
        if self.clusters.len() <= 1 || self.total_weight == 0 {
            return self.clusters.first();
        }
        let mut point = (random % u64::from(self.total_weight)) as u32;
        for c in &self.clusters {
            if point < c.weight {
                return Some(c);
            }
            point -= c.weight;
        }
        self.clusters.last()
    }
}

/// The most specific of `routes` for a connection (the first among equals).
pub fn select<'r>(
    routes: &'r [L4Route],
    sni: Option<&str>,
    destination: Option<IpAddr>,
) -> Option<&'r L4Route> {
    let mut best: Option<(&L4Route, (u8, u16))> = None;
    for r in routes {
        if let Some(rank) = r.specificity(sni, destination) {
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((r, rank));
            }
        }
    }
    best.map(|(r, _)| r)
}

/// One registry service on a sidecar L4 port.
#[derive(Debug, Clone)]
pub struct L4Service {
    /// The service's host (a ServiceEntry host may be a `*.x` wildcard).
    pub host: String,
    /// TLS (TLS and HTTPS ports) or TCP.
    pub protocol: L4Protocol,
    /// The chains of the VirtualServices for this host bound to `mesh`, in order.
    pub routes: Vec<L4Route>,
    /// `outbound|PORT||HOST`, used when no VirtualService chain is built for the service
    /// (Istio's "ports without associated virtual service"); `None` when one is, so that a
    /// connection no chain matches meets the catch-all (PassthroughCluster or BlackHole).
    pub default_cluster: Option<String>,
}

/// One sidecar port of TLS or TCP services.
#[derive(Debug, Clone, Default)]
pub struct SidecarL4Port {
    /// The services with this port, as the registry lists them.
    pub services: Vec<L4Service>,
}

impl SidecarL4Port {
    /// The service for a host: the exact name, else the longest wildcard that covers it.
    pub fn service(&self, host: &str) -> Option<&L4Service> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.services.iter().find(|s| s.host == host).or_else(|| {
            self.services
                .iter()
                .filter(|s| s.host.starts_with('*') && host_matches(&s.host, &host))
                .max_by_key(|s| s.host.len())
        })
    }
}

/// One gateway port served as TLS passthrough or opaque TCP.
#[derive(Debug, Clone)]
pub struct GatewayL4Port {
    /// TLS passthrough (by SNI) or TCP.
    pub protocol: L4Protocol,
    /// The Gateways (`namespace/name`) whose servers define this port.
    pub gateways: Vec<String>,
    /// The hosts of those servers (for `trace` and `proxy-config`).
    pub server_hosts: Vec<String>,
    /// The chains; a connection that matches none is closed (Envoy: no filter chain).
    pub routes: Vec<L4Route>,
}

/// The TLS and TCP routing of one proxy.
#[derive(Debug, Clone, Default)]
pub struct L4Tables {
    /// Sidecar: by service port.
    pub sidecar: BTreeMap<u32, SidecarL4Port>,
    /// Gateway: by Gateway server (Service) port.
    pub gateway: BTreeMap<u32, GatewayL4Port>,
}

impl L4Tables {
    /// The service a sidecar knows at `host:port` with a TLS, HTTPS or TCP port.
    pub fn sidecar_service(&self, host: &str, port: u32) -> Option<&L4Service> {
        self.sidecar.get(&port)?.service(host)
    }
}

/// VirtualServices, oldest first (Istio orders by creation time).
fn virtual_services<'a>(builder: &TableBuilder<'_, 'a>) -> Vec<&'a Resource> {
    builder.state.virtual_services_by_age().collect()
}

fn weighted(
    builder: &mut TableBuilder<'_, '_>,
    route: &[RouteDestination],
    vs_ns: &str,
    port: u32,
) -> (Vec<WeightedCluster>, u32) {
    let clusters: Vec<WeightedCluster> = route
        .iter()
        .map(|d| WeightedCluster {
            cluster: builder.destination_cluster(&d.destination, vs_ns, port),
            weight: match (route.len(), d.weight) {
                (1, _) => 100,
                (_, Some(w)) => u32::try_from(w).unwrap_or(0),
                (_, None) => 0,
            },
            ..Default::default()
        })
        .collect();
    let total = clusters.iter().map(|c| c.weight).sum();
    (clusters, total)
}

fn source(vs_res: &Resource, rule: usize, match_index: Option<usize>) -> RouteSource {
    RouteSource {
        virtual_service: format!("{}/{}", vs_res.namespace(), vs_res.metadata.name),
        rule,
        match_index,
        origin: vs_res.origin.clone(),
        delegate: None,
    }
}

fn subnets(list: &[String]) -> Vec<Cidr> {
    list.iter().filter_map(|s| Cidr::parse(s)).collect()
}

/// Istio's matchTLS / matchTCP: the static predicates of a match, for one proxy at
/// one gateway (`mesh` for sidecars) and port.
#[allow(clippy::too_many_arguments)]
fn static_match(
    gateways: &[String],
    source_labels: &meshbox_config::istio::Labels,
    source_namespace: Option<&str>,
    port: Option<u32>,
    builder: &TableBuilder<'_, '_>,
    vs_ns: &str,
    gateway: &str,
    listener_port: u32,
) -> bool {
    let gateway_ok = gateways.is_empty()
        || effective_gateways(gateways, vs_ns)
            .iter()
            .any(|g| g == gateway);
    let labels_ok = source_labels
        .iter()
        .all(|(k, v)| builder.proxy.labels.get(k) == Some(v));
    let port_ok = port.is_none_or(|p| p == 0 || p == listener_port);
    let ns_ok = source_namespace.is_none_or(|ns| ns.is_empty() || ns == builder.proxy.namespace);
    gateway_ok && labels_ok && port_ok && ns_ok
}

fn tls_chains(
    builder: &mut TableBuilder<'_, '_>,
    vs_res: &Resource,
    vs: &VirtualServiceSpec,
    gateway: &str,
    port: u32,
    handled: &mut HashSet<String>,
) -> Vec<L4Route> {
    let vs_ns = vs_res.namespace();
    let mut out = Vec::new();
    for (rule_index, rule) in vs.tls.iter().enumerate() {
        for (match_index, m) in rule.matches.iter().enumerate() {
            if !static_match(
                &m.gateways,
                &m.source_labels,
                m.source_namespace.as_deref(),
                m.port,
                builder,
                vs_ns,
                gateway,
                port,
            ) {
                continue;
            }
            // Istio (hashRuntimeTLSMatchPredicates): a later match with the same runtime
            // predicates can never be reached and gets no chain.
            let key = format!(
                "{}|{}",
                m.sni_hosts.join(","),
                m.destination_subnets.join(",")
            );
            if !handled.insert(key) {
                continue;
            }
            let (clusters, total_weight) = weighted(builder, &rule.route, vs_ns, port);
            out.push(L4Route {
                sni_hosts: m
                    .sni_hosts
                    .iter()
                    .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
                    .collect(),
                destination_subnets: subnets(&m.destination_subnets),
                clusters,
                total_weight,
                source: source(vs_res, rule_index, Some(match_index)),
            });
        }
    }
    out
}

/// Istio's buildSidecarOutboundTCPFilterChainOpts for one VirtualService: chains, and
/// whether a chain matching every destination (the terminal one) was added.
fn tcp_chains(
    builder: &mut TableBuilder<'_, '_>,
    vs_res: &Resource,
    vs: &VirtualServiceSpec,
    gateway: &str,
    port: u32,
) -> (Vec<L4Route>, bool) {
    let vs_ns = vs_res.namespace();
    let mut out = Vec::new();
    for (rule_index, rule) in vs.tcp.iter().enumerate() {
        let (clusters, total_weight) = weighted(builder, &rule.route, vs_ns, port);
        let chain = |subnets: Vec<Cidr>, match_index: Option<usize>| L4Route {
            sni_hosts: Vec::new(),
            destination_subnets: subnets,
            clusters: clusters.clone(),
            total_weight,
            source: source(vs_res, rule_index, match_index),
        };
        if rule.matches.is_empty() {
            out.push(chain(Vec::new(), None));
            return (out, true);
        }
        let mut collected = Vec::new();
        for (match_index, m) in rule.matches.iter().enumerate() {
            if !static_match(
                &m.gateways,
                &m.source_labels,
                m.source_namespace.as_deref(),
                m.port,
                builder,
                vs_ns,
                gateway,
                port,
            ) {
                continue;
            }
            if m.destination_subnets.is_empty() {
                out.push(chain(Vec::new(), Some(match_index)));
                return (out, true);
            }
            collected.extend(subnets(&m.destination_subnets));
        }
        if !collected.is_empty() {
            out.push(chain(collected, None));
        }
    }
    (out, false)
}

/// The sidecar's L4 ports: every TLS, HTTPS and TCP port of the services the sidecar
/// sees, with the chains of the VirtualServices bound to `mesh` (those it sees, oldest
/// first) whose hosts cover the service.
pub(crate) fn sidecar_l4(
    builder: &mut TableBuilder<'_, '_>,
    services: &[&ServiceInfo],
    vss: &[&Resource],
) -> L4Tables {
    let mut tables = L4Tables::default();
    // The VirtualServices bound to `mesh`, by position in `vss`: exact hosts (resolved
    // in the VirtualService's namespace) indexed, wildcard hosts kept to scan. Built
    // once, not per service port (which made N VirtualServices over N ports quadratic).
    // Only the exact hosts of services with a TLS or TCP port are kept.
    let l4_hosts: HashSet<&str> = services
        .iter()
        .filter(|s| s.ports.iter().any(|p| p.protocol != Protocol::Http))
        .map(|s| s.hostname.as_str())
        .collect();
    let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
    let mut wildcards: Vec<(usize, String)> = Vec::new();
    if !l4_hosts.is_empty() {
        for (i, r) in vss.iter().enumerate() {
            let Spec::VirtualService(vs) = &r.spec else {
                continue;
            };
            if !binds_to(vs, r.namespace(), MESH_GATEWAY) {
                continue;
            }
            for h in &vs.hosts {
                let host = resolve_short_name_cow(h, r.namespace());
                if host.starts_with('*') {
                    wildcards.push((i, host.into_owned()));
                } else if l4_hosts.contains(host.as_ref()) {
                    exact.entry(host.into_owned()).or_default().push(i);
                }
            }
        }
    }
    for svc in services {
        for p in &svc.ports {
            let protocol = match p.protocol {
                Protocol::Tls | Protocol::Https => L4Protocol::Tls,
                Protocol::Tcp => L4Protocol::Tcp,
                Protocol::Http => continue,
            };
            // Istio's getConfigsForHost: the VirtualServices bound to `mesh` with a host
            // that covers the service, in the order of `vss`.
            let mut positions: Vec<usize> = exact
                .get(svc.hostname.as_str())
                .cloned()
                .unwrap_or_default();
            positions.extend(
                wildcards
                    .iter()
                    .filter(|(_, host)| host_matches(host, &svc.hostname))
                    .map(|(i, _)| *i),
            );
            positions.sort_unstable();
            positions.dedup();
            let configs: Vec<&Resource> = positions.into_iter().map(|i| vss[i]).collect();
            let mut routes = Vec::new();
            let mut terminal = false;
            let mut handled = HashSet::new();
            for vs_res in configs {
                let Spec::VirtualService(vs) = &vs_res.spec else {
                    continue;
                };
                match protocol {
                    L4Protocol::Tls => routes.extend(tls_chains(
                        builder,
                        vs_res,
                        vs,
                        MESH_GATEWAY,
                        p.port,
                        &mut handled,
                    )),
                    L4Protocol::Tcp => {
                        if terminal {
                            break;
                        }
                        let (chains, done) = tcp_chains(builder, vs_res, vs, MESH_GATEWAY, p.port);
                        routes.extend(chains);
                        terminal = done;
                    }
                }
            }
            let default_cluster = match protocol {
                L4Protocol::Tls if !routes.is_empty() => None,
                L4Protocol::Tcp if terminal => None,
                _ => Some(builder.cluster_for(svc, p.port, "")),
            };
            tables
                .sidecar
                .entry(p.port)
                .or_default()
                .services
                .push(L4Service {
                    host: svc.hostname.clone(),
                    protocol,
                    routes,
                    default_cluster,
                });
        }
    }
    tables
}

/// The gateway's L4 ports: TLS PASSTHROUGH and opaque TCP servers of the Gateways that
/// select it, with the `tls` / `tcp` rules of the VirtualServices bound to them.
pub(crate) fn gateway_l4(builder: &mut TableBuilder<'_, '_>) -> L4Tables {
    let vss = virtual_services(builder);
    let store = builder.state.store;
    let mut gateways: Vec<&Resource> = store
        .of_kind(Kind::Gateway)
        .filter(|g| match &g.spec {
            Spec::Gateway(spec) => {
                spec.selector.is_empty() || selects(&spec.selector, &builder.proxy.labels)
            }
            _ => false,
        })
        .collect();
    gateways.sort_by_key(|g| store.creation_index(&g.key()));
    let mut tables = L4Tables::default();
    let mut handled: BTreeMap<u32, HashSet<String>> = BTreeMap::new();
    for gw_res in gateways {
        let Spec::Gateway(gw) = &gw_res.spec else {
            continue;
        };
        let gw_id = format!("{}/{}", gw_res.namespace(), gw_res.metadata.name);
        for server in &gw.servers {
            let protocol = Protocol::istio(&server.port.protocol, &server.port.name);
            let mode = server.tls.as_ref().and_then(|t| t.mode.as_deref());
            let l4 = match (protocol, mode) {
                (Protocol::Tls | Protocol::Https, Some("PASSTHROUGH")) => L4Protocol::Tls,
                (Protocol::Tcp, None) => L4Protocol::Tcp,
                _ => continue, // HTTP, or TLS termination (not served by meshbox)
            };
            let port = server.port.number;
            let entry = tables.gateway.entry(port).or_insert_with(|| GatewayL4Port {
                protocol: l4,
                gateways: Vec::new(),
                server_hosts: Vec::new(),
                routes: Vec::new(),
            });
            if entry.protocol != l4 {
                continue; // a conflicting server on the same port: the first one wins
            }
            if !entry.gateways.contains(&gw_id) {
                entry.gateways.push(gw_id.clone());
            }
            entry.server_hosts.extend(server.hosts.iter().cloned());
            for vs_res in &vss {
                let Spec::VirtualService(vs) = &vs_res.spec else {
                    continue;
                };
                let vs_ns = vs_res.namespace();
                if !binds_to(vs, vs_ns, &gw_id) {
                    continue;
                }
                // Istio's pickMatchingGatewayHosts: the VirtualService must share a host
                // with the server.
                let shares_host = vs.hosts.iter().any(|h| {
                    let h = resolve_short_name(h, vs_ns);
                    server.hosts.iter().any(|sh| {
                        gateway_host_intersection(sh, gw_res.namespace(), &h, vs_ns).is_some()
                    })
                });
                if !shares_host {
                    continue;
                }
                match l4 {
                    L4Protocol::Tls => {
                        let seen = handled.entry(port).or_default();
                        let chains = tls_chains(builder, vs_res, vs, &gw_id, port, seen);
                        if let Some(e) = tables.gateway.get_mut(&port) {
                            e.routes.extend(chains);
                        }
                    }
                    L4Protocol::Tcp => {
                        // Istio takes the first `tcp` rule whose matches hold (port and
                        // gateway only: destinationSubnets are not used at gateways).
                        let has_route = tables
                            .gateway
                            .get(&port)
                            .is_some_and(|e| !e.routes.is_empty());
                        if has_route {
                            continue;
                        }
                        let found = vs.tcp.iter().enumerate().find(|(_, rule)| {
                            rule.matches.is_empty()
                                || rule.matches.iter().any(|m| {
                                    m.port.is_none_or(|p| p == 0 || p == port)
                                        && (m.gateways.is_empty()
                                            || effective_gateways(&m.gateways, vs_ns)
                                                .contains(&gw_id))
                                })
                        });
                        if let Some((rule_index, rule)) = found {
                            let (clusters, total_weight) =
                                weighted(builder, &rule.route, vs_ns, port);
                            if let Some(e) = tables.gateway.get_mut(&port) {
                                e.routes.push(L4Route {
                                    sni_hosts: Vec::new(),
                                    destination_subnets: Vec::new(),
                                    clusters,
                                    total_weight,
                                    source: source(vs_res, rule_index, None),
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    tables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_contain() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        let one = Cidr::parse("192.168.1.7").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(Cidr::parse("::1/128")
            .unwrap()
            .contains("::1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4/33").is_none());
    }

    fn route(sni: &[&str], subnets: &[&str], cluster: &str) -> L4Route {
        L4Route {
            sni_hosts: sni.iter().map(|s| s.to_string()).collect(),
            destination_subnets: subnets.iter().filter_map(|s| Cidr::parse(s)).collect(),
            clusters: vec![WeightedCluster {
                cluster: cluster.into(),
                weight: 100,
                ..Default::default()
            }],
            total_weight: 100,
            source: RouteSource {
                virtual_service: "ns/vs".into(),
                rule: 0,
                match_index: None,
                origin: Default::default(),
                delegate: None,
            },
        }
    }

    /// Envoy's filter chain match: an exact server name beats a wildcard, a wildcard beats
    /// no server name, whatever the order the chains were declared in.
    #[test]
    fn most_specific_sni_chain_wins() {
        let routes = vec![
            route(&[], &[], "any"),
            route(&["*.wikipedia.org"], &[], "wild"),
            route(&["en.wikipedia.org"], &[], "exact"),
        ];
        let pick = |sni| select(&routes, sni, None).map(|r| r.clusters[0].cluster.as_str());
        assert_eq!(pick(Some("en.wikipedia.org")), Some("exact"));
        assert_eq!(pick(Some("EN.Wikipedia.org.")), Some("exact"));
        assert_eq!(pick(Some("de.wikipedia.org")), Some("wild"));
        assert_eq!(pick(Some("example.com")), Some("any"));
        assert_eq!(pick(None), Some("any"));
        let only_sni = vec![route(&["a.example"], &[], "a")];
        assert!(select(&only_sni, Some("b.example"), None).is_none());
        assert!(select(&only_sni, None, None).is_none());
    }

    #[test]
    fn destination_subnets_prefer_the_longest_prefix() {
        let routes = vec![
            route(&[], &["10.0.0.0/8"], "wide"),
            route(&[], &["10.1.0.0/16"], "narrow"),
        ];
        let pick = |ip: &str| {
            select(&routes, None, ip.parse().ok()).map(|r| r.clusters[0].cluster.as_str())
        };
        assert_eq!(pick("10.1.2.3"), Some("narrow"));
        assert_eq!(pick("10.9.2.3"), Some("wide"));
        assert_eq!(pick("192.168.0.1"), None);
    }
}
