//! What to advise: the plan and the order of its migrations, or why
//! nothing is to do (fewer than two usable hosts, already balanced, no
//! plan that lowers the peak).

use crate::plan::{current, lower_bound, ordered_moves, plan, plan_with, Move, Placement, Problem};
use serde::Serialize;

/// The outcome of a run, as the JSON report names it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Migrations that lower the peak.
    Plan,
    /// The busiest host is within the tolerance of the mean, or at the
    /// lower bound.
    Balanced,
    /// No plan within the budget and the constraints lowers the peak.
    NoBetterPlan,
    /// Fewer than two hosts can give and take VMs.
    OneHost,
}

/// The plan advised, with the placement it starts from.
pub struct Advice {
    pub now: Placement,
    pub plan: Placement,
    /// The plan's migrations in an order that can be carried out.
    pub moves: Vec<Move>,
    /// VMs whose moves cannot be made one at a time.
    pub together: Vec<usize>,
    /// Largest and mean host load now, and the lower bound of the peak.
    pub peak: f64,
    pub mean: f64,
    pub bound: f64,
    pub outcome: Outcome,
}

/// The advice for `p`: nothing where the busiest host is within
/// `tolerance` of the mean (or at the lower bound), else the plan if it
/// lowers the peak.
pub fn advise(p: &Problem, tolerance: f64) -> Advice {
    let now = current(p);
    let bound = lower_bound(p);
    let (peak, mean) = (now.max_load(p), now.mean_load(p));
    let usable = p.hosts.iter().filter(|h| !h.excluded).count();
    let balanced = usable < 2 || peak <= mean * (1.0 + tolerance) || peak <= bound * (1.0 + 1e-9);
    let planned = if balanced { now.clone() } else { plan(p) };
    let improves = planned.max_load(p) < peak * (1.0 - 1e-9);
    let planned = if improves { planned } else { now.clone() };
    let (plan, moves, together) = one_at_a_time(p, planned, peak);
    let outcome = if usable < 2 {
        Outcome::OneHost
    } else if balanced {
        Outcome::Balanced
    } else if !improves {
        Outcome::NoBetterPlan
    } else {
        Outcome::Plan
    };
    Advice {
        now,
        plan,
        moves,
        together,
        peak,
        mean,
        bound,
        outcome,
    }
}

/// `plan` with its migrations in order and those that cannot be made one
/// at a time; where there are such (a swap between full hosts), a plan of
/// single moves instead, if it still lowers `peak`.
fn one_at_a_time(p: &Problem, plan: Placement, peak: f64) -> (Placement, Vec<Move>, Vec<usize>) {
    let (moves, together) = ordered_moves(p, &plan);
    if together.is_empty() {
        return (plan, moves, together);
    }
    let single = plan_with(p, false);
    let (m, t) = ordered_moves(p, &single);
    if t.is_empty() && single.max_load(p) < peak * (1.0 - 1e-9) {
        (single, m, t)
    } else {
        (plan, moves, together)
    }
}
