//! The disconnect row's check. Clients of some logins hang up mid-request; once the
//! service is quiet, every login it ran successfully must have its session row
//! (a login that reached WeChat finishes and records itself whoever still listens).
//! What the service ran comes from its own counters (`/metrics` of every replica),
//! what it recorded from the database.

use crate::{BenchArgs, report::DisconnectCheck};
use anyhow::Context as _;
use diesel::{QueryableByName, sql_types::BigInt};
use diesel_async::{AsyncConnection, AsyncMysqlConnection, RunQueryDsl};
use secrecy::ExposeSecret as _;
use std::time::{Duration, Instant};

/// How long the service may take to finish the logins whose callers left.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// The counters must stay unchanged this long to call the service quiet.
const QUIET_FOR: Duration = Duration::from_millis(600);

/// The service's counters and the database's session rows at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    logins: u64,
    succeeded: u64,
    after_caller_left: u64,
    sessions: u64,
}

impl Counts {
    /// Reads the counters of every `--metrics` endpoint and the session rows.
    pub async fn read(args: &BenchArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !args.metrics.is_empty(),
            "--hang-up-every needs --metrics (the service's Prometheus endpoints)"
        );
        let url = args
            .database_url
            .as_ref()
            .context("--hang-up-every needs --database-url")?;
        let client = reqwest::Client::new();
        let mut counts = Self::default();
        for endpoint in &args.metrics {
            let text = client
                .get(endpoint)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("reading {endpoint}"))?
                .text()
                .await
                .with_context(|| format!("reading {endpoint}"))?;
            counts.logins += sum(&text, "mp_auth_logins_total", None);
            counts.succeeded += sum(&text, "mp_auth_logins_total", Some("outcome=\"success\""));
            counts.after_caller_left += sum(
                &text,
                "mp_auth_logins_completed_after_caller_left_total",
                None,
            );
        }
        let mut conn = AsyncMysqlConnection::establish(url.expose_secret())
            .await
            .context("connecting to --database-url")?;
        let Count { n } = diesel::sql_query("SELECT COUNT(*) AS n FROM sessions")
            .get_result(&mut conn)
            .await
            .context("counting sessions")?;
        counts.sessions = u64::try_from(n).unwrap_or(0);
        Ok(counts)
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Waits until the service is quiet (its counters stop moving), then compares what
/// it ran since `before` with the session rows written since.
pub async fn check(args: &BenchArgs, before: &Counts) -> anyhow::Result<DisconnectCheck> {
    let started = Instant::now();
    let mut last = Counts::read(args).await?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < QUIET_FOR && started.elapsed() < SETTLE_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = Counts::read(args).await?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    Ok(DisconnectCheck {
        accepted: last.logins.saturating_sub(before.logins),
        succeeded: last.succeeded.saturating_sub(before.succeeded),
        completed_after_caller_left: last
            .after_caller_left
            .saturating_sub(before.after_caller_left),
        recorded: last.sessions.saturating_sub(before.sessions),
    })
}

/// The sum of the Prometheus samples named `name` (with `label` among their labels).
fn sum(text: &str, name: &str, label: Option<&str>) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            if metric != name || label.is_some_and(|l| !series.contains(l)) {
                return None;
            }
            value.parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_label() {
        let text = "\
# TYPE mp_auth_logins_total counter
mp_auth_logins_total{outcome=\"success\",reason=\"OK\",flow=\"legacy\"} 10
mp_auth_logins_total{outcome=\"error\",reason=\"LOGIN_CODE_USED\",flow=\"legacy\"} 2
mp_auth_logins_total{outcome=\"success\",reason=\"OK\",flow=\"code\"} 5
mp_auth_logins_total_other 99
mp_auth_logins_completed_after_caller_left_total 3
";
        assert_eq!(sum(text, "mp_auth_logins_total", None), 17);
        assert_eq!(
            sum(text, "mp_auth_logins_total", Some("outcome=\"success\"")),
            15
        );
        assert_eq!(
            sum(
                text,
                "mp_auth_logins_completed_after_caller_left_total",
                None
            ),
            3
        );
        assert_eq!(sum(text, "absent", None), 0);
    }
}
