//! The library API: a [`Platform`] owns a state directory and its workspaces.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_shared::{validate_workspace_id, LaunchSpec, Limits};
use serde::{Deserialize, Serialize};

pub use crate::error::WorkspaceError;
use crate::error::{Error, Result};

pub mod hook_spec;
mod ops;

pub use crate::config::limits::{check_limits, IoMaxSetting, LimitsConfig};
use crate::sandbox::{find_launcher, Sandbox};
use crate::state::{mkdir, write_atomic, StateDir};

/// Platform-wide settings.
#[derive(Debug, Clone)]
pub struct PlatformConfig {
    /// State directory.
    pub state_dir: PathBuf,
    /// Launcher binary (default: found next to the executable or `$BULKHEAD_LAUNCH`).
    pub launcher: Option<PathBuf>,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            state_dir: crate::state::default_state_dir(),
            launcher: None,
        }
    }
}

/// `workspace.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceConfig {
    /// Primary model as `provider/model` (e.g. `anthropic/claude-sonnet-4-5`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Fallback models, in order, as `provider/model`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Base URL overriding the provider's default (a self-hosted or local model server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Skills enabled for this workspace (ids of the platform's skill registry). Kept here,
    /// outside the sandbox's reach.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Egress: `"none"` (the default: loopback only inside the sandbox) or `{"allow": [host
    /// patterns], "max_connections": N, "bandwidth_bytes_per_sec": N}`; see
    /// [`crate::net::egress`]. Absent in files written before egress existed.
    #[serde(
        default,
        skip_serializing_if = "crate::net::egress::NetworkPolicy::is_default"
    )]
    pub network: crate::net::egress::NetworkPolicy,
    /// Lifecycle hook executables (host programs chosen by the operator, never anything in
    /// the sandbox); see [`crate::agent::hooks`]. Absent in files written before hooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<hook_spec::HookSpec>,
}

/// Checks a `provider/model` string: a provider name `[a-z0-9][a-z0-9_-]*`, a slash, and a
/// model name of printable characters without spaces.
pub fn validate_model(s: &str) -> Result<()> {
    let bad = || {
        Error::Invalid(format!(
            "invalid model {s:?}: expected provider/model, e.g. anthropic/claude-sonnet-4-5 or openai/gpt-4o"
        ))
    };
    let (provider, model) = s.split_once('/').ok_or_else(bad)?;
    let provider_ok = !provider.is_empty()
        && provider.len() <= 64
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let model_ok =
        !model.is_empty() && model.len() <= 200 && model.chars().all(|c| c.is_ascii_graphic());
    if provider_ok && model_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

impl WorkspaceConfig {
    /// Validates every field (model strings, skill ids, base URL scheme, limits).
    pub fn validate(&self) -> Result<()> {
        for m in self.model.iter().chain(&self.fallbacks) {
            validate_model(m)?;
        }
        for s in &self.skills {
            validate_workspace_id(s).map_err(|e| Error::Invalid(format!("skill id: {e}")))?;
        }
        if let Some(u) = &self.base_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 2048 {
                return Err(Error::Invalid(format!(
                    "invalid base URL {u:?}: expected http:// or https://"
                )));
            }
        }
        self.network.validate()?;
        Ok(())
    }
}

/// What is stored: config plus identity facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceRecord {
    /// Id.
    pub id: String,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// Host uid/gid of the sandbox when bulkhead runs privileged (one per workspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uid: Option<u32>,
    /// Inode of the workspace directory `host_uid` was given for: a copy of the directory
    /// (a tenant moved to another host or restored from backup) has another inode and gets
    /// an id of its own, so two workspaces never share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uid_ino: Option<u64>,
    /// Configuration.
    #[serde(flatten)]
    pub config: WorkspaceConfig,
}

/// A bulkhead installation: one state directory.
#[derive(Debug, Clone)]
pub struct Platform {
    state: StateDir,
    launcher: Option<PathBuf>,
    defaults: LimitsConfig,
    network: crate::net::egress::OperatorNetwork,
}

/// One workspace.
#[derive(Debug, Clone)]
pub struct Workspace {
    state: StateDir,
    launcher: Option<PathBuf>,
    defaults: LimitsConfig,
    network: crate::net::egress::OperatorNetwork,
    record: WorkspaceRecord,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Host ids the launcher said belong to other callers, in the state directory.
const FOREIGN_IDS_FILE: &str = "foreign-host-ids";

fn read_foreign_ids(path: &Path) -> std::collections::BTreeSet<u32> {
    fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The launcher refused `host_uid` because its id registry gives it to another caller (its
/// typed reason, never its text): the id is to be noted as foreign and another tried.
fn is_foreign_refusal(e: &bulkhead_shared::SetupError, host_uid: u32) -> bool {
    e.step == bulkhead_shared::SetupStep::Spec
        && matches!(e.reason, bulkhead_shared::SetupReason::ForeignHostId { id, .. } if id == host_uid)
}

/// Whether sandboxes started with `launcher` run privileged: this process is root, or the
/// launcher is installed setuid-root. Then every workspace gets a host uid of its own from
/// the operator's range ([`launch_rules`]).
pub fn launcher_privileged(launcher: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    fs::metadata(launcher).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o4000 != 0)
}

/// The operator's launch rules as the launcher reads them: for a root process
/// `$BULKHEAD_LAUNCH_CONFIG` when set, else `/etc/bulkhead/launch.toml` when it exists, else
/// the built-in defaults; a root caller is bound by their host id range only
/// ([`bulkhead_policy::LaunchConfig::for_root`]). Used here for the host id range.
pub fn launch_rules() -> Result<bulkhead_policy::LaunchConfig> {
    use bulkhead_policy::launchconf::LAUNCH_CONFIG_PATH;
    let env = nix::unistd::geteuid()
        .is_root()
        .then(|| std::env::var_os("BULKHEAD_LAUNCH_CONFIG"))
        .flatten()
        .map(PathBuf::from);
    let path = match env {
        Some(p) => p,
        None if Path::new(LAUNCH_CONFIG_PATH).exists() => PathBuf::from(LAUNCH_CONFIG_PATH),
        None => return Ok(bulkhead_policy::LaunchConfig::root_default()),
    };
    let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let rules = bulkhead_policy::LaunchConfig::parse(&text)
        .map_err(|e| Error::Invalid(format!("{}: {}", path.display(), e.0)))?;
    Ok(if nix::unistd::geteuid().is_root() {
        rules.for_root()
    } else {
        rules
    })
}

impl Platform {
    /// Opens (and creates if needed) a state directory, reading its `config.toml` and the
    /// `BULKHEAD_*` environment (see [`crate::config`]). `config.launcher` wins over both.
    pub fn open(config: PlatformConfig) -> Result<Platform> {
        let file = crate::config::Config::load(&config.state_dir)?;
        StateDir::new(&config.state_dir).ensure()?;
        // The launcher opens workspace paths without following any symlink, so hand it the
        // real, absolute path: a state dir reached through a symlink (/var/lib -> /data) or
        // given relatively still works.
        let real =
            fs::canonicalize(&config.state_dir).map_err(|e| Error::io(&config.state_dir, e))?;
        let state = StateDir::new(real);
        Ok(Platform {
            state,
            launcher: config.launcher.or(file.launcher),
            defaults: file.limits,
            network: file.network,
        })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        self.state.root()
    }

    /// The operator's egress rules (`[network]` of `config.toml`).
    pub fn operator_network(&self) -> &crate::net::egress::OperatorNetwork {
        &self.network
    }

    /// Creates a workspace.
    pub fn create_workspace(&self, id: &str, mut config: WorkspaceConfig) -> Result<Workspace> {
        validate_workspace_id(id).map_err(|e| Error::Invalid(e.to_string()))?;
        config.validate()?;
        // `[limits] disk`/`inodes` are copied into new workspaces (a later change of the
        // default does not touch existing ones: each change of a limit is a copy of files/).
        if config.limits.disk_bytes.is_none() {
            config.limits.disk_bytes = self.defaults.disk_bytes;
            config.limits.inodes = config.limits.inodes.or(self.defaults.inodes);
        }
        // Validate limits now, not at first use.
        let limits = without_disk(&self.defaults)
            .merged(&config.limits)
            .apply(bulkhead_policy::default_limits());
        check_disk_limits(&limits)?;
        check_limits(&limits)?;
        if limits.disk_bytes != 0 {
            crate::disk::check_supported(self.state.root())?;
        }
        let _lock = self.state.lock()?;
        let dir = self.state.workspace(id);
        if dir.exists() {
            return Err(WorkspaceError::Exists(id.into()).into());
        }
        // The host uid is given at the first privileged launch (Workspace::host_id): files
        // stay ours on disk and reach the sandbox through an id-mapped mount, so no chown.
        let record = WorkspaceRecord {
            id: id.into(),
            created: now(),
            host_uid: None,
            host_uid_ino: None,
            config,
        };
        // Build in a temp dir, then rename: a crash never leaves half a workspace.
        let tmp = self
            .state
            .workspaces()
            .join(format!(".new-{id}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let build = || -> Result<()> {
            mkdir(&tmp, 0o711)?;
            mkdir(&tmp.join("files"), 0o755)?;
            mkdir(&tmp.join("sessions"), 0o700)?;
            mkdir(&tmp.join("run"), 0o700)?;
            let json =
                serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&tmp.join("workspace.json"), &json, 0o600)?;
            fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))
        };
        if let Err(e) = build() {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if limits.disk_bytes != 0 {
            // Its own filesystem, made in place (a mount under a directory being renamed
            // would be needlessly subtle); a failure takes the new workspace away again.
            if let Err(e) = crate::disk::provision(
                self.state.root(),
                &dir,
                limits.disk_bytes,
                limits.inodes,
                &mut || Ok(()),
            ) {
                let _ = crate::disk::release(&dir);
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
        log::info!(target: "workspace", workspace = id; "created workspace");
        Ok(Workspace {
            state: self.state.clone(),
            launcher: self.launcher.clone(),
            defaults: self.defaults.clone(),
            network: self.network.clone(),
            record,
        })
    }

    /// Opens a workspace.
    pub fn workspace(&self, id: &str) -> Result<Workspace> {
        validate_workspace_id(id).map_err(|e| Error::Invalid(e.to_string()))?;
        let record = read_record(&self.state, id)?;
        Ok(Workspace {
            state: self.state.clone(),
            launcher: self.launcher.clone(),
            defaults: self.defaults.clone(),
            network: self.network.clone(),
            record,
        })
    }

    /// All workspaces, sorted by id. Damaged ones are skipped with a warning.
    pub fn list_workspaces(&self) -> Result<Vec<Workspace>> {
        let dir = self.state.workspaces();
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| validate_workspace_id(n).is_ok())
            .collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.workspace(&id) {
                Ok(w) => out.push(w),
                Err(e) => {
                    log::warn!(target: "workspace", workspace = id.as_str(); "skipping damaged workspace: {e}")
                }
            }
        }
        Ok(out)
    }

    /// Deletes a workspace: stops its sandboxes, then wipes everything it had.
    pub fn delete_workspace(&self, id: &str) -> Result<()> {
        let ws = self.workspace(id)?;
        let _lock = self.state.lock()?;
        ws.stop_sandboxes();
        let dir = self.state.workspace(id);
        crate::disk::release(&dir)?;
        // Rename first so a crash mid-delete leaves no half workspace under its id.
        let trash = self
            .state
            .workspaces()
            .join(format!(".del-{id}-{}", std::process::id()));
        fs::rename(&dir, &trash).map_err(|e| Error::io(&dir, e))?;
        fs::remove_dir_all(&trash).map_err(|e| Error::io(&trash, e))?;
        log::info!(target: "workspace", workspace = id; "deleted workspace");
        Ok(())
    }
}

/// Reads `workspaces/<id>/workspace.json` (`id` already validated).
fn read_record(state: &StateDir, id: &str) -> Result<WorkspaceRecord> {
    let path = state.workspace(id).join("workspace.json");
    let data = match fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WorkspaceError::NoSuch(id.into()).into())
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let record: WorkspaceRecord = serde_json::from_slice(&data).map_err(|e| Error::Corrupt {
        path: path.clone(),
        detail: format!("invalid workspace.json: {e}"),
    })?;
    if record.id != id {
        return Err(Error::Corrupt {
            path,
            detail: format!("records id {:?}, expected {id:?}", record.id),
        });
    }
    Ok(record)
}

/// `config.toml`'s `[limits]` as they apply to an existing workspace: the disk and inode
/// limits are copied into a workspace when it is created, never applied afterwards.
fn without_disk(defaults: &LimitsConfig) -> LimitsConfig {
    LimitsConfig {
        disk_bytes: None,
        inodes: None,
        ..defaults.clone()
    }
}

/// The inode limit belongs to a disk limit (said in the flags' words, before the spec's).
fn check_disk_limits(limits: &Limits) -> Result<()> {
    if limits.inodes != 0 && limits.disk_bytes == 0 {
        return Err(Error::Invalid(
            "--inodes needs --disk: the inode count belongs to the workspace's own filesystem"
                .into(),
        ));
    }
    Ok(())
}

impl Workspace {
    /// Id.
    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Stored record.
    pub fn record(&self) -> &WorkspaceRecord {
        &self.record
    }

    /// `workspaces/<id>/`.
    pub fn dir(&self) -> PathBuf {
        self.state.workspace(&self.record.id)
    }

    /// The state directory of the platform this workspace belongs to.
    pub fn state_root(&self) -> &Path {
        self.state.root()
    }

    /// The platform's operator configuration (`config.toml`, then the environment), read
    /// now, so a long-lived host sees an edit on the next call.
    pub fn platform_config(&self) -> Result<crate::config::Config> {
        crate::config::Config::load(self.state.root())
    }

    /// `files/`, mounted at `/workspace`.
    pub fn files_dir(&self) -> PathBuf {
        self.dir().join("files")
    }

    /// `net-audit.log`: one JSON line per proxied connection (beside `files/`, never
    /// visible in the sandbox); the previous one is `net-audit.log.1`.
    pub fn net_audit_log(&self) -> PathBuf {
        self.dir().join(crate::net::proxy::AUDIT_LOG_NAME)
    }

    /// The workspace's egress policy.
    pub fn network(&self) -> &crate::net::egress::NetworkPolicy {
        &self.record.config.network
    }

    /// The operator's egress rules (`[network]` of the platform's `config.toml`).
    pub fn operator_network(&self) -> &crate::net::egress::OperatorNetwork {
        &self.network
    }

    /// `workspace.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("workspace.json")
    }

    /// This workspace as `workspace.json` says now (after another process changed it).
    pub fn reload(&self) -> Result<Workspace> {
        Ok(Workspace {
            record: read_record(&self.state, &self.record.id)?,
            ..self.clone()
        })
    }

    /// Changes the egress policy: under the platform lock, re-reads `workspace.json` (so a
    /// concurrent change is not lost), applies `change`, validates, and writes the file
    /// atomically (tmp + fsync + rename). Nothing is written when `change` fails. Returns
    /// what `change` returned.
    pub fn update_network<T>(
        &mut self,
        change: impl FnOnce(&mut crate::net::egress::NetworkPolicy) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.state.lock()?;
        let path = self.config_path();
        let mut record = read_record(&self.state, &self.record.id)?;
        let out = change(&mut record.config.network)?;
        record.config.network.validate()?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&path, &json, 0o600)?;
        log::info!(
            target: "egress",
            workspace = self.record.id.as_str(),
            allow = record.config.network.allow.join(",").as_str();
            "egress policy changed"
        );
        self.record = record;
        Ok(out)
    }

    /// Changes the enabled skills, like [`Workspace::update_network`]: under the platform
    /// lock, re-reads `workspace.json`, applies `change`, validates, writes atomically.
    pub fn update_skills<T>(
        &mut self,
        change: impl FnOnce(&mut Vec<String>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.state.lock()?;
        let path = self.config_path();
        let mut record = read_record(&self.state, &self.record.id)?;
        let out = change(&mut record.config.skills)?;
        record.config.validate()?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&path, &json, 0o600)?;
        self.record = record;
        Ok(out)
    }

    /// Changes the workspace's limits (the fields `change` sets), like
    /// [`Workspace::update_network`]: under the platform lock, re-read, validate, write
    /// atomically. A new disk or inode limit first makes the workspace a filesystem of that
    /// size and copies `files/` into it ([`crate::disk::provision`]): refused while a
    /// sandbox of the workspace runs, when the files do not fit, and where the state
    /// directory cannot enforce a limit. A disk limit cannot be removed (set a larger one).
    ///
    /// A disk change holds the workspace's `skill-freeze.lock` exclusively (taken before the
    /// platform lock, the order every sandbox start uses) from the running check to the
    /// record write: no sandbox of the workspace starts meanwhile (each start holds it
    /// shared until its sandbox is registered), so none can bind `files/` mid-swap.
    pub fn set_limits(&mut self, change: &LimitsConfig) -> Result<()> {
        let no_start = if change.disk_bytes.is_some() || change.inodes.is_some() {
            Some(self.exclude_starts(std::time::Duration::from_secs(30))?)
        } else {
            None
        };
        let _lock = self.state.lock()?;
        let mut record = read_record(&self.state, &self.record.id)?;
        let before = without_disk(&self.defaults)
            .merged(&record.config.limits)
            .apply(bulkhead_policy::default_limits());
        record.config.limits = record.config.limits.merged(change);
        let after = without_disk(&self.defaults)
            .merged(&record.config.limits)
            .apply(bulkhead_policy::default_limits());
        check_disk_limits(&after)?;
        check_limits(&after)?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        let changed = (before.disk_bytes, before.inodes) != (after.disk_bytes, after.inodes);
        // The same limit again remakes a filesystem that is missing (an interrupted first
        // change), as the error of a sandbox start without it says.
        let missing = no_start.is_some()
            && after.disk_bytes != 0
            && !self.dir().join(crate::disk::IMAGE_NAME).is_file();
        if changed || missing {
            if before.disk_bytes != 0 && after.disk_bytes == 0 {
                return Err(Error::Invalid(
                    "a disk limit cannot be removed: set a larger one".into(),
                ));
            }
            crate::disk::check_supported(self.state.root())?;
            let running = self.running_sandboxes();
            if running > 0 {
                return Err(Error::Invalid(format!(
                    "{running} sandbox(es) of workspace {:?} are running: a new disk limit copies files/ into a new filesystem, so stop them first (or wait for them to end)",
                    self.record.id
                )));
            }
            // The record carries the new limit before the swap: a sandbox started after any
            // crash in it is attested against the limit (or refused by ensure_mounted).
            crate::disk::provision(
                self.state.root(),
                &self.dir(),
                after.disk_bytes,
                after.inodes,
                &mut || {
                    if self.running_sandboxes() > 0 {
                        return Err(Error::Invalid(
                            "a sandbox of the workspace started while files/ was copied: nothing changed; try again once it has ended".into(),
                        ));
                    }
                    write_atomic(&self.config_path(), &json, 0o600)
                },
            )?;
        } else {
            write_atomic(&self.config_path(), &json, 0o600)?;
        }
        log::info!(
            target: "workspace",
            workspace = self.record.id.as_str(),
            disk_bytes = after.disk_bytes,
            inodes = after.inodes;
            "limits changed"
        );
        self.record = record;
        Ok(())
    }

    /// Size and use of the workspace's own filesystem (`None` without a disk limit or
    /// when it is not mounted here).
    pub fn disk_usage(&self) -> Option<crate::disk::Usage> {
        let files = self.files_dir();
        if !crate::disk::mounted_here(&files, &self.dir().join(crate::disk::IMAGE_NAME)) {
            return None;
        }
        crate::disk::usage(&files)
    }

    /// How many sandboxes of this workspace (any process's) are alive.
    pub fn running_sandboxes(&self) -> usize {
        let Ok(rd) = fs::read_dir(self.dir().join("run")) else {
            return 0;
        };
        rd.flatten()
            .filter(|e| {
                let s = fs::read_to_string(e.path()).unwrap_or_default();
                let mut it = s.split_whitespace();
                match (
                    it.next().and_then(|p| p.parse::<u32>().ok()),
                    it.next().and_then(|p| p.parse::<u64>().ok()),
                ) {
                    (Some(pid), Some(start)) => pid > 1 && proc_start_time(pid) == Some(start),
                    _ => false,
                }
            })
            .count()
    }

    /// The workspace's host uid (and gid) for privileged sandboxes: the one recorded in
    /// `workspace.json` while it lies in the operator's range and was given to this very
    /// directory (not a copy of it), else the lowest id of the range no other workspace of
    /// this state directory has, recorded under the platform lock. Changing it is harmless:
    /// no file on disk carries it.
    pub fn host_id(&self) -> Result<u32> {
        use std::os::unix::fs::MetadataExt;
        let rules = launch_rules()?;
        let ino = fs::metadata(self.dir())
            .map_err(|e| Error::io(self.dir(), e))?
            .ino();
        let valid = |r: &WorkspaceRecord| {
            r.host_uid
                .filter(|u| rules.in_host_id_range(*u) && r.host_uid_ino == Some(ino))
        };
        if let Some(u) = valid(&self.record) {
            return Ok(u);
        }
        let _lock = self.state.lock()?;
        let mut record = read_record(&self.state, &self.record.id)?;
        if let Some(u) = valid(&record) {
            return Ok(u);
        }
        let mut used = read_foreign_ids(&self.state.root().join(FOREIGN_IDS_FILE));
        if let Ok(rd) = fs::read_dir(self.state.workspaces()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name == self.record.id || validate_workspace_id(&name).is_err() {
                    continue;
                }
                if let Ok(r) = read_record(&self.state, &name) {
                    used.extend(r.host_uid);
                }
            }
        }
        // Callers of one launcher share the range: each uid starts in a block of its own
        // (1024 blocks), so two controllers rarely meet (and the id registry settles it).
        let block = rules.host_id_count / 1024;
        let offset = (nix::unistd::getuid().as_raw() % 1024) * block;
        let id = (0..rules.host_id_count)
            .map(|i| rules.host_id_start + (offset + i) % rules.host_id_count)
            .find(|u| !used.contains(u))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "the host id range {}+{} of the launch rules is exhausted: widen host_id_count",
                    rules.host_id_start, rules.host_id_count
                ))
            })?;
        record.host_uid = Some(id);
        record.host_uid_ino = Some(ino);
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&self.config_path(), &json, 0o600)?;
        Ok(id)
    }

    /// Starts a sandbox for `spec` (this workspace's). When a setuid launcher keeps an id
    /// registry and refuses the workspace's host id as another caller's, the id is noted as
    /// foreign in the state directory, another is given, and the start is tried again.
    pub fn start_sandbox(
        &self,
        launcher: &Path,
        mut spec: LaunchSpec,
        options: &bulkhead_shared::LaunchOptions,
    ) -> Result<Sandbox> {
        const ATTEMPTS: usize = 64;
        for _ in 0..ATTEMPTS {
            match Sandbox::start_with(launcher, &spec, options) {
                Err(Error::Setup(e)) if is_foreign_refusal(&e, spec.host_uid) => {
                    log::info!(
                        target: "sandbox",
                        workspace = self.record.id.as_str();
                        "host id {} is another caller's; taking another", spec.host_uid
                    );
                    let id = self.replace_host_id(spec.host_uid)?;
                    spec.host_uid = id;
                    spec.host_gid = id;
                }
                other => return other,
            }
        }
        Err(Error::Invalid(format!(
            "{ATTEMPTS} host ids in a row belong to other callers of the launcher: give this controller a range of its own"
        )))
    }

    /// Notes `foreign` as another caller's (`<state>/foreign-host-ids`, never given again)
    /// and gives this workspace a new host id.
    fn replace_host_id(&self, foreign: u32) -> Result<u32> {
        {
            let _lock = self.state.lock()?;
            let path = self.state.root().join(FOREIGN_IDS_FILE);
            let mut ids = read_foreign_ids(&path);
            ids.insert(foreign);
            let json = serde_json::to_vec(&ids).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&path, &json, 0o600)?;
            let mut record = read_record(&self.state, &self.record.id)?;
            if record.host_uid == Some(foreign) {
                record.host_uid = None;
                let json = serde_json::to_vec_pretty(&record)
                    .map_err(|e| Error::Invalid(e.to_string()))?;
                write_atomic(&self.config_path(), &json, 0o600)?;
            }
        }
        Workspace {
            record: read_record(&self.state, &self.record.id)?,
            ..self.clone()
        }
        .host_id()
    }

    /// The launcher binary this workspace's sandboxes are started with.
    pub fn launcher_path(&self) -> Result<PathBuf> {
        match &self.launcher {
            Some(l) => Ok(l.clone()),
            None => find_launcher(),
        }
    }

    /// The workspace's hook executables.
    pub fn hooks(&self) -> &[hook_spec::HookSpec] {
        &self.record.config.hooks
    }

    /// Changes the hook executables like [`Workspace::update_network`]: under the platform
    /// lock, re-read, `change`, atomic write (`change` validates what it adds, so a hook
    /// whose file is gone can still be removed).
    pub fn update_hooks<T>(
        &mut self,
        change: impl FnOnce(&mut Vec<hook_spec::HookSpec>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.state.lock()?;
        let path = self.config_path();
        let mut record = read_record(&self.state, &self.record.id)?;
        let out = change(&mut record.config.hooks)?;
        let json = serde_json::to_vec_pretty(&record).map_err(|e| Error::Invalid(e.to_string()))?;
        write_atomic(&path, &json, 0o600)?;
        log::info!(
            target: "hooks",
            workspace = self.record.id.as_str(),
            hooks = record.config.hooks.len();
            "hooks changed"
        );
        self.record = record;
        Ok(out)
    }

    /// Registers a sandbox started for this workspace outside [`Workspace::sandbox`] (a
    /// skill's, with a spec of its own) in `run/`, so that deleting the workspace stops it
    /// too; it is unregistered when it ends.
    pub fn adopt_sandbox(&self, sb: Sandbox, limits: Limits) -> RunningSandbox {
        let run_file = self.register_run(&sb);
        RunningSandbox {
            sandbox: Some(sb),
            run_file,
            limits,
        }
    }

    /// Effective limits: policy defaults, then `config.toml`'s `[limits]`, then the
    /// workspace's, then `extra`.
    pub fn limits(&self, extra: &LimitsConfig) -> Limits {
        without_disk(&self.defaults)
            .merged(&self.record.config.limits)
            .merged(extra)
            .apply(bulkhead_policy::default_limits())
    }

    /// The launch spec for this workspace.
    pub fn launch_spec(&self, extra: &LimitsConfig) -> Result<LaunchSpec> {
        if extra.disk_bytes.is_some() || extra.inodes.is_some() {
            return Err(Error::Invalid(
                "the disk and inode limits are workspace settings, not per run: use `bulkhead workspace set ID --disk SIZE`".into(),
            ));
        }
        let limits = self.limits(extra);
        check_limits(&limits)?;
        let image = self.dir().join(crate::disk::IMAGE_NAME);
        if limits.disk_bytes != 0 && !crate::disk::mounted_here(&self.files_dir(), &image) {
            let _lock = self.state.lock()?;
            crate::disk::ensure_mounted(&self.dir())?;
        }
        // Backstop: a workspace with a filesystem of its own never runs on anything else
        // (the attestation checks the size only when the spec carries the limit).
        if image.exists() {
            if limits.disk_bytes == 0 {
                return Err(Error::Invalid(format!(
                    "workspace {:?} has a filesystem of its own ({}) but workspace.json records no disk limit: a `workspace set --disk` was interrupted; run it again",
                    self.record.id,
                    image.display()
                )));
            }
            if !crate::disk::mounted_here(&self.files_dir(), &image) {
                return Err(Error::Invalid(format!(
                    "files/ of workspace {:?} is not its filesystem {}: try again (a disk change may have just ended)",
                    self.record.id,
                    image.display()
                )));
            }
        }
        let (uid, gid) = if launcher_privileged(&self.launcher_path()?) {
            let u = self.host_id()?;
            (u, u)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        // Ownership and symlinks are checked by the launcher, which opens the directory
        // without following links: one place decides, and its refusal is a setup failure.
        let files = self.files_dir();
        Ok(LaunchSpec {
            workspace_id: self.record.id.clone(),
            workspace_dir: files.to_string_lossy().into_owned(),
            workspace_writable: true,
            host_uid: uid,
            host_gid: gid,
            hostname: self
                .record
                .id
                .chars()
                .take(63)
                .collect::<String>()
                .trim_start_matches(['-', '_'])
                .replace('_', "-"),
            limits,
            binds: vec![],
        })
    }

    /// `skill-freeze.lock`: held exclusively by a skill holding credentials with this
    /// workspace's files for as long as it runs (the workspace's sandboxes are frozen
    /// meanwhile), shared by [`Workspace::sandbox`] while it starts and registers one.
    pub fn skill_freeze_lock_path(&self) -> PathBuf {
        self.dir().join("skill-freeze.lock")
    }

    fn open_freeze_lock(&self) -> Result<fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let lock_path = self.skill_freeze_lock_path();
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))
    }

    /// `skill-freeze.lock` shared, for a sandbox start: hold it from before the launch spec
    /// is made until the sandbox is registered in `run/` (waits while a credentialed skill
    /// or a disk change holds it exclusively).
    pub fn hold_for_start(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        let lock_path = self.skill_freeze_lock_path();
        nix::fcntl::Flock::lock(self.open_freeze_lock()?, nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| Error::io(&lock_path, e.into()))
    }

    /// `skill-freeze.lock` exclusively (no sandbox of the workspace starts while it is
    /// held), waiting up to `wait` for starts in progress (or a credentialed skill) to end.
    fn exclude_starts(&self, wait: std::time::Duration) -> Result<nix::fcntl::Flock<fs::File>> {
        let lock_path = self.skill_freeze_lock_path();
        let mut file = self.open_freeze_lock()?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(lock),
                Err((f, nix::errno::Errno::EWOULDBLOCK)) => file = f,
                Err((_, e)) => return Err(Error::io(&lock_path, e.into())),
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Invalid(format!(
                    "a sandbox of workspace {:?} kept starting (or a skill holding credentials kept its files) for {} s: nothing changed; try again later",
                    self.record.id,
                    wait.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// This workspace with its record read again from `workspace.json`.
    pub(crate) fn reloaded(&self) -> Result<Workspace> {
        let mut w = self.clone();
        w.record = read_record(&self.state, &self.record.id)?;
        Ok(w)
    }

    /// Starts a sandbox for this workspace (kept alive until dropped or shut down). While a
    /// skill holding credentials has the workspace's files, this waits for it to end: its
    /// freeze covers the sandboxes registered when it began, and no new one may start.
    pub fn sandbox(&self, extra: &LimitsConfig) -> Result<RunningSandbox> {
        let _no_freeze_while_starting = self.hold_for_start()?;
        // The spec from the record as it is now (under the lock no disk change runs): a
        // limit set by another process since this handle was opened is attested.
        let spec = self.reloaded()?.launch_spec(extra)?;
        let launcher = match &self.launcher {
            Some(l) => l.clone(),
            None => find_launcher()?,
        };
        // Egress: a workspace whose policy allows hosts gets the proxy endpoint inside its
        // sandbox (127.0.0.1:3128, served by the worker), whose connections come here over
        // a dedicated channel and are policed by this workspace's proxy. Without it, the
        // sandbox has loopback only. Every sandbox of the workspace in this process gets a
        // context sharing one set of counters, bandwidth limiters and audit-log writer (the
        // proxy's registry), so its caps hold for the workspace, not per sandbox.
        let egress = self.network().is_enabled();
        let proxy = if egress {
            Some(Arc::new(crate::net::proxy::ProxyContext::from_workspace(
                self,
            )?))
        } else {
            None
        };
        let options = bulkhead_shared::LaunchOptions { egress };
        let mut sb = self
            .start_sandbox(&launcher, spec.clone(), &options)
            .inspect_err(|e| {
                log::warn!(target: "sandbox", workspace = self.record.id.as_str(); "sandbox start failed: {e}");
            })?;
        if let (Some(ctx), Some(chan)) = (proxy, sb.take_egress_channel()) {
            let ws = self.record.id.clone();
            // Ends when the sandbox does (the worker's end of the channel closes).
            std::thread::Builder::new()
                .name(format!("egress-{ws}"))
                .spawn(move || {
                    if let Err(e) = crate::net::proxy::serve_channel(
                        chan,
                        ctx,
                        crate::net::fdpass::recv_passed_fd,
                    ) {
                        log::warn!(target: "egress", workspace = ws.as_str(); "egress channel ended: {e}");
                    }
                })
                .map_err(|e| Error::Invalid(format!("cannot start the egress proxy thread: {e}")))?;
        }
        log::info!(
            target: "sandbox",
            workspace = self.record.id.as_str(),
            launcher_pid = sb.info().launcher_pid,
            cgroup = format!("{:?}", sb.info().cgroup_version).as_str();
            "sandbox started"
        );
        let run_file = self.register_run(&sb);
        Ok(RunningSandbox {
            sandbox: Some(sb),
            run_file,
            limits: spec.limits,
        })
    }

    /// Runs one command in a sandbox started for it and stopped after it (`extra` limits
    /// on top of the workspace's). Output goes to `on_output` as it arrives. An OOM kill is
    /// read from the host's cgroup counters, never from the worker.
    pub fn exec(
        &self,
        req: bulkhead_shared::ExecRequest,
        extra: &LimitsConfig,
        on_output: &mut dyn FnMut(bulkhead_shared::Stream, &[u8]),
    ) -> Result<crate::sandbox::ExecOutcome> {
        let mut rs = self.sandbox(extra)?;
        let outcome = rs.get().exec(req, on_output);
        let end = rs.shutdown();
        let mut outcome = outcome?;
        if let (Ok(end), bulkhead_shared::ExitKind::Signal(9)) = (&end, outcome.result.exit) {
            outcome.oom_killed |= end.oom_kills > 0;
        }
        Ok(outcome)
    }

    /// Records a started sandbox in `run/<launcher pid>`: the pid, its start time and the
    /// sandbox's cgroup directories ([`crate::sandbox::freeze::RunEntry`]), so that any
    /// process can stop or freeze it.
    fn register_run(&self, sb: &Sandbox) -> PathBuf {
        let pid = sb.info().launcher_pid;
        let run_file = self.dir().join("run").join(pid.to_string());
        let entry = crate::sandbox::freeze::RunEntry {
            launcher_pid: pid,
            start: proc_start_time(pid).unwrap_or(0),
            cgroup_dirs: sb.info().cgroup_dirs.iter().map(PathBuf::from).collect(),
        };
        if let Err(e) = write_atomic(&run_file, entry.render().as_bytes(), 0o600) {
            log::warn!(target: "sandbox", workspace = self.record.id.as_str(); "cannot record the sandbox in run/: {e}");
        }
        run_file
    }

    /// Freezes every running sandbox of this workspace, whichever process started it, until
    /// the returned guard is dropped (see [`crate::sandbox::freeze`]). A sandbox that cannot
    /// be frozen is stopped instead (its launcher gets SIGTERM and kills everything in it); if
    /// it cannot be stopped either, the error says so and nothing stays frozen.
    pub fn freeze_sandboxes(&self) -> Result<crate::sandbox::freeze::Frozen> {
        use crate::sandbox::freeze::{freeze, Frozen, RunEntry};
        let mut all = Frozen::default();
        let run = self.dir().join("run");
        let Ok(rd) = fs::read_dir(&run) else {
            return Ok(all);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue; // a temporary file of write_atomic
            }
            let Some(entry) = fs::read_to_string(e.path())
                .ok()
                .and_then(|t| RunEntry::parse(&t))
            else {
                continue;
            };
            if entry.launcher_pid <= 1 || proc_start_time(entry.launcher_pid) != Some(entry.start) {
                continue; // ended
            }
            match freeze(&entry) {
                Ok(f) => all.merge(f),
                Err(why) => {
                    log::warn!(
                        target: "sandbox",
                        workspace = self.record.id.as_str(),
                        launcher_pid = entry.launcher_pid;
                        "cannot freeze a sandbox ({why}); stopping it instead"
                    );
                    if !stop_launcher(entry.launcher_pid, entry.start) {
                        return Err(Error::Invalid(format!(
                            "cannot freeze or stop the sandbox of launcher pid {} of workspace {:?} ({why}), so the skill is not run; end that run (or kill that launcher) and try again",
                            entry.launcher_pid,
                            self.record.id
                        )));
                    }
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(all)
    }

    /// Stops every sandbox of this workspace that any process started.
    pub fn stop_sandboxes(&self) {
        let run = self.dir().join("run");
        let Ok(rd) = fs::read_dir(&run) else { return };
        for e in rd.flatten() {
            let Ok(s) = fs::read_to_string(e.path()) else {
                continue;
            };
            let mut it = s.split_whitespace();
            let (Some(pid), Some(start)) = (
                it.next().and_then(|p| p.parse::<i32>().ok()),
                it.next().and_then(|p| p.parse::<u64>().ok()),
            ) else {
                continue;
            };
            if pid > 1 {
                stop_launcher(pid as u32, start);
            }
            let _ = fs::remove_file(e.path());
        }
    }
}

/// SIGTERM to a sandbox's launcher (started at `start`), which kills every process of the
/// sandbox; waits up to 5 s for it to end. Whether it is gone.
fn stop_launcher(pid: u32, start: u64) -> bool {
    if proc_start_time(pid) != Some(start) {
        return true;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(raw),
        nix::sys::signal::Signal::SIGTERM,
    );
    for _ in 0..500 {
        if proc_start_time(pid) != Some(start) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Start time (clock ticks since boot) of a process, to tell it from a reused pid.
fn proc_start_time(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A sandbox started through a workspace; unregisters itself when it ends.
#[derive(Debug)]
pub struct RunningSandbox {
    sandbox: Option<Sandbox>,
    run_file: PathBuf,
    limits: Limits,
}

impl RunningSandbox {
    /// The sandbox.
    pub fn get(&mut self) -> &mut Sandbox {
        self.sandbox
            .as_mut()
            .expect("sandbox present until shutdown")
    }

    /// The limits it was started with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Stops it and returns how it ended.
    pub fn shutdown(mut self) -> Result<crate::sandbox::SandboxExit> {
        let sb = self.sandbox.take().expect("sandbox present until shutdown");
        let r = sb.shutdown();
        let _ = fs::remove_file(&self.run_file);
        r
    }
}

impl Drop for RunningSandbox {
    fn drop(&mut self) {
        if let Some(sb) = self.sandbox.take() {
            drop(sb);
            let _ = fs::remove_file(&self.run_file);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_shared::{SetupError, SetupReason, SetupStep};

    fn refusal(step: SetupStep, reason: SetupReason, detail: &str) -> SetupError {
        SetupError {
            step,
            errno: 0,
            path: "/var/lib/bulkhead-launch/ids/7".into(),
            detail: detail.into(),
            reason,
        }
    }

    #[test]
    fn a_foreign_host_id_is_recognised_by_its_typed_reason_not_its_text() {
        let foreign = SetupReason::ForeignHostId { id: 7, owner: 1001 };
        assert!(is_foreign_refusal(
            &refusal(SetupStep::Spec, foreign, "pick another id"),
            7
        ));
        // The words alone decide nothing (a path or a message may carry them).
        let words = format!("host id 7 {}", bulkhead_policy::launchconf::FOREIGN_ID);
        assert!(!is_foreign_refusal(
            &refusal(SetupStep::Spec, SetupReason::Other, &words),
            7
        ));
        // Another id than the one asked for, or another step, is no such refusal.
        assert!(!is_foreign_refusal(
            &refusal(SetupStep::Spec, foreign, &words),
            8
        ));
        assert!(!is_foreign_refusal(
            &refusal(SetupStep::Mounts, foreign, &words),
            7
        ));
    }
}
