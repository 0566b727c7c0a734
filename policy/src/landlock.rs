//! Landlock rules: where a sandboxed process may write. Reads and execution are governed by
//! the mount plan (the sandbox only sees what is mounted); landlock makes sure that, whatever
//! a mount mistake exposed, writes land only in these places.

/// Lowest landlock ABI the launcher accepts; below it, setup fails ("not enforced" is an
/// error, never a silent downgrade).
pub const MIN_ABI: u32 = 1;

/// Highest ABI this policy knows; newer kernels are used at this level.
pub const MAX_ABI: u32 = 6;

/// The write rights granted beneath a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Create, write, remove, rename files, directories, symlinks, fifos and sockets
    /// (no device nodes).
    Tree,
    /// Write to and ioctl an existing device (no creation or removal).
    Device,
}

/// One rule with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Path inside the sandbox.
    pub path: &'static str,
    /// What is granted beneath it.
    pub grant: Grant,
    /// Why.
    pub reason: &'static str,
}

/// The rules. Everything not listed is read-only for the sandbox.
pub const RULES: &[Rule] = &[
    Rule {
        path: "/workspace",
        grant: Grant::Tree,
        reason: "the agent's files",
    },
    Rule {
        path: "/tmp",
        grant: Grant::Tree,
        reason: "scratch space (size-capped tmpfs)",
    },
    Rule {
        path: "/dev/shm",
        grant: Grant::Tree,
        reason: "POSIX shared memory (size-capped tmpfs)",
    },
    Rule {
        path: "/dev/null",
        grant: Grant::Device,
        reason: "discarding output",
    },
    Rule {
        path: "/dev/zero",
        grant: Grant::Device,
        reason: "programs open it read-write",
    },
    Rule {
        path: "/dev/full",
        grant: Grant::Device,
        reason: "programs open it read-write",
    },
    Rule {
        path: "/dev/random",
        grant: Grant::Device,
        reason: "programs open it read-write",
    },
    Rule {
        path: "/dev/urandom",
        grant: Grant::Device,
        reason: "programs open it read-write",
    },
    Rule {
        path: "/dev/pts",
        grant: Grant::Device,
        reason: "private pseudo-terminals (ptmx lives here)",
    },
];

/// Scopes applied where the kernel has them (ABI ≥ 6): no signals to, and no abstract unix
/// socket connections with, processes outside the sandbox.
pub const SCOPE_MIN_ABI: u32 = 6;

const _: () = {
    let mut i = 0;
    while i < RULES.len() {
        assert!(
            !RULES[i].reason.is_empty(),
            "every landlock rule needs a reason"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sandbox_paths_are_writable() {
        for r in RULES {
            assert!(
                r.path == "/workspace" || r.path == "/tmp" || r.path.starts_with("/dev/"),
                "{}",
                r.path
            );
            if r.grant == Grant::Tree {
                assert!(["/workspace", "/tmp", "/dev/shm"].contains(&r.path));
            }
        }
    }
}
