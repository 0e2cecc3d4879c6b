//! A VM on real CPUs (the lab's real-CPU cells): a pair of Linux cgroup v1
//! groups, one in the `cpu` hierarchy (a CFS quota: the VM's size in cores)
//! and one in `cpuacct` (the CPU its tasks used), named
//! `/sys/fs/cgroup/{cpu,cpuacct}/dwepc-lab-PID/VM`, with a child group per
//! vCPU (`VM/vcpuK`, a quota of the VM's size ÷ its vCPUs: one vCPU runs at
//! its share of the VM, as in the emulated VM). Threads join with
//! [`Cgroup::join_thread`], a whole process with [`Cgroup::join_process`].
//! Dropping a group made here moves its remaining tasks back to the root
//! and removes it.

use std::io;
use std::path::{Path, PathBuf};

/// The cgroup v1 hierarchies.
pub const CPU_ROOT: &str = "/sys/fs/cgroup/cpu";
pub const ACCT_ROOT: &str = "/sys/fs/cgroup/cpuacct";

/// The CFS period, µs: short, so that a small VM's quota comes in small
/// slices (a 0.07-core VM runs 1.4 ms of every 20).
pub const PERIOD_US: u64 = 20_000;

/// The kernel's smallest quota, µs.
const MIN_QUOTA_US: u64 = 1_000;

/// One VM's groups.
#[derive(Debug)]
pub struct Cgroup {
    cpu: PathBuf,
    acct: PathBuf,
    /// Made here (removed when dropped), not opened.
    owned: bool,
    /// A VM's group: its parent (this process's directory) goes with the
    /// last VM.
    top: bool,
}

fn with_path(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

fn write(p: &Path, v: &str) -> io::Result<()> {
    std::fs::write(p, v).map_err(|e| with_path(e, p))
}

fn read_u64(p: &Path) -> io::Result<u64> {
    let t = std::fs::read_to_string(p).map_err(|e| with_path(e, p))?;
    t.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {t:?}", p.display()),
        )
    })
}

impl Cgroup {
    /// Makes VM `name`'s groups under this process's directory, `cores`
    /// cores large.
    pub fn create(name: &str, cores: f64) -> io::Result<Cgroup> {
        let dir = format!("dwepc-lab-{}", std::process::id());
        let rel = Path::new(&dir).join(name);
        Cgroup::make(CPU_ROOT.as_ref(), ACCT_ROOT.as_ref(), &rel, true, cores)
    }

    /// Makes the groups `rel` under `cpu` and `acct`, `cores` cores large.
    fn make(cpu: &Path, acct: &Path, rel: &Path, top: bool, cores: f64) -> io::Result<Cgroup> {
        let g = Cgroup {
            cpu: cpu.join(rel),
            acct: acct.join(rel),
            owned: true,
            top,
        };
        for p in [&g.cpu, &g.acct] {
            std::fs::create_dir_all(p).map_err(|e| with_path(e, p))?;
        }
        g.set_cores(cores)?;
        Ok(g)
    }

    /// Makes a child group `name`, `cores` cores large (within this
    /// group's quota; this group's accounting includes it).
    pub fn child(&self, name: &str, cores: f64) -> io::Result<Cgroup> {
        Cgroup::make(&self.cpu, &self.acct, name.as_ref(), false, cores)
    }

    /// Opens the groups whose `cpu` group is `cpu_path` (as the VMs'
    /// ready file gives it).
    pub fn open(cpu_path: &Path) -> io::Result<Cgroup> {
        let rel = cpu_path.strip_prefix(CPU_ROOT).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not under {CPU_ROOT}", cpu_path.display()),
            )
        })?;
        let g = Cgroup {
            cpu: cpu_path.to_path_buf(),
            acct: Path::new(ACCT_ROOT).join(rel),
            owned: false,
            top: false,
        };
        for p in [&g.cpu, &g.acct] {
            if !p.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no cgroup {}", p.display()),
                ));
            }
        }
        Ok(g)
    }

    /// The group in the `cpu` hierarchy.
    pub fn cpu_path(&self) -> &Path {
        &self.cpu
    }

    /// Sets the quota to `cores` cores (at least the kernel's 1 ms).
    pub fn set_cores(&self, cores: f64) -> io::Result<()> {
        let quota = ((cores * PERIOD_US as f64).round() as u64).max(MIN_QUOTA_US);
        write(&self.cpu.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(&self.cpu.join("cpu.cfs_quota_us"), &quota.to_string())
    }

    /// The quota, cores.
    pub fn cores(&self) -> io::Result<f64> {
        let quota = read_u64(&self.cpu.join("cpu.cfs_quota_us"))?;
        let period = read_u64(&self.cpu.join("cpu.cfs_period_us"))?;
        Ok(quota as f64 / period.max(1) as f64)
    }

    /// Moves the calling thread into the groups.
    pub fn join_thread(&self) -> io::Result<()> {
        // SAFETY: gettid has no preconditions and cannot fail.
        let tid = unsafe { libc::gettid() };
        for p in [&self.cpu, &self.acct] {
            write(&p.join("tasks"), &tid.to_string())?;
        }
        Ok(())
    }

    /// Moves every thread of process `pid` into the groups.
    pub fn join_process(&self, pid: u32) -> io::Result<()> {
        for p in [&self.cpu, &self.acct] {
            write(&p.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// CPU used by the groups' tasks since the group was made, ns.
    pub fn usage_ns(&self) -> u64 {
        read_u64(&self.acct.join("cpuacct.usage")).unwrap_or(0)
    }

    /// Time the group had work but had used its quota, ns.
    pub fn throttled_ns(&self) -> u64 {
        std::fs::read_to_string(self.cpu.join("cpu.stat"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("throttled_time "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        for (p, root) in [(&self.cpu, CPU_ROOT), (&self.acct, ACCT_ROOT)] {
            if let Ok(tasks) = std::fs::read_to_string(p.join("tasks")) {
                for tid in tasks.lines() {
                    let _ = std::fs::write(Path::new(root).join("tasks"), tid);
                }
            }
            remove_dir(p);
            // this process's directory, once its last VM is gone
            if let Some(parent) = p.parent().filter(|_| self.top) {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

/// Removes the (empty) groups a process that was killed left behind: the
/// VM's group whose `cpu` group is `cpu_path`, its vCPUs' and, once empty,
/// the process's directory.
pub fn remove_left_behind(cpu_path: &Path) {
    let Ok(rel) = cpu_path.strip_prefix(CPU_ROOT) else {
        return;
    };
    for root in [CPU_ROOT, ACCT_ROOT] {
        let p = Path::new(root).join(rel);
        if let Ok(entries) = std::fs::read_dir(&p) {
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                remove_dir(&e.path());
            }
        }
        remove_dir(&p);
        if let Some(parent) = p.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// Removes an empty group, waiting a little for threads that just exited
/// to leave it (the kernel takes them out after their joiner wakes).
fn remove_dir(p: &Path) {
    for _ in 0..40 {
        match std::fs::remove_dir(p) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            _ => return,
        }
    }
}

/// Whether this machine lets us make cgroups: the cgroup v1 `cpu` and
/// `cpuacct` hierarchies, writable (root).
pub fn available() -> bool {
    [CPU_ROOT, ACCT_ROOT].iter().all(|r| {
        let p = Path::new(r).join("cgroup.procs");
        std::fs::OpenOptions::new().append(true).open(p).is_ok()
    })
}

/// Clock `clock` (a CPU-time clock), ns.
fn cpu_clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call to fill.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The CPU the calling thread has used, ns (its own CPU clock).
pub fn thread_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// The CPU this process has used (all threads, user and system), ns.
pub fn process_cpu_ns() -> u64 {
    cpu_clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// Burns `cpu_ms` of the calling thread's CPU time (so a throttled thread
/// takes longer in wall time, as a slower VM would).
pub fn burn(cpu_ms: f64) {
    let target = thread_cpu_ns() + (cpu_ms.max(0.0) * 1e6) as u64;
    let mut x = 1u64;
    while thread_cpu_ns() < target {
        for _ in 0..2_000 {
            x = std::hint::black_box(
                x.wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A thread in a 0.25-core group burns 40 ms of CPU in about 160 ms of
    /// wall time; the group's accounting and throttled time show it; the
    /// group is gone after the drop.
    #[test]
    fn a_quota_slows_a_thread_and_the_group_accounts_for_it() {
        if !available() {
            eprintln!("skipped: no writable cgroup v1 cpu hierarchy (needs root)");
            return;
        }
        let g = std::sync::Arc::new(Cgroup::create("unit-test", 0.5).unwrap());
        // a vCPU of half the VM: 0.25 cores
        let v = std::sync::Arc::new(g.child("vcpu0", 0.25).unwrap());
        assert!((v.cores().unwrap() - 0.25).abs() < 1e-9);
        let v2 = v.clone();
        let wall = std::thread::spawn(move || {
            v2.join_thread().unwrap();
            let t = Instant::now();
            burn(40.0);
            t.elapsed()
        })
        .join()
        .unwrap();
        // the VM's accounting includes its vCPU's
        let used = g.usage_ns() as f64 / 1e6;
        assert!((38.0..60.0).contains(&used), "used {used} ms");
        assert_eq!(v.usage_ns(), g.usage_ns());
        assert!(wall.as_secs_f64() * 1000.0 > 110.0, "wall {wall:?}");
        assert!(v.throttled_ns() > 0);
        drop(v);
        let opened = Cgroup::open(g.cpu_path()).unwrap();
        assert_eq!(opened.usage_ns(), g.usage_ns());
        drop(opened); // not owned: stays
        let path = g.cpu_path().to_path_buf();
        assert!(path.is_dir());
        drop(g);
        assert!(!path.exists());
        assert!(Cgroup::open(Path::new("/tmp/x")).is_err());
    }
}
