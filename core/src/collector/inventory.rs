//! Mapping servers to VMs: the VM inventory is read every 5 minutes (every
//! 30 s while a server has no VM, and within three poll intervals of a
//! VM's samples showing it changed size), and whenever a `resolve` address takes or
//! leaves a spare slot; each server is matched by its guest IP or by the
//! VM name its `dwepc_node` gives, its usable capacity computed, and its
//! policy and zone told. Changes are summed up in one log line per
//! upstream.

use std::net::IpAddr;

use super::resize::REREAD_INTERVALS;
use super::runtime::Level;
use super::spec::PeerSpec;
use super::Collector;
use crate::conf::VmRef;
use crate::policy::PeerFacts;
use crate::resources::{self, Res, DEFAULT_NET_KBPS, R};
use crate::vsphere::xml::VmInfo;
use crate::vsphere::Error;
use crate::zone::Mapping;

/// How old the inventory may get.
const INVENTORY_EVERY_MS: u64 = 300_000;
/// How old it may get while a server has no VM.
const UNMAPPED_EVERY_MS: u64 = 30_000;

impl Collector<'_, '_> {
    /// Reads endpoint `k`'s inventory when due, and maps its upstreams'
    /// servers again when it or a spare slot changed.
    pub(super) fn refresh_inventory(&mut self, k: usize, now: u64) -> Result<(), Error> {
        // addresses that took or left spare slots since the last poll
        if self.read_slots(k) {
            self.remap(k);
        }
        let unmapped = self.spec.upstreams_of(k).any(|i| {
            let r = &self.ups[i];
            r.vm.iter().zip(&r.present).any(|(v, &p)| p && v.is_none())
        });
        let ep = &mut self.eps[k];
        let resized = ep.sizes.seen().is_some();
        let due = ep.inventory_at.is_none_or(|t| {
            let age = now.saturating_sub(t);
            age > INVENTORY_EVERY_MS
                || (unmapped && age > UNMAPPED_EVERY_MS)
                || (resized && age >= REREAD_INTERVALS * ep.interval_ms)
        });
        if due {
            let view = ep.view.clone().ok_or(Error::NotAuthenticated)?;
            // the lease renewed between pages, as between QueryPerf
            // batches: thousands of VMs take tens of pages
            let (lease, pid, rt) = (self.spec.lease, self.spec.pid, self.rt);
            let mut fresh = ep.api()?.vms(&view, &mut || {
                lease.beat(pid, rt.now_ms());
            })?;
            if !self.renew_lease() {
                return Ok(());
            }
            let ep = &mut self.eps[k];
            keep_known_sizes(&mut fresh, &ep.inventory);
            ep.inventory = fresh;
            ep.inventory_at = Some(now);
            ep.sizes.reset();
            self.remap(k);
        }
        Ok(())
    }

    /// Reads which addresses hold the spare slots of `resolve` servers of
    /// upstreams on endpoint `k`; true if any changed.
    fn read_slots(&mut self, k: usize) -> bool {
        let mut changed = false;
        for ui in self.spec.upstreams_of(k) {
            let (u, run) = (&self.spec.upstreams[ui], &mut self.ups[ui]);
            let generation = u.zone.slots_generation();
            if run.slots_seen == Some(generation) {
                continue;
            }
            run.slots_seen = Some(generation);
            for (i, p) in u.peers.iter().enumerate().filter(|(_, p)| p.spare) {
                let ip = u.zone.slot_addr(i).map(|a| a.ip());
                let present = u.zone.slot_ident(i) != 0;
                if run.ip[i] == ip && run.present[i] == present {
                    continue;
                }
                if present {
                    self.rt.log(
                        Level::Notice,
                        &format!(
                            "dwepc: upstream \"{}\": server {} resolved to {} (slot {i})",
                            u.name,
                            p.name,
                            ip.map_or("no address".into(), |a| a.to_string())
                        ),
                    );
                }
                run.ip[i] = ip;
                run.present[i] = present;
                run.unmapped[i] = None;
                run.ambiguous[i] = false;
                changed = true;
            }
        }
        changed
    }

    /// Maps the servers of upstreams on endpoint `k` to VMs and sets their
    /// capacities.
    fn remap(&mut self, k: usize) {
        let ups: Vec<usize> = self.spec.upstreams_of(k).collect();
        for ui in ups {
            self.remap_upstream(k, ui);
        }
    }

    /// Maps upstream `ui`'s servers to the VMs of endpoint `k`'s
    /// inventory, and says what changed in one line per kind of change.
    fn remap_upstream(&mut self, k: usize, ui: usize) {
        let inventory = &self.eps[k].inventory;
        let (u, run) = (&self.spec.upstreams[ui], &mut self.ups[ui]);
        let mut lost: Vec<String> = Vec::new();
        let mut regained: Vec<String> = Vec::new();
        let mut ambiguous: Vec<String> = Vec::new();
        for (i, p) in u.peers.iter().enumerate() {
            let present = run.present[i];
            let found = present
                .then(|| find_vm(&p.vm, run.ip[i], inventory))
                .flatten();
            run.vm[i] = found.map(|v| v.moref.clone());
            let capacity = usable_capacity(p, found);
            run.policy.set_peer(
                i,
                PeerFacts {
                    capacity,
                    vcpus: found.map_or(f64::NAN, |v| v.num_cpu),
                    weight: p.weight,
                    backup: p.backup,
                    present,
                },
            );
            u.zone.set_capacity(i, capacity);
            run.policy.publish_peer(u.zone, i);
            let mapping = mapping_of(&p.vm, present, run.ip[i], found.is_some());
            u.zone
                .set_mapping(i, mapping, found.map(|v| v.name.as_str()));
            let candidates = matching_vms(&p.vm, run.ip[i], inventory);
            if present && (candidates > 1) != run.ambiguous[i] {
                run.ambiguous[i] = candidates > 1;
                if candidates > 1 {
                    ambiguous.push(format!(
                        "{} ({}: {candidates} VMs)",
                        p.name,
                        lookup_words(&p.vm, run.ip[i])
                    ));
                }
            }
            let is_unmapped = found.is_none();
            if present && run.unmapped[i] != Some(is_unmapped) {
                let line = format!("{} ({})", p.name, lookup_words(&p.vm, run.ip[i]));
                if is_unmapped {
                    lost.push(line);
                } else if run.unmapped[i].is_some() {
                    regained.push(line);
                }
                run.unmapped[i] = Some(is_unmapped);
            }
        }
        let (mapped, servers) = run.mapped();
        // one line per upstream and change, however many servers
        for (level, list, what, tail) in [
            (
                Level::Error,
                &lost,
                "match no VM",
                "; balanced on their weight",
            ),
            (Level::Notice, &regained, "found their VM", ""),
            (
                Level::Error,
                &ambiguous,
                "match more than one VM",
                "; the first (a powered-on one by guest IP) is used: name the VM with dwepc_node vm=, or narrow scope=",
            ),
        ] {
            if list.is_empty() {
                continue;
            }
            self.rt.log(
                level,
                &format!(
                    "dwepc: upstream \"{}\": {} server{} {what}: {}{tail} ({mapped} of {servers} servers mapped)",
                    u.name,
                    list.len(),
                    if list.len() == 1 { "" } else { "s" },
                    first_few(list)
                ),
            );
        }
    }
}

/// A size the new inventory does not know (0: a missing, NaN or negative
/// value, as a broken source answers) but the last one did, for the same
/// VM, is kept: an answer that lost a VM's size does not take its
/// capacity away.
fn keep_known_sizes(fresh: &mut [VmInfo], old: &[VmInfo]) {
    let old: std::collections::HashMap<&str, &VmInfo> =
        old.iter().map(|o| (o.moref.as_str(), o)).collect();
    for v in fresh.iter_mut() {
        let Some(o) = old.get(v.moref.as_str()) else {
            continue;
        };
        for (new, was) in [
            (&mut v.max_cpu_mhz, o.max_cpu_mhz),
            (&mut v.num_cpu, o.num_cpu),
            (&mut v.memory_mb, o.memory_mb),
        ] {
            if (new.is_nan() || *new <= 0.0) && was > 0.0 {
                *new = was;
            }
        }
    }
}

/// How many VMs of the inventory a server's lookup matches (more than
/// one: vCenter names are unique only within a folder; an IP may be
/// reported by clones or by VMs on separate networks).
fn matching_vms(vm: &VmRef, ip: Option<IpAddr>, inventory: &[VmInfo]) -> usize {
    match vm {
        VmRef::Name(n) => inventory.iter().filter(|v| &v.name == n).count(),
        VmRef::GuestIp => ip.map_or(0, |ip| {
            let ip = ip.to_string();
            inventory.iter().filter(|v| v.ips.contains(&ip)).count()
        }),
    }
}

/// The VM a server is: the one named by its `dwepc_node vm=`, or the one
/// reporting its IP as a guest IP (a powered-on one first).
pub fn find_vm<'a>(vm: &VmRef, ip: Option<IpAddr>, inventory: &'a [VmInfo]) -> Option<&'a VmInfo> {
    match vm {
        VmRef::Name(n) => inventory.iter().find(|v| &v.name == n),
        VmRef::GuestIp => {
            let ip = ip?.to_string();
            let all: Vec<&VmInfo> = inventory.iter().filter(|v| v.ips.contains(&ip)).collect();
            all.iter().find(|v| v.powered_on).or(all.first()).copied()
        }
    }
}

/// A server's usable capacity: its VM's size (CPU MHz, memory MB, the
/// adapter's link speed), overridden by its `dwepc_node` capacities, after
/// its accounting (ratio, reserved); NaN where unknown.
fn usable_capacity(p: &PeerSpec, vm: Option<&VmInfo>) -> Res {
    let positive = |x: f64| if x > 0.0 { x } else { f64::NAN };
    let total: Res = match vm {
        Some(v) => [
            positive(v.max_cpu_mhz),
            positive(v.memory_mb),
            DEFAULT_NET_KBPS,
            f64::NAN,
        ],
        None => [f64::NAN; R],
    };
    let total: Res = std::array::from_fn(|j| {
        if p.capacity[j].is_finite() {
            p.capacity[j]
        } else {
            total[j]
        }
    });
    p.accounting.usable(total).map(resources::capacity)
}

/// How a server was matched to a VM, or why not.
fn mapping_of(vm: &VmRef, present: bool, ip: Option<IpAddr>, found: bool) -> Mapping {
    match vm {
        _ if found => Mapping::Mapped,
        _ if !present || (*vm == VmRef::GuestIp && ip.is_none()) => Mapping::NoAddress,
        VmRef::Name(_) => Mapping::NoVmNamed,
        VmRef::GuestIp => Mapping::NoGuestIp,
    }
}

/// How a server is looked up, for the log.
fn lookup_words(vm: &VmRef, ip: Option<IpAddr>) -> String {
    match vm {
        VmRef::Name(n) => format!("VM named \"{n}\""),
        VmRef::GuestIp => match ip {
            Some(ip) => format!("guest IP {ip}"),
            None => "guest IP (the server has none)".into(),
        },
    }
}

/// The first few items of a list, and how many more.
pub fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    const FEW: usize = 5;
    let shown: Vec<&str> = items.iter().take(FEW).map(AsRef::as_ref).collect();
    let mut out = shown.join(", ");
    if items.len() > FEW {
        out.push_str(&format!(" and {} more", items.len() - FEW));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_size_keeps_the_last_known_one() {
        let vm = |id: &str, mhz: f64| VmInfo {
            moref: id.into(),
            max_cpu_mhz: mhz,
            num_cpu: if mhz > 0.0 { 2.0 } else { 0.0 },
            memory_mb: 2048.0,
            ..VmInfo::default()
        };
        let old = [vm("a", 4000.0), vm("b", 4000.0)];
        let mut fresh = [vm("a", 0.0), vm("b", 8000.0), vm("c", 0.0)];
        keep_known_sizes(&mut fresh, &old);
        assert_eq!((fresh[0].max_cpu_mhz, fresh[0].num_cpu), (4000.0, 2.0));
        // a real resize is taken, and a VM never seen keeps its unknown
        assert_eq!(fresh[1].max_cpu_mhz, 8000.0);
        assert_eq!(fresh[2].max_cpu_mhz, 0.0);
    }
}
