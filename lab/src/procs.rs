//! The processes the lab started (nginx masters, vcsim), so that Ctrl-C or
//! SIGTERM stops every one of them, by its own PID.
//!
//! [`install_stop_handler`] blocks SIGINT and SIGTERM in the calling thread
//! (call it first in `main`, before any other thread starts, so every
//! thread inherits the mask) and waits for them on a thread of its own; on
//! either it sends SIGTERM to every registered process (nginx's fast
//! shutdown, which stops its workers), waits up to 3 s, sends SIGKILL to
//! what is left, and exits with 128 + the signal number.

use std::sync::Mutex;
use std::time::{Duration, Instant};

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remembers a process to stop on a signal.
pub fn register(pid: u32) {
    children().push(pid);
}

/// Forgets a process (it was stopped normally).
pub fn unregister(pid: u32) {
    children().retain(|&p| p != pid);
}

/// Registered processes.
pub fn registered() -> Vec<u32> {
    children().clone()
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(pid, 0) only checks that the process exists; a zombie
    // child counts as gone below because we reap with waitpid(WNOHANG).
    unsafe {
        let mut status = 0;
        libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG);
        libc::kill(pid as libc::pid_t, 0) == 0
    }
}

/// Stops every registered process: SIGTERM, then SIGKILL after `grace`.
pub fn stop_all(grace: Duration) {
    let pids = registered();
    for &p in &pids {
        // SAFETY: kill(2) on a PID this process started and registered.
        unsafe {
            libc::kill(p as libc::pid_t, libc::SIGTERM);
        }
    }
    let start = Instant::now();
    while start.elapsed() < grace && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in &pids {
        if alive(p) {
            // SAFETY: kill(2) on a PID this process started and registered.
            unsafe {
                libc::kill(p as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    children().clear();
}

/// Raises this process's open-file limit (cells side by side hold tens of
/// thousands of connections in overload: load generators and emulated
/// VMs): to 262144 where allowed (root), else to the hard limit. Returns
/// the limit in force.
pub fn raise_fd_limit() -> u64 {
    const WANT: libc::rlim_t = 262_144;
    // SAFETY: getrlimit/setrlimit on this process with valid structs.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        if r.rlim_cur < WANT {
            let big = libc::rlimit {
                rlim_cur: WANT,
                rlim_max: WANT.max(r.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &big) != 0 && r.rlim_cur < r.rlim_max {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as u64
    }
}

/// See the module documentation.
pub fn install_stop_handler() {
    // SAFETY: sigset operations on a local set; pthread_sigmask on the
    // calling thread only.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("dwepc-lab-signals".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: sigwait on the signals this thread (and every other)
            // blocks, with a valid set and output.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc != 0 {
                return;
            }
            eprintln!(
                "\nlab: {} received: stopping {} processes",
                if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                },
                registered().len()
            );
            stop_all(Duration::from_secs(3));
            std::process::exit(128 + sig);
        })
        .expect("signal thread");
}
