//! The collector's state of one upstream ([`UpRun`]): its policy, the
//! request counts it pairs, which VM each server is, and what the log last
//! said of it.

use std::net::IpAddr;

use super::counts::Counts;
use super::runtime::{Level, Runtime};
use super::spec::UpstreamSpec;
use crate::policy::{PeerFacts, Policy};
use crate::zone::Reason;

/// One upstream, as the collector runs it.
pub(super) struct UpRun {
    /// Its mode's model.
    pub(super) policy: Box<dyn Policy>,
    /// The request counts its policy pairs with sample periods.
    pub(super) counts: Counts,
    /// VM moref per peer.
    pub(super) vm: Vec<Option<String>>,
    /// Per peer: was it reported as unmapped (to log changes once).
    pub(super) unmapped: Vec<Option<bool>>,
    /// Per peer: was it reported as matching several VMs (once).
    pub(super) ambiguous: Vec<bool>,
    /// Per peer: its address for the guest-IP lookup and whether it is in
    /// nginx's list (spare slots follow the zone's claims).
    pub(super) ip: Vec<Option<IpAddr>>,
    pub(super) present: Vec<bool>,
    /// The zone's slot generation these were read at.
    pub(super) slots_seen: Option<u64>,
    /// vSphere time of the newest sample taken in.
    pub(super) newest_ts: u64,
    /// The next query reads a whole window (just became the holder).
    pub(super) refill: bool,
    /// What the log last said: (counters drive, reason).
    pub(super) logged: Option<(bool, Reason)>,
    /// The newest sample had no value for any server (said once).
    pub(super) valueless: bool,
}

impl UpRun {
    /// The run state of `u`, its policy resumed from its zone.
    pub(super) fn new(u: &UpstreamSpec<'_>) -> UpRun {
        let c = &u.conf;
        let n = u.peers.len();
        let retain =
            (c.tuning.window as u64 * c.interval_ms).min(600_000) + 3 * c.interval_ms + 60_000;
        let facts: Vec<PeerFacts> = u
            .peers
            .iter()
            .map(|p| PeerFacts {
                weight: p.weight,
                backup: p.backup,
                present: !p.spare,
                ..PeerFacts::default()
            })
            .collect();
        let policy = c.mode.policy(&c.tuning, &facts, u.zone);
        UpRun {
            counts: Counts::new(policy.pairing(), n, retain),
            policy,
            vm: vec![None; n],
            unmapped: vec![None; n],
            ambiguous: vec![false; n],
            ip: u.peers.iter().map(|p| p.ip).collect(),
            present: u.peers.iter().map(|p| !p.spare).collect(),
            slots_seen: None,
            newest_ts: 0,
            refill: true,
            logged: None,
            valueless: false,
        }
    }

    /// Servers in nginx's list that have a VM, and servers in the list.
    pub(super) fn mapped(&self) -> (usize, usize) {
        let present = || self.vm.iter().zip(&self.present).filter(|(_, &p)| p);
        (
            present().filter(|(v, _)| v.is_some()).count(),
            present().count(),
        )
    }

    /// Logs how upstream `u` balances at `now_ms` if that changed since it
    /// was last said: counters drive (with the policy's summary), or the
    /// pick without counters (round robin, or response times) and why (a
    /// warning when counters drove before).
    pub(super) fn log_state(&mut self, u: &UpstreamSpec<'_>, now_ms: u64, rt: &dyn Runtime) {
        let comparison = u.conf.mode.comparison(&u.conf.tuning);
        if !comparison.needs_counters() {
            // the pick does not wait for counters: said once
            if self.logged.is_none() {
                rt.log(
                    Level::Notice,
                    &format!(
                        "dwepc: upstream \"{}\" balances by {} (mode={}); counters are read for the status page",
                        u.name,
                        self.policy.summary(u.zone),
                        u.conf.mode.name()
                    ),
                );
                self.logged = Some((true, Reason::Active));
            }
            return;
        }
        if u.endpoint.is_none() {
            if self.logged.is_none() {
                u.zone.set_reason(Reason::NoEndpoint);
                self.logged = Some((false, Reason::NoEndpoint));
            }
            return;
        }
        let cur = (u.zone.usable(now_ms), u.zone.reason(now_ms));
        if self.logged == Some(cur) {
            return;
        }
        let was_active = matches!(self.logged, Some((true, _)));
        if let Some(o) = u.conf.observe {
            // observe mode: nginx picks; say what dwepc would do
            let text = match cur {
                (true, _) => format!(
                    "counters would drive the pick ({})",
                    self.policy.summary(u.zone)
                ),
                (false, reason) => format!("no usable counters: {}", reason.text()),
            };
            rt.log(
                Level::Notice,
                &format!(
                    "dwepc: upstream \"{}\" observes (nginx's {} picks): {text}",
                    u.name,
                    o.name()
                ),
            );
            self.logged = Some(cur);
            return;
        }
        match cur {
            (true, _) => rt.log(
                Level::Notice,
                &format!(
                    "dwepc: upstream \"{}\" balances by ESXi counters ({})",
                    u.name,
                    self.policy.summary(u.zone)
                ),
            ),
            (false, reason) => rt.log(
                if was_active {
                    Level::Error
                } else {
                    Level::Info
                },
                &format!(
                    "dwepc: upstream \"{}\" {}: {}",
                    u.name,
                    match comparison.without_counters() {
                        Some(_) => "balances by response times (least_time on weight=)",
                        None => "uses weighted round robin",
                    },
                    reason.text()
                ),
            ),
        }
        self.logged = Some(cur);
    }
}
