//! HTTP match conditions, rewrites, weights and timeouts, compiled from VirtualService
//! rules and evaluated the way Envoy evaluates Istio's routes.

use std::time::Duration;

use crate::common::*;
use http::HeaderMap;
use meshbox_config::validate::parse_duration;
use meshbox_config::Store;
use meshbox_routing::tables::{ForwardAction, UriRewrite, WeightedCluster};
use meshbox_routing::{MeshState, ProxyTables, RequestView};

const PRODUCER_SVC: &str = "
apiVersion: v1
kind: Service
metadata:
  name: producer-internal-host
spec:
  ports:
    - port: 80
      name: http-80
      targetPort: 8082
  selector:
    app: service-b-app
";

/// Sidecar tables of ServiceA with one VirtualService for producer-internal-host whose
/// `http` rules are given (each rule routes to producer-internal-host).
fn with_rules(rules: &str, f: impl FnOnce(&ProxyTables)) {
    let mut store = Store::new();
    apply(&mut store, NS, PRODUCER_SVC);
    let vs = format!(
        "
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata:
  name: producer
spec:
  hosts: [producer-internal-host]
  http:
{rules}"
    );
    apply(&mut store, NS, &vs);
    let mesh = course_mesh();
    let pods = course_pods();
    let state = MeshState::new(&store, &mesh, &pods);
    let t = state.sidecar_tables(find(&pods, "service-a-v1-deployment-1"));
    f(&t);
}

/// A rule named `name` with the given `match` list (YAML, indented under `match:`).
fn rule(name: &str, matches: &str) -> String {
    format!(
        "    - name: {name}
      match:
{matches}
      route:
        - destination:
            host: producer-internal-host
"
    )
}

/// The name of the route a request lands on (`404` when none).
fn hit(t: &ProxyTables, req: &RequestView<'_>) -> String {
    route_for(t, 80, req).map_or_else(|| "404".into(), |r| r.name.to_string())
}

fn hit_get(t: &ProxyTables, path: &str) -> String {
    hit(t, &get("producer-internal-host", path))
}

fn hit_headers(t: &ProxyTables, h: &HeaderMap) -> String {
    hit(t, &request("GET", "producer-internal-host", "/", h))
}

// Istio: first match wins (VirtualService http rules are evaluated in order).
#[test]
fn istio_first_match_wins() {
    let rules = [
        rule("exact-a", "        - uri:\n            exact: /a"),
        rule("prefix-root", "        - uri:\n            prefix: /"),
        rule("never", "        - uri:\n            exact: /b"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_get(t, "/a"), "exact-a");
        assert_eq!(hit_get(t, "/b"), "prefix-root");
    });
}

// Istio: the matches of one rule are ORed, the conditions inside one match are ANDed.
#[test]
fn istio_matches_are_ored_conditions_anded() {
    let rules = [
        rule(
            "either",
            "        - uri:\n            exact: /one\n        - uri:\n            exact: /two\n          method:\n            exact: POST",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_get(t, "/one"), "either");
        assert_eq!(hit_get(t, "/two"), "rest");
        let h = HeaderMap::new();
        assert_eq!(
            hit(t, &request("POST", "producer-internal-host", "/two", &h)),
            "either"
        );
    });
}

// Istio/Envoy: `uri.exact` compares the path without the query string.
#[test]
fn istio_uri_exact_ignores_query_string() {
    with_rules(
        &rule("exact", "        - uri:\n            exact: /service-a"),
        |t| {
            assert_eq!(hit_get(t, "/service-a"), "exact");
            assert_eq!(hit_get(t, "/service-a?x=1&y"), "exact");
            assert_eq!(hit_get(t, "/service-a/"), "404");
            assert_eq!(hit_get(t, "/service-ab"), "404");
            assert_eq!(hit_get(t, "/Service-A"), "404");
        },
    );
}

// Istio/Envoy: `uri.prefix` is a plain string prefix of the path (not segment-wise).
#[test]
fn istio_uri_prefix_is_string_prefix() {
    with_rules(
        &rule("prefix", "        - uri:\n            prefix: /api"),
        |t| {
            assert_eq!(hit_get(t, "/api"), "prefix");
            assert_eq!(hit_get(t, "/api/v1?q=1"), "prefix");
            assert_eq!(hit_get(t, "/apiary"), "prefix");
            assert_eq!(hit_get(t, "/ap"), "404");
            assert_eq!(hit_get(t, "/API"), "404");
        },
    );
}

// Istio/Envoy: `uri.regex` (RE2) must match the whole path, without the query.
#[test]
fn istio_uri_regex_matches_whole_path() {
    with_rules(
        &rule("regex", "        - uri:\n            regex: /api/v[0-9]+"),
        |t| {
            assert_eq!(hit_get(t, "/api/v1"), "regex");
            assert_eq!(hit_get(t, "/api/v12?x=1"), "regex");
            assert_eq!(hit_get(t, "/api/v1/items"), "404");
            assert_eq!(hit_get(t, "/x/api/v1"), "404");
        },
    );
}

// Istio: `ignoreUriCase` makes exact and prefix URI matches case-insensitive.
#[test]
fn istio_ignore_uri_case_for_exact_and_prefix() {
    let rules = [
        rule(
            "exact",
            "        - uri:\n            exact: /Service-A\n          ignoreUriCase: true",
        ),
        rule(
            "prefix",
            "        - uri:\n            prefix: /Api\n          ignoreUriCase: true",
        ),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_get(t, "/service-a"), "exact");
        assert_eq!(hit_get(t, "/SERVICE-A?x"), "exact");
        assert_eq!(hit_get(t, "/API/x"), "prefix");
        assert_eq!(hit_get(t, "/api"), "prefix");
    });
}

// Istio: "The case will be ignored only in the case of exact and prefix URI matches":
// Envoy ignores `case_sensitive` for `safe_regex`, so a regex stays case-sensitive.
#[test]
fn istio_ignore_uri_case_does_not_apply_to_regex() {
    with_rules(
        &rule(
            "regex",
            "        - uri:\n            regex: /api/[a-z]+\n          ignoreUriCase: true",
        ),
        |t| {
            assert_eq!(hit_get(t, "/api/items"), "regex");
            assert_eq!(hit_get(t, "/API/items"), "404");
        },
    );
}

// Istio: a match with `port: 81` does not apply to traffic on port 80.
#[test]
fn istio_port_match_applies_only_on_that_port() {
    let rules = [
        rule("port-81", "        - port: 81"),
        rule(
            "port-80",
            "        - port: 80\n          uri:\n            prefix: /",
        ),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_get(t, "/"), "port-80");
    });
}

// Istio: header matches `exact`, `prefix`, `regex` (whole value) and presence (`{}`);
// header names are case-insensitive.
#[test]
fn istio_header_exact_prefix_regex_presence() {
    let rules = [
        rule(
            "exact",
            "        - headers:\n            end-user:\n              exact: jason",
        ),
        rule(
            "prefix",
            "        - headers:\n            X-Version:\n              prefix: v2",
        ),
        rule(
            "regex",
            "        - headers:\n            x-id:\n              regex: \"[0-9]{3}\"",
        ),
        rule("present", "        - headers:\n            x-debug: {}"),
        rule(
            "star-present",
            "        - headers:\n            x-any:\n              regex: \"*\"",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_headers(t, &headers(&[("end-user", "jason")])), "exact");
        assert_eq!(hit_headers(t, &headers(&[("end-user", "Jason")])), "rest");
        assert_eq!(hit_headers(t, &headers(&[("x-version", "v2.1")])), "prefix");
        assert_eq!(hit_headers(t, &headers(&[("x-version", "v1")])), "rest");
        assert_eq!(hit_headers(t, &headers(&[("x-id", "123")])), "regex");
        assert_eq!(hit_headers(t, &headers(&[("x-id", "1234")])), "rest");
        assert_eq!(hit_headers(t, &headers(&[("x-debug", "")])), "present");
        assert_eq!(
            hit_headers(t, &headers(&[("x-debug", "anything")])),
            "present"
        );
        // Istio turns regex `*` into a presence match.
        assert_eq!(hit_headers(t, &headers(&[("x-any", "v")])), "star-present");
        assert_eq!(hit_headers(t, &HeaderMap::new()), "rest");
    });
}

// Istio: `withoutHeaders` inverts the header match; for a value match Istio sets
// `treat_missing_header_as_empty`, for a presence match (`{}`) a missing header matches.
#[test]
fn istio_without_headers() {
    let rules = [
        rule(
            "not-jason",
            "        - withoutHeaders:\n            end-user:\n              exact: jason",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_headers(t, &HeaderMap::new()), "not-jason");
        assert_eq!(
            hit_headers(t, &headers(&[("end-user", "mary")])),
            "not-jason"
        );
        assert_eq!(hit_headers(t, &headers(&[("end-user", "jason")])), "rest");
    });
    let rules = [
        rule(
            "no-debug",
            "        - withoutHeaders:\n            x-debug: {}",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_headers(t, &HeaderMap::new()), "no-debug");
        assert_eq!(hit_headers(t, &headers(&[("x-debug", "1")])), "rest");
    });
    // A missing header counts as "": `.*` matches "", so the inverted match fails.
    let rules = [
        rule(
            "never",
            "        - withoutHeaders:\n            x-debug:\n              regex: \".*\"",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_headers(t, &HeaderMap::new()), "rest");
        assert_eq!(hit_headers(t, &headers(&[("x-debug", "1")])), "rest");
    });
}

// Istio: `method` matches the request method (case-sensitive, as `:method`).
#[test]
fn istio_method_match() {
    let rules = [
        rule("post", "        - method:\n            exact: POST"),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        let h = HeaderMap::new();
        assert_eq!(
            hit(t, &request("POST", "producer-internal-host", "/", &h)),
            "post"
        );
        assert_eq!(
            hit(t, &request("GET", "producer-internal-host", "/", &h)),
            "rest"
        );
        assert_eq!(
            hit(t, &request("post", "producer-internal-host", "/", &h)),
            "rest"
        );
    });
}

// Istio: `queryParams` exact, prefix, regex and presence (`{}`) on the query string.
#[test]
fn istio_query_params() {
    let rules = [
        rule(
            "exact",
            "        - queryParams:\n            debug:\n              exact: \"1\"",
        ),
        rule(
            "regex",
            "        - queryParams:\n            id:\n              regex: \"[0-9]+\"",
        ),
        rule("present", "        - queryParams:\n            trace: {}"),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit_get(t, "/?debug=1"), "exact");
        assert_eq!(hit_get(t, "/x?a=b&debug=1"), "exact");
        assert_eq!(hit_get(t, "/?debug=10"), "rest");
        assert_eq!(hit_get(t, "/?id=42"), "regex");
        assert_eq!(hit_get(t, "/?id=42x"), "rest");
        assert_eq!(hit_get(t, "/?trace"), "present");
        assert_eq!(hit_get(t, "/?trace=yes"), "present");
        assert_eq!(hit_get(t, "/"), "rest");
        assert_eq!(hit_get(t, "/?tracer=1"), "rest");
    });
}

// Istio: `authority` matches the Host (`:authority`) as sent.
#[test]
fn istio_authority_match() {
    let rules = [
        rule(
            "short",
            "        - authority:\n            exact: producer-internal-host",
        ),
        rule("rest", "        - uri:\n            prefix: /"),
    ]
    .concat();
    with_rules(&rules, |t| {
        assert_eq!(hit(t, &get("producer-internal-host", "/")), "short");
        assert_eq!(hit(t, &get("producer-internal-host:80", "/")), "rest");
    });
}

fn rewrite_of(t: &ProxyTables, path: &str) -> Option<String> {
    let route = route_for(t, 80, &get("producer-internal-host", path))?;
    forward(route).uri_rewrite.as_ref().map(|r| r.apply(path))
}

fn rewrite_rule(matches: &str, uri: &str) -> String {
    format!(
        "    - {matches}
      rewrite:
        uri: {uri}
      route:
        - destination:
            host: producer-internal-host
"
    )
}

// Istio: `rewrite.uri` on an exact match replaces the whole path and keeps the query
// (Envoy prefix_rewrite of the matched path).
#[test]
fn istio_rewrite_exact_match_to_root_keeps_query() {
    with_rules(
        &rewrite_rule("match:\n        - uri:\n            exact: /service-a", "/"),
        |t| {
            assert_eq!(rewrite_of(t, "/service-a").as_deref(), Some("/"));
            assert_eq!(
                rewrite_of(t, "/service-a?x=1&y=2").as_deref(),
                Some("/?x=1&y=2")
            );
        },
    );
}

// Istio: `rewrite.uri` on a prefix match replaces only the matched prefix.
#[test]
fn istio_rewrite_prefix_replaces_only_prefix() {
    with_rules(
        &rewrite_rule("match:\n        - uri:\n            prefix: /api", "/v2"),
        |t| {
            assert_eq!(
                rewrite_of(t, "/api/items?q=1").as_deref(),
                Some("/v2/items?q=1")
            );
            assert_eq!(rewrite_of(t, "/api").as_deref(), Some("/v2"));
            assert_eq!(rewrite_of(t, "/apiary").as_deref(), Some("/v2ary"));
        },
    );
}

// Istio: without a URI match the route's prefix is `/`, so `rewrite.uri` replaces the
// leading `/`.
#[test]
fn istio_rewrite_without_uri_match_replaces_root_prefix() {
    let rules = "    - rewrite:
        uri: /v2/
      route:
        - destination:
            host: producer-internal-host
";
    with_rules(rules, |t| {
        assert_eq!(rewrite_of(t, "/foo").as_deref(), Some("/v2/foo"));
        assert_eq!(rewrite_of(t, "/").as_deref(), Some("/v2/"));
    });
}

// Istio/Envoy: with a regex URI match, `rewrite.uri` replaces the whole path.
#[test]
fn istio_rewrite_regex_match_replaces_whole_path() {
    with_rules(
        &rewrite_rule("match:\n        - uri:\n            regex: /old/.*", "/new"),
        |t| {
            assert_eq!(rewrite_of(t, "/old/a/b?q").as_deref(), Some("/new?q"));
        },
    );
}

// Istio: `rewrite.authority` replaces the Host sent upstream.
#[test]
fn istio_rewrite_authority() {
    let rules = "    - rewrite:
        authority: example.org
      route:
        - destination:
            host: producer-internal-host
";
    with_rules(rules, |t| {
        let route = route_for(t, 80, &get("producer-internal-host", "/")).expect("route");
        assert_eq!(
            forward(route).authority_rewrite.as_deref(),
            Some("example.org")
        );
    });
}

fn picks(f: &ForwardAction) -> Vec<(String, usize)> {
    f.clusters
        .iter()
        .map(|c| {
            let n = (0..100u64)
                .filter(|r| f.pick(*r).map(|p| p.cluster.as_str()) == Some(c.cluster.as_str()))
                .count();
            (c.cluster.clone(), n)
        })
        .collect()
}

fn weighted(weights: &[(&str, u32)]) -> ForwardAction {
    let clusters: Vec<WeightedCluster> = weights
        .iter()
        .map(|(c, w)| WeightedCluster {
            cluster: c.to_string(),
            weight: *w,
            ..Default::default()
        })
        .collect();
    ForwardAction {
        total_weight: clusters.iter().map(|c| c.weight).sum(),
        clusters,
        ..Default::default()
    }
}

// Istio/Envoy weighted clusters: over random values 0..N, each destination gets its
// weight's share (50/50, 10/90, 100/0), whatever the random value's size.
#[test]
fn istio_weighted_pick_shares() {
    let f = weighted(&[("b", 50), ("c", 50)]);
    assert_eq!(picks(&f), [("b".to_string(), 50), ("c".to_string(), 50)]);
    let f = weighted(&[("b", 10), ("c", 90)]);
    assert_eq!(picks(&f), [("b".to_string(), 10), ("c".to_string(), 90)]);
    let f = weighted(&[("b", 0), ("c", 100)]);
    assert_eq!(picks(&f), [("b".to_string(), 0), ("c".to_string(), 100)]);
    let f = weighted(&[("b", 100)]);
    assert_eq!(picks(&f), [("b".to_string(), 100)]);
    assert_eq!(f.pick(u64::MAX).map(|c| c.cluster.as_str()), Some("b"));
    let f = weighted(&[("b", 10), ("c", 90)]);
    assert!(f.pick(u64::MAX).is_some());
}

// Istio: a single destination without weight gets all the traffic.
#[test]
fn istio_single_destination_without_weight_gets_all() {
    let rules = "    - route:
        - destination:
            host: producer-internal-host
";
    with_rules(rules, |t| {
        let route = route_for(t, 80, &get("producer-internal-host", "/")).expect("route");
        let f = forward(route);
        assert_eq!(f.clusters.len(), 1);
        assert_eq!(f.total_weight, f.clusters[0].weight);
        assert!((0..100u64).all(|r| f.pick(r).is_some()));
    });
}

// Istio: a rule's `timeout` becomes the route timeout; none means no timeout (the CRD
// refuses durations under 1ms, so `0s` never reaches routing).
#[test]
fn istio_route_timeouts() {
    let rules = "    - match:
        - uri:
            prefix: /slow
      timeout: 1.5s
      route:
        - destination:
            host: producer-internal-host
    - route:
        - destination:
            host: producer-internal-host
";
    with_rules(rules, |t| {
        let timeout = |path: &str| {
            forward(route_for(t, 80, &get("producer-internal-host", path)).expect("route")).timeout
        };
        assert_eq!(timeout("/slow"), Some(Duration::from_millis(1500)));
        assert_eq!(timeout("/"), None);
    });
}

// Istio durations (protobuf Duration strings, and the units Istio's docs use).
#[test]
fn istio_parse_duration() {
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("0.5s"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("100us"), Some(Duration::from_micros(100)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    assert_eq!(parse_duration("10"), None);
    assert_eq!(parse_duration("s"), None);
    assert_eq!(parse_duration("-1s"), None);
    assert_eq!(parse_duration("1d"), None);
}

// UriRewrite on its own: the matched prefix is replaced case-insensitively when the
// match ignored case.
#[test]
fn uri_rewrite_apply_direct() {
    let r = UriRewrite {
        matched_prefix: Some("/api".into()),
        replacement: "/".into(),
    };
    assert_eq!(r.apply("/API/x?y"), "//x?y");
    let whole = UriRewrite {
        matched_prefix: None,
        replacement: "/".into(),
    };
    assert_eq!(whole.apply("/service-a?x=1"), "/?x=1");
}
