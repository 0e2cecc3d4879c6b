//! Where a monitoring pipeline keeps each vSphere counter ([`Profile`]):
//! per counter the series that hold it ([`Metric`]: one or more selectors
//! summed, times a factor to vSphere's units), the labels that name a VM,
//! identify it and carry its guest IP. Two built-in profiles, for the
//! exporters VMware shops run (`vmware_exporter`, and Telegraf's `vsphere`
//! input through its Prometheus output), each counter overridable in the
//! directive with the same selector syntax.

use std::fmt;

/// One series selector: a metric name and label equalities,
/// `name{label="value",...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Selector {
    /// True if a series with these labels is selected (its `__name__`
    /// is compared to the name).
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        labels.get("__name__").is_some_and(|n| *n == self.name)
            && self
                .labels
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|x| x == v))
    }
}

/// Where one counter is: the sum of the series its selectors match for a
/// VM, times `factor` (to vSphere's unit).
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub selectors: Vec<Selector>,
    pub factor: f64,
}

/// What the VM's size and state are read from (instant values).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Sizes {
    /// Virtual CPUs.
    pub vcpus: Option<Metric>,
    /// The most CPU the VM can use, MHz.
    pub cpu_max: Option<Metric>,
    /// Configured memory, MB.
    pub mem_size: Option<Metric>,
    /// Power state, 1 = on.
    pub power: Option<Metric>,
}

/// A pipeline's metric and label names.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// `metrics=`: the built-in profile it started from.
    pub base: &'static str,
    /// (vSphere counter `group.name.rollup`, where it is), for the
    /// counters dwepc reads ([`crate::resources`]).
    pub counters: Vec<(&'static str, Metric)>,
    pub sizes: Sizes,
    /// The label holding the VM's name (`dwepc_node vm=`).
    pub name_label: String,
    /// The label that tells two VMs apart (the name where nothing better
    /// exists).
    pub id_label: String,
    /// The label holding the VM's guest IP, if the pipeline has one.
    pub ip_label: Option<String>,
}

/// The counters a profile can place, by vSphere's name.
pub const COUNTER_KEYS: [&str; 7] = [
    "cpu.usagemhz.average",
    "mem.consumed.average",
    "mem.active.average",
    "net.usage.average",
    "disk.usage.average",
    "cpu.ready.summation",
    "cpu.usage.average",
];

/// The built-in profiles' names.
pub const PROFILES: [&str; 2] = ["vmware_exporter", "telegraf"];

/// Why a selector or a profile parameter is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

fn metric(s: &str) -> Metric {
    parse_metric(s).expect("built-in profile")
}

impl Profile {
    /// A built-in profile by name.
    pub fn named(name: &str) -> Option<Profile> {
        match name {
            "vmware_exporter" => Some(Profile::vmware_exporter()),
            "telegraf" => Some(Profile::telegraf()),
            _ => None,
        }
    }

    /// pryorda/vmware_exporter (0.18): `vmware_vm_<group>_<name>_<rollup>`
    /// gauges of the newest realtime sample, labelled `vm_name`, sizes
    /// from `summary.config` and `runtime`; no guest IP label.
    pub fn vmware_exporter() -> Profile {
        Profile {
            base: "vmware_exporter",
            counters: vec![
                (
                    "cpu.usagemhz.average",
                    metric("vmware_vm_cpu_usagemhz_average"),
                ),
                (
                    "mem.consumed.average",
                    metric("vmware_vm_mem_consumed_average"),
                ),
                ("mem.active.average", metric("vmware_vm_mem_active_average")),
                (
                    "net.usage.average",
                    metric("vmware_vm_net_received_average+vmware_vm_net_transmitted_average"),
                ),
                ("disk.usage.average", metric("vmware_vm_disk_usage_average")),
                (
                    "cpu.ready.summation",
                    metric("vmware_vm_cpu_ready_summation"),
                ),
                ("cpu.usage.average", metric("vmware_vm_cpu_usage_average")),
            ],
            sizes: Sizes {
                vcpus: Some(metric("vmware_vm_num_cpu")),
                cpu_max: Some(metric("vmware_vm_max_cpu_usage")),
                mem_size: Some(metric("vmware_vm_memory_max")),
                power: Some(metric("vmware_vm_power_state")),
            },
            name_label: "vm_name".into(),
            id_label: "vm_name".into(),
            ip_label: None,
        }
    }

    /// Telegraf's `vsphere` input through `outputs.prometheus_client`:
    /// `vsphere_vm_<group>_<name>_<rollup>`, the VM-wide value tagged
    /// `instance-total`, percentages divided by 100; VMs tagged `vmname`
    /// and `moid`, the guest IP in `guestip` (with `ip_addresses` set);
    /// no VM sizes (give them with `dwepc_node cpu= mem=`). Its default
    /// VM counters have `mem.active` and `virtualDisk` rather than
    /// `mem.consumed` and `disk.usage`.
    pub fn telegraf() -> Profile {
        Profile {
            base: "telegraf",
            counters: vec![
                (
                    "cpu.usagemhz.average",
                    metric("vsphere_vm_cpu_usagemhz_average{cpu=\"instance-total\"}"),
                ),
                (
                    "mem.active.average",
                    metric("vsphere_vm_mem_active_average"),
                ),
                (
                    "net.usage.average",
                    metric("vsphere_vm_net_usage_average{interface=\"instance-total\"}"),
                ),
                (
                    "disk.usage.average",
                    metric(
                        "vsphere_vm_virtualDisk_read_average+vsphere_vm_virtualDisk_write_average",
                    ),
                ),
                (
                    "cpu.ready.summation",
                    metric("vsphere_vm_cpu_ready_summation{cpu=\"instance-total\"}"),
                ),
            ],
            sizes: Sizes::default(),
            name_label: "vmname".into(),
            id_label: "moid".into(),
            ip_label: Some("guestip".into()),
        }
    }

    /// Sets one counter's, size's or label's place from the directive
    /// (`off` removes a counter or size, or the guest IP label).
    pub fn set(&mut self, key: &str, val: &str) -> Result<bool, SelectorError> {
        let off = val == "off";
        if let Some(&k) = COUNTER_KEYS.iter().find(|k| **k == key) {
            self.counters.retain(|(c, _)| *c != k);
            if !off {
                self.counters.push((k, parse_metric(val)?));
            }
            return Ok(true);
        }
        let size = match key {
            "vcpus" => &mut self.sizes.vcpus,
            "cpu_max" => &mut self.sizes.cpu_max,
            "mem_size" => &mut self.sizes.mem_size,
            "power" => &mut self.sizes.power,
            "vm_label" | "id_label" | "ip_label" => {
                let label = if off && key == "ip_label" {
                    None
                } else {
                    Some(label_name(val)?)
                };
                match key {
                    "vm_label" => self.name_label = label.unwrap_or_default(),
                    "id_label" => self.id_label = label.unwrap_or_default(),
                    _ => self.ip_label = label,
                }
                return Ok(true);
            }
            _ => return Ok(false),
        };
        *size = if off { None } else { Some(parse_metric(val)?) };
        Ok(true)
    }

    /// Where counter `name` is, if the profile has it.
    pub fn counter(&self, name: &str) -> Option<&Metric> {
        self.counters
            .iter()
            .find(|(c, _)| *c == name)
            .map(|(_, m)| m)
    }

    /// Every metric name the inventory query asks for: the sizes, and the
    /// CPU counter (a VM is in the inventory if it has one of them).
    pub fn inventory_names(&self) -> Vec<&str> {
        let s = &self.sizes;
        names(
            [&s.vcpus, &s.cpu_max, &s.mem_size, &s.power]
                .into_iter()
                .flatten()
                .chain(self.counter(crate::resources::COUNTERS[0])),
        )
    }
}

/// The distinct metric names of `metrics`' selectors.
pub(crate) fn names<'a>(metrics: impl Iterator<Item = &'a Metric>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for m in metrics {
        for s in &m.selectors {
            if !out.contains(&s.name.as_str()) {
                out.push(&s.name);
            }
        }
    }
    out
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if !self.labels.is_empty() {
            let l: Vec<String> = self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", quote(v)))
                .collect();
            write!(f, "{{{}}}", l.join(","))?;
        }
        Ok(())
    }
}

/// Escapes a string for a PromQL double-quoted literal (Go's escapes:
/// a newline in a VM name would end the query).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, Prometheus's metric names.
fn metric_name(s: &str) -> Result<String, SelectorError> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars().enumerate().all(|(i, c)| {
            c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(SelectorError(format!(
            "\"{s}\" is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )))
    }
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, Prometheus's label names.
pub fn label_name(s: &str) -> Result<String, SelectorError> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.chars()
            .enumerate()
            .all(|(i, c)| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(SelectorError(format!(
            "\"{s}\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        )))
    }
}

/// Parses `SELECTOR[+SELECTOR...][*FACTOR]`, each selector
/// `name[{label="value",...}]`.
pub fn parse_metric(s: &str) -> Result<Metric, SelectorError> {
    let (body, factor) = match s.rsplit_once('*') {
        Some((b, f)) if !f.contains('"') && !f.contains('}') => {
            let x: f64 = f.parse().map_err(|_| {
                SelectorError(format!("\"*{f}\" is not a factor (a positive number)"))
            })?;
            if !(x.is_finite() && x > 0.0) {
                return Err(SelectorError(format!(
                    "\"*{f}\" is not a factor (a positive number)"
                )));
            }
            (b, x)
        }
        _ => (s, 1.0),
    };
    let mut selectors = Vec::new();
    for part in split_outside_quotes(body, '+') {
        selectors.push(parse_selector(part)?);
    }
    if selectors.len() > 8 {
        return Err(SelectorError("at most 8 selectors summed".into()));
    }
    Ok(Metric { selectors, factor })
}

/// Splits at `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_selector(s: &str) -> Result<Selector, SelectorError> {
    let (name, rest) = match s.find('{') {
        Some(i) => (&s[..i], Some(&s[i..])),
        None => (s, None),
    };
    let name = metric_name(name)?;
    let mut labels = Vec::new();
    if let Some(rest) = rest {
        let inner = rest
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .ok_or_else(|| SelectorError(format!("\"{s}\": labels end with }}")))?;
        for m in split_outside_quotes(inner, ',')
            .into_iter()
            .filter(|m| !m.is_empty())
        {
            let (k, v) = m.split_once('=').ok_or_else(|| {
                SelectorError(format!("\"{m}\" in \"{s}\" is not label=\"value\""))
            })?;
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .filter(|v| !v.ends_with('\\') || v.ends_with("\\\\"))
                .ok_or_else(|| {
                    SelectorError(format!(
                        "\"{m}\" in \"{s}\": the value is written in double quotes"
                    ))
                })?;
            labels.push((label_name(k)?, unquote(v)));
        }
    }
    Ok(Selector { name, labels })
}

fn unquote(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut esc = false;
    for c in v.chars() {
        if esc {
            out.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_with_labels_sums_and_factors() {
        let m = parse_metric("a_b{cpu=\"instance-total\",x=\"q\\\"+,\"}+c:d*100").unwrap();
        assert_eq!(m.factor, 100.0);
        assert_eq!(m.selectors.len(), 2);
        assert_eq!(m.selectors[0].name, "a_b");
        assert_eq!(
            m.selectors[0].labels,
            vec![
                ("cpu".into(), "instance-total".into()),
                ("x".into(), "q\"+,".into())
            ]
        );
        assert_eq!(m.selectors[1].to_string(), "c:d");
        assert_eq!(
            m.selectors[0].to_string(),
            "a_b{cpu=\"instance-total\",x=\"q\\\"+,\"}"
        );
        for bad in [
            "",
            "1abc",
            "a-b",
            "a{b=c}",
            "a{b=\"c\"",
            "a{1b=\"c\"}",
            "a*0",
            "a*x",
            "a*-1",
            "a+",
        ] {
            assert!(parse_metric(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn built_in_profiles_place_every_counter_dwepc_reads() {
        for name in PROFILES {
            let p = Profile::named(name).unwrap();
            assert!(p.counter("cpu.usagemhz.average").is_some());
            assert!(p.counter("cpu.ready.summation").is_some());
            assert!(p.counter("net.usage.average").is_some());
            assert!(!p.inventory_names().is_empty());
        }
        let v = Profile::vmware_exporter();
        assert_eq!(v.inventory_names().len(), 5);
        assert_eq!(Profile::telegraf().inventory_names().len(), 1);
    }

    #[test]
    fn a_profile_is_overridden_per_counter_size_and_label() {
        let mut p = Profile::vmware_exporter();
        assert!(p.set("cpu.ready.summation", "off").unwrap());
        assert!(p.counter("cpu.ready.summation").is_none());
        assert!(p.set("mem.consumed.average", "my_mem*1024").unwrap());
        assert_eq!(p.counter("mem.consumed.average").unwrap().factor, 1024.0);
        assert!(p.set("ip_label", "guest_ip").unwrap());
        assert_eq!(p.ip_label.as_deref(), Some("guest_ip"));
        assert!(p.set("ip_label", "off").unwrap());
        assert_eq!(p.ip_label, None);
        assert!(p.set("power", "off").unwrap());
        assert!(p.sizes.power.is_none());
        assert!(!p.set("nothing", "x").unwrap());
        assert!(p.set("vm_label", "a-b").is_err());
    }
}
