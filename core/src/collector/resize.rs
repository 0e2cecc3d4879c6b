//! Noticing a VM whose CPU size changed between inventory reads (a vCPU
//! hot-add, a CPU limit changed, a vMotion to a host of another clock):
//! every sample of `cpu.usagemhz` (MHz) and `cpu.usage` (percent of the
//! VM's CPU) implies the VM's CPU size as vSphere counts it at that moment,
//! at no extra call. The first implied size after an inventory read is the
//! VM's baseline; a later one more than [`TOLERANCE`] away from it makes
//! the inventory due again (at most once every [`REREAD_INTERVALS`] poll
//! intervals: a minute at vSphere's 20-s cadence), so the new capacity
//! counts within a sample or three instead of up to 5 minutes.
//!
//! The implied size is not used as the capacity itself: with a CPU limit
//! vSphere's percentage is of the vCPUs, not of the limit, and the
//! inventory's `maxCpuUsage` stays the one source of capacity.

use std::collections::HashMap;

use super::runtime::Level;
use super::Collector;
use crate::vsphere::xml::EntityMetric;

/// A relative change of the implied CPU size that counts as a resize.
pub const TOLERANCE: f64 = 0.10;

/// Samples below this `cpu.usage` (hundredths of a percent: 5 %) imply no
/// size: their rounding is too coarse.
pub const MIN_USAGE: i64 = 500;

/// The inventory is read again for a resize at most once every this many
/// poll intervals.
pub const REREAD_INTERVALS: u64 = 3;

/// The implied CPU size of each VM since the last inventory read.
#[derive(Debug, Default)]
pub struct SizeWatch {
    /// Baseline implied size, MHz, by VM (moref).
    base: HashMap<String, f64>,
    /// A resize seen since the last inventory read: (VM, before, now).
    seen: Option<(String, f64, f64)>,
}

/// The VM's CPU size a sample implies, MHz: `mhz` used is `pct`
/// hundredths of a percent of it.
pub fn implied_mhz(mhz: i64, pct: i64) -> Option<f64> {
    (pct >= MIN_USAGE && mhz > 0).then(|| mhz as f64 * 10_000.0 / pct as f64)
}

impl SizeWatch {
    /// Takes VM `vm`'s newest implied size; true if it is the first
    /// resize seen since the last inventory read (the caller says so).
    pub fn observe(&mut self, vm: &str, mhz: f64) -> bool {
        let Some(&base) = self.base.get(vm) else {
            self.base.insert(vm.to_string(), mhz);
            return false;
        };
        if (mhz / base - 1.0).abs() <= TOLERANCE || self.seen.is_some() {
            return false;
        }
        self.seen = Some((vm.to_string(), base, mhz));
        true
    }

    /// A resize seen since the last inventory read: (VM, before, now).
    pub fn seen(&self) -> Option<&(String, f64, f64)> {
        self.seen.as_ref()
    }

    /// The inventory was read: every VM takes a new baseline.
    pub fn reset(&mut self) {
        self.base.clear();
        self.seen = None;
    }
}

impl Collector<'_, '_> {
    /// Gives endpoint `k`'s size watch the newest implied size of every VM
    /// in a QueryPerf answer, and says once when one changed.
    pub(super) fn watch_sizes(&mut self, k: usize, metrics: &[EntityMetric], ids: (i32, i32)) {
        let ep = &mut self.eps[k];
        let mut first: Option<String> = None;
        for m in metrics {
            let Some((pos, _)) = m.samples.iter().enumerate().max_by_key(|(_, s)| s.0) else {
                continue;
            };
            let (Some(mhz), Some(pct)) = (m.value(ids.0, pos), m.value(ids.1, pos)) else {
                continue;
            };
            if let Some(size) = implied_mhz(mhz, pct) {
                if ep.sizes.observe(&m.entity, size) {
                    first = Some(m.entity.clone());
                }
            }
        }
        let Some(moref) = first else { return };
        let Some((_, was, now)) = ep.sizes.seen() else {
            return;
        };
        let name = ep
            .inventory
            .iter()
            .find(|v| v.moref == moref)
            .map_or(moref.as_str(), |v| v.name.as_str());
        self.rt.log(
            Level::Notice,
            &format!(
                "dwepc: vSphere \"{}\": VM \"{name}\" changed size (its counters imply {now:.0} MHz of CPU, {was:.0} MHz before): reading the inventory again",
                self.spec.endpoints[k].name
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implied_size_needs_enough_usage() {
        assert_eq!(implied_mhz(1000, 5000), Some(2000.0));
        assert_eq!(implied_mhz(2000, 5000), Some(4000.0));
        assert_eq!(implied_mhz(10, 100), None);
        assert_eq!(implied_mhz(0, 5000), None);
    }

    #[test]
    fn a_resize_is_seen_once_until_the_inventory_is_read() {
        let mut w = SizeWatch::default();
        assert!(!w.observe("vm-1", 2000.0)); // baseline
        assert!(!w.observe("vm-1", 2100.0)); // within 10 %
        assert!(!w.observe("vm-2", 4000.0));
        assert!(w.seen().is_none());
        assert!(w.observe("vm-1", 4000.0)); // doubled
        assert_eq!(w.seen(), Some(&("vm-1".to_string(), 2000.0, 4000.0)));
        assert!(!w.observe("vm-2", 8000.0)); // said once until read
        w.reset();
        assert!(!w.observe("vm-1", 4000.0)); // new baseline
        assert!(!w.observe("vm-1", 4100.0));
        assert!(w.seen().is_none());
        assert!(w.observe("vm-1", 3000.0)); // shrunk (a limit set)
    }
}
