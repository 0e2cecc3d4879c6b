//! Holding a CPU's utilisation in a band with an adaptive number of
//! threads, as the CPU-hold script of the blog post "虚拟化环境下服务器负载均衡的参考实现"
//! ("A reference implementation of server load balancing in virtualised
//! environments") does (`min max threads step sleep`): every second the
//! utilisation is measured; below the band `step` threads are added, above
//! it `step` are removed.
//!
//! The same controller drives two things:
//!
//! * `dwepc-lab cpuhold LO HI`: a real machine's CPU (all cores, from
//!   `/proc/stat`), with real threads that each run a duty cycle (busy for
//!   `busy_ms`, then sleep `sleep_ms`), for experiments outside the lab;
//! * `dwepc-lab cpuhold LO HI --cgroup PATH`: the same job as a real
//!   process inside a VM on real CPUs (the real-CPU cells), holding its own
//!   share of the VM's quota;
//! * the lab's background job (`at 60s vm5 background cpu 40-50%`): a batch
//!   job inside an emulated VM whose threads each take about 5 % of the VM's
//!   CPU (jittered per second, as a real job's threads do); the controller
//!   measures the job's own share of the VM and keeps it in the band. Its
//!   CPU shows in the VM's usage counter; requests get what is left.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwepc_core::rng::Rng;

/// The controller of the blog post's CPU-hold script (see the module's doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Holder {
    /// Band, percent.
    pub lo: f64,
    pub hi: f64,
    /// Threads added or removed per adjustment.
    pub step: u32,
    /// Threads now.
    pub threads: u32,
    /// Never more than this.
    pub max_threads: u32,
}

impl Holder {
    /// A controller for the band `lo..=hi` starting with `threads`.
    pub fn new(lo: f64, hi: f64, threads: u32, step: u32, max_threads: u32) -> Holder {
        Holder {
            lo,
            hi,
            step: step.max(1),
            threads: threads.min(max_threads),
            max_threads,
        }
    }

    /// One adjustment after measuring `pct`; returns the new thread count.
    pub fn adjust(&mut self, pct: f64) -> u32 {
        if pct < self.lo {
            self.threads = (self.threads + self.step).min(self.max_threads);
        } else if pct > self.hi {
            self.threads = self.threads.saturating_sub(self.step);
        }
        self.threads
    }
}

/// The lab's background job in one emulated VM.
#[derive(Clone, Debug)]
pub struct BackgroundJob {
    pub holder: Holder,
    /// CPU of one thread, percent of the VM.
    pub thread_pct: f64,
    rng: Rng,
    /// The job's CPU in the last second, percent of the VM.
    pub last_pct: f64,
}

impl BackgroundJob {
    /// A job holding `lo..=hi` percent; `seed` fixes its jitter, so every
    /// policy's copy of the cluster sees the same job.
    pub fn new(lo: f64, hi: f64, seed: u64) -> BackgroundJob {
        let thread_pct = 5.0;
        let mid = 0.5 * (lo + hi);
        // mean jitter 0.8: start near the band
        let start = (mid / (thread_pct * 0.8)).round() as u32;
        BackgroundJob {
            holder: Holder::new(lo, hi, start, 1, 40),
            thread_pct,
            rng: Rng::new(seed | 1),
            last_pct: 0.0,
        }
    }

    /// One second: the job's CPU in percent of the VM for the next second
    /// (then measured and fed back to the controller).
    pub fn tick(&mut self) -> f64 {
        let mut pct = 0.0;
        for _ in 0..self.holder.threads {
            // each thread gets 60–100 % of a time slice
            let j = 0.6 + 0.4 * (self.rng.below(1_000_000) as f64 / 1e6);
            pct += self.thread_pct * j;
        }
        let pct = pct.min(99.0);
        self.last_pct = pct;
        self.holder.adjust(pct);
        pct
    }
}

/// Busy/idle jiffies of all CPUs from `/proc/stat`.
fn cpu_times() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let idle = v[3] + v[4];
    let total: u64 = v.iter().take(8).sum();
    Some((total - idle, total))
}

/// Machine CPU utilisation, percent, between two [`cpu_times`] readings.
pub fn machine_busy_pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let busy = b.0.saturating_sub(a.0) as f64;
    let total = b.1.saturating_sub(a.1) as f64;
    if total > 0.0 {
        100.0 * busy / total
    } else {
        f64::NAN
    }
}

/// A reading of the machine's CPU counters (for [`machine_busy_pct`]).
pub fn machine_cpu() -> (u64, u64) {
    cpu_times().unwrap_or((0, 0))
}

/// Options of `dwepc-lab cpuhold`.
#[derive(Clone, Debug)]
pub struct HoldOpts {
    pub lo: f64,
    pub hi: f64,
    pub threads: u32,
    pub step: u32,
    pub busy_ms: u64,
    pub sleep_ms: u64,
    /// Stop after this long (None: until killed).
    pub duration: Option<Duration>,
}

/// `dwepc-lab cpuhold`: holds this machine's CPU utilisation in the band,
/// printing one line per second as the blog post's CPU-hold script does.
pub fn run_machine(o: &HoldOpts) -> i32 {
    let max = 64 * std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut last = machine_cpu();
    hold(o, max, "CPU usage", move || {
        let now = machine_cpu();
        let pct = machine_busy_pct(last, now);
        last = now;
        pct
    })
}

/// `dwepc-lab cpuhold --cgroup PATH`: the batch job inside a VM on real
/// CPUs (the lab's real-CPU cells): moves itself into the VM's cgroup and
/// holds its own CPU, as a share of the VM's quota, in the band — the
/// share the lab's emulated background job holds (not the VM's total,
/// which includes the requests). Each thread's duty cycle is about 5 % of
/// the VM (`busy_ms` busy, then the rest of its slot asleep), as the
/// emulated job's threads. It ends when the VM's group is gone or the
/// process that started it is (it must not burn CPU outside its VM).
pub fn run_in_cgroup(o: &HoldOpts, cgroup: &std::path::Path) -> i32 {
    let g = match crate::cgroup::Cgroup::open(cgroup) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("cpuhold: {e}");
            return 1;
        }
    };
    let cores = match g.join_process(std::process::id()).and_then(|()| g.cores()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cpuhold: {e}");
            return 1;
        }
    };
    let busy = o.busy_ms.max(1);
    let duty = (0.05 * cores).clamp(0.001, 1.0);
    let o = HoldOpts {
        busy_ms: busy,
        sleep_ms: ((busy as f64 / duty) - busy as f64).round() as u64,
        ..o.clone()
    };
    let (mut last_cpu, mut last_t) = (crate::cgroup::process_cpu_ns(), Instant::now());
    hold(&o, 40, "job's CPU of the VM", move || {
        // SAFETY: getppid has no preconditions and cannot fail.
        let orphan = unsafe { libc::getppid() } == 1;
        if orphan || !g.cpu_path().is_dir() {
            std::process::exit(0);
        }
        // the VM's size now (a resize changes it)
        let cores = g.cores().unwrap_or(cores);
        let (cpu, t) = (crate::cgroup::process_cpu_ns(), Instant::now());
        let wall = t.duration_since(last_t).as_nanos() as f64;
        let pct = 100.0 * cpu.saturating_sub(last_cpu) as f64 / (wall * cores).max(1.0);
        (last_cpu, last_t) = (cpu, t);
        pct
    })
}

/// The CPU-hold loop: `threads` duty-cycle threads, once a second
/// `measure()` (percent) and one adjustment, one line printed.
fn hold(o: &HoldOpts, max: u32, what: &str, mut measure: impl FnMut() -> f64) -> i32 {
    let mut holder = Holder::new(o.lo, o.hi, o.threads, o.step, max);
    let mut workers: Vec<Arc<AtomicBool>> = Vec::new();
    let spawn = |busy: u64, sleep: u64| {
        let run = Arc::new(AtomicBool::new(true));
        let r = run.clone();
        std::thread::spawn(move || {
            while r.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_millis(busy) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
                std::thread::sleep(Duration::from_millis(sleep));
            }
        });
        run
    };
    println!(
        "cpuhold: band {:.0}-{:.0} %, start {} threads, step {}, {} ms busy / {} ms sleep",
        o.lo, o.hi, o.threads, o.step, o.busy_ms, o.sleep_ms
    );
    let start = Instant::now();
    loop {
        while workers.len() < holder.threads as usize {
            workers.push(spawn(o.busy_ms, o.sleep_ms));
        }
        while workers.len() > holder.threads as usize {
            if let Some(w) = workers.pop() {
                w.store(false, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
        let pct = measure();
        println!("{what}: {pct:.1} %\tthreads: {}", workers.len());
        holder.adjust(pct);
        if o.duration.is_some_and(|d| start.elapsed() >= d) {
            for w in &workers {
                w.store(false, Ordering::Relaxed);
            }
            return 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_follows_the_seed_script() {
        let mut h = Holder::new(40.0, 50.0, 4, 2, 10);
        assert_eq!(h.adjust(30.0), 6);
        assert_eq!(h.adjust(45.0), 6);
        assert_eq!(h.adjust(60.0), 4);
        assert_eq!(h.adjust(0.0), 6);
        assert_eq!(h.adjust(0.0), 8);
        assert_eq!(h.adjust(0.0), 10);
        assert_eq!(h.adjust(0.0), 10); // capped
        let mut h = Holder::new(40.0, 50.0, 1, 2, 10);
        assert_eq!(h.adjust(99.0), 0);
    }

    #[test]
    fn background_job_stays_near_its_band() {
        let mut job = BackgroundJob::new(40.0, 50.0, 7);
        let v: Vec<f64> = (0..600).map(|_| job.tick()).collect();
        let tail = &v[30..];
        let mean = tail.iter().sum::<f64>() / tail.len() as f64;
        assert!((38.0..=52.0).contains(&mean), "mean {mean}");
        let inside = tail.iter().filter(|x| (35.0..=55.0).contains(*x)).count();
        assert!(inside as f64 > 0.8 * tail.len() as f64, "{inside}");
        // same seed, same job
        let mut again = BackgroundJob::new(40.0, 50.0, 7);
        assert_eq!(again.tick(), v[0]);
    }

    #[test]
    fn machine_cpu_reads() {
        let a = machine_cpu();
        std::thread::sleep(Duration::from_millis(50));
        let b = machine_cpu();
        assert!(b.1 >= a.1);
        assert!(machine_busy_pct((0, 0), (0, 0)).is_nan());
        assert_eq!(machine_busy_pct((0, 0), (50, 100)), 50.0);
    }
}
