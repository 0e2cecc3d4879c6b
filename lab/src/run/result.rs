//! What a cell measured for one policy, as a line of results.jsonl, and
//! the report script that turns those lines into tables and plots.

use std::path::Path;

use serde_json::{json, Value};

use super::cell::Cadence;
use super::policy::Policy;
use crate::metrics::Balance;
use crate::scenario::Workload;

/// Everything measured for one policy in one cell.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub cell: String,
    pub scenario: String,
    pub workload: Workload,
    pub level: f64,
    pub policy: Policy,
    pub seed: u64,
    pub cadence: Cadence,
    pub frontends: usize,
    pub duration_s: f64,
    pub offered_rps: f64,
    /// Successful responses per second.
    pub goodput: f64,
    pub requests: u64,
    /// Timeouts and connection errors.
    pub timeouts: u64,
    /// 5xx answers (503: every server at its in-flight limit, the overload guard; 502: no server free).
    pub http_5xx: u64,
    /// Open-loop arrivals the load generator could not send.
    pub dropped: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub cpu: Balance,
    pub net: Balance,
    /// Per node and second, the larger of CPU and network utilisation.
    pub bottleneck: Balance,
    /// Per second (measured part): bottleneck utilisation per node.
    pub util_series: Vec<Vec<f64>>,
    /// Per second (measured part): share of the answered requests per node.
    pub shares: Vec<Vec<f64>>,
    /// Share of requests per node over the measured part.
    pub split: Vec<f64>,
    /// After the first capacity event: its time, the ideal split after it,
    /// the seconds until the 5-s shares stay within 10 % (total variation)
    /// of it, and the largest 5-s share / target ratio.
    pub event_s: Option<f64>,
    pub target: Option<Vec<f64>>,
    pub settle_s: Option<f64>,
    pub max_over_target: Option<f64>,
    /// Counter-driven policies, per second of the measured part: what the
    /// first frontend's status page said ("dwepc", "round_robin", "").
    pub balancing: Vec<String>,
    /// Shares mode, per second: the published shares of the first frontend.
    pub published: Vec<Vec<f64>>,
    /// Status pages at the end, one per frontend.
    pub status: Vec<Value>,
    /// The module's log lines during the measured part.
    pub log: Vec<String>,
    /// The machine's CPU use during the measured part (all cores), %.
    pub machine_cpu_pct: f64,
    /// On real CPUs: MHz one real core stood for.
    pub real_cpu: Option<f64>,
    /// What the stack's vCenter saw over the whole run (its call log:
    /// logins, logouts, calls by method), and the run's length in s.
    pub vcenter: Value,
}

fn bal(b: &Balance) -> Value {
    json!({"cov": b.cov, "max_over_mean": b.max_over_mean, "n_delta2": b.n_delta2, "mean": b.mean, "samples": b.samples})
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

impl RunResult {
    /// One line of results.jsonl.
    pub fn to_json(&self) -> Value {
        json!({
            "cell": self.cell, "scenario": self.scenario, "workload": self.workload.name(),
            "level": self.level, "policy": self.policy.name(), "seed": self.seed,
            "cadence": self.cadence.label(), "frontends": self.frontends,
            "duration_s": self.duration_s, "offered_rps": self.offered_rps,
            "goodput": self.goodput, "requests": self.requests, "timeouts": self.timeouts,
            "http_5xx": self.http_5xx, "dropped": self.dropped,
            "p50_ms": num(self.p50_ms), "p95_ms": num(self.p95_ms), "p99_ms": num(self.p99_ms),
            "cpu": bal(&self.cpu), "net": bal(&self.net), "bottleneck": bal(&self.bottleneck),
            "util_series": self.util_series.iter().map(|r| r.iter().map(|x| num(*x)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "shares": self.shares.iter().map(|r| r.iter().map(|x| num(*x)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "split": self.split,
            "event_s": self.event_s, "target": self.target, "settle_s": self.settle_s,
            "max_over_target": self.max_over_target.map(num),
            "balancing": self.balancing,
            "published": self.published.iter().map(|r| r.iter().map(|x| num(*x)).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "status": self.status, "log": self.log, "machine_cpu_pct": num(self.machine_cpu_pct),
            "real_cpu": self.real_cpu,
            "vcenter": self.vcenter,
        })
    }
}

/// Appends results to DIR/results.jsonl.
pub fn save(out: &Path, rs: &[RunResult]) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(out)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("results.jsonl"))?;
    for r in rs {
        writeln!(f, "{}", r.to_json())?;
    }
    Ok(())
}

/// Runs `lab/report.py` on `out` with Debian's python3 (which has
/// python3-matplotlib), not a pyenv shim.
pub fn report(out: &Path, extra: &[&str]) -> std::io::Result<std::process::ExitStatus> {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/report.py"))
        .arg(out)
        .args(extra)
        .status()
}
