//! Shared memory: the words every nginx worker of the instance maps.
//!
//! * One zone per dwepc upstream (`dwepc:<upstream>`, [`UpstreamZone`]):
//!   what the request path counts and reads ([`upstream`]), what the
//!   collector publishes for the pick and the status pages ([`publish`],
//!   [`mapping`], [`reason`]), and the slots that tie nginx's peers to
//!   their words by identity ([`slots`]). Where each word lives:
//!   [`layout`].
//! * One zone per instance (`dwepc_lease`, [`Lease`]): the poller lease and
//!   one record per vSphere endpoint ([`lease`]).
//!
//! Everything here is a view over `AtomicU64` words that nginx allocated:
//! loads, stores and atomic adds, no locks. Nothing here decides anything;
//! the policies and the collector write, the request path and the status
//! pages read.

pub mod layout;
pub mod lease;
pub mod mapping;
pub mod publish;
pub mod reason;
pub mod slots;
pub mod upstream;

pub use layout::{bytes, names_hash, words};
pub use lease::{EndpointRecord, EndpointStats, Lease, LEASE_WORDS};
pub use mapping::Mapping;
pub use publish::PeerInfo;
pub use reason::Reason;
pub use upstream::{share_weight, weight_share, UpstreamZone};

/// The words of a zone of `n` peers, all 0, in private memory (for tests).
#[cfg(test)]
pub(crate) fn test_words(n: usize) -> Vec<std::sync::atomic::AtomicU64> {
    (0..words(n))
        .map(|_| std::sync::atomic::AtomicU64::new(0))
        .collect()
}
