//! CPU time and memory of the processes taking part, from `/proc`: CPU is
//! utime + stime of `/proc/PID/stat` (sampled before and after a run), peak RSS is
//! `VmHWM` of `/proc/PID/status`.

use std::{collections::BTreeMap, time::Duration};

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI we run on).
const TICKS_PER_SEC: u64 = 100;

/// A process watched by the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    /// A short role name: `server`, `gateway`, `simulator`, `mariadb`, `bench`.
    pub name: String,
    /// Its pid.
    pub pid: u32,
}

/// One sample of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// User + system CPU time so far.
    pub cpu: Duration,
    /// Peak resident set size so far, bytes (`VmHWM`).
    pub peak_rss: u64,
    /// Current resident set size, bytes (`VmRSS`).
    pub rss: u64,
}

/// Reads one sample; `None` when the process is gone or unreadable.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ... utime(11) stime(12).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(Sample {
        cpu: Duration::from_millis(ticks * 1000 / TICKS_PER_SEC),
        peak_rss: status_kib(&status, "VmHWM:").unwrap_or(0) * 1024,
        rss: status_kib(&status, "VmRSS:").unwrap_or(0) * 1024,
    })
}

/// CPU time the whole machine has spent busy (all cores, everything but idle and iowait),
/// from the first line of `/proc/stat`.
pub fn machine_busy() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks.get(3)? - ticks.get(4)?;
    Some(Duration::from_millis(busy * 1000 / TICKS_PER_SEC))
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The role of a process from its command line: `mp-auth serve` is `server`,
/// `mp-auth gateway` is `gateway`, `mp-auth wechat-sim` is `simulator`, `mariadbd` is `mariadb`.
pub fn role(argv: &[&str]) -> Option<&'static str> {
    let exe = argv.first()?.rsplit('/').next()?;
    match exe {
        "mariadbd" | "mysqld" => Some("mariadb"),
        "wechat-sim" => Some("simulator"),
        "mp-auth" => {
            // Skip global flags (`--config X`, `--log-format X`) to the subcommand.
            let mut args = argv[1..].iter();
            let sub = loop {
                match *args.next()? {
                    "--config" | "--log-format" => {
                        args.next();
                    }
                    a if a.starts_with('-') => {}
                    a => break a,
                }
            };
            match sub {
                "serve" => Some("server"),
                "gateway" => Some("gateway"),
                "wechat-sim" => Some("simulator"),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Finds the service's processes in `/proc` by command line (not this process).
pub fn discover() -> Vec<Watched> {
    let me = std::process::id();
    let mut found: BTreeMap<&'static str, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        let argv: Vec<&str> = cmdline.split('\0').filter(|a| !a.is_empty()).collect();
        if let Some(role) = role(&argv) {
            found.entry(role).or_default().push(pid);
        }
    }
    let mut watched = Vec::new();
    for (role, pids) in found {
        let several = pids.len() > 1;
        for pid in pids {
            let name = if several {
                format!("{role}[{pid}]")
            } else {
                role.to_owned()
            };
            watched.push(Watched { name, pid });
        }
    }
    watched
}

/// Parses `--pid name=PID`.
pub fn parse_pid(s: &str) -> Result<Watched, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=PID, e.g. server=1234".to_owned())?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid:?} is not a pid"))?;
    Ok(Watched {
        name: name.trim().to_owned(),
        pid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.peak_rss > 0);
        assert!(s.peak_rss >= s.rss);
    }

    #[test]
    fn the_machine_reports_busy_time() {
        assert!(machine_busy().is_some());
    }

    #[test]
    fn roles_come_from_the_subcommand() {
        assert_eq!(
            role(&["/x/target/release/mp-auth", "serve", "--migrate"]),
            Some("server")
        );
        assert_eq!(
            role(&["mp-auth", "--log-format", "json", "gateway"]),
            Some("gateway")
        );
        assert_eq!(
            role(&["./mp-auth", "wechat-sim", "--listen", "x"]),
            Some("simulator")
        );
        assert_eq!(
            role(&["/usr/sbin/mariadbd", "--user=mysql"]),
            Some("mariadb")
        );
        assert_eq!(role(&["/x/wechat-sim", "--listen", "x"]), Some("simulator"));
        assert_eq!(role(&["mp-auth-bench", "--limit-run"]), None);
        assert_eq!(role(&["bash"]), None);
    }

    #[test]
    fn pid_flags_parse_name_and_pid() {
        assert_eq!(
            parse_pid("server=42").unwrap(),
            Watched {
                name: "server".into(),
                pid: 42
            }
        );
        assert!(parse_pid("server").is_err());
        assert!(parse_pid("server=x").is_err());
    }
}
