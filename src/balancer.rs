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
use std::cell::{Cell, RefMut};
use std::net::SocketAddr;

use dwepc_core::algo::{Argmax, Rng};
use dwepc_core::conf::{match_nodes, Mode, Pick};
use dwepc_core::shared::{names_hash, Shared};
use dwepc_core::shares::{LeastShare, SmoothTie};
use dwepc_core::slots::{ListPeer, SlotKind, SlotMap};
use ngx::ffi::{
    ngx_conf_t, ngx_http_request_t, ngx_http_upstream_free_round_robin_peer,
    ngx_http_upstream_get_round_robin_peer, ngx_http_upstream_init_round_robin,
    ngx_http_upstream_init_round_robin_peer, ngx_http_upstream_rr_peer_data_t,
    ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t, ngx_http_upstream_srv_conf_t,
    ngx_int_t, ngx_palloc, ngx_peer_connection_t, ngx_rwlock_rlock, ngx_rwlock_unlock,
    ngx_rwlock_wlock, ngx_time, ngx_uint_t, NGX_BUSY, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
    NGX_PEER_FAILED,
};

use crate::module::upstream_state;
use crate::state::{PeerMeta, Servers, UpstreamState};
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

/// The slots of one peer list: its peers at configuration (a fixed slot
/// each), then [`dwepc_core::slots::SPARE_SLOTS`] spares per `resolve` server of the list.
fn peers_meta(peers: *mut ngx_http_upstream_rr_peers_t, backup: bool, out: &mut Vec<PeerMeta>) {
    if peers.is_null() {
        return;
    }
    // SAFETY: at init_upstream time the round-robin peer lists (the peers
    // and the `resolve` templates) are valid, NULL-terminated lists in the
    // configuration pool.
    unsafe {
        let mut p = (*peers).peer;
        while !p.is_null() {
            let (name, server) = (ngx_str(&(*p).name), ngx_str(&(*p).server));
            out.push(PeerMeta {
                kind: SlotKind::fixed(&server, &name),
                ip: sockaddr_addr((*p).sockaddr).map(|a| a.ip()),
                name,
                server,
                backup,
                weight: (*p).weight as f64,
                node: None,
            });
            p = (*p).next;
        }
        #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
        {
            let mut t = (*peers).resolve;
            while !t.is_null() {
                let server = ngx_str(&(*t).server);
                for _ in 0..dwepc_core::slots::SPARE_SLOTS {
                    out.push(PeerMeta {
                        kind: SlotKind::Spare {
                            server: server.clone(),
                        },
                        name: server.clone(),
                        server: server.clone(),
                        backup,
                        weight: (*t).weight as f64,
                        ip: None,
                        node: None,
                    });
                }
                t = (*t).next;
            }
        }
    }
}

fn sockaddr_addr(sa: *const ngx::ffi::sockaddr) -> Option<SocketAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: sa points at a sockaddr of the family it declares, laid out
    // as the C library's sockaddr_in / sockaddr_in6 for that family.
    unsafe {
        match libc::c_int::from((*sa).sa_family) {
            libc::AF_INET => {
                let sin = &*(sa as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(sin.sin_port)))
            }
            libc::AF_INET6 => {
                let sin6 = &*(sa as *const libc::sockaddr_in6);
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(sin6.sin6_port)))
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
        if ngx_http_upstream_init_round_robin(cf, us) != NGX_OK as ngx_int_t {
            return NGX_ERROR as ngx_int_t;
        }
        let Some(ups) = state_of(us).as_ref() else {
            return NGX_ERROR as ngx_int_t;
        };
        let name = &ups.parsed.name;
        let peers = (*us).peer.data as *mut ngx_http_upstream_rr_peers_t;
        let mut meta = Vec::new();
        peers_meta(peers, false, &mut meta);
        let n_primary = meta.len();
        if !peers.is_null() {
            peers_meta((*peers).next, true, &mut meta);
        }
        // dwepc_node lines must name a server of this upstream
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
        let matched = match match_nodes(&nodes, &servers) {
            Ok(m) => m,
            Err(k) => {
                let node = &ups.parsed.nodes[k];
                log(
                    NGX_LOG_EMERG,
                    (*cf).log,
                    &format!(
                        "\"dwepc_node {}\" matches no server of upstream \"{name}\" in {}",
                        node.conf.address,
                        node.origin.at()
                    ),
                );
                return NGX_ERROR as ngx_int_t;
            }
        };
        for (p, node) in meta.iter_mut().zip(matched) {
            p.node = node;
        }
        let hash = names_hash(meta.iter().map(|p| p.name.as_str()));
        let zone = crate::zone::add(cf, name, meta.len(), hash);
        if zone.is_null() {
            log(
                NGX_LOG_EMERG,
                (*cf).log,
                &format!(
                    "cannot add shared memory zone for dwepc upstream \"{name}\" in {}",
                    ups.parsed.origin.at()
                ),
            );
            return NGX_ERROR as ngx_int_t;
        }
        if !ups.set_servers(Servers::new(meta, n_primary, zone)) {
            return NGX_ERROR as ngx_int_t;
        }
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

/// This worker's random generator (paper mode's tie-break), resumed where
/// its last pick left it.
fn worker_rng() -> Rng {
    let seed = RNG.with(Cell::get);
    Rng::new(if seed == 0 {
        (std::process::id() as u64) << 32 ^ dwepc_core::collector::now_ms()
    } else {
        seed
    })
}

/// Keeps `rng`'s state for the worker's next pick.
fn keep_rng(rng: &mut Rng) {
    let next = rng.next_u64() | 1;
    RNG.with(|c| c.set(next));
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
                if let Some(shared) = dp.ups.as_ref().and_then(crate::zone::of) {
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
        // SAFETY: forwarded from the caller.
        unsafe { PeersLock::take(peers, ngx_rwlock_wlock) }
    }

    /// The read lock (`ngx_http_upstream_rr_peers_rlock`), to walk the list.
    ///
    /// # Safety
    /// As [`PeersLock::write`].
    #[inline]
    unsafe fn read(peers: *mut ngx_http_upstream_rr_peers_t) -> PeersLock {
        // SAFETY: forwarded from the caller.
        unsafe { PeersLock::take(peers, ngx_rwlock_rlock) }
    }

    /// # Safety
    /// As [`PeersLock::write`].
    #[inline]
    unsafe fn take(
        peers: *mut ngx_http_upstream_rr_peers_t,
        lock: unsafe extern "C" fn(*mut ngx::ffi::ngx_atomic_t),
    ) -> PeersLock {
        // SAFETY: as nginx's peers locks: lock only when the list is shared.
        unsafe {
            if !(*peers).shpool.is_null() {
                lock(&mut (*peers).rwlock);
            }
        }
        PeersLock { peers }
    }
}

impl Drop for PeersLock {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: pairs with `take` on the same live list (the guard does
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

/// Version of a peer list: nginx's `*peers->config`, which changes with
/// every peer `resolve` adds or removes; 0 for a list without `zone`,
/// which never changes.
///
/// # Safety
/// `peers` is a live round-robin peer list, locked as nginx requires.
#[inline]
unsafe fn list_version(peers: *mut ngx_http_upstream_rr_peers_t) -> u64 {
    #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
    // SAFETY: config is NULL or a word in the upstream's shared zone.
    unsafe {
        if !(*peers).config.is_null() {
            return *(*peers).config as u64;
        }
    }
    let _ = peers;
    0
}

/// The slot map of `peers` (the request's primary or backup list),
/// rebuilt first if the list changed since this worker last built it (the
/// one allocation on the request path: once per worker after `resolve`
/// changed the list, not per request); None
/// only if this worker already holds it (never: each use ends before the
/// next, but it is not worth a panic).
///
/// # Safety
/// `peers` is `dp.primary` or its backup list, locked as nginx requires.
unsafe fn slot_map<'u>(
    ups: &'u Servers,
    dp: &PeerData,
    peers: *mut ngx_http_upstream_rr_peers_t,
    shared: Shared<'_>,
) -> Option<RefMut<'u, SlotMap>> {
    let backup = peers != dp.primary;
    let mut map = ups.slot_maps[usize::from(backup)].try_borrow_mut().ok()?;
    // SAFETY: forwarded from the caller.
    let version = unsafe { list_version(peers) };
    if !map.is_current(version) {
        let mut list = Vec::new();
        // SAFETY: the caller holds the list; every `next` is a live peer or
        // NULL.
        unsafe {
            let mut p = (*peers).peer;
            while !p.is_null() {
                list.push((
                    ngx_str(&(*p).server),
                    ngx_str(&(*p).name),
                    sockaddr_addr((*p).sockaddr),
                ));
                p = (*p).next;
            }
        }
        let list: Vec<ListPeer<'_>> = list
            .iter()
            .map(|(server, name, addr)| ListPeer {
                server,
                name,
                addr: *addr,
            })
            .collect();
        let range = if backup {
            ups.n_primary..ups.peers.len()
        } else {
            0..ups.n_primary
        };
        map.rebuild(version, &list, &ups.peers, range, Some(shared));
    }
    Some(map)
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
        let (Some(shared), Some(servers)) = (shared, dp.ups.as_ref().and_then(|u| u.servers()))
        else {
            return rc;
        };
        let peers = dp.rrp.peers;
        // round robin has released the list: find the peer's slot under the
        // read lock (with `zone` + `resolve` other workers relink it); a
        // peer removed meanwhile is not found and not counted, and its
        // `free` counts nothing either
        let slot = {
            let _lock = PeersLock::read(peers);
            slot_map(servers, dp, peers, shared).and_then(|map| {
                let mut p = (*peers).peer;
                let mut i = 0;
                loop {
                    if p.is_null() {
                        break None;
                    }
                    if p == dp.rrp.current {
                        break map.slot(i);
                    }
                    p = (*p).next;
                    i += 1;
                }
            })
        };
        if let Some(slot) = slot {
            dp.sent(shared, slot);
        }
        rc
    }
}

/// How a mode compares peers, on the values the collector publishes.
enum Picker {
    /// Paper mode: the largest remaining allocation `L = target - sent`,
    /// random among equals.
    Remaining(Argmax, Rng),
    /// Shares and wlc mode: the least in-flight per share.
    PerShare(LeastShare),
}

impl Picker {
    /// Offers the peer at position `pos` (slot `slot`); true if it is the
    /// best so far.
    #[inline]
    fn offer(&mut self, pos: usize, slot: usize, shared: Shared<'_>) -> bool {
        match self {
            Picker::Remaining(am, rng) => {
                let before = am.best();
                am.offer(pos, shared.remaining(slot), rng);
                am.best() != before
            }
            Picker::PerShare(ls) => {
                let (in_flight, share, limit) = shared.pick_view(slot);
                ls.offer(pos, in_flight, share, limit)
            }
        }
    }
}

/// What the pick chose: the peer, its position in the list and its slot.
struct Choice {
    peer: *mut ngx_http_upstream_rr_peer_t,
    pos: usize,
    slot: usize,
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
        let (shared, servers) = match (crate::zone::of(ups), ups.servers()) {
            (Some(s), Some(servers)) if (*peers).single() == 0 && s.usable(cached_now_ms()) => {
                (s, servers)
            }
            (other, _) => return round_robin(pc, dp, other),
        };
        let conf = &ups.parsed.conf;

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

        let map = match slot_map(servers, dp, peers, shared) {
            Some(map) if map.complete() => map,
            // a peer without a slot (more addresses than spare slots)
            // cannot be compared with the others: round robin decides
            _ => {
                drop(lock);
                return round_robin(pc, dp, Some(shared));
            }
        };

        let bits = usize::BITS as usize;
        let eligible = |i: usize, p: &ngx_http_upstream_rr_peer_t| -> bool {
            let tried = *dp.rrp.tried.add(i / bits) & (1usize << (i % bits)) != 0;
            let failed =
                p.max_fails != 0 && p.fails >= p.max_fails && now - p.checked <= p.fail_timeout;
            let full = p.max_conns != 0 && p.conns >= p.max_conns;
            !tried && p.down == 0 && !failed && !full
        };
        // the map is complete: every position has a slot (usually its
        // position plus the group's first slot)
        let offset = map.offset();
        let slot_of = |i: usize| match offset {
            Some(base) => base + i,
            None => map.slot(i).unwrap_or(usize::MAX),
        };
        let mut best: Option<Choice> = None;
        // one loop for every mode, on what the collector published: paper
        // mode the largest remaining allocation L (random among equals);
        // shares and wlc mode the least in-flight per share (wlc publishes
        // its weights as shares), below the in-flight limit
        let mut picker = match (conf.mode, conf.pick) {
            (Mode::Paper, _) => Picker::Remaining(Argmax::default(), worker_rng()),
            (_, Pick::LeastConn) => Picker::PerShare(LeastShare::new()),
            (_, Pick::ExpectedDelay) => Picker::PerShare(LeastShare::expected_delay()),
        };
        each_eligible(peers, &eligible, |i, peer, _| {
            let slot = slot_of(i);
            if picker.offer(i, slot, shared) {
                best = Some(Choice { peer, pos: i, slot });
            }
        });
        if let Picker::Remaining(_, rng) = &mut picker {
            keep_rng(rng);
        }
        let mut guard_full = false;
        if let Picker::PerShare(ls) = &picker {
            guard_full = best.is_none() && ls.limited;
            if ls.tied() {
                // ties: smooth weighted round robin on the shares, with
                // this worker's current weights
                let mut tie = SmoothTie::default();
                let mut leader: Option<Choice> = None;
                // the first of the tied is the best: none before it is tied
                let first = best.as_ref().map_or(0, |c| c.pos);
                each_eligible(peers, &eligible, |i, peer, _| {
                    if i < first {
                        return;
                    }
                    let slot = slot_of(i);
                    let (in_flight, share, limit) = shared.pick_view(slot);
                    if !ls.is_tied(in_flight, share, limit) {
                        return;
                    }
                    if let Some(cell) = servers.tie_weights.get(slot) {
                        cell.set(tie.offer(i, share, cell.get()));
                        if tie.leader() == Some(i) {
                            leader = Some(Choice { peer, pos: i, slot });
                        }
                    }
                });
                if let (Some((_, current)), Some(c)) = (tie.winner(), leader) {
                    if let Some(cell) = servers.tie_weights.get(c.slot) {
                        cell.set(current);
                    }
                    best = Some(c);
                }
            }
        }
        drop(map);

        let Some(Choice { peer, pos, slot }) = best else {
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

        let b = &mut *peer;
        if now - b.checked > b.fail_timeout {
            b.checked = now;
        }
        pc.sockaddr = b.sockaddr;
        pc.socklen = b.socklen;
        pc.name = &mut b.name;
        b.conns += 1;
        dp.rrp.current = peer;
        // ngx_http_upstream_rr_peer_ref (round robin's free unrefs)
        #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
        {
            b.refs += 1;
        }
        *dp.rrp.tried.add(pos / bits) |= 1usize << (pos % bits);
        drop(lock);
        dp.sent(shared, slot);
        NGX_OK as ngx_int_t
    }
}
