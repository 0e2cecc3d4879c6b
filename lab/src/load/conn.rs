//! A client connection written by hand: one request at a time, the whole
//! answer read (Content-Length, chunked, or until the connection closes).

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::shared::Partial;
use super::NO_BACKEND;

/// Per-connection buffer; also the largest response head or chunk-size line.
const BUF: usize = 16 * 1024;

/// A client connection with its read buffer.
pub(super) struct Conn {
    s: TcpStream,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    /// Some byte of the current answer arrived.
    pub(super) got: bool,
}

/// What the response head says.
struct Head {
    status: u16,
    http10: bool,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    backend: u8,
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed")
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn parse_head(h: &[u8], backends: &[String]) -> io::Result<Head> {
    let mut lines = h.split(|&b| b == b'\n').map(trim);
    let sl = lines.next().unwrap_or_default();
    if sl.len() < 12 || !sl.starts_with(b"HTTP/1.") || sl[8] != b' ' {
        return Err(bad("bad status line"));
    }
    let digits = &sl[9..12];
    if !digits.iter().all(u8::is_ascii_digit) || sl.get(12).is_some_and(|&b| b != b' ') {
        return Err(bad("bad status code"));
    }
    let mut head = Head {
        status: digits.iter().fold(0u16, |a, &d| a * 10 + (d - b'0') as u16),
        http10: sl[7] == b'0',
        length: None,
        chunked: false,
        close: false,
        keep_alive: false,
        backend: NO_BACKEND,
    };
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (trim(&line[..colon]), trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let v = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| bad("bad content-length"))?;
            head.length = Some(v);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.split(|&b| b == b',').next_back().map(trim);
            head.chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in value.split(|&b| b == b',').map(trim) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"x-backend") {
            head.backend = backends
                .iter()
                .position(|b| b.as_bytes() == value)
                .map_or(NO_BACKEND, |i| i as u8);
        }
    }
    Ok(head)
}

impl Conn {
    pub(super) async fn connect(a: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect(a).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            s,
            buf: vec![0u8; BUF].into_boxed_slice(),
            lo: 0,
            hi: 0,
            got: false,
        })
    }

    /// Reads more; Ok(0) at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.lo == self.hi {
            self.lo = 0;
            self.hi = 0;
        } else if self.hi == self.buf.len() {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == self.buf.len() {
            return Err(bad("line or head too long"));
        }
        let n = self.s.read(&mut self.buf[self.hi..]).await?;
        self.hi += n;
        if n > 0 {
            self.got = true;
        }
        Ok(n)
    }

    async fn fill_some(&mut self) -> io::Result<()> {
        match self.fill().await? {
            0 => Err(eof()),
            _ => Ok(()),
        }
    }

    /// One request and its whole answer; Ok(the connection can be reused).
    pub(super) async fn exchange(
        &mut self,
        req: &[u8],
        backends: &[String],
        p: &mut Partial,
    ) -> io::Result<bool> {
        self.got = false;
        if self.lo != self.hi {
            return Err(bad("unsolicited data"));
        }
        self.s.write_all(req).await?;
        let head = loop {
            let len = loop {
                if let Some(i) = find(&self.buf[self.lo..self.hi], b"\r\n\r\n") {
                    break i + 4;
                }
                self.fill_some().await?;
            };
            let head = parse_head(&self.buf[self.lo..self.lo + len], backends)?;
            self.lo += len;
            // interim answers (100 Continue, 103 Early Hints)
            if (100..200).contains(&head.status) && head.status != 101 {
                continue;
            }
            break head;
        };
        p.status = head.status;
        p.backend = head.backend;
        let mut keep = !head.close && (!head.http10 || head.keep_alive);
        if head.status == 204 || head.status == 304 || head.status == 101 {
            keep &= head.status != 101;
        } else if head.chunked {
            self.chunked_body(p).await?;
        } else if let Some(n) = head.length {
            self.skip(n, p).await?;
        } else {
            // delimited by the end of the connection
            loop {
                p.bytes += (self.hi - self.lo) as u64;
                self.lo = self.hi;
                if self.fill().await? == 0 {
                    break;
                }
            }
            keep = false;
        }
        Ok(keep && self.lo == self.hi)
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64, p: &mut Partial) -> io::Result<()> {
        loop {
            let k = ((self.hi - self.lo) as u64).min(n);
            self.lo += k as usize;
            p.bytes += k;
            n -= k;
            if n == 0 {
                return Ok(());
            }
            self.fill_some().await?;
        }
    }

    /// Length of the next line at `lo` (without its CRLF, not consumed).
    async fn line(&mut self) -> io::Result<usize> {
        loop {
            if let Some(i) = find(&self.buf[self.lo..self.hi], b"\r\n") {
                return Ok(i);
            }
            self.fill_some().await?;
        }
    }

    async fn chunked_body(&mut self, p: &mut Partial) -> io::Result<()> {
        loop {
            let len = self.line().await?;
            let l = &self.buf[self.lo..self.lo + len];
            let hex = trim(l.split(|&b| b == b';').next().unwrap_or_default());
            if hex.is_empty() || hex.len() > 15 {
                return Err(bad("bad chunk size"));
            }
            let mut size = 0u64;
            for &d in hex {
                let v = (d as char)
                    .to_digit(16)
                    .ok_or_else(|| bad("bad chunk size"))?;
                size = size * 16 + v as u64;
            }
            self.lo += len + 2;
            if size == 0 {
                // trailer fields up to an empty line
                loop {
                    let len = self.line().await?;
                    self.lo += len + 2;
                    if len == 0 {
                        return Ok(());
                    }
                }
            }
            self.skip(size, p).await?;
            if self.line().await? != 0 {
                return Err(bad("no CRLF after chunk"));
            }
            self.lo += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["a".into(), "b".into()]
    }

    #[test]
    fn head() {
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-Backend:  b \r\nConnection: keep-alive, Close\r\n\r\n",
            &names(),
        )
        .unwrap();
        assert_eq!(
            (h.status, h.length, h.chunked, h.close, h.backend, h.http10),
            (200, Some(12), false, true, 1, false)
        );
        let h = parse_head(
            b"HTTP/1.0 404 Not Found\r\ntransfer-encoding: gzip, chunked\r\nx-backend: c\r\n\r\n",
            &names(),
        )
        .unwrap();
        assert_eq!(
            (h.status, h.length, h.chunked, h.close, h.backend, h.http10),
            (404, None, true, false, NO_BACKEND, true)
        );
        let h = parse_head(b"HTTP/1.1 502\r\n\r\n", &names()).unwrap();
        assert_eq!(h.status, 502);
        assert!(parse_head(b"HTTP/1.1 20 OK\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"HTTP/1.1 2000 OK\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"SSH-2.0-x\r\n\r\n", &names()).is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", &names()).is_err());
    }
}
