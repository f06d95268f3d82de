//! `meshbox up --proxy-threads N`: the proxies run on N worker threads, each with its
//! own event loop, and a listener hands its connections to the workers in turn (as
//! Envoy's listeners hand connections to its worker threads, `--concurrency`).
//! Whichever worker a connection lands on, the request goes the same way.

use crate::common;
use crate::common::{http_get, MeshProcess};

const NS: &str = "dev-service-mesh";

#[test]
fn three_workers_serve_the_course_path_whichever_worker_takes_the_connection() {
    let mesh = MeshProcess::start(&["-n", NS, "--proxy-threads", "3"]);

    // The process has the three worker threads it was asked for.
    let threads = std::fs::read_dir(format!("/proc/{}/task", mesh.pid()))
        .expect("/proc")
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .filter(|name| name.starts_with("meshbox-worker"))
        .count();
    assert_eq!(threads, 3, "worker threads");

    mesh.apply(&common::course_a_to_b());
    mesh.wait_for("/service-a", |_, b| b.contains("Hello from ServiceB!"));

    // Every GET opens a connection of its own, so the gateway's and the sidecars'
    // connections go round the three workers; each answer is the whole A -> B path.
    let answers: Vec<(u16, String)> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..12)
            .map(|_| s.spawn(|| http_get(&mesh.gateway_url, "/service-a", &[])))
            .collect();
        calls
            .into_iter()
            .map(|c| c.join().expect("request thread"))
            .collect()
    });
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{answers:?}");
        assert!(body.contains("Hello from ServiceB!"), "{answers:?}");
    }
}
