//! Length-delimited bincode frames.
//!
//! `u32` little-endian payload length, then the payload. [`MAX_FRAME_BYTES`] is both the read
//! cap and bincode's decode limit: nothing a peer sends makes us buffer or allocate more.

use std::fmt;
use std::io::{self, Read, Write};

use bincode::{Decode, Encode};

/// Largest payload of one frame, in bytes (1 MiB). Used as the read cap and the decode limit.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// bincode configuration used on the wire.
pub type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME_BYTES>,
>;

/// The one configuration every end uses.
pub const fn wire_config() -> WireConfig {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_FRAME_BYTES>()
}

/// What can go wrong reading or writing a frame.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection at a frame boundary.
    Disconnected,
    /// The peer closed the connection in the middle of a frame.
    Truncated,
    /// The header announces more than [`MAX_FRAME_BYTES`].
    TooLarge(u64),
    /// The payload is not a valid message.
    Decode(String),
    /// The payload decoded but left bytes over.
    TrailingBytes(usize),
    /// A message could not be encoded (too large for one frame).
    Encode(String),
    /// The transport failed.
    Io(io::Error),
}

impl FrameError {
    /// The transport gave up at a deadline (`ControllerEnd::recv_until`,
    /// `ControllerEnd::request_until` in `bulkhead-shared`).
    pub fn is_timeout(&self) -> bool {
        matches!(self, FrameError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Disconnected => write!(f, "peer disconnected"),
            FrameError::Truncated => write!(f, "peer disconnected in the middle of a frame"),
            FrameError::TooLarge(n) => {
                write!(
                    f,
                    "frame of {n} bytes exceeds the {MAX_FRAME_BYTES}-byte limit"
                )
            }
            FrameError::Decode(e) => write!(f, "malformed frame: {e}"),
            FrameError::TrailingBytes(n) => write!(f, "malformed frame: {n} trailing bytes"),
            FrameError::Encode(e) => write!(f, "cannot encode frame: {e}"),
            FrameError::Io(e) => write!(f, "transport error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Encodes `msg` as one frame (header + payload).
pub fn encode_frame<T: Encode>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let mut buf = vec![0u8; 4];
    bincode::encode_into_std_write(msg, &mut buf, wire_config())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - 4;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::Encode(format!(
            "message of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte frame limit"
        )));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Decodes one payload (without header), refusing trailing bytes.
pub fn decode_payload<T: Decode<()>>(payload: &[u8]) -> Result<T, FrameError> {
    if payload.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(payload.len() as u64));
    }
    let (msg, used) = bincode::decode_from_slice(payload, wire_config())
        .map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::TrailingBytes(payload.len() - used));
    }
    Ok(msg)
}

/// Writes one frame.
pub fn write_frame<T: Encode, W: Write>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    let buf = encode_frame(msg)?;
    w.write_all(&buf)?;
    Ok(())
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on EOF before the first byte.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<bool, FrameError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(true)
}

/// Reads one frame's payload into `buf` (reused across calls; never grows past the cap).
pub fn read_payload<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut hdr = [0u8; 4];
    if !read_full(r, &mut hdr)? {
        return Err(FrameError::Disconnected);
    }
    let len = u32::from_le_bytes(hdr) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len as u64));
    }
    buf.clear();
    buf.resize(len, 0);
    if !read_full(r, buf)? && len > 0 {
        return Err(FrameError::Truncated);
    }
    Ok(())
}

/// Reads and decodes one frame.
pub fn read_frame<T: Decode<()>, R: Read>(r: &mut R) -> Result<T, FrameError> {
    let mut buf = Vec::new();
    read_payload(r, &mut buf)?;
    decode_payload(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ControllerMsg, WorkerMsg};
    use proptest::prelude::*;

    #[test]
    fn empty_read_is_disconnected() {
        let mut r: &[u8] = &[];
        assert!(matches!(
            read_frame::<ControllerMsg, _>(&mut r),
            Err(FrameError::Disconnected)
        ));
    }

    #[test]
    fn oversized_header_is_refused_before_reading() {
        let mut data = ((MAX_FRAME_BYTES as u32) + 1).to_le_bytes().to_vec();
        data.extend_from_slice(&[0; 16]);
        let mut r: &[u8] = &data;
        assert!(matches!(
            read_frame::<WorkerMsg, _>(&mut r),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn short_frame_is_truncated() {
        let mut data = 10u32.to_le_bytes().to_vec();
        data.extend_from_slice(&[1, 2, 3]);
        let mut r: &[u8] = &data;
        assert!(matches!(
            read_frame::<WorkerMsg, _>(&mut r),
            Err(FrameError::Truncated)
        ));
    }

    #[test]
    fn huge_length_prefix_inside_payload_does_not_allocate() {
        // A Vec<u8> length of u64::MAX inside a small frame must fail on the limit.
        let mut payload = vec![4u8]; // some variant index
        payload.push(253); // varint marker for u64
        payload.extend_from_slice(&u64::MAX.to_le_bytes());
        let _ = decode_payload::<ControllerMsg>(&payload);
        let _ = decode_payload::<WorkerMsg>(&payload);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let mut r: &[u8] = &data;
            let _ = read_frame::<ControllerMsg, _>(&mut r);
            let mut r: &[u8] = &data;
            let _ = read_frame::<WorkerMsg, _>(&mut r);
            let _ = decode_payload::<ControllerMsg>(&data);
            let _ = decode_payload::<WorkerMsg>(&data);
            let _ = decode_payload::<crate::msg::LauncherReport>(&data);
        }

        #[test]
        fn framed_arbitrary_payload_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut framed = (data.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&data);
            let mut r: &[u8] = &framed;
            let _ = read_frame::<ControllerMsg, _>(&mut r);
            let mut r: &[u8] = &framed;
            let _ = read_frame::<WorkerMsg, _>(&mut r);
        }
    }
}
