//! Unit tests of the server: framing, errors, the table and its OpenRPC document. No
//! sandbox, no child process (the integration suite drives the real binary).

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::*;

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn serve_lines(input: &[u8]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let platform = Platform::open(crate::platform::PlatformConfig {
        state_dir: dir.path().join("state"),
        launcher: None,
    })
    .unwrap();
    let buf = Buf::default();
    serve(
        platform,
        ServeOptions::default(),
        Cursor::new(input.to_vec()),
        Output::new(buf.clone()),
    )
    .unwrap();
    let out = buf.0.lock().unwrap().clone();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect()
}

fn by_id(lines: &[Value], id: Value) -> Value {
    lines
        .iter()
        .find(|l| l["id"] == id)
        .unwrap_or_else(|| panic!("no answer for {id}: {lines:?}"))
        .clone()
}

#[test]
fn bad_lines_get_errors_and_the_server_goes_on() {
    let input = b"{not json\n[1,2]\n\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"nope\"}\n{\"jsonrpc\":\"1.0\",\"id\":2,\"method\":\"workspace.list\"}\n{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"workspace.list\"}\n{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"workspace.list\",\"params\":[1]}\n{\"jsonrpc\":\"2.0\",\"id\":{\"x\":1},\"method\":\"workspace.list\"}\n";
    let lines = serve_lines(input);
    assert_eq!(lines[0]["error"]["code"], code::PARSE_ERROR);
    assert_eq!(lines[0]["id"], Value::Null);
    assert_eq!(lines[1]["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(
        by_id(&lines, json!(1))["error"]["code"],
        code::METHOD_NOT_FOUND
    );
    assert_eq!(
        by_id(&lines, json!(2))["error"]["code"],
        code::INVALID_REQUEST
    );
    assert_eq!(by_id(&lines, json!(3))["result"], json!([]));
    assert_eq!(
        by_id(&lines, json!(4))["error"]["code"],
        code::INVALID_PARAMS
    );
    assert_eq!(lines.len(), 7, "{lines:?}");
}

#[test]
fn an_oversized_line_is_refused_and_skipped() {
    let mut input = Vec::new();
    input.extend_from_slice(
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"workspace.list\",\"params\":{\"x\":\"",
    );
    input.resize(input.len() + MAX_LINE_BYTES, b'a');
    input
        .extend_from_slice(b"\"}}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"workspace.list\"}\n");
    let lines = serve_lines(&input);
    assert_eq!(lines[0]["error"]["code"], code::INVALID_REQUEST);
    assert_eq!(lines[0]["id"], Value::Null);
    assert_eq!(by_id(&lines, json!(2))["result"], json!([]));
}

#[test]
fn workspace_lifecycle_and_errors_carry_exit_codes() {
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":"a","method":"workspace.create","params":{"id":"acme"}}"#,
        "\n",
    );
    let lines = serve_lines(input.as_bytes());
    assert_eq!(by_id(&lines, json!("a"))["result"]["id"], "acme");
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"workspace.show","params":{"id":"ghost"}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"workspace.create","params":{"id":"Bad/Id"}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":3,"method":"workspace.create","params":{}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":4,"method":"cred.set","params":{"workspace":"x","name":"n","values":{"k":5}}}"#,
        "\n",
    );
    let lines = serve_lines(input.as_bytes());
    let e = by_id(&lines, json!(1))["error"].clone();
    assert_eq!(e["code"], code::NOT_FOUND);
    assert_eq!(e["data"]["exit_code"], 3);
    assert_eq!(
        by_id(&lines, json!(2))["error"]["code"],
        code::INVALID_PARAMS
    );
    assert_eq!(
        by_id(&lines, json!(3))["error"]["code"],
        code::INVALID_PARAMS
    );
    let e = by_id(&lines, json!(4))["error"].clone();
    assert_eq!(e["code"], code::INVALID_PARAMS);
    assert!(!e["message"].as_str().unwrap().contains('5'), "{e}");
}

#[test]
fn the_table_and_the_document_agree() {
    let doc = describe();
    assert_eq!(doc["openrpc"], "1.2.6");
    assert_eq!(doc["info"]["version"], API_VERSION);
    let names: Vec<&str> = doc["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    let table: Vec<&str> = methods::table().iter().map(|m| m.name).collect();
    assert_eq!(names, table);
    let mut uniq = table.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), table.len(), "duplicate method names");
    for m in doc["methods"].as_array().unwrap() {
        assert!(m["params"].is_array(), "{m}");
        assert!(m["result"]["schema"].is_object(), "{m}");
    }
    // The contract's names are all served.
    for name in [
        "rpc.describe",
        "run",
        "run.cancel",
        "$/cancel",
        "exec",
        "workspace.create",
        "workspace.set",
        "workspace.list",
        "workspace.show",
        "workspace.delete",
        "workspace.net.show",
        "workspace.net.allow",
        "workspace.net.deny",
        "workspace.net.none",
        "cred.set",
        "cred.list",
        "cred.rm",
        "session.list",
        "session.show",
        "session.rm",
        "memory.add",
        "memory.store",
        "memory.search",
        "memory.show",
        "memory.get",
        "memory.rm",
        "skill.list",
        "skill.show",
        "skill.enable",
        "skill.disable",
        "skill.run",
    ] {
        assert!(methods::find(name).is_some(), "{name} is not in the table");
    }
}

#[test]
fn every_method_in_the_table_is_dispatched() {
    // An unknown parameter is refused by the method's schema: -32602, never -32601.
    let mut input = String::new();
    for (i, m) in methods::table().iter().enumerate() {
        input.push_str(
            &json!({"jsonrpc": "2.0", "id": i, "method": m.name, "params": {"__unknown__": 1}})
                .to_string(),
        );
        input.push('\n');
    }
    let lines = serve_lines(input.as_bytes());
    for (i, m) in methods::table().iter().enumerate() {
        let r = by_id(&lines, json!(i));
        assert_eq!(r["error"]["code"], code::INVALID_PARAMS, "{}: {r}", m.name);
    }
}

#[test]
fn cancel_of_an_unknown_request_says_so() {
    let input = concat!(
        r#"{"jsonrpc":"2.0","id":1,"method":"run.cancel","params":{"id":99}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"$/cancel","params":{"id":99}}"#,
        "\n",
    );
    let lines = serve_lines(input.as_bytes());
    assert_eq!(lines.len(), 1, "a notification gets no answer: {lines:?}");
    assert_eq!(lines[0]["result"]["cancelled"], false);
}

#[test]
fn the_json_rpc_doc_lists_every_error_code() {
    let doc = include_str!("../../../docs/json-rpc.md");
    let section = doc
        .split("# JSON-RPC")
        .nth(1)
        .expect("docs/json-rpc.md has a JSON-RPC heading");
    for (c, what, _) in code::TABLE {
        assert!(
            section.contains(&c.to_string()),
            "docs/json-rpc.md lacks code {c} ({what})"
        );
    }
}

#[test]
fn typed_module_errors_map_to_their_json_rpc_codes_and_exit_codes() {
    use crate::error::{CredError, SessionError, WorkspaceError};
    let cases: Vec<(Error, i64, i32)> = vec![
        (
            WorkspaceError::NoSuch("a".into()).into(),
            code::NOT_FOUND,
            3,
        ),
        (WorkspaceError::Exists("a".into()).into(), code::EXISTS, 4),
        (
            SessionError::NoSuch {
                workspace: "a".into(),
                sid: "s".into(),
            }
            .into(),
            code::NOT_FOUND,
            3,
        ),
        (
            SessionError::Exists {
                workspace: "a".into(),
                sid: "s".into(),
            }
            .into(),
            code::EXISTS,
            4,
        ),
        (SessionError::Busy("s".into()).into(), code::SESSION_BUSY, 8),
        (
            CredError::WrongKey {
                path: "/c".into(),
                detail: "d".into(),
            }
            .into(),
            code::WRONG_CREDENTIAL_KEY,
            6,
        ),
        (
            CredError::NoKey("no key".into()).into(),
            code::NO_CREDENTIAL_KEY,
            7,
        ),
        (
            CredError::NoSuchSet {
                workspace: "a".into(),
                name: "n".into(),
            }
            .into(),
            code::NOT_FOUND,
            3,
        ),
        (Error::Invalid("bad".into()), code::INVALID_PARAMS, 2),
    ];
    for (e, rpc, exit) in cases {
        let text = e.to_string();
        let r = RpcError::from(e);
        assert_eq!(r.code, rpc, "{text}");
        assert_eq!(r.message, text);
        assert_eq!(r.data, Some(json!({"exit_code": exit})), "{text}");
    }
}
