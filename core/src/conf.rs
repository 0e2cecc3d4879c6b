//! Parsing of the module's directive arguments, free of nginx types so it is
//! unit-tested on its own. The nginx glue passes the words of a directive
//! (without the directive name) and reports an `Err` with `nginx -t`'s file
//! and line.
//!
//! ```text
//! dwepc_vsphere NAME url=URL user=USER password_file=PATH
//!               [ca_file=PATH] [tls_verify=on|off] [timeout=TIME] [default];
//! dwepc [vsphere=NAME|off] [window=N] [interval=TIME] [ttl=TIME]
//!       [min_samples=N] [mode=shares|paper|wlc] [pick=least_conn|expected_delay]
//!       [inflight=N|off] [floor=F] [step=F]
//!       [cpu_ratio=F] [cpu_reserved=N] ... (same for mem, net, disk);
//! dwepc_node ADDRESS [vm=NAME] [cpu=MHZ] [mem=MB] [net=KBPS] [disk=KBPS]
//!       [cpu_ratio=F] [cpu_reserved=N] ...;
//! ```

use crate::algo::{Res, R, RESOURCES};

/// Balancing mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The default: counters set per-node capacity shares once per sample
    /// (cost per request, background, CPU ready, bottleneck water-filling);
    /// each request goes to the least in-flight per share, with an
    /// in-flight limit per node (see `shares.rs`).
    Shares,
    /// The paper's algorithm: Q = C - mean(E), L = Q·W - V.
    Paper,
    /// The dynamic weighted least-connection of the LVS paper
    /// (seeds/001), a comparison policy: weight = A·(1 − Σ K_j·use_j),
    /// 0 when any use > 0.9, rewritten only when it moved by more than B;
    /// the pick is the least `conns / weight`.
    Wlc,
}

impl Mode {
    /// Name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shares => "shares",
            Mode::Paper => "paper",
            Mode::Wlc => "wlc",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        match s {
            "shares" => Some(Mode::Shares),
            "paper" => Some(Mode::Paper),
            "wlc" => Some(Mode::Wlc),
            _ => None,
        }
    }
}

/// The per-request comparison of the shares mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// Least `in-flight / share` (nginx's least_conn with the shares as
    /// weights).
    LeastConn,
    /// Least `(in-flight + 1) / share` (shortest expected delay): lower
    /// latency with light traffic, less even utilisation.
    ExpectedDelay,
}

impl Pick {
    /// Name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Pick::LeastConn => "least_conn",
            Pick::ExpectedDelay => "expected_delay",
        }
    }
}

/// Which vSphere endpoint an upstream uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointRef {
    /// The http-level default endpoint, if one exists.
    Default,
    /// A named endpoint.
    Named(String),
    /// No endpoint: weighted round robin until configured otherwise.
    Off,
}

/// Per-resource accounting: usable = total × ratio − reserved
/// (as OpenStack Nova accounts hosts).
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

impl Accounting {
    /// Values set here win over `parent`'s.
    pub fn over(&self, parent: &Accounting) -> Accounting {
        Accounting {
            ratio: std::array::from_fn(|j| pick(self.ratio[j], parent.ratio[j])),
            reserved: std::array::from_fn(|j| pick(self.reserved[j], parent.reserved[j])),
        }
    }

    /// Usable capacity from a total (NaN stays NaN; never below zero).
    pub fn usable(&self, total: Res) -> Res {
        std::array::from_fn(|j| {
            let ratio = if self.ratio[j].is_nan() {
                1.0
            } else {
                self.ratio[j]
            };
            let reserved = if self.reserved[j].is_nan() {
                0.0
            } else {
                self.reserved[j]
            };
            let u = total[j] * ratio - reserved;
            if u.is_nan() {
                u
            } else {
                u.max(0.0)
            }
        })
    }

    fn parse(&mut self, key: &str, val: &str) -> Option<Result<(), String>> {
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

/// Units of capacities and reservations, per resource.
pub const UNITS: [&str; R] = ["MHz", "MB", "KB/s", "KB/s"];
/// Largest capacity (and reservation) accepted, per resource: far above
/// any VM (768 vCPUs at 5 GHz is 3.8e6 MHz; 24 TB of memory is 2.5e7 MB;
/// 8 Tbit/s is 1e9 KB/s), so only a typo is refused.
pub const MAX_CAPACITY: [f64; R] = [1e7, 1e8, 1e9, 1e9];
/// Overcommit ratios accepted.
pub const MIN_RATIO: f64 = 0.01;
pub const MAX_RATIO: f64 = 1000.0;

fn pick(a: f64, b: f64) -> f64 {
    if a.is_nan() {
        b
    } else {
        a
    }
}

/// Arguments of the `dwepc` directive.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConf {
    /// Endpoint used by this upstream.
    pub vsphere: EndpointRef,
    /// Window length m.
    pub window: usize,
    /// Poll interval in ms.
    pub interval_ms: u64,
    /// Age of the newest sample after which the balancer falls back to
    /// weighted round robin, ms.
    pub ttl_ms: u64,
    /// `ttl=` was written (else `ttl_ms` is the mode's default, raised to
    /// the takeover time by [`check_timing`]).
    pub ttl_set: bool,
    /// Samples with request counts needed for a fit.
    pub min_samples: usize,
    /// Balancing mode.
    pub mode: Mode,
    /// Shares mode: the per-request comparison.
    pub pick: Pick,
    /// Shares mode: in-flight limit per vCPU, spread by share (0 = off).
    pub inflight_per_vcpu: f64,
    /// Shares mode: smallest share of a node.
    pub floor: f64,
    /// Shares mode: fraction of the way to the target moved per sample.
    pub step: f64,
    /// Upstream-wide accounting defaults.
    pub accounting: Accounting,
}

/// Default window length of the paper and wlc modes (the paper's m).
pub const DEFAULT_WINDOW: usize = 20;
/// Default window length of the shares mode (1 minute of 20-s samples).
pub const DEFAULT_SHARES_WINDOW: usize = crate::shares::DEFAULT_WINDOW;
/// Default `ttl` of the shares mode, in poll intervals.
pub const SHARES_TTL_PERIODS: u64 = 10;
/// Shares mode: the cost window covers at least this long by default.
pub const SHARES_WINDOW_MS: u64 = 60_000;
/// Shares mode: by default the shares move half of the way to the target
/// in this long (`step` = 0.5 per 20-s sample).
pub const SHARES_HALF_LIFE_MS: u64 = 20_000;
/// Default poll interval: the realtime refresh rate of ESXi.
pub const DEFAULT_INTERVAL_MS: u64 = 20_000;
/// Largest window accepted.
pub const MAX_WINDOW: usize = 1024;

impl Default for UpstreamConf {
    fn default() -> Self {
        UpstreamConf {
            vsphere: EndpointRef::Default,
            window: DEFAULT_WINDOW,
            interval_ms: DEFAULT_INTERVAL_MS,
            ttl_ms: 3 * DEFAULT_INTERVAL_MS,
            ttl_set: false,
            min_samples: 2,
            mode: Mode::Shares,
            pick: Pick::LeastConn,
            inflight_per_vcpu: crate::shares::DEFAULT_INFLIGHT_PER_VCPU,
            floor: 0.01,
            step: 0.5,
            accounting: Accounting::default(),
        }
    }
}

fn invalid(key: &str, val: &str, want: &str) -> String {
    format!("invalid value \"{val}\" in \"{key}=\": expected {want}")
}

fn split(arg: &str) -> Result<(&str, &str), String> {
    arg.split_once('=')
        .ok_or_else(|| format!("invalid parameter \"{arg}\""))
}

fn parse_f64(s: &str) -> Option<f64> {
    let x: f64 = s.parse().ok()?;
    x.is_finite().then_some(x)
}

/// A fraction written as a number ("0.05") or a percentage ("5%").
fn parse_fraction(s: &str) -> Option<f64> {
    match s.strip_suffix('%') {
        Some(p) => parse_f64(p).map(|x| x / 100.0),
        None => parse_f64(s),
    }
}

fn parse_count(key: &str, val: &str, lo: usize, hi: usize) -> Result<usize, String> {
    match val.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid(key, val, &format!("an integer from {lo} to {hi}"))),
    }
}

fn parse_on_off(key: &str, val: &str) -> Result<bool, String> {
    match val {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(invalid(key, val, "\"on\" or \"off\"")),
    }
}

/// Parses an nginx time ("500ms", "20s", "1m30s", "2h"; a bare number is
/// seconds) into milliseconds, as nginx's `ngx_parse_time` does.
pub fn parse_time_ms(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let unit_start = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult: u64 = match &s[unit_start..i] {
            // a bare number is seconds, but only on its own
            "" if start == 0 && i == b.len() => 1000,
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(mult)?)?;
    }
    Some(total)
}

fn parse_time(key: &str, val: &str, min_ms: u64) -> Result<u64, String> {
    match parse_time_ms(val) {
        Some(ms) if ms >= min_ms && ms <= 86_400_000 => Ok(ms),
        _ => Err(invalid(
            key,
            val,
            &format!("a time from {min_ms}ms to 1d, like \"20s\""),
        )),
    }
}

/// Names valid for endpoints: letters, digits, '_', '-', '.'.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

/// Parses the words after `dwepc`.
pub fn parse_upstream(args: &[&str]) -> Result<UpstreamConf, String> {
    let mut c = UpstreamConf::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut ttl_set = false;
    let mut window_set = false;
    let mut min_samples_set = false;
    let mut step_set = false;
    for arg in args {
        let (key, val) = split(arg)?;
        if seen.contains(&key) {
            return Err(format!("duplicate parameter \"{key}\""));
        }
        seen.push(key);
        match key {
            "vsphere" => {
                c.vsphere = match val {
                    "off" => EndpointRef::Off,
                    v if valid_name(v) => EndpointRef::Named(v.to_string()),
                    _ => return Err(invalid(key, val, "an endpoint name or \"off\"")),
                }
            }
            "window" => {
                c.window = parse_count(key, val, 1, MAX_WINDOW)?;
                window_set = true;
            }
            "min_samples" => {
                c.min_samples = parse_count(key, val, 1, MAX_WINDOW)?;
                min_samples_set = true;
            }
            "interval" => c.interval_ms = parse_time(key, val, 100)?,
            "ttl" => {
                c.ttl_ms = parse_time(key, val, 100)?;
                ttl_set = true;
            }
            "mode" => {
                c.mode = Mode::parse(val)
                    .ok_or_else(|| invalid(key, val, "\"shares\", \"paper\" or \"wlc\""))?;
            }
            "pick" => {
                c.pick = match val {
                    "least_conn" => Pick::LeastConn,
                    "expected_delay" => Pick::ExpectedDelay,
                    _ => return Err(invalid(key, val, "\"least_conn\" or \"expected_delay\"")),
                }
            }
            "inflight" => {
                c.inflight_per_vcpu = match val {
                    "off" => 0.0,
                    _ => match parse_f64(val) {
                        Some(x) if x > 0.0 && x <= 10_000.0 => x,
                        _ => {
                            return Err(invalid(
                                key,
                                val,
                                "requests per vCPU above 0 (up to 10000), or \"off\"",
                            ))
                        }
                    },
                }
            }
            "floor" => {
                c.floor = match parse_fraction(val) {
                    Some(x) if (0.0..=0.2).contains(&x) => x,
                    _ => return Err(invalid(key, val, "a share from 0 to 0.2, like \"1%\"")),
                }
            }
            "step" => {
                step_set = true;
                c.step = match parse_fraction(val) {
                    Some(x) if x > 0.0 && x <= 1.0 => x,
                    _ => {
                        return Err(invalid(
                            key,
                            val,
                            "a fraction above 0 and up to 1, like \"0.5\"",
                        ))
                    }
                }
            }
            _ => match c.accounting.parse(key, val) {
                Some(r) => r?,
                None => return Err(format!("invalid parameter \"{arg}\"")),
            },
        }
    }
    if c.mode == Mode::Shares {
        // defaults in time, whatever the interval: a minute of samples for
        // the cost, and half of the way to the target every 20 s
        if !window_set {
            c.window = (SHARES_WINDOW_MS.div_ceil(c.interval_ms) as usize)
                .clamp(DEFAULT_SHARES_WINDOW, MAX_WINDOW);
        }
        if !step_set {
            c.step = 1.0 - 0.5f64.powf(c.interval_ms as f64 / SHARES_HALF_LIFE_MS as f64);
            c.step = c.step.clamp(0.01, 1.0);
        }
    } else {
        for k in ["pick", "inflight", "floor", "step"] {
            if seen.contains(&k) {
                return Err(format!(
                    "\"{k}=\" applies to \"mode=shares\" only, not \"mode={}\"",
                    c.mode.name()
                ));
            }
        }
    }
    if !min_samples_set {
        c.min_samples = c.min_samples.min(c.window);
    }
    if c.min_samples > c.window {
        return Err(format!(
            "\"min_samples={}\" is larger than \"window={}\"",
            c.min_samples, c.window
        ));
    }
    c.ttl_set = ttl_set;
    if !ttl_set {
        // shares move slowly and the pick uses in-flight counts: the last
        // shares stay good for minutes (a vCenter restart), while the
        // paper's and wlc's per-period allocations age fast
        c.ttl_ms = if c.mode == Mode::Shares {
            SHARES_TTL_PERIODS * c.interval_ms
        } else {
            3 * c.interval_ms
        };
    } else if c.ttl_ms < c.interval_ms {
        return Err(format!(
            "\"ttl\" ({} ms) is shorter than \"interval\" ({} ms): every sample would be stale",
            c.ttl_ms, c.interval_ms
        ));
    }
    Ok(c)
}

/// How an upstream server is found among the VMs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmRef {
    /// By the server's IP among the VMs' guest IPs (default).
    GuestIp,
    /// By VM name.
    Name(String),
}

/// Arguments of `dwepc_node`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConf {
    /// Server address as written in the `server` directive (or its
    /// resolved `ip:port`).
    pub address: String,
    /// VM lookup.
    pub vm: VmRef,
    /// Capacity overrides (NaN = take it from vSphere).
    pub capacity: Res,
    /// Accounting for this node.
    pub accounting: Accounting,
}

/// Parses the words after `dwepc_node`.
pub fn parse_node(args: &[&str]) -> Result<NodeConf, String> {
    let Some((address, rest)) = args.split_first() else {
        return Err("a server address is required".into());
    };
    if address.contains('=') || address.is_empty() {
        return Err(format!(
            "invalid server address \"{address}\": the first parameter must be the address of a \"server\" of this upstream"
        ));
    }
    let mut n = NodeConf {
        address: address.to_string(),
        vm: VmRef::GuestIp,
        capacity: [f64::NAN; R],
        accounting: Accounting::default(),
    };
    let mut seen: Vec<&str> = Vec::new();
    for arg in rest {
        let (key, val) = split(arg)?;
        if seen.contains(&key) {
            return Err(format!("duplicate parameter \"{key}\""));
        }
        seen.push(key);
        if key == "vm" {
            if val.is_empty() || val.len() > 255 {
                return Err(invalid(key, val, "a VM name"));
            }
            n.vm = VmRef::Name(val.to_string());
            continue;
        }
        if let Some(j) = RESOURCES.iter().position(|r| *r == key) {
            match parse_f64(val) {
                Some(x) if (1.0..=MAX_CAPACITY[j]).contains(&x) => n.capacity[j] = x,
                _ => {
                    return Err(invalid(
                        key,
                        val,
                        &format!("a capacity in {} from 1 to {:e}", UNITS[j], MAX_CAPACITY[j]),
                    ))
                }
            }
            continue;
        }
        match n.accounting.parse(key, val) {
            Some(r) => r?,
            None => return Err(format!("invalid parameter \"{arg}\"")),
        }
    }
    Ok(n)
}

/// Arguments of `dwepc_vsphere`.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointConf {
    /// Endpoint name.
    pub name: String,
    /// SDK URL (`https://host/sdk`).
    pub url: String,
    /// User name.
    pub user: String,
    /// File holding the password (first line).
    pub password_file: String,
    /// CA bundle (PEM) for TLS verification.
    pub ca_file: Option<String>,
    /// Verify the server's certificate (default on).
    pub tls_verify: bool,
    /// Timeout of every call, ms.
    pub timeout_ms: u64,
    /// Default endpoint for `dwepc;` without `vsphere=`.
    pub default: bool,
    /// `insecure_http=on`: an `http://` URL is accepted (labs only).
    pub insecure_http: bool,
}

impl EndpointConf {
    /// The client's configuration, from the contents of `password_file`
    /// and of `ca_file` (if any), checked.
    pub fn client_config(
        &self,
        password_file: &[u8],
        ca_file: Option<Vec<u8>>,
    ) -> Result<crate::vsphere::client::Config, String> {
        let password = password_from(&self.password_file, password_file)?;
        if let (Some(f), Some(pem)) = (&self.ca_file, &ca_file) {
            check_ca(f, pem)?;
        }
        Ok(crate::vsphere::client::Config {
            url: self.url.clone(),
            user: self.user.clone(),
            password,
            ca_pem: ca_file,
            tls_verify: self.tls_verify,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        })
    }

    /// What the configuration allows but an operator should know, for
    /// `[warn]` lines at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.url.starts_with("http://") {
            out.push(format!(
                "vSphere endpoint \"{}\" uses http://: the password crosses the network in clear text (insecure_http=on)",
                self.name
            ));
        } else if !self.tls_verify {
            out.push(format!(
                "vSphere endpoint \"{}\" has tls_verify=off: the vCenter's certificate is not checked and anyone on the path can take the password; use ca_file= instead",
                self.name
            ));
        }
        out
    }
}

/// Checks a `url=`: `https://HOST[:PORT]/PATH` (or `http://` if
/// `insecure_http`), no user or password in it, a path (the SDK's,
/// normally `/sdk`), no query or fragment. The value is echoed only when
/// it holds no credentials.
fn check_url(val: &str) -> Result<(), String> {
    const WANT: &str = "an https:// URL of the SDK, like https://vcenter.example.com/sdk";
    let u = url::Url::parse(val).map_err(|e| match e {
        url::ParseError::InvalidPort => "invalid port in \"url=\": expected 1 to 65535".to_string(),
        _ if val.contains('@') => "invalid \"url=\"".to_string(),
        e => format!("invalid value \"{val}\" in \"url=\": {e}; expected {WANT}"),
    })?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "credentials in \"url=\" are not accepted: put the user in user= and the password in password_file="
                .into(),
        );
    }
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", val, WANT));
    }
    if u.port() == Some(0) {
        return Err("invalid port in \"url=\": expected 1 to 65535".into());
    }
    if u.path() == "/" || u.path().is_empty() {
        return Err(format!(
            "\"url={val}\" has no path: give the SDK's, like https://{}/sdk",
            u.host_str().unwrap_or("vcenter")
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid("url", val, WANT));
    }
    Ok(())
}

/// Parses the words after `dwepc_vsphere`.
pub fn parse_endpoint(args: &[&str]) -> Result<EndpointConf, String> {
    let Some((name, rest)) = args.split_first() else {
        return Err("an endpoint name is required".into());
    };
    if !valid_name(name) {
        return Err(format!(
            "invalid endpoint name \"{name}\": use letters, digits, \"_\", \"-\" or \".\""
        ));
    }
    let mut e = EndpointConf {
        name: name.to_string(),
        url: String::new(),
        user: String::new(),
        password_file: String::new(),
        ca_file: None,
        tls_verify: true,
        timeout_ms: 5000,
        default: false,
        insecure_http: false,
    };
    let mut seen: Vec<&str> = Vec::new();
    for arg in rest {
        if *arg == "default" {
            e.default = true;
            continue;
        }
        if arg.starts_with("password=") {
            return Err(
                "inline passwords are not accepted: put the password in a file and use \"password_file=\""
                    .into(),
            );
        }
        let (key, val) = split(arg)?;
        if seen.contains(&key) {
            return Err(format!("duplicate parameter \"{key}\""));
        }
        seen.push(key);
        match key {
            "url" => {
                check_url(val)?;
                e.url = val.to_string();
            }
            "insecure_http" => e.insecure_http = parse_on_off(key, val)?,
            "user" => {
                if val.is_empty() {
                    return Err(invalid(key, val, "a user name"));
                }
                e.user = val.to_string();
            }
            "password_file" => {
                if val.is_empty() {
                    return Err(invalid(key, val, "a file name"));
                }
                e.password_file = val.to_string();
            }
            "ca_file" => {
                if val.is_empty() {
                    return Err(invalid(key, val, "a file name"));
                }
                e.ca_file = Some(val.to_string());
            }
            "tls_verify" => e.tls_verify = parse_on_off(key, val)?,
            "timeout" => {
                e.timeout_ms = parse_time(key, val, 100)?;
                if e.timeout_ms > MAX_TIMEOUT_MS {
                    return Err(invalid(key, val, "at most 5m"));
                }
            }
            _ => return Err(format!("invalid parameter \"{arg}\"")),
        }
    }
    if e.url.starts_with("http://") && !e.insecure_http {
        return Err(
            "\"url=\" is http://: the password would cross the network in clear text; use https://, or add insecure_http=on (labs only)"
                .into(),
        );
    }
    for (key, v) in [
        ("url", &e.url),
        ("user", &e.user),
        ("password_file", &e.password_file),
    ] {
        if v.is_empty() {
            return Err(format!("\"{key}=\" is required"));
        }
    }
    Ok(e)
}

/// Longest `timeout=` of an endpoint.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// Largest `password_file` read (as nginx's `ssl_password_file`).
pub const MAX_PASSWORD_FILE: usize = 4096;
/// Largest `ca_file` read.
pub const MAX_CA_FILE: usize = 1 << 20;

/// Reads a file named by the configuration: a regular file of at most
/// `max` bytes. Opened without blocking (a FIFO would hang `nginx -t`)
/// and checked on the open handle; a device, FIFO or directory is refused,
/// and nothing past `max` bytes is read.
pub fn read_config_file(path: &std::path::Path, what: &str, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let shown = path.display();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot read {what} \"{shown}\": {e}"))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("cannot read {what} \"{shown}\": {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} \"{shown}\" is not a regular file"));
    }
    let mut out = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("cannot read {what} \"{shown}\": {e}"))?;
    if out.len() > max {
        return Err(format!("{what} \"{shown}\" is larger than {max} bytes"));
    }
    Ok(out)
}

/// The time after which another worker takes polling over from a frozen
/// one: 3 s plus twice the longest call timeout (a poll blocked in one
/// call must not lose the lease).
pub fn takeover_ms(max_timeout_ms: u64) -> u64 {
    3000 + 2 * max_timeout_ms
}

/// Cross-checks an upstream's timing against its endpoint's timeout and
/// the takeover time (`max_timeout_ms`: the longest timeout of every
/// endpoint). The counters must outlive a takeover plus one poll:
/// `ttl >= interval + takeover`. A default `ttl` is raised to that (the
/// returned value); a `ttl=` written shorter is an error. Also returns
/// the warnings to log.
pub fn check_timing(
    name: &str,
    c: &UpstreamConf,
    endpoint: &EndpointConf,
    max_timeout_ms: u64,
) -> Result<(u64, Vec<String>), String> {
    let need = c.interval_ms + takeover_ms(max_timeout_ms);
    let mut warnings = Vec::new();
    if endpoint.timeout_ms > c.interval_ms {
        warnings.push(format!(
            "timeout={} ms of vSphere endpoint \"{}\" is longer than interval={} ms of upstream \"{name}\": a slow answer delays the next poll",
            endpoint.timeout_ms, endpoint.name, c.interval_ms
        ));
    }
    if c.ttl_ms >= need {
        return Ok((c.ttl_ms, warnings));
    }
    if c.ttl_set {
        return Err(format!(
            "\"ttl={} ms\" of upstream \"{name}\" is shorter than the time to replace a frozen polling worker plus one poll ({} ms = interval + 3 s + 2 x the longest vSphere timeout): the balancer would fall back to round robin on every takeover",
            c.ttl_ms, need
        ));
    }
    Ok((need, warnings))
}

/// The password in a `password_file`'s contents: its first line, which
/// must not be empty.
pub fn password_from(file: &str, bytes: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(bytes);
    match text.lines().next() {
        Some(first) if !first.is_empty() => Ok(first.to_string()),
        _ => Err(format!("password file \"{file}\" is empty")),
    }
}

/// Checks that a `ca_file`'s contents hold a PEM certificate.
pub fn check_ca(file: &str, bytes: &[u8]) -> Result<(), String> {
    const BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";
    if bytes.windows(BEGIN.len()).any(|w| w == BEGIN) {
        Ok(())
    } else {
        Err(format!("ca_file \"{file}\" holds no PEM certificate"))
    }
}

/// Which `dwepc_vsphere` endpoint each upstream uses (`refs`, in
/// configuration order, with where each `dwepc` directive was written):
/// the named one, the one marked `default`, or the only one.
pub fn resolve_endpoints(
    endpoints: &[(&EndpointConf, &str)],
    refs: &[(&EndpointRef, &str)],
) -> Result<Vec<Option<usize>>, String> {
    let defaults: Vec<usize> = (0..endpoints.len())
        .filter(|&i| endpoints[i].0.default)
        .collect();
    if let Some(&second) = defaults.get(1) {
        return Err(format!(
            "more than one default \"dwepc_vsphere\" endpoint in {}",
            endpoints[second].1
        ));
    }
    let default = defaults
        .first()
        .copied()
        .or((endpoints.len() == 1).then_some(0));
    refs.iter()
        .map(|(r, at)| match r {
            EndpointRef::Off => Ok(None),
            EndpointRef::Default if default.is_none() && endpoints.len() > 1 => Err(format!(
                "\"dwepc\" in {at} names no vSphere endpoint and none is marked \"default\": add vsphere= with one of {}, or mark one \"default\"",
                endpoints
                    .iter()
                    .map(|(e, _)| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            EndpointRef::Default => Ok(default),
            EndpointRef::Named(name) => endpoints
                .iter()
                .position(|(e, _)| &e.name == name)
                .map(Some)
                .ok_or_else(|| format!("unknown vSphere endpoint \"{name}\" in {at}")),
        })
        .collect()
}

/// The `dwepc_node` line (index into `nodes`, their addresses) that applies
/// to each server (`(name, server)`: its `ip:port` and its address as
/// written); a node line matching no server is an error naming it.
pub fn match_nodes(nodes: &[&str], servers: &[(&str, &str)]) -> Result<Vec<Option<usize>>, usize> {
    let mut out = vec![None; servers.len()];
    for (k, node) in nodes.iter().enumerate() {
        let mut found = false;
        for (i, (name, server)) in servers.iter().enumerate() {
            if name == node || server == node {
                out[i] = Some(k);
                found = true;
            }
        }
        if !found {
            return Err(k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn password_and_ca_files_are_checked() {
        assert_eq!(password_from("p", b"secret\nignored\n").unwrap(), "secret");
        assert!(password_from("p", b"\nsecret")
            .unwrap_err()
            .contains("\"p\" is empty"));
        assert!(password_from("p", b"").is_err());
        assert!(check_ca("c", b"x\n-----BEGIN CERTIFICATE-----\nAAA").is_ok());
        assert!(check_ca("c", b"-----BEGIN PRIVATE KEY-----")
            .unwrap_err()
            .contains("no PEM certificate"));
    }

    #[test]
    fn endpoints_resolve_by_name_default_or_the_only_one() {
        let ep = |args: &[&str]| parse_endpoint(args).unwrap();
        let a = ep(&["a", "url=https://a/sdk", "user=u", "password_file=p"]);
        let b = ep(&[
            "b",
            "url=https://b/sdk",
            "user=u",
            "password_file=p",
            "default",
        ]);
        let named = EndpointRef::Named("a".into());
        let refs = [
            (&EndpointRef::Default, "f:1"),
            (&named, "f:2"),
            (&EndpointRef::Off, "f:3"),
        ];
        assert_eq!(
            resolve_endpoints(&[(&a, "f:0"), (&b, "f:0")], &refs).unwrap(),
            vec![Some(1), Some(0), None]
        );
        // the only endpoint is the default
        assert_eq!(
            resolve_endpoints(&[(&a, "f:0")], &refs[..1]).unwrap(),
            vec![Some(0)]
        );
        // two endpoints, none marked: the upstream must name one
        assert!(resolve_endpoints(&[(&a, "f:0"), (&a, "f:0")], &refs[..1]).is_err());
        let e = resolve_endpoints(&[(&b, "f:7"), (&b, "f:8")], &[]).unwrap_err();
        assert!(
            e.contains("more than one default") && e.contains("f:8"),
            "{e}"
        );
        let missing = EndpointRef::Named("z".into());
        let e = resolve_endpoints(&[(&a, "f:0")], &[(&missing, "f:9")]).unwrap_err();
        assert_eq!(e, "unknown vSphere endpoint \"z\" in f:9");
    }

    #[test]
    fn node_lines_match_servers_by_address_or_as_written() {
        let servers = [
            ("127.0.0.1:80", "127.0.0.1:80"),
            ("127.0.0.2:80", "web.local:80"),
            ("127.0.0.3:80", "web.local:80"),
        ];
        assert_eq!(
            match_nodes(&["web.local:80", "127.0.0.1:80"], &servers).unwrap(),
            vec![Some(1), Some(0), Some(0)]
        );
        assert_eq!(match_nodes(&["127.0.0.9:80"], &servers), Err(0));
        assert_eq!(match_nodes(&[], &servers).unwrap(), vec![None; 3]);
    }

    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("20s"), Some(20_000));
        assert_eq!(parse_time_ms("20"), Some(20_000));
        assert_eq!(parse_time_ms("500ms"), Some(500));
        assert_eq!(parse_time_ms("1m30s"), Some(90_000));
        assert_eq!(parse_time_ms("1h"), Some(3_600_000));
        for bad in ["", "s", "10x", "-1s", "1.5s", "10 s", "20s5"] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn upstream_defaults() {
        let c = parse_upstream(&[]).unwrap();
        assert_eq!(c.vsphere, EndpointRef::Default);
        assert_eq!(
            (c.window, c.interval_ms, c.ttl_ms, c.min_samples),
            (3, 20_000, 200_000, 2)
        );
        assert_eq!(c.mode, Mode::Shares);
        assert_eq!(
            (c.pick, c.inflight_per_vcpu, c.floor, c.step),
            (Pick::LeastConn, 32.0, 0.01, 0.5)
        );
        let c = parse_upstream(&["mode=paper"]).unwrap();
        assert_eq!(
            (c.mode, c.window, c.min_samples, c.ttl_ms),
            (Mode::Paper, 20, 2, 60_000)
        );
        let c = parse_upstream(&[
            "pick=expected_delay",
            "inflight=off",
            "floor=2%",
            "step=0.25",
            "window=1",
        ])
        .unwrap();
        assert_eq!(c.pick, Pick::ExpectedDelay);
        assert_eq!((c.inflight_per_vcpu, c.floor, c.step), (0.0, 0.02, 0.25));
        assert_eq!((c.window, c.min_samples), (1, 1));
        let c = parse_upstream(&["interval=3s", "window=20", "mode=paper"]).unwrap();
        assert_eq!((c.interval_ms, c.ttl_ms, c.window), (3000, 9000, 20));
        let c = parse_upstream(&["interval=3s"]).unwrap();
        assert_eq!(c.ttl_ms, 30_000);
        // shares defaults are times: a minute of samples, half-way in 20 s
        assert_eq!(c.window, 20);
        assert!(
            (c.step - (1.0 - 0.5f64.powf(0.15))).abs() < 1e-12,
            "{}",
            c.step
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
            (&["mode=magic"], "expected \"shares\", \"paper\" or \"wlc\""),
            (&["pick=fast"], "\"least_conn\" or \"expected_delay\""),
            (&["inflight=0"], "above 0"),
            (&["inflight=-3"], "above 0"),
            (&["floor=30%"], "from 0 to 0.2"),
            (&["step=0"], "above 0 and up to 1"),
            (&["step=1.5"], "above 0 and up to 1"),
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
            let err = parse_upstream(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn node_parsing() {
        let n = parse_node(&[
            "10.0.0.1:80",
            "vm=web-01",
            "net=1250000",
            "cpu_ratio=2",
            "cpu_reserved=100",
        ])
        .unwrap();
        assert_eq!(n.vm, VmRef::Name("web-01".into()));
        assert_eq!(n.capacity[2], 1_250_000.0);
        assert!(n.capacity[0].is_nan());
        assert_eq!(n.accounting.usable([1000.0, 10.0, 1.0, 1.0])[0], 1900.0);
        assert!(parse_node(&[]).is_err());
        assert!(parse_node(&["vm=x"]).unwrap_err().contains("address"));
        assert!(parse_node(&["a:1", "cpu=0"])
            .unwrap_err()
            .contains("a capacity in MHz from 1 to 1e7"));
        assert!(parse_node(&["a:1", "gpu=1"])
            .unwrap_err()
            .contains("invalid parameter"));
    }

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

    #[test]
    fn endpoint_parsing() {
        let e = parse_endpoint(&[
            "vc1",
            "url=https://vc/sdk",
            "user=ro@vsphere.local",
            "password_file=/etc/p",
            "tls_verify=off",
            "timeout=2s",
        ])
        .unwrap();
        assert!(!e.tls_verify && e.timeout_ms == 2000 && !e.default);
        assert!(
            parse_endpoint(&["vc1", "url=https://vc/sdk", "user=u", "password=x"])
                .unwrap_err()
                .contains("inline passwords")
        );
        assert!(parse_endpoint(&["vc1", "url=https://vc/sdk", "user=u"])
            .unwrap_err()
            .contains("\"password_file=\" is required"));
        assert!(
            parse_endpoint(&["vc1", "url=ftp://x", "user=u", "password_file=p"])
                .unwrap_err()
                .contains("URL")
        );
        assert!(parse_endpoint(&["bad name", "url=https://vc/sdk"]).is_err());
        assert!(parse_endpoint(&[
            "v",
            "url=https://vc/sdk",
            "user=u",
            "password_file=p",
            "tls_verify=maybe"
        ])
        .unwrap_err()
        .contains("\"on\" or \"off\""));
    }

    fn endpoint_with(extra: &[&str]) -> Result<EndpointConf, String> {
        let mut a = vec!["vc", "user=u", "password_file=p"];
        a.extend_from_slice(extra);
        parse_endpoint(&a)
    }

    #[test]
    fn urls_that_cannot_work_or_leak_are_refused() {
        // credentials: refused, and never echoed
        let e = endpoint_with(&["url=https://admin:s3cret@vc/sdk"]).unwrap_err();
        assert!(
            e.contains("put the user in user= and the password in password_file="),
            "{e}"
        );
        assert!(!e.contains("s3cret"), "{e}");
        let e = endpoint_with(&["url=https://admin@vc/sdk"]).unwrap_err();
        assert!(e.contains("credentials"), "{e}");
        let e = endpoint_with(&["url=https://admin:s3cret@vc:99999/sdk"]).unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        // clear text only when asked for
        let e = endpoint_with(&["url=http://vc/sdk"]).unwrap_err();
        assert!(
            e.contains("clear text") && e.contains("insecure_http=on"),
            "{e}"
        );
        let ok = endpoint_with(&["url=http://vc/sdk", "insecure_http=on"]).unwrap();
        assert!(ok.warnings()[0].contains("clear text"));
        // no path, bad port, bad scheme, query
        for (url, want) in [
            ("url=https://x", "has no path"),
            ("url=https://x/", "has no path"),
            ("url=https://vc:99999/sdk", "invalid port"),
            ("url=https://vc:0/sdk", "invalid port"),
            ("url=ftp://vc/sdk", "https://"),
        ] {
            let e = endpoint_with(&[url]).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
        assert!(endpoint_with(&["url=https://vc/sdk?x=1"]).is_err());
        assert!(endpoint_with(&["url=https://vc/sdk", "timeout=10m"]).is_err());
        // tls_verify=off is allowed and warned about
        let e = endpoint_with(&["url=https://vc:8443/sdk", "tls_verify=off"]).unwrap();
        assert!(e.warnings()[0].contains("tls_verify=off"));
        assert!(endpoint_with(&["url=https://vc/sdk"])
            .unwrap()
            .warnings()
            .is_empty());
    }

    #[test]
    fn config_files_are_small_regular_files_read_without_blocking() {
        let dir = std::env::temp_dir().join(format!("dwepc-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let regular = dir.join("pw");
        std::fs::write(&regular, "secret\n").unwrap();
        assert_eq!(
            read_config_file(&regular, "password_file", MAX_PASSWORD_FILE).unwrap(),
            b"secret\n"
        );
        // a FIFO with no writer: refused at once, not waited on
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let t = std::time::Instant::now();
        let e = read_config_file(&fifo, "password_file", MAX_PASSWORD_FILE).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        // a device that never ends, a directory, a large file
        let e =
            read_config_file(std::path::Path::new("/dev/zero"), "password_file", 4096).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(read_config_file(&dir, "ca_file", MAX_CA_FILE)
            .unwrap_err()
            .contains("not a regular file"));
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 5000]).unwrap();
        let e = read_config_file(&big, "password_file", MAX_PASSWORD_FILE).unwrap_err();
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        assert!(read_config_file(&dir.join("none"), "ca_file", 10)
            .unwrap_err()
            .contains("cannot read ca_file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ttl_must_outlive_a_takeover_and_a_default_is_raised_to_it() {
        let vc = endpoint_with(&["url=https://vc/sdk", "timeout=2s"]).unwrap();
        // interval 1 s + 3 s + 2 x 2 s = 8 s
        let c = parse_upstream(&["interval=1s", "ttl=6s"]).unwrap();
        let e = check_timing("app", &c, &vc, 2000).unwrap_err();
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

    #[test]
    fn several_endpoints_and_none_default_must_be_named() {
        let a = endpoint_with(&["url=https://a/sdk"]).unwrap();
        let mut b = endpoint_with(&["url=https://b/sdk"]).unwrap();
        b.name = "vc2".into();
        let eps = [(&a, "f:1"), (&b, "f:2")];
        let e = resolve_endpoints(&eps, &[(&EndpointRef::Default, "f:9")]).unwrap_err();
        assert!(e.contains("vc, vc2") && e.contains("f:9"), "{e}");
        let named = EndpointRef::Named("vc2".into());
        assert_eq!(
            resolve_endpoints(&eps, &[(&named, "f:9"), (&EndpointRef::Off, "f:10")]).unwrap(),
            vec![Some(1), None]
        );
        b.default = true;
        let eps = [(&a, "f:1"), (&b, "f:2")];
        assert_eq!(
            resolve_endpoints(&eps, &[(&EndpointRef::Default, "f:9")]).unwrap(),
            vec![Some(1)]
        );
        // one endpoint, or none: as before
        assert_eq!(
            resolve_endpoints(&[(&a, "f:1")], &[(&EndpointRef::Default, "f:9")]).unwrap(),
            vec![Some(0)]
        );
        assert_eq!(
            resolve_endpoints(&[], &[(&EndpointRef::Default, "f:9")]).unwrap(),
            vec![None]
        );
    }

    #[test]
    fn capacities_and_reservations_out_of_any_range_are_refused() {
        for bad in ["cpu=1e-300", "cpu=0.5", "mem=1e12", "net=0", "disk=inf"] {
            let e = parse_node(&["127.0.0.1:80", bad]).unwrap_err();
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
