//! One emulated VM's state: its capacity (CPU, hog, contention, slowdown,
//! link), its queues and the accounting of what it used, exact at any
//! instant.

use super::queue::{link_speed, Queue};
use super::spec::VmSpec;

/// One VM's capacity, queues and accounting (behind its lock).
pub(super) struct State {
    pub(super) up: bool,
    pub(super) cpu_mhz: f64,
    pub(super) hog_mhz: f64,
    /// Part of the cycles the hypervisor withholds (reported as ready).
    pub(super) contention: f64,
    /// Part of the speed lost without any counter showing it.
    pub(super) slowdown: f64,
    /// CPU ready accumulated before `ready_t`, ms over all vCPUs.
    ready_acc: f64,
    /// Busy time of all vCPUs at `ready_t`.
    ready_busy: f64,
    pub(super) net_kbps: f64,
    pub(super) servers: Vec<Queue>,
    pub(super) link: Option<Queue>,
    /// Bytes that did not go through a limited link.
    pub(super) direct_bytes: u64,
    hog_acc: f64,
    hog_t: f64,
    pub(super) requests: u64,
    pub(super) active: u64,
    pub(super) in_flight: u64,
}

impl State {
    pub(super) fn new(spec: &VmSpec, t: f64) -> State {
        let mut s = State {
            up: false,
            cpu_mhz: spec.cpu_mhz,
            hog_mhz: 0.0,
            contention: 0.0,
            slowdown: 0.0,
            ready_acc: 0.0,
            ready_busy: 0.0,
            net_kbps: spec.net_kbps,
            servers: vec![Queue::new(1.0, t); spec.vcpus as usize],
            link: link_speed(spec.net_kbps).map(|r| Queue::new(r, t)),
            direct_bytes: 0,
            hog_acc: 0.0,
            hog_t: t,
            requests: 0,
            active: 0,
            in_flight: 0,
        };
        let sp = s.vcpu_speed();
        s.servers.iter_mut().for_each(|q| q.speed = sp);
        s
    }

    fn vcpu_speed(&self) -> f64 {
        let c = self.cpu_mhz;
        (c - self.hog_mhz).max(0.01 * c) / self.servers.len() as f64
            * (1.0 - self.contention)
            * (1.0 - self.slowdown)
    }

    /// CPU the VM can use now (after contention and slowdown), MHz.
    pub(super) fn cpu_eff(&self) -> f64 {
        self.cpu_mhz * (1.0 - self.contention) * (1.0 - self.slowdown)
    }

    fn busy(&self, t: f64) -> f64 {
        self.servers.iter().map(|q| q.busy(t)).sum()
    }

    /// Cumulative CPU ready at `t`: while a vCPU has work, the part of the
    /// time the hypervisor withholds.
    pub(super) fn ready_ms(&self, t: f64) -> f64 {
        self.ready_acc + (self.busy(t) - self.ready_busy).max(0.0) * self.contention
    }

    fn hog_eff(&self) -> f64 {
        if self.up {
            self.hog_mhz.clamp(0.0, 0.99 * self.cpu_mhz)
        } else {
            0.0
        }
    }

    /// Settles the accounting at `t`, applies `f`, then the new speeds.
    pub(super) fn reconfigure(&mut self, t: f64, f: impl FnOnce(&mut State)) {
        self.hog_acc += self.hog_eff() * (t - self.hog_t).max(0.0);
        self.hog_t = t;
        self.ready_acc = self.ready_ms(t);
        self.ready_busy = self.busy(t);
        self.servers.iter_mut().for_each(|q| q.settle(t));
        if let Some(l) = &mut self.link {
            l.settle(t);
        }
        f(self);
        let sp = self.vcpu_speed();
        self.servers.iter_mut().for_each(|q| q.set_speed(t, sp));
        match (link_speed(self.net_kbps), &mut self.link) {
            (Some(r), Some(l)) => l.set_speed(t, r),
            (Some(r), None) => self.link = Some(Queue::new(r, t)),
            (None, Some(l)) => {
                // Unlimited from now on: the backlog is sent at once.
                self.direct_bytes += l.committed.round() as u64;
                self.link = None;
            }
            (None, None) => {}
        }
    }

    pub(super) fn cpu_mhz_ms(&self, t: f64) -> f64 {
        let work: f64 = self.servers.iter().map(|q| q.done(t)).sum();
        work + self.hog_acc + self.hog_eff() * (t - self.hog_t).max(0.0)
    }

    pub(super) fn bytes_sent(&self, t: f64) -> u64 {
        let link = self.link.as_ref().map_or(0.0, |l| l.done(t));
        self.direct_bytes + (link + 1e-6).floor() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_hog_and_floor() {
        let spec = VmSpec::new("a", "127.0.0.1", 2000.0, 2, 0.0);
        let mut st = State::new(&spec, 0.0);
        st.up = true;
        assert_eq!(st.vcpu_speed(), 1000.0);
        st.reconfigure(0.0, |s| s.hog_mhz = 1000.0);
        assert_eq!(st.vcpu_speed(), 500.0);
        assert!((st.cpu_mhz_ms(1000.0) - 1_000_000.0).abs() < 1e-6);
        st.reconfigure(1000.0, |s| s.hog_mhz = 5000.0);
        assert_eq!(st.vcpu_speed(), 10.0); // 1% of 2000 over 2 vCPUs
                                           // The hog takes at most 99%.
        assert!((st.cpu_mhz_ms(2000.0) - 1_000_000.0 - 1_980_000.0).abs() < 1e-6);
    }
}
