//! How requests arrive: closed-loop virtual users with think time, or
//! open-loop Poisson arrivals at a piecewise constant rate.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dwepc_core::rng::Rng;
use tokio::sync::Semaphore;

use super::conn::Conn;
use super::random::{exp1, splitmix, unit};
use super::shared::Shared;
use super::spec::Record;
use super::{NO_BACKEND, STATUS_DROPPED, STATUS_ERROR};

/// Minimum pause of a closed-loop user after a failed request (so that a
/// refused connection with zero think time does not spin).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Closed loop: `users` virtual users, each with its own seeded draws.
pub(super) async fn closed_loop(
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

/// One virtual user: request, answer, think, until the end of the run.
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

/// Keep-alive connections to each frontend, idle between requests.
type Pools = Arc<Vec<Mutex<Vec<Conn>>>>;

/// Open loop: Poisson arrivals at `rate` requests/s (times each phase's
/// factor), each request a task of its own; arrivals while `max_in_flight`
/// requests are in flight are recorded as dropped.
pub(super) async fn open_loop(
    sh: Arc<Shared>,
    seed: u64,
    rate: f64,
    max_in_flight: usize,
) -> Vec<Record> {
    const UNLIMITED: usize = 1 << 20;
    let limit = if max_in_flight == 0 {
        UNLIMITED
    } else {
        max_in_flight.min(UNLIMITED)
    };
    let sem = Arc::new(Semaphore::new(limit));
    let pools: Pools = Arc::new(
        (0..sh.targets.len())
            .map(|_| Mutex::new(Vec::new()))
            .collect(),
    );
    let done: Arc<Mutex<Vec<Record>>> = Arc::new(Mutex::new(Vec::new()));
    let mut dropped = Vec::new();
    let mut rng = Rng::new(splitmix(seed));
    let mut arrivals = Arrivals {
        rate,
        total: sh.end.duration_since(sh.start).as_secs_f64(),
        at: 0.0,
        k: 0,
    };
    if rate > 0.0 && rate.is_finite() {
        while let Some((at, k)) = arrivals.next(&sh, &mut rng) {
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
                let rec = pooled_request(&sh, &pools, path, t0, frontend).await;
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

/// One request on an idle connection of the frontend's pool (or a new
/// one), the connection back in the pool if it can be reused.
async fn pooled_request(
    sh: &Shared,
    pools: &Pools,
    path: usize,
    t0: Instant,
    frontend: usize,
) -> Record {
    let mut conn = pools[frontend].lock().unwrap().pop();
    let rec = sh.request(&mut conn, path, t0, frontend).await;
    if let Some(c) = conn {
        pools[frontend].lock().unwrap().push(c);
    }
    rec
}

/// The open loop's arrival times: Poisson at a piecewise constant rate
/// (the loop's rate times each phase's factor), up to `total` seconds.
struct Arrivals {
    rate: f64,
    total: f64,
    /// The last arrival (or phase boundary), seconds after the start.
    at: f64,
    /// The phase in force at `at`.
    k: usize,
}

impl Arrivals {
    /// The next arrival: (seconds after the start, phase); `None` after
    /// the end of the run.
    fn next(&mut self, sh: &Shared, rng: &mut Rng) -> Option<(f64, usize)> {
        loop {
            // memoryless, so a draw that crosses a phase boundary restarts
            // there
            let next = sh
                .phases
                .get(self.k + 1)
                .map_or(f64::INFINITY, |p| p.from.as_secs_f64());
            let r = self.rate * sh.phases[self.k].rate_factor;
            let cand = if r > 0.0 && r.is_finite() {
                self.at + exp1(rng) / r
            } else {
                f64::INFINITY
            };
            if cand >= next {
                self.at = next;
                self.k += 1;
                if self.at >= self.total {
                    return None;
                }
                continue;
            }
            self.at = cand;
            if self.at >= self.total {
                return None;
            }
            return Some((self.at, self.k));
        }
    }
}
