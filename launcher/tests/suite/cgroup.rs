//! Real-kernel tests of the launcher's cgroup module (tier 2: root, real cgroupfs).
//!
//! They drive `bulkhead_launch::cgroup`, the module the launcher runs. Without root or a
//! writable cgroup hierarchy they skip with a printed reason; with
//! `BULKHEAD_PRIV_TESTS_MUST_RUN=1` a skip is a failure.

use bulkhead_launch::cgroup as imp;

use std::fs;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bulkhead_policy::cgroup::{CgroupFile, CgroupPlan, LEAF_NAME};
use bulkhead_wire::{CgroupVersion, Limits};

use bulkhead_testkit::skip;

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn denied(errno: i32) -> bool {
    matches!(errno, libc::EACCES | libc::EPERM | libc::EROFS)
}

/// Kills and reaps its children and removes its directories (newest first) on drop, so a
/// failed assertion leaves nothing behind.
#[derive(Default)]
struct Cleanup {
    children: Vec<Child>,
    dirs: Vec<PathBuf>,
    cgroups: Vec<imp::Cgroup>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for cg in &self.cgroups {
            imp::destroy(cg);
        }
        for dir in self.dirs.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// The cgroup paths of `pid`, one `/proc/<pid>/cgroup` line each: (controllers, path).
fn cgroups_of(pid: u32) -> Vec<(String, String)> {
    fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

fn path_for(cgroups: &[(String, String)], controller: &str) -> String {
    cgroups
        .iter()
        .find(|(ctrls, _)| {
            if controller.is_empty() {
                ctrls.is_empty()
            } else {
                ctrls.split(',').any(|c| c == controller)
            }
        })
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("no {controller:?} line in {cgroups:?}"))
}

/// Where the sandbox cgroup must be: beside our leaf, or under our own cgroup.
fn expected_sandbox_path(own: &str, name: &str) -> String {
    let d = own.strip_suffix(&format!("/{LEAF_NAME}")).unwrap_or(own);
    format!("{}/bulkhead-{name}", d.trim_end_matches('/'))
}

/// The one file named `file` among the sandbox directories.
fn limit_file(cg: &imp::Cgroup, file: &str) -> PathBuf {
    cg.dirs
        .iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {file} in {:?}", cg.dirs))
}

fn read_trim(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_owned()
}

#[test]
fn sandbox_cgroup_limits_oom_and_teardown() {
    if !is_root() {
        return skip("cgroup tests need root");
    }
    let name = format!("suite-{}", std::process::id());
    let limits = Limits {
        memory_bytes: 64 << 20,
        swap_bytes: 0,
        pids: 16,
        cpu_weight: 100,
        cpu_quota_us: 0,
        cpu_period_us: 100_000,
        tmp_bytes: 1 << 20,
        shm_bytes: 1 << 20,
        nofile: 1024,
        io_weight: 100,
        io_max: Default::default(),
        disk_bytes: 0,
        inodes: 0,
    };
    let plan = match imp::plan_for_self(
        &fs::read_to_string("/proc/self/cgroup").unwrap(),
        &name,
        &limits,
        "/tmp",
    ) {
        Ok(plan) => plan,
        Err(e) => return skip(format!("no usable cgroup hierarchy: {e}")),
    };
    let mut cleanup = Cleanup::default();
    let cg = match imp::create(&plan) {
        Ok(cg) => cg,
        Err(e) if denied(e.errno) => return skip(format!("cgroup not writable: {e}")),
        Err(e) => panic!("create failed: {e}"),
    };
    cleanup.cgroups.push(cg.clone());
    eprintln!("cgroup {:?}: {:?}", cg.version, cg.dirs);
    assert_eq!(cg.dirs, plan.dirs);
    for dir in &cg.dirs {
        assert!(dir.is_dir(), "{}", dir.display());
    }

    // Limits hold the values.
    match cg.version {
        CgroupVersion::V1 => {
            assert_eq!(
                read_trim(&limit_file(&cg, "memory.limit_in_bytes")),
                "67108864"
            );
            assert_eq!(read_trim(&limit_file(&cg, "cpu.shares")), "1024");
        }
        CgroupVersion::V2 => {
            assert_eq!(read_trim(&limit_file(&cg, "memory.max")), "67108864");
            assert_eq!(read_trim(&limit_file(&cg, "cpu.weight")), "100");
        }
    }
    assert_eq!(read_trim(&limit_file(&cg, "pids.max")), "16");

    // A process attached shows the new cgroup paths, under our own.
    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let sleeper_pid = sleeper.id();
    cleanup.children.push(sleeper);
    imp::attach(&cg, sleeper_pid as libc::pid_t).unwrap();
    let ours = cgroups_of(std::process::id());
    let its = cgroups_of(sleeper_pid);
    let controllers: &[&str] = match cg.version {
        CgroupVersion::V1 => &["memory", "pids", "cpu"],
        CgroupVersion::V2 => &[""],
    };
    for controller in controllers {
        assert_eq!(
            path_for(&its, controller),
            expected_sandbox_path(&path_for(&ours, controller), &name),
            "controller {controller:?}"
        );
    }

    // A memory hog attached before it allocates is OOM-killed, and counted.
    assert_eq!(imp::oom_kills(&cg), 0);
    let mut hog = Command::new("sh")
        .args(["-c", "read x; exec tail /dev/zero"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    imp::attach(&cg, hog.id() as libc::pid_t).unwrap();
    hog.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let status = wait_timeout(&mut hog, Duration::from_secs(60));
    cleanup.children.push(hog);
    let status = status.expect("the memory hog was not stopped by the 64 MiB limit");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        imp::oom_kills(&cg) > 0,
        "no oom_kill counted in {:?}",
        cg.oom_file
    );

    // Teardown never signals a pid it reads from cgroup.procs (a setuid supervisor holds
    // CAP_KILL, and that file is in its caller's cgroup): on v1 the sleeper, which is no
    // sandbox's (those die with their pid-namespace init, the worker), survives it and
    // keeps the cgroup; v2 asks the kernel through cgroup.kill.
    match cg.version {
        CgroupVersion::V1 => {
            assert!(!imp::destroy(&cg), "a populated v1 cgroup was removed");
            assert!(
                wait_timeout(&mut cleanup.children[0], Duration::from_millis(200)).is_none(),
                "destroy signalled a pid read from cgroup.procs"
            );
            cleanup.children[0].kill().unwrap();
            wait_timeout(&mut cleanup.children[0], Duration::from_secs(5))
                .expect("the sleeper survived SIGKILL");
            assert!(imp::destroy(&cg), "destroy left directories behind");
        }
        CgroupVersion::V2 => {
            assert!(imp::destroy(&cg), "destroy left directories behind");
            let status = wait_timeout(&mut cleanup.children[0], Duration::from_secs(5))
                .expect("the attached process survived cgroup.kill");
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        }
    }
    for dir in &cg.dirs {
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    cleanup.cgroups.clear();
}

/// IO ceilings reach the kernel: `io.max` on v2, `blkio.throttle.*` on v1, for the whole disk
/// holding the workspace (here the test's own source directory); and a workspace on tmpfs
/// is refused rather than left unthrottled.
#[test]
fn io_ceilings_reach_the_kernel_or_fail_closed() {
    if !is_root() {
        return skip("cgroup tests need root");
    }
    let dir = env!("CARGO_MANIFEST_DIR");
    let Some((major, minor)) = imp::block_device(dir) else {
        return skip(format!("{dir} is not on a block device"));
    };
    let name = format!("suite-io-{}", std::process::id());
    let mut limits = Limits {
        memory_bytes: 64 << 20,
        swap_bytes: 0,
        pids: 16,
        cpu_weight: 100,
        cpu_quota_us: 0,
        cpu_period_us: 100_000,
        tmp_bytes: 1 << 20,
        shm_bytes: 1 << 20,
        nofile: 1024,
        io_weight: 100,
        io_max: Default::default(),
        disk_bytes: 0,
        inodes: 0,
    };
    limits.io_max.wbps = 1 << 20;
    limits.io_max.riops = 100;
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let plan = match imp::plan_for_self(&own, &name, &limits, dir) {
        Ok(plan) => plan,
        Err(e) if e.detail.contains("io") => {
            return skip(format!("no io controller here: {e}"));
        }
        Err(e) => return skip(format!("no usable cgroup hierarchy: {e}")),
    };
    let mut cleanup = Cleanup::default();
    let cg = match imp::create(&plan) {
        Ok(cg) => cg,
        Err(e) if denied(e.errno) => return skip(format!("cgroup not writable: {e}")),
        Err(e) => panic!("create failed: {e}"),
    };
    cleanup.cgroups.push(cg.clone());
    let dev = format!("{major}:{minor}");
    match cg.version {
        CgroupVersion::V2 => {
            let max = read_trim(&limit_file(&cg, "io.max"));
            assert!(
                max.contains(&format!("{dev} rbps=max wbps=1048576 riops=100 wiops=max")),
                "io.max: {max}"
            );
        }
        CgroupVersion::V1 => {
            assert_eq!(
                read_trim(&limit_file(&cg, "blkio.throttle.write_bps_device")),
                format!("{dev} 1048576")
            );
            assert_eq!(
                read_trim(&limit_file(&cg, "blkio.throttle.read_iops_device")),
                format!("{dev} 100")
            );
        }
    }
    assert!(imp::destroy(&cg));
    cleanup.cgroups.clear();
    // Not a block device: no plan at all.
    let e = imp::plan_for_self(&own, &name, &limits, "/dev/shm").unwrap_err();
    assert!(e.detail.contains("not on a block device"), "{e}");
}

/// The v2 half that this hybrid machine's planner never chooses (its unified hierarchy
/// lacks memory, pids and cpu): moving a populated cgroup's processes into
/// `bulkhead-leaf`, reusing the leaf, and teardown through `cgroup.kill`. Runs against the
/// real cgroup2 hierarchy with a hand-made plan of the shape `bulkhead_policy` produces,
/// inside a cgroup this test creates and removes.
#[test]
fn v2_leaf_move_reuse_and_kill() {
    if !is_root() {
        return skip("cgroup tests need root");
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let own = path_for(&cgroups_of(std::process::id()), "");
    let Some(base) = mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-")?;
        if fields.get(sep + 1) != Some(&"cgroup2") {
            return None;
        }
        let rel = Path::new(&own).strip_prefix(fields[3]).ok()?;
        Some(Path::new(fields[4]).join(rel))
    }) else {
        return skip("no cgroup2 mount contains our own cgroup");
    };

    let mut cleanup = Cleanup::default();
    let d = base.join(format!("bulkhead-suite-d-{}", std::process::id()));
    match fs::create_dir(&d) {
        Ok(()) => cleanup.dirs.push(d.clone()),
        Err(e) if denied(e.raw_os_error().unwrap_or(0)) => {
            return skip(format!("cannot create a cgroup in {}: {e}", base.display()))
        }
        Err(e) => panic!("mkdir {}: {e}", d.display()),
    }
    let leaf = d.join(LEAF_NAME);
    cleanup.dirs.push(leaf.clone());

    // D holds a process.
    let resident = Command::new("sleep").arg("30").spawn().unwrap();
    let resident_pid = resident.id();
    cleanup.children.push(resident);
    fs::write(d.join("cgroup.procs"), resident_pid.to_string()).unwrap();

    // The kernel's rule, where D has controllers to give: enabling them now is EBUSY.
    let offered = read_trim(&d.join("cgroup.controllers"));
    let enable: Vec<String> = offered
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if !enable.is_empty() {
        let err = fs::write(d.join("cgroup.subtree_control"), enable.join(" ")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBUSY), "{err}");
    }

    let sandbox = d.join("bulkhead-suite-t");
    let mut steps = vec![
        CgroupFile::Mkdir(leaf.clone()),
        CgroupFile::MoveAllProcs {
            from: d.clone(),
            to: leaf.clone(),
        },
    ];
    if !enable.is_empty() {
        steps.push(CgroupFile::Write {
            path: d.join("cgroup.subtree_control"),
            value: enable.join(" "),
            optional: false,
        });
    }
    steps.push(CgroupFile::Mkdir(sandbox.clone()));
    let plan = CgroupPlan {
        version: CgroupVersion::V2,
        steps,
        dirs: vec![sandbox.clone()],
        oom_file: sandbox.join("memory.events"),
    };

    for round in 0..2 {
        // Round 1: the leaf exists already and D is empty: reused, nothing to move.
        let cg = imp::create(&plan).unwrap_or_else(|e| panic!("round {round}: {e}"));
        cleanup.cgroups.push(cg.clone());
        assert_eq!(read_trim(&d.join("cgroup.procs")), "", "round {round}");
        let resident_cg = path_for(&cgroups_of(resident_pid), "");
        assert!(
            resident_cg.ends_with(&format!(
                "/bulkhead-suite-d-{}/{LEAF_NAME}",
                std::process::id()
            )),
            "{resident_cg}"
        );
        if !enable.is_empty() {
            assert_eq!(read_trim(&d.join("cgroup.subtree_control")), offered);
        }

        let mut worker = Command::new("sleep").arg("30").spawn().unwrap();
        imp::attach(&cg, worker.id() as libc::pid_t).unwrap();
        assert!(path_for(&cgroups_of(worker.id()), "").ends_with("/bulkhead-suite-t"));
        assert_eq!(imp::oom_kills(&cg), 0);

        assert!(imp::destroy(&cg), "round {round}: destroy left {sandbox:?}");
        cleanup.cgroups.clear();
        let status = wait_timeout(&mut worker, Duration::from_secs(5));
        cleanup.children.push(worker);
        let status = status.expect("the attached process survived destroy");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(!sandbox.exists());
        // The leaf and its resident are untouched.
        assert!(leaf.is_dir());
        assert_eq!(
            read_trim(&leaf.join("cgroup.procs")),
            resident_pid.to_string()
        );
    }
}
