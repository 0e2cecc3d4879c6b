//! The resource vocabulary, defined once: the four resources a VM's
//! counters measure, in index order, with their names, units, vSphere
//! counters and the largest capacity a configuration may give.
//!
//! Every per-resource vector in dwepc ([`Res`]) is indexed by these
//! positions: CPU in MHz, memory in MB, network and disk in KB/s.

/// Number of resources.
pub const R: usize = 4;

/// A per-resource vector (CPU, memory, network, disk).
pub type Res = [f64; R];

/// Position of CPU in a [`Res`].
pub const CPU: usize = 0;
/// Position of memory in a [`Res`].
pub const MEM: usize = 1;
/// Position of the network in a [`Res`].
pub const NET: usize = 2;
/// Position of the disk in a [`Res`].
pub const DISK: usize = 3;

/// Names in index order, as written in the configuration (`cpu=`,
/// `mem_ratio=`), on the status page and in Prometheus labels.
pub const RESOURCES: [&str; R] = ["cpu", "mem", "net", "disk"];

/// Units of capacities, reservations and usage, in index order.
pub const UNITS: [&str; R] = ["MHz", "MB", "KB/s", "KB/s"];

/// Resources whose use is a rate that requests drive (CPU, network,
/// disk); memory is a level.
pub const RATE_RESOURCES: [bool; R] = [true, false, true, true];

/// Largest capacity (and reservation) a configuration may give, per
/// resource: far above any VM (768 vCPUs at 5 GHz is 3.8e6 MHz; 24 TB of
/// memory is 2.5e7 MB; 8 Tbit/s is 1e9 KB/s), so only a typo is refused.
pub const MAX_CAPACITY: Res = [1e7, 1e8, 1e9, 1e9];

/// The vSphere counter read per resource, by `group.name.rollup`, in
/// index order (realtime, 20-s averages; memory in KB).
pub const COUNTERS: [&str; R] = [
    "cpu.usagemhz.average",
    "mem.consumed.average",
    "net.usage.average",
    "disk.usage.average",
];

/// The memory counter read where `mem.consumed.average` is missing.
pub const MEM_FALLBACK: &str = "mem.active.average";

/// The VM's CPU use as hundredths of a percent of its CPU (read beside
/// `cpu.usagemhz` to notice a resize, not as a resource).
pub const CPU_PERCENT: &str = "cpu.usage.average";

/// Hypervisor contention: time the VM's vCPUs waited for a physical CPU,
/// ms summed over vCPUs per sample interval.
pub const READY: &str = "cpu.ready.summation";

/// Network capacity assumed for a VM when none is configured: the link
/// speed a vmxnet3 adapter reports (10 Gbit/s), in KB/s.
pub const DEFAULT_NET_KBPS: f64 = 1_250_000.0;

/// Largest magnitude any input value may take before it counts as
/// missing.
const HUGE: f64 = 1e15;

/// A usable capacity as the models take it: a finite positive amount, or
/// NaN for unknown.
pub fn capacity(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 && x < HUGE {
        x
    } else {
        f64::NAN
    }
}

/// A measured amount (usage, ready time): finite, not negative (vSphere's
/// -1 marks a gap) and not absurdly large, or NaN for missing.
pub fn amount(x: f64) -> f64 {
    if (0.0..HUGE).contains(&x) {
        x
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_cleaned_to_nan() {
        assert_eq!(capacity(2000.0), 2000.0);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(capacity(bad).is_nan(), "{bad}");
        }
        assert_eq!(amount(0.0), 0.0);
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(amount(bad).is_nan(), "{bad}");
        }
        assert_eq!((RESOURCES[CPU], RESOURCES[DISK]), ("cpu", "disk"));
        assert_eq!((UNITS[MEM], COUNTERS[NET]), ("MB", "net.usage.average"));
    }
}
