//! One poll of a vSphere endpoint and its outcome: a refused login held
//! back (vCenter locks accounts), a session that expired replaced within
//! the same poll, failures retried with back-off, and every change said
//! once in the log.

use std::collections::BTreeSet;

use super::endpoint::EpState;
use super::runtime::Level;
use super::Collector;
use crate::vsphere::lockout::login_wait_ms;
use crate::vsphere::{Error, ErrorKind};
use crate::zone::Reason;

impl Collector<'_, '_> {
    /// Polls endpoint `k` now: session, inventory, samples.
    pub(super) fn poll(&mut self, k: usize) {
        let now = self.rt.now_ms();
        let record = self.eps[k].record;
        // a refused login holds the next one back (vCenter locks accounts)
        let creds = self.spec.endpoints[k].credentials_key();
        let held = record.map_or(self.eps[k].auth_retry_at, |r| r.auth_retry_at(creds));
        if held > now && !self.eps[k].client.as_ref().is_some_and(|c| c.logged_in()) {
            self.eps[k].next_poll = held;
            return;
        }
        let calls_before = self.calls_total(k);
        let traffic_before = self.traffic(k);
        let mut result = self.poll_once(k);
        if result.as_ref().is_err_and(|e| e.needs_login()) {
            // the session expired, the server restarted, or the session
            // taken over was gone: log in again now
            self.eps[k].may_reuse = false;
            self.drop_session(k, false);
            result = self.poll_once(k);
        }
        let now = self.rt.now_ms();
        if let Some(r) = record {
            r.add_calls(self.calls_total(k) - calls_before, now);
            let t = self.traffic(k);
            r.add_traffic(
                t.bytes - traffic_before.bytes,
                t.answer_us - traffic_before.answer_us,
            );
        }
        if !self.renew_lease() {
            // another worker took over during this poll: its outcome is
            // the new holder's to say (the next tick lets the lease go)
            return;
        }
        if let Some(r) = record {
            match &result {
                Ok(()) => r.success(now),
                Err(e) => r.error(e),
            }
        }
        match result {
            Ok(()) => self.polled(k, now),
            Err(Error::InvalidLogin) => self.login_refused(k, now),
            Err(e) => self.poll_failed(k, e, now),
        }
    }

    /// One try: the session, the inventory when due, the samples.
    fn poll_once(&mut self, k: usize) -> Result<(), Error> {
        let now = self.rt.now_ms();
        self.open_session(k, now)?;
        self.refresh_inventory(k, now)?;
        self.query(k)
    }

    /// A good poll: said once after a failure or at start, then on the
    /// interval's grid (polls do not drift by their own latency).
    fn polled(&mut self, k: usize, now: u64) {
        if self.eps[k].state != EpState::Healthy {
            let (mapped, servers, vms) = self.mapped_servers(k);
            let (e, ep) = (&self.spec.endpoints[k], &self.eps[k]);
            self.rt.log(
                Level::Notice,
                &format!(
                    "dwepc: {} \"{}\" ({}): polling {vms} VMs for {mapped} of {servers} servers every {} ms (refresh {} s; {} VMs in the inventory)",
                    e.kind(),
                    e.name,
                    e.url(),
                    ep.interval_ms,
                    ep.refresh_s,
                    ep.inventory.len(),
                ),
            );
        }
        let ep = &mut self.eps[k];
        ep.state = EpState::Healthy;
        ep.backoff_ms = 0;
        ep.next_poll = (ep.next_poll + ep.interval_ms).max(now);
    }

    /// A refused login is not a transient fault: said once, and the next
    /// try held back (in the lease zone's record, for every worker).
    fn login_refused(&mut self, k: usize, now: u64) {
        let creds = self.spec.endpoints[k].credentials_key();
        let ep = &mut self.eps[k];
        let at = match ep.record {
            Some(r) => r.login_refused(now, creds),
            None => {
                ep.auth_streak += 1;
                now + login_wait_ms(ep.auth_streak - 1)
            }
        };
        ep.auth_retry_at = at;
        if ep.state != EpState::Failing(ErrorKind::InvalidLogin) {
            let e = &self.spec.endpoints[k];
            self.rt.log(
                Level::Error,
                &format!(
                    "dwepc: vSphere \"{}\" ({}): login refused for {}: check user= and password_file= ({}); next try in {} min, no sooner, so that vCenter does not lock the account",
                    e.name,
                    e.url(),
                    e.user(),
                    Error::InvalidLogin,
                    (at - now).div_ceil(60_000)
                ),
            );
        }
        let ep = &mut self.eps[k];
        ep.state = EpState::Failing(ErrorKind::InvalidLogin);
        ep.next_poll = at;
        self.drop_session(k, false);
        self.mark_failed(k, now);
    }

    /// Any other failure: said once per kind, retried after 1 s doubling
    /// up to twice the interval (5 s to a minute).
    fn poll_failed(&mut self, k: usize, e: Error, now: u64) {
        let ep = &mut self.eps[k];
        if ep.state != EpState::Failing(e.kind()) {
            let spec = &self.spec.endpoints[k];
            self.rt.log(
                Level::Error,
                &format!(
                    "dwepc: {} \"{}\" ({}): {e}; serving on the last good window, retrying with backoff",
                    spec.kind(),
                    spec.name,
                    spec.url()
                ),
            );
        }
        let ep = &mut self.eps[k];
        ep.state = EpState::Failing(e.kind());
        let cap = (2 * ep.interval_ms).clamp(5_000, 60_000);
        ep.backoff_ms = if ep.backoff_ms == 0 {
            1000
        } else {
            (ep.backoff_ms * 2).min(cap)
        };
        ep.next_poll = now + ep.backoff_ms;
        if matches!(e, Error::Setup(_) | Error::NotAuthenticated) {
            self.drop_session(k, false);
        }
        self.mark_failed(k, now);
    }

    /// Upstreams of endpoint `k` that never had counters say why; one
    /// whose counters expired keeps saying "stale" (the endpoint's own
    /// line says why), so the fallback is logged once.
    fn mark_failed(&self, k: usize, now: u64) {
        for i in self.spec.upstreams_of(k) {
            let zone = self.spec.upstreams[i].zone;
            if !zone.usable(now) && zone.reason(now) != Reason::Stale {
                zone.set_reason(Reason::VsphereError);
            }
        }
    }

    /// SOAP calls made so far on endpoint `k`, every session included.
    fn calls_total(&self, k: usize) -> u64 {
        self.calls(k).values().sum()
    }

    /// Servers of endpoint `k`'s upstreams that have a VM, servers in
    /// all, and distinct VMs polled.
    fn mapped_servers(&self, k: usize) -> (usize, usize, usize) {
        let mut vms = BTreeSet::new();
        let (mut mapped, mut servers) = (0, 0);
        for i in self.spec.upstreams_of(k) {
            let run = &self.ups[i];
            let (m, n) = run.mapped();
            mapped += m;
            servers += n;
            vms.extend(
                run.vm
                    .iter()
                    .zip(&run.present)
                    .filter_map(|(v, &p)| v.as_deref().filter(|_| p)),
            );
        }
        (mapped, servers, vms.len())
    }
}
