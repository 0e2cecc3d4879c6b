//! From what a stack recorded to its [`RunResult`]: latency, goodput,
//! utilisation balance, shares and how they settled after the first event.

use serde_json::Value;

use super::cell::Cell;
use super::clock::Reading;
use super::ideal::{first_shift, ideal_split};
use super::policy::Policy;
use super::result::RunResult;
use crate::load::{self, Record};
use crate::metrics::{balance, max_ratio_over_target, quantile, settle_time, smooth};
use crate::vm::VmSpec;

/// Values per second (rows) and node (columns).
type Series = Vec<Vec<f64>>;

/// Per second: utilisation of CPU (of what the VM can use now) and network
/// per node; NaN while a node is down.
fn utilisation(rs: &[Reading], cluster: &[VmSpec]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut cpu = Vec::new();
    let mut net = Vec::new();
    for w in rs.windows(2) {
        let dt = (w[1].t_ms.saturating_sub(w[0].t_ms)).max(1) as f64;
        let live = |i: usize| w[0].up[i] && w[1].up[i];
        cpu.push(
            (0..cluster.len())
                .map(|i| {
                    if live(i) {
                        (w[1].cpu_mhz_ms[i] - w[0].cpu_mhz_ms[i]) / dt / w[1].cpu_eff[i].max(1.0)
                    } else {
                        f64::NAN
                    }
                })
                .collect(),
        );
        net.push(
            (0..cluster.len())
                .map(|i| {
                    if live(i) && cluster[i].net_kbps > 0.0 {
                        (w[1].bytes[i] - w[0].bytes[i])
                            / 1024.0
                            / (dt / 1000.0)
                            / cluster[i].net_kbps
                    } else {
                        f64::NAN
                    }
                })
                .collect(),
        );
    }
    (cpu, net)
}

fn shares_per_second(recs: &[&Record], n: usize, from_ms: u64, secs: usize) -> Vec<Vec<f64>> {
    let mut counts = vec![vec![0u64; n]; secs];
    for r in recs {
        let t = r.t_ms as u64;
        if t < from_ms || r.status != 200 {
            continue;
        }
        let s = ((t - from_ms) / 1000) as usize;
        if s < secs && (r.backend as usize) < n {
            counts[s][r.backend as usize] += 1;
        }
    }
    counts
        .into_iter()
        .map(|c| {
            let t: u64 = c.iter().sum();
            c.iter()
                .map(|&x| if t > 0 { x as f64 / t as f64 } else { f64::NAN })
                .collect()
        })
        .collect()
}

/// One stack's result in `cell`, from its records (`recs`), its ground
/// truth (`rs`), the status pages watched (`watch`) and read at the end
/// (`status_end`), the module's log and the machine's CPU use.
#[allow(clippy::too_many_arguments)]
pub(super) fn analyse(
    cell: &Cell,
    policy: Policy,
    recs: &[Record],
    rs: &[Reading],
    t0_ms: u64,
    watch: &[Vec<Value>],
    status_end: Vec<Value>,
    log: Vec<String>,
    machine: f64,
) -> RunResult {
    let w_ms = cell.warmup.as_millis() as u64;
    let d_ms = cell.duration.as_millis() as u64;
    let secs = cell.duration.as_secs_f64();
    let n = cell.cluster.len();
    let meas: Vec<&Record> = recs
        .iter()
        .filter(|r| (r.t_ms as u64) >= w_ms && (r.t_ms as u64) < w_ms + d_ms)
        .collect();
    let ok: Vec<&&Record> = meas.iter().filter(|r| r.status == 200).collect();
    let mut lat: Vec<f64> = ok.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
    let from = t0_ms + w_ms;
    let to = from + d_ms;
    let (cpu_u, net_u, bottleneck) = node_utilisation(cell, rs, from, to);
    let nsec = cell.duration.as_secs() as usize;
    let shares = shares_per_second(&meas, n, w_ms, nsec);
    let split = split_of(&ok, n);
    let after = after_first_shift(cell, &shares);
    let (balancing, published) = seen_status(watch, from, to);
    RunResult {
        cell: cell.name.clone(),
        scenario: cell.scenario.name.clone(),
        workload: cell.scenario.workload,
        level: cell.level,
        policy,
        seed: cell.seed,
        cadence: cell.cadence,
        frontends: cell.scenario.frontends.len(),
        duration_s: secs,
        offered_rps: cell.level * cell.scenario.workload.capacity_rps(&cell.cluster),
        goodput: ok.len() as f64 / secs,
        requests: meas.len() as u64,
        timeouts: meas
            .iter()
            .filter(|r| r.status == load::STATUS_ERROR)
            .count() as u64,
        http_5xx: meas.iter().filter(|r| r.status >= 500).count() as u64,
        dropped: meas
            .iter()
            .filter(|r| r.status == load::STATUS_DROPPED)
            .count() as u64,
        p50_ms: quantile(&mut lat, 0.50),
        p95_ms: quantile(&mut lat, 0.95),
        p99_ms: quantile(&mut lat, 0.99),
        cpu: balance(&cpu_u),
        net: balance(&net_u),
        bottleneck: balance(&bottleneck),
        util_series: bottleneck,
        shares,
        split,
        event_s: after.event_s,
        target: after.target,
        settle_s: after.settle_s,
        max_over_target: after.max_over,
        balancing,
        published,
        status: status_end,
        log,
        machine_cpu_pct: machine,
        real_cpu: cell.real_cpu,
        vcenter: Value::Null,
    }
}

/// Per second of the measured part (wall clock `from`..`to`, ms), per node:
/// CPU utilisation, network utilisation and the larger of the two (the
/// bottleneck; CPU alone where the network is unlimited).
fn node_utilisation(cell: &Cell, rs: &[Reading], from: u64, to: u64) -> (Series, Series, Series) {
    let window: Vec<Reading> = rs
        .iter()
        .filter(|r| r.t_ms + 500 >= from && r.t_ms <= to + 500)
        .cloned()
        .collect();
    let (cpu_u, net_u) = utilisation(&window, &cell.cluster);
    let bottleneck: Series = cpu_u
        .iter()
        .zip(&net_u)
        .map(|(c, nt)| {
            c.iter()
                .zip(nt)
                .map(|(a, b)| if b.is_finite() { a.max(*b) } else { *a })
                .collect()
        })
        .collect();
    (cpu_u, net_u, bottleneck)
}

/// Share of the successful requests per node.
fn split_of(ok: &[&&Record], n: usize) -> Vec<f64> {
    let mut split = vec![0.0; n];
    for r in ok {
        if (r.backend as usize) < n {
            split[r.backend as usize] += 1.0;
        }
    }
    let tot: f64 = split.iter().sum();
    split.iter_mut().for_each(|x| *x /= tot.max(1.0));
    split
}

/// How the shares followed the first event that moves the ideal split.
struct AfterShift {
    event_s: Option<f64>,
    target: Option<Vec<f64>>,
    settle_s: Option<f64>,
    max_over: Option<f64>,
}

/// After the first shift (if any): its time, the ideal split after it,
/// the seconds until the 5-s shares stay within 10 % of it, and the
/// largest 5-s share / target ratio.
fn after_first_shift(cell: &Cell, shares: &[Vec<f64>]) -> AfterShift {
    match first_shift(cell) {
        Some(at) => {
            let target = ideal_split(cell, at + 0.001);
            let sm = smooth(shares, 5);
            let k = at as usize;
            let settle = settle_time(&sm, &target, k, 0.10, 10).map(|s| s as f64);
            // nodes of a small ideal share are noise: below 2 %, or below
            // half the mean share where that is less (above 25 nodes: a
            // fixed 2 % would skip most of a 40-VM cluster's small VMs)
            let min_target = 0.02f64.min(0.5 / target.len().max(1) as f64);
            let over = max_ratio_over_target(shares, &target, k, 5, min_target);
            AfterShift {
                event_s: Some(at),
                target: Some(target),
                settle_s: settle,
                max_over: Some(over),
            }
        }
        None => AfterShift {
            event_s: None,
            target: None,
            settle_s: None,
            max_over: None,
        },
    }
}

/// The first frontend's status pages of the measured part: what it was
/// balancing by, and the shares it published, per second.
fn seen_status(watch: &[Vec<Value>], from: u64, to: u64) -> (Vec<String>, Series) {
    let seen: Vec<&Value> = watch
        .first()
        .map(|w| {
            w.iter()
                .filter(|v| (from..to).contains(&v["t_ms"].as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let balancing: Vec<String> = seen
        .iter()
        .map(|v| v["balancing"].as_str().unwrap_or("").to_string())
        .collect();
    let published: Series = seen
        .iter()
        .map(|v| {
            v["shares"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default()
        })
        .collect();
    (balancing, published)
}
