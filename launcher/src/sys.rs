//! Every syscall the launcher makes that std does not wrap: one `unsafe` block per syscall,
//! each in a function returning `io::Result`, each with its `SAFETY:` line.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::RawFd;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// `prctl` with integer arguments.
pub fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: prctl with integer arguments only; no pointers are passed.
    check(unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) })
}

/// `setrlimit`.
pub fn setrlimit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `lim` is a valid rlimit that outlives the call.
    check(unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// `getrlimit(resource)`: `(soft, hard)`.
pub fn getrlimit(resource: libc::__rlimit_resource_t) -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit that outlives the call.
    check(unsafe { libc::getrlimit(resource, &mut lim) })?;
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// `setsid()`: a new session and process group, no controlling terminal.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments and touches no memory of ours.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `close_range(first, u32::MAX, 0)`.
pub fn close_from(first: u32) -> io::Result<()> {
    // SAFETY: closes descriptors only; the caller owns every fd at or above `first`.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) }).map(drop)
}

/// `close_range(first, last, 0)`.
pub fn close_range(first: u32, last: u32) -> io::Result<()> {
    // SAFETY: closes descriptors only; the caller owns every fd from `first` to `last`.
    check_long(unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) }).map(drop)
}

/// `getsockopt(fd, SOL_SOCKET, opt)` for an integer option.
fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val` and `len` are valid out-pointers; the kernel writes at most `len` bytes.
    check(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// Whether `fd` is an open `AF_UNIX` `SOCK_SEQPACKET` socket.
pub fn is_unix_seqpacket(fd: RawFd) -> bool {
    is_socket(fd)
        && sockopt_int(fd, libc::SO_DOMAIN).ok() == Some(libc::AF_UNIX)
        && sockopt_int(fd, libc::SO_TYPE).ok() == Some(libc::SOCK_SEQPACKET)
}

/// `dup3(old, new, flags)`.
pub fn dup3(old: RawFd, new: RawFd, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain descriptor duplication.
    check(unsafe { libc::dup3(old, new, flags) }).map(drop)
}

/// `fcntl(F_SETFD, cloexec)`.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD on a descriptor with an integer argument.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, flag) }).map(drop)
}

/// Whether `fd` is an open socket.
pub fn is_socket(fd: RawFd) -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a valid out-pointer for one stat struct.
    let r = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    // SAFETY: fstat succeeded (r == 0), so `st` is initialized.
    r == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// `pipe2(O_CLOEXEC)` → (read, write).
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// `close(fd)`, errors ignored.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it again.
    unsafe { libc::close(fd) };
}

/// `write` of a whole small buffer.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// `read` into `buf`.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `struct clone_args` of clone3(2), version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_PIDFD`.
const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_INTO_CGROUP`.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A child of ours and the pidfd that names it. The pid number is only for reports and
/// `/proc` paths checked against the pidfd ([`proc_dir_of`]); every signal and wait goes
/// through `pidfd`, which cannot come to name another process.
#[derive(Debug, Clone, Copy)]
pub struct Child {
    /// The child's pid (in our pid namespace).
    pub pid: libc::pid_t,
    /// `CLONE_PIDFD` descriptor of the child (close-on-exec).
    pub pidfd: RawFd,
}

/// fork-like `clone3(flags | CLONE_PIDFD [| CLONE_INTO_CGROUP])`: `None` in the child,
/// the child and its pidfd in the parent. With `cgroup_fd` the child is born in that cgroup
/// v2 directory, so it never migrates (no global lock, and the kernel memory of its new
/// namespaces is charged to that cgroup). Exit signal SIGCHLD, so it is an ordinary child.
pub fn clone3(flags: libc::c_int, cgroup_fd: Option<RawFd>) -> io::Result<Option<Child>> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags as u32 as u64
            | CLONE_PIDFD
            | if cgroup_fd.is_some() {
                CLONE_INTO_CGROUP
            } else {
                0
            },
        pidfd: &mut pidfd as *mut libc::c_int as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup_fd.map_or(0, |fd| fd as u64),
        ..Default::default()
    };
    // SAFETY: clone3 with no CLONE_VM and a zero stack behaves like fork(2): the child gets a
    // copy of the address space and returns 0 on the same stack. `args` is a valid
    // clone_args of the size passed and `pidfd` outlives the call. The caller is
    // single-threaded.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match check_long(r)? {
        0 => Ok(None),
        pid => Ok(Some(Child {
            pid: pid as libc::pid_t,
            pidfd,
        })),
    }
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`; `sig` 0 only checks that the process exists
/// (has not been reaped).
pub fn pidfd_send_signal(pidfd: RawFd, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: integer arguments and a NULL siginfo pointer, which the kernel accepts.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    })
    .map(drop)
}

/// `pidfd_open(getpid(), 0)`: a pidfd of this process (the child's lifeline: readable once
/// we have exited).
pub fn pidfd_of_self() -> io::Result<RawFd> {
    // SAFETY: getpid cannot fail; pidfd_open takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0 as libc::c_uint) };
    check_long(r).map(|fd| fd as RawFd)
}

/// `/proc/<pid>` of our unreaped child, opened as a directory and proven to be that child:
/// after the open, a signal 0 through its pidfd succeeds, so the child was not reaped yet,
/// and the pid of an unreaped child cannot have been given to another process. Everything
/// written through the returned fd reaches the child and no other process.
pub fn proc_dir_of(child: Child) -> io::Result<RawFd> {
    let p = cstr(&format!("/proc/{}", child.pid))?;
    // SAFETY: `p` is NUL-terminated.
    let dir = check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    if let Err(e) = pidfd_send_signal(child.pidfd, 0) {
        close(dir);
        return Err(e);
    }
    Ok(dir)
}

/// `P_PIDFD` of waitid(2).
const P_PIDFD: libc::idtype_t = 3;

/// `waitid(P_PIDFD, pidfd, WEXITED [| WNOHANG])`: how the child ended, or `Running`.
pub fn wait_pidfd(pidfd: RawFd, nohang: bool) -> io::Result<Wait> {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is valid and lets WNOHANG's "nothing"
        // be seen as si_pid == 0.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
        // SAFETY: `info` is a valid out-pointer for one siginfo_t.
        let r = unsafe { libc::waitid(P_PIDFD, pidfd as libc::id_t, &mut info, flags) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` with a SIGCHLD siginfo (or left it zeroed).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(Wait::Running);
        }
        return Ok(match info.si_code {
            libc::CLD_EXITED => Wait::Exited(status),
            _ => Wait::Signaled(status),
        });
    }
}

/// Ends our child for good: SIGKILL through its pidfd, then reap it. Errors are ignored
/// (already dead).
pub fn kill_and_reap(child: Child) {
    let _ = pidfd_send_signal(child.pidfd, libc::SIGKILL);
    let _ = wait_pidfd(child.pidfd, false);
    close(child.pidfd);
}

/// `open(path, O_PATH|O_DIRECTORY|O_CLOEXEC)`.
pub fn open_dir_path(path: &str) -> io::Result<RawFd> {
    let p = cstr(path)?;
    // SAFETY: `p` is NUL-terminated.
    check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// `unshare(flags)`.
pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: integer flags only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// `setgroups(0, NULL)`: drop supplementary groups.
pub fn clear_groups() -> io::Result<()> {
    // SAFETY: a zero-length list with a NULL pointer is valid.
    check(unsafe { libc::setgroups(0, std::ptr::null()) }).map(drop)
}

/// `setresgid(g, g, g)`.
pub fn setresgid(g: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(g, g, g) }).map(drop)
}

/// `setresuid(u, u, u)`.
pub fn setresuid(u: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(u, u, u) }).map(drop)
}

/// `mount(2)`; `None` arguments are passed as NULL.
pub fn mount(
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstr).transpose()?;
    let target = cstr(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    let p = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is NULL or a NUL-terminated string alive for the call.
    check(unsafe {
        libc::mount(
            p(&source),
            target.as_ptr(),
            p(&fstype),
            flags,
            p(&data).cast(),
        )
    })
    .map(drop)
}

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_RDONLY`.
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
/// `MOUNT_ATTR_NOEXEC`.
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// `mount_setattr(AT_FDCWD, path, AT_RECURSIVE?, {set})`.
pub fn mount_setattr(path: &str, set: u64, recursive: bool) -> io::Result<()> {
    let p = cstr(path)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags: libc::c_uint = if recursive {
        libc::AT_RECURSIVE as libc::c_uint
    } else {
        0
    };
    // SAFETY: `p` is NUL-terminated and `attr` is a valid mount_attr of the size passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            p.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `umount2(target, flags)`.
pub fn umount2(target: &str, flags: libc::c_int) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: `t` is NUL-terminated.
    check(unsafe { libc::umount2(t.as_ptr(), flags) }).map(drop)
}

/// `pivot_root(new, old)`.
pub fn pivot_root(new: &str, old: &str) -> io::Result<()> {
    let n = cstr(new)?;
    let o = cstr(old)?;
    // SAFETY: both strings are NUL-terminated.
    check_long(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) }).map(drop)
}

/// `openat2(AT_FDCWD, path, flags, RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS)`: opens
/// without following a symlink in any component.
fn openat2_nofollow(path: &str, flags: libc::c_int) -> io::Result<RawFd> {
    let p = cstr(path)?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `p` is NUL-terminated and `how` is a valid open_how of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            p.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    check_long(r).map(|fd| fd as RawFd)
}

/// `O_PATH` of a file, without following a symlink in any component.
pub fn open_path_nofollow(path: &str) -> io::Result<RawFd> {
    openat2_nofollow(path, libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

/// `O_PATH|O_DIRECTORY` of a directory, without following a symlink in any component.
pub fn open_dir_nofollow(path: &str) -> io::Result<RawFd> {
    openat2_nofollow(path, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// `O_RDONLY|O_DIRECTORY` of a directory (to lock or list it), without following a symlink
/// in any component.
pub fn open_dir_rdonly_nofollow(path: &str) -> io::Result<RawFd> {
    openat2_nofollow(path, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
}

/// `open(path, O_PATH|O_CLOEXEC)` of a file (the worker binary).
pub fn open_path(path: &str) -> io::Result<RawFd> {
    let p = cstr(path)?;
    // SAFETY: `p` is NUL-terminated.
    check(unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) })
}

/// Owner uid of an open fd.
pub fn fd_owner(fd: RawFd) -> io::Result<(u32, u32, u32)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a valid out-pointer for one stat struct.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, `st` is initialized.
    let st = unsafe { st.assume_init() };
    Ok((st.st_uid, st.st_gid, st.st_mode))
}

/// `sethostname`.
pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: `name` is valid for `name.len()` bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// Brings the loopback interface up (`SIOCSIFFLAGS` with `IFF_UP`).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket creation.
    let s =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; SIOCGIFFLAGS fills ifru_flags.
    let r = unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) };
    let r = check(r).and_then(|_| {
        // SAFETY: reading the union member SIOCGIFFLAGS just wrote.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: `req` is a valid ifreq with the new flags.
        check(unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) })
    });
    close(s);
    r.map(drop)
}

/// `capset` with every set empty.
pub fn capset_zero() -> io::Result<()> {
    capset_only(&[])
}

/// `capset`: effective and permitted exactly `caps`, inheritable empty.
pub fn capset_only(caps: &[u32]) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const V3: u32 = 0x2008_0522;
    let mut hdr = Header {
        version: V3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    for &cap in caps {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        if let Some(d) = data.get_mut(word) {
            d.effective |= bit;
            d.permitted |= bit;
        }
    }
    // SAFETY: header and two data structs as capset(2) version 3 expects.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut Header, data.as_ptr()) })
        .map(drop)
}

/// Landlock ABI of the running kernel (`landlock_create_ruleset(NULL, 0, VERSION)`).
pub fn landlock_abi() -> io::Result<u32> {
    // SAFETY: the documented version query: NULL attr, size 0, flag 1.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32,
        )
    };
    check_long(r).map(|v| v as u32)
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`. Returns only on error.
pub fn execveat_fd(fd: RawFd, argv: &[&CStr], envp: &[&CStr]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: argv/envp are NULL-terminated arrays of NUL-terminated strings that outlive
    // the call; the empty path with AT_EMPTY_PATH executes `fd` itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            a.as_ptr(),
            e.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Blocks `sigs` for this (single-threaded) process.
pub fn block_signals(sigs: &[libc::c_int]) -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in sigs {
        // SAFETY: `set` is a valid sigset_t and `s` a signal number.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    // SAFETY: `set` is valid; the old mask is not needed.
    check(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
    Ok(set)
}

/// Unblocks every signal (before exec, so the worker starts clean).
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: `set` is valid.
    check(unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) }).map(drop)
}

/// How a child ended.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// Still running.
    Running,
    /// Exited with a code.
    Exited(i32),
    /// Killed by a signal.
    Signaled(i32),
}

/// `_exit(code)`: leave without running destructors or atexit handlers (child paths).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Current uid, gid and effective uid.
pub fn ids() -> (u32, u32, u32) {
    // SAFETY: these calls cannot fail and take no arguments.
    unsafe { (libc::getuid(), libc::getgid(), libc::geteuid()) }
}

/// The saved set-user-id (`getresuid`), `None` if it cannot be read.
pub fn saved_uid() -> Option<u32> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three valid out-pointers to uid_t.
    let ok = unsafe { libc::getresuid(&mut r, &mut e, &mut s) } == 0;
    ok.then_some(s)
}

/// Returns free heap memory to the kernel (`malloc_trim(0)`).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator; no pointers involved.
    unsafe { libc::malloc_trim(0) };
}

/// `umask(mask)`.
pub fn umask(mask: u32) {
    // SAFETY: integer argument only.
    unsafe { libc::umask(mask) };
}

/// `setfsuid(u)`; returns the previous fsuid.
pub fn setfsuid(u: u32) -> u32 {
    // SAFETY: integer argument only.
    unsafe { libc::setfsuid(u) as u32 }
}

/// `setfsgid(g)`; returns the previous fsgid.
pub fn setfsgid(g: u32) -> u32 {
    // SAFETY: integer argument only.
    unsafe { libc::setfsgid(g) as u32 }
}

/// The process's supplementary groups.
pub fn groups() -> io::Result<Vec<u32>> {
    // SAFETY: a zero size with a NULL list only asks for the count.
    let n = check(unsafe { libc::getgroups(0, std::ptr::null_mut()) })?;
    let mut v = vec![0 as libc::gid_t; n as usize];
    // SAFETY: `v` has room for `n` entries.
    let m = check(unsafe { libc::getgroups(n, v.as_mut_ptr()) })?;
    v.truncate(m as usize);
    Ok(v)
}

/// Empties the environment (a setuid program takes nothing from its caller's).
pub fn clear_env() {
    // SAFETY: called first thing in main, while the process is single-threaded and no
    // reference into the environment is held.
    unsafe { libc::clearenv() };
}

/// `fstat` of an fd: (owner uid, mode, size).
pub fn fd_stat(fd: RawFd) -> io::Result<(u32, u32, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `st` is a valid out-pointer for one stat struct.
    check(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded, `st` is initialized.
    let st = unsafe { st.assume_init() };
    Ok((st.st_uid, st.st_mode, st.st_size as u64))
}

/// A regular file opened for reading without following a symlink in any component (the
/// launcher's configuration).
pub fn open_file_nofollow(path: &str) -> io::Result<RawFd> {
    openat2_nofollow(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
}

/// `MOUNT_ATTR_IDMAP`.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `open_tree(fd, "", OPEN_TREE_CLONE|OPEN_TREE_CLOEXEC|AT_EMPTY_PATH)`: a detached bind
/// mount of exactly the directory `fd` refers to (not its submounts).
pub fn open_tree_clone(fd: RawFd) -> io::Result<RawFd> {
    // SAFETY: the path is a static empty C string; the flags are integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd,
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    check_long(r).map(|fd| fd as RawFd)
}

/// `mount_setattr(tree, "", AT_EMPTY_PATH, {set, userns_fd})` on a detached mount.
pub fn mount_setattr_fd(tree: RawFd, set: u64, userns_fd: Option<RawFd>) -> io::Result<()> {
    // Private: the clone must not stay a propagation peer of the host mount it came from.
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: userns_fd.map_or(0, |fd| fd as u64),
    };
    // SAFETY: the path is a static empty C string and `attr` a valid mount_attr of the size
    // passed.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })
    .map(drop)
}

/// `move_mount(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)`: attaches a detached
/// mount at `target`.
pub fn move_mount_to(tree: RawFd, target: &str) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: both paths are NUL-terminated strings alive for the call.
    check_long(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map(drop)
}

/// Sets the effective uid and gid (real and saved ids unchanged), gid first; back to root
/// with `(0, 0)`, uid first. Effective capabilities follow the effective uid.
pub fn set_effective_ids(uid: u32, gid: u32) -> io::Result<()> {
    const KEEP: u32 = u32::MAX;
    if uid == 0 {
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresuid(KEEP, 0, KEEP) })?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresgid(KEEP, gid, KEEP) }).map(drop)
    } else {
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresgid(KEEP, gid, KEEP) })?;
        // SAFETY: integer arguments only.
        check(unsafe { libc::setresuid(KEEP, uid, KEEP) }).map(drop)
    }
}

/// `openat(dirfd, name, flags, mode)` of a single path component.
pub fn openat_file(dirfd: RawFd, name: &str, flags: libc::c_int, mode: u32) -> io::Result<RawFd> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated; integer arguments otherwise.
    check(unsafe { libc::openat(dirfd, n.as_ptr(), flags, mode as libc::c_uint) })
}

/// Highest signal number ([`reset_signals`]).
const MAX_SIGNAL: libc::c_int = 64;

/// Every signal disposition back to `SIG_DFL` (1..=64 but SIGKILL and SIGSTOP, including
/// the real-time signals libc reserves for itself), then an empty signal mask: nothing the
/// caller ignored or blocked (SIGCHLD ignored makes the kernel reap our children behind
/// our back; SIGTERM blocked would make us unkillable by it) reaches this process or what it
/// starts. The raw syscall, because glibc's sigaction refuses the signals it reserves.
pub fn reset_signals() -> io::Result<()> {
    // The kernel's struct sigaction (handler, flags, restorer, mask): all zero is SIG_DFL
    // with no flags and an empty mask, whatever the architecture's field order.
    let dfl = [0u64; 4];
    for sig in (1..=MAX_SIGNAL).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: `dfl` is a valid kernel sigaction of at least the size the kernel reads;
        // no handler code is installed; the old action is not asked for.
        check_long(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            )
        })?;
    }
    unblock_all_signals()
}

/// Sets `sig` to `SIG_IGN` (`true`) or `SIG_DFL` (`false`).
pub fn ignore_signal(sig: libc::c_int, ignore: bool) -> io::Result<()> {
    let handler = if ignore { libc::SIG_IGN } else { libc::SIG_DFL };
    // SAFETY: installing SIG_IGN or SIG_DFL involves no handler code.
    if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A close-on-exec signalfd for `set` (whose signals must be blocked).
pub fn signalfd(set: &libc::sigset_t) -> io::Result<RawFd> {
    // SAFETY: `set` is a valid sigset_t; -1 asks for a new descriptor.
    check(unsafe { libc::signalfd(-1, set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) })
}

/// `poll(fds, timeout_ms)`, retried on EINTR; returns how many entries have events.
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`: fails with EEXIST if `to` exists.
pub fn rename_noreplace(dir: RawFd, from: &str, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both names are NUL-terminated; integer arguments otherwise.
    check(unsafe { libc::renameat2(dir, f.as_ptr(), dir, t.as_ptr(), libc::RENAME_NOREPLACE) })
        .map(drop)
}

/// `renameat(dir, from, dir, to)`: replaces `to` atomically.
pub fn rename_replace(dir: RawFd, from: &str, to: &str) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: both names are NUL-terminated; integer arguments otherwise.
    check(unsafe { libc::renameat(dir, f.as_ptr(), dir, t.as_ptr()) }).map(drop)
}

/// `unlinkat(dir, name, 0)`.
pub fn unlink_at(dir: RawFd, name: &str) -> io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: `n` is NUL-terminated.
    check(unsafe { libc::unlinkat(dir, n.as_ptr(), 0) }).map(drop)
}

/// `fsync(fd)`.
pub fn fsync(fd: RawFd) -> io::Result<()> {
    // SAFETY: integer argument only.
    check(unsafe { libc::fsync(fd) }).map(drop)
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(true)` when taken (released when `fd` is closed),
/// `Ok(false)` when another open file holds it. Never waits.
pub fn try_lock_exclusive(fd: RawFd) -> io::Result<bool> {
    loop {
        // SAFETY: integer arguments only.
        match check(unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether process `pid` (of this pid namespace) exists, by `pidfd_open(pid, 0)`: no
/// signal is sent and no `/proc` entry is needed (under `hidepid` a live process of another
/// uid, or a setuid one, has none). Only ESRCH means gone; any other failure (EMFILE,
/// ENOSYS, ...) counts as alive, so a doubt never removes anything.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false; // no such pid number
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: pidfd_open takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0 as libc::c_uint) };
    match check_long(r) {
        Ok(fd) => {
            close(fd as RawFd);
            true
        }
        Err(e) => e.raw_os_error() != Some(libc::ESRCH),
    }
}

/// What `fstatfs` tells of the filesystem under an fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsInfo {
    /// `f_type`, the filesystem's magic number.
    pub fs_type: u64,
    /// `f_blocks * f_frsize` (saturating).
    pub size_bytes: u64,
    /// `f_files`.
    pub inodes: u64,
}

/// `fstatfs(fd)`: no path lookup.
// The field types differ between targets (`fsblkcnt_t` is 32-bit on some).
#[allow(clippy::unnecessary_cast)]
pub fn fd_statfs(fd: RawFd) -> io::Result<FsInfo> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `st` is a valid out-pointer for one statfs struct.
    check(unsafe { libc::fstatfs(fd, st.as_mut_ptr()) })?;
    // SAFETY: fstatfs succeeded, `st` is initialized.
    let st = unsafe { st.assume_init() };
    let frsize = if st.f_frsize > 0 {
        st.f_frsize
    } else {
        st.f_bsize
    };
    Ok(FsInfo {
        fs_type: st.f_type as u64,
        size_bytes: (st.f_blocks as u64).saturating_mul(u64::try_from(frsize).unwrap_or(0)),
        inodes: st.f_files as u64,
    })
}

/// Whether the directory `fd` is the root of a mount: `statx(fd, "", AT_EMPTY_PATH)`'s
/// `STATX_ATTR_MOUNT_ROOT` (Linux >= 5.8), else its device differs from its parent's
/// (`..` opened relative to `fd`, never by path). No symlink is followed either way.
pub fn is_mount_root(fd: RawFd) -> io::Result<bool> {
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    let empty = c"";
    // SAFETY: `empty` is NUL-terminated, `stx` a valid out-pointer for one statx struct.
    check(unsafe {
        libc::statx(
            fd,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_BASIC_STATS,
            stx.as_mut_ptr(),
        )
    })?;
    // SAFETY: statx succeeded, `stx` is initialized.
    let stx = unsafe { stx.assume_init() };
    if stx.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0 {
        return Ok(stx.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0);
    }
    let parent = openat_file(
        fd,
        "..",
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        0,
    )?;
    let mut up = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: `up` is a valid out-pointer for one stat struct.
    let r = check(unsafe { libc::fstat(parent, up.as_mut_ptr()) });
    close(parent);
    r?;
    // SAFETY: fstat succeeded, `up` is initialized.
    let up = unsafe { up.assume_init() };
    let (major, minor) = (libc::major(up.st_dev), libc::minor(up.st_dev));
    Ok(major != stx.stx_dev_major || minor != stx.stx_dev_minor)
}

#[cfg(test)]
mod tests {
    #[test]
    fn launcher_liveness_is_asked_of_the_kernel_not_of_proc() {
        use std::process::Command;
        // A live child (whatever /proc shows) is alive and left running: no signal is sent.
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let pid = child.id();
        assert!(super::pid_alive(pid));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the liveness check ended the child"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        // Reaped: gone.
        assert!(!super::pid_alive(pid));
        assert!(super::pid_alive(std::process::id()));
        assert!(!super::pid_alive(0));
        assert!(!super::pid_alive(u32::MAX));
    }
}
