//! Test harness: the real nginx built by nginx-sys with the real module,
//! real HTTP backends on loopback, and a small HTTP client. Every process
//! started here is stopped by its own PID when its guard drops.

#![allow(dead_code)]

pub mod backend;
pub mod http;
pub mod nginx;
pub mod setup;
pub mod vcsim;

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms for up to `timeout`, returning its first `Some`.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
