//! A VM on real CPUs: its vCPUs are threads, each in its own child group
//! of the VM's cgroup (the VM's quota is its size, a vCPU's its share of
//! it), that take the requests' CPU work in arrival order — a request goes
//! to the vCPU that frees up first, as in the emulated VM — and burn it on
//! their own CPU clock. What the VM used comes from the cgroup's
//! accounting.
//!
//! CPU ready stays 0, as in the emulated VM without contention: a VM (or
//! vCPU) that used up its quota is at its own size, which vSphere counts as
//! usage, not as ready; the cgroup's throttled time says exactly that and
//! is not reported as ready.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::lock;
use crate::cgroup::{burn, Cgroup};

/// One request's CPU work.
struct Job {
    cpu_ms: f64,
    done: oneshot::Sender<()>,
}

/// A real-CPU VM: its cgroup, its vCPU threads and the scale between the
/// emulated MHz and a real core.
pub(super) struct RealCpu {
    pub(super) cgroup: Arc<Cgroup>,
    /// One child group per vCPU (dropped before the VM's group).
    vcpus: Vec<Arc<Cgroup>>,
    /// MHz of the emulated cluster one real core stands for.
    pub(super) mhz_per_core: f64,
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    /// Set when the VM stops: queued work is dropped, not burnt.
    stopping: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl RealCpu {
    /// VM `name` of `cpu_mhz` on `vcpus` threads, one real core standing
    /// for `mhz_per_core`.
    pub(super) fn start(
        name: &str,
        cpu_mhz: f64,
        vcpus: u32,
        mhz_per_core: f64,
    ) -> io::Result<RealCpu> {
        let cores = cpu_mhz / mhz_per_core;
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        // built first, so that an error below drops it: the threads
        // started so far are joined and the groups removed
        let mut vm = RealCpu {
            cgroup: Arc::new(Cgroup::create(name, cores)?),
            vcpus: Vec::new(),
            mhz_per_core,
            tx: Mutex::new(Some(tx)),
            stopping: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        };
        let n = vcpus.max(1);
        for i in 0..n {
            let g = Arc::new(vm.cgroup.child(&format!("vcpu{i}"), cores / n as f64)?);
            vm.vcpus.push(g.clone());
            let (rx, stop) = (rx.clone(), vm.stopping.clone());
            let (joined_tx, joined_rx) = mpsc::channel();
            let t = std::thread::Builder::new()
                .name(format!("{name}-vcpu{i}"))
                .spawn(move || {
                    let joined = g.join_thread();
                    let ok = joined.is_ok();
                    let _ = joined_tx.send(joined);
                    if !ok {
                        return;
                    }
                    loop {
                        // the lock is held while waiting: the next free
                        // vCPU takes the next job
                        let job = lock(&rx).recv();
                        let Ok(job) = job else { return };
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        burn(job.cpu_ms);
                        let _ = job.done.send(());
                    }
                })?;
            lock(&vm.threads).push(t);
            joined_rx
                .recv()
                .map_err(|_| io::Error::other(format!("{name}: a vCPU thread died")))??;
        }
        Ok(vm)
    }

    /// Runs `cost` MHz·ms of work on the next free vCPU; false if the VM
    /// is stopping.
    pub(super) async fn compute(&self, cost: f64) -> bool {
        let (done, rx) = oneshot::channel();
        let job = Job {
            cpu_ms: cost / self.mhz_per_core,
            done,
        };
        let sent = lock(&self.tx)
            .as_ref()
            .is_some_and(|tx| tx.send(job).is_ok());
        sent && rx.await.is_ok()
    }

    /// CPU used, MHz·ms of the emulated cluster.
    pub(super) fn cpu_mhz_ms(&self) -> f64 {
        self.cgroup.usage_ns() as f64 / 1e6 * self.mhz_per_core
    }

    /// Sets the VM's size (its vCPUs share it).
    pub(super) fn set_mhz(&self, cpu_mhz: f64) -> io::Result<()> {
        let cores = cpu_mhz / self.mhz_per_core;
        self.cgroup.set_cores(cores)?;
        for v in &self.vcpus {
            v.set_cores(cores / self.vcpus.len() as f64)?;
        }
        Ok(())
    }
}

impl Drop for RealCpu {
    fn drop(&mut self) {
        // closing the queue ends the threads once their job is done
        self.stopping.store(true, Ordering::Relaxed);
        lock(&self.tx).take();
        for t in lock(&self.threads).drain(..) {
            let _ = t.join();
        }
        // the vCPUs' groups before the VM's
        self.vcpus.clear();
    }
}
