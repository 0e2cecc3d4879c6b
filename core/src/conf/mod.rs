//! The module's configuration, free of nginx types so it is unit-tested on
//! its own: each directive's words parsed and checked, and the checks that
//! span directives. The nginx glue passes the words of a directive
//! (without its name) and reports an error with `nginx -t`'s file and
//! line.
//!
//! ```text
//! dwepc_vsphere NAME url=URL user=USER password_file=PATH
//!               [ca_file=PATH] [tls_verify=on|off] [timeout=TIME] [default];
//! dwepc_prometheus NAME url=URL [metrics=vmware_exporter|telegraf]
//!               [bearer_token_file=PATH] [lag=TIME] [COUNTER=SELECTOR] ... [default];
//! dwepc [vsphere=NAME|prometheus=NAME|off] [window=N] [interval=TIME] [ttl=TIME]
//!       [min_samples=N] [mode=shares|paper|wlc] [pick=least_conn|expected_delay]
//!       [inflight=N|off] [floor=F] [step=F]
//!       [cpu_ratio=F] [cpu_reserved=N] ... (same for mem, net, disk);
//! dwepc_node ADDRESS [vm=NAME] [cpu=MHZ] [mem=MB] [net=KBPS] [disk=KBPS]
//!       [cpu_ratio=F] [cpu_reserved=N] ...;
//! ```
//!
//! | file | job |
//! |---|---|
//! | [`upstream`] | `dwepc` |
//! | [`node`] | `dwepc_node`, and which server each line applies to |
//! | [`endpoint`] | `dwepc_vsphere`, and which endpoint each upstream uses |
//! | [`prometheus`] | `dwepc_prometheus` |
//! | [`accounting`] | ratios and reservations (`cpu_ratio=` ...) |
//! | [`files`] | the password and CA files |
//! | [`timing`] | `ttl` against the takeover time |
//! | [`value`] | the value syntaxes (times, fractions, on/off, names) |

pub mod accounting;
pub mod endpoint;
pub mod files;
pub mod node;
pub mod prometheus;
pub mod timing;
pub mod upstream;
pub mod value;

pub use accounting::{Accounting, MAX_RATIO, MIN_RATIO};
pub use endpoint::{
    parse_endpoint, resolve_endpoints, EndpointConf, NamedEndpoint, SourceConf, SourceKind,
    DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS,
};
pub use files::{check_ca, password_from, read_config_file, MAX_CA_FILE, MAX_PASSWORD_FILE};
pub use node::{match_nodes, parse_node, NodeConf, VmRef};
pub use prometheus::{parse_prometheus, PrometheusConf};
pub use timing::{check_timing, longest_timeout, takeover_ms};
pub use upstream::{parse_upstream, EndpointRef, UpstreamConf, DEFAULT_INTERVAL_MS};
pub use value::{parse_time_ms, valid_name};

/// Why a configuration cannot work. Messages name the parameter and what
/// it expects, and never echo a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfError {
    #[error("invalid value \"{value}\" in \"{key}=\": expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        expected: String,
    },
    #[error("invalid parameter \"{0}\"")]
    InvalidParameter(String),
    #[error("duplicate parameter \"{0}\"")]
    DuplicateParameter(String),
    #[error("\"{key}=\" applies to {modes} only, not \"mode={mode}\"")]
    OnlyInMode {
        key: String,
        modes: String,
        mode: &'static str,
    },
    #[error("\"min_samples={min_samples}\" is larger than \"window={window}\"")]
    MinSamplesAboveWindow { min_samples: usize, window: usize },
    #[error("\"ttl\" ({ttl_ms} ms) is shorter than \"interval\" ({interval_ms} ms): every sample would be stale")]
    TtlBelowInterval { ttl_ms: u64, interval_ms: u64 },
    #[error("\"ttl={ttl_ms} ms\" of upstream \"{upstream}\" is shorter than the time to replace a frozen polling worker plus one poll ({need_ms} ms = interval + 3 s + 2 x the longest vSphere timeout): the balancer would fall back to round robin on every takeover")]
    TtlBelowTakeover {
        upstream: String,
        ttl_ms: u64,
        need_ms: u64,
    },
    #[error("a server address is required")]
    NoServerAddress,
    #[error("invalid server address \"{0}\": the first parameter must be the address of a \"server\" of this upstream")]
    BadServerAddress(String),
    #[error("an endpoint name is required")]
    NoEndpointName,
    #[error("invalid endpoint name \"{0}\": use letters, digits, \"_\", \"-\" or \".\"")]
    BadEndpointName(String),
    #[error(
        "inline passwords are not accepted: put the password in a file and use \"password_file=\""
    )]
    InlinePassword,
    #[error("\"url=\" is http://: the password would cross the network in clear text; use https://, or add insecure_http=on (labs only)")]
    ClearText,
    #[error("\"{0}=\" is required")]
    Required(&'static str),
    #[error("invalid port in \"url=\": expected 1 to 65535")]
    BadPort,
    /// A `url=` that does not parse and holds a `@`: not echoed.
    #[error("invalid \"url=\"")]
    BadUrlHidden,
    #[error(
        "invalid value \"{value}\" in \"url=\": {reason}; expected {}",
        endpoint::URL_WANTED
    )]
    BadUrl { value: String, reason: String },
    #[error("credentials in \"url=\" are not accepted: put the user in user= and the password in password_file=")]
    CredentialsInUrl,
    #[error("\"url={url}\" has no path: give the SDK's, like https://{host}/sdk")]
    NoSdkPath { url: String, host: String },
    #[error("more than one default endpoint (dwepc_vsphere, dwepc_prometheus) in {0}")]
    TwoDefaults(String),
    #[error("\"dwepc\" in {at} names no endpoint and none is marked \"default\": add vsphere= or prometheus= with one of {names}, or mark one \"default\"")]
    NoDefaultEndpoint { at: String, names: String },
    #[error("unknown {kind} endpoint \"{name}\" in {at}")]
    UnknownEndpoint {
        kind: &'static str,
        name: String,
        at: String,
    },
    #[error("\"{key}={name}\" in {at}: \"{name}\" is a {is} endpoint; write {wanted}={name}")]
    WrongEndpointKind {
        key: &'static str,
        name: String,
        is: &'static str,
        wanted: &'static str,
        at: String,
    },
    #[error("\"vsphere=\" and \"prometheus=\" together: an upstream reads one endpoint")]
    TwoSources,
    #[error("duplicate endpoint \"{0}\" (names are shared by dwepc_vsphere and dwepc_prometheus)")]
    DuplicateEndpoint(String),
    #[error(
        "a token in \"url=\" is not accepted: put it in a file and use \"bearer_token_file=\""
    )]
    TokenInUrl,
    #[error(
        "inline tokens are not accepted: put the token in a file and use \"bearer_token_file=\""
    )]
    InlineToken,
    #[error("\"url=\" is http:// and a bearer token is set: the token would cross the network in clear text; use https://, or add insecure_http=on (labs only)")]
    TokenInClearText,
    #[error(
        "the profile has no CPU counter (cpu.usagemhz.average): dwepc cannot balance without it"
    )]
    NoCpuCounter,
    #[error("server {server} of upstream \"{upstream}\" is found by its guest IP, and Prometheus endpoint \"{endpoint}\" (metrics={profile}) has no guest IP label: name its VM with \"dwepc_node {server} vm=NAME\", or set ip_label= on the endpoint")]
    NoGuestIpLabel {
        server: String,
        upstream: String,
        endpoint: String,
        profile: &'static str,
    },
    #[error("cannot read {what} \"{path}\": {reason}")]
    CannotRead {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{what} \"{path}\" is not a regular file")]
    NotRegularFile { what: &'static str, path: String },
    #[error("{what} \"{path}\" is larger than {max} bytes")]
    FileTooLarge {
        what: &'static str,
        path: String,
        max: usize,
    },
    #[error("password file \"{0}\" is empty")]
    EmptyPassword(String),
    #[error("ca_file \"{0}\" holds no PEM certificate")]
    NoCertificate(String),
    #[error("\"{0}\" directive is duplicate")]
    DuplicateDirective(&'static str),
    #[error("duplicate \"dwepc_node\" for \"{0}\"")]
    DuplicateNode(String),
    #[error("\"dwepc_node\" in upstream \"{upstream}\" without \"dwepc\" in {at}")]
    NodeWithoutDwepc { upstream: String, at: String },
    #[error("not inside an \"upstream\" block")]
    NotInUpstream,
    #[error("no dwepc main configuration")]
    NoMainConf,
    #[error("out of memory")]
    OutOfMemory,
    /// Another error, with where the directive was written.
    #[error("{error} in {at}")]
    At { error: Box<ConfError>, at: String },
}

impl ConfError {
    /// The error, said with where it was written (`file:line`).
    pub fn at(self, at: &str) -> ConfError {
        ConfError::At {
            error: Box::new(self),
            at: at.to_string(),
        }
    }
}
