//! Command-line interface: one subcommand per process role. Each subcommand
//! loads the layered settings, applies its flags on top, and hands off to the
//! module that owns the role.

use crate::config::{LogFormat, Settings};
use clap::{Parser, Subcommand};
use std::{path::PathBuf, process::ExitCode};

/// mp-auth: WeChat Mini Program login service (小程序一键登录).
#[derive(Debug, Parser)]
#[command(name = "mp-auth", version, about)]
pub struct Cli {
    /// Optional TOML configuration file (layered under MP_AUTH_* environment variables).
    #[arg(long, global = true, env = "MP_AUTH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format override: json or pretty.
    #[arg(long, global = true, value_parser = parse_log_format)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "json" => Ok(LogFormat::Json),
        "pretty" => Ok(LogFormat::Pretty),
        other => Err(format!("unknown log format {other:?}: use json or pretty")),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the faithful WeChat API simulator (jscode2session, stable_token,
    /// getuserphonenumber, and the /_sim/ control API).
    WechatSim(crate::simulator::cli::SimArgs),
    /// Decrypt a legacy encryptedData payload and explain exactly what is wrong with it.
    Decrypt(crate::wechat::decrypt_cmd::DecryptArgs),
    /// Run the gRPC login service (`mpauth.v1.Auth`, health, reflection).
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// All-in-one dev mode: simulator + gRPC service + gateway on an embedded SQLite database.
    Dev(crate::dev::DevArgs),
    /// Play a mini-program user: mint codes at the simulator, log in, print the token's claims.
    Login(crate::client::LoginArgs),
    /// Run the HTTP+JSON gateway for mini-programs (`POST /auth/mp_login`), a client of `serve`.
    Gateway(GatewayArgs),
    /// Load-test the login (gRPC or gateway) or the database alone (`--limit-run`).
    Bench(Box<crate::bench::BenchArgs>),
    /// Token signing keys: `keys generate` writes a new ES256 key pair.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Internal callers: `callers new-key` makes an API key and its config entry.
    #[command(subcommand)]
    Callers(CallersCommand),
}

/// `mp-auth keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write a new ES256 (P-256) key pair: `<out>.pem` (PKCS#8 private key,
    /// mode 0600: the Secret) and `<out>.pub.pem` (public key), and print its kid.
    Generate {
        /// Path prefix of the files written.
        #[arg(long, default_value = "mp-auth-signing-key")]
        out: PathBuf,
    },
}

/// `mp-auth callers ...`.
#[derive(Debug, Subcommand)]
pub enum CallersCommand {
    /// Print a new API key (give it to the calling service only) and the
    /// `[[callers]]` entry with its SHA-256 for mp-auth's configuration.
    NewKey {
        /// The calling service's name (audit logs, metrics).
        #[arg(long)]
        name: String,
        /// Comma-separated permissions, e.g. `users:read,tokens:verify`.
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
    },
}

/// Arguments of `mp-auth serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// gRPC listen address (default 0.0.0.0:50051; MP_AUTH_GRPC__LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// Run pending migrations before serving (MP_AUTH_DATABASE__MIGRATE_ON_START).
    #[arg(long)]
    pub migrate: bool,
    /// Once listening, write the bound gRPC address (e.g. `127.0.0.1:40123`) to
    /// this file, atomically: for scripts and tests that pass `--listen 127.0.0.1:0`.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
}

/// Arguments of `mp-auth gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// HTTP listen address (default 0.0.0.0:8080; MP_AUTH_GATEWAY__LISTEN).
    #[arg(long)]
    pub listen: Option<std::net::SocketAddr>,
    /// URL of the gRPC service (default http://127.0.0.1:50051; MP_AUTH_GATEWAY__BACKEND_URL).
    #[arg(long)]
    pub backend: Option<String>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(format) = cli.log_format {
        settings.log.format = format;
    }
    let result = match cli.command {
        Command::WechatSim(args) => run_async(crate::simulator::cli::run(settings, args)),
        Command::Decrypt(args) => crate::wechat::decrypt_cmd::run(&settings, args),
        Command::Serve(args) => run_async(serve(settings, args)),
        Command::Migrate => run_async(migrate(settings)),
        Command::Dev(args) => run_async(crate::dev::run(settings, args)),
        Command::Login(args) => run_async(crate::client::run(args)),
        Command::Gateway(args) => run_async(gateway(settings, args)),
        Command::Bench(args) => run_async(crate::bench::run(settings, *args)),
        Command::Keys(KeysCommand::Generate { out }) => keys_generate(&out),
        Command::Callers(CallersCommand::NewKey { name, permissions }) => {
            callers_new_key(&name, &permissions)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an async role on a multi-threaded tokio runtime.
pub fn run_async<F>(fut: F) -> anyhow::Result<ExitCode>
where
    F: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(fut)
}

async fn serve(mut settings: Settings, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        settings.grpc.listen = listen;
    }
    settings.database.migrate_on_start |= args.migrate;
    crate::telemetry::init(&settings.log);
    start_metrics(&settings).await?;
    let server = crate::grpc::GrpcServer::build(&settings).await?;
    // Poll the signal future once so its SIGTERM/SIGINT handlers are installed
    // before anyone learns the address: an early signal then drains, not kills.
    let mut shutdown = Box::pin(crate::shutdown::signal());
    if futures::poll!(&mut shutdown).is_ready() {
        return Ok(ExitCode::SUCCESS);
    }
    let addr = server.local_addr();
    tracing::info!(%addr, "gRPC server listening");
    if let Some(path) = &args.ready_file {
        write_ready_file(path, addr)?;
    }
    server.run_until(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

async fn gateway(mut settings: Settings, args: GatewayArgs) -> anyhow::Result<ExitCode> {
    if let Some(listen) = args.listen {
        settings.gateway.listen = listen;
    }
    if let Some(backend) = args.backend {
        settings.gateway.backend_url = backend;
    }
    crate::telemetry::init(&settings.log);
    start_metrics(&settings).await?;
    let gateway = crate::gateway::Gateway::build(&settings).await?;
    tracing::info!(
        addr = %gateway.local_addr(),
        backend = %settings.gateway.backend_url,
        "HTTP gateway listening"
    );
    gateway.run_until(crate::shutdown::signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `addr` to `path` through a temporary file and a rename, so a reader
/// polling for the file never sees it half-written.
fn write_ready_file(path: &std::path::Path, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{addr}\n"))
        .with_context(|| format!("writing --ready-file {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("writing --ready-file {}", path.display()))?;
    Ok(())
}

async fn migrate(settings: Settings) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&settings.log);
    let store = crate::store::Store::connect(&settings.database_url()?, &settings.database).await?;
    let applied = store.migrate().await?;
    tracing::info!(applied, "migrations applied");
    println!("{applied} migration(s) applied");
    Ok(ExitCode::SUCCESS)
}

/// Serves `/metrics` on `admin.metrics_listen`, when set, for the life of the process.
async fn start_metrics(settings: &Settings) -> anyhow::Result<()> {
    if let Some(addr) = settings.admin.metrics_listen {
        crate::telemetry::serve_metrics(addr, std::future::pending()).await?;
    }
    Ok(())
}

/// `mp-auth keys generate`: a new ES256 key pair on disk.
fn keys_generate(out: &std::path::Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    let (private, public) = crate::tokens::Es256Signer::generate()?;
    let kid = crate::tokens::Es256Signer::new(&private, &[])?
        .kid()
        .to_owned();
    let private_path = out.with_extension("pem");
    let public_path = out.with_extension("pub.pem");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&private_path).with_context(|| {
        format!(
            "creating {} (it must not exist yet)",
            private_path.display()
        )
    })?;
    std::io::Write::write_all(&mut file, private.as_bytes())?;
    std::fs::write(&public_path, public)
        .with_context(|| format!("writing {}", public_path.display()))?;
    println!("kid: {kid}");
    println!("private key (the Secret): {}", private_path.display());
    println!("public key: {}", public_path.display());
    println!(
        "use: MP_AUTH_TOKEN__SIGNING_KEY_FILE={}",
        private_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `mp-auth callers new-key`: an API key and its configuration entry.
fn callers_new_key(name: &str, permissions: &[String]) -> anyhow::Result<ExitCode> {
    for p in permissions {
        if crate::callers::Permission::parse(p).is_none() {
            let known: Vec<&str> = crate::callers::Permission::ALL
                .iter()
                .map(|p| p.as_str())
                .collect();
            anyhow::bail!("unknown permission {p:?}; known: {}", known.join(", "));
        }
    }
    let key = crate::callers::generate_key();
    let list: Vec<String> = permissions.iter().map(|p| format!("\"{p}\"")).collect();
    println!("# The API key: give it to {name} only (its own Secret), never to mp-auth.");
    println!("{key}");
    println!();
    println!("# mp-auth's callers.toml entry (only the SHA-256 of the key):");
    println!("[[callers]]");
    println!("name = \"{name}\"");
    println!("key_sha256 = \"{}\"", crate::callers::key_hash_hex(&key));
    println!("permissions = [{}]", list.join(", "));
    Ok(ExitCode::SUCCESS)
}
