//! The relay: bytes pumped both ways, counted, rate-limited and ended on idle or close.

use super::*;

pub(super) struct RelayResult {
    pub(super) up: u64,
    pub(super) down: u64,
    pub(super) status: Option<u16>,
    pub(super) ended_by: Option<String>,
}

/// Last activity, shared by both directions.
pub(super) struct Activity {
    pub(super) start: Instant,
    pub(super) last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

pub(super) struct Pump<'a> {
    pub(super) from: &'a TcpStream,
    pub(super) to: &'a TcpStream,
    pub(super) total: &'a AtomicU64,
    pub(super) limiter: Option<&'a RateLimiter>,
    pub(super) activity: &'a Activity,
    pub(super) idle: Duration,
    pub(super) sniff: bool,
}

pub(super) enum PumpEnd {
    Eof,
    Idle,
    Error(io::Error),
}

/// Waits for `events` on `s` until the relay has been idle (no byte either way) for `idle`.
/// `Ok(false)`: it has. A poll that times out while the other direction moved waits again
/// for the rest.
pub(super) fn wait_active(
    s: &TcpStream,
    events: PollFlags,
    activity: &Activity,
    idle: Duration,
) -> io::Result<bool> {
    loop {
        let left = idle.saturating_sub(activity.idle_for());
        if left.is_zero() {
            return Ok(false);
        }
        if wait_for(s, events, left)? {
            return Ok(true);
        }
    }
}

/// Copies `from` → `to` until EOF, an error or idleness. Returns the bytes copied, the
/// origin's status when sniffing, and how it ended. Never blocks in a read or a write (they
/// are `MSG_DONTWAIT`): it waits in poll(2) for readiness, so a socket set to `O_NONBLOCK`
/// behind its back is waited on, not spun on.
pub(super) fn pump(p: Pump<'_>) -> (u64, Option<u16>, PumpEnd) {
    let chunk = p.limiter.map(|l| l.chunk()).unwrap_or(RELAY_BUF);
    let mut buf = vec![0u8; chunk];
    let mut copied = 0u64;
    let mut status = None;
    loop {
        let n = match recv_now(p.from, &mut buf) {
            Ok(0) => return (copied, status, PumpEnd::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                match wait_active(p.from, PollFlags::POLLIN, p.activity, p.idle) {
                    Ok(true) => continue,
                    Ok(false) => return (copied, status, PumpEnd::Idle),
                    Err(e) => return (copied, status, PumpEnd::Error(e)),
                }
            }
            Err(e) => return (copied, status, PumpEnd::Error(e)),
        };
        p.activity.touch();
        if p.sniff && copied == 0 && n >= 12 && buf.starts_with(b"HTTP/1.") {
            status = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|s| s.parse().ok());
        }
        if let Some(l) = p.limiter {
            let wait = l.take(n);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let mut out = &buf[..n];
        while !out.is_empty() {
            match send_now(p.to, out) {
                Ok(0) => {
                    let e = io::Error::from(ErrorKind::WriteZero);
                    return (copied, status, PumpEnd::Error(e));
                }
                Ok(k) => {
                    out = &out[k..];
                    p.activity.touch();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    match wait_active(p.to, PollFlags::POLLOUT, p.activity, p.idle) {
                        Ok(true) => {}
                        Ok(false) => return (copied, status, PumpEnd::Idle),
                        Err(e) => return (copied, status, PumpEnd::Error(e)),
                    }
                }
                Err(e) => return (copied, status, PumpEnd::Error(e)),
            }
        }
        copied += n as u64;
        p.total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

pub(super) fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    first_up: &[u8],
    ctx: &ProxyContext,
    live: &Live,
    sniff: bool,
) -> RelayResult {
    let idle = ctx.timeouts.idle;
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let mut up_bytes = 0u64;
    if !first_up.is_empty() {
        if let Some(l) = live.up.as_deref() {
            std::thread::sleep(l.take(first_up.len()));
        }
        if let Err(e) = send_all(upstream, first_up, Instant::now() + idle) {
            return RelayResult {
                up: 0,
                down: 0,
                status: None,
                ended_by: Some(format!("writing to the origin: {e}")),
            };
        }
        up_bytes = first_up.len() as u64;
        ctx.counters.bytes_up.fetch_add(up_bytes, Ordering::Relaxed);
    }
    let counters = &ctx.counters;
    let (up_res, down_res) = std::thread::scope(|sc| {
        let c: &TcpStream = client;
        let u: &TcpStream = upstream;
        let activity = &activity;
        let up = sc.spawn(move || {
            let r = pump(Pump {
                from: c,
                to: u,
                total: &counters.bytes_up,
                limiter: live.up.as_deref(),
                activity,
                idle,
                sniff: false,
            });
            match &r.2 {
                // The client half-closed: let the origin answer.
                PumpEnd::Eof => {
                    let _ = u.shutdown(Shutdown::Write);
                }
                // Shutting both sockets down wakes the other direction from its poll.
                _ => {
                    let _ = u.shutdown(Shutdown::Both);
                    let _ = c.shutdown(Shutdown::Both);
                }
            }
            r
        });
        let down = pump(Pump {
            from: u,
            to: c,
            total: &counters.bytes_down,
            limiter: live.down.as_deref(),
            activity,
            idle,
            sniff,
        });
        // The origin closed (or failed): the connection is over.
        let _ = c.shutdown(Shutdown::Both);
        let _ = u.shutdown(Shutdown::Both);
        let up = up.join().unwrap_or((0, None, PumpEnd::Eof));
        (up, down)
    });
    let ended_by = match (&up_res.2, &down_res.2) {
        (PumpEnd::Idle, _) | (_, PumpEnd::Idle) => Some(format!("idle for {idle:?}")),
        (_, PumpEnd::Error(e)) => Some(format!("origin side: {e}")),
        _ => None,
    };
    RelayResult {
        up: up_bytes + up_res.0,
        down: down_res.0,
        status: down_res.1,
        ended_by,
    }
}
