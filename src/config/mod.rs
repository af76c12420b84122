//! Typed, layered settings: built-in defaults < optional TOML file (`--config`
//! or `MP_AUTH_CONFIG`) < `MP_AUTH_`-prefixed environment variables (nested
//! with `__`, e.g. `MP_AUTH_GRPC__LISTEN`). `DATABASE_URL` is honoured as diesel
//! users expect. Every secret can also come from a file (`*_file` keys, e.g.
//! `MP_AUTH_TOKEN__HS256_SECRET_FILE`), the Kubernetes way. Secrets are
//! `SecretString`s and never appear in `Debug`. Each process validates the
//! sections it uses at start-up, with messages that say how to fix the problem.

mod sections;
pub mod types;
mod validate;

pub use sections::*;
pub use types::{Hs256Secret, HttpUrl, Millis};

use crate::domain::AppId;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

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
    fn backend_connections_must_be_between_1_and_64() {
        let mut s = Settings::default();
        for bad in [0, 65] {
            s.gateway.backend_connections = bad;
            let err = s.validate_common().unwrap_err().to_string();
            assert!(err.contains("gateway.backend_connections"), "{err}");
        }
        s.gateway.backend_connections = 64;
        s.validate_common().unwrap();
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_login_statements_setting_parses_its_three_words_and_refuses_others() {
        figment::Jail::expect_with(|jail| {
            assert_eq!(
                Settings::load(None).unwrap().database.login_statements,
                LoginStatements::Auto
            );
            jail.set_env("MP_AUTH_DATABASE__LOGIN_STATEMENTS", "separate");
            assert_eq!(
                Settings::load(None).unwrap().database.login_statements,
                LoginStatements::Separate
            );
            jail.set_env("MP_AUTH_DATABASE__LOGIN_STATEMENTS", "sometimes");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("login_statements"), "{err}");
            Ok(())
        });
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
