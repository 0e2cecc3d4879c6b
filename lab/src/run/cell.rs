//! What a cell is: a scenario at one load level with one seed, every
//! policy, and vSphere's counter cadence.

use std::time::Duration;

use super::policy::Policy;
use crate::scenario::Scenario;
use crate::vm::VmSpec;

/// vSphere's counter cadence in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cadence {
    /// Seconds each sample averages (and the poll interval).
    pub period_s: u64,
    /// Seconds after its period ends that a sample becomes visible.
    pub delay_s: u64,
}

impl Cadence {
    /// ESXi's realtime counters: 20-s averages, visible 5 s late.
    pub const VSPHERE: Cadence = Cadence {
        period_s: 20,
        delay_s: 5,
    };

    /// "20s/5s" (period/delay).
    pub fn parse(s: &str) -> Result<Cadence, String> {
        let bad = || format!("bad cadence {s:?} (period/delay, like 20s/5s)");
        let (p, d) = s.split_once('/').ok_or_else(bad)?;
        let p = crate::scenario::parse_duration(p).map_err(|_| bad())?;
        let d = crate::scenario::parse_duration(d).map_err(|_| bad())?;
        if p.as_secs() == 0 || p.subsec_nanos() != 0 || d.subsec_nanos() != 0 {
            return Err(bad());
        }
        Ok(Cadence {
            period_s: p.as_secs(),
            delay_s: d.as_secs(),
        })
    }

    pub fn label(self) -> String {
        format!("{}s/{}s", self.period_s, self.delay_s)
    }
}

/// One cell: a scenario at one load level with one seed, every policy.
#[derive(Clone, Debug)]
pub struct Cell {
    pub name: String,
    pub scenario: Scenario,
    pub cluster: Vec<VmSpec>,
    /// Open-loop load as a fraction of the cluster's capacity for the mix.
    pub level: f64,
    pub policies: Vec<Policy>,
    pub warmup: Duration,
    pub duration: Duration,
    pub seed: u64,
    pub cadence: Cadence,
    /// On real CPUs (cgroups), one real core standing for this many MHz;
    /// the policies then run one after another, not side by side.
    pub real_cpu: Option<f64>,
}

impl Cell {
    /// Wall time the cell takes, roughly (start-up, load, tail, stop).
    pub fn estimate(&self) -> Duration {
        let one = self.warmup + self.duration + Duration::from_secs(25);
        match self.real_cpu {
            Some(_) => one * self.policies.len() as u32,
            None => one,
        }
    }
}

/// A real-CPU scale: the MHz one real core stands for (finite, at least
/// 100).
pub fn parse_real_cpu(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|m| m.is_finite() && *m >= 100.0)
        .ok_or_else(|| format!("bad real-CPU scale {s:?} (MHz one core stands for, >= 100)"))
}

/// Wall time of running `cells`, `parallel` emulated cells at a time and
/// each real-CPU cell alone (its VMs use the machine's cores).
pub fn batch_estimate(cells: &[Cell], parallel: usize) -> Duration {
    let (real, emulated): (Vec<&Cell>, Vec<&Cell>) =
        cells.iter().partition(|c| c.real_cpu.is_some());
    emulated.iter().map(|c| c.estimate()).sum::<Duration>() / parallel.max(1) as u32
        + real.iter().map(|c| c.estimate()).sum::<Duration>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cadence_and_policies_parse() {
        assert_eq!(Cadence::parse("20s/5s").unwrap(), Cadence::VSPHERE);
        assert_eq!(Cadence::parse("3s/0s").unwrap().period_s, 3);
        assert!(Cadence::parse("20s").is_err());
        assert_eq!(
            Policy::parse_list("rr,lcw,dwepc").unwrap(),
            vec![Policy::Rr, Policy::LcW, Policy::Dwepc]
        );
        assert!(Policy::parse_list("rr,nope").unwrap_err().contains("nope"));
    }
}
