//! `[subagents]` of `config.toml`: the limits of subagents (the agent spawns them).

use std::time::Duration;

/// Default of [`SubagentOptions::concurrency`].
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default of [`SubagentOptions::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 2;
/// Default of [`SubagentOptions::max_children`].
pub const DEFAULT_MAX_CHILDREN: usize = 16;
/// Default of [`SubagentOptions::task_timeout`].
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// Limits of subagents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubagentOptions {
    /// Children running at once (default 4; at least 1).
    pub concurrency: usize,
    /// Deepest level a child may have: a run at depth `>= max_depth` spawns none (default 2).
    pub max_depth: usize,
    /// Children per top-level run, all levels and calls together (default 16).
    pub max_children: usize,
    /// Time limit of each child's run (`None`: only the parent's deadline). Default 10 min.
    pub task_timeout: Option<Duration>,
}

impl Default for SubagentOptions {
    fn default() -> Self {
        SubagentOptions {
            concurrency: DEFAULT_CONCURRENCY,
            max_depth: DEFAULT_MAX_DEPTH,
            max_children: DEFAULT_MAX_CHILDREN,
            task_timeout: Some(DEFAULT_TASK_TIMEOUT),
        }
    }
}
