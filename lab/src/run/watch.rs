//! The frontends' status pages: read at the end, and once a second for the
//! counter-driven policies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::{json, Value};

use super::clock::every_second;
use crate::http;

/// The first upstream of a frontend's status page (`Null` if it does not
/// answer).
pub(super) fn status(port: u16) -> Value {
    http::request(port, "GET", "/dwepc")
        .ok()
        .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
        .map(|v| v["upstreams"][0].clone())
        .unwrap_or(Value::Null)
}

/// Reads the counter-driven stacks' status pages once a second.
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Vec<Value>>>>,
}

impl Watch {
    pub(super) fn start(ports: Vec<Option<u16>>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out: Vec<Vec<Value>> = vec![Vec::new(); ports.len()];
            every_second(&flag, |now| {
                for (k, p) in ports.iter().enumerate() {
                    if let Some(p) = p {
                        let st = status(*p);
                        out[k].push(json!({
                            "t_ms": now,
                            "balancing": st["balancing"],
                            "shares": st["peers"].as_array().map(|ps| ps.iter().map(|p| p["share"].clone()).collect::<Vec<_>>()),
                        }));
                    }
                }
            });
            out
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    pub(super) fn finish(mut self) -> Vec<Vec<Value>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}
