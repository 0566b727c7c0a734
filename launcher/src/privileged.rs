//! Privileged mode: the launcher runs as root for a caller that may not be (setuid-root).
//!
//! Everything here treats the caller as hostile. Its request is bounded by
//! `/etc/bulkhead/launch.toml` (root-owned, not writable by anyone else), it must be listed
//! there, its cgroup must lie within the configured parent, and every host directory it
//! names is resolved with *its* filesystem permissions (fsuid/fsgid), without following a
//! symlink, and must be owned by it (or be one of the operator's `bind_paths`).
//!
//! The directories are then mounted through id-mapped mounts made here, before the
//! sandbox's namespaces exist: on disk the files stay the caller's; inside they belong to
//! the sandbox user, whose host uid is the workspace's own id from the configured range.
//! That id owns no file on the host, so a kernel-level escape from one sandbox lands as an
//! account that can read neither another tenant's files nor the controller's memory.

use std::io::Read;
use std::os::fd::{FromRawFd, RawFd};

use bulkhead_policy::launchconf::{
    check_dir_meta, check_file_meta, FOREIGN_ID, LAUNCH_CONFIG_PATH,
};
use bulkhead_policy::LaunchConfig;
use bulkhead_wire::{LaunchSpec, SetupError, SetupStep};

use crate::fs::Source;
use crate::sys;
use crate::{err, plain};

/// Who runs the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No privilege: rootless user namespaces.
    Rootless,
    /// Root called it: trusted already.
    Root,
    /// An unprivileged user called the setuid-root launcher.
    Setuid,
}

impl Mode {
    /// The mode for real uid `uid` and effective uid `euid`.
    pub fn of(uid: u32, euid: u32) -> Mode {
        match (uid, euid) {
            (_, e) if e != 0 => Mode::Rootless,
            (0, _) => Mode::Root,
            _ => Mode::Setuid,
        }
    }

    /// The launcher has privilege.
    pub fn privileged(self) -> bool {
        self != Mode::Rootless
    }
}

/// Environment variable naming another configuration file, honoured for a root caller only
/// (a setuid launcher reads [`LAUNCH_CONFIG_PATH`] and nothing else).
pub const CONFIG_ENV: &str = "BULKHEAD_LAUNCH_CONFIG";

fn spec_err(detail: impl Into<String>) -> SetupError {
    plain(SetupStep::Spec, LAUNCH_CONFIG_PATH, detail)
}

/// The rules this launch is held to.
///
/// - setuid: [`LAUNCH_CONFIG_PATH`], required, with its ownership and every directory above
///   it checked;
/// - root: the host id range of `$BULKHEAD_LAUNCH_CONFIG` if set, else of
///   [`LAUNCH_CONFIG_PATH`] if it exists, else [`LaunchConfig::root_default`]; nothing else
///   of the file binds root, which could do it all by hand ([`LaunchConfig::for_root`]);
/// - rootless: [`LaunchConfig::root_default`] (the policy's own ceilings; the sandbox runs
///   as the caller anyway).
pub fn rules(mode: Mode, env_path: Option<String>) -> Result<LaunchConfig, SetupError> {
    match mode {
        Mode::Rootless => Ok(LaunchConfig::root_default()),
        Mode::Setuid => load(LAUNCH_CONFIG_PATH, true),
        Mode::Root => match env_path {
            Some(p) => load(&p, false).map(LaunchConfig::for_root),
            None if std::path::Path::new(LAUNCH_CONFIG_PATH).exists() => {
                load(LAUNCH_CONFIG_PATH, true).map(LaunchConfig::for_root)
            }
            None => Ok(LaunchConfig::root_default()),
        },
    }
}

fn load(path: &str, check_owner: bool) -> Result<LaunchConfig, SetupError> {
    let e = |x: std::io::Error, what: &str| err(SetupStep::Spec, &x, path, what);
    if check_owner {
        root_owned_dirs(path, SetupStep::Spec).map_err(|x| match x.errno {
            0 => x,
            _ => SetupError {
                detail: format!(
                    "{}; privileged mode needs its configuration directory (install the package's /etc/bulkhead/launch.toml)",
                    x.detail
                ),
                ..x
            },
        })?;
    }
    let fd = sys::open_file_nofollow(path).map_err(|x| {
        e(
            x,
            "privileged mode needs its configuration (a root-owned /etc/bulkhead/launch.toml)",
        )
    })?;
    // SAFETY: `fd` was just opened here and nothing else owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let (owner, mode, size) = sys::fd_stat(fd).map_err(|x| e(x, "stat"))?;
    if check_owner {
        check_file_meta(owner, mode, size).map_err(|c| spec_err(c.to_string()))?;
    }
    let mut text = String::new();
    file.by_ref()
        .take(bulkhead_policy::launchconf::MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|x| e(x, "read"))?;
    LaunchConfig::parse(&text).map_err(|c| plain(SetupStep::Spec, path, c.0))
}

/// Checks every directory from `/` down to the one holding `path`: root's, not writable by
/// group or others (else someone else could swap what lies below), none a symlink.
pub fn root_owned_dirs(path: &str, step: SetupStep) -> Result<(), SetupError> {
    let parent = path.rsplit_once('/').map_or("", |(d, _)| d);
    let mut dir = String::new();
    for comp in std::iter::once("").chain(parent.split('/').skip(1)) {
        dir.push('/');
        dir.push_str(comp);
        let d = dir.replace("//", "/");
        let fd = sys::open_dir_nofollow(&d).map_err(|x| err(step, &x, &d, "open"))?;
        let st = sys::fd_stat(fd);
        sys::close(fd);
        let (owner, mode, _) = st.map_err(|x| err(step, &x, &d, "stat"))?;
        check_dir_meta(&d, owner, mode).map_err(|c| plain(step, &d, c.0))?;
    }
    Ok(())
}

/// Who a record of the id registry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// No record: the id is free.
    Nobody,
    /// The record names this uid.
    Uid(u32),
    /// A record that is not `<uid>\n`: a write of an older launcher cut short (an inherited
    /// `RLIMIT_FSIZE`, a crash). Nobody's; the next claim replaces it.
    Torn,
}

/// Reads record `name` of the registry `dir`.
fn holder(dir: RawFd, name: &str) -> std::io::Result<Holder> {
    let fd = match sys::openat_file(
        dir,
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Holder::Nobody),
        Err(e) => return Err(e),
    };
    let mut buf = [0u8; 16];
    let n = sys::read(fd, &mut buf);
    sys::close(fd);
    let text = std::str::from_utf8(&buf[..n?]).unwrap_or("");
    Ok(text
        .strip_suffix('\n')
        .and_then(|t| t.parse::<u32>().ok())
        .map_or(Holder::Torn, Holder::Uid))
}

/// How many ids of the registry `dir` name `caller`, counting up to `stop`.
fn claims_of(dir: RawFd, caller: u32, stop: u32) -> std::io::Result<u32> {
    let mut held = 0;
    for entry in std::fs::read_dir(format!("/proc/self/fd/{dir}"))? {
        let name = entry?.file_name();
        let Some(name) = name.to_str().filter(|n| n.parse::<u32>().is_ok()) else {
            continue; // a temporary file of a claim being written
        };
        if holder(dir, name)? == Holder::Uid(caller) {
            held += 1;
            if held >= stop {
                break;
            }
        }
    }
    Ok(held)
}

/// Writes record `name` = `caller` into the registry `dir` whole or not at all: a temporary
/// file, fsync, then a rename that fails if the record appeared meanwhile (`replace`: that
/// replaces a torn one), then an fsync of the directory. SIGXFSZ is ignored for the write
/// (the launcher's own `RLIMIT_FSIZE` is unlimited already, see `sanitize`): a limit would
/// give an error, never a half-written record.
fn write_record(dir: RawFd, name: &str, caller: u32, replace: bool) -> std::io::Result<()> {
    let tmp = format!(".{name}.{}.tmp", std::process::id());
    let _ = sys::unlink_at(dir, &tmp); // left by a launcher of the same pid that died here
    let fd = sys::openat_file(
        dir,
        &tmp,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0o600,
    )?;
    let _ = sys::ignore_signal(libc::SIGXFSZ, true);
    let written = sys::write_all(fd, format!("{caller}\n").as_bytes()).and_then(|_| sys::fsync(fd));
    let _ = sys::ignore_signal(libc::SIGXFSZ, false);
    sys::close(fd);
    let renamed = written.and_then(|_| {
        if replace {
            sys::rename_replace(dir, &tmp, name)
        } else {
            sys::rename_noreplace(dir, &tmp, name)
        }
    });
    if renamed.is_err() {
        let _ = sys::unlink_at(dir, &tmp);
    }
    renamed?;
    sys::fsync(dir)
}

/// How long a claim waits for the id registry's lock before refusing: a caller that stops
/// its own launcher while it holds the lock (SIGSTOP) delays other callers' new claims by
/// this much at most, never forever.
const REGISTRY_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// The pause between two attempts at the lock.
const REGISTRY_LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Takes the exclusive lock of the registry `dir` (released when it is closed), trying for
/// up to `wait`; `Ok(false)` when it stayed busy.
fn lock_registry(dir: RawFd, wait: std::time::Duration) -> std::io::Result<bool> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        if sys::try_lock_exclusive(dir)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(REGISTRY_LOCK_POLL);
    }
}

/// What a record says of a claim by `caller`: `Some(torn)` when the id is free (`torn`: a
/// torn record to replace), `None` when `caller` holds it already, an error when another
/// caller does.
fn free_for(holder: Holder, id: u32, caller: u32, path: &str) -> Result<Option<bool>, SetupError> {
    match holder {
        Holder::Uid(owner) if owner == caller => Ok(None),
        Holder::Uid(owner) => Err(SetupError {
            reason: bulkhead_wire::SetupReason::ForeignHostId { id, owner },
            ..plain(
                SetupStep::Spec,
                path,
                format!("host id {id} {FOREIGN_ID} of this launcher (uid {owner}): pick another id of the range"),
            )
        }),
        Holder::Nobody => Ok(Some(false)),
        Holder::Torn => Ok(Some(true)),
    }
}

/// Records in `registry` that `caller` holds host id `id`, or refuses when another caller
/// does, or when `caller` holds `quota` ids already. One file per id holding the caller's
/// uid, written whole (tmp + fsync + rename); a claim is never released, so an id whose
/// record names the caller already needs no lock. New claims are made one at a time under
/// an exclusive lock of the registry directory (the record read again under it), so the
/// count and the claim agree; the lock is waited for [`REGISTRY_LOCK_WAIT`] at most. The
/// directory and every one above it must be root's.
pub fn claim_host_id(registry: &str, id: u32, caller: u32, quota: u32) -> Result<(), SetupError> {
    let wait = REGISTRY_LOCK_WAIT;
    let name = id.to_string();
    let path = format!("{registry}/{name}");
    root_owned_dirs(&path, SetupStep::Spec)?;
    let dir = sys::open_dir_rdonly_nofollow(registry)
        .map_err(|e| err(SetupStep::Spec, &e, registry, "open the id registry"))?;
    let read = |dir: RawFd| {
        holder(dir, &name).map_err(|e| err(SetupStep::Spec, &e, &path, "read the host id's holder"))
    };
    let result = (|| {
        // Unlocked: a whole record never changes, so one naming the caller stays its.
        if free_for(read(dir)?, id, caller, &path)?.is_none() {
            return Ok(());
        }
        if !lock_registry(dir, wait)
            .map_err(|e| err(SetupStep::Spec, &e, registry, "lock the id registry"))?
        {
            return Err(plain(
                SetupStep::Spec,
                registry,
                format!(
                    "the host id registry is busy (another launcher has held its lock for                      over {} s); try again",
                    wait.as_secs()
                ),
            ));
        }
        // Locked: read again, another claim may have been made meanwhile.
        let Some(torn) = free_for(read(dir)?, id, caller, &path)? else {
            return Ok(());
        };
        let held = claims_of(dir, caller, quota)
            .map_err(|e| err(SetupStep::Spec, &e, registry, "count the caller's host ids"))?;
        if held >= quota {
            return Err(plain(
                SetupStep::Spec,
                registry,
                format!(
                    "uid {caller} holds {held} host ids already, the most max_ids_per_caller \
                     allows; an operator can raise max_ids_per_caller in {LAUNCH_CONFIG_PATH} \
                     or remove this caller's records of workspaces that are gone"
                ),
            ));
        }
        write_record(dir, &name, caller, torn).map_err(|e| {
            let what = if e.raw_os_error() == Some(libc::EFBIG) {
                "record the host id: the caller's file-size limit (RLIMIT_FSIZE) is too small \
                 and the launcher may not raise it (no CAP_SYS_RESOURCE); start the \
                 controller without `ulimit -f`; nothing was recorded"
            } else {
                "record the host id"
            };
            err(SetupStep::Spec, &e, &path, what)
        })
    })();
    sys::close(dir);
    result
}

/// Whether the caller may use the launcher at all, and from where.
/// `own_cgroup` is the launcher's `/proc/self/cgroup`, read once by `run` for this and for
/// the cgroup plan.
pub fn authorize(
    rules: &LaunchConfig,
    uid: u32,
    gid: u32,
    own_cgroup: &str,
) -> Result<(), SetupError> {
    let mut gids = sys::groups().map_err(|x| err(SetupStep::Spec, &x, "", "getgroups"))?;
    gids.push(gid);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    if !rules.allows(uid, &gids, &passwd, &group) {
        return Err(spec_err(format!(
            "uid {uid} may not use this privileged launcher: it is neither in allowed_users nor in a group of allowed_groups"
        )));
    }
    if rules.cgroup_parent.is_some() {
        for line in own_cgroup.lines() {
            let mut f = line.splitn(3, ':');
            let (_, ctrls, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
            let relevant = ctrls.is_empty()
                || ctrls
                    .split(',')
                    .any(|c| matches!(c, "memory" | "pids" | "cpu"));
            if relevant && !rules.cgroup_allowed(path) {
                return Err(spec_err(format!(
                    "the caller's cgroup {path} is not inside cgroup_parent {}: run the controller there (e.g. its systemd unit)",
                    rules.cgroup_parent.as_deref().unwrap_or("")
                )));
            }
        }
    }
    Ok(())
}

/// Runs `f` with the effective uid and gid of the caller when `who` is set (a setuid
/// launcher's cgroup work), so the kernel checks it as the caller's own: in the caller's
/// delegated cgroup, root does nothing the caller could not. Back to root afterwards.
pub fn as_caller<T>(who: Option<(u32, u32)>, f: impl FnOnce() -> T) -> T {
    let Some((uid, gid)) = who else { return f() };
    let switched = sys::set_effective_ids(uid, gid).is_ok();
    let r = f();
    if switched && sys::set_effective_ids(0, 0).is_err() {
        // Cannot regain root: nothing below may run half-privileged.
        sys::exit_now(bulkhead_wire::exit::LAUNCH_WORKER_ERROR);
    }
    r
}

/// Runs `f` with the filesystem uid and gid of the caller when `who` is set, effective ids
/// unchanged: for `clone3(CLONE_INTO_CGROUP)`, whose check of the target cgroup is a write
/// permission check of its `cgroup.procs` with the fsuid, while the user namespace it
/// creates must still belong to root (the owner is the effective uid). The child starts
/// with the same fsuid; both sides return to root's here.
pub fn as_caller_fs<T>(who: Option<(u32, u32)>, f: impl FnOnce() -> T) -> T {
    let Some((uid, gid)) = who else { return f() };
    let old_u = sys::setfsuid(uid);
    let old_g = sys::setfsgid(gid);
    let r = f();
    sys::setfsgid(old_g);
    sys::setfsuid(old_u);
    r
}

/// Opens `path` as the caller would (its fsuid/fsgid and groups), without following a
/// symlink in any component.
fn open_as_caller(path: &str, uid: u32, gid: u32) -> std::io::Result<RawFd> {
    let old_u = sys::setfsuid(uid);
    let old_g = sys::setfsgid(gid);
    let r = sys::open_dir_nofollow(path);
    sys::setfsgid(old_g);
    sys::setfsuid(old_u);
    r
}

fn open_owned(path: &str, uid: u32, gid: u32, field: &str) -> Result<RawFd, SetupError> {
    let fd = open_as_caller(path, uid, gid).map_err(|e| {
        let why = match e.raw_os_error() {
            Some(libc::ELOOP) => "a component of the path is a symlink; refusing to follow it",
            Some(libc::ENOENT) => "the directory does not exist",
            Some(libc::ENOTDIR) => "the path is not a directory",
            Some(libc::EACCES) => "the caller cannot reach this directory",
            _ => "cannot open the directory",
        };
        err(SetupStep::Spec, &e, path, format!("{field}: {why}"))
    })?;
    let (owner, _, _) = sys::fd_owner(fd).map_err(|e| {
        sys::close(fd);
        err(SetupStep::Spec, &e, path, "stat")
    })?;
    if owner != uid {
        sys::close(fd);
        return Err(plain(
            SetupStep::Spec,
            path,
            format!(
                "{field}: the directory is owned by uid {owner}, not by the caller (uid {uid}); a privileged launcher only mounts the caller's own directories"
            ),
        ));
    }
    Ok(fd)
}

/// A user namespace whose only mapping is `from` → `to` (uid and gid): the id-mapping of
/// the workspace mounts. Made by a short-lived child that unshares it and waits until its
/// namespace is pinned by an fd here.
fn idmap_userns(from: (u32, u32), to: (u32, u32)) -> std::io::Result<RawFd> {
    let (rd, wr) = sys::pipe()?;
    let child = match sys::clone3(libc::CLONE_NEWUSER, None) {
        Ok(None) => {
            sys::close(wr);
            let mut b = [0u8; 1];
            let _ = sys::read(rd, &mut b);
            sys::exit_now(0);
        }
        Ok(Some(child)) => child,
        Err(e) => {
            sys::close(rd);
            sys::close(wr);
            return Err(e);
        }
    };
    sys::close(rd);
    // Through /proc/<pid> proven to be this child (sys::proc_dir_of), never by pid number.
    let r = sys::proc_dir_of(child).and_then(|dir| {
        let w = |file: &str, val: String| -> std::io::Result<()> {
            let fd = sys::openat_file(dir, file, libc::O_WRONLY | libc::O_CLOEXEC, 0)?;
            let r = sys::write_all(fd, val.as_bytes());
            sys::close(fd);
            r
        };
        let r = w("uid_map", format!("{} {} 1\n", from.0, to.0))
            .and_then(|_| w("setgroups", "deny".into()))
            .and_then(|_| w("gid_map", format!("{} {} 1\n", from.1, to.1)))
            .and_then(|_| sys::openat_file(dir, "ns/user", libc::O_RDONLY | libc::O_CLOEXEC, 0));
        sys::close(dir);
        r
    });
    sys::close(wr);
    let _ = sys::wait_pidfd(child.pidfd, false);
    sys::close(child.pidfd);
    r
}

/// `EXT4_SUPER_MAGIC`: a disk limit is a workspace's own ext4 filesystem.
const EXT4_SUPER_MAGIC: u64 = 0xEF53;

/// Why the filesystem under a workspace directory (`fs`, `mount_root`: whether the directory
/// is a mount's root) does not enforce the declared `disk_bytes`/`inodes`, or `None` when it
/// does. The size as the controller's attestation has it (`controller/src/disk.rs`): at most
/// the limit (ext4's own metadata makes it a little smaller). Inodes: not far more than the
/// limit; fewer are accepted, since `mkfs.ext4 -N` rounds to whole inode-table blocks per
/// group, down as well as up (`-N 10000` on 64 MiB gives 9984), and too few inodes harm
/// only the tenant, never the host.
fn workspace_fs_problem(
    fs: sys::FsInfo,
    mount_root: bool,
    disk_bytes: u64,
    inodes: u64,
) -> Option<String> {
    if fs.fs_type != EXT4_SUPER_MAGIC {
        return Some(format!(
            "the directory is on a filesystem of type {:#x}, not the workspace's own ext4 \
             filesystem that a disk limit needs (bulkhead workspace set ID --disk SIZE, as root)",
            fs.fs_type
        ));
    }
    if !mount_root {
        return Some(
            "the directory is not the root of a mount: a disk limit needs the workspace's own \
             filesystem mounted on it (bulkhead workspace set ID --disk SIZE, as root)"
                .into(),
        );
    }
    if fs.size_bytes > disk_bytes {
        return Some(format!(
            "the workspace's filesystem holds {} bytes, more than its disk limit of {disk_bytes}: \
             set the limit again (bulkhead workspace set ID --disk SIZE)",
            fs.size_bytes
        ));
    }
    if inodes != 0 && fs.inodes > inodes.saturating_mul(2).max(inodes.saturating_add(4096)) {
        return Some(format!(
            "the workspace's filesystem has {} inodes, far more than its inode limit of \
             {inodes}: set the limit again (bulkhead workspace set ID --disk SIZE --inodes N)",
            fs.inodes
        ));
    }
    None
}

/// Setuid: the launcher's own check that the workspace directory `fd` (opened already, so no
/// path is looked up again) is a filesystem that enforces the spec's disk and inode limits,
/// whenever the spec declares one or the rules' `disk_max` demands one for a writable
/// workspace. The number a caller declares proves nothing by itself.
fn check_workspace_fs(
    fd: RawFd,
    spec: &LaunchSpec,
    rules: &LaunchConfig,
    path: &str,
) -> Result<(), SetupError> {
    let l = &spec.limits;
    let demanded = rules.limits.disk_max.is_some() && spec.workspace_writable;
    if l.disk_bytes == 0 && !demanded {
        return Ok(());
    }
    if l.disk_bytes == 0 {
        return Err(plain(
            SetupStep::Spec,
            path,
            "workspace_dir: no disk limit, but the launch rules' ceiling `disk_max` demands one",
        ));
    }
    let fs =
        sys::fd_statfs(fd).map_err(|e| err(SetupStep::Spec, &e, path, "workspace_dir: statfs"))?;
    let root = sys::is_mount_root(fd).map_err(|e| {
        err(
            SetupStep::Spec,
            &e,
            path,
            "workspace_dir: tell whether it is a mount root",
        )
    })?;
    match workspace_fs_problem(fs, root, l.disk_bytes, l.inodes) {
        Some(why) => Err(plain(
            SetupStep::Spec,
            path,
            format!("workspace_dir: {why}"),
        )),
        None => Ok(()),
    }
}

/// The workspace and the extra binds as detached, id-mapped mounts, ready for the child to
/// attach. Called after [`bulkhead_policy::validate_spec`]. `setuid`: the workspace's disk
/// limit is checked on its filesystem too ([`check_workspace_fs`]).
pub fn sources(
    spec: &LaunchSpec,
    rules: &LaunchConfig,
    caller: (u32, u32),
    host: (u32, u32),
    setuid: bool,
) -> Result<(Source, Vec<Source>), SetupError> {
    use sys::{
        MOUNT_ATTR_IDMAP as IDMAP, MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOSUID as NOSUID,
        MOUNT_ATTR_RDONLY as RDONLY,
    };
    let userns = idmap_userns(caller, host).map_err(|e| {
        err(
            SetupStep::Spec,
            &e,
            "",
            "create the user namespace of the workspace's id mapping",
        )
    })?;
    let tree = |fd: RawFd, path: &str, set: u64, idmap: bool| -> Result<Source, SetupError> {
        let t = sys::open_tree_clone(fd);
        sys::close(fd);
        let t = t.map_err(|e| err(SetupStep::Spec, &e, path, "open_tree"))?;
        sys::mount_setattr_fd(t, set | if idmap { IDMAP } else { 0 }, idmap.then_some(userns))
            .map_err(|e| {
                sys::close(t);
                let hint = if idmap && e.raw_os_error() == Some(libc::EINVAL) {
                    "id-mapped mount refused: the filesystem or kernel lacks id-mapped mounts (Linux >= 5.12; ext4, xfs, btrfs, tmpfs >= 6.3); put the state directory on one that has them"
                } else {
                    "set the mount's attributes"
                };
                err(SetupStep::Spec, &e, path, hint)
            })?;
        Ok(Source::Tree(t))
    };
    let result = (|| {
        let ws = open_owned(&spec.workspace_dir, caller.0, caller.1, "workspace_dir")?;
        if setuid {
            if let Err(e) = check_workspace_fs(ws, spec, rules, &spec.workspace_dir) {
                sys::close(ws);
                return Err(e);
            }
        }
        let ro = if spec.workspace_writable { 0 } else { RDONLY };
        let workspace = tree(ws, &spec.workspace_dir, ro | NOSUID | NODEV, true)?;
        let mut binds = Vec::with_capacity(spec.binds.len());
        for b in &spec.binds {
            let operator = !rules.state_roots.is_empty()
                && !rules.under_state_root(&b.host)
                && rules.in_bind_paths(&b.host);
            let src = if operator {
                // The operator's own directory: no owner rule, never id-mapped.
                let fd = open_as_caller(&b.host, caller.0, caller.1).map_err(|e| {
                    err(
                        SetupStep::Spec,
                        &e,
                        &b.host,
                        "binds.host: cannot open the bind path",
                    )
                })?;
                tree(fd, &b.host, RDONLY | NOSUID | NODEV, false)?
            } else {
                let fd = open_owned(&b.host, caller.0, caller.1, "binds.host")?;
                tree(fd, &b.host, RDONLY | NOSUID | NODEV, true)?
            };
            binds.push(src);
        }
        Ok((workspace, binds))
    })();
    sys::close(userns);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_limit_needs_its_own_small_enough_ext4_mount() {
        let m = 1u64 << 20;
        let fs = |fs_type, size_bytes, inodes| sys::FsInfo {
            fs_type,
            size_bytes,
            inodes,
        };
        // The workspace's own ext4, a little smaller than the limit (ext4's metadata).
        assert_eq!(
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 58 * m, 16384), true, 64 * m, 0),
            None
        );
        assert_eq!(
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 58 * m, 16384), true, 64 * m, 16000),
            None
        );
        // A plain directory of the state filesystem (btrfs, tmpfs, ...).
        let why = workspace_fs_problem(fs(0x9123_683e, 58 * m, 0), true, 64 * m, 0).unwrap();
        assert!(why.contains("0x9123683e") && why.contains("ext4"), "{why}");
        // A directory inside some ext4 that is not its own mount.
        let why =
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 58 * m, 16384), false, 64 * m, 0).unwrap();
        assert!(why.contains("not the root of a mount"), "{why}");
        // Larger than declared, or far more inodes.
        let why =
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 1 << 40, 16384), true, 64 * m, 0).unwrap();
        assert!(why.contains("more than its disk limit"), "{why}");
        assert!(
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 64 * m + 1, 1), true, 64 * m, 0).is_some()
        );
        // mkfs's rounding down of the inode count harms nobody but the tenant.
        assert_eq!(
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 58 * m, 9984), true, 64 * m, 10000),
            None
        );
        assert!(
            workspace_fs_problem(fs(EXT4_SUPER_MAGIC, 58 * m, 1 << 30), true, 64 * m, 16000)
                .is_some()
        );
    }

    #[test]
    fn the_filesystem_of_an_fd_is_read_without_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        let fd = sys::open_dir_nofollow(p).unwrap();
        let fs = sys::fd_statfs(fd).unwrap();
        let root = sys::is_mount_root(fd).unwrap();
        sys::close(fd);
        assert!(fs.size_bytes > 0 && fs.fs_type != 0, "{fs:?}");
        // A fresh temporary directory is never a mount's root; `/` always is.
        assert!(!root);
        let fd = sys::open_dir_nofollow("/").unwrap();
        let root = sys::is_mount_root(fd).unwrap();
        sys::close(fd);
        assert!(root);
    }

    #[test]
    fn a_host_id_held_by_another_caller_is_refused_with_a_typed_reason() {
        use bulkhead_wire::SetupReason;
        let e = free_for(Holder::Uid(1001), 200_007, 1000, "/r/200007").unwrap_err();
        assert_eq!(e.step, SetupStep::Spec);
        assert_eq!(
            e.reason,
            SetupReason::ForeignHostId {
                id: 200_007,
                owner: 1001
            }
        );
        // The text for humans is unchanged.
        assert!(e.detail.contains(FOREIGN_ID), "{e}");
        assert!(e.detail.contains("uid 1001"), "{e}");
        // The caller's own id, a free one and a torn record are no refusal.
        assert_eq!(free_for(Holder::Uid(1000), 7, 1000, "/r/7").unwrap(), None);
        assert_eq!(
            free_for(Holder::Nobody, 7, 1000, "/r/7").unwrap(),
            Some(false)
        );
        assert_eq!(free_for(Holder::Torn, 7, 1000, "/r/7").unwrap(), Some(true));
    }
}
