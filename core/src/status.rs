//! The status document served by `dwepc_status`: plain data in, JSON out
//! (serde_json; NaN and infinities are written as `null`). Never holds
//! credentials (only endpoint names).

use crate::algo::{Res, RESOURCES};
use serde_json::{json, Map, Value};

/// One peer of an upstream.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// Peer address (`ip:port`).
    pub name: String,
    /// The `server` directive's address as written (a `resolve` name for
    /// the addresses it resolved to).
    pub server: String,
    /// Backup server.
    pub backup: bool,
    /// VM the peer maps to, when known.
    pub vm: Option<String>,
    /// Usable capacity per resource.
    pub capacity: Res,
    /// Paper mode: predicted headroom per resource.
    pub q: Res,
    /// Paper mode: allocation Q·W for the current period; wlc mode: the
    /// weight (NaN when not in use).
    pub allocation: f64,
    /// Paper mode: requests in the current period (V_m).
    pub v: u64,
    /// Paper mode: remaining allocation L.
    pub l: f64,
    /// Requests sent since the zone was created.
    pub requests: u64,
    /// Requests in flight now, over every worker.
    pub in_flight: u64,
    /// Requests that failed (refused, timed out, bad answer).
    pub failed: u64,
    /// CPU ready time of the VM's newest sample, percent of its interval.
    pub cpu_ready_pct: f64,
    /// Shares mode: the share in force (NaN when not in use).
    pub share: f64,
    /// Shares mode: the target share of the newest sample.
    pub target_share: f64,
    /// Shares mode: the in-flight limit (0 = none).
    pub limit: u64,
    /// Shares mode: use not explained by this balancer's requests.
    pub background: Res,
    /// Shares mode: CPU capacity after CPU ready.
    pub effective_cpu: f64,
}

/// One upstream using dwepc.
#[derive(Clone, Debug, Default)]
pub struct UpstreamStatus {
    /// Upstream name.
    pub name: String,
    /// Configured mode.
    pub mode: String,
    /// "dwepc" when counters drive the pick, "round_robin" otherwise.
    pub balancing: String,
    /// Why the balancer is where it is (e.g. "no_samples", "stale").
    pub reason: String,
    /// Endpoint name, if any.
    pub vsphere: Option<String>,
    /// Samples in the window.
    pub window: u64,
    /// Window size m.
    pub window_size: u64,
    /// Age of the newest sample, ms.
    pub sample_age_ms: Option<u64>,
    /// Paper mode: weight vector W (per resource).
    pub w: Option<Res>,
    /// Shares mode: cost of one request per resource.
    pub cost: Option<Res>,
    /// Shares mode: completed requests per second in the samples.
    pub rate: f64,
    /// Shares mode: requests answered at once by the overload guard.
    pub guard_rejections: u64,
    /// Peers, primaries first.
    pub peers: Vec<PeerStatus>,
}

fn num(x: f64) -> Value {
    if x.is_finite() {
        json!(x)
    } else {
        Value::Null
    }
}

fn res(r: &Res) -> Value {
    let mut m = Map::new();
    for (j, name) in RESOURCES.iter().enumerate() {
        m.insert((*name).into(), num(r[j]));
    }
    Value::Object(m)
}

impl PeerStatus {
    /// The peer as JSON.
    pub fn to_json(&self, mode: &str) -> Value {
        let mut v = json!({
            "name": self.name,
            "server": self.server,
            "backup": self.backup,
            "vm": self.vm,
            "capacity": res(&self.capacity),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "failed": self.failed,
            "cpu_ready_pct": num(self.cpu_ready_pct),
        });
        let m = v.as_object_mut().expect("object");
        if mode == "shares" {
            m.insert("share".into(), num(self.share));
            m.insert("target_share".into(), num(self.target_share));
            m.insert(
                "limit".into(),
                if self.limit > 0 {
                    json!(self.limit)
                } else {
                    Value::Null
                },
            );
            m.insert("background".into(), res(&self.background));
            m.insert("effective_cpu".into(), num(self.effective_cpu));
        } else {
            m.insert("q".into(), res(&self.q));
            m.insert("allocation".into(), num(self.allocation));
            m.insert("v".into(), json!(self.v));
            m.insert("l".into(), num(self.l));
        }
        v
    }
}

impl UpstreamStatus {
    /// The upstream as JSON.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "mode": self.mode,
            "balancing": self.balancing,
            "reason": self.reason,
            "vsphere": self.vsphere,
            "window": self.window,
            "window_size": self.window_size,
            "sample_age_ms": self.sample_age_ms,
        });
        let m = v.as_object_mut().expect("object");
        if self.mode == "shares" {
            m.insert(
                "cost".into(),
                self.cost.as_ref().map(res).unwrap_or(Value::Null),
            );
            m.insert("rate".into(), num(self.rate));
            m.insert("guard_rejections".into(), json!(self.guard_rejections));
        } else {
            m.insert("w".into(), self.w.as_ref().map(res).unwrap_or(Value::Null));
        }
        m.insert(
            "peers".into(),
            Value::Array(self.peers.iter().map(|p| p.to_json(&self.mode)).collect()),
        );
        v
    }
}

/// The whole document: `{"upstreams":[...]}` and a newline.
pub fn render(ups: &[UpstreamStatus]) -> String {
    let doc = json!({ "upstreams": ups.iter().map(UpstreamStatus::to_json).collect::<Vec<_>>() });
    format!("{doc}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_paper_document() {
        let u = UpstreamStatus {
            name: "app\"x".into(),
            mode: "paper".into(),
            balancing: "round_robin".into(),
            reason: "no_samples".into(),
            peers: vec![PeerStatus {
                name: "127.0.0.1:80".into(),
                capacity: [1.0, f64::NAN, 2.0, 3.0],
                cpu_ready_pct: f64::NAN,
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = render(&[u]);
        assert!(doc.ends_with("}\n"));
        let v: Value = serde_json::from_str(&doc).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["name"], "app\"x");
        assert_eq!(u["sample_age_ms"], Value::Null);
        assert_eq!(u["w"], Value::Null);
        let p = &u["peers"][0];
        assert_eq!(
            p["capacity"],
            json!({"cpu": 1.0, "mem": null, "net": 2.0, "disk": 3.0})
        );
        assert_eq!(p["cpu_ready_pct"], Value::Null);
        assert!(p.get("l").is_some() && p.get("share").is_none());
    }

    #[test]
    fn renders_shares_document() {
        let u = UpstreamStatus {
            name: "app".into(),
            mode: "shares".into(),
            balancing: "dwepc".into(),
            reason: "active".into(),
            cost: Some([120.0, f64::NAN, 2.5, f64::NAN]),
            rate: 40.0,
            guard_rejections: 3,
            peers: vec![PeerStatus {
                share: 0.25,
                target_share: 0.2,
                limit: 9,
                in_flight: 4,
                background: [100.0, f64::NAN, 0.0, f64::NAN],
                effective_cpu: 3000.0,
                ..Default::default()
            }],
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&render(&[u])).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["cost"]["cpu"], 120.0);
        assert_eq!(u["guard_rejections"], 3);
        assert!(u.get("w").is_none());
        let p = &u["peers"][0];
        assert_eq!(
            (p["share"].as_f64(), p["limit"].as_u64()),
            (Some(0.25), Some(9))
        );
        assert_eq!(p["in_flight"], 4);
        assert_eq!(p["background"]["cpu"], 100.0);
        assert!(p.get("l").is_none());
    }
}
