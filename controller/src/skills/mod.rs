//! Skills: small programs a workspace's agent may run, each in a sandbox of its own.
//!
//! ```text
//! <state>/skills/<id>/SKILL.md     front matter (TOML between `+++` lines) + usage for the model
//! <state>/skills/<id>/execute      entry point: `execute` (executable, run as is),
//!                                  or `execute.sh` (/bin/sh), `execute.js` (node),
//!                                  `execute.py` (python3); exactly one of them
//! ```
//!
//! The front matter is a strict TOML subset (unknown keys are an error):
//!
//! ```toml
//! +++
//! name = "github-issue"                  # required, 1-64 printable characters
//! description = "Open a GitHub issue"    # required, one line for the model
//! credentials = ["github"]               # credential sets it needs (default none)
//! network = ["api.github.com"]           # "none" (default) or host patterns as in `net::egress`
//! timeout = 30                           # seconds (default 60, at most 3600)
//! workspace = "none"                     # "none" (default), "read" or "write": /workspace
//! [limits]
//! memory = "256M"                        # or bytes; default: the workspace's
//! pids = 64
//! [input_schema]                         # JSON Schema (an object schema) of the parameters
//! type = "object"
//! required = ["title"]
//! properties.title = { type = "string" }
//! +++
//! Usage text for the model (Markdown).
//! ```
//!
//! Ids are validated like workspace ids. A malformed skill is listed with its reason and
//! skipped, never fatal. Enablement is per workspace, in `workspace.json` (`skills`), which
//! no sandbox can see. Execution: [`run::run_skill`]; agent tools: [`tools`].

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bulkhead_shared::validate_workspace_id;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::platform::{LimitsConfig, Platform};

pub mod cli;
pub mod redact;
pub mod run;
pub mod tools;

pub use run::{run_skill, run_skill_with, RunOptions, SkillResult};

/// Name of the manifest file.
pub const MANIFEST: &str = "SKILL.md";
/// Front matter fence.
pub const FENCE: &str = "+++";
/// Default timeout of a run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest timeout a skill may declare.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// Largest `SKILL.md`.
pub const MAX_MANIFEST_BYTES: u64 = 256 << 10;
/// Most files copied into the sandbox from a skill's directory.
pub const MAX_FILES: usize = 256;
/// Most bytes copied into the sandbox from a skill's directory.
pub const MAX_TOTAL_BYTES: u64 = 16 << 20;
/// Deepest subdirectory copied.
pub const MAX_DEPTH: usize = 8;

/// How a skill's sandbox sees the agent's workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkspaceAccess {
    /// `/workspace` is a fresh empty directory for the run (the default).
    #[default]
    None,
    /// `/workspace` is the workspace's `files/`, read-only.
    Read,
    /// `/workspace` is the workspace's `files/`, writable.
    Write,
}

impl WorkspaceAccess {
    /// `none`, `read`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkspaceAccess::None => "none",
            WorkspaceAccess::Read => "read",
            WorkspaceAccess::Write => "write",
        }
    }
}

/// The entry point and how it is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name in the skill's directory.
    pub file: String,
    /// Interpreter (`/bin/sh`, `node`, `python3`), or none for `execute` itself.
    pub interpreter: Option<&'static str>,
}

/// A valid skill.
#[derive(Debug, Clone)]
pub struct Skill {
    /// Id (directory name).
    pub id: String,
    /// Its directory on the host (never visible in a sandbox).
    pub dir: PathBuf,
    /// Display name.
    pub name: String,
    /// One-line description for the model.
    pub description: String,
    /// Credential sets it needs.
    pub credentials: Vec<String>,
    /// JSON Schema of its parameters.
    pub input_schema: Value,
    /// Host patterns it may reach through the egress proxy (normalized; empty: no network).
    pub network: Vec<String>,
    /// Timeout of one run.
    pub timeout: Duration,
    /// View of the agent's workspace.
    pub workspace: WorkspaceAccess,
    /// Its limits (over the workspace's).
    pub limits: LimitsConfig,
    /// Entry point.
    pub entry: Entry,
    /// Usage for the model (the body of `SKILL.md`).
    pub usage: String,
}

/// One entry of the registry: a skill or why it is not one.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Directory name.
    pub id: String,
    /// The skill, or the reason it was skipped.
    pub skill: std::result::Result<Skill, String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NetworkField {
    Mode(String),
    Hosts(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsField {
    #[serde(default)]
    memory: Option<toml::Value>,
    #[serde(default)]
    pids: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: String,
    description: String,
    #[serde(default)]
    credentials: Vec<String>,
    #[serde(default)]
    input_schema: Option<toml::Value>,
    #[serde(default)]
    network: Option<NetworkField>,
    #[serde(default)]
    timeout: Option<u64>,
    #[serde(default)]
    workspace: Option<String>,
    #[serde(default)]
    limits: LimitsField,
}

/// Splits `SKILL.md` into front matter and body.
fn split_front_matter(text: &str) -> std::result::Result<(&str, &str), String> {
    let rest = text
        .strip_prefix("\u{feff}")
        .unwrap_or(text)
        .strip_prefix(FENCE)
        .ok_or("SKILL.md must start with a `+++` line (TOML front matter)")?;
    let rest = rest
        .strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .ok_or("the first line of SKILL.md must be exactly `+++`")?;
    let mut off = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == FENCE {
            return Ok((&rest[..off], &rest[off + line.len()..]));
        }
        off += line.len();
    }
    Err("the front matter has no closing `+++` line".into())
}

/// Parses a `SKILL.md` (the entry point and id are checked by the caller). Public for tests
/// and tools that lint skills.
pub fn parse_manifest(
    id: &str,
    dir: &Path,
    text: &str,
    entry: Entry,
) -> std::result::Result<Skill, String> {
    let (front, body) = split_front_matter(text)?;
    let fm: FrontMatter =
        toml::from_str(front).map_err(|e| format!("invalid front matter: {}", e.message()))?;
    let name = fm.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err("name must be 1-64 printable characters".into());
    }
    let description = fm.description.trim().to_string();
    if description.is_empty() || description.len() > 1024 || description.contains('\n') {
        return Err("description must be one line of 1-1024 bytes".into());
    }
    for c in &fm.credentials {
        crate::creds::validate_name(c).map_err(|e| format!("credentials: {e}"))?;
    }
    let mut credentials = fm.credentials.clone();
    credentials.sort();
    credentials.dedup();
    let input_schema = match &fm.input_schema {
        None => serde_json::json!({"type": "object"}),
        Some(v) => serde_json::to_value(v).map_err(|e| format!("input_schema: {e}"))?,
    };
    if input_schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err("input_schema must be a JSON Schema with type = \"object\"".into());
    }
    let network = match fm.network {
        None => vec![],
        Some(NetworkField::Mode(m)) if m == "none" => vec![],
        Some(NetworkField::Mode(m)) => {
            return Err(format!(
                "network must be \"none\" or a list of host patterns, not {m:?}"
            ))
        }
        Some(NetworkField::Hosts(h)) => {
            let p = crate::net::egress::NetworkPolicy::allowing(&h)
                .map_err(|e| format!("network: {e}"))?;
            p.allow.clone()
        }
    };
    let timeout = match fm.timeout {
        None => DEFAULT_TIMEOUT,
        Some(t) if (1..=MAX_TIMEOUT_SECS).contains(&t) => Duration::from_secs(t),
        Some(t) => {
            return Err(format!(
                "timeout must be 1-{MAX_TIMEOUT_SECS} seconds, not {t}"
            ))
        }
    };
    let workspace = match fm.workspace.as_deref() {
        None | Some("none") => WorkspaceAccess::None,
        Some("read") => WorkspaceAccess::Read,
        Some("write") => WorkspaceAccess::Write,
        Some(o) => {
            return Err(format!(
                "workspace must be \"none\", \"read\" or \"write\", not {o:?}"
            ))
        }
    };
    let memory_bytes = match &fm.limits.memory {
        None => None,
        Some(toml::Value::Integer(n)) if *n > 0 => Some(*n as u64),
        Some(toml::Value::String(s)) => {
            Some(crate::util::size::parse_size(s).map_err(|e| format!("limits.memory: {e}"))?)
        }
        Some(o) => {
            return Err(format!(
                "limits.memory: expected a size such as \"256M\", not {o:?}"
            ))
        }
    };
    let limits = LimitsConfig {
        memory_bytes,
        pids: fm.limits.pids,
        ..Default::default()
    };
    Ok(Skill {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        name,
        description,
        credentials,
        input_schema,
        network,
        timeout,
        workspace,
        limits,
        entry,
        usage: body.trim().to_string(),
    })
}

/// Finds the entry point: exactly one of `execute` (executable), `execute.sh|js|py`.
fn find_entry(dir: &Path) -> std::result::Result<Entry, String> {
    let candidates: [(&str, Option<&'static str>); 4] = [
        ("execute", None),
        ("execute.sh", Some("/bin/sh")),
        ("execute.js", Some("node")),
        ("execute.py", Some("python3")),
    ];
    let mut found = vec![];
    for (file, interpreter) in candidates {
        let Ok(md) = fs::symlink_metadata(dir.join(file)) else {
            continue;
        };
        if !md.file_type().is_file() {
            return Err(format!(
                "{file} is not a regular file (symlinks are refused)"
            ));
        }
        if interpreter.is_none() && md.permissions().mode() & 0o111 == 0 {
            return Err("execute is not executable (chmod +x, or name it execute.sh|js|py)".into());
        }
        found.push(Entry {
            file: file.to_string(),
            interpreter,
        });
    }
    match found.len() {
        0 => Err("no entry point: expected execute, execute.sh, execute.js or execute.py".into()),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "more than one entry point ({}); keep one",
            found
                .iter()
                .map(|e| e.file.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Checks a skill id (`[a-z0-9][a-z0-9_-]{0,62}`, like a workspace id).
pub fn validate_skill_id(id: &str) -> Result<()> {
    validate_workspace_id(id).map_err(|e| Error::Invalid(format!("invalid skill id: {e}")))
}

/// The global skill registry, `<state>/skills/`.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

impl Registry {
    /// A registry at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Registry {
        Registry { dir: dir.into() }
    }

    /// The platform's registry, `<state>/skills/`.
    pub fn of(platform: &Platform) -> Registry {
        Registry::new(platform.state_dir().join("skills"))
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every entry, sorted by id; malformed ones carry their reason. Directory names that
    /// are not valid ids are listed as invalid too (hidden ones are ignored).
    pub fn list(&self) -> Result<Vec<Listed>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|id| {
                let skill = self.load_unchecked(&id);
                if let Err(why) = &skill {
                    log::warn!(target: "skill", skill = id.as_str(); "skipping malformed skill: {why}");
                }
                Listed { id, skill }
            })
            .collect())
    }

    /// Whether a directory of that id exists.
    pub fn exists(&self, id: &str) -> bool {
        validate_skill_id(id).is_ok() && fs::symlink_metadata(self.dir.join(id)).is_ok()
    }

    /// Loads one skill: [`Error::Invalid`] for a bad id, a missing or malformed skill.
    pub fn load(&self, id: &str) -> Result<Skill> {
        validate_skill_id(id)?;
        if !self.exists(id) {
            return Err(Error::Invalid(format!("no such skill {id:?}")));
        }
        self.load_unchecked(id)
            .map_err(|why| Error::Invalid(format!("skill {id:?} is malformed: {why}")))
    }

    fn load_unchecked(&self, id: &str) -> std::result::Result<Skill, String> {
        validate_workspace_id(id).map_err(|e| format!("invalid id: {e}"))?;
        let dir = self.dir.join(id);
        let md = fs::symlink_metadata(&dir).map_err(|e| format!("cannot stat: {e}"))?;
        if !md.file_type().is_dir() {
            return Err("not a directory (symlinks are refused)".into());
        }
        let mpath = dir.join(MANIFEST);
        let mmd = fs::symlink_metadata(&mpath).map_err(|_| format!("no {MANIFEST}"))?;
        if !mmd.file_type().is_file() {
            return Err(format!("{MANIFEST} is not a regular file"));
        }
        if mmd.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
            ));
        }
        let text =
            fs::read_to_string(&mpath).map_err(|e| format!("cannot read {MANIFEST}: {e}"))?;
        let entry = find_entry(&dir)?;
        parse_manifest(id, &dir, &text, entry)
    }
}

/// The files of a skill's directory to copy into its sandbox: (relative path, content,
/// mode). Regular files only (symlinks and others are skipped), capped.
pub fn skill_files(skill: &Skill) -> Result<Vec<(String, Vec<u8>, u32)>> {
    let mut out = vec![];
    let mut total = 0u64;
    fn walk(
        root: &Path,
        rel: &str,
        depth: usize,
        entry: &str,
        out: &mut Vec<(String, Vec<u8>, u32)>,
        total: &mut u64,
    ) -> Result<()> {
        let dir = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(rel)
        };
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let mut ents: Vec<_> = rd.filter_map(|e| e.ok()).collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let name = e.file_name().to_string_lossy().into_owned();
            let r = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                if depth < MAX_DEPTH {
                    walk(root, &r, depth + 1, entry, out, total)?;
                }
            } else if ft.is_file() {
                let p = e.path();
                let data = fs::read(&p).map_err(|err| Error::io(&p, err))?;
                *total += data.len() as u64;
                if out.len() >= MAX_FILES || *total > MAX_TOTAL_BYTES {
                    return Err(Error::Invalid(format!(
                        "the skill's directory holds more than {MAX_FILES} files or {MAX_TOTAL_BYTES} bytes"
                    )));
                }
                let mode = if r == entry { 0o755 } else { 0o644 };
                out.push((r, data, mode));
            }
        }
        Ok(())
    }
    walk(&skill.dir, "", 0, &skill.entry.file, &mut out, &mut total)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
