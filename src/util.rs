//! Small helpers shared by the FFI glue: panic containment, strings, time,
//! logging.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};

use ngx::ffi::{ngx_cached_time, ngx_conf_t, ngx_log_t, ngx_str_t, NGX_LOG_ALERT, NGX_LOG_EMERG};

/// Runs `f`, turning a panic into `on_panic`. Every `extern "C"` entry
/// point of the module goes through this so no panic unwinds into nginx;
/// a caught panic is logged at `[alert]` on the cycle's log with `name`
/// (the entry point), its message and where it happened
/// ([`report_panic`]). Anything `f` holds is released when dropped
/// while unwinding.
#[inline]
pub fn catch_panic<T>(name: &'static str, on_panic: T, f: impl FnOnce() -> T) -> T {
    quiet_panics();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            report_panic(name, payload.as_ref());
            on_panic
        }
    }
}

thread_local! {
    /// "message at file:line" of this thread's last panic, from the hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replaces the default panic hook (which writes to nginx's stderr) by one
/// that keeps the message and location for [`report_panic`]. This library
/// has its own copy of std, so the hook is this module's alone.
pub fn quiet_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let text = format!("{}{at}", payload_text(info.payload()));
            LAST_PANIC.with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    *p = Some(text);
                }
            });
        }));
    });
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

/// The message of a caught panic: the hook's "message at file:line" if it
/// ran on this thread, else the payload's text.
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    LAST_PANIC
        .with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()))
        .unwrap_or_else(|| payload_text(payload))
}

/// Logs a caught panic of entry point `name` at `[alert]` on the cycle's
/// log: the first of each entry point at once, later ones at most once a
/// minute with how many there were since (a panic on every request must
/// not flood the log).
pub fn report_panic(name: &'static str, payload: &(dyn std::any::Any + Send)) {
    static SEEN: Mutex<Vec<(&'static str, u64, u64)>> = Mutex::new(Vec::new());
    let text = panic_text(payload);
    let now = dwepc_core::clock::now_ms();
    let line = {
        let Ok(mut seen) = SEEN.lock() else { return };
        match seen.iter_mut().find(|e| e.0 == name) {
            None => {
                seen.push((name, now, 0));
                Some(format!(
                    "dwepc: panic in {name}: {text}; the call failed and nothing is held"
                ))
            }
            Some(e) if now.saturating_sub(e.1) >= 60_000 => {
                let n = e.2 + 1;
                e.1 = now;
                e.2 = 0;
                Some(format!(
                    "dwepc: {n} panics in {name} in the last minute or more, the last: {text}"
                ))
            }
            Some(e) => {
                e.2 += 1;
                None
            }
        }
    };
    if let Some(line) = line {
        // SAFETY: ngx_cycle is nginx's current cycle (set before any module
        // code runs); its log outlives every call into the module.
        unsafe {
            let cycle = ngx::ffi::ngx_cycle;
            if !cycle.is_null() {
                log(NGX_LOG_ALERT, (*cycle).log, &line);
            }
        }
    }
}

/// Fault injection for the tests, debug builds only: panics the first time
/// this process reaches `point` if the environment variable `DWEPC_FAULT`
/// (passed to workers with nginx's `env DWEPC_FAULT=...;`) lists it
/// (comma-separated). Release builds compile it to nothing.
#[inline]
#[track_caller]
pub fn fault(point: &'static str) {
    #[cfg(debug_assertions)]
    {
        // read once: no allocation or lock on the request path after that
        static LISTED: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        static FIRED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
        let listed = LISTED.get_or_init(|| {
            std::env::var("DWEPC_FAULT")
                .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
                .unwrap_or_default()
        });
        if listed.iter().any(|p| p == point) {
            let first = FIRED
                .lock()
                .map(|mut f| {
                    let first = !f.contains(&point);
                    if first {
                        f.push(point);
                    }
                    first
                })
                .unwrap_or(false);
            if first {
                panic!("dwepc fault injection: {point}");
            }
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// The bytes of an `ngx_str_t` as (lossy) UTF-8.
pub fn ngx_str(s: &ngx_str_t) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

/// The words of the directive being parsed, without the directive name.
///
/// # Safety
/// `cf` must be the configuration being parsed, with `cf->args` set.
pub unsafe fn directive_args(cf: *mut ngx_conf_t) -> Vec<String> {
    // SAFETY: the caller passes the live parser state; cf->args is an array
    // of ngx_str_t for the current directive.
    let args = unsafe { (*(*cf).args).as_slice::<ngx_str_t>() };
    args.iter().skip(1).map(ngx_str).collect()
}

/// File and line of the directive being parsed.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn conf_location(cf: *mut ngx_conf_t) -> (String, usize) {
    // SAFETY: while a directive is parsed cf->conf_file points at the open
    // file (a NULL conf_file happens only for -g parameters).
    unsafe {
        let file = (*cf).conf_file;
        if file.is_null() {
            return ("command line".into(), 0);
        }
        (ngx_str(&(*file).file.name), (*file).line)
    }
}

/// Logs `msg` at EMERG with the current file and line (nginx appends
/// them), as `nginx -t` shows configuration errors.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn conf_error(cf: *mut ngx_conf_t, msg: &str) {
    ngx::ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", msg);
}

/// Logs `msg` at `level` on `log` through `ngx_log_error!` (nothing on a
/// null log). Not for the request path.
///
/// # Safety
/// `log` must be null or a valid nginx log.
pub unsafe fn log(level: u32, log: *mut ngx_log_t, msg: &str) {
    if log.is_null() {
        return;
    }
    // SAFETY (inside the macro): log is valid per the caller.
    ngx::ngx_log_error!(level, log, "{msg}");
}

/// The clock of [`dwepc_core::clock`], from nginx's cached time (no
/// system call): what the request path and the status page read.
#[inline]
pub fn cached_now_ms() -> u64 {
    // SAFETY: ngx_cached_time always points at a valid slot once nginx has
    // started; it is only read here (on the event loop thread).
    unsafe {
        let t = ngx_cached_time;
        if t.is_null() {
            return 0;
        }
        ((*t).sec as u64) * 1000 + (*t).msec as u64
    }
}
