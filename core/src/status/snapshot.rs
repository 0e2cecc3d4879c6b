//! An upstream's status at one instant, from what the module's
//! configuration says of it and what its zone holds.

use super::document::{PeerStatus, UpstreamStatus};
use crate::conf::UpstreamConf;
use crate::zone::{Mapping, UpstreamZone};

/// What the snapshot needs of one peer slot besides the zone.
#[derive(Clone, Debug)]
pub struct PeerMeta<'a> {
    /// `ip:port` (a spare slot: its server's).
    pub name: &'a str,
    /// The `server` directive's address as written.
    pub server: &'a str,
    pub backup: bool,
    /// A spare slot of a `resolve` server: shown only while an address
    /// holds it, under that address.
    pub spare: bool,
}

/// What the snapshot needs of one upstream besides the zone.
#[derive(Clone, Debug)]
pub struct UpstreamMeta<'a> {
    pub name: &'a str,
    pub conf: &'a UpstreamConf,
    /// The endpoint's name (None: no counters for this upstream).
    pub vsphere: Option<&'a str>,
    pub peers: Vec<PeerMeta<'a>>,
}

/// The status of one upstream at `now_ms` from its configuration and its
/// zone (`None` before the zone exists).
pub fn snapshot(
    u: &UpstreamMeta<'_>,
    zone: Option<UpstreamZone<'_>>,
    now_ms: u64,
) -> UpstreamStatus {
    let (window, sample_end) = zone.map(|s| s.window()).unwrap_or((0, 0));
    let comparison = u.conf.mode.comparison(&u.conf.tuning);
    let own = !comparison.needs_counters();
    let usable = zone.is_some_and(|s| s.usable(now_ms));
    let balancing = match (zone, u.conf.observe) {
        (_, Some(o)) => o.name(),
        (None, _) => "round_robin",
        (Some(_), _) if usable && !own => "dwepc",
        (Some(_), _) if comparison.now(usable).is_some() => "response_times",
        (Some(_), _) => "round_robin",
    };
    let reason = match zone {
        // a pick of the module's own that needs no counters
        Some(_) if own => "active",
        _ if u.vsphere.is_none() => "no_endpoint",
        Some(s) => s.reason(now_ms).name(),
        None => "no_zone",
    };
    let peers: Vec<PeerStatus> = u
        .peers
        .iter()
        .enumerate()
        .filter_map(|(i, p)| peer(u, p, i, zone, usable))
        .collect();
    // `choices=`, for a mode that takes it, and how many peers a pick over
    // the primary servers draws now, as the request path decides it
    // (`Comparison::drawn`, at most the list): only while counters drive
    // the pick (a comparison per share; not in observe mode), and not for
    // a single peer (all there is to compare). The list's size is the
    // primary servers shown (an address that left a `resolve` name counts
    // until its requests in flight end and its slot is given back).
    let choices = u
        .conf
        .mode
        .options()
        .contains(&"choices")
        .then_some(u.conf.tuning.choices);
    let primaries = peers.iter().filter(|p| !p.backup).count();
    let drawn = choices
        .filter(|_| balancing == "dwepc" && primaries > 1)
        .and_then(|c| comparison.drawn(c, primaries))
        .map(|d| d.min(primaries) as u64);
    UpstreamStatus {
        servers: peers.len() as u64,
        mapped: peers
            .iter()
            .filter(|p| p.mapping == Mapping::Mapped)
            .count() as u64,
        name: u.name.to_string(),
        mode: u.conf.mode.name().into(),
        balancing: balancing.into(),
        observe: u.conf.observe.map(|o| o.name().to_string()),
        choices: choices.map(|c| c.name()),
        drawn,
        reason: reason.into(),
        vsphere: u.vsphere.map(str::to_string),
        window,
        window_size: u.conf.tuning.window as u64,
        sample_age_ms: (sample_end > 0).then(|| now_ms.saturating_sub(sample_end)),
        model: u.conf.mode.upstream_fields(zone),
        peers,
    }
}

/// Slot `i`'s status (`None` for a spare slot no address holds).
fn peer(
    u: &UpstreamMeta<'_>,
    p: &PeerMeta<'_>,
    i: usize,
    zone: Option<UpstreamZone<'_>>,
    usable: bool,
) -> Option<PeerStatus> {
    let name = if p.spare {
        let s = zone?;
        if s.slot_ident(i) == 0 {
            return None;
        }
        s.slot_addr(i)
            .map_or_else(|| p.name.to_string(), |a| a.to_string())
    } else {
        p.name.to_string()
    };
    let info = zone.map(|s| s.peer_info(i));
    let nan4 = [f64::NAN; 4];
    let (mapping, vm) = zone.map_or((Mapping::Pending, None), |s| s.mapping(i));
    Some(PeerStatus {
        name,
        server: p.server.to_string(),
        backup: p.backup,
        vm,
        mapping,
        capacity: info.map_or(nan4, |x| x.capacity),
        usage: info.map_or(nan4, |x| x.usage),
        requests: info.map_or(0, |x| x.total),
        in_flight: info.map_or(0, |x| x.in_flight),
        failed: info.map_or(0, |x| x.failed),
        cpu_ready_pct: info.map_or(f64::NAN, |x| x.cpu_ready_pct),
        got_share: info.map_or(f64::NAN, |x| x.got_share),
        model: u.conf.mode.peer_fields(info.as_ref(), usable),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Field;

    /// The shares mode's fields of a peer that the test reads.
    struct SharesView {
        share: f64,
        limit: u64,
    }

    #[test]
    fn snapshot_reads_the_zone_and_hides_free_spare_slots() {
        use crate::zone::UpstreamZone;
        let conf = crate::conf::UpstreamConf::default();
        let peer = |name: &'static str, spare: bool| PeerMeta {
            name,
            server: if spare { "app.test:80" } else { name },
            backup: false,
            spare,
        };
        let meta = UpstreamMeta {
            name: "app",
            conf: &conf,
            vsphere: Some("vc"),
            peers: vec![
                peer("127.0.0.1:80", false),
                peer("app.test:80", true),
                peer("app.test:80", true),
            ],
        };
        // no zone yet
        let st = snapshot(&meta, None, 1000);
        assert_eq!(
            (st.reason.as_str(), st.balancing.as_str()),
            ("no_zone", "round_robin")
        );
        assert_eq!(st.peers.len(), 1);
        let z = crate::zone::test_words(3);
        let sh = UpstreamZone::new(&z, 3).unwrap();
        sh.init(1);
        let a = "127.0.0.2:80".parse().unwrap();
        assert_eq!(sh.claim(&[1, 2], 7, Some(a), |_| false), Some(1));
        sh.count(1);
        sh.apply_shares(&[0.5, 0.5, 0.0], &[4, 4, 0], 5000, 1000);
        let st = snapshot(&meta, Some(sh), 2000);
        assert_eq!(st.balancing, "dwepc");
        let names: Vec<&str> = st.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:80", "127.0.0.2:80"]);
        assert_eq!(st.peers[1].server, "app.test:80");
        let shares = |p: &PeerStatus| SharesView {
            share: p.model.get("share").map_or(f64::NAN, |f| f.value(None)),
            limit: match p.model.get("limit") {
                Some(Field::Limit(l)) => *l,
                m => panic!("{m:?}"),
            },
        };
        assert_eq!(
            (
                st.peers[1].requests,
                st.peers[1].in_flight,
                shares(&st.peers[1]).limit
            ),
            (1, 1, 4)
        );
        assert!((shares(&st.peers[1]).share - 0.5).abs() < 1e-9);
        // stale: shares are not shown as in force; the default pick goes on
        // by response times
        let st = snapshot(&meta, Some(sh), 9000);
        assert_eq!(st.balancing, "response_times");
        assert!(shares(&st.peers[0]).share.is_nan() && shares(&st.peers[0]).limit == 0);
        // no endpoint wins over every other reason
        let meta = UpstreamMeta {
            vsphere: None,
            ..meta
        };
        assert_eq!(snapshot(&meta, Some(sh), 2000).reason, "no_endpoint");
    }

    /// `choices=` as written, and how many peers a pick draws now: only
    /// while counters drive a comparison per share, `auto` above its
    /// threshold of primary servers, never more than the list.
    #[test]
    fn snapshot_shows_choices_and_what_a_pick_draws() {
        use crate::conf::parse_upstream;
        use crate::policy::pick::draw::AUTO_DRAW_ABOVE;
        use crate::zone::UpstreamZone;
        let names: Vec<String> = (0..AUTO_DRAW_ABOVE + 2)
            .map(|i| format!("10.0.{}.{}:80", i / 250, i % 250 + 1))
            .collect();
        // the first `primaries` servers primaries, one backup after them
        let st = |args: &[&str], primaries: usize, now_ms: u64| {
            let conf = parse_upstream(args).unwrap();
            let peers: Vec<PeerMeta> = names[..=primaries]
                .iter()
                .enumerate()
                .map(|(i, n)| PeerMeta {
                    name: n,
                    server: n,
                    backup: i == primaries,
                    spare: false,
                })
                .collect();
            let n = peers.len();
            let meta = UpstreamMeta {
                name: "app",
                conf: &conf,
                vsphere: Some("vc"),
                peers,
            };
            let z = crate::zone::test_words(n);
            let zone = UpstreamZone::new(&z, n).unwrap();
            zone.init(1);
            zone.apply_shares(&vec![1.0 / n as f64; n], &vec![4; n], 5000, 1000);
            let st = snapshot(&meta, Some(zone), now_ms);
            (st.choices, st.drawn)
        };
        let all = Some("all".to_string());
        let auto = Some("auto".to_string());
        let two = Some("2".to_string());
        let big = AUTO_DRAW_ABOVE + 1;
        // the default is auto
        assert_eq!(st(&[], big, 2000), (auto.clone(), Some(8)));
        assert_eq!(st(&["choices=all"], big, 2000), (all, None));
        // auto: eight drawn above the threshold (backups not counted)
        assert_eq!(
            st(&["choices=auto"], AUTO_DRAW_ABOVE, 2000),
            (auto.clone(), None)
        );
        assert_eq!(st(&["choices=auto"], big, 2000), (auto.clone(), Some(8)));
        // a number: drawn at any size above one peer, at most the list
        assert_eq!(st(&["choices=2"], 3, 2000), (two.clone(), Some(2)));
        assert_eq!(st(&["choices=8"], 3, 2000), (Some("8".into()), Some(3)));
        assert_eq!(st(&["choices=2"], 1, 2000), (two.clone(), None));
        for pick in ["pick=least_conn", "pick=expected_delay"] {
            assert_eq!(st(&["choices=2", pick], 3, 2000), (two.clone(), Some(2)));
        }
        // nothing drawn without usable counters, or while nginx picks
        assert_eq!(st(&["choices=auto"], big, 9000), (auto, None));
        assert_eq!(
            st(&["choices=2", "observe=on"], 3, 2000),
            (two.clone(), None)
        );
        assert_eq!(
            st(&["choices=2", "observe=round_robin"], 3, 2000),
            (two, None)
        );
        // a mode without choices=: none shown
        for mode in [
            "mode=paper",
            "mode=wlc",
            "mode=least_time",
            "mode=random_two",
        ] {
            assert_eq!(st(&[mode], big, 2000), (None, None), "{mode}");
        }
    }
}
