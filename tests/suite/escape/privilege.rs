//! Privilege: mount, nested user namespaces and chroot are refused, the sandbox has no
//! capabilities and an unprivileged identity, setuid binaries grant nothing and no setuid or
//! setgid file can be made in the workspace.

use super::*;

// ---- mount ---------------------------------------------------------------------------------

/// Attack: mount a tmpfs, remount /usr read-write, unmount, with mount(8), mount(2) and the new
/// mount API.
/// Expected: all fail (EPERM); the sandbox's mount table and the host's are unchanged.
#[test]
fn mount_is_refused() {
    let Some(sb) = Isolated::new("escape_a::mount_is_refused") else {
        return;
    };
    let host_before = std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    let body = r#"
before = open("/proc/self/mounts").read()
R["mount_cmd"] = run(["mount", "-t", "tmpfs", "none", "/tmp"])
R["remount_cmd"] = run(["mount", "-o", "remount,rw", "/usr"])
R["umount_cmd"] = run(["umount", "-l", "/workspace"])
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
ctypes.set_errno(0)
r = libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)
R["mount2"] = res(r, ctypes.get_errno())
MS_REMOUNT, MS_BIND = 32, 4096
ctypes.set_errno(0)
r = libc.mount(None, b"/usr", None, MS_REMOUNT | MS_BIND, None)
R["remount2"] = res(r, ctypes.get_errno())
r, e = sc(166, ctypes.c_char_p(b"/usr"), 2)  # umount2(MNT_DETACH): would uncover the staging root
R["umount2"] = res(r, e)
r, e = sc(430, ctypes.c_char_p(b"tmpfs"), 0)
R["fsopen"] = res(r, e)
if r >= 0: os.close(r)
r, e = sc(428, -100, ctypes.c_char_p(b"/usr"), 1)
R["open_tree_clone"] = res(r, e)
if r >= 0: os.close(r)
after = open("/proc/self/mounts").read()
R["unchanged"] = before == after
if before != after:
    R["before"], R["after"] = before, after
"#;
    let (v, shown) = py_json(&sb, body);
    let host_after = std::fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo");
    for cmd in ["mount_cmd", "remount_cmd", "umount_cmd"] {
        assert_ne!(
            v[cmd]["rc"],
            serde_json::json!(0),
            "`{cmd}` succeeded inside:\n{shown}"
        );
    }
    for call in ["mount2", "remount2", "umount2", "fsopen", "open_tree_clone"] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
    assert_eq!(
        v["unchanged"],
        Value::Bool(true),
        "the sandbox's mount table changed:\n{shown}"
    );
    assert!(
        host_before == host_after,
        "the host's mount table changed during the attack"
    );
}

// ---- nested user namespaces ----------------------------------------------------------------

/// Attack: create a user namespace (where the attacker would be root) by unshare(1),
/// unshare(2) and clone(2).
/// Expected: EPERM everywhere; the process stays in the sandbox's user namespace.
#[test]
fn nested_user_namespace_is_refused() {
    let Some(sb) = Isolated::new("escape_a::nested_user_namespace_is_refused") else {
        return;
    };
    let body = r#"
CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x00020000, 0x40000000, 17
ns_before = os.readlink("/proc/self/ns/user")
R["unshare_U"] = run(["unshare", "-U", "true"])
R["unshare_r"] = run(["unshare", "-r", "true"])
if hasattr(os, "unshare"):
    R["os_unshare"] = oserr(lambda: os.unshare(os.CLONE_NEWUSER))
else:
    R["os_unshare"] = "EPERM"  # python < 3.12: covered by the ctypes call below
libc.unshare.argtypes = [ctypes.c_int]
ctypes.set_errno(0)
r = libc.unshare(CLONE_NEWUSER)
R["libc_unshare"] = res(r, ctypes.get_errno())
for key, flags in [("clone_newuser", CLONE_NEWUSER), ("clone_newuser_ns_net", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET)]:
    r, e = sc(56, flags | SIGCHLD, 0, 0, 0, 0)
    if r == 0:
        os._exit(0)  # a child in a new user namespace: leave at once
    if r > 0:
        os.waitpid(r, 0)
    R[key] = res(r, e)
R["same_userns"] = os.readlink("/proc/self/ns/user") == ns_before
"#;
    let (v, shown) = py_json(&sb, body);
    for cmd in ["unshare_U", "unshare_r"] {
        assert_ne!(
            v[cmd]["rc"],
            serde_json::json!(0),
            "`{cmd}` created a user namespace inside:\n{shown}"
        );
        assert!(
            field(&v[cmd], "err").contains("Operation not permitted"),
            "`{cmd}` did not fail with EPERM:\n{shown}"
        );
    }
    for call in [
        "os_unshare",
        "libc_unshare",
        "clone_newuser",
        "clone_newuser_ns_net",
    ] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
    assert_eq!(
        v["same_userns"],
        Value::Bool(true),
        "the process left the sandbox's user namespace:\n{shown}"
    );
}

// ---- chroot --------------------------------------------------------------------------------

/// Attack: chroot (the first step of classic chroot breakouts).
/// Expected: chroot(8) and chroot(2) fail with EPERM.
#[test]
fn chroot_is_refused() {
    let Some(sb) = Isolated::new("escape_a::chroot_is_refused") else {
        return;
    };
    let body = r#"
R["chroot_cmd"] = run(["chroot", "/tmp", "/bin/true"])
R["os_chroot_tmp"] = oserr(lambda: os.chroot("/tmp"))
R["os_chroot_root"] = oserr(lambda: os.chroot("/"))
"#;
    let (v, shown) = py_json(&sb, body);
    assert_ne!(
        v["chroot_cmd"]["rc"],
        serde_json::json!(0),
        "`chroot /tmp /bin/true` succeeded inside:\n{shown}"
    );
    assert!(
        field(&v["chroot_cmd"], "err").contains("Operation not permitted"),
        "`chroot /tmp /bin/true` did not fail with EPERM:\n{shown}"
    );
    for call in ["os_chroot_tmp", "os_chroot_root"] {
        assert_eq!(
            field(&v, call),
            "EPERM",
            "{call} inside did not fail with EPERM:\n{shown}"
        );
    }
}

// ---- capabilities, NoNewPrivs, seccomp, identity -------------------------------------------

/// Attack surface check: what the sandboxed process holds.
/// Expected: no capabilities in any set, NoNewPrivs 1, seccomp filter mode with at least 3
/// filters, uid 1000 (sandbox) mapped to an unprivileged host id.
#[test]
fn no_capabilities_and_unprivileged_identity() {
    let Some(sb) = Isolated::new("escape_a::no_capabilities_and_unprivileged_identity") else {
        return;
    };
    let out = sh_ok(
        &sb,
        "grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; echo \"ID $(id)\"; \
         sed 's/^/UIDMAP /' /proc/self/uid_map; sed 's/^/GIDMAP /' /proc/self/gid_map",
    );
    let status = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .map(str::trim)
            .unwrap_or("<missing>")
            .to_string()
    };
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status(cap),
            "0000000000000000",
            "{cap} is not empty inside:\n{out}"
        );
    }
    assert_eq!(
        status("NoNewPrivs"),
        "1",
        "NoNewPrivs is not set inside:\n{out}"
    );
    assert_eq!(
        status("Seccomp"),
        "2",
        "seccomp is not in filter mode inside:\n{out}"
    );
    let filters: u32 = status("Seccomp_filters").parse().unwrap_or(0);
    let expected = bulkhead_seccomp::build_filters().unwrap().len() as u32;
    assert_eq!(
        filters, expected,
        "seccomp filters inside differ from the policy's:\n{out}"
    );
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("ID "))
        .unwrap_or("");
    assert!(
        id.starts_with("uid=1000(sandbox) gid=1000(sandbox)"),
        "identity inside: {id}\n{out}"
    );
    for map in ["UIDMAP ", "GIDMAP "] {
        let lines: Vec<Vec<&str>> = out
            .lines()
            .filter_map(|l| l.strip_prefix(map))
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines.len(), 1, "{map}has more than one line:\n{out}");
        let f = &lines[0];
        assert!(
            f.len() == 3 && f[0] == "1000" && f[2] == "1",
            "{map}is not `1000 <host id> 1`:\n{out}"
        );
        assert_ne!(f[1], "0", "{map}maps the sandbox user to host root:\n{out}");
    }
}

// ---- setuid binaries -----------------------------------------------------------------------

#[test]
fn setuid_binaries_grant_nothing() {
    let Some(sb) = Isolated::new("setuid_binaries_grant_nothing") else {
        return;
    };
    let out = sb.sh("su -c id root </dev/null 2>&1; echo su=$?; \
         if command -v sudo >/dev/null; then sudo -n id 2>&1; echo sudo=$?; fi; \
         grep -E '^(NoNewPrivs|CapEff|CapPrm|CapBnd|CapAmb|Uid|Gid):' /proc/self/status; \
         echo ---; cat /proc/self/mountinfo");
    let so = text(&out.stdout);
    assert!(
        !so.contains("uid=0"),
        "su/sudo gave root:\n{}",
        show_status(&out)
    );
    assert!(
        so.contains("su=") && !so.contains("su=0"),
        "su succeeded:\n{}",
        show_status(&out)
    );
    let status: Vec<(&str, String)> = so
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.split_whitespace().collect::<Vec<_>>().join(" ")))
        .collect();
    let get = |k: &str| {
        status
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("NoNewPrivs"), "1", "{so}");
    for k in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(get(k), "0000000000000000", "{k} inside");
    }
    assert_eq!(get("Uid"), "1000 1000 1000 1000");
    assert_eq!(get("Gid"), "1000 1000 1000 1000");
    let mountinfo = so.split("---\n").nth(1).unwrap_or_default();
    let usr = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/usr"))
        .unwrap_or_else(|| panic!("no /usr mount inside:\n{mountinfo}"));
    let opts = usr.split_whitespace().nth(5).unwrap_or_default();
    assert!(
        opts.split(',').any(|o| o == "nosuid"),
        "/usr is not nosuid: {usr}"
    );
    assert!(
        opts.split(',').any(|o| o == "ro"),
        "/usr is not read-only: {usr}"
    );

    // Every setuid/setgid binary the host has: exec it with --help and read the
    // credentials it got from /proc (newgrp and sg are left out: they start shells).
    let out = sb.python(
        r#"
import os, stat, time, json, errno
res = {"bins": {}, "setuid": {}}
for d in ["/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec"]:
    for root, dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                continue
            if f in ("newgrp", "sg"):
                continue
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                fd = os.open("/dev/null", os.O_RDWR)
                for i in (0, 1, 2):
                    os.dup2(fd, i)
                os.set_inheritable(w, False)
                try:
                    os.execv(p, [p, "--help"])
                except OSError as e:
                    os.write(w, str(e.errno).encode())
                os._exit(127)
            os.close(w)
            failed = os.read(r, 64)
            os.close(r)
            info = "exec failed: " + errno.errorcode.get(int(failed), "?") if failed else None
            deadline = time.time() + 2
            while info is None and time.time() < deadline:
                try:
                    lines = open("/proc/%d/status" % pid).read().splitlines()
                except OSError:
                    break
                kv = dict(l.split(":", 1) for l in lines if ":" in l)
                if kv.get("Name", "").strip() == f[:15]:
                    info = {k: " ".join(kv.get(k, "").split()) for k in ("Uid", "Gid", "CapEff", "CapPrm")}
                    break
                time.sleep(0.005)
            try:
                os.kill(pid, 9)
            except OSError:
                pass
            os.waitpid(pid, 0)
            res["bins"][p] = info
for name, fn in [("setuid0", lambda: os.setuid(0)), ("setresuid0", lambda: os.setresuid(0, 0, 0)),
                 ("setgid0", lambda: os.setgid(0)), ("setgroups0", lambda: os.setgroups([0])),
                 ("seteuid0", lambda: os.seteuid(0))]:
    try:
        fn()
        res["setuid"][name] = "ok"
    except OSError as e:
        res["setuid"][name] = errno.errorcode.get(e.errno, str(e.errno))
res["uid_after"] = [os.getuid(), os.geteuid(), os.getgid(), os.getegid()]
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show_status(&out));
    let r = json_out(&out);
    let bins = r["bins"].as_object().expect("bins");
    let mut measured = 0;
    for (b, info) in bins {
        if let Some(m) = info.as_object() {
            measured += 1;
            assert_eq!(
                m["Uid"].as_str(),
                Some("1000 1000 1000 1000"),
                "{b} ran with other uids: {info}"
            );
            assert_eq!(
                m["Gid"].as_str(),
                Some("1000 1000 1000 1000"),
                "{b} ran with other gids: {info}"
            );
            assert_eq!(
                m["CapEff"].as_str(),
                Some("0000000000000000"),
                "{b} ran with capabilities: {info}"
            );
            assert_eq!(
                m["CapPrm"].as_str(),
                Some("0000000000000000"),
                "{b} ran with capabilities: {info}"
            );
        }
    }
    eprintln!(
        "setuid binaries checked: {measured} of {} found",
        bins.len()
    );
    // os.setuid(0) fails: EINVAL (uid 0 has no mapping in the sandbox's user namespace)
    // or EPERM (no CAP_SETUID); never success.
    for (k, v) in r["setuid"].as_object().expect("setuid") {
        let v = v.as_str().unwrap_or_default();
        assert!(
            v == "EPERM" || v == "EINVAL",
            "{k}: {v}\n{}",
            show_status(&out)
        );
    }
    assert_eq!(r["uid_after"], serde_json::json!([1000, 1000, 1000, 1000]));
}

#[test]
fn no_setuid_or_setgid_file_can_be_made_in_the_workspace() {
    // /workspace is an id-mapped mount of the controller's own files when privileged: a
    // setuid file made there would be a setuid program of the controller's user on the host.
    let Some(sb) = Isolated::new("no_setuid_or_setgid_file_can_be_made_in_the_workspace") else {
        return;
    };
    let out = sb.python(
        r#"
import os, ctypes
r = []
def attempt(name, f):
    try:
        f(); r.append(name + "=ok")
    except OSError as e:
        r.append(name + "=" + str(e.errno))
p = "/workspace/s"
open(p, "w").close()
attempt("chmod4755", lambda: os.chmod(p, 0o4755))
attempt("chmod2755", lambda: os.chmod(p, 0o2755))
attempt("fchmod4755", lambda: os.fchmod(os.open(p, os.O_RDONLY), 0o4755))
attempt("create4755", lambda: os.close(os.open("/workspace/c", os.O_CREAT | os.O_WRONLY, 0o4755)))
attempt("mknod4755", lambda: os.mknod("/workspace/n", 0o100000 | 0o4755))
libc = ctypes.CDLL(None, use_errno=True)
how = (ctypes.c_uint64 * 3)(os.O_CREAT | os.O_WRONLY, 0o4755, 0)
fd = libc.syscall(437, -100, b"/workspace/o2", ctypes.byref(how), 24)
r.append("openat2=" + (str(ctypes.get_errno()) if fd < 0 else "ok"))
attempt("chmod755", lambda: os.chmod(p, 0o755))
attempt("create644", lambda: os.close(os.open("/workspace/d", os.O_CREAT | os.O_WRONLY, 0o644)))
print(" ".join(r))
for f in ["s", "c", "n", "d"]:
    try:
        print(f, oct(os.stat("/workspace/" + f).st_mode))
    except OSError:
        pass
"#,
    );
    let o = text(&out.stdout);
    assert!(out.status.success(), "{}", show_status(&out));
    for refused in [
        "chmod4755=1",
        "chmod2755=1",
        "fchmod4755=1",
        "create4755=1",
        "mknod4755=1",
        "openat2=38",
    ] {
        assert!(o.contains(refused), "{refused} missing:\n{o}");
    }
    assert!(
        o.contains("chmod755=ok") && o.contains("create644=ok"),
        "{o}"
    );
    for entry in std::fs::read_dir(sb.env.files(&sb.id)).unwrap().flatten() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.metadata().unwrap().permissions().mode();
        assert_eq!(
            mode & 0o6000,
            0,
            "{:?} is setuid/setgid on the host",
            entry.path()
        );
    }
}
