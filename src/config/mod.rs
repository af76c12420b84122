//! Typed, layered settings: built-in defaults < optional TOML file (`--config`
//! or `MP_AUTH_CONFIG`) < `MP_AUTH_`-prefixed environment variables (nested
//! with `__`, e.g. `MP_AUTH_GRPC__LISTEN`). `DATABASE_URL` is honoured as diesel
//! users expect. Every secret can also come from a file (`*_file` keys, e.g.
//! `MP_AUTH_TOKEN__HS256_SECRET_FILE`), the Kubernetes way. Secrets are
//! `SecretString`s and never appear in `Debug`. Each process validates the
//! sections it uses at start-up, with messages that say how to fix the problem.

pub mod types;

pub use types::{Hs256Secret, HttpUrl, Millis};

use crate::domain::AppId;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// A configuration problem, with a hint on how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("could not read configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("{setting}: {problem}. Fix: {fix}")]
    Invalid {
        setting: String,
        problem: String,
        fix: String,
    },
    #[error("{setting}: cannot read secret file {path}: {source}")]
    SecretFile {
        setting: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn invalid(
    setting: impl Into<String>,
    problem: impl Into<String>,
    fix: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

/// All settings of every process; each command validates what it uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The mini programs this deployment serves.
    pub apps: Vec<AppSettings>,
    pub wechat: WechatSettings,
    pub database: DatabaseSettings,
    pub grpc: GrpcSettings,
    pub gateway: GatewaySettings,
    pub admin: AdminSettings,
    pub token: TokenSettings,
    pub session_keys: SessionKeySettings,
    pub log: LogSettings,
    pub simulator: SimulatorSettings,
    pub sessions: SessionSettings,
    /// Internal services allowed to call the protected gRPC RPCs, with their permissions.
    pub callers: Vec<CallerSettings>,
    /// A TOML file with more `[[callers]]` entries (e.g. a mounted Kubernetes Secret).
    pub callers_file: Option<PathBuf>,
}

/// The `[[callers]]` entries of a `callers_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallersFile {
    #[serde(default)]
    callers: Vec<CallerSettings>,
}

/// One internal caller of the gRPC port: a name, the SHA-256 of its API key
/// (never the key itself) and its permissions (see `callers::Permission`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSettings {
    pub name: String,
    /// 64 hex digits: `printf %s "$KEY" | sha256sum`, or `mp-auth callers new-key`.
    pub key_sha256: String,
    #[serde(default)]
    pub permissions: Vec<String>,
}

/// One mini program: its AppID and AppSecret (from the WeChat admin console).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSettings {
    pub app_id: String,
    #[serde(default, serialize_with = "ser_secret_opt")]
    pub app_secret: Option<SecretString>,
    /// Read the secret from this file instead (e.g. a mounted Kubernetes Secret).
    #[serde(default)]
    pub app_secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WechatSettings {
    /// Base URL of the WeChat API; point it at the simulator for dev and tests.
    pub base_url: HttpUrl,
    pub connect_timeout_ms: Millis,
    /// Total time budget of one WeChat call.
    pub timeout_ms: Millis,
    /// Legacy encrypted data older than this (by its watermark) is refused.
    pub watermark_max_age_secs: u64,
    /// Refresh a cached access_token this long before WeChat says it expires.
    pub token_refresh_margin_secs: u64,
    /// Per-app budget of calls to WeChat per second (all endpoints); 0 disables.
    /// Set it below the app's WeChat quota so garbage codes cannot exhaust it.
    pub upstream_calls_per_sec: u32,
    /// Burst size of that budget.
    pub upstream_burst: u32,
    /// After WeChat answers 45011/45009, calls to that endpoint of that app are
    /// refused locally for this long (0 disables the breaker).
    pub rate_limit_cooldown_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `mysql://user:password@host:3306/db` or `sqlite://path/to/file.db`.
    /// `DATABASE_URL` overrides it.
    #[serde(serialize_with = "ser_secret_opt")]
    pub url: Option<SecretString>,
    pub url_file: Option<PathBuf>,
    /// Connections in the pool. On small machines more is slower (see README).
    pub pool_size: u32,
    /// How long a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout_ms: u64,
    /// Run pending migrations when `serve` starts (otherwise use `migrate`).
    pub migrate_on_start: bool,
    /// Attempts of a transaction (or single statement) on deadlock, which is also how
    /// Galera reports a certification conflict.
    pub max_tx_attempts: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Where `serve` listens for gRPC (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Grace period for in-flight requests on SIGTERM/SIGINT.
    pub drain_timeout_ms: u64,
    /// Close client connections after this age so new replicas get traffic.
    pub max_connection_age_secs: u64,
    pub keepalive_interval_secs: u64,
    pub keepalive_timeout_secs: u64,
    /// Largest request/response message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Seconds between database health checks.
    pub health_check_interval_ms: Millis,
    /// Require an API key with `auth:login` on the login, refresh and logout
    /// RPCs too (give the gateway its key with `gateway.api_key_file`). Off by
    /// default: those RPCs carry their own proof (WeChat codes, refresh tokens)
    /// and are as public as the gateway endpoints that forward them.
    pub protect_login_rpcs: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Where the HTTP gateway listens.
    pub listen: SocketAddr,
    /// The gRPC service the gateway forwards to.
    pub backend_url: String,
    /// Deadline of one forwarded login.
    pub backend_timeout_ms: Millis,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Per-client-IP rate limit: sustained requests per second (0 disables).
    pub rate_limit_per_sec: u32,
    /// Per-client-IP burst size.
    pub rate_limit_burst: u32,
    /// Peers whose `X-Forwarded-For` is trusted (exact IPs or CIDRs).
    pub trusted_proxies: Vec<String>,
    /// Time allowed to send request headers.
    pub header_read_timeout_ms: Millis,
    pub drain_timeout_ms: u64,
    /// Largest request head (request line + headers); larger gets 431. Also the
    /// connection's read buffer, so it bounds memory per connection.
    pub max_header_bytes: usize,
    /// Open client connections at most; more are closed at once (memory bound).
    pub max_connections: usize,
    /// A second listener serving only `/healthz` and `/readyz`, for kubelet
    /// probes: out of reach of floods and connection caps on the public port.
    pub probe_listen: Option<SocketAddr>,
    /// The gateway's own API key, sent to the backend on every call (needed when
    /// the server sets `grpc.protect_login_rpcs`; its caller entry needs `auth:login`).
    #[serde(serialize_with = "ser_secret_opt")]
    pub api_key: Option<SecretString>,
    pub api_key_file: Option<PathBuf>,
    /// The gateway's public base URL (e.g. `https://auth.example.com`) for the
    /// discovery document's `jwks_uri`; by default taken from the request's host.
    pub public_url: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// Prometheus `/metrics` listener; `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
}

/// Access tokens: who signs them with which key, and for how long they live.
/// Keys: exactly one active signing key (`signing_key[_file]`, or an HS256
/// secret for a single-service setup), plus retired keys that still verify
/// (`verification_keys`, `verification_key_files`) until every token they
/// signed has expired. See the README's key rotation procedure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub ttl_secs: u64,
    /// The active signing key: a PKCS#8 PEM private key (`BEGIN PRIVATE KEY`),
    /// P-256 for ES256 (recommended) or Ed25519 for EdDSA (`mp-auth keys generate`).
    /// When set, the JWKS publishes its public key.
    #[serde(serialize_with = "ser_secret_opt")]
    pub signing_key: Option<SecretString>,
    pub signing_key_file: Option<PathBuf>,
    /// Previous keys (PEM, public or private) that still verify until removed,
    /// published in the JWKS: inline, or one file each.
    #[serde(serialize_with = "ser_secret_vec")]
    pub verification_keys: Vec<SecretString>,
    pub verification_key_files: Vec<PathBuf>,
    /// HS256 secret (at least 32 bytes): signs when no `signing_key` is set
    /// (single-service setups); beside a signing key it only verifies (migration).
    #[serde(serialize_with = "ser_secret_opt")]
    pub hs256_secret: Option<Hs256Secret>,
    pub hs256_secret_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp`/`nbf`/`iat` when verifying.
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionKeySettings {
    /// Key that encrypts stored session_keys at rest (AES-256-GCM): base64 of 32 bytes.
    #[serde(serialize_with = "ser_secret_opt")]
    pub encryption_key: Option<SecretString>,
    pub encryption_key_file: Option<PathBuf>,
    /// Stored session_keys older than this are ignored.
    pub ttl_secs: u64,
}

/// Sessions and refresh tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A session unused (no refresh, no silent login) this long ends.
    pub idle_timeout_secs: u64,
    /// A session ends this long after its login, however much it is used.
    pub absolute_lifetime_secs: u64,
    /// A refresh token presented again after it was rotated gets the same
    /// successor (a client that lost the answer) only while that successor was
    /// never used AND the rotation is at most this old; otherwise it is reuse and
    /// the session is revoked. 0: every second use is reuse.
    pub refresh_retry_window_secs: u64,
    /// Refreshes one session may make per minute (per replica); 0 disables.
    pub refreshes_per_minute: u32,
    /// Silent logins one WeChat identity may make per minute (per replica); 0 disables.
    pub silent_logins_per_minute: u32,
    /// How often ended sessions are deleted (in batches, in the background).
    pub cleanup_interval_secs: u64,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 30 * 24 * 3600,
            absolute_lifetime_secs: 90 * 24 * 3600,
            refresh_retry_window_secs: 60,
            refreshes_per_minute: 30,
            silent_logins_per_minute: 20,
            cleanup_interval_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `json` (production) or `pretty` (humans).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `mp_auth=debug,info`. `RUST_LOG` overrides it.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimulatorSettings {
    /// Where `wechat-sim` listens.
    pub listen: SocketAddr,
    /// A new `wx.login` replaces a user's session_key once the current one is
    /// older than this (0 = every login replaces it).
    pub session_refresh_secs: u64,
    /// Lifetime of a stable access_token.
    pub token_ttl_secs: u64,
}

fn ser_secret_vec<S: serde::Serializer>(v: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|_| "[REDACTED]"))
}

fn ser_secret_opt<T, S: serde::Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    // Defaults only ever hold `None`; a real secret is never serialized.
    match v {
        Some(_) => s.serialize_some("[REDACTED]"),
        None => s.serialize_none(),
    }
}

impl Default for WechatSettings {
    fn default() -> Self {
        Self {
            base_url: HttpUrl::from_static("https://api.weixin.qq.com"),
            connect_timeout_ms: Millis::clamped(1_000),
            timeout_ms: Millis::clamped(5_000),
            watermark_max_age_secs: 600,
            token_refresh_margin_secs: 60,
            upstream_calls_per_sec: 0,
            upstream_burst: 200,
            rate_limit_cooldown_secs: 10,
        }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: None,
            url_file: None,
            pool_size: 16,
            acquire_timeout_ms: 2_000,
            migrate_on_start: false,
            max_tx_attempts: 5,
        }
    }
}

impl Default for GrpcSettings {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 50051).into(),
            drain_timeout_ms: 10_000,
            max_connection_age_secs: 300,
            keepalive_interval_secs: 30,
            keepalive_timeout_secs: 10,
            max_message_bytes: 64 * 1024,
            health_check_interval_ms: Millis::clamped(2_000),
            protect_login_rpcs: false,
        }
    }
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8080).into(),
            backend_url: "http://127.0.0.1:50051".into(),
            backend_timeout_ms: Millis::clamped(10_000),
            max_body_bytes: 16 * 1024,
            rate_limit_per_sec: 20,
            rate_limit_burst: 40,
            trusted_proxies: Vec::new(),
            header_read_timeout_ms: Millis::clamped(5_000),
            drain_timeout_ms: 10_000,
            max_header_bytes: 16 * 1024,
            max_connections: 1024,
            probe_listen: None,
            api_key: None,
            api_key_file: None,
            public_url: None,
        }
    }
}

impl Default for TokenSettings {
    fn default() -> Self {
        Self {
            issuer: "mp-auth".into(),
            audience: "mp-auth-clients".into(),
            ttl_secs: 7_200,
            signing_key: None,
            signing_key_file: None,
            verification_keys: Vec::new(),
            verification_key_files: Vec::new(),
            hs256_secret: None,
            hs256_secret_file: None,
            leeway_secs: 30,
        }
    }
}

impl Default for SessionKeySettings {
    fn default() -> Self {
        Self {
            encryption_key: None,
            encryption_key_file: None,
            ttl_secs: 3 * 24 * 3600,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            filter: "info".into(),
        }
    }
}

impl Default for SimulatorSettings {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 9400).into(),
            session_refresh_secs: 300,
            token_ttl_secs: 7_200,
        }
    }
}

impl Settings {
    /// Loads defaults < `file` (if given) < `MP_AUTH_*` environment < `DATABASE_URL`.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(invalid(
                    "--config",
                    format!("file {} does not exist", path.display()),
                    "pass an existing TOML file or drop the flag",
                ));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("MP_AUTH_").split("__").ignore(&["config"]));
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(("database.url", url));
        }
        figment
            .extract()
            .map_err(|e| ConfigError::Load(Box::new(e)))
    }
}

/// Resolves a secret given inline or as a file; a file wins over nothing, inline wins over file.
pub fn resolve_secret(
    setting: &str,
    inline: &Option<SecretString>,
    file: &Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    if let Some(s) = inline {
        return Ok(Some(s.clone()));
    }
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                setting: setting.to_owned(),
                path: path.clone(),
                source,
            })?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        None => Ok(None),
    }
}

/// A validated app: its id and secret.
#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub app_id: AppId,
    pub app_secret: SecretString,
}

impl Settings {
    /// The configured apps, validated: at least one, unique ids, non-empty secrets.
    pub fn app_credentials(&self) -> Result<Vec<AppCredentials>, ConfigError> {
        if self.apps.is_empty() {
            return Err(invalid(
                "apps",
                "no mini program is configured",
                "add `[[apps]] app_id = \"wx...\" app_secret_file = \"/path\"` to the config file, \
                 or set MP_AUTH_APPS='[{app_id=\"wx...\",app_secret=\"...\"}]'",
            ));
        }
        let mut out: Vec<AppCredentials> = Vec::with_capacity(self.apps.len());
        for (i, app) in self.apps.iter().enumerate() {
            let setting = format!("apps[{i}]");
            let app_id = AppId::parse(&app.app_id).map_err(|e| {
                invalid(
                    format!("{setting}.app_id"),
                    e.problem,
                    "use the AppID from the WeChat admin console (mp.weixin.qq.com)",
                )
            })?;
            if out.iter().any(|a| a.app_id == app_id) {
                return Err(invalid(
                    format!("{setting}.app_id"),
                    format!("{app_id} is configured twice"),
                    "list each app once",
                ));
            }
            let secret = resolve_secret(&format!("{setting}.app_secret"), &app.app_secret, &app.app_secret_file)?
                .filter(|s| !s.expose_secret().trim().is_empty())
                .ok_or_else(|| {
                    invalid(
                        format!("{setting}.app_secret"),
                        format!("app {app_id} has no AppSecret"),
                        "set app_secret or app_secret_file (WeChat admin console → 开发管理 → AppSecret)",
                    )
                })?;
            out.push(AppCredentials {
                app_id,
                app_secret: secret,
            });
        }
        Ok(out)
    }

    /// The database URL, required by the server, `migrate` and the benchmark's limit run.
    pub fn database_url(&self) -> Result<SecretString, ConfigError> {
        resolve_secret("database.url", &self.database.url, &self.database.url_file)?.ok_or_else(|| {
            invalid(
                "database.url",
                "no database is configured",
                "set DATABASE_URL=mysql://user:password@127.0.0.1:3306/mp_auth (or sqlite://path.db), \
                 or MP_AUTH_DATABASE__URL_FILE=/path/to/file",
            )
        })
    }

    /// Every configured internal caller: `callers` plus the entries of `callers_file`.
    pub fn caller_entries(&self) -> Result<Vec<CallerSettings>, ConfigError> {
        let mut entries = self.callers.clone();
        if let Some(path) = &self.callers_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "callers_file",
                    format!("cannot read {}: {e}", path.display()),
                    "mount the file or unset MP_AUTH_CALLERS_FILE",
                )
            })?;
            let file: CallersFile = figment::Figment::from(figment::providers::Toml::string(&text))
                .extract()
                .map_err(|e| {
                invalid(
                    "callers_file",
                    format!("{} is not a callers file: {e}", path.display()),
                    "write entries as [[callers]] name = \"orders\" key_sha256 = \"<64 hex>\" permissions = [\"users:read\"]",
                )
            })?;
            entries.extend(file.callers);
        }
        Ok(entries)
    }

    /// The at-rest key for stored session_keys: base64 of exactly 32 bytes.
    pub fn session_key_encryption_key(&self) -> Result<[u8; 32], ConfigError> {
        use base64::Engine as _;
        let fix = "generate one with `head -c 32 /dev/urandom | base64` and set \
                   MP_AUTH_SESSION_KEYS__ENCRYPTION_KEY or MP_AUTH_SESSION_KEYS__ENCRYPTION_KEY_FILE";
        let key = resolve_secret(
            "session_keys.encryption_key",
            &self.session_keys.encryption_key,
            &self.session_keys.encryption_key_file,
        )?
        .ok_or_else(|| invalid("session_keys.encryption_key", "no key is configured", fix))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(key.expose_secret().trim())
            .map_err(|_| invalid("session_keys.encryption_key", "is not valid base64", fix))?;
        bytes.try_into().map_err(|_| {
            invalid(
                "session_keys.encryption_key",
                "must decode to exactly 32 bytes",
                fix,
            )
        })
    }

    /// Checks the numeric settings every process shares.
    pub fn validate_common(&self) -> Result<(), ConfigError> {
        if self.database.pool_size == 0 {
            return Err(invalid(
                "database.pool_size",
                "must be at least 1",
                "use about 4x the database's cores",
            ));
        }
        if self.database.max_tx_attempts == 0 {
            return Err(invalid(
                "database.max_tx_attempts",
                "must be at least 1",
                "use e.g. 5",
            ));
        }
        if self.token.ttl_secs < 60 {
            return Err(invalid(
                "token.ttl_secs",
                "tokens shorter than a minute are unusable",
                "use e.g. 7200",
            ));
        }
        // Upper bounds: every duration below is converted to milliseconds and added
        // to "now" in i64/u64 arithmetic; absurd values must be refused here, not wrap.
        const DAY: u64 = 24 * 3600;
        for (setting, value, max, fix) in [
            (
                "token.ttl_secs",
                self.token.ttl_secs,
                30 * DAY,
                "use e.g. 7200",
            ),
            (
                "session_keys.ttl_secs",
                self.session_keys.ttl_secs,
                365 * DAY,
                "use e.g. 259200",
            ),
            (
                "sessions.idle_timeout_secs",
                self.sessions.idle_timeout_secs,
                3650 * DAY,
                "use e.g. 2592000",
            ),
            (
                "sessions.absolute_lifetime_secs",
                self.sessions.absolute_lifetime_secs,
                3650 * DAY,
                "use e.g. 7776000",
            ),
            (
                "sessions.cleanup_interval_secs",
                self.sessions.cleanup_interval_secs,
                DAY,
                "use e.g. 300",
            ),
            (
                "sessions.refresh_retry_window_secs",
                self.sessions.refresh_retry_window_secs,
                3600,
                "use e.g. 60 (a lost answer is retried within seconds)",
            ),
            (
                "wechat.watermark_max_age_secs",
                self.wechat.watermark_max_age_secs,
                DAY,
                "use e.g. 600",
            ),
            (
                "wechat.token_refresh_margin_secs",
                self.wechat.token_refresh_margin_secs,
                3600,
                "use e.g. 60",
            ),
            (
                "wechat.rate_limit_cooldown_secs",
                self.wechat.rate_limit_cooldown_secs,
                3600,
                "use e.g. 10",
            ),
            (
                "wechat.timeout_ms",
                self.wechat.timeout_ms.get(),
                10 * 60_000,
                "use e.g. 5000",
            ),
            (
                "wechat.connect_timeout_ms",
                self.wechat.connect_timeout_ms.get(),
                10 * 60_000,
                "use e.g. 1000",
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
                10 * 60_000,
                "use e.g. 2000",
            ),
            (
                "grpc.drain_timeout_ms",
                self.grpc.drain_timeout_ms,
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "gateway.backend_timeout_ms",
                self.gateway.backend_timeout_ms.get(),
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "gateway.drain_timeout_ms",
                self.gateway.drain_timeout_ms,
                10 * 60_000,
                "use e.g. 10000",
            ),
            (
                "token.leeway_secs",
                self.token.leeway_secs,
                300,
                "use e.g. 30",
            ),
        ] {
            if value > max {
                return Err(invalid(
                    setting,
                    format!("{value} is above the maximum of {max}"),
                    fix,
                ));
            }
        }
        if self.sessions.idle_timeout_secs < 60
            || self.sessions.absolute_lifetime_secs < 60
            || self.sessions.cleanup_interval_secs == 0
        {
            return Err(invalid(
                "sessions",
                "idle_timeout_secs and absolute_lifetime_secs must be at least 60, cleanup_interval_secs positive",
                "use e.g. idle 2592000 (30 days), absolute 7776000 (90 days)",
            ));
        }
        if self.token.issuer.is_empty() || self.token.audience.is_empty() {
            return Err(invalid(
                "token.issuer",
                "issuer and audience must be set",
                "use e.g. mp-auth",
            ));
        }
        Ok(())
    }
}

impl WechatSettings {
    pub fn timeout(&self) -> Duration {
        self.timeout_ms.duration()
    }
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout_ms.duration()
    }
}

impl TokenSettings {
    /// The HS256 secret, inline (checked while parsing) or from
    /// `hs256_secret_file` (checked here).
    pub fn hs256_secret(&self) -> Result<Option<Hs256Secret>, ConfigError> {
        if let Some(secret) = &self.hs256_secret {
            return Ok(Some(secret.clone()));
        }
        resolve_secret("token.hs256_secret_file", &None, &self.hs256_secret_file)?
            .map(Hs256Secret::parse)
            .transpose()
            .map_err(|problem| {
                invalid(
                    "token.hs256_secret_file",
                    problem,
                    "write at least 32 random bytes to the file",
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_that_would_wrap_the_arithmetic_are_refused() {
        let mut s = Settings::default();
        s.token.ttl_secs = u64::MAX;
        let err = s.validate_common().unwrap_err().to_string();
        assert!(err.contains("token.ttl_secs"), "{err}");
        let mut s = Settings::default();
        s.session_keys.ttl_secs = u64::MAX / 2;
        assert!(s.validate_common().is_err());
        let mut s = Settings::default();
        s.database.acquire_timeout_ms = u64::MAX;
        assert!(s.validate_common().is_err());
        assert!(Settings::default().validate_common().is_ok());
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let mut s = Settings::default();
        s.token.hs256_secret = Some(
            Hs256Secret::parse(SecretString::from("super-secret-signing-key-0123456789")).unwrap(),
        );
        s.token.signing_key = Some(SecretString::from(
            "-----BEGIN PRIVATE KEY-----super-secret",
        ));
        s.token.verification_keys = vec![SecretString::from("super-secret-old-key")];
        s.apps.push(AppSettings {
            app_id: "wx1".into(),
            app_secret: Some(SecretString::from("app-secret-xyz")),
            app_secret_file: None,
        });
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("super-secret"));
        assert!(!dbg.contains("app-secret-xyz"));
    }

    #[test]
    fn an_absurd_leeway_is_refused() {
        let mut s = Settings::default();
        s.token.leeway_secs = 3600;
        let err = s.validate_common().unwrap_err().to_string();
        assert!(err.contains("token.leeway_secs"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn a_base_url_that_is_not_http_is_refused_while_loading() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MP_AUTH_WECHAT__BASE_URL", "ftp://x");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("must be an http(s) URL"), "{err}");
            assert!(err.to_lowercase().contains("wechat.base_url"), "{err}");
            jail.set_env("MP_AUTH_WECHAT__BASE_URL", "http://127.0.0.1:9400");
            jail.set_env("MP_AUTH_WECHAT__TIMEOUT_MS", "0");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("positive number of milliseconds"), "{err}");
            jail.set_env("MP_AUTH_WECHAT__TIMEOUT_MS", "5000");
            jail.set_env("MP_AUTH_TOKEN__HS256_SECRET", "short");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("at least 32 bytes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_apps_say_how_to_configure_one() {
        let err = Settings::default()
            .app_credentials()
            .unwrap_err()
            .to_string();
        assert!(err.contains("app_id"), "{err}");
    }

    #[test]
    fn secrets_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef0123456789abcdef-file\n").unwrap();
        let secret = resolve_secret("token.hs256_secret", &None, &Some(path)).unwrap();
        assert_eq!(
            secret.unwrap().expose_secret(),
            "0123456789abcdef0123456789abcdef-file"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn file_and_environment_layers_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("mp.toml", "[grpc]\nlisten = \"127.0.0.1:1234\"\n[[apps]]\napp_id = \"wxa\"\napp_secret = \"s\"\n")?;
            jail.set_env("MP_AUTH_TOKEN__TTL_SECS", "600");
            jail.set_env("DATABASE_URL", "mysql://u:p@127.0.0.1/db");
            let s =
                Settings::load(Some(std::path::Path::new("mp.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.grpc.listen.port(), 1234);
            assert_eq!(s.token.ttl_secs, 600);
            assert_eq!(s.apps.len(), 1);
            assert_eq!(
                s.database_url().map_err(|e| e.to_string())?.expose_secret(),
                "mysql://u:p@127.0.0.1/db"
            );
            Ok(())
        });
    }
}
