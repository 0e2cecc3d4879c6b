//! A real HTTP/1.1 backend on loopback (thread per connection, keep-alive
//! aware) that answers with its own id and counts what it served.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How a backend behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 with the id.
    Ok,
    /// 500 with the id.
    Error500,
    /// Accept, read the request, close without answering.
    Reset,
    /// 200 with the id, this many ms later than asked.
    Slow(u64),
}

pub struct Backend {
    pub id: String,
    pub ip: String,
    pub port: u16,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
    pub in_flight: Arc<AtomicU64>,
    pub max_in_flight: Arc<AtomicU64>,
    behaviour: Arc<std::sync::Mutex<Behaviour>>,
    stop: Arc<AtomicBool>,
}

impl Backend {
    pub fn start(id: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        Self::serve(id, listener, port)
    }

    pub fn start_on(id: &str, port: u16) -> Backend {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        Self::serve(id, listener, port)
    }

    /// On another loopback address (127.0.0.x), for mapping by guest IP.
    pub fn start_ip(id: &str, ip: &str) -> Backend {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut b = Self::serve(id, listener, port);
        b.ip = ip.to_string();
        b
    }

    /// On `ip:port` (several backends on one port, as the addresses of one
    /// DNS name).
    pub fn start_at(id: &str, ip: &str, port: u16) -> Backend {
        let listener = TcpListener::bind((ip, port)).unwrap();
        let mut b = Self::serve(id, listener, port);
        b.ip = ip.to_string();
        b
    }

    fn serve(id: &str, listener: TcpListener, port: u16) -> Backend {
        let b = Backend {
            id: id.to_string(),
            ip: "127.0.0.1".to_string(),
            port,
            requests: Arc::default(),
            connections: Arc::default(),
            in_flight: Arc::default(),
            max_in_flight: Arc::default(),
            behaviour: Arc::new(std::sync::Mutex::new(Behaviour::Ok)),
            stop: Arc::default(),
        };
        listener.set_nonblocking(true).unwrap();
        let (id, req, conns, infl, maxf, beh, stop) = (
            b.id.clone(),
            b.requests.clone(),
            b.connections.clone(),
            b.in_flight.clone(),
            b.max_in_flight.clone(),
            b.behaviour.clone(),
            b.stop.clone(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        conns.fetch_add(1, Ordering::Relaxed);
                        let (id, req, infl, maxf, beh, stop) = (
                            id.clone(),
                            req.clone(),
                            infl.clone(),
                            maxf.clone(),
                            beh.clone(),
                            stop.clone(),
                        );
                        std::thread::spawn(move || {
                            let _ = handle(s, &id, &req, &infl, &maxf, &beh, &stop);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        b
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }

    pub fn served(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    s: TcpStream,
    id: &str,
    req: &AtomicU64,
    infl: &AtomicU64,
    maxf: &AtomicU64,
    beh: &std::sync::Mutex<Behaviour>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let mut close = line.contains("HTTP/1.0");
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let hl = h.to_ascii_lowercase();
            if hl.starts_with("connection:") {
                close = hl.contains("close");
            }
            if let Some(v) = hl.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
        }
        if len > 0 {
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut r, &mut body)?;
        }
        let b = *beh.lock().unwrap();
        if b == Behaviour::Reset || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = infl.fetch_add(1, Ordering::SeqCst) + 1;
        maxf.fetch_max(now, Ordering::SeqCst);
        let mut ms: u64 = path.split("delay=").nth(1).map_or(0, |v| {
            v.split('&').next().unwrap_or("0").parse().unwrap_or(0)
        });
        if let Behaviour::Slow(extra) = b {
            ms += extra;
        }
        if ms > 0 {
            std::thread::sleep(Duration::from_millis(ms));
        }
        req.fetch_add(1, Ordering::SeqCst);
        infl.fetch_sub(1, Ordering::SeqCst);
        let status = if b == Behaviour::Error500 {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let body = format!("{id}\n");
        write!(
            w,
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nX-Backend: {id}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        w.flush()?;
        if close {
            return Ok(());
        }
    }
}
