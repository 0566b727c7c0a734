//! Disk and inode limits of a workspace: its `files/` is an ext4 filesystem of its own, in a
//! preallocated image file beside it (`workspaces/<id>/disk.img`), loop-mounted on `files/`.
//!
//! Why an image and not a btrfs qgroup (both are enforced by the kernel):
//! - `df /workspace` in the sandbox shows the workspace's own size and use. A btrfs qgroup
//!   limit is enforced (EDQUOT) but `statfs` keeps reporting the whole filesystem (checked on
//!   6.18), so a tenant sees the host's disk and cannot plan.
//! - The inode limit is real: ext4's inode count is fixed by `mkfs -N`. btrfs has no inode
//!   quota at all.
//! - It works on any state filesystem that can reserve space (`fallocate`): ext4, XFS,
//!   btrfs (the image is made `nodatacow`, so rewrites need no new space), tmpfs. Quotas
//!   need btrfs, or `CONFIG_QUOTA`/`CONFIG_XFS_QUOTA` kernels.
//! - The space is reserved when the limit is set: a tenant's writes never fail because a
//!   neighbour filled the state filesystem, and the state filesystem loses at most the
//!   limit to a tenant however it writes.
//!
//! What it costs: mounting needs CAP_SYS_ADMIN (the controller must run as root; `--disk`
//! is refused otherwise, with the reason), the mount lives in the controller's mount
//! namespace (re-made on the next start after a reboot), and a changed limit is a copy into
//! a new image (both exist while it runs).
//!
//! The image is written by the kernel only (the sandbox sees the filesystem, never the
//! file), so the ext4 code never parses bytes a tenant chose.

use std::fs;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// The image file, in the workspace directory (never visible in the sandbox).
pub const IMAGE_NAME: &str = "disk.img";
/// `statfs` type of ext4.
pub const EXT4_SUPER_MAGIC: u64 = 0xef53;
/// Where the tools are looked for (not `$PATH`: bulkhead runs them as root).
const TOOL_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
/// Where the docs explain how to put the state directory on a filesystem that works.
pub const DOC_HINT: &str = "see docs/disk-limits.md";

fn tool(name: &str) -> Option<PathBuf> {
    TOOL_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Name of the filesystem `path` is on, for messages (`ext4`, `btrfs`, `tmpfs`, ...).
pub fn fs_name(path: &Path) -> String {
    match nix::sys::statfs::statfs(path) {
        Ok(s) => fs_type_name(s.filesystem_type().0 as u64),
        Err(_) => "an unknown filesystem".into(),
    }
}

/// Name of a `statfs` `f_type`.
pub fn fs_type_name(t: u64) -> String {
    match t {
        0xef53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x8584_58f6 => "ramfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x6969 => "nfs".into(),
        0x6573_5546 => "fuse".into(),
        0x0102_1997 => "9p".into(),
        other => format!("a filesystem of type {other:#x}"),
    }
}

fn is_btrfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 as u64 == 0x9123_683e)
}

/// Why workspaces under `state_root` cannot have a disk limit here, with what to do; `None`
/// when they can. Checks privilege, loop devices, ext4, the tools, and that the state
/// filesystem can reserve space (a real `fallocate` of a probe file).
pub fn unsupported(state_root: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some(
            "disk limits need bulkhead to run as root: each workspace with --disk gets a \
             loop-mounted filesystem of its own, and mounting needs CAP_SYS_ADMIN (run the \
             controller as root, e.g. the packaged service, or leave --disk unset)"
                .into(),
        );
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some(
            "this host has no loop devices (/dev/loop-control is missing): load the loop \
             module (modprobe loop), or leave --disk unset"
                .into(),
        );
    }
    let ext4 = fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("ext4"))
    });
    if !ext4 {
        return Some(
            "this kernel has no ext4 (not in /proc/filesystems): load the ext4 module (modprobe \
             ext4), or leave --disk unset"
                .into(),
        );
    }
    for t in ["mkfs.ext4", "mount", "cp"] {
        if tool(t).is_none() {
            return Some(format!(
                "{t} is not installed (looked in {}): install e2fsprogs and util-linux",
                TOOL_DIRS.join(", ")
            ));
        }
    }
    // The space of a limit is reserved up front; a filesystem that cannot reserve would
    // let a neighbour's growth turn this workspace's writes into I/O errors.
    let probe = state_root.join(format!(".disk-probe-{}", std::process::id()));
    let r = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&probe)
        .and_then(|f| {
            nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, 4096)
                .map_err(std::io::Error::from)
        });
    let _ = fs::remove_file(&probe);
    match r {
        Ok(()) => None,
        Err(e) => Some(format!(
            "the state directory {} is on {}, which cannot reserve space for a workspace's \
             filesystem (fallocate: {e}): put the state directory on ext4, XFS or btrfs \
             ({DOC_HINT}), or leave --disk unset",
            state_root.display(),
            fs_name(state_root)
        )),
    }
}

/// Refuses `--disk` where it cannot be enforced (exit 2, the reason and the fix).
pub fn check_supported(state_root: &Path) -> Result<()> {
    match unsupported(state_root) {
        None => Ok(()),
        Some(why) => Err(Error::Invalid(format!("cannot set a disk limit: {why}"))),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| Error::Invalid(format!("{what}: cannot run it: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    msg.truncate(1000);
    Err(Error::Invalid(format!(
        "{what} failed ({}): {msg}",
        out.status
    )))
}

fn tool_cmd(name: &str) -> Result<Command> {
    tool(name).map(Command::new).ok_or_else(|| {
        Error::Invalid(format!(
            "{name} is not installed: install e2fsprogs and util-linux"
        ))
    })
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The source device of the topmost mount on `mount_point` in `mountinfo`, if any.
pub fn mount_source(mountinfo: &str, mount_point: &Path) -> Option<String> {
    let want = mount_point.to_string_lossy();
    mountinfo.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let point = unescape_mountinfo(f.nth(4)?);
        let (_, after) = l.split_once(" - ")?;
        let source = after.split(' ').nth(1)?;
        (point == want).then(|| unescape_mountinfo(source))
    })
}

/// The per-mount options (`ro,nosuid,...`) of the topmost mount on `mount_point`.
fn mount_options(mountinfo: &str, mount_point: &Path) -> Option<String> {
    let want = mount_point.to_string_lossy();
    mountinfo.lines().rev().find_map(|l| {
        let mut f = l.split(' ');
        let point = unescape_mountinfo(f.nth(4)?);
        let opts = f.next()?;
        (point == want).then(|| opts.to_string())
    })
}

/// The backing file of loop device `/dev/loopN`, from sysfs.
fn loop_backing_file(dev: &str) -> Option<String> {
    let name = dev.strip_prefix("/dev/")?;
    if !name.starts_with("loop") || name.contains('/') {
        return None;
    }
    let s = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")).ok()?;
    Some(s.trim_end_matches('\n').to_string())
}

/// Whether `image` is mounted on `files` in this mount namespace.
pub fn mounted_here(files: &Path, image: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_source(&info, files)
        .and_then(|dev| loop_backing_file(&dev))
        .is_some_and(|b| Path::new(&b) == image)
}

/// Loop devices whose backing file is `image`.
fn attached(image: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir("/sys/block") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dev = format!("/dev/{name}");
            (loop_backing_file(&dev)? == image.to_string_lossy()).then_some(dev)
        })
        .collect()
}

fn mount_image(image: &Path, on: &Path) -> Result<()> {
    run(
        tool_cmd("mount")?
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noatime"])
            .arg(image)
            .arg(on),
        &format!("mounting {} on {}", image.display(), on.display()),
    )
}

fn unmount(on: &Path) -> Result<()> {
    use nix::mount::{umount2, MntFlags};
    match umount2(on, MntFlags::empty()) {
        Ok(()) => Ok(()),
        // Busy (a sandbox started before still has it): detach it here; the filesystem
        // lives on until that sandbox ends, then the loop device clears itself.
        Err(nix::errno::Errno::EBUSY) => {
            umount2(on, MntFlags::MNT_DETACH).map_err(|e| Error::io(on, std::io::Error::from(e)))
        }
        Err(e) => Err(Error::io(on, std::io::Error::from(e))),
    }
}

fn is_empty_dir(p: &Path) -> Result<bool> {
    Ok(fs::read_dir(p)
        .map_err(|e| Error::io(p, e))?
        .next()
        .is_none())
}

fn sync_dir(p: &Path) {
    if let Ok(d) = fs::File::open(p) {
        let _ = d.sync_all();
    }
}

/// The workspace filesystem's size as `df` shows it and its use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Size (`f_blocks * f_frsize`), bytes.
    pub size_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// Inodes.
    pub inodes: u64,
    /// Inodes in use.
    pub inodes_used: u64,
}

/// `statvfs` of `files/`.
pub fn usage(files: &Path) -> Option<Usage> {
    let s = nix::sys::statvfs::statvfs(files).ok()?;
    let frsize = s.fragment_size();
    let blocks = s.blocks();
    let free = s.blocks_free();
    Some(Usage {
        size_bytes: blocks.saturating_mul(frsize),
        used_bytes: blocks.saturating_sub(free).saturating_mul(frsize),
        inodes: s.files(),
        inodes_used: s.files().saturating_sub(s.files_free()),
    })
}

/// Where an interrupted [`provision`] left the plain `files/` it moved aside.
const OLD_DIR: &str = ".files-old";
/// Where [`provision`] binds `files/` read-only and `nosymfollow` to copy from it.
const SOURCE_DIR: &str = ".files-src";
/// `MS_NOSYMFOLLOW` (Linux 5.10; not in nix 0.30).
const MS_NOSYMFOLLOW: std::ffi::c_ulong = 256;

/// Finishes or undoes what an interrupted [`provision`] left in `ws_dir` (it never deletes
/// files that exist nowhere else). `.files-old` exists only after the plain `files/` was
/// copied into a new image and moved aside for the swap, so:
/// - no `disk.img`: the image never replaced anything; `.files-old` goes back to `files/`
///   (which must be missing or an empty directory, else this refuses with what to do);
/// - `disk.img` exists, not mounted: it is the new image holding the copy (renamed into
///   place only after it); it is mounted on the empty `files/`, then `.files-old` removed;
/// - `files/` not empty, or already mounted: refused, both kept, the error says what to do.
pub fn recover_interrupted(ws_dir: &Path) -> Result<()> {
    let files = ws_dir.join("files");
    let image = ws_dir.join(IMAGE_NAME);
    let old_dir = ws_dir.join(OLD_DIR);
    if fs::symlink_metadata(&old_dir).is_err() {
        return Ok(());
    }
    let refuse = || {
        Error::Invalid(format!(
            "{} holds the files of an interrupted `bulkhead workspace set --disk` and {} is not \
             empty: compare the two, keep what you need in files/, remove .files-old, then try again",
            old_dir.display(),
            files.display()
        ))
    };
    // Mounted already: the run got past its mount, but which of the two holds what cannot
    // be told from here; keep both.
    if mounted_here(&files, &image) {
        return Err(refuse());
    }
    match fs::symlink_metadata(&files) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Ok(m) if m.is_dir() && is_empty_dir(&files)? => {}
        _ => return Err(refuse()),
    }
    if image.is_file() {
        if fs::symlink_metadata(&files).is_err() {
            fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
        }
        mount_image(&image, &files)?;
        log::info!(target: "workspace", dir = ws_dir.to_string_lossy().as_ref(); "an interrupted disk change is finished: the new filesystem holds the files");
        return fs::remove_dir_all(&old_dir).map_err(|e| Error::io(&old_dir, e));
    }
    if fs::symlink_metadata(&files).is_ok() {
        fs::remove_dir(&files).map_err(|e| Error::io(&files, e))?;
    }
    fs::rename(&old_dir, &files).map_err(|e| Error::io(&old_dir, e))?;
    sync_dir(ws_dir);
    log::info!(target: "workspace", dir = ws_dir.to_string_lossy().as_ref(); "an interrupted disk change is undone: files/ is back");
    Ok(())
}

/// Binds `files` read-only, `nosymfollow`, `nosuid`, `nodev` on `at` (an empty directory
/// only root reaches): a tenant who swaps a directory for a symlink while it is copied
/// makes the copy fail (ELOOP), never makes root read through the link. Refused on a
/// kernel that does not honour `nosymfollow` (before 5.10).
fn bind_nosymfollow(files: &Path, at: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        Some(files),
        at,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::io(at, std::io::Error::from(e)))?;
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::from_bits_retain(MS_NOSYMFOLLOW);
    let checked = mount(None::<&str>, at, None::<&str>, flags, None::<&str>)
        .map_err(|e| Error::io(at, std::io::Error::from(e)))
        .and_then(|()| {
            // The kernel lists the options it applied (one before 5.10 ignores the flag).
            let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let opts = mount_options(&info, at).unwrap_or_default();
            let has = |o: &str| opts.split(',').any(|x| x == o);
            if !has("nosymfollow") || !has("ro") {
                return Err(Error::Invalid(
                    "this kernel does not support read-only nosymfollow mounts (Linux 5.10 or \
                     later is needed to copy a workspace's files safely): upgrade the kernel, or \
                     leave --disk unset"
                        .into(),
                ));
            }
            Ok(())
        });
    if let Err(e) = checked {
        let _ = nix::mount::umount2(at, nix::mount::MntFlags::MNT_DETACH);
        return Err(e);
    }
    Ok(())
}

/// Whether something is mounted on `p` in this mount namespace.
fn is_mount_point(p: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_source(&info, p).is_some()
}

/// Makes `ws_dir/files` an ext4 filesystem of `bytes` (with `inodes` inodes, 0 = ext4's
/// default for the size) in `ws_dir/disk.img`, keeping what `files/` holds: a new image is
/// made beside the old, `files/` is copied into it (refused when it does not fit), then it
/// replaces the old one. The caller holds the platform lock and the workspace's
/// `skill-freeze.lock` exclusively (no sandbox of it starts), and no sandbox of it runs. A
/// crash leaves either the old state or the new one, never a lost `files/`: the old
/// directory is removed only once the new image holding its copy is mounted, and what an
/// interrupted run left is finished or undone first ([`recover_interrupted`]).
///
/// The copy reads `files/` through a read-only `nosymfollow` bind: it never follows a
/// symlink, whatever the tenant does to its tree meanwhile.
///
/// `before_swap` runs once the copy is complete, just before the swap: the caller checks
/// again that no sandbox runs and records the new limit (so a sandbox started in any later
/// window is attested against it). An error there drops the new image and changes nothing.
pub fn provision(
    state_root: &Path,
    ws_dir: &Path,
    bytes: u64,
    inodes: u64,
    before_swap: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    check_supported(state_root)?;
    let files = ws_dir.join("files");
    let image = ws_dir.join(IMAGE_NAME);
    let new_image = ws_dir.join(format!("{IMAGE_NAME}.new"));
    let staging = ws_dir.join(".files-new");
    let source = ws_dir.join(SOURCE_DIR);
    let old_dir = ws_dir.join(OLD_DIR);
    recover_interrupted(ws_dir)?;
    // An image not mounted here (after a reboot) holds the files: mount it first, so they
    // are what is copied (never the empty mount point).
    if image.is_file() && !mounted_here(&files, &image) {
        ensure_mounted(ws_dir)?;
    }
    // Leftovers of an interrupted run: never mounted (that is checked), so just files.
    if mounted_here(&staging, &new_image) {
        unmount(&staging)?;
    }
    while is_mount_point(&source) {
        nix::mount::umount2(&source, nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| Error::io(&source, std::io::Error::from(e)))?;
    }
    let _ = fs::remove_dir(&source);
    let _ = fs::remove_file(&new_image);
    let _ = fs::remove_dir(&staging);
    let cleanup = |mounted: bool| {
        if mounted {
            let _ = unmount(&staging);
        }
        let _ = fs::remove_dir(&staging);
        let _ = fs::remove_file(&new_image);
    };
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&new_image)
        .map_err(|e| Error::io(&new_image, e))?;
    if is_btrfs(ws_dir) {
        // No copy-on-write for the image: rewriting a reserved block then needs no new
        // space, so the reservation holds. Only an empty file takes the flag.
        if let Err(e) = run(tool_cmd("chattr")?.arg("+C").arg(&new_image), "chattr +C") {
            drop(f);
            cleanup(false);
            return Err(e);
        }
    }
    let len = i64::try_from(bytes)
        .map_err(|_| Error::Invalid(format!("disk limit {bytes} is too large")))?;
    if let Err(e) = nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, len) {
        drop(f);
        cleanup(false);
        let free = nix::sys::statvfs::statvfs(ws_dir)
            .map(|s| s.blocks_available().saturating_mul(s.fragment_size()))
            .unwrap_or(0);
        return Err(Error::Invalid(format!(
            "cannot reserve {} MiB for the workspace's filesystem on {} ({e}; {} MiB free): \
             free space there or choose a smaller --disk",
            bytes >> 20,
            ws_dir.display(),
            free >> 20
        )));
    }
    drop(f);
    let (uid, gid) = match fs::metadata(&files) {
        Ok(m) => (m.uid(), m.gid()),
        Err(_) => (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        ),
    };
    let mut mkfs = tool_cmd("mkfs.ext4")?;
    mkfs.args(["-q", "-F", "-b", "4096", "-m", "0", "-L", "bulkhead"])
        .arg("-E")
        .arg(format!("nodiscard,root_owner={uid}:{gid}"));
    if inodes != 0 {
        mkfs.arg("-N").arg(inodes.to_string());
    }
    mkfs.arg(&new_image);
    if let Err(e) = run(&mut mkfs, "mkfs.ext4") {
        cleanup(false);
        return Err(e);
    }
    if let Err(e) = fs::create_dir(&staging) {
        cleanup(false);
        return Err(Error::io(&staging, e));
    }
    if let Err(e) = mount_image(&new_image, &staging) {
        cleanup(false);
        return Err(e);
    }
    let _ = fs::remove_dir(staging.join("lost+found"));
    // Copy what the workspace holds now (its old image, or the plain directory). `cp -a`
    // keeps owners, modes, times and links and never follows a symlink it copies; it reads
    // through a read-only nosymfollow bind, so no path it opens follows one either.
    if files.exists() {
        let copy = fs::create_dir(&source)
            .map_err(|e| Error::io(&source, e))
            .and_then(|()| bind_nosymfollow(&files, &source))
            .and_then(|()| {
                let mut src = source.clone().into_os_string();
                src.push("/.");
                let r = tool_cmd("cp").and_then(|mut c| {
                    run(
                        c.args(["-a", "--reflink=never", "--"])
                            .arg(&src)
                            .arg(&staging),
                        "copying files/ into the new filesystem",
                    )
                });
                let _ = nix::mount::umount2(&source, nix::mount::MntFlags::MNT_DETACH);
                r
            });
        let _ = fs::remove_dir(&source);
        if let Err(e) = copy {
            cleanup(true);
            return Err(Error::Invalid(format!(
                "files/ does not fit in {} MiB (or could not be copied): {e}; choose a larger --disk or remove files first",
                bytes >> 20
            )));
        }
    }
    if let Err(e) = unmount(&staging) {
        cleanup(false);
        return Err(e);
    }
    let _ = fs::remove_dir(&staging);
    if let Err(e) = before_swap() {
        cleanup(false);
        return Err(e);
    }
    // Swap: the old image comes off files/ (never lazily: busy means in use), or the plain
    // directory moves aside.
    let plain_old = if mounted_here(&files, &image) {
        if let Err(e) = nix::mount::umount2(&files, nix::mount::MntFlags::empty()) {
            cleanup(false);
            return Err(Error::Invalid(format!(
                "the workspace's filesystem is in use ({e}): nothing changed; stop its sandboxes and try again"
            )));
        }
        false
    } else if files.exists() {
        // Never a leftover here: recover_interrupted took care of it above.
        fs::rename(&files, &old_dir).map_err(|e| Error::io(&files, e))?;
        fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
        true
    } else {
        fs::create_dir(&files).map_err(|e| Error::io(&files, e))?;
        false
    };
    fs::rename(&new_image, &image).map_err(|e| Error::io(&image, e))?;
    sync_dir(ws_dir);
    mount_image(&image, &files)?;
    if plain_old {
        fs::remove_dir_all(&old_dir).map_err(|e| Error::io(&old_dir, e))?;
    }
    Ok(())
}

/// Before a sandbox starts: the workspace's image is mounted on `files/` (mounts it after
/// a reboot). Refuses, with what to do, when the image is missing, attached elsewhere (a
/// mount in another mount namespace: two mounts of one ext4 would corrupt it), or `files/`
/// holds files of its own.
pub fn ensure_mounted(ws_dir: &Path) -> Result<()> {
    let files = ws_dir.join("files");
    let image = ws_dir.join(IMAGE_NAME);
    if mounted_here(&files, &image) {
        return Ok(());
    }
    recover_interrupted(ws_dir)?;
    if mounted_here(&files, &image) {
        return Ok(());
    }
    if !image.is_file() {
        return Err(Error::Invalid(format!(
            "the workspace has a disk limit but no filesystem of its own ({} is missing): \
             set the limit with `bulkhead workspace set ID --disk SIZE`, which makes it and \
             copies files/ into it",
            image.display()
        )));
    }
    let devs = attached(&image);
    if !devs.is_empty() {
        return Err(Error::Invalid(format!(
            "{} is attached to {} but not mounted on files/ in this mount namespace: another \
             mount namespace (a service with PrivateMounts=, a container) has it mounted; run \
             bulkhead in the host's mount namespace or unmount it there",
            image.display(),
            devs.join(", ")
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Invalid(format!(
            "the workspace's filesystem {} is not mounted and mounting needs root: run bulkhead as root",
            image.display()
        )));
    }
    if !is_empty_dir(&files)? {
        return Err(Error::Invalid(format!(
            "{} holds files but is not the workspace's filesystem {}: move them into it by \
             hand (mount the image, copy, unmount) or remove them",
            files.display(),
            image.display()
        )));
    }
    mount_image(&image, &files)
}

/// Unmounts the workspace's filesystem from `files/` if it is mounted there (before the
/// workspace is deleted).
pub fn release(ws_dir: &Path) -> Result<()> {
    let files = ws_dir.join("files");
    if mounted_here(&files, &ws_dir.join(IMAGE_NAME)) {
        unmount(&files)?;
    }
    Ok(())
}

/// Checks `statfs("/workspace")` from inside against the disk limit: an ext4 no larger
/// than the limit and not much smaller (journal and inode tables take their share), with
/// about the inodes asked for (mkfs rounds them per block group). A workspace without a limit is not checked.
pub fn verify(
    fs: &bulkhead_shared::WorkspaceFs,
    disk_bytes: u64,
    inodes: u64,
) -> std::result::Result<(), String> {
    if disk_bytes == 0 {
        return Ok(());
    }
    if fs.fs_type != EXT4_SUPER_MAGIC {
        return Err(format!(
            "/workspace is on {}, not the workspace's own ext4 filesystem",
            fs_type_name(fs.fs_type)
        ));
    }
    if fs.size_bytes > disk_bytes || fs.size_bytes < disk_bytes / 2 {
        return Err(format!(
            "/workspace is {} bytes, not the workspace's disk limit of {disk_bytes}: set the limit again (bulkhead workspace set ID --disk SIZE)",
            fs.size_bytes
        ));
    }
    // mkfs.ext4 rounds `-N` to whole inode tables per block group, down as well as up
    // (10000 asked gives 9984 on 64M): a few fewer harms only the tenant, far more would be
    // a limit that does not hold.
    if inodes != 0
        && (fs.inodes < inodes.saturating_sub(inodes / 16 + 256)
            || fs.inodes > inodes.saturating_mul(2).max(inodes + 4096))
    {
        return Err(format!(
            "/workspace has {} inodes, not the workspace's limit of {inodes}",
            fs.inodes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {

    #[test]
    fn inodes_rounded_down_by_mkfs_still_attest() {
        let fs = bulkhead_shared::WorkspaceFs {
            fs_type: super::EXT4_SUPER_MAGIC,
            size_bytes: 60 << 20,
            inodes: 9984,
        };
        assert_eq!(super::verify(&fs, 64 << 20, 10_000), Ok(()));
        let few = bulkhead_shared::WorkspaceFs { inodes: 4096, ..fs };
        assert!(super::verify(&few, 64 << 20, 10_000).is_err());
        let many = bulkhead_shared::WorkspaceFs {
            inodes: 30_000,
            ..fs
        };
        assert!(super::verify(&many, 64 << 20, 10_000).is_err());
    }
    use super::*;
    use bulkhead_shared::WorkspaceFs;

    #[test]
    fn finds_the_topmost_mount_on_a_path() {
        let info = "22 1 8:1 / / rw - ext4 /dev/vda rw\n\
                    40 22 7:3 / /s/w/a\\040b/files rw,nosuid - ext4 /dev/loop3 rw\n\
                    41 22 7:4 / /s/w/c/files rw - ext4 /dev/loop4 rw\n\
                    42 41 7:5 / /s/w/c/files rw - ext4 /dev/loop5 rw\n";
        assert_eq!(
            mount_source(info, Path::new("/s/w/a b/files")).as_deref(),
            Some("/dev/loop3")
        );
        assert_eq!(
            mount_source(info, Path::new("/s/w/c/files")).as_deref(),
            Some("/dev/loop5")
        );
        assert_eq!(mount_source(info, Path::new("/s/w/x/files")), None);
        assert_eq!(
            mount_options(info, Path::new("/s/w/a b/files")).as_deref(),
            Some("rw,nosuid")
        );
        assert_eq!(loop_backing_file("/dev/../etc"), None);
        assert_eq!(loop_backing_file("/dev/sda"), None);
    }

    #[test]
    fn the_attested_workspace_filesystem_must_be_the_limited_one() {
        let fs = |t, size, inodes| WorkspaceFs {
            fs_type: t,
            size_bytes: size,
            inodes,
        };
        let m = 1u64 << 20;
        // No limit: anything goes.
        assert!(verify(&fs(0x9123_683e, 1 << 40, 0), 0, 0).is_ok());
        // The limited one: ext4, a little smaller than the limit.
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 58 * m, 16384), 64 * m, 0).is_ok());
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 58 * m, 16384), 64 * m, 16000).is_ok());
        // The state filesystem itself, a larger or far smaller ext4, too few inodes.
        let e = verify(&fs(0x9123_683e, 58 * m, 0), 64 * m, 0).unwrap_err();
        assert!(e.contains("btrfs"), "{e}");
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 1 << 40, 1 << 20), 64 * m, 0).is_err());
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 8 * m, 1024), 64 * m, 0).is_err());
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 58 * m, 1000), 64 * m, 16000).is_err());
        assert!(verify(&fs(EXT4_SUPER_MAGIC, 58 * m, 1 << 30), 64 * m, 16000).is_err());
        // Unreadable (zeros) never matches a limit.
        assert!(verify(&WorkspaceFs::default(), 64 * m, 0).is_err());
    }

    /// What an interrupted first `--disk` left (no image yet): `.files-old` holds the only
    /// copy of the tenant's files; it goes back to `files/`, never away.
    #[test]
    fn an_interrupted_change_gives_the_moved_files_back() {
        for files_state in ["missing", "empty"] {
            let d = tempfile::tempdir().unwrap();
            let ws = d.path();
            fs::create_dir_all(ws.join(".files-old/sub")).unwrap();
            fs::write(ws.join(".files-old/sub/f"), "kept").unwrap();
            if files_state == "empty" {
                fs::create_dir(ws.join("files")).unwrap();
            }
            recover_interrupted(ws).unwrap();
            assert_eq!(
                fs::read_to_string(ws.join("files/sub/f")).unwrap(),
                "kept",
                "files/ {files_state}"
            );
            assert!(!ws.join(OLD_DIR).exists());
            // Nothing left to do: a second call changes nothing.
            recover_interrupted(ws).unwrap();
            assert_eq!(fs::read_to_string(ws.join("files/sub/f")).unwrap(), "kept");
        }
    }

    /// Both `files/` and `.files-old` hold files: neither is touched, and the error says
    /// what to do.
    #[test]
    fn an_interrupted_change_with_two_copies_is_refused_and_both_kept() {
        let d = tempfile::tempdir().unwrap();
        let ws = d.path();
        fs::create_dir_all(ws.join(".files-old")).unwrap();
        fs::write(ws.join(".files-old/a"), "old").unwrap();
        fs::create_dir_all(ws.join("files")).unwrap();
        fs::write(ws.join("files/b"), "new").unwrap();
        let e = recover_interrupted(ws).unwrap_err().to_string();
        assert!(
            e.contains("interrupted") && e.contains("remove .files-old"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(ws.join(".files-old/a")).unwrap(), "old");
        assert_eq!(fs::read_to_string(ws.join("files/b")).unwrap(), "new");
        // ensure_mounted (every sandbox start of a limited workspace) refuses the same way.
        let e = ensure_mounted(ws).unwrap_err().to_string();
        assert!(e.contains("interrupted"), "{e}");
        assert!(ws.join(".files-old/a").exists());
    }

    /// The source the copy reads: a symlink in it is read as a link, never followed (a
    /// directory swapped for a link to another tenant's files mid-copy gives ELOOP), and
    /// nothing can be written through it. Root only (a bind mount).
    #[test]
    fn the_copy_source_follows_no_symlink() {
        if !nix::unistd::geteuid().is_root() {
            return bulkhead_testkit::skip("needs root (a bind mount)");
        }
        let d = tempfile::tempdir().unwrap();
        let files = d.path().join("files");
        let outside = d.path().join("outside");
        fs::create_dir_all(files.join("real")).unwrap();
        fs::write(files.join("real/x"), "mine").unwrap();
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), "neighbour's").unwrap();
        std::os::unix::fs::symlink(&outside, files.join("a")).unwrap();
        let at = d.path().join(SOURCE_DIR);
        fs::create_dir(&at).unwrap();
        bind_nosymfollow(&files, &at).unwrap();
        let through = fs::read_to_string(at.join("a/secret"));
        let link = fs::read_link(at.join("a"));
        let mine = fs::read_to_string(at.join("real/x"));
        let write = fs::write(at.join("new"), "x");
        let dest = d.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let mut src = at.clone().into_os_string();
        src.push("/.");
        let cp = run(
            tool_cmd("cp")
                .unwrap()
                .args(["-a", "--reflink=never", "--"])
                .arg(&src)
                .arg(&dest),
            "cp",
        );
        nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert_eq!(
            through.unwrap_err().raw_os_error(),
            Some(nix::errno::Errno::ELOOP as i32)
        );
        assert_eq!(link.unwrap(), outside);
        assert_eq!(mine.unwrap(), "mine");
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(nix::errno::Errno::EROFS as i32)
        );
        cp.unwrap();
        assert_eq!(fs::read_link(dest.join("a")).unwrap(), outside);
        assert_eq!(fs::read_to_string(dest.join("real/x")).unwrap(), "mine");
    }

    #[test]
    fn filesystem_names_for_messages() {
        assert_eq!(fs_type_name(0xef53), "ext4");
        assert_eq!(fs_type_name(0x0102_1994), "tmpfs");
        assert_eq!(fs_type_name(0x1234), "a filesystem of type 0x1234");
        assert_eq!(
            fs_name(Path::new("/nonexistent-bulkhead")),
            "an unknown filesystem"
        );
    }
}
