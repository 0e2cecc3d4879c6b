//! A miniature lab run end to end: emulated VMs, vcsim fed from their
//! usage, nginx with the module, load, metrics, and the report script.

use std::time::Duration;

use dwepc_lab::run::{self, LoadLevel, Plan, Policy, Scenario, Workload};

#[test]
fn miniature_lab_run_produces_results_and_report() {
    let out = std::env::temp_dir().join(format!("dwepc-lab-test-{}", std::process::id()));
    let plan = Plan {
        workload: Workload::T2,
        scenario: Scenario::Steady,
        policies: vec![Policy::Wrr, Policy::Dwepc],
        levels: vec![LoadLevel::Open(0.5)],
        duration: Duration::from_secs(8),
        warmup: Duration::from_secs(12),
        seed: 7,
    };
    let rs = run::run(&plan);
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert!(
            r.throughput > 30.0,
            "{:?}: {} req/s",
            r.policy,
            r.throughput
        );
        assert!((r.split.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(r.cpu.samples >= 5, "{:?}", r.cpu);
        assert!(r.cpu.mean > 0.05, "VMs did work: {:?}", r.cpu);
        assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
    }
    // weighted round robin follows the CPU weights 2:4:6:8:10
    let wrr = &rs[0];
    for (i, w) in [2.0, 4.0, 6.0, 8.0, 10.0].iter().enumerate() {
        assert!((wrr.split[i] - w / 30.0).abs() < 0.03, "{:?}", wrr.split);
    }
    // the counter-driven policy was active, with a fitted W, at the end
    assert_eq!(
        rs[1].dwepc_status["balancing"], "dwepc",
        "{}",
        rs[1].dwepc_status
    );
    // its mode was read once a second (it stays on counters); the stock
    // policy records no mode and no module log
    assert!(
        (7..=8).contains(&rs[1].balancing.len()),
        "{:?}",
        rs[1].balancing
    );
    assert!(
        rs[1].balancing.iter().filter(|m| *m == "dwepc").count() >= 6,
        "{:?}",
        rs[1].balancing
    );
    assert!(rs[0].balancing.is_empty() && rs[0].log.is_empty());
    // the report script turns the JSON into tables and plots
    std::fs::create_dir_all(&out).unwrap();
    // plus a copy of the first row in which no request succeeded (no
    // latency quantiles: JSON null), as a collapsed run produces
    let mut doc = run::to_json(&rs);
    let mut failed = doc[0].clone();
    failed["level"] = "open 9.9x".into();
    failed["throughput"] = 0.0.into();
    for k in ["p50_ms", "p95_ms", "p99_ms"] {
        failed[k] = serde_json::Value::Null;
    }
    doc.as_array_mut().unwrap().push(failed);
    std::fs::write(out.join("results.json"), doc.to_string()).unwrap();
    std::fs::write(out.join("latest.json"), run::to_json(&rs).to_string()).unwrap();
    let st = run::report(&out).unwrap();
    assert!(st.success());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        md.contains("| open 0.5x | weighted_rr |")
            && md.contains("dwepc_paper")
            && md.contains("s on counters")
            && md.contains("| open 9.9x | weighted_rr | 0.50 | 0.0 | nan | nan | nan |"),
        "{md}"
    );
    // the last command's runs alone (what dwepc-lab prints)
    let latest = std::fs::read_to_string(out.join("summary-latest.md")).unwrap();
    assert!(
        latest.contains("from latest.json")
            && latest.contains("| open 0.5x | dwepc_paper |")
            && !latest.contains("open 9.9x"),
        "{latest}"
    );
    assert!(
        out.join("balance_T2.png").exists() && out.join("cpu_T2_steady_open_0p5x.png").exists()
    );
    let _ = std::fs::remove_dir_all(&out);
}
