//! `mode=shares`, the default: counters steer, in-flight counts pick.
//! Once per sample the model ([`model`], its arithmetic in [`math`]) sets
//! a share per peer from the cost of one request, each VM's background
//! use and its effective capacity; per request the pick takes the least
//! in flight per share, below an in-flight limit per peer (the overload
//! guard).

pub mod math;
pub mod model;

pub use model::{
    ShareParams, ShareState, SharesModel, COST_MIN_REQUESTS, DEFAULT_INFLIGHT_PER_VCPU,
    DEFAULT_WINDOW,
};

use super::view::{Field, Fields, Metric, Part, Scope};
use super::{Comparison, Mode, Pairing, PeerFacts, Pick, Policy, Sample, Tuning, MAX_WINDOW};
use crate::resources::{Res, R};
use crate::zone::{PeerInfo, Reason, UpstreamZone};

/// Default `ttl`, in poll intervals: shares move slowly and the pick uses
/// in-flight counts, so the last shares stay good for minutes (a vCenter
/// restart).
pub const TTL_PERIODS: u64 = 10;
/// The cost window covers at least this long by default.
pub const WINDOW_MS: u64 = 60_000;
/// By default the shares move half of the way to the target in this long
/// (`step` = 0.5 per 20-s sample).
pub const HALF_LIFE_MS: u64 = 20_000;

/// The shares mode.
pub struct Shares;

impl Mode for Shares {
    fn name(&self) -> &'static str {
        "shares"
    }

    fn options(&self) -> &'static [&'static str] {
        &["pick", "choices", "inflight", "floor", "step", "slow_start"]
    }

    fn defaults(&self, t: &mut Tuning, interval_ms: u64, written: &dyn Fn(&str) -> bool) -> u64 {
        // defaults in time, whatever the interval: a minute of samples for
        // the cost, and half of the way to the target every 20 s
        if !written("window") {
            t.window = (WINDOW_MS.div_ceil(interval_ms) as usize).clamp(DEFAULT_WINDOW, MAX_WINDOW);
        }
        if !written("step") {
            t.step = (1.0 - 0.5f64.powf(interval_ms as f64 / HALF_LIFE_MS as f64)).clamp(0.01, 1.0);
        }
        // every peer compared in a list of up to 64, eight drawn above
        if !written("choices") {
            t.choices = crate::policy::pick::Choices::Auto;
        }
        TTL_PERIODS * interval_ms
    }

    fn policy(&self, t: &Tuning, peers: &[PeerFacts], zone: UpstreamZone<'_>) -> Box<dyn Policy> {
        let cost = zone.cost();
        let model = SharesModel::new(
            ShareParams {
                window: t.window,
                floor: t.floor,
                step: t.step,
                inflight_per_vcpu: t.inflight_per_vcpu,
            },
            peers.to_vec(),
        )
        // carried over from before a reload or from another holder
        .resume(
            zone.shares(),
            cost.iter().any(|x| x.is_finite()).then_some(cost),
        );
        Box::new(SharesPolicy { model })
    }

    fn comparison(&self, t: &Tuning) -> Comparison {
        match t.pick {
            Pick::LeastConn => Comparison::LeastPerShare { plus_one: false },
            Pick::ExpectedDelay => Comparison::LeastPerShare { plus_one: true },
            Pick::LeastTime => Comparison::LeastTime { per_share: true },
        }
    }

    fn upstream_fields(&self, zone: Option<UpstreamZone<'_>>) -> Fields {
        Fields(vec![
            (
                "cost",
                Field::MaybeResources(
                    zone.map(|z| z.cost())
                        .filter(|c| c.iter().any(|x| x.is_finite())),
                ),
            ),
            ("rate", Field::Number(zone.map_or(f64::NAN, |z| z.rate()))),
            (
                "guard_rejections",
                Field::Count(zone.map_or(0, |z| z.guard_rejections())),
            ),
        ])
    }

    fn peer_fields(&self, info: Option<&PeerInfo>, usable: bool) -> Fields {
        let live = info.filter(|_| usable);
        Fields(vec![
            ("share", Field::Number(live.map_or(f64::NAN, |x| x.share))),
            (
                "target_share",
                Field::Number(info.map_or(f64::NAN, |x| x.target_share)),
            ),
            ("limit", Field::Limit(live.map_or(0, |x| x.limit))),
            (
                "background",
                Field::Resources(info.map_or([f64::NAN; R], |x| x.background)),
            ),
            (
                "effective_cpu",
                Field::Number(info.map_or(f64::NAN, |x| x.effective_cpu)),
            ),
        ])
    }

    fn metrics(&self) -> &'static [Metric] {
        &METRICS
    }
}

/// The Prometheus families of the shares mode.
static METRICS: [Metric; 10] = [
    Metric {
        scope: Scope::Upstream,
        field: "cost",
        part: Part::Resource(0),
        scale: 1.0,
        name: "dwepc_upstream_request_cpu_megahertz_seconds",
        kind: "gauge",
        help: "Shares mode: CPU work of one request (MHz x s).",
    },
    Metric {
        scope: Scope::Upstream,
        field: "cost",
        part: Part::Resource(2),
        scale: 1024.0,
        name: "dwepc_upstream_request_network_bytes",
        kind: "gauge",
        help: "Shares mode: network bytes of one request.",
    },
    Metric {
        scope: Scope::Upstream,
        field: "cost",
        part: Part::Resource(3),
        scale: 1024.0,
        name: "dwepc_upstream_request_disk_bytes",
        kind: "gauge",
        help: "Shares mode: disk bytes of one request.",
    },
    Metric {
        scope: Scope::Upstream,
        field: "rate",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_upstream_sampled_requests_per_second",
        kind: "gauge",
        help: "Shares mode: completed requests per second in the newest samples.",
    },
    Metric {
        scope: Scope::Upstream,
        field: "guard_rejections",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_upstream_guard_rejections_total",
        kind: "counter",
        help: "Shares mode: requests answered at once because every server was at its in-flight limit.",
    },
    Metric {
        scope: Scope::Peer,
        field: "share",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_peer_share_ratio",
        kind: "gauge",
        help: "Shares mode: the server's share of the requests in force.",
    },
    Metric {
        scope: Scope::Peer,
        field: "target_share",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_peer_target_share_ratio",
        kind: "gauge",
        help: "Shares mode: the server's target share from the newest sample.",
    },
    Metric {
        scope: Scope::Peer,
        field: "limit",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_peer_in_flight_limit",
        kind: "gauge",
        help: "Shares mode: the server's in-flight limit (absent: none).",
    },
    Metric {
        scope: Scope::Peer,
        field: "background",
        part: Part::Resource(0),
        scale: 1.0,
        name: "dwepc_peer_background_cpu_megahertz",
        kind: "gauge",
        help: "Shares mode: CPU use of the VM not explained by this balancer's requests.",
    },
    Metric {
        scope: Scope::Peer,
        field: "effective_cpu",
        part: Part::Whole,
        scale: 1.0,
        name: "dwepc_peer_effective_cpu_megahertz",
        kind: "gauge",
        help: "Shares mode: CPU capacity after CPU ready.",
    },
];

/// The shares mode's policy: its model, and what it publishes.
struct SharesPolicy {
    model: SharesModel,
}

impl Policy for SharesPolicy {
    fn pairing(&self) -> Pairing {
        Pairing {
            sent: false,
            done: true,
            failed: true,
        }
    }

    fn set_peer(&mut self, i: usize, facts: PeerFacts) {
        self.model.set_node(i, facts);
    }

    fn push(&mut self, sample: Sample) -> bool {
        self.model.push(sample)
    }

    fn update(&mut self, zone: UpstreamZone<'_>, ttl_ms: u64, now_ms: u64) {
        let m = &mut self.model;
        zone.set_window(m.window_len(), m.newest_ms().unwrap_or(0));
        let st = m.update();
        let peers: Vec<(f64, Res, f64)> = (0..m.len())
            .map(|p| {
                (
                    m.target().map_or(f64::NAN, |t| t[p]),
                    m.background(p),
                    m.effective_capacity(p)[0],
                )
            })
            .collect();
        zone.set_model(m.cost(), m.rate(), &peers);
        for p in 0..m.len() {
            self.publish_peer(zone, p);
        }
        let m = &self.model;
        match m.shares() {
            Some(s) => {
                let valid_until = m.newest_ms().unwrap_or(0) + ttl_ms;
                zone.apply_shares(s, &m.limits(), valid_until, now_ms);
            }
            None => zone.disable(reason_of(st)),
        }
    }

    fn publish_peer(&self, zone: UpstreamZone<'_>, i: usize) {
        zone.set_peer_model(i, [f64::NAN; R], self.model.has_counters(i));
    }

    fn summary(&self, zone: UpstreamZone<'_>) -> String {
        let shares: Vec<String> = (0..zone.len())
            .map(|i| format!("{:.3}", zone.share(i).0))
            .collect();
        format!("shares {}", shares.join("/"))
    }
}

/// Why the model gives no shares.
fn reason_of(st: ShareState) -> Reason {
    match st {
        ShareState::NoSamples => Reason::NoSamples,
        ShareState::TooFewSamples => Reason::TooFewSamples,
        ShareState::NoTraffic => Reason::NoTraffic,
        ShareState::NoCounters | ShareState::Active => Reason::NoCounters,
    }
}
