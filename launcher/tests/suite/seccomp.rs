//! Runtime tests of the seccomp policy (`bulkhead_seccomp`), tier 3: the filters are
//! irreversible, so they are only ever installed in a fresh child process, between fork and
//! exec (`pre_exec`), never in this harness.
//!
//! Two kinds of children:
//! - real programs (bash, coreutils, python3, cc, node, git) doing ordinary work under the
//!   filters;
//! - this test binary itself, re-executed under the filters with `BULKHEAD_SECCOMP_PROBE=<mode>`
//!   to run only [`probe_child`], which makes raw syscalls and reports what the kernel said.
//!
//! These run on the host, as whoever runs the tests (often root): every denied syscall is
//! called with arguments that make it fail harmlessly even if the filter were missing
//! (nonexistent paths, invalid flags, fd -1, NULL).
//!
//! A missing tool skips its test with a printed reason; with `BULKHEAD_PRIV_TESTS_MUST_RUN=1` a
//! skip is a failure.

use std::ffi::OsStr;
use std::io::{self, Read as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bulkhead_seccomp::{build_filters, DENIED, MUST_DENY, X32_SYSCALL_BIT};

const PROBE_ENV: &str = "BULKHEAD_SECCOMP_PROBE";
const PROBE_TEST: &str = "suite::seccomp::probe_child";
const TIMEOUT: Duration = Duration::from_secs(60);

use bulkhead_testkit::skip;

/// The first executable called `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)`, as the launcher installs each program.
fn install_filter(program: &[libc::sock_filter]) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(program.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` instructions that outlive the call; the kernel copies
    // them before it returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A command whose child installs the whole policy, in `build_filters` order, just before exec.
fn confined(program: impl AsRef<OsStr>) -> Command {
    let filters: Vec<Vec<libc::sock_filter>> = build_filters()
        .expect("the seccomp policy builds")
        .iter()
        .map(|program| {
            program
                .iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect()
        })
        .collect();
    let mut cmd = Command::new(program);
    cmd.stdin(Stdio::null());
    let install = move || -> io::Result<()> {
        set_no_new_privs()?;
        for program in &filters {
            install_filter(program)?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec. It makes only the prctl and
    // seccomp syscalls, on programs built before the fork, and allocates nothing on success
    // (its errors are io::Errors made from errno values, which do not allocate either).
    unsafe { cmd.pre_exec(install) };
    cmd
}

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn describe(&self) -> String {
        format!(
            "status: {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }

    fn assert_success(&self, what: &str) {
        assert!(self.status.success(), "{what} failed\n{}", self.describe());
    }
}

/// Runs `cmd` to completion, killing it (it is our own, still unreaped child) after `TIMEOUT`.
fn finish(mut cmd: Command) -> Finished {
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            panic!("{cmd:?} timed out after {TIMEOUT:?} ({status:?})");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&out_reader.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned(),
    }
}

/// This test binary, re-executed under the filters to run [`probe_child`] in `mode`.
fn probe(mode: &str, dir: &Path) -> Finished {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut cmd = confined(exe);
    cmd.args([
        PROBE_TEST,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(PROBE_ENV, mode)
    .current_dir(dir);
    finish(cmd)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bulkhead-seccomp-")
        .tempdir()
        .expect("a temp dir")
}

/// Runs a bash script under the filters, with `$T` set to a fresh temp dir.
fn bash(script: &str, dir: &Path) -> Finished {
    let mut cmd = confined("/bin/bash");
    cmd.args(["-c", script]).env("T", dir).current_dir(dir);
    finish(cmd)
}

// ---- the re-executed probe ------------------------------------------------------------

/// Entry point of the probe child; does nothing unless `BULKHEAD_SECCOMP_PROBE` is set, which
/// only [`probe`] does, together with the filters.
#[test]
#[ignore = "runs only in the re-executed probe child, under seccomp"]
fn probe_child() {
    let Ok(mode) = std::env::var(PROBE_ENV) else {
        return;
    };
    match mode.as_str() {
        "denied" => probes::denied(),
        "allowed" => probes::allowed(),
        "x32" => probes::x32(),
        "ia32" => probes::ia32(),
        other => panic!("unknown probe mode {other:?}"),
    }
}

// `Ioctl` is `c_ulong` on glibc but `c_int` on musl: the `as u64` casts are needed there.
#[allow(clippy::unnecessary_cast)]
mod probes {
    use super::{build_filters, DENIED, MUST_DENY, X32_SYSCALL_BIT};
    use std::collections::BTreeMap;
    use std::ffi::CStr;

    /// Raw syscall: `Ok(return value)` or `Err(errno)`.
    ///
    /// # Safety
    /// Every argument must be an integer, NULL, or a pointer to memory that stays valid and is
    /// as large as the syscall will read or write through it.
    unsafe fn sys(nr: i64, a: [u64; 6]) -> Result<i64, i32> {
        // SAFETY: forwarded from the caller's contract.
        let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if rc < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        } else {
            Ok(rc)
        }
    }

    fn ptr(s: &'static CStr) -> u64 {
        s.as_ptr() as u64
    }

    fn close(fd: i64) {
        // SAFETY: closing an fd this probe opened itself; nothing else holds it.
        unsafe { libc::close(fd as i32) };
    }

    fn show(result: Result<i64, i32>) -> String {
        match result {
            Ok(v) => format!("ok({v})"),
            Err(e) => format!("errno({e}: {})", std::io::Error::from_raw_os_error(e)),
        }
    }

    /// Collects results; panics at the end with every mismatch.
    #[derive(Default)]
    struct Report {
        lines: usize,
        failures: Vec<String>,
    }

    impl Report {
        fn check(&mut self, name: &str, result: Result<i64, i32>, ok: bool, want: &str) {
            self.lines += 1;
            let verdict = if ok { "pass" } else { "FAIL" };
            println!("PROBE {verdict} {name}: got {}, want {want}", show(result));
            if !ok {
                self.failures
                    .push(format!("{name}: got {}, want {want}", show(result)));
            }
        }

        fn errno(&mut self, name: &str, result: Result<i64, i32>, want: i32) {
            self.check(name, result, result == Err(want), &format!("errno {want}"));
            if let Ok(fd) = result {
                // A denied socket/fd call that unexpectedly worked: do not leak it.
                if name.starts_with("socket") && fd > 2 {
                    close(fd);
                }
            }
        }

        fn not_eperm(&mut self, name: &str, result: Result<i64, i32>) {
            self.check(
                name,
                result,
                result != Err(libc::EPERM),
                "anything but EPERM",
            );
        }

        fn success(&mut self, name: &str, result: Result<i64, i32>) {
            self.check(name, result, result.is_ok(), "success");
        }

        fn finish(self, mode: &str) {
            println!("PROBE-DONE {mode} {}", self.lines);
            assert!(
                self.failures.is_empty(),
                "{} probe(s) failed:\n{}",
                self.failures.len(),
                self.failures.join("\n")
            );
        }
    }

    /// Arguments for each denied syscall that make it fail harmlessly even with no filter:
    /// nonexistent paths, invalid flags or commands, fd -1, NULL, nonexistent pids.
    fn harmless_args() -> BTreeMap<&'static str, [u64; 6]> {
        let nowhere = ptr(c"/nonexistent-bulkhead-seccomp-probe/x");
        let bad_fd = -1i64 as u64;
        let no_pid = i32::MAX as u64;
        let bad_clock = 0x7fff;
        let kexec_bad_flags = 0x8000; // not a KEXEC_* flag: EINVAL before anything is done
        [
            ("mount", [0, nowhere, 0, 0, 0, 0]),
            ("openat2", [bad_fd, nowhere, 0, 0, 0, 0]),
            ("umount2", [nowhere, 0, 0, 0, 0, 0]),
            ("pivot_root", [nowhere, nowhere, 0, 0, 0, 0]),
            ("chroot", [nowhere, 0, 0, 0, 0, 0]),
            ("fsopen", [0, 0, 0, 0, 0, 0]),
            ("fsconfig", [bad_fd, 0, 0, 0, 0, 0]),
            ("fsmount", [bad_fd, 0, 0, 0, 0, 0]),
            ("fspick", [bad_fd, nowhere, 0, 0, 0, 0]),
            ("move_mount", [bad_fd, nowhere, bad_fd, nowhere, 0, 0]),
            ("open_tree", [bad_fd, nowhere, 0, 0, 0, 0]),
            ("open_tree_attr", [bad_fd, nowhere, 0, 0, 0, 0]),
            ("mount_setattr", [bad_fd, nowhere, 0, 0, 0, 0]),
            ("statmount", [0, 0, 0, 0, 0, 0]),
            ("listmount", [0, 0, 0, 0, 0, 0]),
            // CLONE_NEWUSER plus a bit unshare rejects: EINVAL if unfiltered.
            ("unshare", [libc::CLONE_NEWUSER as u64 | 0x1, 0, 0, 0, 0, 0]),
            ("setns", [bad_fd, 0, 0, 0, 0, 0]),
            // NULL args with size 0: EINVAL if unfiltered.
            ("clone3", [0, 0, 0, 0, 0, 0]),
            ("ptrace", [libc::PTRACE_ATTACH as u64, no_pid, 0, 0, 0, 0]),
            ("process_vm_readv", [no_pid, 0, 0, 0, 0, 1]),
            ("process_vm_writev", [no_pid, 0, 0, 0, 0, 1]),
            ("pidfd_getfd", [bad_fd, 0, 0, 0, 0, 0]),
            ("kcmp", [no_pid, no_pid, 0, 0, 0, 0]),
            ("process_madvise", [bad_fd, 0, 0, 0, 0, 0]),
            ("process_mrelease", [bad_fd, 0, 0, 0, 0, 0]),
            ("bpf", [0x7fff, 0, 0, 0, 0, 0]),
            ("perf_event_open", [0, 0, bad_fd, bad_fd, 0, 0]),
            ("userfaultfd", [0xffff_ffff, 0, 0, 0, 0, 0]),
            ("io_uring_setup", [0, 0, 0, 0, 0, 0]),
            ("io_uring_enter", [bad_fd, 0, 0, 0, 0, 0]),
            ("io_uring_register", [bad_fd, 0, 0, 0, 0, 0]),
            ("keyctl", [0x7fff, 0, 0, 0, 0, 0]),
            ("add_key", [0, 0, 0, 0, 0, 0]),
            ("request_key", [0, 0, 0, 0, 0, 0]),
            ("lookup_dcookie", [0, 0, 0, 0, 0, 0]),
            ("fanotify_init", [0xffff_ffff, 0, 0, 0, 0, 0]),
            ("memfd_secret", [0xffff_ffff, 0, 0, 0, 0, 0]),
            ("modify_ldt", [0x7fff, 0, 0, 0, 0, 0]),
            ("uselib", [nowhere, 0, 0, 0, 0, 0]),
            ("nfsservctl", [0, 0, 0, 0, 0, 0]),
            ("_sysctl", [0, 0, 0, 0, 0, 0]),
            ("syslog", [0x7fff, 0, 0, 0, 0, 0]),
            // Zero-length image: ENOEXEC if unfiltered.
            ("init_module", [0, 0, ptr(c""), 0, 0, 0]),
            ("finit_module", [bad_fd, ptr(c""), 0, 0, 0, 0]),
            (
                "delete_module",
                [ptr(c"bulkhead_no_such_module"), 0, 0, 0, 0, 0],
            ),
            ("create_module", [0, 0, 0, 0, 0, 0]),
            ("get_kernel_syms", [0, 0, 0, 0, 0, 0]),
            ("query_module", [0, 0, 0, 0, 0, 0]),
            // Too many segments and an unknown flag: EINVAL, never an unload.
            ("kexec_load", [0, 17, 0, kexec_bad_flags, 0, 0]),
            (
                "kexec_file_load",
                [bad_fd, bad_fd, 0, 0, kexec_bad_flags, 0],
            ),
            // Wrong magic: EINVAL.
            ("reboot", [0, 0, 0, 0, 0, 0]),
            ("swapon", [nowhere, 0, 0, 0, 0, 0]),
            ("swapoff", [nowhere, 0, 0, 0, 0, 0]),
            // NULL time and zone: a no-op if unfiltered.
            ("settimeofday", [0, 0, 0, 0, 0, 0]),
            ("clock_settime", [bad_clock, 0, 0, 0, 0, 0]),
            ("clock_adjtime", [bad_clock, 0, 0, 0, 0, 0]),
            ("adjtimex", [0, 0, 0, 0, 0, 0]),
            // Negative length: EINVAL.
            ("sethostname", [ptr(c"x"), -1i64 as u64, 0, 0, 0, 0]),
            ("setdomainname", [ptr(c"x"), -1i64 as u64, 0, 0, 0, 0]),
            ("acct", [nowhere, 0, 0, 0, 0, 0]),
            // Quota type 0xff does not exist: EINVAL.
            ("quotactl", [0xff, 0, 0, 0, 0, 0]),
            ("quotactl_fd", [bad_fd, 0xff, 0, 0, 0, 0]),
            ("open_by_handle_at", [bad_fd, 0, 0, 0, 0, 0]),
            (
                "name_to_handle_at",
                [libc::AT_FDCWD as u64, nowhere, 0, 0, 0, 0],
            ),
            ("iopl", [4, 0, 0, 0, 0, 0]),
            ("ioperm", [0, 0, 1, 0, 0, 0]),
            ("mbind", [0, 0, 0x7fff, 0, 0, 0]),
            ("set_mempolicy", [0x7fff, 0, 0, 0, 0, 0]),
            ("set_mempolicy_home_node", [0, 0, 0, 1, 0, 0]),
            ("get_mempolicy", [0, 0, 0, 0, 0, 0]),
            ("move_pages", [no_pid, 0, 0, 0, 0, 0]),
            ("migrate_pages", [no_pid, 0, 0, 0, 0, 0]),
        ]
        .into_iter()
        .collect()
    }

    pub(super) fn denied() {
        let mut report = Report::default();
        let args = harmless_args();
        for entry in DENIED {
            let a = args
                .get(entry.name)
                .unwrap_or_else(|| panic!("no harmless probe written for {}", entry.name));
            // SAFETY: the rows of `harmless_args` hold only integers, NULL, and pointers to
            // 'static NUL-terminated strings; none of these calls writes through a pointer.
            let result = unsafe { sys(entry.nr, *a) };
            report.errno(entry.name, result, entry.errno);
        }
        assert_eq!(MUST_DENY.len(), DENIED.len());
        for name in args.keys() {
            assert!(
                DENIED.iter().any(|e| e.name == *name),
                "probe {name} has no DENIED entry"
            );
        }

        // clone with any namespace flag. CLONE_SIGHAND without CLONE_VM makes the kernel
        // refuse (EINVAL) before creating anything, should the filter be missing.
        for (flag_name, flag) in [
            ("CLONE_NEWNS", libc::CLONE_NEWNS),
            ("CLONE_NEWUTS", libc::CLONE_NEWUTS),
            ("CLONE_NEWIPC", libc::CLONE_NEWIPC),
            ("CLONE_NEWUSER", libc::CLONE_NEWUSER),
            ("CLONE_NEWPID", libc::CLONE_NEWPID),
            ("CLONE_NEWNET", libc::CLONE_NEWNET),
            ("CLONE_NEWCGROUP", libc::CLONE_NEWCGROUP),
            ("CLONE_NEWTIME", 0x80),
        ] {
            let flags = (flag | libc::CLONE_SIGHAND | libc::SIGCHLD) as u64;
            // SAFETY: integer arguments only; the flag combination is invalid, so no child.
            let result = unsafe { sys(libc::SYS_clone, [flags, 0, 0, 0, 0, 0]) };
            report.errno(&format!("clone({flag_name})"), result, libc::EPERM);
        }

        // ioctl: TIOCSTI / TIOCLINUX on /dev/null would be ENOTTY; the filter says EPERM,
        // also with garbage in the upper 32 bits of the request.
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&devnull) as u64;
        static BYTE: u8 = b'x';
        let byte = &BYTE as *const u8 as u64;
        for (name, request) in [
            ("ioctl(TIOCSTI)", libc::TIOCSTI as u64),
            ("ioctl(TIOCLINUX)", libc::TIOCLINUX as u64),
            ("ioctl(TIOCSTI | 1 << 32)", libc::TIOCSTI as u64 | 1 << 32),
        ] {
            // SAFETY: `byte` points to a 'static byte, the most either request reads.
            let result = unsafe { sys(libc::SYS_ioctl, [fd, request, byte, 0, 0, 0]) };
            report.errno(name, result, libc::EPERM);
        }
        let mut termios = std::mem::MaybeUninit::<libc::termios>::uninit();
        // SAFETY: TCGETS writes one termios into the buffer, which is that large.
        let result = unsafe {
            sys(
                libc::SYS_ioctl,
                [
                    fd,
                    libc::TCGETS as u64,
                    termios.as_mut_ptr() as u64,
                    0,
                    0,
                    0,
                ],
            )
        };
        report.errno("ioctl(TCGETS) on /dev/null", result, libc::ENOTTY);

        // personality: only query and PER_LINUX.
        // SAFETY: integer argument; changes at most this probe's own persona.
        let result = unsafe { sys(libc::SYS_personality, [0x0040000, 0, 0, 0, 0, 0]) };
        report.errno("personality(ADDR_NO_RANDOMIZE)", result, libc::EPERM);
        // SAFETY: integer argument.
        let result = unsafe { sys(libc::SYS_personality, [0x0008, 0, 0, 0, 0, 0]) };
        report.errno("personality(PER_LINUX32)", result, libc::EPERM);

        // socket: only create, never connect; a socket that appears is closed at once.
        for (name, family, ty, proto) in [
            ("socket(AF_VSOCK)", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
            ("socket(AF_NETLINK)", libc::AF_NETLINK, libc::SOCK_DGRAM, 0),
            ("socket(AF_PACKET)", libc::AF_PACKET, libc::SOCK_DGRAM, 0),
            (
                "socket(AF_INET, SOCK_RAW)",
                libc::AF_INET,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMP,
            ),
            (
                "socket(AF_INET6, SOCK_RAW)",
                libc::AF_INET6,
                libc::SOCK_RAW,
                libc::IPPROTO_ICMPV6,
            ),
            ("socket(AF_INET, SOCK_PACKET)", libc::AF_INET, 10, 0),
            (
                "socket(AF_INET, SOCK_RAW|SOCK_CLOEXEC)",
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            ),
            (
                "socket(AF_BLUETOOTH)",
                libc::AF_BLUETOOTH,
                libc::SOCK_STREAM,
                0,
            ),
            ("socket(AF_ALG)", libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ] {
            // SAFETY: integer arguments only.
            let result = unsafe {
                sys(
                    libc::SYS_socket,
                    [family as u64, ty as u64, proto as u64, 0, 0, 0],
                )
            };
            report.errno(name, result, libc::EPERM);
        }
        let mut pair = [-1i32; 2];
        // SAFETY: socketpair writes two ints into `pair`, which holds two.
        let result = unsafe {
            sys(
                libc::SYS_socketpair,
                [
                    libc::AF_NETLINK as u64,
                    libc::SOCK_DGRAM as u64,
                    0,
                    pair.as_mut_ptr() as u64,
                    0,
                    0,
                ],
            )
        };
        report.errno("socketpair(AF_NETLINK)", result, libc::EPERM);
        for fd in pair.into_iter().filter(|&fd| fd >= 0) {
            close(fd.into());
        }

        // Syscalls outside both tables get EPERM from the allowlist's default: sysfs with an
        // unknown option (EINVAL if unfiltered) and a number no kernel has yet (ENOSYS).
        // SAFETY: integer arguments only.
        let result = unsafe { sys(libc::SYS_sysfs, [0x7fff, 0, 0, 0, 0, 0]) };
        report.errno("sysfs (unlisted)", result, libc::EPERM);
        // SAFETY: integer arguments only; no kernel implements this number.
        let result = unsafe { sys(1000, [0; 6]) };
        report.errno("syscall 1000 (unlisted)", result, libc::EPERM);

        report.finish("denied");
    }

    fn status_field(status: &str, key: &str) -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    pub(super) fn allowed() {
        use std::sync::{Arc, Barrier, Mutex};

        let mut report = Report::default();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let seccomp = status_field(&status, "Seccomp:");
        let filters = status_field(&status, "Seccomp_filters:");
        let nnp = status_field(&status, "NoNewPrivs:");
        report.check(
            "Seccomp: 2",
            Ok(0),
            seccomp == "2",
            &format!("2, got {seccomp}"),
        );
        let want = build_filters()
            .expect("the seccomp policy builds")
            .len()
            .to_string();
        report.check(
            "Seccomp_filters",
            Ok(0),
            filters == want,
            &format!("{want}, got {filters}"),
        );
        report.check("NoNewPrivs: 1", Ok(0), nnp == "1", &format!("1, got {nnp}"));

        // Threads (pthread_create: clone3 gets ENOSYS, glibc falls back to clone with thread
        // flags), futexes through Mutex and Barrier.
        let n = 6;
        let barrier = Arc::new(Barrier::new(n));
        let total = Arc::new(Mutex::new(0u64));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let barrier = Arc::clone(&barrier);
                let total = Arc::clone(&total);
                std::thread::spawn(move || {
                    barrier.wait();
                    *total.lock().unwrap() += i as u64;
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let sum = *total.lock().unwrap();
        report.check("threads", Ok(sum as i64), sum == 15, "15");

        // A child process (posix_spawn: clone3 -> ENOSYS -> clone(CLONE_VM|CLONE_VFORK)).
        let spawned = std::process::Command::new("/bin/true").status();
        let ok = spawned.as_ref().map(|s| s.success()).unwrap_or(false);
        report.check(
            "spawn /bin/true",
            Ok(0),
            ok,
            &format!("success, got {spawned:?}"),
        );

        // SAFETY: integer arguments only (pid, flags 0).
        let pidfd = unsafe {
            sys(
                libc::SYS_pidfd_open,
                [std::process::id() as u64, 0, 0, 0, 0, 0],
            )
        };
        report.success("pidfd_open", pidfd);
        if let Ok(fd) = pidfd {
            // SAFETY: signal 0 only checks permission; NULL info, flags 0.
            let result = unsafe { sys(libc::SYS_pidfd_send_signal, [fd as u64, 0, 0, 0, 0, 0]) };
            report.success("pidfd_send_signal(0)", result);
            close(fd);
        }

        let mut buf = [0u8; 16];
        // SAFETY: getrandom writes at most 16 bytes into the 16-byte buffer.
        let result = unsafe {
            sys(
                libc::SYS_getrandom,
                [buf.as_mut_ptr() as u64, 16, 0, 0, 0, 0],
            )
        };
        report.check("getrandom", result, result == Ok(16), "16");

        let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
        // SAFETY: statx writes one struct statx into `stx`; the path is a 'static C string.
        let result = unsafe {
            sys(
                libc::SYS_statx,
                [
                    libc::AT_FDCWD as u64,
                    ptr(c"/"),
                    0,
                    libc::STATX_BASIC_STATS as u64,
                    stx.as_mut_ptr() as u64,
                    0,
                ],
            )
        };
        report.success("statx", result);

        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: 0,
        };
        // SAFETY: openat2 reads one OpenHow of the size passed; the path is 'static.
        let fd = unsafe {
            sys(
                libc::SYS_openat2,
                [
                    libc::AT_FDCWD as u64,
                    ptr(c"/dev/null"),
                    &how as *const OpenHow as u64,
                    std::mem::size_of::<OpenHow>() as u64,
                    0,
                    0,
                ],
            )
        };
        // openat2 is refused with ENOSYS (its mode is out of seccomp's reach): callers fall
        // back to openat.
        report.errno("openat2", fd, libc::ENOSYS);
        let fd = std::fs::File::open("/dev/null")
            .map(std::os::fd::IntoRawFd::into_raw_fd)
            .map(i64::from)
            .map_err(|e| e.raw_os_error().unwrap_or(0));
        if let Ok(fd) = fd {
            // SAFETY: integer arguments; closes only the fd just opened.
            let result = unsafe { sys(libc::SYS_close_range, [fd as u64, fd as u64, 0, 0, 0, 0]) };
            report.success("close_range", result);
        }

        // SAFETY: 'static name, integer flags.
        let a = unsafe {
            sys(
                libc::SYS_memfd_create,
                [ptr(c"probe-a"), libc::MFD_CLOEXEC as u64, 0, 0, 0, 0],
            )
        };
        // SAFETY: as above.
        let b = unsafe {
            sys(
                libc::SYS_memfd_create,
                [ptr(c"probe-b"), libc::MFD_CLOEXEC as u64, 0, 0, 0, 0],
            )
        };
        report.success("memfd_create", a);
        if let (Ok(a), Ok(b)) = (a, b) {
            let data = b"copy me";
            // SAFETY: writes 7 bytes from a 7-byte buffer.
            let written = unsafe {
                sys(
                    libc::SYS_pwrite64,
                    [a as u64, data.as_ptr() as u64, 7, 0, 0, 0],
                )
            };
            report.success("pwrite64", written);
            let mut off_in: i64 = 0;
            // SAFETY: the offset pointer points to a live i64; NULL out-offset; flags 0.
            let copied = unsafe {
                sys(
                    libc::SYS_copy_file_range,
                    [a as u64, &mut off_in as *mut i64 as u64, b as u64, 0, 7, 0],
                )
            };
            report.not_eperm("copy_file_range", copied);
            close(a);
            close(b);
        }

        // SAFETY: MEMBARRIER_CMD_QUERY (0) with flags 0 only returns a bit mask.
        let result = unsafe { sys(libc::SYS_membarrier, [0, 0, 0, 0, 0, 0]) };
        report.success("membarrier(QUERY)", result);

        // SAFETY: integer flags.
        let ep = unsafe {
            sys(
                libc::SYS_epoll_create1,
                [libc::EPOLL_CLOEXEC as u64, 0, 0, 0, 0, 0],
            )
        };
        // SAFETY: integer arguments.
        let ev = unsafe {
            sys(
                libc::SYS_eventfd2,
                [1, libc::EFD_CLOEXEC as u64, 0, 0, 0, 0],
            )
        };
        report.success("epoll_create1", ep);
        report.success("eventfd2", ev);
        if let (Ok(ep), Ok(ev)) = (ep, ev) {
            let mut event = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: 7,
            };
            // SAFETY: epoll_ctl reads one epoll_event from `event`.
            let result = unsafe {
                sys(
                    libc::SYS_epoll_ctl,
                    [
                        ep as u64,
                        libc::EPOLL_CTL_ADD as u64,
                        ev as u64,
                        &mut event as *mut _ as u64,
                        0,
                        0,
                    ],
                )
            };
            report.success("epoll_ctl", result);
            let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
            // SAFETY: epoll_pwait writes at most 4 events into the 4-element array; NULL mask.
            let result = unsafe {
                sys(
                    libc::SYS_epoll_pwait,
                    [ep as u64, events.as_mut_ptr() as u64, 4, 0, 0, 8],
                )
            };
            report.check("epoll_pwait", result, result == Ok(1), "1 ready event");
            let mut fds = [libc::pollfd {
                fd: ev as i32,
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: poll reads and writes the one pollfd in `fds`.
            let result = unsafe { sys(libc::SYS_poll, [fds.as_mut_ptr() as u64, 1, 0, 0, 0, 0]) };
            report.check("poll", result, result == Ok(1), "1 ready fd");
            let mut fionread: i32 = -1;
            // SAFETY: FIONREAD writes one int.
            let result = unsafe {
                sys(
                    libc::SYS_ioctl,
                    [
                        ev as u64,
                        libc::FIONREAD as u64,
                        &mut fionread as *mut i32 as u64,
                        0,
                        0,
                        0,
                    ],
                )
            };
            report.not_eperm("ioctl(FIONREAD)", result);
            close(ep);
            close(ev);
        }

        let mut word: u32 = 0;
        // SAFETY: FUTEX_WAKE on a live u32 wakes nobody.
        let result = unsafe {
            sys(
                libc::SYS_futex,
                [
                    &mut word as *mut u32 as u64,
                    libc::FUTEX_WAKE as u64,
                    1,
                    0,
                    0,
                    0,
                ],
            )
        };
        report.check("futex(WAKE)", result, result == Ok(0), "0");
        // SAFETY: NULL area with a bad length: rejected (EINVAL), nothing registered.
        let result = unsafe { sys(libc::SYS_rseq, [0, 1, 0, 0, 0, 0]) };
        report.not_eperm("rseq", result);
        // SAFETY: NULL head with a bad length: rejected (EINVAL), nothing changed.
        let result = unsafe { sys(libc::SYS_set_robust_list, [0, 1, 0, 0, 0, 0]) };
        report.not_eperm("set_robust_list", result);

        // SAFETY: query (0xffffffff) changes nothing.
        let result = unsafe { sys(libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0]) };
        report.success("personality(query)", result);
        // SAFETY: PER_LINUX is already this process's persona.
        let result = unsafe { sys(libc::SYS_personality, [0, 0, 0, 0, 0, 0]) };
        report.success("personality(PER_LINUX)", result);

        // SAFETY: PR_GET_* return values and touch no memory.
        let result = unsafe {
            sys(
                libc::SYS_prctl,
                [libc::PR_GET_NO_NEW_PRIVS as u64, 0, 0, 0, 0, 0],
            )
        };
        report.check("prctl(PR_GET_NO_NEW_PRIVS)", result, result == Ok(1), "1");
        // SAFETY: as above.
        let result = unsafe {
            sys(
                libc::SYS_prctl,
                [libc::PR_GET_SECCOMP as u64, 0, 0, 0, 0, 0],
            )
        };
        report.check("prctl(PR_GET_SECCOMP)", result, result == Ok(2), "2");

        let action = libc::SECCOMP_RET_KILL_PROCESS;
        // SAFETY: SECCOMP_GET_ACTION_AVAIL reads one u32.
        let result = unsafe {
            sys(
                libc::SYS_seccomp,
                [
                    libc::SECCOMP_GET_ACTION_AVAIL as u64,
                    0,
                    &action as *const u32 as u64,
                    0,
                    0,
                    0,
                ],
            )
        };
        report.success("seccomp(GET_ACTION_AVAIL)", result);
        // SAFETY: LANDLOCK_CREATE_RULESET_VERSION (1) with NULL attr and size 0 returns the ABI.
        let result = unsafe { sys(libc::SYS_landlock_create_ruleset, [0, 0, 1, 0, 0, 0]) };
        report.not_eperm("landlock_create_ruleset(VERSION)", result);

        // Sockets the policy allows.
        for (name, family, ty) in [
            (
                "socket(AF_UNIX, SOCK_STREAM)",
                libc::AF_UNIX,
                libc::SOCK_STREAM,
            ),
            (
                "socket(AF_UNIX, SOCK_SEQPACKET)",
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET,
            ),
            (
                "socket(AF_INET, SOCK_STREAM|SOCK_CLOEXEC|SOCK_NONBLOCK)",
                libc::AF_INET,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            ),
            (
                "socket(AF_INET, SOCK_DGRAM)",
                libc::AF_INET,
                libc::SOCK_DGRAM,
            ),
            (
                "socket(AF_INET6, SOCK_STREAM)",
                libc::AF_INET6,
                libc::SOCK_STREAM,
            ),
        ] {
            // SAFETY: integer arguments only.
            let result = unsafe { sys(libc::SYS_socket, [family as u64, ty as u64, 0, 0, 0, 0]) };
            // AF_INET6 may be EAFNOSUPPORT where IPv6 is off; what matters is "not EPERM".
            report.not_eperm(name, result);
            if let Ok(fd) = result {
                close(fd);
            }
        }
        let mut pair = [-1i32; 2];
        // SAFETY: socketpair writes two ints into `pair`, which holds two.
        let result = unsafe {
            sys(
                libc::SYS_socketpair,
                [
                    libc::AF_UNIX as u64,
                    (libc::SOCK_STREAM | libc::SOCK_CLOEXEC) as u64,
                    0,
                    pair.as_mut_ptr() as u64,
                    0,
                    0,
                ],
            )
        };
        report.success("socketpair(AF_UNIX)", result);
        for fd in pair.into_iter().filter(|&fd| fd >= 0) {
            close(fd.into());
        }

        // TCP over loopback, client in another thread.
        let tcp = (|| -> std::io::Result<()> {
            use std::io::{Read, Write};
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let client = std::thread::spawn(move || -> std::io::Result<()> {
                let mut s = std::net::TcpStream::connect(addr)?;
                s.write_all(b"ping")?;
                Ok(())
            });
            let (mut conn, _) = listener.accept()?;
            let mut got = [0u8; 4];
            conn.read_exact(&mut got)?;
            client.join().unwrap()?;
            assert_eq!(&got, b"ping");
            Ok(())
        })();
        report.check(
            "tcp loopback",
            Ok(0),
            tcp.is_ok(),
            &format!("success, got {tcp:?}"),
        );

        report.finish("allowed");
    }

    /// Stops a KILL_PROCESS from writing a core file (core_pattern may be a plain "core").
    fn no_core_dump() {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: setrlimit reads one rlimit from a live local.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        // SAFETY: integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    }

    pub(super) fn x32() {
        no_core_dump();
        println!("PROBE-START x32");
        // SAFETY: the x32 getpid takes no arguments; the filter kills the process first.
        let result = unsafe { sys(libc::SYS_getpid | X32_SYSCALL_BIT as i64, [0; 6]) };
        println!("PROBE FAIL x32 getpid returned {}", show(result));
    }

    pub(super) fn ia32() {
        no_core_dump();
        println!("PROBE-START ia32");
        let ret: i32;
        // SAFETY: `int 0x80` with eax = 20 is the i386 getpid: no arguments, no memory. The
        // kernel's compat entry clobbers r8-r11, declared here.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        println!("PROBE FAIL ia32 getpid returned {ret}");
    }
}

// ---- tests run by the harness ----------------------------------------------------------

fn assert_probe_done(run: &Finished, mode: &str) {
    run.assert_success(&format!("probe {mode}"));
    let done = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("PROBE-DONE {mode} ")))
        .unwrap_or_else(|| panic!("probe {mode} did not run\n{}", run.describe()));
    let count: usize = done.trim().parse().unwrap();
    assert!(
        count > 0,
        "probe {mode} checked nothing\n{}",
        run.describe()
    );
    eprintln!("probe {mode}: {count} checks passed");
}

#[test]
fn denied_syscalls_get_eperm_and_clone3_gets_enosys() {
    let dir = tempdir();
    let run = probe("denied", dir.path());
    assert_probe_done(&run, "denied");
    // Every MUST_DENY entry was probed and reported.
    for (name, _) in MUST_DENY {
        assert!(
            run.stdout.contains(&format!("PROBE pass {name}: ")),
            "{name} was not probed\n{}",
            run.describe()
        );
    }
}

#[test]
fn allowed_syscalls_work_in_a_multithreaded_rust_program() {
    let dir = tempdir();
    let run = probe("allowed", dir.path());
    assert_probe_done(&run, "allowed");
}

fn assert_killed_by_sigsys(mode: &str) {
    let dir = tempdir();
    let run = probe(mode, dir.path());
    if mode == "ia32" && run.status.signal() == Some(libc::SIGSEGV) {
        return skip("int 0x80 faults here: the kernel has no ia32 emulation");
    }
    assert!(
        run.stdout.contains(&format!("PROBE-START {mode}")),
        "the {mode} probe did not start\n{}",
        run.describe()
    );
    assert_eq!(
        run.status.signal(),
        Some(libc::SIGSYS),
        "the {mode} syscall must kill the process with SIGSYS\n{}",
        run.describe()
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "a core file was left"
    );
}

#[test]
fn x32_syscall_kills_the_process() {
    assert_killed_by_sigsys("x32");
}

#[test]
fn ia32_syscall_kills_the_process() {
    assert_killed_by_sigsys("ia32");
}

#[test]
fn bash_pipes_subshells_substitutions_and_jobs() {
    let dir = tempdir();
    let run = bash(
        r#"set -euo pipefail
x=$(echo hello | tr a-z A-Z | sed 's/L/l/g')
[ "$x" = "HEllO" ]
y=$( (cd / && pwd) )
[ "$y" = / ]
sleep 0.1 & a=$!
(echo sub > "$T/sub.txt") & b=$!
wait "$a" "$b"
[ "$(cat "$T/sub.txt")" = sub ]
[ "$(seq 1 100 | sort -rn | head -n 1)" = 100 ]
read -r first < <(echo process-substitution)
[ "$first" = process-substitution ]
grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status
echo bash ok
"#,
        dir.path(),
    );
    run.assert_success("bash");
    assert!(run.stdout.contains("bash ok"), "{}", run.describe());
    assert!(run.stdout.contains("Seccomp:\t2"), "{}", run.describe());
    let want = build_filters().expect("the seccomp policy builds").len();
    assert!(
        run.stdout.contains(&format!("Seccomp_filters:\t{want}\n")),
        "{}",
        run.describe()
    );
}

#[test]
fn coreutils_work() {
    let dir = tempdir();
    let run = bash(
        r#"set -euo pipefail
cd "$T"
mkdir -p src/sub
printf 'b\na\nc\n' > src/sub/list.txt
ls -la src/sub > /dev/null
ls -R src > /dev/null
cat src/sub/list.txt | sort > sorted.txt
[ "$(head -n 1 sorted.txt)" = a ]
sha256sum sorted.txt > sums.txt
sha256sum -c sums.txt
f=$(mktemp -p "$T")
d=$(mktemp -d -p "$T")
[ -f "$f" ] && [ -d "$d" ]
cp -r src "$d/copy"
cmp src/sub/list.txt "$d/copy/sub/list.txt"
cp --reflink=auto sorted.txt copy.txt
tar -cf out.tar src
mkdir unpacked
tar -xf out.tar -C unpacked
cmp src/sub/list.txt unpacked/src/sub/list.txt
touch -d '2001-01-01' src/sub/list.txt
mv copy.txt moved.txt
rm -r unpacked
echo coreutils ok
"#,
        dir.path(),
    );
    run.assert_success("coreutils");
    assert!(run.stdout.contains("coreutils ok"), "{}", run.describe());
}

const PYTHON_SCRIPT: &str = r#"
import hashlib, json, socket, subprocess, sys, threading

results = []
lock = threading.Lock()
def work(i):
    digest = hashlib.sha256(str(i).encode()).hexdigest()
    with lock:
        results.append(digest)
threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert len(results) == 8

out = subprocess.run([sys.executable, "-c", "print('child ok')"],
                     capture_output=True, text=True, check=True, timeout=30).stdout
assert out.strip() == "child ok", out

server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 0))
server.listen(1)
server.settimeout(20)
port = server.getsockname()[1]
def client():
    with socket.create_connection(("127.0.0.1", port), timeout=20) as c:
        c.sendall(b"ping")
        assert c.recv(4) == b"pong"
t = threading.Thread(target=client)
t.start()
conn, _ = server.accept()
assert conn.recv(4) == b"ping"
conn.sendall(b"pong")
t.join()
conn.close()
server.close()

doc = json.loads(json.dumps({"h": hashlib.sha256(b"abc").hexdigest(), "n": [1, 2, 3]}))
assert doc["h"].startswith("ba7816bf"), doc
print("python ok")
"#;

#[test]
fn python3_threads_subprocess_sockets_json_hashlib() {
    let Some(python) = which("python3") else {
        return skip("python3 is not on PATH");
    };
    let dir = tempdir();
    let mut cmd = confined(python);
    cmd.args(["-c", PYTHON_SCRIPT]).current_dir(dir.path());
    let run = finish(cmd);
    run.assert_success("python3");
    assert!(run.stdout.contains("python ok"), "{}", run.describe());
}

#[test]
fn cc_compiles_and_runs_hello_world() {
    let Some(cc) = which("cc") else {
        return skip("cc is not on PATH");
    };
    let dir = tempdir();
    let src = dir.path().join("hello.c");
    std::fs::write(
        &src,
        "#include <pthread.h>\n#include <stdio.h>\n\
         static void *run(void *arg) { return arg; }\n\
         int main(void) {\n  pthread_t t;\n  if (pthread_create(&t, 0, run, 0)) return 1;\n  \
         pthread_join(t, 0);\n  puts(\"hello from cc\");\n  return 0;\n}\n",
    )
    .unwrap();
    let exe = dir.path().join("hello");
    let mut cmd = confined(cc);
    cmd.arg("-O1")
        .arg("-pthread")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .env("TMPDIR", dir.path())
        .current_dir(dir.path());
    finish(cmd).assert_success("cc");
    let run = finish(confined(&exe));
    run.assert_success("the compiled program");
    assert_eq!(run.stdout.trim(), "hello from cc", "{}", run.describe());
}

const NODE_SCRIPT: &str = r#"
const crypto = require('crypto');
const fs = require('fs');
const net = require('net');
const path = require('path');
const { execFileSync } = require('child_process');
const h = crypto.createHash('sha256').update('abc').digest('hex');
const file = path.join(process.env.T, 'n.txt');
fs.writeFileSync(file, h);
if (fs.readFileSync(file, 'utf8') !== h) throw new Error('read back');
execFileSync('true');
const server = net.createServer((sock) => { sock.end('pong'); });
server.listen(0, '127.0.0.1', () => {
  const c = net.connect(server.address().port, '127.0.0.1');
  let got = '';
  c.on('data', (d) => { got += d; });
  c.on('end', () => {
    server.close();
    if (got !== 'pong') throw new Error('got ' + got);
    fs.promises.readFile(file, 'utf8').then((s) => {
      console.log(JSON.stringify({ ok: s === h }));
    });
  });
});
"#;

#[test]
fn node_runs_scripts_with_fs_net_and_child_processes() {
    let Some(node) = which("node") else {
        return skip("node is not on PATH");
    };
    let dir = tempdir();
    let mut cmd = confined(node);
    cmd.args(["-e", NODE_SCRIPT])
        .env("T", dir.path())
        .current_dir(dir.path());
    let run = finish(cmd);
    run.assert_success("node");
    assert!(run.stdout.contains(r#"{"ok":true}"#), "{}", run.describe());
}

#[test]
fn git_init_add_commit_log() {
    if which("git").is_none() {
        return skip("git is not on PATH");
    }
    let dir = tempdir();
    let mut cmd = confined("/bin/bash");
    cmd.args([
        "-c",
        r#"set -euo pipefail
cd "$T"
git init -q repo
cd repo
echo hi > a.txt
git add a.txt
git -c user.name=probe -c user.email=probe@example.invalid commit -q -m init
git log --oneline | grep -q init
git status --porcelain
git gc -q
echo git ok
"#,
    ])
    .env("T", dir.path())
    .env("HOME", dir.path())
    .env("GIT_CONFIG_NOSYSTEM", "1")
    .env("GIT_CONFIG_GLOBAL", "/dev/null")
    .current_dir(dir.path());
    let run = finish(cmd);
    run.assert_success("git");
    assert!(run.stdout.contains("git ok"), "{}", run.describe());
}
