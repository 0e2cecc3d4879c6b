//! The status document: plain data in, JSON out (serde_json; NaN and
//! infinities are written as `null`).

use serde::ser::Serializer;
use serde::Serialize;

use crate::policy::{Field, Fields};
use crate::resources::Res;
use crate::zone::Mapping;

/// One peer of an upstream.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStatus {
    /// Peer address (`ip:port`).
    pub name: String,
    /// The `server` directive's address as written (a `resolve` name for
    /// the addresses it resolved to).
    pub server: String,
    /// Backup server.
    pub backup: bool,
    /// The VM the collector found for the peer (by guest IP or by its
    /// `dwepc_node vm=`), null while none is found.
    pub vm: Option<String>,
    /// "mapped", or why not: "no_vm_with_guest_ip", "no_vm_named",
    /// "no_address", "pending" (no inventory read yet).
    pub mapping: Mapping,
    /// Usable capacity per resource.
    #[serde(serialize_with = "per_resource")]
    pub capacity: Res,
    /// What the VM used in its newest sample, per resource (MHz, MB,
    /// KB/s, KB/s).
    #[serde(serialize_with = "per_resource")]
    pub usage: Res,
    /// Requests sent since the zone was created.
    pub requests: u64,
    /// Requests in flight now, over every worker.
    pub in_flight: u64,
    /// Requests that failed (refused, timed out, bad answer).
    pub failed: u64,
    /// CPU ready time of the VM's newest sample, percent of its interval.
    pub cpu_ready_pct: f64,
    /// The share of the requests it was sent in the newest sample period,
    /// whatever picked them (beside the mode's `share`: what observe mode
    /// compares).
    pub got_share: f64,
    /// What the mode says of the peer.
    #[serde(flatten)]
    pub model: Fields,
}

/// One upstream using dwepc.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UpstreamStatus {
    /// Upstream name.
    pub name: String,
    /// Configured mode.
    pub mode: String,
    /// What drives the pick: "dwepc" (counters), "response_times" (the
    /// worker's response times: the least_time and random_two modes, and
    /// `pick=least_time` while counters are not usable), "round_robin",
    /// or in observe mode "least_conn" or "round_robin".
    pub balancing: String,
    /// `observe=`: the pick nginx's own ("least_conn", "round_robin"),
    /// everything else computed and shown; null when dwepc picks.
    pub observe: Option<String>,
    /// `choices=` as written: "all", "auto" or a number of peers from 2
    /// to 8; null for a mode that takes no `choices=` (it compares every
    /// eligible peer).
    pub choices: Option<String>,
    /// How many peers a pick over the primary servers draws by share and
    /// compares now (`choices=N`, or `choices=auto` above its threshold,
    /// while counters drive the pick); null while a pick compares every
    /// eligible peer.
    pub drawn: Option<u64>,
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
    /// Servers listed below, and how many of them have a VM.
    pub servers: u64,
    pub mapped: u64,
    /// What the mode says of the upstream.
    #[serde(flatten)]
    pub model: Fields,
    /// Peers, primaries first.
    pub peers: Vec<PeerStatus>,
}

/// A per-resource vector as `{"cpu":..,"mem":..,"net":..,"disk":..}`.
fn per_resource<S: Serializer>(r: &Res, s: S) -> Result<S::Ok, S::Error> {
    Field::Resources(*r).serialize(s)
}

/// One endpoint as the JSON page shows it: what it costs and how it
/// fares, from its record in the lease zone.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointStatus {
    pub name: String,
    /// "vsphere" or "prometheus".
    pub source: &'static str,
    pub url: String,
    /// Calls in all, and in the last whole minute.
    pub calls: u64,
    pub calls_last_minute: u64,
    /// Body bytes of the answers.
    pub answer_bytes: u64,
    /// The mean time from a call to the end of its answer, ms (null
    /// before the first call).
    pub answer_ms_mean: Option<f64>,
    /// Failed polls by kind (only kinds seen).
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// The last good poll (Unix ms; null before the first).
    pub last_success_ms: Option<u64>,
}

impl EndpointStatus {
    /// From an endpoint's name, source, URL and record.
    pub fn new(e: &super::EndpointMetrics<'_>) -> EndpointStatus {
        let s = &e.stats;
        EndpointStatus {
            name: e.name.to_string(),
            source: e.source,
            url: e.url.to_string(),
            calls: s.calls,
            calls_last_minute: s.calls_last_minute,
            answer_bytes: s.bytes,
            answer_ms_mean: (s.calls > 0).then(|| s.answer_us as f64 / 1000.0 / s.calls as f64),
            errors: crate::vsphere::ErrorKind::ALL
                .iter()
                .zip(s.errors)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.name(), n))
                .collect(),
            last_success_ms: (s.last_success_ms > 0).then_some(s.last_success_ms),
        }
    }
}

/// The whole document: `{"version":"…","upstreams":[...],
/// "endpoints":[...]}` and a newline (`version`: the module build that
/// answers, which tells after an upgrade whether nginx was restarted).
pub fn render(
    version: &str,
    ups: &[UpstreamStatus],
    endpoints: &[super::EndpointMetrics<'_>],
) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        version: &'a str,
        upstreams: &'a [UpstreamStatus],
        endpoints: Vec<EndpointStatus>,
    }
    match serde_json::to_string(&Doc {
        version,
        upstreams: ups,
        endpoints: endpoints.iter().map(EndpointStatus::new).collect(),
    }) {
        Ok(doc) => doc + "\n",
        Err(e) => render_error(&e.to_string()),
    }
}

/// An error document: `{"error": msg}` and a newline.
pub fn render_error(msg: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": msg }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::paper::Paper;
    use crate::policy::shares::Shares;
    use crate::policy::Mode;
    use serde_json::{json, Value};

    #[test]
    fn renders_paper_document() {
        let u = UpstreamStatus {
            name: "app\"x".into(),
            mode: "paper".into(),
            balancing: "round_robin".into(),
            reason: "no_samples".into(),
            model: Paper.upstream_fields(None),
            peers: vec![PeerStatus {
                name: "127.0.0.1:80".into(),
                capacity: [1.0, f64::NAN, 2.0, 3.0],
                cpu_ready_pct: f64::NAN,
                model: Paper.peer_fields(None, false),
                ..Default::default()
            }],
            ..Default::default()
        };
        let doc = render("0.1.0+abc", &[u], &[]);
        assert!(doc.ends_with("}\n"));
        let v: Value = serde_json::from_str(&doc).unwrap();
        let u = &v["upstreams"][0];
        assert_eq!(u["name"], "app\"x");
        assert_eq!(u["sample_age_ms"], Value::Null);
        assert_eq!(u["w"], Value::Null);
        // no choices= in this mode: both null, and present
        assert_eq!((&u["choices"], &u["drawn"]), (&Value::Null, &Value::Null));
        assert!(u.get("choices").is_some() && u.get("drawn").is_some());
        let p = &u["peers"][0];
        assert_eq!(
            p["capacity"],
            json!({"cpu": 1.0, "mem": null, "net": 2.0, "disk": 3.0})
        );
        assert_eq!(p["cpu_ready_pct"], Value::Null);
        assert!(p.get("l").is_some() && p.get("share").is_none());
        assert_eq!(p["q"]["cpu"], Value::Null);
    }

    #[test]
    fn renders_shares_document() {
        let u = UpstreamStatus {
            name: "app".into(),
            mode: "shares".into(),
            balancing: "dwepc".into(),
            choices: Some("auto".into()),
            drawn: Some(2),
            reason: "active".into(),
            model: Fields(vec![
                (
                    "cost",
                    Field::MaybeResources(Some([120.0, f64::NAN, 2.5, f64::NAN])),
                ),
                ("rate", Field::Number(40.0)),
                ("guard_rejections", Field::Count(3)),
            ]),
            peers: vec![PeerStatus {
                in_flight: 4,
                model: Fields(vec![
                    ("share", Field::Number(0.25)),
                    ("target_share", Field::Number(0.2)),
                    ("limit", Field::Limit(9)),
                    (
                        "background",
                        Field::Resources([100.0, f64::NAN, 0.0, f64::NAN]),
                    ),
                    ("effective_cpu", Field::Number(3000.0)),
                ]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&render("0.1.0+abc", &[u], &[])).unwrap();
        assert_eq!(v["version"], "0.1.0+abc");
        let u = &v["upstreams"][0];
        assert_eq!(u["cost"]["cpu"], 120.0);
        assert_eq!(u["guard_rejections"], 3);
        assert_eq!((&u["choices"], &u["drawn"]), (&json!("auto"), &json!(2)));
        assert!(u.get("w").is_none());
        let p = &u["peers"][0];
        assert_eq!(
            (p["share"].as_f64(), p["limit"].as_u64()),
            (Some(0.25), Some(9))
        );
        assert_eq!(p["in_flight"], 4);
        assert_eq!(p["background"]["cpu"], 100.0);
        assert!(p.get("l").is_none());
        // no limit is null, as is an unknown share
        let v = serde_json::to_value(&PeerStatus {
            model: Shares.peer_fields(None, false),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((&v["limit"], &v["share"]), (&Value::Null, &Value::Null));
    }
}
