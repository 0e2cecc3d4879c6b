//! The order a plan's migrations can be carried out in, one at a time,
//! each keeping every constraint on its own.

use super::model::{Placement, Problem, Score};
use super::state::{State, Step};

/// One migration of a plan, in the order it can be carried out.
#[derive(Clone, Debug, PartialEq)]
pub struct Move {
    pub vm: usize,
    pub from: usize,
    pub to: usize,
    /// The largest host load once this and the moves before it are done.
    pub peak_after: f64,
}

/// The migrations from the current placement to `plan`, one at a time
/// such that each keeps every host within CPU and memory and the
/// anti-affinity groups apart on its own (each step chosen to lower the
/// peak most); the moves that cannot be done one at a time (a swap
/// between two full hosts) are returned apart, in plan order.
pub fn ordered_moves(p: &Problem, plan: &Placement) -> (Vec<Move>, Vec<usize>) {
    let free = p.unbounded();
    let st = State::new(&free, p.homes());
    let left: Vec<usize> = (0..p.vms.len())
        .filter(|&v| plan.host[v] != p.vms[v].host)
        .collect();
    // depth first, the step that lowers the peak most first, backtracking
    // when stuck, within a bounded number of steps tried
    let mut order = Orderer {
        plan,
        path: Vec::new(),
        best: Vec::new(),
        budget: 20_000,
    };
    order.extend(st, &left);
    let done: Vec<usize> = order.best.iter().map(|m| m.vm).collect();
    let stuck = left.into_iter().filter(|v| !done.contains(v)).collect();
    (order.best, stuck)
}

/// The depth-first search for an order of the plan's moves.
struct Orderer<'p> {
    plan: &'p Placement,
    /// The moves ordered so far on the branch being tried.
    path: Vec<Move>,
    /// The longest order found.
    best: Vec<Move>,
    /// Steps that may still be tried.
    budget: usize,
}

impl Orderer<'_> {
    /// Extends the path from `st` with the moves of `left`; keeps in
    /// `best` the longest order found. Returns true once every move is
    /// ordered.
    fn extend(&mut self, st: State<'_>, left: &[usize]) -> bool {
        if self.path.len() > self.best.len() {
            self.best = self.path.clone();
        }
        if left.is_empty() {
            return true;
        }
        for i in self.candidates(&st, left) {
            if self.budget == 0 {
                return false;
            }
            self.budget -= 1;
            let v = left[i];
            let (from, to) = (st.host[v], self.plan.host[v]);
            let mut next = st.clone();
            next.apply(Step::Move { v, to });
            self.path.push(Move {
                vm: v,
                from,
                to,
                peak_after: next.score().max,
            });
            let rest: Vec<usize> = left.iter().copied().filter(|&u| u != v).collect();
            if self.extend(next, &rest) {
                return true;
            }
            self.path.pop();
        }
        false
    }

    /// The indices in `left` of the moves `st` can make now, the one that
    /// leaves the lowest peak (then sum of squares) first.
    fn candidates(&self, st: &State<'_>, left: &[usize]) -> Vec<usize> {
        let base = st.score();
        let top = st.top3();
        let mut steps: Vec<(usize, Score)> = left
            .iter()
            .enumerate()
            .filter_map(|(i, &v)| {
                let step = Step::Move {
                    v,
                    to: self.plan.host[v],
                };
                st.try_step(step, &top, &base).map(|(s, _)| (i, s))
            })
            .collect();
        steps.sort_by(|a, b| a.1.max.total_cmp(&b.1.max).then(a.1.sq.total_cmp(&b.1.sq)));
        steps.into_iter().map(|(i, _)| i).collect()
    }
}
