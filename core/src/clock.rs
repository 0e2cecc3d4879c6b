//! The one clock of dwepc: wall-clock milliseconds since the Unix epoch.
//! Sample times (vSphere's, corrected by the measured skew), the counters'
//! valid-until, the lease's heartbeat and the login hold-back are all in
//! this clock, whoever reads it: the collector thread (through its
//! runtime, which a test sets), the nginx module (nginx's cached copy of
//! the same clock on the request path), the lab and the placement advisor.

/// Wall-clock ms since the Unix epoch (0 if the system clock is before
/// it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
