//! The worker's end of the controller socket, non-blocking.
//!
//! `bulkhead_shared::WorkerEnd` does blocking I/O, which a poll loop cannot use: a controller
//! that is slow to read would stall timeouts, and half a frame would hang the loop. This is
//! the same protocol (the shared codec, [`MAX_FRAME_BYTES`] as both the read cap and decode
//! limit, only [`WorkerMsg`] going out) over an incremental reader and a send queue. The queue's
//! length is the back-pressure signal: the loop stops reading command output while it is long.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bulkhead_shared::frame::{decode_payload, encode_frame};
use bulkhead_shared::{
    ControllerMsg, FrameError, ToolError, ToolErrorKind, WorkerMsg, MAX_FRAME_BYTES,
};

use crate::sys;

/// Read granularity for small frames.
const READ_CHUNK: usize = 8 * 1024;
/// Buffers above this are released when they empty.
const KEEP_BYTES: usize = 64 * 1024;

/// Where messages to the controller go (the connection, or a `Vec` in unit tests).
pub trait Outbox {
    /// Queues one message.
    fn send(&mut self, msg: WorkerMsg);
}

impl Outbox for Vec<WorkerMsg> {
    fn send(&mut self, msg: WorkerMsg) {
        self.push(msg);
    }
}

/// The framed, non-blocking controller connection.
#[derive(Debug)]
pub struct Conn {
    sock: UnixStream,
    /// Received bytes; `inbuf[start..filled]` is not yet decoded.
    inbuf: Vec<u8>,
    start: usize,
    filled: usize,
    /// Encoded frames not yet written; `outq[out_off..]` is pending.
    outq: Vec<u8>,
    out_off: usize,
}

impl Conn {
    /// Wraps the socket and makes it non-blocking.
    pub fn new(sock: UnixStream) -> io::Result<Conn> {
        sys::set_nonblocking(sock.as_fd())?;
        Ok(Conn {
            sock,
            inbuf: Vec::new(),
            start: 0,
            filled: 0,
            outq: Vec::new(),
            out_off: 0,
        })
    }

    /// The socket's fd, for poll.
    pub fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Bytes queued but not yet written.
    pub fn pending(&self) -> usize {
        self.outq.len() - self.out_off
    }

    /// Writes queued bytes until the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_off < self.outq.len() {
            match self.sock.write(&self.outq[self.out_off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if self.out_off == self.outq.len() {
            self.outq.clear();
            self.out_off = 0;
            if self.outq.capacity() > KEEP_BYTES {
                self.outq = Vec::new();
            }
        }
        Ok(())
    }

    /// Writes what is queued, waiting for the socket up to `deadline` (used on the way out).
    pub fn flush_until(&mut self, deadline: Instant) {
        while self.pending() > 0 {
            if self.flush().is_err() {
                return;
            }
            let now = Instant::now();
            if self.pending() == 0 || now >= deadline {
                return;
            }
            let mut pfd = [libc::pollfd {
                fd: self.raw_fd(),
                events: libc::POLLOUT,
                revents: 0,
            }];
            let ms = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if sys::poll(&mut pfd, ms.as_millis().min(1000) as libc::c_int).is_err() {
                return;
            }
        }
    }

    /// Reads once from the socket. `Ok(false)` on end of file.
    pub fn fill(&mut self) -> io::Result<bool> {
        if self.start > 0 {
            self.inbuf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        // Room for the rest of the current frame when its header is in, else a small chunk;
        // never more than one maximal frame plus a chunk.
        let want = match self.header() {
            Some(len) => (4 + len).saturating_sub(self.filled).max(READ_CHUNK),
            None => READ_CHUNK,
        };
        let size = (self.filled + want).min(4 + MAX_FRAME_BYTES + READ_CHUNK);
        if self.inbuf.len() < size {
            self.inbuf.resize(size, 0);
        }
        if self.filled == self.inbuf.len() {
            // Full of frames not yet handled (the send queue is long): read later.
            return Ok(true);
        }
        loop {
            match self.sock.read(&mut self.inbuf[self.filled..]) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.filled += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Length announced by the header of the next frame, if its header is in.
    fn header(&self) -> Option<usize> {
        let h = self.inbuf.get(self.start..self.start + 4)?;
        if self.filled < self.start + 4 {
            return None;
        }
        Some(u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
    }

    /// Decodes the next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<ControllerMsg>, FrameError> {
        let Some(len) = self.header() else {
            return Ok(None);
        };
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::TooLarge(len as u64));
        }
        let end = self.start + 4 + len;
        if self.filled < end {
            return Ok(None);
        }
        let msg = decode_payload(&self.inbuf[self.start + 4..end])?;
        self.start = end;
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            if self.inbuf.len() > KEEP_BYTES {
                self.inbuf = Vec::new();
            }
        }
        Ok(Some(msg))
    }
}

impl Outbox for Conn {
    fn send(&mut self, msg: WorkerMsg) {
        let frame = match encode_frame(&msg) {
            Ok(f) => f,
            // Only a reply too large for a frame can fail; answer it with an error instead
            // (every producer caps its sizes well below the limit, so this is a backstop).
            Err(e) => match msg {
                WorkerMsg::Response { id, .. } => {
                    let err = ToolError {
                        kind: ToolErrorKind::TooLarge,
                        message: format!("reply not sent: {e}"),
                    };
                    match encode_frame(&WorkerMsg::Response {
                        id,
                        result: Err(err),
                    }) {
                        Ok(f) => f,
                        Err(_) => return,
                    }
                }
                _ => return,
            },
        };
        if self.outq.is_empty() {
            self.outq = frame;
        } else {
            self.outq.extend_from_slice(&frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_shared::{ControllerEnd, Request};

    #[test]
    fn reassembles_frames_split_anywhere() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(b).unwrap();
        let writer = std::thread::spawn(move || {
            let mut ctl = ControllerEnd::new(a).unwrap();
            for id in 0..50 {
                ctl.request(id, &Request::Ping).unwrap();
            }
            let big = Request::Write {
                path: "/x".into(),
                data: vec![7; 300_000],
                mode: 0o644,
                create_parents: false,
            };
            ctl.request(99, &big).unwrap();
        });
        let mut got = Vec::new();
        while got.len() < 51 {
            assert!(conn.fill().unwrap());
            std::thread::yield_now();
            while let Some(m) = conn.next_frame().unwrap() {
                got.push(m);
            }
        }
        assert!(matches!(got[50], ControllerMsg::Request { id: 99, .. }));
        assert_eq!(conn.filled, conn.start);
        assert!(conn.inbuf.len() <= KEEP_BYTES);
        writer.join().unwrap();
        assert!(!conn.fill().unwrap());
    }

    #[test]
    fn refuses_an_oversized_header_before_reading_it() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(b).unwrap();
        a.write_all(&((MAX_FRAME_BYTES as u32) + 1).to_le_bytes())
            .unwrap();
        conn.fill().unwrap();
        assert!(matches!(conn.next_frame(), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn queues_and_flushes() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut ctl = ControllerEnd::new(a).unwrap();
        let mut conn = Conn::new(b).unwrap();
        conn.send(WorkerMsg::Response {
            id: 1,
            result: Ok(bulkhead_shared::Reply::Pong),
        });
        assert!(conn.pending() > 0);
        conn.flush().unwrap();
        assert_eq!(conn.pending(), 0);
        assert!(matches!(
            ctl.recv().unwrap(),
            WorkerMsg::Response { id: 1, .. }
        ));
    }
}
