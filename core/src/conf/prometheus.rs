//! `dwepc_prometheus NAME url=URL [metrics=vmware_exporter|telegraf]
//! [bearer_token_file=PATH] [ca_file=PATH] [tls_verify=on|off]
//! [insecure_http=on|off] [timeout=TIME] [lag=TIME] [period=TIME]
//! [COUNTER=SELECTOR|off ...] [vcpus=|cpu_max=|mem_size=|power=SELECTOR|off]
//! [vm_label=L] [id_label=L] [ip_label=L|off] [default]` at http level:
//! a Prometheus server whose query API holds vSphere's counters as an
//! exporter reports them; refused at `nginx -t` when it cannot work or
//! would leak the token.

use super::files::{check_ca, password_from};
use super::value::{invalid, once, parse_on_off, parse_time, split, valid_name};
use super::{ConfError, DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS};
use crate::prometheus::profile::{self, Profile, PROFILES};

/// What a Prometheus `url=` must look like, for messages.
pub const PROMETHEUS_URL_WANTED: &str =
    "the Prometheus server's base URL, like http://prometheus.example.com:9090";

/// `lag=` when none is written: half of vSphere's 20-s realtime period
/// (an exporter reports the newest sample when scraped, which ended on
/// average half a period before).
pub const DEFAULT_LAG_MS: u64 = 10_000;

/// Arguments of `dwepc_prometheus`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusConf {
    pub name: String,
    /// Base URL (`http://host:9090[/prefix]`).
    pub url: String,
    /// File holding a bearer token (first line).
    pub bearer_token_file: Option<String>,
    pub ca_file: Option<String>,
    pub tls_verify: bool,
    pub insecure_http: bool,
    pub timeout_ms: u64,
    pub default: bool,
    /// Where each counter is (`metrics=` and the overrides).
    pub profile: Profile,
    /// How long before its timestamp a sample's period ended.
    pub lag_ms: u64,
    /// The period of the samples the exporter reports, s (vSphere's
    /// realtime samples: 20).
    pub period_s: u32,
}

impl PrometheusConf {
    /// The client's configuration, from the contents of
    /// `bearer_token_file` and `ca_file` (if any), checked.
    pub fn client_config(
        &self,
        token_file: Option<&[u8]>,
        ca_file: Option<Vec<u8>>,
    ) -> Result<crate::prometheus::Config, ConfError> {
        let bearer_token = match (&self.bearer_token_file, token_file) {
            (Some(f), Some(bytes)) => Some(password_from(f, bytes)?),
            _ => None,
        };
        if let (Some(f), Some(pem)) = (&self.ca_file, &ca_file) {
            check_ca(f, pem)?;
        }
        Ok(crate::prometheus::Config {
            url: self.url.clone(),
            bearer_token,
            ca_pem: ca_file,
            tls_verify: self.tls_verify,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            profile: self.profile.clone(),
            lag_ms: self.lag_ms,
            period_s: self.period_s,
        })
    }

    /// What the configuration allows but an operator should know.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.bearer_token_file.is_some() && self.url.to_ascii_lowercase().starts_with("http://")
        {
            out.push(format!(
                "Prometheus endpoint \"{}\" sends its bearer token over http:// in clear text (insecure_http=on)",
                self.name
            ));
        } else if !self.tls_verify {
            out.push(format!(
                "Prometheus endpoint \"{}\" has tls_verify=off: the server's certificate is not checked; use ca_file= instead",
                self.name
            ));
        }
        out
    }
}

/// `http(s)://HOST[:PORT][/PREFIX]`, no credentials, query or fragment.
fn check_url(val: &str) -> Result<(), ConfError> {
    let u = url::Url::parse(val).map_err(|e| match e {
        url::ParseError::InvalidPort => ConfError::BadPort,
        _ if val.contains('@') => ConfError::BadUrlHidden,
        _ => invalid("url", val, PROMETHEUS_URL_WANTED),
    })?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(ConfError::TokenInUrl);
    }
    if !matches!(u.scheme(), "https" | "http")
        || u.host_str().is_none_or(str::is_empty)
        || u.query().is_some()
        || u.fragment().is_some()
    {
        return Err(invalid("url", val, PROMETHEUS_URL_WANTED));
    }
    if u.port() == Some(0) {
        return Err(ConfError::BadPort);
    }
    Ok(())
}

/// Parses the words after `dwepc_prometheus`.
pub fn parse_prometheus(args: &[&str]) -> Result<PrometheusConf, ConfError> {
    let Some((name, rest)) = args.split_first() else {
        return Err(ConfError::NoEndpointName);
    };
    if !valid_name(name) {
        return Err(ConfError::BadEndpointName(name.to_string()));
    }
    // the profile first: the overrides apply to it, wherever written
    let mut base = Profile::vmware_exporter();
    for arg in rest {
        if let Some(v) = arg.strip_prefix("metrics=") {
            base =
                Profile::named(v).ok_or_else(|| invalid("metrics", v, &PROFILES.join(" or ")))?;
        }
    }
    let mut e = PrometheusConf {
        name: name.to_string(),
        url: String::new(),
        bearer_token_file: None,
        ca_file: None,
        tls_verify: true,
        insecure_http: false,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        default: false,
        profile: base,
        lag_ms: DEFAULT_LAG_MS,
        period_s: 20,
    };
    let mut seen: Vec<&str> = Vec::new();
    for arg in rest {
        if *arg == "default" {
            e.default = true;
            continue;
        }
        if arg.starts_with("bearer_token=") {
            return Err(ConfError::InlineToken);
        }
        let (key, val) = split(arg)?;
        once(&mut seen, key)?;
        parse_param(&mut e, key, val)
            .ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))??;
    }
    if e.url.is_empty() {
        return Err(ConfError::Required("url"));
    }
    if e.url.to_ascii_lowercase().starts_with("http://")
        && e.bearer_token_file.is_some()
        && !e.insecure_http
    {
        return Err(ConfError::TokenInClearText);
    }
    let p = &e.profile;
    if p.counter(crate::resources::COUNTERS[crate::resources::CPU])
        .is_none()
    {
        return Err(ConfError::NoCpuCounter);
    }
    if p.name_label.is_empty() || p.id_label.is_empty() {
        return Err(invalid("vm_label", "", "a label name"));
    }
    Ok(e)
}

/// Takes one `key=value` of `dwepc_prometheus`; `None` for a key it does
/// not know.
fn parse_param(e: &mut PrometheusConf, key: &str, val: &str) -> Option<Result<(), ConfError>> {
    let file = |what: &str| {
        if val.is_empty() {
            Err(invalid(key, val, what))
        } else {
            Ok(val.to_string())
        }
    };
    let r = match key {
        "metrics" => Ok(()),
        "url" => check_url(val).map(|()| e.url = val.to_string()),
        "insecure_http" => parse_on_off(key, val).map(|x| e.insecure_http = x),
        "bearer_token_file" => file("a file name").map(|v| e.bearer_token_file = Some(v)),
        "ca_file" => file("a file name").map(|v| e.ca_file = Some(v)),
        "tls_verify" => parse_on_off(key, val).map(|x| e.tls_verify = x),
        "timeout" => parse_time(key, val, 100).and_then(|ms| {
            if ms > MAX_TIMEOUT_MS {
                return Err(invalid(key, val, "at most 5m"));
            }
            e.timeout_ms = ms;
            Ok(())
        }),
        "period" => parse_time(key, val, 1000).and_then(|ms| {
            if ms > 3_600_000 || ms % 1000 != 0 {
                return Err(invalid(key, val, "whole seconds, at most 1h"));
            }
            e.period_s = (ms / 1000) as u32;
            Ok(())
        }),
        "lag" => parse_time(key, val, 0).and_then(|ms| {
            if ms > 300_000 {
                return Err(invalid(key, val, "at most 5m"));
            }
            e.lag_ms = ms;
            Ok(())
        }),
        _ => match e.profile.set(key, val) {
            Ok(true) => Ok(()),
            Ok(false) => return None,
            Err(profile::SelectorError(why)) => Err(invalid(
                key,
                val,
                &format!("a series selector, like metric_name{{label=\"value\"}}[+...][*factor], or off ({why})"),
            )),
        },
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(args: &[&str]) -> String {
        parse_prometheus(args).unwrap_err().to_string()
    }

    #[test]
    fn a_prometheus_endpoint_parses_with_its_profile_and_overrides() {
        let e = parse_prometheus(&[
            "prom",
            "url=http://127.0.0.1:9090/prom",
            "cpu.ready.summation=off",
            "metrics=telegraf",
            "lag=15s",
            "ip_label=guest_ip",
            "default",
        ])
        .unwrap();
        assert_eq!(e.profile.base, "telegraf");
        assert!(e.profile.counter("cpu.ready.summation").is_none());
        assert_eq!(e.profile.ip_label.as_deref(), Some("guest_ip"));
        assert_eq!(e.lag_ms, 15_000);
        assert!(e.default && e.tls_verify);
        let d = parse_prometheus(&["p", "url=https://prom:9090"]).unwrap();
        assert_eq!(d.profile, Profile::vmware_exporter());
        assert_eq!(d.lag_ms, DEFAULT_LAG_MS);
    }

    #[test]
    fn what_cannot_work_or_would_leak_is_refused() {
        assert!(err(&["p"]).contains("\"url=\" is required"));
        assert!(err(&["p", "url=ftp://x"]).contains("base URL"));
        assert!(err(&["p", "url=http://a:b@x:9090"]).contains("bearer_token_file"));
        assert!(err(&["p", "url=http://x:9090/?q=1"]).contains("base URL"));
        assert!(err(&["p", "url=http://x", "bearer_token=abc"]).contains("bearer_token_file"));
        assert!(err(&["p", "url=http://x", "bearer_token_file=/t"]).contains("clear text"));
        // the scheme in capitals is the same scheme
        assert!(err(&["p", "url=HTTP://x", "bearer_token_file=/t"]).contains("clear text"));
        assert!(parse_prometheus(&[
            "p",
            "url=http://x",
            "bearer_token_file=/t",
            "insecure_http=on"
        ])
        .is_ok());
        assert!(
            err(&["p", "url=http://x", "metrics=collectd"]).contains("vmware_exporter or telegraf")
        );
        assert!(err(&["p", "url=http://x", "cpu.usagemhz.average=off"]).contains("CPU"));
        let e = err(&["p", "url=http://x", "mem.consumed.average=a{b=c}"]);
        assert!(
            e.contains("series selector") && e.contains("double quotes"),
            "{e}"
        );
        assert!(err(&["p", "url=http://x", "lag=10m"]).contains("at most 5m"));
        assert!(err(&["p", "url=http://x", "color=red"]).contains("invalid parameter"));
        assert!(err(&["p", "url=http://x", "url=http://y"]).contains("duplicate"));
        assert!(err(&["bad name", "url=http://x"]).contains("endpoint name"));
    }

    #[test]
    fn the_token_file_is_read_and_never_shown() {
        let e = parse_prometheus(&["p", "url=https://x", "bearer_token_file=/etc/nginx/token"])
            .unwrap();
        let c = e.client_config(Some(b"s3cret\n"), None).unwrap();
        assert_eq!(c.bearer_token.as_deref(), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(e.client_config(Some(b"\n"), None).is_err());
    }
}
