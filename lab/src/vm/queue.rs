//! The queue model: a work-conserving FIFO server whose speed may change,
//! for a vCPU (MHz·ms of work) or a network link (bytes).

/// A work-conserving FIFO server of `speed` units per ms. `done(t)` is the
/// work completed by `t`; between `anchor_t` and `busy_until()` it is busy
/// without interruption.
#[derive(Clone, Debug)]
pub(super) struct Queue {
    pub(super) speed: f64,
    pub(super) committed: f64,
    anchor_t: f64,
    anchor_done: f64,
    /// Time with work before `anchor_t`, ms.
    busy_ms: f64,
}

impl Queue {
    pub(super) fn new(speed: f64, t: f64) -> Queue {
        Queue {
            speed,
            committed: 0.0,
            anchor_t: t,
            anchor_done: 0.0,
            busy_ms: 0.0,
        }
    }

    /// Total time with work up to `t`, ms.
    pub(super) fn busy(&self, t: f64) -> f64 {
        self.busy_ms + (t.min(self.busy_until()) - self.anchor_t).max(0.0)
    }

    pub(super) fn done(&self, t: f64) -> f64 {
        (self.anchor_done + (t - self.anchor_t).max(0.0) * self.speed).min(self.committed)
    }

    pub(super) fn busy_until(&self) -> f64 {
        self.anchor_t + (self.committed - self.anchor_done) / self.speed
    }

    pub(super) fn settle(&mut self, t: f64) {
        self.busy_ms = self.busy(t);
        self.anchor_done = self.done(t);
        self.anchor_t = t;
    }

    /// Queues `work` at `t`; its completion mark (for [`Queue::finish_of`]).
    pub(super) fn push(&mut self, t: f64, work: f64) -> f64 {
        self.settle(t);
        self.committed += work;
        self.committed
    }

    /// When the work up to `target` is done (at the current speed).
    pub(super) fn finish_of(&self, target: f64) -> f64 {
        self.anchor_t + (target - self.anchor_done).max(0.0) / self.speed
    }

    pub(super) fn set_speed(&mut self, t: f64, speed: f64) {
        self.settle(t);
        self.speed = speed;
    }

    /// Drops the backlog (the VM died).
    pub(super) fn truncate(&mut self, t: f64) {
        self.settle(t);
        self.committed = self.anchor_done;
    }
}

/// Bytes per ms of a link of `kbps` KB/s; `None` = unlimited.
pub(super) fn link_speed(kbps: f64) -> Option<f64> {
    (kbps > 0.0).then(|| kbps * 1024.0 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_fifo_and_accounting() {
        let mut q = Queue::new(2.0, 0.0); // 2 units/ms
        let a = q.push(0.0, 10.0);
        let b = q.push(1.0, 10.0);
        assert_eq!(q.finish_of(a), 5.0);
        assert_eq!(q.finish_of(b), 10.0);
        assert_eq!(q.done(4.0), 8.0);
        assert_eq!(q.done(100.0), 20.0);
        // Idle from 10 to 20: new work starts at 20.
        let c = q.push(20.0, 4.0);
        assert_eq!(q.finish_of(c), 22.0);
        assert_eq!(q.done(21.0), 22.0);
        // Speed halves at 21: the rest (2 units) takes 2 ms.
        q.set_speed(21.0, 1.0);
        assert_eq!(q.finish_of(c), 23.0);
        assert_eq!(q.done(22.0), 23.0);
        assert_eq!(q.done(30.0), 24.0);
        // Truncation drops the backlog.
        q.push(30.0, 100.0);
        q.truncate(40.0);
        assert_eq!(q.done(1000.0), 34.0);
        assert_eq!(q.busy_until(), 40.0);
    }
}
