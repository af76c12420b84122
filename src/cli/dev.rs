//! `mp-auth dev` (dev feature), the all-in-one dev mode: the WeChat simulator, the gRPC service and the
//! HTTP gateway in one process, on an embedded SQLite database (a file in the
//! data directory; `DATABASE_URL` switches to MySQL). It generates dev-only
//! secrets, performs one demo login through the gateway, and prints
//! copy-paste commands.

use super::login::{DEMO_APP_ID, demo_login};
use crate::{
    config::{AppSettings, LogFormat, Settings},
    gateway::Gateway,
    grpc::GrpcServer,
};
use anyhow::Context as _;
use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};
use wechat_sim::{SimApp, Simulator, SimulatorConfig};

/// Arguments of `mp-auth dev`. Every port has a default and an env override.
#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Directory for the SQLite database and the generated dev secrets.
    #[arg(long, env = "MP_AUTH_DEV_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Address every listener binds.
    #[arg(long, env = "MP_AUTH_DEV_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// WeChat simulator port (0 = any free port).
    #[arg(long, env = "MP_AUTH_DEV_SIM_PORT", default_value_t = 9400)]
    pub sim_port: u16,
    /// gRPC service port.
    #[arg(long, env = "MP_AUTH_DEV_GRPC_PORT", default_value_t = 50051)]
    pub grpc_port: u16,
    /// HTTP gateway port.
    #[arg(long, env = "MP_AUTH_DEV_HTTP_PORT", default_value_t = 8080)]
    pub http_port: u16,
    /// Skip the demo login at start-up.
    #[arg(long)]
    pub no_demo: bool,
    /// Use this MySQL/MariaDB database instead of the SQLite file. Must be given
    /// explicitly: an inherited `DATABASE_URL` (or `database.url`) is refused, so
    /// the simulator's fake users never land in a real database by accident.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// Secrets generated once per data directory (dev only!).
#[derive(Serialize, Deserialize)]
pub struct DevSecrets {
    pub app_secret: String,
    pub session_key_encryption_key: String,
}

impl DevSecrets {
    fn generate() -> anyhow::Result<Self> {
        use ring::rand::{SecureRandom, SystemRandom};
        let rng = SystemRandom::new();
        let random = |n: usize| -> anyhow::Result<String> {
            let mut buf = vec![0u8; n];
            rng.fill(&mut buf)
                .map_err(|_| anyhow::anyhow!("random generator failed"))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(buf))
        };
        Ok(Self {
            app_secret: random(16)?,
            session_key_encryption_key: random(32)?,
        })
    }

    /// Loads `dev-secrets.json` from the data directory, creating it on first run.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        let name = "dev-secrets.json";
        let text = dev_file(dir, name, || {
            Ok(serde_json::to_string_pretty(&Self::generate()?)?)
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", dir.join(name).display()))
    }
}

/// Reads `dir/name`, or creates it owner-only with `make()` on first run.
fn dev_file(
    dir: &Path,
    name: &str,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let path = dir.join(name);
    if path.exists() {
        return std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()));
    }
    let value = make()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    std::io::Write::write_all(&mut file, value.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(value)
}

/// Where dev mode listens; also written to `endpoints.json` in the data directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct DevEndpoints {
    pub simulator: String,
    pub grpc: String,
    pub gateway: String,
    pub app_id: String,
    /// The file holding dev mode's API key (every permission).
    #[serde(default)]
    pub caller_key_file: String,
}

/// Runs dev mode until SIGINT/SIGTERM.
pub async fn run(mut settings: Settings, args: DevArgs) -> anyhow::Result<ExitCode> {
    if std::env::var_os("MP_AUTH_LOG__FORMAT").is_none() {
        settings.log.format = LogFormat::Pretty;
    }
    crate::telemetry::init(&settings.log);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    // endpoints.json appears only once this run is ready (tests and scripts wait for it).
    let _ = std::fs::remove_file(args.data_dir.join("endpoints.json"));
    let secrets = DevSecrets::load_or_create(&args.data_dir)?;
    eprintln!(
        "\n  !!! DEV MODE: using DEV-ONLY secrets generated in {} and {} !!!\n  !!! Never use dev mode or these secrets in production.  !!!\n",
        args.data_dir.join("dev-secrets.json").display(),
        args.data_dir.join("dev-signing-key.pem").display()
    );

    // The simulator plays WeChat for the demo app.
    let sim_listener = tokio::net::TcpListener::bind((args.host, args.sim_port))
        .await
        .with_context(|| {
            format!(
                "binding the simulator port {} (use --sim-port or MP_AUTH_DEV_SIM_PORT)",
                args.sim_port
            )
        })?;
    let demo = SimApp {
        app_id: DEMO_APP_ID.to_owned(),
        app_secret: SecretString::from(secrets.app_secret.clone()),
        open_platform: Some("mp-auth-dev".into()),
    };
    let sim = Simulator::start(
        sim_listener,
        SimulatorConfig {
            apps: vec![demo],
            ..SimulatorConfig::default()
        },
    )
    .await?;

    settings.apps = vec![AppSettings {
        app_id: DEMO_APP_ID.into(),
        app_secret: Some(SecretString::from(secrets.app_secret.clone())),
        app_secret_file: None,
    }];
    settings.wechat.base_url = sim.base_url();
    // Faults injected into the simulator act one call at a time: no breaker
    // pause after an injected 45011 (production keeps the default cool-down).
    settings.wechat.rate_limit_cooldown_secs = 0;
    // ES256 as recommended for production: a dev key pair, made once per data directory.
    let signing_key = dev_file(&args.data_dir, "dev-signing-key.pem", || {
        crate::tokens::SigningKey::generate(crate::tokens::Algorithm::Es256)
            .map(|key| key.private_pem)
            .map_err(anyhow::Error::from)
    })?;
    settings.token.signing_key = Some(SecretString::from(signing_key));
    settings.token.signing_key_file = None;
    // A dev API key with every permission, for the Users API and VerifyToken.
    let caller_key = dev_file(&args.data_dir, "dev-caller-key", || {
        Ok(crate::callers::generate_key())
    })?;
    settings.callers.push(crate::config::CallerSettings {
        name: "dev".into(),
        key_sha256: crate::callers::key_hash_hex(caller_key.trim()),
        permissions: crate::callers::Permission::ALL
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
    });
    settings.session_keys.encryption_key = Some(SecretString::from(
        secrets.session_key_encryption_key.clone(),
    ));
    if settings.database.url.is_some() || settings.database.url_file.is_some() {
        anyhow::bail!(
            "dev mode refuses the database from DATABASE_URL / database.url: dev mode fills it \
             with simulated users. Unset DATABASE_URL to use the SQLite file in {}, or pass \
             --database-url explicitly to use a MySQL/MariaDB database on purpose",
            args.data_dir.display()
        );
    }
    settings.database.url = Some(SecretString::from(match &args.database_url {
        Some(url) => {
            eprintln!(
                "  dev mode: using the database given with --database-url (simulated users will be written to it)"
            );
            url.clone()
        }
        None => format!(
            "sqlite://{}",
            args.data_dir.join("mp-auth-dev.db").display()
        ),
    }));
    settings.database.migrate_on_start = true;
    settings.grpc.listen = SocketAddr::new(args.host, args.grpc_port);
    let grpc = GrpcServer::build(&settings).await?;
    let grpc_addr = grpc.local_addr();

    settings.gateway.listen = SocketAddr::new(args.host, args.http_port);
    // Local load tests come from one IP: no per-IP limit in dev mode unless asked for.
    if std::env::var_os("MP_AUTH_GATEWAY__RATE_LIMIT_PER_SEC").is_none() {
        settings.gateway.rate_limit_per_sec = 0;
    }
    settings.gateway.backend_url = format!("http://{grpc_addr}");
    let gateway = Gateway::build(&settings).await?;
    let gateway_addr = gateway.local_addr();

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let grpc_task = tokio::spawn(grpc.run_until(stopped(&stop_tx)));
    let gateway_task = tokio::spawn(gateway.run_until(stopped(&stop_tx)));

    let endpoints = DevEndpoints {
        simulator: sim.base_url(),
        grpc: grpc_addr.to_string(),
        gateway: format!("http://{gateway_addr}"),
        app_id: DEMO_APP_ID.into(),
        caller_key_file: args.data_dir.join("dev-caller-key").display().to_string(),
    };
    wait_ready(&endpoints.gateway).await?;
    if !args.no_demo {
        match demo_login(&endpoints.simulator, &endpoints.gateway, DEMO_APP_ID).await {
            Ok(summary) => println!("Demo login through the gateway succeeded:\n{summary}"),
            Err(e) => eprintln!("warning: the demo login failed: {e:#}"),
        }
    }
    std::fs::write(
        args.data_dir.join("endpoints.json"),
        serde_json::to_vec_pretty(&endpoints)?,
    )?;
    print_instructions(&endpoints, &settings);

    crate::shutdown::signal().await;
    let _ = stop_tx.send(());
    let (g, h) = tokio::join!(grpc_task, gateway_task);
    g??;
    h??;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_ready(gateway: &str) -> anyhow::Result<()> {
    crate::tls::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{gateway}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the service did not become ready within 10 s (see the logs above)")
}

fn print_instructions(e: &DevEndpoints, settings: &Settings) {
    let db = settings
        .database
        .url
        .as_ref()
        .map(|u| u.expose_secret().to_owned())
        .unwrap_or_default();
    let db = if db.starts_with("sqlite://") {
        db
    } else {
        "MySQL (DATABASE_URL)".to_owned()
    };
    println!(
        r#"
mp-auth dev mode is running (Ctrl-C to stop)
  WeChat simulator  {sim}
  gRPC service      {grpc}   (health, reflection enabled)
  HTTP gateway      {gw}
  database          {db}
  demo app          {app}

Log in as a simulated user (mints the codes through the simulator, prints the token's claims):
  cargo run --release -- login --user alice

Or by hand with curl:
  CODE=$(curl -s -XPOST {sim}/_sim/login -d '{{"app_id":"{app}","user":"alice"}}' -H 'content-type: application/json' | sed 's/.*"code":"\([^"]*\)".*/\1/')
  PHONE=$(curl -s -XPOST {sim}/_sim/phone -d '{{"app_id":"{app}","user":"alice"}}' -H 'content-type: application/json' | sed 's/.*"code":"\([^"]*\)".*/\1/')
  curl -s -XPOST {gw}/auth/mp_login -H 'content-type: application/json' -d "{{\"code\":\"$CODE\",\"phoneCode\":\"$PHONE\"}}"

With grpcurl (reflection is on):
  grpcurl -plaintext {grpc} list
  grpcurl -plaintext -d '{{"service":"mpauth.v1.Auth"}}' {grpc} grpc.health.v1.Health/Check
  grpcurl -plaintext -d "{{\"app_id\":\"{app}\",\"code\":\"$CODE\",\"phone_code\":\"$PHONE\"}}" {grpc} mpauth.v1.Auth/MiniProgramLogin

Internal services (Users API, VerifyToken) need an API key; dev mode made one with every permission:
  KEY=$(cat {key_file})
  grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{{"user_id":"1"}}' {grpc} mpauth.v1.Users/GetUser
  grpcurl -plaintext -H "authorization: Bearer $KEY" -d '{{"access_token":"..."}}' {grpc} mpauth.v1.Auth/VerifyToken

Tokens are ES256; the public keys (JWKS): {gw}/.well-known/jwks.json
  discovery: {gw}/.well-known/openid-configuration

OpenAPI document: {gw}/openapi.json
"#,
        sim = e.simulator,
        grpc = e.grpc,
        gw = e.gateway,
        app = e.app_id,
        key_file = e.caller_key_file,
    );
}
