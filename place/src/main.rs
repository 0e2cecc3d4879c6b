//! dwepc-place: where the VMs of a vSphere cluster should run so that one
//! resource (disk I/O by default) is balanced over the ESXi hosts, from
//! the same counters and the same vSphere client as the nginx module.
//! Reads the hosts, every powered-on VM's host and its usage over a
//! horizon, plans at most `--max-moves` migrations with
//! `dwepc_core::place`, prints the plan, and with `--apply` carries it out
//! one RelocateVM_Task at a time.
//!
//! Exit status: 0 a plan was made (and applied with `--apply`), or nothing
//! needs to move; 1 no plan (bad input, vCenter unreachable, no samples);
//! 2 bad command line; 3 `--apply` stopped at a failed migration, or
//! could not start because the plan's moves cannot be made one at a time.

use clap::Parser;
use dwepc_core::collector::{counter_ids, first_few, COUNTERS};
use dwepc_core::conf;
use dwepc_core::place::{self, Host, Problem, Stat, Vm, RESOURCES};
use dwepc_core::vsphere::client::{Client, Error as VsError};
use dwepc_core::vsphere::xml::{HostInfo, TaskState, VmInfo};
use dwepc_core::vsphere::Api;
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LONG_ABOUT: &str = "\
Reads a vSphere cluster (hosts, where each powered-on VM runs, and each VM's \
usage over --since), and prints where VMs should move so that one resource \
is balanced over the hosts: at most --max-moves migrations, each host kept \
within its CPU and memory (capacity x ratio - reserved, as the nginx \
module's accounting), anti-affinity groups apart, hosts in maintenance or \
--exclude'd left alone. Changes nothing unless --apply is given.

Samples: realtime (20 s) for --since up to 1h, then vCenter's historical \
rollups: 5 min up to 1d, 30 min up to 1w, 2 h up to 30d, 1 day beyond. \
A VM's demand is --stat of its samples.";

/// Command line (vSphere options as the module's dwepc_vsphere).
#[derive(Parser, Debug)]
#[command(name = "dwepc-place", version, about = "Placement advisor for vSphere clusters (dwepc)", long_about = LONG_ABOUT)]
struct Args {
    /// The vCenter's SDK URL, like https://vcenter.example.com/sdk
    #[arg(long)]
    url: String,
    /// vSphere user (reads the inventory and counters; --apply also
    /// needs the right to migrate)
    #[arg(long)]
    user: String,
    /// File whose first line is the password
    #[arg(long, value_name = "FILE")]
    password_file: String,
    /// PEM bundle of the CA that signed the vCenter's certificate
    #[arg(long, value_name = "FILE")]
    ca_file: Option<String>,
    /// Check the vCenter's certificate (off: labs only)
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    tls_verify: String,
    /// Accept an http:// URL (the password crosses in clear text; labs only)
    #[arg(long)]
    insecure_http: bool,
    /// Timeout of every vSphere call
    #[arg(long, default_value = "10s", value_name = "TIME")]
    timeout: String,
    /// Horizon of the usage read, like 1h, 1d, 1w
    #[arg(long, default_value = "1h", value_name = "TIME")]
    since: String,
    /// Per-VM demand over the horizon: p95 (any pN), max or mean
    #[arg(long, default_value = "p95")]
    stat: String,
    /// What to balance: disk, net, cpu or mem, or weights like
    /// cpu=1,disk=0.5 (utilisations; net and disk then need capacities)
    #[arg(long, default_value = "disk")]
    balance: String,
    /// Most VMs that may move: a number, or "none" for no limit
    #[arg(long, default_value = "3", value_name = "N")]
    max_moves: String,
    /// VMs that must run on different hosts, comma-separated (repeatable)
    #[arg(long, value_name = "VM,VM,...")]
    apart: Vec<String>,
    /// The cluster to balance (needed when the vCenter has more than one
    /// cluster or standalone host)
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// A host that receives and gives no VM (repeatable); hosts in
    /// maintenance or disconnected are left out anyway
    #[arg(long, value_name = "HOST")]
    exclude: Vec<String>,
    /// CPU overcommit ratio of a host
    #[arg(long, default_value_t = 1.0)]
    cpu_ratio: f64,
    /// Memory overcommit ratio of a host
    #[arg(long, default_value_t = 1.0)]
    mem_ratio: f64,
    /// CPU (MHz) of each host kept for itself
    #[arg(long, default_value_t = 0.0, value_name = "MHZ")]
    cpu_reserved: f64,
    /// Memory (MB) of each host kept for itself
    #[arg(long, default_value_t = 0.0, value_name = "MB")]
    mem_reserved: f64,
    /// Network capacity of each host (KB/s); without it network loads are
    /// compared as raw sums
    #[arg(long, value_name = "KBPS")]
    net_capacity: Option<f64>,
    /// Disk capacity of each host (KB/s); as --net-capacity
    #[arg(long, value_name = "KBPS")]
    disk_capacity: Option<f64>,
    /// Nothing to do when the busiest host is within this fraction of the
    /// mean
    #[arg(long, default_value_t = 0.05)]
    tolerance: f64,
    /// Print the plan as JSON
    #[arg(long)]
    json: bool,
    /// Carry the plan out: one RelocateVM_Task at a time, each waited for;
    /// stops at the first failure
    #[arg(long)]
    apply: bool,
    /// Longest wait for one migration with --apply
    #[arg(long, default_value = "30m", value_name = "TIME")]
    task_timeout: String,
}

/// Why no plan (exit 1) or why --apply stopped (exit 3).
#[derive(Debug)]
enum Failure {
    Input(String),
    Apply(String),
}

impl From<VsError> for Failure {
    fn from(e: VsError) -> Self {
        Failure::Input(format!("vSphere: {e}"))
    }
}

fn input<T>(r: Result<T, String>) -> Result<T, Failure> {
    r.map_err(Failure::Input)
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => {}
        Err(Failure::Input(m)) => {
            eprintln!("dwepc-place: {m}");
            std::process::exit(1);
        }
        Err(Failure::Apply(m)) => {
            eprintln!("dwepc-place: {m}");
            std::process::exit(3);
        }
    }
}

/// The settings checked before vSphere is asked anything.
struct Settings {
    since_ms: u64,
    interval: i32,
    stat: Stat,
    weights: [f64; 4],
    max_moves: Option<usize>,
    task_timeout: Duration,
}

fn settings(a: &Args) -> Result<Settings, String> {
    let since_ms = conf::parse_time_ms(&a.since)
        .filter(|&ms| ms >= 60_000)
        .ok_or_else(|| {
            format!(
                "invalid --since \"{}\": a time of 1m or more, like 1h or 1d",
                a.since
            )
        })?;
    let interval = interval_for(since_ms);
    let stat = Stat::parse(&a.stat)?;
    let weights = parse_balance(&a.balance)?;
    for (r, cap) in [(2, a.net_capacity), (3, a.disk_capacity)] {
        if let Some(c) = cap {
            if !(c.is_finite() && c > 0.0) {
                return Err(format!("--{}-capacity must be positive", RESOURCES[r]));
            }
        }
    }
    let mixed = weights.iter().filter(|&&w| w > 0.0).count() > 1;
    if mixed
        && ((weights[2] > 0.0 && a.net_capacity.is_none())
            || (weights[3] > 0.0 && a.disk_capacity.is_none()))
    {
        return Err("--balance mixes resources: give --net-capacity / --disk-capacity so that network and disk are compared as utilisations, like CPU and memory".into());
    }
    let max_moves = match a.max_moves.as_str() {
        "none" | "unlimited" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| format!("invalid --max-moves \"{n}\": a number, or \"none\""))?,
        ),
    };
    for (name, v, lo, hi) in [
        ("cpu-ratio", a.cpu_ratio, 0.01, 1000.0),
        ("mem-ratio", a.mem_ratio, 0.01, 1000.0),
        ("cpu-reserved", a.cpu_reserved, 0.0, 1e9),
        ("mem-reserved", a.mem_reserved, 0.0, 1e9),
        ("tolerance", a.tolerance, 0.0, 10.0),
    ] {
        if !(v.is_finite() && (lo..=hi).contains(&v)) {
            return Err(format!("--{name} must be from {lo} to {hi}"));
        }
    }
    let task_timeout = conf::parse_time_ms(&a.task_timeout)
        .filter(|&ms| ms >= 1000)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("invalid --task-timeout \"{}\"", a.task_timeout))?;
    Ok(Settings {
        since_ms,
        interval,
        stat,
        weights,
        max_moves,
        task_timeout,
    })
}

/// The sampling interval vCenter keeps for a horizon: realtime 20 s for
/// the last hour, then its historical rollups (past day 5 min, past week
/// 30 min, past month 2 h, past year 1 day).
fn interval_for(since_ms: u64) -> i32 {
    const H: u64 = 3_600_000;
    match since_ms {
        x if x <= H => 20,
        x if x <= 24 * H => 300,
        x if x <= 7 * 24 * H => 1800,
        x if x <= 30 * 24 * H => 7200,
        _ => 86_400,
    }
}

/// `disk`, `net`, `cpu`, `mem`, or `cpu=1,disk=0.5`.
fn parse_balance(s: &str) -> Result<[f64; 4], String> {
    let mut w = [0.0; 4];
    for part in s.split(',') {
        let (name, weight) = match part.split_once('=') {
            Some((n, v)) => (
                n,
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| format!("invalid weight \"{v}\" in --balance"))?,
            ),
            None => (part, 1.0),
        };
        let r = RESOURCES.iter().position(|&x| x == name).ok_or_else(|| {
            format!("unknown resource \"{name}\" in --balance: use cpu, mem, net or disk")
        })?;
        w[r] = weight;
    }
    if w.iter().all(|&x| x == 0.0) {
        return Err("--balance gives every resource a weight of 0".into());
    }
    Ok(w)
}

/// What vSphere said, gathered.
struct Cluster {
    hosts: Vec<HostInfo>,
    vms: Vec<VmInfo>,
    /// Per VM (same order), demand per resource (None: no sample).
    demand: Vec<[Option<f64>; 4]>,
}

fn read_cluster(c: &mut Client, a: &Args, s: &Settings) -> Result<Cluster, Failure> {
    c.connect()?;
    // one cluster: VMs move between its hosts only
    let resources = c.compute_resources()?;
    let names = || {
        first_few(
            &resources
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>(),
        )
    };
    let cr = match &a.cluster {
        Some(name) => resources.iter().find(|r| &r.name == name).ok_or_else(|| {
            Failure::Input(format!("--cluster {name}: no such cluster (there are: {})", names()))
        })?,
        None if resources.len() == 1 => &resources[0],
        None if resources.is_empty() => {
            return Err(Failure::Input("the vCenter has no cluster or host".into()))
        }
        None => {
            return Err(Failure::Input(format!(
                "the vCenter has {} clusters and standalone hosts ({}): name the one to balance with --cluster",
                resources.len(),
                names()
            )))
        }
    };
    let mut hosts: Vec<HostInfo> = c
        .hosts()?
        .into_iter()
        .filter(|h| cr.hosts.contains(&h.moref))
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    let view = c.create_vm_view()?;
    let mut vms: Vec<VmInfo> = c
        .vms(&view)?
        .into_iter()
        .filter(|v| v.powered_on && v.host.as_ref().is_some_and(|h| cr.hosts.contains(h)))
        .collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
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
    let wanted: Vec<i32> = ids.iter().flatten().copied().collect();
    let end = c.current_time()?;
    let start = end.saturating_sub(s.since_ms);
    let mut samples: HashMap<String, HashMap<i32, Vec<f64>>> = HashMap::new();
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
    let demand = vms
        .iter()
        .map(|v| {
            std::array::from_fn(|r| {
                let id = ids[r]?;
                let vals = samples.get(&v.moref)?.get(&id)?;
                // memory is in KB
                s.stat.of(vals).map(|x| if r == 1 { x / 1024.0 } else { x })
            })
        })
        .collect();
    Ok(Cluster { hosts, vms, demand })
}

/// The optimizer's problem from the cluster and the settings.
fn problem(a: &Args, s: &Settings, cl: &Cluster) -> Result<Problem, String> {
    for x in &a.exclude {
        if !cl.hosts.iter().any(|h| &h.name == x) {
            return Err(format!(
                "--exclude {x}: no such host (hosts: {})",
                first_few(&cl.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>())
            ));
        }
    }
    let hosts: Vec<Host> = cl
        .hosts
        .iter()
        .map(|h| Host {
            name: h.name.clone(),
            capacity: [
                h.cpu_mhz,
                h.memory_mb,
                a.net_capacity.unwrap_or(1.0),
                a.disk_capacity.unwrap_or(1.0),
            ],
            limit_cpu: h.cpu_mhz * a.cpu_ratio - a.cpu_reserved,
            limit_mem: h.memory_mb * a.mem_ratio - a.mem_reserved,
            excluded: h.in_maintenance || !h.connected || a.exclude.contains(&h.name),
        })
        .collect();
    for (r, w) in s.weights.iter().enumerate() {
        if *w > 0.0
            && r < 2
            && hosts
                .iter()
                .any(|h| !h.excluded && (h.capacity[r].is_nan() || h.capacity[r] <= 0.0))
        {
            return Err(format!("a host reports no {} capacity", RESOURCES[r]));
        }
    }
    let host_of: HashMap<&str, usize> = cl
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.moref.as_str(), i))
        .collect();
    let mut missing = Vec::new();
    let mut vms = Vec::new();
    for (v, d) in cl.vms.iter().zip(&cl.demand) {
        let Some(&h) = v.host.as_deref().and_then(|h| host_of.get(h)) else {
            return Err(format!(
                "VM {} runs on a host the inventory does not list",
                v.name
            ));
        };
        // a VM on an excluded host stays and is not balanced: it needs no
        // samples (a disconnected host's VMs have none)
        if !hosts[h].excluded && (0..4).any(|r| s.weights[r] > 0.0 && d[r].is_none()) {
            missing.push(v.name.as_str());
        }
        vms.push(Vm {
            name: v.name.clone(),
            host: h,
            demand: std::array::from_fn(|r| d[r].unwrap_or(0.0)),
            // what it holds: its CPU demand (or, without samples, its
            // configured maximum) and its configured memory
            cpu: d[0].unwrap_or(v.max_cpu_mhz),
            mem: v.memory_mb,
        });
    }
    if vms.is_empty() {
        return Err("no powered-on VM in the inventory".into());
    }
    if !missing.is_empty() {
        let what: Vec<&str> = (0..4)
            .filter(|&r| s.weights[r] > 0.0)
            .map(|r| COUNTERS[r])
            .collect();
        let all = missing.len() == vms.len();
        return Err(format!(
            "{} {} of {} VMs ha{} no sample of {} in the last {} ({}-s interval): {}{}",
            if all { "all" } else { "" },
            missing.len(),
            vms.len(),
            if missing.len() == 1 { "s" } else { "ve" },
            what.join(", "),
            a.since,
            s.interval,
            first_few(&missing),
            if all {
                "; is the horizon longer than what vCenter keeps at this level, or the statistics level too low?"
            } else {
                "; a plan without them would be incomplete"
            }
        )
        .trim_start()
        .to_string());
    }
    let index: HashMap<&str, usize> = vms
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let mut apart = Vec::new();
    for g in &a.apart {
        let mut idx = Vec::new();
        for name in g.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            idx.push(
                *index
                    .get(name)
                    .ok_or_else(|| format!("--apart {g}: no powered-on VM named \"{name}\""))?,
            );
        }
        if idx.len() < 2 {
            return Err(format!("--apart {g}: name two VMs or more"));
        }
        apart.push(idx);
    }
    Ok(Problem {
        hosts,
        vms,
        weights: s.weights,
        apart,
        max_moves: s.max_moves,
    })
}

/// The plan as printed with --json.
#[derive(Serialize)]
struct Report<'a> {
    balance: String,
    unit: &'a str,
    stat: &'a str,
    since: &'a str,
    interval_s: i32,
    max_moves: Option<usize>,
    peak_before: f64,
    peak_after: f64,
    mean: f64,
    lower_bound: f64,
    /// "plan", or why nothing is to do: "balanced", "no_better_plan",
    /// "one_host".
    outcome: &'a str,
    hosts: Vec<HostRow<'a>>,
    moves: Vec<MoveRow<'a>>,
    /// Moves that cannot be made one at a time (a swap between full hosts).
    together: Vec<&'a str>,
}

#[derive(Serialize)]
struct HostRow<'a> {
    name: &'a str,
    excluded: bool,
    vms_before: usize,
    vms_after: usize,
    load_before: f64,
    load_after: f64,
}

#[derive(Serialize)]
struct MoveRow<'a> {
    vm: &'a str,
    from: &'a str,
    to: &'a str,
    load: f64,
    peak_after: f64,
}

fn run(a: &Args) -> Result<(), Failure> {
    let s = input(settings(a))?;
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
    let ep = input(conf::parse_endpoint(&refs))?;
    for w in ep.warnings() {
        eprintln!("dwepc-place: warning: {w}");
    }
    let pw = input(conf::read_config_file(
        std::path::Path::new(&ep.password_file),
        "password_file",
        conf::MAX_PASSWORD_FILE,
    ))?;
    let ca = match &ep.ca_file {
        Some(f) => Some(input(conf::read_config_file(
            std::path::Path::new(f),
            "ca_file",
            conf::MAX_CA_FILE,
        ))?),
        None => None,
    };
    let mut client = Client::new(input(ep.client_config(&pw, ca))?)?;
    let result = plan_and_apply(a, &s, &mut client);
    client.logout();
    result
}

fn plan_and_apply(a: &Args, s: &Settings, client: &mut Client) -> Result<(), Failure> {
    let cl = read_cluster(client, a, s)?;
    let p = input(problem(a, s, &cl))?;
    let now = place::current(&p);
    let bound = place::lower_bound(&p);
    let (peak, mean) = (now.max_load(&p), now.mean_load(&p));
    let usable = p.hosts.iter().filter(|h| !h.excluded).count();
    let balanced = usable < 2 || peak <= mean * (1.0 + a.tolerance) || peak <= bound * (1.0 + 1e-9);
    let plan = if balanced {
        now.clone()
    } else {
        place::plan(&p)
    };
    let improves = plan.max_load(&p) < peak * (1.0 - 1e-9);
    let plan = if improves { plan } else { now.clone() };
    let (mut moves, mut together) = place::ordered_moves(&p, &plan);
    let mut plan = plan;
    if !together.is_empty() {
        // a swap between full hosts cannot be carried out one migration
        // at a time: a plan of single moves instead, if it still helps
        let single = place::plan_with(&p, false);
        let (m, t) = place::ordered_moves(&p, &single);
        if t.is_empty() && single.max_load(&p) < peak * (1.0 - 1e-9) {
            (plan, moves, together) = (single, m, t);
        }
    }
    let outcome = if usable < 2 {
        "one_host"
    } else if balanced {
        "balanced"
    } else if !improves {
        "no_better_plan"
    } else {
        "plan"
    };
    let active: Vec<usize> = (0..4).filter(|&r| s.weights[r] > 0.0).collect();
    // raw KB/s only for network or disk alone, weight 1, no capacity;
    // anything divided by a capacity is a utilisation
    let unit = match active.as_slice() {
        [2] if a.net_capacity.is_none() && s.weights[2] == 1.0 => "KB/s",
        [3] if a.disk_capacity.is_none() && s.weights[3] == 1.0 => "KB/s",
        [r] if s.weights[*r] == 1.0 => "utilisation",
        _ => "weighted load",
    };
    let count = |pl: &place::Placement, h: usize| pl.host.iter().filter(|&&x| x == h).count();
    let report = Report {
        balance: a.balance.clone(),
        unit,
        stat: &a.stat,
        since: &a.since,
        interval_s: s.interval,
        max_moves: s.max_moves,
        peak_before: peak,
        peak_after: plan.max_load(&p),
        mean,
        lower_bound: bound,
        outcome,
        hosts: (0..p.hosts.len())
            .map(|h| HostRow {
                name: &p.hosts[h].name,
                excluded: p.hosts[h].excluded,
                vms_before: count(&now, h),
                vms_after: count(&plan, h),
                load_before: now.load[h],
                load_after: plan.load[h],
            })
            .collect(),
        moves: moves
            .iter()
            .map(|m| MoveRow {
                vm: &p.vms[m.vm].name,
                from: &p.hosts[m.from].name,
                to: &p.hosts[m.to].name,
                load: place::vm_load(&p, m.vm, m.to),
                peak_after: m.peak_after,
            })
            .collect(),
        together: together.iter().map(|&v| p.vms[v].name.as_str()).collect(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_report(&report, p.vms.len());
    }
    if !a.apply || moves.is_empty() && together.is_empty() {
        return Ok(());
    }
    if !together.is_empty() {
        return Err(Failure::Apply(format!(
            "not applied: {} cannot move one migration at a time without overfilling a host or joining an anti-affinity group (they must move at once); nothing was moved",
            report.together.join(", ")
        )));
    }
    apply(client, &p, &cl, &moves, s.task_timeout)
}

fn print_report(r: &Report<'_>, vms: usize) {
    let f = |x: f64| {
        if r.unit == "KB/s" {
            format!("{x:.1}")
        } else {
            format!("{x:.4}")
        }
    };
    println!(
        "{} hosts, {vms} VMs; balancing {} by the {} of {}-s samples over the last {}",
        r.hosts.len(),
        r.balance,
        r.stat,
        r.interval_s,
        r.since
    );
    println!(
        "peak {} {}, mean {}, lower bound {}",
        f(r.peak_before),
        r.unit,
        f(r.mean),
        f(r.lower_bound)
    );
    println!();
    println!(
        "{:<24} {:>5} {:>12} {:>5} {:>12}",
        "host", "VMs", "before", "VMs", "after"
    );
    for h in &r.hosts {
        println!(
            "{:<24} {:>5} {:>12} {:>5} {:>12}{}",
            h.name,
            h.vms_before,
            f(h.load_before),
            h.vms_after,
            f(h.load_after),
            if h.excluded { "  (excluded)" } else { "" }
        );
    }
    println!();
    match r.outcome {
        "balanced" => println!("nothing to do: the busiest host is within the tolerance of the mean (or at the lower bound)"),
        "one_host" => println!("nothing to do: fewer than two hosts can give and take VMs (the others are in maintenance, disconnected or excluded)"),
        "no_better_plan" => println!(
            "nothing to do: no plan within {} migration(s) and the hosts' CPU, memory and anti-affinity lowers the peak",
            r.max_moves.map_or("any number of".to_string(), |m| m.to_string())
        ),
        _ => {
            println!(
                "plan: {} migration(s), peak {} -> {} {}",
                r.moves.len() + r.together.len(),
                f(r.peak_before),
                f(r.peak_after),
                r.unit
            );
            let mut peak = r.peak_before;
            for (i, m) in r.moves.iter().enumerate() {
                println!(
                    "  {}. {}: {} -> {} ({} {}); peak {} -> {} (gain {})",
                    i + 1,
                    m.vm,
                    m.from,
                    m.to,
                    f(m.load),
                    r.unit,
                    f(peak),
                    f(m.peak_after),
                    f(peak - m.peak_after)
                );
                peak = m.peak_after;
            }
            if !r.together.is_empty() {
                println!("  together (not one at a time): {}", r.together.join(", "));
            }
        }
    }
}

/// Carries the moves out in order, one task at a time.
fn apply(
    c: &mut Client,
    p: &Problem,
    cl: &Cluster,
    moves: &[place::Move],
    task_timeout: Duration,
) -> Result<(), Failure> {
    let mut done: Vec<String> = Vec::new();
    for (i, m) in moves.iter().enumerate() {
        let vm = &p.vms[m.vm].name;
        let to = &p.hosts[m.to].name;
        let result = (|| -> Result<(), String> {
            let task = c
                .relocate(&cl.vms[m.vm].moref, &cl.hosts[m.to].moref)
                .map_err(|e| e.to_string())?;
            let t = Instant::now();
            loop {
                match c.task_state(&task).map_err(|e| e.to_string())? {
                    TaskState::Success => return Ok(()),
                    TaskState::Error(e) => return Err(e),
                    TaskState::Queued | TaskState::Running => {}
                }
                if t.elapsed() > task_timeout {
                    return Err(format!(
                        "still running after {} s (the task goes on in vCenter)",
                        task_timeout.as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })();
        match result {
            Ok(()) => {
                println!("moved {vm} to {to} ({}/{})", i + 1, moves.len());
                done.push(format!("{vm} -> {to}"));
            }
            Err(e) => {
                let rest: Vec<String> = moves[i + 1..]
                    .iter()
                    .map(|m| format!("{} -> {}", p.vms[m.vm].name, p.hosts[m.to].name))
                    .collect();
                return Err(Failure::Apply(format!(
                    "migration of {vm} to {to} failed: {e}. Moved: {}. Not attempted: {}.",
                    if done.is_empty() {
                        "none".into()
                    } else {
                        done.join(", ")
                    },
                    if rest.is_empty() {
                        "none".into()
                    } else {
                        rest.join(", ")
                    }
                )));
            }
        }
    }
    println!("applied: {} migration(s)", moves.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn horizons_pick_vcenter_s_intervals() {
        let ms = |s: &str| conf::parse_time_ms(s).unwrap();
        assert_eq!(interval_for(ms("30m")), 20);
        assert_eq!(interval_for(ms("1h")), 20);
        assert_eq!(interval_for(ms("2h")), 300);
        assert_eq!(interval_for(ms("1d")), 300);
        assert_eq!(interval_for(ms("1w")), 1800);
        assert_eq!(interval_for(ms("30d")), 7200);
        assert_eq!(interval_for(ms("90d")), 86_400);
    }

    #[test]
    fn balance_weights() {
        assert_eq!(parse_balance("disk").unwrap(), [0.0, 0.0, 0.0, 1.0]);
        assert_eq!(
            parse_balance("cpu=1,disk=0.5").unwrap(),
            [1.0, 0.0, 0.0, 0.5]
        );
        assert!(parse_balance("iops")
            .unwrap_err()
            .contains("unknown resource"));
        assert!(parse_balance("cpu=x").is_err());
        assert!(parse_balance("cpu=0").is_err());
    }
}
