//! Step 6: the sandbox's root filesystem, built from `bulkhead_policy::mounts::plan`.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;

use bulkhead_policy::mounts::{MountOp, Planned, ROOT_TMPFS_BYTES};
use bulkhead_wire::{SetupError, SetupStep};

use crate::sys;

/// A host directory to mount in the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A directory opened (`O_PATH`) in this mount namespace, checked by the child; bound
    /// through its /proc magic link (rootless).
    Dir(RawFd),
    /// A detached mount (open_tree), its attributes and id-mapping set already by the
    /// privileged parent; attached with move_mount.
    Tree(RawFd),
}

impl Source {
    /// The descriptor.
    pub fn fd(self) -> RawFd {
        match self {
            Source::Dir(fd) | Source::Tree(fd) => fd,
        }
    }
}

/// Mounts `src` on `r` (relative to the new root), with `set` attributes for a plain bind.
fn attach(src: Source, r: &str, path: &str, set: u64) -> Result<(), SetupError> {
    match src {
        Source::Tree(fd) => {
            sys::move_mount_to(fd, r).map_err(|e| fail(path, "attach the prepared mount", e))
        }
        Source::Dir(fd) => {
            // `fd` was opened in this mount namespace with RESOLVE_NO_SYMLINKS: binding it
            // through its /proc magic link mounts exactly that directory, whatever its path
            // points to now.
            let src = format!("/proc/self/fd/{fd}");
            sys::mount(Some(&src), r, None, libc::MS_BIND, None)
                .map_err(|e| fail(path, "bind", e))?;
            sys::mount_setattr(r, set, false).map_err(|e| fail(path, "restrict the bind", e))
        }
    }
}

/// Host directory the new root's tmpfs is mounted on (in our private mount namespace; the
/// host never sees it).
pub const STAGING: &str = "/tmp";

fn fail(path: &str, what: &str, e: io::Error) -> SetupError {
    crate::err(SetupStep::Mounts, &e, path, what)
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn mkdir(rel: &str) -> io::Result<()> {
    match std::fs::create_dir(rel) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

fn touch(rel: &str) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(rel)
        .map(drop)
}

fn exists(rel: &str) -> bool {
    std::fs::symlink_metadata(rel).is_ok()
}

const NOSUID_NODEV: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

fn apply(op: &MountOp, workspace: Source, binds: &[Source]) -> Result<(), SetupError> {
    use sys::{
        MOUNT_ATTR_NODEV as NODEV, MOUNT_ATTR_NOEXEC as NOEXEC, MOUNT_ATTR_NOSUID as NOSUID,
        MOUNT_ATTR_RDONLY as RDONLY,
    };
    match op {
        MountOp::Dir { path, mode } => {
            let r = rel(path);
            mkdir(r)
                .and_then(|_| std::fs::set_permissions(r, std::fs::Permissions::from_mode(*mode)))
                .map_err(|e| fail(path, "create directory", e))
        }
        MountOp::File {
            path,
            contents,
            mode,
        } => {
            let r = rel(path);
            std::fs::write(r, contents)
                .and_then(|_| std::fs::set_permissions(r, std::fs::Permissions::from_mode(*mode)))
                .map_err(|e| fail(path, "write generated file", e))
        }
        MountOp::Symlink { path, target } => std::os::unix::fs::symlink(target, rel(path))
            .map_err(|e| fail(path, "create symlink", e)),
        MountOp::Tmpfs {
            path,
            size,
            mode,
            noexec,
        } => {
            let r = rel(path);
            mkdir(r).map_err(|e| fail(path, "create mount point", e))?;
            let flags = NOSUID_NODEV | if *noexec { libc::MS_NOEXEC } else { 0 };
            let data = format!("size={size},mode={mode:o}");
            sys::mount(Some("tmpfs"), r, Some("tmpfs"), flags, Some(&data))
                .map_err(|e| fail(path, "mount tmpfs", e))
        }
        MountOp::BindRo { host, path, dir } => {
            let r = rel(path);
            if *dir { mkdir(r) } else { touch(r) }
                .map_err(|e| fail(path, "create mount point", e))?;
            sys::mount(Some(host), r, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| fail(host, "bind host path", e))?;
            sys::mount_setattr(r, RDONLY | NOSUID | NODEV, true)
                .map_err(|e| fail(path, "make bind read-only", e))
        }
        MountOp::BindDev { host, path } => {
            let r = rel(path);
            touch(r).map_err(|e| fail(path, "create device mount point", e))?;
            sys::mount(Some(host), r, None, libc::MS_BIND, None)
                .map_err(|e| fail(host, "bind device", e))?;
            sys::mount_setattr(r, NOSUID | NOEXEC, false)
                .map_err(|e| fail(path, "restrict device", e))
        }
        MountOp::Proc { path } => sys::mount(
            Some("proc"),
            rel(path),
            Some("proc"),
            NOSUID_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(|e| fail(path, "mount procfs", e)),
        MountOp::Devpts { path } => sys::mount(
            Some("devpts"),
            rel(path),
            Some("devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .map_err(|e| fail(path, "mount devpts", e)),
        MountOp::ReadOnly { path } => {
            let r = rel(path);
            if !exists(r) {
                return Ok(());
            }
            sys::mount(Some(r), r, None, libc::MS_BIND | libc::MS_REC, None)
                .and_then(|_| sys::mount_setattr(r, RDONLY | NOSUID | NODEV | NOEXEC, true))
                .map_err(|e| fail(path, "make read-only", e))
        }
        MountOp::Mask { path } => {
            let r = rel(path);
            let Ok(meta) = std::fs::symlink_metadata(r) else {
                return Ok(());
            };
            if meta.is_dir() {
                // An empty, read-only tmpfs over a directory (/proc/acpi, /proc/scsi).
                sys::mount(
                    Some("tmpfs"),
                    r,
                    Some("tmpfs"),
                    libc::MS_RDONLY | NOSUID_NODEV | libc::MS_NOEXEC,
                    Some("size=4k,mode=555"),
                )
                .map_err(|e| fail(path, "mask directory", e))
            } else {
                sys::mount(Some("/dev/null"), r, None, libc::MS_BIND, None)
                    .and_then(|_| sys::mount_setattr(r, RDONLY | NOSUID | NODEV | NOEXEC, false))
                    .map_err(|e| fail(path, "mask", e))
            }
        }
        MountOp::Workspace { path, writable } => {
            let r = rel(path);
            mkdir(r).map_err(|e| fail(path, "create mount point", e))?;
            let ro = if *writable { 0 } else { RDONLY };
            attach(workspace, r, path, ro | NOSUID | NODEV)
        }
        MountOp::Extra { index, path } => {
            let r = rel(path);
            mkdir(r).map_err(|e| fail(path, "create mount point", e))?;
            let src = binds
                .get(*index)
                .copied()
                .ok_or_else(|| fail(path, "bind source", io::ErrorKind::NotFound.into()))?;
            attach(src, r, path, RDONLY | NOSUID | NODEV)
        }
    }
}

/// Builds the new root and pivots into it. Runs in the sandbox's mount namespace.
pub fn build_root(plan: &[Planned], workspace: Source, binds: &[Source]) -> Result<(), SetupError> {
    sys::mount(None, "/", None, libc::MS_REC | libc::MS_PRIVATE, None)
        .map_err(|e| fail("/", "make mounts private", e))?;
    let data = format!("size={ROOT_TMPFS_BYTES},mode=755");
    sys::mount(
        Some("tmpfs"),
        STAGING,
        Some("tmpfs"),
        NOSUID_NODEV,
        Some(&data),
    )
    .map_err(|e| fail(STAGING, "mount root tmpfs", e))?;
    std::env::set_current_dir(STAGING).map_err(|e| fail(STAGING, "enter new root", e))?;
    for p in plan {
        apply(&p.op, workspace, binds)?;
    }
    sys::pivot_root(".", ".").map_err(|e| fail("/", "pivot_root", e))?;
    sys::umount2(".", libc::MNT_DETACH).map_err(|e| fail("/", "detach old root", e))?;
    std::env::set_current_dir("/").map_err(|e| fail("/", "chdir", e))?;
    sys::mount(
        None,
        "/",
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | NOSUID_NODEV,
        None,
    )
    .map_err(|e| fail("/", "remount root read-only", e))
}
