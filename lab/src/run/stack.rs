//! One policy's copy of the cluster: its VMs, its vCenter simulator and its
//! nginx instances, configured for the policy.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;

use super::cell::Cell;
use super::clock::Reading;
use super::lock;
use super::policy::Policy;
use super::vms::VmsProcess;
use super::watch::status;
use crate::free_port;
use crate::hold::BackgroundJob;
use crate::nginx::Nginx;
use crate::pipeline::{own_loopback_ip, Prometheus, VmwareExporter};
use crate::vcsim::{Opts, Vcsim};

/// One policy's copy of the cluster.
pub(super) struct Stack {
    pub(super) policy: Policy,
    pub(super) vms: VmsProcess,
    pub(super) vc: Vcsim,
    /// [`Policy::via_prometheus`]: the exporter reading `vc` and the
    /// Prometheus server scraping it, which the frontends read.
    exporter: Option<VmwareExporter>,
    prometheus: Option<Prometheus>,
    pub(super) ports: Vec<u16>,
    pub(super) nginx: Vec<Nginx>,
    pub(super) readings: Mutex<Vec<Reading>>,
    /// Counters waiting for their delay: (visible at ms, JSON).
    pub(super) pending: Mutex<Vec<(u64, Value)>>,
    pub(super) jobs: Mutex<Vec<Option<BackgroundJob>>>,
    /// On real CPUs: the background jobs, real processes in their VM.
    pub(super) holds: Mutex<Vec<Option<std::process::Child>>>,
    pub(super) dir: PathBuf,
    /// The VMs' addresses and the endpoint's directive, for a
    /// configuration written again ([`Stack::reweigh`]).
    addrs: Vec<String>,
    endpoint: String,
}

/// The nginx configuration of one frontend of `policy`'s stack.
fn nginx_conf(
    policy: Policy,
    cell: &Cell,
    addrs: &[String],
    weights: &[u32],
    port: u16,
    endpoint: &str,
) -> String {
    let (cluster, cadence) = (&cell.cluster, cell.cadence);
    let mut up = String::new();
    let _ = writeln!(up, "zone app 256k;");
    let m = policy.method(cadence.period_s);
    if !m.is_empty() {
        let _ = writeln!(up, "{m}");
    }
    for ((v, a), w) in cluster.iter().zip(addrs).zip(weights) {
        // capacity weights for the weighted policies, and as the fallback
        // of the counter-driven ones (as an operator would)
        let weight = match (policy.weighted(), w) {
            (false, _) => String::new(),
            // the oracle's weight of a VM that is down
            (true, 0) => " down".to_string(),
            (true, w) => format!(" weight={w}"),
        };
        let _ = writeln!(up, "server {a}{weight} max_fails=1 fail_timeout=5s;");
        if policy.uses_counters() {
            // the operator knows the VMs' network capacity (vSphere does
            // not); vmware_exporter has no guest IP: the VM by its name
            let vm = if policy.via_prometheus() {
                format!(" vm={}", v.name)
            } else {
                String::new()
            };
            let _ = writeln!(up, "dwepc_node {a}{vm} net={};", v.net_kbps);
        }
    }
    // idle connections cached per worker: 64 (the five- and twelve-VM
    // clusters), four per server in a larger cluster, so that 40 servers
    // do not share 64 slots and open a connection for most requests
    let _ = writeln!(up, "keepalive {};", (4 * cluster.len()).max(64));
    format!(
        "load_module {module};\nuser root;\ndaemon off;\nerror_log logs/error.log info;\n\
         pid logs/nginx.pid;\nworker_processes 2;\nworker_rlimit_nofile 40000;\n\
         events {{ worker_connections 16384; }}\n\
         http {{\naccess_log off;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;\n\
         fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         {endpoint}\n\
         upstream app {{\n{up}}}\n\
         server {{ listen 127.0.0.1:{port} backlog=8192;\n\
           keepalive_requests 100000;\n\
           location / {{ proxy_pass http://app; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_buffering off;\n\
             proxy_read_timeout 60s; }}\n\
           location = /dwepc {{ dwepc_status; }} }}\n}}\n",
        module = crate::nginx::module().display(),
    )
}

impl Stack {
    pub(super) fn start(policy: Policy, cell: &Cell, weights: &[u32]) -> Result<Stack, String> {
        let dir = std::env::temp_dir().join(format!(
            "dwepc-lab-{}-{}-{}",
            std::process::id(),
            policy.short(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let vms = VmsProcess::start(&cell.cluster, &dir, cell.real_cpu)?;
        let addrs = vms.addrs.clone();
        let vspecs: Vec<crate::vcsim::VmSpec> = cell
            .cluster
            .iter()
            .map(|v| {
                crate::vcsim::VmSpec::new(
                    &v.name,
                    Some(&v.ip),
                    v.vcpus,
                    v.cpu_mhz as u32,
                    v.memory_mb as u32,
                )
            })
            .collect();
        let mut opts = Opts {
            refresh_s: cell.cadence.period_s as u32,
            ..Opts::default()
        };
        if policy.via_prometheus() {
            // where vmware_exporter looks: https://HOST/sdk
            opts.tls = true;
            opts.port = Some(443);
            opts.listen_ip = Some(own_loopback_ip());
        }
        let vc = Vcsim::start(&vspecs, &opts);
        let pw = dir.join("vc.pass");
        std::fs::write(&pw, "pass\n").map_err(|e| e.to_string())?;
        let (exporter, prometheus, endpoint) = if policy.via_prometheus() {
            let e = VmwareExporter::start(
                opts.listen_ip.as_deref().unwrap_or_default(),
                "user",
                "pass",
            );
            // scraped once per period, as README's "Running a fleet" says
            let p = Prometheus::scraping_exporter(&e, Duration::from_secs(cell.cadence.period_s));
            let line = format!(
                "dwepc_prometheus lab url=http://127.0.0.1:{} timeout=2s period={}s;",
                p.port, cell.cadence.period_s
            );
            (Some(e), Some(p), line)
        } else {
            let line = format!(
                "dwepc_vsphere lab url={} user=user password_file={} timeout=2s insecure_http=on;",
                vc.url,
                pw.display()
            );
            (None, None, line)
        };
        let mut ports = Vec::new();
        let mut nginx = Vec::new();
        for _ in &cell.scenario.frontends {
            let port = free_port();
            let text = nginx_conf(policy, cell, &addrs, weights, port, &endpoint);
            nginx.push(Nginx::start(&text, port));
            ports.push(port);
        }
        let n = cell.cluster.len();
        Ok(Stack {
            policy,
            vms,
            vc,
            exporter,
            prometheus,
            ports,
            nginx,
            readings: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            jobs: Mutex::new(vec![None; n]),
            holds: Mutex::new((0..n).map(|_| None).collect()),
            dir,
            addrs,
            endpoint,
        })
    }

    /// Writes every frontend's configuration again with `weights` (0: the
    /// VM is down) and reloads it, as an operator would: the oracle's
    /// reweighing.
    pub(super) fn reweigh(&self, cell: &Cell, weights: &[u32]) {
        for (nginx, &port) in self.nginx.iter().zip(&self.ports) {
            let text = nginx_conf(
                self.policy,
                cell,
                &self.addrs,
                weights,
                port,
                &self.endpoint,
            );
            nginx.reload(&text);
        }
    }
}

impl Stack {
    /// Each frontend's status page now.
    pub(super) fn status_pages(&self) -> Vec<Value> {
        self.ports.iter().map(|p| status(*p)).collect()
    }

    /// The size of each frontend's error log now.
    pub(super) fn error_log_sizes(&self) -> Vec<usize> {
        self.nginx.iter().map(|n| n.error_log().len()).collect()
    }

    /// The module's lines in the frontends' error logs after `from` (bytes
    /// per frontend; 0 where missing), each tagged with its frontend.
    pub(super) fn module_log(&self, from: &[usize]) -> Vec<String> {
        self.nginx
            .iter()
            .enumerate()
            .flat_map(|(f, n)| {
                let from = from.get(f).copied().unwrap_or(0);
                module_log(&n.error_log(), from)
                    .into_iter()
                    .map(move |l| format!("[frontend {f}] {l}"))
            })
            .collect()
    }
}

/// The module's lines in an error log (after byte `from`).
fn module_log(text: &str, from: usize) -> Vec<String> {
    text.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("dwepc"))
        .map(str::to_string)
        .collect()
}

impl Drop for Stack {
    fn drop(&mut self) {
        for h in lock(&self.holds).iter_mut() {
            stop_child(h);
        }
        for n in &mut self.nginx {
            n.stop(Duration::from_secs(5));
        }
        self.prometheus = None;
        self.exporter = None;
        self.vc.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Kills and reaps a background job's process, if any.
pub(super) fn stop_child(c: &mut Option<std::process::Child>) {
    if let Some(mut child) = c.take() {
        let _ = child.kill();
        let _ = child.wait();
        crate::procs::unregister(child.id());
    }
}
