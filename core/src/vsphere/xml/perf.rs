//! QueryPerf's answer, decoded as it is read: each `returnval` (one VM's
//! samples) goes straight into an [`EntityMetric`] through [`PerfStream`]
//! instead of into the element tree, so a poll of thousands of VMs builds
//! no tree of their tens of thousands of elements. The envelope around
//! them (and a fault instead of them) is still a tree, for the SOAP
//! client's checks. Nothing here panics on any input (see the fuzz
//! target).

use super::decode::{expect, parse_datetime_ms};
use super::tree::{parse_with, Element, Stream, XmlError, IN_MEMORY};

/// One series of a PerfEntityMetric.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub counter_id: i32,
    pub instance: String,
    /// One value per sample (in sampleInfo order); -1 marks a gap.
    pub values: Vec<i64>,
}

/// Samples of one entity.
#[derive(Clone, Debug, PartialEq)]
pub struct EntityMetric {
    pub entity: String,
    /// (timestamp ms since the epoch, interval s) per sample.
    pub samples: Vec<(u64, u32)>,
    pub series: Vec<Series>,
}

impl EntityMetric {
    /// The VM-level value (instance "") of counter `id` in sample `pos`;
    /// `None` when the series is missing or the sample is a gap (< 0).
    pub fn value(&self, id: i32, pos: usize) -> Option<i64> {
        self.series
            .iter()
            .find(|s| s.counter_id == id && s.instance.is_empty())
            .and_then(|s| s.values.get(pos).copied())
            .filter(|&x| x >= 0)
    }
}

/// Where an open element of a `returnval` sits (format "normal"):
/// `returnval/entity`, `returnval/sampleInfo/{timestamp,interval}`,
/// `returnval/value/id/{counterId,instance}`, `returnval/value/value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Returnval,
    Entity,
    SampleInfo,
    Timestamp,
    Interval,
    Series,
    Id,
    CounterId,
    Instance,
    Value,
    /// Anything else, and everything inside it: skipped.
    Other,
}

impl Tag {
    fn of(parent: Option<Tag>, name: &str) -> Tag {
        match (parent, name) {
            (None, _) => Tag::Returnval,
            (Some(Tag::Returnval), "entity") => Tag::Entity,
            (Some(Tag::Returnval), "sampleInfo") => Tag::SampleInfo,
            (Some(Tag::Returnval), "value") => Tag::Series,
            (Some(Tag::SampleInfo), "timestamp") => Tag::Timestamp,
            (Some(Tag::SampleInfo), "interval") => Tag::Interval,
            (Some(Tag::Series), "id") => Tag::Id,
            (Some(Tag::Series), "value") => Tag::Value,
            (Some(Tag::Id), "counterId") => Tag::CounterId,
            (Some(Tag::Id), "instance") => Tag::Instance,
            _ => Tag::Other,
        }
    }
}

/// The `returnval`s of a QueryPerfResponse, decoded as they are read.
/// The first `entity`, `timestamp`, `interval`, `id`, `counterId` and
/// `instance` of their parent count, as in a tree's first child by name;
/// a `returnval` whose entity is missing or empty and a series without a
/// counter are skipped; a value that is not a number is a gap (-1); a
/// sampleInfo without a timestamp and an interval refuses the answer.
/// Only the text of elements without children is read (what the format
/// has), the text after an element's last child where one has both.
#[derive(Debug, Default)]
pub struct PerfStream {
    out: Vec<EntityMetric>,
    open: Vec<Tag>,
    /// Text of the innermost open element since it, or its last child,
    /// opened.
    text: String,
    /// The returnval being read: its first entity (`Some("")` when
    /// empty), samples and series.
    entity: Option<String>,
    samples: Vec<(u64, u32)>,
    series: Vec<Series>,
    timestamp: Option<Option<u64>>,
    interval: Option<Option<u32>>,
    /// The series being read: its first id read, its counter, instance
    /// and values.
    id_read: bool,
    counter: Option<Option<i32>>,
    instance: Option<String>,
    values: Vec<i64>,
}

impl PerfStream {
    fn close_returnval(&mut self) {
        let samples = std::mem::take(&mut self.samples);
        let series = std::mem::take(&mut self.series);
        if let Some(entity) = self.entity.take().filter(|e| !e.is_empty()) {
            self.out.push(EntityMetric {
                entity,
                samples,
                series,
            });
        }
    }

    fn close_sample_info(&mut self) -> Result<(), XmlError> {
        match (
            self.timestamp.take().flatten(),
            self.interval.take().flatten(),
        ) {
            (Some(ts), Some(iv)) => {
                self.samples.push((ts, iv));
                Ok(())
            }
            _ => Err(XmlError::Unexpected("bad sampleInfo".into())),
        }
    }

    fn close_series(&mut self) {
        let values = std::mem::take(&mut self.values);
        let instance = self.instance.take().unwrap_or_default();
        if let Some(Some(counter_id)) = self.counter.take() {
            self.series.push(Series {
                counter_id,
                instance,
                values,
            });
        }
        self.id_read = false;
    }
}

impl Stream for PerfStream {
    fn claims(&self, path: &[Element], name: &str) -> bool {
        name == "returnval"
            && matches!(path, [envelope, body, response]
                if envelope.name == "Envelope" && body.name == "Body"
                    && response.name == "QueryPerfResponse")
    }

    fn open(&mut self, name: &str) -> Result<(), XmlError> {
        let tag = Tag::of(self.open.last().copied(), name);
        self.open.push(tag);
        self.text.clear();
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), XmlError> {
        self.text.push_str(text);
        Ok(())
    }

    fn close(&mut self) -> Result<(), XmlError> {
        // taken out and put back: its allocation serves the whole answer
        let mut buf = std::mem::take(&mut self.text);
        let text = buf.trim();
        let mut closed = Ok(());
        match self.open.pop() {
            Some(Tag::Returnval) => self.close_returnval(),
            Some(Tag::Entity) if self.entity.is_none() => {
                self.entity = Some(text.to_string());
            }
            Some(Tag::SampleInfo) => closed = self.close_sample_info(),
            Some(Tag::Timestamp) if self.timestamp.is_none() => {
                self.timestamp = Some(parse_datetime_ms(text));
            }
            Some(Tag::Interval) if self.interval.is_none() => {
                self.interval = Some(text.parse().ok());
            }
            Some(Tag::Series) => self.close_series(),
            Some(Tag::Id) => self.id_read = true,
            Some(Tag::CounterId) if !self.id_read && self.counter.is_none() => {
                self.counter = Some(text.parse().ok());
            }
            Some(Tag::Instance) if !self.id_read && self.instance.is_none() => {
                self.instance = Some(text.to_string());
            }
            Some(Tag::Value) => self.values.push(text.parse().unwrap_or(-1)),
            _ => {}
        }
        buf.clear();
        self.text = buf;
        closed
    }
}

/// The samples of a QueryPerfResponse whose `returnval`s `stream` took
/// while `root` (what else the answer held) was read.
pub fn perf(root: &Element, stream: PerfStream) -> Result<Vec<EntityMetric>, XmlError> {
    expect(root, "QueryPerfResponse")?;
    Ok(stream.out)
}

/// The samples of a QueryPerfResponse held in memory (tests, the fuzz
/// target and the benchmark; the client reads them from the wire).
pub fn parse_perf(input: &[u8]) -> Result<Vec<EntityMetric>, XmlError> {
    let mut stream = PerfStream::default();
    let root = parse_with(input, IN_MEMORY, &mut stream)?;
    perf(&root, stream)
}

/// The samples of `vms` VMs (`vm-0`, `vm-1`, …), `counters` counters
/// (ids 2, 3, …) and `samples` samples 20 s apart: what the decoder's tests
/// and benchmark write with [`perf_answer`].
#[doc(hidden)]
pub fn sample_metrics(vms: usize, counters: i32, samples: usize) -> Vec<EntityMetric> {
    (0..vms)
        .map(|vm| EntityMetric {
            entity: format!("vm-{vm}"),
            samples: (0..samples as u64)
                .map(|i| (1_795_327_800_000 + 20_000 * i, 20))
                .collect(),
            series: (0..counters)
                .map(|c| Series {
                    counter_id: c + 2,
                    instance: String::new(),
                    values: (0..samples as i64)
                        .map(|i| 1000 + 37 * i + c as i64)
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

/// A QueryPerfResponse holding `metrics`, as vCenter writes it (format
/// "normal"): what the decoder's tests and benchmark read.
#[doc(hidden)]
pub fn perf_answer(metrics: &[EntityMetric]) -> String {
    use std::fmt::Write;
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><QueryPerfResponse xmlns="urn:vim25">"#,
    );
    for m in metrics {
        let _ = write!(
            s,
            r#"<returnval xsi:type="PerfEntityMetric"><entity type="VirtualMachine">{}</entity>"#,
            quick_xml::escape::escape(&m.entity)
        );
        for &(ts, iv) in &m.samples {
            let _ = write!(
                s,
                "<sampleInfo><timestamp>{}</timestamp><interval>{iv}</interval></sampleInfo>",
                super::decode::format_datetime(ts)
            );
        }
        for v in &m.series {
            let _ = write!(
                s,
                r#"<value xsi:type="PerfMetricIntSeries"><id><counterId>{}</counterId><instance>{}</instance></id>"#,
                v.counter_id,
                quick_xml::escape::escape(&v.instance)
            );
            for x in &v.values {
                let _ = write!(s, "<value>{x}</value>");
            }
            s.push_str("</value>");
        }
        s.push_str("</returnval>");
    }
    s.push_str("</QueryPerfResponse></soapenv:Body></soapenv:Envelope>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsphere::xml::{parse_from, Limits, MAX_DEPTH};
    use proptest::prelude::*;

    const ENV_START: &str = r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#;
    const ENV_END: &str = "</soapenv:Body></soapenv:Envelope>";

    fn answer(inner: &str) -> Result<Vec<EntityMetric>, XmlError> {
        parse_perf(format!("{ENV_START}<QueryPerfResponse xmlns=\"urn:vim25\">{inner}</QueryPerfResponse>{ENV_END}").as_bytes())
    }

    #[test]
    fn perf_decoding() {
        let m = answer(
            r#"<returnval xsi:type="PerfEntityMetric"><entity type="VirtualMachine">vm-1</entity><sampleInfo><timestamp>2026-11-22T06:10:00Z</timestamp><interval>20</interval></sampleInfo><value xsi:type="PerfMetricIntSeries"><id><counterId>6</counterId><instance></instance></id><value>1200</value></value><value xsi:type="PerfMetricIntSeries"><id><counterId>24</counterId><instance/></id><value>-1</value></value></returnval>"#,
        )
        .unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].entity, "vm-1");
        assert_eq!(m[0].samples, vec![(1_795_327_800_000, 20)]);
        assert_eq!(m[0].series[0].values, vec![1200]);
        assert_eq!(m[0].series[1].counter_id, 24);
        assert_eq!(m[0].series[1].values, vec![-1]);
        // VM-level values by counter and sample; gaps and misses are None
        assert_eq!(m[0].value(6, 0), Some(1200));
        assert_eq!(m[0].value(24, 0), None);
        assert_eq!(m[0].value(6, 1), None);
        assert_eq!(m[0].value(7, 0), None);
    }

    #[test]
    fn what_an_answer_may_also_hold() {
        // indented, prefixed, with references, CDATA and elements the
        // decoder does not know; a returnval without an entity and a series
        // without a counter are skipped; only the first id counts
        let m = answer(
            "\n  <vim:returnval xmlns:vim=\"urn:vim25\">\n    <vim:entity type=\"VirtualMachine\"> vm&#45;2 </vim:entity>\n    <extra><entity>vm-9</entity><value>5</value></extra>\n    <sampleInfo><interval>20</interval><timestamp>2026-11-22T06:10:00Z</timestamp><timestamp>bad</timestamp></sampleInfo>\n    <value><id><counterId> 6 </counterId><instance>a&amp;b</instance></id><id><counterId>7</counterId></id><value><![CDATA[12]]></value><value>x</value></value>\n    <value><id><instance/></id><value>3</value></value>\n  </vim:returnval>\n  <returnval><sampleInfo><timestamp>2026-11-22T06:10:00Z</timestamp><interval>20</interval></sampleInfo></returnval>\n",
        )
        .unwrap();
        assert_eq!(
            m,
            [EntityMetric {
                entity: "vm-2".into(),
                samples: vec![(1_795_327_800_000, 20)],
                series: vec![Series {
                    counter_id: 6,
                    instance: "a&b".into(),
                    values: vec![12, -1],
                }],
            }]
        );
    }

    #[test]
    fn the_first_entity_counts_even_when_empty() {
        let m = answer("<returnval><entity/><entity>vm-1</entity></returnval><returnval><entity>vm-2</entity><entity>vm-3</entity></returnval>").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].entity, "vm-2");
    }

    #[test]
    fn a_bad_answer_is_refused() {
        let sample = |inner: &str| {
            answer(&format!(
                "<returnval><entity>vm-1</entity><sampleInfo>{inner}</sampleInfo></returnval>"
            ))
        };
        assert_eq!(
            sample("<timestamp>2026-11-22T06:10:00Z</timestamp>"),
            Err(XmlError::Unexpected("bad sampleInfo".into()))
        );
        assert!(sample("<timestamp>x</timestamp><interval>20</interval>").is_err());
        assert!(
            sample("<timestamp>2026-11-22T06:10:00Z</timestamp><interval>-2</interval>").is_err()
        );
        // not well-formed inside a returnval, or another answer
        assert!(answer("<returnval><entity>vm-1</value></returnval>").is_err());
        assert!(answer("<returnval><entity>vm-1</entity>").is_err());
        let other = format!("{ENV_START}<CurrentTimeResponse/>{ENV_END}");
        assert!(matches!(
            parse_perf(other.as_bytes()),
            Err(XmlError::Unexpected(_))
        ));
        let fault = format!(
            "{ENV_START}<soapenv:Fault><faultstring>no</faultstring></soapenv:Fault>{ENV_END}"
        );
        assert!(parse_perf(fault.as_bytes()).is_err());
    }

    #[test]
    fn the_tree_keeps_none_of_the_samples_and_the_limits_still_hold() {
        let metrics = sample_metrics(50, 5, 3);
        let text = perf_answer(&metrics);
        let mut stream = PerfStream::default();
        let root = parse_with(text.as_bytes(), IN_MEMORY, &mut stream).unwrap();
        let response = &root.children[0].children[0];
        assert_eq!(response.name, "QueryPerfResponse");
        assert!(response.children.is_empty());
        assert_eq!(perf(&root, stream).unwrap(), metrics);
        // the streamed elements count against the answer's budgets as the
        // tree's do: the least element count and text the tree needs
        let least = |ok: &dyn Fn(usize) -> bool| {
            let (mut lo, mut hi) = (0, text.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if ok(mid) {
                    hi = mid
                } else {
                    lo = mid + 1
                }
            }
            lo
        };
        let big = 1 << 20;
        let tree = |nodes, text_max| {
            parse_from(
                text.as_bytes(),
                Limits {
                    nodes,
                    text: text_max,
                },
            )
            .is_ok()
        };
        let streamed = |nodes, text_max| {
            let mut s = PerfStream::default();
            parse_with(
                text.as_bytes(),
                Limits {
                    nodes,
                    text: text_max,
                },
                &mut s,
            )
            .is_ok()
        };
        let nodes = least(&|n| tree(n, big));
        let bytes = least(&|t| tree(big, t));
        assert!(nodes > 50 * 30 && bytes > 50 * 100, "{nodes} {bytes}");
        assert!(streamed(nodes, big) && !streamed(nodes - 1, big));
        assert!(streamed(big, bytes) && !streamed(big, bytes - 1));
        // and the depth limit holds inside a returnval
        let deep = format!(
            "<returnval><entity>vm-1</entity>{}{}</returnval>",
            "<x>".repeat(MAX_DEPTH),
            "</x>".repeat(MAX_DEPTH)
        );
        assert!(matches!(answer(&deep), Err(XmlError::Malformed(_))));
    }

    fn any_metric() -> impl Strategy<Value = EntityMetric> {
        // what a text may hold; the decoder trims it, so none ends in a space
        let text = "[a-z0-9&<>]([a-z0-9&<>\"' -]{0,8}[a-z0-9&<>])?";
        (
            text,
            prop::collection::vec((0u64..4_000_000_000, any::<u32>()), 0..4),
            prop::collection::vec(
                (
                    any::<i32>(),
                    prop_oneof![Just(String::new()), text.prop_map(|s| s)],
                    prop::collection::vec(any::<i64>(), 0..4),
                ),
                0..4,
            ),
        )
            .prop_map(|(entity, samples, series)| EntityMetric {
                entity,
                samples: samples.into_iter().map(|(s, iv)| (s * 1000, iv)).collect(),
                series: series
                    .into_iter()
                    .map(|(counter_id, instance, values)| Series {
                        counter_id,
                        instance,
                        values,
                    })
                    .collect(),
            })
    }

    proptest! {
        #[test]
        fn an_answer_decodes_to_what_it_holds(
            metrics in prop::collection::vec(any_metric(), 0..6)
        ) {
            prop_assert_eq!(parse_perf(perf_answer(&metrics).as_bytes()).unwrap(), metrics);
        }
    }
}
