//! The lab's matrix: the cells of BENCHMARKS.md, read from a file.
//!
//! ```text
//! seeds 1 2 3                # every cell runs once per seed
//! parallel 2                 # cells run at the same time
//! cluster five.json          # lab/clusters/NAME, or a path; like the
//! cadence 20s/5s             # lines below, a default for the cells after it
//! warmup 80s
//! duration 150s
//! policies rr,wrr,lc,lcw,dwepc
//! cell NAME scenario=steady_t2 level=0.8 [policies=...] [warmup=..] [duration=..] [cadence=..] [real=MHZ]
//! ```
//!
//! `real=MHZ` runs the cell's VMs on real CPUs (cgroups; one real core
//! stands for MHZ), its policies one after another.
//!
//! `scenario=NAME` is lab/scenarios/NAME.txt (or a path).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::run::{parse_real_cpu, Cadence, Cell, Policy};
use crate::scenario::{self, parse_duration};

/// One line `cell ...`, before it is multiplied by the seeds.
#[derive(Clone, Debug)]
pub struct CellSpec {
    pub name: String,
    pub cluster: PathBuf,
    pub scenario: PathBuf,
    pub level: f64,
    pub policies: Vec<Policy>,
    pub warmup: Duration,
    pub duration: Duration,
    pub cadence: Cadence,
    pub real_cpu: Option<f64>,
}

/// A parsed matrix file.
#[derive(Clone, Debug)]
pub struct Matrix {
    pub seeds: Vec<u64>,
    /// Cells run at the same time.
    pub parallel: usize,
    pub cells: Vec<CellSpec>,
}

/// A file named in the matrix: `dir/NAME(.ext)` unless it is a path.
pub fn resolve(name: &str, dir: &str, ext: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let base = crate::run::repo_root().join(dir);
    let p = base.join(name);
    if p.exists() || name.ends_with(ext) {
        p
    } else {
        base.join(format!("{name}{ext}"))
    }
}

/// Parses a matrix file's text; errors name the line.
pub fn parse(name: &str, text: &str) -> Result<Matrix, String> {
    let mut m = Matrix {
        seeds: vec![1, 2, 3],
        parallel: 1,
        cells: Vec::new(),
    };
    let mut cluster = crate::run::default_cluster();
    let mut cadence = Cadence::VSPHERE;
    let mut warmup = Duration::from_secs(80);
    let mut duration = Duration::from_secs(150);
    let mut policies = Policy::parse_list("rr,wrr,lc,lcw,dwepc").expect("default policies");
    for (k, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let err = |msg: String| format!("{name}:{}: {msg}", k + 1);
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["cluster", f] => cluster = resolve(f, "lab/clusters", ".json"),
            ["seeds", s @ ..] if !s.is_empty() => {
                m.seeds = s
                    .iter()
                    .map(|x| x.parse().map_err(|_| err(format!("bad seed {x:?}"))))
                    .collect::<Result<_, _>>()?;
            }
            ["parallel", p] => {
                m.parallel = p
                    .parse()
                    .ok()
                    .filter(|x| (1..=8).contains(x))
                    .ok_or_else(|| err(format!("bad parallel {p:?} (1 to 8)")))?
            }
            ["cadence", c] => cadence = Cadence::parse(c).map_err(err)?,
            ["warmup", d] => warmup = parse_duration(d).map_err(err)?,
            ["duration", d] => duration = parse_duration(d).map_err(err)?,
            ["policies", p] => policies = Policy::parse_list(p).map_err(err)?,
            ["cell", cname, kvs @ ..] => {
                let mut c = CellSpec {
                    name: cname.to_string(),
                    cluster: cluster.clone(),
                    scenario: PathBuf::new(),
                    level: f64::NAN,
                    policies: policies.clone(),
                    warmup,
                    duration,
                    cadence,
                    real_cpu: None,
                };
                for kv in kvs {
                    let (key, val) = kv
                        .split_once('=')
                        .ok_or_else(|| err(format!("expected key=value, got {kv:?}")))?;
                    match key {
                        "scenario" => c.scenario = resolve(val, "lab/scenarios", ".txt"),
                        "level" => {
                            c.level = val
                                .parse::<f64>()
                                .ok()
                                .filter(|x| x.is_finite() && *x > 0.0 && *x <= 3.0)
                                .ok_or_else(|| err(format!("bad level {val:?} (0 to 3)")))?
                        }
                        "policies" => c.policies = Policy::parse_list(val).map_err(err)?,
                        "warmup" => c.warmup = parse_duration(val).map_err(err)?,
                        "duration" => c.duration = parse_duration(val).map_err(err)?,
                        "cadence" => c.cadence = Cadence::parse(val).map_err(err)?,
                        "real" => c.real_cpu = Some(parse_real_cpu(val).map_err(err)?),
                        _ => return Err(err(format!("unknown key {key:?}"))),
                    }
                }
                if c.scenario.as_os_str().is_empty() || c.level.is_nan() {
                    return Err(err("a cell needs scenario= and level=".into()));
                }
                if m.cells.iter().any(|o| o.name == c.name) {
                    return Err(err(format!("duplicate cell {:?}", c.name)));
                }
                m.cells.push(c);
            }
            _ => return Err(err(format!("unknown statement {line:?}"))),
        }
    }
    Ok(m)
}

/// Reads a matrix file.
pub fn load(path: &Path) -> Result<Matrix, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse(&path.display().to_string(), &text)
}

impl Matrix {
    /// Every (cell, seed) to run, scenario and cluster files read.
    pub fn expand(&self, only: &[String]) -> Result<Vec<Cell>, String> {
        let mut out = Vec::new();
        for c in &self.cells {
            if !only.is_empty() && !only.iter().any(|o| o == &c.name) {
                continue;
            }
            let cluster = scenario::load_cluster(&c.cluster)?;
            let sc = scenario::load(&c.scenario)?;
            sc.check(&cluster)?;
            for &seed in &self.seeds {
                out.push(Cell {
                    name: c.name.clone(),
                    scenario: sc.clone(),
                    cluster: cluster.clone(),
                    level: c.level,
                    policies: c.policies.clone(),
                    warmup: c.warmup,
                    duration: c.duration,
                    seed,
                    cadence: c.cadence,
                    real_cpu: c.real_cpu,
                });
            }
        }
        if let Some(o) = only
            .iter()
            .find(|o| !self.cells.iter().any(|c| &&c.name == o))
        {
            return Err(format!("no cell named {o:?}"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_defaults_and_cells() {
        let m = parse(
            "m",
            "seeds 4 5\nwarmup 60s\npolicies lc,dwepc\n\
             cell a scenario=/x/a.txt level=0.8\n\
             cell b scenario=/x/b.txt level=1.2 duration=2m cadence=3s/0s policies=rr\n\
             cluster twelve.json\ncell c scenario=/x/c.txt level=0.8 real=30000\n",
        )
        .unwrap();
        assert_eq!(m.seeds, vec![4, 5]);
        assert_eq!(m.cells.len(), 3);
        assert!(m.cells[1].cluster.ends_with("five.json"));
        assert!(m.cells[2].cluster.ends_with("lab/clusters/twelve.json"));
        assert_eq!(
            (m.cells[1].real_cpu, m.cells[2].real_cpu),
            (None, Some(30000.0))
        );
        assert_eq!(m.cells[0].warmup, Duration::from_secs(60));
        assert_eq!(m.cells[0].policies, vec![Policy::Lc, Policy::Dwepc]);
        assert_eq!(m.cells[1].duration, Duration::from_secs(120));
        assert_eq!(m.cells[1].cadence.period_s, 3);
        assert_eq!(m.cells[1].policies, vec![Policy::Rr]);
        for (text, want) in [
            ("cell a level=1", "needs scenario= and level="),
            ("cell a scenario=/x level=9", "bad level"),
            ("cell a scenario=/x level=1 foo=2", "unknown key"),
            ("cell a scenario=/x level=1 real=5", "bad real-CPU scale"),
            ("cell a scenario=/x level=1 real=inf", "bad real-CPU scale"),
            (
                "cell a scenario=/x level=1\ncell a scenario=/x level=1",
                "m:2: duplicate",
            ),
            ("bogus", "unknown statement"),
        ] {
            assert!(parse("m", text).unwrap_err().contains(want), "{text}");
        }
    }

    #[test]
    fn the_lab_matrix_and_its_files_are_valid() {
        let m = load(&crate::run::repo_root().join("lab/matrix.txt")).unwrap();
        let cells = m.expand(&[]).unwrap();
        assert_eq!(cells.len(), m.cells.len() * m.seeds.len());
        // the whole matrix fits in four hours on the 2-core machine
        let total = crate::run::batch_estimate(&cells, m.parallel);
        assert!(total <= Duration::from_secs(4 * 3600), "{total:?}");
        // and holds a real-CPU cell beside its emulated twin
        let real = cells.iter().find(|c| c.real_cpu.is_some()).unwrap();
        assert!(cells
            .iter()
            .any(|c| c.real_cpu.is_none() && c.scenario == real.scenario && c.level == real.level));
        assert!(m.expand(&["nope".into()]).is_err());
    }
}
