//! `slow_start=`: a server that answers again after `max_fails` marked it
//! failed ramps up instead of taking its part of the traffic at once.
//! The same returning server, with and without slow start, in the mode
//! that needs no vCenter (least_time: one worker, so every estimate is
//! the one the test reasons about).

mod common;
use common::backend::{Backend, Behaviour};
use common::*;
use std::time::Duration;

/// Requests of a burst of 16 at once that go to a server that has just
/// come back from failure, with `dwepc mode=least_time {extra}`.
fn returning_server_takes(extra: &str) -> u64 {
    let b0 = Backend::start("b0");
    let b1 = Backend::start("b1");
    b0.set(Behaviour::Slow(150));
    b1.set(Behaviour::Slow(150));
    let port = free_port();
    let text = nginx::conf(
        "worker_processes 1;",
        &format!(
            "upstream app {{ dwepc mode=least_time {extra};\n\
               server {} max_fails=1 fail_timeout=2s;\n\
               server {} max_fails=1 fail_timeout=2s; }}\n\
             server {{ listen 127.0.0.1:{port};\n\
               location / {{ proxy_pass http://app; }}\n\
               location = /dwepc {{ dwepc_status; }} }}",
            b0.addr(),
            b1.addr()
        ),
    );
    let ng = nginx::Nginx::start(&text, port);
    // both answer: each has a response time
    for _ in 0..6 {
        assert_eq!(http::get(port, "/").status, 200);
    }
    assert!(b0.served() >= 1 && b1.served() >= 1);
    // b0 fails (its request is retried on b1) and is left out for 2 s
    b0.set(Behaviour::Reset);
    let conns = || b0.connections.load(std::sync::atomic::Ordering::Relaxed);
    let before = conns();
    for _ in 0..20 {
        if conns() > before {
            break;
        }
        assert_eq!(http::get(port, "/").status, 200);
    }
    assert!(conns() > before, "b0 was never tried");
    // back, and past fail_timeout: the next request to it is nginx's probe
    b0.set(Behaviour::Slow(150));
    std::thread::sleep(Duration::from_millis(2300));
    let served = b0.served();
    for _ in 0..20 {
        if b0.served() > served {
            break;
        }
        assert_eq!(http::get(port, "/").status, 200);
    }
    assert!(b0.served() > served, "b0 was never tried again");
    // 16 at once
    let served = b0.served();
    let threads: Vec<_> = (0..16)
        .map(|_| std::thread::spawn(move || http::get(port, "/").status))
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    let took = b0.served() - served;
    eprintln!("{extra:?}: b0 took {took} of 16");
    drop(ng);
    took
}

#[test]
fn a_returning_server_ramps_up_instead_of_taking_its_part_at_once() {
    // without slow start it takes about half of the burst (equal times)
    let off = returning_server_takes("");
    assert!(off >= 4, "without slow start b0 took {off} of 16");
    // two seconds into a minute of slow start, its weight is a thirtieth:
    // b1 would need 30 in flight before b0 costs as little
    let on = returning_server_takes("slow_start=60s");
    assert!(on <= 1, "with slow start b0 took {on} of 16");
}
