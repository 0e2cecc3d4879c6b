//! Load generator: closed-loop virtual users with think time (the paper's
//! experiment) or open-loop Poisson arrivals, over real HTTP/1.1 keep-alive
//! connections written by hand on tokio.
//!
//! The caller is synchronous: [`run`] builds its own small tokio runtime
//! (one worker thread for the load, the calling thread for the live view),
//! runs the load for `spec.duration`, lets the requests in flight at the end
//! finish (each is bounded by `spec.timeout`) and returns one [`Record`] per
//! request. It must not be called from inside a tokio runtime.
//!
//! Choices that depend on `seed` (paths, think times, arrival times) are
//! deterministic: the same seed gives the same per-user path and think-time
//! sequences and the same open-loop arrival schedule; only how many of them
//! fit in the run depends on the server's speed.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwepc_core::rng::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// `Record::status` of a connection error, protocol error or timeout.
pub const STATUS_ERROR: u16 = 0;
/// `Record::status` of an open-loop arrival dropped over `max_in_flight`.
pub const STATUS_DROPPED: u16 = 1;
/// `Record::backend` when the response had no (known) `X-Backend` header.
pub const NO_BACKEND: u8 = 255;

/// Per-connection buffer; also the largest response head or chunk-size line.
const BUF: usize = 16 * 1024;
/// Minimum pause of a closed-loop user after a failed request (so that a
/// refused connection with zero think time does not spin).
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// The live view reads second `s` this long after it ends.
const TICK_GRACE: Duration = Duration::from_millis(20);

/// How requests arrive.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// `users` virtual users, each: request, wait for the answer, think,
    /// repeat (the paper: 2 s think time between requests). Think times are
    /// exponential with mean `think_ms` (or fixed if `fixed_think`); the first
    /// request of each user is spread uniformly over the first think time.
    /// Each user keeps its own keep-alive connection, reconnecting after
    /// errors; after a failed request a user pauses at least 10 ms.
    Closed {
        users: usize,
        think_ms: u64,
        #[serde(default)]
        fixed_think: bool,
    },
    /// Poisson arrivals at `rate` requests/s, independent of answers,
    /// scheduled against an absolute clock. Requests take an idle keep-alive
    /// connection from a shared pool or open a new one.
    Open { rate: f64 },
}

/// From `from` on (relative to the start of the run), requests pick
/// uniformly among `paths` (indices into [`LoadSpec::paths`]) and the open
/// loop runs at `rate_factor` times its rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    #[serde(rename = "from_ms", with = "millis")]
    pub from: Duration,
    pub paths: Vec<usize>,
    pub rate_factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSpec {
    /// nginx instances (or any HTTP/1.1 servers), normally on loopback,
    /// with weights: an open-loop request goes to one at random by weight,
    /// a closed-loop user keeps the one drawn at its start.
    pub targets: Vec<(SocketAddr, f64)>,
    /// Each request picks one uniformly at random (at most 256 paths).
    pub paths: Vec<String>,
    /// The mix and rate over time; empty = every path at the full rate.
    pub phases: Vec<Phase>,
    pub pattern: Pattern,
    /// No request starts after this (relative to the start of the run).
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Per request, connecting included; a timeout is recorded as status 0.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Open loop: arrivals while this many requests are in flight are
    /// recorded as dropped (status 1) without sending; 0 = no limit.
    /// Ignored by the closed loop (which has `users` in flight at most).
    pub max_in_flight: usize,
    pub seed: u64,
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Start time relative to the run start.
    pub t_ms: u32,
    /// Until the whole response body is read (or the error/timeout); 0 for
    /// dropped arrivals.
    pub latency_us: u32,
    /// HTTP status; 0 = connection error/protocol error/timeout; 1 = dropped
    /// (open loop over `max_in_flight`).
    pub status: u16,
    /// Index into `backends` of the `X-Backend` response header; 255 =
    /// none/unknown. Kept on a timeout after the response head arrived.
    pub backend: u8,
    /// Index into `spec.paths`.
    pub path: u8,
    /// Body bytes received (also the partial count of a failed request).
    pub bytes: u32,
    /// Index into `spec.targets` of the frontend that was asked.
    pub frontend: u8,
}

impl LoadSpec {
    /// The spec as JSON (for a load process of its own).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Reads [`LoadSpec::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Result<LoadSpec, String> {
        LoadSpec::deserialize(v).map_err(|e| format!("load spec: {e}"))
    }
}

/// A `Duration` as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Writes records one per line: `t_ms latency_us status backend path bytes
/// frontend`.
pub fn write_records(mut w: impl std::io::Write, recs: &[Record]) -> io::Result<()> {
    for r in recs {
        writeln!(
            w,
            "{} {} {} {} {} {} {}",
            r.t_ms, r.latency_us, r.status, r.backend, r.path, r.bytes, r.frontend
        )?;
    }
    w.flush()
}

/// Reads [`write_records`]' lines (malformed lines are skipped).
pub fn read_records(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let v: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 7).then(|| Record {
                t_ms: v[0] as u32,
                latency_us: v[1] as u32,
                status: v[2] as u16,
                backend: v[3] as u8,
                path: v[4] as u8,
                bytes: v[5] as u32,
                frontend: v[6] as u8,
            })
        })
        .collect()
}

/// Runs the load; returns every request's record, sorted by `t_ms`.
/// `backends` are the `X-Backend` values the records index (at most 254).
/// Takes `duration`, plus the time the requests in flight at the end need
/// to finish (each at most `timeout`). Panics on an empty `paths` or more
/// than 256 of them.
pub fn run(spec: &LoadSpec, backends: &[String]) -> Vec<Record> {
    run_with(spec, backends, |_, _| {})
}

/// [`run`] with a live view: `progress(second, counts)` is called on the
/// calling thread shortly after each second of the run (`second` = 0, 1, …,
/// including the seconds in which the last requests drain, the last one
/// possibly partial), with the requests *completed* in that second:
/// `counts[i]` answered by `backends[i]` (any HTTP status), and
/// `counts[backends.len()]` the others (errors, timeouts, no or unknown
/// `X-Backend`). Dropped open-loop arrivals are not counted. The callback
/// should be quick; the load runs on another thread meanwhile.
pub fn run_with<F: FnMut(u32, &[u64])>(
    spec: &LoadSpec,
    backends: &[String],
    mut progress: F,
) -> Vec<Record> {
    assert!(!spec.paths.is_empty(), "load: no paths");
    assert!(spec.paths.len() <= 256, "load: more than 256 paths");
    assert!(backends.len() < 255, "load: more than 254 backends");
    assert!(
        !spec.targets.is_empty() && spec.targets.len() <= 255,
        "load: 1 to 255 targets"
    );
    let phases = if spec.phases.is_empty() {
        vec![Phase {
            from: Duration::ZERO,
            paths: (0..spec.paths.len()).collect(),
            rate_factor: 1.0,
        }]
    } else {
        spec.phases.clone()
    };
    for w in phases.windows(2) {
        assert!(w[0].from <= w[1].from, "load: phases out of order");
    }
    for ph in &phases {
        assert!(
            !ph.paths.is_empty() && ph.paths.iter().all(|&p| p < spec.paths.len()),
            "load: a phase needs paths of the spec"
        );
    }
    let total_w: f64 = spec.targets.iter().map(|t| t.1.max(0.0)).sum();
    assert!(total_w > 0.0, "load: target weights must not all be 0");
    let mut acc = 0.0;
    let cum: Vec<f64> = spec
        .targets
        .iter()
        .map(|t| {
            acc += t.1.max(0.0) / total_w;
            acc
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dwepc-load")
        .enable_all()
        .build()
        .expect("load: tokio runtime");
    let cols = backends.len() + 1;
    let rows = (spec.duration + spec.timeout).as_secs() as usize + 3;
    let host = host_header(spec.targets[0].0);
    let start = tokio::time::Instant::now();
    let sh = Arc::new(Shared {
        targets: spec.targets.iter().map(|t| t.0).collect(),
        cum,
        phases,
        reqs: spec
            .paths
            .iter()
            .map(|p| {
                format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: dwepc-lab\r\n\r\n")
                    .into_bytes()
                    .into_boxed_slice()
            })
            .collect(),
        backends: backends.to_vec(),
        timeout: spec.timeout,
        start,
        end: start + spec.duration,
        cols,
        live: (0..rows * cols).map(|_| AtomicU64::new(0)).collect(),
    });
    let pattern = spec.pattern.clone();
    let (seed, max_in_flight) = (spec.seed, spec.max_in_flight);
    let mut records = rt.block_on(async {
        let s2 = sh.clone();
        let end = s2.end;
        let mut work = tokio::spawn(async move {
            let records = match pattern {
                Pattern::Closed {
                    users,
                    think_ms,
                    fixed_think,
                } => closed_loop(s2, seed, users, think_ms, fixed_think).await,
                Pattern::Open { rate } => open_loop(s2, seed, rate, max_in_flight).await,
            };
            // a run lasts at least `duration`, even without requests
            tokio::time::sleep_until(end).await;
            records
        });
        let mut sec = 0usize;
        loop {
            let tick = start + Duration::from_secs(sec as u64 + 1) + TICK_GRACE;
            tokio::select! {
                r = &mut work => {
                    let r = match r {
                        Ok(r) => r,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    };
                    let last = (start.elapsed().as_secs() as usize).min(rows - 1);
                    while sec <= last {
                        progress(sec as u32, &sh.row(sec));
                        sec += 1;
                    }
                    break r;
                }
                _ = tokio::time::sleep_until(tick) => {
                    if sec < rows {
                        progress(sec as u32, &sh.row(sec));
                    }
                    sec += 1;
                }
            }
        }
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    records.sort_by_key(|r| r.t_ms);
    records
}

fn host_header(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

struct Shared {
    targets: Vec<SocketAddr>,
    /// Cumulative target weights (the last is 1).
    cum: Vec<f64>,
    phases: Vec<Phase>,
    /// The whole request of each path.
    reqs: Vec<Box<[u8]>>,
    backends: Vec<String>,
    timeout: Duration,
    start: tokio::time::Instant,
    end: tokio::time::Instant,
    /// Live view: completions per (second, backend or other).
    cols: usize,
    live: Vec<AtomicU64>,
}

impl Shared {
    fn row(&self, sec: usize) -> Vec<u64> {
        self.live[sec * self.cols..(sec + 1) * self.cols]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// A frontend drawn by weight (no draw with a single one).
    fn frontend(&self, rng: &mut Rng) -> usize {
        if self.targets.len() == 1 {
            return 0;
        }
        let u = unit(rng);
        self.cum
            .iter()
            .position(|&c| u < c)
            .unwrap_or(self.targets.len() - 1)
    }

    /// The phase in force `secs` after the start.
    fn phase(&self, secs: f64) -> usize {
        self.phases
            .iter()
            .rposition(|p| p.from.as_secs_f64() <= secs)
            .unwrap_or(0)
    }

    /// A path of phase `k`.
    fn path(&self, k: usize, rng: &mut Rng) -> usize {
        let ps = &self.phases[k].paths;
        ps[rng.below(ps.len() as u64) as usize]
    }

    /// One request on `conn` (opened if `None`, dropped unless reusable).
    async fn request(
        &self,
        conn: &mut Option<Conn>,
        path: usize,
        t0: Instant,
        frontend: usize,
    ) -> Record {
        let mut p = Partial {
            status: STATUS_ERROR,
            backend: NO_BACKEND,
            bytes: 0,
        };
        let r =
            tokio::time::timeout(self.timeout, self.attempt(conn, path, frontend, &mut p)).await;
        match r {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => *conn = None,
            Ok(Err(_)) | Err(_) => {
                *conn = None;
                p.status = STATUS_ERROR;
            }
        }
        let done = Instant::now();
        let sec = done.duration_since(self.start.into_std()).as_secs() as usize;
        let col = if p.status != STATUS_ERROR && (p.backend as usize) < self.backends.len() {
            p.backend as usize
        } else {
            self.cols - 1
        };
        if let Some(c) = self.live.get(sec * self.cols + col) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Record {
            t_ms: self.ms(t0),
            latency_us: done.duration_since(t0).as_micros().min(u32::MAX as u128) as u32,
            status: p.status,
            backend: p.backend,
            path: path as u8,
            bytes: p.bytes.min(u32::MAX as u64) as u32,
            frontend: frontend as u8,
        }
    }

    /// Sends on the kept connection; if that fails before any byte of the
    /// answer (the server closed an idle keep-alive connection), once more
    /// on a fresh one. Ok(keep-alive).
    async fn attempt(
        &self,
        conn: &mut Option<Conn>,
        path: usize,
        frontend: usize,
        p: &mut Partial,
    ) -> io::Result<bool> {
        if let Some(c) = conn.as_mut() {
            match c.exchange(&self.reqs[path], &self.backends, p).await {
                Ok(keep) => return Ok(keep),
                Err(e) if c.got => return Err(e),
                Err(_) => *conn = None,
            }
        }
        let c = conn.insert(Conn::connect(self.targets[frontend]).await?);
        c.exchange(&self.reqs[path], &self.backends, p).await
    }

    fn ms(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.start.into_std())
            .as_millis()
            .min(u32::MAX as u128) as u32
    }
}

struct Partial {
    status: u16,
    backend: u8,
    bytes: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Uniform in [0, 1).
fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Exponential with mean 1.
fn exp1(rng: &mut Rng) -> f64 {
    -(1.0 - unit(rng)).ln()
}

async fn closed_loop(
    sh: Arc<Shared>,
    seed: u64,
    users: usize,
    think_ms: u64,
    fixed: bool,
) -> Vec<Record> {
    let handles: Vec<_> = (0..users)
        .map(|i| {
            let sh = sh.clone();
            let rng = Rng::new(splitmix(seed ^ splitmix(i as u64 + 1)));
            tokio::spawn(user(sh, rng, think_ms, fixed))
        })
        .collect();
    let mut out = Vec::new();
    for h in handles {
        match h.await {
            Ok(r) => out.extend(r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

async fn user(sh: Arc<Shared>, mut rng: Rng, think_ms: u64, fixed: bool) -> Vec<Record> {
    let think = think_ms as f64 / 1000.0;
    let first = sh.start + Duration::from_secs_f64(unit(&mut rng) * think);
    tokio::time::sleep_until(first).await;
    let frontend = sh.frontend(&mut rng);
    let mut conn = None;
    let mut out = Vec::new();
    loop {
        let t0 = Instant::now();
        if t0 >= sh.end.into_std() {
            break;
        }
        let k = sh.phase(t0.duration_since(sh.start.into_std()).as_secs_f64());
        let path = sh.path(k, &mut rng);
        let rec = sh.request(&mut conn, path, t0, frontend).await;
        out.push(rec);
        let mut pause = Duration::from_secs_f64(if fixed { think } else { exp1(&mut rng) * think });
        if rec.status == STATUS_ERROR {
            pause = pause.max(ERROR_PAUSE);
        }
        let wake = tokio::time::Instant::now() + pause;
        if wake >= sh.end {
            break;
        }
        if !pause.is_zero() {
            tokio::time::sleep_until(wake).await;
        }
    }
    out
}

async fn open_loop(sh: Arc<Shared>, seed: u64, rate: f64, max_in_flight: usize) -> Vec<Record> {
    const UNLIMITED: usize = 1 << 20;
    let limit = if max_in_flight == 0 {
        UNLIMITED
    } else {
        max_in_flight.min(UNLIMITED)
    };
    let sem = Arc::new(Semaphore::new(limit));
    let pools: Arc<Vec<Mutex<Vec<Conn>>>> = Arc::new(
        (0..sh.targets.len())
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    );
    let done: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let mut dropped = Vec::new();
    let mut rng = Rng::new(splitmix(seed));
    let total = sh.end.duration_since(sh.start).as_secs_f64();
    let mut at = 0.0f64;
    let mut k = 0usize;
    if rate > 0.0 && rate.is_finite() {
        loop {
            // Poisson arrivals at a piecewise constant rate: memoryless, so
            // a draw that crosses a phase boundary restarts there
            let next = sh
                .phases
                .get(k + 1)
                .map_or(f64::INFINITY, |p| p.from.as_secs_f64());
            let r = rate * sh.phases[k].rate_factor;
            let cand = if r > 0.0 && r.is_finite() {
                at + exp1(&mut rng) / r
            } else {
                f64::INFINITY
            };
            if cand >= next {
                at = next;
                k += 1;
                if at >= total {
                    break;
                }
                continue;
            }
            at = cand;
            if at >= total {
                break;
            }
            let path = sh.path(k, &mut rng);
            let frontend = sh.frontend(&mut rng);
            let when = sh.start + Duration::from_secs_f64(at);
            if when > tokio::time::Instant::now() {
                tokio::time::sleep_until(when).await;
            }
            let t0 = Instant::now();
            let Ok(permit) = sem.clone().try_acquire_owned() else {
                dropped.push(Record {
                    t_ms: sh.ms(t0),
                    latency_us: 0,
                    status: STATUS_DROPPED,
                    backend: NO_BACKEND,
                    path: path as u8,
                    bytes: 0,
                    frontend: frontend as u8,
                });
                continue;
            };
            let (sh, pools, done) = (sh.clone(), pools.clone(), done.clone());
            tokio::spawn(async move {
                let mut conn = pools[frontend].lock().unwrap().pop();
                let rec = sh.request(&mut conn, path, t0, frontend).await;
                if let Some(c) = conn {
                    pools[frontend].lock().unwrap().push(c);
                }
                done.lock().unwrap().push(rec);
                drop(permit);
            });
        }
    }
    // every request holds a permit until its record is in `done`
    let _all = sem.acquire_many(limit as u32).await;
    let mut out = std::mem::take(&mut *done.lock().unwrap());
    out.extend(dropped);
    out
}

/// A client connection with its read buffer.
struct Conn {
    s: TcpStream,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    /// Some byte of the current answer arrived.
    got: bool,
}

/// What the response head says.
struct Head {
    status: u16,
    http10: bool,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    backend: u8,
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn parse_head(h: &[u8], backends: &[String]) -> io::Result<Head> {
    let mut lines = h.split(|&b| b == b'\n').map(trim);
    let sl = lines.next().unwrap_or_default();
    if sl.len() < 12 || !sl.starts_with(b"HTTP/1.") || sl[8] != b' ' {
        return Err(bad("bad status line"));
    }
    let digits = &sl[9..12];
    if !digits.iter().all(u8::is_ascii_digit) || sl.get(12).is_some_and(|&b| b != b' ') {
        return Err(bad("bad status code"));
    }
    let mut head = Head {
        status: digits.iter().fold(0u16, |a, &d| a * 10 + (d - b'0') as u16),
        http10: sl[7] == b'0',
        length: None,
        chunked: false,
        close: false,
        keep_alive: false,
        backend: NO_BACKEND,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad("bad content-length"))?;
            head.length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.split(|&b| b == b',').next_back().map(trim);
            head.chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',').map(trim) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"x-backend") {
            head.backend = backends
                .iter()
                .position(|b| b.as_bytes() == value)
                .map_or(NO_BACKEND, |i| i as u8);
        }
    }
    Ok(head)
}

impl Conn {
    async fn connect(a: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(a).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: vec![0u8; BUF].into_boxed_slice(),
            lo: 0,
            hi: 0,
            got: false,
        })
    }

    /// Reads more; Ok(0) at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = 0;
        } else if self.hi == self.buf.len() {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == self.buf.len() {
            return Err(bad("line or head too long"));
        }
        let n = self.s.read(&mut self.buf[self.hi..]).await?;
        self.hi += n;
        if n > 0 {
            self.got = true;
        }
        Ok(n)
    }

    async fn fill_some(&mut self) -> io::Result<()> {
        match self.fill().await? {
            0 => Err(eof()),
            _ => Ok(()),
        }
    }

    /// One request and its whole answer; Ok(the connection can be reused).
    async fn exchange(
        &mut self,
        req: &[u8],
        backends: &[String],
        p: &mut Partial,
    ) -> io::Result<bool> {
        self.got = false;
        if self.lo != self.hi {
            return Err(bad("unsolicited data"));
        }
        self.s.write_all(req).await?;
        let head = loop {
            let len = loop {
                if let Some(i) = find(&self.buf[self.lo..self.hi], b"\r\n\r\n") {
                    break i + 4;
                }
                self.fill_some().await?;
            };
            let head = parse_head(&self.buf[self.lo..self.lo + len], backends)?;
            self.lo += len;
            // interim answers (100 Continue, 103 Early Hints)
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            break head;
        };
        p.status = head.status;
        p.backend = head.backend;
        let mut keep = !head.close && (!head.http10 || head.keep_alive);
        if head.status == 204 || head.status == 304 || head.status == 101 {
            keep &= head.status != 101;
        } else if head.chunked {
            self.chunked_body(p).await?;
        } else if let Some(n) = head.length {
            self.skip(n, p).await?;
        } else {
            // delimited by the end of the connection
            loop {
                p.bytes += (self.hi - self.lo) as u64;
                self.lo = self.hi;
                if self.fill().await? == 0 {
                    break;
                }
            }
            keep = false;
        }
        Ok(keep && self.lo == self.hi)
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64, p: &mut Partial) -> io::Result<()> {
        loop {
            let k = ((self.hi - self.lo) as u64).min(n);
            self.lo += k as usize;
            p.bytes += k;
            n -= k;
            if n == 0 {
                return Ok(());
            }
            self.fill_some().await?;
        }
    }

    /// Length of the next line at `lo` (without its CRLF, not consumed).
    async fn line(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = find(&self.buf[self.lo..self.hi], b"\r\n") {
                return Ok(i);
            }
            self.fill_some().await?;
        }
    }

    async fn chunked_body(&mut self, p: &mut Partial) -> io::Result<()> {
        loop {
            let len = self.line().await?;
            let l = &self.buf[self.lo..self.lo + len];
            let hex = trim(l.split(|&b| b == b';').next().unwrap_or_default());
            if hex.is_empty() || hex.len() > 15 {
                return Err(bad("bad chunk size"));
            }
            let mut size = 0u64;
            for &d in hex {
                let v = (d as char)
                    .to_digit(16)
                    .ok_or_else(|| bad("bad chunk size"))?;
                size = size * 16 + v as u64;
            }
            self.lo += len + 2;
            if size == 0 {
                // trailer fields up to an empty line
                loop {
                    let len = self.line().await?;
                    self.lo += len + 2;
                    if len == 0 {
                        return Ok(());
                    }
                }
            }
            self.skip(size, p).await?;
            if self.line().await? != 0 {
                return Err(bad("no CRLF after chunk"));
            }
            self.lo += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn head() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Backend:  b \r\nConnection: keep-alive, Close\r\n\r\n",
            &names(),
        )
        .unwrap();
        assert_eq!(
            (h.status, h.length, h.chunked, h.close, h.backend, h.http10),
            (200, Some(12), false, true, 1, false)
        );
        let h = parse_head(
            b"HTTP/1.0 404 Not Found\r\ntransfer-encoding: gzip, chunked\r\nx-backend: c\r\n\r\n",
            &names(),
        )
        .unwrap();
        assert_eq!(
            (h.status, h.length, h.chunked, h.close, h.backend, h.http10),
            (404, None, true, false, NO_BACKEND, true)
        );
        let h = parse_head(b"HTTP/1.1 502\r\n\r\n", &names()).unwrap();
        assert_eq!(h.status, 502);
        assert!(parse_head(b"HTTP/1.1 20 OK\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"SSH-2.0-x\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &names()).is_err());
    }

    #[test]
    fn random_helpers() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let (mut s, mut lo, mut hi) = (0.0, 1.0f64, 0.0f64);
        for _ in 0..n {
            let u = unit(&mut r);
            lo = lo.min(u);
            hi = hi.max(u);
            s += exp1(&mut r);
        }
        assert!(lo >= 0.0 && hi < 1.0 && lo < 0.001 && hi > 0.999);
        assert!(
            (s / n as f64 - 1.0).abs() < 0.01,
            "exp mean {}",
            s / n as f64
        );
    }
}
