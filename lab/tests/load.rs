//! The load generator against a small in-process HTTP/1.1 server.
//!
//! Server paths: `/p/N` answers N*100 body bytes; `/sleep/MS` the same (100
//! bytes) after MS ms; `/close` closes the connection without answering;
//! `/cc` answers with `Connection: close` and closes the socket 3 s later;
//! `/eof` answers 200 KB delimited by the end of the connection; `/once`
//! answers then closes the connection while it is idle (a keep-alive
//! timeout); `/none` has no X-Backend; `/big` answers 1.5 MB; `/badchunk` an
//! invalid chunked body. Answers alternate `X-Backend: a` / `b`; of every
//! three, one has a Content-Length, one two chunks with chunk extensions and
//! one chunks with trailer fields.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dwepc_lab::load::{self, LoadSpec, Pattern, Record};

#[derive(Default)]
struct Stats {
    conns: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    seq: AtomicUsize,
}

struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
}

fn server() -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let st = stats.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            st.conns.fetch_add(1, SeqCst);
            let st = st.clone();
            std::thread::spawn(move || {
                let _ = serve(s, &st);
            });
        }
    });
    Server { addr, stats }
}

fn serve(s: TcpStream, st: &Stats) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
        }
        if path == "/close" {
            return Ok(());
        }
        if path == "/badchunk" {
            // an empty chunk-size line
            w.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )?;
            continue;
        }
        let now = st.inflight.fetch_add(1, SeqCst) + 1;
        st.max_inflight.fetch_max(now, SeqCst);
        let len = if let Some(ms) = path.strip_prefix("/sleep/") {
            std::thread::sleep(Duration::from_millis(ms.parse().unwrap()));
            100
        } else if let Some(n) = path.strip_prefix("/p/") {
            n.parse::<usize>().unwrap() * 100
        } else if path == "/big" {
            1_500_000
        } else if path == "/eof" {
            200_000
        } else {
            10
        };
        let n = st.seq.fetch_add(1, SeqCst);
        st.inflight.fetch_sub(1, SeqCst);
        let body = vec![b'x'; len];
        let mut head = String::from("HTTP/1.1 200 OK\r\n");
        if path != "/none" {
            head += if n.is_multiple_of(2) {
                "X-Backend: a\r\n"
            } else {
                "X-Backend: b\r\n"
            };
        }
        let close = path == "/cc" || path == "/eof";
        if close {
            head += "Connection: close\r\n";
        }
        let mut out = head.into_bytes();
        if path == "/eof" {
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&body);
        } else if n.is_multiple_of(3) {
            out.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
            out.extend_from_slice(&body);
        } else {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let half = len / 2;
            for part in [&body[..half], &body[half..]] {
                if n % 3 == 1 {
                    out.extend_from_slice(format!("{:X};ext=\"x\"\r\n", part.len()).as_bytes());
                } else {
                    out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                }
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(if n % 3 == 2 {
                b"0\r\nX-Trailer: 1\r\nX-Other: 2\r\n\r\n".as_slice()
            } else {
                b"0\r\n\r\n".as_slice()
            });
        }
        // in pieces, so the client sees partial heads and chunk lines
        let cut = out.len().min(20);
        w.write_all(&out[..cut])?;
        w.flush()?;
        w.write_all(&out[cut..])?;
        w.flush()?;
        if path == "/cc" {
            // announced the end but keeps the socket open: a client that
            // reuses it waits for nothing
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        if close {
            return Ok(());
        }
        if path == "/once" {
            // the idle connection times out on the server
            std::thread::sleep(Duration::from_millis(5));
            return Ok(());
        }
    }
}

fn backends() -> Vec<String> {
    vec!["a".into(), "b".into()]
}

fn spec(target: SocketAddr, paths: &[&str], pattern: Pattern, secs: f64) -> LoadSpec {
    LoadSpec {
        targets: vec![(target, 1.0)],
        phases: Vec::new(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        pattern,
        duration: Duration::from_secs_f64(secs),
        timeout: Duration::from_secs(2),
        max_in_flight: 100,
        seed: 1,
    }
}

fn closed(users: usize, think_ms: u64) -> Pattern {
    Pattern::Closed {
        users,
        think_ms,
        fixed_think: false,
    }
}

fn count(recs: &[Record], f: impl Fn(&Record) -> bool) -> usize {
    recs.iter().filter(|r| f(r)).count()
}

const P5: [&str; 5] = ["/p/1", "/p/2", "/p/3", "/p/4", "/p/5"];

#[test]
fn open_loop_rate_backends_paths_and_live_view() {
    let srv = server();
    let s = spec(srv.addr, &P5, Pattern::Open { rate: 200.0 }, 2.0);
    let mut live = vec![0u64; 3];
    let mut seconds = Vec::new();
    let t = Instant::now();
    let recs = load::run_with(&s, &backends(), |sec, c| {
        seconds.push(sec);
        assert_eq!(c.len(), 3);
        for (l, c) in live.iter_mut().zip(c) {
            *l += c;
        }
    });
    let wall = t.elapsed();
    assert!(
        wall >= Duration::from_secs(2) && wall < Duration::from_millis(2600),
        "{wall:?}"
    );
    let n = recs.len();
    assert!((360..=440).contains(&n), "{n} records");
    assert_eq!(count(&recs, |r| r.status == 200), n, "all 200");
    // sorted, inside the run, both halves loaded
    assert!(recs.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
    assert!(recs.last().unwrap().t_ms < 2000);
    for q in 0..4 {
        let k = count(&recs, |r| r.t_ms / 500 == q);
        assert!((55..=145).contains(&k), "quarter {q}: {k}");
    }
    let a = count(&recs, |r| r.backend == 0);
    let b = count(&recs, |r| r.backend == 1);
    assert_eq!(a + b, n);
    assert!(a.abs_diff(b) <= 1, "a {a} b {b}");
    for p in 0..5u8 {
        let k = count(&recs, |r| r.path == p);
        assert!(
            (n / 5 - 30..=n / 5 + 30).contains(&k),
            "path {p}: {k} of {n}"
        );
        assert!(recs
            .iter()
            .filter(|r| r.path == p)
            .all(|r| r.bytes == (p as u32 + 1) * 100));
    }
    // keep-alive pool: few connections for 400 requests
    let conns = srv.stats.conns.load(SeqCst);
    assert!(conns <= 20, "{conns} connections");
    // the live view saw every completion, per backend
    assert_eq!(live, vec![a as u64, b as u64, 0]);
    assert_eq!(seconds[..2], [0, 1]);
    assert!(seconds.windows(2).all(|w| w[1] == w[0] + 1));
    // the same seed gives the same schedule; another seed another one
    let again = load::run(&s, &backends());
    let paths = |r: &[Record]| {
        (0..5u8)
            .map(|p| count(r, |x| x.path == p))
            .collect::<Vec<_>>()
    };
    assert_eq!(again.len(), n);
    assert_eq!(paths(&again), paths(&recs));
    let other = load::run(&LoadSpec { seed: 2, ..s }, &backends());
    assert_ne!(
        (other.len(), paths(&other)),
        (n, paths(&recs)),
        "seed changes nothing"
    );
}

#[test]
fn closed_loop_users_think_time() {
    let srv = server();
    let recs = load::run(&spec(srv.addr, &P5, closed(10, 100), 2.0), &backends());
    let n = recs.len();
    // 10 users * 2 s / (0.1 s think + ~0 service)
    assert!((160..=240).contains(&n), "{n} requests");
    assert_eq!(count(&recs, |r| r.status == 200 && r.backend < 2), n);
    assert!(srv.stats.max_inflight.load(SeqCst) <= 10);
    // each user keeps its connection
    assert!(srv.stats.conns.load(SeqCst) <= 10);
    // first requests spread over the first think time
    assert!(count(&recs, |r| r.t_ms < 100) >= 10);
    assert!(recs[0].t_ms < 50);

    // fixed think time and 20 ms of service: 10 * 2 / 0.12 ≈ 167
    let srv = server();
    let pat = Pattern::Closed {
        users: 10,
        think_ms: 100,
        fixed_think: true,
    };
    let recs = load::run(&spec(srv.addr, &["/sleep/20"], pat, 2.0), &backends());
    let n = recs.len();
    assert!((145..=185).contains(&n), "{n} requests");
    assert!(recs
        .iter()
        .all(|r| r.status == 200 && r.latency_us >= 20_000));
    // one first request per user, spread over the first 100 ms
    let first: Vec<u32> = recs
        .iter()
        .filter(|r| r.t_ms < 120)
        .map(|r| r.t_ms)
        .collect();
    assert_eq!(first.len(), 10, "{first:?}");
    assert!(first[9] - first[0] >= 40, "{first:?}");
}

#[test]
fn open_loop_keeps_time_at_1000_per_s() {
    // arrivals against an absolute clock: no drift from timer granularity
    let srv = server();
    let s = spec(srv.addr, &P5, Pattern::Open { rate: 1000.0 }, 1.0);
    let recs = load::run(&s, &backends());
    let n = recs.len();
    assert!((900..=1100).contains(&n), "{n} requests");
    assert_eq!(count(&recs, |r| r.status == 200), n);
    for q in 0..4 {
        let k = count(&recs, |r| r.t_ms / 250 == q);
        assert!((200..=300).contains(&k), "quarter {q}: {k}");
    }
}

#[test]
fn slow_path_latency_timeout_and_drain() {
    let srv = server();
    let s = spec(srv.addr, &["/sleep/300"], closed(3, 100), 1.0);
    let t = Instant::now();
    let recs = load::run(&s, &backends());
    let wall = t.elapsed();
    assert!(recs.len() >= 6, "{}", recs.len());
    for r in &recs {
        assert_eq!(r.status, 200);
        assert!(r.latency_us >= 300_000 && r.latency_us < 800_000, "{r:?}");
        assert_eq!(r.bytes, 100);
    }
    // the requests in flight at the end finished and were recorded
    let last = recs.last().unwrap();
    assert!(last.t_ms > 500);
    assert!(
        wall >= Duration::from_millis(last.t_ms as u64 + 300),
        "{wall:?}"
    );
    assert!(wall < Duration::from_millis(1900), "{wall:?}");

    // a timeout is status 0 at the timeout, and the users carry on
    let s = LoadSpec {
        timeout: Duration::from_millis(150),
        ..s
    };
    let recs = load::run(&s, &backends());
    assert!(recs.len() >= 6, "{}", recs.len());
    for r in &recs {
        assert_eq!((r.status, r.bytes), (0, 0));
        assert!(r.latency_us >= 150_000 && r.latency_us < 290_000, "{r:?}");
    }
}

#[test]
fn errors_are_status_0_and_the_load_goes_on() {
    // nothing listens
    let dead: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let t = Instant::now();
    let recs = load::run(&spec(dead, &P5, closed(3, 50), 1.0), &backends());
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert!(recs.len() >= 20, "{}", recs.len());
    assert!(recs
        .iter()
        .all(|r| r.status == 0 && r.backend == 255 && r.bytes == 0));
    let recs = load::run(
        &spec(dead, &P5, Pattern::Open { rate: 100.0 }, 1.0),
        &backends(),
    );
    assert!((70..=130).contains(&recs.len()), "{}", recs.len());
    assert!(recs.iter().all(|r| r.status == 0));
    // no think time: a failed user pauses 10 ms instead of spinning
    let recs = load::run(&spec(dead, &P5, closed(2, 0), 0.5), &backends());
    assert!((20..=110).contains(&recs.len()), "{}", recs.len());

    // a path whose connection closes without an answer, among good ones;
    // Connection: close, close-delimited bodies, idle connections closed by
    // the server, no or unknown X-Backend, 1.5 MB bodies
    let srv = server();
    let paths = [
        "/p/1",
        "/close",
        "/cc",
        "/eof",
        "/once",
        "/none",
        "/big",
        "/badchunk",
    ];
    let recs = load::run(&spec(srv.addr, &paths, closed(4, 20), 1.5), &backends());
    for p in 0..paths.len() as u8 {
        let of: Vec<&Record> = recs.iter().filter(|r| r.path == p).collect();
        assert!(of.len() >= 10, "{}: {}", paths[p as usize], of.len());
        for r in of {
            match paths[p as usize] {
                "/close" | "/badchunk" => assert_eq!((r.status, r.backend), (0, 255), "{r:?}"),
                "/none" => assert_eq!((r.status, r.backend, r.bytes), (200, 255, 10)),
                "/p/1" => assert!(r.status == 200 && r.backend < 2 && r.bytes == 100),
                "/big" => assert!(r.status == 200 && r.bytes == 1_500_000, "{r:?}"),
                "/eof" => assert!(r.status == 200 && r.bytes == 200_000, "{r:?}"),
                "/cc" => assert!(r.status == 200 && r.latency_us < 500_000, "{r:?}"),
                _ => assert!(r.status == 200 && r.backend < 2 && r.bytes == 10, "{r:?}"),
            }
        }
    }
}

#[test]
fn an_empty_run_still_lasts_its_duration() {
    let srv = server();
    for pattern in [closed(0, 100), Pattern::Open { rate: 0.0 }] {
        let t = Instant::now();
        let mut seconds = Vec::new();
        let recs = load::run_with(&spec(srv.addr, &P5, pattern, 1.2), &backends(), |s, c| {
            assert_eq!(c, [0, 0, 0]);
            seconds.push(s)
        });
        assert!(recs.is_empty());
        assert!(t.elapsed() >= Duration::from_millis(1200));
        assert!(t.elapsed() < Duration::from_millis(1500));
        assert_eq!(seconds, [0, 1]);
    }
}

#[test]
fn open_loop_drops_over_max_in_flight() {
    let srv = server();
    let s = LoadSpec {
        max_in_flight: 5,
        ..spec(
            srv.addr,
            &["/sleep/300"],
            Pattern::Open { rate: 100.0 },
            1.0,
        )
    };
    let recs = load::run(&s, &backends());
    let dropped = count(&recs, |r| r.status == 1);
    let ok = count(&recs, |r| r.status == 200);
    assert_eq!(dropped + ok, recs.len());
    // ~100 arrivals, at most 5 per 300 ms served
    assert!(dropped >= 50, "{dropped} dropped");
    assert!((5..=25).contains(&ok), "{ok} sent");
    assert!(srv.stats.max_inflight.load(SeqCst) <= 5);
    assert!(recs
        .iter()
        .filter(|r| r.status == 1)
        .all(|r| r.latency_us == 0 && r.bytes == 0 && r.backend == 255));
    // without the limit nothing is dropped
    let recs = load::run(
        &LoadSpec {
            max_in_flight: 0,
            ..s
        },
        &backends(),
    );
    assert!(recs.len() >= 70 && recs.iter().all(|r| r.status == 200));
}

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) }, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The generator's own cost against nginx (`return 200`, one worker, a
/// separate process): `cargo test --release -p dwepc-lab --test load --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn overhead_against_nginx() {
    let port = dwepc_lab::free_port();
    let text = format!(
        "daemon off; master_process on; worker_processes 1;\n\
         error_log logs/error.log; pid logs/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{ access_log off; keepalive_requests 1000000;\n\
         client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;\n\
         fastcgi_temp_path tmp/fcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;\n\
         server {{ listen 127.0.0.1:{port}; \n\
         location / {{ add_header X-Backend a always; return 200 \"ok\\n\"; }} }} }}\n"
    );
    let mut ngx = dwepc_lab::nginx::Nginx::start(&text, port);
    let target: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let measure = |name: &str, pattern: Pattern, secs: f64| {
        let s = LoadSpec {
            max_in_flight: 1000,
            ..spec(target, &P5, pattern, secs)
        };
        let (c0, t0) = (cpu_seconds(), Instant::now());
        let recs = load::run(&s, &backends());
        let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
        let ok = count(&recs, |r| r.status == 200 && r.backend == 0);
        let mut lat: Vec<u32> = recs.iter().map(|r| r.latency_us).collect();
        lat.sort_unstable();
        println!(
            "{name}: {} requests, {ok} ok, {:.0}/s, generator CPU {:.1}% of one core \
             ({:.1} us/request), p50 {} us, p99 {} us",
            recs.len(),
            ok as f64 / secs,
            100.0 * cpu / wall,
            1e6 * cpu / recs.len().max(1) as f64,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
        );
    };
    measure("open 500/s", Pattern::Open { rate: 500.0 }, 5.0);
    measure("open 2000/s", Pattern::Open { rate: 2000.0 }, 5.0);
    measure("open 5000/s", Pattern::Open { rate: 5000.0 }, 5.0);
    measure("open 20000/s", Pattern::Open { rate: 20000.0 }, 5.0);
    measure("closed 200 users, 2 s think", closed(200, 2000), 5.0);
    measure("closed 1000 users, 2 s think", closed(1000, 2000), 5.0);
    measure("closed 32 users, no think", closed(32, 0), 5.0);
    ngx.stop(Duration::from_secs(5));
}

/// A spec and its records survive the trip through a file (the lab runs
/// each load generator as a process of its own).
#[test]
fn spec_and_records_roundtrip() {
    let mut s = spec(
        "127.0.0.1:9".parse().unwrap(),
        &["/a", "/b"],
        Pattern::Open { rate: 12.5 },
        3.0,
    );
    s.targets.push(("127.0.0.2:10".parse().unwrap(), 0.4));
    s.phases = vec![
        load::Phase {
            from: Duration::ZERO,
            paths: vec![0],
            rate_factor: 1.0,
        },
        load::Phase {
            from: Duration::from_millis(1500),
            paths: vec![0, 1],
            rate_factor: 2.5,
        },
    ];
    let back = LoadSpec::from_json(&s.to_json()).unwrap();
    assert_eq!(back.to_json(), s.to_json());
    assert_eq!(back.targets, s.targets);
    assert_eq!(back.phases, s.phases);
    let closed = spec(
        "127.0.0.1:9".parse().unwrap(),
        &["/a"],
        Pattern::Closed {
            users: 7,
            think_ms: 2000,
            fixed_think: true,
        },
        1.0,
    );
    assert_eq!(
        LoadSpec::from_json(&closed.to_json()).unwrap().to_json(),
        closed.to_json()
    );
    assert!(LoadSpec::from_json(&serde_json::json!({})).is_err());
    let recs = vec![
        load::Record {
            t_ms: 1,
            latency_us: 2,
            status: 200,
            backend: 3,
            path: 1,
            bytes: 1024,
            frontend: 1,
        },
        load::Record {
            t_ms: 5,
            latency_us: 0,
            status: load::STATUS_DROPPED,
            backend: load::NO_BACKEND,
            path: 0,
            bytes: 0,
            frontend: 0,
        },
    ];
    let mut buf = Vec::new();
    load::write_records(&mut buf, &recs).unwrap();
    let text = String::from_utf8(buf).unwrap() + "garbage line\n";
    assert_eq!(load::read_records(&text), recs);
}
