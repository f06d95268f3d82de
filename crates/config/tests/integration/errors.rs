//! Every kind of configuration error, with its message pinned in the form
//! `FILE:LINE[:COL]: document N (Kind/name): field PATH: MESSAGE`.

use meshbox_config::{load_sources, load_str, Kind, LoadOptions, Source};

fn opts() -> LoadOptions {
    LoadOptions::default()
}

/// The Display text of every error of loading `text` as `t.yaml`.
fn errors_with(text: &str, opts: &LoadOptions) -> Vec<String> {
    match load_str("t.yaml", text, opts) {
        Ok(r) => panic!("expected errors, got {} object(s)", r.len()),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn errors(text: &str) -> Vec<String> {
    errors_with(text, &opts())
}

/// Exactly these errors, in this order.
fn assert_errors(text: &str, expected: &[&str]) {
    assert_eq!(errors(text), expected, "\n--- input ---\n{text}");
}

/// At least this error (other rules may fire too).
fn assert_has(text: &str, expected: &str) {
    let got = errors(text);
    assert!(
        got.iter().any(|e| e == expected),
        "missing error:\n  {expected}\ngot:\n  {}\n--- input ---\n{text}",
        got.join("\n  ")
    );
}

fn assert_ok(text: &str) {
    if let Err(e) = load_str("t.yaml", text, &opts()) {
        panic!("expected no error, got:\n{e}\n--- input ---\n{text}");
    }
}

/// A VirtualService named `vs` whose spec is `spec` (indented by two spaces); the
/// spec starts on line 6.
fn vs(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n{spec}")
}

fn gw(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: gw\nspec:\n{spec}"
    )
}

fn se(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n{spec}")
}

fn dr(spec: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\nspec:\n{spec}")
}

fn sidecar(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: sc\nspec:\n{spec}"
    )
}

fn svc(spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: svc\nspec:\n{spec}")
}

fn deploy(spec: &str) -> String {
    format!("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n{spec}")
}

const ROUTE_A: &str = "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n";

// ---------------------------------------------------------------------------
// Parsing and identity
// ---------------------------------------------------------------------------

#[test]
fn yaml_syntax_error_in_third_document_has_file_line_and_column() {
    let text = "\
apiVersion: v1
kind: Namespace
metadata:
  name: a
---
apiVersion: v1
kind: Namespace
metadata:
  name: b
---
apiVersion: v1
kind: Namespace
metadata:
  name: c
   labels: x
";
    assert_errors(
        text,
        &["t.yaml:15:10: document 3: mapping values are not allowed in this context"],
    );
}

#[test]
fn yaml_context_positions_are_counted_from_the_file_start() {
    let text = "\
apiVersion: v1
kind: Namespace
metadata:
  name: a
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {a: b}
";
    assert_errors(
        text,
        &["t.yaml:9:1: document 2: did not find expected ',' or '}', while parsing a flow mapping at line 8 column 11"],
    );
}

#[test]
fn a_document_that_is_not_a_mapping() {
    assert_errors(
        "- a\n- b\n",
        &["t.yaml:1: document 1: a document must be a mapping with apiVersion, kind, metadata and spec"],
    );
}

#[test]
fn wrong_type() {
    let text =
        vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: lots\n");
    assert_errors(
        &text,
        &["t.yaml:10:15: document 1 (VirtualService/vs): field spec.http[0].route[0].weight: invalid type: string \"lots\", expected i32"],
    );
}

#[test]
fn wrong_type_of_a_whole_section() {
    let text = vs("  hosts: a\n");
    assert_errors(
        &text,
        &["t.yaml:6:10: document 1 (VirtualService/vs): field spec.hosts: invalid type: string \"a\", expected a sequence"],
    );
}

#[test]
fn unknown_kind() {
    assert_errors(
        "apiVersion: v1\nkind: Frobnicator\nmetadata:\n  name: x\n",
        &["t.yaml:2:1: document 1 (Frobnicator/x): field kind: unknown kind \"Frobnicator\"; meshbox understands Namespace, Service, Deployment, Gateway, VirtualService, DestinationRule, ServiceEntry, Sidecar, IstioOperator"],
    );
}

#[test]
fn known_but_unsupported_kind() {
    assert_errors(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-all\nspec: {}\n",
        &["t.yaml:2:1: document 1 (AuthorizationPolicy/deny-all): field kind: kind AuthorizationPolicy is not supported by meshbox yet"],
    );
}

#[test]
fn missing_kind() {
    assert_errors(
        "apiVersion: v1\nmetadata:\n  name: x\n",
        &["t.yaml:1: document 1: field kind: required field is missing"],
    );
}

#[test]
fn wrong_api_version() {
    assert_errors(
        "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata:\n  name: x\n",
        &["t.yaml:1:1: document 1 (Gateway/x): field apiVersion: Gateway is not served at apiVersion \"networking.istio.io/v2\"; use one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"],
    );
    assert_errors(
        "apiVersion: v1\nkind: Deployment\nmetadata:\n  name: x\n",
        &["t.yaml:1:1: document 1 (Deployment/x): field apiVersion: Deployment is not served at apiVersion \"v1\"; use one of apps/v1"],
    );
}

#[test]
fn unknown_field_has_full_path_and_line() {
    let text = vs("  hosts: [a]\n  http:\n  - route:\n    - destination:\n        host: a\n        prot: 80\n");
    assert_errors(
        &text,
        &["t.yaml:11:9: document 1 (VirtualService/vs): field spec.http[0].route[0].destination.prot: unknown field `prot`, expected one of `host`, `subset`, `port`"],
    );
}

#[test]
fn unknown_field_at_top_level_and_in_metadata() {
    assert_errors(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\nspek: {}\n",
        &["t.yaml:5:1: document 1 (Namespace/a): field spek: unknown field `spek`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"],
    );
    assert_errors(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  label: {}\n",
        &["t.yaml:5:3: document 1 (Namespace/a): field metadata.label: unknown field `label`, expected one of `name`, `namespace`, `labels`, `annotations`, `generateName`, `uid`, `resourceVersion`, `generation`, `creationTimestamp`, `deletionTimestamp`, `deletionGracePeriodSeconds`, `finalizers`, `ownerReferences`, `managedFields`, `selfLink`"],
    );
}

#[test]
fn missing_required_field_of_the_model() {
    // `metadata` itself is required.
    assert_errors(
        "apiVersion: v1\nkind: Namespace\n",
        &["t.yaml:1:1: document 1 (Namespace/): missing field `metadata`"],
    );
}

#[test]
fn missing_name() {
    assert_errors(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  labels: {a: b}\n",
        &["t.yaml:4:3: document 1 (Namespace/): field metadata.name: required field is missing"],
    );
}

#[test]
fn invalid_name() {
    assert_errors(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: My_Rule\nspec:\n  host: a\n",
        &["t.yaml:4:3: document 1 (DestinationRule/My_Rule): field metadata.name: \"My_Rule\" is not a valid name: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit"],
    );
}

#[test]
fn namespace_mismatch_with_explicit_namespace() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\n  namespace: other\nspec:\n  ports: [{port: 80}]\n";
    let explicit = LoadOptions {
        namespace: "dev-service-mesh".into(),
        namespace_explicit: true,
    };
    assert_eq!(
        errors_with(text, &explicit),
        ["t.yaml:5:3: document 1 (Service/s): field metadata.namespace: the namespace from the provided object \"other\" does not match the namespace \"dev-service-mesh\"; pass -n other to apply it"],
    );
    // Without -n, the object's own namespace wins; objects without one get the default.
    let loaded = load_str("t.yaml", text, &opts()).unwrap();
    assert_eq!(loaded[0].namespace(), "other");
    let loaded = load_str("t.yaml", &svc("  ports: [{port: 80}]\n"), &explicit).unwrap();
    assert_eq!(loaded[0].namespace(), "dev-service-mesh");
    // Cluster-scoped kinds have no namespace.
    let loaded = load_str(
        "t.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n",
        &explicit,
    )
    .unwrap();
    assert_eq!(loaded[0].namespace(), "");
}

#[test]
fn the_same_object_twice() {
    let one = svc("  ports: [{port: 80}]\n");
    let text = format!("{one}---\n{one}");
    assert_errors(
        &text,
        &["t.yaml:8: document 2 (Service/svc): the same object is also defined at t.yaml:1 (document 1)"],
    );
    // The same name in another namespace, or of another kind, is another object.
    let other_ns = one.replace("name: svc\n", "name: svc\n  namespace: b\n");
    assert_eq!(
        load_str("t.yaml", &format!("{one}---\n{other_ns}"), &opts())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn one_bad_document_means_no_resources() {
    let good = svc("  ports: [{port: 80}]\n");
    let bad =
        vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 101\n");
    let text = format!(
        "{good}---\n{bad}---\n{}",
        good.replace("name: svc", "name: svc2")
    );
    let result = load_str("t.yaml", &text, &opts());
    let errs = result.expect_err("a bad document fails the whole load");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(
        errs.to_string(),
        "error: t.yaml:17:7: document 2 (VirtualService/vs): field spec.http[0].route[0].weight: weight 101 must be in range 0..100"
    );
    // Across files too: a good file is not applied when another one is bad.
    let sources = [
        Source {
            name: "good.yaml".into(),
            text: good.clone(),
        },
        Source {
            name: "bad.yaml".into(),
            text: "kind: [".into(),
        },
    ];
    let errs = load_sources(&sources, &opts()).expect_err("nothing is half-applied");
    assert_eq!(errs.0.len(), 1);
    assert_eq!(errs.0[0].file, "bad.yaml");
    assert!(load_sources(&sources[..1], &opts()).is_ok());
}

#[test]
fn every_error_of_a_load_is_reported() {
    let text = format!(
        "{}---\n{}",
        svc("  ports: [{port: 0}]\n"),
        vs("  hosts: []\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: a}\n")
    );
    assert_eq!(
        errors(&text),
        [
            "t.yaml:6:12: document 1 (Service/svc): field spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "t.yaml:13:3: document 2 (VirtualService/vs): field spec.hosts: virtual service must have at least one host (one without hosts is a delegate, and a delegate virtual service must have no gateways specified)",
        ]
    );
}

#[test]
fn empty_documents_are_skipped() {
    let text = format!(
        "---\n# only a comment\n---\n{}",
        svc("  ports: [{port: 80}]\n")
    );
    let loaded = load_str("t.yaml", &text, &opts()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].kind, Kind::Service);
    assert_eq!(loaded[0].origin.document, 3);
    assert_eq!(loaded[0].origin.line, 4);
}

// ---------------------------------------------------------------------------
// VirtualService
// ---------------------------------------------------------------------------

#[test]
fn vs_course_examples_are_valid() {
    assert_ok(&vs("  hosts: ['*']\n  gateways: [service-a-gw]\n  http:\n  - match:\n    - uri: {exact: /service-a}\n    rewrite: {uri: /}\n    route:\n    - destination: {host: service-a-srv, port: {number: 80}}\n"));
    assert_ok(&vs("  hosts: [producer-internal-host]\n  gateways: [mesh]\n  http:\n  - route:\n    - destination: {host: producer-internal-host}\n      weight: 50\n    - destination: {host: service-c-srv}\n      weight: 50\n"));
}

#[test]
fn vs_hosts_required_unless_delegate() {
    assert_errors(
        &vs("  gateways: [istio-system/gw]\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &["t.yaml:6:3: document 1 (VirtualService/vs): field spec.hosts: virtual service must have at least one host (one without hosts is a delegate, and a delegate virtual service must have no gateways specified)"],
    );
    // A delegate: no hosts, no gateways.
    assert_ok(&vs("  http:\n  - route:\n    - destination: {host: a}\n"));
    assert_has(
        &vs("  tcp:\n  - route:\n    - destination: {host: a}\n"),
        "t.yaml:6:3: document 1 (VirtualService/vs): field spec.tcp: delegate virtual service must have no tcp route specified",
    );
}

#[test]
fn vs_host_names() {
    assert_errors(
        &vs("  hosts: [a, 'b..c', '-x.y']\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &[
            "t.yaml:6:14: document 1 (VirtualService/vs): field spec.hosts[1]: domain name \"b..c\" invalid (label \"\" invalid)",
            "t.yaml:6:22: document 1 (VirtualService/vs): field spec.hosts[2]: domain name \"-x.y\" invalid (label \"-x\" invalid)",
        ],
    );
    assert_ok(&vs(
        "  hosts: ['*.example.com', 10.0.0.1]\n  http:\n  - route:\n    - destination: {host: a}\n",
    ));
}

#[test]
fn vs_wildcard_host_and_the_mesh_gateway() {
    let expected = "t.yaml:6:11: document 1 (VirtualService/vs): field spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway";
    assert_errors(
        &vs("  hosts: ['*']\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &[expected],
    );
    assert_errors(
        &vs("  hosts: ['*']\n  gateways: [gw, mesh]\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &[expected],
    );
    assert_ok(&vs(
        "  hosts: ['*']\n  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: a}\n",
    ));
}

#[test]
fn vs_duplicate_hosts() {
    assert_errors(
        &vs("  hosts: ['*.foo.com', bar.foo.com]\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &["t.yaml:6:24: document 1 (VirtualService/vs): field spec.hosts[1]: duplicate hosts in virtual service: *.foo.com & bar.foo.com"],
    );
}

#[test]
fn vs_gateway_names() {
    assert_ok(&vs("  hosts: [a]\n  gateways: [mesh, gw, istio-system/gw, gw.istio-system]\n  http:\n  - route:\n    - destination: {host: a}\n"));
    assert_errors(
        &vs("  hosts: [a]\n  gateways: ['Bad_NS/gw', 'ns/', 'a..b']\n  http:\n  - route:\n    - destination: {host: a}\n"),
        &[
            "t.yaml:7:14: document 1 (VirtualService/vs): field spec.gateways[0]: invalid value for namespace: \"Bad_NS\"",
            "t.yaml:7:27: document 1 (VirtualService/vs): field spec.gateways[1]: config namespace and gateway name cannot be empty",
            "t.yaml:7:34: document 1 (VirtualService/vs): field spec.gateways[2]: domain name \"a..b\" invalid (label \"\" invalid)",
        ],
    );
}

#[test]
fn vs_needs_some_rule_and_each_rule_an_action() {
    assert_errors(
        &vs("  hosts: [a]\n"),
        &["t.yaml:5:1: document 1 (VirtualService/vs): field spec: http, tcp or tls must be provided in virtual service"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - uri: {prefix: /}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0]: HTTP route, redirect or direct response is required"],
    );
}

#[test]
fn vs_route_and_redirect_conflict() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    redirect: {uri: /b}\n"),
        &["t.yaml:10:5: document 1 (VirtualService/vs): field spec.http[0].redirect: HTTP route cannot contain both route and redirect"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - directResponse: {status: 200}\n    redirect: {uri: /b}\n"),
        &["t.yaml:9:5: document 1 (VirtualService/vs): field spec.http[0].redirect: HTTP route cannot contain both redirect and direct response"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - redirect: {uri: /b}\n    rewrite: {uri: /c}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].redirect: HTTP route rule cannot contain both rewrite and redirect"],
    );
}

#[test]
fn vs_weights() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 60\n    - destination: {host: b}\n      weight: 30\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].route: total destination weight 90 != 100"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: -10\n    - destination: {host: b}\n      weight: 110\n"),
        &[
            "t.yaml:10:7: document 1 (VirtualService/vs): field spec.http[0].route[0].weight: weight -10 must be in range 0..100",
            "t.yaml:12:7: document 1 (VirtualService/vs): field spec.http[0].route[1].weight: weight 110 must be in range 0..100",
        ],
    );
    // One destination may carry any weight in range.
    assert_ok(&vs(
        "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: 30\n",
    ));
    // TCP routes too.
    assert_has(
        &vs("  hosts: [a]\n  tcp:\n  - route:\n    - destination: {host: a}\n      weight: 10\n    - destination: {host: b}\n      weight: 10\n"),
        "t.yaml:8:5: document 1 (VirtualService/vs): field spec.tcp[0].route: total destination weight 20 != 100",
    );
}

#[test]
fn vs_destinations() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: '', subset: V1, port: {number: 70000}}\n"),
        &[
            "t.yaml:9:21: document 1 (VirtualService/vs): field spec.http[0].route[0].destination.host: destination host is required",
            "t.yaml:9:50: document 1 (VirtualService/vs): field spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535",
        ],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: '*', subset: 'v_1'}\n"),
        &[
            "t.yaml:9:21: document 1 (VirtualService/vs): field spec.http[0].route[0].destination.host: invalid destination host *",
            "t.yaml:9:32: document 1 (VirtualService/vs): field spec.http[0].route[0].destination.subset: subset name is invalid: v_1",
        ],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - port: 0\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:9:7: document 1 (VirtualService/vs): field spec.http[0].match[0].port: port number 0 must be in the range 1..65535"],
    );
}

#[test]
fn vs_string_match_needs_exactly_one_kind() {
    let expect = |line_col: &str, field: &str, msg: &str| {
        format!("t.yaml:{line_col}: document 1 (VirtualService/vs): field spec.http[0].match[0].{field}: {msg}")
    };
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - uri: {exact: /a, prefix: /b}\n      method: {}\n    route:\n    - destination: {host: a}\n"),
        &[
            &expect("9:7", "uri", "only one of exact, prefix or regex may be set"),
            &expect("10:7", "method", "one of exact, prefix or regex must be set"),
        ],
    );
    // Headers may be empty (presence); an empty uri prefix matches all.
    assert_ok(&vs("  hosts: [a]\n  http:\n  - match:\n    - uri: {prefix: ''}\n      headers:\n        x-user: {}\n    route:\n    - destination: {host: a}\n"));
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - scheme: {prefix: ''}\n    route:\n    - destination: {host: a}\n"),
        &[&expect("9:16", "scheme.prefix", "prefix string match should not be empty")],
    );
}

#[test]
fn vs_regex_must_compile() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: '/a/(b'}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:9:13: document 1 (VirtualService/vs): field spec.http[0].match[0].uri.regex: invalid regex \"/a/(b\": unclosed group; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"],
    );
    // RE2 has no look-around, and neither has the checker.
    assert_has(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - headers:\n        x: {regex: '(?=a)b'}\n    route:\n    - destination: {host: a}\n"),
        "t.yaml:10:13: document 1 (VirtualService/vs): field spec.http[0].match[0].headers.x.regex: invalid regex \"(?=a)b\": look-around, including look-ahead and look-behind, is not supported; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)",
    );
}

#[test]
fn vs_header_regex_star_is_a_presence_match() {
    // Istio: "`*` is NOT a RE2 style regex, it will be translated as present match".
    assert_ok(&vs("  hosts: [a]\n  http:\n  - match:\n    - headers:\n        x-any: {regex: '*'}\n    route:\n    - destination: {host: a}\n"));
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - uri: {regex: '*'}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:9:13: document 1 (VirtualService/vs): field spec.http[0].match[0].uri.regex: invalid regex \"*\": repetition operator missing expression; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"],
    );
}

#[test]
fn vs_timeout_zero_is_rejected_as_by_the_crd() {
    // The CRD's CEL rule on `http[].timeout` is `duration(self) >= duration('1ms')`.
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - timeout: 0s\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].timeout: must be a valid duration greater than 1ms"],
    );
}

#[test]
fn vs_header_names() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - headers:\n        'bad header': {exact: x}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:10:9: document 1 (VirtualService/vs): field spec.http[0].match[0].headers.bad header: header name bad header is not a valid header name"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    headers:\n      response:\n        set: {Host: x}\n        remove: [':path']\n"),
        &[
            "t.yaml:12:15: document 1 (VirtualService/vs): field spec.http[0].headers.response.set.Host: invalid header \"Host\": cannot set Host header",
            "t.yaml:13:18: document 1 (VirtualService/vs): field spec.http[0].headers.response.remove[0]: invalid header \":path\": header cannot have \":\" prefix",
        ],
    );
    // The request may set the authority.
    assert_ok(&vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    headers:\n      request:\n        set: {Host: x, x-b3: y}\n"));
}

#[test]
fn vs_rewrite_rules() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - rewrite: {}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].rewrite: rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].rewrite: rewrite may only contain one of URI or UriRegexRewrite"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - rewrite: {uriRegexRewrite: {match: '^/a'}}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:8:15: document 1 (VirtualService/vs): field spec.http[0].rewrite.uriRegexRewrite: UriRegexRewrite requires both Rewrite and Match fields to be specified"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - rewrite: {authority: b}\n    headers:\n      request:\n        set: {host: c}\n    route:\n    - destination: {host: a}\n"),
        &["t.yaml:8:15: document 1 (VirtualService/vs): field spec.http[0].rewrite.authority: authority header cannot be set by both rewrite and headers"],
    );
}

#[test]
fn vs_redirect_rules() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - redirect: {redirectCode: 302}\n"),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].redirect: redirect must specify URI, authority, scheme, or port"],
    );
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - redirect: {uri: /b, redirectCode: 200, scheme: ftp, port: 0}\n"),
        &[
            "t.yaml:8:25: document 1 (VirtualService/vs): field spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx",
            "t.yaml:8:44: document 1 (VirtualService/vs): field spec.http[0].redirect.scheme: invalid redirect scheme, must be \"http\" or \"https\"",
            "t.yaml:8:57: document 1 (VirtualService/vs): field spec.http[0].redirect.port: port number 0 must be in the range 1..65535",
        ],
    );
    assert_ok(&vs("  hosts: [a]\n  http:\n  - redirect: {scheme: https, redirectCode: 308, derivePort: FROM_PROTOCOL_DEFAULT}\n"));
}

#[test]
fn vs_direct_response() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - directResponse: {status: 700, body: {string: a, bytes: YQ==}}\n"),
        &[
            "t.yaml:8:22: document 1 (VirtualService/vs): field spec.http[0].directResponse.status: HTTP status 700 is not in range 200-599",
            "t.yaml:8:35: document 1 (VirtualService/vs): field spec.http[0].directResponse.body: only one of string or bytes may be set",
        ],
    );
    assert_ok(&vs(
        "  hosts: [a]\n  http:\n  - directResponse: {status: 503, body: {string: unavailable}}\n",
    ));
}

#[test]
fn vs_durations() {
    let route = "    route:\n    - destination: {host: a}\n";
    assert_errors(
        &vs(&format!("  hosts: [a]\n  http:\n  - timeout: 5 seconds\n{route}")),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].timeout: \"5 seconds\" is not a valid duration (examples: 1s, 500ms, 1.5s, 1m, 1h)"],
    );
    assert_errors(
        &vs(&format!("  hosts: [a]\n  http:\n  - timeout: 500us\n{route}")),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].timeout: must be a valid duration greater than 1ms"],
    );
    assert_errors(
        &vs(&format!("  hosts: [a]\n  http:\n  - timeout: 1.0005s\n{route}")),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].timeout: only durations to ms precision are supported"],
    );
    for ok in ["1s", "500ms", "1.5s", "1m", "1h", "1m30s"] {
        assert_ok(&vs(&format!("  hosts: [a]\n  http:\n  - timeout: {ok}\n    retries: {{attempts: 3, perTryTimeout: {ok}}}\n{route}")));
    }
}

#[test]
fn vs_retries() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - retries: {attempts: -1, perTryTimeout: 0s, retryOn: '5xx,bogus,503'}\n    route:\n    - destination: {host: a}\n"),
        &[
            "t.yaml:8:15: document 1 (VirtualService/vs): field spec.http[0].retries.attempts: attempts cannot be negative",
            "t.yaml:8:29: document 1 (VirtualService/vs): field spec.http[0].retries.perTryTimeout: must be a valid duration greater than 1ms",
            "t.yaml:8:48: document 1 (VirtualService/vs): field spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy",
        ],
    );
}

#[test]
fn vs_fault_injection() {
    let route = "    route:\n    - destination: {host: a}\n";
    assert_errors(
        &vs(&format!("  hosts: [a]\n  http:\n  - fault: {{}}\n{route}")),
        &["t.yaml:8:5: document 1 (VirtualService/vs): field spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"],
    );
    assert_errors(
        &vs(&format!("  hosts: [a]\n  http:\n  - fault:\n      abort: {{httpStatus: 100, percentage: {{value: 101}}}}\n      delay: {{fixedDelay: 1s, percent: 150}}\n{route}")),
        &[
            "t.yaml:9:15: document 1 (VirtualService/vs): field spec.http[0].fault.abort.httpStatus: HTTP status 100 is not in range 200-599",
            "t.yaml:9:45: document 1 (VirtualService/vs): field spec.http[0].fault.abort.percentage.value: percentage 101 is neither 0.0, nor in range [0.0001, 100.0]",
            "t.yaml:10:31: document 1 (VirtualService/vs): field spec.http[0].fault.delay.percent: percentage 150 is not in range 0..100",
        ],
    );
    assert_has(
        &vs(&format!("  hosts: [a]\n  http:\n  - fault:\n      abort: {{grpcStatus: NOPE}}\n{route}")),
        "t.yaml:9:15: document 1 (VirtualService/vs): field spec.http[0].fault.abort.grpcStatus: gRPC status \"NOPE\" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'",
    );
    assert_ok(&vs(&format!("  hosts: [a]\n  http:\n  - fault:\n      abort: {{httpStatus: 503, percentage: {{value: 50}}}}\n      delay: {{fixedDelay: 2s, percentage: {{value: 0.5}}}}\n{route}")));
}

#[test]
fn vs_mirrors() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrorPercentage: {value: 150}\n    mirrors:\n    - destination: {host: c}\n"),
        &[
            "t.yaml:11:24: document 1 (VirtualService/vs): field spec.http[0].mirrorPercentage.value: mirror_percentage must have a max value of 100 (it has 150.000000)",
            "t.yaml:12:5: document 1 (VirtualService/vs): field spec.http[0].mirrors: `mirror` and `mirrors` cannot be used together",
        ],
    );
}

#[test]
fn vs_cors() {
    assert_errors(
        &vs("  hosts: [a]\n  http:\n  - corsPolicy:\n      allowOrigins: [{exact: ''}]\n      allowMethods: [GET, FETCH]\n      maxAge: 1500ms\n    route:\n    - destination: {host: a}\n"),
        &[
            "t.yaml:9:22: document 1 (VirtualService/vs): field spec.http[0].corsPolicy.allowOrigins[0]: '' is not a valid match type for CORS allow origins",
            "t.yaml:10:27: document 1 (VirtualService/vs): field spec.http[0].corsPolicy.allowMethods[1]: \"FETCH\" is not a supported HTTP method",
            "t.yaml:11:7: document 1 (VirtualService/vs): field spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision",
        ],
    );
}

#[test]
fn vs_tls_routes() {
    assert_errors(
        &vs("  hosts: [a.com]\n  tls:\n  - match:\n    - sniHosts: [b.com]\n    route:\n    - destination: {host: a.com}\n"),
        &["t.yaml:9:18: document 1 (VirtualService/vs): field spec.tls[0].match[0].sniHosts[0]: SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts: [a.com]"],
    );
}

// ---------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------

#[test]
fn gateway_course_example_is_valid() {
    assert_ok(&gw("  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"));
}

#[test]
fn gateway_needs_servers() {
    assert_errors(
        &gw("  selector: {istio: ingressgateway}\n"),
        &["t.yaml:6:3: document 1 (Gateway/gw): field spec.servers: gateway must have at least one server"],
    );
}

#[test]
fn gateway_server_ports() {
    assert_errors(
        &gw("  servers:\n  - hosts: ['*']\n"),
        &["t.yaml:7:5: document 1 (Gateway/gw): field spec.servers[0].port: port is required"],
    );
    assert_errors(
        &gw("  servers:\n  - port: {number: 70000, name: http, protocol: QUIC}\n    hosts: ['*']\n"),
        &[
            "t.yaml:7:12: document 1 (Gateway/gw): field spec.servers[0].port.number: port number 70000 must be in the range 1..65535",
            "t.yaml:7:39: document 1 (Gateway/gw): field spec.servers[0].port.protocol: invalid protocol \"QUIC\", supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TCP, TLS, MONGO, REDIS, MYSQL",
        ],
    );
    // Protocols are case-insensitive.
    assert_ok(&gw(
        "  servers:\n  - port: {number: 8080, name: h, protocol: http2}\n    hosts: ['*']\n",
    ));
    assert_errors(
        &gw("  servers:\n  - port: {number: 80, protocol: HTTP}\n    hosts: ['*']\n  - port: {number: 81, name: a, protocol: TCP}\n    hosts: ['*']\n  - port: {number: 82, name: a, protocol: TCP}\n    hosts: ['*']\n"),
        &[
            "t.yaml:7:11: document 1 (Gateway/gw): field spec.servers[0].port.name: port name must be set",
            "t.yaml:11:24: document 1 (Gateway/gw): field spec.servers[2].port.name: port names in servers must be unique: duplicate name a",
        ],
    );
}

#[test]
fn gateway_hosts() {
    assert_errors(
        &gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n"),
        &["t.yaml:7:5: document 1 (Gateway/gw): field spec.servers[0].hosts: server config must contain at least one host"],
    );
    assert_errors(
        &gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [prod/a.com, './*', 'Bad_Ns/a.com', '/a.com', 'x/a..b']\n"),
        &[
            "t.yaml:8:32: document 1 (Gateway/gw): field spec.servers[0].hosts[2]: invalid namespace value \"Bad_Ns\" in gateway",
            "t.yaml:8:48: document 1 (Gateway/gw): field spec.servers[0].hosts[3]: config namespace and dnsName in host entry cannot be empty",
            "t.yaml:8:58: document 1 (Gateway/gw): field spec.servers[0].hosts[4]: domain name \"a..b\" invalid (label \"\" invalid)",
        ],
    );
}

#[test]
fn gateway_tls() {
    assert_errors(
        &gw("  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n"),
        &["t.yaml:7:5: document 1 (Gateway/gw): field spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols"],
    );
    assert_errors(
        &gw("  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE}\n"),
        &[
            "t.yaml:9:5: document 1 (Gateway/gw): field spec.servers[0].tls: SIMPLE TLS requires a server certificate",
            "t.yaml:9:5: document 1 (Gateway/gw): field spec.servers[0].tls: SIMPLE TLS requires a private key",
        ],
    );
    assert_ok(&gw("  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: cert}\n"));
    // Plain HTTP may only redirect to HTTPS.
    assert_ok(&gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {httpsRedirect: true}\n"));
    assert_errors(
        &gw("  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n    tls: {mode: SIMPLE, credentialName: c}\n"),
        &["t.yaml:9:5: document 1 (Gateway/gw): field spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports"],
    );
    assert_errors(
        &gw("  servers:\n  - port: {number: 443, name: tls, protocol: TLS}\n    hosts: ['*']\n    tls: {mode: STRICT}\n"),
        &["t.yaml:9:11: document 1 (Gateway/gw): field spec.servers[0].tls.mode: Unsupported value: \"STRICT\": supported values: \"PASSTHROUGH\", \"SIMPLE\", \"MUTUAL\", \"AUTO_PASSTHROUGH\", \"ISTIO_MUTUAL\", \"OPTIONAL_MUTUAL\""],
    );
}

#[test]
fn gateway_selector_labels_and_name() {
    assert_errors(
        &gw("  selector: {'istio': 'ingress gateway'}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n"),
        &["t.yaml:6:14: document 1 (Gateway/gw): field spec.selector.istio: invalid tag value: \"ingress gateway\""],
    );
    assert_errors(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: my.gw\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n",
        &["t.yaml:4:3: document 1 (Gateway/my.gw): field metadata.name: invalid gateway name: \"my.gw\""],
    );
}

// ---------------------------------------------------------------------------
// ServiceEntry
// ---------------------------------------------------------------------------

#[test]
fn service_entry_course_example_is_valid() {
    assert_ok(&se("  hosts: [worldtimeapi.org]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  resolution: DNS\n  location: MESH_EXTERNAL\n"));
}

#[test]
fn service_entry_hosts() {
    assert_errors(
        &se("  ports:\n  - {number: 80, name: http, protocol: HTTP}\n"),
        &["t.yaml:6:3: document 1 (ServiceEntry/se): field spec.hosts: service entry must have at least one host"],
    );
    assert_errors(
        &se("  hosts: ['*', 'a..b']\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n"),
        &[
            "t.yaml:6:11: document 1 (ServiceEntry/se): field spec.hosts[0]: hostname cannot be wildcard",
            "t.yaml:6:16: document 1 (ServiceEntry/se): field spec.hosts[1]: domain name \"a..b\" invalid (label \"\" invalid)",
        ],
    );
    assert_errors(
        &se("  hosts: ['*.example.com']\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  resolution: DNS\n"),
        &["t.yaml:6:11: document 1 (ServiceEntry/se): field spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS"],
    );
}

#[test]
fn service_entry_ports() {
    assert_errors(
        &se("  hosts: [a.com]\n"),
        &["t.yaml:6:3: document 1 (ServiceEntry/se): field spec.ports: service entry must have at least one port"],
    );
    assert_errors(
        &se("  hosts: [a.com]\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 80, name: http, protocol: SPDY}\n  - {number: 0, name: Web_1, targetPort: 70000}\n"),
        &[
            "t.yaml:9:6: document 1 (ServiceEntry/se): field spec.ports[1].number: service entry port 80 already defined",
            "t.yaml:9:18: document 1 (ServiceEntry/se): field spec.ports[1].name: service entry port name \"http\" already defined",
            "t.yaml:9:30: document 1 (ServiceEntry/se): field spec.ports[1].protocol: unrecognized protocol \"SPDY\"",
            "t.yaml:10:6: document 1 (ServiceEntry/se): field spec.ports[2].number: port number 0 must be in the range 1..65535",
            "t.yaml:10:17: document 1 (ServiceEntry/se): field spec.ports[2].name: invalid port name: Web_1",
            "t.yaml:10:30: document 1 (ServiceEntry/se): field spec.ports[2].targetPort: port number 70000 must be in the range 1..65535",
        ],
    );
}

#[test]
fn service_entry_resolution_and_location() {
    assert_errors(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS_ONLY\n  location: OUTSIDE\n"),
        &[
            "t.yaml:8:3: document 1 (ServiceEntry/se): field spec.resolution: Unsupported value: \"DNS_ONLY\": supported values: \"NONE\", \"STATIC\", \"DNS\", \"DNS_ROUND_ROBIN\", \"DYNAMIC_DNS\"",
            "t.yaml:9:3: document 1 (ServiceEntry/se): field spec.location: Unsupported value: \"OUTSIDE\": supported values: \"MESH_EXTERNAL\", \"MESH_INTERNAL\"",
        ],
    );
}

#[test]
fn service_entry_endpoints() {
    assert_errors(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n"),
        &["t.yaml:6:3: document 1 (ServiceEntry/se): field spec.endpoints: endpoints (or a workloadSelector) are required for resolution type STATIC"],
    );
    assert_errors(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints:\n  - address: a.com\n    ports: {https: 443}\n"),
        &[
            "t.yaml:10:5: document 1 (ServiceEntry/se): field spec.endpoints[0].address: endpoint address \"a.com\" is not a valid IP address",
            "t.yaml:11:13: document 1 (ServiceEntry/se): field spec.endpoints[0].ports.https: endpoint port \"https\" is not defined by the service entry",
        ],
    );
    assert_errors(
        &se("  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  endpoints:\n  - address: 10.0.0.1\n  workloadSelector:\n    labels: {app: a}\n"),
        &[
            "t.yaml:5:1: document 1 (ServiceEntry/se): field spec: only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            "t.yaml:8:3: document 1 (ServiceEntry/se): field spec.endpoints: no endpoints should be provided for resolution type none",
        ],
    );
    assert_ok(&se("  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: STATIC\n  endpoints:\n  - address: 10.0.0.1\n"));
}

// ---------------------------------------------------------------------------
// DestinationRule
// ---------------------------------------------------------------------------

#[test]
fn destination_rule_host_and_subsets() {
    assert_errors(
        &dr("  subsets:\n  - name: v1\n"),
        &["t.yaml:6:3: document 1 (DestinationRule/dr): field spec.host: host is required"],
    );
    assert_errors(
        &dr("  host: a\n  subsets:\n  - labels: {version: v1}\n  - name: v1\n  - name: v1\n  - name: V_2\n    labels: {'bad key!': x}\n"),
        &[
            "t.yaml:8:5: document 1 (DestinationRule/dr): field spec.subsets[0].name: subset name cannot be empty",
            "t.yaml:10:5: document 1 (DestinationRule/dr): field spec.subsets[2].name: duplicate subset names: v1",
            "t.yaml:11:5: document 1 (DestinationRule/dr): field spec.subsets[3].name: subset name is invalid: V_2",
            "t.yaml:12:14: document 1 (DestinationRule/dr): field spec.subsets[3].labels.bad key!: invalid tag key: \"bad key!\"",
        ],
    );
}

#[test]
fn destination_rule_traffic_policy() {
    assert_errors(
        &dr("  host: a\n  trafficPolicy:\n    loadBalancer: {simple: FASTEST}\n    outlierDetection: {maxEjectionPercent: 120, interval: 0s}\n    connectionPool: {}\n"),
        &[
            "t.yaml:8:20: document 1 (DestinationRule/dr): field spec.trafficPolicy.loadBalancer.simple: Unsupported value: \"FASTEST\": supported values: \"UNSPECIFIED\", \"LEAST_CONN\", \"RANDOM\", \"PASSTHROUGH\", \"ROUND_ROBIN\", \"LEAST_REQUEST\"",
            "t.yaml:9:24: document 1 (DestinationRule/dr): field spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 120 is not in range 0..100",
            "t.yaml:9:49: document 1 (DestinationRule/dr): field spec.trafficPolicy.outlierDetection.interval: outlier detection interval invalid: must be a valid duration greater than 1ms",
            "t.yaml:10:5: document 1 (DestinationRule/dr): field spec.trafficPolicy.connectionPool: connection pool must have at least one field",
        ],
    );
    assert_errors(
        &dr("  host: a\n  trafficPolicy: {}\n"),
        &["t.yaml:7:3: document 1 (DestinationRule/dr): field spec.trafficPolicy: traffic policy must have at least one field"],
    );
    assert_errors(
        &dr("  host: a\n  trafficPolicy:\n    tls: {mode: MUTUAL}\n"),
        &[
            "t.yaml:8:5: document 1 (DestinationRule/dr): field spec.trafficPolicy.tls: client certificate required for mutual tls",
            "t.yaml:8:5: document 1 (DestinationRule/dr): field spec.trafficPolicy.tls: private key required for mutual tls",
        ],
    );
    // TLS origination as the course's next exercise uses it.
    assert_ok(&dr("  host: worldtimeapi.org\n  trafficPolicy:\n    portLevelSettings:\n    - port: {number: 443}\n      tls: {mode: SIMPLE}\n"));
}

#[test]
fn destination_rule_typed_policies_reject_unknown_fields() {
    assert_errors(
        &dr("  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp: {maxConnection: 1}\n"),
        &["t.yaml:9:13: document 1 (DestinationRule/dr): field spec.trafficPolicy.connectionPool.tcp.maxConnection: unknown field `maxConnection`, expected one of `maxConnections`, `connectTimeout`, `tcpKeepalive`, `maxConnectionDuration`, `idleTimeout`"],
    );
}

// ---------------------------------------------------------------------------
// Sidecar
// ---------------------------------------------------------------------------

#[test]
fn sidecar_egress_hosts_and_outbound_policy() {
    assert_ok(&sidecar("  egress:\n  - hosts: ['./*', 'istio-system/*']\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"));
    assert_errors(
        &sidecar("  egress:\n  - hosts: [a.com, 'Bad_Ns/a.com']\n  outboundTrafficPolicy: {mode: DENY}\n"),
        &[
            "t.yaml:7:13: document 1 (Sidecar/sc): field spec.egress[0].hosts[0]: host must be of form namespace/dnsName",
            "t.yaml:7:20: document 1 (Sidecar/sc): field spec.egress[0].hosts[1]: invalid namespace value \"Bad_Ns\" in sidecar",
            "t.yaml:8:27: document 1 (Sidecar/sc): field spec.outboundTrafficPolicy.mode: Unsupported value: \"DENY\": supported values: \"REGISTRY_ONLY\", \"ALLOW_ANY\"",
        ],
    );
    assert_errors(
        &sidecar("  workloadSelector:\n    labels: {app: a}\n"),
        &["t.yaml:6:3: document 1 (Sidecar/sc): field spec.egress: sidecar: missing egress"],
    );
    assert_errors(
        &sidecar("  egress:\n  - hosts: ['*/*']\n  outboundTrafficPolicy:\n    egressProxy: {host: proxy.local, port: {number: 3128}}\n"),
        &["t.yaml:9:5: document 1 (Sidecar/sc): field spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"],
    );
}

// ---------------------------------------------------------------------------
// Kubernetes: Service, Deployment
// ---------------------------------------------------------------------------

#[test]
fn service_ports() {
    assert_ok(&svc(
        "  selector: {app: a}\n  ports:\n  - port: 80\n    targetPort: 8081\n",
    ));
    assert_errors(
        &svc("  ports:\n  - {port: 0, targetPort: 70000}\n"),
        &[
            "t.yaml:7:6: document 1 (Service/svc): field spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "t.yaml:7:15: document 1 (Service/svc): field spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ],
    );
    assert_errors(
        &svc("  ports:\n  - {port: 80, name: http}\n  - {port: 81}\n  - {port: 82, name: http, targetPort: Http_Port}\n"),
        &[
            "t.yaml:8:5: document 1 (Service/svc): field spec.ports[1].name: Required value",
            "t.yaml:9:16: document 1 (Service/svc): field spec.ports[2].name: Duplicate value: \"http\"",
            "t.yaml:9:28: document 1 (Service/svc): field spec.ports[2].targetPort: Invalid value: \"Http_Port\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ],
    );
    assert_errors(
        &svc("  selector: {app: a}\n"),
        &["t.yaml:6:3: document 1 (Service/svc): field spec.ports: Required value"],
    );
}

#[test]
fn service_name_is_a_dns1035_label() {
    assert_errors(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: 1svc\nspec:\n  ports: [{port: 80}]\n",
        &["t.yaml:4:3: document 1 (Service/1svc): field metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character"],
    );
}

const POD: &str = "  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: a}\n    spec:\n      containers:\n";

#[test]
fn deployment_course_shape_is_valid() {
    assert_ok(&deploy(&format!("  replicas: 1\n{POD}      - name: c\n        image: x\n        ports: [{{containerPort: 8081}}]\n")));
}

#[test]
fn deployment_selector_must_match_template_labels() {
    assert_errors(
        &deploy("  selector:\n    matchLabels: {app: a}\n  template:\n    metadata:\n      labels: {app: b}\n    spec:\n      containers:\n      - {name: c, image: x}\n"),
        &["t.yaml:10:7: document 1 (Deployment/d): field spec.template.metadata.labels: Invalid value: {\"app\":\"b\"}: `selector` does not match template `labels`"],
    );
    assert_errors(
        &deploy("  template:\n    spec:\n      containers:\n      - {name: c, image: x}\n"),
        &["t.yaml:6:3: document 1 (Deployment/d): field spec.selector: Invalid value: {}: empty selector is invalid for deployment"],
    );
}

#[test]
fn deployment_containers() {
    assert_errors(
        &deploy(&format!("{POD}      []\n").replace("containers:\n      []", "containers: []")),
        &["t.yaml:12:7: document 1 (Deployment/d): field spec.template.spec.containers: Required value"],
    );
    assert_errors(
        &deploy(&format!("{POD}      - name: c\n        image: x\n        ports: [{{containerPort: 70000}}]\n      - name: c\n        image: y\n      - name: Web\n")),
        &[
            "t.yaml:15:18: document 1 (Deployment/d): field spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            "t.yaml:16:9: document 1 (Deployment/d): field spec.template.spec.containers[1].name: Duplicate value: \"c\"",
            "t.yaml:18:9: document 1 (Deployment/d): field spec.template.spec.containers[2].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc')",
            "t.yaml:18:9: document 1 (Deployment/d): field spec.template.spec.containers[2].image: Required value",
        ],
    );
}

#[test]
fn deployment_replicas_must_not_be_negative() {
    assert_errors(
        &deploy(&format!("  replicas: -1\n{POD}      - {{name: c, image: x}}\n")),
        &["t.yaml:6:13: document 1 (Deployment/d): field spec.replicas: Invalid value: -1: must be greater than or equal to 0"],
    );
}

#[test]
fn deployment_unknown_pod_and_container_fields() {
    assert_errors(
        &deploy(&format!("{POD}      - name: c\n        image: x\n        imagePullPolicyy: Always\n        resources: {{}}\n      restartPolicy: Always\n      nodeSelectr: {{}}\n")),
        &[
            "t.yaml:15:9: document 1 (Deployment/d): field spec.template.spec.containers[0].imagePullPolicyy: unknown field `imagePullPolicyy`: Kubernetes' Container has no such field",
            "t.yaml:18:7: document 1 (Deployment/d): field spec.template.spec.nodeSelectr: unknown field `nodeSelectr`: Kubernetes' PodSpec has no such field",
        ],
    );
}

#[test]
fn metadata_labels_are_checked() {
    assert_errors(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: n\n  labels: {'a/b/c': x}\n",
        &["t.yaml:5:12: document 1 (Namespace/n): field metadata.labels.a/b/c: Invalid value: \"a/b/c\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc')"],
    );
}

#[test]
fn messages_do_not_repeat_the_field_path() {
    for e in errors(&vs(
        "  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a, port: {numbr: 80}}\n",
    )) {
        assert_eq!(
            e.matches("spec.http[0].route[0].destination.port").count(),
            1,
            "{e}"
        );
    }
}

#[test]
fn route_a_helper_is_valid() {
    assert_ok(&vs(ROUTE_A));
}

/// Istio >= 1.25 matches any RFC 7230 token as a header name, and pseudo-headers
/// (routing.go "weird header matches" / "pseudo header matches"); a name with a
/// character outside the token set is still refused.
#[test]
fn match_header_names_follow_rfc7230_tokens_and_pseudo_headers() {
    assert_ok(&vs("  hosts: [a]\n  http:\n  - match:\n    - headers:\n        \"x-weird!#$%&'*+.^_`|~\":\n          exact: v\n        \":method\":\n          exact: GET\n    route:\n    - destination: {host: a}\n"));
    assert_has(
        &vs("  hosts: [a]\n  http:\n  - match:\n    - headers:\n        \"bad name\":\n          exact: v\n    route:\n    - destination: {host: a}\n"),
        "t.yaml:10:9: document 1 (VirtualService/vs): field spec.http[0].match[0].headers.bad name: header name bad name is not a valid header name",
    );
}

/// Istio >= 1.20: `httpCookie` without `ttl` is valid.
#[test]
fn consistent_hash_cookie_without_ttl_is_valid() {
    assert_ok(&dr("  host: a\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpCookie:\n          name: session\n"));
}
