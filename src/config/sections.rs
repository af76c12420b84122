//! The sections of [`Settings`](super::Settings), their defaults, and the
//! accessors that turn their raw values into what the service uses.

use super::{ConfigError, Hs256Secret, HttpUrl, Millis, invalid, resolve_secret};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// The `[[callers]]` entries of a `callers_file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CallersFile {
    #[serde(default)]
    pub(super) callers: Vec<CallerSettings>,
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
    /// How the login transaction talks to a MySQL-family server: `auto` (one
    /// multi-statement request unless the server is a Galera node), `batch` or
    /// `separate` (one statement per round trip; for a Galera cluster behind a proxy
    /// that does not pass `wsrep_on` through).
    pub login_statements: LoginStatements,
}

/// See [`DatabaseSettings::login_statements`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginStatements {
    /// A multi-statement request (1 round trip), statement by statement on a Galera node.
    #[default]
    Auto,
    /// Always a multi-statement request.
    Batch,
    /// Always statement by statement (5 round trips with `RETURNING`, 6 without).
    Separate,
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
    /// HTTP/2 connections to the backend, used in turn. Behind a Kubernetes Service
    /// (which balances connections, not requests) each can land on another replica.
    /// One is the cheapest per call (2 and 4 measured no faster on one machine).
    pub backend_connections: u32,
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
            login_statements: LoginStatements::Auto,
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
            backend_connections: 1,
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
