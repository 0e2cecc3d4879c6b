//! dwepc: an nginx dynamic module that balances an `upstream {}` of VMware
//! VMs by their ESXi performance counters (`ARCHITECTURE.md` at the root is
//! the map).
//!
//! This crate is the FFI layer only: every `extern "C"` function is a thin
//! shim that catches panics; the balancing modes, parsing and status
//! rendering are plain Rust in `dwepc-core`.
//!
//! `src/` depends on `dwepc-core`, never the other way, and its files in
//! one direction (no circle):
//!
//! ```text
//! lib (module table) ─> directives ─> balancer/ ─┐
//!                    ─> status ──────────────────┼─> zone ─> module ─> state
//!                    ─> worker (collector thread) ┘
//!                    ─> variables, overload ─> balancer/ (a request's decisions)
//! ```
//! Every file may use `util` (panic containment, logging, strings), which
//! uses none of them; `module` declares the module object for lookups, as
//! nginx's C modules declare `extern ngx_module_t`.

#![allow(non_upper_case_globals)]

use core::ptr;

use ngx::ffi::{
    ngx_command_t, ngx_http_module_t, ngx_module_t, NGX_CONF_1MORE, NGX_CONF_ANY, NGX_CONF_NOARGS,
    NGX_HTTP_LOC_CONF, NGX_HTTP_LOC_CONF_OFFSET, NGX_HTTP_MAIN_CONF, NGX_HTTP_MAIN_CONF_OFFSET,
    NGX_HTTP_MODULE, NGX_HTTP_SRV_CONF_OFFSET, NGX_HTTP_UPS_CONF,
};
use ngx::ngx_string;

mod balancer;
mod directives;
mod module;
mod overload;
mod state;
mod status;
mod util;
mod variables;
mod worker;
mod zone;

/// `postconfiguration`: the overload guard's answer filter.
unsafe extern "C" fn postconfiguration(_cf: *mut ngx::ffi::ngx_conf_t) -> ngx::ffi::ngx_int_t {
    // SAFETY: nginx calls postconfiguration once per configuration cycle,
    // single-threaded, before any request.
    unsafe { overload::install() };
    ngx::ffi::NGX_OK as ngx::ffi::ngx_int_t
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(variables::add_variables),
    postconfiguration: Some(postconfiguration),
    create_main_conf: Some(directives::create_main_conf),
    init_main_conf: Some(directives::init_main_conf),
    create_srv_conf: Some(directives::create_srv_conf),
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

static mut COMMANDS: [ngx_command_t; 6] = [
    ngx_command_t {
        name: ngx_string!("dwepc_vsphere"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as _,
        set: Some(directives::cmd_vsphere),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("dwepc_prometheus"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as _,
        set: Some(directives::cmd_prometheus),
        conf: NGX_HTTP_MAIN_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("dwepc"),
        type_: (NGX_HTTP_UPS_CONF | NGX_CONF_ANY) as _,
        set: Some(directives::cmd_dwepc),
        conf: NGX_HTTP_SRV_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("dwepc_node"),
        type_: (NGX_HTTP_UPS_CONF | NGX_CONF_1MORE) as _,
        set: Some(directives::cmd_node),
        conf: NGX_HTTP_SRV_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("dwepc_status"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS) as _,
        set: Some(status::cmd_status),
        conf: NGX_HTTP_LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

/// The module, exported for `load_module`.
#[used]
#[no_mangle]
pub static mut ngx_http_dwepc_module: ngx_module_t = ngx_module_t {
    ctx: &raw const CTX as *mut _,
    // SAFETY: taking the address of a static; nginx only reads it.
    commands: unsafe { &raw mut COMMANDS[0] },
    type_: NGX_HTTP_MODULE as _,
    init_process: Some(worker::init_process),
    exit_process: Some(worker::exit_process),
    ..ngx_module_t::default()
};

ngx::ngx_modules!(ngx_http_dwepc_module);
