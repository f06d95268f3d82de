//! The compiled tables of one proxy, the way Envoy holds what istiod sends it:
//! route tables (per listener port) of virtual hosts of routes, and clusters.
//! Built once per configuration change; the request path only reads them.

use regex::Regex;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::HeaderMap;

use crate::cluster_policy::ClusterPolicy;
use crate::policy::{Cors, Fault, HeaderOps, Mirror, Redirect, RegexRewrite, RetryPolicy};
use meshbox_config::{Origin, OutboundPolicy};

/// Istio's name for the cluster that forwards to the original destination.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
/// Istio's name for the catch-all route in REGISTRY_ONLY mode.
pub const BLOCK_ALL_ROUTE: &str = "block_all";
/// Istio's name for the catch-all route in ALLOW_ANY mode.
pub const ALLOW_ANY_ROUTE: &str = "allow_any";

/// Which kind of proxy these tables are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProxyKind {
    /// A sidecar beside a workload: outbound route tables per service port, with a catch-all.
    Sidecar,
    /// An ingress or egress gateway: `http.PORT` route tables from Gateways and their
    /// VirtualServices.
    Gateway,
}

/// Everything one proxy needs to route: an immutable snapshot.
#[derive(Debug)]
pub struct ProxyTables {
    /// Pod name of the proxy.
    pub proxy: String,
    /// Namespace of the proxy's pod.
    pub namespace: String,
    /// Sidecar or gateway.
    pub kind: ProxyKind,
    /// `meshConfig.outboundTrafficPolicy.mode`: ALLOW_ANY or REGISTRY_ONLY for hosts
    /// outside the registry.
    pub outbound_policy: OutboundPolicy,
    /// HTTP route tables by port: the service port for sidecars (outbound), the
    /// Gateway server port for gateways.
    pub route_tables: BTreeMap<u32, RouteTable>,
    /// TLS, HTTPS and TCP routing (`tls` and `tcp` VirtualService rules): a sidecar's
    /// service ports, a gateway's PASSTHROUGH and TCP servers.
    pub l4: crate::l4::L4Tables,
    /// Clusters by name (`outbound|80||host`). FxHash: looked up on every request, and
    /// SipHash over a name of some 30 bytes cost about 300 instructions a lookup
    /// (callgrind); the keys come from config, not from requests.
    pub clusters: FxHashMap<String, Cluster>,
    /// For gateways: the container ports the pod listens on, each with the Service
    /// port (the Gateway server port) it carries.
    pub gateway_ports: Vec<(u32, u32)>,
    /// For sidecars: what the cluster's DNS and kube-proxy give the workload, which
    /// are no part of Envoy's config: every Kubernetes Service name it can resolve
    /// (`name` in its own namespace, `name.ns`, `name.ns.svc`, the FQDN), with the
    /// endpoints of each service port. A name the route tables do not know but DNS
    /// does (a Service hidden by a Sidecar's egress hosts or by exportTo) meets the
    /// catch-all as in a cluster: 502 under REGISTRY_ONLY, the Service's endpoints
    /// through PassthroughCluster under ALLOW_ANY, never a DNS failure.
    pub cluster_dns: HashMap<String, BTreeMap<u32, Vec<SocketAddr>>>,
}

impl ProxyTables {
    /// Tables that route nothing yet: every request meets the catch-all of
    /// `outbound_policy`. A new proxy holds them only until the control plane pushes
    /// its first real tables (building full tables twice made starting a mesh with
    /// many VirtualServices slower).
    pub fn empty(
        proxy: &str,
        namespace: &str,
        kind: ProxyKind,
        outbound_policy: OutboundPolicy,
    ) -> ProxyTables {
        ProxyTables {
            proxy: proxy.to_string(),
            namespace: namespace.to_string(),
            kind,
            outbound_policy,
            route_tables: BTreeMap::new(),
            l4: crate::l4::L4Tables::default(),
            clusters: FxHashMap::default(),
            gateway_ports: Vec::new(),
            cluster_dns: HashMap::new(),
        }
    }

    /// The route table for a port. Sidecars fall back to a table holding only the
    /// catch-all virtual host, as traffic to a port no service uses goes to
    /// Istio's PassthroughCluster or BlackHole.
    pub fn route_table(&self, port: u32) -> Option<&RouteTable> {
        self.route_tables.get(&port)
    }

    /// Where the workload's own connection to `host:port` would go in a cluster, when
    /// `host` is a Kubernetes Service name (case-insensitive, trailing dot ignored):
    /// the endpoints of that service port, empty when the Service has no such port
    /// or no endpoints. `None` when cluster DNS does not know the name.
    pub fn cluster_address(&self, host: &str, port: u32) -> Option<&[SocketAddr]> {
        let ports = self
            .cluster_dns
            .get(host.trim_end_matches('.').to_ascii_lowercase().as_str())?;
        Some(ports.get(&port).map_or(&[], Vec::as_slice))
    }

    /// Reads the secrets that VirtualService header values name (`${file:PATH}`,
    /// `${env:NAME}`) with `lookup` and puts them in the compiled header operations,
    /// marked sensitive. Done once per compilation, never per request; an entry that
    /// cannot be read keeps its template text. Returns the errors, each naming the
    /// route and the secret.
    pub fn resolve_header_secrets(
        &mut self,
        lookup: &mut dyn FnMut(&crate::policy::SecretRef) -> Result<String, String>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for table in self.route_tables.values_mut() {
            for vhost in &mut table.virtual_hosts {
                for route in &mut vhost.routes {
                    let RouteAction::Forward(fwd) = &mut route.action else {
                        continue;
                    };
                    let fwd = &mut **fwd;
                    let mut all = vec![&mut fwd.request_headers, &mut fwd.response_headers];
                    for c in &mut fwd.clusters {
                        all.push(&mut c.request_headers);
                        all.push(&mut c.response_headers);
                    }
                    for ops in all {
                        if ops.secrets.is_empty() {
                            continue;
                        }
                        for e in ops.resolve_secrets(lookup) {
                            errors.push(format!("route {}: {e}", route.name));
                        }
                    }
                }
            }
        }
        errors
    }
}

/// One route configuration (Envoy `RouteConfiguration`), e.g. `80` or `http.80`.
#[derive(Debug)]
pub struct RouteTable {
    /// Envoy's route configuration name: the port for sidecars (`80`), `http.PORT` for gateways.
    pub name: String,
    /// The virtual hosts, in order; the first to claim a domain keeps it.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Exact domains (FxHash, as [`ProxyTables::clusters`]: a request's Host is only
    /// looked up, never inserted, so it cannot grow a collision chain).
    exact: FxHashMap<String, usize>,
    /// `*.suffix` domains, longest suffix first: (suffix including the dot, index).
    suffixes: Vec<(String, usize)>,
    catch_all: Option<usize>,
}

impl RouteTable {
    /// Indexes the virtual hosts' domains, Envoy's way: exact names first, then the
    /// longest wildcard suffix, then `*`. The first virtual host to claim a domain keeps it.
    pub fn new(name: String, virtual_hosts: Vec<VirtualHost>) -> RouteTable {
        let mut exact = FxHashMap::with_capacity_and_hasher(
            virtual_hosts.iter().map(|v| v.domains.len()).sum(),
            Default::default(),
        );
        let mut suffixes = Vec::new();
        let mut catch_all = None;
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                if d == "*" {
                    catch_all.get_or_insert(i);
                } else if let Some(rest) = d.strip_prefix('*') {
                    suffixes.push((rest.to_string(), i));
                } else {
                    exact.entry(d.clone()).or_insert(i);
                }
            }
        }
        suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        RouteTable {
            name,
            virtual_hosts,
            exact,
            suffixes,
            catch_all,
        }
    }

    /// The virtual host for an authority (Host header), matched as given and without
    /// its port. Comparison is case-insensitive.
    pub fn select_virtual_host(&self, authority: &str) -> Option<&VirtualHost> {
        let lower;
        let authority = if authority.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = authority.to_ascii_lowercase();
            lower.as_str()
        } else {
            authority
        };
        let authority = authority.trim_end_matches('.');
        let without_port = strip_port(authority);
        let index = self
            .exact
            .get(authority)
            .or_else(|| self.exact.get(without_port))
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(suffix, _)| {
                        without_port.ends_with(suffix.as_str()) && without_port.len() > suffix.len()
                    })
                    .map(|(_, i)| *i)
            })
            .or(self.catch_all)?;
        self.virtual_hosts.get(index)
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    // The last `:` when only digits follow it: walked back from the end byte by byte
    // (on every request, up to three times; `rfind` with the digit check cost about 240
    // instructions a call, callgrind).
    let bytes = authority.as_bytes();
    let mut i = bytes.len();
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    match i.checked_sub(1) {
        Some(colon) if bytes[colon] == b':' => &authority[..colon],
        _ => authority,
    }
}

/// What a catch-all virtual host does with a host that is not in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum CatchAll {
    /// ALLOW_ANY: forward to the resolved original destination.
    AllowAny,
    /// REGISTRY_ONLY: answer 502.
    BlockAll,
}

/// One virtual host: domains and the ordered routes for them.
#[derive(Debug)]
pub struct VirtualHost {
    /// e.g. `producer-internal-host.dev-service-mesh.svc.cluster.local:80`.
    pub name: String,
    /// Host header values it answers: exact names (with and without `:port`), `*.suffix` or `*`.
    pub domains: Vec<String>,
    /// Its routes in order; the first that matches wins.
    pub routes: Vec<Route>,
    /// Set on the catch-all virtual host of a sidecar.
    pub catch_all: Option<CatchAll>,
}

impl VirtualHost {
    /// The first route whose match holds: Istio's "first match wins".
    pub fn select_route(&self, req: &RequestView<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matcher.matches(req))
    }
}

/// The parts of a request that routes match on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method, e.g. `GET`.
    pub method: &'a str,
    /// The request's scheme, `http` unless its URI says otherwise.
    pub scheme: &'a str,
    /// The Host header (or absolute-form authority), as received.
    pub authority: &'a str,
    /// Path with query, as on the request line.
    pub path_and_query: &'a str,
    /// The request's headers.
    pub headers: &'a HeaderMap,
}

impl RequestView<'_> {
    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.path_and_query.split('?').next().unwrap_or("")
    }

    /// The raw query string, if any.
    pub fn query(&self) -> Option<&str> {
        self.path_and_query.split_once('?').map(|(_, q)| q)
    }
}

/// Where a route came from, for `trace` and logs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RouteSource {
    /// `namespace/name` of the VirtualService.
    pub virtual_service: String,
    /// Index of the rule in its `http` list.
    pub rule: usize,
    /// Index of the match within the rule, if it had matches.
    pub match_index: Option<usize>,
    /// File, document and line of the VirtualService.
    pub origin: Origin,
    /// When the rule hands matching to a delegate VirtualService (`delegate`), the
    /// delegate's rule that this route came from, merged with the root rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<DelegateSource>,
}

/// The rule of a delegate VirtualService behind a route (Istio's VirtualService
/// delegation, pilot/pkg/model/virtualservice.go mergeHTTPRoutes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DelegateSource {
    /// `namespace/name` of the delegate VirtualService.
    pub virtual_service: String,
    /// Index of the rule in the delegate's `http` list.
    pub rule: usize,
    /// Index of the delegate rule's match merged into this route, if it had matches.
    pub match_index: Option<usize>,
    /// File, document and line of the delegate VirtualService.
    pub origin: Origin,
}

/// One route: a match and what to do.
#[derive(Debug)]
pub struct Route {
    /// Istio's route name: the rule's `name`, else the VS-derived name, or `default`.
    pub name: std::sync::Arc<str>,
    /// When the route applies: a compiled `HTTPMatchRequest`.
    pub matcher: RouteMatch,
    /// What to do with a request that matches.
    pub action: RouteAction,
    /// The VirtualService rule it came from; `None` for default and catch-all routes.
    pub source: Option<RouteSource>,
}

/// A string matcher, compiled.
#[derive(Debug, Clone)]
pub enum StrMatcher {
    /// `exact`: the whole value equals it.
    Exact(String),
    /// `prefix`: the value starts with it.
    Prefix(String),
    /// Anchored at both ends, as Envoy's `safe_regex` matches the whole value.
    Regex(Regex),
}

impl StrMatcher {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatcher::Exact(s) => value == s,
            StrMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StrMatcher::Regex(r) => r.is_match(value),
        }
    }

    /// Case-insensitive match (the pattern was lower-cased when compiled).
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            StrMatcher::Regex(r) => r.is_match(value),
            _ => self.matches(&value.to_ascii_lowercase()),
        }
    }
}

/// A header condition: present-and-matching, or (with `invert`) absent-or-not-matching.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    /// Lower-case header name; `:method`, `:authority`, `:path` and `:scheme` name the
    /// request's own fields.
    pub name: String,
    /// `None` matches presence.
    pub value: Option<StrMatcher>,
    /// `withoutHeaders`: the condition holds when the header does NOT match.
    pub invert: bool,
}

/// A compiled `HTTPMatchRequest` (the empty match matches everything).
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    /// `uri`: matched against the path without its query string.
    pub uri: Option<StrMatcher>,
    /// `ignoreUriCase`: exact and prefix `uri` matches ignore case.
    pub ignore_uri_case: bool,
    /// `scheme`: matched against the request's scheme.
    pub scheme: Option<StrMatcher>,
    /// `method`: matched against the request method.
    pub method: Option<StrMatcher>,
    /// `authority`: matched against the Host header as received.
    pub authority: Option<StrMatcher>,
    /// `headers` and `withoutHeaders`; every condition must hold.
    pub headers: Vec<HeaderCondition>,
    /// `queryParams`, by name; a presence match is an empty prefix.
    pub query_params: Vec<(String, StrMatcher)>,
}

impl RouteMatch {
    /// Whether the request meets every condition. Nothing is allocated: the request
    /// path calls this for every route it tries.
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.first_mismatch(req).is_none()
    }

    /// The first condition that fails, in words; `None` when everything matches.
    pub fn explain_mismatch(&self, req: &RequestView<'_>) -> Option<String> {
        self.first_mismatch(req).map(|m| m.to_string())
    }

    /// The first condition that fails, as borrowed parts that [`Mismatch`]'s `Display`
    /// puts into words only when asked (`trace`), never on the request path.
    fn first_mismatch<'m, 'r>(&'m self, req: &'r RequestView<'r>) -> Option<Mismatch<'m, 'r>> {
        if let Some(uri) = &self.uri {
            let path = req.path();
            let ok = if self.ignore_uri_case {
                uri.matches_ignore_case(path)
            } else {
                uri.matches(path)
            };
            if !ok {
                return Some(Mismatch::Field("uri", path, uri));
            }
        }
        let fields = [
            ("scheme", &self.scheme, req.scheme),
            ("method", &self.method, req.method),
            ("authority", &self.authority, req.authority),
        ];
        for (field, matcher, value) in fields {
            if let Some(m) = matcher {
                if !m.matches(value) {
                    return Some(Mismatch::Field(field, value, m));
                }
            }
        }
        for h in &self.headers {
            let value = header_value(req, &h.name);
            let holds = match (&h.value, value) {
                (None, Some(_)) => true,
                (Some(m), Some(v)) => m.matches(v),
                // Istio sets Envoy's `treat_missing_header_as_empty` on withoutHeaders
                // value matchers: a missing header is matched as "".
                (Some(m), None) if h.invert => m.matches(""),
                (_, None) => false,
            };
            if holds == h.invert {
                return Some(if h.invert {
                    Mismatch::WithoutHeader(&h.name)
                } else {
                    Mismatch::Header(&h.name, value)
                });
            }
        }
        for (name, m) in &self.query_params {
            let found = req
                .query()
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then_some(v)
                })
                .next();
            match found {
                Some(v) if m.matches(v) => {}
                _ => return Some(Mismatch::QueryParam(name)),
            }
        }
        None
    }
}

/// Why a request does not meet a [`RouteMatch`], borrowed from the match and the request.
enum Mismatch<'m, 'r> {
    /// `uri`, `scheme`, `method` or `authority`: the field, the request's value, the matcher.
    Field(&'static str, &'r str, &'m StrMatcher),
    /// A `headers` condition: the header and its value, if present.
    Header(&'m str, Option<&'r str>),
    /// A `withoutHeaders` condition that the request meets.
    WithoutHeader(&'m str),
    /// A `queryParams` condition.
    QueryParam(&'m str),
}

impl std::fmt::Display for Mismatch<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mismatch::Field(field, value, m) => {
                write!(f, "{field} {value:?} does not match ")?;
                match m {
                    StrMatcher::Exact(s) => write!(f, "exact {s:?}"),
                    StrMatcher::Prefix(s) => write!(f, "prefix {s:?}"),
                    StrMatcher::Regex(r) => write!(f, "regex {:?}", r.as_str()),
                }
            }
            Mismatch::Header(name, None) => write!(f, "header {name} is absent"),
            Mismatch::Header(name, Some(v)) => {
                write!(f, "header {name} value {v:?} does not match")
            }
            Mismatch::WithoutHeader(name) => write!(
                f,
                "header {name} matches (withoutHeaders; a missing header counts as empty)"
            ),
            Mismatch::QueryParam(name) => write!(f, "query parameter {name} does not match"),
        }
    }
}

fn header_value<'a>(req: &RequestView<'a>, name: &str) -> Option<&'a str> {
    match name {
        ":method" => Some(req.method),
        ":authority" | "host" => Some(req.authority),
        ":path" => Some(req.path_and_query),
        ":scheme" => Some(req.scheme),
        _ => req.headers.get(name).and_then(|v| v.to_str().ok()),
    }
}

/// How the path is rewritten (Envoy `prefix_rewrite` as Istio configures it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriRewrite {
    /// The part of the path replaced: the prefix matched, or `None` for the whole path
    /// (exact and regex matches).
    pub matched_prefix: Option<String>,
    /// `rewrite.uri`: what replaces the matched part.
    pub replacement: String,
}

impl UriRewrite {
    /// The rewritten path and query; the query string is kept.
    pub fn apply(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let new_path = match &self.matched_prefix {
            Some(prefix)
                if path.len() >= prefix.len()
                    && path[..prefix.len()].eq_ignore_ascii_case(prefix) =>
            {
                format!("{}{}", self.replacement, &path[prefix.len()..])
            }
            _ => self.replacement.clone(),
        };
        match query {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        }
    }
}

/// A destination cluster with its weight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WeightedCluster {
    /// `route[].headers.request` of this destination.
    pub request_headers: HeaderOps,
    /// `route[].headers.response` of this destination.
    pub response_headers: HeaderOps,
    /// Cluster name, `outbound|PORT|SUBSET|HOST`.
    pub cluster: String,
    /// The destination's `weight` (100 for a lone destination).
    pub weight: u32,
}

/// What a route does.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to one of the clusters, chosen by weight.
    Forward(Box<ForwardAction>),
    /// Answer directly with this status and body (`directResponse`, `block_all`).
    DirectResponse {
        /// The HTTP status code.
        status: u16,
        /// The response body; may be empty.
        body: String,
    },
    /// Forward to the original destination (`allow_any`).
    Passthrough,
    /// Answer with a redirect (`redirect`).
    Redirect(Redirect),
}

/// Forwarding: where and how.
#[derive(Debug, Default)]
pub struct ForwardAction {
    /// `headers.request` of the rule.
    pub request_headers: HeaderOps,
    /// `headers.response` of the rule.
    pub response_headers: HeaderOps,
    /// `fault`.
    pub fault: Option<Fault>,
    /// `retries`, or Istio's default policy.
    pub retry: RetryPolicy,
    /// `mirror` / `mirrors`.
    pub mirrors: Vec<Mirror>,
    /// `corsPolicy`.
    pub cors: Option<Cors>,
    /// `rewrite.uriRegexRewrite`.
    pub regex_rewrite: Option<RegexRewrite>,
    /// The route's destinations, each with its weight.
    pub clusters: Vec<WeightedCluster>,
    /// Sum of the weights; the random pick is taken modulo this.
    pub total_weight: u32,
    /// `rewrite.uri`, if set; the original path is sent as `x-envoy-original-path`.
    pub uri_rewrite: Option<UriRewrite>,
    /// `rewrite.authority`: the Host header sent upstream instead, if set.
    pub authority_rewrite: Option<String>,
    /// Route timeout; `None` means none (Istio's default for HTTP routes).
    pub timeout: Option<Duration>,
}

impl ForwardAction {
    /// Picks a cluster for a random value in `0..u64::MAX`, by weight.
    pub fn pick(&self, random: u64) -> Option<&WeightedCluster> {
        if self.clusters.len() == 1 {
            return self.clusters.first();
        }
        if self.total_weight == 0 {
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

/// How a cluster's endpoints are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEndpoints {
    /// Known addresses (pods of a Kubernetes Service, STATIC ServiceEntries).
    Static(Vec<SocketAddr>),
    /// Names resolved when used (DNS ServiceEntries): (host, port) pairs.
    Dns(Vec<(String, u16)>),
    /// The request's own destination (resolution NONE, PassthroughCluster), at this port.
    OriginalDestination,
}

/// An upstream cluster.
#[derive(Debug)]
pub struct Cluster {
    /// `outbound|80||producer-internal-host.dev-service-mesh.svc.cluster.local`.
    pub name: std::sync::Arc<str>,
    /// Where its endpoints come from; none at request time means 503 `UH`.
    pub endpoints: ClusterEndpoints,
    /// The port that traffic leaves on, for original-destination clusters.
    pub port: u32,
    /// Load balancing, connection pool limits and outlier detection (DestinationRule).
    pub policy: ClusterPolicy,
    next: AtomicUsize,
}

impl Cluster {
    /// A cluster with the round-robin position at the start.
    pub fn new(name: String, endpoints: ClusterEndpoints, port: u32) -> Cluster {
        Cluster {
            name: name.into(),
            endpoints,
            port,
            policy: ClusterPolicy::default(),
            next: AtomicUsize::new(0),
        }
    }

    /// The same cluster with a DestinationRule's policy.
    pub fn with_policy(mut self, policy: ClusterPolicy) -> Cluster {
        self.policy = policy;
        self
    }

    /// Round robin: the index of the next endpoint of `count`.
    pub fn next_index(&self, count: usize) -> usize {
        if count <= 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % count
        }
    }
}

/// Istio's cluster name for an outbound destination.
pub fn outbound_cluster_name(port: u32, subset: &str, host: &str) -> String {
    format!("outbound|{port}|{subset}|{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind of failed condition is put into words for `trace`, while `matches`
    /// answers the same question without building any text.
    #[test]
    fn every_failed_condition_is_explained_and_matching_agrees() {
        let mut headers = HeaderMap::new();
        headers.insert("end-user", http::HeaderValue::from_static("jason"));
        let req = RequestView {
            method: "GET",
            scheme: "http",
            authority: "a.example",
            path_and_query: "/b?tag=x",
            headers: &headers,
        };
        let exact = |s: &str| Some(StrMatcher::Exact(s.into()));
        let header = |name: &str, value: Option<StrMatcher>, invert: bool| HeaderCondition {
            name: name.into(),
            value,
            invert,
        };
        let cases = [
            (
                RouteMatch {
                    scheme: exact("https"),
                    ..Default::default()
                },
                "scheme \"http\" does not match exact \"https\"",
            ),
            (
                RouteMatch {
                    method: Some(StrMatcher::Prefix("PO".into())),
                    ..Default::default()
                },
                "method \"GET\" does not match prefix \"PO\"",
            ),
            (
                RouteMatch {
                    authority: Some(StrMatcher::Regex(Regex::new("^b.*$").expect("regex"))),
                    ..Default::default()
                },
                "authority \"a.example\" does not match regex \"^b.*$\"",
            ),
            (
                RouteMatch {
                    headers: vec![header("end-user", exact("mary"), false)],
                    ..Default::default()
                },
                "header end-user value \"jason\" does not match",
            ),
            (
                RouteMatch {
                    headers: vec![header("end-user", exact("jason"), true)],
                    ..Default::default()
                },
                "header end-user matches (withoutHeaders; a missing header counts as empty)",
            ),
            (
                RouteMatch {
                    query_params: vec![("tag".into(), StrMatcher::Exact("y".into()))],
                    ..Default::default()
                },
                "query parameter tag does not match",
            ),
        ];
        for (matcher, words) in cases {
            assert!(!matcher.matches(&req), "{words}");
            assert_eq!(matcher.explain_mismatch(&req).as_deref(), Some(words));
        }
        let all = RouteMatch {
            uri: Some(StrMatcher::Prefix("/b".into())),
            method: exact("GET"),
            headers: vec![header("end-user", exact("jason"), false)],
            query_params: vec![("tag".into(), StrMatcher::Exact("x".into()))],
            ..Default::default()
        };
        assert!(all.matches(&req));
        assert_eq!(all.explain_mismatch(&req), None);
    }

    #[test]
    fn rewrite_keeps_query_and_replaces_prefix() {
        let exact = UriRewrite {
            matched_prefix: None,
            replacement: "/".into(),
        };
        assert_eq!(exact.apply("/service-a"), "/");
        assert_eq!(exact.apply("/service-a?x=1"), "/?x=1");
        let prefix = UriRewrite {
            matched_prefix: Some("/api".into()),
            replacement: "/v2".into(),
        };
        assert_eq!(prefix.apply("/api/items?q"), "/v2/items?q");
        let root = UriRewrite {
            matched_prefix: Some("/".into()),
            replacement: "/v2/".into(),
        };
        assert_eq!(root.apply("/foo"), "/v2/foo");
    }

    #[test]
    fn strip_port_handles_ipv6_and_names() {
        assert_eq!(strip_port("a:80"), "a");
        assert_eq!(strip_port("a"), "a");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a:"), "a");
        assert_eq!(strip_port("a:b:80"), "a:b");
        assert_eq!(strip_port("a:8x"), "a:8x");
        assert_eq!(strip_port("8080"), "8080");
        assert_eq!(strip_port(":80"), "");
        assert_eq!(strip_port(""), "");
    }

    #[test]
    fn weighted_pick_respects_weights() {
        let f = ForwardAction {
            clusters: vec![
                WeightedCluster {
                    cluster: "a".into(),
                    weight: 10,
                    ..Default::default()
                },
                WeightedCluster {
                    cluster: "b".into(),
                    weight: 90,
                    ..Default::default()
                },
            ],
            total_weight: 100,
            ..Default::default()
        };
        let a = (0..1000u64)
            .filter(|i| f.pick(*i).map(|c| c.cluster.as_str()) == Some("a"))
            .count();
        assert_eq!(a, 100);
    }
}
