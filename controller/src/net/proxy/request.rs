//! Request parsing: the request head, the target (`CONNECT` or absolute-form URL) and the head forwarded to the origin.

use super::*;

/// A request head as read (before the target is interpreted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method.
    pub method: String,
    /// Request target, as sent.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Header lines, names as sent.
    pub headers: Vec<(String, String)>,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect {
        /// Host.
        host: Host,
        /// Port.
        port: u16,
    },
    /// An absolute-form `http://` request.
    Http {
        /// Host.
        host: Host,
        /// Port.
        port: u16,
        /// Path and query in origin form (`/` at least; no fragment).
        path: String,
    },
}

impl Target {
    /// Host and port.
    pub fn host_port(&self) -> (&Host, u16) {
        match self {
            Target::Connect { host, port } | Target::Http { host, port, .. } => (host, *port),
        }
    }
}

pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head: `head` is everything up to and including the blank line. Strict:
/// lines end in CRLF (a bare CR or LF is refused), no obs-fold, at most [`MAX_HEADERS`]
/// headers, `HTTP/1.0` or `HTTP/1.1`. The error is a short reason (it never quotes the input).
pub fn parse_head(head: &[u8]) -> std::result::Result<RequestHead, String> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("the request head does not end with an empty line (CRLF CRLF)")?;
    let mut lines = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    if lines
        .iter()
        .any(|l| l.contains(&b'\r') || l.contains(&b'\n'))
    {
        return Err("a line does not end in CRLF (bare CR or LF)".into());
    }
    if lines.len() > MAX_HEADERS + 1 {
        return Err(format!("more than {MAX_HEADERS} header lines"));
    }
    let rl = std::str::from_utf8(lines[0]).map_err(|_| "the request line is not ASCII")?;
    let parts: Vec<&str> = rl.split(' ').collect();
    if parts.len() != 3 {
        return Err("the request line is not METHOD SP TARGET SP VERSION".into());
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || method.len() > 32 || !method.bytes().all(is_tchar) {
        return Err("invalid method".into());
    }
    if target.is_empty()
        || target.len() > 8192
        || !target.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err("invalid request target".into());
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)".into());
    }
    let mut headers = Vec::with_capacity(lines.len() - 1);
    for line in &lines[1..] {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err("folded header lines (obs-fold) are not accepted".into());
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or("a header line has no ':'")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || name.len() > 256 || !name.iter().all(|b| is_tchar(*b)) {
            return Err("invalid header name".into());
        }
        if value
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err("control characters in a header value".into());
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches([' ', '\t'])
            .to_string();
        headers.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    })
}

pub(super) fn port_of(p: &str) -> std::result::Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a number from 1 to 65535".into());
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("the port must be a number from 1 to 65535".into()),
    }
}

pub(super) fn guard_reason(e: &SsrfError) -> String {
    match e {
        SsrfError::InvalidUrl { reason, .. } => reason.clone(),
        SsrfError::Userinfo { .. } => "userinfo (user@host) is not allowed".into(),
        SsrfError::UnsupportedScheme(_) => {
            "unsupported scheme (http only; https goes through CONNECT)".into()
        }
        other => other.to_string(),
    }
}

/// Interprets the request target: `CONNECT host:port` (authority form; IPv6 in brackets) or
/// an absolute `http://` URL (read by the SSRF guard's URL parser: no userinfo, IPv4 in every
/// form a resolver reads, no zone ids).
pub fn parse_target(head: &RequestHead) -> std::result::Result<Target, String> {
    let t = head.target.as_str();
    if head.method == "CONNECT" {
        if t.contains('@') {
            return Err("userinfo (user@host) is not allowed".into());
        }
        if t.contains(['/', '\\', '?', '#', '%']) {
            return Err("CONNECT takes host:port only".into());
        }
        let (h, p) = if t.starts_with('[') {
            let close = t.find(']').ok_or("unterminated [ipv6] literal")?;
            let p = t[close + 1..]
                .strip_prefix(':')
                .ok_or("CONNECT needs host:port")?;
            (&t[..=close], p)
        } else {
            match t.matches(':').count() {
                1 => t.split_once(':').unwrap_or((t, "")),
                0 => return Err("CONNECT needs host:port".into()),
                _ => return Err("an IPv6 address must be in brackets: [::1]:443".into()),
            }
        };
        let port = port_of(p)?;
        let host = ssrf::parse_host(h).map_err(|e| guard_reason(&e))?;
        return Ok(Target::Connect { host, port });
    }
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    if t.starts_with('/') || t == "*" {
        return Err(
            "this is a proxy: send an absolute URL (http://host/path) or CONNECT host:port".into(),
        );
    }
    if lower.starts_with("https://") {
        return Err(
            "https:// URLs go through CONNECT (set HTTPS_PROXY as well as HTTP_PROXY)".into(),
        );
    }
    let (scheme, host, port) = ssrf::parse_url_host(t).map_err(|e| guard_reason(&e))?;
    if scheme != Scheme::Http {
        return Err("unsupported scheme (http only; https goes through CONNECT)".into());
    }
    let after = &t[t.find("://").map(|i| i + 3).unwrap_or(0)..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let mut path = after[end..].to_string();
    if let Some(i) = path.find('#') {
        path.truncate(i);
    }
    if path.is_empty() {
        path = "/".into();
    } else if path.starts_with('?') {
        path.insert(0, '/');
    }
    Ok(Target::Http { host, port, path })
}

pub(super) const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The head sent to the origin for an absolute-form request: origin-form request line,
/// `Host` from the URL, hop-by-hop and `Proxy-*` headers (and those `Connection` names)
/// dropped, `Connection: close`. Refuses ambiguous body framing.
pub fn origin_head(
    head: &RequestHead,
    host: &Host,
    port: u16,
    path: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut named: Vec<String> = Vec::new();
    let mut content_length: Option<&str> = None;
    let mut chunked = false;
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("connection") {
            named.extend(v.split(',').map(|s| s.trim().to_ascii_lowercase()));
        }
        if n.eq_ignore_ascii_case("content-length") {
            if content_length.is_some_and(|c| c != v) {
                return Err("conflicting Content-Length headers".into());
            }
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length".into());
            }
            content_length = Some(v);
        }
        if n.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    let authority = match host {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        h => h.to_string(),
    };
    let authority = if port == 80 {
        authority
    } else {
        format!("{authority}:{port}")
    };
    let mut out = format!(
        "{} {path} {}\r\nHost: {authority}\r\n",
        head.method, head.version
    );
    for (n, v) in &head.headers {
        let l = n.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&l.as_str()) || l.starts_with("proxy-") || named.contains(&l) {
            continue;
        }
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(out.into_bytes())
}
