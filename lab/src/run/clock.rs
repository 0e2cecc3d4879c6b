//! The clock of a cell: once a second, every stack's ground truth, its
//! background jobs, vSphere's counters when due, and the scenario's
//! events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::cell::{Cadence, Cell};
use super::events::{apply, timeline};
use super::ideal::oracle_weights;
use super::lock;
use super::policy::Policy;
use super::stack::Stack;
use crate::vm::{self, VmSpec};

/// Ground truth of one stack at one second.
#[derive(Clone, Debug)]
pub(super) struct Reading {
    pub(super) t_ms: u64,
    pub(super) cpu_mhz_ms: Vec<f64>,
    pub(super) bytes: Vec<f64>,
    pub(super) cpu_eff: Vec<f64>,
    /// CPU size now (vCPUs × their speed), MHz.
    pub(super) cpu_mhz: Vec<f64>,
    pub(super) ready_ms: Vec<f64>,
    pub(super) mem_kb: Vec<f64>,
    pub(super) up: Vec<bool>,
}

fn reading(u: &[vm::Usage]) -> Reading {
    Reading {
        t_ms: u.first().map_or(0, |x| x.t_ms),
        cpu_mhz_ms: u.iter().map(|x| x.cpu_mhz_ms).collect(),
        bytes: u.iter().map(|x| x.bytes_sent as f64).collect(),
        cpu_eff: u.iter().map(|x| x.cpu_eff_mhz).collect(),
        cpu_mhz: u.iter().map(|x| x.cpu_mhz).collect(),
        ready_ms: u.iter().map(|x| x.ready_ms).collect(),
        mem_kb: u.iter().map(|x| x.mem_kb).collect(),
        up: u.iter().map(|x| x.up).collect(),
    }
}

/// The counters of one period for vcsim, from readings at its start and end.
fn counters(cluster: &[VmSpec], a: &Reading, b: &Reading, end_s: u64) -> Value {
    let dt = (b.t_ms.saturating_sub(a.t_ms)).max(1) as f64;
    let mut m = serde_json::Map::new();
    for (i, v) in cluster.iter().enumerate() {
        let cpu = (b.cpu_mhz_ms[i] - a.cpu_mhz_ms[i]) / dt;
        let net = (b.bytes[i] - a.bytes[i]) / 1024.0 / (dt / 1000.0);
        let ready = b.ready_ms[i] - a.ready_ms[i];
        // percent of the VM's CPU, in hundredths, as vSphere's cpu.usage
        let pct = if b.cpu_mhz[i] > 0.0 {
            cpu / b.cpu_mhz[i] * 10_000.0
        } else {
            0.0
        };
        m.insert(
            v.name.clone(),
            json!({
                "cpu.usagemhz.average": cpu.round() as i64,
                "cpu.usage.average": pct.round() as i64,
                "mem.consumed.average": b.mem_kb[i].round() as i64,
                "net.usage.average": net.round() as i64,
                // what vmware_exporter reads instead (their sum)
                "net.received.average": (net / 2.0).round() as i64,
                "net.transmitted.average": (net / 2.0).round() as i64,
                "disk.usage.average": 0,
                "cpu.ready.summation": ready.round() as i64,
            }),
        );
    }
    m.insert("_time".into(), Value::String(crate::rfc3339(end_s)));
    Value::Object(m)
}

/// Calls `f(now_ms)` at every whole wall-clock second until `stop` is set.
pub(super) fn every_second(stop: &AtomicBool, mut f: impl FnMut(u64)) {
    let mut next = dwepc_core::clock::now_ms() / 1000 * 1000 + 1000;
    while !stop.load(Ordering::Relaxed) {
        let now = dwepc_core::clock::now_ms();
        if now < next {
            std::thread::sleep(Duration::from_millis((next - now).min(100)));
            continue;
        }
        next += 1000;
        f(now);
    }
}

/// The thread that keeps every stack's clock: once a second it reads each
/// stack's ground truth, runs the background jobs, writes vSphere's
/// counters when they are due, and applies the scenario's events.
pub(super) struct Clock {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Clock {
    pub(super) fn start(stacks: Arc<Vec<Stack>>, cell: &Cell, t0_ms: u64) -> Clock {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let cluster = cell.cluster.clone();
        let cadence = cell.cadence;
        let mut events = timeline(&cell.scenario, cell.warmup);
        events.reverse();
        let seed = cell.seed;
        // the oracle's weights after each event (an outage of vSphere
        // changes nothing: no reload then)
        let warmup_ms = cell.warmup.as_millis() as f64;
        let mut oracle: Vec<Vec<u32>> = events
            .iter()
            .map(|(at, _)| oracle_weights(cell, (*at as f64 - warmup_ms) / 1000.0))
            .collect();
        let mut oracle_now = oracle_weights(cell, -1.0);
        let cell = cell.clone();
        let handle = std::thread::Builder::new()
            .name("dwepc-lab-clock".into())
            .spawn(move || {
                let mut last_boundary: Vec<Option<Reading>> = vec![None; stacks.len()];
                every_second(&flag, |now| {
                    while events.last().is_some_and(|e| t0_ms + e.0 <= now) {
                        let (_, a) = events.pop().expect("event");
                        let weights = oracle.pop().expect("oracle weights");
                        for s in stacks.iter() {
                            apply(s, &a, seed, &cluster);
                            if s.policy == Policy::Oracle && weights != oracle_now {
                                s.reweigh(&cell, &weights);
                            }
                        }
                        oracle_now = weights;
                    }
                    for (k, s) in stacks.iter().enumerate() {
                        tick(s, &cluster, cadence, now, &mut last_boundary[k]);
                    }
                });
            })
            .expect("clock thread");
        Clock {
            stop,
            handle: Some(handle),
        }
    }

    pub(super) fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One second of one stack: the background jobs' hog for the next second,
/// the ground truth, the counters of a period that just ended (pending
/// until their delay is over), and the counters now due, to vcsim.
fn tick(
    s: &Stack,
    cluster: &[VmSpec],
    cadence: Cadence,
    now: u64,
    last_boundary: &mut Option<Reading>,
) {
    run_jobs(s, cluster);
    let Some(u) = s.vms.usage() else {
        eprintln!("lab: no usage from the VMs of {}", s.policy.name());
        return;
    };
    let r = reading(&u);
    let t_s = now / 1000;
    if t_s.is_multiple_of(cadence.period_s) {
        if let Some(prev) = last_boundary {
            let c = counters(cluster, prev, &r, t_s);
            lock(&s.pending).push((t_s * 1000 + cadence.delay_s * 1000, c));
        }
        *last_boundary = Some(r.clone());
    }
    publish_due(s, now);
    lock(&s.readings).push(r);
}

/// Background jobs: each sets its VM's hog for the next second.
fn run_jobs(s: &Stack, cluster: &[VmSpec]) {
    let mut jobs = lock(&s.jobs);
    for (i, j) in jobs.iter_mut().enumerate() {
        if let Some(job) = j {
            let pct = job.tick();
            let mhz = pct / 100.0 * cluster[i].cpu_mhz;
            if let Err(e) = s.vms.ctl(&format!("/vm/{}/hog?mhz={mhz}", cluster[i].name)) {
                eprintln!("lab: background job: {e}");
            }
        }
    }
}

/// Gives vcsim the newest of the pending counters whose delay is over at
/// `now` (dropping the older ones).
fn publish_due(s: &Stack, now: u64) {
    let due: Vec<Value> = {
        let mut p = lock(&s.pending);
        let (d, keep): (Vec<_>, Vec<_>) = p.drain(..).partition(|(at, _)| *at <= now + 50);
        *p = keep;
        d.into_iter().map(|x| x.1).collect()
    };
    if let Some(c) = due.last() {
        if let Err(e) = s.vc.try_set_counters(c) {
            eprintln!("lab: counters of {}: {e}", s.policy.name());
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::five;

    #[test]
    fn counters_from_readings() {
        let a = Reading {
            t_ms: 0,
            cpu_mhz_ms: vec![0.0],
            bytes: vec![0.0],
            cpu_eff: vec![2000.0],
            cpu_mhz: vec![2000.0],
            ready_ms: vec![100.0],
            mem_kb: vec![1000.0],
            up: vec![true],
        };
        let b = Reading {
            t_ms: 20_000,
            cpu_mhz_ms: vec![20_000.0 * 500.0],
            bytes: vec![20.0 * 1024.0 * 10.0],
            ready_ms: vec![1100.0],
            ..a.clone()
        };
        let v = counters(&five()[..1], &a, &b, 1_700_000_000);
        assert_eq!(v["vm1"]["cpu.usagemhz.average"], 500);
        assert_eq!(v["vm1"]["cpu.usage.average"], 2500); // 25.00 %
        assert_eq!(v["vm1"]["net.usage.average"], 10);
        assert_eq!(v["vm1"]["cpu.ready.summation"], 1000);
        assert!(v["_time"].as_str().unwrap().ends_with('Z'));
    }
}
