//! End to end with the real vSphere API (vcsim), real nginx and the module:
//! the collector thread, mapping, the split, faults, sessions, reloads.

mod common;
use common::prom;
use common::vcsim::Opts;
use common::vsenv::{active, rss_kb, VsEnv, VsOpts};
use common::{http, nginx, wait_for};
use dwepc_core::policy::paper::Dispatcher;
use dwepc_core::rng::Rng;
use std::time::{Duration, Instant};

/// Given published Q, W and V, the pick follows argmax L = Q·W − V: the
/// split of the next requests equals the algorithm's own prediction.
#[test]
fn split_follows_remaining_allocation() {
    let mut env = VsEnv::start(VsOpts {
        cpu_mhz: vec![4000, 8000, 2000],
        dwepc: "mode=paper interval=1s window=8 min_samples=2 ttl=10m".into(),
        ..VsOpts::default()
    });
    env.start_feeder();
    *env.extra_cpu.lock().unwrap() = vec![1000.0, 1000.0, 1000.0];
    env.drive_until(40, Duration::from_secs(40), "warm-up", active);
    // let the fit settle on a few samples with traffic, then freeze the
    // sample time: no new sample, so allocations stay put
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(4) {
        env.send(5);
        std::thread::sleep(Duration::from_millis(100));
    }
    env.stop_feeder();
    let frozen_at = common::now_rfc3339();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.vcsim.counters_path()).unwrap()).unwrap();
    c["_time"] = serde_json::Value::String(frozen_at.clone());
    env.vcsim.set_counters(&c);
    // wait until the frozen sample is the newest (a new period has begun)
    let st = wait_for(Duration::from_secs(10), || {
        let st = env.status();
        let age = st["sample_age_ms"].as_u64()?;
        (age > 1500 && active(&st)).then_some(st)
    })
    .expect("frozen sample not applied");
    let w = &st["w"];
    let n = env.backends.len();
    let mut d = Dispatcher::new(n);
    let mut expected_alloc = Vec::new();
    for i in 0..n {
        let p = &st["peers"][i];
        // the published allocation is Q·W over the resources in the model
        let mut qw = 0.0;
        for r in ["cpu", "mem", "net", "disk"] {
            if let (Some(q), Some(wr)) = (p["q"][r].as_f64(), w[r].as_f64()) {
                qw += q * wr;
            }
        }
        let alloc = p["allocation"].as_f64().unwrap();
        assert!(
            (qw - alloc).abs() <= 1e-6 * alloc.abs().max(1.0),
            "peer {i}: Q·W={qw} allocation={alloc}: {st}"
        );
        expected_alloc.push(alloc);
        d.target[i] = p["l"].as_f64().unwrap();
    }
    // simulate the next 60 picks from the published L
    let mut rng = Rng::new(1);
    let before: Vec<u64> = env.backends.iter().map(|b| b.served()).collect();
    for _ in 0..60 {
        d.pick(0..n, &mut rng);
    }
    let got = env.send(60);
    for (i, b) in env.backends.iter().enumerate() {
        let real = got.iter().filter(|x| **x == b.id).count() as i64;
        assert!(
            (real - d.total[i] as i64).abs() <= 1,
            "peer {i}: got {real}, predicted {} (allocations {expected_alloc:?})\n{st}",
            d.total[i]
        );
        assert_eq!(b.served() - before[i], real as u64);
    }
    // the model has learnt a positive CPU weight from the closed loop
    assert!(w["cpu"].as_f64().unwrap() > 0.0, "{st}");
}

/// Servers map to VMs by guest IP by default and by name with dwepc_node;
/// capacities come from the VMs; a server without a VM is reported.
#[test]
fn mapping_by_guest_ip_and_by_name() {
    let env = VsEnv::start(VsOpts {
        by_ip: true,
        cpu_mhz: vec![3000, 6000, 9000],
        ..VsOpts::default()
    });
    env.drive_until(20, Duration::from_secs(30), "capacities published", |st| {
        (0..3).all(|i| st["peers"][i]["capacity"]["cpu"].as_f64().is_some())
    });
    let st = env.status();
    for (i, mhz) in [3000.0, 6000.0, 9000.0].iter().enumerate() {
        assert_eq!(
            st["peers"][i]["capacity"]["cpu"].as_f64(),
            Some(*mhz),
            "{st}"
        );
        assert_eq!(st["peers"][i]["capacity"]["mem"].as_f64(), Some(2048.0));
        // found by guest IP: the status names the VM found
        assert_eq!(st["peers"][i]["vm"], common::vsenv::vm_name(i), "{st}");
        assert_eq!(st["peers"][i]["mapping"], "mapped", "{st}");
    }
    assert_eq!(
        (&st["servers"], &st["mapped"]),
        (&3.into(), &3.into()),
        "{st}"
    );

    // by name, with overrides and accounting; one server without a VM
    let env2 = VsEnv::start(VsOpts {
        n: 2,
        ..VsOpts::default()
    });
    let extra = common::backend::Backend::start("orphan");
    let text = env2.text.replacen(
        "dwepc_node",
        &format!(
            "server {};\ndwepc_node {} vm=no-such-vm;\ndwepc_node",
            extra.addr(),
            extra.addr()
        ),
        1,
    );
    let text = text.replacen(
        &format!("vm={};", common::vsenv::vm_name(0)),
        &format!(
            "vm={} cpu=1000 cpu_ratio=2 cpu_reserved=500;",
            common::vsenv::vm_name(0)
        ),
        1,
    );
    env2.nginx.reload(&text);
    env2.drive_until(20, Duration::from_secs(30), "reloaded capacities", |st| {
        st["peers"].as_array().map(|p| p.len()) == Some(3)
            && st["peers"][0]["capacity"]["cpu"].as_f64() == Some(1500.0)
    });
    let st = env2.status();
    assert_eq!(st["peers"][0]["vm"], "web-0");
    assert!(st["peers"][2]["capacity"]["cpu"].is_null(), "{st}");
    // a vm= that names no VM is not echoed as if it existed: unmapped, why
    assert!(st["peers"][2]["vm"].is_null(), "{st}");
    assert_eq!(st["peers"][2]["mapping"], "no_vm_named", "{st}");
    assert_eq!(
        (&st["servers"], &st["mapped"]),
        (&3.into(), &2.into()),
        "{st}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || (env2
            .log_count("1 server match no VM: ")
            > 0
            && env2.log_count(
                "(VM named \"no-such-vm\"); balanced on their weight (2 of 3 servers mapped)"
            ) > 0)
            .then_some(()))
        .is_some(),
        "{}",
        env2.nginx.error_log()
    );
    // the orphan still gets traffic (weighted mean allocation)
    let served = extra.served();
    env2.send(30);
    assert!(extra.served() > served);
}

/// More background CPU on one VM: after the next samples it gets a smaller
/// share of the requests (paper mode).
#[test]
fn counter_change_moves_the_split() {
    // memory and network report nothing: CPU alone explains the requests
    let mut env = VsEnv::start(VsOpts {
        cpu_mhz: vec![4000, 4000, 4000],
        flat_mem_net: (0, 0),
        dwepc: "mode=paper interval=1s window=8 min_samples=2 ttl=8s".into(),
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    let share = |env: &VsEnv, secs: u64| {
        let before = env.backends[0].served();
        let all: u64 = env.backends.iter().map(|b| b.served()).sum();
        // about 20 requests/s: below the sum of the allocations, where
        // the paper's L = Q·W − V splits by allocation (beyond it, the
        // excess spreads evenly)
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            env.send(1);
            std::thread::sleep(Duration::from_millis(45));
        }
        let all2: u64 = env.backends.iter().map(|b| b.served()).sum();
        (env.backends[0].served() - before) as f64 / (all2 - all) as f64
    };
    let even = share(&env, 4);
    *env.extra_cpu.lock().unwrap() = vec![3800.0, 0.0, 0.0];
    // wait for a sample with the new counters, then measure
    std::thread::sleep(Duration::from_millis(2500));
    let loaded = share(&env, 4);
    let st = env.status();
    assert!(active(&st), "{st}");
    // the new counters reach the allocations: the loaded VM's is far below
    // the others'
    let a: Vec<f64> = (0..3)
        .map(|i| st["peers"][i]["allocation"].as_f64().unwrap())
        .collect();
    assert!(
        a[0] < 0.5 * a[1] && a[0] < 0.5 * a[2],
        "allocations {a:?}\n{st}"
    );
    // and its share of the requests drops (the paper's L spreads requests
    // beyond the allocations evenly, so the drop is partial)
    assert!(
        loaded < even * 0.85,
        "share of the loaded VM: before {even:.3}, after {loaded:.3}\n{st}"
    );
    eprintln!("share of the loaded VM: before {even:.3}, after {loaded:.3}; allocations {a:?}");
    // cpu.ready.summation is kept and shown (10, 20, 30 ms per sample)
    let ready: Vec<f64> = (0..3)
        .map(|i| st["peers"][i]["cpu_ready_pct"].as_f64().unwrap_or(f64::NAN))
        .collect();
    assert!(ready[0] > 0.0, "cpu_ready_pct {ready:?}\n{st}");
    for (k, r) in ready.iter().enumerate() {
        assert!(
            (r / ready[0] - (k + 1) as f64).abs() < 1e-9,
            "cpu_ready_pct {ready:?}\n{st}"
        );
    }
}

/// vcsim disappears: the last window serves until the TTL, then weighted
/// round robin, said once in the log; back when vcsim returns.
#[test]
fn endpoint_down_falls_back_after_ttl_then_recovers() {
    let mut env = VsEnv::start(VsOpts {
        dwepc: "interval=1s window=8 min_samples=2 ttl=8s pick=least_conn".into(),
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    let fallbacks_before = env.log_count("uses weighted round robin");
    env.vcsim.stop();
    let t0 = Instant::now();
    env.drive_until(20, Duration::from_secs(20), "fallback", |st| {
        st["balancing"] == "round_robin"
    });
    let took = t0.elapsed();
    // the newest sample is about a second old when the endpoint stops
    assert!(
        took >= Duration::from_millis(5500),
        "fell back too early: {took:?}"
    );
    // keep serving in fallback for a while: requests succeed, logged once
    for _ in 0..3 {
        env.send(10);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        env.log_count("uses weighted round robin: counters are stale"),
        1,
        "{}",
        env.nginx.error_log()
    );
    assert_eq!(
        env.log_count("cannot connect"),
        1,
        "{}",
        env.nginx.error_log()
    );
    // and no second fallback line while vSphere stays away
    assert_eq!(
        env.log_count("uses weighted round robin"),
        fallbacks_before + 1,
        "{}",
        env.nginx.error_log()
    );
    env.vcsim.restart();
    env.drive_until(40, Duration::from_secs(40), "recovery", active);
    assert!(env.log_count("balances by ESXi counters") >= 2);
}

/// The session expires (vcsim idle timeout / sessions dropped): the
/// collector logs in again and carries on.
#[test]
fn expired_session_logs_in_again() {
    let mut env = VsEnv::start(VsOpts::default());
    env.feed_and_warm_up();
    let logins = env.vcsim.stats()["logins"].as_u64().unwrap();
    env.vcsim.expire_sessions();
    assert!(
        wait_for(Duration::from_secs(10), || (env.vcsim.stats()["logins"]
            .as_u64()
            .unwrap()
            > logins)
            .then_some(()))
        .is_some()
    );
    env.send(10);
    assert!(active(&env.status()));
    assert_eq!(env.vcsim.stats()["sessions"].as_u64(), Some(1));

    // idle timeout shorter than the poll interval: every poll finds the
    // session gone and logs in again, and counters keep flowing
    let mut env = VsEnv::start(VsOpts {
        dwepc: "interval=3s window=8 min_samples=2 ttl=20s pick=least_conn".into(),
        vcsim: Opts {
            refresh_s: 1,
            idle_timeout: Some(Duration::from_millis(1000)),
            ..Opts::default()
        },
        ..VsOpts::default()
    });
    env.start_feeder();
    env.drive_until(
        40,
        Duration::from_secs(60),
        "warm-up with idle timeout",
        active,
    );
    assert!(
        env.vcsim.stats()["logins"].as_u64().unwrap() >= 2,
        "{}",
        env.vcsim.stats()
    );
    assert!(env.log_count("[alert]") == 0 && env.log_count("[crit]") == 0);
}

/// A vCenter that hangs does not delay requests, and a bad answer keeps
/// the last window; each fault is logged once.
#[test]
fn hanging_or_lying_endpoint_never_stalls_requests() {
    let mut env = VsEnv::start(VsOpts::riding_out_faults());
    env.feed_and_warm_up();
    let lat = |env: &VsEnv| {
        let mut v: Vec<Duration> = (0..100)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(http::get(env.port, "/").status, 200);
                t.elapsed()
            })
            .collect();
        v.sort();
        v[98]
    };
    let normal = lat(&env);
    env.vcsim.fault("hang");
    std::thread::sleep(Duration::from_millis(500));
    let hung = lat(&env);
    eprintln!("p99 latency: normal {normal:?}, during hang {hung:?}");
    assert!(
        hung < Duration::from_millis(200),
        "requests delayed by the hang: p99 {hung:?}"
    );
    for (mode, msg) in [
        ("hang", "timed out"),
        ("http500", "HTTP status 500"),
        ("garbage", "bad response"),
        ("notauth", "session not authenticated"),
    ] {
        env.vcsim.fault(mode);
        env.drive_until(20, Duration::from_secs(30), mode, |_| {
            env.log_count(msg) > 0
        });
        // serving on the last good window
        assert!(active(&env.status()), "{mode}: {}", env.status());
    }
    env.vcsim.fault("none");
    env.drive_until(20, Duration::from_secs(30), "healthy again", |st| {
        st["sample_age_ms"].as_u64().is_some_and(|a| a < 3000)
    });
    let log = env.nginx.error_log();
    for msg in [
        "timed out",
        "HTTP status 500",
        "bad response",
        "session not authenticated",
    ] {
        assert_eq!(env.log_count(msg), 1, "{msg}: {log}");
    }
    assert!(env.log_count("polling 3 VMs") >= 2, "{log}");
}

/// With several workers exactly one vSphere session exists; the poller
/// moves to another worker when its worker dies, and carries on with the
/// dead worker's session instead of leaving it open and opening another.
#[test]
fn one_session_for_many_workers_and_takeover() {
    let mut env = VsEnv::start(VsOpts {
        workers: 3,
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    std::thread::sleep(Duration::from_secs(3));
    let st = env.vcsim.stats();
    assert_eq!(st["sessions"].as_u64(), Some(1), "{st}");
    assert_eq!(st["logins"].as_u64(), Some(1), "{st}");
    let holder = env.polling_worker();
    // kill it and another worker hard (kill -9: no logout): a survivor (or
    // a respawned worker) takes over within a few seconds
    let workers = env.nginx.workers();
    assert!(workers.contains(&holder), "{holder} not in {workers:?}");
    let other = *workers.iter().find(|&&w| w != holder).unwrap();
    for w in [holder, other] {
        nginx::signal(w, libc::SIGKILL);
    }
    let q0 = env.vcsim.calls("QueryPerf");
    std::thread::sleep(Duration::from_secs(4));
    env.send(10);
    let q1 = env.vcsim.calls("QueryPerf");
    assert!(q1 > q0, "nobody polls after the holder died");
    // QueryPerf rate stays one per interval: a single poller
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let per_s = (env.vcsim.calls("QueryPerf") - q1) as f64 / t.elapsed().as_secs_f64();
    assert!(per_s < 1.6, "QueryPerf {per_s:.2}/s: more than one poller?");
    // with the dead worker's session: still one session, one login
    let st = env.vcsim.stats();
    assert_eq!(st["sessions"].as_u64(), Some(1), "{st}");
    assert_eq!(st["logins"].as_u64(), Some(1), "{st}");
    assert_eq!(
        env.log_count("reusing the session of the previous polling worker"),
        1,
        "{}",
        env.nginx.error_log()
    );
}

/// The collector thread runs ten nice levels below the worker's event
/// loop (`worker_priority` as set), so its parsing yields to requests.
#[test]
fn the_collector_thread_yields_to_the_event_loop() {
    let env = VsEnv::start(VsOpts {
        main_extra: "worker_priority 3;".into(),
        ..VsOpts::default()
    });
    let worker = wait_for(Duration::from_secs(5), || {
        env.nginx.workers().first().copied()
    })
    .expect("a worker");
    // the event loop is the thread whose id is the process's; the others
    // are the collector and the threads it started (its HTTP client's)
    let below_loop = |threads: &[nginx::Task]| {
        let event_loop = threads.iter().find(|t| t.tid == worker)?.nice;
        let others: Vec<i32> = threads
            .iter()
            .filter(|t| t.tid != worker)
            .map(|t| t.nice)
            .collect();
        let all_below =
            !others.is_empty() && others.iter().all(|&n| n == (event_loop + 10).min(19));
        (all_below && threads.iter().any(|t| t.name == "dwepc-collector")).then_some(event_loop)
    };
    let event_loop = wait_for(Duration::from_secs(5), || below_loop(&nginx::tasks(worker)));
    let threads = nginx::tasks(worker);
    assert!(event_loop.is_some(), "{threads:?}");
    // worker_priority set the event loop's (a test already above nice 3
    // may not be allowed to lower it)
    if own_nice() <= 3 {
        assert_eq!(event_loop, Some(3), "{threads:?}");
    }
}

/// This process's nice value.
fn own_nice() -> i32 {
    nginx::tasks(std::process::id() as i32)
        .iter()
        .find(|t| t.tid == std::process::id() as i32)
        .map_or(0, |t| t.nice)
}

/// Reloads while polling: no hang, old workers exit promptly, no thread
/// leak, sessions are logged out.
#[test]
fn reload_during_polling_does_not_hang_or_leak() {
    let mut env = VsEnv::start(VsOpts {
        workers: 2,
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    let threads_before: usize = env.nginx.workers().iter().map(|p| nginx::threads(*p)).sum();
    for round in 0..3 {
        let old = env.nginx.workers();
        env.nginx.reload(&env.text);
        let gone = wait_for(Duration::from_secs(8), || {
            old.iter()
                .all(|p| {
                    !std::path::Path::new(&format!("/proc/{p}")).exists()
                        || nginx::cmdline(*p).is_empty()
                })
                .then_some(())
        });
        assert!(
            gone.is_some(),
            "round {round}: old workers still alive: {old:?}\n{}",
            env.nginx.error_log()
        );
        env.send(10);
    }
    env.drive_until(40, Duration::from_secs(30), "active after reloads", active);
    let workers = env.nginx.workers();
    assert_eq!(workers.len(), 2);
    let threads_after: usize = workers.iter().map(|p| nginx::threads(*p)).sum();
    assert!(
        threads_after <= threads_before,
        "threads {threads_before} -> {threads_after}"
    );
    let st = env.vcsim.stats();
    assert!(st["sessions"].as_u64().unwrap() <= 1, "{st}");
    assert!(st["logouts"].as_u64().unwrap() >= 1, "{st}");
    let t = Instant::now();
    let took = env.nginx.stop(Duration::from_secs(10));
    assert!(
        took.is_some_and(|d| d < Duration::from_secs(3)),
        "quit took {:?}",
        t.elapsed()
    );
}

/// TLS: verified with the CA file, refused without it, accepted with
/// tls_verify=off. A wrong password is logged once and never shown.
#[test]
fn tls_and_credentials() {
    let tls = Opts {
        refresh_s: 1,
        tls: true,
        ..Opts::default()
    };
    let env = VsEnv::start(VsOpts {
        vcsim: tls.clone(),
        ..VsOpts::default()
    });
    env.drive_until(40, Duration::from_secs(40), "TLS with CA file", |st| {
        st["peers"][0]["capacity"]["cpu"].as_f64().is_some()
    });

    let env = VsEnv::start(VsOpts {
        vcsim: tls.clone(),
        endpoint: "timeout=2s tls_verify=on".into(),
        ..VsOpts::default()
    });
    assert!(
        wait_for(Duration::from_secs(10), || (env
            .log_count("cannot connect")
            > 0)
        .then_some(()))
        .is_some(),
        "{}",
        env.nginx.error_log()
    );
    assert!(env.vcsim.stats()["logins"].as_u64() == Some(0));
    // said in words an operator acts on
    assert!(
        env.nginx.error_log().contains("not trusted: set ca_file="),
        "{}",
        env.nginx.error_log()
    );

    let env = VsEnv::start(VsOpts {
        vcsim: tls,
        endpoint: "timeout=2s tls_verify=off".into(),
        ..VsOpts::default()
    });
    env.drive_until(40, Duration::from_secs(40), "TLS unverified", |st| {
        st["peers"][0]["capacity"]["cpu"].as_f64().is_some()
    });

    let secret = "Sup3r-S3cret-Passw0rd";
    let env = VsEnv::start(VsOpts {
        password: Some(secret.into()),
        ..VsOpts::default()
    });
    assert!(
        wait_for(Duration::from_secs(10), || (env.log_count("login failed")
            > 0)
        .then_some(()))
        .is_some(),
        "{}",
        env.nginx.error_log()
    );
    std::thread::sleep(Duration::from_secs(3));
    env.send(5);
    assert_eq!(
        env.log_count("login failed"),
        1,
        "{}",
        env.nginx.error_log()
    );
    // a refused login is not retried at the ordinary backoff (vCenter
    // would lock the account): one try in these seconds
    assert_eq!(
        env.vcsim.stats()["calls"]["Login"],
        1,
        "{}",
        env.vcsim.stats()
    );
    assert_eq!(
        env.log_count("login refused for user: check user= and password_file="),
        1
    );
    assert!(!env.nginx.error_log().contains(secret));
    assert!(!http::get(env.port, "/dwepc").body.contains(secret));
    assert_eq!(env.status()["balancing"], "round_robin");
}

/// A refused login holds the next one back for minutes, but only for the
/// credentials that were refused: the operator fixes the password file
/// and reloads, and the new workers log in at once (the wait lives in
/// the lease zone, which outlives the reload).
#[test]
fn a_fixed_password_file_is_tried_at_once_after_reload() {
    let env = VsEnv::start(VsOpts {
        password: Some("wrong-password".into()),
        ..VsOpts::default()
    });
    assert!(
        env.wait_for_log("login refused for user", Duration::from_secs(10)),
        "{}",
        env.nginx.error_log()
    );
    // the same wrong password again after a reload: still held back
    env.nginx.reload(&env.text);
    std::thread::sleep(Duration::from_secs(4));
    env.send(3);
    assert_eq!(
        env.vcsim.stats()["calls"]["Login"],
        1,
        "{}",
        env.vcsim.stats()
    );
    // the password file fixed, then a reload: one login, counters drive
    common::setup::password_file(&env.vcsim.dir, "pass");
    env.nginx.reload(&env.text);
    let t = Instant::now();
    env.drive_until(40, Duration::from_secs(20), "login after the fix", |st| {
        st["peers"][0]["capacity"]["cpu"].as_f64().is_some()
    });
    eprintln!(
        "the inventory is read {:.1} s after the reload with the fixed password file",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(
        env.vcsim.stats()["calls"]["Login"],
        2,
        "{}",
        env.vcsim.stats()
    );
}

/// `scope=` limits the inventory to the VMs under one folder, cluster or
/// resource pool: a VM outside it is not read (its server is unmapped,
/// said once), a scope that names nothing is said once and the upstream
/// balances without counters.
#[test]
fn scope_limits_the_inventory_to_a_folder_cluster_or_pool() {
    let in_tier = |i: usize| (common::vsenv::vm_name(i), "tier".to_string());
    for (scope, vms, mapped) in [
        ("DC0/vm/tier", 2, 2),
        ("DC0/host/DC0_C0", 3, 3),
        ("DC0/host/DC0_C0/Resources/", 3, 3),
    ] {
        let env = VsEnv::start(VsOpts {
            endpoint: format!("timeout=2s scope={scope}"),
            vcsim: Opts {
                refresh_s: 1,
                vm_folders: vec![in_tier(0), in_tier(1)],
                ..Opts::default()
            },
            ..VsOpts::default()
        });
        env.drive_until(40, Duration::from_secs(20), scope, |st| {
            st["peers"][0]["capacity"]["cpu"].as_f64().is_some()
        });
        let want = format!("polling {mapped} VMs for {mapped} of 3 servers every 1000 ms (refresh 1 s; {vms} VMs in the inventory)");
        // the line follows the first good poll, which the status page
        // may show a moment before it is written
        let said = env.wait_for_log(&want, Duration::from_secs(10));
        assert!(said, "{scope}: {}", env.nginx.error_log());
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            env.log_count(&want),
            1,
            "{scope}: {}",
            env.nginx.error_log()
        );
        assert_eq!(env.status()["mapped"], mapped, "{scope}");
        let unmatched = env.log_count("1 server match no VM");
        assert_eq!(unmatched, usize::from(mapped == 2), "{scope}");
    }
    let env = VsEnv::start(VsOpts {
        endpoint: "timeout=2s scope=DC0/vm/nowhere".into(),
        ..VsOpts::default()
    });
    let said = "scope \"DC0/vm/nowhere\" names nothing in the inventory";
    assert!(
        env.wait_for_log(said, Duration::from_secs(10)),
        "{}",
        env.nginx.error_log()
    );
    std::thread::sleep(Duration::from_secs(3));
    env.send(5);
    assert_eq!(env.log_count(said), 1, "{}", env.nginx.error_log());
    assert!(env.nginx.error_log().contains("[error]"));
    assert_eq!(env.status()["reason"], "vsphere_error");
}

/// Calls per tick in steady state: one QueryPerf per interval and nothing
/// else (the number goes into the closing note).
#[test]
fn steady_state_calls_per_tick() {
    let mut env = VsEnv::start(VsOpts::default());
    env.feed_and_warm_up();
    std::thread::sleep(Duration::from_secs(2));
    let s0 = env.vcsim.stats();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        env.send(5);
        std::thread::sleep(Duration::from_millis(50));
    }
    let s1 = env.vcsim.stats();
    let secs = t.elapsed().as_secs_f64();
    let mut per_tick = Vec::new();
    for (m, v) in s1["calls"].as_object().unwrap() {
        let d = v.as_u64().unwrap() - s0["calls"][m].as_u64().unwrap_or(0);
        if d > 0 {
            per_tick.push(format!("{m}={:.2}/tick", d as f64 / secs));
        }
    }
    eprintln!(
        "vSphere calls per 1 s tick over {secs:.1} s: {}",
        per_tick.join(" ")
    );
    let qp =
        s1["calls"]["QueryPerf"].as_u64().unwrap() - s0["calls"]["QueryPerf"].as_u64().unwrap();
    assert!((qp as f64 / secs - 1.0).abs() < 0.25, "{per_tick:?}");
    assert_eq!(
        per_tick.len(),
        1,
        "only QueryPerf in steady state: {per_tick:?}"
    );
}

/// A VM resized while it runs (a CPU hot-add, 2 -> 4 vCPUs): its samples
/// (`cpu.usagemhz` over `cpu.usage`) show the new size before the 5-minute
/// inventory read would, the inventory is read again, the server's capacity
/// follows, and that is said once; no further inventory read follows (the
/// steady test above shows none without a resize).
#[test]
fn resized_vm_is_seen_from_its_samples() {
    let mut env = VsEnv::start(VsOpts::default());
    env.start_feeder();
    *env.extra_cpu.lock().unwrap() = vec![1000.0; 3];
    env.drive_until(40, Duration::from_secs(40), "warm-up", active);
    let cpu = |st: &serde_json::Value, i: usize| {
        st["peers"][i]["capacity"]["cpu"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let st = env.status();
    let before: Vec<f64> = (0..3).map(|i| cpu(&st, i)).collect();
    assert!(before.iter().all(|c| *c > 0.0), "{st}");
    env.vcsim.resize("web-0", 4, 8000).unwrap();
    env.cpu_size.lock().unwrap()[0] = 8000.0;
    let t = Instant::now();
    env.drive_until(20, Duration::from_secs(20), "resize seen", |st| {
        cpu(st, 0) > 1.5 * before[0]
    });
    let took = t.elapsed();
    let st = env.status();
    assert!((cpu(&st, 0) / before[0] - 2.0).abs() < 0.01, "{st}");
    assert_eq!((cpu(&st, 1), cpu(&st, 2)), (before[1], before[2]), "{st}");
    // five more polls (1-s interval) at the new size: no inventory read
    let reads = env.vcsim.calls("RetrievePropertiesEx");
    assert!(reads > 0, "{}", env.vcsim.stats());
    let more = Instant::now();
    while more.elapsed() < Duration::from_secs(5) {
        env.send(4);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(env.vcsim.calls("RetrievePropertiesEx"), reads);
    assert_eq!(
        env.log_count(r#"VM "web-0" changed size"#),
        1,
        "{}",
        env.nginx.error_log()
    );
    eprintln!("capacity {} -> {} MHz in {took:?}", before[0], cpu(&st, 0));
}

/// Shares mode (the default): background CPU on one VM lowers its share;
/// with the sample frozen, requests sent one at a time (nothing in flight,
/// so every peer ties) split by smooth weighted round robin on the
/// published shares, as nginx's least_conn breaks ties on weights.
#[test]
fn shares_follow_counters_and_ties_split_by_share() {
    let mut env = VsEnv::start(VsOpts {
        cpu_mhz: vec![4000, 4000, 4000],
        flat_mem_net: (0, 0),
        dwepc: "interval=1s window=4 step=0.5 ttl=10m pick=least_conn".into(),
        ..VsOpts::default()
    });
    env.start_feeder();
    *env.extra_cpu.lock().unwrap() = vec![2000.0, 0.0, 0.0];
    env.drive_until(40, Duration::from_secs(40), "warm-up", active);
    let shares = |st: &serde_json::Value| -> Vec<f64> {
        (0..3)
            .map(|i| st["peers"][i]["share"].as_f64().unwrap_or(f64::NAN))
            .collect()
    };
    // a few samples with traffic: the loaded VM's share drops below the others'
    env.drive_until(40, Duration::from_secs(20), "background seen", |st| {
        let s = shares(st);
        active(st) && s[0] < 0.6 * s[1] && s[0] < 0.6 * s[2]
    });
    env.stop_feeder();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(env.vcsim.counters_path()).unwrap()).unwrap();
    c["_time"] = serde_json::Value::String(common::now_rfc3339());
    env.vcsim.set_counters(&c);
    let st = wait_for(Duration::from_secs(10), || {
        let st = env.status();
        let age = st["sample_age_ms"].as_u64()?;
        (age > 1500 && active(&st)).then_some(st)
    })
    .expect("frozen sample not applied");
    let s = shares(&st);
    assert!((s.iter().sum::<f64>() - 1.0).abs() < 1e-5, "{st}");
    // the model says why: background on web-0, a cost per request of CPU
    assert!(
        st["peers"][0]["background"]["cpu"].as_f64().unwrap() > 1000.0,
        "{st}"
    );
    assert!(st["cost"]["cpu"].as_f64().unwrap() > 0.0, "{st}");
    let n = 120;
    let got = env.send(n);
    for (i, b) in env.backends.iter().enumerate() {
        let real = got.iter().filter(|x| **x == b.id).count() as f64;
        assert!(
            (real - n as f64 * s[i]).abs() <= 2.0,
            "peer {i}: got {real} of {n}, shares {s:?}\n{st}"
        );
    }
    assert_eq!(env.status()["peers"][0]["in_flight"], 0);
}

/// The overload guard: every peer at its in-flight limit (`inflight` per
/// vCPU, spread by share, at least what the VM itself holds) is answered
/// at once instead of queued: 503 with `Retry-After` by default, counted
/// on the status page, and told apart from a backend's failure in the
/// access log by `$dwepc_decision`; `overload_status=` chooses another
/// status.
#[test]
fn overload_guard_answers_at_once() {
    for (params, status, retry_after) in [
        ("", 503, Some("1")),
        (" overload_status=429 retry_after=5s", 429, Some("5")),
        (" overload_status=502 retry_after=off", 502, None),
    ] {
        let mut env = VsEnv::start(VsOpts {
            n: 2,
            cpu_mhz: vec![4000, 4000],
            dwepc: format!(
                "interval=1s window=4 step=0.5 ttl=10m inflight=1 pick=least_conn{params}"
            ),
            http_extra: "log_format dw '$status $dwepc_decision $dwepc_share $upstream_addr';\n"
                .into(),
            server_extra: "access_log logs/dw.log dw;".into(),
            ..VsOpts::default()
        });
        env.feed_and_warm_up();
        let st = env.status();
        // 2 VMs x 2 vCPUs x 1 per vCPU: by share, or what each VM holds
        let limits: Vec<u64> = (0..2)
            .map(|i| st["peers"][i]["limit"].as_u64().unwrap())
            .collect();
        let limit = limits.iter().sum::<u64>() as usize;
        assert!((4..=5).contains(&limit), "{st}");
        let port = env.port;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..8)
            .map(|k| {
                std::thread::spawn(move || {
                    // stagger so the slow ones are in flight first
                    std::thread::sleep(Duration::from_millis(50 * k));
                    let t = Instant::now();
                    (http::get(port, "/?delay=2000"), t.elapsed())
                })
            })
            .collect();
        let res: Vec<(http::Response, Duration)> =
            hs.into_iter().map(|h| h.join().unwrap()).collect();
        let codes: Vec<u16> = res.iter().map(|r| r.0.status).collect();
        let ok = codes.iter().filter(|&&c| c == 200).count();
        let rejected: Vec<&(http::Response, Duration)> =
            res.iter().filter(|r| r.0.status == status).collect();
        assert_eq!(
            (ok, rejected.len()),
            (limit, 8 - limit),
            "{params}: {codes:?}"
        );
        for r in &rejected {
            assert!(r.1 < Duration::from_millis(500), "not at once: {codes:?}");
            assert_eq!(r.0.header("Retry-After"), retry_after, "{params}");
            // a replaced answer closes the connection, and says so
            if status != 502 {
                assert_eq!(r.0.header("Connection"), Some("close"), "{params}");
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(4));
        let st = env.status();
        assert_eq!(st["guard_rejections"], 8 - limit as u64, "{st}");
        assert!(env.nginx.error_log().contains("no live upstreams"));
        // the access log tells the guard's answers from the picks
        let log = std::fs::read_to_string(env.nginx.prefix.join("logs/dw.log")).unwrap();
        let guard = format!("{status} guard - ");
        assert_eq!(
            log.lines().filter(|l| l.starts_with(&guard)).count(),
            8 - limit,
            "{log}"
        );
        let picked = log
            .lines()
            .filter(|l| l.starts_with("200 counters 0.") && l.contains("127.0.0.1:"))
            .count();
        assert!(picked >= limit, "{log}");
        // after a guard answer the next request is served as usual
        env.stop_feeder();
        assert_eq!(http::get(port, "/").status, 200);
    }
}

/// The guard's answer under the location's own error pages: with an
/// `error_page 502` (as many configurations have for every 5xx) the page
/// stays and the status becomes `overload_status`, with `Retry-After`;
/// with an `error_page 503` that page answers the guard. The access log
/// still says `guard` after the redirect.
#[test]
fn overload_guard_answer_under_error_pages() {
    for (pages, body) in [
        ("error_page 500 502 503 504 /50x.html;", "sorry page"),
        ("error_page 503 /busy.html;", "busy page"),
    ] {
        let mut env = VsEnv::start(VsOpts {
            n: 2,
            cpu_mhz: vec![4000, 4000],
            dwepc: "interval=1s window=4 step=0.5 ttl=10m inflight=1 pick=least_conn".into(),
            http_extra: "log_format dw '$status $dwepc_decision';\n".into(),
            server_extra: format!(
                "access_log logs/dw.log dw;\n{pages}\n\
                 location = /50x.html {{ return 200 \"sorry page\\n\"; }}\n\
                 location = /busy.html {{ return 200 \"busy page\\n\"; }}"
            ),
            ..VsOpts::default()
        });
        env.feed_and_warm_up();
        let port = env.port;
        let hs: Vec<_> = (0..8)
            .map(|k| {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(50 * k));
                    http::get(port, "/?delay=2000")
                })
            })
            .collect();
        let res: Vec<http::Response> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let guarded: Vec<&http::Response> = res.iter().filter(|r| r.status != 200).collect();
        assert!(!guarded.is_empty(), "{pages}");
        for r in &guarded {
            assert_eq!(r.status, 503, "{pages}: {}", r.body);
            assert_eq!(r.body, format!("{body}\n"), "{pages}");
            assert_eq!(r.header("Retry-After"), Some("1"), "{pages}");
        }
        let log = std::fs::read_to_string(env.nginx.prefix.join("logs/dw.log")).unwrap();
        let n = log.lines().filter(|l| *l == "503 guard").count();
        assert_eq!(n, guarded.len(), "{pages}: {log}");
    }
}

/// A subrequest the guard turns away (here a `mirror`) keeps nginx's
/// 502, which its parent ignores: replacing a subrequest's answer would
/// end the client's whole request.
#[test]
fn a_guarded_subrequest_leaves_its_parent_alone() {
    let direct = common::backend::Backend::start("direct");
    let mut env = VsEnv::start(VsOpts {
        n: 2,
        cpu_mhz: vec![4000, 4000],
        dwepc: "interval=1s window=4 step=0.5 ttl=10m inflight=1 pick=least_conn".into(),
        server_extra: format!(
            "location = /mirrored {{ mirror /m; proxy_pass http://{}/; }}\n\
             location = /m {{ internal; proxy_pass http://app/?delay=2000; }}",
            direct.addr()
        ),
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    let port = env.port;
    let hs: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http::get(port, "/?delay=2000").status))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = env.status()["guard_rejections"].as_u64().unwrap_or(0);
    // every server is at its limit now: the mirror is turned away, the
    // request itself is answered by the direct backend
    let r = http::get(port, "/mirrored");
    assert_eq!(r.status, 200, "{}", env.nginx.error_log());
    let codes: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.contains(&503), "{codes:?}");
    assert!(env.status()["guard_rejections"].as_u64().unwrap_or(0) > before);
}

/// Observe mode: counters, shares and limits are computed and shown, but
/// nginx's least_conn picks (here: an even split of sequential requests
/// and no overload guard, while the shares are unequal); the status page
/// shows the share dwepc would give next to the share each server got.
#[test]
fn observe_mode_computes_everything_and_lets_least_conn_pick() {
    let mut env = VsEnv::start(VsOpts {
        n: 2,
        cpu_mhz: vec![2000, 8000],
        dwepc: "interval=1s window=4 step=1 ttl=10m inflight=1 observe=on".into(),
        http_extra: "log_format dw '$status $dwepc_decision';\n".into(),
        server_extra: "access_log logs/dw.log dw;".into(),
        ..VsOpts::default()
    });
    env.start_feeder();
    env.drive_until(40, Duration::from_secs(40), "observing", |st| {
        st["reason"] == "active" && st["peers"][0]["got_share"].as_f64().is_some()
    });
    let st = env.status();
    assert_eq!(
        (&st["balancing"], &st["observe"]),
        (&"least_conn".into(), &"least_conn".into()),
        "{st}"
    );
    let shares: Vec<f64> = (0..2)
        .map(|i| st["peers"][i]["share"].as_f64().unwrap())
        .collect();
    assert!(
        shares[1] > 2.0 * shares[0],
        "dwepc would favour the big VM: {st}"
    );
    // sequential requests: least_conn's ties go round robin on weight=
    let ids = env.send(40);
    let b0 = ids.iter().filter(|b| *b == "b0").count();
    assert!((18..=22).contains(&b0), "{b0} of 40 to b0");
    // the share each got, over a sample period, next to dwepc's
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        env.send(4);
        std::thread::sleep(Duration::from_millis(50));
    }
    let st = env.status();
    let got: Vec<f64> = (0..2)
        .map(|i| st["peers"][i]["got_share"].as_f64().unwrap_or(-1.0))
        .collect();
    assert!(got.iter().all(|g| (0.3..=0.7).contains(g)), "{got:?} {st}");
    // no overload guard: 8 slow requests at once all get through
    env.stop_feeder();
    let port = env.port;
    let hs: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || http::get(port, "/?delay=500").status))
        .collect();
    let codes: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    assert_eq!(env.status()["guard_rejections"], 0);
    let log = std::fs::read_to_string(env.nginx.prefix.join("logs/dw.log")).unwrap();
    assert!(log.lines().any(|l| l == "200 observe"), "{log}");
    assert!(!log.lines().any(|l| l.contains("counters")), "{log}");
    assert_eq!(
        env.log_count("observes (nginx's least_conn picks): counters would drive the pick"),
        1,
        "{}",
        env.nginx.error_log()
    );
}

/// A vCenter that answers without end, with a 200 MB body, or with
/// 2,000,000 empty elements costs the polling worker a bounded amount of
/// memory: the call fails as "too large", once logged, and the last
/// window keeps serving. Prints the figures (BENCHMARKS.md, reliability).
#[test]
fn hostile_answers_are_bounded_in_the_polling_worker() {
    let mut env = VsEnv::start(VsOpts::riding_out_faults());
    env.feed_and_warm_up();
    let worker = env.nginx.workers()[0];
    let base = rss_kb(worker);
    for mode in ["flood", "huge", "elements"] {
        env.vcsim.fault(mode);
        let t = Instant::now();
        let mut peak = 0;
        while t.elapsed() < Duration::from_secs(8) {
            peak = peak.max(rss_kb(worker));
            env.send(2);
            std::thread::sleep(Duration::from_millis(50));
        }
        let calls = env.vcsim.stats()["calls"]["QueryPerf"].clone();
        eprintln!(
            "hostile {mode}: polling worker RSS {base} KB before, peak {peak} KB (+{} KB); QueryPerf calls so far {calls}",
            peak.saturating_sub(base)
        );
        assert!(
            peak < base + 32 * 1024,
            "{mode}: RSS grew from {base} KB to {peak} KB"
        );
        assert!(active(&env.status()), "{mode}: {}", env.status());
        env.vcsim.fault("none");
        env.drive_until(20, Duration::from_secs(30), "healthy again", |st| {
            st["sample_age_ms"].as_u64().is_some_and(|a| a < 3000)
        });
    }
    let log = env.nginx.error_log();
    assert!(
        env.log_count("is larger than it can legitimately be") >= 3,
        "{log}"
    );
    // after the faults, memory comes back near where it was
    let after = rss_kb(worker);
    eprintln!("hostile: polling worker RSS after the faults {after} KB (before {base} KB)");
    assert!(after < base + 16 * 1024, "RSS {base} KB -> {after} KB");
}

/// `?format=prometheus`: the text exposition of a live upstream, with the
/// endpoint's calls and logins from the lease zone.
#[test]
fn prometheus_exposition_of_a_live_upstream() {
    let mut env = VsEnv::start(VsOpts::default());
    env.feed_and_warm_up();
    env.send(20);
    let resp = http::get(env.port, "/dwepc?format=prometheus");
    assert_eq!(resp.status, 200);
    let ct = resp
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = resp.body;
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{prefix} not in:\n{text}"))
    };
    assert_eq!(
        value("dwepc_upstream_counters_in_use{upstream=\"app\"}"),
        1.0
    );
    assert_eq!(
        value("dwepc_upstream_reason{upstream=\"app\",reason=\"active\"}"),
        1.0
    );
    assert_eq!(
        value("dwepc_upstream_mapped_servers{upstream=\"app\"}"),
        3.0
    );
    let sent: f64 = text
        .lines()
        .filter(|l| l.starts_with("dwepc_peer_requests_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let json = env.status();
    let json_sent: u64 = json["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert!(
        sent > 0.0 && sent <= json_sent as f64,
        "{sent} vs {json_sent}"
    );
    assert!(value("dwepc_endpoint_calls_total{endpoint=\"vc\",source=\"vsphere\"}") > 3.0);
    assert_eq!(
        value("dwepc_endpoint_logins_total{endpoint=\"vc\",source=\"vsphere\"}"),
        1.0
    );
    let last =
        value("dwepc_endpoint_last_success_timestamp_seconds{endpoint=\"vc\",source=\"vsphere\"}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last).abs() < 10.0, "{last} vs {now}");
    // each mapped VM's newest sample as a fraction of its capacity
    let cpu: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.starts_with("dwepc_peer_utilization_ratio{") && l.contains("resource=\"cpu\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .collect();
    assert_eq!(cpu.len(), 3, "{text}");
    assert!(cpu.iter().all(|u| (0.0..=1.5).contains(u)), "{cpu:?}");
    assert!(cpu.iter().any(|&u| u > 0.0), "{cpu:?}");
    // one upstream by name works in this format too
    let one = http::get(env.port, "/dwepc?format=prometheus&upstream=app");
    assert!(
        one.body.contains("dwepc_peer_requests_total"),
        "{}",
        one.body
    );

    // Prometheus' own linter accepts the exposition
    let (ok, said) = prom::promtool_check(&text);
    assert!(ok, "promtool check metrics:\n{said}\n{text}");

    // and a real Prometheus server scrapes it: the scrape succeeds (up=1,
    // which needs the whole page to parse) and the servers' request
    // counters can be queried through its HTTP API, as sent
    let p = prom::Prometheus::start(env.port, "/dwepc");
    let series = wait_for(Duration::from_secs(30), || {
        let up = p.query("up{job=\"dwepc\"}");
        let reqs = p.query("dwepc_peer_requests_total{upstream=\"app\"}");
        (up.first().map(|x| x.1) == Some(1.0) && reqs.len() == 3).then_some(reqs)
    })
    .unwrap_or_else(|| {
        panic!(
            "no dwepc series in Prometheus: up={:?}\n{}",
            p.query("up"),
            p.log()
        )
    });
    let scraped: f64 = series.iter().map(|x| x.1).sum();
    assert!(scraped >= sent, "{scraped} vs {sent}");
    assert!(
        series
            .iter()
            .all(|(m, _)| m["server"].is_string() && m["peer"].is_string()),
        "{series:?}"
    );
}

/// An upstream of more VMs than one inventory page and one QueryPerf batch
/// hold (300: six pages of 50, two batches of 250 and 50; kept small, as
/// the suite runs two tests at once): the launcher pages as vCenter does,
/// the collector follows the tokens, every server is found by guest IP,
/// and each poll queries every VM in batches.
#[test]
fn a_large_inventory_is_paged_and_queried_in_batches() {
    const N: usize = 300;
    let ip = |i: usize| format!("127.1.{}.{}", i / 250, i % 250 + 1);
    let vms: Vec<common::vcsim::VmSpec> = (0..N)
        .map(|i| common::vcsim::VmSpec::new(&format!("s{i}"), Some(&ip(i)), 2, 4000, 2048))
        .collect();
    let (vc, pw) = dwepc_lab::overhead::vcsim_with_load(&vms, |i| 500 + i as u64 % 7 * 100);
    let pw = pw.display();
    // no backend listens: the test reads the mapping and the calls only
    let bport = common::free_port();
    let servers: String = (0..N)
        .map(|i| format!("server {}:{bport};\n", ip(i)))
        .collect();
    let port = common::free_port();
    let text = nginx::conf(
        "worker_processes 1;",
        &format!(
            "dwepc_vsphere vc url={} user=user password_file={pw} timeout=2s insecure_http=on;\n\
             upstream app {{ dwepc interval=3s choices=2;\n{servers} }}\n\
             server {{ listen 127.0.0.1:{port}; location = /dwepc {{ dwepc_status; }} }}",
            vc.url
        ),
    );
    let mut ng = nginx::Nginx::start(&text, port);
    let upstream = || {
        let page = http::request(port, "GET", "/dwepc").ok()?;
        let doc: serde_json::Value = serde_json::from_str(&page.body).ok()?;
        Some(doc["upstreams"][0].clone())
    };
    // mapped, with samples (no traffic is sent: the pick waits for it)
    let st = wait_for(Duration::from_secs(60), || {
        upstream().filter(|u| u["mapped"] == N && u["reason"] == "no_traffic")
    })
    .unwrap_or_else(|| {
        let u = upstream().unwrap_or_default();
        panic!(
            "mapped {} reason {}\n{}",
            u["mapped"],
            u["reason"],
            ng.error_log()
        )
    });
    assert_eq!(st["servers"], N);
    assert_eq!(st["peers"][N - 1]["vm"], format!("s{}", N - 1));
    let calls = |m: &str| vc.calls(m);
    // the inventory read: a RetrievePropertiesEx and five continuations
    // (the other RetrievePropertiesEx, the counter catalog, is one page)
    let more = calls("ContinueRetrievePropertiesEx");
    assert!(more >= 5 && more % 5 == 0, "{}", vc.stats());
    // every poll: two QueryPerf calls (250 + 50 VMs), counted
    // between polls (the count still for half a second)
    let between_polls = || {
        wait_for(Duration::from_secs(10), || {
            let q = calls("QueryPerf");
            std::thread::sleep(Duration::from_millis(500));
            (calls("QueryPerf") == q).then_some(q)
        })
        .expect("a pause between polls")
    };
    let q0 = between_polls();
    std::thread::sleep(Duration::from_secs(7));
    let q1 = between_polls();
    // (at least two polls in 7 s at interval=3s: one call per poll would
    // be two or three calls)
    assert!(q1 - q0 >= 4 && (q1 - q0) % 2 == 0, "QueryPerf {q0} -> {q1}");
    assert!(!ng.error_log().contains("[error]"), "{}", ng.error_log());
    ng.stop(Duration::from_secs(10));
}
