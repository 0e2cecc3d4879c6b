//! The status document served by `dwepc_status`: plain data in, JSON out
//! (serde_json; NaN and infinities are written as `null`). Never holds
//! credentials (only endpoint names).

use crate::algo::{Res, RESOURCES};
use crate::shared::Mapping;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

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
    /// What the mode's model says of the peer.
    #[serde(flatten)]
    pub model: PeerModel,
}

/// The model's view of one peer, by mode.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum PeerModel {
    /// `mode=shares`.
    Shares(SharesPeer),
    /// `mode=paper` and `mode=wlc`.
    Paper(PaperPeer),
}

impl Default for PeerModel {
    fn default() -> Self {
        PeerModel::Paper(PaperPeer::default())
    }
}

/// Shares mode, per peer.
#[derive(Clone, Debug, Serialize)]
pub struct SharesPeer {
    /// The share in force (NaN when not in use).
    pub share: f64,
    /// The target share of the newest sample.
    pub target_share: f64,
    /// The in-flight limit (0 = none, shown as null).
    #[serde(serialize_with = "limit")]
    pub limit: u64,
    /// Use not explained by this balancer's requests.
    #[serde(serialize_with = "per_resource")]
    pub background: Res,
    /// CPU capacity after CPU ready.
    pub effective_cpu: f64,
}

impl Default for SharesPeer {
    fn default() -> Self {
        SharesPeer {
            share: f64::NAN,
            target_share: f64::NAN,
            limit: 0,
            background: [f64::NAN; 4],
            effective_cpu: f64::NAN,
        }
    }
}

/// Paper (and wlc) mode, per peer.
#[derive(Clone, Debug, Serialize)]
pub struct PaperPeer {
    /// Predicted headroom per resource.
    #[serde(serialize_with = "per_resource")]
    pub q: Res,
    /// Allocation Q·W for the current period; wlc mode: the weight (NaN
    /// when not in use).
    pub allocation: f64,
    /// Requests in the current period (V_m).
    pub v: u64,
    /// Remaining allocation L.
    pub l: f64,
}

impl Default for PaperPeer {
    fn default() -> Self {
        PaperPeer {
            q: [f64::NAN; 4],
            allocation: f64::NAN,
            v: 0,
            l: f64::NAN,
        }
    }
}

/// One upstream using dwepc.
#[derive(Clone, Debug, Default, Serialize)]
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
    /// Servers listed below, and how many of them have a VM.
    pub servers: u64,
    pub mapped: u64,
    /// What the mode's model says of the upstream.
    #[serde(flatten)]
    pub model: UpstreamModel,
    /// Peers, primaries first.
    pub peers: Vec<PeerStatus>,
}

/// The model's view of one upstream, by mode.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum UpstreamModel {
    /// `mode=shares`.
    Shares {
        /// Cost of one request per resource.
        #[serde(serialize_with = "maybe_per_resource")]
        cost: Option<Res>,
        /// Completed requests per second in the samples.
        rate: f64,
        /// Requests answered at once by the overload guard.
        guard_rejections: u64,
    },
    /// `mode=paper` and `mode=wlc`.
    Paper {
        /// The weight vector W (per resource).
        #[serde(serialize_with = "maybe_per_resource")]
        w: Option<Res>,
    },
}

impl Default for UpstreamModel {
    fn default() -> Self {
        UpstreamModel::Paper { w: None }
    }
}

/// A per-resource vector as `{"cpu":..,"mem":..,"net":..,"disk":..}`
/// (serde_json writes NaN as null).
fn per_resource<S: Serializer>(r: &Res, s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(RESOURCES.len()))?;
    for (name, x) in RESOURCES.iter().zip(r) {
        m.serialize_entry(name, x)?;
    }
    m.end()
}

fn maybe_per_resource<S: Serializer>(r: &Option<Res>, s: S) -> Result<S::Ok, S::Error> {
    match r {
        Some(r) => per_resource(r, s),
        None => s.serialize_none(),
    }
}

fn limit<S: Serializer>(l: &u64, s: S) -> Result<S::Ok, S::Error> {
    match l {
        0 => s.serialize_none(),
        l => s.serialize_u64(*l),
    }
}

/// The whole document: `{"upstreams":[...]}` and a newline.
pub fn render(ups: &[UpstreamStatus]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        upstreams: &'a [UpstreamStatus],
    }
    match serde_json::to_string(&Doc { upstreams: ups }) {
        Ok(doc) => doc + "\n",
        Err(e) => render_error(&e.to_string()),
    }
}

/// An error document: `{"error": msg}` and a newline.
pub fn render_error(msg: &str) -> String {
    format!("{}\n", serde_json::json!({ "error": msg }))
}

/// What the snapshot needs of one peer slot besides the zone.
#[derive(Clone, Debug)]
pub struct PeerMeta<'a> {
    /// `ip:port` (a spare slot: its server's).
    pub name: &'a str,
    /// The `server` directive's address as written.
    pub server: &'a str,
    pub backup: bool,
    /// A spare slot of a `resolve` server: shown only while an address
    /// holds it, under that address.
    pub spare: bool,
}

/// What the snapshot needs of one upstream besides the zone.
#[derive(Clone, Debug)]
pub struct UpstreamMeta<'a> {
    pub name: &'a str,
    pub conf: &'a crate::conf::UpstreamConf,
    /// The endpoint's name (None: no counters for this upstream).
    pub vsphere: Option<&'a str>,
    pub peers: Vec<PeerMeta<'a>>,
}

/// The status of one upstream at `now_ms` from its configuration and its
/// zone (`None` before the zone exists).
pub fn snapshot(
    u: &UpstreamMeta<'_>,
    shared: Option<crate::shared::Shared<'_>>,
    now_ms: u64,
) -> UpstreamStatus {
    let (window, sample_end) = shared.map(|s| s.window()).unwrap_or((0, 0));
    let usable = shared.is_some_and(|s| s.usable(now_ms));
    let reason = match shared {
        _ if u.vsphere.is_none() => "no_endpoint",
        Some(s) => s.reason(now_ms).name(),
        None => "no_zone",
    };
    let nan4 = [f64::NAN; 4];
    let peers = u
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let name = if p.spare {
                let s = shared?;
                if s.slot_ident(i) == 0 {
                    return None;
                }
                s.slot_addr(i)
                    .map_or_else(|| p.name.to_string(), |a| a.to_string())
            } else {
                p.name.to_string()
            };
            let info = shared.map(|s| s.peer_info(i));
            let when_usable = |f: fn(&crate::shared::PeerInfo) -> f64| match &info {
                Some(x) if usable => f(x),
                _ => f64::NAN,
            };
            let model = if u.conf.mode == crate::conf::Mode::Shares {
                PeerModel::Shares(SharesPeer {
                    share: when_usable(|x| x.share),
                    target_share: info.map_or(f64::NAN, |x| x.target_share),
                    limit: match &info {
                        Some(x) if usable => x.limit,
                        _ => 0,
                    },
                    background: info.map_or(nan4, |x| x.background),
                    effective_cpu: info.map_or(f64::NAN, |x| x.effective_cpu),
                })
            } else {
                PeerModel::Paper(PaperPeer {
                    q: info.map_or(nan4, |x| x.q),
                    allocation: when_usable(|x| x.allocation),
                    v: info.map_or(0, |x| x.v),
                    l: when_usable(|x| x.l),
                })
            };
            let (mapping, vm) = shared.map_or((Mapping::Pending, None), |s| s.mapping(i));
            Some(PeerStatus {
                name,
                server: p.server.to_string(),
                backup: p.backup,
                vm,
                mapping,
                capacity: info.map_or(nan4, |x| x.capacity),
                usage: info.map_or(nan4, |x| x.usage),
                requests: info.map_or(0, |x| x.total),
                in_flight: info.map_or(0, |x| x.in_flight),
                failed: info.map_or(0, |x| x.failed),
                cpu_ready_pct: info.map_or(f64::NAN, |x| x.cpu_ready_pct),
                model,
            })
        })
        .collect::<Vec<PeerStatus>>();
    UpstreamStatus {
        servers: peers.len() as u64,
        mapped: peers
            .iter()
            .filter(|p| p.mapping == Mapping::Mapped)
            .count() as u64,
        name: u.name.to_string(),
        mode: u.conf.mode.name().into(),
        balancing: if usable { "dwepc" } else { "round_robin" }.into(),
        reason: reason.into(),
        vsphere: u.vsphere.map(str::to_string),
        window,
        window_size: u.conf.window as u64,
        sample_age_ms: (sample_end > 0).then(|| now_ms.saturating_sub(sample_end)),
        model: if u.conf.mode == crate::conf::Mode::Shares {
            UpstreamModel::Shares {
                cost: shared
                    .map(|s| s.cost())
                    .filter(|c| c.iter().any(|x| x.is_finite())),
                rate: shared.map_or(f64::NAN, |s| s.rate()),
                guard_rejections: shared.map_or(0, |s| s.guard_rejections()),
            }
        } else {
            UpstreamModel::Paper {
                w: shared.and_then(|s| s.w()),
            }
        },
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reads_the_zone_and_hides_free_spare_slots() {
        use crate::shared::{words, Shared};
        use std::sync::atomic::AtomicU64;
        let conf = crate::conf::UpstreamConf::default();
        let peer = |name: &'static str, spare: bool| PeerMeta {
            name,
            server: if spare { "app.test:80" } else { name },
            backup: false,
            spare,
        };
        let meta = UpstreamMeta {
            name: "app",
            conf: &conf,
            vsphere: Some("vc"),
            peers: vec![
                peer("127.0.0.1:80", false),
                peer("app.test:80", true),
                peer("app.test:80", true),
            ],
        };
        // no zone yet
        let st = snapshot(&meta, None, 1000);
        assert_eq!(
            (st.reason.as_str(), st.balancing.as_str()),
            ("no_zone", "round_robin")
        );
        assert_eq!(st.peers.len(), 1);
        let z: Vec<AtomicU64> = (0..words(3)).map(|_| AtomicU64::new(0)).collect();
        let sh = Shared::new(&z, 3).unwrap();
        sh.init(1);
        let a = "127.0.0.2:80".parse().unwrap();
        assert_eq!(sh.claim(&[1, 2], 7, Some(a), |_| false), Some(1));
        sh.count(1);
        sh.apply_shares(&[0.5, 0.5, 0.0], &[4, 4, 0], 5000, 1000);
        let st = snapshot(&meta, Some(sh), 2000);
        assert_eq!(st.balancing, "dwepc");
        let names: Vec<&str> = st.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:80", "127.0.0.2:80"]);
        assert_eq!(st.peers[1].server, "app.test:80");
        let shares = |p: &PeerStatus| match &p.model {
            PeerModel::Shares(s) => s.clone(),
            m => panic!("{m:?}"),
        };
        assert_eq!(
            (
                st.peers[1].requests,
                st.peers[1].in_flight,
                shares(&st.peers[1]).limit
            ),
            (1, 1, 4)
        );
        assert!((shares(&st.peers[1]).share - 0.5).abs() < 1e-9);
        // stale: shares are not shown as in force
        let st = snapshot(&meta, Some(sh), 9000);
        assert_eq!(st.balancing, "round_robin");
        assert!(shares(&st.peers[0]).share.is_nan() && shares(&st.peers[0]).limit == 0);
        // no endpoint wins over every other reason
        let meta = UpstreamMeta {
            vsphere: None,
            ..meta
        };
        assert_eq!(snapshot(&meta, Some(sh), 2000).reason, "no_endpoint");
    }
    use serde_json::{json, Value};

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
        assert_eq!(p["q"]["cpu"], Value::Null);
    }

    #[test]
    fn renders_shares_document() {
        let u = UpstreamStatus {
            name: "app".into(),
            mode: "shares".into(),
            balancing: "dwepc".into(),
            reason: "active".into(),
            model: UpstreamModel::Shares {
                cost: Some([120.0, f64::NAN, 2.5, f64::NAN]),
                rate: 40.0,
                guard_rejections: 3,
            },
            peers: vec![PeerStatus {
                in_flight: 4,
                model: PeerModel::Shares(SharesPeer {
                    share: 0.25,
                    target_share: 0.2,
                    limit: 9,
                    background: [100.0, f64::NAN, 0.0, f64::NAN],
                    effective_cpu: 3000.0,
                }),
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
        // no limit is null, as is an unknown share
        let v = serde_json::to_value(&PeerStatus {
            model: PeerModel::Shares(SharesPeer::default()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((&v["limit"], &v["share"]), (&Value::Null, &Value::Null));
    }
}
