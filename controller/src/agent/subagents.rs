//! Subagents: child agent runs in the same workspace, each in a new session of its own, run
//! in parallel by a parent run (the `spawn_subagents` tool) or by a host
//! ([`Workspace::run_subagents`]).
//!
//! ```no_run
//! use bulkhead::{Platform, PlatformConfig, RunRequest};
//! use bulkhead::agent::subagents::{SubTask, SubagentOptions};
//! let platform = Platform::open(PlatformConfig::default())?;
//! let ws = platform.workspace("acme")?;
//! let mut parent = RunRequest::new("");
//! parent.model = Some("anthropic/claude-sonnet-4-5".into());
//! let results = ws.run_subagents(
//!     &parent,
//!     vec![SubTask::new("Count the TODOs in src/").label("todos"),
//!          SubTask::new("List the open ports in the config").label("ports").role("security reviewer")],
//!     &SubagentOptions::default(),
//! )?;
//! for r in &results {
//!     println!("{}: {}", r.label, r.response.as_deref().unwrap_or_else(|| r.error.as_deref().unwrap_or("")));
//! }
//! # Ok::<(), bulkhead::Error>(())
//! ```
//!
//! - **Inheritance.** A child runs with a copy of the parent's request: model, fallbacks,
//!   base URL, credential key, environment, limits, timeouts, retries, context settings,
//!   hooks and tools (the parent's custom registry when it had one, else the default tools).
//!   Its message is the task; its `role` (if any) becomes an extra line of the system prompt.
//! - **Concurrency.** At most [`SubagentOptions::concurrency`] children run at once (threads;
//!   a run is blocking). Results come back in the order of the tasks.
//! - **Depth.** A top-level run has depth 0 ([`RunRequest::depth`]); its children 1, and so
//!   on. A run at depth `>=` [`SubagentOptions::max_depth`] does not get the
//!   `spawn_subagents` tool, and [`Workspace::run_subagents`] refuses to spawn from it.
//! - **Fan-out.** [`SubagentOptions::max_children`] caps the children of one top-level run,
//!   across every call and every level ([`RunRequest::subagent_budget`] carries the count to
//!   the children). A call asking for more than what is left is refused as a whole.
//! - **Timeouts and cancellation.** Each child's run deadline is the per-task timeout (and
//!   never later than the parent's deadline); its cancel token is cancelled with the
//!   parent's. When it passes, the child's model call is abandoned and its sandbox killed,
//!   exactly as for a run that times out.
//! - **Usage.** Every child's usage (also of a failed child) is in its [`SubResult`]; the
//!   `spawn_subagents` tool adds it to the parent run's usage.
//! - **Registry.** [`running_subagents`] lists the children running in this process;
//!   [`cancel_subagent`] cancels one.
//! - **Events.** The parent's event stream gets [`RunEvent::SubagentStart`] and
//!   [`RunEvent::SubagentEnd`] for each child (the children's own events are not forwarded;
//!   their transcripts are in their sessions).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::context::{add_usage, truncate_middle};
use super::events::{RunEvent, RunOutcome};
use super::failover::Cooldowns;
use super::tools::{Tool, ToolContext, ToolOutput, ToolRegistry};
use super::{ProviderFactory, RunRequest, DEFAULT_SYSTEM_PROMPT};
pub use crate::config::subagents::{
    SubagentOptions, DEFAULT_CONCURRENCY, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_DEPTH,
    DEFAULT_TASK_TIMEOUT,
};
use crate::error::{Error, Result};
use crate::platform::Workspace;
use crate::sessions::{generate_session_id, LockMode, Usage};
use crate::util::cancel::CancelToken;

/// The tool's name.
pub const SPAWN_TOOL: &str = "spawn_subagents";
/// Most characters of one child's answer in the tool's summary (head + tail kept).
pub const SUMMARY_ANSWER_CHARS: usize = 2000;
/// Longest task, label and role accepted (characters).
const MAX_TASK_CHARS: usize = 20_000;
const MAX_LABEL_CHARS: usize = 64;
const MAX_ROLE_CHARS: usize = 500;

/// Children started so far under one top-level run; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct ChildBudget(Arc<AtomicUsize>);

impl ChildBudget {
    /// A fresh count (zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Children started so far.
    pub fn used(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// Takes `n` children out of `max`, all or nothing; on refusal returns how many were
    /// already used.
    fn reserve(&self, n: usize, max: usize) -> std::result::Result<(), usize> {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(n).filter(|t| *t <= max)
            })
            .map(drop)
    }
}

/// One child's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubTask {
    /// The child's message.
    pub task: String,
    /// A short name for the results and events (default `task-<n>`, 1-based).
    pub label: Option<String>,
    /// An extra system-prompt line (`Your role: …`).
    pub role: Option<String>,
}

impl SubTask {
    /// A task without label or role.
    pub fn new(task: impl Into<String>) -> Self {
        SubTask {
            task: task.into(),
            label: None,
            role: None,
        }
    }

    /// With a label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// With a role.
    pub fn role(mut self, role: impl Into<String>) -> Self {
        self.role = Some(role.into());
        self
    }
}

/// What one child did.
#[derive(Debug, Clone, PartialEq)]
pub struct SubResult {
    /// Position of the task (0-based).
    pub index: usize,
    /// Its label.
    pub label: String,
    /// The child's session (it exists once the child started).
    pub session: String,
    /// How the child's run ended.
    pub outcome: RunOutcome,
    /// The answer, when the run completed (or hit its step limit).
    pub response: Option<String>,
    /// Why it failed, otherwise.
    pub error: Option<String>,
    /// Tokens the child used (also when it failed).
    pub usage: Usage,
    /// Wall time.
    pub duration: Duration,
}

impl SubResult {
    /// Whether the child answered.
    pub fn is_ok(&self) -> bool {
        self.response.is_some()
    }
}

/// The sum of the children's usage.
pub fn total_usage(results: &[SubResult]) -> Usage {
    let mut u = Usage::default();
    for r in results {
        add_usage(&mut u, &r.usage);
    }
    u
}

// ---------------------------------------------------------------------------------------
// Registry of running children
// ---------------------------------------------------------------------------------------

/// A child running now (see [`running_subagents`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Process-wide id (for [`cancel_subagent`]).
    pub id: u64,
    /// Workspace.
    pub workspace: String,
    /// The parent's run id (`None` when spawned through the library API).
    pub parent_run_id: Option<String>,
    /// The parent's session (`None` when spawned through the library API).
    pub parent_session: Option<String>,
    /// The child's session.
    pub session: String,
    /// Its label.
    pub label: String,
    /// Its depth (1 for a child of a top-level run).
    pub depth: usize,
    /// When it started.
    pub started: SystemTime,
}

struct Entry {
    info: ChildInfo,
    cancel: CancelToken,
}

fn registry() -> MutexGuard<'static, BTreeMap<u64, Entry>> {
    static REG: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
    REG.lock().unwrap_or_else(|e| e.into_inner())
}

/// The subagents running in this process, oldest first.
pub fn running_subagents() -> Vec<ChildInfo> {
    registry().values().map(|e| e.info.clone()).collect()
}

/// Cancels a running subagent by id; `false` if none has it (it already ended).
pub fn cancel_subagent(id: u64) -> bool {
    let token = registry().get(&id).map(|e| e.cancel.clone());
    match token {
        Some(t) => {
            t.cancel();
            true
        }
        None => false,
    }
}

/// Removes its entry when the child ends (however it ends).
struct Registered(u64);

impl Registered {
    fn new(info: ChildInfo, cancel: CancelToken) -> Self {
        let id = info.id;
        registry().insert(id, Entry { info, cancel });
        Registered(id)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        registry().remove(&self.0);
    }
}

// ---------------------------------------------------------------------------------------
// Running children
// ---------------------------------------------------------------------------------------

/// The parent of a batch: its request (the template of the children's) and how to reach
/// the models.
pub(crate) struct Parent<'a> {
    pub ws: &'a Workspace,
    pub req: &'a RunRequest,
    pub run_id: Option<&'a str>,
    pub session: Option<&'a str>,
    pub cancel: Option<&'a CancelToken>,
    pub deadline: Option<Instant>,
    pub budget: &'a ChildBudget,
    /// The parent's tools (`None`: the children build the default ones).
    pub tools: Option<&'a Arc<ToolRegistry>>,
    pub factory: &'a ProviderFactory<'a>,
    pub cooldowns: &'a Cooldowns,
    pub env: &'a (dyn Fn(&str) -> Option<String> + Sync + 'a),
}

fn clean_label(raw: Option<&str>, index: usize) -> String {
    let l: String = raw
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect();
    let l = l.trim();
    if l.is_empty() {
        format!("task-{}", index + 1)
    } else {
        l.to_string()
    }
}

/// Checks a batch before anything starts; the errors are what the model (or host) sees.
fn check(parent_depth: usize, tasks: &[SubTask], opts: &SubagentOptions) -> Result<()> {
    if parent_depth >= opts.max_depth {
        return Err(Error::Invalid(format!(
            "subagent depth limit reached: this run is at depth {parent_depth} and subagents may \
             go at most {} level(s) deep; do the task yourself",
            opts.max_depth
        )));
    }
    if tasks.is_empty() {
        return Err(Error::Invalid("no subagent tasks given".into()));
    }
    for (i, t) in tasks.iter().enumerate() {
        if t.task.trim().is_empty() {
            return Err(Error::Invalid(format!("subagent task {} is empty", i + 1)));
        }
        if t.task.chars().count() > MAX_TASK_CHARS {
            return Err(Error::Invalid(format!(
                "subagent task {} is longer than {MAX_TASK_CHARS} characters",
                i + 1
            )));
        }
        if t.role
            .as_deref()
            .is_some_and(|r| r.chars().count() > MAX_ROLE_CHARS)
        {
            return Err(Error::Invalid(format!(
                "the role of subagent task {} is longer than {MAX_ROLE_CHARS} characters",
                i + 1
            )));
        }
    }
    Ok(())
}

/// The child's request: the parent's settings, the task, a new session, one level deeper.
fn child_request(
    p: &Parent<'_>,
    opts: &SubagentOptions,
    t: &SubTask,
    label: &str,
    session: &str,
    cancel: CancelToken,
) -> RunRequest {
    let mut r = p.req.clone();
    r.message = t.task.clone();
    r.session = Some(session.to_string());
    r.lock = LockMode::FailFast;
    r.depth = p.req.depth + 1;
    r.subagents = opts.clone();
    r.subagent_budget = Some(p.budget.clone());
    r.cancel = Some(cancel);
    let mut sys = r
        .system_prompt
        .clone()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    sys.push_str(&format!(
        "\n\nYou are a subagent (\"{label}\") doing one part of a larger task for another agent: \
         do it and answer with the result, concisely."
    ));
    if let Some(role) = t.role.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        sys.push_str(&format!("\nYour role: {}", role.replace(['\n', '\r'], " ")));
    }
    r.system_prompt = Some(sys);
    let now = Instant::now();
    let parent_left = p.deadline.map(|d| d.saturating_duration_since(now));
    r.timeouts.run = [opts.task_timeout, parent_left].into_iter().flatten().min();
    // The parent's custom tools, without the spawner where the child may not spawn.
    if let Some(tools) = p.tools {
        let mut reg = (**tools).clone();
        if r.depth >= opts.max_depth {
            reg.remove(SPAWN_TOOL);
        }
        r.tools = Some(Arc::new(reg));
    }
    r
}

enum Msg {
    Start {
        index: usize,
        label: String,
        session: String,
    },
    End(Box<SubResult>),
}

/// Runs a batch (checked, budget taken) and gives the results in input order.
pub(crate) fn run_children(
    p: &Parent<'_>,
    tasks: Vec<SubTask>,
    opts: &SubagentOptions,
    on_event: &mut dyn FnMut(&RunEvent),
) -> Result<Vec<SubResult>> {
    check(p.req.depth, &tasks, opts)?;
    let n = tasks.len();
    if let Err(used) = p.budget.reserve(n, opts.max_children) {
        let left = opts.max_children.saturating_sub(used);
        return Err(Error::Invalid(format!(
            "too many subagents: {n} asked, but only {left} more may start in this run \
             (at most {} per top-level run, {used} already started); give fewer tasks or do \
             some of the work yourself",
            opts.max_children
        )));
    }
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let labels: Vec<String> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| clean_label(t.label.as_deref(), i))
        .collect();
    let next = AtomicUsize::new(0);
    let workers = opts.concurrency.max(1).min(n);
    let mut results: Vec<Option<SubResult>> = (0..n).map(|_| None).collect();
    let (tx, rx) = mpsc::channel::<Msg>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (tasks, labels, next) = (&tasks, &labels, &next);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= tasks.len() {
                    break;
                }
                let label = labels[i].clone();
                let session = format!("sub-{}", generate_session_id());
                let cancel = CancelToken::new();
                // Cancelling the parent cancels the child (the guard unhooks it after).
                let _link = p.cancel.map(|pc| {
                    let c = cancel.clone();
                    pc.on_cancel(move || c.cancel())
                });
                let req = child_request(p, opts, &tasks[i], &label, &session, cancel.clone());
                let _reg = Registered::new(
                    ChildInfo {
                        id: NEXT_ID.fetch_add(1, Ordering::SeqCst),
                        workspace: p.ws.id().to_string(),
                        parent_run_id: p.run_id.map(str::to_string),
                        parent_session: p.session.map(str::to_string),
                        session: session.clone(),
                        label: label.clone(),
                        depth: req.depth,
                        started: SystemTime::now(),
                    },
                    cancel,
                );
                let _ = tx.send(Msg::Start {
                    index: i,
                    label: label.clone(),
                    session: session.clone(),
                });
                let r = run_one(p, req, i, label, session);
                let _ = tx.send(Msg::End(Box::new(r)));
            });
        }
        drop(tx);
        for m in rx {
            match m {
                Msg::Start {
                    index,
                    label,
                    session,
                } => on_event(&RunEvent::SubagentStart {
                    index,
                    label,
                    session,
                    depth: p.req.depth + 1,
                }),
                Msg::End(r) => {
                    on_event(&RunEvent::SubagentEnd {
                        index: r.index,
                        label: r.label.clone(),
                        session: r.session.clone(),
                        ok: r.is_ok(),
                        outcome: r.outcome,
                        usage: r.usage.clone(),
                        error: r.error.clone(),
                        duration_ms: r.duration.as_millis() as u64,
                    });
                    let i = r.index;
                    results[i] = Some(*r);
                }
            }
        }
    });
    Ok(results
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            r.unwrap_or_else(|| SubResult {
                index: i,
                label: labels[i].clone(),
                session: String::new(),
                outcome: RunOutcome::Failed,
                response: None,
                error: Some("the subagent did not report (its thread panicked)".into()),
                usage: Usage::default(),
                duration: Duration::ZERO,
            })
        })
        .collect())
}

/// One child's run, on its worker thread.
fn run_one(
    p: &Parent<'_>,
    req: RunRequest,
    index: usize,
    label: String,
    session: String,
) -> SubResult {
    let started = Instant::now();
    let mut end: Option<(RunOutcome, Usage)> = None;
    let r = super::engine::Setup {
        ws: p.ws,
        req,
        cooldowns: p.cooldowns,
        factory: p.factory,
        env: p.env,
    }
    .run(&mut |e| {
        if let RunEvent::RunEnd { outcome, usage, .. } = e {
            end = Some((*outcome, usage.clone()));
        }
    });
    let (outcome, usage) = end.unwrap_or((RunOutcome::Failed, Usage::default()));
    let (response, error) = match r {
        Ok(res) => (Some(res.response), None),
        // The child redacted its own events; this message reaches the parent's model through
        // the tool result, which the parent's run redacts with the same workspace's secrets.
        Err(e) => (None, Some(crate::logging::redact_operator(&e.to_string()))),
    };
    SubResult {
        index,
        label,
        session,
        outcome,
        response,
        error,
        usage,
        duration: started.elapsed(),
    }
}

/// The tool's answer: each child's result in input order, answers capped.
pub fn summarize(results: &[SubResult], answer_chars: usize) -> String {
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let mut s = format!(
        "{} subagent(s) finished: {ok} ok, {} failed.",
        results.len(),
        results.len() - ok
    );
    for r in results {
        s.push_str(&format!(
            "\n\n## {}. {} (session {}, {} in / {} out tokens): ",
            r.index + 1,
            r.label,
            r.session,
            r.usage.input_tokens,
            r.usage.output_tokens
        ));
        match (&r.response, &r.error) {
            (Some(a), _) => {
                let (a, _) = truncate_middle(a.trim(), answer_chars);
                let tag = if r.outcome == RunOutcome::MaxSteps {
                    "stopped at its step limit"
                } else {
                    "ok"
                };
                s.push_str(&format!("{tag}\n{a}"));
            }
            (None, e) => {
                let (e, _) = truncate_middle(e.as_deref().unwrap_or("failed"), 500);
                s.push_str(&format!("{}: {e}", r.outcome.as_str()));
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// The tool
// ---------------------------------------------------------------------------------------

/// `spawn_subagents {tasks: [{task, label?, role?}]}`. The agent loop runs it itself (it
/// needs the run's models and event stream); called any other way it refuses.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnSubagentsTool;

impl Tool for SpawnSubagentsTool {
    fn name(&self) -> &str {
        SPAWN_TOOL
    }

    fn description(&self) -> &str {
        "Run helper agents in parallel, each on one self-contained task, in this same workspace \
         (they see and may change the files in /workspace). Each starts with no memory of this \
         conversation, so write every task in full. Returns each helper's answer in the order \
         of the tasks. Use it for independent pieces of a larger job."
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "tasks": {
                    "type": "array",
                    "minItems": 1,
                    "description": "The tasks, one helper each.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "task": {"type": "string", "description": "The full instructions for the helper."},
                            "label": {"type": "string", "description": "A short name for the result."},
                            "role": {"type": "string", "description": "Optional role, e.g. \"code reviewer\"."}
                        },
                        "required": ["task"]
                    }
                }
            },
            "required": ["tasks"]
        })
    }

    fn is_subagent_spawner(&self) -> bool {
        true
    }

    fn call(&self, _args: &Value, _ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        Ok(ToolOutput::error(
            "spawn_subagents can only run inside an agent run",
        ))
    }
}

/// Parses the tool's (schema-checked) arguments.
pub(crate) fn tasks_from_args(args: &Value) -> std::result::Result<Vec<SubTask>, String> {
    let Some(items) = args.get("tasks").and_then(Value::as_array) else {
        return Err("`tasks` must be an array of {task, label, role}".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let s = |k: &str| t.get(k).and_then(Value::as_str).map(str::to_string);
            Ok(SubTask {
                task: s("task").ok_or_else(|| format!("task {} has no `task` string", i + 1))?,
                label: s("label"),
                role: s("role"),
            })
        })
        .collect()
}

/// Runs the tool for a run (the agent loop calls it); usage of the children is returned to
/// be added to the run's.
pub(crate) fn run_tool(
    p: &Parent<'_>,
    args: &Value,
    on_event: &mut dyn FnMut(&RunEvent),
) -> (ToolOutput, Usage) {
    let tasks = match tasks_from_args(args) {
        Ok(t) => t,
        Err(e) => return (ToolOutput::error(e), Usage::default()),
    };
    match run_children(p, tasks, &p.req.subagents, on_event) {
        Ok(results) => {
            let usage = total_usage(&results);
            let text = summarize(&results, SUMMARY_ANSWER_CHARS);
            let out = if results.iter().any(SubResult::is_ok) {
                ToolOutput::ok(text)
            } else {
                ToolOutput::error(text)
            };
            (out, usage)
        }
        Err(e) => {
            log::warn!(target: "agent", workspace = p.ws.id(); "spawn_subagents failed: {e}");
            (
                ToolOutput::error(super::tools::model_error_text(&e, p.ws)),
                Usage::default(),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// The library API
// ---------------------------------------------------------------------------------------

impl Workspace {
    /// Runs `tasks` as child agents of a run described by `parent` (its settings are
    /// inherited, its [`RunRequest::depth`] is the parent's depth, its
    /// [`RunRequest::subagent_budget`] the count of children shared with other calls —
    /// `None`: this call alone). Refuses (before starting any) past the depth limit or the
    /// children cap; otherwise gives one [`SubResult`] per task, in order, failed children
    /// included. See [`crate::agent::subagents`].
    pub fn run_subagents(
        &self,
        parent: &RunRequest,
        tasks: Vec<SubTask>,
        opts: &SubagentOptions,
    ) -> Result<Vec<SubResult>> {
        self.run_subagents_with_events(parent, tasks, opts, &mut |_| {})
    }

    /// [`Workspace::run_subagents`], with the [`RunEvent::SubagentStart`] and
    /// [`RunEvent::SubagentEnd`] events given to `on_event` (on the calling thread).
    pub fn run_subagents_with_events(
        &self,
        parent: &RunRequest,
        tasks: Vec<SubTask>,
        opts: &SubagentOptions,
        on_event: &mut dyn FnMut(&RunEvent),
    ) -> Result<Vec<SubResult>> {
        let env_map = parent.env.clone();
        let env = move |k: &str| -> Option<String> {
            match &env_map {
                Some(m) => m.get(k).cloned(),
                None => std::env::var(k).ok(),
            }
        };
        let http = super::http_config(&parent.timeouts, &super::operator_llm_config(self)?);
        let env_for_factory = env.clone();
        let factory = move |m: &crate::llm::ModelRef, base: Option<&str>| {
            crate::llm::provider_for(m, base, &env_for_factory, http.clone())
        };
        let budget = parent.subagent_budget.clone().unwrap_or_default();
        let p = Parent {
            ws: self,
            req: parent,
            run_id: None,
            session: None,
            cancel: parent.cancel.as_ref(),
            deadline: parent
                .timeouts
                .run
                .and_then(|d| Instant::now().checked_add(d)),
            budget: &budget,
            tools: parent.tools.as_ref(),
            factory: &factory,
            cooldowns: Cooldowns::global(),
            env: &env,
        };
        run_children(&p, tasks, opts, on_event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_all_or_nothing_and_shared() {
        let b = ChildBudget::new();
        let c = b.clone();
        assert!(b.reserve(3, 4).is_ok());
        assert_eq!(c.reserve(2, 4), Err(3));
        assert_eq!(c.used(), 3);
        assert!(c.reserve(1, 4).is_ok());
        assert_eq!(b.reserve(1, 4), Err(4));
    }

    #[test]
    fn depth_and_empty_batches_are_refused() {
        let opts = SubagentOptions {
            max_depth: 1,
            ..Default::default()
        };
        let t = vec![SubTask::new("x")];
        let e = check(1, &t, &opts).unwrap_err().to_string();
        assert!(e.contains("depth limit"), "{e}");
        assert!(check(0, &t, &opts).is_ok());
        assert!(check(0, &[], &opts).is_err());
        assert!(check(0, &[SubTask::new("  ")], &opts).is_err());
    }

    #[test]
    fn labels_default_and_are_cleaned() {
        assert_eq!(clean_label(None, 0), "task-1");
        assert_eq!(clean_label(Some("  "), 2), "task-3");
        assert_eq!(clean_label(Some("a\nb"), 0), "ab");
        assert_eq!(
            clean_label(Some(&"x".repeat(100)), 0).len(),
            MAX_LABEL_CHARS
        );
    }

    #[test]
    fn tool_arguments_parse_and_validate() {
        let args = json!({"tasks": [{"task": "a", "label": "A"}, {"task": "b", "role": "r"}]});
        crate::util::schema::validate(&SpawnSubagentsTool.schema(), &args).unwrap();
        let t = tasks_from_args(&args).unwrap();
        assert_eq!(t[0], SubTask::new("a").label("A"));
        assert_eq!(t[1], SubTask::new("b").role("r"));
        assert!(crate::util::schema::validate(&SpawnSubagentsTool.schema(), &json!({})).is_err());
    }

    #[test]
    fn summary_keeps_order_and_caps_answers() {
        let r = |i: usize, resp: Option<&str>| SubResult {
            index: i,
            label: format!("l{i}"),
            session: format!("s{i}"),
            outcome: if resp.is_some() {
                RunOutcome::Completed
            } else {
                RunOutcome::TimedOut
            },
            response: resp.map(str::to_string),
            error: resp.is_none().then(|| "the run timed out".to_string()),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 1,
                cost_usd: None,
            },
            duration: Duration::ZERO,
        };
        let long = "y".repeat(5000);
        let s = summarize(&[r(0, Some(&long)), r(1, None)], 100);
        assert!(
            s.starts_with("2 subagent(s) finished: 1 ok, 1 failed."),
            "{s}"
        );
        let a = s.find("## 1. l0").unwrap();
        let b = s.find("## 2. l1").unwrap();
        assert!(a < b);
        assert!(s.len() < 1000, "{s}");
        assert!(s.contains("timed_out: the run timed out"), "{s}");
        assert_eq!(total_usage(&[r(0, None), r(1, None)]).input_tokens, 20);
    }

    #[test]
    fn registry_lists_and_forgets() {
        let info = ChildInfo {
            id: u64::MAX - 7,
            workspace: "w".into(),
            parent_run_id: None,
            parent_session: None,
            session: "s".into(),
            label: "l".into(),
            depth: 1,
            started: SystemTime::now(),
        };
        let cancel = CancelToken::new();
        {
            let _g = Registered::new(info.clone(), cancel.clone());
            assert!(running_subagents().contains(&info));
            assert!(cancel_subagent(info.id));
            assert!(cancel.is_cancelled());
        }
        assert!(!running_subagents().iter().any(|c| c.id == info.id));
        assert!(!cancel_subagent(info.id));
    }
}
