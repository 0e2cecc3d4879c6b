//! The status document served by `dwepc_status`: plain data in, JSON out.
//! Never holds credentials (only endpoint names and URLs).

use crate::algo::Res;
use std::fmt::Write;

/// One peer of an upstream.
#[derive(Clone, Debug, Default)]
pub struct PeerStatus {
    /// Peer address (`ip:port`).
    pub name: String,
    /// Backup server.
    pub backup: bool,
    /// VM the peer maps to, when known.
    pub vm: Option<String>,
    /// Usable capacity per resource.
    pub capacity: Res,
    /// Predicted headroom per resource.
    pub q: Res,
    /// Allocation Q·W for the current period (NaN when not in use).
    pub allocation: f64,
    /// Requests in the current period (V_m).
    pub v: u64,
    /// Remaining allocation L.
    pub l: f64,
    /// Requests since the zone was created.
    pub requests: u64,
    /// CPU ready time of the VM's newest sample, percent of its interval.
    pub cpu_ready_pct: f64,
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
    /// Weight vector W (per resource).
    pub w: Option<Res>,
    /// Peers, primaries first.
    pub peers: Vec<PeerStatus>,
}

/// Writes a JSON string literal.
pub fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes a JSON number (`null` for NaN/inf).
pub fn json_num(out: &mut String, x: f64) {
    if x.is_finite() {
        let _ = write!(out, "{}", x);
    } else {
        out.push_str("null");
    }
}

fn json_res(out: &mut String, r: &Res) {
    out.push('{');
    for (j, name) in crate::algo::RESOURCES.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{name}\":");
        json_num(out, r[j]);
    }
    out.push('}');
}

fn json_opt_str(out: &mut String, s: &Option<String>) {
    match s {
        Some(s) => json_str(out, s),
        None => out.push_str("null"),
    }
}

impl UpstreamStatus {
    /// Appends this upstream as a JSON object.
    pub fn write_json(&self, out: &mut String) {
        out.push_str("{\"name\":");
        json_str(out, &self.name);
        out.push_str(",\"mode\":");
        json_str(out, &self.mode);
        out.push_str(",\"balancing\":");
        json_str(out, &self.balancing);
        out.push_str(",\"reason\":");
        json_str(out, &self.reason);
        out.push_str(",\"vsphere\":");
        json_opt_str(out, &self.vsphere);
        let _ = write!(
            out,
            ",\"window\":{},\"window_size\":{},\"sample_age_ms\":",
            self.window, self.window_size
        );
        match self.sample_age_ms {
            Some(a) => {
                let _ = write!(out, "{a}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"w\":");
        match &self.w {
            Some(w) => json_res(out, w),
            None => out.push_str("null"),
        }
        out.push_str(",\"peers\":[");
        for (i, p) in self.peers.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            json_str(out, &p.name);
            let _ = write!(out, ",\"backup\":{},\"vm\":", p.backup);
            json_opt_str(out, &p.vm);
            out.push_str(",\"capacity\":");
            json_res(out, &p.capacity);
            out.push_str(",\"q\":");
            json_res(out, &p.q);
            out.push_str(",\"allocation\":");
            json_num(out, p.allocation);
            let _ = write!(out, ",\"v\":{},\"l\":", p.v);
            json_num(out, p.l);
            out.push_str(",\"cpu_ready_pct\":");
            json_num(out, p.cpu_ready_pct);
            let _ = write!(out, ",\"requests\":{}}}", p.requests);
        }
        out.push_str("]}");
    }
}

/// The whole document: `{"upstreams":[...]}`.
pub fn render(ups: &[UpstreamStatus]) -> String {
    let mut out = String::from("{\"upstreams\":[");
    for (i, u) in ups.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        u.write_json(&mut out);
    }
    out.push_str("]}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nulls() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}");
        assert_eq!(s, r#""a\"b\\c\n\u0001""#);
        let mut s = String::new();
        json_num(&mut s, f64::NAN);
        json_num(&mut s, 1.5);
        assert_eq!(s, "null1.5");
    }

    #[test]
    fn renders_document() {
        let u = UpstreamStatus {
            name: "app".into(),
            mode: "paper".into(),
            balancing: "round_robin".into(),
            reason: "no_samples".into(),
            peers: vec![PeerStatus {
                name: "127.0.0.1:80".into(),
                capacity: [1.0, f64::NAN, 2.0, 3.0],
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = render(&[u]);
        assert!(doc.starts_with("{\"upstreams\":[{\"name\":\"app\""));
        assert!(doc.contains("\"capacity\":{\"cpu\":1,\"mem\":null,\"net\":2,\"disk\":3}"));
        assert!(doc.contains("\"sample_age_ms\":null"));
        // the field is rendered per peer (0 here: PeerStatus::default())
        assert!(doc.contains("\"cpu_ready_pct\":0,"));
    }
}
