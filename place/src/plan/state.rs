//! The search state (a placement with its loads, CPU and memory per host)
//! and its steps: what moving one VM, or swapping two, changes, and
//! whether it keeps the constraints. Shared by the local search, the exact
//! search, the greedy cut to a budget and the migration order.

use super::constraints::{room, used};
use super::model::{balanced, evaluate, score_of, vm_load, Problem, Score};

/// The search state: a placement with its loads, CPU and memory per host.
#[derive(Clone)]
pub(super) struct State<'a> {
    pub(super) p: &'a Problem,
    pub(super) host: Vec<usize>,
    load: Vec<f64>,
    cpu: Vec<f64>,
    mem: Vec<f64>,
    /// CPU and memory a host may hold: its limit, or what it held at the
    /// start if more.
    cap_cpu: Vec<f64>,
    cap_mem: Vec<f64>,
    /// Per VM, its anti-affinity groups.
    groups: Vec<Vec<usize>>,
    pub(super) moves: usize,
    /// Swaps are tried (a swap between two full hosts cannot be carried
    /// out one migration at a time).
    pub(super) swaps: bool,
}

/// A candidate step: move `v` to `to`, or swap `v` and `w`.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step {
    Move { v: usize, to: usize },
    Swap { v: usize, w: usize },
}

/// What a step changes: the two hosts it touches, their new loads, and
/// the change in the number of migrations.
struct Change {
    a: usize,
    b: usize,
    load_a: f64,
    load_b: f64,
    moves: isize,
}

impl<'a> State<'a> {
    pub(super) fn new(p: &'a Problem, host: Vec<usize>) -> State<'a> {
        let load = evaluate(p, &host).load;
        let (cpu, mem) = used(p, &host);
        let (cap_cpu, cap_mem) = room(p);
        let mut groups = vec![Vec::new(); p.vms.len()];
        for (gi, g) in p.apart.iter().enumerate() {
            for &v in g {
                groups[v].push(gi);
            }
        }
        State {
            moves: p.migrations(&host),
            p,
            host,
            load,
            cpu,
            mem,
            cap_cpu,
            cap_mem,
            groups,
            swaps: true,
        }
    }

    /// Host `h`'s load.
    pub(super) fn load(&self, h: usize) -> f64 {
        self.load[h]
    }

    /// The CPU and memory host `h` can still take.
    pub(super) fn room(&self, h: usize) -> (f64, f64) {
        (self.cap_cpu[h] - self.cpu[h], self.cap_mem[h] - self.mem[h])
    }

    pub(super) fn score(&self) -> Score {
        score_of(self.p, &self.load)
    }

    /// The three largest loads of balanced hosts, as (load, host).
    pub(super) fn top3(&self) -> [(f64, usize); 3] {
        let mut t = [(f64::NEG_INFINITY, usize::MAX); 3];
        for h in balanced(self.p) {
            let l = self.load[h];
            if l > t[0].0 {
                t = [(l, h), t[0], t[1]];
            } else if l > t[1].0 {
                t = [t[0], (l, h), t[1]];
            } else if l > t[2].0 {
                t[2] = (l, h);
            }
        }
        t
    }

    /// Whether `v` may run on `to` alongside the VMs there, `gone` (if
    /// any) leaving `to` at the same time.
    fn apart_ok(&self, v: usize, to: usize, gone: Option<usize>) -> bool {
        self.groups[v].iter().all(|&g| {
            self.p.apart[g]
                .iter()
                .all(|&u| u == v || Some(u) == gone || self.host[u] != to)
        })
    }

    /// Whether host `h` cannot take VM `v`, `gone` (if any) leaving it at
    /// the same time: over its CPU or memory, or an anti-affinity partner
    /// of `v` there.
    fn refuses(&self, h: usize, v: usize, gone: Option<usize>) -> bool {
        let (x, p) = (&self.p.vms[v], self.p);
        let (gone_cpu, gone_mem) = gone.map_or((0.0, 0.0), |g| (p.vms[g].cpu, p.vms[g].mem));
        self.cpu[h] - gone_cpu + x.cpu > self.cap_cpu[h] + 1e-9
            || self.mem[h] - gone_mem + x.mem > self.cap_mem[h] + 1e-9
            || !self.apart_ok(v, h, gone)
    }

    /// Whether either host is excluded (it gives and takes no VM).
    fn excluded(&self, a: usize, b: usize) -> bool {
        self.p.hosts[a].excluded || self.p.hosts[b].excluded
    }

    fn moved_delta(&self, v: usize, to: usize) -> isize {
        let home = self.p.vms[v].host;
        let was = (self.host[v] != home) as isize;
        let will = (to != home) as isize;
        will - was
    }

    fn move_change(&self, v: usize, to: usize) -> Option<Change> {
        let (p, from) = (self.p, self.host[v]);
        if to == from || self.excluded(from, to) || self.refuses(to, v, None) {
            return None;
        }
        Some(Change {
            a: from,
            b: to,
            load_a: self.load[from] - vm_load(p, v, from),
            load_b: self.load[to] + vm_load(p, v, to),
            moves: self.moved_delta(v, to),
        })
    }

    fn swap_change(&self, v: usize, w: usize) -> Option<Change> {
        let (p, hv, hw) = (self.p, self.host[v], self.host[w]);
        if hv == hw
            || self.excluded(hv, hw)
            || self.refuses(hw, v, Some(w))
            || self.refuses(hv, w, Some(v))
        {
            return None;
        }
        Some(Change {
            a: hv,
            b: hw,
            load_a: self.load[hv] - vm_load(p, v, hv) + vm_load(p, w, hv),
            load_b: self.load[hw] - vm_load(p, w, hw) + vm_load(p, v, hw),
            moves: self.moved_delta(v, hw) + self.moved_delta(w, hv),
        })
    }

    /// The score after `step` and its change in migrations, or None if it
    /// breaks a constraint. `top` is [`State::top3`] and `base` the score
    /// now.
    pub(super) fn try_step(
        &self,
        step: Step,
        top: &[(f64, usize); 3],
        base: &Score,
    ) -> Option<(Score, isize)> {
        let c = match step {
            Step::Move { v, to } => self.move_change(v, to)?,
            Step::Swap { v, w } => self.swap_change(v, w)?,
        };
        if let Some(m) = self.p.max_moves {
            if self.moves as isize + c.moves > m as isize {
                return None;
            }
        }
        let rest = top
            .iter()
            .find(|(_, h)| *h != c.a && *h != c.b)
            .map_or(0.0, |t| t.0.max(0.0));
        let max = rest.max(c.load_a).max(c.load_b);
        let (oa, ob) = (self.load[c.a], self.load[c.b]);
        let sq = base.sq - oa * oa - ob * ob + c.load_a * c.load_a + c.load_b * c.load_b;
        Some((Score { max, sq }, c.moves))
    }

    /// `step`, with a fresh score, if it keeps the constraints.
    pub(super) fn try_now(&self, step: Step) -> Option<(Score, isize)> {
        self.try_step(step, &self.top3(), &self.score())
    }

    /// Puts VM `v` on host `to`.
    fn put(&mut self, v: usize, to: usize) {
        let p = self.p;
        let from = self.host[v];
        self.moves = (self.moves as isize + self.moved_delta(v, to)) as usize;
        self.load[from] -= vm_load(p, v, from);
        self.load[to] += vm_load(p, v, to);
        self.cpu[from] -= p.vms[v].cpu;
        self.cpu[to] += p.vms[v].cpu;
        self.mem[from] -= p.vms[v].mem;
        self.mem[to] += p.vms[v].mem;
        self.host[v] = to;
    }

    pub(super) fn apply(&mut self, step: Step) {
        match step {
            Step::Move { v, to } => self.put(v, to),
            Step::Swap { v, w } => {
                let (hv, hw) = (self.host[v], self.host[w]);
                self.put(v, hw);
                self.put(w, hv);
            }
        }
    }
}
