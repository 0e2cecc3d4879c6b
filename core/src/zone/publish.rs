//! What the collector publishes into an upstream's zone, and what the
//! status pages read back: each field's writer and reader side by side.
//! The policy in force writes the pick's inputs (allocations, or shares
//! and limits) and its own estimates; the collector writes what it learnt
//! of each peer's VM (capacity, newest usage, CPU ready).

use std::sync::atomic::Ordering::*;

use super::layout::*;
use super::upstream::{f, pack_share, unpack_share, weight_share};
use super::{Reason, UpstreamZone};
use crate::resources::{Res, R};

/// What the status page shows of one peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerInfo {
    /// Usable capacity.
    pub capacity: Res,
    /// Headroom Q.
    pub q: Res,
    /// Allocation of the current period.
    pub allocation: f64,
    /// Requests in the current period.
    pub v: u64,
    /// Remaining allocation.
    pub l: f64,
    /// Requests since the zone was created.
    pub total: u64,
    /// The peer's VM reports counters.
    pub has_counters: bool,
    /// `cpu.ready.summation` of the newest sample in percent of its
    /// interval (summed over vCPUs, as vSphere's VM-level value); NaN when
    /// not reported. The shares mode scales CPU capacity by it.
    pub cpu_ready_pct: f64,
    /// Requests that ended.
    pub done: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests in flight (all workers).
    pub in_flight: u64,
    /// Share in force (shares mode).
    pub share: f64,
    /// In-flight limit (0 = none).
    pub limit: u64,
    /// Target share of the last sample.
    pub target_share: f64,
    /// Background use per resource.
    pub background: Res,
    /// CPU capacity after CPU ready.
    pub effective_cpu: f64,
    /// Use of the VM in its newest sample, per resource.
    pub usage: Res,
    /// Share of the requests it was sent in the newest sample period
    /// (NaN: none yet).
    pub got_share: f64,
}

impl UpstreamZone<'_> {
    /// Sets every published value to "unknown" (a zone just cleared).
    pub(super) fn clear_published(&self) {
        let nan = f64::NAN.to_bits();
        for i in 0..self.len() {
            for off in [P_ALLOC, P_READY, P_TSHARE, P_ECPU, P_GOT] {
                self.p(i, off).store(nan, Relaxed);
            }
            for j in 0..R {
                for off in [P_CAP, P_Q, P_BG, P_USE] {
                    self.p(i, off + j).store(nan, Relaxed);
                }
            }
        }
        for j in 0..R {
            self.h(H_COST + j).store(nan, Relaxed);
        }
        self.h(H_RATE).store(nan, Relaxed);
    }

    /// Marks the pick's inputs in force until `valid_until_ms` (wall
    /// clock), published at `now_ms` (stamped a millisecond after the
    /// publication before if that was as late, so that no two
    /// publications share a stamp, even from two writers at once).
    fn in_force(&self, valid_until_ms: u64, now_ms: u64) {
        // after the inputs (Release): a reader of `published_ms` sees them
        let stamp = |last: u64| Some(now_ms.max(last.saturating_add(1)));
        let _ = self.h(H_APPLIED).fetch_update(AcqRel, Relaxed, stamp);
        self.h(H_REASON).store(Reason::Active as u64, Relaxed);
        self.h(H_VALID_UNTIL).store(valid_until_ms, Release);
    }

    /// Starts a new period: `alloc` requests for each peer from now on,
    /// valid until `valid_until_ms` (wall clock).
    pub fn apply(&self, alloc: &[f64], valid_until_ms: u64, now_ms: u64) {
        for (i, a) in alloc.iter().enumerate().take(self.len()) {
            let base = self.total(i);
            self.p(i, P_BASE).store(base, Relaxed);
            self.p(i, P_ALLOC).store(a.to_bits(), Relaxed);
            self.p(i, P_TARGET)
                .store((base as f64 + a).to_bits(), Relaxed);
        }
        self.in_force(valid_until_ms, now_ms);
    }

    /// Publishes shares and in-flight limits, valid until `valid_until_ms`
    /// (wall clock).
    pub fn apply_shares(&self, shares: &[f64], limits: &[u64], valid_until_ms: u64, now_ms: u64) {
        for i in 0..self.len() {
            let s = shares.get(i).copied().unwrap_or(0.0);
            let l = limits.get(i).copied().unwrap_or(0).min(u32::MAX as u64) as u32;
            self.p(i, P_SHARE).store(pack_share(s, l), Relaxed);
        }
        self.in_force(valid_until_ms, now_ms);
    }

    /// Stops using counters (weighted round robin) for `reason`.
    pub fn disable(&self, reason: Reason) {
        self.h(H_VALID_UNTIL).store(0, Release);
        self.h(H_REASON).store(reason as u64, Relaxed);
        for i in 0..self.len() {
            self.p(i, P_ALLOC).store(f64::NAN.to_bits(), Relaxed);
        }
    }

    /// Time until which the published inputs of the pick are valid.
    pub fn valid_until(&self) -> u64 {
        self.h(H_VALID_UNTIL).load(Relaxed)
    }

    /// Current reason (Stale when the inputs expired by time).
    pub fn reason(&self, now_ms: u64) -> Reason {
        let r = Reason::from_u64(self.h(H_REASON).load(Relaxed));
        if r == Reason::Active && !self.usable(now_ms) {
            Reason::Stale
        } else {
            r
        }
    }

    /// Sets the reason without touching the pick's inputs.
    pub fn set_reason(&self, r: Reason) {
        self.h(H_REASON).store(r as u64, Relaxed);
    }

    /// Share and in-flight limit of peer `i`.
    #[inline]
    pub fn share(&self, i: usize) -> (f64, u32) {
        let (weight, limit) = unpack_share(self.p(i, P_SHARE).load(Relaxed));
        (weight_share(weight), limit)
    }

    /// Published shares of every peer, to resume from (`None` unless all
    /// are positive).
    pub fn shares(&self) -> Option<Vec<f64>> {
        let s: Vec<f64> = (0..self.len()).map(|i| self.share(i).0).collect();
        s.iter().all(|x| x.is_finite() && *x > 0.0).then_some(s)
    }

    /// Published allocation of peer `i` (the weight, in wlc mode).
    #[inline]
    pub fn allocation(&self, i: usize) -> f64 {
        f(self.p(i, P_ALLOC).load(Relaxed))
    }

    /// Publishes the shares mode's estimates: cost per request, completed
    /// requests per second, and per peer the target share, background use
    /// and effective CPU capacity.
    pub fn set_model(&self, cost: Option<Res>, rate: Option<f64>, peers: &[(f64, Res, f64)]) {
        let cost = cost.unwrap_or([f64::NAN; R]);
        for (j, c) in cost.iter().enumerate() {
            self.h(H_COST + j).store(c.to_bits(), Relaxed);
        }
        self.h(H_RATE)
            .store(rate.unwrap_or(f64::NAN).to_bits(), Relaxed);
        for (i, (t, bg, ecpu)) in peers.iter().enumerate().take(self.len()) {
            self.p(i, P_TSHARE).store(t.to_bits(), Relaxed);
            for (j, b) in bg.iter().enumerate() {
                self.p(i, P_BG + j).store(b.to_bits(), Relaxed);
            }
            self.p(i, P_ECPU).store(ecpu.to_bits(), Relaxed);
        }
    }

    /// Published cost per request (NaN where unknown).
    pub fn cost(&self) -> Res {
        std::array::from_fn(|j| f(self.h(H_COST + j).load(Relaxed)))
    }

    /// Published completed requests per second.
    pub fn rate(&self) -> f64 {
        f(self.h(H_RATE).load(Relaxed))
    }

    /// Publishes W (or its absence).
    pub fn set_w(&self, w: Option<Res>) {
        for j in 0..R {
            let x = w.map(|w| w[j]).unwrap_or(f64::NAN);
            self.h(H_W + j).store(x.to_bits(), Relaxed);
        }
    }

    /// Published W.
    pub fn w(&self) -> Option<Res> {
        let w: Res = std::array::from_fn(|j| f(self.h(H_W + j).load(Relaxed)));
        w.iter().all(|x| x.is_finite()).then_some(w)
    }

    /// Records window facts for the status page.
    pub fn set_window(&self, len: usize, sample_end_ms: u64) {
        self.h(H_WINDOW).store(len as u64, Relaxed);
        self.h(H_SAMPLE_END).store(sample_end_ms, Relaxed);
    }

    /// Samples in the window and end time of the newest (0 = none).
    pub fn window(&self) -> (u64, u64) {
        (
            self.h(H_WINDOW).load(Relaxed),
            self.h(H_SAMPLE_END).load(Relaxed),
        )
    }

    /// Publishes the usable capacity of peer `i`'s VM.
    pub fn set_capacity(&self, i: usize, cap: Res) {
        for (j, c) in cap.iter().enumerate() {
            self.p(i, P_CAP + j).store(c.to_bits(), Relaxed);
        }
    }

    /// Publishes what the policy knows of peer `i`: its headroom (NaN where
    /// the policy has none) and whether its VM reports counters.
    pub fn set_peer_model(&self, i: usize, q: Res, has_counters: bool) {
        for (j, x) in q.iter().enumerate() {
            self.p(i, P_Q + j).store(x.to_bits(), Relaxed);
        }
        self.p(i, P_FLAGS)
            .store(if has_counters { FLAG_COUNTERS } else { 0 }, Relaxed);
    }

    /// Publishes the CPU ready time of peer `i`'s VM in its newest sample,
    /// in percent of the sample's interval (NaN: not reported).
    pub fn set_cpu_ready(&self, i: usize, pct: f64) {
        self.p(i, P_READY).store(pct.to_bits(), Relaxed);
    }

    /// Publishes the share of the requests peer `i` was sent in the
    /// newest sample period that had any (whatever picked them: observe
    /// mode shows it beside the share dwepc would give).
    pub fn set_got_share(&self, i: usize, share: f64) {
        self.p(i, P_GOT).store(share.to_bits(), Relaxed);
    }

    /// Publishes what peer `i`'s VM used in its newest sample, per
    /// resource (MHz, MB, KB/s, KB/s; NaN: not reported).
    pub fn set_usage(&self, i: usize, usage: Res) {
        for (j, x) in usage.iter().enumerate() {
            self.p(i, P_USE + j).store(x.to_bits(), Relaxed);
        }
    }

    /// Everything published of peer `i`, for the status pages.
    pub fn peer_info(&self, i: usize) -> PeerInfo {
        let total = self.total(i);
        let base = self.p(i, P_BASE).load(Relaxed);
        let res =
            |off: usize| -> Res { std::array::from_fn(|j| f(self.p(i, off + j).load(Relaxed))) };
        let (share, limit) = self.share(i);
        PeerInfo {
            capacity: res(P_CAP),
            q: res(P_Q),
            allocation: self.allocation(i),
            v: total.saturating_sub(base),
            l: self.remaining(i),
            total,
            has_counters: self.p(i, P_FLAGS).load(Relaxed) & FLAG_COUNTERS != 0,
            cpu_ready_pct: f(self.p(i, P_READY).load(Relaxed)),
            done: self.done(i),
            failed: self.failures(i),
            in_flight: self.in_flight(i),
            share,
            limit: limit as u64,
            target_share: f(self.p(i, P_TSHARE).load(Relaxed)),
            background: res(P_BG),
            effective_cpu: f(self.p(i, P_ECPU).load(Relaxed)),
            usage: res(P_USE),
            got_share: f(self.p(i, P_GOT).load(Relaxed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::upstream::share_weight;
    use super::*;

    #[test]
    fn apply_count_remaining() {
        let z = crate::zone::test_words(3);
        let s = UpstreamZone::new(&z, 3).unwrap();
        assert!(!s.init(42));
        assert!(!s.usable(0));
        assert_eq!(s.reason(1), Reason::NoSamples);
        s.count(1);
        s.count(1);
        s.apply(&[5.0, 3.0, -1.0], 1000, 10);
        assert!(s.usable(999) && !s.usable(1000));
        assert_eq!(s.remaining(1), 3.0);
        s.count(1);
        assert_eq!(s.remaining(1), 2.0);
        let p = s.peer_info(1);
        assert_eq!((p.v, p.total, p.allocation), (1, 3, 3.0));
        // CPU ready: unknown until published, per peer, in its own word
        assert!(p.cpu_ready_pct.is_nan());
        s.set_cpu_ready(1, 2.5);
        assert_eq!(s.peer_info(1).cpu_ready_pct, 2.5);
        assert!(s.peer_info(0).cpu_ready_pct.is_nan() && s.peer_info(2).cpu_ready_pct.is_nan());
        assert_eq!(s.remaining(1), 2.0);
        assert_eq!(s.reason(1001), Reason::Stale);
        s.disable(Reason::VsphereError);
        assert!(!s.usable(0));
        assert_eq!(s.reason(0), Reason::VsphereError);
    }

    #[test]
    fn shares_and_limits_packed() {
        assert_eq!(unpack_share(pack_share(0.25, 17)), (1 << 30, 17));
        assert_eq!(weight_share(unpack_share(pack_share(0.25, 17)).0), 0.25);
        assert_eq!(
            unpack_share(pack_share(1.0, u32::MAX)),
            (u32::MAX, u32::MAX)
        );
        assert_eq!(unpack_share(pack_share(0.0, 3)), (0, 3));
        assert_eq!(share_weight(-1.0), 0);
        assert_eq!(share_weight(f64::NAN), 0);
        assert!((weight_share(share_weight(0.123_456_7)) - 0.123_456_7).abs() < 1e-9);
        let z = crate::zone::test_words(3);
        let s = UpstreamZone::new(&z, 3).unwrap();
        s.init(9);
        assert!(s.shares().is_none());
        s.apply_shares(&[0.5, 0.3, 0.2], &[10, 6, 4], 1000, 0);
        assert!(s.usable(999));
        assert!((s.share(1).0 - 0.3).abs() < 1e-9 && s.share(1).1 == 6);
        let sh = s.shares().unwrap();
        assert!((sh[2] - 0.2).abs() < 1e-7);
        s.set_model(
            Some([100.0, f64::NAN, 2.0, f64::NAN]),
            Some(12.5),
            &[(0.4, [1.0; R], 2000.0)],
        );
        assert_eq!(s.cost()[0], 100.0);
        assert_eq!(s.rate(), 12.5);
        let p = s.peer_info(0);
        assert_eq!((p.share as f32, p.limit, p.target_share), (0.5, 10, 0.4));
        assert_eq!(p.effective_cpu, 2000.0);
        assert!(s.peer_info(1).target_share.is_nan());
    }
}
