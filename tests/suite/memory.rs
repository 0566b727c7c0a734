//! Memory through `bulkhead memory …`: store/search/get/rm round trip with `--json`, exit
//! codes for unknown workspaces and chunks, isolation between workspaces, CJK search,
//! keyword-only and hash-embedder modes, and refusal of a newer schema.

use std::io::Write;
use std::process::Stdio;

use bulkhead::error::exit;
use bulkhead_tests::{ok_json, text, TestEnv};
use serde_json::Value;

fn store(env: &TestEnv, ws: &str, content: &str, extra: &[&str]) -> Vec<i64> {
    let mut args = vec!["--json", "memory", "store", ws, content];
    args.extend_from_slice(extra);
    let v = ok_json(&env.bulkhead(&args));
    v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn search(env: &TestEnv, ws: &str, q: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--json", "memory", "search", ws, q];
    args.extend_from_slice(extra);
    ok_json(&env.bulkhead(&args)).as_array().unwrap().clone()
}

fn ids(hits: &[Value]) -> Vec<i64> {
    hits.iter().map(|h| h["id"].as_i64().unwrap()).collect()
}

#[test]
fn store_search_get_rm_round_trip() {
    let env = TestEnv::new();
    env.create("acme");
    let a = store(
        &env,
        "acme",
        "The staging database listens on port 5433.",
        &[],
    )[0];
    let b = store(
        &env,
        "acme",
        "Lunch is at noon on Fridays.",
        &["--source", "notes.md"],
    )[0];
    // Standard input.
    let mut child = env
        .cmd()
        .args([
            "--json", "memory", "store", "acme", "--source", "stdin", "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"# Deploys\n\nDeploys happen on Tuesdays after review.\n")
        .unwrap();
    let c = ok_json(&child.wait_with_output().unwrap())["ids"][0]
        .as_i64()
        .unwrap();

    let hits = search(
        &env,
        "acme",
        "which port does the staging database use",
        &[],
    );
    assert_eq!(ids(&hits)[0], a);
    let h = &hits[0];
    assert_eq!(h["source"], "cli");
    assert!(h["score"].as_f64().unwrap() > 0.0 && h["score"].as_f64().unwrap() <= 1.0);
    assert!(h["snippet"].as_str().unwrap().contains("5433"));
    assert_eq!(ids(&search(&env, "acme", "deploys tuesday", &[]))[0], c);
    assert_eq!(
        ids(&search(
            &env,
            "acme",
            "lunch",
            &["--mode", "keyword", "--limit", "1"]
        )),
        vec![b]
    );

    let got = ok_json(&env.bulkhead(&["--json", "memory", "get", "acme", &b.to_string()]));
    assert_eq!(got["text"], "Lunch is at noon on Fridays.");
    assert_eq!(got["source"], "notes.md");
    let plain = env.bulkhead(&["memory", "get", "acme", &b.to_string()]);
    assert_eq!(text(&plain.stdout), "Lunch is at noon on Fridays.\n");

    let st = ok_json(&env.bulkhead(&["--json", "memory", "stats", "acme"]));
    assert_eq!(st["chunks"], 3);
    assert_eq!(st["sources"], 3);

    let rm = ok_json(&env.bulkhead(&["--json", "memory", "rm", "acme", &b.to_string()]));
    assert_eq!(rm["removed"], b);
    assert!(search(&env, "acme", "lunch", &[]).is_empty());
    // Unknown chunk and unknown workspace: exit 3.
    for args in [
        vec!["memory", "get", "acme", &*b.to_string()],
        vec!["memory", "rm", "acme", &*b.to_string()],
        vec!["memory", "get", "nope", "1"],
        vec!["memory", "search", "nope", "x"],
        vec!["memory", "store", "nope", "x"],
        vec!["memory", "stats", "nope"],
    ] {
        let out = env.bulkhead(&args);
        assert_eq!(
            out.status.code(),
            Some(exit::NOT_FOUND),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = env.bulkhead(&["--json", "memory", "get", "acme", "999"]);
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["exit_code"], exit::NOT_FOUND);
    // Bad usage: exit 2.
    let out = env.bulkhead(&["memory", "search", "acme", "x", "--mode", "fuzzy"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let out = env.bulkhead(&[
        "memory",
        "search",
        "acme",
        "x",
        "--mode",
        "vector",
        "--embedder",
        "none",
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit::USAGE),
        "vector without an embedder"
    );
    let out = env.bulkhead(&["memory", "store", "acme", "   "]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    // The database is beside files/, out of the sandbox's view.
    assert!(env.state().join("workspaces/acme/memory.db").is_file());
    assert!(!env.files("acme").join("memory.db").exists());
}

#[test]
fn workspaces_never_see_each_others_memory() {
    let env = TestEnv::new();
    env.create("alpha");
    env.create("beta");
    store(
        &env,
        "alpha",
        "alpha secret: the launch code is swordfish",
        &["--embedder", "hash"],
    );
    store(
        &env,
        "beta",
        "beta notes: nothing to see",
        &["--embedder", "hash"],
    );
    for mode in ["keyword", "vector", "hybrid"] {
        let hits = search(
            &env,
            "beta",
            "launch code swordfish",
            &["--mode", mode, "--embedder", "hash"],
        );
        for h in &hits {
            assert!(
                !h["snippet"].as_str().unwrap().contains("swordfish"),
                "{mode}: {h}"
            );
        }
        let hits = search(
            &env,
            "alpha",
            "launch code swordfish",
            &["--mode", mode, "--embedder", "hash"],
        );
        assert!(
            hits[0]["snippet"].as_str().unwrap().contains("swordfish"),
            "{mode}"
        );
    }
    // Ids are per workspace: alpha's id 1 is not beta's.
    let got = ok_json(&env.bulkhead(&["--json", "memory", "get", "beta", "1"]));
    assert!(got["text"].as_str().unwrap().starts_with("beta"));
}

#[test]
fn cjk_search_and_embedder_modes() {
    let env = TestEnv::new();
    env.create("jp");
    let tokyo = store(
        &env,
        "jp",
        "東京の天気は晴れです。明日は雨が降るでしょう。",
        &["--embedder", "none"],
    )[0];
    store(
        &env,
        "jp",
        "大阪のたこ焼きは美味しい。",
        &["--embedder", "none"],
    );
    assert_eq!(ids(&search(&env, "jp", "東京の天気", &[]))[0], tokyo);
    assert_eq!(ids(&search(&env, "jp", "天気", &[])), vec![tokyo]);
    // Keyword-only stores have no vectors; the hash embedder reports them as stale.
    let st = ok_json(&env.bulkhead(&["--json", "memory", "stats", "jp", "--embedder", "hash"]));
    assert_eq!(st["embedded"], 0);
    assert_eq!(st["stale"], 2);
    let out = env.bulkhead(&["memory", "reembed", "jp", "--embedder", "none"]);
    assert_eq!(
        out.status.code(),
        Some(exit::USAGE),
        "reembed needs an embedder"
    );
    let r = ok_json(&env.bulkhead(&["--json", "memory", "reembed", "jp", "--embedder", "hash"]));
    assert_eq!(r["embedded"], 2);
    let hits = search(
        &env,
        "jp",
        "天気",
        &["--mode", "vector", "--embedder", "hash"],
    );
    assert_eq!(ids(&hits)[0], tokyo);
    let id = store(
        &env,
        "jp",
        "postgres replication runbook",
        &["--embedder", "hash"],
    )[0];
    let got = ok_json(&env.bulkhead(&["--json", "memory", "get", "jp", &id.to_string()]));
    assert_eq!(got["embedding"]["provider"], "hash");
    assert_eq!(got["embedding"]["dims"], 384);
    let hits = search(
        &env,
        "jp",
        "replication runbook",
        &["--mode", "vector", "--embedder", "hash"],
    );
    assert_eq!(ids(&hits), vec![id]);
}

#[test]
fn a_newer_schema_is_refused() {
    let env = TestEnv::new();
    env.create("acme");
    store(&env, "acme", "hello", &[]);
    let db = env.state().join("workspaces/acme/memory.db");
    // Bump user_version in the SQLite header (offset 60, big-endian) past what we know.
    let mut bytes = std::fs::read(&db).unwrap();
    let v = u32::from_be_bytes(bytes[60..64].try_into().unwrap());
    assert!(v >= 1);
    bytes[60..64].copy_from_slice(&(v + 100).to_be_bytes());
    std::fs::write(&db, &bytes).unwrap();
    let out = env.bulkhead(&["memory", "stats", "acme"]);
    assert_eq!(out.status.code(), Some(exit::FAILURE));
    assert!(
        text(&out.stderr).contains("newer than this bulkhead knows"),
        "{}",
        text(&out.stderr)
    );
}
