//! The emulated VMs of one stack as a `dwepc-lab vms` process, driven
//! through its control port.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::paths::lab_binary;
use crate::vm::{self, VmSpec};
use crate::{http, wait_for};

/// The emulated VMs of one stack, in a `dwepc-lab vms` process of their
/// own (each process may open 20 000 files: a policy that piles up
/// thousands of requests must not starve the others of connections),
/// driven through its control port.
pub(super) struct VmsProcess {
    child: std::process::Child,
    control: u16,
    pub(super) addrs: Vec<String>,
    /// On real CPUs: each VM's cgroup (its `cpu` group's path).
    pub(super) cgroups: Vec<Option<PathBuf>>,
}

impl VmsProcess {
    /// The VMs of `cluster`, emulated or (`real_cpu`: MHz per real core)
    /// on real CPUs.
    pub(super) fn start(
        cluster: &[VmSpec],
        dir: &Path,
        real_cpu: Option<f64>,
    ) -> Result<VmsProcess, String> {
        let spec = dir.join("vms.json");
        let ready = dir.join("vms.ready");
        std::fs::write(&spec, vm::specs_json(cluster)).map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(lab_binary());
        cmd.arg("vms")
            .arg("--spec")
            .arg(&spec)
            .arg("--ready")
            .arg(&ready);
        if let Some(m) = real_cpu {
            cmd.arg("--real-cpu").arg(m.to_string());
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("start {} vms: {e}", lab_binary().display()))?;
        crate::procs::register(child.id());
        // the ready file, or the process's end (it says why on stderr)
        let v = wait_for(Duration::from_secs(20), || {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(None);
            }
            let text = std::fs::read_to_string(&ready).ok()?;
            serde_json::from_str::<Value>(&text).ok().map(Some)
        });
        let Some(Some(v)) = v else {
            let _ = child.kill();
            let _ = child.wait();
            crate::procs::unregister(child.id());
            let what = match real_cpu {
                Some(_) => "the VMs on real CPUs (cgroups: root and cgroup v1 needed)",
                None => "the emulated VMs",
            };
            return Err(format!("{what} did not start"));
        };
        let control = v["control"]
            .as_str()
            .and_then(|c| c.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .ok_or("bad ready file of the VMs")?;
        let entry = |name: &str| {
            v["vms"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        let cgroups = cluster
            .iter()
            .map(|c| entry(&c.name)["cgroup"].as_str().map(PathBuf::from))
            .collect();
        // from here on, dropping `vms` on an error stops the process
        let mut vms = VmsProcess {
            child,
            control,
            addrs: Vec::new(),
            cgroups,
        };
        vms.addrs = cluster
            .iter()
            .map(|c| {
                entry(&c.name)["addr"]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("no address for VM {}", c.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(vms)
    }

    pub(super) fn usage(&self) -> Option<Vec<vm::Usage>> {
        let r = http::request(self.control, "GET", "/usage").ok()?;
        vm::parse_usage(&r.body).ok()
    }

    pub(super) fn ctl(&self, path: &str) -> Result<(), String> {
        match http::request(self.control, "GET", path) {
            Ok(r) if r.status == 200 => Ok(()),
            Ok(r) => Err(format!("{path}: {} {}", r.status, r.body.trim())),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }
}

impl VmsProcess {
    /// Stops the process: `GET /quit`, then a kill after 3 s.
    fn stop(&mut self) {
        let _ = http::request(self.control, "GET", "/quit");
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                crate::procs::unregister(self.child.id());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        crate::procs::unregister(self.child.id());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for VmsProcess {
    fn drop(&mut self) {
        self.stop();
        // a process that was killed left its (now empty) cgroups behind
        for g in self.cgroups.iter().flatten() {
            crate::cgroup::remove_left_behind(g);
        }
    }
}
