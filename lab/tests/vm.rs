//! The emulated VMs (dwepc_lab::vm): timing of the CPU and network model,
//! exact usage accounting, hog, capacity change, down/up, HTTP behaviour,
//! many concurrent connections, and the `dwepc-lab vms` command.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dwepc_lab::vm::{self, Handle, Usage, VmSpec};

fn start(specs: Vec<VmSpec>) -> Handle {
    vm::start(specs, "127.0.0.1:0").expect("start VMs")
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Bytes on the wire (head + body).
    wire: usize,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 client connection.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Conn { s, buf: Vec::new() })
    }

    fn send(&mut self, raw: &str) {
        self.s.write_all(raw.as_bytes()).unwrap();
    }

    fn get(&mut self, path: &str, close: bool) -> std::io::Result<Resp> {
        let c = if close { "Connection: close\r\n" } else { "" };
        self.s
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: vm\r\n{c}\r\n").as_bytes())?;
        self.read_response()
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_response(&mut self) -> std::io::Result<Resp> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse().unwrap())
            .unwrap();
        while self.buf.len() < end + 4 + len {
            self.fill()?;
        }
        let body = self.buf[end + 4..end + 4 + len].to_vec();
        self.buf.drain(..end + 4 + len);
        Ok(Resp {
            status,
            headers,
            body,
            wire: end + 4 + len,
        })
    }

    /// True when the server closed the connection (EOF or reset).
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

fn get(addr: SocketAddr, path: &str) -> Resp {
    Conn::open(addr).unwrap().get(path, true).unwrap()
}

/// Duration of a GET on its own connection.
fn timed(addr: SocketAddr, path: &str) -> (Duration, Resp) {
    let t = Instant::now();
    let r = get(addr, path);
    (t.elapsed(), r)
}

/// A control request; the JSON answer.
fn control(h: &Handle, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(h.control_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: c\r\n\r\n").unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let (head, body) = buf.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("Connection: close"), "{head}");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

fn usage_of(h: &Handle, name: &str) -> Usage {
    let (st, v) = control(h, "/usage");
    assert_eq!(st, 200);
    let all = vm::parse_usage(&v.to_string()).unwrap();
    all.into_iter().find(|u| u.name == name).unwrap()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn within(d: Duration, lo: f64, hi: f64, what: &str) {
    let s = secs(d);
    assert!(s >= lo && s <= hi, "{what}: {s:.3} s not in [{lo}, {hi}]");
}

#[test]
fn cpu_is_a_fifo_queue_per_vcpu() {
    let h = start(vec![
        VmSpec::new("one", "127.0.0.21", 2000.0, 1, 0.0),
        VmSpec::new("two", "127.0.0.22", 4000.0, 2, 0.0),
    ]);
    let one = h.addr("one").unwrap();
    let two = h.addr("two").unwrap();
    assert_eq!(one.ip().to_string(), "127.0.0.21");

    // 625,000 MHz·ms on one 2000 MHz vCPU: 0.3125 s.
    let (d, r) = timed(one, "/t2/5");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Backend"), Some("one"));
    within(d, 0.30, 0.45, "one /t2/5 alone");

    let pair = |addr: SocketAddr| {
        let start = Instant::now();
        let ts: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(move || {
                    assert_eq!(get(addr, "/t2/5").status, 200);
                    start.elapsed()
                })
            })
            .collect();
        let mut d: Vec<Duration> = ts.into_iter().map(|t| t.join().unwrap()).collect();
        d.sort();
        d
    };
    // One vCPU: the second waits for the first.
    let d = pair(one);
    within(d[0], 0.30, 0.45, "one: first of two");
    within(d[1], 0.60, 0.80, "one: second of two");
    // Two vCPUs of 2000 MHz: both in parallel.
    let d = pair(two);
    within(d[0], 0.30, 0.45, "two: first of two");
    within(d[1], 0.30, 0.45, "two: second of two");

    // A cheap page is cheap.
    let (d, _) = timed(one, "/t2/1");
    within(d, 0.0, 0.1, "one /t2/1");
}

#[test]
fn network_is_a_fifo_link() {
    let h = start(vec![VmSpec::new("net", "127.0.0.23", 2000.0, 1, 1000.0)]);
    let a = h.addr("net").unwrap();
    // 1 MiB + head at 1000 KB/s: 1.024 s (+26 ms CPU).
    let (d, r) = timed(a, "/t1/1m");
    assert_eq!(r.body.len(), 1 << 20);
    assert_eq!(r.header("Content-Type"), Some("text/plain"));
    within(d, 0.98, 1.40, "/t1/1m at 1000 KB/s");
    // Two 512 KB pages share the link: the second ends after ~1.05 s.
    let start = Instant::now();
    let ts: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                assert_eq!(get(a, "/t1/512k").body.len(), 512 * 1024);
                start.elapsed()
            })
        })
        .collect();
    let mut d: Vec<Duration> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    d.sort();
    within(d[0], 0.48, 0.75, "first 512k");
    within(d[1], 0.98, 1.40, "second 512k");
    // bytes_sent grows during a transfer, not in one step at its end.
    let t = std::thread::spawn(move || get(a, "/t1/1m"));
    std::thread::sleep(Duration::from_millis(500));
    let mid = h.usage()[0].bytes_sent;
    let wire = t.join().unwrap().wire as u64;
    let end = h.usage()[0].bytes_sent;
    let before = end - wire;
    let frac = (mid - before) as f64 / wire as f64;
    assert!((0.25..0.75).contains(&frac), "half-way fraction {frac}");
}

#[test]
fn usage_accounts_exactly() {
    let h = start(vec![
        VmSpec::new("acc", "127.0.0.24", 2000.0, 1, 100_000.0),
        VmSpec::new("other", "127.0.0.25", 1000.0, 1, 0.0),
    ]);
    let a = h.addr("acc").unwrap();
    let u0 = usage_of(&h, "acc");
    assert_eq!(
        (u0.requests, u0.bytes_sent, u0.active, u0.in_flight),
        (0, 0, 0, 0)
    );
    assert!(u0.up && u0.cpu_mhz == 2000.0 && u0.hog_mhz == 0.0);
    assert_eq!(u0.mem_kb, 0.3 * 2048.0 * 1024.0);

    let paths = [
        "/t1/1k",
        "/t1/16k",
        "/t1/64k",
        "/t1/512k",
        "/t1/1m",
        "/t2/1",
        "/t2/2",
        "/t2/3",
        "/t2/4",
        "/t2/4?x=y",
        "/health",
        "/nope",
    ];
    let mut conn = Conn::open(a).unwrap();
    let (mut cost, mut wire) = (0.0, 0usize);
    for p in paths {
        let r = conn.get(p, false).unwrap();
        assert_eq!(r.header("X-Backend"), Some("acc"), "{p}");
        assert_eq!(r.header("Content-Type"), Some("text/plain"), "{p}");
        match vm::cost_mhz_ms(p) {
            Some((c, len)) => {
                assert_eq!(r.status, 200, "{p}");
                assert_eq!(r.body.len() as u64, len, "{p}");
                cost += c;
            }
            None => assert_eq!(r.status, 404, "{p}"),
        }
        wire += r.wire;
    }
    // One keep-alive connection open: 1 MB more.
    let u = usage_of(&h, "acc");
    assert_eq!(u.active, 1);
    assert_eq!(u.in_flight, 0);
    assert_eq!(u.mem_kb, 0.3 * 2048.0 * 1024.0 + 1024.0);
    assert_eq!(u.requests, paths.len() as u64);
    assert_eq!(u.bytes_sent, wire as u64);
    assert!(
        (u.cpu_mhz_ms - cost).abs() <= 0.01 * cost,
        "cpu {} vs cost {cost}",
        u.cpu_mhz_ms
    );
    assert!(cost > 25_000.0);
    // Same instant for all; the idle VM consumed nothing.
    let all = h.usage();
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].t_ms, all[1].t_ms);
    assert_eq!(all[1].cpu_mhz_ms, 0.0);
    drop(conn);
    assert!(
        dwepc_lab::wait_for(Duration::from_secs(2), || (h.usage()[0].active == 0)
            .then_some(()))
        .is_some(),
        "connection not released"
    );

    // in_flight while a request is queued.
    let t = std::thread::spawn(move || get(a, "/t2/5"));
    std::thread::sleep(Duration::from_millis(100));
    let u = usage_of(&h, "acc");
    assert_eq!((u.in_flight, u.active), (1, 1));
    // Work done so far, not work scheduled: ~0.1 s of 2000 MHz.
    let part = u.cpu_mhz_ms - cost;
    assert!((100_000.0..400_000.0).contains(&part), "partial {part}");
    t.join().unwrap();
    let u = usage_of(&h, "acc");
    assert!((u.cpu_mhz_ms - cost - 625_000.0).abs() <= 0.01 * (cost + 625_000.0));
}

#[test]
fn hog_and_capacity_slow_requests_down() {
    let h = start(vec![VmSpec::new("hog", "127.0.0.26", 2000.0, 1, 0.0)]);
    let a = h.addr("hog").unwrap();

    // 1500 MHz held by a hog: 500 MHz left, /t2/5 takes 1.25 s.
    let (st, v) = control(&h, "/vm/hog/hog?mhz=1500");
    assert_eq!(st, 200);
    assert_eq!(v["hog_mhz"], 1500.0);
    let u1 = usage_of(&h, "hog");
    assert_eq!(u1.hog_mhz, 1500.0);
    let (d, _) = timed(a, "/t2/5");
    within(d, 1.20, 1.60, "/t2/5 with a 1500 MHz hog");
    // The hog shows in the usage: 1500 MHz·ms per ms, plus the request.
    std::thread::sleep(Duration::from_millis(300));
    let u2 = usage_of(&h, "hog");
    let dt = (u2.t_ms - u1.t_ms) as f64;
    let hog_rate = (u2.cpu_mhz_ms - u1.cpu_mhz_ms - 625_000.0) / dt;
    assert!((hog_rate - 1500.0).abs() < 30.0, "hog rate {hog_rate} MHz");

    // A hog above the capacity leaves 1%: /t2/4 (12,500 MHz·ms) at 20 MHz
    // takes 0.625 s (6.25 ms without the hog).
    h.set_hog("hog", 5000.0).unwrap();
    let (d, _) = timed(a, "/t2/4");
    within(d, 0.60, 0.85, "/t2/4 at the 1% floor");

    // A hog arriving mid-request re-times it: 0.1 s at 2000 MHz, then the
    // remaining ~425,000 MHz·ms at 500 MHz (~0.85 s). Without re-timing it
    // would end at 0.3125 s.
    control(&h, "/vm/hog/hog?mhz=0");
    let start = Instant::now();
    let t = std::thread::spawn(move || get(a, "/t2/5"));
    std::thread::sleep(Duration::from_millis(100));
    h.set_hog("hog", 1500.0).unwrap();
    let set_at = start.elapsed().as_secs_f64();
    t.join().unwrap();
    let d = start.elapsed().as_secs_f64();
    let expect = set_at + (0.3125 - set_at) * 4.0;
    assert!(
        d > 0.6 && (d - expect).abs() < 0.15,
        "re-timed /t2/5: {d:.3} s, expected {expect:.3} s"
    );

    // Capacity change: 1000 MHz, no hog: /t2/5 takes 0.625 s.
    h.set_hog("hog", 0.0).unwrap();
    let (st, v) = control(&h, "/vm/hog/cpu?mhz=1000");
    assert_eq!(st, 200);
    assert_eq!(v["cpu_mhz"], 1000.0);
    let (d, _) = timed(a, "/t2/5");
    within(d, 0.60, 0.80, "/t2/5 at 1000 MHz");

    // Bad requests to the control endpoint.
    assert_eq!(control(&h, "/vm/nosuch/hog?mhz=1").0, 404);
    assert_eq!(control(&h, "/vm/hog/hog?mhz=abc").0, 400);
    assert_eq!(control(&h, "/vm/hog/hog").0, 400);
    assert_eq!(control(&h, "/vm/hog/cpu?mhz=0").0, 400);
    assert_eq!(control(&h, "/nothing").0, 404);
}

/// Contention: the VM gets part of its cycles and reports the rest as CPU
/// ready while it has work; a slowdown loses speed and reports nothing.
#[test]
fn contention_reports_ready_and_slowdown_reports_nothing() {
    let h = start(vec![VmSpec::new("ct", "127.0.0.27", 2000.0, 1, 0.0)]);
    let a = h.addr("ct").unwrap();
    let (st, v) = control(&h, "/vm/ct/contention?pct=50");
    assert_eq!(st, 200);
    assert_eq!(v["cpu_eff_mhz"], 1000.0);
    let u0 = usage_of(&h, "ct");
    // /t2/5 is 625,000 MHz·ms: 0.3125 s at 2000 MHz, 0.625 s at half
    let (d, _) = timed(a, "/t2/5");
    within(d, 0.60, 0.80, "/t2/5 at 50 % contention");
    let u1 = usage_of(&h, "ct");
    // usage shows the work done; ready the time it waited (half of 625 ms)
    assert!((u1.cpu_mhz_ms - u0.cpu_mhz_ms - 625_000.0).abs() < 1.0);
    let ready = u1.ready_ms - u0.ready_ms;
    assert!((ready - 312.5).abs() < 5.0, "ready {ready} ms");
    // idle: no more ready time
    std::thread::sleep(Duration::from_millis(200));
    let u2 = usage_of(&h, "ct");
    assert!((u2.ready_ms - u1.ready_ms).abs() < 1e-6);
    // a slowdown of 50 %: as slow, and no ready time at all
    h.set_contention("ct", 0.0).unwrap();
    h.set_slowdown("ct", 50.0).unwrap();
    let (d, _) = timed(a, "/t2/5");
    within(d, 0.60, 0.80, "/t2/5 at 50 % slowdown");
    let u3 = usage_of(&h, "ct");
    assert!((u3.ready_ms - u2.ready_ms).abs() < 1e-6);
    assert_eq!(u3.cpu_eff_mhz, 1000.0);
    assert_eq!(control(&h, "/vm/ct/contention?pct=99").0, 400);
    assert_eq!(control(&h, "/vm/ct/slowdown?pct=-1").0, 400);
}

#[test]
fn down_refuses_and_up_restores() {
    let h = start(vec![
        VmSpec::new("d", "127.0.0.27", 2000.0, 1, 0.0),
        VmSpec::new("alive", "127.0.0.28", 2000.0, 1, 0.0),
    ]);
    let a = h.addr("d").unwrap();
    let mut idle = Conn::open(a).unwrap();
    assert_eq!(idle.get("/health", false).unwrap().status, 200);
    // A request in the queue when the VM dies gets no answer.
    let busy = std::thread::spawn(move || Conn::open(a).unwrap().get("/t2/5", false));
    std::thread::sleep(Duration::from_millis(100));

    let (st, v) = control(&h, "/vm/d/down");
    assert_eq!(st, 200);
    assert_eq!(v["up"], false);
    let e = TcpStream::connect_timeout(&a, Duration::from_secs(2)).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    assert!(idle.closed_by_server());
    assert!(busy.join().unwrap().is_err());
    let u = usage_of(&h, "d");
    assert!(!u.up);
    assert_eq!(u.active, 0);
    assert_eq!(u.in_flight, 0);
    // The work of the killed request stops counting at the death.
    let cpu = u.cpu_mhz_ms;
    assert!(cpu < 450_000.0, "{cpu}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(usage_of(&h, "d").cpu_mhz_ms, cpu);
    // The other VM is unaffected.
    assert_eq!(get(h.addr("alive").unwrap(), "/health").status, 200);
    // Down twice is fine.
    assert_eq!(control(&h, "/vm/d/down").0, 200);

    let (st, v) = control(&h, "/vm/d/up");
    assert_eq!(st, 200);
    assert_eq!(v["up"], true);
    let (d, r) = timed(a, "/t2/5");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Backend"), Some("d"));
    within(d, 0.30, 0.45, "/t2/5 after up");
    assert_eq!(control(&h, "/vm/d/up").0, 200);
    // In-process down/up work too.
    h.down("d").unwrap();
    assert!(TcpStream::connect(a).is_err());
    h.up("d").unwrap();
    assert_eq!(get(a, "/health").status, 200);
}

#[test]
fn http_keep_alive_and_close() {
    let h = start(vec![VmSpec::new("http", "127.0.0.29", 2000.0, 1, 0.0)]);
    let a = h.addr("http").unwrap();
    let mut c = Conn::open(a).unwrap();
    for _ in 0..3 {
        let r = c.get("/t1/1k", false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Connection"), None);
    }
    // Pipelined requests, answered in order.
    c.send("GET /t1/16k HTTP/1.1\r\nHost: x\r\n\r\nGET /t1/1k HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.read_response().unwrap().body.len(), 16384);
    assert_eq!(c.read_response().unwrap().body.len(), 1024);
    // A request body is read and discarded.
    c.send("POST /t1/1k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!(c.read_response().unwrap().status, 200);
    // HEAD: the head only.
    c.send("HEAD /t1/64k HTTP/1.1\r\nHost: x\r\n\r\n");
    c.send("GET /t2/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut raw = Vec::new();
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut b = [0u8; 4096];
        let n = c.s.read(&mut b).unwrap();
        raw.extend_from_slice(&b[..n]);
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    assert!(head.contains("Content-Length: 65536"), "{head}");
    c.buf = raw[head.find("\r\n\r\n").unwrap() + 4..].to_vec();
    assert!(String::from_utf8_lossy(&c.read_response().unwrap().body).contains("k=1"));
    // Connection: close is honoured.
    let r = c.get("/health", true).unwrap();
    assert_eq!(r.header("Connection"), Some("close"));
    assert_eq!(r.body, b"ok\n");
    assert!(c.closed_by_server());
    // HTTP/1.0 closes unless asked to keep alive.
    let mut c = Conn::open(a).unwrap();
    c.send("GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(
        c.read_response().unwrap().header("Connection"),
        Some("close")
    );
    assert!(c.closed_by_server());
    let mut c = Conn::open(a).unwrap();
    c.send("GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(
        c.read_response().unwrap().header("Connection"),
        Some("keep-alive")
    );
    assert_eq!(c.get("/health", false).unwrap().status, 200);
    // Garbage: 400 and close.
    let mut c = Conn::open(a).unwrap();
    c.send("NONSENSE\r\n\r\n");
    assert_eq!(c.read_response().unwrap().status, 400);
    assert!(c.closed_by_server());
}

#[test]
fn many_concurrent_connections_queue_in_model_time() {
    let h = start(vec![VmSpec::new("many", "127.0.0.30", 2000.0, 1, 0.0)]);
    let a = h.addr("many").unwrap();
    // 200 × 12,500 MHz·ms on one 2000 MHz vCPU: 1.25 s of model time.
    let n = 200;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let conns: Vec<_> = (0..n).map(|_| Conn::open(a).unwrap()).collect();
    let start = Instant::now();
    let ts: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let r = c.get("/t2/4", false).unwrap();
                assert_eq!(r.status, 200);
                start.elapsed()
            })
        })
        .collect();
    let mut d: Vec<Duration> = ts.into_iter().map(|t| t.join().unwrap()).collect();
    d.sort();
    within(d[n - 1], 1.24, 2.5, "makespan of 200 × /t2/4");
    within(d[n / 2], 0.55, 1.3, "median of 200 × /t2/4");
    // a request is counted once its answer is written, which can be just
    // after the client read it: wait (briefly) for the last count
    let waited = Instant::now();
    let mut u = h.usage()[0].clone();
    while u.requests < n as u64 && waited.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(10));
        u = h.usage()[0].clone();
    }
    assert_eq!(u.requests, n as u64);
    assert!((u.cpu_mhz_ms - n as f64 * 12_500.0).abs() < 0.01 * n as f64 * 12_500.0);
}

#[test]
fn command_line_ready_file_and_exit() {
    let dir = std::env::temp_dir().join(format!("dwepc-vm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec_path = dir.join("spec.json");
    let ready = dir.join("ready.json");
    std::fs::write(
        &spec_path,
        r#"[{"name":"c1","ip":"127.0.0.31","port":0,"cpu_mhz":2000,"vcpus":1,"net_kbps":4000,"memory_mb":2048},
            {"name":"c2","ip":"127.0.0.32","port":0,"cpu_mhz":1000,"vcpus":2,"net_kbps":0,"memory_mb":1024}]"#,
    )
    .unwrap();
    let run = |sig: Option<i32>| {
        let _ = std::fs::remove_file(&ready);
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dwepc-lab"))
            .args(["vms", "--spec"])
            .arg(&spec_path)
            .args(["--control", "127.0.0.1:0", "--ready"])
            .arg(&ready)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let text = dwepc_lab::wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&ready).ok()
        })
        .expect("ready file");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vms = v["vms"].as_array().unwrap();
        assert_eq!(vms.len(), 2);
        assert_eq!(vms[0]["name"], "c1");
        let addr: SocketAddr = vms[1]["addr"].as_str().unwrap().parse().unwrap();
        assert_eq!(addr.ip().to_string(), "127.0.0.32");
        assert_ne!(addr.port(), 0);
        let r = get(addr, "/health");
        assert_eq!(r.header("X-Backend"), Some("c2"));
        let ctl: SocketAddr = v["control"].as_str().unwrap().parse().unwrap();
        let usage = dwepc_lab::http::get(ctl.port(), "/usage");
        let all = vm::parse_usage(&usage.body).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].requests, 1);
        match sig {
            None => assert_eq!(dwepc_lab::http::get(ctl.port(), "/quit").status, 200),
            Some(s) => unsafe {
                libc::kill(child.id() as i32, s);
            },
        }
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{sig:?}");
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out.trim(), text.trim());
    };
    run(None);
    run(Some(libc::SIGTERM));
    run(Some(libc::SIGINT));

    // Bad spec: exit 2.
    std::fs::write(&spec_path, "[{\"name\":\"x\"}]").unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_dwepc-lab"))
        .args(["vms", "--spec"])
        .arg(&spec_path)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}
