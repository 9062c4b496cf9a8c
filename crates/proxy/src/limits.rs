//! Connection limits: how many at once (in total and per client address), how fast per
//! client address, and refusals logged once per burst rather than once per attempt.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::settings::Limits;
use crate::warn_limit::WarnLimiter;

/// A token bucket: `rate` tokens per second, bursts up to `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate),
            updated: now,
        }
    }

    fn take(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-address rate limiting (used for connections and for cancel requests).
#[derive(Debug)]
pub struct RateLimiter {
    rate: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `rate` events per second per address; 0 means unlimited.
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `ip` may have one more event now.
    pub fn allow(&self, ip: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return false;
        };
        if buckets.len() > 100_000 {
            // Forget full buckets so that a scan of many addresses cannot grow the map forever.
            let rate = self.rate;
            buckets.retain(|_, b| {
                let mut copy = *b;
                copy.take(rate, now);
                copy.tokens < f64::from(rate) - 1.0
            });
        }
        buckets
            .entry(ip)
            .or_insert_with(|| Bucket::new(self.rate, now))
            .take(self.rate, now)
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The listener's `max_connections`.
    Total(usize),
    /// `max_connections_per_ip`.
    PerIp(usize),
    /// `connection_rate_per_ip`.
    Rate(u32),
}

impl Refusal {
    /// The message the client gets (SQLSTATE 53300).
    pub fn message(self) -> String {
        match self {
            Self::Total(n) => format!("sorry, too many clients already (pgbastion allows {n})"),
            Self::PerIp(n) => {
                format!("too many connections from your address (at most {n} at once)")
            }
            Self::Rate(n) => {
                format!("too many new connections from your address (at most {n} per second)")
            }
        }
    }
}

/// Counts connections of one listener.
#[derive(Debug)]
pub struct ConnectionLimiter {
    limits: Limits,
    rate: RateLimiter,
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
    warnings: WarnLimiter<Refusal>,
}

/// Held while a connection is open; releases its slot when dropped.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<ConnectionLimiter>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.limiter.counts.lock() {
            counts.0 = counts.0.saturating_sub(1);
            if let Some(n) = counts.1.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    counts.1.remove(&self.ip);
                }
            }
        }
    }
}

impl ConnectionLimiter {
    /// A limiter for `limits`.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            rate: RateLimiter::new(limits.connection_rate_per_ip),
            counts: Mutex::new((0, HashMap::new())),
            warnings: WarnLimiter::default(),
        })
    }

    /// Admits a connection from `ip`, or says why not (and logs the refusal, once per burst).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let result = self.try_admit(ip);
        if let Err(refusal) = result {
            if let Some(suppressed) = self.warnings.admit(refusal) {
                tracing::warn!(client = %ip, suppressed, "connection refused: {}", refusal.message());
            }
        }
        result
    }

    fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        if !self.rate.allow(ip) {
            return Err(Refusal::Rate(self.limits.connection_rate_per_ip));
        }
        let mut counts = self.counts.lock().map_err(|_| Refusal::Total(0))?;
        if counts.0 >= self.limits.max_connections {
            return Err(Refusal::Total(self.limits.max_connections));
        }
        let per_ip = counts.1.get(&ip).copied().unwrap_or(0);
        if self.limits.max_connections_per_ip > 0 && per_ip >= self.limits.max_connections_per_ip {
            return Err(Refusal::PerIp(self.limits.max_connections_per_ip));
        }
        counts.0 += 1;
        counts.1.insert(ip, per_ip + 1);
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().map_or(0, |c| c.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_ip: usize, rate: u32) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_ip: per_ip,
            connection_rate_per_ip: rate,
            cancel_rate_per_ip: 10,
        }
    }

    #[test]
    fn counts_per_ip_and_in_total_and_releases_on_drop() {
        let limiter = ConnectionLimiter::new(limits(3, 2, 0));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let p1 = limiter.admit(a).unwrap();
        let _p2 = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(a).unwrap_err(), Refusal::PerIp(2));
        let _p3 = limiter.admit(b).unwrap();
        assert_eq!(limiter.admit(b).unwrap_err(), Refusal::Total(3));
        drop(p1);
        assert_eq!(limiter.open(), 2);
        let _p4 = limiter.admit(a).unwrap();
    }

    #[test]
    fn rate_allows_a_burst_then_refuses() {
        let limiter = RateLimiter::new(5);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let allowed = (0..20).filter(|_| limiter.allow(ip)).count();
        assert_eq!(allowed, 5);
        assert!(limiter.allow("10.0.0.2".parse().unwrap()));
        assert!(RateLimiter::new(0).allow(ip));
    }
}
