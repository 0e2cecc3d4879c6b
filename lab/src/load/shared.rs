//! What every task of a run shares (targets, requests, clock, live view),
//! and one request from start to record.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dwepc_core::rng::Rng;

use super::conn::Conn;
use super::random::unit;
use super::spec::{LoadSpec, Phase, Record};
use super::{NO_BACKEND, STATUS_ERROR};

fn host_header(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

/// What every task of a run shares.
pub(super) struct Shared {
    pub(super) targets: Vec<SocketAddr>,
    /// Cumulative target weights (the last is 1).
    cum: Vec<f64>,
    pub(super) phases: Vec<Phase>,
    /// The whole request of each path.
    reqs: Vec<Box<[u8]>>,
    backends: Vec<String>,
    timeout: Duration,
    pub(super) start: tokio::time::Instant,
    pub(super) end: tokio::time::Instant,
    /// Live view: completions per (second, backend or other).
    cols: usize,
    live: Vec<AtomicU64>,
}

impl Shared {
    /// The shared state of a run of `spec` starting at `start`, with a
    /// live view of `rows` seconds.
    pub(super) fn new(
        spec: &LoadSpec,
        backends: &[String],
        phases: Vec<Phase>,
        cum: Vec<f64>,
        start: tokio::time::Instant,
        rows: usize,
    ) -> Shared {
        let cols = backends.len() + 1;
        let host = host_header(spec.targets[0].0);
        Shared {
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
        }
    }

    pub(super) fn row(&self, sec: usize) -> Vec<u64> {
        self.live[sec * self.cols..(sec + 1) * self.cols]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// A frontend drawn by weight (no draw with a single one).
    pub(super) fn frontend(&self, rng: &mut Rng) -> usize {
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
    pub(super) fn phase(&self, secs: f64) -> usize {
        self.phases
            .iter()
            .rposition(|p| p.from.as_secs_f64() <= secs)
            .unwrap_or(0)
    }

    /// A path of phase `k`.
    pub(super) fn path(&self, k: usize, rng: &mut Rng) -> usize {
        let ps = &self.phases[k].paths;
        ps[rng.below(ps.len() as u64) as usize]
    }

    /// One request on `conn` (opened if `None`, dropped unless reusable).
    pub(super) async fn request(
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

    pub(super) fn ms(&self, t: Instant) -> u32 {
        t.saturating_duration_since(self.start.into_std())
            .as_millis()
            .min(u32::MAX as u128) as u32
    }
}

/// What is known of an answer so far (kept when it fails half-way).
pub(super) struct Partial {
    pub(super) status: u16,
    pub(super) backend: u8,
    pub(super) bytes: u64,
}
