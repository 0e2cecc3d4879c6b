//! What decided each pick of one request, for the access log: the
//! variables `$dwepc_decision` and `$dwepc_share`, one value per try in
//! the order of nginx's `$upstream_addr` ("counters, round_robin"), so a
//! log line tells an overload guard's answer from a backend's failure and
//! a pick on counters from a fallback. Kept in the request's own data:
//! a few bytes, no allocation until the log asks.

use crate::zone::weight_share;

/// What decided one pick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The mode's comparison on what the counters published.
    Counters,
    /// Response times on `weight=`: the modes that read no counters, or
    /// the default's stand-in while counters are not usable.
    ResponseTimes,
    /// nginx's weighted round robin (no usable counters, one server, or a
    /// server without a slot).
    RoundRobin,
    /// No server taken: every one was at its in-flight limit (the
    /// overload guard answers).
    Guard,
    /// Observe mode: nginx's least_conn or round robin picked, dwepc only
    /// computed what it would do.
    Observe,
}

impl Decision {
    /// The word the access log shows.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Counters => "counters",
            Decision::ResponseTimes => "response_times",
            Decision::RoundRobin => "round_robin",
            Decision::Guard => "guard",
            Decision::Observe => "observe",
        }
    }
}

/// Tries a request remembers (nginx's `proxy_next_upstream_tries` is
/// rarely above a few; later tries are not shown).
pub const MAX_TRIES: usize = 8;

/// The decisions of one request's picks, in order.
#[derive(Clone, Copy, Debug, Default)]
pub struct Decisions {
    n: u8,
    what: [Option<Decision>; MAX_TRIES],
    /// The chosen server's share at the pick, as the zone's
    /// [`share_weight`](crate::zone::share_weight) (0: none).
    share: [u32; MAX_TRIES],
}

impl Decisions {
    /// Remembers one pick: what decided it and the chosen server's share
    /// weight (0 when the pick had none).
    #[inline]
    pub fn record(&mut self, d: Decision, share_weight: u32) {
        let i = self.n as usize;
        if i < MAX_TRIES {
            self.what[i] = Some(d);
            self.share[i] = share_weight;
            self.n += 1;
        }
    }

    /// True if the last pick was the overload guard's answer.
    pub fn guarded(&self) -> bool {
        self.last() == Some(Decision::Guard)
    }

    /// The last pick's decision.
    pub fn last(&self) -> Option<Decision> {
        self.what[(self.n as usize).checked_sub(1)?]
    }

    /// True before any pick.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// `$dwepc_decision`: each pick's word, comma-separated.
    pub fn decisions(&self) -> String {
        self.join(|i| self.what[i].map_or("-", Decision::name).to_string())
    }

    /// `$dwepc_share`: the chosen server's share at each pick, to three
    /// places ("-" for a pick without one).
    pub fn shares(&self) -> String {
        self.join(|i| match self.share[i] {
            0 => "-".to_string(),
            w => format!("{:.3}", weight_share(w)),
        })
    }

    fn join(&self, f: impl Fn(usize) -> String) -> String {
        (0..self.n as usize).map(f).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zone::share_weight;

    #[test]
    fn each_try_is_listed_in_order() {
        let mut d = Decisions::default();
        assert!(d.is_empty() && !d.guarded());
        assert_eq!(d.decisions(), "");
        d.record(Decision::Counters, share_weight(0.25));
        assert_eq!(
            (d.decisions().as_str(), d.shares().as_str()),
            ("counters", "0.250")
        );
        d.record(Decision::RoundRobin, 0);
        d.record(Decision::Guard, 0);
        assert!(d.guarded());
        assert_eq!(d.decisions(), "counters, round_robin, guard");
        assert_eq!(d.shares(), "0.250, -, -");
        // more tries than kept: the first ones stay
        for _ in 0..20 {
            d.record(Decision::ResponseTimes, 0);
        }
        assert_eq!(d.decisions().matches(", ").count(), MAX_TRIES - 1);
        assert!(d.guarded() == (d.last() == Some(Decision::Guard)));
    }
}
