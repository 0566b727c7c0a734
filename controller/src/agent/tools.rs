//! Tools the model may call: the [`Tool`] trait, the [`ToolRegistry`], and the built-in
//! sandbox tools `bash`, `read`, `write`, `edit`, `ls`.
//!
//! The built-in tools run in the workspace's sandbox through the worker: one sandbox per run,
//! started at the first tool call and shut down when the run ends, so files, the current
//! state of `/tmp` and background processes persist from one call to the next within a run.
//! Memory, skill and subagent tools plug in as more implementations of [`Tool`]
//! registered in a [`ToolRegistry`] (`memory_*` tools declare [`ToolKind::Memory`], which
//! turns on the memory flush before compaction). A registry also carries prompt sections
//! (for example the enabled skills' descriptions) appended to the system prompt.
//!
//! Arguments are validated against the tool's schema before [`Tool::call`] runs (see
//! [`super::schema`]); a tool may rely on required fields being present and typed.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_shared::{
    Command as WireCommand, ExecRequest, ExitKind, FileKind, Reply, Request, ToolErrorKind,
};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::platform::Workspace;
pub(crate) use crate::tool::SandboxSlot;
pub use crate::tool::{PromptSection, Tool, ToolContext, ToolKind, ToolOutput, ToolRegistry};

impl ToolRegistry {
    /// The built-in tools: the sandbox's `bash`, `read`, `write`, `edit`, `ls`, and the
    /// workspace memory's `memory_search`, `memory_store` (with the platform's configured
    /// embedder, the built-in offline model by default; register
    /// [`crate::memory::tools::memory_tools`] on an [`ToolRegistry::empty`] registry to choose
    /// another).
    pub fn builtin() -> Self {
        let mut r = Self::empty();
        for t in builtin_tools()
            .into_iter()
            .chain(crate::memory::tools::memory_tools(
                crate::memory::tools::ToolEmbedder::Configured,
            ))
        {
            r.register(t)
                .expect("built-in tool names are valid and unique");
        }
        r
    }
}

// ---------------------------------------------------------------------------------------
// Built-in tools
// ---------------------------------------------------------------------------------------

/// Most bytes of command output collected from the worker (the loop then truncates to the
/// model's budget, keeping head and tail).
pub const BASH_OUTPUT_CAP: u64 = 512 * 1024;

/// Largest `write` content (one protocol frame carries it).
pub const MAX_WRITE_BYTES: usize = 896 * 1024;

/// Most bytes scanned by one `read` call.
pub const MAX_READ_SCAN_BYTES: u64 = 16 << 20;

/// Lines returned by `read` without a `limit`.
pub const DEFAULT_READ_LINES: u64 = 2000;

/// Largest `offset` and `limit` of `read`, in lines (a read scans at most
/// [`MAX_READ_SCAN_BYTES`], so no reachable line is numbered higher).
pub const MAX_READ_LINE_ARG: u64 = 1_000_000_000;

/// Longest path a tool takes, in bytes (Linux's `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest `bash` command, in bytes (Linux's limit on one argument of `execve`,
/// `MAX_ARG_STRLEN`, less the terminating NUL).
pub const MAX_COMMAND_BYTES: usize = 128 * 1024 - 1;

/// Largest `timeout_secs` of `bash` offered to the model (the default
/// [`super::Timeouts::tool_max`]; a smaller configured maximum is enforced by the tool).
pub const MAX_COMMAND_TIMEOUT_SECS: u64 = 600;

/// A model's value, shortened for an error message.
fn shown(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// A whole-number argument in `min..=max`: `Ok(None)` when absent or null, else the value,
/// or an error the model can read when it is not a whole number in range (a negative, a
/// fraction, `1e300`, a string, `u64::MAX` past `max`). Tools check their numbers with it
/// before any arithmetic, whether or not the schema was checked first.
pub(crate) fn int_arg(
    args: &Value,
    key: &str,
    min: u64,
    max: u64,
) -> std::result::Result<Option<u64>, String> {
    let v = match args.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= min as f64 && *f <= max as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    };
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "`{key}` must be a whole number between {min} and {max}, got {}",
            shown(v)
        )),
    }
}

/// A number of seconds in `(0, max]`: `Ok(None)` when absent or null, else the duration, or
/// an error the model can read (NaN-like strings, infinities, negatives, `1e300`).
pub(crate) fn secs_arg(
    args: &Value,
    key: &str,
    max: Duration,
) -> std::result::Result<Option<Duration>, String> {
    let v = match args.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(v) => v,
    };
    let max_s = max.as_secs_f64();
    match v.as_f64() {
        Some(f) if f.is_finite() && f > 0.0 && f <= max_s => Duration::try_from_secs_f64(f)
            .map(Some)
            .map_err(|e| format!("`{key}`: {e}")),
        _ => Err(format!(
            "`{key}` must be a number of seconds more than 0 and at most {max_s}, got {}",
            shown(v)
        )),
    }
}

/// A path argument: a string of 1 to [`MAX_PATH_BYTES`] bytes without NUL, or an error the
/// model can read. `default` stands in for an absent or empty one, when given.
pub(crate) fn path_arg(
    args: &Value,
    key: &str,
    default: Option<&str>,
) -> std::result::Result<String, String> {
    let p = match (args.get(key), default) {
        (Some(Value::String(p)), _) if !p.is_empty() => p.as_str(),
        (None | Some(Value::Null), Some(d)) | (Some(Value::String(_)), Some(d)) => d,
        (Some(Value::String(_)), None) => return Err(format!("`{key}` must not be empty")),
        (None | Some(Value::Null), None) => return Err(format!("`{key}` is required")),
        (Some(v), _) => return Err(format!("`{key}` must be a string, got {}", shown(v))),
    };
    if p.contains('\0') {
        return Err(format!("`{key}` must not contain NUL bytes"));
    }
    if p.len() > MAX_PATH_BYTES {
        return Err(format!(
            "`{key}` is {} bytes long; a path has at most {MAX_PATH_BYTES}",
            p.len()
        ));
    }
    Ok(p.to_string())
}

/// The built-in tools.
pub fn builtin_tools() -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(BashTool),
        Arc::new(ReadTool),
        Arc::new(WriteTool),
        Arc::new(EditTool),
        Arc::new(LsTool),
    ]
}

fn tool_error_text(e: &bulkhead_shared::ToolError) -> String {
    let kind = match e.kind {
        ToolErrorKind::NotFound => "not found",
        ToolErrorKind::PermissionDenied => "permission denied",
        ToolErrorKind::InvalidInput => "invalid input",
        ToolErrorKind::TooLarge => "too large",
        ToolErrorKind::NotUnique => "not unique",
        ToolErrorKind::RateLimited => "rate limited",
        ToolErrorKind::WrongType => "wrong type",
        ToolErrorKind::Io => "I/O error",
    };
    format!("{kind}: {}", e.message)
}

/// What every tool call of the agent loop passes before [`Tool::call`]: the tool found by
/// name, its arguments decoded (a JSON string holding an object, as some models send, is
/// decoded; `null` is `{}`) and checked against its schema. `Err` is the error result the
/// model sees (unknown tool, not an object, a schema violation); nothing here panics on any
/// value a model can send (the fuzz tests in `agent::fuzz` drive it).
pub(crate) fn resolve_call(
    tools: &ToolRegistry,
    name: &str,
    raw: &Value,
) -> std::result::Result<(Arc<dyn Tool>, Value), ToolOutput> {
    let Some(tool) = tools.get(name).cloned() else {
        let (shown, _) = super::context::truncate_middle(name, 100);
        return Err(ToolOutput::error(format!(
            "unknown tool `{shown}`; the tools are: {}",
            tools.names().join(", ")
        )));
    };
    let mut args = raw.clone();
    if let Value::String(s) = &args {
        // Arguments that did not parse as JSON arrive as a string; some models also
        // double-encode them.
        match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => args = v,
            _ => {
                let (shown, _) = super::context::truncate_middle(s, 300);
                return Err(ToolOutput::error(format!(
                    "invalid arguments for `{name}`: not a JSON object: {shown}"
                )));
            }
        }
    }
    if args.is_null() {
        args = Value::Object(Default::default());
    }
    let schema = tool.schema();
    if let Err(msg) = crate::util::schema::validate(&schema, &args) {
        return Err(ToolOutput::error(format!(
            "invalid arguments for `{name}`: {msg}. Call it again with arguments matching its schema: {schema}"
        )));
    }
    Ok((tool, args))
}

/// What the model is told about a platform failure of a tool call (`e`): paths under the
/// workspace's files as `/workspace/…`, any other host path (the state directory, the
/// workspace's own state) replaced, so a model never learns where the platform keeps its
/// files. The caller logs the full error for the operator.
pub(crate) fn model_error_text(e: &Error, ws: &Workspace) -> String {
    let files = ws.files_dir();
    let host_path = |p: &std::path::Path| match p.strip_prefix(&files) {
        Ok(rel) if rel.as_os_str().is_empty() => "/workspace".to_string(),
        Ok(rel) => format!("/workspace/{}", rel.display()),
        Err(_) => "a file of the platform (the operator's log has the path)".to_string(),
    };
    let text = match e {
        Error::Io { path, source } => format!("{}: {source}", host_path(path)),
        Error::Corrupt { path, detail } => format!("{}: {detail}", host_path(path)),
        other => other.to_string(),
    };
    // Messages built elsewhere may still carry a host path in their text.
    let mut out = text;
    for (host, shown) in [
        (files.display().to_string(), "/workspace".to_string()),
        (
            ws.dir().display().to_string(),
            "<workspace state>".to_string(),
        ),
        (ws.state_root().display().to_string(), "<state>".to_string()),
    ] {
        if host.len() > 1 && out.contains(&host) {
            out = out.replace(&host, &shown);
        }
    }
    out
}

/// Sends `req` to the sandbox: `Ok(Ok(reply))`, `Ok(Err(text))` for a tool error the model
/// should see, `Err` for a platform failure.
fn request(ctx: &mut ToolContext<'_>, req: Request) -> Result<std::result::Result<Reply, String>> {
    let sb = ctx.sandbox()?;
    match sb.request(req, &mut |_, _| {})? {
        Ok(r) => Ok(Ok(r)),
        Err(e) => Ok(Err(tool_error_text(&e))),
    }
}

fn str_arg<'v>(args: &'v Value, k: &str) -> &'v str {
    args.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `bash`: runs a shell command in `/workspace`.
#[derive(Debug, Clone, Copy)]
pub struct BashTool;

impl Tool for BashTool {
    fn name(&self) -> &str {
        "bash"
    }
    fn description(&self) -> &str {
        "Run a shell command (bash -c) in the workspace's Linux sandbox, working directory \
         /workspace. Returns stdout and stderr interleaved, then the exit status when it is not 0. \
         No network except loopback. Files outside /workspace and /tmp are read-only."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "command": {"type": "string", "minLength": 1, "maxLength": MAX_COMMAND_BYTES,
                    "description": "The command line."},
                "timeout_secs": {"type": "number", "exclusiveMinimum": 0,
                    "maximum": MAX_COMMAND_TIMEOUT_SECS,
                    "description": "Kill the command after this many seconds (default 120, at most 600)."}
            },
            "required": ["command"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Sandbox
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let command = str_arg(args, "command").to_string();
        if command.is_empty() {
            return Ok(ToolOutput::error("`command` must not be empty"));
        }
        if command.contains('\0') {
            return Ok(ToolOutput::error("`command` must not contain NUL bytes"));
        }
        if command.len() > MAX_COMMAND_BYTES {
            return Ok(ToolOutput::error(format!(
                "`command` is {} bytes long; a command has at most {MAX_COMMAND_BYTES} \
                 (write a longer script to a file with `write`, then run it)",
                command.len()
            )));
        }
        let requested = match secs_arg(args, "timeout_secs", ctx.max_timeout) {
            Ok(t) => t,
            Err(e) => return Ok(ToolOutput::error(e)),
        };
        let timeout = ctx.command_timeout(requested.map(|d| d.as_secs_f64()));
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut out: Vec<u8> = Vec::new();
        let use_bash = ctx.sandbox.has_bash != Some(false);
        let make = |cmd: WireCommand| ExecRequest {
            command: cmd,
            cwd: "/workspace".into(),
            env: Vec::new(),
            stdin: Vec::new(),
            timeout_ms,
            output_cap: BASH_OUTPUT_CAP,
            // Background processes may live until the run's sandbox stops.
            kill_stragglers: false,
        };
        let first = if use_bash {
            WireCommand::Argv(vec!["bash".into(), "-c".into(), command.clone()])
        } else {
            WireCommand::Shell(command.clone())
        };
        let sb = ctx.sandbox()?;
        let mut res = sb.exec(make(first), &mut |_, d| out.extend_from_slice(d));
        if use_bash {
            match &res {
                Err(Error::Tool(t)) if t.kind == ToolErrorKind::NotFound => {
                    // No bash in this image: /bin/sh from now on.
                    ctx.sandbox.has_bash = Some(false);
                    out.clear();
                    let sb = ctx.sandbox()?;
                    res = sb.exec(make(WireCommand::Shell(command)), &mut |_, d| {
                        out.extend_from_slice(d)
                    });
                }
                Ok(_) => ctx.sandbox.has_bash = Some(true),
                Err(_) => {}
            }
        }
        let outcome = match res {
            Ok(o) => o,
            Err(Error::Tool(t)) => return Ok(ToolOutput::error(tool_error_text(&t))),
            Err(e) => return Err(e),
        };
        let mut text = String::from_utf8_lossy(&out).into_owned();
        let r = &outcome.result;
        let status = if r.timed_out {
            Some(format!(
                "[timed out after {:.0}s; every process of the command was killed]",
                timeout.as_secs_f64()
            ))
        } else if r.cancelled {
            Some("[cancelled]".to_string())
        } else {
            match r.exit {
                ExitKind::Code(0) => None,
                ExitKind::Code(c) => Some(format!("[exit code {c}]")),
                ExitKind::Signal(s) if outcome.oom_killed => Some(format!(
                    "[killed by the sandbox's memory limit (signal {s})]"
                )),
                ExitKind::Signal(s) => Some(format!("[killed by signal {s}]")),
            }
        };
        let is_error = status.is_some();
        if let Some(s) = status {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&s);
        } else if text.is_empty() {
            text.push_str("(no output)");
        }
        Ok(ToolOutput {
            content: text,
            is_error,
        })
    }
}

/// `read`: lines of a text file.
#[derive(Debug, Clone, Copy)]
pub struct ReadTool;

impl Tool for ReadTool {
    fn name(&self) -> &str {
        "read"
    }
    fn description(&self) -> &str {
        "Read a text file of the workspace. `offset` is the first line (1-based, default 1), \
         `limit` the number of lines (default 2000). Relative paths are under /workspace."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES},
                "offset": {"type": "integer", "minimum": 1, "maximum": MAX_READ_LINE_ARG},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_READ_LINE_ARG}
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Sandbox
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let checked = path_arg(args, "path", None).and_then(|p| {
            let first = int_arg(args, "offset", 1, MAX_READ_LINE_ARG)?.unwrap_or(1);
            let limit = int_arg(args, "limit", 1, MAX_READ_LINE_ARG)?.unwrap_or(DEFAULT_READ_LINES);
            Ok((p, first, limit))
        });
        let (path, first, limit) = match checked {
            Ok(c) => c,
            Err(e) => return Ok(ToolOutput::error(e)),
        };
        // Both are at most MAX_READ_LINE_ARG: no overflow.
        let want_lines = (first - 1).saturating_add(limit);
        let mut data: Vec<u8> = Vec::new();
        let mut pos = 0u64;
        let (size, eof) = loop {
            let r = request(
                ctx,
                Request::Read {
                    path: path.clone(),
                    offset: pos,
                    limit: 512 * 1024,
                },
            )?;
            let rr = match r {
                Ok(Reply::Read(rr)) => rr,
                Ok(_) => return Err(Error::Protocol("wrong reply type for read".into())),
                Err(e) => return Ok(ToolOutput::error(e)),
            };
            pos = pos.saturating_add(rr.data.len() as u64);
            data.extend_from_slice(&rr.data);
            let lines = data.iter().filter(|&&b| b == b'\n').count() as u64;
            if rr.eof || rr.data.is_empty() || lines >= want_lines || pos >= MAX_READ_SCAN_BYTES {
                break (rr.size, rr.eof || rr.data.is_empty());
            }
        };
        if data.iter().take(8192).any(|&b| b == 0) {
            return Ok(ToolOutput::error(format!(
                "{path} looks binary ({size} bytes); inspect it with bash (e.g. `xxd {path} | head`)"
            )));
        }
        let text = String::from_utf8_lossy(&data);
        let all: Vec<&str> = text.split_inclusive('\n').collect();
        let start = usize::try_from(first - 1).unwrap_or(usize::MAX);
        if start >= all.len() && !(start == 0 && all.is_empty()) {
            return Ok(ToolOutput::error(format!(
                "{path} has {} lines; offset {first} is past the end",
                all.len()
            )));
        }
        let end = start
            .saturating_add(usize::try_from(limit).unwrap_or(usize::MAX))
            .min(all.len());
        let mut out: String = all[start..end].concat();
        let more = end < all.len() || !eof;
        if more {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "[showing lines {}-{} of {}{}; read on with offset={}]",
                first,
                end,
                if eof { "" } else { "at least " },
                all.len(),
                end.saturating_add(1)
            ));
        } else if out.is_empty() {
            out.push_str("(empty file)");
        }
        Ok(ToolOutput::ok(out))
    }
}

/// `write`: creates or replaces a file.
#[derive(Debug, Clone, Copy)]
pub struct WriteTool;

impl Tool for WriteTool {
    fn name(&self) -> &str {
        "write"
    }
    fn description(&self) -> &str {
        "Create or overwrite a file of the workspace with `content` (parent directories are \
         created). Relative paths are under /workspace."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES},
                "content": {"type": "string"}
            },
            "required": ["path", "content"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Sandbox
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let path = match path_arg(args, "path", None) {
            Ok(p) => p,
            Err(e) => return Ok(ToolOutput::error(e)),
        };
        let content = str_arg(args, "content");
        if content.len() > MAX_WRITE_BYTES {
            return Ok(ToolOutput::error(format!(
                "content is {} bytes, more than one write takes ({MAX_WRITE_BYTES}); write it in parts \
                 (e.g. write the first part, then append the rest with bash)",
                content.len()
            )));
        }
        match request(
            ctx,
            Request::Write {
                path: path.clone(),
                data: content.as_bytes().to_vec(),
                mode: 0o644,
                create_parents: true,
            },
        )? {
            Ok(Reply::Write { bytes }) => {
                Ok(ToolOutput::ok(format!("wrote {bytes} bytes to {path}")))
            }
            Ok(_) => Err(Error::Protocol("wrong reply type for write".into())),
            Err(e) => Ok(ToolOutput::error(e)),
        }
    }
}

/// `edit`: exact string replacement.
#[derive(Debug, Clone, Copy)]
pub struct EditTool;

impl Tool for EditTool {
    fn name(&self) -> &str {
        "edit"
    }
    fn description(&self) -> &str {
        "Replace the exact text `old` with `new` in a file. `old` must occur exactly once \
         unless `replace_all` is true."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": MAX_PATH_BYTES},
                "old": {"type": "string", "minLength": 1},
                "new": {"type": "string"},
                "replace_all": {"type": "boolean"}
            },
            "required": ["path", "old", "new"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Sandbox
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let path = match path_arg(args, "path", None) {
            Ok(p) => p,
            Err(e) => return Ok(ToolOutput::error(e)),
        };
        let (old, new) = (str_arg(args, "old"), str_arg(args, "new"));
        if old.is_empty() {
            return Ok(ToolOutput::error(
                "`old` must not be empty: give the exact text to replace (to create or \
                 overwrite a file, use `write`)",
            ));
        }
        if old.len().saturating_add(new.len()) > MAX_WRITE_BYTES {
            return Ok(ToolOutput::error(format!(
                "`old` and `new` are {} bytes together, more than one edit takes \
                 ({MAX_WRITE_BYTES}); edit in smaller parts",
                old.len().saturating_add(new.len())
            )));
        }
        match request(
            ctx,
            Request::Edit {
                path: path.clone(),
                old: old.to_string(),
                new: new.to_string(),
                replace_all: args
                    .get("replace_all")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            },
        )? {
            Ok(Reply::Edit { replacements }) => Ok(ToolOutput::ok(format!(
                "replaced {replacements} occurrence{} in {path}",
                if replacements == 1 { "" } else { "s" }
            ))),
            Ok(_) => Err(Error::Protocol("wrong reply type for edit".into())),
            Err(e) => Ok(ToolOutput::error(e)),
        }
    }
}

/// `ls`: a directory listing.
#[derive(Debug, Clone, Copy)]
pub struct LsTool;

impl Tool for LsTool {
    fn name(&self) -> &str {
        "ls"
    }
    fn description(&self) -> &str {
        "List a directory (default /workspace): one entry per line, directories end in `/`, \
         symlinks in `@`, files show their size."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"path": {"type": "string", "maxLength": MAX_PATH_BYTES}},
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Sandbox
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let path = match path_arg(args, "path", Some("/workspace")) {
            Ok(p) => p,
            Err(e) => return Ok(ToolOutput::error(e)),
        };
        match request(ctx, Request::Ls { path: path.clone() })? {
            Ok(Reply::Ls { entries, truncated }) => {
                let mut out = String::new();
                for e in &entries {
                    match e.stat.kind {
                        FileKind::Dir => out.push_str(&format!("{}/\n", e.name)),
                        FileKind::Symlink => out.push_str(&format!("{}@\n", e.name)),
                        FileKind::File => {
                            out.push_str(&format!("{}  {} bytes\n", e.name, e.stat.size))
                        }
                        FileKind::Other => out.push_str(&format!("{}  (special)\n", e.name)),
                    }
                }
                if truncated {
                    out.push_str("[more entries not shown]\n");
                }
                if out.is_empty() {
                    out.push_str("(empty directory)");
                }
                Ok(ToolOutput::ok(out.trim_end().to_string()))
            }
            Ok(_) => Err(Error::Protocol("wrong reply type for ls".into())),
            Err(e) => Ok(ToolOutput::error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_registry_has_valid_schemas() {
        let r = ToolRegistry::builtin();
        assert_eq!(
            r.names(),
            vec![
                "bash",
                "read",
                "write",
                "edit",
                "ls",
                "memory_search",
                "memory_store"
            ]
        );
        for s in r.specs() {
            assert_eq!(s.input_schema["type"], "object", "{}", s.name);
            assert!(!s.description.is_empty());
        }
        assert_eq!(
            r.only(ToolKind::Memory).names(),
            vec!["memory_search", "memory_store"]
        );
        assert_eq!(r.only(ToolKind::Sandbox).names().len(), 5);
    }

    #[test]
    fn registry_refuses_bad_and_duplicate_names() {
        let mut r = ToolRegistry::builtin();
        assert!(r.register(Arc::new(BashTool)).is_err());
        struct Bad;
        impl Tool for Bad {
            fn name(&self) -> &str {
                "no spaces allowed"
            }
            fn description(&self) -> &str {
                ""
            }
            fn schema(&self) -> Value {
                json!({"type": "object"})
            }
            fn call(&self, _: &Value, _: &mut ToolContext<'_>) -> Result<ToolOutput> {
                Ok(ToolOutput::ok(""))
            }
        }
        assert!(r.register(Arc::new(Bad)).is_err());
        r.add_prompt_section("Skills", "none yet");
        assert_eq!(r.prompt_sections().len(), 1);
    }
}
