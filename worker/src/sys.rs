//! Every system call the worker makes that `std` does not wrap.
//!
//! Each `unsafe` block is one call, inside a function that returns a `Result` (or a plain value
//! when the call cannot fail), with a `// SAFETY:` line. The rest of the worker is safe code.
//!
//! Two wrappers guard against the worst mistake a process manager can make on a real host:
//! [`kill_process_group`] refuses pgid 0, 1 and our own group, and [`kill_all_as_init`] refuses
//! to run unless we are pid 1 (of a pid namespace), where `kill(-1)` only reaches the sandbox.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// `Err(last_os_error)` when a libc call returned -1.
fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Whether `fd` is an open descriptor of this process (`fcntl(F_GETFD)`).
pub fn fd_is_open(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor flags; an invalid fd yields EBADF.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) }).map(drop)
}

/// Takes ownership of the socket the launcher left on `fd`. Call once, at startup, for an fd
/// nothing else in the process owns.
pub fn take_unix_stream(fd: RawFd) -> io::Result<UnixStream> {
    fd_is_open(fd)?;
    // SAFETY: `fd` is open (checked above) and nothing else in this process owns it: the
    // worker is exec'd with it and this function is called once, before any other fd use.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    // getsockname fails with ENOTSOCK (or returns a non-unix family) when it is not a socket.
    sock.local_addr()?;
    Ok(sock)
}

/// `(domain, type)` of the socket `fd` (`SO_DOMAIN`, `SO_TYPE`); `ENOTSOCK` when it is none.
pub fn socket_kind(fd: BorrowedFd<'_>) -> io::Result<(libc::c_int, libc::c_int)> {
    let get = |opt: libc::c_int| -> io::Result<libc::c_int> {
        let mut val: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `val` and `len` are valid out-pointers; the kernel writes at most `len`
        // bytes into `val`.
        check(unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&mut val as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok(val)
    };
    Ok((get(libc::SO_DOMAIN)?, get(libc::SO_TYPE)?))
}

/// Takes ownership of the unix `SOCK_SEQPACKET` socket the launcher left on `fd` (the egress
/// channel). `None` when `fd` is closed or anything else, which is then left alone. Call
/// once, at startup, for an fd nothing else in the process owns.
pub fn take_seqpacket(fd: RawFd) -> Option<OwnedFd> {
    fd_is_open(fd).ok()?;
    // SAFETY: `fd` is open (checked above); it is only borrowed for the getsockopt calls.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if socket_kind(borrowed).ok()? != (libc::AF_UNIX, libc::SOCK_SEQPACKET) {
        return None;
    }
    // SAFETY: `fd` is open, and nothing else in this process owns it: the launcher execs the
    // worker with it and this function is called once, before any other fd is created.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `SCM_RIGHTS` control message carrying one fd, laid out as the kernel reads it.
#[repr(C)]
struct FdCmsg {
    hdr: libc::cmsghdr,
    fd: libc::c_int,
}

// SAFETY: CMSG_SPACE and CMSG_LEN are arithmetic on their argument only.
const FD_CMSG_SPACE: usize =
    unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as _) } as usize;
// SAFETY: as above.
const FD_CMSG_LEN: usize =
    unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as _) } as usize;
// SAFETY: as above.
const CMSG_HDR_LEN: usize = unsafe { libc::CMSG_LEN(0) } as usize;
// The struct is exactly what CMSG_SPACE(sizeof(int)) describes, the fd where CMSG_DATA is.
const _: () = assert!(std::mem::size_of::<FdCmsg>() == FD_CMSG_SPACE);
const _: () = assert!(std::mem::offset_of!(FdCmsg, fd) == CMSG_HDR_LEN);

/// Sends `fd` over the unix socket `chan` as one message: the 1-byte `payload` and `fd` in
/// `SCM_RIGHTS`. Never blocks (`MSG_DONTWAIT`: `WouldBlock` when the peer's queue is full)
/// and never raises `SIGPIPE` (`MSG_NOSIGNAL`). The caller keeps its own copy of `fd`.
pub fn send_fd(chan: BorrowedFd<'_>, fd: BorrowedFd<'_>, payload: u8) -> io::Result<()> {
    let byte = [payload];
    let mut iov = libc::iovec {
        iov_base: byte.as_ptr() as *mut libc::c_void,
        iov_len: byte.len(),
    };
    // SAFETY: cmsghdr is plain integers (and, on some libcs, padding): all zero is valid.
    let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
    hdr.cmsg_level = libc::SOL_SOCKET;
    hdr.cmsg_type = libc::SCM_RIGHTS;
    hdr.cmsg_len = FD_CMSG_LEN as _;
    let mut cmsg = FdCmsg {
        hdr,
        fd: fd.as_raw_fd(),
    };
    // SAFETY: msghdr is plain integers and pointers (and padding): all zero is valid (no
    // name, no iov, no control) until the fields below are set.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = (&mut cmsg as *mut FdCmsg).cast();
    msg.msg_controllen = FD_CMSG_SPACE as _;
    loop {
        // SAFETY: `msg` points to `iov` (1 readable byte) and `cmsg` (FD_CMSG_SPACE bytes, one
        // well-formed SCM_RIGHTS header with an fd we hold), all alive for the call.
        let ret = unsafe {
            libc::sendmsg(
                chan.as_raw_fd(),
                &msg,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if ret >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Sets `FD_CLOEXEC` (the only descriptor flag) on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_SETFD on a borrowed, open fd changes only its close-on-exec flag.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// File status flags of `fd` (`F_GETFL`).
fn get_status_flags(fd: BorrowedFd<'_>) -> io::Result<libc::c_int> {
    // SAFETY: F_GETFL only reads the status flags of a borrowed, open fd.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })
}

/// Sets the file status flags of `fd` (`F_SETFL`).
fn set_status_flags(fd: BorrowedFd<'_>, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: F_SETFL on a borrowed, open fd changes only its status flags.
    check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags) }).map(drop)
}

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = get_status_flags(fd)?;
    if flags & libc::O_NONBLOCK == 0 {
        set_status_flags(fd, flags | libc::O_NONBLOCK)?;
    }
    Ok(())
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the ABI version the
/// kernel offers, or the negative errno (`-ENOSYS`, `-EOPNOTSUPP`) when it offers none.
pub fn landlock_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attribute pointer and size 0 the kernel reads no memory; the call
    // only reports the ABI version and creates no file descriptor.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if ret < 0 {
        -io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS)
    } else {
        i32::try_from(ret).unwrap_or(i32::MAX)
    }
}

/// `statvfs(path).f_flag`.
pub fn statvfs_flags(path: &CStr) -> io::Result<u64> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a writable statvfs the kernel fills.
    check(unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // c_ulong is u32 on 32-bit targets
    Ok(st.f_flag as u64)
}

/// `statfs(path)`: type, size in bytes (`f_blocks * f_frsize`) and inodes (`f_files`).
pub fn statfs_size(path: &CStr) -> io::Result<(u64, u64, u64)> {
    let mut st = MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is a writable statfs the kernel fills.
    check(unsafe { libc::statfs(path.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let (ftype, blocks, frsize, files) = (
        st.f_type as u64,
        st.f_blocks as u64,
        st.f_frsize as u64,
        st.f_files as u64,
    );
    Ok((ftype, blocks.saturating_mul(frsize), files))
}

/// `prctl(PR_SET_DUMPABLE, 0)`: no ptrace, no /proc/<pid>/mem, no pidfd_getfd on us from
/// processes of the same uid.
pub fn set_not_dumpable() -> io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: outside a pid namespace, orphans of our commands are
/// reparented to us (as they are to pid 1 inside one), so we reap them.
pub fn set_child_subreaper() -> io::Result<()> {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) })
        .map(drop)
}

/// A signal set.
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigSet")
    }
}

impl SigSet {
    /// The empty set.
    pub fn empty() -> io::Result<SigSet> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given a valid pointer to.
        check(unsafe { libc::sigemptyset(set.as_mut_ptr()) })?;
        // SAFETY: sigemptyset returned 0, so `set` is initialised.
        Ok(SigSet(unsafe { set.assume_init() }))
    }

    /// Adds `sig`.
    pub fn add(&mut self, sig: libc::c_int) -> io::Result<()> {
        // SAFETY: `self.0` is an initialised sigset_t; sigaddset validates `sig`.
        check(unsafe { libc::sigaddset(&mut self.0, sig) }).map(drop)
    }
}

/// `sigprocmask(how, set)` (the worker is single-threaded, so this is the thread's mask).
pub fn sigprocmask(how: libc::c_int, set: &SigSet) -> io::Result<()> {
    // SAFETY: `set` is an initialised sigset_t; the old mask is not requested (NULL).
    check(unsafe { libc::sigprocmask(how, &set.0, std::ptr::null_mut()) }).map(drop)
}

/// A non-blocking, close-on-exec signalfd for `set` (which must be blocked).
pub fn signalfd(set: &SigSet) -> io::Result<OwnedFd> {
    // SAFETY: -1 asks for a new fd; `set` is an initialised sigset_t the kernel copies.
    let fd = check(unsafe { libc::signalfd(-1, &set.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Resets the disposition of `sig` to the default (`signal(sig, SIG_DFL)`).
pub fn reset_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: installing SIG_DFL involves no handler code; invalid signals yield EINVAL.
    let old = unsafe { libc::signal(sig, libc::SIG_DFL) };
    if old == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets `sig` to `SIG_IGN`.
pub fn ignore_signal(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: installing SIG_IGN involves no handler code; invalid signals yield EINVAL.
    let old = unsafe { libc::signal(sig, libc::SIG_IGN) };
    if old == libc::SIG_ERR {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Every disposition from 1 to 64 but SIGKILL and SIGSTOP back to `SIG_DFL` (libc's
/// reserved real-time signals too, hence the raw syscall), then an empty signal mask.
pub fn reset_all_signals() -> io::Result<()> {
    // The kernel's struct sigaction (handler, flags, restorer, mask): all zero is SIG_DFL
    // with no flags and an empty mask, whatever the architecture's field order.
    let dfl = [0u64; 4];
    for sig in (1..=64).filter(|&s| s != libc::SIGKILL && s != libc::SIGSTOP) {
        // SAFETY: `dfl` is a valid kernel sigaction of at least the size the kernel reads;
        // no handler code is installed; the old action is not asked for.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                dfl.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                8usize,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    sigprocmask(libc::SIG_SETMASK, &SigSet::empty()?)
}

/// Whether `sig` is currently ignored (`SIG_IGN`). Invalid signals are not.
pub fn is_ignored(sig: libc::c_int) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a NULL new action only queries; `old` is a valid out-pointer.
    let r = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so `old` is initialized.
    r == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// `poll(fds, timeout_ms)`; EINTR counts as "nothing ready".
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: libc::c_int) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, writable slice of pollfd of the length passed.
    let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    match check(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// A close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded; fds[0] is a new descriptor nothing else owns.
    let r = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above, for fds[1].
    let w = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((r, w))
}

/// Result of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// We are the new child.
    Child,
    /// We are the parent of this pid.
    Parent(libc::pid_t),
}

/// `fork()`. The worker is single-threaded, so the child may run ordinary code until exec;
/// it still restricts itself to the raw calls of this module.
pub fn fork() -> io::Result<Fork> {
    // SAFETY: the worker is single-threaded (no lock can be held by a thread that does not
    // exist in the child) and the child only makes raw system calls before exec or _exit.
    let pid = check(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// `waitpid(-1, WNOHANG)`: `Ok(Some((pid, status)))` for one reaped child, `Ok(None)` when
/// children exist but none has changed state, `Err(ECHILD)` when there are none.
pub fn wait_any_nohang() -> io::Result<Option<(libc::pid_t, libc::c_int)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid int the kernel writes the wait status into.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    Ok(if pid == 0 { None } else { Some((pid, status)) })
}

/// Our process group id.
fn getpgrp() -> libc::pid_t {
    // SAFETY: getpgrp takes no arguments and cannot fail.
    unsafe { libc::getpgrp() }
}

/// `kill(pid, sig)` without any guard; only the guarded wrappers below call it.
fn raw_kill(pid: libc::pid_t, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: kill takes integers only; its reach is checked by the callers.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// SIGKILLs every process of group `pgid` (a group one of our commands leads). Refuses pgid
/// 0 and 1 (`kill(0)` / `kill(-1)` semantics) and our own group.
pub fn kill_process_group(pgid: libc::pid_t) -> io::Result<()> {
    if pgid <= 1 || pgid == getpgrp() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to kill process group {pgid}"),
        ));
    }
    raw_kill(-pgid, libc::SIGKILL)
}

/// SIGKILLs `pid`, which must be a child of ours that we have not reaped (its pid cannot
/// have been reused, since an unreaped child holds it). Refuses pid 0, 1 and ourselves.
pub fn kill_unreaped_child(pid: libc::pid_t) -> io::Result<()> {
    if pid <= 1 || pid as u32 == std::process::id() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to kill pid {pid}"),
        ));
    }
    raw_kill(pid, libc::SIGKILL)
}

/// `kill(-1, SIGKILL)`: as pid 1 of a pid namespace, every other process of the sandbox.
/// Refuses unless `getpid() == 1`: on a host this would kill every process we may signal.
pub fn kill_all_as_init() -> io::Result<()> {
    if std::process::id() != 1 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing kill(-1): not pid 1 of a pid namespace",
        ));
    }
    raw_kill(-1, libc::SIGKILL)
}

// ---- calls made by a forked child between fork and exec ----

/// `setsid()`: new session and process group led by the caller.
pub fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// `dup2(old, new)` (clears close-on-exec on `new`).
pub fn dup2(old: RawFd, new: RawFd) -> io::Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; invalid fds yield EBADF.
    check(unsafe { libc::dup2(old, new) }).map(drop)
}

/// `close_range(first, last, 0)`.
pub fn close_range(first: libc::c_uint, last: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors of this (forked, about-to-exec) process;
    // the caller owns every fd in the range and never uses them afterwards.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `close(fd)`, for the close_range fallback in a forked child.
pub fn close(fd: RawFd) -> io::Result<()> {
    // SAFETY: the caller (a forked child about to exec) owns `fd` and never uses it again.
    check(unsafe { libc::close(fd) }).map(drop)
}

/// Soft `RLIMIT_NOFILE`.
pub fn nofile_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit the kernel writes.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok(lim.rlim_cur)
}

/// `chdir(path)`.
pub fn chdir(path: &CStr) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// `execve(path, argv, envp)`; returns only on failure.
///
/// `argv` and `envp` must be NULL-terminated arrays of pointers to NUL-terminated strings
/// that outlive the call (see `exec::ChildPlan`).
pub fn execve(
    path: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> io::Error {
    if argv.last() != Some(&std::ptr::null()) || envp.last() != Some(&std::ptr::null()) {
        return io::Error::from_raw_os_error(libc::EINVAL);
    }
    // SAFETY: both arrays end with NULL (checked above) and point to CStrings owned by the
    // caller's plan, alive for the duration of the call.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    io::Error::last_os_error()
}

/// `write(fd, buf)` once (a forked child reporting to its parent through a pipe).
pub fn write_raw(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice of the length passed.
    let ret = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `_exit(code)`: leaves a forked child without running the parent's atexit handlers or
/// flushing its copies of the parent's buffers.
pub fn exit_immediately(code: libc::c_int) -> ! {
    // SAFETY: _exit never returns and touches no process memory.
    unsafe { libc::_exit(code) }
}
