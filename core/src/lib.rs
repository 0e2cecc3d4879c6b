//! dwepc-core: everything of the dwepc balancer that needs no nginx types.
//! The nginx module (`dwepc`, the crate at the root of this workspace) is
//! a thin FFI layer over it; `ARCHITECTURE.md` at the root is the map.
//!
//! # Layout
//!
//! Folders by topic, each file one job; dependencies run down this list
//! and never back up:
//!
//! | module | job |
//! |---|---|
//! | [`conf`] | the directives' words parsed and checked (`nginx -t`'s errors) |
//! | [`collector`] | the background loop: lease, polls, inventory, samples into the policies |
//! | [`status`] | the status pages: a snapshot of each upstream, as JSON or Prometheus text |
//! | [`policy`] | the balancing modes behind one interface: their models, their picks, what they show |
//! | [`vsphere`] | the SOAP client, the answers' budgets and decoders, its errors; the calls every counter source answers (`vsphere::Api`) |
//! | [`prometheus`] | the Prometheus counter source: the query API's client, where each counter is (profiles) |
//! | [`zone`] | shared memory: each upstream's words, the slots, the lease zone |
//! | [`resources`], [`clock`], [`rng`] | the resource vocabulary, the one clock, the tie-breaking generator |
//!
//! The two data paths:
//!
//! * a request: the module's `get` runs the upstream's
//!   [`policy::Comparison`] over nginx's peers on what its policy published in its
//!   [`zone::UpstreamZone`], and counts the request there; `free` counts
//!   its end;
//! * a counter sample: the [`collector`] reads it with the
//!   [`vsphere::client::Client`], pairs it with the requests of its period
//!   and gives it to the upstream's [`policy::Policy`], which publishes
//!   into the zone what the pick and the status pages read.

#![forbid(unsafe_code)]

pub mod clock;
pub mod collector;
pub mod conf;
pub mod policy;
pub mod prometheus;
pub mod resources;
pub mod rng;
pub mod status;
pub mod vsphere;
pub mod zone;
