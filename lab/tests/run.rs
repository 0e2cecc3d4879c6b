//! A miniature lab run end to end (emulated VMs, vcsim fed from their usage
//! with vSphere's delay, nginx with the module, side-by-side policies, an
//! event, metrics, the report script), and the command line: `--help` on
//! every subcommand, and SIGTERM stopping every process the lab started.

use std::time::{Duration, Instant};

use dwepc_lab::run::{self, Cadence, Cell, Policy};
use dwepc_lab::scenario;

/// The tests that run the lab, one at a time: a miniature cell measures
/// how a policy shares the machine's CPU among its VMs, which another
/// lab's load beside it (real CPU burnt in cgroups, a cell being stopped)
/// would distort.
static CELLS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    CELLS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[test]
fn miniature_cell_side_by_side_with_an_event() {
    let _alone = alone();
    let out = std::env::temp_dir().join(format!("dwepc-lab-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let sc = scenario::parse("mini", "workload t2\nat 6s vm5 background cpu 40-50%\n").unwrap();
    let cluster = scenario::load_cluster(&run::default_cluster()).unwrap();
    let cell = Cell {
        name: "mini".into(),
        scenario: sc,
        cluster,
        level: 0.5,
        policies: vec![Policy::Wrr, Policy::Dwepc],
        warmup: Duration::from_secs(20),
        duration: Duration::from_secs(24),
        seed: 7,
        // a short cadence so the miniature run sees several samples
        cadence: Cadence {
            period_s: 2,
            delay_s: 1,
        },
        real_cpu: None,
    };
    let rs = run::run_cell(&cell, |_, _| {}).unwrap();
    assert_eq!(rs.len(), 2);
    for r in &rs {
        assert!(
            r.goodput > 0.3 * r.offered_rps,
            "{:?}: {} req/s",
            r.policy,
            r.goodput
        );
        assert!((r.split.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(r.bottleneck.samples >= 20, "{:?}", r.bottleneck);
        assert!(r.cpu.mean > 0.1, "VMs did work: {:?}", r.cpu);
        assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
        assert!(r.machine_cpu_pct.is_finite());
        assert_eq!(r.event_s, Some(6.0));
        assert_eq!(r.target.as_ref().map(|t| t.len()), Some(5));
    }
    // weighted round robin follows the capacity weights 2:4:6:8:10
    let wrr = &rs[0];
    for (i, w) in [2.0, 4.0, 6.0, 8.0, 10.0].iter().enumerate() {
        assert!((wrr.split[i] - w / 30.0).abs() < 0.03, "{:?}", wrr.split);
    }
    // dwepc balanced by counters through the measured part and saw the
    // batch job on vm5 as background its requests do not explain
    let d = &rs[1];
    let on = d.balancing.iter().filter(|m| *m == "dwepc").count();
    assert!(on + 2 >= d.balancing.len() && on >= 20, "{:?}", d.balancing);
    let st = &d.status[0];
    assert_eq!(st["mode"], "shares", "{st}");
    let bg = st["peers"][4]["background"]["cpu"].as_f64().unwrap();
    assert!(bg > 2000.0, "background of vm5: {bg}\n{st}");
    let shares: Vec<f64> = (0..5)
        .map(|i| st["peers"][i]["share"].as_f64().unwrap())
        .collect();
    assert!(
        (shares.iter().sum::<f64>() - 1.0).abs() < 1e-5,
        "{shares:?}"
    );
    // vm5 has a third of the CPU: once the job runs its target is clearly
    // below a third, and its share is on the way there (half-way per 20 s)
    let target = st["peers"][4]["target_share"].as_f64().unwrap();
    assert!(target < 0.25, "target {target}");
    assert!(shares[4] < 0.32 && shares[4] > target, "{shares:?}");
    assert!(!d.published.is_empty());
    assert!(rs[0].balancing.is_empty() && rs[0].log.is_empty());
    // the report script turns results.jsonl into tables and plots
    run::save(&out, &rs).unwrap();
    let st = run::report(&out, &[]).unwrap();
    assert!(st.success());
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("## mini") && md.contains("| dwepc |"), "{md}");
    assert!(md.contains("Event at 6 s"), "{md}");
    for f in ["util_mini.png", "shares_mini.png"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// The same kind of cell on real CPUs: the VMs are cgroups whose quota is
/// their size, their vCPUs threads that burn the requests' CPU, the batch
/// job a real `dwepc-lab cpuhold` process inside vm5's cgroup; the
/// policies run one after another; the counters come from the cgroups'
/// accounting, and every cgroup is gone afterwards.
#[test]
fn miniature_cell_on_real_cpus() {
    let _alone = alone();
    if !dwepc_lab::cgroup::available() {
        eprintln!("skipped: no writable cgroup v1 cpu hierarchy (needs root)");
        return;
    }
    let sc = scenario::parse("mini", "workload t2\nat 4s vm5 background cpu 40-50%\n").unwrap();
    let cluster = scenario::load_cluster(&run::default_cluster()).unwrap();
    let cell = Cell {
        name: "mini_real".into(),
        scenario: sc,
        cluster,
        level: 0.5,
        policies: vec![Policy::Lc, Policy::DwepcTime],
        warmup: Duration::from_secs(10),
        duration: Duration::from_secs(16),
        seed: 7,
        cadence: Cadence {
            period_s: 2,
            delay_s: 1,
        },
        real_cpu: Some(30_000.0),
    };
    let mut seen = Vec::new();
    let rs = run::run_cell(&cell, |e, total| seen.push((e, total))).unwrap();
    assert_eq!(rs.len(), 2);
    // one after another: progress runs past one policy's time
    assert!(
        seen.iter().any(|(e, _)| *e > Duration::from_secs(30)),
        "{seen:?}"
    );
    for r in &rs {
        assert_eq!(r.real_cpu, Some(30_000.0));
        assert!(
            r.goodput > 0.3 * r.offered_rps,
            "{:?}: {} req/s",
            r.policy,
            r.goodput
        );
        assert!(r.cpu.mean > 0.1, "the cgroups did work: {:?}", r.cpu);
        assert!(r.p50_ms > 0.0 && r.p99_ms >= r.p50_ms);
    }
    // the default balanced by the cgroups' counters and saw the real job
    let d = &rs[1];
    let on = d.balancing.iter().filter(|m| *m == "dwepc").count();
    assert!(on >= 10, "{:?}", d.balancing);
    let st = &d.status[0];
    let bg = st["peers"][4]["background"]["cpu"].as_f64().unwrap_or(0.0);
    assert!(bg > 1000.0, "background of vm5: {bg}\n{st}");
    // no cgroup is left behind by a process that is gone
    for e in std::fs::read_dir(dwepc_lab::cgroup::CPU_ROOT)
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("dwepc-lab-") {
            assert!(
                std::path::Path::new(&format!("/proc/{pid}")).exists(),
                "{name} left behind"
            );
        }
    }
}

fn lab_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_dwepc-lab"))
}

#[test]
fn every_subcommand_answers_help() {
    for sub in [
        "", "run", "matrix", "demo", "overhead", "scale", "report", "cpuhold", "vms",
    ] {
        let mut cmd = std::process::Command::new(lab_binary());
        if !sub.is_empty() {
            cmd.arg(sub);
        }
        let out = cmd.arg("--help").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{sub}: {text}");
        assert!(text.contains("Usage: dwepc-lab"), "{sub}: {text}");
    }
    // a mistake is an error, not a run
    let out = std::process::Command::new(lab_binary())
        .args(["run", "--events", "/nonexistent.txt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.txt"));
    let out = std::process::Command::new(lab_binary())
        .args(["matrix", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("total about"));
}

fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for c in dwepc_lab::nginx::children(p) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// SIGTERM to a running `dwepc-lab run` stops its nginx masters, their
/// workers and vcsim, then the lab itself.
#[test]
fn sigterm_stops_every_process_the_lab_started() {
    let _alone = alone();
    let dir = std::env::temp_dir().join(format!("dwepc-lab-sig-{}", std::process::id()));
    let mut child = std::process::Command::new(lab_binary())
        .args([
            "run",
            "--events",
            run::repo_root()
                .join("lab/scenarios/steady_t2.txt")
                .to_str()
                .unwrap(),
            "--policies",
            "lc,dwepc",
            "--level",
            "0.3",
            "--warmup",
            "30s",
            "--duration",
            "60s",
            "--out",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // wait until both nginx instances and both vcsims run (2 masters with
    // 2 workers each, 2 simulators)
    let start = Instant::now();
    let mut procs = Vec::new();
    while start.elapsed() < Duration::from_secs(60) {
        procs = descendants(pid);
        let nginx = procs
            .iter()
            .filter(|p| dwepc_lab::nginx::cmdline(**p).contains("nginx"))
            .count();
        let vcsim = procs
            .iter()
            .filter(|p| dwepc_lab::nginx::cmdline(**p).contains("dwepc-vcsim"))
            .count();
        if nginx >= 6 && vcsim >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(procs.len() >= 8, "lab processes: {procs:?}");
    dwepc_lab::nginx::signal(pid, libc::SIGTERM);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "lab did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    std::thread::sleep(Duration::from_millis(500));
    let left: Vec<i32> = procs
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // a zombie waiting for a reaper is gone for our purpose
            !stat
                .rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .collect();
    assert!(left.is_empty(), "still running after SIGTERM: {left:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
