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
