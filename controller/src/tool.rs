//! The [`Tool`] trait the model's tools implement, the [`ToolRegistry`] of a run and the
//! [`ToolContext`] a call gets (the workspace, the run's sandbox started on first use, the
//! cancel token, the time limits).
//!
//! It sits below the services that implement tools (memory, skills) and the agent, which
//! registers them (`ToolRegistry::builtin` is the agent's) and runs the loop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::llm::ToolSpec;
use crate::platform::{LimitsConfig, RunningSandbox, Workspace};
use crate::sandbox::Sandbox;
use crate::util::cancel::{CancelToken, HookGuard};

/// What a tool returns to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutput {
    /// The text given to the model (truncated to the budget by the loop).
    pub content: String,
    /// Whether the tool failed; the model sees it as an error result.
    pub is_error: bool,
}

impl ToolOutput {
    /// A successful result.
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }

    /// A failed result (the model sees the message and may try again).
    pub fn error(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}

/// What kind of tool, for the loop's own decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    /// Runs in the workspace's sandbox.
    Sandbox,
    /// Saves or searches the workspace's memory (enables the memory flush before a
    /// compaction).
    Memory,
    /// Anything else (skills, subagents, host-side tools).
    Other,
}

/// A tool the model may call.
pub trait Tool: Send + Sync {
    /// The name the model calls it by (`[A-Za-z0-9_-]{1,64}`).
    fn name(&self) -> &str;
    /// What it does, for the model.
    fn description(&self) -> &str;
    /// JSON Schema of its arguments (an `object` schema).
    fn schema(&self) -> Value;
    /// Its kind (default [`ToolKind::Other`]).
    fn kind(&self) -> ToolKind {
        ToolKind::Other
    }
    /// Runs it with validated `args`. `Ok` with [`ToolOutput::error`] is a failure the model
    /// should see (file not found, command failed); `Err` is a failure of the platform
    /// (the sandbox could not start or died), handled by the loop.
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput>;
    /// Whether this is `crate::agent::subagents::SpawnSubagentsTool`, which the agent loop runs
    /// itself (it needs the run's models and event stream).
    #[doc(hidden)]
    fn is_subagent_spawner(&self) -> bool {
        false
    }
}

impl fmt::Debug for dyn Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tool({})", self.name())
    }
}

/// A section appended to the system prompt by a registry (e.g. the skills' descriptions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptSection {
    /// Heading.
    pub title: String,
    /// Text.
    pub body: String,
}

/// The tools of a run, in the order the model sees them.
#[derive(Debug, Clone, Default)]
pub struct ToolRegistry {
    tools: Vec<Arc<dyn Tool>>,
    sections: Vec<PromptSection>,
}

fn valid_tool_name(n: &str) -> bool {
    (1..=64).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ToolRegistry {
    /// No tools.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a tool; refuses an invalid or duplicate name.
    pub fn register(&mut self, tool: Arc<dyn Tool>) -> Result<()> {
        let name = tool.name().to_string();
        if !valid_tool_name(&name) {
            return Err(Error::Invalid(format!(
                "invalid tool name {name:?}: use 1 to 64 of A-Z a-z 0-9 _ -"
            )));
        }
        if self.get(&name).is_some() {
            return Err(Error::Invalid(format!("tool {name:?} is registered twice")));
        }
        self.tools.push(tool);
        Ok(())
    }

    /// Removes a tool by name; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.tools.len();
        self.tools.retain(|t| t.name() != name);
        self.tools.len() != before
    }

    /// Adds a section to the system prompt (the hook for skills' descriptions).
    pub fn add_prompt_section(&mut self, title: impl Into<String>, body: impl Into<String>) {
        self.sections.push(PromptSection {
            title: title.into(),
            body: body.into(),
        });
    }

    /// The prompt sections, in order.
    pub fn prompt_sections(&self) -> &[PromptSection] {
        &self.sections
    }

    /// A tool by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// Tool names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.tools.iter().map(|t| t.name()).collect()
    }

    /// Whether the registry has no tool.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// The specs sent to the model.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools
            .iter()
            .map(|t| ToolSpec {
                name: t.name().to_string(),
                description: t.description().to_string(),
                input_schema: t.schema(),
            })
            .collect()
    }

    /// The registry restricted to the tools of one kind.
    pub fn only(&self, kind: ToolKind) -> ToolRegistry {
        ToolRegistry {
            tools: self
                .tools
                .iter()
                .filter(|t| t.kind() == kind)
                .cloned()
                .collect(),
            sections: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The run's sandbox
// ---------------------------------------------------------------------------------------

/// The sandbox of a run: started on first use, with a cancel hook that stops it.
pub(crate) struct SandboxSlot {
    running: Option<(RunningSandbox, HookGuard)>,
    limits: LimitsConfig,
    /// Whether the sandbox has bash (`None`: not known yet); the `bash` tool's.
    pub(crate) has_bash: Option<bool>,
    /// Sandboxes started by this run.
    pub(crate) started: usize,
}

impl fmt::Debug for SandboxSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSlot")
            .field("running", &self.running.is_some())
            .field("started", &self.started)
            .finish()
    }
}

impl SandboxSlot {
    pub(crate) fn new(limits: LimitsConfig) -> Self {
        SandboxSlot {
            running: None,
            limits,
            has_bash: None,
            started: 0,
        }
    }

    fn get(&mut self, ws: &Workspace, cancel: &CancelToken) -> Result<&mut Sandbox> {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled("the run was cancelled".into()));
        }
        if self.running.is_none() {
            let mut rs = ws.sandbox(&self.limits)?;
            self.started += 1;
            let pid = rs.get().info().launcher_pid;
            // SIGTERM to the launcher: it kills every process of the sandbox and removes
            // the cgroup; the worker's socket closes and a blocked request returns. The
            // launcher is our unreaped child while the guard lives (it is dropped before
            // the sandbox is shut down and reaped), so the pid cannot have been reused.
            let hook = cancel.on_cancel(move || {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            });
            self.running = Some((rs, hook));
        }
        Ok(self.running.as_mut().expect("just started").0.get())
    }

    /// A slot holding `rs` already (tests with a fake worker).
    #[cfg(test)]
    pub(crate) fn with_running(rs: RunningSandbox, cancel: &CancelToken) -> Self {
        SandboxSlot {
            running: Some((rs, cancel.on_cancel(|| {}))),
            limits: LimitsConfig::default(),
            has_bash: None,
            started: 1,
        }
    }

    /// Forgets a sandbox that broke (it is killed); the next call starts a new one.
    pub(crate) fn discard(&mut self) {
        if let Some((rs, hook)) = self.running.take() {
            drop(hook);
            drop(rs);
        }
        self.has_bash = None;
    }

    /// Stops the sandbox, if one was started.
    pub(crate) fn shutdown(&mut self) {
        if let Some((rs, hook)) = self.running.take() {
            drop(hook);
            if let Err(e) = rs.shutdown() {
                log::warn!(target: "agent", "stopping the run's sandbox: {e}");
            }
        }
    }
}

impl Drop for SandboxSlot {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What a tool call may use: the workspace, the run's sandbox, the cancel token.
pub struct ToolContext<'a> {
    pub(crate) workspace: &'a Workspace,
    pub(crate) sandbox: &'a mut SandboxSlot,
    pub(crate) cancel: &'a CancelToken,
    pub(crate) run_id: &'a str,
    pub(crate) session: &'a str,
    pub(crate) default_timeout: Duration,
    pub(crate) max_timeout: Duration,
    pub(crate) deadline: Option<Instant>,
}

impl fmt::Debug for ToolContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolContext")
            .field("workspace", &self.workspace.id())
            .field("run_id", &self.run_id)
            .field("session", &self.session)
            .finish_non_exhaustive()
    }
}

impl ToolContext<'_> {
    /// The workspace.
    pub fn workspace(&self) -> &Workspace {
        self.workspace
    }

    /// The run's sandbox, started now if this is the first use. No request to it waits
    /// past the run's deadline ([`Sandbox::set_deadline_cap`]).
    pub fn sandbox(&mut self) -> Result<&mut Sandbox> {
        let sb = self.sandbox.get(self.workspace, self.cancel)?;
        sb.set_deadline_cap(self.deadline);
        Ok(sb)
    }

    /// The run's cancel token.
    pub fn cancel_token(&self) -> &CancelToken {
        self.cancel
    }

    /// Run id.
    pub fn run_id(&self) -> &str {
        self.run_id
    }

    /// Session id.
    pub fn session(&self) -> &str {
        self.session
    }

    /// The time limit for a command: `requested` (seconds) or the default, capped by the
    /// maximum and by what is left of the run's time. A request that is not a positive
    /// finite number gets the default; one too large for a [`Duration`] gets the maximum.
    pub fn command_timeout(&self, requested: Option<f64>) -> Duration {
        let mut t = requested
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(|s| Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX))
            .unwrap_or(self.default_timeout)
            .min(self.max_timeout);
        if let Some(d) = self.deadline {
            t = t.min(
                d.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            );
        }
        t
    }
}
