//! The module's configuration state, one type per phase:
//!
//! 1. parsing: the directives fill [`MainState`]'s endpoints and each
//!    upstream's [`ParsedUpstream`];
//! 2. `init_upstream` (the upstream module's `init_main_conf`): nginx's
//!    peer lists become the upstream's [`Servers`] (slots, shared zone);
//! 3. our `init_main_conf`: each upstream's vSphere endpoint and the
//!    instance's lease zone.
//!
//! Each later phase is written once ([`OnceCell`]) and read through
//! accessors; nothing here calls nginx.

use std::cell::{Cell, OnceCell, RefCell};

use dwepc_core::collector::EndpointSpec;
use dwepc_core::conf::{NodeConf, SourceConf, UpstreamConf};
use dwepc_core::policy::latency::PeakEwma;
use dwepc_core::policy::pick::ShareTable;
use dwepc_core::policy::Comparison;
use dwepc_core::zone::slots::{SlotKind, SlotMap};

use crate::balancer::DrawTable;
use ngx::ffi::ngx_shm_zone_t;

/// Where a directive was written.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

impl Origin {
    /// `file:line` for messages.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// A `dwepc_vsphere` or `dwepc_prometheus` endpoint.
#[derive(Debug)]
pub struct Endpoint {
    pub conf: SourceConf,
    pub origin: Origin,
    /// What the collector connects with: the password (or token) read
    /// from its file and the `ca_file`'s contents at configuration time
    /// (as the master's user); never logged or shown.
    pub spec: EndpointSpec,
}

/// A `dwepc_node` line.
#[derive(Debug)]
pub struct NodeDirective {
    pub conf: NodeConf,
    pub origin: Origin,
}

/// Phase 1: what an upstream block's `dwepc` and `dwepc_node` say.
#[derive(Debug)]
pub struct ParsedUpstream {
    pub name: String,
    pub conf: UpstreamConf,
    /// `dwepc` was given (the balancer is in force).
    pub enabled: bool,
    /// Where `dwepc` was written.
    pub origin: Origin,
    pub nodes: Vec<NodeDirective>,
    /// How the pick compares peers (the mode's, for its tuning).
    pub comparison: Comparison,
}

impl Default for ParsedUpstream {
    fn default() -> Self {
        let conf = UpstreamConf::default();
        ParsedUpstream {
            name: String::new(),
            comparison: conf.comparison(),
            conf,
            enabled: false,
            origin: Origin::default(),
            nodes: Vec::new(),
        }
    }
}

/// What the module knows of one slot (a peer known at configuration, or a
/// spare of a `resolve` server).
#[derive(Debug, Clone)]
pub struct PeerMeta {
    pub kind: SlotKind,
    /// `ip:port` (the peer's name; a spare slot: its server's).
    pub name: String,
    /// The `server` directive's address as written.
    pub server: String,
    pub backup: bool,
    pub weight: f64,
    /// The peer's IP, for mapping to a VM by guest IP.
    pub ip: Option<std::net::IpAddr>,
    /// Index of the `dwepc_node` line that applies to it.
    pub node: Option<usize>,
}

impl AsRef<SlotKind> for PeerMeta {
    fn as_ref(&self) -> &SlotKind {
        &self.kind
    }
}

impl PeerMeta {
    /// A spare slot of a `resolve` server.
    pub fn is_spare(&self) -> bool {
        matches!(self.kind, SlotKind::Spare { .. })
    }
}

/// Phase 2: the upstream's slots as `init_upstream` built them, and this
/// worker's request-path state for them.
#[derive(Debug)]
pub struct Servers {
    /// Slots: primaries (fixed, then spares), then backups.
    pub peers: Vec<PeerMeta>,
    pub n_primary: usize,
    /// The upstream's zone (`dwepc:<name>`), added with this configuration.
    pub zone: *mut ngx_shm_zone_t,
    /// Shares mode: this worker's smooth-WRR current weights for breaking
    /// ties (per process, as nginx's least_conn keeps them per worker
    /// without a zone).
    pub tie_weights: Vec<Cell<i64>>,
    /// This worker's response-time estimate per slot (the comparisons
    /// that use it: `least_time`).
    pub latency: Vec<Cell<PeakEwma>>,
    /// The configured `weight=` per slot.
    pub weights: Vec<u32>,
    /// This worker's position → slot maps of the primary and backup lists.
    pub slot_maps: [RefCell<SlotMap>; 2],
    /// This worker's tables to draw peers from (`choices=`), per list.
    pub draw_tables: [RefCell<DrawTable>; 2],
    /// This worker's copy of the zone's published shares and limits, by
    /// slot (what the per-share comparisons read).
    pub share_table: RefCell<ShareTable>,
}

impl Servers {
    pub fn new(peers: Vec<PeerMeta>, n_primary: usize, zone: *mut ngx_shm_zone_t) -> Servers {
        Servers {
            tie_weights: peers.iter().map(|_| Cell::new(0)).collect(),
            latency: peers.iter().map(|_| Cell::default()).collect(),
            weights: peers.iter().map(|p| p.weight.max(1.0) as u32).collect(),
            slot_maps: Default::default(),
            draw_tables: Default::default(),
            share_table: Default::default(),
            peers,
            n_primary,
            zone,
        }
    }
}

/// Per-upstream state (one per `upstream {}` using `dwepc` or `dwepc_node`).
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// Phase 1.
    pub parsed: ParsedUpstream,
    servers: OnceCell<Servers>,
    resolved: OnceCell<Resolved>,
}

/// Phase 3 of an upstream: what `init_main_conf` decided.
#[derive(Clone, Copy, Debug)]
pub struct Resolved {
    /// Index into `MainState::endpoints` (None: no counters).
    pub endpoint: Option<usize>,
    /// The `ttl` in force (a default raised to the takeover time,
    /// `dwepc_core::conf::check_timing`).
    pub ttl_ms: u64,
}

impl UpstreamState {
    pub fn new(name: String) -> UpstreamState {
        UpstreamState {
            parsed: ParsedUpstream {
                name,
                ..ParsedUpstream::default()
            },
            ..UpstreamState::default()
        }
    }

    /// Phase 2, once; false if it was already set.
    pub fn set_servers(&self, servers: Servers) -> bool {
        self.servers.set(servers).is_ok()
    }

    /// The slots, once `init_upstream` ran.
    pub fn servers(&self) -> Option<&Servers> {
        self.servers.get()
    }

    /// The slots' metadata (empty before `init_upstream`).
    pub fn peers(&self) -> &[PeerMeta] {
        self.servers().map_or(&[], |s| &s.peers)
    }

    /// Phase 3, once.
    pub fn resolve(&self, resolved: Resolved) -> bool {
        self.resolved.set(resolved).is_ok()
    }

    /// Index into `MainState::endpoints` (None: no counters, or not
    /// resolved yet).
    pub fn endpoint(&self) -> Option<usize> {
        self.resolved.get().and_then(|r| r.endpoint)
    }

    /// The upstream's configuration with the `ttl` in force.
    pub fn conf(&self) -> UpstreamConf {
        let mut c = self.parsed.conf.clone();
        if let Some(r) = self.resolved.get() {
            c.ttl_ms = r.ttl_ms;
        }
        c
    }
}

/// Module main configuration (http level).
#[derive(Debug, Default)]
pub struct MainState {
    /// Phase 1.
    pub endpoints: Vec<Endpoint>,
    /// Phase 1: upstreams in configuration order (boxes in the same
    /// configuration pool as this state).
    pub upstreams: Vec<*mut UpstreamState>,
    /// Phase 3: the poller lease (only when some upstream has an endpoint).
    lease_zone: OnceCell<*mut ngx_shm_zone_t>,
}

impl MainState {
    /// Upstreams in configuration order.
    pub fn upstreams(&self) -> impl Iterator<Item = &UpstreamState> {
        // SAFETY: the pointers are allocations of the same configuration
        // pool as self, freed only with it.
        self.upstreams.iter().map(|p| unsafe { &**p })
    }

    /// Phase 3, once.
    pub fn set_lease_zone(&self, zone: *mut ngx_shm_zone_t) -> bool {
        self.lease_zone.set(zone).is_ok()
    }

    /// The lease zone, if any upstream has an endpoint.
    pub fn lease_zone(&self) -> Option<&ngx_shm_zone_t> {
        // SAFETY: NULL or the zone added with this configuration; both live
        // in the same cycle.
        self.lease_zone.get().and_then(|z| unsafe { z.as_ref() })
    }
}

/// Our `srv_conf` slot: the upstream's state, set by the first
/// `dwepc`/`dwepc_node` directive in an upstream block (NULL in `server`
/// blocks and upstreams without them).
#[repr(C)]
#[derive(Debug)]
pub struct SrvConf {
    pub ups: *mut UpstreamState,
}

impl Default for SrvConf {
    fn default() -> Self {
        SrvConf {
            ups: std::ptr::null_mut(),
        }
    }
}
