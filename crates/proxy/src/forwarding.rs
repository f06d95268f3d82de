//! Forwarding along a VirtualService route, in the order of Istio's HTTP filter
//! chain: CORS, fault injection, then the router with header operations, mirrors,
//! retries and timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, ORIGIN};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Body;

use meshbox_routing::cluster_policy::{HashKey, LbPolicy};
use meshbox_routing::policy::{chance, Cors};
use meshbox_routing::tables::{Cluster, ClusterEndpoints, ForwardAction};
use meshbox_routing::ProxyTables;

use crate::balancer::{hash_key, ClusterState};
use crate::body::ProxyBody;
use crate::proxy::{
    copy_request, dns_failure, invalid_path, prepare_upstream, Downstream, Outcome, Proxy,
};

static X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");

/// Bodies up to this size are kept for retries and mirrors (Envoy's default
/// per-connection buffer limit is 1 MiB).
const REPLAY_LIMIT: u64 = 1 << 20;

/// Envoy's default retry back-off base interval.
const RETRY_BASE: Duration = Duration::from_millis(25);

impl Proxy {
    /// Serves one request along a forwarding route.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn forward_route(
        &self,
        req: Request<ProxyBody>,
        from: Downstream,
        tables: &ProxyTables,
        fwd: &ForwardAction,
        authority: &str,
        host: &str,
        port: u16,
        path: &str,
    ) -> Outcome {
        let origin = req
            .headers()
            .get(ORIGIN)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Envoy's CORS filter answers an allowed preflight itself.
        if let (Some(cors), Some(origin)) = (&fwd.cors, &origin) {
            let preflight = req.method() == Method::OPTIONS
                && req
                    .headers()
                    .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
            if preflight && cors.allows(origin) {
                let mut o = Outcome::local(StatusCode::OK, "", "-", "cors_response");
                add_cors_headers(o.response.headers_mut(), cors, origin, true);
                return o;
            }
        }
        let mut delayed = false;
        if let Some(fault) = &fwd.fault {
            if let Some((delay, pct)) = fault.delay {
                if chance(pct, self.next_random()) {
                    tokio::time::sleep(delay).await;
                    delayed = true;
                }
            }
            if let Some((status, pct)) = fault.abort {
                if chance(pct, self.next_random()) {
                    let code =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    let flags = if delayed { "DI,FI" } else { "FI" };
                    return Outcome::local(code, "fault filter abort", flags, "fault_filter_abort");
                }
            }
        }
        let Some(choice) = fwd.pick(self.next_random()) else {
            return Outcome::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "NC",
                "cluster_not_found",
            );
        };
        // Envoy's router records the upstream cluster only once it has found it: an NC
        // line shows `-` as %UPSTREAM_CLUSTER%.
        let Some(cluster) = tables.clusters.get(&choice.cluster) else {
            return Outcome::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "",
                "NC",
                "cluster_not_found",
            );
        };

        let state = self
            .cluster_states
            .load()
            .get(&cluster.name)
            .unwrap_or_default();
        let Some(admission) = state.admit().await else {
            // Envoy's circuit breaker: connections and pending requests are all taken.
            return Outcome::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                "UO",
                "upstream_reset_before_response_started{overflow}",
            )
            .with_cluster(cluster.name.clone());
        };
        let (mut parts, body) = req.into_parts();
        let (hash, set_cookie) = match &cluster.policy.lb {
            LbPolicy::ConsistentHash(key) => {
                hash_input(key, &parts, from.peer, || self.next_random())
            }
            _ => (None, None),
        };
        let mut new_path = fwd.uri_rewrite.as_ref().map(|r| r.apply(path));
        if let Some(rr) = &fwd.regex_rewrite {
            new_path = Some(rr.apply(new_path.as_deref().unwrap_or(path)));
        }
        if new_path.is_some() {
            if let Ok(v) = HeaderValue::from_str(path) {
                parts.headers.insert(&X_ENVOY_ORIGINAL_PATH, v);
            }
        }
        fwd.request_headers
            .apply_then(&choice.request_headers, &mut parts.headers);
        let authority = fwd
            .authority_rewrite
            .as_deref()
            .or(choice.request_headers.authority.as_deref())
            .unwrap_or(authority);

        // Keep the body when it may be sent more than once.
        let wants_replay = fwd.retry.attempts > 0 || !fwd.mirrors.is_empty();
        let small = body.size_hint().exact().is_some_and(|n| n <= REPLAY_LIMIT);
        let (mut first_body, replay) = if wants_replay && body.is_end_stream() {
            // Nothing to collect (most requests).
            (None, Some(Bytes::new()))
        } else if wants_replay && small {
            match body.collect().await {
                Ok(collected) => (None, Some(collected.to_bytes())),
                Err(_) => {
                    return Outcome::local(
                        StatusCode::BAD_REQUEST,
                        "",
                        "DPE",
                        "downstream_body_error",
                    );
                }
            }
        } else {
            (Some(body), None)
        };

        if let Some(bytes) = &replay {
            for mirror in &fwd.mirrors {
                if chance(mirror.percent, self.next_random()) {
                    self.send_mirror(
                        tables,
                        &mirror.cluster,
                        &parts,
                        bytes.clone(),
                        authority,
                        new_path.as_deref(),
                    );
                }
            }
        }

        let retries = if replay.is_some() {
            fwd.retry.attempts
        } else {
            0
        };
        // With retries, the route timeout wraps every try (below) and a try has only
        // its own perTryTimeout; without, the route timeout bounds the single try.
        let per_try = if retries > 0 {
            fwd.retry.per_try_timeout
        } else {
            fwd.retry.per_try_timeout.or(fwd.timeout)
        };
        // The head sent upstream, made once for every try.
        let prepared = prepare_upstream(&mut parts, Some(authority), new_path.as_deref());
        let parts = &parts;
        // The endpoint of the try in flight, for the log line if the route times out.
        let last_try = std::sync::Mutex::new(None::<SocketAddr>);
        let last_endpoint = &last_try;
        // A closure that makes the tries' future where it is awaited: a future held
        // in a local would stay in this function's state beside the awaited copy.
        let attempts = move || async move {
            let mut attempt = 0u32;
            let mut retry_slot = None;
            loop {
                let endpoint = match self.endpoint(cluster, &state, hash, host, port).await {
                    Ok(Some(e)) => e,
                    Ok(None) => {
                        return Outcome::local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no healthy upstream",
                            "UH",
                            "no_healthy_upstream",
                        )
                    }
                    Err(outcome) => return outcome,
                };
                let body = match (&replay, first_body.take()) {
                    (Some(bytes), _) => crate::body::bytes_body(bytes.clone()),
                    (None, Some(b)) => b,
                    (None, None) => break_outcome(),
                };
                // TLS origination: SNI from `sni`, else the Host sent upstream (auto_sni).
                let tls = cluster
                    .policy
                    .tls
                    .as_ref()
                    .map(|tls| crate::tls::UpstreamTls::for_request(tls, authority));
                if let Ok(mut last) = last_endpoint.lock() {
                    *last = Some(endpoint);
                }
                let active = state.start(cluster, endpoint);
                let outcome = self
                    .forward_prepared(
                        parts,
                        body,
                        tls,
                        from,
                        endpoint,
                        per_try,
                        crate::pool::ConnPolicy::of(&cluster.policy),
                    )
                    .await;
                drop(active);
                if let Some(policy) = &cluster.policy.outlier {
                    let status = match outcome.flags {
                        "UF" | "UC" | "UPE" => None,
                        "UT" => Some(504),
                        _ => Some(outcome.response.status().as_u16()),
                    };
                    state.record(policy, endpoint, status, &self.clock);
                }
                let retriable = match outcome.flags {
                    "UF" => fwd.retry.retries_connect_failure(),
                    "UC" | "UPE" => fwd.retry.retries_reset(),
                    "UT" => fwd.retry.retries_status(504),
                    _ => {
                        outcome.details == "via_upstream"
                            && fwd.retry.retries_status(outcome.response.status().as_u16())
                    }
                };
                if !retriable || attempt >= retries {
                    return if attempt > 0 && retriable {
                        exhausted(outcome)
                    } else {
                        outcome
                    };
                }
                // The retry before this one is over (Envoy's `resetRetry`); this one
                // needs a place under the cluster's `maxRetries`.
                drop(retry_slot.take());
                match state.start_retry(cluster.policy.max_retries) {
                    Some(slot) => retry_slot = Some(slot),
                    None => return retry_overflow(outcome),
                }
                attempt += 1;
                // Envoy's back-off: a random wait up to base * 2^(n-1).
                let cap = RETRY_BASE.as_millis() as u64 * (1u64 << (attempt - 1).min(4));
                // Boxed: only a retry needs the timer, not every request's state.
                let backoff = Box::pin(tokio::time::sleep(Duration::from_millis(
                    self.next_random() % cap.max(1),
                )));
                backoff.await;
            }
        };
        // The route timeout covers every try and the response's body (Envoy's route
        // `timeout`: until the upstream response is complete). Without retries the
        // single try is bounded by the same timeout (`per_try` above).
        let deadline = fwd.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut outcome = match (prepared, deadline.filter(|_| retries > 0)) {
            (Err(_), _) => invalid_path(),
            // Boxed: a route timeout is the rare case (Istio sets none by default).
            (Ok(()), Some(deadline)) => {
                let bounded = Box::pin(tokio::time::timeout_at(deadline, attempts()));
                match bounded.await {
                    Ok(o) => o,
                    Err(_) => Outcome::upstream_timeout(last_endpoint.lock().ok().and_then(|l| *l)),
                }
            }
            (Ok(()), None) => attempts().await,
        };
        if delayed && outcome.flags == "-" {
            outcome.flags = "DI";
        }
        // The rest of the upstream's response must come before the route's deadline too.
        if let Some(deadline) = deadline.filter(|_| outcome.details == "via_upstream") {
            outcome.response = outcome
                .response
                .map(|body| crate::body::DeadlineBody::bound(body, deadline));
        }
        if let Some(cookie) = set_cookie {
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                outcome
                    .response
                    .headers_mut()
                    .append(http::header::SET_COOKIE, v);
            }
        }
        // Kept until the response ends; without connection-pool limits there is nothing
        // to keep (and nothing to allocate).
        if admission.holds_anything() {
            outcome.hold = Some(Box::new(admission));
        }
        fwd.response_headers
            .apply_then(&choice.response_headers, outcome.response.headers_mut());
        if let (Some(cors), Some(origin)) = (&fwd.cors, &origin) {
            if cors.allows(origin) {
                add_cors_headers(outcome.response.headers_mut(), cors, origin, false);
            }
        }
        outcome.with_cluster(cluster.name.clone())
    }

    /// The endpoint for the next try: round robin over known addresses, a DNS
    /// lookup for DNS clusters, the request's own host for original destination.
    pub(crate) async fn endpoint(
        &self,
        cluster: &Cluster,
        state: &ClusterState,
        hash: Option<u64>,
        host: &str,
        port: u16,
    ) -> Result<Option<SocketAddr>, Outcome> {
        if cluster.policy.lb == LbPolicy::Passthrough {
            // PASSTHROUGH: the address the caller asked for, no balancing.
            return match self.resolver.resolve(host, port).await {
                Ok(addrs) => Ok(addrs.first().copied()),
                Err(e) => Err(dns_failure(&e.host).with_cluster(cluster.name.clone())),
            };
        }
        Ok(match &cluster.endpoints {
            ClusterEndpoints::Static(addrs) if addrs.is_empty() => None,
            ClusterEndpoints::Static(addrs) => {
                state.pick(cluster, addrs, hash, &self.clock, || self.next_random())
            }
            ClusterEndpoints::Dns(names) if names.is_empty() => None,
            ClusterEndpoints::Dns(names) => {
                let (name, target_port) = &names[cluster.next_index(names.len())];
                match self.resolver.resolve(name, *target_port).await {
                    Ok(addrs) => addrs.first().copied(),
                    Err(e) => {
                        tracing::debug!(proxy = %self.name, "{e}");
                        None
                    }
                }
            }
            ClusterEndpoints::OriginalDestination => {
                match self.resolver.resolve(host, port).await {
                    Ok(addrs) => addrs.first().copied(),
                    Err(e) => return Err(dns_failure(&e.host).with_cluster(cluster.name.clone())),
                }
            }
        })
    }

    /// Sends a copy of the request to a mirror cluster and forgets it: the answer is
    /// dropped and never delays or changes the real one. Envoy adds `-shadow` to the
    /// host of mirrored requests.
    fn send_mirror(
        &self,
        tables: &ProxyTables,
        cluster_name: &str,
        parts: &http::request::Parts,
        body: Bytes,
        authority: &str,
        new_path: Option<&str>,
    ) {
        let Some(cluster) = tables.clusters.get(cluster_name) else {
            return;
        };
        let ClusterEndpoints::Static(addrs) = &cluster.endpoints else {
            return;
        };
        if addrs.is_empty() {
            return;
        }
        let endpoint = addrs[cluster.next_index(addrs.len())];
        let shadow = shadow_authority(authority);
        let path = new_path.map(str::to_string).unwrap_or_else(|| {
            parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into())
        });
        let mut req = copy_request(parts, crate::body::bytes_body(body));
        let Ok(uri) = http::Uri::builder()
            .scheme("http")
            .authority(crate::proxy::socket_addr_text(endpoint))
            .path_and_query(path)
            .build()
        else {
            return;
        };
        *req.uri_mut() = uri;
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            req.headers_mut().insert(http::header::HOST, v);
        }
        let client = self.client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                if let Ok(resp) = client.request(req).await {
                    let _ = resp.into_body().collect().await;
                }
            })
            .await;
        });
    }
}

/// The consistent-hash value of a request, and a `Set-Cookie` when Envoy would
/// generate the hash cookie (`httpCookie` with a `ttl`, cookie absent).
fn hash_input(
    key: &HashKey,
    parts: &http::request::Parts,
    peer: SocketAddr,
    mut random: impl FnMut() -> u64,
) -> (Option<u64>, Option<String>) {
    match key {
        HashKey::Header(name) => (
            parts
                .headers
                .get(name.as_str())
                .map(|v| hash_key(v.as_bytes())),
            None,
        ),
        HashKey::SourceIp => (Some(hash_key(peer.ip().to_string().as_bytes())), None),
        HashKey::QueryParam(name) => {
            let value = parts.uri.query().and_then(|q| {
                q.split('&').find_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == name).then(|| v.to_string())
                })
            });
            (value.map(|v| hash_key(v.as_bytes())), None)
        }
        HashKey::Cookie { name, path, ttl } => {
            let found = parts
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|c| {
                    let (k, v) = c.trim().split_once('=')?;
                    (k == name).then(|| v.trim_matches('"').to_string())
                });
            match (found, ttl) {
                (Some(v), _) => (Some(hash_key(v.as_bytes())), None),
                (None, Some(ttl)) => {
                    let value = format!("{:016x}", random());
                    let mut cookie = format!("{name}=\"{value}\"; Max-Age={}", ttl.as_secs());
                    if let Some(p) = path {
                        cookie.push_str(&format!("; Path={p}"));
                    }
                    cookie.push_str("; HttpOnly");
                    (Some(hash_key(value.as_bytes())), Some(cookie))
                }
                (None, None) => (None, None),
            }
        }
    }
}

/// An empty body, for the impossible case of a second try without a kept body.
fn break_outcome() -> ProxyBody {
    crate::body::empty_body()
}

/// The final try failed too: Envoy adds URX and, for resets, says it retried.
fn exhausted(mut outcome: Outcome) -> Outcome {
    let flags = crate::proxy::add_flag(outcome.flags, "URX");
    let reason = match outcome.flags {
        "UF" => "connection failure",
        "UC" => crate::reset::ResetReason::ConnectionTermination.words(),
        "UPE" => crate::reset::ResetReason::ProtocolError.words(),
        _ => {
            outcome.flags = flags;
            return outcome;
        }
    };
    let body = format!("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: {reason}");
    let mut o = Outcome::local(
        StatusCode::SERVICE_UNAVAILABLE,
        &body,
        flags,
        outcome.details,
    );
    o.upstream_host = outcome.upstream_host;
    o.transport_failure = outcome.transport_failure.take();
    o
}

/// A retry the cluster's `maxRetries` had no room for is not made: the answer stands
/// with flag `UO` added (router.cc on `RetryStatus::NoOverflow`).
fn retry_overflow(mut outcome: Outcome) -> Outcome {
    outcome.flags = crate::proxy::add_flag(outcome.flags, "UO");
    outcome
}

/// `host[:port]` → `host-shadow[:port]`.
fn shadow_authority(authority: &str) -> String {
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => {
            format!("{h}-shadow:{p}")
        }
        _ => format!("{authority}-shadow"),
    }
}

fn add_cors_headers(headers: &mut http::HeaderMap, cors: &Cors, origin: &str, preflight: bool) {
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    set("access-control-allow-origin", origin);
    if cors.allow_credentials {
        set("access-control-allow-credentials", "true");
    }
    if preflight {
        if let Some(m) = &cors.allow_methods {
            set("access-control-allow-methods", m);
        }
        if let Some(h) = &cors.allow_headers {
            set("access-control-allow-headers", h);
        }
        if let Some(a) = &cors.max_age {
            set("access-control-max-age", a);
        }
    } else if let Some(e) = &cors.expose_headers {
        set("access-control-expose-headers", e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry over the cluster's `maxRetries` adds `UO` in Envoy's flag order.
    #[test]
    fn a_retry_overflow_adds_uo_in_envoys_order() {
        let flags = |f: &'static str| {
            retry_overflow(Outcome::local(StatusCode::SERVICE_UNAVAILABLE, "", f, "x")).flags
        };
        assert_eq!(flags("-"), "UO");
        assert_eq!(flags("UF"), "UF,UO");
        assert_eq!(flags("UC"), "UC,UO");
        assert_eq!(flags("UT"), "UT,UO");
        assert_eq!(flags("UPE"), "UO,UPE");
    }

    /// A cluster's retry places: at most `max` taken at once, each given back when its
    /// slot is dropped; no limit without `max`.
    #[test]
    fn retry_places_are_limited_and_given_back() {
        let state = crate::balancer::ClusterState::default();
        let first = state.start_retry(Some(2));
        let second = state.start_retry(Some(2));
        assert!(first.is_some() && second.is_some());
        assert!(state.start_retry(Some(2)).is_none(), "a third at once");
        drop(first);
        assert!(state.start_retry(Some(2)).is_some(), "a place given back");
        assert!(state.start_retry(None).is_some());
    }

    #[test]
    fn shadow_host_keeps_the_port() {
        assert_eq!(shadow_authority("svc:8080"), "svc-shadow:8080");
        assert_eq!(shadow_authority("svc"), "svc-shadow");
    }
}
