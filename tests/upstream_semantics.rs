//! Stock upstream behaviours that must keep working under `dwepc`, each
//! run seven times: without counters (the fallback: nginx's weighted round
//! robin, counted), with live counters from vcsim in paper mode, in shares
//! mode, in shares mode `pick=least_time` and in the same with two choices
//! drawn per pick (`choices=2`), and in the least_time and random_two
//! modes (response times; our own `get` in the last six).

mod common;
use common::backend::{Backend, Behaviour};
use common::setup::{Env, Mode};
use common::{http, wait_for};
use std::time::Duration;

fn every_mode(f: impl Fn(Mode)) {
    f(Mode::LeastTime);
    f(Mode::RandomTwo);
    if common::setup::vcsim_available() {
        f(Mode::SharesTime);
        f(Mode::SharesDrawn);
    }
    spreading_modes(f);
}

/// The modes whose pick spreads one request after another over equal
/// servers (the response-time picks instead send them to the faster
/// server, so a test that waits for the other one to be tried does not
/// apply to them).
fn spreading_modes(f: impl Fn(Mode)) {
    f(Mode::Fallback);
    if common::setup::vcsim_available() {
        f(Mode::Paper);
        f(Mode::Shares);
    } else {
        panic!("vcsim launcher not built: run scripts/build-vcsim.sh (scripts/test.sh does)");
    }
}

#[test]
fn weights_split_without_counters() {
    let b1 = Backend::start("b1");
    let b2 = Backend::start("b2");
    let env = Env::start(
        Mode::Fallback,
        &[&b1, &b2],
        |b| if b.id == "b1" { "weight=3" } else { "" }.into(),
        "",
        1,
    );
    for _ in 0..40 {
        assert_eq!(http::get(env.port, "/").status, 200);
    }
    assert_eq!((b1.served(), b2.served()), (30, 10));
    let st = env.status();
    assert_eq!(st["balancing"], "round_robin");
    assert_eq!(st["peers"][0]["requests"], 30);
    assert_eq!(st["peers"][1]["requests"], 10);
}

#[test]
fn down_server_gets_nothing() {
    every_mode(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let env = Env::start(
            mode,
            &[&b1, &b2],
            |b| if b.id == "b2" { "down" } else { "" }.into(),
            "",
            1,
        );
        let before = b2.served();
        for _ in 0..30 {
            assert_eq!(http::get(env.port, "/").status, 200);
        }
        assert_eq!(b2.served(), before, "{mode:?}");
    });
}

#[test]
fn backup_serves_only_when_primaries_fail() {
    every_mode(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let bk = Backend::start("backup");
        let env = Env::start(
            mode,
            &[&b1, &b2, &bk],
            |b| {
                if b.id == "backup" {
                    "backup"
                } else {
                    "max_fails=1 fail_timeout=30s"
                }
                .into()
            },
            "proxy_next_upstream error timeout http_500;",
            1,
        );
        let base = bk.served();
        for _ in 0..20 {
            assert_eq!(http::get(env.port, "/").status, 200);
        }
        assert_eq!(
            bk.served(),
            base,
            "{mode:?}: backup used while primaries were fine"
        );
        b1.set(Behaviour::Reset);
        b2.set(Behaviour::Reset);
        for _ in 0..10 {
            let r = http::get(env.port, "/");
            assert_eq!(r.status, 200, "{mode:?}");
            assert_eq!(r.body.trim(), "backup");
        }
        assert!(bk.served() >= base + 10);
    });
}

/// (Not in the response-time modes: nothing makes it try the slower of two idle
/// servers within ten requests; the eligibility test it relies on is the
/// same code for every mode.)
#[test]
fn max_fails_disables_then_probes_after_fail_timeout() {
    spreading_modes(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let env = Env::start(
            mode,
            &[&b1, &b2],
            |_| "max_fails=1 fail_timeout=3s".into(),
            "proxy_next_upstream error timeout;",
            1,
        );
        b1.set(Behaviour::Reset);
        // the first request that hits b1 fails over to b2 and disables b1
        let conns = b1.connections.load(std::sync::atomic::Ordering::SeqCst);
        let mut hit = false;
        for _ in 0..10 {
            assert_eq!(http::get(env.port, "/").status, 200);
            if b1.connections.load(std::sync::atomic::Ordering::SeqCst) > conns {
                hit = true;
                break;
            }
        }
        assert!(hit, "{mode:?}: b1 never tried");
        let after_fail = b1.connections.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..20 {
            assert_eq!(http::get(env.port, "/").body.trim(), "b2", "{mode:?}");
        }
        assert_eq!(
            b1.connections.load(std::sync::atomic::Ordering::SeqCst),
            after_fail,
            "{mode:?}: b1 used while disabled"
        );
        // after fail_timeout one probe goes to b1 again; it is healthy now
        b1.set(Behaviour::Ok);
        // nginx compares whole seconds: now - checked must exceed 3
        std::thread::sleep(Duration::from_millis(4500));
        let served = b1.served();
        for _ in 0..20 {
            assert_eq!(http::get(env.port, "/").status, 200);
        }
        assert!(
            b1.served() > served,
            "{mode:?}: b1 not probed after fail_timeout"
        );
    });
}

#[test]
fn max_conns_is_respected() {
    every_mode(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let env = Env::start(
            mode,
            &[&b1, &b2],
            |b| if b.id == "b1" { "max_conns=1" } else { "" }.into(),
            "",
            1,
        );
        b1.max_in_flight
            .store(0, std::sync::atomic::Ordering::SeqCst);
        let port = env.port;
        let hs: Vec<_> = (0..6)
            .map(|_| std::thread::spawn(move || http::get(port, "/?delay=400").status))
            .collect();
        // never a request past b1's max_conns, and no overload guard's
        // answer (503): b2 holds what its own vCPUs hold, however small
        // its share under the flat test counters
        let statuses: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "{mode:?}: {statuses:?}\n{}",
            env.nginx.error_log()
        );
        assert!(statuses.contains(&200), "{mode:?}: {statuses:?}");
        assert!(
            b1.max_in_flight.load(std::sync::atomic::Ordering::SeqCst) <= 1,
            "{mode:?}"
        );
    });
}

#[test]
fn retries_never_hit_a_tried_peer() {
    every_mode(|mode| {
        let bad1 = Backend::start("bad1");
        let bad2 = Backend::start("bad2");
        let good = Backend::start("good");
        let env = Env::start(
            mode,
            &[&bad1, &bad2, &good],
            |_| "max_fails=0".into(),
            "proxy_next_upstream error http_500; proxy_next_upstream_tries 3;",
            1,
        );
        bad1.set(Behaviour::Error500);
        bad2.set(Behaviour::Error500);
        let n = 30;
        let (a0, b0) = (bad1.served(), bad2.served());
        for _ in 0..n {
            let r = http::get(env.port, "/");
            assert_eq!(r.status, 200, "{mode:?}");
            assert_eq!(r.body.trim(), "good");
        }
        // each request tries every failing peer at most once
        assert!(
            bad1.served() - a0 <= n && bad2.served() - b0 <= n,
            "{mode:?}"
        );
        // and with max_fails=0 they stay in rotation: both are tried (in
        // the modes that spread sequential requests; the response-time
        // picks keep sending first to whichever answered fastest before,
        // failing or not, as stock nginx leaves failures to max_fails)
        if !mode.follows_response_times() {
            assert!(bad1.served() > a0 && bad2.served() > b0, "{mode:?}");
        }
    });
}

#[test]
fn no_live_upstreams_gives_502() {
    every_mode(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let env = Env::start(
            mode,
            &[&b1, &b2],
            |_| "max_fails=1 fail_timeout=30s".into(),
            "",
            1,
        );
        b1.set(Behaviour::Reset);
        b2.set(Behaviour::Reset);
        let mut codes = Vec::new();
        for _ in 0..4 {
            codes.push(http::get(env.port, "/").status);
        }
        assert!(codes.iter().all(|&c| c == 502), "{mode:?}: {codes:?}");
        assert!(
            wait_for(Duration::from_secs(2), || env
                .nginx
                .error_log()
                .contains("no live upstreams")
                .then_some(()))
            .is_some(),
            "{mode:?}: {}",
            env.nginx.error_log()
        );
    });
}

#[test]
fn zone_and_keepalive_work() {
    every_mode(|mode| {
        let b1 = Backend::start("b1");
        let b2 = Backend::start("b2");
        let env = Env::start_with(
            mode,
            &[&b1, &b2],
            |_| String::new(),
            "proxy_http_version 1.1; proxy_set_header Connection \"\";",
            1,
            "zone app 64k;",
            "keepalive 4;",
        );
        let before = b1.connections.load(std::sync::atomic::Ordering::SeqCst)
            + b2.connections.load(std::sync::atomic::Ordering::SeqCst);
        for _ in 0..60 {
            assert_eq!(http::get(env.port, "/").status, 200);
        }
        let conns = b1.connections.load(std::sync::atomic::Ordering::SeqCst)
            + b2.connections.load(std::sync::atomic::Ordering::SeqCst)
            - before;
        assert!(
            conns <= 4,
            "{mode:?}: keepalive not used: {conns} new connections for 60 requests"
        );
        assert!(b1.served() > 0 && b2.served() > 0, "{mode:?}");
    });
}

#[test]
fn counts_are_exact_across_four_workers() {
    every_mode(|mode| {
        let bs: Vec<Backend> = (0..3).map(|i| Backend::start(&format!("b{i}"))).collect();
        let refs: Vec<&Backend> = bs.iter().collect();
        let env = Env::start(mode, &refs, |_| String::new(), "", 4);
        assert_eq!(env.nginx.workers().len(), 4);
        let totals_before: Vec<u64> = bs.iter().map(|b| b.served()).collect();
        let st0 = env.status();
        let port = env.port;
        let hs: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        assert_eq!(http::get(port, "/").status, 200);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let st = env.status();
        let mut sum = 0;
        for (i, b) in bs.iter().enumerate() {
            let counted = st["peers"][i]["requests"].as_u64().unwrap()
                - st0["peers"][i]["requests"].as_u64().unwrap();
            assert_eq!(counted, b.served() - totals_before[i], "{mode:?}: peer {i}");
            sum += counted;
        }
        assert_eq!(sum, 400, "{mode:?}");
        // every request that was counted also ended
        for i in 0..bs.len() {
            assert_eq!(st["peers"][i]["in_flight"], 0, "{mode:?}: {st}");
        }
    });
}

/// In-flight counts are shared by every worker, with or without nginx's
/// `zone`, and return to zero when the requests end (also after a reload
/// that keeps the servers).
#[test]
fn in_flight_is_shared_by_workers() {
    for zone in ["", "zone app 64k;"] {
        let bs: Vec<Backend> = (0..2).map(|i| Backend::start(&format!("b{i}"))).collect();
        let refs: Vec<&Backend> = bs.iter().collect();
        let env = Env::start_with(Mode::Fallback, &refs, |_| String::new(), "", 4, zone, "");
        let port = env.port;
        let hs: Vec<_> = (0..6)
            .map(|_| std::thread::spawn(move || http::get(port, "/?delay=1500").status))
            .collect();
        let seen = wait_for(Duration::from_secs(3), || {
            let st = env.status();
            let n: u64 = (0..2)
                .map(|i| st["peers"][i]["in_flight"].as_u64().unwrap())
                .sum();
            (n == 6).then_some(st)
        });
        assert!(seen.is_some(), "zone {zone:?}: {}", env.status());
        for h in hs {
            assert_eq!(h.join().unwrap(), 200);
        }
        let st = env.status();
        for i in 0..2 {
            assert_eq!(st["peers"][i]["in_flight"], 0, "zone {zone:?}: {st}");
        }
    }
}
