//! What a run measured, as a table for people and JSON for tools; the median of
//! several runs; a markdown row for `scripts/bench.sh`'s results table.

use crate::{driver::Tally, procstat::Sample};
use serde::Serialize;
use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

/// CPU and memory of one process over one run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// Role name (`server`, `gateway`, `mariadb`, `simulator`, `bench`).
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// CPU time (user + system) spent during the measured phase, ms.
    pub cpu_ms: u64,
    /// CPU time per successful login, µs.
    pub cpu_us_per_login: f64,
    /// Share of one core during the measured phase (1.0 = one core busy).
    pub cores: f64,
    /// Peak resident set size since the process started, MiB (`VmHWM`).
    pub peak_rss_mib: f64,
}

/// The disconnect row's check: what the service did with logins whose client hung up.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct DisconnectCheck {
    /// Logins the service ran to the end during the phase (`mp_auth_logins_total`,
    /// every outcome, summed over the scraped replicas), once the service was quiet.
    pub accepted: u64,
    /// Of those, successful.
    pub succeeded: u64,
    /// Of those, finished after their caller had left
    /// (`mp_auth_logins_completed_after_caller_left_total`).
    pub completed_after_caller_left: u64,
    /// Sessions written to the database during the phase (one per successful login).
    pub recorded: u64,
}

impl DisconnectCheck {
    /// Successful logins without their session row: must be 0.
    pub fn lost(&self) -> u64 {
        self.succeeded.saturating_sub(self.recorded)
    }
}

/// One measured phase.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// What was measured, e.g. `grpc legacy c=64`.
    pub label: String,
    /// Requests completed (successes and errors).
    pub requests: u64,
    /// Successful logins.
    pub ok: u64,
    /// Logins that created their user.
    pub new_users: u64,
    /// Errors by reason.
    pub errors: BTreeMap<String, u64>,
    /// Requests whose client hung up before the answer (the disconnect row).
    pub abandoned: u64,
    /// What the service recorded of them (the disconnect row).
    pub disconnect: Option<DisconnectCheck>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Successful logins per second.
    pub logins_per_s: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Slowest request, ms.
    pub max_ms: f64,
    /// Processes watched.
    pub processes: Vec<ProcessReport>,
    /// Cores the whole machine kept busy during the run (of `nproc`).
    pub machine_cores: f64,
    /// Of those, cores busy outside the watched processes (other work on the machine:
    /// a noisy neighbour makes the run unrepresentative).
    pub other_cores: f64,
    /// Users in the database after the run (with `--database-url`).
    pub users: Option<i64>,
    /// Phones held by more than one user after the run (with `--database-url`); must be 0.
    pub duplicate_phones: Option<i64>,
}

impl RunReport {
    /// Builds the report of a phase from its tally and process samples before/after.
    pub fn new(
        label: &str,
        tally: &Tally,
        processes: &[(String, u32, Option<Sample>, Option<Sample>)],
        machine_busy: Option<Duration>,
    ) -> Self {
        let h = &tally.latency_us;
        let ms = |us: u64| us as f64 / 1000.0;
        let secs = tally.elapsed.as_secs_f64().max(1e-9);
        let processes = processes
            .iter()
            .filter_map(|(name, pid, before, after)| {
                let (before, after) = ((*before)?, (*after)?);
                let cpu = after.cpu.saturating_sub(before.cpu);
                Some(ProcessReport {
                    name: name.clone(),
                    pid: *pid,
                    cpu_ms: cpu.as_millis() as u64,
                    cpu_us_per_login: if tally.ok == 0 {
                        0.0
                    } else {
                        cpu.as_micros() as f64 / tally.ok as f64
                    },
                    cores: cpu.as_secs_f64() / secs,
                    peak_rss_mib: after.peak_rss as f64 / (1024.0 * 1024.0),
                })
            })
            .collect::<Vec<ProcessReport>>();
        let machine_cores = machine_busy.map_or(0.0, |d| d.as_secs_f64() / secs);
        let watched: f64 = processes.iter().map(|p| p.cores).sum();
        Self {
            label: label.to_owned(),
            machine_cores,
            other_cores: (machine_cores - watched).max(0.0),
            requests: tally.ok + tally.error_count() + tally.abandoned,
            ok: tally.ok,
            new_users: tally.new_users,
            errors: tally.errors.clone(),
            abandoned: tally.abandoned,
            disconnect: None,
            elapsed_s: secs,
            logins_per_s: tally.ok as f64 / secs,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            processes,
            users: None,
            duplicate_phones: None,
        }
    }

    /// The process named `name`, if watched.
    pub fn process(&self, name: &str) -> Option<&ProcessReport> {
        self.processes.iter().find(|p| p.name == name)
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The median of several runs, metric by metric (throughput, each percentile, CPU per
/// login); errors are summed, peak RSS and duplicates are the worst seen.
pub fn median_of(runs: &[RunReport]) -> Option<RunReport> {
    let first = runs.first()?;
    let of = |f: &dyn Fn(&RunReport) -> f64| median(runs.iter().map(f).collect());
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for run in runs {
        for (reason, n) in &run.errors {
            *errors.entry(reason.clone()).or_default() += n;
        }
    }
    let processes = first
        .processes
        .iter()
        .map(|p| {
            let each = |f: &dyn Fn(&ProcessReport) -> f64| -> Vec<f64> {
                runs.iter()
                    .filter_map(|r| r.process(&p.name).map(f))
                    .collect()
            };
            ProcessReport {
                name: p.name.clone(),
                pid: p.pid,
                cpu_ms: median(each(&|q| q.cpu_ms as f64)) as u64,
                cpu_us_per_login: median(each(&|q| q.cpu_us_per_login)),
                cores: median(each(&|q| q.cores)),
                peak_rss_mib: each(&|q| q.peak_rss_mib).into_iter().fold(0.0, f64::max),
            }
        })
        .collect();
    Some(RunReport {
        label: first.label.clone(),
        requests: runs.iter().map(|r| r.requests).sum(),
        ok: runs.iter().map(|r| r.ok).sum(),
        new_users: runs.iter().map(|r| r.new_users).sum(),
        errors,
        abandoned: runs.iter().map(|r| r.abandoned).sum(),
        disconnect: runs
            .iter()
            .filter_map(|r| r.disconnect)
            .reduce(|a, b| DisconnectCheck {
                accepted: a.accepted + b.accepted,
                succeeded: a.succeeded + b.succeeded,
                completed_after_caller_left: a.completed_after_caller_left
                    + b.completed_after_caller_left,
                recorded: a.recorded + b.recorded,
            }),
        elapsed_s: runs.iter().map(|r| r.elapsed_s).sum(),
        logins_per_s: of(&|r| r.logins_per_s),
        p50_ms: of(&|r| r.p50_ms),
        p90_ms: of(&|r| r.p90_ms),
        p99_ms: of(&|r| r.p99_ms),
        max_ms: of(&|r| r.max_ms),
        processes,
        machine_cores: of(&|r| r.machine_cores),
        other_cores: of(&|r| r.other_cores),
        users: runs.last().and_then(|r| r.users),
        duplicate_phones: runs.iter().filter_map(|r| r.duplicate_phones).max(),
    })
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "0".into();
    }
    errors
        .iter()
        .map(|(reason, n)| format!("{reason}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The table's errors cell; the disconnect row adds what the service did with the
/// logins whose client hung up.
fn errors_cell(report: &RunReport) -> String {
    let errors = errors_text(&report.errors);
    match (report.abandoned, report.disconnect) {
        (0, _) => errors,
        (n, Some(d)) => format!(
            "{errors}; {n} hung up, {} finished after the caller left, {} lost",
            d.completed_after_caller_left,
            d.lost()
        ),
        (n, None) => format!("{errors}; {n} hung up"),
    }
}

/// A human-readable block for one report.
pub fn render(report: &RunReport, heading: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{heading}: {}", report.label);
    let _ = writeln!(
        out,
        "  {:>9} logins/s  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  ({} ok, {} new users, {:.1} s)",
        format!("{:.0}", report.logins_per_s),
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.max_ms,
        report.ok,
        report.new_users,
        report.elapsed_s
    );
    let _ = writeln!(out, "  errors: {}", errors_text(&report.errors));
    if report.abandoned > 0 {
        let _ = writeln!(out, "  hung up before the answer: {}", report.abandoned);
    }
    if let Some(d) = &report.disconnect {
        let _ = writeln!(
            out,
            "  disconnect check: {} logins ran ({} ok), {} finished after their caller left, {} sessions recorded, {} lost",
            d.accepted,
            d.succeeded,
            d.completed_after_caller_left,
            d.recorded,
            d.lost()
        );
    }
    let _ = writeln!(
        out,
        "  machine: {:.2} cores busy, {:.2} of them outside the watched processes",
        report.machine_cores, report.other_cores
    );
    if !report.processes.is_empty() {
        let _ = writeln!(
            out,
            "  {:<12} {:>8} {:>12} {:>7} {:>13}",
            "process", "pid", "CPU µs/login", "cores", "peak RSS MiB"
        );
        for p in &report.processes {
            let _ = writeln!(
                out,
                "  {:<12} {:>8} {:>12.0} {:>7.2} {:>13.1}",
                p.name, p.pid, p.cpu_us_per_login, p.cores, p.peak_rss_mib
            );
        }
    }
    if let (Some(users), Some(dups)) = (report.users, report.duplicate_phones) {
        let _ = writeln!(
            out,
            "  users in database: {users}, duplicate phones: {dups}"
        );
    }
    out
}

const TABLE_HEADER: &str = "| case | logins/s | p50 ms | p90 ms | p99 ms | max ms | errors | server µs/login | gateway µs/login | mariadb µs/login | simulator µs/login | bench µs/login | machine µs/login | server RSS MiB | gateway RSS MiB | other load (cores) | dup |\n|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// Appends `report` as a markdown table row to `path` (writing the header first if new).
pub fn append_row(path: &Path, report: &RunReport) -> std::io::Result<()> {
    use std::io::Write as _;
    let fresh = std::fs::metadata(path)
        .map(|m| m.len() == 0)
        .unwrap_or(true);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if fresh {
        file.write_all(TABLE_HEADER.as_bytes())?;
    }
    let cpu = |name: &str| {
        report
            .process(name)
            .map(|p| format!("{:.0}", p.cpu_us_per_login))
            .unwrap_or_else(|| "-".into())
    };
    let rss = |name: &str| {
        report
            .process(name)
            .map(|p| format!("{:.1}", p.peak_rss_mib))
            .unwrap_or_else(|| "-".into())
    };
    writeln!(
        file,
        "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
        report.label,
        report.logins_per_s,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.max_ms,
        errors_cell(report),
        cpu("server"),
        cpu("gateway"),
        cpu("mariadb"),
        cpu("simulator"),
        cpu("bench"),
        machine_cpu(report),
        rss("server"),
        rss("gateway"),
        report.other_cores,
        report
            .duplicate_phones
            .map(|d| d.to_string())
            .unwrap_or_else(|| "-".into()),
    )
}

/// CPU time the whole machine spent per successful login (every process, the kernel's
/// interrupts included), µs.
fn machine_cpu(report: &RunReport) -> String {
    if report.logins_per_s <= 0.0 || report.machine_cores <= 0.0 {
        return "-".into();
    }
    format!("{:.0}", report.machine_cores / report.logins_per_s * 1e6)
}

/// Seconds as a `Duration` (for `--duration`).
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0) {
        return Err("must be a positive number of seconds".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(tput: f64, p99: f64, rss: f64) -> RunReport {
        RunReport {
            label: "x".into(),
            requests: 10,
            ok: 10,
            new_users: 5,
            errors: BTreeMap::from([("E".to_owned(), 1)]),
            abandoned: 0,
            disconnect: None,
            elapsed_s: 1.0,
            logins_per_s: tput,
            p50_ms: 1.0,
            p90_ms: 2.0,
            p99_ms: p99,
            max_ms: 9.0,
            machine_cores: 2.0,
            other_cores: 0.1,
            processes: vec![ProcessReport {
                name: "server".into(),
                pid: 1,
                cpu_ms: 1,
                cpu_us_per_login: tput / 10.0,
                cores: 1.0,
                peak_rss_mib: rss,
            }],
            users: Some(3),
            duplicate_phones: Some(0),
        }
    }

    #[test]
    fn the_median_is_taken_metric_by_metric_and_the_worst_rss_is_kept() {
        let m = median_of(&[
            run(100.0, 9.0, 10.0),
            run(300.0, 3.0, 30.0),
            run(200.0, 5.0, 20.0),
        ])
        .unwrap();
        assert_eq!(m.logins_per_s, 200.0);
        assert_eq!(m.p99_ms, 5.0);
        assert_eq!(m.errors.get("E"), Some(&3));
        assert_eq!(m.processes[0].peak_rss_mib, 30.0);
        assert_eq!(m.processes[0].cpu_us_per_login, 20.0);
    }

    #[test]
    fn rows_are_appended_under_one_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.md");
        append_row(&path, &run(100.0, 9.0, 10.0)).unwrap();
        append_row(&path, &run(100.0, 9.0, 10.0)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("| case |").count(), 1);
        assert_eq!(text.lines().count(), 4);
        assert!(text.contains("| x | 100 |"));
    }

    #[test]
    fn durations_parse_with_or_without_a_unit() {
        assert_eq!(parse_secs("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_secs("2.5s").unwrap(), Duration::from_millis(2500));
        assert!(parse_secs("-1").is_err());
    }
}
