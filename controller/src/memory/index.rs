//! Indexers: a workspace's Markdown notes (`files/MEMORY.md`, `files/memory/**/*.md`) and its
//! session transcripts, brought into its memory incrementally.
//!
//! **Files.** `files/` is the agent-writable `/workspace`, so everything under it is hostile.
//! Every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to a
//! descriptor of `files/` (a symlink anywhere in the path, a `..` escape or a magic link
//! fails). A note is first opened `O_PATH` (which opens nothing: a FIFO or a device is never
//! opened) and `fstat`ed; only a regular file is then opened for reading (`O_NONBLOCK |
//! O_NOFOLLOW`, checked again with `fstat` to be the same file). FIFOs, devices and sockets
//! the directory entry already names are skipped without a lookup.
//!
//! The work of one pass is bounded and streamed: one note at a time is read (at most
//! [`MAX_FILE_BYTES`]), hashed, chunked, written and dropped, so memory holds one note, never
//! the tree. A note whose identity (inode, size, mtime, ctime) is what the last pass recorded
//! in `index_state` is not read at all; one changed in the last second before it was read
//! is read again next time (its timestamps may not show a second write in the same tick).
//! Caps: [`MAX_FILES`] notes, [`MAX_DEPTH`] levels, `[memory] index_max_dir_entries`
//! entries per directory and `[memory] index_max_bytes_per_pass` bytes read per pass
//! ([`IndexLimits`]). Everything past a cap is reported in [`IndexReport::skipped`]: a note
//! past the byte budget keeps its chunks and is read on a later pass; past the file or entry
//! cap, nothing is removed from the index in that pass (what was not looked at may still
//! be there).
//!
//! Text that is not UTF-8 is read lossily, and NUL bytes are dropped (they are not text; a
//! sparse file reads as them). A note's source is its path relative to `files/` (`MEMORY.md`,
//! `memory/notes/a.md`); a changed note replaces its chunks (chunks whose text did not change
//! keep their ids and vectors) and a note that is gone (deleted, or replaced by a symlink or
//! anything not a regular file) loses its chunks.
//!
//! **Sessions.** Each transcript becomes source `session:<sid>`: its user and assistant
//! messages and compaction summaries. A session is (re-)indexed when, since its last index,
//! its file grew by [`SessionThresholds::min_bytes`] or by
//! [`SessionThresholds::min_messages`] messages, or a compaction was appended; only the
//! appended tail is scanned to decide. A removed session loses its chunks.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, SFlag};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{sha256_hex, Memory, MAX_STORE_BYTES};
pub use crate::config::IndexLimits;
use crate::error::{Error, Result};
use crate::platform::Workspace;
use crate::sessions::Event;
use crate::util::text::safe_line;

/// Largest note file indexed; larger ones are skipped.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Most note files looked at in one pass.
pub const MAX_FILES: usize = 10_000;

/// Deepest directory under `files/memory/` descended into.
pub const MAX_DEPTH: usize = 16;

/// Source prefix of session transcripts.
pub const SESSION_PREFIX: &str = "session:";

/// A note whose ctime is this close to the time it was looked at is read again next pass.
const RACY_NS: i64 = 1_000_000_000;

/// When a session is indexed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionThresholds {
    /// Bytes appended to the transcript since its last index.
    pub min_bytes: u64,
    /// User and assistant messages appended since its last index.
    pub min_messages: u64,
}

impl Default for SessionThresholds {
    fn default() -> Self {
        SessionThresholds {
            min_bytes: 8 << 10,
            min_messages: 10,
        }
    }
}

/// What one indexing pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndexReport {
    /// Sources (re-)indexed.
    pub indexed: usize,
    /// Sources unchanged (or, for sessions, below the thresholds).
    pub unchanged: usize,
    /// Sources whose chunks were dropped (the file or session is gone).
    pub removed: usize,
    /// Notes read in this pass (the others were unchanged by their identity, or skipped).
    pub files_read: usize,
    /// Bytes of notes read in this pass.
    pub bytes_read: u64,
    /// Paths not indexed, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl IndexReport {
    fn add(&mut self, o: IndexReport) {
        self.indexed += o.indexed;
        self.unchanged += o.unchanged;
        self.removed += o.removed;
        self.files_read += o.files_read;
        self.bytes_read += o.bytes_read;
        self.skipped.extend(o.skipped);
    }
}

/// A file's identity as `fstat` gives it: when all four are what the last pass recorded,
/// the note is not read again. `-1` everywhere: unknown (read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: i64,
    size: i64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl Stamp {
    const UNKNOWN: Stamp = Stamp {
        ino: -1,
        size: -1,
        mtime_ns: -1,
        ctime_ns: -1,
    };

    #[allow(clippy::unnecessary_cast)] // the stat field types differ between targets
    fn of(st: &FileStat) -> Stamp {
        let ns = |s: i64, n: i64| s.saturating_mul(1_000_000_000).saturating_add(n);
        Stamp {
            // The bits of the inode number: only compared for equality.
            ino: st.st_ino as i64,
            size: st.st_size as i64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }

    fn known(&self) -> bool {
        *self != Stamp::UNKNOWN
    }
}

struct StateRow {
    hash: String,
    bytes: u64,
    stamp: Stamp,
}

impl Memory {
    fn state_rows(&self, kind: &str) -> Result<BTreeMap<String, StateRow>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT source, hash, bytes, ino, size, mtime_ns, ctime_ns
                 FROM index_state WHERE kind = ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([kind], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StateRow {
                        hash: r.get(1)?,
                        bytes: r.get::<_, i64>(2)?.max(0) as u64,
                        stamp: Stamp {
                            ino: r.get(3)?,
                            size: r.get(4)?,
                            mtime_ns: r.get(5)?,
                            ctime_ns: r.get(6)?,
                        },
                    },
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn set_state(
        &self,
        source: &str,
        kind: &str,
        hash: &str,
        bytes: u64,
        stamp: Stamp,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO index_state
                     (source, kind, hash, bytes, updated, ino, size, mtime_ns, ctime_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    source,
                    kind,
                    hash,
                    i64::try_from(bytes).unwrap_or(i64::MAX),
                    super::now_ms(),
                    stamp.ino,
                    stamp.size,
                    stamp.mtime_ns,
                    stamp.ctime_ns
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    fn set_stamp(&self, source: &str, stamp: Stamp) -> Result<()> {
        self.conn
            .execute(
                "UPDATE index_state SET ino = ?2, size = ?3, mtime_ns = ?4, ctime_ns = ?5
                 WHERE source = ?1",
                params![
                    source,
                    stamp.ino,
                    stamp.size,
                    stamp.mtime_ns,
                    stamp.ctime_ns
                ],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Drops every chunk of `source` and its index state.
    fn drop_source(&self, source: &str) -> Result<()> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM chunks WHERE source = ?1", [source])
            .map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM index_state WHERE source = ?1", [source])
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Makes `source`'s chunks exactly those of `text`: stores it (chunks already there keep
    /// their ids and vectors), then drops the source's other chunks.
    pub fn replace_source(&self, source: &str, text: &str) -> Result<()> {
        if text.trim().is_empty() {
            self.conn
                .execute("DELETE FROM chunks WHERE source = ?1", [source])
                .map_err(|e| self.err(e))?;
            return Ok(());
        }
        let stored = self.store(text, source)?;
        let keep: Vec<String> = stored.ids.iter().map(i64::to_string).collect();
        self.conn
            .execute(
                &format!(
                    "DELETE FROM chunks WHERE source = ?1 AND id NOT IN ({})",
                    keep.join(",")
                ),
                [source],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// How many chunks `source` has.
    pub fn source_chunks(&self, source: &str) -> Result<u64> {
        self.conn
            .query_row(
                "SELECT count(*) FROM chunks WHERE source = ?1",
                [source],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(|n| n.unwrap_or(0) as u64)
            .map_err(|e| self.err(e))
    }
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

/// `O_PATH` takes no other flags than these (openat2 refuses the rest).
fn how_path() -> OpenHow {
    OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

fn errno_reason(e: Errno) -> String {
    match e {
        Errno::ELOOP => "a symlink (not followed)".into(),
        Errno::EXDEV => "escapes files/ (not followed)".into(),
        Errno::ENOTDIR => "not a directory".into(),
        e => format!("cannot open: {}", e.desc()),
    }
}

/// Why a file of type `mode` (`st_mode`) is not read; `None` for a regular file.
fn not_regular(mode: u32) -> Option<&'static str> {
    let t = SFlag::from_bits_truncate(mode) & SFlag::S_IFMT;
    Some(match t {
        t if t == SFlag::S_IFREG => return None,
        t if t == SFlag::S_IFLNK => "a symlink (not followed)",
        t if t == SFlag::S_IFIFO => "a fifo (not opened)",
        t if t == SFlag::S_IFCHR || t == SFlag::S_IFBLK => "a device (not opened)",
        t if t == SFlag::S_IFSOCK => "a socket (not opened)",
        t if t == SFlag::S_IFDIR => "a directory",
        _ => "not a regular file",
    })
}

/// Removes the NUL bytes of `buf` in place. Block by block, with the slice primitives
/// (memcmp, memchr, memmove), so a sparse megabyte costs microseconds even unoptimized.
fn drop_nuls(buf: &mut Vec<u8>) {
    const BLOCK: usize = 4096;
    static ZEROS: [u8; BLOCK] = [0; BLOCK];
    let mut out = 0;
    let mut at = 0;
    while at < buf.len() {
        let end = (at + BLOCK).min(buf.len());
        let block = &buf[at..end];
        if block == &ZEROS[..block.len()] {
            // A hole: nothing to keep.
        } else if !block.contains(&0) {
            buf.copy_within(at..end, out);
            out += end - at;
        } else {
            for i in at..end {
                let b = buf[i];
                if b != 0 {
                    buf[out] = b;
                    out += 1;
                }
            }
        }
        at = end;
    }
    buf.truncate(out);
}

/// What looking at one note came to.
enum Note {
    /// Read (indexed or unchanged), or unchanged by its identity.
    Done,
    /// Not there (removed meanwhile, or no `MEMORY.md`).
    Missing,
    /// Not indexed; its old chunks go.
    Skip(String),
    /// Not read in this pass; its old chunks stay.
    Later(String),
}

/// One pass over the notes: the walk and what it found so far.
struct Pass<'a> {
    root: &'a OwnedFd,
    mem: &'a Memory,
    limits: IndexLimits,
    old: BTreeMap<String, StateRow>,
    /// Sources that are still there (their chunks stay).
    seen: BTreeSet<String>,
    rep: IndexReport,
    /// Notes looked at.
    files: usize,
    /// The file cap was reached: the walk stops.
    capped: bool,
    /// Something was not looked at: nothing is removed in this pass.
    incomplete: bool,
    /// The one note in memory.
    buf: Vec<u8>,
}

impl Pass<'_> {
    fn dir(&mut self, rel: &str, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            self.rep
                .skipped
                .push((rel.to_string(), format!("deeper than {MAX_DEPTH} levels")));
            return Ok(());
        }
        let fd = match openat2(
            self.root.as_fd(),
            rel,
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                // With O_DIRECTORY a symlink is ENOTDIR: ask again without, to say why.
                let e = match e {
                    Errno::ENOTDIR => {
                        let probe = OpenHow::new()
                            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
                            .resolve(
                                ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
                            );
                        openat2(self.root.as_fd(), rel, probe).err().unwrap_or(e)
                    }
                    e => e,
                };
                self.rep.skipped.push((rel.to_string(), errno_reason(e)));
                return Ok(());
            }
        };
        let mut d = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                self.rep.skipped.push((rel.to_string(), errno_reason(e)));
                return Ok(());
            }
        };
        let cap = self.limits.max_dir_entries;
        let mut entries: Vec<(String, Option<Type>)> = Vec::new();
        for e in d.iter().filter_map(|e| e.ok()) {
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            if entries.len() >= cap {
                self.incomplete = true;
                self.rep.skipped.push((
                    rel.to_string(),
                    format!(
                        "more than {cap} entries: only {cap} looked at \
                         (raise [memory] index_max_dir_entries, or split the directory)"
                    ),
                ));
                break;
            }
            let Ok(name) = String::from_utf8(name.to_vec()) else {
                // The source is a path string: a name that is not UTF-8 cannot be one.
                let lossy = String::from_utf8_lossy(name);
                self.rep
                    .skipped
                    .push((format!("{rel}/{lossy}"), "name is not UTF-8".into()));
                continue;
            };
            entries.push((name, e.file_type()));
        }
        drop(d);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ty) in entries {
            if self.capped {
                break;
            }
            let path = format!("{rel}/{name}");
            let note = name.ends_with(".md");
            match ty {
                Some(Type::Directory) => self.dir(&path, depth + 1)?,
                Some(Type::Symlink) => self
                    .rep
                    .skipped
                    .push((path, "a symlink (not followed)".into())),
                Some(Type::File) | None if note => self.file(path)?,
                // Named by the directory entry: not even looked up.
                Some(Type::Fifo) if note => {
                    self.rep.skipped.push((path, "a fifo (not opened)".into()))
                }
                Some(Type::CharacterDevice | Type::BlockDevice) if note => self
                    .rep
                    .skipped
                    .push((path, "a device (not opened)".into())),
                Some(Type::Socket) if note => self
                    .rep
                    .skipped
                    .push((path, "a socket (not opened)".into())),
                // Unknown type: a directory is descended into (opened with O_DIRECTORY,
                // which fails before opening anything else).
                None => self.dir(&path, depth + 1)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn file(&mut self, rel: String) -> Result<()> {
        if self.files >= MAX_FILES {
            self.capped = true;
            self.incomplete = true;
            self.rep.skipped.push((
                rel,
                format!("more than {MAX_FILES} notes: this one and the rest not looked at"),
            ));
            return Ok(());
        }
        match self.note(&rel)? {
            Note::Done => {
                self.files += 1;
                self.seen.insert(rel);
            }
            Note::Missing => {}
            Note::Skip(why) => {
                self.files += 1;
                self.rep.skipped.push((rel, why));
            }
            Note::Later(why) => {
                self.files += 1;
                self.rep.skipped.push((rel.clone(), why));
                self.seen.insert(rel);
            }
        }
        Ok(())
    }

    /// Looks at the note `rel`: skips it by its identity when unchanged, else reads,
    /// hashes, chunks and stores it.
    fn note(&mut self, rel: &str) -> Result<Note> {
        // O_PATH opens nothing: a FIFO or device named like a note is only stat'ed.
        let path_fd = match openat2(self.root.as_fd(), rel, how_path()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Note::Missing),
            Err(e) => return Ok(Note::Skip(errno_reason(e))),
        };
        let st = match fstat(&path_fd) {
            Ok(s) => s,
            Err(e) => return Ok(Note::Skip(errno_reason(e))),
        };
        drop(path_fd);
        if let Some(why) = not_regular(st.st_mode) {
            return Ok(Note::Skip(why.into()));
        }
        let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
        if size > MAX_FILE_BYTES {
            return Ok(Note::Skip(format!(
                "too large: {size} bytes (at most {MAX_FILE_BYTES})"
            )));
        }
        let stamp = Stamp::of(&st);
        let old = self.old.get(rel);
        if old.is_some_and(|o| o.stamp.known() && o.stamp == stamp) {
            self.rep.unchanged += 1;
            return Ok(Note::Done);
        }
        let budget = self.limits.max_bytes_per_pass;
        if self.rep.bytes_read.saturating_add(size) > budget {
            return Ok(Note::Later(format!(
                "not read in this pass: its budget of {budget} bytes is spent \
                 ([memory] index_max_bytes_per_pass); read on a later pass"
            )));
        }
        let fd = match openat2(self.root.as_fd(), rel, how(OFlag::O_RDONLY)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(Note::Missing),
            Err(e) => return Ok(Note::Skip(errno_reason(e))),
        };
        let st = match fstat(&fd) {
            Ok(s) => s,
            Err(e) => return Ok(Note::Skip(errno_reason(e))),
        };
        if let Some(why) = not_regular(st.st_mode) {
            return Ok(Note::Skip(why.into()));
        }
        let stamp2 = Stamp::of(&st);
        if stamp2.ino != stamp.ino {
            return Ok(Note::Later(
                "replaced while being looked at; read on a later pass".into(),
            ));
        }
        self.buf.clear();
        let read = File::from(fd)
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut self.buf);
        self.rep.bytes_read = self.rep.bytes_read.saturating_add(self.buf.len() as u64);
        self.rep.files_read += 1;
        if let Err(e) = read {
            return Ok(Note::Skip(format!("cannot read: {e}")));
        }
        if self.buf.len() as u64 > MAX_FILE_BYTES {
            return Ok(Note::Skip(format!(
                "too large: more than {MAX_FILE_BYTES} bytes"
            )));
        }
        // Changed in the last second: its timestamps may not show a second write within
        // the same tick, so the next pass reads it again (and finds it unchanged by hash).
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let keep = if stamp2.ctime_ns > now_ns.saturating_sub(RACY_NS)
            || stamp2.mtime_ns > now_ns.saturating_sub(RACY_NS)
        {
            Stamp::UNKNOWN
        } else {
            stamp2
        };
        drop_nuls(&mut self.buf);
        let text = String::from_utf8_lossy(&self.buf);
        let hash = sha256_hex(&text);
        if old.is_some_and(|o| o.hash == hash) {
            self.mem.set_stamp(rel, keep)?;
            self.rep.unchanged += 1;
            return Ok(Note::Done);
        }
        self.mem.replace_source(rel, &text)?;
        self.mem
            .set_state(rel, "file", &hash, text.len() as u64, keep)?;
        self.rep.indexed += 1;
        Ok(Note::Done)
    }
}

/// Indexes `files/MEMORY.md` and `files/memory/**/*.md` of `ws` into `mem` within `limits`
/// (see the module documentation for the rules).
pub fn index_files(ws: &Workspace, mem: &Memory, limits: IndexLimits) -> Result<IndexReport> {
    let files = ws.files_dir();
    let root = match nix::fcntl::open(
        &files,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(Errno::ENOENT) => None,
        Err(e) => return Err(Error::io(&files, std::io::Error::from(e))),
    };
    let old = mem.state_rows("file")?;
    let Some(root) = &root else {
        let mut rep = IndexReport::default();
        for src in old.keys() {
            mem.drop_source(src)?;
            rep.removed += 1;
        }
        return Ok(rep);
    };
    let mut pass = Pass {
        root,
        mem,
        limits,
        old,
        seen: BTreeSet::new(),
        rep: IndexReport::default(),
        files: 0,
        capped: false,
        incomplete: false,
        buf: Vec::with_capacity(MAX_FILE_BYTES as usize + 1),
    };
    pass.file("MEMORY.md".into())?;
    pass.dir("memory", 1)?;
    let Pass {
        old,
        seen,
        mut rep,
        incomplete,
        ..
    } = pass;
    if !incomplete {
        for src in old.keys().filter(|s| !seen.contains(*s)) {
            mem.drop_source(src)?;
            rep.removed += 1;
        }
    }
    Ok(rep)
}

/// Scans the transcript at `path` from byte `from`: (messages, compactions).
fn scan_tail(path: &Path, from: u64) -> std::io::Result<(u64, u64)> {
    let mut f = File::open(path)?;
    f.seek(SeekFrom::Start(from))?;
    let mut r = BufReader::new(f);
    let (mut msgs, mut comps) = (0u64, 0u64);
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        match Event::parse_line(&line) {
            Some(Event::UserMessage { .. } | Event::AssistantMessage { .. }) => msgs += 1,
            Some(Event::Compaction { .. }) => comps += 1,
            _ => {}
        }
    }
    Ok((msgs, comps))
}

/// The text of a transcript that memory keeps: user and assistant messages, compaction
/// summaries; the last [`MAX_STORE_BYTES`] of it when longer.
pub fn session_text(events: &[Event]) -> String {
    let mut out = String::new();
    for e in events {
        let (who, text) = match e {
            Event::UserMessage { text, .. } => ("user", text),
            Event::AssistantMessage { text, .. } => ("assistant", text),
            Event::Compaction { summary, .. } => ("summary", summary),
            _ => continue,
        };
        if text.trim().is_empty() {
            continue;
        }
        out.push_str(who);
        out.push_str(": ");
        out.push_str(text.trim());
        out.push_str("\n\n");
    }
    if out.len() > MAX_STORE_BYTES {
        let mut cut = out.len() - MAX_STORE_BYTES;
        while !out.is_char_boundary(cut) {
            cut += 1;
        }
        out.drain(..cut);
    }
    out
}

/// Indexes the session transcripts of `ws` into `mem` as `session:<sid>`, each when past
/// `th` since its last index or after a compaction.
pub fn index_sessions(ws: &Workspace, mem: &Memory, th: SessionThresholds) -> Result<IndexReport> {
    let sessions = ws.sessions();
    let list = sessions.list()?;
    let old = mem.state_rows("session")?;
    let mut rep = IndexReport::default();
    let mut seen = std::collections::BTreeSet::new();
    for info in list {
        let source = format!("{SESSION_PREFIX}{}", info.sid);
        seen.insert(source.clone());
        let last = old.get(&source).map_or(0, |o| o.bytes);
        if info.size_bytes == last && old.contains_key(&source) {
            rep.unchanged += 1;
            continue;
        }
        // A transcript that shrank was rewritten: index it whole.
        let due = if info.size_bytes < last {
            true
        } else {
            let path = sessions.path(&info.sid);
            let (msgs, comps) = match scan_tail(&path, last) {
                Ok(x) => x,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            comps > 0 || msgs >= th.min_messages || info.size_bytes - last >= th.min_bytes
        };
        if !due {
            rep.unchanged += 1;
            continue;
        }
        let t = match sessions.read(&info.sid) {
            Ok(t) => t,
            Err(Error::Session(crate::error::SessionError::NoSuch { .. })) => continue,
            Err(e) => return Err(e),
        };
        let text = session_text(&t.events);
        mem.replace_source(&source, &text)?;
        mem.set_state(
            &source,
            "session",
            &sha256_hex(&text),
            t.size_bytes,
            Stamp::UNKNOWN,
        )?;
        rep.indexed += 1;
    }
    for src in old.keys().filter(|s| !seen.contains(*s)) {
        mem.drop_source(src)?;
        rep.removed += 1;
    }
    Ok(rep)
}

/// [`index_files`] then [`index_sessions`], one report.
pub fn index_all(
    ws: &Workspace,
    mem: &Memory,
    th: SessionThresholds,
    limits: IndexLimits,
) -> Result<IndexReport> {
    let mut rep = index_files(ws, mem, limits)?;
    rep.add(index_sessions(ws, mem, th)?);
    Ok(rep)
}

/// `bulkhead memory index …`.
#[derive(Debug, Clone, clap::Args)]
pub struct IndexArgs {
    /// Workspace id.
    pub workspace: String,
    /// Index a session again after this many bytes appended to it.
    #[arg(long, default_value_t = SessionThresholds::default().min_bytes)]
    pub session_min_bytes: u64,
    /// Index a session again after this many messages appended to it.
    #[arg(long, default_value_t = SessionThresholds::default().min_messages)]
    pub session_min_messages: u64,
    /// Keep running: index again every --interval seconds (changes within an interval are
    /// taken together), printing each pass that changed something. Stop with Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between passes with --watch.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    #[command(flatten)]
    pub embed: super::cli::EmbedArgs,
}

fn print_report(r: &IndexReport, json: bool) -> Result<()> {
    use super::cli::say;
    if json {
        let skipped: Vec<_> = r
            .skipped
            .iter()
            .map(|(p, why)| serde_json::json!({"path": p, "reason": why}))
            .collect();
        return say(serde_json::json!({
            "indexed": r.indexed, "unchanged": r.unchanged, "removed": r.removed,
            "files_read": r.files_read, "bytes_read": r.bytes_read,
            "skipped": skipped,
        }));
    }
    say(format_args!(
        "indexed {}, unchanged {}, removed {}, skipped {} (read {} notes, {} bytes)",
        r.indexed,
        r.unchanged,
        r.removed,
        r.skipped.len(),
        r.files_read,
        r.bytes_read
    ))?;
    // Paths are the tenant's: escaped, so a name cannot drive the operator's terminal.
    for (p, why) in &r.skipped {
        say(format_args!(
            "skipped\t{}\t{}",
            safe_line(p),
            safe_line(why)
        ))?;
    }
    Ok(())
}

/// Runs `bulkhead memory index`; returns the exit code.
pub fn run_cli(p: &crate::platform::Platform, a: IndexArgs, json: bool) -> Result<i32> {
    let ws = p.workspace(&a.workspace)?;
    let mem = super::cli::open(p, &a.workspace, Some(&a.embed))?;
    let th = SessionThresholds {
        min_bytes: a.session_min_bytes,
        min_messages: a.session_min_messages,
    };
    let limits = ws.platform_config()?.index;
    let r = index_all(&ws, &mem, th, limits)?;
    print_report(&r, json)?;
    if a.watch {
        let every = std::time::Duration::from_secs_f64(a.interval.clamp(0.1, 3600.0));
        loop {
            std::thread::sleep(every);
            let r = index_all(&ws, &mem, th, limits)?;
            if r.indexed + r.removed > 0 {
                print_report(&r, json)?;
            }
        }
    }
    Ok(crate::error::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_dropped_whatever_the_layout() {
        let cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![0; 10_000],
            b"plain text".to_vec(),
            [b"head".as_slice(), &[0; 9000], b"tail\0x"].concat(),
            (0..20_000u32).map(|i| (i % 7) as u8).collect(),
        ];
        for c in cases {
            let mut b = c.clone();
            drop_nuls(&mut b);
            let want: Vec<u8> = c.into_iter().filter(|&x| x != 0).collect();
            assert_eq!(b, want);
        }
    }
}
