//! The lab run: real nginx with the module in front of emulated VMs of
//! different sizes, whose measured usage reaches the module through the
//! real vSphere API (vcsim), under closed- or open-loop load; every policy
//! runs the same scenario in the same run; metrics come from the VMs'
//! ground truth.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwepc_core::metrics::{balance, max_overshoot, quantile, settle_time, smooth, Balance};
use serde_json::{json, Value};

use crate::load::{self, LoadSpec, Pattern, Record};
use crate::nginx::{conf, Nginx};
use crate::vcsim::{Opts, Vcsim, VmSpec};
use crate::{free_port, http, wait_for};

/// Counter refresh period the lab's vSphere reports (the paper polled every
/// 3 s with m = 20).
pub const REFRESH_S: u32 = 3;

/// One emulated VM (the lab's VMs keep `port` 0: any free port).
pub type VmDef = crate::vm::VmSpec;

/// The heterogeneous 5-node cluster: CPU from 2 to 10 GHz, network from 2
/// to 16 MB/s, one node rich in CPU but network-bound (vm5).
pub fn cluster() -> Vec<VmDef> {
    let spec = [
        (2000.0, 1, 4000.0, 2048.0),
        (4000.0, 2, 8000.0, 4096.0),
        (6000.0, 2, 4000.0, 4096.0),
        (8000.0, 4, 16000.0, 8192.0),
        (10000.0, 4, 2000.0, 8192.0),
    ];
    spec.iter()
        .enumerate()
        .map(|(i, &(cpu, vcpus, net, mem))| VmDef {
            memory_mb: mem,
            ..VmDef::new(
                &format!("vm{}", i + 1),
                &format!("127.0.0.{}", 11 + i),
                cpu,
                vcpus,
                net,
            )
        })
        .collect()
}

/// The paper's test cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Static pages of 1 KB .. 1 MB (network and some CPU).
    T1,
    /// Dynamic pages of 50^k additions (CPU).
    T2,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::T1 => "T1",
            Workload::T2 => "T2",
        }
    }

    pub fn paths(self) -> Vec<String> {
        match self {
            Workload::T1 => ["1k", "16k", "64k", "512k", "1m"]
                .iter()
                .map(|s| format!("/t1/{s}"))
                .collect(),
            Workload::T2 => (1..=5).map(|k| format!("/t2/{k}")).collect(),
        }
    }

    /// Requests/s the cluster can serve with a perfect split (its
    /// bottleneck resource, pages chosen uniformly).
    pub fn capacity_rps(self, vms: &[VmDef]) -> f64 {
        let paths = self.paths();
        let (mut cpu, mut bytes) = (0.0, 0.0);
        for p in &paths {
            let (c, b) = crate::vm::cost_mhz_ms(p).expect("lab page");
            cpu += c;
            bytes += b as f64 + 200.0;
        }
        cpu /= paths.len() as f64;
        bytes /= paths.len() as f64;
        let cpu_rps: f64 = vms.iter().map(|v| v.cpu_mhz * 1000.0 / cpu).sum();
        let net_rps: f64 = vms.iter().map(|v| v.net_kbps * 1024.0 / bytes).sum();
        match self {
            Workload::T2 => cpu_rps,
            Workload::T1 => net_rps.min(cpu_rps),
        }
    }

    /// Capacity weights an operator would configure for weighted round
    /// robin: CPU for T2, network for T1.
    pub fn weight(self, v: &VmDef) -> u32 {
        match self {
            Workload::T2 => (v.cpu_mhz / 1000.0).round().max(1.0) as u32,
            Workload::T1 => (v.net_kbps / 1000.0).round().max(1.0) as u32,
        }
    }
}

/// Balancing policies compared side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// nginx round robin, no weights.
    Rr,
    /// nginx weighted round robin with capacity weights (the paper's baseline).
    Wrr,
    /// nginx least_conn.
    LeastConn,
    /// nginx random two least_conn.
    Random2,
    /// dynamic WLC of seeds/001, as `dwepc mode=wlc`.
    Wlc,
    /// dwepc, paper mode.
    Dwepc,
}

impl Policy {
    pub const ALL: [Policy; 6] = [
        Policy::Rr,
        Policy::Wrr,
        Policy::LeastConn,
        Policy::Random2,
        Policy::Wlc,
        Policy::Dwepc,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Rr => "round_robin",
            Policy::Wrr => "weighted_rr",
            Policy::LeastConn => "least_conn",
            Policy::Random2 => "random2_least_conn",
            Policy::Wlc => "dynamic_wlc",
            Policy::Dwepc => "dwepc_paper",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s || p.short() == s)
    }

    pub fn short(self) -> &'static str {
        match self {
            Policy::Rr => "rr",
            Policy::Wrr => "wrr",
            Policy::LeastConn => "lc",
            Policy::Random2 => "r2",
            Policy::Wlc => "wlc",
            Policy::Dwepc => "dwepc",
        }
    }

    fn uses_counters(self) -> bool {
        matches!(self, Policy::Wlc | Policy::Dwepc)
    }

    /// The lines of the upstream block.
    fn upstream(self, vms: &[VmDef], addrs: &[String], w: Workload) -> String {
        let mut s = String::new();
        match self {
            Policy::Rr | Policy::Wrr => {}
            Policy::LeastConn => s.push_str("least_conn;\n"),
            Policy::Random2 => s.push_str("random two least_conn;\n"),
            Policy::Wlc => {
                let _ = writeln!(
                    s,
                    "dwepc mode=wlc interval={REFRESH_S}s window=20 ttl={}s;",
                    5 * REFRESH_S
                );
            }
            Policy::Dwepc => {
                let _ = writeln!(
                    s,
                    "dwepc interval={REFRESH_S}s window=20 ttl={}s;",
                    5 * REFRESH_S
                );
            }
        }
        for (v, a) in vms.iter().zip(addrs) {
            // capacity weights for weighted round robin, and as the
            // fallback of the counter-driven policies (as an operator would)
            let weight = if matches!(self, Policy::Wrr | Policy::Wlc | Policy::Dwepc) {
                format!(" weight={}", w.weight(v))
            } else {
                String::new()
            };
            let _ = writeln!(s, "server {a}{weight};");
            if self.uses_counters() {
                // the operator knows the VMs' network capacity (vSphere does not)
                let _ = writeln!(s, "dwepc_node {a} net={};", v.net_kbps);
            }
        }
        s.push_str("keepalive 64;\n");
        s
    }
}

/// What happens during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Steady load at each level.
    Steady,
    /// A noisy neighbour takes half the CPU of vm4 halfway through.
    Step,
    /// vm3 dies halfway through.
    Die,
    /// vSphere unreachable for a minute (or half the run, if shorter),
    /// starting a quarter in.
    VcDown,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Step => "cpu_step",
            Scenario::Die => "node_dies",
            Scenario::VcDown => "vsphere_down",
        }
    }

    pub fn parse(s: &str) -> Option<Scenario> {
        [
            Scenario::Steady,
            Scenario::Step,
            Scenario::Die,
            Scenario::VcDown,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

/// Load shapes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadLevel {
    /// Open loop at this fraction of the cluster's capacity.
    Open(f64),
    /// Closed loop: this many virtual users with the paper's 2 s think time.
    Users(usize),
}

impl LoadLevel {
    pub fn label(self) -> String {
        match self {
            LoadLevel::Open(f) => format!("open {f:.1}x"),
            LoadLevel::Users(u) => format!("{u} VU"),
        }
    }

    /// Offered load as a fraction of capacity (closed loop: users / think
    /// time, an upper bound).
    pub fn offered(self, cap_rps: f64) -> f64 {
        match self {
            LoadLevel::Open(f) => f,
            LoadLevel::Users(u) => u as f64 / 2.0 / cap_rps,
        }
    }
}

/// One lab run request.
#[derive(Clone, Debug)]
pub struct Plan {
    pub workload: Workload,
    pub scenario: Scenario,
    pub policies: Vec<Policy>,
    pub levels: Vec<LoadLevel>,
    pub duration: Duration,
    pub warmup: Duration,
    pub seed: u64,
}

/// The emulated VMs, in this process (`vm::start`), driven through their
/// HTTP control port like the `dwepc-lab vms` process would be.
struct VmsProc {
    handle: Option<crate::vm::Handle>,
    control: u16,
    addrs: Vec<String>,
}

impl VmsProc {
    fn start(vms: &[VmDef]) -> VmsProc {
        let handle = crate::vm::start(vms.to_vec(), "127.0.0.1:0").expect("start the emulated VMs");
        let addrs = vms
            .iter()
            .map(|v| handle.addr(&v.name).expect("VM address").to_string())
            .collect();
        VmsProc {
            control: handle.control_addr().port(),
            handle: Some(handle),
            addrs,
        }
    }

    fn control(&self, path: &str) {
        let _ = http::request(self.control, "GET", path);
    }
}

impl Drop for VmsProc {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.stop();
        }
    }
}

/// Ground truth: /usage every second, kept as (wall ms, per-VM values).
#[derive(Clone, Debug)]
struct Reading {
    t_ms: u64,
    cpu_mhz_ms: Vec<f64>,
    bytes: Vec<f64>,
    cpu_cap: Vec<f64>,
    mem_kb: Vec<f64>,
}

fn reading(vms: &[VmDef], usage: &[Value]) -> Option<Reading> {
    let find = |name: &str| usage.iter().find(|u| u["name"] == name);
    let mut r = Reading {
        t_ms: usage.first()?["t_ms"].as_u64()?,
        cpu_mhz_ms: vec![],
        bytes: vec![],
        cpu_cap: vec![],
        mem_kb: vec![],
    };
    for v in vms {
        let u = find(&v.name)?;
        r.cpu_mhz_ms.push(u["cpu_mhz_ms"].as_f64()?);
        r.bytes.push(u["bytes_sent"].as_f64()?);
        r.cpu_cap.push(u["cpu_mhz"].as_f64().unwrap_or(v.cpu_mhz));
        r.mem_kb.push(u["mem_kb"].as_f64().unwrap_or(0.0));
    }
    Some(r)
}

/// Threads that sample the VMs every second (ground truth) and write
/// vcsim's counters every refresh period, stamped with the period's end.
struct Sampler {
    stop: Arc<AtomicBool>,
    readings: Arc<Mutex<Vec<Reading>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(vms: Vec<VmDef>, control: u16, counters: PathBuf) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let readings = Arc::new(Mutex::new(Vec::new()));
        let (s2, r2) = (stop.clone(), readings.clone());
        let handle = std::thread::spawn(move || {
            let probe = VmsControl { control };
            let mut last_feed: Option<Reading> = None;
            let mut next_sec = crate::wall_ms() / 1000 * 1000 + 1000;
            while !s2.load(Ordering::Relaxed) {
                let now = crate::wall_ms();
                if now < next_sec {
                    std::thread::sleep(Duration::from_millis((next_sec - now).min(100)));
                    continue;
                }
                next_sec += 1000;
                let Some(r) = probe.usage().and_then(|u| reading(&vms, &u)) else {
                    continue;
                };
                // counters for vSphere at every refresh boundary
                let t_s = r.t_ms / 1000;
                if t_s % REFRESH_S as u64 == 0 {
                    if let Some(prev) = &last_feed {
                        write_counters(&vms, prev, &r, &counters, t_s);
                    }
                    last_feed = Some(r.clone());
                }
                r2.lock().unwrap().push(r);
            }
        });
        Sampler {
            stop,
            readings,
            handle: Some(handle),
        }
    }

    fn readings(&self, from_ms: u64, to_ms: u64) -> Vec<Reading> {
        self.readings
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.t_ms >= from_ms && r.t_ms <= to_ms)
            .cloned()
            .collect()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct VmsControl {
    control: u16,
}

impl VmsControl {
    fn usage(&self) -> Option<Vec<Value>> {
        let r = http::request(self.control, "GET", "/usage").ok()?;
        serde_json::from_str::<Value>(&r.body)
            .ok()?
            .as_array()
            .cloned()
    }
}

fn write_counters(vms: &[VmDef], a: &Reading, b: &Reading, path: &Path, t_s: u64) {
    let dt = (b.t_ms.saturating_sub(a.t_ms)).max(1) as f64;
    let mut m = serde_json::Map::new();
    for (i, v) in vms.iter().enumerate() {
        let cpu = (b.cpu_mhz_ms[i] - a.cpu_mhz_ms[i]) / dt;
        let net = (b.bytes[i] - a.bytes[i]) / 1024.0 / (dt / 1000.0);
        m.insert(
            v.name.clone(),
            json!({
                "cpu.usagemhz.average": cpu.round() as i64,
                "mem.consumed.average": b.mem_kb[i].round() as i64,
                "net.usage.average": net.round() as i64,
                "disk.usage.average": 0,
                "cpu.ready.summation": 0
            }),
        );
    }
    m.insert("_time".into(), Value::String(crate::rfc3339(t_s)));
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, Value::Object(m).to_string()).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Everything measured for one (policy, level).
#[derive(Clone, Debug)]
pub struct RunResult {
    pub workload: Workload,
    pub scenario: Scenario,
    pub policy: Policy,
    pub level: LoadLevel,
    pub offered: f64,
    pub duration_s: f64,
    pub throughput: f64,
    pub errors: u64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub cpu: Balance,
    pub net: Balance,
    /// Per second: CPU utilisation per node.
    pub cpu_series: Vec<Vec<f64>>,
    /// Per second: share of requests per node.
    pub shares: Vec<Vec<f64>>,
    /// Step scenario: seconds until shares are within 10% of target, and
    /// the largest 1-second overshoot (share points).
    pub settle_s: Option<usize>,
    pub overshoot: Option<f64>,
    /// Share of requests per node over the whole run.
    pub split: Vec<f64>,
    /// The balancer's status page at the end (counter-driven policies).
    pub dwepc_status: Value,
    /// Counter-driven policies, per second of the run: what the balancer
    /// was doing ("dwepc", "round_robin", or "" if the status page did not
    /// answer), read from its status page.
    pub balancing: Vec<String>,
    /// The module's own error-log lines (`dwepc:`) written during the run.
    pub log: Vec<String>,
}

fn utilisation(rs: &[Reading], vms: &[VmDef]) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
    let mut cpu = Vec::new();
    let mut net = Vec::new();
    for w in rs.windows(2) {
        let dt = (w[1].t_ms.saturating_sub(w[0].t_ms)).max(1) as f64;
        cpu.push(
            (0..vms.len())
                .map(|i| (w[1].cpu_mhz_ms[i] - w[0].cpu_mhz_ms[i]) / dt / vms[i].cpu_mhz)
                .collect(),
        );
        net.push(
            (0..vms.len())
                .map(|i| (w[1].bytes[i] - w[0].bytes[i]) / 1024.0 / (dt / 1000.0) / vms[i].net_kbps)
                .collect(),
        );
    }
    (cpu, net)
}

fn shares_per_second(recs: &[Record], n: usize, secs: usize) -> Vec<Vec<f64>> {
    let mut counts = vec![vec![0u64; n]; secs];
    for r in recs {
        let s = (r.t_ms / 1000) as usize;
        if s < secs && (r.backend as usize) < n && r.status == 200 {
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

fn analyse(
    plan: &Plan,
    policy: Policy,
    level: LoadLevel,
    vms: &[VmDef],
    recs: &[Record],
    rs: &[Reading],
    cap_rps: f64,
) -> RunResult {
    let secs = plan.duration.as_secs_f64();
    let ok: Vec<&Record> = recs.iter().filter(|r| r.status == 200).collect();
    let mut lat: Vec<f64> = ok.iter().map(|r| r.latency_us as f64 / 1000.0).collect();
    let (cpu_u, net_u) = utilisation(rs, vms);
    let n = vms.len();
    let shares = shares_per_second(recs, n, plan.duration.as_secs() as usize);
    let mut split = vec![0.0; n];
    for r in &ok {
        if (r.backend as usize) < n {
            split[r.backend as usize] += 1.0;
        }
    }
    let total: f64 = split.iter().sum();
    split.iter_mut().for_each(|x| *x /= total.max(1.0));
    let (settle_s, overshoot) = if plan.scenario == Scenario::Step {
        let half = (plan.duration.as_secs() / 2) as usize;
        let caps: Vec<f64> = vms
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 3 { v.cpu_mhz / 2.0 } else { v.cpu_mhz })
            .collect();
        let sum: f64 = caps.iter().sum();
        let target: Vec<f64> = caps.iter().map(|c| c / sum).collect();
        (
            settle_time(&smooth(&shares, 5), &target, half, 0.1, 3),
            Some(max_overshoot(&shares, &target, half)),
        )
    } else {
        (None, None)
    };
    RunResult {
        workload: plan.workload,
        scenario: plan.scenario,
        policy,
        level,
        offered: level.offered(cap_rps),
        duration_s: secs,
        throughput: ok.len() as f64 / secs,
        errors: (recs.len() - ok.len()) as u64,
        requests: recs.len() as u64,
        p50_ms: quantile(&mut lat, 0.50),
        p95_ms: quantile(&mut lat, 0.95),
        p99_ms: quantile(&mut lat, 0.99),
        cpu: balance(&cpu_u),
        net: balance(&net_u),
        cpu_series: cpu_u,
        shares,
        settle_s,
        overshoot,
        split,
        dwepc_status: Value::Null,
        balancing: Vec::new(),
        log: Vec::new(),
    }
}

/// Polls the status page once a second while a run lasts.
struct ModeWatch {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl ModeWatch {
    fn start(port: u16, secs: u64) -> ModeWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut out = Vec::new();
            for k in 0..secs {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let next = Duration::from_secs(k);
                if let Some(wait) = next.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
                out.push(status(port)["balancing"].as_str().unwrap_or("").to_string());
            }
            out
        });
        ModeWatch { stop, handle }
    }

    fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The module's lines in an error log (after byte `from`).
fn module_log(text: &str, from: usize) -> Vec<String> {
    text.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("dwepc"))
        .map(str::to_string)
        .collect()
}

fn nginx_conf(
    policy: Policy,
    vms: &[VmDef],
    addrs: &[String],
    w: Workload,
    port: u16,
    vc: &Vcsim,
    pw: &str,
) -> String {
    conf(
        "worker_processes 2;\nworker_rlimit_nofile 16384;",
        &format!(
            "dwepc_vsphere lab url={} user=user password_file={pw} timeout=2s;\n\
             upstream app {{\n{}}}\n\
             server {{ listen 127.0.0.1:{port} backlog=4096;\n\
               keepalive_requests 100000;\n\
               location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\"; proxy_buffering off;\n\
                 proxy_read_timeout 60s; }}\n\
               location = /dwepc {{ dwepc_status; }} }}",
            vc.url,
            policy.upstream(vms, addrs, w)
        ),
    )
}

/// Runs a plan; returns one result per (policy, level).
pub fn run(plan: &Plan) -> Vec<RunResult> {
    let vms = cluster();
    let dir = std::env::temp_dir().join(format!("dwepc-lab-{}", std::process::id()));
    let proc_ = VmsProc::start(&vms);
    let vspecs: Vec<VmSpec> = vms
        .iter()
        .map(|v| {
            VmSpec::new(
                &v.name,
                Some(&v.ip),
                v.vcpus,
                v.cpu_mhz as u32,
                v.memory_mb as u32,
            )
        })
        .collect();
    let vc = Vcsim::start(
        &vspecs,
        &Opts {
            refresh_s: REFRESH_S,
            ..Opts::default()
        },
    );
    std::fs::create_dir_all(&dir).unwrap();
    let pw_path = dir.join("vc.pass");
    std::fs::write(&pw_path, "pass\n").unwrap();
    let pw = pw_path.display().to_string();
    let sampler = Sampler::start(vms.clone(), proc_.control, vc.counters_path());
    let cap = plan.workload.capacity_rps(&vms);
    let names: Vec<String> = vms.iter().map(|v| v.name.clone()).collect();
    eprintln!(
        "lab: {} {} — cluster capacity {:.0} req/s; policies {:?}; levels {:?}; {:?} each",
        plan.workload.name(),
        plan.scenario.name(),
        cap,
        plan.policies.iter().map(|p| p.name()).collect::<Vec<_>>(),
        plan.levels.iter().map(|l| l.label()).collect::<Vec<_>>(),
        plan.duration
    );
    let mut results = Vec::new();
    for &policy in &plan.policies {
        let port = free_port();
        let mut ng = Nginx::start(
            &nginx_conf(policy, &vms, &proc_.addrs, plan.workload, port, &vc, &pw),
            port,
        );
        // warm-up at the first level (discarded): lets counters, W and
        // connection pools settle for every policy alike
        let warm = LoadSpec {
            target: format!("127.0.0.1:{port}").parse().unwrap(),
            paths: plan.workload.paths(),
            pattern: pattern(plan.levels[0], cap),
            duration: plan.warmup,
            timeout: Duration::from_secs(30),
            max_in_flight: 4096,
            seed: plan.seed ^ 0x5eed,
        };
        load::run(&warm, &names);
        drain(proc_.control, Duration::from_secs(180));
        if policy.uses_counters() {
            let active = wait_for(Duration::from_secs(30), || {
                let st = status(port);
                (st["balancing"] == "dwepc").then_some(())
            });
            if active.is_none() {
                eprintln!(
                    "lab: warning: {} never left round robin: {}",
                    policy.name(),
                    status(port)
                );
            }
        }
        for &level in &plan.levels {
            let spec = LoadSpec {
                target: format!("127.0.0.1:{port}").parse().unwrap(),
                paths: plan.workload.paths(),
                pattern: pattern(level, cap),
                duration: plan.duration,
                timeout: Duration::from_secs(30),
                max_in_flight: 4096,
                seed: plan.seed,
            };
            let log_from = ng.error_log().len();
            let watch = policy
                .uses_counters()
                .then(|| ModeWatch::start(port, plan.duration.as_secs()));
            let events = schedule_events(plan, &proc_, &vc);
            let from = crate::wall_ms();
            let recs = load::run(&spec, &names);
            let to = from + plan.duration.as_millis() as u64;
            events.finish(&proc_);
            let rs = sampler.readings(from, to + 500);
            let mut r = analyse(plan, policy, level, &vms, &recs, &rs, cap);
            if let Some(w) = watch {
                r.balancing = w.finish();
                r.dwepc_status = status(port);
                r.log = module_log(&ng.error_log(), log_from);
            }
            eprintln!(
                "lab: {:<20} {:<9} {:>7.1} req/s  p99 {:>8.1} ms  errors {:>5}  N·δ²(cpu) {:>7.3}  CoV(cpu) {:.3}  split {}",
                policy.name(),
                level.label(),
                r.throughput,
                r.p99_ms,
                r.errors,
                r.cpu.n_delta2,
                r.cpu.cov,
                r.split.iter().map(|x| format!("{:.2}", x)).collect::<Vec<_>>().join("/")
            );
            results.push(r);
            // the VMs keep working on queued requests whose clients gave
            // up: let every queue drain so levels do not contaminate each other
            drain(proc_.control, Duration::from_secs(180));
        }
        ng.stop(Duration::from_secs(10));
    }
    drop(sampler);
    drop(vc);
    drop(proc_);
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Waits until no VM has a request in flight (at most `max`).
fn drain(control: u16, max: Duration) {
    let start = Instant::now();
    let probe = VmsControl { control };
    let busy = wait_for(max, || {
        let u = probe.usage()?;
        u.iter()
            .all(|v| v["in_flight"].as_u64() == Some(0))
            .then_some(())
    });
    if busy.is_none() {
        eprintln!("lab: warning: VMs still busy after {:?}", max);
    } else if start.elapsed() > Duration::from_secs(5) {
        eprintln!("lab: drained VM queues in {:.0?}", start.elapsed());
    }
    std::thread::sleep(Duration::from_secs(1));
}

fn status(port: u16) -> Value {
    http::request(port, "GET", "/dwepc")
        .ok()
        .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
        .map(|v| v["upstreams"][0].clone())
        .unwrap_or(Value::Null)
}

fn pattern(level: LoadLevel, cap: f64) -> Pattern {
    match level {
        LoadLevel::Open(f) => Pattern::Open { rate: f * cap },
        LoadLevel::Users(u) => Pattern::Closed {
            users: u,
            think_ms: 2000,
            fixed_think: false,
        },
    }
}

/// Scenario events during one measured run, driven by a thread.
struct Events {
    handle: Option<std::thread::JoinHandle<()>>,
    scenario: Scenario,
}

fn schedule_events(plan: &Plan, proc_: &VmsProc, vc: &Vcsim) -> Events {
    let d = plan.duration;
    let control = proc_.control;
    let handle = match plan.scenario {
        Scenario::Steady => None,
        Scenario::Step => Some(std::thread::spawn(move || {
            std::thread::sleep(d / 2);
            let _ = http::request(control, "GET", "/vm/vm4/hog?mhz=4000");
        })),
        Scenario::Die => Some(std::thread::spawn(move || {
            std::thread::sleep(d / 2);
            let _ = http::request(control, "GET", "/vm/vm3/down");
        })),
        Scenario::VcDown => {
            // the launcher's fault injection: calls hang, as with an
            // unreachable host, from a quarter of the run for a minute
            let url_port = vc.port;
            let down = Duration::from_secs(60).min(d / 2);
            Some(std::thread::spawn(move || {
                std::thread::sleep(d / 4);
                let _ = http::request(url_port, "GET", "/dwepc/fault?mode=hang");
                std::thread::sleep(down);
                let _ = http::request(url_port, "GET", "/dwepc/fault?mode=none");
            }))
        }
    };
    Events {
        handle,
        scenario: plan.scenario,
    }
}

impl Events {
    fn finish(mut self, proc_: &VmsProc) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        match self.scenario {
            Scenario::Step => proc_.control("/vm/vm4/hog?mhz=0"),
            Scenario::Die => proc_.control("/vm/vm3/up"),
            _ => {}
        }
    }
}

/// JSON of the results (for the plots and later analysis).
pub fn to_json(rs: &[RunResult]) -> Value {
    Value::Array(
        rs.iter()
            .map(|r| {
                json!({
                    "workload": r.workload.name(), "scenario": r.scenario.name(), "policy": r.policy.name(),
                    "level": r.level.label(), "offered": r.offered, "duration_s": r.duration_s,
                    "throughput": r.throughput, "errors": r.errors, "requests": r.requests,
                    "p50_ms": r.p50_ms, "p95_ms": r.p95_ms, "p99_ms": r.p99_ms,
                    "cpu": bal(&r.cpu), "net": bal(&r.net),
                    "cpu_series": r.cpu_series, "shares": r.shares, "split": r.split,
                    "settle_s": r.settle_s, "overshoot": r.overshoot, "dwepc_status": r.dwepc_status,
                    "balancing": r.balancing, "log": r.log,
                })
            })
            .collect(),
    )
}

fn bal(b: &Balance) -> Value {
    json!({"n_delta2": b.n_delta2, "delta2": b.delta2, "cov": b.cov, "max_over_mean": b.max_over_mean, "mean": b.mean, "samples": b.samples})
}

/// Runs `lab/report.py` on `out` (tables and plots from its JSON files)
/// with Debian's python3 (which has python3-matplotlib), not a pyenv shim.
pub fn report(out: &Path) -> std::io::Result<std::process::ExitStatus> {
    let python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    std::process::Command::new(python)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/report.py"))
        .arg(out)
        .status()
}
