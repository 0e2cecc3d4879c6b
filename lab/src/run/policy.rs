//! The balancing policies compared side by side, and the upstream block
//! each one configures.

/// Balancing policies compared side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// nginx round robin, no weights.
    Rr,
    /// nginx weighted round robin with capacity weights (the paper's baseline).
    Wrr,
    /// nginx least_conn.
    Lc,
    /// nginx least_conn with capacity weights (what an expert configures).
    LcW,
    /// nginx random two least_conn.
    Random2,
    /// The dynamic WLC of She Peng, "LVS集群加权最小连接调度算法的研究"
    /// ("Research on the weighted least-connection scheduling algorithm of
    /// LVS clusters"), Computer & Digital Engineering, 2019 no. 4; as
    /// `dwepc mode=wlc`.
    DynWlc,
    /// dwepc, paper mode.
    Paper,
    /// dwepc, shares mode with `pick=least_conn` (the least in flight per
    /// share; the default before `pick=least_time`).
    Dwepc,
    /// dwepc shares mode with `pick=expected_delay`.
    DwepcSed,
    /// dwepc shares mode with `pick=least_time`: shares per response time
    /// (the default).
    DwepcTime,
    /// [`Policy::DwepcTime`] with `choices=2`: each pick compares two peers
    /// drawn by share instead of every peer.
    DwepcTimeDrawn,
    /// [`Policy::DwepcTime`] with `choices=4`.
    DwepcTimeDrawn4,
    /// [`Policy::DwepcTime`] with `choices=8`.
    DwepcTimeDrawn8,
    /// [`Policy::DwepcTime`] with `choices=all`: every peer compared at
    /// any size (the default draws eight above 64 peers).
    DwepcTimeScan,
    /// `dwepc mode=least_time` with capacity weights: NGINX Plus's
    /// least_time ((in-flight + 1) × peak-EWMA response time ÷ weight), the
    /// least_time-class baseline.
    LeastTime,
    /// `dwepc mode=random_two` with capacity weights: the same cost, of two
    /// peers drawn at random (Linkerd's power of two choices over
    /// peak-EWMA), the P2C baseline.
    RandomTwo,
    /// [`Policy::DwepcTime`] with `slow_start=30s`.
    DwepcTimeSlow,
    /// [`Policy::DwepcTime`] reading the counters through the monitoring
    /// pipeline: vmware_exporter reading the stack's vCenter, one
    /// Prometheus scraping it once per period, every frontend's
    /// `dwepc_prometheus` reading Prometheus (instead of each frontend
    /// polling vCenter).
    DwepcTimeProm,
    /// [`Policy::LeastTime`] with `slow_start=30s`.
    LeastTimeSlow,
    /// The limit of the weighted-least-connections family: nginx's
    /// least_conn whose weights are the true usable capacity (the ideal
    /// split the lab computes from what it did to each VM), rewritten and
    /// reloaded the moment a scenario's event changes it. Lab-only: the
    /// lab knows what no balancer can.
    Oracle,
}

impl Policy {
    pub const ALL: [Policy; 20] = [
        Policy::Rr,
        Policy::Wrr,
        Policy::Lc,
        Policy::LcW,
        Policy::Random2,
        Policy::DynWlc,
        Policy::Paper,
        Policy::Dwepc,
        Policy::DwepcSed,
        Policy::DwepcTime,
        Policy::DwepcTimeDrawn,
        Policy::DwepcTimeDrawn4,
        Policy::DwepcTimeDrawn8,
        Policy::DwepcTimeScan,
        Policy::LeastTime,
        Policy::RandomTwo,
        Policy::DwepcTimeSlow,
        Policy::DwepcTimeProm,
        Policy::LeastTimeSlow,
        Policy::Oracle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::Rr => "round_robin",
            Policy::Wrr => "weighted_rr",
            Policy::Lc => "least_conn",
            Policy::LcW => "weighted_least_conn",
            Policy::Random2 => "random2_least_conn",
            Policy::DynWlc => "dynamic_wlc",
            Policy::Paper => "dwepc_paper",
            Policy::Dwepc => "dwepc",
            Policy::DwepcSed => "dwepc_expected_delay",
            Policy::DwepcTime => "dwepc_least_time",
            Policy::DwepcTimeDrawn => "dwepc_least_time_drawn",
            Policy::DwepcTimeDrawn4 => "dwepc_least_time_drawn4",
            Policy::DwepcTimeDrawn8 => "dwepc_least_time_drawn8",
            Policy::DwepcTimeScan => "dwepc_least_time_scan",
            Policy::LeastTime => "least_time",
            Policy::RandomTwo => "random_two",
            Policy::DwepcTimeSlow => "dwepc_least_time_slow_start",
            Policy::DwepcTimeProm => "dwepc_least_time_prometheus",
            Policy::LeastTimeSlow => "least_time_slow_start",
            Policy::Oracle => "oracle",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Policy::Rr => "rr",
            Policy::Wrr => "wrr",
            Policy::Lc => "lc",
            Policy::LcW => "lcw",
            Policy::Random2 => "r2",
            Policy::DynWlc => "dwlc",
            Policy::Paper => "paper",
            Policy::Dwepc => "dwepc",
            Policy::DwepcSed => "sed",
            Policy::DwepcTime => "hyb",
            Policy::DwepcTimeDrawn => "hybd",
            Policy::DwepcTimeDrawn4 => "hybd4",
            Policy::DwepcTimeDrawn8 => "hybd8",
            Policy::DwepcTimeScan => "hyba",
            Policy::LeastTime => "lt",
            Policy::RandomTwo => "p2c",
            Policy::DwepcTimeSlow => "hybss",
            Policy::DwepcTimeProm => "hybp",
            Policy::LeastTimeSlow => "ltss",
            Policy::Oracle => "oracle",
        }
    }

    pub fn parse(s: &str) -> Option<Policy> {
        Policy::ALL
            .iter()
            .copied()
            .find(|p| p.name() == s || p.short() == s)
    }

    /// Parses a comma-separated list.
    pub fn parse_list(s: &str) -> Result<Vec<Policy>, String> {
        s.split(',')
            .map(|x| {
                Policy::parse(x.trim()).ok_or_else(|| {
                    format!(
                        "unknown policy {x:?} (one of {})",
                        Policy::ALL.map(|p| p.short()).join(", ")
                    )
                })
            })
            .collect()
    }

    pub fn uses_counters(self) -> bool {
        matches!(
            self,
            Policy::DynWlc
                | Policy::Paper
                | Policy::Dwepc
                | Policy::DwepcSed
                | Policy::DwepcTime
                | Policy::DwepcTimeDrawn
                | Policy::DwepcTimeDrawn4
                | Policy::DwepcTimeDrawn8
                | Policy::DwepcTimeScan
                | Policy::DwepcTimeSlow
                | Policy::DwepcTimeProm
        )
    }

    /// Reads the counters through vmware_exporter and Prometheus.
    pub fn via_prometheus(self) -> bool {
        self == Policy::DwepcTimeProm
    }

    pub(super) fn weighted(self) -> bool {
        matches!(
            self,
            Policy::Wrr
                | Policy::LcW
                | Policy::LeastTime
                | Policy::RandomTwo
                | Policy::LeastTimeSlow
                | Policy::Oracle
        ) || self.uses_counters()
    }

    /// The upstream block's lines (the `server` lines come after).
    pub(super) fn method(self, period_s: u64) -> String {
        let i = period_s;
        match self {
            Policy::Rr | Policy::Wrr => String::new(),
            Policy::Lc | Policy::LcW | Policy::Oracle => "least_conn;".into(),
            Policy::Random2 => "random two least_conn;".into(),
            Policy::DynWlc => format!("dwepc mode=wlc interval={i}s window=20;"),
            Policy::Paper => format!("dwepc mode=paper interval={i}s window=20;"),
            Policy::Dwepc => format!("dwepc interval={i}s pick=least_conn;"),
            Policy::DwepcSed => format!("dwepc interval={i}s pick=expected_delay;"),
            Policy::DwepcTime => format!("dwepc interval={i}s pick=least_time;"),
            Policy::DwepcTimeDrawn => {
                format!("dwepc interval={i}s pick=least_time choices=2;")
            }
            Policy::DwepcTimeDrawn4 => {
                format!("dwepc interval={i}s pick=least_time choices=4;")
            }
            Policy::DwepcTimeDrawn8 => {
                format!("dwepc interval={i}s pick=least_time choices=8;")
            }
            Policy::DwepcTimeScan => {
                format!("dwepc interval={i}s pick=least_time choices=all;")
            }
            Policy::DwepcTimeProm => {
                format!("dwepc prometheus=lab interval={i}s pick=least_time;")
            }
            Policy::LeastTime => "dwepc mode=least_time;".into(),
            Policy::RandomTwo => "dwepc mode=random_two;".into(),
            Policy::DwepcTimeSlow => format!("dwepc interval={i}s pick=least_time slow_start=30s;"),
            Policy::LeastTimeSlow => "dwepc mode=least_time slow_start=30s;".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_dwepc_line_parses() {
        for (k, p) in Policy::ALL.iter().enumerate() {
            assert_eq!(Policy::parse(p.short()), Some(*p));
            assert_eq!(Policy::parse(p.name()), Some(*p));
            assert!(Policy::ALL[..k]
                .iter()
                .all(|o| o.short() != p.short() && o.name() != p.name()));
            let line = p.method(20);
            if let Some(args) = line.strip_prefix("dwepc ") {
                let words: Vec<&str> = args.trim_end_matches(';').split_whitespace().collect();
                let c = dwepc_core::conf::parse_upstream(&words)
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
                let drawn = match p {
                    Policy::DwepcTimeDrawn => Some(2),
                    Policy::DwepcTimeDrawn4 => Some(4),
                    Policy::DwepcTimeDrawn8 => Some(8),
                    _ => None,
                };
                // the others compare every peer of the lab's clusters of
                // up to 40 VMs (the default `auto` scans up to 64)
                assert_eq!(c.tuning.choices.drawn(40), drawn, "{line}");
                // on the 100-VM cluster the default draws eight, hyba scans
                match p {
                    Policy::DwepcTime => assert_eq!(c.tuning.choices.drawn(100), Some(8)),
                    Policy::DwepcTimeScan => assert_eq!(c.tuning.choices.drawn(100), None),
                    _ => {}
                }
            }
        }
        // the default with two choices drawn: the same line plus choices=2
        assert_eq!(
            Policy::DwepcTimeDrawn.method(20),
            Policy::DwepcTime.method(20).replace(';', " choices=2;")
        );
        assert!(Policy::DwepcTimeDrawn.uses_counters() && Policy::DwepcTimeDrawn.weighted());
    }
}
