//! bulkhead: run many AI agents on one Linux box, each tenant in its own kernel-enforced
//! sandbox.
//!
//! This crate is the unprivileged controller. Embed it as a library:
//!
//! ```no_run
//! use bulkhead::{Platform, PlatformConfig, WorkspaceConfig};
//! let platform = Platform::open(PlatformConfig { state_dir: "/tmp/bh".into(), launcher: None })?;
//! let ws = platform.create_workspace("acme", WorkspaceConfig::default())?;
//! let mut sandbox = ws.sandbox(&Default::default())?;
//! # Ok::<(), bulkhead::Error>(())
//! ```
//!
//! The `bulkhead` binary is one client of this API.
//!
//! Modules are layered, and a module uses only the layers below it: leaves (`util`, `error`,
//! `state`, `config`, `logging`) <- services (`disk`, `net`, `sandbox`, `platform`, `creds`,
//! `llm`, `sessions`, `tool`, `memory`, `skills`, in that order) <- `agent` <- this crate's
//! re-exports <- front ends (`doctor`, `rpc`, `cli`). The order is declared once, in
//! `controller/tests/layers.rs`, whose test fails on an import against it.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod config;
pub mod creds;
pub mod disk;
pub mod doctor;
pub mod error;
pub mod llm;
pub mod logging;
pub mod memory;
pub mod net;
pub mod platform;
pub mod rpc;
pub mod sandbox;
pub mod sessions;
pub mod skills;
pub mod state;
pub mod tool;
pub mod util;

pub use agent::{CancelToken, RunEvent, RunOutcome, RunRequest, RunResult};
/// The wire protocol types (requests, replies, limits), re-exported for embedders.
pub use bulkhead_shared as protocol;
pub use creds::{
    Cipher, CredentialKey, CredentialOptions, CredentialStore, KdfParams, SecretString,
};
pub use error::{CredError, Error, Result, SessionError, WorkspaceError};
pub use platform::{
    LimitsConfig, Platform, PlatformConfig, RunningSandbox, Workspace, WorkspaceConfig,
};
pub use sandbox::{ExecOutcome, Sandbox, SandboxExit, SandboxInfo};
pub use sessions::{
    Event, LockMode, SessionEventNotice, SessionHandle, SessionInfo, Sessions, Transcript, Usage,
};
