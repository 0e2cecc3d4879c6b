//! nginx's round-robin peer lists as the balancer reads them: the slots
//! of a list at configuration, its lock (taken as nginx's own balancers
//! take it), its version, a walk over its eligible peers, and this
//! worker's position → slot map of it.

use std::cell::RefMut;
use std::net::SocketAddr;

use dwepc_core::zone::slots::{ListPeer, SlotKind, SlotMap};
use dwepc_core::zone::UpstreamZone;
use ngx::ffi::{
    ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t, ngx_rwlock_rlock, ngx_rwlock_unlock,
    ngx_rwlock_wlock,
};

use crate::state::{PeerMeta, Servers};
use crate::util::ngx_str;

/// The slots of one peer list: its peers at configuration (a fixed slot
/// each), then [`dwepc_core::zone::slots::SPARE_SLOTS`] spares per
/// `resolve` server of the list.
pub fn peers_meta(peers: *mut ngx_http_upstream_rr_peers_t, backup: bool, out: &mut Vec<PeerMeta>) {
    if peers.is_null() {
        return;
    }
    // SAFETY: at init_upstream time the round-robin peer lists are valid,
    // NULL-terminated lists in the configuration pool; every `next` is a
    // live peer or NULL.
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
    }
    #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
    // SAFETY: at init_upstream time the list's `resolve` templates are a
    // NULL-terminated list in the configuration pool.
    unsafe {
        let mut t = (*peers).resolve;
        while !t.is_null() {
            let server = ngx_str(&(*t).server);
            for _ in 0..dwepc_core::zone::slots::SPARE_SLOTS {
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

/// The address of a peer's sockaddr (IPv4 or IPv6; None otherwise).
pub fn sockaddr_addr(sa: *const ngx::ffi::sockaddr) -> Option<SocketAddr> {
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

/// nginx's lock on a peer list (`ngx_http_upstream_rr_peers_wlock` /
/// `_rlock`: taken only when the list is shared through a `zone`),
/// released when dropped, so that no exit path (an early return, a panic
/// caught at the FFI boundary) leaves it held.
pub struct PeersLock {
    peers: *mut ngx_http_upstream_rr_peers_t,
}

impl PeersLock {
    /// The write lock, to pick (as least_conn takes it).
    ///
    /// # Safety
    /// `peers` is a live round-robin peer list that outlives the lock, not
    /// already locked by this process.
    #[inline]
    pub unsafe fn write(peers: *mut ngx_http_upstream_rr_peers_t) -> PeersLock {
        // SAFETY: forwarded from the caller.
        unsafe { PeersLock::take(peers, ngx_rwlock_wlock) }
    }

    /// The read lock, to walk the list.
    ///
    /// # Safety
    /// As [`PeersLock::write`].
    #[inline]
    pub unsafe fn read(peers: *mut ngx_http_upstream_rr_peers_t) -> PeersLock {
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
        // SAFETY: peers is live (the caller's contract); as nginx's peers
        // locks, lock only when the list is shared.
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
        // SAFETY: pairs with `take` on the same list, which outlives the
        // lock per `write`'s contract.
        unsafe {
            if !(*self.peers).shpool.is_null() {
                ngx_rwlock_unlock(&mut (*self.peers).rwlock);
            }
        }
    }
}

/// Calls `f(i, peer, &*peer)` for every peer of `peers` (in list order,
/// `i` its position) that `eligible` accepts.
///
/// # Safety
/// `peers` is a live round-robin peer list, locked as nginx requires.
#[inline]
pub unsafe fn each_eligible(
    peers: *mut ngx_http_upstream_rr_peers_t,
    eligible: &impl Fn(usize, &ngx_http_upstream_rr_peer_t) -> bool,
    mut f: impl FnMut(usize, *mut ngx_http_upstream_rr_peer_t, &ngx_http_upstream_rr_peer_t),
) {
    // SAFETY: the caller holds the list; every `next` is a live peer or NULL.
    let mut peer = unsafe { (*peers).peer };
    let mut i = 0usize;
    while !peer.is_null() {
        // SAFETY: a live peer of the locked list (above).
        let p = unsafe { &*peer };
        if eligible(i, p) {
            f(i, peer, p);
        }
        peer = p.next;
        i += 1;
    }
}

/// The position of `target` in `peers`, if it is there.
///
/// # Safety
/// As [`each_eligible`].
pub unsafe fn position(
    peers: *mut ngx_http_upstream_rr_peers_t,
    target: *mut ngx_http_upstream_rr_peer_t,
) -> Option<usize> {
    let mut found = None;
    // SAFETY: forwarded from the caller.
    unsafe {
        each_eligible(peers, &|_, _| true, |i, p, _| {
            if p == target && found.is_none() {
                found = Some(i);
            }
        })
    };
    found
}

/// Version of a peer list: nginx's `*peers->config`, which changes with
/// every peer `resolve` adds or removes; 0 for a list without `zone`,
/// which never changes.
///
/// # Safety
/// `peers` is a live round-robin peer list, locked as nginx requires.
#[inline]
pub unsafe fn list_version(peers: *mut ngx_http_upstream_rr_peers_t) -> u64 {
    #[cfg(all(ngx_feature = "http_upstream_zone", dwepc_peer_refs))]
    // SAFETY: peers is live; config is NULL or a word in the upstream's
    // shared zone.
    unsafe {
        if !(*peers).config.is_null() {
            return *(*peers).config as u64;
        }
    }
    let _ = peers;
    0
}

/// The slot map of `peers` (`backup`: the backup list), rebuilt first if
/// the list changed since this worker last built it (the one allocation
/// on the request path: once per worker after `resolve` changed the list,
/// not per request); None only if this worker already holds it (never:
/// each use ends before the next, but it is not worth a panic).
///
/// # Safety
/// `peers` is the upstream's primary or backup list, locked as nginx
/// requires.
pub unsafe fn slot_map<'u>(
    servers: &'u Servers,
    peers: *mut ngx_http_upstream_rr_peers_t,
    backup: bool,
    zone: UpstreamZone<'_>,
) -> Option<RefMut<'u, SlotMap>> {
    let mut map = servers.slot_maps[usize::from(backup)]
        .try_borrow_mut()
        .ok()?;
    // SAFETY: forwarded from the caller.
    let version = unsafe { list_version(peers) };
    if !map.is_current(version) {
        let mut list = Vec::new();
        // SAFETY: forwarded from the caller.
        unsafe {
            each_eligible(peers, &|_, _| true, |_, _, p| {
                list.push((
                    ngx_str(&p.server),
                    ngx_str(&p.name),
                    sockaddr_addr(p.sockaddr),
                ))
            })
        };
        let list: Vec<ListPeer<'_>> = list
            .iter()
            .map(|(server, name, addr)| ListPeer {
                server,
                name,
                addr: *addr,
            })
            .collect();
        let range = if backup {
            servers.n_primary..servers.peers.len()
        } else {
            0..servers.n_primary
        };
        map.rebuild(version, &list, &servers.peers, range, Some(zone));
    }
    Some(map)
}
