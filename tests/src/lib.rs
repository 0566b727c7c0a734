//! Shared harness of bulkhead's integration, escape and end-to-end tests.
//!
//! Tests drive the real binaries (`bulkhead`, `bulkhead-launch`, `bulkhead-worker`) built in
//! the same target directory. Tests that need namespaces skip with a printed reason when the
//! host cannot run sandboxes, and fail instead when `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.

pub mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// Directory holding the built binaries: `$BULKHEAD_BIN_DIR`, else the target directory of
/// this test executable (`target/<profile>/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BULKHEAD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("exe dir");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("target dir")
    } else {
        deps
    };
    dir.to_path_buf()
}

/// Path of a built binary; panics with a hint when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` (make test does) first",
        p.display()
    );
    p
}

/// Whether sandbox tests must run (a skip is then a failure), and the skip that is a failure
/// then: one rule for every crate's tests, in `bulkhead-testkit`.
pub use bulkhead_testkit::{must_run, skip, skip_as};

/// Why this host cannot run sandboxes, if it cannot (checked once by starting one).
pub fn sandbox_unavailable() -> Option<String> {
    static WHY: OnceLock<Option<String>> = OnceLock::new();
    WHY.get_or_init(|| {
        let env = TestEnv::new();
        let out = env.bulkhead(&["doctor"]);
        if out.status.success() {
            None
        } else {
            Some(format!(
                "bulkhead doctor says this host cannot run sandboxes:\n{}{}",
                text(&out.stdout),
                text(&out.stderr)
            ))
        }
    })
    .clone()
}

/// Returns `true` when the test should go on; prints the reason and returns `false` to
/// skip; panics instead of skipping when `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.
pub fn sandbox_or_skip(test: &str) -> bool {
    match sandbox_unavailable() {
        None => true,
        Some(why) => {
            skip_as(test, why);
            false
        }
    }
}

/// A finished command for an assertion message: its exit status, stdout and stderr.
pub fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Lossy UTF-8.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The JSON a successful command printed on stdout (panics, showing stderr, if it failed or
/// printed something else).
pub fn ok_json(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)))
}

/// The `config.toml` a test state directory gets (see [`TestEnv::ensure_config`]): the
/// offline mock model listens on 127.0.0.1, which the SSRF guard of model calls refuses
/// unless the operator allows loopback.
pub const TEST_CONFIG: &str =
    "# written by the bulkhead test harness (bulkhead_tests)\n[llm]\nallow_loopback = true\n";

/// Writes [`TEST_CONFIG`] as `<state_dir>/config.toml` unless the directory already has one,
/// creating the directory (mode 0700, as `bulkhead` would) if needed. For harnesses that
/// open a state directory with the library and run agents against the mock model.
pub fn write_test_config(state_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !state_dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
    }
    let path = state_dir.join("config.toml");
    if !path.exists() {
        std::fs::write(&path, TEST_CONFIG)?;
    }
    Ok(())
}

/// A private state directory and helpers to run the CLI against it. Its `config.toml` is
/// [`TEST_CONFIG`] unless a test writes its own.
#[derive(Debug)]
pub struct TestEnv {
    /// Temp dir holding the state dir (removed on drop).
    pub dir: tempfile::TempDir,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A fresh state directory.
    pub fn new() -> Self {
        // Under /var/tmp or the target dir rather than /tmp: the launcher stages the new
        // root on /tmp inside its own mount namespace, which is fine either way, but keeping
        // test state off /tmp makes leftovers easy to find.
        let base = bin_dir().join("test-state");
        std::fs::create_dir_all(&base).expect("create test-state dir");
        let dir = tempfile::Builder::new()
            .prefix("bh-")
            .tempdir_in(&base)
            .expect("tempdir");
        TestEnv { dir }
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes [`TEST_CONFIG`] as the state directory's `config.toml` (creating the
    /// directory, mode 0700, as `bulkhead` would) unless it already has one: a test that
    /// writes its own config keeps it. Done on first use rather than in [`TestEnv::new`], so
    /// a test may still hand the whole directory to another user first (rootless tests).
    pub fn ensure_config(&self) {
        write_test_config(&self.state()).expect("write the test state dir's config.toml");
    }

    /// A `bulkhead` command with `--state-dir` set and a clean environment (the state
    /// directory gets [`TEST_CONFIG`] first, see [`TestEnv::ensure_config`]).
    pub fn cmd(&self) -> Command {
        self.ensure_config();
        let mut c = Command::new(bin("bulkhead"));
        c.arg("--state-dir").arg(self.state());
        c.env_remove("BULKHEAD_STATE_DIR");
        c.env_remove("BULKHEAD_LAUNCH");
        c.stdin(Stdio::null());
        c
    }

    /// [`TestEnv::cmd`] with the credential key `key` (if any) and no other credential or
    /// log setting from the caller's environment.
    pub fn cmd_with_key(&self, key: Option<&str>) -> Command {
        let mut c = self.cmd();
        for v in [
            "BULKHEAD_CREDENTIAL_KEY",
            "BULKHEAD_NEW_CREDENTIAL_KEY",
            "BULKHEAD_CREDENTIAL_CIPHER",
            "BULKHEAD_LOG_LEVEL",
            "BULKHEAD_LOG_FILE",
            "BULKHEAD_LOG_FORMAT",
        ] {
            c.env_remove(v);
        }
        if let Some(k) = key {
            c.env("BULKHEAD_CREDENTIAL_KEY", k);
        }
        c
    }

    /// Writes a global skill: `<state>/skills/<id>/SKILL.md` with the TOML front matter
    /// `front`, and the executable entry point `entry` holding `code`.
    pub fn write_skill(&self, id: &str, front: &str, entry: &str, code: &str) {
        use std::os::unix::fs::PermissionsExt;
        self.ensure_config();
        let d = self.state().join("skills").join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("SKILL.md"),
            format!("+++\n{front}\n+++\nUsage of {id}.\n"),
        )
        .unwrap();
        let p = d.join(entry);
        std::fs::write(&p, code).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Runs `bulkhead --state-dir … ARGS`.
    pub fn bulkhead(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run bulkhead")
    }

    /// Creates a workspace (panics on failure).
    pub fn create(&self, id: &str) {
        let out = self.bulkhead(&["workspace", "create", id]);
        assert!(
            out.status.success(),
            "workspace create {id}: {}",
            text(&out.stderr)
        );
    }

    /// `bulkhead exec ID [FLAGS] -- ARGV`.
    pub fn exec(&self, id: &str, flags: &[&str], argv: &[&str]) -> Output {
        let mut args = vec!["exec", id];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(argv);
        self.bulkhead(&args)
    }

    /// `bulkhead exec ID -- /bin/sh -c SCRIPT`.
    pub fn sh(&self, id: &str, script: &str) -> Output {
        self.exec(id, &[], &["/bin/sh", "-c", script])
    }

    /// Host path of a workspace's `files/`.
    pub fn files(&self, id: &str) -> PathBuf {
        self.state().join("workspaces").join(id).join("files")
    }
}

/// Namespace ids of a process as seen from the host.
pub fn ns_id(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// A workspace whose sandbox was just checked to be really isolated (new mount, pid, net,
/// uts namespaces, only `lo`, pid 1 is the worker): attack tests run only in one of these.
#[derive(Debug)]
pub struct Isolated {
    /// The environment.
    pub env: TestEnv,
    /// Workspace id.
    pub id: String,
}

impl Isolated {
    /// Creates the workspace and checks its isolation; `None` (after printing why) when the
    /// host cannot run sandboxes.
    pub fn new(test: &str) -> Option<Isolated> {
        if !sandbox_or_skip(test) {
            return None;
        }
        Some(Isolated::in_env(TestEnv::new()))
    }

    /// [`Isolated::new`] in a given state directory (e.g. one on a [`BtrfsRoot`]); the
    /// caller has checked that sandboxes can run.
    pub fn in_env(env: TestEnv) -> Isolated {
        let id = "attack";
        env.create(id);
        let out = env.sh(
            id,
            "for n in mnt pid net uts; do readlink /proc/self/ns/$n; done; cat /proc/1/comm; \
             cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '",
        );
        assert!(
            out.status.success(),
            "isolation probe failed: {}",
            text(&out.stderr)
        );
        let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
        assert!(lines.len() >= 6, "isolation probe output: {lines:?}");
        for (i, ns) in ["mnt", "pid", "net", "uts"].iter().enumerate() {
            assert_ne!(
                lines[i],
                ns_id("self", ns),
                "the sandbox shares the host's {ns} namespace: refusing to run attacks"
            );
        }
        assert_eq!(
            lines[4], "bulkhead-worker",
            "pid 1 inside is not the worker"
        );
        assert_eq!(
            &lines[5..],
            ["lo"],
            "interfaces besides lo inside the sandbox"
        );
        Isolated { env, id: id.into() }
    }

    /// Runs a shell script in the isolated sandbox.
    pub fn sh(&self, script: &str) -> Output {
        self.env.sh(&self.id, script)
    }

    /// Runs argv in the isolated sandbox with extra flags.
    pub fn exec(&self, flags: &[&str], argv: &[&str]) -> Output {
        self.env.exec(&self.id, flags, argv)
    }

    /// Runs a python3 program in the isolated sandbox.
    pub fn python(&self, code: &str) -> Output {
        self.exec(&[], &["python3", "-c", code])
    }
}

/// A hostile tenant's attacks on the resources it shares with its neighbours, as `sh` scripts
/// for its sandbox, each running until killed (tests/suite/neighbours_kernel.rs runs them
/// beside another tenant's work, `bulkhead-bench --only neighbours` measures that work's
/// latency beside them). The CPU hog first tries real-time priority and a negative nice (both
/// refused) and records a success in `/workspace/escalated`.
pub const NEIGHBOUR_ATTACKS: &[(&str, &str)] = &[
    (
        "cpu hog",
        "chrt -f 50 true 2>/dev/null && echo REALTIME > /workspace/escalated; \
         for i in 1 2 3 4 5 6 7 8; do (nice -n -20 sh -c 'while :; do :; done' 2>/dev/null) & \
         done; wait",
    ),
    ("fork bomb", "f() { f | f & }; f; sleep 1000"),
    (
        "memory bomb",
        "while :; do python3 -c 'a = []\nwhile True: a.append(bytearray(16 << 20))' \
         2>/dev/null; done",
    ),
    (
        "io/fsync flood",
        "for i in 1 2 3 4; do (while :; do dd if=/dev/zero of=/workspace/flood$i bs=256k \
         count=16 conv=fsync 2>/dev/null; done) & done; wait",
    ),
];

/// Asserts a path does not exist on the host (used after attacks that try to create one).
pub fn assert_absent(p: &Path) {
    assert!(!p.exists(), "{} exists on the host", p.display());
}

/// This process's own cgroup directories in the v1 memory, pids and cpu hierarchies (where
/// a test delegates cgroups to an unprivileged caller); empty on a host without all three.
pub fn v1_cgroup_dirs() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for ctrl in ["memory", "pids", "cpu"] {
        let line = own.lines().find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|x| x == ctrl))
        });
        let Some(line) = line else { return vec![] };
        let Some(path) = line.splitn(3, ':').nth(2) else {
            return vec![];
        };
        let mount = Path::new("/sys/fs/cgroup").join(ctrl);
        if !mount.join("cgroup.procs").exists() {
            return vec![];
        }
        out.push(mount.join(path.trim_start_matches('/')));
    }
    out
}

/// Creates `<dir>/<name>` under each of [`v1_cgroup_dirs`] and hands it (and what the kernel
/// put in it) to `uid`: a cgroup delegated to an unprivileged caller. The caller of this
/// removes the directories.
pub fn delegate_v1_cgroups(name: &str, uid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for parent in v1_cgroup_dirs() {
        let d = parent.join(name);
        std::fs::create_dir(&d).expect("create a delegated cgroup");
        let st = Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(&d)
            .status()
            .expect("run chown");
        assert!(st.success(), "chown -R {uid} {}", d.display());
        dirs.push(d);
    }
    dirs
}

impl TestEnv {
    /// A fresh state directory under `base` (e.g. [`BtrfsRoot::path`]) instead of the
    /// target directory.
    pub fn in_dir(base: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("bh-")
            .tempdir_in(base)
            .expect("tempdir");
        TestEnv { dir }
    }
}

/// A loop-mounted btrfs filesystem made for one test in a file under the target directory:
/// a state root that tenants share, whose free space a test can watch. Unmounted (with
/// every mount below it, e.g. workspaces' own filesystems) and removed on drop, also when
/// the test fails. Needs root, `mkfs.btrfs` (btrfs-progs) and a kernel with btrfs.
#[derive(Debug)]
pub struct BtrfsRoot {
    dir: PathBuf,
    mnt: PathBuf,
}

impl BtrfsRoot {
    /// Makes and mounts a btrfs of `size` bytes; `Err` says why this host cannot.
    pub fn new(name: &str, size: u64) -> Result<BtrfsRoot, String> {
        if !euid_is_root() {
            return Err("needs root to mount a btrfs state root".into());
        }
        let mkfs = [
            "/usr/sbin/mkfs.btrfs",
            "/sbin/mkfs.btrfs",
            "/usr/bin/mkfs.btrfs",
        ]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("mkfs.btrfs is missing: apt-get install btrfs-progs")?;
        let dir = bin_dir().join(format!("btrfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("mnt")).map_err(|e| format!("{}: {e}", dir.display()))?;
        // From here on, drop cleans up whatever was made.
        let root = BtrfsRoot {
            mnt: dir.join("mnt"),
            dir,
        };
        let img = root.dir.join("img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .map_err(|e| format!("{}: {e}", img.display()))?;
        let sh = |c: &mut Command| -> Result<(), String> {
            let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!("{c:?}: {}", text(&out.stderr)))
            }
        };
        sh(Command::new(mkfs).args(["-q", "-f"]).arg(&img))?;
        sh(Command::new("mount")
            .args(["-t", "btrfs", "-o", "loop"])
            .arg(&img)
            .arg(&root.mnt))?;
        Ok(root)
    }

    /// [`BtrfsRoot::new`], or `None` after printing why the test is skipped; panics instead
    /// when `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.
    pub fn or_skip(test: &str, size: u64) -> Option<BtrfsRoot> {
        match BtrfsRoot::new(test, size) {
            Ok(r) => Some(r),
            Err(why) => {
                skip_as(test, why);
                None
            }
        }
    }

    /// For a sandbox test: checks sandboxes can run, then makes a btrfs of `size` bytes named
    /// after `test` and a state directory on it; `None` after saying why the test is skipped
    /// (a panic under `BULKHEAD_PRIV_TESTS_MUST_RUN=1`). Bind the pair as `(_root, env)`, so the
    /// state directory is dropped before its filesystem.
    pub fn state_for(test: &str, size: u64) -> Option<(BtrfsRoot, TestEnv)> {
        if !sandbox_or_skip(test) {
            return None;
        }
        let root = BtrfsRoot::or_skip(test, size)?;
        let env = TestEnv::in_dir(root.path());
        Some((root, env))
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Bytes an unprivileged writer could still get (`df`'s Avail), after a sync so that
    /// btrfs's delayed allocations are counted.
    pub fn free_bytes(&self) -> u64 {
        let _ = Command::new("sync").arg("-f").arg(&self.mnt).status();
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.mnt)
            .output()
            .expect("df");
        text(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("df said {}", text(&out.stdout)))
    }
}

impl Drop for BtrfsRoot {
    fn drop(&mut self) {
        // Everything mounted below (workspaces' filesystems) first, then the root; lazily
        // when something still holds it, so the loop devices go once it lets go.
        let recursive = Command::new("umount").arg("-R").arg(&self.mnt).status();
        if !recursive.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-Rl").arg(&self.mnt).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn euid_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"))
}
