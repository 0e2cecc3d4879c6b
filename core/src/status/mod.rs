//! The status pages served by `dwepc_status`: a snapshot of each upstream
//! from its configuration and its zone ([`snapshot`]), written as JSON
//! ([`document`]) or as Prometheus' text exposition ([`prometheus`]). A
//! mode's own fields come from its [`crate::policy::Mode`]; nothing here
//! asks which mode an upstream uses. Never holds credentials (only
//! endpoint names).

pub mod document;
pub mod prometheus;
pub mod snapshot;

pub use document::{render, render_error, PeerStatus, UpstreamStatus};
pub use prometheus::EndpointMetrics;
pub use snapshot::{snapshot, PeerMeta, UpstreamMeta};
