//! The worker's random generator for the picks that draw at random: taken
//! when a comparison starts, given back when it is dropped, so that every
//! pick of a worker continues one sequence (each nginx worker is one
//! thread on the request path).

use std::cell::Cell;

use crate::rng::Rng;

thread_local! {
    /// The state of this thread's generator between picks (0: not seeded
    /// yet).
    pub(super) static WORKER_RNG: Cell<u64> = const { Cell::new(0) };
}

/// This thread's generator, for one pick.
pub(super) struct WorkerRng(Rng);

impl WorkerRng {
    /// Takes this thread's generator (seeded from the process id and the
    /// clock on first use).
    #[inline]
    pub(super) fn take() -> WorkerRng {
        let seed = WORKER_RNG.with(Cell::get);
        let seed = if seed == 0 {
            (std::process::id() as u64) << 32 ^ crate::clock::now_ms()
        } else {
            seed
        };
        WorkerRng(Rng::new(seed))
    }

    /// The generator.
    #[inline]
    pub(super) fn get(&mut self) -> &mut Rng {
        &mut self.0
    }
}

/// Runs `f` with this thread's generator (for the module's draws), which
/// goes on from where the last pick left it.
#[inline]
pub fn with_worker_rng<T>(f: impl FnOnce(&mut Rng) -> T) -> T {
    let mut rng = WorkerRng::take();
    f(rng.get())
}

impl Drop for WorkerRng {
    #[inline]
    fn drop(&mut self) {
        let next = self.0.next_u64() | 1;
        WORKER_RNG.with(|c| c.set(next));
    }
}
