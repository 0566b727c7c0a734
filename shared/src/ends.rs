//! Typed ends of the socket: each side can only send what it may send.

use std::io::{BufReader, Write};
use std::os::unix::net::UnixStream;

use crate::frame::{decode_payload, encode_frame, read_payload, FrameError};
use crate::msg::*;

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

    /// The underlying socket (for timeouts and shutdown).
    pub fn socket(&self) -> &UnixStream {
        &self.writer
    }
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
