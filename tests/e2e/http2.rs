//! HTTP/2 with prior knowledge (h2c) from clients: a proxy listener tells HTTP/1.1 and
//! HTTP/2 apart by the connection preface, as Envoy's HTTP connection manager does with
//! `codec_type: AUTO` (Istio's default for HTTP listeners), and forwards over its usual
//! HTTP/1.1 upstream connections.

use crate::common;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::MeshProcess;

const NS: &str = "dev-service-mesh";

#[test]
fn the_ingress_gateway_serves_h2c_streams_on_one_connection_and_logs_http2() {
    let mesh = MeshProcess::start(&["-n", NS, "--set", "meshConfig.accessLogFile=/dev/stdout"]);
    mesh.apply(&common::course_a_to_b());
    mesh.wait_for("/service-a", |_, b| b.contains("Hello from ServiceB!"));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url: hyper::Uri = format!("http://{}/service-a", mesh.gateway_url)
        .parse()
        .expect("url");
    let answers = runtime.block_on(async {
        // HTTP/2 only, with prior knowledge: one connection, concurrent streams.
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Empty<Bytes>>();
        let get = |client: Client<_, Empty<Bytes>>, url: hyper::Uri| async move {
            let resp = client.get(url).await.expect("HTTP/2 request");
            let version = resp.version();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (version, status, String::from_utf8_lossy(&body).into_owned())
        };
        let (a, b, c) = tokio::join!(
            get(client.clone(), url.clone()),
            get(client.clone(), url.clone()),
            get(client.clone(), url.clone())
        );
        vec![a, b, c]
    });
    for (version, status, body) in &answers {
        assert_eq!(*version, hyper::Version::HTTP_2, "{answers:?}");
        assert_eq!(*status, 200, "{answers:?}");
        assert!(body.contains("Hello from ServiceB!"), "{answers:?}");
    }

    // The gateway's access log names the downstream protocol as Envoy does.
    mesh.wait_for_log("istio-ingressgateway", "istio-system", |l| {
        l.matches("\"GET /service-a HTTP/2\" 200").count() >= 3
    });
}
