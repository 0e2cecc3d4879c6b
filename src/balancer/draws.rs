//! The per-worker table a pick draws peers from (`choices=`): the list's
//! peers by position (nginx's list is linked; a draw needs its n-th peer at
//! once) and the alias table of their shares. Rebuilt, under the list's
//! lock, when `resolve` changed the list or the collector published new
//! shares: once per worker per publication (every `interval`), not per
//! request, in place (no allocation once the list's size is stable).

use std::cell::RefMut;

use dwepc_core::policy::pick::Alias;
use dwepc_core::zone::slots::SlotMap;
use dwepc_core::zone::UpstreamZone;
use ngx::ffi::{ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t};

use super::list::{each_eligible, list_version};
use crate::state::Servers;

/// One list's peers by position and the alias table of their shares.
#[derive(Debug, Default)]
pub struct DrawTable {
    /// The list version and the shares' publication it was built from.
    built_for: Option<(u64, (u64, u64))>,
    /// The list's peers, by position.
    pub peers: Vec<*mut ngx_http_upstream_rr_peer_t>,
    /// Positions drawn in proportion to their shares.
    pub alias: Alias,
    /// The shares by position, kept for the next rebuild.
    weights: Vec<u32>,
}

/// The draw table of `peers` (`backup`: the backup list), rebuilt first if
/// the list or the published shares changed since this worker built it;
/// None if this worker already holds it (never: each use ends before the
/// next) or the map does not cover the list.
///
/// # Safety
/// `peers` is the upstream's primary or backup list, locked as nginx
/// requires, and `map` is this worker's current slot map of it.
pub unsafe fn draw_table<'u>(
    servers: &'u Servers,
    peers: *mut ngx_http_upstream_rr_peers_t,
    backup: bool,
    map: &SlotMap,
    zone: UpstreamZone<'_>,
) -> Option<RefMut<'u, DrawTable>> {
    let mut t = servers.draw_tables[usize::from(backup)]
        .try_borrow_mut()
        .ok()?;
    // SAFETY: forwarded from the caller.
    let key = (unsafe { list_version(peers) }, zone.publication());
    if t.built_for != Some(key) {
        // in place: no allocation once the list's size is stable
        let DrawTable {
            peers: list,
            alias,
            weights,
            ..
        } = &mut *t;
        list.clear();
        // SAFETY: forwarded from the caller.
        unsafe { each_eligible(peers, &|_, _| true, |_, p, _| list.push(p)) };
        weights.clear();
        weights.extend(
            (0..list.len()).map(|pos| map.slot(pos).map_or(0, |slot| zone.pick_view(slot).1)),
        );
        alias.rebuild(weights);
        t.built_for = Some(key);
    }
    (t.peers.len() == map.len()).then_some(t)
}
