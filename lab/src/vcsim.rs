//! The vSphere test peer: VMware's vcsim (govmomi 0.24) wrapped by
//! tests/vcsim/main.go and built by scripts/build-vcsim.sh to
//! <target>/vcsim/dwepc-vcsim. It serves the real SOAP API at /sdk with the
//! VMs we ask for and QueryPerf values read from a JSON file we rewrite at
//! will, plus plain-HTTP control endpoints (/dwepc/stats, /dwepc/fault,
//! /dwepc/expire) on the same port, even in TLS mode.
//!
//! Every process is started from a private directory (vms.json,
//! counters.json, ready.json, logs, the CA certificate, the simulator's
//! datastore files via TMPDIR) and stopped by its own PID when the guard
//! drops. See tests/vcsim/PROTOCOL.md for the SOAP exchanges.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);
static BUILD: Once = Once::new();

/// One VM of the simulated inventory (always powered on).
#[derive(Clone, Debug)]
pub struct VmSpec {
    pub name: String,
    /// Guest IP address (guest.ipAddress and guest.net[0].ipAddress).
    pub ip: Option<String>,
    /// summary.config.numCpu
    pub num_cpu: u32,
    /// summary.runtime.maxCpuUsage (MHz, the whole VM)
    pub cpu_mhz: u32,
    /// summary.config.memorySizeMB
    pub memory_mb: u32,
}

impl VmSpec {
    pub fn new(name: &str, ip: Option<&str>, num_cpu: u32, cpu_mhz: u32, memory_mb: u32) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            ip: ip.map(str::to_string),
            num_cpu,
            cpu_mhz,
            memory_mb,
        }
    }
}

/// Launch options.
#[derive(Clone, Debug)]
pub struct Opts {
    /// refreshRate reported by QueryPerfProviderSummary (seconds).
    pub refresh_s: u32,
    /// Serve HTTPS; the CA to trust is written to `Vcsim::cert`.
    pub tls: bool,
    /// Expire sessions idle for this long (expiry happens between one and
    /// two times this after the last call).
    pub idle_timeout: Option<Duration>,
    /// Fixed port (default: a free one).
    pub port: Option<u16>,
    /// The loopback address to listen on (default 127.0.0.1); with
    /// `port: Some(443)` and `tls`, the only way clients that build
    /// `https://HOST/sdk` themselves (vmware_exporter) reach it.
    pub listen_ip: Option<String>,
    /// The only credentials Login accepts.
    pub user: String,
    pub pass: String,
    /// The cluster's hosts, DC0_C0_H0, DC0_C0_H1, ... (empty: the
    /// model's three).
    pub hosts: Vec<HostSpec>,
    /// (VM name, host name): where a VM runs (others: the simulator's
    /// choice).
    pub vm_hosts: Vec<(String, String)>,
    /// (VM name, folder): a VM in a folder of the datacenter's vm folder
    /// (others: in the vm folder itself).
    pub vm_folders: Vec<(String, String)>,
    /// Standalone hosts besides the cluster (DC0_H0, ...), each its own
    /// compute resource.
    pub standalone_hosts: u32,
}

/// One host of the simulated cluster.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostSpec {
    /// Per core.
    pub cpu_mhz: u32,
    pub cores: u32,
    pub memory_mb: u64,
    pub maintenance: bool,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            refresh_s: 20,
            tls: false,
            idle_timeout: None,
            port: None,
            listen_ip: None,
            user: "user".to_string(),
            pass: "pass".to_string(),
            hosts: Vec::new(),
            vm_hosts: Vec::new(),
            vm_folders: Vec::new(),
            standalone_hosts: 0,
        }
    }
}

/// A running simulator. Dropping it stops the process and removes `dir`.
pub struct Vcsim {
    /// The SOAP endpoint, e.g. "http://127.0.0.1:40123/sdk".
    pub url: String,
    pub port: u16,
    /// The private directory holding the files below and the logs.
    pub dir: PathBuf,
    /// With `tls`: PEM CA certificate that signed the server certificate.
    pub cert: Option<PathBuf>,
    opts: Opts,
    child: Option<Child>,
}

/// Path of the simulator binary: $DWEPC_VCSIM, else <target>/vcsim/dwepc-vcsim
/// where <target> is found from the test executable
/// (target/<profile>/deps/<test>, possibly with a <triple>/ level).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("DWEPC_VCSIM") {
        return p.into();
    }
    target_dir().join("vcsim").join("dwepc-vcsim")
}

/// The cargo target directory the running test belongs to.
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Prefer an ancestor that already holds the simulator.
    for dir in exe.ancestors().skip(1) {
        if dir.join("vcsim").join("dwepc-vcsim").is_file() {
            return dir.to_path_buf();
        }
    }
    // target/<profile>/deps/<test> -> target
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test executable is not under target/<profile>/deps")
        .to_path_buf()
}

/// Runs scripts/build-vcsim.sh once per test process (it returns at once
/// when the binary is up to date). Skipped when $DWEPC_VCSIM is set.
pub fn ensure_built() {
    if std::env::var_os("DWEPC_VCSIM").is_some() {
        return;
    }
    BUILD.call_once(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-vcsim.sh");
        let out = Command::new("bash")
            .arg(&script)
            .env("CARGO_TARGET_DIR", target_dir())
            .output()
            .expect("run scripts/build-vcsim.sh");
        if !out.status.success() {
            panic!(
                "scripts/build-vcsim.sh failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
}

impl Vcsim {
    /// See the free function [`binary`].
    pub fn binary() -> PathBuf {
        binary()
    }

    /// Starts a simulator with exactly `vms` and no counter values yet.
    /// Panics (with the simulator's log) if it is not ready within 30 s.
    pub fn start(vms: &[VmSpec], opts: &Opts) -> Vcsim {
        ensure_built();
        let dir = std::env::temp_dir().join(format!(
            "dwepc-vcsim-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("tmp")).expect("create vcsim dir");
        // World-readable, so that nginx workers running as another user can
        // read the CA certificate.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755));

        let list: Vec<serde_json::Value> = vms
            .iter()
            .map(|vm| {
                let mut v = serde_json::json!({
                    "name": vm.name,
                    "num_cpu": vm.num_cpu,
                    "cpu_mhz": vm.cpu_mhz,
                    "memory_mb": vm.memory_mb,
                    "power": "on",
                });
                if let Some(ip) = &vm.ip {
                    v["ip"] = serde_json::Value::String(ip.clone());
                }
                if let Some((_, h)) = opts.vm_hosts.iter().find(|(n, _)| *n == vm.name) {
                    v["host"] = serde_json::Value::String(h.clone());
                }
                if let Some((_, f)) = opts.vm_folders.iter().find(|(n, _)| *n == vm.name) {
                    v["folder"] = serde_json::Value::String(f.clone());
                }
                v
            })
            .collect();
        write_atomic(
            &dir.join("vms.json"),
            serde_json::to_string_pretty(&list).unwrap().as_bytes(),
        );
        write_atomic(&dir.join("counters.json"), b"{}\n");
        if !opts.hosts.is_empty() {
            write_atomic(
                &dir.join("hosts.json"),
                serde_json::to_string_pretty(&opts.hosts)
                    .unwrap()
                    .as_bytes(),
            );
        }

        let mut sim = Vcsim {
            url: String::new(),
            port: opts.port.unwrap_or(0),
            cert: if opts.tls {
                Some(dir.join("ca.pem"))
            } else {
                None
            },
            dir,
            opts: opts.clone(),
            child: None,
        };
        sim.spawn();
        sim
    }

    /// Launches the process with the files in `self.dir` on `self.port`
    /// (0 = any) and waits for its ready file. Retries a few times when a
    /// fixed port is still busy.
    fn spawn(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_once(deadline) {
                Ok(()) => return,
                Err(msg) => {
                    if self.port != 0 && attempt < 10 && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    panic!(
                        "dwepc-vcsim did not start: {msg}\n--- log ---\n{}",
                        self.log()
                    );
                }
            }
        }
    }

    fn spawn_once(&mut self, deadline: Instant) -> Result<(), String> {
        let ready = self.dir.join("ready.json");
        let _ = std::fs::remove_file(&ready);
        let mut cmd = self.command(&ready);
        self.redirect_output(&mut cmd)?;
        let child = cmd.spawn().map_err(|e| {
            format!(
                "spawn {}: {e} (run scripts/build-vcsim.sh?)",
                binary().display()
            )
        })?;
        crate::procs::register(child.id());
        self.wait_ready(child, &ready, deadline)
    }

    /// The simulator's command line: the files in `self.dir`, `self.port`
    /// and the options.
    fn command(&self, ready: &Path) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("-listen")
            .arg(format!("{}:{}", self.listen_ip(), self.port))
            .arg("-vms")
            .arg(self.dir.join("vms.json"))
            .arg("-counters")
            .arg(self.dir.join("counters.json"))
            .arg("-ready")
            .arg(ready)
            .arg("-refresh")
            .arg(self.opts.refresh_s.to_string())
            .arg("-user")
            .arg(&self.opts.user)
            .arg("-pass")
            .arg(&self.opts.pass);
        if let Some(t) = self.opts.idle_timeout {
            cmd.arg("-idle-timeout").arg(format!("{}ns", t.as_nanos()));
        }
        if !self.opts.hosts.is_empty() {
            cmd.arg("-hosts").arg(self.dir.join("hosts.json"));
        }
        if self.opts.standalone_hosts > 0 {
            cmd.arg("-standalone")
                .arg(self.opts.standalone_hosts.to_string());
        }
        if let Some(cert) = &self.cert {
            cmd.arg("-tls")
                .arg("-cert-out")
                .arg(cert)
                .arg("-tls-state")
                .arg(self.dir.join("tls-state.pem"));
        }
        cmd
    }

    /// Appends the simulator's stderr and stdout to vcsim.log and
    /// stdout.log in `self.dir`, and keeps its temporary files there.
    fn redirect_output(&self, cmd: &mut Command) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vcsim.log"))
            .map_err(|e| format!("open log: {e}"))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("stdout.log"))
            .map_err(|e| format!("open stdout log: {e}"))?;
        // The simulator's datastores are temp dirs: keep them in self.dir.
        cmd.env("TMPDIR", self.dir.join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(log));
        Ok(())
    }

    /// Waits for the ready file and takes the URL and port it names; an
    /// error if the process exits first or `deadline` passes (then it is
    /// killed).
    fn wait_ready(
        &mut self,
        mut child: Child,
        ready: &Path,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            if let Ok(text) = std::fs::read_to_string(ready) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    let url = v["url"].as_str().unwrap_or_default().to_string();
                    let port = url
                        .rsplit(':')
                        .next()
                        .and_then(|s| s.split('/').next())
                        .and_then(|s| s.parse::<u16>().ok())
                        .ok_or_else(|| format!("bad ready file: {text}"))?;
                    self.url = url;
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("exited early: {status}"));
            }
            if Instant::now() > deadline {
                kill_and_wait(&mut child);
                return Err("no ready file after 30 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// PID of the running simulator, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// "http://127.0.0.1:PORT" or "https://127.0.0.1:PORT" (no /sdk).
    pub fn base_url(&self) -> String {
        self.url.trim_end_matches("/sdk").to_string()
    }

    /// Path of the counters file (re-read by every QueryPerf).
    pub fn counters_path(&self) -> PathBuf {
        self.dir.join("counters.json")
    }

    /// Replaces the counter values, atomically. Shape:
    /// `{"web-01": {"cpu.usagemhz.average": 1200, ...}, "_time": "RFC3339"}`;
    /// "group.name.rollup:INSTANCE" keys give per-instance values, and
    /// "group.name.rollup@SECONDS" keys a value at that sampling interval
    /// only (e.g. `@300`, vCenter's 5-minute rollup); an array of values
    /// gives one per sample, cycled by the sample's time.
    /// Like [`Vcsim::set_counters`], reporting a failure instead of
    /// panicking (for long-running callers).
    pub fn try_set_counters(&self, values: &serde_json::Value) -> std::io::Result<()> {
        try_write_atomic(&self.counters_path(), values.to_string().as_bytes())
    }

    pub fn set_counters(&self, values: &serde_json::Value) {
        let text = serde_json::to_string_pretty(values).unwrap();
        write_atomic(&self.counters_path(), text.as_bytes());
    }

    /// GET /dwepc/stats:
    /// `{"logins":N,"logouts":N,"sessions":N,"calls":{"QueryPerf":N,...},"fault":"none"}`.
    pub fn stats(&self) -> serde_json::Value {
        let (status, body) = self.control("/dwepc/stats");
        assert_eq!(status, 200, "GET /dwepc/stats: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad stats JSON ({e}): {body}"))
    }

    /// The loopback address it listens on.
    fn listen_ip(&self) -> &str {
        self.opts.listen_ip.as_deref().unwrap_or("127.0.0.1")
    }

    /// Number of SOAP calls of `method` seen so far (0 if none).
    pub fn calls(&self, method: &str) -> u64 {
        self.stats()["calls"][method].as_u64().unwrap_or(0)
    }

    /// Sets the fault applied to later /sdk requests:
    /// none | hang | http500 | garbage | notauth.
    pub fn fault(&self, mode: &str) {
        let (status, body) = self.control(&format!("/dwepc/fault?mode={mode}"));
        assert_eq!(status, 200, "GET /dwepc/fault?mode={mode}: {body}");
    }

    /// Resizes a running VM as a CPU hot-add does: `cpus` vCPUs and
    /// `mhz` of maximum CPU, shown by the inventory's next read.
    pub fn resize(&self, vm: &str, cpus: u32, mhz: u32) -> Result<(), String> {
        let path = format!("/dwepc/resize?vm={vm}&cpus={cpus}&mhz={mhz}");
        match http_get(self.listen_ip(), self.port, &path) {
            Ok((200, _)) => Ok(()),
            Ok((status, body)) => Err(format!("GET {path}: {status} {}", body.trim())),
            Err(e) => Err(format!("GET {path}: {e}")),
        }
    }

    /// Terminates every session (later calls with old cookies get
    /// NotAuthenticated).
    pub fn expire_sessions(&self) {
        let (status, body) = self.control("/dwepc/expire");
        assert_eq!(status, 200, "GET /dwepc/expire: {body}");
    }

    /// The simulator's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vcsim.log")).unwrap_or_default()
    }

    /// SIGTERM by PID, wait up to 5 s, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        crate::procs::unregister(child.id());
        // SAFETY: plain kill(2) on the PID of our own child.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => break,
            }
        }
        kill_and_wait(&mut child);
    }

    /// Stops the simulator and starts it again on the same port with the
    /// same files (and, with TLS, the same certificate). Sessions, fault
    /// mode and statistics start afresh.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// GET `path` on the control endpoints: (status, body).
    fn control(&self, path: &str) -> (u16, String) {
        http_get(self.listen_ip(), self.port, path)
            .unwrap_or_else(|e| panic!("GET {path} on vcsim port {}: {e}", self.port))
    }
}

impl Drop for Vcsim {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn kill_and_wait(child: &mut Child) {
    crate::procs::unregister(child.id());
    // SAFETY: plain kill(2) on the PID of our own child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Writes `data` to a temporary file next to `path`, then renames it.
fn try_write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

/// [`try_write_atomic`], panicking on failure (tests).
fn write_atomic(path: &Path, data: &[u8]) {
    try_write_atomic(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A minimal HTTP/1.1 GET over plain TCP (Connection: close): (status, body).
/// Handles both Content-Length and chunked bodies.
fn http_get(ip: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect((ip, port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: dwepc-tests\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;

    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Decodes a chunked transfer-encoded body.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
