//! Choosing where a request goes: weighted destinations and endpoints of a cluster.

use std::collections::BTreeMap;

use crate::common::*;

/// The course's step 3: `producer-internal-host` (ServiceB) and `service-c-srv`
/// (ServiceC), with a VirtualService splitting 50/50 between them.
const SPLIT_50_50: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: producer-internal-host-vs
spec:
  hosts:
    - producer-internal-host
  gateways:
    - mesh
  http:
    - route:
        - destination:
            host: producer-internal-host
            port:
              number: 80
          weight: 50
        - destination:
            host: service-c-srv
            port:
              number: 80
          weight: 50
";

/// Istio weighted destinations become Envoy `weighted_clusters`: each request picks a
/// cluster at random in proportion to the weights. With a fixed seed the split over
/// 1000 requests is reproducible; the bound checked is an honest ±7% (absolute) around
/// 50%, about 4.4 standard deviations of a fair binomial split. Each request's log line
/// names the cluster it went to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_50_50_over_1000_requests_is_within_tolerance() {
    let b = echo_upstream("service-b").await;
    let c = echo_upstream("service-c").await;
    let pod_b = pod("service-b-1", "service-b-app", 8082, b.addr).await;
    let pod_c = pod("service-c-1", "service-c-app", 8083, c.addr).await;
    let yaml = format!(
        "{}{}{SPLIT_50_50}",
        service_yaml("producer-internal-host", "service-b-app", 8082),
        service_yaml("service-c-srv", "service-c-app", 8083),
    );
    let tables = sidecar_tables(
        &store(&yaml),
        &registry_only(),
        &[pod_b.instance.clone(), pod_c.instance.clone()],
    );
    let sidecar = sidecar(tables, Vec::new(), 20_261_126).await;

    const N: usize = 1000;
    let mut conn = Conn::open(sidecar.addr).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..N {
        let reply = conn
            .send(get(
                "http://producer-internal-host/",
                "producer-internal-host",
            ))
            .await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let upstream = reply.header("x-upstream").expect("x-upstream").to_string();
        *counts.entry(upstream).or_default() += 1;
    }
    let to_b = counts.get("service-b").copied().unwrap_or(0);
    let to_c = counts.get("service-c").copied().unwrap_or(0);
    assert_eq!(to_b + to_c, N, "{counts:?}");
    for (name, n) in [("service-b", to_b), ("service-c", to_c)] {
        assert!(
            (430..=570).contains(&n),
            "{name} got {n} of {N}: {counts:?}"
        );
    }

    let lines = sidecar.log.wait_for(N).await;
    let mut by_cluster: BTreeMap<String, usize> = BTreeMap::new();
    for raw in &lines {
        let line = LogLine::parse(raw);
        assert_eq!(line.authority, "producer-internal-host");
        *by_cluster.entry(line.upstream_cluster).or_default() += 1;
    }
    assert_eq!(
        by_cluster,
        BTreeMap::from([
            (
                "outbound|80||producer-internal-host.dev-service-mesh.svc.cluster.local"
                    .to_string(),
                to_b
            ),
            (
                "outbound|80||service-c-srv.dev-service-mesh.svc.cluster.local".to_string(),
                to_c
            ),
        ])
    );
}

/// meshbox balances a cluster's endpoints round robin (Envoy ROUND_ROBIN; note that
/// Istio's default is LEAST_REQUEST, which with one request at a time picks among equal
/// endpoints at random rather than alternating): with two pods, successive requests
/// alternate between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_between_two_endpoints() {
    let one = echo_upstream("svc-one").await;
    let two = echo_upstream("svc-two").await;
    let pod_one = pod("svc-1", "svc", 8080, one.addr).await;
    let pod_two = pod("svc-2", "svc", 8080, two.addr).await;
    let tables = sidecar_tables(
        &store(&service_yaml("svc", "svc", 8080)),
        &registry_only(),
        &[pod_one.instance.clone(), pod_two.instance.clone()],
    );
    let sidecar = sidecar(tables, Vec::new(), 3).await;
    let mut conn = Conn::open(sidecar.addr).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let reply = conn.send(get("http://svc/", "svc")).await;
        assert_eq!(reply.status, 200);
        seen.push(reply.header("x-upstream").expect("x-upstream").to_string());
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "endpoints must alternate: {seen:?}");
    }
    assert_eq!(
        seen.iter().filter(|s| *s == "svc-one").count(),
        5,
        "{seen:?}"
    );
    let lines = sidecar.log.wait_for(10).await;
    let hosts: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|l| LogLine::parse(l).upstream_host)
        .collect();
    assert_eq!(
        hosts,
        [pod_one.inbound.to_string(), pod_two.inbound.to_string()].into()
    );
}
