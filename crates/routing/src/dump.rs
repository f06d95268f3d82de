//! `meshbox proxy-config`: one proxy's compiled tables as rows, shaped like the tables
//! of `istioctl proxy-config routes|clusters|listeners|endpoints`, and as JSON.
//!
//! The rows are this module's own serializable structs, read from [`ProxyTables`];
//! the tables themselves are not changed.

use serde::Serialize;

use crate::cluster_policy::{ClusterPolicy, HashKey, LbPolicy};

use crate::tables::{
    ClusterEndpoints, ProxyKind, ProxyTables, RouteAction, RouteMatch, StrMatcher,
    PASSTHROUGH_CLUSTER,
};

/// Istio's name for the cluster that drops traffic (REGISTRY_ONLY).
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// What one listener of a proxy carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ListenerRole {
    /// A sidecar's outbound listener: the workload's `HTTP_PROXY`; the request's port
    /// selects the route table.
    SidecarOutbound,
    /// A sidecar's inbound listener for one container port: everything goes to the app.
    SidecarInbound {
        /// The container port (the `inbound|PORT||` cluster).
        port: u32,
        /// Where the application listens, when known.
        app: Option<String>,
    },
    /// A gateway listener: the pod's container port carrying a Service port, whose
    /// `http.PORT` route table it reads.
    Gateway {
        /// The container (target) port.
        container_port: u32,
        /// The Service port (the Gateway server port).
        service_port: u32,
    },
}

/// One listen address of a proxy and what it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyListener {
    /// `ip:port` where the proxy accepts connections.
    pub address: String,
    /// What the listener is for.
    pub role: ListenerRole,
}

/// A row of `proxy-config listeners`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerRow {
    /// The listen IP.
    pub address: String,
    /// The listen port.
    pub port: u16,
    /// What it carries, in words: `sidecar outbound`, `inbound 8081`, `gateway port 80`.
    pub carries: String,
    /// Where its traffic goes: a route table or a cluster.
    pub destination: String,
}

/// A row of `proxy-config routes`: one route of one virtual host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteRow {
    /// The route table (Envoy route configuration) name: `80`, `http.80`.
    pub name: String,
    /// The virtual host's name.
    pub vhost_name: String,
    /// Every domain of the virtual host.
    pub domains: Vec<String>,
    /// The route's match, in istioctl's short form (`/*`, `/service-a`, ...).
    #[serde(rename = "match")]
    pub match_: String,
    /// Every condition of the match, in words.
    pub conditions: String,
    /// The route's name (`block_all`, `allow_any`, `default`, the rule's name), may be empty.
    pub route_name: String,
    /// `name.namespace` of the VirtualService it came from; empty for default routes.
    pub virtual_service: String,
    /// The rule's index in the VirtualService's `http` list.
    pub rule: Option<usize>,
    /// Where the VirtualService was read: `file:line`.
    pub origin: Option<String>,
    /// What the route does, in words.
    pub action: String,
}

/// A row of `proxy-config clusters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterRow {
    /// The cluster's full name, e.g. `outbound|80||service-a-srv.ns.svc.cluster.local`.
    pub cluster: String,
    /// The service host name, or the cluster name for special clusters.
    pub service_fqdn: String,
    /// The port, `-` when none.
    pub port: String,
    /// The subset, `-` when none.
    pub subset: String,
    /// `outbound`, `inbound` or `-`.
    pub direction: String,
    /// Envoy's discovery type: `EDS`, `STRICT_DNS`, `ORIGINAL_DST`, `STATIC`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Number of known endpoints (names for DNS clusters; 0 for original destination).
    pub endpoints: usize,
    /// The DestinationRule's traffic policy (load balancing, connection pool, outlier
    /// detection), in words.
    pub policy: Vec<String>,
}

/// A row of `proxy-config endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRow {
    /// `ip:port`, or `name:port` for endpoints resolved by DNS when used.
    pub endpoint: String,
    /// `HEALTHY`.
    pub status: String,
    /// The cluster it belongs to.
    pub cluster: String,
}

/// Every view of one proxy's tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyConfig {
    /// The proxy's pod.
    pub proxy: String,
    /// The pod's namespace.
    pub namespace: String,
    /// `sidecar` or `gateway`.
    pub kind: String,
    /// Listen addresses.
    pub listeners: Vec<ListenerRow>,
    /// Routes, table by table, virtual host by virtual host.
    pub routes: Vec<RouteRow>,
    /// Clusters, sorted by service, port and subset.
    pub clusters: Vec<ClusterRow>,
    /// Endpoints of every cluster that has known ones.
    pub endpoints: Vec<EndpointRow>,
}

/// Which table `proxy-config` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `routes`.
    Routes,
    /// `clusters`.
    Clusters,
    /// `listeners`.
    Listeners,
    /// `endpoints`.
    Endpoints,
    /// `all`: every table.
    All,
}

impl View {
    /// Parses istioctl's names and abbreviations (`routes`, `route`, `r`, `clusters`,
    /// `cluster`, `c`, `listeners`, `listener`, `l`, `endpoints`, `endpoint`, `ep`, `all`).
    pub fn parse(s: &str) -> Result<View, String> {
        match s.to_ascii_lowercase().as_str() {
            "routes" | "route" | "r" => Ok(View::Routes),
            "clusters" | "cluster" | "c" => Ok(View::Clusters),
            "listeners" | "listener" | "l" => Ok(View::Listeners),
            "endpoints" | "endpoint" | "ep" | "e" => Ok(View::Endpoints),
            "all" => Ok(View::All),
            other => Err(format!(
                "error: unknown proxy-config view {other:?}: use routes, clusters, listeners, endpoints or all"
            )),
        }
    }
}

/// Kind of proxy, as the rows name it.
pub fn kind_name(kind: ProxyKind) -> &'static str {
    match kind {
        ProxyKind::Sidecar => "sidecar",
        ProxyKind::Gateway => "gateway",
    }
}

/// Reads a proxy's tables (and its listen addresses) into rows.
pub fn proxy_config(tables: &ProxyTables, listeners: &[ProxyListener]) -> ProxyConfig {
    ProxyConfig {
        proxy: tables.proxy.clone(),
        namespace: tables.namespace.clone(),
        kind: kind_name(tables.kind).to_string(),
        listeners: listener_rows(tables, listeners),
        routes: route_rows(tables),
        clusters: cluster_rows(tables, listeners),
        endpoints: endpoint_rows(tables, listeners),
    }
}

fn listener_rows(tables: &ProxyTables, listeners: &[ProxyListener]) -> Vec<ListenerRow> {
    listeners
        .iter()
        .map(|l| {
            let (address, port) = split_address(&l.address);
            let (carries, destination) = match &l.role {
                ListenerRole::SidecarOutbound => {
                    let ports: Vec<String> =
                        tables.route_tables.keys().map(|p| p.to_string()).collect();
                    let other = match tables.outbound_policy {
                        meshbox_config::OutboundPolicy::AllowAny => PASSTHROUGH_CLUSTER,
                        meshbox_config::OutboundPolicy::RegistryOnly => BLACKHOLE_CLUSTER,
                    };
                    let mut destination = if ports.is_empty() {
                        format!("every port: {other}")
                    } else {
                        format!(
                            "Route: the request's port ({}); other ports: {other}",
                            ports.join(", ")
                        )
                    };
                    // CONNECT tunnels (HTTPS_PROXY) to TLS, HTTPS and TCP service ports.
                    if !tables.l4.sidecar.is_empty() {
                        let l4: Vec<String> =
                            tables.l4.sidecar.keys().map(|p| p.to_string()).collect();
                        destination.push_str(&format!(
                            "; CONNECT to TLS/TCP service ports ({}), else {other}",
                            l4.join(", ")
                        ));
                    }
                    (
                        "sidecar outbound (the workload's HTTP_PROXY and HTTPS_PROXY)".to_string(),
                        destination,
                    )
                }
                ListenerRole::SidecarInbound { port, app } => (
                    format!("inbound {port}"),
                    match app {
                        Some(app) => format!("Cluster: inbound|{port}|| -> app at {app}"),
                        None => format!("Cluster: inbound|{port}|| -> the app's port {port}"),
                    },
                ),
                ListenerRole::Gateway {
                    container_port,
                    service_port,
                } => (
                    format!("gateway port {service_port} (container port {container_port})"),
                    match (tables.l4.gateway.get(service_port), tables.route_table(*service_port)) {
                        // TLS PASSTHROUGH and TCP servers (l4.rs) take the port first.
                        (Some(l4), _) => {
                            let chains: Vec<String> = l4
                                .routes
                                .iter()
                                .map(|r| {
                                    let sni = if r.sni_hosts.is_empty() {
                                        "*".to_string()
                                    } else {
                                        r.sni_hosts.join(",")
                                    };
                                    let clusters: Vec<&str> =
                                        r.clusters.iter().map(|c| c.cluster.as_str()).collect();
                                    format!("{sni} -> {}", clusters.join(" + "))
                                })
                                .collect();
                            let kind = match l4.protocol {
                                crate::l4::L4Protocol::Tls => "TLS passthrough by SNI",
                                crate::l4::L4Protocol::Tcp => "TCP",
                            };
                            if chains.is_empty() {
                                format!("{kind}: no tls/tcp route, every connection is closed")
                            } else {
                                format!("{kind}: {}", chains.join("; "))
                            }
                        }
                        (None, Some(t)) => format!("Route: {}", t.name),
                        (None, None) => format!(
                            "no route table (no Gateway server on port {service_port}): every request gets 404"
                        ),
                    },
                ),
            };
            ListenerRow {
                address,
                port,
                carries,
                destination,
            }
        })
        .collect()
}

fn split_address(address: &str) -> (String, u16) {
    match address.parse::<std::net::SocketAddr>() {
        Ok(a) => (a.ip().to_string(), a.port()),
        Err(_) => match address.rsplit_once(':') {
            Some((ip, port)) => (ip.to_string(), port.parse().unwrap_or(0)),
            None => (address.to_string(), 0),
        },
    }
}

fn route_rows(tables: &ProxyTables) -> Vec<RouteRow> {
    let mut rows = Vec::new();
    for table in tables.route_tables.values() {
        for vh in &table.virtual_hosts {
            for route in &vh.routes {
                let (virtual_service, rule, origin) = match &route.source {
                    Some(s) => (
                        vs_dotted(&s.virtual_service),
                        Some(s.rule),
                        Some(format!("{}:{}", s.origin.file, s.origin.line)),
                    ),
                    None => (String::new(), None, None),
                };
                rows.push(RouteRow {
                    name: table.name.clone(),
                    vhost_name: vh.name.clone(),
                    domains: vh.domains.clone(),
                    match_: short_match(&route.matcher),
                    conditions: describe_match(&route.matcher),
                    route_name: route.name.to_string(),
                    virtual_service,
                    rule,
                    origin,
                    action: describe_action(&route.action),
                });
            }
        }
    }
    rows
}

/// `ns/name` → `name.ns`, as istioctl writes VirtualService references.
fn vs_dotted(id: &str) -> String {
    match id.split_once('/') {
        Some((ns, name)) => format!("{name}.{ns}"),
        None => id.to_string(),
    }
}

/// What a route does, in words.
pub fn describe_action(action: &RouteAction) -> String {
    #[allow(unreachable_patterns)]
    match action {
        RouteAction::Forward(f) => {
            let mut s = if f.clusters.len() == 1 {
                f.clusters[0].cluster.clone()
            } else {
                f.clusters
                    .iter()
                    .map(|c| format!("{} {}", c.cluster, percent(c.weight, f.total_weight)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if let Some(r) = &f.uri_rewrite {
                s.push_str(&format!("; rewrite uri to {:?}", r.replacement));
            }
            if let Some(a) = &f.authority_rewrite {
                s.push_str(&format!("; rewrite authority to {a:?}"));
            }
            if let Some(t) = f.timeout {
                s.push_str(&format!("; timeout {}", format_duration(t)));
            }
            s
        }
        RouteAction::DirectResponse { status, body } => {
            if body.is_empty() {
                format!("direct response {status}")
            } else {
                format!("direct response {status} {body:?}")
            }
        }
        RouteAction::Passthrough => format!("{PASSTHROUGH_CLUSTER} (the original destination)"),
        RouteAction::Redirect(r) => {
            let mut parts = Vec::new();
            if let Some(s) = &r.scheme {
                parts.push(format!("scheme {s}"));
            }
            if let Some(a) = &r.authority {
                parts.push(format!("authority {a}"));
            }
            if let Some(p) = r.port {
                parts.push(format!("port {p}"));
            }
            if let Some(p) = &r.path {
                parts.push(format!("path {p}"));
            }
            if let Some((from, to)) = &r.prefix_rewrite {
                parts.push(format!("prefix {from} to {to}"));
            }
            format!("redirect {} ({})", r.code, parts.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// `weight` as a share of `total`, e.g. `50%`.
pub fn percent(weight: u32, total: u32) -> String {
    if total == 0 {
        return "0%".to_string();
    }
    let p = f64::from(weight) * 100.0 / f64::from(total);
    if (p - p.round()).abs() < 1e-9 {
        format!("{}%", p.round() as u64)
    } else {
        format!("{p:.1}%")
    }
}

/// A duration as Istio writes it (`5s`, `250ms`).
pub fn format_duration(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn regex_source(m: &StrMatcher) -> Option<&str> {
    match m {
        StrMatcher::Regex(r) => {
            let s = r.as_str();
            Some(
                s.strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s),
            )
        }
        _ => None,
    }
}

fn matcher_words(m: &StrMatcher) -> String {
    match m {
        StrMatcher::Exact(s) => format!("exact {s:?}"),
        StrMatcher::Prefix(s) => format!("prefix {s:?}"),
        StrMatcher::Regex(_) => format!("regex {:?}", regex_source(m).unwrap_or_default()),
    }
}

/// The match in istioctl's short form: the path (`/*` for every path, `/x*` for a
/// prefix, `/x` exact, `~regex`), followed by ` (+N conditions)` for the others.
pub fn short_match(m: &RouteMatch) -> String {
    let path = match &m.uri {
        None => "/*".to_string(),
        Some(StrMatcher::Exact(s)) => s.clone(),
        Some(StrMatcher::Prefix(s)) => format!("{s}*"),
        Some(r) => format!("~{}", regex_source(r).unwrap_or_default()),
    };
    let others = usize::from(m.scheme.is_some())
        + usize::from(m.method.is_some())
        + usize::from(m.authority.is_some())
        + m.headers.len()
        + m.query_params.len();
    match others {
        0 => path,
        1 => format!("{path} (+1 condition)"),
        n => format!("{path} (+{n} conditions)"),
    }
}

/// Every condition of a match, in words; `any request` for the empty match.
pub fn describe_match(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    if let Some(u) = &m.uri {
        let case = if m.ignore_uri_case {
            ", ignoring case"
        } else {
            ""
        };
        parts.push(format!("uri {}{case}", matcher_words(u)));
    }
    if let Some(s) = &m.scheme {
        parts.push(format!("scheme {}", matcher_words(s)));
    }
    if let Some(s) = &m.method {
        parts.push(format!("method {}", matcher_words(s)));
    }
    if let Some(s) = &m.authority {
        parts.push(format!("authority {}", matcher_words(s)));
    }
    for h in &m.headers {
        let what = match &h.value {
            None => "present".to_string(),
            Some(v) => matcher_words(v),
        };
        if h.invert {
            parts.push(format!("withoutHeaders {} {what}", h.name));
        } else {
            parts.push(format!("header {} {what}", h.name));
        }
    }
    for (name, v) in &m.query_params {
        parts.push(format!("query {name} {}", matcher_words(v)));
    }
    if parts.is_empty() {
        "any request".to_string()
    } else {
        parts.join(", ")
    }
}

/// The domains in istioctl's short form: `*`, or the shortest name `+ N more...`.
pub fn short_domains(domains: &[String]) -> String {
    if domains.len() == 1 {
        return domains[0].clone();
    }
    let mut names: Vec<&String> = domains
        .iter()
        .filter(|d| !d.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    names.sort_by_key(|d| d.len());
    match names.as_slice() {
        [] => String::new(),
        [one] => (*one).clone(),
        [first, rest @ ..] => format!("{first} + {} more...", rest.len()),
    }
}

/// Splits `outbound|80|v1|host` into (direction, port, subset, host).
fn parse_cluster_name(name: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = name.splitn(4, '|');
    Some((it.next()?, it.next()?, it.next()?, it.next()?))
}

fn dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn cluster_rows(tables: &ProxyTables, listeners: &[ProxyListener]) -> Vec<ClusterRow> {
    let mut rows: Vec<ClusterRow> = tables
        .clusters
        .values()
        .map(|c| {
            let (type_, count) = match &c.endpoints {
                ClusterEndpoints::Static(a) => ("EDS", a.len()),
                ClusterEndpoints::Dns(n) => ("STRICT_DNS", n.len()),
                ClusterEndpoints::OriginalDestination => ("ORIGINAL_DST", 0),
            };
            let (direction, port, subset, host) =
                parse_cluster_name(&c.name).unwrap_or(("", "", "", &c.name));
            ClusterRow {
                cluster: c.name.to_string(),
                service_fqdn: host.to_string(),
                port: dash(port),
                subset: dash(subset),
                direction: dash(direction),
                type_: type_.to_string(),
                endpoints: count,
                policy: describe_cluster_policy(&c.policy),
            }
        })
        .collect();
    for l in listeners {
        if let ListenerRole::SidecarInbound { port, app } = &l.role {
            rows.push(ClusterRow {
                cluster: format!("inbound|{port}||"),
                service_fqdn: String::new(),
                port: port.to_string(),
                subset: "-".into(),
                direction: "inbound".into(),
                type_: "STATIC".into(),
                endpoints: usize::from(app.is_some()),
                policy: Vec::new(),
            });
        }
    }
    rows.sort_by(|a, b| {
        (&a.service_fqdn, port_key(&a.port), &a.subset, &a.direction).cmp(&(
            &b.service_fqdn,
            port_key(&b.port),
            &b.subset,
            &b.direction,
        ))
    });
    if tables.kind == ProxyKind::Sidecar {
        for (name, type_) in [
            (BLACKHOLE_CLUSTER, "STATIC"),
            (PASSTHROUGH_CLUSTER, "ORIGINAL_DST"),
        ] {
            rows.push(ClusterRow {
                cluster: name.to_string(),
                service_fqdn: name.to_string(),
                port: "-".into(),
                subset: "-".into(),
                direction: "-".into(),
                type_: type_.into(),
                endpoints: 0,
                policy: Vec::new(),
            });
        }
    }
    rows
}

/// A cluster's DestinationRule policy in words: load balancing, connection-pool
/// limits, outlier detection.
pub fn describe_cluster_policy(p: &ClusterPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let lb = match &p.lb {
        LbPolicy::RoundRobin => "ROUND_ROBIN".to_string(),
        LbPolicy::LeastRequest => "LEAST_REQUEST".to_string(),
        LbPolicy::Random => "RANDOM".to_string(),
        LbPolicy::Passthrough => "PASSTHROUGH".to_string(),
        LbPolicy::ConsistentHash(key) => match key {
            HashKey::Header(h) => format!("consistent hash of header {h}"),
            HashKey::Cookie { name, .. } => format!("consistent hash of cookie {name}"),
            HashKey::SourceIp => "consistent hash of the source IP".to_string(),
            HashKey::QueryParam(q) => format!("consistent hash of query parameter {q}"),
        },
    };
    out.push(format!("load balancing: {lb}"));
    if let Some(l) = &p.limits {
        out.push(format!(
            "connection pool: {} connections, {} pending, {} requests (beyond: 503 UO)",
            l.max_connections, l.max_pending, l.max_requests
        ));
    }
    let mut connections = Vec::new();
    if let Some(d) = p.connect_timeout {
        connections.push(format!("connect timeout {}", format_duration(d)));
    }
    match p.idle_timeout {
        Some(std::time::Duration::MAX) => connections.push("no idle timeout".to_string()),
        Some(d) => connections.push(format!("idle timeout {}", format_duration(d))),
        None => {}
    }
    if let Some(n) = p.max_requests_per_connection {
        connections.push(format!("at most {n} requests per connection"));
    }
    if let Some(d) = p.max_connection_duration {
        connections.push(format!("closed {} after opening", format_duration(d)));
    }
    if !connections.is_empty() {
        out.push(format!("connections: {}", connections.join(", ")));
    }
    if let Some(n) = p.max_retries {
        out.push(format!(
            "retries: at most {n} under way at once (beyond: the answer stands, UO)"
        ));
    }
    if let Some(o) = &p.outlier {
        out.push(format!(
            "outlier detection: eject after {} consecutive 5xx / {} gateway errors, for {} times the ejections, at most {}% of endpoints",
            o.consecutive_5xx,
            o.consecutive_gateway,
            format_duration(o.base_ejection),
            o.max_ejection_percent
        ));
    }
    if let Some(t) = &p.tls {
        let mode = match t.mode {
            crate::cluster_policy::TlsMode::Simple => "SIMPLE",
            crate::cluster_policy::TlsMode::Mutual => "MUTUAL",
        };
        let sni = t.sni.as_deref().unwrap_or("the request's Host (auto SNI)");
        let ca = match (&t.credential_name, &t.ca) {
            (Some(name), _) => format!("credential {name}"),
            (None, crate::cluster_policy::CaSource::System) => "the web PKI roots".into(),
            (None, crate::cluster_policy::CaSource::File(f)) => f.clone(),
        };
        let verify = if t.insecure_skip_verify {
            "no verification (insecureSkipVerify)".to_string()
        } else {
            format!("verified with {ca}")
        };
        out.push(format!("TLS origination: {mode}, SNI {sni}, {verify}"));
    }
    out
}

fn port_key(p: &str) -> u64 {
    p.parse().unwrap_or(u64::MAX)
}

fn endpoint_rows(tables: &ProxyTables, listeners: &[ProxyListener]) -> Vec<EndpointRow> {
    let mut rows = Vec::new();
    let mut clusters: Vec<_> = tables.clusters.values().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    for c in clusters {
        match &c.endpoints {
            ClusterEndpoints::Static(addrs) => {
                for a in addrs {
                    rows.push(EndpointRow {
                        endpoint: a.to_string(),
                        status: "HEALTHY".into(),
                        cluster: c.name.to_string(),
                    });
                }
            }
            ClusterEndpoints::Dns(names) => {
                for (n, p) in names {
                    rows.push(EndpointRow {
                        endpoint: format!("{n}:{p}"),
                        status: "HEALTHY".into(),
                        cluster: c.name.to_string(),
                    });
                }
            }
            ClusterEndpoints::OriginalDestination => {}
        }
    }
    for l in listeners {
        if let ListenerRole::SidecarInbound {
            port,
            app: Some(app),
        } = &l.role
        {
            rows.push(EndpointRow {
                endpoint: app.clone(),
                status: "HEALTHY".into(),
                cluster: format!("inbound|{port}||"),
            });
        }
    }
    rows
}

/// Columns padded to the widest cell, three spaces apart, as kubectl and istioctl print.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut text = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                text.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                text.push_str(c);
                text.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// The listeners table: ADDRESSES, PORT, TYPE, DESTINATION.
pub fn render_listeners(config: &ProxyConfig) -> String {
    let rows: Vec<Vec<String>> = config
        .listeners
        .iter()
        .map(|l| {
            vec![
                l.address.clone(),
                l.port.to_string(),
                l.carries.clone(),
                l.destination.clone(),
            ]
        })
        .collect();
    render_table(&["ADDRESSES", "PORT", "TYPE", "DESTINATION"], &rows)
}

/// The routes table: NAME, VHOST NAME, DOMAINS, MATCH, VIRTUAL SERVICE.
pub fn render_routes(config: &ProxyConfig) -> String {
    let rows: Vec<Vec<String>> = config
        .routes
        .iter()
        .map(|r| {
            let domains = short_domains(&r.domains);
            vec![
                r.name.clone(),
                r.vhost_name.clone(),
                domains,
                r.match_.clone(),
                if r.virtual_service.is_empty() {
                    match r.route_name.as_str() {
                        "default" | "" => "-".to_string(),
                        other => other.to_string(),
                    }
                } else {
                    r.virtual_service.clone()
                },
            ]
        })
        .collect();
    render_table(
        &["NAME", "VHOST NAME", "DOMAINS", "MATCH", "VIRTUAL SERVICE"],
        &rows,
    )
}

/// The clusters table: SERVICE FQDN, PORT, SUBSET, DIRECTION, TYPE.
pub fn render_clusters(config: &ProxyConfig) -> String {
    let rows: Vec<Vec<String>> = config
        .clusters
        .iter()
        .map(|c| {
            vec![
                c.service_fqdn.clone(),
                c.port.clone(),
                c.subset.clone(),
                c.direction.clone(),
                c.type_.clone(),
            ]
        })
        .collect();
    render_table(
        &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
        &rows,
    )
}

/// The endpoints table: ENDPOINT, STATUS, CLUSTER.
pub fn render_endpoints(config: &ProxyConfig) -> String {
    let rows: Vec<Vec<String>> = config
        .endpoints
        .iter()
        .map(|e| vec![e.endpoint.clone(), e.status.clone(), e.cluster.clone()])
        .collect();
    render_table(&["ENDPOINT", "STATUS", "CLUSTER"], &rows)
}

/// Renders one view as a table, or as JSON (`output` = `json`): the view's rows, or
/// the whole [`ProxyConfig`] for [`View::All`].
pub fn render(config: &ProxyConfig, view: View, output: Option<&str>) -> Result<String, String> {
    match output {
        None | Some("table") | Some("short") => {}
        Some("json") => {
            let value = match view {
                View::Routes => serde_json::to_value(&config.routes),
                View::Clusters => serde_json::to_value(&config.clusters),
                View::Listeners => serde_json::to_value(&config.listeners),
                View::Endpoints => serde_json::to_value(&config.endpoints),
                View::All => serde_json::to_value(config),
            }
            .map_err(|e| e.to_string())?;
            let mut text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            text.push('\n');
            return Ok(text);
        }
        Some(other) => {
            return Err(format!(
                "error: output format {other:?} not supported (json, or none for a table)"
            ))
        }
    }
    Ok(match view {
        View::Routes => render_routes(config),
        View::Clusters => render_clusters(config),
        View::Listeners => render_listeners(config),
        View::Endpoints => render_endpoints(config),
        View::All => format!(
            "{}\n{}\n{}\n{}",
            render_listeners(config),
            render_routes(config),
            render_clusters(config),
            render_endpoints(config)
        ),
    })
}

/// [`render`] with the view named as on the command line (`routes`, `clusters`, ...).
pub fn render_as(config: &ProxyConfig, view: &str, output: Option<&str>) -> Result<String, String> {
    render(config, View::parse(view)?, output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// `proxy-config cluster` and `trace` name a cluster's connection settings when its
    /// DestinationRule sets any.
    #[test]
    fn a_clusters_connection_settings_are_put_into_words() {
        let plain = describe_cluster_policy(&ClusterPolicy::default());
        assert_eq!(plain, vec!["load balancing: ROUND_ROBIN".to_string()]);
        let set = ClusterPolicy {
            connect_timeout: Some(Duration::from_millis(250)),
            idle_timeout: Some(Duration::MAX),
            max_requests_per_connection: Some(1),
            ..ClusterPolicy::default()
        };
        let words = describe_cluster_policy(&set);
        assert!(
            words.contains(
                &"connections: connect timeout 250ms, no idle timeout, at most 1 requests per connection"
                    .to_string()
            ),
            "{words:?}"
        );
    }
}
