//! Where each word of an upstream's zone lives: the header, the hot words
//! the pick reads or counts in (packed, four per peer, so a scan of many
//! peers touches few cache lines; the per-share picks read the share word
//! through each worker's copy of it), and the cold words only the
//! collector and the status pages touch.
//!
//! ```text
//! header   HEADER words: magic, n, names hash, valid-until, W[4],
//!          newest sample end, applied, window, reason, generation,
//!          epoch, cost per request[4], rate, rejections, slot generation
//! hot      n x 4 words: target (paper), sent, done, share|limit
//! cold     n x COLD words: base, alloc, capacity[4], Q[4], flags, CPU
//!          ready, target share, background[4], effective CPU, failed,
//!          identity, address[2], port, mapping, VM name[10], usage[4],
//!          slow start's beginning, share of the requests it got
//! ```
//!
//! The layout's version is in its magic word: a zone of another layout
//! (an older module's, kept over a reload) is cleared, not misread.

use crate::resources::R;

/// "dwepc_v7": the layout version.
pub(super) const MAGIC: u64 = 0x6477_6570_635f_7637;

/// Words in the header.
pub const HEADER: usize = 24;
/// Words per peer: 4 hot + 40 cold.
pub const PEER: usize = 44;
pub(super) const HOT: usize = 4;
pub(super) const COLD: usize = PEER - HOT;

pub(super) const H_MAGIC: usize = 0;
pub(super) const H_N: usize = 1;
pub(super) const H_HASH: usize = 2;
pub(super) const H_VALID_UNTIL: usize = 3;
pub(super) const H_W: usize = 4; // R words
pub(super) const H_SAMPLE_END: usize = 8;
pub(super) const H_APPLIED: usize = 9;
pub(super) const H_WINDOW: usize = 10;
pub(super) const H_REASON: usize = 11;
pub(super) const H_GENERATION: usize = 12;
pub(super) const H_EPOCH: usize = 13;
pub(super) const H_COST: usize = 14; // R words
pub(super) const H_RATE: usize = 18;
pub(super) const H_REJECTED: usize = 19;
pub(super) const H_SLOTS: usize = 20;

// hot words
pub(super) const P_TARGET: usize = 0;
pub(super) const P_TOTAL: usize = 1;
pub(super) const P_DONE: usize = 2;
pub(super) const P_SHARE: usize = 3;
// cold words (offsets from the peer's cold slot, after the hot ones)
pub(super) const P_BASE: usize = HOT;
pub(super) const P_ALLOC: usize = HOT + 1;
pub(super) const P_CAP: usize = HOT + 2; // R words
pub(super) const P_Q: usize = HOT + 6; // R words
pub(super) const P_FLAGS: usize = HOT + 10;
pub(super) const P_READY: usize = HOT + 11;
pub(super) const P_TSHARE: usize = HOT + 12;
pub(super) const P_BG: usize = HOT + 13; // R words
pub(super) const P_ECPU: usize = HOT + 17;
pub(super) const P_FAILED: usize = HOT + 18;
pub(super) const P_IDENT: usize = HOT + 19;
pub(super) const P_ADDR: usize = HOT + 20; // 2 words
pub(super) const P_PORT: usize = HOT + 22;
pub(super) const P_MAP: usize = HOT + 23;
pub(super) const P_VM: usize = HOT + 24; // VM_NAME_WORDS words
pub(super) const P_USE: usize = P_VM + VM_NAME_WORDS; // R words
pub(super) const P_RAMP: usize = P_USE + R;
pub(super) const P_GOT: usize = P_RAMP + 1;

/// Words of a peer's VM name (vSphere names are at most 80 characters).
pub(super) const VM_NAME_WORDS: usize = 10;
const _: () = assert!(P_GOT + 1 == PEER, "peer words out of step with PEER");
const _: () = assert!(H_SLOTS < HEADER, "header words out of step with HEADER");

/// Peer flag: the peer's VM was found and reports counters.
pub const FLAG_COUNTERS: u64 = 1;

/// Words needed for `n` peers.
pub fn words(n: usize) -> usize {
    HEADER + n * PEER
}

/// Bytes needed for `n` peers.
pub fn bytes(n: usize) -> usize {
    words(n) * 8
}

/// FNV-1a over names (each ended by a 0 byte): recognises an unchanged
/// upstream after a reload (its peers' names), a peer's identity and an
/// endpoint's record.
pub fn names_hash<'a>(names: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for name in names {
        for b in name.bytes().chain(std::iter::once(0)) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_order_and_split() {
        assert_ne!(names_hash(["a", "b"]), names_hash(["b", "a"]));
        assert_ne!(names_hash(["ab"]), names_hash(["a", "b"]));
    }
}
