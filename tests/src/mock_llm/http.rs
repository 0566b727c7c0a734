//! Just enough HTTP/1.1 for the mock: requests with `Content-Length` or chunked bodies,
//! keep-alive, responses with `Content-Length` or chunked streams.

use std::io::{self, BufRead, Write};

/// Largest request head (request line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A parsed request.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string without `?` (may be empty).
    pub query: String,
    /// HTTP/1.0 or HTTP/1.1.
    pub http10: bool,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http10 {
            conn.split(',').any(|t| t.trim() == "keep-alive")
        } else {
            !conn.split(',').any(|t| t.trim() == "close")
        }
    }

    /// Value of a query parameter (not percent-decoded beyond `%XX` basics).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A request that could not be parsed (answered 400, then the connection closes).
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    Bad(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn read_line_capped(r: &mut impl BufRead, budget: &mut usize) -> Result<String, ReadError> {
    let mut buf = Vec::new();
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            if buf.is_empty() {
                return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            return Err(ReadError::Bad(
                "connection closed inside the request head".into(),
            ));
        }
        let (take, done) = match avail.iter().position(|&c| c == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if take > *budget {
            return Err(ReadError::Bad("request head too large".into()));
        }
        *budget -= take;
        buf.extend_from_slice(&avail[..take]);
        r.consume(take);
        if done {
            break;
        }
    }
    while buf.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
        buf.pop();
    }
    String::from_utf8(buf).map_err(|_| ReadError::Bad("request head is not UTF-8".into()))
}

/// Reads one request. `Ok(None)` on a clean end of stream before any byte. `on_continue`
/// is called when the client sent `Expect: 100-continue`.
pub(crate) fn read_request(
    r: &mut impl BufRead,
    mut on_continue: impl FnMut() -> io::Result<()>,
) -> Result<Option<Request>, ReadError> {
    let mut budget = MAX_HEAD;
    // Tolerate blank lines before a request (RFC 9112 §2.2).
    let line = loop {
        match read_line_capped(r, &mut budget) {
            Ok(l) if l.is_empty() => continue,
            Ok(l) => break l,
            Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v)) if parts.next().is_none() => (m, t, v),
        _ => return Err(ReadError::Bad(format!("bad request line {line:?}"))),
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(ReadError::Bad(format!("unsupported version {version:?}"))),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    loop {
        let l = read_line_capped(r, &mut budget)?;
        if l.is_empty() {
            break;
        }
        let (n, v) = l
            .split_once(':')
            .ok_or_else(|| ReadError::Bad(format!("bad header line {l:?}")))?;
        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        http10,
        headers,
        body: Vec::new(),
    };
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        on_continue()?;
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        req.body = read_chunked(r)?;
    } else if let Some(cl) = req.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| ReadError::Bad(format!("bad content-length {cl:?}")))?;
        if n > MAX_BODY {
            return Err(ReadError::Bad("request body too large".into()));
        }
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        req.body = body;
    }
    Ok(Some(req))
}

fn read_chunked(r: &mut impl BufRead) -> Result<Vec<u8>, ReadError> {
    let mut body = Vec::new();
    loop {
        let mut budget = 4096;
        let line = read_line_capped(r, &mut budget)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let n = usize::from_str_radix(size, 16)
            .map_err(|_| ReadError::Bad(format!("bad chunk size {line:?}")))?;
        if n == 0 {
            // Trailers, up to the blank line.
            let mut budget = MAX_HEAD;
            while !read_line_capped(r, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + n > MAX_BODY {
            return Err(ReadError::Bad("request body too large".into()));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(ReadError::Bad("chunk not followed by CRLF".into()));
        }
    }
}

/// Reason phrase of a status.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

/// The status line and headers of a response; `headers` must not hold `content-length`,
/// `transfer-encoding` or `connection` (added here).
pub(crate) fn head(
    status: u16,
    headers: &[(String, String)],
    body_len: Option<usize>,
    keep_alive: bool,
) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        h.push_str(n);
        h.push_str(": ");
        h.push_str(v);
        h.push_str("\r\n");
    }
    match body_len {
        Some(n) => h.push_str(&format!("content-length: {n}\r\n")),
        None => h.push_str("transfer-encoding: chunked\r\n"),
    }
    h.push_str(if keep_alive {
        "connection: keep-alive\r\n"
    } else {
        "connection: close\r\n"
    });
    h.push_str("\r\n");
    h.into_bytes()
}

/// A whole response with a `Content-Length` body, in one buffer.
pub(crate) fn full_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = head(status, headers, Some(body.len()), keep_alive);
    out.extend_from_slice(body);
    out
}

/// One chunk of a chunked body.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The last chunk of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Writes and flushes.
pub(crate) fn send(w: &mut impl Write, data: &[u8]) -> io::Result<()> {
    w.write_all(data)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_keep_alive() {
        let raw = b"POST /v1/messages?x=1&key=a%2Bb HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;ext\r\nde\r\n0\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        let mut r = io::BufReader::new(&raw[..]);
        let req = read_request(&mut r, || Ok(())).unwrap().unwrap();
        assert_eq!(req.path, "/v1/messages");
        assert_eq!(req.query_param("key").as_deref(), Some("a+b"));
        assert_eq!(req.body, b"abcde");
        assert!(req.keep_alive());
        let req = read_request(&mut r, || Ok(())).unwrap().unwrap();
        assert!(!req.keep_alive());
        assert!(read_request(&mut r, || Ok(())).unwrap().is_none());
    }
}
