//! The Prometheus counter source through the real chain an operator runs:
//! the vCenter simulator → vmware_exporter (PyPI, pinned, in the virtual
//! environment scripts/install-exporter.sh makes) → Debian's Prometheus →
//! nginx with `dwepc_prometheus`; then the same upstream through a
//! Prometheus restart.

mod common;
use common::vsenv::{active, rss_kb, VsEnv, VsOpts};
use common::{http, wait_for};
use dwepc_lab::pipeline::Fault;
use std::time::{Duration, Instant};

fn shares(st: &serde_json::Value) -> Vec<f64> {
    (0..3)
        .map(|i| st["peers"][i]["share"].as_f64().unwrap_or(f64::NAN))
        .collect()
}

fn chain() -> VsEnv {
    VsEnv::start(VsOpts {
        // the simulator's samples are 1 s long and stamped when scraped
        via_prometheus: Some("period=1s lag=0s timeout=2s".into()),
        ..VsOpts::default()
    })
}

#[test]
fn shares_follow_the_counters_through_vmware_exporter_and_prometheus() {
    let mut env = chain();
    env.feed_and_warm_up();
    let st = env.status();
    for i in 0..3 {
        assert_eq!(st["peers"][i]["mapping"], "mapped", "{st}");
        // the VM's size comes from the exporter's vmware_vm_max_cpu_usage
        assert_eq!(st["peers"][i]["capacity"]["cpu"], 4000.0, "{st}");
    }
    // a batch job on the first VM: its share falls well below the others'
    *env.extra_cpu.lock().unwrap() = vec![3000.0, 0.0, 0.0];
    env.drive_until(
        20,
        Duration::from_secs(60),
        "the loaded VM's share falls",
        |st| {
            let s = shares(st);
            active(st) && s[0] < 0.6 * s[1] && s[0] < 0.6 * s[2]
        },
    );
    // and rises again when the job ends
    *env.extra_cpu.lock().unwrap() = vec![0.0, 0.0, 0.0];
    env.drive_until(20, Duration::from_secs(60), "the share comes back", |st| {
        let s = shares(st);
        active(st) && s[0] > 0.8 * s[1]
    });
    // nginx never spoke to vSphere: only Prometheus, as the log and both
    // pages say
    let log = env.nginx.error_log();
    assert!(
        log.contains("dwepc: Prometheus \"prom\" (http://127.0.0.1:")
            && log.contains(": polling 3 VMs for 3 of 3 servers"),
        "{log}"
    );
    assert!(!log.contains("match no VM"), "{log}");
    assert!(!log.contains("dwepc: vSphere"), "{log}");
    let doc: serde_json::Value = serde_json::from_str(&http::get(env.port, "/dwepc").body).unwrap();
    let ep = &doc["endpoints"][0];
    assert_eq!(ep["name"], "prom", "{doc}");
    assert_eq!(ep["source"], "prometheus", "{doc}");
    assert!(ep["calls"].as_u64().unwrap() > 10, "{doc}");
    // (the last whole wall-clock minute: none yet if the test began in it)
    assert!(ep["calls_last_minute"].as_u64().unwrap() <= ep["calls"].as_u64().unwrap());
    assert!(ep["answer_bytes"].as_u64().unwrap() > 1000, "{doc}");
    assert!(ep["answer_ms_mean"].as_f64().unwrap() > 0.0, "{doc}");
    let text = http::get(env.port, "/dwepc?format=prometheus").body;
    assert!(
        text.contains("dwepc_endpoint_calls_total{endpoint=\"prom\",source=\"prometheus\"}"),
        "{text}"
    );
}

#[test]
fn the_upstream_keeps_balancing_through_a_prometheus_restart() {
    let mut env = chain();
    env.feed_and_warm_up();
    let calls_before = |env: &VsEnv| -> u64 {
        let doc: serde_json::Value =
            serde_json::from_str(&http::get(env.port, "/dwepc").body).unwrap();
        doc["endpoints"][0]["errors"]
            .as_object()
            .map_or(0, |e| e.values().filter_map(|v| v.as_u64()).sum())
    };
    let errors_before = calls_before(&env);
    // stopped for a few seconds (shorter than ttl=8s), then started again
    // on the same port and data: every request is answered meanwhile
    let prom = env.prometheus.as_mut().unwrap();
    prom.stop();
    let start = std::time::Instant::now();
    let mut answered = 0;
    while start.elapsed() < Duration::from_secs(4) {
        let r = http::get(env.port, "/");
        assert_eq!(r.status, 200, "{}", r.body);
        answered += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(env.wait_for_log(
        "dwepc: Prometheus \"prom\" (http://127.0.0.1:",
        Duration::from_secs(5)
    ));
    env.prometheus.as_mut().unwrap().restart();
    // new samples arrive and counters keep driving the pick
    let fresh = wait_for(Duration::from_secs(30), || {
        let _ = http::get(env.port, "/");
        let st = env.status();
        (active(&st) && st["sample_age_ms"].as_u64().is_some_and(|a| a < 3000)).then_some(st)
    });
    assert!(
        fresh.is_some(),
        "{}\n{}",
        env.status(),
        env.nginx.error_log()
    );
    assert!(calls_before(&env) > errors_before, "the outage was counted");
    let log = env.nginx.error_log();
    // the outage said once, the recovery said
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("[error]") && l.contains("Prometheus \"prom\""))
            .count(),
        1,
        "{log}"
    );
    assert!(answered > 20);
}

/// A hostile or broken Prometheus (an answer without end, one announcing
/// 300 MB, no answer, JSON that breaks off, NaN or negative values, every
/// series gone) never stalls a request and costs the polling worker a
/// bounded amount of memory (the vSphere client's limit: 32 MB); the
/// last window serves until the TTL, each fault is said in the log, and
/// the upstream comes back when the server does. Prints the figures.
#[test]
fn a_hostile_prometheus_never_stalls_a_request_or_grows_the_worker() {
    let mut env = VsEnv::start(VsOpts {
        via_prometheus: Some("period=1s lag=0s timeout=2s".into()),
        prometheus_faults: true,
        dwepc: "interval=1s window=8 min_samples=2 ttl=120s pick=least_conn".into(),
        ..VsOpts::default()
    });
    env.feed_and_warm_up();
    let worker = env.nginx.workers()[0];
    let base = rss_kb(worker);
    for f in [
        Fault::Endless,
        Fault::Huge,
        Fault::Hang,
        Fault::Malformed,
        Fault::NaN,
        Fault::Negative,
        Fault::Vanished,
    ] {
        env.faults.as_ref().unwrap().set(f);
        let t = Instant::now();
        let mut peak = 0;
        let mut slowest = Duration::ZERO;
        while t.elapsed() < Duration::from_secs(6) {
            peak = peak.max(rss_kb(worker));
            let s = Instant::now();
            let r = http::get(env.port, "/");
            slowest = slowest.max(s.elapsed());
            assert_eq!(r.status, 200, "{f:?}: {}", r.body);
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "hostile Prometheus {f:?}: polling worker RSS {base} KB before, peak {peak} KB (+{} KB); slowest request {slowest:?}",
            peak.saturating_sub(base)
        );
        assert!(peak < base + 32 * 1024, "{f:?}: RSS {base} KB -> {peak} KB");
        assert!(
            slowest < Duration::from_millis(500),
            "{f:?}: a request took {slowest:?}"
        );
        // the last window serves (ttl=120s)
        assert!(active(&env.status()), "{f:?}: {}", env.status());
        env.faults.as_ref().unwrap().set(Fault::None);
        env.drive_until(20, Duration::from_secs(40), "healthy again", |st| {
            active(st) && st["sample_age_ms"].as_u64().is_some_and(|a| a < 3000)
        });
    }
    let log = env.nginx.error_log();
    for said in [
        "is larger than it can legitimately be",
        "timed out",
        "bad response",
        "a counter sample without a value for any server",
        "counter samples have values again",
    ] {
        assert!(log.contains(said), "{said}:\n{log}");
    }
    let after = rss_kb(worker);
    eprintln!(
        "hostile Prometheus: polling worker RSS after the faults {after} KB (before {base} KB)"
    );
    assert!(after < base + 16 * 1024, "RSS {base} KB -> {after} KB");
}

/// Sizes come from the exporter, so a Prometheus endpoint whose profile
/// has no guest IP label cannot find a server by its address: `nginx -t`
/// says so with the file and line.
#[test]
fn a_server_without_vm_on_a_profile_without_ip_label_is_refused() {
    let text = common::nginx::conf(
        "",
        "dwepc_prometheus prom url=http://127.0.0.1:9;\n\
         upstream app { dwepc prometheus=prom; server 127.0.0.1:81; server 127.0.0.1:82;\n\
           dwepc_node 127.0.0.1:81 vm=web-1; }\n\
         server { listen 127.0.0.1:1; location / { proxy_pass http://app; } }",
    );
    let (ok, said, _) = common::nginx::test_config(&text);
    assert!(!ok, "{said}");
    assert!(
        said.contains("server 127.0.0.1:82 of upstream \"app\" is found by its guest IP")
            && said.contains("has no guest IP label")
            && said.contains("nginx.conf:"),
        "{said}"
    );
}
