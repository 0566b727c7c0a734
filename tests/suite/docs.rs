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
    let code = numbered(&repo("launcher/src/lib.rs"), "//! ");
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
    assert_eq!(code, expected, "launcher/src/lib.rs doc vs SetupStep names");
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
