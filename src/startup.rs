//! The composition root: settings in, the application's parts out, built
//! once and handed to the gRPC server, its health loop, dev mode and the test
//! harness. Also the app's background work (session cleanup, the revocation
//! poller), which belongs to the app, not to a transport.

use crate::{
    callers::CallerRegistry,
    config::Settings,
    login::{LoginService, LoginSettings, SessionVault},
    sessions::{RefreshCodec, RevocationCache, SessionService},
    store::Store,
    tokens::{KeyRing, TokenIssuer},
    users::UsersService,
    wechat::WechatClient,
};
use anyhow::Context as _;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;

/// How often each replica polls new revocations (the bound on how long a
/// logout takes to reach `VerifyToken` on every replica, plus one query).
const REVOCATION_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A revocation poll older than this makes online verification fail closed.
const REVOCATION_STALE_AFTER: Duration = Duration::from_secs(5);

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
    /// Every revocation that can still matter: the longest token lifetime plus leeway.
    revocation_window: Duration,
    cleanup_interval: Duration,
    /// Revoked rows stay while their access tokens live (the revocation feed needs them).
    cleanup_retention: Duration,
}

impl App {
    /// Builds the application from settings: checks every setting it needs,
    /// loads the keys (with the token self-test), connects to the database
    /// (optionally migrating). Fails with a message that says how to fix the problem.
    pub async fn build(settings: &Settings) -> anyhow::Result<Arc<Self>> {
        settings.validate_common()?;
        let apps = settings.app_credentials()?;
        let keys = Arc::new(KeyRing::from_settings(&settings.token)?);
        tracing::info!(
            alg = %keys.signing().algorithm(),
            kid = keys.signing().kid(),
            verification_kids = ?keys.kids(),
            "token keys loaded"
        );
        let tokens = Arc::new(TokenIssuer::new(&settings.token, keys)?);
        let master_key = settings.session_key_encryption_key()?;
        let vault = SessionVault::new(&master_key);
        let wechat =
            WechatClient::new(&settings.wechat, &apps).context("building the WeChat client")?;
        let callers = Arc::new(
            CallerRegistry::new(&settings.caller_entries()?).map_err(|e| {
                anyhow::anyhow!("{e}. Fix: see the README's \"For internal services\" section")
            })?,
        );
        let store = Store::connect(&settings.database_url()?, &settings.database)
            .await
            .context("connecting to the database")?;
        if settings.database.migrate_on_start {
            let applied = store.migrate().await.context("running migrations")?;
            tracing::info!(applied, "migrations applied");
        }
        let app_ids: Vec<_> = apps.iter().map(|a| a.app_id.clone()).collect();
        let revocations = Arc::new(RevocationCache::new(REVOCATION_STALE_AFTER));
        let sessions = Arc::new(SessionService::new(
            store.clone(),
            tokens.clone(),
            RefreshCodec::new(&master_key),
            app_ids.clone(),
            revocations.clone(),
            &settings.sessions,
        ));
        let login = Arc::new(LoginService::new(
            LoginSettings::from(settings),
            app_ids,
            wechat,
            store.clone(),
            sessions.clone(),
            vault,
        ));
        let users = Arc::new(UsersService::new(store.clone()));
        let token_life = settings.token.ttl_secs;
        Ok(Arc::new(Self {
            store,
            tokens,
            sessions,
            login,
            users,
            callers,
            revocations,
            revocation_window: Duration::from_secs(token_life + settings.token.leeway_secs + 60),
            cleanup_interval: Duration::from_secs(settings.sessions.cleanup_interval_secs),
            cleanup_retention: Duration::from_secs(token_life + 3600),
        }))
    }

    /// Starts the app's background work: the revocation poller and the
    /// session cleanup. Both stop when the returned guard is dropped.
    pub fn spawn_background(&self) -> Background {
        let poller = tokio::spawn(self.revocations.clone().run(
            self.store.clone(),
            REVOCATION_POLL_INTERVAL,
            self.revocation_window,
        ));
        let cleaner = tokio::spawn(session_cleanup(
            self.sessions.clone(),
            self.cleanup_interval,
            self.cleanup_retention,
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

/// Builds the app and binds its gRPC server on `grpc.listen` (port 0 picks a
/// free port): what `serve`, dev mode and the tests start.
pub async fn grpc_server(settings: &Settings) -> anyhow::Result<crate::grpc::GrpcServer> {
    let app = App::build(settings).await?;
    crate::grpc::GrpcServer::bind(app, &settings.grpc).await
}
