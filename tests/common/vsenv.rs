//! End-to-end environment for the vSphere tests: backends, vcsim with one
//! VM per backend, nginx with the module polling vcsim (or reading the
//! same counters through vmware_exporter and Prometheus), and an optional
//! feeder that turns the backends' measured request rates into counters
//! (a small closed loop, as the lab does at scale).

use super::backend::Backend;
use super::nginx::{conf, Nginx};
use super::vcsim::{Opts, Vcsim, VmSpec};
use super::{free_port, http, wait_for};
use dwepc_lab::pipeline::{own_loopback_ip, FaultProxy, Prometheus, VmwareExporter};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct VsOpts {
    /// Number of backends/VMs.
    pub n: usize,
    /// Map by guest IP (backends on 127.0.0.2..) instead of by VM name.
    pub by_ip: bool,
    pub workers: u32,
    /// Parameters of the dwepc directive.
    pub dwepc: String,
    /// Extra parameters of dwepc_vsphere.
    pub endpoint: String,
    pub vcsim: Opts,
    /// VM CPU capacity (MHz) per backend.
    pub cpu_mhz: Vec<u32>,
    /// Password written to the password file (vcsim expects opts.pass).
    pub password: Option<String>,
    /// Network KB/s per request/s in the fed counters.
    pub net_per_req: f64,
    /// Constant memory (KB) and network (KB/s) in the fed counters.
    pub flat_mem_net: (i64, i64),
    /// The upstream has a `zone` (nginx's peer list in shared memory, under
    /// its peer locks).
    pub zone: bool,
    /// Extra main-context directives (e.g. `env DWEPC_FAULT=...;`).
    pub main_extra: String,
    /// With `by_ip`: every backend on this one port (the addresses of one
    /// DNS name).
    pub port: Option<u16>,
    /// Extra http-context directives (e.g. `resolver`).
    pub http_extra: String,
    /// The upstream's `server` lines instead of one per backend.
    pub servers: Option<String>,
    /// Extra directives of the `server {}` that proxies to the upstream
    /// (e.g. `access_log`).
    pub server_extra: String,
    /// Counters through the monitoring pipeline instead of vSphere:
    /// vcsim (TLS on port 443 of its own loopback address) →
    /// vmware_exporter → Prometheus (scraping every second) → nginx's
    /// `dwepc_prometheus`, with these extra parameters.
    pub via_prometheus: Option<String>,
    /// With `via_prometheus`: nginx reads Prometheus through a relay
    /// that injects faults ([`FaultProxy`]).
    pub prometheus_faults: bool,
}

impl Default for VsOpts {
    fn default() -> Self {
        VsOpts {
            n: 3,
            by_ip: false,
            workers: 1,
            dwepc: "interval=1s window=8 min_samples=2 ttl=8s pick=least_conn".into(),
            endpoint: "timeout=2s".into(),
            vcsim: Opts {
                refresh_s: 1,
                ..Opts::default()
            },
            cpu_mhz: vec![4000; 3],
            password: None,
            net_per_req: 0.0,
            flat_mem_net: (524_288, 100),
            zone: false,
            main_extra: String::new(),
            port: None,
            http_extra: String::new(),
            servers: None,
            server_extra: String::new(),
            via_prometheus: None,
            prometheus_faults: false,
        }
    }
}

impl VsOpts {
    /// One worker whose counters outlive two minutes of vSphere faults
    /// (`ttl=120s`, 2-s call timeout): the last window keeps serving.
    pub fn riding_out_faults() -> VsOpts {
        VsOpts {
            dwepc: "interval=1s window=8 min_samples=2 ttl=120s pick=least_conn".into(),
            endpoint: "timeout=2s".into(),
            ..VsOpts::default()
        }
    }
}

pub struct VsEnv {
    pub port: u16,
    pub nginx: Nginx,
    /// With `via_prometheus`: the exporter and the Prometheus server
    /// (dropped before the simulator).
    pub prometheus: Option<Prometheus>,
    pub exporter: Option<VmwareExporter>,
    pub faults: Option<FaultProxy>,
    pub vcsim: Vcsim,
    pub backends: Vec<Backend>,
    pub text: String,
    feeder: Option<Feeder>,
    net_per_req: f64,
    flat_mem_net: (i64, i64),
    /// Extra CPU (MHz) per VM, added by the feeder.
    pub extra_cpu: Arc<Mutex<Vec<f64>>>,
    /// Each VM's CPU size (MHz) that the fed `cpu.usage` is a percentage
    /// of (a resize changes it).
    pub cpu_size: Arc<Mutex<Vec<f64>>>,
}

/// The status says counters drive the pick.
pub fn active(st: &serde_json::Value) -> bool {
    st["balancing"] == "dwepc"
}

/// Resident memory of a process, KB (0 if it is gone).
pub fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

pub fn vm_name(i: usize) -> String {
    format!("web-{i}")
}

impl VsEnv {
    pub fn start(o: VsOpts) -> VsEnv {
        let backends: Vec<Backend> = (0..o.n)
            .map(|i| {
                let ip = format!("127.0.0.{}", i + 2);
                if let (true, Some(port)) = (o.by_ip, o.port) {
                    Backend::start_at(&format!("b{i}"), &ip, port)
                } else if o.by_ip {
                    Backend::start_ip(&format!("b{i}"), &ip)
                } else {
                    Backend::start(&format!("b{i}"))
                }
            })
            .collect();
        let vms: Vec<VmSpec> = (0..o.n)
            .map(|i| VmSpec {
                name: vm_name(i),
                ip: Some(backends[i].ip.clone()).filter(|_| o.by_ip),
                num_cpu: 2,
                cpu_mhz: o.cpu_mhz.get(i).copied().unwrap_or(4000),
                memory_mb: 2048,
            })
            .collect();
        let mut vopts = o.vcsim.clone();
        if o.via_prometheus.is_some() {
            vopts.tls = true;
            vopts.port = Some(443);
            vopts.listen_ip = Some(own_loopback_ip());
        }
        let vcsim = Vcsim::start(&vms, &vopts);
        let (exporter, prometheus) = match &o.via_prometheus {
            None => (None, None),
            Some(_) => {
                let e = VmwareExporter::start(
                    vopts.listen_ip.as_deref().unwrap_or_default(),
                    &vopts.user,
                    &vopts.pass,
                );
                let p = Prometheus::scraping_exporter(&e, Duration::from_secs(1));
                // nginx starts once Prometheus holds every VM's series
                let n = o.n;
                let scraped = wait_for(Duration::from_secs(30), || {
                    (p.query("vmware_vm_num_cpu").len() == n).then_some(())
                });
                assert!(scraped.is_some(), "no VM series:\n{}", e.log());
                (Some(e), Some(p))
            }
        };
        let pass = o.password.clone().unwrap_or_else(|| o.vcsim.pass.clone());
        let pw = super::setup::password_file(&vcsim.dir, &pass);
        // vcsim without TLS: a lab endpoint, allowed explicitly
        let insecure = if vcsim.url.starts_with("http://") {
            " insecure_http=on"
        } else {
            ""
        };
        let ca = match &vcsim.cert {
            Some(c)
                if o.vcsim.tls
                    && !o.endpoint.contains("ca_file")
                    && !o.endpoint.contains("tls_verify") =>
            {
                format!(" ca_file={}", c.display())
            }
            _ => String::new(),
        };
        let port = free_port();
        let servers: String = o.servers.clone().unwrap_or_else(|| {
            backends
                .iter()
                .map(|b| format!("server {};\n", b.addr()))
                .collect()
        });
        let nodes: String = if o.by_ip {
            String::new()
        } else {
            backends
                .iter()
                .enumerate()
                .map(|(i, b)| format!("dwepc_node {} vm={};\n", b.addr(), vm_name(i)))
                .collect()
        };
        let zone = if o.zone { "zone app 256k;\n" } else { "" };
        let faults = prometheus
            .as_ref()
            .filter(|_| o.prometheus_faults)
            .map(|p| FaultProxy::start(p.port));
        let endpoint = match (&o.via_prometheus, &prometheus) {
            (Some(extra), Some(p)) => format!(
                "dwepc_prometheus prom url=http://127.0.0.1:{} {extra}",
                faults.as_ref().map_or(p.port, |f| f.port)
            ),
            _ => format!(
                "dwepc_vsphere vc url={} user={} password_file={pw}{ca}{insecure} {}",
                vcsim.url, o.vcsim.user, o.endpoint
            ),
        };
        let text = conf(
            &format!("worker_processes {};\n{}", o.workers, o.main_extra),
            &format!(
                "{}{endpoint};\n\
                 upstream app {{\n dwepc {};\n{zone}{servers}{nodes}}}\n\
                 server {{ listen 127.0.0.1:{port};\n{}\n\
                   location / {{ proxy_pass http://app; }}\n\
                   location = /dwepc {{ dwepc_status; }} }}",
                o.http_extra, o.dwepc, o.server_extra
            ),
        );
        let nginx = Nginx::start(&text, port);
        VsEnv {
            port,
            nginx,
            prometheus,
            exporter,
            faults,
            vcsim,
            extra_cpu: Arc::new(Mutex::new(vec![0.0; o.n])),
            cpu_size: Arc::new(Mutex::new(vms.iter().map(|v| v.cpu_mhz as f64).collect())),
            backends,
            text,
            feeder: None,
            net_per_req: o.net_per_req,
            flat_mem_net: o.flat_mem_net,
        }
    }

    /// Counters written every 200 ms from the backends' request rates (see
    /// [`Feeder`]), with this environment's extra CPU per VM.
    pub fn start_feeder(&mut self) {
        self.feeder = Some(Feeder::start(
            &self.backends,
            self.vcsim.counters_path(),
            self.extra_cpu.clone(),
            self.cpu_size.clone(),
            self.net_per_req,
            self.flat_mem_net,
        ));
    }

    /// Starts the feeder and sends requests until counters drive the
    /// pick (at most 40 s).
    pub fn feed_and_warm_up(&mut self) {
        self.start_feeder();
        self.drive_until(40, Duration::from_secs(40), "warm-up", active);
    }

    /// The PID of the worker that polls vSphere: the one that logged the
    /// last "polling N VMs" line ("[notice] PID#TID: ...").
    pub fn polling_worker(&self) -> i32 {
        let log = self.nginx.error_log();
        log.lines()
            .rfind(|l| l.contains("dwepc: ") && l.contains(": polling "))
            .and_then(|l| l.split("] ").nth(1))
            .and_then(|l| l.split('#').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no polling line: {log}"))
    }

    pub fn stop_feeder(&mut self) {
        self.feeder = None;
    }

    /// The status of upstream "app".
    pub fn status(&self) -> serde_json::Value {
        let r = http::get(self.port, "/dwepc");
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        v["upstreams"][0].clone()
    }

    /// Sends requests (about `rate` per second) until `cond` holds on the
    /// status, or panics after `timeout`.
    pub fn drive_until(
        &self,
        rate: u32,
        timeout: Duration,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) {
        let gap = Duration::from_millis(1000 / rate.max(1) as u64);
        let r = wait_for(timeout, || {
            let _ = http::request(self.port, "GET", "/");
            std::thread::sleep(gap);
            let st = self.status();
            cond(&st).then_some(())
        });
        assert!(
            r.is_some(),
            "{what}: {}\n{}",
            self.status(),
            self.nginx.error_log()
        );
    }

    /// Sends `n` requests one after another; returns the backend id of each.
    pub fn send(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let r = http::get(self.port, "/");
                assert_eq!(r.status, 200, "{r:?}");
                r.body.trim().to_string()
            })
            .collect()
    }

    /// Waits up to `timeout` for a line of the error log containing
    /// `needle`; true if one came.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(timeout, || (self.log_count(needle) > 0).then_some(())).is_some()
    }

    /// Lines of the error log containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.nginx
            .error_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for VsEnv {
    fn drop(&mut self) {
        self.stop_feeder();
    }
}

/// Writes vcsim's counters file every 200 ms from the backends' request
/// rates over the last second: cpu = extra + 25 MHz per req/s (and, where
/// the VM's CPU size is given, `cpu.usage` as a percentage of it), net = a
/// constant + `net_per_req` per req/s, memory constant; VM `web-i` for
/// backend `i`. Stops when dropped.
pub struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    pub fn start(
        backends: &[Backend],
        path: std::path::PathBuf,
        extra: Arc<Mutex<Vec<f64>>>,
        size: Arc<Mutex<Vec<f64>>>,
        net_per_req: f64,
        (mem, net): (i64, i64),
    ) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let counts: Vec<Arc<std::sync::atomic::AtomicU64>> =
            backends.iter().map(|b| b.requests.clone()).collect();
        let s2 = stop.clone();
        let h = std::thread::spawn(move || {
            let mut hist: std::collections::VecDeque<(Instant, Vec<u64>)> = Default::default();
            while !s2.load(Ordering::Relaxed) {
                let now = Instant::now();
                let cur: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                hist.push_back((now, cur.clone()));
                while hist.len() > 2 && now.duration_since(hist[1].0) >= Duration::from_secs(1) {
                    hist.pop_front();
                }
                let (t0, c0) = hist.front().unwrap().clone();
                let dt = now.duration_since(t0).as_secs_f64().max(0.2);
                let extra = extra.lock().unwrap().clone();
                let size = size.lock().unwrap().clone();
                let mut m = serde_json::Map::new();
                for i in 0..cur.len() {
                    let rate = (cur[i] - c0[i]) as f64 / dt;
                    let cpu = (extra.get(i).copied().unwrap_or(0.0) + 25.0 * rate).round();
                    let mut v = serde_json::json!({
                            "cpu.usagemhz.average": cpu as i64,
                            "mem.consumed.average": mem,
                            "net.usage.average": (net as f64 + net_per_req * rate).round() as i64,
                            // vmware_exporter reads these two (their sum)
                            "net.received.average": ((net as f64 + net_per_req * rate) / 2.0).round() as i64,
                            "net.transmitted.average": ((net as f64 + net_per_req * rate) / 2.0).round() as i64,
                            "disk.usage.average": 0,
                            "cpu.ready.summation": 10 * (i as i64 + 1)
                    });
                    if let Some(s) = size.get(i).filter(|s| **s > 0.0) {
                        v["cpu.usage.average"] = (cpu / s * 10_000.0).round().into();
                    }
                    m.insert(vm_name(i), v);
                }
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, serde_json::Value::Object(m).to_string()).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Feeder {
            stop,
            thread: Some(h),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}
