//! Proxy overhead: nginx throughput and latency with dwepc against stock
//! round robin and least_conn, in front of fast local backends (nginx
//! `return 200`), measured with wrk in the same run, rounds interleaved.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::nginx::{conf, Nginx};
use crate::vcsim::{Opts, Vcsim, VmSpec};
use crate::{free_port, http, wait_for};

/// One measured configuration.
#[derive(Clone, Debug)]
pub struct Row {
    pub name: &'static str,
    /// requests/s per round
    pub rps: Vec<f64>,
    /// p99 latency per round, ms
    pub p99_ms: Vec<f64>,
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    }
}

/// wrk's output: (requests/s, p99 ms).
fn parse_wrk(out: &str) -> Option<(f64, f64)> {
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let p99 = out.lines().find(|l| l.trim_start().starts_with("99%"))?;
    let v = p99.split_whitespace().nth(1)?;
    let ms = if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().ok()? / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().ok()?
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().ok()? * 1000.0
    } else {
        return None;
    };
    Some((rps, ms))
}

/// Runs the comparison: `rounds` interleaved rounds of `secs` seconds each.
pub fn run(rounds: usize, secs: u64, conns: u32) -> Vec<Row> {
    // fast backends: one nginx answering on 4 loopback ports
    let bports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let _backends = fast_backends(&bports);
    let (vc, pw) = live_vcsim();
    let configs = configs(&bports);
    let port = free_port();
    let mut rows: Vec<Row> = configs
        .iter()
        .map(|(n, _)| Row {
            name: n,
            rps: vec![],
            p99_ms: vec![],
        })
        .collect();
    for round in 0..rounds {
        for (k, (name, lines)) in configs.iter().enumerate() {
            let text = proxy_conf(&vc, &pw, lines, &bports, port);
            let (rps, p99) = measure(round, name, &text, port, secs, conns);
            rows[k].rps.push(rps);
            rows[k].p99_ms.push(p99);
        }
    }
    rows
}

/// One nginx answering `200 ok` on each of `ports`.
fn fast_backends(ports: &[u16]) -> Nginx {
    let listen: String = ports
        .iter()
        .map(|p| format!("server {{ listen 127.0.0.1:{p}; keepalive_requests 100000; location / {{ return 200 \"ok\\n\"; }} }}\n"))
        .collect();
    Nginx::start(&conf("worker_processes 1;", &listen), ports[0])
}

/// vcsim with constant counters for VMs b0..b3, so the dwepc path runs
/// with live allocations; and its password file.
fn live_vcsim() -> (Vcsim, PathBuf) {
    let vms: Vec<VmSpec> = (0..4)
        .map(|i| VmSpec::new(&format!("b{i}"), None, 2, 4000, 2048))
        .collect();
    vcsim_with_load(&vms, |i| 1000 + 100 * i as u64)
}

/// vcsim (refresh 1 s) with `vms`, each VM `i` using `cpu_mhz(i)` MHz
/// (memory, network and disk constant), and its password file.
pub fn vcsim_with_load(vms: &[VmSpec], cpu_mhz: impl Fn(usize) -> u64) -> (Vcsim, PathBuf) {
    let vc = Vcsim::start(
        vms,
        &Opts {
            refresh_s: 1,
            ..Opts::default()
        },
    );
    let counters: serde_json::Map<String, serde_json::Value> = vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let v = serde_json::json!({"cpu.usagemhz.average": cpu_mhz(i), "mem.consumed.average": 524288,
                                       "net.usage.average": 100, "disk.usage.average": 0});
            (vm.name.clone(), v)
        })
        .collect();
    vc.set_counters(&serde_json::Value::Object(counters));
    let pw = vc.dir.join("pw");
    std::fs::write(&pw, "pass\n").unwrap();
    (vc, pw)
}

/// The configurations compared: name and the upstream block's method
/// lines (with `dwepc_node` lines mapping the backends to b0..b3).
fn configs(bports: &[u16]) -> [(&'static str, String); 6] {
    let nodes: String = bports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("dwepc_node 127.0.0.1:{p} vm=b{i};\n"))
        .collect();
    [
        ("round_robin", String::new()),
        ("least_conn", "least_conn;".into()),
        (
            "dwepc (no counters: round robin path)",
            "dwepc vsphere=off pick=least_conn;".into(),
        ),
        (
            "dwepc default: shares per response time (live counters)",
            format!("dwepc interval=1s ttl=1h;\n{nodes}"),
        ),
        (
            "dwepc observe=least_conn (live counters)",
            format!("dwepc interval=1s ttl=1h observe=on;\n{nodes}"),
        ),
        (
            "dwepc paper (live counters)",
            format!("dwepc mode=paper interval=1s ttl=1h;\n{nodes}"),
        ),
    ]
}

/// The proxy's configuration: `lines` in front of the backends, on `port`.
fn proxy_conf(vc: &Vcsim, pw: &Path, lines: &str, bports: &[u16], port: u16) -> String {
    let servers: String = bports
        .iter()
        .map(|p| format!("server 127.0.0.1:{p};\n"))
        .collect();
    conf(
        "worker_processes 1;",
        &format!(
            "dwepc_vsphere vc url={} user=user password_file={} timeout=2s insecure_http=on;\n\
             upstream app {{ {lines}\n{servers} keepalive 32; }}\n\
             server {{ listen 127.0.0.1:{port}; keepalive_requests 100000;\n\
               location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n\
               location = /dwepc {{ dwepc_status; }} }}",
            vc.url,
            pw.display()
        ),
    )
}

/// One measurement of configuration `name`: nginx started with `text`
/// (with live counters, once they took over), a 1-s warm-up, then wrk
/// for `secs`: (requests/s, p99 ms).
fn measure(round: usize, name: &str, text: &str, port: u16, secs: u64, conns: u32) -> (f64, f64) {
    let mut ng = Nginx::start(text, port);
    if name.contains("live") {
        let ok = wait_for(Duration::from_secs(30), || {
            let _ = http::request(port, "GET", "/");
            let st = http::request(port, "GET", "/dwepc").ok()?;
            st.body.contains("\"reason\":\"active\"").then_some(())
        });
        assert!(ok.is_some(), "counters never took over");
    }
    // warm up, then measure
    let _ = wrk(port, 1, conns);
    let (rps, p99) = wrk(port, secs, conns).expect("wrk output");
    eprintln!("overhead: round {round} {name:<40} {rps:>10.0} req/s  p99 {p99:.3} ms");
    ng.stop(Duration::from_secs(10));
    (rps, p99)
}

pub(crate) fn wrk(port: u16, secs: u64, conns: u32) -> Option<(f64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--latency",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .ok()?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Markdown table with ratios to round robin and least_conn.
pub fn markdown(rows: &[Row]) -> String {
    let rr = median(&rows[0].rps);
    let lc = median(&rows[1].rps);
    let rr99 = median(&rows[0].p99_ms);
    let mut s = String::from(
        "| configuration | req/s (median) | vs round robin | vs least_conn | p99 ms (median) | p99 vs round robin |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let m = median(&r.rps);
        let p = median(&r.p99_ms);
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.3} | {:.3} | {:.3} | {:.2} |",
            r.name,
            m,
            m / rr,
            m / lc,
            p,
            p / rr99
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk() {
        let out = "Running 1s test @ http://127.0.0.1:1/\n  Latency Distribution\n     50%  120.00us\n     99%    1.50ms\n  1000 requests in 1.00s\nRequests/sec:  12345.67\nTransfer/sec: 1MB\n";
        assert_eq!(parse_wrk(out), Some((12345.67, 1.5)));
        assert_eq!(
            parse_wrk("99%  800.00us\nRequests/sec: 10\n"),
            Some((10.0, 0.8))
        );
        assert_eq!(parse_wrk("garbage"), None);
    }
}
