//! The launcher's doc, its audit map (docs/launcher-audit.md) and the setup-step names stay
//! in step; the audit map lists every file that runs with privilege.

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

/// The launcher sequence's source of truth (gen-docs builds bulkhead-launch(8) from it).
const AUDIT_MAP: &str = "docs/launcher-audit.md";

#[test]
fn launcher_sequence_matches_the_audit_map_and_step_names() {
    let code = numbered(&repo("launcher/src/lib.rs"), "//! ");
    let audit = repo(AUDIT_MAP);
    let section = audit
        .split("<!-- launcher-sequence -->")
        .nth(1)
        .and_then(|s| s.split("<!-- /launcher-sequence -->").next())
        .expect("docs/launcher-audit.md has a <!-- launcher-sequence --> section");
    let doc = numbered(section, "");
    let expected: Vec<(usize, String)> = STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| (i + 1, s.name().to_string()))
        .collect();
    assert_eq!(code, expected, "launcher/src/lib.rs doc vs SetupStep names");
    assert_eq!(
        doc, expected,
        "docs/launcher-audit.md launcher sequence vs SetupStep names"
    );
    for (i, s) in STEPS.iter().enumerate() {
        assert_eq!(s.exit_code(), 80 + i as i32);
    }
}

/// The packaged unit (`ProtectSystem=strict`) leaves the packaged `id_registry` writable:
/// the setuid launcher runs in the unit's mount namespace, and a read-only registry would
/// refuse every new host id (EROFS).
#[test]
fn the_packaged_unit_lets_the_launcher_write_its_id_registry() {
    let unit = repo("packaging/systemd/bulkhead@.service");
    let conf = repo("packaging/launch.toml");
    let registry = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("id_registry"))
        .and_then(|v| v.split('"').nth(1))
        .expect("packaging/launch.toml sets id_registry")
        .to_string();
    let strict = unit.lines().any(|l| l.trim() == "ProtectSystem=strict");
    let writable: Vec<String> = unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ReadWritePaths="))
        .flat_map(|v| v.split_whitespace())
        .map(|p| {
            p.trim_start_matches(['-', '+'])
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    let covered = writable
        .iter()
        .any(|w| registry == *w || registry.starts_with(&format!("{w}/")));
    assert!(
        !strict || covered,
        "ProtectSystem=strict with ReadWritePaths {writable:?} leaves {registry} read-only"
    );
    // The unit's other writable path stays the state directory.
    assert!(
        writable.iter().any(|w| w == "/var/lib/bulkhead"),
        "{writable:?}"
    );
}

/// SECURITY.md says the launcher never signals a pid number (only its worker's pidfd): no
/// `kill(2)` in the code that runs with privilege (the worker, inside the sandbox, is not
/// part of it).
#[test]
fn the_launcher_signals_by_pidfd_only() {
    for file in [
        "main.rs",
        "lib.rs",
        "sys.rs",
        "cgroup.rs",
        "privileged.rs",
        "fs.rs",
        "landlock.rs",
    ] {
        let code = repo(&format!("launcher/src/{file}"));
        for banned in [
            "libc::kill(",
            "SYS_kill",
            "libc::killpg(",
            "SYS_tgkill",
            "SYS_tkill",
        ] {
            assert!(
                !code.contains(banned),
                "launcher/src/{file} calls {banned}: signal the worker through its pidfd"
            );
        }
    }
    let sys = repo("launcher/src/sys.rs");
    assert!(sys.contains("SYS_pidfd_send_signal") && sys.contains("CLONE_PIDFD"));
}

// The README fits on a page, and every relative link in the docs resolves.

/// The README fits on a page; the guides in `docs/` carry the rest.
const README_MAX_BYTES: usize = 15 * 1024;

#[test]
fn the_readme_fits_in_15_kib() {
    let len = repo("README.md").len();
    assert!(
        len <= README_MAX_BYTES,
        "README.md is {len} bytes, over {README_MAX_BYTES}: move the detail into a guide in docs/ and link it"
    );
}

/// Markdown files whose relative links must resolve: the README, SECURITY.md, docs/*.md.
fn doc_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("SECURITY.md")];
    let mut guides: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    guides.sort();
    files.extend(guides);
    files
}

/// Lines outside fenced code blocks, with inline code spans removed.
fn prose_lines(text: &str) -> Vec<String> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let mut kept = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 0 {
                kept.push_str(part);
            }
        }
        out.push(kept);
    }
    out
}

/// The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces to
/// hyphens, a repeated heading suffixed `-1`, `-2`, ….
fn anchors(text: &str) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut out = std::collections::HashSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let Some(title) = line.strip_prefix('#') else {
            continue;
        };
        if fenced {
            continue;
        }
        let title = title.trim_start_matches('#');
        if !title.starts_with(' ') {
            continue;
        }
        let slug: String = title
            .trim()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .flat_map(char::to_lowercase)
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every relative link `[text](target)` in `files` that names a missing file, or a heading
/// its Markdown target does not have: `file: target: what is wrong`.
fn broken_links(files: &[std::path::PathBuf]) -> Vec<String> {
    let mut broken = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let dir = file.parent().expect("a file has a parent");
        for line in prose_lines(&text) {
            let mut rest = line.as_str();
            while let Some(i) = rest.find("](") {
                rest = &rest[i + 2..];
                let Some(end) = rest.find(')') else { break };
                let target = rest[..end].trim();
                rest = &rest[end..];
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target, None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    dir.join(path)
                };
                if !dest.exists() {
                    broken.push(format!("{}: {target}: no such file", file.display()));
                    continue;
                }
                let Some(anchor) = anchor else { continue };
                if !dest.extension().is_some_and(|x| x == "md") {
                    continue;
                }
                let body = std::fs::read_to_string(&dest).unwrap_or_default();
                if !anchors(&body).contains(anchor) {
                    broken.push(format!(
                        "{}: {target}: {} has no heading #{anchor}",
                        file.display(),
                        dest.display()
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = doc_files(&root);
    assert!(files.len() > 3, "{files:?}");
    let broken = broken_links(&files);
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The checker itself finds a missing file and a missing heading, and is not fooled by code.
#[test]
fn the_link_checker_reports_missing_files_and_headings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docs")).unwrap();
    std::fs::write(
        dir.path().join("docs/guide.md"),
        "# A guide\n\n## The launcher's sequence\n\n```toml\n# not-a-heading\n```\n\n## Step\n\n## Step\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("README.md"),
        "[ok](docs/guide.md) [ok](docs/guide.md#the-launchers-sequence) [ok](docs/guide.md#step-1)\n\
         [ok](#top) [ok](https://example.invalid/x) `[in code](nowhere.md)`\n\
         [gone](docs/missing.md)\n\
         [bad anchor](docs/guide.md#not-a-heading)\n\n# Top\n",
    )
    .unwrap();
    let broken = broken_links(&[dir.path().join("README.md")]);
    assert_eq!(broken.len(), 2, "{broken:#?}");
    assert!(
        broken[0].ends_with("docs/missing.md: no such file"),
        "{}",
        broken[0]
    );
    assert!(
        broken[1].contains("has no heading #not-a-heading"),
        "{}",
        broken[1]
    );
    assert_eq!(
        anchors("## `Delegate=yes`, and cgroup v2\n")
            .into_iter()
            .collect::<Vec<_>>(),
        ["delegateyes-and-cgroup-v2"]
    );
}

/// The repository paths of first-party Rust files (`a/src/b.rs`, in backquotes) a map names.
fn mapped_files(map: &str) -> Vec<String> {
    map.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.ends_with(".rs") && t.contains("/src/") && !t.contains(' '))
        .map(str::to_string)
        .collect()
}

/// What is wrong with an audit map `map` given the privileged files `privileged` (repository
/// paths): a file it names that `exists` denies, a privileged file it does not name.
fn audit_map_problems(
    map: &str,
    privileged: &[String],
    exists: &dyn Fn(&str) -> bool,
) -> Vec<String> {
    let named = mapped_files(map);
    let mut problems: Vec<String> = named
        .iter()
        .filter(|f| !exists(f))
        .map(|f| format!("{AUDIT_MAP} names {f}, which does not exist"))
        .collect();
    problems.extend(
        privileged
            .iter()
            .filter(|f| !named.contains(f))
            .map(|f| format!("{f} runs with privilege but {AUDIT_MAP} does not list it")),
    );
    problems
}

/// The files `scripts/privileged-lines` counts: those cargo's dep-info lists for the built
/// `bulkhead-launch`.
fn privileged_files() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let depfile = bulkhead_tests::bin_dir().join("bulkhead-launch.d");
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/privileged-lines"))
        .arg("--list")
        .arg("--depfile")
        .arg(&depfile)
        .output()
        .expect("run python3 scripts/privileged-lines");
    assert!(
        out.status.success(),
        "scripts/privileged-lines --list failed (build bulkhead-launch first): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        files.iter().any(|f| f == "launcher/src/lib.rs"),
        "{files:?}"
    );
    files
}

#[test]
fn the_audit_map_lists_every_privileged_file_and_only_real_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let map = repo(AUDIT_MAP);
    let problems = audit_map_problems(&map, &privileged_files(), &|f| root.join(f).is_file());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_audit_map_check_catches_a_missing_and_a_made_up_file() {
    let privileged = vec![
        "launcher/src/lib.rs".to_string(),
        "launcher/src/sys.rs".to_string(),
    ];
    let exists = |f: &str| f != "launcher/src/gone.rs";
    let map = "| `launcher/src/lib.rs` | the sequence |\n| `launcher/src/gone.rs` | old |\n";
    assert_eq!(
        audit_map_problems(map, &privileged, &exists),
        vec![
            format!("{AUDIT_MAP} names launcher/src/gone.rs, which does not exist"),
            format!("launcher/src/sys.rs runs with privilege but {AUDIT_MAP} does not list it"),
        ]
    );
    let full = "`launcher/src/lib.rs` and `launcher/src/sys.rs`, `sys::ids`";
    assert!(audit_map_problems(full, &privileged, &exists).is_empty());
}

/// Runs `scripts/privileged-lines` with `args`: (exit code, stdout).
fn privileged_lines(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/privileged-lines"))
        .args(args)
        .output()
        .expect("run python3 scripts/privileged-lines");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// The counting rules of `scripts/privileged-lines` on a fixture checkout: comments, blank
/// lines and `#[cfg(test)]` items out, code with a trailing comment in, files outside the
/// checkout, under target/, tests/ or named build.rs not counted, and the limit enforced.
#[test]
fn the_privileged_line_count_follows_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    let lib = write(
        "a/src/lib.rs",
        r#"//! crate doc
/// item doc

pub fn f() -> &'static str { // code with a trailing comment
    "not // a comment { ("
}
/* a block
   comment */
/* outer /* nested */ still a comment */
#[cfg(test)]
mod tests {
    #[test]
    fn t() { let _ = "}"; }
}
pub const X: char = '{';
#[cfg(test)]
use std::fmt;
pub fn g<'a>(s: &'a str) -> &'a str { s }
"#,
    );
    let big = write("b/src/big.rs", "fn a() {}\nfn b() {}\nfn c() {}\n");
    let test = write("a/tests/t.rs", "fn t() {}\n");
    let build = write("a/build.rs", "fn main() {}\n");
    let generated = write("target/debug/build/a/out/gen.rs", "fn g() {}\n");
    let registry = dir.path().join("registry/libc/src/lib.rs");
    let listed = [&lib, &big, &test, &build, &generated, &registry];
    let depfile = write(
        "target/debug/bulkhead-launch.d",
        &format!(
            "{}: {}\n",
            root.join("target/debug/bulkhead-launch").display(),
            listed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let run = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--root".as_ref(),
            root.as_os_str(),
            "--depfile".as_ref(),
            depfile.as_os_str(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        privileged_lines(&args)
    };
    let (code, out) = run(&["--limit", "8"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "     5  a/src/lib.rs\n     3  b/src/big.rs\n     8  total (limit 8)\n"
    );
    let (code, out) = run(&["--limit", "7"]);
    assert_eq!(code, 1, "above the limit must fail: {out}");
    let (code, out) = run(&["--list"]);
    assert_eq!((code, out.as_str()), (0, "a/src/lib.rs\nb/src/big.rs\n"));
    // A dep-info file naming a file that is gone is stale: an error, not a smaller count.
    std::fs::remove_file(&big).unwrap();
    assert_eq!(run(&[]).0, 2);
}

/// A fixture workspace: `l` is `bulkhead-launch` (a binary), `n` its normal dependency and
/// `g` only its build-dependency; a dep-info file lists the three crates' sources, as cargo
/// writes it (it includes what the build script was built from). Returns (root, depfile).
fn fixture_workspace(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = dir.join("repo");
    let write = |rel: &str, text: &str| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };
    write(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"l\", \"n\", \"g\"]\n",
    );
    let pkg = |name: &str| {
        format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n")
    };
    write(
        "l/Cargo.toml",
        &format!(
            "{}\n[dependencies]\nn = {{ path = \"../n\" }}\n\n[build-dependencies]\ng = {{ path = \"../g\" }}\n",
            pkg("bulkhead-launch")
        ),
    );
    write("n/Cargo.toml", &pkg("n"));
    write("g/Cargo.toml", &pkg("g"));
    let listed = [
        write("l/src/main.rs", "fn main() {}\nfn a() {}\n"),
        write("n/src/lib.rs", "pub fn n() {}\n"),
        write("g/src/lib.rs", "pub fn g() {}\npub fn h() {}\n"),
    ];
    let depfile = write(
        "target/debug/bulkhead-launch.d",
        &format!(
            "{}: {}\n",
            root.join("target/debug/bulkhead-launch").display(),
            listed
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    (root, depfile)
}

/// A crate the launcher reaches only through [build-dependencies] (the seccomp generator)
/// never runs with privilege: it is not counted, though cargo's dep-info lists it.
#[test]
fn a_build_dependency_is_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (root, depfile) = fixture_workspace(dir.path());
    let (code, out) = privileged_lines(&[
        "--root".as_ref(),
        root.as_os_str(),
        "--depfile".as_ref(),
        depfile.as_os_str(),
        "--list".as_ref(),
    ]);
    assert_eq!((code, out.as_str()), (0, "l/src/main.rs\nn/src/lib.rs\n"));
}

/// `--budget N` (what `make test` runs while the count is above the 3,000 target): passes at
/// or below N, saying the target is not met yet, fails above N.
#[test]
fn the_budget_is_a_ratchet_that_names_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (root, depfile) = fixture_workspace(dir.path());
    let run = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "--root".as_ref(),
            root.as_os_str(),
            "--depfile".as_ref(),
            depfile.as_os_str(),
            "--quiet".as_ref(),
        ];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        privileged_lines(&args)
    };
    // 3 lines counted: l/src/main.rs (2) and n/src/lib.rs (1).
    let (code, out) = run(&["--limit", "2", "--budget", "3"]);
    assert_eq!(
        (code, out.as_str()),
        (
            0,
            "     3  total (budget 3, target 2)\ntarget 2 not yet met: 3\n"
        )
    );
    let (code, out) = run(&["--limit", "2", "--budget", "2"]);
    assert_eq!(code, 1, "above the budget must fail: {out}");
    let (code, out) = run(&["--limit", "3", "--budget", "3"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "     3  total (budget 3, target 3)\n")
    );
}
