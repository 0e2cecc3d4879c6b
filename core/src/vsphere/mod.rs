//! The vSphere side: a small SOAP client and its response decoders.

pub mod client;
pub mod xml;
