//! Lifecycle hooks of a run: callbacks that see what the agent does and may stop a tool
//! call or rewrite its arguments.
//!
//! # Events
//!
//! [`HookEventKind`]: `session_start` (the run opened its session), `before_agent_start`
//! (before the first model call), `before_tool_call` (the only event whose decision counts:
//! a [`HookDecision::Veto`] makes the tool result a refusal the model sees, `refused by
//! policy hook <name>: <reason>`; a [`HookDecision::Rewrite`] replaces the arguments),
//! `after_tool_call` (with the result, cut to [`RESULT_PREVIEW_CHARS`]), `after_agent_end`
//! (with the usage and the outcome), `session_end`, and `on_error` (a failed run: the error
//! kind and its message, scrubbed of secrets).
//!
//! # Attaching
//!
//! 1. **Rust callbacks**: [`Hooks::add`] on [`RunRequest::hooks`](super::RunRequest::hooks)
//!    (anything implementing [`Hook`], closures included). Lower priority numbers run
//!    first; ties run in registration order.
//! 2. **Executables** of the workspace config ([`HookSpec`], `bulkhead workspace hook`):
//!    host programs chosen by the operator. Each gets the event as JSON on stdin and may print
//!    `{"decision":"allow"}`, `{"decision":"veto","reason":"…"}` or
//!    `{"decision":"rewrite","arguments":{…}}` on stdout (nothing printed: allow). It runs
//!    with an empty environment (only `PATH=/usr/bin:/bin`), in `/`, in its own process
//!    group, killed at its timeout ([`DEFAULT_TIMEOUT_SECS`] unless set) or at the run's
//!    deadline (`run --timeout`), whichever comes first, stdout capped at
//!    [`MAX_OUTPUT_BYTES`]. The end-of-run events of a run that timed out (`on_error`,
//!    `after_agent_end`, `session_end`) get [`END_OF_RUN_GRACE`] past the deadline. A failure (non-zero exit, timeout, bad JSON, output too long) is
//!    reported as a `hook` event and a log line; on `before_tool_call` it **fails closed**
//!    (the call is refused), on other events the run goes on.
//! 3. Notifications to a host app: `bulkhead serve --stdio` registers an observe-only Rust
//!    hook on each `run` and forwards every [`HookEvent`] as a `hook.event` notification
//!    (see [`crate::rpc`]); the payload is the JSON an executable gets.
//!
//! Rust callbacks run before executables of the same priority.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::platform::hook_spec::{
    check_executable, HookEventKind, HookSpec, DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS,
};

/// The most a hook executable may print on stdout.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// How long past a run's deadline its end-of-run hook executables may still run.
pub const END_OF_RUN_GRACE: Duration = Duration::from_secs(5);
/// `after_tool_call` sees at most this many characters of the result (head + tail).
pub const RESULT_PREVIEW_CHARS: usize = 4000;

/// One event as a hook sees it. Serializes to `{"event": …, "workspace": …, "session": …,
/// "run_id": …, <data>}`, what an executable reads on stdin.
///
/// `data` by event: `session_start`: `new_session`; `before_agent_start`: `message`,
/// `model`; `before_tool_call`: `step`, `call_id`, `tool`, `arguments`; `after_tool_call`:
/// those and `result`, `is_error`, `truncated`; `after_agent_end`: `outcome`, `usage`,
/// `steps`, `tool_calls`; `session_end`: `outcome`; `on_error`: `kind`, `message`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookEvent {
    /// Which event.
    pub event: HookEventKind,
    /// Workspace id.
    pub workspace: String,
    /// Session id.
    pub session: String,
    /// Run id.
    pub run_id: String,
    /// The event's fields.
    #[serde(flatten)]
    pub data: Map<String, Value>,
}

impl HookEvent {
    /// The tool's name (`before_tool_call`, `after_tool_call`).
    pub fn tool(&self) -> Option<&str> {
        self.data.get("tool").and_then(Value::as_str)
    }

    /// The tool call's arguments (`before_tool_call`, `after_tool_call`).
    pub fn arguments(&self) -> Option<&Value> {
        self.data.get("arguments")
    }

    /// A field of `data`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.data.get(key)
    }
}

/// What a hook decides. Only `before_tool_call` acts on `Veto` and `Rewrite`; on other
/// events they are reported and otherwise ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum HookDecision {
    /// Go on.
    Allow,
    /// Refuse the tool call; the model gets the refusal as the result.
    Veto {
        /// Why (shown to the model).
        #[serde(default)]
        reason: String,
    },
    /// Run the tool call with these arguments instead (a JSON object).
    Rewrite {
        /// The new arguments.
        arguments: Value,
    },
}

/// A Rust callback.
pub trait Hook: Send + Sync {
    /// Called for every event the hook is registered for.
    fn on(&self, ev: &HookEvent) -> HookDecision;
}

impl<F> Hook for F
where
    F: Fn(&HookEvent) -> HookDecision + Send + Sync,
{
    fn on(&self, ev: &HookEvent) -> HookDecision {
        self(ev)
    }
}

#[derive(Clone)]
struct RustHook {
    name: String,
    priority: i32,
    events: Option<Vec<HookEventKind>>,
    hook: Arc<dyn Hook>,
}

/// Rust callbacks of a run, in priority order (lower first; ties in registration order).
/// The default has none.
#[derive(Clone, Default)]
pub struct Hooks {
    hooks: Vec<RustHook>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.hooks
                    .iter()
                    .map(|h| (h.name.as_str(), h.priority, &h.events)),
            )
            .finish()
    }
}

impl Hooks {
    /// No hooks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `hook` for every event.
    pub fn add(&mut self, name: impl Into<String>, priority: i32, hook: impl Hook + 'static) {
        self.hooks.push(RustHook {
            name: name.into(),
            priority,
            events: None,
            hook: Arc::new(hook),
        });
    }

    /// Adds `hook` for the given events only.
    pub fn add_for(
        &mut self,
        events: &[HookEventKind],
        name: impl Into<String>,
        priority: i32,
        hook: impl Hook + 'static,
    ) {
        self.hooks.push(RustHook {
            name: name.into(),
            priority,
            events: Some(events.to_vec()),
            hook: Arc::new(hook),
        });
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.hooks.len()
    }
}

/// How one hook answered one event (a `hook` run event).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HookReport {
    /// The hook's name (a Rust hook's name, or an executable's path).
    pub hook: String,
    /// The event.
    pub event: HookEventKind,
    /// `allow`, `veto`, `rewrite` or `failed`.
    pub decision: String,
    /// A veto's reason, or what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

enum Source {
    Rust(Arc<dyn Hook>),
    Exec(HookSpec),
}

struct Entry {
    name: String,
    priority: i32,
    events: Option<Vec<HookEventKind>>,
    source: Source,
}

/// The hooks of one run: the request's callbacks and the workspace's executables, ordered.
pub(crate) struct HookSet {
    entries: Vec<Entry>,
    /// Hook executables are killed at this instant (the run's deadline) if not before.
    deadline: Option<Instant>,
}

/// What the hooks decided about a tool call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Gate {
    /// Run it with these arguments (rewritten or not).
    Run(Value),
    /// Refuse it with this message for the model.
    Refuse(String),
}

impl HookSet {
    pub(crate) fn new(rust: &Hooks, specs: &[HookSpec]) -> Self {
        let mut entries: Vec<Entry> = rust
            .hooks
            .iter()
            .map(|h| Entry {
                name: h.name.clone(),
                priority: h.priority,
                events: h.events.clone(),
                source: Source::Rust(Arc::clone(&h.hook)),
            })
            .collect();
        entries.extend(specs.iter().map(|s| Entry {
            name: s.path.display().to_string(),
            priority: s.priority,
            events: Some(vec![s.event]),
            source: Source::Exec(s.clone()),
        }));
        // Stable: ties keep registration order.
        entries.sort_by_key(|e| e.priority);
        HookSet {
            entries,
            deadline: None,
        }
    }

    /// Kills hook executables still running at `deadline` (`None`: only their own timeouts).
    pub(crate) fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn for_event(&self, kind: HookEventKind) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |e| e.events.as_ref().map_or(true, |ev| ev.contains(&kind)))
    }

    /// Fires a notification event (decisions other than allow are reported and ignored).
    pub(crate) fn notify(&self, ev: &HookEvent, report: &mut dyn FnMut(HookReport)) {
        for e in self.for_event(ev.event) {
            let t0 = Instant::now();
            let r = call(e, ev, self.deadline);
            report(make_report(e, ev.event, &r, t0));
        }
    }

    /// Fires `before_tool_call`: a veto or a failing hook stops the call; a rewrite changes
    /// the arguments the later hooks and the tool see.
    pub(crate) fn gate(&self, ev: &HookEvent, report: &mut dyn FnMut(HookReport)) -> Gate {
        let mut ev = ev.clone();
        for e in self.for_event(ev.event) {
            let t0 = Instant::now();
            let r = call(e, &ev, self.deadline);
            let r = match r {
                Ok(HookDecision::Rewrite { arguments }) if !arguments.is_object() => Err(format!(
                    "rewrite arguments are not a JSON object: {}",
                    crate::agent::context::truncate_middle(&arguments.to_string(), 200).0
                )),
                other => other,
            };
            report(make_report(e, ev.event, &r, t0));
            match r {
                Ok(HookDecision::Allow) => {}
                Ok(HookDecision::Veto { reason }) => {
                    let reason = if reason.trim().is_empty() {
                        "no reason given".to_string()
                    } else {
                        reason
                    };
                    return Gate::Refuse(format!("refused by policy hook {}: {reason}", e.name));
                }
                Ok(HookDecision::Rewrite { arguments }) => {
                    ev.data.insert("arguments".into(), arguments);
                }
                Err(msg) => {
                    return Gate::Refuse(format!(
                    "refused by policy hook {}: the hook failed ({msg}), so the call is refused",
                    e.name
                ))
                }
            }
        }
        Gate::Run(ev.data.get("arguments").cloned().unwrap_or(Value::Null))
    }
}

fn make_report(
    e: &Entry,
    event: HookEventKind,
    r: &std::result::Result<HookDecision, String>,
    t0: Instant,
) -> HookReport {
    let (decision, reason) = match r {
        Ok(HookDecision::Allow) => ("allow", None),
        Ok(HookDecision::Veto { reason }) => ("veto", Some(reason.clone())),
        Ok(HookDecision::Rewrite { .. }) => ("rewrite", None),
        Err(m) => ("failed", Some(m.clone())),
    };
    if decision == "failed" {
        log::warn!(target: "hooks", hook = e.name.as_str(), event = event.as_str(); "hook failed: {}", reason.as_deref().unwrap_or(""));
    }
    HookReport {
        hook: e.name.clone(),
        event,
        decision: decision.into(),
        // The run redacts its workspace's secrets from the event this becomes.
        reason: reason.map(|r| crate::logging::redact_operator(&r)),
        duration_ms: t0.elapsed().as_millis() as u64,
    }
}

fn call(
    e: &Entry,
    ev: &HookEvent,
    deadline: Option<Instant>,
) -> std::result::Result<HookDecision, String> {
    match &e.source {
        Source::Rust(h) => {
            let h = Arc::clone(h);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.on(ev)))
                .map_err(|_| "the hook panicked".to_string())
        }
        Source::Exec(spec) => run_exec_until(spec, ev, deadline),
    }
}

/// How long after a hook exits (or is killed) the threads feeding and draining its pipes
/// may take to finish.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// The thread's result if it finishes by `until`; else `None`, and it is left to end on its
/// own (when the last holder of the pipe goes).
fn join_by<T>(h: std::thread::JoinHandle<T>, until: Instant) -> Option<T> {
    while !h.is_finished() {
        if Instant::now() >= until {
            log::warn!(target: "hooks", "a hook's pipe is still held open by a process it started; not waiting for it");
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    h.join().ok()
}

/// Runs a hook executable on `ev`.
#[cfg(test)]
pub(crate) fn run_exec(
    spec: &HookSpec,
    ev: &HookEvent,
) -> std::result::Result<HookDecision, String> {
    run_exec_until(spec, ev, None)
}

/// Runs a hook executable on `ev`, killing it at its timeout or at `deadline` (the run's),
/// whichever comes first.
pub(crate) fn run_exec_until(
    spec: &HookSpec,
    ev: &HookEvent,
    deadline: Option<Instant>,
) -> std::result::Result<HookDecision, String> {
    use std::os::unix::process::CommandExt;
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return Err("not started: the run's time limit was reached".into());
    }
    check_executable(&spec.path).map_err(|e| e.to_string())?;
    let payload = serde_json::to_vec(ev).map_err(|e| format!("payload: {e}"))?;
    let mut cmd = Command::new(&spec.path);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // ETXTBSY: a hook file just written may still be open for writing in a child another
    // thread of this process forked before the writer closed it (until that child execs);
    // it clears within moments, so a few short retries, bounded.
    let mut tries = 0;
    let mut child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) && tries < 10 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            r => break r.map_err(|e| format!("could not start: {e}"))?,
        }
    };
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A hook that does not read its stdin is fine.
            let _ = s.write_all(&payload);
        }
    });
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(MAX_OUTPUT_BYTES as u64 + 1).read_to_end(&mut buf);
            // Drain the rest so the hook never blocks on a full pipe.
            let _ = std::io::copy(s, &mut std::io::sink());
        }
        buf
    });
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(4096).read_to_end(&mut buf);
            let _ = std::io::copy(s, &mut std::io::sink());
        }
        buf
    });
    let own = Instant::now() + spec.timeout();
    let (deadline, by_run) = match deadline {
        Some(d) if d < own => (d, true),
        _ => (own, false),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    // Kill the whole group: on a timeout, and any child the hook left behind.
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    // A process that left the group (setsid) may still hold the pipes: the threads feeding
    // and draining them get a short grace, then are left behind rather than waited for.
    let grace = Instant::now() + PIPE_GRACE;
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.wait();
            let _ = join_by(writer, grace);
            let _ = join_by(reader, grace);
            let _ = join_by(err_reader, grace);
            return Err(if by_run {
                "stopped at the run's time limit".to_string()
            } else {
                format!("timed out after {}s", spec.timeout().as_secs_f64())
            });
        }
    };
    let _ = join_by(writer, grace);
    let (Some(out), Some(err)) = (join_by(reader, grace), join_by(err_reader, grace)) else {
        return Err(
            "a process the hook started outside its process group kept its output open".into(),
        );
    };
    if !err.is_empty() {
        log::info!(target: "hooks", hook = spec.path.display().to_string().as_str(); "stderr: {}", crate::logging::redact(String::from_utf8_lossy(&err).trim()));
    }
    if !status.success() {
        let first = String::from_utf8_lossy(&err)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        return Err(format!(
            "{status}{}",
            if first.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    crate::agent::context::truncate_middle(&first, 200).0
                )
            }
        ));
    }
    if out.len() > MAX_OUTPUT_BYTES {
        return Err(format!("output longer than {MAX_OUTPUT_BYTES} bytes"));
    }
    let text = String::from_utf8_lossy(&out);
    if text.trim().is_empty() {
        return Ok(HookDecision::Allow);
    }
    serde_json::from_str::<HookDecision>(text.trim()).map_err(|e| {
        format!(
            "bad decision JSON ({e}): {}",
            crate::agent::context::truncate_middle(text.trim(), 200).0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    fn ev(kind: HookEventKind, data: Value) -> HookEvent {
        HookEvent {
            event: kind,
            workspace: "ws".into(),
            session: "s".into(),
            run_id: "run-1".into(),
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn spec(path: PathBuf, event: HookEventKind) -> HookSpec {
        HookSpec {
            event,
            path,
            timeout_secs: None,
            priority: 0,
        }
    }

    #[test]
    fn kinds_parse_and_serialize() {
        for k in HookEventKind::ALL {
            assert_eq!(k.as_str().parse::<HookEventKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
        let e = "before_tool".parse::<HookEventKind>().unwrap_err();
        assert!(e.to_string().contains("before_tool_call"), "{e}");
    }

    #[test]
    fn payload_shape() {
        let e = ev(
            HookEventKind::BeforeToolCall,
            json!({"tool": "bash", "arguments": {"command": "ls"}}),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event"], "before_tool_call");
        assert_eq!(v["workspace"], "ws");
        assert_eq!(v["session"], "s");
        assert_eq!(v["tool"], "bash");
        assert_eq!(v["arguments"]["command"], "ls");
        assert_eq!(e.tool(), Some("bash"));
    }

    #[test]
    fn decisions_parse() {
        let d: HookDecision = serde_json::from_str(r#"{"decision":"allow"}"#).unwrap();
        assert_eq!(d, HookDecision::Allow);
        let d: HookDecision = serde_json::from_str(r#"{"decision":"veto","reason":"no"}"#).unwrap();
        assert_eq!(
            d,
            HookDecision::Veto {
                reason: "no".into()
            }
        );
        let d: HookDecision =
            serde_json::from_str(r#"{"decision":"rewrite","arguments":{"a":1}}"#).unwrap();
        assert_eq!(
            d,
            HookDecision::Rewrite {
                arguments: json!({"a": 1})
            }
        );
        assert!(serde_json::from_str::<HookDecision>(r#"{"decision":"maybe"}"#).is_err());
    }

    #[test]
    fn rust_hooks_run_in_priority_order_ties_in_registration_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut hooks = Hooks::new();
        for (name, prio) in [("c", 10), ("a", -5), ("b1", 0), ("b2", 0), ("d", 100)] {
            let seen = Arc::clone(&seen);
            hooks.add(name, prio, move |_: &HookEvent| {
                seen.lock().unwrap().push(name);
                HookDecision::Allow
            });
        }
        let set = HookSet::new(&hooks, &[]);
        let mut reports = Vec::new();
        set.notify(&ev(HookEventKind::SessionStart, json!({})), &mut |r| {
            reports.push(r)
        });
        assert_eq!(*seen.lock().unwrap(), vec!["a", "b1", "b2", "c", "d"]);
        assert_eq!(reports.len(), 5);
        assert!(reports.iter().all(|r| r.decision == "allow"));
    }

    #[test]
    fn veto_stops_later_hooks_and_rewrite_feeds_the_next() {
        let mut hooks = Hooks::new();
        hooks.add("rewriter", 0, |e: &HookEvent| {
            if e.tool() == Some("bash") {
                HookDecision::Rewrite {
                    arguments: json!({"command": "echo safe"}),
                }
            } else {
                HookDecision::Allow
            }
        });
        hooks.add("checker", 1, |e: &HookEvent| {
            if e.arguments().and_then(|a| a.get("command")) == Some(&json!("echo safe")) {
                HookDecision::Allow
            } else {
                HookDecision::Veto {
                    reason: "unsafe".into(),
                }
            }
        });
        let set = HookSet::new(&hooks, &[]);
        let g = set.gate(
            &ev(
                HookEventKind::BeforeToolCall,
                json!({"tool": "bash", "arguments": {"command": "rm -rf /"}}),
            ),
            &mut |_| {},
        );
        assert_eq!(g, Gate::Run(json!({"command": "echo safe"})));
        let g = set.gate(
            &ev(
                HookEventKind::BeforeToolCall,
                json!({"tool": "read", "arguments": {"path": "x"}}),
            ),
            &mut |_| {},
        );
        assert_eq!(
            g,
            Gate::Refuse("refused by policy hook checker: unsafe".into())
        );
    }

    #[test]
    fn events_filter_and_panics_fail_closed() {
        let mut hooks = Hooks::new();
        hooks.add_for(
            &[HookEventKind::AfterToolCall],
            "only-after",
            0,
            |_: &HookEvent| -> HookDecision { panic!("boom") },
        );
        let set = HookSet::new(&hooks, &[]);
        let mut n = 0;
        let g = set.gate(
            &ev(HookEventKind::BeforeToolCall, json!({"arguments": {}})),
            &mut |_| n += 1,
        );
        assert_eq!((g, n), (Gate::Run(json!({})), 0));
        let mut hooks = Hooks::new();
        hooks.add("panics", 0, |_: &HookEvent| -> HookDecision {
            panic!("boom")
        });
        let set = HookSet::new(&hooks, &[]);
        let mut reports = Vec::new();
        let g = set.gate(
            &ev(HookEventKind::BeforeToolCall, json!({"arguments": {}})),
            &mut |r| reports.push(r),
        );
        assert!(matches!(g, Gate::Refuse(m) if m.contains("panicked")));
        assert_eq!(reports[0].decision, "failed");
    }

    #[test]
    fn executables_stop_at_the_run_deadline_and_never_wait_on_escaped_processes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = ev(HookEventKind::BeforeToolCall, json!({"tool": "bash"}));
        // Its own timeout is 60 s; the run's deadline comes first.
        let slow = script(d, "slow.sh", "sleep 30");
        let mut s = spec(slow, HookEventKind::BeforeToolCall);
        s.timeout_secs = Some(60);
        let t0 = Instant::now();
        let r = run_exec_until(&s, &e, Some(t0 + Duration::from_millis(800))).unwrap_err();
        assert_eq!(r, "stopped at the run's time limit");
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(800) && took < Duration::from_secs(3),
            "{took:?}"
        );
        // Past the deadline it does not start.
        let r = run_exec_until(&s, &e, Some(Instant::now())).unwrap_err();
        assert!(r.contains("not started"), "{r}");
        // A process that left the hook's group keeps its stdout open: not waited for.
        let escaped = script(
            d,
            "escaped.sh",
            "setsid sleep 5 &\nsleep 0.3\necho '{\"decision\":\"allow\"}'",
        );
        let mut s = spec(escaped, HookEventKind::BeforeToolCall);
        s.timeout_secs = Some(60);
        let t0 = Instant::now();
        let r = run_exec_until(&s, &e, None).unwrap_err();
        assert!(r.contains("kept its output open"), "{r}");
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }

    #[test]
    fn executables_decide_and_fail_closed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let e = ev(
            HookEventKind::BeforeToolCall,
            json!({"tool": "bash", "arguments": {"command": "touch x"}}),
        );
        // The payload arrives on stdin; the environment is clean.
        let veto = script(
            d,
            "veto.sh",
            r#"in=$(cat); case "$in" in *'"tool":"bash"'*) echo '{"decision":"veto","reason":"no bash; HOME='"$HOME"'"}';; *) echo '{"decision":"allow"}';; esac"#,
        );
        assert_eq!(
            run_exec(&spec(veto, HookEventKind::BeforeToolCall), &e),
            Ok(HookDecision::Veto {
                reason: "no bash; HOME=".into()
            })
        );
        let silent = script(d, "silent.sh", "cat >/dev/null");
        assert_eq!(
            run_exec(&spec(silent, HookEventKind::BeforeToolCall), &e),
            Ok(HookDecision::Allow)
        );
        let crash = script(d, "crash.sh", "echo oops >&2; exit 3");
        let r = run_exec(&spec(crash, HookEventKind::BeforeToolCall), &e).unwrap_err();
        assert!(r.contains("exit status: 3") && r.contains("oops"), "{r}");
        let bad = script(d, "bad.sh", "echo not-json");
        let r = run_exec(&spec(bad.clone(), HookEventKind::BeforeToolCall), &e).unwrap_err();
        assert!(r.contains("bad decision JSON"), "{r}");
        let slow = script(d, "slow.sh", "sleep 30");
        let mut s = spec(slow, HookEventKind::BeforeToolCall);
        s.timeout_secs = Some(1);
        let t0 = Instant::now();
        let r = run_exec(&s, &e).unwrap_err();
        assert!(r.contains("timed out"), "{r}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        // Through the set: a failing executable is a refusal.
        let set = HookSet::new(&Hooks::new(), &[spec(bad, HookEventKind::BeforeToolCall)]);
        let mut reports = Vec::new();
        let g = set.gate(&e, &mut |r| reports.push(r));
        assert!(
            matches!(&g, Gate::Refuse(m) if m.contains("the hook failed")),
            "{g:?}"
        );
        assert_eq!(reports[0].decision, "failed");
    }

    #[test]
    fn spec_validation() {
        let dir = tempfile::tempdir().unwrap();
        let ok = script(dir.path(), "ok.sh", "true");
        spec(ok.clone(), HookEventKind::OnError).validate().unwrap();
        let e = spec("rel/x.sh".into(), HookEventKind::OnError)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("not absolute"), "{e}");
        let e = spec(dir.path().into(), HookEventKind::OnError)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let e = spec(plain, HookEventKind::OnError).validate().unwrap_err();
        assert!(e.to_string().contains("not executable"), "{e}");
        let mut s = spec(ok, HookEventKind::OnError);
        s.timeout_secs = Some(0);
        assert!(s.validate().is_err());
        // Old files without the optional fields load.
        let s: HookSpec =
            serde_json::from_str(r#"{"event":"session_end","path":"/bin/true"}"#).unwrap();
        assert_eq!((s.priority, s.timeout()), (0, Duration::from_secs(5)));
    }
}
