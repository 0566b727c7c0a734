//! Filesystem escapes: the host's files and another workspace's are not visible, nothing
//! outside /workspace and /tmp is writable, and symlinks planted in the workspace are not
//! followed by the host side.

use super::*;

// ---- host files ----------------------------------------------------------------------------

/// Attack: read the host's secrets and look around its filesystem.
/// Expected: none of the host paths exist inside; `/` holds only the sandbox's own entries.
#[test]
fn host_files_are_not_visible() {
    let Some(sb) = Isolated::new("escape_a::host_files_are_not_visible") else {
        return;
    };
    let state = sb.env.state();
    let bins = bulkhead_tests::bin_dir();
    let script = format!(
        r#"
for p in /etc/shadow /etc/gshadow /etc/sudoers /etc/ssh /root /home /var /var/lib/bulkhead \
         /boot /srv /opt /mnt /media /run /sys /work '{state}' '{bins}'; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "PRESENT $p"; fi
done
cat /etc/shadow >/dev/null 2>&1 && echo "READABLE /etc/shadow"
ls /proc/1/root/ >/dev/null 2>&1 && echo "READABLE /proc/1/root"
cat /proc/1/root/etc/shadow >/dev/null 2>&1 && echo "READABLE /proc/1/root/etc/shadow"
ls /proc/1/cwd/ >/dev/null 2>&1 && echo "READABLE /proc/1/cwd"
echo "--- ls /"
ls -A /
"#,
        state = state.display(),
        bins = bins.display()
    );
    let out = sh_ok(&sb, &script);
    let (probes, listing) = out.split_once("--- ls /\n").expect("listing marker");
    let leaks: Vec<&str> = probes
        .lines()
        .filter(|l| l.starts_with("PRESENT") || l.starts_with("READABLE"))
        .collect();
    assert!(
        leaks.is_empty(),
        "host paths reachable from inside the sandbox: {leaks:#?}\nfull output:\n{out}"
    );

    let mut expected: BTreeSet<String> = ["dev", "etc", "proc", "tmp", "usr", "workspace"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for d in ["bin", "lib", "lib32", "lib64", "libx32", "sbin"] {
        if Path::new("/").join(d).symlink_metadata().is_ok() {
            expected.insert(d.to_string());
        }
    }
    let seen: BTreeSet<String> = listing.lines().map(str::to_string).collect();
    let extra: Vec<&String> = seen.difference(&expected).collect();
    let missing: Vec<&String> = expected.difference(&seen).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "`ls -A /` inside differs from the sandbox root: extra entries (host leak?) {extra:?}, \
         missing {missing:?}; seen {seen:?}"
    );
}

// ---- another workspace's files -------------------------------------------------------------

/// Attack: workspace `attack` looks for a secret that workspace `victim` wrote into its own
/// /workspace, by the victim's host path, through /workspace/.., and by searching everything.
/// Expected: not found anywhere; the attacker's /workspace is empty.
#[test]
fn other_workspace_files_are_not_visible() {
    let Some(sb) = Isolated::new("escape_a::other_workspace_files_are_not_visible") else {
        return;
    };
    let victim = "victim";
    sb.env.create(victim);
    let secret = unique("secret");
    let fname = format!("{}.txt", unique("victim-file"));
    let out = sb
        .env
        .sh(victim, &format!("echo {secret} > /workspace/{fname}"));
    assert!(
        out.status.success(),
        "the victim could not write its own file:\n{}",
        show(&out)
    );
    let vfiles = sb.env.files(victim);
    let on_host = std::fs::read_to_string(vfiles.join(&fname)).unwrap_or_default();
    assert!(
        on_host.contains(&secret),
        "setup: the victim's secret is not in its files dir on the host"
    );

    // The secret is assembled at run time so the script's own argv does not contain it.
    let (s1, s2) = secret.split_at(secret.len() / 2);
    let script = format!(
        r#"
s1='{s1}'; s2='{s2}'; secret="$s1$s2"
for e in $(ls -A /workspace); do echo "WS-ENTRY $e"; done
for p in '{vfiles}/{fname}' '{vfiles}' '{state}/workspaces/{victim}' /workspace/../{fname} \
         /workspace/../{victim} /workspace/../workspaces/{victim}/files/{fname} \
         /workspace/../../{victim}/files/{fname} /tmp/{fname} /dev/shm/{fname}; do
  if [ -e "$p" ] || [ -L "$p" ]; then echo "PRESENT $p"; fi
done
find / -path /proc -prune -o -name '{fname}' -print 2>/dev/null | sed 's/^/FOUND /'
grep -rls "$secret" /workspace /tmp /dev/shm /etc 2>/dev/null | sed 's/^/CONTAINS /'
exit 0
"#,
        vfiles = vfiles.display(),
        state = sb.env.state().display(),
    );
    let out = sh_ok(&sb, &script);
    let leaks: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        leaks.is_empty() && !out.contains(&secret),
        "workspace `attack` can see workspace `victim`'s data (or its /workspace is not empty): {leaks:#?}"
    );
    let mine: Vec<_> = std::fs::read_dir(sb.env.files(&sb.id))
        .expect("attacker files dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        mine.is_empty(),
        "the attacker's files dir on the host is not empty: {mine:?}"
    );
}

// ---- writes outside /workspace and /tmp ----------------------------------------------------

/// Attack: create files everywhere in the tree and write to host-affecting /proc files.
/// Expected: only /workspace, /tmp and /dev/shm are writable; the host's corresponding paths
/// (and the host's /tmp, where the launcher stages the root) gain no file of this test.
#[test]
fn writes_outside_workspace_and_tmp_fail() {
    let Some(sb) = Isolated::new("escape_a::writes_outside_workspace_and_tmp_fail") else {
        return;
    };
    let tag = unique("write");
    let denied = [
        "/",
        "/etc/",
        "/usr/",
        "/usr/bin/",
        "/usr/local/",
        "/dev/",
        "/dev/pts/",
        "/proc/",
        "/var/",
        "/lib/",
    ];
    let allowed = ["/workspace/", "/tmp/", "/dev/shm/"];
    let script = format!(
        r#"
for d in {all}; do
  if touch "${{d}}{tag}" 2>/dev/null; then echo "CREATED ${{d}}{tag}"; else echo "REFUSED ${{d}}{tag}"; fi
done
if mkdir /usr/local/d-{tag} 2>/dev/null; then echo "CREATED /usr/local/d-{tag}"; fi
if echo x >> /etc/passwd 2>/dev/null; then echo "WROTE /etc/passwd"; fi
if echo x > /proc/sys/kernel/hostname 2>/dev/null; then echo "WROTE /proc/sys/kernel/hostname"; fi
if echo h > /proc/sysrq-trigger 2>/dev/null; then echo "WROTE /proc/sysrq-trigger"; fi
exit 0
"#,
        all = denied
            .iter()
            .chain(allowed.iter())
            .copied()
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = sh_ok(&sb, &script);
    let created: BTreeSet<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("CREATED "))
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = allowed.iter().map(|d| format!("{d}{tag}")).collect();

    // Host side, checked before asserting so any leak is cleaned up too.
    let mut host_leaks = Vec::new();
    for d in denied.iter().chain(["/tmp/", "/dev/shm/"].iter()) {
        let p = PathBuf::from(format!("{d}{tag}"));
        if p.symlink_metadata().is_ok() {
            let _ = std::fs::remove_file(&p);
            host_leaks.push(p);
        }
    }
    let d = PathBuf::from(format!("/usr/local/d-{tag}"));
    if d.exists() {
        let _ = std::fs::remove_dir(&d);
        host_leaks.push(d);
    }
    find_names(Path::new("/tmp"), &tag, 3, &mut host_leaks);

    let unexpected: Vec<&String> = created.difference(&expected).collect();
    let bad_writes: Vec<&str> = out.lines().filter(|l| l.starts_with("WROTE")).collect();
    assert!(
        unexpected.is_empty(),
        "files created outside /workspace, /tmp and /dev/shm: {unexpected:?}\n{out}"
    );
    assert!(
        bad_writes.is_empty(),
        "writes outside the writable areas succeeded: {bad_writes:?}\n{out}"
    );
    assert_eq!(
        created, expected,
        "the writable areas are not writable:\n{out}"
    );
    assert!(
        host_leaks.is_empty(),
        "the attack's files appeared on the host: {host_leaks:?}"
    );
    assert!(
        sb.env.files(&sb.id).join(&tag).exists(),
        "/workspace/{tag} did not land in the workspace's files dir"
    );
    assert_absent(&PathBuf::from(format!("/tmp/{tag}")));
}

// ---- symlinks planted in the workspace -----------------------------------------------------

#[test]
fn planted_symlinks_are_not_followed() {
    let Some(sb) = Isolated::new("planted_symlinks_are_not_followed") else {
        return;
    };
    let files = sb.env.files(&sb.id);
    let meta = std::fs::metadata(&files).expect("files/");
    // The bait: a host directory with a canary, owned like files/ so only the symlink
    // check can stop the mount.
    let bait = sb.env.dir.path().join("bait");
    std::fs::create_dir(&bait).expect("bait dir");
    let canary = bait.join("canary.txt");
    let secret = marker("canary");
    std::fs::write(&canary, &secret).expect("canary");
    let chown = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid())).expect("chown bait");
    };
    chown(&bait);
    let listing = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .expect("read bait")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };

    // (a) files/ replaced by a symlink to the bait.
    let real = files.with_file_name("files.real");
    std::fs::rename(&files, &real).expect("move files/ aside");
    std::os::unix::fs::symlink(&bait, &files).expect("plant symlink");
    let out = sb.sh("echo pwned > /workspace/pwned; ls -la /workspace; cat /workspace/canary.txt");
    std::fs::remove_file(&files).expect("remove planted symlink");
    std::fs::rename(&real, &files).expect("restore files/");
    assert_eq!(
        code(&out),
        125,
        "exec through a symlinked files/ did not fail setup:\n{}",
        show_status(&out)
    );
    assert!(
        text(&out.stderr).contains("symlink"),
        "the error does not name the symlink:\n{}",
        show_status(&out)
    );
    assert!(
        !text(&out.stdout).contains(&secret),
        "the sandbox read the bait:\n{}",
        show_status(&out)
    );
    assert_eq!(listing(&bait), ["canary.txt"], "the bait directory changed");
    assert_eq!(std::fs::read_to_string(&canary).expect("canary"), secret);

    // (c) the workspace directory itself (a parent of files/) swapped for a symlink to a
    // moved copy: the mount must still refuse, and nothing may be written through it.
    let ws_dir = sb.env.state().join("workspaces").join(&sb.id);
    let moved = sb.env.dir.path().join("moved-ws");
    std::fs::rename(&ws_dir, &moved).expect("move the workspace aside");
    std::os::unix::fs::symlink(&moved, &ws_dir).expect("plant workspace symlink");
    let out = sb.sh("echo pwned > /workspace/pwned-c");
    std::fs::remove_file(&ws_dir).expect("remove workspace symlink");
    std::fs::rename(&moved, &ws_dir).expect("restore the workspace");
    assert_eq!(
        code(&out),
        125,
        "exec through a symlinked workspace dir did not fail setup:\n{}",
        show_status(&out)
    );
    assert!(
        text(&out.stderr).contains("symlink"),
        "the error does not name the symlink:\n{}",
        show_status(&out)
    );
    assert!(
        !files.join("pwned-c").exists(),
        "the sandbox wrote through the symlinked workspace dir"
    );

    // (b) symlinks inside files/ pointing at host paths.
    std::os::unix::fs::symlink(&canary, files.join("link")).expect("link");
    std::os::unix::fs::symlink(&bait, files.join("dirlink")).expect("dirlink");
    std::os::unix::fs::symlink("/etc/shadow", files.join("shadow")).expect("shadow link");
    std::os::unix::fs::symlink("/etc", files.join("etc")).expect("etc link");
    let out = sb.sh("cat /workspace/link; echo cat_link=$?; ls /workspace/dirlink/; echo ls_dirlink=$?; \
         cat /workspace/shadow; echo cat_shadow=$?; cat /workspace/etc/shadow; echo cat_etc_shadow=$?; \
         echo pwned > /workspace/link; echo write_link=$?; echo pwned > /workspace/dirlink/new; echo write_dirlink=$?; \
         ls /workspace/etc/");
    let so = text(&out.stdout);
    assert!(
        !so.contains(&secret),
        "the canary was read through a symlink:\n{}",
        show_status(&out)
    );
    assert!(
        !so.contains("canary.txt"),
        "the bait directory was listed through a symlink:\n{}",
        show_status(&out)
    );
    for k in [
        "cat_link",
        "ls_dirlink",
        "cat_shadow",
        "cat_etc_shadow",
        "write_link",
        "write_dirlink",
    ] {
        assert!(
            so.contains(&format!("{k}=")) && !so.contains(&format!("{k}=0\n")),
            "{k} succeeded:\n{}",
            show_status(&out)
        );
    }
    assert!(
        !so.contains("root:"),
        "host /etc/shadow content visible:\n{}",
        show_status(&out)
    );
    assert!(
        !so.lines().any(|l| l == "shadow"),
        "host /etc listed through the symlink:\n{}",
        show_status(&out)
    );
    assert_eq!(listing(&bait), ["canary.txt"], "the bait directory changed");
    assert_eq!(
        std::fs::read_to_string(&canary).expect("canary"),
        secret,
        "the canary was overwritten"
    );
}
