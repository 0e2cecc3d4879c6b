//! The vSphere side, and the calls every counter source answers ([`Api`]): a small SOAP client ([`client`]) for the calls dwepc
//! makes, what each answer may hold ([`budget`]), the decoders of the
//! answers ([`xml`]), what can go wrong ([`error`]), and how long to hold
//! back after a refused login ([`lockout`]). The collector drives a
//! session through [`Api`], which a test implements with a scripted
//! vCenter.

pub mod budget;
pub mod client;
pub mod error;
pub mod lockout;
pub mod xml;

pub use error::{Error, ErrorKind};
use xml::{EntityMetric, MoRef, VmInfo};

/// The calls the collector makes on one vSphere session: implemented by
/// [`client::Client`] over SOAP, and by the collector's tests with a
/// scripted vCenter.
pub trait Api {
    /// True once logged in.
    fn logged_in(&self) -> bool;
    /// RetrieveServiceContent + Login.
    fn connect(&mut self) -> Result<(), Error>;
    /// Logout (best effort; forgets the session either way).
    fn logout(&mut self);
    /// The session's cookie, once logged in (to hand it over).
    fn session(&self) -> Option<String>;
    /// RetrieveServiceContent, then carries on with the session `cookie`
    /// (another worker's) instead of logging in; the next call that needs
    /// a session tells whether it still lives (`NotAuthenticated`).
    fn adopt(&mut self, cookie: &str) -> Result<(), Error>;
    /// The performance counter catalog: (id, "group.name.rollup").
    fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error>;
    /// A ContainerView of all VMs.
    fn create_vm_view(&mut self) -> Result<MoRef, Error>;
    /// All VMs in `view` with the inventory properties, read page by page
    /// (vCenter answers a large inventory in pages); `between_pages` runs
    /// after each page but the last (the collector renews its lease there).
    fn vms(&mut self, view: &MoRef, between_pages: &mut dyn FnMut()) -> Result<Vec<VmInfo>, Error>;
    /// A VM's realtime refresh rate (s).
    fn refresh_rate(&mut self, vm: &str) -> Result<i32, Error>;
    /// One QueryPerf: `counters` of `vms` at `interval` seconds, the newest
    /// `max_sample` samples (the collector asks for at most
    /// [`budget::VMS_PER_QUERY`] VMs at once).
    fn query_perf(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        max_sample: u32,
    ) -> Result<Vec<EntityMetric>, Error>;
    /// The server clock (ms since the epoch).
    fn current_time(&mut self) -> Result<u64, Error>;
    /// Calls made by this session, by method.
    fn calls(&self) -> &std::collections::BTreeMap<&'static str, u64>;
    /// Bytes read and time spent waiting for answers by this session.
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}

/// What a session's answers cost: body bytes read and the time from
/// each call's start to the end of its answer (µs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes: u64,
    pub answer_us: u64,
}
