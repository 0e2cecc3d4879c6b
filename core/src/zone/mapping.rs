//! How each peer's server was matched to a VM ([`Mapping`]) and the VM's
//! name, kept in the peer's cold words: the collector writes them after
//! every inventory read, the status pages read them.

use std::sync::atomic::Ordering::*;

use super::layout::{P_MAP, P_VM, VM_NAME_WORDS};
use super::UpstreamZone;

/// How a peer's server was matched to a VM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mapping {
    /// Not looked up yet (no inventory read).
    #[default]
    Pending,
    /// Its VM was found (its name is kept beside).
    Mapped,
    /// No VM reports the server's address as a guest IP.
    NoGuestIp,
    /// No VM has the name its `dwepc_node vm=` gives.
    NoVmNamed,
    /// A spare slot with no address: nothing to look up.
    NoAddress,
}

/// Mappings by zone code, with their status-page names.
const MAPPINGS: [(Mapping, &str); 5] = [
    (Mapping::Pending, "pending"),
    (Mapping::Mapped, "mapped"),
    (Mapping::NoGuestIp, "no_vm_with_guest_ip"),
    (Mapping::NoVmNamed, "no_vm_named"),
    (Mapping::NoAddress, "no_address"),
];

impl Mapping {
    fn from_u64(x: u64) -> Mapping {
        MAPPINGS
            .get((x & 0xff) as usize)
            .map_or(Mapping::Pending, |m| m.0)
    }

    /// Its name on the status page.
    pub fn name(self) -> &'static str {
        MAPPINGS[self as usize].1
    }
}

impl serde::Serialize for Mapping {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl UpstreamZone<'_> {
    /// Records how peer `i` was matched to a VM, and the VM's name
    /// (truncated to 80 bytes at a character boundary). A reader that
    /// races a change may see a mixed name; names change only on a remap.
    pub fn set_mapping(&self, i: usize, m: Mapping, vm: Option<&str>) {
        if i >= self.len() {
            return;
        }
        let name = vm.unwrap_or("");
        let mut end = name.len().min(VM_NAME_WORDS * 8);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &name.as_bytes()[..end];
        for (w, chunk) in bytes
            .chunks(8)
            .chain(std::iter::repeat(&[][..]))
            .take(VM_NAME_WORDS)
            .enumerate()
        {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.p(i, P_VM + w).store(u64::from_le_bytes(word), Relaxed);
        }
        self.p(i, P_MAP)
            .store(m as u64 | (end as u64) << 8, Release);
    }

    /// How peer `i` was matched, and its VM's name.
    pub fn mapping(&self, i: usize) -> (Mapping, Option<String>) {
        if i >= self.len() {
            return (Mapping::Pending, None);
        }
        let word = self.p(i, P_MAP).load(Acquire);
        let len = ((word >> 8) as usize).min(VM_NAME_WORDS * 8);
        let mut bytes = Vec::with_capacity(len);
        for w in 0..VM_NAME_WORDS {
            bytes.extend_from_slice(&self.p(i, P_VM + w).load(Relaxed).to_le_bytes());
        }
        bytes.truncate(len);
        let name = (len > 0).then(|| String::from_utf8_lossy(&bytes).into_owned());
        (Mapping::from_u64(word), name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_and_vm_names_round_trip() {
        let z = crate::zone::test_words(2);
        let s = UpstreamZone::new(&z, 2).unwrap();
        s.init(1);
        assert_eq!(s.mapping(0), (Mapping::Pending, None));
        s.set_mapping(0, Mapping::Mapped, Some("web-01"));
        s.set_mapping(1, Mapping::NoVmNamed, None);
        assert_eq!(s.mapping(0), (Mapping::Mapped, Some("web-01".into())));
        assert_eq!(s.mapping(1), (Mapping::NoVmNamed, None));
        // 80 bytes at most, cut at a character boundary
        let long = "é".repeat(50);
        s.set_mapping(0, Mapping::Mapped, Some(&long));
        assert_eq!(s.mapping(0).1.unwrap(), "é".repeat(40));
        s.set_mapping(0, Mapping::NoGuestIp, None);
        assert_eq!(s.mapping(0), (Mapping::NoGuestIp, None));
    }
}
