//! `dwepc [vsphere=NAME|off] [window=N] [interval=TIME] [ttl=TIME]
//! [min_samples=N] [mode=NAME] [MODE OPTIONS] [slow_start=TIME]
//! [overload_status=CODE] [retry_after=TIME|off]
//! [observe=off|on|least_conn|round_robin] [ACCOUNTING]` inside
//! `upstream {}`: the upstream's endpoint, timing, mode and its tuning,
//! the overload guard's answer, and observe mode.

use super::accounting::Accounting;
use super::value::{
    invalid, once, parse_count, parse_f64, parse_fraction, parse_time, parse_time_ms, split,
    valid_name,
};
use super::ConfError;
use crate::policy::{self, names_of, Mode, Observe, Pick, Tuning, MAX_WINDOW, MODE_OPTIONS};

/// Which endpoint an upstream uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointRef {
    /// The http-level default endpoint, if one exists.
    Default,
    /// A named endpoint of a kind (`vsphere=NAME`, `prometheus=NAME`).
    Named(super::SourceKind, String),
    /// No endpoint: weighted round robin until configured otherwise.
    Off,
}

/// Arguments of the `dwepc` directive.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConf {
    /// Endpoint used by this upstream.
    pub vsphere: EndpointRef,
    /// Poll interval in ms.
    pub interval_ms: u64,
    /// Age of the newest sample after which the balancer falls back to
    /// weighted round robin, ms.
    pub ttl_ms: u64,
    /// `ttl=` was written (else `ttl_ms` is the mode's default, raised to
    /// the takeover time by [`super::check_timing`]).
    pub ttl_set: bool,
    /// Balancing mode.
    pub mode: &'static dyn Mode,
    /// The mode's tuning (window, shares options).
    pub tuning: Tuning,
    /// Upstream-wide accounting defaults.
    pub accounting: Accounting,
    /// The status of the overload guard's answer (when every server is at
    /// its in-flight limit), 400 to 599.
    pub overload_status: u16,
    /// Its `Retry-After`, s (0: none).
    pub retry_after_s: u32,
    /// `observe=`: everything computed and shown, the pick nginx's own
    /// (None: dwepc picks).
    pub observe: Option<Observe>,
}

/// The overload guard's answer by default: 503 Service Unavailable, so
/// that access logs and alerts tell it from a backend's failure (502),
/// with a `Retry-After` of a second.
pub const DEFAULT_OVERLOAD_STATUS: u16 = 503;
/// The default `Retry-After` of the guard's answer, s.
pub const DEFAULT_RETRY_AFTER_S: u32 = 1;
/// The longest `retry_after=`, s.
pub const MAX_RETRY_AFTER_S: u32 = 3600;

impl UpstreamConf {
    /// How the request path compares peers: the mode's comparison, or in
    /// observe mode nginx's least_conn (observe=round_robin: round robin
    /// decides before any comparison).
    pub fn comparison(&self) -> policy::Comparison {
        match self.observe {
            Some(Observe::LeastConn) => policy::Comparison::LeastConn,
            _ => self.mode.comparison(&self.tuning),
        }
    }
}

/// Default poll interval: the realtime refresh rate of ESXi.
pub const DEFAULT_INTERVAL_MS: u64 = 20_000;

impl Default for UpstreamConf {
    fn default() -> Self {
        UpstreamConf {
            vsphere: EndpointRef::Default,
            interval_ms: DEFAULT_INTERVAL_MS,
            ttl_ms: 3 * DEFAULT_INTERVAL_MS,
            ttl_set: false,
            mode: policy::default_mode(),
            tuning: Tuning::default(),
            accounting: Accounting::default(),
            overload_status: DEFAULT_OVERLOAD_STATUS,
            retry_after_s: DEFAULT_RETRY_AFTER_S,
            observe: None,
        }
    }
}

/// Parses the words after `dwepc`.
pub fn parse_upstream(args: &[&str]) -> Result<UpstreamConf, ConfError> {
    let mut c = UpstreamConf::default();
    let mut seen: Vec<&str> = Vec::new();
    for arg in args {
        let (key, val) = split(arg)?;
        once(&mut seen, key)?;
        if !parse_param(&mut c, key, val)? {
            return Err(ConfError::InvalidParameter(arg.to_string()));
        }
    }
    for key in MODE_OPTIONS {
        if seen.contains(&key) && !c.mode.options().contains(&key) {
            let modes = policy::MODES
                .iter()
                .filter(|m| m.options().contains(&key))
                .map(|m| format!("mode={}", m.name()));
            return Err(ConfError::OnlyInMode {
                key: key.to_string(),
                modes: names_of(modes.collect::<Vec<_>>().iter().map(String::as_str)),
                mode: c.mode.name(),
            });
        }
    }
    let written = |k: &str| seen.contains(&k);
    let default_ttl = c.mode.defaults(&mut c.tuning, c.interval_ms, &written);
    if !written("min_samples") {
        c.tuning.min_samples = c.tuning.min_samples.min(c.tuning.window);
    }
    if c.tuning.min_samples > c.tuning.window {
        return Err(ConfError::MinSamplesAboveWindow {
            min_samples: c.tuning.min_samples,
            window: c.tuning.window,
        });
    }
    c.ttl_set = written("ttl");
    if !c.ttl_set {
        c.ttl_ms = default_ttl;
    } else if c.ttl_ms < c.interval_ms {
        return Err(ConfError::TtlBelowInterval {
            ttl_ms: c.ttl_ms,
            interval_ms: c.interval_ms,
        });
    }
    Ok(c)
}

/// Takes one `key=value` of `dwepc`; false for a key it does not know.
fn parse_param(c: &mut UpstreamConf, key: &str, val: &str) -> Result<bool, ConfError> {
    let t = &mut c.tuning;
    match key {
        "vsphere" | "prometheus" => {
            let kind = if key == "vsphere" {
                super::SourceKind::Vsphere
            } else {
                super::SourceKind::Prometheus
            };
            if c.vsphere != EndpointRef::Default {
                return Err(ConfError::TwoSources);
            }
            c.vsphere = match val {
                "off" => EndpointRef::Off,
                v if valid_name(v) => EndpointRef::Named(kind, v.to_string()),
                _ => return Err(invalid(key, val, "an endpoint name or \"off\"")),
            }
        }
        "window" => t.window = parse_count(key, val, 1, MAX_WINDOW)?,
        "min_samples" => t.min_samples = parse_count(key, val, 1, MAX_WINDOW)?,
        "interval" => c.interval_ms = parse_time(key, val, 100)?,
        "ttl" => c.ttl_ms = parse_time(key, val, 100)?,
        "mode" => {
            let names = names_of(policy::MODES.iter().map(|m| m.name()));
            c.mode = policy::mode_named(val).ok_or_else(|| invalid(key, val, &names))?;
        }
        "pick" => {
            let names = names_of(Pick::ALL.iter().map(|p| p.1));
            t.pick = Pick::named(val).ok_or_else(|| invalid(key, val, &names))?;
        }
        "choices" => {
            t.choices = policy::pick::Choices::named(val).ok_or_else(|| {
                let want = format!(
                    "\"auto\", \"all\" or a number of peers drawn from 2 to {}",
                    policy::pick::draw::MAX_CHOICES
                );
                invalid(key, val, &want)
            })?
        }
        "inflight" => {
            t.inflight_per_vcpu = match val {
                "off" => 0.0,
                _ => match parse_f64(val) {
                    Some(x) if x > 0.0 && x <= 10_000.0 => x,
                    _ => {
                        let want = "requests per vCPU above 0 (up to 10000), or \"off\"";
                        return Err(invalid(key, val, want));
                    }
                },
            }
        }
        "floor" => {
            t.floor = match parse_fraction(val) {
                Some(x) if (0.0..=0.2).contains(&x) => x,
                _ => return Err(invalid(key, val, "a share from 0 to 0.2, like \"1%\"")),
            }
        }
        "step" => {
            t.step = match parse_fraction(val) {
                Some(x) if x > 0.0 && x <= 1.0 => x,
                _ => {
                    let want = "a fraction above 0 and up to 1, like \"0.5\"";
                    return Err(invalid(key, val, want));
                }
            }
        }
        "slow_start" => t.slow_start_ms = parse_time(key, val, 1000)?,
        "observe" => {
            c.observe = match val {
                "off" => None,
                v => Some(Observe::named(v).ok_or_else(|| {
                    invalid(
                        key,
                        val,
                        "\"on\" (least_conn), \"least_conn\", \"round_robin\" or \"off\"",
                    )
                })?),
            }
        }
        // as limit_req_status: a status from 400 to 599
        "overload_status" => c.overload_status = parse_count(key, val, 400, 599)? as u16,
        "retry_after" => {
            c.retry_after_s = match val {
                "off" => 0,
                _ => match parse_time_ms(val) {
                    Some(ms) if ms <= MAX_RETRY_AFTER_S as u64 * 1000 => ms.div_ceil(1000) as u32,
                    _ => {
                        let want =
                            "a time up to 1h, like \"1s\" (whole seconds, rounded up), or \"off\"";
                        return Err(invalid(key, val, want));
                    }
                },
            }
        }
        _ => match c.accounting.parse(key, val) {
            Some(r) => r?,
            None => return Ok(false),
        },
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::parse_node;

    #[test]
    fn observe_takes_nginx_s_picks() {
        assert_eq!(parse_upstream(&[]).unwrap().observe, None);
        for (v, o) in [
            ("on", Some(Observe::LeastConn)),
            ("least_conn", Some(Observe::LeastConn)),
            ("round_robin", Some(Observe::RoundRobin)),
            ("off", None),
        ] {
            let w = format!("observe={v}");
            assert_eq!(parse_upstream(&[&w]).unwrap().observe, o, "{v}");
        }
        let e = parse_upstream(&["observe=yes"]).unwrap_err().to_string();
        assert!(e.contains("round_robin"), "{e}");
    }

    #[test]
    fn the_overload_answer_is_503_with_retry_after_unless_set() {
        let c = parse_upstream(&[]).unwrap();
        assert_eq!((c.overload_status, c.retry_after_s), (503, 1));
        let c = parse_upstream(&["overload_status=429", "retry_after=2500ms"]).unwrap();
        assert_eq!((c.overload_status, c.retry_after_s), (429, 3));
        let c = parse_upstream(&["overload_status=502", "retry_after=off"]).unwrap();
        assert_eq!((c.overload_status, c.retry_after_s), (502, 0));
        for bad in [
            "overload_status=200",
            "overload_status=600",
            "overload_status=x",
        ] {
            let e = parse_upstream(&[bad]).unwrap_err().to_string();
            assert!(e.contains("from 400 to 599"), "{e}");
        }
        for bad in ["retry_after=2h", "retry_after=soon"] {
            let e = parse_upstream(&[bad]).unwrap_err().to_string();
            assert!(e.contains("up to 1h"), "{e}");
        }
    }

    #[test]
    fn upstream_defaults() {
        let c = parse_upstream(&[]).unwrap();
        assert_eq!(c.vsphere, EndpointRef::Default);
        assert_eq!(
            (
                c.tuning.window,
                c.interval_ms,
                c.ttl_ms,
                c.tuning.min_samples
            ),
            (3, 20_000, 200_000, 2)
        );
        assert_eq!(c.mode.name(), "shares");
        assert_eq!(
            (
                c.tuning.pick,
                c.tuning.inflight_per_vcpu,
                c.tuning.floor,
                c.tuning.step
            ),
            (Pick::LeastTime, 32.0, 0.01, 0.5)
        );
        let c = parse_upstream(&["mode=paper"]).unwrap();
        assert_eq!(
            (
                c.mode.name(),
                c.tuning.window,
                c.tuning.min_samples,
                c.ttl_ms
            ),
            ("paper", 20, 2, 60_000)
        );
        let c = parse_upstream(&[
            "pick=expected_delay",
            "inflight=off",
            "floor=2%",
            "step=0.25",
            "window=1",
        ])
        .unwrap();
        assert_eq!(c.tuning.pick, Pick::ExpectedDelay);
        assert_eq!(
            (c.tuning.inflight_per_vcpu, c.tuning.floor, c.tuning.step),
            (0.0, 0.02, 0.25)
        );
        assert_eq!((c.tuning.window, c.tuning.min_samples), (1, 1));
        assert_eq!(c.tuning.slow_start_ms, 0);
        // how many peers a pick compares: the shares mode's default draws
        // in large lists; the other modes compare every peer
        assert_eq!(c.tuning.choices, policy::pick::Choices::Auto);
        for mode in [
            "mode=paper",
            "mode=wlc",
            "mode=least_time",
            "mode=random_two",
        ] {
            let c = parse_upstream(&[mode]).unwrap();
            assert_eq!(c.tuning.choices, policy::pick::Choices::All, "{mode}");
        }
        for (v, want) in [
            ("auto", policy::pick::Choices::Auto),
            ("all", policy::pick::Choices::All),
            ("2", policy::pick::Choices::Drawn(2)),
            ("8", policy::pick::Choices::Drawn(8)),
        ] {
            let arg = format!("choices={v}");
            assert_eq!(parse_upstream(&[&arg]).unwrap().tuning.choices, want);
        }
        let c = parse_upstream(&["mode=least_time", "slow_start=30s"]).unwrap();
        assert_eq!(c.tuning.slow_start_ms, 30_000);
        let c = parse_upstream(&["interval=3s", "window=20", "mode=paper"]).unwrap();
        assert_eq!((c.interval_ms, c.ttl_ms, c.tuning.window), (3000, 9000, 20));
        let c = parse_upstream(&["interval=3s"]).unwrap();
        assert_eq!(c.ttl_ms, 30_000);
        // shares defaults are times: a minute of samples, half-way in 20 s
        assert_eq!(c.tuning.window, 20);
        assert!(
            (c.tuning.step - (1.0 - 0.5f64.powf(0.15))).abs() < 1e-12,
            "{}",
            c.tuning.step
        );
    }

    #[test]
    fn upstream_errors() {
        let cases: &[(&[&str], &str)] = &[
            (&["window=0"], "invalid value \"0\" in \"window=\""),
            (&["window=abc"], "invalid value \"abc\""),
            (&["window=2000"], "from 1 to 1024"),
            (
                &["interval=fast"],
                "invalid value \"fast\" in \"interval=\"",
            ),
            (&["interval=10ms"], "from 100ms"),
            (
                &["mode=magic"],
                "expected \"shares\", \"paper\", \"wlc\", \"least_time\" or \"random_two\"",
            ),
            (
                &["pick=fast"],
                "\"least_conn\", \"expected_delay\" or \"least_time\"",
            ),
            (&["choices=1"], "\"auto\", \"all\" or a number of peers drawn from 2 to 8"),
            (&["choices=many"], "invalid value \"many\" in \"choices=\""),
            (
                &["mode=paper", "choices=2"],
                "\"choices=\" applies to \"mode=shares\" only",
            ),
            (
                &["mode=wlc", "choices=auto"],
                "\"choices=\" applies to \"mode=shares\" only",
            ),
            (&["inflight=0"], "above 0"),
            (&["inflight=-3"], "above 0"),
            (&["floor=30%"], "from 0 to 0.2"),
            (&["step=0"], "above 0 and up to 1"),
            (&["step=1.5"], "above 0 and up to 1"),
            (&["slow_start=500ms"], "a time from 1000ms to 1d"),
            (
                &["mode=paper", "slow_start=30s"],
                "applies to \"mode=shares\", \"mode=wlc\", \"mode=least_time\" or \"mode=random_two\" only",
            ),
            (
                &["mode=paper", "inflight=4"],
                "applies to \"mode=shares\" only",
            ),
            (&["bogus=1"], "invalid parameter \"bogus=1\""),
            (&["window"], "invalid parameter \"window\""),
            (&["window=3", "window=4"], "duplicate parameter \"window\""),
            (&["window=3", "min_samples=5"], "larger than"),
            (&["interval=20s", "ttl=5s"], "shorter than"),
            (&["vsphere=a b"], "endpoint name"),
            (&["cpu_ratio=0"], "a ratio from 0.01 to 1000"),
            (&["mem_reserved=-1"], "MB from 0 to 1e8"),
        ];
        for (args, want) in cases {
            let err = parse_upstream(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn capacities_and_reservations_out_of_any_range_are_refused() {
        for bad in ["cpu=1e-300", "cpu=0.5", "mem=1e12", "net=0", "disk=inf"] {
            let e = parse_node(&["127.0.0.1:80", bad]).unwrap_err().to_string();
            assert!(e.contains("a capacity in"), "{bad}: {e}");
        }
        assert!(parse_node(&["127.0.0.1:80", "cpu=2000", "mem=4096", "net=125000"]).is_ok());
        for bad in [
            "mem_reserved=1e308",
            "cpu_reserved=-1",
            "cpu_ratio=1e-300",
            "net_ratio=5000",
        ] {
            assert!(parse_upstream(&[bad]).is_err(), "{bad}");
        }
        assert!(parse_upstream(&["cpu_ratio=4", "mem_reserved=2048"]).is_ok());
    }
}
