//! The upstream balancer, modelled on nginx's least_conn: round robin's
//! peer structures and per-request data, our own `get` ([`get`]) and
//! `free` (which counts the end of the request, then calls round robin's);
//! [`list`] reads nginx's peer lists.
//!
//! Per request: among eligible peers, the mode's comparison on what its
//! policy published in the zone (shares mode, the default: the least
//! `in-flight / share` below each peer's in-flight limit, two atomic loads
//! each, ties by this worker's smooth weighted round robin on the shares;
//! paper mode: the largest `L_i = target_i - total_i`, random ties); one
//! atomic add, and one more when the request ends. No lock of our own, no
//! allocation, no system call. nginx's peer lock is taken exactly as
//! least_conn takes it (only when the upstream has a `zone`). Without
//! usable counters the request goes to nginx's own weighted round robin,
//! and is still counted (sent and done, so in-flight counts stay right).

mod draws;
pub use draws::DrawTable;
mod get;
mod list;

use core::ffi::c_void;
use core::ptr;

use dwepc_core::conf::match_nodes;
use dwepc_core::zone::{names_hash, UpstreamZone};
use ngx::ffi::{
    ngx_conf_t, ngx_http_request_t, ngx_http_upstream_free_round_robin_peer,
    ngx_http_upstream_init_round_robin, ngx_http_upstream_init_round_robin_peer,
    ngx_http_upstream_rr_peer_data_t, ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t,
    ngx_int_t, ngx_palloc, ngx_peer_connection_t, ngx_pool_cleanup_t, ngx_uint_t, NGX_ERROR,
    NGX_LOG_EMERG, NGX_OK, NGX_PEER_FAILED,
};

use crate::module::{upstream_state, Dwepc};
use crate::state::{PeerMeta, Servers, UpstreamState};
use crate::util::{cached_now_ms, catch_panic, log};
use dwepc_core::policy::decision::Decisions;
use dwepc_core::policy::latency::{DEFAULT_TAU_MS, PRIOR_MS};
use list::peers_meta;
use ngx::http::{HttpModule, Request};

/// Per-request data: round robin's first, so its free/set_session/
/// save_session (and keepalive's wrappers) work on it unchanged.
#[repr(C)]
pub struct PeerData {
    rrp: ngx_http_upstream_rr_peer_data_t,
    ups: *const UpstreamState,
    /// The primary peer list at init time (rrp.peers moves to the backup
    /// list when primaries are exhausted).
    primary: *mut ngx_http_upstream_rr_peers_t,
    /// Shared slot counted for the peer in use ([`NO_SLOT`]: none), and
    /// the zone's epoch when it was counted; `free` ends it.
    slot: usize,
    epoch: u64,
    /// When the request was sent to that peer (nginx's cached clock, ms),
    /// for its response time.
    sent_ms: u64,
    /// That peer had failed `max_fails` times: this request tries it
    /// again, and its answer begins the peer's slow start.
    probe: bool,
    /// What decided each pick, for the access log and the overload
    /// guard's answer (found through the request's module context, or
    /// after an internal redirect through [`anchor`]).
    decisions: Decisions,
    /// The request this data belongs to.
    req: *const ngx_http_request_t,
    /// Its entry in the pool's cleanup list ([`anchor`]), held here so
    /// that marking the request costs no allocation of its own.
    anchor: ngx_pool_cleanup_t,
}

const NO_SLOT: usize = usize::MAX;

impl PeerData {
    /// Counts a request sent to `slot` and remembers it for `free`.
    #[inline]
    fn sent(&mut self, zone: UpstreamZone<'_>, slot: usize) {
        if slot < zone.len() {
            zone.count(slot);
            self.slot = slot;
            self.epoch = zone.epoch();
            self.sent_ms = cached_now_ms();
        }
    }

    /// What decided each of the request's picks.
    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// The upstream's answer when the guard turns the request away: its
    /// status and `Retry-After` (s, 0: none).
    pub fn overload_answer(&self) -> Option<(u16, u32)> {
        // SAFETY: NULL or the configuration's upstream state, which
        // outlives the request.
        let ups = unsafe { self.ups.as_ref() }?;
        let c = &ups.parsed.conf;
        Some((c.overload_status, c.retry_after_s))
    }

    /// The data of request `r`'s last `init_peer`, and whether it was
    /// found after an internal redirect (`error_page`), which clears
    /// nginx's module contexts (None: the request used no dwepc
    /// upstream).
    pub fn of_request(r: &Request) -> Option<(&PeerData, bool)> {
        if let Some(dp) = r.get_module_ctx::<PeerData>(Dwepc::module()) {
            return Some((dp, false));
        }
        let raw: *const ngx_http_request_t = r.as_ref();
        // SAFETY: raw is the live request r refers to.
        if unsafe { (*raw).internal() } == 0 {
            return None;
        }
        // SAFETY: the request's pool is live, and its cleanup list is
        // nginx's (each entry live until the pool is destroyed).
        let mut c = unsafe { (*(*raw).pool).cleanup };
        while !c.is_null() {
            // SAFETY: c is a live entry of the list (the loop's start).
            let (handler, data, next) = unsafe { ((*c).handler, (*c).data, (*c).next) };
            let ours = handler.is_some_and(|h| {
                core::ptr::fn_addr_eq(h, anchor as unsafe extern "C" fn(*mut c_void))
            });
            if ours {
                // SAFETY: an anchor's data is the PeerData init_peer
                // allocated in this pool, alive as long as the pool.
                let dp = unsafe { &*(data as *const PeerData) };
                if dp.req == raw {
                    return Some((dp, true));
                }
            }
            c = next;
        }
        None
    }

    /// Round robin's data, as its functions take it.
    #[inline]
    fn rrp_data(&mut self) -> *mut c_void {
        &mut self.rrp as *mut _ as *mut c_void
    }
}

/// Our upstream state from the upstream's configuration (NULL: none).
///
/// # Safety
/// `us` must be a valid upstream configuration.
unsafe fn state_of(us: *mut ngx_http_upstream_srv_conf_t) -> *const UpstreamState {
    // SAFETY: forwarded from the caller.
    unsafe { us.as_ref() }
        .and_then(upstream_state)
        .map_or(ptr::null(), |u| u as *const UpstreamState)
}

/// `peer.init_upstream`: round robin, then our zone and peer metadata.
pub unsafe extern "C" fn init_upstream(
    cf: *mut ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    catch_panic("init_upstream", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the live configuration and this upstream.
        unsafe { init_upstream_inner(cf, us) }
    })
}

/// # Safety
/// `cf` and `us` are the live configuration and upstream nginx passes.
unsafe fn init_upstream_inner(
    cf: *mut ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    // SAFETY: cf and us are live (the caller's contract).
    if unsafe { ngx_http_upstream_init_round_robin(cf, us) } != NGX_OK as ngx_int_t {
        return NGX_ERROR as ngx_int_t;
    }
    // SAFETY: us is live; its state is NULL or ours, in the same pool.
    let Some(ups) = (unsafe { state_of(us).as_ref() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    // SAFETY: round robin's init set peer.data to its primary peer list.
    let peers = unsafe { (*us).peer.data } as *mut ngx_http_upstream_rr_peers_t;
    let mut meta = Vec::new();
    peers_meta(peers, false, &mut meta);
    let n_primary = meta.len();
    if !peers.is_null() {
        // SAFETY: a live list; its backups are NULL or a live list.
        peers_meta(unsafe { (*peers).next }, true, &mut meta);
    }
    let name = &ups.parsed.name;
    let failure = match with_node_lines(ups, &mut meta) {
        Ok(()) => {
            let hash = names_hash(meta.iter().map(|p| p.name.as_str()));
            // SAFETY: cf is the live configuration.
            let zone = unsafe { crate::zone::add(cf, name, meta.len(), hash) };
            if zone.is_null() {
                format!(
                    "cannot add shared memory zone for dwepc upstream \"{name}\" in {}",
                    ups.parsed.origin.at()
                )
            } else if ups.set_servers(Servers::new(meta, n_primary, zone)) {
                // SAFETY: us is live; nginx calls peer.init per request.
                unsafe { (*us).peer.init = Some(init_peer) };
                return NGX_OK as ngx_int_t;
            } else {
                return NGX_ERROR as ngx_int_t;
            }
        }
        Err(msg) => msg,
    };
    // SAFETY: cf->log is the configuration's log.
    unsafe { log(NGX_LOG_EMERG, (*cf).log, &failure) };
    NGX_ERROR as ngx_int_t
}

/// Gives each slot the `dwepc_node` line that applies to it; a line that
/// names no server of the upstream is an error, said with where it was
/// written.
fn with_node_lines(ups: &UpstreamState, meta: &mut [PeerMeta]) -> Result<(), String> {
    let nodes: Vec<&str> = ups
        .parsed
        .nodes
        .iter()
        .map(|n| n.conf.address.as_str())
        .collect();
    let servers: Vec<(&str, &str)> = meta
        .iter()
        .map(|p| (p.name.as_str(), p.server.as_str()))
        .collect();
    let matched = match_nodes(&nodes, &servers).map_err(|k| {
        let node = &ups.parsed.nodes[k];
        format!(
            "\"dwepc_node {}\" matches no server of upstream \"{}\" in {}",
            node.conf.address,
            ups.parsed.name,
            node.origin.at()
        )
    })?;
    for (p, node) in meta.iter_mut().zip(matched) {
        p.node = node;
    }
    Ok(())
}

/// The mark of a request's PeerData in its pool's cleanup list: an
/// internal redirect clears the module context, and the access log's
/// variables and the guard's answer still find the decisions through it,
/// as nginx's realip module finds its context. Run when the pool is
/// destroyed (before its memory is freed), it forgets the request, so the
/// function has a body of its own and an address no other shares.
unsafe extern "C" fn anchor(data: *mut c_void) {
    // SAFETY: data is the PeerData init_peer allocated in the pool being
    // destroyed; nginx runs the cleanups before freeing the pool's memory.
    if let Some(dp) = unsafe { (data as *mut PeerData).as_mut() } {
        dp.req = ptr::null();
    }
}

/// `peer.init`: round robin's per-request data inside ours.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    catch_panic("init_peer", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes a live request with an upstream.
        let (u, pool) = unsafe { ((*r).upstream, (*r).pool) };
        // SAFETY: the request's pool is live; the data lives as long.
        let dp = unsafe { ngx_palloc(pool, core::mem::size_of::<PeerData>()) } as *mut PeerData;
        if dp.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        // SAFETY: u is the request's upstream. PeerData starts with the
        // round-robin data, which round robin's init fills in place
        // because peer.data is set.
        unsafe {
            (*u).peer.data = dp as *mut c_void;
            if ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
        }
        // SAFETY: dp is ours (allocated above, its round-robin part filled
        // in); us is the request's upstream configuration.
        unsafe {
            (*dp).ups = state_of(us);
            (*dp).primary = (*dp).rrp.peers;
            (*dp).slot = NO_SLOT;
            (*dp).epoch = 0;
            (*dp).sent_ms = 0;
            (*dp).probe = false;
            (*dp).decisions = Decisions::default();
            (*dp).req = r;
            (*u).peer.get = Some(get_peer);
            (*u).peer.free = Some(free_peer);
            // the access log's variables and the guard's answer find the
            // decisions through the module context (cleared by nginx at
            // an internal redirect, with everything else of the request)
            Request::from_ngx_http_request(r).set_module_ctx(dp as *mut c_void, Dwepc::module());
        }
        // SAFETY: dp and the request's pool are live and this worker's
        // alone; the entry is linked at the list's head as
        // ngx_pool_cleanup_add links one, and lives in dp, which the pool
        // frees only after running its cleanups.
        unsafe {
            (*dp).anchor = ngx_pool_cleanup_t {
                handler: Some(anchor),
                data: dp as *mut c_void,
                next: (*pool).cleanup,
            };
            (*pool).cleanup = &raw mut (*dp).anchor;
        }
        NGX_OK as ngx_int_t
    })
}

/// `peer.get`.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    catch_panic("get_peer", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the peer connection and the data set up by
        // init_peer (a PeerData, possibly via keepalive's wrapper).
        unsafe { get::get_peer_inner(&mut *pc, &mut *(data as *mut PeerData)) }
    })
}

/// `peer.free`: ends the request's count on its peer, then round robin's
/// free (failure accounting, keepalive's wrapper calls us the same way).
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    catch_panic("free_peer", (), || {
        // SAFETY: data is the PeerData init_peer set up for this request
        // (passed on unchanged by keepalive's wrapper).
        let dp = unsafe { &mut *(data as *mut PeerData) };
        if dp.slot != NO_SLOT {
            // SAFETY: dp.ups is NULL or the configuration's upstream state,
            // which outlives the request.
            let ups = unsafe { dp.ups.as_ref() };
            if let Some(zone) = ups.and_then(crate::zone::of) {
                if state & NGX_PEER_FAILED as ngx_uint_t != 0 {
                    zone.failed(dp.slot, dp.epoch);
                } else if dp.probe && zone.epoch() == dp.epoch {
                    zone.start_ramp(dp.slot, cached_now_ms());
                }
                zone.finish(dp.slot, dp.epoch);
            }
            if let Some(ups) = ups.filter(|u| u.parsed.comparison.uses_latency()) {
                observe_latency(ups, dp.slot, dp.sent_ms);
            }
            dp.slot = NO_SLOT;
            dp.probe = false;
        }
        // SAFETY: round robin's free takes the same connection and data.
        unsafe { ngx_http_upstream_free_round_robin_peer(pc, data, state) };
    })
}

/// Takes the response time of a request sent to `slot` at `sent_ms` into
/// this worker's estimate of that slot (slot numbers are the zone's, the
/// same in every worker).
fn observe_latency(ups: &UpstreamState, slot: usize, sent_ms: u64) {
    let Some(cell) = ups.servers().and_then(|s| s.latency.get(slot)) else {
        return;
    };
    let now = cached_now_ms();
    let mut e = cell.get();
    e.observe(
        now.saturating_sub(sent_ms) as f64,
        now,
        DEFAULT_TAU_MS,
        PRIOR_MS,
    );
    cell.set(e);
}
