//! Per-client-IP token buckets. IPv6 clients are grouped by /64 (one
//! subscriber usually owns a whole /64). Memory is bounded: buckets that have
//! refilled are equivalent to absent ones and are swept away, and past
//! [`MAX_BUCKETS`] live buckets new clients are let through untracked (the
//! backend has its own protections; locking out new users would be worse).

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    time::{Duration, Instant},
};

/// Most client buckets kept at once (~50 bytes each).
pub const MAX_BUCKETS: usize = 100_000;
/// How often full (idle) buckets are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

struct Bucket {
    tokens: f64,
    updated: Instant,
}

struct Buckets {
    map: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

/// A token bucket per client: `per_sec` sustained, `burst` at once.
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_buckets: usize,
    buckets: Mutex<Buckets>,
}

impl RateLimiter {
    /// `None` when `per_sec` is 0 (limiting disabled). A burst below 1 is raised to 1.
    pub fn new(per_sec: u32, burst: u32) -> Option<Self> {
        Self::with_capacity(per_sec, burst, MAX_BUCKETS)
    }

    fn with_capacity(per_sec: u32, burst: u32, max_buckets: usize) -> Option<Self> {
        (per_sec > 0).then(|| Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            max_buckets,
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        })
    }

    /// Takes a token for `ip`; `Err(wait)` says how long until one is available.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.check_at(ip, Instant::now())
    }

    fn check_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = bucket_key(ip);
        // A poisoned lock only means another request panicked mid-update: the map is still usable.
        let mut buckets = self.buckets.lock();
        let full = buckets.map.len() >= self.max_buckets;
        if full || now.saturating_duration_since(buckets.last_sweep) >= SWEEP_EVERY {
            self.sweep(&mut buckets, now);
        }
        if !buckets.map.contains_key(&key) && buckets.map.len() >= self.max_buckets {
            metrics::counter!("mp_auth_http_rate_limiter_untracked_total").increment(1);
            return Ok(());
        }
        let bucket = buckets.map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_sec).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_sec,
            ))
        }
    }

    /// Drops buckets that have refilled: forgetting them changes nothing.
    fn sweep(&self, buckets: &mut Buckets, now: Instant) {
        let (per_sec, burst) = (self.per_sec, self.burst);
        buckets.map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_sec < burst
        });
        buckets.last_sweep = now;
    }

    /// Number of tracked clients.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().map.len()
    }
}

/// IPv4 addresses are keyed as they are; IPv6 by their /64.
fn bucket_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn zero_rate_disables_limiting() {
        assert!(RateLimiter::new(0, 10).is_none());
    }

    #[test]
    fn a_burst_is_allowed_then_the_client_waits_for_a_refill() {
        let limiter = RateLimiter::new(2, 3).unwrap();
        let t0 = Instant::now();
        let client = ip("198.51.100.1");
        for _ in 0..3 {
            assert!(limiter.check_at(client, t0).is_ok());
        }
        let wait = limiter.check_at(client, t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Half a second at 2/s refills one token.
        assert!(
            limiter
                .check_at(client, t0 + Duration::from_millis(500))
                .is_ok()
        );
        assert!(
            limiter
                .check_at(client, t0 + Duration::from_millis(500))
                .is_err()
        );
    }

    #[test]
    fn clients_have_separate_buckets() {
        let limiter = RateLimiter::new(1, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check_at(ip("198.51.100.1"), t0).is_ok());
        assert!(limiter.check_at(ip("198.51.100.1"), t0).is_err());
        assert!(limiter.check_at(ip("198.51.100.2"), t0).is_ok());
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_slash_64() {
        let limiter = RateLimiter::new(1, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check_at(ip("2001:db8:1:2::1"), t0).is_ok());
        assert!(limiter.check_at(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert!(limiter.check_at(ip("2001:db8:1:3::1"), t0).is_ok());
    }

    #[test]
    fn refilled_buckets_are_swept_away() {
        let limiter = RateLimiter::new(10, 5).unwrap();
        let t0 = Instant::now();
        for i in 0..100u8 {
            limiter.check_at(IpAddr::from([10, 0, 0, i]), t0).unwrap();
        }
        assert_eq!(limiter.tracked(), 100);
        // Long after, every bucket is full again: the next check sweeps them.
        limiter
            .check_at(ip("10.0.1.1"), t0 + SWEEP_EVERY + Duration::from_secs(1))
            .unwrap();
        assert_eq!(limiter.tracked(), 1);
    }

    #[test]
    fn memory_stays_bounded_when_every_bucket_is_busy() {
        let limiter = RateLimiter::with_capacity(1, 1, 3).unwrap();
        let t0 = Instant::now();
        for i in 0..3u8 {
            limiter.check_at(IpAddr::from([10, 0, 0, i]), t0).unwrap();
        }
        // Table full of busy buckets: new clients pass untracked.
        for i in 10..20u8 {
            assert!(limiter.check_at(IpAddr::from([10, 0, 0, i]), t0).is_ok());
        }
        assert_eq!(limiter.tracked(), 3);
        // Tracked clients are still limited.
        assert!(limiter.check_at(IpAddr::from([10, 0, 0, 0]), t0).is_err());
    }
}
