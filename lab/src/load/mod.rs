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

mod arrivals;
mod conn;
mod random;
mod shared;
mod spec;

use std::sync::Arc;
use std::time::Duration;

use arrivals::{closed_loop, open_loop};
use shared::Shared;
pub use spec::{read_records, write_records, LoadSpec, Pattern, Phase, Record};

/// `Record::status` of a connection error, protocol error or timeout.
pub const STATUS_ERROR: u16 = 0;
/// `Record::status` of an open-loop arrival dropped over `max_in_flight`.
pub const STATUS_DROPPED: u16 = 1;
/// `Record::backend` when the response had no (known) `X-Backend` header.
pub const NO_BACKEND: u8 = 255;

/// The live view reads second `s` this long after it ends.
const TICK_GRACE: Duration = Duration::from_millis(20);

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
    let phases = checked_phases(spec, backends);
    let cum = cumulative_weights(spec);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("dwepc-load")
        .enable_all()
        .build()
        .expect("load: tokio runtime");
    let rows = (spec.duration + spec.timeout).as_secs() as usize + 3;
    let start = tokio::time::Instant::now();
    let sh = Arc::new(Shared::new(spec, backends, phases, cum, start, rows));
    let mut records = rt.block_on(drive(sh, spec, rows, &mut progress));
    rt.shutdown_timeout(Duration::from_millis(100));
    records.sort_by_key(|r| r.t_ms);
    records
}

/// Checks the spec (panicking as [`run`] says) and returns its phases: one
/// with every path at the full rate when it has none.
fn checked_phases(spec: &LoadSpec, backends: &[String]) -> Vec<Phase> {
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
    phases
}

/// The targets' cumulative weights, normalised (the last is 1).
fn cumulative_weights(spec: &LoadSpec) -> Vec<f64> {
    let total_w: f64 = spec.targets.iter().map(|t| t.1.max(0.0)).sum();
    assert!(total_w > 0.0, "load: target weights must not all be 0");
    let mut acc = 0.0;
    spec.targets
        .iter()
        .map(|t| {
            acc += t.1.max(0.0) / total_w;
            acc
        })
        .collect()
}

/// Runs the load on the runtime's worker and, meanwhile, the live view on
/// the calling thread: `progress` for each of the `rows` seconds.
async fn drive<F: FnMut(u32, &[u64])>(
    sh: Arc<Shared>,
    spec: &LoadSpec,
    rows: usize,
    progress: &mut F,
) -> Vec<Record> {
    let start = sh.start;
    let mut work = tokio::spawn(generate(
        sh.clone(),
        spec.pattern.clone(),
        spec.seed,
        spec.max_in_flight,
    ));
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
}

/// Every request of the run, by its pattern; lasts at least `duration`.
async fn generate(
    sh: Arc<Shared>,
    pattern: Pattern,
    seed: u64,
    max_in_flight: usize,
) -> Vec<Record> {
    let end = sh.end;
    let records = match pattern {
        Pattern::Closed {
            users,
            think_ms,
            fixed_think,
        } => closed_loop(sh, seed, users, think_ms, fixed_think).await,
        Pattern::Open { rate } => open_loop(sh, seed, rate, max_in_flight).await,
    };
    // a run lasts at least `duration`, even without requests
    tokio::time::sleep_until(end).await;
    records
}
