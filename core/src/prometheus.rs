//! The Prometheus text exposition of the status (`dwepc_status` with
//! `?format=prometheus`): names, units and types after Prometheus' naming
//! conventions (`_total` counters, base units: seconds, bytes, ratios),
//! labels bounded by the configuration (upstream, server, peer address,
//! VM, endpoint, error kind, reason) and never by requests.

use std::fmt::Write;

use crate::shared::{reason_names, EndpointStats};
use crate::status::{PeerModel, PeerStatus, UpstreamModel, UpstreamStatus};
use crate::vsphere::client::ERROR_CLASSES;

/// One vSphere endpoint's record, by name.
pub struct EndpointMetrics<'a> {
    pub name: &'a str,
    pub stats: EndpointStats,
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes metric families: `# HELP`, `# TYPE`, then each sample whose
/// value is finite.
struct Out {
    text: String,
}

impl Out {
    /// Labels may be owned or borrowed (a server's labels are built once
    /// and borrowed by each of its families).
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
}

fn up_label(u: &UpstreamStatus) -> String {
    format!("upstream=\"{}\"", esc(&u.name))
}

fn peer_label(u: &UpstreamStatus, p: &PeerStatus) -> String {
    format!(
        "upstream=\"{}\",server=\"{}\",peer=\"{}\"",
        esc(&u.name),
        esc(&p.server),
        esc(&p.name)
    )
}

/// The exposition of `ups` and `endpoints`.
pub fn render(ups: &[UpstreamStatus], endpoints: &[EndpointMetrics<'_>]) -> String {
    let mut o = Out {
        text: String::new(),
    };
    let per_up = |f: &dyn Fn(&UpstreamStatus) -> f64| -> Vec<(String, f64)> {
        ups.iter().map(|u| (up_label(u), f(u))).collect()
    };
    o.family(
        "dwepc_upstream_counters_in_use",
        "gauge",
        "1 when ESXi counters drive the pick, 0 when the upstream uses weighted round robin.",
        per_up(&|u| f64::from(u8::from(u.balancing == "dwepc"))),
    );
    o.family(
        "dwepc_upstream_reason",
        "gauge",
        "Why the upstream balances as it does: 1 for the reason in force, 0 for the others.",
        ups.iter().flat_map(|u| {
            reason_names().map(move |r| {
                (
                    format!("{},reason=\"{r}\"", up_label(u)),
                    f64::from(u8::from(u.reason == r)),
                )
            })
        }),
    );
    o.family(
        "dwepc_upstream_sample_age_seconds",
        "gauge",
        "Age of the newest counter sample.",
        per_up(&|u| u.sample_age_ms.map_or(f64::NAN, |a| a as f64 / 1000.0)),
    );
    o.family(
        "dwepc_upstream_window_samples",
        "gauge",
        "Samples in the model's window.",
        per_up(&|u| u.window as f64),
    );
    o.family(
        "dwepc_upstream_window_size_samples",
        "gauge",
        "Size of the model's window.",
        per_up(&|u| u.window_size as f64),
    );
    o.family(
        "dwepc_upstream_servers",
        "gauge",
        "Servers of the upstream (resolved addresses included).",
        per_up(&|u| u.servers as f64),
    );
    o.family(
        "dwepc_upstream_mapped_servers",
        "gauge",
        "Servers whose VM was found.",
        per_up(&|u| u.mapped as f64),
    );
    let shares = |u: &UpstreamStatus| match &u.model {
        UpstreamModel::Shares {
            cost,
            rate,
            guard_rejections,
        } => Some((*cost, *rate, *guard_rejections)),
        UpstreamModel::Paper { .. } => None,
    };
    let cost = |j: usize, scale: f64| {
        move |u: &UpstreamStatus| {
            shares(u)
                .and_then(|s| s.0)
                .map_or(f64::NAN, |c| c[j] * scale)
        }
    };
    o.family(
        "dwepc_upstream_request_cpu_megahertz_seconds",
        "gauge",
        "Shares mode: CPU work of one request (MHz x s).",
        per_up(&cost(0, 1.0)),
    );
    o.family(
        "dwepc_upstream_request_network_bytes",
        "gauge",
        "Shares mode: network bytes of one request.",
        per_up(&cost(2, 1024.0)),
    );
    o.family(
        "dwepc_upstream_request_disk_bytes",
        "gauge",
        "Shares mode: disk bytes of one request.",
        per_up(&cost(3, 1024.0)),
    );
    o.family(
        "dwepc_upstream_sampled_requests_per_second",
        "gauge",
        "Shares mode: completed requests per second in the newest samples.",
        per_up(&|u| shares(u).map_or(f64::NAN, |s| s.1)),
    );
    o.family(
        "dwepc_upstream_guard_rejections_total",
        "counter",
        "Shares mode: requests answered at once because every server was at its in-flight limit.",
        per_up(&|u| shares(u).map_or(f64::NAN, |s| s.2 as f64)),
    );
    o.family(
        "dwepc_upstream_paper_weight",
        "gauge",
        "Paper mode: the fitted weight vector W, per resource.",
        ups.iter().flat_map(|u| {
            let w = match u.model {
                UpstreamModel::Paper { w } => w,
                UpstreamModel::Shares { .. } => None,
            };
            crate::algo::RESOURCES
                .iter()
                .enumerate()
                .filter_map(move |(j, r)| {
                    w.map(|w| (format!("{},resource=\"{r}\"", up_label(u)), w[j]))
                })
        }),
    );

    let peers: Vec<(&UpstreamStatus, &PeerStatus)> = ups
        .iter()
        .flat_map(|u| u.peers.iter().map(move |p| (u, p)))
        .collect();
    // each server's labels, escaped once for all its families
    let labels: Vec<String> = peers.iter().map(|(u, p)| peer_label(u, p)).collect();
    let per_peer = |f: &dyn Fn(&PeerStatus) -> f64| -> Vec<(&str, f64)> {
        peers
            .iter()
            .zip(&labels)
            .map(|((_, p), l)| (l.as_str(), f(p)))
            .collect()
    };
    o.family(
        "dwepc_peer_info",
        "gauge",
        "A server's VM and how it was matched (always 1).",
        peers.iter().zip(&labels).map(|((_, p), l)| {
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
    o.family(
        "dwepc_peer_requests_total",
        "counter",
        "Requests sent to the server (all workers).",
        per_peer(&|p| p.requests as f64),
    );
    o.family(
        "dwepc_peer_failed_requests_total",
        "counter",
        "Requests to the server that failed (refused, timed out, bad answer).",
        per_peer(&|p| p.failed as f64),
    );
    o.family(
        "dwepc_peer_in_flight_requests",
        "gauge",
        "Requests in flight to the server (all workers).",
        per_peer(&|p| p.in_flight as f64),
    );
    o.family(
        "dwepc_peer_cpu_ready_ratio",
        "gauge",
        "CPU ready time of the VM's newest sample, as a fraction of the sample interval (summed over vCPUs).",
        per_peer(&|p| p.cpu_ready_pct / 100.0),
    );
    o.family(
        "dwepc_peer_cpu_capacity_megahertz",
        "gauge",
        "Usable CPU capacity of the server's VM.",
        per_peer(&|p| p.capacity[0]),
    );
    o.family(
        "dwepc_peer_memory_capacity_bytes",
        "gauge",
        "Usable memory of the server's VM.",
        per_peer(&|p| p.capacity[1] * 1_048_576.0),
    );
    o.family(
        "dwepc_peer_network_capacity_bytes_per_second",
        "gauge",
        "Usable network capacity of the server's VM.",
        per_peer(&|p| p.capacity[2] * 1024.0),
    );
    o.family(
        "dwepc_peer_utilization_ratio",
        "gauge",
        "What the server's VM used in its newest sample, as a fraction of its usable capacity, per resource.",
        peers.iter().zip(&labels).flat_map(|((_, p), l)| {
            crate::algo::RESOURCES
                .iter()
                .enumerate()
                .filter(|&(j, _)| (p.usage[j] / p.capacity[j]).is_finite())
                .map(move |(j, r)| (format!("{l},resource=\"{r}\""), p.usage[j] / p.capacity[j]))
        }),
    );
    fn sp(p: &PeerStatus) -> Option<&crate::status::SharesPeer> {
        match &p.model {
            PeerModel::Shares(s) => Some(s),
            PeerModel::Paper(_) => None,
        }
    }
    o.family(
        "dwepc_peer_share_ratio",
        "gauge",
        "Shares mode: the server's share of the requests in force.",
        per_peer(&|p| sp(p).map_or(f64::NAN, |s| s.share)),
    );
    o.family(
        "dwepc_peer_target_share_ratio",
        "gauge",
        "Shares mode: the server's target share from the newest sample.",
        per_peer(&|p| sp(p).map_or(f64::NAN, |s| s.target_share)),
    );
    o.family(
        "dwepc_peer_in_flight_limit",
        "gauge",
        "Shares mode: the server's in-flight limit (absent: none).",
        per_peer(&|p| {
            sp(p).map_or(f64::NAN, |s| {
                if s.limit > 0 {
                    s.limit as f64
                } else {
                    f64::NAN
                }
            })
        }),
    );
    o.family(
        "dwepc_peer_background_cpu_megahertz",
        "gauge",
        "Shares mode: CPU use of the VM not explained by this balancer's requests.",
        per_peer(&|p| sp(p).map_or(f64::NAN, |s| s.background[0])),
    );
    o.family(
        "dwepc_peer_effective_cpu_megahertz",
        "gauge",
        "Shares mode: CPU capacity after CPU ready.",
        per_peer(&|p| sp(p).map_or(f64::NAN, |s| s.effective_cpu)),
    );
    o.family(
        "dwepc_peer_allocation",
        "gauge",
        "Paper and wlc modes: the server's allocation for the current period (requests; wlc: its weight).",
        per_peer(&|p| match &p.model {
            PeerModel::Paper(x) => x.allocation,
            PeerModel::Shares(_) => f64::NAN,
        }),
    );

    let ep = |e: &EndpointMetrics<'_>| format!("vsphere=\"{}\"", esc(e.name));
    o.family(
        "dwepc_vsphere_calls_total",
        "counter",
        "SOAP calls made to the endpoint.",
        endpoints.iter().map(|e| (ep(e), e.stats.calls as f64)),
    );
    o.family(
        "dwepc_vsphere_errors_total",
        "counter",
        "Failed polls of the endpoint, by kind of error.",
        endpoints.iter().flat_map(|e| {
            ERROR_CLASSES
                .iter()
                .zip(e.stats.errors)
                .map(move |(k, n)| (format!("{},kind=\"{k}\"", ep(e)), n as f64))
        }),
    );
    o.family(
        "dwepc_vsphere_logins_total",
        "counter",
        "Sessions opened with the endpoint.",
        endpoints.iter().map(|e| (ep(e), e.stats.logins as f64)),
    );
    o.family(
        "dwepc_vsphere_sessions_reused_total",
        "counter",
        "Sessions taken over from a polling worker that died or froze, instead of opening another.",
        endpoints
            .iter()
            .map(|e| (ep(e), e.stats.sessions_reused as f64)),
    );
    o.family(
        "dwepc_vsphere_login_refusals_total",
        "counter",
        "Logins the endpoint refused (wrong user or password).",
        endpoints
            .iter()
            .map(|e| (ep(e), e.stats.auth_failures as f64)),
    );
    o.family(
        "dwepc_vsphere_last_success_timestamp_seconds",
        "gauge",
        "Time of the last successful poll of the endpoint (Unix time).",
        endpoints.iter().map(|e| {
            (
                ep(e),
                if e.stats.last_success_ms > 0 {
                    e.stats.last_success_ms as f64 / 1000.0
                } else {
                    f64::NAN
                },
            )
        }),
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SharesPeer;

    #[test]
    fn families_are_typed_named_and_labelled() {
        let u = UpstreamStatus {
            name: "app\"1".into(),
            mode: "shares".into(),
            balancing: "dwepc".into(),
            reason: "active".into(),
            sample_age_ms: Some(1500),
            servers: 1,
            mapped: 1,
            model: UpstreamModel::Shares {
                cost: Some([100.0, f64::NAN, 2.0, f64::NAN]),
                rate: 40.0,
                guard_rejections: 3,
            },
            peers: vec![PeerStatus {
                name: "127.0.0.2:80".into(),
                server: "app.test:80".into(),
                vm: Some("web-1".into()),
                mapping: crate::shared::Mapping::Mapped,
                requests: 7,
                cpu_ready_pct: 2.5,
                capacity: [4000.0, 2048.0, f64::NAN, f64::NAN],
                usage: [1000.0, 512.0, 30.0, f64::NAN],
                model: PeerModel::Shares(SharesPeer {
                    share: 0.25,
                    ..SharesPeer::default()
                }),
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
        let text = render(&[u], &[EndpointMetrics { name: "vc", stats }]);
        for line in [
            "# TYPE dwepc_upstream_counters_in_use gauge",
            "dwepc_upstream_counters_in_use{upstream=\"app\\\"1\"} 1",
            "dwepc_upstream_reason{upstream=\"app\\\"1\",reason=\"active\"} 1",
            "dwepc_upstream_reason{upstream=\"app\\\"1\",reason=\"stale\"} 0",
            "dwepc_upstream_sample_age_seconds{upstream=\"app\\\"1\"} 1.5",
            "dwepc_upstream_request_network_bytes{upstream=\"app\\\"1\"} 2048",
            "# TYPE dwepc_upstream_guard_rejections_total counter",
            "dwepc_peer_requests_total{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 7",
            "dwepc_peer_cpu_ready_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 0.025",
            "dwepc_peer_memory_capacity_bytes{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 2147483648",
            "dwepc_peer_share_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\"} 0.25",
            "dwepc_peer_utilization_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\",resource=\"cpu\"} 0.25",
            "dwepc_peer_utilization_ratio{upstream=\"app\\\"1\",server=\"app.test:80\",peer=\"127.0.0.2:80\",resource=\"mem\"} 0.25",
            "vm=\"web-1\",mapping=\"mapped\",backup=\"false\"} 1",
            "dwepc_vsphere_errors_total{vsphere=\"vc\",kind=\"timeout\"} 4",
            "dwepc_vsphere_errors_total{vsphere=\"vc\",kind=\"too_large\"} 0",
            "dwepc_vsphere_last_success_timestamp_seconds{vsphere=\"vc\"} 1700000000.5",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        // unknown values are left out, not written as NaN
        assert!(!text.contains("NaN"), "{text}");
        assert!(!text.contains("dwepc_peer_network_capacity_bytes_per_second"));
        assert!(!text.contains("dwepc_peer_allocation"));
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
