//! Shared-memory zones of `AtomicU64` words: one per dwepc upstream, named
//! `dwepc:<upstream>` (the words of `dwepc_core::zone::UpstreamZone`), and one
//! per instance, `dwepc_lease`, for the poller lease. nginx initialises
//! every zone as a slab pool; the words are one slab allocation. A reload
//! that keeps an upstream's peers keeps its zone (same name and size) and
//! its state.

use core::ffi::c_void;
use core::ptr;
use std::sync::atomic::AtomicU64;

use dwepc_core::zone::{self, Lease, UpstreamZone};
use ngx::ffi::{
    ngx_conf_t, ngx_int_t, ngx_shared_memory_add, ngx_shm_zone_t, ngx_slab_alloc, ngx_slab_pool_t,
    ngx_str_t, NGX_ERROR, NGX_OK,
};

use ngx::core::Pool;
use ngx::http::HttpModule;

use crate::module::Dwepc;
use crate::state::UpstreamState;
use crate::util::catch_panic;

/// What a zone's init callback needs.
struct ZoneCtx {
    /// Number of words.
    len: usize,
    /// Peers (upstream zones) or 0 (lease zone).
    n: usize,
    hash: u64,
    words: *mut AtomicU64,
}

/// Adds the zone for an upstream of `n` peers. Returns NULL on failure.
///
/// # Safety
/// `cf` must be the live configuration.
pub unsafe fn add(cf: *mut ngx_conf_t, upstream: &str, n: usize, hash: u64) -> *mut ngx_shm_zone_t {
    // SAFETY: forwarded from the caller.
    unsafe { add_words(cf, &format!("dwepc:{upstream}"), zone::words(n), n, hash) }
}

/// Adds the instance-wide lease zone.
///
/// # Safety
/// `cf` must be the live configuration.
pub unsafe fn add_lease(cf: *mut ngx_conf_t) -> *mut ngx_shm_zone_t {
    // SAFETY: forwarded from the caller.
    unsafe { add_words(cf, "dwepc_lease", zone::LEASE_WORDS, 0, 0) }
}

/// # Safety
/// `cf` must be the live configuration.
unsafe fn add_words(
    cf: *mut ngx_conf_t,
    name: &str,
    len: usize,
    n: usize,
    hash: u64,
) -> *mut ngx_shm_zone_t {
    // SAFETY: cf is live; the name is copied into the configuration pool
    // because nginx keeps the ngx_str_t.
    unsafe {
        let Some(mut name) = ngx_str_t::from_bytes((*cf).pool, name.as_bytes()) else {
            return ptr::null_mut();
        };
        // 8 pages for the slab pool's own structures, plus our words and a
        // page of slack; the exact size encodes the word count, so a reload
        // with another peer count gets a fresh zone. ngx_pagesize is set by
        // ngx_os_init before any configuration is read.
        let page = ngx::ffi::ngx_pagesize;
        let size = 8 * page + len * 8 + page;
        let zone = ngx_shared_memory_add(
            cf,
            &mut name,
            size,
            Dwepc::module() as *const _ as *mut c_void,
        );
        if zone.is_null() {
            return ptr::null_mut();
        }
        if !(*zone).data.is_null() {
            // same name declared twice in one configuration cannot happen
            // (upstream names are unique); treat as an error
            return ptr::null_mut();
        }
        let ctx = Pool::from_ngx_pool((*cf).pool).allocate(ZoneCtx {
            len,
            n,
            hash,
            words: ptr::null_mut(),
        });
        if ctx.is_null() {
            return ptr::null_mut();
        }
        (*zone).init = Some(init_zone);
        (*zone).data = ctx as *mut c_void;
        zone
    }
}

unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, data: *mut c_void) -> ngx_int_t {
    catch_panic("init_zone", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx calls this once per cycle with our zone (data set by
        // `add`) and, on reload with the same name and size, the previous
        // cycle's data (a ZoneCtx whose words live in this same mapping).
        unsafe {
            let ctx = &mut *((*zone).data as *mut ZoneCtx);
            if !data.is_null() {
                let old = &*(data as *const ZoneCtx);
                ctx.words = old.words;
            } else {
                let pool = (*zone).shm.addr as *mut ngx_slab_pool_t;
                let p = ngx_slab_alloc(pool, ctx.len * 8) as *mut u8;
                if p.is_null() {
                    return NGX_ERROR as ngx_int_t;
                }
                ptr::write_bytes(p, 0, ctx.len * 8);
                ctx.words = p as *mut AtomicU64;
            }
            if ctx.n != 0 {
                let Some(view) = view(&*zone, ctx.n) else {
                    return NGX_ERROR as ngx_int_t;
                };
                view.init(ctx.hash);
            }
            NGX_OK as ngx_int_t
        }
    })
}

/// The words of a zone (None before the zone is initialised), borrowed
/// for as long as the zone itself (the cycle's life).
fn words(zone: &ngx_shm_zone_t) -> Option<(&[AtomicU64], usize)> {
    // SAFETY: zone->data is our ZoneCtx; once init ran, words points at
    // `len` zero-initialised u64s in shared memory that stays mapped as
    // long as the zone is part of the cycle. AtomicU64 has the layout of
    // u64, and the slab allocation is 8-byte aligned.
    unsafe {
        let ctx = zone.data as *const ZoneCtx;
        if ctx.is_null() || (*ctx).words.is_null() {
            return None;
        }
        Some((
            core::slice::from_raw_parts((*ctx).words, (*ctx).len),
            (*ctx).n,
        ))
    }
}

/// The shared view of an upstream zone of `n` peers.
pub fn view(zone: &ngx_shm_zone_t, n: usize) -> Option<UpstreamZone<'_>> {
    let (w, zn) = words(zone)?;
    if zn != n {
        return None;
    }
    UpstreamZone::new(w, n)
}

/// The lease of the lease zone.
pub fn lease(zone: &ngx_shm_zone_t) -> Option<Lease<'_>> {
    Lease::new(words(zone)?.0)
}

/// The shared view of an upstream's zone, once `init_upstream` added it.
pub fn of(ups: &UpstreamState) -> Option<UpstreamZone<'_>> {
    let servers = ups.servers()?;
    // SAFETY: `zone` is the zone added for this upstream while parsing the
    // configuration its state belongs to: both live in that cycle (its
    // pool and its shared memory list).
    let zone = unsafe { servers.zone.as_ref() }?;
    view(zone, servers.peers.len())
}
