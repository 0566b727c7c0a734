//! Controlled egress, the sandbox's side: the proxy endpoint on `127.0.0.1:3128`.
//!
//! The sandbox's network namespace has only loopback. When the launcher hands the worker an
//! egress channel (fd [`EGRESS_FD`], a unix `SOCK_SEQPACKET` socket whose other end the
//! controller holds), the worker listens on `127.0.0.1:`[`PROXY_PORT`] inside the sandbox
//! and passes every accepted connection to the controller, which decides what it may reach
//! and relays it. The worker never reads or writes a byte of a proxied connection.
//!
//! - One message per connection: a 1-byte payload and the connection's fd in `SCM_RIGHTS`;
//!   the worker then closes its own copy.
//! - Back-pressure: when the channel is full (`sendmsg` would block) the connection waits and
//!   nothing more is accepted until the channel is writable again; connections then wait in
//!   the listen backlog.
//! - Rate: at most [`MAX_PASSED_PER_SEC`] connections a second (a token bucket with as many
//!   tokens); a connection accepted with no token left is closed at once.
//! - The controller never writes to the channel: its end closing, an error, or anything
//!   readable on it ends egress; the listener is closed and `127.0.0.1:3128` refuses
//!   connections from then on.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub use bulkhead_shared::ratelimit::TokenBucket;
use bulkhead_shared::{EGRESS_FD, PROXY_PORT};

use crate::sys;

/// Most connections passed to the controller per second (and the bucket's burst).
pub const MAX_PASSED_PER_SEC: u32 = 64;
/// Most connections accepted per readiness event (bounds the time a flood holds the loop).
const ACCEPTS_PER_EVENT: usize = 16;
/// How long accepting pauses after the process ran out of descriptors or memory (so a
/// listener that stays readable does not spin the loop).
const PAUSE_ON_EXHAUSTION: Duration = Duration::from_millis(100);
/// The payload of a message on the channel (only the fd matters).
const PAYLOAD: u8 = b'c';

/// `HTTP_PROXY` and friends for every command of a sandbox with egress; a request's own
/// environment overrides them.
pub fn proxy_env() -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{PROXY_PORT}");
    let mut env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    for k in ["NO_PROXY", "no_proxy"] {
        env.push((k.to_string(), "localhost,127.0.0.1,::1".to_string()));
    }
    env
}

/// Which egress fd a poll entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressFd {
    /// The channel to the controller.
    Channel,
    /// The proxy listener.
    Listener,
}

/// Counters, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EgressStats {
    /// Connections passed to the controller.
    pub passed: u64,
    /// Connections closed because the rate was exceeded (or could not be queued).
    pub refused: u64,
}

/// The proxy endpoint and the channel it feeds.
#[derive(Debug)]
pub struct Egress {
    chan: OwnedFd,
    listener: TcpListener,
    bucket: TokenBucket,
    /// An accepted connection the channel had no room for yet.
    pending: Option<OwnedFd>,
    /// Accepting is paused until then (descriptor or memory exhaustion).
    paused_until: Option<Instant>,
    stats: EgressStats,
}

impl Egress {
    /// Takes the channel the launcher left on [`EGRESS_FD`], if it left one (a unix
    /// `SOCK_SEQPACKET` socket; anything else there is left alone and means no egress).
    /// Call once, at startup, before any other fd is created.
    pub fn take_channel() -> Option<OwnedFd> {
        sys::take_seqpacket(EGRESS_FD)
    }

    /// The sandbox's proxy endpoint: listens on `127.0.0.1:`[`PROXY_PORT`] and passes
    /// connections over `chan`.
    pub fn proxy(chan: OwnedFd, now: Instant) -> io::Result<Egress> {
        Egress::open(
            chan,
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, PROXY_PORT),
            now,
        )
    }

    /// Listens on `addr` and passes connections over `chan`.
    pub fn open(chan: OwnedFd, addr: SocketAddrV4, now: Instant) -> io::Result<Egress> {
        sys::set_cloexec(chan.as_fd())?;
        sys::set_nonblocking(chan.as_fd())?;
        // std sets close-on-exec and SO_REUSEADDR, and accept4s with close-on-exec.
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(Egress {
            chan,
            listener,
            bucket: TokenBucket::new(MAX_PASSED_PER_SEC, now),
            pending: None,
            paused_until: None,
            stats: EgressStats::default(),
        })
    }

    /// Counters so far.
    #[allow(dead_code)] // read by the tests
    pub fn stats(&self) -> EgressStats {
        self.stats
    }

    /// The fds to poll: `(fd, events, which)`. The channel is always watched (its end
    /// closing ends egress), for writability while a connection waits; the listener only
    /// when nothing waits and accepting is not paused.
    pub fn poll_fds(&self, now: Instant) -> impl Iterator<Item = (RawFd, i16, EgressFd)> {
        let mut chan_events = libc::POLLIN;
        if self.pending.is_some() {
            chan_events |= libc::POLLOUT;
        }
        let chan = (self.chan.as_raw_fd(), chan_events, EgressFd::Channel);
        let accepting = self.pending.is_none() && self.paused_until.map_or(true, |t| now >= t);
        let listener =
            accepting.then(|| (self.listener.as_raw_fd(), libc::POLLIN, EgressFd::Listener));
        std::iter::once(chan).chain(listener)
    }

    /// When the loop must wake up for us: the end of a pause still to come.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|&t| t > now)
    }

    /// Handles readiness of one of our fds. `false`: egress is over (drop it).
    pub fn on_ready(&mut self, which: EgressFd, revents: i16, now: Instant) -> bool {
        match which {
            EgressFd::Channel => {
                // The controller never writes, so readable means closed (or broken).
                if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                    return false;
                }
                if revents & libc::POLLOUT != 0 {
                    return self.flush();
                }
                true
            }
            EgressFd::Listener => self.accept(now),
        }
    }

    /// Sends the waiting connection, if any. `false`: the channel failed.
    fn flush(&mut self) -> bool {
        let Some(conn) = self.pending.take() else {
            return true;
        };
        self.pass(conn)
    }

    /// Passes `conn` to the controller, or keeps it waiting when the channel is full.
    /// `false`: the channel failed.
    fn pass(&mut self, conn: OwnedFd) -> bool {
        match sys::send_fd(self.chan.as_fd(), conn.as_fd(), PAYLOAD) {
            Ok(()) => {
                // Our copy closes here; the controller's is the only one left.
                self.stats.passed += 1;
                true
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.pending = Some(conn);
                true
            }
            // Too many fds in flight or no memory for this message: this connection is
            // refused, the channel is fine.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETOOMANYREFS | libc::ENOBUFS | libc::ENOMEM)
                ) =>
            {
                self.stats.refused += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Accepts what the listener has (a bounded number), passing or refusing each.
    /// `false`: the channel failed.
    fn accept(&mut self, now: Instant) -> bool {
        for _ in 0..ACCEPTS_PER_EVENT {
            if self.pending.is_some() {
                return true;
            }
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if !self.bucket.take(now) {
                        // Over the rate: closed at once.
                        self.stats.refused += 1;
                        drop(stream);
                        continue;
                    }
                    if !self.pass(OwnedFd::from(stream)) {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                    ) =>
                {
                    self.paused_until = Some(now + PAUSE_ON_EXHAUSTION);
                    return true;
                }
                // ECONNABORTED and the like: that connection is gone, the next may not be.
                Err(_) => {}
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::mem::MaybeUninit;
    use std::net::TcpStream;
    use std::os::fd::FromRawFd;
    use std::os::unix::net::UnixStream;

    /// A connected SOCK_SEQPACKET pair: (worker's end, controller's end).
    fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
        let mut fds = [-1; 2];
        // SAFETY: `fds` has room for the two descriptors socketpair writes.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                fds.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
        // SAFETY: socketpair succeeded; both fds are new and owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Receives one passed fd (the controller's side, blocking). `None` at end of channel.
    fn recv_fd(chan: &OwnedFd) -> Option<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut cbuf = [MaybeUninit::<u64>::uninit(); 8];
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
        // SAFETY: `msg` points to live buffers of the lengths given.
        let n = unsafe { libc::recvmsg(chan.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
        if n == 0 {
            return None;
        }
        assert_eq!(byte[0], PAYLOAD);
        // SAFETY: recvmsg filled `msg`; the first header is inside `cbuf`.
        let cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        assert!(!cmsg.is_null(), "no control message");
        // SAFETY: `cmsg` points to a control message the kernel wrote.
        let (level, kind) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type) };
        assert_eq!((level, kind), (libc::SOL_SOCKET, libc::SCM_RIGHTS));
        // SAFETY: an SCM_RIGHTS message carries at least one int after its header.
        let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>()) };
        // SAFETY: the kernel installed `fd` for us; nothing else owns it.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn loopback_any() -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)
    }

    fn port(e: &Egress) -> u16 {
        e.listener.local_addr().unwrap().port()
    }

    /// Runs the listener's handler until it has accepted `n` connections or 2 s passed.
    fn accept_n(e: &mut Egress, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while e.stats.passed + e.stats.refused < n && Instant::now() < deadline {
            assert!(e.on_ready(EgressFd::Listener, libc::POLLIN, Instant::now()));
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn proxy_env_names_the_endpoint_and_exempts_loopback() {
        let env = proxy_env();
        for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            assert!(
                env.contains(&(k.into(), "http://127.0.0.1:3128".into())),
                "{k}"
            );
        }
        assert!(env.contains(&("NO_PROXY".into(), "localhost,127.0.0.1,::1".into())));
    }

    #[test]
    fn accepted_connections_are_passed_and_work_end_to_end() {
        let (worker, controller) = seqpacket_pair();
        let mut e = Egress::open(worker, loopback_any(), Instant::now()).unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", port(&e))).unwrap();
        accept_n(&mut e, 1);
        assert_eq!(
            e.stats(),
            EgressStats {
                passed: 1,
                refused: 0
            }
        );
        let passed = recv_fd(&controller).expect("a passed fd");
        let mut server = TcpStream::from(passed);
        client.write_all(b"ping").unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
    }

    #[test]
    fn connections_over_the_rate_are_closed_at_once() {
        let (worker, controller) = seqpacket_pair();
        let mut e = Egress::open(worker, loopback_any(), Instant::now()).unwrap();
        // Keep the channel drained (so back-pressure does not interfere) and the passed
        // connections open.
        let drain = std::thread::spawn(move || {
            let mut kept = Vec::new();
            while let Some(fd) = recv_fd(&controller) {
                kept.push(fd);
            }
            kept
        });
        let refused = 20;
        let total = u64::from(MAX_PASSED_PER_SEC) + refused;
        let clients: Vec<TcpStream> = (0..total)
            .map(|_| TcpStream::connect(("127.0.0.1", port(&e))).unwrap())
            .collect();
        // All at the same instant: exactly the burst passes.
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        while e.stats.passed + e.stats.refused < total && Instant::now() < deadline {
            assert!(e.on_ready(EgressFd::Listener, libc::POLLIN, now));
            if e.pending.is_some() {
                assert!(e.on_ready(EgressFd::Channel, libc::POLLOUT, now));
            }
        }
        assert_eq!(
            e.stats(),
            EgressStats {
                passed: u64::from(MAX_PASSED_PER_SEC),
                refused
            }
        );
        // The refused clients see end of file; the passed ones an open connection.
        std::thread::sleep(Duration::from_millis(50));
        let mut closed = 0;
        for mut c in clients {
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 1];
            match c.read(&mut b) {
                Ok(0) => closed += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => panic!("unexpected read result {other:?}"),
            }
        }
        assert_eq!(closed, refused);
        drop(e);
        assert_eq!(drain.join().unwrap().len() as u32, MAX_PASSED_PER_SEC);
    }

    #[test]
    fn a_full_channel_stops_accepting_until_writable() {
        let (worker, controller) = seqpacket_pair();
        let mut e = Egress::open(worker, loopback_any(), Instant::now()).unwrap();
        let p = port(&e);
        let mut clients = Vec::new();
        // Nobody reads the channel: sooner or later sendmsg would block.
        let deadline = Instant::now() + Duration::from_secs(5);
        while e.pending.is_none() && Instant::now() < deadline {
            clients.push(TcpStream::connect(("127.0.0.1", p)).unwrap());
            assert!(e.on_ready(EgressFd::Listener, libc::POLLIN, Instant::now()));
            // Stay under the rate.
            e.bucket = TokenBucket::new(MAX_PASSED_PER_SEC, Instant::now());
        }
        assert!(e.pending.is_some(), "the channel never filled");
        let now = Instant::now();
        let fds: Vec<_> = e.poll_fds(now).collect();
        assert_eq!(
            fds.len(),
            1,
            "still accepting while a connection waits: {fds:?}"
        );
        assert_eq!(fds[0].1 & libc::POLLOUT, libc::POLLOUT);
        // The controller reads one: the waiting connection goes out, accepting resumes.
        let passed_before = e.stats.passed;
        assert!(recv_fd(&controller).is_some());
        assert!(e.on_ready(EgressFd::Channel, libc::POLLOUT, now));
        assert!(e.pending.is_none());
        assert_eq!(e.stats.passed, passed_before + 1);
        assert_eq!(e.poll_fds(now).count(), 2);
    }

    #[test]
    fn the_channel_closing_ends_egress() {
        let (worker, controller) = seqpacket_pair();
        let e = Egress::open(worker, loopback_any(), Instant::now()).unwrap();
        drop(controller);
        let mut fds: Vec<libc::pollfd> = e
            .poll_fds(Instant::now())
            .map(|(fd, events, _)| libc::pollfd {
                fd,
                events,
                revents: 0,
            })
            .collect();
        assert_eq!(sys::poll(&mut fds, 1000).unwrap(), 1);
        let mut e = e;
        assert!(!e.on_ready(EgressFd::Channel, fds[0].revents, Instant::now()));
        // And dropping it closes the listener.
        let p = port(&e);
        drop(e);
        assert!(TcpStream::connect(("127.0.0.1", p)).is_err());
    }

    #[test]
    fn only_a_unix_seqpacket_socket_is_an_egress_channel() {
        let (a, _b) = UnixStream::pair().unwrap();
        let kind = sys::socket_kind(a.as_fd()).unwrap();
        assert_eq!(kind, (libc::AF_UNIX, libc::SOCK_STREAM));
        let (w, _c) = seqpacket_pair();
        assert_eq!(
            sys::socket_kind(w.as_fd()).unwrap(),
            (libc::AF_UNIX, libc::SOCK_SEQPACKET)
        );
    }
}
