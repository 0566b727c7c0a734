//! `bulkhead serve --stdio` end to end: the real binary over pipes, the offline mock model on
//! 127.0.0.1 for runs. The OpenRPC document, workspaces, exec in the sandbox, a run whose
//! events arrive as notifications before its answer, cancellation, bad input that leaves
//! the server alive, an oversized line, concurrent requests, shutdown at end of input, and
//! the example clients (python3, node) against the same server and mock.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step};
use bulkhead_tests::{bin, sandbox_or_skip, skip_as, text, TestEnv};
use serde_json::{json, Value};

pub(super) const KEY: &str = "sk-ant-rpc-test-0123456789abcdef";
pub(super) const MODEL: &str = "anthropic/claude-sonnet-4-5";
const CANCELLED: i64 = -32800;

/// A `bulkhead` command against `env`'s state dir with only PATH and the test key in its
/// environment.
pub(super) fn cmd(env: &TestEnv) -> Command {
    let mut c = env.cmd();
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c.env("ANTHROPIC_API_KEY", KEY);
    c
}

/// A running `bulkhead serve --stdio` and the lines it printed (also used by
/// `deadlines.rs`).
pub(super) struct Server {
    pub(super) child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    /// Lines received but not yet taken by `response`.
    seen: Vec<Value>,
    next_id: u64,
}

impl Server {
    /// `bulkhead serve --stdio EXTRA…` against `env`.
    pub(super) fn start(env: &TestEnv, extra: &[&str]) -> Server {
        Server::start_with(cmd(env), extra)
    }

    /// `c serve --stdio EXTRA…` (`c` carries the global flags).
    pub(super) fn start_with(mut c: Command, extra: &[&str]) -> Server {
        let mut child = c
            .args(["serve", "--stdio"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start bulkhead serve --stdio");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout carries a non-JSON line ({e}): {line}"));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            stdin,
            lines: rx,
            seen: Vec::new(),
            next_id: 1,
        }
    }

    pub(super) fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(bytes).unwrap();
        w.flush().unwrap();
    }

    fn send(&mut self, msg: &Value) {
        let mut line = msg.to_string();
        line.push('\n');
        self.send_raw(line.as_bytes());
    }

    /// Sends a request; returns its id.
    pub(super) fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        id
    }

    /// Receives lines until the answer to `id` (`Value::Null` for an id-null error), keeping
    /// the others; returns the answer and every notification received before it.
    pub(super) fn response(&mut self, id: &Value, timeout: Duration) -> (Value, Vec<Value>) {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .seen
                .iter()
                .position(|l| l.get("id") == Some(id) && l.get("method").is_none())
            {
                let r = self.seen.remove(i);
                let notes = self
                    .seen
                    .iter()
                    .filter(|l| l.get("method").is_some())
                    .cloned()
                    .collect();
                return (r, notes);
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no answer to {id} in {timeout:?}; got {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the server exited before answering {id}; got {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// `method(params)` → its result (panics on an error answer).
    pub(super) fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        let (r, _) = self.response(&json!(id), Duration::from_secs(120));
        assert!(r.get("error").is_none(), "{method}: {r}");
        assert_eq!(r["jsonrpc"], "2.0");
        r["result"].clone()
    }

    /// `method(params)` → its error object (panics on a result).
    pub(super) fn call_err(&mut self, method: &str, params: Value) -> Value {
        let id = self.request(method, params);
        let (r, _) = self.response(&json!(id), Duration::from_secs(60));
        assert!(
            r.get("result").is_none(),
            "{method}: expected an error, got {r}"
        );
        r["error"].clone()
    }

    /// Closes stdin and waits for the exit status (bounded).
    pub(super) fn close(&mut self, timeout: Duration) -> i32 {
        drop(self.stdin.take());
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "the server did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Lines still to come after exit.
    fn drain(&mut self) -> Vec<Value> {
        let mut all = std::mem::take(&mut self.seen);
        while let Ok(v) = self.lines.recv_timeout(Duration::from_secs(2)) {
            all.push(v);
        }
        all
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn describe_is_an_openrpc_document_matching_rpc_describe() {
    let env = TestEnv::new();
    let out = cmd(&env).args(["serve", "--describe"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("describe prints JSON");
    assert_eq!(doc["openrpc"], "1.2.6");
    assert!(doc["info"]["title"].is_string());
    let version = doc["info"]["version"].as_str().unwrap();
    assert_eq!(version.split('.').count(), 3, "semver: {version}");
    assert!(doc["info"]["x-crate-version"].is_string());
    let methods = doc["methods"].as_array().unwrap();
    let names: Vec<&str> = methods
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    for want in [
        "rpc.describe",
        "workspace.create",
        "workspace.set",
        "workspace.list",
        "workspace.show",
        "workspace.delete",
        "workspace.net.show",
        "workspace.net.allow",
        "workspace.net.deny",
        "cred.set",
        "cred.list",
        "cred.rm",
        "session.list",
        "session.show",
        "session.rm",
        "memory.search",
        "memory.rm",
        "skill.list",
        "skill.show",
        "skill.enable",
        "skill.disable",
        "skill.run",
        "exec",
        "run",
        "run.cancel",
        "$/cancel",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for m in methods {
        let params = m["params"]
            .as_array()
            .unwrap_or_else(|| panic!("params: {m}"));
        for p in params {
            assert!(p["name"].is_string(), "{m}");
            assert!(p["schema"].is_object(), "{m}");
        }
        assert!(m["result"]["name"].is_string(), "{m}");
        assert!(m["result"]["schema"].is_object(), "{m}");
    }
    // rpc.describe returns the same document, and every method in it is dispatched: an
    // unknown parameter is refused by the method's own schema (-32602, never -32601).
    let mut s = Server::start(&env, &[]);
    assert_eq!(s.call("rpc.describe", json!({})), doc);
    for name in &names {
        let e = s.call_err(name, json!({"__not_a_param__": true}));
        assert_eq!(e["code"], -32602, "{name}: {e}");
    }
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn workspaces_are_created_listed_and_errors_carry_codes() {
    let env = TestEnv::new();
    let mut s = Server::start(&env, &[]);
    let w = s.call(
        "workspace.create",
        json!({"id": "acme", "limits": {"pids": 64}}),
    );
    assert_eq!(w["id"], "acme");
    assert_eq!(w["limits"]["pids"], 64);
    s.call("workspace.create", json!({"workspace": "beta"}));
    let list = s.call("workspace.list", json!({}));
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    assert_eq!(
        s.call("workspace.show", json!({"id": "acme"}))["id"],
        "acme"
    );
    let e = s.call_err("workspace.create", json!({"id": "acme"}));
    assert_eq!(e["code"], -32002, "{e}");
    assert_eq!(e["data"]["exit_code"], 4);
    let e = s.call_err("workspace.show", json!({"id": "ghost"}));
    assert_eq!(e["code"], -32001, "{e}");
    assert_eq!(e["data"]["exit_code"], 3);
    let e = s.call_err("workspace.create", json!({"id": "../etc"}));
    assert_eq!(e["code"], -32602, "{e}");
    // Network policy.
    let r = s.call(
        "workspace.net.allow",
        json!({"workspace": "acme", "patterns": ["example.com", "*.example.org"]}),
    );
    assert_eq!(r["added"], json!(["example.com", "*.example.org"]));
    let r = s.call(
        "workspace.net.deny",
        json!({"workspace": "acme", "patterns": ["a.example.org"]}),
    );
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(
        r["still_allowed_by"]["a.example.org"],
        json!(["*.example.org"])
    );
    assert_eq!(
        s.call("workspace.net.show", json!({"workspace": "acme"}))["enabled"],
        true
    );
    s.call("workspace.net.none", json!({"workspace": "acme"}));
    // Credentials: values never come back.
    let e = s.call_err("cred.list", json!({"workspace": "acme"}));
    assert_eq!(e["code"], -32004, "no credential key given: {e}");
    assert_eq!(
        s.call("workspace.delete", json!({"id": "beta"}))["deleted"],
        "beta"
    );
    assert_eq!(
        s.call("workspace.list", json!({}))
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn credentials_and_memory_over_rpc() {
    let env = TestEnv::new();
    env.create("acme");
    let key_file = env.dir.path().join("cred.key");
    std::fs::write(&key_file, "rpc test passphrase\n").unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    // The global flags come before `serve`.
    let mut c = cmd(&env);
    c.arg("--credential-key-file").arg(&key_file);
    let mut s = Server::start_with(c, &[]);
    let secret = "ghp_rpcsecretvalue0123456789";
    let r = s.call(
        "cred.set",
        json!({"workspace": "acme", "name": "github", "values": {"token": secret}}),
    );
    assert_eq!(r["keys"], json!(["token"]));
    let r = s.call(
        "cred.set",
        json!({"workspace": "acme", "name": "ci", "pairs": ["LOGIN=bot", "TOKEN=t0ps3cr3t-value"]}),
    );
    assert_eq!(r["keys"], json!(["LOGIN", "TOKEN"]));
    let e = s.call_err(
        "cred.set",
        json!({"workspace": "acme", "name": "ci", "pairs": ["t0ps3cr3t-without-key"]}),
    );
    assert_eq!(e["code"], -32602, "{e}");
    assert!(!e.to_string().contains("t0ps3cr3t"), "{e}");
    s.call("cred.rm", json!({"workspace": "acme", "name": "ci"}));
    let list = s.call("cred.list", json!({"workspace": "acme"}));
    assert_eq!(list, json!([{"name": "github", "keys": ["token"]}]));
    assert!(!list.to_string().contains(secret));
    let e = s.call_err("cred.rm", json!({"workspace": "acme", "name": "nope"}));
    assert_eq!(e["code"], -32001, "{e}");
    s.call("cred.rm", json!({"workspace": "acme", "name": "github"}));

    let stored = s.call(
        "memory.store",
        json!({"workspace": "acme", "content": "The staging database listens on port 5433.", "embedder": "none"}),
    );
    let id = stored["ids"][0].as_i64().unwrap();
    let hits = s.call(
        "memory.search",
        json!({"workspace": "acme", "query": "staging database port", "mode": "keyword", "embedder": "none"}),
    );
    assert_eq!(hits[0]["id"], id, "{hits}");
    assert!(
        s.call("memory.get", json!({"workspace": "acme", "id": id}))["text"]
            .as_str()
            .unwrap()
            .contains("5433")
    );
    s.call("memory.rm", json!({"workspace": "acme", "id": id}));
    let e = s.call_err("memory.get", json!({"workspace": "acme", "id": id}));
    assert_eq!(e["code"], -32001, "{e}");
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn exec_runs_in_the_sandbox() {
    if !sandbox_or_skip("rpc exec_runs_in_the_sandbox") {
        return;
    }
    let env = TestEnv::new();
    let mut s = Server::start(&env, &[]);
    s.call("workspace.create", json!({"id": "box"}));
    let r = s.call(
        "exec",
        json!({"workspace": "box", "argv": ["/bin/sh", "-c", "echo out; echo err >&2; cat; hostname; exit 3"], "stdin": "fed\n", "env": {"GREETING": "hi"}}),
    );
    assert_eq!(r["exit_code"], 3, "{r}");
    assert_eq!(r["stdout"], "out\nfed\nbox\n", "{r}");
    assert_eq!(r["stderr"], "err\n", "{r}");
    assert_eq!(r["stdout_base64"], "b3V0CmZlZApib3gK");
    let r = s.call(
        "exec",
        json!({"workspace": "box", "argv": ["/bin/sh", "-c", "echo $GREETING > /workspace/f; cat /proc/1/comm"], "env": {"GREETING": "hi"}}),
    );
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "bulkhead-worker\n");
    assert_eq!(
        std::fs::read_to_string(env.files("box").join("f")).unwrap(),
        "hi\n"
    );
    let r = s.call(
        "exec",
        json!({"workspace": "box", "argv": ["/no/such/program"]}),
    );
    assert_eq!(r["exit_code"], 127, "{r}");
    let r = s.call(
        "exec",
        json!({"workspace": "box", "argv": ["sleep", "30"], "timeout_secs": 0.5}),
    );
    assert_eq!(r["exit_code"], 124, "{r}");
    assert_eq!(r["timed_out"], true);
    // Cancelling an exec kills the command.
    let id = s.request("exec", json!({"workspace": "box", "argv": ["sleep", "30"]}));
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    s.send(&json!({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": id}}));
    let (r, _) = s.response(&json!(id), Duration::from_secs(10));
    assert_eq!(r["error"]["code"], CANCELLED, "{r}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

/// bash writes a file, then the answer quotes the tool result.
fn tool_then_answer() -> Script {
    Script::new()
        .reply(
            Reply::tool_call(
                "bash",
                json!({"command": "echo from-rpc > /workspace/rpc.txt && cat /workspace/rpc.txt"}),
            )
            .with_text("Writing the file."),
        )
        .step(Step::reply(Reply::echo_tool_result("The file says: ")).after_tool_result(true))
}

#[test]
fn a_run_streams_events_and_hook_events_before_its_answer() {
    if !sandbox_or_skip("rpc a_run_streams_events_and_hook_events_before_its_answer") {
        return;
    }
    let env = TestEnv::new();
    let mock = MockLlm::start(tool_then_answer());
    let mut s = Server::start(&env, &[]);
    s.call("workspace.create", json!({"id": "agent"}));
    let id = s.request(
        "run",
        json!({"workspace": "agent", "message": "write a file and read it", "model": MODEL,
               "base_url": mock.base_url(), "session": "s1"}),
    );
    let (r, notes) = s.response(&json!(id), Duration::from_secs(120));
    let result = &r["result"];
    assert_eq!(
        result["text"].as_str().unwrap().trim_end(),
        "The file says: from-rpc",
        "{r}"
    );
    assert_eq!(result["session"], "s1");
    assert_eq!(result["outcome"], "completed");
    assert!(result["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        std::fs::read_to_string(env.files("agent").join("rpc.txt")).unwrap(),
        "from-rpc\n"
    );
    let events: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "run.event")
        .map(|n| {
            assert_eq!(n["params"]["request_id"], json!(id));
            &n["params"]["event"]
        })
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"run_start"), "{types:?}");
    assert_eq!(types.last(), Some(&"run_end"), "{types:?}");
    for t in [
        "model_attempt",
        "text_delta",
        "tool_call",
        "tool_result",
        "assistant_message",
    ] {
        assert!(types.contains(&t), "{t} missing: {types:?}");
    }
    assert_eq!(events.last().unwrap()["response"], result["text"]);
    let hooks: Vec<&str> = notes
        .iter()
        .filter(|n| n["method"] == "hook.event")
        .map(|n| {
            assert_eq!(n["params"]["request_id"], json!(id));
            assert_eq!(n["params"]["payload"]["workspace"], "agent");
            n["params"]["event"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        hooks,
        [
            "session_start",
            "before_agent_start",
            "before_tool_call",
            "after_tool_call",
            "after_agent_end",
            "session_end"
        ]
    );
    // The session is there.
    let sessions = s.call("session.list", json!({"workspace": "agent"}));
    assert_eq!(sessions[0]["sid"], "s1", "{sessions}");
    let shown = s.call(
        "session.show",
        json!({"workspace": "agent", "session": "s1"}),
    );
    assert_eq!(
        shown["events"].as_array().unwrap().last().unwrap()["type"],
        "run_end"
    );
    // A model failure: every model failed, with the reason and the attempts.
    mock.push(Step::fault(Fault::Unauthorized));
    let e = s.call_err(
        "run",
        json!({"workspace": "agent", "message": "again", "model": MODEL,
               "base_url": mock.base_url(), "retries": 0}),
    );
    assert_eq!(e["code"], -32006, "{e}");
    assert_eq!(e["data"]["exit_code"], 9);
    assert_eq!(e["data"]["reason"], "auth", "{e}");
    assert!(!e["data"]["attempts"].as_array().unwrap().is_empty());
    assert!(!e.to_string().contains(KEY), "the key leaked: {e}");
    s.call("session.rm", json!({"workspace": "agent", "sid": "s1"}));
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

/// A model call that never answers (until the mock gives up after 60 s).
fn stalled() -> Script {
    Script::new().step(
        Step::fault(Fault::Stall {
            after_events: 1,
            max_secs: Some(60),
            reply: None,
        })
        .forever(),
    )
}

#[test]
fn a_run_is_cancelled_quickly_while_other_requests_are_served() {
    let env = TestEnv::new();
    env.create("slow");
    let mock = MockLlm::start(stalled());
    let mut s = Server::start(&env, &[]);
    let params = json!({"workspace": "slow", "message": "hang", "model": MODEL,
                        "base_url": mock.base_url(), "retries": 0});
    // Cancelled with the $/cancel notification.
    let run1 = s.request("run", params.clone());
    assert!(
        mock.wait_for_requests(1, Duration::from_secs(30)),
        "no model call"
    );
    // Concurrent requests are served while the run hangs.
    let t0 = Instant::now();
    let list = s.call("workspace.list", json!({}));
    assert_eq!(list[0]["id"], "slow");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let t0 = Instant::now();
    s.send(&json!({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": run1}}));
    let (r, notes) = s.response(&json!(run1), Duration::from_secs(10));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(r["error"]["code"], CANCELLED, "{r}");
    assert_eq!(r["error"]["data"]["exit_code"], 130, "{r}");
    assert!(notes
        .iter()
        .any(|n| n["method"] == "run.event" && n["params"]["event"]["type"] == "run_start"));

    // Cancelled with the run.cancel request.
    let run2 = s.request("run", params.clone());
    assert!(
        mock.wait_for_requests(2, Duration::from_secs(30)),
        "no model call"
    );
    let c = s.call("run.cancel", json!({"id": run2}));
    assert_eq!(c["cancelled"], true);
    let (r, _) = s.response(&json!(run2), Duration::from_secs(10));
    assert_eq!(r["error"]["code"], CANCELLED, "{r}");
    assert_eq!(
        s.call("run.cancel", json!({"id": 12345}))["cancelled"],
        false
    );
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn cancelling_a_run_kills_its_running_command() {
    if !sandbox_or_skip("rpc cancelling_a_run_kills_its_running_command") {
        return;
    }
    let env = TestEnv::new();
    env.create("stop");
    let mock = MockLlm::start(Script::new().reply(Reply::tool_call(
        "bash",
        json!({"command": "echo started > /workspace/started.txt; sleep 30; echo never > /workspace/never.txt"}),
    )));
    let mut s = Server::start(&env, &[]);
    let id = s.request(
        "run",
        json!({"workspace": "stop", "message": "sleep", "model": MODEL,
               "base_url": mock.base_url(), "session": "s"}),
    );
    let started = env.files("stop").join("started.txt");
    let t0 = Instant::now();
    while !started.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let t1 = Instant::now();
    s.send(&json!({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": id}}));
    let (r, _) = s.response(&json!(id), Duration::from_secs(10));
    assert!(t1.elapsed() < Duration::from_secs(5), "{:?}", t1.elapsed());
    assert_eq!(r["error"]["code"], CANCELLED, "{r}");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!env.files("stop").join("never.txt").exists());
    let run_dir = env.state().join("workspaces/stop/run");
    assert_eq!(
        std::fs::read_dir(&run_dir).unwrap().count(),
        0,
        "the sandbox is gone"
    );
    let shown = s.call("session.show", json!({"workspace": "stop", "sid": "s"}));
    assert_eq!(
        shown["events"].as_array().unwrap().last().unwrap()["outcome"],
        "cancelled"
    );
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn hooks_limits_and_skills_are_configured_over_rpc() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.create("cfg");
    let hook = env.dir.path().join("hook.sh");
    std::fs::write(&hook, "#!/bin/sh\necho '{\"decision\":\"allow\"}'\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hook = hook.to_str().unwrap();
    let mut s = Server::start(&env, &[]);
    let r = s.call(
        "workspace.hook.add",
        json!({"workspace": "cfg", "event": "before_tool_call", "path": hook, "timeout_secs": 2}),
    );
    assert_eq!(r["replaced"], false, "{r}");
    let list = s.call("workspace.hook.list", json!({"workspace": "cfg"}));
    assert_eq!(list["hooks"][0]["path"], hook, "{list}");
    let e = s.call_err(
        "workspace.hook.add",
        json!({"workspace": "cfg", "event": "before_tool_call", "path": "relative/hook.sh"}),
    );
    assert_eq!(e["code"], -32602, "{e}");
    s.call(
        "workspace.hook.rm",
        json!({"workspace": "cfg", "event": "before_tool_call", "path": hook}),
    );
    assert_eq!(
        s.call("workspace.hook.list", json!({"workspace": "cfg"}))["hooks"],
        json!([])
    );
    let r = s.call(
        "workspace.net.limits",
        json!({"workspace": "cfg", "max_connections": 8, "bandwidth": "1M"}),
    );
    assert_eq!(r["max_connections"], 8, "{r}");
    assert_eq!(r["bandwidth_bytes_per_sec"], 1 << 20, "{r}");
    assert_eq!(
        s.call("workspace.net.log", json!({"workspace": "cfg"})),
        json!([])
    );
    assert_eq!(s.call("skill.list", json!({"workspace": "cfg"})), json!([]));
    let e = s.call_err("skill.show", json!({"skill": "nope"}));
    assert_eq!(e["code"], -32001, "{e}");
    let e = s.call_err("skill.enable", json!({"workspace": "cfg", "skill": "nope"}));
    assert_eq!(e["code"], -32001, "{e}");
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn end_of_input_waits_then_cancels_in_flight_requests() {
    let env = TestEnv::new();
    env.create("eof");
    let mock = MockLlm::start(stalled());
    // Nothing in flight: exits at once.
    let mut s = Server::start(&env, &[]);
    let t0 = Instant::now();
    assert_eq!(s.close(Duration::from_secs(10)), 0);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // A hanging run: cancelled after the grace period, and its answer is still written.
    let mut s = Server::start(&env, &["--shutdown-grace", "1"]);
    let id = s.request(
        "run",
        json!({"workspace": "eof", "message": "hang", "model": MODEL, "base_url": mock.base_url()}),
    );
    assert!(
        mock.wait_for_requests(1, Duration::from_secs(30)),
        "no model call"
    );
    let t0 = Instant::now();
    assert_eq!(s.close(Duration::from_secs(15)), 0);
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    let lines = s.drain();
    let answer = lines
        .iter()
        .find(|l| l["id"] == json!(id))
        .unwrap_or_else(|| panic!("no answer to the run: {lines:#?}"));
    assert_eq!(answer["error"]["code"], CANCELLED, "{answer}");
}

#[test]
fn bad_input_gets_errors_and_the_server_stays_up() {
    let env = TestEnv::new();
    let mut s = Server::start(&env, &[]);
    s.send_raw(b"{this is not json\n");
    let (r, _) = s.response(&Value::Null, Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32700, "{r}");
    assert_eq!(r["id"], Value::Null);
    let e = s.call_err("no.such.method", json!({}));
    assert_eq!(e["code"], -32601, "{e}");
    let e = s.call_err("workspace.show", json!({"id": 5}));
    assert_eq!(e["code"], -32602, "{e}");
    s.send(&json!({"jsonrpc": "2.0", "id": 77, "method": "workspace.list", "params": [1, 2]}));
    let (r, _) = s.response(&json!(77), Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32602, "{r}");
    s.send(&json!({"jsonrpc": "2.0", "id": [1], "method": "workspace.list"}));
    let (r, _) = s.response(&Value::Null, Duration::from_secs(10));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    // A line over 16 MiB is refused; the next one is served.
    let mut big =
        b"{\"jsonrpc\":\"2.0\",\"id\":900,\"method\":\"workspace.list\",\"params\":{\"pad\":\""
            .to_vec();
    big.resize(big.len() + (16 << 20) + 10, b'x');
    big.extend_from_slice(b"\"}}\n");
    s.send_raw(&big);
    let (r, _) = s.response(&Value::Null, Duration::from_secs(30));
    assert_eq!(r["error"]["code"], -32600, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("16 MiB"),
        "{r}"
    );
    assert_eq!(s.call("workspace.list", json!({})), json!([]));
    assert!(
        s.seen.iter().all(|l| l["id"] != json!(900)),
        "the big line was served"
    );
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

#[test]
fn many_requests_in_flight_all_get_their_answers() {
    let env = TestEnv::new();
    let mut s = Server::start(&env, &[]);
    let ids: Vec<u64> = (0..20)
        .map(|i| s.request("workspace.create", json!({"id": format!("w{i:02}")})))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let (r, _) = s.response(&json!(id), Duration::from_secs(30));
        assert_eq!(r["result"]["id"], format!("w{i:02}"), "{r}");
    }
    assert_eq!(
        s.call("workspace.list", json!({}))
            .as_array()
            .unwrap()
            .len(),
        20
    );
    assert_eq!(s.close(Duration::from_secs(10)), 0);
}

/// Runs an example client (`interp script`) against the real binary and the mock model;
/// `None` (skip) when the interpreter is missing and skips are allowed.
fn run_example(interp: &str, script: &str) -> Option<std::process::Output> {
    let found = Command::new(interp)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip_as(
            &format!("example {script}"),
            format_args!("{interp} is not installed"),
        );
        return None;
    }
    let env = TestEnv::new();
    env.ensure_config();
    let mock = MockLlm::start(
        Script::new().step(Step::reply(Reply::text("Hello from the mock model.")).forever()),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(interp)
        .arg(root.join(script))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("BULKHEAD_BIN", bin("bulkhead"))
        .env("BULKHEAD_STATE_DIR", env.state())
        .env("BULKHEAD_MODEL", MODEL)
        .env("BULKHEAD_BASE_URL", mock.base_url())
        .env("ANTHROPIC_API_KEY", KEY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let shown = format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.status.success(), "{script}: {shown}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("run.event run_start"), "{shown}");
    assert!(stdout.contains("Hello from the mock model."), "{shown}");
    assert!(stdout.contains("hello from the sandbox"), "{shown}");
    assert!(stdout.contains("deleted workspace"), "{shown}");
    assert!(
        std::fs::read_dir(env.state().join("workspaces"))
            .unwrap()
            .next()
            .is_none(),
        "the demo left a workspace behind"
    );
    Some(out)
}

#[test]
fn the_python_example_client_works() {
    if !sandbox_or_skip("rpc the_python_example_client_works") {
        return;
    }
    run_example("python3", "examples/python/bulkhead_client.py");
}

#[test]
fn the_node_example_client_works() {
    if !sandbox_or_skip("rpc the_node_example_client_works") {
        return;
    }
    run_example("node", "examples/node/bulkhead_client.js");
}
