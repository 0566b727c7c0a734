//! Step 3: the sandbox's cgroup. Applies a [`CgroupPlan`] from `bulkhead_policy::cgroup`
//! (which documents the rules: placement under our own cgroup, v2 with a v1 fallback, the
//! `bulkhead-leaf` move, the limit files) with plain file writes, attaches the worker, reads
//! the OOM counter and tears the cgroup down.
//!
//! - [`create`] runs the plan's steps in order. On a failure it removes the directories it
//!   created, newest first, and reports the step with its errno and path. Processes moved
//!   into `bulkhead-leaf` stay there: that is a valid arrangement later launches reuse.
//! - [`attach`] writes the worker's pid to each sandbox directory's `cgroup.procs`.
//! - [`destroy`] runs once the worker, the sandbox's pid-namespace init, is dead: the kernel
//!   has killed every process of the sandbox with it. It writes v2 `cgroup.kill` (a file
//!   of the caller's own cgroup, written with the caller's rights), waits up to
//!   [`DRAIN_TIMEOUT`] for `cgroup.procs` to empty, then removes the plan's sandbox
//!   directories and nothing else. It never signals a pid read from `cgroup.procs`: a
//!   setuid supervisor holds `CAP_KILL`, and that file lies in a cgroup its caller owns.
//! - [`sweep_stale`] removes the empty sandbox cgroups that supervisors killed with SIGKILL
//!   left beside ours: named `bulkhead-<workspace>-<pid>` with that launcher gone, made by
//!   the same uid (rmdir only, never a signal).
//!
//! On cgroupfs the control files come and go with their directory. Unit tests run the same
//! code against a temp dir, through a `Kernel` whose hooks create the control files after
//! a mkdir and delete them before a rmdir, as cgroupfs would.

use bulkhead_policy::cgroup::describe;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_policy::cgroup::{self as policy, CgroupFile, CgroupInputs, CgroupPlan, LEAF_NAME};
use bulkhead_wire::{CgroupVersion, Limits, SetupError, SetupStep};

/// How long [`destroy`] waits for the sandbox's processes to die.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
const DRAIN_POLL: Duration = Duration::from_millis(10);
/// Passes of [`CgroupFile::MoveAllProcs`] before giving up on a cgroup that keeps forking.
const MOVE_PASSES: usize = 16;

const DELEGATION_HINT: &str = "cgroups need delegation: run bulkhead in a cgroup delegated \
                               to it (systemd: Delegate=yes), or as root";

/// A created sandbox cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Hierarchy flavour.
    pub version: CgroupVersion,
    /// Sandbox directories (one for v2, one per distinct v1 hierarchy).
    pub dirs: Vec<PathBuf>,
    /// File with the `oom_kill N` counter.
    pub oom_file: PathBuf,
}

/// The whole block device (`major`, `minor`) holding `path`, for IO ceilings: `None` on a
/// filesystem without one (tmpfs, overlay, btrfs's anonymous devices, NFS). A partition is
/// mapped to its disk through `/sys/dev/block/M:m/..`, as `io.max` and `blkio.throttle` want.
pub fn block_device(path: &str) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = fs::symlink_metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        return None;
    }
    let sys = format!("/sys/dev/block/{major}:{minor}");
    if !Path::new(&sys).join("partition").exists() {
        return Some((major, minor));
    }
    let parent = fs::read_to_string(format!("{sys}/../dev")).ok()?;
    let (ma, mi) = parent.trim().split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// Plans the cgroup of sandbox `name` under the launcher's own cgroup, from `own` (the
/// text of `/proc/self/cgroup`, read once by the caller) and `/proc/self/mountinfo`;
/// `workspace_dir`'s block device is the target of IO ceilings (looked up only when the
/// limits set one).
pub fn plan_for_self(
    own: &str,
    name: &str,
    limits: &Limits,
    workspace_dir: &str,
) -> Result<CgroupPlan, SetupError> {
    let read_proc = |path: &str| {
        fs::read_to_string(path).map_err(|e| {
            setup_error(
                &e,
                Path::new(path),
                format!("cannot read {path}: {}", describe(&e)),
            )
        })
    };
    let mountinfo = read_proc("/proc/self/mountinfo")?;
    let inputs = CgroupInputs {
        proc_self_cgroup: own,
        mountinfo: &mountinfo,
        root_prefix: Path::new("/"),
        io_device: if limits.io_max.is_set() {
            block_device(workspace_dir)
        } else {
            None
        },
    };
    policy::plan(&inputs, name, limits, &|p: &Path| fs::read_to_string(p)).map_err(|e| SetupError {
        step: SetupStep::Cgroup,
        errno: 0,
        path: e.path.display().to_string(),
        detail: e.detail,
        reason: bulkhead_wire::SetupReason::Other,
    })
}

/// Runs the plan's steps in order; on an error undoes what it created and reports the step.
pub fn create(plan: &CgroupPlan) -> Result<Cgroup, SetupError> {
    create_with(plan, &Kernel::REAL)
}

/// Moves `pid` into every sandbox directory of `cg`.
pub fn attach(cg: &Cgroup, pid: libc::pid_t) -> Result<(), SetupError> {
    if pid <= 0 {
        // "0" would move the launcher itself.
        return Err(SetupError {
            step: SetupStep::Cgroup,
            errno: libc::EINVAL,
            path: String::new(),
            detail: format!("cannot attach pid {pid} to the sandbox cgroup: not a process id"),
            reason: bulkhead_wire::SetupReason::Other,
        });
    }
    for dir in &cg.dirs {
        let procs = dir.join("cgroup.procs");
        write_file(&procs, &pid.to_string()).map_err(|e| {
            let detail = format!(
                "cannot move process {pid} into the sandbox cgroup: {}",
                describe(&e)
            );
            setup_error(&e, &procs, with_hint(detail, &e, false))
        })?;
    }
    Ok(())
}

/// cgroup v1: moves the calling process (single-threaded) into every sandbox directory by
/// writing `0` to each `tasks` file. A thread moving itself is the one migration for which the
/// kernel skips its global threadgroup lock, whose write side waits for an RCU grace period
/// (10-15 ms on a VM) on every `cgroup.procs` write.
pub fn attach_self(cg: &Cgroup) -> Result<(), SetupError> {
    for dir in &cg.dirs {
        let tasks = dir.join("tasks");
        write_file(&tasks, "0").map_err(|e| {
            let detail = format!("cannot move the sandbox into its cgroup: {}", describe(&e));
            setup_error(&e, &tasks, with_hint(detail, &e, false))
        })?;
    }
    Ok(())
}

/// OOM kills so far in the sandbox cgroup (0 when the counter cannot be read).
pub fn oom_kills(cg: &Cgroup) -> u64 {
    fs::read_to_string(&cg.oom_file)
        .map(|text| policy::parse_oom_kills(&text))
        .unwrap_or(0)
}

/// Kills every process in the sandbox cgroup and removes its directories. Returns whether
/// every directory is gone.
pub fn destroy(cg: &Cgroup) -> bool {
    destroy_with(cg, &Kernel::REAL)
}

/// What cgroupfs does by itself around mkdir and rmdir; a seam for temp-dir tests.
struct Kernel<'a> {
    /// Called after a successful mkdir (cgroupfs creates the control files).
    populate: &'a dyn Fn(&Path) -> io::Result<()>,
    /// Removes a cgroup directory (cgroupfs removes its control files with it).
    rmdir: &'a dyn Fn(&Path) -> io::Result<()>,
}

fn kernel_populates(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    fs::remove_dir(dir)
}

impl Kernel<'static> {
    const REAL: Kernel<'static> = Kernel {
        populate: &kernel_populates,
        rmdir: &remove_dir,
    };
}

fn setup_error(err: &io::Error, path: &Path, detail: String) -> SetupError {
    SetupError {
        step: SetupStep::Cgroup,
        errno: err.raw_os_error().unwrap_or(0),
        path: path.display().to_string(),
        detail,
        reason: bulkhead_wire::SetupReason::Other,
    }
}

fn is_root() -> bool {
    crate::sys::ids().2 == 0
}

/// Appends the delegation advice to `detail` when `err` says we may not touch the cgroup
/// (EBUSY too when `busy_means_delegation`: the no-internal-process rule).
fn with_hint(detail: String, err: &io::Error, busy_means_delegation: bool) -> String {
    let errno = err.raw_os_error().unwrap_or(0);
    let denied = matches!(errno, libc::EACCES | libc::EPERM | libc::EROFS)
        || (busy_means_delegation && errno == libc::EBUSY);
    if !denied {
        return detail;
    }
    let rootless = if is_root() {
        ""
    } else if crate::sys::saved_uid() == Some(0) {
        // The saved set-user-id is root: a setuid-root launcher, whatever its euid now.
        // A setuid launcher working with its caller's rights (privileged::as_caller).
        return format!(
            "{detail}; a setuid launcher does cgroup work with its caller's rights: run the \
             controller in a cgroup delegated to its user (systemd: Delegate=yes, as the \
             packaged bulkhead@.service does; on a v1/hybrid host its memory, pids and cpu \
             directories too)"
        );
    } else {
        "; rootless mode needs a delegated cgroup"
    };
    format!("{detail}; {DELEGATION_HINT}{rootless}")
}

/// Writes `value` to an existing file in one write (never creates it).
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(value.as_bytes())
}

/// Pids listed in a `cgroup.procs` file (positive numbers only).
fn read_pids(procs: &Path) -> io::Result<Vec<libc::pid_t>> {
    let text = fs::read_to_string(procs)?;
    Ok(text
        .split_whitespace()
        .filter_map(|w| w.parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 0)
        .collect())
}

/// What [`create`] did so far, to undo on failure.
enum Done {
    Created(PathBuf),
}

fn create_with(plan: &CgroupPlan, kernel: &Kernel<'_>) -> Result<Cgroup, SetupError> {
    let mut done = Vec::new();
    for step in &plan.steps {
        if let Err(err) = run_step(step, kernel, &mut done) {
            for Done::Created(dir) in done.iter().rev() {
                let _ = (kernel.rmdir)(dir);
            }
            return Err(err);
        }
    }
    Ok(Cgroup {
        version: plan.version,
        dirs: plan.dirs.clone(),
        oom_file: plan.oom_file.clone(),
    })
}

fn run_step(
    step: &CgroupFile,
    kernel: &Kernel<'_>,
    done: &mut Vec<Done>,
) -> Result<(), SetupError> {
    match step {
        CgroupFile::Write {
            path,
            value,
            optional,
        } => {
            if *optional && !path.exists() {
                return Ok(());
            }
            let is_subtree = path
                .file_name()
                .is_some_and(|n| n == "cgroup.subtree_control");
            write_file(path, value).map_err(|e| {
                let detail = if is_subtree {
                    format!(
                        "cannot enable the {value:?} controllers for child cgroups: {}",
                        describe(&e)
                    )
                } else {
                    format!("cannot write {value:?} to a cgroup file: {}", describe(&e))
                };
                setup_error(&e, path, with_hint(detail, &e, is_subtree))
            })
        }
        CgroupFile::Mkdir(dir) => mkdir(dir, kernel, done),
        CgroupFile::MoveAllProcs { from, to } => move_all_procs(from, to),
    }
}

fn mkdir(dir: &Path, kernel: &Kernel<'_>, done: &mut Vec<Done>) -> Result<(), SetupError> {
    let mkdir_error = |e: io::Error| {
        let detail = if e.kind() == io::ErrorKind::NotFound {
            "cannot create cgroup: its parent does not exist".to_owned()
        } else {
            format!("cannot create cgroup: {}", describe(&e))
        };
        setup_error(&e, dir, with_hint(detail, &e, false))
    };
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if dir.file_name().is_some_and(|n| n == LEAF_NAME) {
                return Ok(()); // an earlier launch's leaf: reuse it
            }
            // Left from a crash? Only if nothing runs in it.
            let procs = dir.join("cgroup.procs");
            let pids = read_pids(&procs).map_err(|e| {
                setup_error(
                    &e,
                    &procs,
                    format!("cannot read an existing sandbox cgroup: {}", describe(&e)),
                )
            })?;
            if !pids.is_empty() {
                return Err(setup_error(
                    &io::Error::from_raw_os_error(libc::EEXIST),
                    dir,
                    "sandbox cgroup already exists and holds processes: a sandbox with this \
                     name is still running; stop it or use another name"
                        .into(),
                ));
            }
            (kernel.rmdir)(dir).map_err(|e| {
                let detail = format!("cannot remove a stale sandbox cgroup: {}", describe(&e));
                setup_error(&e, dir, with_hint(detail, &e, false))
            })?;
            fs::create_dir(dir).map_err(mkdir_error)?;
        }
        Err(e) => return Err(mkdir_error(e)),
    }
    done.push(Done::Created(dir.to_path_buf()));
    (kernel.populate)(dir)
        .map_err(|e| setup_error(&e, dir, format!("cannot populate: {}", describe(&e))))
}

/// Moves every process of `from` into `to`, pass after pass until `from` is empty (a
/// process may fork while we move it).
fn move_all_procs(from: &Path, to: &Path) -> Result<(), SetupError> {
    let from_procs = from.join("cgroup.procs");
    let to_procs = to.join("cgroup.procs");
    for _ in 0..MOVE_PASSES {
        let pids = read_pids(&from_procs).map_err(|e| {
            let detail = format!(
                "cannot list the processes to move out of the cgroup: {}",
                describe(&e)
            );
            setup_error(&e, &from_procs, with_hint(detail, &e, true))
        })?;
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            match write_file(&to_procs, &pid.to_string()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // exited meanwhile
                Err(e) => {
                    let detail = format!(
                        "cannot move process {pid} into {LEAF_NAME} to free the cgroup for \
                         child cgroups: {}",
                        describe(&e)
                    );
                    return Err(setup_error(&e, &to_procs, with_hint(detail, &e, true)));
                }
            }
        }
    }
    let e = io::Error::from_raw_os_error(libc::EBUSY);
    let detail =
        format!("processes keep appearing in the cgroup while moving them into {LEAF_NAME}");
    Err(setup_error(&e, &from_procs, with_hint(detail, &e, true)))
}

/// Whether any sandbox directory still lists a process; on v2 asks the kernel to kill
/// them (`cgroup.kill`, which needs write access to that file and nothing else). Pids read
/// here are never signalled.
fn kill_all(cg: &Cgroup) -> bool {
    let mut found = false;
    for dir in &cg.dirs {
        let Ok(pids) = read_pids(&dir.join("cgroup.procs")) else {
            continue; // gone already
        };
        if pids.is_empty() {
            continue;
        }
        found = true;
        if cg.version == CgroupVersion::V2 {
            let _ = write_file(&dir.join("cgroup.kill"), "1");
        }
    }
    found
}

/// Parses a sandbox cgroup's directory name, `bulkhead-<workspace>-<launcher pid>`: the
/// launcher's pid. `None` for anything else (the leaf, other names).
pub fn stale_candidate(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(policy::SANDBOX_PREFIX)?;
    let (ws, pid) = rest.rsplit_once('-')?;
    bulkhead_wire::validate_workspace_id(ws).ok()?;
    if pid.is_empty() || pid.len() > 10 || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse::<u32>().ok().filter(|&p| p > 0)
}

/// Removes sandbox cgroups beside the ones `plan` creates that a supervisor killed with
/// SIGKILL left behind: only directories named like ours ([`stale_candidate`]), only when
/// the launcher whose pid the name carries is gone (`alive`: the launcher asks the kernel
/// by `pidfd_open`, never a `/proc` entry, which `hidepid` hides for a live setuid launcher
/// of the same caller, and sends no signal), and only with
/// rmdir, which the kernel refuses for a cgroup that still has a process or a child cgroup.
/// A live launcher (a sandbox being set up or running) is never touched. Returns how many
/// were removed; errors are ignored (the launch does not depend on it).
///
/// The directory must also belong to the effective uid this runs as (the caller's when
/// setuid, see `privileged::as_caller`): the identity that would have created it.
///
/// `alive` tells whether a pid is a live process (the launcher's `sys::pid_alive`).
pub fn sweep_stale(plan: &CgroupPlan, alive: &dyn Fn(u32) -> bool) -> usize {
    sweep_stale_with(plan, alive, crate::sys::ids().2, &Kernel::REAL)
}

/// [`sweep_stale`] with `alive` telling whether a pid is a live process.
fn sweep_stale_with(
    plan: &CgroupPlan,
    alive: &dyn Fn(u32) -> bool,
    euid: u32,
    kernel: &Kernel<'_>,
) -> usize {
    use std::os::unix::fs::MetadataExt as _;
    let own = std::process::id();
    let mut removed = 0;
    for parent in plan.dirs.iter().filter_map(|d| d.parent()) {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(stale_candidate) else {
                continue;
            };
            if pid == own || alive(pid) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() || meta.uid() != euid {
                continue;
            }
            let dir = entry.path();
            if read_pids(&dir.join("cgroup.procs")).is_ok_and(|p| p.is_empty())
                && (kernel.rmdir)(&dir).is_ok()
            {
                removed += 1;
            }
        }
    }
    removed
}

fn destroy_with(cg: &Cgroup, kernel: &Kernel<'_>) -> bool {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while kill_all(cg) && Instant::now() < deadline {
        std::thread::sleep(DRAIN_POLL);
    }
    let mut removed = true;
    for dir in cg.dirs.iter().rev() {
        match (kernel.rmdir)(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => removed = false,
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new() -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "bulkhead-cgroup-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const V2_FILES: [&str; 8] = [
        "cgroup.procs",
        "cgroup.kill",
        "memory.max",
        "memory.swap.max",
        "memory.events",
        "pids.max",
        "cpu.weight",
        "cpu.max",
    ];

    /// cgroupfs in a temp dir: a new directory gets empty control files (and
    /// `memory.swap.max` only when `swap` is set); rmdir deletes them first.
    fn fake_populate(dir: &Path, swap: bool) -> io::Result<()> {
        for name in V2_FILES {
            if name != "memory.swap.max" || swap {
                fs::write(dir.join(name), "")?;
            }
        }
        Ok(())
    }

    fn fake_rmdir(dir: &Path) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
            }
        }
        fs::remove_dir(dir)
    }

    fn limits() -> Limits {
        Limits {
            memory_bytes: 64 << 20,
            swap_bytes: 0,
            pids: 16,
            cpu_weight: 300,
            cpu_quota_us: 50_000,
            cpu_period_us: 100_000,
            tmp_bytes: 1 << 20,
            shm_bytes: 1 << 20,
            nofile: 1024,
            io_weight: 100,
            io_max: Default::default(),
            disk_bytes: 0,
            inodes: 0,
        }
    }

    const MOUNTINFO: &str = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";

    /// A fake delegated v2 cgroup `/svc` under `scratch` and a plan for sandbox "ws1".
    fn v2_plan(scratch: &Path, subtree: &str) -> (PathBuf, CgroupPlan) {
        let d = scratch.join("sys/fs/cgroup/svc");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
        fs::write(d.join("cgroup.subtree_control"), subtree).unwrap();
        fs::write(d.join("cgroup.procs"), "").unwrap();
        fs::write(d.join("cgroup.type"), "domain\n").unwrap();
        let inputs = CgroupInputs {
            proc_self_cgroup: "0::/svc\n",
            mountinfo: MOUNTINFO,
            root_prefix: scratch,
            io_device: None,
        };
        let plan =
            policy::plan(&inputs, "ws1", &limits(), &|p: &Path| fs::read_to_string(p)).unwrap();
        (d, plan)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn v2_create_attach_destroy_in_a_temp_dir() {
        let scratch = Scratch::new();
        let (d, plan) = v2_plan(&scratch.0, "");
        let s = d.join("bulkhead-ws1");
        let kernel = Kernel {
            populate: &|dir| fake_populate(dir, true),
            rmdir: &fake_rmdir,
        };
        let cg = create_with(&plan, &kernel).unwrap();
        assert_eq!(cg.version, CgroupVersion::V2);
        assert_eq!(cg.dirs, vec![s.clone()]);
        assert_eq!(
            read(&d.join("cgroup.subtree_control")),
            "+memory +pids +cpu"
        );
        assert_eq!(read(&s.join("memory.max")), "67108864");
        assert_eq!(read(&s.join("memory.swap.max")), "0");
        assert_eq!(read(&s.join("pids.max")), "16");
        assert_eq!(read(&s.join("cpu.weight")), "300");
        assert_eq!(read(&s.join("cpu.max")), "50000 100000");

        attach(&cg, 4242).unwrap();
        assert_eq!(read(&s.join("cgroup.procs")), "4242");
        assert!(attach(&cg, 0).is_err());

        fs::write(&cg.oom_file, "oom 1\noom_kill 3\n").unwrap();
        assert_eq!(oom_kills(&cg), 3);

        // The "kernel" never empties cgroup.procs; clear it as the dead worker would.
        fs::write(s.join("cgroup.procs"), "").unwrap();
        assert!(destroy_with(&cg, &kernel));
        assert!(!s.exists());
        // Only the sandbox directory went: the delegated cgroup and its files stay.
        assert!(d.join("cgroup.controllers").exists());
        // Destroying twice is fine.
        assert!(destroy_with(&cg, &kernel));
        assert_eq!(oom_kills(&cg), 0);
    }

    #[test]
    fn optional_file_is_skipped_when_absent() {
        let scratch = Scratch::new();
        let (d, plan) = v2_plan(&scratch.0, "cpu memory pids");
        let kernel = Kernel {
            populate: &|dir| fake_populate(dir, false),
            rmdir: &fake_rmdir,
        };
        let cg = create_with(&plan, &kernel).unwrap();
        assert!(!d.join("bulkhead-ws1/memory.swap.max").exists());
        // subtree_control was not touched: the controllers were already enabled.
        assert_eq!(read(&d.join("cgroup.subtree_control")), "cpu memory pids");
        assert!(destroy_with(&cg, &kernel));
    }

    #[test]
    fn a_failed_step_undoes_the_created_dirs() {
        let scratch = Scratch::new();
        let (d, plan) = v2_plan(&scratch.0, "cpu memory pids");
        // No control files appear: the first mandatory write fails.
        let kernel = Kernel {
            populate: &|_| Ok(()),
            rmdir: &fake_rmdir,
        };
        let err = create_with(&plan, &kernel).unwrap_err();
        assert_eq!(err.step, SetupStep::Cgroup);
        assert_eq!(err.errno, libc::ENOENT);
        assert!(err.path.ends_with("bulkhead-ws1/memory.max"), "{err}");
        assert!(err.detail.starts_with("cannot write \"67108864\""), "{err}");
        assert!(!d.join("bulkhead-ws1").exists());
    }

    #[test]
    fn stale_sandbox_dir_is_recreated_and_a_running_one_refused() {
        let scratch = Scratch::new();
        let (d, plan) = v2_plan(&scratch.0, "cpu memory pids");
        let s = d.join("bulkhead-ws1");
        let rmdirs = RefCell::new(Vec::new());
        let rmdir = |dir: &Path| {
            rmdirs.borrow_mut().push(dir.to_path_buf());
            fake_rmdir(dir)
        };
        let kernel = Kernel {
            populate: &|dir| fake_populate(dir, true),
            rmdir: &rmdir,
        };
        // Stale: exists, no processes, an old limit in it.
        fs::create_dir(&s).unwrap();
        fake_populate(&s, true).unwrap();
        fs::write(s.join("pids.max"), "999").unwrap();
        let cg = create_with(&plan, &kernel).unwrap();
        assert_eq!(*rmdirs.borrow(), vec![s.clone()]);
        assert_eq!(read(&s.join("pids.max")), "16");

        // Running (appeared after planning): refused, and left alone.
        fs::write(s.join("cgroup.procs"), "2147483647\n").unwrap();
        let err = create_with(&plan, &kernel).unwrap_err();
        assert!(err.detail.contains("still running"), "{err}");
        assert_eq!(err.errno, libc::EEXIST);
        assert!(s.join("cgroup.procs").exists());
        fs::write(s.join("cgroup.procs"), "").unwrap();
        assert!(destroy_with(&cg, &kernel));
    }

    #[test]
    fn an_existing_leaf_is_reused() {
        let scratch = Scratch::new();
        let leaf = scratch.0.join(LEAF_NAME);
        fs::create_dir(&leaf).unwrap();
        fs::write(leaf.join("cgroup.procs"), "1\n").unwrap();
        let plan = CgroupPlan {
            version: CgroupVersion::V2,
            steps: vec![CgroupFile::Mkdir(leaf.clone())],
            dirs: vec![],
            oom_file: PathBuf::new(),
        };
        let kernel = Kernel {
            populate: &|_| panic!("populate called for an existing leaf"),
            rmdir: &|_| panic!("rmdir called for an existing leaf"),
        };
        create_with(&plan, &kernel).unwrap();
        assert_eq!(read(&leaf.join("cgroup.procs")), "1\n");
    }

    #[test]
    fn reads_pids_but_never_signals_them() {
        let dir = Scratch::new();
        fs::write(dir.0.join("p"), "12\n0\n-1\nx\n34\n").unwrap();
        assert_eq!(read_pids(&dir.0.join("p")).unwrap(), vec![12, 34]);
        // The teardown of a cgroup that still lists processes (the "kernel" here never
        // empties it) waits, fails to remove it, and signals nobody: pid 1 is listed, and
        // this test would not survive a SIGKILL sent to its own pid either.
        let (d, plan) = v2_plan(&dir.0, "cpu memory pids");
        let kernel = Kernel {
            populate: &|dir| fake_populate(dir, true),
            rmdir: &|dir: &Path| {
                if read(&dir.join("cgroup.procs")).is_empty() {
                    fake_rmdir(dir)
                } else {
                    Err(io::Error::from_raw_os_error(libc::EBUSY))
                }
            },
        };
        let cg = create_with(&plan, &kernel).unwrap();
        let s = d.join("bulkhead-ws1");
        fs::write(
            s.join("cgroup.procs"),
            format!("1\n{}\n", std::process::id()),
        )
        .unwrap();
        assert!(!destroy_with(&cg, &kernel));
        assert_eq!(
            read(&s.join("cgroup.kill")),
            "1",
            "v2 asks the kernel instead"
        );
        fs::write(s.join("cgroup.procs"), "").unwrap();
        assert!(destroy_with(&cg, &kernel));
    }

    #[test]
    fn stale_sandbox_cgroups_of_dead_launchers_are_swept() {
        assert_eq!(stale_candidate("bulkhead-w-123"), Some(123));
        assert_eq!(stale_candidate("bulkhead-my-ws_1-42"), Some(42));
        for name in [
            "bulkhead-leaf",
            "bulkhead-w",
            "bulkhead-w-",
            "bulkhead-w-0",
            "bulkhead-W-12",
            "bulkhead--12",
            "bulkhead-w-12x",
            "other-w-12",
            "bulkhead-w-99999999999",
        ] {
            assert_eq!(stale_candidate(name), None, "{name}");
        }
        let scratch = Scratch::new();
        let (d, plan) = v2_plan(&scratch.0, "cpu memory pids");
        // Pid 777 is alive, 778 and 779 are not; the sweep asks about each candidate.
        let asked = RefCell::new(Vec::new());
        let alive = |pid: u32| {
            asked.borrow_mut().push(pid);
            pid == 777
        };
        let mk = |name: &str, procs: &str| {
            let p = d.join(name);
            fs::create_dir(&p).unwrap();
            fs::write(p.join("cgroup.procs"), procs).unwrap();
            p
        };
        let live = mk("bulkhead-w-777", "");
        let dead = mk("bulkhead-w-778", "");
        let busy = mk("bulkhead-w-779", "4242\n");
        let other = mk("someone-else-778", "");
        let leaf = mk(LEAF_NAME, "");
        fs::write(d.join("bulkhead-x-780"), "").unwrap(); // not a directory
        let euid = crate::sys::ids().2;
        let removed = sweep_stale_with(
            &plan,
            &alive,
            euid,
            &Kernel {
                populate: &|_| Ok(()),
                rmdir: &fake_rmdir,
            },
        );
        assert_eq!(removed, 1);
        assert!(!dead.exists());
        assert!(
            asked.borrow().contains(&777) && asked.borrow().contains(&778),
            "{:?}",
            asked.borrow()
        );
        // Named like a sandbox's, but not made by the uid sweeping.
        let foreign = mk("bulkhead-w-781", "");
        let removed = sweep_stale_with(
            &plan,
            &alive,
            euid.wrapping_add(1),
            &Kernel {
                populate: &|_| Ok(()),
                rmdir: &fake_rmdir,
            },
        );
        assert_eq!(removed, 0, "swept a directory another uid made");
        assert!(foreign.exists());
        for kept in [&live, &busy, &other, &leaf] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }

    #[test]
    fn io_errors_read_lowercase_without_the_errno_tail() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(describe(&e), "permission denied");
        assert_eq!(describe(&io::Error::other("Odd")), "odd");
    }

    #[test]
    fn delegation_hint_on_permission_errors() {
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        let text = with_hint("cannot create cgroup".into(), &eacces, false);
        assert!(text.contains("Delegate=yes"), "{text}");
        assert_eq!(text.contains("rootless"), !is_root(), "{text}");
        let ebusy = io::Error::from_raw_os_error(libc::EBUSY);
        assert!(with_hint("x".into(), &ebusy, true).contains("delegat"));
        assert_eq!(with_hint("x".into(), &ebusy, false), "x");
    }
}
