//! Each document is parsed once and the typed object read from the parsed value;
//! where the value reader and the text reader could disagree (tags, plain scalars
//! read as strings, nulls, numbers whose reading depends on the field), the text
//! reader decides, as when every document was read from its text. These pin the
//! results of reading from the text.

use meshbox_config::{load_sources, load_str, LoadOptions, Source, Spec};

fn one_error(text: &str) -> String {
    match load_str("t.yaml", text, &LoadOptions::default()) {
        Ok(r) => panic!("expected an error, got {} object(s)", r.len()),
        Err(e) => {
            assert_eq!(e.0.len(), 1, "{e}");
            e.0[0].to_string()
        }
    }
}

fn se_with_port_number(number: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se\nspec:\n  hosts: [a.example.com]\n  ports:\n    - number: {number}\n      name: http\n      protocol: HTTP\n"
    )
}

#[test]
fn plain_numbers_and_booleans_are_strings_where_strings_are_expected() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\n  labels:\n    version: 2\n    canary: true\n    empty: null\nspec:\n  hosts: [a.example.com]\n  http:\n    - route:\n        - destination:\n            host: a.example.com\n";
    let loaded = load_str("t.yaml", text, &LoadOptions::default()).expect("loads");
    let labels = &loaded[0].metadata.labels;
    assert_eq!(labels.get("version").map(String::as_str), Some("2"));
    assert_eq!(labels.get("canary").map(String::as_str), Some("true"));
    assert_eq!(labels.get("empty").map(String::as_str), Some("null"));
}

#[test]
fn a_tagged_number_in_quotes_is_no_port_number() {
    assert_eq!(
        one_error(&se_with_port_number("!!int \"80\"")),
        "t.yaml:8:15: document 1 (ServiceEntry/se): field spec.ports[0].number: invalid type: integer `80`, expected u32"
    );
}

#[test]
fn minus_zero_is_no_port_number() {
    assert_eq!(
        one_error(&se_with_port_number("-0")),
        "t.yaml:8:15: document 1 (ServiceEntry/se): field spec.ports[0].number: invalid type: integer `0`, expected u32"
    );
}

#[test]
fn a_hexadecimal_port_number_is_read_as_one() {
    let loaded = load_str(
        "t.yaml",
        &se_with_port_number("0x50"),
        &LoadOptions::default(),
    )
    .expect("loads");
    let Spec::ServiceEntry(se) = &loaded[0].spec else {
        panic!("not a ServiceEntry");
    };
    assert_eq!(se.ports[0].number, 80);
}

#[test]
fn a_hexadecimal_percentage_is_no_float() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: [k.example.com]\n  http:\n    - mirror:\n        host: k.example.com\n      mirrorPercentage:\n        value: 0x10\n      route:\n        - destination:\n            host: k.example.com\n";
    assert_eq!(
        one_error(text),
        "t.yaml:11:16: document 1 (VirtualService/vs): field spec.http[0].mirrorPercentage.value: invalid type: integer `16`, expected f64"
    );
}

#[test]
fn a_null_list_is_no_empty_list() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs\nspec:\n  hosts: ~\n  http:\n    - route:\n        - destination:\n            host: b.example.com\n";
    assert_eq!(
        one_error(text),
        "t.yaml:6:10: document 1 (VirtualService/vs): field spec.hosts: invalid type: unit value, expected a sequence"
    );
}

/// Many documents are parsed on several threads: objects and errors stay in
/// document order.
#[test]
fn many_documents_keep_their_order() {
    let mut text = String::new();
    for i in 0..3000 {
        let port = if i == 7 || i == 2900 { "\"80\"" } else { "80" };
        text.push_str(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se-{i}\nspec:\n  hosts: [h{i}.example.com]\n  ports:\n    - number: {port}\n      name: http\n      protocol: HTTP\n---\n"
        ));
    }
    let sources = [Source {
        name: "many.yaml".into(),
        text,
    }];
    let errors = load_sources(&sources, &LoadOptions::default()).expect_err("two errors");
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("many.yaml:85:15: document 8 (ServiceEntry/se-7):"));
    assert!(lines[1].starts_with("many.yaml:31908:15: document 2901 (ServiceEntry/se-2900):"));
    // Without the errors: every object, in order.
    let text = sources[0].text.replace("number: \"80\"", "number: 80");
    let loaded = load_str("many.yaml", &text, &LoadOptions::default()).expect("loads");
    assert_eq!(loaded.len(), 3000);
    for (i, r) in loaded.iter().enumerate() {
        assert_eq!(r.metadata.name, format!("se-{i}"));
        assert_eq!(r.origin.document, i + 1);
    }
}
