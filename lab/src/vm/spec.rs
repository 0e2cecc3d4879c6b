//! What an emulated VM is and what it reports: its spec (read from a spec
//! file's JSON) and its usage at one instant (`GET /usage`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One emulated VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    pub name: String,
    #[serde(default = "VmSpec::default_ip")]
    pub ip: String,
    /// 0 = any free port (the ready file and [`Handle::addr`](super::Handle::addr) tell which).
    #[serde(default)]
    pub port: u16,
    /// Total CPU capacity (all vCPUs), MHz.
    pub cpu_mhz: f64,
    #[serde(default = "VmSpec::default_vcpus")]
    pub vcpus: u32,
    /// Link capacity in KB/s (1 KB = 1024 bytes); 0 = unlimited.
    #[serde(default)]
    pub net_kbps: f64,
    #[serde(default = "VmSpec::default_memory_mb")]
    pub memory_mb: f64,
}

impl VmSpec {
    pub fn new(name: &str, ip: &str, cpu_mhz: f64, vcpus: u32, net_kbps: f64) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            ip: ip.to_string(),
            port: 0,
            cpu_mhz,
            vcpus,
            net_kbps,
            memory_mb: 2048.0,
        }
    }

    fn default_ip() -> String {
        "127.0.0.1".into()
    }
    fn default_vcpus() -> u32 {
        1
    }
    fn default_memory_mb() -> f64 {
        2048.0
    }

    /// From a spec object; `ip` defaults to 127.0.0.1, `port` to 0,
    /// `vcpus` to 1, `net_kbps` to 0 (unlimited), `memory_mb` to 2048.
    pub fn from_json(v: &Value) -> Result<VmSpec, String> {
        let spec = VmSpec::deserialize(v).map_err(|e| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or("?");
            format!("VM {name}: {e}")
        })?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        let n = &self.name;
        if n.is_empty() || n.contains(['/', '?', ' ', '%']) {
            return Err(format!("bad VM name {n:?}"));
        }
        if self.ip.parse::<IpAddr>().is_err() {
            return Err(format!("VM {n}: bad ip {:?}", self.ip));
        }
        if !(self.cpu_mhz.is_finite() && self.cpu_mhz >= 1.0) {
            return Err(format!("VM {n}: cpu_mhz must be >= 1"));
        }
        if !(1..=1024).contains(&self.vcpus) {
            return Err(format!("VM {n}: vcpus must be 1 to 1024"));
        }
        if !(self.net_kbps.is_finite() && self.net_kbps >= 0.0) {
            return Err(format!("VM {n}: net_kbps must be >= 0"));
        }
        if !(self.memory_mb.is_finite() && self.memory_mb >= 0.0) {
            return Err(format!("VM {n}: memory_mb must be >= 0"));
        }
        Ok(())
    }
}

/// Parses a spec file: a JSON array of VM specs (names must be unique).
pub fn parse_specs(text: &str) -> Result<Vec<VmSpec>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("spec: {e}"))?;
    let arr = v.as_array().ok_or("spec: not a JSON array")?;
    let specs = arr
        .iter()
        .map(VmSpec::from_json)
        .collect::<Result<Vec<_>, _>>()?;
    check_names(&specs)?;
    Ok(specs)
}

/// A spec file's text for these VMs.
pub fn specs_json(specs: &[VmSpec]) -> String {
    Value::Array(specs.iter().map(VmSpec::to_json).collect()).to_string()
}

pub(super) fn check_names(specs: &[VmSpec]) -> Result<(), String> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("duplicate VM name {:?}", s.name));
        }
    }
    Ok(())
}

/// One VM's usage at one instant (`GET /usage` answers an array of them,
/// all measured at the same instant).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub name: String,
    /// Wall clock, ms since the Unix epoch.
    pub t_ms: u64,
    /// Cumulative CPU consumed (requests + hog), MHz·ms.
    pub cpu_mhz_ms: f64,
    /// Cumulative bytes transmitted (headers + bodies).
    pub bytes_sent: u64,
    /// Cumulative responses completed.
    pub requests: u64,
    /// Connections open now.
    pub active: u64,
    /// Requests read and not yet answered.
    pub in_flight: u64,
    /// Memory in use now, KB.
    pub mem_kb: f64,
    /// Hog set in the guest, MHz (consumes at most 99% of the capacity).
    pub hog_mhz: f64,
    /// Current CPU capacity, MHz.
    pub cpu_mhz: f64,
    /// CPU the VM can really use now (capacity after contention and
    /// slowdown), MHz.
    pub cpu_eff_mhz: f64,
    /// Cumulative CPU ready time, ms summed over vCPUs.
    #[serde(default)]
    pub ready_ms: f64,
    pub up: bool,
}

impl Usage {
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Parses a `GET /usage` answer.
pub fn parse_usage(text: &str) -> Result<Vec<Usage>, String> {
    serde_json::from_str(text).map_err(|e| format!("usage: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let s = parse_specs(
            r#"[{"name":"vm1","ip":"127.0.0.11","port":8080,"cpu_mhz":2000,"vcpus":1,"net_kbps":4000,"memory_mb":2048},
                {"name":"vm2","cpu_mhz":4000}]"#,
        )
        .unwrap();
        assert_eq!(s[0].port, 8080);
        assert_eq!(s[0].net_kbps, 4000.0);
        assert_eq!(s[1].ip, "127.0.0.1");
        assert_eq!(s[1].vcpus, 1);
        assert_eq!(parse_specs(&specs_json(&s)).unwrap(), s);
        assert!(parse_specs(r#"[{"name":"a","cpu_mhz":1},{"name":"a","cpu_mhz":1}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a"}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a","cpu_mhz":100,"vcpus":0}]"#).is_err());
        assert!(parse_specs(r#"[{"name":"a/b","cpu_mhz":100}]"#).is_err());
        assert!(parse_specs(r#"{"name":"a"}"#).is_err());
    }
}
