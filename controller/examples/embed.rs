//! Embedding bulkhead in a Rust host app: a platform, a workspace, a persistent sandbox
//! serving several requests, then cleanup.
//!
//! ```sh
//! cargo build --workspace && cargo run -p bulkhead --example embed
//! ```
//! (The launcher and worker are found next to the running executable, one directory up for
//! examples, or through `BULKHEAD_LAUNCH`.)

use bulkhead::protocol::{Command, ExecRequest, Reply, Request, Stream};
use bulkhead::{LimitsConfig, Platform, PlatformConfig, WorkspaceConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("bulkhead-example-{}", std::process::id()));
    let platform = Platform::open(PlatformConfig {
        state_dir: state.clone(),
        launcher: None,
    })?;
    let ws = platform.create_workspace("example", WorkspaceConfig::default())?;

    // One sandbox, many requests: the sandbox stays up between them.
    let mut sandbox = ws.sandbox(&LimitsConfig {
        memory_bytes: Some(256 << 20),
        ..Default::default()
    })?;
    let sb = sandbox.get();
    println!(
        "sandbox up: launcher pid {}, cgroup {:?}",
        sb.info().launcher_pid,
        sb.info().cgroup_version
    );

    let write = Request::Write {
        path: "hello.py".into(),
        data: b"print('hello from', __import__('socket').gethostname())\n".to_vec(),
        mode: 0o644,
        create_parents: false,
    };
    match sb.request(write, &mut |_, _| {})? {
        Ok(Reply::Write { bytes }) => println!("wrote {bytes} bytes"),
        other => println!("write: {other:?}"),
    }

    let req = ExecRequest {
        command: Command::Argv(vec!["python3".into(), "hello.py".into()]),
        cwd: "/workspace".into(),
        env: vec![],
        stdin: vec![],
        timeout_ms: 10_000,
        output_cap: 64 << 10,
        kill_stragglers: false,
    };
    let outcome = sb.exec(req, &mut |stream, data| {
        let tag = if stream == Stream::Stdout {
            "out"
        } else {
            "err"
        };
        print!("[{tag}] {}", String::from_utf8_lossy(data));
    })?;
    println!(
        "exit: {:?}, oom killed: {}",
        outcome.result.exit, outcome.oom_killed
    );

    let end = sandbox.shutdown()?;
    println!("sandbox ended, cgroup removed: {}", end.cgroup_removed);
    platform.delete_workspace("example")?;
    let _ = std::fs::remove_dir_all(&state);
    Ok(())
}
