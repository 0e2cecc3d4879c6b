//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping
//! one target every second, stopped by its own PID when dropped.

use dwepc_lab::{free_port, http, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Prometheus {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

/// Whether `prometheus` and `promtool` are installed (scripts/install.sh).
pub fn available() -> bool {
    ["/usr/bin/prometheus", "/usr/bin/promtool"]
        .iter()
        .all(|p| std::path::Path::new(p).exists())
}

/// Runs `promtool check metrics` on `text`: (success, what it said).
pub fn promtool_check(text: &str) -> (bool, String) {
    use std::io::Write;
    let mut c = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

impl Prometheus {
    /// Starts Prometheus scraping `http://127.0.0.1:{target}{path}?format=prometheus`
    /// every second, and waits until its API answers.
    pub fn start(target: u16, path: &str) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("dwepc-prom-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let conf = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: dwepc\n    metrics_path: {path}\n\
             \x20   params:\n      format: [prometheus]\n\
             \x20   static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), conf).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus");
        dwepc_lab::procs::register(child.id());
        let p = Prometheus { port, child, dir };
        let ready = wait_for(Duration::from_secs(30), || {
            http::request(port, "GET", "/-/ready")
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(ready.is_some(), "prometheus not ready:\n{}", p.log());
        p
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the result vector as
    /// (labels, value) pairs.
    pub fn query(&self, q: &str) -> Vec<(serde_json::Value, f64)> {
        let enc: String = q
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let r = http::get(self.port, &format!("/api/v1/query?query={enc}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let val = s["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (s["metric"].clone(), val)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        dwepc_lab::procs::unregister(self.child.id());
        // SAFETY: kill(2) on the PID of the child this guard started.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
