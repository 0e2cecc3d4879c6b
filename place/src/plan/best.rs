//! The advisor's plan ([`plan()`]): the local search's plans cut to what
//! runs one migration at a time, then, with a budget, the exact search
//! from there; the migrations in the order they run, and what is known of
//! how good the plan is (proven optimal, or its gap to a bound).

use super::exact::{after, best_within, bound_within, finish, peak_after, Steps, TOL};
use super::model::{evaluate, lower_bound, Placement, Problem};
use super::order::{ordered_moves, Move};
use super::search::local_search;
use std::time::{Duration, Instant};

/// A plan: its migrations in the order they run (each keeps every
/// constraint on its own; a VM may appear twice when it makes room on its
/// way), the placement they end at, and how good it is known to be.
#[derive(Clone, Debug)]
pub struct Plan {
    pub placement: Placement,
    pub moves: Vec<Move>,
    /// No sequence of at most `max_moves` migrations, each keeping the
    /// constraints, has a lower peak, nor the same peak with fewer
    /// migrations (with no budget: the peak is at the cluster's lower
    /// bound).
    pub proven: bool,
    /// A lower bound on the peak of any plan within the budget (once the
    /// peak is proven lowest: the plan's own peak; with no budget: the
    /// cluster's lower bound).
    pub bound: f64,
}

impl Plan {
    /// How far the plan's peak can be above the best possible, as a
    /// fraction of the bound (0 when proven).
    pub fn gap(&self, p: &Problem) -> f64 {
        if self.proven || self.bound <= 0.0 {
            return 0.0;
        }
        (self.placement.max_load(p) / self.bound - 1.0).max(0.0)
    }
}

/// The budget the plan with no budget is never worse than: the command's
/// default `--max-moves` (a test of `cli` holds them equal).
pub const DEFAULT_BUDGET: usize = 3;

/// Migrations a plan with no budget may add to finish what cannot run one
/// at a time.
const FINISH_EXTRA: usize = 3;

/// The plan for `p`: with a budget, the best within it found by `limit`
/// (proven if the search ended); with none, the best of the local
/// search's plans (finished through other hosts where their last
/// migrations cannot run one at a time) and the plan within the default
/// budget. `limit` bounds the exact searches; the local searches before
/// them take milliseconds (BENCHMARKS.md, placement).
pub fn plan(p: &Problem, limit: Duration) -> Plan {
    let deadline = Instant::now() + limit;
    let (steps, proven, bound) = match p.max_moves {
        Some(k) => {
            let e = best_within(p, k, runnable_start(p, deadline), deadline);
            let bound = if e.peak_proven {
                peak_after(p, &e.steps)
            } else {
                bound_within(p, k)
            };
            (e.steps, e.proven, bound)
        }
        None => {
            let local = runnable_start(p, deadline);
            let within = Problem {
                max_moves: Some(DEFAULT_BUDGET),
                ..p.clone()
            };
            let start = runnable_start(&within, deadline);
            let budgeted = best_within(p, DEFAULT_BUDGET, start, deadline);
            let steps = better(p, local, budgeted.steps);
            let lb = lower_bound(p);
            let proven = peak_after(p, &steps) <= lb * (1.0 + TOL);
            (steps, proven, lb)
        }
    };
    let (placement, moves) = replay(p, &steps);
    Plan {
        placement,
        moves,
        proven,
        bound,
    }
}

/// The local search's plans, with and without swaps, each as migrations
/// that run one at a time: its migrations in an order that keeps the
/// constraints, and where some cannot run so (a swap between full hosts),
/// with no budget, a few more migrations that reach its peak through other
/// hosts (else it is cut to those that run); the better.
fn runnable_start(p: &Problem, deadline: Instant) -> Steps {
    let runnable = |swaps: bool| {
        let target = local_search(p, swaps);
        let (moves, stuck) = ordered_moves(p, &target);
        let steps: Steps = moves.iter().map(|m| (m.vm, m.to)).collect();
        if stuck.is_empty() || p.max_moves.is_some() {
            return steps;
        }
        let extra = stuck.len() + FINISH_EXTRA;
        finish(p, steps.clone(), target.max_load(p), extra, deadline).unwrap_or(steps)
    };
    better(p, runnable(true), runnable(false))
}

/// The better of two sequences: the lower peak, then fewer migrations.
fn better(p: &Problem, a: Steps, b: Steps) -> Steps {
    let (pa, pb) = (peak_after(p, &a), peak_after(p, &b));
    let tol = TOL * pa.max(pb);
    if pb < pa - tol || (pb <= pa + tol && b.len() < a.len()) {
        b
    } else {
        a
    }
}

/// The placement `steps` end at and each migration with the peak it
/// leaves.
fn replay(p: &Problem, steps: &Steps) -> (Placement, Vec<Move>) {
    let mut host = p.homes();
    let moves = steps
        .iter()
        .map(|&(v, to)| {
            let from = host[v];
            host[v] = to;
            Move {
                vm: v,
                from,
                to,
                peak_after: evaluate(p, &host).max_load(p),
            }
        })
        .collect();
    debug_assert_eq!(host, after(p, steps));
    (evaluate(p, &host), moves)
}
