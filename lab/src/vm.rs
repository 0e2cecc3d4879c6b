//! Emulated VMs for the lab (DESIGN.md §4).
//!
//! One process hosts N emulated VMs of different sizes on loopback, each a
//! real HTTP/1.1 server on its own `ip:port` (distinct 127.0.0.x addresses,
//! so nginx servers can be mapped to VMs by guest IP). A small VM is really
//! slower, whatever the load of the machine: CPU and network are emulated
//! with time-based FIFO queues (tokio timers), never by burning CPU.
//!
//! * CPU: `vcpus` parallel FIFO servers of speed `(cpu_mhz − hog)/vcpus` MHz
//!   (at least 1% of the capacity), times `1 − contention` (the hypervisor
//!   gives the VM only part of the cycles it asks for: the time a vCPU has
//!   work but waits is reported as CPU ready, `contention × busy time`) and
//!   `1 − slowdown` (a loss nothing reports). A request goes to the server
//!   that frees up first and is answered when its work is done. A change of
//!   capacity, hog, contention or slowdown re-times the work still queued
//!   (settled at the change).
//! * Network: one FIFO link of `net_kbps × 1024` bytes/s per VM (0 =
//!   unlimited); the response (headers + body) occupies it after the CPU
//!   work and is written when its transmission is over.
//! * Memory: `0.3 × memory_mb × 1024 + 1024 × open connections` KB.
//!
//! Usage is exact at any instant (work done so far, not work scheduled).
//!
//! ```text
//! dwepc-lab vms --spec FILE [--control ADDR] [--ready FILE]
//! ```
//!
//! Control endpoint (HTTP/1.1, `Connection: close`, JSON answers):
//! `GET /usage`, `/vms`, `/vm/NAME/hog?mhz=X`, `/vm/NAME/cpu?mhz=X`,
//! `/vm/NAME/net?kbps=X`, `/vm/NAME/contention?pct=X`,
//! `/vm/NAME/slowdown?pct=X`, `/vm/NAME/down`, `/vm/NAME/up`, `/quit`.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::wall_ms;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// A keep-alive connection idle for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (and discarded).
const MAX_BODY: u64 = 1 << 20;
/// Listen backlog of every VM.
const BACKLOG: u32 = 1024;
/// Bodies up to this size are written with the headers in one call.
const COALESCE: usize = 16 * 1024;

// ---------------------------------------------------------------------------
// Specs and usage

/// One emulated VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    #[serde(default = "VmSpec::default_ip")]
    pub ip: String,
    /// 0 = any free port (the ready file and [`Handle::addr`] tell which).
    #[serde(default)]
    pub port: u16,
    /// Total CPU capacity (all vCPUs), MHz.
    pub cpu_mhz: f64,
    #[serde(default = "VmSpec::default_vcpus")]
    pub vcpus: u32,
    /// Link capacity in KB/s (1 KB = 1024 bytes); 0 = unlimited.
    #[serde(default)]
    pub net_kbps: f64,
    #[serde(default = "VmSpec::default_memory_mb")]
    pub memory_mb: f64,
}

impl VmSpec {
    pub fn new(name: &str, ip: &str, cpu_mhz: f64, vcpus: u32, net_kbps: f64) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            ip: ip.to_string(),
            port: 0,
            cpu_mhz,
            vcpus,
            net_kbps,
            memory_mb: 2048.0,
        }
    }

    fn default_ip() -> String {
        "127.0.0.1".into()
    }
    fn default_vcpus() -> u32 {
        1
    }
    fn default_memory_mb() -> f64 {
        2048.0
    }

    /// From a spec object; `ip` defaults to 127.0.0.1, `port` to 0,
    /// `vcpus` to 1, `net_kbps` to 0 (unlimited), `memory_mb` to 2048.
    pub fn from_json(v: &Value) -> Result<VmSpec, String> {
        let spec = VmSpec::deserialize(v).map_err(|e| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
            format!("VM {name}: {e}")
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty() || n.contains(['/', '?', ' ', '%']) {
            return Err(format!("bad VM name {n:?}"));
        }
        if self.ip.parse::<IpAddr>().is_err() {
            return Err(format!("VM {n}: bad ip {:?}", self.ip));
        }
        if !(self.cpu_mhz.is_finite() && self.cpu_mhz >= 1.0) {
            return Err(format!("VM {n}: cpu_mhz must be >= 1"));
        }
        if !(1..=1024).contains(&self.vcpus) {
            return Err(format!("VM {n}: vcpus must be 1 to 1024"));
        }
        if !(self.net_kbps.is_finite() && self.net_kbps >= 0.0) {
            return Err(format!("VM {n}: net_kbps must be >= 0"));
        }
        if !(self.memory_mb.is_finite() && self.memory_mb >= 0.0) {
            return Err(format!("VM {n}: memory_mb must be >= 0"));
        }
        Ok(())
    }
}

/// Parses a spec file: a JSON array of VM specs (names must be unique).
pub fn parse_specs(text: &str) -> Result<Vec<VmSpec>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("spec: {e}"))?;
    let arr = v.as_array().ok_or("spec: not a JSON array")?;
    let specs = arr
        .iter()
        .map(VmSpec::from_json)
        .collect::<Result<Vec<_>, _>>()?;
    check_names(&specs)?;
    Ok(specs)
}

/// A spec file's text for these VMs.
pub fn specs_json(specs: &[VmSpec]) -> String {
    Value::Array(specs.iter().map(VmSpec::to_json).collect()).to_string()
}

fn check_names(specs: &[VmSpec]) -> Result<(), String> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("duplicate VM name {:?}", s.name));
        }
    }
    Ok(())
}

/// One VM's usage at one instant (`GET /usage` answers an array of them,
/// all measured at the same instant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub name: String,
    /// Wall clock, ms since the Unix epoch.
    pub t_ms: u64,
    /// Cumulative CPU consumed (requests + hog), MHz·ms.
    pub cpu_mhz_ms: f64,
    /// Cumulative bytes transmitted (headers + bodies).
    pub bytes_sent: u64,
    /// Cumulative responses completed.
    pub requests: u64,
    /// Connections open now.
    pub active: u64,
    /// Requests read and not yet answered.
    pub in_flight: u64,
    /// Memory in use now, KB.
    pub mem_kb: f64,
    /// Hog set in the guest, MHz (consumes at most 99% of the capacity).
    pub hog_mhz: f64,
    /// Current CPU capacity, MHz.
    pub cpu_mhz: f64,
    /// CPU the VM can really use now (capacity after contention and
    /// slowdown), MHz.
    pub cpu_eff_mhz: f64,
    /// Cumulative CPU ready time, ms summed over vCPUs.
    #[serde(default)]
    pub ready_ms: f64,
    pub up: bool,
}

impl Usage {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Parses a `GET /usage` answer.
pub fn parse_usage(text: &str) -> Result<Vec<Usage>, String> {
    serde_json::from_str(text).map_err(|e| format!("usage: {e}"))
}

// ---------------------------------------------------------------------------
// Pages

/// The page model: CPU cost (MHz·ms) and body size of a path (query string
/// ignored); `None` = 404.
///
/// * T1 static `/t1/{1k,16k,64k,512k,1m}`: 1 MHz·ms + 0.05 MHz·ms per KB.
/// * T2 dynamic `/t2/1` … `/t2/5`: 50^k additions, 0.002 MHz·ms each.
/// * `/health`: no cost.
pub fn cost_mhz_ms(path: &str) -> Option<(f64, u64)> {
    page(path).map(|p| (p.cost, p.body.len() as u64))
}

/// T1 page sizes, bytes.
pub const T1_PAGES: [(&str, usize); 5] = [
    ("1k", 1024),
    ("16k", 16 * 1024),
    ("64k", 64 * 1024),
    ("512k", 512 * 1024),
    ("1m", 1024 * 1024),
];

struct Page {
    cost: f64,
    body: Body,
}

enum Body {
    Filler(usize),
    Text(String),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Filler(n) => *n,
            Body::Text(s) => s.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Body::Filler(n) => &filler()[..*n],
            Body::Text(s) => s.as_bytes(),
        }
    }
}

fn filler() -> &'static [u8] {
    static FILLER: OnceLock<Vec<u8>> = OnceLock::new();
    FILLER.get_or_init(|| {
        let line = b"dwepc-lab emulated VM static page filler, 64 bytes per line....\n";
        line.iter().copied().cycle().take(1024 * 1024).collect()
    })
}

/// The path part of a request target (no query, no fragment, no scheme and
/// host in absolute form).
fn path_of(target: &str) -> &str {
    let t = target.split(['?', '#']).next().unwrap_or("");
    match t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => t,
    }
}

fn page(target: &str) -> Option<Page> {
    let path = path_of(target);
    if path == "/health" {
        return Some(Page {
            cost: 0.0,
            body: Body::Text("ok\n".to_string()),
        });
    }
    if let Some(size) = path.strip_prefix("/t1/") {
        let (_, n) = T1_PAGES.iter().find(|(s, _)| *s == size)?;
        return Some(Page {
            cost: 1.0 + 0.05 * (*n as f64 / 1024.0),
            body: Body::Filler(*n),
        });
    }
    if let Some(k) = path.strip_prefix("/t2/") {
        let k: u32 = match k {
            "1" | "2" | "3" | "4" | "5" => k.parse().ok()?,
            _ => return None,
        };
        let additions = 50u64.pow(k);
        // A small real computation; the cost itself is emulated.
        let result: u64 = (1..=50 * u64::from(k)).sum();
        return Some(Page {
            cost: additions as f64 * 0.002,
            body: Body::Text(format!(
                "t2 k={k} additions={additions} sample_sum(1..={})={result}\n",
                50 * k
            )),
        });
    }
    None
}

// ---------------------------------------------------------------------------
// The queue model

/// A work-conserving FIFO server of `speed` units per ms. `done(t)` is the
/// work completed by `t`; between `anchor_t` and `busy_until()` it is busy
/// without interruption.
#[derive(Clone, Debug)]
struct Queue {
    speed: f64,
    committed: f64,
    anchor_t: f64,
    anchor_done: f64,
    /// Time with work before `anchor_t`, ms.
    busy_ms: f64,
}

impl Queue {
    fn new(speed: f64, t: f64) -> Queue {
        Queue {
            speed,
            committed: 0.0,
            anchor_t: t,
            anchor_done: 0.0,
            busy_ms: 0.0,
        }
    }

    /// Total time with work up to `t`, ms.
    fn busy(&self, t: f64) -> f64 {
        self.busy_ms + (t.min(self.busy_until()) - self.anchor_t).max(0.0)
    }

    fn done(&self, t: f64) -> f64 {
        (self.anchor_done + (t - self.anchor_t).max(0.0) * self.speed).min(self.committed)
    }

    fn busy_until(&self) -> f64 {
        self.anchor_t + (self.committed - self.anchor_done) / self.speed
    }

    fn settle(&mut self, t: f64) {
        self.busy_ms = self.busy(t);
        self.anchor_done = self.done(t);
        self.anchor_t = t;
    }

    /// Queues `work` at `t`; its completion mark (for [`Queue::finish_of`]).
    fn push(&mut self, t: f64, work: f64) -> f64 {
        self.settle(t);
        self.committed += work;
        self.committed
    }

    /// When the work up to `target` is done (at the current speed).
    fn finish_of(&self, target: f64) -> f64 {
        self.anchor_t + (target - self.anchor_done).max(0.0) / self.speed
    }

    fn set_speed(&mut self, t: f64, speed: f64) {
        self.settle(t);
        self.speed = speed;
    }

    /// Drops the backlog (the VM died).
    fn truncate(&mut self, t: f64) {
        self.settle(t);
        self.committed = self.anchor_done;
    }
}

/// Bytes per ms of a link of `kbps` KB/s; `None` = unlimited.
fn link_speed(kbps: f64) -> Option<f64> {
    (kbps > 0.0).then(|| kbps * 1024.0 / 1000.0)
}

struct State {
    up: bool,
    cpu_mhz: f64,
    hog_mhz: f64,
    /// Part of the cycles the hypervisor withholds (reported as ready).
    contention: f64,
    /// Part of the speed lost without any counter showing it.
    slowdown: f64,
    /// CPU ready accumulated before `ready_t`, ms over all vCPUs.
    ready_acc: f64,
    /// Busy time of all vCPUs at `ready_t`.
    ready_busy: f64,
    net_kbps: f64,
    servers: Vec<Queue>,
    link: Option<Queue>,
    /// Bytes that did not go through a limited link.
    direct_bytes: u64,
    hog_acc: f64,
    hog_t: f64,
    requests: u64,
    active: u64,
    in_flight: u64,
}

impl State {
    fn new(spec: &VmSpec, t: f64) -> State {
        let mut s = State {
            up: false,
            cpu_mhz: spec.cpu_mhz,
            hog_mhz: 0.0,
            contention: 0.0,
            slowdown: 0.0,
            ready_acc: 0.0,
            ready_busy: 0.0,
            net_kbps: spec.net_kbps,
            servers: vec![Queue::new(1.0, t); spec.vcpus as usize],
            link: link_speed(spec.net_kbps).map(|r| Queue::new(r, t)),
            direct_bytes: 0,
            hog_acc: 0.0,
            hog_t: t,
            requests: 0,
            active: 0,
            in_flight: 0,
        };
        let sp = s.vcpu_speed();
        s.servers.iter_mut().for_each(|q| q.speed = sp);
        s
    }

    fn vcpu_speed(&self) -> f64 {
        let c = self.cpu_mhz;
        (c - self.hog_mhz).max(0.01 * c) / self.servers.len() as f64
            * (1.0 - self.contention)
            * (1.0 - self.slowdown)
    }

    /// CPU the VM can use now (after contention and slowdown), MHz.
    fn cpu_eff(&self) -> f64 {
        self.cpu_mhz * (1.0 - self.contention) * (1.0 - self.slowdown)
    }

    fn busy(&self, t: f64) -> f64 {
        self.servers.iter().map(|q| q.busy(t)).sum()
    }

    /// Cumulative CPU ready at `t`: while a vCPU has work, the part of the
    /// time the hypervisor withholds.
    fn ready_ms(&self, t: f64) -> f64 {
        self.ready_acc + (self.busy(t) - self.ready_busy).max(0.0) * self.contention
    }

    fn hog_eff(&self) -> f64 {
        if self.up {
            self.hog_mhz.clamp(0.0, 0.99 * self.cpu_mhz)
        } else {
            0.0
        }
    }

    /// Settles the accounting at `t`, applies `f`, then the new speeds.
    fn reconfigure(&mut self, t: f64, f: impl FnOnce(&mut State)) {
        self.hog_acc += self.hog_eff() * (t - self.hog_t).max(0.0);
        self.hog_t = t;
        self.ready_acc = self.ready_ms(t);
        self.ready_busy = self.busy(t);
        self.servers.iter_mut().for_each(|q| q.settle(t));
        if let Some(l) = &mut self.link {
            l.settle(t);
        }
        f(self);
        let sp = self.vcpu_speed();
        self.servers.iter_mut().for_each(|q| q.set_speed(t, sp));
        match (link_speed(self.net_kbps), &mut self.link) {
            (Some(r), Some(l)) => l.set_speed(t, r),
            (Some(r), None) => self.link = Some(Queue::new(r, t)),
            (None, Some(l)) => {
                // Unlimited from now on: the backlog is sent at once.
                self.direct_bytes += l.committed.round() as u64;
                self.link = None;
            }
            (None, None) => {}
        }
    }

    fn cpu_mhz_ms(&self, t: f64) -> f64 {
        let work: f64 = self.servers.iter().map(|q| q.done(t)).sum();
        work + self.hog_acc + self.hog_eff() * (t - self.hog_t).max(0.0)
    }

    fn bytes_sent(&self, t: f64) -> u64 {
        let link = self.link.as_ref().map_or(0.0, |l| l.done(t));
        self.direct_bytes + (link + 1e-6).floor() as u64
    }
}

struct Vm {
    name: String,
    addr: SocketAddr,
    memory_mb: f64,
    state: Mutex<State>,
    /// Bumped on every capacity change: waiting requests re-time.
    epoch: watch::Sender<u64>,
    /// Bumped when the VM goes down: its listener and connections close.
    life: watch::Sender<u64>,
    /// The raw fd of the listener while up (serialises up/down).
    listener_fd: Mutex<Option<i32>>,
}

impl Vm {
    fn usage(&self, st: &State, t: f64, wall_ms: u64) -> Usage {
        Usage {
            name: self.name.clone(),
            t_ms: wall_ms,
            cpu_mhz_ms: st.cpu_mhz_ms(t),
            bytes_sent: st.bytes_sent(t),
            requests: st.requests,
            active: st.active,
            in_flight: st.in_flight,
            mem_kb: 0.3 * self.memory_mb * 1024.0 + 1024.0 * st.active as f64,
            hog_mhz: st.hog_mhz,
            cpu_mhz: st.cpu_mhz,
            cpu_eff_mhz: st.cpu_eff(),
            ready_ms: st.ready_ms(t),
            up: st.up,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error of a control operation: HTTP status and message.
type CtlError = (u16, String);

struct Lab {
    base: Instant,
    base_tokio: tokio::time::Instant,
    vms: Vec<Arc<Vm>>,
    rt: tokio::runtime::Handle,
    control: SocketAddr,
    quit: watch::Sender<bool>,
}

impl Lab {
    /// Now, ms since `base` (take it while holding the VM's lock).
    fn now_ms(&self) -> f64 {
        self.base.elapsed().as_secs_f64() * 1000.0
    }

    fn at(&self, ms: f64) -> tokio::time::Instant {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 1e12 };
        self.base_tokio + Duration::from_secs_f64(ms / 1000.0)
    }

    fn vm(&self, name: &str) -> Result<&Arc<Vm>, CtlError> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| (404, format!("no VM named {name:?}")))
    }

    fn usage(&self) -> Vec<Usage> {
        let guards: Vec<_> = self.vms.iter().map(|v| lock(&v.state)).collect();
        let t = self.now_ms();
        let wall = wall_ms();
        self.vms
            .iter()
            .zip(&guards)
            .map(|(vm, st)| vm.usage(st, t, wall))
            .collect()
    }

    fn usage_of(&self, name: &str) -> Result<Usage, CtlError> {
        let vm = self.vm(name)?;
        let st = lock(&vm.state);
        Ok(vm.usage(&st, self.now_ms(), wall_ms()))
    }

    fn reconfigure(&self, name: &str, f: impl FnOnce(&mut State)) -> Result<(), CtlError> {
        let vm = self.vm(name)?;
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, f);
        }
        vm.epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    fn set_hog(&self, name: &str, mhz: f64) -> Result<(), CtlError> {
        if !(mhz.is_finite() && mhz >= 0.0) {
            return Err((400, format!("bad hog {mhz}")));
        }
        self.reconfigure(name, |s| s.hog_mhz = mhz)
    }

    fn set_cpu(&self, name: &str, mhz: f64) -> Result<(), CtlError> {
        if !(mhz.is_finite() && mhz >= 1.0) {
            return Err((400, format!("bad cpu capacity {mhz} (>= 1 MHz)")));
        }
        self.reconfigure(name, |s| s.cpu_mhz = mhz)
    }

    fn set_net(&self, name: &str, kbps: f64) -> Result<(), CtlError> {
        if !(kbps.is_finite() && kbps >= 0.0) {
            return Err((400, format!("bad link capacity {kbps}")));
        }
        self.reconfigure(name, |s| s.net_kbps = kbps)
    }

    fn set_contention(&self, name: &str, pct: f64) -> Result<(), CtlError> {
        if !(pct.is_finite() && (0.0..=95.0).contains(&pct)) {
            return Err((400, format!("bad contention {pct} (0 to 95 %)")));
        }
        self.reconfigure(name, |s| s.contention = pct / 100.0)
    }

    fn set_slowdown(&self, name: &str, pct: f64) -> Result<(), CtlError> {
        if !(pct.is_finite() && (0.0..=95.0).contains(&pct)) {
            return Err((400, format!("bad slowdown {pct} (0 to 95 %)")));
        }
        self.reconfigure(name, |s| s.slowdown = pct / 100.0)
    }

    fn down(&self, name: &str) -> Result<(), CtlError> {
        let vm = self.vm(name)?;
        let mut fd = lock(&vm.listener_fd);
        let Some(raw) = fd.take() else {
            return Ok(());
        };
        // Stops listening now (new connections are refused at once); the
        // accept loop owns the fd and closes it when it sees `life` change.
        // SAFETY: the listener is alive until its loop sees `life` change.
        unsafe { libc::shutdown(raw, libc::SHUT_RDWR) };
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, |s| {
                s.up = false;
                s.servers.iter_mut().for_each(|q| q.truncate(t));
                if let Some(l) = &mut s.link {
                    l.truncate(t);
                }
            });
        }
        vm.life.send_modify(|g| *g += 1);
        vm.epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    fn up(self: &Arc<Self>, name: &str) -> Result<(), CtlError> {
        let vm = self.vm(name)?.clone();
        let fd = lock(&vm.listener_fd);
        if fd.is_some() {
            return Ok(());
        }
        let listener = {
            let _g = self.rt.enter();
            bind(vm.addr)
        }
        .map_err(|e| (500, format!("bind {}: {e}", vm.addr)))?;
        self.listen(vm.clone(), listener, fd);
        Ok(())
    }

    /// Marks `vm` up and serves `listener` (with the `listener_fd` lock).
    fn listen(
        self: &Arc<Self>,
        vm: Arc<Vm>,
        listener: TcpListener,
        mut fd: MutexGuard<Option<i32>>,
    ) {
        *fd = Some(listener.as_raw_fd());
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, |s| s.up = true);
        }
        let life = vm.life.subscribe();
        self.rt
            .spawn(accept_loop(self.clone(), vm.clone(), listener, life));
        drop(fd);
        vm.epoch.send_modify(|e| *e += 1);
    }

    fn ready_json(&self) -> Value {
        json!({
            "control": self.control.to_string(),
            "vms": self.vms.iter()
                .map(|v| json!({"name": v.name, "addr": v.addr.to_string()}))
                .collect::<Vec<_>>(),
        })
    }

    /// Answers a control request: status, JSON body, quit after answering.
    fn control(self: &Arc<Self>, req: &Request) -> (u16, Value, bool) {
        if let Some(code) = req.error {
            return (code, json!({"error": reason(code)}), false);
        }
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (path_of(p), q),
            None => (path_of(&req.target), ""),
        };
        let param = |k: &str| -> Result<f64, CtlError> {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .ok_or_else(|| (400, format!("missing ?{k}=")))?
                .1
                .parse::<f64>()
                .map_err(|e| (400, format!("bad {k}: {e}")))
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let res = match parts.as_slice() {
            ["usage"] => {
                let all = self.usage().iter().map(Usage::to_json).collect();
                return (200, Value::Array(all), false);
            }
            [""] | ["vms"] => return (200, self.ready_json(), false),
            ["quit"] => return (200, json!({"ok": true}), true),
            ["vm", name, op] => match *op {
                "hog" => param("mhz").and_then(|x| self.set_hog(name, x)),
                "cpu" => param("mhz").and_then(|x| self.set_cpu(name, x)),
                "net" => param("kbps").and_then(|x| self.set_net(name, x)),
                "contention" => param("pct").and_then(|x| self.set_contention(name, x)),
                "slowdown" => param("pct").and_then(|x| self.set_slowdown(name, x)),
                "down" => self.down(name),
                "up" => self.up(name),
                "usage" => Ok(()),
                _ => Err((404, format!("unknown operation {op:?}"))),
            }
            .and_then(|()| self.usage_of(name)),
            _ => Err((404, format!("unknown path {path:?}"))),
        };
        match res {
            Ok(u) => (200, u.to_json(), false),
            Err((code, msg)) => (code, json!({"error": msg}), false),
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(BACKLOG)
}

// ---------------------------------------------------------------------------
// HTTP

struct Request {
    method: String,
    target: String,
    http10: bool,
    keep_alive: bool,
    /// Answer this status and close.
    error: Option<u16>,
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn parse_head(head: &[u8]) -> (Request, u64) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut req = Request {
        method: String::new(),
        target: String::new(),
        http10: false,
        keep_alive: false,
        error: None,
    };
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let [method, target, version] = first.as_slice() else {
        req.error = Some(400);
        return (req, 0);
    };
    req.method = method.to_string();
    req.target = target.to_string();
    match *version {
        "HTTP/1.1" => {}
        "HTTP/1.0" => req.http10 = true,
        _ => {
            req.error = Some(505);
            return (req, 0);
        }
    }
    let (mut close, mut keep, mut len) = (false, false, 0u64);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            req.error = Some(400);
            return (req, 0);
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("connection") {
            for tok in v.split(',').map(str::trim) {
                close |= tok.eq_ignore_ascii_case("close");
                keep |= tok.eq_ignore_ascii_case("keep-alive");
            }
        } else if k.eq_ignore_ascii_case("content-length") {
            match v.parse::<u64>() {
                Ok(n) if n <= MAX_BODY => len = n,
                Ok(_) => req.error = Some(413),
                Err(_) => req.error = Some(400),
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            req.error = Some(501);
        }
    }
    req.keep_alive = req.error.is_none() && !close && (!req.http10 || keep);
    (req, len)
}

/// Reads one request (head and body, the body discarded). `None` = the
/// client closed between requests.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Request>> {
    let mut scanned = 0;
    loop {
        // Empty lines before a request are ignored (RFC 9112 §2.2).
        let skip = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip > 0 {
            buf.drain(..skip);
            scanned = 0;
        }
        if let Some(end) = buf[scanned..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + scanned)
        {
            let (req, body) = parse_head(&buf[..end]);
            let total = end
                + 4
                + if req.error.is_some() {
                    0
                } else {
                    body as usize
                };
            while buf.len() < total {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(Some(req));
        }
        if buf.len() > MAX_HEAD {
            let (mut req, _) = parse_head(b"");
            req.error = Some(431);
            return Ok(Some(req));
        }
        scanned = buf.len().saturating_sub(3);
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn accept_loop(
    lab: Arc<Lab>,
    vm: Arc<Vm>,
    listener: TcpListener,
    mut life: watch::Receiver<u64>,
) {
    loop {
        tokio::select! {
            _ = life.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(lab.clone(), vm.clone(), stream, life.clone()));
                }
                Err(_) => {
                    if life.has_changed().unwrap_or(true) {
                        return;
                    }
                    // EMFILE and the like: let connections finish.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Field {
    Active,
    InFlight,
}

/// Counts a connection or a request for as long as it lives.
struct Counter<'a> {
    vm: &'a Vm,
    field: Field,
}

impl<'a> Counter<'a> {
    fn new(vm: &'a Vm, field: Field) -> Counter<'a> {
        let c = Counter { vm, field };
        c.add(1);
        c
    }

    fn add(&self, d: i64) {
        let mut st = lock(&self.vm.state);
        let x = match self.field {
            Field::Active => &mut st.active,
            Field::InFlight => &mut st.in_flight,
        };
        *x = x.saturating_add_signed(d);
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        self.add(-1);
    }
}

async fn connection(lab: Arc<Lab>, vm: Arc<Vm>, stream: TcpStream, mut life: watch::Receiver<u64>) {
    let _active = Counter::new(&vm, Field::Active);
    tokio::select! {
        _ = serve(&lab, &vm, stream) => {}
        _ = life.changed() => {}
    }
}

/// Sleeps until `finish(state)` (re-evaluated on every capacity change).
async fn wait_until(
    lab: &Lab,
    vm: &Vm,
    epoch: &mut watch::Receiver<u64>,
    finish: impl Fn(&State) -> f64,
) {
    loop {
        let f = finish(&lock(&vm.state));
        if f <= lab.now_ms() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(lab.at(f)) => return,
            r = epoch.changed() => if r.is_err() { return },
        }
    }
}

async fn serve(lab: &Lab, vm: &Vm, mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let req =
            match tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut stream, &mut buf)).await {
                Ok(Ok(Some(r))) => r,
                _ => return,
            };
        let _in_flight = Counter::new(vm, Field::InFlight);
        let mut epoch = vm.epoch.subscribe();
        let (status, cost, body) = match req.error {
            Some(code) => (code, 0.0, Body::Text(format!("{}\n", reason(code)))),
            None => match page(&req.target) {
                Some(p) => (200, p.cost, p.body),
                None => (404, 0.0, Body::Text("not found\n".to_string())),
            },
        };
        let conn = match (req.keep_alive, req.http10) {
            (false, _) => "Connection: close\r\n",
            (true, true) => "Connection: keep-alive\r\n",
            (true, false) => "",
        };
        let mut out = format!(
            "HTTP/1.1 {status} {}\r\nServer: dwepc-lab\r\nX-Backend: {}\r\n\
             Content-Type: text/plain\r\nContent-Length: {}\r\n{conn}\r\n",
            reason(status),
            vm.name,
            body.len()
        )
        .into_bytes();
        let body = if req.method == "HEAD" {
            &[][..]
        } else {
            body.bytes()
        };
        let bytes = (out.len() + body.len()) as u64;
        if cost > 0.0 {
            // CPU: the vCPU that frees up first, FIFO.
            let (i, target) = {
                let mut st = lock(&vm.state);
                if !st.up {
                    return;
                }
                let t = lab.now_ms();
                let i = (0..st.servers.len())
                    .min_by(|a, b| {
                        st.servers[*a]
                            .busy_until()
                            .total_cmp(&st.servers[*b].busy_until())
                    })
                    .unwrap_or(0);
                (i, st.servers[i].push(t, cost))
            };
            wait_until(lab, vm, &mut epoch, |st| st.servers[i].finish_of(target)).await;
            // Network: the link, FIFO.
            let target = {
                let mut st = lock(&vm.state);
                let t = lab.now_ms();
                match &mut st.link {
                    Some(l) => Some(l.push(t, bytes as f64)),
                    None => {
                        st.direct_bytes += bytes;
                        None
                    }
                }
            };
            if let Some(target) = target {
                wait_until(lab, vm, &mut epoch, |st| {
                    st.link.as_ref().map_or(0.0, |l| l.finish_of(target))
                })
                .await;
            }
        } else {
            lock(&vm.state).direct_bytes += bytes;
        }
        let written = if body.len() <= COALESCE {
            out.extend_from_slice(body);
            stream.write_all(&out).await
        } else {
            match stream.write_all(&out).await {
                Ok(()) => stream.write_all(body).await,
                e => e,
            }
        };
        if written.is_err() {
            return;
        }
        lock(&vm.state).requests += 1;
        if !req.keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn control_loop(lab: Arc<Lab>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(control_conn(lab.clone(), stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn control_conn(lab: Arc<Lab>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let timeout = Duration::from_secs(10);
    let req = match tokio::time::timeout(timeout, read_request(&mut stream, &mut buf)).await {
        Ok(Ok(Some(r))) => r,
        _ => return,
    };
    let (status, body, quit) = lab.control(&req);
    let body = body.to_string();
    let out = format!(
        "HTTP/1.1 {status} {}\r\nServer: dwepc-lab\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
    if quit {
        lab.quit.send_replace(true);
    }
}

// ---------------------------------------------------------------------------
// In-process API

/// A running VM set (its own 2-thread tokio runtime). Dropping it stops
/// everything.
pub struct Handle {
    rt: Option<tokio::runtime::Runtime>,
    lab: Arc<Lab>,
}

/// Starts the VMs of `specs` and the control endpoint on `control`
/// (`"127.0.0.1:0"` = any free port). All listeners are bound on return.
pub fn start(specs: Vec<VmSpec>, control: &str) -> io::Result<Handle> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    for s in &specs {
        s.validate().map_err(invalid)?;
    }
    check_names(&specs).map_err(invalid)?;
    filler();
    let control_addr = control
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("control address {control:?}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dwepc-vms")
        .enable_all()
        .build()?;
    let lab = {
        let _g = rt.enter();
        let control_listener = bind(control_addr)
            .map_err(|e| io::Error::new(e.kind(), format!("control {control_addr}: {e}")))?;
        let mut listeners = Vec::new();
        for s in &specs {
            let addr = SocketAddr::new(s.ip.parse().map_err(|_| invalid(s.ip.clone()))?, s.port);
            let l = bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("VM {} on {addr}: {e}", s.name)))?;
            listeners.push(l);
        }
        let base = Instant::now();
        let mut vms = Vec::new();
        for (s, l) in specs.iter().zip(&listeners) {
            vms.push(Arc::new(Vm {
                name: s.name.clone(),
                addr: l.local_addr()?,
                memory_mb: s.memory_mb,
                state: Mutex::new(State::new(s, 0.0)),
                epoch: watch::channel(0).0,
                life: watch::channel(0).0,
                listener_fd: Mutex::new(None),
            }));
        }
        let lab = Arc::new(Lab {
            base,
            base_tokio: tokio::time::Instant::from_std(base),
            vms,
            rt: rt.handle().clone(),
            control: control_listener.local_addr()?,
            quit: watch::channel(false).0,
        });
        for (vm, l) in lab.vms.iter().zip(listeners) {
            lab.listen(vm.clone(), l, lock(&vm.listener_fd));
        }
        rt.spawn(control_loop(lab.clone(), control_listener));
        lab
    };
    Ok(Handle { rt: Some(rt), lab })
}

impl Handle {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.lab.control
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.lab.vm(name).ok().map(|v| v.addr)
    }

    /// `{"control":"127.0.0.1:P","vms":[{"name":..,"addr":"ip:port"},...]}`
    pub fn ready_json(&self) -> Value {
        self.lab.ready_json()
    }

    /// Every VM's usage, measured at the same instant.
    pub fn usage(&self) -> Vec<Usage> {
        self.lab.usage()
    }

    pub fn set_hog(&self, name: &str, mhz: f64) -> Result<(), String> {
        self.lab.set_hog(name, mhz).map_err(|e| e.1)
    }

    pub fn set_cpu(&self, name: &str, mhz: f64) -> Result<(), String> {
        self.lab.set_cpu(name, mhz).map_err(|e| e.1)
    }

    pub fn set_net(&self, name: &str, kbps: f64) -> Result<(), String> {
        self.lab.set_net(name, kbps).map_err(|e| e.1)
    }

    /// The hypervisor withholds `pct` % of the cycles (shown as CPU ready).
    pub fn set_contention(&self, name: &str, pct: f64) -> Result<(), String> {
        self.lab.set_contention(name, pct).map_err(|e| e.1)
    }

    /// The VM loses `pct` % of its speed, shown by no counter.
    pub fn set_slowdown(&self, name: &str, pct: f64) -> Result<(), String> {
        self.lab.set_slowdown(name, pct).map_err(|e| e.1)
    }

    pub fn down(&self, name: &str) -> Result<(), String> {
        self.lab.down(name).map_err(|e| e.1)
    }

    pub fn up(&self, name: &str) -> Result<(), String> {
        self.lab.up(name).map_err(|e| e.1)
    }

    /// Blocks until `GET /quit` (not from inside an async context).
    pub fn wait(&self) {
        let mut rx = self.lab.quit.subscribe();
        self.rt().block_on(async {
            let _ = rx.wait_for(|q| *q).await;
        });
    }

    /// Blocks until `GET /quit`, SIGTERM or SIGINT.
    pub fn wait_signals(&self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut rx = self.lab.quit.subscribe();
        self.rt().block_on(async {
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = rx.wait_for(|q| *q) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            Ok(())
        })
    }

    /// Stops everything (as dropping does).
    pub fn stop(self) {}
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Command line

/// `dwepc-lab vms --spec FILE [--control ADDR] [--ready FILE]`: runs the
/// VMs until `GET /quit`, SIGTERM or SIGINT (exit 0).
pub fn main(spec: &str, control: &str, ready: Option<&str>) -> i32 {
    let specs = match std::fs::read_to_string(spec)
        .map_err(|e| format!("{spec}: {e}"))
        .and_then(|t| parse_specs(&t))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dwepc-lab vms: {e}");
            return 2;
        }
    };
    let h = match start(specs, control) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dwepc-lab vms: {e}");
            return 1;
        }
    };
    let line = h.ready_json().to_string();
    if let Some(ready) = ready {
        let tmp = format!("{ready}.tmp.{}", std::process::id());
        if let Err(e) =
            std::fs::write(&tmp, format!("{line}\n")).and_then(|()| std::fs::rename(&tmp, ready))
        {
            eprintln!("dwepc-lab vms: {ready}: {e}");
            let _ = std::fs::remove_file(&tmp);
            return 1;
        }
    }
    {
        use std::io::Write;
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Err(e) = h.wait_signals() {
        eprintln!("dwepc-lab vms: signals: {e}");
        return 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_costs() {
        assert_eq!(cost_mhz_ms("/t1/1k"), Some((1.05, 1024)));
        assert_eq!(cost_mhz_ms("/t1/1m?x=1").unwrap(), (1.0 + 51.2, 1 << 20));
        let (c5, b5) = cost_mhz_ms("/t2/5").unwrap();
        assert!((c5 - 625_000.0).abs() < 1e-6, "{c5}");
        assert!((50..200).contains(&b5), "{b5}");
        let (c1, _) = cost_mhz_ms("/t2/1").unwrap();
        assert!((c1 - 0.1).abs() < 1e-12);
        assert!((c5 / c1 - 6.25e6).abs() < 1e-3);
        assert_eq!(cost_mhz_ms("/health").map(|c| c.0), Some(0.0));
        for p in [
            "/",
            "/t1/2k",
            "/t2/0",
            "/t2/6",
            "/t2/05",
            "/t1/1k/",
            "/health/x",
        ] {
            assert_eq!(cost_mhz_ms(p), None, "{p}");
        }
        assert_eq!(cost_mhz_ms("http://h:1/t1/16k").map(|c| c.1), Some(16384));
        assert_eq!(
            page("/t2/3").unwrap().body.len() as u64,
            cost_mhz_ms("/t2/3").unwrap().1
        );
    }

    #[test]
    fn queue_fifo_and_accounting() {
        let mut q = Queue::new(2.0, 0.0); // 2 units/ms
        let a = q.push(0.0, 10.0);
        let b = q.push(1.0, 10.0);
        assert_eq!(q.finish_of(a), 5.0);
        assert_eq!(q.finish_of(b), 10.0);
        assert_eq!(q.done(4.0), 8.0);
        assert_eq!(q.done(100.0), 20.0);
        // Idle from 10 to 20: new work starts at 20.
        let c = q.push(20.0, 4.0);
        assert_eq!(q.finish_of(c), 22.0);
        assert_eq!(q.done(21.0), 22.0);
        // Speed halves at 21: the rest (2 units) takes 2 ms.
        q.set_speed(21.0, 1.0);
        assert_eq!(q.finish_of(c), 23.0);
        assert_eq!(q.done(22.0), 23.0);
        assert_eq!(q.done(30.0), 24.0);
        // Truncation drops the backlog.
        q.push(30.0, 100.0);
        q.truncate(40.0);
        assert_eq!(q.done(1000.0), 34.0);
        assert_eq!(q.busy_until(), 40.0);
    }

    #[test]
    fn state_hog_and_floor() {
        let spec = VmSpec::new("a", "127.0.0.1", 2000.0, 2, 0.0);
        let mut st = State::new(&spec, 0.0);
        st.up = true;
        assert_eq!(st.vcpu_speed(), 1000.0);
        st.reconfigure(0.0, |s| s.hog_mhz = 1000.0);
        assert_eq!(st.vcpu_speed(), 500.0);
        assert!((st.cpu_mhz_ms(1000.0) - 1_000_000.0).abs() < 1e-6);
        st.reconfigure(1000.0, |s| s.hog_mhz = 5000.0);
        assert_eq!(st.vcpu_speed(), 10.0); // 1% of 2000 over 2 vCPUs
                                           // The hog takes at most 99%.
        assert!((st.cpu_mhz_ms(2000.0) - 1_000_000.0 - 1_980_000.0).abs() < 1e-6);
    }

    #[test]
    fn specs_parse() {
        let s = parse_specs(
            r#"[{"name":"vm1","ip":"127.0.0.11","port":8080,"cpu_mhz":2000,"vcpus":1,"net_kbps":4000,"memory_mb":2048},
                {"name":"vm2","cpu_mhz":4000}]"#,
        )
        .unwrap();
        assert_eq!(s[0].port, 8080);
        assert_eq!(s[0].net_kbps, 4000.0);
        assert_eq!(s[1].ip, "127.0.0.1");
        assert_eq!(s[1].vcpus, 1);
        assert_eq!(parse_specs(&specs_json(&s)).unwrap(), s);
        assert!(parse_specs(r#"[{"name":"a","cpu_mhz":1},{"name":"a","cpu_mhz":1}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a"}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a","cpu_mhz":100,"vcpus":0}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a/b","cpu_mhz":100}]"#).is_err());
        assert!(parse_specs(r#"{"name":"a"}"#).is_err());
    }

    #[test]
    fn heads() {
        let (r, n) = parse_head(b"GET /t1/1k HTTP/1.1\r\nHost: x\r\nContent-Length: 5");
        assert!(r.keep_alive && r.error.is_none() && n == 5 && r.target == "/t1/1k");
        let (r, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: Close");
        assert!(!r.keep_alive);
        let (r, _) = parse_head(b"GET / HTTP/1.0");
        assert!(!r.keep_alive && r.http10);
        let (r, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive");
        assert!(r.keep_alive);
        assert_eq!(parse_head(b"GET /").0.error, Some(400));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked")
                .0
                .error,
            Some(501)
        );
    }
}
