//! dwepc's lab and test harness: the real nginx with the module, vcsim
//! (the vSphere simulator), backends on loopback and an HTTP client. The
//! integration tests of the module and the lab binary both use it. Every
//! process started here is stopped by its own PID.
//!
//! The three larger parts are folders, a file per job: [`vm`] (the emulated
//! VMs: specs, pages, queue model, serving, control endpoint), [`load`] (the
//! load generator: spec, arrivals, connections) and [`run`] (a lab cell:
//! policies, stacks, clock, events, load processes, analysis, results).

pub mod backend;
pub mod cgroup;
pub mod hold;
pub mod http;
pub mod load;
pub mod matrix;
pub mod metrics;
pub mod nginx;
pub mod overhead;
pub mod pipeline;
pub mod procs;
pub mod run;
pub mod scale;
pub mod scenario;
pub mod vcsim;
pub mod vm;

/// A free loopback TCP port (bound then released).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
    // Below Linux's ephemeral range (32768-60999), from which the OS gives
    // every outgoing connection and every bind to port 0 its port: a port
    // from there could be taken by a parallel test's connection between
    // this check and the server's own bind. Handed out in turn within the
    // process (no two callers get the same), each process starting at its
    // own place in the range.
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % 60 * 200;
    for _ in 0..SPAN {
        let port = (FIRST + (start + NEXT.fetch_add(1, Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}-{}", FIRST + SPAN - 1)
}

/// Locks `m`, also after another holder panicked.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

/// Now as an RFC 3339 UTC timestamp with whole seconds.
pub fn now_rfc3339() -> String {
    rfc3339(dwepc_core::clock::now_ms() / 1000)
}

/// `secs` since the epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(secs: u64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil_from_days (H. Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
