//! The application: the long-lived parts every request shares (store, token
//! issuer, sessions, login, users, callers, revocation cache) and the app's
//! background work (the revocation poller, the session cleanup). Built by
//! [`crate::startup`]; the edges take it as it is.

use crate::{
    callers::CallerRegistry,
    login::LoginService,
    sessions::{RevocationCache, SessionService},
    store::Store,
    tokens::TokenIssuer,
    users::UsersService,
};
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// How often each replica polls new revocations (the bound on how long a
/// logout takes to reach `VerifyToken` on every replica, plus one query).
const REVOCATION_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The application: every long-lived part, shared by all requests.
pub struct App {
    /// The database.
    pub store: Store,
    /// Issues and verifies access tokens.
    pub tokens: Arc<TokenIssuer>,
    /// Sessions and refresh tokens: refresh, logout, online verification.
    pub sessions: Arc<SessionService>,
    /// The login use case.
    pub login: Arc<LoginService>,
    /// The user directory for internal callers.
    pub users: Arc<UsersService>,
    /// Internal callers' API keys and permissions.
    pub callers: Arc<CallerRegistry>,
    /// Revoked sessions, polled from the store (see [`App::spawn_background`]).
    pub revocations: Arc<RevocationCache>,
    /// Timings of the background work.
    pub background: BackgroundSettings,
}

/// Timings of the app's background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackgroundSettings {
    /// Every revocation that can still matter: the longest token lifetime plus leeway.
    pub revocation_window: Duration,
    /// How often ended sessions are deleted.
    pub cleanup_interval: Duration,
    /// Revoked rows stay while their access tokens live (the revocation feed needs them).
    pub cleanup_retention: Duration,
}

impl App {
    /// Starts the app's background work: the revocation poller and the
    /// session cleanup. Both stop when the returned guard is dropped.
    pub fn spawn_background(&self) -> Background {
        let poller = tokio::spawn(self.revocations.clone().run(
            self.store.clone(),
            REVOCATION_POLL_INTERVAL,
            self.background.revocation_window,
        ));
        let cleaner = tokio::spawn(session_cleanup(
            self.sessions.clone(),
            self.background.cleanup_interval,
            self.background.cleanup_retention,
        ));
        Background(vec![poller, cleaner])
    }
}

/// The app's background tasks; aborted on drop.
#[must_use = "the background tasks stop when this is dropped"]
pub struct Background(Vec<JoinHandle<()>>);

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Deletes ended sessions every `interval` (bounded batches over the expiry
/// and revocation indexes; never on the login path).
async fn session_cleanup(sessions: Arc<SessionService>, interval: Duration, retention: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        match sessions.cleanup(retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "ended sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "session cleanup failed; will retry"),
        }
    }
}
