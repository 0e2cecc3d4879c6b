//! The collector's state of one endpoint (vSphere, or Prometheus) ([`EpRun`]): its session,
//! what the session learnt (counter catalog, VM view and inventory, clock
//! skew, refresh rate), when it polls next, and how it fared.

use std::collections::{BTreeMap, HashMap};

use super::resize::SizeWatch;
use crate::vsphere::xml::{MoRef, VmInfo};
use crate::vsphere::{Api, ErrorKind, Traffic};
use crate::zone::EndpointRecord;

/// How an endpoint's last poll went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EpState {
    /// Not polled yet.
    NeverPolled,
    /// The last poll succeeded.
    Healthy,
    /// The last poll failed with an error of this kind.
    Failing(ErrorKind),
}

/// One vSphere endpoint, as the collector runs it.
pub(super) struct EpRun<'z> {
    /// The session (None: none open).
    pub(super) client: Option<Box<dyn Api>>,
    /// Its record in the lease zone (calls, errors, login refusals).
    pub(super) record: Option<EndpointRecord<'z>>,
    /// Counter ids by `group.name.rollup`.
    pub(super) catalog: HashMap<String, i32>,
    pub(super) view: Option<MoRef>,
    pub(super) inventory: Vec<VmInfo>,
    /// When the inventory / the clock skew was last read (None: not in
    /// this session).
    pub(super) inventory_at: Option<u64>,
    /// The CPU size each VM's samples imply since that read.
    pub(super) sizes: SizeWatch,
    /// The realtime refresh rate, s (0: not read in this session).
    pub(super) refresh_s: i32,
    /// The server's clock minus ours.
    pub(super) skew_ms: i64,
    pub(super) skew_at: Option<u64>,
    pub(super) next_poll: u64,
    pub(super) backoff_ms: u64,
    /// The shortest poll interval of its upstreams.
    pub(super) interval_ms: u64,
    pub(super) state: EpState,
    /// Missing counters were logged (once).
    pub(super) missing_logged: bool,
    /// Calls made by sessions of this endpoint, by method (all sessions).
    pub(super) calls: BTreeMap<&'static str, u64>,
    /// Bytes and answer time of sessions closed so far.
    pub(super) traffic: Traffic,
    /// Refused logins in a row and the time of the next try, when the
    /// lease zone has no record for this endpoint.
    pub(super) auth_streak: u64,
    pub(super) auth_retry_at: u64,
    /// Just became the polling worker: the session a previous holder left
    /// in the record may be taken over (once).
    pub(super) may_reuse: bool,
}

impl<'z> EpRun<'z> {
    /// An endpoint not polled yet, with its record and poll interval.
    pub(super) fn new(record: Option<EndpointRecord<'z>>, interval_ms: u64) -> EpRun<'z> {
        EpRun {
            client: None,
            record,
            catalog: HashMap::new(),
            view: None,
            inventory: Vec::new(),
            inventory_at: None,
            sizes: SizeWatch::default(),
            refresh_s: 0,
            skew_ms: 0,
            skew_at: None,
            next_poll: 0,
            backoff_ms: 0,
            interval_ms,
            state: EpState::NeverPolled,
            missing_logged: false,
            calls: BTreeMap::new(),
            traffic: Traffic::default(),
            auth_streak: 0,
            auth_retry_at: 0,
            may_reuse: false,
        }
    }

    /// The open session's client (opened by the caller first).
    pub(super) fn api(&mut self) -> Result<&mut dyn Api, crate::vsphere::Error> {
        match self.client.as_deref_mut() {
            Some(c) => Ok(c),
            // the caller opens a session before it asks; a lost one is a
            // session to open again
            None => Err(crate::vsphere::Error::NotAuthenticated),
        }
    }
}
