//! Running a skill in a sandbox of its own.
//!
//! One sandbox per run, through the same launcher as a workspace's. By default `/workspace`
//! is a per-run copy of the skill's files (`<workspace>/skill-runs/<run>/`, created like
//! `files/`, mounted read-only, removed after the run), so the skill cannot change its own
//! code and sees nothing of any workspace. A skill that declares `workspace = "read"|"write"`
//! gets the agent's files at `/workspace` instead (read-only unless it declares `write`),
//! and the per-run copy of its own files read-only at `/mnt/skill` (an extra bind of the
//! launch spec). The registry on the host is never mounted. The skill's own limits and timeout;
//! parameters as JSON on stdin; stdout is the result (JSON if it parses, else text), capped
//! at [`MAX_RESULT_BYTES`]; stderr goes to the log (capped at [`MAX_STDERR_LOG_BYTES`]).
//! Network: none, or the declared hosts through a proxy context of its own. Credentials:
//! the sets the skill declares and the workspace holds, as `<SET>_<KEY>` and `<KEY>`, and
//! as files `/tmp/secrets/<SET>_<KEY>` ([`SECRETS_DIR`], on the skill sandbox's own tmpfs);
//! every value is redacted ([`super::redact`]) from stdout and stderr.
//!
//! Tenant-written configuration never runs with the secrets: every skill starts in
//! `/mnt/skill` (its own read-only files) with a fresh, empty, private `HOME` ([`SKILL_HOME`])
//! and the environment of [`skill_env`], which points the configuration of git, curl, wget,
//! npm, pip and Python away from anything the tenant wrote and overrides git's
//! command-running keys from the command-line level, which beats repository config. A skill
//! declaring `workspace = "write"` and credentials is refused unless the operator sets
//! `[skills] allow_write_with_credentials = true`. While a skill holding credentials has the
//! workspace's files, every other sandbox of the workspace is frozen
//! ([`crate::sandbox::freeze`]) and such runs of one workspace take turns.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_shared::{Command as WireCommand, ExecRequest, ExitKind, Stream};
use serde_json::{json, Value};

use super::redact::{Redactor, MIN_SECRET_LEN};
use super::{skill_files, Registry, Skill, WorkspaceAccess};
use crate::creds::{shadows_environment, CredentialKey};
use crate::error::{Error, Result};
use crate::platform::Workspace;
use crate::state::mkdir;
use crate::util::cancel::CancelToken;

/// Largest result returned (stdout after redaction).
pub const MAX_RESULT_BYTES: usize = 256 << 10;
/// Largest part of stderr written to the log.
pub const MAX_STDERR_LOG_BYTES: usize = 16 << 10;
/// Where the skill's files are inside its sandbox (read-only), its working directory.
pub const SKILL_DIR_IN_SANDBOX: &str = bulkhead_policy::mounts::SKILL_BIND;
/// Largest parameters document.
pub const MAX_PARAMS_BYTES: usize = 1 << 20;
/// Environment names a credential may not take (beyond the credential module's list): the
/// proxy settings the worker gives a sandbox with egress.
const PROXY_VARS: &[&str] = &["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"];
/// The skill's private home: created empty (0700) on the sandbox's own `/tmp` before the
/// skill starts, so `~/.ssh`, `~/.gitconfig`, `~/.curlrc`, `~/.npmrc` hold nothing the tenant
/// wrote. `$HOME`, and the home `/etc/passwd` gives in a skill's sandbox (ssh uses that one).
pub const SKILL_HOME: &str = bulkhead_policy::mounts::SKILL_HOME;
/// Where each credential is also a file, `<SET>_<KEY>` (0400, in a 0700 directory on the skill
/// sandbox's own tmpfs, gone with it); named by `BULKHEAD_SECRETS_DIR`.
pub const SECRETS_DIR: &str = "/tmp/secrets";
/// Git settings given at the command-line level (`GIT_CONFIG_COUNT`/`KEY_n`/`VALUE_n`), which
/// git reads after, and lets win over, the repository's `.git/config`: the fixed keys of that
/// file that name a program git would run by itself. Not covered (docs/skills.md, skill
/// environment): `diff.external`, and the drivers that `.gitattributes` names (`filter.<name>.*`,
/// `diff.<name>.textconv`, `merge.<name>.driver`), which no fixed list can reach. An empty
/// `credential.helper` clears the list of helpers the repository may have set.
pub const GIT_OVERRIDES: &[(&str, &str)] = &[
    ("core.fsmonitor", "false"),
    ("core.hooksPath", "/dev/null"),
    ("core.sshCommand", "ssh"),
    ("core.askPass", ""),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("core.attributesFile", "/dev/null"),
    ("sequence.editor", ":"),
    ("credential.helper", ""),
    ("protocol.ext.allow", "never"),
    ("gpg.program", "gpg"),
    ("gpg.ssh.program", "ssh-keygen"),
    ("gpg.x509.program", "gpgsm"),
    ("commit.gpgSign", "false"),
    ("tag.gpgSign", "false"),
    ("log.showSignature", "false"),
];
/// Fixed environment of every skill (credentials may not take these names).
const SKILL_ENV: &[(&str, &str)] = &[
    ("HOME", SKILL_HOME),
    ("XDG_CONFIG_HOME", "/tmp/home/.config"),
    ("XDG_CACHE_HOME", "/tmp/home/.cache"),
    ("XDG_DATA_HOME", "/tmp/home/.local/share"),
    // git: no system or global file; no repository found above /mnt/skill; remote helpers
    // and local transports (which run `remote.<name>.uploadpack`) off; no prompts, no pager.
    ("GIT_CONFIG_NOSYSTEM", "1"),
    ("GIT_CONFIG_GLOBAL", "/dev/null"),
    ("GIT_CEILING_DIRECTORIES", "/mnt"),
    ("GIT_ALLOW_PROTOCOL", "https:http:ssh"),
    ("GIT_SSH_COMMAND", "ssh"),
    ("GIT_TERMINAL_PROMPT", "0"),
    ("GIT_PAGER", "cat"),
    ("GIT_EDITOR", ":"),
    // curl, wget, npm, pip, Python: no per-user or global configuration.
    ("CURL_HOME", SKILL_HOME),
    ("WGETRC", "/dev/null"),
    ("npm_config_userconfig", "/dev/null"),
    ("npm_config_globalconfig", "/dev/null"),
    ("PIP_CONFIG_FILE", "/dev/null"),
    ("PYTHONNOUSERSITE", "1"),
    ("PYTHONDONTWRITEBYTECODE", "1"),
];
/// Prefixes of environment names a credential may not take (case-insensitive): git's
/// command-line config, npm's settings, bulkhead's own.
const RESERVED_PREFIXES: &[&str] = &["GIT_CONFIG_", "NPM_CONFIG_", "BULKHEAD_"];

/// The environment every skill starts from (before its credentials): [`SKILL_ENV`] and git's
/// [`GIT_OVERRIDES`]; with `secrets`, `BULKHEAD_SECRETS_DIR`.
pub fn skill_env(secrets: bool) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = SKILL_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.push(("GIT_CONFIG_COUNT".into(), GIT_OVERRIDES.len().to_string()));
    for (i, (k, v)) in GIT_OVERRIDES.iter().enumerate() {
        env.push((format!("GIT_CONFIG_KEY_{i}"), k.to_string()));
        env.push((format!("GIT_CONFIG_VALUE_{i}"), v.to_string()));
    }
    if secrets {
        env.push(("BULKHEAD_SECRETS_DIR".into(), SECRETS_DIR.into()));
    }
    env
}

/// What a run gave.
#[derive(Debug, Clone)]
pub struct SkillResult {
    /// Skill id.
    pub skill: String,
    /// Exit status (128 + n when killed by signal n; 124 when timed out).
    pub exit_code: i32,
    /// The timeout fired (every process was killed).
    pub timed_out: bool,
    /// Killed by the memory limit.
    pub oom_killed: bool,
    /// Stdout, redacted: JSON when it parses, else a string.
    pub output: Value,
    /// Stdout was cut at [`MAX_RESULT_BYTES`] (or the worker's cap).
    pub truncated: bool,
    /// Number of environment variables injected from credentials.
    pub injected: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl SkillResult {
    /// Success: exited 0, not timed out.
    pub fn ok(&self) -> bool {
        self.exit_code == 0 && !self.timed_out
    }

    /// As JSON (for `--json` and the agent tool).
    pub fn to_json(&self) -> Value {
        json!({
            "skill": self.skill,
            "ok": self.ok(),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "oom_killed": self.oom_killed,
            "truncated": self.truncated,
            "output": self.output,
            "duration_ms": self.duration_ms,
        })
    }
}

/// The environment name of a credential key in a set: `<SET>_<KEY>` upper-cased with every
/// non-alphanumeric byte turned into `_`.
pub fn env_name(set: &str, key: &str) -> String {
    format!("{set}_{key}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn refused_name(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    shadows_environment(name)
        || shadows_environment(&up)
        || PROXY_VARS.contains(&up.as_str())
        || SKILL_ENV.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
        || RESERVED_PREFIXES.iter().any(|p| up.starts_with(p))
}

/// What a skill gets of the workspace's credentials.
#[derive(Default)]
struct Secrets {
    /// `<SET>_<KEY>` and `<KEY>` → value.
    env: Vec<(String, String)>,
    /// File name under [`SECRETS_DIR`] (`<SET>_<KEY>`) → value.
    files: Vec<(String, String)>,
    redactor: Redactor,
}

/// Builds the environment and the redactor from the sets the skill declares and the
/// workspace holds. A name that would shadow the process environment is an error.
fn credential_env(ws: &Workspace, skill: &Skill, key: Option<&CredentialKey>) -> Result<Secrets> {
    if skill.credentials.is_empty() || !ws.credentials_path().exists() {
        return Ok(Secrets::default());
    }
    let key = key.ok_or_else(|| {
        Error::from(crate::error::CredError::NoKey(format!(
            "skill {:?} needs credentials; set $BULKHEAD_CREDENTIAL_KEY or --credential-key-file",
            skill.id
        )))
    })?;
    let store = ws.credentials(key)?;
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut secrets = vec![];
    for set in &skill.credentials {
        let Some(values) = store.get(set) else {
            log::info!(target: "skill", workspace = ws.id(), skill = skill.id.as_str(); "credential set {set:?} declared but not held by the workspace");
            continue;
        };
        for (k, v) in values {
            let v = v.expose_secret();
            if v.len() < MIN_SECRET_LEN {
                log::warn!(target: "skill", workspace = ws.id(), skill = skill.id.as_str(); "credential {set}.{k} is shorter than {MIN_SECRET_LEN} bytes and is not redacted from the output");
            }
            secrets.push(v.to_string());
            files.insert(env_name(set, k), v.to_string());
            for name in [env_name(set, k), k.clone()] {
                if refused_name(&name) {
                    return Err(Error::Invalid(format!(
                        "credential {set}.{k} would be passed as {name}, which shadows the process environment; rename the set or key"
                    )));
                }
                env.insert(name, v.to_string());
            }
        }
    }
    Ok(Secrets {
        env: env.into_iter().collect(),
        files: files.into_iter().collect(),
        redactor: Redactor::new(&secrets),
    })
}

/// A per-run scratch directory, removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch_dir(ws: &Workspace) -> Result<Scratch> {
    static N: AtomicU64 = AtomicU64::new(0);
    let parent = ws.dir().join("skill-runs");
    mkdir(&parent, 0o711)?;
    // Leftovers of runs whose process died without cleaning up (named `<pid>-…`).
    if let Ok(rd) = fs::read_dir(&parent) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let mut r = [0u8; 6];
    getrandom::getrandom(&mut r).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    let dir = parent.join(format!(
        "{}-{}-{hex}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    mkdir(&dir, 0o755)?;
    let scratch = Scratch(dir.clone());
    Ok(scratch)
}

/// Writes the skill's files under `dir` on the host (readable by the sandbox's user, never
/// writable by it: they are the controller's, and the mount is read-only anyway).
fn copy_into(dir: &std::path::Path, files: &[(String, Vec<u8>, u32)]) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    use std::path::Component;
    for (rel, data, mode) in files {
        let rel_path = std::path::Path::new(rel);
        if !rel_path
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(Error::Invalid(format!(
                "skill file {rel:?} is not a plain relative path"
            )));
        }
        let path = dir.join(rel_path);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| Error::io(parent, e))?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if mode & 0o111 != 0 { 0o555 } else { 0o444 })
            .custom_flags(libc_o_nofollow())
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        std::io::Write::write_all(&mut f, data).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Whether `id` is enabled for the workspace, read from `workspace.json` now.
pub fn is_enabled(ws: &Workspace, id: &str) -> Result<bool> {
    Ok(ws.reload()?.record().config.skills.iter().any(|s| s == id))
}

fn cap_utf8(s: &str, max: usize) -> (&str, bool) {
    (crate::util::text::prefix_within(s, max), s.len() > max)
}

/// Creates the skill's empty private home and, with credentials, writes each to a file of
/// its own under [`SECRETS_DIR`], inside the skill's sandbox before the skill starts.
fn prepare_sandbox(sb: &mut crate::sandbox::Sandbox, secrets: &[(String, String)]) -> Result<()> {
    let mut dirs = vec![SKILL_HOME.to_string()];
    if !secrets.is_empty() {
        dirs.push(SECRETS_DIR.to_string());
    }
    let mut argv = vec!["mkdir".to_string(), "-m".into(), "0700".into(), "--".into()];
    argv.extend(dirs);
    let mut err = Vec::new();
    let outcome = sb.exec(
        ExecRequest {
            command: WireCommand::Argv(argv),
            cwd: "/".into(),
            env: vec![],
            stdin: vec![],
            timeout_ms: 10_000,
            output_cap: 4096,
            kill_stragglers: true,
        },
        &mut |_, data| err.extend_from_slice(data),
    )?;
    if outcome.result.timed_out || outcome.result.exit != ExitKind::Code(0) {
        return Err(Error::Invalid(format!(
            "cannot create the skill's private home {SKILL_HOME} in its sandbox ({:?}): {}",
            outcome.result.exit,
            String::from_utf8_lossy(&err).trim()
        )));
    }
    for (name, value) in secrets {
        // `<SET>_<KEY>` is [A-Z0-9_] (env_name); checked again as it becomes a path.
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Error::Invalid(format!(
                "credential file name {name:?} is not [A-Z0-9_]"
            )));
        }
        let path = format!("{SECRETS_DIR}/{name}");
        match sb.request(
            bulkhead_shared::Request::Write {
                path: path.clone(),
                data: value.as_bytes().to_vec(),
                mode: 0o400,
                create_parents: false,
            },
            &mut |_, _| {},
        )? {
            Ok(bulkhead_shared::Reply::Write { .. }) => {}
            Ok(_) => return Err(Error::Protocol("wrong reply type for write".into())),
            Err(e) => {
                return Err(Error::Invalid(format!(
                    "cannot write credential file {path} in the skill's sandbox: {}",
                    e.message
                )))
            }
        }
    }
    Ok(())
}

/// Waits (polling, up to `timeout`, or until `cancel`) for this workspace's turn to run a
/// skill that holds credentials with its files: an exclusive lock on
/// `workspaces/<id>/skill-freeze.lock` ([`Workspace::skill_freeze_lock_path`]), so one such
/// run's thaw cannot end another's freeze, and no sandbox of the workspace starts meanwhile.
fn take_turn(
    ws: &Workspace,
    id: &str,
    timeout: Duration,
    cancel: Option<&CancelToken>,
) -> Result<nix::fcntl::Flock<fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = ws.skill_freeze_lock_path();
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
            Err((_, e)) => return Err(Error::io(&path, e.into())),
        }
        if cancel.is_some_and(|c| c.is_cancelled()) {
            return Err(Error::Cancelled("the run was cancelled".into()));
        }
        if std::time::Instant::now() >= deadline {
            return Err(Error::Invalid(format!(
                "skill {id:?} waited {} s for another skill holding credentials with workspace {:?}'s files to end; try again later",
                timeout.as_secs(),
                ws.id()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Options of one run beyond the skill's own settings.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Shorter timeout than the skill's (e.g. what is left of an agent run's time).
    pub timeout: Option<Duration>,
    /// Cancelling it kills the skill's sandbox (the run then fails with an error).
    pub cancel: Option<CancelToken>,
}

/// Runs skill `id` for workspace `ws` with `params`. Refused unless the skill is valid,
/// enabled for the workspace (read from `workspace.json` at call time) and `params` match
/// its input schema. `key` opens the workspace's credentials when the skill declares any.
pub fn run_skill(
    ws: &Workspace,
    registry: &Registry,
    id: &str,
    params: &Value,
    key: Option<&CredentialKey>,
) -> Result<SkillResult> {
    run_skill_with(ws, registry, id, params, key, &RunOptions::default())
}

/// [`run_skill`] with [`RunOptions`].
pub fn run_skill_with(
    ws: &Workspace,
    registry: &Registry,
    id: &str,
    params: &Value,
    key: Option<&CredentialKey>,
    options: &RunOptions,
) -> Result<SkillResult> {
    if let Some(c) = &options.cancel {
        if c.is_cancelled() {
            return Err(Error::Cancelled("the run was cancelled".into()));
        }
    }
    let skill = registry.load(id)?;
    if !is_enabled(ws, id)? {
        return Err(Error::Invalid(format!(
            "skill {id:?} is not enabled for workspace {:?}; an operator enables it with `bulkhead skill enable {} {id}`",
            ws.id(),
            ws.id()
        )));
    }
    if !params.is_object() {
        return Err(Error::Invalid(
            "skill parameters must be a JSON object".into(),
        ));
    }
    crate::util::schema::validate(&skill.input_schema, params)
        .map_err(|e| Error::Invalid(format!("parameters of skill {id:?}: {e}")))?;
    let stdin = serde_json::to_vec(params).map_err(|e| Error::Invalid(e.to_string()))?;
    if stdin.len() > MAX_PARAMS_BYTES {
        return Err(Error::Invalid(format!(
            "skill parameters are larger than {MAX_PARAMS_BYTES} bytes"
        )));
    }
    if skill.workspace == WorkspaceAccess::Write
        && !skill.credentials.is_empty()
        && !ws.platform_config()?.allow_write_with_credentials
    {
        return Err(Error::Invalid(format!(
            "skill {id:?} declares workspace = \"write\" and credentials, which would put its secrets beside files the tenant can change; it is refused unless the operator sets `{} = true` in config.toml (or the skill declares workspace = \"read\")",
            crate::config::ALLOW_WRITE_WITH_CREDENTIALS
        )));
    }
    let files = skill_files(&skill)?;
    let Secrets {
        env: cred_env,
        files: secret_files,
        redactor,
    } = credential_env(ws, &skill, key)?;
    let injected = cred_env.len();
    let mut env = skill_env(!secret_files.is_empty());
    env.extend(cred_env);
    let timeout = options
        .timeout
        .map_or(skill.timeout, |t| t.min(skill.timeout));

    // A skill holding secrets with the workspace's files: nothing else of the workspace runs
    // meanwhile (frozen, or stopped where it cannot be), and such runs take turns.
    let (_turn, _frozen) = if injected > 0 && skill.workspace != WorkspaceAccess::None {
        let turn = take_turn(ws, id, timeout, options.cancel.as_ref())?;
        let frozen = ws.freeze_sandboxes()?;
        log::info!(target: "skill", workspace = ws.id(), skill = id, frozen = frozen.len(); "froze the workspace's other sandboxes while the skill holds credentials");
        (Some(turn), Some(frozen))
    } else {
        (None, None)
    };

    // No disk change (nor a credentialed skill's freeze) begins while this sandbox starts:
    // `skill-freeze.lock` shared until it is registered (a turn above holds it already).
    let starting = if _turn.is_none() {
        Some(ws.hold_for_start()?)
    } else {
        None
    };
    // The sandbox: the workspace's spec (from its record as it is now) with the skill's
    // limits and /workspace.
    let mut spec = ws.reloaded()?.launch_spec(&skill.limits)?;
    // Where the skill's files are inside: a per-run copy, always read-only (the skill
    // cannot change its own code). By default it is /workspace itself and the skill sees
    // nothing else; a skill that declares access to the agent's files gets those at
    // /workspace (read-only unless it declared `write`) and its copy at /mnt/skill.
    let scratch = scratch_dir(ws)?;
    copy_into(&scratch.0, &files)?;
    let scratch_path = scratch.0.to_string_lossy().into_owned();
    match skill.workspace {
        WorkspaceAccess::None => {
            spec.workspace_dir = scratch_path.clone();
            spec.workspace_writable = false;
            // Not the workspace's own filesystem: nothing to attest, nothing to fill.
            spec.limits.disk_bytes = 0;
            spec.limits.inodes = 0;
        }
        access => spec.workspace_writable = access == WorkspaceAccess::Write,
    }
    // Every skill's files are at /mnt/skill, its working directory.
    spec.binds.push(bulkhead_shared::Bind {
        host: scratch_path,
        path: SKILL_DIR_IN_SANDBOX.into(),
    });
    let egress = !skill.network.is_empty();
    let proxy = if egress {
        let policy = crate::net::egress::NetworkPolicy::allowing(&skill.network)?;
        Some(Arc::new(crate::net::proxy::ProxyContext::for_skill(
            ws,
            &format!("{}/skill:{id}", ws.id()),
            &policy,
        )?))
    } else {
        None
    };
    let launcher = ws.launcher_path()?;
    let started = std::time::Instant::now();
    let mut sb = ws
        .start_sandbox(
            &launcher,
            spec.clone(),
            &bulkhead_shared::LaunchOptions { egress },
        )
    .inspect_err(|e| {
        log::warn!(target: "skill", workspace = ws.id(), skill = id; "skill sandbox start failed: {e}");
    })?;
    let egress_chan = sb.take_egress_channel();
    let mut rs = ws.adopt_sandbox(sb, spec.limits.clone());
    drop(starting);
    // Cancel: SIGTERM to the launcher kills every process of the sandbox and the blocked
    // request returns (the launcher is our unreaped child while the guard lives).
    let cancel_hook = options.cancel.as_ref().map(|c| {
        let pid = rs.get().info().launcher_pid;
        c.on_cancel(move || {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        })
    });
    let sb = rs.get();
    if let (Some(ctx), Some(chan)) = (proxy, egress_chan) {
        let name = format!("{}/skill:{id}", ws.id());
        std::thread::Builder::new()
            .name("egress-skill".into())
            .spawn(move || {
                if let Err(e) =
                    crate::net::proxy::serve_channel(chan, ctx, crate::net::fdpass::recv_passed_fd)
                {
                    log::warn!(target: "egress", workspace = name.as_str(); "skill egress channel ended: {e}");
                }
            })
            .map_err(|e| Error::Invalid(format!("cannot start the egress proxy thread: {e}")))?;
    }

    let entry = format!("{SKILL_DIR_IN_SANDBOX}/{}", skill.entry.file);
    let argv = match skill.entry.interpreter {
        Some(i) => vec![i.to_string(), entry],
        None => vec![entry],
    };
    let req = ExecRequest {
        command: WireCommand::Argv(argv),
        cwd: SKILL_DIR_IN_SANDBOX.into(),
        env,
        stdin,
        timeout_ms: u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1),
        output_cap: (MAX_RESULT_BYTES + 4 * MAX_STDERR_LOG_BYTES) as u64,
        kill_stragglers: true,
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    // The order chunks arrived in, so stdout and stderr are redacted together.
    let mut order: Vec<(Stream, usize)> = Vec::new();
    let outcome = prepare_sandbox(sb, &secret_files).and_then(|()| {
        sb.exec(req, &mut |stream, data| {
            order.push((stream, data.len()));
            match stream {
                Stream::Stdout => out.extend_from_slice(data),
                Stream::Stderr => err.extend_from_slice(data),
            }
        })
    });
    drop(cancel_hook);
    let end = rs.shutdown();
    if options.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
        return Err(Error::Cancelled(format!(
            "skill {id:?} was cancelled; its sandbox and every process in it were killed"
        )));
    }
    let outcome = outcome?;
    let r = &outcome.result;
    let mut oom = outcome.oom_killed;
    if let (Ok(end), ExitKind::Signal(9)) = (&end, r.exit) {
        oom |= end.oom_kills > 0;
    }
    let exit_code = if r.timed_out {
        bulkhead_shared::exit::EXEC_TIMEOUT
    } else {
        r.exit.shell_status()
    };

    // Stdout: redact (together with stderr: a secret split between them is caught), then
    // cap (a secret cut by the cap is cut from the tail too).
    let (redacted, etext) = redactor.redact_streams(&out, &err, &order);
    let worker_cut = r.truncated && r.stdout_bytes > out.len() as u64;
    let (capped, cut) = cap_utf8(&redacted, MAX_RESULT_BYTES);
    let truncated = cut || worker_cut;
    let final_text = if truncated {
        redactor.redact_truncated(capped)
    } else {
        capped.to_string()
    };
    let output = if truncated {
        Value::String(final_text)
    } else {
        match serde_json::from_str::<Value>(final_text.trim()) {
            Ok(v) => v,
            Err(_) => Value::String(final_text),
        }
    };

    if !etext.is_empty() {
        let (e, cut) = cap_utf8(&etext, MAX_STDERR_LOG_BYTES);
        let e = if cut {
            redactor.redact_truncated(e)
        } else {
            e.to_string()
        };
        log::info!(target: "skill", workspace = ws.id(), skill = id; "stderr{}: {}", if cut { " (truncated)" } else { "" }, e.trim_end());
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    log::info!(
        target: "skill",
        workspace = ws.id(),
        skill = id,
        exit_code = exit_code,
        timed_out = r.timed_out,
        injected = injected;
        "skill run ended"
    );
    Ok(SkillResult {
        skill: id.to_string(),
        exit_code,
        timed_out: r.timed_out,
        oom_killed: oom,
        output,
        truncated,
        injected,
        duration_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn skill_env_points_configuration_away_from_the_workspace() {
        let env = skill_env(false);
        assert_eq!(get(&env, "HOME"), Some(SKILL_HOME));
        assert_eq!(get(&env, "CURL_HOME"), Some(SKILL_HOME));
        assert_eq!(get(&env, "GIT_CONFIG_GLOBAL"), Some("/dev/null"));
        assert_eq!(get(&env, "GIT_CONFIG_NOSYSTEM"), Some("1"));
        assert_eq!(get(&env, "BULKHEAD_SECRETS_DIR"), None);
        for (k, v) in &env {
            assert!(!v.starts_with("/workspace"), "{k}={v}");
            if k.starts_with("XDG_") {
                assert!(v.starts_with(SKILL_HOME), "{k}={v}");
            }
        }
        // Every override is given at git's command-line level, in order.
        let n: usize = get(&env, "GIT_CONFIG_COUNT").unwrap().parse().unwrap();
        assert_eq!(n, GIT_OVERRIDES.len());
        for (i, (k, v)) in GIT_OVERRIDES.iter().enumerate() {
            assert_eq!(get(&env, &format!("GIT_CONFIG_KEY_{i}")), Some(*k));
            assert_eq!(get(&env, &format!("GIT_CONFIG_VALUE_{i}")), Some(*v));
        }
        assert_eq!(get(&env, &format!("GIT_CONFIG_KEY_{n}")), None);
        assert_eq!(
            get(&skill_env(true), "BULKHEAD_SECRETS_DIR"),
            Some(SECRETS_DIR)
        );
    }

    #[test]
    fn credentials_cannot_take_the_hardening_names() {
        for name in [
            "HOME",
            "home",
            "CURL_HOME",
            "GIT_CONFIG_GLOBAL",
            "GIT_CONFIG_KEY_0",
            "git_config_count",
            "npm_config_userconfig",
            "NPM_CONFIG_PREFIX",
            "BULKHEAD_SECRETS_DIR",
            "GIT_SSH_COMMAND",
            "https_proxy",
        ] {
            assert!(refused_name(name), "{name}");
        }
        for name in [
            "GITHUB_TOKEN",
            "token",
            "NPM_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(!refused_name(name), "{name}");
        }
    }
}
