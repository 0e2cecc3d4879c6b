//! Runs the real nginx (the binary nginx-sys built, or $NGINX_BIN) with the
//! real module (target/<profile>/libdwepc.so, or $DWEPC_MODULE) from a
//! private prefix on loopback, and stops it by its PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NGINX_BIN") {
        return p.into();
    }
    PathBuf::from(env!("DEP_NGINX_BUILD_DIR")).join("nginx")
}

pub fn module() -> PathBuf {
    if let Ok(p) = std::env::var("DWEPC_MODULE") {
        return p.into();
    }
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    // -> target/<profile>/libdwepc.so
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.ends_with("deps") {
        dir = dir.parent().unwrap();
    }
    dir.join("libdwepc.so")
}

/// A fresh world-readable prefix directory with logs/ and conf/.
pub fn prefix(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "dwepc-{tag}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    dir
}

/// A whole nginx.conf: the module, `main` lines, and `http` inside http{}.
pub fn conf(main: &str, http: &str) -> String {
    conf_with_events(main, "worker_connections 1024;", http)
}

/// [`conf`] with `events` inside events{}.
pub fn conf_with_events(main: &str, events: &str, http: &str) -> String {
    format!(
        "load_module {module};\n\
         user root;\n\
         daemon off;\n\
         error_log logs/error.log info;\n\
         pid logs/nginx.pid;\n\
         {main}\n\
         events {{ {events} }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;\n\
         fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         {http}\n}}\n",
        module = module().display()
    )
}

/// `nginx -t` on a config text: (success, combined output).
pub fn test_config(text: &str) -> (bool, String, PathBuf) {
    let dir = prefix("t");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let path = dir.join("conf/nginx.conf");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(binary())
        .arg("-t")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run nginx -t");
    let mut s = String::from_utf8_lossy(&out.stderr).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stdout));
    (out.status.success(), s, path)
}

pub struct Nginx {
    pub prefix: PathBuf,
    child: Child,
}

impl Nginx {
    /// Starts nginx with this config text and waits until `ready_port`
    /// accepts connections.
    pub fn start(text: &str, ready_port: u16) -> Nginx {
        let dir = prefix("run");
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        std::fs::write(dir.join("conf/nginx.conf"), text).unwrap();
        let child = Command::new(binary())
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("conf/nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        crate::procs::register(child.id());
        let mut n = Nginx { prefix: dir, child };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_err() {
            if let Ok(Some(st)) = n.child.try_wait() {
                panic!("nginx exited with {st}: {}", n.error_log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "nginx did not start: {}",
                n.error_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // something else answering on the port while nginx retries its bind
        let taken = format!("bind() to 127.0.0.1:{ready_port} failed");
        assert!(
            !n.error_log().contains(&taken),
            "port {ready_port} was taken by another process: {}",
            n.error_log()
        );
        n
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.prefix.join("logs/error.log")).unwrap_or_default()
    }

    pub fn conf_path(&self) -> PathBuf {
        self.prefix.join("conf/nginx.conf")
    }

    /// Writes a new config and sends SIGHUP.
    pub fn reload(&self, text: &str) {
        std::fs::write(self.conf_path(), text).unwrap();
        signal(self.pid(), libc::SIGHUP);
    }

    /// PIDs of the worker processes (children of the master).
    pub fn workers(&self) -> Vec<i32> {
        children(self.pid())
            .into_iter()
            .filter(|p| cmdline(*p).contains("worker process"))
            .collect()
    }

    /// Graceful stop: SIGQUIT, then SIGKILL after `timeout`. Returns the
    /// time the graceful stop took, or None if it had to be killed.
    pub fn stop(&mut self, timeout: Duration) -> Option<Duration> {
        crate::procs::unregister(self.child.id());
        let start = Instant::now();
        signal(self.pid(), libc::SIGQUIT);
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(self.pid(), libc::SIGKILL);
        let _ = self.child.wait();
        None
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_secs(10));
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.prefix);
        } else {
            eprintln!("nginx prefix kept: {}", self.prefix.display());
        }
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a PID we started.
    unsafe {
        libc::kill(pid, sig);
    }
}

pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // ppid is the 2nd field after the ")" of the comm
                if let Some(rest) = stat.rsplit_once(')').map(|x| x.1) {
                    if rest
                        .split_whitespace()
                        .nth(1)
                        .and_then(|x| x.parse::<i32>().ok())
                        == Some(pid)
                    {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Threads of a process.
pub fn threads(pid: i32) -> usize {
    tasks(pid).len()
}

/// A thread of a process, as `/proc/PID/task/TID` shows it.
#[derive(Clone, Debug)]
pub struct Task {
    pub tid: i32,
    pub name: String,
    /// User and system CPU time, ms.
    pub cpu_ms: f64,
    pub nice: i32,
}

/// Every thread of process `pid` (none if it is gone).
pub fn tasks(pid: i32) -> Vec<Task> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let tick_ms = 1000.0 / 100.0; // USER_HZ
    dir.flatten()
        .filter_map(|t| {
            let tid = t.file_name().to_string_lossy().parse().ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            // after the name's closing parenthesis: field 3 on (utime,
            // stime and nice are fields 14, 15 and 19)
            let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = |k: usize| f.get(k).and_then(|x| x.parse::<f64>().ok());
            Some(Task {
                tid,
                name: name.trim().to_string(),
                cpu_ms: (ticks(11)? + ticks(12)?) * tick_ms,
                nice: f.get(16)?.parse().ok()?,
            })
        })
        .collect()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
