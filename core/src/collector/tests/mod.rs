//! The collector's state machine, driven without nginx or vcsim: a test
//! runtime and a scripted vCenter ([`vcenter`]).

mod vcenter;

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;

use vcenter::*;

use crate::collector::{first_few, Collector, Level, PeerSpec};
use crate::conf::{parse_node, parse_upstream, VmRef};
use crate::vsphere::Error;
use crate::zone::{names_hash, Lease, Mapping, Reason, LEASE_WORDS};

#[test]
fn one_worker_holds_the_lease_until_it_dies_or_goes_silent() {
    let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
    let lease = Lease::new(&words).unwrap();
    let host = TestRuntime::new();
    let mut a = Collector::new(spec(lease, 10), &host);
    let mut b = Collector::new(spec(lease, 11), &host);
    a.tick(1_000);
    b.tick(1_000);
    assert!(a.is_holder() && !b.is_holder());
    // renewed by every tick of the holder, at the time it is given
    a.tick(1_000 + a.lease_timeout_ms);
    b.tick(1_000 + a.lease_timeout_ms + 1);
    assert!(a.is_holder() && !b.is_holder());
    // the holder goes silent past the timeout: taken over
    let t = 1_000 + 2 * a.lease_timeout_ms + 2;
    b.tick(t);
    assert!(b.is_holder());
    a.tick(t + 1);
    assert!(!a.is_holder());
    assert_eq!(host.logged(Level::Notice, "another worker took over"), 1);
    // the holder's process dies: taken over at once
    host.dead.borrow_mut().push(11);
    a.tick(t + 2);
    assert!(a.is_holder());
    assert_eq!(lease.holder(), 10);
}

#[test]
fn a_long_inventory_read_renews_the_lease_between_pages() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    let mut b = rig.collector(11);
    // four pages, each taking most of the takeover time
    let page_ms = a.lease_timeout_ms * 4 / 5;
    rig.vc().pages = (4, page_ms);
    let start = rig.now() + 100;
    rig.rt.now.set(start);
    a.tick(start);
    assert!(a.is_holder());
    assert_eq!(rig.vc().times("ContinueRetrievePropertiesEx").len(), 3);
    // the read outlasted the takeover time, yet the holder is not frozen
    assert!(rig.now() - start > a.lease_timeout_ms);
    b.tick(rig.now());
    assert!(!b.is_holder());
    a.tick(rig.now() + 100);
    assert!(a.is_holder());
    assert_eq!(rig.rt.logged(Level::Notice, "another worker took over"), 0);
}

#[test]
fn a_holder_that_lost_the_lease_during_a_poll_publishes_nothing_of_it() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    rig.run(&mut a, 60_000, varying);
    assert!(a.is_holder());
    let published = rig.zone().valid_until();
    let successes = rig.record().stats(rig.now()).last_success_ms;
    // another worker takes the lease over while a waits for QueryPerf
    rig.vc().takeover = Some(("QueryPerf", 11, rig.lease.clone()));
    let until = rig.now() + 40_000;
    while rig.vc().takeover.is_some() && rig.now() < until {
        rig.run(&mut a, rig.now() + 100, varying);
    }
    assert!(rig.vc().takeover.is_none(), "no QueryPerf in 40 s");
    // its next tick (the new holder's lease fresh) lets it go
    rig.run(&mut a, rig.now() + 100, varying);
    assert!(!a.is_holder());
    assert_eq!(Lease::new(&rig.lease).unwrap().holder(), 11);
    // the samples a read then were not published, nor its outcome
    assert_eq!(rig.zone().valid_until(), published);
    assert_eq!(rig.record().stats(rig.now()).last_success_ms, successes);
    assert_eq!(rig.rt.logged(Level::Notice, "another worker took over"), 1);
}

#[test]
fn peer_spec_takes_its_node_line_over_the_upstream() {
    let ups = parse_upstream(&["cpu_ratio=0.5"]).unwrap();
    let ip: IpAddr = "127.0.0.2".parse().unwrap();
    let bare = PeerSpec::new("127.0.0.2:80", Some(ip), 2.0, false, false, None, &ups);
    assert_eq!(bare.vm, VmRef::GuestIp);
    assert!(bare.capacity.iter().all(|c| c.is_nan()));
    assert_eq!(
        format!("{:?}", bare.accounting),
        format!("{:?}", ups.accounting)
    );
    let node = parse_node(&["127.0.0.2:80", "vm=web-1", "cpu=2000", "cpu_ratio=0.8"]).unwrap();
    let p = PeerSpec::new(
        "127.0.0.2:80",
        Some(ip),
        2.0,
        true,
        false,
        Some(&node),
        &ups,
    );
    assert_eq!(p.vm, VmRef::Name("web-1".into()));
    assert_eq!(p.capacity[0], 2000.0);
    assert_eq!((p.weight, p.backup, p.ip), (2.0, true, Some(ip)));
    assert_eq!(
        format!("{:?}", p.accounting),
        format!("{:?}", node.accounting.over(&ups.accounting))
    );
    assert_ne!(
        format!("{:?}", p.accounting),
        format!("{:?}", ups.accounting)
    );
}

#[test]
fn samples_are_paired_with_the_requests_of_their_own_period() {
    // the server clock is 7 s ahead and the rates change every period:
    // only a sample paired with its own period's requests (skew
    // removed) gives the true work per request
    let rig = Rig::new(&["interval=20s"]);
    let mut c = rig.collector(10);
    rig.run(&mut c, 200_000, varying);
    let s = rig.zone();
    assert!(s.usable(rig.now()), "{:?}", s.reason(rig.now()));
    let cost = s.cost();
    assert!((cost[0] - CPU_PER_REQUEST as f64).abs() < 0.5, "{cost:?}");
    assert!((cost[2] - NET_PER_REQUEST as f64).abs() < 0.05, "{cost:?}");
    // each VM's newest sample is published as it was reported (MB for
    // memory): one of the periods' 1, 2 or 3 requests per 100 ms
    for p in 0..2 {
        let u = s.peer_info(p).usage;
        assert!([1000.0, 2000.0, 3000.0].contains(&u[0]), "{u:?}");
        assert_eq!(&u[1..], &[1024.0, 5.0 * u[0] / 100.0, 0.0], "{u:?}");
    }
    // one session: counters, view, inventory, clock once, one
    // QueryPerf per 20 s
    let vc = rig.vc();
    assert_eq!(vc.times("Login").len(), 1);
    assert_eq!(vc.times("CurrentTime").len(), 1);
    let q = vc.times("QueryPerf");
    // on the interval's grid after the first
    assert!(q[1..].windows(2).all(|w| w[1] - w[0] == 20_000), "{q:?}");
    assert_eq!(
        rig.rt.logged(
            Level::Notice,
            "polling 2 VMs for 2 of 2 servers every 20000 ms"
        ),
        1
    );
    assert_eq!(rig.rt.logged(Level::Notice, "balances by ESXi counters"), 1);
    // both servers were found by guest IP, and say which VM
    assert_eq!(
        rig.zone().mapping(1),
        (Mapping::Mapped, Some("web-2".into()))
    );
}

#[test]
fn servers_without_a_vm_are_summed_up_in_one_line() {
    let rig = Rig::new(&["interval=20s"]);
    rig.vc().vms.clear();
    let mut c = rig.collector(10);
    rig.run(&mut c, 60_000, |_| [10, 10]);
    let lines: Vec<String> = rig
        .rt
        .log
        .borrow()
        .iter()
        .filter(|(_, m)| m.contains("match no VM"))
        .map(|(_, m)| m.clone())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("2 servers match no VM: 127.0.0.2:80 (guest IP 127.0.0.2), 127.0.0.3:80 (guest IP 127.0.0.3); balanced on their weight (0 of 2 servers mapped)"),
        "{}",
        lines[0]
    );
    assert_eq!(rig.zone().mapping(0), (Mapping::NoGuestIp, None));
    // the VMs appear: one line again, for both
    let vms = Vc::new(rig.rt.now.clone()).vms;
    rig.vc().vms = vms;
    rig.run(&mut c, 120_000, |_| [10, 10]);
    assert_eq!(
        rig.rt
            .logged(Level::Notice, "2 servers found their VM: 127.0.0.2:80 (guest IP 127.0.0.2), 127.0.0.3:80 (guest IP 127.0.0.3) (2 of 2 servers mapped)"),
        1
    );
    assert_eq!(rig.zone().mapping(0).0, Mapping::Mapped);
    let seven: Vec<String> = (0..7).map(|i| i.to_string()).collect();
    assert_eq!(first_few(&seven), "0, 1, 2, 3, 4 and 2 more");
}

#[test]
fn failures_back_off_to_a_cap_and_are_logged_once_per_kind() {
    let rig = Rig::new(&["interval=20s"]);
    rig.vc().failing = Some(("RetrieveServiceContent", Error::Connect("refused".into())));
    let mut c = rig.collector(10);
    rig.run(&mut c, 200_000, |_| [0, 0]);
    let t = rig.vc().times("RetrieveServiceContent");
    let gaps: Vec<u64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    // doubling from 1 s up to twice the interval
    assert_eq!(gaps[..6], [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
    assert!(gaps[6..].iter().all(|&g| g == 40_000), "{gaps:?}");
    assert!(gaps.len() >= 8, "{gaps:?}");
    assert_eq!(rig.rt.logged(Level::Error, "cannot connect: refused"), 1);
    assert_eq!(rig.zone().reason(rig.now()), Reason::VsphereError);
    // the default pick without counters: response times on weight=
    assert_eq!(rig.rt.logged(Level::Info, "balances by response times"), 1);
    // another kind of failure: logged once more
    rig.vc().failing = Some(("RetrieveServiceContent", Error::Timeout));
    rig.run(&mut c, 300_000, |_| [0, 0]);
    assert_eq!(rig.rt.logged(Level::Error, "timed out"), 1);
    // healed: said once, and back on the interval
    rig.vc().failing = None;
    let healed = rig.now();
    rig.run(&mut c, 450_000, |_| [0, 0]);
    assert_eq!(rig.rt.logged(Level::Notice, "polling 2 VMs"), 1);
    let q = rig.vc().times("QueryPerf");
    assert!(q[0] - healed <= 40_000, "{q:?}");
    assert!(q.windows(2).all(|w| w[1] - w[0] == 20_000), "{q:?}");
    assert_eq!(rig.vc().times("Login").len(), 1);
}

#[test]
fn counters_serve_until_their_ttl_then_round_robin_once_then_recover() {
    let rig = Rig::new(&["interval=20s", "ttl=60s"]);
    let mut c = rig.collector(10);
    rig.run(&mut c, 200_000, varying);
    let s = rig.zone();
    assert!(s.usable(rig.now()));
    rig.vc().failing = Some(("QueryPerf", Error::Timeout));
    let until = s.valid_until();
    // the last good window keeps serving up to its TTL ...
    rig.run(&mut c, until - 100, varying);
    assert!(s.usable(rig.now()));
    assert_eq!(rig.rt.logged(Level::Error, "timed out"), 1);
    assert_eq!(rig.rt.logged(Level::Error, "balances by response times"), 0);
    // ... then the upstream falls back, said once however long it lasts
    rig.run(&mut c, until + 200_000, varying);
    assert!(!s.usable(rig.now()));
    assert_eq!(s.reason(rig.now()), Reason::Stale);
    assert_eq!(
        rig.rt.logged(
            Level::Error,
            &format!(
                "balances by response times (least_time on weight=): {}",
                Reason::Stale.text()
            )
        ),
        1
    );
    assert_eq!(rig.rt.logged(Level::Error, "timed out"), 1);
    // healed: counters drive the pick again, said once
    rig.vc().failing = None;
    rig.run(&mut c, until + 320_000, varying);
    assert!(s.usable(rig.now()), "{:?}", s.reason(rig.now()));
    assert_eq!(rig.rt.logged(Level::Notice, "balances by ESXi counters"), 2);
}

#[test]
fn an_expired_session_logs_in_again_within_the_same_poll() {
    let rig = Rig::new(&["interval=20s"]);
    let mut c = rig.collector(10);
    rig.run(&mut c, 100_000, varying);
    assert_eq!(rig.vc().times("Login").len(), 1);
    // the server restarts: every session it had is gone
    rig.vc().sessions.clear();
    rig.run(&mut c, 130_000, varying);
    let vc = rig.vc();
    assert_eq!(vc.times("Login").len(), 2);
    let q = vc.times("QueryPerf");
    // refused, then answered after the new login, in the same poll
    assert_eq!(q[q.len() - 1], q[q.len() - 2], "{q:?}");
    drop(vc);
    assert!(rig.rt.log.borrow().iter().all(|(l, _)| *l != Level::Error));
    assert!(rig.zone().usable(rig.now()));
    // stopping logs out of the session
    c.shutdown();
    assert_eq!(rig.vc().times("Logout").len(), 1);
    assert_eq!(rig.vc().calls.last().map(|c| c.0), Some("Logout"));
}

#[test]
fn a_server_matching_two_vms_is_said_once() {
    let rig = Rig::new(&["interval=20s"]);
    {
        let mut vc = rig.vc();
        let mut clone = vc.vms[0].clone();
        clone.moref = "vm-9".into();
        clone.powered_on = false;
        vc.vms.push(clone);
    }
    let mut c = rig.collector(10);
    rig.run(&mut c, 700_000, varying);
    assert_eq!(
        rig.rt
            .logged(Level::Error, "1 server match more than one VM"),
        1,
        "{:?}",
        rig.rt.log.borrow()
    );
    // the powered-on one is used, and counters drive
    assert!(rig.zone().usable(rig.now()));
}

#[test]
fn counters_missing_from_the_catalog_are_said_once_with_their_cost() {
    let rig = Rig::new(&["interval=20s"]);
    rig.vc().lacking = vec!["disk.usage.average", "cpu.ready.summation"];
    let mut c = rig.collector(10);
    rig.run(&mut c, 200_000, varying);
    assert_eq!(
        rig.rt.logged(
            Level::Error,
            "has no counter disk.usage.average; those resources are left out; has no counter cpu.ready.summation: CPU ready is not counted"
        ),
        1
    );
    // the other resources still drive the pick
    assert!(rig.zone().usable(rig.now()));
    // a new session (the server restarted) does not say it again
    rig.vc().sessions.clear();
    rig.run(&mut c, 300_000, varying);
    assert_eq!(rig.rt.logged(Level::Error, "has no counter"), 1);
}

#[test]
fn a_refused_login_is_said_once_and_retried_rarely_by_every_worker() {
    let rig = Rig::new(&["interval=20s"]);
    rig.vc().failing = Some(("Login", Error::InvalidLogin));
    let mut a = rig.collector(10);
    rig.run(&mut a, 31 * 60_000, |_| [10, 10]);
    let logins = rig.vc().times("Login");
    // at once, then after 5 and 10 more minutes
    assert_eq!(logins.len(), 3, "{logins:?}");
    assert_eq!(logins[1] - logins[0], 5 * 60_000);
    assert_eq!(logins[2] - logins[1], 10 * 60_000);
    assert_eq!(
        rig.rt.logged(
            Level::Error,
            "login refused for u: check user= and password_file="
        ),
        1
    );
    assert_eq!(rig.zone().reason(rig.now()), Reason::VsphereError);
    // another worker takes over: it holds back as well (the refusal is
    // in the shared record), and the old holder's session is logged out
    rig.rt.dead.borrow_mut().push(10);
    let mut b = rig.collector(11);
    rig.run(&mut b, 34 * 60_000, |_| [10, 10]);
    assert!(b.is_holder());
    assert_eq!(rig.vc().times("Login").len(), 3);
    // the password is fixed: the next try (20 minutes after the last)
    // logs in, and the refusals are forgotten
    rig.vc().failing = None;
    rig.run(&mut b, 37 * 60_000, |_| [10, 10]);
    let logins = rig.vc().times("Login");
    assert_eq!(logins.len(), 4, "{logins:?}");
    assert_eq!(logins[3] - logins[2], 20 * 60_000);
    let lease = Lease::new(&rig.lease).unwrap();
    let rec = lease
        .endpoint(names_hash(["vc", "https://vc.test/sdk", "u"]))
        .unwrap()
        .stats(0);
    assert_eq!(
        (rec.auth_failures, rec.auth_retry_at_ms, rec.logins),
        (3, 0, 1)
    );
    assert_eq!(rec.errors[6], 3);
    assert!(rec.last_success_ms > 0 && rec.calls > 4);
}

#[test]
fn a_killed_polling_worker_s_session_is_reused_not_left_open() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    rig.run(&mut a, 30_000, varying);
    assert_eq!(rig.sessions(), [1]);
    assert_eq!(
        rig.record().session().as_deref(),
        Some("vmware_soap_session=\"s1\"")
    );
    // a is killed (kill -9: no logout); b takes over and carries on
    // with a's session instead of opening a second one
    rig.rt.dead.borrow_mut().push(10);
    let mut b = rig.collector(11);
    rig.run(&mut b, 100_000, varying);
    assert!(b.is_holder());
    assert_eq!(rig.vc().times("Login").len(), 1);
    assert_eq!(rig.sessions(), [1]);
    assert!(rig.zone().usable(rig.now()));
    assert_eq!(
        rig.rt.logged(
            Level::Notice,
            "reusing the session of the previous polling worker"
        ),
        1
    );
    assert_eq!(rig.record().stats(0).sessions_reused, 1);
    assert_eq!(rig.record().stats(0).logins, 1);
    // b stops: the session is logged out and no longer handed over
    b.shutdown();
    assert!(rig.sessions().is_empty());
    assert_eq!(rig.record().session(), None);
    assert_eq!(rig.vc().times("Logout").len(), 1);
}

#[test]
fn a_handed_over_session_that_is_gone_is_replaced_in_the_same_poll() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    rig.run(&mut a, 30_000, varying);
    // a is killed and the vCenter restarts before b takes over: the
    // session in the record is gone, so b logs in, within its first
    // poll and without a warning
    rig.rt.dead.borrow_mut().push(10);
    rig.vc().sessions.clear();
    let mut b = rig.collector(11);
    rig.run(&mut b, 100_000, varying);
    assert_eq!(rig.vc().times("Login").len(), 2);
    assert_eq!(rig.sessions(), [2]);
    assert_eq!(
        rig.record().session().as_deref(),
        Some("vmware_soap_session=\"s2\"")
    );
    assert_eq!(rig.record().stats(0).sessions_reused, 0);
    assert!(rig.rt.log.borrow().iter().all(|(l, _)| *l != Level::Error));
    assert!(rig.zone().usable(rig.now()));
}

#[test]
fn a_frozen_worker_leaves_its_session_to_the_one_that_took_over() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    rig.run(&mut a, 30_000, varying);
    // a freezes; b takes over after the takeover time, with a's session
    let mut b = rig.collector(11);
    let t = rig.now() + a.lease_timeout_ms + 100;
    rig.rt.now.set(t);
    b.tick(t);
    assert!(b.is_holder());
    // a resumes and finds the lease gone: the session is b's now, so a
    // forgets it without logging it out
    a.tick(t + 100);
    assert!(!a.is_holder());
    assert_eq!(rig.vc().times("Logout").len(), 0);
    rig.run(&mut b, t + 60_000, varying);
    assert_eq!(rig.vc().times("Login").len(), 1);
    assert_eq!(rig.sessions(), [1]);
    assert!(rig.zone().usable(rig.now()));
}

#[test]
fn a_frozen_worker_logs_out_a_session_no_one_took_over() {
    let rig = Rig::new(&["interval=20s"]);
    let mut a = rig.collector(10);
    rig.run(&mut a, 30_000, varying);
    // a freezes; its session was not handed over (a cookie too long
    // for the record, say), so b opens its own
    rig.record().set_session(None);
    let mut b = rig.collector(11);
    let t = rig.now() + a.lease_timeout_ms + 100;
    rig.rt.now.set(t);
    b.tick(t);
    assert!(b.is_holder());
    assert_eq!(rig.sessions(), [1, 2]);
    // a resumes: its session is not the one handed over, so a logs it
    // out rather than leaving it open
    a.tick(t + 100);
    assert!(!a.is_holder());
    assert_eq!(rig.vc().times("Logout").len(), 1);
    assert_eq!(rig.sessions(), [2]);
}
