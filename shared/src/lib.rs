//! The bulkhead wire protocol, shared by the controller, the launcher and the worker.
//!
//! The protocol itself (frame codec, messages, [`PROTOCOL_VERSION`], id validation, the
//! worker's end) is the crate `bulkhead-wire` (`shared/wire/`), re-exported here whole; the
//! launcher links that crate only. This crate adds what the controller and the worker use
//! and the privileged launcher does not: the controller's end of the socket
//! ([`ControllerEnd`], with deadlines) and the per-method [`RateLimiter`].
//!
//! Transport: one `AF_UNIX` `SOCK_STREAM` socketpair. A frame is a little-endian `u32`
//! payload length followed by that many bytes of bincode 2 (standard config, decode limit
//! [`MAX_FRAME_BYTES`]). The same constant caps what a reader will accept, so a hostile peer
//! can neither make us allocate more than one frame nor hang us on a short read.
//!
//! Each direction has one closed enum ([`ControllerMsg`], [`WorkerMsg`]); each end has its
//! own type ([`ControllerEnd`], [`WorkerEnd`]) whose verbs only send what that side may send.
#![forbid(unsafe_code)]

pub use bulkhead_wire::*;

pub mod ends;
#[cfg(test)]
mod golden;
pub mod ratelimit;

pub use ends::ControllerEnd;
pub use ratelimit::{RateLimiter, TokenBucket, DEFAULT_RATE_PER_SEC};
