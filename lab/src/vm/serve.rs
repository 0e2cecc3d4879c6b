//! Serving a VM's connections: each request waits for its CPU work on the
//! vCPU that frees up first, then for its transmission on the link, then
//! is written.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::lab::{Lab, Vm};
use super::lock;
use super::pages::{page, Body};
use super::request::{read_request, reason, Request};
use super::state::State;

/// A keep-alive connection idle for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bodies up to this size are written with the headers in one call.
const COALESCE: usize = 16 * 1024;

/// Accepts a VM's connections until it goes down (`life` changes).
pub(super) async fn accept_loop(
    lab: Arc<Lab>,
    vm: Arc<Vm>,
    listener: TcpListener,
    mut life: watch::Receiver<u64>,
) {
    loop {
        tokio::select! {
            _ = life.changed() => return,
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(lab.clone(), vm.clone(), stream, life.clone()));
                }
                Err(_) => {
                    if life.has_changed().unwrap_or(true) {
                        return;
                    }
                    // EMFILE and the like: let connections finish.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

#[derive(Clone, Copy)]
enum Field {
    Active,
    InFlight,
}

/// Counts a connection or a request for as long as it lives.
struct Counter<'a> {
    vm: &'a Vm,
    field: Field,
}

impl<'a> Counter<'a> {
    fn new(vm: &'a Vm, field: Field) -> Counter<'a> {
        let c = Counter { vm, field };
        c.add(1);
        c
    }

    fn add(&self, d: i64) {
        let mut st = lock(&self.vm.state);
        let x = match self.field {
            Field::Active => &mut st.active,
            Field::InFlight => &mut st.in_flight,
        };
        *x = x.saturating_add_signed(d);
    }
}

impl Drop for Counter<'_> {
    fn drop(&mut self) {
        self.add(-1);
    }
}

async fn connection(lab: Arc<Lab>, vm: Arc<Vm>, stream: TcpStream, mut life: watch::Receiver<u64>) {
    let _active = Counter::new(&vm, Field::Active);
    tokio::select! {
        _ = serve(&lab, &vm, stream) => {}
        _ = life.changed() => {}
    }
}

/// Sleeps until `finish(state)` (re-evaluated on every capacity change).
async fn wait_until(
    lab: &Lab,
    vm: &Vm,
    epoch: &mut watch::Receiver<u64>,
    finish: impl Fn(&State) -> f64,
) {
    loop {
        let f = finish(&lock(&vm.state));
        if f <= lab.now_ms() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(lab.at(f)) => return,
            r = epoch.changed() => if r.is_err() { return },
        }
    }
}

/// Serves a connection's requests in order until it closes, stays idle
/// too long or the VM goes down.
async fn serve(lab: &Lab, vm: &Vm, mut stream: TcpStream) {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let req =
            match tokio::time::timeout(IDLE_TIMEOUT, read_request(&mut stream, &mut buf)).await {
                Ok(Ok(Some(r))) => r,
                _ => return,
            };
        let _in_flight = Counter::new(vm, Field::InFlight);
        let mut epoch = vm.epoch.subscribe();
        let (status, cost, body) = answer(&req);
        let out = response_head(&req, status, &vm.name, body.len());
        let body = if req.method == "HEAD" {
            &[][..]
        } else {
            body.bytes()
        };
        let bytes = (out.len() + body.len()) as u64;
        if cost > 0.0 {
            if !compute(lab, vm, &mut epoch, cost).await {
                return;
            }
            transmit(lab, vm, &mut epoch, bytes).await;
        } else {
            lock(&vm.state).direct_bytes += bytes;
        }
        if write_response(&mut stream, out, body).await.is_err() {
            return;
        }
        lock(&vm.state).requests += 1;
        if !req.keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// The status, CPU cost (MHz·ms) and body of the answer to `req`.
fn answer(req: &Request) -> (u16, f64, Body) {
    match req.error {
        Some(code) => (code, 0.0, Body::Text(format!("{}\n", reason(code)))),
        None => match page(&req.target) {
            Some(p) => (200, p.cost, p.body),
            None => (404, 0.0, Body::Text("not found\n".to_string())),
        },
    }
}

/// The response head: status line and headers, `X-Backend` naming the VM.
fn response_head(req: &Request, status: u16, vm: &str, len: usize) -> Vec<u8> {
    let conn = match (req.keep_alive, req.http10) {
        (false, _) => "Connection: close\r\n",
        (true, true) => "Connection: keep-alive\r\n",
        (true, false) => "",
    };
    format!(
        "HTTP/1.1 {status} {}\r\nServer: dwepc-lab\r\nX-Backend: {vm}\r\n\
         Content-Type: text/plain\r\nContent-Length: {len}\r\n{conn}\r\n",
        reason(status),
    )
    .into_bytes()
}

/// CPU: queues `cost` on the vCPU that frees up first (FIFO) and waits
/// until it is done; false if the VM is down. On real CPUs a vCPU thread
/// burns it.
async fn compute(lab: &Lab, vm: &Vm, epoch: &mut watch::Receiver<u64>, cost: f64) -> bool {
    if let Some(real) = &vm.real {
        let up = lock(&vm.state).up;
        return up && real.compute(cost).await;
    }
    let (i, target) = {
        let mut st = lock(&vm.state);
        if !st.up {
            return false;
        }
        let t = lab.now_ms();
        let i = (0..st.servers.len())
            .min_by(|a, b| {
                st.servers[*a]
                    .busy_until()
                    .total_cmp(&st.servers[*b].busy_until())
            })
            .unwrap_or(0);
        (i, st.servers[i].push(t, cost))
    };
    wait_until(lab, vm, epoch, |st| st.servers[i].finish_of(target)).await;
    true
}

/// Network: queues `bytes` on the link (FIFO) and waits until they are
/// sent; at once on an unlimited link.
async fn transmit(lab: &Lab, vm: &Vm, epoch: &mut watch::Receiver<u64>, bytes: u64) {
    let target = {
        let mut st = lock(&vm.state);
        let t = lab.now_ms();
        match &mut st.link {
            Some(l) => Some(l.push(t, bytes as f64)),
            None => {
                st.direct_bytes += bytes;
                None
            }
        }
    };
    if let Some(target) = target {
        wait_until(lab, vm, epoch, |st| {
            st.link.as_ref().map_or(0.0, |l| l.finish_of(target))
        })
        .await;
    }
}

/// Writes the head and the body (in one call up to [`COALESCE`] bytes of
/// body).
async fn write_response(stream: &mut TcpStream, mut out: Vec<u8>, body: &[u8]) -> io::Result<()> {
    if body.len() <= COALESCE {
        out.extend_from_slice(body);
        stream.write_all(&out).await
    } else {
        match stream.write_all(&out).await {
            Ok(()) => stream.write_all(body).await,
            e => e,
        }
    }
}
