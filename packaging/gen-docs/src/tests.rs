//! `man bulkhead` covers the whole CLI: every subcommand of `bulkhead::cli::command()` has its
//! page and every long flag it accepts is in that page, checked on the pages `run` writes.

use std::path::Path;

use super::run;

/// The text of a roff page as `man` shows it, near enough to search: roff's escaped hyphen
/// (`\-`) as `-`, font switches dropped.
fn plain(roff: &str) -> String {
    roff.replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
}

/// What is missing from the man pages under `man1`: one line per subcommand without a page
/// and per visible long flag absent from its command's page. `cmd` is walked as clap builds
/// it (global flags propagated, `help` subcommand off, as `clap_mangen::generate_to` does).
fn coverage_gaps(cmd: clap::Command, man1: &Path) -> Vec<String> {
    fn walk(cmd: &clap::Command, page: String, words: String, man1: &Path, gaps: &mut Vec<String>) {
        let path = man1.join(format!("{page}.1"));
        match std::fs::read_to_string(&path) {
            Err(e) => gaps.push(format!("no page for `{words}`: {}: {e}", path.display())),
            Ok(text) => {
                let text = plain(&text);
                for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                    if let Some(long) = arg.get_long() {
                        if !text.contains(&format!("--{long}")) {
                            gaps.push(format!("{page}.1 does not mention --{long}"));
                        }
                    }
                }
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let name = sub.get_name();
            walk(
                sub,
                format!("{page}-{name}"),
                format!("{words} {name}"),
                man1,
                gaps,
            );
        }
    }
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut gaps = Vec::new();
    let name = cmd.get_name().to_string();
    walk(&cmd, name.clone(), name, man1, &mut gaps);
    gaps
}

#[test]
fn man_pages_cover_every_subcommand_and_long_flag() {
    let out = tempfile::tempdir().expect("tempdir");
    run(out.path()).expect("bulkhead-gen-docs");
    let man1 = out.path().join("man/man1");
    let gaps = coverage_gaps(bulkhead::cli::command(), &man1);
    assert!(gaps.is_empty(), "man pages miss:\n{}", gaps.join("\n"));

    // The walk really reaches the leaves: nested subcommands and their own flags.
    let cmd = bulkhead::cli::command();
    let nested = cmd
        .get_subcommands()
        .flat_map(|s| {
            s.get_subcommands()
                .map(move |c| format!("bulkhead-{}-{}.1", s.get_name(), c.get_name()))
        })
        .collect::<Vec<_>>();
    assert!(nested.len() >= 10, "too few nested subcommands: {nested:?}");
    for page in &nested {
        assert!(man1.join(page).is_file(), "{page} missing");
    }
    let top = plain(&std::fs::read_to_string(man1.join("bulkhead.1")).expect("bulkhead.1"));
    assert!(top.contains("--state-dir"), "bulkhead.1 lacks --state-dir");
    for sec in ["ENVIRONMENT", "EXIT STATUS", "STATE DIRECTORY"] {
        assert!(top.contains(sec), "bulkhead.1 lacks {sec}");
    }
}

#[test]
fn coverage_check_names_a_missing_page_and_a_missing_flag() {
    let out = tempfile::tempdir().expect("tempdir");
    run(out.path()).expect("bulkhead-gen-docs");
    let man1 = out.path().join("man/man1");

    // Take the page of one nested subcommand away, and one long flag out of another page.
    let cmd = bulkhead::cli::command();
    let ws = cmd
        .find_subcommand("workspace")
        .expect("workspace subcommand");
    let first = ws.get_subcommands().next().expect("a workspace subcommand");
    let gone = format!("bulkhead-workspace-{}.1", first.get_name());
    std::fs::remove_file(man1.join(&gone)).expect("remove page");
    let top = std::fs::read_to_string(man1.join("bulkhead.1")).expect("bulkhead.1");
    let stripped = top.replace("\\-\\-state\\-dir", "\\-\\-elsewhere");
    assert_ne!(
        stripped, top,
        "bulkhead.1 spells --state-dir differently than expected"
    );
    std::fs::write(man1.join("bulkhead.1"), stripped).expect("write page");

    let gaps = coverage_gaps(cmd.clone(), &man1);
    assert!(
        gaps.iter().any(|g| g.starts_with(&format!(
            "no page for `bulkhead workspace {}`",
            first.get_name()
        ))),
        "{gaps:?}"
    );
    assert!(
        gaps.iter()
            .any(|g| g == "bulkhead.1 does not mention --state-dir"),
        "{gaps:?}"
    );
}
