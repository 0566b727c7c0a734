//! The launcher's doc, the README and the setup-step names stay in step.

use bulkhead_shared::SetupStep;

const STEPS: [SetupStep; 13] = SetupStep::ALL;

/// `N. name: …` lines, in order.
fn numbered(text: &str, prefix: &str) -> Vec<(usize, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|l| {
            let (n, rest) = l.split_once(". ")?;
            let n: usize = n.trim().parse().ok()?;
            let name = rest.split_once(':')?.0.trim().to_string();
            Some((n, name))
        })
        .collect()
}

fn repo(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn launcher_sequence_matches_readme_and_step_names() {
    let code = numbered(&repo("launcher/src/main.rs"), "//! ");
    let readme = repo("README.md");
    let section = readme
        .split("<!-- launcher-sequence -->")
        .nth(1)
        .expect("README has a <!-- launcher-sequence --> section");
    let doc = numbered(section, "");
    let expected: Vec<(usize, String)> = STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| (i + 1, s.name().to_string()))
        .collect();
    assert_eq!(
        code, expected,
        "launcher/src/main.rs doc vs SetupStep names"
    );
    assert_eq!(doc, expected, "README launcher sequence vs SetupStep names");
    for (i, s) in STEPS.iter().enumerate() {
        assert_eq!(s.exit_code(), 80 + i as i32);
    }
}
