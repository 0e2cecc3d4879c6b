//! The local search: from a start placement, the best improving move or
//! swap at each step, then every migration the peak does not need taken
//! back; [`local_search`] runs it from the current placement and, with no
//! budget, from the greedy placements too. Fast, and never proven: the
//! advisor's plan ([`super::plan()`]) starts from it.

use super::constraints::feasible;
use super::greedy::{greedy_feasible, greedy_lpt};
use super::model::{balanced, evaluate, lower_bound, score_of, vm_load, Placement, Problem, Score};
use super::state::{State, Step};

/// The best step found so far: its score, change in migrations, step.
type Best = Option<(Score, isize, Step)>;

impl State<'_> {
    /// Keeps `step` in `best` if it improves on `base` and on `best`
    /// (at an equal score: if it uses fewer migrations).
    fn consider(&self, step: Step, top: &[(f64, usize); 3], base: &Score, best: &mut Best) {
        let Some((s, dm)) = self.try_step(step, top, base) else {
            return;
        };
        if !s.better_than(base) {
            return;
        }
        let wins = match best {
            None => true,
            Some((bs, bdm, _)) => s.better_than(bs) || (!bs.better_than(&s) && dm < *bdm),
        };
        if wins {
            *best = Some((s, dm, step));
        }
    }

    /// The best improving step, preferring (at an equal score) the one
    /// that uses fewer migrations.
    fn best_step(&self) -> Option<Step> {
        let p = self.p;
        let base = self.score();
        let top = self.top3();
        let mut best: Best = None;
        let hosts: Vec<usize> = balanced(p).collect();
        for v in 0..p.vms.len() {
            for &to in &hosts {
                self.consider(Step::Move { v, to }, &top, &base, &mut best);
            }
        }
        // swaps that touch one of the busiest hosts (only they can lower
        // the max; the sum of squares alone rarely needs a swap)
        let busy: Vec<usize> = top
            .iter()
            .map(|t| t.1)
            .filter(|&h| h != usize::MAX)
            .collect();
        for v in (0..p.vms.len()).filter(|&v| self.swaps && busy.contains(&self.host[v])) {
            for w in 0..p.vms.len() {
                if self.host[w] != self.host[v] {
                    self.consider(Step::Swap { v, w }, &top, &base, &mut best);
                }
            }
        }
        best.map(|b| b.2)
    }

    /// Improves until no step helps, the budget is spent, or the largest
    /// load is at `bound` (no placement does better), then takes back
    /// every migration the largest load does not need.
    fn run(&mut self, max_steps: usize, bound: f64) {
        for _ in 0..max_steps {
            if self.score().max <= bound * (1.0 + 1e-9) {
                break;
            }
            match self.best_step() {
                Some(s) => self.apply(s),
                None => break,
            }
        }
        self.take_back();
    }

    /// Sends moved VMs home (smallest first) while the largest load stays
    /// where it is: a migration that only evened out quieter hosts is not
    /// worth a vMotion.
    fn take_back(&mut self) {
        let p = self.p;
        let max = self.score().max;
        let mut moved: Vec<usize> = (0..p.vms.len())
            .filter(|&v| self.host[v] != p.vms[v].host)
            .collect();
        moved.sort_by(|&a, &b| {
            vm_load(p, a, self.host[a])
                .total_cmp(&vm_load(p, b, self.host[b]))
                .then(a.cmp(&b))
        });
        for v in moved {
            let step = Step::Move {
                v,
                to: p.vms[v].host,
            };
            if let Some((s, _)) = self.try_now(step) {
                if s.max <= max * (1.0 + 1e-12) {
                    self.apply(step);
                }
            }
        }
    }
}

/// The best placement the local search finds within the constraints, with
/// or without swaps (a plan of single moves can always be carried out in
/// the order its search found it, one migration at a time). Never worse
/// than the current placement; with no budget, never worse than greedy
/// ([`greedy_feasible`], or [`greedy_lpt`] where it keeps the
/// constraints) either.
pub fn local_search(p: &Problem, swaps: bool) -> Placement {
    let (steps, bound) = (20 * p.vms.len() + 100, lower_bound(p));
    let search = |start: Vec<usize>| {
        let mut st = State::new(p, start);
        st.swaps = swaps;
        st.run(steps, bound);
        evaluate(p, &st.host)
    };
    let mut best = search(p.homes());
    if p.max_moves.is_none() {
        for g in [greedy_feasible(p), greedy_lpt(p)] {
            if feasible(p, &g.host).is_err() {
                continue;
            }
            let cand = search(g.host);
            let (sb, sc) = (score_of(p, &best.load), score_of(p, &cand.load));
            // the better objective; at a tie, fewer migrations
            if sc.better_than(&sb) || (!sb.better_than(&sc) && cand.moves(p) < best.moves(p)) {
                best = cand;
            }
        }
    }
    best
}
