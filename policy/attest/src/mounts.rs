//! The sandbox's mount table, as it reports it (`/proc/self/mountinfo`, parsed by the worker),
//! against the plan it was built from (`bulkhead_policy::mounts::plan`, re-planned by the
//! controller).

use bulkhead_policy::mounts::{MountOp, Planned};
use bulkhead_shared::{MountSeen, MAX_ATTESTED_MOUNTS};

/// One mount the plan makes, as the sandbox should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected<'a> {
    path: &'a str,
    /// Filesystem type, where the plan decides it (a bind shows the host's).
    fstype: Option<&'static str>,
    /// `Some(ro)`: the mount must be read-only (`true`) or writable (`false`).
    readonly: Option<bool>,
    /// Absent only where the kernel lacks the path (a /proc entry to mask or lock).
    required: bool,
    /// The host's own mounts below it come along (a recursive bind), read-only.
    submounts: bool,
}

fn expected(plan: &[Planned]) -> Vec<Expected<'_>> {
    let e = |path, fstype, readonly, required, submounts| Expected {
        path,
        fstype,
        readonly,
        required,
        submounts,
    };
    let mut v = vec![e("/", Some("tmpfs"), Some(true), true, false)];
    for x in plan {
        v.push(match &x.op {
            MountOp::Dir { .. } | MountOp::Symlink { .. } | MountOp::File { .. } => continue,
            MountOp::Tmpfs { path, .. } => e(path, Some("tmpfs"), Some(false), true, false),
            MountOp::BindRo { path, dir, .. } => e(path, None, Some(true), true, *dir),
            MountOp::BindDev { path, .. } => e(path, None, None, true, false),
            MountOp::Proc { path } => e(path, Some("proc"), Some(false), true, false),
            MountOp::Devpts { path } => e(path, Some("devpts"), None, true, false),
            MountOp::ReadOnly { path } => e(path, None, Some(true), false, true),
            MountOp::Mask { path } => e(path, None, Some(true), false, false),
            MountOp::Workspace { path, writable } => e(path, None, Some(!*writable), true, false),
            MountOp::Extra { path, .. } => e(path, None, Some(true), true, false),
        });
    }
    v
}

fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Compares the mount table a sandbox reports (its `/proc/self/mountinfo`) with the plan it was
/// built from: every mount the plan makes is there (a /proc entry to mask or lock only where
/// the kernel has it), with the planned type and read-only flag, and nothing else is mounted
/// but the host's own mounts below a read-only recursive bind, read-only too. Returns what is
/// wrong.
pub fn check_mounts(seen: &[MountSeen], plan: &[Planned]) -> Vec<String> {
    let expected = expected(plan);
    let mut bad = Vec::new();
    if seen.len() >= MAX_ATTESTED_MOUNTS {
        bad.push(format!(
            "{} or more mounts reported, the plan makes {}",
            MAX_ATTESTED_MOUNTS,
            expected.len()
        ));
    }
    for (i, m) in seen.iter().enumerate() {
        if seen[..i].iter().any(|o| o.path == m.path) {
            bad.push(format!("{} is mounted twice", m.path));
            continue;
        }
        match expected.iter().find(|x| x.path == m.path) {
            Some(x) => {
                if let Some(t) = x.fstype {
                    if m.fstype != t {
                        bad.push(format!("{} is {}, the plan mounts {t}", m.path, m.fstype));
                    }
                }
                if let Some(ro) = x.readonly {
                    if m.readonly != ro {
                        let what = if ro { "read-only" } else { "writable" };
                        bad.push(format!("{} is not {what}", m.path));
                    }
                }
            }
            None => {
                let from_host = expected
                    .iter()
                    .any(|x| x.submounts && is_under(&m.path, x.path));
                if !from_host {
                    bad.push(format!(
                        "{} ({}) is mounted, the plan has no such mount",
                        m.path, m.fstype
                    ));
                } else if !m.readonly {
                    bad.push(format!(
                        "{} is a writable mount inside a read-only bind",
                        m.path
                    ));
                }
            }
        }
    }
    for x in expected.iter().filter(|x| x.required) {
        if !seen.iter().any(|m| m.path == x.path) {
            bad.push(format!("{} is not mounted", x.path));
        }
    }
    bad
}

/// Decodes the octal escapes (`\040` for a space) of a mountinfo path field.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/mountinfo` into at most [`MAX_ATTESTED_MOUNTS`] entries (malformed lines
/// are skipped).
pub fn parse_mountinfo(text: &str) -> Vec<MountSeen> {
    let mut out = Vec::new();
    for line in text.lines() {
        if out.len() >= MAX_ATTESTED_MOUNTS {
            break;
        }
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(point), Some(opts)) = (fields.get(4), fields.get(5)) else {
            continue;
        };
        let Some(fstype) = right.split(' ').next() else {
            continue;
        };
        out.push(MountSeen {
            path: unescape(point),
            fstype: fstype.to_string(),
            readonly: opts.split(',').any(|o| o == "ro"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_policy::default_limits;
    use bulkhead_policy::mounts::{plan, HostEntry};
    use bulkhead_shared::LaunchSpec;

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

    /// What a sandbox built exactly from `plan` reports (binds show the host's fstype).
    fn faithful(plan: &[Planned]) -> Vec<MountSeen> {
        expected(plan)
            .into_iter()
            .filter(|x| x.required || x.path == "/proc/keys")
            .map(|x| MountSeen {
                path: x.path.to_string(),
                fstype: x.fstype.unwrap_or("ext4").to_string(),
                readonly: x.readonly.unwrap_or(false),
            })
            .collect()
    }

    #[test]
    fn the_mount_table_of_a_faithful_sandbox_passes() {
        let plan = plan(&spec(), &|_| HostEntry::Missing);
        let seen = faithful(&plan);
        assert_eq!(check_mounts(&seen, &plan), Vec::<String>::new());
        // The host's own mounts under /usr come along with the recursive bind, read-only.
        let mut with_sub = seen.clone();
        with_sub.push(MountSeen {
            path: "/usr/local".into(),
            fstype: "xfs".into(),
            readonly: true,
        });
        assert!(check_mounts(&with_sub, &plan).is_empty());
    }

    #[test]
    fn every_deviation_from_the_plan_is_named() {
        let plan = plan(&spec(), &|_| HostEntry::Missing);
        let base = faithful(&plan);
        let find = |v: &[MountSeen], path: &str| v.iter().position(|m| m.path == path).unwrap();
        // The workspace read-only although writable was asked, /usr writable.
        let mut v = base.clone();
        let i = find(&v, "/workspace");
        v[i].readonly = true;
        let i = find(&v, "/usr");
        v[i].readonly = false;
        let bad = check_mounts(&v, &plan);
        assert!(
            bad.contains(&"/workspace is not writable".to_string()),
            "{bad:?}"
        );
        assert!(
            bad.contains(&"/usr is not read-only".to_string()),
            "{bad:?}"
        );
        // A host directory the plan never mounts, and a missing /proc.
        let mut v = base.clone();
        v.push(MountSeen {
            path: "/host".into(),
            fstype: "ext4".into(),
            readonly: false,
        });
        let i = find(&v, "/proc");
        v.remove(i);
        let bad = check_mounts(&v, &plan);
        assert!(
            bad.iter().any(|b| b.contains("/host (ext4) is mounted")),
            "{bad:?}"
        );
        assert!(bad.contains(&"/proc is not mounted".to_string()), "{bad:?}");
        // The wrong filesystem, a writable submount, a mount stacked twice, a root that is not
        // read-only.
        let mut v = base.clone();
        let i = find(&v, "/tmp");
        v[i].fstype = "ext4".into();
        v.push(MountSeen {
            path: "/usr/lib/x".into(),
            fstype: "tmpfs".into(),
            readonly: false,
        });
        let dup = v[find(&v, "/dev/null")].clone();
        v.push(dup);
        let i = find(&v, "/");
        v[i].readonly = false;
        let bad = check_mounts(&v, &plan);
        assert!(bad.iter().any(|b| b.contains("/tmp is ext4")), "{bad:?}");
        assert!(
            bad.iter().any(|b| b.contains("/usr/lib/x is a writable")),
            "{bad:?}"
        );
        assert!(
            bad.contains(&"/dev/null is mounted twice".to_string()),
            "{bad:?}"
        );
        assert!(bad.contains(&"/ is not read-only".to_string()), "{bad:?}");
        // A /proc mask that is there must be read-only; one that is not there is fine.
        let mut v = base.clone();
        let i = find(&v, "/proc/keys");
        v[i].readonly = false;
        assert_eq!(check_mounts(&v, &plan), vec!["/proc/keys is not read-only"]);
        v.remove(i);
        assert!(check_mounts(&v, &plan).is_empty());
    }

    #[test]
    fn mountinfo_lines_are_parsed_and_bounded() {
        let text = "\
100 99 0:50 / / ro,nosuid,nodev,relatime - tmpfs tmpfs ro,size=1024k,mode=755
101 100 254:0 /usr /usr ro,nosuid,nodev,relatime master:1 - ext4 /dev/vda rw
102 100 254:0 /srv/a\\040b /workspace rw,nosuid,nodev,relatime - ext4 /dev/vda rw
garbage line
";
        let seen = parse_mountinfo(text);
        assert_eq!(seen.len(), 3);
        assert_eq!(
            seen[0],
            MountSeen {
                path: "/".into(),
                fstype: "tmpfs".into(),
                readonly: true
            }
        );
        assert_eq!((seen[1].path.as_str(), seen[1].readonly), ("/usr", true));
        assert_eq!(
            (seen[2].path.as_str(), seen[2].readonly),
            ("/workspace", false)
        );
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/a\\9"), "/a\\9");
        let many = "1 1 0:1 / /x rw - tmpfs t rw\n".repeat(MAX_ATTESTED_MOUNTS + 5);
        assert_eq!(parse_mountinfo(&many).len(), MAX_ATTESTED_MOUNTS);
    }
}
