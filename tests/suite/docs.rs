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
