//! Indexers: a workspace's Markdown notes (`files/MEMORY.md`, `files/memory/**/*.md`) and its
//! session transcripts, brought into its memory incrementally.
//!
//! **Files.** `files/` is the agent-writable `/workspace`, so everything under it is hostile:
//! every path is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` relative to a
//! descriptor of `files/` (a symlink anywhere in the path, a `..` escape or a magic link
//! fails), only regular files are read (checked with `fstat` on the opened descriptor), and
//! there are caps on file size ([`MAX_FILE_BYTES`]), file count ([`MAX_FILES`]) and depth
//! ([`MAX_DEPTH`]). Text that is not UTF-8 is read lossily. A file's source is its path
//! relative to `files/` (`MEMORY.md`, `memory/notes/a.md`); its content hash is kept in the
//! `index_state` table, so an unchanged file is not read into memory again, a changed one
//! replaces its chunks (chunks whose text did not change keep their ids and vectors) and a
//! file that is gone (deleted, or replaced by a symlink) loses its chunks.
//!
//! **Sessions.** Each transcript becomes source `session:<sid>`: its user and assistant
//! messages and compaction summaries. A session is (re-)indexed when, since its last index,
//! its file grew by [`SessionThresholds::min_bytes`] or by
//! [`SessionThresholds::min_messages`] messages, or a compaction was appended; only the
//! appended tail is scanned to decide. A removed session loses its chunks.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

use super::{sha256_hex, Memory, MAX_STORE_BYTES};
use crate::error::{Error, Result};
use crate::platform::Workspace;
use crate::sessions::Event;

/// Largest note file indexed; larger ones are skipped.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Most note files looked at in one pass.
pub const MAX_FILES: usize = 10_000;

/// Deepest directory under `files/memory/` descended into.
pub const MAX_DEPTH: usize = 16;

/// Source prefix of session transcripts.
pub const SESSION_PREFIX: &str = "session:";

/// The table of what was indexed (created on first use; independent of the chunk schema).
const STATE_SQL: &str = "CREATE TABLE IF NOT EXISTS index_state (
    source      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,          -- 'file' or 'session'
    hash        TEXT NOT NULL DEFAULT '',
    bytes       INTEGER NOT NULL DEFAULT 0,
    messages    INTEGER NOT NULL DEFAULT 0,
    updated     INTEGER NOT NULL
) WITHOUT ROWID";

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
    /// Paths not indexed, with the reason.
    pub skipped: Vec<(String, String)>,
}

impl IndexReport {
    fn add(&mut self, o: IndexReport) {
        self.indexed += o.indexed;
        self.unchanged += o.unchanged;
        self.removed += o.removed;
        self.skipped.extend(o.skipped);
    }
}

struct StateRow {
    hash: String,
    bytes: u64,
}

impl Memory {
    fn ensure_state(&self) -> Result<()> {
        self.conn.execute_batch(STATE_SQL).map_err(|e| self.err(e))
    }

    fn state_rows(&self, kind: &str) -> Result<BTreeMap<String, StateRow>> {
        let mut st = self
            .conn
            .prepare("SELECT source, hash, bytes FROM index_state WHERE kind = ?1")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([kind], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    StateRow {
                        hash: r.get(1)?,
                        bytes: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<BTreeMap<_, _>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn set_state(&self, source: &str, kind: &str, hash: &str, bytes: u64) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO index_state (source, kind, hash, bytes, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![source, kind, hash, bytes as i64, super::now_ms()],
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

fn errno_reason(e: Errno) -> String {
    match e {
        Errno::ELOOP => "a symlink (not followed)".into(),
        Errno::EXDEV => "escapes files/ (not followed)".into(),
        Errno::ENOTDIR => "not a directory".into(),
        e => format!("cannot open: {}", e.desc()),
    }
}

/// A file found by the walk.
enum Found {
    Text(String),
    Skip(String),
}

/// Reads the regular file `rel` beneath `root`, never following a symlink.
fn read_note(root: &OwnedFd, rel: &str) -> Found {
    let fd = match openat2(root.as_fd(), rel, how(OFlag::O_RDONLY)) {
        Ok(fd) => fd,
        Err(e) => return Found::Skip(errno_reason(e)),
    };
    let st = match fstat(&fd) {
        Ok(s) => s,
        Err(e) => return Found::Skip(errno_reason(e)),
    };
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Found::Skip("not a regular file".into());
    }
    if st.st_size as u64 > MAX_FILE_BYTES {
        return Found::Skip(format!(
            "too large: {} bytes (at most {MAX_FILE_BYTES})",
            st.st_size
        ));
    }
    let mut buf = Vec::new();
    if let Err(e) = File::from(fd)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
    {
        return Found::Skip(format!("cannot read: {e}"));
    }
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Found::Skip(format!("too large: more than {MAX_FILE_BYTES} bytes"));
    }
    Found::Text(String::from_utf8_lossy(&buf).into_owned())
}

struct Walk<'a> {
    root: &'a OwnedFd,
    found: Vec<(String, Found)>,
    skipped: Vec<(String, String)>,
    capped: bool,
}

impl Walk<'_> {
    fn dir(&mut self, rel: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.skipped
                .push((rel.to_string(), format!("deeper than {MAX_DEPTH} levels")));
            return;
        }
        let fd = match openat2(
            self.root.as_fd(),
            rel,
            how(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return,
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
                self.skipped.push((rel.to_string(), errno_reason(e)));
                return;
            }
        };
        let mut d = match Dir::from_fd(fd) {
            Ok(d) => d,
            Err(e) => {
                self.skipped.push((rel.to_string(), errno_reason(e)));
                return;
            }
        };
        let mut entries: Vec<(String, Option<Type>)> = d
            .iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                (n != "." && n != "..").then(|| (n, e.file_type()))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, ty) in entries {
            if self.capped {
                return;
            }
            let path = format!("{rel}/{name}");
            match ty {
                Some(Type::Directory) => self.dir(&path, depth + 1),
                Some(Type::Symlink) => self.skipped.push((path, "a symlink (not followed)".into())),
                Some(Type::File) | None if name.ends_with(".md") => self.file(path),
                // Unknown type: a directory is descended into (opened with O_DIRECTORY,
                // so anything else fails harmlessly).
                None => self.dir(&path, depth + 1),
                _ => {}
            }
        }
    }

    fn file(&mut self, rel: String) {
        if self.found.len() >= MAX_FILES {
            self.capped = true;
            self.skipped
                .push((rel, format!("more than {MAX_FILES} files: not looked at")));
            return;
        }
        let f = read_note(self.root, &rel);
        self.found.push((rel, f));
    }
}

/// Indexes `files/MEMORY.md` and `files/memory/**/*.md` of `ws` into `mem` (see the module
/// documentation for the rules).
pub fn index_files(ws: &Workspace, mem: &Memory) -> Result<IndexReport> {
    mem.ensure_state()?;
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
    let mut walk_found = Vec::new();
    let mut rep = IndexReport::default();
    let mut capped = false;
    if let Some(root) = &root {
        let mut w = Walk {
            root,
            found: Vec::new(),
            skipped: Vec::new(),
            capped: false,
        };
        match read_note(root, "MEMORY.md") {
            Found::Skip(r) if r.starts_with("cannot open: No such file") => {}
            f => w.found.push(("MEMORY.md".into(), f)),
        }
        w.dir("memory", 1);
        walk_found = w.found;
        rep.skipped = w.skipped;
        capped = w.capped;
    }
    let old = mem.state_rows("file")?;
    let mut seen = std::collections::BTreeSet::new();
    for (rel, f) in walk_found {
        let text = match f {
            Found::Text(t) => t,
            Found::Skip(reason) => {
                rep.skipped.push((rel, reason));
                continue;
            }
        };
        seen.insert(rel.clone());
        let hash = sha256_hex(&text);
        if old.get(&rel).is_some_and(|o| o.hash == hash) {
            rep.unchanged += 1;
            continue;
        }
        mem.replace_source(&rel, &text)?;
        mem.set_state(&rel, "file", &hash, text.len() as u64)?;
        rep.indexed += 1;
    }
    if !capped {
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
    mem.ensure_state()?;
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
            Err(Error::NoSuchSession { .. }) => continue,
            Err(e) => return Err(e),
        };
        let text = session_text(&t.events);
        mem.replace_source(&source, &text)?;
        mem.set_state(&source, "session", &sha256_hex(&text), t.size_bytes)?;
        rep.indexed += 1;
    }
    for src in old.keys().filter(|s| !seen.contains(*s)) {
        mem.drop_source(src)?;
        rep.removed += 1;
    }
    Ok(rep)
}

/// [`index_files`] then [`index_sessions`], one report.
pub fn index_all(ws: &Workspace, mem: &Memory, th: SessionThresholds) -> Result<IndexReport> {
    let mut rep = index_files(ws, mem)?;
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
            "skipped": skipped,
        }));
    }
    say(format_args!(
        "indexed {}, unchanged {}, removed {}, skipped {}",
        r.indexed,
        r.unchanged,
        r.removed,
        r.skipped.len()
    ))?;
    for (p, why) in &r.skipped {
        say(format_args!("skipped\t{p}\t{why}"))?;
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
    let r = index_all(&ws, &mem, th)?;
    print_report(&r, json)?;
    if a.watch {
        let every = std::time::Duration::from_secs_f64(a.interval.clamp(0.1, 3600.0));
        loop {
            std::thread::sleep(every);
            let r = index_all(&ws, &mem, th)?;
            if r.indexed + r.removed > 0 {
                print_report(&r, json)?;
            }
        }
    }
    Ok(crate::error::exit::OK)
}
