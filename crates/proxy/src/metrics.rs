//! Istio's standard metrics (istio.io "Istio Standard Metrics"), per proxy, in the
//! Prometheus / OpenMetrics text format: `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes`,
//! `istio_response_bytes` for HTTP, and `istio_tcp_connections_opened_total`,
//! `istio_tcp_connections_closed_total`, `istio_tcp_sent_bytes_total`,
//! `istio_tcp_received_bytes_total` for connections (CONNECT tunnels, TLS passthrough
//! and TCP gateway ports), with Istio's labels.
//!
//! Label values are cheap to make on the request path: the proxy's own workload, the
//! workload behind each endpoint address and the service of each cluster are interned
//! as `Arc`s in maps swapped whole when the config changes; a request's label set is a
//! handful of `Arc` clones and `&'static str`s. A request's four HTTP series are found
//! with one lookup (in a map swapped whole when a new label set is first seen, hashed
//! with FxHash) in a per-proxy cache of handles into prometheus-client's families; the
//! series keep their values per thread (sharded.rs), so recording takes no lock.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::sharded::{CopyOnWriteMap, ShardedCounter, ShardedHistogram};
use crate::tunnel::BLACKHOLE_CLUSTER;
use meshbox_routing::tables::PASSTHROUGH_CLUSTER;

/// A workload as Istio's metrics name it (`source_*` / `destination_*` labels).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadIdentity {
    /// The workload: the Deployment (or gateway) that owns the pod.
    pub workload: String,
    /// Its namespace.
    pub namespace: String,
    /// Its `app` label (`unknown` when absent).
    pub app: String,
    /// Its `version` label (`unknown` when absent).
    pub version: String,
}

impl WorkloadIdentity {
    /// Istio's `unknown` peer: nothing is known about it.
    pub fn unknown() -> WorkloadIdentity {
        WorkloadIdentity {
            workload: "unknown".into(),
            namespace: "unknown".into(),
            app: "unknown".into(),
            version: "unknown".into(),
        }
    }
}

/// `destination_service`, `destination_service_name`, `destination_service_namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServiceLabels {
    service: String,
    name: String,
    namespace: String,
}

impl ServiceLabels {
    /// From a cluster name `outbound|PORT|SUBSET|HOST`; a Kubernetes FQDN
    /// (`name.ns.svc.cluster.local`) gives name and namespace, another host names itself.
    fn of_cluster(cluster: &str) -> ServiceLabels {
        let host = cluster.rsplit('|').next().unwrap_or(cluster);
        ServiceLabels::of_host(host)
    }

    fn of_host(host: &str) -> ServiceLabels {
        let mut parts = host.split('.');
        match (
            parts.next(),
            parts.next(),
            host.ends_with(".svc.cluster.local"),
        ) {
            (Some(name), Some(ns), true) => ServiceLabels {
                service: host.to_string(),
                name: name.to_string(),
                namespace: ns.to_string(),
            },
            _ => ServiceLabels {
                service: host.to_string(),
                name: host.to_string(),
                namespace: "unknown".into(),
            },
        }
    }

    /// BlackHoleCluster / PassthroughCluster: the host asked for as the service.
    fn catch_all(name: &str, host: &str) -> ServiceLabels {
        ServiceLabels {
            service: if host.is_empty() {
                name.to_string()
            } else {
                host.to_string()
            },
            name: name.to_string(),
            namespace: "unknown".into(),
        }
    }
}

/// A group of label values shared by many label sets (a workload, a service), with its
/// hash computed once: a label set is hashed on every request to find its series, and
/// hashing walked every string of both workloads and the service each time.
#[derive(Debug)]
struct Interned<T> {
    hash: u64,
    value: T,
}

impl<T: Hash> Interned<T> {
    fn new(value: T) -> Arc<Interned<T>> {
        let hash = rustc_hash::FxBuildHasher.hash_one(&value);
        Arc::new(Interned { hash, value })
    }
}

impl<T> std::ops::Deref for Interned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: PartialEq> PartialEq for Interned<T> {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.value == other.value
    }
}

impl<T: Eq> Eq for Interned<T> {}

impl<T> Hash for Interned<T> {
    /// The hash of the value (equal values, equal hashes), written as one word.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// One label set of Istio's standard metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Labels {
    reporter: &'static str,
    source: Arc<Interned<WorkloadIdentity>>,
    destination: Arc<Interned<WorkloadIdentity>>,
    service: Arc<Interned<ServiceLabels>>,
    protocol: &'static str,
    /// `None` for TCP metrics, which carry no `response_code`.
    response_code: Option<u16>,
    /// Set again when the response ends otherwise than it began (body.rs).
    pub(crate) response_flags: &'static str,
    security: &'static str,
}

impl EncodeLabelSet for Labels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let code = self.response_code.map(|c| c.to_string());
        let mut pairs: Vec<(&str, &str)> = vec![
            ("reporter", self.reporter),
            ("source_workload", &self.source.workload),
            ("source_workload_namespace", &self.source.namespace),
            ("source_app", &self.source.app),
            ("source_version", &self.source.version),
            ("destination_workload", &self.destination.workload),
            (
                "destination_workload_namespace",
                &self.destination.namespace,
            ),
            ("destination_app", &self.destination.app),
            ("destination_version", &self.destination.version),
            ("destination_service", &self.service.service),
            ("destination_service_name", &self.service.name),
            ("destination_service_namespace", &self.service.namespace),
            ("request_protocol", self.protocol),
        ];
        if let Some(code) = &code {
            pairs.push(("response_code", code));
        }
        pairs.push(("response_flags", self.response_flags));
        pairs.push(("connection_security_policy", self.security));
        pairs.as_slice().encode(encoder)
    }
}

type HistogramFamily = Family<Labels, ShardedHistogram, fn() -> ShardedHistogram>;

fn duration_histogram() -> ShardedHistogram {
    // Istio's buckets for istio_request_duration_milliseconds.
    ShardedHistogram::new([
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ])
}

fn size_histogram() -> ShardedHistogram {
    // Istio's buckets for istio_request_bytes / istio_response_bytes: 1 to 10^8.
    ShardedHistogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1.0, 10.0, 9,
    ))
}

/// Where the traffic a metric counts went, as the proxy knows it.
pub(crate) struct Destination<'a> {
    /// The upstream cluster (`outbound|80||host`, `inbound|8080||`, `PassthroughCluster`,
    /// `BlackHoleCluster`), if any.
    pub cluster: Option<&'a str>,
    /// The route that answered (`block_all` counts as BlackHoleCluster).
    pub route: Option<&'a str>,
    /// The host asked for, for catch-all clusters.
    pub host: &'a str,
    /// The endpoint the traffic was sent to, if any.
    pub upstream: Option<SocketAddr>,
}

/// Handles to the four HTTP series of one label set (each shares its value with the
/// series in the registry).
struct RequestSeries {
    requests: ShardedCounter,
    duration: ShardedHistogram,
    request_bytes: ShardedHistogram,
    response_bytes: ShardedHistogram,
}

impl RequestSeries {
    fn record(&self, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

/// One proxy's metrics.
pub struct ProxyMetrics {
    registry: Registry,
    requests: Family<Labels, ShardedCounter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    /// The HTTP series of each label set seen so far: one lookup per request instead of
    /// one per family, and no lock (a new label set swaps in a new map).
    request_series: CopyOnWriteMap<Labels, Arc<RequestSeries>>,
    identity: ArcSwap<Interned<WorkloadIdentity>>,
    unknown: Arc<Interned<WorkloadIdentity>>,
    /// The workload behind each endpoint address of the mesh (Istio learns it by
    /// metadata exchange).
    peers: ArcSwap<FxHashMap<SocketAddr, Arc<Interned<WorkloadIdentity>>>>,
    /// Interned service labels per cluster name.
    services: ArcSwap<FxHashMap<String, Arc<Interned<ServiceLabels>>>>,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics::new()
    }
}

impl ProxyMetrics {
    /// Empty metrics, for a proxy whose workload is not known yet.
    pub fn new() -> ProxyMetrics {
        let mut registry = Registry::default();
        let requests = Family::<Labels, ShardedCounter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        let request_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        let response_bytes: HistogramFamily = Family::new_with_constructor(size_histogram);
        let tcp_opened = Family::<Labels, Counter>::default();
        let tcp_closed = Family::<Labels, Counter>::default();
        let tcp_sent = Family::<Labels, Counter>::default();
        let tcp_received = Family::<Labels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "istio_requests",
            "Requests processed by the proxy",
            requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes in bytes",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes in bytes",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent downstream on TCP connections",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from downstream on TCP connections",
            tcp_received.clone(),
        );
        let unknown = Interned::new(WorkloadIdentity::unknown());
        ProxyMetrics {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            request_series: CopyOnWriteMap::default(),
            identity: ArcSwap::new(unknown.clone()),
            unknown,
            peers: ArcSwap::from_pointee(FxHashMap::default()),
            services: ArcSwap::from_pointee(FxHashMap::default()),
        }
    }

    /// The proxy's own workload (`source_*` when it reports as source).
    pub fn set_identity(&self, identity: WorkloadIdentity) {
        self.identity.store(Interned::new(identity));
    }

    /// The workload behind each endpoint address (`destination_*` of outbound traffic).
    pub fn set_peers(&self, peers: HashMap<SocketAddr, WorkloadIdentity>) {
        self.peers.store(Arc::new(
            peers
                .into_iter()
                .map(|(k, v)| (k, Interned::new(v)))
                .collect(),
        ));
    }

    /// Interns the service labels of these clusters (called when the tables change).
    pub(crate) fn intern_clusters<'a>(&self, clusters: impl Iterator<Item = &'a str>) {
        let map = clusters
            .map(|c| (c.to_string(), Interned::new(ServiceLabels::of_cluster(c))))
            .collect();
        self.services.store(Arc::new(map));
    }

    /// The Prometheus text exposition (OpenMetrics) of all metrics.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The label set of traffic this proxy handled.
    pub(crate) fn labels(
        &self,
        inbound: bool,
        dest: &Destination<'_>,
        protocol: &'static str,
        response_code: Option<u16>,
        response_flags: &'static str,
    ) -> Labels {
        let me = self.identity.load_full();
        let blackhole = dest.route == Some("block_all") || dest.cluster == Some(BLACKHOLE_CLUSTER);
        let service = if blackhole {
            Interned::new(ServiceLabels::catch_all(BLACKHOLE_CLUSTER, dest.host))
        } else if dest.cluster == Some(PASSTHROUGH_CLUSTER) {
            Interned::new(ServiceLabels::catch_all(PASSTHROUGH_CLUSTER, dest.host))
        } else if inbound {
            Interned::new(ServiceLabels {
                service: dest.host.to_string(),
                name: dest.host.split('.').next().unwrap_or_default().to_string(),
                namespace: me.namespace.clone(),
            })
        } else {
            match dest.cluster {
                Some(c) => match self.services.load().get(c) {
                    Some(s) => s.clone(),
                    None => Interned::new(ServiceLabels::of_cluster(c)),
                },
                None => Interned::new(ServiceLabels::of_host(dest.host)),
            }
        };
        let (reporter, source, destination, security) = if inbound {
            // Without mTLS or metadata exchange the caller is not known.
            ("destination", self.unknown.clone(), me, "none")
        } else {
            let peer = dest
                .upstream
                .and_then(|a| self.peers.load().get(&a).cloned())
                .unwrap_or_else(|| self.unknown.clone());
            ("source", me, peer, "unknown")
        };
        Labels {
            reporter,
            source,
            destination,
            service,
            protocol,
            response_code,
            response_flags: if response_flags.is_empty() {
                "-"
            } else {
                response_flags
            },
            security,
        }
    }

    /// Records one HTTP request when its response has ended.
    pub(crate) fn record_request(
        &self,
        labels: &Labels,
        duration_ms: f64,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let recorded = self.request_series.with(labels, |series| {
            series.record(duration_ms, request_bytes, response_bytes)
        });
        if recorded.is_none() {
            let series = self.request_series.get_or_add(labels, || {
                Arc::new(RequestSeries {
                    requests: self.requests.get_or_create(labels).clone(),
                    duration: self.duration.get_or_create(labels).clone(),
                    request_bytes: self.request_bytes.get_or_create(labels).clone(),
                    response_bytes: self.response_bytes.get_or_create(labels).clone(),
                })
            });
            series.record(duration_ms, request_bytes, response_bytes);
        }
    }

    /// Records a TCP connection opening.
    pub(crate) fn tcp_open(&self, labels: &Labels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// Records a TCP connection closing, with the bytes it carried.
    pub(crate) fn tcp_close(&self, labels: &Labels, received: u64, sent: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_received.get_or_create(labels).inc_by(received);
        self.tcp_sent.get_or_create(labels).inc_by(sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubernetes_cluster_names_its_service_and_namespace() {
        let s = ServiceLabels::of_cluster("outbound|80||service-b.dev.svc.cluster.local");
        assert_eq!(s.name, "service-b");
        assert_eq!(s.namespace, "dev");
        let s = ServiceLabels::of_cluster("outbound|80||worldtimeapi.org");
        assert_eq!(s.name, "worldtimeapi.org");
    }

    #[test]
    fn counters_have_istios_names_and_labels() {
        let m = ProxyMetrics::new();
        let dest = Destination {
            cluster: None,
            route: Some("block_all"),
            host: "example.com:80",
            upstream: None,
        };
        let l = m.labels(false, &dest, "http", Some(502), "-");
        m.record_request(&l, 1.0, 0, 0);
        // The second request of a label set goes through the cached series handles,
        // which must count in the registry's series.
        m.record_request(&l, 1.0, 0, 0);
        let text = m.encode();
        let total = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap_or_default();
        assert!(total.ends_with("} 2"), "{text}");
        assert!(
            text.contains("istio_request_duration_milliseconds_count{"),
            "{text}"
        );
        assert!(
            text.contains("istio_requests_total{reporter=\"source\""),
            "{text}"
        );
        assert!(
            text.contains("destination_service_name=\"BlackHoleCluster\""),
            "{text}"
        );
        assert!(text.contains("response_code=\"502\""), "{text}");
    }
}
