//! `vmware_exporter` (pryorda/vmware_exporter on PyPI) as an operator runs
//! it: one process reading a vCenter (here the simulator, which it reaches
//! only on port 443 over TLS: it builds `https://HOST/sdk` itself), its
//! `/metrics` scraped by Prometheus. It comes from the virtual environment
//! `scripts/install-exporter.sh` creates under the target directory, with
//! the versions pinned in `scripts/exporter-requirements.txt`.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::Once;
use std::time::Duration;

use crate::{free_port, http, wait_for};

static INSTALL: Once = Once::new();

/// The exporter's program in the virtual environment.
pub fn program() -> PathBuf {
    crate::vcsim::target_dir()
        .join("exporter-venv")
        .join("bin")
        .join("vmware_exporter")
}

/// Creates the virtual environment once per process if it is missing.
fn ensure_installed() {
    if program().is_file() {
        return;
    }
    INSTALL.call_once(|| {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-exporter.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("CARGO_TARGET_DIR", crate::vcsim::target_dir())
            .output()
            .expect("run scripts/install-exporter.sh");
        assert!(
            out.status.success(),
            "scripts/install-exporter.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A running exporter, stopped by its PID when dropped.
pub struct VmwareExporter {
    pub port: u16,
    child: Child,
    log: PathBuf,
}

impl VmwareExporter {
    /// Starts the exporter on a free loopback port reading the vCenter at
    /// `host` (an address whose port 443 serves the SDK) with `user` and
    /// `pass`, VMs only (no hosts, datastores, snapshots or tags), and
    /// waits until it answers.
    pub fn start(host: &str, user: &str, pass: &str) -> VmwareExporter {
        ensure_installed();
        let port = free_port();
        let log =
            std::env::temp_dir().join(format!("dwepc-exporter-{}-{port}.log", std::process::id()));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(program())
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .env("VSPHERE_HOST", host)
            .env("VSPHERE_USER", user)
            .env("VSPHERE_PASSWORD", pass)
            // the simulator's certificate is its own; a real vCenter's CA
            // goes into the system store instead
            .env("VSPHERE_IGNORE_SSL", "True")
            .env("VSPHERE_COLLECT_HOSTS", "False")
            .env("VSPHERE_COLLECT_DATASTORES", "False")
            .env("VSPHERE_COLLECT_SNAPSHOTS", "False")
            .env("VSPHERE_FETCH_TAGS", "False")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("run vmware_exporter");
        crate::procs::register(child.id());
        let e = VmwareExporter { port, child, log };
        let up = wait_for(Duration::from_secs(30), || {
            http::request(port, "GET", "/healthz")
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(up.is_some(), "vmware_exporter did not start:\n{}", e.log());
        e
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for VmwareExporter {
    fn drop(&mut self) {
        crate::procs::unregister(self.child.id());
        // SAFETY: kill(2) on the PID of the child this guard started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}
