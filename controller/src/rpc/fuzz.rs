//! Fuzz tests of the JSON-RPC server (proptest, bounded, in `make test`): arbitrary lines —
//! bytes, JSON of any shape, and requests to every method with parameters of any type and
//! size — into the in-process server over a pipe. Every output line must be a JSON-RPC 2.0
//! message and no request may end in an internal error (a panic caught at its boundary).
//! Methods that start sandboxes or call models (`run`, `exec`, `skill.run`, `doctor`,
//! `memory.reembed`) are left out: nothing here may reach a network or a launcher.

use std::io::{Cursor, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Number, Value};

use super::*;
use crate::platform::{PlatformConfig, WorkspaceConfig};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const LEFT_OUT: &[&str] = &["run", "exec", "skill.run", "doctor", "memory.reembed"];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1e300),
            json!(-1),
            json!(0),
            json!("w"),
            json!("NaN"),
            json!("\u{0}"),
            json!("../../etc"),
            json!("a".repeat(70)),
            json!("before_tool_call"),
            json!("/bin/true"),
            json!("unlimited"),
            json!("1G"),
        ]),
        "\\PC{0,16}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn params() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec![
        "workspace",
        "id",
        "session",
        "limit",
        "query",
        "mode",
        "skill",
        "path",
        "event",
        "timeout_secs",
        "priority",
        "hosts",
        "host",
        "max_connections",
        "bandwidth",
        "name",
        "content",
        "text",
        "source",
        "values",
        "model",
        "config",
        "force",
        "x",
    ])
    .prop_map(str::to_string);
    prop::collection::btree_map(key, value(), 0..5)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    let names: Vec<&'static str> = methods::table()
        .iter()
        .map(|m| m.name)
        .filter(|n| !LEFT_OUT.contains(n))
        .collect();
    let request = (
        prop::sample::select(names),
        prop_oneof![Just(json!(1)), leaf()],
        params(),
        any::<bool>(),
    )
        .prop_map(|(method, id, params, with_id)| {
            let mut m = json!({"jsonrpc": "2.0", "method": method, "params": params});
            if with_id {
                m["id"] = id;
            }
            m.to_string().into_bytes()
        });
    prop_oneof![
        6 => request,
        1 => value().prop_map(|v| v.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..200),
    ]
}

/// Serves `lines` on a fresh platform with workspace `w`; the output lines.
fn serve_lines(lines: &[Vec<u8>]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::open(PlatformConfig {
        state_dir: dir.path().join("state"),
        launcher: None,
    })
    .unwrap();
    platform
        .create_workspace("w", WorkspaceConfig::default())
        .unwrap();
    let mut input = Vec::new();
    for l in lines {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let buf = Buf::default();
    serve(
        platform,
        ServeOptions {
            credential_key_file: None,
            grace: Duration::from_secs(30),
        },
        Cursor::new(input),
        Output::new(buf.clone()),
    )
    .unwrap();
    let out = buf.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    String::from_utf8(out)
        .expect("the server writes UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn fuzz_any_lines_to_the_json_rpc_server() {
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(line(), 1..12), |lines| {
            for out in serve_lines(&lines) {
                let v: Value = serde_json::from_str(&out)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {out}")))?;
                prop_assert_eq!(&v["jsonrpc"], "2.0", "{}", out);
                prop_assert_ne!(
                    &v["error"]["code"],
                    &json!(code::INTERNAL_ERROR),
                    "a handler panicked: {}",
                    out
                );
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn a_panicking_handler_is_an_internal_error_and_the_server_goes_on() {
    let r: Result<(), RpcError> = isolate("test.method", || panic!("a bug"));
    let e = r.unwrap_err();
    assert_eq!(e.code, code::INTERNAL_ERROR);
    assert_eq!(e.data, Some(json!({"exit_code": 70})));
    assert!(e.message.contains("test.method"), "{}", e.message);
    // A lock all requests share is taken poison-tolerant: a panic while holding it leaves
    // it usable.
    let in_flight = InFlight::default();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _g = in_flight.lock();
        panic!("while holding the in-flight table");
    }));
    assert!(in_flight.map.is_poisoned());
    in_flight.lock().insert("1".into(), CancelToken::new());
    in_flight.remove("1");
    assert!(in_flight.wait_empty(Duration::from_millis(10)));
}

/// What the fuzzing found, kept: none of these may be an internal error.
#[test]
fn regression_lines() {
    let lines: Vec<Vec<u8>> = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "workspace.net.log", "params": {"workspace": "w", "limit": u64::MAX}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "memory.search", "params": {"workspace": "w", "query": "x", "limit": 1e300}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "workspace.hook.add", "params": {"workspace": "w", "event": "before_tool_call", "path": "/bin/true", "priority": i64::MIN}}),
        json!({"jsonrpc": "2.0", "id": 4, "method": "memory.get", "params": {"workspace": "w", "id": u64::MAX}}),
        json!({"jsonrpc": "2.0", "id": 5, "method": "workspace.net.limits", "params": {"workspace": "w", "max_connections": u64::MAX, "bandwidth": "99999999999999999999G"}}),
        json!({"jsonrpc": "2.0", "id": "\u{0}", "method": "$/cancel", "params": {"id": 1e300}}),
    ]
    .iter()
    .map(|v| v.to_string().into_bytes())
    .chain([b"[[[[[[[[[[".repeat(20_000), b"{\"id\":1e400}".to_vec()])
    .collect();
    let out = serve_lines(&lines);
    assert_eq!(out.len(), lines.len(), "{out:#?}");
    for o in out {
        assert!(!o.contains("-32603"), "{o}");
    }
}
