//! The sandbox's filesystem, as a reviewed plan of mount operations.
//!
//! The launcher mounts a tmpfs as the new root, applies these operations in order (paths are
//! inside the new root), `pivot_root`s into it, detaches the old root and finally remounts
//! `/` read-only. Every operation carries the reason it exists.

use bulkhead_wire::LaunchSpec;

use crate::defaults::{SANDBOX_GID, SANDBOX_UID, SANDBOX_USER};

/// What a host path is, as far as planning needs to know (not following symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEntry {
    /// Does not exist.
    Missing,
    /// A directory.
    Dir,
    /// A regular file (or device, for `/dev` nodes).
    File,
    /// A symbolic link with this target.
    Symlink(String),
}

/// One operation on the new root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Create a directory.
    Dir {
        /// Path inside.
        path: String,
        /// Mode.
        mode: u32,
    },
    /// Mount a size-capped tmpfs (always nosuid, nodev).
    Tmpfs {
        /// Path inside.
        path: String,
        /// Size cap, bytes.
        size: u64,
        /// Mode of its root.
        mode: u32,
        /// Also noexec.
        noexec: bool,
    },
    /// Recursive bind of a host path, read-only, nosuid, nodev.
    BindRo {
        /// Host path.
        host: String,
        /// Path inside.
        path: String,
        /// Directory (else a file).
        dir: bool,
    },
    /// Bind of a host device node, read-write, nosuid, noexec.
    BindDev {
        /// Host device path.
        host: String,
        /// Path inside.
        path: String,
    },
    /// A symbolic link.
    Symlink {
        /// Path inside.
        path: String,
        /// Link content.
        target: String,
    },
    /// A generated file.
    File {
        /// Path inside.
        path: String,
        /// Content.
        contents: String,
        /// Mode.
        mode: u32,
    },
    /// A fresh procfs for the sandbox's pid namespace (nosuid, nodev, noexec).
    Proc {
        /// Path inside.
        path: String,
    },
    /// A new devpts instance.
    Devpts {
        /// Path inside.
        path: String,
    },
    /// Make an existing path read-only (bind onto itself, then remount).
    ReadOnly {
        /// Path inside.
        path: String,
    },
    /// Hide a file by binding `/dev/null` over it, a directory by an empty read-only tmpfs
    /// (skipped when the path does not exist).
    Mask {
        /// Path inside.
        path: String,
    },
    /// The workspace directory (opened by the launcher without following symlinks).
    Workspace {
        /// Path inside.
        path: String,
        /// Read-write.
        writable: bool,
    },
    /// One of the spec's extra binds, read-only (opened like the workspace).
    Extra {
        /// Index into `LaunchSpec::binds`.
        index: usize,
        /// Path inside.
        path: String,
    },
}

/// An operation with the reason a reviewer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The operation.
    pub op: MountOp,
    /// Why it exists.
    pub reason: &'static str,
}

/// Size of the root tmpfs (holds generated `/etc` files and mount points only).
pub const ROOT_TMPFS_BYTES: u64 = 1 << 20;
/// Size of the `/dev` tmpfs.
pub const DEV_TMPFS_BYTES: u64 = 64 << 10;

/// Top-level host directories that are symlinks into `/usr` on merged-/usr systems and
/// real directories elsewhere.
pub const USR_ALIASES: &[&str] = &["/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"];

/// Host `/etc` entries bound read-only when they exist, with the reason.
pub const ETC_BINDS: &[(&str, &str)] = &[
    (
        "/etc/ld.so.cache",
        "dynamic linker cache, so binaries find their libraries fast",
    ),
    ("/etc/ld.so.conf", "dynamic linker configuration"),
    ("/etc/ld.so.conf.d", "dynamic linker configuration"),
    (
        "/etc/alternatives",
        "Debian's /usr/bin links (awk, editor, …) point through here",
    ),
    ("/etc/ssl", "CA certificates for TLS clients"),
    ("/etc/ca-certificates", "CA certificate configuration"),
    ("/etc/pki", "CA certificates on Fedora/RHEL"),
    ("/etc/crypto-policies", "TLS defaults on Fedora/RHEL"),
    ("/etc/localtime", "time zone"),
    ("/etc/protocols", "getprotobyname for network libraries"),
    ("/etc/services", "getservbyname for network libraries"),
    ("/etc/mime.types", "MIME types for language runtimes"),
];

/// Host device nodes bound into the sandbox's `/dev`.
/// No `tty`: the sandbox runs in its own session without a controlling terminal, so
/// `/dev/tty` could only ever fail; left out, it is one less host device node inside.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom"];

/// `/proc` paths made read-only (the kernel already refuses writes from a user namespace;
/// this is the second lock).
pub const PROC_READONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];

/// `/proc` entries hidden, each with the reason: a file behind `/dev/null`, a directory behind
/// an empty read-only tmpfs. An entry the kernel does not have is skipped.
pub const PROC_MASKED: &[(&str, &str)] = &[
    ("/proc/kcore", "the kernel's memory as an ELF core"),
    (
        "/proc/timer_list",
        "every timer of every process on the host, with kernel addresses",
    ),
    (
        "/proc/sched_debug",
        "every task on the host, scheduler internals",
    ),
    (
        "/proc/keys",
        "keys of the kernel keyrings readable to the caller's ids, host-wide",
    ),
    (
        "/proc/latency_stats",
        "host-wide latency records with kernel call chains",
    ),
    ("/proc/acpi", "ACPI state and controls of the host machine"),
    (
        "/proc/scsi",
        "host SCSI devices, and a legacy write interface to add and remove them",
    ),
];

fn p(op: MountOp, reason: &'static str) -> Planned {
    Planned { op, reason }
}

fn dir(path: &str, mode: u32) -> MountOp {
    MountOp::Dir {
        path: path.into(),
        mode,
    }
}

fn file(path: &str, contents: String) -> MountOp {
    MountOp::File {
        path: path.into(),
        contents,
        mode: 0o644,
    }
}

/// Where a skill's own files are bound (by the controller, read-only). A sandbox with this
/// bind is a skill's.
pub const SKILL_BIND: &str = "/mnt/skill";
/// The sandbox user's home in a skill's sandbox: on its own `/tmp`, never the workspace, so
/// programs that take the home from `/etc/passwd` rather than `$HOME` (ssh reads
/// `~/.ssh/config` there, curl looks for `.curlrc` there last) find nothing the tenant wrote.
pub const SKILL_HOME: &str = "/tmp/home";

/// The sandbox user's home in `/etc/passwd`: [`SKILL_HOME`] in a skill's sandbox (one that
/// binds [`SKILL_BIND`]), else `/workspace`.
pub fn home_of(spec: &LaunchSpec) -> &'static str {
    if spec.binds.iter().any(|b| b.path == SKILL_BIND) {
        SKILL_HOME
    } else {
        "/workspace"
    }
}

/// Generated `/etc/passwd`, naming `home` as the sandbox user's home.
pub fn passwd(home: &str) -> String {
    format!(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n\
         {SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:bulkhead sandbox:{home}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
}

/// Generated `/etc/group`.
pub fn group() -> String {
    format!("root:x:0:\n{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n")
}

/// Generated `/etc/hosts`.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// Plans the sandbox filesystem. `host` tells what a host path is (without following links).
pub fn plan(spec: &LaunchSpec, host: &dyn Fn(&str) -> HostEntry) -> Vec<Planned> {
    let mut v = Vec::with_capacity(48);
    v.push(p(
        MountOp::BindRo {
            host: "/usr".into(),
            path: "/usr".into(),
            dir: true,
        },
        "programs and libraries, read-only",
    ));
    for &alias in USR_ALIASES {
        match host(alias) {
            HostEntry::Symlink(t) => v.push(p(
                MountOp::Symlink {
                    path: alias.into(),
                    target: t,
                },
                "merged-/usr: the same link as on the host",
            )),
            HostEntry::Dir => v.push(p(
                MountOp::BindRo {
                    host: alias.into(),
                    path: alias.into(),
                    dir: true,
                },
                "split-/usr host: the real directory, read-only",
            )),
            _ => {}
        }
    }
    v.push(p(dir("/etc", 0o755), "minimal /etc"));
    v.push(p(
        file("/etc/passwd", passwd(home_of(spec))),
        "names the sandbox user; a skill's home is not the workspace",
    ));
    v.push(p(file("/etc/group", group()), "names the sandbox group"));
    v.push(p(
        file("/etc/hosts", hosts(&spec.hostname)),
        "localhost only",
    ));
    v.push(p(
        file(
            "/etc/nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files\n".into(),
        ),
        "no NSS plugins, no DNS: there is no network",
    ));
    for &(path, reason) in ETC_BINDS {
        match host(path) {
            HostEntry::Dir => v.push(p(
                MountOp::BindRo {
                    host: path.into(),
                    path: path.into(),
                    dir: true,
                },
                reason,
            )),
            HostEntry::File => v.push(p(
                MountOp::BindRo {
                    host: path.into(),
                    path: path.into(),
                    dir: false,
                },
                reason,
            )),
            HostEntry::Symlink(t) => v.push(p(
                MountOp::Symlink {
                    path: path.into(),
                    target: t,
                },
                reason,
            )),
            HostEntry::Missing => {}
        }
    }
    v.push(p(
        MountOp::Tmpfs {
            path: "/dev".into(),
            size: DEV_TMPFS_BYTES,
            mode: 0o755,
            noexec: true,
        },
        "minimal /dev, no host devices but the few below",
    ));
    for &d in DEVICES {
        v.push(p(
            MountOp::BindDev {
                host: format!("/dev/{d}"),
                path: format!("/dev/{d}"),
            },
            "basic character device every program expects",
        ));
    }
    v.push(p(dir("/dev/pts", 0o755), "mount point"));
    v.push(p(
        MountOp::Devpts {
            path: "/dev/pts".into(),
        },
        "private pseudo-terminals",
    ));
    v.push(p(
        MountOp::Symlink {
            path: "/dev/ptmx".into(),
            target: "pts/ptmx".into(),
        },
        "ptmx of the private devpts",
    ));
    for (name, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        v.push(p(
            MountOp::Symlink {
                path: name.into(),
                target: target.into(),
            },
            "standard /dev links",
        ));
    }
    v.push(p(dir("/dev/shm", 0o1777), "mount point"));
    v.push(p(
        MountOp::Tmpfs {
            path: "/dev/shm".into(),
            size: spec.limits.shm_bytes,
            mode: 0o1777,
            noexec: false,
        },
        "POSIX shared memory, size-capped",
    ));
    v.push(p(dir("/tmp", 0o1777), "mount point"));
    v.push(p(
        MountOp::Tmpfs {
            path: "/tmp".into(),
            size: spec.limits.tmp_bytes,
            mode: 0o1777,
            noexec: false,
        },
        "scratch space, size-capped, gone with the sandbox",
    ));
    v.push(p(dir("/proc", 0o555), "mount point"));
    v.push(p(
        MountOp::Proc {
            path: "/proc".into(),
        },
        "procfs of the sandbox's own pid namespace",
    ));
    for &path in PROC_READONLY {
        v.push(p(
            MountOp::ReadOnly { path: path.into() },
            "kernel tunables and triggers stay read-only",
        ));
    }
    for &(path, reason) in PROC_MASKED {
        v.push(p(MountOp::Mask { path: path.into() }, reason));
    }
    v.push(p(dir("/workspace", 0o755), "mount point"));
    v.push(p(
        MountOp::Workspace {
            path: "/workspace".into(),
            writable: spec.workspace_writable,
        },
        "the workspace's files/, the only host directory the sandbox may change",
    ));
    if !spec.binds.is_empty() {
        v.push(p(dir("/mnt", 0o755), "mount points of the extra binds"));
    }
    for (index, b) in spec.binds.iter().enumerate() {
        v.push(p(dir(&b.path, 0o755), "mount point"));
        v.push(p(
            MountOp::Extra {
                index,
                path: b.path.clone(),
            },
            "a directory the caller owns (or the operator listed), read-only",
        ));
    }
    v
}

/// What a host path is, not following symlinks: the `host` argument of [`plan`] for the real
/// host (the launcher plans with it, the controller re-plans with it to check the mount table
/// the sandbox reports).
pub fn probe_host(path: &str) -> HostEntry {
    match std::fs::symlink_metadata(path) {
        Err(_) => HostEntry::Missing,
        Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(path) {
            Ok(t) => HostEntry::Symlink(t.to_string_lossy().into_owned()),
            Err(_) => HostEntry::Missing,
        },
        Ok(m) if m.is_dir() => HostEntry::Dir,
        Ok(_) => HostEntry::File,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::default_limits;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            workspace_id: "acme".into(),
            workspace_dir: "/srv/acme/files".into(),
            workspace_writable: true,
            host_uid: 1000,
            host_gid: 1000,
            hostname: "acme".into(),
            limits: default_limits(),
            binds: vec![],
        }
    }

    #[test]
    fn merged_usr_gets_symlinks_split_usr_gets_binds() {
        let merged = plan(&spec(), &|p| match p {
            "/bin" => HostEntry::Symlink("usr/bin".into()),
            "/lib64" => HostEntry::Symlink("usr/lib64".into()),
            _ => HostEntry::Missing,
        });
        assert!(merged.iter().any(|x| x.op
            == MountOp::Symlink {
                path: "/bin".into(),
                target: "usr/bin".into()
            }));
        assert!(!merged
            .iter()
            .any(|x| matches!(&x.op, MountOp::BindRo { path, .. } if path == "/lib")));
        let split = plan(&spec(), &|p| {
            if p == "/lib" {
                HostEntry::Dir
            } else {
                HostEntry::Missing
            }
        });
        assert!(split
            .iter()
            .any(|x| matches!(&x.op, MountOp::BindRo { path, dir: true, .. } if path == "/lib")));
    }

    #[test]
    fn every_op_has_a_reason_and_sizes_come_from_the_spec() {
        let mut s = spec();
        s.limits.tmp_bytes = 3 << 20;
        let plan = plan(&s, &|_| HostEntry::Missing);
        assert!(plan.iter().all(|x| !x.reason.is_empty()));
        assert!(plan.iter().any(|x| x.op
            == MountOp::Tmpfs {
                path: "/tmp".into(),
                size: 3 << 20,
                mode: 0o1777,
                noexec: false
            }));
        // The workspace comes last, after /proc, and no host path but /usr, /etc entries and
        // devices is bound.
        assert!(matches!(plan.last().unwrap().op, MountOp::Workspace { .. }));
        for x in &plan {
            if let MountOp::BindRo { host, .. } = &x.op {
                assert!(host == "/usr" || host.starts_with("/etc/"), "{host}");
            }
        }
    }

    #[test]
    fn proc_masks_and_no_dev_tty() {
        let plan = plan(&spec(), &|_| HostEntry::Missing);
        for path in [
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/acpi",
            "/proc/scsi",
            "/proc/timer_list",
        ] {
            assert!(
                plan.iter()
                    .any(|x| matches!(&x.op, MountOp::Mask { path: p } if p == path)),
                "{path}"
            );
        }
        assert!(!plan.iter().any(|x| matches!(&x.op,
            MountOp::BindDev { path, .. } if path == "/dev/tty")));
    }

    #[test]
    fn generated_etc_names_the_sandbox_user_and_host() {
        assert!(passwd("/workspace").contains("sandbox:x:1000:1000:"));
        let etc_passwd = |spec: &LaunchSpec| {
            plan(spec, &|_| HostEntry::Missing)
                .into_iter()
                .find_map(|x| match x.op {
                    MountOp::File { path, contents, .. } if path == "/etc/passwd" => Some(contents),
                    _ => None,
                })
                .unwrap()
        };
        assert!(etc_passwd(&spec()).contains(":bulkhead sandbox:/workspace:"));
        let mut skill = spec();
        skill.binds.push(bulkhead_wire::Bind {
            host: "/var/lib/bulkhead/workspaces/a/skill-runs/1".into(),
            path: SKILL_BIND.into(),
        });
        assert!(etc_passwd(&skill).contains(":bulkhead sandbox:/tmp/home:"));
        assert!(hosts("acme").contains("127.0.1.1\tacme"));
        let plan = plan(&spec(), &|_| HostEntry::Missing);
        assert!(!plan
            .iter()
            .any(|x| matches!(&x.op, MountOp::File { path, .. } if path == "/etc/resolv.conf")));
    }
}
