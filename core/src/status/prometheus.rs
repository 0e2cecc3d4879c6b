//! The Prometheus text exposition of the status (`dwepc_status` with
//! `?format=prometheus`): names, units and types after Prometheus' naming
//! conventions (`_total` counters, base units: seconds, bytes, ratios),
//! labels bounded by the configuration (upstream, server, peer address,
//! VM, endpoint, error kind, reason) and never by requests.
//!
//! The families are tables: the upstreams' ([`UPSTREAM`]), the peers'
//! ([`PEER`]) and the endpoints' ([`ENDPOINT`]), each row a name, a type, a
//! help text and the value it reads; a mode's own families come from its
//! [`crate::policy::Mode::metrics`]. A few families carry one more label
//! (reason, resource, error kind, the VM) and are written on their own.

use std::collections::HashSet;
use std::fmt::Write;

use super::document::{PeerStatus, UpstreamStatus};
use crate::policy::view::{Part, Scope};
use crate::policy::{Fields, MODES};
use crate::resources::RESOURCES;
use crate::vsphere::ErrorKind;
use crate::zone::reason::reason_names;
use crate::zone::EndpointStats;

/// One vSphere endpoint's record, by name.
pub struct EndpointMetrics<'a> {
    pub name: &'a str,
    /// "vsphere" or "prometheus".
    pub source: &'static str,
    pub url: &'a str,
    pub stats: EndpointStats,
}

/// A family whose samples read one number of a `T` each: name, type,
/// help, value (NaN: no sample).
type Row<T> = (&'static str, &'static str, &'static str, fn(&T) -> f64);

/// The upstreams' families with one sample per upstream.
pub static UPSTREAM: [Row<UpstreamStatus>; 6] = [
    (
        "dwepc_upstream_sample_age_seconds",
        "gauge",
        "Age of the newest counter sample.",
        |u| u.sample_age_ms.map_or(f64::NAN, |a| a as f64 / 1000.0),
    ),
    (
        "dwepc_upstream_window_samples",
        "gauge",
        "Samples in the model's window.",
        |u| u.window as f64,
    ),
    (
        "dwepc_upstream_window_size_samples",
        "gauge",
        "Size of the model's window.",
        |u| u.window_size as f64,
    ),
    (
        "dwepc_upstream_servers",
        "gauge",
        "Servers of the upstream (resolved addresses included).",
        |u| u.servers as f64,
    ),
    (
        "dwepc_upstream_mapped_servers",
        "gauge",
        "Servers whose VM was found.",
        |u| u.mapped as f64,
    ),
    (
        "dwepc_upstream_drawn_servers",
        "gauge",
        "Servers a pick over the primary servers draws by share and compares now (choices=); absent while a pick compares every eligible server.",
        |u| u.drawn.map_or(f64::NAN, |d| d as f64),
    ),
];

/// The peers' families with one sample per peer.
pub static PEER: [Row<PeerStatus>; 8] = [
    (
        "dwepc_peer_requests_total",
        "counter",
        "Requests sent to the server (all workers).",
        |p| p.requests as f64,
    ),
    (
        "dwepc_peer_failed_requests_total",
        "counter",
        "Requests to the server that failed (refused, timed out, bad answer).",
        |p| p.failed as f64,
    ),
    (
        "dwepc_peer_in_flight_requests",
        "gauge",
        "Requests in flight to the server (all workers).",
        |p| p.in_flight as f64,
    ),
    (
        "dwepc_peer_cpu_ready_ratio",
        "gauge",
        "CPU ready time of the VM's newest sample, as a fraction of the sample interval (summed over vCPUs).",
        |p| p.cpu_ready_pct / 100.0,
    ),
    (
        "dwepc_peer_got_share_ratio",
        "gauge",
        "Share of the upstream's requests the server was sent in the newest sample period (beside dwepc_peer_share_ratio in observe mode).",
        |p| p.got_share,
    ),
    (
        "dwepc_peer_cpu_capacity_megahertz",
        "gauge",
        "Usable CPU capacity of the server's VM.",
        |p| p.capacity[0],
    ),
    (
        "dwepc_peer_memory_capacity_bytes",
        "gauge",
        "Usable memory of the server's VM.",
        |p| p.capacity[1] * 1_048_576.0,
    ),
    (
        "dwepc_peer_network_capacity_bytes_per_second",
        "gauge",
        "Usable network capacity of the server's VM.",
        |p| p.capacity[2] * 1024.0,
    ),
];

/// The endpoints' families with one sample per endpoint (their errors by
/// kind are written on their own).
pub static ENDPOINT: [Row<EndpointStats>; 7] = [
    (
        "dwepc_endpoint_calls_total",
        "counter",
        "Calls made to the endpoint (SOAP calls to vSphere, queries to Prometheus).",
        |s| s.calls as f64,
    ),
    (
        "dwepc_endpoint_answer_bytes_total",
        "counter",
        "Body bytes of the endpoint's answers.",
        |s| s.bytes as f64,
    ),
    (
        "dwepc_endpoint_answer_seconds_total",
        "counter",
        "Time spent waiting for the endpoint's answers (divided by the calls: the mean answer time).",
        |s| s.answer_us as f64 / 1e6,
    ),
    (
        "dwepc_endpoint_logins_total",
        "counter",
        "Sessions opened with the endpoint (vSphere).",
        |s| s.logins as f64,
    ),
    (
        "dwepc_endpoint_sessions_reused_total",
        "counter",
        "Sessions taken over from a polling worker that died or froze, instead of opening another (vSphere).",
        |s| s.sessions_reused as f64,
    ),
    (
        "dwepc_endpoint_login_refusals_total",
        "counter",
        "Logins the endpoint refused (wrong user or password; vSphere).",
        |s| s.auth_failures as f64,
    ),
    (
        "dwepc_endpoint_last_success_timestamp_seconds",
        "gauge",
        "Time of the last successful poll of the endpoint (Unix time).",
        |s| {
            if s.last_success_ms > 0 {
                s.last_success_ms as f64 / 1000.0
            } else {
                f64::NAN
            }
        },
    ),
];

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition being written: `# HELP`, `# TYPE`, then each sample
/// whose value is finite (a family without one is left out).
#[derive(Default)]
struct Out {
    text: String,
}

impl Out {
    /// One family. Labels may be owned or borrowed (a server's labels are
    /// built once and borrowed by each of its families).
    fn family<I, L>(&mut self, name: &str, kind: &str, help: &str, samples: I)
    where
        I: IntoIterator<Item = (L, f64)>,
        L: AsRef<str>,
    {
        let mut head = false;
        for (labels, v) in samples {
            if !v.is_finite() {
                continue;
            }
            if !head {
                let _ = writeln!(self.text, "# HELP {name} {help}");
                let _ = writeln!(self.text, "# TYPE {name} {kind}");
                head = true;
            }
            let _ = writeln!(self.text, "{name}{{{}}} {v}", labels.as_ref());
        }
    }

    /// A table's families over `items`, each labelled as given.
    fn table<T>(&mut self, rows: &[Row<T>], items: &[(String, &T)]) {
        for (name, kind, help, value) in rows {
            self.family(
                name,
                kind,
                help,
                items.iter().map(|(l, x)| (l.as_str(), value(x))),
            );
        }
    }

    /// The modes' families of `scope`, each once however many modes
    /// declare it, over `items` (labels, the mode's fields).
    fn modes(&mut self, scope: Scope, items: &[(&str, &Fields)]) {
        let mut done = HashSet::new();
        for m in MODES.iter().flat_map(|m| m.metrics()) {
            if m.scope != scope || !done.insert(m.name) {
                continue;
            }
            let samples = items.iter().flat_map(|(labels, fields)| {
                let field = fields.get(m.field);
                let parts: Vec<(String, Option<usize>)> = match m.part {
                    Part::Whole => vec![(labels.to_string(), None)],
                    Part::Resource(j) => vec![(labels.to_string(), Some(j))],
                    Part::EachResource => RESOURCES
                        .iter()
                        .enumerate()
                        .map(|(j, r)| (format!("{labels},resource=\"{r}\""), Some(j)))
                        .collect(),
                };
                parts
                    .into_iter()
                    .map(move |(l, j)| (l, field.map_or(f64::NAN, |f| f.value(j) * m.scale)))
            });
            self.family(m.name, m.kind, m.help, samples);
        }
    }
}

/// The exposition of `ups` and `endpoints`, after the build that
/// answers (`dwepc_build_info{version="…"} 1`).
pub fn render(version: &str, ups: &[UpstreamStatus], endpoints: &[EndpointMetrics<'_>]) -> String {
    let mut o = Out::default();
    o.family(
        "dwepc_build_info",
        "gauge",
        "The module build that answers (1; its version in the label).",
        std::iter::once((format!("version=\"{}\"", esc(version)), 1.0)),
    );
    upstreams(&mut o, ups);
    peers(&mut o, ups);
    let eps: Vec<(String, &EndpointStats)> = endpoints
        .iter()
        .map(|e| {
            (
                format!("endpoint=\"{}\",source=\"{}\"", esc(e.name), e.source),
                &e.stats,
            )
        })
        .collect();
    let (calls, rest) = ENDPOINT.split_at(1);
    o.table(calls, &eps);
    o.family(
        "dwepc_endpoint_errors_total",
        "counter",
        "Failed polls of the endpoint, by kind of error.",
        eps.iter().flat_map(|(l, s)| {
            ErrorKind::ALL
                .iter()
                .zip(s.errors)
                .map(move |(k, n)| (format!("{l},kind=\"{}\"", k.name()), n as f64))
        }),
    );
    o.table(rest, &eps);
    o.text
}

/// The upstreams' families, theirs then their modes'.
fn upstreams(o: &mut Out, ups: &[UpstreamStatus]) {
    let labelled: Vec<(String, &UpstreamStatus)> = ups
        .iter()
        .map(|u| (format!("upstream=\"{}\"", esc(&u.name)), u))
        .collect();
    o.family(
        "dwepc_upstream_counters_in_use",
        "gauge",
        "1 when ESXi counters drive the pick, 0 when the upstream picks without them (by response times or weighted round robin).",
        labelled
            .iter()
            .map(|(l, u)| (l.as_str(), f64::from(u8::from(u.balancing == "dwepc")))),
    );
    o.family(
        "dwepc_upstream_reason",
        "gauge",
        "Why the upstream balances as it does: 1 for the reason in force, 0 for the others.",
        labelled.iter().flat_map(|(l, u)| {
            reason_names().map(move |r| {
                (
                    format!("{l},reason=\"{r}\""),
                    f64::from(u8::from(u.reason == r)),
                )
            })
        }),
    );
    o.table(&UPSTREAM, &labelled);
    let fields: Vec<(&str, &Fields)> = labelled
        .iter()
        .map(|(l, u)| (l.as_str(), &u.model))
        .collect();
    o.modes(Scope::Upstream, &fields);
}

/// The peers' families, theirs then their modes'.
fn peers(o: &mut Out, ups: &[UpstreamStatus]) {
    // each server's labels, escaped once for all its families
    let labelled: Vec<(String, &PeerStatus)> = ups
        .iter()
        .flat_map(|u| {
            u.peers.iter().map(move |p| {
                let l = format!(
                    "upstream=\"{}\",server=\"{}\",peer=\"{}\"",
                    esc(&u.name),
                    esc(&p.server),
                    esc(&p.name)
                );
                (l, p)
            })
        })
        .collect();
    o.family(
        "dwepc_peer_info",
        "gauge",
        "A server's VM and how it was matched (always 1).",
        labelled.iter().map(|(l, p)| {
            (
                format!(
                    "{l},vm=\"{}\",mapping=\"{}\",backup=\"{}\"",
                    esc(p.vm.as_deref().unwrap_or("")),
                    p.mapping.name(),
                    p.backup
                ),
                1.0,
            )
        }),
    );
    o.table(&PEER, &labelled);
    o.family(
        "dwepc_peer_utilization_ratio",
        "gauge",
        "What the server's VM used in its newest sample, as a fraction of its usable capacity, per resource.",
        labelled.iter().flat_map(|(l, p)| {
            RESOURCES
                .iter()
                .enumerate()
                .map(move |(j, r)| (format!("{l},resource=\"{r}\""), p.usage[j] / p.capacity[j]))
        }),
    );
    let fields: Vec<(&str, &Fields)> = labelled
        .iter()
        .map(|(l, p)| (l.as_str(), &p.model))
        .collect();
    o.modes(Scope::Peer, &fields);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::shares::Shares;
    use crate::policy::{Field, Mode};

    #[test]
    fn families_are_typed_named_and_labelled() {
        let u = UpstreamStatus {
            name: "app\"1".into(),
            mode: "shares".into(),
            balancing: "dwepc".into(),
            reason: "active".into(),
            sample_age_ms: Some(1500),
            choices: Some("auto".into()),
            drawn: Some(2),
            servers: 1,
            mapped: 1,
            model: Fields(vec![
                (
                    "cost",
                    Field::MaybeResources(Some([100.0, f64::NAN, 2.0, f64::NAN])),
                ),
                ("rate", Field::Number(40.0)),
                ("guard_rejections", Field::Count(3)),
            ]),
            peers: vec![PeerStatus {
                name: "127.0.0.2:80".into(),
                server: "app.test:80".into(),
                vm: Some("web-1".into()),
                mapping: crate::zone::Mapping::Mapped,
                requests: 7,
                cpu_ready_pct: 2.5,
                capacity: [4000.0, 2048.0, f64::NAN, f64::NAN],
                usage: [1000.0, 512.0, 30.0, f64::NAN],
                model: {
                    let mut f = Shares.peer_fields(None, false);
                    f.0[0] = ("share", Field::Number(0.25));
                    f
                },
                ..PeerStatus::default()
            }],
            ..UpstreamStatus::default()
        };
        let mut stats = EndpointStats {
            calls: 12,
            last_success_ms: 1_700_000_000_500,
            ..EndpointStats::default()
        };
        stats.errors[2] = 4;
        let text = render(
            "0.1.0+abc",
            &[u],
            &[EndpointMetrics {
                name: "vc",
                source: "vsphere",
                url: "https://vc/sdk",
                stats,
            }],
        );
        assert!(
            text.contains("dwepc_build_info{version=\"0.1.0+abc\"} 1"),
            "{text}"
        );
        for line in [
            "# TYPE dwepc_upstream_counters_in_use gauge",
            "dwepc_upstream_counters_in_use{upstream=\"app\\\"1\"} 1",
            "dwepc_upstream_reason{upstream=\"app\\\"1\",reason=\"active\"} 1",
            "dwepc_upstream_reason{upstream=\"app\\\"1\",reason=\"stale\"} 0",
            "dwepc_upstream_sample_age_seconds{upstream=\"app\\\"1\"} 1.5",
            "# TYPE dwepc_upstream_drawn_servers gauge",
            "dwepc_upstream_drawn_servers{upstream=\"app\\\"1\"} 2",
            "dwepc_upstream_request_network_bytes{upstream=\"app\\\"1\"} 2048",
            "# TYPE dwepc_upstream_guard_rejections_total counter",
            "dwepc_peer_requests_total{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 7",
            "dwepc_peer_cpu_ready_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 0.025",
            "dwepc_peer_memory_capacity_bytes{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 2147483648",
            "dwepc_peer_share_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 0.25",
            "dwepc_peer_utilization_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\",resource=\"cpu\"} 0.25",
            "dwepc_peer_utilization_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\",resource=\"mem\"} 0.25",
            "vm=\"web-1\",mapping=\"mapped\",backup=\"false\"} 1",
            "dwepc_endpoint_errors_total{endpoint=\"vc\",source=\"vsphere\",kind=\"timeout\"} 4",
            "dwepc_endpoint_errors_total{endpoint=\"vc\",source=\"vsphere\",kind=\"too_large\"} 0",
            "dwepc_endpoint_last_success_timestamp_seconds{endpoint=\"vc\",source=\"vsphere\"} 1700000000.5",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // unknown values are left out, not written as NaN
        assert!(!text.contains("NaN"), "{text}");
        assert!(!text.contains("dwepc_peer_network_capacity_bytes_per_second"));
        assert!(!text.contains("dwepc_peer_allocation"));
        // every eligible server compared: no drawn servers
        let every = UpstreamStatus {
            choices: Some("all".into()),
            ..UpstreamStatus::default()
        };
        assert!(!render("0.1.0", &[every], &[]).contains("drawn"));
        // net: no capacity; disk: not reported
        assert!(!text.contains("resource=\"net\""));
        assert!(!text.contains("resource=\"disk\""));
        // every sample line belongs to a family declared just before it
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split('{').next().unwrap();
                assert!(declared.contains(name), "{l}");
            }
        }
    }
}
