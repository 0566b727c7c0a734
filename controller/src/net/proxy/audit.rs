//! Accounting: per-workspace counters, the per-connection record and the rate-limited, daily-budgeted audit log (`net-audit.log`).

use super::*;

/// Live counters of one workspace's proxy (shared by its connections).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Bytes sent from the sandbox to origins.
    pub bytes_up: AtomicU64,
    /// Bytes sent from origins to the sandbox.
    pub bytes_down: AtomicU64,
    /// Connections being served now.
    pub open: AtomicU64,
    /// Connections finished (counted when they close).
    pub total: AtomicU64,
    /// Connections refused (policy, malformed request, connection cap).
    pub denied: AtomicU64,
    /// Connections allowed whose origin could not be resolved or reached.
    pub failed: AtomicU64,
}

/// Totals of connections, from [`NetCounters`] or an audit log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetTotals {
    /// Connections.
    pub connections: u64,
    /// Allowed.
    pub allowed: u64,
    /// Denied.
    pub denied: u64,
    /// Failed (allowed, but the origin could not be reached).
    pub failed: u64,
    /// Bytes from the sandbox to origins.
    pub bytes_up: u64,
    /// Bytes from origins to the sandbox.
    pub bytes_down: u64,
}

impl NetCounters {
    /// A snapshot.
    pub fn totals(&self) -> NetTotals {
        let total = self.total.load(Ordering::Relaxed);
        let denied = self.denied.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        NetTotals {
            connections: total,
            allowed: total.saturating_sub(denied + failed),
            denied,
            failed,
            bytes_up: self.bytes_up.load(Ordering::Relaxed),
            bytes_down: self.bytes_down.load(Ordering::Relaxed),
        }
    }
}

/// The outcome of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed and relayed.
    Allowed,
    /// Refused: policy, malformed request, connection cap.
    Denied,
    /// Allowed, but the name did not resolve or no vetted address answered.
    Failed,
}

impl Decision {
    /// `allowed`, `denied`, `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Failed => "failed",
        }
    }
}

/// One connection, as recorded in the audit log (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnRecord {
    /// Start, RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// Workspace id.
    pub workspace: String,
    /// Host as requested, normalized (empty when the request could not be read).
    pub host: String,
    /// Port (0 when the request could not be read).
    pub port: u16,
    /// `CONNECT`, `GET`, … (`-` when the request could not be read).
    pub method: String,
    /// What happened.
    pub decision: Decision,
    /// Why, when denied or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Status the proxy answered (a relayed request: the origin's status, when it sent one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The vetted address connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<String>,
    /// Bytes from the sandbox to the origin.
    pub bytes_up: u64,
    /// Bytes from the origin to the sandbox.
    pub bytes_down: u64,
    /// From accept to close, in milliseconds.
    pub duration_ms: u64,
    /// A summary line: this many connections were not written one by one (see
    /// [`AuditLog`]); `decision` says which kind. Absent on connection lines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
}

/// The audit log of one workspace: one JSON line per connection, appended (`O_APPEND`, one
/// write per line), rotated past a size to `<file>.1` (one previous file kept).
///
/// A tenant decides how many connections it makes, so it must not decide how fast its own
/// history is pushed out by rotation. Two limits, for allowed and refused connections
/// alike:
/// - a rate: at most [`AUDIT_REFUSALS_PER_SEC`] refusals (denied, failed) and
///   [`AUDIT_ALLOWED_PER_SEC`] allowed connections are written per second; the others of
///   that second are counted and written as one summary line per kind (`"suppressed": N`,
///   reason `N more denied connections suppressed`; an allowed summary carries their bytes),
///   when the next line is written after the second ended, or when the log is closed;
/// - a daily budget: at most [`AuditLog::day_budget`] bytes of connection lines per UTC day
///   (by default half the rotation size, counting what the files already hold of today when
///   opened); past it connections are only counted, and their summary lines are written at
///   most once per [`AUDIT_OVER_BUDGET_SUMMARY`].
///
/// A line is rotated away only after the rotation size has been written after it, so at the
/// default sizes a line stays at least two days (`AUDIT_MAX_BYTES` / budget), whatever the
/// tenant does. Totals ([`audit_totals`]) stay exact: summaries count what they stand for.
/// The limits are per process, like the connection caps.
#[derive(Debug)]
pub struct AuditLog {
    pub(super) path: PathBuf,
    pub(super) inner: Mutex<AuditInner>,
}

#[derive(Debug, Default)]
pub(super) struct Suppressed {
    pub(super) count: u64,
    pub(super) bytes_up: u64,
    pub(super) bytes_down: u64,
}

#[derive(Debug)]
pub(super) struct AuditInner {
    pub(super) file: RotatingFile,
    /// Start of the current rate window (the first line in it).
    pub(super) window: Option<Instant>,
    /// Refusals written in the window.
    pub(super) written: u32,
    /// Allowed connections written in the window.
    pub(super) written_allowed: u32,
    /// Counted, not written: allowed, denied, failed.
    pub(super) suppressed: [Suppressed; 3],
    /// Workspace of the suppressed records.
    pub(super) workspace: String,
    /// The UTC day (`YYYY-MM-DD`) `day_bytes` counts.
    pub(super) day: String,
    /// Bytes of lines written on `day`.
    pub(super) day_bytes: u64,
    /// Most bytes of lines per day.
    pub(super) budget: u64,
    /// A line of `day` was refused for the budget.
    pub(super) over: bool,
    /// When summaries were last written while over the day's budget.
    pub(super) over_summary: Option<Instant>,
}

pub(super) fn kind_index(d: Decision) -> usize {
    match d {
        Decision::Allowed => 0,
        Decision::Denied => 1,
        Decision::Failed => 2,
    }
}

/// `YYYY-MM-DD` of an RFC 3339 timestamp.
pub(super) fn day_of(ts: &str) -> &str {
    ts.get(..10).unwrap_or(ts)
}

/// Bytes of the lines of `day` in the audit files at `path` (the previous one, then the
/// current one).
pub(super) fn bytes_of_day(path: &Path, day: &str) -> u64 {
    let mut n = 0u64;
    for p in [rotated(path), path.to_path_buf()] {
        let Ok(text) = std::fs::read(&p) else {
            continue;
        };
        for line in text.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<ConnRecord>(line) {
                if day_of(&r.ts) == day {
                    n = n.saturating_add(line.len() as u64 + 1);
                }
            }
        }
    }
    n
}

impl AuditLog {
    /// Opens `path` for appending, rotated past [`AUDIT_MAX_BYTES`].
    pub fn open(path: impl Into<PathBuf>) -> Result<AuditLog> {
        Self::open_with(path, AUDIT_MAX_BYTES)
    }

    /// Opens `path` for appending, rotated past `max_bytes`, with a daily budget of half
    /// that.
    pub fn open_with(path: impl Into<PathBuf>, max_bytes: u64) -> Result<AuditLog> {
        let path = path.into();
        let file = RotatingFile::open(path.clone(), max_bytes, 1).map_err(|e| Error::Io {
            path: path.clone(),
            source: e,
        })?;
        let day = day_of(&crate::util::time::timestamp_now()).to_string();
        let day_bytes = bytes_of_day(&path, &day);
        Ok(AuditLog {
            path,
            inner: Mutex::new(AuditInner {
                file,
                window: None,
                written: 0,
                written_allowed: 0,
                suppressed: Default::default(),
                workspace: String::new(),
                day,
                day_bytes,
                budget: max_bytes / 2,
                over: false,
                over_summary: None,
            }),
        })
    }

    /// Sets the daily budget in bytes (see [`AuditLog`]).
    pub fn with_day_budget(self, bytes: u64) -> AuditLog {
        lock(&self.inner).budget = bytes;
        self
    }

    /// The daily budget in bytes.
    pub fn day_budget(&self) -> u64 {
        lock(&self.inner).budget
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (a failure is logged, never fatal to the connection). Returns
    /// whether it was written: past the rate or the day's budget it is only counted, for
    /// a summary line.
    pub fn append(&self, r: &ConnRecord) -> bool {
        self.append_at(r, Instant::now())
    }

    /// Writes the summary lines of a rate window that has ended, if connections were
    /// suppressed in it (otherwise written with the next line, or when the log is closed).
    pub fn flush_suppressed(&self) {
        let mut g = lock(&self.inner);
        if g.window.is_some_and(|w| w.elapsed() >= AUDIT_WINDOW) {
            end_window(&self.path, &mut g, Instant::now(), false);
        }
    }

    pub(super) fn append_at(&self, r: &ConnRecord, now: Instant) -> bool {
        let mut g = lock(&self.inner);
        if g.window
            .is_some_and(|w| now.saturating_duration_since(w) >= AUDIT_WINDOW)
        {
            end_window(&self.path, &mut g, now, false);
        }
        let today = crate::util::time::timestamp_now();
        if day_of(&today) != g.day {
            g.day = day_of(&today).to_string();
            g.day_bytes = 0;
            g.over = false;
            g.over_summary = None;
        }
        g.window.get_or_insert(now);
        let mut line = serde_json::to_vec(r).unwrap_or_default();
        line.push(b'\n');
        let over_rate = match r.decision {
            Decision::Allowed => g.written_allowed >= AUDIT_ALLOWED_PER_SEC,
            _ => g.written >= AUDIT_REFUSALS_PER_SEC,
        };
        let over_budget = g.day_bytes.saturating_add(line.len() as u64) > g.budget;
        if over_budget {
            g.over = true;
        }
        if over_rate || over_budget {
            let s = &mut g.suppressed[kind_index(r.decision)];
            s.count += 1;
            s.bytes_up = s.bytes_up.saturating_add(r.bytes_up);
            s.bytes_down = s.bytes_down.saturating_add(r.bytes_down);
            if g.workspace != r.workspace {
                g.workspace = r.workspace.clone();
            }
            return false;
        }
        match r.decision {
            Decision::Allowed => g.written_allowed += 1,
            _ => g.written += 1,
        }
        g.day_bytes = g.day_bytes.saturating_add(line.len() as u64);
        write_raw(&self.path, &mut g.file, &line, &r.workspace);
        true
    }
}

/// Closes the rate window: one summary line per kind of connection suppressed in it. While
/// over the day's budget the counts are kept and written at most once per
/// [`AUDIT_OVER_BUDGET_SUMMARY`], unless `last` (the log is closing).
pub(super) fn end_window(path: &Path, g: &mut AuditInner, now: Instant, last: bool) {
    g.window = None;
    g.written = 0;
    g.written_allowed = 0;
    if g.suppressed.iter().all(|s| s.count == 0) {
        return;
    }
    let over_budget = g.over;
    if over_budget && !last {
        if g.over_summary
            .is_some_and(|t| now.saturating_duration_since(t) < AUDIT_OVER_BUDGET_SUMMARY)
        {
            return;
        }
        g.over_summary = Some(now);
    }
    let why = if over_budget {
        format!(
            "past {AUDIT_ALLOWED_PER_SEC} allowed and {AUDIT_REFUSALS_PER_SEC} refused a second, \
             or past the day's audit budget of {} bytes: only counted",
            g.budget
        )
    } else {
        format!(
            "past {AUDIT_ALLOWED_PER_SEC} allowed and {AUDIT_REFUSALS_PER_SEC} refused a second: \
             only counted"
        )
    };
    for decision in [Decision::Allowed, Decision::Denied, Decision::Failed] {
        let s = std::mem::take(&mut g.suppressed[kind_index(decision)]);
        if s.count == 0 {
            continue;
        }
        let n = s.count;
        let kind = decision.as_str();
        let rec = ConnRecord {
            ts: crate::util::time::timestamp_now(),
            workspace: g.workspace.clone(),
            host: String::new(),
            port: 0,
            method: "-".into(),
            decision,
            reason: Some(format!(
                "suppressed: {n} more {kind} connections suppressed ({why})"
            )),
            status: None,
            addr: None,
            bytes_up: s.bytes_up,
            bytes_down: s.bytes_down,
            duration_ms: 0,
            suppressed: Some(n),
        };
        log::warn!(target: "egress", workspace = g.workspace.as_str(); "{n} more {kind} egress connections not logged one by one");
        let mut line = serde_json::to_vec(&rec).unwrap_or_default();
        line.push(b'\n');
        g.day_bytes = g.day_bytes.saturating_add(line.len() as u64);
        write_raw(path, &mut g.file, &line, &rec.workspace);
    }
}

pub(super) fn write_raw(path: &Path, f: &mut RotatingFile, line: &[u8], workspace: &str) {
    if let Err(e) = f.write_all(line) {
        log::warn!(target: "egress", workspace = workspace; "cannot append to {}: {e}", path.display());
    }
}

impl Drop for AuditLog {
    /// Writes the summaries still counted.
    fn drop(&mut self) {
        let inner = match self.inner.get_mut() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        end_window(&self.path, inner, Instant::now(), true);
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub(super) fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

/// Reads an audit log (the previous file, then the current one), oldest first; with
/// `limit`, only the newest `limit` records. Lines that do not parse (a torn last line) are
/// skipped. A missing file is an empty log.
pub fn read_audit_log(path: &Path, limit: Option<usize>) -> Result<Vec<ConnRecord>> {
    let mut out = Vec::new();
    for p in [rotated(path), path.to_path_buf()] {
        let text = match std::fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&p, e)),
        };
        for line in text.split(|b| *b == b'\n') {
            if let Ok(r) = serde_json::from_slice::<ConnRecord>(line) {
                out.push(r);
            }
        }
    }
    if let Some(n) = limit {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    Ok(out)
}

/// Totals over an audit log (both files); a summary line counts the refusals it stands for.
pub fn audit_totals(path: &Path) -> Result<NetTotals> {
    let mut t = NetTotals::default();
    for r in read_audit_log(path, None)? {
        let n = r.suppressed.unwrap_or(1);
        t.connections += n;
        match r.decision {
            Decision::Allowed => t.allowed += n,
            Decision::Denied => t.denied += n,
            Decision::Failed => t.failed += n,
        }
        t.bytes_up += r.bytes_up;
        t.bytes_down += r.bytes_down;
    }
    Ok(t)
}
