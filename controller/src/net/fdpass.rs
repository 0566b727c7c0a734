//! Receiving the connections a sandbox passes over its egress channel.
//!
//! A sandbox started with [`LaunchOptions::egress`](bulkhead_shared::LaunchOptions) serves
//! `127.0.0.1:3128` inside its own network namespace; the worker accepts each connection and
//! sends it to the controller over the egress channel
//! ([`Sandbox::take_egress_channel`](crate::sandbox::Sandbox::take_egress_channel)): one
//! `SOCK_SEQPACKET` message per connection, a 1-byte payload and the connection's fd in
//! `SCM_RIGHTS`. [`recv_passed_fd`] takes one of them off the channel.
//!
//! The worker is inside the sandbox, so what arrives is hostile input like every frame from
//! it: anything but exactly one fd with a 1-byte payload, or an fd that is not a TCP socket
//! (`AF_INET`/`AF_INET6`, `SOCK_STREAM`, `IPPROTO_TCP`: not MPTCP or SCTP), is closed and
//! reported as a protocol error. No fd
//! received here is ever left open by mistake: every one is an [`OwnedFd`] from the moment the
//! kernel installs it (close-on-exec), and dropped on every error path.
//!
//! The descriptors come out of `recvmsg` through `rustix`, whose ancillary-data API hands
//! them over as [`OwnedFd`]s; nix's `ControlMessageOwned::ScmRights` yields raw numbers,
//! which this `#![forbid(unsafe_code)]` crate could not turn into owned descriptors.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sys::socket::{getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrLike};
use nix::sys::stat::{fstat, SFlag};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use crate::error::{Error, Result};

/// Room for one `SCM_RIGHTS` message with one fd (the kernel fits two in it on 64-bit
/// targets because of alignment; more than that sets `MSG_CTRUNC`).
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(1));

fn protocol(what: impl std::fmt::Display) -> Error {
    Error::Protocol(format!("egress channel: {what}"))
}

/// Receives the next connection the sandbox passed over `chan` (blocking; an interrupted
/// call is retried). `Ok(None)`: the channel ended (the worker closed it, or the sandbox is
/// gone). `Err`: the channel failed, or the worker broke the protocol: anything received with
/// the message is closed, and the channel should be dropped.
pub fn recv_passed_fd(chan: &OwnedFd) -> Result<Option<OwnedFd>> {
    let mut payload = [0u8; 1];
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    loop {
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let msg = match rustix::net::recvmsg(
            chan.as_fd(),
            &mut [IoSliceMut::new(&mut payload)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::SandboxGone(format!("egress channel: {e}"))),
        };
        // Every descriptor of the message, owned; whatever is not kept is closed on return
        // (and `control` closes any the iteration did not reach).
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = m {
                fds.extend(rights);
            }
        }
        if msg.flags.contains(ReturnFlags::CTRUNC) {
            return Err(protocol(
                "control data truncated: more descriptors than one per message",
            ));
        }
        if msg.flags.contains(ReturnFlags::TRUNC) {
            return Err(protocol("a message longer than one byte"));
        }
        let fd = match (msg.bytes, fds.len()) {
            // End of the channel (a connected SOCK_SEQPACKET socket reads 0 at EOF).
            (0, 0) => return Ok(None),
            (1, 1) => fds.pop().ok_or_else(|| protocol("no descriptor"))?,
            (bytes, n) => {
                return Err(protocol(format!(
                    "expected one descriptor with a 1-byte message, got {n} with {bytes} \
                     byte(s)"
                )))
            }
        };
        check_tcp_socket(&fd)?;
        return Ok(Some(fd));
    }
}

/// `fd` must be a socket (fstat), of type `SOCK_STREAM`, protocol `IPPROTO_TCP`, in
/// `AF_INET` or `AF_INET6`: the accepted end of a connection to the sandbox's proxy
/// endpoint. Anything else (a file, a pipe, a unix socket, an MPTCP or SCTP stream socket the
/// worker made) is refused; the caller drops it.
fn check_tcp_socket(fd: &OwnedFd) -> Result<()> {
    let st = fstat(fd).map_err(|e| protocol(format!("fstat of the passed descriptor: {e}")))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind != SFlag::S_IFSOCK {
        return Err(protocol(format!(
            "the passed descriptor is not a socket (mode {:#o})",
            st.st_mode
        )));
    }
    let ty = getsockopt(fd, sockopt::SockType)
        .map_err(|e| protocol(format!("type of the passed socket: {e}")))?;
    if ty != SockType::Stream {
        return Err(protocol(format!(
            "the passed socket is {ty:?}, not a stream"
        )));
    }
    let local: nix::sys::socket::SockaddrStorage = getsockname(fd.as_raw_fd())
        .map_err(|e| protocol(format!("address of the passed socket: {e}")))?;
    match local.family() {
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {}
        other => {
            return Err(protocol(format!(
                "the passed socket is of family {other:?}, not TCP/IP"
            )))
        }
    }
    match rustix::net::sockopt::socket_protocol(fd) {
        Ok(Some(p)) if p == rustix::net::ipproto::TCP => {}
        Ok(other) => {
            return Err(protocol(format!(
                "the passed socket's protocol is {:?}, not TCP",
                other.map(|p| p.as_raw())
            )))
        }
        Err(e) => return Err(protocol(format!("protocol of the passed socket: {e}"))),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{IoSlice, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::UnixStream;

    use nix::sys::socket::{socketpair, SockFlag};
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::BorrowedFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    /// What the worker does: one message, `payload`, `fds` in SCM_RIGHTS.
    fn send(chan: &OwnedFd, payload: &[u8], fds: &[&dyn AsFd]) {
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !borrowed.is_empty() {
            assert!(control.push(SendAncillaryMessage::ScmRights(&borrowed)));
        }
        rustix::net::sendmsg(
            chan,
            &[IoSlice::new(payload)],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
    }

    fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    fn protocol_error(r: Result<Option<OwnedFd>>) -> String {
        match r {
            Err(Error::Protocol(m)) => m,
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }

    #[test]
    fn a_passed_tcp_connection_arrives_and_works() {
        let (worker, controller) = pair();
        let (mut client, server) = tcp_pair();
        send(&worker, b"c", &[&server]);
        drop(server);
        let got = recv_passed_fd(&controller).unwrap().expect("an fd");
        let mut got = TcpStream::from(got);
        client.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        got.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        got.write_all(b"yo").unwrap();
        client.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"yo");
    }

    #[test]
    fn end_of_channel_is_none() {
        let (worker, controller) = pair();
        drop(worker);
        assert!(recv_passed_fd(&controller).unwrap().is_none());
    }

    /// The received copy of a refused descriptor is closed: with ours closed too, the
    /// pipe's reader sees end of file at once.
    #[test]
    fn a_pipe_is_refused_and_closed() {
        let (worker, controller) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut r = std::fs::File::from(r);
        send(&worker, b"c", &[&w]);
        drop(w);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("not a socket"), "{m}");
        let mut buf = [0u8; 1];
        assert_eq!(
            r.read(&mut buf).unwrap(),
            0,
            "the refused descriptor leaked"
        );
    }

    #[test]
    fn a_unix_socket_is_refused() {
        let (worker, controller) = pair();
        let (a, _b) = UnixStream::pair().unwrap();
        send(&worker, b"c", &[&a]);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("family"), "{m}");
    }

    #[test]
    fn two_or_more_descriptors_or_none_are_refused() {
        let (worker, controller) = pair();
        let (_c, s) = tcp_pair();
        send(&worker, b"c", &[&s, &s]);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("got 2"), "{m}");
        send(&worker, b"c", &[&s, &s, &s, &s, &s]);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("truncated"), "{m}");
        send(&worker, b"c", &[]);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("got 0"), "{m}");
        send(&worker, b"cc", &[&s]);
        let m = protocol_error(recv_passed_fd(&controller));
        assert!(m.contains("longer"), "{m}");
        // The channel still works after each refusal.
        send(&worker, b"c", &[&s]);
        assert!(recv_passed_fd(&controller).unwrap().is_some());
    }

    /// A stream socket of another protocol (MPTCP here; SCTP where loaded) is not TCP.
    #[test]
    fn a_stream_socket_of_another_protocol_is_refused() {
        use rustix::net::{ipproto, socket, AddressFamily as Af, SocketType};
        let (worker, controller) = pair();
        let (_c, tcp) = tcp_pair();
        let mut tried = 0;
        for proto in [ipproto::MPTCP, ipproto::SCTP] {
            let Ok(s) = socket(Af::INET, SocketType::STREAM, Some(proto)) else {
                continue;
            };
            tried += 1;
            send(&worker, b"c", &[&s]);
            let m = protocol_error(recv_passed_fd(&controller));
            assert!(m.contains("not TCP"), "{m}");
        }
        if tried == 0 {
            eprintln!("skipped: neither MPTCP nor SCTP sockets are available on this host");
        }
        send(&worker, b"c", &[&tcp]);
        assert!(recv_passed_fd(&controller).unwrap().is_some());
    }
}
