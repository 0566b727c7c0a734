//! Fuzz tests (proptest, a bounded number of cases so they run in `make test` in seconds):
//! arbitrary JSON arguments to every tool through the agent loop's own dispatch
//! ([`resolve_call`], then [`Tool::call`], then the model's error text), answered by a
//! hostile fake worker that sends arbitrary replies (wrong ids, wrong reply types, huge
//! numbers, output floods, garbage bytes, a closed socket), and arbitrary bytes straight into
//! the controller's end of the socketpair. Nothing may panic or hang. What they found is kept
//! below as regression cases.

use std::collections::VecDeque;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use bulkhead_shared::{
    ControllerMsg, DirEntry, ExecResult, ExitKind, FileKind, FileStat, ReadResult, Reply, Request,
    Stream, ToolError, ToolErrorKind, WorkerEnd,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Number, Value};

use super::subagents::{tasks_from_args, SpawnSubagentsTool};
use super::tools::{model_error_text, resolve_call, SandboxSlot, ToolContext, ToolRegistry};
use super::CancelToken;
use crate::platform::{Platform, PlatformConfig, Workspace, WorkspaceConfig};
use crate::sandbox::Sandbox;

// ---------------------------------------------------------------------------------------
// Arbitrary JSON, biased to what breaks arithmetic and paths
// ---------------------------------------------------------------------------------------

fn num(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(num),
        prop::sample::select(vec![
            json!(u64::MAX),
            json!(i64::MIN),
            json!(0),
            json!(-1),
            json!(1),
            json!(2),
            num(1e300),
            num(-1e300),
            num(f64::MAX),
            num(f64::MIN_POSITIVE),
            num(0.5),
            num(-0.0),
            json!("NaN"),
            json!("inf"),
            json!("-Infinity"),
            json!(""),
            json!("\u{0}"),
            json!("notes.txt"),
            json!("/workspace/../../etc/passwd"),
            json!("a/".repeat(2500)),
            json!("x".repeat(140_000)),
        ]),
        "\\PC{0,24}".prop_map(Value::String),
    ]
}

fn keys() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "command",
        "timeout_secs",
        "path",
        "offset",
        "limit",
        "content",
        "old",
        "new",
        "replace_all",
        "query",
        "skill",
        "params",
        "tasks",
        "task",
        "label",
        "role",
        "x",
    ])
    .prop_map(str::to_string)
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Tool arguments: mostly objects with the tools' own keys, sometimes anything at all
/// (a string, which the dispatch tries to decode, an array, null).
fn tool_args() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map(keys(), json_value(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
        1 => json_value().prop_map(|v| Value::String(v.to_string())),
    ]
}

// ---------------------------------------------------------------------------------------
// A hostile worker
// ---------------------------------------------------------------------------------------

/// One thing the fake worker sends.
#[derive(Debug, Clone)]
enum WMsg {
    /// Output for the request (or another id).
    Output {
        right_id: bool,
        other: u64,
        data: Vec<u8>,
    },
    /// Output in 64 KiB chunks (more than a command's cap when `chunks` > 8).
    Flood { chunks: usize },
    /// A response for another id.
    StrayResponse { other: u64 },
    /// Bytes that are not a valid frame.
    Raw(Vec<u8>),
}

/// How the worker ends its answer to one request.
#[derive(Debug, Clone)]
enum End {
    Respond(Result<Reply, ToolError>),
    Close,
}

type Batch = (Vec<WMsg>, End);

fn stat() -> impl Strategy<Value = FileStat> {
    (
        prop::sample::select(vec![
            FileKind::File,
            FileKind::Dir,
            FileKind::Symlink,
            FileKind::Other,
        ]),
        any::<u64>(),
        any::<u32>(),
        any::<i64>(),
    )
        .prop_map(|(kind, size, mode, mtime)| FileStat {
            kind,
            size,
            mode,
            mtime,
        })
}

fn reply() -> impl Strategy<Value = Reply> {
    let bytes = prop::collection::vec(any::<u8>(), 0..600);
    prop_oneof![
        (
            prop_oneof![
                any::<i32>().prop_map(ExitKind::Code),
                any::<i32>().prop_map(ExitKind::Signal)
            ],
            any::<[bool; 3]>(),
            any::<[u64; 3]>(),
        )
            .prop_map(|(exit, b, n)| Reply::Exec(ExecResult {
                exit,
                timed_out: b[0],
                cancelled: b[1],
                truncated: b[2],
                stdout_bytes: n[0],
                stderr_bytes: n[1],
                duration_us: n[2],
            })),
        (bytes.clone(), any::<u64>(), any::<bool>())
            .prop_map(|(data, size, eof)| Reply::Read(ReadResult { data, size, eof })),
        (Just(b"line\n".repeat(100_000)), any::<u64>()).prop_map(|(data, size)| Reply::Read(
            ReadResult {
                data,
                size,
                eof: false
            }
        )),
        any::<u64>().prop_map(|bytes| Reply::Write { bytes }),
        any::<u64>().prop_map(|replacements| Reply::Edit { replacements }),
        (
            prop::collection::vec(("\\PC{0,12}", stat()), 0..8),
            any::<bool>()
        )
            .prop_map(|(e, truncated)| Reply::Ls {
                entries: e
                    .into_iter()
                    .map(|(name, stat)| DirEntry { name, stat })
                    .collect(),
                truncated,
            }),
        stat().prop_map(Reply::Stat),
        Just(Reply::Pong),
    ]
}

fn tool_error() -> impl Strategy<Value = ToolError> {
    (
        prop::sample::select(vec![
            ToolErrorKind::NotFound,
            ToolErrorKind::PermissionDenied,
            ToolErrorKind::InvalidInput,
            ToolErrorKind::TooLarge,
            ToolErrorKind::NotUnique,
            ToolErrorKind::RateLimited,
            ToolErrorKind::WrongType,
            ToolErrorKind::Io,
        ]),
        "\\PC{0,40}",
    )
        .prop_map(|(kind, message)| ToolError { kind, message })
}

fn batch() -> impl Strategy<Value = Batch> {
    let send = prop_oneof![
        4 => (any::<bool>(), any::<u64>(), prop::collection::vec(any::<u8>(), 0..300))
            .prop_map(|(right_id, other, data)| WMsg::Output { right_id, other, data }),
        1 => (0usize..12).prop_map(|chunks| WMsg::Flood { chunks }),
        1 => any::<u64>().prop_map(|other| WMsg::StrayResponse { other }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(WMsg::Raw),
    ];
    let end = prop_oneof![
        4 => reply().prop_map(|r| End::Respond(Ok(r))),
        2 => tool_error().prop_map(|e| End::Respond(Err(e))),
        1 => Just(End::Close),
    ];
    (prop::collection::vec(send, 0..4), end)
}

/// Plays the worker on `sock`: answers each request with the next batch; closes when the
/// batches run out, on `Close`, or when the controller goes away.
fn fake_worker(sock: UnixStream, mut script: VecDeque<Batch>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut w = WorkerEnd::new(sock);
        loop {
            let id = match w.recv() {
                Ok(ControllerMsg::Request { id, .. }) => id,
                Ok(ControllerMsg::Cancel { .. }) => continue,
                _ => return,
            };
            let Some((sends, end)) = script.pop_front() else {
                return;
            };
            for s in sends {
                let r = match s {
                    WMsg::Output {
                        right_id,
                        other,
                        data,
                    } => w.output(if right_id { id } else { other }, Stream::Stdout, data),
                    WMsg::Flood { chunks } => {
                        let mut r = Ok(());
                        for _ in 0..chunks {
                            r = w.output(id, Stream::Stderr, vec![b'x'; 64 << 10]);
                            if r.is_err() {
                                break;
                            }
                        }
                        r
                    }
                    WMsg::StrayResponse { other } if other != id => {
                        w.respond(other, Ok(Reply::Pong))
                    }
                    WMsg::StrayResponse { .. } => Ok(()),
                    WMsg::Raw(bytes) => {
                        // Garbage breaks the framing for good: nothing after it is read.
                        let _ = w.socket().write_all(&bytes);
                        return;
                    }
                };
                if r.is_err() {
                    return;
                }
            }
            match end {
                End::Respond(result) => {
                    if w.respond(id, result).is_err() {
                        return;
                    }
                }
                End::Close => return,
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

struct Harness {
    _dir: tempfile::TempDir,
    ws: Workspace,
    tools: ToolRegistry,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let p = Platform::open(PlatformConfig {
        state_dir: dir.path().join("state"),
        ..PlatformConfig::default()
    })
    .unwrap();
    let ws = p
        .create_workspace("fuzz", WorkspaceConfig::default())
        .unwrap();
    let mut tools = ToolRegistry::builtin();
    tools.register(Arc::new(SpawnSubagentsTool)).unwrap();
    let skills = crate::skills::Registry::new(dir.path().join("state/skills"));
    for t in crate::skills::tools::skill_tools(skills, None) {
        tools.register(t).unwrap();
    }
    Harness {
        _dir: dir,
        ws,
        tools,
    }
}

/// One tool call as the agent loop makes it, against a fake worker playing `script`.
/// Returns the text the model would see.
fn call_tool(h: &Harness, name: &str, raw: &Value, script: Vec<Batch>) -> String {
    let (sb, theirs) = Sandbox::with_fake_worker();
    let worker = fake_worker(theirs, script.into());
    let cancel = CancelToken::new();
    let rs = h.ws.adopt_sandbox(sb, bulkhead_policy::default_limits());
    let mut slot = SandboxSlot::with_running(rs, &cancel);
    let text = match resolve_call(&h.tools, name, raw) {
        Err(refused) => refused.content,
        Ok((tool, args)) if tool.is_subagent_spawner() => match tasks_from_args(&args) {
            Ok(tasks) => format!("{} tasks", tasks.len()),
            Err(e) => e,
        },
        Ok((tool, args)) => {
            let mut ctx = ToolContext {
                workspace: &h.ws,
                sandbox: &mut slot,
                cancel: &cancel,
                run_id: "r",
                session: "s",
                default_timeout: Duration::from_secs(120),
                max_timeout: Duration::from_secs(600),
                deadline: None,
            };
            match tool.call(&args, &mut ctx) {
                Ok(out) => out.content,
                Err(e) => model_error_text(&e, &h.ws),
            }
        }
    };
    slot.discard();
    drop(slot);
    worker.join().expect("the fake worker never panics");
    text
}

const TOOLS: &[&str] = &[
    "bash",
    "read",
    "write",
    "edit",
    "ls",
    "memory_search",
    "memory_store",
    "skill_list",
    "skill_execute",
    "spawn_subagents",
    "no_such_tool",
];

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn fuzz_any_arguments_to_every_tool_with_any_worker_replies() {
    let h = harness();
    let strategy = (
        prop::sample::select(TOOLS),
        tool_args(),
        prop::collection::vec(batch(), 0..4),
    );
    runner(256)
        .run(&strategy, |(name, args, script)| {
            let text = call_tool(&h, name, &args, script);
            // No host path reaches the model.
            let state = h.ws.state_root().display().to_string();
            prop_assert!(!text.contains(&state), "{text}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn fuzz_valid_calls_of_the_sandbox_tools_with_any_worker_replies() {
    // Arguments that pass the schemas, so every reply reaches the tools' own handling.
    let h = harness();
    let call = prop_oneof![
        (any::<u16>(), 1u64..1000).prop_map(|(c, t)| (
            "bash",
            json!({"command": format!("echo {c}"), "timeout_secs": t})
        )),
        (1u64..1_000_000_000, 1u64..1_000_000_000).prop_map(|(o, l)| (
            "read",
            json!({"path": "notes.txt", "offset": o, "limit": l})
        )),
        Just(("read", json!({"path": "notes.txt"}))),
        Just(("write", json!({"path": "w.txt", "content": "x"}))),
        Just(("edit", json!({"path": "w.txt", "old": "x", "new": "y"}))),
        Just(("ls", json!({}))),
    ];
    runner(256)
        .run(
            &(call, prop::collection::vec(batch(), 1..6)),
            |((name, args), script)| {
                call_tool(&h, name, &args, script);
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn fuzz_any_bytes_from_the_worker_into_the_sandbox_client() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        // A valid-looking header announcing a length, then too little or garbage.
        (any::<u32>(), prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(n, rest)| {
            let mut v = n.to_le_bytes().to_vec();
            v.extend(rest);
            v
        }),
    ];
    runner(512)
        .run(&strategy, |bytes| {
            let (mut sb, theirs) = Sandbox::with_fake_worker();
            let t = std::thread::spawn(move || {
                let mut w = WorkerEnd::new(theirs);
                if w.recv().is_ok() {
                    let _ = w.socket().write_all(&bytes);
                }
                // Dropping the socket ends the request: the controller cannot wait forever.
            });
            let r = sb.request(Request::Ping, &mut |_, _| {});
            if r.is_err() {
                // Any failure kills the sandbox: the next request fails at once.
                let again = sb.request(Request::Ping, &mut |_, _| {});
                prop_assert!(
                    matches!(again, Err(crate::error::Error::SandboxGone(_))),
                    "{again:?}"
                );
            }
            drop(sb);
            t.join().unwrap();
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Regression cases: what crashed the controller before, and what the fuzzing found
// ---------------------------------------------------------------------------------------

fn answer(r: Reply) -> Vec<Batch> {
    vec![(vec![], End::Respond(Ok(r)))]
}

#[test]
fn regression_bash_timeout_1e300_is_a_tool_error() {
    let h = harness();
    let t = call_tool(
        &h,
        "bash",
        &json!({"command": "true", "timeout_secs": 1e300}),
        vec![],
    );
    assert!(
        t.contains("timeout_secs") && t.contains("at most 600"),
        "{t}"
    );
    // The tool checks it itself too (a Rust host may call it without the schema).
    let tool = h.tools.get("bash").unwrap().clone();
    let (sb, theirs) = Sandbox::with_fake_worker();
    let worker = fake_worker(theirs, VecDeque::new());
    let cancel = CancelToken::new();
    let mut slot = SandboxSlot::with_running(
        h.ws.adopt_sandbox(sb, bulkhead_policy::default_limits()),
        &cancel,
    );
    let mut ctx = ToolContext {
        workspace: &h.ws,
        sandbox: &mut slot,
        cancel: &cancel,
        run_id: "r",
        session: "s",
        default_timeout: Duration::from_secs(120),
        max_timeout: Duration::from_secs(600),
        deadline: None,
    };
    for bad in [json!(1e300), json!(-1), json!("NaN"), json!(601)] {
        let out = tool
            .call(&json!({"command": "true", "timeout_secs": bad}), &mut ctx)
            .unwrap();
        assert!(
            out.is_error && out.content.contains("timeout_secs"),
            "{out:?}"
        );
    }
    assert_eq!(ctx.command_timeout(Some(1e300)), Duration::from_secs(600));
    assert_eq!(
        ctx.command_timeout(Some(f64::NAN)),
        Duration::from_secs(120)
    );
    drop(slot);
    worker.join().unwrap();
}

#[test]
fn regression_read_with_u64_max_limit_and_offset_is_a_tool_error() {
    let h = harness();
    let read = |args: Value| {
        call_tool(
            &h,
            "read",
            &args,
            answer(Reply::Read(ReadResult {
                data: b"one\ntwo\nthree\n".to_vec(),
                size: 14,
                eof: true,
            })),
        )
    };
    let t = read(json!({"path": "notes.txt", "offset": 2, "limit": u64::MAX}));
    assert!(t.contains("`limit`"), "{t}");
    let t = read(json!({"path": "notes.txt", "offset": u64::MAX}));
    assert!(t.contains("`offset`"), "{t}");
    // In range, the largest values read nothing past the end, without wrapping.
    let t = read(json!({"path": "notes.txt", "offset": 2, "limit": 1_000_000_000u64}));
    assert_eq!(t, "two\nthree\n");
    let t = read(json!({"path": "notes.txt", "offset": 1_000_000_000u64}));
    assert!(t.contains("past the end"), "{t}");
}

#[test]
fn regression_argument_helpers_refuse_what_breaks_arithmetic() {
    use super::tools::{int_arg, path_arg, secs_arg};
    let a = json!({"n": u64::MAX, "neg": -1, "frac": 2.5, "big": 1e300, "s": "7", "ok": 5.0});
    assert!(int_arg(&a, "n", 1, 10).is_err());
    assert!(int_arg(&a, "neg", 1, 10).is_err());
    assert!(int_arg(&a, "frac", 1, 10).is_err());
    assert!(int_arg(&a, "big", 1, 10).is_err());
    assert!(int_arg(&a, "s", 1, 10).is_err());
    assert_eq!(int_arg(&a, "ok", 1, 10), Ok(Some(5)));
    assert_eq!(int_arg(&a, "absent", 1, 10), Ok(None));
    let max = Duration::from_secs(600);
    for bad in [
        json!(1e300),
        json!(0),
        json!(-0.5),
        json!("NaN"),
        json!(600.5),
    ] {
        let e = secs_arg(&json!({"t": bad}), "t", max).unwrap_err();
        assert!(e.contains("at most 600"), "{e}");
    }
    assert_eq!(
        secs_arg(&json!({"t": 0.25}), "t", max),
        Ok(Some(Duration::from_millis(250)))
    );
    assert!(path_arg(&json!({"p": "a\u{0}b"}), "p", None)
        .unwrap_err()
        .contains("NUL"));
    assert!(path_arg(&json!({"p": "a/".repeat(5000)}), "p", None)
        .unwrap_err()
        .contains("4096"));
    assert!(path_arg(&json!({"p": 5}), "p", None).is_err());
    assert_eq!(
        path_arg(&json!({}), "p", Some("/workspace")).unwrap(),
        "/workspace"
    );
}

#[test]
fn regression_hostile_exec_replies_never_overflow() {
    let h = harness();
    for exit in [
        ExitKind::Signal(i32::MAX),
        ExitKind::Signal(i32::MIN),
        ExitKind::Code(i32::MIN),
    ] {
        let t = call_tool(
            &h,
            "bash",
            &json!({"command": "true"}),
            answer(Reply::Exec(ExecResult {
                exit,
                timed_out: false,
                cancelled: false,
                truncated: false,
                stdout_bytes: u64::MAX,
                stderr_bytes: u64::MAX,
                duration_us: u64::MAX,
            })),
        );
        assert!(t.contains('['), "{t}");
    }
    // An output flood past the cap kills the sandbox: a tool error, not a crash.
    let t = call_tool(
        &h,
        "bash",
        &json!({"command": "true"}),
        vec![(vec![WMsg::Flood { chunks: 10 }], End::Close)],
    );
    assert!(t.contains("more output than the cap"), "{t}");
    // A reply of the wrong type for the request.
    let t = call_tool(&h, "ls", &json!({}), answer(Reply::Pong));
    assert!(t.contains("wrong reply type"), "{t}");
}

#[test]
fn regression_platform_errors_reach_the_model_without_host_paths() {
    let h = harness();
    let files = h.ws.files_dir();
    let e = crate::error::Error::io(
        files.join("sub/notes.txt"),
        std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    );
    let t = model_error_text(&e, &h.ws);
    assert!(t.starts_with("/workspace/sub/notes.txt: "), "{t}");
    let e = crate::error::Error::io(
        h.ws.dir().join("memory.db"),
        std::io::Error::from(std::io::ErrorKind::Other),
    );
    let t = model_error_text(&e, &h.ws);
    assert!(!t.contains(&h.ws.state_root().display().to_string()), "{t}");
    let e = crate::error::Error::Invalid(format!("cannot open {}/x", h.ws.dir().display()));
    let t = model_error_text(&e, &h.ws);
    assert_eq!(t, "cannot open <workspace state>/x");
}

#[test]
fn fuzz_truncating_tenant_output_never_panics() {
    use super::context::truncate_middle;
    // Found while auditing: a 1-character text cut to 0 underflowed.
    assert!(truncate_middle("x", 0).1);
    runner(2048)
        .run(&("\\PC{0,300}", 0usize..400), |(text, max)| {
            let (out, cut) = truncate_middle(&text, max);
            prop_assert_eq!(cut, text.chars().count() > max);
            if !cut {
                prop_assert_eq!(out, text);
            }
            Ok(())
        })
        .unwrap();
}
