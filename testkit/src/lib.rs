//! Test helpers every crate of bulkhead shares, for its tests only.
//!
//! Tests that need what a host may not give (root, namespaces, a cgroup hierarchy, a tool on
//! `PATH`) skip with a printed reason; with `BULKHEAD_PRIV_TESTS_MUST_RUN=1` (set in `.ci/run`)
//! a skip is a failure instead, so CI cannot pass by skipping. [`skip`] is that rule, written
//! once for the launcher's tests, the controller's unit tests and the integration suite.
#![forbid(unsafe_code)]

use std::fmt::Display;

/// The environment variable that turns a skip into a failure when it is `1`.
pub const MUST_RUN_VAR: &str = "BULKHEAD_PRIV_TESTS_MUST_RUN";

/// Whether privileged tests must run (a skip is then a failure): `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.
pub fn must_run() -> bool {
    must_run_given(std::env::var_os(MUST_RUN_VAR).as_deref())
}

fn must_run_given(v: Option<&std::ffi::OsStr>) -> bool {
    v.is_some_and(|v| v == "1")
}

/// The text of a skip of `test` because of `why`.
fn skip_line(test: &str, why: &dyn Display) -> String {
    format!("SKIP {test}: {why}")
}

/// The message a test fails with when it could not run under `BULKHEAD_PRIV_TESTS_MUST_RUN=1`.
fn must_run_message(test: &str, why: &dyn Display) -> String {
    format!("{test}: {MUST_RUN_VAR}=1 but {why}")
}

/// Skips `test` because of `why`: prints `SKIP <test>: <why>` to stderr; panics instead
/// under `BULKHEAD_PRIV_TESTS_MUST_RUN=1`. The caller returns after it.
pub fn skip_as(test: &str, why: impl Display) {
    if must_run() {
        panic!("{}", must_run_message(test, &why));
    }
    eprintln!("{}", skip_line(test, &why));
}

/// [`skip_as`] for the running test, named by its thread (the test harness names each
/// test's thread after the test).
pub fn skip(why: impl Display) {
    skip_as(&current_test(), why);
}

/// The name of the running test, or `this test` outside the test harness's threads.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("this test")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn only_one_means_must_run() {
        assert!(must_run_given(Some(OsStr::new("1"))));
        for v in ["", "0", "yes", "true", " 1"] {
            assert!(!must_run_given(Some(OsStr::new(v))), "{v:?}");
        }
        assert!(!must_run_given(None));
    }

    #[test]
    fn messages_name_the_test_and_the_reason() {
        assert_eq!(skip_line("t", &"no root"), "SKIP t: no root");
        assert_eq!(
            must_run_message("t", &"no root"),
            "t: BULKHEAD_PRIV_TESTS_MUST_RUN=1 but no root"
        );
        assert!(current_test().ends_with("messages_name_the_test_and_the_reason"));
    }

    #[test]
    fn a_skip_is_a_failure_when_tests_must_run() {
        let r = std::panic::catch_unwind(|| skip_as("t", "no root"));
        assert_eq!(r.is_err(), must_run());
        if let Err(p) = r {
            let msg = p.downcast_ref::<String>().cloned().unwrap_or_default();
            assert_eq!(msg, "t: BULKHEAD_PRIV_TESTS_MUST_RUN=1 but no root");
        }
    }
}
