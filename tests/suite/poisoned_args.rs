//! Poisoned tool arguments and parameters against one shared server: one `bulkhead serve
//! --stdio` holds tenants A and B; A's model (the offline mock on 127.0.0.1) sends huge and
//! negative numbers, `u64::MAX` offsets and limits, `1e300` timeouts, NaN-like strings, deep
//! paths, NUL bytes, an empty `old` and wrong types to every tool. Each must come back to the
//! model as a tool error (or an answer), never crash the server: B's run in the same process
//! answers afterwards. Also: poisoned JSON-RPC parameters, and the release profile unwinds.

use std::time::Duration;

use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};
use bulkhead_tests::{sandbox_or_skip, TestEnv};
use serde_json::{json, Value};

use super::rpc::Server;

const MODEL: &str = "anthropic/claude-sonnet-4-5";

/// `(tool, arguments, a piece of the error the model must read)`; `None` for a call that may
/// succeed (an answer is as good as an error, as long as the server lives).
fn poisons() -> Vec<(&'static str, Value, Option<&'static str>)> {
    let deep = "a/".repeat(5000) + "f.txt";
    vec![
        // bash
        (
            "bash",
            json!({"command": "true", "timeout_secs": 1e300}),
            Some("timeout_secs"),
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": f64::MAX}),
            Some("timeout_secs"),
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": -1}),
            Some("timeout_secs"),
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": u64::MAX}),
            Some("timeout_secs"),
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": "NaN"}),
            Some("timeout_secs"),
        ),
        (
            "bash",
            json!({"command": "true", "timeout_secs": "inf"}),
            Some("timeout_secs"),
        ),
        ("bash", json!({"command": "echo a\u{0}b"}), Some("NUL")),
        ("bash", json!({"command": 12}), Some("command")),
        ("bash", json!({"command": ["ls"]}), Some("command")),
        (
            "bash",
            json!({"command": "x".repeat(200_000)}),
            Some("command"),
        ),
        ("bash", json!({}), Some("command")),
        // read
        (
            "read",
            json!({"path": "notes.txt", "offset": 2, "limit": u64::MAX}),
            Some("limit"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": u64::MAX}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": u64::MAX, "limit": u64::MAX}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": -5}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": i64::MIN}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "limit": 0}),
            Some("limit"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "limit": 1e300}),
            Some("limit"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": "NaN"}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": 2.5}),
            Some("offset"),
        ),
        (
            "read",
            json!({"path": "notes.txt", "offset": 999_999_999}),
            Some("past the end"),
        ),
        ("read", json!({"path": "no\u{0}tes.txt"}), Some("NUL")),
        ("read", json!({"path": deep}), Some("path")),
        ("read", json!({"path": 7}), Some("path")),
        // write
        ("write", json!({"path": deep, "content": "x"}), Some("path")),
        (
            "write",
            json!({"path": "a\u{0}b", "content": "x"}),
            Some("NUL"),
        ),
        (
            "write",
            json!({"path": "w.txt", "content": 5}),
            Some("content"),
        ),
        ("write", json!({"path": "", "content": "x"}), Some("path")),
        // edit
        (
            "edit",
            json!({"path": "notes.txt", "old": "", "new": "x"}),
            Some("old"),
        ),
        (
            "edit",
            json!({"path": "n\u{0}otes.txt", "old": "a", "new": "x"}),
            Some("NUL"),
        ),
        (
            "edit",
            json!({"path": "notes.txt", "old": "one", "new": "x", "replace_all": "yes"}),
            Some("replace_all"),
        ),
        (
            "edit",
            json!({"path": deep, "old": "a", "new": "b"}),
            Some("path"),
        ),
        // ls
        ("ls", json!({"path": "x\u{0}y"}), Some("NUL")),
        ("ls", json!({"path": deep}), Some("path")),
        ("ls", json!({"path": ["x"]}), Some("path")),
        // memory
        (
            "memory_search",
            json!({"query": "x", "limit": u64::MAX}),
            Some("limit"),
        ),
        (
            "memory_search",
            json!({"query": "x", "limit": -1}),
            Some("limit"),
        ),
        (
            "memory_search",
            json!({"query": "x", "limit": 1e300}),
            Some("limit"),
        ),
        ("memory_search", json!({"query": ""}), Some("query")),
        ("memory_search", json!({"query": 5}), Some("query")),
        ("memory_store", json!({"content": 1e300}), Some("content")),
        (
            "memory_store",
            json!({"content": "poison\u{0}with a NUL"}),
            None,
        ),
        // skills
        ("skill_list", json!({"x": 1}), None),
        ("skill_execute", json!({"skill": "../../etc/passwd"}), None),
        ("skill_execute", json!({"skill": "ec\u{0}ho"}), None),
        ("skill_execute", json!({"skill": u64::MAX}), Some("skill")),
        (
            "skill_execute",
            json!({"skill": "echo", "params": "NaN"}),
            Some("params"),
        ),
        // subagents
        ("spawn_subagents", json!({"tasks": []}), Some("tasks")),
        ("spawn_subagents", json!({"tasks": "x"}), Some("tasks")),
        (
            "spawn_subagents",
            json!({"tasks": [{"task": 5}]}),
            Some("task"),
        ),
        (
            "spawn_subagents",
            json!({"tasks": [{"label": "no task"}]}),
            Some("task"),
        ),
        // not a tool at all, and arguments that are not an object
        ("no_such_tool", json!({}), Some("unknown tool")),
        ("read", json!("not an object"), Some("arguments")),
    ]
}

/// A skill for A, so `skill_list` / `skill_execute` are offered.
fn echo_skill(env: &TestEnv) {
    env.write_skill(
        "echo",
        "name = \"echo\"\ndescription = \"prints its parameters\"",
        "execute.sh",
        "#!/bin/sh\ncat\n",
    );
}

#[test]
fn poisoned_tool_arguments_fail_that_call_and_the_server_serves_the_other_tenant() {
    if !sandbox_or_skip(
        "poisoned_tool_arguments_fail_that_call_and_the_server_serves_the_other_tenant",
    ) {
        return;
    }
    let env = TestEnv::new();
    env.create("tenant-a");
    env.create("tenant-b");
    echo_skill(&env);
    let o = env.bulkhead(&["skill", "enable", "tenant-a", "echo"]);
    assert!(o.status.success(), "{}", bulkhead_tests::text(&o.stderr));
    std::fs::write(env.files("tenant-a").join("notes.txt"), "one\ntwo\nthree\n").unwrap();

    let poisons = poisons();
    let calls: Vec<(String, Value)> = poisons
        .iter()
        .map(|(t, a, _)| (t.to_string(), a.clone()))
        .collect();
    let mock = MockLlm::start(
        Script::new()
            .step(Step::reply(Reply::tool_calls(calls)).containing("poison-run-a"))
            .step(
                Step::reply(Reply::text("A survived."))
                    .containing("poison-run-a")
                    .after_tool_result(true),
            )
            .step(Step::reply(Reply::text("B answered.")).containing("question-from-b")),
    );
    let mut s = Server::start(&env, &[]);
    let pid = s.child.id();

    let id = s.request(
        "run",
        json!({"workspace": "tenant-a", "message": "poison-run-a", "model": MODEL,
               "base_url": mock.base_url(), "session": "a1"}),
    );
    let (r, notes) = s.response(&json!(id), Duration::from_secs(300));
    assert_eq!(r["result"]["text"], "A survived.", "{r}");
    let results: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "run.event" && n["params"]["event"]["type"] == "tool_result")
        .map(|n| &n["params"]["event"])
        .collect();
    assert_eq!(
        results.len(),
        poisons.len(),
        "one result per poisoned call: {results:#?}"
    );
    let state = env.state().display().to_string();
    for ((tool, args, want), res) in poisons.iter().zip(&results) {
        let out = res["output"].as_str().unwrap_or_default();
        let shown: String = args.to_string().chars().take(120).collect();
        assert_eq!(res["name"], *tool, "{shown}");
        if let Some(piece) = want {
            assert_eq!(res["is_error"], true, "{tool} {shown}: {out}");
            assert!(
                out.contains(piece),
                "{tool} {shown}: expected {piece:?} in {out}"
            );
        }
        assert!(
            !out.contains(&state),
            "{tool} {shown}: a host path reached the model: {out}"
        );
    }
    // The file the read/edit poisons aimed at is intact.
    assert_eq!(
        std::fs::read_to_string(env.files("tenant-a").join("notes.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );

    // The other tenant is served by the same process.
    let r = s.call(
        "run",
        json!({"workspace": "tenant-b", "message": "question-from-b", "model": MODEL,
               "base_url": mock.base_url()}),
    );
    assert_eq!(r["text"], "B answered.", "{r}");
    assert_eq!(s.child.id(), pid);
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "the server exited during the test"
    );
    mock.assert_script_consumed();
    assert_eq!(s.close(Duration::from_secs(30)), 0);
}

#[test]
fn poisoned_rpc_parameters_are_invalid_params_and_the_server_goes_on() {
    let env = TestEnv::new();
    env.create("p");
    let mut s = Server::start(&env, &[]);
    for (method, params) in [
        (
            "run",
            json!({"workspace": "p", "message": "m", "timeout_secs": 1e300}),
        ),
        (
            "run",
            json!({"workspace": "p", "message": "m", "timeout_secs": -1}),
        ),
        (
            "run",
            json!({"workspace": "p", "message": "m", "max_steps": u64::MAX}),
        ),
        (
            "run",
            json!({"workspace": "p", "message": "m", "retries": u64::MAX}),
        ),
        (
            "exec",
            json!({"workspace": "p", "argv": ["true"], "timeout_secs": 1e300}),
        ),
        (
            "exec",
            json!({"workspace": "p", "argv": ["true"], "timeout_secs": "NaN"}),
        ),
        (
            "memory.search",
            json!({"workspace": "p", "query": "x", "limit": u64::MAX}),
        ),
        (
            "workspace.net.log",
            json!({"workspace": "p", "limit": u64::MAX}),
        ),
        ("memory.get", json!({"workspace": "p", "id": u64::MAX})),
        (
            "workspace.hook.add",
            json!({"workspace": "p", "event": "before_tool_call", "path": "/x", "timeout_secs": u64::MAX}),
        ),
    ] {
        let e = s.call_err(method, params.clone());
        assert!(
            e["code"] == -32602 || e["code"] == -32001,
            "{method} {params}: {e}"
        );
    }
    // Raw lines: deep nesting, huge numbers, NUL, and then the server still answers.
    s.send_raw(format!("{}\n", "[".repeat(100_000)).as_bytes());
    s.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1e400,\"method\":\"workspace.list\"}\n");
    s.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":\"\\u0000\",\"method\":\"\\u0000\"}\n");
    let list = s.call("workspace.list", json!({}));
    assert!(list.to_string().contains("\"p\""), "{list}");
    assert!(s.child.try_wait().unwrap().is_none());
    assert_eq!(s.close(Duration::from_secs(30)), 0);
}

/// The release profile unwinds, so the request and run boundaries' `catch_unwind` hold in
/// the shipped build too (with `abort`, any panic kills every tenant's runs).
#[test]
fn the_release_profile_unwinds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let section = toml
        .split("\n[")
        .find(|s| s.starts_with("profile.release]"))
        .expect("Cargo.toml has a [profile.release] section");
    let panic: Vec<&str> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("panic"))
        .collect();
    assert_eq!(panic, vec!["panic = \"unwind\""], "{section}");
    // The launcher clones children that return into its own code: it keeps aborting on a
    // panic through a hook, whatever the profile.
    let launcher = std::fs::read_to_string(root.join("launcher/src/lib.rs")).unwrap();
    let main = &launcher[launcher.find("fn main() {").expect("launcher main")..];
    let hook = main
        .find("std::panic::set_hook")
        .expect("the launcher sets a panic hook");
    let abort = main.find("std::process::abort()").expect("the hook aborts");
    assert!(
        hook < abort && abort < 800,
        "the abort hook comes first in main: {main:.800}"
    );
}
