//! Balancing modes, each behind one interface.
//!
//! A mode is two things:
//!
//! * a [`Mode`]: what the configuration, the request path and the status
//!   pages need of it — its name and options, its defaults, the
//!   [`Comparison`] its pick makes, the fields it shows and their
//!   Prometheus families;
//! * a [`Policy`]: its model of one upstream on the collector thread,
//!   which the collector feeds with each peer's facts and each
//!   [`Sample`], and which publishes into the upstream's zone what its
//!   pick compares and what the status pages show.
//!
//! Nothing outside this folder (and the directive parser, which looks the
//! mode up by name) asks which mode an upstream uses. To add a mode: one
//! file (or folder) here implementing both traits, and one line in
//! [`MODES`].
//!
//! | mode | model | pick |
//! |---|---|---|
//! | [`shares`] (default) | cost per request, background, CPU ready → a share per peer | least in flight per share |
//! | [`paper`] | the DWEPC paper's window and weight fit → an allocation per period | largest remaining allocation |
//! | [`wlc`] | the LVS paper's dynamic weights over the paper model's window | least in flight per weight |
//! | [`least_time`](response_times::LEAST_TIME) | none (counters only for the status page) | least (in flight + 1) × response time ÷ weight |
//! | [`random_two`](response_times::RANDOM_TWO) | none (as least_time) | the same, of two peers drawn at random |

pub mod decision;
pub mod latency;
pub mod paper;
pub mod pick;
pub mod response_times;
pub mod shares;
pub mod slow_start;
pub mod view;
pub mod window;
pub mod wlc;

pub use pick::{Compare, Comparison, Local, Observe, Pick, Scan};
pub use view::{Field, Fields, Metric};

use crate::resources::{Res, R};
use crate::zone::{PeerInfo, UpstreamZone};

/// Every mode, the default first. Adding a mode: one line here.
pub static MODES: [&dyn Mode; 5] = [
    &shares::Shares,
    &paper::Paper,
    &wlc::Wlc,
    &response_times::LEAST_TIME,
    &response_times::RANDOM_TWO,
];

/// The mode used when `dwepc` names none.
pub fn default_mode() -> &'static dyn Mode {
    MODES[0]
}

/// The mode named `name` in `dwepc mode=`.
pub fn mode_named(name: &str) -> Option<&'static dyn Mode> {
    MODES.iter().copied().find(|m| m.name() == name)
}

/// `"a", "b" or "c"`: the names of `modes`, for messages.
pub fn names_of<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = names.into_iter().map(|n| format!("\"{n}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// Parameters of `dwepc` that only some modes take ([`Mode::options`]).
pub const MODE_OPTIONS: [&str; 6] = ["pick", "choices", "inflight", "floor", "step", "slow_start"];

/// Largest window accepted.
pub const MAX_WINDOW: usize = 1024;

/// A mode's tuning, from `dwepc`'s parameters and the mode's defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tuning {
    /// Samples kept (the paper's m; the shares mode's cost window).
    pub window: usize,
    /// Paper mode: samples with request counts needed for a fit.
    pub min_samples: usize,
    /// Shares mode: the per-request comparison.
    pub pick: Pick,
    /// Shares mode: how many peers it compares (`choices=`).
    pub choices: pick::Choices,
    /// Shares mode: in-flight limit per vCPU, spread by share (0 = off).
    pub inflight_per_vcpu: f64,
    /// Shares mode: smallest share of a node.
    pub floor: f64,
    /// Shares mode: fraction of the way to the target moved per sample.
    pub step: f64,
    /// The modes that compare in-flight requests: a returning or added
    /// server's ramp-up time, ms (0 = off; [`slow_start`]).
    pub slow_start_ms: u64,
}

/// Default window of the paper and wlc modes (the paper's m).
pub const DEFAULT_WINDOW: usize = 20;

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            window: DEFAULT_WINDOW,
            min_samples: 2,
            pick: Pick::LeastTime,
            choices: pick::Choices::All,
            inflight_per_vcpu: shares::DEFAULT_INFLIGHT_PER_VCPU,
            floor: 0.01,
            step: 0.5,
            slow_start_ms: 0,
        }
    }
}

/// A balancing mode: what the configuration, the request path and the
/// status pages need of it. One static value per mode, listed in
/// [`MODES`].
pub trait Mode: Sync {
    /// Its name in `dwepc mode=`.
    fn name(&self) -> &'static str;

    /// Which of [`MODE_OPTIONS`] it takes (the parser refuses the others).
    fn options(&self) -> &'static [&'static str] {
        &[]
    }

    /// Sets its defaults in `t` for what `dwepc` did not write
    /// (`written(key)`), at a poll interval of `interval_ms`; returns its
    /// default `ttl` in ms.
    fn defaults(&self, t: &mut Tuning, interval_ms: u64, written: &dyn Fn(&str) -> bool) -> u64;

    /// The policy the collector runs for an upstream of `peers`, resumed
    /// from what `zone` holds (a reload, or another worker that polled).
    fn policy(&self, t: &Tuning, peers: &[PeerFacts], zone: UpstreamZone<'_>) -> Box<dyn Policy>;

    /// How its pick compares peers.
    fn comparison(&self, t: &Tuning) -> Comparison;

    /// Its fields of an upstream, from the zone (`None`: no zone yet).
    fn upstream_fields(&self, zone: Option<UpstreamZone<'_>>) -> Fields;

    /// Its fields of one peer, from what the zone holds of it (`usable`:
    /// counters drive the pick now).
    fn peer_fields(&self, info: Option<&PeerInfo>, usable: bool) -> Fields;

    /// The Prometheus families that show its fields.
    fn metrics(&self) -> &'static [Metric];
}

impl PartialEq for dyn Mode {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl std::fmt::Debug for dyn Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A mode's model of one upstream, on the collector thread.
pub trait Policy {
    /// The request counts it pairs with each sample's period.
    fn pairing(&self) -> Pairing;

    /// Peer `i`'s facts changed (an inventory read, a `resolve` address
    /// took or left its slot).
    fn set_peer(&mut self, i: usize, facts: PeerFacts);

    /// Adds a sample; false (nothing changed) for a duplicate, one older
    /// than a full window, or the wrong size.
    fn push(&mut self, sample: Sample) -> bool;

    /// Recomputes from its window after new samples and publishes into
    /// `zone` what the pick compares (valid until the newest sample plus
    /// `ttl_ms`) and what the status pages show, or falls back to round
    /// robin with the reason.
    fn update(&mut self, zone: UpstreamZone<'_>, ttl_ms: u64, now_ms: u64);

    /// Publishes what it knows of peer `i` (after [`Policy::set_peer`]).
    fn publish_peer(&self, zone: UpstreamZone<'_>, i: usize);

    /// What the log says while counters drive the pick, e.g.
    /// `shares 0.2/0.8`.
    fn summary(&self, zone: UpstreamZone<'_>) -> String;
}

/// The request counts a policy pairs with a sample's period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    /// Requests sent.
    pub sent: bool,
    /// Requests that ended (failed ones included).
    pub done: bool,
    /// Requests that failed.
    pub failed: bool,
}

/// One peer's facts that do not come with samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerFacts {
    /// Usable capacity per resource (NaN = unknown).
    pub capacity: Res,
    /// vCPUs of the VM (NaN = unknown).
    pub vcpus: f64,
    /// Configured `weight=`.
    pub weight: f64,
    /// Backup server (its own group).
    pub backup: bool,
    /// In nginx's list: false for a spare slot of a `resolve` server that
    /// no address holds.
    pub present: bool,
}

impl Default for PeerFacts {
    fn default() -> Self {
        PeerFacts {
            capacity: [f64::NAN; R],
            vcpus: f64::NAN,
            weight: 1.0,
            backup: false,
            present: true,
        }
    }
}

/// One sample: what every peer's VM used during one period, and what this
/// balancer did with each peer during that same period.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// End of the measured period, ms (the local clock).
    pub end_ms: u64,
    /// Length of the period, ms.
    pub period_ms: u64,
    /// Usage per peer (MHz, MB, KB/s, KB/s); NaN = missing.
    pub usage: Vec<Res>,
    /// `cpu.ready.summation` per peer in the period, ms summed over vCPUs;
    /// NaN = not reported (empty: none).
    pub ready_ms: Vec<f64>,
    /// Requests sent per peer in the period (`None`: unknown, the period
    /// began before this process kept counts, or not paired).
    pub sent: Option<Vec<f64>>,
    /// Requests that ended per peer, failures included (as `sent`).
    pub done: Option<Vec<f64>>,
    /// Of those, requests that failed (as `sent`).
    pub failed: Option<Vec<f64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_found_by_name_and_listed_for_messages() {
        assert_eq!(default_mode().name(), "shares");
        assert_eq!(mode_named("wlc").map(|m| m.name()), Some("wlc"));
        assert!(mode_named("magic").is_none());
        assert_eq!(
            names_of(MODES.iter().map(|m| m.name())),
            "\"shares\", \"paper\", \"wlc\", \"least_time\" or \"random_two\""
        );
        assert_eq!(names_of(["a"]), "\"a\"");
        // every option some mode takes is one the parser knows
        for m in MODES {
            assert!(m.options().iter().all(|o| MODE_OPTIONS.contains(o)));
        }
    }
}
