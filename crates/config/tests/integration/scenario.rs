//! Every manifest of the course loads unmodified.

use meshbox_config::{load_sources, read_sources, Kind, LoadOptions};
use std::path::PathBuf;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/worldtime")
}

#[test]
fn every_course_manifest_loads() {
    let sources = read_sources(&[examples()]).expect("read");
    assert_eq!(sources.len(), 18);
    let opts = LoadOptions {
        namespace: "dev-service-mesh".into(),
        namespace_explicit: true,
    };
    for s in &sources {
        let r = load_sources(std::slice::from_ref(s), &opts);
        assert!(r.is_ok(), "{}: {}", s.name, r.unwrap_err());
    }
    let all: Vec<_> = sources
        .iter()
        .flat_map(|s| load_sources(std::slice::from_ref(s), &opts).unwrap())
        .collect();
    assert!(all.iter().all(|r| r.namespace() == "dev-service-mesh"));
    assert_eq!(all.iter().filter(|r| r.kind == Kind::Deployment).count(), 3);
}
