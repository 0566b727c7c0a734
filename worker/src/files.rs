//! The file tools: read, write, edit, ls, stat.
//!
//! Paths are absolute or relative to [`WORKSPACE`]. The worker does not try to confine them:
//! the sandbox (mount namespace, read-only root, landlock) is the boundary. What it does guard
//! against is being stalled or bloated by what it finds: files are opened `O_NONBLOCK` and must
//! be regular (a FIFO planted by a command cannot hang the worker), every size is capped, and
//! writes go to a temporary file in the same directory that is renamed over the target.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bulkhead_shared::{DirEntry, FileKind, FileStat, ReadResult, ToolError, ToolErrorKind};

/// The sandbox's working tree; relative paths resolve under it.
pub const WORKSPACE: &str = "/workspace";
/// Largest `Read` answer, whatever limit is asked.
pub const MAX_READ_BYTES: u64 = 512 * 1024;
/// Largest file `Edit` works on (before and after the edit).
pub const MAX_EDIT_BYTES: u64 = 8 * 1024 * 1024;
/// Most entries one `Ls` returns.
pub const MAX_LS_ENTRIES: usize = 10_000;
/// Budget of an `Ls` answer in (approximate) encoded bytes, below the 1 MiB frame limit.
const MAX_LS_REPLY_BYTES: usize = 900 * 1024;
/// Longest error message sent back (messages name paths, which may be long).
const MAX_MESSAGE_BYTES: usize = 4096;
/// Permission bits of a new file when the request gives none.
const DEFAULT_FILE_MODE: u32 = 0o644;

/// A tool error.
pub fn tool_error(kind: ToolErrorKind, message: impl Into<String>) -> ToolError {
    let mut message = message.into();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push('…');
    }
    ToolError { kind, message }
}

/// The tool error class of an errno.
pub fn errno_kind(errno: i32) -> ToolErrorKind {
    match errno {
        libc::ENOENT => ToolErrorKind::NotFound,
        libc::EACCES | libc::EPERM | libc::EROFS => ToolErrorKind::PermissionDenied,
        libc::EISDIR | libc::ENOTDIR | libc::ELOOP => ToolErrorKind::WrongType,
        libc::EFBIG | libc::ENOSPC | libc::EDQUOT => ToolErrorKind::TooLarge,
        libc::ENAMETOOLONG | libc::EINVAL => ToolErrorKind::InvalidInput,
        _ => ToolErrorKind::Io,
    }
}

/// `strerror`-like text, lowercase, without std's " (os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    let mut s = e.to_string();
    if let Some(at) = s.rfind(" (os error ") {
        s.truncate(at);
    }
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

/// "cannot <op> <path>: <reason>", classed by errno.
pub fn io_error(op: &str, path: &Path, e: &io::Error) -> ToolError {
    let kind = e.raw_os_error().map_or(ToolErrorKind::Io, errno_kind);
    tool_error(
        kind,
        format!("cannot {op} {}: {}", path.display(), describe(e)),
    )
}

/// Absolute path of a request path: absolute stays, relative goes under [`WORKSPACE`].
pub fn resolve(path: &str) -> Result<PathBuf, ToolError> {
    resolve_in(Path::new(WORKSPACE), path)
}

fn resolve_in(root: &Path, path: &str) -> Result<PathBuf, ToolError> {
    if path.is_empty() {
        return Err(tool_error(ToolErrorKind::InvalidInput, "empty path"));
    }
    if path.contains('\0') {
        return Err(tool_error(
            ToolErrorKind::InvalidInput,
            "path contains a nul byte",
        ));
    }
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Ok(root.join(path))
    }
}

fn kind_of(ft: fs::FileType) -> FileKind {
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

fn file_stat(md: &fs::Metadata) -> FileStat {
    FileStat {
        kind: kind_of(md.file_type()),
        size: md.size(),
        mode: md.mode() & 0o7777,
        mtime: md.mtime(),
    }
}

/// Why a non-regular file is refused, for an error message.
fn not_regular(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "is a directory"
    } else if ft.is_fifo() {
        "is a fifo"
    } else if ft.is_socket() {
        "is a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "is a device"
    } else {
        "is not a regular file"
    }
}

/// Opens `path` for reading without blocking on FIFOs, and checks that it is a regular file.
fn open_regular(op: &str, path: &Path) -> Result<(File, fs::Metadata), ToolError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| io_error(op, path, &e))?;
    let md = file.metadata().map_err(|e| io_error(op, path, &e))?;
    if !md.file_type().is_file() {
        return Err(tool_error(
            ToolErrorKind::WrongType,
            format!(
                "cannot {op} {}: {}",
                path.display(),
                not_regular(md.file_type())
            ),
        ));
    }
    Ok((file, md))
}

/// `pread` until `buf` is full or end of file; returns the bytes read.
fn read_at_full(file: &File, buf: &mut [u8], mut offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// `Read{path, offset, limit}`.
pub fn read(path: &str, offset: u64, limit: u64) -> Result<ReadResult, ToolError> {
    let path = resolve(path)?;
    if offset > i64::MAX as u64 {
        return Err(tool_error(
            ToolErrorKind::InvalidInput,
            format!("offset {offset} is out of range"),
        ));
    }
    let (file, md) = open_regular("read", &path)?;
    let limit = limit.min(MAX_READ_BYTES) as usize;
    let mut data = vec![0u8; limit];
    let n = read_at_full(&file, &mut data, offset).map_err(|e| io_error("read", &path, &e))?;
    data.truncate(n);
    // A short read met the end; a full one may sit exactly at it (or the file, say in /proc,
    // reports size 0): probe one byte rather than trust st_size.
    let eof = if n < limit {
        true
    } else {
        let mut probe = [0u8; 1];
        read_at_full(&file, &mut probe, offset + n as u64)
            .map_err(|e| io_error("read", &path, &e))?
            == 0
    };
    let size = md.size().max(offset.saturating_add(n as u64));
    Ok(ReadResult { data, size, eof })
}

/// Where a write to `path` lands: a symlink is followed to its target (so writing a link
/// updates the file it names, as an editor would; a dangling link is replaced), anything else
/// is `path` itself.
fn write_target(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `data` to a new temporary file beside `target` with permission bits `mode`, then
/// renames it over `target`. The temporary file is removed on any failure.
fn replace_atomically(target: &Path, data: &[u8], mode: u32) -> Result<(), ToolError> {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("/"),
    };
    let name = target
        .file_name()
        .ok_or_else(|| {
            tool_error(
                ToolErrorKind::InvalidInput,
                format!("cannot write {}: not a file path", target.display()),
            )
        })?
        .to_string_lossy();
    let short: String = name.chars().take(64).collect();
    let mut attempt = 0;
    let (tmp, mut file) = loop {
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{short}.{}.{n}.bulkhead-tmp", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 16 => attempt += 1,
            Err(e) => return Err(io_error("write", target, &e)),
        }
    };
    let result = file
        .write_all(data)
        .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
        .and_then(|()| fs::rename(&tmp, target));
    drop(file);
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_error("write", target, &e)
    })
}

/// `Write{path, data, mode, create_parents}`: returns the bytes written.
pub fn write(path: &str, data: &[u8], mode: u32, create_parents: bool) -> Result<u64, ToolError> {
    let path = resolve(path)?;
    let target = write_target(&path);
    if create_parents {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error("create directory", parent, &e))?;
        }
    }
    let mode = match fs::symlink_metadata(&target) {
        Ok(md) if md.is_dir() => {
            return Err(tool_error(
                ToolErrorKind::WrongType,
                format!("cannot write {}: is a directory", target.display()),
            ))
        }
        // An existing file keeps its permission bits; `mode` is for new files.
        Ok(md) if md.is_file() => md.mode() & 0o7777,
        _ => match mode & 0o777 {
            0 => DEFAULT_FILE_MODE,
            m => m,
        },
    };
    replace_atomically(&target, data, mode)?;
    Ok(data.len() as u64)
}

/// `Edit{path, old, new, replace_all}`: returns the number of replacements.
pub fn edit(path: &str, old: &str, new: &str, replace_all: bool) -> Result<u64, ToolError> {
    let path = resolve(path)?;
    if old.is_empty() {
        return Err(tool_error(
            ToolErrorKind::InvalidInput,
            "the text to replace is empty",
        ));
    }
    let target = write_target(&path);
    let (mut file, md) = open_regular("edit", &target)?;
    if md.size() > MAX_EDIT_BYTES {
        return Err(tool_error(
            ToolErrorKind::TooLarge,
            format!(
                "cannot edit {}: {} bytes is over the {MAX_EDIT_BYTES}-byte limit",
                target.display(),
                md.size()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(md.size() as usize);
    (&mut file)
        .take(MAX_EDIT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("edit", &target, &e))?;
    drop(file);
    if bytes.len() as u64 > MAX_EDIT_BYTES {
        return Err(tool_error(
            ToolErrorKind::TooLarge,
            format!(
                "cannot edit {}: over the {MAX_EDIT_BYTES}-byte limit",
                target.display()
            ),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        tool_error(
            ToolErrorKind::WrongType,
            format!("cannot edit {}: not valid utf-8 text", target.display()),
        )
    })?;
    let (edited, count) = replace_text(&text, old, new, replace_all).map_err(|e| match e {
        EditError::NotFound => tool_error(
            ToolErrorKind::NotFound,
            format!("the text to replace was not found in {}", target.display()),
        ),
        EditError::NotUnique(n) => tool_error(
            ToolErrorKind::NotUnique,
            format!(
                "the text to replace occurs {n} times in {}; give more context to make it \
                 unique, or set replace_all",
                target.display()
            ),
        ),
    })?;
    if edited.len() as u64 > MAX_EDIT_BYTES {
        return Err(tool_error(
            ToolErrorKind::TooLarge,
            format!(
                "cannot edit {}: the result would be over the {MAX_EDIT_BYTES}-byte limit",
                target.display()
            ),
        ));
    }
    replace_atomically(&target, edited.as_bytes(), md.mode() & 0o7777)?;
    Ok(count)
}

/// Why a replacement could not be made.
#[derive(Debug, PartialEq, Eq)]
pub enum EditError {
    /// `old` does not occur.
    NotFound,
    /// `old` occurs this many times and `replace_all` is false.
    NotUnique(usize),
}

/// The pure part of `Edit`: replaces `old` (non-empty) by `new`.
pub fn replace_text(
    text: &str,
    old: &str,
    new: &str,
    replace_all: bool,
) -> Result<(String, u64), EditError> {
    let count = text.matches(old).count();
    match count {
        0 => Err(EditError::NotFound),
        1 => Ok((text.replacen(old, new, 1), 1)),
        n if replace_all => Ok((text.replace(old, new), n as u64)),
        n => Err(EditError::NotUnique(n)),
    }
}

/// `Ls{path}`: entries sorted by name (bytes), symlinks not followed, capped.
pub fn ls(path: &str) -> Result<(Vec<DirEntry>, bool), ToolError> {
    use std::collections::BinaryHeap;
    use std::os::unix::ffi::OsStrExt;

    let path = resolve(path)?;
    let dir = fs::read_dir(&path).map_err(|e| io_error("list", &path, &e))?;
    // Keep the MAX_LS_ENTRIES smallest names (a max-heap of that size), so a directory of
    // millions of entries costs bounded memory.
    let mut heap: BinaryHeap<Vec<u8>> = BinaryHeap::new();
    let mut truncated = false;
    for entry in dir {
        let entry = entry.map_err(|e| io_error("list", &path, &e))?;
        let name = entry.file_name().as_bytes().to_vec();
        if heap.len() < MAX_LS_ENTRIES {
            heap.push(name);
        } else {
            truncated = true;
            if heap.peek().is_some_and(|max| name < *max) {
                heap.pop();
                heap.push(name);
            }
        }
    }
    let names = heap.into_sorted_vec();
    let mut entries = Vec::with_capacity(names.len());
    let mut budget = 0usize;
    for name in names {
        let full = path.join(std::ffi::OsStr::from_bytes(&name));
        let stat = match fs::symlink_metadata(&full) {
            Ok(md) => file_stat(&md),
            // Removed since readdir: skip it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error("stat", &full, &e)),
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        budget += name.len() + 32;
        if budget > MAX_LS_REPLY_BYTES {
            truncated = true;
            break;
        }
        entries.push(DirEntry { name, stat });
    }
    Ok((entries, truncated))
}

/// `Stat{path}` (lstat).
pub fn stat(path: &str) -> Result<FileStat, ToolError> {
    let path = resolve(path)?;
    let md = fs::symlink_metadata(&path).map_err(|e| io_error("stat", &path, &e))?;
    Ok(file_stat(&md))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!(
                "bulkhead-worker-unit-{tag}-{}-{n}",
                std::process::id()
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self, name: &str) -> String {
            self.0.join(name).to_str().unwrap().to_string()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn resolves_relative_paths_under_the_workspace() {
        assert_eq!(resolve("a/b").unwrap(), PathBuf::from("/workspace/a/b"));
        assert_eq!(resolve("/etc/hosts").unwrap(), PathBuf::from("/etc/hosts"));
        assert_eq!(resolve("").unwrap_err().kind, ToolErrorKind::InvalidInput);
        assert_eq!(
            resolve("a\0b").unwrap_err().kind,
            ToolErrorKind::InvalidInput
        );
    }

    #[test]
    fn maps_errnos() {
        assert_eq!(errno_kind(libc::ENOENT), ToolErrorKind::NotFound);
        assert_eq!(errno_kind(libc::EACCES), ToolErrorKind::PermissionDenied);
        assert_eq!(errno_kind(libc::EPERM), ToolErrorKind::PermissionDenied);
        assert_eq!(errno_kind(libc::EISDIR), ToolErrorKind::WrongType);
        assert_eq!(errno_kind(libc::ENOTDIR), ToolErrorKind::WrongType);
        assert_eq!(errno_kind(libc::EFBIG), ToolErrorKind::TooLarge);
        assert_eq!(errno_kind(libc::EIO), ToolErrorKind::Io);
        let e = io_error(
            "read",
            Path::new("/x"),
            &io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert_eq!(e.message, "cannot read /x: no such file or directory");
    }

    #[test]
    fn long_messages_are_cut() {
        let e = tool_error(ToolErrorKind::Io, "é".repeat(10_000));
        assert!(e.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
    }

    #[test]
    fn replace_text_cases() {
        assert_eq!(
            replace_text("a b a", "b", "c", false),
            Ok(("a c a".into(), 1))
        );
        assert_eq!(
            replace_text("a b a", "x", "c", false),
            Err(EditError::NotFound)
        );
        assert_eq!(
            replace_text("a b a", "a", "c", false),
            Err(EditError::NotUnique(2))
        );
        assert_eq!(
            replace_text("a b a", "a", "c", true),
            Ok(("c b c".into(), 2))
        );
        // Non-overlapping counting, as `replace` does.
        assert_eq!(replace_text("aaa", "aa", "b", true), Ok(("ba".into(), 1)));
    }

    #[test]
    fn read_write_edit_round_trip() {
        let t = TempDir::new("rwe");
        let p = t.path("sub/f.txt");
        assert_eq!(
            write(&p, b"x", 0o600, false).unwrap_err().kind,
            ToolErrorKind::NotFound
        );
        assert_eq!(write(&p, b"hello world", 0o600, true).unwrap(), 11);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let r = read(&p, 6, 100).unwrap();
        assert_eq!(
            (r.data.as_slice(), r.size, r.eof),
            (&b"world"[..], 11, true)
        );
        let r = read(&p, 0, 5).unwrap();
        assert_eq!((r.data.as_slice(), r.eof), (&b"hello"[..], false));
        let r = read(&p, 11, 5).unwrap();
        assert!(r.data.is_empty() && r.eof);
        assert_eq!(edit(&p, "world", "there", false).unwrap(), 1);
        assert_eq!(fs::read_to_string(&p).unwrap(), "hello there");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(
            read(&t.path("sub"), 0, 1).unwrap_err().kind,
            ToolErrorKind::WrongType
        );
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(t.0.join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f.txt")]);
    }

    #[test]
    fn reading_proc_files_reports_their_real_size() {
        let r = read("/proc/self/status", 0, MAX_READ_BYTES).unwrap();
        assert!(r.eof);
        assert_eq!(r.size, r.data.len() as u64);
        assert!(!r.data.is_empty());
    }
}
