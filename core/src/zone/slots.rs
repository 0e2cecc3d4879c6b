//! Which shared slot each peer of nginx's list counts in, by the peer's
//! identity (`server` as written plus address), not by its position: with
//! `zone` and `resolve`, nginx adds and removes peers at run time, and a
//! list that keeps its length can hold other addresses.
//!
//! Each worker keeps one [`SlotMap`] per peer list (primaries, backups),
//! rebuilt when the list's version (nginx's `*peers->config`) changes,
//! under nginx's peer lock; the request path then reads a slot per
//! position.
//!
//! Servers known when the configuration is read have a fixed slot each;
//! every `resolve` server has [`SPARE_SLOTS`] spare slots that the
//! addresses it resolves to claim (a compare-and-swap on the slot's
//! identity word in the zone, so two workers that meet a new address at
//! once agree) and give back once their address is gone and no request is
//! in flight on them ([`UpstreamZone::claim`]).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;

use std::sync::atomic::Ordering::*;

use super::layout::{names_hash, H_SLOTS, P_ADDR, P_IDENT, P_PORT, P_RAMP};
use super::UpstreamZone;

/// Spare slots per `resolve` server: the most addresses of one name that
/// are balanced on counters at once (more are served by round robin).
pub const SPARE_SLOTS: usize = 8;

/// A peer's identity: the `server` directive's address as written and the
/// peer's own address (`ip:port`), hashed; never 0 (0 marks a free slot).
pub fn ident(server: &str, name: &str) -> u64 {
    names_hash([server, name]).max(1)
}

/// What a slot stands for, fixed when the configuration is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotKind {
    /// A server known at configuration: the peer with this identity.
    Fixed { ident: u64 },
    /// A spare of a `resolve` server (its `server` address as written):
    /// any address that name resolves to can claim it.
    Spare { server: String },
}

impl AsRef<SlotKind> for SlotKind {
    fn as_ref(&self) -> &SlotKind {
        self
    }
}

impl SlotKind {
    /// The kind of a peer that exists at configuration.
    pub fn fixed(server: &str, name: &str) -> SlotKind {
        SlotKind::Fixed {
            ident: ident(server, name),
        }
    }
}

/// One peer of nginx's list, as the rebuild reads it.
#[derive(Clone, Debug)]
pub struct ListPeer<'a> {
    pub server: &'a str,
    pub name: &'a str,
    pub addr: Option<SocketAddr>,
}

const NONE: u32 = u32::MAX;

/// Position in one of nginx's peer lists → shared slot.
#[derive(Debug, Default)]
pub struct SlotMap {
    version: Option<u64>,
    map: Vec<u32>,
    complete: bool,
    /// Set when every peer's slot is its position plus this (the list as
    /// configured, the usual case): the lookup is then an addition.
    offset: Option<usize>,
}

impl SlotMap {
    /// True when the map was built for the list at `version`.
    #[inline]
    pub fn is_current(&self, version: u64) -> bool {
        self.version == Some(version)
    }

    /// Number of peers of the list it maps.
    #[inline]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True for an empty list.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The slot of the peer at `pos`.
    #[inline]
    pub fn slot(&self, pos: usize) -> Option<usize> {
        if let Some(base) = self.offset {
            return (pos < self.map.len()).then_some(base + pos);
        }
        match self.map.get(pos) {
            Some(&s) if s != NONE => Some(s as usize),
            _ => None,
        }
    }

    /// `Some(base)` when every peer's slot is `base` + its position (the
    /// list as configured): the request path then adds instead of looking
    /// up.
    #[inline]
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }

    /// True when every peer of the list has a slot (otherwise the pick
    /// cannot compare them all and leaves the request to round robin).
    #[inline]
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// Rebuilds the map for the list `peers` at `version`: each peer takes
    /// the fixed slot of its identity in `range`, or a spare slot of its
    /// `resolve` server (claimed in `shared`); at most one peer per slot.
    /// `kinds` are the slots in order (anything that holds its kind).
    pub fn rebuild<K: AsRef<SlotKind>>(
        &mut self,
        version: u64,
        peers: &[ListPeer<'_>],
        kinds: &[K],
        range: Range<usize>,
        shared: Option<UpstreamZone<'_>>,
    ) {
        let range = range.start.min(kinds.len())..range.end.min(kinds.len());
        let idents: Vec<u64> = peers.iter().map(|p| ident(p.server, p.name)).collect();
        let listed: HashSet<u64> = idents.iter().copied().collect();
        let mut taken = vec![false; kinds.len()];
        self.map.clear();
        self.complete = true;
        for (p, &id) in peers.iter().zip(&idents) {
            let fixed = range.clone().find(|&s| {
                !taken[s] && matches!(kinds[s].as_ref(), SlotKind::Fixed { ident } if *ident == id)
            });
            let slot = fixed.or_else(|| {
                let shared = shared?;
                let spares: Vec<usize> = range
                    .clone()
                    .filter(|&s| {
                        !taken[s]
                            && matches!(kinds[s].as_ref(), SlotKind::Spare { server } if server == p.server)
                    })
                    .collect();
                shared.claim(&spares, id, p.addr, |old| !listed.contains(&old))
            });
            match slot {
                Some(s) => {
                    taken[s] = true;
                    self.map.push(s as u32);
                }
                None => {
                    self.complete = false;
                    self.map.push(NONE);
                }
            }
        }
        let base = range.start;
        self.offset = (self.complete
            && self
                .map
                .iter()
                .enumerate()
                .all(|(i, &s)| s as usize == base + i))
        .then_some(base);
        self.version = Some(version);
    }
}

const ADDR_SET: u64 = 1 << 16;
const ADDR_V4: u64 = 1 << 17;

impl UpstreamZone<'_> {
    /// The identity that holds slot `i` (0: a free spare slot).
    pub fn slot_ident(&self, i: usize) -> u64 {
        self.p(i, P_IDENT).load(Acquire)
    }

    /// The address of the peer that claimed spare slot `i`, if any.
    pub fn slot_addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        let port = self.p(i, P_PORT).load(Acquire);
        if port & ADDR_SET == 0 || self.slot_ident(i) == 0 {
            return None;
        }
        let bits = (self.p(i, P_ADDR).load(Relaxed) as u128) << 64
            | self.p(i, P_ADDR + 1).load(Relaxed) as u128;
        let v6 = std::net::Ipv6Addr::from(bits);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if port & ADDR_V4 != 0 => std::net::IpAddr::V4(v4),
            _ => std::net::IpAddr::V6(v6),
        };
        Some(std::net::SocketAddr::new(ip, port as u16))
    }

    /// Changes every time a spare slot is claimed (for the collector, which
    /// maps the new address to its VM).
    pub fn slots_generation(&self) -> u64 {
        self.h(H_SLOTS).load(Acquire)
    }

    /// The slot for the peer `ident` (at `addr`) among the spare slots
    /// `candidates` (the ones its `resolve` server owns, minus those
    /// already given to other peers of the list): the slot that already
    /// holds `ident`, else a free one, else one whose identity `gone` says
    /// has left nginx's list and that has no request in flight. Claims are
    /// compare-and-swaps, so workers that meet a new address at once end
    /// up in the same slot. A slot claimed while other peers have been
    /// sent requests starts its slow start now. `None` when every
    /// candidate is in use.
    pub fn claim(
        &self,
        candidates: &[usize],
        ident: u64,
        addr: Option<std::net::SocketAddr>,
        gone: impl Fn(u64) -> bool,
    ) -> Option<usize> {
        // a lost race means another worker claimed a slot: look again
        for _ in 0..=candidates.len() {
            if let Some(&i) = candidates.iter().find(|&&i| self.slot_ident(i) == ident) {
                return Some(i);
            }
            let free = candidates
                .iter()
                .copied()
                .find(|&i| self.slot_ident(i) == 0);
            let stale = || {
                candidates.iter().copied().find(|&i| {
                    let old = self.slot_ident(i);
                    gone(old) && self.in_flight(i) == 0
                })
            };
            let i = free.or_else(stale)?;
            let old = self.slot_ident(i);
            if self
                .p(i, P_IDENT)
                .compare_exchange(old, ident, AcqRel, Relaxed)
                .is_ok()
            {
                self.set_slot_addr(i, addr);
                // a server added while the upstream serves ramps up (if
                // it has slow_start=); one there from the start does not
                let since = if self.serving_besides(i) {
                    crate::clock::now_ms().max(1)
                } else {
                    0
                };
                self.p(i, P_RAMP).store(since, Relaxed);
                self.h(H_SLOTS).fetch_add(1, Release);
                return Some(i);
            }
        }
        None
    }

    fn set_slot_addr(&self, i: usize, addr: Option<std::net::SocketAddr>) {
        let Some(addr) = addr else {
            self.p(i, P_PORT).store(0, Release);
            return;
        };
        let (bits, v4) = match addr.ip() {
            std::net::IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), ADDR_V4),
            std::net::IpAddr::V6(a) => (u128::from(a), 0),
        };
        self.p(i, P_ADDR).store((bits >> 64) as u64, Relaxed);
        self.p(i, P_ADDR + 1).store(bits as u64, Relaxed);
        self.p(i, P_PORT)
            .store(addr.port() as u64 | ADDR_SET | v4, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn zone(n: usize) -> Vec<AtomicU64> {
        crate::zone::test_words(n)
    }

    fn peer<'a>(server: &'a str, name: &'a str) -> ListPeer<'a> {
        ListPeer {
            server,
            name,
            addr: name.parse().ok(),
        }
    }

    /// Primaries: s1 fixed, two spares of b.test; backups: s2 fixed.
    fn kinds() -> Vec<SlotKind> {
        vec![
            SlotKind::fixed("127.0.0.1:80", "127.0.0.1:80"),
            SlotKind::Spare {
                server: "b.test:80".into(),
            },
            SlotKind::Spare {
                server: "b.test:80".into(),
            },
            SlotKind::fixed("127.0.0.9:80", "127.0.0.9:80"),
        ]
    }

    #[test]
    fn slots_follow_identity_not_position() {
        let z = zone(4);
        let s = UpstreamZone::new(&z, 4).unwrap();
        s.init(1);
        let k = kinds();
        let mut m = SlotMap::default();
        assert!(!m.is_current(0));
        m.rebuild(
            1,
            &[
                peer("b.test:80", "127.0.0.2:80"),
                peer("127.0.0.1:80", "127.0.0.1:80"),
            ],
            &k,
            0..3,
            Some(s),
        );
        assert!(m.is_current(1) && m.complete());
        assert_eq!((m.slot(0), m.slot(1)), (Some(1), Some(0)));
        // in configured order the slots are the positions plus the group's
        // first slot
        let mut backups = SlotMap::default();
        backups.rebuild(
            1,
            &[peer("127.0.0.9:80", "127.0.0.9:80")],
            &k,
            3..4,
            Some(s),
        );
        assert_eq!((backups.slot(0), backups.slot(1)), (Some(3), None));
        // the name now resolves elsewhere: same length, other address;
        // the new address gets the other spare, the old one is not reused
        // while a request is still in flight on it
        s.count(1);
        m.rebuild(
            2,
            &[
                peer("127.0.0.1:80", "127.0.0.1:80"),
                peer("b.test:80", "127.0.0.3:80"),
            ],
            &k,
            0..3,
            Some(s),
        );
        assert_eq!((m.slot(0), m.slot(1)), (Some(0), Some(2)));
        assert_eq!(s.slot_addr(2), "127.0.0.3:80".parse().ok());
        // another worker with an old map meets the same list: same slots
        let mut other = SlotMap::default();
        other.rebuild(
            2,
            &[
                peer("127.0.0.1:80", "127.0.0.1:80"),
                peer("b.test:80", "127.0.0.3:80"),
            ],
            &k,
            0..3,
            Some(s),
        );
        assert_eq!((other.slot(0), other.slot(1)), (Some(0), Some(2)));
        // a third address while both spares are held: no slot, incomplete
        m.rebuild(
            3,
            &[
                peer("b.test:80", "127.0.0.2:80"),
                peer("b.test:80", "127.0.0.3:80"),
                peer("b.test:80", "127.0.0.4:80"),
            ],
            &k,
            0..3,
            Some(s),
        );
        assert_eq!((m.slot(0), m.slot(1), m.slot(2)), (Some(1), Some(2), None));
        assert!(!m.complete());
    }

    #[test]
    fn fixed_slots_stay_in_their_group_and_duplicates_get_one_each() {
        let k = vec![
            SlotKind::fixed("a:80", "127.0.0.1:80"),
            SlotKind::fixed("a:80", "127.0.0.1:80"),
            SlotKind::fixed("a:80", "127.0.0.1:80"),
        ];
        let mut m = SlotMap::default();
        // nginx allows the same server twice: each line its own slot
        let a = peer("a:80", "127.0.0.1:80");
        m.rebuild(0, &[a.clone(), a.clone()], &k, 0..2, None);
        assert_eq!((m.slot(0), m.slot(1)), (Some(0), Some(1)));
        // the backup list (slot 2) never takes a primary's slot
        m.rebuild(0, &[a.clone(), a.clone()], &k, 2..3, None);
        assert_eq!((m.slot(0), m.slot(1)), (Some(2), None));
        // an unknown server has no slot, a spare needs the zone
        let spare = vec![SlotKind::Spare {
            server: "b:80".into(),
        }];
        m.rebuild(0, &[peer("b:80", "127.0.0.5:80")], &spare, 0..1, None);
        assert_eq!(m.slot(0), None);
        assert!(!m.complete());
    }

    #[test]
    fn identity_is_never_zero_and_tells_server_from_address() {
        assert_ne!(ident("a:80", "1.2.3.4:80"), ident("b:80", "1.2.3.4:80"));
        assert_ne!(ident("a:80", "1.2.3.4:80"), ident("a:80", "1.2.3.5:80"));
        assert_ne!(ident("", ""), 0);
    }

    #[test]
    fn claims_find_keep_and_reuse_spare_slots() {
        let z = zone(4);
        let s = UpstreamZone::new(&z, 4).unwrap();
        s.init(1);
        let a: std::net::SocketAddr = "127.0.0.2:80".parse().unwrap();
        let b: std::net::SocketAddr = "[::1]:81".parse().unwrap();
        let c: std::net::SocketAddr = "127.0.0.4:80".parse().unwrap();
        let spares = [1, 2];
        let g0 = s.slots_generation();
        assert_eq!(s.claim(&spares, 10, Some(a), |_| false), Some(1));
        assert_eq!(s.slot_addr(1), Some(a));
        assert!(s.slots_generation() > g0);
        // claimed before any traffic: no slow start
        assert_eq!(s.ramp_since(1), 0);
        // the same identity finds its slot again, without a new claim
        let g1 = s.slots_generation();
        assert_eq!(s.claim(&spares, 10, Some(a), |_| false), Some(1));
        assert_eq!(s.slots_generation(), g1);
        assert_eq!(s.claim(&spares, 11, Some(b), |_| false), Some(2));
        assert_eq!(s.slot_addr(2), Some(b));
        // full: a third identity gets nothing while the others are listed
        assert_eq!(s.claim(&spares, 12, Some(c), |_| false), None);
        // 10 left the list but has a request in flight: not reused yet
        s.count(1);
        assert_eq!(s.claim(&spares, 12, Some(c), |x| x == 10), None);
        s.finish(1, s.epoch());
        s.count(0);
        let before = crate::clock::now_ms();
        assert_eq!(s.claim(&spares, 12, Some(c), |x| x == 10), Some(1));
        assert_eq!((s.slot_ident(1), s.slot_addr(1)), (12, Some(c)));
        // added while another server serves: its slow start begins
        assert!(s.ramp_since(1) >= before, "{}", s.ramp_since(1));
        // slots outside the candidates are never touched
        assert_eq!(s.slot_ident(0), 0);
        assert_eq!(s.slot_addr(3), None);
        // a cleared zone frees every slot
        s.init(2);
        assert_eq!((s.slot_ident(1), s.slot_addr(1)), (0, None));
    }
}
