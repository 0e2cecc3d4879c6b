//! What the collector works on ([`Spec`]): the vSphere endpoints, the
//! upstreams with their servers and zones, and the lease, as the nginx
//! module reads them from its configuration.

use std::net::IpAddr;

use crate::conf::{Accounting, NodeConf, UpstreamConf, VmRef};
use crate::resources::{Res, R};
use crate::vsphere::client;
use crate::zone::{names_hash, Lease, UpstreamZone};

/// One upstream server (a zone slot).
#[derive(Clone, Debug)]
pub struct PeerSpec {
    /// `ip:port` (a spare slot: its `resolve` server as written).
    pub name: String,
    /// IP for the guest-IP lookup (a spare slot: the address that claims
    /// it, read from the zone).
    pub ip: Option<IpAddr>,
    /// A spare slot of a `resolve` server ([`crate::zone::slots`]).
    pub spare: bool,
    /// Configured `weight=`.
    pub weight: f64,
    /// A `backup` server.
    pub backup: bool,
    /// VM lookup.
    pub vm: VmRef,
    /// Capacity overrides (NaN = from vSphere).
    pub capacity: Res,
    /// Effective accounting (node over upstream).
    pub accounting: Accounting,
}

impl PeerSpec {
    /// A server's spec from what the configuration says of it: its
    /// `dwepc_node` line (if one names it) sets the VM lookup, capacity
    /// overrides and accounting over the upstream's.
    pub fn new(
        name: &str,
        ip: Option<IpAddr>,
        weight: f64,
        backup: bool,
        spare: bool,
        node: Option<&NodeConf>,
        upstream: &UpstreamConf,
    ) -> PeerSpec {
        PeerSpec {
            name: name.to_string(),
            ip,
            spare,
            weight,
            backup,
            vm: node.map_or(VmRef::GuestIp, |n| n.vm.clone()),
            capacity: node.map_or([f64::NAN; R], |n| n.capacity),
            accounting: node.map_or(upstream.accounting, |n| {
                n.accounting.over(&upstream.accounting)
            }),
        }
    }
}

/// One upstream using dwepc; `'z` is the life of its zone (in nginx, the
/// cycle's).
#[derive(Clone)]
pub struct UpstreamSpec<'z> {
    pub name: String,
    pub conf: UpstreamConf,
    /// Index into [`Spec::endpoints`]; None = no counters.
    pub endpoint: Option<usize>,
    pub peers: Vec<PeerSpec>,
    pub zone: UpstreamZone<'z>,
}

/// One vSphere endpoint (its `Debug` hides the password).
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub name: String,
    pub client: client::Config,
}

impl EndpointSpec {
    /// The key of its record in the lease zone: name, URL and user (a
    /// reload that changes none of them keeps the record).
    pub fn record_key(&self) -> u64 {
        names_hash([
            self.name.as_str(),
            self.client.url.as_str(),
            self.client.user.as_str(),
        ])
    }

    /// The credentials the endpoint logs in with, as a hash (kept in the
    /// lease zone's record beside a refused login's wait, so the wait
    /// holds only for the credentials that were refused).
    pub fn credentials_key(&self) -> u64 {
        names_hash([self.client.user.as_str(), self.client.password.as_str()])
    }
}

/// Everything the collector thread works on; `'z` is the life of the
/// zones it writes (in nginx, the cycle's).
#[derive(Clone)]
pub struct Spec<'z> {
    pub endpoints: Vec<EndpointSpec>,
    pub upstreams: Vec<UpstreamSpec<'z>>,
    pub lease: Lease<'z>,
    /// This process.
    pub pid: u64,
}

impl Spec<'_> {
    /// Indices of the upstreams that poll endpoint `k`.
    pub fn upstreams_of(&self, k: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.upstreams.len()).filter(move |&i| self.upstreams[i].endpoint == Some(k))
    }
}
