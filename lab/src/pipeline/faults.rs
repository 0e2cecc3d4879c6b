//! Fault injection around the real Prometheus: an HTTP relay on loopback
//! that passes each request to the server and its answer back, or, in a
//! fault mode, answers as a broken or hostile server would. Every loop is
//! bounded (a minute at most per connection); it stops when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the relay does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Passes it to Prometheus.
    None,
    /// A 200 whose JSON body never ends.
    Endless,
    /// A 200 announcing 300 MB, sent as fast as the client reads.
    Huge,
    /// Reads the request and never answers.
    Hang,
    /// A 200 with JSON that breaks off.
    Malformed,
    /// Prometheus's answer with every value made "NaN".
    NaN,
    /// Prometheus's answer with every value made negative.
    Negative,
    /// Prometheus's answer with every series gone (scalars kept).
    Vanished,
}

const ALL: [Fault; 8] = [
    Fault::None,
    Fault::Endless,
    Fault::Huge,
    Fault::Hang,
    Fault::Malformed,
    Fault::NaN,
    Fault::Negative,
    Fault::Vanished,
];

/// The relay.
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Relays a free loopback port to `127.0.0.1:upstream`.
    pub fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(AtomicU8::new(Fault::None as u8));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        let (m, s) = (m.clone(), s.clone());
                        std::thread::spawn(move || serve(c, upstream, &m, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FaultProxy { port, mode, stop }
    }

    /// Sets what the next requests get.
    pub fn set(&self, f: Fault) {
        self.mode.store(f as u8, Ordering::Relaxed);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one request: its head and a body of Content-Length bytes.
fn read_request(c: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = c.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = c.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(buf);
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    }
}

/// Prometheus's answer to `req` (sent with `Connection: close`): status
/// and body.
fn ask(upstream: u16, req: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut u = TcpStream::connect(("127.0.0.1", upstream)).ok()?;
    u.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let text = String::from_utf8_lossy(req);
    let end = text.find("\r\n\r\n")?;
    let head: Vec<&str> = text[..end]
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect();
    let mut out = head.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(&req[end + 4..]);
    u.write_all(&out).ok()?;
    let mut resp = Vec::new();
    u.read_to_end(&mut resp).ok()?;
    let cut = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = String::from_utf8_lossy(&resp[..cut])
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let head = String::from_utf8_lossy(&resp[..cut]).to_ascii_lowercase();
    let body = resp[cut + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        return Some((status, unchunk(&body)));
    }
    Some((status, body))
}

fn unchunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if n == 0 || b.len() < eol + 2 + n {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[(eol + 4 + n).min(b.len())..];
    }
    out
}

/// Every value of every series set by `f` (a scalar result is kept).
fn rewrite(body: &[u8], f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return body.to_vec();
    };
    if let Some(series) = v["data"]["result"].as_array_mut() {
        for s in series.iter_mut().filter(|s| s.is_object()) {
            if let Some(p) = s.get_mut("value") {
                f(&mut p[1]);
            }
            if let Some(ps) = s.get_mut("values").and_then(|x| x.as_array_mut()) {
                for p in ps {
                    f(&mut p[1]);
                }
            }
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn answer(c: &mut TcpStream, status: u16, body: &[u8]) {
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = c.write_all(head.as_bytes());
    let _ = c.write_all(body);
}

fn serve(mut c: TcpStream, upstream: u16, mode: &AtomicU8, stop: &AtomicBool) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&mut c) else {
        return;
    };
    let f = ALL[mode.load(Ordering::Relaxed) as usize % ALL.len()];
    let until = Instant::now() + Duration::from_secs(60);
    let going = || !stop.load(Ordering::Relaxed) && Instant::now() < until;
    match f {
        Fault::Hang => {
            while going() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Fault::Endless | Fault::Huge => {
            let head = if f == Fault::Huge {
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 314572800\r\n\r\n"
            } else {
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n"
            };
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(br#"{"status":"success","data":{"resultType":"vector","result":["#);
            let item =
                br#"{"metric":{"__name__":"vmware_vm_num_cpu","vm_name":"x"},"value":[1,"1"]},"#
                    .repeat(100);
            while going() && c.write_all(&item).is_ok() {}
        }
        Fault::Malformed => answer(
            &mut c,
            200,
            br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"#,
        ),
        Fault::None | Fault::NaN | Fault::Negative | Fault::Vanished => {
            let Some((status, body)) = ask(upstream, &req) else {
                return;
            };
            let body = match f {
                Fault::NaN => rewrite(&body, |x| *x = "NaN".into()),
                Fault::Negative => rewrite(&body, |x| *x = "-5".into()),
                Fault::Vanished => {
                    let mut v: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_default();
                    if v["data"]["result"].is_array() {
                        v["data"]["result"] = serde_json::json!([]);
                    }
                    serde_json::to_vec(&v).unwrap()
                }
                _ => body,
            };
            answer(&mut c, status, &body);
        }
    }
}
