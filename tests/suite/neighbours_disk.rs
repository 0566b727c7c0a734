//! Hostile neighbours: tenant A attacks a shared resource while tenant B works, in one run,
//! on a state root of its own (a loop-mounted btrfs the test makes and removes). Root only;
//! a skip is a failure under `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.
//!
//! Disk: A has `--disk 64M`, fills it and gets ENOSPC at its limit; B's exec, a session
//! append (a run against the mock model) and a `cred set` still succeed; the state
//! filesystem loses at most A's limit; `df /workspace` in A shows A's own size.

use std::process::{Command, Output, Stdio};

use bulkhead_tests::mock_llm::{MockLlm, Reply, Script};
use bulkhead_tests::{show, text, BtrfsRoot, TestEnv};

const MIB: u64 = 1 << 20;
/// A's disk limit.
const LIMIT: u64 = 64 * MIB;
/// What the state filesystem may lose beyond A's limit while the test runs: B's own state
/// (session lines, creds.enc, memory.db: well under 1 MiB) and btrfs's metadata for the
/// new files and directories (DUP metadata, 16 KiB nodes). 8 MiB is far above what it
/// takes and far below what any leak of A's writes would show.
const SLACK: u64 = 8 * MIB;

const KEY: &str = "correct horse battery staple, neighbours";

/// A `bulkhead` command for `env` with the credential key and nothing else of ours.
fn cmd(env: &TestEnv) -> Command {
    let mut c = env.cmd();
    c.env_clear();
    c.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    c.env("BULKHEAD_CREDENTIAL_KEY", KEY);
    c
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", show(&out));
    out
}

/// `df -B1 --output=size,used,avail,itotal /workspace` inside `ws`.
fn df_in(env: &TestEnv, ws: &str) -> (u64, u64, u64, u64) {
    let out = ok(cmd(env)
        .args([
            "exec",
            ws,
            "--",
            "df",
            "-B1",
            "--output=size,used,avail,itotal",
            "/workspace",
        ])
        .output()
        .unwrap());
    let line = text(&out.stdout);
    let v: Vec<u64> = line
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("df said {line}"))
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    (v[0], v[1], v[2], v[3])
}

/// What B does while A attacks, each step checked: a file written and read back in its
/// sandbox, a credential set, a run against the mock model appended to its session.
fn b_works(env: &TestEnv, mock: &MockLlm, round: u32) {
    let out = ok(cmd(env)
        .args([
            "exec",
            "b",
            "--",
            "sh",
            "-c",
            &format!(
                "head -c 1048576 /dev/zero > /workspace/r{round} && wc -c < /workspace/r{round}"
            ),
        ])
        .output()
        .unwrap());
    assert_eq!(text(&out.stdout).trim(), "1048576");
    ok(cmd(env)
        .args(["cred", "set", "b", "svc", &format!("token=t-{round}")])
        .output()
        .unwrap());
    mock.push(Reply::text(format!("answer {round}")));
    let out = ok(cmd(env)
        .env("ANTHROPIC_API_KEY", "sk-ant-neighbours-0123456789")
        .args([
            "run",
            "b",
            "--model",
            "anthropic/claude-sonnet-4-5",
            "--base-url",
            &mock.base_url(),
            "--session",
            "s",
            &format!("hello {round}"),
        ])
        .output()
        .unwrap());
    assert_eq!(text(&out.stdout).trim(), format!("answer {round}"));
    let session = env.state().join("workspaces/b/sessions/s.jsonl");
    let lines = std::fs::read_to_string(&session).unwrap();
    assert!(
        lines.contains(&format!("answer {round}")),
        "the session append of round {round} is missing"
    );
}

#[test]
fn a_tenant_filling_its_disk_leaves_its_neighbour_working() {
    let test = "a_tenant_filling_its_disk_leaves_its_neighbour_working";
    let Some((root, env)) = BtrfsRoot::state_for(test, 1 << 30) else {
        return;
    };
    let mock = MockLlm::start(Script::new());
    env.create("b");
    let free_before = root.free_bytes();
    ok(cmd(&env)
        .args([
            "workspace",
            "create",
            "a",
            "--disk",
            "64M",
            "--inodes",
            "4096",
        ])
        .output()
        .unwrap());
    let shown = ok(cmd(&env)
        .args(["--json", "workspace", "show", "a"])
        .output()
        .unwrap());
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(v["limits"]["disk_bytes"], LIMIT);
    assert_eq!(v["limits"]["inodes"], 4096);

    // A sees its own filesystem: ~64M (ext4's journal and inode tables take their share),
    // empty, with about the inodes it was given; B sees the state filesystem.
    let (size, used, _, inodes) = df_in(&env, "a");
    assert!(
        (LIMIT * 3 / 4..=LIMIT).contains(&size),
        "df /workspace in A shows {size} bytes, not ~64M"
    );
    assert!(used < MIB, "{used}");
    assert!((4096..4096 + 64).contains(&inodes), "{inodes} inodes");
    assert_eq!(v["disk"]["size_bytes"], size);
    let (b_size, ..) = df_in(&env, "b");
    assert!(
        b_size > 512 * MIB,
        "B shares the 1G state filesystem: {b_size}"
    );

    // A fills its disk in the background, two ways, and reports how each ended.
    let attack =
        "i=0; while [ $i -lt 5000 ] && touch /workspace/f$i 2>/dev/null; do i=$((i+1)); done; \
                  echo files=$i; rm -f /workspace/f*; \
                  dd if=/dev/zero of=/workspace/fill bs=1M count=200 2>/tmp/dd.err; \
                  echo dd=$?; cat /tmp/dd.err; \
                  fallocate -l 100M /workspace/more 2>&1; echo fallocate=$?; \
                  ls -l /workspace/fill | awk '{print \"fill=\" $5}'";
    let a = cmd(&env)
        .args(["exec", "a", "--", "sh", "-c", attack])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // B works meanwhile, and again once A is full.
    b_works(&env, &mock, 1);
    let a = a.wait_with_output().unwrap();
    let said = text(&a.stdout);
    b_works(&env, &mock, 2);

    // A hit its limit: dd and fallocate fail with ENOSPC, not before ~the limit.
    assert!(said.contains("dd=1"), "{}", show(&a));
    assert!(
        said.contains("No space left on device") || said.contains("Disk quota exceeded"),
        "{}",
        show(&a)
    );
    assert!(said.contains("fallocate=1"), "{}", show(&a));
    let fill: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("fill="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", show(&a)));
    assert!(
        (LIMIT * 3 / 4 - 8 * MIB..=LIMIT).contains(&fill),
        "A wrote {fill} bytes before ENOSPC"
    );
    // The inode limit holds too: far fewer than 5000 empty files fit in 4096 inodes.
    let files: u64 = said
        .lines()
        .find_map(|l| l.strip_prefix("files="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", show(&a)));
    assert!(files < 4096, "A made {files} files with 4096 inodes");
    let (_, a_used, a_avail, _) = df_in(&env, "a");
    assert!(a_used >= LIMIT / 2 && a_avail < MIB, "{a_used} {a_avail}");

    // The state filesystem lost at most A's limit (reserved when it was set) and slack.
    let free_after = root.free_bytes();
    let lost = free_before.saturating_sub(free_after);
    assert!(
        lost <= LIMIT + SLACK,
        "the state filesystem lost {} MiB (A's limit is 64 MiB)",
        lost >> 20
    );
    eprintln!(
        "neighbours: state filesystem lost {} KiB for A's 64 MiB limit; A wrote {} KiB before ENOSPC, made {files} files",
        lost >> 10,
        fill >> 10
    );

    // Deleting A gives the space back and leaves no mount behind.
    ok(cmd(&env)
        .args(["workspace", "delete", "a"])
        .output()
        .unwrap());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&env.state().join("workspaces/a").display().to_string()),
        "{mounts}"
    );
}

#[test]
fn setting_a_disk_limit_keeps_the_files_and_refuses_what_does_not_fit() {
    let test = "setting_a_disk_limit_keeps_the_files_and_refuses_what_does_not_fit";
    let Some((_root, env)) = BtrfsRoot::state_for(test, 1 << 30) else {
        return;
    };
    env.create("c");
    ok(cmd(&env)
        .args([
            "exec",
            "c",
            "--",
            "sh",
            "-c",
            "mkdir /workspace/d && echo kept > /workspace/d/f && ln -s d/f /workspace/l && head -c 20971520 /dev/zero > /workspace/big",
        ])
        .output()
        .unwrap());
    // 20M of files do not fit in 16M: refused, nothing changed.
    let out = cmd(&env)
        .args(["workspace", "set", "c", "--disk", "16M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("does not fit"), "{}", show(&out));
    let (size, ..) = df_in(&env, "c");
    assert!(size > 512 * MIB, "still on the state filesystem: {size}");
    // --inodes alone is refused: it belongs to a disk limit.
    let out = cmd(&env)
        .args(["workspace", "set", "c", "--inodes", "1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("needs --disk"), "{}", show(&out));
    // 48M: the files move into the new filesystem, links and all.
    ok(cmd(&env)
        .args(["workspace", "set", "c", "--disk", "48M"])
        .output()
        .unwrap());
    let out = ok(cmd(&env)
        .args([
            "exec",
            "c",
            "--",
            "sh",
            "-c",
            "cat /workspace/l; wc -c < /workspace/big; df -B1 --output=size /workspace | tail -1",
        ])
        .output()
        .unwrap());
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines[..2], ["kept", "20971520"], "{said}");
    let size: u64 = lines[2].trim().parse().unwrap();
    assert!((36 * MIB..=48 * MIB).contains(&size), "{size}");
    // Growing it keeps them too; a disk limit cannot be removed.
    ok(cmd(&env)
        .args(["workspace", "set", "c", "--disk", "96M"])
        .output()
        .unwrap());
    let out = ok(cmd(&env)
        .args(["exec", "c", "--", "cat", "/workspace/d/f"])
        .output()
        .unwrap());
    assert_eq!(text(&out.stdout), "kept\n");
    let out = cmd(&env)
        .args(["workspace", "set", "c", "--disk", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // The old directory and the staging image are gone; the image is not in the sandbox.
    let ws = env.state().join("workspaces/c");
    for leftover in [".files-old", ".files-new", "disk.img.new"] {
        assert!(!ws.join(leftover).exists(), "{leftover} left behind");
    }
    let out = ok(cmd(&env)
        .args(["exec", "c", "--", "sh", "-c", "ls -a /workspace"])
        .output()
        .unwrap());
    assert!(!text(&out.stdout).contains("disk.img"), "{}", show(&out));
}

/// `--disk` where it cannot be enforced is refused (exit 2) with the reason and the fix,
/// and nothing is created: a state directory on ramfs (which cannot reserve space), and a
/// controller that is not root.
#[test]
fn disk_limits_are_refused_where_they_cannot_be_enforced() {
    let test = "disk_limits_are_refused_where_they_cannot_be_enforced";
    let Some(root) = BtrfsRoot::or_skip("neighbours-refuse", 256 << 20) else {
        return;
    };
    // ramfs: mounted on a directory of the test's btrfs, so its removal takes it away.
    let ram = root.path().join("ram");
    std::fs::create_dir(&ram).unwrap();
    let st = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(&ram)
        .status()
        .unwrap();
    assert!(st.success(), "{test}: mount ramfs");
    let env = TestEnv::in_dir(&ram);
    let out = cmd(&env)
        .args(["workspace", "create", "r", "--disk", "64M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("ramfs") && err.contains("cannot reserve space") && err.contains("btrfs"),
        "{err}"
    );
    assert!(!env.state().join("workspaces/r").exists());
    let out = cmd(&env).args(["doctor"]).output().unwrap();
    let said = text(&out.stdout);
    let line = said
        .lines()
        .find(|l| l.contains("disk limits"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(
        line.contains("ramfs") && line.contains("ext4, XFS, btrfs"),
        "{line}"
    );

    // Not root: refused before anything is made, saying why.
    let user_dir = root.path().join("user");
    std::fs::create_dir(&user_dir).unwrap();
    let st = Command::new("chown")
        .arg("65534:65534")
        .arg(&user_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bulkhead_tests::bin("bulkhead"))
        .arg("--state-dir")
        .arg(user_dir.join("state"))
        .args(["workspace", "create", "u", "--disk", "64M"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("disk limits need bulkhead to run as root"),
        "{}",
        show(&out)
    );
    assert!(!user_dir.join("state/workspaces/u").exists());
    let _ = Command::new("umount").arg(&ram).status();
}

/// The same setting over JSON-RPC: `workspace.create` and `workspace.set` take
/// `limits.disk_bytes`/`inodes`, and the result shows the filesystem's size.
#[test]
fn json_rpc_sets_the_disk_limit() {
    use std::io::{BufRead, BufReader, Write};
    let test = "json_rpc_sets_the_disk_limit";
    let Some(root) = BtrfsRoot::or_skip("neighbours-rpc", 512 << 20) else {
        return;
    };
    let env = TestEnv::in_dir(root.path());
    let mut child = cmd(&env)
        .args(["serve", "--stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut call = |id: u32, method: &str, params: serde_json::Value| -> serde_json::Value {
        let req =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{req}").unwrap();
        loop {
            let line = lines.next().expect("an answer").unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["id"] == id {
                return v;
            }
        }
    };
    let v = call(
        1,
        "workspace.create",
        serde_json::json!({"id": "r", "limits": {"disk_bytes": 32 * MIB, "inodes": 2000}}),
    );
    assert_eq!(v["result"]["limits"]["disk_bytes"], 32 * MIB, "{test}: {v}");
    let size = v["result"]["disk"]["size_bytes"].as_u64().unwrap();
    assert!((24 * MIB..=32 * MIB).contains(&size), "{v}");
    let v = call(
        2,
        "workspace.set",
        serde_json::json!({"id": "r", "limits": {"disk_bytes": 48 * MIB}}),
    );
    assert_eq!(v["result"]["limits"]["disk_bytes"], 48 * MIB, "{v}");
    let size = v["result"]["disk"]["size_bytes"].as_u64().unwrap();
    assert!((36 * MIB..=48 * MIB).contains(&size), "{v}");
    // Refusals are errors with the reason, the server goes on.
    let v = call(
        3,
        "workspace.set",
        serde_json::json!({"id": "r", "limits": {"disk_bytes": MIB}}),
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limits.disk_bytes"),
        "{v}"
    );
    let v = call(4, "workspace.delete", serde_json::json!({"id": "r"}));
    assert_eq!(v["result"]["deleted"], "r", "{v}");
    drop(stdin);
    child.wait().unwrap();
}

/// Runs `flock <mode> <lock> -c 'echo held; sleep 1.5'` and returns once it holds the lock.
fn hold(lock: &std::path::Path, mode: &str) -> std::process::Child {
    use std::io::BufRead;
    let mut holder = Command::new("flock")
        .arg(mode)
        .arg(lock)
        .args(["-c", "echo held; sleep 1.5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock(1)");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    holder
}

/// `set --disk` and sandbox starts exclude each other through the workspace's
/// `skill-freeze.lock`: a disk change waits for a start in progress (the lock held shared,
/// as a start holds it until its sandbox is registered), and an exec or a skill's sandbox
/// waits while a disk change holds it exclusively. A change while a sandbox runs is refused.
#[test]
fn a_disk_change_and_sandbox_starts_exclude_each_other() {
    let test = "a_disk_change_and_sandbox_starts_exclude_each_other";
    let Some((_root, env)) = BtrfsRoot::state_for(test, 1 << 30) else {
        return;
    };
    env.create("d");
    ok(cmd(&env)
        .args(["exec", "d", "--", "sh", "-c", "echo kept > /workspace/f"])
        .output()
        .unwrap());
    let lock = env.state().join("workspaces/d/skill-freeze.lock");
    let held = std::time::Duration::from_millis(1400);

    // A start in progress: the disk change waits for it, then is done.
    let mut holder = hold(&lock, "-s");
    let t = std::time::Instant::now();
    ok(cmd(&env)
        .args(["workspace", "set", "d", "--disk", "32M"])
        .output()
        .unwrap());
    assert!(
        t.elapsed() >= held,
        "set --disk ran while a sandbox start held the lock ({:?})",
        t.elapsed()
    );
    assert!(holder.wait().unwrap().success());
    let (size, ..) = df_in(&env, "d");
    assert!((24 * MIB..=32 * MIB).contains(&size), "{size}");

    // A disk change in progress (the lock held exclusively): an exec waits for it.
    let mut holder = hold(&lock, "-x");
    let t = std::time::Instant::now();
    let out = ok(cmd(&env)
        .args(["exec", "d", "--", "cat", "/workspace/f"])
        .output()
        .unwrap());
    assert!(
        t.elapsed() >= held,
        "a sandbox started during a disk change ({:?})",
        t.elapsed()
    );
    assert_eq!(text(&out.stdout), "kept\n");
    assert!(holder.wait().unwrap().success());

    // A skill's sandbox (no credentials: it took no lock before) waits too.
    env.write_skill(
        "hello",
        "name = \"hello\"\ndescription = \"says hi\"",
        "execute.sh",
        "#!/bin/sh\necho hi from the skill\n",
    );
    ok(cmd(&env)
        .args(["skill", "enable", "d", "hello"])
        .output()
        .unwrap());
    let mut holder = hold(&lock, "-x");
    let t = std::time::Instant::now();
    let out = ok(cmd(&env)
        .args(["skill", "run", "d", "hello"])
        .output()
        .unwrap());
    assert!(
        t.elapsed() >= held,
        "a skill's sandbox started during a disk change ({:?})",
        t.elapsed()
    );
    assert!(
        text(&out.stdout).contains("hi from the skill"),
        "{}",
        show(&out)
    );
    assert!(holder.wait().unwrap().success());

    // A running sandbox: the change is refused, nothing changes.
    let mut sleeper = cmd(&env)
        .args(["exec", "d", "--", "sleep", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run_dir = env.state().join("workspaces/d/run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&run_dir).map_or(0, |r| r.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox never registered"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = cmd(&env)
        .args(["workspace", "set", "d", "--disk", "48M"])
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("running"), "{}", show(&out));
}

/// A crash of `set --disk` after the plain files/ was moved aside (`.files-old`) and an
/// empty files/ made: the next `set --disk` gives the files back and moves them into the
/// new filesystem (it used to delete `.files-old` first).
#[test]
fn an_interrupted_disk_change_loses_no_files() {
    let test = "an_interrupted_disk_change_loses_no_files";
    let Some((_root, env)) = BtrfsRoot::state_for(test, 1 << 30) else {
        return;
    };
    env.create("e");
    ok(cmd(&env)
        .args([
            "exec",
            "e",
            "--",
            "sh",
            "-c",
            "mkdir /workspace/d && echo kept > /workspace/d/f",
        ])
        .output()
        .unwrap());
    let ws = env.state().join("workspaces/e");
    std::fs::rename(ws.join("files"), ws.join(".files-old")).unwrap();
    std::fs::create_dir(ws.join("files")).unwrap();
    ok(cmd(&env)
        .args(["workspace", "set", "e", "--disk", "32M"])
        .output()
        .unwrap());
    let out = ok(cmd(&env)
        .args(["exec", "e", "--", "cat", "/workspace/d/f"])
        .output()
        .unwrap());
    assert_eq!(text(&out.stdout), "kept\n");
    assert!(!ws.join(".files-old").exists());
    let (size, ..) = df_in(&env, "e");
    assert!((24 * MIB..=32 * MIB).contains(&size), "{size}");
    // Both a files/ with files and a .files-old: refused, both kept.
    std::fs::create_dir_all(ws.join(".files-old")).unwrap();
    std::fs::write(ws.join(".files-old/g"), "old").unwrap();
    let out = cmd(&env)
        .args(["workspace", "set", "e", "--disk", "48M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        text(&out.stderr).contains("remove .files-old"),
        "{}",
        show(&out)
    );
    assert!(ws.join(".files-old/g").exists());
    let out = ok(cmd(&env)
        .args(["exec", "e", "--", "cat", "/workspace/d/f"])
        .output()
        .unwrap());
    assert_eq!(text(&out.stdout), "kept\n");
}
