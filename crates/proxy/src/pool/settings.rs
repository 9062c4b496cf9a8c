//! [`PoolSettings`]: the size and lifecycle of one pool.

use std::time::Duration;

/// The size and lifecycle of one pool. [`Default`] gives the documented defaults of a
/// route's `pool = { … }` (docs/configuration.md, "Pooling").
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSettings {
    /// The most connections open at once (idle, leased, connecting or being reset); at least 1.
    pub size: usize,
    /// Idle connections kept open even with no client (at most `size`).
    pub min_idle: usize,
    /// Idle connections older than this (± [`PoolSettings::lifetime_jitter`]) are closed and
    /// replaced; `None`: never. A leased connection is never retired.
    pub max_lifetime: Option<Duration>,
    /// Each connection's lifetime is `max_lifetime` times a factor drawn uniformly from
    /// `1 ± lifetime_jitter` (0 to 0.9), so that a cohort opened together does not retire
    /// together.
    pub lifetime_jitter: f64,
    /// Idle connections unused for this long are closed, down to `min_idle`; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long a checkout may wait for a free slot (and for the backend-wide caps) before it
    /// fails with [`super::PoolError::Timeout`]. Opening the connection itself is bounded by
    /// the manager (the route's `connect_timeout`).
    pub checkout_timeout: Duration,
    /// An idle connection unused for this long is checked ([`super::Manager::check`]) before
    /// it is handed out; so is every one that was idle when a connection failed.
    pub health_check_after: Duration,
    /// How often the pool retires, closes and opens idle connections.
    pub maintenance_interval: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            size: 20,
            min_idle: 0,
            max_lifetime: Some(Duration::from_secs(3600)),
            lifetime_jitter: 0.2,
            idle_timeout: Some(Duration::from_secs(600)),
            checkout_timeout: Duration::from_secs(10),
            health_check_after: Duration::from_secs(30),
            maintenance_interval: Duration::from_secs(1),
        }
    }
}

impl PoolSettings {
    /// The same settings made consistent: size at least 1, min_idle at most size, jitter in
    /// 0..=0.9, a maintenance interval of at least 10 ms. Configuration refuses values out of
    /// range; this keeps a library caller's mistake from panicking or spinning.
    pub(super) fn clamped(mut self) -> Self {
        self.size = self.size.max(1);
        self.min_idle = self.min_idle.min(self.size);
        self.lifetime_jitter = self.lifetime_jitter.clamp(0.0, 0.9);
        self.maintenance_interval = self.maintenance_interval.max(Duration::from_millis(10));
        self
    }

    /// One connection's lifetime: `max_lifetime` with its jitter drawn.
    pub(super) fn draw_lifetime(&self) -> Option<Duration> {
        use rand::Rng;

        let jitter = self.lifetime_jitter;
        let factor = 1.0 + rand::thread_rng().gen_range(-jitter..=jitter);
        self.max_lifetime.map(|lifetime| lifetime.mul_f64(factor))
    }
}
