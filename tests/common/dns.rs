//! A small DNS server on loopback UDP for nginx's `resolver`: answers `A`
//! queries for the names it is given (TTL 1 s), an empty answer for other
//! types of those names, NXDOMAIN for the rest. The answers can change
//! while it runs, as a real zone's would.

use std::collections::HashMap;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Table = Arc<Mutex<HashMap<String, Vec<Ipv4Addr>>>>;

pub struct Dns {
    pub port: u16,
    table: Table,
    /// Queries answered so far.
    pub queries: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    pub fn start() -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let table: Table = Arc::default();
        let queries = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (table, queries, stop) = (table.clone(), queries.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((len, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    let answer = {
                        let t = table.lock().unwrap();
                        respond(&buf[..len], &t)
                    };
                    if let Some(a) = answer {
                        queries.fetch_add(1, Ordering::Relaxed);
                        let _ = sock.send_to(&a, from);
                    }
                }
            })
        };
        Dns {
            port,
            table,
            queries,
            stop,
            handle: Some(handle),
        }
    }

    /// `name` resolves to `ips` from now on.
    pub fn set(&self, name: &str, ips: &[&str]) {
        let ips = ips.iter().map(|s| s.parse().unwrap()).collect();
        self.table
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), ips);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The answer to one query (RFC 1035 §4.1), or None for a malformed one.
fn respond(q: &[u8], table: &HashMap<String, Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    if q.len() < 12 || be16(q, 4)? != 1 {
        return None;
    }
    let mut labels = Vec::new();
    let mut pos = 12;
    loop {
        let n = *q.get(pos)? as usize;
        pos += 1;
        if n == 0 {
            break;
        }
        if n > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(pos..pos + n)?).to_ascii_lowercase());
        pos += n;
    }
    let qtype = be16(q, pos)?;
    let question = q.get(12..pos + 4)?;
    let name = labels.join(".");
    let (rcode, ips): (u16, &[Ipv4Addr]) = match table.get(&name) {
        Some(ips) if qtype == 1 => (0, ips),
        Some(_) => (0, &[]),
        None => (3, &[]),
    };
    let mut a = Vec::with_capacity(512);
    a.extend_from_slice(&q[0..2]);
    // response, recursion desired and available
    a.extend_from_slice(&(0x8180u16 | rcode).to_be_bytes());
    a.extend_from_slice(&1u16.to_be_bytes());
    a.extend_from_slice(&(ips.len() as u16).to_be_bytes());
    a.extend_from_slice(&[0, 0, 0, 0]);
    a.extend_from_slice(question);
    for ip in ips {
        // the name by pointer to the question's, type A, class IN, TTL 1
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        a.extend_from_slice(&ip.octets());
    }
    Some(a)
}
