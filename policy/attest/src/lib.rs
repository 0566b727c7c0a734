//! The attestation checks: what a sandbox reports from inside (its `Attestation`) against the
//! policy it was built from.
//!
//! The worker parses its own `/proc/self/mountinfo` and `/proc/self/limits` with
//! [`mounts::parse_mountinfo`] and [`rlimits::parse_proc_limits`]; the controller re-plans
//! the mounts and rlimits from the spec (`bulkhead-policy`) and refuses a sandbox for which
//! [`mounts::check_mounts`] or [`rlimits::check`] finds anything wrong. None of this runs
//! with privilege, so it is a crate apart from the policy the launcher links.
#![forbid(unsafe_code)]

pub mod mounts;
pub mod rlimits;
