//! A large upstream: nginx (one worker) proxying to N servers, each a VM of
//! vcsim found by its guest IP, measured with wrk against nginx's own
//! policies in the same run (rounds interleaved), and what the collector
//! costs at that size: the time its calls take per poll, the polling
//! worker's memory, and the proxied p99 with the poll running and with it
//! held (vcsim stopped, counters still within their TTL).
//!
//! ```text
//! dwepc-lab scale --servers 2000 [--interval 2] [--niced | --vcsim-apart [--collector-apart]]
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::nginx::{conf_with_events, tasks, Nginx};
use crate::overhead::{median, vcsim_with_load, wrk};
use crate::vcsim::{Vcsim, VmSpec};
use crate::{free_port, http};
use dwepc_core::vsphere::budget::VMS_PER_QUERY;

/// VMs per /24 of the backends' loopback addresses (127.1.K.1–250).
const PER_NET: usize = 250;

/// Server `i`'s loopback address.
fn ip(i: usize) -> String {
    format!("127.1.{}.{}", i / PER_NET, i % PER_NET + 1)
}

/// One configuration compared.
struct Config {
    name: &'static str,
    /// The upstream block's method line; for a `live` one, the `dwepc`
    /// parameters besides `interval=` and `ttl=` ([`Config::method`]).
    lines: &'static str,
    /// dwepc reading counters: waits for them to take over, and reports
    /// the poll.
    live: bool,
    /// Stops vcsim once counters took over (the collector's calls then
    /// wait on a server that answers nothing: no poll work).
    held: bool,
}

impl Config {
    /// The upstream block's method lines, dwepc polling every
    /// `interval_s` seconds (counters kept an hour, so that a held poll
    /// still serves them).
    fn method(&self, interval_s: u64) -> String {
        if self.live {
            format!("dwepc interval={interval_s}s ttl=1h {};", self.lines)
        } else {
            self.lines.to_string()
        }
    }
}

const CONFIGS: [Config; 7] = [
    Config {
        name: "round_robin",
        lines: "",
        live: false,
        held: false,
    },
    Config {
        name: "least_conn",
        lines: "least_conn;",
        live: false,
        held: false,
    },
    Config {
        name: "random two least_conn",
        lines: "random two least_conn;",
        live: false,
        held: false,
    },
    Config {
        name: "dwepc choices=all (every peer compared)",
        lines: "choices=all",
        live: true,
        held: false,
    },
    Config {
        name: "dwepc choices=2 (two drawn by share)",
        lines: "choices=2",
        live: true,
        held: false,
    },
    Config {
        name: "dwepc default (choices=auto: eight drawn)",
        lines: "",
        live: true,
        held: false,
    },
    Config {
        name: "dwepc default, poll held",
        lines: "",
        live: true,
        held: true,
    },
];

/// What one measurement of a configuration gave.
#[derive(Clone, Debug, Default)]
struct Measured {
    rps: f64,
    p99_ms: f64,
    /// From nginx's start to counters driving the pick (login, catalog,
    /// inventory pages, the first QueryPerf and its window), s.
    takeover_s: Option<f64>,
    /// Polls during wrk, and the time their calls took, ms per poll.
    polls: u64,
    poll_ms: Option<f64>,
    /// CPU time per poll, ms: the worker's threads besides the event
    /// loop (the collector), and vcsim (in production the vCenter's, on
    /// another machine; here on the proxy's cores unless
    /// [`Vcenter::Apart`]).
    collector_cpu_ms: Option<f64>,
    vcsim_cpu_ms: Option<f64>,
    /// The worker's resident memory after wrk, and its peak, MB.
    rss_mb: f64,
    hwm_mb: f64,
}

/// Where vcsim runs against the proxy (in production the vCenter is on
/// another machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vcenter {
    /// On the same cores as everything else, at the same priority.
    Shared,
    /// On the same cores, every thread at nice 19.
    Niced,
    /// On CPU 1 alone; the proxy, its backends, wrk and this command on
    /// CPU 0 (so a poll's cost on the proxy's core is the module's).
    Apart,
    /// As [`Vcenter::Apart`], and the proxy worker's threads other than
    /// its event loop (the collector and its HTTP client's) on CPU 1 too:
    /// a proxy whose cores are not all busy.
    ApartWithCollector,
}

impl Vcenter {
    fn apart(self) -> bool {
        matches!(self, Vcenter::Apart | Vcenter::ApartWithCollector)
    }
}

/// Runs the comparison with `servers` servers: `rounds` rounds of `secs`
/// seconds per configuration, interleaved, vcsim placed as `vcenter`
/// says, the dwepc configurations polling every `interval_s` seconds.
/// Returns the Markdown report.
pub fn run(
    servers: usize,
    rounds: usize,
    (secs, conns): (u64, u32),
    vcenter: Vcenter,
    interval_s: u64,
) -> String {
    assert!(
        (1..=PER_NET * 200).contains(&servers),
        "--servers must be 1..={}",
        PER_NET * 200
    );
    if vcenter.apart() {
        // this thread, and every process it starts from now on
        pin(0, PROXY_CPU)
            .unwrap_or_else(|e| panic!("--vcsim-apart: cannot pin this command to CPU 0: {e}"));
    }
    let bport = free_port();
    let _backends = backends(servers, bport);
    let (mut vc, pw) = vcsim(servers);
    let port = free_port();
    let mut all: Vec<Vec<Measured>> = vec![vec![]; CONFIGS.len()];
    for round in 0..rounds {
        for (k, c) in CONFIGS.iter().enumerate() {
            // again before each measurement: threads vcsim started since
            // inherit from the thread that started them, but not always
            // one placed already
            place(vc.pid().map_or(0, |p| p as i32), vcenter);
            let text = proxy_conf(&vc, &pw, &c.method(interval_s), servers, bport, port);
            let m = measure(&mut vc, c, &text, port, (secs, conns), vcenter);
            eprintln!(
                "scale: round {round} {:<50} {:>8.0} req/s  p99 {:.3} ms  takeover {:?} s  polls {} ({:?} ms each; CPU collector {:?} ms, vcsim {:?} ms)  rss {:.1} MB (peak {:.1})",
                c.name, m.rps, m.p99_ms, m.takeover_s, m.polls, m.poll_ms, m.collector_cpu_ms, m.vcsim_cpu_ms, m.rss_mb, m.hwm_mb
            );
            all[k].push(m);
        }
    }
    report(servers, vcenter, interval_s, &all)
}

/// The CPU of the proxy (and everything but vcsim) with `--vcsim-apart`,
/// and vcsim's.
const PROXY_CPU: usize = 0;
const VCSIM_CPU: usize = 1;

/// Places every thread of process `pid` as `vcenter` says.
fn place(pid: i32, vcenter: Vcenter) {
    for t in tasks(pid) {
        match vcenter {
            Vcenter::Shared => {}
            // SAFETY: setpriority takes plain integers and only changes the
            // scheduling priority of thread `tid` (ours to lower: a child).
            Vcenter::Niced => unsafe {
                libc::setpriority(libc::PRIO_PROCESS, t.tid as libc::id_t, 19);
            },
            Vcenter::Apart | Vcenter::ApartWithCollector => pin_or_gone(t.tid, VCSIM_CPU),
        }
    }
}

/// [`pin`], a thread that ended since it was listed left alone.
fn pin_or_gone(tid: libc::pid_t, cpu: usize) {
    match pin(tid, cpu) {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
        r => {
            r.unwrap_or_else(|e| panic!("--vcsim-apart: cannot pin thread {tid} to CPU {cpu}: {e}"))
        }
    }
}

/// Thread `tid` (0: the calling thread) on CPU `cpu` only; threads and
/// processes it starts afterwards inherit that.
fn pin(tid: libc::pid_t, cpu: usize) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain bits (all-zero is the empty set);
    // CPU_SET indexes its words (cpu is 0 or 1, far below CPU_SETSIZE);
    // sched_setaffinity reads size_of::<cpu_set_t>() bytes of it and
    // changes only thread tid's affinity.
    let r = unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, core::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One nginx answering `200 ok` on port `port` of each server's address.
fn backends(servers: usize, port: u16) -> Nginx {
    let listen: String = (0..servers)
        .map(|i| format!("listen {}:{port};\n", ip(i)))
        .collect();
    let text = conf_with_events(
        "worker_processes 1; worker_rlimit_nofile 65536;",
        "worker_connections 16384;",
        &format!(
            "server {{ {listen} keepalive_requests 100000; location / {{ return 200 \"ok\\n\"; }} }}\n\
             server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }}"
        ),
    );
    Nginx::start(&text, port)
}

/// vcsim with `servers` VMs s0, s1, … at the servers' addresses, of four
/// sizes and four CPU loads (so that their shares differ); its password
/// file.
fn vcsim(servers: usize) -> (Vcsim, std::path::PathBuf) {
    let vms: Vec<VmSpec> = (0..servers)
        .map(|i| {
            let cpus = 1 + (i % 4) as u32;
            VmSpec::new(&format!("s{i}"), Some(&ip(i)), cpus, 2000 * cpus, 2048)
        })
        .collect();
    vcsim_with_load(&vms, |i| 300 + 100 * (i % 7) as u64)
}

/// The proxy: one worker, the upstream of every server (found in vcsim by
/// guest IP), `lines` its method.
fn proxy_conf(vc: &Vcsim, pw: &Path, lines: &str, servers: usize, bport: u16, port: u16) -> String {
    let list: String = (0..servers)
        .map(|i| format!("server {}:{bport};\n", ip(i)))
        .collect();
    conf_with_events(
        "worker_processes 1; worker_rlimit_nofile 65536;",
        "worker_connections 16384;",
        &format!(
            "dwepc_vsphere vc url={} user=user password_file={} timeout=2s insecure_http=on;\n\
             upstream app {{ {lines}\n{list} keepalive 32; }}\n\
             server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;\n\
               location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
               location = /dwepc {{ dwepc_status; }} }}",
            vc.url,
            pw.display()
        ),
    )
}

/// The endpoint's calls and the time they took (ms) from the status page.
fn calls(port: u16) -> Option<(u64, f64)> {
    let page = http::request(port, "GET", "/dwepc").ok()?;
    let doc: serde_json::Value = serde_json::from_str(&page.body).ok()?;
    let e = &doc["endpoints"][0];
    let n = e["calls"].as_u64()?;
    Some((n, n as f64 * e["answer_ms_mean"].as_f64().unwrap_or(0.0)))
}

/// (resident, peak) memory of process `pid`, MB.
fn memory_mb(pid: i32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

/// CPU time of process `pid`'s threads (all, or all but the first), ms.
fn cpu_ms(pid: i32, all: bool) -> f64 {
    let tasks = tasks(pid);
    if tasks.is_empty() {
        return f64::NAN;
    }
    tasks
        .iter()
        .filter(|t| all || t.tid != pid)
        .map(|t| t.cpu_ms)
        .sum()
}

/// One measurement of configuration `c`.
fn measure(
    vc: &mut Vcsim,
    c: &Config,
    text: &str,
    port: u16,
    (secs, conns): (u64, u32),
    vcenter: Vcenter,
) -> Measured {
    let started = Instant::now();
    let mut ng = Nginx::start(text, port);
    let mut m = Measured::default();
    if c.live {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let _ = http::request(port, "GET", "/");
            let active = http::request(port, "GET", "/dwepc")
                .is_ok_and(|st| st.body.contains("\"reason\":\"active\""));
            if active {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "counters never took over: {}",
                ng.error_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        m.takeover_s = Some(started.elapsed().as_secs_f64());
    }
    if vcenter == Vcenter::ApartWithCollector {
        // every thread the collector needs exists once counters took over
        for w in ng.workers() {
            for t in tasks(w).iter().filter(|t| t.tid != w) {
                pin_or_gone(t.tid, VCSIM_CPU);
            }
        }
    }
    let held = c.held.then(|| vc.pid()).flatten();
    if let Some(pid) = held {
        crate::nginx::signal(pid as i32, libc::SIGSTOP);
    }
    let polled = c.live && !c.held;
    let _ = wrk(port, 1, conns);
    let worker = ng.workers().first().copied().unwrap_or(0);
    let vc_pid = vc.pid().map_or(0, |p| p as i32);
    let cpu = || (cpu_ms(worker, false), cpu_ms(vc_pid, true));
    let cpu_before = cpu();
    let before = polled.then(|| (vc.calls("QueryPerf"), calls(port)));
    let (rps, p99) = wrk(port, secs, conns).expect("wrk output");
    if let Some(pid) = held {
        crate::nginx::signal(pid as i32, libc::SIGCONT);
    }
    m.rps = rps;
    m.p99_ms = p99;
    if let Some(before) = before {
        let after = (vc.calls("QueryPerf"), calls(port));
        // the collector's QueryPerf calls per poll
        let per_poll = vc_servers(text).div_ceil(VMS_PER_QUERY).max(1) as u64;
        m.polls = (after.0 - before.0) / per_poll;
        if let (Some(b), Some(a)) = (before.1, after.1) {
            m.poll_ms = (m.polls > 0).then(|| (a.1 - b.1) / m.polls as f64);
        }
        let cpu_after = cpu();
        if m.polls > 0 {
            let per = |a: f64, b: f64| Some((a - b) / m.polls as f64).filter(|x| x.is_finite());
            m.collector_cpu_ms = per(cpu_after.0, cpu_before.0);
            m.vcsim_cpu_ms = per(cpu_after.1, cpu_before.1);
        }
    }
    (m.rss_mb, m.hwm_mb) = memory_mb(worker);
    ng.stop(Duration::from_secs(10));
    m
}

/// The servers of a proxy configuration.
fn vc_servers(text: &str) -> usize {
    text.matches("\nserver 127.1.").count()
}

/// The Markdown report: throughput and p99 against least_conn, and the
/// collector's cost.
fn report(servers: usize, vcenter: Vcenter, interval_s: u64, all: &[Vec<Measured>]) -> String {
    let med = |k: usize, f: fn(&Measured) -> f64| {
        let v: Vec<f64> = all[k].iter().map(f).filter(|x| x.is_finite()).collect();
        median(&v)
    };
    let lc_rps = med(1, |m| m.rps);
    let lc_p99 = med(1, |m| m.p99_ms);
    let mut s = format!(
        "{servers} servers, {} rounds, a poll every {interval_s} s, vcsim {}\n\n| configuration | req/s (median) | vs least_conn | p99 ms (median) | p99 vs least_conn | worker RSS MB (peak) |\n|---|---|---|---|---|---|\n",
        all[0].len(),
        match vcenter {
            Vcenter::Shared => "on the proxy's cores",
            Vcenter::Niced => "on the proxy's cores at nice 19",
            Vcenter::Apart => "on CPU 1, everything else on CPU 0",
            Vcenter::ApartWithCollector =>
                "and the proxy worker's collector threads on CPU 1, everything else on CPU 0",
        }
    );
    for (k, c) in CONFIGS.iter().enumerate() {
        let (rps, p99) = (med(k, |m| m.rps), med(k, |m| m.p99_ms));
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.3} | {:.3} | {:.2} | {:.1} ({:.1}) |",
            c.name,
            rps,
            rps / lc_rps,
            p99,
            p99 / lc_p99,
            med(k, |m| m.rss_mb),
            med(k, |m| m.hwm_mb)
        );
    }
    s.push_str("\n| configuration | counters took over after, s | polls during wrk | call time per poll, ms | collector CPU per poll, ms | vcsim CPU per poll, ms |\n|---|---|---|---|---|---|\n");
    for (k, c) in CONFIGS
        .iter()
        .enumerate()
        .filter(|(_, c)| c.live && !c.held)
    {
        let _ = writeln!(
            s,
            "| {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |",
            c.name,
            med(k, |m| m.takeover_s.unwrap_or(f64::NAN)),
            med(k, |m| m.polls as f64),
            med(k, |m| m.poll_ms.unwrap_or(f64::NAN)),
            med(k, |m| m.collector_cpu_ms.unwrap_or(f64::NAN)),
            med(k, |m| m.vcsim_cpu_ms.unwrap_or(f64::NAN)),
        );
    }
    s
}
