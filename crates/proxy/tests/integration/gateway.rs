//! The ingress gateway: Gateway servers and the VirtualServices bound to them, URI
//! rewrites, and Envoy's 404 NR when nothing routes.

use crate::common::*;

/// The course's step 1: Gateway `service-a-gw` (port 80, hosts `*`) and the
/// VirtualService routing exact `/service-a`, rewritten to `/`, to `service-a-srv:80`.
const SERVICE_A: &str = "apiVersion: v1
kind: Service
metadata:
  name: service-a-srv
spec:
  selector:
    app: service-a-app
  ports:
    - port: 80
      targetPort: 8081
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: service-a-gw
spec:
  selector:
    istio: ingressgateway
  servers:
    - port:
        number: 80
        name: http
        protocol: HTTP
      hosts:
        - \"*\"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: inbound-to-service-a-vs
spec:
  hosts:
    - \"*\"
  gateways:
    - service-a-gw
  http:
    - match:
        - uri:
            exact: /service-a
      rewrite:
        uri: /
      route:
        - destination:
            host: service-a-srv
            port:
              number: 80
";

async fn service_a_gateway() -> (Running, Pod, Upstream) {
    let app = echo_upstream("service-a").await;
    let pod = pod("service-a-1", "service-a-app", 8081, app.addr).await;
    let gw = ingress_gateway(
        &store(SERVICE_A),
        &registry_only(),
        std::slice::from_ref(&pod.instance),
    )
    .await;
    (gw, pod, app)
}

/// Istio's `rewrite.uri` on an exact match replaces the whole path (Envoy
/// `prefix_rewrite` over the full path) and keeps the query string; Envoy sends the
/// path it had in `x-envoy-original-path`, and the access log's
/// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%` therefore shows the ORIGINAL path. The gateway
/// appends the client address to X-Forwarded-For (use_remote_address on gateways).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_rewrite_at_gateway_sends_new_path_and_original_path_header_and_logs_original_path() {
    let (gw, pod, _app) = service_a_gateway().await;
    let reply = send(
        gw.addr,
        request(
            "GET",
            "/service-a?lang=en&x=1",
            &[("host", "mesh.example.com"), ("user-agent", "curl/8.5.0")],
            "",
        ),
    )
    .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let echo = reply.echo();
    assert_eq!(echo.upstream, "service-a");
    assert_eq!(echo.uri, "/?lang=en&x=1", "rewritten path, query kept");
    assert_eq!(
        echo.header("x-envoy-original-path"),
        Some("/service-a?lang=en&x=1")
    );
    assert_eq!(echo.header("host"), Some("mesh.example.com"));
    assert_eq!(echo.header("x-forwarded-for"), Some("127.0.0.1"));
    assert!(echo.header("x-request-id").is_some_and(is_uuid_v4));

    let line = gw.log.only_line().await;
    assert_eq!(
        line.path, "/service-a?lang=en&x=1",
        "the log shows the original path"
    );
    assert_eq!(line.response_code, "200");
    assert_eq!(line.response_flags, "-");
    assert_eq!(line.response_code_details, "via_upstream");
    assert_eq!(line.x_forwarded_for, "127.0.0.1");
    assert_eq!(line.authority, "mesh.example.com");
    assert_eq!(line.upstream_host, pod.inbound.to_string());
    assert_eq!(
        line.upstream_cluster,
        "outbound|80||service-a-srv.dev-service-mesh.svc.cluster.local"
    );
    assert_eq!(line.downstream_local_address, gw.addr.to_string());
    assert_eq!(line.route_name, "-", "an unnamed rule's route has no name");
}

/// Envoy answers a request that matches no route of its virtual host with 404, no
/// body, response flag NR and details `route_not_found`; nothing is forwarded, so the
/// upstream fields of the log are `-`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_request_matching_no_route_is_404_nr() {
    let (gw, _pod, app) = service_a_gateway().await;
    // Exact match: neither another path nor a longer one routes.
    for path in ["/service-b", "/service-a/more"] {
        let reply = send(gw.addr, get(path, "mesh.example.com")).await;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert_eq!(reply.body, "", "{path}");
    }
    let lines = gw.log.wait_for(2).await;
    for raw in &lines {
        let line = LogLine::parse(raw);
        assert_eq!(line.response_code, "404");
        assert_eq!(line.response_flags, "NR");
        assert_eq!(line.response_code_details, "route_not_found");
        assert_eq!(line.bytes_sent, "0");
        assert_eq!(line.upstream_service_time, "-");
        assert_eq!(line.upstream_host, "-");
        assert_eq!(line.upstream_cluster, "-");
        assert_eq!(line.upstream_local_address, "-");
        assert_eq!(line.route_name, "-");
    }
    assert_eq!(app.accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
}

/// A Host that no virtual host of the gateway's `http.80` route configuration claims:
/// Envoy answers 404 NR `route_not_found` (Istio builds virtual hosts only for the
/// Gateway server hosts its VirtualServices intersect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_request_for_host_without_virtual_host_is_404_nr() {
    let yaml = "apiVersion: v1
kind: Service
metadata:
  name: service-b-srv
spec:
  selector:
    app: service-b-app
  ports:
    - port: 80
      targetPort: 8082
---
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: service-b-gw
spec:
  selector:
    istio: ingressgateway
  servers:
    - port:
        number: 80
        name: http
        protocol: HTTP
      hosts:
        - b.example.com
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: service-b-vs
spec:
  hosts:
    - b.example.com
  gateways:
    - service-b-gw
  http:
    - route:
        - destination:
            host: service-b-srv
";
    let app = echo_upstream("service-b").await;
    let pod = pod("service-b-1", "service-b-app", 8082, app.addr).await;
    let gw = ingress_gateway(
        &store(yaml),
        &registry_only(),
        std::slice::from_ref(&pod.instance),
    )
    .await;

    let ok = send(gw.addr, get("/", "b.example.com")).await;
    assert_eq!(ok.status, 200, "the host that is configured routes: {ok:?}");
    let ok_port = send(gw.addr, get("/", "B.Example.com:80")).await;
    assert_eq!(
        ok_port.status, 200,
        "domains match without case and with :port"
    );

    let reply = send(gw.addr, get("/", "other.example.com")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.body, "");
    // A refusal logs the host and port asked for.
    let line = gw.log.find(|l| l.authority == "other.example.com:80").await;
    assert_eq!(line.response_code, "404");
    assert_eq!(line.response_flags, "NR");
    assert_eq!(line.response_code_details, "route_not_found");
    assert_eq!(line.upstream_cluster, "-");
    assert_eq!(line.route_name, "-");
}
