//! The upstream balancer, modelled on nginx's least_conn: round robin's
//! peer structures and per-request data, our own `get` and `free` (which
//! counts the end of the request, then calls round robin's).
//!
//! Per request, shares mode (the default): among eligible peers below their
//! in-flight limit, the least `in-flight / share` (two atomic loads each),
//! ties by this worker's smooth weighted round robin on the shares; one
//! atomic add, and one more when the request ends. Paper mode: `L_i =
//! target_i - total_i`, argmax with random tie-break. No lock of our own,
//! no allocation, no system call. nginx's peer lock is taken exactly as
//! least_conn takes it (only when the upstream has a `zone`). Without
//! usable counters the request goes to nginx's own weighted round robin,
//! and is still counted (sent and done, so in-flight counts stay right).

use core::ffi::c_void;
use core::ptr;
use std::cell::Cell;

use dwepc_core::algo::{Argmax, Rng};
use dwepc_core::conf::{Mode, Pick};
use dwepc_core::shared::{names_hash, Shared};
use dwepc_core::shares::{LeastShare, SmoothTie};
use ngx::ffi::{
    ngx_conf_t, ngx_http_request_t, ngx_http_upstream_free_round_robin_peer,
    ngx_http_upstream_get_round_robin_peer, ngx_http_upstream_init_round_robin_peer,
    ngx_http_upstream_rr_peer_data_t, ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_palloc, ngx_peer_connection_t, ngx_rwlock_rlock,
    ngx_rwlock_unlock, ngx_rwlock_wlock, ngx_time, ngx_uint_t, NGX_BUSY, NGX_ERROR, NGX_LOG_EMERG,
    NGX_OK, NGX_PEER_FAILED,
};

use crate::config::{PeerMeta, SrvConf, UpstreamState};
use crate::util::{cached_now_ms, guard, log, ngx_str};

/// Per-request data: round robin's first, so its free/set_session/
/// save_session (and keepalive's wrappers) work on it unchanged.
#[repr(C)]
struct PeerData {
    rrp: ngx_http_upstream_rr_peer_data_t,
    ups: *const UpstreamState,
    /// The primary peer list at init time (rrp.peers moves to the backup
    /// list when primaries are exhausted).
    primary: *mut ngx_http_upstream_rr_peers_t,
    /// Shared slot counted for the peer in use ([`NO_SLOT`]: none), and
    /// the zone's epoch when it was counted; `free` ends it.
    slot: usize,
    epoch: u64,
}

const NO_SLOT: usize = usize::MAX;

impl PeerData {
    /// Counts a request sent to `slot` and remembers it for `free`.
    #[inline]
    fn sent(&mut self, shared: Shared<'_>, slot: usize) {
        if slot < shared.len() {
            shared.count(slot);
            self.slot = slot;
            self.epoch = shared.epoch();
        }
    }
}

/// Our upstream state from the upstream's srv_conf array.
///
/// # Safety
/// `us` must be a valid upstream configuration.
unsafe fn state_of(us: *mut ngx_http_upstream_srv_conf_t) -> *mut UpstreamState {
    // SAFETY: every upstream has a srv_conf slot for every http module;
    // ours holds a SrvConf.
    unsafe {
        let sc = *(*us).srv_conf.add(crate::ngx_http_dwepc_module.ctx_index) as *mut SrvConf;
        if sc.is_null() {
            ptr::null_mut()
        } else {
            (*sc).ups
        }
    }
}

fn peers_meta(peers: *mut ngx_http_upstream_rr_peers_t, backup: bool, out: &mut Vec<PeerMeta>) {
    if peers.is_null() {
        return;
    }
    // SAFETY: at init_upstream time the round-robin peer list is a valid,
    // NULL-terminated list in the configuration pool.
    unsafe {
        let mut p = (*peers).peer;
        while !p.is_null() {
            let ip = sockaddr_ip((*p).sockaddr);
            out.push(PeerMeta {
                name: ngx_str(&(*p).name),
                server: ngx_str(&(*p).server),
                backup,
                weight: (*p).weight as f64,
                ip,
                node: None,
            });
            p = (*p).next;
        }
    }
}

fn sockaddr_ip(sa: *const ngx::ffi::sockaddr) -> Option<std::net::IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: sa points at a sockaddr of the family it declares, laid out
    // as the C library's sockaddr_in / sockaddr_in6 for that family.
    unsafe {
        match libc::c_int::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = sa as *const libc::sockaddr_in;
                Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                    u32::from_be((*sin).sin_addr.s_addr),
                )))
            }
            libc::AF_INET6 => {
                let sin6 = sa as *const libc::sockaddr_in6;
                Some(std::net::IpAddr::V6(std::net::Ipv6Addr::from(
                    (*sin6).sin6_addr.s6_addr,
                )))
            }
            _ => None,
        }
    }
}

/// `peer.init_upstream`: round robin, then our zone and peer metadata.
pub unsafe extern "C" fn init_upstream(
    cf: *mut ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard("init_upstream", NGX_ERROR as ngx_int_t, || {
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
    // SAFETY: see init_upstream.
    unsafe {
        let init_rr = crate::config::round_robin_init().unwrap();
        if init_rr(cf, us) != NGX_OK as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
        let ups = state_of(us);
        if ups.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        let ups = &mut *ups;
        let peers = (*us).peer.data as *mut ngx_http_upstream_rr_peers_t;
        let mut meta = Vec::new();
        peers_meta(peers, false, &mut meta);
        let n_primary = meta.len();
        if !peers.is_null() {
            peers_meta((*peers).next, true, &mut meta);
        }
        // dwepc_node lines must name a server of this upstream
        for (k, node) in ups.nodes.iter().enumerate() {
            let mut found = false;
            for p in meta.iter_mut() {
                if p.name == node.conf.address || p.server == node.conf.address {
                    p.node = Some(k);
                    found = true;
                }
            }
            if !found {
                log(
                    NGX_LOG_EMERG,
                    (*cf).log,
                    &format!(
                        "\"dwepc_node {}\" matches no server of upstream \"{}\" in {}",
                        node.conf.address,
                        ups.name,
                        node.origin.at()
                    ),
                );
                return NGX_ERROR as ngx_int_t;
            }
        }
        let hash = names_hash(meta.iter().map(|p| p.name.as_str()));
        let zone = crate::zone::add(cf, &ups.name, meta.len(), hash);
        if zone.is_null() {
            log(
                NGX_LOG_EMERG,
                (*cf).log,
                &format!(
                    "cannot add shared memory zone for dwepc upstream \"{}\" in {}",
                    ups.name,
                    ups.origin.at()
                ),
            );
            return NGX_ERROR as ngx_int_t;
        }
        ups.zone = zone;
        ups.tie_weights = vec![Cell::new(0); meta.len()];
        ups.peers = meta;
        ups.n_primary = n_primary;
        (*us).peer.init = Some(init_peer);
        NGX_OK as ngx_int_t
    }
}

/// `peer.init`: round robin's per-request data inside ours.
unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    guard("init_peer", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes a live request with an upstream and its
        // upstream configuration; PeerData starts with the round-robin data,
        // which the round-robin init fills in place because peer.data is set.
        unsafe {
            let u = (*r).upstream;
            let dp = ngx_palloc((*r).pool, core::mem::size_of::<PeerData>()) as *mut PeerData;
            if dp.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*u).peer.data = dp as *mut c_void;
            if ngx_http_upstream_init_round_robin_peer(r, us) != NGX_OK as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
            (*dp).ups = state_of(us);
            (*dp).primary = (*dp).rrp.peers;
            (*dp).slot = NO_SLOT;
            (*dp).epoch = 0;
            (*u).peer.get = Some(get_peer);
            (*u).peer.free = Some(free_peer);
            NGX_OK as ngx_int_t
        }
    })
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

fn with_rng<T>(f: impl FnOnce(&mut Rng) -> T) -> T {
    RNG.with(|c| {
        let mut seed = c.get();
        if seed == 0 {
            seed = (std::process::id() as u64) << 32 ^ dwepc_core::collector::now_ms();
        }
        let mut rng = Rng::new(seed);
        let out = f(&mut rng);
        c.set(rng.next_u64() | 1);
        out
    })
}

/// `peer.get`.
unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    guard("get_peer", NGX_ERROR as ngx_int_t, || {
        // SAFETY: nginx passes the peer connection and the data set up by
        // init_peer (a PeerData, possibly via keepalive's wrapper).
        unsafe { get_peer_inner(&mut *pc, &mut *(data as *mut PeerData)) }
    })
}

/// `peer.free`: ends the request's count on its peer, then round robin's
/// free (failure accounting, keepalive's wrapper calls us the same way).
unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    guard("free_peer", (), || {
        // SAFETY: nginx passes the peer connection and the data set up by
        // init_peer; round robin's free expects that same data.
        unsafe {
            let dp = &mut *(data as *mut PeerData);
            if dp.slot != NO_SLOT {
                if let Some(shared) = dp.ups.as_ref().and_then(|u| u.shared()) {
                    if state & NGX_PEER_FAILED as ngx_uint_t != 0 {
                        shared.failed(dp.slot, dp.epoch);
                    }
                    shared.finish(dp.slot, dp.epoch);
                }
                dp.slot = NO_SLOT;
            }
            ngx_http_upstream_free_round_robin_peer(pc, data, state);
        }
    })
}

/// nginx's write lock on a peer list (`ngx_http_upstream_rr_peers_wlock`:
/// taken only when the list is shared through a `zone`), released when the
/// guard is dropped, so that no exit path (an early return, a panic caught
/// by [`guard`]) leaves it held.
struct PeersLock {
    peers: *mut ngx_http_upstream_rr_peers_t,
}

impl PeersLock {
    /// # Safety
    /// `peers` is a live round-robin peer list that outlives the guard, not
    /// already locked by this process.
    #[inline]
    unsafe fn write(peers: *mut ngx_http_upstream_rr_peers_t) -> PeersLock {
        // SAFETY: as ngx_http_upstream_rr_peers_wlock: lock only when shared.
        unsafe {
            if !(*peers).shpool.is_null() {
                ngx_rwlock_wlock(&mut (*peers).rwlock);
            }
        }
        PeersLock { peers }
    }

    /// The read lock (`ngx_http_upstream_rr_peers_rlock`), to walk the list.
    ///
    /// # Safety
    /// As [`PeersLock::write`].
    #[inline]
    unsafe fn read(peers: *mut ngx_http_upstream_rr_peers_t) -> PeersLock {
        // SAFETY: as ngx_http_upstream_rr_peers_rlock: lock only when shared.
        unsafe {
            if !(*peers).shpool.is_null() {
                ngx_rwlock_rlock(&mut (*peers).rwlock);
            }
        }
        PeersLock { peers }
    }
}

impl Drop for PeersLock {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: pairs with `write` on the same live list (the guard does
        // not outlive it, per `write`'s contract).
        unsafe {
            if !(*self.peers).shpool.is_null() {
                ngx_rwlock_unlock(&mut (*self.peers).rwlock);
            }
        }
    }
}

/// Calls `f(i, peer, &*peer)` for every peer of `peers` (in list order, `i`
/// its position) that `eligible` accepts.
///
/// # Safety
/// `peers` is a live round-robin peer list, locked as nginx requires.
#[inline]
unsafe fn each_eligible(
    peers: *mut ngx_http_upstream_rr_peers_t,
    eligible: &impl Fn(usize, &ngx_http_upstream_rr_peer_t) -> bool,
    mut f: impl FnMut(usize, *mut ngx_http_upstream_rr_peer_t, &ngx_http_upstream_rr_peer_t),
) {
    // SAFETY: the caller holds the list; every `next` is a live peer or NULL.
    unsafe {
        let mut peer = (*peers).peer;
        let mut i = 0usize;
        while !peer.is_null() {
            let p = &*peer;
            if eligible(i, p) {
                f(i, peer, p);
            }
            peer = p.next;
            i += 1;
        }
    }
}

/// Slot of the first peer of `peers` in the shared arrays.
#[inline]
fn slot_base(
    dp: &PeerData,
    ups: &UpstreamState,
    peers: *mut ngx_http_upstream_rr_peers_t,
) -> usize {
    if peers == dp.primary {
        0
    } else {
        ups.n_primary
    }
}

/// Round robin's pick, counted in the shared totals.
///
/// # Safety
/// As `get_peer_inner`.
unsafe fn round_robin(
    pc: &mut ngx_peer_connection_t,
    dp: &mut PeerData,
    shared: Option<Shared<'_>>,
) -> ngx_int_t {
    // SAFETY: dp.rrp is valid round-robin data for this request.
    unsafe {
        let rc = ngx_http_upstream_get_round_robin_peer(pc, &mut dp.rrp as *mut _ as *mut c_void);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        let (Some(shared), Some(ups)) = (shared, dp.ups.as_ref()) else {
            return rc;
        };
        let peers = dp.rrp.peers;
        let base = slot_base(dp, ups, peers);
        // round robin has released the list: walk it under the read lock
        // (with `zone` + `resolve` other workers relink it); a peer removed
        // meanwhile is not found and not counted, and its `free` counts
        // nothing either
        let slot = {
            let _lock = PeersLock::read(peers);
            let mut p = (*peers).peer;
            let mut i = 0;
            loop {
                if p.is_null() {
                    break None;
                }
                if p == dp.rrp.current {
                    break Some(base + i);
                }
                p = (*p).next;
                i += 1;
            }
        };
        if let Some(slot) = slot {
            dp.sent(shared, slot);
        }
        rc
    }
}

/// # Safety
/// `pc` and `dp` belong to a live request set up by `init_peer`.
unsafe fn get_peer_inner(pc: &mut ngx_peer_connection_t, dp: &mut PeerData) -> ngx_int_t {
    // SAFETY: pc and dp are live for this request; the peer list is read
    // under nginx's peer lock as least_conn does.
    unsafe {
        let Some(ups) = dp.ups.as_ref() else {
            return ngx_http_upstream_get_round_robin_peer(
                pc,
                &mut dp.rrp as *mut _ as *mut c_void,
            );
        };
        let peers = dp.rrp.peers;
        let shared = match ups.shared() {
            Some(s) if (*peers).single() == 0 && s.usable(cached_now_ms()) => s,
            other => return round_robin(pc, dp, other),
        };

        pc.set_cached(0);
        pc.connection = ptr::null_mut();
        let now = ngx_time();

        let mut lock = PeersLock::write(peers);
        crate::util::fault("get_peer_locked");

        #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
        if !(*peers).config.is_null() && dp.rrp.config != *(*peers).config {
            drop(lock);
            pc.name = (*peers).name;
            return NGX_BUSY as ngx_int_t;
        }

        let base = slot_base(dp, ups, peers);
        let limit = if peers == dp.primary {
            ups.n_primary
        } else {
            ups.peers.len() - ups.n_primary
        };
        if (*peers).number != limit {
            // the list changed under us (e.g. re-resolved servers): the
            // slots no longer match, let round robin decide
            drop(lock);
            return round_robin(pc, dp, Some(shared));
        }

        let bits = usize::BITS as usize;
        let eligible = |i: usize, p: &ngx_http_upstream_rr_peer_t| -> bool {
            let tried = *dp.rrp.tried.add(i / bits) & (1usize << (i % bits)) != 0;
            let failed =
                p.max_fails != 0 && p.fails >= p.max_fails && now - p.checked <= p.fail_timeout;
            let full = p.max_conns != 0 && p.conns >= p.max_conns;
            !tried && p.down == 0 && !failed && !full
        };
        let mut best: *mut ngx_http_upstream_rr_peer_t = ptr::null_mut();
        let mut chosen: Option<usize>;
        let mut guard_full = false;
        if ups.conf.mode == Mode::Shares {
            // least in-flight per share, below the in-flight limit
            let mut ls = match ups.conf.pick {
                Pick::LeastConn => LeastShare::new(),
                Pick::ExpectedDelay => LeastShare::expected_delay(),
            };
            each_eligible(peers, &eligible, |i, peer, _| {
                let (in_flight, share, limit) = shared.pick_view(base + i);
                if ls.offer(i, in_flight, share, limit) {
                    best = peer;
                }
            });
            chosen = ls.best();
            guard_full = chosen.is_none() && ls.limited;
            if ls.tied() {
                // ties: smooth weighted round robin on the shares, with
                // this worker's current weights
                let mut tie = SmoothTie::default();
                let mut tie_peer: *mut ngx_http_upstream_rr_peer_t = ptr::null_mut();
                // the first of the tied is the best: none before it is tied
                let first = chosen.unwrap_or(0);
                each_eligible(peers, &eligible, |i, peer, _| {
                    if i < first {
                        return;
                    }
                    let (in_flight, share, limit) = shared.pick_view(base + i);
                    if !ls.is_tied(in_flight, share, limit) {
                        return;
                    }
                    if let Some(cell) = ups.tie_weights.get(base + i) {
                        cell.set(tie.offer(i, share, cell.get()));
                        if tie.leader() == Some(i) {
                            tie_peer = peer;
                        }
                    }
                });
                if let Some((w, current)) = tie.winner() {
                    if let Some(cell) = ups.tie_weights.get(base + w) {
                        cell.set(current);
                    }
                    chosen = Some(w);
                    best = tie_peer;
                }
            }
        } else {
            let wlc = ups.conf.mode == Mode::Wlc;
            let mut am = Argmax::default();
            with_rng(|rng| {
                each_eligible(peers, &eligible, |i, peer, p| {
                    let before = am.best();
                    let score = if wlc {
                        // least conns/weight; weight 0 never wins unless
                        // every candidate has weight 0
                        let w = shared.allocation(base + i);
                        if w > 0.0 {
                            -(p.conns as f64) / w
                        } else {
                            f64::NEG_INFINITY
                        }
                    } else {
                        shared.remaining(base + i)
                    };
                    am.offer(i, score, rng);
                    if am.best() != before {
                        best = peer;
                    }
                });
            });
            chosen = am.best();
        }

        let Some(i) = chosen else {
            // no primary left: the backup servers, as least_conn does
            // (also when every primary is at its in-flight limit, as with
            // max_conns)
            if !(*peers).next.is_null() {
                dp.rrp.peers = (*peers).next;
                let n = (*dp.rrp.peers).number.div_ceil(bits);
                for k in 0..n {
                    *dp.rrp.tried.add(k) = 0;
                }
                drop(lock);
                let rc = get_peer_inner(pc, dp);
                if rc != NGX_BUSY as ngx_int_t {
                    return rc;
                }
                lock = PeersLock::write(peers);
            } else if guard_full {
                // every peer is at its in-flight limit: nginx answers now
                // (502, as when every server is at max_conns) rather than
                // queue the request everywhere
                shared.guard_reject();
            }
            drop(lock);
            pc.name = (*peers).name;
            return NGX_BUSY as ngx_int_t;
        };

        let b = &mut *best;
        if now - b.checked > b.fail_timeout {
            b.checked = now;
        }
        pc.sockaddr = b.sockaddr;
        pc.socklen = b.socklen;
        pc.name = &mut b.name;
        b.conns += 1;
        dp.rrp.current = best;
        // ngx_http_upstream_rr_peer_ref (round robin's free unrefs)
        #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
        {
            b.refs += 1;
        }
        *dp.rrp.tried.add(i / bits) |= 1usize << (i % bits);
        drop(lock);
        dp.sent(shared, base + i);
        NGX_OK as ngx_int_t
    }
}
