//! Decoding of vSphere SOAP answers: a bounded element tree ([`tree`]),
//! the decoders that walk it ([`decode`]), and QueryPerf's samples decoded
//! as they are read, beside the tree ([`perf`]).

pub mod decode;
pub mod perf;
pub mod tree;

pub use decode::*;
pub use perf::{parse_perf, perf, perf_answer, sample_metrics, EntityMetric, PerfStream, Series};
pub use tree::{
    parse, parse_from, parse_with, Element, Limits, NoStream, Stream, XmlError, MAX_DEPTH,
};
