//! The static-1k benchmark upstream over real sockets: every method and path gets the same
//! 1024-byte body.

use crate::common::{raw_get, spawn};
use meshbox_apps::{app_names, default_port, serve_static_1k, static_1k_body, STATIC_1K_LEN};

#[tokio::test]
async fn any_path_gets_the_same_1k_body() {
    let upstream = spawn(serve_static_1k).await;
    for path in ["/", "/some/path?q=1"] {
        let response = raw_get(upstream, path, &[]).await;
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(response.header("content-length"), Some("1024"));
        assert_eq!(response.body.len(), STATIC_1K_LEN);
        assert_eq!(response.body.as_bytes(), static_1k_body());
    }
}

#[test]
fn static_1k_is_a_known_app_on_8080() {
    assert!(app_names().contains(&"static-1k"));
    assert_eq!(default_port("static-1k"), Some(8080));
}
