//! Servers with `resolve` (nginx's `zone` + `resolver`): the addresses a
//! name resolves to come and go at run time, and each must count in a slot
//! of its own: the address, not the position in nginx's list, decides. A
//! small DNS server on loopback plays the name's zone.

mod common;
use common::backend::Backend;
use common::dns::Dns;
use common::nginx::{conf, Nginx};
use common::vsenv::{VsEnv, VsOpts};
use common::{free_port, http, wait_for};
use serde_json::Value;
use std::time::Duration;

/// The status entry of the peer at `name` (`ip:port`).
fn peer<'a>(ups: &'a Value, name: &str) -> Option<&'a Value> {
    ups["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
}

fn requests(ups: &Value, name: &str) -> u64 {
    peer(ups, name).map_or(0, |p| p["requests"].as_u64().unwrap_or(0))
}

/// Without counters (round robin picks, the module counts): after the name
/// moves to another address, with as many peers as before, each address
/// keeps its own count.
#[test]
fn resolved_addresses_count_in_their_own_slots() {
    let dns = Dns::start();
    let p = free_port();
    let b1 = Backend::start("b1");
    let b2 = Backend::start_at("b2", "127.0.0.2", p);
    let b3 = Backend::start_at("b3", "127.0.0.3", p);
    dns.set("app.test", &["127.0.0.2"]);
    let port = free_port();
    let text = conf(
        "worker_processes 2;\n",
        &format!(
            "resolver 127.0.0.1:{} valid=1s ipv6=off;\n\
             upstream app {{ zone app 256k; dwepc pick=least_conn; server {}; server app.test:{p} resolve; }}\n\
             server {{ listen 127.0.0.1:{port};\n\
               location / {{ proxy_pass http://app; }}\n\
               location = /dwepc {{ dwepc_status; }} }}",
            dns.port,
            b1.addr()
        ),
    );
    let nginx = Nginx::start(&text, port);
    let status = || -> Value {
        let r = http::get(port, "/dwepc");
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body));
        v["upstreams"][0].clone()
    };
    let (a2, a3) = (format!("127.0.0.2:{p}"), format!("127.0.0.3:{p}"));
    let seen = wait_for(Duration::from_secs(15), || {
        // traffic until the address is used: a failed request is only retried
        let _ = http::request(port, "GET", "/");
        (b2.served() > 0).then_some(())
    });
    assert!(seen.is_some(), "{}\n{}", status(), nginx.error_log());
    for _ in 0..40 {
        assert_eq!(http::get(port, "/").status, 200);
    }
    let st = status();
    assert_eq!(
        peer(&st, &a2).unwrap()["server"],
        format!("app.test:{p}"),
        "{st}"
    );
    assert_eq!(requests(&st, &b1.addr()), b1.served(), "{st}");
    assert_eq!(requests(&st, &a2), b2.served(), "{st}");

    // the name moves: the list has two peers again, the second another
    // address
    dns.set("app.test", &["127.0.0.3"]);
    let moved = wait_for(Duration::from_secs(15), || {
        // traffic until the address is used: a failed request is only retried
        let _ = http::request(port, "GET", "/");
        (b3.served() > 0).then_some(())
    });
    assert!(moved.is_some(), "{}\n{}", status(), nginx.error_log());
    let b2_before = b2.served();
    for _ in 0..40 {
        assert_eq!(http::get(port, "/").status, 200);
    }
    assert_eq!(
        b2.served(),
        b2_before,
        "the old address still gets requests"
    );
    let st = status();
    assert_eq!(requests(&st, &b1.addr()), b1.served(), "{st}");
    assert_eq!(requests(&st, &a2), b2.served(), "{st}");
    assert_eq!(requests(&st, &a3), b3.served(), "{st}");
    assert_eq!(peer(&st, &a3).unwrap()["in_flight"], 0, "{st}");
}

/// With counters (shares mode, VMs found by guest IP): the addresses of a
/// `resolve` name are balanced by their shares; when one address is
/// replaced by another, the new one is mapped to its own VM, takes a share
/// and its own count, and the old one gets nothing more. With every peer
/// compared and with two drawn per pick (`choices=2`: the draw table
/// follows the list as `resolve` changes it).
#[test]
fn resolved_addresses_are_balanced_on_their_own_vms() {
    if !common::setup::vcsim_available() {
        panic!("vcsim launcher not built: run scripts/build-vcsim.sh (scripts/test.sh does)");
    }
    for choices in ["all", "2"] {
        resolved_addresses_balanced(choices);
    }
}

fn resolved_addresses_balanced(choices: &str) {
    let dns = Dns::start();
    let p = free_port();
    dns.set("app.test", &["127.0.0.2", "127.0.0.3"]);
    let mut env = VsEnv::start(VsOpts {
        by_ip: true,
        port: Some(p),
        zone: true,
        workers: 2,
        flat_mem_net: (0, 0),
        dwepc: format!("interval=1s window=4 step=0.5 ttl=10m pick=least_conn choices={choices}"),
        http_extra: format!("resolver 127.0.0.1:{} valid=1s ipv6=off;\n", dns.port),
        servers: Some(format!("server app.test:{p} resolve;\n")),
        ..VsOpts::default()
    });
    env.start_feeder();
    let addr = |i: usize| format!("127.0.0.{}:{p}", i + 2);
    let shared = |st: &Value, i: usize| {
        peer(st, &addr(i)).is_some_and(|x| x["share"].as_f64().is_some_and(|s| s > 0.0))
    };
    env.drive_until(40, Duration::from_secs(40), "resolved and active", |st| {
        st["balancing"] == "dwepc" && shared(st, 0) && shared(st, 1)
    });
    let st = env.status();
    assert!(peer(&st, &addr(2)).is_none(), "{st}");
    // the page shows choices= and, while counters drive the pick, how many
    // of the two addresses a pick draws
    let drawn = if choices == "all" {
        Value::Null
    } else {
        2.into()
    };
    assert_eq!(
        (&st["choices"], &st["drawn"]),
        (&choices.into(), &drawn),
        "{st}"
    );
    let got = env.send(40);
    assert!(got.iter().any(|b| b == "b0") && got.iter().any(|b| b == "b1"));

    dns.set("app.test", &["127.0.0.2", "127.0.0.4"]);
    env.drive_until(40, Duration::from_secs(30), "new address mapped", |st| {
        st["balancing"] == "dwepc"
            && shared(st, 2)
            && peer(st, &addr(2)).is_some_and(|x| x["capacity"]["cpu"].as_f64().is_some())
    });
    assert!(env.log_count("resolved to 127.0.0.4") >= 1);
    let b1_before = env.backends[1].served();
    let got = env.send(40);
    assert!(!got.iter().any(|b| b == "b1"), "{got:?}");
    assert!(got.iter().any(|b| b == "b2"), "{got:?}");
    env.stop_feeder();
    assert_eq!(env.backends[1].served(), b1_before);
    let st = env.status();
    for (i, b) in env.backends.iter().enumerate() {
        assert_eq!(requests(&st, &addr(i)), b.served(), "{i}: {st}");
    }
}
