//! Decoding of vSphere SOAP answers: a bounded element tree ([`tree`])
//! and the decoders that walk it ([`decode`]).

pub mod decode;
pub mod tree;

pub use decode::*;
pub use tree::{parse, parse_from, Element, Limits, XmlError, MAX_DEPTH};
