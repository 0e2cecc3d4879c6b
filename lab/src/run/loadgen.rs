//! The load of a cell: its spec (every mix it uses, the same fraction of
//! capacity throughout) and its load generators, a process per stack.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cell::Cell;
use super::paths::lab_binary;
use super::stack::Stack;
use crate::load::{self, LoadSpec, Pattern, Phase, Record};
use crate::scenario::Action;

/// The load of a cell: paths of every mix it uses, a phase per mix change,
/// the same fraction of capacity throughout.
fn load_spec(cell: &Cell, ports: &[u16], total: Duration) -> LoadSpec {
    let sc = &cell.scenario;
    let mut mixes = vec![(0.0, sc.workload)];
    for e in &sc.events {
        if let Action::Mix { workload } = e.action {
            mixes.push((
                cell.warmup.as_secs_f64() + e.at_s.max(-cell.warmup.as_secs_f64()),
                workload,
            ));
        }
    }
    let mut paths: Vec<String> = Vec::new();
    for (_, w) in &mixes {
        for p in w.paths() {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    let base = sc.workload.capacity_rps(&cell.cluster);
    let phases = mixes
        .iter()
        .map(|(at, w)| Phase {
            from: Duration::from_secs_f64(*at),
            paths: w
                .paths()
                .iter()
                .map(|p| paths.iter().position(|q| q == p).expect("path"))
                .collect(),
            rate_factor: w.capacity_rps(&cell.cluster) / base,
        })
        .collect();
    LoadSpec {
        targets: ports
            .iter()
            .zip(&sc.frontends)
            .map(|(p, w)| (format!("127.0.0.1:{p}").parse().expect("addr"), *w))
            .collect(),
        paths,
        phases,
        pattern: Pattern::Open {
            rate: cell.level * base,
        },
        duration: total,
        timeout: Duration::from_secs(30),
        // each load generator is a process that may open 20 000 files; the
        // 30-s timeout bounds what a policy piles up (1.2x: about 8 500)
        max_in_flight: 10_000,
        seed: cell.seed,
    }
}

/// A running load generator and the file it writes its records to.
pub(super) struct LoadProcess {
    child: std::process::Child,
    out: PathBuf,
}

/// Starts one load generator per stack (`dwepc-lab load`), each to begin
/// at wall-clock `t0_ms` and run for `total`.
pub(super) fn start(
    cell: &Cell,
    stacks: &[Stack],
    total: Duration,
    t0_ms: u64,
) -> Result<Vec<LoadProcess>, String> {
    let names: Vec<String> = cell.cluster.iter().map(|v| v.name.clone()).collect();
    let mut loads = Vec::new();
    for s in stacks {
        let spec = s.dir.join("load.json");
        let out = s.dir.join("records.txt");
        std::fs::write(
            &spec,
            load_spec(cell, &s.ports, total).to_json().to_string(),
        )
        .map_err(|e| e.to_string())?;
        let child = std::process::Command::new(lab_binary())
            .arg("load")
            .arg("--spec")
            .arg(&spec)
            .arg("--out")
            .arg(&out)
            .arg("--start-at-ms")
            .arg(t0_ms.to_string())
            .arg("--backends")
            .arg(names.join(","))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("start the load generator: {e}"))?;
        crate::procs::register(child.id());
        loads.push(LoadProcess { child, out });
    }
    Ok(loads)
}

/// Waits for every load generator to finish (up to 60 s each, then kills
/// it) and reads its records; a killed generator's records are lost.
pub(super) fn finish(loads: Vec<LoadProcess>) -> Vec<Vec<Record>> {
    let mut records: Vec<Vec<Record>> = Vec::new();
    for LoadProcess { mut child, out } in loads {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        crate::procs::unregister(child.id());
        if !matches!(child.try_wait(), Ok(Some(_))) {
            eprintln!("lab: a load generator did not finish; its records are lost");
            let _ = child.kill();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        records.push(load::read_records(&text));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testing::cell;
    use crate::scenario::Workload;

    #[test]
    fn load_spec_phases_keep_the_fraction() {
        let c = cell("workload t1\nat 30s mix t2\n");
        let spec = load_spec(&c, &[1, 2], Duration::from_secs(180));
        assert_eq!(spec.paths.len(), 10);
        assert_eq!(spec.phases.len(), 2);
        assert_eq!(spec.phases[1].from, Duration::from_secs(90));
        let f = Workload::T2.capacity_rps(&c.cluster) / Workload::T1.capacity_rps(&c.cluster);
        assert!((spec.phases[1].rate_factor - f).abs() < 1e-9);
        assert_eq!(spec.targets.len(), 1); // one frontend in the scenario
    }
}
