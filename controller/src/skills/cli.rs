//! `bulkhead skill …`: list, show, enable, disable and run skills of the registry.

use std::io::Read;
use std::path::Path;

use clap::Subcommand;
use serde_json::{json, Value};

use super::{validate_skill_id, Registry, Skill};
use crate::creds::CredentialKey;
use crate::error::{exit, Error, Result};
use crate::platform::Platform;

/// `bulkhead skill …`.
#[derive(Debug, Subcommand)]
pub enum SkillCmd {
    /// List the registry's skills: status (ok, or invalid with the reason), the hosts each
    /// may reach, and (with --workspace) whether it is enabled there.
    #[command(
        after_help = "Examples:\n  bulkhead skill list\n  bulkhead --json skill list --workspace acme"
    )]
    List {
        /// Show enablement for this workspace.
        #[arg(long, value_name = "WS")]
        workspace: Option<String>,
    },
    /// Show one skill: manifest, entry point, usage.
    #[command(after_help = "Example:\n  bulkhead skill show github-issue")]
    Show {
        /// Skill id.
        id: String,
    },
    /// Enable a skill for a workspace.
    #[command(after_help = "Example:\n  bulkhead skill enable acme github-issue")]
    Enable {
        /// Workspace id.
        workspace: String,
        /// Skill id.
        id: String,
    },
    /// Disable a skill for a workspace.
    #[command(after_help = "Example:\n  bulkhead skill disable acme github-issue")]
    Disable {
        /// Workspace id.
        workspace: String,
        /// Skill id.
        id: String,
    },
    /// Run an enabled skill for a workspace in a sandbox of its own; prints its result.
    #[command(
        after_help = "Exit status: the skill's own (0 ok), 124 timed out, 125 sandbox setup failed,\n3 no such skill or workspace, 2 invalid parameters or the skill is not enabled.\n\nExamples:\n  bulkhead skill run acme github-issue --params '{\"title\": \"flaky test\"}'\n  echo '{}' | bulkhead --json skill run acme hello --params -"
    )]
    Run {
        /// Workspace id.
        workspace: String,
        /// Skill id.
        id: String,
        /// Parameters as a JSON object, or - to read them from standard input.
        #[arg(long, value_name = "JSON|-")]
        params: Option<String>,
    },
}

fn skill_json(s: &Skill) -> Value {
    json!({
        "id": s.id,
        "status": "ok",
        "name": s.name,
        "description": s.description,
        "credentials": s.credentials,
        "network": s.network,
        "timeout_secs": s.timeout.as_secs(),
        "workspace": s.workspace.as_str(),
        "limits": s.limits,
        "entry": s.entry.file,
        "input_schema": s.input_schema,
    })
}

fn print(line: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

fn not_found(id: &str, json: bool) -> Result<i32> {
    let msg = format!("no such skill {id:?} (skills live in <state>/skills/<id>/)");
    if json {
        eprintln!("{}", json!({"error": msg, "exit_code": exit::NOT_FOUND}));
    } else {
        eprintln!("bulkhead: {msg}");
    }
    Ok(exit::NOT_FOUND)
}

/// `skill list [--workspace WS]` as JSON rows (also the JSON-RPC result).
pub(crate) fn list_json(p: &Platform, workspace: Option<&str>) -> Result<Vec<Value>> {
    let reg = Registry::of(p);
    let ws = workspace.map(|w| p.workspace(w)).transpose()?;
    let enabled: Vec<String> = ws
        .as_ref()
        .map(|w| w.record().config.skills.clone())
        .unwrap_or_default();
    let mut rows = vec![];
    for l in reg.list()? {
        let mut v = match &l.skill {
            Ok(s) => skill_json(s),
            Err(why) => json!({"id": l.id, "status": "invalid", "reason": why}),
        };
        if ws.is_some() {
            v["enabled"] = json!(enabled.contains(&l.id));
        }
        rows.push(v);
    }
    Ok(rows)
}

/// `skill show ID` as JSON (with `usage`); `None` when there is no such skill.
pub(crate) fn show_json(p: &Platform, id: &str) -> Result<Option<Value>> {
    validate_skill_id(id)?;
    let reg = Registry::of(p);
    if !reg.exists(id) {
        return Ok(None);
    }
    let s = reg.load(id)?;
    let mut v = skill_json(&s);
    v["usage"] = json!(s.usage);
    Ok(Some(v))
}

/// `skill enable|disable WS ID`: the `--json` result; `None` when enabling a skill the
/// registry does not have. A malformed skill may not be enabled (the error says why);
/// disabling needs no skill in the registry.
pub(crate) fn set_enabled(
    p: &Platform,
    workspace: &str,
    id: &str,
    enable: bool,
) -> Result<Option<Value>> {
    validate_skill_id(id)?;
    let mut ws = p.workspace(workspace)?;
    let changed = if enable {
        let reg = Registry::of(p);
        if !reg.exists(id) {
            return Ok(None);
        }
        reg.load(id)?;
        ws.update_skills(|skills| {
            if skills.iter().any(|s| s == id) {
                return Ok(false);
            }
            skills.push(id.to_string());
            skills.sort();
            Ok(true)
        })?
    } else {
        ws.update_skills(|skills| {
            let before = skills.len();
            skills.retain(|s| s != id);
            Ok(skills.len() != before)
        })?
    };
    if enable {
        log::info!(target: "skill", workspace = workspace, skill = id; "skill enabled");
    } else {
        log::info!(target: "skill", workspace = workspace, skill = id; "skill disabled");
    }
    Ok(Some(
        json!({"workspace": workspace, "skill": id, "enabled": enable, "changed": changed}),
    ))
}

/// Runs a `skill` command.
pub fn run(p: &Platform, cmd: SkillCmd, json: bool, key_file: Option<&Path>) -> Result<i32> {
    let reg = Registry::of(p);
    match cmd {
        SkillCmd::List { workspace } => {
            let rows = list_json(p, workspace.as_deref())?;
            if json {
                print(Value::Array(rows));
            } else if rows.is_empty() {
                print(format!("no skills in {}", reg.dir().display()));
            } else {
                for r in rows {
                    let id = r["id"].as_str().unwrap_or("");
                    let en = match r.get("enabled").and_then(Value::as_bool) {
                        Some(true) => " enabled",
                        Some(false) => " disabled",
                        None => "",
                    };
                    if r["status"] == "ok" {
                        let hosts: Vec<&str> = r["network"]
                            .as_array()
                            .map(|a| a.iter().filter_map(Value::as_str).collect())
                            .unwrap_or_default();
                        let net = if hosts.is_empty() {
                            "none".to_string()
                        } else {
                            hosts.join(",")
                        };
                        print(format!(
                            "{id}\tok{en}\tnetwork: {net}\t{}",
                            r["description"].as_str().unwrap_or("")
                        ));
                    } else {
                        print(format!(
                            "{id}\tinvalid{en}\t{}",
                            r["reason"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
            Ok(exit::OK)
        }
        SkillCmd::Show { id } => {
            let Some(v) = show_json(p, &id)? else {
                return not_found(&id, json);
            };
            if json {
                print(v);
            } else {
                let s = reg.load(&id)?;
                print(format!("id:          {}", s.id));
                print(format!("name:        {}", s.name));
                print(format!("description: {}", s.description));
                print(format!("entry:       {}", s.entry.file));
                print(format!("credentials: {}", s.credentials.join(", ")));
                print(format!(
                    "network:     {}",
                    if s.network.is_empty() {
                        "none".into()
                    } else {
                        s.network.join(", ")
                    }
                ));
                print(format!("workspace:   {}", s.workspace.as_str()));
                print(format!("timeout:     {}s", s.timeout.as_secs()));
                print(format!("input:       {}", s.input_schema));
                print("");
                print(&s.usage);
            }
            Ok(exit::OK)
        }
        SkillCmd::Enable { workspace, id } => {
            let Some(v) = set_enabled(p, &workspace, &id, true)? else {
                return not_found(&id, json);
            };
            if json {
                print(v);
            } else {
                print(format!("skill {id} enabled for {workspace}"));
            }
            Ok(exit::OK)
        }
        SkillCmd::Disable { workspace, id } => {
            let Some(v) = set_enabled(p, &workspace, &id, false)? else {
                return not_found(&id, json);
            };
            if json {
                print(v);
            } else {
                print(format!("skill {id} disabled for {workspace}"));
            }
            Ok(exit::OK)
        }
        SkillCmd::Run {
            workspace,
            id,
            params,
        } => {
            validate_skill_id(&id)?;
            let ws = p.workspace(&workspace)?;
            if !reg.exists(&id) {
                return not_found(&id, json);
            }
            let raw = match params.as_deref() {
                None => "{}".to_string(),
                Some("-") => {
                    let mut s = String::new();
                    std::io::stdin()
                        .take(super::run::MAX_PARAMS_BYTES as u64 + 1)
                        .read_to_string(&mut s)
                        .map_err(|e| Error::Invalid(format!("reading --params from stdin: {e}")))?;
                    s
                }
                Some(s) => s.to_string(),
            };
            let params: Value = serde_json::from_str(&raw)
                .map_err(|e| Error::Invalid(format!("--params is not valid JSON: {e}")))?;
            let skill = reg.load(&id)?;
            let key = if skill.credentials.is_empty() || !ws.credentials_path().exists() {
                None
            } else {
                Some(CredentialKey::resolve(key_file)?)
            };
            // SIGINT/SIGTERM end the skill's sandbox (every process in it) and exit 130.
            let cancel = crate::util::cancel::CancelToken::new();
            crate::util::cancel::cancel_on_signals(cancel.clone());
            let opts = super::run::RunOptions {
                timeout: None,
                cancel: Some(cancel),
            };
            let r = super::run::run_skill_with(&ws, &reg, &id, &params, key.as_ref(), &opts)?;
            if json {
                print(r.to_json());
            } else {
                match &r.output {
                    Value::String(s) => print(s.trim_end()),
                    v => print(serde_json::to_string_pretty(v).unwrap_or_default()),
                }
                if r.truncated {
                    eprintln!(
                        "bulkhead: the skill's output was truncated at {} bytes",
                        super::run::MAX_RESULT_BYTES
                    );
                }
                if r.timed_out {
                    eprintln!(
                        "bulkhead: skill {id} timed out; every process it started was killed"
                    );
                } else if r.oom_killed {
                    eprintln!("bulkhead: skill {id} was killed by the memory limit");
                } else if r.exit_code != 0 {
                    eprintln!("bulkhead: skill {id} exited with status {}", r.exit_code);
                }
            }
            Ok(if r.oom_killed {
                exit::EXEC_OOM
            } else {
                r.exit_code
            })
        }
    }
}
