//! A VM's demand over a horizon from its samples: a high percentile or
//! the mean.

use std::fmt;

/// Per-VM demand over a horizon from its samples: a high percentile or
/// the mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stat {
    /// The `q`-quantile (0..=1), nearest rank: `p95` = 0.95.
    Percentile(f64),
    Mean,
}

/// A statistic [`Stat::parse`] does not know (the text given).
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownStat(pub String);

impl fmt::Display for UnknownStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown statistic \"{}\": use p95 (any p1..p100), max or mean",
            self.0
        )
    }
}

impl std::error::Error for UnknownStat {}

impl Stat {
    /// `p95`, `p50`, `p99.9`, `max`, `mean`.
    pub fn parse(s: &str) -> Result<Stat, UnknownStat> {
        match s {
            "mean" => Ok(Stat::Mean),
            "max" => Ok(Stat::Percentile(1.0)),
            _ => s
                .strip_prefix('p')
                .and_then(|q| q.parse::<f64>().ok())
                .filter(|q| (0.0..=100.0).contains(q) && *q > 0.0)
                .map(|q| Stat::Percentile(q / 100.0))
                .ok_or_else(|| UnknownStat(s.to_string())),
        }
    }

    /// The statistic of `values` (non-finite and negative values, which
    /// vSphere uses for "no value", are left out); None if none is left.
    pub fn of(self, values: &[f64]) -> Option<f64> {
        let mut v: Vec<f64> = values
            .iter()
            .copied()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .collect();
        if v.is_empty() {
            return None;
        }
        Some(match self {
            Stat::Mean => v.iter().sum::<f64>() / v.len() as f64,
            Stat::Percentile(q) => {
                v.sort_by(f64::total_cmp);
                // nearest rank; the epsilon keeps q = 0.55 of 180 samples
                // at rank 99, which 0.55 * 180 in floating point is not
                let rank = (q * v.len() as f64 - 1e-9).ceil() as usize;
                v[rank.clamp(1, v.len()) - 1]
            }
        })
    }
}
