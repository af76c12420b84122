//! The revocation cache every replica keeps for online token verification:
//! the ids of sessions revoked within the longest access-token lifetime,
//! loaded at start and then polled from the `revoked_at` index every
//! `interval` (with an overlap, since replicas' clocks differ). A check is a
//! hash lookup, never a database round trip; a revocation anywhere reaches
//! every replica within one poll interval plus one query. If polling stops
//! succeeding, the cache says so and verification fails closed.

use crate::store::Store;
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

/// Replicas stamp `revoked_at` with their own clocks: poll this far back.
const CLOCK_OVERLAP_MS: i64 = 5_000;

/// What the cache knows about a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked (logout, reuse, deletion, ...).
    Revoked,
    /// Not revoked as of the last successful poll.
    Live,
    /// The cache has not been refreshed recently enough to tell.
    Unknown,
}

/// Revoked session ids, refreshed in the background.
pub struct RevocationCache {
    revoked: RwLock<HashMap<String, i64>>,
    /// Unix ms of the last successful poll (0: never).
    fresh_at: AtomicI64,
    /// A poll older than this makes answers `Unknown`.
    max_staleness_ms: i64,
}

impl RevocationCache {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            fresh_at: AtomicI64::new(0),
            max_staleness_ms: max_staleness.as_millis() as i64,
        }
    }

    /// Whether session `sid` is revoked, as of the last poll.
    pub fn check(&self, sid: &str, now_ms: i64) -> Revocation {
        let fresh_at = self.fresh_at.load(Ordering::Acquire);
        if fresh_at == 0 || now_ms - fresh_at > self.max_staleness_ms {
            return Revocation::Unknown;
        }
        let map = self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.contains_key(sid) {
            Revocation::Revoked
        } else {
            Revocation::Live
        }
    }

    /// One poll: loads revocations since `since_ms`, drops those older than
    /// `window_start_ms`; returns the newest `revoked_at` seen.
    pub async fn poll(
        &self,
        store: &Store,
        since_ms: i64,
        window_start_ms: i64,
        now_ms: i64,
    ) -> Result<i64, crate::store::StoreError> {
        let rows = store.sessions_revoked_since(since_ms).await?;
        let newest = rows
            .iter()
            .map(|r| r.revoked_at_ms)
            .max()
            .unwrap_or(since_ms);
        {
            let mut map = self
                .revoked
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for row in rows {
                map.insert(row.sid, row.revoked_at_ms);
            }
            map.retain(|_, at| *at >= window_start_ms);
        }
        self.fresh_at.store(now_ms, Ordering::Release);
        Ok(newest)
    }

    /// Polls forever: first everything revoked within `window` (the longest
    /// access-token lifetime plus leeway), then increments every `interval`.
    pub async fn run(self: Arc<Self>, store: Store, interval: Duration, window: Duration) {
        let window_ms = window.as_millis() as i64;
        let mut since = super::now_ms() - window_ms;
        loop {
            let now = super::now_ms();
            match self.poll(&store, since, now - window_ms, now).await {
                Ok(newest) => {
                    since = newest.max(now - CLOCK_OVERLAP_MS) - CLOCK_OVERLAP_MS;
                    metrics::gauge!("mp_auth_revocation_cache_sessions").set(self.len() as f64);
                }
                Err(e) => tracing::warn!(error = %e, "revocation poll failed; retrying"),
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Revoked sessions held.
    pub fn len(&self) -> usize {
        self.revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unpolled_or_stale_cache_cannot_tell() {
        let c = RevocationCache::new(Duration::from_secs(5));
        assert_eq!(c.check("s", 1_000), Revocation::Unknown);
        c.fresh_at.store(1_000, Ordering::Release);
        assert_eq!(c.check("s", 2_000), Revocation::Live);
        assert_eq!(c.check("s", 7_001), Revocation::Unknown);
        c.revoked.write().unwrap().insert("s".into(), 900);
        assert_eq!(c.check("s", 2_000), Revocation::Revoked);
    }
}
