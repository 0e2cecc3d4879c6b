//! A real Prometheus server (Debian's `prometheus`) on loopback, scraping
//! its targets on a set interval; it can be stopped and started again on
//! the same port and data (a restart), and is stopped by its own PID when
//! dropped.

use crate::{free_port, http, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One scrape target: loopback port, metrics path, query parameters.
#[derive(Clone, Debug)]
pub struct Target {
    pub job: String,
    pub port: u16,
    pub path: String,
    pub params: Vec<(String, String)>,
}

pub struct Prometheus {
    pub port: u16,
    child: Option<Child>,
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

/// Percent-encodes a query for a URL.
pub fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `http://127.0.0.1:{target}{path}?format=prometheus`
    /// every second, and waits until its API answers.
    pub fn start(target: u16, path: &str) -> Prometheus {
        Prometheus::scraping(
            &[Target {
                job: "dwepc".into(),
                port: target,
                path: path.into(),
                params: vec![("format".into(), "prometheus".into())],
            }],
            Duration::from_secs(1),
        )
    }

    /// Starts Prometheus scraping `exporter`'s `/metrics` every
    /// `interval`.
    pub fn scraping_exporter(exporter: &super::VmwareExporter, interval: Duration) -> Prometheus {
        Prometheus::scraping(
            &[Target {
                job: "vmware".into(),
                port: exporter.port,
                path: "/metrics".into(),
                params: Vec::new(),
            }],
            interval,
        )
    }

    /// Starts Prometheus scraping `targets` every `interval`, and waits
    /// until its API answers.
    pub fn scraping(targets: &[Target], interval: Duration) -> Prometheus {
        let dir =
            std::env::temp_dir().join(format!("dwepc-prom-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let secs = interval.as_secs_f64();
        let mut conf = format!(
            "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\nscrape_configs:\n"
        );
        for t in targets {
            conf.push_str(&format!(
                "  - job_name: {}\n    metrics_path: {}\n",
                t.job, t.path
            ));
            if !t.params.is_empty() {
                conf.push_str("    params:\n");
                for (k, v) in &t.params {
                    conf.push_str(&format!("      {k}: [{v}]\n"));
                }
            }
            conf.push_str(&format!(
                "    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
                t.port
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), conf).unwrap();
        let mut p = Prometheus {
            port: free_port(),
            child: None,
            dir,
        };
        p.run();
        p
    }

    /// Starts the server (on its port and data) and waits until it is
    /// ready.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("prometheus.log"))
            .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                self.dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run prometheus");
        crate::procs::register(child.id());
        self.child = Some(child);
        let port = self.port;
        let ready = wait_for(Duration::from_secs(30), || {
            http::request(port, "GET", "/-/ready")
                .ok()
                .filter(|r| r.status == 200)
        });
        assert!(ready.is_some(), "prometheus not ready:\n{}", self.log());
    }

    /// Stops the server (SIGTERM, as a service manager does) and waits
    /// for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            crate::procs::unregister(c.id());
            // SAFETY: kill(2) on the PID of the child this guard started.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            if wait_for(Duration::from_secs(20), || c.try_wait().ok().flatten()).is_none() {
                // SAFETY: as above.
                unsafe {
                    libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
                }
                let _ = c.wait();
            }
        }
    }

    /// Stops it and starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query through the HTTP API: the result vector as
    /// (labels, value) pairs.
    pub fn query(&self, q: &str) -> Vec<(serde_json::Value, f64)> {
        let r = http::get(self.port, &format!("/api/v1/query?query={}", encode(q)));
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
        if let Some(mut c) = self.child.take() {
            crate::procs::unregister(c.id());
            // SAFETY: kill(2) on the PID of the child this guard started.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
