//! A test environment: nginx with the module in front of backends, either
//! without counters (fallback) or with live counters from vcsim, one VM per
//! backend mapped by name.

use super::backend::Backend;
use super::nginx::{conf, Nginx};
use super::vcsim::{Opts, Vcsim, VmSpec};
use super::{free_port, http, wait_for};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No endpoint, `pick=least_conn`: weighted round robin, counted.
    Fallback,
    /// vcsim counters drive the pick, paper mode.
    Paper,
    /// vcsim counters drive the pick, shares mode `pick=least_conn`.
    Shares,
    /// vcsim counters and response times: the default (shares mode,
    /// `pick=least_time`).
    SharesTime,
    /// The default with `choices=2`: two peers drawn by share per pick
    /// (what `choices=auto` does for large upstreams).
    SharesDrawn,
    /// No endpoint: `mode=least_time` (response times drive the pick).
    LeastTime,
    /// No endpoint: `mode=random_two` (response times of two drawn at
    /// random).
    RandomTwo,
}

impl Mode {
    /// True for the modes whose pick follows response times (one request
    /// after another goes to the faster server, not around the list).
    pub fn follows_response_times(self) -> bool {
        matches!(
            self,
            Mode::LeastTime | Mode::RandomTwo | Mode::SharesTime | Mode::SharesDrawn
        )
    }

    /// What the status page says drives the pick once warmed up.
    pub fn balancing(self) -> &'static str {
        match self {
            Mode::Fallback => "round_robin",
            Mode::LeastTime | Mode::RandomTwo => "response_times",
            Mode::Paper | Mode::Shares | Mode::SharesTime | Mode::SharesDrawn => "dwepc",
        }
    }
}

pub fn vcsim_available() -> bool {
    Vcsim::binary().exists()
}

pub struct Env {
    pub port: u16,
    pub nginx: Nginx,
    pub vcsim: Option<Vcsim>,
    pub mode: Mode,
}

/// Password file for vcsim's default credentials.
pub fn password_file(dir: &std::path::Path, pass: &str) -> String {
    let p = dir.join("vc.pass");
    std::fs::write(&p, format!("{pass}\n")).unwrap();
    p.display().to_string()
}

/// Equal, constant counters for VMs `web-0..n`.
pub fn flat_counters(n: usize) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for i in 0..n {
        m.insert(
            format!("web-{i}"),
            serde_json::json!({
                "cpu.usagemhz.average": 500,
                "mem.consumed.average": 524288,
                "net.usage.average": 100,
                "disk.usage.average": 0,
                "cpu.ready.summation": 10
            }),
        );
    }
    serde_json::Value::Object(m)
}

impl Env {
    pub fn start(
        mode: Mode,
        backends: &[&Backend],
        params: impl Fn(&Backend) -> String,
        location: &str,
        workers: u32,
    ) -> Env {
        Self::start_with(mode, backends, params, location, workers, "", "")
    }

    /// `pre`/`post` go before/after the dwepc directive in the upstream.
    pub fn start_with(
        mode: Mode,
        backends: &[&Backend],
        params: impl Fn(&Backend) -> String,
        location: &str,
        workers: u32,
        pre: &str,
        post: &str,
    ) -> Env {
        let port = free_port();
        let servers: String = backends
            .iter()
            .map(|b| format!("server {} {};\n", b.addr(), params(b)))
            .collect();
        let (vcsim, http_head, dwepc, nodes) = match mode {
            Mode::Fallback => (
                None,
                String::new(),
                "dwepc pick=least_conn;".to_string(),
                String::new(),
            ),
            Mode::LeastTime | Mode::RandomTwo => (
                None,
                String::new(),
                format!(
                    "dwepc mode={};",
                    if mode == Mode::LeastTime {
                        "least_time"
                    } else {
                        "random_two"
                    }
                ),
                String::new(),
            ),
            Mode::Paper | Mode::Shares | Mode::SharesTime | Mode::SharesDrawn => {
                let vms: Vec<VmSpec> = (0..backends.len())
                    .map(|i| VmSpec {
                        name: format!("web-{i}"),
                        ip: None,
                        num_cpu: 2,
                        cpu_mhz: 4000,
                        memory_mb: 2048,
                    })
                    .collect();
                let vc = Vcsim::start(
                    &vms,
                    &Opts {
                        refresh_s: 1,
                        ..Opts::default()
                    },
                );
                vc.set_counters(&flat_counters(backends.len()));
                let pw = password_file(&vc.dir, "pass");
                let head = format!(
                    "dwepc_vsphere vc url={} user=user password_file={pw} timeout=2s insecure_http=on;\n",
                    vc.url
                );
                let nodes: String = backends
                    .iter()
                    .enumerate()
                    .map(|(i, b)| format!("dwepc_node {} vm=web-{i};\n", b.addr()))
                    .collect();
                (
                    Some(vc),
                    head,
                    match mode {
                        Mode::Paper => {
                            "dwepc mode=paper interval=1s window=5 min_samples=2 ttl=30s;"
                        }
                        Mode::SharesTime => "dwepc interval=1s window=5 ttl=30s;",
                        Mode::SharesDrawn => "dwepc interval=1s window=5 ttl=30s choices=2;",
                        _ => "dwepc interval=1s window=5 ttl=30s pick=least_conn;",
                    }
                    .to_string(),
                    nodes,
                )
            }
        };
        let text = conf(
            &format!("worker_processes {workers};"),
            &format!(
                "{http_head}upstream app {{\n{pre}\n{dwepc}\n{post}\n{servers}{nodes}}}\n\
                 server {{ listen 127.0.0.1:{port};\n\
                   location / {{ proxy_pass http://app; {location} }}\n\
                   location = /dwepc {{ dwepc_status; }} }}"
            ),
        );
        let nginx = Nginx::start(&text, port);
        let env = Env {
            port,
            nginx,
            vcsim,
            mode,
        };
        if mode != Mode::Fallback {
            env.warm_up();
        }
        env
    }

    /// Sends a trickle of requests until the module drives the pick as
    /// the mode does.
    pub fn warm_up(&self) {
        let want = self.mode.balancing();
        let ok = wait_for(Duration::from_secs(40), || {
            let _ = http::request(self.port, "GET", "/");
            std::thread::sleep(Duration::from_millis(30));
            (self.status()["balancing"] == want).then_some(())
        });
        assert!(
            ok.is_some(),
            "the pick never became {want}: {}\n{}",
            self.status(),
            self.nginx.error_log()
        );
    }

    /// The status of upstream "app".
    pub fn status(&self) -> serde_json::Value {
        let r = http::get(self.port, "/dwepc");
        let v: serde_json::Value =
            serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        v["upstreams"][0].clone()
    }
}
