//! The scan's cost as a ratio to nginx's least_conn, measured in pairs:
//! the two picks run in alternating blocks of the same number of picks
//! (each pair of blocks in turned order), and the ratio of each pair's
//! times is kept. The median of those ratios, with its quartiles, is what
//! the machine's drift cannot move: a slow minute slows both blocks of a
//! pair. (criterion times one benchmark after another, so its ratios move
//! with whatever the machine did in between: 20–40 % on this one.)
//!
//!     cargo bench -p dwepc-core --bench pick_ratio [-- --rounds N]
//!
//! The picks are those of the `pick` benchmark (the same code, from
//! `common`): `dwepc` the shares mode with `pick=least_conn`, `least_conn`
//! nginx's loop on per-worker counts (an upstream without `zone`),
//! `least_conn_shared` that loop on counts shared across workers as
//! dwepc's are, `_zone` both inside the locks of an upstream with a
//! `zone`. Every pick is followed by one request's end on the next peer.

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::module::*;
use common::nginx::*;
use dwepc_core::zone::UpstreamZone;

/// Something timed in blocks of picks.
trait Picks {
    /// Runs `k` picks, returning how long they took.
    fn block(&mut self, k: u64) -> Duration;
}

/// A pick as a closure, timed in blocks (the closure is inlined into the
/// block's loop; one dynamic call per block).
struct Timed<F>(F);

impl<F: FnMut() -> usize> Picks for Timed<F> {
    fn block(&mut self, k: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..k {
            black_box((self.0)());
        }
        t.elapsed()
    }
}

/// One pair's result, sorted: the ratios of `a`'s time to `b`'s, and each
/// one's time per pick.
struct Paired {
    ratios: Vec<f64>,
    a_ns: Vec<f64>,
    b_ns: Vec<f64>,
}

/// Picks per block: about `target` of `a`'s time.
fn calibrate(a: &mut dyn Picks, target: Duration) -> u64 {
    let mut k = 64u64;
    loop {
        let t = a.block(k);
        if t >= target / 4 || k >= 1 << 30 {
            let per = t.as_secs_f64() / k as f64;
            return ((target.as_secs_f64() / per) as u64).max(16);
        }
        k *= 2;
    }
}

/// `rounds` pairs of blocks of `a` and `b` after a warm-up, turning the
/// order each round.
fn paired(a: &mut dyn Picks, b: &mut dyn Picks, rounds: usize) -> Paired {
    let k = calibrate(a, Duration::from_micros(200));
    for _ in 0..rounds / 10 + 1 {
        a.block(k);
        b.block(k);
    }
    let mut out = Paired {
        ratios: Vec::with_capacity(rounds),
        a_ns: Vec::with_capacity(rounds),
        b_ns: Vec::with_capacity(rounds),
    };
    let per = |t: Duration| t.as_secs_f64() * 1e9 / k as f64;
    for r in 0..rounds {
        let (ta, tb) = if r % 2 == 0 {
            let ta = a.block(k);
            (ta, b.block(k))
        } else {
            let tb = b.block(k);
            (a.block(k), tb)
        };
        out.ratios.push(ta.as_secs_f64() / tb.as_secs_f64());
        out.a_ns.push(per(ta));
        out.b_ns.push(per(tb));
    }
    for v in [&mut out.ratios, &mut out.a_ns, &mut out.b_ns] {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// The `q` quantile of sorted `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// The rounds asked for with `--rounds N` (default 2001).
fn rounds() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .filter(|&r: &usize| r > 0)
        .unwrap_or(2001)
}

/// Prints one pair's line of the table.
fn report(n: usize, name: &str, a: &mut dyn Picks, b: &mut dyn Picks, rounds: usize) {
    let p = paired(a, b, rounds);
    println!(
        "| {n} | {name} | {:.2} | {:.2}–{:.2} | {:.1} | {:.1} |",
        quantile(&p.ratios, 0.5),
        quantile(&p.ratios, 0.25),
        quantile(&p.ratios, 0.75),
        quantile(&p.a_ns, 0.5),
        quantile(&p.b_ns, 0.5),
    );
}

fn main() {
    let rounds = rounds();
    println!("{rounds} pairs of blocks of 200 µs or so for each line");
    println!("| peers | a / b | median ratio | quartiles | a, ns per pick | b, ns per pick |");
    println!("|---|---|---|---|---|---|");
    for n in [4usize, 32, 256] {
        // the module's pick, without and with the zone's locks (a zone each)
        let (words, zwords) = (shares_zone_words(n), shares_zone_words(n));
        let mut shares = SharesPick::new(UpstreamZone::new(&words, n).unwrap());
        let mut dwepc = Timed(|| shares.step());
        let mut zshares = SharesPick::new(UpstreamZone::new(&zwords, n).unwrap());
        let dlocks = ZoneLocks::new(n);
        let mut dwepc_zone = Timed(|| zshares.step_in(&dlocks));
        // nginx's least_conn: per worker, on shared counts, with a zone
        let mut lc = LeastConn::new(n);
        let mut least_conn = Timed(|| lc.step());
        let mut shared = SharedLeastConn::new(n);
        let mut least_conn_shared = Timed(|| shared.step());
        let (mut zlc, locks) = (LeastConn::new(n), ZoneLocks::new(n));
        let mut least_conn_zone = Timed(|| zlc.step_in(&locks));

        report(n, "dwepc / least_conn", &mut dwepc, &mut least_conn, rounds);
        report(
            n,
            "dwepc_zone / least_conn_zone",
            &mut dwepc_zone,
            &mut least_conn_zone,
            rounds,
        );
        // the floor of counts exact across workers, and dwepc over it
        report(
            n,
            "least_conn_shared / least_conn",
            &mut least_conn_shared,
            &mut least_conn,
            rounds,
        );
        report(
            n,
            "dwepc / least_conn_shared",
            &mut dwepc,
            &mut least_conn_shared,
            rounds,
        );
    }
}
