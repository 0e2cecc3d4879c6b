//! A small vSphere Web Services (SOAP, `/sdk`) client for the calls dwepc
//! needs: RetrieveServiceContent, Login, the `perfCounter` property,
//! CreateContainerView + RetrievePropertiesEx (VM inventory),
//! QueryPerfProviderSummary, QueryPerf, CurrentTime, Logout.
//!
//! Blocking `reqwest` with rustls; every call has the configured timeout.
//! The session cookie is kept here; the password is only ever written into
//! the Login request body and never into an error or log message.

use std::time::Duration;

use super::xml::{self, EntityMetric, Fault, MoRef, Node, ServiceContent, VmInfo};

/// SOAPAction version requested (understood by vSphere 6.5 and later).
pub const API_VERSION: &str = "6.5";

/// VM properties read for the inventory.
pub const VM_PROPERTIES: [&str; 7] = [
    "name",
    "guest.ipAddress",
    "guest.net",
    "runtime.powerState",
    "summary.runtime.maxCpuUsage",
    "summary.config.numCpu",
    "summary.config.memorySizeMB",
];

/// Connection settings.
#[derive(Clone)]
pub struct Config {
    /// SDK URL, e.g. `https://vcenter.example.com/sdk`.
    pub url: String,
    pub user: String,
    pub password: String,
    /// Extra trusted CA certificates (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Verify the server certificate.
    pub tls_verify: bool,
    /// Timeout of every call.
    pub timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("tls_verify", &self.tls_verify)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What went wrong with a call. Messages never contain credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// TLS or client set-up problem.
    Setup(String),
    /// Could not connect (refused, unreachable, DNS, TLS handshake).
    Connect(String),
    /// The call took longer than the timeout.
    Timeout,
    /// Non-SOAP HTTP error status.
    Http(u16),
    /// The response was not well-formed or not the expected shape.
    Malformed(String),
    /// The session is gone (expired, logged out, server restarted).
    NotAuthenticated,
    /// Wrong user name or password.
    InvalidLogin,
    /// Any other SOAP fault.
    Fault(String),
    /// Transport error other than the above.
    Transport(String),
}

impl Error {
    /// The session (or an object of it, like the container view) is gone:
    /// log in again and recreate the view. vcsim answers a view of an
    /// expired session with ManagedObjectNotFound.
    pub fn needs_login(&self) -> bool {
        match self {
            Error::NotAuthenticated => true,
            Error::Fault(s) => s.starts_with("ManagedObjectNotFound"),
            _ => false,
        }
    }

    /// A stable short class for "log once per state change".
    pub fn class(&self) -> &'static str {
        match self {
            Error::Setup(_) => "setup",
            Error::Connect(_) => "connect",
            Error::Timeout => "timeout",
            Error::Http(_) => "http",
            Error::Malformed(_) => "malformed",
            Error::NotAuthenticated => "not_authenticated",
            Error::InvalidLogin => "invalid_login",
            Error::Fault(_) => "fault",
            Error::Transport(_) => "transport",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Setup(s) => write!(f, "client set-up failed: {s}"),
            Error::Connect(s) => write!(f, "cannot connect: {s}"),
            Error::Timeout => write!(f, "timed out"),
            Error::Http(c) => write!(f, "HTTP status {c}"),
            Error::Malformed(s) => write!(f, "bad response: {s}"),
            Error::NotAuthenticated => write!(f, "session not authenticated"),
            Error::InvalidLogin => write!(f, "login failed: invalid user name or password"),
            Error::Fault(s) => write!(f, "SOAP fault: {s}"),
            Error::Transport(s) => write!(f, "transport error: {s}"),
        }
    }
}

fn from_reqwest(e: reqwest::Error) -> Error {
    // reqwest's messages carry the URL (no credentials: they are not in it).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if e.is_timeout() {
        Error::Timeout
    } else if e.is_connect() {
        Error::Connect(msg)
    } else {
        Error::Transport(msg)
    }
}

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn mo(tag: &str, m: &MoRef) -> String {
    format!(
        "<{tag} type=\"{}\">{}</{tag}>",
        escape(&m.kind),
        escape(&m.value)
    )
}

fn envelope(body: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<soapenv:Envelope xmlns:soapenv=\"http://schemas.xmlsoap.org/soap/envelope/\" \
xmlns:xsd=\"http://www.w3.org/2001/XMLSchema\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )
}

/// The client. Not thread-safe by design: one collector thread owns it.
pub struct Client {
    http: reqwest::blocking::Client,
    cfg: Config,
    cookie: Option<String>,
    sc: Option<ServiceContent>,
    /// Calls made, by method name (for tests and the status page).
    pub calls: std::collections::BTreeMap<&'static str, u64>,
}

impl Client {
    /// Builds the HTTP client (TLS roots, timeouts). No network traffic.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        let mut b = reqwest::blocking::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("dwepc/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Setup(format!("CA file: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Setup("CA file holds no certificate".into()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if !cfg.tls_verify {
            b = b.danger_accept_invalid_certs(true);
        }
        let http = b.build().map_err(|e| Error::Setup(e.to_string()))?;
        Ok(Client {
            http,
            cfg,
            cookie: None,
            sc: None,
            calls: Default::default(),
        })
    }

    /// The service content (after `connect`).
    pub fn service(&self) -> Option<&ServiceContent> {
        self.sc.as_ref()
    }

    /// True once logged in.
    pub fn logged_in(&self) -> bool {
        self.cookie.is_some()
    }

    fn sc(&self) -> Result<&ServiceContent, Error> {
        self.sc
            .as_ref()
            .ok_or_else(|| Error::Malformed("no service content".into()))
    }

    /// One SOAP call; returns the parsed response document.
    fn call(&mut self, method: &'static str, body: &str) -> Result<Node, Error> {
        *self.calls.entry(method).or_default() += 1;
        let mut req = self
            .http
            .post(&self.cfg.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("urn:vim25/{API_VERSION}"))
            .body(envelope(body));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c.as_str());
        }
        let resp = req.send().map_err(from_reqwest)?;
        let status = resp.status().as_u16();
        if method == "Login" {
            if let Some(v) = resp.headers().get("set-cookie") {
                if let Ok(v) = v.to_str() {
                    let c = v.split(';').next().unwrap_or("").trim();
                    if !c.is_empty() {
                        self.cookie = Some(c.to_string());
                    }
                }
            }
        }
        let bytes = resp.bytes().map_err(from_reqwest)?;
        let doc = match xml::parse(&bytes) {
            Ok(d) => d,
            // a 500 without a SOAP fault inside is an HTTP error
            Err(e) if status == 200 => return Err(Error::Malformed(e.to_string())),
            Err(_) => return Err(Error::Http(status)),
        };
        if let Some(Fault { message, kind, .. }) = xml::fault(&doc) {
            return Err(match kind.as_deref() {
                Some("NotAuthenticated") => Error::NotAuthenticated,
                Some("InvalidLogin") => Error::InvalidLogin,
                Some(k) => Error::Fault(format!("{k}: {message}")),
                None => Error::Fault(message),
            });
        }
        if status != 200 {
            return Err(Error::Http(status));
        }
        Ok(doc)
    }

    /// RetrieveServiceContent + Login.
    pub fn connect(&mut self) -> Result<&ServiceContent, Error> {
        self.cookie = None;
        let doc = self.call(
            "RetrieveServiceContent",
            "<RetrieveServiceContent xmlns=\"urn:vim25\"><_this type=\"ServiceInstance\">ServiceInstance</_this></RetrieveServiceContent>",
        )?;
        let sc = xml::service_content(&doc).map_err(|e| Error::Malformed(e.to_string()))?;
        let body = format!(
            "<Login xmlns=\"urn:vim25\">{}<userName>{}</userName><password>{}</password></Login>",
            mo("_this", &sc.session_manager),
            escape(&self.cfg.user),
            escape(&self.cfg.password)
        );
        self.sc = Some(sc);
        self.call("Login", &body)?;
        if self.cookie.is_none() {
            return Err(Error::Malformed("Login returned no session cookie".into()));
        }
        self.sc()
    }

    /// Logout (best effort; forgets the session either way).
    pub fn logout(&mut self) {
        if self.cookie.is_some() {
            if let Ok(sc) = self.sc() {
                let body = format!(
                    "<Logout xmlns=\"urn:vim25\">{}</Logout>",
                    mo("_this", &sc.session_manager)
                );
                let _ = self.call("Logout", &body);
            }
        }
        self.cookie = None;
    }

    fn retrieve(&mut self, method: &'static str, inner: String) -> Result<Node, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<{method} xmlns=\"urn:vim25\">{}{inner}</{method}>",
            mo("_this", &sc.property_collector)
        );
        self.call(method, &body)
    }

    /// The `perfCounter` property: (id, "group.name.rollup").
    pub fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error> {
        let pm = self.sc()?.perf_manager.clone();
        let inner = format!(
            "<specSet><propSet><type>PerformanceManager</type><pathSet>perfCounter</pathSet></propSet>\
<objectSet>{}<skip>false</skip></objectSet></specSet><options></options>",
            mo("obj", &pm)
        );
        let doc = self.retrieve("RetrievePropertiesEx", inner)?;
        xml::perf_counters(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// A ContainerView of all VMs under the root folder.
    pub fn create_vm_view(&mut self) -> Result<MoRef, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<CreateContainerView xmlns=\"urn:vim25\">{}{}<type>VirtualMachine</type><recursive>true</recursive></CreateContainerView>",
            mo("_this", &sc.view_manager),
            mo("container", &sc.root_folder)
        );
        let doc = self.call("CreateContainerView", &body)?;
        xml::moref_return(&doc, "CreateContainerViewResponse")
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// All VMs in `view` with the inventory properties.
    pub fn vms(&mut self, view: &MoRef) -> Result<Vec<VmInfo>, Error> {
        let paths: String = VM_PROPERTIES
            .iter()
            .map(|p| format!("<pathSet>{p}</pathSet>"))
            .collect();
        let inner = format!(
            "<specSet><propSet><type>VirtualMachine</type>{paths}</propSet>\
<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>traverseEntities</name>\
<type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet>\
<options><maxObjects>1000</maxObjects></options>",
            mo("obj", view)
        );
        let doc = self.retrieve("RetrievePropertiesEx", inner)?;
        let (mut all, mut token) = xml::vms(&doc).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut pages = 0;
        while let Some(t) = token.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(Error::Malformed("endless continuation".into()));
            }
            let doc = self.retrieve(
                "ContinueRetrievePropertiesEx",
                format!("<token>{}</token>", escape(&t)),
            )?;
            let (more, next) = xml::vms(&doc).map_err(|e| Error::Malformed(e.to_string()))?;
            all.extend(more);
            token = next;
        }
        Ok(all)
    }

    /// QueryPerfProviderSummary of a VM: its realtime refresh rate (s).
    pub fn refresh_rate(&mut self, vm: &str) -> Result<i32, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<QueryPerfProviderSummary xmlns=\"urn:vim25\">{}<entity type=\"VirtualMachine\">{}</entity></QueryPerfProviderSummary>",
            mo("_this", &sc.perf_manager),
            escape(vm)
        );
        let doc = self.call("QueryPerfProviderSummary", &body)?;
        xml::refresh_rate(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// One batched QueryPerf for `vms` and `counters` (instance ""), at
    /// `interval` seconds, the newest `max_sample` samples.
    pub fn query_perf(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        max_sample: u32,
    ) -> Result<Vec<EntityMetric>, Error> {
        let sc = self.sc()?;
        let metrics: String = counters
            .iter()
            .map(|c| {
                format!("<metricId><counterId>{c}</counterId><instance></instance></metricId>")
            })
            .collect();
        let specs: String = vms
            .iter()
            .map(|vm| {
                format!(
                    "<querySpec><entity type=\"VirtualMachine\">{}</entity><maxSample>{}</maxSample>{metrics}<intervalId>{interval}</intervalId></querySpec>",
                    escape(vm),
                    max_sample.max(1)
                )
            })
            .collect();
        let body = format!(
            "<QueryPerf xmlns=\"urn:vim25\">{}{specs}</QueryPerf>",
            mo("_this", &sc.perf_manager)
        );
        let doc = self.call("QueryPerf", &body)?;
        xml::perf(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// CurrentTime: the server clock (ms since the epoch). Also keeps the
    /// session alive.
    pub fn current_time(&mut self) -> Result<u64, Error> {
        let doc = self.call(
            "CurrentTime",
            "<CurrentTime xmlns=\"urn:vim25\"><_this type=\"ServiceInstance\">ServiceInstance</_this></CurrentTime>",
        )?;
        xml::current_time(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }
}

impl super::Api for Client {
    fn logged_in(&self) -> bool {
        Client::logged_in(self)
    }
    fn connect(&mut self) -> Result<(), Error> {
        Client::connect(self).map(|_| ())
    }
    fn logout(&mut self) {
        Client::logout(self)
    }
    fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error> {
        Client::perf_counters(self)
    }
    fn create_vm_view(&mut self) -> Result<MoRef, Error> {
        Client::create_vm_view(self)
    }
    fn vms(&mut self, view: &MoRef) -> Result<Vec<VmInfo>, Error> {
        Client::vms(self, view)
    }
    fn refresh_rate(&mut self, vm: &str) -> Result<i32, Error> {
        Client::refresh_rate(self, vm)
    }
    fn query_perf(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        max_sample: u32,
    ) -> Result<Vec<EntityMetric>, Error> {
        Client::query_perf(self, vms, counters, interval, max_sample)
    }
    fn current_time(&mut self) -> Result<u64, Error> {
        Client::current_time(self)
    }
    fn calls(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.calls
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Session cleanup is the owner's decision (logout needs a network
        // call); dropping only forgets the cookie.
        self.cookie = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
    }

    #[test]
    fn debug_hides_password() {
        let c = Config {
            url: "https://vc/sdk".into(),
            user: "u".into(),
            password: "s3cret".into(),
            ca_pem: None,
            tls_verify: true,
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn connection_refused_is_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut c = Client::new(Config {
            url: format!("http://127.0.0.1:{port}/sdk"),
            user: "u".into(),
            password: "p".into(),
            ca_pem: None,
            tls_verify: true,
            timeout: Duration::from_secs(2),
        })
        .unwrap();
        let e = c.connect().unwrap_err();
        assert_eq!(e.class(), "connect", "{e}");
    }

    #[test]
    fn bad_ca_file_is_setup_error() {
        let r = Client::new(Config {
            url: "https://vc/sdk".into(),
            user: "u".into(),
            password: "p".into(),
            ca_pem: Some(b"not a pem".to_vec()),
            tls_verify: true,
            timeout: Duration::from_secs(1),
        });
        assert!(matches!(r, Err(Error::Setup(_))));
    }
}
