//! The composition root: settings in, the [`App`] out, built once and handed
//! to the gRPC server (with its health loop), dev mode and the test harness.

use crate::{
    app::{App, BackgroundSettings},
    callers::CallerRegistry,
    config::Settings,
    grpc::GrpcServer,
    login::{LoginService, LoginSettings, SessionVault},
    sessions::{RefreshCodec, RevocationCache, SessionService},
    store::Store,
    tokens::{KeyRing, TokenIssuer},
    users::UsersService,
    wechat::WechatClient,
};
use anyhow::Context as _;
use std::{sync::Arc, time::Duration};

/// A revocation poll older than this makes online verification fail closed.
const REVOCATION_STALE_AFTER: Duration = Duration::from_secs(5);

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
            login_settings(settings),
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
            background: BackgroundSettings {
                revocation_window: Duration::from_secs(
                    token_life + settings.token.leeway_secs + 60,
                ),
                cleanup_interval: Duration::from_secs(settings.sessions.cleanup_interval_secs),
                cleanup_retention: Duration::from_secs(token_life + 3600),
            },
        }))
    }
}

/// The login use case's settings, from the sections they live in.
pub fn login_settings(settings: &Settings) -> LoginSettings {
    LoginSettings {
        silent_logins_per_minute: settings.sessions.silent_logins_per_minute,
        watermark_max_age: Duration::from_secs(settings.wechat.watermark_max_age_secs),
        session_key_ttl: Duration::from_secs(settings.session_keys.ttl_secs),
    }
}

/// Builds the app and binds its gRPC server on `grpc.listen` (port 0 picks a
/// free port): what `serve`, dev mode and the tests start.
pub async fn grpc_server(settings: &Settings) -> anyhow::Result<GrpcServer> {
    let app = App::build(settings).await?;
    GrpcServer::bind(app, &settings.grpc).await
}
