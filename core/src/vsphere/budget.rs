//! What one vSphere answer may hold ([`Budget`]), and the reader that
//! holds a body to it and to the call's deadline ([`Capped`]): a hostile or
//! broken server that answers without end, with millions of elements, or a
//! byte at a time cannot hold the collector thread or grow its memory.

/// VMs per inventory page (RetrievePropertiesEx `maxObjects`): small
/// pages keep every answer, and so the memory a hostile answer can take,
/// small.
pub const VMS_PER_PAGE: usize = 50;

/// VMs per QueryPerf call: an endpoint's VMs are queried in batches of at
/// most this many, so one answer (a whole window of samples for each)
/// stays a few MB however many VMs the upstreams map to.
pub const VMS_PER_QUERY: usize = 250;

/// The most one answer may hold: body bytes read and elements parsed
/// (text is bounded by the body). Sized per call from what the call can
/// legitimately return, with a margin; the parsed tree then takes at most
/// about `nodes × (size_of::<xml::Node>() + 64) + body` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub body: usize,
    pub nodes: usize,
}

impl Budget {
    /// RetrieveServiceContent, Login, Logout, CurrentTime,
    /// CreateContainerView, QueryPerfProviderSummary: tens of elements.
    pub const SMALL: Budget = Budget {
        body: 64 << 10,
        nodes: 2_000,
    };
    /// The `perfCounter` catalog: about 22 elements and 650 bytes per
    /// counter; a vCenter has some hundreds (vcsim about 400), 1,500 fit.
    pub const CATALOG: Budget = Budget {
        body: 2 << 20,
        nodes: 40_000,
    };
    /// One inventory page of [`VMS_PER_PAGE`] VMs: up to 500 elements and
    /// 20 KB per VM (a VM with several NICs and addresses in `guest.net`
    /// has about 250 and 8 KB).
    pub const PAGE: Budget = Budget {
        body: 1 << 20,
        nodes: 25_000,
    };

    /// QueryPerf of `vms` VMs, `counters` counters, `samples` samples:
    /// per VM 2 + 3 elements per sample (sampleInfo) + per counter
    /// 4 + one per sample; about 95 bytes per sampleInfo and 28 per value;
    /// three times that, plus room for the envelope.
    pub fn query_perf(vms: usize, counters: usize, samples: usize) -> Budget {
        let nodes = 2 + 3 * samples + counters * (4 + samples);
        let body = 300 + 95 * samples + counters * (150 + 28 * samples);
        Budget {
            body: 3 * vms * body + (16 << 10),
            nodes: 3 * vms * nodes + 200,
        }
    }
}

/// Reads at most `cap` bytes of a body, and stops at `deadline`: a server
/// that sends without end, or a byte at a time, cannot hold the caller
/// past either.
pub(crate) struct Capped<R> {
    pub(crate) inner: R,
    pub(crate) read: usize,
    pub(crate) cap: usize,
    pub(crate) deadline: std::time::Instant,
}

impl<R> Capped<R> {
    fn too_large(&self) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("more than {} KB", self.cap / 1024),
        )
    }
}

impl<R: std::io::Read> std::io::Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if std::time::Instant::now() > self.deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the answer did not end in time",
            ));
        }
        if self.read > self.cap {
            return Err(self.too_large());
        }
        // one byte past the cap tells a body of exactly `cap` from a larger one
        let room = (self.cap + 1 - self.read).min(buf.len());
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n;
        if self.read > self.cap {
            return Err(self.too_large());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_perf_budget_fits_its_answer_and_grows_with_it() {
        let small = Budget::query_perf(5, 5, 30);
        let big = Budget::query_perf(2000, 5, 30);
        assert!(small.body < 200 << 10 && small.nodes < 10_000, "{small:?}");
        assert!(big.body > 1000 * small.body / 5 / 2, "{big:?}");
        // a real answer's size per VM: sampleInfo and values of 30 samples
        let per_vm = 30 * 90 + 5 * 30 * 20;
        assert!(small.body > 5 * per_vm * 2);
    }
}
