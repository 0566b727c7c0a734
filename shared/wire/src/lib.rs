//! The bulkhead wire protocol, shared by the controller, the launcher and the worker: the
//! part the launcher links. `bulkhead-shared` re-exports all of it and adds what only the
//! controller and the worker use (`ControllerEnd`, `RateLimiter`).
//!
//! Transport: one `AF_UNIX` `SOCK_STREAM` socketpair. A frame is a little-endian `u32`
//! payload length followed by that many bytes of bincode 2 (standard config, decode limit
//! [`MAX_FRAME_BYTES`]). The same constant caps what a reader will accept, so a hostile peer
//! can neither make us allocate more than one frame nor hang us on a short read.
//!
//! Each direction has one closed enum ([`ControllerMsg`], [`WorkerMsg`]); each end has its
//! own type (`ControllerEnd` in `bulkhead-shared`, [`WorkerEnd`]) whose verbs only send what that side may send.
#![forbid(unsafe_code)]

pub mod ends;
pub mod exit;
pub mod frame;
pub mod ids;
pub mod method;
pub mod msg;

pub use ends::WorkerEnd;
pub use frame::{FrameError, MAX_FRAME_BYTES};
pub use ids::{validate_workspace_id, IdError};
pub use method::MethodKind;
pub use msg::*;

/// Version of the protocol; sent by the worker in its first message ([`WorkerMsg::Hello`])
/// and checked by the controller. Bump it on any change to a message layout.
///
/// 2: [`ControllerMsg::Launch`] carries [`LaunchOptions`]; [`Attestation::egress_proxy`].
/// 3: [`LaunchSpec::binds`].
/// 4: [`Limits::io_weight`], [`Limits::io_max`], [`Limits::disk_bytes`], [`Limits::inodes`];
///    [`Attestation::rlimits`], [`Attestation::mounts`], [`Attestation::workspace_fs`].
/// 5: [`SetupError::reason`].
pub const PROTOCOL_VERSION: u32 = 5;

/// TCP port of the egress proxy endpoint inside a sandbox launched with
/// [`LaunchOptions::egress`]: the worker listens on `127.0.0.1:PROXY_PORT` (in the sandbox's
/// own network namespace) and hands every accepted connection to the controller.
pub const PROXY_PORT: u16 = 3128;

/// The fd on which the launcher receives, and the worker keeps, the egress channel: an
/// `AF_UNIX` `SOCK_SEQPACKET` socket (present only with [`LaunchOptions::egress`]). The
/// worker sends each accepted proxy connection over it as one message: a 1-byte payload and
/// one fd in `SCM_RIGHTS`. Nothing is ever sent the other way.
pub const EGRESS_FD: i32 = 5;
