//! The worker's end of the socket, which the launcher also uses before it execs the worker:
//! it can only send what the worker may send. The controller's end is `ControllerEnd` in
//! `bulkhead-shared`.

use std::io::Write;
use std::os::unix::net::UnixStream;

use crate::frame::{decode_payload, encode_frame, read_payload, FrameError};
use crate::msg::*;

/// The worker's (and launcher's) end: receives [`ControllerMsg`], sends [`WorkerMsg`].
#[derive(Debug)]
pub struct WorkerEnd {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl WorkerEnd {
    /// Wraps a connected stream.
    pub fn new(sock: UnixStream) -> Self {
        WorkerEnd {
            sock,
            buf: Vec::new(),
        }
    }

    fn send(&mut self, msg: &WorkerMsg) -> Result<(), FrameError> {
        let buf = encode_frame(msg)?;
        self.sock.write_all(&buf)?;
        Ok(())
    }

    /// Reports a setup failure (launcher, before exec).
    pub fn setup_failed(&mut self, err: SetupError) -> Result<(), FrameError> {
        self.send(&WorkerMsg::SetupFailed(err))
    }

    /// First message of the worker.
    pub fn hello(&mut self, attestation: Attestation) -> Result<(), FrameError> {
        self.send(&WorkerMsg::Hello {
            version: crate::PROTOCOL_VERSION,
            attestation,
        })
    }

    /// A chunk of output.
    pub fn output(&mut self, id: u64, stream: Stream, data: Vec<u8>) -> Result<(), FrameError> {
        self.send(&WorkerMsg::Output { id, stream, data })
    }

    /// Final answer to a request.
    pub fn respond(&mut self, id: u64, result: Result<Reply, ToolError>) -> Result<(), FrameError> {
        self.send(&WorkerMsg::Response { id, result })
    }

    /// Receives the next controller message (blocking).
    pub fn recv(&mut self) -> Result<ControllerMsg, FrameError> {
        read_payload(&mut self.sock, &mut self.buf)?;
        decode_payload(&self.buf)
    }

    /// The underlying socket (for poll).
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }
}
