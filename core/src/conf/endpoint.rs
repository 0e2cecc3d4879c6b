//! `dwepc_vsphere NAME url=URL user=USER password_file=PATH [scope=PATH] [ca_file=PATH]
//! [tls_verify=on|off] [insecure_http=on|off] [timeout=TIME] [default]` at
//! http level: one vSphere endpoint, refused at `nginx -t` when it cannot
//! work or would leak the password; and which endpoint each upstream
//! uses.

use super::files::{check_ca, password_from};
use super::value::{invalid, once, parse_on_off, parse_time, split, valid_name};
use super::ConfError;
use super::EndpointRef;

/// What a `url=` must look like, for messages.
pub const URL_WANTED: &str = "an https:// URL of the SDK, like https://vcenter.example.com/sdk";

/// Longest `timeout=` of an endpoint.
pub const MAX_TIMEOUT_MS: u64 = 300_000;
/// `timeout=` when none is written.
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;

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
    /// `scope=`: the inventory path whose VMs are read (None: all).
    pub scope: Option<String>,
}

impl EndpointConf {
    /// The client's configuration, from the contents of `password_file`
    /// and of `ca_file` (if any), checked.
    pub fn client_config(
        &self,
        password_file: &[u8],
        ca_file: Option<Vec<u8>>,
    ) -> Result<crate::vsphere::client::Config, ConfError> {
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
            scope: self.scope.clone(),
            timeout: std::time::Duration::from_millis(self.timeout_ms),
        })
    }

    /// What the configuration allows but an operator should know, for
    /// `[warn]` lines at start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.url.to_ascii_lowercase().starts_with("http://") {
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
fn check_url(val: &str) -> Result<(), ConfError> {
    let u = url::Url::parse(val).map_err(|e| match e {
        url::ParseError::InvalidPort => ConfError::BadPort,
        _ if val.contains('@') => ConfError::BadUrlHidden,
        e => ConfError::BadUrl {
            value: val.to_string(),
            reason: e.to_string(),
        },
    })?;
    if !u.username().is_empty() || u.password().is_some() {
        return Err(ConfError::CredentialsInUrl);
    }
    if !matches!(u.scheme(), "https" | "http") || u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url", val, URL_WANTED));
    }
    if u.port() == Some(0) {
        return Err(ConfError::BadPort);
    }
    if u.path() == "/" || u.path().is_empty() {
        return Err(ConfError::NoSdkPath {
            url: val.to_string(),
            host: u.host_str().unwrap_or("vcenter").to_string(),
        });
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(invalid("url", val, URL_WANTED));
    }
    Ok(())
}

/// Parses the words after `dwepc_vsphere`.
pub fn parse_endpoint(args: &[&str]) -> Result<EndpointConf, ConfError> {
    let Some((name, rest)) = args.split_first() else {
        return Err(ConfError::NoEndpointName);
    };
    if !valid_name(name) {
        return Err(ConfError::BadEndpointName(name.to_string()));
    }
    let mut e = EndpointConf {
        name: name.to_string(),
        url: String::new(),
        user: String::new(),
        password_file: String::new(),
        ca_file: None,
        tls_verify: true,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        default: false,
        insecure_http: false,
        scope: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    for arg in rest {
        if *arg == "default" {
            e.default = true;
            continue;
        }
        if arg.starts_with("password=") {
            return Err(ConfError::InlinePassword);
        }
        let (key, val) = split(arg)?;
        once(&mut seen, key)?;
        parse_param(&mut e, key, val)
            .ok_or_else(|| ConfError::InvalidParameter(arg.to_string()))??;
    }
    if e.url.to_ascii_lowercase().starts_with("http://") && !e.insecure_http {
        return Err(ConfError::ClearText);
    }
    for (key, v) in [
        ("url", &e.url),
        ("user", &e.user),
        ("password_file", &e.password_file),
    ] {
        if v.is_empty() {
            return Err(ConfError::Required(key));
        }
    }
    Ok(e)
}

/// Takes one `key=value` of `dwepc_vsphere`; `None` for a key it does not
/// know.
fn parse_param(e: &mut EndpointConf, key: &str, val: &str) -> Option<Result<(), ConfError>> {
    let not_empty = |what: &str| {
        if val.is_empty() {
            Err(invalid(key, val, what))
        } else {
            Ok(val.to_string())
        }
    };
    let r = match key {
        "url" => check_url(val).map(|()| e.url = val.to_string()),
        "insecure_http" => parse_on_off(key, val).map(|x| e.insecure_http = x),
        "user" => not_empty("a user name").map(|v| e.user = v),
        "password_file" => not_empty("a file name").map(|v| e.password_file = v),
        "ca_file" => not_empty("a file name").map(|v| e.ca_file = Some(v)),
        "tls_verify" => parse_on_off(key, val).map(|x| e.tls_verify = x),
        "scope" => check_scope(val).map(|p| e.scope = Some(p)),
        "timeout" => parse_time(key, val, 100).and_then(|ms| {
            if ms > MAX_TIMEOUT_MS {
                return Err(invalid(key, val, "at most 5m"));
            }
            e.timeout_ms = ms;
            Ok(())
        }),
        _ => return None,
    };
    Some(r)
}

/// A `scope=` inventory path: not empty, no empty element, no leading
/// slash (vSphere's inventory paths begin at the datacenter); a trailing
/// slash is dropped.
fn check_scope(val: &str) -> Result<String, ConfError> {
    let path = val.strip_suffix('/').unwrap_or(val);
    if path.is_empty() || path.starts_with('/') || path.split('/').any(str::is_empty) {
        let want = "an inventory path such as \"DC/vm/Folder\", \"DC/host/Cluster\" or \"DC/host/Cluster/Resources/Pool\"";
        return Err(invalid("scope", val, want));
    }
    Ok(path.to_string())
}

/// Where an endpoint's counters come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    Vsphere,
    Prometheus,
}

impl SourceKind {
    /// Its word in messages.
    pub fn word(self) -> &'static str {
        match self {
            SourceKind::Vsphere => "vSphere",
            SourceKind::Prometheus => "Prometheus",
        }
    }
    /// The `dwepc` parameter that names an endpoint of this kind.
    pub fn key(self) -> &'static str {
        match self {
            SourceKind::Vsphere => "vsphere",
            SourceKind::Prometheus => "prometheus",
        }
    }
}

/// What every endpoint directive has: a name, `default`, a kind, a call
/// timeout.
pub trait NamedEndpoint {
    fn name(&self) -> &str;
    fn is_default(&self) -> bool;
    fn kind(&self) -> SourceKind;
    fn timeout_ms(&self) -> u64;
}

impl NamedEndpoint for EndpointConf {
    fn name(&self) -> &str {
        &self.name
    }
    fn is_default(&self) -> bool {
        self.default
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Vsphere
    }
    fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }
}

impl NamedEndpoint for super::PrometheusConf {
    fn name(&self) -> &str {
        &self.name
    }
    fn is_default(&self) -> bool {
        self.default
    }
    fn kind(&self) -> SourceKind {
        SourceKind::Prometheus
    }
    fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }
}

/// An endpoint directive of either kind.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConf {
    Vsphere(EndpointConf),
    Prometheus(super::PrometheusConf),
}

impl SourceConf {
    fn inner(&self) -> &dyn NamedEndpoint {
        match self {
            SourceConf::Vsphere(e) => e,
            SourceConf::Prometheus(e) => e,
        }
    }
}

impl NamedEndpoint for SourceConf {
    fn name(&self) -> &str {
        self.inner().name()
    }
    fn is_default(&self) -> bool {
        self.inner().is_default()
    }
    fn kind(&self) -> SourceKind {
        self.inner().kind()
    }
    fn timeout_ms(&self) -> u64 {
        self.inner().timeout_ms()
    }
}

/// Which endpoint each upstream uses (`refs`, in configuration order,
/// with where each `dwepc` directive was written): the named one (of the
/// kind its parameter names), the one marked `default`, or the only one.
pub fn resolve_endpoints<E: NamedEndpoint>(
    endpoints: &[(&E, &str)],
    refs: &[(&EndpointRef, &str)],
) -> Result<Vec<Option<usize>>, ConfError> {
    let defaults: Vec<usize> = (0..endpoints.len())
        .filter(|&i| endpoints[i].0.is_default())
        .collect();
    if let Some(&second) = defaults.get(1) {
        return Err(ConfError::TwoDefaults(endpoints[second].1.to_string()));
    }
    let default = defaults
        .first()
        .copied()
        .or((endpoints.len() == 1).then_some(0));
    refs.iter()
        .map(|(r, at)| match r {
            EndpointRef::Off => Ok(None),
            EndpointRef::Default if default.is_none() && endpoints.len() > 1 => {
                Err(ConfError::NoDefaultEndpoint {
                    at: at.to_string(),
                    names: endpoints
                        .iter()
                        .map(|(e, _)| e.name())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
            EndpointRef::Default => Ok(default),
            EndpointRef::Named(kind, name) => {
                let k = endpoints
                    .iter()
                    .position(|(e, _)| e.name() == name)
                    .ok_or_else(|| ConfError::UnknownEndpoint {
                        kind: kind.word(),
                        name: name.clone(),
                        at: at.to_string(),
                    })?;
                let is = endpoints[k].0.kind();
                if is != *kind {
                    return Err(ConfError::WrongEndpointKind {
                        key: kind.key(),
                        name: name.clone(),
                        is: is.word(),
                        wanted: is.key(),
                        at: at.to_string(),
                    });
                }
                Ok(Some(k))
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

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
        let named = EndpointRef::Named(SourceKind::Vsphere, "a".into());
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
        let e = resolve_endpoints(&[(&b, "f:7"), (&b, "f:8")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("more than one default") && e.contains("f:8"),
            "{e}"
        );
        let missing = EndpointRef::Named(SourceKind::Vsphere, "z".into());
        let e = resolve_endpoints(&[(&a, "f:0")], &[(&missing, "f:9")])
            .unwrap_err()
            .to_string();
        assert_eq!(e, "unknown vSphere endpoint \"z\" in f:9");
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
                .to_string()
                .contains("inline passwords")
        );
        assert!(parse_endpoint(&["vc1", "url=https://vc/sdk", "user=u"])
            .unwrap_err()
            .to_string()
            .contains("\"password_file=\" is required"));
        assert!(
            parse_endpoint(&["vc1", "url=ftp://x", "user=u", "password_file=p"])
                .unwrap_err()
                .to_string()
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
        .to_string()
        .contains("\"on\" or \"off\""));
    }

    /// An endpoint `vc` of user `u` with `extra` parameters, its error as
    /// text.
    pub(crate) fn endpoint_with(extra: &[&str]) -> Result<EndpointConf, String> {
        let mut a = vec!["vc", "user=u", "password_file=p"];
        a.extend_from_slice(extra);
        parse_endpoint(&a).map_err(|e| e.to_string())
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
        // the scheme in capitals is the same scheme
        let e = endpoint_with(&["url=HTTP://vc/sdk"]).unwrap_err();
        assert!(e.contains("clear text"), "{e}");
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
    fn several_endpoints_and_none_default_must_be_named() {
        let a = endpoint_with(&["url=https://a/sdk"]).unwrap();
        let mut b = endpoint_with(&["url=https://b/sdk"]).unwrap();
        b.name = "vc2".into();
        let eps = [(&a, "f:1"), (&b, "f:2")];
        let e = resolve_endpoints(&eps, &[(&EndpointRef::Default, "f:9")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("vc, vc2") && e.contains("f:9"), "{e}");
        let named = EndpointRef::Named(SourceKind::Vsphere, "vc2".into());
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
            resolve_endpoints::<EndpointConf>(&[], &[(&EndpointRef::Default, "f:9")]).unwrap(),
            vec![None]
        );
    }
}
