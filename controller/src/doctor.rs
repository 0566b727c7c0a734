//! `bulkhead doctor`: what the kernel gives, layer by layer, then a real trial sandbox.

use std::path::Path;

use serde::Serialize;

use crate::platform::Platform;
use crate::sandbox::{find_launcher, Sandbox};

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Layer name.
    pub layer: String,
    /// Available and working.
    pub ok: bool,
    /// Whether bulkhead refuses to run without it.
    pub required: bool,
    /// Details or why it is missing.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every required layer is ok.
    pub ok: bool,
    /// "privileged" (root), "setuid" (an unprivileged caller of a setuid-root launcher) or
    /// "rootless".
    pub mode: String,
    /// Checks in order.
    pub checks: Vec<Check>,
}

fn check(layer: &str, ok: bool, required: bool, detail: impl Into<String>) -> Check {
    Check {
        layer: layer.into(),
        ok,
        required,
        detail: detail.into(),
    }
}

fn read(p: &str) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Runs every check. `platform` is used for the trial sandbox's scratch workspace.
pub fn run(platform: &Platform) -> Report {
    let launcher = find_launcher();
    let privileged = launcher
        .as_ref()
        .is_ok_and(|l| crate::platform::launcher_privileged(l));
    let mut checks = Vec::new();
    let max_userns = read("/proc/sys/user/max_user_namespaces")
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(0);
    let unpriv = read("/proc/sys/kernel/unprivileged_userns_clone");
    let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let userns_ok = max_userns > 0
        && (privileged || (unpriv.as_deref() != Some("0") && apparmor.as_deref() != Some("1")));
    checks.push(check(
        "user namespace",
        userns_ok,
        true,
        if userns_ok {
            format!("user.max_user_namespaces = {max_userns}")
        } else if max_userns == 0 {
            "user.max_user_namespaces is 0: set it above 0".into()
        } else if apparmor.as_deref() == Some("1") {
            "kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 24.04's default): install the \
             launcher setuid-root (the .deb does) or run bulkhead as root"
                .into()
        } else {
            "kernel.unprivileged_userns_clone = 0: enable it, or run bulkhead as root".into()
        },
    ));
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let ok = Path::new(&format!("/proc/self/ns/{ns}")).exists();
        checks.push(check(
            &format!("{ns} namespace"),
            ok,
            true,
            if ok {
                "available".to_string()
            } else {
                format!("/proc/self/ns/{ns} missing: kernel built without it")
            },
        ));
    }
    let cg_inputs = (
        read("/proc/self/cgroup").unwrap_or_default(),
        read("/proc/self/mountinfo").unwrap_or_default(),
    );
    let inputs = bulkhead_policy::cgroup::CgroupInputs {
        proc_self_cgroup: &cg_inputs.0,
        mountinfo: &cg_inputs.1,
        root_prefix: Path::new("/"),
        io_device: None,
    };
    let reader = |p: &Path| std::fs::read_to_string(p);
    match bulkhead_policy::cgroup::plan(
        &inputs,
        "doctor-probe",
        &bulkhead_policy::default_limits(),
        &reader,
    ) {
        Ok(plan) => checks.push(check(
            "cgroup",
            true,
            true,
            format!(
                "{:?} with memory, pids, cpu under {}",
                plan.version,
                plan.dirs
                    .iter()
                    .map(|d| d
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
        Err(e) => checks.push(check("cgroup", false, true, e.to_string())),
    }
    let seccomp = read("/proc/sys/kernel/seccomp/actions_avail");
    let sec_ok = seccomp
        .as_deref()
        .is_some_and(|a| a.contains("errno") && a.contains("kill_process"));
    checks.push(check(
        "seccomp",
        sec_ok,
        true,
        seccomp
            .map(|a| format!("actions: {a}"))
            .unwrap_or_else(|| "kernel without seccomp filter support".into()),
    ));
    checks.push(match &launcher {
        Ok(p) => check("launcher", true, true, p.display().to_string()),
        Err(e) => check("launcher", false, true, e.to_string()),
    });
    if privileged {
        checks.push(match crate::platform::launch_rules() {
            Ok(r) if r.state_roots.is_empty() => check(
                "launch rules",
                true,
                true,
                format!(
                    "root caller: any state root and limit; host ids {}+{}",
                    r.host_id_start, r.host_id_count
                ),
            ),
            Ok(r) => check(
                "launch rules",
                true,
                true,
                format!(
                    "{}: state roots {}, host ids {}+{}, memory ceiling {} MiB",
                    bulkhead_policy::launchconf::LAUNCH_CONFIG_PATH,
                    r.state_roots.join(", "),
                    r.host_id_start,
                    r.host_id_count,
                    r.limits.memory_max.0 >> 20
                ),
            ),
            Err(e) => check("launch rules", false, true, e.to_string()),
        });
    }
    checks.push(disk_check(platform.state_dir()));
    // The real test: a sandbox with every layer, attested from inside.
    if let Ok(l) = &launcher {
        checks.extend(trial(platform, l));
    }
    let ok = checks.iter().all(|c| c.ok || !c.required);
    Report {
        ok,
        mode: if privileged && !nix::unistd::geteuid().is_root() {
            "setuid".into()
        } else if privileged {
            "privileged".into()
        } else {
            "rootless".into()
        },
        checks,
    }
}

/// Whether workspaces of this state directory can get a disk limit (`--disk`), and which
/// state filesystems would do where this one cannot. Optional: without it `--disk` is
/// refused, nothing else changes.
pub fn disk_check(state_dir: &Path) -> Check {
    let fs = crate::disk::fs_name(state_dir);
    match crate::disk::unsupported(state_dir) {
        None => check(
            "disk limits",
            true,
            false,
            format!(
                "the state directory is on {fs}: --disk gives a workspace its own ext4 \
                 filesystem (a preallocated image, loop-mounted on files/)"
            ),
        ),
        Some(why) => check(
            "disk limits",
            false,
            false,
            format!(
                "--disk is refused here: {why}. It works as root with the state directory on \
                 ext4, XFS, btrfs or tmpfs ({})",
                crate::disk::DOC_HINT
            ),
        ),
    }
}

fn trial(platform: &Platform, launcher: &Path) -> Vec<Check> {
    let id = format!("doctor-{}", std::process::id());
    let cfg = crate::platform::WorkspaceConfig::default();
    let ws = match platform.create_workspace(&id, cfg) {
        Ok(w) => w,
        Err(e) => {
            return vec![check(
                "trial sandbox",
                false,
                true,
                format!("cannot create a scratch workspace: {e}"),
            )]
        }
    };
    let mut out = Vec::new();
    match ws
        .launch_spec(&Default::default())
        .and_then(|spec| Sandbox::start(launcher, &spec))
    {
        Ok(sb) => {
            let a = sb.info().attestation.clone();
            out.push(check(
                "landlock",
                a.landlock_enforced,
                true,
                format!("ABI {}, enforced", a.landlock_abi),
            ));
            out.push(check(
                "seccomp filter",
                a.seccomp_mode == 2,
                true,
                format!("mode {}, {} filters", a.seccomp_mode, a.seccomp_filters),
            ));
            out.push(check(
                "capabilities",
                a.cap_eff == 0 && a.cap_bnd == 0,
                true,
                "all sets empty, no_new_privs set",
            ));
            out.push(check(
                "trial sandbox",
                true,
                true,
                format!(
                    "started with cgroup {:?}, every layer attested",
                    sb.info().cgroup_version
                ),
            ));
            let _ = sb.shutdown();
        }
        Err(e) => out.push(check("trial sandbox", false, true, e.to_string())),
    }
    let _ = platform.delete_workspace(&id);
    out
}
