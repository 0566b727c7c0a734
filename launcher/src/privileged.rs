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
use bulkhead_shared::{LaunchSpec, SetupError, SetupStep};

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

/// Records in `registry` that `caller` holds host id `id`, or refuses when another caller
/// does. One file per id, created exclusively, holding the caller's uid; a claim is never
/// released (ids are plenty). The directory and every one above it must be root's.
pub fn claim_host_id(registry: &str, id: u32, caller: u32) -> Result<(), SetupError> {
    let name = id.to_string();
    let path = format!("{registry}/{name}");
    root_owned_dirs(&path, SetupStep::Spec)?;
    let dir = sys::open_dir_nofollow(registry)
        .map_err(|e| err(SetupStep::Spec, &e, registry, "open the id registry"))?;
    let result = (|| {
        match sys::openat_file(
            dir,
            &name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        ) {
            Ok(fd) => {
                let w = sys::write_all(fd, format!("{caller}\n").as_bytes());
                sys::close(fd);
                return w.map_err(|e| err(SetupStep::Spec, &e, &path, "record the host id"));
            }
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            Err(e) => return Err(err(SetupStep::Spec, &e, &path, "claim the host id")),
        }
        // Held already: by this caller? (A claim being written right now reads empty for a
        // moment.)
        for _ in 0..50 {
            let fd = sys::openat_file(
                dir,
                &name,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0,
            )
            .map_err(|e| err(SetupStep::Spec, &e, &path, "read the host id's holder"))?;
            let mut buf = [0u8; 16];
            let n = sys::read(fd, &mut buf);
            sys::close(fd);
            let n = n.map_err(|e| err(SetupStep::Spec, &e, &path, "read the host id's holder"))?;
            let text = std::str::from_utf8(&buf[..n]).unwrap_or("");
            if let Some(owner) = text.strip_suffix('\n').and_then(|t| t.parse::<u32>().ok()) {
                return if owner == caller {
                    Ok(())
                } else {
                    Err(plain(
                        SetupStep::Spec,
                        &path,
                        format!("host id {id} {FOREIGN_ID} of this launcher (uid {owner}): pick another id of the range"),
                    ))
                };
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(plain(
            SetupStep::Spec,
            &path,
            "the host id's record is unreadable; an operator should look at it",
        ))
    })();
    sys::close(dir);
    result
}

/// Whether the caller may use the launcher at all, and from where.
pub fn authorize(rules: &LaunchConfig, uid: u32, gid: u32) -> Result<(), SetupError> {
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
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|x| err(SetupStep::Spec, &x, "/proc/self/cgroup", "read"))?;
        for line in own.lines() {
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
        sys::exit_now(bulkhead_shared::exit::LAUNCH_WORKER_ERROR);
    }
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
    let pid = match sys::clone_fork(libc::CLONE_NEWUSER) {
        Ok(0) => {
            sys::close(wr);
            let mut b = [0u8; 1];
            let _ = sys::read(rd, &mut b);
            sys::exit_now(0);
        }
        Ok(pid) => pid,
        Err(e) => {
            sys::close(rd);
            sys::close(wr);
            return Err(e);
        }
    };
    sys::close(rd);
    let r = (|| {
        std::fs::write(
            format!("/proc/{pid}/uid_map"),
            format!("{} {} 1\n", from.0, to.0),
        )?;
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
        std::fs::write(
            format!("/proc/{pid}/gid_map"),
            format!("{} {} 1\n", from.1, to.1),
        )?;
        sys::open_rdonly(&format!("/proc/{pid}/ns/user"))
    })();
    sys::close(wr);
    let _ = sys::waitpid(pid, false);
    r
}

/// The workspace and the extra binds as detached, id-mapped mounts, ready for the child to
/// attach. Called after [`bulkhead_policy::validate_spec`].
pub fn sources(
    spec: &LaunchSpec,
    rules: &LaunchConfig,
    caller: (u32, u32),
    host: (u32, u32),
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
