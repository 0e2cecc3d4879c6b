//! The poller lease and the hand-over of sessions: only the lease holder
//! talks to vSphere. A holder that loses the lease leaves the session it
//! published in the endpoint's record to the worker that took over, and
//! logs out any other (an abandoned session counts against vCenter's
//! sessions per user until it expires); a stopping holder withdraws its
//! session first, then logs it out and gives the lease up.

use super::runtime::Level;
use super::Collector;

impl Collector<'_, '_> {
    /// Renews the lease within a poll (between its calls, which may
    /// outlast the takeover time together); false if another worker took
    /// it over meanwhile: the poll then publishes nothing (one writer
    /// publishes) and leaves the outcome to the new holder.
    pub(super) fn renew_lease(&self) -> bool {
        self.spec.lease.beat(self.spec.pid, self.rt.now_ms())
    }

    /// Takes or renews the lease at `now_ms`, and acts on a change: a lost
    /// lease hands the sessions over, a new one polls every endpoint at
    /// once (reading whole windows, and taking over a session the
    /// previous holder left). True while this collector holds it.
    pub(super) fn hold_lease(&mut self, now_ms: u64) -> bool {
        let was = self.holder;
        let rt = self.rt;
        self.holder = self
            .spec
            .lease
            .acquire(self.spec.pid, now_ms, self.lease_timeout_ms, |p| {
                rt.alive(p)
            });
        match (was, self.holder) {
            (true, false) => {
                self.rt.log(
                    Level::Notice,
                    "dwepc: another worker took over polling vSphere",
                );
                // a session still in the record is the new holder's to
                // reuse; any other is logged out
                for k in 0..self.eps.len() {
                    let handed_over = self.session_is_published(k);
                    self.drop_session(k, !handed_over);
                }
            }
            (false, true) => {
                for u in &mut self.ups {
                    u.refill = true;
                    u.logged = None;
                }
                for e in &mut self.eps {
                    e.next_poll = 0;
                    e.may_reuse = true;
                }
            }
            _ => {}
        }
        self.holder
    }

    /// Logs out of every session and gives the lease up.
    pub fn shutdown(&mut self) {
        // no worker may take over a session that is being logged out
        for k in 0..self.eps.len() {
            if self.session_is_published(k) {
                if let Some(r) = self.eps[k].record {
                    r.set_session(None);
                }
            }
        }
        if self.holder {
            self.spec.lease.release(self.spec.pid);
            self.holder = false;
        }
        for k in 0..self.eps.len() {
            self.drop_session(k, true);
        }
    }

    /// Whether endpoint `k`'s session is the one its record hands over to
    /// the next polling worker.
    pub(super) fn session_is_published(&self, k: usize) -> bool {
        let ep = &self.eps[k];
        match (ep.record, ep.client.as_ref().and_then(|c| c.session())) {
            (Some(r), Some(ours)) => r.session().as_deref() == Some(ours.as_str()),
            _ => false,
        }
    }

    /// Forgets endpoint `k`'s session (logging it out first if `logout`),
    /// keeping the count of its calls.
    pub(super) fn drop_session(&mut self, k: usize, logout: bool) {
        let ep = &mut self.eps[k];
        if let Some(mut c) = ep.client.take() {
            if logout {
                c.logout();
            }
            for (m, n) in c.calls() {
                *ep.calls.entry(m).or_default() += n;
            }
            let t = c.traffic();
            ep.traffic.bytes += t.bytes;
            ep.traffic.answer_us += t.answer_us;
        }
        ep.view = None;
        ep.refresh_s = 0;
    }
}
