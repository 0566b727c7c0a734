//! The per-workspace encrypted credential store: `workspaces/<id>/creds.enc`.
//!
//! A workspace holds named credential *sets* (`github` → `{token: …}`), encrypted at rest
//! under a key derived from the operator's passphrase. The controller decrypts them for
//! its own use (LLM calls, skills it runs); nothing here is ever sent to a sandbox, and the
//! sandbox client never touches this module.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use bulkhead::{CredentialKey, Platform, PlatformConfig, SecretString};
//! let platform = Platform::open(PlatformConfig::default())?;
//! let ws = platform.workspace("acme")?;
//! let key = CredentialKey::resolve(None)?; // --credential-key-file, else $BULKHEAD_CREDENTIAL_KEY
//! let mut creds = ws.credentials(&key)?; // decrypts (wrong key: CredError::WrongKey)
//! creds.set("github", BTreeMap::from([("token".to_string(), SecretString::from("ghp_…"))]))?;
//! let token = creds.get("github").and_then(|s| s.get("token"));
//! println!("{:?}", token); // Some([redacted])
//! # Ok::<(), bulkhead::Error>(())
//! ```
//!
//! # The passphrase
//! [`CredentialKey::resolve`]: the file given by `--credential-key-file PATH` (for systemd
//! credentials; trailing newlines stripped; a warning if other users can read it), else
//! `$BULKHEAD_CREDENTIAL_KEY`. Neither → [`CredError::NoKey`] (exit 7) naming both.
//!
//! # Names, keys and values
//! - set names: `[A-Za-z0-9_.-]{1,64}`;
//! - keys: `[A-Za-z_][A-Za-z0-9_]{0,127}`, and not one that would shadow the process
//!   environment of whatever receives the set as environment variables
//!   ([`SHADOWING_KEYS`] exactly, or a [`SHADOWING_PREFIXES`] prefix):
//!   `PATH HOME USER LOGNAME SHELL PWD OLDPWD TERM LANG LANGUAGE TMPDIR IFS ENV BASH_ENV
//!   SHELLOPTS BASHOPTS PS4 PROMPT_COMMAND PYTHONPATH PYTHONHOME PYTHONSTARTUP NODE_OPTIONS
//!   NODE_PATH PERL5LIB PERL5OPT RUBYLIB RUBYOPT GCONV_PATH GLIBC_TUNABLES NLSPATH LOCPATH
//!   HOSTALIASES RES_OPTIONS LOCALDOMAIN` and `LC_* LD_* MALLOC_* DYLD_* BULKHEAD_*`
//!   (loader, libc, shell and interpreter hooks, and bulkhead's own settings);
//! - values: UTF-8, at most 64 KiB each; names + keys + values of a workspace at most
//!   1 MiB in total.
//!
//! # The file
//! Every number big-endian; the header is everything before the ciphertext.
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `BHCREDS\0` |
//! | 8 | 2 | format version (1) |
//! | 10 | 1 | cipher id: 1 AES-256-GCM (default), 2 XChaCha20-Poly1305 |
//! | 11 | 1 | KDF id: 1 PBKDF2-HMAC-SHA512 |
//! | 12 | 4 | KDF iterations (written: 210,000 or more; read: 1 ..= 10,000,000) |
//! | 16 | 1 | salt length S (written 32; read 16 ..= 64) |
//! | 17 | 1 | nonce length N (12 for AES-GCM, 24 for XChaCha20) |
//! | 18 | 4 | ciphertext length C, tag included (16 ..= 8 MiB) |
//! | 22 | S | salt (random per file; kept while the key and KDF stay the same) |
//! | 22+S | N | nonce (random per write) |
//! | 22+S+N | C | ciphertext, then the 16-byte tag; the file ends exactly here |
//!
//! Associated data: `"bulkhead/creds/v1" 0x00 <workspace id> 0x00 <header bytes>`, so a
//! file copied into another workspace does not open there and any header change is
//! detected. The plaintext (payload version 1): `u8 1`, `u32` set count, then per set
//! `u8` name length, name, `u32` key count, then per key `u8` key length, key, `u32` value
//! length, value.
//!
//! A wrong passphrase, an altered, truncated or foreign file all give
//! [`CredError::WrongKey`] ("wrong credential key or damaged file", exit 6), and the
//! file is left as it was. Writes go through [`crate::state::write_atomic`] (temp file,
//! fsync, rename, directory fsync; mode 0600) under a per-workspace lock
//! (`.creds.lock`), so a crash leaves the old or the new file and concurrent writers do
//! not lose each other's sets.
//!
//! # Keys in memory
//! The key is derived once per process for each (passphrase, salt, iteration count) and
//! cached; the cache is keyed by an HMAC of the passphrase under a per-process random key.
//! Derived keys, passphrases, plaintext buffers and [`SecretString`]s are zeroized on drop.
//! The passphrase is registered with [`crate::logging::register_operator_secret`]. Decrypted
//! values are never registered globally: [`CredentialStore::redactor`] hands them to a
//! [`crate::logging::Redactor`] owned by the run or request that decrypted them, so one
//! workspace's values never change what another workspace sees, and they are gone (zeroized)
//! once that run ends, after `cred rm` or when the workspace is deleted.

pub mod cli;
mod envelope;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

pub use crate::error::CredError;
use crate::error::{Error, Result};
use crate::platform::{Platform, Workspace};
use crate::state::write_atomic;

#[doc(hidden)]
pub use envelope::{bench, DEFAULT_ITERATIONS, MAX_ITERATIONS};
pub use envelope::{clear_key_cache, Cipher, KdfParams};

/// File name of the store in a workspace directory.
pub const CREDS_FILE: &str = "creds.enc";
/// Lock file serializing writers of one workspace's store.
pub const LOCK_FILE: &str = ".creds.lock";
/// Environment variable holding the passphrase.
pub const KEY_ENV: &str = "BULKHEAD_CREDENTIAL_KEY";
/// Environment variable holding the new passphrase for `bulkhead cred rekey`.
pub const NEW_KEY_ENV: &str = "BULKHEAD_NEW_CREDENTIAL_KEY";
/// Environment variable choosing the cipher of files written from now on.
pub const CIPHER_ENV: &str = "BULKHEAD_CREDENTIAL_CIPHER";
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Most bytes of names, keys and values in one workspace.
pub const MAX_TOTAL_BYTES: usize = 1 << 20;
/// Longest set name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest key.
pub const MAX_KEY_LEN: usize = 128;
/// Largest passphrase file read.
const MAX_KEY_FILE: u64 = 64 << 10;

/// Keys refused because they would shadow a process's environment.
pub const SHADOWING_KEYS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "PWD",
    "OLDPWD",
    "TERM",
    "LANG",
    "LANGUAGE",
    "TMPDIR",
    "IFS",
    "ENV",
    "BASH_ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYLIB",
    "RUBYOPT",
    "GCONV_PATH",
    "GLIBC_TUNABLES",
    "NLSPATH",
    "LOCPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
];

/// Key prefixes refused for the same reason (locale, dynamic loader, malloc, macOS loader,
/// bulkhead's own settings).
pub const SHADOWING_PREFIXES: &[&str] = &["LC_", "LD_", "MALLOC_", "DYLD_", "BULKHEAD_"];

// ---------------------------------------------------------------------------------------
// SecretString

/// A secret string: `Debug` prints `[redacted]`, there is no `Display`, and the bytes are
/// zeroized on drop. Read it with [`SecretString::expose_secret`].
#[derive(Clone, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a string (moved, not copied).
    pub fn new(value: String) -> Self {
        SecretString(value)
    }

    /// The value. Do not log it, put it in an error, or send it to a sandbox.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// Same as [`SecretString::expose_secret`].
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for SecretString {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        SecretString(s)
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        SecretString(s.to_string())
    }
}

impl PartialEq for SecretString {
    /// Compares without an early exit on the first differing byte.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl Eq for SecretString {}

impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(SecretString)
    }
}

// ---------------------------------------------------------------------------------------
// CredentialKey

struct KeyInner {
    passphrase: Zeroizing<Vec<u8>>,
    fingerprint: [u8; 32],
    source: String,
}

/// The operator's passphrase (zeroized on drop; cheap to clone). `Debug` shows only where
/// it came from.
#[derive(Clone)]
pub struct CredentialKey(Arc<KeyInner>);

impl fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialKey([redacted] from {})", self.0.source)
    }
}

fn no_key(what: &str, env: &str, flag: &str) -> Error {
    CredError::NoKey(format!(
        "no {what}: set {env} or pass {flag} PATH (a file holding the passphrase, e.g. a systemd credential)"
    ))
    .into()
}

impl CredentialKey {
    /// A key from a passphrase held in memory.
    pub fn new(passphrase: impl AsRef<[u8]>) -> CredentialKey {
        Self::with_source(Zeroizing::new(passphrase.as_ref().to_vec()), "memory")
    }

    fn with_source(passphrase: Zeroizing<Vec<u8>>, source: &str) -> CredentialKey {
        if let Ok(s) = std::str::from_utf8(&passphrase) {
            crate::logging::register_operator_secret(s);
        }
        CredentialKey(Arc::new(KeyInner {
            fingerprint: envelope::fingerprint(&passphrase),
            passphrase,
            source: source.to_string(),
        }))
    }

    /// Where it came from (`$BULKHEAD_CREDENTIAL_KEY`, a file path, `memory`).
    pub fn source(&self) -> &str {
        &self.0.source
    }

    pub(crate) fn passphrase(&self) -> &[u8] {
        &self.0.passphrase
    }

    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.0.fingerprint
    }

    /// Reads the passphrase from a file: trailing newlines stripped, at most 64 KiB, a
    /// warning when other users may read it. Unreadable or empty → exit 7.
    pub fn from_file(path: &Path) -> Result<CredentialKey> {
        let fail = |detail: String| {
            Error::from(CredError::NoKey(format!(
                "cannot use the credential key file {}: {detail}",
                path.display()
            )))
        };
        let f = File::open(path).map_err(|e| fail(e.to_string()))?;
        let meta = f.metadata().map_err(|e| fail(e.to_string()))?;
        if meta.is_file() && meta.permissions().mode() & 0o004 != 0 {
            log::warn!(target: "creds",
                "credential key file {} is readable by every user; run chmod 600 on it",
                path.display());
        }
        let mut buf = Zeroizing::new(Vec::with_capacity(MAX_KEY_FILE as usize + 64));
        f.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut buf)
            .map_err(|e| fail(e.to_string()))?;
        if buf.len() as u64 > MAX_KEY_FILE {
            return Err(fail(format!("larger than {MAX_KEY_FILE} bytes")));
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        if buf.is_empty() {
            return Err(fail("the file is empty".into()));
        }
        Ok(Self::with_source(buf, &path.display().to_string()))
    }

    /// Reads the passphrase from environment variable `var`: `None` when unset or empty.
    pub fn from_env_var(var: &str) -> Option<CredentialKey> {
        let v = std::env::var_os(var)?;
        let bytes = Zeroizing::new(std::os::unix::ffi::OsStringExt::into_vec(v));
        if bytes.is_empty() {
            return None;
        }
        Some(Self::with_source(bytes, &format!("${var}")))
    }

    /// The passphrase: `file` (the `--credential-key-file` flag) if given, else
    /// `$BULKHEAD_CREDENTIAL_KEY`, else [`CredError::NoKey`] naming both.
    pub fn resolve(file: Option<&Path>) -> Result<CredentialKey> {
        match file {
            Some(f) => Self::from_file(f),
            None => Self::from_env_var(KEY_ENV)
                .ok_or_else(|| no_key("credential key", KEY_ENV, "--credential-key-file")),
        }
    }

    /// The new passphrase of a rekey: `file` (`--new-key-file`) if given, else
    /// `$BULKHEAD_NEW_CREDENTIAL_KEY`, else [`CredError::NoKey`] naming both.
    pub fn resolve_new(file: Option<&Path>) -> Result<CredentialKey> {
        match file {
            Some(f) => Self::from_file(f),
            None => Self::from_env_var(NEW_KEY_ENV)
                .ok_or_else(|| no_key("new credential key", NEW_KEY_ENV, "--new-key-file")),
        }
    }
}

impl From<&str> for CredentialKey {
    fn from(passphrase: &str) -> Self {
        CredentialKey::new(passphrase)
    }
}

impl From<String> for CredentialKey {
    fn from(passphrase: String) -> Self {
        CredentialKey::with_source(Zeroizing::new(passphrase.into_bytes()), "memory")
    }
}

// ---------------------------------------------------------------------------------------
// Options

/// How files are written. `None` fields keep what the existing file uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CredentialOptions {
    /// Cipher of files written (None: the file's, or AES-256-GCM for a new file).
    pub cipher: Option<Cipher>,
    /// KDF of files written (None: the file's if at least the default, else the default
    /// 210,000 iterations: a weak file is strengthened on its next write, a strong one is
    /// never weakened).
    pub kdf: Option<KdfParams>,
}

impl CredentialOptions {
    /// The cipher from `$BULKHEAD_CREDENTIAL_CIPHER` (`aes-256-gcm` or
    /// `xchacha20poly1305`); an unknown name is an error naming the variable.
    pub fn from_env() -> Result<CredentialOptions> {
        let cipher = match std::env::var(CIPHER_ENV) {
            Ok(v) if !v.is_empty() => Some(
                v.parse::<Cipher>()
                    .map_err(|e| Error::Invalid(format!("environment: {CIPHER_ENV}: {e}")))?,
            ),
            _ => None,
        };
        Ok(CredentialOptions { cipher, kdf: None })
    }

    /// The platform's setting: `[credentials] cipher` in `config.toml`, overridden by
    /// `$BULKHEAD_CREDENTIAL_CIPHER`.
    pub fn for_state_dir(state_dir: &Path) -> Result<CredentialOptions> {
        let cfg = crate::config::Config::load(state_dir)?;
        Ok(CredentialOptions {
            cipher: cfg.credential_cipher,
            kdf: None,
        })
    }

    /// Sets the cipher.
    pub fn with_cipher(mut self, cipher: Cipher) -> Self {
        self.cipher = Some(cipher);
        self
    }

    /// Sets the KDF.
    pub fn with_kdf(mut self, kdf: KdfParams) -> Self {
        self.kdf = Some(kdf);
        self
    }
}

// ---------------------------------------------------------------------------------------
// Validation

/// Checks a set name: `[A-Za-z0-9_.-]{1,64}`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "credential set name {name:?} is invalid: names must match [A-Za-z0-9_.-]{{1,64}}"
        )))
    }
}

/// Checks a key's syntax: `[A-Za-z_][A-Za-z0-9_]{0,127}`.
fn validate_key_syntax(key: &str) -> Result<()> {
    let b = key.as_bytes();
    let ok = (1..=MAX_KEY_LEN).contains(&b.len())
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "credential key {key:?} is invalid: keys must match [A-Za-z_][A-Za-z0-9_]{{0,127}}"
        )))
    }
}

/// Whether `key` would shadow process environment ([`SHADOWING_KEYS`],
/// [`SHADOWING_PREFIXES`]).
pub fn shadows_environment(key: &str) -> bool {
    SHADOWING_KEYS.contains(&key) || SHADOWING_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Checks a key: syntax, then that it does not shadow the process environment.
pub fn validate_key(key: &str) -> Result<()> {
    validate_key_syntax(key)?;
    if shadows_environment(key) {
        return Err(Error::Invalid(format!(
            "credential key {key:?} would shadow the process environment variable {key} and is refused; \
             refused keys: {}, {}",
            SHADOWING_KEYS.join(", "),
            SHADOWING_PREFIXES
                .iter()
                .map(|p| format!("{p}*"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

/// Checks one value's size (never its content in an error).
fn validate_value(key: &str, value: &SecretString) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::Invalid(format!(
            "the value of credential key {key:?} is {} bytes; the limit is {MAX_VALUE_BYTES} (64 KiB)",
            value.len()
        )));
    }
    Ok(())
}

type Set = BTreeMap<String, SecretString>;
type Sets = BTreeMap<String, Set>;

fn set_size(name: &str, set: &Set) -> usize {
    name.len() + set.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
}

fn total_size(sets: &Sets) -> usize {
    sets.iter().map(|(n, s)| set_size(n, s)).sum()
}

// ---------------------------------------------------------------------------------------
// Payload

const PAYLOAD_VERSION: u8 = 1;

fn encoded_len(sets: &Sets) -> usize {
    1 + 4
        + sets
            .iter()
            .map(|(n, s)| {
                1 + n.len()
                    + 4
                    + s.iter()
                        .map(|(k, v)| 1 + k.len() + 4 + v.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
}

/// The plaintext, in a buffer with room for the tag (so sealing never reallocates it).
fn encode(sets: &Sets) -> Zeroizing<Vec<u8>> {
    let mut b = Zeroizing::new(Vec::with_capacity(encoded_len(sets) + envelope::TAG_LEN));
    b.push(PAYLOAD_VERSION);
    b.extend_from_slice(&(sets.len() as u32).to_be_bytes());
    for (name, set) in sets {
        b.push(name.len() as u8);
        b.extend_from_slice(name.as_bytes());
        b.extend_from_slice(&(set.len() as u32).to_be_bytes());
        for (k, v) in set {
            b.push(k.len() as u8);
            b.extend_from_slice(k.as_bytes());
            b.extend_from_slice(&(v.len() as u32).to_be_bytes());
            b.extend_from_slice(v.expose_secret().as_bytes());
        }
    }
    b
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("payload truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> std::result::Result<usize, String> {
        Ok(usize::from(self.take(1)?[0]))
    }
    fn u32(&mut self) -> std::result::Result<usize, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn str(&mut self, n: usize) -> std::result::Result<&'a str, String> {
        std::str::from_utf8(self.take(n)?).map_err(|_| "payload holds invalid UTF-8".to_string())
    }
}

/// Decodes an authenticated plaintext. Keys are checked for syntax only (not the shadowing
/// list), so a list grown in a later release never locks an operator out of a file.
fn decode(plain: &[u8]) -> std::result::Result<Sets, String> {
    let mut c = Cursor(plain);
    if c.u8()? != usize::from(PAYLOAD_VERSION) {
        return Err("unknown payload version".into());
    }
    let mut sets = Sets::new();
    let n_sets = c.u32()?;
    for _ in 0..n_sets {
        let n = c.u8()?;
        let name = c.str(n)?;
        validate_name(name).map_err(|e| e.to_string())?;
        let mut set = Set::new();
        let n_keys = c.u32()?;
        for _ in 0..n_keys {
            let n = c.u8()?;
            let key = c.str(n)?;
            validate_key_syntax(key).map_err(|e| e.to_string())?;
            let n = c.u32()?;
            if n > MAX_VALUE_BYTES {
                return Err(format!("value of {key:?} exceeds {MAX_VALUE_BYTES} bytes"));
            }
            let value = SecretString(c.str(n)?.to_string());
            if set.insert(key.to_string(), value).is_some() {
                return Err(format!("key {key:?} twice in set {name:?}"));
            }
        }
        if sets.insert(name.to_string(), set).is_some() {
            return Err(format!("set {name:?} twice"));
        }
    }
    if !c.0.is_empty() {
        return Err("trailing bytes after the payload".into());
    }
    Ok(sets)
}

// ---------------------------------------------------------------------------------------
// The store

#[derive(Clone, PartialEq, Eq)]
struct FileParams {
    cipher: Cipher,
    kdf: KdfParams,
    salt: Vec<u8>,
}

/// One workspace's credentials, decrypted in memory.
///
/// Every change ([`set`](Self::set), [`remove`](Self::remove), [`rekey`](Self::rekey)) takes
/// the workspace's credential lock, re-reads the file (so another process's changes are
/// kept), applies the change and rewrites the file atomically before returning.
pub struct CredentialStore {
    workspace: String,
    dir: PathBuf,
    key: CredentialKey,
    options: CredentialOptions,
    file: Option<FileParams>,
    sets: Sets,
}

impl fmt::Debug for CredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialStore")
            .field("workspace", &self.workspace)
            .field("path", &self.path())
            .field("sets", &self.list())
            .finish_non_exhaustive()
    }
}

/// Reads a file whole (capped); `None` when it does not exist.
fn read_capped(path: &Path, cap: usize) -> Result<Option<Vec<u8>>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut data = Vec::new();
    f.take(cap as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(data))
}

fn wrong_key(path: &Path, detail: impl Into<String>) -> Error {
    CredError::WrongKey {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
    .into()
}

const AUTH_FAILED: &str = "authentication failed: the key is wrong, or the file was altered, \
     truncated or copied from another workspace";

/// Decrypts file bytes under `key`.
fn decrypt(
    path: &Path,
    data: &[u8],
    workspace: &str,
    key: &CredentialKey,
) -> Result<(FileParams, Sets)> {
    if data.len() > envelope::MAX_FILE {
        return Err(wrong_key(
            path,
            format!("larger than {} bytes", envelope::MAX_FILE),
        ));
    }
    let (header, plain) = envelope::open(data, workspace, key).map_err(|e| match e {
        envelope::OpenError::Malformed(d) => wrong_key(path, d),
        envelope::OpenError::Auth => wrong_key(path, AUTH_FAILED),
    })?;
    let sets = decode(&plain).map_err(|detail| Error::Corrupt {
        path: path.to_path_buf(),
        detail: format!("credential payload: {detail}"),
    })?;
    Ok((
        FileParams {
            cipher: header.cipher,
            kdf: header.kdf,
            salt: header.salt,
        },
        sets,
    ))
}

/// The exclusive credential lock of a workspace directory.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<File>> {
    crate::state::lock_exclusive(&dir.join(LOCK_FILE))
}

impl CredentialStore {
    /// Opens the store of workspace `workspace_id` whose directory is `dir`, decrypting
    /// `creds.enc` if it exists (a missing file is an empty store).
    pub fn open(
        dir: &Path,
        workspace_id: &str,
        key: &CredentialKey,
        options: CredentialOptions,
    ) -> Result<CredentialStore> {
        let mut s = CredentialStore {
            workspace: workspace_id.to_string(),
            dir: dir.to_path_buf(),
            key: key.clone(),
            options,
            file: None,
            sets: Sets::new(),
        };
        s.reload()?;
        Ok(s)
    }

    /// Path of `creds.enc`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(CREDS_FILE)
    }

    /// Workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// Cipher of the file on disk (None: no file yet).
    pub fn cipher(&self) -> Option<Cipher> {
        self.file.as_ref().map(|f| f.cipher)
    }

    /// KDF parameters of the file on disk (None: no file yet).
    pub fn kdf(&self) -> Option<KdfParams> {
        self.file.as_ref().map(|f| f.kdf)
    }

    /// Re-reads the file.
    pub fn reload(&mut self) -> Result<()> {
        let path = self.path();
        match read_capped(&path, envelope::MAX_FILE)? {
            None => {
                self.file = None;
                self.sets = Sets::new();
            }
            Some(data) => {
                let (file, sets) = decrypt(&path, &data, &self.workspace, &self.key)?;
                self.file = Some(file);
                self.sets = sets;
            }
        }
        Ok(())
    }

    /// The set `name`, if present.
    pub fn get(&self, name: impl AsRef<str>) -> Option<&BTreeMap<String, SecretString>> {
        self.sets.get(name.as_ref())
    }

    /// A redactor holding every value of every set (this workspace's secrets only; the
    /// operator's are added when it redacts). Hold it, and a [`Redactor::live`] guard for log
    /// lines, for as long as the values may appear in output.
    ///
    /// [`Redactor::live`]: crate::logging::Redactor::live
    pub fn redactor(&self) -> crate::logging::Redactor {
        crate::logging::Redactor::new(
            self.sets
                .values()
                .flat_map(|s| s.values())
                // Keys are read trimmed (llm::keys): redact both forms.
                .flat_map(|v| [v.expose_secret(), v.expose_secret().trim()]),
        )
    }

    /// Names and keys of every set, sorted (never values).
    pub fn list(&self) -> Vec<(String, Vec<String>)> {
        self.sets
            .iter()
            .map(|(n, s)| (n.clone(), s.keys().cloned().collect()))
            .collect()
    }

    /// Stores set `name` (replacing one of that name) and rewrites the file.
    pub fn set(
        &mut self,
        name: impl AsRef<str>,
        values: BTreeMap<String, SecretString>,
    ) -> Result<()> {
        let name = name.as_ref();
        validate_name(name)?;
        for (k, v) in &values {
            validate_key(k)?;
            validate_value(k, v)?;
        }
        let _lock = lock(&self.dir)?;
        self.reload()?;
        let old = self.sets.get(name).map_or(0, |s| set_size(name, s));
        let total = total_size(&self.sets) - old + set_size(name, &values);
        if total > MAX_TOTAL_BYTES {
            return Err(Error::Invalid(format!(
                "the credentials of workspace {:?} would take {total} bytes (names, keys and values); the limit is {MAX_TOTAL_BYTES} (1 MiB)",
                self.workspace
            )));
        }
        self.sets.insert(name.to_string(), values);
        self.write_locked()?;
        log::info!(target: "creds", workspace = self.workspace.as_str(); "stored credential set {name}");
        Ok(())
    }

    /// Removes set `name` and rewrites the file; `false` (and no write) when there is none.
    pub fn remove(&mut self, name: impl AsRef<str>) -> Result<bool> {
        let name = name.as_ref();
        let _lock = lock(&self.dir)?;
        self.reload()?;
        if self.sets.remove(name).is_none() {
            return Ok(false);
        }
        self.write_locked()?;
        log::info!(target: "creds", workspace = self.workspace.as_str(); "removed credential set {name}");
        Ok(true)
    }

    /// Re-encrypts the file under `new_key`; this store uses `new_key` from then on.
    pub fn rekey(&mut self, new_key: &CredentialKey) -> Result<()> {
        let _lock = lock(&self.dir)?;
        self.reload()?;
        self.key = new_key.clone();
        self.write_locked()
    }

    /// Encrypts and writes `self.sets`; the caller holds the lock.
    fn write_locked(&mut self) -> Result<()> {
        let cipher = self
            .options
            .cipher
            .or(self.file.as_ref().map(|f| f.cipher))
            .unwrap_or_default();
        let kdf = self.options.kdf.unwrap_or_else(|| match &self.file {
            Some(f) if f.kdf.iterations() >= DEFAULT_ITERATIONS => f.kdf,
            _ => KdfParams::default(),
        });
        let salt = match &self.file {
            // Same key material and KDF: keep the salt, so the cached key serves the write.
            Some(f) if f.cipher == cipher && f.kdf == kdf => f.salt.clone(),
            _ => envelope::random(envelope::SALT_LEN).map_err(|e| Error::io(self.path(), e))?,
        };
        let derived = envelope::derive(&self.key, &salt, kdf);
        let bytes = envelope::seal(
            cipher,
            kdf,
            &salt,
            &derived,
            &self.workspace,
            encode(&self.sets),
        )
        .map_err(|e| Error::io(self.path(), e))?;
        self.remove_stale_temp_files();
        write_atomic(&self.path(), &bytes, 0o600)?;
        self.file = Some(FileParams { cipher, kdf, salt });
        Ok(())
    }

    /// Temp files of writers killed mid-write (only writers holding the lock make them, and
    /// we hold it now).
    fn remove_stale_temp_files(&self) {
        let prefix = format!(".{CREDS_FILE}.tmp.");
        if let Ok(rd) = fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Workspace and platform entry points

impl Workspace {
    /// Path of the workspace's `creds.enc`.
    pub fn credentials_path(&self) -> PathBuf {
        self.dir().join(CREDS_FILE)
    }

    /// Opens (decrypts) the workspace's credential store with `key`, writing with the
    /// platform's cipher setting (`[credentials] cipher` in `config.toml`, or
    /// `$BULKHEAD_CREDENTIAL_CIPHER`) and the default KDF. A wrong key or a damaged file is
    /// [`CredError::WrongKey`]; a missing file is an empty store.
    pub fn credentials(&self, key: &CredentialKey) -> Result<CredentialStore> {
        let options = CredentialOptions::for_state_dir(self.state_root())?;
        self.credentials_with(key, options)
    }

    /// [`Workspace::credentials`] with explicit options (cipher, KDF).
    pub fn credentials_with(
        &self,
        key: &CredentialKey,
        options: CredentialOptions,
    ) -> Result<CredentialStore> {
        CredentialStore::open(&self.dir(), self.id(), key, options)
    }
}

/// What [`rekey_workspace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyOutcome {
    /// Re-encrypted from the old key to the new one.
    Rekeyed,
    /// The file already opens with the new key.
    AlreadyNewKey,
    /// The workspace has no `creds.enc`.
    NoCredentials,
}

/// Moves one workspace's file to `new`: tries `new` first (a rerun after an interruption
/// finds the files already done), then `old`, and rewrites atomically under the lock.
pub fn rekey_workspace(
    ws: &Workspace,
    old: &CredentialKey,
    new: &CredentialKey,
    options: CredentialOptions,
) -> Result<RekeyOutcome> {
    let dir = ws.dir();
    let path = ws.credentials_path();
    let _lock = lock(&dir)?;
    let Some(data) = read_capped(&path, envelope::MAX_FILE)? else {
        return Ok(RekeyOutcome::NoCredentials);
    };
    // A malformed file opens under no key: say so rather than "neither key".
    if data.len() > envelope::MAX_FILE {
        return Err(wrong_key(&path, "larger than any credential file"));
    }
    envelope::Header::parse(&data).map_err(|d| wrong_key(&path, d))?;
    match decrypt(&path, &data, ws.id(), new) {
        Ok(_) => return Ok(RekeyOutcome::AlreadyNewKey),
        Err(Error::Cred(CredError::WrongKey { .. })) => {}
        Err(e) => return Err(e),
    }
    let (file, sets) = decrypt(&path, &data, ws.id(), old).map_err(|e| match e {
        Error::Cred(CredError::WrongKey { path, .. }) => wrong_key(
            &path,
            "neither the new nor the old credential key opens it (or it was altered)",
        ),
        e => e,
    })?;
    let mut store = CredentialStore {
        workspace: ws.id().to_string(),
        dir,
        key: new.clone(),
        options,
        file: Some(file),
        sets,
    };
    store.write_locked()?;
    log::info!(target: "creds", workspace = ws.id(); "credentials rekeyed");
    Ok(RekeyOutcome::Rekeyed)
}

/// What [`rekey_all`] did, workspace by workspace.
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// Re-encrypted now.
    pub rekeyed: Vec<String>,
    /// Already under the new key.
    pub already_new_key: Vec<String>,
    /// Without a `creds.enc`.
    pub no_credentials: Vec<String>,
    /// Failed (the file is untouched).
    pub failed: Vec<(String, Error)>,
}

/// Rekeys every workspace of the platform; one failure does not stop the others.
pub fn rekey_all(
    platform: &Platform,
    old: &CredentialKey,
    new: &CredentialKey,
) -> Result<RekeyReport> {
    let options = CredentialOptions::for_state_dir(platform.state_dir())?;
    let mut report = RekeyReport::default();
    for ws in platform.list_workspaces()? {
        let id = ws.id().to_string();
        match rekey_workspace(&ws, old, new, options) {
            Ok(RekeyOutcome::Rekeyed) => report.rekeyed.push(id),
            Ok(RekeyOutcome::AlreadyNewKey) => report.already_new_key.push(id),
            Ok(RekeyOutcome::NoCredentials) => report.no_credentials.push(id),
            Err(e) => report.failed.push((id, e)),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Set {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
            .collect()
    }

    #[test]
    fn secret_string_is_redacted() {
        let s = SecretString::from("hunter2-canary");
        assert_eq!(format!("{s:?}"), "[redacted]");
        let m = set(&[("token", "hunter2-canary")]);
        assert!(!format!("{m:?}").contains("hunter2"));
        assert_eq!(s, SecretString::from("hunter2-canary"));
        assert_ne!(s, SecretString::from("hunter2-canarx"));
        let k = CredentialKey::new("pass-canary");
        assert!(!format!("{k:?}").contains("pass-canary"));
    }

    #[test]
    fn names_and_keys() {
        for ok in ["github", "a", "A.b-c_d", &"x".repeat(64)] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("[A-Za-z0-9_.-]{1,64}"), "{e}");
        }
        for ok in [
            "token",
            "_x",
            "GITHUB_TOKEN",
            "a1",
            &"k".repeat(128),
            "LCX",
            "PATHX",
        ] {
            validate_key(ok).unwrap();
        }
        for bad in ["", "1a", "a-b", "a.b", "a b", &"k".repeat(129)] {
            let e = validate_key(bad).unwrap_err().to_string();
            assert!(e.contains("[A-Za-z_][A-Za-z0-9_]{0,127}"), "{e}");
        }
        for bad in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LC_ALL",
            "MALLOC_ARENA_MAX",
            "DYLD_INSERT_LIBRARIES",
            "BULKHEAD_CREDENTIAL_KEY",
            "BASH_ENV",
            "IFS",
            "NODE_OPTIONS",
            "GCONV_PATH",
        ] {
            let e = validate_key(bad).unwrap_err().to_string();
            assert!(e.contains("shadow"), "{e}");
        }
    }

    #[test]
    fn payload_round_trip() {
        let mut sets = Sets::new();
        sets.insert("github".into(), set(&[("token", "t"), ("user", "ü€")]));
        sets.insert("empty".into(), Set::new());
        let b = encode(&sets);
        assert_eq!(b.len(), encoded_len(&sets));
        assert!(b.capacity() >= b.len() + envelope::TAG_LEN);
        let back = decode(&b).unwrap();
        assert_eq!(back, sets);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn store_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let key = CredentialKey::new("correct horse");
        let opts = CredentialOptions::default().with_kdf(KdfParams::insecure_for_tests(10));
        let mut s = CredentialStore::open(dir.path(), "acme", &key, opts).unwrap();
        assert!(s.list().is_empty());
        s.set("github", set(&[("token", "abc")])).unwrap();
        let s2 = CredentialStore::open(dir.path(), "acme", &key, opts).unwrap();
        assert_eq!(s2.get("github").unwrap()["token"].expose_secret(), "abc");
        assert_eq!(s2.cipher(), Some(Cipher::Aes256Gcm));
        // Another workspace id, a wrong key: refused.
        let e = CredentialStore::open(dir.path(), "other", &key, opts).unwrap_err();
        assert!(matches!(e, Error::Cred(CredError::WrongKey { .. })), "{e}");
        let e =
            CredentialStore::open(dir.path(), "acme", &CredentialKey::new("x"), opts).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::WRONG_CREDENTIAL_KEY);
        assert!(e
            .to_string()
            .contains("wrong credential key or damaged file"));
        assert!(s.remove("github").unwrap());
        assert!(!s.remove("github").unwrap());
    }
}
