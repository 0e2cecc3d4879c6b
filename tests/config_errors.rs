//! `nginx -t` with malformed dwepc configurations: each must fail with the
//! file, the line and a clear reason. And the valid forms must pass.

mod common;
use common::nginx::{conf, test_config};

fn pw_file() -> String {
    let p = std::env::temp_dir().join(format!("dwepc-pw-{}", std::process::id()));
    std::fs::write(&p, "secret\n").unwrap();
    p.display().to_string()
}

/// A FIFO nobody writes to: reading it would block `nginx -t` forever.
fn fifo() -> String {
    let p = std::env::temp_dir().join(format!("dwepc-fifo-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    assert!(std::process::Command::new("mkfifo")
        .arg(&p)
        .status()
        .unwrap()
        .success());
    p.display().to_string()
}

fn upstream(body: &str) -> String {
    conf(
        "",
        &format!("upstream app {{\n{body}\n}}\nserver {{ listen 127.0.0.1:1; location / {{ proxy_pass http://app; }} }}"),
    )
}

/// Line number (1-based) of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect(needle) + 1
}

fn expect_error(text: &str, needle_line: &str, reason: &str) {
    let (ok, out, path) = test_config(text);
    assert!(!ok, "config unexpectedly valid:\n{text}");
    assert!(out.contains(reason), "reason {reason:?} not in:\n{out}");
    let at = format!("{}:{}", path.display(), line_of(text, needle_line));
    assert!(out.contains(&at), "location {at} not in:\n{out}");
}

#[test]
fn malformed_configurations_fail_with_file_line_and_reason() {
    let pw = pw_file();
    let vs = format!("dwepc_vsphere vc url=https://127.0.0.1:1/sdk user=u password_file={pw};");
    let cases: Vec<(String, &str, &str)> = vec![
        (upstream("dwepc window=0;\nserver 127.0.0.1:2;"), "dwepc window", "invalid value \"0\" in \"window=\""),
        (upstream("dwepc bogus=1;\nserver 127.0.0.1:2;"), "dwepc bogus", "invalid parameter \"bogus=1\""),
        (upstream("dwepc;\ndwepc window=3;\nserver 127.0.0.1:2;"), "dwepc window=3", "\"dwepc\" directive is duplicate"),
        (upstream("dwepc interval=fast;\nserver 127.0.0.1:2;"), "interval=fast", "invalid value \"fast\" in \"interval=\""),
        (upstream("dwepc mode=magic;\nserver 127.0.0.1:2;"), "mode=magic", "expected \"shares\", \"paper\", \"wlc\", \"least_time\" or \"random_two\""),
        (upstream("dwepc mode=paper inflight=4;\nserver 127.0.0.1:2;"), "mode=paper inflight=4", "applies to \"mode=shares\" only"),
        (upstream("dwepc pick=random;\nserver 127.0.0.1:2;"), "pick=random", "\"least_conn\", \"expected_delay\" or \"least_time\""),
        (upstream("dwepc choices=1;\nserver 127.0.0.1:2;"), "choices=1", "\"auto\", \"all\" or a number of peers drawn from 2 to 8"),
        (upstream("dwepc mode=paper choices=2;\nserver 127.0.0.1:2;"), "choices=2", "applies to \"mode=shares\" only"),
        (upstream("dwepc mode=paper slow_start=30s;\nserver 127.0.0.1:2;"), "slow_start=30s", "applies to \"mode=shares\", \"mode=wlc\", \"mode=least_time\" or \"mode=random_two\" only"),
        (upstream("dwepc slow_start=fast;\nserver 127.0.0.1:2;"), "slow_start=fast", "a time from 1000ms to 1d"),
        (upstream("dwepc window=20 min_samples=30;\nserver 127.0.0.1:2;"), "min_samples=30", "larger than"),
        (upstream("dwepc interval=20s ttl=5s;\nserver 127.0.0.1:2;"), "ttl=5s", "shorter than"),
        (upstream("dwepc vsphere=nope;\nserver 127.0.0.1:2;"), "vsphere=nope", "unknown vSphere endpoint \"nope\""),
        (upstream("dwepc;\nserver 127.0.0.1:2;\ndwepc_node 127.0.0.1:9 vm=x;"), "dwepc_node", "matches no server"),
        (upstream("server 127.0.0.1:2;\ndwepc_node 127.0.0.1:2 vm=x;"), "dwepc_node", "without \"dwepc\""),
        (upstream("dwepc;\nserver 127.0.0.1:2;\ndwepc_node 127.0.0.1:2 cpu=-5;"), "dwepc_node", "invalid value \"-5\" in \"cpu=\""),
        (upstream("dwepc;\nserver 127.0.0.1:2;\ndwepc_node 127.0.0.1:2;\ndwepc_node 127.0.0.1:2 vm=y;"), "vm=y", "duplicate \"dwepc_node\""),
        (conf("", "dwepc_vsphere vc url=https://vc/sdk user=u;"), "dwepc_vsphere", "\"password_file=\" is required"),
        (conf("", "dwepc_vsphere vc url=https://vc/sdk user=u password=secret;"), "dwepc_vsphere", "inline passwords are not accepted"),
        (conf("", "dwepc_vsphere vc url=https://vc/sdk user=u password_file=/nonexistent/pw;"), "dwepc_vsphere", "cannot read password_file \"/nonexistent/pw\""),
        (conf("", &format!("dwepc_vsphere vc url=gopher://vc user=u password_file={pw};")), "dwepc_vsphere", "URL"),
        (conf("", &format!("{vs}\n{} timeout=2s;", vs.trim_end_matches(';'))), "timeout=2s", "duplicate endpoint \"vc\""),
        // the Prometheus source
        (conf("", "dwepc_prometheus p url=ftp://x;"), "url=ftp", "the Prometheus server's base URL"),
        (conf("", "dwepc_prometheus p url=http://127.0.0.1:9090 bearer_token_file=/t;"), "bearer_token_file", "in clear text"),
        (conf("", "dwepc_prometheus p url=https://127.0.0.1:9090 bearer_token=abc;"), "bearer_token=", "bearer_token_file="),
        (conf("", "dwepc_prometheus p url=http://127.0.0.1:9090 metrics=collectd;"), "metrics=collectd", "vmware_exporter or telegraf"),
        (conf("", "dwepc_prometheus p url=http://127.0.0.1:9090 'mem.consumed.average=m{a=b}';"), "mem.consumed", "series selector"),
        (conf("", "dwepc_prometheus p url=http://127.0.0.1:9090 cpu.usagemhz.average=off;"), "cpu.usagemhz", "no CPU counter"),
        (conf("", &format!("{vs}\ndwepc_prometheus vc url=http://127.0.0.1:9090;")), "dwepc_prometheus vc", "duplicate endpoint \"vc\""),
        (conf("", &format!("{vs}\nupstream app {{ dwepc prometheus=vc; server 127.0.0.1:2; }}\nserver {{ listen 127.0.0.1:1; location / {{ proxy_pass http://app; }} }}")), "prometheus=vc", "\"vc\" is a vSphere endpoint; write vsphere=vc"),
        (upstream("dwepc vsphere=a prometheus=b;\nserver 127.0.0.1:2;"), "prometheus=b", "together"),
        (conf("", &format!("dwepc_vsphere vc url=https://vc/sdk user=u password_file={pw} ca_file={pw};")), "dwepc_vsphere", "holds no PEM certificate"),
        (conf("", &format!("dwepc_vsphere vc url=https://vc/sdk user=u password_file={pw} tls_verify=maybe;")), "dwepc_vsphere", "\"on\" or \"off\""),
        (conf("", "dwepc;"), "dwepc;", "\"dwepc\" directive is not allowed here"),
        (conf("", "server { listen 127.0.0.1:1; location / { dwepc_status on; } }"), "dwepc_status", "invalid number of arguments"),
        // settings that cannot work, or leak the password
        (conf("", &format!("dwepc_vsphere vc url=https://admin:s3cret@vc/sdk user=u password_file={pw};")), "dwepc_vsphere", "put the user in user= and the password in password_file="),
        (conf("", &format!("dwepc_vsphere vc url=http://vc/sdk user=u password_file={pw};")), "dwepc_vsphere", "clear text"),
        (conf("", &format!("dwepc_vsphere vc url=https://x user=u password_file={pw};")), "dwepc_vsphere", "has no path"),
        (conf("", &format!("dwepc_vsphere vc url=https://vc:99999/sdk user=u password_file={pw};")), "dwepc_vsphere", "invalid port"),
        (conf("", "dwepc_vsphere vc url=https://vc/sdk user=u password_file=/dev/zero;"), "dwepc_vsphere", "is not a regular file"),
        (conf("", &format!("dwepc_vsphere vc url=https://vc/sdk user=u password_file={};", fifo())), "dwepc_vsphere", "is not a regular file"),
        (upstream("dwepc;\nserver 127.0.0.1:2;\ndwepc_node 127.0.0.1:2 cpu=1e-300;"), "dwepc_node", "a capacity in MHz from 1 to 1e7"),
        (upstream("dwepc mem_reserved=1e308;\nserver 127.0.0.1:2;"), "mem_reserved", "MB from 0 to 1e8"),
        (upstream_with_endpoints(&format!("dwepc_vsphere a url=https://vc/sdk user=u password_file={pw};\ndwepc_vsphere b url=https://vc/sdk user=u password_file={pw};")), "dwepc;", "none is marked \"default\": add vsphere= or prometheus= with one of a, b"),
        (conf("", &format!("{vs}\nupstream app {{ dwepc interval=1s ttl=5s; server 127.0.0.1:2; }}")), "ttl=5s", "shorter than the time to replace a frozen polling worker"),
    ];
    let mut checked = 0;
    for (text, needle, reason) in cases {
        expect_error(&text, needle, reason);
        checked += 1;
    }
    assert!(checked >= 30);
}

#[test]
fn settings_that_work_but_need_attention_warn() {
    let pw = pw_file();
    let (ok, out, _) = test_config(&conf(
        "",
        &format!(
            "dwepc_vsphere vc url=https://vc/sdk user=u password_file={pw} tls_verify=off timeout=3s;\n\
             upstream app {{ dwepc interval=1s; server 127.0.0.1:2; }}"
        ),
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("[warn]") && out.contains("tls_verify=off"),
        "{out}"
    );
    assert!(out.contains("longer than interval=1000 ms"), "{out}");
    let (ok, out, _) = test_config(&conf(
        "",
        &format!("dwepc_vsphere vc url=http://vc/sdk user=u password_file={pw} insecure_http=on;"),
    ));
    assert!(ok && out.contains("clear text"), "{out}");
}

#[test]
fn empty_password_file_is_an_error() {
    let p = std::env::temp_dir().join(format!("dwepc-empty-pw-{}", std::process::id()));
    std::fs::write(&p, "\n").unwrap();
    let text = conf(
        "",
        &format!(
            "dwepc_vsphere vc url=https://vc/sdk user=u password_file={};",
            p.display()
        ),
    );
    expect_error(&text, "dwepc_vsphere", "is empty");
}

#[test]
fn two_default_endpoints_are_an_error() {
    let pw = pw_file();
    let text = upstream_with_endpoints(&format!(
        "dwepc_vsphere a url=https://vc/sdk user=u password_file={pw} default;\n\
         dwepc_vsphere b url=https://vc/sdk user=u password_file={pw} default;"
    ));
    let (ok, out, path) = test_config(&text);
    assert!(!ok);
    assert!(out.contains("more than one default"), "{out}");
    assert!(
        out.contains(&format!(
            "{}:{}",
            path.display(),
            line_of(&text, "dwepc_vsphere b")
        )),
        "{out}"
    );
}

fn upstream_with_endpoints(endpoints: &str) -> String {
    conf(
        "",
        &format!(
            "{endpoints}\nupstream app {{ dwepc; server 127.0.0.1:2; }}\n\
             server {{ listen 127.0.0.1:1; location / {{ proxy_pass http://app; }} }}"
        ),
    )
}

#[test]
fn valid_configurations_pass() {
    let pw = pw_file();
    for text in [
        upstream("dwepc;\nserver 127.0.0.1:2;"),
        upstream("dwepc window=10 interval=3s ttl=30s min_samples=3 mode=paper cpu_ratio=2 mem_reserved=512;\nserver 127.0.0.1:2 weight=2 max_fails=2 fail_timeout=5s max_conns=10;\nserver 127.0.0.1:3 backup;\nserver 127.0.0.1:4 down;\ndwepc_node 127.0.0.1:2 vm=web-01 cpu=4000 net=125000 cpu_reserved=100;"),
        upstream("zone app 64k;\ndwepc;\nserver 127.0.0.1:2;\nkeepalive 8;"),
        upstream_with_endpoints(&format!("dwepc_vsphere vc url=https://127.0.0.1:1/sdk user=u password_file={pw} tls_verify=off timeout=2s;")),
        conf("", "server { listen 127.0.0.1:1; location = /dwepc { dwepc_status; } }"),
    ] {
        let (ok, out, _) = test_config(&text);
        assert!(ok, "{out}\n{text}");
    }
}

/// The shipped example (nginx-conf/dwepc.conf) passes `nginx -t` once its
/// password file exists and its listen port is free to bind.
#[test]
fn example_configuration_passes() {
    let pw = pw_file();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/nginx-conf/dwepc.conf"
    ))
    .unwrap()
    .replace("/etc/nginx/vcenter.pass", &pw)
    .replace("listen 80;", "listen 127.0.0.1:1;");
    let (ok, out, _) = test_config(&conf("", &text));
    assert!(ok, "{out}\n{text}");
}

#[test]
fn redefined_method_warns_like_stock_nginx() {
    let (ok, out, _) = test_config(&upstream("least_conn;\ndwepc;\nserver 127.0.0.1:2;"));
    assert!(ok, "{out}");
    assert!(out.contains("load balancing method redefined"), "{out}");
    let (ok, out, _) = test_config(&upstream("dwepc;\nserver 127.0.0.1:2;"));
    assert!(ok && !out.contains("redefined"), "{out}");
}
