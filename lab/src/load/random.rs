//! The seeded random draws of a run: seeds, uniform and exponential
//! variates.

use dwepc_core::rng::Rng;

pub(super) fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Uniform in [0, 1).
pub(super) fn unit(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Exponential with mean 1.
pub(super) fn exp1(rng: &mut Rng) -> f64 {
    -(1.0 - unit(rng)).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_helpers() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let (mut s, mut lo, mut hi) = (0.0, 1.0f64, 0.0f64);
        for _ in 0..n {
            let u = unit(&mut r);
            lo = lo.min(u);
            hi = hi.max(u);
            s += exp1(&mut r);
        }
        assert!(lo >= 0.0 && hi < 1.0 && lo < 0.001 && hi > 0.999);
        assert!(
            (s / n as f64 - 1.0).abs() < 0.01,
            "exp mean {}",
            s / n as f64
        );
    }
}
