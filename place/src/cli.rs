//! The command line ([`Args`]) and the settings checked from it before
//! vSphere is asked anything ([`settings`]).

use crate::plan::{Stat, RESOURCES};
use clap::Parser;
use dwepc_core::conf;
use std::time::Duration;

const LONG_ABOUT: &str = "\
Reads a vSphere cluster (hosts, where each powered-on VM runs, and each VM's \
usage over --since), and prints where VMs should move so that one resource \
is balanced over the hosts: at most --max-moves migrations, each host kept \
within its CPU and memory (capacity x ratio - reserved, as the nginx \
module's accounting), anti-affinity groups apart, hosts in maintenance or \
--exclude'd left alone. Changes nothing unless --apply is given.

Samples: realtime (20 s) for --since up to 1h, then vCenter's historical \
rollups: 5 min up to 1d, 30 min up to 1w, 2 h up to 30d, 1 day beyond. \
A VM's demand is --stat of its samples.";

/// Command line (vSphere options as the module's dwepc_vsphere). The
/// fields' comments are `--help`'s text, written for a terminal (bare
/// URLs included).
#[allow(rustdoc::bare_urls)]
#[derive(Parser, Debug)]
#[command(name = "dwepc-place", version, about = "Placement advisor for vSphere clusters (dwepc)", long_about = LONG_ABOUT)]
pub struct Args {
    /// The vCenter's SDK URL, like https://vcenter.example.com/sdk
    #[arg(long)]
    pub url: String,
    /// vSphere user (reads the inventory and counters; --apply also
    /// needs the right to migrate)
    #[arg(long)]
    pub user: String,
    /// File whose first line is the password
    #[arg(long, value_name = "FILE")]
    pub password_file: String,
    /// PEM bundle of the CA that signed the vCenter's certificate
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<String>,
    /// Check the vCenter's certificate (off: labs only)
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    pub tls_verify: String,
    /// Accept an http:// URL (the password crosses in clear text; labs only)
    #[arg(long)]
    pub insecure_http: bool,
    /// Timeout of every vSphere call
    #[arg(long, default_value = "10s", value_name = "TIME")]
    pub timeout: String,
    /// Horizon of the usage read, like 1h, 1d, 1w
    #[arg(long, default_value = "1h", value_name = "TIME")]
    pub since: String,
    /// Per-VM demand over the horizon: p95 (any pN), max or mean
    #[arg(long, default_value = "p95")]
    pub stat: String,
    /// What to balance: disk, net, cpu or mem, or weights like
    /// cpu=1,disk=0.5 (utilisations; net and disk then need capacities)
    #[arg(long, default_value = "disk")]
    pub balance: String,
    /// Most migrations (vMotions) the plan may make: a number, or "none"
    /// for no limit
    #[arg(long, default_value = "3", value_name = "N")]
    pub max_moves: String,
    /// VMs that must run on different hosts, comma-separated (repeatable)
    #[arg(long, value_name = "VM,VM,...")]
    pub apart: Vec<String>,
    /// The cluster to balance (needed when the vCenter has more than one
    /// cluster or standalone host)
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// A host that receives and gives no VM (repeatable); hosts in
    /// maintenance or disconnected are left out anyway
    #[arg(long, value_name = "HOST")]
    pub exclude: Vec<String>,
    /// CPU overcommit ratio of a host
    #[arg(long, default_value_t = 1.0)]
    pub cpu_ratio: f64,
    /// Memory overcommit ratio of a host
    #[arg(long, default_value_t = 1.0)]
    pub mem_ratio: f64,
    /// CPU (MHz) of each host kept for itself
    #[arg(long, default_value_t = 0.0, value_name = "MHZ")]
    pub cpu_reserved: f64,
    /// Memory (MB) of each host kept for itself
    #[arg(long, default_value_t = 0.0, value_name = "MB")]
    pub mem_reserved: f64,
    /// Network capacity of each host (KB/s); without it network loads are
    /// compared as raw sums
    #[arg(long, value_name = "KBPS")]
    pub net_capacity: Option<f64>,
    /// Disk capacity of each host (KB/s); as --net-capacity
    #[arg(long, value_name = "KBPS")]
    pub disk_capacity: Option<f64>,
    /// Longest the exact search for the best plan within --max-moves
    /// runs; a search cut short prints its best plan and how far it can be
    /// from the best (the gap)
    #[arg(long, default_value = "2s", value_name = "TIME")]
    pub time_limit: String,
    /// Nothing to do when the busiest host is within this fraction of the
    /// mean
    #[arg(long, default_value_t = 0.05)]
    pub tolerance: f64,
    /// Print the plan as JSON
    #[arg(long)]
    pub json: bool,
    /// Carry the plan out: one RelocateVM_Task at a time, each waited for;
    /// stops at the first failure
    #[arg(long)]
    pub apply: bool,
    /// Longest wait for one migration with --apply
    #[arg(long, default_value = "30m", value_name = "TIME")]
    pub task_timeout: String,
}

/// The settings checked before vSphere is asked anything.
pub struct Settings {
    pub since_ms: u64,
    /// vCenter's sampling interval for the horizon, in seconds.
    pub interval: i32,
    pub stat: Stat,
    pub weights: [f64; 4],
    pub max_moves: Option<usize>,
    pub time_limit: Duration,
    pub task_timeout: Duration,
}

/// The settings of the command line, or why they are wrong.
pub fn settings(a: &Args) -> Result<Settings, String> {
    let since_ms = conf::parse_time_ms(&a.since)
        .filter(|&ms| ms >= 60_000)
        .ok_or_else(|| {
            format!(
                "invalid --since \"{}\": a time of 1m or more, like 1h or 1d",
                a.since
            )
        })?;
    let interval = interval_for(since_ms);
    let stat = Stat::parse(&a.stat).map_err(|e| e.to_string())?;
    let weights = parse_balance(&a.balance)?;
    check_capacities(a, &weights)?;
    let max_moves = parse_max_moves(&a.max_moves)?;
    check_ranges(a)?;
    let time_limit = duration("time-limit", &a.time_limit, 1)?;
    let task_timeout = duration("task-timeout", &a.task_timeout, 1000)?;
    Ok(Settings {
        since_ms,
        interval,
        stat,
        weights,
        max_moves,
        time_limit,
        task_timeout,
    })
}

/// The time `value` of option `--name`, at least `min_ms`.
fn duration(name: &str, value: &str, min_ms: u64) -> Result<Duration, String> {
    conf::parse_time_ms(value)
        .filter(|&ms| ms >= min_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid --{name} \"{value}\": a time like 500ms, 2s or 1m"))
}

/// The network and disk capacities: positive if given, and given where
/// `weights` mix resources (so that all are utilisations).
fn check_capacities(a: &Args, weights: &[f64; 4]) -> Result<(), String> {
    for (r, cap) in [(2, a.net_capacity), (3, a.disk_capacity)] {
        if let Some(c) = cap {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("--{}-capacity must be positive", RESOURCES[r]));
            }
        }
    }
    let mixed = weights.iter().filter(|&&w| w > 0.0).count() > 1;
    if mixed
        && ((weights[2] > 0.0 && a.net_capacity.is_none())
            || (weights[3] > 0.0 && a.disk_capacity.is_none()))
    {
        return Err("--balance mixes resources: give --net-capacity / --disk-capacity so that network and disk are compared as utilisations, like CPU and memory".into());
    }
    Ok(())
}

/// `--max-moves`: a number, or `none` (`unlimited`) for no limit.
fn parse_max_moves(s: &str) -> Result<Option<usize>, String> {
    match s {
        "none" | "unlimited" => Ok(None),
        n => n
            .parse::<usize>()
            .map(Some)
            .map_err(|_| format!("invalid --max-moves \"{n}\": a number, or \"none\"")),
    }
}

/// The ratios, reservations and tolerance within their ranges.
fn check_ranges(a: &Args) -> Result<(), String> {
    for (name, v, lo, hi) in [
        ("cpu-ratio", a.cpu_ratio, 0.01, 1000.0),
        ("mem-ratio", a.mem_ratio, 0.01, 1000.0),
        ("cpu-reserved", a.cpu_reserved, 0.0, 1e9),
        ("mem-reserved", a.mem_reserved, 0.0, 1e9),
        ("tolerance", a.tolerance, 0.0, 10.0),
    ] {
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            return Err(format!("--{name} must be from {lo} to {hi}"));
        }
    }
    Ok(())
}

/// The sampling interval vCenter keeps for a horizon: realtime 20 s for
/// the last hour, then its historical rollups (past day 5 min, past week
/// 30 min, past month 2 h, past year 1 day).
fn interval_for(since_ms: u64) -> i32 {
    const H: u64 = 3_600_000;
    match since_ms {
        x if x <= H => 20,
        x if x <= 24 * H => 300,
        x if x <= 7 * 24 * H => 1800,
        x if x <= 30 * 24 * H => 7200,
        _ => 86_400,
    }
}

/// `disk`, `net`, `cpu`, `mem`, or `cpu=1,disk=0.5`.
fn parse_balance(s: &str) -> Result<[f64; 4], String> {
    let mut w = [0.0; 4];
    for part in s.split(',') {
        let (name, weight) = match part.split_once('=') {
            Some((n, v)) => (
                n,
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("invalid weight \"{v}\" in --balance"))?,
            ),
            None => (part, 1.0),
        };
        let r = RESOURCES.iter().position(|&x| x == name).ok_or_else(|| {
            format!("unknown resource \"{name}\" in --balance: use cpu, mem, net or disk")
        })?;
        w[r] = weight;
    }
    if w.iter().all(|&x| x == 0.0) {
        return Err("--balance gives every resource a weight of 0".into());
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_pick_vcenter_s_intervals() {
        let ms = |s: &str| conf::parse_time_ms(s).unwrap();
        assert_eq!(interval_for(ms("30m")), 20);
        assert_eq!(interval_for(ms("1h")), 20);
        assert_eq!(interval_for(ms("2h")), 300);
        assert_eq!(interval_for(ms("1d")), 300);
        assert_eq!(interval_for(ms("1w")), 1800);
        assert_eq!(interval_for(ms("30d")), 7200);
        assert_eq!(interval_for(ms("90d")), 86_400);
    }

    #[test]
    fn the_default_budget_is_the_optimizer_s() {
        let a = Args::parse_from([
            "dwepc-place",
            "--url",
            "u",
            "--user",
            "x",
            "--password-file",
            "f",
        ]);
        assert_eq!(
            parse_max_moves(&a.max_moves).unwrap(),
            Some(crate::plan::DEFAULT_BUDGET)
        );
    }

    #[test]
    fn balance_weights() {
        assert_eq!(parse_balance("disk").unwrap(), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            parse_balance("cpu=1,disk=0.5").unwrap(),
            [1.0, 0.0, 0.0, 0.5]
        );
        assert!(parse_balance("iops")
            .unwrap_err()
            .contains("unknown resource"));
        assert!(parse_balance("cpu=x").is_err());
        assert!(parse_balance("cpu=0").is_err());
    }
}
