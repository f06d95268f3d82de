//! ServiceA, ServiceB and ServiceC over real sockets.

use std::time::Duration;

use crate::common::{canned_server, closed_port, raw_get, silent_server, spawn};
use meshbox_apps::{
    build_client, serve_service_a, serve_service_c, ClientConfig, ServiceAConfig, ServiceCConfig,
};

fn direct_client() -> reqwest::Client {
    build_client(&ClientConfig::default()).unwrap()
}

async fn service_a_calling(producer_url: String, client: reqwest::Client) -> std::net::SocketAddr {
    spawn(move |l| {
        serve_service_a(
            l,
            ServiceAConfig {
                producer_url,
                client,
            },
        )
    })
    .await
}

async fn get_body(addr: std::net::SocketAddr, path: &str) -> String {
    let response = raw_get(addr, path, &[]).await;
    assert_eq!(response.status, 200, "{response:?}");
    response.body
}

const A: &str = "Hello from ServiceA! Calling Producer Service... ";

#[tokio::test]
async fn service_b_greets_and_404s_elsewhere() {
    let b = spawn(meshbox_apps::run_service_b).await;
    let response = raw_get(b, "/", &[]).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, "Hello from ServiceB!\n");
    assert!(response
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));
    assert_eq!(raw_get(b, "/service-b", &[]).await.status, 404);
}

#[tokio::test]
async fn service_a_through_real_service_b() {
    let b = spawn(meshbox_apps::run_service_b).await;
    let a = service_a_calling(format!("http://{b}/"), direct_client()).await;
    // ServiceB's own newline, then ServiceA's.
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}Received response from Producer Service: Hello from ServiceB!\n\n")
    );
    assert_eq!(raw_get(a, "/nope", &[]).await.status, 404);
}

#[tokio::test]
async fn service_a_reports_502_without_body_and_sends_resttemplate_headers() {
    let (up, seen) = canned_server("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
    let a = service_a_calling(format!("http://{up}/"), direct_client()).await;
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}502 Bad Gateway: [no body]\n")
    );
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get / http/1.1\r\n"), "{head}");
    assert!(
        head.contains("\r\naccept: text/plain, application/json, application/*+json, */*\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nuser-agent: meshbox-app/0.1\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn service_a_quotes_error_bodies_on_one_line() {
    let (up, _) = canned_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 19\r\n\r\nno healthy\nupstream",
    )
    .await;
    let a = service_a_calling(format!("http://{up}/"), direct_client()).await;
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}503 Service Unavailable: \"no healthy<EOL>upstream\"\n")
    );
}

#[tokio::test]
async fn service_a_reports_refused_connection() {
    let port = closed_port().await;
    let url = format!("http://127.0.0.1:{port}/");
    let a = service_a_calling(url.clone(), direct_client()).await;
    let body = get_body(a, "/").await;
    eprintln!("refused: {body:?}");
    let prefix = format!("{A}I/O error on GET request for \"{url}\": ");
    assert!(body.starts_with(&prefix), "{body}");
    assert!(
        body.to_ascii_lowercase().contains("connection refused"),
        "{body}"
    );
    assert_eq!(body.matches('\n').count(), 1);
    assert!(body.ends_with('\n'));
}

#[tokio::test]
async fn service_a_reports_unknown_host() {
    let client = build_client(&ClientConfig {
        connect_timeout: Duration::from_secs(3),
        ..ClientConfig::default()
    })
    .unwrap();
    let url = "http://producer-internal-host.invalid:80/".to_string();
    let a = service_a_calling(url.clone(), client).await;
    let body = get_body(a, "/").await;
    eprintln!("unknown host: {body:?}");
    assert!(
        body.starts_with(&format!("{A}I/O error on GET request for \"{url}\": ")),
        "{body}"
    );
    assert!(
        body.contains("dns error") || body.contains("timed out"),
        "{body}"
    );
    assert_eq!(body.matches('\n').count(), 1);
}

#[tokio::test]
async fn service_a_times_out() {
    let up = silent_server().await;
    let client = build_client(&ClientConfig {
        request_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    })
    .unwrap();
    let url = format!("http://{up}/");
    let a = service_a_calling(url.clone(), client).await;
    let body = get_body(a, "/").await;
    eprintln!("timeout: {body:?}");
    assert!(
        body.starts_with(&format!("{A}I/O error on GET request for \"{url}\": ")),
        "{body}"
    );
    assert!(body.contains("timed out"), "{body}");
    assert_eq!(body.matches('\n').count(), 1);
}

#[tokio::test]
async fn service_c_through_real_worldtime() {
    let wt = spawn(meshbox_apps::run_worldtime).await;
    let c = spawn(move |l| {
        serve_service_c(
            l,
            ServiceCConfig {
                worldtime_url: format!("http://{wt}/api/timezone/Europe"),
                client: direct_client(),
            },
        )
    })
    .await;
    assert_eq!(
        get_body(c, "/").await,
        "Hello from ServiceC! Calling worldtimeapi.org API... Received response from worldtimeapi.org: \
         Europe/Amsterdam\nEurope/Andorra\nEurope/Astrakhan\nEurope/Athens\nEurope/Belgrade\nEurope/Berlin\nEurope/\
         ... (printed only 100 symbols from response body beginning)\n"
    );
}

#[tokio::test]
async fn service_c_reports_502_like_registry_only() {
    let (up, _) = canned_server("HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
    let c = spawn(move |l| {
        serve_service_c(
            l,
            ServiceCConfig {
                worldtime_url: format!("http://{up}/api/timezone/Europe"),
                client: direct_client(),
            },
        )
    })
    .await;
    assert_eq!(
        get_body(c, "/").await,
        "Hello from ServiceC! Calling worldtimeapi.org API... 502 Bad Gateway: [no body]\n"
    );
}

#[tokio::test]
async fn client_goes_through_http_proxy_unless_no_proxy_matches() {
    let (proxy, seen) =
        canned_server("HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nvia-proxy").await;
    let proxied = |no_proxy: Option<&str>| {
        build_client(&ClientConfig {
            http_proxy: Some(format!("http://{proxy}")),
            no_proxy: no_proxy.map(str::to_string),
            ..ClientConfig::default()
        })
        .unwrap()
    };

    // The scenario's URL: its host does not resolve here, only the proxy can answer.
    let a = service_a_calling(
        "http://producer-internal-host:80/".to_string(),
        proxied(Some("localhost,127.0.0.1")),
    )
    .await;
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}Received response from Producer Service: via-proxy\n")
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        // Absolute-form request target, and the target's Host header.
        assert!(
            seen[0].starts_with("GET http://producer-internal-host/ HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[0]
            .to_ascii_lowercase()
            .contains("\r\nhost: producer-internal-host\r\n"));
    }

    // A host that NO_PROXY names is called directly.
    let b = spawn(meshbox_apps::run_service_b).await;
    let a = service_a_calling(format!("http://{b}/"), proxied(Some("localhost,127.0.0.1"))).await;
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}Received response from Producer Service: Hello from ServiceB!\n\n")
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "NO_PROXY host went to the proxy"
    );

    // Without NO_PROXY, even 127.0.0.1 goes through the proxy.
    let a = service_a_calling(format!("http://{b}/"), proxied(None)).await;
    assert_eq!(
        get_body(a, "/").await,
        format!("{A}Received response from Producer Service: via-proxy\n")
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen[1].starts_with(&format!("GET http://{b}/ HTTP/1.1\r\n")),
        "{}",
        seen[1]
    );
}

#[tokio::test]
async fn proxy_settings_come_from_the_environment_names() {
    let config = ClientConfig::from_lookup(|name| match name {
        "http_proxy" => Some("127.0.0.1:15001".to_string()),
        "NO_PROXY" => Some("producer-internal-host".to_string()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.http_proxy.as_deref(), Some("127.0.0.1:15001"));
    assert_eq!(config.no_proxy.as_deref(), Some("producer-internal-host"));
    assert_eq!(config.connect_timeout, Duration::from_secs(2));
    assert_eq!(config.request_timeout, Duration::from_secs(10));
}

#[tokio::test]
async fn names_ports_and_dispatch() {
    assert_eq!(
        meshbox_apps::app_names(),
        [
            "service-a",
            "service-b",
            "service-c",
            "worldtime",
            "echo",
            "static-1k"
        ]
    );
    assert_eq!(meshbox_apps::default_port("service-a"), Some(8081));
    assert_eq!(meshbox_apps::default_port("service-b"), Some(8082));
    assert_eq!(meshbox_apps::default_port("service-c"), Some(8083));
    assert_eq!(meshbox_apps::default_port("worldtime"), Some(8080));
    assert_eq!(meshbox_apps::default_port("echo"), Some(8080));
    assert_eq!(meshbox_apps::default_port("static-1k"), Some(8080));
    assert_eq!(meshbox_apps::default_port("service-d"), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    assert!(meshbox_apps::run_app("service-d", listener).await.is_err());
    let b = spawn(|l| meshbox_apps::run_app("service-b", l)).await;
    assert_eq!(get_body(b, "/").await, "Hello from ServiceB!\n");
}
