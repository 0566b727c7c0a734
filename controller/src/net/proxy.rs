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

// ---------------------------------------------------------------------------------------------
// Pluggable resolution and connection
// ---------------------------------------------------------------------------------------------

/// Resolves a host name to addresses. The proxy calls it once per connection and connects
/// only to what it returned (after vetting). A closure `|name: &str, port: u16| -> Result<Vec<IpAddr>, String>`
/// is one.
pub trait Resolve: Send + Sync {
    /// The addresses of `name` (lowercase, no trailing dot), or why there are none.
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String>;
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> std::result::Result<Vec<IpAddr>, String> + Send + Sync,
{
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String> {
        self(name, port)
    }
}

/// The default resolver: the operator's `[network] resolve` answers first, then the system
/// resolver (with a timeout).
#[derive(Debug, Clone)]
pub struct DnsResolver {
    operator: OperatorNetwork,
    timeout: Duration,
}

impl DnsResolver {
    /// Overrides from `operator.resolve`, then DNS, each lookup given at most `timeout`.
    pub fn new(operator: &OperatorNetwork, timeout: Duration) -> Self {
        DnsResolver {
            operator: operator.clone(),
            timeout,
        }
    }
}

impl Resolve for DnsResolver {
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String> {
        if let Some(v) = self.operator.resolve_override(name) {
            return Ok(v);
        }
        ssrf::system_lookup(name, port, self.timeout)
            .map(|v| v.into_iter().map(|a| a.ip()).collect())
            .map_err(|e| match e {
                SsrfError::Resolve { message, .. } => message,
                other => other.to_string(),
            })
    }
}

/// Opens the connection to a vetted address. The default is
/// [`TcpStream::connect_timeout`]; a test can wrap it to record every address dialed.
pub trait Connect: Send + Sync {
    /// Connects to `addr` within `timeout`.
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream>;
}

impl<F> Connect for F
where
    F: Fn(SocketAddr, Duration) -> io::Result<TcpStream> + Send + Sync,
{
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self(addr, timeout)
    }
}

/// [`TcpStream::connect_timeout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnect;

impl Connect for DirectConnect {
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        TcpStream::connect_timeout(&addr, timeout)
    }
}

/// Timeouts of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// Reading the whole request head (default 10 s).
    pub head: Duration,
    /// DNS resolution (default 10 s).
    pub resolve: Duration,
    /// Connecting to one vetted address (default 10 s).
    pub connect: Duration,
    /// A relay with no byte either way for this long is closed (default 5 min); also the
    /// longest a write may block.
    pub idle: Duration,
}

impl Default for ProxyTimeouts {
    fn default() -> Self {
        ProxyTimeouts {
            head: Duration::from_secs(10),
            resolve: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Accounting
// ---------------------------------------------------------------------------------------------

/// Live counters of one workspace's proxy (shared by its connections).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Bytes sent from the sandbox to origins.
    pub bytes_up: AtomicU64,
    /// Bytes sent from origins to the sandbox.
    pub bytes_down: AtomicU64,
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections finished (counted when they close).
    pub total: AtomicU64,
    /// Connections refused (policy, malformed request, connection cap).
    pub denied: AtomicU64,
    /// Connections allowed whose origin could not be resolved or reached.
    pub failed: AtomicU64,
}

/// Totals of connections, from [`NetCounters`] or an audit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetTotals {
    /// Connections.
    pub connections: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
    /// Failed (allowed, but the origin could not be reached).
    pub failed: u64,
    /// Bytes from the sandbox to origins.
    pub bytes_up: u64,
    /// Bytes from origins to the sandbox.
    pub bytes_down: u64,
}

impl NetCounters {
    /// A snapshot.
    pub fn totals(&self) -> NetTotals {
        let total = self.total.load(Ordering::Relaxed);
        let denied = self.denied.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        NetTotals {
            connections: total,
            allowed: total.saturating_sub(denied + failed),
            denied,
            failed,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// The outcome of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed and relayed.
    Allowed,
    /// Refused: policy, malformed request, connection cap.
    Denied,
    /// Allowed, but the name did not resolve or no vetted address answered.
    Failed,
}

impl Decision {
    /// `allowed`, `denied`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Failed => "failed",
        }
    }
}

/// One connection, as recorded in the audit log (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// Start, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Workspace id.
    pub workspace: String,
    /// Host as requested, normalized (empty when the request could not be read).
    pub host: String,
    /// Port (0 when the request could not be read).
    pub port: u16,
    /// `CONNECT`, `GET`, … (`-` when the request could not be read).
    pub method: String,
    /// What happened.
    pub decision: Decision,
    /// Why, when denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Status the proxy answered (a relayed request: the origin's status, when it sent one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The vetted address connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Bytes from the sandbox to the origin.
    pub bytes_up: u64,
    /// Bytes from the origin to the sandbox.
    pub bytes_down: u64,
    /// From accept to close, in milliseconds.
    pub duration_ms: u64,
    /// A summary line: this many connections were not written one by one (see
    /// [`AuditLog`]); `decision` says which kind. Absent on connection lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

/// The audit log of one workspace: one JSON line per connection, appended (`O_APPEND`, one
/// write per line), rotated past a size to `<file>.1` (one previous file kept).
///
/// A tenant decides how many connections it makes, so it must not decide how fast its own
/// history is pushed out by rotation. Two limits, for allowed and refused connections
/// alike:
/// - a rate: at most [`AUDIT_REFUSALS_PER_SEC`] refusals (denied, failed) and
///   [`AUDIT_ALLOWED_PER_SEC`] allowed connections are written per second; the others of
///   that second are counted and written as one summary line per kind (`"suppressed": N`,
///   reason `N more denied connections suppressed`; an allowed summary carries their bytes),
///   when the next line is written after the second ended, or when the log is closed;
/// - a daily budget: at most [`AuditLog::day_budget`] bytes of connection lines per UTC day
///   (by default half the rotation size, counting what the files already hold of today when
///   opened); past it connections are only counted, and their summary lines are written at
///   most once per [`AUDIT_OVER_BUDGET_SUMMARY`].
///
/// A line is rotated away only after the rotation size has been written after it, so at the
/// default sizes a line stays at least two days (`AUDIT_MAX_BYTES` / budget), whatever the
/// tenant does. Totals ([`audit_totals`]) stay exact: summaries count what they stand for.
/// The limits are per process, like the connection caps.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    inner: Mutex<AuditInner>,
}

#[derive(Debug, Default)]
struct Suppressed {
    count: u64,
    bytes_up: u64,
    bytes_down: u64,
}

#[derive(Debug)]
struct AuditInner {
    file: RotatingFile,
    /// Start of the current rate window (the first line in it).
    window: Option<Instant>,
    /// Refusals written in the window.
    written: u32,
    /// Allowed connections written in the window.
    written_allowed: u32,
    /// Counted, not written: allowed, denied, failed.
    suppressed: [Suppressed; 3],
    /// Workspace of the suppressed records.
    workspace: String,
    /// The UTC day (`YYYY-MM-DD`) `day_bytes` counts.
    day: String,
    /// Bytes of lines written on `day`.
    day_bytes: u64,
    /// Most bytes of lines per day.
    budget: u64,
    /// A line of `day` was refused for the budget.
    over: bool,
    /// When summaries were last written while over the day's budget.
    over_summary: Option<Instant>,
}

fn kind_index(d: Decision) -> usize {
    match d {
        Decision::Allowed => 0,
        Decision::Denied => 1,
        Decision::Failed => 2,
    }
}

/// `YYYY-MM-DD` of an RFC 3339 timestamp.
fn day_of(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

/// Bytes of the lines of `day` in the audit files at `path` (the previous one, then the
/// current one).
fn bytes_of_day(path: &Path, day: &str) -> u64 {
    let mut n = 0u64;
    for p in [rotated(path), path.to_path_buf()] {
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        for line in text.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<ConnRecord>(line) {
                if day_of(&r.ts) == day {
                    n = n.saturating_add(line.len() as u64 + 1);
                }
            }
        }
    }
    n
}

impl AuditLog {
    /// Opens `path` for appending, rotated past [`AUDIT_MAX_BYTES`].
    pub fn open(path: impl Into<PathBuf>) -> Result<AuditLog> {
        Self::open_with(path, AUDIT_MAX_BYTES)
    }

    /// Opens `path` for appending, rotated past `max_bytes`, with a daily budget of half
    /// that.
    pub fn open_with(path: impl Into<PathBuf>, max_bytes: u64) -> Result<AuditLog> {
        let path = path.into();
        let file = RotatingFile::open(path.clone(), max_bytes, 1).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let day = day_of(&crate::util::time::timestamp_now()).to_string();
        let day_bytes = bytes_of_day(&path, &day);
        Ok(AuditLog {
            path,
            inner: Mutex::new(AuditInner {
                file,
                window: None,
                written: 0,
                written_allowed: 0,
                suppressed: Default::default(),
                workspace: String::new(),
                day,
                day_bytes,
                budget: max_bytes / 2,
                over: false,
                over_summary: None,
            }),
        })
    }

    /// Sets the daily budget in bytes (see [`AuditLog`]).
    pub fn with_day_budget(self, bytes: u64) -> AuditLog {
        lock(&self.inner).budget = bytes;
        self
    }

    /// The daily budget in bytes.
    pub fn day_budget(&self) -> u64 {
        lock(&self.inner).budget
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a failure is logged, never fatal to the connection). Returns
    /// whether it was written: past the rate or the day's budget it is only counted, for
    /// a summary line.
    pub fn append(&self, r: &ConnRecord) -> bool {
        self.append_at(r, Instant::now())
    }

    /// Writes the summary lines of a rate window that has ended, if connections were
    /// suppressed in it (otherwise written with the next line, or when the log is closed).
    pub fn flush_suppressed(&self) {
        let mut g = lock(&self.inner);
        if g.window.is_some_and(|w| w.elapsed() >= AUDIT_WINDOW) {
            end_window(&self.path, &mut g, Instant::now(), false);
        }
    }

    fn append_at(&self, r: &ConnRecord, now: Instant) -> bool {
        let mut g = lock(&self.inner);
        if g.window
            .is_some_and(|w| now.saturating_duration_since(w) >= AUDIT_WINDOW)
        {
            end_window(&self.path, &mut g, now, false);
        }
        let today = crate::util::time::timestamp_now();
        if day_of(&today) != g.day {
            g.day = day_of(&today).to_string();
            g.day_bytes = 0;
            g.over = false;
            g.over_summary = None;
        }
        g.window.get_or_insert(now);
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let over_rate = match r.decision {
            Decision::Allowed => g.written_allowed >= AUDIT_ALLOWED_PER_SEC,
            _ => g.written >= AUDIT_REFUSALS_PER_SEC,
        };
        let over_budget = g.day_bytes.saturating_add(line.len() as u64) > g.budget;
        if over_budget {
            g.over = true;
        }
        if over_rate || over_budget {
            let s = &mut g.suppressed[kind_index(r.decision)];
            s.count += 1;
            s.bytes_up = s.bytes_up.saturating_add(r.bytes_up);
            s.bytes_down = s.bytes_down.saturating_add(r.bytes_down);
            if g.workspace != r.workspace {
                g.workspace = r.workspace.clone();
            }
            return false;
        }
        match r.decision {
            Decision::Allowed => g.written_allowed += 1,
            _ => g.written += 1,
        }
        g.day_bytes = g.day_bytes.saturating_add(line.len() as u64);
        write_raw(&self.path, &mut g.file, &line, &r.workspace);
        true
    }
}

/// Closes the rate window: one summary line per kind of connection suppressed in it. While
/// over the day's budget the counts are kept and written at most once per
/// [`AUDIT_OVER_BUDGET_SUMMARY`], unless `last` (the log is closing).
fn end_window(path: &Path, g: &mut AuditInner, now: Instant, last: bool) {
    g.window = None;
    g.written = 0;
    g.written_allowed = 0;
    if g.suppressed.iter().all(|s| s.count == 0) {
        return;
    }
    let over_budget = g.over;
    if over_budget && !last {
        if g.over_summary
            .is_some_and(|t| now.saturating_duration_since(t) < AUDIT_OVER_BUDGET_SUMMARY)
        {
            return;
        }
        g.over_summary = Some(now);
    }
    let why = if over_budget {
        format!(
            "past {AUDIT_ALLOWED_PER_SEC} allowed and {AUDIT_REFUSALS_PER_SEC} refused a second, \
             or past the day's audit budget of {} bytes: only counted",
            g.budget
        )
    } else {
        format!(
            "past {AUDIT_ALLOWED_PER_SEC} allowed and {AUDIT_REFUSALS_PER_SEC} refused a second: \
             only counted"
        )
    };
    for decision in [Decision::Allowed, Decision::Denied, Decision::Failed] {
        let s = std::mem::take(&mut g.suppressed[kind_index(decision)]);
        if s.count == 0 {
            continue;
        }
        let n = s.count;
        let kind = decision.as_str();
        let rec = ConnRecord {
            ts: crate::util::time::timestamp_now(),
            workspace: g.workspace.clone(),
            host: String::new(),
            port: 0,
            method: "-".into(),
            decision,
            reason: Some(format!(
                "suppressed: {n} more {kind} connections suppressed ({why})"
            )),
            status: None,
            addr: None,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
            duration_ms: 0,
            suppressed: Some(n),
        };
        log::warn!(target: "egress", workspace = g.workspace.as_str(); "{n} more {kind} egress connections not logged one by one");
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        g.day_bytes = g.day_bytes.saturating_add(line.len() as u64);
        write_raw(path, &mut g.file, &line, &rec.workspace);
    }
}

fn write_raw(path: &Path, f: &mut RotatingFile, line: &[u8], workspace: &str) {
    if let Err(e) = f.write_all(line) {
        log::warn!(target: "egress", workspace = workspace; "cannot append to {}: {e}", path.display());
    }
}

impl Drop for AuditLog {
    /// Writes the summaries still counted.
    fn drop(&mut self) {
        let inner = match self.inner.get_mut() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        end_window(&self.path, inner, Instant::now(), true);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Reads an audit log (the previous file, then the current one), oldest first; with
/// `limit`, only the newest `limit` records. Lines that do not parse (a torn last line) are
/// skipped. A missing file is an empty log.
pub fn read_audit_log(path: &Path, limit: Option<usize>) -> Result<Vec<ConnRecord>> {
    let mut out = Vec::new();
    for p in [rotated(path), path.to_path_buf()] {
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&p, e)),
        };
        for line in text.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<ConnRecord>(line) {
                out.push(r);
            }
        }
    }
    if let Some(n) = limit {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    Ok(out)
}

/// Totals over an audit log (both files); a summary line counts the refusals it stands for.
pub fn audit_totals(path: &Path) -> Result<NetTotals> {
    let mut t = NetTotals::default();
    for r in read_audit_log(path, None)? {
        let n = r.suppressed.unwrap_or(1);
        t.connections += n;
        match r.decision {
            Decision::Allowed => t.allowed += n,
            Decision::Denied => t.denied += n,
            Decision::Failed => t.failed += n,
        }
        t.bytes_up += r.bytes_up;
        t.bytes_down += r.bytes_down;
    }
    Ok(t)
}

// ---------------------------------------------------------------------------------------------
// Bandwidth
// ---------------------------------------------------------------------------------------------

/// A byte-rate limiter shared by a workspace's connections (one per direction): virtual
/// scheduling with 100 ms of burst.
#[derive(Debug)]
struct RateLimiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl RateLimiter {
    fn new(rate: u64) -> Self {
        RateLimiter {
            rate: rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Largest chunk to read at once (≈ 50 ms of the rate).
    fn chunk(&self) -> usize {
        ((self.rate / 20) as usize).clamp(512, RELAY_BUF)
    }

    /// Accounts `n` bytes; returns how long to wait before sending them.
    fn take(&self, n: usize) -> Duration {
        let cost = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let now = Instant::now();
        let mut next = match self.next.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let floor = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
        let start = (*next).max(floor);
        *next = start + cost;
        next.saturating_duration_since(now)
    }
}

// ---------------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------------

/// A workspace's bandwidth limiters (one per direction) for the rate in force, shared by
/// its contexts.
#[derive(Debug, Default)]
struct Limiters {
    slot: Mutex<Option<RatePair>>,
}

/// The limiters of one rate, up and down.
#[derive(Debug)]
struct RatePair {
    rate: u64,
    up: Arc<RateLimiter>,
    down: Arc<RateLimiter>,
}

type LimiterPair = (Option<Arc<RateLimiter>>, Option<Arc<RateLimiter>>);

impl Limiters {
    /// The limiters for `rate` (kept while the rate stays the same, so a policy reload does
    /// not reset them); none when unlimited.
    fn for_rate(&self, rate: Option<u64>) -> LimiterPair {
        let mut slot = lock(&self.slot);
        // No rate: none for this context. The pair in force stays: another context of the
        // workspace (its sandbox, while a skill runs) may use it, and a context that comes
        // back to the same rate must not get a fresh budget.
        let Some(rate) = rate else {
            return (None, None);
        };
        match &*slot {
            Some(p) if p.rate == rate => (Some(p.up.clone()), Some(p.down.clone())),
            _ => {
                let up = Arc::new(RateLimiter::new(rate));
                let down = Arc::new(RateLimiter::new(rate));
                *slot = Some(RatePair {
                    rate,
                    up: up.clone(),
                    down: down.clone(),
                });
                (Some(up), Some(down))
            }
        }
    }
}

/// The policy in force and the limiters for it.
#[derive(Debug)]
struct Live {
    policy: Arc<EgressPolicy>,
    up: Option<Arc<RateLimiter>>,
    down: Option<Arc<RateLimiter>>,
}

impl Live {
    fn new(policy: EgressPolicy, limiters: &Limiters) -> Live {
        let (up, down) = limiters.for_rate(policy.network().bandwidth_bytes_per_sec);
        Live {
            policy: Arc::new(policy),
            up,
            down,
        }
    }
}

/// What every [`ProxyContext`] of one workspace shares within this process: the connection
/// counters (so the connection cap holds for all its sandboxes together), the bandwidth
/// limiters and the audit-log writer.
#[derive(Debug)]
struct WorkspaceShared {
    counters: Arc<NetCounters>,
    limiters: Arc<Limiters>,
    audit: Arc<AuditLog>,
}

/// Workspaces with a live context in this process, by workspace directory (state dir and
/// id). Weak: the entry goes when the last context of the workspace does (its last sandbox
/// ended), which also closes the audit log.
type Registry = Mutex<HashMap<PathBuf, Weak<WorkspaceShared>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl WorkspaceShared {
    /// The shared state of `ws` in this process, made on first use.
    fn of(ws: &Workspace) -> Result<Arc<WorkspaceShared>> {
        let dir = ws.dir();
        let key = std::fs::canonicalize(&dir).unwrap_or(dir);
        let mut map = lock(registry());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(s);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let shared = Arc::new(WorkspaceShared {
            counters: Arc::default(),
            limiters: Arc::default(),
            audit: Arc::new(AuditLog::open(ws.net_audit_log())?),
        });
        map.insert(key, Arc::downgrade(&shared));
        Ok(shared)
    }
}

/// A skill's policy inside its workspace's limits: the skill's allowlist, the lower of the
/// two connection caps, and the workspace's bandwidth (the same rate, so the skill's
/// connections take from the workspace's shared limiters, never from a pair of their own).
fn within_workspace(skill: &NetworkPolicy, workspace: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        allow: skill.allow.clone(),
        max_connections: Some(skill.max_connections().min(workspace.max_connections())),
        bandwidth_bytes_per_sec: workspace.bandwidth_bytes_per_sec,
    }
}

/// Proxied connections open now in this process, all workspaces together (what the
/// operator's `max_connections_total` caps).
pub fn open_connections_total() -> u64 {
    process_gauge().load(Ordering::Relaxed)
}

fn process_gauge() -> Arc<AtomicU64> {
    static GAUGE: OnceLock<Arc<AtomicU64>> = OnceLock::new();
    GAUGE.get_or_init(Arc::default).clone()
}

/// Where the workspace's policy comes from.
enum Source {
    /// Given, changed only by [`ProxyContext::set_policy`].
    Fixed,
    /// `workspace.json`, re-read when it changes (a `bulkhead workspace net` command takes
    /// effect on the next connection).
    Workspace {
        ws: Box<Workspace>,
        stamp: Mutex<Option<(u64, u64, i64, i64)>>,
    },
}

/// Everything the proxy needs to serve one workspace's connections.
pub struct ProxyContext {
    workspace: String,
    operator: OperatorNetwork,
    live: RwLock<Arc<Live>>,
    source: Source,
    resolver: Arc<dyn Resolve>,
    connector: Arc<dyn Connect>,
    counters: Arc<NetCounters>,
    limiters: Arc<Limiters>,
    audit: Option<Arc<AuditLog>>,
    /// Connections open in the whole process (or a gauge given to this context).
    total_open: Arc<AtomicU64>,
    timeouts: ProxyTimeouts,
    /// Keeps the workspace's registry entry alive while this context is.
    _shared: Option<Arc<WorkspaceShared>>,
}

impl fmt::Debug for ProxyContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyContext")
            .field("workspace", &self.workspace)
            .field("policy", &self.policy())
            .field(
                "audit",
                &self.audit.as_ref().map(|a| a.path().to_path_buf()),
            )
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy)]
enum Busy {
    /// The workspace has this many open (its cap; `true`: clamped by the operator's ceiling).
    Workspace(u32, bool),
    /// The process has this many open (the operator's `max_connections_total`).
    Process(u32),
}

impl ProxyContext {
    /// A context enforcing `network` (a workspace's policy) under the operator's rules:
    /// resolution through [`DnsResolver`] (the operator's `resolve` first), direct
    /// connections, no audit log (add one with [`ProxyContext::with_audit_log`]). Its
    /// counters and limiters are its own (see [`ProxyContext::from_workspace`] for the
    /// shared ones); its connections count against the process-wide `max_connections_total`.
    pub fn new(
        workspace: &str,
        network: &NetworkPolicy,
        operator: &OperatorNetwork,
    ) -> Result<ProxyContext> {
        Self::build(workspace, network, operator, None)
    }

    fn build(
        workspace: &str,
        network: &NetworkPolicy,
        operator: &OperatorNetwork,
        shared: Option<Arc<WorkspaceShared>>,
    ) -> Result<ProxyContext> {
        let policy = EgressPolicy::new(workspace, network, operator)?;
        let timeouts = ProxyTimeouts::default();
        let (counters, limiters, audit) = match &shared {
            Some(s) => (
                s.counters.clone(),
                s.limiters.clone(),
                Some(s.audit.clone()),
            ),
            None => (Arc::default(), Arc::<Limiters>::default(), None),
        };
        Ok(ProxyContext {
            workspace: workspace.to_string(),
            operator: operator.clone(),
            live: RwLock::new(Arc::new(Live::new(policy, &limiters))),
            source: Source::Fixed,
            resolver: Arc::new(DnsResolver::new(operator, timeouts.resolve)),
            connector: Arc::new(DirectConnect),
            counters,
            limiters,
            audit,
            total_open: process_gauge(),
            timeouts,
            _shared: shared,
        })
    }

    /// The context of a skill run in workspace `ws`: the skill's own allowlist (`network`,
    /// with the platform's `[network]` rules on top) inside the workspace's limits: its
    /// bandwidth and `max_connections` as `workspace.json` has them now (the lower cap where
    /// `network` names its own), and the workspace's connection counters, bandwidth
    /// limiters and audit log, so a skill's connections count against the workspace's caps
    /// and appear in `bulkhead workspace net <ws> log` under `label` (e.g.
    /// `acme/skill:github`).
    pub fn for_skill(ws: &Workspace, label: &str, network: &NetworkPolicy) -> Result<ProxyContext> {
        let ws = ws.reload()?;
        let shared = WorkspaceShared::of(&ws)?;
        let inside = within_workspace(network, ws.network());
        ProxyContext::build(label, &inside, ws.operator_network(), Some(shared))
    }

    /// The context of workspace `id` of `platform`: see [`ProxyContext::from_workspace`].
    pub fn for_workspace(platform: &Platform, id: &str) -> Result<ProxyContext> {
        ProxyContext::from_workspace(&platform.workspace(id)?)
    }

    /// The context of a workspace: its policy (re-read from `workspace.json` whenever that
    /// file changes, so `bulkhead workspace net` takes effect on the next connection), the
    /// platform's `[network]` rules, and the audit log `<workspace>/net-audit.log`.
    ///
    /// Every context of the same workspace (same state directory and id) alive in this
    /// process shares its connection counters, so the connection cap holds for all the
    /// workspace's sandboxes together, its bandwidth limiters and its audit-log writer.
    pub fn from_workspace(ws: &Workspace) -> Result<ProxyContext> {
        // The file's identity before reading it: a change in between is seen next time.
        let stamp = stamp_of(&ws.config_path());
        let ws = ws.reload()?;
        let shared = WorkspaceShared::of(&ws)?;
        let mut ctx =
            ProxyContext::build(ws.id(), ws.network(), ws.operator_network(), Some(shared))?;
        ctx.source = Source::Workspace {
            ws: Box::new(ws),
            stamp: Mutex::new(stamp),
        };
        Ok(ctx)
    }

    /// Records every connection in `log`.
    pub fn with_audit_log(mut self, log: AuditLog) -> Self {
        self.audit = Some(Arc::new(log));
        self
    }

    /// Resolves names with `resolver` instead of [`DnsResolver`] (the operator's `resolve`
    /// overrides are then the resolver's business).
    pub fn with_resolver(mut self, resolver: impl Resolve + 'static) -> Self {
        self.resolver = Arc::new(resolver);
        self
    }

    /// Connects with `connector` instead of [`DirectConnect`].
    pub fn with_connector(mut self, connector: impl Connect + 'static) -> Self {
        self.connector = Arc::new(connector);
        self
    }

    /// Other timeouts (the default resolver keeps its own; give one with
    /// [`ProxyContext::with_resolver`] to change that).
    pub fn with_timeouts(mut self, timeouts: ProxyTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Shares `counters` (e.g. with another context of the same workspace).
    pub fn with_counters(mut self, counters: Arc<NetCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Counts this context's connections against `gauge`, capped by the operator's
    /// `max_connections_total`, instead of the process-wide count (a separate pool; tests).
    pub fn with_connection_gauge(mut self, gauge: Arc<AtomicU64>) -> Self {
        self.total_open = gauge;
        self
    }

    /// The workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<EgressPolicy> {
        self.current().policy.clone()
    }

    /// Replaces the workspace's policy (from the next connection on).
    pub fn set_policy(&self, network: &NetworkPolicy) -> Result<()> {
        let policy = EgressPolicy::new(&self.workspace, network, &self.operator)?;
        let mut g = match self.live.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *g = Arc::new(Live::new(policy, &self.limiters));
        Ok(())
    }

    /// The live counters (shared by every context of the workspace made with
    /// [`ProxyContext::from_workspace`] in this process).
    pub fn counters(&self) -> &Arc<NetCounters> {
        &self.counters
    }

    /// The timeouts.
    pub fn timeouts(&self) -> &ProxyTimeouts {
        &self.timeouts
    }

    fn current(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The policy for a new connection: re-read from `workspace.json` when it changed.
    /// Fails closed when the file cannot be read.
    fn refresh(&self) -> std::result::Result<Arc<Live>, Denial> {
        let Source::Workspace { ws, stamp } = &self.source else {
            return Ok(self.current());
        };
        let now = stamp_of(&ws.config_path());
        let mut seen = match stamp.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if now.is_some() && *seen == now {
            return Ok(self.current());
        }
        let unreadable = |e: &dyn fmt::Display| {
            log::warn!(target: "egress", workspace = self.workspace.as_str(); "cannot reload the egress policy: {e}");
            Denial {
                kind: "config",
                message: format!(
                    "bulkhead egress: the network policy of workspace {} cannot be read; ask the operator to check it",
                    self.workspace
                ),
            }
        };
        let fresh = ws.reload().map_err(|e| unreadable(&e))?;
        self.set_policy(fresh.network())
            .map_err(|e| unreadable(&e))?;
        *seen = now;
        Ok(self.current())
    }

    /// Takes a connection slot: one of the workspace's (its cap, clamped by the operator's
    /// ceiling), then one of the process's (the operator's `max_connections_total`).
    fn admit(&self) -> std::result::Result<Permit, Busy> {
        let policy = self.current().policy.clone();
        let cap = policy.max_connections();
        let prev = self.counters.open.fetch_add(1, Ordering::AcqRel);
        if prev >= u64::from(cap) {
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            let clamped = cap < policy.network().max_connections();
            return Err(Busy::Workspace(cap, clamped));
        }
        let total = self.operator.max_connections_total.max(1);
        let prev = self.total_open.fetch_add(1, Ordering::AcqRel);
        if prev >= u64::from(total) {
            self.total_open.fetch_sub(1, Ordering::AcqRel);
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy::Process(total));
        }
        Ok(Permit {
            counters: self.counters.clone(),
            total: self.total_open.clone(),
        })
    }

    fn finish(&self, rec: &ConnRecord) {
        let c = &self.counters;
        c.total.fetch_add(1, Ordering::Relaxed);
        match rec.decision {
            Decision::Allowed => {}
            Decision::Denied => {
                c.denied.fetch_add(1, Ordering::Relaxed);
            }
            Decision::Failed => {
                c.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        // The log line follows the audit line: a refusal the audit log only counts (past
        // its rate) is not logged one by one either.
        let written = match &self.audit {
            Some(a) => a.append(rec),
            None => true,
        };
        let reason = rec.reason.as_deref().unwrap_or("");
        let addr = rec.addr.as_deref().unwrap_or("");
        if !written {
            // Counted in the audit log's summary line, which logs a warning of its own.
        } else if rec.decision == Decision::Allowed {
            log::info!(
                target: "egress",
                workspace = rec.workspace.as_str(),
                host = rec.host.as_str(),
                port = rec.port,
                method = rec.method.as_str(),
                decision = rec.decision.as_str(),
                addr = addr,
                bytes_up = rec.bytes_up,
                bytes_down = rec.bytes_down,
                duration_ms = rec.duration_ms;
                "egress connection"
            );
        } else {
            log::warn!(
                target: "egress",
                workspace = rec.workspace.as_str(),
                host = rec.host.as_str(),
                port = rec.port,
                method = rec.method.as_str(),
                decision = rec.decision.as_str(),
                reason = reason,
                duration_ms = rec.duration_ms;
                "egress connection refused"
            );
        }
    }
}

fn stamp_of(path: &Path) -> Option<(u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// A held connection slot (the workspace's and the process's).
struct Permit {
    counters: Arc<NetCounters>,
    total: Arc<AtomicU64>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::AcqRel);
        self.total.fetch_sub(1, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------------
// Request parsing
// ---------------------------------------------------------------------------------------------

/// A request head as read (before the target is interpreted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method.
    pub method: String,
    /// Request target, as sent.
    pub target: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Header lines, names as sent.
    pub headers: Vec<(String, String)>,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`: a tunnel.
    Connect {
        /// Host.
        host: Host,
        /// Port.
        port: u16,
    },
    /// An absolute-form `http://` request.
    Http {
        /// Host.
        host: Host,
        /// Port.
        port: u16,
        /// Path and query in origin form (`/` at least; no fragment).
        path: String,
    },
}

impl Target {
    /// Host and port.
    pub fn host_port(&self) -> (&Host, u16) {
        match self {
            Target::Connect { host, port } | Target::Http { host, port, .. } => (host, *port),
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head: `head` is everything up to and including the blank line. Strict:
/// lines end in CRLF (a bare CR or LF is refused), no obs-fold, at most [`MAX_HEADERS`]
/// headers, `HTTP/1.0` or `HTTP/1.1`. The error is a short reason (it never quotes the input).
pub fn parse_head(head: &[u8]) -> std::result::Result<RequestHead, String> {
    let body = head
        .strip_suffix(b"\r\n\r\n")
        .ok_or("the request head does not end with an empty line (CRLF CRLF)")?;
    let mut lines = Vec::new();
    let mut rest = body;
    loop {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                lines.push(&rest[..i]);
                rest = &rest[i + 2..];
            }
            None => {
                lines.push(rest);
                break;
            }
        }
    }
    if lines
        .iter()
        .any(|l| l.contains(&b'\r') || l.contains(&b'\n'))
    {
        return Err("a line does not end in CRLF (bare CR or LF)".into());
    }
    if lines.len() > MAX_HEADERS + 1 {
        return Err(format!("more than {MAX_HEADERS} header lines"));
    }
    let rl = std::str::from_utf8(lines[0]).map_err(|_| "the request line is not ASCII")?;
    let parts: Vec<&str> = rl.split(' ').collect();
    if parts.len() != 3 {
        return Err("the request line is not METHOD SP TARGET SP VERSION".into());
    }
    let (method, target, version) = (parts[0], parts[1], parts[2]);
    if method.is_empty() || method.len() > 32 || !method.bytes().all(is_tchar) {
        return Err("invalid method".into());
    }
    if target.is_empty()
        || target.len() > 8192
        || !target.bytes().all(|b| (0x21..0x7f).contains(&b))
    {
        return Err("invalid request target".into());
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err("unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)".into());
    }
    let mut headers = Vec::with_capacity(lines.len() - 1);
    for line in &lines[1..] {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err("folded header lines (obs-fold) are not accepted".into());
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or("a header line has no ':'")?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.is_empty() || name.len() > 256 || !name.iter().all(|b| is_tchar(*b)) {
            return Err("invalid header name".into());
        }
        if value
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\t') || *b == 0x7f)
        {
            return Err("control characters in a header value".into());
        }
        let value = String::from_utf8_lossy(value)
            .trim_matches([' ', '\t'])
            .to_string();
        headers.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    Ok(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    })
}

fn port_of(p: &str) -> std::result::Result<u16, String> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the port must be a number from 1 to 65535".into());
    }
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("the port must be a number from 1 to 65535".into()),
    }
}

fn guard_reason(e: &SsrfError) -> String {
    match e {
        SsrfError::InvalidUrl { reason, .. } => reason.clone(),
        SsrfError::Userinfo { .. } => "userinfo (user@host) is not allowed".into(),
        SsrfError::UnsupportedScheme(_) => {
            "unsupported scheme (http only; https goes through CONNECT)".into()
        }
        other => other.to_string(),
    }
}

/// Interprets the request target: `CONNECT host:port` (authority form; IPv6 in brackets) or
/// an absolute `http://` URL (read by the SSRF guard's URL parser: no userinfo, IPv4 in every
/// form a resolver reads, no zone ids).
pub fn parse_target(head: &RequestHead) -> std::result::Result<Target, String> {
    let t = head.target.as_str();
    if head.method == "CONNECT" {
        if t.contains('@') {
            return Err("userinfo (user@host) is not allowed".into());
        }
        if t.contains(['/', '\\', '?', '#', '%']) {
            return Err("CONNECT takes host:port only".into());
        }
        let (h, p) = if t.starts_with('[') {
            let close = t.find(']').ok_or("unterminated [ipv6] literal")?;
            let p = t[close + 1..]
                .strip_prefix(':')
                .ok_or("CONNECT needs host:port")?;
            (&t[..=close], p)
        } else {
            match t.matches(':').count() {
                1 => t.split_once(':').unwrap_or((t, "")),
                0 => return Err("CONNECT needs host:port".into()),
                _ => return Err("an IPv6 address must be in brackets: [::1]:443".into()),
            }
        };
        let port = port_of(p)?;
        let host = ssrf::parse_host(h).map_err(|e| guard_reason(&e))?;
        return Ok(Target::Connect { host, port });
    }
    let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
    if t.starts_with('/') || t == "*" {
        return Err(
            "this is a proxy: send an absolute URL (http://host/path) or CONNECT host:port".into(),
        );
    }
    if lower.starts_with("https://") {
        return Err(
            "https:// URLs go through CONNECT (set HTTPS_PROXY as well as HTTP_PROXY)".into(),
        );
    }
    let (scheme, host, port) = ssrf::parse_url_host(t).map_err(|e| guard_reason(&e))?;
    if scheme != Scheme::Http {
        return Err("unsupported scheme (http only; https goes through CONNECT)".into());
    }
    let after = &t[t.find("://").map(|i| i + 3).unwrap_or(0)..];
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let mut path = after[end..].to_string();
    if let Some(i) = path.find('#') {
        path.truncate(i);
    }
    if path.is_empty() {
        path = "/".into();
    } else if path.starts_with('?') {
        path.insert(0, '/');
    }
    Ok(Target::Http { host, port, path })
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
];

/// The head sent to the origin for an absolute-form request: origin-form request line,
/// `Host` from the URL, hop-by-hop and `Proxy-*` headers (and those `Connection` names)
/// dropped, `Connection: close`. Refuses ambiguous body framing.
pub fn origin_head(
    head: &RequestHead,
    host: &Host,
    port: u16,
    path: &str,
) -> std::result::Result<Vec<u8>, String> {
    let mut named: Vec<String> = Vec::new();
    let mut content_length: Option<&str> = None;
    let mut chunked = false;
    for (n, v) in &head.headers {
        if n.eq_ignore_ascii_case("connection") {
            named.extend(v.split(',').map(|s| s.trim().to_ascii_lowercase()));
        }
        if n.eq_ignore_ascii_case("content-length") {
            if content_length.is_some_and(|c| c != v) {
                return Err("conflicting Content-Length headers".into());
            }
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid Content-Length".into());
            }
            content_length = Some(v);
        }
        if n.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        return Err("both Transfer-Encoding and Content-Length".into());
    }
    let authority = match host {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        h => h.to_string(),
    };
    let authority = if port == 80 {
        authority
    } else {
        format!("{authority}:{port}")
    };
    let mut out = format!(
        "{} {path} {}\r\nHost: {authority}\r\n",
        head.method, head.version
    );
    for (n, v) in &head.headers {
        let l = n.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&l.as_str()) || l.starts_with("proxy-") || named.contains(&l) {
            continue;
        }
        out.push_str(n);
        out.push_str(": ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    Ok(out.into_bytes())
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

// Every read and write on a socket the worker passed is `MSG_DONTWAIT`, and every wait is a
// poll(2) with a deadline: the worker keeps a copy of the socket and may set or clear
// `O_NONBLOCK` on it at any time, so its blocking mode (and `SO_RCVTIMEO`) means nothing.

/// One `recv` that never blocks (`WouldBlock` when nothing is there); EINTR retried.
fn recv_now(s: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::recv(s.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// One `send` that never blocks and never raises SIGPIPE; EINTR retried.
fn send_now(s: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    loop {
        match nix::sys::socket::send(
            s.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Err(Errno::EINTR) => continue,
            r => return r.map_err(io::Error::from),
        }
    }
}

/// Waits until `s` is ready for `events` (or has an error or hang-up to report), at most
/// `timeout`. `Ok(false)`: the time ran out.
fn wait_for(s: &TcpStream, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up to the next millisecond, so a short wait is a wait, not a spin.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128);
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(s.as_fd(), events)];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `buf` by `deadline` (`TimedOut` past it).
fn send_all(s: &TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        match send_now(s, buf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || !wait_for(s, PollFlags::POLLOUT, left)? {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum HeadError {
    /// The client closed before sending anything.
    Closed,
    TooLarge,
    Timeout,
    Io(io::Error),
}

/// The end of a request head in `buf` (searching from `from`): after CRLF CRLF, or after a
/// bare LF LF or LF CRLF, which [`parse_head`] then refuses (so a client using bare LF gets a
/// `400`, not a wait for the timeout).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

/// Reads until CRLF CRLF within `limit`; returns the head and whatever came after it.
fn read_head(s: &TcpStream, limit: Duration) -> std::result::Result<(Vec<u8>, Vec<u8>), HeadError> {
    let deadline = Instant::now() + limit;
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::Timeout);
        }
        let room = (MAX_HEAD_BYTES + 1 - buf.len()).min(chunk.len());
        let n = match recv_now(s, &mut chunk[..room]) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Io(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the request head was cut short",
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                match wait_for(s, PollFlags::POLLIN, left) {
                    Ok(true) => continue,
                    Ok(false) => return Err(HeadError::Timeout),
                    Err(e) => return Err(HeadError::Io(e)),
                }
            }
            Err(e) => return Err(HeadError::Io(e)),
        };
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_end(&buf, from) {
            if end > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(end);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn answer(code: u16, body: &str) -> String {
    let body = format!("{body}\n");
    format!(
        "HTTP/1.1 {code} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n{body}",
        reason_phrase(code),
        body.len()
    )
}

/// Writes a short plain-text answer and closes politely: half-close, then drain what the
/// client still sends (so it reads the answer instead of a reset) while it keeps sending,
/// for at most [`DRAIN_DEADLINE`] in all.
fn respond(s: &TcpStream, code: u16, body: &str) {
    let _ = send_all(
        s,
        answer(code, body).as_bytes(),
        Instant::now() + RESPOND_WRITE_TIMEOUT,
    );
    let _ = s.shutdown(Shutdown::Write);
    drain(s, DRAIN_DEADLINE);
}

/// Reads and drops what the client sends: until it closes, is quiet for [`DRAIN_QUIET`],
/// [`DRAIN_MAX`] bytes have come, or `limit` has passed, whichever is first.
fn drain(s: &TcpStream, limit: Duration) {
    let deadline = Instant::now() + limit;
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while total < DRAIN_MAX {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        match recv_now(s, &mut sink) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if !matches!(
                    wait_for(s, PollFlags::POLLIN, left.min(DRAIN_QUIET)),
                    Ok(true)
                ) {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

/// Serves one connection from the sandbox: reads the request, applies the policy, relays,
/// records. Returns the record written to the audit log. Enforces the workspace's
/// connection cap and the process's (`503` when one is reached). The stream may be any
/// connected TCP stream (`TcpStream::from(OwnedFd)` for one passed by the worker).
pub fn serve_connection(stream: TcpStream, ctx: &ProxyContext) -> ConnRecord {
    match ctx.admit() {
        Ok(permit) => serve_admitted(stream, ctx, permit),
        Err(busy) => refuse_busy(stream, ctx, busy, true),
    }
}

/// Receives connections from the worker and serves each on its own thread while the
/// workspace's connection cap and the process's hold (one more is answered `503` and
/// closed, without blocking this loop). `recv` returns the next passed fd, `None` when the
/// channel is closed (then this returns `Ok`), or an error (returned). Use
/// `crate::net::fdpass::recv_passed_fd` as `recv`. An fd that is not a stream socket is
/// closed and logged.
pub fn serve_channel<R>(chan: OwnedFd, ctx: Arc<ProxyContext>, recv: R) -> Result<()>
where
    R: Fn(&OwnedFd) -> Result<Option<OwnedFd>>,
{
    loop {
        let Some(fd) = recv(&chan)? else {
            return Ok(());
        };
        let stream = match stream_from_fd(fd) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(target: "egress", workspace = ctx.workspace(); "refusing a passed fd: {e}");
                continue;
            }
        };
        match ctx.admit() {
            Ok(permit) => {
                let c = ctx.clone();
                let spawned = std::thread::Builder::new()
                    .name("bulkhead-egress".into())
                    .spawn(move || {
                        serve_admitted(stream, &c, permit);
                    });
                if let Err(e) = spawned {
                    log::warn!(target: "egress", workspace = ctx.workspace(); "cannot start a connection thread: {e}");
                }
            }
            Err(busy) => {
                refuse_busy(stream, &ctx, busy, false);
            }
        }
    }
}

/// A passed fd as a `TcpStream`, refusing anything but a stream socket.
pub fn stream_from_fd(fd: OwnedFd) -> Result<TcpStream> {
    use nix::sys::socket::{getsockopt, sockopt, SockType};
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => {
            return Err(Error::Invalid(format!(
                "the passed fd is a {other:?} socket, not a stream socket"
            )))
        }
        Err(e) => {
            return Err(Error::Invalid(format!(
                "the passed fd is not a socket: {e}"
            )))
        }
    }
    let s = TcpStream::from(fd);
    s.set_nonblocking(false)
        .map_err(|e| Error::Invalid(format!("the passed socket: {e}")))?;
    Ok(s)
}

fn new_record(ctx: &ProxyContext) -> ConnRecord {
    ConnRecord {
        ts: crate::util::time::timestamp_now(),
        workspace: ctx.workspace.clone(),
        host: String::new(),
        port: 0,
        method: "-".into(),
        decision: Decision::Denied,
        reason: None,
        status: None,
        addr: None,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: 0,
        suppressed: None,
    }
}

/// Answers `503` (a connection cap is reached). `wait`: write with a deadline and drain
/// politely ([`respond`]); without it (on the channel's own thread, which must never block)
/// one `MSG_DONTWAIT` write of the answer, whatever fits, then close.
fn refuse_busy(stream: TcpStream, ctx: &ProxyContext, busy: Busy, wait: bool) -> ConnRecord {
    let mut rec = new_record(ctx);
    // Take what the client already sent so closing does not reset the connection.
    let mut sink = [0u8; 4096];
    let mut total = 0;
    while total < MAX_HEAD_BYTES {
        match recv_now(&stream, &mut sink) {
            Ok(n) if n > 0 => total += n,
            _ => break,
        }
    }
    let (msg, reason) = match busy {
        Busy::Workspace(cap, clamped) => (
            format!(
                "bulkhead egress: workspace {} has {cap} connections open, its limit{}; retry when one has closed",
                ctx.workspace,
                if clamped {
                    " (the operator's [network] max_connections_ceiling)"
                } else {
                    ""
                }
            ),
            format!("connection_limit: {cap} connections open"),
        ),
        Busy::Process(total) => (
            format!(
                "bulkhead egress: the controller has {total} proxied connections open, the operator's limit ([network] max_connections_total); retry later"
            ),
            format!("connection_limit_total: {total} connections open in the controller"),
        ),
    };
    if wait {
        respond(&stream, 503, &msg);
    } else {
        let _ = send_now(&stream, answer(503, &msg).as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    }
    rec.reason = Some(reason);
    rec.status = Some(503);
    ctx.finish(&rec);
    rec
}

fn serve_admitted(mut stream: TcpStream, ctx: &ProxyContext, _permit: Permit) -> ConnRecord {
    let start = Instant::now();
    let mut rec = new_record(ctx);
    serve_inner(&mut stream, ctx, &mut rec);
    rec.duration_ms = start.elapsed().as_millis() as u64;
    ctx.finish(&rec);
    rec
}

fn deny(s: &mut TcpStream, rec: &mut ConnRecord, code: u16, kind: &str, message: &str) {
    rec.decision = if code == 502 {
        Decision::Failed
    } else {
        Decision::Denied
    };
    rec.status = Some(code);
    rec.reason = Some(format!(
        "{kind}: {}",
        message.trim_start_matches("bulkhead egress: ")
    ));
    respond(s, code, message);
}

fn serve_inner(s: &mut TcpStream, ctx: &ProxyContext, rec: &mut ConnRecord) {
    let _ = s.set_nodelay(true);
    let (head, rest) = match read_head(s, ctx.timeouts.head) {
        Ok(h) => h,
        Err(HeadError::Closed) => {
            rec.reason = Some("malformed: closed before a request".into());
            return;
        }
        Err(HeadError::TooLarge) => {
            let m =
                format!("bulkhead egress: the request head is larger than {MAX_HEAD_BYTES} bytes");
            return deny(s, rec, 400, "malformed", &m);
        }
        Err(HeadError::Timeout) => {
            let m = format!(
                "bulkhead egress: no complete request head within {}s",
                ctx.timeouts.head.as_secs()
            );
            return deny(s, rec, 408, "malformed", &m);
        }
        Err(HeadError::Io(e)) => {
            rec.reason = Some(format!("malformed: {e}"));
            return;
        }
    };
    let req = match parse_head(&head) {
        Ok(r) => r,
        Err(why) => {
            return deny(
                s,
                rec,
                400,
                "malformed",
                &format!("bulkhead egress: bad request: {why}"),
            )
        }
    };
    rec.method = req.method.clone();
    let target = match parse_target(&req) {
        Ok(t) => t,
        Err(why) => {
            return deny(
                s,
                rec,
                400,
                "malformed",
                &format!("bulkhead egress: bad request: {why}"),
            )
        }
    };
    let (host, port) = target.host_port();
    let (host, port) = (host.clone(), port);
    rec.host = host.to_string();
    rec.port = port;
    let forward = match &target {
        Target::Connect { .. } => None,
        Target::Http { path, .. } => match origin_head(&req, &host, port, path) {
            Ok(h) => Some(h),
            Err(why) => {
                return deny(
                    s,
                    rec,
                    400,
                    "malformed",
                    &format!("bulkhead egress: bad request: {why}"),
                )
            }
        },
    };
    let live = match ctx.refresh() {
        Ok(l) => l,
        Err(d) => return deny(s, rec, 403, d.kind, &d.message),
    };
    let policy = &live.policy;
    if let Err(d) = policy.check(&host, port) {
        return deny(s, rec, 403, d.kind, &d.message);
    }
    let resolver = ctx.resolver.clone();
    let vetted = ssrf::resolve_and_check_with(&host, port, policy.ssrf(), |name, port| {
        resolver
            .resolve(name, port)
            .map(|ips| {
                ips.into_iter()
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            })
            .map_err(|message| SsrfError::Resolve {
                host: name.to_string(),
                message,
            })
    });
    let addrs = match vetted {
        Ok(a) => a,
        Err(SsrfError::Resolve { message, .. }) => {
            let m = format!("bulkhead egress: could not resolve {host}: {message}");
            return deny(s, rec, 502, "resolve", &m);
        }
        Err(e) => {
            let d = policy.denial(&host, port, &e);
            return deny(s, rec, 403, d.kind, &d.message);
        }
    };
    if let Err(d) = policy.check_resolved(&host, &addrs) {
        return deny(s, rec, 403, d.kind, &d.message);
    }
    // Connect to the vetted addresses only: the address checked is the address dialed.
    let mut upstream = None;
    let mut last_err = None;
    for a in addrs.iter().take(MAX_CONNECT_ATTEMPTS) {
        match ctx.connector.connect(*a, ctx.timeouts.connect) {
            Ok(u) => {
                upstream = Some((u, *a));
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let Some((mut up, addr)) = upstream else {
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        let m = format!("bulkhead egress: could not connect to {host}:{port}: {e}");
        return deny(s, rec, 502, "connect", &m);
    };
    rec.addr = Some(addr.to_string());
    rec.decision = Decision::Allowed;
    let _ = up.set_nodelay(true);
    let mut first_up = Vec::new();
    match forward {
        None => {
            let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
            if send_all(s, established, Instant::now() + ctx.timeouts.idle).is_err() {
                rec.reason = Some("the client went away".into());
                return;
            }
            rec.status = Some(200);
        }
        Some(h) => first_up = h,
    }
    first_up.extend_from_slice(&rest);
    let sniff = matches!(target, Target::Http { .. });
    let r = relay(s, &mut up, &first_up, ctx, &live, sniff);
    rec.bytes_up = r.up;
    rec.bytes_down = r.down;
    if sniff {
        rec.status = r.status;
    }
    if let Some(e) = r.ended_by {
        rec.reason = Some(e);
    }
}

// ---------------------------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------------------------

struct RelayResult {
    up: u64,
    down: u64,
    status: Option<u16>,
    ended_by: Option<String>,
}

/// Last activity, shared by both directions.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

struct Pump<'a> {
    from: &'a TcpStream,
    to: &'a TcpStream,
    total: &'a AtomicU64,
    limiter: Option<&'a RateLimiter>,
    activity: &'a Activity,
    idle: Duration,
    sniff: bool,
}

enum PumpEnd {
    Eof,
    Idle,
    Error(io::Error),
}

/// Waits for `events` on `s` until the relay has been idle (no byte either way) for `idle`.
/// `Ok(false)`: it has. A poll that times out while the other direction moved waits again
/// for the rest.
fn wait_active(
    s: &TcpStream,
    events: PollFlags,
    activity: &Activity,
    idle: Duration,
) -> io::Result<bool> {
    loop {
        let left = idle.saturating_sub(activity.idle_for());
        if left.is_zero() {
            return Ok(false);
        }
        if wait_for(s, events, left)? {
            return Ok(true);
        }
    }
}

/// Copies `from` → `to` until EOF, an error or idleness. Returns the bytes copied, the
/// origin's status when sniffing, and how it ended. Never blocks in a read or a write (they
/// are `MSG_DONTWAIT`): it waits in poll(2) for readiness, so a socket set to `O_NONBLOCK`
/// behind its back is waited on, not spun on.
fn pump(p: Pump<'_>) -> (u64, Option<u16>, PumpEnd) {
    let chunk = p.limiter.map(|l| l.chunk()).unwrap_or(RELAY_BUF);
    let mut buf = vec![0u8; chunk];
    let mut copied = 0u64;
    let mut status = None;
    loop {
        let n = match recv_now(p.from, &mut buf) {
            Ok(0) => return (copied, status, PumpEnd::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                match wait_active(p.from, PollFlags::POLLIN, p.activity, p.idle) {
                    Ok(true) => continue,
                    Ok(false) => return (copied, status, PumpEnd::Idle),
                    Err(e) => return (copied, status, PumpEnd::Error(e)),
                }
            }
            Err(e) => return (copied, status, PumpEnd::Error(e)),
        };
        p.activity.touch();
        if p.sniff && copied == 0 && n >= 12 && buf.starts_with(b"HTTP/1.") {
            status = std::str::from_utf8(&buf[9..12])
                .ok()
                .and_then(|s| s.parse().ok());
        }
        if let Some(l) = p.limiter {
            let wait = l.take(n);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        let mut out = &buf[..n];
        while !out.is_empty() {
            match send_now(p.to, out) {
                Ok(0) => {
                    let e = io::Error::from(ErrorKind::WriteZero);
                    return (copied, status, PumpEnd::Error(e));
                }
                Ok(k) => {
                    out = &out[k..];
                    p.activity.touch();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    match wait_active(p.to, PollFlags::POLLOUT, p.activity, p.idle) {
                        Ok(true) => {}
                        Ok(false) => return (copied, status, PumpEnd::Idle),
                        Err(e) => return (copied, status, PumpEnd::Error(e)),
                    }
                }
                Err(e) => return (copied, status, PumpEnd::Error(e)),
            }
        }
        copied += n as u64;
        p.total.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn relay(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    first_up: &[u8],
    ctx: &ProxyContext,
    live: &Live,
    sniff: bool,
) -> RelayResult {
    let idle = ctx.timeouts.idle;
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let mut up_bytes = 0u64;
    if !first_up.is_empty() {
        if let Some(l) = live.up.as_deref() {
            std::thread::sleep(l.take(first_up.len()));
        }
        if let Err(e) = send_all(upstream, first_up, Instant::now() + idle) {
            return RelayResult {
                up: 0,
                down: 0,
                status: None,
                ended_by: Some(format!("writing to the origin: {e}")),
            };
        }
        up_bytes = first_up.len() as u64;
        ctx.counters.bytes_up.fetch_add(up_bytes, Ordering::Relaxed);
    }
    let counters = &ctx.counters;
    let (up_res, down_res) = std::thread::scope(|sc| {
        let c: &TcpStream = client;
        let u: &TcpStream = upstream;
        let activity = &activity;
        let up = sc.spawn(move || {
            let r = pump(Pump {
                from: c,
                to: u,
                total: &counters.bytes_up,
                limiter: live.up.as_deref(),
                activity,
                idle,
                sniff: false,
            });
            match &r.2 {
                // The client half-closed: let the origin answer.
                PumpEnd::Eof => {
                    let _ = u.shutdown(Shutdown::Write);
                }
                // Shutting both sockets down wakes the other direction from its poll.
                _ => {
                    let _ = u.shutdown(Shutdown::Both);
                    let _ = c.shutdown(Shutdown::Both);
                }
            }
            r
        });
        let down = pump(Pump {
            from: u,
            to: c,
            total: &counters.bytes_down,
            limiter: live.down.as_deref(),
            activity,
            idle,
            sniff,
        });
        // The origin closed (or failed): the connection is over.
        let _ = c.shutdown(Shutdown::Both);
        let _ = u.shutdown(Shutdown::Both);
        let up = up.join().unwrap_or((0, None, PumpEnd::Eof));
        (up, down)
    });
    let ended_by = match (&up_res.2, &down_res.2) {
        (PumpEnd::Idle, _) | (_, PumpEnd::Idle) => Some(format!("idle for {idle:?}")),
        (_, PumpEnd::Error(e)) => Some(format!("origin side: {e}")),
        _ => None,
    };
    RelayResult {
        up: up_bytes + up_res.0,
        down: down_res.0,
        status: down_res.1,
        ended_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> std::result::Result<RequestHead, String> {
        parse_head(s.as_bytes())
    }

    fn target(s: &str) -> std::result::Result<Target, String> {
        parse_target(&head(s)?)
    }

    #[test]
    fn parses_connect_and_absolute_form() {
        let t = target("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
        assert_eq!(
            t,
            Target::Connect {
                host: Host::Name("pypi.org".into()),
                port: 443
            }
        );
        let t = target("GET http://Example.COM/a/b?c=d#frag HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            t,
            Target::Http {
                host: Host::Name("example.com".into()),
                port: 80,
                path: "/a/b?c=d".into()
            }
        );
        let t = target("GET http://example.com HTTP/1.0\r\n\r\n").unwrap();
        assert!(matches!(t, Target::Http { ref path, .. } if path == "/"));
        let t = target("GET http://example.com:8080?q HTTP/1.1\r\n\r\n").unwrap();
        assert!(matches!(t, Target::Http { port: 8080, ref path, .. } if path == "/?q"));
        let h = head("POST http://x.org/ HTTP/1.1\r\nA: 1\r\nB:2 \r\n\r\n").unwrap();
        assert_eq!(
            h.headers,
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
    }

    #[test]
    fn ip_literals_are_read_as_the_guard_reads_them() {
        for (t, ip) in [
            ("CONNECT 127.0.0.1:80", "127.0.0.1"),
            ("CONNECT 2130706433:80", "127.0.0.1"),
            ("CONNECT 0x7f.1:80", "127.0.0.1"),
            ("CONNECT 0177.0.0.1:80", "127.0.0.1"),
            ("CONNECT 127.1:80", "127.0.0.1"),
            ("CONNECT [::1]:80", "::1"),
            ("CONNECT [::ffff:127.0.0.1]:80", "::ffff:127.0.0.1"),
            ("GET http://0x7f000001:80/", "127.0.0.1"),
            ("GET http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
        ] {
            let parsed = target(&format!("{t} HTTP/1.1\r\n\r\n")).unwrap();
            let (h, _) = parsed.host_port();
            assert_eq!(h, &Host::Ip(ip.parse().unwrap()), "{t}");
        }
    }

    #[test]
    fn hostile_heads_are_refused() {
        for (req, says) in [
            ("GET http://x.org/ HTTP/1.1\n\n", "CRLF"),
            ("GET http://x.org/ HTTP/1.1\r\nA: b\n\r\n", "CRLF"),
            ("GET http://x.org/ HTTP/1.1\r\nA: b\rc\r\n\r\n", "CRLF"),
            ("GET  http://x.org/ HTTP/1.1\r\n\r\n", "METHOD SP"),
            ("GET http://x.org/ HTTP/2.0\r\n\r\n", "version"),
            ("GET http://x.org/ HTTP/1.1\r\n folded\r\n\r\n", "obs-fold"),
            ("GET http://x.org/ HTTP/1.1\r\nno colon\r\n\r\n", "':'"),
            (
                "GET http://x.org/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "header name",
            ),
            ("GET http://x.org/ HTTP/1.1\r\nA: \x01\r\n\r\n", "control"),
            ("G\x00T http://x.org/ HTTP/1.1\r\n\r\n", "method"),
            ("GET http://x.org/\x7f HTTP/1.1\r\n\r\n", "target"),
            ("\r\n\r\n", "METHOD SP"),
        ] {
            let e = head(req).unwrap_err();
            assert!(e.contains(says), "{req:?}: {e}");
        }
        let many = format!(
            "GET http://x.org/ HTTP/1.1\r\n{}\r\n",
            "A: b\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(head(&many).unwrap_err().contains("header lines"));
        for (req, says) in [
            ("CONNECT user@pypi.org:443", "userinfo"),
            ("CONNECT pypi.org", "host:port"),
            ("CONNECT pypi.org:0", "port"),
            ("CONNECT pypi.org:99999", "port"),
            ("CONNECT ::1:80", "brackets"),
            ("CONNECT [::1]", "host:port"),
            ("CONNECT [fe80::1%25eth0]:80", "host:port"),
            ("CONNECT pypi.org:443/x", "host:port only"),
            ("CONNECT 999.1.1.1:80", "numeric"),
            ("CONNECT ex%61mple.com:80", "host:port only"),
            ("GET /index.html", "absolute URL"),
            ("OPTIONS *", "absolute URL"),
            ("GET https://pypi.org/", "CONNECT"),
            ("GET ftp://pypi.org/", "unsupported scheme"),
            ("GET file:///etc/passwd", "unsupported scheme"),
            ("GET gopher://x.org:70/", "unsupported scheme"),
            ("GET http://user:pw@pypi.org/", "userinfo"),
            ("GET http://pypi.org\\@evil.com/", "backslash"),
            ("GET http://[::1/", "ipv6"),
            ("GET http:pypi.org/", "//"),
        ] {
            let e = target(&format!("{req} HTTP/1.1\r\n\r\n")).unwrap_err();
            assert!(e.contains(says), "{req:?}: {e}");
        }
    }

    #[test]
    fn origin_head_rewrites_and_strips() {
        let h = head(
            "GET http://pkg.test:8080/x?y HTTP/1.1\r\nHost: evil.com\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
             Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nAccept: */*\r\nUpgrade: h2c\r\n\r\n",
        )
        .unwrap();
        let Target::Http { host, port, path } = parse_target(&h).unwrap() else {
            panic!()
        };
        let out = String::from_utf8(origin_head(&h, &host, port, &path).unwrap()).unwrap();
        assert_eq!(
            out,
            "GET /x?y HTTP/1.1\r\nHost: pkg.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let h = head("POST http://a.org/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
        let h =
            head("POST http://a.org/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
                .unwrap();
        assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
        let h = head("POST http://a.org/ HTTP/1.1\r\nContent-Length: -3\r\n\r\n").unwrap();
        assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
    }

    #[test]
    fn rate_limiter_paces() {
        let l = RateLimiter::new(1_000_000);
        let mut waited = Duration::ZERO;
        for _ in 0..10 {
            waited = l.take(100_000);
        }
        // 1 MB at 1 MB/s with 100 ms of burst: the last chunk waits ~0.9 s from now.
        assert!(
            waited > Duration::from_millis(700) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        assert!(l.chunk() <= RELAY_BUF);
    }

    #[test]
    fn audit_log_rotates_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_LOG_NAME);
        let log = AuditLog::open_with(&path, 4096)
            .unwrap()
            .with_day_budget(u64::MAX);
        let t0 = Instant::now();
        let mut rec = ConnRecord {
            ts: "2026-01-01T00:00:00.000Z".into(),
            workspace: "acme".into(),
            host: "pypi.org".into(),
            port: 443,
            method: "CONNECT".into(),
            decision: Decision::Allowed,
            reason: None,
            status: Some(200),
            addr: Some("203.0.113.1:443".into()),
            bytes_up: 10,
            bytes_down: 20,
            duration_ms: 5,
            suppressed: None,
        };
        for i in 0..100u32 {
            rec.duration_ms = u64::from(i);
            log.append_at(&rec, t0 + AUDIT_WINDOW * i);
        }
        assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
        assert!(rotated(&path).exists());
        let all = read_audit_log(&path, None).unwrap();
        assert!(all.len() < 100 && all.len() > 10, "{}", all.len());
        assert_eq!(all.last().unwrap().duration_ms, 99);
        let last3 = read_audit_log(&path, Some(3)).unwrap();
        assert_eq!(
            last3.iter().map(|r| r.duration_ms).collect::<Vec<_>>(),
            [97, 98, 99]
        );
        let t = audit_totals(&path).unwrap();
        assert_eq!(t.connections as usize, all.len());
        assert_eq!(t.bytes_down, 20 * all.len() as u64);
        // A torn line is skipped.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"{\"ts\":")
            .unwrap();
        assert_eq!(read_audit_log(&path, None).unwrap().len(), all.len());
    }
    fn record(decision: Decision, n: u64) -> ConnRecord {
        ConnRecord {
            ts: "2026-01-01T00:00:00.000Z".into(),
            workspace: "acme".into(),
            host: format!("h{n}.test"),
            port: 443,
            method: "CONNECT".into(),
            decision,
            reason: (decision != Decision::Allowed).then(|| "not_allowed: no".into()),
            status: None,
            addr: None,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: n,
            suppressed: None,
        }
    }

    /// A burst of refusals writes AUDIT_REFUSALS_PER_SEC lines, then one summary line per
    /// kind when the second is over; allowed lines have a rate of their own; totals stay
    /// exact.
    #[test]
    fn refusals_are_rate_limited_in_the_audit_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_LOG_NAME);
        let log = AuditLog::open(&path).unwrap();
        let t0 = Instant::now();
        let mut written = 0;
        for i in 0..100 {
            written += log.append_at(&record(Decision::Denied, i), t0) as u32;
            if i % 10 == 0 {
                assert!(log.append_at(&record(Decision::Allowed, 1000 + i), t0));
            }
        }
        for i in 0..5 {
            written += log.append_at(&record(Decision::Failed, 2000 + i), t0) as u32;
        }
        assert_eq!(written, AUDIT_REFUSALS_PER_SEC);
        let lines = read_audit_log(&path, None).unwrap();
        assert_eq!(lines.len(), 20, "10 refusals and 10 allowed");
        assert!(lines.iter().all(|r| r.suppressed.is_none()));
        // Still inside the window: nothing more.
        log.append_at(
            &record(Decision::Denied, 3000),
            t0 + Duration::from_millis(900),
        );
        assert_eq!(read_audit_log(&path, None).unwrap().len(), 20);
        // The next line after the window: the summaries first, then the line itself.
        assert!(log.append_at(&record(Decision::Denied, 4000), t0 + AUDIT_WINDOW));
        let lines = read_audit_log(&path, None).unwrap();
        assert_eq!(lines.len(), 23);
        let denied = &lines[20];
        assert_eq!(
            (denied.decision, denied.suppressed),
            (Decision::Denied, Some(91))
        );
        assert!(
            denied
                .reason
                .as_deref()
                .unwrap()
                .contains("91 more denied connections suppressed"),
            "{denied:?}"
        );
        assert_eq!(lines[21].decision, Decision::Failed);
        assert_eq!(lines[21].suppressed, Some(5));
        assert_eq!(lines[22].duration_ms, 4000);
        let t = audit_totals(&path).unwrap();
        assert_eq!(
            (t.connections, t.allowed, t.denied, t.failed),
            (117, 10, 102, 5)
        );
        // A summary still pending is written when the log is closed.
        for i in 0..20 {
            log.append_at(&record(Decision::Denied, 5000 + i), t0 + AUDIT_WINDOW);
        }
        drop(log);
        let last = read_audit_log(&path, Some(1)).unwrap().pop().unwrap();
        assert_eq!(last.suppressed, Some(11));
    }

    /// Contexts of one workspace share its limiters: a second context does not get a fresh
    /// bandwidth budget. A new rate gets new limiters.
    #[test]
    fn limiters_are_shared_and_follow_the_rate() {
        let l = Limiters::default();
        let (a, _) = l.for_rate(Some(4096));
        let (b, _) = l.for_rate(Some(4096));
        assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
        let (c, _) = l.for_rate(Some(8192));
        assert!(!Arc::ptr_eq(a.as_ref().unwrap(), c.as_ref().unwrap()));
        assert!(l.for_rate(None).0.is_none());
        // An unlimited context (a skill's, before it took the workspace's rate) does not
        // clear the pair in force: the same rate gets the same limiters again.
        let (d, _) = l.for_rate(Some(8192));
        assert!(Arc::ptr_eq(c.as_ref().unwrap(), d.as_ref().unwrap()));
    }

    #[test]
    fn a_skill_gets_the_workspace_caps() {
        let skill = NetworkPolicy::allowing(&["api.test".to_string()]).unwrap();
        let ws = NetworkPolicy {
            allow: vec![],
            max_connections: Some(2),
            bandwidth_bytes_per_sec: Some(1000),
        };
        let p = within_workspace(&skill, &ws);
        assert_eq!(p.allow, skill.allow);
        assert_eq!(p.max_connections, Some(2));
        assert_eq!(p.bandwidth_bytes_per_sec, Some(1000));
        // A skill asking for less keeps its lower connection cap.
        let mut tight = skill.clone();
        tight.max_connections = Some(1);
        assert_eq!(within_workspace(&tight, &ws).max_connections, Some(1));
        // An unlimited workspace leaves the skill unlimited in bandwidth, default cap.
        let p = within_workspace(&skill, &NetworkPolicy::default());
        assert_eq!(p.bandwidth_bytes_per_sec, None);
        assert_eq!(
            p.max_connections(),
            NetworkPolicy::default().max_connections()
        );
    }

    /// Allowed lines past the rate and past the day's budget are counted, never written:
    /// the first lines of a flood stay, the totals stay exact.
    #[test]
    fn allowed_connections_are_rate_limited_and_budgeted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(AUDIT_LOG_NAME);
        let log = AuditLog::open_with(&path, 4096).unwrap();
        assert_eq!(log.day_budget(), 2048);
        let t0 = Instant::now();
        // The proxy stamps records with the time they end: today.
        let today = crate::util::time::timestamp_now();
        let mut first = record(Decision::Allowed, 1);
        first.ts = today.clone();
        first.bytes_down = 7;
        assert!(log.append_at(&first, t0));
        let mut written = 1;
        // 1000 seconds of a flood, 50 a second.
        for sec in 0..1000u32 {
            for i in 0..50u64 {
                let mut r = record(Decision::Allowed, 10 + i);
                r.ts = today.clone();
                r.bytes_down = 7;
                written += log.append_at(&r, t0 + AUDIT_WINDOW * sec) as u64;
            }
        }
        assert!(written < 20, "{written} lines written one by one");
        drop(log);
        assert!(!rotated(&path).exists(), "the flood rotated the log");
        let lines = read_audit_log(&path, None).unwrap();
        assert_eq!(lines[0].duration_ms, 1, "{:?}", lines[0]);
        let t = audit_totals(&path).unwrap();
        assert_eq!((t.connections, t.allowed), (50_001, 50_001));
        assert_eq!(t.bytes_down, 7 * 50_001);
        let summaries: Vec<_> = lines.iter().filter(|r| r.suppressed.is_some()).collect();
        assert!(
            summaries[0]
                .reason
                .as_deref()
                .unwrap()
                .contains("more allowed connections suppressed"),
            "{:?}",
            summaries[0]
        );
        // Reopened the same day: what the file holds of today counts against the budget.
        let log = AuditLog::open_with(&path, 4096).unwrap();
        assert!(!log.append(&record(Decision::Allowed, 99)));
    }
}
