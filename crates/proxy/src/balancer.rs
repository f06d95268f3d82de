//! Per-cluster runtime state that outlives a config change: endpoint health for
//! outlier detection, active requests for LEAST_REQUEST, and connection-pool limits
//! (Envoy's circuit breakers). Tables are swapped whole; this state is carried over by
//! cluster name and endpoint address.

use rustc_hash::FxHashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use meshbox_routing::cluster_policy::{LbPolicy, OutlierPolicy, PoolLimits};
use meshbox_routing::tables::{Cluster, ClusterEndpoints};
use meshbox_routing::ProxyTables;

/// The health and load of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct EndpointState {
    active: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    /// Milliseconds since the proxy started until which the endpoint is ejected.
    ejected_until_ms: AtomicU64,
    ejections: AtomicU32,
}

/// Circuit-breaker counters of a cluster.
#[derive(Debug)]
struct Limiter {
    limits: PoolLimits,
    connections: Arc<Semaphore>,
    pending: AtomicU32,
    active: Arc<AtomicU32>,
}

/// The state of one cluster.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    endpoints: FxHashMap<SocketAddr, Arc<EndpointState>>,
    limiter: Option<Limiter>,
    /// Retries under way (waiting out their back-off or in flight).
    retries: Arc<AtomicU32>,
}

/// All clusters' state for one proxy.
#[derive(Debug, Default)]
pub(crate) struct ClusterStates {
    clusters: FxHashMap<String, Arc<ClusterState>>,
}

impl ClusterStates {
    /// State for the clusters of `tables`, reusing `old` where names, endpoints and
    /// limits carry over.
    pub(crate) fn carry_over(old: &ClusterStates, tables: &ProxyTables) -> ClusterStates {
        let mut clusters = FxHashMap::default();
        for (name, cluster) in &tables.clusters {
            let previous = old.clusters.get(name);
            let mut endpoints = FxHashMap::default();
            if let ClusterEndpoints::Static(addrs) = &cluster.endpoints {
                for a in addrs {
                    let state = previous
                        .and_then(|p| p.endpoints.get(a).cloned())
                        .unwrap_or_default();
                    endpoints.insert(*a, state);
                }
            }
            let limiter = cluster.policy.limits.map(|limits| {
                match previous.and_then(|p| p.limiter.as_ref()) {
                    Some(l) if l.limits == limits => Limiter {
                        limits,
                        connections: l.connections.clone(),
                        pending: AtomicU32::new(l.pending.load(Ordering::Relaxed)),
                        active: l.active.clone(),
                    },
                    _ => Limiter {
                        limits,
                        connections: Arc::new(Semaphore::new(
                            (limits.max_connections as usize).min(Semaphore::MAX_PERMITS),
                        )),
                        pending: AtomicU32::new(0),
                        active: Arc::new(AtomicU32::new(0)),
                    },
                }
            });
            let retries = previous.map(|p| p.retries.clone()).unwrap_or_default();
            clusters.insert(
                name.clone(),
                Arc::new(ClusterState {
                    endpoints,
                    limiter,
                    retries,
                }),
            );
        }
        ClusterStates { clusters }
    }

    /// The state of a cluster.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ClusterState>> {
        self.clusters.get(name).cloned()
    }
}

/// Holds a request's place in a cluster's connection pool until it is dropped (with
/// the response body), and its endpoint's active count.
pub(crate) struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
    active: Option<Arc<AtomicU32>>,
}

impl Admission {
    /// Whether the admission holds a permit or a count (a cluster with limits).
    pub(crate) fn holds_anything(&self) -> bool {
        self._permit.is_some() || self.active.is_some()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(a) = &self.active {
            a.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts one request as active on an endpoint until dropped.
pub(crate) struct ActiveRequest<'a>(&'a EndpointState);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One of a cluster's concurrent retries, given back when dropped.
pub(crate) struct RetrySlot(Option<Arc<AtomicU32>>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        if let Some(n) = &self.0 {
            n.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl ClusterState {
    /// Takes one of the cluster's concurrent retries, Envoy's `max_retries` circuit
    /// breaker (DestinationRule `connectionPool.http.maxRetries`; Istio leaves it
    /// unlimited, `None`, unless set). `None` back: `max` retries are under way, and
    /// this one is not made (router `RetryStatus::NoOverflow`: the answer stands, with
    /// flag `UO`).
    pub(crate) fn start_retry(&self, max: Option<u32>) -> Option<RetrySlot> {
        let Some(max) = max else {
            return Some(RetrySlot(None));
        };
        if self.retries.fetch_add(1, Ordering::Relaxed) >= max {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(RetrySlot(Some(self.retries.clone())))
    }

    /// Admits a request under the cluster's limits, waiting in the pending queue when
    /// the connections are busy; `None` is an overflow (503 UO).
    pub(crate) async fn admit(&self) -> Option<Admission> {
        let Some(l) = &self.limiter else {
            return Some(Admission {
                _permit: None,
                active: None,
            });
        };
        if l.active.load(Ordering::Relaxed) >= l.limits.max_requests {
            return None;
        }
        let permit = match l.connections.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if l.pending.fetch_add(1, Ordering::Relaxed) >= l.limits.max_pending {
                    l.pending.fetch_sub(1, Ordering::Relaxed);
                    return None;
                }
                let p = l.connections.clone().acquire_owned().await;
                l.pending.fetch_sub(1, Ordering::Relaxed);
                p.ok()?
            }
        };
        l.active.fetch_add(1, Ordering::Relaxed);
        Some(Admission {
            _permit: Some(permit),
            active: Some(l.active.clone()),
        })
    }

    /// Picks an endpoint of `addrs` by the cluster's policy, skipping ejected ones.
    pub(crate) fn pick(
        &self,
        cluster: &Cluster,
        addrs: &[SocketAddr],
        hash: Option<u64>,
        clock: &Clock,
        mut random: impl FnMut() -> u64,
    ) -> Option<SocketAddr> {
        let now = clock.now_ms();
        // Without outlier detection every endpoint is a candidate: no copy of the list.
        let healthy: std::borrow::Cow<'_, [SocketAddr]> = if cluster.policy.outlier.is_some() {
            addrs
                .iter()
                .copied()
                .filter(|a| {
                    self.endpoints
                        .get(a)
                        .is_none_or(|s| s.ejected_until_ms.load(Ordering::Relaxed) <= now)
                })
                .collect()
        } else {
            std::borrow::Cow::Borrowed(addrs)
        };
        if healthy.is_empty() {
            return None;
        }
        let n = healthy.len();
        let index = match &cluster.policy.lb {
            LbPolicy::RoundRobin | LbPolicy::Passthrough => cluster.next_index(n),
            LbPolicy::Random => (random() % n as u64) as usize,
            LbPolicy::LeastRequest => {
                // Envoy's power of two choices.
                let a = (random() % n as u64) as usize;
                let b = (random() % n as u64) as usize;
                let load = |i: usize| {
                    self.endpoints
                        .get(&healthy[i])
                        .map_or(0, |s| s.active.load(Ordering::Relaxed))
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
            LbPolicy::ConsistentHash(_) => match hash {
                // Rendezvous hashing: stable for a key while the endpoints stay.
                Some(h) => (0..n).max_by_key(|i| mix(h, &healthy[*i])).unwrap_or(0),
                None => (random() % n as u64) as usize,
            },
        };
        Some(healthy[index])
    }

    /// Marks a request active on an endpoint, for LEAST_REQUEST, the one policy that
    /// reads the count (other policies leave the shared counter alone: with several
    /// worker threads, each write moves its cache line between CPUs).
    pub(crate) fn start(&self, cluster: &Cluster, addr: SocketAddr) -> Option<ActiveRequest<'_>> {
        if cluster.policy.lb != LbPolicy::LeastRequest {
            return None;
        }
        let s = self.endpoints.get(&addr)?;
        s.active.fetch_add(1, Ordering::Relaxed);
        Some(ActiveRequest(s))
    }

    /// Records a try's result for outlier detection: `status` is the upstream's answer,
    /// `None` a connection failure or reset (both count as 5xx and gateway errors, as
    /// Envoy counts local-origin failures when they are not split out).
    pub(crate) fn record(
        &self,
        policy: &OutlierPolicy,
        addr: SocketAddr,
        status: Option<u16>,
        clock: &Clock,
    ) {
        let Some(ep) = self.endpoints.get(&addr) else {
            return;
        };
        let is_5xx = status.is_none_or(|s| s >= 500);
        let is_gateway = status.is_none_or(|s| matches!(s, 502..=504));
        if !is_5xx {
            // Written only when not zero already: the common case reads the shared
            // cache line and leaves it clean.
            for count in [&ep.consecutive_5xx, &ep.consecutive_gateway] {
                if count.load(Ordering::Relaxed) != 0 {
                    count.store(0, Ordering::Relaxed);
                }
            }
            return;
        }
        let c5 = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let cg = if is_gateway {
            ep.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let trip = (policy.consecutive_5xx > 0 && c5 >= policy.consecutive_5xx)
            || (policy.consecutive_gateway > 0 && cg >= policy.consecutive_gateway);
        if !trip {
            return;
        }
        let now = clock.now_ms();
        let ejected = self
            .endpoints
            .values()
            .filter(|s| s.ejected_until_ms.load(Ordering::Relaxed) > now)
            .count();
        // Envoy ejects at least one host whatever maxEjectionPercent says.
        let allowed = (self.endpoints.len() * policy.max_ejection_percent as usize / 100).max(1);
        if ejected >= allowed {
            return;
        }
        let times = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let duration = policy.base_ejection.as_millis() as u64 * u64::from(times);
        ep.ejected_until_ms.store(now + duration, Ordering::Relaxed);
        ep.consecutive_5xx.store(0, Ordering::Relaxed);
        ep.consecutive_gateway.store(0, Ordering::Relaxed);
    }
}

/// Milliseconds since the proxy started: the time base for ejections.
#[derive(Debug)]
pub(crate) struct Clock(Instant);

impl Clock {
    /// Starts the clock.
    pub(crate) fn new() -> Clock {
        Clock(Instant::now())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn mix(h: u64, addr: &SocketAddr) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    h.hash(&mut hasher);
    addr.hash(&mut hasher);
    hasher.finish()
}

/// A stable hash of a consistent-hash key.
pub(crate) fn hash_key(value: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}
