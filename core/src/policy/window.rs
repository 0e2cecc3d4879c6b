//! The sliding window of samples both models keep, and the cleaning of
//! request counts paired with a sample.

use std::collections::VecDeque;

/// Request counts as they may be used: a non-finite or negative count is 0.
pub fn clean_counts(v: &mut [f64]) {
    for x in v.iter_mut() {
        if !(x.is_finite() && *x >= 0.0) {
            *x = 0.0;
        }
    }
}

/// Inserts `s` into `window` (oldest first, ordered by `end`), keeping at
/// most `cap` (the oldest go). Returns false, changing nothing, when a
/// sample with the same end is already held (vSphere returns the same
/// realtime sample until the next one) or `s` is older than everything in
/// a full window.
pub fn insert_by_end<T>(
    window: &mut VecDeque<T>,
    s: T,
    cap: usize,
    end: impl Fn(&T) -> u64,
) -> bool {
    let e = end(&s);
    if window.iter().any(|o| end(o) == e) {
        return false;
    }
    let pos = window.partition_point(|o| end(o) < e);
    if pos == 0 && window.len() >= cap {
        return false;
    }
    window.insert(pos, s);
    while window.len() > cap {
        window.pop_front();
    }
    true
}
