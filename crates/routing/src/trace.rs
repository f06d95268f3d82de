//! `meshbox trace`: how one proxy routes one request, step by step, in plain words.
//!
//! [`trace`] walks a proxy's [`ProxyTables`] the way the data plane does (listener
//! port → route table → virtual host → first matching route → clusters → endpoints)
//! and records each step: the virtual host and the domain that chose it, every rule
//! tried before the one that matched and why it did not match, the rule that matched
//! with the file and line it came from, the destinations with their weights,
//! rewrites and timeout, and the endpoints. When the request is refused (404 `NR`,
//! 502 from `block_all`, 503 `NC` or `UH`) the trace says why and, given the mesh's
//! configuration ([`TraceContext`]), which resource would change that. When a
//! destination is a gateway of the mesh (a sidecar sending to the egress gateway),
//! the trace follows the request into that gateway.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use meshbox_config::{Kind, OutboundPolicy, Spec};

use crate::build::effective_gateways;
use crate::build::{host_matches, MeshState, MESH_GATEWAY};
use crate::dump::{describe_action, describe_match, format_duration, kind_name, percent};
use crate::registry::{resolve_short_name, selects, ServiceInfo, ServiceSource, WorkloadInstance};
use crate::tables::{
    strip_port, ClusterEndpoints, ForwardAction, ProxyKind, ProxyTables, RequestView, Route,
    RouteAction, VirtualHost, ALLOW_ANY_ROUTE, BLOCK_ALL_ROUTE, PASSTHROUGH_CLUSTER,
};

/// How many proxies a trace follows (sidecar → egress gateway → ...).
const MAX_HOPS: usize = 4;

/// A request as a workload (through its sidecar) or a client (at a gateway) sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    /// The method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The URL's authority as written: `host` or `host:port`.
    pub authority: String,
    /// The URL's port, or the scheme's default (80, 443).
    pub port: u32,
    /// Path and query, `/` when the URL has none.
    pub path_and_query: String,
    /// Extra request headers (`-H 'Name: value'`), in order.
    pub headers: Vec<(String, String)>,
}

impl TraceRequest {
    /// Reads curl-style arguments: `-X METHOD`, a URL (`http://` is assumed when it has
    /// no scheme) and `-H 'Name: value'` headers.
    pub fn parse(method: &str, url: &str, headers: &[String]) -> Result<TraceRequest, String> {
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let uri: http::Uri = full
            .parse()
            .map_err(|e| format!("error: bad URL {url:?}: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "error: bad URL {url:?}: only http:// and https:// URLs can be traced"
            ));
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_string())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("error: bad URL {url:?}: no host"))?;
        let port = match uri.port_u16() {
            Some(p) => u32::from(p),
            None if scheme == "https" => 443,
            None => 80,
        };
        let path_and_query = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let method = method.trim().to_ascii_uppercase();
        if method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err() {
            return Err(format!("error: bad method {method:?}"));
        }
        let mut parsed = Vec::new();
        for h in headers {
            let (name, value) = h
                .split_once(':')
                .ok_or_else(|| format!("error: bad header {h:?}: expected 'Name: value'"))?;
            let name = name.trim();
            let value = value.trim();
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("error: bad header name {name:?}"))?;
            HeaderValue::from_str(value)
                .map_err(|_| format!("error: bad value for header {name}: {value:?}"))?;
            parsed.push((name.to_string(), value.to_string()));
        }
        Ok(TraceRequest {
            method,
            scheme,
            authority,
            port,
            path_and_query,
            headers: parsed,
        })
    }

    /// The `Host` header given with `-H`, if any.
    pub fn host_header(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("host"))
            .map(|(_, v)| v.as_str())
    }

    /// The URL, rebuilt: `scheme://authority/path?query`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.scheme, self.authority, self.path_and_query
        )
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                map.append(k, v);
            }
        }
        map
    }
}

/// What the trace knows beyond the proxy's tables: the mesh's configuration and pods,
/// for naming endpoints, explaining refusals and following the request into gateways.
pub struct TraceContext<'a> {
    /// The configuration, install options, registry and running (or would-be) pods.
    pub state: &'a MeshState<'a>,
    /// The pod whose proxy is traced.
    pub proxy: &'a WorkloadInstance,
}

/// A VirtualService rule (or a generated route) that the trace looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The Envoy route's name (`default`, `block_all`, the rule's `name`); may be empty.
    pub route_name: String,
    /// `namespace/name` of the VirtualService, when the route came from one.
    pub virtual_service: Option<String>,
    /// Index of the rule in the VirtualService's `http` list.
    pub rule: Option<usize>,
    /// Index of the match within the rule, when the rule has matches.
    pub match_index: Option<usize>,
    /// `file:line` of the VirtualService's document.
    pub origin: Option<String>,
    /// The route's match conditions, in words.
    pub conditions: String,
    /// When the rule delegates: the delegate VirtualService's rule merged into this
    /// route, in words (`rule http[0] (match 1) of VirtualService ns/name at file:line`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delegate: Option<String>,
}

impl RuleRef {
    fn of(route: &Route) -> RuleRef {
        RuleRef {
            route_name: route.name.to_string(),
            virtual_service: route.source.as_ref().map(|s| s.virtual_service.clone()),
            rule: route.source.as_ref().map(|s| s.rule),
            match_index: route.source.as_ref().and_then(|s| s.match_index),
            origin: route
                .source
                .as_ref()
                .map(|s| format!("{}:{}", s.origin.file, s.origin.line)),
            conditions: describe_match(&route.matcher),
            delegate: route
                .source
                .as_ref()
                .and_then(|s| s.delegate.as_ref())
                .map(|d| {
                    format!(
                        "rule http[{}]{} of VirtualService {} at {}:{}",
                        d.rule,
                        d.match_index
                            .map(|i| format!(" (match {i})"))
                            .unwrap_or_default(),
                        d.virtual_service,
                        d.origin.file,
                        d.origin.line
                    )
                }),
        }
    }

    /// `rule http[1] (match 0) of VirtualService ns/name`, or the generated route's name.
    pub fn describe(&self) -> String {
        let own = self.describe_own();
        match &self.delegate {
            Some(d) => format!("{own}, delegated to {d}"),
            None => own,
        }
    }

    fn describe_own(&self) -> String {
        match (&self.virtual_service, self.rule) {
            (Some(vs), Some(rule)) => {
                let m = match self.match_index {
                    Some(i) => format!(", match {i}"),
                    None => String::new(),
                };
                if self.route_name.is_empty() {
                    format!(
                        "rule http[{rule}]{} of VirtualService {vs}",
                        match self.match_index {
                            Some(i) => format!(" (match {i})"),
                            None => String::new(),
                        }
                    )
                } else {
                    format!(
                        "rule {:?} (http[{rule}]{m}) of VirtualService {vs}",
                        self.route_name
                    )
                }
            }
            _ if self.route_name == "default" => {
                "the default route (no VirtualService applies to this host)".to_string()
            }
            _ => format!("route {:?}", self.route_name),
        }
    }
}

/// One endpoint of a destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointStep {
    /// `ip:port`, or `name:port` for endpoints resolved by DNS when used.
    pub address: String,
    /// The pod behind the address, when it is one of the mesh's.
    pub pod: Option<String>,
}

/// Why a destination cannot take the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The status the proxy answers with (503).
    pub status: u16,
    /// Envoy's response flag: `NC` (no cluster) or `UH` (no healthy upstream).
    pub flag: String,
    /// Why, in words.
    pub why: String,
    /// What would change it.
    pub fixes: Vec<String>,
}

/// One destination cluster of a matched route.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStep {
    /// The cluster's name, `outbound|PORT|SUBSET|HOST`.
    pub cluster: String,
    /// The destination's weight.
    pub weight: u32,
    /// The weight as a share of the route's total, e.g. `50%`.
    pub share: String,
    /// How its endpoints are found: `EDS`, `STRICT_DNS`, `ORIGINAL_DST`; empty when the
    /// cluster does not exist.
    pub discovery: String,
    /// Its endpoints (none for original-destination clusters).
    pub endpoints: Vec<EndpointStep>,
    /// The cluster's DestinationRule policy (load balancing, connection pool, outlier
    /// detection), in words.
    pub policy: Vec<String>,
    /// Set when requests sent here fail at this proxy.
    pub problem: Option<Problem>,
    /// When the endpoints are a gateway of the mesh: the trace at that gateway.
    pub next_hop: Option<Box<Trace>>,
}

/// One step of a trace.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// The listener that takes the request and the route table it reads.
    Listener {
        /// The port whose route table is read (the Service port for gateways).
        port: u32,
        /// The route table's name, when there is one for this port.
        route_table: Option<String>,
        /// What happens, in words.
        words: String,
    },
    /// The virtual host chosen for the request's authority.
    VirtualHost {
        /// Its name.
        name: String,
        /// The domain that matched.
        domain: String,
        /// Why it was chosen, in words.
        why: String,
    },
    /// No virtual host of the route table answers the authority.
    NoVirtualHost {
        /// The authority looked up.
        authority: String,
        /// Every domain the route table answers.
        domains: Vec<String>,
    },
    /// The sidecar's catch-all: `block_all` (REGISTRY_ONLY) or `allow_any` (ALLOW_ANY).
    CatchAll {
        /// `block_all` or `allow_any`.
        route: String,
        /// Why the request ended there, in words.
        why: String,
    },
    /// A route tried before the match, and the first condition it failed.
    RuleSkipped {
        /// The route.
        rule: RuleRef,
        /// Why it did not match.
        reason: String,
    },
    /// The route that matched.
    RuleMatched {
        /// The route.
        rule: RuleRef,
    },
    /// Forwarding to weighted clusters.
    Forward {
        /// The destinations, with weights and endpoints.
        clusters: Vec<ClusterStep>,
        /// `rewrite.uri`: the path sent upstream, in words.
        rewrite: Option<String>,
        /// `rewrite.authority`: the Host sent upstream.
        authority_rewrite: Option<String>,
        /// The route timeout, or `none`.
        timeout: String,
        /// Retries, fault injection, mirrors, CORS and header operations, in words.
        policies: Vec<String>,
    },
    /// The proxy answers with a redirect.
    Redirect {
        /// The status, 301 unless given.
        status: u16,
        /// The `Location` sent.
        location: String,
    },
    /// The proxy answers directly.
    DirectResponse {
        /// The status.
        status: u16,
        /// The body, may be empty.
        body: String,
    },
    /// The request goes to its original destination (PassthroughCluster).
    Passthrough {
        /// The destination host.
        host: String,
        /// The destination port.
        port: u32,
    },
    /// A route action this version of `trace` does not describe in detail.
    OtherAction {
        /// The action as the tables hold it.
        action: String,
    },
}

/// How the trace ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the request leaves this proxy for an upstream.
    pub forwarded: bool,
    /// The status the proxy answers with itself, when it does (404, 502, 503, a direct response).
    pub status: Option<u16>,
    /// Envoy's response flag for a refusal (`NR`, `NC`, `UH`), `-` otherwise.
    pub flags: String,
    /// What happens, in plain words.
    pub summary: String,
    /// Which resource would change the outcome, for refusals.
    pub fixes: Vec<String>,
}

/// The route of one request through one proxy (and the gateways it leads to).
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The proxy's pod.
    pub proxy: String,
    /// The pod's namespace.
    pub namespace: String,
    /// `sidecar` or `gateway`.
    pub kind: String,
    /// The request as this proxy receives it.
    pub request: TraceRequest,
    /// The authority the proxy routes on.
    pub authority: String,
    /// The port whose route table is read.
    pub port: u32,
    /// What happened, in order.
    pub steps: Vec<Step>,
    /// How it ends.
    pub verdict: Verdict,
}

impl Trace {
    /// The trace as pretty JSON.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Every step of this trace and of the hops it leads to, depth first.
    pub fn all_steps(&self) -> Vec<&Step> {
        let mut out = Vec::new();
        for s in &self.steps {
            out.push(s);
            if let Step::Forward { clusters, .. } = s {
                for c in clusters {
                    if let Some(next) = &c.next_hop {
                        out.extend(next.all_steps());
                    }
                }
            }
        }
        out
    }
}

/// Traces `request` through the proxy whose tables are `tables`. With a context, the
/// trace names the pods behind endpoints, says which resource would change a refusal,
/// and follows the request into the mesh's gateways.
pub fn trace(
    tables: &ProxyTables,
    request: &TraceRequest,
    ctx: Option<&TraceContext<'_>>,
) -> Trace {
    trace_at(tables, request, ctx, 0)
}

fn trace_at(
    tables: &ProxyTables,
    request: &TraceRequest,
    ctx: Option<&TraceContext<'_>>,
    depth: usize,
) -> Trace {
    let mut steps = Vec::new();
    let (authority, port, verdict) = match tables.kind {
        ProxyKind::Sidecar => {
            let authority = request.authority.clone();
            let verdict = trace_sidecar(tables, request, &authority, ctx, depth, &mut steps);
            (authority, request.port, verdict)
        }
        ProxyKind::Gateway => {
            let authority = request
                .host_header()
                .unwrap_or(&request.authority)
                .to_string();
            let (port, note) = gateway_port(tables, request, ctx);
            let verdict = trace_gateway(
                tables, request, &authority, port, note, ctx, depth, &mut steps,
            );
            (authority, port, verdict)
        }
    };
    Trace {
        proxy: tables.proxy.clone(),
        namespace: tables.namespace.clone(),
        kind: kind_name(tables.kind).to_string(),
        request: request.clone(),
        authority,
        port,
        steps,
        verdict,
    }
}

fn host_of(authority: &str) -> String {
    strip_port(&authority.to_ascii_lowercase())
        .trim_end_matches('.')
        .to_string()
}

fn trace_sidecar(
    tables: &ProxyTables,
    request: &TraceRequest,
    authority: &str,
    ctx: Option<&TraceContext<'_>>,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Verdict {
    let port = request.port;
    let host = host_of(authority);
    let table = tables.route_table(port);
    let mut words = format!(
        "the sidecar's outbound listener takes the request (the workload sends all its HTTP \
         through it, as HTTP_PROXY); port {port} selects "
    );
    match table {
        Some(t) => words.push_str(&format!("route table {:?}", t.name)),
        None => words.push_str(&format!(
            "no route table: no service of the mesh has an HTTP port {port}, so the catch-all applies"
        )),
    }
    if let Some(h) = request.host_header() {
        if !h.eq_ignore_ascii_case(authority) {
            words.push_str(&format!(
                "; the sidecar routes on the URL's authority {authority:?}, not on the Host header {h:?}"
            ));
        }
    }
    steps.push(Step::Listener {
        port,
        route_table: table.map(|t| t.name.clone()),
        words,
    });
    let Some(table) = table else {
        return catch_all(tables.outbound_policy, &host, port, None, ctx, steps);
    };
    let Some(vh) = table.select_virtual_host(authority) else {
        steps.push(Step::NoVirtualHost {
            authority: authority.to_string(),
            domains: table
                .virtual_hosts
                .iter()
                .flat_map(|v| v.domains.iter().cloned())
                .collect(),
        });
        return refused(
            404,
            "NR",
            format!(
                "no virtual host of route table {} answers {authority:?}",
                table.name
            ),
            Vec::new(),
        );
    };
    if vh.catch_all.is_some() {
        return catch_all(tables.outbound_policy, &host, port, Some(vh), ctx, steps);
    }
    let (domain, why) = explain_domain(vh, authority);
    steps.push(Step::VirtualHost {
        name: vh.name.clone(),
        domain,
        why,
    });
    route_in_vhost(tables, vh, request, authority, port, ctx, depth, steps)
}

/// The port whose route table a gateway reads for a request sent to `request.port`:
/// a Service port as is, a container port or a listen address's port mapped to the
/// Service port it carries.
fn gateway_port(
    tables: &ProxyTables,
    request: &TraceRequest,
    ctx: Option<&TraceContext<'_>>,
) -> (u32, Option<String>) {
    let p = request.port;
    if tables.gateway_ports.iter().any(|(_, sp)| *sp == p) || tables.route_tables.contains_key(&p) {
        return (p, None);
    }
    if let Some((c, sp)) = tables.gateway_ports.iter().find(|(c, _)| *c == p) {
        return (
            *sp,
            Some(format!(
                "port {c} is the gateway pod's container port for its Service port {sp}"
            )),
        );
    }
    if let Some(ctx) = ctx {
        for (target, addr) in &ctx.proxy.inbound {
            if u32::from(addr.port()) == p {
                if let Some((_, sp)) = tables.gateway_ports.iter().find(|(c, _)| c == target) {
                    return (
                        *sp,
                        Some(format!(
                            "{addr} is where meshbox runs the gateway's Service port {sp}"
                        )),
                    );
                }
            }
        }
    }
    let fallback = if tables.gateway_ports.iter().any(|(_, sp)| *sp == 80)
        || tables.gateway_ports.is_empty()
    {
        80
    } else {
        tables.gateway_ports[0].1
    };
    (
        fallback,
        Some(format!(
            "port {p} is none of the gateway's ports; traced as if sent to its Service port {fallback}"
        )),
    )
}

#[allow(clippy::too_many_arguments)]
fn trace_gateway(
    tables: &ProxyTables,
    request: &TraceRequest,
    authority: &str,
    port: u32,
    note: Option<String>,
    ctx: Option<&TraceContext<'_>>,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Verdict {
    let table = tables.route_table(port);
    let container = tables
        .gateway_ports
        .iter()
        .find(|(_, sp)| *sp == port)
        .map(|(c, _)| format!(" (container port {c})"))
        .unwrap_or_default();
    let mut words =
        format!("the gateway's listener for Service port {port}{container} takes the request; ");
    match table {
        Some(t) => words.push_str(&format!("it reads route table {:?}", t.name)),
        None => words.push_str(&format!(
            "there is no route table http.{port}: no Gateway resource gives this gateway an HTTP server on port {port}"
        )),
    }
    if let Some(n) = note {
        words.push_str(&format!(" ({n})"));
    }
    steps.push(Step::Listener {
        port,
        route_table: table.map(|t| t.name.clone()),
        words,
    });
    let host = host_of(authority);
    let Some(table) = table else {
        let fixes = ctx
            .map(|c| gateway_fixes(c, port, &host, false))
            .unwrap_or_default();
        return refused(
            404,
            "NR",
            format!(
                "the gateway has no routes on port {port}, so it answers 404 Not Found (route_not_found)"
            ),
            fixes,
        );
    };
    let Some(vh) = table.select_virtual_host(authority) else {
        let domains: Vec<String> = table
            .virtual_hosts
            .iter()
            .flat_map(|v| v.domains.iter().cloned())
            .collect();
        steps.push(Step::NoVirtualHost {
            authority: authority.to_string(),
            domains: domains.clone(),
        });
        let fixes = ctx
            .map(|c| gateway_fixes(c, port, &host, true))
            .unwrap_or_default();
        return refused(
            404,
            "NR",
            format!(
                "no virtual host of route table {} answers the Host {authority:?} (it answers: {}), so the gateway answers 404 Not Found (route_not_found)",
                table.name,
                if domains.is_empty() { "nothing".to_string() } else { domains.join(", ") }
            ),
            fixes,
        );
    };
    let (domain, why) = explain_domain(vh, authority);
    steps.push(Step::VirtualHost {
        name: vh.name.clone(),
        domain,
        why,
    });
    route_in_vhost(tables, vh, request, authority, port, ctx, depth, steps)
}

/// Which domain of `vh` the authority matched, and why, the way
/// `RouteTable::select_virtual_host` chooses.
fn explain_domain(vh: &VirtualHost, authority: &str) -> (String, String) {
    let lower = authority.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    let without_port = strip_port(lower);
    if let Some(d) = vh.domains.iter().find(|d| d.as_str() == lower) {
        return (
            d.clone(),
            format!("the Host {authority:?} is one of its domains"),
        );
    }
    if let Some(d) = vh.domains.iter().find(|d| d.as_str() == without_port) {
        return (
            d.clone(),
            format!("the Host without its port, {without_port:?}, is one of its domains"),
        );
    }
    let mut suffixes: Vec<&String> = vh
        .domains
        .iter()
        .filter(|d| d.len() > 1 && d.starts_with('*'))
        .collect();
    suffixes.sort_by_key(|d| std::cmp::Reverse(d.len()));
    if let Some(d) = suffixes
        .into_iter()
        .find(|d| without_port.ends_with(&d[1..]) && without_port.len() > d.len() - 1)
    {
        return (
            d.clone(),
            format!("the Host {without_port:?} matches its wildcard domain {d:?}"),
        );
    }
    (
        "*".to_string(),
        format!("no other virtual host claims {without_port:?}, and this one answers every host (\"*\")"),
    )
}

fn refused(status: u16, flag: &str, summary: String, fixes: Vec<String>) -> Verdict {
    Verdict {
        forwarded: false,
        status: Some(status),
        flags: flag.to_string(),
        summary,
        fixes,
    }
}

/// The sidecar's catch-all for a host the registry does not know (on this port).
fn catch_all(
    policy: OutboundPolicy,
    host: &str,
    port: u32,
    vh: Option<&VirtualHost>,
    ctx: Option<&TraceContext<'_>>,
    steps: &mut Vec<Step>,
) -> Verdict {
    let known = ctx.and_then(|c| lookup_host(c, host));
    // A service that a Sidecar's egress hosts or an exportTo hide is handled like an
    // unknown host (sidecar.go, push_context.go servicesExportedToNamespace).
    let hidden = ctx.zip(known).and_then(|(c, svc)| {
        c.state
            .hidden_reason(c.proxy, &svc.hostname, port)
            .map(|why| (why, svc))
    });
    // Who sets the outbound traffic policy: the workload's Sidecar or the mesh.
    let policy_from = ctx
        .and_then(|c| c.state.outbound_policy_origin(c.proxy))
        .unwrap_or_else(|| "meshConfig.outboundTrafficPolicy.mode".to_string());
    let why_unknown = match (known, &hidden) {
        (_, Some((why, _))) => why.clone(),
        (Some(svc), None) => format!(
            "{host} is {} but has no HTTP port {port} (its ports: {})",
            svc.defined_by,
            svc.ports
                .iter()
                .map(|p| p.port.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (None, None) => {
            format!("{host} is no service of the mesh (no Service or ServiceEntry defines it)")
        }
    };
    match policy {
        OutboundPolicy::RegistryOnly => {
            let route = vh
                .and_then(|v| v.routes.first())
                .map(|r| r.name.to_string())
                .unwrap_or_else(|| BLOCK_ALL_ROUTE.to_string());
            steps.push(Step::CatchAll {
                route: route.clone(),
                why: format!(
                    "{why_unknown}, and {policy_from} is REGISTRY_ONLY: the catch-all virtual host's route {route} refuses it"
                ),
            });
            let mut fixes = Vec::new();
            if let Some((_, svc)) = &hidden {
                fixes.push(format!(
                    "make {} visible to this workload: include {}/{} in its Sidecar's egress hosts, and list its namespace in the exportTo of {}",
                    svc.hostname, svc.namespace, svc.hostname, svc.defined_by
                ));
            } else if known.is_none() {
                fixes.push(format!(
                    "add a ServiceEntry for {host}: hosts: [{host}], ports: [{{number: {port}, name: http, protocol: HTTP}}], resolution: DNS, location: MESH_EXTERNAL"
                ));
            } else {
                fixes.push(format!(
                    "give {host} an HTTP port {port}, or call it on one of its ports"
                ));
            }
            if policy_from.starts_with("Sidecar") {
                fixes.push(format!(
                    "or let this workload reach unknown hosts: set outboundTrafficPolicy.mode ALLOW_ANY in {}",
                    policy_from.trim_end_matches("'s outboundTrafficPolicy.mode")
                ));
            } else {
                fixes.push(
                    "or let every workload reach unknown hosts: install with --set meshConfig.outboundTrafficPolicy.mode=ALLOW_ANY"
                        .to_string(),
                );
            }
            refused(
                502,
                "-",
                format!(
                    "the sidecar refuses the request with 502 Bad Gateway and no body (route {route}, response details direct_response); had {host} been unknown to DNS, the answer would be 503 DF"
                ),
                fixes,
            )
        }
        OutboundPolicy::AllowAny => {
            let route = vh
                .and_then(|v| v.routes.first())
                .map(|r| r.name.to_string())
                .unwrap_or_else(|| ALLOW_ANY_ROUTE.to_string());
            steps.push(Step::CatchAll {
                route: route.clone(),
                why: format!(
                    "{why_unknown}; {policy_from} is ALLOW_ANY, so the catch-all route {route} lets it out"
                ),
            });
            steps.push(Step::Passthrough {
                host: host.to_string(),
                port,
            });
            Verdict {
                forwarded: true,
                status: None,
                flags: "-".into(),
                summary: format!(
                    "forwarded to {host}:{port} as addressed ({PASSTHROUGH_CLUSTER}), outside the mesh's routing: no VirtualService, DestinationRule or policy applies; a name unknown to DNS gives 503 DF"
                ),
                fixes: Vec::new(),
            }
        }
    }
}

/// The registry service a sidecar's authority names, after short-name expansion in
/// the proxy's namespace.
fn lookup_host<'c>(ctx: &'c TraceContext<'_>, host: &str) -> Option<&'c ServiceInfo> {
    let services = &ctx.state.registry.services;
    services
        .get(&resolve_short_name(host, &ctx.proxy.namespace))
        .or_else(|| services.get(&format!("{host}.svc.cluster.local")))
        .or_else(|| services.get(&format!("{host}.cluster.local")))
}

#[allow(clippy::too_many_arguments)]
fn route_in_vhost(
    tables: &ProxyTables,
    vh: &VirtualHost,
    request: &TraceRequest,
    authority: &str,
    port: u32,
    ctx: Option<&TraceContext<'_>>,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Verdict {
    let headers = request.header_map();
    let view = RequestView {
        method: &request.method,
        scheme: &request.scheme,
        authority,
        path_and_query: &request.path_and_query,
        headers: &headers,
    };
    let mut matched = None;
    for route in &vh.routes {
        match route.matcher.explain_mismatch(&view) {
            Some(reason) => steps.push(Step::RuleSkipped {
                rule: RuleRef::of(route),
                reason,
            }),
            None => {
                steps.push(Step::RuleMatched {
                    rule: RuleRef::of(route),
                });
                matched = Some(route);
                break;
            }
        }
    }
    let Some(route) = matched else {
        let mut vss: Vec<String> = vh
            .routes
            .iter()
            .filter_map(|r| r.source.as_ref().map(|s| s.virtual_service.clone()))
            .collect();
        vss.dedup();
        let fixes = if vss.is_empty() {
            Vec::new()
        } else {
            vec![format!(
                "change a match above, or end the http rules of VirtualService {} with a rule without match conditions (a default route)",
                vss.join(", ")
            )]
        };
        return refused(
            404,
            "NR",
            format!(
                "no route of virtual host {} matches the request, so the proxy answers 404 Not Found (route_not_found)",
                vh.name
            ),
            fixes,
        );
    };
    #[allow(unreachable_patterns)]
    match &route.action {
        RouteAction::Forward(fwd) => forward(tables, fwd, request, authority, ctx, depth, steps),
        RouteAction::DirectResponse { status, body } => {
            steps.push(Step::DirectResponse {
                status: *status,
                body: body.clone(),
            });
            let is_block_all = &*route.name == BLOCK_ALL_ROUTE;
            Verdict {
                forwarded: false,
                status: Some(*status),
                flags: "-".into(),
                summary: if is_block_all {
                    "refused: the block_all route answers 502".to_string()
                } else {
                    format!(
                        "the proxy answers {status} itself (directResponse){}",
                        if body.is_empty() {
                            String::new()
                        } else {
                            format!(" with body {body:?}")
                        }
                    )
                },
                fixes: Vec::new(),
            }
        }
        RouteAction::Passthrough => {
            let host = host_of(authority);
            steps.push(Step::Passthrough {
                host: host.clone(),
                port,
            });
            Verdict {
                forwarded: true,
                status: None,
                flags: "-".into(),
                summary: format!("forwarded to {host}:{port} as addressed ({PASSTHROUGH_CLUSTER})"),
                fixes: Vec::new(),
            }
        }
        RouteAction::Redirect(r) => {
            let location = r.location(&request.scheme, authority, &request.path_and_query);
            steps.push(Step::Redirect {
                status: r.code,
                location: location.clone(),
            });
            Verdict {
                forwarded: false,
                status: Some(r.code),
                flags: "-".into(),
                summary: format!("the proxy answers with a redirect to {location}"),
                fixes: Vec::new(),
            }
        }
        other => {
            let action = describe_action(other);
            steps.push(Step::OtherAction {
                action: action.clone(),
            });
            Verdict {
                forwarded: false,
                status: None,
                flags: "-".into(),
                summary: format!("the route's action: {action}"),
                fixes: Vec::new(),
            }
        }
    }
}

fn forward(
    tables: &ProxyTables,
    fwd: &ForwardAction,
    request: &TraceRequest,
    authority: &str,
    ctx: Option<&TraceContext<'_>>,
    depth: usize,
    steps: &mut Vec<Step>,
) -> Verdict {
    let mut new_path = fwd
        .uri_rewrite
        .as_ref()
        .map(|r| r.apply(&request.path_and_query));
    if let Some(rr) = &fwd.regex_rewrite {
        new_path = Some(rr.apply(new_path.as_deref().unwrap_or(&request.path_and_query)));
    }
    let upstream_authority = fwd
        .authority_rewrite
        .clone()
        .unwrap_or_else(|| authority.to_string());
    let mut clusters = Vec::new();
    for wc in &fwd.clusters {
        let mut step = ClusterStep {
            cluster: wc.cluster.clone(),
            weight: wc.weight,
            share: percent(wc.weight, fwd.total_weight),
            discovery: String::new(),
            endpoints: Vec::new(),
            policy: Vec::new(),
            problem: None,
            next_hop: None,
        };
        match tables.clusters.get(&wc.cluster) {
            None => {
                step.problem = Some(Problem {
                    status: 503,
                    flag: "NC".into(),
                    why: format!("cluster {} does not exist at this proxy", wc.cluster),
                    fixes: ctx.map(|c| nc_fixes(c, &wc.cluster)).unwrap_or_default(),
                });
            }
            Some(cluster) => {
                step.policy = crate::dump::describe_cluster_policy(&cluster.policy);
                match &cluster.endpoints {
                    ClusterEndpoints::Static(addrs) => {
                        step.discovery = "EDS".into();
                        step.endpoints = addrs
                            .iter()
                            .map(|a| EndpointStep {
                                address: a.to_string(),
                                pod: ctx.and_then(|c| pod_at(c, a)).map(|w| w.name.clone()),
                            })
                            .collect();
                        if addrs.is_empty() {
                            step.problem = Some(Problem {
                                status: 503,
                                flag: "UH".into(),
                                why: format!(
                                    "cluster {} has no endpoints: no healthy upstream",
                                    wc.cluster
                                ),
                                fixes: ctx.map(|c| uh_fixes(c, &wc.cluster)).unwrap_or_default(),
                            });
                        } else if let Some(ctx) = ctx.filter(|_| depth + 1 < MAX_HOPS) {
                            step.next_hop = next_hop(
                                ctx,
                                addrs,
                                request,
                                &upstream_authority,
                                new_path.as_deref(),
                                depth,
                            );
                        }
                    }
                    ClusterEndpoints::Dns(names) => {
                        step.discovery = "STRICT_DNS".into();
                        step.endpoints = names
                            .iter()
                            .map(|(n, p)| EndpointStep {
                                address: format!("{n}:{p}"),
                                pod: None,
                            })
                            .collect();
                        if names.is_empty() {
                            step.problem = Some(Problem {
                                status: 503,
                                flag: "UH".into(),
                                why: format!("cluster {} has no endpoints", wc.cluster),
                                fixes: Vec::new(),
                            });
                        }
                    }
                    ClusterEndpoints::OriginalDestination => {
                        step.discovery = "ORIGINAL_DST".into();
                    }
                }
            }
        }
        clusters.push(step);
    }
    let rewrite = new_path.as_ref().and_then(|p| {
        (p != &request.path_and_query)
            .then(|| format!("{:?} is sent upstream as {p:?}", request.path_and_query))
    });
    steps.push(Step::Forward {
        clusters: clusters.clone(),
        rewrite,
        authority_rewrite: fwd.authority_rewrite.clone(),
        timeout: match fwd.timeout {
            Some(t) => format_duration(t),
            None => "none".into(),
        },
        policies: describe_policies(fwd),
    });
    let mut verdict = forward_verdict(&clusters);
    if let Some(fault) = &fwd.fault {
        if let Some((status, pct)) = fault.abort {
            if pct >= 100.0 {
                return refused(
                    status,
                    "FI",
                    format!(
                        "the route's fault injection aborts every request with {status} before it is forwarded (fault_filter_abort)"
                    ),
                    vec!["remove or lower the rule's fault.abort".to_string()],
                );
            }
            if pct > 0.0 {
                verdict.summary.push_str(&format!(
                    "; fault injection aborts {pct}% of requests with {status} (flag FI)"
                ));
            }
        }
    }
    verdict
}

/// The route's retries, fault, mirrors, CORS and header operations, in words.
fn describe_policies(fwd: &ForwardAction) -> Vec<String> {
    let mut out = Vec::new();
    let r = &fwd.retry;
    if r.attempts == 0 {
        out.push("retries: none".to_string());
    } else {
        let mut on = Vec::new();
        if r.on.connect_failure {
            on.push("connect-failure".to_string());
        }
        if r.on.reset {
            on.push("reset".to_string());
        }
        if r.on.five_xx {
            on.push("5xx".to_string());
        }
        if r.on.gateway_error {
            on.push("gateway-error".to_string());
        }
        if r.on.retriable_4xx {
            on.push("retriable-4xx".to_string());
        }
        on.extend(r.on.status_codes.iter().map(|c| c.to_string()));
        let default = if *r == crate::policy::RetryPolicy::istio_default() {
            " (Istio's default policy)"
        } else {
            ""
        };
        let per_try = r
            .per_try_timeout
            .map(|t| format!(", {} per try", format_duration(t)))
            .unwrap_or_default();
        out.push(format!(
            "retries: up to {} on {}{per_try}{default}",
            r.attempts,
            on.join(", ")
        ));
    }
    if let Some(f) = &fwd.fault {
        if let Some((d, pct)) = f.delay {
            out.push(format!(
                "fault: {pct}% of requests delayed by {}",
                format_duration(d)
            ));
        }
        if let Some((status, pct)) = f.abort {
            out.push(format!("fault: {pct}% of requests aborted with {status}"));
        }
    }
    for m in &fwd.mirrors {
        out.push(format!(
            "mirror: a copy of {}% of requests goes to {} (its answer is ignored)",
            m.percent, m.cluster
        ));
    }
    if let Some(c) = &fwd.cors {
        out.push(format!(
            "CORS: {} allowed origin pattern(s){}",
            c.allow_origins.len(),
            c.allow_methods
                .as_ref()
                .map(|m| format!(", methods {m}"))
                .unwrap_or_default()
        ));
    }
    let ops = |label: &str, ops: &crate::policy::HeaderOps, out: &mut Vec<String>| {
        if ops.is_empty() {
            return;
        }
        let mut parts = Vec::new();
        for (i, (k, _)) in ops.set.iter().enumerate() {
            parts.push(format!("set {k}: {}", ops.shown_value(false, i)));
        }
        for (i, (k, _)) in ops.add.iter().enumerate() {
            parts.push(format!("add {k}: {}", ops.shown_value(true, i)));
        }
        for k in &ops.remove {
            parts.push(format!("remove {k}"));
        }
        out.push(format!("{label}: {}", parts.join(", ")));
    };
    ops("request headers", &fwd.request_headers, &mut out);
    ops("response headers", &fwd.response_headers, &mut out);
    for c in &fwd.clusters {
        ops(
            &format!("request headers for {}", c.cluster),
            &c.request_headers,
            &mut out,
        );
        ops(
            &format!("response headers for {}", c.cluster),
            &c.response_headers,
            &mut out,
        );
    }
    out
}

fn forward_verdict(clusters: &[ClusterStep]) -> Verdict {
    if clusters.is_empty() {
        return refused(
            503,
            "NC",
            "the route has no destination, so the proxy answers 503 (cluster_not_found)".into(),
            Vec::new(),
        );
    }
    let live: Vec<&ClusterStep> = clusters
        .iter()
        .filter(|c| {
            c.problem.is_none() && c.weight > 0 || clusters.len() == 1 && c.problem.is_none()
        })
        .collect();
    let failing: Vec<&ClusterStep> = clusters
        .iter()
        .filter(|c| c.problem.is_some() && (c.weight > 0 || clusters.len() == 1))
        .collect();
    if live.is_empty() {
        let first = failing
            .first()
            .and_then(|c| c.problem.as_ref())
            .cloned()
            .unwrap_or(Problem {
                status: 503,
                flag: "NC".into(),
                why: "every destination has weight 0".into(),
                fixes: Vec::new(),
            });
        let detail = match first.flag.as_str() {
            "UH" => "no_healthy_upstream",
            _ => "cluster_not_found",
        };
        let mut fixes = Vec::new();
        for c in &failing {
            if let Some(p) = &c.problem {
                fixes.extend(p.fixes.iter().cloned());
            }
        }
        return refused(
            first.status,
            &first.flag,
            format!(
                "{}, so the proxy answers {} Service Unavailable ({detail})",
                failing
                    .iter()
                    .filter_map(|c| c.problem.as_ref().map(|p| p.why.clone()))
                    .collect::<Vec<_>>()
                    .join("; "),
                first.status
            ),
            fixes,
        );
    }
    let mut summary = if clusters.len() == 1 {
        format!("forwarded to {}", clusters[0].cluster)
    } else {
        format!(
            "forwarded, each request to one cluster chosen by weight: {}",
            clusters
                .iter()
                .map(|c| format!("{} {}", c.share, c.cluster))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut fixes = Vec::new();
    for c in &failing {
        if let Some(p) = &c.problem {
            summary.push_str(&format!(
                "; the {} sent to {} get {} {} ({})",
                c.share, c.cluster, p.status, p.flag, p.why
            ));
            fixes.extend(p.fixes.iter().cloned());
        }
    }
    for c in clusters {
        if let Some(next) = &c.next_hop {
            let v = &next.verdict;
            let then = match v.status {
                Some(status) if !v.forwarded => format!("answers {status}"),
                _ => v.summary.clone(),
            };
            summary.push_str(&format!("; then the gateway {} {then}", next.proxy));
            fixes.extend(v.fixes.iter().cloned());
        }
    }
    Verdict {
        forwarded: true,
        status: None,
        flags: "-".into(),
        summary,
        fixes,
    }
}

/// The pod whose proxy accepts inbound traffic at `addr`.
fn pod_at<'c>(ctx: &'c TraceContext<'_>, addr: &SocketAddr) -> Option<&'c WorkloadInstance> {
    ctx.state
        .workloads
        .iter()
        .find(|w| w.inbound.values().any(|a| a == addr))
}

/// When `addrs` are a gateway of the mesh: the trace of the forwarded request there.
fn next_hop(
    ctx: &TraceContext<'_>,
    addrs: &[SocketAddr],
    request: &TraceRequest,
    authority: &str,
    new_path: Option<&str>,
    depth: usize,
) -> Option<Box<Trace>> {
    for addr in addrs {
        let Some(w) = pod_at(ctx, addr) else {
            continue;
        };
        let Some(gw) = ctx
            .state
            .mesh
            .enabled_gateways()
            .find(|g| g.namespace == w.namespace && selects(&g.labels, &w.labels))
        else {
            continue;
        };
        let service_ports: Vec<(u32, u32)> = gw
            .service_ports()
            .iter()
            .filter(|(_, port, _)| *port != 15021)
            .map(|(_, port, target)| (*target, *port))
            .collect();
        let Some(target) = w.inbound.iter().find(|(_, a)| *a == addr).map(|(t, _)| *t) else {
            continue;
        };
        let Some((_, service_port)) = service_ports.iter().find(|(t, _)| *t == target) else {
            continue;
        };
        let tables = ctx.state.gateway_tables(w, &service_ports);
        let mut headers: Vec<(String, String)> = request
            .headers
            .iter()
            .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
            .cloned()
            .collect();
        headers.push(("host".into(), authority.to_string()));
        let forwarded = TraceRequest {
            method: request.method.clone(),
            scheme: "http".into(),
            authority: addr.to_string(),
            port: *service_port,
            path_and_query: new_path.unwrap_or(&request.path_and_query).to_string(),
            headers,
        };
        let next_ctx = TraceContext {
            state: ctx.state,
            proxy: w,
        };
        return Some(Box::new(trace_at(
            &tables,
            &forwarded,
            Some(&next_ctx),
            depth + 1,
        )));
    }
    None
}

/// Splits `outbound|80|v1|host` into (port, subset, host).
fn cluster_parts(name: &str) -> Option<(u32, &str, &str)> {
    let mut it = name.splitn(4, '|');
    let _direction = it.next()?;
    let port = it.next()?.parse().ok()?;
    Some((port, it.next()?, it.next()?))
}

fn nc_fixes(ctx: &TraceContext<'_>, cluster: &str) -> Vec<String> {
    let Some((port, subset, host)) = cluster_parts(cluster) else {
        return Vec::new();
    };
    match ctx.state.registry.services.get(host) {
        None => vec![format!(
            "no Service or ServiceEntry defines {host}: apply one (or fix the destination host)"
        )],
        Some(svc) if svc.port(port).is_none() => vec![format!(
            "{host} ({}) has no port {port} (its ports: {}): fix the destination's port.number",
            svc.defined_by,
            svc.ports
                .iter()
                .map(|p| p.port.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )],
        Some(_) if !subset.is_empty() => vec![format!(
            "no DestinationRule for {host} (in the client's namespace {}, the service's namespace, or istio-system) defines subset {subset:?}: add it, or fix the destination's subset",
            ctx.proxy.namespace
        )],
        Some(_) => Vec::new(),
    }
}

fn uh_fixes(ctx: &TraceContext<'_>, cluster: &str) -> Vec<String> {
    let Some((_, subset, host)) = cluster_parts(cluster) else {
        return Vec::new();
    };
    let Some(svc) = ctx.state.registry.services.get(host) else {
        return Vec::new();
    };
    match &svc.source {
        ServiceSource::Kubernetes { selector } => {
            let labels = selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let subset_words = if subset.is_empty() {
                String::new()
            } else {
                format!(" that also carries the labels of subset {subset:?}")
            };
            if selector.is_empty() {
                vec![format!(
                    "{} has no selector, so no pod backs it: give it a selector",
                    svc.defined_by
                )]
            } else {
                vec![format!(
                    "{} selects pods labelled {labels} in namespace {}; no pod{subset_words} runs there: apply a Deployment whose template has these labels (or fix the selector)",
                    svc.defined_by, svc.namespace
                )]
            }
        }
        ServiceSource::External { .. } => vec![format!(
            "{} has no endpoints: add endpoints, or use resolution DNS",
            svc.defined_by
        )],
    }
}

/// Which Gateway or VirtualService would give a gateway a route for `host` on `port`.
fn gateway_fixes(ctx: &TraceContext<'_>, port: u32, host: &str, has_table: bool) -> Vec<String> {
    let store = ctx.state.store;
    let labels = &ctx.proxy.labels;
    // Istio's gateways are selected by their `istio` label (`istio: ingressgateway`).
    let label_words = match labels.get("istio") {
        Some(v) => format!("istio: {v}"),
        None => labels
            .iter()
            .filter(|(k, _)| k.as_str() != "service.istio.io/canonical-name")
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    let mut fixes = Vec::new();
    // The Gateways that select this gateway pod, and their servers on the port.
    let mut selecting = Vec::new();
    for g in store.of_kind(Kind::Gateway) {
        let Spec::Gateway(spec) = &g.spec else {
            continue;
        };
        let id = format!("{}/{}", g.namespace(), g.metadata.name);
        if !(spec.selector.is_empty() || selects(&spec.selector, labels)) {
            continue;
        }
        let hosts: Vec<String> = spec
            .servers
            .iter()
            .filter(|s| s.port.number == port)
            .flat_map(|s| s.hosts.iter().cloned())
            .collect();
        selecting.push((id, hosts));
    }
    if !has_table {
        if selecting.is_empty() {
            fixes.push(format!(
                "no Gateway resource selects this gateway (its labels: {label_words})"
            ));
        } else {
            fixes.push(format!(
                "no Gateway selecting this gateway has an HTTP server on port {port} with a VirtualService bound to it (Gateways selecting it: {})",
                selecting
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    // VirtualServices whose hosts cover the host, and where they are bound.
    let mut any_vs = false;
    for r in store.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let vs_ns = r.namespace();
        let covering = vs.hosts.iter().find(|h| {
            let fqdn = resolve_short_name(h, vs_ns);
            fqdn == "*" || host_matches(&fqdn, host) || fqdn == host || h.eq_ignore_ascii_case(host)
        });
        let Some(vs_host) = covering else {
            continue;
        };
        any_vs = true;
        let vs_id = format!("{vs_ns}/{}", r.metadata.name);
        let where_ = format!("{}:{}", r.origin.file, r.origin.line);
        let gateways = effective_gateways(&vs.gateways, vs_ns);
        if gateways.iter().all(|g| g == MESH_GATEWAY) {
            fixes.push(format!(
                "VirtualService {vs_id} ({where_}) covers {host:?} but applies to sidecars only (gateways: [mesh]): add this gateway's Gateway to its spec.gateways"
            ));
            continue;
        }
        for g in gateways.iter().filter(|g| *g != MESH_GATEWAY) {
            let (g_ns, g_name) = g.split_once('/').unwrap_or(("", g.as_str()));
            let key = meshbox_config::ObjectKey {
                kind: Kind::Gateway,
                namespace: g_ns.to_string(),
                name: g_name.to_string(),
            };
            match store.get(&key) {
                None => fixes.push(format!(
                    "VirtualService {vs_id} ({where_}) is bound to Gateway {g}, which does not exist: apply Gateway {g} (selector {{{label_words}}}, a server on port {port}, protocol HTTP, hosts [{vs_host:?}]), or fix the VirtualService's spec.gateways"
                )),
                Some(gr) => {
                    let Spec::Gateway(spec) = &gr.spec else {
                        continue;
                    };
                    if !(spec.selector.is_empty() || selects(&spec.selector, labels)) {
                        fixes.push(format!(
                            "VirtualService {vs_id} is bound to Gateway {g}, whose selector {} does not select this gateway (its labels: {label_words})",
                            spec.selector
                                .iter()
                                .map(|(k, v)| format!("{k}: {v}"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    } else if !spec.servers.iter().any(|s| s.port.number == port) {
                        fixes.push(format!(
                            "VirtualService {vs_id} is bound to Gateway {g}, which has no server on port {port}: add one"
                        ));
                    } else {
                        fixes.push(format!(
                            "VirtualService {vs_id} is bound to Gateway {g}, but the Gateway's hosts on port {port} do not include {host:?}: add it to the server's hosts"
                        ));
                    }
                }
            }
        }
    }
    if !any_vs {
        let gws: Vec<String> = selecting
            .iter()
            .filter(|(_, hosts)| !hosts.is_empty())
            .map(|(id, _)| id.clone())
            .collect();
        if gws.is_empty() {
            fixes.push(format!(
                "no VirtualService lists host {host:?}: apply a Gateway with selector {{{label_words}}} and a server on port {port} (protocol HTTP, hosts [{host:?}]), and a VirtualService with hosts [{host:?}] bound to it"
            ));
        } else {
            fixes.push(format!(
                "no VirtualService lists host {host:?} (or \"*\") with gateways [{}]: apply one, or call the gateway with a Host one of its VirtualServices lists",
                gws.join(", ")
            ));
        }
    }
    fixes
}

// ---------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------

/// The trace in plain words, one numbered step a line (or a few), then the result.
pub fn render(trace: &Trace) -> String {
    let mut out = if trace.kind == "gateway" {
        format!(
            "{} {} arriving at the gateway {} (namespace {}), Host {:?}\n\n",
            trace.request.method,
            trace.request.url(),
            trace.proxy,
            trace.namespace,
            trace.authority
        )
    } else {
        format!(
            "{} {} as the workload of pod {} (namespace {}) sends it through its sidecar\n\n",
            trace.request.method,
            trace.request.url(),
            trace.proxy,
            trace.namespace
        )
    };
    render_body(trace, &mut out);
    out
}

fn render_body(trace: &Trace, out: &mut String) {
    for (i, step) in trace.steps.iter().enumerate() {
        let n = i + 1;
        match step {
            Step::Listener { words, .. } => {
                out.push_str(&format!("{n}. Listener: {words}.\n"));
            }
            Step::VirtualHost { name, why, .. } => {
                out.push_str(&format!(
                    "{n}. Virtual host {name}: chosen because {why}.\n"
                ));
            }
            Step::NoVirtualHost { authority, .. } => {
                out.push_str(&format!(
                    "{n}. Virtual host: none answers the Host {authority:?}.\n"
                ));
            }
            Step::CatchAll { route, why } => {
                out.push_str(&format!("{n}. Catch-all route {route}: {why}.\n"));
            }
            Step::RuleSkipped { rule, reason } => {
                out.push_str(&format!(
                    "{n}. Tried {}{}: no match, {reason}.\n",
                    rule.describe(),
                    rule.origin
                        .as_ref()
                        .map(|o| format!(" ({o})"))
                        .unwrap_or_default()
                ));
            }
            Step::RuleMatched { rule } => {
                out.push_str(&format!(
                    "{n}. Matched {}: {}.\n",
                    rule.describe(),
                    match (rule.conditions.as_str(), rule.match_index) {
                        ("any request", None) => {
                            "it has no match conditions, so every request matches".to_string()
                        }
                        ("any request", Some(_)) => "its match only says where the rule applies (gateways, port or source), so every request here matches".to_string(),
                        (c, _) => c.to_string(),
                    }
                ));
                if let Some(o) = &rule.origin {
                    out.push_str(&format!("   Defined at {o}.\n"));
                }
            }
            Step::Forward {
                clusters,
                rewrite,
                authority_rewrite,
                timeout,
                policies,
            } => {
                if clusters.len() == 1 {
                    out.push_str(&format!("{n}. Destination:\n"));
                } else {
                    out.push_str(&format!(
                        "{n}. Destinations (each request goes to one, chosen by weight):\n"
                    ));
                }
                for c in clusters {
                    out.push_str(&format!("   - {} {}", c.share, c.cluster));
                    if clusters.len() > 1 {
                        out.push_str(&format!(" (weight {})", c.weight));
                    }
                    out.push('\n');
                    match &c.problem {
                        Some(p) => out.push_str(&format!(
                            "       {} {}: {}\n",
                            p.status, p.flag, p.why
                        )),
                        None => match c.discovery.as_str() {
                            "STRICT_DNS" => out.push_str(&format!(
                                "       endpoints: {} (resolved by DNS when a request is sent)\n",
                                c.endpoints
                                    .iter()
                                    .map(|e| e.address.clone())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                            "ORIGINAL_DST" => out.push_str(
                                "       endpoint: the request's own destination (resolution NONE)\n",
                            ),
                            _ => {
                                for e in &c.endpoints {
                                    match &e.pod {
                                        Some(p) => out.push_str(&format!(
                                            "       endpoint {} (pod {p})\n",
                                            e.address
                                        )),
                                        None => out.push_str(&format!(
                                            "       endpoint {}\n",
                                            e.address
                                        )),
                                    }
                                }
                            }
                        },
                    }
                    for p in &c.policy {
                        out.push_str(&format!("       {p}\n"));
                    }
                }
                if let Some(r) = rewrite {
                    out.push_str(&format!("   Rewrite: {r}.\n"));
                }
                if let Some(a) = authority_rewrite {
                    out.push_str(&format!("   Rewrite: the Host sent upstream is {a:?}.\n"));
                }
                if timeout == "none" {
                    out.push_str("   Timeout: none (Istio's default for HTTP routes).\n");
                } else {
                    out.push_str(&format!("   Timeout: {timeout}.\n"));
                }
                for p in policies {
                    out.push_str(&format!("   {}.\n", capitalize(p)));
                }
                for c in clusters {
                    if let Some(next) = &c.next_hop {
                        out.push_str(&format!(
                            "   Then, at the gateway {} (namespace {}), which is {}'s endpoint: port {}, Host {:?}, path {:?}:\n",
                            next.proxy,
                            next.namespace,
                            c.cluster,
                            next.port,
                            next.authority,
                            next.request.path_and_query
                        ));
                        let mut inner = String::new();
                        render_body(next, &mut inner);
                        for line in inner.lines() {
                            out.push_str(format!("   | {line}").trim_end());
                            out.push('\n');
                        }
                    }
                }
            }
            Step::Redirect { status, location } => {
                out.push_str(&format!("{n}. Redirect: {status} to {location}.\n"));
            }
            Step::DirectResponse { status, body } => {
                if body.is_empty() {
                    out.push_str(&format!("{n}. Direct response: {status}, no body.\n"));
                } else {
                    out.push_str(&format!("{n}. Direct response: {status}, body {body:?}.\n"));
                }
            }
            Step::Passthrough { host, port } => {
                out.push_str(&format!(
                    "{n}. Destination: {PASSTHROUGH_CLUSTER}, the original destination {host}:{port}.\n"
                ));
            }
            Step::OtherAction { action } => {
                out.push_str(&format!("{n}. Action: {action}.\n"));
            }
        }
    }
    let v = &trace.verdict;
    out.push('\n');
    match (v.forwarded, v.status) {
        (false, Some(status)) if v.flags != "-" => out.push_str(&format!(
            "Result: refused, {status} (response flag {}): {}.\n",
            v.flags, v.summary
        )),
        (false, Some(status)) => out.push_str(&format!("Result: {status}: {}.\n", v.summary)),
        _ => out.push_str(&format!("Result: {}.\n", v.summary)),
    }
    if !v.fixes.is_empty() {
        out.push_str("What would change it:\n");
        for f in &v.fixes {
            out.push_str(&format!("  - {f}\n"));
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The trace in plain words ([`render`]), or as JSON when `output` is `json`.
pub fn render_as(trace: &Trace, output: Option<&str>) -> Result<String, String> {
    match output {
        None | Some("text") | Some("short") => Ok(render(trace)),
        Some("json") => Ok(trace.to_json()),
        Some(other) => Err(format!(
            "error: output format {other:?} not supported (json, or none for plain words)"
        )),
    }
}
