//! The agent's memory tools, `memory_search` and `memory_store`, over the run's workspace
//! memory. They are not in [`ToolRegistry::builtin`]; add them with [`register`] (or
//! [`memory_tools`]) where a run should have memory.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{configured_embedder, Embedder, Memory, SearchOptions, MAX_STORE_BYTES, SOURCE_TOOL};
use crate::error::{Error, Result};
use crate::tool::{Tool, ToolContext, ToolKind, ToolOutput, ToolRegistry};

/// Results of `memory_search` without a `limit`.
pub const DEFAULT_TOOL_LIMIT: u64 = 5;
/// Most results of one `memory_search`.
pub const MAX_TOOL_LIMIT: u64 = 50;

/// Which embedder a memory tool uses.
#[derive(Debug, Clone, Default)]
pub enum ToolEmbedder {
    /// The platform's `[memory] embedder` (default: the built-in offline model), read when the
    /// tool is called. If it cannot be built (a provider without a key), the tool works
    /// keyword-only and the reason goes to the log.
    #[default]
    Configured,
    /// This one (`None`: keyword-only).
    Fixed(Option<Arc<dyn Embedder>>),
}

/// Opens the workspace's memory with the embedder, or says why not (to the model: no host
/// path; the full error goes to the log).
fn open(ctx: &ToolContext<'_>, e: &ToolEmbedder) -> std::result::Result<Memory, ToolOutput> {
    let m = Memory::open(ctx.workspace()).map_err(|err| failure("open", &err))?;
    let e = match e {
        ToolEmbedder::Fixed(e) => e.clone(),
        ToolEmbedder::Configured => match configured_embedder(ctx.workspace()) {
            Ok(e) => e,
            Err(err) => {
                log::warn!(target: "memory", "memory tool: configured embedder unavailable, keyword-only: {err}");
                None
            }
        },
    };
    Ok(match e {
        Some(e) => m.with_embedder(e),
        None => m,
    })
}

fn failure(what: &str, err: &Error) -> ToolOutput {
    match err {
        Error::Invalid(m) => ToolOutput::error(m.clone()),
        other => {
            log::warn!(target: "memory", "memory tool: {what}: {other}");
            ToolOutput::error(format!("the memory is unavailable ({what} failed)"))
        }
    }
}

/// `memory_search {query, limit}`.
#[derive(Debug, Clone, Default)]
pub struct MemorySearchTool {
    /// Embedder for hybrid search.
    pub embedder: ToolEmbedder,
    /// Search settings (`limit` is replaced by the call's).
    pub options: SearchOptions,
}

impl Tool for MemorySearchTool {
    fn name(&self) -> &str {
        "memory_search"
    }
    fn description(&self) -> &str {
        "Search this workspace's long-term memory (notes saved with memory_store in earlier \
         runs and sessions) by keywords and meaning. Returns the best matching chunks with \
         their id, source, score and a snippet."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to look for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_TOOL_LIMIT,
                          "description": format!("Most results (default {DEFAULT_TOOL_LIMIT}).")}
            },
            "required": ["query"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Memory
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let query = args.get("query").and_then(Value::as_str).unwrap_or("");
        let limit = args
            .get("limit")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_TOOL_LIMIT)
            .clamp(1, MAX_TOOL_LIMIT) as usize;
        let m = match open(ctx, &self.embedder) {
            Ok(m) => m,
            Err(o) => return Ok(o),
        };
        let opts = SearchOptions {
            limit,
            ..self.options.clone()
        };
        let hits = match m.search(query, &opts) {
            Ok(h) => h,
            Err(e) => return Ok(failure("search", &e)),
        };
        if hits.is_empty() {
            return Ok(ToolOutput::ok("no memory matches"));
        }
        let mut out = String::new();
        for h in hits {
            out.push_str(&format!(
                "[{}] score {:.3} source {}\n{}\n\n",
                h.id, h.score, h.source, h.snippet
            ));
        }
        Ok(ToolOutput::ok(out.trim_end().to_string()))
    }
}

/// `memory_store {content}`.
#[derive(Debug, Clone, Default)]
pub struct MemoryStoreTool {
    /// Embedder for the stored chunks.
    pub embedder: ToolEmbedder,
}

impl Tool for MemoryStoreTool {
    fn name(&self) -> &str {
        "memory_store"
    }
    fn description(&self) -> &str {
        "Save a note to this workspace's long-term memory, so that later runs and sessions \
         can find it with memory_search. Write self-contained facts, decisions and \
         preferences (Markdown is fine; long text is split into chunks)."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "content": {"type": "string", "minLength": 1, "maxLength": MAX_STORE_BYTES,
                            "description": "The text to remember."}
            },
            "required": ["content"],
            "additionalProperties": false
        })
    }
    fn kind(&self) -> ToolKind {
        ToolKind::Memory
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let content = args.get("content").and_then(Value::as_str).unwrap_or("");
        let m = match open(ctx, &self.embedder) {
            Ok(m) => m,
            Err(o) => return Ok(o),
        };
        match m.store(content, SOURCE_TOOL) {
            Ok(s) => {
                let ids: Vec<String> = s.ids.iter().map(i64::to_string).collect();
                Ok(ToolOutput::ok(if s.added == 0 {
                    format!("already in memory (id {})", ids.join(", "))
                } else {
                    format!("stored as {} chunk(s): id {}", s.ids.len(), ids.join(", "))
                }))
            }
            Err(e) => Ok(failure("store", &e)),
        }
    }
}

/// Both tools, sharing `embedder`.
pub fn memory_tools(embedder: ToolEmbedder) -> Vec<Arc<dyn Tool>> {
    vec![
        Arc::new(MemorySearchTool {
            embedder: embedder.clone(),
            options: SearchOptions::default(),
        }),
        Arc::new(MemoryStoreTool { embedder }),
    ]
}

/// Adds `memory_search` and `memory_store` to `reg`.
pub fn register(reg: &mut ToolRegistry, embedder: ToolEmbedder) -> Result<()> {
    for t in memory_tools(embedder) {
        reg.register(t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::agent::CancelToken;
    use crate::platform::{LimitsConfig, Platform, PlatformConfig, WorkspaceConfig};
    use crate::tool::SandboxSlot;

    #[test]
    fn store_then_search_through_the_tools() {
        let d = tempfile::tempdir().unwrap();
        let p = Platform::open(PlatformConfig {
            state_dir: d.path().join("state"),
            ..PlatformConfig::default()
        })
        .unwrap();
        let ws = p
            .create_workspace("acme", WorkspaceConfig::default())
            .unwrap();
        let mut reg = ToolRegistry::empty();
        register(
            &mut reg,
            ToolEmbedder::Fixed(Some(Arc::new(super::super::HashEmbedder::default()))),
        )
        .unwrap();
        assert_eq!(reg.names(), vec!["memory_search", "memory_store"]);
        assert_eq!(reg.only(ToolKind::Memory).names().len(), 2);
        let mut slot = SandboxSlot::new(LimitsConfig::default());
        let cancel = CancelToken::new();
        let mut ctx = ToolContext {
            workspace: &ws,
            sandbox: &mut slot,
            cancel: &cancel,
            run_id: "r1",
            session: "s1",
            default_timeout: Duration::from_secs(1),
            max_timeout: Duration::from_secs(1),
            deadline: None,
        };
        let store = reg.get("memory_store").unwrap().clone();
        let search = reg.get("memory_search").unwrap().clone();
        let out = store
            .call(
                &json!({"content": "The user prefers metric units."}),
                &mut ctx,
            )
            .unwrap();
        assert!(
            !out.is_error && out.content.starts_with("stored as 1 chunk"),
            "{out:?}"
        );
        let out = store
            .call(
                &json!({"content": "The user prefers metric units."}),
                &mut ctx,
            )
            .unwrap();
        assert!(out.content.starts_with("already in memory"), "{out:?}");
        let out = search
            .call(
                &json!({"query": "which units does the user prefer", "limit": 3}),
                &mut ctx,
            )
            .unwrap();
        assert!(
            !out.is_error && out.content.contains("metric units"),
            "{out:?}"
        );
        assert!(out.content.contains("source memory_store"));
        let out = search
            .call(&json!({"query": "giraffes"}), &mut ctx)
            .unwrap();
        assert_eq!(out.content, "no memory matches");
        let out = store.call(&json!({"content": "  "}), &mut ctx).unwrap();
        assert!(out.is_error);
        assert_eq!(slot.started, 0, "the memory tools never start a sandbox");
    }
}
