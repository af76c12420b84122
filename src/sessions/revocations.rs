//! The revocation cache every replica keeps for online token verification:
//! the ids of sessions revoked within the longest access-token lifetime,
//! loaded at start and then polled from the `revoked_at` index every
//! `interval` (with an overlap, since replicas' clocks and commit times
//! differ). A check is a hash lookup, never a database round trip; a
//! revocation anywhere reaches every replica within one poll interval plus
//! one query. If polling stops succeeding, the cache says so and verification
//! fails closed.

use crate::store::{RevokedSession, Store, StoreError};
use parking_lot::RwLock;
use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

/// Replicas stamp `revoked_at` with their own clocks, and a revocation
/// stamped at `t` may commit a little after `t`: poll this far back.
pub const CLOCK_OVERLAP_MS: i64 = 5_000;

/// Where revocations come from: the store's feed (`revoked_at >= since`). A
/// trait so that the cache's logic is tested without a database.
pub trait RevocationFeed: Send + Sync + 'static {
    /// Sessions revoked at or after `since_ms`.
    fn revoked_since(
        &self,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<RevokedSession>, StoreError>> + Send;
}

impl RevocationFeed for Store {
    fn revoked_since(
        &self,
        since_ms: i64,
    ) -> impl Future<Output = Result<Vec<RevokedSession>, StoreError>> + Send {
        self.sessions_revoked_since(since_ms)
    }
}

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
    /// Unix ms at which the last successful poll started (0: never).
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
        let map = self.revoked.read();
        if map.contains_key(sid) {
            Revocation::Revoked
        } else {
            Revocation::Live
        }
    }

    /// One poll started at `now_ms`: loads revocations since `since_ms`,
    /// drops those older than `window_start_ms`; returns the newest
    /// `revoked_at` seen (`since_ms` if none). Everything committed before
    /// `now_ms` is known once this returns.
    pub async fn poll<F: RevocationFeed>(
        &self,
        feed: &F,
        since_ms: i64,
        window_start_ms: i64,
        now_ms: i64,
    ) -> Result<i64, StoreError> {
        let rows = feed.revoked_since(since_ms).await?;
        let newest = rows
            .iter()
            .map(|r| r.revoked_at_ms)
            .max()
            .unwrap_or(since_ms);
        let fresh = {
            // Most polls only re-read the overlap: take the write lock only for news.
            let map = self.revoked.read();
            rows.into_iter()
                .filter(|r| !map.contains_key(&r.sid))
                .collect::<Vec<_>>()
        };
        let needs_pruning = self.oldest_held() < window_start_ms;
        if !fresh.is_empty() || needs_pruning {
            let mut map = self.revoked.write();
            for row in fresh {
                map.insert(row.sid, row.revoked_at_ms);
            }
            if needs_pruning {
                map.retain(|_, at| *at >= window_start_ms);
            }
        }
        self.fresh_at.fetch_max(now_ms, Ordering::AcqRel);
        Ok(newest)
    }

    fn oldest_held(&self) -> i64 {
        self.revoked
            .read()
            .values()
            .min()
            .copied()
            .unwrap_or(i64::MAX)
    }

    /// Polls forever: first everything revoked within `window` (the longest
    /// access-token lifetime plus leeway), then increments every `interval`.
    pub async fn run<F: RevocationFeed>(
        self: Arc<Self>,
        feed: F,
        interval: Duration,
        window: Duration,
    ) {
        let window_ms = window.as_millis() as i64;
        let mut since = crate::clock::now_ms() - window_ms;
        loop {
            let now = crate::clock::now_ms();
            match self.poll(&feed, since, now - window_ms, now).await {
                Ok(newest) => {
                    since = next_since(newest, now);
                    metrics::gauge!("mp_auth_revocation_cache_sessions").set(self.len() as f64);
                }
                Err(e) => {
                    metrics::counter!("mp_auth_revocation_poll_failures_total").increment(1);
                    tracing::warn!(error = %e, "revocation poll failed; retrying");
                }
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Whether the cache can answer at `now_ms` (a successful poll recently enough):
    /// a replica is not ready for `VerifyToken` before its first poll.
    pub fn is_fresh(&self, now_ms: i64) -> bool {
        let fresh_at = self.fresh_at.load(Ordering::Acquire);
        fresh_at != 0 && now_ms - fresh_at <= self.max_staleness_ms
    }

    /// Revoked sessions held.
    pub fn len(&self) -> usize {
        self.revoked.read().len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the poll after one that started at `now_ms` (and saw revocations up
/// to `newest_ms`) starts reading: an overlap before both, so a revocation
/// stamped by a replica whose clock is behind, or committed late, is not missed.
fn next_since(newest_ms: i64, now_ms: i64) -> i64 {
    newest_ms.max(now_ms - CLOCK_OVERLAP_MS) - CLOCK_OVERLAP_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserId;
    use std::sync::Mutex;

    /// A feed over an in-memory table that can be made to fail.
    #[derive(Default)]
    struct Table {
        rows: Mutex<Vec<RevokedSession>>,
        down: std::sync::atomic::AtomicBool,
        reads: AtomicI64,
    }

    impl Table {
        fn revoke(&self, sid: &str, at_ms: i64) {
            self.rows.lock().unwrap().push(RevokedSession {
                sid: sid.into(),
                user_id: UserId(1),
                revoked_at_ms: at_ms,
            });
        }
    }

    impl RevocationFeed for Arc<Table> {
        fn revoked_since(
            &self,
            since_ms: i64,
        ) -> impl Future<Output = Result<Vec<RevokedSession>, StoreError>> + Send {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let result = if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("test: database down".into()))
            } else {
                Ok(self
                    .rows
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|r| r.revoked_at_ms >= since_ms)
                    .cloned()
                    .collect())
            };
            std::future::ready(result)
        }
    }

    #[test]
    fn an_unpolled_or_stale_cache_cannot_tell() {
        let c = RevocationCache::new(Duration::from_secs(5));
        assert_eq!(c.check("s", 1_000), Revocation::Unknown);
        c.fresh_at.store(1_000, Ordering::Release);
        assert_eq!(c.check("s", 2_000), Revocation::Live);
        assert_eq!(c.check("s", 7_001), Revocation::Unknown);
        c.revoked.write().insert("s".into(), 900);
        assert_eq!(c.check("s", 2_000), Revocation::Revoked);
    }

    #[tokio::test]
    async fn the_cache_is_fresh_only_between_a_successful_poll_and_its_staleness_bound() {
        let table = Arc::new(Table::default());
        let c = RevocationCache::new(Duration::from_secs(5));
        assert!(
            !c.is_fresh(1_000),
            "never polled: a replica is not ready yet"
        );
        c.poll(&table, 0, 0, 1_000).await.unwrap();
        assert!(c.is_fresh(1_000));
        assert!(c.is_fresh(6_000));
        assert!(
            !c.is_fresh(6_001),
            "polls failing past the bound: not ready"
        );
    }

    #[tokio::test]
    async fn polls_merge_overlapping_reads_and_drop_what_no_token_outlives() {
        let table = Arc::new(Table::default());
        let c = RevocationCache::new(Duration::from_secs(5));
        table.revoke("old", 1_000);
        table.revoke("a", 50_000);
        let newest = c.poll(&table, 0, 0, 60_000).await.unwrap();
        assert_eq!(newest, 50_000);
        assert_eq!(c.check("a", 60_000), Revocation::Revoked);
        assert_eq!(c.check("old", 60_000), Revocation::Revoked);
        assert_eq!(c.check("b", 60_000), Revocation::Live);
        // The next poll re-reads the overlap: no duplicates, and "b" arrives.
        table.revoke("b", 59_000);
        c.poll(&table, next_since(newest, 60_000), 10_000, 61_000)
            .await
            .unwrap();
        assert_eq!(c.check("b", 61_000), Revocation::Revoked);
        // "old" is older than the window (no token of it can still be valid): dropped.
        assert_eq!(c.check("old", 61_000), Revocation::Live);
        assert_eq!(c.len(), 2);
    }

    #[tokio::test]
    async fn a_failing_feed_keeps_what_is_known_until_it_is_too_old_to_vouch_for() {
        let table = Arc::new(Table::default());
        let c = RevocationCache::new(Duration::from_secs(2));
        table.revoke("a", 1_000);
        c.poll(&table, 0, 0, 10_000).await.unwrap();
        table.down.store(true, Ordering::SeqCst);
        assert!(c.poll(&table, 5_000, 0, 11_000).await.is_err());
        assert_eq!(c.check("a", 11_000), Revocation::Revoked);
        assert_eq!(c.check("z", 12_000), Revocation::Live);
        // Past the staleness bound nothing is vouched for, revoked or not.
        assert_eq!(c.check("z", 12_001), Revocation::Unknown);
        assert_eq!(c.check("a", 12_001), Revocation::Unknown);
        table.down.store(false, Ordering::SeqCst);
        c.poll(&table, 5_000, 0, 13_000).await.unwrap();
        assert_eq!(c.check("z", 13_000), Revocation::Live);
    }

    #[test]
    fn the_next_poll_reaches_back_by_the_overlap() {
        // Nothing new: the overlap before now.
        assert_eq!(next_since(0, 100_000), 100_000 - 2 * CLOCK_OVERLAP_MS);
        // A revocation stamped ahead of this replica's clock: the overlap before it.
        assert_eq!(next_since(200_000, 100_000), 200_000 - CLOCK_OVERLAP_MS);
    }

    #[tokio::test]
    async fn the_poller_sees_a_new_revocation_within_about_one_interval() {
        let table = Arc::new(Table::default());
        let c = Arc::new(RevocationCache::new(Duration::from_secs(2)));
        let poller = tokio::spawn(c.clone().run(
            table.clone(),
            Duration::from_millis(20),
            Duration::from_secs(3600),
        ));
        while c.check("s", crate::clock::now_ms()) == Revocation::Unknown {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Stamped by a replica whose clock is 2 s behind: still seen.
        table.revoke("s", crate::clock::now_ms() - 2_000);
        let started = std::time::Instant::now();
        while c.check("s", crate::clock::now_ms()) != Revocation::Revoked {
            assert!(started.elapsed() < Duration::from_secs(2), "never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(table.reads.load(Ordering::SeqCst) >= 2);
        poller.abort();
    }
}
