//! Kernel interfaces: denied syscalls, raw devices and mknod, /proc/sys and sysrq, cgroupfs,
//! TIOCSTI/TIOCLINUX, hostname and clock, and the x32 and int 0x80 syscall ABIs.

use super::*;

// ---- the denied syscalls -------------------------------------------------------------------

/// Harmless arguments per syscall: by default all zeros; these get an invalid fd (-1) or an
/// invalid request where zero would mean something (ptrace 0 is PTRACE_TRACEME, fd 0 is
/// stdin). Values are python expressions.
const SYSCALL_ARGS: &[(&str, &str)] = &[
    ("ptrace", "[-1, 0, 0, 0]"),
    ("setns", "[-1, 0]"),
    ("pidfd_getfd", "[-1, -1, 0]"),
    ("process_madvise", "[-1, 0, 0, 0, 0]"),
    ("process_mrelease", "[-1, 0]"),
    ("io_uring_enter", "[-1, 0, 0, 0, 0, 0]"),
    ("io_uring_register", "[-1, 0, 0, 0]"),
    ("finit_module", "[-1, 0, 0]"),
    ("kexec_file_load", "[-1, -1, 0, 0, 0]"),
    ("quotactl_fd", "[-1, 0, 0, 0]"),
    ("fsconfig", "[-1, 0, 0, 0, 0]"),
    ("fsmount", "[-1, 0, 0]"),
    ("fspick", "[-1, 0, 0]"),
    ("move_mount", "[-1, 0, -1, 0, 0]"),
    ("open_tree", "[-1, 0, 0]"),
    ("open_tree_attr", "[-1, 0, 0, 0, 0]"),
    ("mount_setattr", "[-1, 0, 0, 0, 0]"),
    ("keyctl", "[-1, 0, 0, 0, 0]"),
    ("bpf", "[-1, 0, 0]"),
    ("perf_event_open", "[0, 0, -1, -1, 0]"),
    ("name_to_handle_at", "[-1, 0, 0, 0, 0]"),
    ("open_by_handle_at", "[-1, 0, 0]"),
    ("kcmp", "[-1, -1, 0, 0, 0]"),
];

/// Attack: call every syscall the policy denies on purpose, with harmless arguments.
/// Expected: each fails with EPERM, except clone3 with ENOSYS (so libc falls back to clone).
#[test]
fn denied_syscalls_fail() {
    let Some(sb) = Isolated::new("escape_a::denied_syscalls_fail") else {
        return;
    };
    let table = bulkhead_seccomp::MUST_DENY;
    assert!(!table.is_empty(), "MUST_DENY is empty on this architecture");
    let list = table
        .iter()
        .map(|(n, nr)| format!("(\"{n}\", {nr})"))
        .collect::<Vec<_>>()
        .join(", ");
    let args = SYSCALL_ARGS
        .iter()
        .map(|(n, a)| format!("\"{n}\": {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let body = format!(
        r#"
ARGS = {{{args}}}
for name, nr in [{list}]:
    r, e = sc(nr, *ARGS.get(name, [0, 0, 0, 0, 0, 0]))
    print("SYSCALL", name, nr, r, ename(e) if r == -1 else "OK", flush=True)
"#
    );
    let code = format!("{PY_PRELUDE}\n{body}");
    let out = sb.python(&code);
    let shown = show(&out);
    eprintln!("probe output: {shown}");
    assert!(out.status.success(), "the syscall probe died (killed by seccomp?); the last line is the culprit's predecessor:\n{shown}");
    let stdout = text(&out.stdout);
    let results: Vec<(String, String)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("SYSCALL "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f.first().unwrap_or(&"?").to_string(),
                f.last().unwrap_or(&"?").to_string(),
            )
        })
        .collect();
    let table_text = results
        .iter()
        .map(|(n, e)| format!("  {n:<26} {e}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut wrong = Vec::new();
    for (name, _) in table {
        let want = match bulkhead_seccomp::DENIED
            .iter()
            .find(|e| e.name == *name)
            .map(|e| e.errno)
        {
            Some(libc::ENOSYS) => "ENOSYS",
            _ => "EPERM",
        };
        let got = results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, e)| e.as_str())
            .unwrap_or("<not run>");
        if got != want {
            wrong.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "denied syscalls that did not fail as expected: {wrong:#?}\nname -> errno:\n{table_text}"
    );
}

// ---- raw devices ---------------------------------------------------------------------------

#[test]
fn raw_devices_absent_and_mknod_refused() {
    let Some(sb) = Isolated::new("raw_devices_absent_and_mknod_refused") else {
        return;
    };
    let out = sb.sh("ls -A /dev");
    assert!(out.status.success(), "{}", show_status(&out));
    let got: BTreeSet<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let allowed: BTreeSet<String> = [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd", "stdin",
        "stdout", "stderr",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let extra: Vec<_> = got.difference(&allowed).collect();
    assert!(
        extra.is_empty(),
        "unexpected entries in the sandbox's /dev: {extra:?} (all: {got:?})"
    );

    let out = sb.sh(
        "for d in /dev/sda /dev/vda /dev/mem /dev/kmem /dev/port /dev/kmsg /dev/nvme0n1 /dev/loop0 /dev/net/tun /dev/fuse; do \
           [ -e $d ] && echo PRESENT $d; done; \
         mknod /tmp/x c 1 3; echo mknod_c=$?; mknod /tmp/b b 254 0; echo mknod_b=$?; \
         mknod /workspace/x c 1 3; echo mknod_ws=$?; \
         ls -l /tmp/x /tmp/b /workspace/x 2>/dev/null; echo done",
    );
    let so = text(&out.stdout);
    assert!(
        !so.contains("PRESENT"),
        "host devices reachable inside:\n{}",
        show_status(&out)
    );
    for k in ["mknod_c", "mknod_b", "mknod_ws"] {
        assert!(
            !so.contains(&format!("{k}=0")),
            "{k} succeeded:\n{}",
            show_status(&out)
        );
        assert!(
            so.contains(&format!("{k}=")),
            "{k} did not run:\n{}",
            show_status(&out)
        );
    }
    assert!(
        so.trim_end().ends_with("done") && !so.contains("crw") && !so.contains("brw"),
        "a device node exists:\n{}",
        show_status(&out)
    );
    assert!(
        !sb.env.files(&sb.id).join("x").exists(),
        "a device node landed in the workspace on the host"
    );

    let out = sb.python(
        r#"
import os, stat, json, errno
res = {}
for name, mode, dev, path in [("chr_mem", stat.S_IFCHR, os.makedev(1, 1), "/tmp/mem"),
                              ("chr_null", stat.S_IFCHR, os.makedev(1, 3), "/tmp/null2"),
                              ("blk_vda", stat.S_IFBLK, os.makedev(254, 0), "/tmp/vda"),
                              ("chr_ws", stat.S_IFCHR, os.makedev(1, 1), "/workspace/mem")]:
    try:
        os.mknod(path, mode | 0o666, dev)
        res[name] = "created"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        let v = v.as_str().unwrap_or_default();
        assert!(
            v == "EPERM" || v == "EACCES",
            "os.mknod {k}: {v} (expected EPERM/EACCES)\n{}",
            show_status(&out)
        );
    }
    assert!(
        !sb.env.files(&sb.id).join("mem").exists(),
        "a device node landed in the workspace on the host"
    );
}

// ---- /proc/sys and sysrq -------------------------------------------------------------------

#[test]
fn proc_sys_and_sysrq_not_writable() {
    let Some(sb) = Isolated::new("proc_sys_and_sysrq_not_writable") else {
        return;
    };
    let host_name = host_hostname();
    let host_domain = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
    let host_core = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    // Only harmless writes: a hostname, drop_caches, the help key of sysrq, and
    // core_pattern rewritten with the value it already has.
    let out = sb.sh("echo escaped > /proc/sys/kernel/hostname; echo hostname=$?; \
         echo escaped > /proc/sys/kernel/domainname; echo domainname=$?; \
         echo 3 > /proc/sys/vm/drop_caches; echo drop_caches=$?; \
         echo h > /proc/sysrq-trigger; echo sysrq=$?; \
         cat /proc/sys/kernel/core_pattern > /tmp/cp && cat /tmp/cp > /proc/sys/kernel/core_pattern; echo core_pattern=$?; \
         cat /proc/sys/kernel/hostname");
    let so = text(&out.stdout);
    for k in [
        "hostname",
        "domainname",
        "drop_caches",
        "sysrq",
        "core_pattern",
    ] {
        assert!(
            so.contains(&format!("{k}=")),
            "{k} write did not run:\n{}",
            show_status(&out)
        );
        assert!(
            !so.contains(&format!("{k}=0")),
            "write to /proc ({k}) succeeded inside the sandbox:\n{}",
            show_status(&out)
        );
    }
    assert!(
        !so.contains("escaped"),
        "the sandbox's hostname changed:\n{}",
        show_status(&out)
    );

    let out = sb.python(
        r#"
import json, errno
res = {}
for p, v in [("/proc/sys/kernel/hostname", "escaped"), ("/proc/sys/vm/drop_caches", "3"),
             ("/proc/sysrq-trigger", "h"), ("/proc/sys/kernel/panic", "0")]:
    try:
        with open(p, "w") as f:
            f.write(v)
        res[p] = "written"
    except OSError as e:
        res[p] = errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        assert_ne!(
            v.as_str(),
            Some("written"),
            "python wrote {k}:\n{}",
            show_status(&out)
        );
    }
    assert_eq!(host_hostname(), host_name, "the host's hostname changed");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default(),
        host_domain,
        "the host's domainname changed"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default(),
        host_core,
        "the host's core_pattern changed"
    );
}

// ---- cgroupfs ------------------------------------------------------------------------------

#[test]
fn cgroupfs_unreachable_and_cgroup_path_hidden() {
    let Some(sb) = Isolated::new("cgroupfs_unreachable_and_cgroup_path_hidden") else {
        return;
    };
    let out = sb.sh("[ -e /sys ] && echo SYS_PRESENT; \
         mkdir -p /tmp/cg /tmp/cg1; \
         mount -t cgroup2 none /tmp/cg; echo cg2=$?; \
         mount -t cgroup -o memory none /tmp/cg1; echo cg1=$?; \
         mount -t sysfs none /tmp/cg; echo sysfs=$?; \
         grep -c cgroup /proc/self/mountinfo; \
         echo ---; cat /proc/self/cgroup; echo ---; cat /proc/1/cgroup");
    let so = text(&out.stdout);
    assert!(
        !so.contains("SYS_PRESENT"),
        "/sys exists inside:\n{}",
        show_status(&out)
    );
    for k in ["cg2", "cg1", "sysfs"] {
        assert!(
            so.contains(&format!("{k}=")) && !so.contains(&format!("{k}=0\n")),
            "mount {k} succeeded:\n{}",
            show_status(&out)
        );
    }
    let mut parts = so.split("---\n");
    let head = parts.next().unwrap_or_default();
    assert_eq!(
        head.lines().last(),
        Some("0"),
        "cgroup mounts visible in mountinfo:\n{}",
        show_status(&out)
    );
    let own = parts.next().unwrap_or_default();
    let init = parts.next().unwrap_or_default();
    assert!(
        own.lines().any(|l| l == "0::/"),
        "/proc/self/cgroup lacks 0::/ (cgroup namespace root):\n{own}"
    );
    for l in own.lines().chain(init.lines()) {
        let path = l.splitn(3, ':').nth(2).unwrap_or("?");
        assert_eq!(
            path,
            "/",
            "a cgroup path leaks inside: {l:?}\n{}",
            show_status(&out)
        );
    }
    for p in host_cgroup_paths() {
        assert!(
            !so.contains(&p),
            "the host cgroup path {p} is visible inside:\n{}",
            show_status(&out)
        );
    }
    assert!(
        !so.contains("bulkhead-"),
        "the sandbox cgroup name is visible inside:\n{}",
        show_status(&out)
    );

    let out = sb.python(
        r#"
import ctypes, json, os, errno
libc = ctypes.CDLL(None, use_errno=True)
res = {}
for fs, opts in [(b"cgroup2", None), (b"cgroup", b"memory"), (b"sysfs", None), (b"proc", None)]:
    os.makedirs("/tmp/m", exist_ok=True)
    r = libc.mount(b"none", b"/tmp/m", fs, 0, opts)
    res[fs.decode()] = "mounted" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for (k, v) in r.as_object().expect("object") {
        assert_eq!(
            v.as_str(),
            Some("EPERM"),
            "mount({k}) from python: {v}\n{}",
            show_status(&out)
        );
    }
}

// ---- TIOCSTI / TIOCLINUX -------------------------------------------------------------------

#[test]
fn tiocsti_and_tioclinux_denied_by_seccomp() {
    let Some(sb) = Isolated::new("tiocsti_and_tioclinux_denied_by_seccomp") else {
        return;
    };
    let out = sb.python(
        r#"
import os, fcntl, termios, json, errno
TIOCLINUX = 0x541C
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
def probe(fd):
    out = {}
    for req, n in [(termios.TIOCSTI, "TIOCSTI"), (TIOCLINUX, "TIOCLINUX")]:
        try:
            fcntl.ioctl(fd, req, b"x")
            out[n] = "ok"
        except OSError as e:
            out[n] = name(e)
    return out
res = {}
fd = os.open("/dev/null", os.O_RDWR)
res["null"] = probe(fd)
os.close(fd)
m, s = os.openpty()
res["pty_slave"] = probe(s)
res["pty_master"] = probe(m)
# With the pty as controlling terminal, /dev/tty works: try it there too.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    out = {}
    try:
        os.setsid()
        fcntl.ioctl(s, termios.TIOCSCTTY, 0)
        t = os.open("/dev/tty", os.O_RDWR)
        out = probe(t)
    except OSError as e:
        out = {"setup": name(e)}
    os.write(w, json.dumps(out).encode())
    os._exit(0)
os.close(w)
os.waitpid(pid, 0)
res["ctty"] = json.loads(os.read(r, 4096) or b"{}")
try:
    t = os.open("/dev/tty", os.O_RDWR)
    res["dev_tty"] = probe(t)
except OSError as e:
    res["dev_tty"] = {"open": name(e)}
# Nothing was injected into the pty's input queue.
os.set_blocking(s, False)
try:
    res["injected"] = os.read(s, 64).decode()
except OSError:
    res["injected"] = ""
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show_status(&out));
    let r = json_out(&out);
    // EPERM, not ENOTTY: the filter refuses the request before any driver sees it.
    for fd in ["null", "pty_slave", "pty_master"] {
        for req in ["TIOCSTI", "TIOCLINUX"] {
            assert_eq!(
                r[fd][req].as_str(),
                Some("EPERM"),
                "{req} on {fd}: {}\n{}",
                r[fd][req],
                show_status(&out)
            );
        }
    }
    // The controlling-terminal path: EPERM if the pty could become the ctty.
    if r["ctty"].get("setup").is_none() {
        for req in ["TIOCSTI", "TIOCLINUX"] {
            assert_eq!(
                r["ctty"][req].as_str(),
                Some("EPERM"),
                "{req} on /dev/tty (pty ctty): {}\n{}",
                r["ctty"][req],
                show_status(&out)
            );
        }
    } else {
        eprintln!(
            "note: could not make the pty a controlling terminal: {}",
            r["ctty"]
        );
    }
    // The sandbox has no /dev/tty (and no controlling terminal): ENOENT.
    match r["dev_tty"].get("open") {
        Some(e) => assert_eq!(e.as_str(), Some("ENOENT"), "opening /dev/tty: {e}"),
        None => {
            for req in ["TIOCSTI", "TIOCLINUX"] {
                assert_eq!(
                    r["dev_tty"][req].as_str(),
                    Some("EPERM"),
                    "{req} on /dev/tty: {}",
                    r["dev_tty"][req]
                );
            }
        }
    }
    assert_eq!(
        r["injected"].as_str(),
        Some(""),
        "bytes were injected into the pty"
    );
}

// ---- hostname and clock --------------------------------------------------------------------

#[test]
fn hostname_and_clock_cannot_change() {
    let Some(sb) = Isolated::new("hostname_and_clock_cannot_change") else {
        return;
    };
    let host_name = host_hostname();
    // Every clock write sets the time it already is: harmless even if it went through.
    let out = sb.sh("hostname evil; echo sethost=$?; hostname; date -s \"@$(date +%s)\" >/dev/null; echo date=$?");
    let so = text(&out.stdout);
    assert!(
        so.contains("sethost=") && !so.contains("sethost=0"),
        "hostname evil succeeded:\n{}",
        show_status(&out)
    );
    assert!(
        so.contains("date=") && !so.contains("date=0"),
        "date -s succeeded:\n{}",
        show_status(&out)
    );
    assert!(
        so.lines().any(|l| l == sb.id),
        "hostname does not print the workspace id:\n{}",
        show_status(&out)
    );
    assert!(
        !so.contains("evil"),
        "hostname changed inside:\n{}",
        show_status(&out)
    );

    let out = sb.python(
        r#"
import ctypes, json, time, errno, socket
libc = ctypes.CDLL(None, use_errno=True)
class TV(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("u", ctypes.c_long)]
class TS(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("n", ctypes.c_long)]
def err(r): return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
res = {}
now = time.time()
res["settimeofday"] = err(libc.settimeofday(ctypes.byref(TV(int(now), 0)), None))
now = time.time()
res["clock_settime"] = err(libc.clock_settime(0, ctypes.byref(TS(int(now), 0))))
res["sethostname"] = err(libc.sethostname(b"evil", 4))
res["setdomainname"] = err(libc.setdomainname(b"evil", 4))
res["hostname_after"] = socket.gethostname()
print(json.dumps(res))
"#,
    );
    let r = json_out(&out);
    for k in [
        "settimeofday",
        "clock_settime",
        "sethostname",
        "setdomainname",
    ] {
        assert_eq!(
            r[k].as_str(),
            Some("EPERM"),
            "{k}: {}\n{}",
            r[k],
            show_status(&out)
        );
    }
    assert_eq!(r["hostname_after"].as_str(), Some(sb.id.as_str()));
    assert_eq!(host_hostname(), host_name, "the host's hostname changed");
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        host_now > 1_600_000_000,
        "the host clock looks reset: {host_now}"
    );
}

// ---- x32 and i386 syscalls -----------------------------------------------------------------

#[test]
fn x32_and_int80_syscalls_kill_the_process() {
    let Some(sb) = Isolated::new("x32_and_int80_syscalls_kill_the_process") else {
        return;
    };
    // getpid with the x32 bit set.
    let out = sb.python(
        r#"
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("before", flush=True)
r = libc.syscall(0x40000000 | 39)
print("RETURNED", r, ctypes.get_errno(), flush=True)
"#,
    );
    let so = text(&out.stdout);
    assert!(
        so.contains("before"),
        "the probe did not run:\n{}",
        show_status(&out)
    );
    assert!(
        !so.contains("RETURNED"),
        "an x32 syscall returned instead of killing the process:\n{}",
        show_status(&out)
    );
    assert_eq!(
        code(&out),
        128 + 31,
        "x32 syscall: expected a SIGSYS kill (159):\n{}",
        show_status(&out)
    );

    // `mov eax, 20 (getpid, i386 numbering); int 0x80; ret`, written to an RW page that is
    // then made RX (works whether or not RWX mappings are allowed).
    let out = sb.python(
        r#"
import ctypes
code = b"\xb8\x14\x00\x00\x00\xcd\x80\xc3"
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
p = libc.mmap(None, 4096, 3, 0x22, -1, 0)
if p in (None, ctypes.c_void_p(-1).value):
    print("MMAP_FAILED", ctypes.get_errno(), flush=True); raise SystemExit(3)
ctypes.memmove(p, code, len(code))
if libc.mprotect(p, 4096, 5) != 0:
    print("MPROTECT_FAILED", ctypes.get_errno(), flush=True); raise SystemExit(3)
print("calling", flush=True)
r = ctypes.CFUNCTYPE(ctypes.c_long)(p)()
print("RETURNED", r, flush=True)
"#,
    );
    let so = text(&out.stdout);
    assert!(
        so.contains("calling"),
        "the int 0x80 probe could not prepare its code page:\n{}",
        show_status(&out)
    );
    assert!(
        !so.contains("RETURNED"),
        "an int 0x80 syscall returned instead of killing the process:\n{}",
        show_status(&out)
    );
    assert_eq!(
        code(&out),
        128 + 31,
        "int 0x80: expected a SIGSYS kill (159):\n{}",
        show_status(&out)
    );
}
