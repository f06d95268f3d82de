//! The echo workload over real sockets: any method and path, answered with a description
//! of the request and of the replica.

use std::time::Duration;

use crate::common::{raw_get, spawn};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, Version};
use meshbox_apps::{describe_request, serve_echo, EchoIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn identity() -> EchoIdentity {
    EchoIdentity {
        hostname: "echo-v2-0".into(),
        version: "v2".into(),
    }
}

#[tokio::test]
async fn get_is_described_with_query_headers_and_identity() {
    let echo = spawn(|l| serve_echo(l, identity())).await;
    let response = raw_get(
        echo,
        "/new/path?key=value&b=2",
        &[("X-Custom", "some-value"), ("a!#$%&'*+-.^_`|~z", "why")],
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));
    let lines: Vec<&str> = response.body.lines().collect();
    assert_eq!(
        &lines[..6],
        [
            "ServiceVersion=v2",
            "Hostname=echo-v2-0",
            "Method=GET",
            "URL=/new/path?key=value&b=2",
            "Proto=HTTP/1.1",
            &format!("Host={echo}"),
        ]
    );
    assert!(
        lines.contains(&"RequestHeader=x-custom:some-value"),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"RequestHeader=a!#$%&'*+-.^_`|~z:why"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn any_method_and_path_is_answered() {
    let echo = spawn(|l| serve_echo(l, identity())).await;
    let mut stream = tokio::net::TcpStream::connect(echo).await.unwrap();
    stream
        .write_all(b"OPTIONS /any/where HTTP/1.1\r\nHost: b:85\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\nMethod=OPTIONS\n"), "{text}");
    assert!(text.contains("\nURL=/any/where\n"), "{text}");
    assert!(text.contains("\nHost=b:85\n"), "{text}");
}

#[test]
fn description_without_a_host_header_uses_the_uri_authority() {
    let uri: Uri = "http://echo:8080/x?y=1".parse().unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("end-user", HeaderValue::from_static(""));
    let text = describe_request(
        &EchoIdentity {
            hostname: "h".into(),
            version: String::new(),
        },
        &Method::POST,
        &uri,
        Version::HTTP_10,
        &headers,
    );
    assert_eq!(
        text,
        "ServiceVersion=\nHostname=h\nMethod=POST\nURL=/x?y=1\nProto=HTTP/1.0\nHost=echo:8080\nRequestHeader=end-user:\n"
    );
}

#[tokio::test]
async fn run_app_knows_echo() {
    assert!(meshbox_apps::app_names().contains(&"echo"));
    let echo = spawn(|l| meshbox_apps::run_app("echo", l)).await;
    let response = raw_get(echo, "/", &[]).await;
    assert_eq!(response.status, 200);
    assert!(
        response.body.contains("\nMethod=GET\n"),
        "{}",
        response.body
    );
}
