//! `bulkhead memory index`: the workspace's notes (`MEMORY.md`, `memory/**/*.md`) and its
//! session transcripts indexed incrementally; hostile files (symlinks out of `files/`, made
//! on the host or inside the sandbox, oversized files) not indexed.

use std::fs;
use std::os::unix::fs::symlink;

use bulkhead::{Event, LockMode, Platform, PlatformConfig};
use bulkhead_tests::{ok_json, sandbox_or_skip, text, TestEnv};
use serde_json::Value;

const CANARY: &str = "zebracanary7781";

fn index(env: &TestEnv, ws: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "memory", "index", ws];
    args.extend_from_slice(extra);
    ok_json(&env.bulkhead(&args))
}

fn counts(r: &Value) -> (u64, u64, u64) {
    (
        r["indexed"].as_u64().unwrap(),
        r["unchanged"].as_u64().unwrap(),
        r["removed"].as_u64().unwrap(),
    )
}

/// Sources of the hits for `q`.
/// Sources whose text holds the words of `q` (keyword mode: these tests are about what is
/// indexed, not about what a semantic neighbour would be).
fn sources(env: &TestEnv, ws: &str, q: &str) -> Vec<String> {
    let v = ok_json(&env.bulkhead(&["--json", "memory", "search", ws, q, "--mode", "keyword"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap().to_string())
        .collect()
}

fn skipped(r: &Value) -> Vec<(String, String)> {
    r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn notes_are_indexed_incrementally() {
    let env = TestEnv::new();
    env.create("acme");
    let files = env.files("acme");
    fs::write(
        files.join("MEMORY.md"),
        "# Facts\n\nThe staging database listens on port 5433.\n",
    )
    .unwrap();
    fs::create_dir_all(files.join("memory/notes/deep")).unwrap();
    fs::write(files.join("memory/a.md"), "Lunch is at noon on Fridays.\n").unwrap();
    fs::write(
        files.join("memory/notes/deep/b.md"),
        b"The backup key is in the \xff\xfe blue vault.\n",
    )
    .unwrap();
    fs::write(files.join("memory/ignored.txt"), "quokka never indexed\n").unwrap();
    fs::write(files.join("notes.md"), "wombat outside memory/\n").unwrap();

    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (3, 0, 0), "{r}");
    assert_eq!(
        sources(&env, "acme", "staging database port"),
        ["MEMORY.md"]
    );
    assert_eq!(sources(&env, "acme", "lunch Fridays"), ["memory/a.md"]);
    // Not UTF-8: read lossily.
    assert_eq!(
        sources(&env, "acme", "blue vault"),
        ["memory/notes/deep/b.md"]
    );
    assert!(sources(&env, "acme", "quokka").is_empty());
    assert!(sources(&env, "acme", "wombat").is_empty());

    // Nothing changed: nothing re-indexed.
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 3, 0), "{r}");

    // An edit replaces that file's chunks.
    fs::write(files.join("memory/a.md"), "Lunch moved to Thursdays.\n").unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (1, 2, 0), "{r}");
    assert!(sources(&env, "acme", "Fridays").is_empty());
    assert_eq!(sources(&env, "acme", "Thursdays"), ["memory/a.md"]);

    // A deleted file's chunks are gone.
    fs::remove_file(files.join("memory/notes/deep/b.md")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 2, 1), "{r}");
    assert!(sources(&env, "acme", "blue vault").is_empty());

    // Too large: skipped with a reason, and its old chunks dropped.
    let mut big = String::from("giraffe ");
    big.push_str(&"x".repeat(1 << 20));
    fs::write(files.join("memory/a.md"), big).unwrap();
    let r = index(&env, "acme", &[]);
    let sk = skipped(&r);
    assert!(
        sk.iter()
            .any(|(p, why)| p == "memory/a.md" && why.contains("too large")),
        "{r}"
    );
    assert!(sources(&env, "acme", "Thursdays").is_empty());
    assert!(sources(&env, "acme", "giraffe").is_empty());

    // The human output.
    let out = env.bulkhead(&["memory", "index", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("skipped\tmemory/a.md\ttoo large"));
}

#[test]
fn host_symlinks_out_of_files_are_not_followed() {
    let env = TestEnv::new();
    env.create("acme");
    env.create("other");
    let files = env.files("acme");
    let secret = env.dir.path().join("secret.md");
    fs::write(&secret, format!("{CANARY} host secret\n")).unwrap();
    fs::write(
        env.files("other").join("MEMORY.md"),
        format!("{CANARY} other tenant\n"),
    )
    .unwrap();
    fs::create_dir_all(env.files("other").join("memory")).unwrap();
    fs::write(
        env.files("other").join("memory/x.md"),
        format!("{CANARY} other tenant note\n"),
    )
    .unwrap();

    symlink(&secret, files.join("MEMORY.md")).unwrap();
    symlink(env.files("other").join("memory"), files.join("memory")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 0, "{r}");
    let sk = skipped(&r);
    assert!(
        sk.iter()
            .any(|(p, why)| p == "MEMORY.md" && why.contains("symlink")),
        "{r}"
    );
    assert!(
        sk.iter()
            .any(|(p, why)| p == "memory" && why.contains("symlink")),
        "{r}"
    );
    assert!(sources(&env, "acme", CANARY).is_empty());

    // A symlink deeper down, and a directory symlink inside memory/.
    fs::remove_file(files.join("memory")).unwrap();
    fs::create_dir_all(files.join("memory/sub")).unwrap();
    symlink(&secret, files.join("memory/sub/leak.md")).unwrap();
    symlink(env.files("other"), files.join("memory/other")).unwrap();
    symlink("../../MEMORY.md", files.join("memory/sub/rel.md")).unwrap();
    fs::write(files.join("memory/sub/ok.md"), "harmless pelican note\n").unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 1, "{r}");
    assert!(sources(&env, "acme", CANARY).is_empty());
    assert_eq!(sources(&env, "acme", "pelican"), ["memory/sub/ok.md"]);

    // A file indexed, then swapped for a symlink: its chunks go.
    fs::remove_file(files.join("memory/sub/ok.md")).unwrap();
    symlink(&secret, files.join("memory/sub/ok.md")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).2, 1, "{r}");
    assert!(sources(&env, "acme", "pelican").is_empty());
    assert!(sources(&env, "acme", CANARY).is_empty());
}

#[test]
fn symlinks_made_inside_the_sandbox_are_not_followed() {
    if !sandbox_or_skip("symlinks_made_inside_the_sandbox_are_not_followed") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    env.create("other");
    let secret = env.dir.path().join("secret.md");
    fs::write(&secret, format!("{CANARY} host secret\n")).unwrap();
    fs::create_dir_all(env.files("other").join("memory")).unwrap();
    fs::write(
        env.files("other").join("memory/x.md"),
        format!("{CANARY} other tenant note\n"),
    )
    .unwrap();
    // Host paths: dangling inside the sandbox, but the indexer runs on the host.
    let script = format!(
        "ln -s {} /workspace/MEMORY.md && ln -s {} /workspace/memory && ls -la /workspace",
        secret.display(),
        env.files("other").join("memory").display()
    );
    let out = env.sh("acme", &script);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(fs::symlink_metadata(env.files("acme").join("MEMORY.md"))
        .unwrap()
        .file_type()
        .is_symlink());
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 0, "{r}");
    assert!(sources(&env, "acme", CANARY).is_empty());
    let out = env.bulkhead(&["--json", "memory", "stats", "acme"]);
    assert_eq!(ok_json(&out)["chunks"], 0);
}

#[test]
fn sessions_are_indexed_past_thresholds_and_after_compaction() {
    let env = TestEnv::new();
    env.create("acme");
    let p = Platform::open(PlatformConfig {
        state_dir: env.state(),
        ..PlatformConfig::default()
    })
    .unwrap();
    let s = p.workspace("acme").unwrap().sessions();
    let mut h = s.create(Some("s1"), LockMode::FailFast).unwrap();
    h.push(Event::user_message("Where is the flamingo dashboard?"))
        .unwrap();
    h.push(Event::assistant_message(
        "The flamingo dashboard is at grafana/d/flamingo.",
    ))
    .unwrap();
    h.commit().unwrap();

    // Below the default thresholds (10 messages, 8 KiB): not yet.
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 1, 0), "{r}");
    assert!(sources(&env, "acme", "flamingo").is_empty());

    let th = ["--session-min-messages", "2"];
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (1, 0, 0), "{r}");
    assert_eq!(sources(&env, "acme", "flamingo dashboard"), ["session:s1"]);

    // One more message: below the threshold of 2.
    h.push(Event::user_message("And the heron runbook?"))
        .unwrap();
    h.commit().unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (0, 1, 0), "{r}");
    assert!(sources(&env, "acme", "heron").is_empty());

    // A compaction: indexed again whatever the thresholds, summary included.
    h.push(Event::compaction(
        "Summary: the pelican incident was resolved.",
        3,
    ))
    .unwrap();
    h.commit().unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (1, 0, 0), "{r}");
    assert_eq!(sources(&env, "acme", "pelican incident"), ["session:s1"]);
    assert_eq!(sources(&env, "acme", "heron runbook"), ["session:s1"]);
    drop(h);

    // A removed session's chunks go.
    s.remove("s1").unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (0, 0, 1), "{r}");
    assert!(sources(&env, "acme", "flamingo").is_empty());
}
