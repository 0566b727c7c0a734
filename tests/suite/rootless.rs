//! Rootless mode: an unprivileged caller with user namespaces. Without a delegated cgroup the
//! launcher refuses (cgroups are required) and says why; with one, every layer applies and the
//! sandbox maps to the caller's own uid.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bulkhead_tests::{bin, must_run, sandbox_or_skip, skip_as, text, TestEnv};

const UID: u32 = 4242;

fn root_or_skip(test: &str) -> bool {
    if !sandbox_or_skip(test) {
        return false;
    }
    if !nix_is_root() {
        skip_as(test, "needs root to set up an unprivileged caller");
        return false;
    }
    true
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}

/// A state dir the unprivileged caller owns.
fn user_env() -> TestEnv {
    let env = TestEnv::new();
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let st = Command::new("chown")
        .arg(format!("{UID}:{UID}"))
        .arg(env.dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    env
}

/// `bulkhead ARGS` as uid/gid 4242 with no supplementary groups, optionally after moving the
/// shell into `cgroup_procs` files first (as root, before dropping privileges).
fn as_user(env: &TestEnv, join: &[PathBuf], args: &[&str]) -> std::process::Output {
    let mut script = String::new();
    for p in join {
        script.push_str(&format!("echo $$ > '{}' || exit 99; ", p.display()));
    }
    script.push_str(&format!(
        "exec setpriv --reuid {UID} --regid {UID} --clear-groups --inh-caps=-all --bounding-set=-all \"$@\""
    ));
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(bin("bulkhead"))
        .arg("--state-dir")
        .arg(env.state())
        .args(args)
        .env("HOME", env.dir.path())
        .output()
        .unwrap()
}

#[test]
fn rootless_without_delegated_cgroup_says_so() {
    if !root_or_skip("rootless_without_delegated_cgroup_says_so") {
        return;
    }
    let env = user_env();
    let out = as_user(&env, &[], &["workspace", "create", "r1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = as_user(&env, &[], &["exec", "r1", "--", "id"]);
    assert_eq!(
        out.status.code(),
        Some(125),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(err.contains("sandbox setup failed: cgroup"), "{err}");
    assert!(
        err.contains("delegat"),
        "the error should say a delegated cgroup is needed: {err}"
    );
}

/// v1 hierarchies holding memory, pids and cpu, and our own path in each.
struct Delegated(Vec<PathBuf>);

impl Drop for Delegated {
    fn drop(&mut self) {
        for d in &self.0 {
            // Sandbox cgroups were removed by the launcher; remove ours.
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn rootless_with_delegated_cgroup_runs_every_layer() {
    if !root_or_skip("rootless_with_delegated_cgroup_runs_every_layer") {
        return;
    }
    let parents = bulkhead_tests::v1_cgroup_dirs();
    if parents.is_empty() {
        // A pure-v2 host: delegation is covered by the temp-dir tests of the planner.
        assert!(
            !must_run() || Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            "no v1 hierarchies and no v2"
        );
        eprintln!("SKIP rootless_with_delegated_cgroup_runs_every_layer: no v1 memory/pids/cpu hierarchies");
        return;
    }
    let name = format!("bulkhead-rootless-test-{}", std::process::id());
    let guard = Delegated(bulkhead_tests::delegate_v1_cgroups(&name, UID));
    let dirs = guard.0.clone();
    let env = user_env();
    let out = as_user(&env, &[], &["workspace", "create", "r2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let procs: Vec<PathBuf> = dirs.iter().map(|d| d.join("cgroup.procs")).collect();
    let out = as_user(
        &env,
        &procs,
        &["exec", "r2", "--memory", "64M", "--", "/bin/sh", "-c", "id; cat /proc/self/uid_map; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo hi > /workspace/f"],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "rootless exec failed: {stdout}{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("uid=1000(sandbox)"), "{stdout}");
    let map: Vec<&str> = stdout.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        map,
        ["1000", &UID.to_string(), "1"],
        "rootless maps to the caller's own uid"
    );
    assert!(
        stdout.contains("NoNewPrivs:\t1")
            && stdout.contains("Seccomp:\t2")
            && stdout.contains("CapEff:\t0000000000000000"),
        "{stdout}"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(env.files("r2").join("f")).unwrap().uid(),
        UID
    );
    // The sandbox cgroup was nested under the delegated one and removed afterwards.
    for d in &dirs {
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "sandbox cgroups left under {}: {left:?}",
            d.display()
        );
    }
    drop(guard);
}
