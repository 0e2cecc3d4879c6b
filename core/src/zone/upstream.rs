//! The view of one upstream's zone ([`UpstreamZone`]) and what the request
//! path does with it: count a request sent, ended or failed, and read the
//! few hot words the pick compares. No lock, no allocation: loads and
//! atomic adds.
//!
//! In-flight requests of a peer are `sent − done` over every worker of the
//! instance (whether or not the upstream has nginx's `zone`). When the zone
//! is cleared for other peers (a reload), the epoch changes, and a request
//! counted before only ends in the zone if its epoch still matches.

use std::sync::atomic::{AtomicU64, Ordering::*};

use super::layout::*;
use super::Reason;

/// A view of one upstream's zone: `n` peers' words in shared memory, the
/// same words in every worker. One writer (the collector holding the
/// lease) publishes; readers never lock.
#[derive(Clone, Copy)]
pub struct UpstreamZone<'a> {
    pub(super) mem: &'a [AtomicU64],
    n: usize,
}

/// The bits of an f64 word.
#[inline]
pub(super) fn f(x: u64) -> f64 {
    f64::from_bits(x)
}

/// A share in [0, 1] as the integer weight the pick compares: share × 2³²,
/// rounded, at most `u32::MAX` (integer cross-multiplication, as nginx's
/// least_conn compares `conns × weight`, keeps floating point off the
/// request path).
#[inline]
pub fn share_weight(share: f64) -> u32 {
    if share > 0.0 {
        (share * 4_294_967_296.0).round().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

/// Packs a share (as its [`share_weight`]) and an in-flight limit into one
/// word.
#[inline]
pub fn pack_share(share: f64, limit: u32) -> u64 {
    ((share_weight(share) as u64) << 32) | limit as u64
}

/// Unpacks [`pack_share`]: the share's weight and the limit.
#[inline]
pub fn unpack_share(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

/// The share a [`share_weight`] stands for.
#[inline]
pub fn weight_share(weight: u32) -> f64 {
    weight as f64 / 4_294_967_296.0
}

impl<'a> UpstreamZone<'a> {
    /// Wraps `words`; `None` if too short for `n` peers.
    pub fn new(mem: &'a [AtomicU64], n: usize) -> Option<UpstreamZone<'a>> {
        (mem.len() >= words(n)).then_some(UpstreamZone { mem, n })
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no peers.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Header word `h`.
    #[inline]
    pub(super) fn h(&self, h: usize) -> &AtomicU64 {
        &self.mem[h]
    }

    /// Peer `i`'s hot words (one bounds check: the request path reads
    /// them once per peer of a scan).
    #[inline(always)]
    fn hot(&self, i: usize) -> &[AtomicU64; HOT] {
        &self.mem[HEADER..].as_chunks::<HOT>().0[i]
    }

    /// Word `off` of peer `i` (hot or cold).
    #[inline]
    pub(super) fn p(&self, i: usize, off: usize) -> &AtomicU64 {
        if off < HOT {
            &self.mem[HEADER + i * HOT + off]
        } else {
            &self.mem[HEADER + self.n * HOT + i * COLD + (off - HOT)]
        }
    }

    /// Prepares the zone for an upstream with peers named by `hash`. If the
    /// zone already holds the same upstream (a reload that kept the peers),
    /// its state is kept and `true` is returned; otherwise it is cleared,
    /// keeping only a previous W.
    pub fn init(&self, hash: u64) -> bool {
        let same = self.h(H_MAGIC).load(Acquire) == MAGIC
            && self.h(H_N).load(Relaxed) == self.n as u64
            && self.h(H_HASH).load(Relaxed) == hash;
        if same {
            self.h(H_GENERATION).fetch_add(1, Relaxed);
            return true;
        }
        let ours = self.h(H_MAGIC).load(Relaxed) == MAGIC;
        let kept_w = if ours { self.w() } else { None };
        let epoch = if ours {
            self.h(H_EPOCH).load(Relaxed)
        } else {
            0
        };
        for x in self.mem.iter().take(words(self.n)) {
            x.store(0, Relaxed);
        }
        self.clear_published();
        self.set_w(kept_w);
        self.h(H_EPOCH).store(epoch.wrapping_add(1), Relaxed);
        self.h(H_REASON).store(Reason::NoSamples as u64, Relaxed);
        self.h(H_N).store(self.n as u64, Relaxed);
        self.h(H_HASH).store(hash, Relaxed);
        self.h(H_MAGIC).store(MAGIC, Release);
        false
    }

    /// Changes every time the zone is cleared for other peers.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.h(H_EPOCH).load(Relaxed)
    }

    /// Number of times this zone was taken over by a reload.
    pub fn generation(&self) -> u64 {
        self.h(H_GENERATION).load(Relaxed)
    }

    /// When the collector last published the pick's inputs (shares,
    /// limits, allocations): wall clock ms, or a millisecond after the
    /// publication before if that was as late (0: never since the zone was
    /// cleared).
    #[inline]
    pub fn published_ms(&self) -> u64 {
        // pairs with the Release store after the inputs are written: a
        // reader that sees this publication sees its inputs
        self.h(H_APPLIED).load(Acquire)
    }

    /// Which publication of the pick's inputs the zone holds: its stamp
    /// ([`UpstreamZone::published_ms`], never the same twice while the
    /// zone keeps its peers) and the zone's epoch (a clear starts the
    /// stamps again). What a worker's tables built from the inputs are
    /// checked against; read before the inputs (Acquire).
    #[inline]
    pub fn publication(&self) -> (u64, u64) {
        (self.published_ms(), self.epoch())
    }

    /// Counters drive the pick at wall time `now_ms` (before valid-until).
    #[inline]
    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.h(H_VALID_UNTIL).load(Relaxed)
    }

    /// Counts one request sent to peer `i`.
    #[inline]
    pub fn count(&self, i: usize) {
        self.p(i, P_TOTAL).fetch_add(1, Relaxed);
    }

    /// Counts the end of a request on peer `i` counted by
    /// [`UpstreamZone::count`] while the zone had `epoch`; ignored if the
    /// zone was cleared since.
    #[inline]
    pub fn finish(&self, i: usize, epoch: u64) {
        if i < self.n && self.epoch() == epoch {
            self.p(i, P_DONE).fetch_add(1, Relaxed);
        }
    }

    /// Counts a request to peer `i` that failed (nginx's `free` with
    /// NGX_PEER_FAILED: connection refused, timeout, bad answer), under the
    /// same epoch rule as [`UpstreamZone::finish`].
    #[inline]
    pub fn failed(&self, i: usize, epoch: u64) {
        if i < self.n && self.epoch() == epoch {
            self.p(i, P_FAILED).fetch_add(1, Relaxed);
        }
    }

    /// Starts peer `i`'s slow start at `now_ms`: it answered after nginx
    /// had marked it failed (`max_fails`).
    #[inline]
    pub fn start_ramp(&self, i: usize, now_ms: u64) {
        if i < self.n {
            self.p(i, P_RAMP).store(now_ms.max(1), Relaxed);
        }
    }

    /// When peer `i`'s slow start began (0: never), a cold word read only
    /// by upstreams with `slow_start=`.
    #[inline]
    pub fn ramp_since(&self, i: usize) -> u64 {
        if i < self.n {
            self.p(i, P_RAMP).load(Relaxed)
        } else {
            0
        }
    }

    /// Some peer other than `i` was sent a request (the upstream serves
    /// traffic).
    pub(super) fn serving_besides(&self, i: usize) -> bool {
        (0..self.n).any(|j| j != i && self.total(j) > 0)
    }

    /// Counts a request answered at once because every peer was at its
    /// in-flight limit (the overload guard).
    #[inline]
    pub fn guard_reject(&self) {
        self.h(H_REJECTED).fetch_add(1, Relaxed);
    }

    /// Requests in flight on peer `i` (sent and not yet done, over every
    /// worker).
    #[inline]
    pub fn in_flight(&self, i: usize) -> u64 {
        let hot = self.hot(i);
        let done = hot[P_DONE].load(Relaxed);
        hot[P_TOTAL].load(Relaxed).saturating_sub(done)
    }

    /// Peer `i`'s requests in flight, the share's [`share_weight`] and the
    /// in-flight limit as published, from the peer's hot words (one bounds
    /// check, one cache line): what a worker's copy of the shares is built
    /// from.
    #[inline(always)]
    pub fn pick_view(&self, i: usize) -> (u64, u32, u32) {
        let hot = self.hot(i);
        let done = hot[P_DONE].load(Relaxed);
        let in_flight = hot[P_TOTAL].load(Relaxed).saturating_sub(done);
        let (share, limit) = unpack_share(hot[P_SHARE].load(Relaxed));
        (in_flight, share, limit)
    }

    /// Remaining allocation `L = target - total` of peer `i` (what the
    /// paper's pick compares).
    #[inline]
    pub fn remaining(&self, i: usize) -> f64 {
        f(self.p(i, P_TARGET).load(Relaxed)) - self.p(i, P_TOTAL).load(Relaxed) as f64
    }

    /// Requests sent to peer `i` since the zone was created.
    pub fn total(&self, i: usize) -> u64 {
        self.p(i, P_TOTAL).load(Relaxed)
    }

    /// Requests to peer `i` that ended, since the zone was created.
    pub fn done(&self, i: usize) -> u64 {
        self.p(i, P_DONE).load(Relaxed)
    }

    /// Failed requests to peer `i`.
    pub fn failures(&self, i: usize) -> u64 {
        self.p(i, P_FAILED).load(Relaxed)
    }

    /// Every peer's requests sent.
    pub fn totals(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.total(i)).collect()
    }

    /// Every peer's requests ended.
    pub fn dones(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.done(i)).collect()
    }

    /// Every peer's failed requests.
    pub fn all_failures(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.failures(i)).collect()
    }

    /// Requests the overload guard answered at once.
    pub fn guard_rejections(&self) -> u64 {
        self.h(H_REJECTED).load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinit_keeps_same_upstream_and_w() {
        let z = crate::zone::test_words(2);
        let s = UpstreamZone::new(&z, 2).unwrap();
        s.init(7);
        s.count(0);
        s.set_w(Some([1.0, 0.0, 0.5, 0.0]));
        assert!(s.init(7));
        assert_eq!(s.total(0), 1);
        assert_eq!(s.generation(), 1);
        // different peers: counts cleared, W kept
        assert!(!s.init(8));
        assert_eq!(s.total(0), 0);
        assert_eq!(s.w(), Some([1.0, 0.0, 0.5, 0.0]));
    }

    #[test]
    fn in_flight_over_epochs() {
        let z = crate::zone::test_words(2);
        let s = UpstreamZone::new(&z, 2).unwrap();
        s.init(1);
        let e = s.epoch();
        s.count(0);
        s.count(0);
        s.count(1);
        assert_eq!((s.in_flight(0), s.in_flight(1)), (2, 1));
        s.finish(0, e);
        assert_eq!(s.in_flight(0), 1);
        // a reload with other peers clears the zone: requests counted
        // before end without touching the new counts
        assert!(!s.init(2));
        assert_ne!(s.epoch(), e);
        s.count(0);
        s.finish(0, e);
        s.finish(1, e);
        assert_eq!((s.in_flight(0), s.done(0), s.done(1)), (1, 0, 0));
        s.finish(0, s.epoch());
        assert_eq!(s.in_flight(0), 0);
        s.failed(0, e);
        assert_eq!(s.failures(0), 0);
        s.failed(0, s.epoch());
        assert_eq!(s.all_failures(), vec![1, 0]);
        // more done than sent can never show as a huge number
        s.finish(1, s.epoch());
        assert_eq!(s.in_flight(1), 0);
        s.finish(7, s.epoch()); // out of range: ignored
    }

    #[test]
    fn too_small_zone_rejected() {
        let z = crate::zone::test_words(2);
        assert!(UpstreamZone::new(&z, 3).is_none());
    }
}
