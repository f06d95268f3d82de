//! Per-object admission checks: Istio's validating webhook (`validation.istio.io`,
//! `pkg/config/validation` in istio/istio) and the CEL rules of Istio's CRDs for the
//! networking kinds, and the API server's own checks for the Kubernetes kinds.
//!
//! Each object is checked on its own. Cross-object problems (a route to a host
//! nobody defines) are not errors in Istio either; they belong to `analyze`.
//! Istio's validation *warnings* (deprecated fields and the like) are not reported.
//!
//! Every [`FieldError`] names its field by its path from the document root
//! (`spec.http[0].route[1].weight`); messages use Istio's and Kubernetes' wording.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use crate::istio::{
    ClientTlsSettings, ConnectionPoolSettings, CorsPolicy, Destination, DestinationRuleSpec,
    GatewaySpec, HeaderOperations, Headers, HttpDirectResponse, HttpFaultInjection,
    HttpMatchRequest, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination,
    L4MatchAttributes, Labels, LoadBalancerSettings, OutlierDetection, Percent, Port,
    RouteDestination, Server, ServerTlsSettings, ServiceEntrySpec, SidecarSpec, StringMatch,
    TlsMatchAttributes, TrafficPolicy, VirtualServiceSpec,
};
use crate::kube::{Container, DeploymentSpec, IntOrString, ServiceSpec};
use crate::resource::{Resource, Spec};

/// One problem with one field of an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the document root, e.g. `spec.http[0].route`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The problems found so far in one object.
#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(field, message);
        }
    }
}

/// `base.name`.
fn at(base: &str, name: &str) -> String {
    format!("{base}.{name}")
}

/// `base[i]`.
fn idx(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// Checks one object as Istio's validating webhook (or, for Kubernetes kinds, the
/// API server) would. The object's namespace must already be filled in.
pub fn validate_resource(resource: &Resource) -> Vec<FieldError> {
    let mut e = Errors::default();
    k8s_labels(&resource.metadata.labels, "metadata.labels", &mut e);
    let name = resource.metadata.name.as_str();
    let namespace = resource.namespace();
    match &resource.spec {
        Spec::Namespace(_) => {
            if !name.is_empty() && !is_dns1123_label(name) {
                e.add("metadata.name", k8s_invalid_label(name));
            }
        }
        Spec::Service(svc) => {
            if !name.is_empty() && !is_dns1035_label(name) {
                e.add(
                    "metadata.name",
                    format!(
                        "Invalid value: {name:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"
                    ),
                );
            }
            validate_service(svc, &mut e);
        }
        Spec::Deployment(d) => validate_deployment(d, &mut e),
        Spec::Gateway(gw) => validate_gateway(name, gw, &mut e),
        Spec::VirtualService(vs) => validate_virtual_service(vs, namespace, &mut e),
        Spec::DestinationRule(dr) => validate_destination_rule(dr, namespace, &mut e),
        Spec::ServiceEntry(se) => validate_service_entry(se, namespace, &mut e),
        Spec::Sidecar(sc) => validate_sidecar(sc, namespace, &mut e),
        // Interpreted, and checked, by `MeshOptions`.
        Spec::IstioOperator(_) => {}
    }
    e.0
}

// ---------------------------------------------------------------------------
// Names, hosts, addresses
// ---------------------------------------------------------------------------

fn label_like(s: &str, max: usize, inner: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || inner(c))
}

/// Kubernetes' DNS-1123 label: lower case letters, digits and `-`, at most 63.
pub fn is_dns1123_label(s: &str) -> bool {
    label_like(s, 63, |c| c == b'-') && !s.bytes().any(|c| c.is_ascii_uppercase())
}

/// Kubernetes' DNS-1035 label (Service names): a DNS-1123 label starting with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// Istio's DNS-1123 label, which also allows upper case letters.
fn is_istio_label(s: &str) -> bool {
    label_like(s, 63, |c| c == b'-')
}

/// Kubernetes' qualified name part (label keys and values): alphanumerics, `-`, `_`,
/// `.`, starting and ending with an alphanumeric, at most 63.
fn is_qualified_name(s: &str) -> bool {
    label_like(s, 63, |c| matches!(c, b'-' | b'_' | b'.'))
}

/// Istio's first label of a host: `*`, a label, or a label prefixed by `*` or `*-`.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    if s.len() > 63 {
        return false;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    is_istio_label(rest)
}

/// Istio's `ValidateDNS1123Labels`.
fn dns1123_labels(domain: &str) -> Result<(), String> {
    dns1123_labels_of(domain, domain)
}

/// Checks the labels of `labels`, naming `domain` (the whole host) in messages.
fn dns1123_labels_of(domain: &str, labels: &str) -> Result<(), String> {
    let parts: Vec<&str> = labels.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_istio_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

fn domain_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Istio's `ValidateWildcardDomain`: a host name whose first label may be a wildcard.
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => dns1123_labels_of(domain, rest),
        None => Ok(()),
    }
}

/// Istio's `ValidateFQDN`: a host name without wildcard.
pub fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    domain_preconditions(fqdn)?;
    dns1123_labels(fqdn)
}

fn validate_ip(addr: &str) -> Result<(), String> {
    addr.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{addr} is not a valid IP"))
}

/// Istio's `ValidateIPSubnet`: an IP address or a CIDR block.
fn validate_ip_subnet(subnet: &str) -> Result<(), String> {
    if subnet.matches('/').count() == 1 {
        let (ip, bits) = subnet.split_once('/').unwrap_or((subnet, ""));
        let ok = match (ip.parse::<IpAddr>(), bits.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(b)) => b <= 32,
            (Ok(IpAddr::V6(_)), Ok(b)) => b <= 128,
            _ => false,
        };
        return if ok {
            Ok(())
        } else {
            Err(format!("{subnet:?} is not a valid CIDR block"))
        };
    }
    validate_ip(subnet)
}

/// Istio's `ValidatePort`.
fn validate_port(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

fn validate_port_name(name: &str) -> Result<(), String> {
    if is_istio_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// The protocols Istio's `protocol.Parse` knows, upper-cased.
const PROTOCOLS: &[&str] = &[
    "HTTP",
    "HTTPS",
    "HTTP2",
    "GRPC",
    "GRPC-WEB",
    "HTTP_PROXY",
    "TCP",
    "TLS",
    "UDP",
    "MONGO",
    "REDIS",
    "MYSQL",
];

fn known_protocol(p: &str) -> bool {
    PROTOCOLS.contains(&p.to_ascii_uppercase().as_str())
}

fn protocol_is_http(p: &str) -> bool {
    matches!(
        p.to_ascii_uppercase().as_str(),
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" | "HTTP_PROXY"
    )
}

fn protocol_is_tls(p: &str) -> bool {
    matches!(p.to_ascii_uppercase().as_str(), "HTTPS" | "TLS")
}

/// Istio's `ValidateProtocol`: empty means "sniff".
fn validate_protocol(p: &str) -> Result<(), String> {
    if p.is_empty() || known_protocol(p) {
        Ok(())
    } else {
        Err(format!("unrecognized protocol {p:?}"))
    }
}

/// A value that must be one of the CRD's enumeration, in the API server's words.
fn check_enum(e: &mut Errors, field: String, value: Option<&String>, allowed: &[&str]) {
    if let Some(v) = value {
        if !allowed.contains(&v.as_str()) {
            let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
            e.add(
                field,
                format!(
                    "Unsupported value: {v:?}: supported values: {}",
                    list.join(", ")
                ),
            );
        }
    }
}

/// Istio's `labels.Instance.Validate`, for selectors and label conditions.
fn istio_labels(labels: &Labels, base: &str, e: &mut Errors) {
    for (k, v) in labels {
        let field = at(base, k);
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        let prefix_ok = prefix.is_none_or(crate::load::is_dns1123_subdomain);
        if k.matches('/').count() > 1 || !prefix_ok || !is_qualified_name(name) {
            e.add(field.clone(), format!("invalid tag key: {k:?}"));
        }
        if !v.is_empty() && !is_qualified_name(v) {
            e.add(field, format!("invalid tag value: {v:?}"));
        }
    }
}

/// Istio's `validateWorkloadSelector`: no empty keys, no wildcards.
fn selector_no_wildcards(labels: &Labels, base: &str, e: &mut Errors) {
    for (k, v) in labels {
        let field = at(base, k);
        if k.is_empty() {
            e.add(
                field.clone(),
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            e.add(
                field,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Durations, percentages, regular expressions, headers
// ---------------------------------------------------------------------------

/// Parses a Go duration (`1s`, `500ms`, `1.5s`, `1m30s`, `1h`; `0` alone is zero),
/// the form Istio's YAML uses. Negative durations are refused.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let nanos = duration_nanos(s)?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

fn duration_nanos(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let n = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..n];
            rest = &r[n..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return None;
        }
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit: i128 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return None,
        };
        rest = &rest[unit_len..];
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().ok()?
        };
        total = total.checked_add(int.checked_mul(unit)?)?;
        if !frac_part.is_empty() {
            let digits = frac_part.len().min(18);
            let frac: i128 = frac_part[..digits].parse().ok()?;
            total = total.checked_add(frac * unit / 10i128.pow(digits as u32))?;
        }
    }
    Some(if negative { -total } else { total })
}

/// A duration as Istio accepts it: valid, at least 1ms, whole milliseconds.
fn check_duration(e: &mut Errors, field: String, value: Option<&String>) {
    let Some(s) = value else { return };
    match duration_nanos(s) {
        None => e.add(
            field,
            format!("{s:?} is not a valid duration (examples: 1s, 500ms, 1.5s, 1m, 1h)"),
        ),
        Some(n) if n < 1_000_000 => e.add(field, "must be a valid duration greater than 1ms"),
        Some(n) if n % 1_000_000 != 0 => {
            e.add(field, "only durations to ms precision are supported")
        }
        Some(_) => {}
    }
}

/// A duration that only has to parse (fields without Istio's 1ms rule).
fn check_duration_syntax(e: &mut Errors, field: String, value: Option<&String>) {
    let Some(s) = value else { return };
    if duration_nanos(s).is_none_or(|n| n < 0) {
        e.add(
            field,
            format!("{s:?} is not a valid duration (examples: 1s, 500ms, 1.5s, 1m, 1h)"),
        );
    }
}

/// Istio's `validatePercentage`.
fn check_percentage(e: &mut Errors, field: String, p: Option<&Percent>) {
    let Some(v) = p.and_then(|p| p.value) else {
        return;
    };
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        e.add(
            at(&field, "value"),
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

/// Istio's `ValidatePercent`.
fn check_percent(e: &mut Errors, field: String, v: Option<i32>) {
    if let Some(v) = v {
        if !(0..=100).contains(&v) {
            e.add(field, format!("percentage {v} is not in range 0..100"));
        }
    }
}

/// Compiles an RE2-style expression with Rust's `regex` (same syntax family: no
/// look-around, no back-references); returns the compiler's one-line complaint.
fn regex_error(pattern: &str) -> Option<String> {
    match regex::Regex::new(pattern) {
        Ok(_) => None,
        Err(err) => {
            let text = err.to_string();
            let short = text
                .lines()
                .rev()
                .find_map(|l| l.trim().strip_prefix("error: "))
                .unwrap_or(text.lines().last().unwrap_or(""))
                .to_string();
            Some(short)
        }
    }
}

fn check_regex(e: &mut Errors, field: String, pattern: &str) {
    if pattern.is_empty() {
        e.add(field, "regex string match should not be empty");
        return;
    }
    // Envoy limits the RE2 program size; Istio approximates it by the length.
    if pattern.len() > 1024 {
        e.add(field, "regex is too large, max length allowed is 1024");
        return;
    }
    if let Some(why) = regex_error(pattern) {
        e.add(
            field,
            format!(
                "invalid regex {pattern:?}: {why}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
            ),
        );
    }
}

/// How a `StringMatch` may be used.
#[derive(Clone, Copy, PartialEq)]
enum MatchUse {
    /// Header-like: an empty match tests presence.
    PresenceAllowed,
    /// uri, scheme, method, authority: one of exact, prefix or regex is needed; the uri
    /// may have an empty prefix.
    Required { empty_prefix_ok: bool },
}

fn check_string_match(e: &mut Errors, field: String, m: &StringMatch, usage: MatchUse) {
    let set = [&m.exact, &m.prefix, &m.regex]
        .iter()
        .filter(|v| v.is_some())
        .count();
    if set > 1 {
        e.add(field, "only one of exact, prefix or regex may be set");
        return;
    }
    if set == 0 {
        if usage != MatchUse::PresenceAllowed {
            e.add(field, "one of exact, prefix or regex must be set");
        }
        return;
    }
    if let Some(p) = &m.prefix {
        let empty_ok = matches!(
            usage,
            MatchUse::Required {
                empty_prefix_ok: true
            }
        );
        if p.is_empty() && !empty_ok {
            e.add(
                at(&field, "prefix"),
                "prefix string match should not be empty",
            );
        }
    }
    if let Some(r) = &m.regex {
        // In a header match, `*` is not a regex: Istio turns it into a presence match.
        if !(usage == MatchUse::PresenceAllowed && r == "*") {
            check_regex(e, at(&field, "regex"), r);
        }
    }
}

fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Istio's `ValidateHTTPHeaderName`.
fn validate_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !is_header_name(name) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

/// Header names in `match.headers` / `withoutHeaders`: any RFC 7230 token, and the
/// HTTP/2 pseudo-headers Envoy matches (Istio accepts these since 1.25; the "weird
/// header matches" and "pseudo header matches" cases of Istio's routing tests).
fn validate_match_header_name(name: &str) -> Result<(), String> {
    const PSEUDO: [&str; 5] = [":method", ":scheme", ":authority", ":path", ":status"];
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if PSEUDO.contains(&name) {
        return Ok(());
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.bytes().all(tchar) {
        Ok(())
    } else {
        Err(format!("header name {name} is not a valid header name"))
    }
}

/// Istio's header operation name checks; `authority_ok` for request `set`/`add`,
/// which may rewrite the authority.
fn validate_header_operation_name(name: &str, authority_ok: bool) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let is_authority = name.eq_ignore_ascii_case("host") || name == ":authority";
    if is_authority && authority_ok {
        return Ok(());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    validate_header_name(name)
}

fn check_header_operations(
    e: &mut Errors,
    base: &str,
    ops: Option<&HeaderOperations>,
    request: bool,
) {
    let Some(ops) = ops else { return };
    for (what, map) in [("set", &ops.set), ("add", &ops.add)] {
        for name in map.keys() {
            e.check(
                at(&at(base, what), name),
                validate_header_operation_name(name, request),
            );
        }
    }
    for (i, name) in ops.remove.iter().enumerate() {
        e.check(
            idx(&at(base, "remove"), i),
            validate_header_operation_name(name, false),
        );
    }
}

fn check_headers(e: &mut Errors, base: &str, headers: Option<&Headers>) {
    let Some(h) = headers else { return };
    check_header_operations(e, &at(base, "request"), h.request.as_ref(), true);
    check_header_operations(e, &at(base, "response"), h.response.as_ref(), false);
}

/// Istio's `validateExportTo`.
fn check_export_to(
    e: &mut Errors,
    field: &str,
    namespace: &str,
    export_to: &[String],
    service_entry: bool,
) {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, entry) in export_to.iter().enumerate() {
        let f = idx(field, i);
        let key = if entry == "." {
            namespace
        } else {
            entry.as_str()
        };
        if !seen.insert(key) {
            if key != entry {
                e.add(
                    f,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                e.add(
                    f,
                    format!("duplicate entries in exportTo for entry {entry}"),
                );
            }
            continue;
        }
        let ok = entry == "."
            || entry == "*"
            || (service_entry && entry == "~")
            || is_dns1123_label(entry);
        if !ok {
            e.add(
                f,
                if service_entry {
                    "only . or * or ~ or a valid DNS 1123 label is allowed as exportTo entry"
                } else {
                    "only . or * or a valid DNS 1123 label is allowed as exportTo entry"
                },
            );
        }
    }
    if export_to.len() > 1 {
        if seen.contains("*") {
            e.add(
                field,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if seen.contains("~") {
            e.add(
                field,
                "cannot export service entry to no one (~) and someone",
            );
        }
    }
}

// ---------------------------------------------------------------------------
// VirtualService
// ---------------------------------------------------------------------------

/// Istio's `host.Name.Matches`: whether two (possibly wildcard) hosts overlap.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => {
            if sa.len() < sb.len() {
                sb.ends_with(sa)
            } else {
                sa.ends_with(sb)
            }
        }
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`.
fn host_subset_of(n: &str, o: &str) -> bool {
    match (n.strip_prefix('*'), o.strip_prefix('*')) {
        (Some(sn), Some(so)) => sn.ends_with(so),
        (Some(_), None) => false,
        (None, Some(so)) => n.ends_with(so),
        (None, None) => n == o,
    }
}

/// Istio's `validateGatewayNames`: `mesh`, `name`, `name.namespace` or `namespace/name`.
fn check_gateway_names(e: &mut Errors, field: &str, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let f = idx(field, i);
        match name.split_once('/') {
            None => e.check(f, validate_fqdn(name)),
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    e.add(f, "config namespace and gateway name cannot be empty");
                    continue;
                }
                if !is_istio_label(ns) {
                    e.add(f.clone(), format!("invalid value for namespace: {ns:?}"));
                }
                if !is_istio_label(gw) {
                    e.add(f, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

fn validate_virtual_service(vs: &VirtualServiceSpec, namespace: &str, e: &mut Errors) {
    // A virtual service without hosts is a delegate, which only a root virtual
    // service's `delegate` can use.
    let delegate = vs.hosts.is_empty();
    if delegate {
        if !vs.gateways.is_empty() {
            e.add(
                "spec.hosts",
                "virtual service must have at least one host (one without hosts is a delegate, and a delegate virtual service must have no gateways specified)",
            );
        }
        if !vs.tls.is_empty() {
            e.add(
                "spec.tls",
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            e.add(
                "spec.tcp",
                "delegate virtual service must have no tcp route specified",
            );
        }
    }

    let applies_to_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    let applies_to_gateway = vs.gateways.iter().any(|g| g != "mesh");
    check_gateway_names(e, "spec.gateways", &vs.gateways);

    if !applies_to_gateway {
        for (i, route) in vs.http.iter().enumerate() {
            for (j, m) in route.matches.iter().enumerate() {
                for (what, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                ] {
                    for key in map.keys().filter(|k| k.starts_with("@request.auth.claims")) {
                        e.add(
                            format!("spec.http[{i}].match[{j}].{what}.{key}"),
                            format!(
                                "JWT claim based routing (key: {key}) is only supported for gateway, found no gateways: {:?}",
                                vs.gateways
                            ),
                        );
                    }
                }
            }
        }
    }

    let mut all_hosts_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let f = idx("spec.hosts", i);
        if let Err(msg) = validate_wildcard_domain(host) {
            if host.parse::<IpAddr>().is_err() {
                e.add(f, msg);
                all_hosts_valid = false;
            }
        } else if applies_to_mesh && host == "*" {
            e.add(
                f,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
            all_hosts_valid = false;
        }
    }
    if all_hosts_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if hosts_overlap(&vs.hosts[i], &vs.hosts[j]) {
                    e.add(
                        idx("spec.hosts", j),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            vs.hosts[i], vs.hosts[j]
                        ),
                    );
                }
            }
        }
    }

    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        e.add(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, route) in vs.http.iter().enumerate() {
        validate_http_route(route, &idx("spec.http", i), delegate, e);
    }
    for (i, route) in vs.tls.iter().enumerate() {
        let base = idx("spec.tls", i);
        if route.matches.is_empty() {
            e.add(
                at(&base, "match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in route.matches.iter().enumerate() {
            validate_tls_match(m, &idx(&at(&base, "match"), j), &vs.hosts, e);
        }
        if route.route.is_empty() {
            e.add(at(&base, "route"), "TLS route is required");
        }
        validate_route_destinations(&route.route, &at(&base, "route"), e);
    }
    for (i, route) in vs.tcp.iter().enumerate() {
        let base = idx("spec.tcp", i);
        for (j, m) in route.matches.iter().enumerate() {
            validate_l4_match(m, &idx(&at(&base, "match"), j), e);
        }
        if route.route.is_empty() {
            e.add(at(&base, "route"), "TCP route is required");
        }
        validate_route_destinations(&route.route, &at(&base, "route"), e);
    }
    check_export_to(e, "spec.exportTo", namespace, &vs.export_to, false);
}

fn validate_http_route(http: &HttpRoute, base: &str, in_delegate: bool, e: &mut Errors) {
    // What the rule does: exactly one of route, redirect, direct response, delegate.
    if let Some(d) = &http.delegate {
        let f = at(base, "delegate");
        if in_delegate {
            e.add(
                f.clone(),
                "http delegate only applies to root virtual service",
            );
        }
        match d.name.as_deref() {
            None | Some("") => e.add(at(&f, "name"), "delegate name is required"),
            Some(n) if !crate::load::is_dns1123_subdomain(n) => {
                e.add(at(&f, "name"), format!("delegate name {n:?} is invalid"))
            }
            Some(_) => {}
        }
        if let Some(ns) = d.namespace.as_deref().filter(|ns| !is_dns1123_label(ns)) {
            e.add(
                at(&f, "namespace"),
                format!("delegate namespace {ns:?} is invalid"),
            );
        }
        for (present, what) in [
            (!http.route.is_empty(), "route"),
            (http.redirect.is_some(), "redirect"),
            (http.direct_response.is_some(), "direct response"),
        ] {
            if present {
                e.add(
                    f.clone(),
                    format!("HTTP route cannot contain both {what} and delegate"),
                );
            }
        }
    } else if http.redirect.is_some() {
        let f = at(base, "redirect");
        if !http.route.is_empty() {
            e.add(
                f.clone(),
                "HTTP route cannot contain both route and redirect",
            );
        }
        if http.fault.is_some() {
            e.add(
                f.clone(),
                "HTTP route cannot contain both fault and redirect",
            );
        }
        if http.rewrite.is_some() {
            e.add(
                f.clone(),
                "HTTP route rule cannot contain both rewrite and redirect",
            );
        }
        if http.direct_response.is_some() {
            e.add(
                f,
                "HTTP route cannot contain both redirect and direct response",
            );
        }
    } else if http.direct_response.is_some() {
        let f = at(base, "directResponse");
        if !http.route.is_empty() {
            e.add(
                f.clone(),
                "HTTP route cannot contain both route and direct response",
            );
        }
        if http.fault.is_some() {
            e.add(
                f.clone(),
                "HTTP route cannot contain both fault and direct response",
            );
        }
        if http.rewrite.is_some() {
            e.add(
                f,
                "HTTP route rule cannot contain both rewrite and direct response",
            );
        }
    } else if http.route.is_empty() {
        e.add(base, "HTTP route, redirect or direct response is required");
    }

    for (j, m) in http.matches.iter().enumerate() {
        validate_http_match(m, &idx(&at(base, "match"), j), e);
    }
    check_headers(e, &at(base, "headers"), http.headers.as_ref());
    if let Some(cors) = &http.cors_policy {
        validate_cors(cors, &at(base, "corsPolicy"), e);
    }
    if let Some(fault) = &http.fault {
        validate_fault(fault, &at(base, "fault"), e);
    }
    for (name, value) in [
        ("mirrorPercent", http.mirror_percent),
        ("mirror_percent", http.mirror_percent_alias),
    ] {
        if let Some(v) = value.filter(|v| *v > 100) {
            e.add(
                at(base, name),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
    }
    if let Some(v) = http.mirror_percentage.as_ref().and_then(|p| p.value) {
        if v > 100.0 {
            e.add(
                at(base, "mirrorPercentage.value"),
                format!("mirror_percentage must have a max value of 100 (it has {v:.6})"),
            );
        } else {
            check_percentage(
                e,
                at(base, "mirrorPercentage"),
                http.mirror_percentage.as_ref(),
            );
        }
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        e.add(
            at(base, "mirrors"),
            "`mirror` and `mirrors` cannot be used together",
        );
    }
    if let Some(m) = &http.mirror {
        validate_destination(m, &at(base, "mirror"), e);
    }
    for (j, m) in http.mirrors.iter().enumerate() {
        let f = idx(&at(base, "mirrors"), j);
        validate_destination(&m.destination, &at(&f, "destination"), e);
        if let Some(v) = m.percentage.as_ref().and_then(|p| p.value) {
            if v > 100.0 {
                e.add(
                    at(&f, "percentage.value"),
                    format!("mirror percentage must have a max value of 100 (it has {v:.6})"),
                );
            } else {
                check_percentage(e, at(&f, "percentage"), m.percentage.as_ref());
            }
        }
    }
    if let Some(r) = &http.redirect {
        validate_redirect(r, &at(base, "redirect"), e);
    }
    if let Some(d) = &http.direct_response {
        validate_direct_response(d, &at(base, "directResponse"), e);
    }
    if let Some(r) = &http.retries {
        validate_retries(r, &at(base, "retries"), e);
    }
    if let Some(r) = &http.rewrite {
        validate_rewrite(r, &at(base, "rewrite"), e);
        if r.authority.as_deref().is_some_and(|a| !a.is_empty()) {
            let sets_authority = http
                .headers
                .as_ref()
                .and_then(|h| h.request.as_ref())
                .is_some_and(|ops| {
                    ops.set
                        .keys()
                        .chain(ops.add.keys())
                        .any(|k| k.eq_ignore_ascii_case("host") || k == ":authority")
                });
            if sets_authority {
                e.add(
                    at(base, "rewrite.authority"),
                    "authority header cannot be set by both rewrite and headers",
                );
            }
        }
    }
    validate_http_route_destinations(&http.route, &at(base, "route"), e);
    check_duration(e, at(base, "timeout"), http.timeout.as_ref());
}

fn validate_http_match(m: &HttpMatchRequest, base: &str, e: &mut Errors) {
    for (what, map) in [
        ("headers", &m.headers),
        ("withoutHeaders", &m.without_headers),
    ] {
        for (name, sm) in map {
            let f = at(&at(base, what), name);
            if !name.starts_with("@request.auth.claims") {
                e.check(f.clone(), validate_match_header_name(name));
            }
            check_string_match(e, f, sm, MatchUse::PresenceAllowed);
        }
    }
    for (name, sm) in &m.query_params {
        check_string_match(
            e,
            at(&at(base, "queryParams"), name),
            sm,
            MatchUse::PresenceAllowed,
        );
    }
    if let Some(uri) = &m.uri {
        check_string_match(
            e,
            at(base, "uri"),
            uri,
            MatchUse::Required {
                empty_prefix_ok: true,
            },
        );
    }
    for (name, sm) in [
        ("scheme", &m.scheme),
        ("method", &m.method),
        ("authority", &m.authority),
    ] {
        if let Some(sm) = sm {
            check_string_match(
                e,
                at(base, name),
                sm,
                MatchUse::Required {
                    empty_prefix_ok: false,
                },
            );
        }
    }
    if let Some(p) = m.port {
        e.check(at(base, "port"), validate_port(p));
    }
    istio_labels(&m.source_labels, &at(base, "sourceLabels"), e);
    check_gateway_names(e, &at(base, "gateways"), &m.gateways);
    if let Some(ns) = m.source_namespace.as_deref() {
        if !is_istio_label(ns) {
            e.add(
                at(base, "sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
}

fn validate_tls_match(m: &TlsMatchAttributes, base: &str, vs_hosts: &[String], e: &mut Errors) {
    if m.sni_hosts.is_empty() {
        e.add(
            at(base, "sniHosts"),
            "TLS match must have at least one SNI host",
        );
    }
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        let f = idx(&at(base, "sniHosts"), i);
        if let Err(msg) = validate_wildcard_domain(sni) {
            if sni.parse::<IpAddr>().is_err() {
                e.add(f, msg);
            }
            continue;
        }
        if !vs_hosts.iter().any(|h| host_subset_of(sni, h)) {
            e.add(
                f,
                format!(
                    "SNI host {sni:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                    vs_hosts.join(", ")
                ),
            );
        }
    }
    for (i, s) in m.destination_subnets.iter().enumerate() {
        e.check(
            idx(&at(base, "destinationSubnets"), i),
            validate_ip_subnet(s),
        );
    }
    if let Some(p) = m.port {
        e.check(at(base, "port"), validate_port(p));
    }
    istio_labels(&m.source_labels, &at(base, "sourceLabels"), e);
    check_gateway_names(e, &at(base, "gateways"), &m.gateways);
}

fn validate_l4_match(m: &L4MatchAttributes, base: &str, e: &mut Errors) {
    for (i, s) in m.destination_subnets.iter().enumerate() {
        e.check(
            idx(&at(base, "destinationSubnets"), i),
            validate_ip_subnet(s),
        );
    }
    if let Some(s) = m.source_subnet.as_deref().filter(|s| !s.is_empty()) {
        e.check(at(base, "sourceSubnet"), validate_ip_subnet(s));
    }
    if let Some(p) = m.port {
        e.check(at(base, "port"), validate_port(p));
    }
    istio_labels(&m.source_labels, &at(base, "sourceLabels"), e);
    check_gateway_names(e, &at(base, "gateways"), &m.gateways);
}

/// Istio's `validateDestination`.
fn validate_destination(d: &Destination, base: &str, e: &mut Errors) {
    let f = at(base, "host");
    if d.host.is_empty() {
        e.add(f, "destination host is required");
    } else if d.host == "*" {
        e.add(f, format!("invalid destination host {}", d.host));
    } else {
        e.check(f, validate_wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            e.add(at(base, "subset"), "subset name cannot be empty");
        } else if !is_istio_label(subset) {
            e.add(
                at(base, "subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
    }
    if let Some(port) = &d.port {
        e.check(
            at(base, "port.number"),
            validate_port(port.number.unwrap_or(0)),
        );
    }
}

fn check_weight(e: &mut Errors, field: String, w: i32) {
    if !(0..=100).contains(&w) {
        e.add(field, format!("weight {w} must be in range 0..100"));
    }
}

/// Istio: "total destination weight N != 100" when more than one destination is given.
fn check_total_weight(e: &mut Errors, field: &str, count: usize, total: i64) {
    if count > 1 && total != 100 {
        e.add(field, format!("total destination weight {total} != 100"));
    }
}

fn validate_http_route_destinations(routes: &[HttpRouteDestination], field: &str, e: &mut Errors) {
    let mut total: i64 = 0;
    for (j, r) in routes.iter().enumerate() {
        let f = idx(field, j);
        check_headers(e, &at(&f, "headers"), r.headers.as_ref());
        validate_destination(&r.destination, &at(&f, "destination"), e);
        let w = r.weight.unwrap_or(0);
        check_weight(e, at(&f, "weight"), w);
        total += i64::from(w);
    }
    check_total_weight(e, field, routes.len(), total);
}

fn validate_route_destinations(routes: &[RouteDestination], field: &str, e: &mut Errors) {
    let mut total: i64 = 0;
    for (j, r) in routes.iter().enumerate() {
        let f = idx(field, j);
        validate_destination(&r.destination, &at(&f, "destination"), e);
        let w = r.weight.unwrap_or(0);
        check_weight(e, at(&f, "weight"), w);
        total += i64::from(w);
    }
    check_total_weight(e, field, routes.len(), total);
}

fn validate_redirect(r: &HttpRedirect, base: &str, e: &mut Errors) {
    let non_empty = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if !non_empty(&r.uri)
        && !non_empty(&r.prefix_rewrite)
        && !non_empty(&r.authority)
        && !non_empty(&r.scheme)
        && r.port.is_none()
        && r.derive_port.is_none()
    {
        e.add(
            base,
            "redirect must specify URI, authority, scheme, or port",
        );
    }
    if r.uri.is_some() && r.prefix_rewrite.is_some() {
        e.add(base, "only one of uri or prefixRewrite may be set");
    }
    if r.port.is_some() && r.derive_port.is_some() {
        e.add(base, "only one of port or derivePort may be set");
    }
    if let Some(code) = r.redirect_code {
        if !(300..=399).contains(&code) {
            e.add(
                at(base, "redirectCode"),
                format!("{code} is not a valid redirect code, must be 3xx"),
            );
        }
    }
    if let Some(s) = r.scheme.as_deref().filter(|s| !s.is_empty()) {
        if s != "http" && s != "https" {
            e.add(
                at(base, "scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
    }
    if let Some(p) = r.port {
        e.check(at(base, "port"), validate_port(p));
    }
    check_enum(
        e,
        at(base, "derivePort"),
        r.derive_port.as_ref(),
        &["FROM_PROTOCOL_DEFAULT", "FROM_REQUEST_PORT"],
    );
}

/// Istio's `validateHTTPStatus`.
fn validate_http_status(status: i64) -> Result<(), String> {
    if (200..=599).contains(&status) {
        Ok(())
    } else {
        Err(format!("HTTP status {status} is not in range 200-599"))
    }
}

fn is_base64(s: &str) -> bool {
    let s = s.trim_end_matches('=');
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn validate_direct_response(d: &HttpDirectResponse, base: &str, e: &mut Errors) {
    e.check(
        at(base, "status"),
        validate_http_status(i64::from(d.status)),
    );
    if let Some(body) = &d.body {
        let f = at(base, "body");
        if body.string.is_some() && body.bytes.is_some() {
            e.add(f.clone(), "only one of string or bytes may be set");
        }
        if let Some(b) = &body.bytes {
            if !is_base64(b) {
                e.add(at(&f, "bytes"), "bytes must be base64-encoded");
            }
        }
        let size = body
            .string
            .as_ref()
            .or(body.bytes.as_ref())
            .map_or(0, String::len);
        if size > 1024 * 1024 {
            e.add(
                f,
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        }
    }
}

/// Envoy's retry conditions, which Istio accepts in `retryOn` besides status codes.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

fn validate_retries(r: &HttpRetry, base: &str, e: &mut Errors) {
    if r.attempts.is_some_and(|a| a < 0) {
        e.add(at(base, "attempts"), "attempts cannot be negative");
    }
    check_duration(e, at(base, "perTryTimeout"), r.per_try_timeout.as_ref());
    check_duration(e, at(base, "backoff"), r.backoff.as_ref());
    if let Some(retry_on) = r.retry_on.as_deref().filter(|s| !s.is_empty()) {
        for policy in retry_on.split(',').map(str::trim) {
            let is_status = policy
                .parse::<u16>()
                .is_ok_and(|c| (100..=599).contains(&c));
            if !is_status && !RETRY_ON.contains(&policy) {
                e.add(
                    at(base, "retryOn"),
                    format!("{policy:?} is not a valid retryOn policy"),
                );
            }
        }
    }
}

fn validate_rewrite(r: &HttpRewrite, base: &str, e: &mut Errors) {
    let uri = r.uri.as_deref().is_some_and(|u| !u.is_empty());
    let authority = r.authority.as_deref().is_some_and(|a| !a.is_empty());
    if uri && r.uri_regex_rewrite.is_some() {
        e.add(
            base,
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
        return;
    }
    if !uri && r.uri_regex_rewrite.is_none() && !authority {
        e.add(
            base,
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
        return;
    }
    if let Some(rr) = &r.uri_regex_rewrite {
        let f = at(base, "uriRegexRewrite");
        match (rr.pattern.as_deref(), rr.rewrite.as_deref()) {
            (Some(p), Some(w)) if !p.is_empty() && !w.is_empty() => {
                if let Some(why) = regex_error(p) {
                    e.add(
                        at(&f, "match"),
                        format!("UriRegexRewrite contains invalid regex: {why}"),
                    );
                }
            }
            _ => e.add(
                f,
                "UriRegexRewrite requires both Rewrite and Match fields to be specified",
            ),
        }
    }
}

/// The gRPC status names Istio accepts for fault aborts.
const GRPC_STATUSES: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

fn validate_fault(fault: &HttpFaultInjection, base: &str, e: &mut Errors) {
    if fault.abort.is_none() && fault.delay.is_none() {
        e.add(
            base,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(abort) = &fault.abort {
        let f = at(base, "abort");
        check_percentage(e, at(&f, "percentage"), abort.percentage.as_ref());
        let kinds = [
            abort.http_status.is_some(),
            abort.grpc_status.is_some(),
            abort.http2_error.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            e.add(
                f.clone(),
                "only one of httpStatus, grpcStatus or http2Error may be set",
            );
        }
        if let Some(s) = abort.http_status {
            e.check(at(&f, "httpStatus"), validate_http_status(i64::from(s)));
        }
        if let Some(s) = &abort.grpc_status {
            if !GRPC_STATUSES.contains(&s.as_str()) {
                e.add(
                    at(&f, "grpcStatus"),
                    format!(
                        "gRPC status {s:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
                    ),
                );
            }
        }
        if abort.http2_error.is_some() {
            e.add(
                at(&f, "http2Error"),
                "HTTP/2 abort fault injection not supported yet",
            );
        }
    }
    if let Some(delay) = &fault.delay {
        let f = at(base, "delay");
        check_percentage(e, at(&f, "percentage"), delay.percentage.as_ref());
        check_percent(e, at(&f, "percent"), delay.percent);
        match (&delay.fixed_delay, &delay.exponential_delay) {
            (Some(_), Some(_)) => e.add(
                f.clone(),
                "only one of fixedDelay or exponentialDelay may be set",
            ),
            (None, None) => e.add(f.clone(), "delay must specify fixedDelay"),
            _ => {}
        }
        check_duration(e, at(&f, "fixedDelay"), delay.fixed_delay.as_ref());
        if delay.exponential_delay.is_some() {
            check_duration(
                e,
                at(&f, "exponentialDelay"),
                delay.exponential_delay.as_ref(),
            );
            e.add(
                at(&f, "exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
    }
}

const CORS_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn validate_cors(cors: &CorsPolicy, base: &str, e: &mut Errors) {
    for (i, origin) in cors.allow_origins.iter().enumerate() {
        let f = idx(&at(base, "allowOrigins"), i);
        let value = origin
            .exact
            .as_ref()
            .or(origin.prefix.as_ref())
            .or(origin.regex.as_ref());
        if value.is_none_or(String::is_empty) {
            e.add(f, "'' is not a valid match type for CORS allow origins");
            continue;
        }
        check_string_match(
            e,
            f,
            origin,
            MatchUse::Required {
                empty_prefix_ok: false,
            },
        );
    }
    for (i, method) in cors.allow_methods.iter().enumerate() {
        if !CORS_METHODS.contains(&method.as_str()) {
            e.add(
                idx(&at(base, "allowMethods"), i),
                format!("{method:?} is not a supported HTTP method"),
            );
        }
    }
    for (what, list) in [
        ("allowHeaders", &cors.allow_headers),
        ("exposeHeaders", &cors.expose_headers),
    ] {
        for (i, h) in list.iter().enumerate() {
            if h != "*" {
                e.check(idx(&at(base, what), i), validate_header_name(h));
            }
        }
    }
    check_duration(e, at(base, "maxAge"), cors.max_age.as_ref());
    if let Some(n) = cors.max_age.as_deref().and_then(duration_nanos) {
        if n >= 1_000_000 && n % 1_000_000_000 != 0 {
            e.add(
                at(base, "maxAge"),
                "max_age duration is accurate only to seconds precision",
            );
        }
    }
    check_enum(
        e,
        at(base, "unmatchedPreflights"),
        cors.unmatched_preflights.as_ref(),
        &["UNSPECIFIED", "FORWARD", "IGNORE"],
    );
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

fn validate_gateway(name: &str, gw: &GatewaySpec, e: &mut Errors) {
    if !name.is_empty() && !is_istio_label(name) {
        e.add("metadata.name", format!("invalid gateway name: {name:?}"));
    }
    if gw.servers.is_empty() {
        e.add("spec.servers", "gateway must have at least one server");
    }
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    for (i, server) in gw.servers.iter().enumerate() {
        let base = idx("spec.servers", i);
        validate_server(server, &base, e);
        if !server.port.name.is_empty() && !port_names.insert(&server.port.name) {
            e.add(
                at(&base, "port.name"),
                format!(
                    "port names in servers must be unique: duplicate name {}",
                    server.port.name
                ),
            );
        }
    }
    istio_labels(&gw.selector, "spec.selector", e);
}

/// Istio's `validateNamespaceSlashWildcardHostname`.
fn validate_ns_slash_host(host: &str, gateway: bool) -> Result<(), String> {
    let Some((ns, dns)) = host.split_once('/') else {
        if gateway {
            return validate_wildcard_domain(host);
        }
        return Err("host must be of form namespace/dnsName".into());
    };
    if ns.is_empty() || dns.is_empty() {
        return Err("config namespace and dnsName in host entry cannot be empty".into());
    }
    let special = ns == "*" || ns == "." || (!gateway && ns == "~");
    if !special && !is_istio_label(ns) {
        let what = if gateway { "gateway" } else { "sidecar" };
        return Err(format!("invalid namespace value {ns:?} in {what}"));
    }
    validate_wildcard_domain(dns)
}

fn port_is_unset(p: &Port) -> bool {
    p.number == 0 && p.protocol.is_empty() && p.name.is_empty() && p.target_port.is_none()
}

fn validate_server(server: &Server, base: &str, e: &mut Errors) {
    if server.hosts.is_empty() {
        e.add(
            at(base, "hosts"),
            "server config must contain at least one host",
        );
    }
    for (i, h) in server.hosts.iter().enumerate() {
        e.check(idx(&at(base, "hosts"), i), validate_ns_slash_host(h, true));
    }

    let port = &server.port;
    let pf = at(base, "port");
    let bind = server.bind.as_deref().unwrap_or("");
    let unix = bind.starts_with("unix://");
    let mut port_ok = true;
    if port_is_unset(port) {
        e.add(pf.clone(), "port is required");
        port_ok = false;
    } else {
        if !known_protocol(&port.protocol) {
            e.add(
                at(&pf, "protocol"),
                format!(
                    "invalid protocol {:?}, supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL",
                    port.protocol
                ),
            );
            port_ok = false;
        }
        if port.number > 0 || !unix {
            if let Err(m) = validate_port(port.number) {
                e.add(at(&pf, "number"), m);
                port_ok = false;
            }
        }
        if port.target_port.is_some_and(|t| t > 0) {
            e.add(
                at(&pf, "targetPort"),
                "targetPort has no impact on Gateways",
            );
        }
        if port.name.is_empty() {
            e.add(at(&pf, "name"), "port name must be set");
        }
    }
    if unix {
        if port.number != 0 {
            e.add(
                at(base, "bind"),
                format!("port number must be 0 for unix domain socket: {bind:?}"),
            );
        }
    } else if !bind.is_empty() && bind.parse::<IpAddr>().is_err() {
        e.add(
            at(base, "bind"),
            format!("bind ip must be a valid ip address: {bind:?}"),
        );
    }

    if let Some(tls) = &server.tls {
        validate_server_tls(tls, &at(base, "tls"), e);
    }
    if port_ok {
        let p = &port.protocol;
        if protocol_is_tls(p) && server.tls.is_none() {
            e.add(
                at(base, "tls"),
                "server must have TLS settings for HTTPS/TLS protocols",
            );
        } else if !protocol_is_tls(p) {
            if let Some(tls) = &server.tls {
                if protocol_is_http(p) {
                    let passthrough = matches!(
                        tls.mode.as_deref(),
                        None | Some("PASSTHROUGH") | Some("AUTO_PASSTHROUGH")
                    );
                    let has_files = [
                        &tls.ca_certificates,
                        &tls.private_key,
                        &tls.server_certificate,
                    ]
                    .iter()
                    .any(|f| f.as_deref().is_some_and(|s| !s.is_empty()));
                    if !passthrough || has_files {
                        e.add(
                            at(base, "tls"),
                            "server cannot have TLS settings for plain text HTTP ports",
                        );
                    }
                } else {
                    e.add(
                        at(base, "tls"),
                        "server cannot have TLS settings for non HTTPS/TLS ports",
                    );
                }
            }
        }
    }
}

/// Istio's `validateTLSOptions` and the CRD's rules for `ServerTLSSettings`.
fn validate_server_tls(tls: &ServerTlsSettings, base: &str, e: &mut Errors) {
    check_enum(
        e,
        at(base, "mode"),
        tls.mode.as_ref(),
        &[
            "PASSTHROUGH",
            "SIMPLE",
            "MUTUAL",
            "AUTO_PASSTHROUGH",
            "ISTIO_MUTUAL",
            "OPTIONAL_MUTUAL",
        ],
    );
    let versions = ["TLS_AUTO", "TLSV1_0", "TLSV1_1", "TLSV1_2", "TLSV1_3"];
    check_enum(
        e,
        at(base, "minProtocolVersion"),
        tls.min_protocol_version.as_ref(),
        &versions,
    );
    check_enum(
        e,
        at(base, "maxProtocolVersion"),
        tls.max_protocol_version.as_ref(),
        &versions,
    );
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let has_name = set(&tls.credential_name);
    let has_names = !tls.credential_names.is_empty();
    let has_certs = !tls.tls_certificates.is_empty();
    if has_names && has_certs {
        e.add(
            base,
            "only one of credentialNames or tlsCertificates can be set",
        );
    }
    if has_name && has_names {
        e.add(
            base,
            "only one of credentialName or credentialNames can be set",
        );
    }
    if has_name && has_certs {
        e.add(
            base,
            "only one of credentialName or tlsCertificates can be set",
        );
    }
    if tls.credential_names.len() > 2 {
        e.add(
            at(base, "credentialNames"),
            format!(
                "Too many: {}: must have at most 2 items",
                tls.credential_names.len()
            ),
        );
    }
    if tls.tls_certificates.len() > 2 {
        e.add(
            at(base, "tlsCertificates"),
            format!(
                "Too many: {}: must have at most 2 items",
                tls.tls_certificates.len()
            ),
        );
    }
    let mode = tls.mode.as_deref().unwrap_or("PASSTHROUGH");
    if mode == "ISTIO_MUTUAL" {
        for (value, what) in [
            (&tls.server_certificate, "server certificate"),
            (&tls.private_key, "private key"),
            (&tls.ca_certificates, "CA bundle"),
            (&tls.credential_name, "credentialName"),
        ] {
            if set(value) {
                e.add(
                    base,
                    format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                );
            }
        }
        return;
    }
    let remote_credentials = has_name || has_names || has_certs;
    if matches!(mode, "SIMPLE" | "MUTUAL" | "OPTIONAL_MUTUAL") && remote_credentials {
        if has_name && set(&tls.ca_crl) {
            e.add(
                at(base, "caCrl"),
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        return;
    }
    if mode == "SIMPLE" {
        if !set(&tls.server_certificate) {
            e.add(base, "SIMPLE TLS requires a server certificate");
        }
        if !set(&tls.private_key) {
            e.add(base, "SIMPLE TLS requires a private key");
        }
    } else if mode == "MUTUAL" || mode == "OPTIONAL_MUTUAL" {
        if !set(&tls.server_certificate) {
            e.add(base, "MUTUAL TLS requires a server certificate");
        }
        if !set(&tls.private_key) {
            e.add(base, "MUTUAL TLS requires a private key");
        }
        if !set(&tls.ca_certificates) {
            e.add(base, "MUTUAL TLS requires a client CA bundle");
        }
    }
}

// ---------------------------------------------------------------------------
// ServiceEntry
// ---------------------------------------------------------------------------

fn validate_service_entry(se: &ServiceEntrySpec, namespace: &str, e: &mut Errors) {
    if se.workload_selector.is_some() && !se.endpoints.is_empty() {
        e.add(
            "spec",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    if let Some(ws) = &se.workload_selector {
        istio_labels(&ws.labels, "spec.workloadSelector.labels", e);
        selector_no_wildcards(&ws.labels, "spec.workloadSelector.labels", e);
    }
    if se.hosts.is_empty() {
        e.add("spec.hosts", "service entry must have at least one host");
    }
    for (i, h) in se.hosts.iter().enumerate() {
        let f = idx("spec.hosts", i);
        if h == "*" {
            e.add(f, "hostname cannot be wildcard");
        } else {
            e.check(f, validate_wildcard_domain(h));
        }
    }
    let resolution = se.resolution.as_deref().unwrap_or("NONE");
    check_enum(
        e,
        "spec.resolution".into(),
        se.resolution.as_ref(),
        &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"],
    );
    check_enum(
        e,
        "spec.location".into(),
        se.location.as_ref(),
        &["MESH_EXTERNAL", "MESH_INTERNAL"],
    );

    let mut cidr = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr |= a.contains('/');
        e.check(idx("spec.addresses", i), validate_ip_subnet(a));
    }
    if cidr && resolution != "NONE" && resolution != "STATIC" {
        e.add(
            "spec.addresses",
            "CIDR addresses are allowed only when resolution is set to NONE or STATIC",
        );
    }

    if se.ports.is_empty() {
        e.add("spec.ports", "service entry must have at least one port");
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut numbers: BTreeSet<u32> = BTreeSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let f = idx("spec.ports", i);
        if p.name.is_empty() {
            e.add(at(&f, "name"), "port name must be set");
        } else {
            e.check(at(&f, "name"), validate_port_name(&p.name));
            if !names.insert(&p.name) {
                e.add(
                    at(&f, "name"),
                    format!("service entry port name {:?} already defined", p.name),
                );
            }
        }
        e.check(at(&f, "number"), validate_port(p.number));
        if !numbers.insert(p.number) {
            e.add(
                at(&f, "number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        if let Some(t) = p.target_port {
            e.check(at(&f, "targetPort"), validate_port(t));
        }
        e.check(at(&f, "protocol"), validate_protocol(&p.protocol));
    }

    let dns = matches!(resolution, "DNS" | "DNS_ROUND_ROBIN");
    match resolution {
        "NONE" if !se.endpoints.is_empty() => {
            e.add(
                "spec.endpoints",
                "no endpoints should be provided for resolution type none",
            );
        }
        "STATIC" if se.endpoints.is_empty() && se.workload_selector.is_none() => {
            e.add(
                "spec.endpoints",
                "endpoints (or a workloadSelector) are required for resolution type STATIC",
            );
        }
        "DNS" | "DNS_ROUND_ROBIN" => {
            if se.endpoints.is_empty() {
                for (i, h) in se.hosts.iter().enumerate() {
                    if h != "*" && validate_fqdn(h).is_err() && validate_wildcard_domain(h).is_ok()
                    {
                        e.add(
                            idx("spec.hosts", i),
                            format!(
                                "hosts must be FQDN if no endpoints are provided for resolution mode {resolution}"
                            ),
                        );
                    }
                }
            }
            if resolution == "DNS_ROUND_ROBIN" && se.endpoints.len() > 1 {
                e.add(
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {resolution}"),
                );
            }
        }
        _ => {}
    }
    for (i, ep) in se.endpoints.iter().enumerate() {
        let f = idx("spec.endpoints", i);
        let address = ep.address.as_deref().unwrap_or("");
        if address.is_empty() && ep.network.is_none() {
            e.add(at(&f, "address"), "Address is required");
        } else if let Some(path) = address.strip_prefix("unix://") {
            if !(path.starts_with('/') || path.starts_with('@')) {
                e.add(
                    at(&f, "address"),
                    "UDS must be an absolute path or abstract socket",
                );
            } else if path.ends_with('/') {
                e.add(at(&f, "address"), "UDS may not be a dir");
            }
            if !ep.ports.is_empty() {
                e.add(at(&f, "ports"), "UDS may not include ports");
            }
        } else if !address.is_empty() {
            let ip = address.parse::<IpAddr>().is_ok();
            if resolution == "STATIC" && !ip {
                e.add(
                    at(&f, "address"),
                    format!("endpoint address {address:?} is not a valid IP address"),
                );
            } else if dns && !ip && validate_fqdn(address).is_err() {
                e.add(
                    at(&f, "address"),
                    format!("endpoint address {address:?} is not a valid FQDN or an IP address"),
                );
            }
        }
        istio_labels(&ep.labels, &at(&f, "labels"), e);
        for (name, port) in &ep.ports {
            let pf = at(&at(&f, "ports"), name);
            if !is_istio_label(name) {
                e.add(pf.clone(), "port name must be valid");
            } else if !names.contains(name.as_str()) {
                e.add(
                    pf.clone(),
                    format!("endpoint port {name:?} is not defined by the service entry"),
                );
            }
            if !(1..=65535).contains(port) {
                e.add(pf, "port must be between 1-65535");
            }
        }
    }
    if resolution != "NONE" && se.hosts.len() > 1 {
        if let Some(i) = se
            .ports
            .iter()
            .position(|p| !protocol_is_http(&p.protocol) && !protocol_is_tls(&p.protocol))
        {
            e.add(
                idx("spec.ports", i),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    check_export_to(e, "spec.exportTo", namespace, &se.export_to, true);
}

// ---------------------------------------------------------------------------
// DestinationRule
// ---------------------------------------------------------------------------

fn validate_destination_rule(dr: &DestinationRuleSpec, namespace: &str, e: &mut Errors) {
    if dr.host.is_empty() {
        e.add("spec.host", "host is required");
    } else {
        e.check("spec.host", validate_wildcard_domain(&dr.host));
    }
    if let Some(tp) = &dr.traffic_policy {
        validate_traffic_policy(tp, "spec.trafficPolicy", e);
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (i, subset) in dr.subsets.iter().enumerate() {
        let base = idx("spec.subsets", i);
        if subset.name.is_empty() {
            e.add(at(&base, "name"), "subset name cannot be empty");
        } else if !is_istio_label(&subset.name) {
            e.add(
                at(&base, "name"),
                format!("subset name is invalid: {}", subset.name),
            );
        } else if !names.insert(&subset.name) {
            e.add(
                at(&base, "name"),
                format!("duplicate subset names: {}", subset.name),
            );
        }
        istio_labels(&subset.labels, &at(&base, "labels"), e);
        if let Some(tp) = &subset.traffic_policy {
            validate_traffic_policy(tp, &at(&base, "trafficPolicy"), e);
        }
    }
    check_export_to(e, "spec.exportTo", namespace, &dr.export_to, false);
    if let Some(ws) = &dr.workload_selector {
        let f = "spec.workloadSelector.matchLabels";
        for (k, v) in &ws.match_labels {
            if k.is_empty() {
                e.add(f, "key must not be empty");
            }
            if k.contains('*') {
                e.add(at(f, k), "wildcard not allowed in label key match");
            }
            if v.contains('*') {
                e.add(at(f, k), "wildcard not allowed in label value match");
            }
        }
        istio_labels(&ws.match_labels, f, e);
        if dr.export_to.iter().any(|x| x != "." && x != namespace) {
            e.add(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
}

fn validate_traffic_policy(tp: &TrafficPolicy, base: &str, e: &mut Errors) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        e.add(base, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        e.add(
            base,
            "tunnel and proxyProtocol must not be specified simultaneously",
        );
    }
    if let Some(od) = &tp.outlier_detection {
        validate_outlier_detection(od, &at(base, "outlierDetection"), e);
    }
    if let Some(cp) = &tp.connection_pool {
        validate_connection_pool(cp, &at(base, "connectionPool"), e);
    }
    if let Some(lb) = &tp.load_balancer {
        validate_load_balancer(lb, &at(base, "loadBalancer"), e);
    }
    if let Some(tls) = &tp.tls {
        validate_client_tls(tls, &at(base, "tls"), e);
    }
    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let f = idx(&at(base, "portLevelSettings"), i);
        match pl.port.as_ref().and_then(|p| p.number) {
            None => e.add(at(&f, "port"), "portTrafficPolicy must have valid port"),
            Some(n) => {
                e.check(at(&f, "port.number"), validate_port(n));
                if !ports.insert(n) {
                    e.add(
                        at(&f, "port.number"),
                        format!("port level settings for port {n} are already defined"),
                    );
                }
            }
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            e.add(f, "port traffic policy must have at least one field");
            continue;
        }
        if let Some(od) = &pl.outlier_detection {
            validate_outlier_detection(od, &at(&f, "outlierDetection"), e);
        }
        if let Some(cp) = &pl.connection_pool {
            validate_connection_pool(cp, &at(&f, "connectionPool"), e);
        }
        if let Some(lb) = &pl.load_balancer {
            validate_load_balancer(lb, &at(&f, "loadBalancer"), e);
        }
        if let Some(tls) = &pl.tls {
            validate_client_tls(tls, &at(&f, "tls"), e);
        }
    }
    if let Some(t) = &tp.tunnel {
        let f = at(base, "tunnel");
        if let Some(p) = t.protocol.as_deref().filter(|p| !p.is_empty()) {
            if p != "CONNECT" && p != "POST" {
                e.add(
                    at(&f, "protocol"),
                    "tunnel protocol must be \"CONNECT\" or \"POST\"",
                );
            }
        }
        if let (Err(fq), Err(ip)) = (validate_fqdn(&t.target_host), validate_ip(&t.target_host)) {
            e.add(
                at(&f, "targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {fq}; {ip}"),
            );
        }
        if let Err(m) = validate_port(t.target_port) {
            e.add(
                at(&f, "targetPort"),
                format!("tunnel target port is invalid: {m}"),
            );
        }
    }
    if let Some(pp) = &tp.proxy_protocol {
        check_enum(
            e,
            at(base, "proxyProtocol.version"),
            pp.version.as_ref(),
            &["V1", "V2"],
        );
    }
    if let Some(rb) = &tp.retry_budget {
        let f = at(base, "retryBudget");
        if let Some(p) = rb.percent.filter(|p| !(0.0..=100.0).contains(p)) {
            e.add(
                at(&f, "percent"),
                format!("percentage {p} is not in range 0..100"),
            );
        }
        check_duration_syntax(e, at(&f, "budgetInterval"), rb.budget_interval.as_ref());
    }
}

fn validate_outlier_detection(od: &OutlierDetection, base: &str, e: &mut Errors) {
    let mut sub = Errors::default();
    check_duration(
        &mut sub,
        at(base, "baseEjectionTime"),
        od.base_ejection_time.as_ref(),
    );
    for err in sub.0.drain(..) {
        e.add(
            err.field,
            format!(
                "outlier detection base ejection time invalid: {}",
                err.message
            ),
        );
    }
    check_duration(&mut sub, at(base, "interval"), od.interval.as_ref());
    for err in sub.0.drain(..) {
        e.add(
            err.field,
            format!("outlier detection interval invalid: {}", err.message),
        );
    }
    if od.split_external_local_origin_errors != Some(true)
        && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        e.add(
            at(base, "consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    check_percent(e, at(base, "maxEjectionPercent"), od.max_ejection_percent);
    check_percent(e, at(base, "minHealthPercent"), od.min_health_percent);
    for (i, code) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            e.add(
                idx(&at(base, "outlierDetectionHttpErrorCodes"), i),
                format!("Invalid value: {code}: must be between 100 and 599"),
            );
        }
    }
}

fn validate_connection_pool(cp: &ConnectionPoolSettings, base: &str, e: &mut Errors) {
    if cp.http.is_none() && cp.tcp.is_none() {
        e.add(base, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &cp.http {
        let f = at(base, "http");
        for (name, value, what) in [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ] {
            if value.is_some_and(|v| v < 0) {
                e.add(at(&f, name), format!("{what} must be non-negative"));
            }
        }
        check_duration(e, at(&f, "idleTimeout"), h.idle_timeout.as_ref());
        check_enum(
            e,
            at(&f, "h2UpgradePolicy"),
            h.h2_upgrade_policy.as_ref(),
            &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"],
        );
        if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true)
        {
            e.add(
                at(&f, "useClientProtocol"),
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            check_duration(e, at(&f, "http2KeepAlive.interval"), ka.interval.as_ref());
            check_duration(e, at(&f, "http2KeepAlive.timeout"), ka.timeout.as_ref());
        }
    }
    if let Some(t) = &cp.tcp {
        let f = at(base, "tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            e.add(
                at(&f, "maxConnections"),
                "max connections must be non-negative",
            );
        }
        check_duration(e, at(&f, "connectTimeout"), t.connect_timeout.as_ref());
        check_duration(
            e,
            at(&f, "maxConnectionDuration"),
            t.max_connection_duration.as_ref(),
        );
        check_duration_syntax(e, at(&f, "idleTimeout"), t.idle_timeout.as_ref());
        if let Some(ka) = &t.tcp_keepalive {
            check_duration(e, at(&f, "tcpKeepalive.time"), ka.time.as_ref());
            check_duration(e, at(&f, "tcpKeepalive.interval"), ka.interval.as_ref());
        }
    }
}

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn validate_load_balancer(lb: &LoadBalancerSettings, base: &str, e: &mut Errors) {
    let kinds = [
        lb.simple.is_some(),
        lb.consistent_hash.is_some(),
        lb.backend_utilization.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        e.add(
            base,
            "only one of simple, consistentHash or backendUtilization may be set",
        );
    }
    check_enum(
        e,
        at(base, "simple"),
        lb.simple.as_ref(),
        &[
            "UNSPECIFIED",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
        ],
    );
    if let Some(ch) = &lb.consistent_hash {
        let f = at(base, "consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            e.add(
                f.clone(),
                "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set",
            );
        }
        if ch.ring_hash.is_some() && ch.maglev.is_some() {
            e.add(f.clone(), "only one of ringHash or maglev may be set");
        }
        if let Some(cookie) = &ch.http_cookie {
            if cookie.name.is_empty() {
                e.add(at(&f, "httpCookie.name"), "name required for HttpCookie");
            }
            // Istio >= 1.20 accepts a cookie without ttl (Envoy then hashes only
            // requests that carry the cookie).
            if cookie.ttl.is_some() {
                check_duration_syntax(e, at(&f, "httpCookie.ttl"), cookie.ttl.as_ref());
            }
        }
        if let Some(size) = ch.maglev.as_ref().and_then(|m| m.table_size) {
            if !is_prime(size) {
                e.add(
                    at(&f, "maglev.tableSize"),
                    format!("maglev table size {size} must be a prime number"),
                );
            }
        }
    }
    if let Some(bu) = &lb.backend_utilization {
        let f = at(base, "backendUtilization");
        check_duration_syntax(
            e,
            at(&f, "weightExpirationPeriod"),
            bu.weight_expiration_period.as_ref(),
        );
        check_duration_syntax(
            e,
            at(&f, "weightStabilizationPeriod"),
            bu.weight_stabilization_period.as_ref(),
        );
        check_duration_syntax(
            e,
            at(&f, "weightUpdatePeriod"),
            bu.weight_update_period.as_ref(),
        );
    }
    if let Some(loc) = &lb.locality_lb_setting {
        let f = at(base, "localityLbSetting");
        if !loc.distribute.is_empty() && !loc.failover.is_empty() {
            e.add(
                f.clone(),
                "can not simultaneously specify 'distribute' and 'failover'",
            );
        }
        for (i, d) in loc.distribute.iter().enumerate() {
            let df = idx(&at(&f, "distribute"), i);
            let mut total = 0u64;
            for (to, w) in &d.to {
                if *w == 0 || *w > 100 {
                    e.add(
                        at(&at(&df, "to"), to),
                        "locality weight must be in range [1, 100]",
                    );
                }
                total += u64::from(*w);
            }
            if total != 100 {
                e.add(at(&df, "to"), "total locality weight must equal to 100");
            }
        }
        for (i, fo) in loc.failover.iter().enumerate() {
            let ff = idx(&at(&f, "failover"), i);
            let (from, to) = (
                fo.from.as_deref().unwrap_or(""),
                fo.to.as_deref().unwrap_or(""),
            );
            if from == to {
                e.add(
                    ff,
                    "locality lb failover settings must specify different regions",
                );
            } else if from.contains('/') || to.contains('/') {
                e.add(ff, "locality lb failover only specify region");
            } else if from.contains('*') || to.contains('*') {
                e.add(
                    ff,
                    "locality lb failover region should not contain '*' wildcard",
                );
            }
        }
    }
    check_duration(
        e,
        at(base, "warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    );
    if let Some(w) = &lb.warmup {
        let f = at(base, "warmup");
        if w.duration.is_empty() {
            e.add(at(&f, "duration"), "Required value");
        } else {
            check_duration(e, at(&f, "duration"), Some(&w.duration));
        }
        if let Some(p) = w.minimum_percent.filter(|p| !(0.0..=100.0).contains(p)) {
            e.add(
                at(&f, "minimumPercent"),
                format!("percentage {p} is not in range 0..100"),
            );
        }
        if let Some(a) = w.aggression.filter(|a| *a < 0.0) {
            e.add(
                at(&f, "aggression"),
                format!("Invalid value: {a}: must be greater than or equal to 0"),
            );
        }
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        if z.min_cluster_size == Some(0) {
            e.add(
                at(base, "zoneAwareLbSetting.minClusterSize"),
                "Invalid value: 0: must be greater than or equal to 1",
            );
        }
    }
}

/// Istio's `ValidateTLS` for client (origination) settings.
fn validate_client_tls(tls: &ClientTlsSettings, base: &str, e: &mut Errors) {
    check_enum(
        e,
        at(base, "mode"),
        tls.mode.as_ref(),
        &["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"],
    );
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    if mode == "ISTIO_MUTUAL" && tls.insecure_skip_verify == Some(true) {
        e.add(
            at(base, "insecureSkipVerify"),
            "cannot set InsecureSkipVerify to true for ISTIO_MUTUAL mode",
        );
    }
    if matches!(mode, "SIMPLE" | "MUTUAL") && set(&tls.credential_name) {
        if set(&tls.client_certificate)
            || set(&tls.ca_certificates)
            || set(&tls.private_key)
            || set(&tls.ca_crl)
        {
            e.add(
                base,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    if mode == "MUTUAL" {
        if !set(&tls.client_certificate) {
            e.add(base, "client certificate required for mutual tls");
        }
        if !set(&tls.private_key) {
            e.add(base, "private key required for mutual tls");
        }
    }
}

// ---------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------

fn validate_sidecar(sc: &SidecarSpec, namespace: &str, e: &mut Errors) {
    let _ = namespace;
    if let Some(ws) = &sc.workload_selector {
        if ws.labels.is_empty() {
            e.add(
                "spec.workloadSelector.labels",
                "sidecar: workloadSelector labels cannot be empty",
            );
        }
        istio_labels(&ws.labels, "spec.workloadSelector.labels", e);
        selector_no_wildcards(&ws.labels, "spec.workloadSelector.labels", e);
    }
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        e.add("spec.egress", "sidecar: missing egress");
    }
    let capture_modes = ["DEFAULT", "IPTABLES", "NONE"];

    let mut ports: BTreeSet<u32> = BTreeSet::new();
    for (i, ing) in sc.ingress.iter().enumerate() {
        let base = idx("spec.ingress", i);
        let pf = at(&base, "port");
        if port_is_unset(&ing.port) {
            e.add(pf, "sidecar: port is required for ingress listeners");
            continue;
        }
        if ing.port.target_port.is_some_and(|t| t > 0) {
            e.add(
                at(&pf, "targetPort"),
                "targetPort has no impact on Sidecars",
            );
        }
        if !ing.port.name.is_empty() {
            e.check(at(&pf, "name"), validate_port_name(&ing.port.name));
        }
        e.check(at(&pf, "protocol"), validate_protocol(&ing.port.protocol));
        e.check(at(&pf, "number"), validate_port(ing.port.number));
        if let Some(bind) = ing.bind.as_deref().filter(|b| !b.is_empty()) {
            e.check(at(&base, "bind"), validate_ip(bind));
        }
        if !ports.insert(ing.port.number) {
            e.add(
                at(&pf, "number"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        check_enum(
            e,
            at(&base, "captureMode"),
            ing.capture_mode.as_ref(),
            &capture_modes,
        );
        if let Some(ep) = ing.default_endpoint.as_deref().filter(|d| !d.is_empty()) {
            let f = at(&base, "defaultEndpoint");
            if let Some(path) = ep.strip_prefix("unix://") {
                if !path.starts_with('/') && !path.starts_with('@') {
                    e.add(f, "unix domain socket address must be an absolute path");
                }
            } else {
                match ep.rsplit_once(':') {
                    None => e.add(f, format!("address {ep}: missing port in address")),
                    Some((host, port)) => {
                        let host = host.trim_start_matches('[').trim_end_matches(']');
                        if !host.is_empty()
                            && !matches!(host, "127.0.0.1" | "0.0.0.0" | "::1" | "::")
                        {
                            e.add(
                                f.clone(),
                                "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
                            );
                        }
                        match port.parse::<u32>() {
                            Ok(p) => e.check(f, validate_port(p)),
                            Err(_) => e.add(
                                f,
                                format!("sidecar: defaultEndpoint port ({port}) is not a number"),
                            ),
                        }
                    }
                }
            }
        }
        if let Some(tls) = &ing.tls {
            if tls.mode.as_deref() == Some("ISTIO_MUTUAL") {
                e.add(
                    at(&base, "tls.mode"),
                    "configuration is invalid: cannot set mode to ISTIO_MUTUAL in sidecar ingress tls",
                );
            } else {
                validate_server_tls(tls, &at(&base, "tls"), e);
            }
        }
        if let Some(cp) = &ing.connection_pool {
            validate_connection_pool(cp, &at(&base, "connectionPool"), e);
        }
    }
    if let Some(cp) = &sc.inbound_connection_pool {
        validate_connection_pool(cp, "spec.inboundConnectionPool", e);
    }

    let mut ports: BTreeSet<u32> = BTreeSet::new();
    let mut sockets: BTreeSet<&str> = BTreeSet::new();
    let mut catch_all = false;
    for (i, eg) in sc.egress.iter().enumerate() {
        let base = idx("spec.egress", i);
        let bind = eg.bind.as_deref().unwrap_or("");
        match &eg.port {
            None => {
                if catch_all {
                    e.add(
                        base.clone(),
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if i == sc.egress.len() - 1 {
                    catch_all = true;
                } else {
                    e.add(
                        base.clone(),
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                let pf = at(&base, "port");
                if port.target_port.is_some_and(|t| t > 0) {
                    e.add(
                        at(&pf, "targetPort"),
                        "targetPort has no impact on Sidecars",
                    );
                }
                if !port.name.is_empty() {
                    e.check(at(&pf, "name"), validate_port_name(&port.name));
                }
                e.check(at(&pf, "protocol"), validate_protocol(&port.protocol));
                if port.number == 0 {
                    if !bind.starts_with("unix://") {
                        e.add(
                            at(&pf, "number"),
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        );
                    } else if !sockets.insert(bind) {
                        e.add(
                            at(&base, "bind"),
                            "sidecar: unix domain socket values for listeners in egress must be unique",
                        );
                    }
                    if !matches!(
                        eg.capture_mode.as_deref(),
                        None | Some("DEFAULT") | Some("NONE")
                    ) {
                        e.add(
                            at(&base, "captureMode"),
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                } else {
                    e.check(at(&pf, "number"), validate_port(port.number));
                    if !bind.is_empty() {
                        e.check(at(&base, "bind"), validate_ip(bind));
                    }
                    if !ports.insert(port.number) {
                        e.add(
                            at(&pf, "number"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        check_enum(
            e,
            at(&base, "captureMode"),
            eg.capture_mode.as_ref(),
            &capture_modes,
        );
        if eg.hosts.is_empty() {
            e.add(
                at(&base, "hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in eg.hosts.iter().enumerate() {
            e.check(
                idx(&at(&base, "hosts"), j),
                validate_ns_slash_host(h, false),
            );
        }
    }

    if let Some(otp) = &sc.outbound_traffic_policy {
        let f = "spec.outboundTrafficPolicy";
        check_enum(
            e,
            at(f, "mode"),
            otp.mode.as_ref(),
            &["REGISTRY_ONLY", "ALLOW_ANY"],
        );
        if let Some(proxy) = &otp.egress_proxy {
            let pf = at(f, "egressProxy");
            // The mode defaults to REGISTRY_ONLY.
            if otp.mode.as_deref() != Some("ALLOW_ANY") {
                e.add(
                    pf,
                    "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
                );
            } else if let Err(m) = validate_fqdn(&proxy.host) {
                e.add(at(&pf, "host"), m);
            } else if proxy.port.is_none() {
                e.add(
                    at(&pf, "port"),
                    "sidecar: egress_proxy port must be non-nil",
                );
            } else {
                validate_destination(proxy, &pf, e);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Kubernetes: Service, Deployment
// ---------------------------------------------------------------------------

fn k8s_invalid_label(value: &str) -> String {
    format!(
        "Invalid value: {value:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')"
    )
}

fn k8s_port_range(value: i64) -> String {
    format!("Invalid value: {value}: must be between 1 and 65535, inclusive")
}

fn k8s_supported(value: &str, allowed: &[&str]) -> String {
    let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "Unsupported value: {value:?}: supported values: {}",
        list.join(", ")
    )
}

/// Kubernetes' label rules (`metav1validation.ValidateLabels`).
fn k8s_labels(labels: &Labels, base: &str, e: &mut Errors) {
    for (k, v) in labels {
        let f = at(base, k);
        let (prefix, name) = match k.split_once('/') {
            Some((p, n)) => (Some(p), n),
            None => (None, k.as_str()),
        };
        if let Some(p) = prefix {
            if !crate::load::is_dns1123_subdomain(p) {
                e.add(
                    f.clone(),
                    format!("Invalid value: {k:?}: prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
                );
            }
        }
        if k.matches('/').count() > 1 || !is_qualified_name(name) {
            e.add(
                f.clone(),
                format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')"),
            );
        }
        if !v.is_empty() && !is_qualified_name(v) {
            e.add(
                f,
                format!("Invalid value: {v:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345')"),
            );
        }
    }
}

/// Kubernetes' IANA_SVC_NAME rule for named ports.
fn iana_svc_name(name: &str) -> Result<(), String> {
    let why = if name.len() > 15 {
        "must be no more than 15 characters"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    } else if name.contains("--") {
        "must not contain consecutive hyphens"
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        "must contain at least one letter (a-z)"
    } else if name.starts_with('-') || name.ends_with('-') {
        "must not begin or end with a hyphen"
    } else {
        return Ok(());
    };
    Err(format!("Invalid value: {name:?}: {why}"))
}

fn validate_service(svc: &ServiceSpec, e: &mut Errors) {
    let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if let Some(t) = &svc.service_type {
        if !types.contains(&t.as_str()) {
            e.add("spec.type", k8s_supported(t, &types));
        }
    }
    let external_name = svc.service_type.as_deref() == Some("ExternalName");
    let headless = svc.cluster_ip.as_deref() == Some("None");
    if svc.ports.is_empty() && !external_name && !headless {
        e.add("spec.ports", "Required value");
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut port_protocols: BTreeSet<(u32, &str)> = BTreeSet::new();
    for (i, p) in svc.ports.iter().enumerate() {
        let base = idx("spec.ports", i);
        match p.name.as_deref() {
            None | Some("") => {
                if svc.ports.len() > 1 {
                    e.add(at(&base, "name"), "Required value");
                }
            }
            Some(n) => {
                if !is_dns1123_label(n) {
                    e.add(at(&base, "name"), k8s_invalid_label(n));
                } else if !names.insert(n) {
                    e.add(at(&base, "name"), format!("Duplicate value: {n:?}"));
                }
            }
        }
        if !(1..=65535).contains(&p.port) {
            e.add(at(&base, "port"), k8s_port_range(i64::from(p.port)));
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        let protocols = ["SCTP", "TCP", "UDP"];
        if !protocols.contains(&protocol) {
            e.add(at(&base, "protocol"), k8s_supported(protocol, &protocols));
        } else if !port_protocols.insert((p.port, protocol)) {
            e.add(
                base.clone(),
                format!("Duplicate value: port {} with protocol {protocol}", p.port),
            );
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) if !(1..=65535).contains(t) => {
                e.add(at(&base, "targetPort"), k8s_port_range(i64::from(*t)));
            }
            Some(IntOrString::String(s)) => e.check(at(&base, "targetPort"), iana_svc_name(s)),
            _ => {}
        }
        if let Some(np) = p.node_port {
            if !(1..=65535).contains(&np) {
                e.add(at(&base, "nodePort"), k8s_port_range(i64::from(np)));
            }
        }
    }
    k8s_labels(&svc.selector, "spec.selector", e);
}

/// Whether a label selector (matchLabels and matchExpressions) selects `labels`.
fn selector_matches(
    match_labels: &Labels,
    expressions: &[serde_json::Value],
    labels: &Labels,
) -> bool {
    let labels_ok = match_labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    let expressions_ok = expressions.iter().all(|x| {
        let key = x.get("key").and_then(|k| k.as_str()).unwrap_or("");
        let values: Vec<&str> = x
            .get("values")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        let actual = labels.get(key).map(String::as_str);
        match x.get("operator").and_then(|o| o.as_str()).unwrap_or("") {
            "In" => actual.is_some_and(|a| values.contains(&a)),
            "NotIn" => actual.is_none_or(|a| !values.contains(&a)),
            "Exists" => actual.is_some(),
            "DoesNotExist" => actual.is_none(),
            _ => false,
        }
    });
    labels_ok && expressions_ok
}

fn validate_deployment(d: &DeploymentSpec, e: &mut Errors) {
    let sel = &d.selector;
    for (i, x) in sel.match_expressions.iter().enumerate() {
        let f = idx("spec.selector.matchExpressions", i);
        let op = x.get("operator").and_then(|o| o.as_str()).unwrap_or("");
        let ops = ["In", "NotIn", "Exists", "DoesNotExist"];
        if !ops.contains(&op) {
            e.add(at(&f, "operator"), k8s_supported(op, &ops));
        }
        if x.get("key")
            .and_then(|k| k.as_str())
            .is_none_or(str::is_empty)
        {
            e.add(at(&f, "key"), "Required value");
        }
    }
    k8s_labels(&sel.match_labels, "spec.selector.matchLabels", e);
    let template_labels = &d.template.metadata.labels;
    k8s_labels(template_labels, "spec.template.metadata.labels", e);
    if sel.match_labels.is_empty() && sel.match_expressions.is_empty() {
        e.add(
            "spec.selector",
            "Invalid value: {}: empty selector is invalid for deployment",
        );
    } else if !selector_matches(&sel.match_labels, &sel.match_expressions, template_labels) {
        let shown: BTreeMap<&str, &str> = template_labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        e.add(
            "spec.template.metadata.labels",
            format!(
                "Invalid value: {}: `selector` does not match template `labels`",
                serde_json::to_string(&shown).unwrap_or_default()
            ),
        );
    }

    let pod = &d.template.spec;
    for field in pod.unknown_fields() {
        let name = field.rsplit('.').next().unwrap_or(&field).to_string();
        let owner = if field.starts_with("containers[") {
            "Container"
        } else {
            "PodSpec"
        };
        e.add(
            format!("spec.template.spec.{field}"),
            format!("unknown field `{name}`: Kubernetes' {owner} has no such field"),
        );
    }
    if pod.containers.is_empty() {
        e.add("spec.template.spec.containers", "Required value");
    }
    let mut names: BTreeSet<&str> = BTreeSet::new();
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    for (list, what) in [
        (&pod.init_containers, "initContainers"),
        (&pod.containers, "containers"),
    ] {
        for (i, c) in list.iter().enumerate() {
            let base = format!("spec.template.spec.{what}[{i}]");
            validate_container(c, &base, &mut names, &mut port_names, e);
        }
    }
}

fn validate_container<'a>(
    c: &'a Container,
    base: &str,
    names: &mut BTreeSet<&'a str>,
    port_names: &mut BTreeSet<&'a str>,
    e: &mut Errors,
) {
    if c.name.is_empty() {
        e.add(at(base, "name"), "Required value");
    } else if !is_dns1123_label(&c.name) {
        e.add(at(base, "name"), k8s_invalid_label(&c.name));
    } else if !names.insert(&c.name) {
        e.add(at(base, "name"), format!("Duplicate value: {:?}", c.name));
    }
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        e.add(at(base, "image"), "Required value");
    }
    for (j, p) in c.ports.iter().enumerate() {
        let f = idx(&at(base, "ports"), j);
        if !(1..=65535).contains(&p.container_port) {
            e.add(
                at(&f, "containerPort"),
                k8s_port_range(i64::from(p.container_port)),
            );
        }
        if let Some(hp) = p.host_port {
            if !(1..=65535).contains(&hp) {
                e.add(at(&f, "hostPort"), k8s_port_range(i64::from(hp)));
            }
        }
        if let Some(n) = p.name.as_deref() {
            if let Err(m) = iana_svc_name(n) {
                e.add(at(&f, "name"), m);
            } else if !port_names.insert(n) {
                e.add(at(&f, "name"), format!("Duplicate value: {n:?}"));
            }
        }
        if let Some(proto) = &p.protocol {
            let protocols = ["SCTP", "TCP", "UDP"];
            if !protocols.contains(&proto.as_str()) {
                e.add(at(&f, "protocol"), k8s_supported(proto, &protocols));
            }
        }
    }
    for (j, env) in c.env.iter().enumerate() {
        let f = idx(&at(base, "env"), j);
        let valid = !env.name.is_empty()
            && !env.name.as_bytes()[0].is_ascii_digit()
            && env
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if env.name.is_empty() {
            e.add(at(&f, "name"), "Required value");
        } else if !valid {
            e.add(
                at(&f, "name"),
                format!("Invalid value: {:?}: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit", env.name),
            );
        }
        if env.value.as_deref().is_some_and(|v| !v.is_empty()) && env.value_from.is_some() {
            e.add(
                at(&f, "valueFrom"),
                "Invalid value: \"\": may not be specified when `value` is not empty",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = |s: &str| duration_nanos(s).map(|n| n / 1_000_000);
        assert_eq!(ms("1s"), Some(1000));
        assert_eq!(ms("500ms"), Some(500));
        assert_eq!(ms("1.5s"), Some(1500));
        assert_eq!(ms("1m"), Some(60_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("1m30s"), Some(90_000));
        assert_eq!(ms("0"), Some(0));
        assert_eq!(duration_nanos("1us"), Some(1000));
        assert_eq!(duration_nanos("-2s"), Some(-2_000_000_000));
        for bad in ["", "1", "s", "1x", "1.s.", "ms", "1 s", "--1s", "1s2"] {
            assert_eq!(duration_nanos(bad), None, "{bad:?}");
        }
        assert_eq!(parse_duration("2.5s"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn host_names() {
        for ok in [
            "a",
            "a.b",
            "*.b.c",
            "*",
            "*b.c",
            "*-b.c",
            "Upper.Case",
            "istio.io.",
        ] {
            assert!(validate_wildcard_domain(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "a.*.c", "-a.b", "a.b-", "1.2.3.4", "a_b.c"] {
            assert!(validate_wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(validate_fqdn("*.a").is_err());
        assert!(hosts_overlap("*.foo.com", "bar.foo.com"));
        assert!(hosts_overlap("*.com", "*.foo.com"));
        assert!(!hosts_overlap("a.com", "b.com"));
        assert!(host_subset_of("a.foo.com", "*.foo.com"));
        assert!(!host_subset_of("*.foo.com", "a.foo.com"));
    }

    #[test]
    fn subnets_and_names() {
        assert!(validate_ip_subnet("10.0.0.0/8").is_ok());
        assert!(validate_ip_subnet("::1/128").is_ok());
        assert!(validate_ip_subnet("10.0.0.1").is_ok());
        assert!(validate_ip_subnet("10.0.0.0/33").is_err());
        assert!(validate_ip_subnet("nope").is_err());
        assert!(is_dns1035_label("svc-a"));
        assert!(!is_dns1035_label("1svc"));
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("a--b").is_err());
        assert!(iana_svc_name("1234").is_err());
        assert!(is_prime(65537) && !is_prime(65536));
    }
}
