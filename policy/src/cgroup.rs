//! Where a sandbox's cgroup goes and what is written into it: a pure plan.
//!
//! The launcher (`bulkhead-launch`, its `cgroup` module) applies the plan with plain file
//! writes; this module only decides. It does no I/O of its own: the contents of
//! `/proc/self/cgroup` and `/proc/self/mountinfo`, the prefix under which mount points are
//! found, and a `read` function for the few cgroup files it must look at are all passed in,
//! so tests point them at a temporary directory.
//!
//! # Rules
//!
//! 1. **Placement.** The sandbox cgroup is created *under the launcher's own cgroup*, never
//!    elsewhere (delegation: whoever runs bulkhead decides where its sandboxes live). The own
//!    cgroup comes from `/proc/self/cgroup` (v2 line `0::/path`, v1 lines
//!    `N:ctrl1,ctrl2:/path`). Hierarchy mount points come from `/proc/self/mountinfo`:
//!    fstype `cgroup2`, or fstype `cgroup` with the controller among the super options. The
//!    mount's root field is honoured: the own path is taken relative to it, and a mount whose
//!    root does not contain the own path is not used. A path with a `..` component (a
//!    process outside its cgroup namespace's root) is never used. Mount points are looked up
//!    under [`CgroupInputs::root_prefix`] (`/` in production).
//! 2. **Controllers.** `memory`, `pids` and `cpu` are required ([`REQUIRED_CONTROLLERS`]).
//!    cgroup v2 is used when the unified hierarchy offers all three to the delegated cgroup
//!    `D` (rule 3) in its `cgroup.controllers`; otherwise v1 when each of them is on a v1
//!    hierarchy; otherwise planning fails with an error that starts "no cgroup hierarchy
//!    offers memory, pids, cpu:" and says what is missing and what to do. A controller the
//!    kernel does not give is never silently dropped.
//! 3. **v2 and the no-internal-process rule.** A non-root v2 cgroup that holds processes
//!    cannot enable controllers for its children. Let `D` be the own cgroup, except when the
//!    own cgroup's last component is [`LEAF_NAME`] (`bulkhead-leaf`): then `D` is its
//!    parent. If `D/cgroup.subtree_control` lacks a required controller:
//!    - when `D` holds processes (`D/cgroup.procs` is non-empty) and `D` is not the root
//!      cgroup (the root has no `cgroup.type` file), the plan creates `D/bulkhead-leaf`
//!      and moves every process of `D` into it ([`CgroupFile::MoveAllProcs`]);
//!    - then it writes `+memory +pids +cpu` to `D/cgroup.subtree_control`.
//!
//!    A failure there (EACCES, EPERM, EBUSY, EROFS) means the cgroup is not delegated to us;
//!    the launcher says so: "run bulkhead in a cgroup delegated to it (systemd: Delegate=yes),
//!    or as root", and when not root, "rootless mode needs a delegated cgroup". The leaf is
//!    never removed by bulkhead: it holds the launcher's (and its siblings') processes and
//!    later launches reuse it. The sandbox cgroup is `D/bulkhead-<name>`.
//! 4. **v2 limits.** `memory.max` = memory, `memory.swap.max` = swap (only if the file
//!    exists), `pids.max`, `cpu.weight`, and `cpu.max` = `"<quota> <period>"` only when a
//!    quota is set (otherwise the inherited `max` stays).
//! 5. **v1.** For each of memory, pids, cpu the sandbox directory is
//!    `<mount>/<own path relative to the mount root>/bulkhead-<name>`; controllers
//!    co-mounted on one hierarchy (`cpu,cpuacct`) share one directory, so
//!    [`CgroupPlan::dirs`] holds one directory per distinct hierarchy, in the order memory,
//!    pids, cpu. Limits: `memory.limit_in_bytes`, then `memory.memsw.limit_in_bytes` =
//!    memory + swap (only if the file exists; the memory limit must be written first because
//!    the kernel keeps memsw ≥ memory), `pids.max`, `cpu.shares` = max(2, weight × 1024 /
//!    100), then `cpu.cfs_period_us` and `cpu.cfs_quota_us` when a quota is set.
//! 6. **Stale directories.** A sandbox directory that already exists and holds processes is
//!    an error (planning checks its `cgroup.procs`). One that exists but is empty is left
//!    from a crash: the launcher removes and recreates it when it applies
//!    [`CgroupFile::Mkdir`]. An existing `bulkhead-leaf` is reused as it is.
//! 7. **OOM.** [`CgroupPlan::oom_file`] is v2 `memory.events` or v1 `memory.oom_control`;
//!    both carry a line `oom_kill N`, read by [`parse_oom_kills`].
//! 8. **Teardown** (launcher): v2 writes `1` to `cgroup.kill` when present, otherwise sends
//!    SIGKILL to each pid of `cgroup.procs`; v1 sends SIGKILL to each pid of each directory's
//!    `cgroup.procs`; then it polls until `cgroup.procs` is empty (about 2 s at most) and
//!    removes each directory of [`CgroupPlan::dirs`], and nothing else.
//! 9. **IO.** Only when the limits ask for it: an `io_weight` other than 100, or an
//!    `io_max`. Without either, no io/blkio file is touched (the sandbox shares its parent's
//!    IO cgroup, as before). v2: `io` joins the controllers enabled in
//!    `D/cgroup.subtree_control` when offered; `io.weight` = `default <w>` and
//!    `io.bfq.weight` (w clamped to 1..=1000) are optional writes (best effort, like
//!    `memory.swap.max`: a kernel without iocost or BFQ has neither file); `io.max` =
//!    `MAJ:MIN rbps=.. wbps=.. riops=.. wiops=..` (the keys set) is required, and an
//!    `io_max` without the io controller, or without [`CgroupInputs::io_device`], fails
//!    planning (fail closed). v1: a `blkio` directory is added to [`CgroupPlan::dirs`]
//!    (after memory, pids, cpu) when a ceiling is set, or when the own blkio cgroup has
//!    `blkio.weight` or `blkio.bfq.weight` (weight w × 5 clamped to 10..=1000, resp. w
//!    clamped to 1..=1000); ceilings go to `blkio.throttle.{read,write}_{bps,iops}_device`
//!    as `MAJ:MIN value` (v1 throttling covers direct IO and reads; buffered writes are
//!    written back outside the sandbox's cgroup and are not throttled on v1).
//!
//! Limits are checked only against the ranges the kernel itself enforces (`cpu.weight`
//! 1..=10000, a quota of at least 1 ms in a period of 1 ms..=1 s), so a bad value fails
//! here with a clear message rather than as `EINVAL` halfway through setup. Ceilings and
//! defaults are [`crate::defaults`]' business.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use bulkhead_wire::{CgroupVersion, IoMax, Limits};

use crate::defaults::DEFAULT_IO_WEIGHT;

/// Controllers every sandbox cgroup must have, in the order v1 directories are listed.
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Name of the v2 leaf cgroup that takes the delegated cgroup's own processes.
pub const LEAF_NAME: &str = "bulkhead-leaf";

/// Prefix of every sandbox cgroup's directory name.
pub const SANDBOX_PREFIX: &str = "bulkhead-";

/// Longest sandbox name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// What the kernel tells about the launcher's place in the cgroup hierarchies.
#[derive(Debug, Clone, Copy)]
pub struct CgroupInputs<'a> {
    /// Contents of `/proc/self/cgroup`.
    pub proc_self_cgroup: &'a str,
    /// Contents of `/proc/self/mountinfo`.
    pub mountinfo: &'a str,
    /// Prepended to every mount point (`/` in production, a temp dir in tests).
    pub root_prefix: &'a Path,
    /// `major:minor` of the whole block device holding the workspace, for `io.max` /
    /// `blkio.throttle.*`; `None` when the workspace is not on a block device (tmpfs, overlay,
    /// a network filesystem), where an IO ceiling cannot be applied.
    pub io_device: Option<(u32, u32)>,
}

/// One step of a plan, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupFile {
    /// Write `value` to the existing file `path` (never created).
    Write {
        /// The cgroup file.
        path: PathBuf,
        /// What to write.
        value: String,
        /// Skip the step when the file does not exist (a feature the kernel may lack,
        /// such as swap accounting).
        optional: bool,
    },
    /// Create a cgroup directory. If it exists already: a directory named [`LEAF_NAME`] is
    /// reused; a sandbox directory is removed and recreated when it holds no processes, and
    /// is an error otherwise.
    Mkdir(PathBuf),
    /// Move every process listed in `from/cgroup.procs` into `to/cgroup.procs`.
    MoveAllProcs {
        /// Cgroup directory emptied.
        from: PathBuf,
        /// Cgroup directory receiving the processes.
        to: PathBuf,
    },
}

/// Where a sandbox's cgroup goes and what to write to set it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlan {
    /// Which hierarchy flavour is used.
    pub version: CgroupVersion,
    /// Steps, in order.
    pub steps: Vec<CgroupFile>,
    /// Sandbox directories to attach the worker's pid to (one for v2, one per distinct v1
    /// hierarchy: memory, pids, cpu). These, and only these, are removed at teardown.
    pub dirs: Vec<PathBuf>,
    /// File carrying the `oom_kill N` counter.
    pub oom_file: PathBuf,
}

/// Why no cgroup could be planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPlanError {
    /// File or directory involved (may be empty).
    pub path: PathBuf,
    /// What is wrong and what to do (lowercase).
    pub detail: String,
}

impl fmt::Display for CgroupPlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)?;
        if !self.path.as_os_str().is_empty() {
            write!(f, " ({})", self.path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for CgroupPlanError {}

/// An I/O error as a lowercase phrase without the "(os error N)" tail (the errno travels
/// separately, e.g. in `SetupError::errno`).
pub fn describe(err: &std::io::Error) -> String {
    let text = err.to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn plan_error(path: impl Into<PathBuf>, detail: impl Into<String>) -> CgroupPlanError {
    CgroupPlanError {
        path: path.into(),
        detail: detail.into(),
    }
}

/// Number of OOM kills in a `memory.events` (v2) or `memory.oom_control` (v1) file: the
/// value of its `oom_kill` line, 0 when there is none.
pub fn parse_oom_kills(contents: &str) -> u64 {
    contents
        .lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("oom_kill") {
                return None;
            }
            words.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Plan the cgroup of sandbox `name` with `limits`; see the module documentation for the
/// rules. `read` reads a cgroup file (production: `std::fs::read_to_string`); it is called
/// for `cgroup.controllers`, `cgroup.subtree_control`, `cgroup.procs` and `cgroup.type`
/// under the prefix, and never writes.
pub fn plan(
    inputs: &CgroupInputs<'_>,
    name: &str,
    limits: &Limits,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<CgroupPlan, CgroupPlanError> {
    check_name(name)?;
    check_limits(limits)?;
    let own = parse_proc_cgroup(inputs.proc_self_cgroup);
    let mounts = parse_mountinfo(inputs.mountinfo);
    let leaf_name = format!("{SANDBOX_PREFIX}{name}");

    let v2_problem = match plan_v2(inputs, &own, &mounts, &leaf_name, limits, read)? {
        Ok(plan) => return Ok(plan),
        Err(problem) => problem,
    };
    let v1_problem = match plan_v1(inputs, &own, &mounts, &leaf_name, limits, read)? {
        Ok(plan) => return Ok(plan),
        Err(problem) => problem,
    };
    Err(plan_error(
        PathBuf::new(),
        format!(
            "no cgroup hierarchy offers memory, pids, cpu: cgroup v2: {v2_problem}; \
             cgroup v1: {v1_problem}. enable the controllers for bulkhead's cgroup \
             (v2: run it in a cgroup delegated to it, systemd: Delegate=yes, whose parent \
             lists memory, pids and cpu in cgroup.subtree_control) or mount the missing \
             v1 controllers"
        ),
    ))
}

fn check_name(name: &str) -> Result<(), CgroupPlanError> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok_chars || !ok_first || name.len() > MAX_NAME_LEN {
        return Err(plan_error(
            PathBuf::new(),
            format!(
                "invalid sandbox cgroup name {name:?}: use 1 to {MAX_NAME_LEN} characters \
                 from [A-Za-z0-9_.-], starting with a letter or digit"
            ),
        ));
    }
    if format!("{SANDBOX_PREFIX}{name}") == LEAF_NAME {
        return Err(plan_error(
            PathBuf::new(),
            format!("sandbox cgroup name {name:?} is reserved: choose another name"),
        ));
    }
    Ok(())
}

fn check_limits(limits: &Limits) -> Result<(), CgroupPlanError> {
    if !(1..=10_000).contains(&limits.cpu_weight) {
        return Err(plan_error(
            PathBuf::new(),
            format!(
                "cpu weight {} is out of range: use 1..=10000 (100 is the default share)",
                limits.cpu_weight
            ),
        ));
    }
    if limits.cpu_quota_us > 0
        && (!(1_000..=1_000_000).contains(&limits.cpu_period_us) || limits.cpu_quota_us < 1_000)
    {
        return Err(plan_error(
            PathBuf::new(),
            format!(
                "cpu quota {} us per period {} us is out of range: the period must be \
                 1000..=1000000 us and the quota at least 1000 us (or 0 for no quota)",
                limits.cpu_quota_us, limits.cpu_period_us
            ),
        ));
    }
    Ok(())
}

/// The launcher's own cgroup, as `/proc/self/cgroup` tells it.
#[derive(Debug, Default)]
struct OwnCgroups<'a> {
    /// Path in the unified hierarchy (`0::/path`).
    v2: Option<&'a str>,
    /// v1 hierarchies: controllers and path.
    v1: Vec<(Vec<&'a str>, &'a str)>,
}

impl<'a> OwnCgroups<'a> {
    fn v1_path(&self, controller: &str) -> Option<&'a str> {
        self.v1
            .iter()
            .find(|(ctrls, _)| ctrls.contains(&controller))
            .map(|(_, path)| *path)
    }
}

fn parse_proc_cgroup(contents: &str) -> OwnCgroups<'_> {
    let mut own = OwnCgroups::default();
    for line in contents.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            own.v2 = Some(path);
        } else if !ctrls.is_empty() {
            own.v1.push((ctrls.split(',').collect(), path));
        }
    }
    own
}

/// One cgroup or cgroup2 mount from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgMount {
    /// Root of the mount within its hierarchy (field 4).
    root: String,
    /// Mount point (field 5), unescaped.
    mount_point: String,
    /// `cgroup` or `cgroup2`.
    fstype: String,
    /// Super options (last field), split on commas.
    super_opts: Vec<String>,
}

/// Undo mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` `\`).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(contents: &str) -> Vec<CgMount> {
    let mut mounts: Vec<CgMount> = Vec::new();
    for line in contents.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().skip(6).position(|f| *f == "-").map(|p| p + 6) else {
            continue;
        };
        let (Some(fstype), Some(super_opts)) = (fields.get(sep + 1), fields.get(sep + 3)) else {
            continue;
        };
        if *fstype != "cgroup" && *fstype != "cgroup2" {
            continue;
        }
        let mount = CgMount {
            root: unescape_mountinfo(fields[3]),
            mount_point: unescape_mountinfo(fields[4]),
            fstype: (*fstype).to_owned(),
            super_opts: super_opts.split(',').map(str::to_owned).collect(),
        };
        // A later mount on the same mount point hides the earlier one.
        mounts.retain(|m| m.mount_point != mount.mount_point);
        mounts.push(mount);
    }
    mounts
}

/// `own` relative to the mount's `root`, component by component; `None` when `own` is not
/// under `root` or either is not a clean absolute path.
fn relative_to_root(own: &str, root: &str) -> Option<PathBuf> {
    let clean = |p: &str| {
        let p = Path::new(p);
        p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    };
    if !clean(own) || !clean(root) {
        return None;
    }
    Path::new(own)
        .strip_prefix(root)
        .ok()
        .map(Path::to_path_buf)
}

/// `base` with the normal components of `rel` appended (no trailing slash for an empty
/// `rel`, root and `..` components ignored).
fn join_clean(base: &Path, rel: &Path) -> PathBuf {
    let mut out = base.to_path_buf();
    for component in rel.components() {
        if let Component::Normal(part) = component {
            out.push(part);
        }
    }
    out
}

/// A directory of the hierarchy mounted by `mount` where the launcher's `own` cgroup is.
fn dir_of(inputs: &CgroupInputs<'_>, mount: &CgMount, own: &str) -> Option<PathBuf> {
    let rel = relative_to_root(own, &mount.root)?;
    let mount_dir = join_clean(inputs.root_prefix, Path::new(&mount.mount_point));
    Some(join_clean(&mount_dir, &rel))
}

fn has_processes(contents: &str) -> bool {
    contents.split_whitespace().next().is_some()
}

/// Fails when a sandbox directory exists and still holds processes.
fn check_not_running(
    dir: &Path,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<(), CgroupPlanError> {
    match read(&dir.join("cgroup.procs")) {
        Ok(procs) if has_processes(&procs) => Err(plan_error(
            dir,
            "sandbox cgroup already exists and holds processes: a sandbox with this name \
             is still running; stop it or use another name",
        )),
        _ => Ok(()),
    }
}

fn write(path: PathBuf, value: impl Into<String>) -> CgroupFile {
    CgroupFile::Write {
        path,
        value: value.into(),
        optional: false,
    }
}

fn write_optional(path: PathBuf, value: impl Into<String>) -> CgroupFile {
    CgroupFile::Write {
        path,
        value: value.into(),
        optional: true,
    }
}

/// `Ok(Err(problem))`: v2 cannot be used, try v1. `Err(_)`: v2 is the hierarchy to use but
/// planning failed.
fn plan_v2(
    inputs: &CgroupInputs<'_>,
    own: &OwnCgroups<'_>,
    mounts: &[CgMount],
    sandbox_name: &str,
    limits: &Limits,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Result<CgroupPlan, String>, CgroupPlanError> {
    let Some(own_path) = own.v2 else {
        return Ok(Err("/proc/self/cgroup has no unified (0::) line".into()));
    };
    let Some((mount, own_dir)) = mounts
        .iter()
        .filter(|m| m.fstype == "cgroup2")
        .find_map(|m| dir_of(inputs, m, own_path).map(|dir| (m, dir)))
    else {
        return Ok(Err(format!(
            "no cgroup2 mount in /proc/self/mountinfo contains the own cgroup {own_path}"
        )));
    };

    // D: the delegated cgroup (the own one, or the parent of our own leaf).
    let own_is_leaf = Path::new(own_path)
        .file_name()
        .is_some_and(|n| n == LEAF_NAME);
    let (d_path, d_dir) = match Path::new(own_path).parent() {
        Some(parent) if own_is_leaf => {
            let parent = parent.to_string_lossy().into_owned();
            match dir_of(inputs, mount, &parent) {
                Some(dir) => (PathBuf::from(parent), dir),
                None => {
                    return Ok(Err(format!(
                        "the parent of the own cgroup {own_path} is outside the cgroup2 \
                         mount's root {}",
                        mount.root
                    )))
                }
            }
        }
        _ => (PathBuf::from(own_path), own_dir),
    };

    let controllers_file = d_dir.join("cgroup.controllers");
    let controllers = match read(&controllers_file) {
        Ok(text) => text,
        Err(err) => {
            return Ok(Err(format!(
                "cannot read {}: {}",
                controllers_file.display(),
                describe(&err)
            )))
        }
    };
    let offered: Vec<&str> = controllers.split_whitespace().collect();
    let missing: Vec<&str> = REQUIRED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !offered.contains(c))
        .collect();
    if !missing.is_empty() {
        let offered_text = if offered.is_empty() {
            "nothing".to_owned()
        } else {
            offered.join(" ")
        };
        return Ok(Err(format!(
            "the cgroup2 hierarchy at {} offers only {offered_text} to {} (missing {})",
            join_clean(inputs.root_prefix, Path::new(&mount.mount_point)).display(),
            d_path.display(),
            missing.join(", ")
        )));
    }

    // IO (rule 9): `io` is enabled with the others when the limits ask for it and it is offered.
    let io = io_wanted(limits);
    let io_offered = offered.contains(&"io");
    if limits.io_max.is_set() && !io_offered {
        return Err(plan_error(
            &controllers_file,
            format!(
                "an io_max limit is set but the cgroup2 hierarchy does not offer the io \
                 controller to {} (it offers {}): enable io in the parent's \
                 cgroup.subtree_control, or remove the workspace's io_max",
                d_path.display(),
                offered.join(" ")
            ),
        ));
    }
    let mut wanted: Vec<&str> = REQUIRED_CONTROLLERS.to_vec();
    if io && io_offered {
        wanted.push("io");
    }

    let mut steps = Vec::new();
    let subtree_file = d_dir.join("cgroup.subtree_control");
    let subtree = read(&subtree_file).map_err(|err| {
        plan_error(
            &subtree_file,
            format!(
                "cannot read the delegated cgroup's subtree controllers: {}",
                describe(&err)
            ),
        )
    })?;
    let enabled: Vec<&str> = subtree.split_whitespace().collect();
    if wanted.iter().any(|c| !enabled.contains(c)) {
        let procs_file = d_dir.join("cgroup.procs");
        let procs = read(&procs_file).map_err(|err| {
            plan_error(
                &procs_file,
                format!(
                    "cannot read the delegated cgroup's processes: {}",
                    describe(&err)
                ),
            )
        })?;
        // The root cgroup is exempt from the no-internal-process rule; only it lacks
        // cgroup.type (a cgroup namespace's "/" is not the real root and has one).
        let is_root = d_path == Path::new("/") && read(&d_dir.join("cgroup.type")).is_err();
        if has_processes(&procs) && !is_root {
            let leaf = d_dir.join(LEAF_NAME);
            steps.push(CgroupFile::Mkdir(leaf.clone()));
            steps.push(CgroupFile::MoveAllProcs {
                from: d_dir.clone(),
                to: leaf,
            });
        }
        let enable: Vec<String> = wanted.iter().map(|c| format!("+{c}")).collect();
        steps.push(write(subtree_file, enable.join(" ")));
    }

    let dir = d_dir.join(sandbox_name);
    check_not_running(&dir, read)?;
    steps.push(CgroupFile::Mkdir(dir.clone()));
    steps.push(write(
        dir.join("memory.max"),
        limits.memory_bytes.to_string(),
    ));
    steps.push(write_optional(
        dir.join("memory.swap.max"),
        limits.swap_bytes.to_string(),
    ));
    steps.push(write(dir.join("pids.max"), limits.pids.to_string()));
    steps.push(write(dir.join("cpu.weight"), limits.cpu_weight.to_string()));
    if limits.cpu_quota_us > 0 {
        steps.push(write(
            dir.join("cpu.max"),
            format!("{} {}", limits.cpu_quota_us, limits.cpu_period_us),
        ));
    }
    if io && io_offered {
        // Best effort: io.weight exists with the iocost model, io.bfq.weight with BFQ.
        steps.push(write_optional(
            dir.join("io.weight"),
            format!("default {}", limits.io_weight),
        ));
        steps.push(write_optional(
            dir.join("io.bfq.weight"),
            format!("default {}", bfq_weight(limits.io_weight)),
        ));
    }
    if limits.io_max.is_set() {
        let (major, minor) = io_device(inputs, &dir)?;
        let m = &limits.io_max;
        let mut line = format!("{major}:{minor}");
        for (key, v) in [
            ("rbps", m.rbps),
            ("wbps", m.wbps),
            ("riops", m.riops),
            ("wiops", m.wiops),
        ] {
            if v != 0 {
                line.push_str(&format!(" {key}={v}"));
            }
        }
        steps.push(write(dir.join("io.max"), line));
    }
    Ok(Ok(CgroupPlan {
        version: CgroupVersion::V2,
        steps,
        oom_file: dir.join("memory.events"),
        dirs: vec![dir],
    }))
}

/// `cpu.shares` for a v2-style weight (100 = 1024 shares), at least 2 (the kernel minimum).
fn v1_shares(weight: u32) -> u64 {
    (u64::from(weight) * 1024 / 100).max(2)
}

fn plan_v1(
    inputs: &CgroupInputs<'_>,
    own: &OwnCgroups<'_>,
    mounts: &[CgMount],
    sandbox_name: &str,
    limits: &Limits,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
) -> Result<Result<CgroupPlan, String>, CgroupPlanError> {
    let mut problems = Vec::new();
    let mut found: Vec<(&str, PathBuf)> = Vec::new();
    for controller in REQUIRED_CONTROLLERS {
        let Some(own_path) = own.v1_path(controller) else {
            problems.push(format!("{controller} is not in /proc/self/cgroup"));
            continue;
        };
        let dir = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == controller))
            .find_map(|m| dir_of(inputs, m, own_path));
        match dir {
            Some(dir) => found.push((controller, dir.join(sandbox_name))),
            None => problems.push(format!(
                "no cgroup v1 mount of {controller} contains the own cgroup {own_path}"
            )),
        }
    }
    if !problems.is_empty() {
        return Ok(Err(problems.join(", ")));
    }

    let mut steps = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut oom_file = PathBuf::new();
    for (controller, dir) in found {
        if !dirs.contains(&dir) {
            check_not_running(&dir, read)?;
            steps.push(CgroupFile::Mkdir(dir.clone()));
            dirs.push(dir.clone());
        }
        match controller {
            "memory" => {
                steps.push(write(
                    dir.join("memory.limit_in_bytes"),
                    limits.memory_bytes.to_string(),
                ));
                steps.push(write_optional(
                    dir.join("memory.memsw.limit_in_bytes"),
                    limits
                        .memory_bytes
                        .saturating_add(limits.swap_bytes)
                        .to_string(),
                ));
                oom_file = dir.join("memory.oom_control");
            }
            "pids" => steps.push(write(dir.join("pids.max"), limits.pids.to_string())),
            _ => {
                steps.push(write(
                    dir.join("cpu.shares"),
                    v1_shares(limits.cpu_weight).to_string(),
                ));
                if limits.cpu_quota_us > 0 {
                    steps.push(write(
                        dir.join("cpu.cfs_period_us"),
                        limits.cpu_period_us.to_string(),
                    ));
                    steps.push(write(
                        dir.join("cpu.cfs_quota_us"),
                        limits.cpu_quota_us.to_string(),
                    ));
                }
            }
        }
    }
    plan_v1_blkio(
        inputs,
        own,
        mounts,
        sandbox_name,
        limits,
        read,
        &mut steps,
        &mut dirs,
    )?;
    Ok(Ok(CgroupPlan {
        version: CgroupVersion::V1,
        steps,
        dirs,
        oom_file,
    }))
}

/// Whether the limits ask for anything of the io controller: a weight other than the
/// kernel's default, or a ceiling.
fn io_wanted(limits: &Limits) -> bool {
    limits.io_weight != DEFAULT_IO_WEIGHT || limits.io_max.is_set()
}

/// The v2-scale weight (1..=10000, default 100) on the v1 `blkio.weight` scale (10..=1000,
/// default 500), as systemd converts it.
fn v1_blkio_weight(weight: u32) -> u64 {
    (u64::from(weight) * 500 / 100).clamp(10, 1000)
}

/// The v2-scale weight on BFQ's scale (1..=1000, default 100).
fn bfq_weight(weight: u32) -> u64 {
    u64::from(weight).clamp(1, 1000)
}

fn io_device(inputs: &CgroupInputs<'_>, dir: &Path) -> Result<(u32, u32), CgroupPlanError> {
    inputs.io_device.ok_or_else(|| {
        plan_error(
            dir,
            "an io_max limit is set but the workspace is not on a block device (tmpfs, \
             overlay or a network filesystem): put the state directory on a disk, or remove \
             the workspace's io_max",
        )
    })
}

/// v1 IO (rule 9): a `blkio` directory only when the limits ask for IO control. The weight is
/// best effort (skipped when the own blkio cgroup has neither `blkio.weight` nor
/// `blkio.bfq.weight`, or there is no blkio hierarchy); a ceiling is required.
#[allow(clippy::too_many_arguments)]
fn plan_v1_blkio(
    inputs: &CgroupInputs<'_>,
    own: &OwnCgroups<'_>,
    mounts: &[CgMount],
    sandbox_name: &str,
    limits: &Limits,
    read: &dyn Fn(&Path) -> std::io::Result<String>,
    steps: &mut Vec<CgroupFile>,
    dirs: &mut Vec<PathBuf>,
) -> Result<(), CgroupPlanError> {
    if !io_wanted(limits) {
        return Ok(());
    }
    let own_dir = own.v1_path("blkio").and_then(|own_path| {
        mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" && m.super_opts.iter().any(|o| o == "blkio"))
            .find_map(|m| dir_of(inputs, m, own_path))
    });
    let max: &IoMax = &limits.io_max;
    let Some(own_dir) = own_dir else {
        if max.is_set() {
            return Err(plan_error(
                PathBuf::new(),
                "an io_max limit is set but no cgroup v1 blkio hierarchy contains the own \
                 cgroup: mount the blkio controller, or remove the workspace's io_max",
            ));
        }
        return Ok(());
    };
    let has = |f: &str| read(&own_dir.join(f)).is_ok();
    let weights = [
        ("blkio.weight", v1_blkio_weight(limits.io_weight)),
        ("blkio.bfq.weight", bfq_weight(limits.io_weight)),
    ];
    let weight_files: Vec<_> = weights.iter().filter(|(f, _)| has(f)).collect();
    if !max.is_set() && weight_files.is_empty() {
        return Ok(());
    }
    let dir = own_dir.join(sandbox_name);
    if !dirs.contains(&dir) {
        check_not_running(&dir, read)?;
        steps.push(CgroupFile::Mkdir(dir.clone()));
        dirs.push(dir.clone());
    }
    for (file, value) in weight_files {
        steps.push(write_optional(dir.join(file), value.to_string()));
    }
    if max.is_set() {
        let (major, minor) = io_device(inputs, &dir)?;
        for (file, v) in [
            ("blkio.throttle.read_bps_device", max.rbps),
            ("blkio.throttle.write_bps_device", max.wbps),
            ("blkio.throttle.read_iops_device", max.riops),
            ("blkio.throttle.write_iops_device", max.wiops),
        ] {
            if v != 0 {
                steps.push(write(dir.join(file), format!("{major}:{minor} {v}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const V2_MOUNTINFO: &str = "25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw\n\
        30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 \
        cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    /// This machine's shape: v1 hierarchies plus a unified mount with only hugetlb, but
    /// with cpu and cpuacct co-mounted.
    const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n\
        5:devices:/\n4:memory:/process_api/x\n3:cpuset:/\n2:cpu,cpuacct:/\n0::/\n";
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    fn limits() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            swap_bytes: 0,
            pids: 16,
            cpu_weight: 100,
            cpu_quota_us: 0,
            cpu_period_us: 100_000,
            tmp_bytes: 1 << 20,
            shm_bytes: 1 << 20,
            nofile: 1024,
            io_weight: 100,
            io_max: IoMax::default(),
            disk_bytes: 0,
            inodes: 0,
        }
    }

    fn read(path: &Path) -> std::io::Result<String> {
        fs::read_to_string(path)
    }

    /// Builds a fake cgroup2 tree under a temp dir: `files` are (cgroup path, file, text).
    fn tree(files: &[(&str, &str, &str)]) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        for (cg, file, text) in files {
            let dir = join_clean(&tmp.path().join("sys/fs/cgroup"), Path::new(cg));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(file), text).unwrap();
        }
        tmp
    }

    /// A delegated non-root v2 cgroup with the given files.
    fn v2_cgroup(cg: &str, controllers: &str, subtree: &str, procs: &str) -> tempfile::TempDir {
        tree(&[
            (cg, "cgroup.controllers", controllers),
            (cg, "cgroup.subtree_control", subtree),
            (cg, "cgroup.procs", procs),
            (cg, "cgroup.type", "domain\n"),
        ])
    }

    fn plan_in(
        tmp: &Path,
        cgroup: &str,
        mountinfo: &str,
        limits: &Limits,
    ) -> Result<CgroupPlan, CgroupPlanError> {
        let inputs = CgroupInputs {
            proc_self_cgroup: cgroup,
            mountinfo,
            root_prefix: tmp,
            io_device: Some((254, 0)),
        };
        plan(&inputs, "ws1", limits, &read)
    }

    fn w(path: &Path, value: &str) -> CgroupFile {
        write(path.to_path_buf(), value)
    }

    fn limit_writes_v2(dir: &Path) -> Vec<CgroupFile> {
        vec![
            w(&dir.join("memory.max"), "67108864"),
            write_optional(dir.join("memory.swap.max"), "0"),
            w(&dir.join("pids.max"), "16"),
            w(&dir.join("cpu.weight"), "100"),
        ]
    }

    #[test]
    fn v2_delegated_cgroup_with_controllers_enabled() {
        let cg = "/user.slice/bh.service";
        let tmp = v2_cgroup(cg, "cpuset cpu io memory pids\n", "cpu memory pids\n", "");
        let p = plan_in(tmp.path(), &format!("0::{cg}\n"), V2_MOUNTINFO, &limits()).unwrap();
        let d = tmp.path().join("sys/fs/cgroup/user.slice/bh.service");
        let s = d.join("bulkhead-ws1");
        assert_eq!(p.version, CgroupVersion::V2);
        assert_eq!(p.dirs, vec![s.clone()]);
        assert_eq!(p.oom_file, s.join("memory.events"));
        let mut want = vec![CgroupFile::Mkdir(s.clone())];
        want.extend(limit_writes_v2(&s));
        assert_eq!(p.steps, want);
    }

    #[test]
    fn v2_enables_controllers_when_the_cgroup_is_empty() {
        let cg = "/delegated";
        let tmp = v2_cgroup(cg, "cpu memory pids", "pids", "\n");
        let mut l = limits();
        l.cpu_quota_us = 50_000;
        l.swap_bytes = 1 << 20;
        l.cpu_weight = 250;
        let p = plan_in(tmp.path(), "0::/delegated\n", V2_MOUNTINFO, &l).unwrap();
        let d = tmp.path().join("sys/fs/cgroup/delegated");
        let s = d.join("bulkhead-ws1");
        assert_eq!(
            p.steps,
            vec![
                w(&d.join("cgroup.subtree_control"), "+memory +pids +cpu"),
                CgroupFile::Mkdir(s.clone()),
                w(&s.join("memory.max"), "67108864"),
                write_optional(s.join("memory.swap.max"), "1048576"),
                w(&s.join("pids.max"), "16"),
                w(&s.join("cpu.weight"), "250"),
                w(&s.join("cpu.max"), "50000 100000"),
            ]
        );
    }

    #[test]
    fn v2_moves_own_processes_into_a_leaf_first() {
        let cg = "/user.slice/user-1000.slice/user@1000.service/app.slice/bh.scope";
        let tmp = v2_cgroup(cg, "cpu memory pids", "", "1234\n5678\n");
        let p = plan_in(tmp.path(), &format!("0::{cg}\n"), V2_MOUNTINFO, &limits()).unwrap();
        let d = join_clean(&tmp.path().join("sys/fs/cgroup"), Path::new(cg));
        let leaf = d.join("bulkhead-leaf");
        let s = d.join("bulkhead-ws1");
        let mut want = vec![
            CgroupFile::Mkdir(leaf.clone()),
            CgroupFile::MoveAllProcs {
                from: d.clone(),
                to: leaf,
            },
            w(&d.join("cgroup.subtree_control"), "+memory +pids +cpu"),
            CgroupFile::Mkdir(s.clone()),
        ];
        want.extend(limit_writes_v2(&s));
        assert_eq!(p.steps, want);
        assert_eq!(p.dirs, vec![s]);
    }

    #[test]
    fn v2_own_cgroup_already_the_leaf_uses_its_parent() {
        // Controllers already enabled by an earlier launch: nothing to move.
        let tmp = tree(&[
            ("/svc", "cgroup.controllers", "cpu memory pids"),
            ("/svc", "cgroup.subtree_control", "cpu memory pids"),
            ("/svc", "cgroup.procs", ""),
            ("/svc", "cgroup.type", "domain"),
            (
                "/svc/bulkhead-leaf",
                "cgroup.controllers",
                "cpu memory pids",
            ),
            ("/svc/bulkhead-leaf", "cgroup.procs", "42\n"),
        ]);
        let p = plan_in(
            tmp.path(),
            "0::/svc/bulkhead-leaf\n",
            V2_MOUNTINFO,
            &limits(),
        )
        .unwrap();
        let s = tmp.path().join("sys/fs/cgroup/svc/bulkhead-ws1");
        assert_eq!(p.dirs, vec![s.clone()]);
        assert_eq!(p.steps[0], CgroupFile::Mkdir(s));

        // A process joined D since: it goes into the (existing) leaf again.
        fs::write(tmp.path().join("sys/fs/cgroup/svc/cgroup.procs"), "77\n").unwrap();
        fs::write(
            tmp.path().join("sys/fs/cgroup/svc/cgroup.subtree_control"),
            "memory",
        )
        .unwrap();
        let p = plan_in(
            tmp.path(),
            "0::/svc/bulkhead-leaf\n",
            V2_MOUNTINFO,
            &limits(),
        )
        .unwrap();
        let d = tmp.path().join("sys/fs/cgroup/svc");
        assert_eq!(p.steps[0], CgroupFile::Mkdir(d.join("bulkhead-leaf")));
        assert_eq!(
            p.steps[1],
            CgroupFile::MoveAllProcs {
                from: d.clone(),
                to: d.join("bulkhead-leaf")
            }
        );
        assert_eq!(p.steps[3], CgroupFile::Mkdir(d.join("bulkhead-ws1")));
    }

    #[test]
    fn v2_root_cgroup_is_exempt_from_the_leaf_move() {
        let tmp = tree(&[
            ("/", "cgroup.controllers", "cpu memory pids"),
            ("/", "cgroup.subtree_control", ""),
            ("/", "cgroup.procs", "1\n2\n"),
        ]);
        let p = plan_in(tmp.path(), "0::/\n", V2_MOUNTINFO, &limits()).unwrap();
        let d = tmp.path().join("sys/fs/cgroup");
        assert_eq!(
            p.steps[..2],
            [
                w(&d.join("cgroup.subtree_control"), "+memory +pids +cpu"),
                CgroupFile::Mkdir(d.join("bulkhead-ws1")),
            ]
        );

        // "/" of a cgroup namespace is not the real root: it has cgroup.type.
        fs::write(d.join("cgroup.type"), "domain").unwrap();
        let p = plan_in(tmp.path(), "0::/\n", V2_MOUNTINFO, &limits()).unwrap();
        assert_eq!(p.steps[0], CgroupFile::Mkdir(d.join("bulkhead-leaf")));
    }

    #[test]
    fn v2_mount_root_is_honoured() {
        // A container whose cgroup2 mount shows only /kubepods/pod1.
        let tmp = v2_cgroup("/c1", "cpu memory pids", "cpu memory pids", "");
        let mi = "30 25 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let p = plan_in(tmp.path(), "0::/kubepods/pod1/c1\n", mi, &limits()).unwrap();
        assert_eq!(
            p.dirs,
            vec![tmp.path().join("sys/fs/cgroup/c1/bulkhead-ws1")]
        );

        // The own cgroup outside the mount's root (and no v1): no hierarchy.
        let err = plan_in(tmp.path(), "0::/other/c1\n", mi, &limits()).unwrap_err();
        assert!(err.detail.contains("no cgroup2 mount"), "{err}");
        // "/kubepods/pod10" is not under "/kubepods/pod1".
        let err = plan_in(tmp.path(), "0::/kubepods/pod10\n", mi, &limits()).unwrap_err();
        assert!(err.detail.contains("no cgroup2 mount"), "{err}");
        // Outside the cgroup namespace's root.
        let err = plan_in(tmp.path(), "0::/../x\n", V2_MOUNTINFO, &limits()).unwrap_err();
        assert!(err.detail.contains("no cgroup2 mount"), "{err}");
    }

    #[test]
    fn missing_controller_names_what_is_missing_and_what_to_do() {
        let tmp = v2_cgroup("/app", "cpu io", "", "");
        let err = plan_in(tmp.path(), "0::/app\n", V2_MOUNTINFO, &limits()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("no cgroup hierarchy offers memory, pids, cpu: "),
            "{text}"
        );
        assert!(
            text.contains("offers only cpu io to /app (missing memory, pids)"),
            "{text}"
        );
        assert!(
            text.contains("memory is not in /proc/self/cgroup"),
            "{text}"
        );
        assert!(text.contains("Delegate=yes"), "{text}");

        // No hierarchy at all.
        let err = plan_in(tmp.path(), "", "", &limits()).unwrap_err();
        assert!(err.detail.contains("no unified (0::) line"), "{err}");
    }

    #[test]
    fn v1_on_this_machines_shape() {
        // The unified hierarchy at /sys/fs/cgroup/unified offers only hugetlb.
        let tmp = tempfile::tempdir().unwrap();
        let unified = tmp.path().join("sys/fs/cgroup/unified");
        fs::create_dir_all(&unified).unwrap();
        fs::write(unified.join("cgroup.controllers"), "hugetlb\n").unwrap();
        let mut l = limits();
        l.swap_bytes = 1 << 20;
        l.cpu_weight = 50;
        l.cpu_quota_us = 20_000;
        let p = plan_in(tmp.path(), HYBRID_CGROUP, HYBRID_MOUNTINFO, &l).unwrap();
        let root = tmp.path().join("sys/fs/cgroup");
        let mem = root.join("memory/process_api/x/bulkhead-ws1");
        let pids = root.join("pids/bulkhead-ws1");
        let cpu = root.join("cpu,cpuacct/bulkhead-ws1");
        assert_eq!(p.version, CgroupVersion::V1);
        assert_eq!(p.dirs, vec![mem.clone(), pids.clone(), cpu.clone()]);
        assert_eq!(p.oom_file, mem.join("memory.oom_control"));
        assert_eq!(
            p.steps,
            vec![
                CgroupFile::Mkdir(mem.clone()),
                w(&mem.join("memory.limit_in_bytes"), "67108864"),
                write_optional(mem.join("memory.memsw.limit_in_bytes"), "68157440"),
                CgroupFile::Mkdir(pids.clone()),
                w(&pids.join("pids.max"), "16"),
                CgroupFile::Mkdir(cpu.clone()),
                w(&cpu.join("cpu.shares"), "512"),
                w(&cpu.join("cpu.cfs_period_us"), "100000"),
                w(&cpu.join("cpu.cfs_quota_us"), "20000"),
            ]
        );
    }

    const HYBRID_BLKIO_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n7:blkio:/\n\
        4:memory:/process_api/x\n2:cpu,cpuacct:/\n0::/\n";
    const HYBRID_BLKIO_MOUNTINFO: &str = "\
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";

    #[test]
    fn io_untouched_without_io_limits() {
        // Default weight, no ceiling: no io file on v2, no blkio directory on v1.
        let tmp = v2_cgroup("/d", "cpu io memory pids", "cpu memory pids", "");
        let p = plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &limits()).unwrap();
        assert!(!p.steps.iter().any(|s| format!("{s:?}").contains("/io.")));
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("sys/fs/cgroup/blkio")).unwrap();
        fs::write(tmp.path().join("sys/fs/cgroup/blkio/blkio.weight"), "500").unwrap();
        let p = plan_in(
            tmp.path(),
            HYBRID_BLKIO_CGROUP,
            HYBRID_BLKIO_MOUNTINFO,
            &limits(),
        )
        .unwrap();
        assert_eq!(p.dirs.len(), 3);
    }

    #[test]
    fn v2_io_weight_and_max() {
        let tmp = v2_cgroup("/d", "cpu io memory pids", "cpu memory pids", "");
        let mut l = limits();
        l.io_weight = 50;
        l.io_max = IoMax {
            rbps: 0,
            wbps: 1 << 20,
            riops: 0,
            wiops: 200,
        };
        let p = plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &l).unwrap();
        let d = tmp.path().join("sys/fs/cgroup/d");
        let s = d.join("bulkhead-ws1");
        assert!(p.steps.contains(&w(
            &d.join("cgroup.subtree_control"),
            "+memory +pids +cpu +io"
        )));
        let tail: Vec<_> = p.steps.iter().rev().take(3).rev().cloned().collect();
        assert_eq!(
            tail,
            vec![
                write_optional(s.join("io.weight"), "default 50"),
                write_optional(s.join("io.bfq.weight"), "default 50"),
                w(&s.join("io.max"), "254:0 wbps=1048576 wiops=200"),
            ]
        );
        // Only a weight, and io not offered: best effort, nothing io-related at all.
        let tmp = v2_cgroup("/d", "cpu memory pids", "cpu memory pids", "");
        l.io_max = IoMax::default();
        let p = plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &l).unwrap();
        let io_step = |s: &CgroupFile| {
            let t = format!("{s:?}");
            t.contains("/io.") || t.contains("+io")
        };
        assert!(!p.steps.iter().any(io_step), "{:?}", p.steps);
    }

    #[test]
    fn io_max_fails_closed_where_it_cannot_be_applied() {
        let mut l = limits();
        l.io_max.rbps = 1 << 20;
        // v2 without the io controller.
        let tmp = v2_cgroup("/d", "cpu memory pids", "cpu memory pids", "");
        let e = plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &l).unwrap_err();
        assert!(e.detail.contains("does not offer the io controller"), "{e}");
        // Not on a block device.
        let tmp = v2_cgroup("/d", "cpu io memory pids", "cpu io memory pids", "");
        let inputs = CgroupInputs {
            proc_self_cgroup: "0::/d\n",
            mountinfo: V2_MOUNTINFO,
            root_prefix: tmp.path(),
            io_device: None,
        };
        let e = plan(&inputs, "ws1", &l, &read).unwrap_err();
        assert!(e.detail.contains("not on a block device"), "{e}");
        // v1 without a blkio hierarchy.
        let tmp = tempfile::tempdir().unwrap();
        let e = plan_in(tmp.path(), HYBRID_CGROUP, HYBRID_MOUNTINFO, &l).unwrap_err();
        assert!(e.detail.contains("no cgroup v1 blkio hierarchy"), "{e}");
    }

    #[test]
    fn v1_blkio_throttle_and_weight() {
        let tmp = tempfile::tempdir().unwrap();
        let blkio = tmp.path().join("sys/fs/cgroup/blkio");
        fs::create_dir_all(&blkio).unwrap();
        let mut l = limits();
        l.io_max = IoMax {
            rbps: 2 << 20,
            wbps: 1 << 20,
            riops: 0,
            wiops: 0,
        };
        l.io_weight = 1000;
        // This machine: throttling only, no weight file.
        let p = plan_in(tmp.path(), HYBRID_BLKIO_CGROUP, HYBRID_BLKIO_MOUNTINFO, &l).unwrap();
        let s = blkio.join("bulkhead-ws1");
        assert_eq!(p.dirs.last(), Some(&s));
        assert_eq!(p.dirs.len(), 4);
        let tail: Vec<_> = p.steps.iter().rev().take(3).rev().cloned().collect();
        assert_eq!(
            tail,
            vec![
                CgroupFile::Mkdir(s.clone()),
                w(&s.join("blkio.throttle.read_bps_device"), "254:0 2097152"),
                w(&s.join("blkio.throttle.write_bps_device"), "254:0 1048576"),
            ]
        );
        // With CFQ's weight file: the weight scaled (1000 -> the v1 maximum, 1000).
        fs::write(blkio.join("blkio.weight"), "500\n").unwrap();
        l.io_max = IoMax::default();
        let p = plan_in(tmp.path(), HYBRID_BLKIO_CGROUP, HYBRID_BLKIO_MOUNTINFO, &l).unwrap();
        assert!(p.steps.ends_with(&[
            CgroupFile::Mkdir(s.clone()),
            write_optional(s.join("blkio.weight"), "1000")
        ]));
        assert_eq!(v1_blkio_weight(100), 500);
        assert_eq!(v1_blkio_weight(1), 10);
        // A weight alone where no weight file exists: no directory (nothing to write).
        fs::remove_file(blkio.join("blkio.weight")).unwrap();
        let p = plan_in(tmp.path(), HYBRID_BLKIO_CGROUP, HYBRID_BLKIO_MOUNTINFO, &l).unwrap();
        assert_eq!(p.dirs.len(), 3);
    }

    #[test]
    fn v1_separate_cpu_and_cpuacct_and_mount_roots() {
        // cpu and cpuacct on separate hierarchies (as on this machine), memory mounted
        // with root /process_api (as in a container), memory and pids co-mounted elsewhere.
        let cgroup = "4:memory:/process_api/x\n8:pids:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
        let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 /process_api /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
";
        let tmp = tempfile::tempdir().unwrap();
        let p = plan_in(tmp.path(), cgroup, mi, &limits()).unwrap();
        let root = tmp.path().join("sys/fs/cgroup");
        assert_eq!(
            p.dirs,
            vec![
                root.join("memory/x/bulkhead-ws1"),
                root.join("pids/bulkhead-ws1"),
                root.join("cpu/bulkhead-ws1"),
            ]
        );
        assert!(p
            .steps
            .contains(&w(&root.join("cpu/bulkhead-ws1/cpu.shares"), "1024")));

        let comounted = "3:memory,pids:/a\n1:cpu:/\n";
        let mi = "\
32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/mp rw - cgroup cgroup rw,memory,pids
";
        let p = plan_in(tmp.path(), comounted, mi, &limits()).unwrap();
        let mp = root.join("mp/a/bulkhead-ws1");
        assert_eq!(p.dirs, vec![mp.clone(), root.join("cpu/bulkhead-ws1")]);
        let mkdirs = p
            .steps
            .iter()
            .filter(|s| matches!(s, CgroupFile::Mkdir(_)))
            .count();
        assert_eq!(mkdirs, 2);
        assert!(p.steps.contains(&w(&mp.join("pids.max"), "16")));

        // A missing v1 controller: the error names it.
        let err = plan_in(tmp.path(), "4:memory:/\n1:cpu:/\n", mi, &limits()).unwrap_err();
        assert!(
            err.detail.contains("pids is not in /proc/self/cgroup"),
            "{err}"
        );
    }

    #[test]
    fn stale_sandbox_dir_with_processes_is_an_error() {
        let tmp = tree(&[
            ("/d", "cgroup.controllers", "cpu memory pids"),
            ("/d", "cgroup.subtree_control", "cpu memory pids"),
            ("/d", "cgroup.procs", ""),
            ("/d/bulkhead-ws1", "cgroup.procs", "99\n"),
        ]);
        let err = plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &limits()).unwrap_err();
        assert!(err.detail.contains("still running"), "{err}");
        assert!(err.path.ends_with("d/bulkhead-ws1"));
        // Empty: left from a crash, planned normally (the launcher recreates it).
        fs::write(
            tmp.path().join("sys/fs/cgroup/d/bulkhead-ws1/cgroup.procs"),
            "",
        )
        .unwrap();
        assert!(plan_in(tmp.path(), "0::/d\n", V2_MOUNTINFO, &limits()).is_ok());
    }

    #[test]
    fn names_and_limits_are_checked() {
        let tmp = v2_cgroup("/d", "cpu memory pids", "cpu memory pids", "");
        let inputs = CgroupInputs {
            proc_self_cgroup: "0::/d\n",
            mountinfo: V2_MOUNTINFO,
            root_prefix: tmp.path(),
            io_device: None,
        };
        for bad in ["", "../x", "a/b", "leaf", "-x", ".x", &"a".repeat(129)] {
            assert!(plan(&inputs, bad, &limits(), &read).is_err(), "{bad:?}");
        }
        assert!(plan(&inputs, "ws_1.2-3", &limits(), &read).is_ok());
        let mut l = limits();
        l.cpu_weight = 0;
        assert!(plan(&inputs, "a", &l, &read)
            .unwrap_err()
            .detail
            .contains("cpu weight"));
        l.cpu_weight = 10_001;
        assert!(plan(&inputs, "a", &l, &read).is_err());
        let mut l = limits();
        l.cpu_quota_us = 500;
        assert!(plan(&inputs, "a", &l, &read)
            .unwrap_err()
            .detail
            .contains("quota"));
        l.cpu_quota_us = 5_000;
        l.cpu_period_us = 0;
        assert!(plan(&inputs, "a", &l, &read).is_err());
    }

    #[test]
    fn oom_counter_parser() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(parse_oom_kills(v2), 2);
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 7\n";
        assert_eq!(parse_oom_kills(v1), 7);
        assert_eq!(parse_oom_kills("oom_kill_disable 1\nunder_oom 0\n"), 0);
        assert_eq!(parse_oom_kills(""), 0);
        assert_eq!(parse_oom_kills("oom_kill x\n"), 0);
    }

    #[test]
    fn mountinfo_parsing() {
        let mi = "1 0 0:1 / /a\\040b rw shared:1 master:2 - cgroup2 none rw\n\
                  2 0 0:2 / /x rw - tmpfs tmpfs rw\n\
                  garbage\n\
                  3 0 0:3 / /a\\040b rw - cgroup cgroup rw,pids\n";
        let m = parse_mountinfo(mi);
        // The second mount on /a b hides the first.
        assert_eq!(
            m,
            vec![CgMount {
                root: "/".into(),
                mount_point: "/a b".into(),
                fstype: "cgroup".into(),
                super_opts: vec!["rw".into(), "pids".into()],
            }]
        );
        assert_eq!(unescape_mountinfo("a\\134b\\011\\0"), "a\\b\t\\0");
        let own = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(own.v2, Some("/"));
        assert_eq!(own.v1_path("memory"), Some("/process_api/x"));
        assert_eq!(own.v1_path("cpuacct"), Some("/"));
        assert_eq!(own.v1_path("systemd"), None);
    }

    #[test]
    fn unreadable_controllers_fall_back_with_a_lowercase_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let err = plan_in(tmp.path(), "0::/gone\n", V2_MOUNTINFO, &limits()).unwrap_err();
        assert!(
            err.detail
                .contains("cgroup.controllers: no such file or directory"),
            "{err}"
        );
    }

    #[test]
    fn error_display() {
        let e = plan_error("/x", "bad thing");
        assert_eq!(e.to_string(), "bad thing (/x)");
        assert_eq!(plan_error("", "bad").to_string(), "bad");
    }
}
