//! The instance-wide lease zone (`dwepc_lease`): the poller lease, which
//! lets one worker of the nginx instance talk to vSphere, and one record
//! per vSphere endpoint that every worker (and the workers after a reload)
//! sees: calls, logins, errors by kind, the last success, the refused
//! logins that hold the next one back, and the polling worker's session
//! cookie for the worker that takes over.

use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::vsphere::lockout::login_wait_ms;
use crate::vsphere::{Error, ErrorKind};

/// Words of the lease itself.
const LEASE_HEAD: usize = 8;
/// vSphere endpoints with a record in the lease zone (more endpoints
/// share the last record's absence: they are polled, not recorded).
pub const MAX_ENDPOINT_RECORDS: usize = 16;
/// Words per endpoint record.
pub const ENDPOINT_WORDS: usize = 40;
/// Words of the instance-wide lease zone: the lease and one record per
/// vSphere endpoint.
pub const LEASE_WORDS: usize = LEASE_HEAD + MAX_ENDPOINT_RECORDS * ENDPOINT_WORDS;

const E_KEY: usize = 0;
const E_CALLS: usize = 1;
const E_LOGINS: usize = 2;
const E_LAST_OK: usize = 3;
const E_AUTH_FAILS: usize = 4;
const E_AUTH_RETRY_AT: usize = 5;
const E_AUTH_STREAK: usize = 6;
const E_REUSED: usize = 7;
const E_ERRORS: usize = 8; // ErrorKind::ALL.len() words
/// Body bytes of the answers, and the time spent waiting for them (µs).
const E_BYTES: usize = 18;
const E_ANSWER_US: usize = 19;
/// The minute (since the epoch) whose calls E_MINUTE_CALLS counts, and
/// the calls of the minute before it.
const E_MINUTE: usize = 20;
const E_MINUTE_CALLS: usize = 21;
const E_LAST_MINUTE_CALLS: usize = 22;
/// Which credentials the refusals in E_AUTH_STREAK/E_AUTH_RETRY_AT were
/// for (a hash of user and password; 0: none).
const E_AUTH_CREDS: usize = 23;
const E_SESSION_LEN: usize = 24;
const E_SESSION: usize = 25; // SESSION_WORDS words
const SESSION_WORDS: usize = ENDPOINT_WORDS - E_SESSION;
/// The longest session cookie the record keeps (vCenter's and vcsim's
/// are about 60 bytes); a longer one is not shared, only not reused.
pub const MAX_SESSION_COOKIE: usize = SESSION_WORDS * 8;
const _: () = assert!(E_ERRORS + ErrorKind::ALL.len() <= E_BYTES);

/// What every worker knows of one vSphere endpoint, kept in the lease zone
/// (so a new polling worker, or the workers after a reload, see it):
/// calls, logins, errors by class, the last success, the login refusals
/// that hold further logins back, and the polling worker's session cookie,
/// which a worker that takes over after the holder died or froze reuses
/// instead of leaving that session open on the vCenter and opening
/// another (vCenter caps sessions per user).
#[derive(Clone, Copy)]
pub struct EndpointRecord<'a> {
    mem: &'a [AtomicU64],
}

/// A snapshot of an [`EndpointRecord`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointStats {
    pub calls: u64,
    pub logins: u64,
    /// Calls in the last whole minute.
    pub calls_last_minute: u64,
    /// Body bytes of the answers.
    pub bytes: u64,
    /// Time spent waiting for answers, µs (divided by `calls`: the mean
    /// answer time).
    pub answer_us: u64,
    /// Wall-clock ms of the last successful poll (0 = none).
    pub last_success_ms: u64,
    /// Logins refused (wrong user or password), in all.
    pub auth_failures: u64,
    /// No login is tried before this (wall-clock ms; 0 = none held).
    pub auth_retry_at_ms: u64,
    /// Sessions taken over from a polling worker that died or froze.
    pub sessions_reused: u64,
    /// Errors per class of [`ErrorKind::ALL`].
    pub errors: [u64; ErrorKind::ALL.len()],
}

impl<'a> EndpointRecord<'a> {
    fn w(&self, i: usize) -> &AtomicU64 {
        &self.mem[i]
    }
    /// Counts `n` calls made up to `now_ms` (only the polling worker
    /// writes).
    pub fn add_calls(&self, n: u64, now_ms: u64) {
        self.w(E_CALLS).fetch_add(n, Relaxed);
        let minute = now_ms / 60_000;
        let was = self.w(E_MINUTE).swap(minute, Relaxed);
        if was != minute {
            let last = if was + 1 == minute {
                self.w(E_MINUTE_CALLS).load(Relaxed)
            } else {
                0
            };
            self.w(E_LAST_MINUTE_CALLS).store(last, Relaxed);
            self.w(E_MINUTE_CALLS).store(0, Relaxed);
        }
        self.w(E_MINUTE_CALLS).fetch_add(n, Relaxed);
    }
    /// Counts the bytes and waiting time of answers.
    pub fn add_traffic(&self, bytes: u64, answer_us: u64) {
        self.w(E_BYTES).fetch_add(bytes, Relaxed);
        self.w(E_ANSWER_US).fetch_add(answer_us, Relaxed);
    }
    /// A successful login: the refusal streak ends.
    pub fn login_ok(&self) {
        self.w(E_LOGINS).fetch_add(1, Relaxed);
        self.w(E_AUTH_STREAK).store(0, Relaxed);
        self.w(E_AUTH_RETRY_AT).store(0, Relaxed);
        self.w(E_AUTH_CREDS).store(0, Relaxed);
    }
    /// A login with credentials `creds` (a hash of user and password,
    /// see [`credentials_key`](crate::collector::EndpointSpec::credentials_key))
    /// refused at `now_ms`: the next is held back ([`login_wait_ms`]);
    /// refusals of other credentials before it do not count. Returns the
    /// time of the next try.
    pub fn login_refused(&self, now_ms: u64, creds: u64) -> u64 {
        self.w(E_AUTH_FAILS).fetch_add(1, Relaxed);
        let creds = creds.max(1);
        let mine = self.w(E_AUTH_CREDS).load(Acquire) == creds;
        let streak = if mine {
            self.w(E_AUTH_STREAK).fetch_add(1, Relaxed)
        } else {
            self.w(E_AUTH_STREAK).store(1, Relaxed);
            0
        };
        let at = now_ms + login_wait_ms(streak);
        // the wait first, then whose it is: a reader never sees these
        // credentials with another's (longer) wait
        self.w(E_AUTH_RETRY_AT).store(at, Relaxed);
        self.w(E_AUTH_CREDS).store(creds, Release);
        at
    }
    /// When the next login with credentials `creds` may be tried (0 =
    /// now): the wait holds only for the credentials that were refused,
    /// so a password file fixed and reloaded is tried at once.
    pub fn auth_retry_at(&self, creds: u64) -> u64 {
        if self.w(E_AUTH_CREDS).load(Acquire) != creds.max(1) {
            return 0;
        }
        self.w(E_AUTH_RETRY_AT).load(Relaxed)
    }
    /// A successful poll at `now_ms`.
    pub fn success(&self, now_ms: u64) {
        self.w(E_LAST_OK).store(now_ms, Relaxed);
    }
    /// Counts an error, by its class.
    pub fn error(&self, e: &Error) {
        self.w(E_ERRORS + e.kind() as usize).fetch_add(1, Relaxed);
    }
    /// Publishes the polling worker's session cookie (`None`: no session
    /// to hand over). Only the lease holder writes it.
    pub fn set_session(&self, cookie: Option<&str>) {
        let bytes = cookie.map_or(&[][..], str::as_bytes);
        // an odd length word means "being written"
        self.w(E_SESSION_LEN).store(1, Release);
        if bytes.is_empty() || bytes.len() > MAX_SESSION_COOKIE {
            self.w(E_SESSION_LEN).store(0, Release);
            return;
        }
        for (i, chunk) in bytes.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.w(E_SESSION + i).store(u64::from_le_bytes(w), Relaxed);
        }
        self.w(E_SESSION_LEN)
            .store((bytes.len() as u64) << 1, Release);
    }
    /// The session cookie published by the polling worker, if any.
    pub fn session(&self) -> Option<String> {
        let len = self.w(E_SESSION_LEN).load(Acquire);
        if len == 0 || len & 1 == 1 {
            return None;
        }
        let n = ((len >> 1) as usize).min(MAX_SESSION_COOKIE);
        let mut bytes: Vec<u8> = (0..n.div_ceil(8))
            .flat_map(|i| self.w(E_SESSION + i).load(Relaxed).to_le_bytes())
            .collect();
        bytes.truncate(n);
        // written again meanwhile: no cookie rather than a torn one
        if self.w(E_SESSION_LEN).load(Acquire) != len {
            return None;
        }
        String::from_utf8(bytes).ok()
    }
    /// Counts a session taken over from a previous polling worker.
    pub fn session_reused(&self) {
        self.w(E_REUSED).fetch_add(1, Relaxed);
    }
    /// The record at `now_ms`.
    pub fn stats(&self, now_ms: u64) -> EndpointStats {
        let minute = now_ms / 60_000;
        let calls_last_minute = match self.w(E_MINUTE).load(Relaxed) {
            m if m == minute => self.w(E_LAST_MINUTE_CALLS).load(Relaxed),
            m if m + 1 == minute => self.w(E_MINUTE_CALLS).load(Relaxed),
            _ => 0,
        };
        EndpointStats {
            calls: self.w(E_CALLS).load(Relaxed),
            calls_last_minute,
            bytes: self.w(E_BYTES).load(Relaxed),
            answer_us: self.w(E_ANSWER_US).load(Relaxed),
            logins: self.w(E_LOGINS).load(Relaxed),
            last_success_ms: self.w(E_LAST_OK).load(Relaxed),
            auth_failures: self.w(E_AUTH_FAILS).load(Relaxed),
            auth_retry_at_ms: self.w(E_AUTH_RETRY_AT).load(Relaxed),
            sessions_reused: self.w(E_REUSED).load(Relaxed),
            errors: std::array::from_fn(|i| self.w(E_ERRORS + i).load(Relaxed)),
        }
    }
}

/// The poller lease, shared by all workers of one nginx instance: only the
/// holder talks to vSphere. A holder renews it every tick; it is taken over
/// when the holder releases it, its process is gone, or its heartbeat is
/// older than the timeout.
#[derive(Clone, Copy)]
pub struct Lease<'a> {
    mem: &'a [AtomicU64],
}

impl<'a> Lease<'a> {
    /// Wraps the lease words; `None` if too short.
    pub fn new(mem: &'a [AtomicU64]) -> Option<Lease<'a>> {
        (mem.len() >= LEASE_WORDS).then_some(Lease { mem })
    }

    /// PID of the holder (0 = free).
    pub fn holder(&self) -> u64 {
        self.mem[0].load(Acquire)
    }

    /// Times the lease changed hands.
    pub fn handovers(&self) -> u64 {
        self.mem[2].load(Relaxed)
    }

    /// Renews the lease if `pid` holds it (a heartbeat within a long
    /// poll, without taking a lease another holds); true if it does.
    pub fn beat(&self, pid: u64, now_ms: u64) -> bool {
        let ours = self.holder() == pid;
        if ours {
            self.mem[1].store(now_ms, Release);
        }
        ours
    }

    /// Takes or renews the lease for `pid` at `now_ms`. `alive(pid)` tells
    /// whether another holder's process still exists. Returns true if `pid`
    /// holds the lease afterwards.
    pub fn acquire(
        &self,
        pid: u64,
        now_ms: u64,
        timeout_ms: u64,
        alive: impl Fn(u64) -> bool,
    ) -> bool {
        let holder = self.holder();
        if holder == pid {
            self.mem[1].store(now_ms, Release);
            return true;
        }
        let beat = self.mem[1].load(Acquire);
        let free = holder == 0 || now_ms.saturating_sub(beat) > timeout_ms || !alive(holder);
        if free
            && self.mem[0]
                .compare_exchange(holder, pid, AcqRel, Acquire)
                .is_ok()
        {
            self.mem[1].store(now_ms, Release);
            self.mem[2].fetch_add(1, Relaxed);
            return true;
        }
        false
    }

    /// Gives the lease up if `pid` holds it.
    pub fn release(&self, pid: u64) {
        let _ = self.mem[0].compare_exchange(pid, 0, AcqRel, Acquire);
    }

    /// The record of the endpoint identified by `key`, if one was claimed
    /// (read only: for the status page).
    pub fn find_endpoint(&self, key: u64) -> Option<EndpointRecord<'a>> {
        let key = key.max(1);
        (0..MAX_ENDPOINT_RECORDS).find_map(|r| {
            let start = LEASE_HEAD + r * ENDPOINT_WORDS;
            let mem = self.mem.get(start..start + ENDPOINT_WORDS)?;
            (mem[E_KEY].load(Acquire) == key).then_some(EndpointRecord { mem })
        })
    }

    /// The record of the endpoint identified by `key` (a hash of its
    /// name, URL and user, never 0), claimed on first use; `None` when
    /// every record is taken by other endpoints.
    pub fn endpoint(&self, key: u64) -> Option<EndpointRecord<'a>> {
        let key = key.max(1);
        for r in 0..MAX_ENDPOINT_RECORDS {
            let start = LEASE_HEAD + r * ENDPOINT_WORDS;
            let mem = self.mem.get(start..start + ENDPOINT_WORDS)?;
            match mem[E_KEY].compare_exchange(0, key, AcqRel, Acquire) {
                Ok(_) => return Some(EndpointRecord { mem }),
                Err(k) if k == key => return Some(EndpointRecord { mem }),
                Err(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::lockout::LOGIN_WAIT_MS;

    #[test]
    fn lease_lifecycle() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        assert!(l.acquire(10, 1000, 3000, |_| true));
        assert!(!l.acquire(11, 2000, 3000, |_| true)); // holder alive and fresh
        assert!(l.acquire(10, 2500, 3000, |_| true)); // renew
        assert!(!l.acquire(11, 5000, 3000, |_| true));
        assert!(l.acquire(11, 5600, 3000, |_| true)); // heartbeat too old
        assert_eq!(l.holder(), 11);
        assert!(l.acquire(12, 5601, 3000, |p| p != 11)); // holder process gone
        l.release(11); // not the holder: no effect
        assert_eq!(l.holder(), 12);
        l.release(12);
        assert_eq!(l.holder(), 0);
        assert!(l.acquire(13, 6000, 3000, |_| true));
        assert_eq!(l.handovers(), 4);
        // a heartbeat within a long poll keeps it; another's takes nothing
        assert!(l.beat(13, 8000) && !l.beat(14, 8500));
        assert!(!l.acquire(14, 10_000, 3000, |_| true)); // 2 s since the beat
        assert_eq!((l.holder(), l.handovers()), (13, 4));
    }

    #[test]
    fn endpoint_records_are_found_by_key_and_hold_refused_logins_back() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        let a = l.endpoint(7).unwrap();
        a.add_calls(3, 0);
        a.error(&crate::vsphere::Error::Timeout);
        // the same key finds the same record; another key another one
        assert_eq!(l.endpoint(7).unwrap().stats(0).calls, 3);
        assert_eq!(l.find_endpoint(7).unwrap().stats(0).calls, 3);
        assert!(l.find_endpoint(99).is_none());
        assert_eq!(l.endpoint(8).unwrap().stats(0).calls, 0);
        assert_eq!(a.stats(0).errors[2], 1);
        assert_eq!(a.stats(0).errors.iter().sum::<u64>(), 1);
        // refusals: 5 min, 10, 20, 40, then an hour at most
        let waits: Vec<u64> = (0..6).map(|_| a.login_refused(1_000, 5) - 1_000).collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 60, 60].map(|m| m * 60_000),
            "{waits:?}"
        );
        assert_eq!(a.stats(0).auth_failures, 6);
        assert_eq!(a.auth_retry_at(5), 1_000 + 60 * 60_000);
        // other credentials (a password file fixed) are not held back,
        // and their own refusals start again at 5 minutes
        assert_eq!(a.auth_retry_at(6), 0);
        assert_eq!(a.login_refused(1_000, 6), 1_000 + LOGIN_WAIT_MS);
        assert_eq!(a.auth_retry_at(5), 0);
        a.login_ok();
        assert_eq!(a.auth_retry_at(6), 0);
        assert_eq!(a.login_refused(0, 6), LOGIN_WAIT_MS);
        // records run out
        for k in 9..(9 + MAX_ENDPOINT_RECORDS as u64 - 2) {
            assert!(l.endpoint(k).is_some());
        }
        assert!(l.endpoint(1_000).is_none());
    }

    #[test]
    fn calls_per_minute_are_the_last_whole_minutes() {
        let mem: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let a = Lease::new(&mem).unwrap().endpoint(7).unwrap();
        a.add_calls(3, 60_000);
        a.add_calls(2, 100_000);
        assert_eq!(a.stats(110_000).calls_last_minute, 0);
        assert_eq!(a.stats(130_000).calls_last_minute, 5);
        a.add_calls(4, 130_000);
        assert_eq!(a.stats(170_000).calls_last_minute, 5);
        assert_eq!(a.stats(190_000).calls_last_minute, 4);
        // a minute without calls between
        assert_eq!(a.stats(250_000).calls_last_minute, 0);
        a.add_calls(1, 250_000);
        assert_eq!(a.stats(250_000).calls_last_minute, 0);
        assert_eq!(a.stats(250_000).calls, 10);
        a.add_traffic(100, 7);
        a.add_traffic(50, 3);
        let s = a.stats(250_000);
        assert_eq!((s.bytes, s.answer_us), (150, 10));
    }

    #[test]
    fn the_session_cookie_round_trips_through_the_record() {
        let words: Vec<AtomicU64> = (0..LEASE_WORDS).map(|_| AtomicU64::new(0)).collect();
        let l = Lease::new(&words).unwrap();
        let a = l.endpoint(7).unwrap();
        assert_eq!(a.session(), None);
        let cookie = "vmware_soap_session=\"52a1c2f3-9d1e-4b7a-8c3f-0e6d2b1a9f47\"";
        a.set_session(Some(cookie));
        assert_eq!(
            l.find_endpoint(7).unwrap().session().as_deref(),
            Some(cookie)
        );
        // a shorter one leaves nothing of the longer behind
        a.set_session(Some("s=1"));
        assert_eq!(a.session().as_deref(), Some("s=1"));
        // the longest kept, and one byte more is not kept at all
        let longest = "x".repeat(MAX_SESSION_COOKIE);
        a.set_session(Some(&longest));
        assert_eq!(a.session().as_deref(), Some(longest.as_str()));
        a.set_session(Some(&"x".repeat(MAX_SESSION_COOKIE + 1)));
        assert_eq!(a.session(), None);
        a.set_session(Some("s=2"));
        a.set_session(None);
        assert_eq!(a.session(), None);
        // the record's other words are untouched
        a.add_calls(2, 0);
        a.set_session(Some(&longest));
        assert_eq!(a.stats(0).calls, 2);
        assert_eq!(a.stats(0).errors, [0; ErrorKind::ALL.len()]);
    }
}
