//! Validation of a [`LaunchSpec`]: the launcher runs this on every spec it receives, treating
//! the controller's request as untrusted input.

use std::fmt;

use bulkhead_wire::{validate_workspace_id, LaunchSpec, MAX_BINDS};

use crate::defaults::*;
use crate::launchconf::LaunchConfig;

/// Who is calling the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The launcher runs with privilege (root, setuid or file capabilities).
    pub privileged: bool,
    /// Real uid of the caller.
    pub uid: u32,
    /// Real gid of the caller.
    pub gid: u32,
}

/// A refused spec field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Field name.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub detail: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid launch spec field `{}`: {}",
            self.field, self.detail
        )
    }
}

impl std::error::Error for SpecError {}

fn err(field: &'static str, detail: impl Into<String>) -> Result<(), SpecError> {
    Err(SpecError {
        field,
        detail: detail.into(),
    })
}

/// Longest host path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// Checks an absolute, normalized host path: starts with `/`, no `.`/`..`/empty components,
/// no NUL, bounded length.
pub fn check_abs_path(field: &'static str, p: &str) -> Result<(), SpecError> {
    if p.len() > MAX_PATH_LEN {
        return err(field, format!("path is longer than {MAX_PATH_LEN} bytes"));
    }
    if !p.starts_with('/') {
        return err(field, format!("{p:?} is not an absolute path"));
    }
    if p.contains('\0') {
        return err(field, "path contains a NUL byte");
    }
    if p == "/" {
        return err(field, "the host root cannot be used");
    }
    for c in p[1..].split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return err(
                field,
                format!("{p:?} is not normalized (empty, '.' or '..' component)"),
            );
        }
    }
    Ok(())
}

fn check_range(field: &'static str, v: u64, lo: u64, hi: u64) -> Result<(), SpecError> {
    if v < lo || v > hi {
        return err(
            field,
            format!("{v} is outside the allowed range {lo}..={hi}"),
        );
    }
    Ok(())
}

/// Validates every field of `spec` for `caller`, within `rules` (the operator's
/// `launch.toml` for a privileged launcher; [`LaunchConfig::root_default`] otherwise).
pub fn validate_spec(
    spec: &LaunchSpec,
    caller: Caller,
    rules: &LaunchConfig,
) -> Result<(), SpecError> {
    if let Err(e) = validate_workspace_id(&spec.workspace_id) {
        return err("workspace_id", e.to_string());
    }
    check_abs_path("workspace_dir", &spec.workspace_dir)?;
    if caller.privileged && !rules.under_state_root(&spec.workspace_dir) {
        return err(
            "workspace_dir",
            format!(
                "{:?} is not under a state root of {} ({}): workspaces must live there",
                spec.workspace_dir,
                crate::launchconf::LAUNCH_CONFIG_PATH,
                rules.state_roots.join(", ")
            ),
        );
    }
    let h = &spec.hostname;
    if h.is_empty()
        || h.len() > 63
        || h.starts_with('-')
        || !h
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return err(
            "hostname",
            format!("{h:?} is not a hostname ([a-z0-9-]{{1,63}})"),
        );
    }
    if caller.privileged {
        if spec.host_uid == 0 || spec.host_gid == 0 {
            return err("host_uid", "a sandbox never runs as host root");
        }
        if spec.host_gid != spec.host_uid {
            return err(
                "host_gid",
                format!(
                    "{} differs from host_uid {}: a workspace's host uid and gid are one id",
                    spec.host_gid, spec.host_uid
                ),
            );
        }
        if !rules.in_host_id_range(spec.host_uid) || !rules.in_host_id_range(spec.host_gid) {
            return err(
                "host_uid",
                format!(
                    "{}:{} is outside the configured host id range {}..{}",
                    spec.host_uid,
                    spec.host_gid,
                    rules.host_id_start,
                    u64::from(rules.host_id_start) + u64::from(rules.host_id_count)
                ),
            );
        }
    } else if spec.host_uid != caller.uid || spec.host_gid != caller.gid {
        return err(
            "host_uid",
            format!(
                "a rootless launcher can only map the caller's own ids ({}:{}), not {}:{}",
                caller.uid, caller.gid, spec.host_uid, spec.host_gid
            ),
        );
    }
    check_binds(spec, caller, rules)?;
    let l = &spec.limits;
    let c = &rules.limits;
    check_range(
        "limits.memory_bytes",
        l.memory_bytes,
        MIN_MEMORY_BYTES,
        c.memory_max.0.min(MAX_MEMORY_BYTES),
    )?;
    check_range(
        "limits.swap_bytes",
        l.swap_bytes,
        0,
        c.swap_max.0.min(MAX_MEMORY_BYTES),
    )?;
    check_range(
        "limits.pids",
        l.pids.into(),
        MIN_PIDS.into(),
        c.pids_max.min(MAX_PIDS).into(),
    )?;
    check_range(
        "limits.cpu_weight",
        l.cpu_weight.into(),
        1,
        c.cpu_weight_max.min(10_000).into(),
    )?;
    if l.cpu_quota_us != 0 {
        check_range("limits.cpu_period_us", l.cpu_period_us, 1_000, 1_000_000)?;
        check_range("limits.cpu_quota_us", l.cpu_quota_us, 1_000, 1_000_000_000)?;
    }
    if let Some(max) = c.cpu_percent_max {
        // quota / period * 100 <= max, in integers.
        let within = l.cpu_quota_us != 0
            && u128::from(l.cpu_quota_us) * 100 <= u128::from(max) * u128::from(l.cpu_period_us);
        if !within {
            return err(
                "limits.cpu_quota_us",
                format!(
                    "{} us per {} us is above the ceiling of {max}% of one CPU (0 means no quota, which the ceiling refuses too)",
                    l.cpu_quota_us, l.cpu_period_us
                ),
            );
        }
    }
    check_range(
        "limits.tmp_bytes",
        l.tmp_bytes,
        1 << 20,
        c.tmp_max.0.min(MAX_TMPFS_BYTES),
    )?;
    check_range(
        "limits.shm_bytes",
        l.shm_bytes,
        1 << 20,
        c.shm_max.0.min(MAX_TMPFS_BYTES),
    )?;
    check_range(
        "limits.nofile",
        l.nofile.into(),
        64,
        c.nofile_max.min(MAX_NOFILE).into(),
    )?;
    check_range("limits.io_weight", l.io_weight.into(), 1, 10_000)?;
    let io = &l.io_max;
    for (field, v, min) in [
        ("limits.io_max.rbps", io.rbps, MIN_IO_BPS),
        ("limits.io_max.wbps", io.wbps, MIN_IO_BPS),
        ("limits.io_max.riops", io.riops, MIN_IO_IOPS),
        ("limits.io_max.wiops", io.wiops, MIN_IO_IOPS),
    ] {
        if v != 0 {
            check_range(field, v, min, u64::MAX >> 1)?;
        }
    }
    check_disk(l, c, spec.workspace_writable)
}

/// The disk and inode limits: none (0) unless the ceiling is set, else within it and
/// bulkhead's own bounds; inodes only with a disk limit (they are a property of the
/// workspace's own filesystem). A read-only `/workspace` (a skill's copy of itself) fills
/// nothing and needs no disk limit under a ceiling.
fn check_disk(
    l: &bulkhead_wire::Limits,
    c: &crate::launchconf::Ceilings,
    writable: bool,
) -> Result<(), SpecError> {
    if l.disk_bytes == 0 {
        if let (Some(max), true) = (c.disk_max, writable) {
            return err(
                "limits.disk_bytes",
                format!("no disk limit, but the launch rules' ceiling `disk_max` is {} bytes: give the workspace one (bulkhead workspace set ID --disk SIZE)", max.0),
            );
        }
        if l.inodes != 0 {
            return err(
                "limits.inodes",
                "an inode limit needs a disk limit (the workspace's own filesystem)",
            );
        }
        return Ok(());
    }
    check_range(
        "limits.disk_bytes",
        l.disk_bytes,
        MIN_DISK_BYTES,
        c.disk_max
            .map_or(MAX_DISK_BYTES, |m| m.0.min(MAX_DISK_BYTES)),
    )?;
    if l.inodes == 0 {
        if let Some(max) = c.inodes_max {
            return err(
                "limits.inodes",
                format!("no inode limit, but the launch rules' ceiling `inodes_max` is {max}: give the workspace one (bulkhead workspace set ID --disk SIZE --inodes N)"),
            );
        }
        return Ok(());
    }
    check_range(
        "limits.inodes",
        l.inodes,
        MIN_INODES,
        c.inodes_max.map_or(MAX_INODES, |m| m.min(MAX_INODES)),
    )
}

/// Whether `name` is a valid `/mnt/<name>` component.
fn bind_name_ok(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

fn check_binds(spec: &LaunchSpec, caller: Caller, rules: &LaunchConfig) -> Result<(), SpecError> {
    if spec.binds.len() > MAX_BINDS {
        return err(
            "binds",
            format!("{} binds, at most {MAX_BINDS}", spec.binds.len()),
        );
    }
    let mut seen = Vec::new();
    for b in &spec.binds {
        check_abs_path("binds.host", &b.host)?;
        match b.path.strip_prefix("/mnt/") {
            Some(name) if bind_name_ok(name) => {}
            _ => {
                return err(
                    "binds.path",
                    format!(
                        "{:?} is not /mnt/<name> with name [a-z0-9][a-z0-9_-]{{0,31}}",
                        b.path
                    ),
                )
            }
        }
        if seen.contains(&b.path) {
            return err("binds.path", format!("{:?} is bound twice", b.path));
        }
        seen.push(b.path.clone());
        if caller.privileged && !rules.state_roots.is_empty() {
            let under_root = rules.under_state_root(&b.host);
            let operator = rules.in_bind_paths(&b.host);
            if !under_root && !operator {
                return err(
                    "binds.host",
                    format!(
                        "{:?} is neither under a state root nor one of the bind_paths of {}",
                        b.host,
                        crate::launchconf::LAUNCH_CONFIG_PATH
                    ),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            workspace_id: "acme".into(),
            workspace_dir: "/var/lib/bulkhead/workspaces/acme/files".into(),
            workspace_writable: true,
            host_uid: 1000,
            host_gid: 1000,
            hostname: "acme".into(),
            limits: default_limits(),
            binds: vec![],
        }
    }
    const ROOTLESS: Caller = Caller {
        privileged: false,
        uid: 1000,
        gid: 1000,
    };
    const ROOT: Caller = Caller {
        privileged: true,
        uid: 0,
        gid: 0,
    };
    static ANY: std::sync::LazyLock<LaunchConfig> =
        std::sync::LazyLock::new(LaunchConfig::root_default);

    fn operator() -> LaunchConfig {
        LaunchConfig::parse(
            "allowed_users = [\"bulkhead\"]\nstate_roots = [\"/var/lib/bulkhead\"]\n\
             bind_paths = [\"/opt/tools\"]\n[limits]\nmemory_max = \"1G\"\npids_max = 512\n",
        )
        .unwrap()
    }
    const SETUID: Caller = Caller {
        privileged: true,
        uid: 1000,
        gid: 1000,
    };

    fn bind(host: &str, path: &str) -> bulkhead_wire::Bind {
        bulkhead_wire::Bind {
            host: host.into(),
            path: path.into(),
        }
    }

    #[test]
    fn disk_and_inode_limits_stay_under_their_ceilings() {
        let field =
            |t: &LaunchSpec, cfg: &LaunchConfig| validate_spec(t, SETUID, cfg).map_err(|e| e.field);
        let mut s = spec();
        s.host_uid = HOST_ID_RANGE_START + 1;
        s.host_gid = HOST_ID_RANGE_START + 1;
        // No ceiling: no limit is fine, a limit must be within bulkhead's bounds.
        let open = operator();
        assert_eq!(field(&s, &open), Ok(()));
        s.limits.disk_bytes = 1 << 20;
        assert_eq!(field(&s, &open), Err("limits.disk_bytes"));
        s.limits.disk_bytes = 64 << 20;
        assert_eq!(field(&s, &open), Ok(()));
        s.limits.inodes = 10;
        assert_eq!(field(&s, &open), Err("limits.inodes"));
        let mut t = spec();
        t.host_uid = s.host_uid;
        t.host_gid = s.host_gid;
        t.limits.inodes = 1000;
        assert_eq!(
            field(&t, &open),
            Err("limits.inodes"),
            "inodes without disk"
        );
        // Ceilings set: above them, and none at all, are refused.
        let cfg = LaunchConfig::parse(
            "allowed_users = [\"bulkhead\"]\nstate_roots = [\"/var/lib/bulkhead\"]\n\
             [limits]\ndisk_max = \"1G\"\ninodes_max = 100000\n",
        )
        .unwrap();
        s.limits.inodes = 100_000;
        s.limits.disk_bytes = 1 << 30;
        assert_eq!(field(&s, &cfg), Ok(()));
        s.limits.disk_bytes = (1 << 30) + 1;
        assert_eq!(field(&s, &cfg), Err("limits.disk_bytes"));
        s.limits.disk_bytes = 0;
        s.limits.inodes = 0;
        let e = validate_spec(&s, SETUID, &cfg).unwrap_err();
        assert_eq!(e.field, "limits.disk_bytes");
        assert!(e.detail.contains("--disk"), "{}", e.detail);
        // A read-only /workspace (a skill's own copy) fills nothing.
        let mut ro = s.clone();
        ro.workspace_writable = false;
        assert_eq!(field(&ro, &cfg), Ok(()));
        s.limits.inodes = 100_000;
        s.limits.disk_bytes = 64 << 20;
        s.limits.inodes = 100_001;
        assert_eq!(field(&s, &cfg), Err("limits.inodes"));
        s.limits.inodes = 0;
        assert_eq!(field(&s, &cfg), Err("limits.inodes"));
        // A root caller is bound by bulkhead's own bounds only.
        assert_eq!(
            validate_spec(&s, ROOT, &ANY).map_err(|e| e.field),
            Ok(()),
            "root"
        );
    }

    #[test]
    fn privileged_callers_stay_inside_the_operator_rules() {
        let cfg = operator();
        let mut s = spec();
        s.host_uid = HOST_ID_RANGE_START + 1;
        s.host_gid = HOST_ID_RANGE_START + 1;
        validate_spec(&s, SETUID, &cfg).unwrap();
        // Outside the state roots, through `..` or to another tree.
        for dir in [
            "/home/alice/ws",
            "/var/lib/bulkhead/../../etc",
            "/var/lib/bulkhead",
        ] {
            let mut t = s.clone();
            t.workspace_dir = dir.into();
            assert_eq!(
                validate_spec(&t, SETUID, &cfg).unwrap_err().field,
                "workspace_dir",
                "{dir}"
            );
        }
        // Above the ceilings.
        let mut t = s.clone();
        t.limits.memory_bytes = 2 << 30;
        assert_eq!(
            validate_spec(&t, SETUID, &cfg).unwrap_err().field,
            "limits.memory_bytes"
        );
        let mut t = s.clone();
        t.limits.pids = 513;
        assert_eq!(
            validate_spec(&t, SETUID, &cfg).unwrap_err().field,
            "limits.pids"
        );
        // Binds: /etc/shadow's directory is neither a state root nor a bind path.
        let mut t = s.clone();
        t.binds = vec![bind("/etc", "/mnt/etc")];
        assert_eq!(
            validate_spec(&t, SETUID, &cfg).unwrap_err().field,
            "binds.host"
        );
        let mut t = s.clone();
        t.binds = vec![
            bind("/opt/tools", "/mnt/tools"),
            bind("/var/lib/bulkhead/w/a/run/s", "/mnt/skill"),
        ];
        validate_spec(&t, SETUID, &cfg).unwrap();
        for path in [
            "/etc",
            "/mnt/",
            "/mnt/a/b",
            "/mnt/A",
            "/workspace",
            "/mnt/..",
        ] {
            let mut t = s.clone();
            t.binds = vec![bind("/opt/tools", path)];
            assert_eq!(
                validate_spec(&t, SETUID, &cfg).unwrap_err().field,
                "binds.path",
                "{path}"
            );
        }
        let mut t = s.clone();
        t.binds = vec![bind("/opt/tools", "/mnt/t"); 2];
        assert_eq!(
            validate_spec(&t, SETUID, &cfg).unwrap_err().field,
            "binds.path"
        );
        // CPU ceilings: weight, and a quota (none at all is above any quota ceiling).
        let cpu = LaunchConfig::parse(
            "allowed_users = [\"b\"]\nstate_roots = [\"/var/lib/bulkhead\"]\n\
             [limits]\ncpu_weight_max = 200\ncpu_percent_max = 150\n",
        )
        .unwrap();
        let mut t = s.clone();
        t.limits.cpu_weight = 201;
        t.limits.cpu_quota_us = 100_000;
        assert_eq!(
            validate_spec(&t, SETUID, &cpu).unwrap_err().field,
            "limits.cpu_weight"
        );
        t.limits.cpu_weight = 200;
        validate_spec(&t, SETUID, &cpu).unwrap();
        t.limits.cpu_quota_us = 150_000;
        validate_spec(&t, SETUID, &cpu).unwrap();
        t.limits.cpu_quota_us = 150_001;
        assert_eq!(
            validate_spec(&t, SETUID, &cpu).unwrap_err().field,
            "limits.cpu_quota_us"
        );
        t.limits.cpu_quota_us = 0;
        assert_eq!(
            validate_spec(&t, SETUID, &cpu).unwrap_err().field,
            "limits.cpu_quota_us"
        );
        // A host id outside the operator's range.
        let mut t = s.clone();
        t.host_uid = 1000;
        t.host_gid = 1000;
        assert_eq!(
            validate_spec(&t, SETUID, &cfg).unwrap_err().field,
            "host_uid"
        );
    }

    #[test]
    fn default_spec_is_valid_rootless() {
        validate_spec(&spec(), ROOTLESS, &ANY).unwrap();
    }

    #[test]
    fn privileged_needs_range_and_never_root() {
        let mut s = spec();
        assert_eq!(validate_spec(&s, ROOT, &ANY).unwrap_err().field, "host_uid");
        s.host_uid = HOST_ID_RANGE_START + 5;
        s.host_gid = HOST_ID_RANGE_START + 5;
        validate_spec(&s, ROOT, &ANY).unwrap();
        s.host_uid = 0;
        assert!(validate_spec(&s, ROOT, &ANY)
            .unwrap_err()
            .detail
            .contains("root"));
    }

    #[test]
    fn rootless_cannot_pick_other_ids() {
        let mut s = spec();
        s.host_uid = 0;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "host_uid"
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in [
            "relative",
            "/",
            "/a/../etc",
            "/a//b",
            "/a/./b",
            "/a/b/",
            "/a\0b",
        ] {
            let mut s = spec();
            s.workspace_dir = p.into();
            assert_eq!(
                validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
                "workspace_dir",
                "{p}"
            );
        }
    }

    #[test]
    fn limits_are_bounded() {
        let mut s = spec();
        s.limits.memory_bytes = 1;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "limits.memory_bytes"
        );
        let mut s = spec();
        s.limits.pids = u32::MAX;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "limits.pids"
        );
        let mut s = spec();
        s.limits.cpu_weight = 0;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "limits.cpu_weight"
        );
        let mut s = spec();
        s.limits.io_weight = 10_001;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "limits.io_weight"
        );
        let mut s = spec();
        s.limits.io_max.wbps = 1;
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "limits.io_max.wbps"
        );
        s.limits.io_max.wbps = 1 << 20;
        s.limits.io_max.riops = 100;
        validate_spec(&s, ROOTLESS, &ANY).unwrap();
    }

    #[test]
    fn bad_ids_and_hostnames_are_refused() {
        let mut s = spec();
        s.workspace_id = "../x".into();
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "workspace_id"
        );
        let mut s = spec();
        s.hostname = "a b".into();
        assert_eq!(
            validate_spec(&s, ROOTLESS, &ANY).unwrap_err().field,
            "hostname"
        );
    }
}
