//! Per-resource accounting: usable = total × ratio − reserved, as
//! OpenStack Nova accounts a host's resources; set per upstream
//! (`dwepc`) and per server (`dwepc_node`), the server's winning.

use super::value::{invalid, parse_f64};
use super::ConfError;
use crate::resources::{Res, MAX_CAPACITY, R, RESOURCES, UNITS};

/// Overcommit ratios accepted.
pub const MIN_RATIO: f64 = 0.01;
pub const MAX_RATIO: f64 = 1000.0;

/// Ratios and reservations per resource.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Accounting {
    /// Overcommit ratio per resource (NaN = not set here).
    pub ratio: Res,
    /// Reserved amount per resource, in the resource's unit (NaN = not set).
    pub reserved: Res,
}

impl Default for Accounting {
    fn default() -> Self {
        Accounting {
            ratio: [f64::NAN; R],
            reserved: [f64::NAN; R],
        }
    }
}

/// `a` if set, else `b`.
fn set_or(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else {
        a
    }
}

impl Accounting {
    /// Values set here win over `parent`'s.
    pub fn over(&self, parent: &Accounting) -> Accounting {
        Accounting {
            ratio: std::array::from_fn(|j| set_or(self.ratio[j], parent.ratio[j])),
            reserved: std::array::from_fn(|j| set_or(self.reserved[j], parent.reserved[j])),
        }
    }

    /// Usable capacity from a total (NaN stays NaN; never below zero).
    pub fn usable(&self, total: Res) -> Res {
        std::array::from_fn(|j| {
            let ratio = set_or(self.ratio[j], 1.0);
            let reserved = set_or(self.reserved[j], 0.0);
            let u = total[j] * ratio - reserved;
            if u.is_nan() {
                u
            } else {
                u.max(0.0)
            }
        })
    }

    /// Takes `{resource}_ratio=` or `{resource}_reserved=`; `None` for any
    /// other key.
    pub(super) fn parse(&mut self, key: &str, val: &str) -> Option<Result<(), ConfError>> {
        for (j, r) in RESOURCES.iter().enumerate() {
            if key == format!("{r}_ratio") {
                return Some(match parse_f64(val) {
                    Some(x) if (MIN_RATIO..=MAX_RATIO).contains(&x) => {
                        self.ratio[j] = x;
                        Ok(())
                    }
                    _ => Err(invalid(
                        key,
                        val,
                        &format!("a ratio from {MIN_RATIO} to {MAX_RATIO}"),
                    )),
                });
            }
            if key == format!("{r}_reserved") {
                return Some(match parse_f64(val) {
                    Some(x) if (0.0..=MAX_CAPACITY[j]).contains(&x) => {
                        self.reserved[j] = x;
                        Ok(())
                    }
                    _ => Err(invalid(
                        key,
                        val,
                        &format!("{} from 0 to {:e}", UNITS[j], MAX_CAPACITY[j]),
                    )),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounting_layers() {
        let mut up = Accounting::default();
        up.ratio[0] = 4.0;
        let mut node = Accounting::default();
        node.reserved[0] = 500.0;
        let eff = node.over(&up);
        assert_eq!(eff.usable([1000.0; R])[0], 3500.0);
        assert_eq!(eff.usable([1000.0; R])[1], 1000.0);
        assert!(eff.usable([f64::NAN; R])[2].is_nan());
        node.reserved[1] = 5000.0;
        assert_eq!(node.over(&up).usable([1000.0; R])[1], 0.0);
    }
}
