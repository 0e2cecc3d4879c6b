//! Opening a session with an endpoint: a login, or the session a polling
//! worker that died or froze left in the lease zone's record (rather than
//! a second one); then the counter catalog and the VM view, and the clock
//! skew, read again every 10 minutes (which also keeps the session alive).

use super::ingest::counter_ids;
use super::runtime::Level;
use super::Collector;
use crate::resources::{COUNTERS, CPU_PERCENT, READY};
use crate::vsphere::Error;

/// How often the server's clock is read again.
const SKEW_EVERY_MS: u64 = 600_000;

impl Collector<'_, '_> {
    /// Makes sure endpoint `k` has a logged-in session and a fresh clock
    /// skew.
    pub(super) fn open_session(&mut self, k: usize, now: u64) -> Result<(), Error> {
        if self.eps[k].client.is_none() {
            self.eps[k].client = Some(self.rt.open(&self.spec.endpoints[k].source)?);
        }
        if !self.eps[k].api()?.logged_in() {
            self.log_in(k)?;
        }
        let ep = &mut self.eps[k];
        if ep
            .skew_at
            .is_none_or(|t| now.saturating_sub(t) > SKEW_EVERY_MS)
        {
            let t0 = self.rt.now_ms();
            let server = ep.api()?.current_time()?;
            let t1 = self.rt.now_ms();
            ep.skew_ms = server as i64 - ((t0 + t1) / 2) as i64;
            ep.skew_at = Some(now);
        }
        Ok(())
    }

    /// Logs endpoint `k`'s session in (or takes over the one the record
    /// hands over, once, just after becoming the polling worker), then
    /// reads what a session needs before its first query.
    fn log_in(&mut self, k: usize) -> Result<(), Error> {
        let name = &self.spec.endpoints[k].name;
        let ep = &mut self.eps[k];
        ep.view = None;
        let may_reuse = std::mem::take(&mut ep.may_reuse);
        let reuse = ep.record.filter(|_| may_reuse).and_then(|r| r.session());
        let adopted = reuse.is_some();
        match reuse {
            // checked by the next call that needs a session
            Some(cookie) => ep.api()?.adopt(&cookie)?,
            None => {
                ep.api()?.connect()?;
                ep.auth_streak = 0;
                ep.auth_retry_at = 0;
                if let Some(r) = ep.record {
                    r.login_ok();
                    r.set_session(ep.api()?.session().as_deref());
                }
            }
        }
        ep.catalog = ep
            .api()?
            .perf_counters()?
            .into_iter()
            .map(|(id, n)| (n, id))
            .collect();
        if adopted {
            if let Some(r) = ep.record {
                r.session_reused();
            }
            self.rt.log(
                Level::Notice,
                &format!(
                    "dwepc: vSphere \"{name}\": reusing the session of the previous polling worker"
                ),
            );
        }
        ep.view = Some(ep.api()?.create_vm_view()?);
        ep.inventory_at = None;
        ep.skew_at = None;
        ep.refresh_s = 0;
        self.log_missing_counters(k);
        Ok(())
    }

    /// Says once which counters the endpoint's catalog lacks and what
    /// that costs: a resource left out, CPU ready not counted, a resize
    /// seen late.
    fn log_missing_counters(&mut self, k: usize) {
        let (kind, name) = (self.spec.endpoints[k].kind(), &self.spec.endpoints[k].name);
        let ep = &mut self.eps[k];
        let ids = counter_ids(&ep.catalog);
        let missing: Vec<&str> = (0..COUNTERS.len())
            .filter(|&j| ids[j].is_none())
            .map(|j| COUNTERS[j])
            .collect();
        // read beside the resources: CPU contention, and a resize
        let extras = [
            (READY, "CPU ready is not counted"),
            (
                CPU_PERCENT,
                "a resized VM is seen only at the next inventory read",
            ),
        ];
        let extras_missing: Vec<(&str, &str)> = extras
            .into_iter()
            .filter(|(c, _)| !ep.catalog.contains_key(*c))
            .collect();
        if (!missing.is_empty() || !extras_missing.is_empty()) && !ep.missing_logged {
            let mut what = Vec::new();
            if !missing.is_empty() {
                what.push(format!(
                    "has no counter {}; those resources are left out",
                    missing.join(", ")
                ));
            }
            for (c, effect) in extras_missing {
                what.push(format!("has no counter {c}: {effect}"));
            }
            self.rt.log(
                Level::Error,
                &format!("dwepc: {kind} \"{name}\" {}", what.join("; ")),
            );
            ep.missing_logged = true;
        }
    }
}
