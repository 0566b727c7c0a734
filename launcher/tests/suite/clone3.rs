//! clone3(CLONE_INTO_CGROUP): a child born in a cgroup v2 directory, with no migration.
//! Runs on the real cgroup2 mount (on a hybrid host the controller-less `unified` one).

use bulkhead_launch::sys;

use std::path::PathBuf;

fn v2_own_dir() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(path.trim_start_matches('/')))
}

#[test]
fn child_is_born_in_the_cgroup() {
    let Some(parent) = v2_own_dir() else {
        return bulkhead_testkit::skip("no cgroup2 mount");
    };
    let dir = parent.join(format!("bulkhead-clone3-test-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&dir) {
        return bulkhead_testkit::skip(format_args!("cannot create {}: {e}", dir.display()));
    }
    let fd = sys::open_dir_path(dir.to_str().unwrap()).expect("open cgroup dir");
    let child = match sys::clone3(0, Some(fd)).expect("clone3") {
        None => {
            // Child of a multi-threaded test process: only async-signal-safe calls.
            // SAFETY: pause and _exit are async-signal-safe and touch no Rust state.
            unsafe {
                libc::pause();
                libc::_exit(0)
            }
        }
        Some(child) => child,
    };
    sys::close(fd);
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    // The pidfd names the child: /proc/<pid> is proven to be it while it is unreaped.
    let proc_dir = sys::proc_dir_of(child).expect("the live child's /proc directory");
    sys::close(proc_dir);
    sys::pidfd_send_signal(child.pidfd, libc::SIGKILL).expect("SIGKILL through the pidfd");
    let end = sys::wait_pidfd(child.pidfd, false).expect("waitid(P_PIDFD)");
    assert!(matches!(end, sys::Wait::Signaled(libc::SIGKILL)), "{end:?}");
    // Reaped: the pidfd now refuses every signal, and /proc/<pid> is never trusted again,
    // even if the pid number has already gone to another process.
    assert_eq!(
        sys::pidfd_send_signal(child.pidfd, 0)
            .unwrap_err()
            .raw_os_error(),
        Some(libc::ESRCH)
    );
    assert!(sys::proc_dir_of(child).is_err());
    sys::close(child.pidfd);
    let _ = std::fs::remove_dir(&dir);
    assert!(
        procs.lines().any(|l| l.trim() == child.pid.to_string()),
        "child {} not in {}: {procs:?}",
        child.pid,
        dir.display()
    );
}
