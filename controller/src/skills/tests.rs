use std::os::unix::fs::PermissionsExt;

use super::*;

fn write_skill(root: &Path, id: &str, manifest: &str, entry: Option<(&str, u32)>) {
    let d = root.join(id);
    fs::create_dir_all(&d).unwrap();
    fs::write(d.join(MANIFEST), manifest).unwrap();
    if let Some((name, mode)) = entry {
        let p = d.join(name);
        fs::write(&p, "#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
}

const GOOD: &str = r#"+++
name = "Hello"
description = "Says hello"
credentials = ["github", "github"]
network = ["API.example.com", "pkg.test:8080"]
timeout = 5
workspace = "read"
[limits]
memory = "64M"
pids = 32
[input_schema]
type = "object"
required = ["who"]
properties.who = { type = "string" }
+++
Call it with {"who": "world"}.
"#;

#[test]
fn skills_parses_a_full_manifest() {
    let t = tempfile::tempdir().unwrap();
    write_skill(t.path(), "hello", GOOD, Some(("execute.sh", 0o644)));
    let reg = Registry::new(t.path());
    let s = reg.load("hello").unwrap();
    assert_eq!(s.name, "Hello");
    assert_eq!(s.credentials, vec!["github"]);
    assert_eq!(s.network.len(), 2);
    assert!(
        s.network.iter().any(|n| n == "api.example.com"),
        "{:?}",
        s.network
    );
    assert_eq!(s.timeout, Duration::from_secs(5));
    assert_eq!(s.workspace, WorkspaceAccess::Read);
    assert_eq!(s.limits.memory_bytes, Some(64 << 20));
    assert_eq!(s.limits.pids, Some(32));
    assert_eq!(s.entry.interpreter, Some("/bin/sh"));
    assert_eq!(s.input_schema["required"][0], "who");
    assert_eq!(s.usage, "Call it with {\"who\": \"world\"}.");
}

#[test]
fn skills_malformed_are_listed_with_a_reason() {
    let t = tempfile::tempdir().unwrap();
    write_skill(t.path(), "ok", GOOD, Some(("execute", 0o755)));
    write_skill(
        t.path(),
        "nofence",
        "name = \"x\"\n",
        Some(("execute.py", 0o644)),
    );
    write_skill(
        t.path(),
        "unknown-key",
        "+++\nname = \"x\"\ndescription = \"y\"\nshell = true\n+++\n",
        Some(("execute.js", 0o644)),
    );
    write_skill(
        t.path(),
        "noentry",
        "+++\nname = \"x\"\ndescription = \"y\"\n+++\n",
        None,
    );
    write_skill(
        t.path(),
        "notexec",
        "+++\nname = \"x\"\ndescription = \"y\"\n+++\n",
        Some(("execute", 0o644)),
    );
    write_skill(
        t.path(),
        "badnet",
        "+++\nname = \"x\"\ndescription = \"y\"\nnetwork = \"all\"\n+++\n",
        Some(("execute.sh", 0o644)),
    );
    write_skill(
        t.path(),
        "Bad.Id",
        "+++\nname = \"x\"\ndescription = \"y\"\n+++\n",
        Some(("execute.sh", 0o644)),
    );
    let list = Registry::new(t.path()).list().unwrap();
    let get = |id: &str| {
        list.iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("{id} listed"))
            .skill
            .clone()
    };
    assert!(get("ok").is_ok());
    assert!(get("nofence").unwrap_err().contains("+++"));
    assert!(get("unknown-key").unwrap_err().contains("shell"));
    assert!(get("noentry").unwrap_err().contains("no entry point"));
    assert!(get("notexec").unwrap_err().contains("not executable"));
    assert!(get("badnet").unwrap_err().contains("network"));
    assert!(get("Bad.Id").unwrap_err().contains("invalid id"));
}

#[test]
fn skills_bad_ids_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let reg = Registry::new(t.path());
    for id in ["../x", "", "A", "-a", "a/b", ".hidden"] {
        assert!(
            matches!(reg.load(id), Err(Error::Invalid(_))),
            "{id:?} refused"
        );
    }
}

#[test]
fn skills_env_names() {
    assert_eq!(run::env_name("github", "token"), "GITHUB_TOKEN");
    assert_eq!(run::env_name("my.db-prod", "pass"), "MY_DB_PROD_PASS");
}

#[test]
fn skills_files_are_collected_without_symlinks() {
    let t = tempfile::tempdir().unwrap();
    write_skill(t.path(), "s", GOOD, Some(("execute.sh", 0o644)));
    fs::create_dir(t.path().join("s/lib")).unwrap();
    fs::write(t.path().join("s/lib/x.txt"), "x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("s/leak")).unwrap();
    let s = Registry::new(t.path()).load("s").unwrap();
    let files = skill_files(&s).unwrap();
    let names: Vec<&str> = files.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(names, vec!["SKILL.md", "execute.sh", "lib/x.txt"]);
    assert_eq!(files[1].2, 0o755);
}
