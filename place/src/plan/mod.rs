//! The optimizer: where the VMs should run so that one resource (or a
//! weighted mix) is balanced over the hosts, starting from where they run
//! now and within a budget of migrations. Plain data in, a plan out; no
//! vSphere types.
//!
//! The load of a host is the weighted sum, over the balanced resources, of
//! its VMs' demand divided by the host's capacity for that resource (its
//! utilisation). The objective of the plan: the lowest largest host load
//! (the peak), then, at an equal peak, the fewest migrations. The local
//! search also compares the sum of squared loads at an equal peak (so that
//! a step that relieves the second-busiest host still counts), and the
//! exact search tries the migrations that leave the lowest sum first, but
//! among plans of equal peak and migrations none is proven lowest in it.
//!
//! Constraints, never broken by a plan: each host's CPU and memory, Nova
//! style (`capacity × ratio − reserved`, [`dwepc_core::conf`]'s
//! accounting) hold the VMs placed there; VMs of one anti-affinity group
//! run on different hosts; excluded hosts (maintenance, or named by the
//! user) receive no VM and give none (their VMs stay and are not
//! balanced); at most `max_moves` migrations. A VM that already breaks a constraint where it runs now is
//! not forced away; the plan only never makes a host worse on a
//! constraint.
//!
//! The plan ([`plan()`]): the local search ([`local_search`]:
//! best-improvement from the current placement over single moves and
//! pairwise swaps, each step the one that lowers the objective most, then
//! every migration the peak does not need taken back; with no budget also
//! from the greedy placements, so never worse than greedy), cut to the
//! migrations that run one at a time, is where the exact search starts.
//! With a budget, the exact search (`exact`) finds the lowest peak that
//! any sequence of at most `max_moves` single migrations reaches, each
//! migration keeping every constraint on its own, and at that peak the
//! fewest migrations; it is proven when the search ends within the time
//! limit, else the plan says its gap to a bound. A migration is one
//! RelocateVM: a VM moved twice (out of the way, then on) counts twice.
//! The greedy of the Proxmox VE / Ceph I/O-balancing article ("stones
//! into piles", [`greedy_lpt`]) and that greedy cut to a budget
//! ([`greedy_within`]) are here too, for the comparison in BENCHMARKS.md.
//!
//! Files, one job each: `model` (the problem and how a placement scores),
//! `constraints` (what a plan keeps, [`feasible`]), `state` (the search
//! state and what one step changes), `search` (the local search),
//! `exact` (the exact search within a budget), `best` (the plan from
//! both, [`plan()`], [`Plan`]), `greedy` (the baselines), `order` (the
//! order a placement's migrations can be carried out in,
//! [`ordered_moves`]) and `stat` (a VM's demand from its samples,
//! [`Stat`]).

mod best;
mod constraints;
mod exact;
mod greedy;
mod model;
mod order;
mod search;
mod stat;
mod state;

pub use best::{plan, Plan, DEFAULT_BUDGET};
pub use constraints::{feasible, Infeasible};
pub use greedy::{greedy_feasible, greedy_lpt, greedy_within};
pub use model::{current, evaluate, lower_bound, vm_load, Host, Placement, Problem, Vm, RESOURCES};
pub use order::{ordered_moves, Move};
pub use search::local_search;
pub use stat::{Stat, UnknownStat};
