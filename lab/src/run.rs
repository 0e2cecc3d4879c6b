//! A lab cell: every policy side by side, each on its own copy of the
//! emulated cluster (its own VMs, vCenter simulator and nginx instances),
//! under the same seeded load, with the same events at the same instants.
//!
//! The emulated VMs are time-based queues that need little real CPU, so the
//! copies do not disturb each other as long as the machine's CPU stays well
//! below saturation; every result records the machine's CPU use during the
//! measured part. Each copy's VMs and its load generator are processes of
//! their own (`dwepc-lab vms`, `dwepc-lab load`), so a policy that piles up
//! thousands of connections cannot starve the others of file descriptors.
//!
//! Timeline of a cell: the load starts; after `warmup` the measured part of
//! `duration` begins (events are timed from there); metrics cover the
//! measured part only. vSphere's cadence: usage counters are averages over
//! `period` seconds on vSphere's grid that reach the API `delay` seconds
//! after the period ends (20 s / 5 s for ESXi's realtime counters; the
//! paper polled every 3 s); the counter-driven policies poll every `period`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{balance, max_ratio_over_target, quantile, settle_time, smooth, Balance};
use serde_json::{json, Value};

use crate::hold::{machine_busy_pct, machine_cpu, BackgroundJob};
use crate::load::{self, LoadSpec, Pattern, Phase, Record};
use crate::nginx::Nginx;
use crate::scenario::{Action, Scenario, Workload};
use crate::vcsim::{Opts, Vcsim};
use crate::vm::{self, VmSpec};
use crate::{free_port, http, wait_for};

/// The repository's root (lab files are found from here).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lab's default cluster file.
pub fn default_cluster() -> PathBuf {
    repo_root().join("lab/clusters/five.json")
}

/// Balancing policies compared side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// nginx round robin, no weights.
    Rr,
    /// nginx weighted round robin with capacity weights (the paper's baseline).
    Wrr,
    /// nginx least_conn.
    Lc,
    /// nginx least_conn with capacity weights (what an expert configures).
    LcW,
    /// nginx random two least_conn.
    Random2,
    /// The dynamic WLC of seeds/001, as `dwepc mode=wlc`.
    DynWlc,
    /// dwepc, paper mode.
    Paper,
    /// dwepc, the default shares mode.
    Dwepc,
    /// dwepc shares mode with `pick=expected_delay`.
    DwepcSed,
}

impl Policy {
    pub const ALL: [Policy; 9] = [
        Policy::Rr,
        Policy::Wrr,
        Policy::Lc,
        Policy::LcW,
        Policy::Random2,
        Policy::DynWlc,
        Policy::Paper,
        Policy::Dwepc,
        Policy::DwepcSed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Rr => "round_robin",
            Policy::Wrr => "weighted_rr",
            Policy::Lc => "least_conn",
            Policy::LcW => "weighted_least_conn",
            Policy::Random2 => "random2_least_conn",
            Policy::DynWlc => "dynamic_wlc",
            Policy::Paper => "dwepc_paper",
            Policy::Dwepc => "dwepc",
            Policy::DwepcSed => "dwepc_expected_delay",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Policy::Rr => "rr",
            Policy::Wrr => "wrr",
            Policy::Lc => "lc",
            Policy::LcW => "lcw",
            Policy::Random2 => "r2",
            Policy::DynWlc => "dwlc",
            Policy::Paper => "paper",
            Policy::Dwepc => "dwepc",
            Policy::DwepcSed => "sed",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s || p.short() == s)
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Policy>, String> {
        s.split(',')
            .map(|x| {
                Policy::parse(x.trim()).ok_or_else(|| {
                    format!(
                        "unknown policy {x:?} (one of {})",
                        Policy::ALL.map(|p| p.short()).join(", ")
                    )
                })
            })
            .collect()
    }

    pub fn uses_counters(self) -> bool {
        matches!(
            self,
            Policy::DynWlc | Policy::Paper | Policy::Dwepc | Policy::DwepcSed
        )
    }

    fn weighted(self) -> bool {
        matches!(self, Policy::Wrr | Policy::LcW) || self.uses_counters()
    }

    /// The upstream block's lines (the `server` lines come after).
    fn method(self, period_s: u64) -> String {
        let i = period_s;
        match self {
            Policy::Rr | Policy::Wrr => String::new(),
            Policy::Lc | Policy::LcW => "least_conn;".into(),
            Policy::Random2 => "random two least_conn;".into(),
            Policy::DynWlc => format!("dwepc mode=wlc interval={i}s window=20;"),
            Policy::Paper => format!("dwepc mode=paper interval={i}s window=20;"),
            Policy::Dwepc => format!("dwepc interval={i}s;"),
            Policy::DwepcSed => format!("dwepc interval={i}s pick=expected_delay;"),
        }
    }
}

/// vSphere's counter cadence in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Seconds each sample averages (and the poll interval).
    pub period_s: u64,
    /// Seconds after its period ends that a sample becomes visible.
    pub delay_s: u64,
}

impl Cadence {
    /// ESXi's realtime counters: 20-s averages, visible 5 s late.
    pub const VSPHERE: Cadence = Cadence {
        period_s: 20,
        delay_s: 5,
    };

    /// "20s/5s" (period/delay).
    pub fn parse(s: &str) -> Result<Cadence, String> {
        let bad = || format!("bad cadence {s:?} (period/delay, like 20s/5s)");
        let (p, d) = s.split_once('/').ok_or_else(bad)?;
        let p = crate::scenario::parse_duration(p).map_err(|_| bad())?;
        let d = crate::scenario::parse_duration(d).map_err(|_| bad())?;
        if p.as_secs() == 0 || p.subsec_nanos() != 0 || d.subsec_nanos() != 0 {
            return Err(bad());
        }
        Ok(Cadence {
            period_s: p.as_secs(),
            delay_s: d.as_secs(),
        })
    }

    pub fn label(self) -> String {
        format!("{}s/{}s", self.period_s, self.delay_s)
    }
}

/// One cell: a scenario at one load level with one seed, every policy.
#[derive(Clone, Debug)]
pub struct Cell {
    pub name: String,
    pub scenario: Scenario,
    pub cluster: Vec<VmSpec>,
    /// Open-loop load as a fraction of the cluster's capacity for the mix.
    pub level: f64,
    pub policies: Vec<Policy>,
    pub warmup: Duration,
    pub duration: Duration,
    pub seed: u64,
    pub cadence: Cadence,
}

impl Cell {
    /// Wall time the cell takes, roughly (start-up, load, tail, stop).
    pub fn estimate(&self) -> Duration {
        self.warmup + self.duration + Duration::from_secs(25)
    }
}

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
    /// 5xx answers (502: no server free or below its in-flight limit).
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
}

/// Ground truth of one stack at one second.
#[derive(Clone, Debug)]
struct Reading {
    t_ms: u64,
    cpu_mhz_ms: Vec<f64>,
    bytes: Vec<f64>,
    cpu_eff: Vec<f64>,
    ready_ms: Vec<f64>,
    mem_kb: Vec<f64>,
    up: Vec<bool>,
}

fn reading(u: &[vm::Usage]) -> Reading {
    Reading {
        t_ms: u.first().map_or(0, |x| x.t_ms),
        cpu_mhz_ms: u.iter().map(|x| x.cpu_mhz_ms).collect(),
        bytes: u.iter().map(|x| x.bytes_sent as f64).collect(),
        cpu_eff: u.iter().map(|x| x.cpu_eff_mhz).collect(),
        ready_ms: u.iter().map(|x| x.ready_ms).collect(),
        mem_kb: u.iter().map(|x| x.mem_kb).collect(),
        up: u.iter().map(|x| x.up).collect(),
    }
}

/// The dwepc-lab binary (this process, or the one cargo built next to a
/// test binary), for the VM and load processes of a cell.
pub fn lab_binary() -> PathBuf {
    if let Ok(p) = std::env::var("DWEPC_LAB_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().expect("current_exe");
    if exe.file_name().is_some_and(|n| n == "dwepc-lab") {
        return exe;
    }
    // target/<profile>/deps/<test> -> target/<profile>/dwepc-lab
    exe.ancestors()
        .skip(1)
        .map(|d| d.join("dwepc-lab"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("dwepc-lab"))
}

/// The emulated VMs of one stack, in a `dwepc-lab vms` process of their
/// own (each process may open 20 000 files: a policy that piles up
/// thousands of requests must not starve the others of connections),
/// driven through its control port.
struct VmsProcess {
    child: std::process::Child,
    control: u16,
    addrs: Vec<String>,
}

impl VmsProcess {
    fn start(cluster: &[VmSpec], dir: &Path) -> Result<VmsProcess, String> {
        let spec = dir.join("vms.json");
        let ready = dir.join("vms.ready");
        std::fs::write(&spec, vm::specs_json(cluster)).map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new(lab_binary())
            .arg("vms")
            .arg("--spec")
            .arg(&spec)
            .arg("--ready")
            .arg(&ready)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("start {} vms: {e}", lab_binary().display()))?;
        crate::procs::register(child.id());
        let v = wait_for(Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<Value>(&text).ok()
        });
        let Some(v) = v else {
            let _ = child.kill();
            let _ = child.wait();
            crate::procs::unregister(child.id());
            return Err("the emulated VMs did not start".into());
        };
        let control = v["control"]
            .as_str()
            .and_then(|c| c.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or("bad ready file of the VMs")?;
        let addrs = cluster
            .iter()
            .map(|c| {
                v["vms"]
                    .as_array()
                    .and_then(|a| a.iter().find(|x| x["name"] == c.name.as_str()))
                    .and_then(|x| x["addr"].as_str())
                    .map(str::to_string)
                    .ok_or_else(|| format!("no address for VM {}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(VmsProcess {
            child,
            control,
            addrs,
        })
    }

    fn usage(&self) -> Option<Vec<vm::Usage>> {
        let r = http::request(self.control, "GET", "/usage").ok()?;
        vm::parse_usage(&r.body).ok()
    }

    fn ctl(&self, path: &str) -> Result<(), String> {
        match http::request(self.control, "GET", path) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{path}: {} {}", r.status, r.body.trim())),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }
}

impl Drop for VmsProcess {
    fn drop(&mut self) {
        let _ = http::request(self.control, "GET", "/quit");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::procs::unregister(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        crate::procs::unregister(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One policy's copy of the cluster.
struct Stack {
    policy: Policy,
    vms: VmsProcess,
    vc: Vcsim,
    ports: Vec<u16>,
    nginx: Vec<Nginx>,
    readings: Mutex<Vec<Reading>>,
    /// Counters waiting for their delay: (visible at ms, JSON).
    pending: Mutex<Vec<(u64, Value)>>,
    jobs: Mutex<Vec<Option<BackgroundJob>>>,
    dir: PathBuf,
}

fn nginx_conf(
    policy: Policy,
    cell: &Cell,
    addrs: &[String],
    weights: &[u32],
    port: u16,
    vc: &Vcsim,
    pw: &Path,
) -> String {
    let (cluster, cadence) = (&cell.cluster, cell.cadence);
    let mut up = String::new();
    let _ = writeln!(up, "zone app 256k;");
    let m = policy.method(cadence.period_s);
    if !m.is_empty() {
        let _ = writeln!(up, "{m}");
    }
    for ((v, a), w) in cluster.iter().zip(addrs).zip(weights) {
        // capacity weights for the weighted policies, and as the fallback
        // of the counter-driven ones (as an operator would)
        let weight = if policy.weighted() {
            format!(" weight={w}")
        } else {
            String::new()
        };
        let _ = writeln!(up, "server {a}{weight} max_fails=1 fail_timeout=5s;");
        if policy.uses_counters() {
            // the operator knows the VMs' network capacity (vSphere does not)
            let _ = writeln!(up, "dwepc_node {a} net={};", v.net_kbps);
        }
    }
    let _ = writeln!(up, "keepalive 64;");
    format!(
        "load_module {module};\nuser root;\ndaemon off;\nerror_log logs/error.log info;\n\
         pid logs/nginx.pid;\nworker_processes 2;\nworker_rlimit_nofile 40000;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\naccess_log off;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;\n\
         fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         dwepc_vsphere lab url={url} user=user password_file={pw} timeout=2s insecure_http=on;\n\
         upstream app {{\n{up}}}\n\
         server {{ listen 127.0.0.1:{port} backlog=8192;\n\
           keepalive_requests 100000;\n\
           location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_buffering off;\n\
             proxy_read_timeout 60s; }}\n\
           location = /dwepc {{ dwepc_status; }} }}\n}}\n",
        module = crate::nginx::module().display(),
        url = vc.url,
        pw = pw.display(),
    )
}

impl Stack {
    fn start(policy: Policy, cell: &Cell, weights: &[u32]) -> Result<Stack, String> {
        let dir = std::env::temp_dir().join(format!(
            "dwepc-lab-{}-{}-{}",
            std::process::id(),
            policy.short(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let vms = VmsProcess::start(&cell.cluster, &dir)?;
        let addrs = vms.addrs.clone();
        let vspecs: Vec<crate::vcsim::VmSpec> = cell
            .cluster
            .iter()
            .map(|v| {
                crate::vcsim::VmSpec::new(
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
                refresh_s: cell.cadence.period_s as u32,
                ..Opts::default()
            },
        );
        let pw = dir.join("vc.pass");
        std::fs::write(&pw, "pass\n").map_err(|e| e.to_string())?;
        let mut ports = Vec::new();
        let mut nginx = Vec::new();
        for _ in &cell.scenario.frontends {
            let port = free_port();
            let text = nginx_conf(policy, cell, &addrs, weights, port, &vc, &pw);
            nginx.push(Nginx::start(&text, port));
            ports.push(port);
        }
        let n = cell.cluster.len();
        Ok(Stack {
            policy,
            vms,
            vc,
            ports,
            nginx,
            readings: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            jobs: Mutex::new(vec![None; n]),
            dir,
        })
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for n in &mut self.nginx {
            n.stop(Duration::from_secs(5));
        }
        self.vc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The counters of one period for vcsim, from readings at its start and end.
fn counters(cluster: &[VmSpec], a: &Reading, b: &Reading, end_s: u64) -> Value {
    let dt = (b.t_ms.saturating_sub(a.t_ms)).max(1) as f64;
    let mut m = serde_json::Map::new();
    for (i, v) in cluster.iter().enumerate() {
        let cpu = (b.cpu_mhz_ms[i] - a.cpu_mhz_ms[i]) / dt;
        let net = (b.bytes[i] - a.bytes[i]) / 1024.0 / (dt / 1000.0);
        let ready = b.ready_ms[i] - a.ready_ms[i];
        m.insert(
            v.name.clone(),
            json!({
                "cpu.usagemhz.average": cpu.round() as i64,
                "mem.consumed.average": b.mem_kb[i].round() as i64,
                "net.usage.average": net.round() as i64,
                "disk.usage.average": 0,
                "cpu.ready.summation": ready.round() as i64,
            }),
        );
    }
    m.insert("_time".into(), Value::String(crate::rfc3339(end_s)));
    Value::Object(m)
}

/// Applies one event to one stack.
fn apply(stack: &Stack, action: &Action, seed: u64, cluster: &[VmSpec]) {
    let idx = |vm: &str| cluster.iter().position(|v| v.name == vm);
    let res = match action {
        Action::Background { vm, lo, hi } => {
            if let Some(i) = idx(vm) {
                lock(&stack.jobs)[i] =
                    Some(BackgroundJob::new(*lo, *hi, seed ^ ((i as u64 + 1) * 7919)));
            }
            Ok(())
        }
        Action::BackgroundOff { vm } => {
            if let Some(i) = idx(vm) {
                lock(&stack.jobs)[i] = None;
            }
            stack.vms.ctl(&format!("/vm/{vm}/hog?mhz=0"))
        }
        Action::Contention { vm, pct } => stack.vms.ctl(&format!("/vm/{vm}/contention?pct={pct}")),
        Action::Slowdown { vm, pct } => stack.vms.ctl(&format!("/vm/{vm}/slowdown?pct={pct}")),
        Action::Down { vm } => stack.vms.ctl(&format!("/vm/{vm}/down")),
        Action::Up { vm } => stack.vms.ctl(&format!("/vm/{vm}/up")),
        Action::VsphereDown { .. } => {
            stack.vc.fault("hang");
            Ok(())
        }
        Action::VsphereUp => {
            stack.vc.fault("none");
            Ok(())
        }
        Action::Mix { .. } => Ok(()), // the load generator's phases
    };
    if let Err(e) = res {
        eprintln!("lab: event {action:?} on {}: {e}", stack.policy.name());
    }
}

/// The events of a scenario as (ms after the load starts, action), with the
/// end of a timed vSphere outage as its own event.
fn timeline(sc: &Scenario, warmup: Duration) -> Vec<(u64, Action)> {
    let w = warmup.as_millis() as f64;
    let mut out = Vec::new();
    for e in &sc.events {
        let at = (w + e.at_s * 1000.0).max(0.0) as u64;
        out.push((at, e.action.clone()));
        if let Action::VsphereDown { secs: Some(d) } = e.action {
            out.push((at + (d * 1000.0) as u64, Action::VsphereUp));
        }
    }
    out.sort_by_key(|x| x.0);
    out
}

/// Calls `f(now_ms)` at every whole wall-clock second until `stop` is set.
fn every_second(stop: &AtomicBool, mut f: impl FnMut(u64)) {
    let mut next = crate::wall_ms() / 1000 * 1000 + 1000;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::wall_ms();
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
struct Clock {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Clock {
    fn start(stacks: Arc<Vec<Stack>>, cell: &Cell, t0_ms: u64) -> Clock {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let cluster = cell.cluster.clone();
        let cadence = cell.cadence;
        let mut events = timeline(&cell.scenario, cell.warmup);
        events.reverse();
        let seed = cell.seed;
        let handle = std::thread::Builder::new()
            .name("dwepc-lab-clock".into())
            .spawn(move || {
                let mut last_boundary: Vec<Option<Reading>> = vec![None; stacks.len()];
                every_second(&flag, |now| {
                    let t_s = now / 1000;
                    while events.last().is_some_and(|e| t0_ms + e.0 <= now) {
                        let (_, a) = events.pop().expect("event");
                        for s in stacks.iter() {
                            apply(s, &a, seed, &cluster);
                        }
                    }
                    for (k, s) in stacks.iter().enumerate() {
                        // background jobs: the hog of the next second
                        {
                            let mut jobs = lock(&s.jobs);
                            for (i, j) in jobs.iter_mut().enumerate() {
                                if let Some(job) = j {
                                    let pct = job.tick();
                                    let mhz = pct / 100.0 * cluster[i].cpu_mhz;
                                    if let Err(e) =
                                        s.vms.ctl(&format!("/vm/{}/hog?mhz={mhz}", cluster[i].name))
                                    {
                                        eprintln!("lab: background job: {e}");
                                    }
                                }
                            }
                        }
                        let Some(u) = s.vms.usage() else {
                            eprintln!("lab: no usage from the VMs of {}", s.policy.name());
                            continue;
                        };
                        let r = reading(&u);
                        if t_s % cadence.period_s == 0 {
                            if let Some(prev) = &last_boundary[k] {
                                let c = counters(&cluster, prev, &r, t_s);
                                lock(&s.pending).push((t_s * 1000 + cadence.delay_s * 1000, c));
                            }
                            last_boundary[k] = Some(r.clone());
                        }
                        let due: Vec<Value> = {
                            let mut p = lock(&s.pending);
                            let (d, keep): (Vec<_>, Vec<_>) =
                                p.drain(..).partition(|(at, _)| *at <= now + 50);
                            *p = keep;
                            d.into_iter().map(|x| x.1).collect()
                        };
                        if let Some(c) = due.last() {
                            if let Err(e) = s.vc.try_set_counters(c) {
                                eprintln!("lab: counters of {}: {e}", s.policy.name());
                            }
                        }
                        lock(&s.readings).push(r);
                    }
                });
            })
            .expect("clock thread");
        Clock {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.finish();
    }
}

fn status(port: u16) -> Value {
    http::request(port, "GET", "/dwepc")
        .ok()
        .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
        .map(|v| v["upstreams"][0].clone())
        .unwrap_or(Value::Null)
}

/// Reads the counter-driven stacks' status pages once a second.
struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Vec<Value>>>>,
}

impl Watch {
    fn start(ports: Vec<Option<u16>>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out: Vec<Vec<Value>> = vec![Vec::new(); ports.len()];
            every_second(&flag, |now| {
                for (k, p) in ports.iter().enumerate() {
                    if let Some(p) = p {
                        let st = status(*p);
                        out[k].push(json!({
                            "t_ms": now,
                            "balancing": st["balancing"],
                            "shares": st["peers"].as_array().map(|ps| ps.iter().map(|p| p["share"].clone()).collect::<Vec<_>>()),
                        }));
                    }
                }
            });
            out
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> Vec<Vec<Value>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// The load of a cell: paths of every mix it uses, a phase per mix change,
/// the same fraction of capacity throughout.
fn load_spec(cell: &Cell, ports: &[u16], total: Duration) -> LoadSpec {
    let sc = &cell.scenario;
    let mut mixes = vec![(0.0, sc.workload)];
    for e in &sc.events {
        if let Action::Mix { workload } = e.action {
            mixes.push((
                cell.warmup.as_secs_f64() + e.at_s.max(-cell.warmup.as_secs_f64()),
                workload,
            ));
        }
    }
    let mut paths: Vec<String> = Vec::new();
    for (_, w) in &mixes {
        for p in w.paths() {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    let base = sc.workload.capacity_rps(&cell.cluster);
    let phases = mixes
        .iter()
        .map(|(at, w)| Phase {
            from: Duration::from_secs_f64(*at),
            paths: w
                .paths()
                .iter()
                .map(|p| paths.iter().position(|q| q == p).expect("path"))
                .collect(),
            rate_factor: w.capacity_rps(&cell.cluster) / base,
        })
        .collect();
    LoadSpec {
        targets: ports
            .iter()
            .zip(&sc.frontends)
            .map(|(p, w)| (format!("127.0.0.1:{p}").parse().expect("addr"), *w))
            .collect(),
        paths,
        phases,
        pattern: Pattern::Open {
            rate: cell.level * base,
        },
        duration: total,
        timeout: Duration::from_secs(30),
        // each load generator is a process that may open 20 000 files; the
        // 30-s timeout bounds what a policy piles up (1.2x: about 8 500)
        max_in_flight: 10_000,
        seed: cell.seed,
    }
}

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

/// The ideal split after the capacity events up to `t` seconds into the
/// measured part: rates that equalise the true bottleneck utilisation
/// (effective CPU minus the background job's mid-band, network), at the
/// offered rate, for the mix then in force.
fn ideal_split(cell: &Cell, t: f64) -> Vec<f64> {
    let n = cell.cluster.len();
    let mut cpu_lost = vec![0.0f64; n];
    let mut bg = vec![0.0f64; n];
    let mut down = vec![false; n];
    let idx = |vm: &str| cell.cluster.iter().position(|v| v.name == vm);
    for e in cell.scenario.events.iter().filter(|e| e.at_s <= t) {
        match &e.action {
            Action::Background { vm, lo, hi } => {
                if let Some(i) = idx(vm) {
                    bg[i] = 0.5 * (lo + hi) / 100.0;
                }
            }
            Action::BackgroundOff { vm } => {
                if let Some(i) = idx(vm) {
                    bg[i] = 0.0;
                }
            }
            Action::Contention { vm, pct } | Action::Slowdown { vm, pct } => {
                if let Some(i) = idx(vm) {
                    cpu_lost[i] = 1.0 - (1.0 - cpu_lost[i]) * (1.0 - pct / 100.0);
                }
            }
            Action::Down { vm } => {
                if let Some(i) = idx(vm) {
                    down[i] = true;
                }
            }
            Action::Up { vm } => {
                if let Some(i) = idx(vm) {
                    down[i] = false;
                }
            }
            _ => {}
        }
    }
    let w = cell.scenario.workload_at(t);
    let (c_cpu, c_bytes) = w.mean_cost();
    let caps: Vec<[f64; 4]> = cell
        .cluster
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if down[i] {
                [0.0, f64::NAN, 0.0, f64::NAN]
            } else {
                let net = if v.net_kbps > 0.0 {
                    v.net_kbps * 1024.0
                } else {
                    1e15
                };
                [v.cpu_mhz * (1.0 - cpu_lost[i]), f64::NAN, net, f64::NAN]
            }
        })
        .collect();
    let bgs: Vec<[f64; 4]> = (0..n)
        .map(|i| [bg[i] * cell.cluster[i].cpu_mhz, 0.0, 0.0, 0.0])
        .collect();
    // CPU in MHz·ms per ms = MHz; per request c_cpu MHz·ms -> c_cpu/1000 MHz·s
    let cost = [c_cpu / 1000.0, f64::NAN, c_bytes, f64::NAN];
    let rate = cell.level
        * cell.scenario.workload.capacity_rps(&cell.cluster)
        * w.capacity_rps(&cell.cluster)
        / cell.scenario.workload.capacity_rps(&cell.cluster);
    let x = dwepc_core::policy::shares::math::water_fill(
        &caps,
        &bgs,
        &cost,
        [true, false, true, false],
        rate,
    );
    let sum: f64 = x.iter().sum();
    x.iter()
        .map(|v| if sum > 0.0 { v / sum } else { 0.0 })
        .collect()
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

/// The first event after which the ideal split changes (capacity, background,
/// node death, mix), if any.
fn first_shift(cell: &Cell) -> Option<f64> {
    cell.scenario
        .events
        .iter()
        .filter(|e| e.at_s >= 0.0 && e.at_s < cell.duration.as_secs_f64())
        .find(|e| {
            matches!(
                e.action,
                Action::Background { .. }
                    | Action::Contention { .. }
                    | Action::Slowdown { .. }
                    | Action::Down { .. }
                    | Action::Mix { .. }
            )
        })
        .map(|e| e.at_s)
}

#[allow(clippy::too_many_arguments)]
fn analyse(
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
    let window: Vec<Reading> = rs
        .iter()
        .filter(|r| r.t_ms + 500 >= from && r.t_ms <= to + 500)
        .cloned()
        .collect();
    let (cpu_u, net_u) = utilisation(&window, &cell.cluster);
    let bottleneck: Vec<Vec<f64>> = cpu_u
        .iter()
        .zip(&net_u)
        .map(|(c, nt)| {
            c.iter()
                .zip(nt)
                .map(|(a, b)| if b.is_finite() { a.max(*b) } else { *a })
                .collect()
        })
        .collect();
    let nsec = cell.duration.as_secs() as usize;
    let shares = shares_per_second(&meas, n, w_ms, nsec);
    let mut split = vec![0.0; n];
    for r in &ok {
        if (r.backend as usize) < n {
            split[r.backend as usize] += 1.0;
        }
    }
    let tot: f64 = split.iter().sum();
    split.iter_mut().for_each(|x| *x /= tot.max(1.0));
    let (event_s, target, settle_s, max_over) = match first_shift(cell) {
        Some(at) => {
            let target = ideal_split(cell, at + 0.001);
            let sm = smooth(&shares, 5);
            let k = at as usize;
            let settle = settle_time(&sm, &target, k, 0.10, 10).map(|s| s as f64);
            let over = max_ratio_over_target(&shares, &target, k, 5, 0.02);
            (Some(at), Some(target), settle, Some(over))
        }
        None => (None, None, None, None),
    };
    // the first frontend's status pages of the measured part
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
    let published: Vec<Vec<f64>> = seen
        .iter()
        .map(|v| {
            v["shares"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect())
                .unwrap_or_default()
        })
        .collect();
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
        event_s,
        target,
        settle_s,
        max_over_target: max_over,
        balancing,
        published,
        status: status_end,
        log,
        machine_cpu_pct: machine,
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

/// Runs one cell: every policy side by side. `progress(elapsed, total)` is
/// called about every 10 s.
pub fn run_cell(
    cell: &Cell,
    mut progress: impl FnMut(Duration, Duration),
) -> Result<Vec<RunResult>, String> {
    cell.scenario.check(&cell.cluster)?;
    let weights = cell.scenario.workload.weights(&cell.cluster);
    let mut stacks = Vec::new();
    for &p in &cell.policies {
        stacks.push(Stack::start(p, cell, &weights)?);
    }
    let stacks = Arc::new(stacks);
    let total = cell.warmup + cell.duration;
    let names: Vec<String> = cell.cluster.iter().map(|v| v.name.clone()).collect();
    // everything starts on a whole second, a moment from now: each load
    // generator is a process of its own (as the VMs are), started ahead
    let t0 = crate::wall_ms() / 1000 * 1000 + 3000;
    let mut loads = Vec::new();
    for s in stacks.iter() {
        let spec = s.dir.join("load.json");
        let out = s.dir.join("records.txt");
        std::fs::write(
            &spec,
            load_spec(cell, &s.ports, total).to_json().to_string(),
        )
        .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(lab_binary())
            .arg("load")
            .arg("--spec")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--start-at-ms")
            .arg(t0.to_string())
            .arg("--backends")
            .arg(names.join(","))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("start the load generator: {e}"))?;
        crate::procs::register(child.id());
        loads.push((child, out));
    }
    while crate::wall_ms() < t0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut clock = Clock::start(stacks.clone(), cell, t0);
    let watch = Watch::start(
        stacks
            .iter()
            .map(|s| s.policy.uses_counters().then_some(s.ports[0]))
            .collect(),
    );
    let started = Instant::now();
    let mut cpu_a = None;
    let mut log_from: Vec<Vec<usize>> = Vec::new();
    let mut last_progress = Instant::now();
    while started.elapsed() < total {
        if cpu_a.is_none() && started.elapsed() >= cell.warmup {
            cpu_a = Some(machine_cpu());
            log_from = stacks
                .iter()
                .map(|s| s.nginx.iter().map(|n| n.error_log().len()).collect())
                .collect();
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            progress(started.elapsed(), total);
            last_progress = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let cpu_b = machine_cpu();
    let machine = machine_busy_pct(cpu_a.unwrap_or(cpu_b), cpu_b);
    let status_end: Vec<Vec<Value>> = stacks
        .iter()
        .map(|s| s.ports.iter().map(|p| status(*p)).collect())
        .collect();
    let logs: Vec<Vec<String>> = stacks
        .iter()
        .enumerate()
        .map(|(k, s)| {
            s.nginx
                .iter()
                .enumerate()
                .flat_map(|(f, n)| {
                    let from = log_from.get(k).and_then(|v| v.get(f)).copied().unwrap_or(0);
                    module_log(&n.error_log(), from)
                        .into_iter()
                        .map(move |l| format!("[frontend {f}] {l}"))
                })
                .collect()
        })
        .collect();
    // the requests in flight at the end finish within the load's timeout
    let mut records: Vec<Vec<Record>> = Vec::new();
    for (mut child, out) in loads {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::procs::unregister(child.id());
        if !matches!(child.try_wait(), Ok(Some(_))) {
            eprintln!("lab: a load generator did not finish; its records are lost");
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        records.push(load::read_records(&text));
    }
    let watched = watch.finish();
    clock.finish();
    let mut out = Vec::new();
    for (k, s) in stacks.iter().enumerate() {
        let rs = lock(&s.readings).clone();
        let w: Vec<Vec<Value>> = watched.get(k).map(|v| vec![v.clone()]).unwrap_or_default();
        out.push(analyse(
            cell,
            s.policy,
            &records[k],
            &rs,
            t0,
            &w,
            status_end[k].clone(),
            logs[k].clone(),
            machine,
        ));
    }
    drop(stacks);
    Ok(out)
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

/// Waits until `port` answers (used by tests).
pub fn wait_port(port: u16, timeout: Duration) -> bool {
    wait_for(timeout, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    })
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Vec<VmSpec> {
        vec![
            VmSpec::new("vm1", "127.0.0.11", 2000.0, 1, 4000.0),
            VmSpec::new("vm2", "127.0.0.12", 4000.0, 2, 8000.0),
            VmSpec::new("vm3", "127.0.0.13", 6000.0, 2, 4000.0),
            VmSpec::new("vm4", "127.0.0.14", 8000.0, 4, 16000.0),
            VmSpec::new("vm5", "127.0.0.15", 10000.0, 4, 2000.0),
        ]
    }

    fn cell(text: &str) -> Cell {
        Cell {
            name: "c".into(),
            scenario: crate::scenario::parse("s", text).unwrap(),
            cluster: five(),
            level: 0.8,
            policies: vec![Policy::Lc],
            warmup: Duration::from_secs(60),
            duration: Duration::from_secs(120),
            seed: 1,
            cadence: Cadence::VSPHERE,
        }
    }

    #[test]
    fn ideal_split_follows_true_capacity() {
        let c = cell("workload t2\nat 30s vm4 contention 50%\n");
        let before = ideal_split(&c, 0.0);
        for (i, cap) in [2.0, 4.0, 6.0, 8.0, 10.0].iter().enumerate() {
            assert!((before[i] - cap / 30.0).abs() < 1e-6, "{before:?}");
        }
        let after = ideal_split(&c, 31.0);
        assert!((after[3] - 4.0 / 26.0).abs() < 1e-6, "{after:?}");
        // a background job at 40-50 % on vm5 at 0.8x
        let c = cell("workload t2\nat 30s vm5 background cpu 40-50%\n");
        let s = ideal_split(&c, 31.0);
        assert!(s[4] < 10.0 / 30.0 * 0.7, "{s:?}");
        assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        // a dead node gets nothing
        let c = cell("at 30s vm3 down\n");
        assert_eq!(ideal_split(&c, 31.0)[2], 0.0);
        assert_eq!(first_shift(&c), Some(30.0));
    }

    #[test]
    fn load_spec_phases_keep_the_fraction() {
        let c = cell("workload t1\nat 30s mix t2\n");
        let spec = load_spec(&c, &[1, 2], Duration::from_secs(180));
        assert_eq!(spec.paths.len(), 10);
        assert_eq!(spec.phases.len(), 2);
        assert_eq!(spec.phases[1].from, Duration::from_secs(90));
        let f = Workload::T2.capacity_rps(&c.cluster) / Workload::T1.capacity_rps(&c.cluster);
        assert!((spec.phases[1].rate_factor - f).abs() < 1e-9);
        assert_eq!(spec.targets.len(), 1); // one frontend in the scenario
    }

    #[test]
    fn cadence_and_policies_parse() {
        assert_eq!(Cadence::parse("20s/5s").unwrap(), Cadence::VSPHERE);
        assert_eq!(Cadence::parse("3s/0s").unwrap().period_s, 3);
        assert!(Cadence::parse("20s").is_err());
        assert_eq!(
            Policy::parse_list("rr,lcw,dwepc").unwrap(),
            vec![Policy::Rr, Policy::LcW, Policy::Dwepc]
        );
        assert!(Policy::parse_list("rr,nope").unwrap_err().contains("nope"));
    }

    #[test]
    fn counters_from_readings() {
        let a = Reading {
            t_ms: 0,
            cpu_mhz_ms: vec![0.0],
            bytes: vec![0.0],
            cpu_eff: vec![2000.0],
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
        assert_eq!(v["vm1"]["net.usage.average"], 10);
        assert_eq!(v["vm1"]["cpu.ready.summation"], 1000);
        assert!(v["_time"].as_str().unwrap().ends_with('Z'));
    }
}
