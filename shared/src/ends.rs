//! The controller's end of the socket ([`ControllerEnd`]): it can only send what the
//! controller may send. The worker's end, [`WorkerEnd`], is in `bulkhead-wire` (the launcher
//! links that crate, not this one).

use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Instant;

pub use bulkhead_wire::ends::WorkerEnd;
use bulkhead_wire::frame::{decode_payload, encode_frame, read_payload, FrameError};
use bulkhead_wire::msg::*;

/// The controller's end: sends the spec and requests, receives [`WorkerMsg`].
#[derive(Debug)]
pub struct ControllerEnd {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    buf: Vec<u8>,
}

impl ControllerEnd {
    /// Wraps a connected stream.
    pub fn new(sock: UnixStream) -> std::io::Result<Self> {
        let writer = sock.try_clone()?;
        Ok(ControllerEnd {
            reader: BufReader::with_capacity(64 * 1024, sock),
            writer,
            buf: Vec::new(),
        })
    }

    /// A second handle for writing from another thread (cancel while a reader waits).
    pub fn try_clone_writer(&self) -> std::io::Result<ControllerWriter> {
        Ok(ControllerWriter(self.writer.try_clone()?))
    }

    fn send(&mut self, msg: &ControllerMsg) -> Result<(), FrameError> {
        let buf = encode_frame(msg)?;
        self.writer.write_all(&buf)?;
        Ok(())
    }

    /// First frame: what to build, with default [`LaunchOptions`] (no egress).
    pub fn send_launch(&mut self, spec: &LaunchSpec) -> Result<(), FrameError> {
        self.send_launch_with(spec, &LaunchOptions::default())
    }

    /// First frame: what to build, and how.
    pub fn send_launch_with(
        &mut self,
        spec: &LaunchSpec,
        options: &LaunchOptions,
    ) -> Result<(), FrameError> {
        self.send(&ControllerMsg::Launch(spec.clone(), options.clone()))
    }

    /// Sends a tool request.
    pub fn request(&mut self, id: u64, body: &Request) -> Result<(), FrameError> {
        self.send(&ControllerMsg::Request {
            id,
            body: body.clone(),
        })
    }

    /// Sends an exec request.
    pub fn request_exec(&mut self, id: u64, req: ExecRequest) -> Result<(), FrameError> {
        self.send(&ControllerMsg::Request {
            id,
            body: Request::Exec(req),
        })
    }

    /// Cancels a request.
    pub fn cancel(&mut self, id: u64) -> Result<(), FrameError> {
        self.send(&ControllerMsg::Cancel { id })
    }

    /// Asks the worker to kill everything and exit.
    pub fn shutdown(&mut self) -> Result<(), FrameError> {
        self.send(&ControllerMsg::Shutdown)
    }

    /// Receives the next message from the worker (hostile input: capped and checked).
    pub fn recv(&mut self) -> Result<WorkerMsg, FrameError> {
        read_payload(&mut self.reader, &mut self.buf)?;
        decode_payload(&self.buf)
    }

    /// Sends a tool request, giving up at `deadline` (a peer that stops reading cannot block
    /// the sender past it). After a timeout part of the frame may have been sent: the
    /// connection is unusable and the caller must end it.
    pub fn request_until(
        &mut self,
        id: u64,
        body: &Request,
        deadline: Instant,
    ) -> Result<(), FrameError> {
        let buf = encode_frame(&ControllerMsg::Request {
            id,
            body: body.clone(),
        })?;
        write_all_until(&self.writer, &buf, deadline)?;
        Ok(())
    }

    /// Receives the next message, giving up at `deadline` with [`FrameError::Io`] of kind
    /// [`io::ErrorKind::TimedOut`] (see [`FrameError::is_timeout`]). The deadline bounds the
    /// whole frame, not each read: a peer that trickles one byte at a time cannot stretch
    /// it. After a timeout the stream may sit inside a frame: the caller must end the
    /// connection.
    pub fn recv_until(&mut self, deadline: Instant) -> Result<WorkerMsg, FrameError> {
        let mut r = UntilReader {
            inner: &mut self.reader,
            deadline,
        };
        read_payload(&mut r, &mut self.buf)?;
        decode_payload(&self.buf)
    }

    /// The underlying socket (for timeouts and shutdown).
    pub fn socket(&self) -> &UnixStream {
        &self.writer
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the deadline passed")
}

/// What is left until `deadline`, or a timeout error when nothing is.
fn left(deadline: Instant) -> io::Result<std::time::Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(timed_out())
    } else {
        Ok(left)
    }
}

/// A timeout of a blocking socket call (`SO_RCVTIMEO`/`SO_SNDTIMEO` expired) as
/// [`io::ErrorKind::TimedOut`].
fn map_timeout(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        timed_out()
    } else {
        e
    }
}

/// Reads from the buffered socket, each blocking read bounded by what is left until the
/// deadline.
struct UntilReader<'a> {
    inner: &'a mut BufReader<UnixStream>,
    deadline: Instant,
}

impl Read for UntilReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = left(self.deadline)?;
        if self.inner.buffer().is_empty() {
            self.inner.get_ref().set_read_timeout(Some(left))?;
        }
        self.inner.read(buf).map_err(map_timeout)
    }
}

/// `write_all` with every blocking write bounded by what is left until `deadline`.
fn write_all_until(mut sock: &UnixStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        sock.set_write_timeout(Some(left(deadline)?))?;
        match sock.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(map_timeout(e)),
        }
    }
    Ok(())
}

/// Write-only controller handle (cancel / shutdown from another thread).
#[derive(Debug)]
pub struct ControllerWriter(UnixStream);

impl ControllerWriter {
    /// Cancels a request.
    pub fn cancel(&mut self, id: u64) -> Result<(), FrameError> {
        self.0
            .write_all(&encode_frame(&ControllerMsg::Cancel { id })?)?;
        Ok(())
    }

    /// Asks the worker to exit.
    pub fn shutdown(&mut self) -> Result<(), FrameError> {
        self.0.write_all(&encode_frame(&ControllerMsg::Shutdown)?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (ControllerEnd, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (ControllerEnd::new(a).unwrap(), b)
    }

    #[test]
    fn recv_until_gives_up_at_the_deadline_when_the_peer_is_silent() {
        let (mut end, _peer) = pair();
        let t0 = Instant::now();
        let e = end.recv_until(t0 + Duration::from_millis(300)).unwrap_err();
        let took = t0.elapsed();
        assert!(e.is_timeout(), "{e}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // A deadline already passed fails at once.
        let e = end.recv_until(Instant::now()).unwrap_err();
        assert!(e.is_timeout(), "{e}");
    }

    #[test]
    fn a_peer_trickling_bytes_cannot_stretch_the_deadline() {
        let (mut end, mut peer) = pair();
        let frame = encode_frame(&WorkerMsg::Response {
            id: 1,
            result: Ok(Reply::Pong),
        })
        .unwrap();
        let writer = std::thread::spawn(move || {
            for b in frame {
                if peer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(150));
            }
            // Keep the connection open a while so the end is not end of file.
            std::thread::sleep(Duration::from_secs(3));
        });
        let t0 = Instant::now();
        let e = end.recv_until(t0 + Duration::from_millis(400)).unwrap_err();
        let took = t0.elapsed();
        assert!(e.is_timeout(), "{e}");
        assert!(took < Duration::from_millis(1200), "{took:?}");
        drop(end);
        writer.join().unwrap();
    }

    #[test]
    fn recv_until_returns_a_frame_that_arrives_in_time() {
        let (mut end, peer) = pair();
        let mut w = WorkerEnd::new(peer);
        w.respond(7, Ok(Reply::Pong)).unwrap();
        let m = end
            .recv_until(Instant::now() + Duration::from_secs(5))
            .unwrap();
        assert!(matches!(m, WorkerMsg::Response { id: 7, .. }), "{m:?}");
    }

    #[test]
    fn request_until_gives_up_when_the_peer_stops_reading() {
        let (mut end, _peer) = pair();
        let body = Request::Write {
            path: "a".into(),
            data: vec![0u8; 600 * 1024],
            mode: 0o644,
            create_parents: false,
        };
        let t0 = Instant::now();
        let mut last = Ok(());
        // The socket buffer takes a few frames; then the writes block until the deadline.
        for id in 0..64 {
            last = end.request_until(id, &body, t0 + Duration::from_millis(400));
            if last.is_err() {
                break;
            }
        }
        let e = last.unwrap_err();
        assert!(e.is_timeout(), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}
