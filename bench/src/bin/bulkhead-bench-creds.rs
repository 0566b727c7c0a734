//! Benchmark of the credential store, with baselines run in the same process:
//!
//! - unlock: open a workspace's `creds.enc` with an empty key cache (the KDF runs), median
//!   of 5, against one raw PBKDF2-HMAC-SHA512 derivation with the same parameters;
//! - reopen: re-read and decrypt the file with the key cached, median of 1,000, against a
//!   raw AEAD decrypt of a buffer the size of the ciphertext;
//! - read: one credential from an unlocked store, median of 10,000, against the cost of
//!   taking a timestamp (the floor of any single-operation timing).
//!
//! Run: `cargo run --release -p bulkhead-bench --bin bulkhead-bench-creds` (add `--json`
//! for one JSON object). A benchmark, not a test: it prints numbers and asserts nothing.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bulkhead::creds::{self, bench, Cipher, CredentialKey, CredentialOptions};
use bulkhead::{Platform, PlatformConfig, SecretString, WorkspaceConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(n: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn fmt(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns >= 1_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.2} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_nanos() as f64 / b.as_nanos().max(1) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let json = std::env::args().any(|a| a == "--json");
    let dir = tempfile::tempdir()?;
    let platform = Platform::open(PlatformConfig {
        state_dir: dir.path().join("state"),
        ..PlatformConfig::default()
    })?;
    let mut results = serde_json::Map::new();
    for cipher in Cipher::ALL {
        let ws = platform.create_workspace(cipher.name(), WorkspaceConfig::default())?;
        let key = CredentialKey::new("benchmark passphrase, not a real one");
        let opts = CredentialOptions::default().with_cipher(cipher);
        // A realistic store: 8 sets of 3 keys with 40-byte values.
        let mut store = ws.credentials_with(&key, opts)?;
        for s in 0..8 {
            let set: BTreeMap<String, SecretString> = (0..3)
                .map(|k| {
                    (
                        format!("KEY_{k}"),
                        SecretString::from(format!("{:040}", s * 10 + k)),
                    )
                })
                .collect();
            store.set(format!("set{s}"), set)?;
        }
        let file = std::fs::read(ws.credentials_path())?;
        let salt = &file[22..22 + file[16] as usize];
        let iterations = u32::from_be_bytes(file[12..16].try_into()?);
        let header_len = 22 + file[16] as usize + file[17] as usize;
        let ct_len = file.len() - header_len;

        let unlock = time(5, || {
            creds::clear_key_cache();
            ws.credentials_with(&key, opts)
                .expect("unlock")
                .list()
                .len()
        });
        let raw_kdf = time(5, || {
            bench::raw_pbkdf2(b"benchmark passphrase, not a real one", salt, iterations)
        });

        let mut open = ws.credentials_with(&key, opts)?;
        let reopen = time(1_000, || {
            open.reload().expect("reload");
            open.list().len()
        });
        let (sealed, raw_open) = bench::raw_aead(cipher, ct_len - 16);
        let raw_decrypt = time(1_000, || raw_open(&sealed));

        let read = time(10_000, || {
            open.get("set5").map(|s| s["KEY_1"].expose_secret().len())
        });
        let clock = time(10_000, || 0u8);

        if json {
            results.insert(
                cipher.name().into(),
                serde_json::json!({
                    "iterations": iterations,
                    "file_bytes": file.len(),
                    "unlock_ns": unlock.as_nanos() as u64,
                    "raw_pbkdf2_ns": raw_kdf.as_nanos() as u64,
                    "unlock_vs_raw_pbkdf2": ratio(unlock, raw_kdf),
                    "reopen_ns": reopen.as_nanos() as u64,
                    "raw_decrypt_ns": raw_decrypt.as_nanos() as u64,
                    "reopen_vs_raw_decrypt": ratio(reopen, raw_decrypt),
                    "read_ns": read.as_nanos() as u64,
                    "timestamp_floor_ns": clock.as_nanos() as u64,
                }),
            );
        } else {
            println!(
                "{cipher} ({iterations} PBKDF2-HMAC-SHA512 iterations, creds.enc {} bytes, 8 sets x 3 keys)",
                file.len()
            );
            println!(
                "  unlock (KDF + read + decrypt), median of 5:  {:>10}   raw PBKDF2: {:>10}   ratio {:.2}",
                fmt(unlock),
                fmt(raw_kdf),
                ratio(unlock, raw_kdf)
            );
            println!(
                "  reopen, key cached, median of 1,000:        {:>10}   raw decrypt ({} B): {:>10}   ratio {:.1}",
                fmt(reopen),
                ct_len - 16,
                fmt(raw_decrypt),
                ratio(reopen, raw_decrypt)
            );
            println!(
                "  read one credential, median of 10,000:      {:>10}   timestamp floor: {:>10}",
                fmt(read),
                fmt(clock)
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(results));
    }
    Ok(())
}
