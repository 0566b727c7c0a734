//! Skill execution overhead, with a baseline run in the same process: a skill that reads its
//! JSON parameters and prints its injected token, run through `bulkhead::skills::run_skill`
//! (its own sandbox through the launcher, the credential set decrypted and injected, output
//! redacted) against the same script spawned as a plain process with the same environment.
//!
//! Figures: the median of 30 runs each after 3 warm-up runs (the credential key is cached
//! after the first unlock, as in a long-lived controller), and the first run with a cold key
//! cache (the KDF runs once per process). Needs a host that can run sandboxes.
//!
//! Run: `cargo run --release -p bulkhead-bench --bin bulkhead-bench-skills` (`--json` for one
//! JSON object). A benchmark, not a test: it prints numbers and asserts nothing.

use bulkhead_bench::bench_util;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use bulkhead::skills::{run_skill, Registry};
use bulkhead::{CredentialKey, Platform, PlatformConfig, SecretString, WorkspaceConfig};
use serde_json::json;

const SCRIPT: &str = "#!/bin/sh\nread -r params\nprintf '%s %s\\n' \"$params\" \"$GITHUB_TOKEN\"\n";
const RUNS: usize = 30;

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let json_out = std::env::args().any(|a| a == "--json");
    if let Err(e) = run(json_out) {
        eprintln!("bulkhead-bench-skills: {e}");
        std::process::exit(2);
    }
}

fn run(json_out: bool) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("state");
    let launcher = bulkhead_tests::bin("bulkhead-launch");
    let platform = Platform::open(PlatformConfig {
        state_dir: state.clone(),
        launcher: Some(launcher),
    })?;
    let mut ws = platform.create_workspace("bench", WorkspaceConfig::default())?;
    let skill_dir = state.join("skills").join("echo");
    std::fs::create_dir_all(&skill_dir)?;
    std::fs::write(
        skill_dir.join("SKILL.md"),
        "+++\nname = \"echo\"\ndescription = \"prints its parameters and token\"\ncredentials = [\"github\"]\n+++\nBench skill.\n",
    )?;
    let exe = skill_dir.join("execute.sh");
    std::fs::write(&exe, SCRIPT)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    ws.update_skills(|s| {
        s.push("echo".into());
        Ok(())
    })?;
    let key = CredentialKey::new("bench passphrase");
    let token = "ghp_benchtoken0123456789";
    ws.credentials(&key)?.set(
        "github",
        BTreeMap::from([("token".to_string(), SecretString::from(token))]),
    )?;
    let registry = Registry::of(&platform);
    let params = json!({"q": "x"});

    // The first run in a process with a cold key cache: the KDF runs once.
    bulkhead::creds::clear_key_cache();
    let t = Instant::now();
    let r = run_skill(&ws, &registry, "echo", &params, Some(&key))?;
    let cold = ms(t);
    if !r.output.to_string().contains("[REDACTED]") || r.output.to_string().contains(token) {
        return Err(format!("unexpected skill output: {}", r.output).into());
    }

    let mut skill = Vec::new();
    for i in 0..RUNS + 3 {
        let t = Instant::now();
        run_skill(&ws, &registry, "echo", &params, Some(&key))?;
        if i >= 3 {
            skill.push(ms(t));
        }
    }
    let mut plain = Vec::new();
    for i in 0..RUNS + 3 {
        let t = Instant::now();
        let mut c = Command::new("/bin/sh")
            .arg(&exe)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("GITHUB_TOKEN", token)
            .env("TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        c.stdin
            .take()
            .ok_or("no stdin")?
            .write_all(format!("{params}\n").as_bytes())?;
        c.wait_with_output()?;
        if i >= 3 {
            plain.push(ms(t));
        }
    }
    let s50 = bench_util::percentile(&skill, 50.0);
    let p50 = bench_util::percentile(&plain, 50.0);
    let ratio = bench_util::ratio(s50, p50);
    if json_out {
        println!(
            "{}",
            json!({"skill_ms_p50": s50, "plain_spawn_ms_p50": p50, "ratio": ratio,
                   "first_run_cold_key_ms": cold, "runs": RUNS, "date": bench_util::today()})
        );
    } else {
        println!("skill execution ({RUNS} runs, median): sandbox start + credential decrypt + injection + redaction");
        println!(
            "  bulkhead skill run        {:>8.2} ms",
            s50.unwrap_or(f64::NAN)
        );
        println!(
            "  plain process spawn       {:>8.2} ms   (same script, same environment)",
            p50.unwrap_or(f64::NAN)
        );
        println!(
            "  ratio                     {:>8.1}x",
            ratio.unwrap_or(f64::NAN)
        );
        println!("  first run, cold key cache {cold:>8.2} ms   (the KDF runs once per process)");
    }
    Ok(())
}
