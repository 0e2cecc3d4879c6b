//! `peer.get`: one pick. Under nginx's peer lock (as least_conn takes it),
//! the eligible peers of the list (not tried, not down, not failed, below
//! `max_conns`) are offered to the mode's comparison on what its policy
//! published in the zone (the shares and limits through this worker's copy
//! of them) — every one, or (`choices=`) a few drawn by share from this
//! worker's draw table of the list; after a full scan ties go
//! to this worker's smooth weighted round robin on the shares, among drawn
//! peers to the first drawn; the chosen peer is taken as round robin takes
//! one and counted in its slot. Without usable counters the comparison's own
//! stand-in picks (least_time for one that reads response times), or
//! round robin; with a peer that has no slot, round robin; the request is
//! counted either way.

use core::cell::{BorrowMutError, RefMut};
use core::ptr;

use dwepc_core::policy::decision::Decision;
use dwepc_core::policy::latency::DEFAULT_TAU_MS;
use dwepc_core::policy::pick::draw::draw;
use dwepc_core::policy::pick::{with_worker_rng, ShareTable, SmoothTie};
use dwepc_core::policy::{Compare, Comparison, Local, Observe, Scan};
use dwepc_core::zone::slots::SlotMap;
use dwepc_core::zone::UpstreamZone;
use ngx::ffi::{
    ngx_http_upstream_get_round_robin_peer, ngx_http_upstream_rr_peer_t,
    ngx_http_upstream_rr_peers_t, ngx_int_t, ngx_peer_connection_t, ngx_time, time_t, NGX_BUSY,
    NGX_OK,
};

use super::draws::{draw_table, DrawTable};
use super::list::{each_eligible, position, slot_map, PeersLock};
use super::PeerData;
use crate::state::Servers;
use crate::util::cached_now_ms;

/// What the pick chose: the peer, its position in the list and its slot.
#[derive(Clone, Copy)]
struct Choice {
    peer: *mut ngx_http_upstream_rr_peer_t,
    pos: usize,
    slot: usize,
}

/// Bits of a word of the `tried` bitmap.
const BITS: usize = usize::BITS as usize;

/// One pick for the request of `dp`.
///
/// # Safety
/// `pc` and `dp` belong to a live request set up by `init_peer`.
pub unsafe fn get_peer_inner(pc: &mut ngx_peer_connection_t, dp: &mut PeerData) -> ngx_int_t {
    // SAFETY: dp.ups is NULL or the upstream state init_peer stored, which
    // lives in the configuration pool as long as the request.
    let Some(ups) = (unsafe { dp.ups.as_ref() }) else {
        // SAFETY: dp.rrp is round robin's data for this request.
        return unsafe { ngx_http_upstream_get_round_robin_peer(pc, dp.rrp_data()) };
    };
    let peers = dp.rrp.peers;
    // SAFETY: rrp.peers is the live list round robin's init chose.
    let single = unsafe { (*peers).single() } != 0;
    let now_ms = cached_now_ms();
    let observe = ups.parsed.conf.observe;
    let (zone, servers, comparison) = match (crate::zone::of(ups), ups.servers()) {
        // observe=round_robin: nginx's pick, counted
        (Some(z), Some(_)) if observe == Some(Observe::RoundRobin) => {
            // SAFETY: pc and dp belong to this live request.
            return unsafe { round_robin(pc, dp, Some(z), Decision::Observe) };
        }
        (Some(z), Some(s)) if !single => match ups.parsed.comparison.now(z.usable(now_ms)) {
            Some(c) => (z, s, c),
            // SAFETY: pc and dp belong to this live request.
            None => return unsafe { round_robin(pc, dp, Some(z), Decision::RoundRobin) },
        },
        // SAFETY: pc and dp belong to this live request.
        (other, _) => return unsafe { round_robin(pc, dp, other, Decision::RoundRobin) },
    };
    let Ok(share_table) = share_table(servers, comparison, zone) else {
        // SAFETY: pc and dp belong to this live request.
        return unsafe { round_robin(pc, dp, Some(zone), Decision::RoundRobin) };
    };
    pc.set_cached(0);
    pc.connection = ptr::null_mut();
    // SAFETY: peers is live and not yet locked by this process.
    let lock = unsafe { PeersLock::write(peers) };
    crate::util::fault("get_peer_locked");
    // SAFETY: peers is live and locked (`lock`).
    if unsafe { changed_since_init(peers, dp) } {
        drop(lock);
        // SAFETY: peers is live; nginx reads pc->name even on NGX_BUSY.
        pc.name = unsafe { (*peers).name };
        return NGX_BUSY as ngx_int_t;
    }
    let backup = peers != dp.primary;
    // SAFETY: peers is this upstream's primary or backup list, locked.
    let map = match unsafe { slot_map(servers, peers, backup, zone) } {
        Some(map) if map.complete() => map,
        // a peer without a slot (more addresses than spare slots)
        // cannot be compared with the others: round robin decides (the
        // map released first: round robin's count looks it up again)
        other => {
            drop(other);
            drop(lock);
            // SAFETY: pc and dp belong to this live request.
            return unsafe { round_robin(pc, dp, Some(zone), Decision::RoundRobin) };
        }
    };
    // drawn choices for a large list (`choices=`), from this worker's
    // table of it
    let drawn = comparison.drawn(ups.parsed.conf.tuning.choices, map.len());
    let table = match drawn {
        // SAFETY: peers is live and locked (`lock`); map is current for it.
        Some(_) => unsafe { draw_table(servers, peers, backup, &map, zone) },
        None => None,
    };
    // SAFETY: peers is live and locked (`lock`) for the scan; dp's tried
    // bitmap has a bit for each of its peers (round robin sized it); the
    // table (if any) holds the list's peers as locked now.
    let scan =
        unsafe { ScanPeers::new(peers, dp.rrp.tried, &map, zone, servers, table.as_deref()) };
    let local = Local {
        latency: &servers.latency,
        weight: &servers.weights,
        shares: share_table
            .as_deref()
            .map(ShareTable::shares)
            .unwrap_or_default(),
        now_ms,
        tau_ms: DEFAULT_TAU_MS,
        slow_start_ms: ups.parsed.conf.tuning.slow_start_ms,
    };
    let (best, full) = comparison.run(scan, local, drawn);
    drop(share_table);
    drop(table);
    drop(map);
    let decision = match comparison {
        Comparison::LeastConn => Decision::Observe,
        c if c.needs_counters() => Decision::Counters,
        _ => Decision::ResponseTimes,
    };
    match best {
        // SAFETY: the choice is a live peer of the list `lock` holds.
        Some(c) => unsafe { take(pc, dp, c, lock, zone, decision) },
        // SAFETY: pc and dp belong to this live request; lock holds peers.
        None => unsafe { exhausted(pc, dp, lock, full, zone) },
    }
}

/// This worker's copy of the published shares for a `comparison` that
/// reads them (`None` for one that does not), rebuilt first if the
/// collector published since; `Err` if it is already in use (never: each
/// use ends before the next pick, backups included).
fn share_table<'u>(
    servers: &'u Servers,
    comparison: Comparison,
    zone: UpstreamZone<'_>,
) -> Result<Option<RefMut<'u, ShareTable>>, BorrowMutError> {
    if !comparison.per_share() {
        return Ok(None);
    }
    let mut t = servers.share_table.try_borrow_mut()?;
    t.refresh(zone);
    Ok(Some(t))
}

/// True if `resolve` changed the list since round robin's init for this
/// request (as round robin answers: NGX_BUSY).
///
/// # Safety
/// `peers` is live and locked.
#[inline]
unsafe fn changed_since_init(peers: *mut ngx_http_upstream_rr_peers_t, dp: &PeerData) -> bool {
    #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
    // SAFETY: config is NULL or a word of the upstream's shared zone.
    unsafe {
        if !(*peers).config.is_null() && dp.rrp.config != *(*peers).config {
            return true;
        }
    }
    let _ = (peers, dp);
    false
}

/// A pick's walk over a peer list, under nginx's lock: the eligible peers
/// offered to the mode's comparison, then the tie pass (or a few drawn,
/// [`Scan::draw`]). Its result: the best, and whether every eligible peer
/// was at its in-flight limit.
struct ScanPeers<'a> {
    peers: *mut ngx_http_upstream_rr_peers_t,
    tried: *mut usize,
    /// nginx's time, for max_fails' fail_timeout.
    now: time_t,
    map: &'a SlotMap,
    zone: UpstreamZone<'a>,
    servers: &'a Servers,
    /// The list's draw table, when the pick draws.
    table: Option<&'a DrawTable>,
}

impl<'a> ScanPeers<'a> {
    /// # Safety
    /// `peers` is live and locked while the scan runs; `tried` is the
    /// request's bitmap, with a bit for each of its peers; `table` holds
    /// the list's peers as they are under this lock.
    unsafe fn new(
        peers: *mut ngx_http_upstream_rr_peers_t,
        tried: *mut usize,
        map: &'a SlotMap,
        zone: UpstreamZone<'a>,
        servers: &'a Servers,
        table: Option<&'a DrawTable>,
    ) -> ScanPeers<'a> {
        ScanPeers {
            peers,
            tried,
            now: ngx_time(),
            map,
            zone,
            servers,
            table,
        }
    }

    /// Whether the peer at position `i` may take the request: not tried,
    /// not down, not failed (max_fails), below max_conns.
    #[inline]
    fn eligible(&self, i: usize, p: &ngx_http_upstream_rr_peer_t) -> bool {
        // SAFETY: the bitmap has a bit for every peer of the list
        // (ScanPeers::new's contract).
        let done = unsafe { *self.tried.add(i / BITS) } & (1usize << (i % BITS)) != 0;
        let full = p.max_conns != 0 && p.conns >= p.max_conns;
        !done && p.down == 0 && !failed(p, self.now) && !full
    }

    /// Calls `f(i, peer)` for every eligible peer.
    #[inline]
    fn each(&self, mut f: impl FnMut(usize, *mut ngx_http_upstream_rr_peer_t)) {
        let eligible = |i: usize, p: &ngx_http_upstream_rr_peer_t| self.eligible(i, p);
        // SAFETY: the list is live and locked (ScanPeers::new's contract).
        unsafe { each_eligible(self.peers, &eligible, |i, peer, _| f(i, peer)) };
    }
}

impl Scan for ScanPeers<'_> {
    type Peer = Choice;
    type Out = (Option<Choice>, bool);

    #[inline(always)]
    fn scan<C: Compare<Choice>>(self, mut c: C) -> Self::Out {
        match self.map.offset() {
            Some(base) => self.offer_all(&mut c, |pos| base + pos),
            None => self.offer_all(&mut c, |pos| self.map.slot(pos).unwrap_or(usize::MAX)),
        }
        let best = c.best();
        let full = best.is_none() && c.limited();
        if !c.tied() {
            return (best, full);
        }
        // ties: smooth weighted round robin on the shares, with this
        // worker's current weights; the first of the tied is the best,
        // none before it is tied
        let first = best.map_or(0, |b| b.pos);
        let mut tie = SmoothTie::default();
        self.each(|pos, peer| {
            let slot = self.slot_of(pos);
            let Some(share) = c.tie_weight(slot, self.zone).filter(|_| pos >= first) else {
                return;
            };
            if let Some(cell) = self.servers.tie_weights.get(slot) {
                cell.set(tie.offer(Choice { peer, pos, slot }, share, cell.get()));
            }
        });
        match tie.winner() {
            Some((w, current)) => {
                if let Some(cell) = self.servers.tie_weights.get(w.slot) {
                    cell.set(current);
                }
                (Some(w), full)
            }
            None => (best, full),
        }
    }

    #[inline(always)]
    fn draw<C: Compare<Choice>>(self, mut c: C, d: usize) -> Self::Out {
        let Some(t) = self.table else {
            return self.scan(c);
        };
        // none drawn (a nearly full or mostly ineligible list), or none of
        // them taken: the full scan goes on with what was offered
        if self.offer_drawn(t, &mut c, d) == 0 || c.best().is_none() {
            return self.scan(c);
        }
        (c.best(), false)
    }
}

impl ScanPeers<'_> {
    /// The draws of [`Scan::draw`]: `d` peers of the table, eligible and
    /// accepted by `c` (below their in-flight limit as slow start has it),
    /// offered to `c`; how many.
    fn offer_drawn<C: Compare<Choice>>(&self, t: &DrawTable, c: &mut C, d: usize) -> usize {
        let zone = self.zone;
        let offer = |pos: usize| {
            let (peer, slot) = (t.peers[pos], self.slot_of(pos));
            // SAFETY: the table holds the locked list's live peers
            // (ScanPeers::new's contract).
            let usable = self.eligible(pos, unsafe { &*peer }) && c.accepts(slot, zone);
            if usable {
                c.offer(Choice { peer, pos, slot }, slot, zone);
            }
            usable
        };
        with_worker_rng(|rng| draw(rng, &t.alias, d, offer))
    }

    /// Offers every eligible peer to `c`, its slot from `slot_of` (a loop
    /// compiled per way of finding slots, so the usual one is an
    /// addition).
    #[inline(always)]
    fn offer_all<C: Compare<Choice>>(&self, c: &mut C, slot_of: impl Fn(usize) -> usize) {
        self.each(|pos, peer| {
            let slot = slot_of(pos);
            c.offer(Choice { peer, pos, slot }, slot, self.zone);
        });
    }

    /// The slot of the peer at position `pos` (the map is complete).
    #[inline]
    fn slot_of(&self, pos: usize) -> usize {
        match self.map.offset() {
            Some(base) => base + pos,
            None => self.map.slot(pos).unwrap_or(usize::MAX),
        }
    }
}

/// nginx's max_fails: the peer failed too often within fail_timeout.
#[inline]
fn failed(p: &ngx_http_upstream_rr_peer_t, now: time_t) -> bool {
    p.max_fails != 0 && p.fails >= p.max_fails && now - p.checked <= p.fail_timeout
}

/// Takes the chosen peer as round robin takes one (connection, `conns`,
/// `current`, a reference, the `tried` bit), releases the list, counts it
/// and remembers what decided it.
///
/// # Safety
/// `c.peer` is a live peer of the list `lock` holds; `dp`'s tried bitmap
/// covers `c.pos`.
unsafe fn take(
    pc: &mut ngx_peer_connection_t,
    dp: &mut PeerData,
    c: Choice,
    lock: PeersLock,
    zone: UpstreamZone<'_>,
    decision: Decision,
) -> ngx_int_t {
    let now = ngx_time();
    // SAFETY: the peer is live and the list's write lock is held, so this
    // process may write it.
    let b = unsafe { &mut *c.peer };
    // failed max_fails times and tried again after fail_timeout: if it
    // answers, slow start begins
    let probe = b.max_fails != 0 && b.fails >= b.max_fails;
    if now - b.checked > b.fail_timeout {
        b.checked = now;
    }
    pc.sockaddr = b.sockaddr;
    pc.socklen = b.socklen;
    pc.name = &mut b.name;
    b.conns += 1;
    dp.rrp.current = c.peer;
    // ngx_http_upstream_rr_peer_ref (round robin's free unrefs)
    #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
    {
        b.refs += 1;
    }
    // SAFETY: the bitmap has a word for every BITS peers of the list.
    unsafe { *dp.rrp.tried.add(c.pos / BITS) |= 1usize << (c.pos % BITS) };
    drop(lock);
    dp.sent(zone, c.slot);
    dp.probe = probe;
    let share = match decision {
        Decision::Counters => zone.pick_view(c.slot).1,
        _ => 0,
    };
    dp.decisions.record(decision, share);
    NGX_OK as ngx_int_t
}

/// No eligible peer: the backup servers, as least_conn goes on (also when
/// every primary is at its in-flight limit, as with max_conns); without
/// backups, NGX_BUSY — counted as an overload-guard answer when every
/// peer was at its in-flight limit (answered at once rather than queued
/// everywhere: nginx's 502, as when every server is at max_conns, which
/// the header filter of [`crate::overload`] turns into the upstream's
/// `overload_status=`).
///
/// # Safety
/// `pc` and `dp` belong to a live request; `lock` holds `dp.rrp.peers`.
unsafe fn exhausted(
    pc: &mut ngx_peer_connection_t,
    dp: &mut PeerData,
    lock: PeersLock,
    full: bool,
    zone: UpstreamZone<'_>,
) -> ngx_int_t {
    let peers = dp.rrp.peers;
    // SAFETY: peers is live (locked by `lock`).
    let next = unsafe { (*peers).next };
    if !next.is_null() {
        dp.rrp.peers = next;
        // SAFETY: next is the live backup list; the tried bitmap has a word
        // for every BITS of its peers.
        unsafe {
            for k in 0..(*next).number.div_ceil(BITS) {
                *dp.rrp.tried.add(k) = 0;
            }
        }
        drop(lock);
        // SAFETY: pc and dp belong to this live request.
        let rc = unsafe { get_peer_inner(pc, dp) };
        if rc != NGX_BUSY as ngx_int_t {
            return rc;
        }
    } else {
        drop(lock);
        if full {
            zone.guard_reject();
            dp.decisions.record(Decision::Guard, 0);
        }
    }
    // SAFETY: peers is live for the request; nginx reads pc->name even
    // on NGX_BUSY.
    pc.name = unsafe { (*peers).name };
    NGX_BUSY as ngx_int_t
}

/// Round robin's pick, counted in the peer's slot and remembered as
/// `decision` (round robin as the fallback, or observe mode's pick).
///
/// # Safety
/// `pc` and `dp` belong to a live request set up by `init_peer`.
pub unsafe fn round_robin(
    pc: &mut ngx_peer_connection_t,
    dp: &mut PeerData,
    zone: Option<UpstreamZone<'_>>,
    decision: Decision,
) -> ngx_int_t {
    // SAFETY: dp.rrp is valid round-robin data for this request.
    let rc = unsafe { ngx_http_upstream_get_round_robin_peer(pc, dp.rrp_data()) };
    dp.probe = false;
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    dp.decisions.record(decision, 0);
    // SAFETY: as in get_peer_inner: NULL or the configuration's state.
    let servers = unsafe { dp.ups.as_ref() }.and_then(|u| u.servers());
    let (Some(zone), Some(servers)) = (zone, servers) else {
        return rc;
    };
    let peers = dp.rrp.peers;
    let backup = peers != dp.primary;
    // round robin has released the list: find the peer's slot under the
    // read lock (with `zone` + `resolve` other workers relink it); a peer
    // removed meanwhile is not found and not counted, and its `free`
    // counts nothing either
    let slot = {
        // SAFETY: peers is the request's live list, not locked by us now.
        let _lock = unsafe { PeersLock::read(peers) };
        // SAFETY: peers is live and locked (`_lock`).
        unsafe { slot_map(servers, peers, backup, zone) }.and_then(|map| {
            // SAFETY: peers is live and read-locked (`_lock`); current is
            // the peer round robin just took from it (or one since gone).
            unsafe { position(peers, dp.rrp.current) }.and_then(|i| map.slot(i))
        })
    };
    if let Some(slot) = slot {
        dp.sent(zone, slot);
    }
    rc
}
