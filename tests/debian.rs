//! The Debian package (scripts/build-deb.sh) in the machine's Debian nginx:
//! installed with apt, enabled through /etc/nginx/modules-enabled, checked
//! with `nginx -t` on the stock /etc/nginx/nginx.conf plus a dwepc
//! upstream, run (on loopback, as a child of this test, not as a service)
//! in front of local backends with counters from vcsim, then removed and
//! purged cleanly.
//!
//! Needs root (CI runs as root) and the package built by
//! `scripts/build-deb.sh` (scripts/test.sh builds it first).

mod common;

use common::backend::Backend;
use common::vcsim::{Opts, Vcsim, VmSpec};
use common::vsenv::{vm_name, Feeder};
use common::{free_port, http, wait_for};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PKG: &str = "libnginx-mod-http-dwepc";
const SO: &str = "/usr/lib/nginx/modules/ngx_http_dwepc_module.so";
const AVAILABLE: &str = "/usr/share/nginx/modules-available/mod-http-dwepc.conf";
const ENABLED: &str = "/etc/nginx/modules-enabled/50-mod-http-dwepc.conf";
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";

fn deb() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/deb");
    let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    debs.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{PKG}_")) && n.ends_with(".deb"))
    });
    debs.sort();
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no {PKG}_*.deb in {}: run scripts/build-deb.sh",
            dir.display()
        )
    })
}

/// Runs a command, returning (success, stdout + stderr).
fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(cmd);
    c.args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("run {cmd} {args:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn installed() -> bool {
    run("dpkg-query", &["-W", "-f=${Status}", PKG])
        .1
        .contains("install ok installed")
}

/// Whatever the test leaves (its conf.d file, the package) goes when this
/// is dropped, even on a failed assertion.
struct Cleanup {
    conf: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.conf);
        if installed() {
            let _ = run("apt-get", &["purge", "-y", PKG]);
        }
    }
}

/// Debian's nginx run in the foreground as a child, stopped by its PID.
struct DebianNginx {
    child: Child,
}

impl Drop for DebianNginx {
    fn drop(&mut self) {
        common::nginx::signal(self.child.id() as i32, libc::SIGTERM);
        let stopped = wait_for(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten()
        });
        if stopped.is_none() {
            common::nginx::signal(self.child.id() as i32, libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

#[test]
fn the_package_installs_runs_in_debian_nginx_and_removes_cleanly() {
    // SAFETY: getuid(2) has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "apt-get install needs root (CI runs as root)"
    );
    assert!(
        Path::new(DEBIAN_NGINX).exists(),
        "Debian's nginx is missing: scripts/install.sh installs it"
    );
    let deb = deb();
    let conf_d = PathBuf::from("/etc/nginx/conf.d/dwepc-package-test.conf");
    let _cleanup = Cleanup {
        conf: conf_d.clone(),
    };
    if installed() {
        let (ok, out) = run("apt-get", &["purge", "-y", PKG]);
        assert!(ok, "purge a previous install: {out}");
    }

    // install, as an operator would, into the distribution's nginx
    let (ok, out) = run(
        "apt-get",
        &[
            "install",
            "-y",
            "--no-install-recommends",
            deb.to_str().unwrap(),
        ],
    );
    assert!(ok, "apt-get install {}:\n{out}", deb.display());
    assert!(installed());
    assert!(Path::new(SO).is_file(), "{SO}");
    assert_eq!(
        std::fs::read_to_string(AVAILABLE).unwrap().trim(),
        "load_module modules/ngx_http_dwepc_module.so;"
    );
    assert_eq!(
        std::fs::read_link(ENABLED).expect("enabled on install"),
        PathBuf::from(AVAILABLE)
    );
    assert!(
        Path::new(&format!("/usr/share/doc/{PKG}/examples/dwepc.conf")).is_file(),
        "example configuration"
    );
    // it depends on the very ABI of the nginx it was built for
    let (_, depends) = run("dpkg-query", &["-W", "-f=${Depends}", PKG]);
    let (_, provides) = run("dpkg-query", &["-W", "-f=${Provides}", "nginx"]);
    let abi = depends
        .split(", ")
        .find(|d| d.starts_with("nginx-abi-"))
        .unwrap_or_else(|| panic!("no nginx-abi dependency: {depends}"));
    assert!(provides.contains(abi), "{abi} vs nginx's {provides}");

    // the stock configuration plus a dwepc upstream, in conf.d as an
    // operator would add it
    let backends: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("b{i}"))).collect();
    let vms: Vec<VmSpec> = (0..3)
        .map(|i| VmSpec {
            name: vm_name(i),
            ip: None,
            num_cpu: 2,
            cpu_mhz: 4000,
            memory_mb: 2048,
        })
        .collect();
    let opts = Opts {
        refresh_s: 1,
        ..Opts::default()
    };
    let vcsim = Vcsim::start(&vms, &opts);
    let pw = common::setup::password_file(&vcsim.dir, &opts.pass);
    let port = free_port();
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "    server {a};\n    dwepc_node {a} vm={};\n",
                vm_name(i),
                a = b.addr()
            )
        })
        .collect();
    std::fs::write(
        &conf_d,
        format!(
            "dwepc_vsphere vc url={} user={} password_file={pw} insecure_http=on timeout=2s;\n\
             upstream app {{\n    dwepc interval=1s window=8 min_samples=2 ttl=8s;\n{servers}}}\n\
             server {{\n    listen 127.0.0.1:{port};\n    access_log off;\n\
             \x20   location / {{ proxy_pass http://app; }}\n\
             \x20   location = /dwepc {{ dwepc_status; }}\n}}\n",
            vcsim.url, opts.user
        ),
    )
    .unwrap();
    let (ok, out) = run(DEBIAN_NGINX, &["-t"]);
    assert!(ok, "nginx -t with the stock nginx.conf:\n{out}");

    // run it: the stock nginx.conf with its pid and error log in a
    // directory of ours and without the default site (port 80), so nothing
    // but loopback is opened and no service is disturbed
    let dir = vcsim.dir.join("debian-nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let stock = std::fs::read_to_string("/etc/nginx/nginx.conf").unwrap();
    assert!(stock.contains("include /etc/nginx/modules-enabled/*.conf;"));
    let mut ours = String::new();
    for line in stock.lines() {
        let t = line.trim();
        if t.starts_with("pid ") || t.starts_with("error_log ") || t.contains("sites-enabled") {
            continue;
        }
        ours.push_str(line);
        ours.push('\n');
    }
    ours.push_str(&format!(
        "pid {};\nerror_log {} notice;\n",
        dir.join("nginx.pid").display(),
        dir.join("error.log").display()
    ));
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, ours).unwrap();
    let conf_s = conf.to_str().unwrap();
    let child = Command::new(DEBIAN_NGINX)
        .args(["-c", conf_s, "-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run Debian's nginx");
    let nginx = DebianNginx { child };
    let error_log = || std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
    let feeder = Feeder::start(
        &backends,
        vcsim.counters_path(),
        Arc::new(Mutex::new(vec![0.0; 3])),
        Arc::new(Mutex::new(Vec::new())),
        0.0,
        (524_288, 100),
    );
    let status = || -> serde_json::Value {
        http::request(port, "GET", "/dwepc")
            .ok()
            .and_then(|r| serde_json::from_str(&r.body).ok())
            .unwrap_or_default()
    };
    let active = wait_for(Duration::from_secs(60), || {
        let _ = http::request(port, "GET", "/");
        std::thread::sleep(Duration::from_millis(25));
        let s = status();
        let u = &s["upstreams"][0];
        (u["balancing"] == "dwepc" && u["mapped"] == 3).then(|| s.clone())
    });
    assert!(
        active.is_some(),
        "counters never drove Debian's nginx: {}\n{}",
        status(),
        error_log()
    );
    let r = http::get(port, "/");
    assert_eq!(r.status, 200);
    let server = r
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("server"))
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let (_, version) = run(DEBIAN_NGINX, &["-v"]);
    assert!(
        version.contains(&server) && server.starts_with("nginx/1."),
        "answered by {server}, Debian's nginx is {version}"
    );
    assert!(
        backends
            .iter()
            .all(|b| b.requests.load(std::sync::atomic::Ordering::Relaxed) > 0),
        "every backend serves"
    );
    assert!(
        error_log().contains("balances by ESXi counters"),
        "{}",
        error_log()
    );
    drop(feeder);
    drop(nginx);

    // remove: the module and its load line go; nginx still starts with the
    // stock configuration (and refuses dwepc directives, which shows the
    // module really was what served them)
    let (ok, out) = run(DEBIAN_NGINX, &["-t"]);
    assert!(ok, "{out}");
    let (ok, out) = run("apt-get", &["remove", "-y", PKG]);
    assert!(ok, "apt-get remove: {out}");
    assert!(!Path::new(SO).exists());
    assert!(!Path::new(ENABLED).exists() && std::fs::symlink_metadata(ENABLED).is_err());
    let (ok, out) = run(DEBIAN_NGINX, &["-t"]);
    assert!(
        !ok && out.contains("unknown directive \"dwepc_vsphere\""),
        "{out}"
    );
    std::fs::remove_file(&conf_d).unwrap();
    let (ok, out) = run(DEBIAN_NGINX, &["-t"]);
    assert!(ok, "stock nginx -t after remove:\n{out}");

    // purge leaves nothing behind
    let (ok, out) = run("apt-get", &["purge", "-y", PKG]);
    assert!(ok, "apt-get purge: {out}");
    assert!(!installed());
    let left: Vec<String> = std::fs::read_dir("/etc/nginx/modules-enabled")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("dwepc"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(!Path::new(AVAILABLE).exists());
    assert!(!Path::new(&format!("/usr/share/doc/{PKG}")).exists());
}
