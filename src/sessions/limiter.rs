//! A per-key fixed-window limiter (per replica): refreshes per session and
//! silent logins per WeChat identity. Memory is bounded: past windows are
//! dropped when the map grows, and beyond its cap new keys pass untracked.

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 100_000;

/// Allows `limit` events per key per minute; a limit of 0 allows everything.
pub struct KeyedLimiter {
    limit: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl KeyedLimiter {
    pub fn per_minute(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one event for `key`; false when over the limit.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        if self.limit == 0 {
            return true;
        }
        let mut map = self.windows.lock();
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, (start, _)| now.saturating_duration_since(*start) < WINDOW);
            if map.len() >= MAX_KEYS {
                return true;
            }
        }
        let entry = map.entry(key.to_owned()).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_gets_its_limit_per_window() {
        let l = KeyedLimiter::per_minute(3);
        let t0 = Instant::now();
        assert_eq!((0..5).filter(|_| l.allow_at("a", t0)).count(), 3);
        assert!(l.allow_at("b", t0));
        assert!(l.allow_at("a", t0 + WINDOW));
        assert!((0..100).all(|_| KeyedLimiter::per_minute(0).allow_at("a", t0)));
    }
}
