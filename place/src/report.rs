//! The report of a run: the hosts' loads before and after, the plan's
//! migrations in order, or why nothing is to do; printed as text or, with
//! `--json`, as JSON.

use crate::advice::{Advice, Outcome};
use crate::cli::{Args, Settings};
use crate::plan::{vm_load, Placement, Problem};
use serde::Serialize;

/// The plan as printed with --json.
#[derive(Serialize)]
pub struct Report<'a> {
    balance: String,
    unit: &'a str,
    stat: &'a str,
    since: &'a str,
    interval_s: i32,
    max_moves: Option<usize>,
    time_limit_s: f64,
    peak_before: f64,
    peak_after: f64,
    mean: f64,
    lower_bound: f64,
    /// "plan", or why nothing is to do: "balanced", "no_better_plan",
    /// "one_host".
    outcome: Outcome,
    /// No plan within the budget has a lower peak, nor the same peak with
    /// fewer migrations (with no budget: the peak is at the lower bound).
    proven: bool,
    /// A lower bound on the peak of any plan within the budget, and how
    /// far above it the plan's peak is, as a fraction (0 when proven).
    bound_within_budget: f64,
    gap: f64,
    hosts: Vec<HostRow<'a>>,
    /// The migrations in the order they run; each keeps every constraint
    /// on its own.
    moves: Vec<MoveRow<'a>>,
}

#[derive(Serialize)]
struct HostRow<'a> {
    name: &'a str,
    excluded: bool,
    vms_before: usize,
    vms_after: usize,
    load_before: f64,
    load_after: f64,
}

#[derive(Serialize)]
struct MoveRow<'a> {
    vm: &'a str,
    from: &'a str,
    to: &'a str,
    load: f64,
    peak_after: f64,
}

/// The unit of the loads: raw KB/s only for network or disk alone,
/// weight 1, no capacity; anything divided by a capacity is a
/// utilisation.
fn unit(a: &Args, s: &Settings) -> &'static str {
    let active: Vec<usize> = (0..4).filter(|&r| s.weights[r] > 0.0).collect();
    match active.as_slice() {
        [2] if a.net_capacity.is_none() && s.weights[2] == 1.0 => "KB/s",
        [3] if a.disk_capacity.is_none() && s.weights[3] == 1.0 => "KB/s",
        [r] if s.weights[*r] == 1.0 => "utilisation",
        _ => "weighted load",
    }
}

impl<'a> Report<'a> {
    pub fn new(a: &'a Args, s: &Settings, p: &'a Problem, adv: &Advice) -> Report<'a> {
        let count = |pl: &Placement, h: usize| pl.host.iter().filter(|&&x| x == h).count();
        let (now, plan) = (&adv.now, &adv.plan.placement);
        Report {
            balance: a.balance.clone(),
            unit: unit(a, s),
            stat: &a.stat,
            since: &a.since,
            interval_s: s.interval,
            max_moves: s.max_moves,
            time_limit_s: s.time_limit.as_secs_f64(),
            peak_before: adv.peak,
            peak_after: plan.max_load(p),
            mean: adv.mean,
            lower_bound: adv.lower_bound,
            outcome: adv.outcome,
            proven: adv.plan.proven,
            bound_within_budget: adv.plan.bound,
            gap: adv.plan.gap(p),
            hosts: (0..p.hosts.len())
                .map(|h| HostRow {
                    name: &p.hosts[h].name,
                    excluded: p.hosts[h].excluded,
                    vms_before: count(now, h),
                    vms_after: count(plan, h),
                    load_before: now.load[h],
                    load_after: plan.load[h],
                })
                .collect(),
            moves: adv
                .plan
                .moves
                .iter()
                .map(|m| MoveRow {
                    vm: &p.vms[m.vm].name,
                    from: &p.hosts[m.from].name,
                    to: &p.hosts[m.to].name,
                    load: vm_load(p, m.vm, m.to),
                    peak_after: m.peak_after,
                })
                .collect(),
        }
    }

    /// Prints the report: JSON, or text for a cluster of `vms` VMs.
    pub fn print(&self, json: bool, vms: usize) {
        if json {
            println!("{}", serde_json::to_string_pretty(self).unwrap_or_default());
        } else {
            self.print_text(vms);
        }
    }

    /// A load in the report's unit.
    fn load(&self, x: f64) -> String {
        if self.unit == "KB/s" {
            format!("{x:.1}")
        } else {
            format!("{x:.4}")
        }
    }

    fn print_text(&self, vms: usize) {
        let f = |x| self.load(x);
        println!(
            "{} hosts, {vms} VMs; balancing {} by the {} of {}-s samples over the last {}",
            self.hosts.len(),
            self.balance,
            self.stat,
            self.interval_s,
            self.since
        );
        println!(
            "peak {} {}, mean {}, lower bound {}",
            f(self.peak_before),
            self.unit,
            f(self.mean),
            f(self.lower_bound)
        );
        println!();
        self.print_hosts();
        println!();
        match self.outcome {
            Outcome::Balanced => println!("nothing to do: the busiest host is within the tolerance of the mean (or at the lower bound)"),
            Outcome::OneHost => println!("nothing to do: fewer than two hosts can give and take VMs (the others are in maintenance, disconnected or excluded)"),
            Outcome::NoBetterPlan if self.proven || self.gap == 0.0 && self.max_moves.is_some() => println!(
                "nothing to do: no plan within {} migration(s) and the hosts' CPU, memory and anti-affinity lowers the peak",
                self.budget()
            ),
            Outcome::NoBetterPlan => println!(
                "nothing to do: no plan within {} migration(s) and the hosts' CPU, memory and anti-affinity that lowers the peak was found (not proven; {})",
                self.budget(),
                self.how_good()
            ),
            Outcome::Plan => self.print_plan(),
        }
    }

    /// The budget in words.
    fn budget(&self) -> String {
        self.max_moves
            .map_or("any number of".to_string(), |m| m.to_string())
    }

    /// The hosts' VMs and loads, before and after.
    fn print_hosts(&self) {
        println!(
            "{:<24} {:>5} {:>12} {:>5} {:>12}",
            "host", "VMs", "before", "VMs", "after"
        );
        for h in &self.hosts {
            println!(
                "{:<24} {:>5} {:>12} {:>5} {:>12}{}",
                h.name,
                h.vms_before,
                self.load(h.load_before),
                h.vms_after,
                self.load(h.load_after),
                if h.excluded { "  (excluded)" } else { "" }
            );
        }
    }

    /// The plan's migrations, in order, each with the peak it leaves.
    fn print_plan(&self) {
        let f = |x| self.load(x);
        println!(
            "plan: {} migration(s), peak {} -> {} {}",
            self.moves.len(),
            f(self.peak_before),
            f(self.peak_after),
            self.unit
        );
        let mut peak = self.peak_before;
        for (i, m) in self.moves.iter().enumerate() {
            println!(
                "  {}. {}: {} -> {} ({} {}); peak {} -> {} (gain {})",
                i + 1,
                m.vm,
                m.from,
                m.to,
                f(m.load),
                self.unit,
                f(peak),
                f(m.peak_after),
                f(peak - m.peak_after)
            );
            peak = m.peak_after;
        }
        println!("{}", self.how_good());
    }

    /// Whether the plan is proven optimal, or how far from the best it
    /// can be.
    fn how_good(&self) -> String {
        let f = |x| self.load(x);
        match (self.max_moves, self.proven) {
            (Some(m), true) => format!("proven optimal: no plan of at most {m} migration(s), each keeping CPU, memory and anti-affinity, has a lower peak, nor the same peak with fewer migrations"),
            (Some(m), false) if self.gap == 0.0 => format!(
                "the peak is proven the lowest any {m} migration(s) can reach; the search for fewer migrations reaching it stopped at --time-limit {} s",
                self.time_limit_s
            ),
            (Some(m), false) => format!(
                "not proven optimal (the search stopped at --time-limit {} s): the peak is at most {:.1} % above the lowest any {m} migration(s) can reach ({} {})",
                self.time_limit_s,
                100.0 * self.gap,
                f(self.bound_within_budget),
                self.unit
            ),
            (None, true) => "optimal: the peak is at the lower bound".to_string(),
            (None, false) => format!(
                "no budget, so not proven optimal (the better of a local search's plan and the optimal plan within 3): the peak is at most {:.1} % above the lower bound",
                100.0 * self.gap
            ),
        }
    }
}
