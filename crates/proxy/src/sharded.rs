//! A counter and a histogram whose values are kept per thread ("shards") and added up
//! when they are scraped, for the metrics the request path records. Worker threads
//! recording requests at the same time never write the same cache line, and recording
//! takes no lock: prometheus-client's `Histogram` takes a write lock on every
//! observation and its `Counter` is one atomic shared by all threads, so with two
//! workers each request moved the same cache lines back and forth between the CPUs.
//! Both types encode exactly as prometheus-client's own (its encoder writes them).
//!
//! Also here, for the same reason: [`ShardedRandom`], the proxy's pseudo-random
//! numbers, and [`CopyOnWriteMap`], a map the request path reads without a lock.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustc_hash::FxBuildHasher;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Shards per metric. More recording threads than this share shards, which stays
/// correct (every write is an atomic add), only slower.
const SHARDS: usize = 8;

/// The most buckets a histogram may have, the `+Inf` bucket included (Istio's
/// duration buckets are 19 bounds plus `+Inf`).
pub(crate) const MAX_BUCKETS: usize = 20;

/// A value on cache lines of its own (128 bytes: x86-64 fetches lines in pairs).
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard, given out in turn to threads as they first record.
    static SHARD: usize = NEXT_SHARD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

fn shard() -> usize {
    SHARD.with(|s| *s)
}

/// A monotonic counter (Prometheus `counter`); clones share the value.
#[derive(Clone, Default)]
pub(crate) struct ShardedCounter {
    shards: Arc<[Padded<AtomicU64>; SHARDS]>,
}

impl std::fmt::Debug for ShardedCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ShardedCounter").field(&self.get()).finish()
    }
}

impl ShardedCounter {
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.inc_by(1);
    }

    /// Adds `v`.
    pub(crate) fn inc_by(&self, v: u64) {
        self.shards[shard()].0.fetch_add(v, Ordering::Relaxed);
    }

    /// The total over all threads.
    pub(crate) fn get(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One thread's share of a histogram: observations per bucket (not cumulative), their
/// count and their sum (an `f64`'s bits).
#[derive(Default)]
struct HistogramShard {
    count: AtomicU64,
    sum: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS],
}

/// A histogram (Prometheus `histogram`) with fixed bucket bounds; clones share the
/// values.
#[derive(Clone)]
pub(crate) struct ShardedHistogram {
    inner: Arc<HistogramInner>,
}

struct HistogramInner {
    /// The upper bounds, ascending, the last one `f64::MAX` (`+Inf`, as
    /// prometheus-client writes it).
    bounds: Box<[f64]>,
    shards: [Padded<HistogramShard>; SHARDS],
}

impl std::fmt::Debug for ShardedHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (sum, count, _) = self.get();
        f.debug_struct("ShardedHistogram")
            .field("sum", &sum)
            .field("count", &count)
            .finish()
    }
}

impl ShardedHistogram {
    /// A histogram with these upper bounds (ascending) and `+Inf`. Bounds beyond
    /// [`MAX_BUCKETS`]` - 1` are dropped (their observations count in `+Inf`).
    pub(crate) fn new(bounds: impl IntoIterator<Item = f64>) -> ShardedHistogram {
        let bounds = bounds
            .into_iter()
            .take(MAX_BUCKETS - 1)
            .chain(std::iter::once(f64::MAX))
            .collect();
        ShardedHistogram {
            inner: Arc::new(HistogramInner {
                bounds,
                shards: std::array::from_fn(|_| Padded::default()),
            }),
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, v: f64) {
        let inner = &*self.inner;
        let shard = &inner.shards[shard()].0;
        // As prometheus-client: the first bucket whose bound is at least `v`; NaN
        // counts in none.
        if let Some(i) = inner.bounds.iter().position(|b| *b >= v) {
            shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        shard.count.fetch_add(1, Ordering::Relaxed);
        // Mostly one writer per shard: the exchange succeeds the first time.
        let _ = shard
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    /// Sum, count and per-bucket counts (bound, observations), over all threads.
    pub(crate) fn get(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &*self.inner;
        let mut sum = 0.0;
        let mut count = 0u64;
        let mut buckets: Vec<(f64, u64)> = inner.bounds.iter().map(|b| (*b, 0)).collect();
        for shard in &inner.shards {
            let shard = &shard.0;
            sum += f64::from_bits(shard.sum.load(Ordering::Relaxed));
            count = count.wrapping_add(shard.count.load(Ordering::Relaxed));
            for (total, cell) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 = total.1.wrapping_add(cell.load(Ordering::Relaxed));
            }
        }
        (sum, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.get();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Pseudo-random numbers, one sequence per shard (splitmix64 over a counter): no
/// cache line shared between worker threads, and reproducible from the seed for the
/// requests of one thread (as tests run them).
pub(crate) struct ShardedRandom {
    states: [Padded<AtomicU64>; SHARDS],
}

impl ShardedRandom {
    /// Sequences that start from `seed` (each shard's from its own mix of it).
    pub(crate) fn new(seed: u64) -> ShardedRandom {
        ShardedRandom {
            states: std::array::from_fn(|i| {
                // Shard 0 starts at the seed itself; the others far away from it.
                let start = if i == 0 {
                    seed
                } else {
                    splitmix64(seed.wrapping_add(i as u64))
                };
                Padded(AtomicU64::new(start))
            }),
        }
    }

    /// The next number of the calling thread's sequence.
    pub(crate) fn next(&self) -> u64 {
        const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;
        let z = self.states[shard()]
            .0
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        splitmix64(z)
    }
}

/// splitmix64's output function.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A map that the request path reads without a lock (an `arc-swap` load of the current
/// map). Keys added since the map was last rebuilt wait in a side map under a mutex,
/// and are merged into a new current map once they number an eighth of it (at once
/// while it is small): adding n keys copies O(n) entries in all, not O(n²), and a
/// lookup takes the mutex only for a key the current map does not have yet. For maps
/// whose keys are mostly known early (label sets, endpoints).
pub(crate) struct CopyOnWriteMap<K, V> {
    current: ArcSwap<HashMap<K, V, FxBuildHasher>>,
    recent: Mutex<HashMap<K, V, FxBuildHasher>>,
}

/// Below this many keys a new key is merged into the current map at once.
const SMALL_MAP: usize = 64;

impl<K: Hash + Eq + Clone, V: Clone> Default for CopyOnWriteMap<K, V> {
    fn default() -> Self {
        CopyOnWriteMap {
            current: ArcSwap::from_pointee(HashMap::default()),
            recent: Mutex::new(HashMap::default()),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> CopyOnWriteMap<K, V> {
    /// `f` of the value of `key`, if it has one.
    pub(crate) fn with<R>(&self, key: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        if let Some(v) = self.current.load().get(key) {
            return Some(f(v));
        }
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        recent.get(key).map(f)
    }

    /// The value of `key`, made by `make` and added the first time.
    pub(crate) fn get_or_add(&self, key: &K, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.current.load().get(key) {
            return v.clone();
        }
        self.add(key, make)
    }

    #[cold]
    fn add(&self, key: &K, make: impl FnOnce() -> V) -> V {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        if let Some(v) = current.get(key).or_else(|| recent.get(key)) {
            return v.clone();
        }
        let value = make();
        recent.insert(key.clone(), value.clone());
        if current.len() < SMALL_MAP || recent.len() * 8 >= current.len() {
            let mut merged = HashMap::clone(&current);
            merged.extend(recent.drain());
            self.current.store(Arc::new(merged));
        }
        value
    }

    /// Keeps the entries for which `keep` says so and forgets the others; returns how
    /// many were forgotten. Readers go on without a lock (a lookup that loaded the map
    /// before may still get a forgotten value). For occasional clean-ups, not for the
    /// request path: it copies the whole map.
    #[cold]
    pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) -> usize {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.current.load_full();
        let before = current.len() + recent.len();
        let merging = !recent.is_empty();
        let mut kept: HashMap<K, V, FxBuildHasher> = current
            .iter()
            .filter(|(k, v)| keep(k, v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kept.extend(recent.drain().filter(|(k, v)| keep(k, v)));
        let forgotten = before - kept.len();
        if forgotten > 0 || merging {
            self.current.store(Arc::new(kept));
        }
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, registry).expect("encode");
        out
    }

    /// Observations from several threads (so several shards) add up, and the text is
    /// byte for byte what prometheus-client's own counter and histogram write for the
    /// same observations.
    #[test]
    fn sharded_metrics_encode_as_prometheus_clients_own() {
        let bounds = [0.5, 1.0, 5.0, 10.0, 25.0];
        let values = [0.2, 0.5, 0.7, 3.0, 9.5, 10.0, 24.0, 30.0, 1e9, 2.25];
        let ours = ShardedHistogram::new(bounds);
        let our_counter = ShardedCounter::default();
        let theirs = Histogram::new(bounds);
        let their_counter = Counter::<u64>::default();
        std::thread::scope(|s| {
            for chunk in values.chunks(3) {
                let (ours, our_counter) = (ours.clone(), our_counter.clone());
                s.spawn(move || {
                    for v in chunk {
                        ours.observe(*v);
                        our_counter.inc_by(2);
                    }
                });
            }
        });
        for v in values {
            theirs.observe(v);
            their_counter.inc_by(2);
        }
        let mut a = Registry::default();
        a.register("h", "a histogram", ours.clone());
        a.register("c", "a counter", our_counter);
        let mut b = Registry::default();
        b.register("h", "a histogram", theirs);
        b.register("c", "a counter", their_counter);
        assert_eq!(text(&a), text(&b));
        assert!(text(&a).contains("h_count 10\n"), "{}", text(&a));
        assert!(text(&a).contains("c_total 20\n"), "{}", text(&a));
        let (_, count, buckets) = ours.get();
        assert_eq!(count, 10);
        assert_eq!(buckets.last(), Some(&(f64::MAX, 2)));
    }

    /// One thread's numbers are the same for the same seed (splitmix64's own sequence
    /// on shard 0), and other shards' sequences differ from it.
    #[test]
    fn random_sequences_are_reproducible_per_seed() {
        let a = ShardedRandom::new(7);
        let b = ShardedRandom::new(7);
        let first: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let again: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(first, again);
        let other = ShardedRandom::new(8);
        assert_ne!(first[0], other.next());
        let shard0 = a.states[0].0.load(Ordering::Relaxed);
        let shard1 = a.states[1].0.load(Ordering::Relaxed);
        assert_ne!(shard0, shard1);
    }

    /// A key is made once; later reads see it, and other keys are kept.
    #[test]
    fn copy_on_write_map_adds_each_key_once() {
        let map: CopyOnWriteMap<u32, Arc<String>> = CopyOnWriteMap::default();
        let made = AtomicUsize::new(0);
        let make = |s: &str| {
            made.fetch_add(1, Ordering::Relaxed);
            Arc::new(s.to_string())
        };
        let a = map.get_or_add(&1, || make("one"));
        let again = map.get_or_add(&1, || make("uno"));
        assert!(Arc::ptr_eq(&a, &again));
        map.get_or_add(&2, || make("two"));
        assert_eq!(made.load(Ordering::Relaxed), 2);
        assert_eq!(map.with(&1, |v| v.len()), Some(3));
        assert_eq!(map.with(&2, |v| v.to_string()), Some("two".to_string()));
        assert_eq!(map.with(&3, |v| v.len()), None);
    }

    /// `retain` forgets what it is told to, wherever the entry waits (merged or in the
    /// side map), and keeps the rest findable.
    #[test]
    fn copy_on_write_map_forgets_what_retain_rejects() {
        let map: CopyOnWriteMap<u32, u32> = CopyOnWriteMap::default();
        // Past SMALL_MAP, so that the last keys wait in the side map.
        for k in 0..100u32 {
            map.get_or_add(&k, || k);
        }
        assert!(!map.recent.lock().expect("lock").is_empty());
        assert_eq!(map.retain(|k, _| k % 2 == 0), 50);
        for k in 0..100u32 {
            let expected = (k % 2 == 0).then_some(k);
            assert_eq!(map.with(&k, |v| *v), expected, "key {k}");
        }
        assert_eq!(map.retain(|_, _| true), 0);
        // A forgotten key is made again when asked for.
        assert_eq!(map.get_or_add(&1, || 11), 11);
    }

    /// Many keys: each is found as soon as it is added (in the side map until a merge),
    /// made once, and the current map is rebuilt a bounded number of times.
    #[test]
    fn copy_on_write_map_merges_added_keys_in_batches() {
        let map: CopyOnWriteMap<u32, u32> = CopyOnWriteMap::default();
        let mut rebuilds = 0;
        let mut last = Arc::as_ptr(&map.current.load_full());
        for k in 0..5000u32 {
            assert_eq!(map.get_or_add(&k, || k * 2), k * 2);
            assert_eq!(map.with(&k, |v| *v), Some(k * 2), "key {k} just added");
            assert_eq!(map.get_or_add(&k, || 0), k * 2, "key {k} made twice");
            let now = Arc::as_ptr(&map.current.load_full());
            if now != last {
                rebuilds += 1;
                last = now;
            }
        }
        for k in 0..5000u32 {
            assert_eq!(map.with(&k, |v| *v), Some(k * 2));
        }
        // 64 small-map merges, then one per eighth of growth: about 64 + 8 ln(5000/64).
        assert!(rebuilds < 110, "{rebuilds} rebuilds for 5000 keys");
    }

    /// More bounds than a shard has room for: the extra ones are dropped and their
    /// observations land in `+Inf`.
    #[test]
    fn bounds_beyond_the_limit_count_in_inf() {
        let h = ShardedHistogram::new((1..=30).map(f64::from));
        h.observe(25.0);
        let (_, count, buckets) = h.get();
        assert_eq!(buckets.len(), MAX_BUCKETS);
        assert_eq!(count, 1);
        assert_eq!(buckets.last(), Some(&(f64::MAX, 1)));
    }
}
