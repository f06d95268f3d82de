//! The store's kubectl-apply semantics.

use meshbox_config::{load_str, ApplyAction, Kind, LoadOptions, ObjectKey, Resource, Store};

fn load(text: &str) -> Vec<Resource> {
    load_str("t.yaml", text, &LoadOptions::default()).expect("valid test input")
}

fn service(name: &str, namespace: &str, port: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  ports: [{{port: {port}}}]\n"
    )
}

fn gateway(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['*']\n"
    )
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn apply_reports_created_configured_unchanged() {
    let mut store = Store::new();
    assert!(store.is_empty());
    let k = key(Kind::Service, "a", "svc");

    let out = store.apply(load(&service("svc", "a", 80)));
    assert_eq!(out, [(k.clone(), ApplyAction::Created)]);

    // The same configuration again, even read from elsewhere, changes nothing.
    let mut again = load(&service("svc", "a", 80));
    again[0].origin.file = "other.yaml".into();
    assert_eq!(store.apply(again), [(k.clone(), ApplyAction::Unchanged)]);

    let out = store.apply(load(&service("svc", "a", 8080)));
    assert_eq!(out, [(k.clone(), ApplyAction::Configured)]);
    assert_eq!(store.len(), 1);
    match &store.get(&k).unwrap().spec {
        meshbox_config::Spec::Service(s) => assert_eq!(s.ports[0].port, 8080),
        other => panic!("unexpected spec {other:?}"),
    }
    assert_eq!(ApplyAction::Created.as_str(), "created");
    assert_eq!(ApplyAction::Configured.as_str(), "configured");
    assert_eq!(ApplyAction::Unchanged.as_str(), "unchanged");
}

#[test]
fn a_label_change_is_a_configuration_change() {
    let mut store = Store::new();
    store.apply(load(&service("svc", "a", 80)));
    let labelled =
        service("svc", "a", 80).replace("  namespace: a\n", "  namespace: a\n  labels: {app: x}\n");
    assert_eq!(
        store.apply(load(&labelled)),
        [(key(Kind::Service, "a", "svc"), ApplyAction::Configured)]
    );
}

#[test]
fn delete_removes_and_reports_absence() {
    let mut store = Store::new();
    store.apply(load(&service("svc", "a", 80)));
    let k = key(Kind::Service, "a", "svc");
    let removed = store.delete(&k).expect("was there");
    assert_eq!(removed.metadata.name, "svc");
    assert!(store.get(&k).is_none());
    assert!(store.delete(&k).is_none());
    assert!(store.is_empty());
    // After a delete, applying creates again.
    assert_eq!(
        store.apply(load(&service("svc", "a", 80))),
        [(k, ApplyAction::Created)]
    );
}

#[test]
fn of_kind_is_ordered_by_namespace_then_name_and_holds_only_that_kind() {
    let mut store = Store::new();
    let text = [
        service("zeta", "b", 80),
        gateway("gw", "a"),
        service("beta", "b", 80),
        service("alpha", "c", 80),
        service("omega", "a", 80),
        gateway("gw", "b"),
    ]
    .join("---\n");
    store.apply(load(&text));
    let services: Vec<(String, String)> = store
        .of_kind(Kind::Service)
        .map(|r| (r.namespace().to_string(), r.metadata.name.clone()))
        .collect();
    assert_eq!(
        services,
        [
            ("a".to_string(), "omega".to_string()),
            ("b".into(), "beta".into()),
            ("b".into(), "zeta".into()),
            ("c".into(), "alpha".into()),
        ]
    );
    assert_eq!(store.of_kind(Kind::Gateway).count(), 2);
    assert_eq!(store.of_kind(Kind::VirtualService).count(), 0);
    assert_eq!(store.all().count(), 6);
    assert_eq!(store.len(), 6);
}

#[test]
fn identity_is_kind_namespace_and_name() {
    let mut store = Store::new();
    let text = [
        service("x", "a", 80),
        service("x", "b", 80),
        gateway("x", "a"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n".to_string(),
    ]
    .join("---\n");
    let out = store.apply(load(&text));
    assert!(out.iter().all(|(_, a)| *a == ApplyAction::Created));
    assert_eq!(store.len(), 4);
    assert!(store.get(&key(Kind::Service, "a", "x")).is_some());
    assert!(store.get(&key(Kind::Service, "b", "x")).is_some());
    assert!(store.get(&key(Kind::Gateway, "a", "x")).is_some());
    assert!(store.get(&key(Kind::Gateway, "b", "x")).is_none());
    // Namespaces are cluster-scoped: their key has no namespace.
    assert!(store.get(&key(Kind::Namespace, "", "x")).is_some());

    assert_eq!(
        key(Kind::VirtualService, "dev", "vs").to_string(),
        "virtualservice.networking.istio.io/vs (namespace dev)"
    );
    assert_eq!(key(Kind::Namespace, "", "dev").to_string(), "namespace/dev");
}

#[test]
fn objects_without_namespace_get_the_load_namespace() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports: [{port: 80}]\n";
    let opts = LoadOptions {
        namespace: "dev-service-mesh".into(),
        namespace_explicit: false,
    };
    let loaded = load_str("t.yaml", text, &opts).unwrap();
    assert_eq!(loaded[0].key(), key(Kind::Service, "dev-service-mesh", "s"));
}

#[test]
fn creation_order_survives_reconfiguration_and_resets_on_delete() {
    let mut store = Store::new();
    store.apply(load(&service("first", "a", 80)));
    store.apply(load(&service("second", "a", 80)));
    let first = key(Kind::Service, "a", "first");
    let second = key(Kind::Service, "a", "second");
    assert!(store.creation_index(&first) < store.creation_index(&second));
    // Configuring keeps an object's place.
    store.apply(load(&service("first", "a", 81)));
    assert!(store.creation_index(&first) < store.creation_index(&second));
    // Deleting and creating again puts it last; unknown objects sort after all.
    store.delete(&first);
    assert_eq!(store.creation_index(&first), u64::MAX);
    store.apply(load(&service("first", "a", 80)));
    assert!(store.creation_index(&first) > store.creation_index(&second));
}

/// The public YAML helpers other crates use to point at lines: documents keep their
/// first line, `locate` finds a field, `scalar_at` reads a string.
#[test]
fn yaml_helpers_locate_fields_and_documents() {
    use meshbox_config::locate::{locate, scalar_at};
    let docs = meshbox_config::split_documents("a: 1\n---\nb: 2\n---\n\nc: 3\n");
    let firsts: Vec<usize> = docs.iter().map(|d| d.first_line).collect();
    assert_eq!(firsts, [1, 3, 5]);
    let doc = "metadata:\n  name: a\nspec:\n  hosts:\n  - a\n  - b\n  http:\n  - route:\n    - destination:\n        host: x\n      weight: 60\n";
    assert_eq!(locate(doc, "spec.hosts[1]").map(|p| p.0), Some(6));
    assert_eq!(
        locate(doc, "spec.http[0].route[0].weight").map(|p| p.0),
        Some(11)
    );
    assert_eq!(scalar_at(doc, "metadata.name").as_deref(), Some("a"));
    assert_eq!(scalar_at(doc, "metadata.namespace"), None);
}
