//! The page model of the emulated VMs: what each path costs in CPU and what
//! body it answers.

use std::sync::OnceLock;

/// The page model: CPU cost (MHz·ms) and body size of a path (query string
/// ignored); `None` = 404.
///
/// * T1 static `/t1/{1k,16k,64k,512k,1m}`: 1 MHz·ms + 0.05 MHz·ms per KB.
/// * T2 dynamic `/t2/1` … `/t2/5`: 50^k additions, 0.002 MHz·ms each.
/// * `/health`: no cost.
pub fn cost_mhz_ms(path: &str) -> Option<(f64, u64)> {
    page(path).map(|p| (p.cost, p.body.len() as u64))
}

/// T1 page sizes, bytes.
pub const T1_PAGES: [(&str, usize); 5] = [
    ("1k", 1024),
    ("16k", 16 * 1024),
    ("64k", 64 * 1024),
    ("512k", 512 * 1024),
    ("1m", 1024 * 1024),
];

pub(super) struct Page {
    pub(super) cost: f64,
    pub(super) body: Body,
}

pub(super) enum Body {
    Filler(usize),
    Text(String),
}

impl Body {
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Filler(n) => *n,
            Body::Text(s) => s.len(),
        }
    }

    pub(super) fn bytes(&self) -> &[u8] {
        match self {
            Body::Filler(n) => &filler()[..*n],
            Body::Text(s) => s.as_bytes(),
        }
    }
}

pub(super) fn filler() -> &'static [u8] {
    static FILLER: OnceLock<Vec<u8>> = OnceLock::new();
    FILLER.get_or_init(|| {
        let line = b"dwepc-lab emulated VM static page filler, 64 bytes per line....\n";
        line.iter().copied().cycle().take(1024 * 1024).collect()
    })
}

/// The path part of a request target (no query, no fragment, no scheme and
/// host in absolute form).
pub(super) fn path_of(target: &str) -> &str {
    let t = target.split(['?', '#']).next().unwrap_or("");
    match t
        .strip_prefix("http://")
        .or_else(|| t.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => t,
    }
}

pub(super) fn page(target: &str) -> Option<Page> {
    let path = path_of(target);
    if path == "/health" {
        return Some(Page {
            cost: 0.0,
            body: Body::Text("ok\n".to_string()),
        });
    }
    if let Some(size) = path.strip_prefix("/t1/") {
        let (_, n) = T1_PAGES.iter().find(|(s, _)| *s == size)?;
        return Some(Page {
            cost: 1.0 + 0.05 * (*n as f64 / 1024.0),
            body: Body::Filler(*n),
        });
    }
    if let Some(k) = path.strip_prefix("/t2/") {
        let k: u32 = match k {
            "1" | "2" | "3" | "4" | "5" => k.parse().ok()?,
            _ => return None,
        };
        let additions = 50u64.pow(k);
        // A small real computation; the cost itself is emulated.
        let result: u64 = (1..=50 * u64::from(k)).sum();
        return Some(Page {
            cost: additions as f64 * 0.002,
            body: Body::Text(format!(
                "t2 k={k} additions={additions} sample_sum(1..={})={result}\n",
                50 * k
            )),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_costs() {
        assert_eq!(cost_mhz_ms("/t1/1k"), Some((1.05, 1024)));
        assert_eq!(cost_mhz_ms("/t1/1m?x=1").unwrap(), (1.0 + 51.2, 1 << 20));
        let (c5, b5) = cost_mhz_ms("/t2/5").unwrap();
        assert!((c5 - 625_000.0).abs() < 1e-6, "{c5}");
        assert!((50..200).contains(&b5), "{b5}");
        let (c1, _) = cost_mhz_ms("/t2/1").unwrap();
        assert!((c1 - 0.1).abs() < 1e-12);
        assert!((c5 / c1 - 6.25e6).abs() < 1e-3);
        assert_eq!(cost_mhz_ms("/health").map(|c| c.0), Some(0.0));
        for p in [
            "/",
            "/t1/2k",
            "/t2/0",
            "/t2/6",
            "/t2/05",
            "/t1/1k/",
            "/health/x",
        ] {
            assert_eq!(cost_mhz_ms(p), None, "{p}");
        }
        assert_eq!(cost_mhz_ms("http://h:1/t1/16k").map(|c| c.1), Some(16384));
        assert_eq!(
            page("/t2/3").unwrap().body.len() as u64,
            cost_mhz_ms("/t2/3").unwrap().1
        );
    }
}
