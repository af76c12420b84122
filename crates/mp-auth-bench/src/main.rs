//! `mp-auth-bench`: a reproducible load generator for the login, the session
//! refresh and token verification. Codes and phone payloads are minted through the
//! simulator before the clock starts (`--flow refresh`: sessions are opened by logins
//! before it starts); requests go to the gRPC service or the HTTP gateway in a closed
//! or open loop; the report has throughput, latency percentiles, errors by reason,
//! CPU and peak RSS per process, and a duplicate-user check. `--limit-run` measures
//! the database transaction alone; `--verify-run` measures `Auth.VerifyToken`.
//!
//! Layout:
//! - [`workload`]: returning and new users, minting through the simulator.
//! - [`target`]: the gRPC and HTTP clients.
//! - [`driver`]: closed and open loops, latency histograms.
//! - [`limit`]: the database-only limit run.
//! - [`verify`]: the `VerifyToken` run.
//! - [`disconnect`]: the disconnect row's check (what the service recorded).
//! - [`procstat`]: CPU and RSS from `/proc`.
//! - [`report`]: table, JSON, medians.

//!
//! Run it through `scripts/bench.sh` (starts everything and runs the matrix);
//! settings (e.g. `MP_AUTH_DATABASE__POOL_SIZE`) load as in `mp-auth`.

mod disconnect;
mod driver;
mod limit;
mod procstat;
mod report;
mod target;
mod verify;
mod workload;

use anyhow::Context as _;
use clap::Parser as _;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use driver::{Pace, Tally};
use mp_auth::{
    config::{LogSettings, Settings},
    domain::AppId,
    store::Store,
};
use procstat::{Sample, Watched};
use report::RunReport;
use secrecy::SecretString;
use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};
use target::Target;
use wechat_sim::SimClient;
use workload::{Flow, NewUsers, User};

/// Load-test the login (gRPC or gateway) or the database alone (`--limit-run`).
#[derive(Debug, clap::Parser)]
#[command(name = "mp-auth-bench", version, about)]
struct Cli {
    /// Optional TOML configuration file of the service (layered under MP_AUTH_* variables).
    #[arg(long, env = "MP_AUTH_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    args: BenchArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match mp_auth::cli::run_async(run(settings, cli.args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which edge the load goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// `mpauth.v1.Auth/MiniProgramLogin` directly.
    Grpc,
    /// `POST /auth/mp_login` on the HTTP gateway.
    Http,
}

/// Arguments of `mp-auth-bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Where the load goes.
    #[arg(long, value_enum, default_value = "grpc")]
    pub target: TargetKind,
    /// The gRPC service's URL. Several, comma-separated (replicas), share the load:
    /// the connections go to them in turn, and so do the workers.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:50051")]
    pub grpc: Vec<String>,
    /// The HTTP gateway's base URL. Several, comma-separated, share the load by worker.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    pub gateway: Vec<String>,
    /// The WeChat simulator the service talks to (codes are minted there).
    #[arg(long, default_value = "http://127.0.0.1:9400")]
    pub simulator: String,
    /// The mini program's AppID (configured in the service and the simulator).
    #[arg(long, default_value = "wx_bench_app")]
    pub app_id: String,
    /// The service's database: count users and duplicates after each run; required by `--limit-run`.
    #[arg(long)]
    pub database_url: Option<SecretString>,
    /// Phone flow of the requests.
    #[arg(long, value_enum, default_value = "legacy")]
    pub flow: Flow,
    /// Share of requests by returning users (the seeded population); the rest are new phones.
    #[arg(long, default_value_t = 0.5)]
    pub returning_ratio: f64,
    /// Size of the returning population (default: as many as the returning requests of one run).
    #[arg(long)]
    pub population: Option<usize>,
    /// Do not log the returning population in before the runs (it was seeded already).
    #[arg(long)]
    pub no_seed: bool,
    /// Requests per measured run (`0` with seeding: only seed).
    #[arg(long, default_value_t = 20_000)]
    pub requests: usize,
    /// Stop a measured run after this long (the run still has at most `--requests` codes).
    #[arg(long, value_parser = report::parse_secs)]
    pub duration: Option<Duration>,
    /// Unmeasured requests before each run.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Closed loop: this many requests in flight.
    #[arg(long, short = 'c', default_value_t = 64)]
    pub concurrency: usize,
    /// Open loop instead: this many requests per second, latency from the intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open loop: cap on outstanding requests.
    #[arg(long, default_value_t = 10_000)]
    pub max_in_flight: usize,
    /// gRPC: workers sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 32)]
    pub tasks_per_connection: usize,
    /// The disconnect row: the client of every Nth login hangs up `--hang-up-after-ms`
    /// after sending it (0: never). Needs `--database-url` and `--metrics` for its check.
    #[arg(long, default_value_t = 0)]
    pub hang_up_every: usize,
    /// The disconnect row: how long after sending a login its client hangs up.
    #[arg(long, default_value_t = 5)]
    pub hang_up_after_ms: u64,
    /// The service replicas' Prometheus endpoints (comma-separated), read by the
    /// disconnect row's check (`mp_auth_logins_total`).
    #[arg(long, value_delimiter = ',')]
    pub metrics: Vec<String>,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Parallel calls to the simulator while minting.
    #[arg(long, default_value_t = 64)]
    pub mint_parallel: usize,
    /// Measured runs; the summary is their median.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Processes to watch, as NAME=PID (repeatable). Default: find `mp-auth serve|gateway|wechat-sim` and `mariadbd` in /proc.
    #[arg(long = "pid", value_name = "NAME=PID", value_parser = procstat::parse_pid)]
    pub pids: Vec<Watched>,
    /// Measure `Store::record_login` alone at the same concurrency and mix (no gRPC, HTTP or WeChat).
    #[arg(long)]
    pub limit_run: bool,
    /// Measure `Auth.VerifyToken` instead of logins (needs `--api-key`).
    #[arg(long, conflicts_with = "limit_run")]
    pub verify_run: bool,
    /// Verify run: the API key of a caller with `tokens:verify`.
    #[arg(long, env = "BENCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Verify run: distinct users (and tokens) verified round robin.
    #[arg(long, default_value_t = 1_000)]
    pub tokens: usize,
    /// Limit run: connections in the store's pool (default: `database.pool_size`, like the server).
    #[arg(long)]
    pub pool_size: Option<u32>,
    /// A name for the case in reports (default: built from the flags).
    #[arg(long)]
    pub label: Option<String>,
    /// Write every run and the median as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Append the median as a markdown table row here (header written when the file is new).
    #[arg(long)]
    pub table: Option<PathBuf>,
}

impl BenchArgs {
    fn pace(&self) -> Pace {
        match self.rate {
            Some(rate) => Pace::Open {
                rate,
                max_in_flight: self.max_in_flight,
            },
            None => Pace::Closed {
                concurrency: self.concurrency,
            },
        }
    }

    fn label(&self) -> String {
        if let Some(label) = &self.label {
            return label.clone();
        }
        let edge = match (self.limit_run, self.target) {
            (true, _) => "limit",
            _ if self.verify_run => "VerifyToken",
            (false, TargetKind::Grpc) => "grpc",
            (false, TargetKind::Http) => "gateway",
        };
        let flow = match self.flow {
            Flow::Legacy => "legacy",
            Flow::Code => "code",
            Flow::Refresh => "refresh",
        };
        let pace = match self.rate {
            Some(rate) => format!("rate={rate}/s"),
            None => format!("c={}", self.concurrency),
        };
        if self.limit_run || self.verify_run {
            format!("{edge} {pace}")
        } else if self.hang_up_every > 0 {
            format!(
                "{edge} {flow} {pace}, every {} hangs up after {} ms",
                ordinal(self.hang_up_every),
                self.hang_up_after_ms
            )
        } else {
            format!("{edge} {flow} {pace}")
        }
    }

    /// Which logins hang up, and when.
    fn hang_up(&self) -> Option<HangUp> {
        (self.hang_up_every > 0).then(|| HangUp {
            every: self.hang_up_every,
            after: Duration::from_millis(self.hang_up_after_ms),
        })
    }

    fn population(&self) -> usize {
        if self.returning_ratio <= 0.0 {
            return 0;
        }
        self.population.unwrap_or_else(|| {
            ((self.requests as f64) * self.returning_ratio.clamp(0.0, 1.0)).round() as usize
        })
    }
}

/// "2nd", "3rd", "10th".
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    if n == 1 {
        "login".into()
    } else {
        format!("{n}{suffix} login")
    }
}

/// The disconnect row's clients: every `every`th login hangs up `after` sending.
#[derive(Debug, Clone, Copy)]
struct HangUp {
    every: usize,
    after: Duration,
}

/// Runs the benchmark; exits non-zero when a run leaves duplicate users.
async fn run(settings: Settings, args: BenchArgs) -> anyhow::Result<ExitCode> {
    mp_auth::telemetry::init(&LogSettings {
        filter: "warn".into(),
        ..settings.log.clone()
    });
    let app_id = AppId::parse(&args.app_id).context("--app-id")?;
    let mut watched = if args.pids.is_empty() {
        procstat::discover()
    } else {
        args.pids.clone()
    };
    watched.push(Watched {
        name: "bench".into(),
        pid: std::process::id(),
    });
    let label = args.label();
    let population = args.population();
    let mut new_users = NewUsers::new();
    let mut runs = Vec::new();

    let runner = if args.verify_run {
        let api_key = args
            .api_key
            .as_deref()
            .context("--verify-run needs --api-key (a caller with tokens:verify)")?;
        let lanes = match args.rate {
            Some(_) => args.max_in_flight.min(256),
            None => args.concurrency,
        };
        eprintln!("logging {} users in for their tokens...", args.tokens);
        let target = verify::VerifyTarget::prepare(
            &args.grpc,
            &SimClient::new(&args.simulator),
            app_id.as_str(),
            api_key,
            args.tokens.max(1),
            lanes.div_ceil(args.tasks_per_connection.max(1)),
            Duration::from_millis(args.timeout_ms),
            args.mint_parallel,
        )
        .await?;
        Runner::Verify(target)
    } else if args.limit_run {
        let url = args
            .database_url
            .as_ref()
            .context("--limit-run needs --database-url")?;
        let mut db = settings.database.clone();
        db.pool_size = args.pool_size.unwrap_or(db.pool_size);
        db.acquire_timeout_ms = db.acquire_timeout_ms.max(10_000);
        let store = Store::connect(url, &db)
            .await
            .context("connecting to the database")?;
        if !args.no_seed && population > 0 {
            eprintln!("seeding {population} returning users (limit run)...");
            limit::seed(&store, &app_id, population, args.concurrency).await?;
        }
        Runner::Limit {
            store,
            app_id: app_id.clone(),
        }
    } else {
        let sim = SimClient::new(&args.simulator);
        let timeout = Duration::from_millis(args.timeout_ms);
        let target = match args.target {
            TargetKind::Grpc => {
                let lanes = match args.rate {
                    Some(_) => args.max_in_flight.min(256),
                    None => args.concurrency,
                };
                let connections = lanes.div_ceil(args.tasks_per_connection.max(1));
                Target::grpc(&args.grpc, app_id.as_str(), connections, timeout).await?
            }
            TargetKind::Http => Target::http(
                &args.gateway,
                app_id.as_str(),
                args.concurrency.max(64),
                timeout,
            )?,
        };
        if !args.no_seed && population > 0 {
            eprintln!("seeding {population} returning users through the service...");
            let users: Vec<User> = (0..population).map(workload::returning_user).collect();
            let items =
                workload::mint(&sim, app_id.as_str(), args.flow, &users, args.mint_parallel)
                    .await?;
            let closed = Pace::Closed {
                concurrency: args.concurrency,
            };
            let tally = send_all(target.clone(), Arc::new(items), closed, None, None).await;
            if tally.error_count() > 0 {
                anyhow::bail!(
                    "seeding failed: {:?} (is the service configured for app {} and this simulator?)",
                    tally.errors,
                    app_id
                );
            }
        }
        if args.flow == Flow::Refresh {
            // Four sessions per worker: refreshes of one session are serialised (a
            // token is presented once), so workers rarely wait for each other.
            let count = args.concurrency.max(1) * 4;
            eprintln!("opening {count} sessions to refresh...");
            let users: Vec<User> = (0..count).map(workload::returning_user).collect();
            let items = workload::mint(
                &sim,
                app_id.as_str(),
                Flow::Code,
                &users,
                args.mint_parallel,
            )
            .await?;
            let mut tokens = Vec::with_capacity(items.len());
            for (lane, item) in items.iter().enumerate() {
                let token = target
                    .open_session(lane, item)
                    .await
                    .map_err(|reason| anyhow::anyhow!("opening a session failed: {reason}"))?;
                tokens.push(tokio::sync::Mutex::new(token));
            }
            Runner::Refresh {
                target,
                sessions: Arc::new(tokens),
            }
        } else {
            Runner::Service {
                sim,
                target,
                app_id: app_id.as_str().to_owned(),
                flow: args.flow,
                mint_parallel: args.mint_parallel,
            }
        }
    };

    for run in 1..=args.runs.max(1) {
        if args.requests == 0 {
            break;
        }
        let warmup = workload::plan(
            args.warmup,
            args.returning_ratio,
            population,
            &mut new_users,
        );
        let users = workload::plan(
            args.requests,
            args.returning_ratio,
            population,
            &mut new_users,
        );
        let prepared = runner.prepare(warmup, users).await?;
        if args.warmup > 0 {
            runner.go(&prepared, true, args.pace(), None, None).await?;
        }
        let hang_up = args.hang_up();
        let disconnect_before = match hang_up {
            Some(_) => Some(disconnect::Counts::read(&args).await?),
            None => None,
        };
        let (before, busy_before) = (samples(&watched), procstat::machine_busy());
        let tally = runner
            .go(&prepared, false, args.pace(), args.duration, hang_up)
            .await?;
        let (after, busy_after) = (samples(&watched), procstat::machine_busy());
        let procs: Vec<_> = watched
            .iter()
            .zip(before.into_iter().zip(after))
            .map(|(w, (b, a))| (w.name.clone(), w.pid, b, a))
            .collect();
        let busy = busy_after
            .zip(busy_before)
            .map(|(a, b)| a.saturating_sub(b));
        let mut report = RunReport::new(&label, &tally, &procs, busy);
        if let Some(before) = &disconnect_before {
            report.disconnect = Some(disconnect::check(&args, before).await?);
        }
        if let Some(url) = &args.database_url {
            let (users, dups) = count_users(url).await?;
            report.users = Some(users);
            report.duplicate_phones = Some(dups);
        }
        print!(
            "{}",
            report::render(&report, &format!("run {run}/{}", args.runs))
        );
        runs.push(report);
    }

    let median = report::median_of(&runs);
    if let Some(median) = &median
        && runs.len() > 1
    {
        print!(
            "{}",
            report::render(median, &format!("median of {}", runs.len()))
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({ "runs": runs, "median": median });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let (Some(path), Some(median)) = (&args.table, &median) {
        report::append_row(path, median).with_context(|| format!("writing {}", path.display()))?;
    }
    let dups = runs
        .iter()
        .filter_map(|r| r.duplicate_phones)
        .max()
        .unwrap_or(0);
    if dups > 0 {
        eprintln!("FAIL: {dups} phone(s) belong to more than one user");
        return Ok(ExitCode::FAILURE);
    }
    let lost: u64 = runs
        .iter()
        .filter_map(|r| r.disconnect.map(|d| d.lost()))
        .sum();
    if lost > 0 {
        eprintln!("FAIL: {lost} successful login(s) left no session row");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn samples(watched: &[Watched]) -> Vec<Option<Sample>> {
    watched.iter().map(|w| procstat::sample(w.pid)).collect()
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Users in the database, and phones held by more than one of them.
async fn count_users(url: &SecretString) -> anyhow::Result<(i64, i64)> {
    use secrecy::ExposeSecret as _;
    let mut conn = AsyncMysqlConnection::establish(url.expose_secret())
        .await
        .context("connecting to --database-url")?;
    let Count { n: users } = diesel::sql_query("SELECT COUNT(*) AS n FROM users")
        .get_result(&mut conn)
        .await
        .context("counting users")?;
    let Count { n: dups } = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM \
         (SELECT phone, COUNT(*) FROM users GROUP BY phone HAVING COUNT(*) > 1) d",
    )
    .get_result(&mut conn)
    .await
    .context("counting duplicate phones")?;
    Ok((users, dups))
}

/// Requests ready to send: the warm-up's and the measured run's.
enum Prepared {
    Service {
        warmup: Arc<Vec<workload::Item>>,
        run: Arc<Vec<workload::Item>>,
    },
    Limit {
        warmup: Vec<User>,
        run: Vec<User>,
    },
    /// Verifications need nothing per run: the tokens are ready.
    Verify {
        warmup: usize,
        run: usize,
    },
    Refresh {
        warmup: usize,
        run: usize,
    },
}

/// How logins are issued: through the service, or the database transaction alone.
enum Runner {
    Service {
        sim: SimClient,
        target: Target,
        app_id: String,
        flow: Flow,
        mint_parallel: usize,
    },
    Limit {
        store: Store,
        app_id: AppId,
    },
    Verify(verify::VerifyTarget),
    /// Refreshes of sessions opened before the clock started.
    Refresh {
        target: Target,
        /// Each session's current refresh token (one refresh at a time per session).
        sessions: Arc<Vec<tokio::sync::Mutex<String>>>,
    },
}

impl Runner {
    /// Mints codes (service) before any clock starts.
    async fn prepare(&self, warmup: Vec<User>, run: Vec<User>) -> anyhow::Result<Prepared> {
        match self {
            Self::Service {
                sim,
                app_id,
                flow,
                mint_parallel,
                ..
            } => {
                let mint = |users: Vec<User>| async move {
                    workload::mint(sim, app_id, *flow, &users, *mint_parallel).await
                };
                Ok(Prepared::Service {
                    warmup: Arc::new(mint(warmup).await?),
                    run: Arc::new(mint(run).await?),
                })
            }
            Self::Limit { .. } => Ok(Prepared::Limit { warmup, run }),
            Self::Verify(_) => Ok(Prepared::Verify {
                warmup: warmup.len(),
                run: run.len(),
            }),
            Self::Refresh { .. } => Ok(Prepared::Refresh {
                warmup: warmup.len(),
                run: run.len(),
            }),
        }
    }

    /// Sends the warm-up's or the run's requests.
    async fn go(
        &self,
        prepared: &Prepared,
        warmup: bool,
        pace: Pace,
        deadline: Option<Duration>,
        hang_up: Option<HangUp>,
    ) -> anyhow::Result<Tally> {
        match (self, prepared) {
            (Self::Service { target, .. }, Prepared::Service { warmup: w, run }) => {
                let items = if warmup { w.clone() } else { run.clone() };
                Ok(send_all(target.clone(), items, pace, deadline, hang_up).await)
            }
            (Self::Limit { store, app_id }, Prepared::Limit { warmup: w, run }) => {
                let users = if warmup { w } else { run };
                limit::run(store.clone(), app_id.clone(), users, pace, deadline).await
            }
            (Self::Verify(target), Prepared::Verify { warmup: w, run }) => Ok(target
                .run(if warmup { *w } else { *run }, pace, deadline)
                .await),
            (Self::Refresh { target, sessions }, Prepared::Refresh { warmup: w, run }) => {
                let count = if warmup { *w } else { *run };
                let (target, sessions) = (target.clone(), sessions.clone());
                Ok(driver::drive(count, pace, deadline, move |lane, i| {
                    let (target, sessions) = (target.clone(), sessions.clone());
                    async move {
                        let mut token = sessions[i % sessions.len()].lock().await;
                        let (outcome, next) = target.refresh(lane, &token).await;
                        if let Some(next) = next {
                            *token = next;
                        }
                        outcome
                    }
                })
                .await)
            }
            _ => anyhow::bail!("prepared requests do not match the runner"),
        }
    }
}

async fn send_all(
    target: Target,
    items: Arc<Vec<workload::Item>>,
    pace: Pace,
    deadline: Option<Duration>,
    hang_up: Option<HangUp>,
) -> Tally {
    driver::drive(items.len(), pace, deadline, move |lane, i| {
        let (target, items) = (target.clone(), items.clone());
        async move {
            match hang_up {
                Some(h) if i % h.every == 0 => {
                    target.login_then_hang_up(lane, &items[i], h.after).await
                }
                _ => target.login(lane, &items[i]).await,
            }
        }
    })
    .await
}
