//! Samples into the policies: `QueryPerf` for every VM of an endpoint's
//! upstreams, in batches of 250 with the lease renewed between them, then
//! per upstream each new sample (by vSphere's timestamp, moved onto our
//! clock by the measured skew) paired with the requests of its own period
//! and given to the upstream's policy, which publishes what it makes of
//! them.

use std::collections::{BTreeSet, HashMap};

use super::runtime::Level;
use super::upstream::UpRun;
use super::Collector;
use crate::policy::Sample;
use crate::resources::{Res, COUNTERS, CPU, CPU_PERCENT, MEM, MEM_FALLBACK, R, READY};
use crate::vsphere::budget::VMS_PER_QUERY;
use crate::vsphere::xml::EntityMetric;
use crate::vsphere::Error;

/// Counter ids per resource from a catalog (memory falls back to
/// `mem.active.average`).
pub fn counter_ids(catalog: &HashMap<String, i32>) -> [Option<i32>; R] {
    std::array::from_fn(|j| {
        catalog
            .get(COUNTERS[j])
            .or_else(|| {
                if j == MEM {
                    catalog.get(MEM_FALLBACK)
                } else {
                    None
                }
            })
            .copied()
    })
}

/// A QueryPerf answer, by VM, with the counters it was asked for.
struct Answer<'a> {
    by_vm: HashMap<&'a str, &'a EntityMetric>,
    ids: [Option<i32>; R],
    ready: Option<i32>,
}

impl Answer<'_> {
    /// VM `vm`'s value of counter `id` in its sample stamped `ts`.
    fn value(&self, vm: Option<&String>, ts: u64, id: Option<i32>) -> Option<i64> {
        let m = self.by_vm.get(vm?.as_str())?;
        let pos = m.samples.iter().position(|s| s.0 == ts)?;
        m.value(id?, pos)
    }

    /// Each peer's usage in the sample stamped `ts` (memory in MB).
    fn usage(&self, run: &UpRun, ts: u64) -> Vec<Res> {
        run.vm
            .iter()
            .map(|v| {
                std::array::from_fn(|j| match self.value(v.as_ref(), ts, self.ids[j]) {
                    Some(x) if j == MEM => x as f64 / 1024.0, // KB -> MB
                    Some(x) => x as f64,
                    None => f64::NAN,
                })
            })
            .collect()
    }

    /// Each peer's CPU ready time in the sample stamped `ts`, ms.
    fn ready_ms(&self, run: &UpRun, ts: u64) -> Vec<f64> {
        run.vm
            .iter()
            .map(|v| {
                self.value(v.as_ref(), ts, self.ready)
                    .map_or(f64::NAN, |x| x as f64)
            })
            .collect()
    }
}

impl Collector<'_, '_> {
    /// Queries the newest samples of every VM of endpoint `k`'s upstreams
    /// (a whole window for an upstream that just got a new poller) and
    /// gives them to their policies.
    pub(super) fn query(&mut self, k: usize) -> Result<(), Error> {
        let mut vms: Vec<String> = Vec::new();
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut max_sample = 1u32;
        for ui in self.spec.upstreams_of(k) {
            let run = &self.ups[ui];
            for v in run.vm.iter().flatten() {
                if seen.insert(v.as_str()) {
                    vms.push(v.clone());
                }
            }
            if run.refill {
                max_sample = max_sample.max(self.spec.upstreams[ui].conf.tuning.window as u32);
            }
        }
        if vms.is_empty() {
            return Ok(());
        }
        let ep = &mut self.eps[k];
        if ep.refresh_s <= 0 {
            let r = ep.api()?.refresh_rate(&vms[0])?;
            ep.refresh_s = if r > 0 { r } else { 20 };
        }
        let ids = counter_ids(&ep.catalog);
        let ready = ep.catalog.get(READY).copied();
        let percent = ep.catalog.get(CPU_PERCENT).copied();
        let wanted: Vec<i32> = ids
            .iter()
            .flatten()
            .chain(&ready)
            .chain(&percent)
            .copied()
            .collect();
        let refresh_s = ep.refresh_s;
        // a call per batch of VMs, the lease renewed after each: a poll of
        // thousands of VMs must not look like a frozen holder, and one
        // that lost the lease meanwhile publishes nothing
        let mut metrics = Vec::with_capacity(vms.len());
        for batch in vms.chunks(VMS_PER_QUERY) {
            let api = self.eps[k].api()?;
            metrics.extend(api.query_perf(batch, &wanted, refresh_s, max_sample)?);
            if !self.renew_lease() {
                return Ok(());
            }
        }
        let skew = self.eps[k].skew_ms;
        if let (Some(mhz), Some(pct)) = (ids[CPU], percent) {
            self.watch_sizes(k, &metrics, (mhz, pct));
        }
        let answer = Answer {
            by_vm: metrics.iter().map(|m| (m.entity.as_str(), m)).collect(),
            ids,
            ready,
        };
        let ups: Vec<usize> = self.spec.upstreams_of(k).collect();
        for ui in ups {
            self.ingest(ui, &answer, skew);
            self.publish_ready(ui, &answer);
            self.ups[ui].refill = false;
        }
        Ok(())
    }

    /// Gives upstream `ui`'s policy the samples of `answer` it has not
    /// seen, and lets it publish.
    fn ingest(&mut self, ui: usize, answer: &Answer<'_>, skew_ms: i64) {
        let (u, run) = (&self.spec.upstreams[ui], &mut self.ups[ui]);
        let mut stamps: BTreeSet<(u64, u32)> = BTreeSet::new();
        for v in run.vm.iter().flatten() {
            if let Some(m) = answer.by_vm.get(v.as_str()) {
                stamps.extend(m.samples.iter().copied());
            }
        }
        let mut added = false;
        let mut newest_usage: Option<Vec<Res>> = None;
        let mut newest_sent: Option<Vec<f64>> = None;
        let now = self.rt.now_ms();
        for (ts, iv) in stamps {
            if ts <= run.newest_ts || iv == 0 {
                continue;
            }
            let end = (ts as i64).saturating_sub(skew_ms).max(0) as u64;
            let period = iv as u64 * 1000;
            // a sample from the future (a bad stamp, a clock stepped
            // back) is not taken: it would hold every later one back
            if end > now.saturating_add(period) {
                continue;
            }
            let counts = run.counts.period(end.saturating_sub(period), end);
            let usage = answer.usage(run, ts);
            run.newest_ts = run.newest_ts.max(ts);
            // a period with no value for any server (every value a gap:
            // NaN, negative, a series gone) says nothing; pushed, it
            // would push good samples out of the window
            if usage.iter().flatten().all(|x| x.is_nan()) {
                if !run.valueless {
                    run.valueless = true;
                    self.rt.log(
                        Level::Error,
                        &format!(
                            "dwepc: upstream \"{}\": a counter sample without a value for any server (each NaN, negative or missing); such samples are skipped and the last good window serves until ttl",
                            u.name
                        ),
                    );
                }
                continue;
            }
            if std::mem::take(&mut run.valueless) {
                self.rt.log(
                    Level::Notice,
                    &format!(
                        "dwepc: upstream \"{}\": counter samples have values again",
                        u.name
                    ),
                );
            }
            newest_usage = Some(usage.clone());
            // requests sent in the period, or (a policy that pairs only
            // completions) those that ended in it
            newest_sent = counts.sent.clone().or_else(|| counts.done.clone());
            added |= run.policy.push(Sample {
                end_ms: end,
                period_ms: period,
                usage,
                ready_ms: answer.ready_ms(run, ts),
                sent: counts.sent,
                done: counts.done,
                failed: counts.failed,
            });
        }
        if !added {
            return;
        }
        for (p, x) in newest_usage.iter().flatten().enumerate() {
            u.zone.set_usage(p, *x);
        }
        // the split the requests really had (observe mode's comparison),
        // of the newest period with any (an idle period keeps the last)
        if let Some(sent) = newest_sent.filter(|s| s.iter().sum::<f64>() > 0.0) {
            let all: f64 = sent.iter().sum();
            for (p, x) in sent.iter().enumerate() {
                u.zone.set_got_share(p, x / all);
            }
        }
        run.policy.update(u.zone, u.conf.ttl_ms, self.rt.now_ms());
    }

    /// Publishes each peer's `cpu.ready.summation` of its VM's newest
    /// sample (percent of the sample interval), for the status page.
    fn publish_ready(&self, ui: usize, answer: &Answer<'_>) {
        let u = &self.spec.upstreams[ui];
        for (p, vm) in self.ups[ui].vm.iter().enumerate() {
            let pct = (|| {
                let m = answer.by_vm.get(vm.as_ref()?.as_str())?;
                let (pos, &(_, iv)) = m.samples.iter().enumerate().max_by_key(|(_, s)| s.0)?;
                let ms = m.value(answer.ready?, pos)?;
                (iv > 0).then(|| ms as f64 / (iv as f64 * 1000.0) * 100.0)
            })();
            u.zone.set_cpu_ready(p, pct.unwrap_or(f64::NAN));
        }
    }
}
