//! HTTP/1.1 requests as the emulated VMs and their control endpoint read
//! them: the head parsed, the body read and discarded.

use std::io;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Largest request body accepted (and discarded).
const MAX_BODY: u64 = 1 << 20;

/// What a request asks for.
pub(super) struct Request {
    pub(super) method: String,
    pub(super) target: String,
    pub(super) http10: bool,
    pub(super) keep_alive: bool,
    /// Answer this status and close.
    pub(super) error: Option<u16>,
}

/// The reason phrase of a status.
pub(super) fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

fn parse_head(head: &[u8]) -> (Request, u64) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let mut req = Request {
        method: String::new(),
        target: String::new(),
        http10: false,
        keep_alive: false,
        error: None,
    };
    let first: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
    let [method, target, version] = first.as_slice() else {
        req.error = Some(400);
        return (req, 0);
    };
    req.method = method.to_string();
    req.target = target.to_string();
    match *version {
        "HTTP/1.1" => {}
        "HTTP/1.0" => req.http10 = true,
        _ => {
            req.error = Some(505);
            return (req, 0);
        }
    }
    let (mut close, mut keep, mut len) = (false, false, 0u64);
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            req.error = Some(400);
            return (req, 0);
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("connection") {
            for tok in v.split(',').map(str::trim) {
                close |= tok.eq_ignore_ascii_case("close");
                keep |= tok.eq_ignore_ascii_case("keep-alive");
            }
        } else if k.eq_ignore_ascii_case("content-length") {
            match v.parse::<u64>() {
                Ok(n) if n <= MAX_BODY => len = n,
                Ok(_) => req.error = Some(413),
                Err(_) => req.error = Some(400),
            }
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            req.error = Some(501);
        }
    }
    req.keep_alive = req.error.is_none() && !close && (!req.http10 || keep);
    (req, len)
}

/// Reads one request (head and body, the body discarded). `None` = the
/// client closed between requests.
pub(super) async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> io::Result<Option<Request>> {
    let mut scanned = 0;
    loop {
        // Empty lines before a request are ignored (RFC 9112 §2.2).
        let skip = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        if skip > 0 {
            buf.drain(..skip);
            scanned = 0;
        }
        if let Some(end) = buf[scanned..]
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + scanned)
        {
            let (req, body) = parse_head(&buf[..end]);
            let total = end
                + 4
                + if req.error.is_some() {
                    0
                } else {
                    body as usize
                };
            while buf.len() < total {
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(Some(req));
        }
        if buf.len() > MAX_HEAD {
            let (mut req, _) = parse_head(b"");
            req.error = Some(431);
            return Ok(Some(req));
        }
        scanned = buf.len().saturating_sub(3);
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let (r, n) = parse_head(b"GET /t1/1k HTTP/1.1\r\nHost: x\r\nContent-Length: 5");
        assert!(r.keep_alive && r.error.is_none() && n == 5 && r.target == "/t1/1k");
        let (r, _) = parse_head(b"GET / HTTP/1.1\r\nConnection: Close");
        assert!(!r.keep_alive);
        let (r, _) = parse_head(b"GET / HTTP/1.0");
        assert!(!r.keep_alive && r.http10);
        let (r, _) = parse_head(b"GET / HTTP/1.0\r\nConnection: keep-alive");
        assert!(r.keep_alive);
        assert_eq!(parse_head(b"GET /").0.error, Some(400));
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked")
                .0
                .error,
            Some(501)
        );
    }
}
