//! Reliability figures for BENCHMARKS.md ("Reliability"): reloads under load,
//! the polling worker killed under load, proxied latency while vSphere
//! answers are hostile, and proxied latency while the status page of a
//! 2,000-server upstream is pulled in a loop. Measurements, not checks of
//! timing: each prints its figures; the assertions are only on what must
//! hold whatever the machine's speed (no failed request where none may
//! fail, one vSphere session). Ignored by default (they take minutes and
//! must not share the machine with a build); run them with
//!
//!     cargo build --release --workspace
//!     cargo test --release --test reliability -- --ignored --nocapture --test-threads=1

mod common;

use common::vsenv::{active, rss_kb, VsEnv, VsOpts};
use common::{backend::Backend, http, nginx, wait_for};
use dwepc_lab::load::{self, LoadSpec, Pattern, Record};
use std::time::{Duration, Instant};

/// Open-loop load on `port` at `rate` requests/s for `secs`, on its own
/// thread.
fn load_on(port: u16, rate: f64, secs: u64) -> std::thread::JoinHandle<Vec<Record>> {
    let spec = LoadSpec {
        targets: vec![(format!("127.0.0.1:{port}").parse().unwrap(), 1.0)],
        paths: vec!["/".into()],
        phases: Vec::new(),
        pattern: Pattern::Open { rate },
        duration: Duration::from_secs(secs),
        timeout: Duration::from_secs(5),
        max_in_flight: 0,
        seed: 1,
    };
    std::thread::spawn(move || load::run(&spec, &[]))
}

/// p50 and p99 of the answered requests' latency in ms, of those started
/// in [from, to) ms.
fn p50_p99(recs: &[Record], from: u32, to: u32) -> (f64, f64, usize) {
    let mut v: Vec<f64> = recs
        .iter()
        .filter(|r| r.status == 200 && (from..to).contains(&r.t_ms))
        .map(|r| r.latency_us as f64 / 1000.0)
        .collect();
    let n = v.len();
    let p50 = dwepc_lab::metrics::quantile(&mut v, 0.5);
    let p99 = dwepc_lab::metrics::quantile(&mut v, 0.99);
    (p50, p99, n)
}

fn failed(recs: &[Record]) -> Vec<(u32, u16)> {
    recs.iter()
        .filter(|r| r.status != 200)
        .map(|r| (r.t_ms, r.status))
        .collect()
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Threads, fds and RSS (KB) summed over the master and its workers.
fn footprint(n: &nginx::Nginx) -> (usize, usize, u64) {
    let mut pids = n.workers();
    pids.push(n.pid());
    (
        pids.iter().map(|&p| nginx::threads(p)).sum(),
        pids.iter().map(|&p| fds(p)).sum(),
        pids.iter().map(|&p| rss_kb(p)).sum(),
    )
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
#[ignore = "measurement (BENCHMARKS.md, reliability)"]
fn reloads_under_load() {
    const RELOADS: usize = 100;
    let mut env = VsEnv::start(VsOpts {
        workers: 2,
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    std::thread::sleep(Duration::from_secs(2));
    let before = footprint(&env.nginx);
    let secs = 60;
    let load = load_on(env.port, 200.0, secs);
    std::thread::sleep(Duration::from_secs(2));
    let mut exits = Vec::new();
    let start = Instant::now();
    for _ in 0..RELOADS {
        let old = env.nginx.workers();
        let t = Instant::now();
        env.nginx.reload(&env.text);
        let gone = wait_for(Duration::from_secs(30), || {
            old.iter().all(|&p| !alive(p)).then_some(())
        });
        assert!(gone.is_some(), "old workers {old:?} still running");
        exits.push(t.elapsed().as_secs_f64() * 1000.0);
        if start.elapsed() > Duration::from_secs(secs - 5) {
            break;
        }
    }
    let recs = load.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let after = footprint(&env.nginx);
    let n = exits.len();
    let mean = exits.iter().sum::<f64>() / n as f64;
    let p99 = dwepc_lab::metrics::quantile(&mut exits.clone(), 0.99);
    let max = exits.iter().cloned().fold(0.0, f64::max);
    let (l50, l99, answered) = p50_p99(&recs, 0, u32::MAX);
    let bad = failed(&recs);
    let st = env.vcsim.stats();
    eprintln!(
        "reloads: {n} under 200 req/s; requests {} answered {answered}, failed {}; \
         old workers gone after mean {mean:.0} ms, p99 {p99:.0} ms, max {max:.0} ms; \
         proxied p50 {l50:.2} ms p99 {l99:.2} ms; \
         threads/fds/RSS (master + workers) before {}/{}/{} KB, after {}/{}/{} KB; \
         vSphere logins {} logouts {} open sessions {}",
        recs.len(),
        bad.len(),
        before.0,
        before.1,
        before.2,
        after.0,
        after.1,
        after.2,
        st["logins"],
        st["logouts"],
        st["sessions"]
    );
    assert!(bad.is_empty(), "failed requests: {bad:?}");
    assert_eq!(st["sessions"].as_u64(), Some(1), "{st}");
}

#[test]
#[ignore = "measurement (BENCHMARKS.md, reliability)"]
fn polling_worker_killed_under_load() {
    let mut env = VsEnv::start(VsOpts {
        workers: 2,
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    std::thread::sleep(Duration::from_secs(2));
    let mut rows = Vec::new();
    for round in 0..5 {
        let load = load_on(env.port, 200.0, 10);
        std::thread::sleep(Duration::from_secs(3));
        let holder = env.polling_worker();
        let q0 = env.vcsim.calls("QueryPerf");
        let t = Instant::now();
        nginx::signal(holder, libc::SIGKILL);
        let next = wait_for(Duration::from_secs(30), || {
            (env.vcsim.calls("QueryPerf") > q0).then(|| t.elapsed())
        })
        .expect("nobody polls after the polling worker was killed");
        let recs = load.join().unwrap();
        let bad = failed(&recs);
        let st = env.status();
        eprintln!(
            "killed polling worker (round {round}): next QueryPerf after {:.2} s; \
             requests {} failed {} {:?}; balancing {}; open sessions {}",
            next.as_secs_f64(),
            recs.len(),
            bad.len(),
            bad.iter().take(5).collect::<Vec<_>>(),
            st["balancing"],
            env.vcsim.stats()["sessions"]
        );
        rows.push((next.as_secs_f64(), bad.len(), recs.len()));
        assert!(active(&st), "{st}");
        std::thread::sleep(Duration::from_secs(2));
    }
    let st = env.vcsim.stats();
    eprintln!(
        "killed polling worker: 5 rounds, next poll after {:?} s; failed requests {:?} of {:?}; vSphere logins {} open sessions {}",
        rows.iter().map(|r| format!("{:.2}", r.0)).collect::<Vec<_>>(),
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        st["logins"],
        st["sessions"]
    );
    assert_eq!(st["sessions"].as_u64(), Some(1), "{st}");
}

#[test]
#[ignore = "measurement (BENCHMARKS.md, reliability)"]
fn hostile_endpoint_proxied_latency() {
    let mut env = VsEnv::start(VsOpts::riding_out_faults());
    env.feed_and_warm_up();
    let worker = env.nginx.workers()[0];
    let phases = ["none", "flood", "huge", "elements", "hang", "none"];
    let phase_s = 10u64;
    let load = load_on(env.port, 200.0, phase_s * phases.len() as u64);
    let t0 = Instant::now();
    let mut peaks = Vec::new();
    let mut lines = Vec::new();
    for (i, mode) in phases.iter().enumerate() {
        env.vcsim.fault(mode);
        let before_log = env.nginx.error_log().lines().count();
        let end = Duration::from_secs(phase_s * (i as u64 + 1));
        let mut peak = 0;
        while t0.elapsed() < end {
            peak = peak.max(rss_kb(worker));
            std::thread::sleep(Duration::from_millis(50));
        }
        peaks.push(peak);
        lines.push(env.nginx.error_log().lines().count() - before_log);
    }
    env.vcsim.fault("none");
    let recs = load.join().unwrap();
    for (i, mode) in phases.iter().enumerate() {
        let from = (i as u64 * phase_s * 1000) as u32;
        let (p50, p99, n) = p50_p99(&recs, from, from + phase_s as u32 * 1000);
        eprintln!(
            "hostile {mode:>8}: answered {n}, proxied p50 {p50:.2} ms p99 {p99:.2} ms; \
             polling worker peak RSS {} KB; {} log lines",
            peaks[i], lines[i]
        );
    }
    let bad = failed(&recs);
    eprintln!("hostile: failed requests {} of {}", bad.len(), recs.len());
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
#[ignore = "measurement (BENCHMARKS.md, reliability)"]
fn status_page_of_2000_servers_pulled_in_a_loop() {
    let backends: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let port = common::free_port();
    let big: String = (0..2000)
        .map(|i| format!("server 127.0.{}.{}:8080;\n", i / 250, i % 250 + 1))
        .collect();
    let app: String = backends
        .iter()
        .map(|b| format!("server {};\n", b.addr()))
        .collect();
    let text = nginx::conf(
        "worker_processes 2;",
        &format!(
            "upstream big {{ dwepc; zone big 4m;\n{big}}}\n\
             upstream app {{ dwepc; zone app 64k;\n{app}}}\n\
             server {{ listen 127.0.0.1:{port};\n\
               location / {{ proxy_pass http://app; }}\n\
               location = /dwepc {{ dwepc_status; }} }}"
        ),
    );
    let n = nginx::Nginx::start(&text, port);
    let size = |q: &str| http::get(port, &format!("/dwepc{q}")).body.len();
    for (what, q) in [
        ("no puller", None),
        ("2 pullers, whole JSON page", Some("")),
        ("2 pullers, ?upstream=app", Some("?upstream=app")),
        (
            "2 pullers, whole Prometheus page",
            Some("?format=prometheus"),
        ),
        (
            "2 pullers, Prometheus ?upstream=app",
            Some("?format=prometheus&upstream=app"),
        ),
    ] {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pullers: Vec<_> = q
            .map(|q| {
                (0..2)
                    .map(|_| {
                        let stop = stop.clone();
                        let path = format!("/dwepc{q}");
                        std::thread::spawn(move || {
                            let mut pulls = 0u64;
                            let t = Instant::now();
                            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                                let r = http::get(port, &path);
                                assert_eq!(r.status, 200);
                                pulls += 1;
                            }
                            pulls as f64 / t.elapsed().as_secs_f64()
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let recs = load_on(port, 200.0, 10).join().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rates: Vec<f64> = pullers.into_iter().map(|h| h.join().unwrap()).collect();
        let (p50, p99, answered) = p50_p99(&recs, 0, u32::MAX);
        let page = q.map_or(String::new(), |q| {
            format!(
                "page {} bytes, {:.0} pulls/s in all; ",
                size(q),
                rates.iter().sum::<f64>()
            )
        });
        eprintln!(
            "status, {what}: {page}proxied answered {answered}, p50 {p50:.2} ms p99 {p99:.2} ms, failed {}",
            failed(&recs).len()
        );
        assert!(failed(&recs).is_empty());
    }
    drop(n);
}
