//! `dwepc-check`: the pre-flight check an operator runs before deploying
//! the module. With the same vSphere options as `dwepc_vsphere` (or the
//! nginx configuration they are written in, `--conf`), it logs in, reads
//! the counter catalog and the inventory (under `scope=`), says which VM
//! each server of each dwepc upstream is, reads one realtime sample of
//! those VMs, and ends with an exit status a script can act on
//! ([`Outcome`]). It changes nothing in vSphere and logs out.
//!
//! - `nginx_conf`: what it reads of an nginx configuration.
//! - this file: the command line, the checks, the report.

mod nginx_conf;

use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use clap::Parser;
use dwepc_core::collector::{counter_ids, find_vm};
use dwepc_core::conf::{self, EndpointRef, NamedEndpoint, SourceConf, VmRef};
use dwepc_core::resources::{COUNTERS, CPU_PERCENT, READY};
use dwepc_core::vsphere::budget::VMS_PER_QUERY;
use dwepc_core::vsphere::client::Client;
use dwepc_core::vsphere::xml::VmInfo;
use dwepc_core::vsphere::{Api, Error};

const LONG_ABOUT: &str = "\
Checks, before the nginx module is deployed, that vSphere gives it what it \
needs: the login, the counters (cpu.usagemhz, cpu.usage, cpu.ready, \
mem.consumed or mem.active, net.usage, disk.usage) and their realtime \
samples, the VMs under scope=, and which VM each server of each dwepc \
upstream is (by dwepc_node vm=, else by the guest IP VMware Tools reports). \
Reads the dwepc_vsphere lines and upstreams of an nginx configuration \
(--conf, following include), or takes one endpoint's options and the VMs \
to look for (--vm, --ip). Changes nothing; logs out.

Exit status: 0 ready; 1 ready with gaps (a server matches no VM, a counter \
or a VM's realtime sample is missing: those servers are balanced without \
counters); 2 the configuration or command line is refused (as nginx -t \
would); 3 vSphere cannot be reached, or scope= names nothing; 4 the login \
is refused; 5 the user lacks a privilege (give it the Read-only role on the \
VMs' folder, cluster or datacenter, with \"Propagate to children\").";

/// The command line.
#[derive(Parser, Debug)]
#[command(name = "dwepc-check", version, about = "Pre-flight check of vSphere for the dwepc nginx module", long_about = LONG_ABOUT)]
pub struct CheckArgs {
    /// nginx configuration to read dwepc_vsphere and the dwepc upstreams
    /// from (includes followed), like /etc/nginx/nginx.conf
    #[arg(long, value_name = "FILE", conflicts_with_all = ["url", "vm", "ip"])]
    pub conf: Option<PathBuf>,
    /// The vCenter's SDK URL, like https://vcenter.example.com/sdk
    #[arg(long, required_unless_present = "conf")]
    pub url: Option<String>,
    /// vSphere user (a Read-only role is enough)
    #[arg(long, requires = "url")]
    pub user: Option<String>,
    /// File whose first line is the password
    #[arg(long, value_name = "FILE", requires = "url")]
    pub password_file: Option<String>,
    /// PEM bundle of the CA that signed the vCenter's certificate
    #[arg(long, value_name = "FILE", requires = "url")]
    pub ca_file: Option<String>,
    /// Check the vCenter's certificate (off: labs only)
    #[arg(long, value_parser = ["on", "off"], requires = "url")]
    pub tls_verify: Option<String>,
    /// Accept an http:// URL (labs only)
    #[arg(long, requires = "url")]
    pub insecure_http: bool,
    /// Timeout of every vSphere call
    #[arg(long, value_name = "TIME", requires = "url")]
    pub timeout: Option<String>,
    /// Inventory path whose VMs are read, as dwepc_vsphere scope=
    #[arg(long, value_name = "PATH", requires = "url")]
    pub scope: Option<String>,
    /// A VM to look for by name (repeatable)
    #[arg(long, value_name = "NAME", requires = "url")]
    pub vm: Vec<String>,
    /// A server to look for by guest IP (repeatable)
    #[arg(long, value_name = "IP", requires = "url")]
    pub ip: Vec<String>,
}

/// How the check ended, worst first wins; its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Ready = 0,
    Gaps = 1,
    Refused = 2,
    Unreachable = 3,
    LoginRefused = 4,
    NoPrivilege = 5,
}

/// One server to find: how it is written and how its VM is looked up.
struct Wanted {
    label: String,
    vm: VmRef,
    ips: Vec<IpAddr>,
}

/// One endpoint to check and the servers it is asked about.
struct Job {
    endpoint: SourceConf,
    at: String,
    /// Where relative file names are found (nginx: its configuration
    /// prefix, the main file's folder; the command line: here).
    base: PathBuf,
    wanted: Vec<(String, Vec<Wanted>)>,
}

/// Runs the check; prints the report; returns the outcome.
pub fn run(a: &CheckArgs) -> Outcome {
    let jobs = match jobs(a) {
        Ok(j) => j,
        Err(e) => {
            println!("refused: {e}");
            return Outcome::Refused;
        }
    };
    if jobs.is_empty() {
        println!(
            "refused: no dwepc_vsphere or dwepc_prometheus endpoint is used by a dwepc upstream"
        );
        return Outcome::Refused;
    }
    jobs.iter()
        .map(check_endpoint)
        .max()
        .unwrap_or(Outcome::Ready)
}

/// The endpoints and servers to check, from `--conf` or the options.
fn jobs(a: &CheckArgs) -> Result<Vec<Job>, String> {
    match &a.conf {
        Some(path) => jobs_from_conf(path),
        None => {
            let mut words = vec![
                "check".to_string(),
                format!("url={}", a.url.clone().unwrap_or_default()),
                format!("user={}", a.user.clone().unwrap_or_default()),
                format!(
                    "password_file={}",
                    a.password_file.clone().unwrap_or_default()
                ),
            ];
            let opt = |k: &str, v: &Option<String>| v.as_ref().map(|v| format!("{k}={v}"));
            words.extend(opt("ca_file", &a.ca_file));
            words.extend(opt("tls_verify", &a.tls_verify));
            words.extend(opt("timeout", &a.timeout));
            words.extend(opt("scope", &a.scope));
            if a.insecure_http {
                words.push("insecure_http=on".into());
            }
            let refs: Vec<&str> = words.iter().map(String::as_str).collect();
            let endpoint =
                SourceConf::Vsphere(conf::parse_endpoint(&refs).map_err(|e| e.to_string())?);
            let mut wanted: Vec<Wanted> =
                a.vm.iter()
                    .map(|n| Wanted {
                        label: format!("VM {n}"),
                        vm: VmRef::Name(n.clone()),
                        ips: Vec::new(),
                    })
                    .collect();
            for ip in &a.ip {
                let parsed = ip
                    .parse::<IpAddr>()
                    .map_err(|_| format!("--ip {ip}: not an IP address"))?;
                wanted.push(Wanted {
                    label: format!("IP {ip}"),
                    vm: VmRef::GuestIp,
                    ips: vec![parsed],
                });
            }
            Ok(vec![Job {
                endpoint,
                at: "the command line".into(),
                base: PathBuf::from("."),
                wanted: vec![("(command line)".into(), wanted)],
            }])
        }
    }
}

/// The jobs of an nginx configuration: each endpoint a dwepc upstream
/// uses, with the servers of those upstreams.
fn jobs_from_conf(path: &Path) -> Result<Vec<Job>, String> {
    let found = nginx_conf::read(path)?;
    let mut endpoints = Vec::new();
    for (words, at) in &found.endpoints {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let e = conf::parse_endpoint(&refs).map_err(|e| format!("{e} in {at}"))?;
        endpoints.push((SourceConf::Vsphere(e), at.clone()));
    }
    for (words, at) in &found.prometheus {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let e = conf::parse_prometheus(&refs).map_err(|e| format!("{e} in {at}"))?;
        endpoints.push((SourceConf::Prometheus(e), at.clone()));
    }
    let mut ups = Vec::new();
    for u in &found.upstreams {
        let refs: Vec<&str> = u.dwepc.iter().map(String::as_str).collect();
        let c = conf::parse_upstream(&refs).map_err(|e| format!("{e} in {}", u.at))?;
        ups.push((u, c));
    }
    let eps: Vec<(&SourceConf, &str)> = endpoints.iter().map(|(e, a)| (e, a.as_str())).collect();
    let refs: Vec<(&EndpointRef, &str)> = ups
        .iter()
        .map(|(u, c)| (&c.vsphere, u.at.as_str()))
        .collect();
    let which = conf::resolve_endpoints(&eps, &refs).map_err(|e| e.to_string())?;
    let mut jobs: Vec<Job> = endpoints
        .iter()
        .map(|(e, at)| Job {
            endpoint: e.clone(),
            at: at.clone(),
            base: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
            wanted: Vec::new(),
        })
        .collect();
    for ((u, _), k) in ups.iter().zip(which) {
        let Some(k) = k else {
            println!(
                "upstream \"{}\" ({}): no endpoint (off), not checked",
                u.name, u.at
            );
            continue;
        };
        let wanted = servers_of(u)?;
        // as nginx -t: a profile without a guest IP label finds servers
        // by VM name only
        if let SourceConf::Prometheus(p) = &jobs[k].endpoint {
            if let (None, Some(w)) = (
                &p.profile.ip_label,
                wanted.iter().find(|w| w.vm == VmRef::GuestIp),
            ) {
                let e = conf::ConfError::NoGuestIpLabel {
                    server: w.label.trim_start_matches("server ").to_string(),
                    upstream: u.name.clone(),
                    endpoint: p.name.clone(),
                    profile: p.profile.base,
                };
                return Err(format!("{e} in {}", u.at));
            }
        }
        jobs[k].wanted.push((u.name.clone(), wanted));
    }
    jobs.retain(|j| !j.wanted.is_empty());
    Ok(jobs)
}

/// The servers of an upstream and how each one's VM is looked up.
fn servers_of(u: &nginx_conf::Upstream) -> Result<Vec<Wanted>, String> {
    let nodes: Vec<conf::NodeConf> = u
        .nodes
        .iter()
        .map(|w| {
            let refs: Vec<&str> = w.iter().map(String::as_str).collect();
            conf::parse_node(&refs).map_err(|e| format!("{e} in upstream \"{}\"", u.name))
        })
        .collect::<Result<_, _>>()?;
    Ok(u.servers
        .iter()
        .map(|s| {
            let node = nodes.iter().find(|n| &n.address == s);
            let ips = (s.as_str(), 80)
                .to_socket_addrs()
                .or_else(|_| s.to_socket_addrs())
                .map(|a| a.map(|x| x.ip()).collect())
                .unwrap_or_default();
            Wanted {
                label: format!("server {s}"),
                vm: node.map_or(VmRef::GuestIp, |n| n.vm.clone()),
                ips,
            }
        })
        .collect())
}

/// The check of one endpoint.
fn check_endpoint(job: &Job) -> Outcome {
    let e = &job.endpoint;
    let url = match e {
        SourceConf::Vsphere(v) => &v.url,
        SourceConf::Prometheus(p) => &p.url,
    };
    println!("{} \"{}\" ({url}, {}):", e.kind().word(), e.name(), job.at);
    let client = match client_of(e, &job.base) {
        Ok(c) => c,
        Err(msg) => {
            println!("  refused: {msg}");
            return Outcome::Refused;
        }
    };
    match check_session(client, job) {
        Ok(o) => o,
        Err(err) => {
            let (outcome, hint) = match e {
                SourceConf::Vsphere(_) => classify(&err),
                SourceConf::Prometheus(_) => match err {
                    Error::Setup(_)
                    | Error::Connect(_)
                    | Error::Timeout
                    | Error::Http(_)
                    | Error::Transport(_) => (
                        Outcome::Unreachable,
                        "check url= (the Prometheus server's base URL), the route to it, bearer_token_file= and ca_file=",
                    ),
                    _ => (
                        Outcome::Unreachable,
                        "the server answered, but not as Prometheus's query API does (a refused query, an answer too large, or not its JSON)",
                    ),
                },
            };
            println!("  FAILED: {err}");
            println!("  {hint}");
            outcome
        }
    }
}

/// What a failure means for the operator: its outcome and what to do.
fn classify(err: &Error) -> (Outcome, &'static str) {
    match err {
        Error::InvalidLogin => (
            Outcome::LoginRefused,
            "check user= and the password file (its first line); vCenter locks an account after 5 failed logins in 3 minutes by default",
        ),
        Error::Fault(f) if f.starts_with("SOAP fault: NoPermission") => (
            Outcome::NoPrivilege,
            "the user needs System.View and System.Read on the VMs: give it the Read-only role on their folder, cluster or datacenter, with \"Propagate to children\"",
        ),
        Error::ScopeNotFound(_) => (
            Outcome::Unreachable,
            "scope= is an inventory path from the datacenter down: DC/vm/Folder, DC/host/Cluster or DC/host/Cluster/Resources/Pool (names as the vSphere Client shows them)",
        ),
        Error::Setup(_) | Error::Connect(_) | Error::Timeout | Error::Http(_) | Error::Transport(_) => (
            Outcome::Unreachable,
            "check url= (https://VCENTER/sdk), the route and firewall to it (TCP 443), and ca_file= (the VMCA root: https://VCENTER/certs/download.zip)",
        ),
        _ => (Outcome::Unreachable, "vSphere answered, but not as expected"),
    }
}

/// An endpoint's client: vSphere's (with what its login says) or
/// Prometheus's.
enum Source {
    Vsphere(Client),
    Prometheus(dwepc_core::prometheus::Client),
}

impl Source {
    fn api(&mut self) -> &mut dyn Api {
        match self {
            Source::Vsphere(c) => c,
            Source::Prometheus(c) => c,
        }
    }
}

/// Logs in, reads what the module reads, prints it; logs out.
fn check_session(mut client: Source, job: &Job) -> Result<Outcome, Error> {
    client.api().connect()?;
    match &client {
        Source::Vsphere(c) => {
            if let Some(sc) = c.service() {
                println!("  login: ok ({} {})", sc.api_type, sc.api_version);
            }
        }
        Source::Prometheus(_) => println!("  query API: ok"),
    }
    let result = check_logged_in(client.api(), job);
    client.api().logout();
    result
}

/// The client of an endpoint, its files read as the module reads them
/// (a relative name from `base`); what `nginx -t` would refuse is an
/// error message.
fn client_of(e: &SourceConf, base: &Path) -> Result<Source, String> {
    match e {
        SourceConf::Vsphere(v) => {
            let cfg = crate::cluster::client_config(v, base)?;
            Ok(Source::Vsphere(
                Client::new(cfg).map_err(|err| err.to_string())?,
            ))
        }
        SourceConf::Prometheus(p) => {
            let cfg = crate::cluster::prometheus_config(p, base)?;
            Ok(Source::Prometheus(
                dwepc_core::prometheus::Client::new(cfg).map_err(|err| err.to_string())?,
            ))
        }
    }
}

fn check_logged_in(client: &mut dyn Api, job: &Job) -> Result<Outcome, Error> {
    let mut outcome = Outcome::Ready;
    let catalog: HashMap<String, i32> = client
        .perf_counters()?
        .into_iter()
        .map(|(id, n)| (n, id))
        .collect();
    let ids = counter_ids(&catalog);
    let mut counters: Vec<(String, i32)> = Vec::new();
    for (j, id) in ids.iter().enumerate() {
        match id {
            Some(id) => counters.push((COUNTERS[j].to_string(), *id)),
            None => {
                println!(
                    "  counter {}: MISSING (that resource is left out)",
                    COUNTERS[j]
                );
                outcome = outcome.max(Outcome::Gaps);
            }
        }
    }
    for extra in [READY, CPU_PERCENT] {
        match catalog.get(extra) {
            Some(&id) => counters.push((extra.to_string(), id)),
            None => {
                println!("  counter {extra}: MISSING");
                outcome = outcome.max(Outcome::Gaps);
            }
        }
    }
    println!(
        "  counters: {} of {} found",
        counters.len(),
        COUNTERS.len() + 2
    );
    let view = client.create_vm_view()?;
    let inventory = client.vms(&view, &mut || {})?;
    let scope = match &job.endpoint {
        SourceConf::Vsphere(v) => v.scope.as_deref().unwrap_or("the whole inventory"),
        SourceConf::Prometheus(_) => "the series of the exporter",
    };
    println!("  inventory: {} VMs under {scope}", inventory.len());
    let mut mapped: Vec<&VmInfo> = Vec::new();
    for (upstream, wanted) in &job.wanted {
        println!("  upstream {upstream}:");
        for w in wanted {
            match lookup(w, &inventory) {
                Some(vm) => {
                    println!(
                        "    {} -> VM \"{}\" ({}, {} vCPUs, {} MHz, {} MB)",
                        w.label,
                        vm.name,
                        if vm.powered_on {
                            "powered on"
                        } else {
                            "POWERED OFF"
                        },
                        vm.num_cpu,
                        vm.max_cpu_mhz,
                        vm.memory_mb
                    );
                    if !vm.powered_on {
                        outcome = outcome.max(Outcome::Gaps);
                    }
                    mapped.push(vm);
                }
                None => {
                    let how = match &w.vm {
                        VmRef::Name(n) => format!("no VM named \"{n}\" under {scope}"),
                        VmRef::GuestIp => format!(
                            "no VM reports guest IP {} (VMware Tools must run in the guest; or name the VM with dwepc_node ... vm=NAME)",
                            w.ips.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(" or ")
                        ),
                    };
                    println!("    {} -> NO VM: {how}", w.label);
                    outcome = outcome.max(Outcome::Gaps);
                }
            }
        }
    }
    outcome = outcome.max(check_samples(client, &mapped, &counters)?);
    Ok(outcome)
}

/// The VM of one wanted server.
fn lookup<'a>(w: &Wanted, inventory: &'a [VmInfo]) -> Option<&'a VmInfo> {
    match &w.vm {
        VmRef::Name(_) => find_vm(&w.vm, None, inventory),
        VmRef::GuestIp => w
            .ips
            .iter()
            .find_map(|ip| find_vm(&w.vm, Some(*ip), inventory)),
    }
}

/// One realtime sample of the mapped, powered-on VMs: every counter
/// should have a value.
fn check_samples(
    client: &mut dyn Api,
    vms: &[&VmInfo],
    counters: &[(String, i32)],
) -> Result<Outcome, Error> {
    let on: Vec<&VmInfo> = vms.iter().copied().filter(|v| v.powered_on).collect();
    let Some(first) = on.first() else {
        return Ok(Outcome::Ready);
    };
    let refresh = client.refresh_rate(&first.moref)?;
    let ids: Vec<i32> = counters.iter().map(|c| c.1).collect();
    let morefs: Vec<String> = on.iter().map(|v| v.moref.clone()).collect();
    // as the module asks: at most VMS_PER_QUERY VMs per call
    let mut metrics = Vec::with_capacity(morefs.len());
    for batch in morefs.chunks(VMS_PER_QUERY) {
        metrics.extend(client.query_perf(batch, &ids, refresh, 1)?);
    }
    let mut incomplete = 0;
    for vm in &on {
        let m = metrics.iter().find(|m| m.entity == vm.moref);
        let missing: Vec<&str> = counters
            .iter()
            .filter(|(_, id)| {
                m.and_then(|m| m.value(*id, m.samples.len().saturating_sub(1)))
                    .is_none()
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if !missing.is_empty() {
            println!(
                "  realtime sample of VM \"{}\": no {}",
                vm.name,
                missing.join(", ")
            );
            incomplete += 1;
        }
    }
    println!(
        "  realtime samples: every {refresh} s, {} of {} VMs complete",
        on.len() - incomplete,
        on.len()
    );
    Ok(if incomplete > 0 {
        Outcome::Gaps
    } else {
        Outcome::Ready
    })
}
