//! Why an upstream balances as it does ([`Reason`]), kept in its zone's
//! header: the policy and the collector write it, the log, the status page
//! and the Prometheus page say it.

/// Why the balancer is (not) using counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Reason {
    /// Counters drive the pick.
    Active = 0,
    /// No vSphere endpoint configured for this upstream.
    NoEndpoint = 1,
    /// No sample yet.
    NoSamples = 2,
    /// Not enough samples with request counts to fit W.
    TooFewSamples = 3,
    /// No traffic to learn W from.
    NoTraffic = 4,
    /// No node with counters / no resource with capacities.
    NoCounters = 5,
    /// The newest sample is older than the TTL.
    Stale = 6,
    /// vSphere cannot be reached or answers with errors.
    VsphereError = 7,
}

/// Every reason with its name on the status page and its text in the log:
/// the one table of them, in code order.
const REASONS: [(Reason, &str, &str); 8] = [
    (Reason::Active, "active", "balancing by ESXi counters"),
    (
        Reason::NoEndpoint,
        "no_endpoint",
        "no vSphere endpoint configured",
    ),
    (Reason::NoSamples, "no_samples", "no counter samples yet"),
    (
        Reason::TooFewSamples,
        "too_few_samples",
        "too few samples with request counts yet",
    ),
    (
        Reason::NoTraffic,
        "no_traffic",
        "no traffic to learn from yet",
    ),
    (
        Reason::NoCounters,
        "no_counters",
        "no server has usable counters and capacities",
    ),
    (
        Reason::Stale,
        "stale",
        "counters are stale (older than ttl)",
    ),
    (Reason::VsphereError, "vsphere_error", "vSphere errors"),
];

/// Every reason's name, in order (for the Prometheus exposition).
pub fn reason_names() -> impl Iterator<Item = &'static str> {
    REASONS.iter().map(|r| r.1)
}

impl Reason {
    fn entry(self) -> &'static (Reason, &'static str, &'static str) {
        &REASONS[self as usize]
    }

    /// Name shown on the status page.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// What it means, for the log.
    pub fn text(self) -> &'static str {
        self.entry().2
    }

    /// The reason a header word holds (an unknown code: no samples).
    pub(super) fn from_u64(x: u64) -> Reason {
        REASONS.get(x as usize).map_or(Reason::NoSamples, |e| e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_their_word() {
        for (i, (r, name, text)) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Reason::from_u64(i as u64), *r);
            assert_eq!((r.name(), r.text()), (*name, *text));
        }
        assert_eq!(Reason::from_u64(99), Reason::NoSamples);
    }
}
