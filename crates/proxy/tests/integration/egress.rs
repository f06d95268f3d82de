//! Traffic to hosts outside the mesh: `outboundTrafficPolicy` ALLOW_ANY and
//! REGISTRY_ONLY, names DNS does not know, and ServiceEntry hosts.

use std::sync::atomic::Ordering;

use crate::common::*;
use meshbox_config::MeshOptions;
use meshbox_proxy::Override;

/// A mesh with one Service on port 80, so the sidecar has a route table for port 80
/// whose last virtual host is the catch-all (`allow_any` or `block_all`).
async fn sidecar_with(mesh: &MeshOptions, extra_yaml: &str, overrides: Vec<Override>) -> Running {
    let app = echo_upstream("svc").await;
    let pod = pod("svc-1", "svc", 8080, app.addr).await;
    let store = store(&format!("{}{extra_yaml}", service_yaml("svc", "svc", 8080)));
    let tables = sidecar_tables(&store, mesh, std::slice::from_ref(&pod.instance));
    sidecar(tables, overrides, 1).await
}

/// Istio REGISTRY_ONLY: the catch-all virtual host's `block_all` route is a direct
/// response 502 with no body (pilot/pkg/networking/core: BlackHole route); the log
/// shows `502 - direct_response`, no upstream and route `block_all`. The host is one
/// the application could resolve (here through a --resolve override to 127.0.0.1), so
/// the request reaches the sidecar, where it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_only_answers_resolvable_unknown_host_with_502_empty_body_block_all() {
    let sidecar = sidecar_with(
        &registry_only(),
        "",
        vec![Override::parse_resolve("unknown.example.com:80:127.0.0.1").unwrap()],
    )
    .await;
    let reply = send(
        sidecar.addr,
        get("http://unknown.example.com/api", "unknown.example.com"),
    )
    .await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.body, "", "Istio's block_all has no body");
    assert_eq!(reply.header("content-length"), Some("0"));
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_code, "502");
    assert_eq!(line.response_flags, "-");
    assert_eq!(line.response_code_details, "direct_response");
    assert_eq!(line.bytes_sent, "0");
    // A refusal logs the host and port asked for (meshbox adds the port Envoy
    // would leave out, so that every refusal names both).
    assert_eq!(line.authority, "unknown.example.com:80");
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.upstream_cluster, "-");
    assert_eq!(line.route_name, "block_all");
}

/// A name that resolves nowhere: in a pod the application's own lookup would fail
/// before any request; meshbox's sidecar answers 503 with flag DF (Envoy's
/// DnsResolutionFailed) and a body naming the host, whatever the outbound policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_host_is_503_df_naming_the_host_in_both_policies() {
    for (mesh, route, cluster) in [
        (allow_any(), "allow_any", "PassthroughCluster"),
        (registry_only(), "block_all", "-"),
    ] {
        let sidecar = sidecar_with(&mesh, "", Vec::new()).await;
        let reply = send(
            sidecar.addr,
            get("http://nonexistent.invalid/", "nonexistent.invalid"),
        )
        .await;
        assert_eq!(reply.status, 503, "{route}: {reply:?}");
        assert!(
            reply.body.contains("nonexistent.invalid"),
            "{route}: {:?}",
            reply.body
        );
        let line = sidecar.log.only_line().await;
        assert_eq!(line.response_code, "503");
        assert_eq!(line.response_flags, "DF", "{route}");
        assert_eq!(line.response_code_details, "dns_resolution_failure");
        assert_eq!(line.bytes_sent, reply.body.len().to_string());
        assert_eq!(line.upstream_host, "-");
        assert_eq!(line.upstream_cluster, cluster, "{route}");
        assert_eq!(line.route_name, route);
    }
}

/// Istio ALLOW_ANY: the catch-all virtual host's `allow_any` route forwards to
/// PassthroughCluster, the original destination, with the request as the application
/// sent it (Envoy does not rewrite the Host header on a passthrough).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_forwards_unknown_host_through_passthrough_cluster() {
    let external = echo_upstream("external").await;
    let sidecar = sidecar_with(
        &allow_any(),
        "",
        vec![Override::parse_connect_to(&format!(
            "external.example.com:80:127.0.0.1:{}",
            external.addr.port()
        ))
        .unwrap()],
    )
    .await;
    let reply = send(
        sidecar.addr,
        get(
            "http://external.example.com/path?q=1",
            "external.example.com",
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert_eq!(echo.upstream, "external");
    assert_eq!(echo.uri, "/path?q=1");
    assert_eq!(echo.header("host"), Some("external.example.com"));
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_code, "200");
    assert_eq!(line.response_code_details, "via_upstream");
    assert_eq!(line.upstream_host, external.addr.to_string());
    assert_eq!(line.upstream_cluster, "PassthroughCluster");
    assert_eq!(line.route_name, "allow_any");
}

/// ALLOW_ANY on a port no service uses: no route table for it, so the traffic goes
/// straight to PassthroughCluster (Istio's outbound catch-all filter chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_passes_through_on_a_port_without_services() {
    let external = echo_upstream("external").await;
    let port = external.addr.port();
    let sidecar = sidecar_with(
        &allow_any(),
        "",
        vec![Override::parse_resolve(&format!("external.example.com:{port}:127.0.0.1")).unwrap()],
    )
    .await;
    let authority = format!("external.example.com:{port}");
    let reply = send(
        sidecar.addr,
        get(&format!("http://{authority}/"), &authority),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.echo().header("host"), Some(authority.as_str()));
    let line = sidecar.log.only_line().await;
    assert_eq!(line.upstream_cluster, "PassthroughCluster");
    assert_eq!(line.route_name, "allow_any");
}

/// ALLOW_ANY to the sidecar's own address: passing it through would send the request
/// back into the same listener, round and round. As Istio's outbound listener drops
/// traffic addressed to itself (to BlackHoleCluster), the sidecar refuses at once with
/// 503 `UH` and connects nowhere; its next request is served as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_any_call_to_the_sidecars_own_address_is_refused_not_looped() {
    let sidecar = sidecar_with(&allow_any(), "", Vec::new()).await;
    let own = sidecar.addr.to_string();
    let reply = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        send(sidecar.addr, get(&format!("http://{own}/"), &own)),
    )
    .await
    .expect("an answer, not a loop");
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.body, "no healthy upstream");
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_flags, "UH");
    assert_eq!(line.response_code_details, "no_healthy_upstream");
    assert_eq!(line.upstream_host, "-");
    assert_eq!(line.route_name, "allow_any");
    let reply = send(sidecar.addr, get("http://svc/", "svc")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
}

/// A ServiceEntry (resolution DNS, MESH_EXTERNAL) puts `worldtimeapi.org` in the
/// registry: REGISTRY_ONLY lets it through, over the cluster
/// `outbound|80||worldtimeapi.org` whose endpoint is the resolved name (here sent to
/// the test's stand-in with a --connect-to override, as `meshbox up --stand-in` does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_entry_dns_host_reaches_its_endpoint_through_its_cluster() {
    let se = "apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: worldtime-host-se
spec:
  hosts:
    - worldtimeapi.org
  ports:
    - number: 80
      name: http
      protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
";
    let worldtime = echo_upstream("worldtime").await;
    let sidecar = sidecar_with(
        &registry_only(),
        se,
        vec![Override::parse_connect_to(&format!(
            "worldtimeapi.org:80:127.0.0.1:{}",
            worldtime.addr.port()
        ))
        .unwrap()],
    )
    .await;
    let reply = send(
        sidecar.addr,
        request(
            "GET",
            "http://worldtimeapi.org/api/timezone/Europe",
            &[("host", "worldtimeapi.org"), ("accept", "text/plain")],
            "",
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert_eq!(echo.upstream, "worldtime");
    assert_eq!(echo.uri, "/api/timezone/Europe");
    assert_eq!(echo.header("host"), Some("worldtimeapi.org"));
    assert_eq!(echo.header("accept"), Some("text/plain"));
    assert_eq!(worldtime.accepted.load(Ordering::SeqCst), 1);
    let line = sidecar.log.only_line().await;
    assert_eq!(line.response_code, "200");
    assert_eq!(line.upstream_cluster, "outbound|80||worldtimeapi.org");
    assert_eq!(line.upstream_host, worldtime.addr.to_string());
    assert_eq!(line.authority, "worldtimeapi.org");
    assert_eq!(line.route_name, "default");
}
