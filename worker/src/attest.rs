//! What the worker sees of its own confinement, read from inside before any request runs.
//!
//! Nothing here decides anything: the controller compares the [`Attestation`] with the policy
//! and refuses a sandbox where a layer silently did nothing. A value that cannot be read is
//! left at its default (0, false, empty), which never matches a policy that requires it.

use std::fs;
use std::io;
use std::path::Path;

use bulkhead_shared::{Attestation, NsIds, WorkspaceFs, MAX_ATTESTED_RLIMITS};

use crate::sys;

/// Reads the attestation from the real `/proc`. Must run before `PR_SET_DUMPABLE` is cleared
/// (the landlock probe opens `/proc/self/comm`, which non-dumpable processes may not).
pub fn gather() -> Attestation {
    let mut a = Attestation {
        pid: std::process::id(),
        ..Attestation::default()
    };
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        apply_status(&status, &mut a);
    }
    a.ns = NsIds {
        user: ns_inode("user"),
        mnt: ns_inode("mnt"),
        pid: ns_inode("pid"),
        net: ns_inode("net"),
        ipc: ns_inode("ipc"),
        uts: ns_inode("uts"),
        cgroup: ns_inode("cgroup"),
    };
    a.uid_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    a.gid_map = fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    a.interfaces = fs::read_to_string("/proc/net/dev")
        .map(|s| parse_net_dev(&s))
        .unwrap_or_default();
    a.landlock_abi = sys::landlock_abi();
    a.landlock_enforced = landlock_probe(Path::new("/proc/self/comm"));
    a.root_readonly = sys::statvfs_flags(c"/")
        .map(|f| f & libc::ST_RDONLY != 0)
        .unwrap_or(false);
    a.rlimits = fs::read_to_string("/proc/self/limits")
        .map(|t| bulkhead_attest::rlimits::parse_proc_limits(&t))
        .unwrap_or_default();
    a.rlimits.truncate(MAX_ATTESTED_RLIMITS);
    a.mounts = read_capped("/proc/self/mountinfo", MOUNTINFO_CAP)
        .map(|t| bulkhead_attest::mounts::parse_mountinfo(&t))
        .unwrap_or_default();
    a.workspace_fs = workspace_fs(c"/workspace");
    a
}

/// Most bytes of mountinfo read (about 150 bytes a line × [`MAX_ATTESTED_MOUNTS`], with room).
const MOUNTINFO_CAP: u64 = 256 << 10;

/// Reads at most `cap` bytes of a text file.
fn read_capped(path: &str, cap: u64) -> io::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    fs::File::open(path)?.take(cap).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `statfs` of the workspace mount: the controller compares it with the disk limit it
/// provisioned (a workspace with a limit must have its own filesystem of that size). Zeros
/// when unreadable, which never matches a limit.
pub fn workspace_fs(path: &std::ffi::CStr) -> WorkspaceFs {
    sys::statfs_size(path)
        .map(|(fs_type, size_bytes, inodes)| WorkspaceFs {
            fs_type,
            size_bytes,
            inodes,
        })
        .unwrap_or_default()
}

/// Fills the fields that come from `/proc/self/status`.
pub fn apply_status(status: &str, a: &mut Attestation) {
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let first = value.split_whitespace().next().unwrap_or("");
        let hex = || u64::from_str_radix(first, 16).unwrap_or(0);
        match key {
            "Uid" => a.uid = first.parse().unwrap_or(0),
            "Gid" => a.gid = first.parse().unwrap_or(0),
            "NoNewPrivs" => a.no_new_privs = first == "1",
            "Seccomp" => a.seccomp_mode = first.parse().unwrap_or(0),
            "Seccomp_filters" => a.seccomp_filters = first.parse().unwrap_or(0),
            "CapInh" => a.cap_inh = hex(),
            "CapPrm" => a.cap_prm = hex(),
            "CapEff" => a.cap_eff = hex(),
            "CapBnd" => a.cap_bnd = hex(),
            "CapAmb" => a.cap_amb = hex(),
            _ => {}
        }
    }
}

/// Inode number of `/proc/self/ns/<name>` (0 when unreadable).
fn ns_inode(name: &str) -> u64 {
    fs::read_link(format!("/proc/self/ns/{name}"))
        .ok()
        .and_then(|t| parse_ns_link(&t.to_string_lossy()))
        .unwrap_or(0)
}

/// `user:[4026531837]` → 4026531837.
pub fn parse_ns_link(target: &str) -> Option<u64> {
    let (_, rest) = target.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

/// Interface names from `/proc/net/dev` (two header lines, then `name: counters…`).
pub fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':'))
        .map(|(name, _)| name.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Landlock is enforced when opening `path` (our own `comm`, which we may normally write)
/// for writing is refused with EACCES. The file is never written.
pub fn landlock_probe(path: &Path) -> bool {
    match fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => false,
        Err(e) => is_eacces(&e),
    }
}

fn is_eacces(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EACCES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_fields() {
        let status = "Name:\tbulkhead-worker\nUid:\t1000\t1000\t1000\t1000\n\
                      Gid:\t1001\t1001\t1001\t1001\nCapInh:\t0000000000000000\n\
                      CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
                      CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n\
                      NoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n";
        let mut a = Attestation::default();
        apply_status(status, &mut a);
        assert_eq!((a.uid, a.gid), (1000, 1001));
        assert!(a.no_new_privs);
        assert_eq!((a.seccomp_mode, a.seccomp_filters), (2, 1));
        assert_eq!(a.cap_bnd, 0x1ff_ffff_ffff);
        assert_eq!(a.cap_eff, 0);
    }

    #[test]
    fn workspace_fs_reads_statfs_and_is_zero_when_missing() {
        let root = workspace_fs(c"/");
        assert_ne!(root.fs_type, 0);
        assert!(root.size_bytes > 0);
        assert_eq!(
            workspace_fs(c"/nonexistent-bulkhead-path"),
            WorkspaceFs::default()
        );
    }

    #[test]
    fn parses_ns_links() {
        assert_eq!(parse_ns_link("user:[4026531837]"), Some(4026531837));
        assert_eq!(parse_ns_link("cgroup:[4026531835]"), Some(4026531835));
        assert_eq!(parse_ns_link("garbage"), None);
        assert_eq!(parse_ns_link("net:[12"), None);
    }

    #[test]
    fn parses_net_dev() {
        let text = "Inter-|   Receive                            |  Transmit\n \
                    face |bytes    packets errs drop fifo frame compressed multicast|bytes\n    \
                    lo:       0       0    0    0    0     0          0         0        0\n  \
                    eth0: 1234 5 0 0 0 0 0 0 99\n";
        assert_eq!(
            parse_net_dev(text),
            vec!["lo".to_string(), "eth0".to_string()]
        );
    }

    #[test]
    fn landlock_probe_of_a_missing_file_is_not_enforcement() {
        assert!(!landlock_probe(Path::new("/nonexistent/bulkhead/comm")));
    }
}
