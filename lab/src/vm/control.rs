//! The control endpoint: HTTP/1.1 requests, `Connection: close`, JSON
//! answers (the paths are listed in the module's doc).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::lab::{CtlError, Lab};
use super::pages::path_of;
use super::request::{read_request, reason, Request};
use super::spec::Usage;

impl Lab {
    /// Answers a control request: status, JSON body, quit after answering.
    fn control(self: &Arc<Self>, req: &Request) -> (u16, Value, bool) {
        if let Some(code) = req.error {
            return (code, json!({"error": reason(code)}), false);
        }
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (path_of(p), q),
            None => (path_of(&req.target), ""),
        };
        let param = |k: &str| -> Result<f64, CtlError> {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .ok_or_else(|| (400, format!("missing ?{k}=")))?
                .1
                .parse::<f64>()
                .map_err(|e| (400, format!("bad {k}: {e}")))
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let res = match parts.as_slice() {
            ["usage"] => {
                let all = self.usage().iter().map(Usage::to_json).collect();
                return (200, Value::Array(all), false);
            }
            [""] | ["vms"] => return (200, self.ready_json(), false),
            ["quit"] => return (200, json!({"ok": true}), true),
            ["vm", name, op] => match *op {
                "hog" => param("mhz").and_then(|x| self.set_hog(name, x)),
                "cpu" => param("mhz").and_then(|x| self.set_cpu(name, x)),
                "net" => param("kbps").and_then(|x| self.set_net(name, x)),
                "vcpus" => param("n").and_then(|x| self.set_vcpus(name, x)),
                "contention" => param("pct").and_then(|x| self.set_contention(name, x)),
                "slowdown" => param("pct").and_then(|x| self.set_slowdown(name, x)),
                "down" => self.down(name),
                "up" => self.up(name),
                "usage" => Ok(()),
                _ => Err((404, format!("unknown operation {op:?}"))),
            }
            .and_then(|()| self.usage_of(name)),
            _ => Err((404, format!("unknown path {path:?}"))),
        };
        match res {
            Ok(u) => (200, u.to_json(), false),
            Err((code, msg)) => (code, json!({"error": msg}), false),
        }
    }
}

/// Accepts control connections, one task each.
pub(super) async fn control_loop(lab: Arc<Lab>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(control_conn(lab.clone(), stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn control_conn(lab: Arc<Lab>, mut stream: TcpStream) {
    let mut buf = Vec::new();
    let timeout = Duration::from_secs(10);
    let req = match tokio::time::timeout(timeout, read_request(&mut stream, &mut buf)).await {
        Ok(Ok(Some(r))) => r,
        _ => return,
    };
    let (status, body, quit) = lab.control(&req);
    let body = body.to_string();
    let out = format!(
        "HTTP/1.1 {status} {}\r\nServer: dwepc-lab\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.shutdown().await;
    if quit {
        lab.quit.send_replace(true);
    }
}
