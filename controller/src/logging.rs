//! Logging: `log` + `env_logger`, configured from `config.toml` and `BULKHEAD_LOG_*`.
//!
//! - `BULKHEAD_LOG_LEVEL` (default `warn`), `BULKHEAD_LOG_FILE` (default stderr; rotated by
//!   size: `file`, `file.1` … `file.N`), `BULKHEAD_LOG_FORMAT=json` for one JSON object per
//!   line with `ts`, `level`, `subsystem` (the log target), `workspace`, `session`, `msg` and
//!   any other key-values.
//! - Secrets are redacted: every value registered with [`register_secret`] (credential
//!   values when decrypted, the credential passphrase) is replaced by `[redacted]` in every
//!   line before it is written, whatever the call site formatted.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, RwLock};

use crate::config::LogConfig;

/// The replacement for a secret.
pub const REDACTED: &str = "[redacted]";

/// Shortest value redacted (shorter ones would mangle ordinary words).
pub const MIN_SECRET_LEN: usize = 6;

fn secrets() -> &'static RwLock<Vec<String>> {
    static S: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    S.get_or_init(|| RwLock::new(Vec::new()))
}

/// Registers a secret value: from now on it never appears in a log line.
pub fn register_secret(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    // Poison-tolerant: a panic elsewhere must not switch redaction off for every tenant.
    {
        let mut s = secrets().write().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|v| v == value) {
            s.push(value.to_string());
            // Longest first, so a secret containing another is replaced whole.
            s.sort_by_key(|v| std::cmp::Reverse(v.len()));
        }
    }
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn redact(text: &str) -> String {
    let s = secrets().read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_string();
    for v in s.iter() {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), REDACTED);
        }
    }
    out
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
    let msg = record.args().to_string();
    let line = if json {
        let mut obj = serde_json::Map::new();
        obj.insert("ts".into(), ts.into());
        obj.insert(
            "level".into(),
            record.level().as_str().to_ascii_lowercase().into(),
        );
        obj.insert("subsystem".into(), record.target().into());
        for (k, v) in &kv.0 {
            obj.insert(k.clone(), v.clone().into());
        }
        obj.insert("msg".into(), msg.into());
        serde_json::Value::Object(obj).to_string()
    } else {
        let mut s = format!("{ts} {:<5} {}: {msg}", record.level(), record.target());
        for (k, v) in &kv.0 {
            s.push_str(&format!(" {k}={v}"));
        }
        s
    };
    redact(&line)
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
        register_secret(&k);
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
    fn secrets_are_redacted_longest_first() {
        register_secret("hunter2-abcdef");
        register_secret("abcdef");
        register_secret("abc"); // too short: never redacted
        assert_eq!(
            redact("pw=hunter2-abcdef and abcdef, abc"),
            "pw=[redacted] and [redacted], abc"
        );
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
