//! Layout of one upstream's shared-memory zone, as a view over a slice of
//! `AtomicU64` words. Every nginx worker maps the same words; the request
//! path only loads a few words per candidate peer and does one atomic add
//! for the chosen one (and one when the request ends). One writer (the
//! collector that holds the lease) publishes allocations or shares;
//! readers never lock.
//!
//! ```text
//! header   HEADER words: magic, n, names hash, valid-until, W[4], ...,
//!          epoch, cost per request[4], rate
//! hot      n x 4 words: target (paper), sent, done, share|limit (what the
//!          pick reads, packed so a scan of many peers touches few cache
//!          lines)
//! cold     n x COLD words: base, alloc, capacity[4], Q[4], flags, CPU
//!          ready, target share, background[4], effective CPU, failed,
//!          identity, address[2], port, mapping, VM name[10],
//!          newest usage[4] (see below)
//! ```
//!
//! In-flight requests of a peer are `sent − done` over every worker of the
//! instance (whether or not the upstream has nginx's `zone`). When the zone
//! is cleared for other peers (a reload), the epoch changes, and a request
//! counted before only ends in the zone if its epoch still matches.
//!
//! A peer's slot is found by its identity (`server` as written plus its
//! address, [`crate::slots::ident`]), never by its position in nginx's
//! list, which a `resolve` server changes at run time. Servers known when
//! the configuration is read have a fixed slot each; every `resolve`
//! server has [`crate::slots::SPARE_SLOTS`] spare slots that the addresses
//! it resolves to claim (a compare-and-swap on the slot's identity word, so
//! two workers that meet a new address at once agree) and give back once
//! their address is gone and no request is in flight on them
//! ([`Shared::claim`]).

use crate::algo::{Res, R};
use crate::vsphere::client::{Error, ERROR_CLASSES};
use std::sync::atomic::{AtomicU64, Ordering::*};

const MAGIC: u64 = 0x6477_6570_635f_7635; // "dwepc_v5"

/// Words in the header.
pub const HEADER: usize = 24;
/// Words per peer: 4 hot + 38 cold.
pub const PEER: usize = 42;
const HOT: usize = 4;
const COLD: usize = PEER - HOT;

const H_MAGIC: usize = 0;
const H_N: usize = 1;
const H_HASH: usize = 2;
const H_VALID_UNTIL: usize = 3;
const H_W: usize = 4; // 4 words
const H_SAMPLE_END: usize = 8;
const H_APPLIED: usize = 9;
const H_WINDOW: usize = 10;
const H_REASON: usize = 11;
const H_GENERATION: usize = 12;
const H_EPOCH: usize = 13;
const H_COST: usize = 14; // 4 words
const H_RATE: usize = 18;
const H_REJECTED: usize = 19;
const H_SLOTS: usize = 20;

// hot words
const P_TARGET: usize = 0;
const P_TOTAL: usize = 1;
const P_DONE: usize = 2;
const P_SHARE: usize = 3;
// cold words (offsets from the peer's cold slot)
const P_BASE: usize = HOT;
const P_ALLOC: usize = HOT + 1;
const P_CAP: usize = HOT + 2; // 4 words
const P_Q: usize = HOT + 6; // 4 words
const P_FLAGS: usize = HOT + 10;
const P_READY: usize = HOT + 11;
const P_TSHARE: usize = HOT + 12;
const P_BG: usize = HOT + 13; // 4 words
const P_ECPU: usize = HOT + 17;
const P_FAILED: usize = HOT + 18;
const P_IDENT: usize = HOT + 19;
const P_ADDR: usize = HOT + 20; // 2 words
const P_PORT: usize = HOT + 22;
const P_MAP: usize = HOT + 23;
const P_VM: usize = HOT + 24; // VM_NAME_WORDS words
const P_USE: usize = P_VM + VM_NAME_WORDS; // 4 words

/// Words of a peer's VM name (vSphere names are at most 80 characters).
const VM_NAME_WORDS: usize = 10;
const _: () = assert!(P_USE + R == PEER, "peer words out of step with PEER");

/// How a peer's server was matched to a VM (the collector writes it; the
/// status page reads it).
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

const ADDR_SET: u64 = 1 << 16;
const ADDR_V4: u64 = 1 << 17;

/// Peer flag: the peer's VM was found and reports counters.
pub const FLAG_COUNTERS: u64 = 1;

/// Words needed for `n` peers.
pub fn words(n: usize) -> usize {
    HEADER + n * PEER
}

/// Bytes needed for `n` peers.
pub fn bytes(n: usize) -> usize {
    words(n) * 8
}

/// FNV-1a over the peer names, to recognise an unchanged upstream after a
/// reload.
pub fn names_hash<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for b in name.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A share in [0, 1] as the integer weight the pick compares: share × 2³²,
/// rounded, at most `u32::MAX` (integer cross-multiplication, as nginx's
/// least_conn compares `conns × weight`, keeps floating point off the
/// request path).
#[inline]
pub fn share_weight(share: f64) -> u32 {
    if share > 0.0 {
        (share * 4_294_967_296.0).round().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

/// Packs a share (as its [`share_weight`]) and an in-flight limit into one
/// word.
#[inline]
pub fn pack_share(share: f64, limit: u32) -> u64 {
    ((share_weight(share) as u64) << 32) | limit as u64
}

/// Unpacks [`pack_share`]: the share's weight and the limit.
#[inline]
pub fn unpack_share(w: u64) -> (u32, u32) {
    ((w >> 32) as u32, w as u32)
}

/// The share a [`share_weight`] stands for.
#[inline]
pub fn weight_share(weight: u32) -> f64 {
    weight as f64 / 4_294_967_296.0
}

/// Why the balancer is (not) using counters; kept in the header for the
/// status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Reason {
    /// Counters drive the pick.
    Active = 0,
    /// No vSphere endpoint configured for this upstream.
    NoEndpoint = 1,
    /// No sample yet.
    NoSamples = 2,
    /// Not enough samples with request counts to fit W.
    TooFewSamples = 3,
    /// No traffic to learn W from.
    NoTraffic = 4,
    /// No node with counters / no resource with capacities.
    NoCounters = 5,
    /// The newest sample is older than the TTL.
    Stale = 6,
    /// vSphere cannot be reached or answers with errors.
    VsphereError = 7,
}

/// Every reason with its name on the status page and its text in the log:
/// the one table of them.
/// Every reason's name, in order (for the Prometheus exposition).
pub fn reason_names() -> impl Iterator<Item = &'static str> {
    REASONS.iter().map(|r| r.1)
}

const REASONS: [(Reason, &str, &str); 8] = [
    (Reason::Active, "active", "balancing by ESXi counters"),
    (
        Reason::NoEndpoint,
        "no_endpoint",
        "no vSphere endpoint configured",
    ),
    (Reason::NoSamples, "no_samples", "no counter samples yet"),
    (
        Reason::TooFewSamples,
        "too_few_samples",
        "too few samples with request counts yet",
    ),
    (
        Reason::NoTraffic,
        "no_traffic",
        "no traffic to learn from yet",
    ),
    (
        Reason::NoCounters,
        "no_counters",
        "no server has usable counters and capacities",
    ),
    (
        Reason::Stale,
        "stale",
        "counters are stale (older than ttl)",
    ),
    (Reason::VsphereError, "vsphere_error", "vSphere errors"),
];

impl Reason {
    fn entry(self) -> &'static (Reason, &'static str, &'static str) {
        &REASONS[self as usize]
    }

    /// Name shown on the status page.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// What it means, for the log.
    pub fn text(self) -> &'static str {
        self.entry().2
    }

    fn from_u64(x: u64) -> Reason {
        REASONS.get(x as usize).map_or(Reason::NoSamples, |e| e.0)
    }
}

/// A view of one upstream's zone.
#[derive(Clone, Copy)]
pub struct Shared<'a> {
    /// The zone's words.
    mem: &'a [AtomicU64],
    n: usize,
}

fn f(x: u64) -> f64 {
    f64::from_bits(x)
}

impl<'a> Shared<'a> {
    /// Wraps `words`; `None` if too short for `n` peers.
    pub fn new(mem: &'a [AtomicU64], n: usize) -> Option<Shared<'a>> {
        (mem.len() >= words(n)).then_some(Shared { mem, n })
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no peers.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[inline]
    fn p(&self, i: usize, off: usize) -> &AtomicU64 {
        if off < HOT {
            &self.mem[HEADER + i * HOT + off]
        } else {
            &self.mem[HEADER + self.n * HOT + i * COLD + (off - HOT)]
        }
    }

    /// Prepares the zone for an upstream with peers named by `hash`. If the
    /// zone already holds the same upstream (a reload that kept the peers),
    /// its state is kept and `true` is returned; otherwise it is cleared,
    /// keeping only a previous W.
    pub fn init(&self, hash: u64) -> bool {
        let same = self.mem[H_MAGIC].load(Acquire) == MAGIC
            && self.mem[H_N].load(Relaxed) == self.n as u64
            && self.mem[H_HASH].load(Relaxed) == hash;
        if same {
            self.mem[H_GENERATION].fetch_add(1, Relaxed);
            return true;
        }
        let ours = self.mem[H_MAGIC].load(Relaxed) == MAGIC;
        let kept_w = ours.then(|| self.w());
        let epoch = if ours {
            self.mem[H_EPOCH].load(Relaxed)
        } else {
            0
        };
        for x in self.mem.iter().take(words(self.n)) {
            x.store(0, Relaxed);
        }
        let nan = f64::NAN.to_bits();
        for i in 0..self.n {
            for off in [P_ALLOC, P_READY, P_TSHARE, P_ECPU] {
                self.p(i, off).store(nan, Relaxed);
            }
            for j in 0..R {
                self.p(i, P_CAP + j).store(nan, Relaxed);
                self.p(i, P_Q + j).store(nan, Relaxed);
                self.p(i, P_BG + j).store(nan, Relaxed);
                self.p(i, P_USE + j).store(nan, Relaxed);
            }
        }
        for j in 0..R {
            self.mem[H_COST + j].store(nan, Relaxed);
        }
        self.mem[H_RATE].store(nan, Relaxed);
        if let Some(Some(w)) = kept_w {
            self.set_w(Some(w));
        } else {
            self.set_w(None);
        }
        self.mem[H_EPOCH].store(epoch.wrapping_add(1), Relaxed);
        self.mem[H_REASON].store(Reason::NoSamples as u64, Relaxed);
        self.mem[H_N].store(self.n as u64, Relaxed);
        self.mem[H_HASH].store(hash, Relaxed);
        self.mem[H_MAGIC].store(MAGIC, Release);
        false
    }

    /// Changes every time the zone is cleared for other peers.
    #[inline]
    pub fn epoch(&self) -> u64 {
        self.mem[H_EPOCH].load(Relaxed)
    }

    /// Requests in flight on peer `i` (sent and not yet done, over every
    /// worker).
    #[inline]
    pub fn in_flight(&self, i: usize) -> u64 {
        self.pick_view(i).0
    }

    /// What the shares pick reads of peer `i`: requests in flight, the
    /// share's [`share_weight`] and the in-flight limit, from the peer's
    /// four hot words (one bounds check, one cache line).
    #[inline]
    pub fn pick_view(&self, i: usize) -> (u64, u32, u32) {
        let at = HEADER + i * HOT;
        let hot = &self.mem[at..at + HOT];
        let done = hot[P_DONE].load(Relaxed);
        let in_flight = hot[P_TOTAL].load(Relaxed).saturating_sub(done);
        let (share, limit) = unpack_share(hot[P_SHARE].load(Relaxed));
        (in_flight, share, limit)
    }

    /// Share and in-flight limit of peer `i` (shares mode).
    #[inline]
    pub fn share(&self, i: usize) -> (f64, u32) {
        let (weight, limit) = unpack_share(self.p(i, P_SHARE).load(Relaxed));
        (weight_share(weight), limit)
    }

    /// Counts the end of a request on peer `i` counted by [`Shared::count`]
    /// while the zone had `epoch`; ignored if the zone was cleared since.
    #[inline]
    pub fn finish(&self, i: usize, epoch: u64) {
        if i < self.n && self.epoch() == epoch {
            self.p(i, P_DONE).fetch_add(1, Relaxed);
        }
    }

    /// Counts a request to peer `i` that failed (nginx's `free` with
    /// NGX_PEER_FAILED: connection refused, timeout, bad answer), under the
    /// same epoch rule as [`Shared::finish`].
    #[inline]
    pub fn failed(&self, i: usize, epoch: u64) {
        if i < self.n && self.epoch() == epoch {
            self.p(i, P_FAILED).fetch_add(1, Relaxed);
        }
    }

    /// Failed requests to peer `i`.
    pub fn failures(&self, i: usize) -> u64 {
        self.p(i, P_FAILED).load(Relaxed)
    }

    /// All failure counts.
    pub fn all_failures(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.failures(i)).collect()
    }

    /// Requests to peer `i` that ended, since the zone was created.
    pub fn done(&self, i: usize) -> u64 {
        self.p(i, P_DONE).load(Relaxed)
    }

    /// All done counts.
    pub fn dones(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.done(i)).collect()
    }

    /// Publishes shares and limits (shares mode), valid until
    /// `valid_until_ms` (wall clock).
    pub fn apply_shares(&self, shares: &[f64], limits: &[u64], valid_until_ms: u64, now_ms: u64) {
        for i in 0..self.n {
            let s = shares.get(i).copied().unwrap_or(0.0);
            let l = limits.get(i).copied().unwrap_or(0).min(u32::MAX as u64) as u32;
            self.p(i, P_SHARE).store(pack_share(s, l), Relaxed);
        }
        self.mem[H_APPLIED].store(now_ms, Relaxed);
        self.mem[H_REASON].store(Reason::Active as u64, Relaxed);
        self.mem[H_VALID_UNTIL].store(valid_until_ms, Release);
    }

    /// Publishes what the shares mode estimated (status page): cost per
    /// request, completed requests per second, and per peer the target
    /// share, background use and effective CPU capacity.
    pub fn set_model(&self, cost: Option<Res>, rate: Option<f64>, peers: &[(f64, Res, f64)]) {
        let cost = cost.unwrap_or([f64::NAN; R]);
        for (j, c) in cost.iter().enumerate() {
            self.mem[H_COST + j].store(c.to_bits(), Relaxed);
        }
        self.mem[H_RATE].store(rate.unwrap_or(f64::NAN).to_bits(), Relaxed);
        for (i, (t, bg, ecpu)) in peers.iter().enumerate().take(self.n) {
            self.p(i, P_TSHARE).store(t.to_bits(), Relaxed);
            for (j, b) in bg.iter().enumerate() {
                self.p(i, P_BG + j).store(b.to_bits(), Relaxed);
            }
            self.p(i, P_ECPU).store(ecpu.to_bits(), Relaxed);
        }
    }

    /// Counts a request answered at once because every peer was at its
    /// in-flight limit (the overload guard).
    #[inline]
    pub fn guard_reject(&self) {
        self.mem[H_REJECTED].fetch_add(1, Relaxed);
    }

    /// Requests the overload guard answered at once.
    pub fn guard_rejections(&self) -> u64 {
        self.mem[H_REJECTED].load(Relaxed)
    }

    /// Published cost per request (NaN where unknown).
    pub fn cost(&self) -> Res {
        std::array::from_fn(|j| f(self.mem[H_COST + j].load(Relaxed)))
    }

    /// Published completed requests per second.
    pub fn rate(&self) -> f64 {
        f(self.mem[H_RATE].load(Relaxed))
    }

    /// Published shares (all peers; shares mode), to resume from.
    pub fn shares(&self) -> Option<Vec<f64>> {
        let s: Vec<f64> = (0..self.n).map(|i| self.share(i).0).collect();
        s.iter().all(|x| x.is_finite() && *x > 0.0).then_some(s)
    }

    /// Counters drive the pick at wall time `now_ms` (before valid-until).
    #[inline]
    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms < self.mem[H_VALID_UNTIL].load(Relaxed)
    }

    /// Remaining allocation `L = target - total` of peer `i`.
    #[inline]
    pub fn remaining(&self, i: usize) -> f64 {
        f(self.p(i, P_TARGET).load(Relaxed)) - self.p(i, P_TOTAL).load(Relaxed) as f64
    }

    /// Published allocation of peer `i` (the weight, in WLC mode).
    #[inline]
    pub fn allocation(&self, i: usize) -> f64 {
        f(self.p(i, P_ALLOC).load(Relaxed))
    }

    /// Counts one request sent to peer `i`.
    #[inline]
    pub fn count(&self, i: usize) {
        self.p(i, P_TOTAL).fetch_add(1, Relaxed);
    }

    /// Requests sent to peer `i` since the zone was created.
    pub fn total(&self, i: usize) -> u64 {
        self.p(i, P_TOTAL).load(Relaxed)
    }

    /// All totals.
    pub fn totals(&self) -> Vec<u64> {
        (0..self.n).map(|i| self.total(i)).collect()
    }

    /// Starts a new period: `alloc` requests for each peer from now on,
    /// valid until `valid_until_ms` (wall clock).
    pub fn apply(&self, alloc: &[f64], valid_until_ms: u64, now_ms: u64) {
        for (i, a) in alloc.iter().enumerate().take(self.n) {
            let base = self.total(i);
            self.p(i, P_BASE).store(base, Relaxed);
            self.p(i, P_ALLOC).store(a.to_bits(), Relaxed);
            self.p(i, P_TARGET)
                .store((base as f64 + a).to_bits(), Relaxed);
        }
        self.mem[H_APPLIED].store(now_ms, Relaxed);
        self.mem[H_REASON].store(Reason::Active as u64, Relaxed);
        self.mem[H_VALID_UNTIL].store(valid_until_ms, Release);
    }

    /// Stops using counters (weighted round robin) for `reason`.
    pub fn disable(&self, reason: Reason) {
        self.mem[H_VALID_UNTIL].store(0, Release);
        self.mem[H_REASON].store(reason as u64, Relaxed);
        for i in 0..self.n {
            self.p(i, P_ALLOC).store(f64::NAN.to_bits(), Relaxed);
        }
    }

    /// Time until which the published allocations are valid.
    pub fn valid_until(&self) -> u64 {
        self.mem[H_VALID_UNTIL].load(Relaxed)
    }

    /// Current reason (Stale when the allocations expired by time).
    pub fn reason(&self, now_ms: u64) -> Reason {
        let r = Reason::from_u64(self.mem[H_REASON].load(Relaxed));
        if r == Reason::Active && !self.usable(now_ms) {
            Reason::Stale
        } else {
            r
        }
    }

    /// Sets the reason without touching the allocations.
    pub fn set_reason(&self, r: Reason) {
        self.mem[H_REASON].store(r as u64, Relaxed);
    }

    /// Publishes W (or its absence).
    pub fn set_w(&self, w: Option<Res>) {
        for j in 0..R {
            let x = w.map(|w| w[j]).unwrap_or(f64::NAN);
            self.mem[H_W + j].store(x.to_bits(), Relaxed);
        }
    }

    /// Published W.
    pub fn w(&self) -> Option<Res> {
        let w: Res = std::array::from_fn(|j| f(self.mem[H_W + j].load(Relaxed)));
        w.iter().all(|x| x.is_finite()).then_some(w)
    }

    /// Records window facts for the status page.
    pub fn set_window(&self, len: usize, sample_end_ms: u64) {
        self.mem[H_WINDOW].store(len as u64, Relaxed);
        self.mem[H_SAMPLE_END].store(sample_end_ms, Relaxed);
    }

    /// Samples in the window and end time of the newest (0 = none).
    pub fn window(&self) -> (u64, u64) {
        (
            self.mem[H_WINDOW].load(Relaxed),
            self.mem[H_SAMPLE_END].load(Relaxed),
        )
    }

    /// Number of times this zone was taken over by a reload.
    pub fn generation(&self) -> u64 {
        self.mem[H_GENERATION].load(Relaxed)
    }

    /// Publishes capacity and headroom of peer `i`.
    pub fn set_peer_info(&self, i: usize, cap: Res, q: Res, has_counters: bool) {
        for j in 0..R {
            self.p(i, P_CAP + j).store(cap[j].to_bits(), Relaxed);
            self.p(i, P_Q + j).store(q[j].to_bits(), Relaxed);
        }
        self.p(i, P_FLAGS)
            .store(if has_counters { FLAG_COUNTERS } else { 0 }, Relaxed);
    }

    /// Publishes the CPU ready time of peer `i`'s VM in its newest sample,
    /// in percent of the sample's interval (NaN: not reported).
    pub fn set_cpu_ready(&self, i: usize, pct: f64) {
        self.p(i, P_READY).store(pct.to_bits(), Relaxed);
    }

    /// Publishes what peer `i`'s VM used in its newest sample, per
    /// resource (MHz, MB, KB/s, KB/s; NaN: not reported).
    pub fn set_usage(&self, i: usize, usage: Res) {
        for (j, x) in usage.iter().enumerate() {
            self.p(i, P_USE + j).store(x.to_bits(), Relaxed);
        }
    }

    /// The identity that holds slot `i` (0: a free spare slot).
    pub fn slot_ident(&self, i: usize) -> u64 {
        self.p(i, P_IDENT).load(Acquire)
    }

    /// The address of the peer that claimed spare slot `i`, if any.
    pub fn slot_addr(&self, i: usize) -> Option<std::net::SocketAddr> {
        let port = self.p(i, P_PORT).load(Acquire);
        if port & ADDR_SET == 0 || self.slot_ident(i) == 0 {
            return None;
        }
        let bits = (self.p(i, P_ADDR).load(Relaxed) as u128) << 64
            | self.p(i, P_ADDR + 1).load(Relaxed) as u128;
        let v6 = std::net::Ipv6Addr::from(bits);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if port & ADDR_V4 != 0 => std::net::IpAddr::V4(v4),
            _ => std::net::IpAddr::V6(v6),
        };
        Some(std::net::SocketAddr::new(ip, port as u16))
    }

    /// Changes every time a spare slot is claimed (for the collector, which
    /// maps the new address to its VM).
    pub fn slots_generation(&self) -> u64 {
        self.mem[H_SLOTS].load(Acquire)
    }

    /// The slot for the peer `ident` (at `addr`) among the spare slots
    /// `candidates` (the ones its `resolve` server owns, minus those
    /// already given to other peers of the list): the slot that already
    /// holds `ident`, else a free one, else one whose identity `gone` says
    /// has left nginx's list and that has no request in flight. Claims are
    /// compare-and-swaps, so workers that meet a new address at once end
    /// up in the same slot. `None` when every candidate is in use.
    pub fn claim(
        &self,
        candidates: &[usize],
        ident: u64,
        addr: Option<std::net::SocketAddr>,
        gone: impl Fn(u64) -> bool,
    ) -> Option<usize> {
        // a lost race means another worker claimed a slot: look again
        for _ in 0..=candidates.len() {
            if let Some(&i) = candidates.iter().find(|&&i| self.slot_ident(i) == ident) {
                return Some(i);
            }
            let free = candidates
                .iter()
                .copied()
                .find(|&i| self.slot_ident(i) == 0);
            let stale = || {
                candidates.iter().copied().find(|&i| {
                    let old = self.slot_ident(i);
                    gone(old) && self.in_flight(i) == 0
                })
            };
            let i = free.or_else(stale)?;
            let old = self.slot_ident(i);
            if self
                .p(i, P_IDENT)
                .compare_exchange(old, ident, AcqRel, Relaxed)
                .is_ok()
            {
                self.set_slot_addr(i, addr);
                self.mem[H_SLOTS].fetch_add(1, Release);
                return Some(i);
            }
        }
        None
    }

    fn set_slot_addr(&self, i: usize, addr: Option<std::net::SocketAddr>) {
        let Some(addr) = addr else {
            self.p(i, P_PORT).store(0, Release);
            return;
        };
        let (bits, v4) = match addr.ip() {
            std::net::IpAddr::V4(a) => (u128::from(a.to_ipv6_mapped()), ADDR_V4),
            std::net::IpAddr::V6(a) => (u128::from(a), 0),
        };
        self.p(i, P_ADDR).store((bits >> 64) as u64, Relaxed);
        self.p(i, P_ADDR + 1).store(bits as u64, Relaxed);
        self.p(i, P_PORT)
            .store(addr.port() as u64 | ADDR_SET | v4, Release);
    }

    /// Records how peer `i` was matched to a VM, and the VM's name
    /// (truncated to 80 bytes at a character boundary). A reader that
    /// races a change may see a mixed name; names change only on a remap.
    pub fn set_mapping(&self, i: usize, m: Mapping, vm: Option<&str>) {
        if i >= self.n {
            return;
        }
        let name = vm.unwrap_or("");
        let mut end = name.len().min(VM_NAME_WORDS * 8);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        let bytes = &name.as_bytes()[..end];
        for w in 0..VM_NAME_WORDS {
            let mut chunk = [0u8; 8];
            let from = (w * 8).min(bytes.len());
            let to = (w * 8 + 8).min(bytes.len());
            chunk[..to - from].copy_from_slice(&bytes[from..to]);
            self.p(i, P_VM + w)
                .store(u64::from_le_bytes(chunk), Relaxed);
        }
        self.p(i, P_MAP)
            .store(m as u64 | (end as u64) << 8, Release);
    }

    /// How peer `i` was matched, and its VM's name.
    pub fn mapping(&self, i: usize) -> (Mapping, Option<String>) {
        if i >= self.n {
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

    /// Status of peer `i`: (capacity, q, allocation, v, l, has_counters).
    pub fn peer_info(&self, i: usize) -> PeerInfo {
        let total = self.total(i);
        let base = self.p(i, P_BASE).load(Relaxed);
        PeerInfo {
            capacity: std::array::from_fn(|j| f(self.p(i, P_CAP + j).load(Relaxed))),
            q: std::array::from_fn(|j| f(self.p(i, P_Q + j).load(Relaxed))),
            allocation: f(self.p(i, P_ALLOC).load(Relaxed)),
            v: total.saturating_sub(base),
            l: self.remaining(i),
            total,
            has_counters: self.p(i, P_FLAGS).load(Relaxed) & FLAG_COUNTERS != 0,
            cpu_ready_pct: f(self.p(i, P_READY).load(Relaxed)),
            done: self.done(i),
            failed: self.failures(i),
            in_flight: self.in_flight(i),
            share: self.share(i).0,
            limit: self.share(i).1 as u64,
            target_share: f(self.p(i, P_TSHARE).load(Relaxed)),
            background: std::array::from_fn(|j| f(self.p(i, P_BG + j).load(Relaxed))),
            effective_cpu: f(self.p(i, P_ECPU).load(Relaxed)),
            usage: std::array::from_fn(|j| f(self.p(i, P_USE + j).load(Relaxed))),
        }
    }
}

/// What the status page shows of one peer.
#[derive(Clone, Copy, Debug)]
pub struct PeerInfo {
    /// Usable capacity.
    pub capacity: Res,
    /// Headroom Q.
    pub q: Res,
    /// Allocation of the current period.
    pub allocation: f64,
    /// Requests in the current period.
    pub v: u64,
    /// Remaining allocation.
    pub l: f64,
    /// Requests since the zone was created.
    pub total: u64,
    /// The peer's VM reports counters.
    pub has_counters: bool,
    /// `cpu.ready.summation` of the newest sample in percent of its
    /// interval (summed over vCPUs, as vSphere's VM-level value); NaN when
    /// not reported. The shares mode scales CPU capacity by it.
    pub cpu_ready_pct: f64,
    /// Requests that ended.
    pub done: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Requests in flight (all workers).
    pub in_flight: u64,
    /// Share in force (shares mode).
    pub share: f64,
    /// In-flight limit (0 = none).
    pub limit: u64,
    /// Target share of the last sample.
    pub target_share: f64,
    /// Background use per resource.
    pub background: Res,
    /// CPU capacity after CPU ready.
    pub effective_cpu: f64,
    /// Use of the VM in its newest sample, per resource.
    pub usage: Res,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(n: usize) -> Vec<AtomicU64> {
        (0..words(n)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn mappings_and_vm_names_round_trip() {
        let z = zone(2);
        let s = Shared::new(&z, 2).unwrap();
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

    #[test]
    fn apply_count_remaining() {
        let z = zone(3);
        let s = Shared::new(&z, 3).unwrap();
        assert!(!s.init(42));
        assert!(!s.usable(0));
        assert_eq!(s.reason(1), Reason::NoSamples);
        s.count(1);
        s.count(1);
        s.apply(&[5.0, 3.0, -1.0], 1000, 10);
        assert!(s.usable(999) && !s.usable(1000));
        assert_eq!(s.remaining(1), 3.0);
        s.count(1);
        assert_eq!(s.remaining(1), 2.0);
        let p = s.peer_info(1);
        assert_eq!((p.v, p.total, p.allocation), (1, 3, 3.0));
        // CPU ready: unknown until published, per peer, in its own word
        assert!(p.cpu_ready_pct.is_nan());
        s.set_cpu_ready(1, 2.5);
        assert_eq!(s.peer_info(1).cpu_ready_pct, 2.5);
        assert!(s.peer_info(0).cpu_ready_pct.is_nan() && s.peer_info(2).cpu_ready_pct.is_nan());
        assert_eq!(s.remaining(1), 2.0);
        assert_eq!(s.reason(1001), Reason::Stale);
        s.disable(Reason::VsphereError);
        assert!(!s.usable(0));
        assert_eq!(s.reason(0), Reason::VsphereError);
    }

    #[test]
    fn reinit_keeps_same_upstream_and_w() {
        let z = zone(2);
        let s = Shared::new(&z, 2).unwrap();
        s.init(7);
        s.count(0);
        s.set_w(Some([1.0, 0.0, 0.5, 0.0]));
        assert!(s.init(7));
        assert_eq!(s.total(0), 1);
        assert_eq!(s.generation(), 1);
        // different peers: counts cleared, W kept
        assert!(!s.init(8));
        assert_eq!(s.total(0), 0);
        assert_eq!(s.w(), Some([1.0, 0.0, 0.5, 0.0]));
    }

    #[test]
    fn in_flight_over_epochs() {
        let z = zone(2);
        let s = Shared::new(&z, 2).unwrap();
        s.init(1);
        let e = s.epoch();
        s.count(0);
        s.count(0);
        s.count(1);
        assert_eq!((s.in_flight(0), s.in_flight(1)), (2, 1));
        s.finish(0, e);
        assert_eq!(s.in_flight(0), 1);
        // a reload with other peers clears the zone: requests counted
        // before end without touching the new counts
        assert!(!s.init(2));
        assert_ne!(s.epoch(), e);
        s.count(0);
        s.finish(0, e);
        s.finish(1, e);
        assert_eq!((s.in_flight(0), s.done(0), s.done(1)), (1, 0, 0));
        s.finish(0, s.epoch());
        assert_eq!(s.in_flight(0), 0);
        s.failed(0, e);
        assert_eq!(s.failures(0), 0);
        s.failed(0, s.epoch());
        assert_eq!(s.all_failures(), vec![1, 0]);
        // more done than sent can never show as a huge number
        s.finish(1, s.epoch());
        assert_eq!(s.in_flight(1), 0);
        s.finish(7, s.epoch()); // out of range: ignored
    }

    #[test]
    fn shares_and_limits_packed() {
        assert_eq!(unpack_share(pack_share(0.25, 17)), (1 << 30, 17));
        assert_eq!(weight_share(unpack_share(pack_share(0.25, 17)).0), 0.25);
        assert_eq!(
            unpack_share(pack_share(1.0, u32::MAX)),
            (u32::MAX, u32::MAX)
        );
        assert_eq!(unpack_share(pack_share(0.0, 3)), (0, 3));
        assert_eq!(share_weight(-1.0), 0);
        assert_eq!(share_weight(f64::NAN), 0);
        assert!((weight_share(share_weight(0.123_456_7)) - 0.123_456_7).abs() < 1e-9);
        let z = zone(3);
        let s = Shared::new(&z, 3).unwrap();
        s.init(9);
        assert!(s.shares().is_none());
        s.apply_shares(&[0.5, 0.3, 0.2], &[10, 6, 4], 1000, 0);
        assert!(s.usable(999));
        assert!((s.share(1).0 - 0.3).abs() < 1e-9 && s.share(1).1 == 6);
        let sh = s.shares().unwrap();
        assert!((sh[2] - 0.2).abs() < 1e-7);
        s.set_model(
            Some([100.0, f64::NAN, 2.0, f64::NAN]),
            Some(12.5),
            &[(0.4, [1.0; R], 2000.0)],
        );
        assert_eq!(s.cost()[0], 100.0);
        assert_eq!(s.rate(), 12.5);
        let p = s.peer_info(0);
        assert_eq!((p.share as f32, p.limit, p.target_share), (0.5, 10, 0.4));
        assert_eq!(p.effective_cpu, 2000.0);
        assert!(s.peer_info(1).target_share.is_nan());
    }

    #[test]
    fn too_small_zone_rejected() {
        let z = zone(2);
        assert!(Shared::new(&z, 3).is_none());
    }

    #[test]
    fn claims_find_keep_and_reuse_spare_slots() {
        let z = zone(4);
        let s = Shared::new(&z, 4).unwrap();
        s.init(1);
        let a: std::net::SocketAddr = "127.0.0.2:80".parse().unwrap();
        let b: std::net::SocketAddr = "[::1]:81".parse().unwrap();
        let c: std::net::SocketAddr = "127.0.0.4:80".parse().unwrap();
        let spares = [1, 2];
        let g0 = s.slots_generation();
        assert_eq!(s.claim(&spares, 10, Some(a), |_| false), Some(1));
        assert_eq!(s.slot_addr(1), Some(a));
        assert!(s.slots_generation() > g0);
        // the same identity finds its slot again, without a new claim
        let g1 = s.slots_generation();
        assert_eq!(s.claim(&spares, 10, Some(a), |_| false), Some(1));
        assert_eq!(s.slots_generation(), g1);
        assert_eq!(s.claim(&spares, 11, Some(b), |_| false), Some(2));
        assert_eq!(s.slot_addr(2), Some(b));
        // full: a third identity gets nothing while the others are listed
        assert_eq!(s.claim(&spares, 12, Some(c), |_| false), None);
        // 10 left the list but has a request in flight: not reused yet
        s.count(1);
        assert_eq!(s.claim(&spares, 12, Some(c), |x| x == 10), None);
        s.finish(1, s.epoch());
        assert_eq!(s.claim(&spares, 12, Some(c), |x| x == 10), Some(1));
        assert_eq!((s.slot_ident(1), s.slot_addr(1)), (12, Some(c)));
        // slots outside the candidates are never touched
        assert_eq!(s.slot_ident(0), 0);
        assert_eq!(s.slot_addr(3), None);
        // a cleared zone frees every slot
        s.init(2);
        assert_eq!((s.slot_ident(1), s.slot_addr(1)), (0, None));
    }

    #[test]
    fn reasons_round_trip_through_their_word() {
        for (i, (r, name, text)) in REASONS.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(Reason::from_u64(i as u64), *r);
            assert_eq!((r.name(), r.text()), (*name, *text));
        }
        assert_eq!(Reason::from_u64(99), Reason::NoSamples);
    }

    #[test]
    fn hash_depends_on_order_and_split() {
        assert_ne!(names_hash(["a", "b"]), names_hash(["b", "a"]));
        assert_ne!(names_hash(["ab"]), names_hash(["a", "b"]));
    }
}

/// Words of the lease itself.
const LEASE_HEAD: usize = 8;
/// vSphere endpoints with a record in the lease zone (more endpoints
/// share the last record's absence: they are polled, not recorded).
pub const MAX_ENDPOINT_RECORDS: usize = 16;
/// Words per endpoint record.
pub const ENDPOINT_WORDS: usize = 40;
/// Words of the instance-wide lease zone: the lease and one record per
/// vSphere endpoint.
pub const LEASE_WORDS: usize = LEASE_HEAD + MAX_ENDPOINT_RECORDS * ENDPOINT_WORDS;

const E_KEY: usize = 0;
const E_CALLS: usize = 1;
const E_LOGINS: usize = 2;
const E_LAST_OK: usize = 3;
const E_AUTH_FAILS: usize = 4;
const E_AUTH_RETRY_AT: usize = 5;
const E_AUTH_STREAK: usize = 6;
const E_REUSED: usize = 7;
const E_ERRORS: usize = 8; // ERROR_CLASSES.len() words
const E_SESSION_LEN: usize = 24;
const E_SESSION: usize = 25; // SESSION_WORDS words
const SESSION_WORDS: usize = ENDPOINT_WORDS - E_SESSION;
/// The longest session cookie the record keeps (vCenter's and vcsim's
/// are about 60 bytes); a longer one is not shared, only not reused.
pub const MAX_SESSION_COOKIE: usize = SESSION_WORDS * 8;
const _: () = assert!(E_ERRORS + ERROR_CLASSES.len() <= E_SESSION_LEN);

/// What every worker knows of one vSphere endpoint, kept in the lease zone
/// (so a new polling worker, or the workers after a reload, see it):
/// calls, logins, errors by class, the last success, the login refusals
/// that hold further logins back, and the polling worker's session cookie,
/// which a worker that takes over after the holder died or froze reuses
/// instead of leaving that session open on the vCenter and opening
/// another (vCenter caps sessions per user).
#[derive(Clone, Copy)]
pub struct EndpointRecord<'a> {
    mem: &'a [AtomicU64],
}

/// A snapshot of an [`EndpointRecord`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStats {
    pub calls: u64,
    pub logins: u64,
    /// Wall-clock ms of the last successful poll (0 = none).
    pub last_success_ms: u64,
    /// Logins refused (wrong user or password), in all.
    pub auth_failures: u64,
    /// No login is tried before this (wall-clock ms; 0 = none held).
    pub auth_retry_at_ms: u64,
    /// Sessions taken over from a polling worker that died or froze.
    pub sessions_reused: u64,
    /// Errors per class of [`ERROR_CLASSES`].
    pub errors: [u64; ERROR_CLASSES.len()],
}

impl<'a> EndpointRecord<'a> {
    fn w(&self, i: usize) -> &AtomicU64 {
        &self.mem[i]
    }
    /// Counts `n` calls.
    pub fn add_calls(&self, n: u64) {
        self.w(E_CALLS).fetch_add(n, Relaxed);
    }
    /// A successful login: the refusal streak ends.
    pub fn login_ok(&self) {
        self.w(E_LOGINS).fetch_add(1, Relaxed);
        self.w(E_AUTH_STREAK).store(0, Relaxed);
        self.w(E_AUTH_RETRY_AT).store(0, Relaxed);
    }
    /// A login refused at `now_ms`: the next is held back
    /// ([`auth_wait_ms`]). Returns the time of the next try.
    pub fn login_refused(&self, now_ms: u64) -> u64 {
        self.w(E_AUTH_FAILS).fetch_add(1, Relaxed);
        let streak = self.w(E_AUTH_STREAK).fetch_add(1, Relaxed);
        let at = now_ms + auth_wait_ms(streak);
        self.w(E_AUTH_RETRY_AT).store(at, Relaxed);
        at
    }
    /// When the next login may be tried (0 = now).
    pub fn auth_retry_at(&self) -> u64 {
        self.w(E_AUTH_RETRY_AT).load(Relaxed)
    }
    /// A successful poll at `now_ms`.
    pub fn success(&self, now_ms: u64) {
        self.w(E_LAST_OK).store(now_ms, Relaxed);
    }
    /// Counts an error, by its class.
    pub fn error(&self, e: &Error) {
        self.w(E_ERRORS + e.class_index()).fetch_add(1, Relaxed);
    }
    /// Publishes the polling worker's session cookie (`None`: no session
    /// to hand over). Only the lease holder writes it.
    pub fn set_session(&self, cookie: Option<&str>) {
        let bytes = cookie.map_or(&[][..], str::as_bytes);
        // an odd length word means "being written"
        self.w(E_SESSION_LEN).store(1, Release);
        if bytes.is_empty() || bytes.len() > MAX_SESSION_COOKIE {
            self.w(E_SESSION_LEN).store(0, Release);
            return;
        }
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.w(E_SESSION + i).store(u64::from_le_bytes(w), Relaxed);
        }
        self.w(E_SESSION_LEN)
            .store((bytes.len() as u64) << 1, Release);
    }
    /// The session cookie published by the polling worker, if any.
    pub fn session(&self) -> Option<String> {
        let len = self.w(E_SESSION_LEN).load(Acquire);
        if len == 0 || len & 1 == 1 {
            return None;
        }
        let n = ((len >> 1) as usize).min(MAX_SESSION_COOKIE);
        let mut bytes: Vec<u8> = (0..n.div_ceil(8))
            .flat_map(|i| self.w(E_SESSION + i).load(Relaxed).to_le_bytes())
            .collect();
        bytes.truncate(n);
        // written again meanwhile: no cookie rather than a torn one
        if self.w(E_SESSION_LEN).load(Acquire) != len {
            return None;
        }
        String::from_utf8(bytes).ok()
    }
    /// Counts a session taken over from a previous polling worker.
    pub fn session_reused(&self) {
        self.w(E_REUSED).fetch_add(1, Relaxed);
    }
    /// The record now.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            calls: self.w(E_CALLS).load(Relaxed),
            logins: self.w(E_LOGINS).load(Relaxed),
            last_success_ms: self.w(E_LAST_OK).load(Relaxed),
            auth_failures: self.w(E_AUTH_FAILS).load(Relaxed),
            auth_retry_at_ms: self.w(E_AUTH_RETRY_AT).load(Relaxed),
            sessions_reused: self.w(E_REUSED).load(Relaxed),
            errors: std::array::from_fn(|i| self.w(E_ERRORS + i).load(Relaxed)),
        }
    }
}

/// The wait after a refused login, `streak` refusals in a row before it:
/// 5 minutes, doubling up to an hour (vCenter locks an account after 5
/// failures in 3 minutes by default).
pub fn auth_wait_ms(streak: u64) -> u64 {
    (AUTH_RETRY_MS << streak.min(4)).min(AUTH_RETRY_MAX_MS)
}

/// First wait after a refused login.
pub const AUTH_RETRY_MS: u64 = 5 * 60_000;
/// Longest wait between refused logins.
pub const AUTH_RETRY_MAX_MS: u64 = 60 * 60_000;

/// The poller lease, shared by all workers of one nginx instance: only the
/// holder talks to vSphere. A holder renews it every tick; it is taken over
/// when the holder releases it, its process is gone, or its heartbeat is
/// older than the timeout.
#[derive(Clone, Copy)]
pub struct Lease<'a> {
    mem: &'a [AtomicU64],
}

impl<'a> Lease<'a> {
    /// Wraps the lease words; `None` if too short.
    pub fn new(mem: &'a [AtomicU64]) -> Option<Lease<'a>> {
        (mem.len() >= LEASE_WORDS).then_some(Lease { mem })
    }

    /// PID of the holder (0 = free).
    pub fn holder(&self) -> u64 {
        self.mem[0].load(Acquire)
    }

    /// Times the lease changed hands.
    pub fn handovers(&self) -> u64 {
        self.mem[2].load(Relaxed)
    }

    /// Takes or renews the lease for `pid` at `now_ms`. `alive(pid)` tells
    /// whether another holder's process still exists. Returns true if `pid`
    /// holds the lease afterwards.
    pub fn acquire(
        &self,
        pid: u64,
        now_ms: u64,
        timeout_ms: u64,
        alive: impl Fn(u64) -> bool,
    ) -> bool {
        let holder = self.holder();
        if holder == pid {
            self.mem[1].store(now_ms, Release);
            return true;
        }
        let beat = self.mem[1].load(Acquire);
        let free = holder == 0 || now_ms.saturating_sub(beat) > timeout_ms || !alive(holder);
        if free
            && self.mem[0]
                .compare_exchange(holder, pid, AcqRel, Acquire)
                .is_ok()
        {
            self.mem[1].store(now_ms, Release);
            self.mem[2].fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// Gives the lease up if `pid` holds it.
    pub fn release(&self, pid: u64) {
        let _ = self.mem[0].compare_exchange(pid, 0, AcqRel, Acquire);
    }

    /// The record of the endpoint identified by `key`, if one was claimed
    /// (read only: for the status page).
    pub fn find_endpoint(&self, key: u64) -> Option<EndpointRecord<'a>> {
        let key = key.max(1);
        (0..MAX_ENDPOINT_RECORDS).find_map(|r| {
            let start = LEASE_HEAD + r * ENDPOINT_WORDS;
            let mem = self.mem.get(start..start + ENDPOINT_WORDS)?;
            (mem[E_KEY].load(Acquire) == key).then_some(EndpointRecord { mem })
        })
    }

    /// The record of the endpoint identified by `key` (a hash of its
    /// name, URL and user, never 0), claimed on first use; `None` when
    /// every record is taken by other endpoints.
    pub fn endpoint(&self, key: u64) -> Option<EndpointRecord<'a>> {
        let key = key.max(1);
        for r in 0..MAX_ENDPOINT_RECORDS {
            let start = LEASE_HEAD + r * ENDPOINT_WORDS;
            let mem = self.mem.get(start..start + ENDPOINT_WORDS)?;
            match mem[E_KEY].compare_exchange(0, key, AcqRel, Acquire) {
                Ok(_) => return Some(EndpointRecord { mem }),
                Err(k) if k == key => return Some(EndpointRecord { mem }),
                Err(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn lease_lifecycle() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        assert!(l.acquire(10, 1000, 3000, |_| true));
        assert!(!l.acquire(11, 2000, 3000, |_| true)); // holder alive and fresh
        assert!(l.acquire(10, 2500, 3000, |_| true)); // renew
        assert!(!l.acquire(11, 5000, 3000, |_| true));
        assert!(l.acquire(11, 5600, 3000, |_| true)); // heartbeat too old
        assert_eq!(l.holder(), 11);
        assert!(l.acquire(12, 5601, 3000, |p| p != 11)); // holder process gone
        l.release(11); // not the holder: no effect
        assert_eq!(l.holder(), 12);
        l.release(12);
        assert_eq!(l.holder(), 0);
        assert!(l.acquire(13, 6000, 3000, |_| true));
        assert_eq!(l.handovers(), 4);
    }

    #[test]
    fn endpoint_records_are_found_by_key_and_hold_refused_logins_back() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        let a = l.endpoint(7).unwrap();
        a.add_calls(3);
        a.error(&crate::vsphere::client::Error::Timeout);
        // the same key finds the same record; another key another one
        assert_eq!(l.endpoint(7).unwrap().stats().calls, 3);
        assert_eq!(l.find_endpoint(7).unwrap().stats().calls, 3);
        assert!(l.find_endpoint(99).is_none());
        assert_eq!(l.endpoint(8).unwrap().stats().calls, 0);
        assert_eq!(a.stats().errors[2], 1);
        assert_eq!(a.stats().errors.iter().sum::<u64>(), 1);
        // refusals: 5 min, 10, 20, 40, then an hour at most
        let waits: Vec<u64> = (0..6).map(|_| a.login_refused(1_000) - 1_000).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 60, 60].map(|m| m * 60_000),
            "{waits:?}"
        );
        assert_eq!(a.stats().auth_failures, 6);
        a.login_ok();
        assert_eq!(a.auth_retry_at(), 0);
        assert_eq!(a.login_refused(0), AUTH_RETRY_MS);
        // records run out
        for k in 9..(9 + MAX_ENDPOINT_RECORDS as u64 - 2) {
            assert!(l.endpoint(k).is_some());
        }
        assert!(l.endpoint(1_000).is_none());
    }

    #[test]
    fn the_session_cookie_round_trips_through_the_record() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        let a = l.endpoint(7).unwrap();
        assert_eq!(a.session(), None);
        let cookie = "vmware_soap_session=\"52a1c2f3-9d1e-4b7a-8c3f-0e6d2b1a9f47\"";
        a.set_session(Some(cookie));
        assert_eq!(
            l.find_endpoint(7).unwrap().session().as_deref(),
            Some(cookie)
        );
        // a shorter one leaves nothing of the longer behind
        a.set_session(Some("s=1"));
        assert_eq!(a.session().as_deref(), Some("s=1"));
        // the longest kept, and one byte more is not kept at all
        let longest = "x".repeat(MAX_SESSION_COOKIE);
        a.set_session(Some(&longest));
        assert_eq!(a.session().as_deref(), Some(longest.as_str()));
        a.set_session(Some(&"x".repeat(MAX_SESSION_COOKIE + 1)));
        assert_eq!(a.session(), None);
        a.set_session(Some("s=2"));
        a.set_session(None);
        assert_eq!(a.session(), None);
        // the record's other words are untouched
        a.add_calls(2);
        a.set_session(Some(&longest));
        assert_eq!(a.stats().calls, 2);
        assert_eq!(a.stats().errors, [0; ERROR_CLASSES.len()]);
    }
}
