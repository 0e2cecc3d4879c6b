//! dwepc-core: everything of the dwepc balancer that needs no nginx types —
//! the DWEPC algorithm, request-count pairing, directive argument parsing and
//! the status document. The nginx module (`dwepc`, the crate at the root of
//! this workspace) is a thin FFI layer over it.

#![forbid(unsafe_code)]

pub mod algo;
pub mod collector;
pub mod conf;
pub mod counts;
pub mod linalg;
pub mod prometheus;
pub mod shared;
pub mod shares;
pub mod slots;
pub mod status;
pub mod vsphere;
