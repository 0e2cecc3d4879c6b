//! Reading the cluster from vSphere: the client from the command line,
//! then the cluster's hosts, its powered-on VMs and each VM's demand over
//! the horizon.

use crate::cli::{Args, Settings};
use crate::plan::RESOURCES;
use crate::run::{input, Failure};
use dwepc_core::collector::{counter_ids, first_few};
use dwepc_core::conf;
use dwepc_core::resources::COUNTERS;
use dwepc_core::vsphere::client::Client;
use dwepc_core::vsphere::xml::{ComputeResourceInfo, HostInfo, VmInfo};
use dwepc_core::vsphere::Api;
use std::collections::HashMap;
use std::path::Path;

/// What vSphere said, gathered.
pub struct Cluster {
    pub hosts: Vec<HostInfo>,
    pub vms: Vec<VmInfo>,
    /// Per VM (same order), demand per resource (None: no sample).
    pub demand: Vec<[Option<f64>; 4]>,
}

/// Samples per VM (moref), per counter id.
type Samples = HashMap<String, HashMap<i32, Vec<f64>>>;

/// The vSphere client of the command line's options (checked as the
/// module's `dwepc_vsphere`), not yet connected.
pub fn client(a: &Args) -> Result<Client, Failure> {
    let mut e_args = vec![
        "place".to_string(),
        format!("url={}", a.url),
        format!("user={}", a.user),
        format!("password_file={}", a.password_file),
        format!("tls_verify={}", a.tls_verify),
        format!("timeout={}", a.timeout),
    ];
    if let Some(ca) = &a.ca_file {
        e_args.push(format!("ca_file={ca}"));
    }
    if a.insecure_http {
        e_args.push("insecure_http=on".into());
    }
    let refs: Vec<&str> = e_args.iter().map(String::as_str).collect();
    // a value the module would refuse is a bad command line (exit 2)
    let ep = conf::parse_endpoint(&refs).map_err(|e| Failure::Usage(e.to_string()))?;
    for w in ep.warnings() {
        eprintln!("dwepc-place: warning: {w}");
    }
    Ok(Client::new(input(client_config(&ep, Path::new(".")))?)?)
}

/// The client configuration of endpoint `ep`, its password and CA files
/// read as the module reads them (a relative name from `base`); what
/// `nginx -t` would refuse is an error message.
pub(crate) fn client_config(
    ep: &conf::EndpointConf,
    base: &Path,
) -> Result<dwepc_core::vsphere::client::Config, String> {
    let read = |file: &str, what: &'static str, max| {
        conf::read_config_file(&base.join(file), what, max).map_err(|e| e.to_string())
    };
    let pw = read(&ep.password_file, "password_file", conf::MAX_PASSWORD_FILE)?;
    let ca = match &ep.ca_file {
        Some(f) => Some(read(f, "ca_file", conf::MAX_CA_FILE)?),
        None => None,
    };
    ep.client_config(&pw, ca).map_err(|e| e.to_string())
}

/// The client configuration of a Prometheus endpoint, its token and CA
/// files read as the module reads them (a relative name from `base`).
pub(crate) fn prometheus_config(
    ep: &conf::PrometheusConf,
    base: &Path,
) -> Result<dwepc_core::prometheus::Config, String> {
    let read = |file: &str, what: &'static str, max| {
        conf::read_config_file(&base.join(file), what, max).map_err(|e| e.to_string())
    };
    let token = match &ep.bearer_token_file {
        Some(f) => Some(read(f, "bearer_token_file", conf::MAX_PASSWORD_FILE)?),
        None => None,
    };
    let ca = match &ep.ca_file {
        Some(f) => Some(read(f, "ca_file", conf::MAX_CA_FILE)?),
        None => None,
    };
    ep.client_config(token.as_deref(), ca)
        .map_err(|e| e.to_string())
}

/// Connects and reads the cluster to balance: its hosts and powered-on
/// VMs (by name), and each VM's demand as `s.stat` of its samples.
pub fn read_cluster(c: &mut Client, a: &Args, s: &Settings) -> Result<Cluster, Failure> {
    c.connect()?;
    // one cluster: VMs move between its hosts only
    let resources = c.compute_resources()?;
    let cr = pick(&resources, a.cluster.as_deref())?;
    let mut hosts: Vec<HostInfo> = c
        .hosts()?
        .into_iter()
        .filter(|h| cr.hosts.contains(&h.moref))
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let view = c.create_vm_view()?;
    let mut vms: Vec<VmInfo> = c
        .vms(&view, &mut || {})?
        .into_iter()
        .filter(|v| v.powered_on && v.host.as_ref().is_some_and(|h| cr.hosts.contains(h)))
        .collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    let ids = counters(c, s)?;
    let samples = samples(c, s, &vms, &ids)?;
    let demand = vms
        .iter()
        .map(|v| {
            std::array::from_fn(|r| {
                let vals = samples.get(&v.moref)?.get(&ids[r]?)?;
                // memory is in KB
                s.stat.of(vals).map(|x| if r == 1 { x / 1024.0 } else { x })
            })
        })
        .collect();
    Ok(Cluster { hosts, vms, demand })
}

/// The cluster (or standalone host) named by `--cluster`, or the only one.
fn pick<'r>(
    resources: &'r [ComputeResourceInfo],
    name: Option<&str>,
) -> Result<&'r ComputeResourceInfo, Failure> {
    let names = || {
        first_few(
            &resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
        )
    };
    match name {
        Some(name) => resources.iter().find(|r| r.name == name).ok_or_else(|| {
            Failure::Input(format!("--cluster {name}: no such cluster (there are: {})", names()))
        }),
        None if resources.len() == 1 => Ok(&resources[0]),
        None if resources.is_empty() => Err(Failure::Input("the vCenter has no cluster or host".into())),
        None => Err(Failure::Input(format!(
            "the vCenter has {} clusters and standalone hosts ({}): name the one to balance with --cluster",
            resources.len(),
            names()
        ))),
    }
}

/// The counter id per resource; an error if a balanced one is missing.
fn counters(c: &mut Client, s: &Settings) -> Result<[Option<i32>; 4], Failure> {
    let catalog: HashMap<String, i32> = c
        .perf_counters()?
        .into_iter()
        .map(|(id, n)| (n, id))
        .collect();
    let ids = counter_ids(&catalog);
    for (r, id) in ids.iter().enumerate() {
        if id.is_none() && s.weights[r] > 0.0 {
            return Err(Failure::Input(format!(
                "the vCenter has no counter {}: cannot balance {}",
                COUNTERS[r], RESOURCES[r]
            )));
        }
    }
    Ok(ids)
}

/// The VM-level samples of counters `ids` of `vms` over the horizon, at
/// its interval, 50 VMs a query.
fn samples(
    c: &mut Client,
    s: &Settings,
    vms: &[VmInfo],
    ids: &[Option<i32>; 4],
) -> Result<Samples, Failure> {
    let wanted: Vec<i32> = ids.iter().flatten().copied().collect();
    let end = c.current_time()?;
    let start = end.saturating_sub(s.since_ms);
    let mut samples = Samples::new();
    let morefs: Vec<String> = vms.iter().map(|v| v.moref.clone()).collect();
    for batch in morefs.chunks(50) {
        for m in c.query_perf_range(batch, &wanted, s.interval, start, end)? {
            let e = samples.entry(m.entity.clone()).or_default();
            for series in m.series.iter().filter(|x| x.instance.is_empty()) {
                e.entry(series.counter_id)
                    .or_default()
                    .extend(series.values.iter().map(|&x| x as f64));
            }
        }
    }
    Ok(samples)
}
