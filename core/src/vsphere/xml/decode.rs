//! The decoders of the answers dwepc reads: the SOAP body or fault, the
//! service content, managed object references, the counter catalog, the
//! VM and host inventories, the server clock and a task's state. Each
//! walks the tree of [`super::tree`]; none panics on any input.
//! (Performance samples are decoded as they are read: [`super::perf`].)

use super::tree::{Element, XmlError};

/// The element inside `Envelope/Body`.
pub fn body(root: &Element) -> Result<&Element, XmlError> {
    if root.name != "Envelope" {
        return Err(XmlError::Unexpected(format!("root element {}", root.name)));
    }
    root.child("Body")
        .and_then(|b| b.children.first())
        .ok_or_else(|| XmlError::Unexpected("empty SOAP body".into()))
}

/// A SOAP fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// faultcode
    pub code: String,
    /// faultstring
    pub message: String,
    /// The vSphere fault type from `detail` (e.g. "NotAuthenticated",
    /// "InvalidLogin"), if any.
    pub kind: Option<String>,
}

/// The fault in a response, if it is one.
pub fn fault(root: &Element) -> Option<Fault> {
    let b = body(root).ok()?;
    if b.name != "Fault" {
        return None;
    }
    let kind = b.child("detail").and_then(|d| d.children.first()).map(|d| {
        d.xsi_type
            .clone()
            .unwrap_or_else(|| d.name.strip_suffix("Fault").unwrap_or(&d.name).to_string())
    });
    Some(Fault {
        code: b.text_of("faultcode").unwrap_or("").to_string(),
        message: b.text_of("faultstring").unwrap_or("").to_string(),
        kind,
    })
}

/// A managed object reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MoRef {
    /// Type, e.g. "VirtualMachine".
    pub kind: String,
    /// Value, e.g. "vm-42".
    pub value: String,
}

impl MoRef {
    fn from_node(n: &Element) -> Option<MoRef> {
        let value = n.text.trim();
        if value.is_empty() {
            return None;
        }
        Some(MoRef {
            kind: n.mo_type.clone().unwrap_or_default(),
            value: value.to_string(),
        })
    }
}

pub(super) fn expect<'a>(root: &'a Element, name: &str) -> Result<&'a Element, XmlError> {
    let b = body(root)?;
    if b.name != name {
        return Err(XmlError::Unexpected(format!(
            "{} instead of {name}",
            b.name
        )));
    }
    Ok(b)
}

fn need<'a>(n: Option<&'a Element>, what: &str) -> Result<&'a Element, XmlError> {
    n.ok_or_else(|| XmlError::Unexpected(format!("missing {what}")))
}

/// The parts of ServiceContent we use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceContent {
    pub root_folder: MoRef,
    pub property_collector: MoRef,
    pub view_manager: MoRef,
    pub session_manager: MoRef,
    pub perf_manager: MoRef,
    /// The SearchIndex (finds a scope's container by inventory path).
    pub search_index: Option<MoRef>,
    /// "VirtualCenter" or "HostAgent".
    pub api_type: String,
    /// API version, e.g. "8.0.2.0".
    pub api_version: String,
}

/// Decodes RetrieveServiceContentResponse.
pub fn service_content(root: &Element) -> Result<ServiceContent, XmlError> {
    let r = need(
        expect(root, "RetrieveServiceContentResponse")?.child("returnval"),
        "returnval",
    )?;
    let mo = |name: &str| {
        r.child(name)
            .and_then(MoRef::from_node)
            .ok_or_else(|| XmlError::Unexpected(format!("missing {name}")))
    };
    Ok(ServiceContent {
        root_folder: mo("rootFolder")?,
        property_collector: mo("propertyCollector")?,
        view_manager: mo("viewManager")?,
        session_manager: mo("sessionManager")?,
        perf_manager: mo("perfManager")?,
        search_index: r.child("searchIndex").and_then(MoRef::from_node),
        api_type: r
            .path(&["about", "apiType"])
            .map(|n| n.text.trim().to_string())
            .unwrap_or_default(),
        api_version: r
            .path(&["about", "apiVersion"])
            .map(|n| n.text.trim().to_string())
            .unwrap_or_default(),
    })
}

/// Decodes a response whose `returnval` is a managed object reference
/// (e.g. CreateContainerViewResponse).
pub fn moref_return(root: &Element, response: &str) -> Result<MoRef, XmlError> {
    expect(root, response)?
        .child("returnval")
        .and_then(MoRef::from_node)
        .ok_or_else(|| XmlError::Unexpected("missing returnval".into()))
}

/// Decodes a response whose `returnval` is a managed object reference or
/// absent (e.g. FindByInventoryPathResponse: nothing at that path).
pub fn optional_moref_return(root: &Element, response: &str) -> Result<Option<MoRef>, XmlError> {
    Ok(expect(root, response)?
        .child("returnval")
        .and_then(MoRef::from_node))
}

/// Objects of a RetrievePropertiesEx / ContinueRetrievePropertiesEx
/// response and the continuation token.
pub fn object_contents(root: &Element) -> Result<(Vec<&Element>, Option<String>), XmlError> {
    let b = body(root)?;
    if b.name != "RetrievePropertiesExResponse" && b.name != "ContinueRetrievePropertiesExResponse"
    {
        return Err(XmlError::Unexpected(format!(
            "{} instead of RetrievePropertiesExResponse",
            b.name
        )));
    }
    // An empty result has no returnval at all.
    let Some(r) = b.child("returnval") else {
        return Ok((Vec::new(), None));
    };
    let token = r
        .text_of("token")
        .filter(|t| !t.is_empty())
        .map(str::to_string);
    Ok((r.all("objects").collect(), token))
}

/// The `val` of property `name` in an ObjectContent.
pub fn prop<'a>(obj: &'a Element, name: &str) -> Option<&'a Element> {
    obj.all("propSet")
        .find(|p| p.text_of("name") == Some(name))
        .and_then(|p| p.child("val"))
}

/// Decodes the `perfCounter` property: (counter id, "group.name.rollup").
pub fn perf_counters(root: &Element) -> Result<Vec<(i32, String)>, XmlError> {
    let (objs, _) = object_contents(root)?;
    let mut out = Vec::new();
    for obj in objs {
        let Some(val) = prop(obj, "perfCounter") else {
            continue;
        };
        for c in val.all("PerfCounterInfo") {
            let Some(key) = c.text_of("key").and_then(|k| k.parse::<i32>().ok()) else {
                continue;
            };
            let group = c.path(&["groupInfo", "key"]).map(|n| n.text.trim());
            let name = c.path(&["nameInfo", "key"]).map(|n| n.text.trim());
            let rollup = c.text_of("rollupType");
            if let (Some(g), Some(n), Some(r)) = (group, name, rollup) {
                out.push((key, format!("{g}.{n}.{r}")));
            }
        }
    }
    Ok(out)
}

/// What we read of a VM.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VmInfo {
    pub moref: String,
    pub name: String,
    /// guest.ipAddress and every guest.net[].ipAddress.
    pub ips: Vec<String>,
    pub powered_on: bool,
    /// summary.runtime.maxCpuUsage (MHz), 0 if unknown.
    pub max_cpu_mhz: f64,
    pub num_cpu: f64,
    pub memory_mb: f64,
    /// runtime.host: the host it runs on (moref value), if reported.
    pub host: Option<String>,
}

fn num(n: Option<&Element>) -> f64 {
    n.and_then(|v| v.text.trim().parse::<f64>().ok())
        .filter(|x| x.is_finite())
        .unwrap_or(0.0)
}

/// Decodes VMs from a RetrievePropertiesEx response over a container view.
pub fn vms(root: &Element) -> Result<(Vec<VmInfo>, Option<String>), XmlError> {
    let (objs, token) = object_contents(root)?;
    let mut out = Vec::new();
    for obj in objs {
        let Some(mo) = obj.child("obj").and_then(MoRef::from_node) else {
            continue;
        };
        let mut vm = VmInfo {
            moref: mo.value,
            ..VmInfo::default()
        };
        if let Some(v) = prop(obj, "name") {
            vm.name = v.text.trim().to_string();
        }
        if let Some(v) = prop(obj, "guest.ipAddress") {
            let ip = v.text.trim();
            if !ip.is_empty() {
                vm.ips.push(ip.to_string());
            }
        }
        if let Some(v) = prop(obj, "guest.net") {
            for nic in v.all("GuestNicInfo") {
                for ip in nic.all("ipAddress") {
                    let ip = ip.text.trim();
                    if !ip.is_empty() && !vm.ips.iter().any(|x| x == ip) {
                        vm.ips.push(ip.to_string());
                    }
                }
            }
        }
        vm.powered_on = prop(obj, "runtime.powerState").map(|v| v.text.trim()) == Some("poweredOn");
        vm.max_cpu_mhz = num(prop(obj, "summary.runtime.maxCpuUsage"));
        vm.num_cpu = num(prop(obj, "summary.config.numCpu"));
        vm.memory_mb = num(prop(obj, "summary.config.memorySizeMB"));
        vm.host = prop(obj, "runtime.host")
            .map(|v| v.text.trim().to_string())
            .filter(|h| !h.is_empty());
        out.push(vm);
    }
    Ok((out, token))
}

/// Decodes QueryPerfProviderSummaryResponse: the refresh rate in seconds
/// (-1 when the entity has no realtime stats).
pub fn refresh_rate(root: &Element) -> Result<i32, XmlError> {
    let r = need(
        expect(root, "QueryPerfProviderSummaryResponse")?.child("returnval"),
        "returnval",
    )?;
    r.text_of("refreshRate")
        .and_then(|x| x.parse().ok())
        .ok_or_else(|| XmlError::Unexpected("missing refreshRate".into()))
}

/// Decodes CurrentTimeResponse into ms since the epoch.
pub fn current_time(root: &Element) -> Result<u64, XmlError> {
    expect(root, "CurrentTimeResponse")?
        .text_of("returnval")
        .and_then(parse_datetime_ms)
        .ok_or_else(|| XmlError::Unexpected("bad CurrentTime".into()))
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats ms since the epoch as an xsd:dateTime in UTC
/// (`2026-11-22T06:10:00Z`), the inverse of [`parse_datetime_ms`] to the
/// second.
pub fn format_datetime(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil from days (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// One ESXi host of the inventory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HostInfo {
    pub moref: String,
    pub name: String,
    /// summary.hardware.cpuMhz × numCpuCores.
    pub cpu_mhz: f64,
    /// summary.hardware.memorySize, in MB.
    pub memory_mb: f64,
    pub in_maintenance: bool,
    /// runtime.connectionState is "connected".
    pub connected: bool,
}

/// Decodes hosts from a RetrievePropertiesEx response over a container
/// view of HostSystem.
pub fn hosts(root: &Element) -> Result<(Vec<HostInfo>, Option<String>), XmlError> {
    let (objs, token) = object_contents(root)?;
    let mut out = Vec::new();
    for obj in objs {
        let Some(mo) = obj.child("obj").and_then(MoRef::from_node) else {
            continue;
        };
        out.push(HostInfo {
            moref: mo.value,
            name: prop(obj, "name").map_or(String::new(), |v| v.text.trim().to_string()),
            cpu_mhz: num(prop(obj, "summary.hardware.cpuMhz"))
                * num(prop(obj, "summary.hardware.numCpuCores")),
            memory_mb: num(prop(obj, "summary.hardware.memorySize")) / 1_048_576.0,
            in_maintenance: prop(obj, "runtime.inMaintenanceMode").map(|v| v.text.trim())
                == Some("true"),
            connected: prop(obj, "runtime.connectionState").map(|v| v.text.trim())
                == Some("connected"),
        });
    }
    Ok((out, token))
}

/// A compute resource: a cluster, or a standalone host's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ComputeResourceInfo {
    pub moref: String,
    pub name: String,
    /// Its hosts (moref values).
    pub hosts: Vec<String>,
}

/// Decodes compute resources (`name`, `host`) from a RetrievePropertiesEx
/// response over a container view.
pub fn compute_resources(
    root: &Element,
) -> Result<(Vec<ComputeResourceInfo>, Option<String>), XmlError> {
    let (objs, token) = object_contents(root)?;
    let mut out = Vec::new();
    for obj in objs {
        let Some(mo) = obj.child("obj").and_then(MoRef::from_node) else {
            continue;
        };
        out.push(ComputeResourceInfo {
            moref: mo.value,
            name: prop(obj, "name").map_or(String::new(), |v| v.text.trim().to_string()),
            hosts: prop(obj, "host").map_or(Vec::new(), |v| {
                v.all("ManagedObjectReference")
                    .map(|h| h.text.trim().to_string())
                    .collect()
            }),
        });
    }
    Ok((out, token))
}

/// Where a vSphere task stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    Queued,
    Running,
    Success,
    /// Failed, with the fault's type and message.
    Error(String),
}

/// Decodes a task's `info` (RetrievePropertiesEx of Task, path `info`).
pub fn task_info(root: &Element) -> Result<TaskState, XmlError> {
    let (objs, _) = object_contents(root)?;
    let info = objs
        .first()
        .and_then(|o| prop(o, "info"))
        .ok_or_else(|| XmlError::Unexpected("no task info".into()))?;
    Ok(match info.text_of("state").map(str::trim) {
        Some("queued") => TaskState::Queued,
        Some("running") => TaskState::Running,
        Some("success") => TaskState::Success,
        Some("error") => {
            let e = info.child("error");
            let kind = e
                .and_then(|e| e.child("fault"))
                .and_then(|f| f.xsi_type.clone())
                .unwrap_or_else(|| "fault".into());
            let msg = e
                .and_then(|e| e.text_of("localizedMessage"))
                .unwrap_or("")
                .trim()
                .to_string();
            TaskState::Error(if msg.is_empty() {
                kind
            } else {
                format!("{kind}: {msg}")
            })
        }
        other => {
            return Err(XmlError::Unexpected(format!(
                "task state {}",
                other.unwrap_or("missing")
            )))
        }
    })
}

/// Parses an xsd:dateTime like `2026-11-22T06:10:00Z`,
/// `2026-11-22T06:10:00.123456Z` or `2026-11-22T08:10:00+02:00` into ms
/// since the epoch. A missing zone means UTC.
pub fn parse_datetime_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<u32> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0u64;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i.min(start + 3)];
        ms = frac.parse::<u64>().ok()? * 10u64.pow(3 - frac.len() as u32);
    }
    let offset_min: i64 = match &s[i..] {
        "" | "Z" | "z" => 0,
        tz => {
            let tb = tz.as_bytes();
            if tb.len() != 6 || (tb[0] != b'+' && tb[0] != b'-') || tb[3] != b':' {
                return None;
            }
            let oh: i64 = tz.get(1..3)?.parse().ok()?;
            let om: i64 = tz.get(4..6)?.parse().ok()?;
            let sign = if tb[0] == b'-' { -1 } else { 1 };
            sign * (oh * 60 + om)
        }
    };
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86_400 + h as i64 * 3600 + mi as i64 * 60 + se as i64 - offset_min * 60;
    if secs < 0 {
        return None;
    }
    Some(secs as u64 * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::parse;

    const ENV_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#;
    const ENV_END: &str = "</soapenv:Body></soapenv:Envelope>";

    fn doc(inner: &str) -> Element {
        parse(format!("{ENV_START}{inner}{ENV_END}").as_bytes()).unwrap()
    }

    #[test]
    fn datetimes() {
        assert_eq!(parse_datetime_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime_ms("2026-11-22T06:10:00Z"),
            Some(1_795_327_800_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T06:10:00.5Z"),
            Some(1_795_327_800_500)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T06:10:00.123456789Z"),
            Some(1_795_327_800_123)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T08:10:00+02:00"),
            Some(1_795_327_800_000)
        );
        assert_eq!(
            parse_datetime_ms("2026-11-22T06:10:00"),
            Some(1_795_327_800_000)
        );
        for bad in [
            "",
            "2026-11-22",
            "2026-13-01T00:00:00Z",
            "2026-11-22T06:10:00+0200",
            "x026-11-22T06:10:00Z",
            "2026-11-22T06:10:00.",
        ] {
            assert_eq!(parse_datetime_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn datetimes_format_back() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2026-11-22T06:10:00Z",
            "2100-03-01T00:00:01Z",
        ] {
            assert_eq!(format_datetime(parse_datetime_ms(s).unwrap()), s);
        }
        assert_eq!(format_datetime(1_500), "1970-01-01T00:00:01Z");
    }

    #[test]
    fn host_and_task_decoding() {
        let d = doc(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="HostSystem">host-21</obj><propSet><name>name</name><val xsi:type="xsd:string">esx-1</val></propSet><propSet><name>runtime.connectionState</name><val xsi:type="HostSystemConnectionState">connected</val></propSet><propSet><name>runtime.inMaintenanceMode</name><val xsi:type="xsd:boolean">true</val></propSet><propSet><name>summary.hardware.cpuMhz</name><val xsi:type="xsd:int">2000</val></propSet><propSet><name>summary.hardware.memorySize</name><val xsi:type="xsd:long">4294967296</val></propSet><propSet><name>summary.hardware.numCpuCores</name><val xsi:type="xsd:short">8</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let (h, token) = hosts(&d).unwrap();
        assert_eq!(token, None);
        assert_eq!(
            h,
            [HostInfo {
                moref: "host-21".into(),
                name: "esx-1".into(),
                cpu_mhz: 16_000.0,
                memory_mb: 4096.0,
                in_maintenance: true,
                connected: true,
            }]
        );
        let task = |state: &str, error: &str| {
            doc(&format!(
                r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="Task">task-9</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>task-9</key><state>{state}</state>{error}</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#
            ))
        };
        assert_eq!(task_info(&task("running", "")).unwrap(), TaskState::Running);
        assert_eq!(task_info(&task("success", "")).unwrap(), TaskState::Success);
        assert_eq!(
            task_info(&task(
                "error",
                r#"<error><fault xsi:type="MigrationFault"></fault><localizedMessage>host is busy</localizedMessage></error>"#
            ))
            .unwrap(),
            TaskState::Error("MigrationFault: host is busy".into())
        );
        assert!(task_info(&task("exploded", "")).is_err());
        let d = doc(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="ClusterComputeResource">domain-c7</obj><propSet><name>host</name><val xsi:type="ArrayOfManagedObjectReference"><ManagedObjectReference type="HostSystem" xsi:type="ManagedObjectReference">host-21</ManagedObjectReference><ManagedObjectReference type="HostSystem" xsi:type="ManagedObjectReference">host-22</ManagedObjectReference></val></propSet><propSet><name>name</name><val xsi:type="xsd:string">prod</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let (c, _) = compute_resources(&d).unwrap();
        assert_eq!(
            c,
            [ComputeResourceInfo {
                moref: "domain-c7".into(),
                name: "prod".into(),
                hosts: vec!["host-21".into(), "host-22".into()],
            }]
        );
    }

    #[test]
    fn fault_decoding() {
        let d = doc(
            r#"<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>The session is not authenticated.</faultstring><detail><NotAuthenticatedFault xmlns="urn:vim25" xsi:type="NotAuthenticated"><object type="Folder">group-d1</object><privilegeId>System.View</privilegeId></NotAuthenticatedFault></detail></soapenv:Fault>"#,
        );
        let f = fault(&d).unwrap();
        assert_eq!(f.kind.as_deref(), Some("NotAuthenticated"));
        assert!(f.message.contains("not authenticated"));
        let d = doc(
            r#"<soapenv:Fault><faultcode>x</faultcode><faultstring>y</faultstring><detail><InvalidLoginFault xmlns="urn:vim25"/></detail></soapenv:Fault>"#,
        );
        assert_eq!(fault(&d).unwrap().kind.as_deref(), Some("InvalidLogin"));
        assert!(fault(&doc("<CurrentTimeResponse/>")).is_none());
    }

    #[test]
    fn vm_decoding() {
        let d = doc(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><token>1</token><objects><obj type="VirtualMachine">vm-7</obj><propSet><name>guest.ipAddress</name><val xsi:type="xsd:string">10.0.0.1</val></propSet><propSet><name>guest.net</name><val xsi:type="ArrayOfGuestNicInfo"><GuestNicInfo xsi:type="GuestNicInfo"><ipAddress>10.0.0.1</ipAddress><ipAddress>10.0.0.9</ipAddress></GuestNicInfo></val></propSet><propSet><name>name</name><val xsi:type="xsd:string">web &amp; co</val></propSet><propSet><name>runtime.powerState</name><val xsi:type="VirtualMachinePowerState">poweredOn</val></propSet><propSet><name>summary.runtime.maxCpuUsage</name><val xsi:type="xsd:int">4000</val></propSet><propSet><name>summary.config.memorySizeMB</name><val xsi:type="xsd:int">2048</val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        let (vms, token) = vms(&d).unwrap();
        assert_eq!(token.as_deref(), Some("1"));
        assert_eq!(vms[0].name, "web & co");
        assert_eq!(vms[0].ips, vec!["10.0.0.1", "10.0.0.9"]);
        assert!(vms[0].powered_on);
        assert_eq!(
            (vms[0].max_cpu_mhz, vms[0].memory_mb, vms[0].num_cpu),
            (4000.0, 2048.0, 0.0)
        );
        // empty result
        let d = doc(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"></RetrievePropertiesExResponse>"#,
        );
        assert_eq!(object_contents(&d).unwrap().0.len(), 0);
    }

    #[test]
    fn counters_decoding() {
        let d = doc(
            r#"<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="PerformanceManager">PerfMgr</obj><propSet><name>perfCounter</name><val xsi:type="ArrayOfPerfCounterInfo"><PerfCounterInfo><key>6</key><nameInfo><label>Usage in MHz</label><summary>x</summary><key>usagemhz</key></nameInfo><groupInfo><label>CPU</label><summary>y</summary><key>cpu</key></groupInfo><unitInfo><key>megaHertz</key></unitInfo><rollupType>average</rollupType></PerfCounterInfo></val></propSet></objects></returnval></RetrievePropertiesExResponse>"#,
        );
        assert_eq!(
            perf_counters(&d).unwrap(),
            vec![(6, "cpu.usagemhz.average".to_string())]
        );
    }

    #[test]
    fn a_document_without_a_soap_body_is_refused() {
        assert!(body(&parse(b"<x/>").unwrap()).is_err());
    }
}
