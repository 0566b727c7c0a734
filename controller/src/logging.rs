//! Logging: `log` + `env_logger`, configured from `config.toml` and `BULKHEAD_LOG_*`.
//!
//! - `BULKHEAD_LOG_LEVEL` (default `warn`), `BULKHEAD_LOG_FILE` (default stderr; rotated by
//!   size: `file`, `file.1` … `file.N`), `BULKHEAD_LOG_FORMAT=json` for one JSON object per
//!   line with `ts`, `level`, `subsystem` (the log target), `workspace`, `session`, `msg` and
//!   any other key-values.
//! - Secrets are redacted, per tenant:
//!   - The operator's secrets (the credential passphrase, LLM API keys from the environment)
//!     are registered once with [`register_operator_secret`] and redacted everywhere.
//!   - A workspace's decrypted credential values live only in a [`Redactor`]: a value owned
//!     by the run (or request) that decrypted them, held in zeroizing buffers and dropped
//!     with it. A run redacts its tool output, model text, events, transcript lines and
//!     errors with its own redactor (its workspace's secrets plus the operator's), never with
//!     another workspace's, so one tenant's output is never changed by another's secrets.
//!   - A log line is not tied to one run, so it is redacted of the operator's secrets plus
//!     every secret *live* at the time: a [`LiveGuard`] (from [`Redactor::live`]) registers
//!     a redactor's values while a run or request holds it and unregisters them on drop.
//!     Redaction is applied to the message and to every field value *before* the line is
//!     serialized, so JSON escaping (`"` → `\"`, `\` → `\\`) cannot hide a secret.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use zeroize::Zeroizing;

use crate::config::LogConfig;

/// The replacement for a secret.
pub const REDACTED: &str = "[redacted]";

/// Shortest value redacted (shorter ones would mangle ordinary words).
pub const MIN_SECRET_LEN: usize = 6;

/// A secret value, wiped from memory when dropped.
type Secret = Zeroizing<String>;

fn operator_secrets() -> &'static RwLock<Vec<Secret>> {
    static S: OnceLock<RwLock<Vec<Secret>>> = OnceLock::new();
    S.get_or_init(|| RwLock::new(Vec::new()))
}

/// Secrets of live runs and requests, with how many guards hold each.
fn live_secrets() -> &'static Mutex<Vec<(Secret, usize)>> {
    static S: OnceLock<Mutex<Vec<(Secret, usize)>>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Vec::new()))
}

/// Registers a secret of the operator (the credential passphrase, an LLM API key from the
/// environment): from now on it is redacted from every log line and every tenant's output.
/// Never call this with a workspace's credential: give those to a [`Redactor`].
pub fn register_operator_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut s = operator_secrets()
        .write()
        .unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|v| v.as_str() == value) {
        s.push(Zeroizing::new(value.to_string()));
    }
}

/// Replaces every value of `secrets` in `text` by [`REDACTED`], longest first (a secret
/// containing another is replaced whole).
fn replace_all(text: &str, mut secrets: Vec<&str>) -> String {
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    let mut out = text.to_string();
    for v in secrets {
        if out.contains(v) {
            out = out.replace(v, REDACTED);
        }
    }
    out
}

/// `text` with the operator's secrets replaced by [`REDACTED`]. For text a tenant receives
/// outside a run (a JSON-RPC error), where another tenant's live secrets must not be
/// redacted (that would tell the caller what they are).
pub fn redact_operator(text: &str) -> String {
    let ops = operator_secrets().read().unwrap_or_else(|e| e.into_inner());
    replace_all(text, ops.iter().map(|v| v.as_str()).collect())
}

/// `text` with the operator's secrets and every live secret replaced by [`REDACTED`]: for
/// log lines (read by the operator only), never for what a tenant receives.
pub fn redact(text: &str) -> String {
    let ops = operator_secrets().read().unwrap_or_else(|e| e.into_inner());
    let live = live_secrets().lock().unwrap_or_else(|e| e.into_inner());
    let all = ops
        .iter()
        .map(|v| v.as_str())
        .chain(live.iter().map(|(v, _)| v.as_str()))
        .collect();
    replace_all(text, all)
}

/// The secrets of one workspace (plus, when redacting, the operator's): owned by a run or a
/// request, never global. Cheap to clone (the values are shared and zeroized when the last
/// clone is dropped). `Debug` shows only how many values it holds.
#[derive(Clone, Default)]
pub struct Redactor {
    own: Arc<Vec<Secret>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.own.len())
    }
}

impl Redactor {
    /// A redactor for these values (those shorter than [`MIN_SECRET_LEN`] are ignored,
    /// duplicates kept once).
    pub fn new<I, S>(values: I) -> Redactor
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut own: Vec<Secret> = Vec::new();
        for v in values {
            let v = v.as_ref();
            if v.len() >= MIN_SECRET_LEN && !own.iter().any(|o| o.as_str() == v) {
                own.push(Zeroizing::new(v.to_string()));
            }
        }
        Redactor { own: Arc::new(own) }
    }

    /// How many values of its own it holds (the operator's are not counted).
    pub fn len(&self) -> usize {
        self.own.len()
    }

    /// Whether it holds no value of its own.
    pub fn is_empty(&self) -> bool {
        self.own.is_empty()
    }

    /// `text` with this redactor's values and the operator's replaced by [`REDACTED`].
    pub fn redact(&self, text: &str) -> String {
        let ops = operator_secrets().read().unwrap_or_else(|e| e.into_inner());
        let all = self
            .own
            .iter()
            .chain(ops.iter())
            .map(|v| v.as_str())
            .collect();
        replace_all(text, all)
    }

    /// Redacts every string (and object key) inside a JSON value, in place: the values are
    /// redacted before serialization, so escaping cannot split a secret.
    pub fn redact_json(&self, v: &mut serde_json::Value) {
        use serde_json::Value;
        match v {
            Value::String(s) => {
                let r = self.redact(s);
                if r != *s {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_json(x)),
            Value::Object(m) => {
                let old = std::mem::take(m);
                for (k, mut x) in old {
                    self.redact_json(&mut x);
                    m.insert(self.redact(&k), x);
                }
            }
            _ => {}
        }
    }

    /// Registers this redactor's values with the log redactor until the guard is dropped
    /// (a run holds one for its whole life, so its secrets never reach a log line).
    pub fn live(&self) -> LiveGuard {
        let mut live = live_secrets().lock().unwrap_or_else(|e| e.into_inner());
        for v in self.own.iter() {
            match live.iter_mut().find(|(l, _)| l.as_str() == v.as_str()) {
                Some((_, n)) => *n = n.saturating_add(1),
                None => live.push((v.clone(), 1)),
            }
        }
        LiveGuard {
            own: Arc::clone(&self.own),
        }
    }
}

/// Keeps a [`Redactor`]'s values in the log redactor; dropping it removes (and zeroizes)
/// those no other guard holds.
#[must_use = "the values are unregistered when the guard is dropped"]
pub struct LiveGuard {
    own: Arc<Vec<Secret>>,
}

impl std::fmt::Debug for LiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveGuard({} secrets)", self.own.len())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = live_secrets().lock().unwrap_or_else(|e| e.into_inner());
        for v in self.own.iter() {
            if let Some(i) = live.iter().position(|(l, _)| l.as_str() == v.as_str()) {
                live[i].1 = live[i].1.saturating_sub(1);
                if live[i].1 == 0 {
                    live.swap_remove(i);
                }
            }
        }
    }
}

/// A log file rotated by size.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl RotatingFile {
    /// Opens (appending) `path`.
    pub fn open(path: PathBuf, max: u64, keep: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path,
            file,
            size,
            max,
            keep,
        })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.keep == 0 {
            self.file.set_len(0)?;
        } else {
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

struct Kv(Vec<(String, String)>);

impl<'k> log::kv::VisitSource<'k> for Kv {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'k>,
        value: log::kv::Value<'k>,
    ) -> Result<(), log::kv::Error> {
        self.0.push((key.to_string(), value.to_string()));
        Ok(())
    }
}

fn format_line(ts: &str, record: &log::Record<'_>, json: bool) -> String {
    let mut kv = Kv(Vec::new());
    let _ = record.key_values().visit(&mut kv);
    // Redact the message and each value before they are put together: in JSON a `"` or `\`
    // in a secret is escaped, and the escaped line no longer contains the secret.
    let msg = redact(&record.args().to_string());
    let kv: Vec<(String, String)> = kv.0.into_iter().map(|(k, v)| (k, redact(&v))).collect();
    if json {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), ts.into());
        obj.insert(
            "level".into(),
            record.level().as_str().to_ascii_lowercase().into(),
        );
        obj.insert("subsystem".into(), record.target().into());
        for (k, v) in kv {
            obj.insert(k, v.into());
        }
        obj.insert("msg".into(), msg.into());
        serde_json::Value::Object(obj).to_string()
    } else {
        let mut s = format!("{ts} {:<5} {}: {msg}", record.level(), record.target());
        for (k, v) in &kv {
            s.push_str(&format!(" {k}={v}"));
        }
        // A secret cut by the joins above (message, then fields) is caught here.
        redact(&s)
    }
}

/// Whether a record is a raw dump of HTTP bytes: `ureq_proto` logs every request at TRACE as
/// hex + ASCII rows of 16 bytes, which cut an API-key header across lines where the redactor
/// cannot see the key whole. Such records are never written, whatever the level asked.
fn is_wire_dump(record: &log::Record<'_>) -> bool {
    record.level() == log::Level::Trace && record.target().starts_with("ureq_proto")
}

static INIT: Mutex<bool> = Mutex::new(false);

/// Initializes logging once per process; later calls do nothing. Errors opening the log
/// file are returned (the caller reports them), never ignored silently.
pub fn init(cfg: &LogConfig) -> std::io::Result<()> {
    let mut done = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    if let Ok(k) = std::env::var("BULKHEAD_CREDENTIAL_KEY") {
        register_operator_secret(&k);
    }
    let json = cfg.json;
    let mut b = env_logger::Builder::new();
    b.parse_filters(&cfg.level);
    b.format(move |buf, record| {
        if is_wire_dump(record) {
            return Ok(());
        }
        let ts = buf.timestamp_millis().to_string();
        writeln!(buf, "{}", format_line(&ts, record, json))
    });
    if let Some(path) = &cfg.file {
        let f = RotatingFile::open(path.clone(), cfg.max_bytes, cfg.keep)?;
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = b.try_init();
    *done = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_secrets_are_redacted_longest_first() {
        register_operator_secret("hunter2-abcdef");
        register_operator_secret("abcdef");
        register_operator_secret("abc"); // too short: never redacted
        assert_eq!(
            redact("pw=hunter2-abcdef and abcdef, abc"),
            "pw=[redacted] and [redacted], abc"
        );
        assert_eq!(
            Redactor::default().redact("pw=hunter2-abcdef"),
            "pw=[redacted]"
        );
    }

    #[test]
    fn a_redactor_holds_its_own_workspace_only() {
        let a = Redactor::new(["alpha-secret-1"]);
        let b = Redactor::new(["bravo-secret-2", "bravo-secret-2", "short"]);
        assert_eq!(b.len(), 1, "duplicates kept once, short values dropped");
        let text = "alpha-secret-1 bravo-secret-2";
        assert_eq!(a.redact(text), "[redacted] bravo-secret-2");
        assert_eq!(b.redact(text), "alpha-secret-1 [redacted]");
        // Not live: the log redactor and the operator redactor know neither.
        assert_eq!(redact(text), text);
        assert_eq!(redact_operator(text), text);
        assert_eq!(format!("{b:?}"), "Redactor(1 secrets)");
    }

    #[test]
    fn live_values_are_redacted_from_logs_until_the_last_guard_drops() {
        let r = Redactor::new(["charlie-live-3"]);
        let g1 = r.live();
        let g2 = r.clone().live();
        assert_eq!(redact("x charlie-live-3"), "x [redacted]");
        // Live values are for logs: what a tenant receives never depends on them.
        assert_eq!(redact_operator("x charlie-live-3"), "x charlie-live-3");
        assert_eq!(
            Redactor::default().redact("x charlie-live-3"),
            "x charlie-live-3"
        );
        drop(g1);
        assert_eq!(redact("x charlie-live-3"), "x [redacted]");
        drop(g2);
        assert_eq!(redact("x charlie-live-3"), "x charlie-live-3");
    }

    #[test]
    fn json_values_are_redacted_in_place() {
        let r = Redactor::new(["delta-json-4"]);
        let mut v =
            serde_json::json!({"a": ["x delta-json-4", 1], "delta-json-4": {"b": "delta-json-4"}});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": ["x [redacted]", 1], "[redacted]": {"b": "[redacted]"}})
        );
    }

    #[test]
    fn json_log_lines_are_redacted_before_escaping() {
        let secret = r#"ec"ho\sec"#;
        let r = Redactor::new([secret]);
        let _g = r.live();
        let kvs: &[(&str, &str)] = &[("detail", r#"got ec"ho\sec back"#)];
        let args = format_args!("value {secret} seen");
        let rec = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("agent")
            .key_values(&kvs)
            .build();
        let line = format_line("T", &rec, true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["msg"], "value [redacted] seen", "{line}");
        assert_eq!(v["detail"], "got [redacted] back", "{line}");
        let escaped = serde_json::to_string(secret).unwrap();
        assert!(!line.contains(&escaped[1..escaped.len() - 1]), "{line}");
        assert!(!line.contains(secret), "{line}");
        let text = format_line("T", &rec, false);
        assert!(!text.contains(secret), "{text}");
    }

    #[test]
    fn json_lines_carry_subsystem_and_fields() {
        let kvs: &[(&str, &str)] = &[("workspace", "acme"), ("session", "s1")];
        let rec = log::Record::builder()
            .args(format_args!("started"))
            .level(log::Level::Info)
            .target("sandbox")
            .key_values(&kvs)
            .build();
        let line = format_line("2026-01-01T00:00:00.000Z", &rec, true);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["subsystem"], "sandbox");
        assert_eq!(v["workspace"], "acme");
        assert_eq!(v["session"], "s1");
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "started");
        let text = format_line("T", &rec, false);
        assert_eq!(text, "T INFO  sandbox: started workspace=acme session=s1");
    }

    #[test]
    fn rotation_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let mut f = RotatingFile::open(p.clone(), 100, 2).unwrap();
        for i in 0..50 {
            writeln!(f, "line {i:04} xxxxxxxxxxxxxxxxxxxx").unwrap();
        }
        assert!(p.exists());
        assert!(dir.path().join("b.log.1").exists());
        assert!(dir.path().join("b.log.2").exists());
        assert!(!dir.path().join("b.log.3").exists());
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        let last = std::fs::read_to_string(&p).unwrap();
        assert!(last.contains("line 0049"));
    }
}
