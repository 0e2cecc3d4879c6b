//! `dwepc-lab`: the lab's command line (`dwepc-lab --help`, and `--help`
//! on every subcommand).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use dwepc_lab::matrix;
use dwepc_lab::run::{self, Cadence, Cell, Policy};
use dwepc_lab::scenario;

#[derive(Parser)]
#[command(
    name = "dwepc-lab",
    version,
    about = "dwepc's lab: real nginx with the module in front of emulated VMware VMs whose \
             counters reach it through vSphere's API (vcsim); every policy side by side on \
             its own copy of the cluster, same seeded load, same events"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// One scenario at one or more load levels, every policy side by side.
    Run(RunArgs),
    /// The whole matrix of BENCHMARKS.md (lab/matrix.txt), cell by cell.
    Matrix(MatrixArgs),
    /// The demo: a few minutes of a background batch job at 0.8x, dwepc
    /// against least_conn and weighted round robin.
    Demo {
        /// Results directory [default: the repository's lab/report/demo]
        #[arg(long, default_value_os_t = run::repo_root().join("lab/report/demo"), hide_default_value = true)]
        out: PathBuf,
    },
    /// Proxy overhead: dwepc against stock round robin and least_conn (wrk).
    Overhead(WrkArgs),
    /// A large upstream: nginx (one worker) in front of SERVERS servers
    /// mapped by guest IP to vcsim's VMs, with wrk, against nginx's own
    /// policies (rounds interleaved); the collector's time per poll and
    /// the worker's memory.
    Scale {
        #[arg(long, default_value_t = 2000)]
        servers: usize,
        #[command(flatten)]
        wrk: WrkArgs,
        /// Run vcsim at nice 19 on the same cores (it still gets the
        /// cores' idle time).
        #[arg(long, conflicts_with = "vcsim_apart")]
        niced: bool,
        /// Run vcsim on CPU 1 alone and everything else on CPU 0, as if
        /// the vCenter were on another machine: a poll's cost on the
        /// proxy's core is then the module's own.
        #[arg(long)]
        vcsim_apart: bool,
        /// With --vcsim-apart: the proxy worker's collector threads on
        /// CPU 1 too (a proxy with a core to spare).
        #[arg(long, requires = "vcsim_apart")]
        collector_apart: bool,
        /// The dwepc configurations' poll interval, s (`interval=`).
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Tables (summary.md) and plots from a results directory.
    Report {
        /// Directory holding results.jsonl.
        dir: PathBuf,
    },
    /// Holds this machine's CPU utilisation in a band with an adaptive
    /// number of threads (as the CPU-hold script of the blog post "A reference
    /// implementation of server load balancing in virtualised environments");
    /// prints one line per second.
    Cpuhold(HoldArgs),
    /// (Used by the lab) one load generator from a given wall-clock instant,
    /// writing one line per request to OUT.
    #[command(hide = true)]
    Load {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Start at this wall-clock time, ms since the epoch.
        #[arg(long)]
        start_at_ms: u64,
        /// X-Backend names the records index.
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
    },
    /// The emulated VMs alone, until GET /quit, SIGTERM or SIGINT.
    Vms {
        /// JSON array of VM specs.
        #[arg(long)]
        spec: String,
        /// Control endpoint address.
        #[arg(long, default_value = "127.0.0.1:0")]
        control: String,
        /// File to write the addresses to once listening.
        #[arg(long)]
        ready: Option<String>,
        /// Real CPUs: each VM a cgroup of its size, one real core standing
        /// for this many MHz (root; cgroup v1 cpu and cpuacct).
        #[arg(long, value_parser = run::parse_real_cpu)]
        real_cpu: Option<f64>,
    },
}

/// The wrk measurements of `overhead` and `scale`: interleaved rounds.
#[derive(Args)]
struct WrkArgs {
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 50)]
    connections: u32,
}

#[derive(Args)]
struct RunArgs {
    /// Scenario: a name in lab/scenarios/ (e.g. background) or a file's
    /// path: workload, frontends, timed events.
    #[arg(long, visible_alias = "scenario")]
    events: String,
    /// Cluster file: the VMs (JSON) [default: the repository's lab/clusters/five.json]
    #[arg(long, default_value_os_t = run::default_cluster(), hide_default_value = true)]
    cluster: PathBuf,
    /// Open-loop load, fractions of the cluster's capacity (comma-separated).
    #[arg(long, default_value = "0.8", value_delimiter = ',')]
    level: Vec<f64>,
    /// Policies: rr, wrr, lc, lcw, r2, dwlc, paper, dwepc, sed, hyb (the
    /// default), hybd, hybd4, hybd8 (the default with choices=2, 4, 8),
    /// lt, p2c, hybss, hybp,
    /// ltss, oracle.
    #[arg(long, default_value = "rr,wrr,lc,lcw,dwepc")]
    policies: String,
    /// Warm-up before the measured part.
    #[arg(long, default_value = "80s", value_parser = scenario::parse_duration)]
    warmup: Duration,
    /// Measured part.
    #[arg(long, default_value = "150s", value_parser = scenario::parse_duration)]
    duration: Duration,
    /// Seeds (one run of every level per seed).
    #[arg(long, default_value = "1", value_delimiter = ',')]
    seeds: Vec<u64>,
    /// vSphere counter cadence: period/delay.
    #[arg(long, default_value = "20s/5s", value_parser = Cadence::parse)]
    cadence: Cadence,
    /// Real CPUs: the VMs as cgroups of their size, one real core standing
    /// for this many MHz, the policies one after another (root).
    #[arg(long, value_parser = run::parse_real_cpu)]
    real_cpu: Option<f64>,
    /// Results directory (results.jsonl is appended to) [default: the
    /// repository's lab/report]
    #[arg(long, default_value_os_t = run::repo_root().join("lab/report"), hide_default_value = true)]
    out: PathBuf,
}

#[derive(Args)]
struct MatrixArgs {
    /// Matrix file [default: the repository's lab/matrix.txt]
    #[arg(long, default_value_os_t = run::repo_root().join("lab/matrix.txt"), hide_default_value = true)]
    file: PathBuf,
    /// Only these cells (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Results directory [default: the repository's lab/report]
    #[arg(long, default_value_os_t = run::repo_root().join("lab/report"), hide_default_value = true)]
    out: PathBuf,
    /// Keep results.jsonl and skip the (cell, seed) pairs it already holds.
    #[arg(long)]
    resume: bool,
    /// Print the cells and the time they take, run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Cells run at the same time (default: the matrix file's `parallel`;
    /// each cell is light, the emulated VMs are timers, and every result
    /// records the machine's CPU use).
    #[arg(long)]
    parallel: Option<usize>,
}

#[derive(Args)]
struct HoldArgs {
    /// Lowest CPU utilisation, %.
    lo: f64,
    /// Highest CPU utilisation, %.
    hi: f64,
    /// Threads at the start.
    #[arg(long, default_value_t = 2)]
    threads: u32,
    /// Threads added or removed per adjustment.
    #[arg(long, default_value_t = 1)]
    step: u32,
    /// Each thread is busy this long, then sleeps.
    #[arg(long, default_value_t = 10)]
    busy_ms: u64,
    #[arg(long, default_value_t = 10)]
    sleep_ms: u64,
    /// Stop after this long (default: until interrupted).
    #[arg(long, value_parser = scenario::parse_duration)]
    duration: Option<Duration>,
    /// Run inside this VM's cgroup (a path under /sys/fs/cgroup/cpu, as a
    /// real-CPU VM set's ready file names it) and hold the job's own share
    /// of the VM instead of the machine's utilisation.
    #[arg(long)]
    cgroup: Option<PathBuf>,
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Runs cells, `parallel` at a time (a real-CPU cell alone, after the
/// others), with progress on stderr; results appended to
/// OUT/results.jsonl as each cell ends.
fn run_cells(cells: &[Cell], out: &Path, parallel: usize) -> Result<(), String> {
    let (real, emulated): (Vec<Cell>, Vec<Cell>) =
        cells.iter().cloned().partition(|c| c.real_cpu.is_some());
    if !real.is_empty() && !emulated.is_empty() {
        run_cells(&emulated, out, parallel)?;
        return run_cells(&real, out, 1);
    }
    let parallel = if real.is_empty() { parallel.max(1) } else { 1 };
    let total = run::batch_estimate(cells, parallel);
    eprintln!(
        "lab: {} cells, {} at a time, about {} (machine: {} cores)",
        cells.len(),
        parallel,
        hms(total),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let batch = Batch {
        cells,
        out,
        total,
        started: Instant::now(),
        next: AtomicUsize::new(0),
        failed: Mutex::new(None),
        saving: Mutex::new(()),
    };
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(cells.len()) {
            scope.spawn(|| batch.worker());
        }
    });
    if let Some(e) = batch.failed.lock().ok().and_then(|mut f| f.take()) {
        return Err(e);
    }
    eprintln!(
        "lab: {} cells in {}",
        cells.len(),
        hms(batch.started.elapsed())
    );
    Ok(())
}

/// What the workers of [`run_cells`] share.
struct Batch<'a> {
    cells: &'a [Cell],
    out: &'a Path,
    /// The estimated time of the whole batch.
    total: Duration,
    started: Instant,
    /// The next cell to take.
    next: AtomicUsize,
    /// The first failure: the workers stop taking cells.
    failed: Mutex<Option<String>>,
    /// Held while a worker prints and saves its results.
    saving: Mutex<()>,
}

impl Batch<'_> {
    /// Takes the next cell and runs it, until none is left or one failed.
    fn worker(&self) {
        loop {
            if self.failed.lock().map(|f| f.is_some()).unwrap_or(true) {
                return;
            }
            let i = self.next.fetch_add(1, Ordering::SeqCst);
            let Some(c) = self.cells.get(i) else { return };
            if let Err(e) = self.run_one(i, c) {
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some(e);
                }
                return;
            }
        }
    }

    /// Runs cell `i`, prints one line per policy and saves the results.
    fn run_one(&self, i: usize, c: &Cell) -> Result<(), String> {
        let left = self.total.saturating_sub(self.started.elapsed());
        eprintln!(
            "lab: cell {}/{} {} (level {}, seed {}, {} policies, cadence {}): about {} left",
            i + 1,
            self.cells.len(),
            c.name,
            c.level,
            c.seed,
            c.policies.len(),
            c.cadence.label(),
            hms(left)
        );
        let label = format!(
            "cell {}/{} {} seed {}",
            i + 1,
            self.cells.len(),
            c.name,
            c.seed
        );
        let rs = run::run_cell(c, |el, tot| {
            if el.as_secs() % 30 < 10 {
                eprintln!(
                    "lab:   {label}: {}/{} s, about {} left in all",
                    el.as_secs(),
                    tot.as_secs(),
                    hms(self.total.saturating_sub(self.started.elapsed()))
                );
            }
        })
        .map_err(|e| format!("{label}: {e}"))?;
        let _g = self.saving.lock();
        for r in &rs {
            eprintln!(
                "lab:   {label} {:<22} {:>6.1} req/s p99 {:>8.1} ms  timeouts {:>5} 5xx {:>5}  CoV {:.3} max/mean {:.2}  CPU {:.0}%",
                r.policy.name(),
                r.goodput,
                r.p99_ms,
                r.timeouts,
                r.http_5xx,
                r.bottleneck.cov,
                r.bottleneck.max_over_mean,
                r.machine_cpu_pct
            );
        }
        run::save(self.out, &rs).map_err(|e| format!("{}: {e}", self.out.display()))
    }
}

fn report(out: &Path) {
    match run::report(out, &[]) {
        Ok(s) if s.success() => {
            if let Ok(md) = std::fs::read_to_string(out.join("summary.md")) {
                println!("{md}");
            }
            println!(
                "lab: results in {}/ (summary.md, results.jsonl, *.png)",
                out.display()
            );
        }
        _ => eprintln!("lab: lab/report.py failed (python3-matplotlib missing?)"),
    }
}

fn cmd_run(a: RunArgs) -> Result<(), String> {
    let sc = scenario::load(&matrix::resolve(&a.events, "lab/scenarios", ".txt"))?;
    let cluster = scenario::load_cluster(&a.cluster)?;
    sc.check(&cluster)?;
    let policies = Policy::parse_list(&a.policies)?;
    let mut cells = Vec::new();
    for &seed in &a.seeds {
        for &level in &a.level {
            if !(level.is_finite() && level > 0.0 && level <= 3.0) {
                return Err(format!("bad level {level} (0 to 3)"));
            }
            cells.push(Cell {
                name: format!("{}_{level}", sc.name),
                scenario: sc.clone(),
                cluster: cluster.clone(),
                level,
                policies: policies.clone(),
                warmup: a.warmup,
                duration: a.duration,
                seed,
                cadence: a.cadence,
                real_cpu: a.real_cpu,
            });
        }
    }
    run_cells(&cells, &a.out, 1)?;
    report(&a.out);
    Ok(())
}

fn cmd_matrix(a: MatrixArgs) -> Result<(), String> {
    let m = matrix::load(&a.file)?;
    let parallel = a.parallel.unwrap_or(m.parallel).max(1);
    let mut cells = m.expand(&a.only)?;
    let jsonl = a.out.join("results.jsonl");
    if a.resume {
        let have: Vec<(String, u64)> = std::fs::read_to_string(&jsonl)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                (
                    v["cell"].as_str().unwrap_or("").to_string(),
                    v["seed"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        cells.retain(|c| !have.contains(&(c.name.clone(), c.seed)));
    }
    if a.dry_run {
        for c in &cells {
            println!(
                "{} seed {} level {} ({}, {} policies, {}): {} s",
                c.name,
                c.seed,
                c.level,
                c.scenario.name,
                c.policies.len(),
                c.cadence.label(),
                c.estimate().as_secs()
            );
        }
        println!(
            "total about {} ({} at a time, real-CPU cells alone)",
            hms(run::batch_estimate(&cells, parallel)),
            parallel
        );
        return Ok(());
    }
    if !a.resume && jsonl.exists() {
        let old = a.out.join("results.jsonl.old");
        std::fs::rename(&jsonl, &old).map_err(|e| e.to_string())?;
        eprintln!("lab: previous results moved to {}", old.display());
    }
    run_cells(&cells, &a.out, parallel)?;
    report(&a.out);
    Ok(())
}

fn cmd_demo(out: PathBuf) -> Result<(), String> {
    let sc = scenario::load(&run::repo_root().join("lab/scenarios/background.txt"))?;
    let cluster = scenario::load_cluster(&run::default_cluster())?;
    let cell = Cell {
        name: "demo_background_0.8".into(),
        scenario: sc,
        cluster,
        level: 0.8,
        policies: Policy::parse_list("wrr,lc,lt,dwepc,hyb")?,
        warmup: Duration::from_secs(80),
        duration: Duration::from_secs(150),
        seed: 1,
        cadence: Cadence::VSPHERE,
        real_cpu: None,
    };
    if out.join("results.jsonl").exists() {
        let _ = std::fs::remove_file(out.join("results.jsonl"));
    }
    run_cells(&[cell], &out, 1)?;
    report(&out);
    Ok(())
}

fn cmd_load(spec: &Path, out: &Path, start_at_ms: u64, backends: &[String]) -> Result<(), String> {
    let text = std::fs::read_to_string(spec).map_err(|e| format!("{}: {e}", spec.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let spec = dwepc_lab::load::LoadSpec::from_json(&v)?;
    let now = dwepc_core::clock::now_ms();
    if start_at_ms > now {
        std::thread::sleep(Duration::from_millis(start_at_ms - now));
    }
    let recs = dwepc_lab::load::run(&spec, backends);
    let tmp = out.with_extension("tmp");
    let f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    dwepc_lab::load::write_records(std::io::BufWriter::new(f), &recs).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, out).map_err(|e| e.to_string())
}

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.cmd,
        Cmd::Vms { .. } | Cmd::Cpuhold(_) | Cmd::Report { .. }
    ) {
        // before any thread starts: Ctrl-C / SIGTERM stop every process
        dwepc_lab::procs::install_stop_handler();
        let fds = dwepc_lab::procs::raise_fd_limit();
        if fds < 20_000 {
            eprintln!(
                "lab: warning: only {fds} open files allowed; cells side by side may run out"
            );
        }
    }
    let res = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Matrix(a) => cmd_matrix(a),
        Cmd::Demo { out } => cmd_demo(out),
        Cmd::Overhead(w) => {
            let rows = dwepc_lab::overhead::run(w.rounds, w.duration, w.connections);
            println!("{}", dwepc_lab::overhead::markdown(&rows));
            Ok(())
        }
        Cmd::Scale {
            servers,
            wrk: w,
            niced,
            vcsim_apart,
            collector_apart,
            interval,
        } => {
            use dwepc_lab::scale::Vcenter;
            let vcenter = match (niced, vcsim_apart, collector_apart) {
                (true, ..) => Vcenter::Niced,
                (_, true, true) => Vcenter::ApartWithCollector,
                (_, true, false) => Vcenter::Apart,
                _ => Vcenter::Shared,
            };
            println!(
                "{}",
                dwepc_lab::scale::run(
                    servers,
                    w.rounds,
                    (w.duration, w.connections),
                    vcenter,
                    interval
                )
            );
            Ok(())
        }
        Cmd::Report { dir } => {
            report(&dir);
            Ok(())
        }
        Cmd::Cpuhold(h) => {
            if !(0.0..=100.0).contains(&h.lo) || !(h.lo..=100.0).contains(&h.hi) {
                Err("the band must be 0 <= LO <= HI <= 100".to_string())
            } else {
                let o = dwepc_lab::hold::HoldOpts {
                    lo: h.lo,
                    hi: h.hi,
                    threads: h.threads,
                    step: h.step,
                    busy_ms: h.busy_ms,
                    sleep_ms: h.sleep_ms,
                    duration: h.duration,
                };
                std::process::exit(match &h.cgroup {
                    Some(g) => dwepc_lab::hold::run_in_cgroup(&o, g),
                    None => dwepc_lab::hold::run_machine(&o),
                })
            }
        }
        Cmd::Vms {
            spec,
            control,
            ready,
            real_cpu,
        } => std::process::exit(dwepc_lab::vm::main(
            &spec,
            &control,
            ready.as_deref(),
            real_cpu,
        )),
        Cmd::Load {
            spec,
            out,
            start_at_ms,
            backends,
        } => cmd_load(&spec, &out, start_at_ms, &backends),
    };
    if let Err(e) = res {
        eprintln!("dwepc-lab: {e}");
        dwepc_lab::procs::stop_all(Duration::from_secs(3));
        std::process::exit(1);
    }
}
