//! What a lab run does, read from files: the cluster (VM sizes and names)
//! and the scenario (workload, frontends and a timeline of events).
//!
//! Cluster file: a JSON array of VMs, e.g.
//!
//! ```text
//! [{"name": "vm1", "cpu_mhz": 2000, "vcpus": 1, "net_kbps": 4000, "memory_mb": 2048}, ...]
//! ```
//!
//! (`ip` and `port` are set by the lab). Scenario file, one statement per
//! line, `#` starts a comment; times count from the start of the measured
//! part of the run (after the warm-up):
//!
//! ```text
//! workload t2                        # t1 | t2 | mix | short (default t2)
//! frontends 60 40                    # nginx instances in front of the same VMs, traffic split
//! at 60s vm5 background cpu 40-50%   # a batch job holds its CPU use in the band, as the CPU-hold script of
//!                                    # "A reference implementation of server load balancing in virtualised environments"
//! at 60s vm5 background cpu 50%      # ... or at a fixed level
//! at 200s vm5 background off
//! at 60s vm4 contention 50%          # the hypervisor withholds 50 % of vm4's cycles (CPU ready)
//! at 60s vm4 slowdown 50%            # vm4 loses 50 % of its speed, no counter shows it
//! at 60s vm2 vcpus 4                 # CPU hot-add: vm2 runs on 4 vCPUs of the same speed from now
//! at 60s vm3 down                    # the VM stops answering (connections refused)
//! at 120s vm3 up
//! at 60s vsphere down 60s            # every vSphere call hangs for 60 s
//! at 60s mix t1                      # the request mix changes
//! ```

use std::time::Duration;

use crate::vm::VmSpec;

/// Request mixes (each page chosen uniformly).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The paper's static pages, 1 KB .. 1 MB: network-bound.
    T1,
    /// The paper's dynamic pages, 50^k additions: CPU-bound.
    T2,
    /// Half T1, half T2 pages.
    Mix,
    /// Short dynamic pages only (`/t2/4`, a few ms of CPU).
    Short,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::T1 => "t1",
            Workload::T2 => "t2",
            Workload::Mix => "mix",
            Workload::Short => "short",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        [Workload::T1, Workload::T2, Workload::Mix, Workload::Short]
            .into_iter()
            .find(|w| w.name().eq_ignore_ascii_case(s))
    }

    /// The pages of this mix.
    pub fn paths(self) -> Vec<String> {
        let t1: Vec<String> = ["1k", "16k", "64k", "512k", "1m"]
            .iter()
            .map(|s| format!("/t1/{s}"))
            .collect();
        let t2: Vec<String> = (1..=5).map(|k| format!("/t2/{k}")).collect();
        match self {
            Workload::T1 => t1,
            Workload::T2 => t2,
            Workload::Mix => t1.into_iter().chain(t2).collect(),
            Workload::Short => vec!["/t2/4".to_string()],
        }
    }

    /// Mean CPU (MHz·ms) and bytes on the wire per request.
    pub fn mean_cost(self) -> (f64, f64) {
        let paths = self.paths();
        let (mut cpu, mut bytes) = (0.0, 0.0);
        for p in &paths {
            let (c, b) = crate::vm::cost_mhz_ms(p).expect("lab page");
            cpu += c;
            bytes += b as f64 + 200.0;
        }
        (cpu / paths.len() as f64, bytes / paths.len() as f64)
    }

    /// Requests/s VM `v` can serve of this mix (its bottleneck).
    pub fn vm_capacity_rps(self, v: &VmSpec) -> f64 {
        let (cpu, bytes) = self.mean_cost();
        let cpu_rps = v.cpu_mhz * 1000.0 / cpu;
        let net_rps = if v.net_kbps > 0.0 {
            v.net_kbps * 1024.0 / bytes
        } else {
            f64::INFINITY
        };
        cpu_rps.min(net_rps)
    }

    /// Requests/s the cluster serves with a perfect split.
    pub fn capacity_rps(self, vms: &[VmSpec]) -> f64 {
        vms.iter().map(|v| self.vm_capacity_rps(v)).sum()
    }

    /// The `weight=` an expert would give each VM for this mix: its
    /// capacity in requests/s (rounded, at least 1).
    pub fn weights(self, vms: &[VmSpec]) -> Vec<u32> {
        let caps: Vec<f64> = vms.iter().map(|v| self.vm_capacity_rps(v)).collect();
        let min = caps.iter().cloned().fold(f64::INFINITY, f64::min).max(1e-9);
        // scaled so the smallest is about 10 (weights are integers)
        caps.iter()
            .map(|c| ((c / min) * 10.0).round().clamp(1.0, 1000.0) as u32)
            .collect()
    }
}

/// What happens at an event.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// A batch job in the VM holds its CPU use between `lo` and `hi`
    /// percent of the VM's CPU (adaptive, as the CPU-hold script of the blog
    /// post "虚拟化环境下服务器负载均衡的参考实现", "A reference implementation of
    /// server load balancing in virtualised environments").
    Background {
        vm: String,
        lo: f64,
        hi: f64,
    },
    BackgroundOff {
        vm: String,
    },
    /// The hypervisor withholds this percentage of the VM's cycles.
    Contention {
        vm: String,
        pct: f64,
    },
    /// The VM loses this percentage of its speed, shown by no counter.
    Slowdown {
        vm: String,
        pct: f64,
    },
    /// A CPU hot-add: the VM runs on this many vCPUs of the same speed
    /// (vSphere adds vCPUs to a running VM, never removes them).
    Resize {
        vm: String,
        vcpus: u32,
    },
    Down {
        vm: String,
    },
    Up {
        vm: String,
    },
    /// Every vSphere call hangs, for a while or until `vsphere up`.
    VsphereDown {
        secs: Option<f64>,
    },
    VsphereUp,
    /// The request mix changes (the offered load stays the same fraction
    /// of the cluster's capacity for the new mix).
    Mix {
        workload: Workload,
    },
}

/// One timed event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Seconds after the start of the measured part.
    pub at_s: f64,
    pub action: Action,
}

/// A scenario file.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub workload: Workload,
    /// Traffic split over the frontends (one entry per nginx instance).
    pub frontends: Vec<f64>,
    pub events: Vec<Event>,
}

fn secs(s: &str) -> Option<f64> {
    let (num, mult) = if let Some(v) = s.strip_suffix("ms") {
        (v, 0.001)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix('m') {
        (v, 60.0)
    } else {
        (s, 1.0)
    };
    let x: f64 = num.parse().ok()?;
    (x.is_finite() && x >= 0.0).then_some(x * mult)
}

/// `s` as a duration ("90s", "2m", "500ms"; a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    secs(s)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("bad duration {s:?} (like 90s, 2m)"))
}

fn pct(s: &str) -> Option<f64> {
    let x: f64 = s.strip_suffix('%').unwrap_or(s).parse().ok()?;
    (x.is_finite() && (0.0..=100.0).contains(&x)).then_some(x)
}

/// Parses a scenario file; errors name the line.
pub fn parse(name: &str, text: &str) -> Result<Scenario, String> {
    let mut sc = Scenario {
        name: name.to_string(),
        workload: Workload::T2,
        frontends: vec![1.0],
        events: Vec::new(),
    };
    for (k, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let w: Vec<&str> = line.split_whitespace().collect();
        let err = |msg: &str| format!("{name}:{}: {msg}: {line:?}", k + 1);
        match w.as_slice() {
            ["workload", x] => {
                sc.workload = Workload::parse(x).ok_or_else(|| err("unknown workload"))?;
            }
            ["frontends", split @ ..] if !split.is_empty() => {
                let v: Option<Vec<f64>> = split
                    .iter()
                    .map(|x| x.parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0))
                    .collect();
                sc.frontends = v.ok_or_else(|| err("frontend weights must be numbers above 0"))?;
                if sc.frontends.len() > 8 {
                    return Err(err("at most 8 frontends"));
                }
            }
            ["at", t, rest @ ..] => {
                let at_s = secs(t).ok_or_else(|| err("bad time"))?;
                let action = parse_action(rest, &err)?;
                sc.events.push(Event { at_s, action });
            }
            _ => return Err(err("unknown statement")),
        }
    }
    sc.events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    Ok(sc)
}

/// The action of an `at TIME ...` statement (the words after the time);
/// `err` names the line in an error.
fn parse_action(rest: &[&str], err: &impl Fn(&str) -> String) -> Result<Action, String> {
    Ok(match rest {
        ["vsphere", "down"] => Action::VsphereDown { secs: None },
        ["vsphere", "down", d] => Action::VsphereDown {
            secs: Some(secs(d).ok_or_else(|| err("bad duration"))?),
        },
        ["vsphere", "up"] => Action::VsphereUp,
        ["mix", x] => Action::Mix {
            workload: Workload::parse(x).ok_or_else(|| err("unknown workload"))?,
        },
        [vm, "background", "off"] => Action::BackgroundOff { vm: vm.to_string() },
        [vm, "background", "cpu", band] => {
            let (lo, hi) = parse_band(band, err)?;
            Action::Background {
                vm: vm.to_string(),
                lo,
                hi,
            }
        }
        [vm, "contention", p] => Action::Contention {
            vm: vm.to_string(),
            pct: pct(p)
                .filter(|x| *x <= 95.0)
                .ok_or_else(|| err("bad percentage (0-95%)"))?,
        },
        [vm, "slowdown", p] => Action::Slowdown {
            vm: vm.to_string(),
            pct: pct(p)
                .filter(|x| *x <= 95.0)
                .ok_or_else(|| err("bad percentage (0-95%)"))?,
        },
        [vm, "vcpus", n] => Action::Resize {
            vm: vm.to_string(),
            vcpus: n
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| err("bad vCPU count (1-1024)"))?,
        },
        [vm, "down"] => Action::Down { vm: vm.to_string() },
        [vm, "up"] => Action::Up { vm: vm.to_string() },
        _ => return Err(err("unknown event")),
    })
}

/// A background job's band, `40-50%` or `50%` (low = high), percent.
fn parse_band(band: &str, err: &impl Fn(&str) -> String) -> Result<(f64, f64), String> {
    let (lo, hi) = match band.strip_suffix('%').unwrap_or(band).split_once('-') {
        Some((a, b)) => (pct(a), pct(b)),
        None => (pct(band), pct(band)),
    };
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Err(err("bad band (like 40-50%)"));
    };
    if lo > hi || hi > 95.0 {
        return Err(err("band must be low-high, at most 95%"));
    }
    Ok((lo, hi))
}

/// Reads a scenario file (its name is the file stem).
pub fn load(path: &std::path::Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "scenario".into());
    parse(&name, &text)
}

/// Reads a cluster file.
pub fn load_cluster(path: &std::path::Path) -> Result<Vec<VmSpec>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::vm::parse_specs(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Scenario {
    /// Checks that every event names a VM of `vms`.
    pub fn check(&self, vms: &[VmSpec]) -> Result<(), String> {
        for e in &self.events {
            let vm = match &e.action {
                Action::Background { vm, .. }
                | Action::BackgroundOff { vm }
                | Action::Contention { vm, .. }
                | Action::Slowdown { vm, .. }
                | Action::Resize { vm, .. }
                | Action::Down { vm }
                | Action::Up { vm } => vm,
                _ => continue,
            };
            let Some(spec) = vms.iter().find(|v| &v.name == vm) else {
                return Err(format!(
                    "{}: event at {}s names VM {vm:?}, not in the cluster",
                    self.name, e.at_s
                ));
            };
            if let Action::Resize { vcpus, .. } = e.action {
                if vcpus < spec.vcpus {
                    return Err(format!(
                        "{}: event at {}s takes VM {vm:?} from {} to {vcpus} vCPUs: a running VM only gains vCPUs",
                        self.name, e.at_s, spec.vcpus
                    ));
                }
            }
        }
        Ok(())
    }

    /// The mix in force `t` seconds into the measured part (events before
    /// 0 s apply from the start of the warm-up).
    pub fn workload_at(&self, t: f64) -> Workload {
        let mut w = self.workload;
        for e in &self.events {
            if let Action::Mix { workload } = e.action {
                if e.at_s <= t {
                    w = workload;
                }
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_statement() {
        let sc = parse(
            "x",
            "# c\nworkload mix\nfrontends 60 40\n\
             at 60s vm5 background cpu 40-50%  # job\n\
             at 1m vm4 contention 50%\nat 61 vm4 slowdown 20%\n\
             at 70s vm3 down\nat 80s vm3 up\nat 90s vsphere down 60s\n\
             at 200s vsphere up\nat 100s mix t1\nat 120s vm5 background off\n\
             at 10s vm2 background cpu 30%\nat 130s vm1 vcpus 2\n",
        )
        .unwrap();
        assert_eq!(sc.workload, Workload::Mix);
        assert_eq!(sc.frontends, vec![60.0, 40.0]);
        assert_eq!(sc.events.len(), 11);
        assert_eq!(
            sc.events[9].action,
            Action::Resize {
                vm: "vm1".into(),
                vcpus: 2
            }
        );
        assert_eq!(
            sc.events[0].action,
            Action::Background {
                vm: "vm2".into(),
                lo: 30.0,
                hi: 30.0
            }
        );
        assert_eq!(
            sc.events[1],
            Event {
                at_s: 60.0,
                action: Action::Background {
                    vm: "vm5".into(),
                    lo: 40.0,
                    hi: 50.0
                }
            }
        );
        assert_eq!(
            sc.events[2].action,
            Action::Contention {
                vm: "vm4".into(),
                pct: 50.0
            }
        );
        assert_eq!(sc.workload_at(99.0), Workload::Mix);
        assert_eq!(sc.workload_at(100.0), Workload::T1);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("workload t9", "x:1: unknown workload"),
            ("\nat 5x vm1 down", "x:2: bad time"),
            ("at 5s vm1 explode", "unknown event"),
            ("at 5s vm1 background cpu 60-40%", "low-high"),
            ("at 5s vm1 contention 99%", "0-95%"),
            ("frontends 1 -1", "above 0"),
            ("at 5s vm1 vcpus 0", "bad vCPU count"),
            ("hello", "unknown statement"),
        ] {
            let e = parse("x", text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let sc = parse("x", "at 5s vm9 down").unwrap();
        let vms = vec![VmSpec::new("vm1", "127.0.0.1", 1000.0, 1, 0.0)];
        assert!(sc.check(&vms).unwrap_err().contains("vm9"));
        let vms = vec![VmSpec::new("vm1", "127.0.0.1", 4000.0, 2, 0.0)];
        let sc = parse("x", "at 5s vm1 vcpus 1").unwrap();
        assert!(sc.check(&vms).unwrap_err().contains("only gains"));
        assert!(parse("x", "at 5s vm1 vcpus 4").unwrap().check(&vms).is_ok());
    }

    #[test]
    fn capacity_and_expert_weights() {
        let vms = vec![
            VmSpec::new("a", "127.0.0.1", 2000.0, 1, 4000.0),
            VmSpec::new("b", "127.0.0.1", 10000.0, 4, 2000.0),
        ];
        // T2: CPU-bound, weights by CPU
        assert_eq!(Workload::T2.weights(&vms), vec![10, 50]);
        // T1: network-bound, weights by network
        assert_eq!(Workload::T1.weights(&vms), vec![20, 10]);
        assert!(Workload::Short.capacity_rps(&vms) > Workload::T2.capacity_rps(&vms));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("x").is_err());
    }
}
