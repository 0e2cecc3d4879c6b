//! The Prometheus counter source: the counters of vSphere as a
//! monitoring pipeline already collects them (vmware_exporter or
//! Telegraf's `vsphere` input, scraped by Prometheus), read through
//! Prometheus's HTTP query API, so that one collector serves any number
//! of nginx frontends and no frontend holds a vCenter password.
//!
//! The [`client::Client`] answers the collector's calls
//! ([`crate::vsphere::Api`]) in vSphere's vocabulary: a VM is its
//! `id_label` value, the counter catalog is the [`profile::Profile`]'s
//! counters, a sample is a raw Prometheus sample with its own
//! timestamp. Everything after the answer (inventory matching, pairing,
//! the policies) is the collector's, as for vSphere.
//!
//! | file | job |
//! |---|---|
//! | [`profile`] | where each counter, size and label is (built-in profiles, overrides) |
//! | [`answer`] | the query API's JSON |
//! | [`client`] | the queries, their caps, and the answers in vSphere's vocabulary |

pub mod answer;
pub mod client;
pub mod profile;

pub use client::{Client, Config};
pub use profile::Profile;
