//! This worker's copy of the shares and in-flight limits the collector
//! published ([`ShareTable`]), in the form the per-share comparisons read
//! them ([`ShareLimit`]): a share weight of at least 1 and the limit as a
//! plain bound. A scan then loads only each peer's two count words from
//! the zone, not its packed share word, and does not unpack it or test for
//! a weight or limit of 0 per peer. Rebuilt when the zone says the
//! collector published again or the zone was cleared
//! ([`UpstreamZone::publication`]): once per worker per `interval`, not per
//! request, in place. One table per zone.
//!
//! The in-flight counts stay in the zone: they are what every worker must
//! see of the others' requests.

use crate::policy::slow_start::{self, Ramp, Ramping};
use crate::zone::UpstreamZone;

/// No in-flight limit, as a bound: a published limit of 0 (or of 2³² − 1,
/// the same).
pub const NO_LIMIT: u32 = u32::MAX;

/// The most requests in flight the per-share picks compare: a count is
/// clamped to it, so that it plus one, times a 32-bit share weight, fits
/// 64 bits.
pub const MOST_COMPARED: u64 = u32::MAX as u64 - 1;

/// A peer's share and in-flight limit as the per-share picks compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareLimit {
    /// The share's weight ([`crate::zone::share_weight`]), at least 1: a
    /// share of 0 compares, and ties, as the smallest positive one.
    pub share: u32,
    /// Requests in flight below which the peer counts; [`NO_LIMIT`]: none.
    pub limit: u32,
}

impl ShareLimit {
    /// What nothing published stands for: the smallest share, no limit.
    pub const UNPUBLISHED: ShareLimit = ShareLimit {
        share: 1,
        limit: NO_LIMIT,
    };

    /// A published share weight and limit (0: none) as compared.
    #[inline(always)]
    pub fn of(share: u32, limit: u32) -> ShareLimit {
        ShareLimit {
            share: share.max(1),
            limit: if limit == 0 { NO_LIMIT } else { limit },
        }
    }

    /// The peer takes one more request with `in_flight` in flight (with
    /// [`NO_LIMIT`], whatever the count: it is compared at most
    /// [`MOST_COMPARED`], as the picks compare it).
    #[inline(always)]
    pub fn admits(self, in_flight: u64) -> bool {
        in_flight.min(MOST_COMPARED) < self.limit as u64
    }

    /// The same at ramp fraction `f` of slow start: the share and a limit
    /// scaled ([`slow_start::weight`], [`slow_start::limit`]); none stays
    /// none.
    #[inline]
    fn ramped(self, f: f64) -> ShareLimit {
        ShareLimit {
            share: slow_start::weight(self.share, f),
            limit: match self.limit {
                NO_LIMIT => NO_LIMIT,
                l => slow_start::limit(l, f),
            },
        }
    }
}

/// A peer below its in-flight limit, as a per-share pick sees it.
#[derive(Clone, Copy, Debug)]
pub struct ShareView {
    /// Requests in flight over every worker (from the zone).
    pub in_flight: u64,
    /// Its share's weight as compared ([`ShareLimit::share`], scaled while
    /// it ramps).
    pub share: u32,
    pub ramping: Option<Ramping>,
}

/// This worker's copy of one upstream zone's published shares and limits,
/// by slot.
#[derive(Debug, Default)]
pub struct ShareTable {
    /// The zone's publication it was built from.
    built_for: Option<(u64, u64)>,
    slots: Vec<ShareLimit>,
}

/// What a pick reads of a [`ShareTable`]: its slots, held by value (so that
/// a scan keeps where they are in registers rather than reloading it
/// through the table per peer). The default is no table: every slot
/// [`ShareLimit::UNPUBLISHED`] (for picks that read no shares).
#[derive(Clone, Copy, Debug, Default)]
pub struct Shares<'a> {
    slots: &'a [ShareLimit],
}

impl ShareTable {
    /// A table built from `zone` now.
    pub fn of(zone: UpstreamZone<'_>) -> ShareTable {
        let mut t = ShareTable::default();
        t.refresh(zone);
        t
    }

    /// What a pick reads of the table.
    #[inline]
    pub fn shares(&self) -> Shares<'_> {
        Shares { slots: &self.slots }
    }

    /// Rebuilds the table if the collector published again or the zone was
    /// cleared since it was built (true if it did).
    #[inline]
    pub fn refresh(&mut self, zone: UpstreamZone<'_>) -> bool {
        // the publication first (Acquire): the shares read after it are at
        // least as new
        let key = zone.publication();
        if self.built_for == Some(key) && self.slots.len() == zone.len() {
            return false;
        }
        self.slots.clear();
        self.slots.extend((0..zone.len()).map(|i| {
            let (_, share, limit) = zone.pick_view(i);
            ShareLimit::of(share, limit)
        }));
        self.built_for = Some(key);
        true
    }
}

impl Shares<'_> {
    /// Slot `slot`'s share and limit ([`ShareLimit::UNPUBLISHED`] past the
    /// table's end).
    #[inline(always)]
    pub fn get(&self, slot: usize) -> ShareLimit {
        match self.slots.get(slot) {
            Some(&s) => s,
            None => {
                // a pick per share reads a table of every slot: out of line
                std::hint::cold_path();
                ShareLimit::UNPUBLISHED
            }
        }
    }

    /// What a per-share pick reads of peer `slot`: its requests in flight
    /// (from `zone`), share and limit (from the table), the share and limit
    /// scaled while it ramps (`ramp`); `None` at that limit.
    #[inline(always)]
    pub fn view(&self, zone: UpstreamZone<'_>, slot: usize, ramp: Ramp) -> Option<ShareView> {
        let in_flight = zone.in_flight(slot);
        let ramping = ramp.at(zone, slot);
        let b = match ramping {
            None => self.get(slot),
            Some(r) => self.get(slot).ramped(r.f),
        };
        b.admits(in_flight).then_some(ShareView {
            in_flight,
            share: b.share,
            ramping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::share_weight;

    #[test]
    fn the_table_follows_each_publication_and_clear() {
        let words = crate::zone::test_words(3);
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        // nothing published: the smallest weight, no limit
        let mut t = ShareTable::of(z);
        assert_eq!(t.shares().get(0), ShareLimit::UNPUBLISHED);
        assert!(!t.refresh(z));
        // a publication: its shares; a share of 0 as 1, a limit of 0 none
        z.apply_shares(&[0.5, 0.0, 0.25], &[4, 2, 0], u64::MAX, 1_000);
        assert!(t.refresh(z) && !t.refresh(z));
        let half = share_weight(0.5);
        assert_eq!(
            t.shares().get(0),
            ShareLimit {
                share: half,
                limit: 4
            }
        );
        assert_eq!(t.shares().get(1), ShareLimit { share: 1, limit: 2 });
        assert_eq!(t.shares().get(2).limit, NO_LIMIT);
        assert_eq!(t.shares().get(3), ShareLimit::UNPUBLISHED, "past the end");
        // another in the same millisecond is still seen
        z.apply_shares(&[0.25, 0.25, 0.5], &[1, 1, 1], u64::MAX, 1_000);
        assert!(t.refresh(z));
        assert_eq!(t.shares().get(2).share, half);
        // the zone cleared for other peers, then published with the same
        // stamp as before: rebuilt (another epoch)
        let before = z.published_ms();
        z.init(2);
        assert!(t.refresh(z));
        assert_eq!(t.shares().get(2), ShareLimit::UNPUBLISHED);
        z.apply_shares(&[0.5, 0.5, 0.0], &[3, 3, 3], u64::MAX, before);
        assert_eq!(z.published_ms(), before);
        assert!(t.refresh(z));
        assert_eq!(t.shares().get(0).limit, 3);
    }

    #[test]
    fn a_view_is_none_at_the_limit_and_ramps_the_bound() {
        let words = crate::zone::test_words(2);
        let z = UpstreamZone::new(&words, 2).unwrap();
        z.init(1);
        z.apply_shares(&[0.5, 0.5], &[2, 0], u64::MAX, 1);
        let t = ShareTable::of(z);
        let off = Ramp::default();
        z.count(0);
        assert_eq!(t.shares().view(z, 0, off).map(|v| v.in_flight), Some(1));
        z.count(0);
        assert!(t.shares().view(z, 0, off).is_none(), "at its limit");
        for _ in 0..1_000 {
            z.count(1);
        }
        assert!(t.shares().view(z, 1, off).is_some(), "no limit");
        // a tenth of the way through slow start: a tenth of the share, a
        // limit of one; no limit stays none
        z.start_ramp(1, 1_000);
        let ramp = Ramp {
            now_ms: 2_000,
            slow_start_ms: 10_000,
        };
        let v = t.shares().view(z, 1, ramp).unwrap();
        assert_eq!(v.share, (share_weight(0.5) as f64 * 0.1).round() as u32);
        assert!(v.ramping.is_some());
        z.start_ramp(0, 1_000);
        assert!(t.shares().view(z, 0, ramp).is_none());
        // the empty table: unpublished
        let v = Shares::default().view(z, 1, off).unwrap();
        assert_eq!(v.share, 1);
    }
}
