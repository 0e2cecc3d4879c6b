//! A panic inside the module never leaves nginx worse off: the call fails,
//! nginx's peer lock is released, the collector thread comes back, and the
//! error log says what happened once. The panics are injected through the
//! debug build's fault points (`DWEPC_FAULT`, passed to the workers with
//! nginx's `env` directive); the real nginx, module and vcsim run.

mod common;

use common::http;
use common::setup::vcsim_available;
use common::vsenv::{active, VsEnv, VsOpts};
use std::time::{Duration, Instant};

/// The `[alert]` lines of `log` that contain `needle`.
fn alerts<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|l| l.contains("[alert]") && l.contains(needle))
        .collect()
}

/// A panic in `get` while nginx's write lock on a shared (`zone`) peer
/// list is held: the request fails, the lock is released (before the fix
/// the next pick spun on it forever and the worker stopped answering), and
/// one `[alert]` names the entry point, the message and the place.
#[test]
fn panic_under_the_peer_lock_releases_it() {
    if !vcsim_available() {
        return;
    }
    let mut env = VsEnv::start(VsOpts {
        zone: true,
        main_extra: "env DWEPC_FAULT=get_peer_locked;".into(),
        ..VsOpts::default()
    });
    env.start_feeder();
    env.drive_until(20, Duration::from_secs(40), "counters", active);
    let t0 = Instant::now();
    let mut codes = Vec::new();
    for _ in 0..30 {
        // a worker spinning on the lock answers nothing: the client's read
        // timeout ends the request, and the test
        let code = http::request(env.port, "GET", "/")
            .map(|r| r.status)
            .unwrap_or(0);
        codes.push(code);
        if code == 0 {
            break;
        }
    }
    let failed: Vec<u16> = codes.iter().copied().filter(|&c| c != 200).collect();
    assert!(failed.len() <= 1, "{codes:?}\n{}", env.nginx.error_log());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "requests stalled: {:?}",
        t0.elapsed()
    );
    let log = env.nginx.error_log();
    let alerts = alerts(&log, "dwepc: panic in get_peer");
    assert_eq!(alerts.len(), 1, "{log}");
    assert!(
        alerts[0].contains("dwepc fault injection: get_peer_locked at src/balancer/get.rs:"),
        "{}",
        alerts[0]
    );
    assert!(active(&env.status()));
}

/// A panic in the collector thread is logged and the thread restarts after
/// its back-off (before the fix it ended silently and the upstream stayed
/// on round robin for good).
#[test]
fn collector_panic_is_logged_and_it_restarts() {
    if !vcsim_available() {
        return;
    }
    let mut env = VsEnv::start(VsOpts {
        main_extra: "env DWEPC_FAULT=collector;".into(),
        ..VsOpts::default()
    });
    env.start_feeder();
    env.drive_until(
        20,
        Duration::from_secs(40),
        "counters after restart",
        active,
    );
    let log = env.nginx.error_log();
    let alerts = alerts(&log, "the collector thread panicked");
    assert_eq!(alerts.len(), 1, "{log}");
    assert!(
        alerts[0].contains("dwepc fault injection: collector at src/worker.rs:")
            && alerts[0].contains("restarting it in 1 s"),
        "{}",
        alerts[0]
    );
}
