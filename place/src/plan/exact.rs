//! The exact search within a budget of migrations: the lowest peak that
//! any sequence of at most `budget` single migrations reaches, each
//! migration keeping CPU, memory, anti-affinity and excluded hosts on its
//! own (so the order found is the order run, and a swap between two full
//! hosts goes through a third host, its extra migration counted), and at
//! that peak the fewest migrations.
//!
//! How: from a start sequence (the local search's, cut to what runs one at
//! a time), the question "can at most k migrations bring every host below
//! T?" is asked with T just under the best peak found; each yes lowers T,
//! until a no (the peak is proven) or the time limit. Then the same
//! question at the best peak with 0, 1, … fewer migrations. Each question
//! is a depth-first search whose children are the feasible migrations,
//! those that leave the lowest score first, cut by three rules that lose
//! no answer:
//! - **what the hot hosts need**: a host at or above T needs at least as
//!   many departures as the fewest of its VMs whose loads bring it below
//!   T, counting only VMs that could land below T somewhere (on a host
//!   lightened by every other migration left); needs above the migrations
//!   left end the branch;
//! - **a departure from a cold host only makes room**: it is tried only
//!   where the host could not take what may still arrive (CPU, memory,
//!   load against T) or the VM is in an anti-affinity group, and the host
//!   is then owed an arrival: a sequence that leaves it unanswered does as
//!   well without that departure;
//! - **a placement already searched** with as many migrations left (and
//!   the same hosts owed) is not searched again.
//!
//! Why no answer is lost: take a *shortest* sequence that answers yes. A
//! departure in it from a cold host that could take whatever arrives after
//! it (and of a VM in no anti-affinity group) could be left out, and so
//! could one from a cold host nothing arrives at later: the host ends no
//! higher than it was, below T, and every other migration stays feasible
//! (only targets are checked). A shorter yes would exist; so a shortest
//! one passes both rules, and the needs only count what any yes must do.
//! On its path no (placement, owed) pair repeats, so the table cuts none
//! of it. (Only rules that depend on the placement, the hosts owed and the
//! migrations left may be added without revisiting this.)

use super::model::{balanced, evaluate, lower_bound, Problem, Score};
use super::state::{State, Step};
use std::collections::HashMap;
use std::time::Instant;

/// Migrations as (VM, target host), in the order they run.
pub(super) type Steps = Vec<(usize, usize)>;

/// Two peaks closer than this (relative) are equal.
pub(super) const TOL: f64 = 1e-9;

/// Most placements one question remembers (about 100 bytes each: this
/// bounds its memory to some 25 MB).
const SEEN_CAP: usize = 1 << 18;

/// The best sequence found and what is proven of it.
pub(super) struct Exact {
    pub(super) steps: Steps,
    /// No sequence within the budget has a lower peak.
    pub(super) peak_proven: bool,
    /// Nor the same peak with fewer migrations.
    pub(super) proven: bool,
}

/// Host index per VM after `steps`.
pub(super) fn after(p: &Problem, steps: &Steps) -> Vec<usize> {
    let mut host = p.homes();
    for &(v, to) in steps {
        host[v] = to;
    }
    host
}

/// The peak after `steps`.
pub(super) fn peak_after(p: &Problem, steps: &Steps) -> f64 {
    evaluate(p, &after(p, steps)).max_load(p)
}

/// The best sequence of at most `budget` migrations, starting from
/// `start` (feasible one step at a time, within the budget), searched
/// until `deadline`: the lowest peak, then the fewest migrations.
pub(super) fn best_within(p: &Problem, budget: usize, start: Steps, deadline: Instant) -> Exact {
    let free = p.unbounded();
    let f = Facts::new(&free, budget, deadline);
    let lb = lower_bound(p);
    let mut peak = peak_after(p, &start);
    let mut e = Exact {
        steps: start,
        peak_proven: false,
        proven: false,
    };
    while peak > lb * (1.0 + TOL) {
        match f.ask(&Vec::new(), peak * (1.0 - TOL), budget) {
            Reach::Yes(s) => {
                peak = peak_after(p, &s);
                e.steps = s;
            }
            Reach::No => break,
            Reach::OutOfTime => return e,
        }
    }
    e.peak_proven = true;
    for m in 0..e.steps.len() {
        match f.ask(&Vec::new(), peak * (1.0 + TOL), m) {
            Reach::Yes(s) => {
                e.steps = s;
                break;
            }
            Reach::No => {}
            Reach::OutOfTime => return e,
        }
    }
    e.proven = true;
    e
}

/// `start` followed by at most `extra` migrations that bring every host to
/// `peak` or below, if the search finds them by `deadline`: the way to
/// finish a plan whose last migrations cannot run one at a time (a swap
/// between full hosts then goes through a third host).
pub(super) fn finish(
    p: &Problem,
    start: Steps,
    peak: f64,
    extra: usize,
    deadline: Instant,
) -> Option<Steps> {
    let free = p.unbounded();
    let f = Facts::new(&free, extra, deadline);
    match f.ask(&start, peak * (1.0 + TOL), extra) {
        Reach::Yes(more) => Some(start.into_iter().chain(more).collect()),
        Reach::No | Reach::OutOfTime => None,
    }
}

/// A lower bound on the peak of any sequence of at most `budget`
/// migrations: the highest T (found by bisection) at which the hot hosts
/// need more departures than the budget, and never below the cluster's
/// [`lower_bound`].
pub(super) fn bound_within(p: &Problem, budget: usize) -> f64 {
    let free = p.unbounded();
    let st = State::new(&free, p.homes());
    let (mut lo, mut hi) = (lower_bound(p), st.score().max);
    if budget == 0 || hi <= lo {
        return hi.max(lo);
    }
    // no question is asked: the deadline is never read
    let f = Facts::new(&free, budget, Instant::now());
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if Question::new(&f, mid).need(&st, budget).total <= budget {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo
}

/// The answer to one question.
enum Reach {
    Yes(Steps),
    No,
    OutOfTime,
}

/// What every question of one problem shares.
struct Facts<'a> {
    p: &'a Problem,
    /// The hosts that give and take VMs.
    hosts: Vec<usize>,
    nh: usize,
    /// `w[v * nh + h]`: VM `v`'s load on host `h`.
    w: Vec<f64>,
    /// VMs on hosts that give and take.
    movable: Vec<usize>,
    /// VMs in an anti-affinity group.
    grouped: Vec<bool>,
    /// Per host, `arrive[h][k]`: the most load `k` arrivals can add.
    arrive: Vec<Vec<f64>>,
    /// The most CPU and memory `k` arrivals can take.
    cpu_arrive: Vec<f64>,
    mem_arrive: Vec<f64>,
    deadline: Instant,
}

/// Sums of the `k` largest of `xs`, for `k` = 0..=`n`.
fn largest_sums(mut xs: Vec<f64>, n: usize) -> Vec<f64> {
    xs.sort_by(|a, b| b.total_cmp(a));
    let mut out = vec![0.0; n + 1];
    for k in 1..=n {
        out[k] = out[k - 1] + xs.get(k - 1).copied().unwrap_or(0.0);
    }
    out
}

impl<'a> Facts<'a> {
    fn new(p: &'a Problem, budget: usize, deadline: Instant) -> Facts<'a> {
        let hosts: Vec<usize> = balanced(p).collect();
        let nh = p.hosts.len();
        let w = (0..p.vms.len())
            .flat_map(|v| (0..nh).map(move |h| super::model::vm_load(p, v, h)))
            .collect::<Vec<f64>>();
        let movable: Vec<usize> = (0..p.vms.len())
            .filter(|&v| !p.hosts[p.vms[v].host].excluded)
            .collect();
        let mut grouped = vec![false; p.vms.len()];
        for &v in p.apart.iter().flatten() {
            grouped[v] = true;
        }
        let arrive = (0..nh)
            .map(|h| largest_sums(movable.iter().map(|&v| w[v * nh + h]).collect(), budget))
            .collect();
        let cpu_arrive = largest_sums(movable.iter().map(|&v| p.vms[v].cpu).collect(), budget);
        let mem_arrive = largest_sums(movable.iter().map(|&v| p.vms[v].mem).collect(), budget);
        Facts {
            p,
            hosts,
            nh,
            w,
            movable,
            grouped,
            arrive,
            cpu_arrive,
            mem_arrive,
            deadline,
        }
    }

    fn w(&self, v: usize, h: usize) -> f64 {
        self.w[v * self.nh + h]
    }

    /// Whether, after `start`, at most `budget` migrations bring every
    /// host below `thr` (the answer: those migrations).
    fn ask(&self, start: &Steps, thr: f64, budget: usize) -> Reach {
        let mut st = State::new(self.p, self.p.homes());
        for &(v, to) in start {
            st.apply(Step::Move { v, to });
        }
        let mut q = Question::new(self, thr);
        if q.visit(&mut st, budget) {
            Reach::Yes(q.path)
        } else if q.out_of_time {
            Reach::OutOfTime
        } else {
            Reach::No
        }
    }
}

/// One question: can the migrations left bring every host below `thr`?
struct Question<'f, 'a> {
    f: &'f Facts<'a>,
    thr: f64,
    /// The migrations of the branch being searched.
    path: Steps,
    /// Cold hosts a VM left (to make room), owed an arrival.
    owed: Vec<usize>,
    /// Placements searched (moved VMs and their hosts, then the hosts
    /// owed), with the migrations that were left.
    seen: HashMap<Vec<u32>, usize>,
    out_of_time: bool,
}

/// What the hot hosts of a placement need, `r` migrations left.
struct Need {
    /// Per host: the departures it needs (0 if cold, r + 1 if it cannot
    /// get below the threshold).
    per_host: Vec<usize>,
    total: usize,
    /// Per hot host: its VMs that could land below the threshold
    /// elsewhere, as (VM, load), largest first, at most r.
    landable: Vec<Vec<(usize, f64)>>,
    /// The VMs on hot hosts.
    on_hot: Vec<usize>,
}

/// The fewest of `list`'s loads (largest first, at most `r`) that bring
/// `load` below `thr`, or `r + 1` if they cannot.
fn needed(load: f64, list: &[(usize, f64)], thr: f64, r: usize) -> usize {
    let mut rest = load;
    if rest < thr {
        return 0;
    }
    for (i, x) in list.iter().take(r).enumerate() {
        rest -= x.1;
        if rest < thr {
            return i + 1;
        }
    }
    r + 1
}

impl<'f, 'a> Question<'f, 'a> {
    fn new(f: &'f Facts<'a>, thr: f64) -> Question<'f, 'a> {
        Question {
            f,
            thr,
            path: Vec::new(),
            owed: Vec::new(),
            seen: HashMap::new(),
            out_of_time: false,
        }
    }

    /// Searches on from `st` with `r` migrations left; true once every
    /// host is below the threshold (`path` then holds the migrations).
    fn visit(&mut self, st: &mut State<'_>, r: usize) -> bool {
        if Instant::now() >= self.f.deadline {
            self.out_of_time = true;
            return false;
        }
        if self.f.hosts.iter().all(|&h| st.load(h) < self.thr) {
            return true;
        }
        if r == 0 {
            return false;
        }
        let need = self.need(st, r);
        if need.total.max(self.owed.len()) > r || !self.first_visit(st, r) {
            return false;
        }
        for (_, v, to) in self.children(st, r, &need) {
            let from = st.host[v];
            let owed = self.owed.clone();
            self.owed.retain(|&h| h != to);
            if self.cold(st, from) && !self.owed.contains(&from) {
                self.owed.push(from);
            }
            st.apply(Step::Move { v, to });
            self.path.push((v, to));
            if self.visit(st, r - 1) {
                return true;
            }
            self.path.pop();
            st.apply(Step::Move { v, to: from });
            self.owed = owed;
            if self.out_of_time {
                return false;
            }
        }
        false
    }

    /// Whether host `h` is below the threshold (a departure from it only
    /// makes room).
    fn cold(&self, st: &State<'_>, h: usize) -> bool {
        st.load(h) < self.thr
    }

    /// What the hot hosts of `st` need with `r` migrations left.
    fn need(&self, st: &State<'_>, r: usize) -> Need {
        let f = self.f;
        let mut on: Vec<Vec<(f64, usize)>> = vec![Vec::new(); f.nh];
        for &v in &f.movable {
            let h = st.host[v];
            on[h].push((f.w(v, h), v));
        }
        // the most load the other migrations left can take off each host
        let mut leave = vec![0.0; f.nh];
        for &h in &f.hosts {
            on[h].sort_by(|a, b| b.0.total_cmp(&a.0));
            leave[h] = on[h].iter().take(r.saturating_sub(1)).map(|x| x.0).sum();
        }
        let mut need = Need {
            per_host: vec![0; f.nh],
            total: 0,
            landable: vec![Vec::new(); f.nh],
            on_hot: Vec::new(),
        };
        for &h in &f.hosts {
            if self.cold(st, h) {
                continue;
            }
            need.on_hot.extend(on[h].iter().map(|x| x.1));
            let lands = |v: usize| {
                f.hosts
                    .iter()
                    .any(|&g| g != h && st.load(g) - leave[g] + f.w(v, g) < self.thr)
            };
            let list: Vec<(usize, f64)> = on[h]
                .iter()
                .filter(|x| lands(x.1))
                .take(r)
                .map(|x| (x.1, x.0))
                .collect();
            need.per_host[h] = needed(st.load(h), &list, self.thr, r);
            need.total += need.per_host[h];
            need.landable[h] = list;
        }
        need
    }

    /// Whether VM `v` leaving cold host `h` can make room for what may
    /// still arrive there in the `r - 1` migrations after it.
    fn makes_room(&self, st: &State<'_>, v: usize, h: usize, r: usize) -> bool {
        let (f, k) = (self.f, r - 1);
        let (cpu, mem) = st.room(h);
        f.grouped[v]
            || st.load(h) + f.arrive[h][k] >= self.thr
            || cpu + 1e-9 < f.cpu_arrive[k]
            || mem + 1e-9 < f.mem_arrive[k]
    }

    /// The migrations worth trying from `st` (`r` left): feasible, and
    /// leaving needs (and hosts owed) the migrations after them can meet;
    /// the lowest score they leave first.
    fn children(&self, st: &State<'_>, r: usize, need: &Need) -> Vec<(Score, usize, usize)> {
        let f = self.f;
        let (top, base) = (st.top3(), st.score());
        // with no migration to spare, only departures from hot hosts
        let vms = if need.total == r {
            &need.on_hot
        } else {
            &f.movable
        };
        let mut out = Vec::new();
        for &v in vms {
            let from = st.host[v];
            let cold = self.cold(st, from);
            if cold && !self.makes_room(st, v, from, r) {
                continue;
            }
            let need_from = if cold {
                0
            } else {
                self.need_without(st, need, v, r)
            };
            let owes = (cold && !self.owed.contains(&from)) as usize;
            for &to in f.hosts.iter().filter(|&&to| to != from) {
                // the target's need can only grow; it is at least 1 if v
                // takes it to the threshold
                let lands_hot = (st.load(to) + f.w(v, to) >= self.thr) as usize;
                let need_to = need.per_host[to].max(lands_hot);
                let total =
                    need.total - need.per_host[from] + need_from - need.per_host[to] + need_to;
                let owed = self.owed.len() - self.owed.contains(&to) as usize + owes;
                if total.max(owed) > r - 1 {
                    continue;
                }
                if let Some((s, _)) = st.try_step(Step::Move { v, to }, &top, &base) {
                    out.push((s, v, to));
                }
            }
        }
        out.sort_by(|a, b| a.0.max.total_cmp(&b.0.max).then(a.0.sq.total_cmp(&b.0.sq)));
        out
    }

    /// What hot host `st.host[v]` needs once `v` has left it, with the
    /// `r - 1` migrations left then.
    fn need_without(&self, st: &State<'_>, need: &Need, v: usize, r: usize) -> usize {
        let from = st.host[v];
        let rest: Vec<(usize, f64)> = need.landable[from]
            .iter()
            .copied()
            .filter(|x| x.0 != v)
            .collect();
        needed(st.load(from) - self.f.w(v, from), &rest, self.thr, r - 1)
    }

    /// Records `st` with `r` migrations left; false if it was searched
    /// already with as many.
    fn first_visit(&mut self, st: &State<'_>, r: usize) -> bool {
        let p = self.f.p;
        let mut key: Vec<u32> = self
            .f
            .movable
            .iter()
            .filter(|&&v| st.host[v] != p.vms[v].host)
            .flat_map(|&v| [v as u32, st.host[v] as u32])
            .collect();
        let mut owed = self.owed.clone();
        owed.sort_unstable();
        key.push(u32::MAX);
        key.extend(owed.iter().map(|&h| h as u32));
        match self.seen.get_mut(&key) {
            Some(left) if *left >= r => false,
            Some(left) => {
                *left = r;
                true
            }
            None => {
                if self.seen.len() < SEEN_CAP {
                    self.seen.insert(key, r);
                }
                true
            }
        }
    }
}
