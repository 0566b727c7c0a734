//! Step 11: landlock, from `bulkhead_policy::landlock`.

use bulkhead_policy::landlock::{Grant, MAX_ABI, MIN_ABI, RULES, SCOPE_MIN_ABI};
use bulkhead_wire::{SetupError, SetupStep};
use landlock::{
    AccessFs, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

fn fail(path: &str, detail: String) -> SetupError {
    crate::plain(SetupStep::Landlock, path, detail)
}

fn abi_of(v: u32) -> ABI {
    match v.min(MAX_ABI) {
        0 | 1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        _ => ABI::V6,
    }
}

/// Restricts writes to the policy's paths and, where the kernel has them, scopes signals and
/// abstract unix sockets. `kernel_abi` was read before any setup. Fails unless enforced.
pub fn apply(kernel_abi: u32) -> Result<(), SetupError> {
    if kernel_abi < MIN_ABI {
        return Err(fail(
            "",
            format!(
                "the kernel offers landlock ABI {kernel_abi}, bulkhead needs at least {MIN_ABI}"
            ),
        ));
    }
    let abi = abi_of(kernel_abi);
    let handled = AccessFs::from_write(abi);
    let tree: BitFlags<AccessFs> = handled & !(AccessFs::MakeChar | AccessFs::MakeBlock);
    let device: BitFlags<AccessFs> =
        handled & (AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev);
    let e = |what: &str, err: landlock::RulesetError| fail("", format!("{what}: {err}"));
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled)
        .map_err(|x| e("handle access", x))?;
    if kernel_abi >= SCOPE_MIN_ABI {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|x| e("scope", x))?;
    }
    let mut created = ruleset.create().map_err(|x| e("create ruleset", x))?;
    for rule in RULES {
        let access = match rule.grant {
            Grant::Tree => tree,
            Grant::Device => device,
        };
        let fd =
            PathFd::new(rule.path).map_err(|x| fail(rule.path, format!("open rule path: {x}")))?;
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|x| fail(rule.path, format!("add rule: {x}")))?;
    }
    let status = created.restrict_self().map_err(|x| e("restrict_self", x))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        other => Err(fail(
            "",
            format!("landlock is not fully enforced ({other:?})"),
        )),
    }
}
