//! Starting and stopping the collector thread (`dwepc_core::collector`) in
//! each worker process.
//!
//! The thread is started in `init_process` of worker processes only (not
//! the master, cache manager/loader, or `nginx -t`), with every signal
//! blocked so signals keep reaching the event loop thread. It touches no
//! nginx API but logging (as nginx's own thread pools do) and reads the
//! process-exit flags. `exit_process` asks it to stop and joins it if it
//! finishes within a second (every vSphere call has a timeout; a thread
//! still inside one is left to the process exit).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dwepc_core::collector::{Collector, Level, PeerSpec, Runtime, Spec, UpstreamSpec};
use ngx::ffi::{
    ngx_cycle_t, ngx_exiting, ngx_int_t, ngx_log_t, ngx_quit, ngx_terminate, NGX_LOG_ALERT,
    NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_OK, NGX_PROCESS_SINGLE,
    NGX_PROCESS_WORKER,
};

use crate::module::main_conf;
use crate::state::MainState;
use crate::util::catch_panic;

struct Running {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

/// The worker's log, usable from the thread.
struct NginxRuntime {
    log: *mut ngx_log_t,
    /// The cycle the thread was started for (compared, never dereferenced).
    cycle: *mut ngx_cycle_t,
    stop: Arc<AtomicBool>,
}

// SAFETY: the log pointer is the cycle's log, valid for the whole life of
// the worker; nginx's log writer is used from its own thread pools too.
unsafe impl Send for NginxRuntime {}

impl Runtime for NginxRuntime {
    fn log(&self, level: Level, msg: &str) {
        let lvl = match level {
            Level::Error => NGX_LOG_ERR,
            Level::Warn => NGX_LOG_WARN,
            Level::Notice => NGX_LOG_NOTICE,
            Level::Info => NGX_LOG_INFO,
        };
        // SAFETY: self.log is the cycle's log, valid for the worker's life;
        // nginx's log writer is used from its own threads too.
        unsafe { crate::util::log(lvl, self.log, msg) };
    }

    fn stopping(&self) -> bool {
        // SAFETY: plain reads of nginx's process flags (sig_atomic_t /
        // ngx_uint_t set by the worker's signal handling); a stale read
        // only delays the stop by one tick.
        let flags = unsafe {
            core::ptr::read_volatile(&raw const ngx_quit) != 0
                || core::ptr::read_volatile(&raw const ngx_terminate) != 0
                || core::ptr::read_volatile(&raw const ngx_exiting) != 0
                || core::ptr::read_volatile(&raw const ngx::ffi::ngx_cycle) != self.cycle
        };
        flags || self.stop.load(Ordering::Relaxed)
    }

    fn alive(&self, pid: u64) -> bool {
        // SAFETY: kill(pid, 0) only checks for existence.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

/// What the collector works on, borrowing the cycle's zones.
fn build_spec(main: &MainState) -> Option<Spec<'_>> {
    let lease = crate::zone::lease(main.lease_zone()?)?;
    let endpoints = main.endpoints.iter().map(|e| e.spec.clone()).collect();
    let upstreams = main
        .upstreams()
        .filter_map(|u| {
            let zone = crate::zone::of(u)?;
            let peers = u
                .peers()
                .iter()
                .map(|p| {
                    PeerSpec::new(
                        &p.name,
                        p.ip,
                        p.weight,
                        p.backup,
                        p.is_spare(),
                        p.node.map(|k| &u.parsed.nodes[k].conf),
                        &u.parsed.conf,
                    )
                })
                .collect();
            Some(UpstreamSpec {
                name: u.parsed.name.clone(),
                conf: u.conf(),
                endpoint: u.endpoint(),
                peers,
                zone,
            })
        })
        .collect();
    Some(Spec {
        endpoints,
        upstreams,
        lease,
        pid: std::process::id() as u64,
    })
}

/// The collector thread's body: runs the collector until it stops; a panic
/// inside it is logged at `[alert]` and the collector restarts from its
/// spec (sessions anew, the shared zone as it is) after a back-off of 1 s,
/// doubling up to a minute (back to 1 s after ten good minutes), so an
/// upstream never goes stale silently.
fn supervise(spec: Spec, rt: NginxRuntime) {
    crate::util::quiet_panics();
    if let Err(e) = lower_priority() {
        rt.log(
            Level::Info,
            &format!("dwepc: the collector thread keeps the event loop's CPU priority: {e}"),
        );
    }
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            crate::util::fault("collector");
            Collector::new(spec.clone(), &rt).run();
        }));
        let Err(payload) = run else { return };
        if started.elapsed() > Duration::from_secs(600) {
            // it had been running well: a new fault, not a crash loop
            backoff = Duration::from_secs(1);
        }
        let text = crate::util::panic_text(payload.as_ref());
        // SAFETY: rt.log is the cycle's log, valid for the worker's life;
        // nginx's log writer is used from its own threads too.
        unsafe {
            crate::util::log(
                NGX_LOG_ALERT,
                rt.log,
                &format!(
                    "dwepc: the collector thread panicked: {text}; restarting it in {} s",
                    backoff.as_secs()
                ),
            )
        };
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if rt.stopping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// How many nice levels below the worker's event loop the collector
/// thread runs: its parsing (tens of ms per poll of thousands of VMs) must
/// not delay requests on a busy core, and at 10 it still gets about a
/// tenth of a core that the event loop keeps busy.
const COLLECTOR_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`COLLECTOR_NICE`] (at most
/// to 19). Linux keeps a nice value per thread; the event loop keeps its
/// own (`worker_priority`), threads this one starts inherit it.
fn lower_priority() -> std::io::Result<()> {
    // SAFETY: gettid, getpriority and setpriority take and return plain
    // integers and change only this thread's nice value; errno is this
    // thread's, cleared first because -1 is also a valid nice value.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if now == -1 && *libc::__errno_location() != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + COLLECTOR_NICE).min(19)) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Spawns `f` on a thread with every signal blocked.
fn spawn_masked(f: impl FnOnce() + Send + 'static) -> std::io::Result<JoinHandle<()>> {
    // SAFETY: pthread_sigmask on the calling thread; the new thread
    // inherits the full mask, then the caller's mask is restored.
    unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let r = std::thread::Builder::new()
            .name("dwepc-collector".into())
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        r
    }
}

/// `init_process`.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    catch_panic("init_process", NGX_OK as ngx_int_t, || {
        // SAFETY: nginx passes the live cycle.
        unsafe { start(cycle) };
        NGX_OK as ngx_int_t
    })
}

/// # Safety
/// `cycle` is the live cycle of this worker.
unsafe fn start(cycle: *mut ngx_cycle_t) {
    // SAFETY: reading nginx's process type and the cycle's http main conf.
    unsafe {
        let p = ngx::ffi::ngx_process as u32;
        if p != NGX_PROCESS_WORKER && p != NGX_PROCESS_SINGLE {
            return;
        }
        let Some(main) = main_conf(&*cycle) else {
            return;
        };
        let Some(spec) = build_spec(main) else { return };
        if spec.upstreams.iter().all(|u| u.endpoint.is_none()) {
            return;
        }
        // SAFETY: the spec borrows this cycle's shared zones, and the
        // thread must own it. A worker process never frees its cycle: the
        // zones stay mapped until the process exits, and exit_process asks
        // the thread to stop first. In single-process mode (`master_process
        // off`, for debugging) a reload makes a new cycle in this process;
        // the thread stops when it sees ngx_cycle change (NginxRuntime), and
        // nginx keeps a zone whose name and size stay the same.
        let spec = std::mem::transmute::<Spec<'_>, Spec<'static>>(spec);
        let stop = Arc::new(AtomicBool::new(false));
        let rt = NginxRuntime {
            log: (*cycle).log,
            cycle,
            stop: stop.clone(),
        };
        match spawn_masked(move || supervise(spec, rt)) {
            Ok(handle) => {
                if let Ok(mut r) = RUNNING.lock() {
                    *r = Some(Running { stop, handle });
                }
            }
            Err(e) => crate::util::log(
                ngx::ffi::NGX_LOG_ALERT,
                (*cycle).log,
                &format!("dwepc: cannot start the collector thread: {e}"),
            ),
        }
    }
}

/// `exit_process`.
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    catch_panic("exit_process", (), || {
        let Some(run) = RUNNING.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        run.stop.store(true, Ordering::Relaxed);
        let start = Instant::now();
        while !run.handle.is_finished() && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
        if run.handle.is_finished() {
            let _ = run.handle.join();
        }
    })
}
