//! The method table: every method's name, parameters and result (JSON Schema) and handler.
//! The dispatcher finds methods here and checks parameters against the schema built from
//! the same entries that [`openrpc`] publishes.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::{code, Ctx, RpcError, RpcResult, API_VERSION};
use crate::agent::hooks::{HookDecision, HookEvent};
use crate::creds::{CredentialKey, SecretString};
use crate::error::Error;
use crate::memory::{Memory, SearchMode, SearchOptions};
use crate::platform::{LimitsConfig, WorkspaceConfig};
use crate::util::encoding::{base64_decode, base64_encode};

type Handler = fn(&Ctx<'_>, &Map<String, Value>) -> RpcResult;

/// One parameter (an OpenRPC content descriptor).
#[derive(Debug, Clone)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// Whether it must be given (see also [`Method::one_of`]).
    pub required: bool,
    /// JSON Schema of its value.
    pub schema: Value,
    /// What it is.
    pub description: &'static str,
}

/// One method.
pub struct Method {
    /// Dotted name.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    /// Parameters, by name.
    pub params: Vec<Param>,
    /// Groups of alternative names of which at least one must be given (`id` or
    /// `workspace`).
    pub one_of: Vec<Vec<&'static str>>,
    /// JSON Schema of the result.
    pub result: Value,
    /// May be sent as a notification (no id): only `$/cancel`.
    pub notification: bool,
    /// Answered on the reading thread (quick, never blocks).
    pub inline: bool,
    /// Parameters hold secrets: schema errors do not quote values.
    pub sensitive: bool,
    handler: Handler,
    schema: Value,
}

impl std::fmt::Debug for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Method").field("name", &self.name).finish()
    }
}

impl Method {
    /// The JSON Schema of the params object (what the dispatcher checks).
    pub fn params_schema(&self) -> &Value {
        &self.schema
    }

    /// Checks `params` against the schema, then runs the handler.
    pub fn call(&self, ctx: &Ctx<'_>, params: &Map<String, Value>) -> RpcResult {
        let v = Value::Object(params.clone());
        if let Err(why) = crate::util::schema::validate(&self.schema, &v) {
            return Err(if self.sensitive {
                RpcError::invalid_params(format!(
                    "invalid params for {}: they do not match its schema (see rpc.describe)",
                    self.name
                ))
            } else {
                RpcError::invalid_params(format!(
                    "invalid params for {}: {}",
                    self.name,
                    why.replace("the arguments", "params")
                ))
            });
        }
        (self.handler)(ctx, params)
    }
}

fn param(name: &'static str, required: bool, schema: Value, description: &'static str) -> Param {
    Param {
        name,
        required,
        schema,
        description,
    }
}

struct Def {
    name: &'static str,
    summary: &'static str,
    params: Vec<Param>,
    one_of: Vec<Vec<&'static str>>,
    result: Value,
    handler: Handler,
    notification: bool,
    inline: bool,
    sensitive: bool,
}

fn def(
    name: &'static str,
    summary: &'static str,
    params: Vec<Param>,
    result: Value,
    handler: Handler,
) -> Def {
    Def {
        name,
        summary,
        params,
        one_of: Vec::new(),
        result,
        handler,
        notification: false,
        inline: false,
        sensitive: false,
    }
}

impl Def {
    fn one_of(mut self, names: &[&'static str]) -> Def {
        self.one_of.push(names.to_vec());
        self
    }
    fn inline(mut self) -> Def {
        self.inline = true;
        self
    }
    fn build(self) -> Method {
        let mut props = Map::new();
        let mut required = Vec::new();
        for p in &self.params {
            props.insert(p.name.into(), p.schema.clone());
            if p.required {
                required.push(json!(p.name));
            }
        }
        let mut schema = json!({
            "type": "object",
            "properties": props,
            "required": required,
            "additionalProperties": false,
        });
        if !self.one_of.is_empty() {
            // Each group: anyOf over "this name is present".
            let all: Vec<Value> = self
                .one_of
                .iter()
                .map(|g| json!({"anyOf": g.iter().map(|n| json!({"required": [n]})).collect::<Vec<_>>()}))
                .collect();
            schema["allOf"] = Value::Array(all);
        }
        Method {
            name: self.name,
            summary: self.summary,
            params: self.params,
            one_of: self.one_of,
            result: self.result,
            notification: self.notification,
            inline: self.inline,
            sensitive: self.sensitive,
            handler: self.handler,
            schema,
        }
    }
}

// ------------------------------------------------------------------------------------
// Schemas

fn s_str() -> Value {
    json!({"type": "string"})
}
fn s_ws() -> Value {
    json!({"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$", "maxLength": 63})
}
fn s_strs() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}
/// Longest `timeout_secs` of `exec` and `run` (30 days): larger values are refused as
/// invalid params instead of overflowing a deadline.
pub const MAX_TIMEOUT_SECS: u64 = 30 * 86_400;
/// Most `max_steps` of one `run`.
pub const MAX_RUN_STEPS: u64 = 100_000;
/// Most `retries` of one model in a `run`.
pub const MAX_RUN_RETRIES: u64 = 100;

fn s_timeout() -> Value {
    json!({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT_SECS})
}
fn s_uint() -> Value {
    json!({"type": "integer", "minimum": 0})
}
fn s_bool() -> Value {
    json!({"type": "boolean"})
}
fn s_obj() -> Value {
    json!({"type": "object"})
}
fn s_sid() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$", "maxLength": 64})
}
fn s_workspace_obj() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "created": {"type": "integer"},
            "host_uid": {"type": ["integer", "null"]}, "path": {"type": "string"},
            "files": {"type": "string"}, "model": {"type": ["string", "null"]},
            "fallbacks": s_strs(), "base_url": {"type": ["string", "null"]},
            "skills": s_strs(), "limits": {"type": "object"},
        },
        "required": ["id", "limits"],
    })
}
fn s_limits() -> Value {
    json!({
        "type": "object",
        "properties": {
            "memory_bytes": s_uint(), "pids": s_uint(), "cpu_weight": s_uint(),
            "cpu_percent": s_uint(), "tmp_bytes": s_uint(), "io_weight": s_uint(),
            "io_max": {"type": "string"},
        },
        "additionalProperties": false,
    })
}
/// A workspace's own limits: those of a run plus the disk and inode limits (its own
/// filesystem, see `crate::disk`).
fn s_ws_limits() -> Value {
    let mut v = s_limits();
    v["properties"]["disk_bytes"] = s_uint();
    v["properties"]["inodes"] = s_uint();
    v
}

fn ws_params() -> Vec<Param> {
    vec![
        param("workspace", false, s_ws(), "workspace id"),
        param("id", false, s_ws(), "workspace id (same as `workspace`)"),
    ]
}

fn with(mut a: Vec<Param>, b: Vec<Param>) -> Vec<Param> {
    a.extend(b);
    a
}

/// Every method, in the order of the OpenRPC document.
pub fn table() -> &'static [Method] {
    static T: OnceLock<Vec<Method>> = OnceLock::new();
    T.get_or_init(build_table)
}

/// The method named `name`.
pub fn find(name: &str) -> Option<&'static Method> {
    table().iter().find(|m| m.name == name)
}

fn build_table() -> Vec<Method> {
    let ws_only = ws_params;
    let cancel_params = || {
        vec![param(
            "id",
            true,
            json!({"type": ["string", "integer", "number", "null"]}),
            "the id of the request to cancel",
        )]
    };
    let defs = vec![
        def(
            "rpc.describe",
            "This API as an OpenRPC 1.2.6 document (same as `bulkhead serve --describe`).",
            vec![],
            json!({"type": "object", "required": ["openrpc", "info", "methods"]}),
            h_describe,
        )
        .inline(),
        def(
            "run.cancel",
            "Cancel an in-flight request (any method); it then answers with error -32800.",
            cancel_params(),
            json!({"type": "object", "properties": {"cancelled": s_bool()}, "required": ["cancelled"]}),
            h_cancel,
        )
        .inline(),
        Def {
            notification: true,
            ..def(
                "$/cancel",
                "Notification: cancel an in-flight request (as run.cancel, without an answer).",
                cancel_params(),
                json!({"type": ["object", "null"]}),
                h_cancel,
            )
            .inline()
        },
        // Workspaces
        def(
            "workspace.create",
            "Create a workspace.",
            with(
                ws_only(),
                vec![
                    param("model", false, s_str(), "primary model, provider/model"),
                    param("fallbacks", false, s_strs(), "fallback models, in order"),
                    param("base_url", false, s_str(), "base URL of the model server"),
                    param("skills", false, s_strs(), "skills to enable"),
                    param("limits", false, s_ws_limits(), "sandbox limits (disk_bytes: its own filesystem of that size; needs root)"),
                ],
            ),
            s_workspace_obj(),
            h_ws_create,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.set",
            "Change a workspace's limits (the ones given). A new disk_bytes or inodes copies files/ into a new filesystem of that size: refused while a sandbox of the workspace runs or when the files do not fit.",
            with(
                ws_only(),
                vec![param("limits", true, s_ws_limits(), "the limits to change")],
            ),
            s_workspace_obj(),
            h_ws_set,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.list",
            "List workspaces.",
            vec![],
            json!({"type": "array", "items": s_workspace_obj()}),
            h_ws_list,
        ),
        def(
            "workspace.show",
            "Show one workspace.",
            ws_only(),
            s_workspace_obj(),
            h_ws_show,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.delete",
            "Delete a workspace: stop its sandboxes, wipe its files, sessions and credentials.",
            ws_only(),
            json!({"type": "object", "properties": {"deleted": s_str()}, "required": ["deleted"]}),
            h_ws_delete,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.show",
            "A workspace's egress policy, the operator's rules and totals of the audit log.",
            ws_only(),
            json!({"type": "object", "required": ["workspace", "allow", "enabled"]}),
            h_net_show,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.allow",
            "Add host patterns to a workspace's egress allowlist.",
            with(
                ws_only(),
                vec![param(
                    "patterns",
                    true,
                    json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
                    "host, *.domain or IP, optional :port (no port: 80 and 443)",
                )],
            ),
            json!({"type": "object", "required": ["workspace", "added", "already_allowed", "allow"]}),
            h_net_allow,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.deny",
            "Remove patterns from the allowlist; `ok` is false when something named stays allowed by another pattern (`still_allowed_by`).",
            with(
                ws_only(),
                vec![param(
                    "patterns",
                    true,
                    json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
                    "patterns, written as they were allowed",
                )],
            ),
            json!({"type": "object", "required": ["workspace", "removed", "not_present", "still_allowed_by", "allow", "ok"]}),
            h_net_deny,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.none",
            "No network: empty the allowlist.",
            ws_only(),
            json!({"type": "object", "required": ["workspace", "network", "removed"]}),
            h_net_none,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.limits",
            "Set the egress caps: connections open at once (a number or \"default\"), bandwidth per direction (bytes per second, a size like \"10M\", or \"unlimited\").",
            with(
                ws_only(),
                vec![
                    param("max_connections", false, json!({"type": ["integer", "string"]}), "1-4096 or \"default\""),
                    param("bandwidth", false, json!({"type": ["integer", "string"]}), "bytes per second, K/M/G suffixes, or \"unlimited\""),
                ],
            ),
            json!({"type": "object", "required": ["workspace", "max_connections", "bandwidth_bytes_per_sec"]}),
            h_net_limits,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.net.log",
            "The egress audit log (one record per connection), newest last.",
            with(
                ws_only(),
                vec![param("limit", false, json!({"type": "integer", "minimum": 1, "maximum": 100000}), "most records, the newest (default 50)")],
            ),
            json!({"type": "array", "items": {"type": "object"}}),
            h_net_log,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.hook.list",
            "A workspace's lifecycle hook executables.",
            ws_only(),
            json!({"type": "object", "required": ["workspace", "hooks"]}),
            h_hook_list,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.hook.add",
            "Add a lifecycle hook executable (the same event and path again updates it).",
            with(
                ws_only(),
                vec![
                    param("event", true, json!({"enum": ["session_start", "before_agent_start", "before_tool_call", "after_tool_call", "after_agent_end", "session_end", "on_error"]}), "the event"),
                    param("path", true, s_str(), "absolute path of an executable regular file on the host"),
                    param("timeout_secs", false, json!({"type": "integer", "minimum": 1, "maximum": 300}), "timeout (default 5)"),
                    param("priority", false, json!({"type": "integer"}), "lower runs first (default 0)"),
                ],
            ),
            json!({"type": "object", "required": ["workspace", "added", "replaced"]}),
            h_hook_add,
        )
        .one_of(&["workspace", "id"]),
        def(
            "workspace.hook.rm",
            "Remove a lifecycle hook executable.",
            with(
                ws_only(),
                vec![
                    param("event", true, s_str(), "the event"),
                    param("path", true, s_str(), "the path, as added"),
                ],
            ),
            json!({"type": "object", "required": ["workspace", "removed"]}),
            h_hook_rm,
        )
        .one_of(&["workspace", "id"]),
        def(
            "doctor",
            "Which isolation layers this host gives (as `bulkhead --json doctor`).",
            vec![],
            json!({"type": "object", "required": ["ok", "checks"]}),
            h_doctor,
        ),
        // Exec
        def(
            "exec",
            "Run a program in a sandbox of the workspace (cwd /workspace); returns its status and output.",
            with(
                ws_only(),
                vec![
                    param("argv", true, json!({"type": "array", "items": {"type": "string"}, "minItems": 1}), "program and arguments"),
                    param("stdin", false, s_str(), "text fed to the program's stdin"),
                    param("stdin_base64", false, s_str(), "bytes fed to stdin, base64 (instead of `stdin`)"),
                    param("timeout_secs", false, s_timeout(), "kill it (and everything it started) after this many seconds (at most 30 days): exit_code 124"),
                    param("env", false, json!({"anyOf": [{"type": "object", "additionalProperties": {"type": "string"}}, {"type": "array", "items": {"type": "string"}}]}), "environment additions: {KEY: VALUE} or [\"KEY=VALUE\"]"),
                    param("limits", false, s_limits(), "sandbox limits on top of the workspace's"),
                ],
            ),
            json!({
                "type": "object",
                "properties": {
                    "exit_code": {"type": "integer"}, "stdout": s_str(), "stderr": s_str(),
                    "stdout_base64": s_str(), "stderr_base64": s_str(),
                    "timed_out": s_bool(), "oom_killed": s_bool(), "truncated": s_bool(),
                    "signal": {"type": ["integer", "null"]}, "duration_ms": s_uint(),
                },
                "required": ["exit_code", "stdout", "stderr"],
            }),
            h_exec,
        )
        .one_of(&["workspace", "id"]),
        // Agent
        def(
            "run",
            "Run the agent on a message (events arrive as run.event and hook.event notifications); returns the final result.",
            with(
                ws_only(),
                vec![
                    param("message", true, json!({"type": "string", "minLength": 1}), "the message to the agent"),
                    param("session", false, s_sid(), "session to continue (created if new)"),
                    param("model", false, s_str(), "primary model, provider/model"),
                    param("fallbacks", false, s_strs(), "fallback models, in order"),
                    param("base_url", false, s_str(), "base URL of the primary model's server"),
                    param("system", false, s_str(), "system prompt"),
                    param("max_steps", false, json!({"type": "integer", "minimum": 1, "maximum": MAX_RUN_STEPS}), "most model steps"),
                    param("retries", false, json!({"type": "integer", "minimum": 0, "maximum": MAX_RUN_RETRIES}), "retries of a failing model before falling back"),
                    param("timeout_secs", false, s_timeout(), "stop the run after this many seconds, at most 30 days (error -32007)"),
                    param("stream", false, s_bool(), "stream replies (default true)"),
                    param("wait", false, s_bool(), "wait for a session in use instead of failing (-32005)"),
                    param("context_window", false, s_uint(), "context window (tokens) to assume"),
                ],
            ),
            json!({
                "type": "object",
                "properties": {
                    "text": s_str(), "response": s_str(), "session": s_str(), "session_id": s_str(), "run_id": s_str(),
                    "outcome": {"enum": ["completed", "max_steps"]},
                    "usage": s_obj(), "session_usage": s_obj(), "attempts": {"type": "array"},
                    "tool_calls": {"type": "array"}, "steps": s_uint(), "model": s_str(),
                },
                "required": ["text", "session", "usage", "outcome"],
            }),
            h_run,
        )
        .one_of(&["workspace", "id"]),
        // Sessions
        def(
            "session.list",
            "List a workspace's sessions.",
            ws_only(),
            json!({"type": "array", "items": {"type": "object", "required": ["sid", "events"]}}),
            h_session_list,
        )
        .one_of(&["workspace", "id"]),
        def(
            "session.show",
            "A session's transcript events.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("session", false, s_sid(), "session id"),
                param("sid", false, s_sid(), "session id (same as `session`)"),
            ],
            json!({"type": "object", "required": ["workspace", "session", "events"]}),
            h_session_show,
        )
        .one_of(&["session", "sid"]),
        def(
            "session.rm",
            "Delete a session (refused while a run holds it: -32005).",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("session", false, s_sid(), "session id"),
                param("sid", false, s_sid(), "session id (same as `session`)"),
            ],
            json!({"type": "object", "required": ["workspace", "removed"]}),
            h_session_rm,
        )
        .one_of(&["session", "sid"]),
        // Credentials
        Def {
            sensitive: true,
            ..def(
                "cred.set",
                "Store a named credential set (values never come back).",
                vec![
                    param("workspace", true, s_ws(), "workspace id"),
                    param("name", true, s_str(), "set name: [A-Za-z0-9_.-]{1,64}"),
                    param(
                        "pairs",
                        false,
                        json!({"type": "array", "items": {"type": "string"}}),
                        "[\"KEY=VALUE\", …] (as the CLI's arguments; instead of or beside `values`)",
                    ),
                    param(
                        "values",
                        false,
                        json!({"type": "object", "additionalProperties": {"type": "string"}, "minProperties": 1}),
                        "KEY: VALUE",
                    ),
                ],
                json!({"type": "object", "required": ["workspace", "name", "keys"]}),
                h_cred_set,
            )
            .one_of(&["values", "pairs"])
        },
        def(
            "cred.list",
            "A workspace's credential sets and their keys (never values).",
            vec![param("workspace", true, s_ws(), "workspace id")],
            json!({"type": "array", "items": {"type": "object", "required": ["name", "keys"]}}),
            h_cred_list,
        ),
        def(
            "cred.rm",
            "Remove a credential set.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("name", true, s_str(), "set name"),
            ],
            json!({"type": "object", "required": ["workspace", "removed"]}),
            h_cred_rm,
        ),
        // Memory
        memory_store("memory.store", "Store text (chunked) in a workspace's memory."),
        memory_store("memory.add", "Same as memory.store."),
        def(
            "memory.search",
            "Search a workspace's memory.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("query", true, s_str(), "query"),
                param("limit", false, json!({"type": "integer", "minimum": 1, "maximum": 1000}), "most results (default 10)"),
                param("mode", false, json!({"enum": ["keyword", "vector", "hybrid"]}), "ranking (default hybrid)"),
                param("decay", false, s_bool(), "favour recent memories"),
                param("mmr", false, s_bool(), "diversify results"),
                param("embedder", false, s_str(), "local, none, hash or provider/model"),
            ],
            json!({"type": "array", "items": {"type": "object"}}),
            h_memory_search,
        ),
        memory_get("memory.get", "A chunk of a workspace's memory."),
        memory_get("memory.show", "Same as memory.get."),
        def(
            "memory.rm",
            "Delete a chunk.",
            memory_chunk_params(),
            json!({"type": "object", "required": ["removed"]}),
            h_memory_rm,
        )
        .one_of(&["id", "chunk_id"]),
        def(
            "memory.stats",
            "Totals of a workspace's memory: chunks, sources, vectors per model.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("embedder", false, s_str(), "local, none, hash or provider/model"),
            ],
            s_obj(),
            h_memory_stats,
        ),
        def(
            "memory.reembed",
            "Embed every chunk that has no vector of the chosen embedder.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("embedder", false, s_str(), "local, none, hash or provider/model"),
            ],
            json!({"type": "object", "required": ["embedded"]}),
            h_memory_reembed,
        ),
        // Skills
        def(
            "skill.list",
            "The registry's skills (ok or invalid with the reason); with `workspace`, whether each is enabled there.",
            vec![param("workspace", false, s_ws(), "workspace id")],
            json!({"type": "array", "items": {"type": "object", "required": ["id", "status"]}}),
            h_skill_list,
        ),
        def(
            "skill.show",
            "One skill: manifest, entry point, usage.",
            vec![
                param("skill", false, s_ws(), "skill id"),
                param("id", false, s_ws(), "skill id (same as `skill`)"),
            ],
            json!({"type": "object", "required": ["id", "usage"]}),
            h_skill_show,
        )
        .one_of(&["skill", "id"]),
        skill_toggle("skill.enable", "Enable a skill for a workspace.", h_skill_enable),
        skill_toggle("skill.disable", "Disable a skill for a workspace.", h_skill_disable),
        def(
            "skill.run",
            "Run an enabled skill for a workspace in a sandbox of its own.",
            vec![
                param("workspace", true, s_ws(), "workspace id"),
                param("skill", false, s_ws(), "skill id"),
                param("id", false, s_ws(), "skill id (same as `skill`)"),
                param("params", false, s_obj(), "the skill's parameters (default {})"),
            ],
            json!({"type": "object", "required": ["skill", "ok", "exit_code", "output"]}),
            h_skill_run,
        )
        .one_of(&["skill", "id"]),
    ];
    defs.into_iter().map(Def::build).collect()
}

fn memory_store(name: &'static str, summary: &'static str) -> Def {
    def(
        name,
        summary,
        vec![
            param("workspace", true, s_ws(), "workspace id"),
            param("content", false, s_str(), "the text"),
            param("text", false, s_str(), "the text (same as `content`)"),
            param(
                "source",
                false,
                s_str(),
                "source recorded with it (default rpc)",
            ),
            param(
                "embedder",
                false,
                s_str(),
                "local, none, hash or provider/model",
            ),
        ],
        json!({"type": "object", "required": ["ids"]}),
        h_memory_store,
    )
    .one_of(&["content", "text"])
}

fn memory_chunk_params() -> Vec<Param> {
    vec![
        param("workspace", true, s_ws(), "workspace id"),
        param("id", false, json!({"type": "integer"}), "chunk id"),
        param(
            "chunk_id",
            false,
            json!({"type": "integer"}),
            "chunk id (same as `id`)",
        ),
    ]
}

fn memory_get(name: &'static str, summary: &'static str) -> Def {
    def(
        name,
        summary,
        memory_chunk_params(),
        json!({"type": "object", "required": ["id", "text"]}),
        h_memory_get,
    )
    .one_of(&["id", "chunk_id"])
}

fn skill_toggle(name: &'static str, summary: &'static str, h: Handler) -> Def {
    def(
        name,
        summary,
        vec![
            param("workspace", true, s_ws(), "workspace id"),
            param("skill", false, s_ws(), "skill id"),
            param("id", false, s_ws(), "skill id (same as `skill`)"),
        ],
        json!({"type": "object", "required": ["workspace", "skill", "enabled", "changed"]}),
        h,
    )
    .one_of(&["skill", "id"])
}

/// The notifications the server sends.
fn notifications() -> Value {
    json!([
        {
            "name": "run.event",
            "summary": "An event of a `run` in flight: `event` is the JSON of the CLI's --json event stream (a `type` field: run_start, model_attempt, text_delta, assistant_message, tool_call, tool_result, retry, key_rotation, fallback, context_pruned, memory_flush, compaction, warning, hook, subagent_start, subagent_end, run_end).",
            "params": {"type": "object", "properties": {"request_id": {}, "event": {"type": "object", "required": ["type"]}}, "required": ["request_id", "event"]},
        },
        {
            "name": "hook.event",
            "summary": "A lifecycle hook event of a `run` in flight (observe-only): session_start, before_agent_start, before_tool_call, after_tool_call, after_agent_end, session_end, on_error; `payload` is what a hook executable gets on stdin.",
            "params": {"type": "object", "properties": {"request_id": {}, "event": {"type": "string"}, "payload": {"type": "object"}}, "required": ["request_id", "event", "payload"]},
        },
    ])
}

/// The OpenRPC 1.2.6 document, from [`table`].
pub fn openrpc() -> Value {
    let methods: Vec<Value> = table()
        .iter()
        .map(|m| {
            let params: Vec<Value> = m
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "required": p.required,
                        "description": p.description,
                        "schema": p.schema,
                    })
                })
                .collect();
            let mut v = json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": {"name": "result", "schema": m.result},
            });
            if !m.one_of.is_empty() {
                v["x-one-of"] = json!(m.one_of);
            }
            if m.notification {
                v["x-notification"] = json!(true);
            }
            v
        })
        .collect();
    let errors: Vec<Value> = code::TABLE
        .iter()
        .map(|(c, msg, exit)| json!({"code": c, "message": msg, "exit_code": exit}))
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "bulkhead",
            "description": "JSON-RPC 2.0 over stdio (`bulkhead serve --stdio`): one JSON object per line each way; params by name.",
            "version": API_VERSION,
            "x-crate-version": env!("CARGO_PKG_VERSION"),
        },
        "methods": methods,
        "x-notifications": notifications(),
        "x-errors": errors,
    })
}

// ------------------------------------------------------------------------------------
// Param access (the schema has been checked: types are right, required ones present)

fn get_str<'a>(p: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    p.get(k).and_then(Value::as_str)
}

fn first_str(p: &Map<String, Value>, keys: &[&str]) -> Result<String, RpcError> {
    keys.iter()
        .find_map(|k| get_str(p, k))
        .map(str::to_string)
        .ok_or_else(|| RpcError::invalid_params(format!("missing param {}", keys.join(" or "))))
}

fn ws_id(p: &Map<String, Value>) -> Result<String, RpcError> {
    first_str(p, &["workspace", "id"])
}

fn strings(p: &Map<String, Value>, k: &str) -> Vec<String> {
    p.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn opt_string(p: &Map<String, Value>, k: &str) -> Option<String> {
    get_str(p, k).map(str::to_string)
}

fn opt_u64(p: &Map<String, Value>, k: &str) -> Option<u64> {
    p.get(k)
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))
}

fn flag(p: &Map<String, Value>, k: &str) -> Option<bool> {
    p.get(k).and_then(Value::as_bool)
}

fn limits(p: &Map<String, Value>) -> Result<LimitsConfig, RpcError> {
    match p.get("limits") {
        None => Ok(LimitsConfig::default()),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| RpcError::invalid_params(format!("limits: {e}"))),
    }
}

fn to_json(v: impl serde::Serialize) -> RpcResult {
    serde_json::to_value(v).map_err(|e| {
        RpcError::new(
            code::INTERNAL_ERROR,
            format!("result does not serialize: {e}"),
        )
    })
}

fn key(ctx: &Ctx<'_>) -> Result<CredentialKey, Error> {
    CredentialKey::resolve(ctx.options.credential_key_file.as_deref())
}

// ------------------------------------------------------------------------------------
// Handlers

fn h_describe(_: &Ctx<'_>, _: &Map<String, Value>) -> RpcResult {
    Ok(openrpc())
}

fn h_cancel(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = p.get("id").cloned().unwrap_or(Value::Null);
    Ok(json!({"cancelled": ctx.cancel_request(&id)}))
}

fn h_ws_create(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = ws_id(p)?;
    let config = WorkspaceConfig {
        model: opt_string(p, "model"),
        fallbacks: strings(p, "fallbacks"),
        base_url: opt_string(p, "base_url"),
        skills: strings(p, "skills"),
        limits: limits(p)?,
        network: Default::default(),
        hooks: Vec::new(),
    };
    let w = ctx.platform.create_workspace(&id, config)?;
    Ok(w.to_json())
}

fn h_ws_set(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    w.set_limits(&limits(p)?)?;
    Ok(w.to_json())
}

fn h_ws_list(ctx: &Ctx<'_>, _: &Map<String, Value>) -> RpcResult {
    let all = ctx.platform.list_workspaces()?;
    Ok(Value::Array(
        all.iter()
            .map(crate::platform::Workspace::to_json)
            .collect(),
    ))
}

fn h_ws_show(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    Ok(ctx.platform.workspace(&ws_id(p)?)?.to_json())
}

fn h_ws_delete(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = ws_id(p)?;
    ctx.platform.delete_workspace(&id)?;
    Ok(json!({"deleted": id}))
}

fn h_net_show(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let w = ctx.platform.workspace(&ws_id(p)?)?;
    Ok(w.net_json(ctx.platform)?)
}

fn h_net_allow(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    Ok(w.net_allow(ctx.platform, &strings(p, "patterns"))?)
}

fn h_net_deny(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    let mut v = w.net_deny(&strings(p, "patterns"))?;
    v["ok"] = json!(v["still_allowed_by"]
        .as_object()
        .map_or(true, |m| m.is_empty()));
    Ok(v)
}

fn h_net_none(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    let removed = w.update_network(|n| Ok(std::mem::take(&mut n.allow)))?;
    Ok(json!({"workspace": w.id(), "network": "none", "removed": removed}))
}

fn size_arg(p: &Map<String, Value>, k: &str) -> Option<String> {
    p.get(k).map(|v| match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    })
}

fn h_net_limits(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    let (max, bw) = (size_arg(p, "max_connections"), size_arg(p, "bandwidth"));
    Ok(w.net_limits(ctx.platform, max.as_deref(), bw.as_deref())?)
}

fn h_net_log(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let w = ctx.platform.workspace(&ws_id(p)?)?;
    let limit = usize::try_from(opt_u64(p, "limit").unwrap_or(50)).unwrap_or(usize::MAX);
    to_json(crate::net::proxy::read_audit_log(
        &w.net_audit_log(),
        Some(limit),
    )?)
}

fn h_hook_list(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let w = ctx.platform.workspace(&ws_id(p)?)?;
    let mut hooks = w.hooks().to_vec();
    hooks.sort_by_key(|h| (h.event, h.priority));
    Ok(json!({"workspace": w.id(), "hooks": hooks}))
}

fn h_hook_add(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    use crate::agent::hooks::{HookEventKind, HookSpec};
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    let event: HookEventKind = first_str(p, &["event"])?.parse()?;
    let spec = HookSpec {
        event,
        path: first_str(p, &["path"])?.into(),
        timeout_secs: opt_u64(p, "timeout_secs"),
        priority: p.get("priority").and_then(Value::as_i64).map_or(0, |n| {
            n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        }),
    };
    let replaced = w.add_hook(spec.clone())?;
    Ok(json!({"workspace": w.id(), "added": spec, "replaced": replaced}))
}

fn h_hook_rm(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    use crate::agent::hooks::HookEventKind;
    let mut w = ctx.platform.workspace(&ws_id(p)?)?;
    let event: HookEventKind = first_str(p, &["event"])?.parse()?;
    let path = first_str(p, &["path"])?;
    w.remove_hook(event, std::path::Path::new(&path))?;
    Ok(json!({"workspace": w.id(), "removed": {"event": event, "path": path}}))
}

fn h_doctor(ctx: &Ctx<'_>, _: &Map<String, Value>) -> RpcResult {
    to_json(crate::doctor::run(ctx.platform))
}

fn h_memory_reembed(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    Ok(json!({"embedded": memory(ctx, p, true)?.reembed(64)?}))
}

/// Most output kept per `exec` (stdout and stderr together).
const EXEC_OUTPUT_CAP: u64 = 4 << 20;

fn h_exec(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    use bulkhead_shared::{Command as WireCommand, ExecRequest, ExitKind, Stream};
    let ws = ctx.platform.workspace(&ws_id(p)?)?;
    let argv = strings(p, "argv");
    let mut env = Vec::new();
    let pairs: Vec<(String, String)> = match p.get("env") {
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for kv in a.iter().filter_map(Value::as_str) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| RpcError::invalid_params("env: expected KEY=VALUE strings"))?;
                out.push((k.to_string(), v.to_string()));
            }
            out
        }
        _ => Vec::new(),
    };
    for (k, v) in pairs {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(RpcError::invalid_params(format!("env: invalid name {k:?}")));
        }
        env.push((k, v));
    }
    let stdin = match (get_str(p, "stdin"), get_str(p, "stdin_base64")) {
        (Some(_), Some(_)) => {
            return Err(RpcError::invalid_params(
                "give stdin or stdin_base64, not both",
            ))
        }
        (Some(s), None) => s.as_bytes().to_vec(),
        (None, Some(b)) => base64_decode(b)
            .ok_or_else(|| RpcError::invalid_params("stdin_base64 is not valid base64"))?,
        (None, None) => Vec::new(),
    };
    let max_stdin = bulkhead_shared::MAX_FRAME_BYTES / 2;
    if stdin.len() > max_stdin {
        return Err(RpcError::invalid_params(format!(
            "stdin is larger than {max_stdin} bytes"
        )));
    }
    let timeout_ms = match p.get("timeout_secs").and_then(Value::as_f64) {
        Some(t) if t.is_finite() && t > 0.0 && t <= MAX_TIMEOUT_SECS as f64 => {
            (t * 1000.0).ceil() as u64
        }
        Some(_) => {
            return Err(RpcError::invalid_params(format!(
            "timeout_secs must be a number of seconds more than 0 and at most {MAX_TIMEOUT_SECS}"
        )))
        }
        None => 0,
    };
    let extra = limits(p)?;
    let req = ExecRequest {
        command: WireCommand::Argv(argv),
        cwd: "/workspace".into(),
        env,
        stdin,
        timeout_ms,
        output_cap: EXEC_OUTPUT_CAP,
        kill_stragglers: true,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let outcome = exec_cancellable(&ws, req, &extra, ctx.cancel, &mut |s, data| {
        let buf = match s {
            Stream::Stdout => &mut out,
            Stream::Stderr => &mut err,
        };
        buf.extend_from_slice(data);
    });
    if ctx.cancel.is_cancelled() {
        return Err(RpcError::cancelled());
    }
    let (exit_code, signal, timed_out, oom, truncated, duration_ms) = match outcome {
        Ok(o) => {
            let r = &o.result;
            let (code, sig) = match r.exit {
                _ if r.timed_out => (crate::error::exit::EXEC_TIMEOUT, None),
                ExitKind::Code(c) => (c, None),
                ExitKind::Signal(s) if o.oom_killed => (crate::error::exit::EXEC_OOM, Some(s)),
                ExitKind::Signal(s) => (r.exit.shell_status(), Some(s)),
            };
            (
                code,
                sig,
                r.timed_out,
                o.oom_killed,
                r.truncated,
                r.duration_us / 1000,
            )
        }
        // Not found / not executable: the CLI's status (127 / 126), the reason on stderr.
        Err(e @ Error::Tool(_)) => {
            err.extend_from_slice(format!("bulkhead: {e}\n").as_bytes());
            (e.exit_code(), None, false, false, false, 0)
        }
        Err(e) => return Err(e.into()),
    };
    Ok(json!({
        "exit_code": exit_code,
        "signal": signal,
        "timed_out": timed_out,
        "oom_killed": oom,
        "truncated": truncated,
        "duration_ms": duration_ms,
        "stdout": String::from_utf8_lossy(&out),
        "stderr": String::from_utf8_lossy(&err),
        "stdout_base64": base64_encode(&out),
        "stderr_base64": base64_encode(&err),
    }))
}

/// [`Workspace::exec`](crate::platform::Workspace::exec), cancellable: cancelling `cancel`
/// sends SIGTERM to the sandbox's launcher, which kills every process of the command.
fn exec_cancellable(
    ws: &crate::platform::Workspace,
    req: bulkhead_shared::ExecRequest,
    extra: &LimitsConfig,
    cancel: &crate::agent::CancelToken,
    on_output: &mut dyn FnMut(bulkhead_shared::Stream, &[u8]),
) -> crate::error::Result<crate::sandbox::ExecOutcome> {
    let mut rs = ws.sandbox(extra)?;
    let pid = rs.get().info().launcher_pid;
    // The launcher is our unreaped child while the guard lives (it is dropped before the
    // sandbox is shut down and reaped), so the pid cannot have been reused.
    let guard = cancel.on_cancel(move || {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    });
    let outcome = rs.get().exec(req, on_output);
    drop(guard);
    let end = rs.shutdown();
    let mut outcome = outcome?;
    if let (Ok(end), bulkhead_shared::ExitKind::Signal(9)) = (&end, outcome.result.exit) {
        outcome.oom_killed |= end.oom_kills > 0;
    }
    Ok(outcome)
}

/// Name of the observe-only hook that forwards lifecycle events as `hook.event`.
const OBSERVER: &str = "bulkhead-rpc-observer";

fn h_run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    use crate::agent::cli::RunArgs;
    let ws = ctx.platform.workspace(&ws_id(p)?)?;
    let message = get_str(p, "message").unwrap_or_default().to_string();
    let args = RunArgs {
        id: ws.id().to_string(),
        message: message.clone(),
        session: opt_string(p, "session"),
        model: opt_string(p, "model"),
        fallbacks: strings(p, "fallbacks"),
        base_url: opt_string(p, "base_url"),
        system: opt_string(p, "system"),
        max_steps: opt_u64(p, "max_steps")
            .map(|n| usize::try_from(n.min(MAX_RUN_STEPS)).unwrap_or(usize::MAX))
            .unwrap_or(crate::agent::DEFAULT_MAX_STEPS),
        retries: opt_u64(p, "retries").map(|n| n.min(MAX_RUN_RETRIES) as u32),
        timeout: match p.get("timeout_secs").and_then(Value::as_f64) {
            Some(t) if t > MAX_TIMEOUT_SECS as f64 => {
                return Err(RpcError::invalid_params(format!(
                    "timeout_secs must be a number of seconds more than 0 and at most {MAX_TIMEOUT_SECS}"
                )))
            }
            t => t,
        },
        no_stream: !flag(p, "stream").unwrap_or(true),
        wait: flag(p, "wait").unwrap_or(false),
        context_window: opt_u64(p, "context_window").map(|n| n.min(u64::from(u32::MAX)) as u32),
    };
    let mut req = crate::agent::cli::request_from_args(
        &args,
        message,
        ctx.options.credential_key_file.as_deref(),
    )?;
    req.subagents = ws.platform_config()?.subagents;
    req.cancel = Some(ctx.cancel.clone());
    let (out, rid) = (ctx.out.clone(), ctx.request_id.clone());
    req.hooks.add(OBSERVER, i32::MAX, move |ev: &HookEvent| {
        out.notify(
            "hook.event",
            json!({"request_id": rid, "event": ev.event, "payload": ev}),
        );
        HookDecision::Allow
    });
    let (out, rid) = (ctx.out, ctx.request_id);
    let result = ws.run_with_events(req, &mut |e| {
        // The observer's own `allow` decisions are not news to the host.
        if matches!(e, crate::agent::RunEvent::Hook { hook, .. } if hook == OBSERVER) {
            return;
        }
        out.notify("run.event", json!({"request_id": rid, "event": e}));
    })?;
    let mut v = to_json(&result)?;
    v["text"] = json!(result.response);
    v["session_id"] = json!(result.session);
    Ok(v)
}

fn sid(p: &Map<String, Value>) -> Result<String, RpcError> {
    first_str(p, &["session", "sid"])
}

fn h_session_list(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    to_json(ctx.platform.workspace(&ws_id(p)?)?.sessions().list()?)
}

fn h_session_show(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (ws, sid) = (ws_id(p)?, sid(p)?);
    crate::sessions::validate_session_id(&sid)?;
    let t = ctx.platform.workspace(&ws)?.sessions().read(&sid)?;
    Ok(json!({
        "workspace": ws,
        "session": sid,
        "events": to_json(&t.events)?,
        "skipped": t.skipped,
        "torn_tail": t.torn_tail,
        "size_bytes": t.size_bytes,
    }))
}

fn h_session_rm(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (ws, sid) = (ws_id(p)?, sid(p)?);
    crate::sessions::validate_session_id(&sid)?;
    ctx.platform.workspace(&ws)?.sessions().remove(&sid)?;
    Ok(json!({"removed": sid, "workspace": ws}))
}

fn h_cred_set(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (id, name) = (ws_id(p)?, first_str(p, &["name"])?);
    let ws = ctx.platform.workspace(&id)?;
    crate::creds::validate_name(&name)?;
    let mut values = BTreeMap::new();
    let mut add = |k: &str, v: &str| -> Result<(), RpcError> {
        if values
            .insert(k.to_string(), SecretString::from(v))
            .is_some()
        {
            return Err(RpcError::invalid_params(format!(
                "credential key {k:?} is given twice"
            )));
        }
        Ok(())
    };
    let pairs = p.get("pairs").and_then(Value::as_array);
    for (i, kv) in pairs.into_iter().flatten().enumerate() {
        // Never echo the pair: it may be a value typed without its key.
        let Some((k, v)) = kv.as_str().and_then(|s| s.split_once('=')) else {
            return Err(RpcError::invalid_params(format!(
                "pairs[{i}] is not KEY=VALUE (it has no '=')"
            )));
        };
        add(k, v)?;
    }
    let values_obj = p.get("values").and_then(Value::as_object);
    for (k, v) in values_obj.into_iter().flatten() {
        let Some(s) = v.as_str() else {
            return Err(RpcError::invalid_params(format!(
                "values.{k} must be a string"
            )));
        };
        add(k, s)?;
    }
    if values.is_empty() {
        return Err(RpcError::invalid_params(
            "no values: give values {\"KEY\": \"VALUE\"} or pairs [\"KEY=VALUE\"]",
        ));
    }
    let keys: Vec<String> = values.keys().cloned().collect();
    // Kept from log lines while this request handles them, then dropped: never registered
    // process-wide, where they would be redacted from other tenants' output.
    let _live =
        crate::logging::Redactor::new(values.values().map(SecretString::expose_secret)).live();
    ws.credentials(&key(ctx)?)?.set(&name, values)?;
    Ok(json!({"workspace": id, "name": name, "keys": keys}))
}

fn h_cred_list(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let ws = ctx.platform.workspace(&ws_id(p)?)?;
    let store = ws.credentials(&key(ctx)?)?;
    Ok(Value::Array(
        store
            .list()
            .iter()
            .map(|(n, k)| json!({"name": n, "keys": k}))
            .collect(),
    ))
}

fn h_cred_rm(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (id, name) = (ws_id(p)?, first_str(p, &["name"])?);
    let ws = ctx.platform.workspace(&id)?;
    crate::creds::validate_name(&name)?;
    if !ws.credentials(&key(ctx)?)?.remove(&name)? {
        return Err(Error::from(crate::error::CredError::NoSuchSet {
            workspace: id,
            name,
        })
        .into());
    }
    Ok(json!({"workspace": id, "removed": name}))
}

fn memory(ctx: &Ctx<'_>, p: &Map<String, Value>, embed: bool) -> Result<Memory, RpcError> {
    let ws = ctx.platform.workspace(&ws_id(p)?)?;
    let spec = if embed { get_str(p, "embedder") } else { None };
    if let Some(s) = spec {
        crate::memory::check_embedder_spec(s).map_err(RpcError::invalid_params)?;
    }
    Ok(match spec {
        Some(s) => Memory::open_with_spec(&ws, Some(s))?,
        None if embed => Memory::open_with_spec(&ws, None)?,
        None => Memory::open(&ws)?,
    })
}

fn h_memory_store(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let m = memory(ctx, p, true)?;
    let text = first_str(p, &["content", "text"])?;
    let source = get_str(p, "source").unwrap_or("rpc");
    to_json(m.store(&text, source)?)
}

fn h_memory_search(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let m = memory(ctx, p, true)?;
    let mode = match get_str(p, "mode").unwrap_or("hybrid") {
        "keyword" => SearchMode::Keyword,
        "vector" => SearchMode::Vector,
        _ => SearchMode::Hybrid,
    };
    let opts = SearchOptions {
        limit: usize::try_from(opt_u64(p, "limit").unwrap_or(10)).unwrap_or(usize::MAX),
        mode,
        decay: flag(p, "decay").unwrap_or(false),
        mmr: flag(p, "mmr").unwrap_or(false),
        ..SearchOptions::default()
    };
    to_json(m.search(first_str(p, &["query"])?.as_str(), &opts)?)
}

fn chunk_id(p: &Map<String, Value>) -> Result<i64, RpcError> {
    ["id", "chunk_id"]
        .iter()
        .find_map(|k| p.get(*k).and_then(Value::as_i64))
        .ok_or_else(|| RpcError::invalid_params("missing param id (an integer chunk id)"))
}

fn no_chunk(p: &Map<String, Value>, id: i64) -> RpcError {
    RpcError::not_found(format!(
        "no memory chunk {id} in workspace {:?}",
        get_str(p, "workspace").unwrap_or_default()
    ))
}

fn h_memory_get(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = chunk_id(p)?;
    match memory(ctx, p, false)?.get(id)? {
        Some(c) => to_json(c),
        None => Err(no_chunk(p, id)),
    }
}

fn h_memory_rm(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = chunk_id(p)?;
    if !memory(ctx, p, false)?.remove(id)? {
        return Err(no_chunk(p, id));
    }
    Ok(json!({"removed": id}))
}

fn h_memory_stats(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    to_json(memory(ctx, p, true)?.stats()?)
}

fn skill_id(p: &Map<String, Value>) -> Result<String, RpcError> {
    first_str(p, &["skill", "id"])
}

fn no_skill(id: &str) -> RpcError {
    RpcError::not_found(format!(
        "no such skill {id:?} (skills live in <state>/skills/<id>/)"
    ))
}

fn h_skill_list(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    Ok(Value::Array(crate::skills::cli::list_json(
        ctx.platform,
        get_str(p, "workspace"),
    )?))
}

fn h_skill_show(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let id = skill_id(p)?;
    crate::skills::cli::show_json(ctx.platform, &id)?.ok_or_else(|| no_skill(&id))
}

fn h_skill_enable(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (ws, id) = (ws_id(p)?, skill_id(p)?);
    crate::skills::cli::set_enabled(ctx.platform, &ws, &id, true)?.ok_or_else(|| no_skill(&id))
}

fn h_skill_disable(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    let (ws, id) = (ws_id(p)?, skill_id(p)?);
    crate::skills::cli::set_enabled(ctx.platform, &ws, &id, false)?.ok_or_else(|| no_skill(&id))
}

fn h_skill_run(ctx: &Ctx<'_>, p: &Map<String, Value>) -> RpcResult {
    use crate::skills::{run::RunOptions, run_skill_with, validate_skill_id, Registry};
    let (wsid, id) = (ws_id(p)?, skill_id(p)?);
    validate_skill_id(&id)?;
    let ws = ctx.platform.workspace(&wsid)?;
    let reg = Registry::of(ctx.platform);
    if !reg.exists(&id) {
        return Err(no_skill(&id));
    }
    let params = p.get("params").cloned().unwrap_or_else(|| json!({}));
    let skill = reg.load(&id)?;
    let key = if skill.credentials.is_empty() || !ws.credentials_path().exists() {
        None
    } else {
        Some(key(ctx)?)
    };
    let opts = RunOptions {
        timeout: None,
        cancel: Some(ctx.cancel.clone()),
    };
    let r = run_skill_with(&ws, &reg, &id, &params, key.as_ref(), &opts)?;
    Ok(r.to_json())
}
