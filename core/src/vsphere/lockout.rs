//! How long to wait after vCenter refuses a login: vCenter locks an
//! account after 5 failed logins in 3 minutes by default, so a wrong
//! password must not be retried at the poll interval. The lease zone's
//! endpoint record keeps the refusals so that every worker, and the
//! workers after a reload, hold back alike.

/// The wait after a refused login, `streak` refusals in a row before it:
/// 5 minutes, doubling up to an hour (vCenter locks an account after 5
/// failures in 3 minutes by default).
pub fn login_wait_ms(streak: u64) -> u64 {
    (LOGIN_WAIT_MS << streak.min(4)).min(LOGIN_WAIT_MAX_MS)
}

/// First wait after a refused login.
pub const LOGIN_WAIT_MS: u64 = 5 * 60_000;
/// Longest wait between refused logins.
pub const LOGIN_WAIT_MAX_MS: u64 = 60 * 60_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_five_minutes_to_an_hour() {
        let waits: Vec<u64> = (0..7).map(login_wait_ms).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60, 60].map(|m| m * 60_000));
    }
}
