//! What a workspace stores about its hook executables (`workspace.json`'s `hooks`): the
//! events, the spec and its checks. Running them is the agent's (`crate::agent::hooks`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Timeout of a hook executable when its spec sets none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;
/// The longest timeout a hook executable may have.
pub const MAX_TIMEOUT_SECS: u64 = 300;
/// The events of a run that hooks see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HookEventKind {
    /// The run opened its session.
    SessionStart,
    /// Before the first model call.
    BeforeAgentStart,
    /// Before a tool runs: may veto or rewrite.
    BeforeToolCall,
    /// After a tool ran, with its (truncated) result.
    AfterToolCall,
    /// The agent loop ended, with the usage.
    AfterAgentEnd,
    /// The run is about to release its session.
    SessionEnd,
    /// The run failed.
    OnError,
}

impl HookEventKind {
    /// Every kind, in the order a run fires them.
    pub const ALL: [HookEventKind; 7] = [
        HookEventKind::SessionStart,
        HookEventKind::BeforeAgentStart,
        HookEventKind::BeforeToolCall,
        HookEventKind::AfterToolCall,
        HookEventKind::AfterAgentEnd,
        HookEventKind::SessionEnd,
        HookEventKind::OnError,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            HookEventKind::SessionStart => "session_start",
            HookEventKind::BeforeAgentStart => "before_agent_start",
            HookEventKind::BeforeToolCall => "before_tool_call",
            HookEventKind::AfterToolCall => "after_tool_call",
            HookEventKind::AfterAgentEnd => "after_agent_end",
            HookEventKind::SessionEnd => "session_end",
            HookEventKind::OnError => "on_error",
        }
    }
}

impl std::fmt::Display for HookEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HookEventKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        HookEventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown hook event {s:?}; the events are: {}",
                    HookEventKind::ALL.map(HookEventKind::as_str).join(", ")
                ))
            })
    }
}

/// A hook executable of a workspace (`workspace.json`'s `hooks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookSpec {
    /// The event it runs on.
    pub event: HookEventKind,
    /// Absolute path of a host executable.
    pub path: PathBuf,
    /// Timeout in seconds (`None`: [`DEFAULT_TIMEOUT_SECS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Priority (lower first).
    #[serde(default)]
    pub priority: i32,
}

impl HookSpec {
    /// The timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
    }

    /// Checks the spec: an absolute path to an existing executable regular file, a timeout
    /// of 1..=[`MAX_TIMEOUT_SECS`] seconds.
    pub fn validate(&self) -> Result<()> {
        check_executable(&self.path)?;
        if let Some(t) = self.timeout_secs {
            if t == 0 || t > MAX_TIMEOUT_SECS {
                return Err(Error::Invalid(format!(
                    "invalid hook timeout {t}: expected 1 to {MAX_TIMEOUT_SECS} seconds"
                )));
            }
        }
        Ok(())
    }
}

/// Checks that `path` is absolute and names an existing executable regular file.
pub fn check_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !path.is_absolute() {
        return Err(Error::Invalid(format!(
            "hook path {} is not absolute: give the full path of a host executable",
            path.display()
        )));
    }
    let md = std::fs::metadata(path)
        .map_err(|e| Error::Invalid(format!("hook path {}: {e}", path.display())))?;
    if !md.is_file() {
        return Err(Error::Invalid(format!(
            "hook path {} is not a regular file",
            path.display()
        )));
    }
    if md.permissions().mode() & 0o111 == 0 {
        return Err(Error::Invalid(format!(
            "hook path {} is not executable (chmod +x it)",
            path.display()
        )));
    }
    Ok(())
}
