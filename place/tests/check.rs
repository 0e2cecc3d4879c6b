//! dwepc-check end to end against the vcsim launcher: an nginx
//! configuration with two dwepc upstreams (servers found by `vm=` and by
//! guest IP), then each way it can end — ready, gaps, refused
//! configuration, unreachable vSphere, refused login, missing privilege —
//! with its report and exit status.

use dwepc_lab::vcsim::{Opts, Vcsim, VmSpec};
use std::path::{Path, PathBuf};
use std::process::Command;

/// web-0 and web-1 by name, web-2 with guest IP 127.0.0.3; counters for
/// all three.
fn simulator() -> Vcsim {
    let vms = vec![
        VmSpec::new("web-0", None, 2, 4000, 2048),
        VmSpec::new("web-1", None, 2, 4000, 2048),
        VmSpec::new("web-2", Some("127.0.0.3"), 4, 8000, 4096),
    ];
    let sim = Vcsim::start(&vms, &Opts::default());
    let vm = serde_json::json!({
        "cpu.usagemhz.average": 500,
        "cpu.usage.average": 1250,
        "mem.consumed.average": 524288,
        "net.usage.average": 100,
        "disk.usage.average": 10,
        "cpu.ready.summation": 20
    });
    sim.set_counters(&serde_json::json!({"web-0": vm, "web-1": vm, "web-2": vm}));
    sim
}

/// An nginx configuration in `sim`'s folder: the endpoint (with `extra`
/// parameters; its password file named relative to the configuration's
/// folder, as nginx resolves it), an upstream of the three servers and
/// `upstream` lines added; returns its path.
fn nginx_conf(sim: &Vcsim, pass: &str, extra: &str, upstream: &str) -> PathBuf {
    let dir = sim.dir.join("nginx");
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(dir.join("vc.pass"), format!("{pass}\n")).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "events {{}}\nhttp {{\n dwepc_vsphere vc url={} user=user password_file=vc.pass insecure_http=on timeout=3s {extra};\n include conf.d/*.conf;\n}}\n",
            sim.url,
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("conf.d/app.conf"),
        format!(
            "upstream app {{\n dwepc;\n server 127.0.0.1:8081;\n server 127.0.0.1:8082;\n server 127.0.0.3:8080;\n dwepc_node 127.0.0.1:8081 vm=web-0;\n dwepc_node 127.0.0.1:8082 vm=web-1;\n{upstream}}}\n"
        ),
    )
    .unwrap();
    dir.join("nginx.conf")
}

/// Runs dwepc-check; its exit status and output.
fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dwepc-check"))
        .args(args)
        .output()
        .expect("run dwepc-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn conf_arg(p: &Path) -> [String; 2] {
    ["--conf".into(), p.display().to_string()]
}

fn run_conf(p: &Path) -> (i32, String) {
    let a = conf_arg(p);
    check(&[&a[0], &a[1]])
}

#[test]
fn ready_then_each_way_it_can_fail() {
    let sim = simulator();
    // ready: every server found (two by name, one by guest IP), counters
    // and a realtime sample of each
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "", ""));
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("login: ok (VirtualCenter"), "{out}");
    assert!(out.contains("counters: 6 of 6 found"), "{out}");
    assert!(
        out.contains("inventory: 3 VMs under the whole inventory"),
        "{out}"
    );
    assert!(
        out.contains("server 127.0.0.1:8081 -> VM \"web-0\" (powered on, 2 vCPUs, 4000 MHz"),
        "{out}"
    );
    assert!(
        out.contains("server 127.0.0.3:8080 -> VM \"web-2\" (powered on, 4 vCPUs, 8000 MHz"),
        "{out}"
    );
    assert!(
        out.contains("realtime samples: every 20 s, 3 of 3 VMs complete"),
        "{out}"
    );
    // logged out again
    assert_eq!(sim.stats()["sessions"], 0, "{}", sim.stats());

    // gaps: a server no VM stands for, and a VM without samples
    let extra =
        " server 127.0.0.9:8080;\n server 127.0.0.1:8083;\n dwepc_node 127.0.0.1:8083 vm=gone;\n";
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "", extra));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "server 127.0.0.9:8080 -> NO VM: no VM reports guest IP 127.0.0.9 (VMware Tools"
        ),
        "{out}"
    );
    assert!(
        out.contains("server 127.0.0.1:8083 -> NO VM: no VM named \"gone\""),
        "{out}"
    );
    sim.set_counters(&serde_json::json!({"web-0": {"cpu.usagemhz.average": 1}}));
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "", ""));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("realtime sample of VM \"web-1\": no cpu.usagemhz.average"),
        "{out}"
    );
    assert!(
        out.contains("1 of 3 VMs complete") || out.contains("0 of 3 VMs complete"),
        "{out}"
    );

    // refused, with the file and line, before vSphere is asked
    let calls = sim.stats()["calls"]["Login"].as_u64().unwrap_or(0);
    let (code, out) = run_conf(&nginx_conf(
        &sim,
        "pass",
        "",
        " dwepc_node 127.0.0.1:8081 cpu=lots;\n",
    ));
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("refused:") && out.contains("upstream \"app\""),
        "{out}"
    );
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "password=inline", ""));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("nginx.conf:3"), "{out}");
    let conf = nginx_conf(&sim, "pass", "", "");
    std::fs::remove_file(conf.with_file_name("vc.pass")).unwrap();
    let (code, out) = run_conf(&conf);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("password_file"), "{out}");
    assert_eq!(sim.stats()["calls"]["Login"].as_u64().unwrap_or(0), calls);

    // a scope that names nothing; then one that holds the VMs
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "scope=DC0/vm/nowhere", ""));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("names nothing in the inventory"), "{out}");
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "scope=DC0/host/DC0_C0", ""));
    assert!(
        code <= 1 && out.contains("3 VMs under DC0/host/DC0_C0"),
        "{out}"
    );

    // the login refused
    let (code, out) = run_conf(&nginx_conf(&sim, "wrong", "", ""));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("check user= and the password file"), "{out}");

    // a user whose role lacks the performance privileges
    sim.fault("noperm");
    let (code, out) = run_conf(&nginx_conf(&sim, "pass", "", ""));
    sim.fault("none");
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("Read-only role"), "{out}");

    // the same with the options instead of a configuration
    let pw = sim.dir.join("nginx/vc.pass").display().to_string();
    let (code, out) = check(&[
        "--url",
        &sim.url,
        "--user",
        "user",
        "--password-file",
        &pw,
        "--insecure-http",
        "--vm",
        "web-1",
        "--ip",
        "127.0.0.3",
    ]);
    assert!(code <= 1, "{out}");
    assert!(
        out.contains("VM web-1 -> VM \"web-1\"") && out.contains("IP 127.0.0.3 -> VM \"web-2\""),
        "{out}"
    );
}

#[test]
fn unreachable_vsphere_is_said_with_what_to_check() {
    let dir = std::env::temp_dir().join(format!("dwepc-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("p"), "x\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/sdk");
    let pw = dir.join("p").display().to_string();
    let (code, out) = check(&[
        "--url",
        &url,
        "--user",
        "u",
        "--password-file",
        &pw,
        "--insecure-http",
        "--timeout",
        "2s",
    ]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("cannot connect") && out.contains("check url="),
        "{out}"
    );
    let (code, out) = check(&["--url", &url, "--user", "u", "--password-file", &pw]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("http://"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `dwepc_prometheus` endpoint: the same checks through the query API
/// (vcsim → vmware_exporter → Prometheus): VMs found by name, samples
/// complete; a server whose VM the exporter does not report is a gap;
/// a server found by guest IP on vmware_exporter's profile is refused as
/// `nginx -t` refuses it; an unreachable server is exit 3.
#[test]
fn a_prometheus_endpoint_is_checked_through_the_query_api() {
    use dwepc_lab::pipeline::{own_loopback_ip, Prometheus, VmwareExporter};
    let ip = own_loopback_ip();
    let vms = vec![
        VmSpec::new("web-0", None, 2, 4000, 2048),
        VmSpec::new("web-1", None, 2, 4000, 2048),
    ];
    let sim = Vcsim::start(
        &vms,
        &Opts {
            tls: true,
            port: Some(443),
            listen_ip: Some(ip.clone()),
            ..Opts::default()
        },
    );
    let vm = serde_json::json!({
        "cpu.usagemhz.average": 500, "cpu.usage.average": 1250,
        "mem.consumed.average": 524288, "net.received.average": 60,
        "net.transmitted.average": 40, "disk.usage.average": 10,
        "cpu.ready.summation": 20
    });
    sim.set_counters(&serde_json::json!({"web-0": vm, "web-1": vm}));
    let exporter = VmwareExporter::start(&ip, "user", "pass");
    let prom = Prometheus::scraping_exporter(&exporter, std::time::Duration::from_secs(1));
    let scraped = dwepc_lab::wait_for(std::time::Duration::from_secs(30), || {
        (prom.query("vmware_vm_cpu_usagemhz_average").len() == 2).then_some(())
    });
    assert!(scraped.is_some(), "{}", exporter.log());
    let write = |endpoint: &str, servers: &str| -> PathBuf {
        let dir = sim.dir.join("nginx-prom");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("nginx.conf");
        std::fs::write(
            &p,
            format!("events {{}}\nhttp {{\n {endpoint};\n upstream app {{\n dwepc prometheus=prom;\n{servers} }}\n}}\n"),
        )
        .unwrap();
        p
    };
    let named = " server 127.0.0.1:8081;\n server 127.0.0.1:8082;\n dwepc_node 127.0.0.1:8081 vm=web-0;\n dwepc_node 127.0.0.1:8082 vm=web-1;\n";
    let url = format!("dwepc_prometheus prom url=http://127.0.0.1:{}", prom.port);
    let (code, out) = run_conf(&write(&url, named));
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Prometheus \"prom\"")
            && out.contains("query API: ok")
            && out.contains(
                "server 127.0.0.1:8081 -> VM \"web-0\" (powered on, 2 vCPUs, 4000 MHz, 2048 MB)"
            )
            && out.contains("2 of 2 VMs complete"),
        "{out}"
    );
    // a VM the exporter does not report
    let missing = format!("{named} server 127.0.0.1:8083;\n dwepc_node 127.0.0.1:8083 vm=web-9;\n");
    let (code, out) = run_conf(&write(&url, &missing));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NO VM: no VM named \"web-9\""), "{out}");
    // a server found by guest IP: vmware_exporter has no guest IP label
    let (code, out) = run_conf(&write(&url, &format!("{named} server 127.0.0.1:8084;\n")));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("has no guest IP label"), "{out}");
    // nothing listens there
    let (code, out) = run_conf(&write(
        "dwepc_prometheus prom url=http://127.0.0.1:9",
        named,
    ));
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("the Prometheus server's base URL"), "{out}");
}
