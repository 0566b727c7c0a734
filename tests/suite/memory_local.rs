//! The built-in offline embedder through the CLI: it is the default (no key, no network),
//! it finds text by meaning where no word is shared, `[memory] embedder` and
//! `$BULKHEAD_MEMORY_EMBEDDER` choose another, and a bad setting is a clear error.

use bulkhead::error::exit;
use bulkhead_tests::{ok_json, text, TestEnv};

fn store(env: &TestEnv, ws: &str, content: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["--json", "memory", "store", ws, content];
    args.extend_from_slice(extra);
    ok_json(&env.bulkhead(&args))["ids"][0].as_i64().unwrap()
}

fn top(env: &TestEnv, ws: &str, q: &str, extra: &[&str]) -> Option<i64> {
    let mut args = vec!["--json", "memory", "search", ws, q];
    args.extend_from_slice(extra);
    ok_json(&env.bulkhead(&args))
        .as_array()
        .unwrap()
        .first()
        .map(|h| h["id"].as_i64().unwrap())
}

const NOTES: [&str; 4] = [
    "The automobile needs a new engine before the road trip.",
    "Quarterly revenue grew in Europe thanks to the new pricing.",
    "Chocolate cake: melt the butter, then fold in the flour.",
    "The staging database listens on port 5433.",
];

#[test]
fn local_model_is_the_default_and_finds_by_meaning() {
    let env = TestEnv::new();
    env.create("acme");
    let ids: Vec<i64> = NOTES.iter().map(|n| store(&env, "acme", n, &[])).collect();
    let got = ok_json(&env.bulkhead(&["--json", "memory", "get", "acme", &ids[0].to_string()]));
    assert_eq!(got["embedding"]["provider"], "local");
    assert_eq!(got["embedding"]["dims"], 256);
    let st = ok_json(&env.bulkhead(&["--json", "memory", "stats", "acme"]));
    assert_eq!(st["embedded"], 4, "{st}");
    assert_eq!(st["stale"], 0, "{st}");
    assert_eq!(st["embedder"]["provider"], "local", "{st}");
    // No word in common with the note it should find: keyword search has nothing, the
    // local model finds it by meaning.
    let q = "car motor repair";
    assert_eq!(top(&env, "acme", q, &["--mode", "keyword"]), None);
    assert_eq!(top(&env, "acme", q, &["--mode", "vector"]), Some(ids[0]));
    assert_eq!(top(&env, "acme", q, &[]), Some(ids[0]), "hybrid");
    assert_eq!(
        top(&env, "acme", "dessert baking recipe", &["--mode", "vector"]),
        Some(ids[2])
    );
    assert_eq!(
        top(
            &env,
            "acme",
            "sales income increased",
            &["--mode", "vector"]
        ),
        Some(ids[1])
    );
}

#[test]
fn config_and_environment_choose_the_embedder() {
    let env = TestEnv::new();
    env.create("kw");
    let cfg = env.state().join("config.toml");
    let base = std::fs::read_to_string(&cfg).unwrap_or_default();
    std::fs::write(&cfg, format!("{base}\n[memory]\nembedder = \"none\"\n")).unwrap();
    let id = store(&env, "kw", NOTES[3], &[]);
    let got = ok_json(&env.bulkhead(&["--json", "memory", "get", "kw", &id.to_string()]));
    assert!(got["embedding"].is_null(), "keyword-only: {got}");
    // Keyword search is first-class without an embedder.
    assert_eq!(top(&env, "kw", "staging database port", &[]), Some(id));
    // The environment wins over the file; the flag wins over both.
    let out = env
        .cmd()
        .args(["--json", "memory", "stats", "kw"])
        .env("BULKHEAD_MEMORY_EMBEDDER", "hash")
        .output()
        .unwrap();
    assert_eq!(ok_json(&out)["embedder"]["provider"], "hash");
    let st = ok_json(&env.bulkhead(&["--json", "memory", "stats", "kw", "--embedder", "local"]));
    assert_eq!(st["embedder"]["provider"], "local");
    assert_eq!(st["stale"], 1, "stored keyword-only: needs a re-embed");
    let r = ok_json(&env.bulkhead(&["--json", "memory", "reembed", "kw", "--embedder", "local"]));
    assert_eq!(r["embedded"], 1);

    // Bad settings name what is wrong and what to write.
    let out = env.bulkhead(&["memory", "stats", "kw", "--embedder", "bert"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    assert!(text(&out.stderr).contains("local, none, hash or provider/model"));
    std::fs::write(&cfg, format!("{base}\n[memory]\nembedder = \"bert\"\n")).unwrap();
    let out = env.bulkhead(&["memory", "stats", "kw"]);
    assert_eq!(
        out.status.code(),
        Some(exit::USAGE),
        "{}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("memory.embedder") && err.contains("config.toml"),
        "{err}"
    );
    // A provider without a key fails before any connection, saying how to give one.
    std::fs::write(
        &cfg,
        format!("{base}\n[memory]\nembedder = \"openai/text-embedding-3-small\"\n"),
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["memory", "stats", "kw"])
        .env_remove("OPENAI_API_KEY")
        .env_remove("BULKHEAD_CREDENTIAL_KEY")
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no API key"),
        "{}",
        text(&out.stderr)
    );
}
