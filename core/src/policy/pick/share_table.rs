//! This worker's copy of the shares and in-flight limits the collector
//! published ([`ShareTable`]), in the form the per-share comparisons read
//! them: a weight of at least 1 and the limit as a plain bound. A scan then
//! loads only each peer's two count words from the zone, not its packed
//! share word, and does not unpack it or test for a weight or limit of 0 per
//! peer. Rebuilt when the zone says the collector published again
//! ([`UpstreamZone::published_ms`], never the same twice) or was cleared:
//! once per worker per `interval`, not per request, in place.
//!
//! The in-flight counts stay in the zone: they are what every worker must
//! see of the others' requests.

use crate::policy::slow_start::{self, Ramp, Ramping};
use crate::zone::UpstreamZone;

/// No in-flight limit, as a bound (a published limit of 0, or of 2³² − 1).
pub const NO_LIMIT: u32 = u32::MAX;

/// A peer's share weight and in-flight limit as compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The share's weight ([`crate::zone::share_weight`]), at least 1 (a
    /// share of 0 compares as the smallest positive one).
    pub weight: u32,
    /// Requests in flight below which the peer counts; [`NO_LIMIT`]: none.
    pub limit: u32,
}

impl Bound {
    /// What nothing published stands for: the smallest weight, no limit.
    pub const UNPUBLISHED: Bound = Bound {
        weight: 1,
        limit: NO_LIMIT,
    };

    /// A published share weight and limit (0: none) as compared.
    #[inline]
    pub fn of(weight: u32, limit: u32) -> Bound {
        Bound {
            weight: weight.max(1),
            limit: if limit == 0 { NO_LIMIT } else { limit },
        }
    }

    /// The same at ramp fraction `f` of slow start: the weight and a limit
    /// scaled ([`slow_start::weight`], [`slow_start::limit`]); none stays
    /// none.
    #[inline]
    fn ramped(self, f: f64) -> Bound {
        Bound {
            weight: slow_start::weight(self.weight, f),
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
    /// Its share's weight, at least 1 (scaled while it ramps).
    pub share: u32,
    pub ramping: Option<Ramping>,
}

/// This worker's copy of one upstream zone's published shares and limits,
/// by slot.
#[derive(Debug, Default)]
pub struct ShareTable {
    /// The zone's epoch and publication it was built from.
    built_for: Option<(u64, u64)>,
    bounds: Vec<Bound>,
}

/// The table of no zone: every peer [`Bound::UNPUBLISHED`] (for picks that
/// read no shares).
static NONE: ShareTable = ShareTable {
    built_for: None,
    bounds: Vec::new(),
};

impl ShareTable {
    /// A table built from `zone` now.
    pub fn of(zone: UpstreamZone<'_>) -> ShareTable {
        let mut t = ShareTable::default();
        t.refresh(zone);
        t
    }

    /// The empty table: every slot [`Bound::UNPUBLISHED`].
    pub fn none() -> &'static ShareTable {
        &NONE
    }

    /// Rebuilds the table if the collector published again or the zone was
    /// cleared since it was built (true if it did).
    #[inline]
    pub fn refresh(&mut self, zone: UpstreamZone<'_>) -> bool {
        // the publication first (Acquire): the shares read after it are at
        // least as new
        let key = (zone.published_ms(), zone.epoch());
        if self.built_for == Some(key) && self.bounds.len() == zone.len() {
            return false;
        }
        self.bounds.clear();
        self.bounds.extend((0..zone.len()).map(|i| {
            let (_, weight, limit) = zone.pick_view(i);
            Bound::of(weight, limit)
        }));
        self.built_for = Some(key);
        true
    }

    /// Slot `slot`'s share weight and limit ([`Bound::UNPUBLISHED`] past
    /// the table's end).
    #[inline(always)]
    pub fn bound(&self, slot: usize) -> Bound {
        self.bounds.get(slot).copied().unwrap_or(Bound::UNPUBLISHED)
    }

    /// What a per-share pick reads of peer `slot`: its requests in flight
    /// (from `zone`), share and limit (from the table), the share and limit
    /// scaled while it ramps (`ramp`); `None` at that limit.
    #[inline(always)]
    pub fn view(&self, zone: UpstreamZone<'_>, slot: usize, ramp: Ramp) -> Option<ShareView> {
        let in_flight = zone.in_flight(slot);
        let ramping = ramp.at(zone, slot);
        let b = match ramping {
            None => self.bound(slot),
            Some(r) => self.bound(slot).ramped(r.f),
        };
        (in_flight < b.limit as u64).then_some(ShareView {
            in_flight,
            share: b.weight,
            ramping,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::share_weight;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn the_table_follows_each_publication_and_clear() {
        let words: Vec<AtomicU64> = (0..crate::zone::words(3))
            .map(|_| AtomicU64::new(0))
            .collect();
        let z = UpstreamZone::new(&words, 3).unwrap();
        z.init(1);
        // nothing published: the smallest weight, no limit
        let mut t = ShareTable::of(z);
        assert_eq!(t.bound(0), Bound::UNPUBLISHED);
        assert!(!t.refresh(z));
        // a publication: its shares; a share of 0 as 1, a limit of 0 none
        z.apply_shares(&[0.5, 0.0, 0.25], &[4, 2, 0], u64::MAX, 1_000);
        assert!(t.refresh(z) && !t.refresh(z));
        let half = share_weight(0.5);
        assert_eq!(
            t.bound(0),
            Bound {
                weight: half,
                limit: 4
            }
        );
        assert_eq!(
            t.bound(1),
            Bound {
                weight: 1,
                limit: 2
            }
        );
        assert_eq!(t.bound(2).limit, NO_LIMIT);
        assert_eq!(t.bound(3), Bound::UNPUBLISHED, "past the end");
        // another in the same millisecond is still seen
        z.apply_shares(&[0.25, 0.25, 0.5], &[1, 1, 1], u64::MAX, 1_000);
        assert!(t.refresh(z));
        assert_eq!(t.bound(2).weight, half);
        // the zone cleared for other peers (same stamp): rebuilt
        let before = z.published_ms();
        z.init(2);
        assert!(z.published_ms() <= before);
        assert!(t.refresh(z));
        assert_eq!(t.bound(2), Bound::UNPUBLISHED);
    }

    #[test]
    fn a_view_is_none_at_the_limit_and_ramps_the_bound() {
        let words: Vec<AtomicU64> = (0..crate::zone::words(2))
            .map(|_| AtomicU64::new(0))
            .collect();
        let z = UpstreamZone::new(&words, 2).unwrap();
        z.init(1);
        z.apply_shares(&[0.5, 0.5], &[2, 0], u64::MAX, 1);
        let t = ShareTable::of(z);
        let off = Ramp::OFF;
        z.count(0);
        assert_eq!(t.view(z, 0, off).map(|v| v.in_flight), Some(1));
        z.count(0);
        assert!(t.view(z, 0, off).is_none(), "at its limit");
        for _ in 0..1_000 {
            z.count(1);
        }
        assert!(t.view(z, 1, off).is_some(), "no limit");
        // a tenth of the way through slow start: a tenth of the share, a
        // limit of one; no limit stays none
        z.start_ramp(1, 1_000);
        let ramp = Ramp {
            now_ms: 2_000,
            slow_start_ms: 10_000,
        };
        let v = t.view(z, 1, ramp).unwrap();
        assert_eq!(v.share, (share_weight(0.5) as f64 * 0.1).round() as u32);
        assert!(v.ramping.is_some());
        z.start_ramp(0, 1_000);
        assert!(t.view(z, 0, ramp).is_none());
        // the empty table: unpublished
        let v = ShareTable::none().view(z, 1, off).unwrap();
        assert_eq!(v.share, 1);
    }
}
