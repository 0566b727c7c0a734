//! Platform configuration: `config.toml` in the state directory, then environment overrides.
//!
//! ```toml
//! [log]
//! level = "info"                 # BULKHEAD_LOG_LEVEL (error, warn, info, debug, trace, or env_logger filters)
//! file = "/var/log/bulkhead.log" # BULKHEAD_LOG_FILE (default: stderr)
//! format = "text"                # BULKHEAD_LOG_FORMAT: text | json
//! max_bytes = 10485760           # rotate the log file past this size
//! keep = 3                       # rotated files kept (bulkhead.log.1 … .3)
//!
//! [limits]                       # defaults for new workspaces
//! memory = "512M"
//! pids = 256
//! cpu_weight = 100
//! tmp_size = "256M"
//! io_weight = 100                # best effort (io.weight / blkio.weight where present)
//! io_max = "wbps=50M,wiops=500"  # rbps wbps riops wiops; enforced or the sandbox is refused
//! # disk = "10G"                # each new workspace gets a filesystem of its own (root only)
//! # inodes = 500000
//!
//! [sandbox]
//! launcher = "/usr/libexec/bulkhead/bulkhead-launch"   # BULKHEAD_LAUNCH
//!
//! [credentials]
//! cipher = "aes-256-gcm"         # BULKHEAD_CREDENTIAL_CIPHER: aes-256-gcm | xchacha20poly1305
//!
//! [memory]
//! embedder = "local"             # BULKHEAD_MEMORY_EMBEDDER: local (built-in offline model) | none
//!                                #   (keyword-only) | hash | provider/model (openai/text-embedding-3-small, …)
//! embedding_base_url = "https://…"   # for an OpenAI-compatible provider/model (or to override one)
//! embedding_dims = 768           # for a provider model whose dimensions are not known
//! # operator-only, read from this file, never from the environment:
//! allow_loopback_embeddings = false  # let embedding providers reach 127.0.0.0/8 and ::1 (Ollama)
//! allow_private_embeddings = false   # let them reach 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
//! index_max_bytes_per_pass = "256M"  # `memory index` reads at most this much of notes per pass (1M-64G)
//! index_max_dir_entries = 10000      # entries looked at per directory of notes (1-1000000)
//!
//! [agent]                        # limits of subagents (spawn_subagents), for the CLI and JSON-RPC runs
//! subagent_concurrency = 4       # children running at once (1-64)
//! subagent_max_depth = 2         # a run at this depth spawns none (0 turns subagents off; at most 8)
//! subagent_max_children = 16     # children per top-level run, all levels together (0-1024)
//! subagent_timeout_secs = 600    # each child's time limit (1-86400)
//!
//! [network]                      # egress proxy; operator-only: this file, never the environment
//! deny = ["*.corp.example.com"]  # host patterns no workspace can allow (no port: every port)
//! allow_loopback = false         # let proxied connections reach the host's 127.0.0.0/8 and ::1
//! allow_private = false          # let them reach 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
//! resolve = ["pkg.test:127.0.0.1"]   # static answers before DNS (like curl --resolve)
//! max_connections_ceiling = 256  # no workspace's max_connections goes above this (1-4096)
//! max_connections_total = 1024   # proxied connections open at once in one process (503 beyond)
//!
//! [llm]                          # model servers (base URLs); operator-only: this file, never the environment
//! allow_loopback = false         # let model calls reach 127.0.0.0/8 and ::1 (a local Ollama, vLLM, llama.cpp)
//! allow_private = false          # let them reach 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
//!
//! [skills]                       # operator-only: this file, never the environment
//! allow_write_with_credentials = false   # let a skill declaring `workspace = "write"` and
//!                                #   credentials run (its secrets beside files the tenant wrote)
//! ```
//!
//! Unknown keys and bad values are errors naming the key and the file (or the variable).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
pub mod cipher;
pub mod limits;
pub mod subagents;

pub use limits::LimitsConfig;

/// Logging settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `env_logger` filter string.
    pub level: String,
    /// Log file (None: stderr).
    pub file: Option<PathBuf>,
    /// JSON lines instead of text.
    pub json: bool,
    /// Rotate past this many bytes.
    pub max_bytes: u64,
    /// Rotated files kept.
    pub keep: u32,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "warn".into(),
            file: None,
            json: false,
            max_bytes: 10 << 20,
            keep: 3,
        }
    }
}

/// `[llm]`: which non-public addresses the model servers of agent runs may be at (the SSRF
/// guard of [`crate::llm::http`]; metadata addresses never). Only from `config.toml`, like
/// the other settings that widen the guard, never from the environment or anything a tenant
/// or a workspace's settings can write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlmConfig {
    /// `[llm] allow_loopback`: `127.0.0.0/8` and `::1` (a model server on this host).
    pub allow_loopback: bool,
    /// `[llm] allow_private`: `10/8`, `172.16/12`, `192.168/16`, `100.64/10`, `fc00::/7`.
    pub allow_private: bool,
}

/// Everything `config.toml` and the environment can set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Logging.
    pub log: LogConfig,
    /// Default limits of new workspaces.
    pub limits: LimitsConfig,
    /// Launcher path.
    pub launcher: Option<PathBuf>,
    /// Cipher of credential files written (None: keep each file's; AES-256-GCM for new).
    pub credential_cipher: Option<cipher::Cipher>,
    /// `[llm]`: where model servers may be (operator-only, see [`LlmConfig`]).
    pub llm: LlmConfig,
    /// `[network]`: the operator's egress rules (see [`crate::net::egress`]). Only from
    /// `config.toml`, never from the environment or anything a tenant writes.
    pub network: crate::net::egress::OperatorNetwork,
    /// `[memory] allow_loopback_embeddings`: embedding endpoints on loopback allowed. Only
    /// from `config.toml` (no environment override), never from anything a tenant writes.
    pub allow_loopback_embeddings: bool,
    /// `[memory] allow_private_embeddings`: embedding endpoints on private ranges allowed.
    /// Only from `config.toml`.
    pub allow_private_embeddings: bool,
    /// `[memory] embedder`: the embedder of workspace memory (`None`: the built-in `local`
    /// model). See [`crate::memory::embedder_from_spec`] for the values.
    pub memory_embedder: Option<String>,
    /// `[memory] embedding_base_url`.
    pub embedding_base_url: Option<String>,
    /// `[memory] embedding_dims`.
    pub embedding_dims: Option<usize>,
    /// `[agent]`: limits of subagents for runs started by the CLI and the JSON-RPC server.
    pub subagents: subagents::SubagentOptions,
    /// `[skills] allow_write_with_credentials`: a skill that declares `workspace = "write"`
    /// and credentials may run. Only from `config.toml`, never from the environment.
    pub allow_write_with_credentials: bool,
    /// `[memory] index_*`: how much work one `memory index` pass does on tenant files.
    pub index: IndexLimits,
}

/// How much work one pass of the notes indexer (`memory index`) may do on a workspace's
/// files, which its sandbox writes: what is past a limit is reported as skipped (and read on
/// a later pass when the limit is bytes), never silently dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLimits {
    /// `[memory] index_max_bytes_per_pass`: bytes of notes read in one pass; a file past it
    /// waits for the next pass (its chunks stay). Unchanged files cost nothing.
    pub max_bytes_per_pass: u64,
    /// `[memory] index_max_dir_entries`: entries of one directory looked at; past it, the
    /// directory is reported and nothing is removed from the index in that pass.
    pub max_dir_entries: usize,
}

impl IndexLimits {
    /// Smallest `index_max_bytes_per_pass` (one note at the largest indexed size).
    pub const MIN_BYTES_PER_PASS: u64 = 1 << 20;
    /// Largest `index_max_bytes_per_pass`.
    pub const MAX_BYTES_PER_PASS: u64 = 64 << 30;
    /// Largest `index_max_dir_entries`.
    pub const MAX_DIR_ENTRIES: usize = 1_000_000;
}

impl Default for IndexLimits {
    fn default() -> Self {
        IndexLimits {
            max_bytes_per_pass: 256 << 20,
            max_dir_entries: 10_000,
        }
    }
}

/// The `config.toml` key that lets a skill with write access to the workspace hold
/// credentials (named in the refusal).
pub const ALLOW_WRITE_WITH_CREDENTIALS: &str = "[skills] allow_write_with_credentials";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    log: FileLog,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default)]
    sandbox: FileSandbox,
    #[serde(default)]
    credentials: FileCredentials,
    #[serde(default)]
    llm: FileLlm,
    #[serde(default)]
    network: FileNetwork,
    #[serde(default)]
    memory: FileMemory,
    #[serde(default)]
    agent: FileAgent,
    #[serde(default)]
    skills: FileSkills,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSkills {
    allow_write_with_credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAgent {
    subagent_concurrency: Option<usize>,
    subagent_max_depth: Option<usize>,
    subagent_max_children: Option<usize>,
    subagent_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMemory {
    embedder: Option<String>,
    embedding_base_url: Option<String>,
    embedding_dims: Option<usize>,
    allow_loopback_embeddings: Option<bool>,
    allow_private_embeddings: Option<bool>,
    index_max_bytes_per_pass: Option<String>,
    index_max_dir_entries: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNetwork {
    #[serde(default)]
    deny: Vec<String>,
    allow_loopback: Option<bool>,
    allow_private: Option<bool>,
    #[serde(default)]
    resolve: Vec<String>,
    max_connections_ceiling: Option<i64>,
    max_connections_total: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLlm {
    allow_loopback: Option<bool>,
    allow_private: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileCredentials {
    cipher: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<String>,
    file: Option<PathBuf>,
    format: Option<String>,
    max_bytes: Option<u64>,
    keep: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    memory: Option<String>,
    pids: Option<u32>,
    cpu_weight: Option<u32>,
    cpu_percent: Option<u32>,
    tmp_size: Option<String>,
    io_weight: Option<u32>,
    io_max: Option<String>,
    disk: Option<String>,
    inodes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSandbox {
    launcher: Option<PathBuf>,
}

fn bad(origin: &str, key: &str, detail: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{origin}: `{key}`: {detail}"))
}

fn check_level(origin: &str, key: &str, v: &str) -> Result<String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    // Accept a plain level or env_logger directives (`bulkhead=debug,warn`).
    let ok = !v.is_empty()
        && v.split(',').all(|d| {
            let lvl = d
                .rsplit('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            LEVELS.contains(&lvl.as_str())
                || (!d.contains('=')
                    && !d.trim().is_empty()
                    && d.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(
            origin,
            key,
            format!("{v:?} is not a log level (off, error, warn, info, debug, trace)"),
        ))
    }
}

fn check_format(origin: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        "text" => Ok(false),
        "json" => Ok(true),
        other => Err(bad(
            origin,
            key,
            format!("{other:?} is not a log format (text or json)"),
        )),
    }
}

fn check_embedder(origin: &str, key: &str, v: &str) -> Result<String> {
    check_embedder_spec(v)
        .map(|()| v.to_string())
        .map_err(|e| bad(origin, key, e))
}

fn size(origin: &str, key: &str, v: &str) -> Result<u64> {
    crate::util::parse_size(v).map_err(|e| bad(origin, key, e))
}

/// Checks the syntax of an embedder spec (not whether a provider is reachable).
pub fn check_embedder_spec(spec: &str) -> std::result::Result<(), String> {
    match spec {
        "local" | "none" | "hash" => Ok(()),
        s => match s.split_once('/') {
            Some((p, m))
                if !p.is_empty()
                    && !m.is_empty()
                    && s.len() <= 200
                    && s.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Ok(())
            }
            _ => Err(format!(
                "invalid embedder {s:?}: use local, none, hash or provider/model \
                 (e.g. openai/text-embedding-3-small, ollama/nomic-embed-text)"
            )),
        },
    }
}

impl Config {
    /// Reads `<state_dir>/config.toml` (if present), then applies the environment.
    pub fn load(state_dir: &Path) -> Result<Config> {
        let path = state_dir.join("config.toml");
        let mut cfg = match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path.display().to_string())?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Parses a config file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        let f: FileConfig = toml::from_str(text)
            .map_err(|e| Error::Invalid(format!("{origin}: {}", e.to_string().trim_end())))?;
        let mut cfg = Config::default();
        if let Some(v) = f.log.level {
            cfg.log.level = check_level(origin, "log.level", &v)?;
        }
        cfg.log.file = f.log.file;
        if let Some(v) = f.log.format {
            cfg.log.json = check_format(origin, "log.format", &v)?;
        }
        if let Some(v) = f.log.max_bytes {
            if v < 4096 {
                return Err(bad(origin, "log.max_bytes", "must be at least 4096"));
            }
            cfg.log.max_bytes = v;
        }
        if let Some(v) = f.log.keep {
            if v > 100 {
                return Err(bad(origin, "log.keep", "must be at most 100"));
            }
            cfg.log.keep = v;
        }
        cfg.limits.memory_bytes = f
            .limits
            .memory
            .as_deref()
            .map(|v| size(origin, "limits.memory", v))
            .transpose()?;
        cfg.limits.tmp_bytes = f
            .limits
            .tmp_size
            .as_deref()
            .map(|v| size(origin, "limits.tmp_size", v))
            .transpose()?;
        cfg.limits.disk_bytes = f
            .limits
            .disk
            .as_deref()
            .map(|v| size(origin, "limits.disk", v))
            .transpose()?;
        cfg.limits.inodes = f.limits.inodes;
        cfg.limits.pids = f.limits.pids;
        cfg.limits.cpu_weight = f.limits.cpu_weight;
        cfg.limits.cpu_percent = f.limits.cpu_percent;
        cfg.limits.io_weight = f.limits.io_weight;
        cfg.limits.io_max = f
            .limits
            .io_max
            .as_deref()
            .map(|v| v.parse().map_err(|e| bad(origin, "limits.io_max", e)))
            .transpose()?;
        let limits = cfg.limits.apply(bulkhead_policy::default_limits());
        limits::check_limits(&limits)
            .map_err(|e| Error::Invalid(format!("{origin}: [limits]: {e}")))?;
        cfg.launcher = f.sandbox.launcher;
        cfg.network = crate::net::egress::OperatorNetwork {
            deny: crate::net::egress::OperatorNetwork::parse_deny(
                &f.network.deny,
                &format!("{origin}: `network.deny`"),
            )?,
            allow_loopback: f.network.allow_loopback.unwrap_or(false),
            allow_private: f.network.allow_private.unwrap_or(false),
            resolve: crate::net::egress::OperatorNetwork::parse_resolve(
                &f.network.resolve,
                &format!("{origin}: `network.resolve`"),
            )?,
            max_connections_ceiling: crate::net::egress::OperatorNetwork::parse_ceiling(
                f.network.max_connections_ceiling,
                &format!("{origin}: `network.max_connections_ceiling`"),
            )?,
            max_connections_total: crate::net::egress::OperatorNetwork::parse_total(
                f.network.max_connections_total,
                &format!("{origin}: `network.max_connections_total`"),
            )?,
        };
        cfg.allow_write_with_credentials = f.skills.allow_write_with_credentials.unwrap_or(false);
        cfg.allow_loopback_embeddings = f.memory.allow_loopback_embeddings.unwrap_or(false);
        cfg.allow_private_embeddings = f.memory.allow_private_embeddings.unwrap_or(false);
        if let Some(v) = f.memory.embedder {
            cfg.memory_embedder = Some(check_embedder(origin, "memory.embedder", &v)?);
        }
        cfg.embedding_base_url = f.memory.embedding_base_url;
        if let Some(d) = f.memory.embedding_dims {
            if !(1..=65536).contains(&d) {
                return Err(bad(origin, "memory.embedding_dims", "must be 1 to 65536"));
            }
            cfg.embedding_dims = Some(d);
        }
        let range = |key: &str, v: Option<usize>, lo: usize, hi: usize| -> Result<Option<usize>> {
            match v {
                Some(n) if !(lo..=hi).contains(&n) => {
                    Err(bad(origin, key, format!("{n} is outside {lo}..={hi}")))
                }
                v => Ok(v),
            }
        };
        if let Some(v) = f.memory.index_max_bytes_per_pass.as_deref() {
            let key = "memory.index_max_bytes_per_pass";
            let n = size(origin, key, v)?;
            let (lo, hi) = (
                IndexLimits::MIN_BYTES_PER_PASS,
                IndexLimits::MAX_BYTES_PER_PASS,
            );
            if !(lo..=hi).contains(&n) {
                return Err(bad(
                    origin,
                    key,
                    format!("{n} bytes is outside 1M..=64G; give a size such as \"256M\""),
                ));
            }
            cfg.index.max_bytes_per_pass = n;
        }
        if let Some(n) = range(
            "memory.index_max_dir_entries",
            f.memory.index_max_dir_entries,
            1,
            IndexLimits::MAX_DIR_ENTRIES,
        )? {
            cfg.index.max_dir_entries = n;
        }
        let a = &f.agent;
        if let Some(n) = range("agent.subagent_concurrency", a.subagent_concurrency, 1, 64)? {
            cfg.subagents.concurrency = n;
        }
        if let Some(n) = range("agent.subagent_max_depth", a.subagent_max_depth, 0, 8)? {
            cfg.subagents.max_depth = n;
        }
        if let Some(n) = range(
            "agent.subagent_max_children",
            a.subagent_max_children,
            0,
            1024,
        )? {
            cfg.subagents.max_children = n;
        }
        let secs = a.subagent_timeout_secs.map(|s| s as usize);
        if let Some(n) = range("agent.subagent_timeout_secs", secs, 1, 86_400)? {
            cfg.subagents.task_timeout = Some(std::time::Duration::from_secs(n as u64));
        }
        cfg.llm = LlmConfig {
            allow_loopback: f.llm.allow_loopback.unwrap_or(false),
            allow_private: f.llm.allow_private.unwrap_or(false),
        };
        if let Some(v) = f.credentials.cipher {
            cfg.credential_cipher = Some(
                v.parse()
                    .map_err(|e| bad(origin, "credentials.cipher", e))?,
            );
        }
        Ok(cfg)
    }

    /// Applies `BULKHEAD_*` environment overrides (env wins over the file).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        if let Some(v) = get("BULKHEAD_LOG_LEVEL").filter(|v| !v.is_empty()) {
            self.log.level = check_level("environment", "BULKHEAD_LOG_LEVEL", &v)?;
        }
        if let Some(v) = get("BULKHEAD_LOG_FILE").filter(|v| !v.is_empty()) {
            self.log.file = Some(PathBuf::from(v));
        }
        if let Some(v) = get("BULKHEAD_LOG_FORMAT").filter(|v| !v.is_empty()) {
            self.log.json = check_format("environment", "BULKHEAD_LOG_FORMAT", &v)?;
        }
        if let Some(v) = get("BULKHEAD_LAUNCH").filter(|v| !v.is_empty()) {
            self.launcher = Some(PathBuf::from(v));
        }
        if let Some(v) = get("BULKHEAD_MEMORY_EMBEDDER").filter(|v| !v.is_empty()) {
            self.memory_embedder = Some(check_embedder(
                "environment",
                "BULKHEAD_MEMORY_EMBEDDER",
                &v,
            )?);
        }
        if let Some(v) = get("BULKHEAD_CREDENTIAL_CIPHER").filter(|v| !v.is_empty()) {
            self.credential_cipher = Some(
                v.parse()
                    .map_err(|e| bad("environment", "BULKHEAD_CREDENTIAL_CIPHER", e))?,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section() {
        let c = Config::parse(
            "[log]\nlevel = \"debug\"\nformat = \"json\"\nfile = \"/tmp/x.log\"\nmax_bytes = 8192\nkeep = 2\n[limits]\nmemory = \"1G\"\npids = 100\n[sandbox]\nlauncher = \"/opt/l\"\n",
            "config.toml",
        )
        .unwrap();
        assert_eq!(c.log.level, "debug");
        assert!(c.log.json);
        assert_eq!(c.log.keep, 2);
        assert_eq!(c.limits.memory_bytes, Some(1 << 30));
        assert_eq!(c.limits.pids, Some(100));
        assert_eq!(c.launcher.as_deref(), Some(Path::new("/opt/l")));
    }

    #[test]
    fn skills_write_with_credentials_is_off_unless_the_file_says_so() {
        assert!(
            !Config::parse("", "config.toml")
                .unwrap()
                .allow_write_with_credentials
        );
        let c = Config::parse("[skills]\nallow_write_with_credentials = true\n", "c.toml").unwrap();
        assert!(c.allow_write_with_credentials);
        let e = Config::parse("[skills]\nallow_write = true\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/s/config.toml") && e.contains("allow_write"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = Config::parse("[log]\nlevle = \"x\"\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/s/config.toml") && e.contains("levle"), "{e}");
        let e = Config::parse("[log]\nformat = \"xml\"\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.format") && e.contains("xml"), "{e}");
        let c = Config::parse(
            "[limits]\ndisk = \"64M\"\ninodes = 5000\n",
            "/s/config.toml",
        )
        .unwrap();
        assert_eq!(
            (c.limits.disk_bytes, c.limits.inodes),
            (Some(64 << 20), Some(5000))
        );
        let e = Config::parse("[limits]\ndisk = \"1M\"\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.disk_bytes"), "{e}");
        let e = Config::parse("[limits]\ninodes = 5000\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("inode limit needs a disk limit"), "{e}");
        let e = Config::parse("[limits]\nmemory = \"lots\"\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.memory"), "{e}");
        let e = Config::parse("[limits]\npids = 1\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pids"), "{e}");
        let e = Config::parse("[nope]\n", "/s/config.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn environment_wins_and_is_validated() {
        let mut c = Config::parse("[log]\nlevel = \"info\"\n", "f").unwrap();
        c.apply_env(|k| (k == "BULKHEAD_LOG_LEVEL").then(|| "trace".to_string()))
            .unwrap();
        assert_eq!(c.log.level, "trace");
        let e = c
            .apply_env(|k| (k == "BULKHEAD_LOG_FORMAT").then(|| "yaml".to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BULKHEAD_LOG_FORMAT"), "{e}");
    }

    #[test]
    fn index_limits_have_defaults_and_ranges() {
        let c = Config::parse("", "f").unwrap();
        assert_eq!(c.index, IndexLimits::default());
        let c = Config::parse(
            "[memory]\nindex_max_bytes_per_pass = \"1G\"\nindex_max_dir_entries = 50\n",
            "f",
        )
        .unwrap();
        assert_eq!(c.index.max_bytes_per_pass, 1 << 30);
        assert_eq!(c.index.max_dir_entries, 50);
        for bad in [
            "index_max_bytes_per_pass = \"1K\"",
            "index_max_bytes_per_pass = \"65G\"",
            "index_max_bytes_per_pass = \"lots\"",
            "index_max_dir_entries = 0",
        ] {
            let e = Config::parse(&format!("[memory]\n{bad}\n"), "f")
                .unwrap_err()
                .to_string();
            assert!(e.contains("memory.index_max"), "{bad}: {e}");
        }
    }
}
