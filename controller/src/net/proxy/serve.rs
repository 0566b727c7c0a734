//! Serving one connection: socket I/O with deadlines, error answers, admission, the policy and SSRF checks and the connect.

use super::*;

// Every read and write on a socket the worker passed is `MSG_DONTWAIT`, and every wait is a
// poll(2) with a deadline: the worker keeps a copy of the socket and may set or clear
// `O_NONBLOCK` on it at any time, so its blocking mode (and `SO_RCVTIMEO`) means nothing.

/// One `recv` that never blocks (`WouldBlock` when nothing is there); EINTR retried.
pub(super) fn recv_now(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::recv(s.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// One `send` that never blocks and never raises SIGPIPE; EINTR retried.
pub(super) fn send_now(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::send(
            s.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Waits until `s` is ready for `events` (or has an error or hang-up to report), at most
/// `timeout`. `Ok(false)`: the time ran out.
pub(super) fn wait_for(s: &TcpStream, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up to the next millisecond, so a short wait is a wait, not a spin.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(s.as_fd(), events)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `buf` by `deadline` (`TimedOut` past it).
pub(super) fn send_all(s: &TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        match send_now(s, buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !wait_for(s, PollFlags::POLLOUT, left)? {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) enum HeadError {
    /// The client closed before sending anything.
    Closed,
    TooLarge,
    Timeout,
    Io(io::Error),
}

/// The end of a request head in `buf` (searching from `from`): after CRLF CRLF, or after a
/// bare LF LF or LF CRLF, which [`parse_head`] then refuses (so a client using bare LF gets a
/// `400`, not a wait for the timeout).
pub(super) fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

/// Reads until CRLF CRLF within `limit`; returns the head and whatever came after it.
pub(super) fn read_head(
    s: &TcpStream,
    limit: Duration,
) -> std::result::Result<(Vec<u8>, Vec<u8>), HeadError> {
    let deadline = Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        let room = (MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let n = match recv_now(s, &mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the request head was cut short",
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                match wait_for(s, PollFlags::POLLIN, left) {
                    Ok(true) => continue,
                    Ok(false) => return Err(HeadError::Timeout),
                    Err(e) => return Err(HeadError::Io(e)),
                }
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, from) {
            if end > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

pub(super) fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

pub(super) fn answer(code: u16, body: &str) -> String {
    let body = format!("{body}\n");
    format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )
}

/// Writes a short plain-text answer and closes politely: half-close, then drain what the
/// client still sends (so it reads the answer instead of a reset) while it keeps sending,
/// for at most [`DRAIN_DEADLINE`] in all.
pub(super) fn respond(s: &TcpStream, code: u16, body: &str) {
    let _ = send_all(
        s,
        answer(code, body).as_bytes(),
        Instant::now() + RESPOND_WRITE_TIMEOUT,
    );
    let _ = s.shutdown(Shutdown::Write);
    drain(s, DRAIN_DEADLINE);
}

/// Reads and drops what the client sends: until it closes, is quiet for [`DRAIN_QUIET`],
/// [`DRAIN_MAX`] bytes have come, or `limit` has passed, whichever is first.
pub(super) fn drain(s: &TcpStream, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < DRAIN_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match recv_now(s, &mut sink) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !matches!(
                    wait_for(s, PollFlags::POLLIN, left.min(DRAIN_QUIET)),
                    Ok(true)
                ) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Serves one connection from the sandbox: reads the request, applies the policy, relays,
/// records. Returns the record written to the audit log. Enforces the workspace's
/// connection cap and the process's (`503` when one is reached). The stream may be any
/// connected TCP stream (`TcpStream::from(OwnedFd)` for one passed by the worker).
pub fn serve_connection(stream: TcpStream, ctx: &ProxyContext) -> ConnRecord {
    match ctx.admit() {
        Ok(permit) => serve_admitted(stream, ctx, permit),
        Err(busy) => refuse_busy(stream, ctx, busy, true),
    }
}

/// Receives connections from the worker and serves each on its own thread while the
/// workspace's connection cap and the process's hold (one more is answered `503` and
/// closed, without blocking this loop). `recv` returns the next passed fd, `None` when the
/// channel is closed (then this returns `Ok`), or an error (returned). Use
/// `crate::net::fdpass::recv_passed_fd` as `recv`. An fd that is not a stream socket is
/// closed and logged.
pub fn serve_channel<R>(chan: OwnedFd, ctx: Arc<ProxyContext>, recv: R) -> Result<()>
where
    R: Fn(&OwnedFd) -> Result<Option<OwnedFd>>,
{
    loop {
        let Some(fd) = recv(&chan)? else {
            return Ok(());
        };
        let stream = match stream_from_fd(fd) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(target: "egress", workspace = ctx.workspace(); "refusing a passed fd: {e}");
                continue;
            }
        };
        match ctx.admit() {
            Ok(permit) => {
                let c = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("bulkhead-egress".into())
                    .spawn(move || {
                        serve_admitted(stream, &c, permit);
                    });
                if let Err(e) = spawned {
                    log::warn!(target: "egress", workspace = ctx.workspace(); "cannot start a connection thread: {e}");
                }
            }
            Err(busy) => {
                refuse_busy(stream, &ctx, busy, false);
            }
        }
    }
}

/// A passed fd as a `TcpStream`, refusing anything but a stream socket.
pub fn stream_from_fd(fd: OwnedFd) -> Result<TcpStream> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => {
            return Err(Error::Invalid(format!(
                "the passed fd is a {other:?} socket, not a stream socket"
            )))
        }
        Err(e) => {
            return Err(Error::Invalid(format!(
                "the passed fd is not a socket: {e}"
            )))
        }
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(false)
        .map_err(|e| Error::Invalid(format!("the passed socket: {e}")))?;
    Ok(s)
}

pub(super) fn new_record(ctx: &ProxyContext) -> ConnRecord {
    ConnRecord {
        ts: crate::util::time::timestamp_now(),
        workspace: ctx.workspace.clone(),
        host: String::new(),
        port: 0,
        method: "-".into(),
        decision: Decision::Denied,
        reason: None,
        status: None,
        addr: None,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        suppressed: None,
    }
}

/// Answers `503` (a connection cap is reached). `wait`: write with a deadline and drain
/// politely ([`respond`]); without it (on the channel's own thread, which must never block)
/// one `MSG_DONTWAIT` write of the answer, whatever fits, then close.
pub(super) fn refuse_busy(
    stream: TcpStream,
    ctx: &ProxyContext,
    busy: Busy,
    wait: bool,
) -> ConnRecord {
    let mut rec = new_record(ctx);
    // Take what the client already sent so closing does not reset the connection.
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < MAX_HEAD_BYTES {
        match recv_now(&stream, &mut sink) {
            Ok(n) if n > 0 => total += n,
            _ => break,
        }
    }
    let (msg, reason) = match busy {
        Busy::Workspace(cap, clamped) => (
            format!(
                "bulkhead egress: workspace {} has {cap} connections open, its limit{}; retry when one has closed",
                ctx.workspace,
                if clamped {
                    " (the operator's [network] max_connections_ceiling)"
                } else {
                    ""
                }
            ),
            format!("connection_limit: {cap} connections open"),
        ),
        Busy::Process(total) => (
            format!(
                "bulkhead egress: the controller has {total} proxied connections open, the operator's limit ([network] max_connections_total); retry later"
            ),
            format!("connection_limit_total: {total} connections open in the controller"),
        ),
    };
    if wait {
        respond(&stream, 503, &msg);
    } else {
        let _ = send_now(&stream, answer(503, &msg).as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    }
    rec.reason = Some(reason);
    rec.status = Some(503);
    ctx.finish(&rec);
    rec
}

pub(super) fn serve_admitted(
    mut stream: TcpStream,
    ctx: &ProxyContext,
    _permit: Permit,
) -> ConnRecord {
    let start = Instant::now();
    let mut rec = new_record(ctx);
    serve_inner(&mut stream, ctx, &mut rec);
    rec.duration_ms = start.elapsed().as_millis() as u64;
    ctx.finish(&rec);
    rec
}

pub(super) fn deny(s: &mut TcpStream, rec: &mut ConnRecord, code: u16, kind: &str, message: &str) {
    rec.decision = if code == 502 {
        Decision::Failed
    } else {
        Decision::Denied
    };
    rec.status = Some(code);
    rec.reason = Some(format!(
        "{kind}: {}",
        message.trim_start_matches("bulkhead egress: ")
    ));
    respond(s, code, message);
}

pub(super) fn serve_inner(s: &mut TcpStream, ctx: &ProxyContext, rec: &mut ConnRecord) {
    let _ = s.set_nodelay(true);
    let (head, rest) = match read_head(s, ctx.timeouts.head) {
        Ok(h) => h,
        Err(HeadError::Closed) => {
            rec.reason = Some("malformed: closed before a request".into());
            return;
        }
        Err(HeadError::TooLarge) => {
            let m =
                format!("bulkhead egress: the request head is larger than {MAX_HEAD_BYTES} bytes");
            return deny(s, rec, 400, "malformed", &m);
        }
        Err(HeadError::Timeout) => {
            let m = format!(
                "bulkhead egress: no complete request head within {}s",
                ctx.timeouts.head.as_secs()
            );
            return deny(s, rec, 408, "malformed", &m);
        }
        Err(HeadError::Io(e)) => {
            rec.reason = Some(format!("malformed: {e}"));
            return;
        }
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(why) => {
            return deny(
                s,
                rec,
                400,
                "malformed",
                &format!("bulkhead egress: bad request: {why}"),
            )
        }
    };
    rec.method = req.method.clone();
    let target = match parse_target(&req) {
        Ok(t) => t,
        Err(why) => {
            return deny(
                s,
                rec,
                400,
                "malformed",
                &format!("bulkhead egress: bad request: {why}"),
            )
        }
    };
    let (host, port) = target.host_port();
    let (host, port) = (host.clone(), port);
    rec.host = host.to_string();
    rec.port = port;
    let forward = match &target {
        Target::Connect { .. } => None,
        Target::Http { path, .. } => match origin_head(&req, &host, port, path) {
            Ok(h) => Some(h),
            Err(why) => {
                return deny(
                    s,
                    rec,
                    400,
                    "malformed",
                    &format!("bulkhead egress: bad request: {why}"),
                )
            }
        },
    };
    let live = match ctx.refresh() {
        Ok(l) => l,
        Err(d) => return deny(s, rec, 403, d.kind, &d.message),
    };
    let policy = &live.policy;
    if let Err(d) = policy.check(&host, port) {
        return deny(s, rec, 403, d.kind, &d.message);
    }
    let resolver = ctx.resolver.clone();
    let vetted = ssrf::resolve_and_check_with(&host, port, policy.ssrf(), |name, port| {
        resolver
            .resolve(name, port)
            .map(|ips| {
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            })
            .map_err(|message| SsrfError::Resolve {
                host: name.to_string(),
                message,
            })
    });
    let addrs = match vetted {
        Ok(a) => a,
        Err(SsrfError::Resolve { message, .. }) => {
            let m = format!("bulkhead egress: could not resolve {host}: {message}");
            return deny(s, rec, 502, "resolve", &m);
        }
        Err(e) => {
            let d = policy.denial(&host, port, &e);
            return deny(s, rec, 403, d.kind, &d.message);
        }
    };
    if let Err(d) = policy.check_resolved(&host, &addrs) {
        return deny(s, rec, 403, d.kind, &d.message);
    }
    // Connect to the vetted addresses only: the address checked is the address dialed.
    let mut upstream = None;
    let mut last_err = None;
    for a in addrs.iter().take(MAX_CONNECT_ATTEMPTS) {
        match ctx.connector.connect(*a, ctx.timeouts.connect) {
            Ok(u) => {
                upstream = Some((u, *a));
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some((mut up, addr)) = upstream else {
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        let m = format!("bulkhead egress: could not connect to {host}:{port}: {e}");
        return deny(s, rec, 502, "connect", &m);
    };
    rec.addr = Some(addr.to_string());
    rec.decision = Decision::Allowed;
    let _ = up.set_nodelay(true);
    let mut first_up = Vec::new();
    match forward {
        None => {
            let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
            if send_all(s, established, Instant::now() + ctx.timeouts.idle).is_err() {
                rec.reason = Some("the client went away".into());
                return;
            }
            rec.status = Some(200);
        }
        Some(h) => first_up = h,
    }
    first_up.extend_from_slice(&rest);
    let sniff = matches!(target, Target::Http { .. });
    let r = relay(s, &mut up, &first_up, ctx, &live, sniff);
    rec.bytes_up = r.up;
    rec.bytes_down = r.down;
    if sniff {
        rec.status = r.status;
    }
    if let Some(e) = r.ended_by {
        rec.reason = Some(e);
    }
}
