//! The pool gauges: read from each pool's own counters ([`PoolStats`]) at scrape time, so
//! that nothing is copied when a pool changes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::pool::PoolStats;

/// Reads a pool's stats while the pool exists (it does not keep the pool alive).
pub type StatsReader = Box<dyn Fn() -> Option<PoolStats> + Send + Sync>;

/// `route`, `backend`, `database` and `user`: a pool of a route's backend logins. Pools
/// that differ in nothing shown here (only in their TLS settings or login `options`) are
/// reported as one, their numbers added.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PoolLabels {
    /// The route's number.
    pub route: String,
    /// The backend's address.
    pub backend: String,
    /// The backend database.
    pub database: String,
    /// The backend user.
    pub user: String,
}

/// Every pool that has been made, as long as it exists.
#[derive(Default, Clone)]
pub(super) struct PoolDirectory {
    pools: Arc<Mutex<Vec<(PoolLabels, StatsReader)>>>,
}

impl std::fmt::Debug for PoolDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolDirectory").finish_non_exhaustive()
    }
}

impl PoolDirectory {
    pub(super) fn track(&self, labels: PoolLabels, stats: StatsReader) {
        self.lock().push((labels, stats));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(PoolLabels, StatsReader)>> {
        self.pools.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stats of every live pool, by labels; pools gone since the last scrape are
    /// forgotten.
    pub(super) fn snapshot(&self) -> BTreeMap<PoolLabels, PoolStats> {
        let mut pools = self.lock();
        let mut live = BTreeMap::new();
        pools.retain(|(labels, read)| match read() {
            Some(stats) => {
                let total: &mut PoolStats = live.entry(labels.clone()).or_default();
                add(total, &stats);
                true
            }
            None => false,
        });
        live
    }
}

/// Adds `more` into `total`.
fn add(total: &mut PoolStats, more: &PoolStats) {
    total.size += more.size;
    total.open += more.open;
    total.idle += more.idle;
    total.in_use += more.in_use;
    total.waiting += more.waiting;
    total.checkouts += more.checkouts;
    total.wait_time += more.wait_time;
    total.timeouts += more.timeouts;
    total.connects += more.connects;
    total.connect_failures += more.connect_failures;
}

/// A metric per pool: its name, help and how it is read from the stats.
type PoolMetric<T> = (&'static str, &'static str, fn(&PoolStats) -> T);

/// The gauges.
const GAUGES: [PoolMetric<usize>; 5] = [
    ("pool_size", "Configured size of the pool", |s| s.size),
    (
        "pool_connections",
        "Backend connections open in the pool (idle, in use, being opened or reset)",
        |s| s.open,
    ),
    (
        "pool_idle_connections",
        "Idle backend connections in the pool",
        |s| s.idle,
    ),
    (
        "pool_active_connections",
        "Backend connections of the pool that are not idle",
        |s| s.in_use,
    ),
    (
        "pool_waiting_clients",
        "Clients waiting now for a backend of the pool",
        |s| s.waiting,
    ),
];

/// The counters.
const COUNTERS: [PoolMetric<u64>; 3] = [
    (
        "pool_checkout_timeouts",
        "Checkouts of the pool that gave up after checkout_timeout",
        |s| s.timeouts,
    ),
    (
        "pool_backend_connects",
        "Backend connections the pool opened (attempts)",
        |s| s.connects,
    ),
    (
        "pool_backend_connect_failures",
        "Backend connections the pool could not open",
        |s| s.connect_failures,
    ),
];

impl Collector for PoolDirectory {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let pools = self.snapshot();
        for (name, help, read) in GAUGES {
            let gauge = ConstGauge::new(0i64);
            let mut metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            for (labels, stats) in &pools {
                let value = i64::try_from(read(stats)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(labels)?)?;
            }
        }
        for (name, help, read) in COUNTERS {
            let counter = ConstCounter::new(0u64);
            let mut metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (labels, stats) in &pools {
                ConstCounter::new(read(stats)).encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
