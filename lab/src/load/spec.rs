//! What a load run is asked to do (its spec, JSON for a load process of
//! its own) and what it records (one line per request).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How requests arrive.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// `users` virtual users, each: request, wait for the answer, think,
    /// repeat (the paper: 2 s think time between requests). Think times are
    /// exponential with mean `think_ms` (or fixed if `fixed_think`); the first
    /// request of each user is spread uniformly over the first think time.
    /// Each user keeps its own keep-alive connection, reconnecting after
    /// errors; after a failed request a user pauses at least 10 ms.
    Closed {
        users: usize,
        think_ms: u64,
        #[serde(default)]
        fixed_think: bool,
    },
    /// Poisson arrivals at `rate` requests/s, independent of answers,
    /// scheduled against an absolute clock. Requests take an idle keep-alive
    /// connection from a shared pool or open a new one.
    Open { rate: f64 },
}

/// From `from` on (relative to the start of the run), requests pick
/// uniformly among `paths` (indices into [`LoadSpec::paths`]) and the open
/// loop runs at `rate_factor` times its rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    #[serde(rename = "from_ms", with = "millis")]
    pub from: Duration,
    pub paths: Vec<usize>,
    pub rate_factor: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSpec {
    /// nginx instances (or any HTTP/1.1 servers), normally on loopback,
    /// with weights: an open-loop request goes to one at random by weight,
    /// a closed-loop user keeps the one drawn at its start.
    pub targets: Vec<(SocketAddr, f64)>,
    /// Each request picks one uniformly at random (at most 256 paths).
    pub paths: Vec<String>,
    /// The mix and rate over time; empty = every path at the full rate.
    pub phases: Vec<Phase>,
    pub pattern: Pattern,
    /// No request starts after this (relative to the start of the run).
    #[serde(rename = "duration_ms", with = "millis")]
    pub duration: Duration,
    /// Per request, connecting included; a timeout is recorded as status 0.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// Open loop: arrivals while this many requests are in flight are
    /// recorded as dropped (status 1) without sending; 0 = no limit.
    /// Ignored by the closed loop (which has `users` in flight at most).
    pub max_in_flight: usize,
    pub seed: u64,
}

/// One request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Start time relative to the run start.
    pub t_ms: u32,
    /// Until the whole response body is read (or the error/timeout); 0 for
    /// dropped arrivals.
    pub latency_us: u32,
    /// HTTP status; 0 = connection error/protocol error/timeout; 1 = dropped
    /// (open loop over `max_in_flight`).
    pub status: u16,
    /// Index into `backends` of the `X-Backend` response header; 255 =
    /// none/unknown. Kept on a timeout after the response head arrived.
    pub backend: u8,
    /// Index into `spec.paths`.
    pub path: u8,
    /// Body bytes received (also the partial count of a failed request).
    pub bytes: u32,
    /// Index into `spec.targets` of the frontend that was asked.
    pub frontend: u8,
}

impl LoadSpec {
    /// The spec as JSON (for a load process of its own).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// Reads [`LoadSpec::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Result<LoadSpec, String> {
        LoadSpec::deserialize(v).map_err(|e| format!("load spec: {e}"))
    }
}

/// A `Duration` as whole milliseconds.
mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Writes records one per line: `t_ms latency_us status backend path bytes
/// frontend`.
pub fn write_records(mut w: impl std::io::Write, recs: &[Record]) -> io::Result<()> {
    for r in recs {
        writeln!(
            w,
            "{} {} {} {} {} {} {}",
            r.t_ms, r.latency_us, r.status, r.backend, r.path, r.bytes, r.frontend
        )?;
    }
    w.flush()
}

/// Reads [`write_records`]' lines (malformed lines are skipped).
pub fn read_records(text: &str) -> Vec<Record> {
    text.lines()
        .filter_map(|l| {
            let v: Vec<u64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
            (v.len() == 7).then(|| Record {
                t_ms: v[0] as u32,
                latency_us: v[1] as u32,
                status: v[2] as u16,
                backend: v[3] as u8,
                path: v[4] as u8,
                bytes: v[5] as u32,
                frontend: v[6] as u8,
            })
        })
        .collect()
}
