//! The collector's test doubles: a runtime whose clock and process table
//! the test sets, a scripted vCenter behind its sessions (two VMs, samples
//! the test publishes, faults it injects, a record of every call), and a
//! rig of one upstream of two servers with its zone and the lease.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::collector::{
    Collector, EndpointSpec, Level, PeerSpec, Runtime, SourceConfig, Spec, UpstreamSpec,
};
use crate::conf::{parse_upstream, UpstreamConf};
use crate::resources::{COUNTERS, CPU_PERCENT, R, READY};
use crate::vsphere::client;
use crate::vsphere::xml::{EntityMetric, MoRef, VmInfo};
use crate::vsphere::{Api, Error};
use crate::zone::{names_hash, EndpointRecord, Lease, UpstreamZone, LEASE_WORDS};

/// A runtime with a clock and process table the test sets, and a
/// scripted vCenter behind its sessions.
pub(super) struct TestRuntime {
    pub(super) now: Rc<Cell<u64>>,
    pub(super) dead: RefCell<Vec<u64>>,
    pub(super) log: RefCell<Vec<(Level, String)>>,
    pub(super) vc: Rc<RefCell<Vc>>,
}

impl TestRuntime {
    pub(super) fn new() -> TestRuntime {
        let now = Rc::new(Cell::new(1_000));
        TestRuntime {
            vc: Rc::new(RefCell::new(Vc::new(now.clone()))),
            now,
            dead: RefCell::new(Vec::new()),
            log: RefCell::new(Vec::new()),
        }
    }

    /// Log lines at `level` containing `text`.
    pub(super) fn logged(&self, level: Level, text: &str) -> usize {
        self.log
            .borrow()
            .iter()
            .filter(|(l, m)| *l == level && m.contains(text))
            .count()
    }
}

impl Runtime for TestRuntime {
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
    fn open(&self, _cfg: &SourceConfig) -> Result<Box<dyn Api>, Error> {
        Ok(Box::new(Session {
            vc: self.vc.clone(),
            id: None,
            calls: Default::default(),
        }))
    }
}

/// Counter ids of the scripted catalog, in `COUNTERS` order, then
/// `READY`.
pub(super) const IDS: [i32; R + 2] = [6, 24, 143, 125, 12, 2];

/// A scripted vCenter: two VMs, samples the test publishes, faults
/// the test injects, and a record of what was asked of it.
pub(super) struct Vc {
    pub(super) clock: Rc<Cell<u64>>,
    /// Server clock minus the host's.
    pub(super) skew_ms: i64,
    pub(super) vms: Vec<VmInfo>,
    /// Published samples: (end, server ms; per VM: usage per resource
    /// in vSphere's units).
    pub(super) samples: Vec<(u64, Vec<[i64; R]>)>,
    /// Every call of `method` fails with this error.
    pub(super) failing: Option<(&'static str, Error)>,
    /// Open sessions (a server restart clears them).
    pub(super) sessions: BTreeSet<u64>,
    /// Sessions opened so far.
    pub(super) logins: u64,
    /// (method, host ms) of every call.
    pub(super) calls: Vec<(&'static str, u64)>,
    /// Counters left out of the catalog.
    pub(super) lacking: Vec<&'static str>,
    /// Pages of an inventory read, and the time each takes (host ms).
    pub(super) pages: (u64, u64),
    /// At the next call of this method, the worker of this pid takes the
    /// lease (in these words) over, as if the caller had frozen.
    pub(super) takeover: Option<(&'static str, u64, Rc<[AtomicU64]>)>,
}

impl Vc {
    pub(super) fn new(clock: Rc<Cell<u64>>) -> Vc {
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
            lacking: Vec::new(),
            pages: (1, 0),
            takeover: None,
        }
    }

    pub(super) fn server_now(&self) -> u64 {
        (self.clock.get() as i64 + self.skew_ms) as u64
    }

    /// Host times of the calls of `method`.
    pub(super) fn times(&self, method: &str) -> Vec<u64> {
        self.calls
            .iter()
            .filter(|c| c.0 == method)
            .map(|c| c.1)
            .collect()
    }
}

/// One session with the scripted vCenter.
pub(super) struct Session {
    pub(super) vc: Rc<RefCell<Vc>>,
    /// Its session id (None: not logged in).
    pub(super) id: Option<u64>,
    pub(super) calls: std::collections::BTreeMap<&'static str, u64>,
}

impl Session {
    pub(super) fn call(&mut self, method: &'static str, needs_session: bool) -> Result<(), Error> {
        *self.calls.entry(method).or_default() += 1;
        let mut vc = self.vc.borrow_mut();
        let now = vc.clock.get();
        vc.calls.push((method, now));
        if vc.takeover.as_ref().is_some_and(|t| t.0 == method) {
            let (_, pid, words) = vc.takeover.take().unwrap_or_else(|| unreachable!());
            let lease = Lease::new(&words).unwrap();
            lease.release(lease.holder());
            assert!(lease.acquire(pid, now, 1, |_| true));
        }
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
        let lacking = self.vc.borrow().lacking.clone();
        Ok(COUNTERS
            .iter()
            .chain(&[READY, CPU_PERCENT])
            .zip(IDS)
            .filter(|(n, _)| !lacking.contains(n))
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
    fn vms(&mut self, _view: &MoRef, between: &mut dyn FnMut()) -> Result<Vec<VmInfo>, Error> {
        self.call("RetrievePropertiesEx", true)?;
        let (pages, page_ms) = self.vc.borrow().pages;
        for _ in 1..pages {
            let clock = self.vc.borrow().clock.clone();
            clock.set(clock.get() + page_ms);
            between();
            self.call("ContinueRetrievePropertiesEx", true)?;
        }
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
                                    _ => 0, // no CPU ready, cpu.usage 0 (no resize seen)
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
pub(super) const CPU_PER_REQUEST: i64 = 100;
pub(super) const NET_PER_REQUEST: i64 = 5;

/// An upstream of two servers on the scripted vCenter's two VMs, its
/// zone, the lease, and the test runtime.
pub(super) struct Rig {
    pub(super) zone: Vec<AtomicU64>,
    pub(super) lease: Rc<[AtomicU64]>,
    pub(super) conf: UpstreamConf,
    pub(super) rt: TestRuntime,
    /// Requests completed per server in the current 20-s period.
    pub(super) period: RefCell<[i64; 2]>,
}

impl Rig {
    pub(super) fn new(args: &[&str]) -> Rig {
        let rig = Rig {
            zone: crate::zone::test_words(2),
            lease: (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect(),
            conf: parse_upstream(args).unwrap(),
            rt: TestRuntime::new(),
            period: RefCell::new([0; 2]),
        };
        rig.zone().init(1);
        rig
    }

    pub(super) fn zone(&self) -> UpstreamZone<'_> {
        UpstreamZone::new(&self.zone, 2).unwrap()
    }

    pub(super) fn collector(&self, pid: u64) -> Collector<'_, '_> {
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
                source: SourceConfig::Vsphere(client::Config {
                    url: "https://vc.test/sdk".into(),
                    user: "u".into(),
                    password: "p".into(),
                    ca_pem: None,
                    tls_verify: true,
                    timeout: Duration::from_secs(5),
                    scope: None,
                }),
            }],
            upstreams: vec![UpstreamSpec {
                name: "app".into(),
                conf: self.conf.clone(),
                endpoint: Some(0),
                peers,
                zone: self.zone(),
            }],
            lease: Lease::new(&self.lease).unwrap(),
            pid,
        };
        Collector::new(spec, &self.rt)
    }

    pub(super) fn now(&self) -> u64 {
        self.rt.now.get()
    }

    pub(super) fn vc(&self) -> std::cell::RefMut<'_, Vc> {
        self.rt.vc.borrow_mut()
    }

    /// Runs the clock to `until` in 100-ms steps: every step completes
    /// `rates(period)[i] / 10` requests on server `i` (the rates are
    /// per second, multiples of 10), the scripted vCenter publishes
    /// each 20-s period's usage when it ends (work per request ×
    /// requests), and the collector ticks.
    pub(super) fn run(
        &self,
        c: &mut Collector<'_, '_>,
        until: u64,
        rates: impl Fn(u64) -> [i64; 2],
    ) {
        let s = self.zone();
        while self.now() < until {
            let t = self.now() + 100;
            self.rt.now.set(t);
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
pub(super) fn varying(k: u64) -> [i64; 2] {
    [10 * (1 + (k % 3) as i64), 10 * (1 + ((k + 1) % 2) as i64)]
}

pub(super) fn spec(lease: Lease<'_>, pid: u64) -> Spec<'_> {
    Spec {
        endpoints: Vec::new(),
        upstreams: Vec::new(),
        lease,
        pid,
    }
}

impl Rig {
    /// The endpoint's record in the lease zone.
    pub(super) fn record(&self) -> EndpointRecord<'_> {
        Lease::new(&self.lease)
            .unwrap()
            .find_endpoint(names_hash(["vc", "https://vc.test/sdk", "u"]))
            .expect("the endpoint's record")
    }
    /// Open sessions on the scripted vCenter.
    pub(super) fn sessions(&self) -> Vec<u64> {
        self.vc().sessions.iter().copied().collect()
    }
}
