//! The monitoring pipeline VMware shops already run, as real processes on
//! loopback: `vmware_exporter` (PyPI, in the virtual environment
//! `scripts/install-exporter.sh` makes) reading the vCenter simulator,
//! and Debian's Prometheus scraping it (and nginx's own status page).
//! Each is stopped by its own PID when dropped.

pub mod exporter;
pub mod faults;
pub mod prometheus;

pub use exporter::VmwareExporter;
pub use faults::{Fault, FaultProxy};
pub use prometheus::{promtool_check, Prometheus, Target};

/// A loopback address of this caller's own (127.N.P.P from a sequence
/// number and the PID), so that several vCenter simulators can each
/// listen on port 443, where vmware_exporter looks for them.
pub fn own_loopback_ip() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!(
        "127.{}.{}.{}",
        100 + seq % 100,
        (pid >> 8) & 255,
        (pid & 255).max(1)
    )
}
