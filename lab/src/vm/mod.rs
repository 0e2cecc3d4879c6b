//! Emulated VMs for the lab (README, "The lab").
//!
//! One process hosts N emulated VMs of different sizes on loopback, each a
//! real HTTP/1.1 server on its own `ip:port` (distinct 127.0.0.x addresses,
//! so nginx servers can be mapped to VMs by guest IP). A small VM is really
//! slower, whatever the load of the machine: CPU and network are emulated
//! with time-based FIFO queues (tokio timers), never by burning CPU.
//!
//! * CPU: `vcpus` parallel FIFO servers of speed `(cpu_mhz − hog)/vcpus` MHz
//!   (at least 1% of the capacity), times `1 − contention` (the hypervisor
//!   gives the VM only part of the cycles it asks for: the time a vCPU has
//!   work but waits is reported as CPU ready, `contention × busy time`) and
//!   `1 − slowdown` (a loss nothing reports). A request goes to the server
//!   that frees up first and is answered when its work is done. A change of
//!   capacity, hog, contention or slowdown re-times the work still queued
//!   (settled at the change).
//! * Network: one FIFO link of `net_kbps × 1024` bytes/s per VM (0 =
//!   unlimited); the response (headers + body) occupies it after the CPU
//!   work and is written when its transmission is over.
//! * Memory: `0.3 × memory_mb × 1024 + 1024 × open connections` KB.
//!
//! Usage is exact at any instant (work done so far, not work scheduled).
//!
//! On real CPUs (`--real-cpu MHZ`, the real-CPU cells): each VM is a
//! cgroup whose CFS quota is its size, one real core standing for `MHZ`;
//! its vCPUs are threads that burn each request's CPU work on their own
//! CPU clock, and its usage and CPU ready come from the cgroup's
//! accounting (`cpuacct.usage`, throttled time). The network stays
//! emulated; there is no emulated hog, contention or slowdown (a
//! background job is a real process: `dwepc-lab cpuhold --cgroup`).
//!
//! ```text
//! dwepc-lab vms --spec FILE [--control ADDR] [--ready FILE] [--real-cpu MHZ]
//! ```
//!
//! Control endpoint (HTTP/1.1, `Connection: close`, JSON answers):
//! `GET /usage`, `/vms`, `/vm/NAME/hog?mhz=X`, `/vm/NAME/cpu?mhz=X`,
//! `/vm/NAME/net?kbps=X`, `/vm/NAME/vcpus?n=N` (a CPU hot-add: more vCPUs
//! of the same speed), `/vm/NAME/contention?pct=X`,
//! `/vm/NAME/slowdown?pct=X`, `/vm/NAME/down`, `/vm/NAME/up`, `/quit`.

mod burn;
mod cli;
mod control;
mod handle;
mod lab;
mod pages;
mod queue;
mod request;
mod serve;
mod spec;
mod state;

use crate::lock;

pub use cli::main;
pub use handle::{start, start_on, Handle};
pub use pages::{cost_mhz_ms, T1_PAGES};
pub use spec::{parse_specs, parse_usage, specs_json, Usage, VmSpec};
