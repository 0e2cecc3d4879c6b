//! What the pick benchmarks share: nginx's picks in plain Rust
//! ([`nginx`]) and the module's pick as they run it ([`module`]). Each
//! benchmark uses part of it.
#![allow(dead_code)]

pub mod module;
pub mod nginx;
