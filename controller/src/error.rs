//! Errors of the library, each with the CLI exit code it maps to.

use std::path::PathBuf;

use std::fmt;
use std::time::Duration;

use bulkhead_shared::SetupError;
use serde::{Deserialize, Serialize, Serializer};

/// Exit codes of the `bulkhead` CLI (besides `exec`'s pass-through of the program's status).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A failure not covered below.
    pub const FAILURE: i32 = 1;
    /// Bad usage or invalid input.
    pub const USAGE: i32 = 2;
    /// The named workspace (or other object) does not exist.
    pub const NOT_FOUND: i32 = 3;
    /// It already exists.
    pub const EXISTS: i32 = 4;
    /// `doctor`: a required isolation layer is missing.
    pub const DOCTOR_MISSING: i32 = 5;
    /// `cred`: wrong credential key, or `creds.enc` was altered, truncated or copied from
    /// another workspace.
    pub const WRONG_CREDENTIAL_KEY: i32 = 6;
    /// `cred`: no credential key given (`BULKHEAD_CREDENTIAL_KEY`, `--credential-key-file`).
    pub const NO_CREDENTIAL_KEY: i32 = 7;
    /// A session is in use by another run (a fail-fast open, or `session rm` of a held one).
    pub const SESSION_BUSY: i32 = 8;
    /// `run`: every model of the chain failed (the error lists each attempt and its reason).
    pub const ALL_MODELS_FAILED: i32 = 9;
    /// `run`: the step limit (`--max-steps`) was reached before a final answer.
    pub const MAX_STEPS: i32 = 10;
    /// A bug in bulkhead (a panic caught at a run's or a request's boundary; the log has
    /// the details). `EX_SOFTWARE` of sysexits.h.
    pub const INTERNAL: i32 = 70;
    /// `run`: cancelled (SIGINT/SIGTERM, or a cancel token).
    pub const CANCELLED: i32 = 130;
    pub use bulkhead_shared::exit::{
        EXEC_NOT_EXECUTABLE, EXEC_NOT_FOUND, EXEC_OOM, EXEC_SETUP_FAILED, EXEC_TIMEOUT,
    };
}

/// Everything that can go wrong in the controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input from the caller.
    #[error("{0}")]
    Invalid(String),
    /// A workspace is missing or exists already.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// A session is missing, exists already or is held by another run.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// A credential key is missing or wrong, or a credential set is missing.
    #[error(transparent)]
    Cred(#[from] CredError),
    /// A state file is damaged.
    #[error("{path}: {detail}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// File system error on a state path.
    #[error("{path}: {source}")]
    Io {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The sandbox could not be built.
    #[error("sandbox setup failed: {0}")]
    Setup(SetupError),
    /// The sandbox came up but does not match the policy.
    #[error("sandbox setup failed: attestation: {0}")]
    Attestation(String),
    /// The launcher could not be started or died without a report.
    #[error("sandbox setup failed: launcher: {0}")]
    Launcher(String),
    /// The worker broke the protocol (treated as hostile; the sandbox is killed).
    #[error("sandbox protocol error: {0}")]
    Protocol(String),
    /// The sandbox is gone.
    #[error("sandbox ended unexpectedly: {0}")]
    SandboxGone(String),
    /// The worker did not answer a request by its deadline; the sandbox was killed.
    #[error("the sandbox did not answer within {}; it was stopped", crate::error::secs(*.0))]
    SandboxTimedOut(std::time::Duration),
    /// A tool request failed inside the sandbox.
    #[error("{0}")]
    Tool(bulkhead_shared::ToolError),
    /// Every model of a run's chain failed.
    #[error("all models failed ({} attempt(s)):{}", .attempts.len(), format_attempts(.attempts))]
    AllModelsFailed {
        /// Every model call of the run, with its outcome.
        attempts: Vec<Attempt>,
    },
    /// A run was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// A run's time limit passed.
    #[error("the run timed out after {0:.0}s")]
    RunTimedOut(f64),
    /// A bug: a panic caught at the boundary of a run or a request (the message says where;
    /// the log has the panic).
    #[error("internal error: {0} (a bug in bulkhead; the log has the details, please report it)")]
    Internal(String),
}

/// Errors of workspaces (re-exported as `platform::WorkspaceError`).
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No such workspace (exit 3).
    #[error("workspace {0:?} does not exist (see `bulkhead workspace list`)")]
    NoSuch(String),
    /// The workspace exists already (exit 4).
    #[error("workspace {0:?} already exists")]
    Exists(String),
}

/// Errors of sessions (re-exported as `sessions::SessionError`).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such session in the workspace (exit 3).
    #[error("session {sid:?} does not exist in workspace {workspace:?} (see `bulkhead session list {workspace}`)")]
    NoSuch {
        /// Workspace id.
        workspace: String,
        /// Session id.
        sid: String,
    },
    /// The session exists already (exit 4).
    #[error("session {sid:?} already exists in workspace {workspace:?}")]
    Exists {
        /// Workspace id.
        workspace: String,
        /// Session id.
        sid: String,
    },
    /// Another run holds the session's lock (exit 8).
    #[error("session {0} is in use by another run; retry when it has finished")]
    Busy(String),
}

/// Errors of credentials (re-exported as `creds::CredError`).
#[derive(Debug, thiserror::Error)]
pub enum CredError {
    /// `creds.enc` does not open: wrong key, or altered, truncated or foreign file (exit 6).
    #[error("wrong credential key or damaged file: {path}: {detail}")]
    WrongKey {
        /// File.
        path: PathBuf,
        /// What failed (never file contents).
        detail: String,
    },
    /// No credential passphrase was given; the message names where to give it (exit 7).
    #[error("{0}")]
    NoKey(String),
    /// No credential set of that name (exit 3).
    #[error("workspace {workspace:?} has no credential set {name:?} (see `bulkhead cred list {workspace}`)")]
    NoSuchSet {
        /// Workspace id.
        workspace: String,
        /// Set name.
        name: String,
    },
}

impl Error {
    /// CLI exit code for this error.
    pub fn exit_code(&self) -> i32 {
        use bulkhead_shared::ToolErrorKind as K;
        match self {
            Error::Invalid(_) => exit::USAGE,
            Error::Workspace(WorkspaceError::NoSuch(_)) => exit::NOT_FOUND,
            Error::Workspace(WorkspaceError::Exists(_)) => exit::EXISTS,
            Error::Cred(CredError::WrongKey { .. }) => exit::WRONG_CREDENTIAL_KEY,
            Error::Cred(CredError::NoKey(_)) => exit::NO_CREDENTIAL_KEY,
            Error::Cred(CredError::NoSuchSet { .. }) => exit::NOT_FOUND,
            Error::Session(SessionError::NoSuch { .. }) => exit::NOT_FOUND,
            Error::Session(SessionError::Exists { .. }) => exit::EXISTS,
            Error::Session(SessionError::Busy(_)) => exit::SESSION_BUSY,
            Error::AllModelsFailed { .. } => exit::ALL_MODELS_FAILED,
            Error::Cancelled(_) => exit::CANCELLED,
            Error::RunTimedOut(_) => exit::EXEC_TIMEOUT,
            Error::Internal(_) => exit::INTERNAL,
            Error::Setup(_) | Error::Attestation(_) | Error::Launcher(_) => exit::EXEC_SETUP_FAILED,
            Error::Tool(t) if t.kind == K::NotFound => exit::EXEC_NOT_FOUND,
            Error::Tool(t) if t.kind == K::PermissionDenied => exit::EXEC_NOT_EXECUTABLE,
            _ => exit::FAILURE,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// `12s`, `1.5s`: a duration for a message.
pub(crate) fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if (s - s.round()).abs() < 0.05 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------------------
// Model attempts: what `AllModelsFailed` carries (the agent's failover records them, the llm
// service classifies the reason).

/// The class of a provider failure, which decides what the agent loop does next.
///
/// | reason | retry same key | rotate key | typical cooldown |
/// | --- | --- | --- | --- |
/// | `RateLimit` | after backoff / `Retry-After` | yes | short |
/// | `Overloaded` | after backoff | no | short |
/// | `Timeout` | after backoff | no | short |
/// | `Unknown` | after backoff | no | short |
/// | `Billing` | no | yes | long |
/// | `Auth` | no | yes | long |
/// | `AuthPermanent` | no | yes | long |
/// | `ModelNotFound` | no | no (fall back) | long |
/// | `Format` | no | no (fall back) | none |
/// | `ContextOverflow` | no: compact first | no | none |
/// | `SessionExpired` | after re-authenticating | no | none |
/// | `Blocked` | no | no (fall back) | none |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailoverReason {
    /// Too many requests or tokens per unit of time (429, `rate_limit_error`, …).
    RateLimit,
    /// The provider is out of capacity (529, 503, `overloaded_error`, "high demand", …).
    Overloaded,
    /// Out of credits or quota; payment needed (402, `insufficient_quota`, …).
    Billing,
    /// The key is invalid (401, "invalid x-api-key", `API_KEY_INVALID`, …).
    Auth,
    /// The key or account is refused for good (403 permission, account disabled or
    /// deactivated, region not supported).
    AuthPermanent,
    /// The request or response timed out, or a stream stalled (408, 504, idle timeout).
    Timeout,
    /// No such model, or no access to it (404, `model_not_found`, "does not exist", …).
    ModelNotFound,
    /// The prompt does not fit the model's context window: compact, do not retry blindly.
    ContextOverflow,
    /// The request was malformed (bad schema, bad message order) or the response could not be
    /// parsed.
    Format,
    /// A session or token the call depended on has expired.
    SessionExpired,
    /// The call was refused before any request was sent: the SSRF guard does not allow the
    /// base URL's destination (loopback, private or metadata address, a bad URL) under the
    /// operator's `[llm]` settings, or the server answered with a redirect (never followed).
    /// A configuration problem: not retried, no key rotation, no cooldown (the check costs no
    /// request, and a fixed configuration applies at once); the next model is tried.
    Blocked,
    /// Anything else (500s, connection failures, unrecognised errors).
    Unknown,
}

/// Serializes a duration as whole milliseconds.
pub(crate) fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// One model call of a run (or a model skipped because it was cooling down).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// The step it belonged to (1-based; 0 for calls outside a step, e.g. a summary).
    pub step: usize,
    /// Provider name.
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Index of the key in the provider's key ring (`None` when no call was made).
    pub key_index: Option<usize>,
    /// Where that key came from (`$OPENAI_API_KEY`, `credential openai.api_key`).
    pub key_source: Option<String>,
    /// `ok`, a failover reason (`rate_limit`, `overloaded`, …), `no_key` or `cooldown`.
    pub outcome: String,
    /// The classified reason of a failure.
    pub reason: Option<FailoverReason>,
    /// HTTP status of a failure, when there was one.
    pub status: Option<u16>,
    /// What went wrong (scrubbed of keys).
    pub message: Option<String>,
    /// Whether this was a probe of a model in cooldown.
    pub probe: bool,
    /// Wall time of the call.
    #[serde(rename = "duration_ms", serialize_with = "ms")]
    pub duration: Duration,
}

impl Attempt {
    /// Whether the call succeeded.
    pub fn ok(&self) -> bool {
        self.outcome == "ok"
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)?;
        if let Some(k) = self.key_index {
            write!(f, " key #{}", k + 1)?;
            if let Some(src) = &self.key_source {
                write!(f, " ({src})")?;
            }
        }
        if self.probe {
            f.write_str(" [probe]")?;
        }
        write!(f, ": {}", self.outcome)?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        Ok(())
    }
}

/// Formats attempts as a numbered list, one per line (for the final error).
pub fn format_attempts(attempts: &[Attempt]) -> String {
    let mut s = String::new();
    for (i, a) in attempts.iter().enumerate() {
        s.push_str(&format!("\n  {}. {a}", i + 1));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each typed failure a caller acts on: its exit code and its text, byte for byte as
    /// before the per-module enums (users and scripts match both).
    fn cases() -> Vec<(Error, i32, &'static str)> {
        let ws = || "acme".to_string();
        vec![
            (
                WorkspaceError::NoSuch(ws()).into(),
                exit::NOT_FOUND,
                r#"workspace "acme" does not exist (see `bulkhead workspace list`)"#,
            ),
            (
                WorkspaceError::Exists(ws()).into(),
                exit::EXISTS,
                r#"workspace "acme" already exists"#,
            ),
            (
                SessionError::NoSuch {
                    workspace: ws(),
                    sid: "s1".into(),
                }
                .into(),
                exit::NOT_FOUND,
                r#"session "s1" does not exist in workspace "acme" (see `bulkhead session list acme`)"#,
            ),
            (
                SessionError::Exists {
                    workspace: ws(),
                    sid: "s1".into(),
                }
                .into(),
                exit::EXISTS,
                r#"session "s1" already exists in workspace "acme""#,
            ),
            (
                SessionError::Busy("s1".into()).into(),
                exit::SESSION_BUSY,
                "session s1 is in use by another run; retry when it has finished",
            ),
            (
                CredError::WrongKey {
                    path: "/s/creds.enc".into(),
                    detail: "authentication failed".into(),
                }
                .into(),
                exit::WRONG_CREDENTIAL_KEY,
                "wrong credential key or damaged file: /s/creds.enc: authentication failed",
            ),
            (
                CredError::NoKey("no credential key: set X".into()).into(),
                exit::NO_CREDENTIAL_KEY,
                "no credential key: set X",
            ),
            (
                CredError::NoSuchSet {
                    workspace: ws(),
                    name: "gh".into(),
                }
                .into(),
                exit::NOT_FOUND,
                r#"workspace "acme" has no credential set "gh" (see `bulkhead cred list acme`)"#,
            ),
        ]
    }

    #[test]
    fn typed_failures_keep_their_exit_codes_and_text() {
        for (e, code, text) in cases() {
            assert_eq!(e.exit_code(), code, "{e:?}");
            assert_eq!(e.to_string(), text);
        }
        assert_eq!(exit::SESSION_BUSY, 8);
        assert_eq!(exit::WRONG_CREDENTIAL_KEY, 6);
        assert_eq!(exit::NO_CREDENTIAL_KEY, 7);
    }

    #[test]
    fn question_mark_lifts_a_module_error_into_the_crate_error() {
        fn busy() -> Result<()> {
            Err(SessionError::Busy("s1".into()))?;
            Ok(())
        }
        let e = busy().unwrap_err();
        assert!(
            matches!(e, Error::Session(SessionError::Busy(ref s)) if s == "s1"),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), exit::SESSION_BUSY);
    }
}
