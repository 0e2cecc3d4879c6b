//! The collector: the loop that runs on a background thread in every nginx
//! worker. Every worker snapshots its upstreams' dispatch counters (for
//! pairing); only the holder of the lease talks to vSphere, fits W and
//! publishes allocations into the shared zones.
//!
//! Per poll of an endpoint (steady state): one batched `QueryPerf` for all
//! mapped VMs. Once per session: RetrieveServiceContent, Login, the
//! `perfCounter` property, CreateContainerView, CurrentTime (clock skew),
//! QueryPerfProviderSummary (refresh rate). The VM inventory
//! (RetrievePropertiesEx over the view) is re-read every 5 minutes, or
//! every 30 s while a server has no VM. CurrentTime is repeated every
//! 10 minutes (keep-alive and skew).
//!
//! Faults never stop the loop: the last good window keeps serving until
//! the TTL, then the upstream falls back to weighted round robin; retries
//! back off; every state change is logged once.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use crate::algo::{FitState, Model, Params, Res, Sample, Wlc, R, RESOURCES};
use crate::conf::{Accounting, Mode, UpstreamConf, VmRef};
use crate::counts::CountHistory;
use crate::shared::{names_hash, EndpointRecord, Lease, Mapping, Reason, Shared};
use crate::shares;
use crate::vsphere::client::{self, Client, Error};
use crate::vsphere::xml::{EntityMetric, MoRef, VmInfo};
use crate::vsphere::Api;

/// Network capacity assumed for a VM when none is configured: the link
/// speed a vmxnet3 adapter reports (10 Gbit/s), in KB/s.
pub const DEFAULT_NET_KBPS: f64 = 1_250_000.0;

/// Counters read per VM, by `group.name.rollup`, in resource order; the
/// memory counter falls back to `mem.active.average`.
pub const COUNTERS: [&str; R] = [
    "cpu.usagemhz.average",
    "mem.consumed.average",
    "net.usage.average",
    "disk.usage.average",
];
/// Fallback memory counter.
pub const MEM_FALLBACK: &str = "mem.active.average";
/// Hypervisor contention, kept for later use.
pub const READY: &str = "cpu.ready.summation";

/// Log levels the host maps onto nginx's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Notice,
    Info,
}

/// What the collector needs from its host (nginx, or a test).
pub trait Host {
    /// Writes one log line.
    fn log(&self, level: Level, msg: &str);
    /// True when the thread must stop (worker exiting, reload).
    fn stopping(&self) -> bool;
    /// True if the process `pid` still exists.
    fn alive(&self, pid: u64) -> bool;
    /// Wall-clock milliseconds: every time the collector reads (a test
    /// host sets it).
    fn now_ms(&self) -> u64 {
        now_ms()
    }
    /// A new (not yet logged in) session with a vSphere endpoint: the
    /// SOAP client by default (a test host scripts its own vCenter).
    fn open(&self, cfg: &client::Config) -> Result<Box<dyn Api>, Error> {
        Ok(Box::new(Client::new(cfg.clone())?))
    }
}

/// One upstream server.
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// `ip:port` (a spare slot: its `resolve` server as written).
    pub name: String,
    /// IP for the guest-IP lookup (a spare slot: the address that claims
    /// it, read from the zone).
    pub ip: Option<IpAddr>,
    /// A spare slot of a `resolve` server ([`crate::slots`]).
    pub spare: bool,
    /// Configured `weight=`.
    pub weight: f64,
    /// A `backup` server.
    pub backup: bool,
    /// VM lookup.
    pub vm: VmRef,
    /// Capacity overrides (NaN = from vSphere).
    pub capacity: Res,
    /// Effective accounting (node over upstream).
    pub accounting: Accounting,
}

impl PeerSpec {
    /// A server's spec from what the configuration says of it: its
    /// `dwepc_node` line (if one names it) sets the VM lookup, capacity
    /// overrides and accounting over the upstream's.
    pub fn new(
        name: &str,
        ip: Option<IpAddr>,
        weight: f64,
        backup: bool,
        spare: bool,
        node: Option<&crate::conf::NodeConf>,
        upstream: &UpstreamConf,
    ) -> PeerSpec {
        PeerSpec {
            name: name.to_string(),
            ip,
            spare,
            weight,
            backup,
            vm: node.map_or(VmRef::GuestIp, |n| n.vm.clone()),
            capacity: node.map_or([f64::NAN; R], |n| n.capacity),
            accounting: node.map_or(upstream.accounting, |n| {
                n.accounting.over(&upstream.accounting)
            }),
        }
    }
}

/// One upstream using dwepc; `'z` is the life of its shared zone (in
/// nginx, the cycle's).
#[derive(Clone)]
pub struct UpstreamSpec<'z> {
    pub name: String,
    pub conf: UpstreamConf,
    /// Index into `Spec::endpoints`; None = no counters.
    pub endpoint: Option<usize>,
    pub peers: Vec<PeerSpec>,
    pub shared: Shared<'z>,
}

/// One vSphere endpoint (its `Debug` hides the password).
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub name: String,
    pub client: client::Config,
}

impl EndpointSpec {
    /// The key of its record in the lease zone: name, URL and user (a
    /// reload that changes none of them keeps the record).
    pub fn record_key(&self) -> u64 {
        names_hash([
            self.name.as_str(),
            self.client.url.as_str(),
            self.client.user.as_str(),
        ])
    }
}

/// Everything the collector thread works on; `'z` is the life of the
/// shared zones it writes (in nginx, the cycle's).
#[derive(Clone)]
pub struct Spec<'z> {
    pub endpoints: Vec<EndpointSpec>,
    pub upstreams: Vec<UpstreamSpec<'z>>,
    pub lease: Lease<'z>,
    /// This process.
    pub pid: u64,
}

struct UpRun {
    model: Model,
    /// Shares mode: its model (the paper model above still holds the
    /// capacities and window facts shown on the status page).
    shares: Option<shares::Model>,
    /// Completed requests per peer, for pairing with sample periods.
    done_history: CountHistory,
    /// Failed requests per peer, likewise.
    failed_history: CountHistory,
    /// WLC mode: weight in force per peer.
    wlc: Vec<Option<f64>>,
    history: CountHistory,
    /// VM moref per peer.
    vm: Vec<Option<String>>,
    /// Per peer: was it reported as unmapped (to log changes once).
    unmapped: Vec<Option<bool>>,
    /// Per peer: its address for the guest-IP lookup and whether it is in
    /// nginx's list (spare slots follow the zone's claims).
    ip: Vec<Option<IpAddr>>,
    present: Vec<bool>,
    /// The zone's slot generation these were read at.
    slots_seen: Option<u64>,
    newest_ts: u64,
    refill: bool,
    logged: Option<(bool, Reason)>,
}

impl UpRun {
    /// Servers in nginx's list that have a VM, and servers in the list.
    fn mapped(&self) -> (usize, usize) {
        let present = || self.vm.iter().zip(&self.present).filter(|(_, &p)| p);
        (
            present().filter(|(v, _)| v.is_some()).count(),
            present().count(),
        )
    }
}

struct EpRun<'z> {
    client: Option<Box<dyn Api>>,
    /// Its record in the lease zone (calls, errors, login refusals).
    record: Option<EndpointRecord<'z>>,
    catalog: HashMap<String, i32>,
    view: Option<MoRef>,
    inventory: Vec<VmInfo>,
    /// When the inventory / the clock skew was last read (None: not in
    /// this session).
    inventory_at: Option<u64>,
    refresh_s: i32,
    skew_ms: i64,
    skew_at: Option<u64>,
    next_poll: u64,
    backoff_ms: u64,
    interval_ms: u64,
    /// Class of the current error (None = healthy, Some("") = never tried).
    state: Option<&'static str>,
    missing_logged: bool,
    /// Calls made by sessions of this endpoint, by method (all sessions).
    calls: std::collections::BTreeMap<&'static str, u64>,
    /// Refused logins in a row and the time of the next try, when the
    /// lease zone has no record for this endpoint.
    auth_streak: u64,
    auth_retry_at: u64,
    /// Just became the polling worker: the session a previous holder left
    /// in the record may be taken over (once).
    may_reuse: bool,
}

/// The collector state machine; `tick` is called every ~100 ms.
pub struct Collector<'z, 'h> {
    spec: Spec<'z>,
    host: &'h dyn Host,
    ups: Vec<UpRun>,
    eps: Vec<EpRun<'z>>,
    holder: bool,
    next_snap: u64,
    snap_ms: u64,
    lease_timeout_ms: u64,
}

/// Wall-clock ms.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn reason_of(st: FitState) -> Reason {
    match st {
        FitState::NoSamples => Reason::NoSamples,
        FitState::TooFewSamples { .. } => Reason::TooFewSamples,
        FitState::NoTraffic => Reason::NoTraffic,
        FitState::NoResources | FitState::Fitted { .. } => Reason::NoCounters,
    }
}

fn reason_of_shares(st: shares::State) -> Reason {
    match st {
        shares::State::NoSamples => Reason::NoSamples,
        shares::State::TooFewSamples => Reason::TooFewSamples,
        shares::State::NoTraffic => Reason::NoTraffic,
        shares::State::NoCounters | shares::State::Active => Reason::NoCounters,
    }
}

impl<'z, 'h> Collector<'z, 'h> {
    /// Sets up per-upstream models and per-endpoint state.
    pub fn new(spec: Spec<'z>, host: &'h dyn Host) -> Collector<'z, 'h> {
        let ups = spec
            .upstreams
            .iter()
            .map(|u| {
                let c = &u.conf;
                let retain =
                    (c.window as u64 * c.interval_ms).min(600_000) + 3 * c.interval_ms + 60_000;
                let mut model = Model::new(
                    Params {
                        window: c.window,
                        min_samples: c.min_samples,
                        ..Params::default()
                    },
                    u.peers.iter().map(|p| p.weight).collect(),
                );
                if let Some(w) = u.shared.w() {
                    // carried over from before a reload or from another holder
                    model = model.with_w(w);
                }
                let shares = (c.mode == Mode::Shares).then(|| {
                    let cost = u.shared.cost();
                    shares::Model::new(
                        shares::Params {
                            window: c.window,
                            floor: c.floor,
                            step: c.step,
                            inflight_per_vcpu: c.inflight_per_vcpu,
                        },
                        u.peers
                            .iter()
                            .map(|p| shares::Node {
                                weight: p.weight,
                                backup: p.backup,
                                present: !p.spare,
                                ..shares::Node::default()
                            })
                            .collect(),
                    )
                    // carried over from before a reload or from another holder
                    .resume(
                        u.shared.shares(),
                        cost.iter().any(|x| x.is_finite()).then_some(cost),
                    )
                });
                UpRun {
                    model,
                    shares,
                    done_history: CountHistory::new(u.peers.len(), retain),
                    failed_history: CountHistory::new(u.peers.len(), retain),
                    wlc: vec![None; u.peers.len()],
                    history: CountHistory::new(u.peers.len(), retain),
                    vm: vec![None; u.peers.len()],
                    unmapped: vec![None; u.peers.len()],
                    ip: u.peers.iter().map(|p| p.ip).collect(),
                    present: u.peers.iter().map(|p| !p.spare).collect(),
                    slots_seen: None,
                    newest_ts: 0,
                    refill: true,
                    logged: None,
                }
            })
            .collect();
        let eps = spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(k, e)| EpRun {
                client: None,
                record: spec.lease.endpoint(e.record_key()),
                catalog: HashMap::new(),
                view: None,
                inventory: Vec::new(),
                inventory_at: None,
                refresh_s: 0,
                skew_ms: 0,
                skew_at: None,
                next_poll: 0,
                backoff_ms: 0,
                interval_ms: spec
                    .upstreams
                    .iter()
                    .filter(|u| u.endpoint == Some(k))
                    .map(|u| u.conf.interval_ms)
                    .min()
                    .unwrap_or(20_000),
                state: Some(""),
                missing_logged: false,
                may_reuse: false,
                calls: Default::default(),
                auth_streak: 0,
                auth_retry_at: 0,
            })
            .collect();
        let min_interval = spec
            .upstreams
            .iter()
            .map(|u| u.conf.interval_ms)
            .min()
            .unwrap_or(20_000);
        let max_timeout = spec
            .endpoints
            .iter()
            .map(|e| e.client.timeout.as_millis() as u64)
            .max()
            .unwrap_or(5000);
        Collector {
            spec,
            host,
            ups,
            eps,
            holder: false,
            next_snap: 0,
            snap_ms: (min_interval / 10).clamp(100, 1000),
            // a holder blocked in one call must not lose the lease
            lease_timeout_ms: crate::conf::takeover_ms(max_timeout),
        }
    }

    /// True while this collector holds the lease.
    pub fn is_holder(&self) -> bool {
        self.holder
    }

    /// SOAP calls made so far by this collector, per endpoint and method.
    pub fn calls(&self, endpoint: usize) -> std::collections::BTreeMap<&'static str, u64> {
        let mut m = self.eps[endpoint].calls.clone();
        if let Some(c) = &self.eps[endpoint].client {
            for (k, v) in c.calls() {
                *m.entry(k).or_default() += v;
            }
        }
        m
    }

    /// Runs until the host says stop, then logs out and releases the lease.
    pub fn run(mut self) {
        while !self.host.stopping() {
            self.tick(self.host.now_ms());
            std::thread::sleep(Duration::from_millis(100));
        }
        self.shutdown();
    }

    /// Logs out of every session and gives the lease up.
    pub fn shutdown(&mut self) {
        // no worker may take over a session that is being logged out
        for k in 0..self.eps.len() {
            if self.session_is_published(k) {
                if let Some(r) = self.eps[k].record {
                    r.set_session(None);
                }
            }
        }
        if self.holder {
            self.spec.lease.release(self.spec.pid);
            self.holder = false;
        }
        for k in 0..self.eps.len() {
            self.drop_session(k, true);
        }
    }

    /// Whether endpoint `k`'s session is the one its record hands over to
    /// the next polling worker.
    fn session_is_published(&self, k: usize) -> bool {
        let ep = &self.eps[k];
        match (ep.record, ep.client.as_ref().and_then(|c| c.session())) {
            (Some(r), Some(ours)) => r.session().as_deref() == Some(ours.as_str()),
            _ => false,
        }
    }

    fn drop_session(&mut self, k: usize, logout: bool) {
        let ep = &mut self.eps[k];
        if let Some(mut c) = ep.client.take() {
            if logout {
                c.logout();
            }
            for (m, n) in c.calls() {
                *ep.calls.entry(m).or_default() += n;
            }
        }
        ep.view = None;
        ep.refresh_s = 0;
    }

    /// One step: snapshots, lease, due polls, state logging.
    pub fn tick(&mut self, now: u64) {
        if now >= self.next_snap {
            for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
                // what the mode's model pairs with sample periods
                if run.shares.is_some() {
                    run.done_history.record(now, &u.shared.dones());
                    run.failed_history.record(now, &u.shared.all_failures());
                } else {
                    run.history.record(now, &u.shared.totals());
                }
            }
            self.next_snap = now + self.snap_ms;
        }
        let was = self.holder;
        let host = self.host;
        self.holder = self
            .spec
            .lease
            .acquire(self.spec.pid, now, self.lease_timeout_ms, |p| host.alive(p));
        if !self.holder {
            if was {
                self.host.log(
                    Level::Notice,
                    "dwepc: another worker took over polling vSphere",
                );
                // a session still in the record is the new holder's to
                // reuse; any other is logged out: an abandoned session
                // counts against vCenter's sessions per user until it
                // expires
                for k in 0..self.eps.len() {
                    let handed_over = self.session_is_published(k);
                    self.drop_session(k, !handed_over);
                }
            }
            return;
        }
        if !was {
            for u in &mut self.ups {
                u.refill = true;
                u.logged = None;
            }
            for e in &mut self.eps {
                e.next_poll = 0;
                e.may_reuse = true;
            }
        }
        for k in 0..self.eps.len() {
            if self.host.stopping() {
                return;
            }
            if now >= self.eps[k].next_poll
                && self.spec.upstreams.iter().any(|u| u.endpoint == Some(k))
            {
                self.poll(k);
            }
        }
        self.log_states(now);
    }

    fn log_states(&mut self, now: u64) {
        for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
            if u.endpoint.is_none() {
                if run.logged.is_none() {
                    u.shared.set_reason(Reason::NoEndpoint);
                    run.logged = Some((false, Reason::NoEndpoint));
                }
                continue;
            }
            let active = u.shared.usable(now);
            let reason = u.shared.reason(now);
            let cur = (active, reason);
            if run.logged == Some(cur) {
                continue;
            }
            let was_active = matches!(run.logged, Some((true, _)));
            if active && u.conf.mode == Mode::Shares {
                let shares: Vec<String> = (0..u.peers.len())
                    .map(|i| format!("{:.3}", u.shared.share(i).0))
                    .collect();
                self.host.log(
                    Level::Notice,
                    &format!(
                        "dwepc: upstream \"{}\" balances by ESXi counters (shares {})",
                        u.name,
                        shares.join("/")
                    ),
                );
            } else if active {
                let w = u.shared.w().unwrap_or([f64::NAN; R]);
                self.host.log(
                    Level::Notice,
                    &format!(
                        "dwepc: upstream \"{}\" balances by ESXi counters (W cpu={:.4e} mem={:.4e} net={:.4e} disk={:.4e})",
                        u.name, w[0], w[1], w[2], w[3]
                    ),
                );
            } else {
                self.host.log(
                    if was_active { Level::Warn } else { Level::Info },
                    &format!(
                        "dwepc: upstream \"{}\" uses weighted round robin: {}",
                        u.name,
                        reason.text()
                    ),
                );
            }
            run.logged = Some(cur);
        }
    }

    /// SOAP calls made so far on endpoint `k`, every session included.
    fn calls_total(&self, k: usize) -> u64 {
        self.calls(k).values().sum()
    }

    fn poll(&mut self, k: usize) {
        let now = self.host.now_ms();
        let record = self.eps[k].record;
        // a refused login holds the next one back (vCenter locks accounts)
        let held = record.map_or(self.eps[k].auth_retry_at, |r| r.auth_retry_at());
        if held > now && !self.eps[k].client.as_ref().is_some_and(|c| c.logged_in()) {
            self.eps[k].next_poll = held;
            return;
        }
        let calls_before = self.calls_total(k);
        let mut result = self.poll_inner(k);
        if result.as_ref().is_err_and(|e| e.needs_login()) {
            // the session expired, the server restarted, or the session
            // taken over was gone: log in again now
            self.eps[k].may_reuse = false;
            self.drop_session(k, false);
            result = self.poll_inner(k);
        }
        let now = self.host.now_ms();
        if let Some(r) = record {
            r.add_calls(self.calls_total(k) - calls_before);
            match &result {
                Ok(()) => r.success(now),
                Err(e) => r.error(e),
            }
        }
        let name = self.spec.endpoints[k].name.clone();
        let url = self.spec.endpoints[k].client.url.clone();
        let user = self.spec.endpoints[k].client.user.clone();
        let ep = &mut self.eps[k];
        match result {
            Ok(()) => {
                if ep.state.is_some() {
                    let (mapped, servers, vms) = self.mapped_servers(k);
                    let ep = &self.eps[k];
                    self.host.log(
                        Level::Notice,
                        &format!(
                            "dwepc: vSphere \"{name}\" ({url}): polling {vms} VMs for {mapped} of {servers} servers every {} ms (refresh {} s; {} VMs in the inventory)",
                            ep.interval_ms,
                            ep.refresh_s,
                            ep.inventory.len(),
                        ),
                    );
                }
                let ep = &mut self.eps[k];
                ep.state = None;
                ep.backoff_ms = 0;
                // on a fixed grid, so polls do not drift by their own latency
                ep.next_poll = (ep.next_poll + ep.interval_ms).max(now);
            }
            Err(Error::InvalidLogin) => {
                // not a transient fault: said once, retried rarely
                let at = match record {
                    Some(r) => r.login_refused(now),
                    None => {
                        ep.auth_streak += 1;
                        now + crate::shared::auth_wait_ms(ep.auth_streak - 1)
                    }
                };
                ep.auth_retry_at = at;
                if ep.state != Some(Error::InvalidLogin.class()) {
                    self.host.log(
                        Level::Error,
                        &format!(
                            "dwepc: vSphere \"{name}\" ({url}): login refused for {user}: check user= and password_file= ({}); next try in {} min, no sooner, so that vCenter does not lock the account",
                            Error::InvalidLogin,
                            (at - now).div_ceil(60_000)
                        ),
                    );
                }
                ep.state = Some(Error::InvalidLogin.class());
                ep.next_poll = at;
                self.drop_session(k, false);
                self.mark_failed(k, now);
            }
            Err(e) => {
                if ep.state != Some(e.class()) {
                    self.host.log(
                        Level::Warn,
                        &format!(
                            "dwepc: vSphere \"{name}\" ({url}): {e}; serving on the last good window, retrying with backoff"
                        ),
                    );
                }
                ep.state = Some(e.class());
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
        }
    }

    /// Servers of endpoint `k`'s upstreams that have a VM, servers in
    /// all, and distinct VMs polled.
    fn mapped_servers(&self, k: usize) -> (usize, usize, usize) {
        let mut vms = BTreeSet::new();
        let (mut mapped, mut servers) = (0, 0);
        for (u, run) in self.spec.upstreams.iter().zip(&self.ups) {
            if u.endpoint != Some(k) {
                continue;
            }
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

    /// Upstreams of endpoint `k` that never had counters say why; one
    /// whose counters expired keeps saying "stale" (the endpoint's own
    /// line says why), so the fallback is logged once.
    fn mark_failed(&self, k: usize, now: u64) {
        for u in self.spec.upstreams.iter().filter(|u| u.endpoint == Some(k)) {
            if !u.shared.usable(now) && u.shared.reason(now) != Reason::Stale {
                u.shared.set_reason(Reason::VsphereError);
            }
        }
    }

    fn poll_inner(&mut self, k: usize) -> Result<(), Error> {
        let now = self.host.now_ms();
        if self.eps[k].client.is_none() {
            self.eps[k].client = Some(self.host.open(&self.spec.endpoints[k].client)?);
        }
        let ep = &mut self.eps[k];
        let c = ep.client.as_mut().expect("client set above");
        if !c.logged_in() {
            ep.view = None;
            // the session a polling worker that died or froze left behind,
            // rather than a second one (checked by the next call)
            let may_reuse = std::mem::take(&mut ep.may_reuse);
            let reuse = ep.record.filter(|_| may_reuse).and_then(|r| r.session());
            let adopted = reuse.is_some();
            match reuse {
                Some(cookie) => c.adopt(&cookie)?,
                None => {
                    c.connect()?;
                    ep.auth_streak = 0;
                    ep.auth_retry_at = 0;
                    if let Some(r) = ep.record {
                        r.login_ok();
                        r.set_session(c.session().as_deref());
                    }
                }
            }
            ep.catalog = c
                .perf_counters()?
                .into_iter()
                .map(|(id, n)| (n, id))
                .collect();
            if adopted {
                if let Some(r) = ep.record {
                    r.session_reused();
                }
                self.host.log(
                    Level::Notice,
                    &format!(
                        "dwepc: vSphere \"{}\": reusing the session of the previous polling worker",
                        self.spec.endpoints[k].name
                    ),
                );
            }
            ep.view = Some(c.create_vm_view()?);
            ep.inventory_at = None;
            ep.skew_at = None;
            ep.refresh_s = 0;
            let missing: Vec<&str> = COUNTERS
                .iter()
                .filter(|n| {
                    !(ep.catalog.contains_key(**n)
                        || (**n == COUNTERS[1] && ep.catalog.contains_key(MEM_FALLBACK)))
                })
                .copied()
                .collect();
            if !missing.is_empty() && !ep.missing_logged {
                self.host.log(
                    Level::Warn,
                    &format!(
                        "dwepc: vSphere \"{}\" has no counter {}; those resources are left out",
                        self.spec.endpoints[k].name,
                        missing.join(", ")
                    ),
                );
                ep.missing_logged = true;
            }
        }
        if ep.skew_at.is_none_or(|t| now.saturating_sub(t) > 600_000) {
            let t0 = self.host.now_ms();
            let server = c.current_time()?;
            let t1 = self.host.now_ms();
            ep.skew_ms = server as i64 - ((t0 + t1) / 2) as i64;
            ep.skew_at = Some(now);
        }
        // addresses that took or left spare slots since the last poll
        if self.read_slots(k) {
            self.remap(k);
        }
        let unmapped = self
            .spec
            .upstreams
            .iter()
            .zip(&self.ups)
            .filter(|(u, _)| u.endpoint == Some(k))
            .any(|(_, r)| r.vm.iter().zip(&r.present).any(|(v, &p)| p && v.is_none()));
        let ep = &mut self.eps[k];
        let c = ep.client.as_mut().expect("client set above");
        let due = ep.inventory_at.is_none_or(|t| {
            let age = now.saturating_sub(t);
            age > 300_000 || (unmapped && age > 30_000)
        });
        if due {
            let view = ep.view.clone().ok_or(Error::NotAuthenticated)?;
            ep.inventory = c.vms(&view)?;
            ep.inventory_at = Some(now);
            self.remap(k);
        }
        let ep = &mut self.eps[k];
        let c = ep.client.as_mut().expect("client set above");
        let mut vms: Vec<String> = Vec::new();
        let mut max_sample = 1u32;
        for (u, run) in self.spec.upstreams.iter().zip(&self.ups) {
            if u.endpoint != Some(k) {
                continue;
            }
            for v in run.vm.iter().flatten() {
                if !vms.contains(v) {
                    vms.push(v.clone());
                }
            }
            if run.refill {
                max_sample = max_sample.max(u.conf.window as u32);
            }
        }
        if vms.is_empty() {
            return Ok(());
        }
        if ep.refresh_s <= 0 {
            let r = c.refresh_rate(&vms[0])?;
            ep.refresh_s = if r > 0 { r } else { 20 };
        }
        let ids = counter_ids(&ep.catalog);
        let ready = ep.catalog.get(READY).copied();
        let wanted: Vec<i32> = ids.iter().flatten().chain(&ready).copied().collect();
        let metrics = c.query_perf(&vms, &wanted, ep.refresh_s, max_sample)?;
        let skew = ep.skew_ms;
        for i in 0..self.ups.len() {
            if self.spec.upstreams[i].endpoint == Some(k) {
                self.ingest(i, &metrics, &ids, ready, skew);
                self.publish_ready(i, &metrics, ready);
                self.ups[i].refill = false;
            }
        }
        Ok(())
    }

    /// Reads which addresses hold the spare slots of `resolve` servers of
    /// upstreams on endpoint `k`; true if any changed (then the servers
    /// are mapped to VMs again).
    fn read_slots(&mut self, k: usize) -> bool {
        let mut changed = false;
        for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
            let generation = u.shared.slots_generation();
            if u.endpoint != Some(k) || run.slots_seen == Some(generation) {
                continue;
            }
            run.slots_seen = Some(generation);
            for (i, p) in u.peers.iter().enumerate().filter(|(_, p)| p.spare) {
                let ip = u.shared.slot_addr(i).map(|a| a.ip());
                let present = u.shared.slot_ident(i) != 0;
                if run.ip[i] != ip || run.present[i] != present {
                    if present {
                        self.host.log(
                            Level::Notice,
                            &format!(
                                "dwepc: upstream \"{}\": server {} resolved to {} (slot {i})",
                                u.name,
                                p.name,
                                ip.map_or("no address".into(), |a| a.to_string())
                            ),
                        );
                    }
                    run.ip[i] = ip;
                    run.present[i] = present;
                    run.unmapped[i] = None;
                    changed = true;
                }
            }
        }
        changed
    }

    /// Maps the servers of upstreams on endpoint `k` to VMs and sets their
    /// capacities.
    fn remap(&mut self, k: usize) {
        let inventory = &self.eps[k].inventory;
        for (u, run) in self.spec.upstreams.iter().zip(&mut self.ups) {
            if u.endpoint != Some(k) {
                continue;
            }
            let mut lost: Vec<String> = Vec::new();
            let mut regained: Vec<String> = Vec::new();
            for (i, p) in u.peers.iter().enumerate() {
                let present = run.present[i];
                let found = match &p.vm {
                    _ if !present => None,
                    VmRef::Name(n) => inventory.iter().find(|v| &v.name == n),
                    VmRef::GuestIp => run.ip[i].and_then(|ip| {
                        let ip = ip.to_string();
                        let mut m = inventory.iter().filter(|v| v.ips.contains(&ip));
                        let all: Vec<&VmInfo> = m.by_ref().collect();
                        all.iter().find(|v| v.powered_on).or(all.first()).copied()
                    }),
                };
                run.vm[i] = found.map(|v| v.moref.clone());
                let total: Res = match found {
                    Some(v) => [
                        if v.max_cpu_mhz > 0.0 {
                            v.max_cpu_mhz
                        } else {
                            f64::NAN
                        },
                        if v.memory_mb > 0.0 {
                            v.memory_mb
                        } else {
                            f64::NAN
                        },
                        DEFAULT_NET_KBPS,
                        f64::NAN,
                    ],
                    None => [f64::NAN; R],
                };
                let total: Res = std::array::from_fn(|j| {
                    if p.capacity[j].is_finite() {
                        p.capacity[j]
                    } else {
                        total[j]
                    }
                });
                run.model.set_capacity(i, p.accounting.usable(total));
                if let Some(sm) = &mut run.shares {
                    sm.set_node(
                        i,
                        shares::Node {
                            capacity: run.model.capacity(i),
                            vcpus: found.map(|v| v.num_cpu).unwrap_or(f64::NAN),
                            weight: p.weight,
                            backup: p.backup,
                            present,
                        },
                    );
                }
                let (headroom, has_counters) = match &run.shares {
                    Some(sm) => ([f64::NAN; R], sm.has_counters(i)),
                    None => (run.model.headroom(i), run.model.has_counters(i)),
                };
                u.shared
                    .set_peer_info(i, run.model.capacity(i), headroom, has_counters);
                let mapping = match (&p.vm, found) {
                    (_, Some(_)) => Mapping::Mapped,
                    _ if !present || (p.vm == VmRef::GuestIp && run.ip[i].is_none()) => {
                        Mapping::NoAddress
                    }
                    (VmRef::Name(_), None) => Mapping::NoVmNamed,
                    (VmRef::GuestIp, None) => Mapping::NoGuestIp,
                };
                u.shared
                    .set_mapping(i, mapping, found.map(|v| v.name.as_str()));
                let is_unmapped = found.is_none();
                if present && run.unmapped[i] != Some(is_unmapped) {
                    let how = match &p.vm {
                        VmRef::Name(n) => format!("VM named \"{n}\""),
                        VmRef::GuestIp => match run.ip[i] {
                            Some(ip) => format!("guest IP {ip}"),
                            None => "guest IP (the server has none)".into(),
                        },
                    };
                    if is_unmapped {
                        lost.push(format!("{} ({how})", p.name));
                    } else if run.unmapped[i].is_some() {
                        regained.push(format!("{} ({how})", p.name));
                    }
                    run.unmapped[i] = Some(is_unmapped);
                }
            }
            // one line per upstream and change, however many servers
            let (mapped, servers) = run.mapped();
            for (level, list, what) in [
                (Level::Warn, &lost, "match no VM"),
                (Level::Notice, &regained, "found their VM"),
            ] {
                if list.is_empty() {
                    continue;
                }
                let tail = if level == Level::Warn {
                    "; balanced on their weight"
                } else {
                    ""
                };
                self.host.log(
                    level,
                    &format!(
                        "dwepc: upstream \"{}\": {} server{} {what}: {}{tail} ({mapped} of {servers} servers mapped)",
                        u.name,
                        list.len(),
                        if list.len() == 1 { "" } else { "s" },
                        first_few(list)
                    ),
                );
            }
        }
    }

    /// Publishes each peer's `cpu.ready.summation` of its VM's newest
    /// sample (percent of the sample interval), for the status page.
    fn publish_ready(&self, i: usize, metrics: &[EntityMetric], ready: Option<i32>) {
        let u = &self.spec.upstreams[i];
        for (p, vm) in self.ups[i].vm.iter().enumerate() {
            let pct = (|| {
                let m = metrics.iter().find(|m| Some(&m.entity) == vm.as_ref())?;
                let (pos, &(_, iv)) = m.samples.iter().enumerate().max_by_key(|(_, s)| s.0)?;
                let ms = m.value(ready?, pos)?;
                (iv > 0).then(|| ms as f64 / (iv as f64 * 1000.0) * 100.0)
            })();
            u.shared.set_cpu_ready(p, pct.unwrap_or(f64::NAN));
        }
    }

    /// Adds new samples of upstream `i` from a QueryPerf answer and
    /// publishes the result.
    fn ingest(
        &mut self,
        i: usize,
        metrics: &[EntityMetric],
        ids: &[Option<i32>; R],
        ready: Option<i32>,
        skew_ms: i64,
    ) {
        let u = &self.spec.upstreams[i];
        let run = &mut self.ups[i];
        let by_vm: HashMap<&str, &EntityMetric> =
            metrics.iter().map(|m| (m.entity.as_str(), m)).collect();
        let mut stamps: BTreeSet<(u64, u32)> = BTreeSet::new();
        for v in run.vm.iter().flatten() {
            if let Some(m) = by_vm.get(v.as_str()) {
                stamps.extend(m.samples.iter().copied());
            }
        }
        let mut added = false;
        let mut newest_usage: Option<Vec<Res>> = None;
        for (ts, iv) in stamps {
            if ts <= run.newest_ts || iv == 0 {
                continue;
            }
            let usage: Vec<Res> = run
                .vm
                .iter()
                .map(|v| {
                    let Some(m) = v.as_ref().and_then(|v| by_vm.get(v.as_str())) else {
                        return [f64::NAN; R];
                    };
                    let Some(pos) = m.samples.iter().position(|s| s.0 == ts) else {
                        return [f64::NAN; R];
                    };
                    std::array::from_fn(|j| match ids[j].and_then(|id| m.value(id, pos)) {
                        Some(x) if j == 1 => x as f64 / 1024.0, // KB -> MB
                        Some(x) => x as f64,
                        None => f64::NAN,
                    })
                })
                .collect();
            newest_usage = Some(usage.clone());
            let end = (ts as i64 - skew_ms).max(0) as u64;
            let period = iv as u64 * 1000;
            // shares mode feeds its own model only; the paper model keeps
            // the capacities
            let pushed = match &mut run.shares {
                Some(sm) => {
                    let ready_ms: Vec<f64> = run
                        .vm
                        .iter()
                        .map(|v| {
                            let m = v.as_ref().and_then(|v| by_vm.get(v.as_str()))?;
                            let pos = m.samples.iter().position(|s| s.0 == ts)?;
                            m.value(ready?, pos).map(|x| x as f64)
                        })
                        .map(|x| x.unwrap_or(f64::NAN))
                        .collect();
                    sm.push(shares::Sample {
                        end_ms: end,
                        period_ms: period,
                        usage,
                        ready_ms,
                        done: run.done_history.between(end.saturating_sub(period), end),
                        failed: run.failed_history.between(end.saturating_sub(period), end),
                    })
                }
                None => run.model.push(Sample {
                    end_ms: end,
                    period_ms: period,
                    usage,
                    requests: run.history.between(end.saturating_sub(period), end),
                }),
            };
            added |= pushed;
            run.newest_ts = run.newest_ts.max(ts);
        }
        if !added {
            return;
        }
        let shared = u.shared;
        for (p, x) in newest_usage.iter().flatten().enumerate() {
            shared.set_usage(p, *x);
        }
        let now = self.host.now_ms();
        if let Some(sm) = &mut run.shares {
            shared.set_window(sm.window_len(), sm.newest_ms().unwrap_or(0));
            let st = sm.update();
            let n = u.peers.len();
            shared.set_model(
                sm.cost(),
                sm.rate(),
                &(0..n)
                    .map(|p| {
                        (
                            sm.target().map(|t| t[p]).unwrap_or(f64::NAN),
                            sm.background(p),
                            sm.effective_capacity(p)[0],
                        )
                    })
                    .collect::<Vec<_>>(),
            );
            for p in 0..n {
                shared.set_peer_info(p, run.model.capacity(p), [f64::NAN; R], sm.has_counters(p));
            }
            match sm.shares() {
                Some(s) => {
                    let valid_until = sm.newest_ms().unwrap_or(0) + u.conf.ttl_ms;
                    shared.apply_shares(s, &sm.limits(), valid_until, now);
                }
                None => shared.disable(reason_of_shares(st)),
            }
            return;
        }
        let st = run.model.refit();
        shared.set_w(run.model.w());
        shared.set_window(run.model.window_len(), run.model.newest_ms().unwrap_or(0));
        for p in 0..u.peers.len() {
            shared.set_peer_info(
                p,
                run.model.capacity(p),
                run.model.headroom(p),
                run.model.has_counters(p),
            );
        }
        if u.conf.mode == Mode::Wlc {
            // seeds/001: weights from the current utilisations
            let wlc = Wlc::default();
            let newest = run.model.window().last().cloned();
            let weights: Vec<f64> = (0..u.peers.len())
                .map(|p| {
                    let cap = run.model.capacity(p);
                    let e = newest.as_ref().map(|s| s.usage[p]).unwrap_or([f64::NAN; R]);
                    let util = [e[0] / cap[0], e[1] / cap[1], e[2] / cap[2]];
                    let w = if util.iter().all(|x| !x.is_finite()) {
                        // no counters: its configured weight, scaled to A
                        wlc.a * u.peers[p].weight
                            / u.peers.iter().map(|q| q.weight).fold(1.0, f64::max)
                    } else {
                        wlc.weight(util)
                    };
                    let w = wlc.update(run.wlc[p], w);
                    run.wlc[p] = Some(w);
                    w
                })
                .collect();
            // the pick reads the weights as shares (least in-flight per
            // share is weighted least connections); the status page shows
            // them as allocations
            let sum: f64 = weights.iter().filter(|w| w.is_finite() && **w > 0.0).sum();
            let shares: Vec<f64> = weights
                .iter()
                .map(|w| {
                    if sum > 0.0 && w.is_finite() {
                        w.max(0.0) / sum
                    } else {
                        0.0
                    }
                })
                .collect();
            let valid_until = run.model.newest_ms().unwrap_or(0) + u.conf.ttl_ms;
            shared.apply(&weights, valid_until, now);
            shared.apply_shares(&shares, &[], valid_until, now);
            return;
        }
        match run.model.allocations() {
            Some(a) => {
                let valid_until = run.model.newest_ms().unwrap_or(0) + u.conf.ttl_ms;
                shared.apply(&a, valid_until, now);
            }
            None => shared.disable(reason_of(st)),
        }
    }
}

/// The first few items of a list, and how many more.
pub fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    const FEW: usize = 5;
    let shown: Vec<&str> = items.iter().take(FEW).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if items.len() > FEW {
        out.push_str(&format!(" and {} more", items.len() - FEW));
    }
    out
}

/// Counter ids per resource from a catalog (memory falls back to
/// `mem.active.average`).
pub fn counter_ids(catalog: &HashMap<String, i32>) -> [Option<i32>; R] {
    std::array::from_fn(|j| {
        catalog
            .get(COUNTERS[j])
            .or_else(|| {
                if j == 1 {
                    catalog.get(MEM_FALLBACK)
                } else {
                    None
                }
            })
            .copied()
    })
}

/// Resource names, for messages.
pub fn resource_name(j: usize) -> &'static str {
    RESOURCES[j]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{parse_node, parse_upstream};
    use crate::shared::{Lease, LEASE_WORDS};
    use crate::vsphere::xml::{EntityMetric, MoRef, VmInfo};
    use std::cell::{Cell, RefCell};
    use std::rc::Rc;
    use std::sync::atomic::AtomicU64;

    /// A host with a clock and process table the test sets, and a
    /// scripted vCenter behind its sessions.
    struct TestHost {
        now: Rc<Cell<u64>>,
        dead: RefCell<Vec<u64>>,
        log: RefCell<Vec<(Level, String)>>,
        vc: Rc<RefCell<Vc>>,
    }

    impl TestHost {
        fn new() -> TestHost {
            let now = Rc::new(Cell::new(1_000));
            TestHost {
                vc: Rc::new(RefCell::new(Vc::new(now.clone()))),
                now,
                dead: RefCell::new(Vec::new()),
                log: RefCell::new(Vec::new()),
            }
        }

        /// Log lines at `level` containing `text`.
        fn logged(&self, level: Level, text: &str) -> usize {
            self.log
                .borrow()
                .iter()
                .filter(|(l, m)| *l == level && m.contains(text))
                .count()
        }
    }

    impl Host for TestHost {
        fn log(&self, level: Level, msg: &str) {
            self.log.borrow_mut().push((level, msg.to_string()));
        }
        fn stopping(&self) -> bool {
            false
        }
        fn alive(&self, pid: u64) -> bool {
            !self.dead.borrow().contains(&pid)
        }
        fn now_ms(&self) -> u64 {
            self.now.get()
        }
        fn open(&self, _cfg: &client::Config) -> Result<Box<dyn Api>, Error> {
            Ok(Box::new(Session {
                vc: self.vc.clone(),
                id: None,
                calls: Default::default(),
            }))
        }
    }

    /// Counter ids of the scripted catalog, in `COUNTERS` order, then
    /// `READY`.
    const IDS: [i32; R + 1] = [6, 24, 143, 125, 12];

    /// A scripted vCenter: two VMs, samples the test publishes, faults
    /// the test injects, and a record of what was asked of it.
    struct Vc {
        clock: Rc<Cell<u64>>,
        /// Server clock minus the host's.
        skew_ms: i64,
        vms: Vec<VmInfo>,
        /// Published samples: (end, server ms; per VM: usage per resource
        /// in vSphere's units).
        samples: Vec<(u64, Vec<[i64; R]>)>,
        /// Every call of `method` fails with this error.
        failing: Option<(&'static str, Error)>,
        /// Open sessions (a server restart clears them).
        sessions: BTreeSet<u64>,
        /// Sessions opened so far.
        logins: u64,
        /// (method, host ms) of every call.
        calls: Vec<(&'static str, u64)>,
    }

    impl Vc {
        fn new(clock: Rc<Cell<u64>>) -> Vc {
            let vm = |n: usize| VmInfo {
                moref: format!("vm-{n}"),
                name: format!("web-{n}"),
                ips: vec![format!("127.0.0.{}", n + 1)],
                powered_on: true,
                max_cpu_mhz: 4000.0,
                num_cpu: 4.0,
                memory_mb: 4096.0,
                host: None,
            };
            Vc {
                clock,
                skew_ms: 7_000,
                vms: vec![vm(1), vm(2)],
                samples: Vec::new(),
                failing: None,
                sessions: BTreeSet::new(),
                logins: 0,
                calls: Vec::new(),
            }
        }

        fn server_now(&self) -> u64 {
            (self.clock.get() as i64 + self.skew_ms) as u64
        }

        /// Host times of the calls of `method`.
        fn times(&self, method: &str) -> Vec<u64> {
            self.calls
                .iter()
                .filter(|c| c.0 == method)
                .map(|c| c.1)
                .collect()
        }
    }

    /// One session with the scripted vCenter.
    struct Session {
        vc: Rc<RefCell<Vc>>,
        /// Its session id (None: not logged in).
        id: Option<u64>,
        calls: std::collections::BTreeMap<&'static str, u64>,
    }

    impl Session {
        fn call(&mut self, method: &'static str, needs_session: bool) -> Result<(), Error> {
            *self.calls.entry(method).or_default() += 1;
            let mut vc = self.vc.borrow_mut();
            let now = vc.clock.get();
            vc.calls.push((method, now));
            if let Some((m, e)) = &vc.failing {
                if *m == method || *m == "*" {
                    return Err(e.clone());
                }
            }
            if needs_session && !self.id.is_some_and(|id| vc.sessions.contains(&id)) {
                return Err(Error::NotAuthenticated);
            }
            Ok(())
        }
    }

    impl Api for Session {
        fn logged_in(&self) -> bool {
            self.id.is_some()
        }
        fn connect(&mut self) -> Result<(), Error> {
            self.id = None;
            self.call("RetrieveServiceContent", false)?;
            self.call("Login", false)?;
            let mut vc = self.vc.borrow_mut();
            vc.logins += 1;
            let id = vc.logins;
            vc.sessions.insert(id);
            self.id = Some(id);
            Ok(())
        }
        fn logout(&mut self) {
            if self.id.is_some() && self.call("Logout", true).is_ok() {
                let id = self.id.unwrap_or(0);
                self.vc.borrow_mut().sessions.remove(&id);
            }
            self.id = None;
        }
        fn session(&self) -> Option<String> {
            self.id.map(|id| format!("vmware_soap_session=\"s{id}\""))
        }
        fn adopt(&mut self, cookie: &str) -> Result<(), Error> {
            self.id = None;
            self.call("RetrieveServiceContent", false)?;
            let id = cookie
                .strip_prefix("vmware_soap_session=\"s")
                .and_then(|c| c.strip_suffix('"'))
                .and_then(|c| c.parse().ok())
                .expect("a cookie of this vCenter");
            self.id = Some(id);
            Ok(())
        }
        fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error> {
            self.call("RetrievePropertiesEx", true)?;
            Ok(COUNTERS
                .iter()
                .chain(&[READY])
                .zip(IDS)
                .map(|(n, id)| (id, n.to_string()))
                .collect())
        }
        fn create_vm_view(&mut self) -> Result<MoRef, Error> {
            self.call("CreateContainerView", true)?;
            Ok(MoRef {
                kind: "ContainerView".into(),
                value: "session[1]view".into(),
            })
        }
        fn vms(&mut self, _view: &MoRef) -> Result<Vec<VmInfo>, Error> {
            self.call("RetrievePropertiesEx", true)?;
            Ok(self.vc.borrow().vms.clone())
        }
        fn refresh_rate(&mut self, _vm: &str) -> Result<i32, Error> {
            self.call("QueryPerfProviderSummary", true)?;
            Ok(20)
        }
        fn query_perf(
            &mut self,
            vms: &[String],
            counters: &[i32],
            interval: i32,
            max_sample: u32,
        ) -> Result<Vec<EntityMetric>, Error> {
            self.call("QueryPerf", true)?;
            assert_eq!(interval, 20);
            let vc = self.vc.borrow();
            // a sample is published a few seconds after its period ends
            let seen: Vec<&(u64, Vec<[i64; R]>)> = vc
                .samples
                .iter()
                .filter(|s| s.0 + 2_000 <= vc.server_now())
                .collect();
            let seen = &seen[seen.len().saturating_sub(max_sample as usize)..];
            Ok(vms
                .iter()
                .map(|vm| {
                    let v = vc.vms.iter().position(|x| &x.moref == vm).unwrap();
                    EntityMetric {
                        entity: vm.clone(),
                        samples: seen.iter().map(|s| (s.0, 20)).collect(),
                        series: counters
                            .iter()
                            .map(|&id| crate::vsphere::xml::Series {
                                counter_id: id,
                                instance: String::new(),
                                values: seen
                                    .iter()
                                    .map(|s| match IDS.iter().position(|&x| x == id) {
                                        Some(j) if j < R => s.1[v][j],
                                        _ => 0, // no CPU ready
                                    })
                                    .collect(),
                            })
                            .collect(),
                    }
                })
                .collect())
        }
        fn current_time(&mut self) -> Result<u64, Error> {
            self.call("CurrentTime", true)?;
            Ok(self.vc.borrow().server_now())
        }
        fn calls(&self) -> &std::collections::BTreeMap<&'static str, u64> {
            &self.calls
        }
    }

    /// Work per request the scripted VMs report: CPU MHz·s and network
    /// KB per request.
    const CPU_PER_REQUEST: i64 = 100;
    const NET_PER_REQUEST: i64 = 5;

    /// An upstream of two servers on the scripted vCenter's two VMs, its
    /// zone, the lease, and the test host.
    struct Rig {
        zone: Vec<AtomicU64>,
        lease: Vec<AtomicU64>,
        conf: UpstreamConf,
        host: TestHost,
        /// Requests completed per server in the current 20-s period.
        period: RefCell<[i64; 2]>,
    }

    impl Rig {
        fn new(args: &[&str]) -> Rig {
            let rig = Rig {
                zone: (0..crate::shared::words(2))
                    .map(|_| AtomicU64::new(0))
                    .collect(),
                lease: (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect(),
                conf: parse_upstream(args).unwrap(),
                host: TestHost::new(),
                period: RefCell::new([0; 2]),
            };
            rig.shared().init(1);
            rig
        }

        fn shared(&self) -> Shared<'_> {
            Shared::new(&self.zone, 2).unwrap()
        }

        fn collector(&self, pid: u64) -> Collector<'_, '_> {
            let peers = (2..4)
                .map(|n| {
                    let ip: IpAddr = format!("127.0.0.{n}").parse().unwrap();
                    PeerSpec::new(
                        &format!("{ip}:80"),
                        Some(ip),
                        1.0,
                        false,
                        false,
                        None,
                        &self.conf,
                    )
                })
                .collect();
            let spec = Spec {
                endpoints: vec![EndpointSpec {
                    name: "vc".into(),
                    client: client::Config {
                        url: "https://vc.test/sdk".into(),
                        user: "u".into(),
                        password: "p".into(),
                        ca_pem: None,
                        tls_verify: true,
                        timeout: Duration::from_secs(5),
                    },
                }],
                upstreams: vec![UpstreamSpec {
                    name: "app".into(),
                    conf: self.conf.clone(),
                    endpoint: Some(0),
                    peers,
                    shared: self.shared(),
                }],
                lease: Lease::new(&self.lease).unwrap(),
                pid,
            };
            Collector::new(spec, &self.host)
        }

        fn now(&self) -> u64 {
            self.host.now.get()
        }

        fn vc(&self) -> std::cell::RefMut<'_, Vc> {
            self.host.vc.borrow_mut()
        }

        /// Runs the clock to `until` in 100-ms steps: every step completes
        /// `rates(period)[i] / 10` requests on server `i` (the rates are
        /// per second, multiples of 10), the scripted vCenter publishes
        /// each 20-s period's usage when it ends (work per request ×
        /// requests), and the collector ticks.
        fn run(&self, c: &mut Collector<'_, '_>, until: u64, rates: impl Fn(u64) -> [i64; 2]) {
            let s = self.shared();
            while self.now() < until {
                let t = self.now() + 100;
                self.host.now.set(t);
                let k = (t - 1) / 20_000;
                let r = rates(k);
                for (i, &n) in r.iter().enumerate() {
                    for _ in 0..n / 10 {
                        s.count(i);
                        s.finish(i, s.epoch());
                    }
                    self.period.borrow_mut()[i] += n / 10;
                }
                if t.is_multiple_of(20_000) {
                    let done = std::mem::take(&mut *self.period.borrow_mut());
                    let mut vc = self.vc();
                    let end = (t as i64 + vc.skew_ms) as u64;
                    let usage = done
                        .iter()
                        .map(|&d| {
                            [
                                CPU_PER_REQUEST * d / 20,
                                1 << 20,
                                NET_PER_REQUEST * d / 20,
                                0,
                            ]
                        })
                        .collect();
                    vc.samples.push((end, usage));
                }
                c.tick(t);
            }
        }
    }

    /// Request rates that change every period (so pairing a sample with
    /// the wrong period's requests gives a wrong cost).
    fn varying(k: u64) -> [i64; 2] {
        [10 * (1 + (k % 3) as i64), 10 * (1 + ((k + 1) % 2) as i64)]
    }

    fn spec(lease: Lease<'_>, pid: u64) -> Spec<'_> {
        Spec {
            endpoints: Vec::new(),
            upstreams: Vec::new(),
            lease,
            pid,
        }
    }

    #[test]
    fn one_worker_holds_the_lease_until_it_dies_or_goes_silent() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let lease = Lease::new(&words).unwrap();
        let host = TestHost::new();
        let mut a = Collector::new(spec(lease, 10), &host);
        let mut b = Collector::new(spec(lease, 11), &host);
        a.tick(1_000);
        b.tick(1_000);
        assert!(a.is_holder() && !b.is_holder());
        // renewed by every tick of the holder, at the time it is given
        a.tick(1_000 + a.lease_timeout_ms);
        b.tick(1_000 + a.lease_timeout_ms + 1);
        assert!(a.is_holder() && !b.is_holder());
        // the holder goes silent past the timeout: taken over
        let t = 1_000 + 2 * a.lease_timeout_ms + 2;
        b.tick(t);
        assert!(b.is_holder());
        a.tick(t + 1);
        assert!(!a.is_holder());
        assert_eq!(host.logged(Level::Notice, "another worker took over"), 1);
        // the holder's process dies: taken over at once
        host.dead.borrow_mut().push(11);
        a.tick(t + 2);
        assert!(a.is_holder());
        assert_eq!(lease.holder(), 10);
    }

    #[test]
    fn peer_spec_takes_its_node_line_over_the_upstream() {
        let ups = parse_upstream(&["cpu_ratio=0.5"]).unwrap();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let bare = PeerSpec::new("127.0.0.2:80", Some(ip), 2.0, false, false, None, &ups);
        assert_eq!(bare.vm, VmRef::GuestIp);
        assert!(bare.capacity.iter().all(|c| c.is_nan()));
        assert_eq!(
            format!("{:?}", bare.accounting),
            format!("{:?}", ups.accounting)
        );
        let node = parse_node(&["127.0.0.2:80", "vm=web-1", "cpu=2000", "cpu_ratio=0.8"]).unwrap();
        let p = PeerSpec::new(
            "127.0.0.2:80",
            Some(ip),
            2.0,
            true,
            false,
            Some(&node),
            &ups,
        );
        assert_eq!(p.vm, VmRef::Name("web-1".into()));
        assert_eq!(p.capacity[0], 2000.0);
        assert_eq!((p.weight, p.backup, p.ip), (2.0, true, Some(ip)));
        assert_eq!(
            format!("{:?}", p.accounting),
            format!("{:?}", node.accounting.over(&ups.accounting))
        );
        assert_ne!(
            format!("{:?}", p.accounting),
            format!("{:?}", ups.accounting)
        );
    }

    #[test]
    fn samples_are_paired_with_the_requests_of_their_own_period() {
        // the server clock is 7 s ahead and the rates change every period:
        // only a sample paired with its own period's requests (skew
        // removed) gives the true work per request
        let rig = Rig::new(&["interval=20s"]);
        let mut c = rig.collector(10);
        rig.run(&mut c, 200_000, varying);
        let s = rig.shared();
        assert!(s.usable(rig.now()), "{:?}", s.reason(rig.now()));
        let cost = s.cost();
        assert!((cost[0] - CPU_PER_REQUEST as f64).abs() < 0.5, "{cost:?}");
        assert!((cost[2] - NET_PER_REQUEST as f64).abs() < 0.05, "{cost:?}");
        // each VM's newest sample is published as it was reported (MB for
        // memory): one of the periods' 1, 2 or 3 requests per 100 ms
        for p in 0..2 {
            let u = s.peer_info(p).usage;
            assert!([1000.0, 2000.0, 3000.0].contains(&u[0]), "{u:?}");
            assert_eq!(&u[1..], &[1024.0, 5.0 * u[0] / 100.0, 0.0], "{u:?}");
        }
        // one session: counters, view, inventory, clock once, one
        // QueryPerf per 20 s
        let vc = rig.vc();
        assert_eq!(vc.times("Login").len(), 1);
        assert_eq!(vc.times("CurrentTime").len(), 1);
        let q = vc.times("QueryPerf");
        // on the interval's grid after the first
        assert!(q[1..].windows(2).all(|w| w[1] - w[0] == 20_000), "{q:?}");
        assert_eq!(
            rig.host.logged(
                Level::Notice,
                "polling 2 VMs for 2 of 2 servers every 20000 ms"
            ),
            1
        );
        assert_eq!(
            rig.host.logged(Level::Notice, "balances by ESXi counters"),
            1
        );
        // both servers were found by guest IP, and say which VM
        assert_eq!(
            rig.shared().mapping(1),
            (Mapping::Mapped, Some("web-2".into()))
        );
    }

    #[test]
    fn servers_without_a_vm_are_summed_up_in_one_line() {
        let rig = Rig::new(&["interval=20s"]);
        rig.vc().vms.clear();
        let mut c = rig.collector(10);
        rig.run(&mut c, 60_000, |_| [10, 10]);
        let lines: Vec<String> = rig
            .host
            .log
            .borrow()
            .iter()
            .filter(|(_, m)| m.contains("match no VM"))
            .map(|(_, m)| m.clone())
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("2 servers match no VM: 127.0.0.2:80 (guest IP 127.0.0.2), 127.0.0.3:80 (guest IP 127.0.0.3); balanced on their weight (0 of 2 servers mapped)"),
            "{}",
            lines[0]
        );
        assert_eq!(rig.shared().mapping(0), (Mapping::NoGuestIp, None));
        // the VMs appear: one line again, for both
        let vms = Vc::new(rig.host.now.clone()).vms;
        rig.vc().vms = vms;
        rig.run(&mut c, 120_000, |_| [10, 10]);
        assert_eq!(
            rig.host
                .logged(Level::Notice, "2 servers found their VM: 127.0.0.2:80 (guest IP 127.0.0.2), 127.0.0.3:80 (guest IP 127.0.0.3) (2 of 2 servers mapped)"),
            1
        );
        assert_eq!(rig.shared().mapping(0).0, Mapping::Mapped);
        let seven: Vec<String> = (0..7).map(|i| i.to_string()).collect();
        assert_eq!(first_few(&seven), "0, 1, 2, 3, 4 and 2 more");
    }

    #[test]
    fn failures_back_off_to_a_cap_and_are_logged_once_per_kind() {
        let rig = Rig::new(&["interval=20s"]);
        rig.vc().failing = Some(("RetrieveServiceContent", Error::Connect("refused".into())));
        let mut c = rig.collector(10);
        rig.run(&mut c, 200_000, |_| [0, 0]);
        let t = rig.vc().times("RetrieveServiceContent");
        let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
        // doubling from 1 s up to twice the interval
        assert_eq!(gaps[..6], [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
        assert!(gaps[6..].iter().all(|&g| g == 40_000), "{gaps:?}");
        assert!(gaps.len() >= 8, "{gaps:?}");
        assert_eq!(rig.host.logged(Level::Warn, "cannot connect: refused"), 1);
        assert_eq!(rig.shared().reason(rig.now()), Reason::VsphereError);
        assert_eq!(rig.host.logged(Level::Info, "uses weighted round robin"), 1);
        // another kind of failure: logged once more
        rig.vc().failing = Some(("RetrieveServiceContent", Error::Timeout));
        rig.run(&mut c, 300_000, |_| [0, 0]);
        assert_eq!(rig.host.logged(Level::Warn, "timed out"), 1);
        // healed: said once, and back on the interval
        rig.vc().failing = None;
        let healed = rig.now();
        rig.run(&mut c, 450_000, |_| [0, 0]);
        assert_eq!(rig.host.logged(Level::Notice, "polling 2 VMs"), 1);
        let q = rig.vc().times("QueryPerf");
        assert!(q[0] - healed <= 40_000, "{q:?}");
        assert!(q.windows(2).all(|w| w[1] - w[0] == 20_000), "{q:?}");
        assert_eq!(rig.vc().times("Login").len(), 1);
    }

    #[test]
    fn counters_serve_until_their_ttl_then_round_robin_once_then_recover() {
        let rig = Rig::new(&["interval=20s", "ttl=60s"]);
        let mut c = rig.collector(10);
        rig.run(&mut c, 200_000, varying);
        let s = rig.shared();
        assert!(s.usable(rig.now()));
        rig.vc().failing = Some(("QueryPerf", Error::Timeout));
        let until = s.valid_until();
        // the last good window keeps serving up to its TTL ...
        rig.run(&mut c, until - 100, varying);
        assert!(s.usable(rig.now()));
        assert_eq!(rig.host.logged(Level::Warn, "timed out"), 1);
        assert_eq!(rig.host.logged(Level::Warn, "uses weighted round robin"), 0);
        // ... then the upstream falls back, said once however long it lasts
        rig.run(&mut c, until + 200_000, varying);
        assert!(!s.usable(rig.now()));
        assert_eq!(s.reason(rig.now()), Reason::Stale);
        assert_eq!(
            rig.host.logged(
                Level::Warn,
                &format!("uses weighted round robin: {}", Reason::Stale.text())
            ),
            1
        );
        assert_eq!(rig.host.logged(Level::Warn, "timed out"), 1);
        // healed: counters drive the pick again, said once
        rig.vc().failing = None;
        rig.run(&mut c, until + 320_000, varying);
        assert!(s.usable(rig.now()), "{:?}", s.reason(rig.now()));
        assert_eq!(
            rig.host.logged(Level::Notice, "balances by ESXi counters"),
            2
        );
    }

    #[test]
    fn an_expired_session_logs_in_again_within_the_same_poll() {
        let rig = Rig::new(&["interval=20s"]);
        let mut c = rig.collector(10);
        rig.run(&mut c, 100_000, varying);
        assert_eq!(rig.vc().times("Login").len(), 1);
        // the server restarts: every session it had is gone
        rig.vc().sessions.clear();
        rig.run(&mut c, 130_000, varying);
        let vc = rig.vc();
        assert_eq!(vc.times("Login").len(), 2);
        let q = vc.times("QueryPerf");
        // refused, then answered after the new login, in the same poll
        assert_eq!(q[q.len() - 1], q[q.len() - 2], "{q:?}");
        drop(vc);
        assert!(rig.host.log.borrow().iter().all(|(l, _)| *l != Level::Warn));
        assert!(rig.shared().usable(rig.now()));
        // stopping logs out of the session
        c.shutdown();
        assert_eq!(rig.vc().times("Logout").len(), 1);
        assert_eq!(rig.vc().calls.last().map(|c| c.0), Some("Logout"));
    }

    #[test]
    fn a_refused_login_is_said_once_and_retried_rarely_by_every_worker() {
        let rig = Rig::new(&["interval=20s"]);
        rig.vc().failing = Some(("Login", Error::InvalidLogin));
        let mut a = rig.collector(10);
        rig.run(&mut a, 31 * 60_000, |_| [10, 10]);
        let logins = rig.vc().times("Login");
        // at once, then after 5 and 10 more minutes
        assert_eq!(logins.len(), 3, "{logins:?}");
        assert_eq!(logins[1] - logins[0], 5 * 60_000);
        assert_eq!(logins[2] - logins[1], 10 * 60_000);
        assert_eq!(
            rig.host.logged(
                Level::Error,
                "login refused for u: check user= and password_file="
            ),
            1
        );
        assert_eq!(rig.shared().reason(rig.now()), Reason::VsphereError);
        // another worker takes over: it holds back as well (the refusal is
        // in the shared record), and the old holder's session is logged out
        rig.host.dead.borrow_mut().push(10);
        let mut b = rig.collector(11);
        rig.run(&mut b, 34 * 60_000, |_| [10, 10]);
        assert!(b.is_holder());
        assert_eq!(rig.vc().times("Login").len(), 3);
        // the password is fixed: the next try (20 minutes after the last)
        // logs in, and the refusals are forgotten
        rig.vc().failing = None;
        rig.run(&mut b, 37 * 60_000, |_| [10, 10]);
        let logins = rig.vc().times("Login");
        assert_eq!(logins.len(), 4, "{logins:?}");
        assert_eq!(logins[3] - logins[2], 20 * 60_000);
        let lease = Lease::new(&rig.lease).unwrap();
        let rec = lease
            .endpoint(names_hash(["vc", "https://vc.test/sdk", "u"]))
            .unwrap()
            .stats();
        assert_eq!(
            (rec.auth_failures, rec.auth_retry_at_ms, rec.logins),
            (3, 0, 1)
        );
        assert_eq!(rec.errors[6], 3);
        assert!(rec.last_success_ms > 0 && rec.calls > 4);
    }

    impl Rig {
        /// The endpoint's record in the lease zone.
        fn record(&self) -> crate::shared::EndpointRecord<'_> {
            Lease::new(&self.lease)
                .unwrap()
                .find_endpoint(names_hash(["vc", "https://vc.test/sdk", "u"]))
                .expect("the endpoint's record")
        }
        /// Open sessions on the scripted vCenter.
        fn sessions(&self) -> Vec<u64> {
            self.vc().sessions.iter().copied().collect()
        }
    }

    #[test]
    fn a_killed_polling_worker_s_session_is_reused_not_left_open() {
        let rig = Rig::new(&["interval=20s"]);
        let mut a = rig.collector(10);
        rig.run(&mut a, 30_000, varying);
        assert_eq!(rig.sessions(), [1]);
        assert_eq!(
            rig.record().session().as_deref(),
            Some("vmware_soap_session=\"s1\"")
        );
        // a is killed (kill -9: no logout); b takes over and carries on
        // with a's session instead of opening a second one
        rig.host.dead.borrow_mut().push(10);
        let mut b = rig.collector(11);
        rig.run(&mut b, 100_000, varying);
        assert!(b.is_holder());
        assert_eq!(rig.vc().times("Login").len(), 1);
        assert_eq!(rig.sessions(), [1]);
        assert!(rig.shared().usable(rig.now()));
        assert_eq!(
            rig.host.logged(
                Level::Notice,
                "reusing the session of the previous polling worker"
            ),
            1
        );
        assert_eq!(rig.record().stats().sessions_reused, 1);
        assert_eq!(rig.record().stats().logins, 1);
        // b stops: the session is logged out and no longer handed over
        b.shutdown();
        assert!(rig.sessions().is_empty());
        assert_eq!(rig.record().session(), None);
        assert_eq!(rig.vc().times("Logout").len(), 1);
    }

    #[test]
    fn a_handed_over_session_that_is_gone_is_replaced_in_the_same_poll() {
        let rig = Rig::new(&["interval=20s"]);
        let mut a = rig.collector(10);
        rig.run(&mut a, 30_000, varying);
        // a is killed and the vCenter restarts before b takes over: the
        // session in the record is gone, so b logs in, within its first
        // poll and without a warning
        rig.host.dead.borrow_mut().push(10);
        rig.vc().sessions.clear();
        let mut b = rig.collector(11);
        rig.run(&mut b, 100_000, varying);
        assert_eq!(rig.vc().times("Login").len(), 2);
        assert_eq!(rig.sessions(), [2]);
        assert_eq!(
            rig.record().session().as_deref(),
            Some("vmware_soap_session=\"s2\"")
        );
        assert_eq!(rig.record().stats().sessions_reused, 0);
        assert!(rig.host.log.borrow().iter().all(|(l, _)| *l != Level::Warn));
        assert!(rig.shared().usable(rig.now()));
    }

    #[test]
    fn a_frozen_worker_leaves_its_session_to_the_one_that_took_over() {
        let rig = Rig::new(&["interval=20s"]);
        let mut a = rig.collector(10);
        rig.run(&mut a, 30_000, varying);
        // a freezes; b takes over after the takeover time, with a's session
        let mut b = rig.collector(11);
        let t = rig.now() + a.lease_timeout_ms + 100;
        rig.host.now.set(t);
        b.tick(t);
        assert!(b.is_holder());
        // a resumes and finds the lease gone: the session is b's now, so a
        // forgets it without logging it out
        a.tick(t + 100);
        assert!(!a.is_holder());
        assert_eq!(rig.vc().times("Logout").len(), 0);
        rig.run(&mut b, t + 60_000, varying);
        assert_eq!(rig.vc().times("Login").len(), 1);
        assert_eq!(rig.sessions(), [1]);
        assert!(rig.shared().usable(rig.now()));
    }

    #[test]
    fn a_frozen_worker_logs_out_a_session_no_one_took_over() {
        let rig = Rig::new(&["interval=20s"]);
        let mut a = rig.collector(10);
        rig.run(&mut a, 30_000, varying);
        // a freezes; its session was not handed over (a cookie too long
        // for the record, say), so b opens its own
        rig.record().set_session(None);
        let mut b = rig.collector(11);
        let t = rig.now() + a.lease_timeout_ms + 100;
        rig.host.now.set(t);
        b.tick(t);
        assert!(b.is_holder());
        assert_eq!(rig.sessions(), [1, 2]);
        // a resumes: its session is not the one handed over, so a logs it
        // out rather than leaving it open
        a.tick(t + 100);
        assert!(!a.is_holder());
        assert_eq!(rig.vc().times("Logout").len(), 1);
        assert_eq!(rig.sessions(), [2]);
    }
}
