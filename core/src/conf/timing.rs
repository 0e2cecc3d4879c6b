//! Timing that spans directives: how long a frozen polling worker holds
//! the lease before another takes over, and an upstream's `ttl` against
//! it (the counters must outlive a takeover plus one poll).

use super::{ConfError, NamedEndpoint, UpstreamConf, DEFAULT_TIMEOUT_MS};

/// The longest call timeout of the endpoints (`timeout=` of each; the
/// default timeout when there are none).
pub fn longest_timeout(timeouts: impl IntoIterator<Item = u64>) -> u64 {
    timeouts.into_iter().max().unwrap_or(DEFAULT_TIMEOUT_MS)
}

/// The time after which another worker takes polling over from a frozen
/// one: 3 s plus twice the longest call timeout (a poll blocked in one
/// call must not lose the lease).
pub fn takeover_ms(longest_timeout_ms: u64) -> u64 {
    3000 + 2 * longest_timeout_ms
}

/// Cross-checks an upstream's timing against its endpoint's timeout and
/// the takeover time (`longest_timeout_ms`: the longest timeout of every
/// endpoint). The counters must outlive a takeover plus one poll:
/// `ttl >= interval + takeover`. A default `ttl` is raised to that (the
/// returned value); a `ttl=` written shorter is an error. Also returns
/// the warnings to log.
pub fn check_timing(
    name: &str,
    c: &UpstreamConf,
    endpoint: &dyn NamedEndpoint,
    longest_timeout_ms: u64,
) -> Result<(u64, Vec<String>), ConfError> {
    let need = c.interval_ms + takeover_ms(longest_timeout_ms);
    let mut warnings = Vec::new();
    if endpoint.timeout_ms() > c.interval_ms {
        warnings.push(format!(
            "timeout={} ms of {} endpoint \"{}\" is longer than interval={} ms of upstream \"{name}\": a slow answer delays the next poll",
            endpoint.timeout_ms(),
            endpoint.kind().word(),
            endpoint.name(),
            c.interval_ms
        ));
    }
    if c.ttl_ms >= need {
        return Ok((c.ttl_ms, warnings));
    }
    if c.ttl_set {
        return Err(ConfError::TtlBelowTakeover {
            upstream: name.to_string(),
            ttl_ms: c.ttl_ms,
            need_ms: need,
        });
    }
    Ok((need, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::endpoint::tests::endpoint_with;
    use crate::conf::parse_upstream;

    #[test]
    fn ttl_must_outlive_a_takeover_and_a_default_is_raised_to_it() {
        let vc = endpoint_with(&["url=https://vc/sdk", "timeout=2s"]).unwrap();
        // interval 1 s + 3 s + 2 x 2 s = 8 s
        let c = parse_upstream(&["interval=1s", "ttl=6s"]).unwrap();
        let e = check_timing("app", &c, &vc, 2000).unwrap_err().to_string();
        assert!(e.contains("8000 ms") && e.contains("\"app\""), "{e}");
        let c = parse_upstream(&["interval=1s", "ttl=8s"]).unwrap();
        assert_eq!(check_timing("app", &c, &vc, 2000).unwrap().0, 8000);
        // the longest timeout of every endpoint decides the takeover
        assert!(check_timing("app", &c, &vc, 5000).is_err());
        // a default ttl is raised, not refused
        let c = parse_upstream(&["interval=1s", "mode=paper"]).unwrap();
        assert_eq!(c.ttl_ms, 3000);
        assert_eq!(check_timing("app", &c, &vc, 2000).unwrap().0, 8000);
        // defaults at the default interval and timeout need nothing
        let vc5 = endpoint_with(&["url=https://vc/sdk"]).unwrap();
        let d = parse_upstream(&[]).unwrap();
        assert_eq!(
            check_timing("app", &d, &vc5, 5000).unwrap(),
            (d.ttl_ms, vec![])
        );
        // a timeout longer than the interval works, slowly: a warning
        let c = parse_upstream(&["interval=1s"]).unwrap();
        let (_, w) = check_timing("app", &c, &vc, 2000).unwrap();
        assert!(w[0].contains("longer than interval"), "{w:?}");
    }
}
