//! `bulkhead cred …`: set, list, rm, rekey. Values are never printed, and never echoed in
//! an error (a malformed argument is named by its position, a JSON error by line and
//! column).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::json;
use zeroize::Zeroizing;

use super::{
    rekey_all, validate_key, validate_name, validate_value, CredentialKey, SecretString,
    MAX_TOTAL_BYTES,
};
use crate::error::{exit, Error, Result};
use crate::platform::Platform;

/// Largest `--from-json` input (JSON escapes can make 1 MiB of values several MiB).
const MAX_JSON_BYTES: usize = 8 * MAX_TOTAL_BYTES;

/// `bulkhead cred` subcommands.
#[derive(Debug, Subcommand)]
pub enum CredCmd {
    /// Store a named credential set in a workspace (replaces a set of that name).
    #[command(after_help = "\
The passphrase comes from --credential-key-file PATH or $BULKHEAD_CREDENTIAL_KEY.
Values given as KEY=VALUE show in `ps` and shell history: prefer --from-json.

Examples:
  bulkhead cred set acme github --from-json - < github.json    # {\"token\": \"ghp_…\"}
  bulkhead --credential-key-file /run/credentials/bh/key cred set acme ci USER=bot")]
    Set {
        /// Workspace id.
        id: String,
        /// Set name: [A-Za-z0-9_.-]{1,64}.
        name: String,
        /// Keys and values; keys match [A-Za-z_][A-Za-z0-9_]{0,127} and may not shadow
        /// process environment (PATH, HOME, LD_*, LC_*, BULKHEAD_*, …).
        #[arg(value_name = "KEY=VALUE")]
        pairs: Vec<String>,
        /// Read a JSON object {"KEY": "VALUE", …} from PATH, or from stdin with `-`.
        #[arg(long, value_name = "PATH|-")]
        from_json: Option<PathBuf>,
    },
    /// List a workspace's credential sets and their keys (never values).
    #[command(
        after_help = "Examples:\n  bulkhead cred list acme\n  bulkhead --json cred list acme"
    )]
    List {
        /// Workspace id.
        id: String,
    },
    /// Remove a credential set from a workspace.
    #[command(after_help = "Example:\n  bulkhead cred rm acme github")]
    Rm {
        /// Workspace id.
        id: String,
        /// Set name.
        name: String,
    },
    /// Re-encrypt every workspace's credentials under a new passphrase.
    #[command(after_help = "\
The old passphrase comes from --credential-key-file or $BULKHEAD_CREDENTIAL_KEY, the new one
from --new-key-file or $BULKHEAD_NEW_CREDENTIAL_KEY. Each file is rewritten atomically; an
interrupted rekey is completed by running it again (files already on the new key are left).

Example:
  bulkhead --credential-key-file old.key cred rekey --new-key-file new.key")]
    Rekey {
        /// File holding the new passphrase (trailing newlines stripped).
        #[arg(long, value_name = "PATH")]
        new_key_file: Option<PathBuf>,
    },
}

/// Runs one `cred` subcommand; `key_file` is the global `--credential-key-file`.
pub fn run(p: &Platform, cmd: CredCmd, json: bool, key_file: Option<&Path>) -> Result<i32> {
    match cmd {
        CredCmd::Set {
            id,
            name,
            pairs,
            from_json,
        } => {
            let ws = p.workspace(&id)?;
            validate_name(&name)?;
            let values = collect_values(&pairs, from_json.as_deref())?;
            let key = CredentialKey::resolve(key_file)?;
            let mut store = ws.credentials(&key)?;
            let keys: Vec<String> = values.keys().cloned().collect();
            store.set(&name, values)?;
            if json {
                println!("{}", json!({"workspace": id, "name": name, "keys": keys}));
            } else {
                println!(
                    "stored credential set {name} in workspace {id} (keys: {})",
                    keys.join(", ")
                );
            }
            Ok(exit::OK)
        }
        CredCmd::List { id } => {
            let ws = p.workspace(&id)?;
            let key = CredentialKey::resolve(key_file)?;
            let store = ws.credentials(&key)?;
            let list = store.list();
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(|(n, k)| json!({"name": n, "keys": k}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (n, k) in list {
                    println!("{n}: {}", k.join(", "));
                }
            }
            Ok(exit::OK)
        }
        CredCmd::Rm { id, name } => {
            let ws = p.workspace(&id)?;
            validate_name(&name)?;
            let key = CredentialKey::resolve(key_file)?;
            let mut store = ws.credentials(&key)?;
            if !store.remove(&name)? {
                return Err(crate::error::CredError::NoSuchSet {
                    workspace: id,
                    name,
                }
                .into());
            }
            if json {
                println!("{}", json!({"workspace": id, "removed": name}));
            } else {
                println!("removed credential set {name} from workspace {id}");
            }
            Ok(exit::OK)
        }
        CredCmd::Rekey { new_key_file } => {
            let old = CredentialKey::resolve(key_file)?;
            let new = CredentialKey::resolve_new(new_key_file.as_deref())?;
            let r = rekey_all(p, &old, &new)?;
            if json {
                let failed: Vec<_> = r
                    .failed
                    .iter()
                    .map(|(id, e)| {
                        json!({"workspace": id, "error": e.to_string(), "exit_code": e.exit_code()})
                    })
                    .collect();
                println!(
                    "{}",
                    json!({
                        "rekeyed": r.rekeyed.len(),
                        "already_on_new_key": r.already_new_key.len(),
                        "without_credentials": r.no_credentials.len(),
                        "failed": r.failed.len(),
                        "workspaces": {
                            "rekeyed": r.rekeyed,
                            "already_on_new_key": r.already_new_key,
                            "without_credentials": r.no_credentials,
                            "failed": failed,
                        },
                    })
                );
            } else {
                println!(
                    "rekeyed {} workspace(s), {} already on the new key, {} without credentials, {} failed",
                    r.rekeyed.len(),
                    r.already_new_key.len(),
                    r.no_credentials.len(),
                    r.failed.len()
                );
                for (id, e) in &r.failed {
                    eprintln!("bulkhead: workspace {id}: {e}");
                }
            }
            // The worst failure decides the exit code (wrong key: 6).
            Ok(r.failed
                .iter()
                .map(|(_, e)| e.exit_code())
                .max()
                .unwrap_or(exit::OK))
        }
    }
}

/// Values from `KEY=VALUE` arguments and `--from-json`, validated; a key given twice is an
/// error.
fn collect_values(
    pairs: &[String],
    from_json: Option<&Path>,
) -> Result<BTreeMap<String, SecretString>> {
    let mut values = BTreeMap::new();
    let mut add = |k: String, v: SecretString| -> Result<()> {
        validate_key(&k)?;
        validate_value(&k, &v)?;
        if values.contains_key(&k) {
            return Err(Error::Invalid(format!(
                "credential key {k:?} is given twice"
            )));
        }
        values.insert(k, v);
        Ok(())
    };
    for (i, pair) in pairs.iter().enumerate() {
        let Some((k, v)) = pair.split_once('=') else {
            // Never echo the argument: it may be a value typed without its key.
            return Err(Error::Invalid(format!(
                "argument {} after the set name is not KEY=VALUE (it has no '=')",
                i + 1
            )));
        };
        add(k.to_string(), SecretString::from(v))?;
    }
    if let Some(src) = from_json {
        for (k, v) in read_json(src)? {
            add(k, v)?;
        }
    }
    if values.is_empty() {
        return Err(Error::Invalid(
            "no values: give KEY=VALUE arguments or --from-json PATH (- for stdin)".into(),
        ));
    }
    Ok(values)
}

/// Reads a JSON object of strings from `src` (`-`: stdin). Errors give the position only.
fn read_json(src: &Path) -> Result<BTreeMap<String, SecretString>> {
    let what = if src == Path::new("-") {
        "stdin".to_string()
    } else {
        src.display().to_string()
    };
    // Capacity beyond the cap, so reading never reallocates (and leaves no stray copy).
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_JSON_BYTES + 4096));
    let res = if src == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_JSON_BYTES as u64 + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(src)
            .and_then(|f| f.take(MAX_JSON_BYTES as u64 + 1).read_to_end(&mut buf))
    };
    res.map_err(|e| Error::Invalid(format!("--from-json: reading {what}: {e}")))?;
    if buf.len() > MAX_JSON_BYTES {
        return Err(Error::Invalid(format!(
            "--from-json: {what} is larger than {MAX_JSON_BYTES} bytes"
        )));
    }
    serde_json::from_slice::<BTreeMap<String, SecretString>>(&buf).map_err(|e| {
        // serde_json's message can quote a value (`invalid type: integer `5``): give only
        // the position.
        Error::Invalid(format!(
            "--from-json: {what} is not a JSON object of string values like {{\"token\": \"…\"}} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}
