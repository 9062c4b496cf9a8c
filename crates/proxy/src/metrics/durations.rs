//! [`Durations`]: the duration histogram that sessions on every worker record into without a
//! shared lock.
//!
//! prometheus-client's `Histogram` keeps its counts behind one `RwLock`, taken for writing at
//! each observation: every query and transaction of a route, from every worker thread, would
//! take the same lock (and move its cache line between the threads) twice per query. Here each
//! worker thread counts into a shard of its own (plain relaxed atomic adds on a cache line no
//! other worker writes), and the shards are added up when the metrics are read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Upper bounds (seconds) of the buckets: from a fast point query on a local network to a
/// statement that runs for half a minute; one more bucket (`+Inf`) counts the rest.
pub const BOUNDS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How many shards a histogram has: worker `i` writes shard `i % SHARDS`.
const SHARDS: usize = 4;

/// One worker's counts, alone on its cache lines.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Shard {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    count: AtomicU64,
    nanos: AtomicU64,
}

/// A histogram of durations with the [`BOUNDS`] buckets. Cheap to clone: clones share the
/// counts.
#[derive(Debug, Clone, Default)]
pub struct Durations {
    shards: Arc<[Shard; SHARDS]>,
}

impl Durations {
    /// Counts one duration.
    pub fn observe(&self, took: Duration) {
        let worker = crate::workers::index();
        let shard = &self.shards[worker % SHARDS];
        let seconds = took.as_secs_f64();
        let bucket = BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(BOUNDS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        shard.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and each bucket's own count (not cumulative), summed
    /// over the shards.
    fn totals(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut nanos = 0u64;
        let mut count = 0;
        let mut buckets: Vec<(f64, u64)> = BOUNDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .map(|bound| (bound, 0))
            .collect();
        for shard in self.shards.iter() {
            nanos = nanos.wrapping_add(shard.nanos.load(Ordering::Relaxed));
            count += shard.count.load(Ordering::Relaxed);
            for (total, bucket) in buckets.iter_mut().zip(&shard.buckets) {
                total.1 += bucket.load(Ordering::Relaxed);
            }
        }
        (nanos as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.totals();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    #[test]
    fn counts_from_every_worker_are_added_up_as_a_prometheus_histogram() {
        let durations = Durations::default();
        durations.observe(Duration::from_micros(300));
        let workers = crate::workers::Workers::start(3).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..6 {
            let (durations, done) = (durations.clone(), done.clone());
            workers.spawn(move || async move {
                durations.observe(Duration::from_millis(20));
                durations.observe(Duration::from_secs(60));
                done.send(()).unwrap();
            });
        }
        for _ in 0..6 {
            finished
                .recv_timeout(Duration::from_secs(10))
                .expect("every worker observed");
        }
        let mut registry = Registry::default();
        registry.register("d", "durations", durations.clone());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {text}"))
                .trim()
                .to_owned()
        };
        assert!(text.contains("# TYPE d histogram"), "{text}");
        assert_eq!(line("d_count "), "13");
        assert_eq!(line("d_bucket{le=\"0.0005\"} "), "1");
        assert_eq!(line("d_bucket{le=\"0.025\"} "), "7", "cumulative");
        assert_eq!(line("d_bucket{le=\"30.0\"} "), "7");
        assert_eq!(line("d_bucket{le=\"+Inf\"} "), "13");
        let sum: f64 = line("d_sum ").parse().unwrap();
        assert!((sum - (0.0003 + 6.0 * 60.02)).abs() < 1e-9, "{sum}");
    }
}
