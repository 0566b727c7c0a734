//! JSON-RPC 2.0 over stdio (`bulkhead serve --stdio`): the library's operations for host
//! apps written in any language.
//!
//! # Framing
//!
//! One JSON object per line in each direction (newline-delimited JSON, UTF-8). Standard
//! output carries protocol lines only; logs go to standard error. Parameters are by name
//! (a JSON object). Batches are not supported (an array is an invalid request).
//!
//! # Methods
//!
//! One table ([`methods::table`]) names every method with its parameters and result as
//! JSON Schema; the dispatcher looks methods up in it and checks the parameters against
//! it, and [`describe`] renders it as an OpenRPC 1.2.6 document (`bulkhead serve
//! --describe`, `rpc.describe`), so the list cannot drift from what is served.
//!
//! # Concurrency, notifications, cancellation
//!
//! Requests are served concurrently, each on its own thread (at most [`MAX_IN_FLIGHT`] at
//! once); responses are written whole, one line at a time, by whichever thread finishes,
//! so they may come in any order. While a `run` is in flight the server sends `run.event`
//! notifications `{request_id, event}` (the JSON of [`crate::agent::RunEvent`], as `bulkhead
//! --json run` prints it) and `hook.event` notifications `{request_id, event, payload}` (the
//! lifecycle hook events, observe-only). `$/cancel` (notification) or `run.cancel`
//! (request) with `{id}` cancels an in-flight request through its [`CancelToken`]; the
//! cancelled request answers with [`code::REQUEST_CANCELLED`].
//!
//! # Limits and shutdown
//!
//! A line longer than [`MAX_LINE_BYTES`] is refused ([`code::INVALID_REQUEST`], id null) and
//! skipped; a line that is not JSON is [`code::PARSE_ERROR`] with id null; the server goes
//! on either way. End of input is a graceful shutdown: in-flight requests get
//! [`ServeOptions::grace`] to finish, then are cancelled (and their cancelled answers are
//! still written, within a few more seconds).
//!
//! # Errors
//!
//! See [`code`]: the standard codes, and application codes derived from the library's
//! [`Error`] with `data.exit_code`, the CLI's exit code for the same failure.
//! Messages are redacted of the operator's secrets (never of other tenants' live ones, which
//! would tell the caller what they are); a run redacts its own workspace's secrets from its
//! errors before they get here.

pub mod cli;
pub mod methods;

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::agent::CancelToken;
use crate::error::{CredError, Error, SessionError, WorkspaceError};
use crate::platform::Platform;

/// Version of this JSON-RPC API (`info.version` of the OpenRPC document). The major number
/// changes when a method or field is removed or changes meaning.
pub const API_VERSION: &str = "1.0.0";

/// The longest request line accepted (bytes, newline excluded).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Requests served at once; more are refused with [`code::SERVER_BUSY`].
pub const MAX_IN_FLIGHT: usize = 64;

/// The most bytes of one request id (a string id longer than this is an invalid request).
pub const MAX_ID_BYTES: usize = 256;

/// Error codes. Standard JSON-RPC codes, then application codes in -32000..-32099, each
/// tied to a CLI exit code (given as `error.data.exit_code`).
///
/// | code | meaning | CLI exit |
/// | --- | --- | --- |
/// | -32700 | parse error: the line is not JSON | |
/// | -32600 | invalid request (not a request object, bad id, line over 16 MiB, batch, duplicate id in flight) | |
/// | -32601 | method not found | |
/// | -32602 | invalid params (schema violation, or invalid input) | 2 |
/// | -32603 | internal error (a bug: the handler panicked; that request fails, the server goes on) | 70 |
/// | -32000 | failure | 1 |
/// | -32001 | not found (workspace, session, credential set, memory chunk, skill) | 3 |
/// | -32002 | already exists | 4 |
/// | -32003 | wrong credential key or damaged `creds.enc` | 6 |
/// | -32004 | no credential key | 7 |
/// | -32005 | session in use by another run | 8 |
/// | -32006 | every model failed (`data.reason`, `data.attempts`) | 9 |
/// | -32007 | timed out | 124 |
/// | -32008 | sandbox setup failed | 125 |
/// | -32009 | server busy (too many requests in flight) | |
/// | -32800 | request cancelled | 130 |
pub mod code {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Parameters do not match the method's schema, or are invalid.
    pub const INVALID_PARAMS: i64 = -32602;
    /// A bug in the server.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// A failure not covered below (CLI exit 1).
    pub const FAILURE: i64 = -32000;
    /// No such workspace, session, credential set, memory chunk or skill (CLI exit 3).
    pub const NOT_FOUND: i64 = -32001;
    /// It exists already (CLI exit 4).
    pub const EXISTS: i64 = -32002;
    /// Wrong credential key or damaged `creds.enc` (CLI exit 6).
    pub const WRONG_CREDENTIAL_KEY: i64 = -32003;
    /// No credential key was given to the server (CLI exit 7).
    pub const NO_CREDENTIAL_KEY: i64 = -32004;
    /// The session is in use by another run (CLI exit 8).
    pub const SESSION_BUSY: i64 = -32005;
    /// Every model of the chain failed (CLI exit 9).
    pub const ALL_MODELS_FAILED: i64 = -32006;
    /// A time limit passed (CLI exit 124).
    pub const TIMED_OUT: i64 = -32007;
    /// The sandbox could not be built (CLI exit 125).
    pub const SANDBOX_SETUP: i64 = -32008;
    /// Too many requests in flight.
    pub const SERVER_BUSY: i64 = -32009;
    /// The request was cancelled (`$/cancel`, `run.cancel`, or shutdown) (CLI exit 130).
    pub const REQUEST_CANCELLED: i64 = -32800;

    /// Every code with its meaning and CLI exit code (for the OpenRPC document).
    pub const TABLE: &[(i64, &str, Option<i32>)] = &[
        (PARSE_ERROR, "parse error", None),
        (INVALID_REQUEST, "invalid request", None),
        (METHOD_NOT_FOUND, "method not found", None),
        (INVALID_PARAMS, "invalid params", Some(2)),
        (INTERNAL_ERROR, "internal error", Some(70)),
        (FAILURE, "failure", Some(1)),
        (NOT_FOUND, "not found", Some(3)),
        (EXISTS, "already exists", Some(4)),
        (WRONG_CREDENTIAL_KEY, "wrong credential key", Some(6)),
        (NO_CREDENTIAL_KEY, "no credential key", Some(7)),
        (SESSION_BUSY, "session in use", Some(8)),
        (ALL_MODELS_FAILED, "every model failed", Some(9)),
        (TIMED_OUT, "timed out", Some(124)),
        (SANDBOX_SETUP, "sandbox setup failed", Some(125)),
        (SERVER_BUSY, "server busy", None),
        (REQUEST_CANCELLED, "request cancelled", Some(130)),
    ];
}

/// A JSON-RPC error object.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code (see [`code`]).
    pub code: i64,
    /// What went wrong (redacted of secrets).
    pub message: String,
    /// Details: `exit_code`, and for model failures `reason` and `attempts`.
    pub data: Option<Value>,
}

impl RpcError {
    /// An error with a code and a message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: crate::logging::redact_operator(&message.into()),
            data: None,
        }
    }

    /// Invalid params (CLI exit 2).
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, message).with_data(json!({"exit_code": 2}))
    }

    /// A not-found error (CLI exit 3).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(code::NOT_FOUND, message).with_data(json!({"exit_code": 3}))
    }

    /// The internal error of a request whose handler panicked (CLI exit 70).
    pub fn internal(method: &str) -> Self {
        Self::new(
            code::INTERNAL_ERROR,
            format!(
                "internal error: {method:?} failed on a bug (the server's log has the details; \
                 the server goes on)"
            ),
        )
        .with_data(json!({"exit_code": crate::error::exit::INTERNAL}))
    }

    /// The cancelled-request error.
    pub fn cancelled() -> Self {
        Self::new(code::REQUEST_CANCELLED, "request cancelled").with_data(json!({"exit_code": 130}))
    }

    /// Sets `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// The error object.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.data {
            v["data"] = d.clone();
        }
        v
    }
}

impl From<Error> for RpcError {
    fn from(e: Error) -> Self {
        let exit = e.exit_code();
        let kind = match &e {
            Error::Invalid(_) => code::INVALID_PARAMS,
            Error::Workspace(WorkspaceError::NoSuch(_))
            | Error::Session(SessionError::NoSuch { .. })
            | Error::Cred(CredError::NoSuchSet { .. }) => code::NOT_FOUND,
            Error::Workspace(WorkspaceError::Exists(_))
            | Error::Session(SessionError::Exists { .. }) => code::EXISTS,
            Error::Cred(CredError::WrongKey { .. }) => code::WRONG_CREDENTIAL_KEY,
            Error::Cred(CredError::NoKey(_)) => code::NO_CREDENTIAL_KEY,
            Error::Session(SessionError::Busy(_)) => code::SESSION_BUSY,
            Error::AllModelsFailed { .. } => code::ALL_MODELS_FAILED,
            Error::Cancelled(_) => code::REQUEST_CANCELLED,
            Error::RunTimedOut(_) => code::TIMED_OUT,
            Error::Internal(_) => code::INTERNAL_ERROR,
            Error::Setup(_) | Error::Attestation(_) | Error::Launcher(_) => code::SANDBOX_SETUP,
            _ => code::FAILURE,
        };
        let mut data = json!({"exit_code": exit});
        if let Error::AllModelsFailed { attempts } = &e {
            let reason = attempts
                .iter()
                .rev()
                .find_map(|a| a.reason)
                .map(|r| json!(r))
                .unwrap_or_else(|| {
                    json!(attempts
                        .last()
                        .map(|a| a.outcome.clone())
                        .unwrap_or_default())
                });
            data["reason"] = reason;
            let list: Vec<Value> = attempts
                .iter()
                .map(|a| {
                    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
                    if let Some(m) = v.get("message").and_then(Value::as_str) {
                        v["message"] = json!(crate::logging::redact_operator(m));
                    }
                    v
                })
                .collect();
            data["attempts"] = Value::Array(list);
        }
        let message = if matches!(e, Error::Cancelled(_)) {
            "request cancelled".to_string()
        } else {
            e.to_string()
        };
        RpcError::new(kind, message).with_data(data)
    }
}

/// Result of a handler.
pub type RpcResult = std::result::Result<Value, RpcError>;

/// Where protocol lines go: one line at a time, whole, under a lock.
#[derive(Clone)]
pub struct Output {
    inner: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Output")
    }
}

impl Output {
    /// Wraps a writer (standard output for `serve --stdio`).
    pub fn new(w: impl Write + Send + 'static) -> Self {
        Output {
            inner: Arc::new(Mutex::new(Box::new(w))),
        }
    }

    /// Writes one message as one line and flushes. A closed pipe is ignored (the host went
    /// away; end of input will follow).
    pub fn send(&self, msg: &Value) {
        let mut line = serde_json::to_string(msg).unwrap_or_else(|_| {
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"unserializable message"}}"#
                .to_string()
        });
        line.push('\n');
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let _ = w.write_all(line.as_bytes()).and_then(|_| w.flush());
    }

    /// Sends a notification.
    pub fn notify(&self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a response.
    pub fn respond(&self, id: &Value, result: RpcResult) {
        let msg = match result {
            Ok(v) => json!({"jsonrpc": "2.0", "id": id, "result": v}),
            Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
        };
        self.send(&msg);
    }
}

/// Settings of a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Passed as `--credential-key-file` (else `$BULKHEAD_CREDENTIAL_KEY` is read).
    pub credential_key_file: Option<PathBuf>,
    /// How long in-flight requests may go on after end of input before they are cancelled.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            credential_key_file: None,
            grace: Duration::from_secs(5),
        }
    }
}

/// Requests in flight: id (as its JSON text) → cancel token.
#[derive(Default)]
struct InFlight {
    map: Mutex<HashMap<String, CancelToken>>,
    cv: Condvar,
}

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CancelToken>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, key: &str) {
        self.lock().remove(key);
        self.cv.notify_all();
    }

    /// Waits until none is left or `d` passes; `true` when none is left.
    fn wait_empty(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        let mut m = self.lock();
        while !m.is_empty() {
            let now = Instant::now();
            if now >= end {
                return false;
            }
            m = self
                .cv
                .wait_timeout(m, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// What a handler gets.
pub struct Ctx<'a> {
    /// The platform.
    pub platform: &'a Platform,
    /// Server settings.
    pub options: &'a ServeOptions,
    /// The request's id.
    pub request_id: &'a Value,
    /// Cancelled by `$/cancel`, `run.cancel` or shutdown.
    pub cancel: &'a CancelToken,
    /// For notifications.
    pub out: &'a Output,
    in_flight: &'a InFlight,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("request_id", self.request_id)
            .finish()
    }
}

impl Ctx<'_> {
    /// Cancels the in-flight request whose id is `id`; `false` when there is none.
    pub fn cancel_request(&self, id: &Value) -> bool {
        let key = id.to_string();
        let token = self.in_flight.lock().get(&key).cloned();
        match token {
            Some(t) => {
                t.cancel();
                true
            }
            None => false,
        }
    }
}

/// Reads one line into `buf` (newline dropped). `Ok(None)` at end of input;
/// `Ok(Some(false))` when the line was longer than `max` (it is consumed and dropped).
fn read_line(r: &mut impl BufRead, max: usize, buf: &mut Vec<u8>) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if any { Some(!too_long) } else { None });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
                buf.shrink_to(64 << 10);
            } else {
                buf.extend_from_slice(&chunk[..take]);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            return Ok(Some(!too_long));
        }
    }
}

/// Calls `f` (one request's handler, or the parsing of one line); a panic in it becomes that
/// request's internal error, logged, and never reaches the server. Locks shared by all
/// requests are taken poison-tolerant (`unwrap_or_else(|e| e.into_inner())`), so a panic in
/// one request leaves no poisoned lock for the others. Release builds unwind
/// (`panic = "unwind"` in the workspace's release profile) for this to hold there too.
pub(crate) fn isolate<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, RpcError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        log::error!(target: "rpc", "{what}: panicked: {}", crate::logging::redact(&msg));
        RpcError::internal(what)
    })
}

fn valid_id(id: &Value) -> bool {
    match id {
        Value::Null => true,
        Value::Number(_) => true,
        Value::String(s) => s.len() <= MAX_ID_BYTES,
        _ => false,
    }
}

/// Serves JSON-RPC on `input` / `out` until end of input, then shuts down gracefully.
pub fn serve(
    platform: Platform,
    options: ServeOptions,
    mut input: impl BufRead,
    out: Output,
) -> std::io::Result<()> {
    let platform = Arc::new(platform);
    let options = Arc::new(options);
    let in_flight = Arc::new(InFlight::default());
    let mut buf = Vec::new();
    loop {
        let line = match read_line(&mut input, MAX_LINE_BYTES, &mut buf) {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                log::warn!(target: "rpc", "reading the input: {e}");
                break;
            }
        };
        if !line {
            out.respond(
                &Value::Null,
                Err(RpcError::new(
                    code::INVALID_REQUEST,
                    format!("request line longer than {MAX_LINE_BYTES} bytes (16 MiB): refused"),
                )),
            );
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let msg: Value = match serde_json::from_slice(&buf) {
            Ok(v) => v,
            Err(e) => {
                out.respond(
                    &Value::Null,
                    Err(RpcError::new(
                        code::PARSE_ERROR,
                        format!(
                            "parse error: not JSON (line {}, column {})",
                            e.line(),
                            e.column()
                        ),
                    )),
                );
                continue;
            }
        };
        // A bug in the dispatch itself fails this line, not the server.
        if let Err(e) = isolate("dispatch", || {
            handle_message(msg, &platform, &options, &in_flight, &out)
        }) {
            out.respond(&Value::Null, Err(e));
        }
    }
    // End of input: let in-flight requests finish, then cancel what is left.
    if !in_flight.wait_empty(options.grace) {
        let tokens: Vec<CancelToken> = in_flight.lock().values().cloned().collect();
        log::info!(target: "rpc", "end of input: cancelling {} request(s) still in flight", tokens.len());
        for t in tokens {
            t.cancel();
        }
        in_flight.wait_empty(Duration::from_secs(5));
    }
    Ok(())
}

fn handle_message(
    msg: Value,
    platform: &Arc<Platform>,
    options: &Arc<ServeOptions>,
    in_flight: &Arc<InFlight>,
    out: &Output,
) {
    let invalid = |why: &str| {
        out.respond(
            &Value::Null,
            Err(RpcError::new(
                code::INVALID_REQUEST,
                format!("invalid request: {why}"),
            )),
        )
    };
    let Value::Object(mut obj) = msg else {
        return invalid(if msg.is_array() {
            "batches are not supported: send one request object per line"
        } else {
            "expected a JSON object"
        });
    };
    let id = obj.remove("id");
    if let Some(id) = &id {
        if !valid_id(id) {
            return invalid("the id must be a string (at most 256 bytes), a number or null");
        }
    }
    let reply_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc") != Some(&json!("2.0")) {
        return out.respond(
            &reply_id,
            Err(RpcError::new(
                code::INVALID_REQUEST,
                "invalid request: \"jsonrpc\" must be \"2.0\"",
            )),
        );
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return out.respond(
            &reply_id,
            Err(RpcError::new(
                code::INVALID_REQUEST,
                "invalid request: \"method\" must be a string",
            )),
        );
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            if id.is_some() {
                out.respond(
                    &reply_id,
                    Err(RpcError::invalid_params(
                        "params must be an object (parameters are passed by name)",
                    )),
                );
            }
            return;
        }
    };
    let Some(m) = methods::find(&method) else {
        if id.is_some() {
            out.respond(
                &reply_id,
                Err(RpcError::new(
                    code::METHOD_NOT_FOUND,
                    format!(
                        "method not found: {:?} (see rpc.describe)",
                        method.chars().take(100).collect::<String>()
                    ),
                )),
            );
        }
        return;
    };
    let Some(id) = id else {
        // Notifications: only `$/cancel` is acted on.
        if m.notification {
            let ctx = Ctx {
                platform,
                options,
                request_id: &Value::Null,
                cancel: &CancelToken::new(),
                out,
                in_flight,
            };
            let _ = isolate(m.name, || m.call(&ctx, &params));
        } else {
            log::warn!(target: "rpc", "notification {method:?} ignored: send it with an id");
        }
        return;
    };
    if m.inline {
        let ctx = Ctx {
            platform,
            options,
            request_id: &id,
            cancel: &CancelToken::new(),
            out,
            in_flight,
        };
        let r = isolate(m.name, || m.call(&ctx, &params)).and_then(|r| r);
        out.respond(&id, r);
        return;
    }
    let key = id.to_string();
    let token = CancelToken::new();
    {
        let mut map = in_flight.lock();
        if map.contains_key(&key) {
            drop(map);
            return out.respond(
                &id,
                Err(RpcError::new(
                    code::INVALID_REQUEST,
                    "invalid request: a request with this id is already in flight",
                )),
            );
        }
        if map.len() >= MAX_IN_FLIGHT {
            drop(map);
            return out.respond(
                &id,
                Err(RpcError::new(
                    code::SERVER_BUSY,
                    format!("server busy: {MAX_IN_FLIGHT} requests in flight; retry later"),
                )),
            );
        }
        map.insert(key.clone(), token.clone());
    }
    let (platform, options, in_flight2, out2) = (
        Arc::clone(platform),
        Arc::clone(options),
        Arc::clone(in_flight),
        out.clone(),
    );
    let spawned = std::thread::Builder::new()
        .name("bulkhead-rpc".into())
        .spawn(move || {
            let ctx = Ctx {
                platform: &platform,
                options: &options,
                request_id: &id,
                cancel: &token,
                out: &out2,
                in_flight: &in_flight2,
            };
            let r = isolate(m.name, || m.call(&ctx, &params)).and_then(|r| r);
            let r = match r {
                Err(_) if token.is_cancelled() => Err(RpcError::cancelled()),
                r => r,
            };
            out2.respond(&id, r);
            in_flight2.remove(&id.to_string());
        });
    if let Err(e) = spawned {
        in_flight.remove(&key);
        out.respond(
            &serde_json::from_str(&key).unwrap_or(Value::Null),
            Err(RpcError::new(
                code::SERVER_BUSY,
                format!("server busy: cannot start a thread: {e}"),
            )),
        );
    }
}

/// The OpenRPC 1.2.6 document of this server (what `bulkhead serve --describe` prints and
/// `rpc.describe` returns).
pub fn describe() -> Value {
    methods::openrpc()
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
