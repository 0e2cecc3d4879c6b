//! `dwepc-lab`: the lab's command line.
//!
//! ```text
//! dwepc-lab demo [--out DIR]                 short lab run (a few minutes): T2, 1.0x, five policies
//! dwepc-lab full [--out DIR] [--duration S]  the whole lab: T1/T2 at six load levels, three scenarios
//! dwepc-lab run --workload t1|t2 --scenario steady|cpu_step|node_dies|vsphere_down
//!               --policies rr,wrr,lc,r2,wlc,dwepc --levels 0.5,1.0,300vu
//!               [--duration S] [--warmup S] [--out DIR]
//! dwepc-lab overhead [--rounds N] [--duration S] [--connections C]
//!                                            proxy overhead vs round robin / least_conn (wrk)
//! dwepc-lab vms --spec FILE --control ADDR [--ready FILE]   the emulated VMs (started by the above)
//! ```
//! Results go to DIR/results.json (appended), DIR/summary.md and DIR/*.png
//! (default DIR: lab/report).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dwepc_lab::run::{self, LoadLevel, Plan, Policy, RunResult, Scenario, Workload};

fn usage() -> i32 {
    eprintln!(
        "usage: dwepc-lab demo|full|run|vms [options]; see the top of lab/src/main.rs or README.md"
    );
    2
}

fn opt<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn parse_levels(s: &str) -> Option<Vec<LoadLevel>> {
    s.split(',')
        .map(|x| {
            if let Some(u) = x.strip_suffix("vu") {
                u.parse().ok().map(LoadLevel::Users)
            } else {
                x.parse().ok().map(LoadLevel::Open)
            }
        })
        .collect()
}

fn parse_policies(s: &str) -> Option<Vec<Policy>> {
    s.split(',').map(Policy::parse).collect()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn save(out: &Path, new: &[RunResult]) {
    std::fs::create_dir_all(out).unwrap();
    let path = out.join("results.json");
    let mut all: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    // a re-run of the same (workload, scenario, policy, level) replaces it
    let fresh = run::to_json(new);
    for r in fresh.as_array().unwrap() {
        all.retain(|o| {
            !(o["workload"] == r["workload"]
                && o["scenario"] == r["scenario"]
                && o["policy"] == r["policy"]
                && o["level"] == r["level"])
        });
        all.push(r.clone());
    }
    std::fs::write(&path, serde_json::to_string(&all).unwrap()).unwrap();
    report(out);
}

/// Tables and plots by lab/report.py; says so when it cannot run.
fn report(out: &Path) {
    if !matches!(run::report(out), Ok(s) if s.success()) {
        eprintln!("lab: lab/report.py failed (python3 or python3-matplotlib missing?)");
    }
}

fn run_plans(plans: Vec<Plan>, out: &Path) -> i32 {
    let mut all = Vec::new();
    for p in plans {
        let rs = run::run(&p);
        save(out, &rs);
        all.extend(rs);
    }
    // this command's results alone, as a table
    std::fs::write(out.join("latest.json"), run::to_json(&all).to_string()).unwrap();
    report(out);
    match std::fs::read_to_string(out.join("summary-latest.md")) {
        Ok(md) => println!("{md}"),
        Err(e) => eprintln!("lab: no summary-latest.md: {e}"),
    }
    println!(
        "lab: results in {}/ (summary.md, results.json, plots *.png)",
        out.display()
    );
    0
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = opt(&args, "--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("lab/report"));
    let secs = |name: &str, d: u64| opt(&args, name).and_then(|x| x.parse().ok()).unwrap_or(d);
    let code = match args.first().map(String::as_str) {
        Some("vms") => dwepc_lab::vm::main(&args[1..]),
        Some("overhead") => {
            let rows = dwepc_lab::overhead::run(
                secs("--rounds", 3) as usize,
                secs("--duration", 10),
                secs("--connections", 50) as u32,
            );
            println!("{}", dwepc_lab::overhead::markdown(&rows));
            0
        }
        Some("demo") => {
            let plan = Plan {
                workload: Workload::T2,
                scenario: Scenario::Steady,
                policies: vec![
                    Policy::Rr,
                    Policy::Wrr,
                    Policy::LeastConn,
                    Policy::Wlc,
                    Policy::Dwepc,
                ],
                levels: vec![LoadLevel::Open(1.0)],
                duration: Duration::from_secs(secs("--duration", 30)),
                warmup: Duration::from_secs(secs("--warmup", 15)),
                seed: 1,
            };
            run_plans(vec![plan], &out.join("demo"))
        }
        Some("full") => {
            let d = Duration::from_secs(secs("--duration", 60));
            let warm = Duration::from_secs(secs("--warmup", 20));
            let steady_levels = vec![
                LoadLevel::Users(100),
                LoadLevel::Users(300),
                LoadLevel::Open(0.5),
                LoadLevel::Open(0.8),
                LoadLevel::Open(1.0),
                LoadLevel::Open(1.2),
            ];
            let mut plans = Vec::new();
            for w in [Workload::T2, Workload::T1] {
                plans.push(Plan {
                    workload: w,
                    scenario: Scenario::Steady,
                    policies: Policy::ALL.to_vec(),
                    levels: steady_levels.clone(),
                    duration: d,
                    warmup: warm,
                    seed: 1,
                });
            }
            for s in [Scenario::Step, Scenario::Die, Scenario::VcDown] {
                plans.push(Plan {
                    workload: Workload::T2,
                    scenario: s,
                    policies: Policy::ALL.to_vec(),
                    levels: vec![LoadLevel::Open(0.8)],
                    duration: if s == Scenario::VcDown {
                        d.max(Duration::from_secs(120))
                    } else {
                        d
                    },
                    warmup: warm,
                    seed: 2,
                });
            }
            run_plans(plans, &out)
        }
        Some("run") => {
            let workload = match opt(&args, "--workload").unwrap_or("t2") {
                "t1" | "T1" => Workload::T1,
                _ => Workload::T2,
            };
            let Some(scenario) = Scenario::parse(opt(&args, "--scenario").unwrap_or("steady"))
            else {
                std::process::exit(usage());
            };
            let Some(policies) =
                parse_policies(opt(&args, "--policies").unwrap_or("rr,wrr,lc,r2,wlc,dwepc"))
            else {
                std::process::exit(usage());
            };
            let Some(levels) = parse_levels(opt(&args, "--levels").unwrap_or("1.0")) else {
                std::process::exit(usage());
            };
            let plan = Plan {
                workload,
                scenario,
                policies,
                levels,
                duration: Duration::from_secs(secs("--duration", 60)),
                warmup: Duration::from_secs(secs("--warmup", 20)),
                seed: secs("--seed", 1),
            };
            run_plans(vec![plan], &out)
        }
        _ => usage(),
    };
    std::process::exit(code);
}
