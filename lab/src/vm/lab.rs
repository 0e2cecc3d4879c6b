//! The set of emulated VMs of one process and the operations on them:
//! usage, capacity changes, down and up.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use super::burn::RealCpu;
use super::lock;
use super::queue::Queue;
use super::serve::accept_loop;
use super::spec::Usage;
use super::state::State;
use dwepc_core::clock;

/// Listen backlog of every VM.
const BACKLOG: u32 = 1024;

/// One emulated VM: its address, its state and the signals of its tasks.
pub(super) struct Vm {
    pub(super) name: String,
    pub(super) addr: SocketAddr,
    pub(super) memory_mb: f64,
    pub(super) state: Mutex<State>,
    /// Bumped on every capacity change: waiting requests re-time.
    pub(super) epoch: watch::Sender<u64>,
    /// Bumped when the VM goes down: its listener and connections close.
    pub(super) life: watch::Sender<u64>,
    /// The raw fd of the listener while up (serialises up/down).
    pub(super) listener_fd: Mutex<Option<i32>>,
    /// On real CPUs (a cgroup and vCPU threads) instead of emulated ones.
    pub(super) real: Option<RealCpu>,
}

impl Vm {
    pub(super) fn usage(&self, st: &State, t: f64, wall_ms: u64) -> Usage {
        let (cpu_mhz_ms, ready_ms) = match &self.real {
            Some(r) => (r.cpu_mhz_ms(), 0.0),
            None => (st.cpu_mhz_ms(t), st.ready_ms(t)),
        };
        Usage {
            name: self.name.clone(),
            t_ms: wall_ms,
            cpu_mhz_ms,
            bytes_sent: st.bytes_sent(t),
            requests: st.requests,
            active: st.active,
            in_flight: st.in_flight,
            mem_kb: 0.3 * self.memory_mb * 1024.0 + 1024.0 * st.active as f64,
            hog_mhz: st.hog_mhz,
            cpu_mhz: st.cpu_mhz,
            cpu_eff_mhz: st.cpu_eff(),
            ready_ms,
            up: st.up,
        }
    }
}

/// An error of a control operation: HTTP status and message.
pub(super) type CtlError = (u16, String);

/// The VMs of this process, their clock and runtime, and the control
/// endpoint's address.
pub(super) struct Lab {
    pub(super) base: Instant,
    pub(super) base_tokio: tokio::time::Instant,
    pub(super) vms: Vec<Arc<Vm>>,
    pub(super) rt: tokio::runtime::Handle,
    pub(super) control: SocketAddr,
    pub(super) quit: watch::Sender<bool>,
}

impl Lab {
    /// Now, ms since `base` (take it while holding the VM's lock).
    pub(super) fn now_ms(&self) -> f64 {
        self.base.elapsed().as_secs_f64() * 1000.0
    }

    pub(super) fn at(&self, ms: f64) -> tokio::time::Instant {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 1e12 };
        self.base_tokio + Duration::from_secs_f64(ms / 1000.0)
    }

    pub(super) fn vm(&self, name: &str) -> Result<&Arc<Vm>, CtlError> {
        self.vms
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| (404, format!("no VM named {name:?}")))
    }

    pub(super) fn usage(&self) -> Vec<Usage> {
        let guards: Vec<_> = self.vms.iter().map(|v| lock(&v.state)).collect();
        let t = self.now_ms();
        let wall = clock::now_ms();
        self.vms
            .iter()
            .zip(&guards)
            .map(|(vm, st)| vm.usage(st, t, wall))
            .collect()
    }

    pub(super) fn usage_of(&self, name: &str) -> Result<Usage, CtlError> {
        let vm = self.vm(name)?;
        let st = lock(&vm.state);
        Ok(vm.usage(&st, self.now_ms(), clock::now_ms()))
    }

    pub(super) fn reconfigure(
        &self,
        name: &str,
        f: impl FnOnce(&mut State),
    ) -> Result<(), CtlError> {
        let vm = self.vm(name)?;
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, f);
        }
        vm.epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    /// Refuses an emulated change on a VM on real CPUs (what it would
    /// emulate is real there: a real job, a real quota).
    fn emulated_only(&self, name: &str, what: &str) -> Result<(), CtlError> {
        match self.vm(name)?.real {
            Some(_) => Err((
                400,
                format!("VM {name} runs on real CPUs: no emulated {what}"),
            )),
            None => Ok(()),
        }
    }

    pub(super) fn set_hog(&self, name: &str, mhz: f64) -> Result<(), CtlError> {
        if !(mhz.is_finite() && mhz >= 0.0) {
            return Err((400, format!("bad hog {mhz}")));
        }
        if mhz > 0.0 {
            self.emulated_only(name, "hog (run `dwepc-lab cpuhold --cgroup` in it)")?;
        }
        self.reconfigure(name, |s| s.hog_mhz = mhz)
    }

    pub(super) fn set_cpu(&self, name: &str, mhz: f64) -> Result<(), CtlError> {
        if !(mhz.is_finite() && mhz >= 1.0) {
            return Err((400, format!("bad cpu capacity {mhz} (>= 1 MHz)")));
        }
        if let Some(r) = &self.vm(name)?.real {
            r.set_mhz(mhz).map_err(|e| (500, e.to_string()))?;
        }
        self.reconfigure(name, |s| s.cpu_mhz = mhz)
    }

    /// A CPU hot-add: `n` vCPUs of the speed the VM's vCPUs have (its
    /// capacity grows with them); a running VM only gains vCPUs.
    pub(super) fn set_vcpus(&self, name: &str, n: f64) -> Result<(), CtlError> {
        self.emulated_only(name, "vCPU hot-add")?;
        let have = lock(&self.vm(name)?.state).servers.len();
        if !(n.fract() == 0.0 && (have as f64..=1024.0).contains(&n)) {
            return Err((
                400,
                format!("bad vCPU count {n} ({have} to 1024: a running VM only gains vCPUs)"),
            ));
        }
        let t = self.now_ms();
        self.reconfigure(name, |s| {
            s.cpu_mhz *= n / s.servers.len() as f64;
            s.servers.resize(n as usize, Queue::new(1.0, t));
        })
    }

    pub(super) fn set_net(&self, name: &str, kbps: f64) -> Result<(), CtlError> {
        if !(kbps.is_finite() && kbps >= 0.0) {
            return Err((400, format!("bad link capacity {kbps}")));
        }
        self.reconfigure(name, |s| s.net_kbps = kbps)
    }

    pub(super) fn set_contention(&self, name: &str, pct: f64) -> Result<(), CtlError> {
        if !(pct.is_finite() && (0.0..=95.0).contains(&pct)) {
            return Err((400, format!("bad contention {pct} (0 to 95 %)")));
        }
        if pct > 0.0 {
            self.emulated_only(name, "contention")?;
        }
        self.reconfigure(name, |s| s.contention = pct / 100.0)
    }

    pub(super) fn set_slowdown(&self, name: &str, pct: f64) -> Result<(), CtlError> {
        if !(pct.is_finite() && (0.0..=95.0).contains(&pct)) {
            return Err((400, format!("bad slowdown {pct} (0 to 95 %)")));
        }
        if pct > 0.0 {
            self.emulated_only(name, "slowdown")?;
        }
        self.reconfigure(name, |s| s.slowdown = pct / 100.0)
    }

    pub(super) fn down(&self, name: &str) -> Result<(), CtlError> {
        let vm = self.vm(name)?;
        let mut fd = lock(&vm.listener_fd);
        let Some(raw) = fd.take() else {
            return Ok(());
        };
        // Stops listening now (new connections are refused at once); the
        // accept loop owns the fd and closes it when it sees `life` change.
        // SAFETY: the listener is alive until its loop sees `life` change.
        unsafe { libc::shutdown(raw, libc::SHUT_RDWR) };
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, |s| {
                s.up = false;
                s.servers.iter_mut().for_each(|q| q.truncate(t));
                if let Some(l) = &mut s.link {
                    l.truncate(t);
                }
            });
        }
        vm.life.send_modify(|g| *g += 1);
        vm.epoch.send_modify(|e| *e += 1);
        Ok(())
    }

    pub(super) fn up(self: &Arc<Self>, name: &str) -> Result<(), CtlError> {
        let vm = self.vm(name)?.clone();
        let fd = lock(&vm.listener_fd);
        if fd.is_some() {
            return Ok(());
        }
        let listener = {
            let _g = self.rt.enter();
            bind(vm.addr)
        }
        .map_err(|e| (500, format!("bind {}: {e}", vm.addr)))?;
        self.listen(vm.clone(), listener, fd);
        Ok(())
    }

    /// Marks `vm` up and serves `listener` (with the `listener_fd` lock).
    pub(super) fn listen(
        self: &Arc<Self>,
        vm: Arc<Vm>,
        listener: TcpListener,
        mut fd: MutexGuard<Option<i32>>,
    ) {
        *fd = Some(listener.as_raw_fd());
        {
            let mut st = lock(&vm.state);
            let t = self.now_ms();
            st.reconfigure(t, |s| s.up = true);
        }
        let life = vm.life.subscribe();
        self.rt
            .spawn(accept_loop(self.clone(), vm.clone(), listener, life));
        drop(fd);
        vm.epoch.send_modify(|e| *e += 1);
    }

    pub(super) fn ready_json(&self) -> Value {
        let vm = |v: &Vm| {
            let mut o = json!({"name": v.name, "addr": v.addr.to_string()});
            if let Some(r) = &v.real {
                o["cgroup"] = r.cgroup.cpu_path().display().to_string().into();
            }
            o
        };
        json!({
            "control": self.control.to_string(),
            "vms": self.vms.iter().map(|v| vm(v.as_ref())).collect::<Vec<_>>(),
        })
    }
}

/// Binds a listener with `SO_REUSEADDR` and the VMs' backlog.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(BACKLOG)
}
