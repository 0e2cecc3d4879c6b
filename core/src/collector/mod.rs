//! The collector: the loop that runs on a background thread in every nginx
//! worker. Every worker snapshots its upstreams' request counters (for
//! pairing); only the holder of the lease talks to vSphere, feeds each
//! upstream's policy and lets it publish into the zones.
//!
//! Per poll of an endpoint (steady state): `QueryPerf` for all mapped VMs,
//! 250 VMs per call. Once per session: RetrieveServiceContent, Login, the
//! `perfCounter` property, CreateContainerView, CurrentTime (clock skew),
//! QueryPerfProviderSummary (refresh rate). The VM inventory
//! (RetrievePropertiesEx over the view) is re-read every 5 minutes, every
//! 30 s while a server has no VM, and when a VM's samples show it changed
//! size. CurrentTime is repeated every
//! 10 minutes (keep-alive and skew).
//!
//! Faults never stop the loop: the last good window keeps serving until
//! the TTL, then the upstream falls back to weighted round robin; retries
//! back off; every state change is logged once.
//!
//! | file | job |
//! |---|---|
//! | [`spec`] | what it works on (endpoints, upstreams, servers, zones) |
//! | [`runtime`] | what it needs from its process (log, stop, clock, sessions) |
//! | `lease` | the poller lease and the hand-over of sessions |
//! | `poll` | one poll of an endpoint, its outcome, back-off and logs |
//! | `session` | opening a session (login or take-over, catalog, view, skew) |
//! | `inventory` | mapping servers to VMs and their capacities |
//! | [`resize`] | noticing a VM resized between inventory reads, from its samples |
//! | `ingest` | samples from a QueryPerf answer into the policies |
//! | [`counts`] | pairing request counts with sample periods |
//! | `upstream`, `endpoint` | its state per upstream and per endpoint |

pub mod counts;
mod endpoint;
mod ingest;
mod inventory;
mod lease;
mod poll;
pub mod resize;
pub mod runtime;
mod session;
pub mod spec;
mod upstream;

#[cfg(test)]
mod tests;

pub use ingest::counter_ids;
pub use inventory::{find_vm, first_few};
pub use runtime::{Level, Runtime};
pub use spec::{EndpointSpec, PeerSpec, SourceConfig, Spec, UpstreamSpec};

use std::collections::BTreeMap;
use std::time::Duration;

use endpoint::EpRun;
use upstream::UpRun;

/// The collector state machine; [`Collector::tick`] is called every
/// ~100 ms.
pub struct Collector<'z, 'r> {
    spec: Spec<'z>,
    rt: &'r dyn Runtime,
    ups: Vec<UpRun>,
    eps: Vec<EpRun<'z>>,
    holder: bool,
    next_snap: u64,
    snap_ms: u64,
    lease_timeout_ms: u64,
}

impl<'z, 'r> Collector<'z, 'r> {
    /// Sets up each upstream's policy and each endpoint's state.
    pub fn new(spec: Spec<'z>, rt: &'r dyn Runtime) -> Collector<'z, 'r> {
        let ups = spec.upstreams.iter().map(UpRun::new).collect();
        let eps = spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(k, e)| {
                let interval = spec
                    .upstreams_of(k)
                    .map(|u| spec.upstreams[u].conf.interval_ms)
                    .min()
                    .unwrap_or(20_000);
                EpRun::new(spec.lease.endpoint(e.record_key()), interval)
            })
            .collect();
        let min_interval = spec
            .upstreams
            .iter()
            .map(|u| u.conf.interval_ms)
            .min()
            .unwrap_or(20_000);
        // a holder blocked in one call must not lose the lease
        let lease_timeout_ms = crate::conf::takeover_ms(crate::conf::longest_timeout(
            spec.endpoints
                .iter()
                .map(|e| e.source.timeout().as_millis() as u64),
        ));
        Collector {
            spec,
            rt,
            ups,
            eps,
            holder: false,
            next_snap: 0,
            snap_ms: (min_interval / 10).clamp(100, 1000),
            lease_timeout_ms,
        }
    }

    /// True while this collector holds the lease.
    pub fn is_holder(&self) -> bool {
        self.holder
    }

    /// SOAP calls made so far by this collector, per endpoint and method.
    pub fn calls(&self, endpoint: usize) -> BTreeMap<&'static str, u64> {
        let ep = &self.eps[endpoint];
        let mut m = ep.calls.clone();
        if let Some(c) = &ep.client {
            for (k, v) in c.calls() {
                *m.entry(k).or_default() += v;
            }
        }
        m
    }

    /// Bytes read and answer time so far on endpoint `k`, every session
    /// included.
    pub fn traffic(&self, endpoint: usize) -> crate::vsphere::Traffic {
        let ep = &self.eps[endpoint];
        let mut t = ep.traffic;
        if let Some(c) = &ep.client {
            let now = c.traffic();
            t.bytes += now.bytes;
            t.answer_us += now.answer_us;
        }
        t
    }

    /// Runs until the runtime says stop, then logs out and releases the
    /// lease.
    pub fn run(mut self) {
        while !self.rt.stopping() {
            self.tick(self.rt.now_ms());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.shutdown();
    }

    /// One step: snapshots, lease, due polls, state logging.
    pub fn tick(&mut self, now: u64) {
        if now >= self.next_snap {
            for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
                run.counts.record(now, u.zone);
            }
            self.next_snap = now + self.snap_ms;
        }
        if !self.hold_lease(now) {
            return;
        }
        for k in 0..self.eps.len() {
            if self.rt.stopping() {
                return;
            }
            if now >= self.eps[k].next_poll && self.spec.upstreams_of(k).next().is_some() {
                self.poll(k);
            }
        }
        for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
            run.log_state(u, now, self.rt);
        }
    }
}
