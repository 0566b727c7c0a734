//! Resources and lifetime: memory and fork bombs, /tmp and /dev/shm fills, a double-forked
//! daemon, the run timeout, and deleting a workspace under a running sandbox.

use super::*;

// ---- memory bomb ---------------------------------------------------------------------------

#[test]
fn memory_bomb_is_oom_killed_and_cleaned_up() {
    let Some(sb) = Isolated::new("memory_bomb_is_oom_killed_and_cleaned_up") else {
        return;
    };
    let _g = bomb_lock();
    // Sleeps first so the run file is seen; then touches 1 GiB in 16 MiB chunks.
    let t = run_tracked(
        &sb,
        &["--memory", "64M", "--timeout", "30"],
        &[
            "python3",
            "-c",
            "import time\ntime.sleep(0.3)\nl=[]\nfor i in range(64): l.append(b'x'*(16<<20))\nprint('SURVIVED', flush=True)",
        ],
        |_| {},
    );
    let out = &t.out;
    eprintln!("memory bomb: {:?}", t.elapsed);
    assert!(
        !text(&out.stdout).contains("SURVIVED"),
        "1 GiB fit in a 64M sandbox:\n{}",
        show_status(out)
    );
    assert_eq!(code(out), 137, "memory bomb:\n{}", show_status(out));
    assert!(
        text(&out.stderr).contains("memory limit"),
        "no memory-limit message:\n{}",
        show_status(out)
    );
    assert_sandbox_gone(&sb, t.launcher);
    // The host is fine: it still allocates and forks.
    let v = vec![1u8; 64 << 20];
    assert_eq!(v.iter().map(|b| *b as usize).sum::<usize>(), 64 << 20);
    assert!(Command::new("true").status().expect("spawn true").success());
}

// ---- fork bomb -----------------------------------------------------------------------------

#[test]
fn fork_bomb_is_contained() {
    let Some(sb) = Isolated::new("fork_bomb_is_contained") else {
        return;
    };
    let _g = bomb_lock();
    let mut seen = (String::new(), String::new(), false);
    // The bomb keeps the main shell alive (sleep) so it really runs until the timeout.
    let t = run_tracked(
        &sb,
        &["--pids", "32", "--timeout", "5"],
        &["bash", "-c", ":(){ :|:& };:; sleep 30"],
        |lpid| {
            std::thread::sleep(Duration::from_millis(1500));
            let name = sandbox_cgroup(&sb, lpid);
            if let Some(d) = cgroup_dirs(&name)
                .into_iter()
                .find(|d| d.join("pids.max").exists() || d.join("pids.current").exists())
            {
                seen.0 = std::fs::read_to_string(d.join("pids.max"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                seen.1 = std::fs::read_to_string(d.join("pids.current"))
                    .unwrap_or_default()
                    .trim()
                    .to_string();
            }
            // The host can still fork while the bomb runs.
            seen.2 = Command::new("true").status().is_ok_and(|s| s.success());
        },
    );
    let out = &t.out;
    eprintln!(
        "fork bomb: {:?}, pids.max {} pids.current {} mid-bomb",
        t.elapsed, seen.0, seen.1
    );
    assert!(seen.2, "the host could not fork during the bomb");
    assert_eq!(seen.0, "32", "pids.max of the sandbox cgroup mid-bomb");
    let cur: u32 = seen.1.parse().unwrap_or(u32::MAX);
    assert!(cur <= 32, "pids.current {cur} above the limit");
    assert_eq!(
        code(out),
        124,
        "fork bomb was not stopped by the timeout:\n{}",
        show_status(out)
    );
    assert!(
        t.elapsed < Duration::from_secs(15),
        "fork bomb took {:?}",
        t.elapsed
    );
    assert_sandbox_gone(&sb, t.launcher);
    assert!(Command::new("true").status().expect("spawn true").success());
}

// ---- /tmp and /dev/shm fill ----------------------------------------------------------------

#[test]
fn tmp_and_shm_fill_hit_their_caps() {
    let Some(sb) = Isolated::new("tmp_and_shm_fill_hit_their_caps") else {
        return;
    };
    let _g = bomb_lock();
    let out = sb.exec(
        &["--tmp-size", "16M", "--timeout", "60"],
        &[
            "/bin/sh",
            "-c",
            "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; echo tmp_rc=$?; echo tmp_size=$(stat -c %s /tmp/fill); rm -f /tmp/fill; \
             dd if=/dev/zero of=/dev/shm/fill bs=1M count=100 2>&1; echo shm_rc=$?; echo shm_size=$(stat -c %s /dev/shm/fill)",
        ],
    );
    let so = text(&out.stdout);
    let val = |k: &str| -> u64 {
        so.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {k} in:\n{}", show_status(&out)))
    };
    assert!(
        so.matches("No space left on device").count() >= 2,
        "both fills should end with ENOSPC:\n{}",
        show_status(&out)
    );
    assert_ne!(val("tmp_rc"), 0, "dd into /tmp succeeded");
    assert_ne!(val("shm_rc"), 0, "dd into /dev/shm succeeded");
    assert!(
        val("tmp_size") <= 16 << 20,
        "/tmp took {} bytes with --tmp-size 16M",
        val("tmp_size")
    );
    assert!(
        val("shm_size") <= 64 << 20,
        "/dev/shm took {} bytes (cap 64 MiB)",
        val("shm_size")
    );
}

// ---- a double-forked daemon ----------------------------------------------------------------

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

#[test]
fn double_forked_daemon_does_not_outlive_the_run() {
    let Some(sb) = Isolated::new("double_forked_daemon_does_not_outlive_the_run") else {
        return;
    };
    let mark = marker("daemon");
    let script = format!("(setsid sh -c 'while :; do date >> /workspace/daemon.log; sleep 0.1; done' {mark} &) ; sleep 0.5; echo started");
    let start = Instant::now();
    let out = sb.exec(&["--timeout", "20"], &["/bin/sh", "-c", &script]);
    let took = start.elapsed();
    eprintln!("daemon exec: {took:?}");
    assert!(
        out.status.success() && text(&out.stdout).contains("started"),
        "{}",
        show_status(&out)
    );
    assert!(
        took < Duration::from_secs(8),
        "exec waited for the daemon: {took:?}"
    );
    let log = sb.env.files(&sb.id).join("daemon.log");
    let a = file_len(&log);
    assert!(a > 0, "the daemon never ran (no log)");
    std::thread::sleep(Duration::from_millis(500));
    let b = file_len(&log);
    assert_eq!(a, b, "the daemon's log still grows after the exec returned");
    let left = host_procs(|argv| argv.iter().any(|a| a.contains(&mark)));
    assert!(left.is_empty(), "the daemon survived on the host: {left:?}");
}

// ---- the timeout kills every process -------------------------------------------------------

#[test]
fn timeout_kills_every_process() {
    let Some(sb) = Isolated::new("timeout_kills_every_process") else {
        return;
    };
    // Fractional durations nobody else uses, so the scan cannot mistake other sleeps.
    let secs = ["1001.4217", "1002.4217", "1003.4217"];
    let script = format!(
        "sleep {} & (setsid sleep {} &) ; sleep {}",
        secs[0], secs[1], secs[2]
    );
    let start = Instant::now();
    let out = sb.exec(&["--timeout", "1"], &["/bin/sh", "-c", &script]);
    let took = start.elapsed();
    eprintln!("timeout exec: {took:?}");
    assert_eq!(code(&out), 124, "{}", show_status(&out));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        show_status(&out)
    );
    assert!(took < Duration::from_secs(5), "timeout 1 s took {took:?}");
    let left = host_procs(|argv| {
        argv.len() == 2 && argv[0].ends_with("sleep") && secs.contains(&argv[1].as_str())
    });
    assert!(left.is_empty(), "sleeps survived the timeout: {left:?}");
}

// ---- deleting a workspace under a running sandbox ------------------------------------------

#[test]
fn delete_stops_running_sandbox() {
    let Some(sb) = Isolated::new("delete_stops_running_sandbox") else {
        return;
    };
    let secs = "100.4217";
    let before = run_files(&sb);
    let child = exec_cmd(&sb, &[], &["sleep", secs])
        .spawn()
        .expect("spawn exec");
    let mut guard = KillOnDrop(Some(child));
    let lpid = {
        let c = guard.0.as_mut().expect("child");
        let finished = std::cell::Cell::new(false);
        let l = wait_launcher(&sb, &before, || {
            let f = c.try_wait().ok().flatten().is_some();
            finished.set(f);
            f
        });
        l.unwrap_or_else(|| {
            panic!(
                "the sandbox never came up (exec finished: {})",
                finished.get()
            )
        })
    };
    // Wait for the sleep to really run inside.
    let deadline = Instant::now() + Duration::from_secs(10);
    while host_procs(|a| a.len() == 2 && a[1] == secs).is_empty() {
        assert!(
            Instant::now() < deadline,
            "sleep never started in the sandbox"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    let del = sb.env.bulkhead(&["workspace", "delete", &sb.id]);
    eprintln!("delete: {:?}", start.elapsed());
    // Clean up the sandbox ourselves if delete left it running (then fail below).
    let mut exec_status = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = guard.0.as_mut().expect("child");
    while Instant::now() < deadline {
        if let Some(s) = c.try_wait().expect("try_wait") {
            exec_status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let launcher_left = launcher_alive(lpid);
    if exec_status.is_none() && launcher_left {
        // Only the launcher this test started (checked by name above), by its pid.
        let _ = Command::new("kill")
            .args(["-TERM", &lpid.to_string()])
            .status();
    }
    let c = guard.0.take().expect("child");
    let exec_out = c.wait_with_output().expect("wait exec");
    assert!(
        del.status.success(),
        "workspace delete failed:\n{}",
        show_status(&del)
    );
    assert!(
        exec_status.is_some(),
        "the background exec did not return after the delete (launcher alive: {launcher_left})"
    );
    eprintln!("background exec after delete: {}", show_status(&exec_out));
    assert!(
        !sb.env.state().join("workspaces").join(&sb.id).exists(),
        "the workspace directory is still there"
    );
    assert_sandbox_gone(&sb, lpid);
    let left = host_procs(|a| a.len() == 2 && a[1] == secs);
    assert!(
        left.is_empty(),
        "the sandbox's sleep survived the delete: {left:?}"
    );
}
