//! The Prometheus counter source's client: instant queries over the HTTP
//! query API (`POST /api/v1/query`), each answer held to a size cap and
//! the call's deadline, answering the collector's calls
//! ([`crate::vsphere::Api`]) in vSphere's vocabulary:
//!
//! | the collector asks | the client queries |
//! |---|---|
//! | `connect`, `current_time` | `time()`: the server is there, and its clock |
//! | `perf_counters` | nothing: the profile's counters are the catalog |
//! | `vms` | the sizes and the CPU counter, now (`{__name__=~"…"}`); one VM per `id_label` value |
//! | `query_perf` | the counters of the mapped VMs over the last window (`{__name__=~"…",ID=~"…"}[W]`), every raw sample with its own timestamp |
//!
//! A sample's time is the series' timestamp (the scrape's, for exporters
//! that stamp nothing) minus `lag=`: an exporter such as vmware_exporter
//! reports vSphere's newest 20-s sample when scraped, which ended on
//! average half a period (plus vCenter's own delay) before.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::{Duration, Instant};

use super::answer::{decode, AnswerError, Data, Series};
use super::profile::{names, quote, Metric, Profile};
use crate::vsphere::budget::Capped;
use crate::vsphere::client::{http_client, transport_error};
use crate::vsphere::xml::{self, EntityMetric, MoRef, VmInfo};
use crate::vsphere::{Api, Error, Traffic};

/// The most an inventory answer may hold (about 12,000 VMs of
/// vmware_exporter's five size series, some 1.3 KB a VM).
pub const INVENTORY_CAP: usize = 16 << 20;
/// The most a `time()` answer may hold.
const SMALL_CAP: usize = 16 << 10;
/// The shortest scrape interval the samples answer is sized for, s.
const MIN_SCRAPE_S: u64 = 5;
/// Series one counter selector may match per VM (per-CPU, per-disk and
/// per-interface instances of Telegraf's series come along).
const SERIES_PER_SELECTOR: usize = 16;

/// Connection settings.
#[derive(Clone)]
pub struct Config {
    /// The server's base URL (`http://prometheus:9090`, or with a path
    /// prefix).
    pub url: String,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<String>,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    pub tls_verify: bool,
    /// Timeout of every call.
    pub timeout: Duration,
    pub profile: Profile,
    /// How long before its timestamp a sample's period ended, ms.
    pub lag_ms: u64,
    /// The period of the samples the exporter reports, s (vSphere's
    /// realtime: 20).
    pub period_s: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<hidden>"),
            )
            .field("tls_verify", &self.tls_verify)
            .field("timeout", &self.timeout)
            .field("profile", &self.profile.base)
            .field("lag_ms", &self.lag_ms)
            .finish()
    }
}

/// The client; one collector thread owns it.
pub struct Client {
    http: reqwest::blocking::Client,
    cfg: Config,
    connected: bool,
    calls: BTreeMap<&'static str, u64>,
    traffic: Traffic,
    /// The last inventory answer: a VM it had is kept through one answer
    /// without it (a failed scrape marks a target's series stale until
    /// the next one).
    last_inventory: Vec<VmInfo>,
    /// Ids shared by several VMs in the last inventory: not queried.
    ambiguous: std::collections::HashSet<String>,
}

fn from_reqwest(e: reqwest::Error) -> Error {
    transport_error(e, "Prometheus server")
}

/// Escapes a VM's label value for an anchored RE2 alternation.
fn regex_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `{__name__=~"a|b",LABEL=~"x|y"}`.
fn selector(names: &[&str], label: Option<(&str, &[String])>) -> String {
    let mut s = format!("{{__name__=~\"{}\"", quote(&names.join("|")));
    if let Some((l, values)) = label {
        let alts: Vec<String> = values.iter().map(|v| regex_literal(v)).collect();
        s.push_str(&format!(",{l}=~\"{}\"", quote(&alts.join("|"))));
    }
    s.push('}');
    s
}

/// Adds `x` into a NaN-started sum.
fn add(sum: &mut f64, x: f64) {
    *sum = if sum.is_nan() { x } else { *sum + x };
}

/// True if series `s` is one of those `m` sums.
fn counts_for(m: &Metric, s: &Series) -> bool {
    m.selectors.iter().any(|sel| sel.matches(&s.metric))
}

impl Client {
    /// Builds the HTTP client (TLS roots, timeouts). No network traffic.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        let http = http_client(cfg.timeout, cfg.ca_pem.as_deref(), cfg.tls_verify)?;
        Ok(Client {
            http,
            cfg,
            connected: false,
            calls: BTreeMap::new(),
            traffic: Traffic::default(),
            last_inventory: Vec::new(),
            ambiguous: Default::default(),
        })
    }

    /// One instant query; its answer read within `cap` bytes and the
    /// timeout, then decoded.
    fn query(&mut self, method: &'static str, promql: &str, cap: usize) -> Result<Data, Error> {
        let started = Instant::now();
        *self.calls.entry(method).or_default() += 1;
        let result = self.query_inner(method, promql, cap, started);
        self.traffic.answer_us += started.elapsed().as_micros() as u64;
        result
    }

    fn query_inner(
        &mut self,
        method: &'static str,
        promql: &str,
        cap: usize,
        started: Instant,
    ) -> Result<Data, Error> {
        let url = format!("{}/api/v1/query", self.cfg.url.trim_end_matches('/'));
        let mut req = self.http.post(url).form(&[("query", promql)]);
        if let Some(t) = &self.cfg.bearer_token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().map_err(from_reqwest)?;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let mut capped = Capped {
            inner: resp,
            read: 0,
            cap,
            deadline: started + self.cfg.timeout,
        };
        let read = capped.read_to_end(&mut body);
        self.traffic.bytes += capped.read as u64;
        match read {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::FileTooLarge => {
                return Err(Error::TooLarge {
                    method,
                    detail: e.to_string(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Err(Error::Timeout),
            Err(e) => return Err(Error::Transport(e.to_string())),
        }
        match decode(&body) {
            Ok(d) if status == 200 => Ok(d),
            Ok(_) => Err(Error::Http(status)),
            // Prometheus says why it refused (400, 422, 503)
            Err(AnswerError::Refused(why)) => {
                Err(Error::Fault(format!("Prometheus refused the query: {why}")))
            }
            Err(AnswerError::Malformed(_)) if status != 200 => Err(Error::Http(status)),
            Err(AnswerError::Malformed(e)) => Err(Error::Malformed(e)),
        }
    }

    /// The server's clock, ms (a scalar from Prometheus; a one-sample
    /// vector from servers that answer every query so, as
    /// VictoriaMetrics).
    fn time(&mut self) -> Result<u64, Error> {
        let v = match self.query("time", "time()", SMALL_CAP)? {
            Data::Scalar(_, v) => Some(v),
            Data::Series(s) if s.len() == 1 => s[0].points().last().map(|(_, v)| v),
            Data::Series(_) => None,
        };
        match v {
            Some(v) if v.is_finite() && v > 0.0 => Ok((v * 1000.0) as u64),
            _ => Err(Error::Malformed("time() is not a time".into())),
        }
    }

    /// The counters the collector asks for, by its ids (the catalog's
    /// positions + 1).
    fn counters(&self, ids: &[i32]) -> Vec<(i32, &Metric)> {
        ids.iter()
            .filter_map(|&id| {
                let (_, m) = self
                    .cfg
                    .profile
                    .counters
                    .get(usize::try_from(id - 1).ok()?)?;
                Some((id, m))
            })
            .collect()
    }
}

/// The VMs of an inventory answer, one per `id_label` value.
///
/// Series of one id whose other labels differ (but for the metric name
/// and the scrape's `instance` and `job`) are two VMs of one name, as
/// vmware_exporter's `vm_name` allows (names are unique only within a
/// folder): each is its own entry, so the collector says the server
/// matches more than one VM, and their samples are not read
/// ([`ambiguous`]).
fn inventory(profile: &Profile, series: &[Series]) -> Vec<VmInfo> {
    let mut by_id: BTreeMap<(&str, String), VmInfo> = BTreeMap::new();
    let sizes = &profile.sizes;
    for s in series {
        let Some(id) = s.metric.get(&profile.id_label) else {
            continue;
        };
        let identity: String = s
            .metric
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "__name__" | "instance" | "job"))
            .map(|(k, v)| format!("{k}={v}\u{0}"))
            .collect();
        let vm = by_id.entry((id, identity)).or_insert_with(|| VmInfo {
            moref: id.clone(),
            name: s.metric.get(&profile.name_label).unwrap_or(id).clone(),
            powered_on: sizes.power.is_none(),
            max_cpu_mhz: f64::NAN,
            num_cpu: f64::NAN,
            memory_mb: f64::NAN,
            ..VmInfo::default()
        });
        if let Some(ip) = profile.ip_label.as_ref().and_then(|l| s.metric.get(l)) {
            for ip in ip.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                if !vm.ips.iter().any(|x| x == ip) {
                    vm.ips.push(ip.to_string());
                }
            }
        }
        let Some((_, x)) = s.points().last() else {
            continue;
        };
        for (m, field) in [
            (&sizes.vcpus, &mut vm.num_cpu),
            (&sizes.cpu_max, &mut vm.max_cpu_mhz),
            (&sizes.mem_size, &mut vm.memory_mb),
        ] {
            if let Some(m) = m.as_ref().filter(|m| counts_for(m, s)) {
                add(field, x * m.factor);
            }
        }
        if sizes.power.as_ref().is_some_and(|m| counts_for(m, s)) && x == 1.0 {
            vm.powered_on = true;
        }
    }
    by_id
        .into_values()
        .map(|mut v| {
            // the collector reads 0 as unknown
            for f in [&mut v.num_cpu, &mut v.max_cpu_mhz, &mut v.memory_mb] {
                if !(f.is_finite() && *f > 0.0) {
                    *f = 0.0;
                }
            }
            v
        })
        .collect()
}

/// The ids that more than one VM of an inventory has.
fn ambiguous(inventory: &[VmInfo]) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    inventory
        .iter()
        .filter(|v| !seen.insert(v.moref.as_str()))
        .map(|v| v.moref.clone())
        .collect()
}

/// An inventory answer with the VMs of the previous answer it lacks (a
/// VM gone from two answers in a row is gone).
fn kept_once(fresh: &[VmInfo], last: &[VmInfo]) -> Vec<VmInfo> {
    let known: std::collections::HashSet<&str> = fresh.iter().map(|v| v.moref.as_str()).collect();
    let mut out = fresh.to_vec();
    out.extend(
        last.iter()
            .filter(|v| !known.contains(v.moref.as_str()))
            .cloned(),
    );
    out
}

/// The samples of a window answer, per VM, on the grid of `period_s`:
/// each raw sample's timestamp minus `lag_ms`, rounded to the nearest
/// period end, is the sample it reports (the last raw one of a slot
/// wins: a scrape interval shorter than the period reads one vSphere
/// sample twice, and VMs scraped at other times from other targets land
/// on the same ends); each counter the sum of its selectors' series; -1
/// where a counter has none.
fn samples(
    profile: &Profile,
    counters: &[(i32, &Metric)],
    series: &[Series],
    lag_ms: u64,
    period_s: u32,
) -> Vec<EntityMetric> {
    // VM -> period end -> (raw timestamp, one sum per counter)
    let p_ms = u64::from(period_s.max(1)) * 1000;
    let slot = |t: u64| (t.saturating_sub(lag_ms) + p_ms / 2) / p_ms * p_ms;
    let mut by_vm: HashMap<&str, BTreeMap<u64, (u64, Vec<f64>)>> = HashMap::new();
    for s in series {
        let Some(id) = s.metric.get(&profile.id_label) else {
            continue;
        };
        for (c, (_, m)) in counters.iter().enumerate() {
            if !counts_for(m, s) {
                continue;
            }
            let stamps = by_vm.entry(id).or_default();
            for (t, x) in s.points() {
                let (seen, row) = stamps
                    .entry(slot(t))
                    .or_insert_with(|| (t, vec![f64::NAN; counters.len()]));
                // a later raw sample of the slot replaces an earlier one
                if t > *seen {
                    *seen = t;
                    row.iter_mut().for_each(|x| *x = f64::NAN);
                } else if t < *seen {
                    continue;
                }
                // a negative value is a gap, as in vSphere, and so is a
                // sum with a gap in it (marked -inf)
                let sum = &mut row[c];
                if x < 0.0 {
                    *sum = f64::NEG_INFINITY;
                } else if *sum != f64::NEG_INFINITY {
                    add(sum, x * m.factor);
                }
            }
        }
    }
    by_vm
        .into_iter()
        .map(|(id, stamps)| EntityMetric {
            entity: id.to_string(),
            samples: stamps.keys().map(|t| (*t, period_s)).collect(),
            series: counters
                .iter()
                .enumerate()
                .map(|(c, (cid, _))| xml::Series {
                    counter_id: *cid,
                    instance: String::new(),
                    values: stamps
                        .values()
                        .map(|(_, row)| {
                            let x = row[c];
                            if x.is_finite() && x >= 0.0 {
                                x.round().min(i64::MAX as f64) as i64
                            } else {
                                -1
                            }
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

impl Api for Client {
    fn logged_in(&self) -> bool {
        self.connected
    }

    /// There is no session: the server answering `time()` is enough.
    fn connect(&mut self) -> Result<(), Error> {
        self.time()?;
        self.connected = true;
        Ok(())
    }

    fn logout(&mut self) {
        self.connected = false;
    }

    fn session(&self) -> Option<String> {
        None
    }

    fn adopt(&mut self, _cookie: &str) -> Result<(), Error> {
        self.connect()
    }

    fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error> {
        Ok(self
            .cfg
            .profile
            .counters
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (i as i32 + 1, name.to_string()))
            .collect())
    }

    fn create_vm_view(&mut self) -> Result<MoRef, Error> {
        Ok(MoRef {
            kind: "Prometheus".into(),
            value: "all".into(),
        })
    }

    fn vms(&mut self, _view: &MoRef, _: &mut dyn FnMut()) -> Result<Vec<VmInfo>, Error> {
        let names = self.cfg.profile.inventory_names();
        let q = selector(&names, None);
        let fresh = match self.query("inventory", &q, INVENTORY_CAP)? {
            Data::Series(s) => inventory(&self.cfg.profile, &s),
            Data::Scalar(..) => return Err(Error::Malformed("the inventory is a scalar".into())),
        };
        let out = kept_once(&fresh, &self.last_inventory);
        self.ambiguous = ambiguous(&out);
        self.last_inventory = fresh;
        Ok(out)
    }

    fn refresh_rate(&mut self, _vm: &str) -> Result<i32, Error> {
        Ok(self.cfg.period_s as i32)
    }

    fn query_perf(
        &mut self,
        vms: &[String],
        counters: &[i32],
        _interval: i32,
        max_sample: u32,
    ) -> Result<Vec<EntityMetric>, Error> {
        let vms: Vec<String> = vms
            .iter()
            .filter(|v| !self.ambiguous.contains(*v))
            .cloned()
            .collect();
        let (q, cap) = {
            let cfg = &self.cfg;
            let names = names(self.counters(counters).into_iter().map(|(_, m)| m));
            if names.is_empty() || vms.is_empty() {
                return Ok(Vec::new());
            }
            // the whole window the collector may want, and never less than
            // two minutes (scrape intervals are often a minute)
            let window_s = u64::from(max_sample.max(6)) * u64::from(cfg.period_s.max(1));
            let q = format!(
                "{}[{window_s}s]",
                selector(&names, Some((&cfg.profile.id_label, &vms)))
            );
            let per_series = 600 + 40 * (window_s / MIN_SCRAPE_S + 1) as usize;
            let cap = (vms.len() * names.len() * SERIES_PER_SELECTOR * per_series + (64 << 10))
                .min(256 << 20);
            (q, cap)
        };
        let Data::Series(series) = self.query("samples", &q, cap)? else {
            return Err(Error::Malformed("the samples are a scalar".into()));
        };
        let cfg = &self.cfg;
        let wanted = self.counters(counters);
        Ok(samples(
            &cfg.profile,
            &wanted,
            &series,
            cfg.lag_ms,
            cfg.period_s,
        ))
    }

    fn current_time(&mut self) -> Result<u64, Error> {
        self.time()
    }

    fn calls(&self) -> &BTreeMap<&'static str, u64> {
        &self.calls
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::answer::decode;

    fn series(json: &str) -> Vec<Series> {
        let body = format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"matrix\",\"result\":{json}}}}}"
        );
        match decode(body.as_bytes()).unwrap() {
            Data::Series(s) => s,
            Data::Scalar(..) => panic!(),
        }
    }

    #[test]
    fn queries_escape_names_for_regex_and_promql() {
        let q = selector(
            &["a", "b"],
            Some(("vm_name", &["web.1".into(), "x\"y".into()])),
        );
        assert_eq!(q, r#"{__name__=~"a|b",vm_name=~"web\\.1|x\"y"}"#);
    }

    #[test]
    fn the_inventory_is_one_vm_per_id_with_its_sizes() {
        let p = Profile::vmware_exporter();
        let s = series(
            r#"[{"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"a"},"values":[[10,"4"]]},
                {"metric":{"__name__":"vmware_vm_max_cpu_usage","vm_name":"a"},"values":[[10,"8000"]]},
                {"metric":{"__name__":"vmware_vm_memory_max","vm_name":"a"},"values":[[10,"4096"]]},
                {"metric":{"__name__":"vmware_vm_power_state","vm_name":"a"},"values":[[10,"1"]]},
                {"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"b"},"values":[[10,"NaN"]]},
                {"metric":{"__name__":"vmware_vm_num_cpu"},"values":[[10,"2"]]}]"#,
        );
        let vms = inventory(&p, &s);
        assert_eq!(vms.len(), 2);
        assert_eq!(
            (
                vms[0].name.as_str(),
                vms[0].num_cpu,
                vms[0].max_cpu_mhz,
                vms[0].memory_mb
            ),
            ("a", 4.0, 8000.0, 4096.0)
        );
        assert!(vms[0].powered_on && !vms[1].powered_on);
        assert_eq!(vms[1].num_cpu, 0.0);
        // a guest IP label, and no power metric: on
        let mut t = Profile::telegraf();
        t.id_label = "moid".into();
        let s = series(
            r#"[{"metric":{"__name__":"vsphere_vm_cpu_usagemhz_average","cpu":"instance-total","moid":"vm-1","vmname":"w","guestip":"10.0.0.5"},"values":[[10,"4"]]}]"#,
        );
        let vms = inventory(&t, &s);
        assert_eq!((vms[0].moref.as_str(), vms[0].name.as_str()), ("vm-1", "w"));
        assert_eq!(vms[0].ips, vec!["10.0.0.5".to_string()]);
        assert!(vms[0].powered_on);
    }

    #[test]
    fn samples_sum_selectors_keep_their_own_times_and_mark_gaps() {
        let p = Profile::vmware_exporter();
        let cpu = p.counter("cpu.usagemhz.average").unwrap();
        let net = p.counter("net.usage.average").unwrap();
        let s = series(
            r#"[{"metric":{"__name__":"vmware_vm_cpu_usagemhz_average","vm_name":"a"},"values":[[100,"500"],[120,"NaN"]]},
                {"metric":{"__name__":"vmware_vm_net_received_average","vm_name":"a"},"values":[[100,"10"],[120,"-1"]]},
                {"metric":{"__name__":"vmware_vm_net_transmitted_average","vm_name":"a"},"values":[[100,"5"],[120,"7"]]}]"#,
        );
        let m = samples(&p, &[(1, cpu), (4, net)], &s, 5_000, 20);
        assert_eq!(m.len(), 1);
        // 95 s and 115 s after the lag: the periods ending at 100 and 120 s
        assert_eq!(m[0].samples, vec![(100_000, 20), (120_000, 20)]);
        assert_eq!(m[0].value(1, 0), Some(500));
        assert_eq!(m[0].value(4, 0), Some(15));
        assert_eq!(m[0].value(1, 1), None);
        // one of the summed series is a gap: the sum is the gap
        assert_eq!(m[0].value(4, 1), None);
    }

    #[test]
    fn samples_land_on_the_period_grid_and_the_last_of_a_slot_wins() {
        let p = Profile::vmware_exporter();
        let cpu = p.counter("cpu.usagemhz.average").unwrap();
        // a 5-s scrape reads one 20-s sample four times; a VM of another
        // target is scraped 1.4 s later
        let s = series(
            r#"[{"metric":{"__name__":"vmware_vm_cpu_usagemhz_average","vm_name":"a"},"values":[[95,"1"],[100,"2"],[105,"3"],[110.1,"4"]]},
                {"metric":{"__name__":"vmware_vm_cpu_usagemhz_average","vm_name":"b"},"values":[[101.4,"7"]]}]"#,
        );
        let mut m = samples(&p, &[(1, cpu)], &s, 0, 20);
        m.sort_by(|x, y| x.entity.cmp(&y.entity));
        // a: 95, 100 and 105 s end the period at 100 s (105 wins); 110.1 s
        // the one at 120 s
        assert_eq!(m[0].samples, vec![(100_000, 20), (120_000, 20)]);
        assert_eq!((m[0].value(1, 0), m[0].value(1, 1)), (Some(3), Some(4)));
        // b lands on the same end as a's sample
        assert_eq!(m[1].samples, vec![(100_000, 20)]);
    }

    #[test]
    fn a_vm_missing_from_one_inventory_answer_is_kept_once() {
        let vm = |id: &str| VmInfo {
            moref: id.into(),
            ..VmInfo::default()
        };
        let ids = |v: Vec<VmInfo>| v.into_iter().map(|v| v.moref).collect::<Vec<_>>();
        // b missed one scrape: kept; then gone from two answers: gone
        let first = vec![vm("a"), vm("b")];
        let second = vec![vm("a")];
        assert_eq!(ids(kept_once(&second, &first)), vec!["a", "b"]);
        let third = vec![vm("a")];
        assert_eq!(ids(kept_once(&third, &second)), vec!["a"]);
    }

    #[test]
    fn two_vms_of_one_name_are_two_entries_and_ambiguous() {
        let p = Profile::vmware_exporter();
        let s = series(
            r#"[{"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"web","cluster_name":"A","instance":"e1"},"values":[[10,"2"]]},
                {"metric":{"__name__":"vmware_vm_max_cpu_usage","vm_name":"web","cluster_name":"A","instance":"e1"},"values":[[10,"4000"]]},
                {"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"web","cluster_name":"B","instance":"e2"},"values":[[10,"8"]]},
                {"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"db","cluster_name":"A","instance":"e1"},"values":[[10,"4"]]}]"#,
        );
        let vms = inventory(&p, &s);
        assert_eq!(vms.len(), 3);
        // sizes are not added across the two
        let web: Vec<f64> = vms
            .iter()
            .filter(|v| v.name == "web")
            .map(|v| v.num_cpu)
            .collect();
        assert_eq!(web, vec![2.0, 8.0]);
        let amb = ambiguous(&vms);
        assert!(amb.contains("web") && !amb.contains("db"));
    }
}
