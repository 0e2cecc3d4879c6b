//! A small vSphere Web Services (SOAP, `/sdk`) client for the calls dwepc
//! needs: RetrieveServiceContent, Login, the `perfCounter` property,
//! CreateContainerView + RetrievePropertiesEx (VM inventory),
//! QueryPerfProviderSummary, QueryPerf, CurrentTime, Logout.
//!
//! Blocking `reqwest` with rustls; every call has the configured timeout.
//! The session cookie is kept here; the password is only ever written into
//! the Login request body and never into an error or log message.

use std::time::Duration;

use super::budget::{Budget, Capped, VMS_PER_PAGE};
use super::error::Error;
use super::xml::{self, Element, EntityMetric, Fault, MoRef, ServiceContent, VmInfo};

/// SOAPAction version requested (understood by vSphere 6.5 and later).
pub const API_VERSION: &str = "6.5";

/// VM properties read for the inventory.
pub const VM_PROPERTIES: [&str; 8] = [
    "name",
    "guest.ipAddress",
    "guest.net",
    "runtime.powerState",
    "summary.runtime.maxCpuUsage",
    "summary.config.numCpu",
    "summary.config.memorySizeMB",
    "runtime.host",
];

/// A decoder of one page of objects: the objects and the continuation
/// token, if more follow.
type Decode<T> = fn(&Element) -> Result<(Vec<T>, Option<String>), xml::XmlError>;

/// Host properties the placement advisor reads.
pub const HOST_PROPERTIES: [&str; 6] = [
    "name",
    "summary.hardware.cpuMhz",
    "summary.hardware.numCpuCores",
    "summary.hardware.memorySize",
    "runtime.inMaintenanceMode",
    "runtime.connectionState",
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
    /// The inventory path of the datacenter, folder, cluster, host or
    /// resource pool whose VMs are read (`None`: the whole inventory),
    /// as vSphere's `SearchIndex.FindByInventoryPath` takes it:
    /// `DC/vm/Folder`, `DC/host/Cluster`, `DC/host/Cluster/Resources/Pool`.
    pub scope: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("tls_verify", &self.tls_verify)
            .field("timeout", &self.timeout)
            .field("scope", &self.scope)
            .finish()
    }
}

fn from_reqwest(e: reqwest::Error) -> Error {
    transport_error(e, "vCenter")
}

/// A reqwest failure as an [`Error`], a TLS failure in words naming
/// `server` (the vCenter, the Prometheus server).
pub(crate) fn transport_error(e: reqwest::Error, server: &str) -> Error {
    // reqwest's messages carry the URL (no credentials: they are not in it).
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if let Some(words) = tls_words(&msg) {
        let words = words.replace("vCenter", server);
        Error::Connect(format!("{words} ({msg})"))
    } else if e.is_timeout() {
        Error::Timeout
    } else if e.is_connect() {
        Error::Connect(msg)
    } else {
        Error::Transport(msg)
    }
}

/// What an operator does about a TLS failure, from rustls' message.
pub fn tls_words(msg: &str) -> Option<&'static str> {
    if !msg.contains("invalid peer certificate") {
        return None;
    }
    Some(if msg.contains("NotValidForName") {
        "the vCenter's certificate is not issued for the host in url=: use the name it was issued for"
    } else if msg.contains("Expired") || msg.contains("NotValidYet") {
        "the vCenter's certificate has expired or is not valid yet: renew it, or check the clocks"
    } else {
        "the vCenter's certificate is not trusted: set ca_file= to the vCenter's CA (see README, dwepc_vsphere)"
    })
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
    traffic: super::Traffic,
    /// Calls made, by method name (for tests and the status page).
    pub calls: std::collections::BTreeMap<&'static str, u64>,
}

/// The HTTP client of an endpoint: every call's timeout, the extra CA
/// certificates (PEM), certificate checks on or off. No network traffic.
pub(crate) fn http_client(
    timeout: Duration,
    ca_pem: Option<&[u8]>,
    tls_verify: bool,
) -> Result<reqwest::blocking::Client, Error> {
    let mut b = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("dwepc/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| Error::Setup(format!("CA file: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Setup("CA file holds no certificate".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if !tls_verify {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| Error::Setup(e.to_string()))
}

impl Client {
    /// Builds the HTTP client (TLS roots, timeouts). No network traffic.
    pub fn new(cfg: Config) -> Result<Client, Error> {
        let http = http_client(cfg.timeout, cfg.ca_pem.as_deref(), cfg.tls_verify)?;
        Ok(Client {
            http,
            cfg,
            cookie: None,
            sc: None,
            traffic: Default::default(),
            calls: Default::default(),
        })
    }

    /// The service content (after `connect`).
    pub fn service(&self) -> Option<&ServiceContent> {
        self.sc.as_ref()
    }

    fn sc(&self) -> Result<&ServiceContent, Error> {
        self.sc
            .as_ref()
            .ok_or_else(|| Error::Malformed("no service content".into()))
    }

    /// One SOAP call; returns the parsed response document. The answer is
    /// parsed while it is read, within `budget` and the timeout.
    fn call(&mut self, method: &'static str, body: &str, budget: Budget) -> Result<Element, Error> {
        self.call_with(method, body, budget, &mut xml::NoStream)
    }

    /// [`Client::call`], with the elements `stream` claims decoded by it as
    /// they are read; the document returned holds the rest.
    fn call_with(
        &mut self,
        method: &'static str,
        body: &str,
        budget: Budget,
        stream: &mut dyn xml::Stream,
    ) -> Result<Element, Error> {
        let started = std::time::Instant::now();
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
        let mut capped = Capped {
            inner: resp,
            read: 0,
            cap: budget.body,
            deadline: started + self.cfg.timeout,
        };
        let limits = xml::Limits {
            nodes: budget.nodes,
            text: budget.body,
        };
        let parsed = xml::parse_with(
            std::io::BufReader::with_capacity(16 << 10, &mut capped),
            limits,
            stream,
        );
        self.traffic.bytes += capped.read as u64;
        self.traffic.answer_us += started.elapsed().as_micros() as u64;
        let doc = match parsed {
            Ok(d) => d,
            Err(xml::XmlError::TooLarge(detail)) => return Err(Error::TooLarge { method, detail }),
            Err(xml::XmlError::Read(std::io::ErrorKind::TimedOut, _)) => {
                return Err(Error::Timeout)
            }
            Err(xml::XmlError::Read(_, e)) => return Err(Error::Transport(e)),
            // a 500 without a SOAP fault inside is an HTTP error
            Err(e) if status == 200 => return Err(Error::Malformed(e.to_string())),
            Err(_) => return Err(Error::Http(status)),
        };
        if let Some(Fault { message, kind, .. }) = xml::fault(&doc) {
            return Err(match kind.as_deref() {
                Some("NotAuthenticated") => Error::NotAuthenticated,
                Some("InvalidLogin") => Error::InvalidLogin,
                Some(k) => Error::Fault(format!("SOAP fault: {k}: {message}")),
                None => Error::Fault(format!("SOAP fault: {message}")),
            });
        }
        if status != 200 {
            return Err(Error::Http(status));
        }
        Ok(doc)
    }

    /// RetrieveServiceContent, forgetting any session.
    fn service_content(&mut self) -> Result<ServiceContent, Error> {
        self.cookie = None;
        let doc = self.call(
            "RetrieveServiceContent",
            "<RetrieveServiceContent xmlns=\"urn:vim25\"><_this type=\"ServiceInstance\">ServiceInstance</_this></RetrieveServiceContent>",
            Budget::SMALL,
        )?;
        xml::service_content(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Every object of type `kind` in container view `view`, with
    /// properties `paths`, page by page ([`VMS_PER_PAGE`] objects each),
    /// decoded by `decode`; `between_pages` runs before each continuation.
    fn objects_in<T>(
        &mut self,
        view: &MoRef,
        kind: &str,
        paths: &[&str],
        decode: Decode<T>,
        between_pages: &mut dyn FnMut(),
    ) -> Result<Vec<T>, Error> {
        let paths: String = paths
            .iter()
            .map(|p| format!("<pathSet>{p}</pathSet>"))
            .collect();
        let inner = format!(
            "<specSet><propSet><type>{kind}</type>{paths}</propSet>\
<objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>traverseEntities</name>\
<type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet>\
<options><maxObjects>{VMS_PER_PAGE}</maxObjects></options>",
            mo("obj", view)
        );
        let doc = self.retrieve("RetrievePropertiesEx", inner, Budget::PAGE)?;
        let (mut all, mut token) = decode(&doc).map_err(|e| Error::Malformed(e.to_string()))?;
        let mut pages = 0;
        while let Some(t) = token.take() {
            pages += 1;
            if pages > 10_000 {
                return Err(Error::Malformed("endless continuation".into()));
            }
            between_pages();
            let doc = self.retrieve(
                "ContinueRetrievePropertiesEx",
                format!("<token>{}</token>", escape(&t)),
                Budget::PAGE,
            )?;
            let (more, next) = decode(&doc).map_err(|e| Error::Malformed(e.to_string()))?;
            all.extend(more);
            token = next;
        }
        Ok(all)
    }

    /// A ContainerView of every object of type `kind` under the root
    /// folder.
    fn view_of(&mut self, kind: &str) -> Result<MoRef, Error> {
        let root = self.sc()?.root_folder.clone();
        self.view_in(&root, kind)
    }

    /// A ContainerView of all objects of type `kind` under `container`.
    fn view_in(&mut self, container: &MoRef, kind: &str) -> Result<MoRef, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<CreateContainerView xmlns=\"urn:vim25\">{}{}<type>{}</type><recursive>true</recursive></CreateContainerView>",
            mo("_this", &sc.view_manager),
            mo("container", container),
            escape(kind)
        );
        let doc = self.call("CreateContainerView", &body, Budget::SMALL)?;
        xml::moref_return(&doc, "CreateContainerViewResponse")
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// The object at inventory path `path` (SearchIndex's
    /// FindByInventoryPath), `None` if nothing is there.
    pub fn find_by_inventory_path(&mut self, path: &str) -> Result<Option<MoRef>, Error> {
        let sc = self.sc()?;
        let Some(index) = sc.search_index.clone() else {
            return Err(Error::Malformed("the server has no SearchIndex".into()));
        };
        let body = format!(
            "<FindByInventoryPath xmlns=\"urn:vim25\">{}<inventoryPath>{}</inventoryPath></FindByInventoryPath>",
            mo("_this", &index),
            escape(path)
        );
        let doc = self.call("FindByInventoryPath", &body, Budget::SMALL)?;
        xml::optional_moref_return(&doc, "FindByInventoryPathResponse")
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// The ESXi hosts of the inventory (placement advisor).
    pub fn hosts(&mut self) -> Result<Vec<xml::HostInfo>, Error> {
        let view = self.view_of("HostSystem")?;
        self.objects_in(
            &view,
            "HostSystem",
            &HOST_PROPERTIES,
            xml::hosts,
            &mut || {},
        )
    }

    /// The compute resources (clusters, and standalone hosts' own) with
    /// their hosts (placement advisor).
    pub fn compute_resources(&mut self) -> Result<Vec<xml::ComputeResourceInfo>, Error> {
        let view = self.view_of("ComputeResource")?;
        self.objects_in(
            &view,
            "ComputeResource",
            &["name", "host"],
            xml::compute_resources,
            &mut || {},
        )
    }

    /// QueryPerf over a time range (placement advisor): `counters` of
    /// `vms` at `interval` seconds (20 = realtime, 300, 1800, 7200, 86400
    /// = the historical rollups), samples after `start_ms` up to `end_ms`.
    pub fn query_perf_range(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        start_ms: u64,
        end_ms: u64,
    ) -> Result<Vec<EntityMetric>, Error> {
        let range = format!(
            "<startTime>{}</startTime><endTime>{}</endTime>",
            xml::format_datetime(start_ms),
            xml::format_datetime(end_ms)
        );
        let samples =
            (end_ms.saturating_sub(start_ms) / 1000 / interval.max(1) as u64) as usize + 2;
        self.perf_query(vms, counters, interval, &range, samples)
    }

    /// One batched QueryPerf of `counters` (instance "") of `vms` at
    /// `interval` seconds; `range` selects the samples in each querySpec
    /// (maxSample, or startTime/endTime), of which there are at most
    /// `samples` per series (sizes the answer's budget).
    fn perf_query(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        range: &str,
        samples: usize,
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
                    "<querySpec><entity type=\"VirtualMachine\">{}</entity>{range}{metrics}<intervalId>{interval}</intervalId></querySpec>",
                    escape(vm)
                )
            })
            .collect();
        let body = format!(
            "<QueryPerf xmlns=\"urn:vim25\">{}{specs}</QueryPerf>",
            mo("_this", &sc.perf_manager)
        );
        let budget = Budget::query_perf(vms.len(), counters.len(), samples);
        let mut stream = xml::PerfStream::default();
        let doc = self.call_with("QueryPerf", &body, budget, &mut stream)?;
        xml::perf(&doc, stream).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// RelocateVM_Task of VM `vm` (moref value) to host `host`: the task.
    pub fn relocate(&mut self, vm: &str, host: &str) -> Result<MoRef, Error> {
        let body = format!(
            "<RelocateVM_Task xmlns=\"urn:vim25\"><_this type=\"VirtualMachine\">{}</_this><spec><host type=\"HostSystem\">{}</host></spec></RelocateVM_Task>",
            escape(vm),
            escape(host)
        );
        let doc = self.call("RelocateVM_Task", &body, Budget::SMALL)?;
        xml::moref_return(&doc, "RelocateVM_TaskResponse")
            .map_err(|e| Error::Malformed(e.to_string()))
    }

    /// Where task `task` stands.
    pub fn task_state(&mut self, task: &MoRef) -> Result<xml::TaskState, Error> {
        let inner = format!(
            "<specSet><propSet><type>Task</type><pathSet>info</pathSet></propSet>\
<objectSet>{}<skip>false</skip></objectSet></specSet><options></options>",
            mo("obj", task)
        );
        let doc = self.retrieve("RetrievePropertiesEx", inner, Budget::SMALL)?;
        xml::task_info(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    fn retrieve(
        &mut self,
        method: &'static str,
        inner: String,
        budget: Budget,
    ) -> Result<Element, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<{method} xmlns=\"urn:vim25\">{}{inner}</{method}>",
            mo("_this", &sc.property_collector)
        );
        self.call(method, &body, budget)
    }
}

impl super::Api for Client {
    fn logged_in(&self) -> bool {
        self.cookie.is_some()
    }

    /// RetrieveServiceContent + Login.
    fn connect(&mut self) -> Result<(), Error> {
        let sc = self.service_content()?;
        let body = format!(
            "<Login xmlns=\"urn:vim25\">{}<userName>{}</userName><password>{}</password></Login>",
            mo("_this", &sc.session_manager),
            escape(&self.cfg.user),
            escape(&self.cfg.password)
        );
        self.sc = Some(sc);
        self.call("Login", &body, Budget::SMALL)?;
        if self.cookie.is_none() {
            return Err(Error::Malformed("Login returned no session cookie".into()));
        }
        Ok(())
    }

    fn session(&self) -> Option<String> {
        self.cookie.clone()
    }

    fn adopt(&mut self, cookie: &str) -> Result<(), Error> {
        let sc = self.service_content()?;
        self.sc = Some(sc);
        self.cookie = Some(cookie.to_string());
        Ok(())
    }

    /// Logout (best effort; forgets the session either way).
    fn logout(&mut self) {
        if self.cookie.is_some() {
            if let Ok(sc) = self.sc() {
                let body = format!(
                    "<Logout xmlns=\"urn:vim25\">{}</Logout>",
                    mo("_this", &sc.session_manager)
                );
                let _ = self.call("Logout", &body, Budget::SMALL);
            }
        }
        self.cookie = None;
    }

    /// The `perfCounter` property: (id, "group.name.rollup").
    fn perf_counters(&mut self) -> Result<Vec<(i32, String)>, Error> {
        let pm = self.sc()?.perf_manager.clone();
        let inner = format!(
            "<specSet><propSet><type>PerformanceManager</type><pathSet>perfCounter</pathSet></propSet>\
<objectSet>{}<skip>false</skip></objectSet></specSet><options></options>",
            mo("obj", &pm)
        );
        let doc = self.retrieve("RetrievePropertiesEx", inner, Budget::CATALOG)?;
        xml::perf_counters(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// A ContainerView of all VMs under the scope (the root folder when
    /// none is set).
    fn create_vm_view(&mut self) -> Result<MoRef, Error> {
        let container = match self.cfg.scope.clone() {
            None => self.sc()?.root_folder.clone(),
            Some(path) => self
                .find_by_inventory_path(&path)?
                .ok_or_else(|| Error::ScopeNotFound(path.clone()))?,
        };
        self.view_in(&container, "VirtualMachine")
    }

    /// All VMs in `view` with the inventory properties.
    fn vms(&mut self, view: &MoRef, between_pages: &mut dyn FnMut()) -> Result<Vec<VmInfo>, Error> {
        self.objects_in(
            view,
            "VirtualMachine",
            &VM_PROPERTIES,
            xml::vms,
            between_pages,
        )
    }

    /// QueryPerfProviderSummary of a VM: its realtime refresh rate (s).
    fn refresh_rate(&mut self, vm: &str) -> Result<i32, Error> {
        let sc = self.sc()?;
        let body = format!(
            "<QueryPerfProviderSummary xmlns=\"urn:vim25\">{}<entity type=\"VirtualMachine\">{}</entity></QueryPerfProviderSummary>",
            mo("_this", &sc.perf_manager),
            escape(vm)
        );
        let doc = self.call("QueryPerfProviderSummary", &body, Budget::SMALL)?;
        xml::refresh_rate(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    /// One batched QueryPerf for `vms` and `counters` (instance ""), at
    /// `interval` seconds, the newest `max_sample` samples.
    fn query_perf(
        &mut self,
        vms: &[String],
        counters: &[i32],
        interval: i32,
        max_sample: u32,
    ) -> Result<Vec<EntityMetric>, Error> {
        let n = max_sample.max(1);
        let range = format!("<maxSample>{n}</maxSample>");
        self.perf_query(vms, counters, interval, &range, n as usize)
    }

    /// CurrentTime: the server clock (ms since the epoch). Also keeps the
    /// session alive.
    fn current_time(&mut self) -> Result<u64, Error> {
        let doc = self.call(
            "CurrentTime",
            "<CurrentTime xmlns=\"urn:vim25\"><_this type=\"ServiceInstance\">ServiceInstance</_this></CurrentTime>",
            Budget::SMALL,
        )?;
        xml::current_time(&doc).map_err(|e| Error::Malformed(e.to_string()))
    }

    fn calls(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.calls
    }

    fn traffic(&self) -> super::Traffic {
        self.traffic
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
    use crate::vsphere::Api;

    #[test]
    fn tls_failures_are_put_in_words() {
        let m = "error sending request: client error (Connect): invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))";
        assert!(tls_words(m).unwrap().contains("set ca_file="));
        assert!(tls_words("invalid peer certificate: UnknownIssuer")
            .unwrap()
            .contains("not trusted"));
        assert!(tls_words("invalid peer certificate: NotValidForName")
            .unwrap()
            .contains("not issued for the host"));
        assert!(tls_words("invalid peer certificate: Expired")
            .unwrap()
            .contains("expired"));
        assert_eq!(tls_words("connection refused"), None);
    }

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
            scope: None,
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
            scope: None,
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
            scope: None,
        });
        assert!(matches!(r, Err(Error::Setup(_))));
    }

    /// A loopback HTTP server that answers every request on one
    /// connection with `answer` (which writes the response until it is
    /// done or the client goes away); the bytes it managed to write are
    /// sent back when it ends.
    fn hostile(
        answer: impl Fn(&mut std::net::TcpStream) -> std::io::Result<()> + Send + 'static,
    ) -> (String, std::sync::mpsc::Receiver<()>) {
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/sdk", l.local_addr().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            if let Ok((mut c, _)) = l.accept() {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && c.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_lowercase();
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = c.read_exact(&mut body);
                let _ = answer(&mut c);
            }
            let _ = tx.send(());
        });
        (url, rx)
    }

    fn client(url: &str, timeout_s: u64) -> Client {
        Client::new(Config {
            url: url.into(),
            user: "u".into(),
            password: "p".into(),
            ca_pem: None,
            tls_verify: true,
            timeout: Duration::from_secs(timeout_s),
            scope: None,
        })
        .unwrap()
    }

    #[test]
    fn an_endless_answer_stops_at_the_calls_budget() {
        use std::io::Write;
        // chunked, never ending (bounded here at 1 GB so the test ends)
        let (url, done) = hostile(|c| {
            c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n",
            )?;
            let chunk = format!("{:x}\r\n{}\r\n", 64 << 10, "x".repeat(64 << 10));
            c.write_all(b"6\r\n<a><b>\r\n")?;
            for _ in 0..(1 << 14) {
                c.write_all(chunk.as_bytes())?;
            }
            Ok(())
        });
        let t = std::time::Instant::now();
        let e = client(&url, 20).connect().unwrap_err();
        assert_eq!(e.class(), "too_large", "{e}");
        assert!(e.to_string().contains("RetrieveServiceContent"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // the client went away: the server's writes failed long before 1 GB
        done.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn many_small_elements_stop_at_the_element_budget() {
        use std::io::Write;
        // 8 MB of empty elements: under 64 KB of body for the first call,
        // but far over its 2,000 elements
        let (url, _done) = hostile(|c| {
            let body = format!("<a>{}</a>", "<b/>".repeat(10_000));
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        });
        let e = client(&url, 5).connect().unwrap_err();
        assert!(
            matches!(&e, Error::TooLarge { detail, .. } if detail.contains("2000 elements")),
            "{e}"
        );
    }

    #[test]
    fn a_trickling_answer_times_out() {
        use std::io::Write;
        // one byte every 100 ms: every read succeeds, the whole never ends
        let (url, _done) = hostile(|c| {
            c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 100000\r\n\r\n<a>",
            )?;
            for _ in 0..600 {
                c.write_all(b"x")?;
                c.flush()?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        });
        let t = std::time::Instant::now();
        let e = client(&url, 2).connect().unwrap_err();
        assert_eq!(e, Error::Timeout, "{e}");
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }
}
