//! Small helpers shared by the FFI glue: panic containment, strings, time,
//! logging.

use core::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ngx::ffi::{
    ngx_cached_time, ngx_conf_t, ngx_log_error_core, ngx_log_t, ngx_str_t, ngx_uint_t,
    NGX_LOG_EMERG,
};

/// Runs `f`, turning a panic into `on_panic`. Every `extern "C"` entry
/// point of the module goes through this so no panic unwinds into nginx.
#[inline]
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => on_panic,
    }
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

/// Logs `msg` at `level` on `log` (not for the request path).
///
/// # Safety
/// `log` must be a valid nginx log.
pub unsafe fn log(level: u32, log: *mut ngx_log_t, msg: &str) {
    // SAFETY: log is valid per the caller; "%*s" takes a length and pointer.
    unsafe {
        if log.is_null() || (level as ngx_uint_t) > (*log).log_level {
            return;
        }
        ngx_log_error_core(
            level as ngx_uint_t,
            log,
            0,
            c"%*s".as_ptr() as *const c_char,
            msg.len(),
            msg.as_ptr(),
        );
    }
}

/// Wall-clock milliseconds from nginx's cached time (no system call).
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

/// Wall-clock milliseconds (system call; for the collector thread).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
