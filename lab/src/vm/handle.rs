//! The in-process API: start a set of emulated VMs with its control
//! endpoint, drive them, wait, stop.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::burn::RealCpu;
use super::control::control_loop;
use super::lab::{bind, Lab, Vm};
use super::lock;
use super::pages::filler;
use super::spec::{check_names, Usage, VmSpec};
use super::state::State;

/// A running VM set (its own 2-thread tokio runtime). Dropping it stops
/// everything.
pub struct Handle {
    rt: Option<tokio::runtime::Runtime>,
    lab: Arc<Lab>,
}

/// Starts the VMs of `specs` and the control endpoint on `control`
/// (`"127.0.0.1:0"` = any free port). All listeners are bound on return.
pub fn start(specs: Vec<VmSpec>, control: &str) -> io::Result<Handle> {
    start_on(specs, control, None)
}

/// As [`start`], the VMs on real CPUs when `mhz_per_core` is given: each a
/// cgroup whose quota is its size (one real core standing for
/// `mhz_per_core` MHz) with a thread per vCPU that burns the requests' CPU
/// work (root only: the cgroup v1 `cpu` and `cpuacct` hierarchies).
pub fn start_on(
    specs: Vec<VmSpec>,
    control: &str,
    mhz_per_core: Option<f64>,
) -> io::Result<Handle> {
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, e);
    for s in &specs {
        s.validate().map_err(invalid)?;
    }
    check_names(&specs).map_err(invalid)?;
    filler();
    let control_addr = control
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| invalid(format!("control address {control:?}")))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("dwepc-vms")
        .enable_all()
        .build()?;
    let lab = {
        let _g = rt.enter();
        let control_listener = bind(control_addr)
            .map_err(|e| io::Error::new(e.kind(), format!("control {control_addr}: {e}")))?;
        let mut listeners = Vec::new();
        for s in &specs {
            let addr = SocketAddr::new(s.ip.parse().map_err(|_| invalid(s.ip.clone()))?, s.port);
            let l = bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("VM {} on {addr}: {e}", s.name)))?;
            listeners.push(l);
        }
        let base = Instant::now();
        let mut vms = Vec::new();
        for (s, l) in specs.iter().zip(&listeners) {
            let real = match mhz_per_core {
                Some(m) => Some(RealCpu::start(&s.name, s.cpu_mhz, s.vcpus, m)?),
                None => None,
            };
            vms.push(Arc::new(Vm {
                name: s.name.clone(),
                addr: l.local_addr()?,
                memory_mb: s.memory_mb,
                state: Mutex::new(State::new(s, 0.0)),
                epoch: watch::channel(0).0,
                life: watch::channel(0).0,
                listener_fd: Mutex::new(None),
                real,
            }));
        }
        let lab = Arc::new(Lab {
            base,
            base_tokio: tokio::time::Instant::from_std(base),
            vms,
            rt: rt.handle().clone(),
            control: control_listener.local_addr()?,
            quit: watch::channel(false).0,
        });
        for (vm, l) in lab.vms.iter().zip(listeners) {
            lab.listen(vm.clone(), l, lock(&vm.listener_fd));
        }
        rt.spawn(control_loop(lab.clone(), control_listener));
        lab
    };
    Ok(Handle { rt: Some(rt), lab })
}

impl Handle {
    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().expect("runtime")
    }

    pub fn control_addr(&self) -> SocketAddr {
        self.lab.control
    }

    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.lab.vm(name).ok().map(|v| v.addr)
    }

    /// `{"control":"127.0.0.1:P","vms":[{"name":..,"addr":"ip:port"},...]}`
    pub fn ready_json(&self) -> Value {
        self.lab.ready_json()
    }

    /// Every VM's usage, measured at the same instant.
    pub fn usage(&self) -> Vec<Usage> {
        self.lab.usage()
    }

    pub fn set_hog(&self, name: &str, mhz: f64) -> Result<(), String> {
        self.lab.set_hog(name, mhz).map_err(|e| e.1)
    }

    pub fn set_cpu(&self, name: &str, mhz: f64) -> Result<(), String> {
        self.lab.set_cpu(name, mhz).map_err(|e| e.1)
    }

    pub fn set_net(&self, name: &str, kbps: f64) -> Result<(), String> {
        self.lab.set_net(name, kbps).map_err(|e| e.1)
    }

    /// The hypervisor withholds `pct` % of the cycles (shown as CPU ready).
    pub fn set_contention(&self, name: &str, pct: f64) -> Result<(), String> {
        self.lab.set_contention(name, pct).map_err(|e| e.1)
    }

    /// The VM loses `pct` % of its speed, shown by no counter.
    pub fn set_slowdown(&self, name: &str, pct: f64) -> Result<(), String> {
        self.lab.set_slowdown(name, pct).map_err(|e| e.1)
    }

    pub fn down(&self, name: &str) -> Result<(), String> {
        self.lab.down(name).map_err(|e| e.1)
    }

    pub fn up(&self, name: &str) -> Result<(), String> {
        self.lab.up(name).map_err(|e| e.1)
    }

    /// Blocks until `GET /quit` (not from inside an async context).
    pub fn wait(&self) {
        let mut rx = self.lab.quit.subscribe();
        self.rt().block_on(async {
            let _ = rx.wait_for(|q| *q).await;
        });
    }

    /// Blocks until `GET /quit`, SIGTERM or SIGINT.
    pub fn wait_signals(&self) -> io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut rx = self.lab.quit.subscribe();
        self.rt().block_on(async {
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::select! {
                _ = rx.wait_for(|q| *q) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            Ok(())
        })
    }

    /// Stops everything (as dropping does).
    pub fn stop(self) {}
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(2));
            }
        }
    }
}
