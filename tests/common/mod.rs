//! Test harness: re-exports the lab's runners (real nginx, vcsim, backends,
//! HTTP client) and adds the test environments.

#![allow(dead_code, unused_imports)]

pub use dwepc_lab::{backend, free_port, http, nginx, now_rfc3339, vcsim, wait_for};

pub mod dns;
pub use dwepc_lab::pipeline::prometheus as prom;
pub mod setup;
pub mod vsenv;
