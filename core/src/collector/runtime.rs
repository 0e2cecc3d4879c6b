//! What the collector needs from the process it runs in ([`Runtime`]):
//! nginx's worker in the module, a test's scripted world in the unit tests.

use super::spec::SourceConfig;
use crate::vsphere::{Api, Error};

/// Log levels the runtime maps onto nginx's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
}

/// The collector's surroundings: logging, the stop signal, the process
/// table, the clock and the vSphere sessions.
pub trait Runtime {
    /// Writes one log line.
    fn log(&self, level: Level, msg: &str);
    /// True when the thread must stop (worker exiting, reload).
    fn stopping(&self) -> bool;
    /// True if the process `pid` still exists.
    fn alive(&self, pid: u64) -> bool;
    /// The clock every time the collector reads ([`crate::clock`]; a test
    /// sets its own).
    fn now_ms(&self) -> u64 {
        crate::clock::now_ms()
    }
    /// A new (not yet logged in) session with an endpoint: the SOAP
    /// client or the Prometheus client by default (a test scripts its
    /// own vCenter).
    fn open(&self, cfg: &SourceConfig) -> Result<Box<dyn Api>, Error> {
        Ok(match cfg {
            SourceConfig::Vsphere(c) => Box::new(crate::vsphere::client::Client::new(c.clone())?),
            SourceConfig::Prometheus(c) => Box::new(crate::prometheus::Client::new(c.clone())?),
        })
    }
}
