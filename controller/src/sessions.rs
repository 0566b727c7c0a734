//! Sessions: per-workspace transcripts, one typed event per line.
//!
//! ```text
//! workspaces/<id>/sessions/<sid>.jsonl   one JSON event per line, appended, never rewritten
//! ```
//!
//! # Format
//!
//! Each line is one [`Event`]: a JSON object with a `type` tag (`run_start`, `user_message`,
//! `assistant_message`, `tool_call`, `tool_result`, `compaction`, `error`, `run_end`), a `ts`
//! and, where it applies, a `run_id`. `ts` is **RFC 3339 in UTC with milliseconds**
//! (`2026-11-26T21:45:01.123Z`): readable in the raw file, and it sorts as text. An event
//! whose `type` this version does not know (written by a newer version) is read as
//! [`Event::Unknown`] with the whole object kept, and written back with the same content.
//!
//! Session ids match `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`. [`Sessions::create`] without an id
//! generates a time-sortable one: `20261126T214501Z-1f3a9c07` (UTC second, 8 random hex).
//!
//! # Writing
//!
//! A writer holds a [`SessionHandle`], which holds an exclusive `flock(2)` on the `.jsonl`
//! itself, so two runs of one session serialize ([`LockMode::Wait`]) or the second fails
//! at once with [`SessionError::Busy`] ([`LockMode::FailFast`], CLI exit 8). Locks are per
//! open file, so two threads of one process exclude each other as two processes do.
//!
//! Events of a turn are buffered ([`SessionHandle::push`]) and [`SessionHandle::commit`]ted
//! with one `write(2)` of whole lines on an `O_APPEND` descriptor and one `fdatasync(2)`;
//! [`SessionHandle::append_now`] does the same for a single event. Appending never reads
//! the transcript: its cost does not grow with the transcript's length (`bulkhead-bench-
//! sessions` measures it). A failed write is rolled back (the file is truncated to its
//! length before the commit).
//!
//! # Crashes
//!
//! A crash in the middle of a write can leave a torn last line: bytes after the last
//! newline. Reading ignores it (and any other line that is not a JSON object with a string
//! `type`, or longer than [`MAX_LINE_BYTES`]) and reports how many lines it skipped. Opening
//! a handle (under the lock) truncates a torn tail, so new lines are never glued onto it.
//! Readers take no lock: a reader racing a commit may see the commit's last line as torn.
//!
//! # Subscriptions
//!
//! [`Sessions::subscribe`] (one workspace) and [`subscribe_all`] (every workspace) return
//! an `mpsc` receiver of [`SessionEventNotice`]s, sent after each commit is durable, in
//! commit order. Subscriptions are in-process: they see commits made through this library
//! in this process. A dropped receiver is removed at the next delivery. Channels are
//! unbounded: a subscriber that never reads keeps what it was sent.

use std::collections::hash_map::RandomState;
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::error::SessionError;
use crate::error::{exit, Error, Result};
use crate::platform::{Platform, Workspace};
use crate::util::human_size;
use crate::util::text::safe;
pub use crate::util::time::{format_timestamp, timestamp_now};

/// Longest line (one serialized event, without its newline) written or read: 16 MiB.
/// Longer events are refused on write and skipped on read, so reading needs bounded memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Longest session id.
pub const MAX_SESSION_ID_LEN: usize = 64;

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// Token usage and cost of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, summed over the run's LLM calls.
    pub input_tokens: u64,
    /// Completion tokens, summed over the run's LLM calls.
    pub output_tokens: u64,
    /// Cost in US dollars, when the provider's prices are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
}

/// One line of a transcript.
///
/// Every event has a `ts` (RFC 3339, UTC, milliseconds; see [`timestamp_now`]); an empty
/// `ts` is filled in when the event is pushed or appended. `run_id` ties an event to a run
/// (required on `run_start` and `run_end`, optional elsewhere). The constructors
/// ([`Event::user_message`], …) leave `ts` empty and `run_id` unset; chain
/// [`Event::with_run_id`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A run (one message → final answer of the agent loop) begins.
    RunStart {
        /// Timestamp.
        ts: String,
        /// Run id.
        run_id: String,
        /// Model the run starts with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
        /// Provider of that model.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider: Option<String>,
    },
    /// The user's message.
    UserMessage {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// Text.
        text: String,
    },
    /// The assistant's text.
    AssistantMessage {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// Text.
        text: String,
    },
    /// The model asked for a tool.
    ToolCall {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// Id pairing the call with its result.
        call_id: String,
        /// Tool name.
        name: String,
        /// Arguments as the model gave them.
        arguments: Value,
    },
    /// What a tool returned.
    ToolResult {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// Id of the call.
        call_id: String,
        /// Output (as given to the model, after truncation).
        output: String,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Older events were summarized to fit the context window.
    Compaction {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// The summary that replaces them in the context.
        summary: String,
        /// How many events it replaces.
        replaced_events: u64,
    },
    /// Something failed (an LLM call, a tool, a hook).
    Error {
        /// Timestamp.
        ts: String,
        /// Run id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run_id: Option<String>,
        /// What failed.
        message: String,
        /// Class of failure (`llm`, `tool`, `timeout`, …).
        kind: String,
    },
    /// A run ended.
    RunEnd {
        /// Timestamp.
        ts: String,
        /// Run id.
        run_id: String,
        /// Tokens and cost.
        usage: Usage,
        /// How it ended: `completed`, `failed`, `cancelled`, `max_turns`, … (free text so
        /// new outcomes do not make old readers drop the event).
        outcome: String,
    },
    /// An event this version does not know (a newer `type`, or a known `type` whose fields
    /// do not fit), kept whole: written back it has the same content (object keys may come
    /// out in another order).
    #[serde(untagged)]
    Unknown(Value),
}

impl Event {
    /// `run_start` (ts filled in when appended).
    pub fn run_start(run_id: impl Into<String>, model: Option<&str>) -> Event {
        Event::RunStart {
            ts: String::new(),
            run_id: run_id.into(),
            model: model.map(str::to_string),
            provider: None,
        }
    }

    /// `user_message`.
    pub fn user_message(text: impl Into<String>) -> Event {
        Event::UserMessage {
            ts: String::new(),
            run_id: None,
            text: text.into(),
        }
    }

    /// `assistant_message`.
    pub fn assistant_message(text: impl Into<String>) -> Event {
        Event::AssistantMessage {
            ts: String::new(),
            run_id: None,
            text: text.into(),
        }
    }

    /// `tool_call`.
    pub fn tool_call(
        call_id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Event {
        Event::ToolCall {
            ts: String::new(),
            run_id: None,
            call_id: call_id.into(),
            name: name.into(),
            arguments,
        }
    }

    /// `tool_result`.
    pub fn tool_result(
        call_id: impl Into<String>,
        output: impl Into<String>,
        is_error: bool,
    ) -> Event {
        Event::ToolResult {
            ts: String::new(),
            run_id: None,
            call_id: call_id.into(),
            output: output.into(),
            is_error,
        }
    }

    /// `compaction`.
    pub fn compaction(summary: impl Into<String>, replaced_events: u64) -> Event {
        Event::Compaction {
            ts: String::new(),
            run_id: None,
            summary: summary.into(),
            replaced_events,
        }
    }

    /// `error`.
    pub fn error(message: impl Into<String>, kind: impl Into<String>) -> Event {
        Event::Error {
            ts: String::new(),
            run_id: None,
            message: message.into(),
            kind: kind.into(),
        }
    }

    /// `run_end`.
    pub fn run_end(run_id: impl Into<String>, usage: Usage, outcome: impl Into<String>) -> Event {
        Event::RunEnd {
            ts: String::new(),
            run_id: run_id.into(),
            usage,
            outcome: outcome.into(),
        }
    }

    /// Sets the run id (for `run_start`/`run_end` it replaces theirs; for an unknown event
    /// it sets the `run_id` field of the object).
    pub fn with_run_id(mut self, id: impl Into<String>) -> Event {
        let id = id.into();
        match &mut self {
            Event::RunStart { run_id, .. } | Event::RunEnd { run_id, .. } => *run_id = id,
            Event::UserMessage { run_id, .. }
            | Event::AssistantMessage { run_id, .. }
            | Event::ToolCall { run_id, .. }
            | Event::ToolResult { run_id, .. }
            | Event::Compaction { run_id, .. }
            | Event::Error { run_id, .. } => *run_id = Some(id),
            Event::Unknown(v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("run_id".into(), Value::String(id));
                }
            }
        }
        self
    }

    /// Sets the timestamp.
    pub fn with_ts(mut self, t: impl Into<String>) -> Event {
        let t = t.into();
        match self.ts_mut() {
            Some(ts) => *ts = t,
            None => {
                if let Event::Unknown(Value::Object(o)) = &mut self {
                    o.insert("ts".into(), Value::String(t));
                }
            }
        }
        self
    }

    fn ts_mut(&mut self) -> Option<&mut String> {
        match self {
            Event::RunStart { ts, .. }
            | Event::UserMessage { ts, .. }
            | Event::AssistantMessage { ts, .. }
            | Event::ToolCall { ts, .. }
            | Event::ToolResult { ts, .. }
            | Event::Compaction { ts, .. }
            | Event::Error { ts, .. }
            | Event::RunEnd { ts, .. } => Some(ts),
            Event::Unknown(_) => None,
        }
    }

    /// The timestamp (for an unknown event: its `ts` field if it is a string).
    pub fn ts(&self) -> Option<&str> {
        match self {
            Event::RunStart { ts, .. }
            | Event::UserMessage { ts, .. }
            | Event::AssistantMessage { ts, .. }
            | Event::ToolCall { ts, .. }
            | Event::ToolResult { ts, .. }
            | Event::Compaction { ts, .. }
            | Event::Error { ts, .. }
            | Event::RunEnd { ts, .. } => Some(ts),
            Event::Unknown(v) => v.get("ts").and_then(Value::as_str),
        }
    }

    /// The run id, if the event has one.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            Event::RunStart { run_id, .. } | Event::RunEnd { run_id, .. } => Some(run_id),
            Event::UserMessage { run_id, .. }
            | Event::AssistantMessage { run_id, .. }
            | Event::ToolCall { run_id, .. }
            | Event::ToolResult { run_id, .. }
            | Event::Compaction { run_id, .. }
            | Event::Error { run_id, .. } => run_id.as_deref(),
            Event::Unknown(v) => v.get("run_id").and_then(Value::as_str),
        }
    }

    /// The `type` tag as written in the file (for an unknown event, its own `type`).
    pub fn kind(&self) -> &str {
        match self {
            Event::RunStart { .. } => "run_start",
            Event::UserMessage { .. } => "user_message",
            Event::AssistantMessage { .. } => "assistant_message",
            Event::ToolCall { .. } => "tool_call",
            Event::ToolResult { .. } => "tool_result",
            Event::Compaction { .. } => "compaction",
            Event::Error { .. } => "error",
            Event::RunEnd { .. } => "run_end",
            Event::Unknown(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }

    /// Fills an empty `ts` with `now`.
    fn stamp(&mut self, now: &str) {
        match self.ts_mut() {
            Some(ts) if ts.is_empty() => *ts = now.to_string(),
            Some(_) => {}
            None => {
                if let Event::Unknown(Value::Object(o)) = self {
                    o.entry("ts").or_insert_with(|| Value::String(now.into()));
                }
            }
        }
    }

    /// Parses one line; `None` when it is not an event (invalid JSON, or not an object with
    /// a string `type`).
    pub fn parse_line(line: &[u8]) -> Option<Event> {
        match serde_json::from_slice::<Event>(line) {
            Ok(Event::Unknown(v)) if !has_type_tag(&v) => None,
            Ok(e) => Some(e),
            Err(_) => None,
        }
    }

    /// The event as one line of JSON (no newline).
    pub fn to_line(&self) -> Result<Vec<u8>> {
        if let Event::Unknown(v) = self {
            if !has_type_tag(v) {
                return Err(Error::Invalid(
                    "an unknown event must be a JSON object with a string \"type\"".into(),
                ));
            }
        }
        serde_json::to_vec(self)
            .map_err(|e| Error::Invalid(format!("event does not serialize: {e}")))
    }
}

fn has_type_tag(v: &Value) -> bool {
    v.get("type").is_some_and(Value::is_string)
}

// ---------------------------------------------------------------------------------------
// Time and ids
// ---------------------------------------------------------------------------------------

/// Checks a session id: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
pub fn validate_session_id(sid: &str) -> Result<()> {
    let b = sid.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_SESSION_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid session id {sid:?}: use 1 to {MAX_SESSION_ID_LEN} of A-Z a-z 0-9 _ -, \
             starting with a letter or digit"
        )))
    }
}

/// A new time-sortable session id: `20261126T214501Z-1f3a9c07` (UTC, then 32 random bits).
pub fn generate_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // RandomState is seeded from the OS once per process; mixing in time, pid and a counter
    // makes each id differ (these ids need to be unlikely to collide, not unguessable).
    let mut h = RandomState::new().build_hasher();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    format!(
        "{}-{:08x}",
        crate::util::time::compact_utc(ms),
        h.finish() as u32
    )
}

// ---------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------

/// One committed event, as delivered to subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEventNotice {
    /// Workspace id.
    pub workspace: String,
    /// Session id.
    pub sid: String,
    /// The event, as written (timestamp filled in).
    pub event: Event,
}

#[derive(Debug)]
struct Subscriber {
    /// `None`: every workspace; else the workspace directory.
    filter: Option<PathBuf>,
    tx: Sender<SessionEventNotice>,
}

static SUBSCRIBERS: Mutex<Vec<Subscriber>> = Mutex::new(Vec::new());

fn subscribers() -> std::sync::MutexGuard<'static, Vec<Subscriber>> {
    SUBSCRIBERS.lock().unwrap_or_else(|p| p.into_inner())
}

fn add_subscriber(filter: Option<PathBuf>) -> Receiver<SessionEventNotice> {
    let (tx, rx) = mpsc::channel();
    subscribers().push(Subscriber { filter, tx });
    rx
}

/// Subscribes to the events committed in this process to any session of any workspace.
pub fn subscribe_all() -> Receiver<SessionEventNotice> {
    add_subscriber(None)
}

/// Number of live subscriptions in this process (those whose receiver was dropped count
/// until the next delivery finds them gone).
pub fn subscriber_count() -> usize {
    subscribers().len()
}

/// Sends `events` to every matching subscriber, dropping those whose receiver is gone.
/// Called with the session's lock held, under the registry's lock: each subscriber sees a
/// session's commits in commit order.
fn deliver(ws_dir: &Path, workspace: &str, sid: &str, events: Vec<Event>) {
    let mut subs = subscribers();
    if subs.is_empty() {
        return;
    }
    subs.retain(|s| {
        if s.filter.as_deref().is_some_and(|f| f != ws_dir) {
            return true;
        }
        events.iter().all(|e| {
            s.tx.send(SessionEventNotice {
                workspace: workspace.to_string(),
                sid: sid.to_string(),
                event: e.clone(),
            })
            .is_ok()
        })
    });
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// A session's events as read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// Session id.
    pub sid: String,
    /// The events, in file order.
    pub events: Vec<Event>,
    /// Lines skipped: not JSON, not an event object, longer than [`MAX_LINE_BYTES`], or a
    /// torn last line.
    pub skipped: usize,
    /// Whether the file ends in a torn line (bytes after the last newline), counted in
    /// `skipped`.
    pub torn_tail: bool,
    /// File size in bytes.
    pub size_bytes: u64,
}

/// A line as split by [`LineReader`].
enum RawLine {
    /// A complete line (its bytes are in the reader's buffer).
    Line,
    /// A complete line longer than [`MAX_LINE_BYTES`] (discarded while read).
    TooLong,
    /// Bytes after the last newline.
    Torn,
}

/// Splits a stream into lines holding at most [`MAX_LINE_BYTES`] of one line in memory.
struct LineReader<R> {
    r: R,
    buf: Vec<u8>,
}

impl<R: BufRead> LineReader<R> {
    fn next(&mut self) -> io::Result<Option<RawLine>> {
        self.buf.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let avail = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                return Ok(any.then_some(RawLine::Torn));
            }
            any = true;
            let nl = avail.iter().position(|&c| c == b'\n');
            let chunk = &avail[..nl.unwrap_or(avail.len())];
            if !too_long {
                if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = nl.map_or(avail.len(), |i| i + 1);
            self.r.consume(used);
            if nl.is_some() {
                return Ok(Some(if too_long {
                    RawLine::TooLong
                } else {
                    RawLine::Line
                }));
            }
        }
    }
}

fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Reads a whole transcript. `NotFound` is passed through for the caller to name.
fn read_file(path: &Path, sid: &str) -> io::Result<Transcript> {
    let f = open_read(path)?;
    let size_bytes = f.metadata()?.len();
    let mut lr = LineReader {
        r: BufReader::with_capacity(64 << 10, f),
        buf: Vec::new(),
    };
    let mut t = Transcript {
        sid: sid.to_string(),
        events: Vec::new(),
        skipped: 0,
        torn_tail: false,
        size_bytes,
    };
    while let Some(l) = lr.next()? {
        match l {
            RawLine::Line => match Event::parse_line(&lr.buf) {
                Some(e) => t.events.push(e),
                None => t.skipped += 1,
            },
            RawLine::TooLong => t.skipped += 1,
            RawLine::Torn => {
                t.skipped += 1;
                t.torn_tail = true;
            }
        }
    }
    if t.skipped > 0 {
        log::warn!(
            target: "session",
            "{}: skipped {} damaged line(s){}",
            path.display(),
            t.skipped,
            if t.torn_tail { " (torn last line)" } else { "" }
        );
    }
    Ok(t)
}

/// Summary of one session, as [`Sessions::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Session id.
    pub sid: String,
    /// Number of events.
    pub events: usize,
    /// Damaged lines skipped (see [`Transcript::skipped`]).
    pub skipped: usize,
    /// `ts` of the first event.
    pub first_ts: Option<String>,
    /// `ts` of the last event.
    pub last_ts: Option<String>,
    /// File size in bytes.
    pub size_bytes: u64,
}

/// Counts events without building them: only `type` and `ts` are decoded.
fn scan_file(path: &Path, sid: &str) -> io::Result<SessionInfo> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        ty: Option<Value>,
        ts: Option<Value>,
    }
    let f = open_read(path)?;
    let size_bytes = f.metadata()?.len();
    let mut lr = LineReader {
        r: BufReader::with_capacity(64 << 10, f),
        buf: Vec::new(),
    };
    let mut info = SessionInfo {
        sid: sid.to_string(),
        events: 0,
        skipped: 0,
        first_ts: None,
        last_ts: None,
        size_bytes,
    };
    while let Some(l) = lr.next()? {
        let probe = match l {
            RawLine::Line if lr.buf.trim_ascii_start().starts_with(b"{") => {
                serde_json::from_slice::<Probe>(&lr.buf).ok()
            }
            _ => None,
        };
        match probe {
            Some(p) if p.ty.as_ref().is_some_and(Value::is_string) => {
                info.events += 1;
                if let Some(Value::String(ts)) = p.ts {
                    if info.first_ts.is_none() {
                        info.first_ts = Some(ts.clone());
                    }
                    info.last_ts = Some(ts);
                }
            }
            _ => info.skipped += 1,
        }
    }
    Ok(info)
}

// ---------------------------------------------------------------------------------------
// Sessions of one workspace
// ---------------------------------------------------------------------------------------

/// How [`Sessions::open`] and friends take a session's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Wait until the run holding the session ends.
    Wait,
    /// Wait at most this long, then fail with [`SessionError::Busy`].
    WaitTimeout(Duration),
    /// Fail at once with [`SessionError::Busy`] (CLI exit 8) if another run holds it.
    FailFast,
}

/// The sessions of one workspace: `workspaces/<id>/sessions/`.
#[derive(Debug, Clone)]
pub struct Sessions {
    workspace: String,
    /// The workspace directory, canonical when it could be resolved (subscription key).
    ws_dir: PathBuf,
    dir: PathBuf,
}

impl Workspace {
    /// This workspace's sessions (transcripts). See [`crate::sessions`].
    pub fn sessions(&self) -> Sessions {
        let dir = self.dir();
        let ws_dir = fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        Sessions {
            workspace: self.id().to_string(),
            dir: dir.join("sessions"),
            ws_dir,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    /// The session must exist.
    No,
    /// The session must not exist.
    New,
    /// Either.
    Maybe,
}

impl Sessions {
    /// `workspaces/<id>/sessions/`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Path of a session's transcript (the id is not checked).
    pub fn path(&self, sid: &str) -> PathBuf {
        self.dir.join(format!("{sid}.jsonl"))
    }

    /// Whether the session exists. Errors only on an invalid id.
    pub fn exists(&self, sid: &str) -> Result<bool> {
        validate_session_id(sid)?;
        Ok(self.path(sid).is_file())
    }

    /// Creates a new session and returns it locked for writing. Without `sid` a
    /// time-sortable id is generated ([`generate_session_id`]); with one that exists,
    /// [`SessionError::Exists`]. `mode` matters only in a race with another opener.
    pub fn create(&self, sid: Option<&str>, mode: LockMode) -> Result<SessionHandle> {
        match sid {
            Some(s) => {
                validate_session_id(s)?;
                self.open_with(s, mode, Create::New)
            }
            None => {
                for _ in 0..16 {
                    let s = generate_session_id();
                    match self.open_with(&s, mode, Create::New) {
                        Err(Error::Session(SessionError::Exists { .. })) => continue,
                        r => return r,
                    }
                }
                Err(Error::Invalid(
                    "could not generate a free session id (16 collisions)".into(),
                ))
            }
        }
    }

    /// Opens an existing session for writing, taking its lock per `mode`:
    /// [`SessionError::NoSuch`] if it does not exist, [`SessionError::Busy`] if another run
    /// holds it (fail-fast, or the timeout passed). Repairs a torn last line (see the module
    /// documentation) before returning.
    pub fn open(&self, sid: &str, mode: LockMode) -> Result<SessionHandle> {
        validate_session_id(sid)?;
        self.open_with(sid, mode, Create::No)
    }

    /// Opens a session for writing, creating it if it does not exist (the usual entry of a
    /// run: "continue session X, or start it").
    pub fn open_or_create(&self, sid: &str, mode: LockMode) -> Result<SessionHandle> {
        validate_session_id(sid)?;
        self.open_with(sid, mode, Create::Maybe)
    }

    /// Reads a session without locking it: every event, and how many damaged lines were
    /// skipped. Never fails on a damaged line; [`SessionError::NoSuch`] if it does not exist.
    pub fn read(&self, sid: &str) -> Result<Transcript> {
        validate_session_id(sid)?;
        let path = self.path(sid);
        read_file(&path, sid).map_err(|e| self.io_err(sid, &path, e))
    }

    /// Every session of the workspace, sorted by id (so generated ids sort by creation time):
    /// id, event count, first and last timestamp, size. Reads each transcript once without
    /// decoding event bodies.
    pub fn list(&self) -> Result<Vec<SessionInfo>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut sids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let sid = n.strip_suffix(".jsonl")?.to_string();
                validate_session_id(&sid).is_ok().then_some(sid)
            })
            .collect();
        sids.sort();
        let mut out = Vec::with_capacity(sids.len());
        for sid in sids {
            let path = self.path(&sid);
            match scan_file(&path, &sid) {
                Ok(i) => out.push(i),
                // Removed while we listed.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        Ok(out)
    }

    /// Deletes a session. Refused with [`SessionError::Busy`] while a run holds it (it never
    /// waits); [`SessionError::NoSuch`] if it does not exist. A run waiting for the lock
    /// when the session is removed gets [`SessionError::NoSuch`] from `open`.
    pub fn remove(&self, sid: &str) -> Result<()> {
        validate_session_id(sid)?;
        let path = self.path(sid);
        let f = open_rw(&path, false).map_err(|e| self.io_err(sid, &path, e))?;
        let locked = lock(f, sid, LockMode::FailFast).map_err(|e| self.lock_err(sid, &path, e))?;
        match same_file(&locked, &path) {
            Ok(true) => {}
            Ok(false) => return Err(self.busy_or_gone(sid, &path)),
            Err(e) => return Err(self.io_err(sid, &path, e)),
        }
        fs::remove_file(&path).map_err(|e| self.io_err(sid, &path, e))?;
        let _ = File::open(&self.dir).and_then(|d| d.sync_all());
        drop(locked);
        log::info!(target: "session", "removed session {sid} of workspace {}", self.workspace);
        Ok(())
    }

    /// Subscribes to events committed (in this process) to this workspace's sessions.
    pub fn subscribe(&self) -> Receiver<SessionEventNotice> {
        add_subscriber(Some(self.ws_dir.clone()))
    }

    /// Number of subscriptions to this workspace (not counting [`subscribe_all`] ones);
    /// dropped receivers count until the next delivery to this workspace.
    pub fn subscriber_count(&self) -> usize {
        subscribers()
            .iter()
            .filter(|s| s.filter.as_deref() == Some(self.ws_dir.as_path()))
            .count()
    }

    fn busy_or_gone(&self, sid: &str, path: &Path) -> Error {
        if path.exists() {
            SessionError::Busy(sid.into()).into()
        } else {
            self.no_such(sid)
        }
    }

    fn no_such(&self, sid: &str) -> Error {
        SessionError::NoSuch {
            workspace: self.workspace.clone(),
            sid: sid.into(),
        }
        .into()
    }

    fn io_err(&self, sid: &str, path: &Path, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::NotFound => self.no_such(sid),
            io::ErrorKind::AlreadyExists => SessionError::Exists {
                workspace: self.workspace.clone(),
                sid: sid.into(),
            }
            .into(),
            _ => Error::io(path, e),
        }
    }

    fn lock_err(&self, sid: &str, path: &Path, e: LockError) -> Error {
        match e {
            LockError::Busy => SessionError::Busy(sid.into()).into(),
            LockError::Io(e) => Error::io(path, e),
        }
    }

    fn open_with(&self, sid: &str, mode: LockMode, create: Create) -> Result<SessionHandle> {
        let path = self.path(sid);
        if create != Create::No && !self.dir.is_dir() {
            crate::state::mkdir(&self.dir, 0o700)?;
        }
        let deadline = match mode {
            LockMode::WaitTimeout(d) => Some(Instant::now() + d),
            _ => None,
        };
        // A loop for the rare race with `remove` (or remove + create) while we waited.
        for _ in 0..100 {
            let (file, created) = match create {
                Create::No => (open_rw(&path, false), false),
                Create::New => (open_rw(&path, true), true),
                Create::Maybe => match open_rw(&path, true) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        (open_rw(&path, false), false)
                    }
                    r => (r, true),
                },
            };
            let file = file.map_err(|e| self.io_err(sid, &path, e))?;
            if created {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io(&self.dir, e))?;
            }
            let mode = match deadline {
                Some(d) => LockMode::WaitTimeout(d.saturating_duration_since(Instant::now())),
                None => mode,
            };
            let locked = lock(file, sid, mode).map_err(|e| self.lock_err(sid, &path, e))?;
            match same_file(&locked, &path) {
                Ok(true) => {}
                // Removed (or replaced) while we waited for the lock.
                Ok(false) => match create {
                    Create::No if !path.exists() => return Err(self.no_such(sid)),
                    _ => continue,
                },
                Err(e) => return Err(Error::io(&path, e)),
            }
            let repaired = repair_tail(&locked).map_err(|e| Error::io(&path, e))?;
            if repaired > 0 {
                log::warn!(
                    target: "session",
                    "{}: truncated a torn last line of {repaired} bytes (interrupted write)",
                    path.display()
                );
            }
            let len = locked.metadata().map_err(|e| Error::io(&path, e))?.len();
            return Ok(SessionHandle {
                file: locked,
                sid: sid.to_string(),
                workspace: self.workspace.clone(),
                ws_dir: self.ws_dir.clone(),
                path,
                len,
                buf: Vec::new(),
                pending: Vec::new(),
                repaired,
            });
        }
        Err(SessionError::Busy(sid.into()).into())
    }
}

fn open_rw(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true)
        .append(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .mode(0o600);
    if create_new {
        o.create_new(true);
    }
    o.open(path)
}

/// Whether the open file is still the one at `path` (not removed or replaced).
fn same_file(f: &File, path: &Path) -> io::Result<bool> {
    let a = f.metadata()?;
    match fs::symlink_metadata(path) {
        Ok(b) => Ok(a.nlink() > 0 && a.dev() == b.dev() && a.ino() == b.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

enum LockError {
    Busy,
    Io(io::Error),
}

/// Takes the exclusive flock per `mode`. Timed waits poll (1 ms doubling to 25 ms): flock
/// has no timeout, and a blocked flock cannot be interrupted without a signal.
fn lock(f: File, sid: &str, mode: LockMode) -> std::result::Result<Flock<File>, LockError> {
    let (arg, deadline) = match mode {
        LockMode::Wait => (FlockArg::LockExclusive, None),
        LockMode::FailFast => (FlockArg::LockExclusiveNonblock, None),
        LockMode::WaitTimeout(d) => (FlockArg::LockExclusiveNonblock, Some(Instant::now() + d)),
    };
    let mut f = f;
    let mut pause = Duration::from_millis(1);
    let mut logged = false;
    loop {
        match Flock::lock(f, arg) {
            Ok(l) => return Ok(l),
            Err((back, Errno::EINTR)) => f = back,
            Err((back, Errno::EWOULDBLOCK)) => match deadline {
                Some(d) if Instant::now() < d => {
                    if !logged {
                        log::info!(target: "session", "session {sid} is in use; waiting");
                        logged = true;
                    }
                    std::thread::sleep(pause.min(d.saturating_duration_since(Instant::now())));
                    pause = (pause * 2).min(Duration::from_millis(25));
                    f = back;
                }
                _ => return Err(LockError::Busy),
            },
            Err((_, e)) => return Err(LockError::Io(e.into())),
        }
    }
}

/// Truncates bytes after the last newline (a torn write). Reads only the last byte when the
/// file is whole; otherwise scans back to the last newline. Returns how many bytes it cut.
fn repair_tail(f: &File) -> io::Result<u64> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    f.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        return Ok(0);
    }
    let mut end = len;
    let mut chunk = vec![0u8; 64 << 10];
    let keep = loop {
        if end == 0 {
            break 0;
        }
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        f.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&c| c == b'\n') {
            break start + i as u64 + 1;
        }
        end = start;
    };
    f.set_len(keep)?;
    f.sync_data()?;
    Ok(len - keep)
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// A session opened for writing, holding its exclusive lock until dropped.
///
/// Buffer a turn with [`push`](Self::push), write it with [`commit`](Self::commit) (one
/// `write` + `fdatasync`); or write one event at once with
/// [`append_now`](Self::append_now). Events still buffered when the handle is dropped are
/// discarded (a turn that did not finish is not recorded), with a warning in the log.
pub struct SessionHandle {
    file: Flock<File>,
    sid: String,
    workspace: String,
    ws_dir: PathBuf,
    path: PathBuf,
    /// File length: the handle holds the lock, so only it changes the file.
    len: u64,
    /// Serialized pending events, each with its newline.
    buf: Vec<u8>,
    pending: Vec<Event>,
    repaired: u64,
}

impl std::fmt::Debug for SessionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionHandle")
            .field("workspace", &self.workspace)
            .field("sid", &self.sid)
            .field("len", &self.len)
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl SessionHandle {
    /// Session id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// Workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Path of the transcript.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the transcript in bytes, as committed.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// Bytes of a torn last line cut off when this handle was opened (0 normally).
    pub fn repaired_bytes(&self) -> u64 {
        self.repaired
    }

    /// Number of buffered events.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Reads the transcript (under this handle's lock, so no commit is in flight).
    pub fn read(&self) -> Result<Transcript> {
        read_file(&self.path, &self.sid).map_err(|e| Error::io(&self.path, e))
    }

    /// Buffers an event for the next [`commit`](Self::commit), filling an empty `ts` with
    /// the current time. Refuses an event longer than [`MAX_LINE_BYTES`] serialized (the
    /// buffer is left as it was).
    pub fn push(&mut self, mut event: Event) -> Result<()> {
        event.stamp(&timestamp_now());
        let line = event.to_line()?;
        if line.len() > MAX_LINE_BYTES {
            return Err(Error::Invalid(format!(
                "session {}: a {} event of {} bytes exceeds the {} MiB line limit; \
                 truncate its content",
                self.sid,
                event.kind(),
                line.len(),
                MAX_LINE_BYTES >> 20
            )));
        }
        self.buf.reserve(line.len() + 1);
        self.buf.extend_from_slice(&line);
        self.buf.push(b'\n');
        self.pending.push(event);
        Ok(())
    }

    /// Writes the buffered events with one `write` on the `O_APPEND` descriptor and one
    /// `fdatasync`, then delivers them to subscribers. Returns how many were written. On
    /// error the file is truncated back to its length before the commit and the events stay
    /// buffered (commit again, or [`discard`](Self::discard) them).
    pub fn commit(&mut self) -> Result<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let before = self.len;
        let res = (&*self.file)
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = res {
            // Roll back a partial write so no torn line stays behind.
            if self
                .file
                .set_len(before)
                .and_then(|()| self.file.sync_data())
                .is_err()
            {
                log::warn!(target: "session", "{}: rollback after a failed write failed", self.path.display());
            }
            return Err(Error::io(&self.path, e));
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        let events = std::mem::take(&mut self.pending);
        let n = events.len();
        deliver(&self.ws_dir, &self.workspace, &self.sid, events);
        Ok(n)
    }

    /// Appends one event now: buffered events (if any) and this one in one write, then
    /// `fdatasync`.
    pub fn append_now(&mut self, event: Event) -> Result<()> {
        self.push(event)?;
        self.commit().map(|_| ())
    }

    /// Drops the buffered events; returns how many there were.
    pub fn discard(&mut self) -> usize {
        self.buf.clear();
        std::mem::take(&mut self.pending).len()
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            log::warn!(
                target: "session",
                "session {}: discarding {} uncommitted event(s)",
                self.sid,
                self.pending.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

/// `bulkhead session …`.
#[derive(Debug, Subcommand)]
pub enum SessionCmd {
    /// List a workspace's sessions: id, events, first and last timestamp, size.
    #[command(
        after_help = "Examples:\n  bulkhead session list acme\n  bulkhead --json session list acme"
    )]
    List {
        /// Workspace id.
        workspace: String,
    },
    /// Print a session's transcript (with --json: the events as JSONL, one per line).
    #[command(
        after_help = "Examples:\n  bulkhead session show acme 20261126T214501Z-1f3a9c07\n  bulkhead --json session show acme 20261126T214501Z-1f3a9c07 | jq -c 'select(.type == \"tool_call\")'"
    )]
    Show {
        /// Workspace id.
        workspace: String,
        /// Session id.
        sid: String,
    },
    /// Delete a session (refused while a run holds it: exit 8).
    #[command(
        visible_alias = "remove",
        after_help = "Example:\n  bulkhead session rm acme 20261126T214501Z-1f3a9c07"
    )]
    Rm {
        /// Workspace id.
        workspace: String,
        /// Session id.
        sid: String,
    },
}

/// Runs `bulkhead session …`; returns the exit code.
pub fn run(p: &Platform, cmd: SessionCmd, json: bool) -> Result<i32> {
    match cmd {
        SessionCmd::List { workspace } => {
            let all = p.workspace(&workspace)?.sessions().list()?;
            if json {
                println!("{}", serde_json::to_string(&all).unwrap_or_default());
            } else if all.is_empty() {
                eprintln!("no sessions in workspace {workspace}");
            } else {
                println!(
                    "{:<40} {:>7}  {:<24}  {:<24}  {:>9}",
                    "SESSION", "EVENTS", "FIRST", "LAST", "SIZE"
                );
                for s in &all {
                    println!(
                        "{:<40} {:>7}  {:<24}  {:<24}  {:>9}",
                        s.sid,
                        s.events,
                        s.first_ts.as_deref().unwrap_or("-"),
                        s.last_ts.as_deref().unwrap_or("-"),
                        human_size(s.size_bytes)
                    );
                }
            }
            let damaged: usize = all.iter().map(|s| s.skipped).sum();
            if damaged > 0 {
                eprintln!("note: {damaged} damaged line(s) skipped; `session show` names them");
            }
            Ok(exit::OK)
        }
        SessionCmd::Show { workspace, sid } => {
            validate_session_id(&sid)?;
            let t = p.workspace(&workspace)?.sessions().read(&sid)?;
            let mut out = io::stdout().lock();
            let res = if json {
                write_jsonl(&mut out, &t.events)
            } else {
                write_human(&mut out, &workspace, &t)
            };
            match res {
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                r => r.map_err(|e| Error::io("<stdout>", e))?,
            }
            if t.skipped > 0 {
                eprintln!(
                    "note: skipped {} damaged line(s){}",
                    t.skipped,
                    if t.torn_tail {
                        ", including a torn last line (an interrupted write; the next run repairs it)"
                    } else {
                        ""
                    }
                );
            }
            Ok(exit::OK)
        }
        SessionCmd::Rm { workspace, sid } => {
            validate_session_id(&sid)?;
            p.workspace(&workspace)?.sessions().remove(&sid)?;
            if json {
                println!("{}", json!({"removed": sid, "workspace": workspace}));
            } else {
                println!("removed session {sid} of workspace {workspace}");
            }
            Ok(exit::OK)
        }
    }
}

fn write_jsonl(out: &mut impl Write, events: &[Event]) -> io::Result<()> {
    for e in events {
        serde_json::to_writer(&mut *out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Longest tool output or argument text `show` prints (the rest is elided; --json has all).
const SHOW_TOOL_CHARS: usize = 2000;

fn elide(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!(
            "{}… ({} more bytes; --json shows all)",
            &s[..i],
            s.len() - i
        ),
        None => s.to_string(),
    }
}

fn write_human(out: &mut impl Write, workspace: &str, t: &Transcript) -> io::Result<()> {
    writeln!(
        out,
        "session {} (workspace {workspace}): {} events, {}",
        t.sid,
        t.events.len(),
        human_size(t.size_bytes)
    )?;
    for e in &t.events {
        let ts = safe(e.ts().unwrap_or("-"));
        let (label, body) = match e {
            Event::RunStart {
                run_id,
                model,
                provider,
                ..
            } => {
                let mut b = format!("── run {run_id} started");
                if let Some(m) = model {
                    b += &format!(" (model {m}");
                    if let Some(p) = provider {
                        b += &format!(" via {p}");
                    }
                    b.push(')');
                }
                ("run", b)
            }
            Event::UserMessage { text, .. } => ("user", text.clone()),
            Event::AssistantMessage { text, .. } => ("assistant", text.clone()),
            Event::ToolCall {
                call_id,
                name,
                arguments,
                ..
            } => (
                "tool call",
                format!(
                    "{name} [{call_id}] {}",
                    elide(&arguments.to_string(), SHOW_TOOL_CHARS)
                ),
            ),
            Event::ToolResult {
                call_id,
                output,
                is_error,
                ..
            } => (
                if *is_error {
                    "tool error"
                } else {
                    "tool result"
                },
                format!("[{call_id}] {}", elide(output, SHOW_TOOL_CHARS)),
            ),
            Event::Compaction {
                summary,
                replaced_events,
                ..
            } => (
                "compaction",
                format!("({replaced_events} events summarized) {summary}"),
            ),
            Event::Error { message, kind, .. } => ("error", format!("{kind}: {message}")),
            Event::RunEnd {
                run_id,
                usage,
                outcome,
                ..
            } => {
                let mut b = format!(
                    "── run {run_id} ended: {outcome}; tokens in {} out {}",
                    usage.input_tokens, usage.output_tokens
                );
                if let Some(c) = usage.cost_usd {
                    b += &format!(", ${c:.4}");
                }
                ("run", b)
            }
            Event::Unknown(v) => ("unknown", elide(&v.to_string(), SHOW_TOOL_CHARS)),
        };
        let body = safe(&body);
        let mut lines = body.split('\n');
        writeln!(out, "{ts}  {label:<11}  {}", lines.next().unwrap_or(""))?;
        for l in lines {
            writeln!(out, "{:width$}  {l}", "", width = ts.len() + 2 + 11)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_time_sortable() {
        let a = generate_session_id();
        let b = generate_session_id();
        assert_ne!(a, b);
        validate_session_id(&a).unwrap();
        assert_eq!(a.len(), "20261126T214501Z-1f3a9c07".len(), "{a}");
        assert_eq!(&a[8..9], "T");
        assert_eq!(&a[15..17], "Z-");
    }

    #[test]
    fn session_ids() {
        for ok in ["a", "A9", "x_y-z", &"a".repeat(64)] {
            validate_session_id(ok).unwrap();
        }
        for bad in [
            "",
            "-a",
            "_a",
            "a/b",
            "a.b",
            "..",
            "a b",
            &"a".repeat(65),
            "é",
        ] {
            assert!(validate_session_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_and_malformed_lines() {
        let e = Event::parse_line(br#"{"type":"future","ts":"t","x":[1]}"#).unwrap();
        assert!(matches!(&e, Event::Unknown(v) if v["x"][0] == 1));
        assert_eq!(e.kind(), "future");
        let back: Value = serde_json::from_slice(&e.to_line().unwrap()).unwrap();
        assert_eq!(back, json!({"type": "future", "ts": "t", "x": [1]}));
        for bad in [
            &b"[1]"[..],
            b"5",
            b"{}",
            b"{\"type\":3}",
            b"{\"type\":\"a\"",
            b"",
        ] {
            assert!(
                Event::parse_line(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = Event::parse_line(br#"{"type":"user_message","ts":"t","text":"hi"}"#).unwrap();
        assert_eq!(e, Event::user_message("hi").with_ts("t"));
    }

    #[test]
    fn line_reader_bounds_and_tears() {
        let mut data = b"a\n".to_vec();
        data.extend(vec![b'x'; MAX_LINE_BYTES + 1]);
        data.extend_from_slice(b"\nb\nc");
        let mut lr = LineReader {
            r: BufReader::with_capacity(4096, &data[..]),
            buf: Vec::new(),
        };
        assert!(matches!(lr.next().unwrap(), Some(RawLine::Line)));
        assert_eq!(lr.buf, b"a");
        assert!(matches!(lr.next().unwrap(), Some(RawLine::TooLong)));
        assert!(lr.buf.capacity() <= MAX_LINE_BYTES + 4096);
        assert!(matches!(lr.next().unwrap(), Some(RawLine::Line)));
        assert_eq!(lr.buf, b"b");
        assert!(matches!(lr.next().unwrap(), Some(RawLine::Torn)));
        assert!(lr.next().unwrap().is_none());
    }
}
