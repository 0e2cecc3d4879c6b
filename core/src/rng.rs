//! A small, fast random generator (xorshift64*) for tie-breaking on the
//! request path and for the lab's seeded load; not for secrets.

/// The generator: 64 bits of state.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (a zero seed is replaced).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..k` (k > 0), by multiply-shift.
    pub fn below(&mut self, k: u64) -> u64 {
        ((self.next_u64() >> 32) * k) >> 32
    }
}
