//! nginx's own picks as plain Rust over the same peers as the module's:
//! smooth weighted round robin, least_conn (per-worker counts, an upstream
//! without `zone`), least_conn on counts shared across workers, and the
//! locks nginx takes around a pick and a request's end in an upstream with
//! a `zone`. Each `step` is one pick and then one request's end on the
//! next peer, as under a steady load.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

/// nginx's smooth weighted round robin (ngx_http_upstream_get_peer).
pub struct Wrr {
    pub weight: Vec<i64>,
    pub current: Vec<i64>,
    pub effective: Vec<i64>,
}

impl Wrr {
    pub fn pick(&mut self) -> usize {
        let mut best = usize::MAX;
        let mut total = 0;
        for i in 0..self.weight.len() {
            self.current[i] += self.effective[i];
            total += self.effective[i];
            if self.effective[i] < self.weight[i] {
                self.effective[i] += 1;
            }
            if best == usize::MAX || self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}

/// nginx's least_conn (ngx_http_upstream_get_least_conn_peer): the least
/// conns/weight (cross-multiplied), then, when several tie, smooth weighted
/// round robin among them.
pub struct LeastConn {
    pub conns: Vec<u64>,
    pub weight: Vec<i64>,
    pub current: Vec<i64>,
}

impl LeastConn {
    /// `n` peers with weights 1..5 and 0..12 connections (by position), as
    /// the module's benchmarks set their zones up.
    pub fn new(n: usize) -> LeastConn {
        LeastConn {
            conns: (0..n).map(|i| (i % 13) as u64).collect(),
            weight: (0..n).map(|i| 1 + (i % 5) as i64).collect(),
            current: vec![0; n],
        }
    }

    /// One pick, then one request's end on the next peer.
    #[inline(always)]
    pub fn step(&mut self) -> usize {
        let k = self.pick();
        let j = (k + 1) % self.conns.len();
        self.conns[j] = self.conns[j].saturating_sub(1);
        k
    }

    /// [`LeastConn::step`] inside the locks of an upstream with a `zone`.
    #[inline(always)]
    pub fn step_in(&mut self, locks: &ZoneLocks) -> usize {
        let k = locks.pick(|| self.pick());
        let j = (k + 1) % self.conns.len();
        locks.end(j, || self.conns[j] = self.conns[j].saturating_sub(1));
        k
    }

    /// One pick, counted.
    pub fn pick(&mut self) -> usize {
        let conns = &self.conns;
        let best = least_conn(conns.len(), |i| conns[i], &self.weight, &mut self.current);
        self.conns[best] += 1;
        best
    }
}

/// nginx's least_conn loop over `n` peers with counts `conns(i)`: the
/// least conns/weight (cross-multiplied), ties by smooth weighted round
/// robin on `current`; the peer, not yet counted.
#[inline(always)]
pub fn least_conn(
    n: usize,
    conns: impl Fn(usize) -> u64,
    weight: &[i64],
    current: &mut [i64],
) -> usize {
    let mut best = 0;
    let mut many = false;
    for i in 1..n {
        let (a, b) = (
            conns(i) * weight[best] as u64,
            conns(best) * weight[i] as u64,
        );
        if a < b {
            best = i;
            many = false;
        } else if a == b {
            many = true;
        }
    }
    if many {
        let mut total = 0;
        let mut p = usize::MAX;
        for i in best..n {
            if conns(i) * weight[best] as u64 != conns(best) * weight[i] as u64 {
                continue;
            }
            current[i] += weight[i];
            total += weight[i];
            if p == usize::MAX || current[i] > current[p] {
                p = i;
            }
        }
        current[p] -= total;
        best = p;
    }
    best
}

/// [`LeastConn::pick`] over counts in shared words, counted with an
/// atomic add.
pub fn least_conn_shared(conns: &[AtomicU64], weight: &[i64], current: &mut [i64]) -> usize {
    let best = least_conn(conns.len(), |i| conns[i].load(Relaxed), weight, current);
    conns[best].fetch_add(1, Relaxed);
    best
}

/// nginx's `ngx_rwlock_t` (src/core/ngx_rwlock.c), uncontended: the write
/// lock is a compare-and-set from 0, a read lock a compare-and-set adding
/// one reader, the unlock another compare-and-set or an atomic add. An
/// upstream with a `zone` takes the peers' write lock around the pick and,
/// in the round robin `free`, the peers' read lock and the peer's own lock
/// around `conns--`.
pub struct NgxRwlock(pub AtomicU64);

const NGX_RWLOCK_WLOCK: u64 = u64::MAX;

impl NgxRwlock {
    pub fn wlock(&self) {
        while self
            .0
            .compare_exchange(0, NGX_RWLOCK_WLOCK, Acquire, Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }

    pub fn rlock(&self) {
        loop {
            let r = self.0.load(Relaxed);
            if r != NGX_RWLOCK_WLOCK && self.0.compare_exchange(r, r + 1, Acquire, Relaxed).is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
    }

    pub fn unlock(&self) {
        if self.0.load(Relaxed) == NGX_RWLOCK_WLOCK {
            let _ = self
                .0
                .compare_exchange(NGX_RWLOCK_WLOCK, 0, Release, Relaxed);
        } else {
            self.0.fetch_sub(1, Release);
        }
    }
}

/// least_conn's loop on counts kept exact across workers as dwepc keeps
/// them (a shared word per peer, an atomic add at the pick and at the end;
/// no locks): the floor of a scan with dwepc's exactness.
pub struct SharedLeastConn {
    conns: Vec<AtomicU64>,
    weight: Vec<i64>,
    current: Vec<i64>,
}

impl SharedLeastConn {
    /// As [`LeastConn::new`].
    pub fn new(n: usize) -> SharedLeastConn {
        let lc = LeastConn::new(n);
        SharedLeastConn {
            conns: lc.conns.into_iter().map(AtomicU64::new).collect(),
            weight: lc.weight,
            current: lc.current,
        }
    }

    /// One pick, then one request's end on the next peer.
    #[inline(always)]
    pub fn step(&mut self) -> usize {
        let k = least_conn_shared(&self.conns, &self.weight, &mut self.current);
        let j = (k + 1) % self.conns.len();
        if self.conns[j].load(Relaxed) > 0 {
            self.conns[j].fetch_sub(1, Relaxed);
        }
        k
    }
}

/// The locks of an upstream with a `zone`, one peer lock per peer.
pub struct ZoneLocks {
    peers: NgxRwlock,
    peer: Vec<NgxRwlock>,
}

impl ZoneLocks {
    /// Unlocked, for `n` peers.
    pub fn new(n: usize) -> ZoneLocks {
        ZoneLocks {
            peers: NgxRwlock(AtomicU64::new(0)),
            peer: (0..n).map(|_| NgxRwlock(AtomicU64::new(0))).collect(),
        }
    }

    /// `pick` inside the peers' write lock.
    #[inline(always)]
    pub fn pick(&self, pick: impl FnOnce() -> usize) -> usize {
        self.peers.wlock();
        let k = pick();
        self.peers.unlock();
        k
    }

    /// `end` of a request on peer `j` inside the peers' read lock and the
    /// peer's own lock.
    #[inline(always)]
    pub fn end(&self, j: usize, end: impl FnOnce()) {
        self.peers.rlock();
        self.peer[j].wlock();
        end();
        self.peer[j].unlock();
        self.peers.unlock();
    }
}
