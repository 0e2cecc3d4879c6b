//! The optimizer: where the VMs should run so that one resource (or a
//! weighted mix) is balanced over the hosts, starting from where they run
//! now and within a budget of migrations. Plain data in, a plan out; no
//! vSphere types.
//!
//! The load of a host is the weighted sum, over the balanced resources, of
//! its VMs' demand divided by the host's capacity for that resource (its
//! utilisation). A placement is better than another when its largest host
//! load is smaller, and at an equal largest load when the sum of squared
//! loads is smaller (so that a move that relieves the second-busiest host
//! still counts).
//!
//! Constraints, never broken by a plan: each host's CPU and memory, Nova
//! style (`capacity × ratio − reserved`, [`dwepc_core::conf`]'s
//! accounting) hold the VMs placed there; VMs of one anti-affinity group
//! run on different hosts; excluded hosts (maintenance, or named by the
//! user) receive no VM and give none (their VMs stay and are not
//! balanced); at most `max_moves` VMs end on another host than their
//! current one. A VM that already breaks a constraint where it runs now is
//! not forced away; the plan only never makes a host worse on a
//! constraint.
//!
//! The search ([`plan()`]): best-improvement local search from the current
//! placement over single moves and pairwise swaps, each step taking the
//! move (or swap) that lowers the objective most, until no step helps or
//! the budget is spent; a move that brings a VM back home gives a
//! migration back. With an unlimited budget it also runs from the greedy
//! placement (largest VM first onto the least-loaded host that can take
//! it) and keeps the better, so it is never worse than greedy. The greedy
//! of the Proxmox VE / Ceph I/O-balancing article ("stones into piles",
//! [`greedy_lpt`]) and that greedy cut to a budget ([`greedy_within`]) are
//! here too, for the comparison in BENCHMARKS.md.
//!
//! Files, one job each: `model` (the problem and how a placement scores),
//! `constraints` (what a plan keeps, [`feasible`]), `state` (the search
//! state and what one step changes), `search` (the local search,
//! [`plan()`]), `greedy` (the baselines), `order` (the order a plan's
//! migrations can be carried out in, [`ordered_moves`]) and `stat` (a VM's
//! demand from its samples, [`Stat`]).

mod constraints;
mod greedy;
mod model;
mod order;
mod search;
mod stat;
mod state;

pub use constraints::{feasible, Infeasible};
pub use greedy::{greedy_feasible, greedy_lpt, greedy_within};
pub use model::{current, evaluate, lower_bound, vm_load, Host, Placement, Problem, Vm, RESOURCES};
pub use order::{ordered_moves, Move};
pub use search::{plan, plan_with};
pub use stat::{Stat, UnknownStat};
