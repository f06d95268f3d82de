//! Per-route policies of an HTTP route, compiled from a VirtualService rule:
//! header operations, fault injection, retries, mirrors, CORS and redirects, with
//! the defaults Istio gives Envoy when a rule says nothing.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use regex::Regex;

use meshbox_config::istio::{
    CorsPolicy as CorsSpec, HeaderOperations, HttpFaultInjection, HttpRedirect, HttpRetry, Percent,
};
use meshbox_config::validate::parse_duration;

use crate::tables::StrMatcher;

/// `headers.request` or `headers.response`: set, add, remove, applied in that order
/// after Envoy's own headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Headers replaced (or added when absent).
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Headers appended (a further value when present).
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed.
    pub remove: Vec<HeaderName>,
    /// A request `set`/`add` of `:authority` or `host`: Istio turns it into an
    /// authority rewrite (pilot/pkg/networking/core/route: translateHeadersOperations).
    pub authority: Option<String>,
    /// The `set`/`add` values that name a secret (`${file:PATH}`, `${env:NAME}`): until
    /// [`HeaderOps::resolve_secrets`] runs, `set`/`add` hold the template text itself.
    pub secrets: Vec<SecretHeader>,
}

/// Where a header value's secret comes from: `${file:PATH}` or `${env:NAME}` inside a
/// VirtualService `headers` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `${file:PATH}`: the file's contents, without a trailing newline.
    File(String),
    /// `${env:NAME}`: the variable of meshbox's own environment.
    Env(String),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::File(p) => write!(f, "${{file:{p}}}"),
            SecretRef::Env(n) => write!(f, "${{env:{n}}}"),
        }
    }
}

/// A `set` or `add` entry whose value is a template with secret references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretHeader {
    /// `true` for `add`, `false` for `set`.
    pub add: bool,
    /// The index in `set` or `add`.
    pub index: usize,
    /// The value as written in the YAML, e.g. `Bearer ${file:/run/token}`.
    pub template: String,
}

/// The pieces of a header value: literal text and secret references, in order.
/// `None` when the value names no secret. An unterminated `${file:` or `${env:` is
/// literal text.
pub fn parse_secret_template(value: &str) -> Option<Vec<Result<String, SecretRef>>> {
    let mut parts = Vec::new();
    let mut rest = value;
    let mut found = false;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let (kind, body) = if let Some(b) = after.strip_prefix("file:") {
            (true, b)
        } else if let Some(b) = after.strip_prefix("env:") {
            (false, b)
        } else {
            parts.push(Ok(rest[..at + 2].to_string()));
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            break;
        };
        if at > 0 {
            parts.push(Ok(rest[..at].to_string()));
        }
        let name = body[..end].to_string();
        parts.push(Err(if kind {
            SecretRef::File(name)
        } else {
            SecretRef::Env(name)
        }));
        found = true;
        rest = &body[end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Ok(rest.to_string()));
    }
    found.then_some(parts)
}

/// Reads one secret: a file's contents without trailing `\r`/`\n`, or an environment
/// variable of this process. The error names the file or variable.
pub fn read_secret(r: &SecretRef) -> Result<String, String> {
    match r {
        SecretRef::File(p) => std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
            .map_err(|e| format!("cannot read secret file {p:?} (named by {r}): {e}")),
        SecretRef::Env(n) => {
            std::env::var(n).map_err(|e| format!("environment variable {n:?} (named by {r}): {e}"))
        }
    }
}

/// Expands a header value's secret references with `lookup`; the value must make a
/// valid header value.
pub fn expand_secret_template(
    value: &str,
    lookup: &mut dyn FnMut(&SecretRef) -> Result<String, String>,
) -> Result<String, String> {
    let Some(parts) = parse_secret_template(value) else {
        return Ok(value.to_string());
    };
    let mut out = String::new();
    for p in parts {
        match p {
            Ok(text) => out.push_str(&text),
            Err(r) => out.push_str(&lookup(&r)?),
        }
    }
    if HeaderValue::from_str(&out).is_err() {
        return Err(format!(
            "the value of {value:?} is not a valid header value (control characters?)"
        ));
    }
    Ok(out)
}

impl HeaderOps {
    /// Compiles Istio's header operations; names or values that HTTP cannot carry are
    /// left out (validation refuses them before they get here).
    pub fn compile(ops: Option<&HeaderOperations>) -> HeaderOps {
        let Some(ops) = ops else {
            return HeaderOps::default();
        };
        let is_authority = |k: &str| k.eq_ignore_ascii_case("host") || k == ":authority";
        let pair = |(k, v): (&String, &String)| {
            if is_authority(k) {
                return None;
            }
            Some((
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        };
        let authority = ops
            .set
            .iter()
            .chain(ops.add.iter())
            .find(|(k, _)| is_authority(k))
            .map(|(_, v)| v.clone());
        let mut secrets = Vec::new();
        let mut note = |add: bool, entries: &std::collections::BTreeMap<String, String>| {
            let mut index = 0;
            for (k, v) in entries {
                if pair((k, v)).is_none() {
                    continue;
                }
                if parse_secret_template(v).is_some() {
                    secrets.push(SecretHeader {
                        add,
                        index,
                        template: v.clone(),
                    });
                }
                index += 1;
            }
        };
        note(false, &ops.set);
        note(true, &ops.add);
        HeaderOps {
            secrets,
            set: ops.set.iter().filter_map(pair).collect(),
            add: ops.add.iter().filter_map(pair).collect(),
            remove: ops
                .remove
                .iter()
                .filter_map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
                .collect(),
            authority,
        }
    }

    /// Replaces each secret template in `set`/`add` by its value read with `lookup`,
    /// marked sensitive. A value that cannot be read keeps its template text (which
    /// holds no secret); the errors are returned.
    pub fn resolve_secrets(
        &mut self,
        lookup: &mut dyn FnMut(&SecretRef) -> Result<String, String>,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        for s in &self.secrets {
            let list = if s.add { &mut self.add } else { &mut self.set };
            let Some(slot) = list.get_mut(s.index) else {
                continue;
            };
            match expand_secret_template(&s.template, lookup)
                .and_then(|v| HeaderValue::from_str(&v).map_err(|e| e.to_string()))
            {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    slot.1 = v;
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// How a `set` (`add: false`) or `add` entry's value may be shown: the template
    /// with `(secret redacted)` when it names a secret, else the value.
    pub fn shown_value(&self, add: bool, index: usize) -> String {
        if let Some(s) = self
            .secrets
            .iter()
            .find(|s| s.add == add && s.index == index)
        {
            return format!("{} (secret redacted)", s.template);
        }
        let list = if add { &self.add } else { &self.set };
        list.get(index)
            .map(|(_, v)| v.to_str().unwrap_or("?").to_string())
            .unwrap_or_default()
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
            && self.add.is_empty()
            && self.remove.is_empty()
            && self.authority.is_none()
    }

    /// Applies the operations to a header map.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (k, v) in &self.set {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.add {
            headers.append(k.clone(), v.clone());
        }
        for k in &self.remove {
            headers.remove(k);
        }
    }

    /// Applies these operations followed by `other`'s, exactly as
    /// `self.then(other).apply(headers)` (every set, then every add, then every
    /// remove), without building the merged operations: the request path does this
    /// for every request.
    pub fn apply_then(&self, other: &HeaderOps, headers: &mut HeaderMap) {
        for (k, v) in self.set.iter().chain(&other.set) {
            headers.insert(k.clone(), v.clone());
        }
        for (k, v) in self.add.iter().chain(&other.add) {
            headers.append(k.clone(), v.clone());
        }
        for k in self.remove.iter().chain(&other.remove) {
            headers.remove(k);
        }
    }

    /// These operations followed by `other`'s (route-level, then destination-level).
    /// For the request path, where secrets are already resolved: the templates only
    /// matter for display and are not carried.
    pub fn then(&self, other: &HeaderOps) -> HeaderOps {
        let mut out = HeaderOps {
            set: self.set.clone(),
            add: self.add.clone(),
            remove: self.remove.clone(),
            authority: self.authority.clone(),
            secrets: Vec::new(),
        };
        out.set.extend(other.set.iter().cloned());
        out.add.extend(other.add.iter().cloned());
        out.remove.extend(other.remove.iter().cloned());
        if other.authority.is_some() {
            out.authority = other.authority.clone();
        }
        out
    }
}

/// A percentage in [0, 100] as Istio's `Percent` (or the old integer `percent`); 100
/// when absent.
fn percent(p: Option<&Percent>, old: Option<i32>) -> f64 {
    match (p.and_then(|p| p.value), old) {
        (Some(v), _) => v.clamp(0.0, 100.0),
        (None, Some(o)) => f64::from(o).clamp(0.0, 100.0),
        (None, None) => 100.0,
    }
}

/// `fault`: delays and aborts injected before the request is forwarded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// `delay.fixedDelay` and the share of requests delayed.
    pub delay: Option<(Duration, f64)>,
    /// `abort.httpStatus` and the share of requests aborted.
    pub abort: Option<(u16, f64)>,
}

impl Fault {
    /// Compiles `fault`, or `None` when it injects nothing.
    pub fn compile(f: Option<&HttpFaultInjection>) -> Option<Fault> {
        let f = f?;
        let delay = f.delay.as_ref().and_then(|d| {
            let t = d.fixed_delay.as_deref().and_then(parse_duration)?;
            Some((t, percent(d.percentage.as_ref(), d.percent)))
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let status = u16::try_from(a.http_status?).ok()?;
            Some((status, percent(a.percentage.as_ref(), None)))
        });
        (delay.is_some() || abort.is_some()).then_some(Fault { delay, abort })
    }
}

/// Whether an event with probability `percent` happens for a random draw.
pub fn chance(percent: f64, random: u64) -> bool {
    if percent >= 100.0 {
        return true;
    }
    // Envoy's fractional percent has a resolution of one in a million.
    ((random % 1_000_000) as f64) < percent * 10_000.0
}

/// The conditions (`retryOn`) under which a request is tried again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect-failure`.
    pub connect_failure: bool,
    /// `reset`: the upstream closed or reset before answering.
    pub reset: bool,
    /// `5xx` (includes connect failures and resets).
    pub five_xx: bool,
    /// `gateway-error`: 502, 503, 504 (and connect failures).
    pub gateway_error: bool,
    /// `retriable-4xx`: 409.
    pub retriable_4xx: bool,
    /// `retriable-status-codes` (or bare codes in `retryOn`).
    pub status_codes: Vec<u16>,
}

/// The retry policy of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first try (`attempts`).
    pub attempts: u32,
    /// `perTryTimeout`.
    pub per_try_timeout: Option<Duration>,
    /// `retryOn`.
    pub on: RetryOn,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::istio_default()
    }
}

impl RetryPolicy {
    /// Istio's policy when a rule has no `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// with status 503 (pilot/pkg/networking/core/route/retry: DefaultPolicy).
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on: RetryOn {
                connect_failure: true,
                status_codes: vec![503],
                ..RetryOn::default()
            },
        }
    }

    /// No retries (`retries.attempts: 0`, and inbound traffic).
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            on: RetryOn::default(),
        }
    }

    /// Compiles a rule's `retries` (absent: Istio's default).
    pub fn compile(r: Option<&HttpRetry>) -> RetryPolicy {
        let Some(r) = r else {
            return RetryPolicy::istio_default();
        };
        let attempts = r
            .attempts
            .map(|a| u32::try_from(a).unwrap_or(0))
            .unwrap_or(2);
        if attempts == 0 {
            return RetryPolicy::none();
        }
        let mut on = RetryOn::default();
        // Istio's default retryOn when attempts are given without it.
        let spec = r.retry_on.as_deref().unwrap_or(
            "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        );
        for part in spec.split(',').map(str::trim) {
            match part {
                "connect-failure" => on.connect_failure = true,
                "reset" | "reset-before-request" => on.reset = true,
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => {
                    if on.status_codes.is_empty() {
                        on.status_codes.push(503);
                    }
                }
                code => {
                    if let Ok(c) = code.parse::<u16>() {
                        on.status_codes
                            .retain(|s| *s != 503 || spec.contains("retriable-status-codes"));
                        on.status_codes.push(c);
                    }
                }
            }
        }
        RetryPolicy {
            attempts,
            per_try_timeout: r.per_try_timeout.as_deref().and_then(parse_duration),
            on,
        }
    }

    /// Whether a failure to connect is retried.
    pub fn retries_connect_failure(&self) -> bool {
        self.on.connect_failure || self.on.five_xx || self.on.gateway_error
    }

    /// Whether a reset before the response is retried.
    pub fn retries_reset(&self) -> bool {
        self.on.reset || self.on.five_xx
    }

    /// Whether an upstream answer with this status is retried.
    pub fn retries_status(&self, status: u16) -> bool {
        (self.on.five_xx && (500..600).contains(&status))
            || (self.on.gateway_error && matches!(status, 502..=504))
            || (self.on.retriable_4xx && status == 409)
            || self.on.status_codes.contains(&status)
    }
}

/// A mirror: a copy of the request sent to another cluster, its answer ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// The cluster the copy goes to.
    pub cluster: String,
    /// Share of requests mirrored.
    pub percent: f64,
}

/// `corsPolicy`, as Envoy's CORS filter applies it.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Origins allowed.
    pub allow_origins: Vec<StrMatcher>,
    /// `Access-Control-Allow-Methods`.
    pub allow_methods: Option<String>,
    /// `Access-Control-Allow-Headers`.
    pub allow_headers: Option<String>,
    /// `Access-Control-Expose-Headers`.
    pub expose_headers: Option<String>,
    /// `Access-Control-Max-Age`, seconds.
    pub max_age: Option<String>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
}

impl Cors {
    /// Compiles `corsPolicy` (including the deprecated `allowOrigin` exact list).
    pub fn compile(c: Option<&CorsSpec>) -> Option<Cors> {
        let c = c?;
        let mut allow_origins: Vec<StrMatcher> = c
            .allow_origin
            .iter()
            .map(|o| StrMatcher::Exact(o.clone()))
            .collect();
        for m in &c.allow_origins {
            if let Some(e) = &m.exact {
                allow_origins.push(StrMatcher::Exact(e.clone()));
            } else if let Some(p) = &m.prefix {
                allow_origins.push(StrMatcher::Prefix(p.clone()));
            } else if let Some(r) = &m.regex {
                if let Ok(re) = Regex::new(&format!("^(?:{r})$")) {
                    allow_origins.push(StrMatcher::Regex(re));
                }
            }
        }
        let join = |v: &Vec<String>| (!v.is_empty()).then(|| v.join(","));
        Some(Cors {
            allow_origins,
            allow_methods: join(&c.allow_methods),
            allow_headers: join(&c.allow_headers),
            expose_headers: join(&c.expose_headers),
            max_age: c
                .max_age
                .as_deref()
                .and_then(parse_duration)
                .map(|d| d.as_secs().to_string()),
            allow_credentials: c.allow_credentials.unwrap_or(false),
        })
    }

    /// Whether an `Origin` is allowed (`*` as an exact origin allows all).
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|m| match m {
            StrMatcher::Exact(e) if e == "*" => true,
            m => m.matches(origin),
        })
    }
}

/// `redirect`: the route answers with a 3xx and a Location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redirect {
    /// Replaces the whole path.
    pub path: Option<String>,
    /// Replaces the matched prefix (with the prefix the match used).
    pub prefix_rewrite: Option<(String, String)>,
    /// Replaces the host (and its port, if it names one).
    pub authority: Option<String>,
    /// Envoy's `port_redirect`: `port`, or with `derivePort: FROM_REQUEST_PORT` the
    /// port of the listener the route belongs to.
    pub port: Option<u16>,
    /// Replaces the scheme.
    pub scheme: Option<String>,
    /// The status code, 301 unless given.
    pub code: u16,
}

impl Redirect {
    /// Compiles `redirect` for a route of `listener_port`; `matched_prefix` is the
    /// prefix of a prefix uri match. Istio turns `derivePort: FROM_REQUEST_PORT` into
    /// the listener's port, since Envoy cannot read the port per request
    /// (pilot/pkg/networking/core/route: translateRedirect).
    pub fn compile(r: &HttpRedirect, matched_prefix: Option<&str>, listener_port: u32) -> Redirect {
        // Istio leaves the port out when the listener port is the default of the
        // redirect's scheme; Envoy then keeps the Host header's port.
        let scheme_default = if r.scheme.as_deref() == Some("https") {
            443
        } else {
            80
        };
        let derived = (r.derive_port.as_deref() == Some("FROM_REQUEST_PORT"))
            .then(|| u16::try_from(listener_port).ok())
            .flatten()
            .filter(|p| u32::from(*p) != scheme_default);
        Redirect {
            path: r.uri.clone(),
            prefix_rewrite: r
                .prefix_rewrite
                .clone()
                .map(|p| (matched_prefix.unwrap_or("/").to_string(), p)),
            authority: r.authority.clone(),
            port: r.port.and_then(|p| u16::try_from(p).ok()).or(derived),
            scheme: r.scheme.clone(),
            code: r
                .redirect_code
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(301),
        }
    }

    /// The `Location` for a request, Envoy's way: a `port_redirect` replaces the port
    /// and is left out when it is the new scheme's default; without one the Host's
    /// port stays, unless the scheme changes and it was the old scheme's default. The
    /// query is kept unless the new path brings its own.
    pub fn location(&self, scheme: &str, authority: &str, path_and_query: &str) -> String {
        let split = |a: &str| -> (String, Option<u16>) {
            match a.rsplit_once(':') {
                Some((h, p))
                    if !p.is_empty()
                        && p.bytes().all(|b| b.is_ascii_digit())
                        && !a.ends_with(']') =>
                {
                    (h.to_string(), p.parse().ok())
                }
                _ => (a.to_string(), None),
            }
        };
        let new_scheme = self.scheme.as_deref().unwrap_or(scheme);
        let (host, host_port) = split(self.authority.as_deref().unwrap_or(authority));
        let default_of = |s: &str| if s == "https" { 443 } else { 80 };
        let port = match self.port {
            Some(p) if p == default_of(new_scheme) => None,
            Some(p) => Some(p),
            None if new_scheme != scheme && host_port == Some(default_of(scheme)) => None,
            None => host_port,
        };
        let port_part = port.map(|p| format!(":{p}")).unwrap_or_default();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let new_path = match (&self.path, &self.prefix_rewrite) {
            (Some(p), _) => p.clone(),
            (None, Some((prefix, with))) if path.starts_with(prefix.as_str()) => {
                format!("{with}{}", &path[prefix.len()..])
            }
            _ => path.to_string(),
        };
        let path_and_query = match query {
            Some(q) if !new_path.contains('?') => format!("{new_path}?{q}"),
            _ => new_path,
        };
        format!("{new_scheme}://{host}{port_part}{path_and_query}")
    }
}

/// `rewrite.uriRegexRewrite`: every match in the path replaced (`\1` style groups).
#[derive(Debug, Clone)]
pub struct RegexRewrite {
    /// The pattern.
    pub regex: Regex,
    /// The replacement, with Envoy's `\N` group references turned into `${N}`.
    pub replacement: String,
}

impl RegexRewrite {
    /// Compiles the rewrite; `None` if the pattern does not compile.
    pub fn compile(pattern: &str, rewrite: &str) -> Option<RegexRewrite> {
        let regex = Regex::new(pattern).ok()?;
        let mut replacement = String::with_capacity(rewrite.len());
        let mut chars = rewrite.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some(d)) if d.is_ascii_digit() => {
                    replacement.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                ('$', _) => replacement.push_str("$$"),
                _ => replacement.push(c),
            }
        }
        Some(RegexRewrite { regex, replacement })
    }

    /// The rewritten path and query (the query is kept).
    pub fn apply(&self, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let new_path = self.regex.replace_all(path, self.replacement.as_str());
        match query {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path.into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_route_then_destination_ops_in_place_equals_applying_the_merged_ops() {
        let name = |n: &'static str| HeaderName::from_static(n);
        let value = |v: &'static str| HeaderValue::from_static(v);
        let route = HeaderOps {
            set: vec![(name("x-a"), value("route")), (name("x-b"), value("route"))],
            add: vec![(name("x-c"), value("route"))],
            remove: vec![name("x-d")],
            ..HeaderOps::default()
        };
        // The destination sets what the route removes and removes what it sets.
        let destination = HeaderOps {
            set: vec![(name("x-d"), value("dest")), (name("x-a"), value("dest"))],
            add: vec![(name("x-c"), value("dest"))],
            remove: vec![name("x-b")],
            ..HeaderOps::default()
        };
        let mut original = HeaderMap::new();
        original.insert(name("x-d"), value("client"));
        original.insert(name("x-e"), value("client"));
        let mut merged = original.clone();
        route.then(&destination).apply(&mut merged);
        let mut in_place = original;
        route.apply_then(&destination, &mut in_place);
        assert_eq!(merged, in_place);
        assert_eq!(in_place.get("x-a"), Some(&value("dest")));
        assert!(in_place.get("x-b").is_none());
        assert_eq!(in_place.get_all("x-c").iter().count(), 2);
    }

    #[test]
    fn secret_references_are_resolved_once_and_shown_redacted() {
        let mut ops = HeaderOperations::default();
        ops.set
            .insert("Authorization".into(), "Bearer ${file:/t}".into());
        ops.add.insert("X-Key".into(), "${env:K}".into());
        ops.add.insert("X-Plain".into(), "%REQ(x)% ${other}".into());
        let mut compiled = HeaderOps::compile(Some(&ops));
        assert_eq!(compiled.secrets.len(), 2);
        let errors = compiled.resolve_secrets(&mut |r| match r {
            SecretRef::File(p) if p == "/t" => Ok("tok".into()),
            SecretRef::Env(n) if n == "K" => Ok("key".into()),
            other => Err(format!("unknown {other}")),
        });
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(compiled.set[0].1, "Bearer tok");
        assert!(compiled.set[0].1.is_sensitive());
        assert_eq!(
            compiled.shown_value(false, 0),
            "Bearer ${file:/t} (secret redacted)"
        );
        assert_eq!(compiled.shown_value(true, 1), "%REQ(x)% ${other}");
        assert!(parse_secret_template("${file:/unterminated").is_none());
    }

    #[test]
    fn istio_default_retry_policy() {
        let p = RetryPolicy::compile(None);
        assert_eq!(p.attempts, 2);
        assert!(p.retries_connect_failure());
        assert!(p.retries_status(503));
        assert!(!p.retries_status(502));
        let none = RetryPolicy::compile(Some(&HttpRetry {
            attempts: Some(0),
            ..Default::default()
        }));
        assert_eq!(none.attempts, 0);
        let gw = RetryPolicy::compile(Some(&HttpRetry {
            attempts: Some(3),
            retry_on: Some("gateway-error,429".into()),
            per_try_timeout: Some("2s".into()),
            ..Default::default()
        }));
        assert!(gw.retries_status(502) && gw.retries_status(429) && !gw.retries_status(500));
        assert_eq!(gw.per_try_timeout, Some(Duration::from_secs(2)));
    }

    #[test]
    fn redirect_locations_follow_envoy() {
        let r = |spec: HttpRedirect, prefix: Option<&str>| Redirect::compile(&spec, prefix, 80);
        // Plain path redirect keeps host, port and query.
        let plain = r(
            HttpRedirect {
                uri: Some("/new".into()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            plain.location("http", "a.com:8080", "/old?x=1"),
            "http://a.com:8080/new?x=1"
        );
        assert_eq!(plain.code, 301);
        // Scheme change to https drops the old port.
        let https = r(
            HttpRedirect {
                scheme: Some("https".into()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(https.location("http", "a.com:80", "/p"), "https://a.com/p");
        // Port and derivePort.
        let port = r(
            HttpRedirect {
                port: Some(8443),
                scheme: Some("https".into()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(port.location("http", "a.com", "/"), "https://a.com:8443/");
        let derived = r(
            HttpRedirect {
                authority: Some("b.com".into()),
                derive_port: Some("FROM_REQUEST_PORT".into()),
                ..Default::default()
            },
            None,
        );
        // FROM_REQUEST_PORT is the listener's port (80 here): the default for http,
        // so left out; kept when the scheme becomes https (routing.go "redirect port
        // and scheme").
        assert_eq!(derived.location("http", "a.com:9000", "/"), "http://b.com/");
        let derived_https = r(
            HttpRedirect {
                authority: Some("b.com".into()),
                derive_port: Some("FROM_REQUEST_PORT".into()),
                scheme: Some("https".into()),
                ..Default::default()
            },
            None,
        );
        assert_eq!(
            derived_https.location("http", "a.com", "/foo"),
            "https://b.com:80/foo"
        );
        // Prefix rewrite keeps the rest of the path and the query.
        let prefix = r(
            HttpRedirect {
                prefix_rewrite: Some("/v2/".into()),
                redirect_code: Some(302),
                ..Default::default()
            },
            Some("/v1/"),
        );
        assert_eq!(
            prefix.location("http", "a.com", "/v1/items?q=2"),
            "http://a.com/v2/items?q=2"
        );
        assert_eq!(prefix.code, 302);
    }

    #[test]
    fn regex_rewrite_uses_groups_and_keeps_query() {
        let rw = RegexRewrite::compile("^/service/([^/]+)(/.*)$", "\\2/instance/\\1").unwrap();
        assert_eq!(
            rw.apply("/service/foo/v1/api?x=1"),
            "/v1/api/instance/foo?x=1"
        );
    }

    #[test]
    fn chance_is_proportional() {
        let hits = (0..1_000_000u64)
            .step_by(7)
            .filter(|r| chance(25.0, *r))
            .count();
        let total = (0..1_000_000u64).step_by(7).count();
        let share = hits as f64 / total as f64;
        assert!((share - 0.25).abs() < 0.01, "{share}");
        assert!(chance(100.0, 123) && !chance(0.0, 0));
    }
}
