//! What to advise: the plan and the order of its migrations, or why
//! nothing is to do (fewer than two usable hosts, already balanced, no
//! plan that lowers the peak).

use crate::plan::{current, lower_bound, plan, Placement, Plan, Problem};
use serde::Serialize;
use std::time::Duration;

/// The outcome of a run, as the JSON report names it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Migrations that lower the peak.
    Plan,
    /// The busiest host is within the tolerance of the mean, or at the
    /// lower bound.
    Balanced,
    /// No plan within the budget and the constraints lowers the peak
    /// (proven, or none found within the time limit).
    NoBetterPlan,
    /// Fewer than two hosts can give and take VMs.
    OneHost,
}

/// The plan advised, with the placement it starts from.
pub struct Advice {
    pub now: Placement,
    /// The plan; with no migration, where the VMs run now.
    pub plan: Plan,
    /// Largest and mean host load now, and the cluster's lower bound of
    /// the peak (max(total / hosts, largest VM)).
    pub peak: f64,
    pub mean: f64,
    pub lower_bound: f64,
    pub outcome: Outcome,
}

/// The advice for `p`: nothing where the busiest host is within
/// `tolerance` of the mean (or at the lower bound), else the plan (searched
/// for at most `limit`) if it lowers the peak.
pub fn advise(p: &Problem, tolerance: f64, limit: Duration) -> Advice {
    let now = current(p);
    let bound = lower_bound(p);
    let (peak, mean) = (now.max_load(p), now.mean_load(p));
    let usable = p.hosts.iter().filter(|h| !h.excluded).count();
    let balanced = usable < 2 || peak <= mean * (1.0 + tolerance) || peak <= bound * (1.0 + 1e-9);
    // no migration: proven only at the lower bound (within the tolerance
    // nothing was searched)
    let at_bound = peak <= bound * (1.0 + 1e-9);
    let stay = |proven, bound| Plan {
        placement: now.clone(),
        moves: Vec::new(),
        proven,
        bound,
    };
    let found = if balanced {
        stay(at_bound, bound)
    } else {
        plan(p, limit)
    };
    let improves = found.placement.max_load(p) < peak * (1.0 - 1e-9);
    let outcome = if usable < 2 {
        Outcome::OneHost
    } else if balanced {
        Outcome::Balanced
    } else if !improves {
        Outcome::NoBetterPlan
    } else {
        Outcome::Plan
    };
    // a plan that does not lower the peak is not made: what is known of
    // the best one stays
    let plan = if balanced || improves {
        found
    } else {
        stay(found.proven, found.bound)
    };
    Advice {
        now,
        plan,
        peak,
        mean,
        lower_bound: bound,
        outcome,
    }
}
