//! bulkhead's sandbox policy: what a sandbox is allowed, as reviewed data.
//!
//! A change in this crate is the one diff a security reviewer reads: default limits and
//! ceilings ([`defaults`]), validation of the controller's request ([`spec`]), the
//! filesystem ([`mounts`]), the resource limits ([`rlimits`]), where writes may land
//! ([`landlock`]), and how the sandbox's cgroup is placed ([`cgroup`]). Planning here is pure;
//! the launcher applies it. Which syscalls are allowed is the crate beside this one,
//! `bulkhead-seccomp` (`policy/seccomp/`), which the launcher runs at build time only.
#![forbid(unsafe_code)]

pub mod cgroup;
pub mod defaults;
pub mod landlock;
pub mod launchconf;
pub mod mounts;
pub mod rlimits;
pub mod size;
pub mod spec;

pub use defaults::default_limits;
pub use launchconf::LaunchConfig;
pub use spec::{validate_spec, Caller, SpecError};
