//! dwepc-place: where the VMs of a vSphere cluster should run so that one
//! resource (disk I/O by default) is balanced over the ESXi hosts, from
//! the same counters and the same vSphere client as the nginx module
//! (`dwepc-core`). The optimizer ([`plan`]) takes plain data and gives a
//! plan; the rest of the crate is the `dwepc-place` command around it:
//! it reads the hosts, every powered-on VM's host and its usage over a
//! horizon, plans at most `--max-moves` migrations, prints the plan, and
//! with `--apply` carries it out one RelocateVM_Task at a time.
//!
//! # Layout
//!
//! - [`plan`]: the optimizer, free of vSphere types. `plan/model.rs` the
//!   problem and how a placement scores; `plan/constraints.rs` what a
//!   plan keeps ([`plan::feasible`]); `plan/state.rs` the search state and
//!   what one step changes; `plan/search.rs` the local search
//!   ([`plan::local_search`]); `plan/exact.rs` the exact search within a
//!   budget; `plan/best.rs` the plan from both, proven or with its gap
//!   ([`plan::plan()`]); `plan/greedy.rs` the greedy baselines;
//!   `plan/order.rs` the order its migrations can be carried out in;
//!   `plan/stat.rs` a VM's demand from its samples ([`plan::Stat`]).
//! - [`cli`]: the command line ([`cli::Args`]) and the settings checked
//!   before vSphere is asked anything.
//! - `cluster`: the vSphere client, and the cluster's hosts, VMs and
//!   samples read through it.
//! - `problem`: the optimizer's problem built from the cluster.
//! - `advice`: the plan to advise, or why nothing is to do.
//! - `report`: the report, as text or JSON.
//! - `apply`: the plan carried out, one migration at a time.
//! - `run`: one run, from the command line to the exit status ([`run()`],
//!   [`Failure`]).
//! - [`check`]: `dwepc-check`, the pre-flight check of vSphere for the
//!   nginx module (same client, same parsers of the directives), and
//!   `check/nginx_conf.rs`, what it reads of an nginx configuration.
//!
//! `src/main.rs` is the binary; `tests/prop_place.rs` holds the
//! optimizer's property tests (brute force among them), `tests/vcsim.rs` runs the binary against
//! the vCenter simulator, and `examples/place_compare.rs` compares the
//! plan with the greedy baselines (BENCHMARKS.md).

#![forbid(unsafe_code)]

pub mod check;
pub mod cli;
pub mod plan;

mod advice;
mod apply;
mod cluster;
mod problem;
mod report;
mod run;

pub use run::{run, Failure};
