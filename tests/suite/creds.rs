//! The encrypted credential store (`creds.enc`) through `bulkhead cred …` and the library:
//! round trips and JSON, input rules, the passphrase sources, wrong keys and every kind of
//! damage (exit 6, file untouched), ciphers, kill -9 during writes and rekeys, and a canary
//! value that must appear nowhere but inside the ciphertext.
//!
//! Speed: library tests use a cheap KDF through `KdfParams::insecure_for_tests` (only the
//! library can choose it); the CLI always writes 210,000 PBKDF2 iterations.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bulkhead::creds::{
    self, Cipher, CredError, CredentialKey, CredentialOptions, KdfParams, SecretString,
};
use bulkhead::error::exit;
use bulkhead::{Error, Platform, PlatformConfig, Workspace, WorkspaceConfig};
use bulkhead_tests::{sandbox_or_skip, text, TestEnv};
use serde_json::{json, Value};

const KEY: &str = "correct horse battery staple";
const KEY2: &str = "tr0ub4dor&3 is a worse passphrase";

// ------------------------------------------------------------------------------------
// Helpers

/// A `bulkhead` command with the credential key (if any) and no other credential or log
/// settings from the caller's environment.
fn cmd(env: &TestEnv, key: Option<&str>) -> Command {
    env.cmd_with_key(key)
}

fn run(env: &TestEnv, key: Option<&str>, args: &[&str]) -> Output {
    cmd(env, key).args(args).output().expect("run bulkhead")
}

fn run_stdin(env: &TestEnv, key: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut c = cmd(env, key);
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn bulkhead");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[track_caller]
fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

#[track_caller]
fn code(out: &Output, want: i32) {
    assert_eq!(
        out.status.code(),
        Some(want),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn json_out(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

fn creds_path(env: &TestEnv, id: &str) -> PathBuf {
    env.state().join("workspaces").join(id).join("creds.enc")
}

fn platform(env: &TestEnv) -> Platform {
    Platform::open(PlatformConfig {
        state_dir: env.state(),
        ..PlatformConfig::default()
    })
    .expect("open platform")
}

fn workspace(env: &TestEnv, id: &str) -> Workspace {
    platform(env).workspace(id).expect("open workspace")
}

/// A fresh state dir with workspace `id`, created through the library.
fn setup(id: &str) -> (TestEnv, Workspace) {
    let env = TestEnv::new();
    let w = platform(&env)
        .create_workspace(id, WorkspaceConfig::default())
        .expect("create workspace");
    (env, w)
}

/// Cheap KDF: library-only, for speed.
fn fast() -> CredentialOptions {
    CredentialOptions::default().with_kdf(KdfParams::insecure_for_tests(64))
}

fn set_of(pairs: &[(&str, &str)]) -> BTreeMap<String, SecretString> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), SecretString::from(*v)))
        .collect()
}

fn value(ws: &Workspace, key: &str, set: &str, k: &str) -> Option<String> {
    let store = ws
        .credentials(&CredentialKey::new(key))
        .expect("open store");
    store
        .get(set)
        .and_then(|s| s.get(k))
        .map(|v| v.expose_secret().to_string())
}

fn iterations(bytes: &[u8]) -> u32 {
    u32::from_be_bytes(bytes[12..16].try_into().unwrap())
}

/// xorshift64*, seeded from the clock and printed so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn new(test: &str) -> Rng {
        let seed = std::env::var("BULKHEAD_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    ^ u64::from(std::process::id())
            })
            | 1;
        eprintln!("{test}: BULKHEAD_TEST_SEED={seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(b) = fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle) {
                        hits.push(p);
                    }
                }
            }
        }
    }
    hits
}

fn temp_files(env: &TestEnv, id: &str) -> Vec<String> {
    fs::read_dir(env.state().join("workspaces").join(id))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp."))
        .collect()
}

// ------------------------------------------------------------------------------------
// CLI: round trips, JSON, input rules

#[test]
fn cred_set_list_rm_round_trip_with_json_and_real_kdf() {
    let env = TestEnv::new();
    env.create("acme");
    let out = ok(run(
        &env,
        Some(KEY),
        &[
            "cred",
            "set",
            "acme",
            "github",
            "token=ghp-secret-1",
            "user=bot",
        ],
    ));
    assert!(
        !text(&out.stdout).contains("ghp-secret-1"),
        "{}",
        text(&out.stdout)
    );
    let path = creds_path(&env, "acme");
    let bytes = fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"BHCREDS\0");
    assert_eq!(iterations(&bytes), 210_000, "the CLI writes the real KDF");
    assert_eq!(bytes[10], 1, "AES-256-GCM by default");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Values on stdin as JSON (not in argv), escapes included.
    ok(run_stdin(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "openai", "--from-json", "-"],
        r#"{"API_KEY": "sk-\"quoted\"-\u00e9", "ORG": "org-1"}"#,
    ));
    // And from a file.
    let jf = env.dir.path().join("smtp.json");
    fs::write(&jf, r#"{"PASSWORD": "p4ss"}"#).unwrap();
    ok(run(
        &env,
        Some(KEY),
        &[
            "cred",
            "set",
            "acme",
            "smtp",
            "--from-json",
            jf.to_str().unwrap(),
        ],
    ));

    let out = ok(run(&env, Some(KEY), &["--json", "cred", "list", "acme"]));
    assert_eq!(
        json_out(&out),
        json!([
            {"name": "github", "keys": ["token", "user"]},
            {"name": "openai", "keys": ["API_KEY", "ORG"]},
            {"name": "smtp", "keys": ["PASSWORD"]},
        ])
    );
    let out = ok(run(&env, Some(KEY), &["cred", "list", "acme"]));
    assert_eq!(
        text(&out.stdout),
        "github: token, user\nopenai: API_KEY, ORG\nsmtp: PASSWORD\n"
    );
    let ws = workspace(&env, "acme");
    assert_eq!(
        value(&ws, KEY, "openai", "API_KEY").as_deref(),
        Some("sk-\"quoted\"-é")
    );
    assert_eq!(
        value(&ws, KEY, "github", "token").as_deref(),
        Some("ghp-secret-1")
    );

    // set replaces the whole set.
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "github", "token=ghp-secret-2"],
    ));
    let out = ok(run(&env, Some(KEY), &["--json", "cred", "list", "acme"]));
    assert_eq!(
        json_out(&out)[0],
        json!({"name": "github", "keys": ["token"]})
    );
    assert_eq!(
        value(&ws, KEY, "github", "token").as_deref(),
        Some("ghp-secret-2")
    );

    let out = ok(run(
        &env,
        Some(KEY),
        &["--json", "cred", "rm", "acme", "github"],
    ));
    assert_eq!(json_out(&out)["removed"], "github");
    let out = ok(run(&env, Some(KEY), &["cred", "list", "acme"]));
    assert_eq!(text(&out.stdout), "openai: API_KEY, ORG\nsmtp: PASSWORD\n");
    let out = run(&env, Some(KEY), &["cred", "rm", "acme", "github"]);
    code(&out, exit::NOT_FOUND);
    assert!(text(&out.stderr).contains("no credential set \"github\""));

    // Unknown workspace: 3, for every subcommand.
    for args in [
        &["cred", "list", "nosuch"][..],
        &["cred", "set", "nosuch", "x", "a=b"],
        &["cred", "rm", "nosuch", "x"],
    ] {
        let out = run(&env, Some(KEY), args);
        code(&out, exit::NOT_FOUND);
        assert!(text(&out.stderr).starts_with("bulkhead: "));
    }
    let out = run(&env, Some(KEY), &["--json", "cred", "list", "nosuch"]);
    code(&out, exit::NOT_FOUND);
    let v: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["exit_code"], 3);

    // An empty workspace lists nothing.
    env.create("empty");
    let out = ok(run(&env, Some(KEY), &["--json", "cred", "list", "empty"]));
    assert_eq!(json_out(&out), json!([]));
    assert!(!creds_path(&env, "empty").exists());
}

#[test]
fn invalid_names_keys_and_values_are_refused_naming_the_rule() {
    let env = TestEnv::new();
    env.create("acme");
    let long = "n".repeat(65);
    for name in ["a b", "a/b", "", "ü", "x;y", long.as_str()] {
        let out = run(&env, Some(KEY), &["cred", "set", "acme", name, "token=x"]);
        code(&out, exit::USAGE);
        assert!(
            text(&out.stderr).contains("[A-Za-z0-9_.-]{1,64}"),
            "{name:?}: {}",
            text(&out.stderr)
        );
    }
    let long_key = format!("{}=x", "k".repeat(129));
    for pair in ["1abc=x", "a-b=x", "a.b=x", "=x", "ü=x", long_key.as_str()] {
        let out = run(&env, Some(KEY), &["cred", "set", "acme", "s", pair]);
        code(&out, exit::USAGE);
        assert!(
            text(&out.stderr).contains("[A-Za-z_][A-Za-z0-9_]{0,127}"),
            "{pair:?}: {}",
            text(&out.stderr)
        );
    }
    // Keys that would shadow process environment.
    for k in [
        "PATH",
        "HOME",
        "USER",
        "SHELL",
        "PWD",
        "TERM",
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "TMPDIR",
        "IFS",
        "ENV",
        "BASH_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "NODE_OPTIONS",
        "PERL5LIB",
        "RUBYLIB",
        "GCONV_PATH",
        "MALLOC_CHECK_",
        "MALLOC_ARENA_MAX",
        "DYLD_INSERT_LIBRARIES",
        "BULKHEAD_CREDENTIAL_KEY",
        "BULKHEAD_ANYTHING",
    ] {
        let out = run(
            &env,
            Some(KEY),
            &["cred", "set", "acme", "s", &format!("{k}=x")],
        );
        code(&out, exit::USAGE);
        let err = text(&out.stderr);
        assert!(err.contains("shadow") && err.contains(k), "{k}: {err}");
        assert!(creds::validate_key(k).is_err());
    }
    for k in ["token", "API_KEY", "_x", "PATHX", "MY_PATH", "HOMEPAGE_URL"] {
        creds::validate_key(k).unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    // Not KEY=VALUE; a key twice; nothing at all.
    let out = run(&env, Some(KEY), &["cred", "set", "acme", "s", "tokenvalue"]);
    code(&out, exit::USAGE);
    assert!(!text(&out.stderr).contains("tokenvalue"), "argument echoed");
    let out = run(&env, Some(KEY), &["cred", "set", "acme", "s", "a=1", "a=2"]);
    code(&out, exit::USAGE);
    assert!(text(&out.stderr).contains("twice"));
    let out = run(&env, Some(KEY), &["cred", "set", "acme", "s"]);
    code(&out, exit::USAGE);
    // Bad JSON: the message gives a position, never the input.
    for bad in [
        r#"{"token": 12345678}"#,
        r#"["leaky-value"]"#,
        r#"{"token": "leaky-value""#,
        "leaky-value",
        r#"{"token": {"x": "leaky-value"}}"#,
    ] {
        let out = run_stdin(
            &env,
            Some(KEY),
            &["cred", "set", "acme", "s", "--from-json", "-"],
            bad,
        );
        code(&out, exit::USAGE);
        let err = text(&out.stderr);
        assert!(err.contains("line 1"), "{err}");
        assert!(
            !err.contains("leaky-value") && !err.contains("12345678"),
            "{err}"
        );
    }
    // Values: 64 KiB each at most.
    let max = format!("v={}", "x".repeat(64 << 10));
    ok(run(&env, Some(KEY), &["cred", "set", "acme", "big", &max]));
    let over = format!("v={}", "x".repeat((64 << 10) + 1));
    let out = run(&env, Some(KEY), &["cred", "set", "acme", "big2", &over]);
    code(&out, exit::USAGE);
    assert!(
        text(&out.stderr).contains("64 KiB"),
        "{}",
        text(&out.stderr)
    );
    let out = ok(run(&env, Some(KEY), &["cred", "list", "acme"]));
    assert_eq!(text(&out.stdout), "big: v\n", "no refused set was stored");
}

#[test]
fn total_size_is_capped_at_one_mib_and_a_refusal_changes_nothing() {
    let (_env, ws) = setup("acme");
    let key = CredentialKey::new(KEY);
    let mut store = ws.credentials_with(&key, fast()).unwrap();
    let v = "x".repeat(64 << 10);
    let mut stored = 0;
    let err = loop {
        match store.set(format!("s{stored}"), set_of(&[("v", &v)])) {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 20, "1 MiB not enforced");
    };
    assert_eq!(
        stored, 15,
        "15 x 64 KiB (+ names and keys) fit, the 16th does not"
    );
    assert_eq!(err.exit_code(), exit::USAGE);
    assert!(err.to_string().contains("1 MiB"), "{err}");
    let before = fs::read(ws.credentials_path()).unwrap();
    let again = ws.credentials_with(&key, fast()).unwrap();
    assert_eq!(again.list().len(), 15);
    assert_eq!(fs::read(ws.credentials_path()).unwrap(), before);
}

// ------------------------------------------------------------------------------------
// The passphrase

#[test]
fn no_key_exits_7_naming_both_sources_and_a_key_file_works() {
    let env = TestEnv::new();
    env.create("acme");
    for args in [
        &["cred", "list", "acme"][..],
        &["cred", "set", "acme", "gh", "token=x"],
        &["cred", "rm", "acme", "gh"],
        &["cred", "rekey"],
    ] {
        let out = run(&env, None, args);
        code(&out, exit::NO_CREDENTIAL_KEY);
        let err = text(&out.stderr);
        assert!(
            err.contains("BULKHEAD_CREDENTIAL_KEY") && err.contains("--credential-key-file"),
            "{err}"
        );
    }
    let out = run(&env, None, &["--json", "cred", "list", "acme"]);
    code(&out, 7);
    let v: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["exit_code"], 7);
    // An empty variable is no key.
    let out = run(&env, Some(""), &["cred", "list", "acme"]);
    code(&out, 7);

    // The key from a file (systemd credential style): trailing newline stripped, so the
    // same passphrase in the environment opens what the file wrote.
    let kf = env.dir.path().join("key");
    fs::write(&kf, format!("{KEY}\n")).unwrap();
    fs::set_permissions(&kf, fs::Permissions::from_mode(0o600)).unwrap();
    let kfs = kf.to_str().unwrap();
    let out = ok(run(
        &env,
        None,
        &[
            "--credential-key-file",
            kfs,
            "cred",
            "set",
            "acme",
            "gh",
            "token=from-file",
        ],
    ));
    assert!(
        !text(&out.stderr).contains("readable"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        value(&workspace(&env, "acme"), KEY, "gh", "token").as_deref(),
        Some("from-file")
    );
    // The global flag also goes after the subcommand; it wins over the environment.
    let out = ok(run(
        &env,
        Some("not the key"),
        &["cred", "list", "acme", "--credential-key-file", kfs],
    ));
    assert_eq!(text(&out.stdout), "gh: token\n");
    // World-readable: a warning, not a refusal.
    fs::set_permissions(&kf, fs::Permissions::from_mode(0o644)).unwrap();
    let out = ok(run(
        &env,
        None,
        &["--credential-key-file", kfs, "cred", "list", "acme"],
    ));
    assert!(
        text(&out.stderr).contains("readable by every user"),
        "{}",
        text(&out.stderr)
    );
    // Missing or empty key file: 7, naming the file.
    let missing = env.dir.path().join("nope");
    let out = run(
        &env,
        Some(KEY),
        &[
            "--credential-key-file",
            missing.to_str().unwrap(),
            "cred",
            "list",
            "acme",
        ],
    );
    code(&out, 7);
    assert!(text(&out.stderr).contains("nope"));
    let empty = env.dir.path().join("empty");
    fs::write(&empty, "\n").unwrap();
    let out = run(
        &env,
        None,
        &[
            "--credential-key-file",
            empty.to_str().unwrap(),
            "cred",
            "list",
            "acme",
        ],
    );
    code(&out, 7);
    // rekey without a new key names its two sources.
    let out = run(&env, Some(KEY), &["cred", "rekey"]);
    code(&out, 7);
    let err = text(&out.stderr);
    assert!(
        err.contains("BULKHEAD_NEW_CREDENTIAL_KEY") && err.contains("--new-key-file"),
        "{err}"
    );
}

// ------------------------------------------------------------------------------------
// Wrong keys and damage

#[test]
fn wrong_key_exits_6_and_leaves_the_file_untouched() {
    let env = TestEnv::new();
    env.create("acme");
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "gh", "token=t0ken"],
    ));
    let path = creds_path(&env, "acme");
    let before = fs::read(&path).unwrap();
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    for args in [
        &["cred", "list", "acme"][..],
        &["cred", "set", "acme", "gh", "token=other"],
        &["cred", "set", "acme", "new", "token=other"],
        &["cred", "rm", "acme", "gh"],
    ] {
        let out = run(&env, Some("wrong passphrase"), args);
        code(&out, exit::WRONG_CREDENTIAL_KEY);
        let err = text(&out.stderr);
        assert!(
            err.starts_with("bulkhead: wrong credential key or damaged file"),
            "{err}"
        );
        assert!(
            !err.contains("t0ken") && !err.contains("wrong passphrase"),
            "{err}"
        );
    }
    let out = run(
        &env,
        Some("wrong passphrase"),
        &["--json", "cred", "list", "acme"],
    );
    code(&out, 6);
    let v: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(v["exit_code"], 6);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("wrong credential key or damaged file"));
    // rekey with a wrong old key: reported, exit 6, nothing rewritten.
    let out = cmd(&env, Some("wrong passphrase"))
        .env("BULKHEAD_NEW_CREDENTIAL_KEY", KEY2)
        .args(["cred", "rekey"])
        .output()
        .unwrap();
    code(&out, 6);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    // Library: the same error variant.
    let e = workspace(&env, "acme")
        .credentials(&CredentialKey::new("wrong passphrase"))
        .unwrap_err();
    assert!(
        matches!(e, Error::Cred(CredError::WrongKey { .. })),
        "{e:?}"
    );
}

/// Flips every bit pattern `x ^ 0x01`, `x ^ 0x80` and `x ^ 0xff` at every byte position;
/// truncates at every length; appends a byte. Each must fail to open, with the wrong-key
/// error, and never panic.
#[test]
fn every_flipped_byte_and_every_truncation_is_detected() {
    for cipher in Cipher::ALL {
        let (_env, ws) = setup("acme");
        let key = CredentialKey::new(KEY);
        let opts = fast().with_cipher(cipher);
        ws.credentials_with(&key, opts)
            .unwrap()
            .set("gh", set_of(&[("token", "abc")]))
            .unwrap();
        let path = ws.credentials_path();
        let good = fs::read(&path).unwrap();
        assert_eq!(good[10], cipher.id());
        let expect_refused = |bytes: &[u8], what: String| {
            fs::write(&path, bytes).unwrap();
            match ws.credentials_with(&key, opts) {
                Err(Error::Cred(CredError::WrongKey { detail, .. })) => {
                    assert!(!detail.contains("abc"), "{what}: {detail}");
                }
                Err(e) => panic!("{cipher}: {what}: unexpected error {e:?}"),
                Ok(_) => panic!("{cipher}: {what}: the damaged file opened"),
            }
        };
        for i in 0..good.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= mask;
                expect_refused(&b, format!("byte {i} ^ {mask:#04x}"));
            }
        }
        for len in 0..good.len() {
            expect_refused(&good[..len], format!("truncated to {len}"));
        }
        let mut longer = good.clone();
        longer.push(0);
        expect_refused(&longer, "one byte appended".into());
        fs::write(&path, &good).unwrap();
        let s = ws.credentials_with(&key, opts).unwrap();
        assert_eq!(s.get("gh").unwrap()["token"].expose_secret(), "abc");
    }
}

#[test]
fn a_file_copied_into_another_workspace_does_not_open_there() {
    let (env, a) = setup("alpha");
    let b = platform(&env)
        .create_workspace("beta", WorkspaceConfig::default())
        .unwrap();
    let key = CredentialKey::new(KEY);
    a.credentials_with(&key, fast())
        .unwrap()
        .set("gh", set_of(&[("token", "alpha-only")]))
        .unwrap();
    b.credentials_with(&key, fast())
        .unwrap()
        .set("gh", set_of(&[("token", "beta-own")]))
        .unwrap();
    let b_before = fs::read(b.credentials_path()).unwrap();
    fs::copy(a.credentials_path(), b.credentials_path()).unwrap();
    let e = b.credentials_with(&key, fast()).unwrap_err();
    assert!(
        matches!(e, Error::Cred(CredError::WrongKey { .. })),
        "{e:?}"
    );
    // Through the CLI as well (same key, real binary).
    let out = run(&env, Some(KEY), &["cred", "list", "beta"]);
    code(&out, 6);
    let out = run(&env, Some(KEY), &["cred", "set", "beta", "x", "a=b"]);
    code(&out, 6);
    // Put B's own file back: it opens; A's still opens in A.
    fs::write(b.credentials_path(), &b_before).unwrap();
    assert_eq!(value(&b, KEY, "gh", "token").as_deref(), Some("beta-own"));
    assert_eq!(value(&a, KEY, "gh", "token").as_deref(), Some("alpha-only"));
}

// ------------------------------------------------------------------------------------
// Ciphers

#[test]
fn xchacha20poly1305_is_selectable_and_reads_back() {
    let env = TestEnv::new();
    env.create("acme");
    // Environment selection.
    ok(cmd(&env, Some(KEY))
        .env("BULKHEAD_CREDENTIAL_CIPHER", "xchacha20poly1305")
        .args(["cred", "set", "acme", "gh", "token=xc"])
        .output()
        .unwrap());
    let path = creds_path(&env, "acme");
    let b = fs::read(&path).unwrap();
    assert_eq!(b[10], 2, "cipher id");
    assert_eq!(b[17], 24, "XChaCha20 nonce length");
    // Read back without the setting; a later write keeps the file's cipher.
    let out = ok(run(&env, Some(KEY), &["cred", "list", "acme"]));
    assert_eq!(text(&out.stdout), "gh: token\n");
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "gh2", "token=x2"],
    ));
    assert_eq!(fs::read(&path).unwrap()[10], 2);
    assert_eq!(
        value(&workspace(&env, "acme"), KEY, "gh", "token").as_deref(),
        Some("xc")
    );
    // Explicitly back to AES-256-GCM.
    ok(cmd(&env, Some(KEY))
        .env("BULKHEAD_CREDENTIAL_CIPHER", "aes-256-gcm")
        .args(["cred", "set", "acme", "gh3", "token=x3"])
        .output()
        .unwrap());
    assert_eq!(fs::read(&path).unwrap()[10], 1);
    // An unknown name is refused, naming the variable.
    let out = cmd(&env, Some(KEY))
        .env("BULKHEAD_CREDENTIAL_CIPHER", "rot13")
        .args(["cred", "set", "acme", "gh4", "token=x4"])
        .output()
        .unwrap();
    code(&out, exit::USAGE);
    assert!(text(&out.stderr).contains("BULKHEAD_CREDENTIAL_CIPHER"));

    // The platform setting in config.toml.
    fs::write(
        env.state().join("config.toml"),
        "[credentials]\ncipher = \"xchacha20poly1305\"\n",
    )
    .unwrap();
    env.create("beta");
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "beta", "gh", "token=b"],
    ));
    assert_eq!(fs::read(creds_path(&env, "beta")).unwrap()[10], 2);

    // The library option.
    let (_env2, ws) = setup("lib");
    let key = CredentialKey::new(KEY);
    let opts = fast().with_cipher(Cipher::XChaCha20Poly1305);
    ws.credentials_with(&key, opts)
        .unwrap()
        .set("gh", set_of(&[("token", "lib-xc")]))
        .unwrap();
    let s = ws.credentials_with(&key, fast()).unwrap();
    assert_eq!(s.cipher(), Some(Cipher::XChaCha20Poly1305));
    assert_eq!(s.get("gh").unwrap()["token"].expose_secret(), "lib-xc");
}

// ------------------------------------------------------------------------------------
// Library API

#[test]
fn library_api_round_trip_redacts_and_serializes_writers() {
    let (_env, ws) = setup("acme");
    let key = CredentialKey::new(KEY);
    let mut store = ws.credentials_with(&key, fast()).unwrap();
    assert!(store.list().is_empty());
    assert!(store.get("gh").is_none());
    store
        .set(
            "gh",
            set_of(&[("token", "lib-secret-value"), ("user", "u")]),
        )
        .unwrap();
    assert_eq!(
        store.list(),
        vec![(
            "gh".to_string(),
            vec!["token".to_string(), "user".to_string()]
        )]
    );
    let got = store.get("gh").unwrap();
    assert_eq!(got["token"], SecretString::from("lib-secret-value"));
    // Debug of the store, a set, a value and the key never shows a secret.
    for dbg in [
        format!("{store:?}"),
        format!("{got:?}"),
        format!("{:?}", got["token"]),
        format!("{key:?}"),
    ] {
        assert!(
            !dbg.contains("lib-secret-value") && !dbg.contains(KEY),
            "{dbg}"
        );
    }
    assert_eq!(format!("{:?}", got["token"]), "[redacted]");
    assert!(store.remove("gh").unwrap());
    assert!(!store.remove("gh").unwrap());
    assert!(store.list().is_empty());
    // Invalid input through the library: refused before any write.
    assert!(store.set("bad name", set_of(&[("k", "v")])).is_err());
    assert!(store.set("ok", set_of(&[("LD_PRELOAD", "v")])).is_err());

    // Two writers (separate stores, separate threads) never lose each other's sets:
    // every change re-reads the file under the workspace's credential lock.
    std::thread::scope(|s| {
        for t in 0..2 {
            let ws = &ws;
            let key = &key;
            s.spawn(move || {
                let mut st = ws.credentials_with(key, fast()).unwrap();
                for i in 0..15 {
                    st.set(format!("t{t}-{i}"), set_of(&[("v", &format!("{t}-{i}"))]))
                        .unwrap();
                }
            });
        }
    });
    let all = ws.credentials_with(&key, fast()).unwrap();
    assert_eq!(all.list().len(), 30);
    assert_eq!(
        all.get("t1-14").unwrap()["v"].expose_secret(),
        "1-14",
        "last write of thread 1"
    );
}

#[test]
fn workspace_delete_removes_the_credentials() {
    let env = TestEnv::new();
    env.create("acme");
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "gh", "token=x"],
    ));
    assert!(creds_path(&env, "acme").exists());
    ok(run(&env, None, &["workspace", "delete", "acme"]));
    assert!(!creds_path(&env, "acme").exists());
    assert!(!env.state().join("workspaces/acme").exists());
    // A new workspace of the same id starts empty (the old file is gone, not reused).
    env.create("acme");
    let out = ok(run(&env, Some(KEY2), &["--json", "cred", "list", "acme"]));
    assert_eq!(json_out(&out), json!([]));
}

// ------------------------------------------------------------------------------------
// kill -9

/// Spawns `c`, kills it with SIGKILL after `delay` unless it ended first; returns whether
/// it finished successfully on its own.
fn kill_after(mut c: Command, delay: Duration) -> bool {
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    status.success()
}

/// `bulkhead cred set` (the real binary, real KDF) killed at random moments across its
/// whole run: after each kill the file opens under the key, holds every set whose command
/// completed, and the killed one completely or not at all.
#[test]
fn kill_9_during_cred_set_never_loses_or_breaks_anything() {
    let env = TestEnv::new();
    env.create("acme");
    let mut rng = Rng::new("kill_9_during_cred_set");
    // How long one `cred set` takes here, so kills land in startup, KDF and write alike.
    let t = Instant::now();
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "s0", "v=value-0"],
    ));
    let window = (t.elapsed().as_millis() as u64 * 13 / 10).max(60);
    let ws = workspace(&env, "acme");
    let key = CredentialKey::new(KEY);
    let mut committed = vec![0u32];
    let (mut completed, mut killed) = (0, 0);
    for round in 1..=30u32 {
        let mut c = cmd(&env, Some(KEY));
        c.args([
            "cred",
            "set",
            "acme",
            &format!("s{round}"),
            &format!("v=value-{round}"),
        ]);
        let delay = Duration::from_millis(rng.below(window));
        if kill_after(c, delay) {
            committed.push(round);
            completed += 1;
        } else {
            killed += 1;
        }
        let store = ws
            .credentials(&key)
            .unwrap_or_else(|e| panic!("round {round} (killed after {delay:?}): {e}"));
        for &n in &committed {
            assert_eq!(
                store
                    .get(format!("s{n}"))
                    .map(|s| s["v"].expose_secret().to_string()),
                Some(format!("value-{n}")),
                "round {round}: set s{n} lost"
            );
        }
        if let Some(s) = store.get(format!("s{round}")) {
            assert_eq!(s["v"].expose_secret(), format!("value-{round}"));
        }
    }
    eprintln!("cred set: {completed} completed, {killed} killed (window {window} ms)");
    // A later write sweeps the temp files of killed writers.
    ok(run(
        &env,
        Some(KEY),
        &["cred", "set", "acme", "final", "v=x"],
    ));
    assert!(
        temp_files(&env, "acme").is_empty(),
        "{:?}",
        temp_files(&env, "acme")
    );
}

/// `bulkhead cred rekey` over several workspaces, killed at random moments: every file
/// always opens under the old or the new key with all its credentials, and a rerun
/// finishes the job.
#[test]
fn kill_9_during_cred_rekey_then_a_rerun_completes() {
    let env = TestEnv::new();
    let ids = ["w1", "w2", "w3"];
    for id in ids {
        env.create(id);
    }
    env.create("nocreds");
    let p = platform(&env);
    let (k1, k2) = (CredentialKey::new(KEY), CredentialKey::new(KEY2));
    for id in ids {
        let ws = p.workspace(id).unwrap();
        let mut s = ws.credentials_with(&k1, fast()).unwrap();
        for n in 0..3 {
            s.set(
                format!("{id}-s{n}"),
                set_of(&[("v", &format!("{id}-v{n}"))]),
            )
            .unwrap();
        }
    }
    let mut rng = Rng::new("kill_9_during_cred_rekey");
    let rekey = |old: &str, new: &str| {
        let mut c = cmd(&env, Some(old));
        c.env("BULKHEAD_NEW_CREDENTIAL_KEY", new)
            .args(["cred", "rekey"]);
        c
    };
    // One full run K1 -> K2 and back, to size the kill window.
    let t = Instant::now();
    ok(rekey(KEY, KEY2).output().unwrap());
    ok(rekey(KEY2, KEY).output().unwrap());
    let window = (t.elapsed().as_millis() as u64 * 13 / 20).max(60);
    let check = |round: u32| {
        for id in ids {
            let ws = p.workspace(id).unwrap();
            let store = ws
                .credentials(&k1)
                .or_else(|_| ws.credentials(&k2))
                .unwrap_or_else(|e| panic!("round {round}: {id} opens under neither key: {e}"));
            for n in 0..3 {
                assert_eq!(
                    store.get(format!("{id}-s{n}")).unwrap()["v"].expose_secret(),
                    format!("{id}-v{n}"),
                    "round {round}: {id}"
                );
            }
        }
    };
    let (mut old, mut new) = (KEY, KEY2);
    let (mut completed, mut killed) = (0, 0);
    for round in 1..=30u32 {
        if kill_after(rekey(old, new), Duration::from_millis(rng.below(window))) {
            completed += 1;
            std::mem::swap(&mut old, &mut new);
        } else {
            killed += 1;
        }
        check(round);
    }
    eprintln!("cred rekey: {completed} completed, {killed} killed (window {window} ms)");
    // The rerun completes: everything ends on `new`.
    let out = ok(rekey(old, new).arg("--json").output().unwrap());
    let v = json_out(&out);
    assert_eq!(
        v["rekeyed"].as_u64().unwrap() + v["already_on_new_key"].as_u64().unwrap(),
        3,
        "{v}"
    );
    assert_eq!(v["without_credentials"], 1);
    assert_eq!(v["failed"], 0);
    let out = ok(rekey(old, new).output().unwrap());
    assert!(
        text(&out.stdout)
            .contains("rekeyed 0 workspace(s), 3 already on the new key, 1 without credentials"),
        "{}",
        text(&out.stdout)
    );
    for id in ids {
        assert!(p
            .workspace(id)
            .unwrap()
            .credentials(&CredentialKey::new(new))
            .is_ok());
        assert!(p
            .workspace(id)
            .unwrap()
            .credentials(&CredentialKey::new(old))
            .is_err());
    }
    check(0);
}

/// Child side of [`kill_9_during_library_write_and_rekey_loops`]: does nothing unless
/// started by it.
#[test]
fn churn_child() {
    let Ok(spec) = std::env::var("BULKHEAD_TEST_CREDS_CHURN") else {
        return;
    };
    let mut it = spec.split('|');
    let (state, mode, start): (&str, &str, u32) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap().parse().unwrap(),
    );
    let p = Platform::open(PlatformConfig {
        state_dir: state.into(),
        ..PlatformConfig::default()
    })
    .unwrap();
    let ws = p.workspace("churn").unwrap();
    let (k1, k2) = (CredentialKey::new(KEY), CredentialKey::new(KEY2));
    let out = std::io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        writeln!(o, "{s}").unwrap();
        o.flush().unwrap();
    };
    // The file may be under either key (a rekey child was killed before).
    let mut store = ws
        .credentials_with(&k1, fast())
        .or_else(|_| ws.credentials_with(&k2, fast()))
        .unwrap();
    say("churn:ready".into());
    match mode {
        "set" => {
            for n in start.. {
                store
                    .set(format!("c{n}"), set_of(&[("v", &format!("churn-{n}"))]))
                    .unwrap();
                say(format!("churn:done {n}"));
            }
        }
        _ => {
            for n in 0u64.. {
                store.rekey(if n % 2 == 0 { &k2 } else { &k1 }).unwrap();
                store.rekey(if n % 2 == 0 { &k1 } else { &k2 }).unwrap();
            }
        }
    }
}

/// Library writers and rekeyers in child processes, writing back to back (cheap KDF, so
/// most of their time is in the write itself), SIGKILLed 0-60 ms after they start writing.
#[test]
fn kill_9_during_library_write_and_rekey_loops() {
    let (env, ws) = setup("churn");
    let mut rng = Rng::new("kill_9_during_library_loops");
    let (k1, k2) = (CredentialKey::new(KEY), CredentialKey::new(KEY2));
    let exe = std::env::current_exe().unwrap();
    let mut committed: u32 = 0; // c0 .. c{committed-1} are done
    let mut writes = 0;
    for round in 0..40u32 {
        let mode = if round % 4 == 3 { "rekey" } else { "set" };
        let mut child = Command::new(&exe)
            .args(["--exact", "suite::creds::churn_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(
                "BULKHEAD_TEST_CREDS_CHURN",
                format!("{}|{mode}|{committed}", env.state().display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut done = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test … ... " on the same line first.
                if line.contains("churn:ready") {
                    let _ = tx.send(());
                } else if let Some(i) = line.find("churn:done ") {
                    done = Some(
                        line[i + "churn:done ".len()..]
                            .trim()
                            .parse::<u32>()
                            .unwrap(),
                    );
                }
            }
            done
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("churn child ready");
        std::thread::sleep(Duration::from_millis(rng.below(61)));
        child.kill().unwrap();
        child.wait().unwrap();
        if let Some(n) = reader.join().unwrap() {
            writes += n + 1 - committed;
            committed = n + 1;
        }
        let store = ws
            .credentials_with(&k1, fast())
            .or_else(|_| ws.credentials_with(&k2, fast()))
            .unwrap_or_else(|e| panic!("round {round} ({mode}): {e}"));
        for n in 0..committed {
            assert_eq!(
                store
                    .get(format!("c{n}"))
                    .map(|s| s["v"].expose_secret().to_string()),
                Some(format!("churn-{n}")),
                "round {round} ({mode}): c{n} lost"
            );
        }
    }
    eprintln!("library loops: {writes} acknowledged writes survived 40 kills");
    assert!(
        writes > 0,
        "no write completed: the kill window is too short"
    );
}

// ------------------------------------------------------------------------------------
// The canary

/// A canary value (and the passphrase) must appear nowhere but inside the ciphertext:
/// not in any file of the state dir, log output at trace level (text and JSON), `cred
/// list`, error messages, or the sandbox's environment.
#[test]
fn a_canary_credential_is_found_only_inside_the_ciphertext() {
    let env = TestEnv::new();
    env.create("acme");
    let canary = format!(
        "bh-canary-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let passphrase = format!("passphrase-{canary}");
    let pass = passphrase.as_str();
    let canary_b = canary.as_bytes();
    let mut seen = String::new();
    let mut record = |o: &Output| {
        seen.push_str(&text(&o.stdout));
        seen.push_str(&text(&o.stderr));
    };
    let traced = |format: &str| {
        let mut c = cmd(&env, Some(pass));
        c.env("BULKHEAD_LOG_LEVEL", "trace")
            .env("BULKHEAD_LOG_FORMAT", format);
        c
    };
    for format in ["text", "json"] {
        record(&ok(traced(format)
            .args(["cred", "set", "acme", "gh", &format!("token={canary}")])
            .output()
            .unwrap()));
        let mut c = traced(format);
        c.args(["cred", "set", "acme", "api", "--from-json", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!(r#"{{"API_KEY": "{canary}"}}"#).as_bytes())
            .unwrap();
        record(&ok(child.wait_with_output().unwrap()));
        record(&ok(traced(format)
            .args(["cred", "list", "acme"])
            .output()
            .unwrap()));
        record(&ok(traced(format)
            .args(["--json", "cred", "list", "acme"])
            .output()
            .unwrap()));
    }
    // Error paths that carry the canary in their input.
    for args in [
        vec!["cred", "set", "acme", "gh", canary.as_str()],
        vec!["cred", "set", "acme", "bad name", "token=x"],
    ] {
        let o = traced("text").args(&args).output().unwrap();
        assert!(!o.status.success());
        record(&o);
    }
    let bad_key = format!("1bad={canary}");
    let shadow = format!("LD_PRELOAD={canary}");
    let huge = format!("v={canary}{}", "x".repeat(70_000));
    for pair in [&bad_key, &shadow, &huge] {
        let o = traced("text")
            .args(["cred", "set", "acme", "gh", pair])
            .output()
            .unwrap();
        code(&o, 2);
        record(&o);
    }
    let o = cmd(&env, Some("wrong"))
        .env("BULKHEAD_LOG_LEVEL", "trace")
        .args(["cred", "list", "acme"])
        .output()
        .unwrap();
    code(&o, 6);
    record(&o);

    // The sandbox sees neither the canary nor the passphrase, even with the passphrase in
    // the controller's environment and trace logging on.
    if sandbox_or_skip("a_canary_credential_is_found_only_inside_the_ciphertext") {
        for argv in [
            &["env"][..],
            &["cat", "/proc/self/environ"],
            &[
                "/bin/sh",
                "-c",
                "cat /proc/1/environ 2>/dev/null; ls -la /workspace/ /workspace/.. 2>&1; env",
            ],
        ] {
            let o = traced("text")
                .args(["exec", "acme", "--"])
                .args(argv)
                .output()
                .unwrap();
            assert!(o.status.success(), "{argv:?}: {}", text(&o.stderr));
            let out = text(&o.stdout);
            assert!(!out.contains("creds.enc"), "{argv:?} sees creds.enc: {out}");
            assert!(!out.contains("BULKHEAD_CREDENTIAL_KEY"), "{argv:?}: {out}");
            record(&o);
        }
    }

    assert!(
        !seen.contains(&canary),
        "the canary leaked into output:\n{seen}"
    );
    assert!(!seen.contains(pass), "the passphrase leaked into output");
    // Files: only creds.enc holds it, and only encrypted.
    assert_eq!(
        files_containing(&env.state(), canary_b),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(&env.state(), pass.as_bytes()),
        Vec::<PathBuf>::new()
    );
    let ws = workspace(&env, "acme");
    assert_eq!(
        value(&ws, pass, "gh", "token").as_deref(),
        Some(canary.as_str())
    );
    assert_eq!(
        value(&ws, pass, "api", "API_KEY").as_deref(),
        Some(canary.as_str())
    );
}
