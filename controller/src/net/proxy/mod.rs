//! The egress proxy: what the controller does with a connection a sandbox opened to
//! `127.0.0.1:3128`.
//!
//! The worker of an egress-enabled sandbox accepts connections inside the sandbox's network
//! namespace and passes each one's fd to the controller ([`serve_channel`]); the controller
//! serves it as an HTTP proxy ([`serve_connection`]), one thread per connection:
//!
//! 1. Read the request head: at most [`MAX_HEAD_BYTES`], [`MAX_HEADERS`] header lines, every
//!    line ending in CRLF, within [`ProxyTimeouts::head`]. Anything else is `400` (`408` on
//!    timeout).
//! 2. `CONNECT host:port HTTP/1.1` opens a tunnel (`200 Connection established`, then a blind
//!    relay: TLS is not intercepted). `GET http://host/path HTTP/1.1` (any method, absolute
//!    form, `http` only) is forwarded with the request line in origin form, `Host` set from
//!    the URL, hop-by-hop and `Proxy-*` headers removed and `Connection: close` (one request
//!    per connection). Other forms (origin form, `https://` or other schemes, userinfo) are
//!    `400`.
//! 3. The host and port go through the workspace's allowlist and the operator's `deny`
//!    ([`EgressPolicy::check`]); a refusal is `403` with a one-line reason and what to ask the
//!    operator.
//! 4. The name is resolved (operator `resolve` overrides first, then DNS) and every address
//!    is vetted by the SSRF guard ([`ssrf::resolve_and_check_with`]): one refused address
//!    refuses the host (`403`), before any connection is attempted.
//! 5. The connection goes to a vetted address and only to one (`502` when none answers): the
//!    name is resolved once per connection, so DNS rebinding cannot swap the address.
//! 6. Bytes are relayed both ways (two threads), counted, capped by the workspace's bandwidth
//!    and ended after [`ProxyTimeouts::idle`] without a byte either way. When the origin
//!    closes, the connection ends; when the client half-closes, the origin still answers.
//!    The worker keeps a copy of every socket it passes and may set `O_NONBLOCK` on it at any
//!    time, so nothing here depends on the socket's blocking mode: every read and write on
//!    the client's socket is `MSG_DONTWAIT`, and waiting is `poll(2)` with a deadline (never
//!    a retry loop).
//! 7. One JSON line per connection goes to `<workspace>/net-audit.log` ([`AuditLog`]), and a
//!    `log` line at info (allowed) or warn (denied, failed). At most
//!    [`AUDIT_ALLOWED_PER_SEC`] allowed and [`AUDIT_REFUSALS_PER_SEC`] refused connections
//!    a second, and at most a daily byte budget, are written one by one per workspace; the
//!    rest are counted in summary lines, so a tenant cannot rotate its own history away.
//!
//! Caps: a workspace's connection cap (its `max_connections`, at most the operator's
//! `max_connections_ceiling`), its bandwidth limiters and its audit-log writer are shared by
//! every [`ProxyContext`] of that workspace made with [`ProxyContext::from_workspace`] in
//! this process (all its sandboxes together), and the operator's `max_connections_total`
//! caps the proxied connections of every workspace together in this process. Two controller
//! processes (two `bulkhead exec`) each apply the caps separately.
//!
//! What this does not stop: a tunnel carries whatever the client sends, so a client may name
//! another host in TLS SNI or `Host` to a server that serves many names on the vetted
//! address (domain fronting). The policy decides which addresses are reached, not which
//! virtual host answers there.
//!
//! Nothing secret goes through here: the controller adds no credentials, and neither the
//! audit log nor the log records paths, queries or headers of requests.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::logging::RotatingFile;
use crate::net::egress::{Denial, EgressPolicy, NetworkPolicy, OperatorNetwork};
use crate::net::ssrf::{self, Host, Scheme, SsrfError};
use crate::platform::{Platform, Workspace};

/// File name of a workspace's audit log (in the workspace directory, beside `files/`).
pub const AUDIT_LOG_NAME: &str = "net-audit.log";
/// Size past which the audit log is rotated to `net-audit.log.1` (one previous file kept).
pub const AUDIT_MAX_BYTES: u64 = 4 << 20;
/// Largest request head read.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in a request head.
pub const MAX_HEADERS: usize = 100;
/// Most vetted addresses tried when connecting.
const MAX_CONNECT_ATTEMPTS: usize = 4;
/// Relay buffer.
const RELAY_BUF: usize = 128 * 1024;
/// Refusals (denied and failed connections) written to a workspace's audit log per second at
/// most; the others of that second are counted and written as one summary line.
pub const AUDIT_REFUSALS_PER_SEC: u32 = 10;
/// Allowed connections written to a workspace's audit log per second at most; the others of
/// that second are counted and written as one summary line.
pub const AUDIT_ALLOWED_PER_SEC: u32 = 10;
/// While a workspace is past its audit log's daily budget, summary lines are written at most
/// this often.
pub const AUDIT_OVER_BUDGET_SUMMARY: Duration = Duration::from_secs(600);
/// The audit log's rate window.
const AUDIT_WINDOW: Duration = Duration::from_secs(1);
/// Longest a `400`/`403`/`503` answer may take to write.
const RESPOND_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error answer, what the client still sends is read (so closing does not reset the
/// connection before it reads the answer) for at most this long in all...
const DRAIN_DEADLINE: Duration = Duration::from_secs(1);
/// ...and only while it keeps sending: this long without a byte ends it.
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// Most bytes drained after an error answer.
const DRAIN_MAX: usize = 256 * 1024;

mod audit;
mod bandwidth;
mod connect;
mod context;
mod relay;
mod request;
mod serve;

pub use self::audit::*;
pub use self::connect::*;
pub use self::context::*;
pub use self::request::*;
pub use self::serve::*;
// Nothing public in these two: only their items the other files use.
use self::bandwidth::*;
use self::relay::*;

#[cfg(test)]
mod tests;
