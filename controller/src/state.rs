//! The state directory and its files.
//!
//! ```text
//! $BULKHEAD_STATE_DIR (default /var/lib/bulkhead as root, else $XDG_STATE_HOME/bulkhead)
//!   workspaces/<id>/
//!     workspace.json   configuration (atomic writes)
//!     files/           mounted at /workspace in the sandbox
//!     sessions/        transcripts
//!     run/             one file per running sandbox (launcher pid + start time)
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Resolves the state directory: explicit, `$BULKHEAD_STATE_DIR`, `/var/lib/bulkhead` as
/// root, else `$XDG_STATE_HOME/bulkhead` or `~/.local/state/bulkhead`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BULKHEAD_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/bulkhead");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(x).join("bulkhead");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/state/bulkhead")
}

/// Writes `data` to `path` atomically: temp file in the same directory, fsync, rename,
/// fsync of the directory. A crash leaves the old or the new content, never a mix.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Invalid(format!("{} has no parent", path.display())))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Creates a directory (and parents) with `mode` for the last component.
pub fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|e| Error::io(path, e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| Error::io(path, e))
}

/// Paths of one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Wraps a root path (not created until needed).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir { root: root.into() }
    }

    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `workspaces/`.
    pub fn workspaces(&self) -> PathBuf {
        self.root.join("workspaces")
    }

    /// `workspaces/<id>/`.
    pub fn workspace(&self, id: &str) -> PathBuf {
        self.workspaces().join(id)
    }

    /// The platform-wide lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(".lock")
    }

    /// Creates the root and `workspaces/` (0700/0711: the sandbox user of a privileged
    /// workspace must be able to traverse to nothing but is never given a path here).
    pub fn ensure(&self) -> Result<()> {
        if !self.root.exists() {
            mkdir(&self.root, 0o700)?;
        }
        let ws = self.workspaces();
        if !ws.exists() {
            mkdir(&ws, 0o700)?;
        }
        Ok(())
    }

    /// Takes the platform-wide exclusive lock (create/delete/uid allocation).
    pub fn lock(&self) -> Result<nix::fcntl::Flock<File>> {
        self.ensure()?;
        lock_exclusive(&self.lock_path())
    }
}

/// Takes an exclusive `flock` on `path` (created 0600 if missing), waiting for it; released
/// when the returned guard is dropped.
pub fn lock_exclusive(path: &Path) -> Result<nix::fcntl::Flock<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(path, std::io::Error::from(e)))
}
