//! The per-app access_token cache: one stable token per app, kept until
//! `expires_in − margin`, fetched by at most one caller at a time (the others
//! wait for that fetch and share its result), and dropped only by a
//! compare-and-invalidate on the token that actually failed.
//!
//! The cache does no I/O itself: callers pass the fetch (a stable_token call
//! in normal mode), which keeps this module testable with paused time.

use super::error::WechatError;
use crate::domain::AppId;
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretString};
use std::{
    collections::HashMap,
    future::Future,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};
use tokio::time::Instant;

/// A cached token is kept at least this long (capped by its real lifetime),
/// however large the configured margin, so a big margin cannot turn every
/// call into a fetch.
pub const MIN_TOKEN_TTL: Duration = Duration::from_secs(30);

/// A token as the token endpoint returned it.
pub struct FetchedToken {
    /// The access_token. Secret: never logged.
    pub token: SecretString,
    /// WeChat's `expires_in`: how long the token stays valid from now.
    pub expires_in: Duration,
}

#[derive(Clone)]
struct Cached {
    token: SecretString,
    refresh_at: Instant,
}

/// Why the slot's most recent fetch failed, if it did.
#[derive(Default)]
struct LastFetch {
    error: Option<WechatError>,
}

#[derive(Default)]
struct Slot {
    current: RwLock<Option<Cached>>,
    /// Held by the one caller fetching; the others queue behind it.
    fetching: tokio::sync::Mutex<LastFetch>,
    /// Number of fetches finished, read before queueing to detect a fetch that
    /// finished while we waited (written only under `fetching`).
    finished: AtomicU64,
}

/// Access tokens of the configured apps.
pub struct TokenCache {
    margin: Duration,
    slots: HashMap<AppId, Slot>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("margin", &self.margin)
            .field("apps", &self.slots.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// When a token fetched at `now`, valid for `expires_in`, should be replaced.
pub fn refresh_deadline(now: Instant, expires_in: Duration, margin: Duration) -> Instant {
    let ttl = expires_in
        .saturating_sub(margin)
        .max(MIN_TOKEN_TTL.min(expires_in));
    now + ttl
}

impl TokenCache {
    /// A cache for `apps`; tokens are replaced `margin` before WeChat's expiry.
    pub fn new(apps: impl IntoIterator<Item = AppId>, margin: Duration) -> Self {
        Self {
            margin,
            slots: apps.into_iter().map(|a| (a, Slot::default())).collect(),
        }
    }

    fn slot(&self, app_id: &AppId) -> Result<&Slot, WechatError> {
        self.slots
            .get(app_id)
            .ok_or_else(|| WechatError::UnknownApp(app_id.clone()))
    }

    /// The cached token of `app_id` if it is still fresh.
    pub fn cached(&self, app_id: &AppId) -> Option<SecretString> {
        let slot = self.slots.get(app_id)?;
        fresh(slot, Instant::now())
    }

    /// The app's token: the cached one while fresh, otherwise the result of
    /// `fetch`. Concurrent callers share one fetch; if that fetch fails, the
    /// callers that waited for it get its error instead of fetching again.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        app_id: &AppId,
        fetch: F,
    ) -> Result<SecretString, WechatError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FetchedToken, WechatError>>,
    {
        let slot = self.slot(app_id)?;
        if let Some(token) = fresh(slot, Instant::now()) {
            return Ok(token);
        }
        let seen = slot.finished.load(Ordering::Acquire);
        let mut last = slot.fetching.lock().await;
        // Someone may have fetched while we queued: share its token, or its error.
        if let Some(token) = fresh(slot, Instant::now()) {
            return Ok(token);
        }
        if slot.finished.load(Ordering::Acquire) > seen
            && let Some(err) = &last.error
        {
            return Err(err.clone());
        }
        let result = fetch().await;
        slot.finished.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(fetched) => {
                last.error = None;
                let refresh_at = refresh_deadline(Instant::now(), fetched.expires_in, self.margin);
                let token = fetched.token;
                *write(slot) = Some(Cached {
                    token: token.clone(),
                    refresh_at,
                });
                Ok(token)
            }
            Err(err) => {
                last.error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Drops the cached token of `app_id` only if it is still `failed`, so a
    /// token another caller already replaced is kept. True if it was dropped.
    pub fn invalidate_if(&self, app_id: &AppId, failed: &SecretString) -> bool {
        let Some(slot) = self.slots.get(app_id) else {
            return false;
        };
        let mut current = write(slot);
        let same = current
            .as_ref()
            .is_some_and(|c| c.token.expose_secret() == failed.expose_secret());
        if same {
            *current = None;
        }
        same
    }
}

fn fresh(slot: &Slot, now: Instant) -> Option<SecretString> {
    let current = slot.current.read();
    current
        .as_ref()
        .filter(|c| now < c.refresh_at)
        .map(|c| c.token.clone())
}

fn write(slot: &Slot) -> parking_lot::RwLockWriteGuard<'_, Option<Cached>> {
    slot.current.write()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, atomic::AtomicUsize};

    fn app() -> AppId {
        AppId::parse("wxtokencache0001").unwrap()
    }

    fn fetched(token: &str, secs: u64) -> FetchedToken {
        FetchedToken {
            token: SecretString::from(token),
            expires_in: Duration::from_secs(secs),
        }
    }

    #[test]
    fn deadline_subtracts_the_margin_but_keeps_a_floor() {
        let now = Instant::now();
        let m = Duration::from_secs(60);
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(7200), m),
            now + Duration::from_secs(7140)
        );
        // A huge margin cannot push the lifetime below the floor...
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(300), Duration::from_secs(3600)),
            now + MIN_TOKEN_TTL
        );
        // ...and the floor never outlives the token itself.
        assert_eq!(
            refresh_deadline(now, Duration::from_secs(5), m),
            now + Duration::from_secs(5)
        );
        assert_eq!(refresh_deadline(now, Duration::ZERO, m), now);
    }

    #[tokio::test]
    async fn a_cached_token_is_reused_until_margin_before_expiry() {
        // A short-lived token and no margin, so the test runs in real time;
        // the margin arithmetic is covered by the deadline test above.
        let cache = TokenCache::new([app()], Duration::ZERO);
        let fetches = AtomicUsize::new(0);
        let get = || async {
            cache
                .get_or_fetch(&app(), || async {
                    let n = fetches.fetch_add(1, Ordering::SeqCst);
                    Ok(FetchedToken {
                        token: SecretString::from(format!("t{n}")),
                        expires_in: Duration::from_millis(400),
                    })
                })
                .await
                .unwrap()
                .expose_secret()
                .to_owned()
        };
        assert_eq!(get().await, "t0");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get().await, "t0");
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(get().await, "t1");
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_callers_on_a_cold_cache_share_one_fetch() {
        let cache = Arc::new(TokenCache::new([app()], Duration::from_secs(60)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&app(), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(fetched("shared", 7200))
                    })
                    .await
                    .unwrap()
                    .expose_secret()
                    .to_owned()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), "shared");
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn callers_waiting_on_a_failed_fetch_get_its_error_without_refetching() {
        let cache = Arc::new(TokenCache::new([app()], Duration::from_secs(60)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let (cache, fetches) = (cache.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&app(), || async {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(WechatError::Busy)
                    })
                    .await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), WechatError::Busy);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A later caller tries again.
        let token = cache
            .get_or_fetch(&app(), || async { Ok(fetched("after", 7200)) })
            .await
            .unwrap();
        assert_eq!(token.expose_secret(), "after");
    }

    #[tokio::test]
    async fn invalidation_only_drops_the_token_that_failed() {
        let cache = TokenCache::new([app()], Duration::from_secs(60));
        let t1 = cache
            .get_or_fetch(&app(), || async { Ok(fetched("one", 7200)) })
            .await
            .unwrap();
        assert!(!cache.invalidate_if(&app(), &SecretString::from("other")));
        assert_eq!(cache.cached(&app()).unwrap().expose_secret(), "one");
        assert!(cache.invalidate_if(&app(), &t1));
        assert!(cache.cached(&app()).is_none());
        let t2 = cache
            .get_or_fetch(&app(), || async { Ok(fetched("two", 7200)) })
            .await
            .unwrap();
        // A late invalidation for the old token leaves the new one alone.
        assert!(!cache.invalidate_if(&app(), &t1));
        assert_eq!(
            cache.cached(&app()).unwrap().expose_secret(),
            t2.expose_secret()
        );
    }

    #[tokio::test]
    async fn unknown_apps_are_refused_without_fetching() {
        let cache = TokenCache::new([app()], Duration::from_secs(60));
        let other = AppId::parse("wxnotconfigured1").unwrap();
        let err = cache
            .get_or_fetch(&other, || async { panic!("must not fetch") })
            .await
            .unwrap_err();
        assert_eq!(err, WechatError::UnknownApp(other));
    }

    #[test]
    fn debug_shows_no_tokens() {
        let cache = TokenCache::new([app()], Duration::from_secs(60));
        *write(cache.slots.get(&app()).unwrap()) = Some(Cached {
            token: SecretString::from("very-secret-token"),
            refresh_at: Instant::now(),
        });
        assert!(!format!("{cache:?}").contains("very-secret-token"));
    }
}
