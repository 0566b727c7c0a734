//! The `bulkhead` CLI as an operator uses it: workspaces, exec exit codes, JSON, errors.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bulkhead_tests::{bin, sandbox_or_skip, text, TestEnv};

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn workspace_lifecycle_with_json() {
    let env = TestEnv::new();
    let out = env.bulkhead(&[
        "--json",
        "workspace",
        "create",
        "acme",
        "--memory",
        "256M",
        "--pids",
        "64",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["id"], "acme");
    assert_eq!(v["limits"]["memory_bytes"], 256u64 << 20);
    assert_eq!(v["limits"]["pids"], 64);
    assert!(env.files("acme").is_dir());
    env.create("beta");

    let out = env.bulkhead(&["--json", "workspace", "list"]);
    assert!(out.status.success());
    let ids: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(text(&out.stdout), "acme\nbeta\n");

    let out = env.bulkhead(&["--json", "workspace", "show", "acme"]);
    assert_eq!(json(&out)["limits"]["pids"], 64);
    let out = env.bulkhead(&["workspace", "show", "acme"]);
    assert!(
        text(&out.stdout).contains("memory:  256 MiB"),
        "{}",
        text(&out.stdout)
    );

    let out = env.bulkhead(&["workspace", "create", "acme"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "create twice: {}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("already exists"));

    let out = env.bulkhead(&["workspace", "delete", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!env.state().join("workspaces/acme").exists());
    let out = env.bulkhead(&["workspace", "show", "acme"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("does not exist"),
        "{}",
        text(&out.stderr)
    );
    let out = env.bulkhead(&["workspace", "delete", "acme"]);
    assert_eq!(out.status.code(), Some(3));
}

/// `--memory` takes the sizes `launch.toml` takes (one parser, in the policy crate):
/// fractions, K/M/G/T in any case, a `B` suffix; anything else is a usage error that says
/// how to write one.
#[test]
fn sizes_on_the_command_line() {
    let env = TestEnv::new();
    let out = env.bulkhead(&["--json", "workspace", "create", "half", "--memory", "1.5G"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["limits"]["memory_bytes"], 3u64 << 29);
    let out = env.bulkhead(&["workspace", "show", "half"]);
    assert!(
        text(&out.stdout).contains("memory:  1536 MiB"),
        "{}",
        text(&out.stdout)
    );
    let out = env.bulkhead(&["--json", "workspace", "create", "low", "--memory", "65536k"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(json(&out)["limits"]["memory_bytes"], 64u64 << 20);
    for bad in ["1.5.5G", "1e9", "12Q", "99999999999999999999T"] {
        let out = env.bulkhead(&["workspace", "create", "bad", "--memory", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
        let err = text(&out.stderr);
        assert!(
            err.contains("not a size") || err.contains("too large"),
            "{bad}: {err}"
        );
    }
    assert!(!env.state().join("workspaces/bad").exists());
}

#[test]
fn invalid_ids_and_input_are_clear_errors() {
    let env = TestEnv::new();
    for id in ["Acme", "-x", "a/b", "..", "a.b", &"x".repeat(64), "é"] {
        let out = env.bulkhead(&["workspace", "create", "--", id]);
        assert_eq!(out.status.code(), Some(2), "{id}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("[a-z0-9][a-z0-9_-]{0,62}"),
            "{id}: {}",
            text(&out.stderr)
        );
    }
    // Nothing was created for them.
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(text(&out.stdout), "");
    let out = env.bulkhead(&["workspace", "create", "ok", "--memory", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a size"),
        "{}",
        text(&out.stderr)
    );
    let out = env.bulkhead(&["workspace", "create", "ok", "--memory", "1K"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("memory_bytes"),
        "{}",
        text(&out.stderr)
    );
    let out = env.bulkhead(&["--json", "workspace", "show", "nope"]);
    assert_eq!(out.status.code(), Some(3));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error on stderr");
    assert_eq!(err["exit_code"], 3);
    let out = env.bulkhead(&["exec", "nope", "--", "true"]);
    assert_eq!(out.status.code(), Some(3));
    let out = env.bulkhead(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_documents_exit_codes_and_examples() {
    let env = TestEnv::new();
    let out = env.bulkhead(&["--help"]);
    assert!(out.status.success());
    let h = text(&out.stdout);
    for needle in ["124", "125", "137", "workspace", "exec", "doctor"] {
        assert!(h.contains(needle), "--help lacks {needle}");
    }
    let out = env.bulkhead(&["exec", "--help"]);
    assert!(text(&out.stdout).contains("Examples:"));
}

#[test]
fn state_dir_from_environment() {
    let env = TestEnv::new();
    let mut c = std::process::Command::new(bin("bulkhead"));
    let out = c
        .env("BULKHEAD_STATE_DIR", env.state())
        .args(["workspace", "create", "envws"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(env
        .state()
        .join("workspaces/envws/workspace.json")
        .is_file());
}

#[test]
fn launcher_refuses_to_run_by_hand() {
    let out = std::process::Command::new(bin("bulkhead-launch"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("fd 3"));
    let out = std::process::Command::new(bin("bulkhead-launch"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = std::process::Command::new(bin("bulkhead-launch"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn exec_exit_codes() {
    if !sandbox_or_skip("exec_exit_codes") {
        return;
    }
    let env = TestEnv::new();
    env.create("ws");
    let out = env.sh("ws", "echo out; echo err >&2; exit 7");
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");

    let out = env.exec("ws", &[], &["no-such-program"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not found"));

    std::fs::write(env.files("ws").join("noexec.sh"), "#!/bin/sh\necho hi\n").unwrap();
    // The file belongs to whoever runs the test; the sandbox sees its workspace's files.
    let out = env.exec("ws", &[], &["/workspace/noexec.sh"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    let t = Instant::now();
    let out = env.exec("ws", &["--timeout", "1"], &["sleep", "30"]);
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(text(&out.stderr).contains("timed out"));

    let out = env.exec(
        "ws",
        &["--memory", "48M"],
        &["python3", "-c", "b = bytearray(400 << 20); print(len(b))"],
    );
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("memory limit"),
        "{}",
        text(&out.stderr)
    );

    let out = env.sh("ws", "kill -TERM $$");
    assert_eq!(out.status.code(), Some(128 + 15));
}

#[test]
fn exec_setup_failure_is_125_with_the_step() {
    if !sandbox_or_skip("exec_setup_failure_is_125_with_the_step") {
        return;
    }
    let env = TestEnv::new();
    env.create("ws");
    // A workspace whose files/ was swapped for a symlink: the launcher refuses it.
    let files = env.files("ws");
    let target = env.dir.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::remove_dir(&files).unwrap();
    std::os::unix::fs::symlink(&target, &files).unwrap();
    let out = env.sh("ws", "touch /workspace/x");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("sandbox setup failed: "), "{err}");
    assert!(!target.join("x").exists());
}

#[test]
fn exec_stdin_env_cwd_and_files() {
    if !sandbox_or_skip("exec_stdin_env_cwd_and_files") {
        return;
    }
    let env = TestEnv::new();
    env.create("ws");
    let mut child = env
        .cmd()
        .args([
            "exec",
            "ws",
            "-i",
            "-e",
            "GREETING=hello",
            "--",
            "/bin/sh",
            "-c",
            "pwd; echo $GREETING; tr a-z A-Z; echo data > out.txt",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"shout\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "/workspace\nhello\nSHOUT\n");
    assert_eq!(
        std::fs::read_to_string(env.files("ws").join("out.txt")).unwrap(),
        "data\n"
    );
    let out = env.exec("ws", &["-e", "NOEQUALS"], &["true"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exec_streams_output_as_it_comes() {
    if !sandbox_or_skip("exec_streams_output_as_it_comes") {
        return;
    }
    let env = TestEnv::new();
    env.create("ws");
    let t = Instant::now();
    let mut child = env
        .cmd()
        .args([
            "exec",
            "ws",
            "--",
            "/bin/sh",
            "-c",
            "echo first; sleep 2; echo second",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first_at = t.elapsed();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    let second_at = t.elapsed();
    assert!(child.wait().unwrap().success());
    assert!(
        second_at - first_at >= Duration::from_millis(1500),
        "first line came at {first_at:?}, second at {second_at:?}: not streamed"
    );
}

#[test]
fn doctor_reports_every_layer() {
    if !sandbox_or_skip("doctor_reports_every_layer") {
        return;
    }
    let env = TestEnv::new();
    let out = env.bulkhead(&["--json", "doctor"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let v = json(&out);
    assert_eq!(v["ok"], true);
    let layers: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["layer"].as_str().unwrap())
        .collect();
    for l in [
        "user namespace",
        "mnt namespace",
        "pid namespace",
        "net namespace",
        "ipc namespace",
        "uts namespace",
        "cgroup namespace",
        "cgroup",
        "landlock",
        "seccomp",
        "trial sandbox",
    ] {
        assert!(layers.contains(&l), "doctor lacks {l}: {layers:?}");
    }
    assert!(v["mode"] == "privileged" || v["mode"] == "rootless");
    // The trial left no workspace behind.
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(text(&out.stdout), "");
    let out = env.bulkhead(&["doctor"]);
    assert!(text(&out.stdout).contains("ok "));
}

#[test]
fn library_example_runs() {
    if !sandbox_or_skip("library_example_runs") {
        return;
    }
    let example = bulkhead_tests::bin_dir().join("examples/embed");
    assert!(
        example.exists(),
        "{} missing: `cargo build --workspace --all-targets` builds it",
        example.display()
    );
    let out = std::process::Command::new(example).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("[out] hello from example"), "{stdout}");
    assert!(stdout.contains("exit: Code(0)"), "{stdout}");
    assert!(stdout.contains("cgroup removed: true"), "{stdout}");
}

#[test]
fn state_dir_through_a_symlink_or_relative_path_works() {
    if !sandbox_or_skip("state_dir_through_a_symlink_or_relative_path_works") {
        return;
    }
    let env = TestEnv::new();
    let real = env.dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let link = env.dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let run = |dir: &std::path::Path, cwd: &std::path::Path, args: &[&str]| {
        std::process::Command::new(bin("bulkhead"))
            .current_dir(cwd)
            .arg("--state-dir")
            .arg(dir)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(
        &link.join("state"),
        env.dir.path(),
        &["workspace", "create", "p"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &link.join("state"),
        env.dir.path(),
        &["exec", "p", "--", "true"],
    );
    assert!(
        out.status.success(),
        "through a symlink: {}",
        text(&out.stderr)
    );
    let out = run(
        std::path::Path::new("state"),
        &real,
        &["exec", "p", "--", "true"],
    );
    assert!(out.status.success(), "relative: {}", text(&out.stderr));
}

#[test]
fn every_command_has_help_with_an_example() {
    let env = TestEnv::new();
    let leaves: &[&[&str]] = &[
        &["workspace", "create"],
        &["workspace", "list"],
        &["workspace", "show"],
        &["workspace", "delete"],
        &["exec"],
        &["doctor"],
        &["cred", "set"],
        &["cred", "list"],
        &["cred", "rm"],
        &["cred", "rekey"],
        &["session", "list"],
        &["session", "show"],
        &["session", "rm"],
        &["run"],
    ];
    for cmd in leaves {
        let mut args = cmd.to_vec();
        args.push("--help");
        let out = env.bulkhead(&args);
        assert!(out.status.success(), "{cmd:?} --help failed");
        let help = text(&out.stdout);
        assert!(
            help.contains("Example"),
            "`bulkhead {}` --help has no example",
            cmd.join(" ")
        );
        assert!(
            help.contains("--json") && help.contains("--state-dir"),
            "{cmd:?} lacks the global flags"
        );
    }
}

#[test]
fn workspace_config_records_models_and_skills() {
    let env = TestEnv::new();
    let out = env.bulkhead(&[
        "--json",
        "workspace",
        "create",
        "m",
        "--model",
        "anthropic/claude-sonnet-4-5",
        "--fallback",
        "openai/gpt-4o",
        "--fallback",
        "google/gemini-2.5-flash",
        "--base-url",
        "http://127.0.0.1:8080",
        "--skill",
        "github",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v = json(&out);
    assert_eq!(v["model"], "anthropic/claude-sonnet-4-5");
    assert_eq!(
        v["fallbacks"],
        serde_json::json!(["openai/gpt-4o", "google/gemini-2.5-flash"])
    );
    assert_eq!(v["skills"], serde_json::json!(["github"]));
    // Stored in workspace.json, read back by show.
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state().join("workspaces/m/workspace.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["model"], "anthropic/claude-sonnet-4-5");
    let out = env.bulkhead(&["workspace", "show", "m"]);
    assert!(
        text(&out.stdout).contains("fallbacks: openai/gpt-4o, google/gemini-2.5-flash"),
        "{}",
        text(&out.stdout)
    );
    for bad in [
        &["--model", "gpt-4o"][..],
        &["--fallback", "Open AI/x"],
        &["--skill", "../x"],
        &["--base-url", "file:///etc"],
    ] {
        let mut args = vec!["workspace", "create", "n"];
        args.extend_from_slice(bad);
        let out = env.bulkhead(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
    assert!(!env.state().join("workspaces/n").exists());
}
