//! The agent loop: [`Workspace::run`] takes a message, calls the model with the workspace's
//! tools until it gives a final answer, and records the turn in the session's transcript.
//!
//! ```no_run
//! use bulkhead::{Platform, PlatformConfig};
//! use bulkhead::agent::{RunRequest, RunEvent};
//! let platform = Platform::open(PlatformConfig::default())?;
//! let ws = platform.workspace("acme")?;
//! let mut req = RunRequest::new("Write hello.txt with bash, then read it back.");
//! req.model = Some("anthropic/claude-sonnet-4-5".into());
//! req.fallbacks = Some(vec!["openai/gpt-4o".into()]);
//! req.session = Some("support-42".into());
//! let result = ws.run_with_events(req, &mut |e: &RunEvent| eprintln!("{}", e.to_json_line()))?;
//! println!("{} ({} in / {} out tokens)", result.response, result.usage.input_tokens, result.usage.output_tokens);
//! # Ok::<(), bulkhead::Error>(())
//! ```
//!
//! # A run
//!
//! 1. **Models.** The request's model (else the workspace's) and fallbacks (else the
//!    workspace's), each `provider/model`. The base URL (request, else workspace) applies to
//!    the primary's provider and to fallbacks of the same provider; other providers use
//!    their environment variables (`OPENAI_BASE_URL`, …) or defaults (see
//!    [`crate::llm::models`]). **Context-window guard**: a model whose window is below
//!    [`ContextConfig::min_tokens`] (16,000) is refused (a fallback is dropped with a warning),
//!    below [`ContextConfig::warn_below_tokens`] (32,000) it is used with a warning.
//!    **Network**: every model call goes through the SSRF guard ([`crate::llm::http`]) with
//!    the operator's `[llm]` settings, read from the state directory's `config.toml` when the
//!    run starts: a base URL on loopback or a private range is refused unless
//!    `allow_loopback` / `allow_private` allow it, a metadata address always, before any
//!    connection. A refused model fails with [`FailoverReason::Blocked`](crate::llm::FailoverReason::Blocked)
//!    (not retried, no key rotation, no cooldown) and the next model of the chain is tried.
//! 2. **Keys**, per provider: the workspace's credential store when
//!    [`RunRequest::credential_key`] is given (the CLI gives it when `--credential-key-file`
//!    or `$BULKHEAD_CREDENTIAL_KEY` is set, and skips the store silently otherwise), then the
//!    environment ([`crate::llm::keys`]). Keys stay in the controller: the sandbox's
//!    environment is an allowlist. The run's [`crate::logging::Redactor`] holds the
//!    workspace's decrypted credentials (and redacts the operator's keys and passphrase too):
//!    tool output, model replies, events, hook payloads and errors pass through it before the
//!    model, the transcript or an event sees them. No other workspace's secret is in it.
//! 3. **Session.** The transcript `sessions/<sid>.jsonl` is opened with
//!    [`RunRequest::lock`] — by default [`LockMode::FailFast`]: a second run of a busy session
//!    fails at once with [`SessionError::Busy`](crate::sessions::SessionError::Busy) (CLI exit 8) instead of queueing silently;
//!    set [`LockMode::Wait`] to serialize. Earlier turns become the context
//!    ([`context`] explains how, compactions included).
//! 4. **System prompt**: the caller's (or [`DEFAULT_SYSTEM_PROMPT`]), a note on the sandbox
//!    and the tools, the operator's `workspaces/<id>/instructions.md` (outside the sandbox's
//!    reach), the tenant's `/workspace/AGENTS.md` (read without following symlinks), and the
//!    tool registry's prompt sections (where enabled skills will list their descriptions).
//! 5. **Steps**, up to [`RunRequest::max_steps`]: fit the context (old tool results pruned,
//!    then a compaction past the threshold), call the model with failover ([`failover`]),
//!    run the tool calls it made in order (arguments validated against each tool's schema; a
//!    malformed call or an unknown tool is an error result the model sees), truncate each
//!    result to its budget (head + tail + marker), commit the step to the transcript. A reply
//!    without tool calls is the answer.
//! 6. **End**: the sandbox (started at the first tool call) is shut down, `run_end` with the
//!    run's usage is committed, [`RunEvent::RunEnd`] is sent.
//!
//! # Hooks
//!
//! [`RunRequest::hooks`] (Rust callbacks) and the workspace's hook executables see the run's
//! lifecycle events; a `before_tool_call` hook may veto (the model gets the refusal as the
//! tool result) or rewrite a call. Each decision is a [`RunEvent::Hook`]. See [`hooks`].
//!
//! # Subagents
//!
//! The default tools include `spawn_subagents` while [`RunRequest::depth`] is below
//! [`SubagentOptions::max_depth`]: it runs child agents in the same workspace, each in a new
//! session, in parallel, and gives back their answers in order; their usage is added to the
//! run's, and the run's events include [`RunEvent::SubagentStart`] /
//! [`RunEvent::SubagentEnd`]. See [`subagents`] (also for [`Workspace::run_subagents`]).
//!
//! # Transcript
//!
//! `run_start` and `user_message` are committed when the run starts; each step's
//! `assistant_message`, `tool_call`s and `tool_result`s when the step ends; `compaction`
//! when it happens; failed model attempts, key rotations and fallbacks as `error` events
//! (kinds `llm`, `key_rotation`, `fallback`); a failure of the run as an `error` (kinds
//! `llm`, `cancelled`, `timeout`, `run`); `run_end` with the usage and the outcome
//! (`completed`, `max_steps`, `failed`, `cancelled`, `timed_out`) last. The session's usage is
//! the sum of its `run_end`s ([`RunResult::session_usage`]).
//!
//! # Cancellation
//!
//! [`RunRequest::cancel`] takes a [`CancelToken`]: cancelling it stops the run between steps,
//! abandons a model call in flight, wakes a backoff wait, and kills the run's sandbox (so a
//! running command dies). The run ends with [`Error::Cancelled`] (CLI exit 130; the CLI
//! cancels on SIGINT/SIGTERM).

pub use crate::util::cancel;
pub mod cli;
pub mod context;
mod engine;
pub mod events;
pub mod failover;
#[cfg(test)]
mod fuzz;
pub mod hooks;
pub mod pricing;
pub use crate::util::schema;
pub mod subagents;
pub mod tools;

use std::collections::BTreeMap;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

pub use cancel::CancelToken;
pub use context::ContextConfig;
pub use events::{format_attempts, Attempt, RunEvent, RunOutcome, RunResult, ToolCallRecord};
pub use failover::Cooldowns;
pub use hooks::{Hook, HookDecision, HookEvent, HookEventKind, HookReport, HookSpec, Hooks};
pub use subagents::{
    cancel_subagent, running_subagents, ChildBudget, ChildInfo, SubResult, SubTask, SubagentOptions,
};
pub use tools::{Tool, ToolContext, ToolKind, ToolOutput, ToolRegistry};

use crate::config::LlmConfig;
use crate::creds::CredentialKey;
use crate::error::Result;
use crate::llm::{HttpConfig, ModelRef, Provider, RetryPolicy};
use crate::platform::{LimitsConfig, Workspace};
use crate::sessions::LockMode;

/// The system prompt when the caller gives none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a capable assistant that completes the \
user's task by using the tools you are given, checking your work, and then answering \
concisely with what you did and found.";

/// Default step limit.
pub const DEFAULT_MAX_STEPS: usize = 20;

/// Time limits of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting to a model server.
    pub connect: Duration,
    /// A whole non-streaming model call, and the wait for a stream's first byte.
    pub request: Duration,
    /// Longest silence inside a streamed reply.
    pub stream_idle: Duration,
    /// A `bash` command without `timeout_secs`.
    pub tool_default: Duration,
    /// The most a `bash` command may ask for.
    pub tool_max: Duration,
    /// The whole run (`None`: no limit). It holds inside a step too: a model call's HTTP
    /// exchange, a tool call's command and worker reply, and a hook executable all end by
    /// then. When it passes, the run ends with [`Error::RunTimedOut`] (CLI exit 124).
    pub run: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(15),
            request: Duration::from_secs(600),
            stream_idle: Duration::from_secs(120),
            tool_default: Duration::from_secs(120),
            tool_max: Duration::from_secs(tools::MAX_COMMAND_TIMEOUT_SECS),
            run: None,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The user's message.
    pub message: String,
    /// Session to continue or start (`None`: a new session with a generated id).
    pub session: Option<String>,
    /// System prompt (`None`: [`DEFAULT_SYSTEM_PROMPT`]); the environment note and the
    /// instructions files are appended either way.
    pub system_prompt: Option<String>,
    /// Primary model, `provider/model` (`None`: the workspace's).
    pub model: Option<String>,
    /// Fallback models in order (`None`: the workspace's; `Some(vec![])`: none).
    pub fallbacks: Option<Vec<String>>,
    /// Base URL for the primary's provider (`None`: the workspace's, then the environment).
    pub base_url: Option<String>,
    /// Most model steps (default [`DEFAULT_MAX_STEPS`]).
    pub max_steps: usize,
    /// Stream replies (SSE); text arrives as [`RunEvent::TextDelta`]s.
    pub stream: bool,
    /// Time limits.
    pub timeouts: Timeouts,
    /// Retries of one model (and how long a `Retry-After` is worth waiting for).
    pub retry: RetryPolicy,
    /// Context management.
    pub context: ContextConfig,
    /// How to take the session's lock (default [`LockMode::FailFast`]).
    pub lock: LockMode,
    /// Cancels the run.
    pub cancel: Option<CancelToken>,
    /// Passphrase of the workspace's credential store (`None`: keys from the environment
    /// only).
    pub credential_key: Option<CredentialKey>,
    /// The environment read for keys and base URLs (`None`: the process environment).
    pub env: Option<BTreeMap<String, String>>,
    /// Tools (`None`: [`ToolRegistry::builtin`]).
    pub tools: Option<Arc<ToolRegistry>>,
    /// Sandbox limits on top of the workspace's.
    pub limits: LimitsConfig,
    /// Lifecycle hooks (Rust callbacks; default none). The workspace's hook executables
    /// run too (see [`hooks`]).
    pub hooks: Hooks,
    /// Depth of the run: 0 for a top-level run, 1 for its subagents, … (see [`subagents`]).
    pub depth: usize,
    /// Limits of the run's subagents (the `spawn_subagents` tool).
    pub subagents: SubagentOptions,
    /// The count of children shared by a top-level run and its descendants (`None`: a new
    /// count for this run; subagents get their parent's).
    pub subagent_budget: Option<ChildBudget>,
}

impl RunRequest {
    /// A request with the defaults.
    pub fn new(message: impl Into<String>) -> Self {
        RunRequest {
            message: message.into(),
            session: None,
            system_prompt: None,
            model: None,
            fallbacks: None,
            base_url: None,
            max_steps: DEFAULT_MAX_STEPS,
            stream: true,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            context: ContextConfig::default(),
            lock: LockMode::FailFast,
            cancel: None,
            credential_key: None,
            env: None,
            tools: None,
            limits: LimitsConfig::default(),
            hooks: Hooks::default(),
            depth: 0,
            subagents: SubagentOptions::default(),
            subagent_budget: None,
        }
    }
}

impl Default for RunRequest {
    fn default() -> Self {
        Self::new("")
    }
}

/// Builds the client of a model: `(model, explicit base URL) → provider`.
pub(crate) type ProviderFactory<'a> =
    dyn Fn(&ModelRef, Option<&str>) -> Result<Arc<dyn Provider>> + Send + Sync + 'a;

fn http_config(t: &Timeouts, llm: &LlmConfig) -> HttpConfig {
    HttpConfig {
        connect_timeout: t.connect,
        request_timeout: t.request,
        stream_idle_timeout: t.stream_idle,
        ssrf: crate::llm::http::ssrf_policy(llm),
        ..HttpConfig::default()
    }
}

/// The operator's `[llm]` settings: `config.toml` of the workspace's state directory, read
/// at each run (so a change applies to the next run of a long-lived host).
fn operator_llm_config(ws: &Workspace) -> Result<LlmConfig> {
    Ok(ws.platform_config()?.llm)
}

impl Workspace {
    /// Runs the agent on `req` (see [`crate::agent`]).
    pub fn run(&self, req: RunRequest) -> Result<RunResult> {
        self.run_with_events(req, &mut |_| {})
    }

    /// [`Workspace::run`], with every [`RunEvent`] given to `on_event` as it happens (on the
    /// calling thread).
    pub fn run_with_events(
        &self,
        req: RunRequest,
        on_event: &mut dyn FnMut(&RunEvent),
    ) -> Result<RunResult> {
        let env_map = req.env.clone();
        let env = move |k: &str| -> Option<String> {
            match &env_map {
                Some(m) => m.get(k).cloned(),
                None => std::env::var(k).ok(),
            }
        };
        let http = http_config(&req.timeouts, &operator_llm_config(self)?);
        let env_for_factory = env.clone();
        let factory = move |m: &ModelRef, base: Option<&str>| {
            crate::llm::provider_for(m, base, &env_for_factory, http.clone())
        };
        isolated(self, || {
            engine::Setup {
                ws: self,
                req,
                cooldowns: Cooldowns::global(),
                factory: &factory,
                env: &env,
            }
            .run(on_event)
        })
    }

    /// [`Workspace::run`], sending every event on `events` (send errors are ignored: a
    /// receiver that went away does not stop the run).
    pub fn run_streaming(&self, req: RunRequest, events: Sender<RunEvent>) -> Result<RunResult> {
        self.run_with_events(req, &mut |e| {
            let _ = events.send(e.clone());
        })
    }
}

/// Runs with an injected provider factory and cooldown table (tests, benchmarks).
#[doc(hidden)]
pub fn run_with_factory(
    ws: &Workspace,
    req: RunRequest,
    factory: &ProviderFactory<'_>,
    cooldowns: &Cooldowns,
    on_event: &mut dyn FnMut(&RunEvent),
) -> Result<RunResult> {
    let env_map = req.env.clone().unwrap_or_default();
    let env = move |k: &str| env_map.get(k).cloned();
    isolated(ws, || {
        engine::Setup {
            ws,
            req,
            cooldowns,
            factory,
            env: &env,
        }
        .run(on_event)
    })
}

/// Runs one agent run in isolation: a bug that panics in it fails this run with
/// [`Error::Internal`](crate::error::Error::Internal), logged, and never reaches the
/// process that other tenants' runs share. The run's sandbox is killed and its session lock
/// released as the stack unwinds (both are dropped guards). Release builds unwind too
/// (`panic = "unwind"`), so this holds in the shipped binary.
fn isolated(ws: &Workspace, run: impl FnOnce() -> Result<RunResult>) -> Result<RunResult> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        log::error!(target: "agent", workspace = ws.id(); "the run panicked: {}", crate::logging::redact(&msg));
        Err(crate::error::Error::Internal(format!(
            "the run in workspace {:?} failed",
            ws.id()
        )))
    })
}

#[cfg(test)]
mod tests;
