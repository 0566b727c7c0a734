//! `/etc/bulkhead/launch.toml`: what callers of a privileged launcher may ask for.
//!
//! When `bulkhead-launch` is installed setuid-root, this file is the only source of its
//! privilege decisions: who may call it, under which state roots workspace directories may
//! lie, which host ids sandboxes run as, the most a sandbox may get, and which other host
//! directories may be bound. The launcher refuses the file unless root owns it and nobody
//! else can write it (checked with [`check_file_meta`]), and refuses every request beyond
//! it. Parsing is strict: an unknown key is an error, not a silently ignored typo.
//!
//! ```toml
//! allowed_users = ["bulkhead"]
//! allowed_groups = ["bulkhead"]
//! state_roots = ["/var/lib/bulkhead"]
//! host_id_start = 1200000000
//! host_id_count = 1048576
//! # cgroup_parent = "/system.slice/bulkhead.service"
//! bind_paths = []
//! id_registry = "/var/lib/bulkhead-launch/ids"
//! max_ids_per_caller = 16384
//! [limits]
//! memory_max = "8G"
//! pids_max = 4096
//! tmp_max = "4G"
//! shm_max = "1G"
//! nofile_max = 65536
//! # disk_max = "10G"       # set: every sandbox needs a disk limit of at most this
//! # inodes_max = 1000000   # set: every sandbox needs an inode limit of at most this
//! ```

use std::fmt;

use serde::Deserialize;

use crate::defaults::*;
use crate::size::parse_size;
use crate::spec::check_abs_path;

/// Where a privileged launcher reads its configuration. Fixed at build time: a setuid
/// program takes no path from its caller.
pub const LAUNCH_CONFIG_PATH: &str = "/etc/bulkhead/launch.toml";

/// Largest configuration file accepted.
pub const MAX_CONFIG_BYTES: u64 = 64 << 10;

/// What the launcher's refusal of a host id held by another caller says (see
/// `id_registry`), for humans; the controller acts on the refusal's typed reason
/// (`SetupReason::ForeignHostId`) and picks another id.
pub const FOREIGN_ID: &str = "belongs to another caller";

/// Smallest allowed `host_id_start`: below it live ordinary accounts (and 65534, nobody).
pub const MIN_HOST_ID_START: u32 = 100_000;

/// A user or group, by name or number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// Numeric id.
    Id(u32),
    /// Name, looked up in `/etc/passwd` or `/etc/group`.
    Name(String),
}

/// A byte size: a number, or a string such as `512M` or `1.5G` ([`parse_size`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u64),
    Str(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Size, String> {
        match r {
            SizeRepr::Int(n) => Ok(Size(n)),
            SizeRepr::Str(s) => parse_size(&s).map(Size),
        }
    }
}

/// Ceilings on what one sandbox may get.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ceilings {
    /// Largest memory limit.
    #[serde(default = "d_memory")]
    pub memory_max: Size,
    /// Largest swap limit.
    #[serde(default = "d_swap")]
    pub swap_max: Size,
    /// Most processes and threads.
    #[serde(default = "d_pids")]
    pub pids_max: u32,
    /// Largest `/tmp`.
    #[serde(default = "d_tmp")]
    pub tmp_max: Size,
    /// Largest `/dev/shm`.
    #[serde(default = "d_tmp")]
    pub shm_max: Size,
    /// Most open files per process.
    #[serde(default = "d_nofile")]
    pub nofile_max: u32,
    /// Highest cpu weight (cgroup v2 scale, 1-10000).
    #[serde(default = "d_cpu_weight")]
    pub cpu_weight_max: u32,
    /// Most CPU one sandbox may use, in percent of one CPU (200 = two CPUs). Set, a sandbox
    /// without a quota is refused too. Unset: no ceiling.
    #[serde(default)]
    pub cpu_percent_max: Option<u32>,
    /// Largest disk limit of a workspace (its own filesystem at `/workspace`). Set, a
    /// sandbox without a disk limit is refused too. Unset: no ceiling.
    #[serde(default)]
    pub disk_max: Option<Size>,
    /// Most inodes of a workspace's filesystem. Set, a sandbox without an inode limit is
    /// refused too. Unset: no ceiling.
    #[serde(default)]
    pub inodes_max: Option<u64>,
}

fn d_memory() -> Size {
    Size(MAX_MEMORY_BYTES)
}
fn d_swap() -> Size {
    Size(MAX_MEMORY_BYTES)
}
fn d_pids() -> u32 {
    MAX_PIDS
}
fn d_tmp() -> Size {
    Size(MAX_TMPFS_BYTES)
}
fn d_nofile() -> u32 {
    MAX_NOFILE
}
fn d_cpu_weight() -> u32 {
    10_000
}

impl Default for Ceilings {
    fn default() -> Ceilings {
        Ceilings {
            memory_max: d_memory(),
            swap_max: d_swap(),
            pids_max: d_pids(),
            tmp_max: d_tmp(),
            shm_max: d_tmp(),
            nofile_max: d_nofile(),
            cpu_weight_max: d_cpu_weight(),
            cpu_percent_max: None,
            disk_max: None,
            inodes_max: None,
        }
    }
}

/// The parsed, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchConfig {
    /// Users who may call the launcher.
    #[serde(default)]
    pub allowed_users: Vec<Principal>,
    /// Groups whose members (primary or supplementary) may call the launcher.
    #[serde(default)]
    pub allowed_groups: Vec<Principal>,
    /// Workspace directories and bound directories of the caller must lie strictly under
    /// one of these. Empty only in [`LaunchConfig::root_default`].
    #[serde(default)]
    pub state_roots: Vec<String>,
    /// First host uid/gid of the sandboxes.
    #[serde(default = "d_id_start")]
    pub host_id_start: u32,
    /// How many host ids (one per workspace).
    #[serde(default = "d_id_count")]
    pub host_id_count: u32,
    /// The caller's cgroup must be this one or inside it (a path from the cgroup root).
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    /// Other host directories callers may bind, read-only.
    #[serde(default)]
    pub bind_paths: Vec<String>,
    /// A root-owned directory where the launcher records which caller holds each host id
    /// (one file per id, holding the caller's uid): a setuid caller can never run a sandbox
    /// as a host id another caller's workspace holds. Unset: one pool for every caller.
    #[serde(default)]
    pub id_registry: Option<String>,
    /// With `id_registry`: the most host ids one caller may hold, so no caller can take the
    /// whole range from the others. Default [`DEFAULT_MAX_IDS_PER_CALLER`].
    #[serde(default = "d_max_ids")]
    pub max_ids_per_caller: u32,
    /// Ceilings.
    #[serde(default)]
    pub limits: Ceilings,
}

fn d_id_start() -> u32 {
    HOST_ID_RANGE_START
}
fn d_id_count() -> u32 {
    HOST_ID_RANGE_LEN
}
fn d_max_ids() -> u32 {
    DEFAULT_MAX_IDS_PER_CALLER
}

/// Default of `max_ids_per_caller`: a sixty-fourth of the default range, far more
/// workspaces than one controller serves, far fewer than the range holds.
pub const DEFAULT_MAX_IDS_PER_CALLER: u32 = 16_384;

/// A refused configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{LAUNCH_CONFIG_PATH}: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl LaunchConfig {
    /// The rules for a caller that is root already (nothing to protect from it): the
    /// default host id range and the policy's absolute ceilings, any state root.
    pub fn root_default() -> LaunchConfig {
        LaunchConfig {
            allowed_users: vec![],
            allowed_groups: vec![],
            state_roots: vec![],
            host_id_start: HOST_ID_RANGE_START,
            host_id_count: HOST_ID_RANGE_LEN,
            cgroup_parent: None,
            bind_paths: vec![],
            id_registry: None,
            max_ids_per_caller: DEFAULT_MAX_IDS_PER_CALLER,
            limits: Ceilings::default(),
        }
    }

    /// What of these rules binds a root caller: the host id range (so that root and setuid
    /// callers hand out the same ids), nothing else: root could mount, map and allocate
    /// whatever it likes by hand, so state roots, bind paths, callers, the cgroup parent and
    /// the ceilings are [`LaunchConfig::root_default`]'s.
    pub fn for_root(self) -> LaunchConfig {
        LaunchConfig {
            host_id_start: self.host_id_start,
            host_id_count: self.host_id_count,
            ..LaunchConfig::root_default()
        }
    }

    /// Parses and validates the file's text.
    pub fn parse(text: &str) -> Result<LaunchConfig, ConfigError> {
        let cfg: LaunchConfig = toml::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.state_roots.is_empty() {
            return bad("`state_roots` is empty: list the directories under which workspace directories may lie (e.g. [\"/var/lib/bulkhead\"])".into());
        }
        for (key, list) in [
            ("state_roots", &self.state_roots),
            ("bind_paths", &self.bind_paths),
        ] {
            for p in list {
                if let Err(e) = check_abs_path("path", p) {
                    return bad(format!("`{key}`: {}", e.detail));
                }
            }
        }
        if self.allowed_users.is_empty() && self.allowed_groups.is_empty() {
            return bad("neither `allowed_users` nor `allowed_groups` is set: nobody but root could use the launcher (name the controller's user or group)".into());
        }
        for p in self.allowed_users.iter().chain(&self.allowed_groups) {
            if matches!(p, Principal::Id(0)) || matches!(p, Principal::Name(n) if n == "root") {
                return bad(
                    "root needs no permission: do not list it in allowed_users or allowed_groups"
                        .into(),
                );
            }
        }
        if self.host_id_start < MIN_HOST_ID_START {
            return bad(format!(
                "`host_id_start` {} is below {MIN_HOST_ID_START}: pick a range no account uses (default {HOST_ID_RANGE_START})",
                self.host_id_start
            ));
        }
        if self.host_id_count == 0
            || u64::from(self.host_id_start) + u64::from(self.host_id_count)
                > u64::from(u32::MAX - 1)
        {
            return bad(format!(
                "`host_id_count` {} does not fit after `host_id_start` {} (ids end below 4294967295)",
                self.host_id_count, self.host_id_start
            ));
        }
        if self.max_ids_per_caller == 0 {
            return bad(
                "`max_ids_per_caller` is 0: no caller could run a sandbox; set at least 1 \
                 (default 16384)"
                    .into(),
            );
        }
        if let Some(dir) = &self.id_registry {
            check_abs_path("id_registry", dir)
                .map_err(|e| ConfigError(format!("`id_registry`: {}", e.detail)))?;
        }
        if let Some(cg) = &self.cgroup_parent {
            if cg != "/" {
                check_abs_path("cgroup_parent", cg)
                    .map_err(|e| ConfigError(format!("`cgroup_parent`: {}", e.detail)))?;
            }
        }
        let l = &self.limits;
        for (key, v, max) in [
            ("memory_max", l.memory_max.0, MAX_MEMORY_BYTES),
            ("swap_max", l.swap_max.0, MAX_MEMORY_BYTES),
            ("tmp_max", l.tmp_max.0, MAX_TMPFS_BYTES),
            ("shm_max", l.shm_max.0, MAX_TMPFS_BYTES),
            ("pids_max", l.pids_max.into(), MAX_PIDS.into()),
            ("nofile_max", l.nofile_max.into(), MAX_NOFILE.into()),
            ("cpu_weight_max", l.cpu_weight_max.into(), 10_000),
        ] {
            if v > max {
                return bad(format!(
                    "[limits] `{key}` {v} is above bulkhead's own ceiling {max}"
                ));
            }
        }
        if let Some(d) = l.disk_max {
            if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&d.0) {
                return bad(format!(
                    "[limits] `disk_max` {} is outside {MIN_DISK_BYTES}..={MAX_DISK_BYTES} bytes (16M to 16T)",
                    d.0
                ));
            }
        }
        if let Some(n) = l.inodes_max {
            if !(MIN_INODES..=MAX_INODES).contains(&n) {
                return bad(format!(
                    "[limits] `inodes_max` {n} is outside {MIN_INODES}..={MAX_INODES}"
                ));
            }
        }
        if l.cpu_weight_max == 0 || l.cpu_percent_max == Some(0) {
            return bad(
                "[limits] `cpu_weight_max` and `cpu_percent_max` must be at least 1".into(),
            );
        }
        if l.memory_max.0 < MIN_MEMORY_BYTES || l.pids_max < MIN_PIDS || l.nofile_max < 64 {
            return bad("[limits] ceilings below the smallest working sandbox (memory 8M, pids 4, nofile 64)".into());
        }
        Ok(())
    }

    /// Whether `id` is a host id this configuration hands out.
    pub fn in_host_id_range(&self, id: u32) -> bool {
        id >= self.host_id_start && id - self.host_id_start < self.host_id_count
    }

    /// The state root `path` lies strictly under, if any. With no state roots (root's
    /// defaults) every path qualifies.
    pub fn under_state_root(&self, path: &str) -> bool {
        self.state_roots.is_empty() || self.state_roots.iter().any(|r| strictly_under(path, r))
    }

    /// Whether `path` is one of the operator's `bind_paths` or lies under one.
    pub fn in_bind_paths(&self, path: &str) -> bool {
        self.bind_paths
            .iter()
            .any(|r| path == r || strictly_under(path, r))
    }

    /// Whether a caller with real uid `uid` and groups `gids` (primary and supplementary)
    /// may use the launcher. Names are resolved through `passwd` and `group` (the contents
    /// of `/etc/passwd` and `/etc/group`).
    pub fn allows(&self, uid: u32, gids: &[u32], passwd: &str, group: &str) -> bool {
        let user_ok = self.allowed_users.iter().any(|p| match p {
            Principal::Id(i) => *i == uid,
            Principal::Name(n) => lookup_id(passwd, n) == Some(uid),
        });
        let group_ok = self.allowed_groups.iter().any(|p| {
            let g = match p {
                Principal::Id(i) => Some(*i),
                Principal::Name(n) => lookup_id(group, n),
            };
            g.is_some_and(|g| gids.contains(&g))
        });
        user_ok || group_ok
    }

    /// Whether a cgroup path (from `/proc/self/cgroup`) lies within `cgroup_parent`.
    pub fn cgroup_allowed(&self, path: &str) -> bool {
        match self.cgroup_parent.as_deref() {
            None | Some("/") => true,
            Some(parent) => path == parent || strictly_under(path, parent),
        }
    }
}

/// `path` is below `root` by at least one component (both normalized and absolute).
pub fn strictly_under(path: &str, root: &str) -> bool {
    path.len() > root.len() + 1 && path.starts_with(root) && path.as_bytes()[root.len()] == b'/'
}

/// The id of `name` in a `/etc/passwd` or `/etc/group` text (`name:x:id:...`).
pub fn lookup_id(db: &str, name: &str) -> Option<u32> {
    db.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

/// Checks the configuration file's metadata: a regular file owned by root that neither its
/// group nor others can write, of bounded size. Apply the same owner and mode check to
/// each directory above it ([`check_dir_meta`]).
pub fn check_file_meta(owner: u32, mode: u32, size: u64) -> Result<(), ConfigError> {
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(ConfigError("is not a regular file".into()));
    }
    if owner != 0 {
        return Err(ConfigError(format!(
            "is owned by uid {owner}, not root: a privileged launcher only trusts a root-owned configuration (chown root:root)"
        )));
    }
    if mode & 0o022 != 0 {
        return Err(ConfigError(format!(
            "mode {:o} lets others write it: chmod go-w",
            mode & 0o7777
        )));
    }
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "is larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Checks a directory on the way to the configuration file: root-owned, not writable by
/// group or others (else someone else could swap the file).
pub fn check_dir_meta(dir: &str, owner: u32, mode: u32) -> Result<(), ConfigError> {
    if owner != 0 || mode & 0o022 != 0 {
        return Err(ConfigError(format!(
            "its directory {dir} must be owned by root and not writable by group or others (owner {owner}, mode {:o})",
            mode & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
allowed_users = ["bulkhead", 1234]
allowed_groups = ["tenants"]
state_roots = ["/var/lib/bulkhead"]
host_id_start = 1200000000
host_id_count = 1000
cgroup_parent = "/system.slice/bulkhead.service"
bind_paths = ["/opt/tools"]
[limits]
memory_max = "8G"
pids_max = 4096
tmp_max = "4G"
shm_max = 1073741824
nofile_max = 65536
"#;
    const PASSWD: &str =
        "root:x:0:0::/root:/bin/sh\nbulkhead:x:998:998::/var/lib/bulkhead:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nbulkhead:x:998:\ntenants:x:2000:alice\n";

    #[test]
    fn parses_the_documented_example() {
        let c = LaunchConfig::parse(GOOD).unwrap();
        assert_eq!(c.limits.memory_max, Size(8 << 30));
        assert_eq!(c.limits.shm_max, Size(1 << 30));
        assert_eq!(c.max_ids_per_caller, DEFAULT_MAX_IDS_PER_CALLER);
        assert!(c.in_host_id_range(1_200_000_999));
        assert!(!c.in_host_id_range(1_200_001_000));
        assert!(c.allows(998, &[998], PASSWD, GROUP));
        assert!(c.allows(1234, &[1234], PASSWD, GROUP));
        assert!(c.allows(5000, &[5000, 2000], PASSWD, GROUP));
        assert!(!c.allows(5000, &[5000], PASSWD, GROUP));
        assert!(!c.allows(0, &[0], PASSWD, GROUP));
        assert!(c.under_state_root("/var/lib/bulkhead/workspaces/a/files"));
        assert!(!c.under_state_root("/var/lib/bulkhead"));
        assert!(!c.under_state_root("/var/lib/bulkheadx/a"));
        assert!(c.in_bind_paths("/opt/tools/bin"));
        assert!(!c.in_bind_paths("/opt/toolsx"));
        assert!(c.cgroup_allowed("/system.slice/bulkhead.service/x"));
        assert!(!c.cgroup_allowed("/user.slice/user-1000.slice"));
    }

    /// The same sizes as the CLI's `--memory`: fractions and a `B` suffix too.
    #[test]
    fn sizes_are_written_as_on_the_command_line() {
        let c = LaunchConfig::parse(
            "state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\n\
             memory_max=\"1.5G\"\ntmp_max=\"0.5G\"\nshm_max=\"65536B\"",
        )
        .unwrap();
        assert_eq!(c.limits.memory_max, Size(3 << 29));
        assert_eq!(c.limits.tmp_max, Size(1 << 29));
        assert_eq!(c.limits.shm_max, Size(65536));
        let e = LaunchConfig::parse(
            "state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\nmemory_max=\"1.5.5G\"",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a size") && e.contains("1.5G"), "{e}");
    }

    #[test]
    fn refuses_what_it_does_not_understand_or_cannot_honour() {
        for (text, want) in [
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\nstate_root=\"/x\"", "unknown field"),
            ("allowed_users=[\"a\"]", "state_roots"),
            ("state_roots=[\"/s\"]", "nobody but root"),
            ("state_roots=[\"s\"]\nallowed_users=[\"a\"]", "absolute"),
            ("state_roots=[\"/s/../etc\"]\nallowed_users=[\"a\"]", "normalized"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"root\"]", "root"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\nhost_id_start=1000", "below"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\nhost_id_start=4294967000\nhost_id_count=1000", "fit"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\nmemory_max=\"2T\"", "memory_max"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\nmemory_max=\"lots\"", "not a size"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\nmax_ids_per_caller=0", "max_ids_per_caller"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\ndisk_max=\"1M\"", "disk_max"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\ndisk_max=\"much\"", "not a size"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\ninodes_max=1", "inodes_max"),
            ("state_roots=[\"/s\"]\nallowed_users=[\"a\"]\n[limits]\ndisk=\"1G\"", "unknown field"),
        ] {
            let e = LaunchConfig::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn file_and_directory_metadata() {
        check_file_meta(0, libc::S_IFREG | 0o644, 100).unwrap();
        assert!(check_file_meta(1000, libc::S_IFREG | 0o644, 100).is_err());
        assert!(check_file_meta(0, libc::S_IFREG | 0o664, 100).is_err());
        assert!(check_file_meta(0, libc::S_IFREG | 0o646, 100).is_err());
        assert!(check_file_meta(0, libc::S_IFDIR | 0o755, 100).is_err());
        assert!(check_file_meta(0, libc::S_IFREG | 0o644, 1 << 20).is_err());
        check_dir_meta("/etc", 0, 0o755).unwrap();
        assert!(check_dir_meta("/etc", 0, 0o777).is_err());
        assert!(check_dir_meta("/etc", 5, 0o755).is_err());
    }
}
