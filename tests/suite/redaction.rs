//! Redaction is per tenant: one `bulkhead serve --stdio` with two workspaces against the
//! offline mock model. A workspace's output is redacted of its own secrets (and the
//! operator's), never of another workspace's: A's `echo` of B's secret comes back to A
//! verbatim, B's is redacted, and after `cred rm` in B nothing is. A secret holding `"` and
//! `\` never reaches a JSON log line, raw or escaped.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use bulkhead_tests::mock_llm::{Fault, MockLlm, Reply, Script, Step};
use bulkhead_tests::{sandbox_or_skip, TestEnv};
use serde_json::{json, Value};

const KEY: &str = "sk-ant-redaction-test-0123456789abcdef";
const MODEL: &str = "anthropic/claude-sonnet-4-5";
/// B's credential: a guessable password A must not be able to confirm.
const B_SECRET: &str = "Summer2024!x";
/// B's second credential: JSON escaping would turn it into `Qu\"ote\\Back-7x`.
const B_JSON_SECRET: &str = "Qu\"ote\\Back-7x";

/// A `bulkhead serve --stdio` with JSON logs on stderr (kept in a file).
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Value>,
    seen: Vec<Value>,
    next_id: u64,
}

impl Server {
    fn start(env: &TestEnv, key_file: &std::path::Path, log: &std::path::Path) -> Server {
        let mut c: Command = env.cmd();
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ANTHROPIC_API_KEY", KEY)
            .env("BULKHEAD_LOG_FORMAT", "json")
            .env("BULKHEAD_LOG_LEVEL", "debug")
            .arg("--credential-key-file")
            .arg(key_file)
            .args(["serve", "--stdio"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap());
        let mut child = c.spawn().expect("start bulkhead serve --stdio");
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

    /// `method(params)` → (the answer, the notifications received before it).
    fn call_raw(&mut self, method: &str, params: Value) -> (Value, Vec<Value>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        let w = self.stdin.as_mut().expect("stdin open");
        w.write_all(line.as_bytes()).unwrap();
        w.flush().unwrap();
        let end = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(i) = self
                .seen
                .iter()
                .position(|l| l.get("id") == Some(&json!(id)) && l.get("method").is_none())
            {
                let r = self.seen.remove(i);
                let notes = std::mem::take(&mut self.seen);
                return (r, notes);
            }
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) => self.seen.push(v),
                Err(e) => panic!("no answer to {method} ({e}); got {:#?}", self.seen),
            }
        }
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let (r, _) = self.call_raw(method, params);
        assert!(r.get("error").is_none(), "{method}: {r}");
        r["result"].clone()
    }

    /// Closes stdin and waits for the exit status (bounded).
    fn close(&mut self) -> i32 {
        drop(self.stdin.take());
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < end, "the server did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// One run of `ws` whose model calls `bash` with `command`, then answers quoting the
/// result; returns (the answer's text, the tool result event's output, every event).
fn echo_run(s: &mut Server, mock: &MockLlm, ws: &str, command: &str) -> (String, String, String) {
    mock.push(Reply::tool_call("bash", json!({ "command": command })));
    mock.push(Step::reply(Reply::echo_tool_result("tool said: ")).after_tool_result(true));
    let (r, notes) = s.call_raw(
        "run",
        json!({"workspace": ws, "message": "run the command", "model": MODEL,
               "base_url": mock.base_url(), "stream": false}),
    );
    assert!(r.get("error").is_none(), "run in {ws}: {r}");
    let text = r["result"]["text"].as_str().unwrap_or_default().to_string();
    let events: Vec<&Value> = notes
        .iter()
        .filter(|n| n["method"] == "run.event")
        .map(|n| &n["params"]["event"])
        .collect();
    let output = events
        .iter()
        .find(|e| e["type"] == "tool_result")
        .and_then(|e| e["output"].as_str())
        .unwrap_or_else(|| panic!("no tool_result event in {events:#?}"))
        .to_string();
    (text, output, serde_json::to_string(&events).unwrap())
}

/// The session transcripts of `ws`, concatenated.
fn transcripts(env: &TestEnv, ws: &str) -> String {
    let dir = env.state().join("workspaces").join(ws).join("sessions");
    let mut all = String::new();
    for e in std::fs::read_dir(dir).unwrap() {
        all.push_str(&std::fs::read_to_string(e.unwrap().path()).unwrap_or_default());
    }
    all
}

#[test]
fn redaction_is_per_workspace_and_ends_with_cred_rm() {
    if !sandbox_or_skip("redaction_is_per_workspace_and_ends_with_cred_rm") {
        return;
    }
    let env = TestEnv::new();
    let key_file = env.dir.path().join("cred.key");
    std::fs::write(&key_file, "redaction test passphrase\n").unwrap();
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let log = env.dir.path().join("serve.log");
    let mock = MockLlm::start(Script::new());
    let mut s = Server::start(&env, &key_file, &log);
    s.call("workspace.create", json!({"id": "tenant-a"}));
    s.call("workspace.create", json!({"id": "tenant-b"}));
    s.call(
        "cred.set",
        json!({"workspace": "tenant-b", "name": "login", "values": {"password": B_SECRET}}),
    );
    let echo = format!("echo '{B_SECRET}'");

    // A's own output holding B's secret comes back to A as it is.
    let (text, output, events) = echo_run(&mut s, &mock, "tenant-a", &echo);
    assert!(output.contains(B_SECRET), "A's tool result: {output}");
    assert!(text.contains(B_SECRET), "A's answer: {text}");
    assert!(!events.contains("[redacted]"), "A's events: {events}");
    assert!(transcripts(&env, "tenant-a").contains(B_SECRET));
    let to_model = mock.requests();
    assert!(
        to_model.last().unwrap().contains(B_SECRET),
        "A's model saw its own tool result"
    );

    // B's output holding B's secret is redacted: in the answer, every event, the
    // transcript, and what B's model is sent.
    mock.clear_requests();
    let (text, output, events) = echo_run(&mut s, &mock, "tenant-b", &echo);
    assert!(output.contains("[redacted]"), "B's tool result: {output}");
    assert!(!output.contains(B_SECRET), "B's tool result: {output}");
    assert!(text.contains("[redacted]"), "B's answer: {text}");
    assert!(!text.contains(B_SECRET), "B's answer: {text}");
    assert!(!events.contains(B_SECRET), "B's events: {events}");
    assert!(!transcripts(&env, "tenant-b").contains(B_SECRET));
    for r in mock.requests() {
        assert!(!r.contains(B_SECRET), "B's model was sent B's secret");
    }

    // After `cred rm`, nothing is redacted for B.
    s.call("cred.rm", json!({"workspace": "tenant-b", "name": "login"}));
    let (text, output, _) = echo_run(&mut s, &mock, "tenant-b", &echo);
    assert!(
        output.contains(B_SECRET),
        "B's tool result after rm: {output}"
    );
    assert!(text.contains(B_SECRET), "B's answer after rm: {text}");

    // A secret with `"` and `\`: B's model server answers with an error echoing it. The
    // log line that reports the failure is redacted before it is serialized as JSON; the
    // run's error (to B) is redacted too.
    s.call(
        "cred.set",
        json!({"workspace": "tenant-b", "name": "db", "values": {"password": B_JSON_SECRET}}),
    );
    mock.push(Step::fault(Fault::BadRequest {
        message: format!("invalid value {B_JSON_SECRET} for field x"),
    }));
    let (r, notes) = s.call_raw(
        "run",
        json!({"workspace": "tenant-b", "message": "hello", "model": MODEL,
               "base_url": mock.base_url(), "stream": false, "retries": 0}),
    );
    let err = r["error"].to_string() + &serde_json::to_string(&notes).unwrap();
    assert!(r.get("error").is_some(), "the run fails: {r}");
    assert!(
        err.contains("invalid value [redacted] for field x"),
        "{err}"
    );
    assert!(!err.contains("Back-7x"), "{err}");
    assert_eq!(s.close(), 0);

    let logs = std::fs::read_to_string(&log).unwrap();
    let escaped = serde_json::to_string(B_JSON_SECRET).unwrap();
    let escaped = &escaped[1..escaped.len() - 1];
    let mut failure_lines = 0;
    for line in logs.lines() {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            !line.contains(escaped),
            "escaped secret in a log line: {line}"
        );
        assert!(
            !line.contains(B_JSON_SECRET),
            "secret in a log line: {line}"
        );
        assert!(
            !line.contains("Back-7x"),
            "part of the secret in a log line: {line}"
        );
        if v["msg"]
            .as_str()
            .is_some_and(|m| m.contains("invalid value [redacted] for field x"))
        {
            failure_lines += 1;
        }
    }
    assert!(
        failure_lines > 0,
        "the failure was logged, redacted, as JSON:\n{logs}"
    );
    mock.assert_script_consumed();
}
