//! `bulkhead memory index`: the workspace's notes (`MEMORY.md`, `memory/**/*.md`) and its
//! session transcripts indexed incrementally; hostile files (symlinks out of `files/`, made
//! on the host or inside the sandbox, oversized files) not indexed.

use std::fs;
use std::os::unix::fs::symlink;

use bulkhead::{Event, LockMode, Platform, PlatformConfig};
use bulkhead_tests::{ok_json, sandbox_or_skip, text, TestEnv};
use serde_json::Value;

const CANARY: &str = "zebracanary7781";

fn index(env: &TestEnv, ws: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--json", "memory", "index", ws];
    args.extend_from_slice(extra);
    ok_json(&env.bulkhead(&args))
}

fn counts(r: &Value) -> (u64, u64, u64) {
    (
        r["indexed"].as_u64().unwrap(),
        r["unchanged"].as_u64().unwrap(),
        r["removed"].as_u64().unwrap(),
    )
}

/// Sources of the hits for `q`.
/// Sources whose text holds the words of `q` (keyword mode: these tests are about what is
/// indexed, not about what a semantic neighbour would be).
fn sources(env: &TestEnv, ws: &str, q: &str) -> Vec<String> {
    let v = ok_json(&env.bulkhead(&["--json", "memory", "search", ws, q, "--mode", "keyword"]));
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| h["source"].as_str().unwrap().to_string())
        .collect()
}

fn skipped(r: &Value) -> Vec<(String, String)> {
    r["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["path"].as_str().unwrap().to_string(),
                s["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn notes_are_indexed_incrementally() {
    let env = TestEnv::new();
    env.create("acme");
    let files = env.files("acme");
    fs::write(
        files.join("MEMORY.md"),
        "# Facts\n\nThe staging database listens on port 5433.\n",
    )
    .unwrap();
    fs::create_dir_all(files.join("memory/notes/deep")).unwrap();
    fs::write(files.join("memory/a.md"), "Lunch is at noon on Fridays.\n").unwrap();
    fs::write(
        files.join("memory/notes/deep/b.md"),
        b"The backup key is in the \xff\xfe blue vault.\n",
    )
    .unwrap();
    fs::write(files.join("memory/ignored.txt"), "quokka never indexed\n").unwrap();
    fs::write(files.join("notes.md"), "wombat outside memory/\n").unwrap();

    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (3, 0, 0), "{r}");
    assert_eq!(
        sources(&env, "acme", "staging database port"),
        ["MEMORY.md"]
    );
    assert_eq!(sources(&env, "acme", "lunch Fridays"), ["memory/a.md"]);
    // Not UTF-8: read lossily.
    assert_eq!(
        sources(&env, "acme", "blue vault"),
        ["memory/notes/deep/b.md"]
    );
    assert!(sources(&env, "acme", "quokka").is_empty());
    assert!(sources(&env, "acme", "wombat").is_empty());

    // Nothing changed: nothing re-indexed.
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 3, 0), "{r}");

    // An edit replaces that file's chunks.
    fs::write(files.join("memory/a.md"), "Lunch moved to Thursdays.\n").unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (1, 2, 0), "{r}");
    assert!(sources(&env, "acme", "Fridays").is_empty());
    assert_eq!(sources(&env, "acme", "Thursdays"), ["memory/a.md"]);

    // A deleted file's chunks are gone.
    fs::remove_file(files.join("memory/notes/deep/b.md")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 2, 1), "{r}");
    assert!(sources(&env, "acme", "blue vault").is_empty());

    // Too large: skipped with a reason, and its old chunks dropped.
    let mut big = String::from("giraffe ");
    big.push_str(&"x".repeat(1 << 20));
    fs::write(files.join("memory/a.md"), big).unwrap();
    let r = index(&env, "acme", &[]);
    let sk = skipped(&r);
    assert!(
        sk.iter()
            .any(|(p, why)| p == "memory/a.md" && why.contains("too large")),
        "{r}"
    );
    assert!(sources(&env, "acme", "Thursdays").is_empty());
    assert!(sources(&env, "acme", "giraffe").is_empty());

    // The human output.
    let out = env.bulkhead(&["memory", "index", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("skipped\tmemory/a.md\ttoo large"));
}

#[test]
fn host_symlinks_out_of_files_are_not_followed() {
    let env = TestEnv::new();
    env.create("acme");
    env.create("other");
    let files = env.files("acme");
    let secret = env.dir.path().join("secret.md");
    fs::write(&secret, format!("{CANARY} host secret\n")).unwrap();
    fs::write(
        env.files("other").join("MEMORY.md"),
        format!("{CANARY} other tenant\n"),
    )
    .unwrap();
    fs::create_dir_all(env.files("other").join("memory")).unwrap();
    fs::write(
        env.files("other").join("memory/x.md"),
        format!("{CANARY} other tenant note\n"),
    )
    .unwrap();

    symlink(&secret, files.join("MEMORY.md")).unwrap();
    symlink(env.files("other").join("memory"), files.join("memory")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 0, "{r}");
    let sk = skipped(&r);
    assert!(
        sk.iter()
            .any(|(p, why)| p == "MEMORY.md" && why.contains("symlink")),
        "{r}"
    );
    assert!(
        sk.iter()
            .any(|(p, why)| p == "memory" && why.contains("symlink")),
        "{r}"
    );
    assert!(sources(&env, "acme", CANARY).is_empty());

    // A symlink deeper down, and a directory symlink inside memory/.
    fs::remove_file(files.join("memory")).unwrap();
    fs::create_dir_all(files.join("memory/sub")).unwrap();
    symlink(&secret, files.join("memory/sub/leak.md")).unwrap();
    symlink(env.files("other"), files.join("memory/other")).unwrap();
    symlink("../../MEMORY.md", files.join("memory/sub/rel.md")).unwrap();
    fs::write(files.join("memory/sub/ok.md"), "harmless pelican note\n").unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 1, "{r}");
    assert!(sources(&env, "acme", CANARY).is_empty());
    assert_eq!(sources(&env, "acme", "pelican"), ["memory/sub/ok.md"]);

    // A file indexed, then swapped for a symlink: its chunks go.
    fs::remove_file(files.join("memory/sub/ok.md")).unwrap();
    symlink(&secret, files.join("memory/sub/ok.md")).unwrap();
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).2, 1, "{r}");
    assert!(sources(&env, "acme", "pelican").is_empty());
    assert!(sources(&env, "acme", CANARY).is_empty());
}

#[test]
fn symlinks_made_inside_the_sandbox_are_not_followed() {
    if !sandbox_or_skip("symlinks_made_inside_the_sandbox_are_not_followed") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    env.create("other");
    let secret = env.dir.path().join("secret.md");
    fs::write(&secret, format!("{CANARY} host secret\n")).unwrap();
    fs::create_dir_all(env.files("other").join("memory")).unwrap();
    fs::write(
        env.files("other").join("memory/x.md"),
        format!("{CANARY} other tenant note\n"),
    )
    .unwrap();
    // Host paths: dangling inside the sandbox, but the indexer runs on the host.
    let script = format!(
        "ln -s {} /workspace/MEMORY.md && ln -s {} /workspace/memory && ls -la /workspace",
        secret.display(),
        env.files("other").join("memory").display()
    );
    let out = env.sh("acme", &script);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(fs::symlink_metadata(env.files("acme").join("MEMORY.md"))
        .unwrap()
        .file_type()
        .is_symlink());
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r).0, 0, "{r}");
    assert!(sources(&env, "acme", CANARY).is_empty());
    let out = env.bulkhead(&["--json", "memory", "stats", "acme"]);
    assert_eq!(ok_json(&out)["chunks"], 0);
}

#[test]
fn sessions_are_indexed_past_thresholds_and_after_compaction() {
    let env = TestEnv::new();
    env.create("acme");
    let p = Platform::open(PlatformConfig {
        state_dir: env.state(),
        ..PlatformConfig::default()
    })
    .unwrap();
    let s = p.workspace("acme").unwrap().sessions();
    let mut h = s.create(Some("s1"), LockMode::FailFast).unwrap();
    h.push(Event::user_message("Where is the flamingo dashboard?"))
        .unwrap();
    h.push(Event::assistant_message(
        "The flamingo dashboard is at grafana/d/flamingo.",
    ))
    .unwrap();
    h.commit().unwrap();

    // Below the default thresholds (10 messages, 8 KiB): not yet.
    let r = index(&env, "acme", &[]);
    assert_eq!(counts(&r), (0, 1, 0), "{r}");
    assert!(sources(&env, "acme", "flamingo").is_empty());

    let th = ["--session-min-messages", "2"];
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (1, 0, 0), "{r}");
    assert_eq!(sources(&env, "acme", "flamingo dashboard"), ["session:s1"]);

    // One more message: below the threshold of 2.
    h.push(Event::user_message("And the heron runbook?"))
        .unwrap();
    h.commit().unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (0, 1, 0), "{r}");
    assert!(sources(&env, "acme", "heron").is_empty());

    // A compaction: indexed again whatever the thresholds, summary included.
    h.push(Event::compaction(
        "Summary: the pelican incident was resolved.",
        3,
    ))
    .unwrap();
    h.commit().unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (1, 0, 0), "{r}");
    assert_eq!(sources(&env, "acme", "pelican incident"), ["session:s1"]);
    assert_eq!(sources(&env, "acme", "heron runbook"), ["session:s1"]);
    drop(h);

    // A removed session's chunks go.
    s.remove("s1").unwrap();
    let r = index(&env, "acme", &th);
    assert_eq!(counts(&r), (0, 0, 1), "{r}");
    assert!(sources(&env, "acme", "flamingo").is_empty());
}

/// Writes `config.toml` for `env`: the harness's settings plus `extra`.
fn config(env: &TestEnv, extra: &str) {
    env.ensure_config();
    let p = env.state().join("config.toml");
    let mut c = fs::read_to_string(&p).unwrap();
    c.push_str(extra);
    fs::write(p, c).unwrap();
}

/// The peak resident set (VmHWM, KiB) of a process, polled from /proc until it exits.
fn run_measuring_peak(mut cmd: std::process::Command) -> (std::process::Output, u64) {
    use std::process::Stdio;
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (p, done) = (
        peak.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let d = done.clone();
    let poller = std::thread::spawn(move || {
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(s) = fs::read_to_string(&status) {
                // A zombie has no VmHWM line any more: keep what was seen.
                if let Some(kb) = s
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    p.fetch_max(kb, std::sync::atomic::Ordering::Relaxed);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.join().unwrap();
    (out, peak.load(std::sync::atomic::Ordering::Relaxed))
}

/// Peak memory bound of `memory index` over 10,000 notes of 1 MiB (10 GiB read).
const PEAK_BOUND_KIB: u64 = 200 * 1024;

/// 10,000 notes of 1 MiB each (sparse: a line of text, then a hole, so the 10 GiB cost no
/// disk; the indexer still reads every byte) are indexed one at a time: the process stays
/// under PEAK_BOUND_KIB. A second pass reads nothing: every note is unchanged by its
/// identity.
#[test]
fn ten_thousand_one_mib_notes_stay_under_a_peak_memory_bound() {
    let env = TestEnv::new();
    env.create("acme");
    config(&env, "[memory]\nindex_max_bytes_per_pass = \"16G\"\n");
    let files = env.files("acme");
    const NOTES: usize = 10_000;
    const MIB: u64 = 1 << 20;
    for d in 0..10 {
        let dir = files.join(format!("memory/d{d:02}"));
        fs::create_dir_all(&dir).unwrap();
        for i in 0..NOTES / 10 {
            let n = d * (NOTES / 10) + i;
            let f = fs::File::create(dir.join(format!("n{n:05}.md"))).unwrap();
            use std::io::Write;
            (&f).write_all(format!("# note {n}\n\nkestrel{n} wombat\n").as_bytes())
                .unwrap();
            f.set_len(MIB).unwrap();
        }
    }
    // Past the indexer's one-second window for notes changed just before a pass.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let mut cmd = env.cmd();
    cmd.args(["--json", "memory", "index", "acme", "--embedder", "none"]);
    let t = std::time::Instant::now();
    let (out, peak_kib) = run_measuring_peak(cmd);
    let took = t.elapsed();
    let r = ok_json(&out);
    eprintln!(
        "memory index over {NOTES} x 1 MiB notes: peak RSS {} KiB ({:.1} MiB), {took:?}",
        peak_kib,
        peak_kib as f64 / 1024.0
    );
    assert_eq!(counts(&r), (NOTES as u64, 0, 0), "{}", r["skipped"]);
    assert_eq!(r["files_read"], NOTES as u64);
    assert_eq!(r["bytes_read"], NOTES as u64 * MIB);
    assert!(peak_kib > 0, "VmHWM was never read");
    assert!(
        peak_kib < PEAK_BOUND_KIB,
        "peak RSS {peak_kib} KiB, bound {PEAK_BOUND_KIB} KiB"
    );
    assert_eq!(
        sources(&env, "acme", "kestrel4242"),
        ["memory/d04/n04242.md"]
    );

    // Second pass: nothing read, every note unchanged.
    let t = std::time::Instant::now();
    let r = index(&env, "acme", &["--embedder", "none"]);
    let took = t.elapsed();
    eprintln!("second pass: {took:?}");
    assert_eq!(counts(&r), (0, NOTES as u64, 0), "{r}");
    assert_eq!(
        (r["files_read"].as_u64(), r["bytes_read"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");

    // One note changed (same size, new text): only it is read.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(files.join("memory/d07/n07007.md"))
        .unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"# note 7007\n\nheron\n", 0).unwrap();
    let r = index(&env, "acme", &["--embedder", "none"]);
    assert_eq!(counts(&r), (1, NOTES as u64 - 1, 0), "{r}");
    assert_eq!(r["files_read"], 1);
    assert_eq!(sources(&env, "acme", "heron"), ["memory/d07/n07007.md"]);
}

/// A FIFO and a symlink to /etc/passwd named like notes are skipped with a reason, and the
/// pass does not hang on the FIFO (nothing ever writes to it).
#[test]
fn a_fifo_and_a_symlink_to_etc_passwd_are_skipped_without_hanging() {
    let env = TestEnv::new();
    env.create("acme");
    let files = env.files("acme");
    fs::create_dir_all(files.join("memory")).unwrap();
    fs::write(files.join("memory/ok.md"), "the osprey nests by the lake\n").unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(files.join("memory/pipe.md"))
        .status()
        .unwrap();
    assert!(st.success());
    let st = std::process::Command::new("mkfifo")
        .arg(files.join("MEMORY.md"))
        .status()
        .unwrap();
    assert!(st.success());
    symlink("/etc/passwd", files.join("memory/passwd.md")).unwrap();

    let (tx, rx) = std::sync::mpsc::channel();
    let state = env.state();
    let cmd = {
        let mut c = env.cmd();
        c.args(["--json", "memory", "index", "acme"]);
        c
    };
    std::thread::spawn(move || {
        let mut cmd = cmd;
        let _ = tx.send(cmd.output().unwrap());
        drop(state);
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("memory index hung on a FIFO");
    let r = ok_json(&out);
    assert_eq!(counts(&r).0, 1, "{r}");
    let sk = skipped(&r);
    let why = |p: &str| {
        sk.iter()
            .find(|(q, _)| q == p)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("{p} not reported: {r}"))
    };
    assert!(why("memory/pipe.md").contains("fifo"), "{r}");
    assert!(why("MEMORY.md").contains("fifo"), "{r}");
    assert!(why("memory/passwd.md").contains("symlink"), "{r}");
    assert!(sources(&env, "acme", "root").is_empty());
    assert_eq!(sources(&env, "acme", "osprey"), ["memory/ok.md"]);
}

/// Past `index_max_bytes_per_pass` a note waits for the next pass (reported, chunks kept);
/// past `index_max_dir_entries` the directory is reported and nothing is removed.
#[test]
fn the_byte_budget_and_the_entry_cap_are_reported_not_silent() {
    let env = TestEnv::new();
    env.create("acme");
    config(
        &env,
        "[memory]\nindex_max_bytes_per_pass = \"1M\"\nindex_max_dir_entries = 3\n",
    );
    let files = env.files("acme");
    fs::create_dir_all(files.join("memory")).unwrap();
    let body = |w: &str| format!("{w} {}\n", "filler ".repeat(600 * 1024 / 7));
    fs::write(files.join("memory/a.md"), body("albatross")).unwrap();
    fs::write(files.join("memory/b.md"), body("bittern")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));

    // 1 MiB a pass: a.md (600 KiB) fits, b.md waits.
    let r = index(&env, "acme", &["--embedder", "none"]);
    assert_eq!(counts(&r).0, 1, "{r}");
    let sk = skipped(&r);
    assert!(
        sk.iter().any(|(p, w)| p == "memory/b.md"
            && w.contains("index_max_bytes_per_pass")
            && w.contains("later pass")),
        "{r}"
    );
    // The next pass reads b.md (a.md is unchanged and costs nothing).
    let r = index(&env, "acme", &["--embedder", "none"]);
    assert_eq!(counts(&r), (1, 1, 0), "{r}");
    assert_eq!(sources(&env, "acme", "bittern"), ["memory/b.md"]);

    // Four entries in a directory capped at three: reported, nothing removed.
    fs::write(files.join("memory/c.md"), "cormorant\n").unwrap();
    fs::write(files.join("memory/d.md"), "dunlin\n").unwrap();
    let r = index(&env, "acme", &["--embedder", "none"]);
    assert_eq!(counts(&r).2, 0, "{r}");
    assert!(
        skipped(&r)
            .iter()
            .any(|(p, w)| p == "memory" && w.contains("more than 3 entries")),
        "{r}"
    );
    assert_eq!(sources(&env, "acme", "albatross").len(), 1);
    assert_eq!(sources(&env, "acme", "bittern").len(), 1);
}

/// A note named with an ANSI escape, a carriage return and a bidi override, holding an
/// escape in its text: `memory search`, `memory get` and `memory index` print them escaped,
/// and `--json` keeps them exact.
#[test]
fn tenant_names_and_text_print_escaped_on_a_terminal() {
    let env = TestEnv::new();
    env.create("acme");
    let files = env.files("acme");
    fs::create_dir_all(files.join("memory")).unwrap();
    let name = "memory/\x1b[31mred\r\u{202e}dm.txt.md";
    fs::write(files.join(name), "the puffin \x1b]0;owned\x07 colony\n").unwrap();
    // And one that is skipped, for the index report.
    symlink("/etc/passwd", files.join("memory/\x1b[2Jclear.md")).unwrap();

    let out = env.bulkhead(&["memory", "index", "acme", "--embedder", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(!t.contains('\x1b'), "{t:?}");
    assert!(t.contains("memory/\\u{1b}[2Jclear.md"), "{t:?}");

    let out = env.bulkhead(&["memory", "search", "acme", "puffin", "--mode", "keyword"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    for bad in ['\x1b', '\r', '\u{202e}', '\x07'] {
        assert!(!t.contains(bad), "{bad:?} printed raw: {t:?}");
    }
    assert!(
        t.contains("memory/\\u{1b}[31mred\\u{d}\\u{202e}dm.txt.md"),
        "{t:?}"
    );
    assert_eq!(t.lines().count(), 1, "{t:?}");

    // JSON stays exact.
    let v = ok_json(&env.bulkhead(&[
        "--json", "memory", "search", "acme", "puffin", "--mode", "keyword",
    ]));
    assert_eq!(v[0]["source"], name);
    let id = v[0]["id"].as_i64().unwrap().to_string();

    let out = env.bulkhead(&["memory", "get", "acme", &id]);
    let t = text(&out.stdout);
    assert!(!t.contains('\x1b') && !t.contains('\x07'), "{t:?}");
    assert!(t.contains("\\u{1b}]0;owned\\u{7}"), "{t:?}");
    let v = ok_json(&env.bulkhead(&["--json", "memory", "get", "acme", &id]));
    assert!(
        v["text"].as_str().unwrap().contains("\x1b]0;owned\x07"),
        "{v}"
    );
}
