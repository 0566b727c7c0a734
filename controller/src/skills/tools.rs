//! The agent's skill tools, `skill_list` and `skill_execute {skill, params}`. They are not
//! registered by default: add [`skill_tools`] to a run's `ToolRegistry` (and, if wanted,
//! [`prompt_section`] as a prompt section) where a run should have skills.
//!
//! Enablement is read from `workspace.json` on the host at every call, so nothing the agent
//! does inside its sandbox can enable a skill.

use std::sync::Arc;

use serde_json::{json, Value};

use super::run::{is_enabled, run_skill_with, RunOptions};
use super::Registry;
use crate::creds::CredentialKey;
use crate::error::{CredError, Error, Result};
use crate::platform::Workspace;
use crate::tool::{Tool, ToolContext, ToolOutput};

/// What both tools share: the registry and the key that opens the workspace's credentials.
#[derive(Clone)]
pub struct SkillTools {
    /// The registry.
    pub registry: Registry,
    /// Opens the workspace's credentials for skills that declare some (`None`: such skills
    /// run only when the workspace holds no credentials).
    pub key: Option<CredentialKey>,
}

impl std::fmt::Debug for SkillTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkillTools")
            .field("registry", &self.registry.dir())
            .field("key", &self.key.is_some())
            .finish()
    }
}

/// The skills enabled for `ws` (valid ones only), as JSON for the model.
pub fn enabled_skills_json(registry: &Registry, ws: &Workspace) -> Result<Value> {
    let mut out = vec![];
    for l in registry.list()? {
        let Ok(s) = l.skill else { continue };
        if !is_enabled(ws, &s.id)? {
            continue;
        }
        out.push(json!({
            "skill": s.id,
            "name": s.name,
            "description": s.description,
            "input_schema": s.input_schema,
            "network": s.network,
            "usage": s.usage,
        }));
    }
    Ok(Value::Array(out))
}

/// A prompt section listing the enabled skills (title, body), or `None` when there are none.
pub fn prompt_section(registry: &Registry, ws: &Workspace) -> Result<Option<(String, String)>> {
    let v = enabled_skills_json(registry, ws)?;
    let list = v.as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        return Ok(None);
    }
    let mut body = String::from(
        "Run these with the skill_execute tool ({\"skill\": id, \"params\": {...}}):\n",
    );
    for s in list {
        body.push_str(&format!(
            "- {}: {}\n",
            s["skill"].as_str().unwrap_or(""),
            s["description"].as_str().unwrap_or("")
        ));
    }
    Ok(Some(("Skills".into(), body)))
}

fn failure(what: &str, err: &Error) -> ToolOutput {
    match err {
        Error::Invalid(m) => ToolOutput::error(m.clone()),
        Error::Cred(CredError::NoKey(_) | CredError::WrongKey { .. }) => {
            ToolOutput::error("the skill's credentials could not be opened (ask an operator)")
        }
        other => {
            log::warn!(target: "skill", "skill tool: {what}: {other}");
            ToolOutput::error(format!("the skill could not be run ({what} failed)"))
        }
    }
}

/// `skill_list {}`.
#[derive(Debug, Clone)]
pub struct SkillListTool(pub Arc<SkillTools>);

impl Tool for SkillListTool {
    fn name(&self) -> &str {
        "skill_list"
    }
    fn description(&self) -> &str {
        "List the skills enabled for this workspace: id, description, input schema, the hosts \
         each may reach and its usage. Run one with skill_execute."
    }
    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {}, "additionalProperties": false})
    }
    fn call(&self, _args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        match enabled_skills_json(&self.0.registry, ctx.workspace()) {
            Ok(v) => Ok(ToolOutput::ok(
                serde_json::to_string_pretty(&v).unwrap_or_default(),
            )),
            Err(e) => Ok(failure("list", &e)),
        }
    }
}

/// `skill_execute {skill, params}`.
#[derive(Debug, Clone)]
pub struct SkillExecuteTool(pub Arc<SkillTools>);

impl Tool for SkillExecuteTool {
    fn name(&self) -> &str {
        "skill_execute"
    }
    fn description(&self) -> &str {
        "Run an enabled skill (see skill_list) with parameters matching its input schema. It \
         runs in a sandbox of its own; its output comes back with any secret redacted."
    }
    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "skill": {"type": "string", "description": "skill id"},
                "params": {"type": "object", "description": "parameters (its input schema)"}
            },
            "required": ["skill"],
            "additionalProperties": false
        })
    }
    fn call(&self, args: &Value, ctx: &mut ToolContext<'_>) -> Result<ToolOutput> {
        let Some(id) = args.get("skill").and_then(Value::as_str) else {
            return Ok(ToolOutput::error("skill: expected a skill id"));
        };
        let params = args.get("params").cloned().unwrap_or_else(|| json!({}));
        // At most what is left of the run's time; the run's cancel kills the skill.
        let options = RunOptions {
            timeout: Some(ctx.command_timeout(Some(super::MAX_TIMEOUT_SECS as f64))),
            cancel: Some(ctx.cancel_token().clone()),
        };
        match run_skill_with(
            ctx.workspace(),
            &self.0.registry,
            id,
            &params,
            self.0.key.as_ref(),
            &options,
        ) {
            Ok(r) => {
                let text = serde_json::to_string_pretty(&r.to_json()).unwrap_or_default();
                Ok(if r.ok() {
                    ToolOutput::ok(text)
                } else {
                    ToolOutput::error(text)
                })
            }
            Err(e @ Error::Cancelled(_)) => Err(e),
            Err(e) => Ok(failure("run", &e)),
        }
    }
}

/// `skill_list` and `skill_execute` over `registry`, opening credentials with `key`.
pub fn skill_tools(registry: Registry, key: Option<CredentialKey>) -> Vec<Arc<dyn Tool>> {
    let shared = Arc::new(SkillTools { registry, key });
    vec![
        Arc::new(SkillListTool(shared.clone())),
        Arc::new(SkillExecuteTool(shared)),
    ]
}
