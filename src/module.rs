//! The module's identity for configuration lookups. As nginx's C modules
//! declare `extern ngx_module_t ngx_http_xxx_module;` where they need it,
//! this file declares the module object that `lib.rs` defines (with the
//! module table, which refers to every handler), so that the lookups do not
//! depend on the table and `src/` has one direction of dependencies.
//!
//! Lookups go through `ngx`'s `HttpModuleConfExt` and return references
//! that live as long as what they were looked up in (configuration, cycle,
//! request, upstream), not `'static`.

use ngx::ffi::{ngx_conf_t, ngx_http_upstream_module, ngx_http_upstream_srv_conf_t, ngx_module_t};
use ngx::http::{HttpModule, HttpModuleConfExt};

use crate::state::{MainState, SrvConf, UpstreamState};

unsafe extern "C" {
    /// Defined, and exported for `load_module`, in `lib.rs`.
    static ngx_http_dwepc_module: ngx_module_t;
}

/// The module's build: the crate's version and the commit it was built
/// from (`build.rs`), shown on the status page so that an operator sees
/// which build answers (a new `.so` needs a restart, not a reload).
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("DWEPC_COMMIT"));

/// This module.
pub struct Dwepc;

impl HttpModule for Dwepc {
    fn module() -> &'static ngx_module_t {
        // SAFETY: a static of this library; nginx writes its indexes while
        // loading modules, before any lookup.
        unsafe { &*core::ptr::addr_of!(ngx_http_dwepc_module) }
    }
}

/// Our main configuration in a configuration, cycle or request.
pub fn main_conf<C: HttpModuleConfExt>(c: &C) -> Option<&MainState> {
    // SAFETY: our main conf slot holds the MainState of create_main_conf,
    // allocated in the cycle's pool, which outlives `c`.
    unsafe {
        c.http_main_conf_unchecked::<MainState>(Dwepc::module())
            .map(|p| p.as_ref())
    }
}

/// Our main configuration while parsing (directive handlers).
pub fn main_conf_mut(cf: &mut ngx_conf_t) -> Option<&mut MainState> {
    // SAFETY: as main_conf; parsing is single-threaded and no other
    // reference to the main state is alive during a directive handler.
    unsafe {
        cf.http_main_conf_unchecked::<MainState>(Dwepc::module())
            .map(|mut p| p.as_mut())
    }
}

/// The upstream module's configuration of the `upstream {}` being parsed.
///
/// # Safety
/// `cf` must be inside an `upstream {}` block.
pub unsafe fn upstream_conf(cf: &mut ngx_conf_t) -> Option<&mut ngx_http_upstream_srv_conf_t> {
    // SAFETY: inside upstream{} the block's srv conf of the upstream module
    // is its ngx_http_upstream_srv_conf_t, in the configuration pool.
    unsafe {
        cf.http_server_conf_unchecked::<ngx_http_upstream_srv_conf_t>(&*core::ptr::addr_of!(
            ngx_http_upstream_module
        ))
        .map(|mut p| p.as_mut())
    }
}

/// Our `srv_conf` slot in the block being parsed.
///
/// # Safety
/// `cf` must be inside an `upstream {}` or `server {}` block.
pub unsafe fn srv_conf(cf: &mut ngx_conf_t) -> Option<&mut SrvConf> {
    // SAFETY: every server/upstream block has our SrvConf (create_srv_conf).
    unsafe {
        cf.http_server_conf_unchecked::<SrvConf>(Dwepc::module())
            .map(|mut p| p.as_mut())
    }
}

/// The dwepc state of an upstream (None: the upstream does not use dwepc).
pub fn upstream_state(us: &ngx_http_upstream_srv_conf_t) -> Option<&UpstreamState> {
    // SAFETY: an upstream's srv_conf array has our SrvConf; its pointer is
    // NULL or the UpstreamState allocated in the same configuration pool.
    unsafe {
        let sc = us.http_server_conf_unchecked::<SrvConf>(Dwepc::module())?;
        sc.as_ref().ups.as_ref()
    }
}
