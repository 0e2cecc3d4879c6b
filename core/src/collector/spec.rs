//! What the collector works on ([`Spec`]): the endpoints (vSphere, or
//! Prometheus), the
//! upstreams with their servers and zones, and the lease, as the nginx
//! module reads them from its configuration.

use std::net::IpAddr;

use crate::conf::{Accounting, NodeConf, UpstreamConf, VmRef};
use crate::prometheus;
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

/// Where an endpoint's counters come from, and how to connect (its
/// `Debug` hides the password and the token).
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// `dwepc_vsphere`: the vSphere API of a vCenter or an ESXi host.
    Vsphere(client::Config),
    /// `dwepc_prometheus`: the query API of a Prometheus server that
    /// scrapes an exporter of vSphere's counters.
    Prometheus(prometheus::Config),
}

impl SourceConfig {
    /// Timeout of every call.
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            SourceConfig::Vsphere(c) => c.timeout,
            SourceConfig::Prometheus(c) => c.timeout,
        }
    }
}

/// One endpoint.
#[derive(Clone, Debug)]
pub struct EndpointSpec {
    pub name: String,
    pub source: SourceConfig,
}

impl EndpointSpec {
    /// What it is, for the log: "vSphere" or "Prometheus".
    pub fn kind(&self) -> &'static str {
        match self.source {
            SourceConfig::Vsphere(_) => "vSphere",
            SourceConfig::Prometheus(_) => "Prometheus",
        }
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        match &self.source {
            SourceConfig::Vsphere(c) => &c.url,
            SourceConfig::Prometheus(c) => &c.url,
        }
    }

    /// The user it logs in as ("" for a source without logins).
    pub fn user(&self) -> &str {
        match &self.source {
            SourceConfig::Vsphere(c) => &c.user,
            SourceConfig::Prometheus(_) => "",
        }
    }

    /// The key of its record in the lease zone: name, URL and user (a
    /// reload that changes none of them keeps the record).
    pub fn record_key(&self) -> u64 {
        names_hash([self.name.as_str(), self.url(), self.user()])
    }

    /// The credentials the endpoint logs in with, as a hash (kept in the
    /// lease zone's record beside a refused login's wait, so the wait
    /// holds only for the credentials that were refused).
    pub fn credentials_key(&self) -> u64 {
        match &self.source {
            SourceConfig::Vsphere(c) => names_hash([c.user.as_str(), c.password.as_str()]),
            SourceConfig::Prometheus(c) => {
                names_hash([c.bearer_token.as_deref().unwrap_or_default()])
            }
        }
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
