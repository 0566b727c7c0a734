//! Skills never run their credentials among configuration the tenant planted (issue 14,
//! item 4): a skill starts in `/mnt/skill` with a fresh private `HOME` and an environment
//! that keeps git, curl and friends away from tenant-written config; `workspace = "write"`
//! with credentials needs the operator's `[skills] allow_write_with_credentials`; each
//! credential is also a file; the workspace's other sandboxes are frozen while such a skill
//! runs, and thawed after.
//!
//! The planted commands run only inside sandboxes of a workspace that was just checked to be
//! isolated ([`Isolated`]); nothing here uses the network (curl reads `file://` URLs).

use std::sync::Arc;

use bulkhead_tests::{show, text, Isolated, TestEnv};
use serde_json::{json, Value};

const KEY: &str = "correct horse battery staple (skill config)";
const TOKEN: &str = "ghp_PlantedC0nfigT0ken_abc123";

fn bh(env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut c = env.cmd_with_key(Some(KEY));
    c.args(args).output().expect("run bulkhead")
}

/// Writes `<state>/skills/<id>/SKILL.md` and an executable `execute.sh`, and enables it.
fn skill(env: &TestEnv, ws: &str, id: &str, front: &str, code: &str) {
    env.write_skill(id, front, "execute.sh", code);
    let o = bh(env, &["skill", "enable", ws, id]);
    assert!(o.status.success(), "enable {id}: {}", show(&o));
}

fn allow_write_with_credentials(env: &TestEnv) {
    let p = env.state().join("config.toml");
    let mut s = std::fs::read_to_string(&p).unwrap();
    s.push_str("\n[skills]\nallow_write_with_credentials = true\n");
    std::fs::write(&p, s).unwrap();
}

/// The tenant's plant, made from inside its own sandbox: a repository whose `.git/config`
/// runs `/workspace/.planted` as its fsmonitor, a `.gitconfig` doing the same, and a
/// `.curlrc` that sends whatever curl fetches to a file, and an `.ssh/config` whose
/// `ProxyCommand` (run before any connection) is `.planted`. `.planted` records that it ran
/// and copies the environment and the secrets directory out.
const PLANT: &str = r#"set -e
cd /workspace
cat > .planted <<'EOF'
#!/bin/sh
echo "ran $*" >> /workspace/PLANTED_RAN
env > /workspace/stolen-env 2>/dev/null
cat /tmp/secrets/* > /workspace/stolen-files 2>/dev/null
echo '{"version":1}'
EOF
chmod 755 .planted
git init -q .
git config core.fsmonitor /workspace/.planted
git config core.sshCommand /workspace/.planted
git config core.pager /workspace/.planted
git config credential.helper '!/workspace/.planted'
echo hello > tracked.txt
git -c core.fsmonitor=false -c user.email=t@t -c user.name=t add tracked.txt
git -c core.fsmonitor=false -c user.email=t@t -c user.name=t commit -qm init
printf '[core]\n\tfsmonitor = /workspace/.planted\n' > .gitconfig
printf 'output = "/workspace/CURLRC_RAN"\n' > .curlrc
mkdir -p .ssh && chmod 700 .ssh
printf 'Host *\n\tProxyCommand /workspace/.planted via-ssh\n' > .ssh/config
chmod 600 .ssh/config
echo planted
"#;

/// ssh to a closed port on the sandbox's own loopback: only a `ProxyCommand` makes it run
/// anything (no traffic leaves the sandbox's network namespace, which has only `lo`).
const SSH: &str = "ssh -o BatchMode=yes -o ConnectTimeout=2 -p 9 127.0.0.1 true </dev/null";

#[test]
fn skill_config_planted_git_and_curl_config_never_run_with_credentials() {
    let Some(iso) = Isolated::new("skill_config_planted_git_and_curl_config_never_run") else {
        return;
    };
    let env = &iso.env;
    let ws = iso.id.as_str();
    let files = env.files(ws);
    let o = bh(
        env,
        &["cred", "set", ws, "github", &format!("token={TOKEN}")],
    );
    assert!(o.status.success(), "cred set: {}", show(&o));
    let o = iso.sh(PLANT);
    assert!(text(&o.stdout).contains("planted"), "plant: {}", show(&o));

    // Control: the plant works. The agent's own sandbox (HOME=/workspace, cwd /workspace)
    // runs it on `git status` and honours the .curlrc.
    let o = iso.sh(&format!("cd /workspace && git status >/dev/null 2>&1; curl -s file:///workspace/tracked.txt; {SSH} >/dev/null 2>&1; true"));
    assert!(o.status.success(), "{}", show(&o));
    let ran = std::fs::read_to_string(files.join("PLANTED_RAN")).unwrap_or_default();
    assert!(
        ran.lines()
            .any(|l| l.starts_with("ran ") && !l.contains("via-ssh")),
        "control failed: the planted fsmonitor did not run in the agent's sandbox, so the \
         test below would prove nothing:\n{}",
        show(&o)
    );
    assert!(
        ran.contains("ran via-ssh"),
        "control: .ssh/config not used: {ran}"
    );
    assert!(
        files.join("CURLRC_RAN").exists(),
        "control: .curlrc not used"
    );
    for f in ["PLANTED_RAN", "CURLRC_RAN", "stolen-env", "stolen-files"] {
        let _ = std::fs::remove_file(files.join(f));
    }

    skill(
        env,
        ws,
        "gitops",
        "name = \"gitops\"\ndescription = \"git with a token\"\nworkspace = \"write\"\ncredentials = [\"github\"]",
        &r#"echo "cwd=$(pwd)"
echo "home=$HOME home_mode=$(stat -c %a "$HOME") home_entries=[$(ls -A "$HOME")]"
case "$HOME" in /workspace*) echo HOME_IN_WORKSPACE;; esac
echo "secrets_dir=$BULKHEAD_SECRETS_DIR"
[ "$(cat "$BULKHEAD_SECRETS_DIR/GITHUB_TOKEN")" = "$GITHUB_TOKEN" ] && [ -n "$GITHUB_TOKEN" ] && echo SECRET_FILE_MATCHES
echo "secret_mode=$(stat -c %a "$BULKHEAD_SECRETS_DIR/GITHUB_TOKEN")"
git -C /workspace status --porcelain=v1 --untracked-files=no; echo "git_ws=$?"
git -C /workspace log --oneline | cat; echo "git_log=$?"
git status >/dev/null 2>&1; echo "git_cwd=$?"
curl -s file:///mnt/skill/SKILL.md > /dev/null; echo "curl=$?"
cd /workspace && curl -s file:///mnt/skill/SKILL.md > /dev/null; echo "curl_in_ws=$?"
SSH_LINE >/dev/null 2>&1; echo "ssh=$?"
echo end
"#
        .replace("SSH_LINE", SSH),
    );

    // Without the operator's key: refused, naming it; nothing ran.
    let o = bh(env, &["skill", "run", ws, "gitops"]);
    assert!(!o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains("[skills] allow_write_with_credentials")
            && err.contains("workspace = \"write\"")
            && err.contains("config.toml"),
        "the refusal does not name the key:\n{err}"
    );
    assert!(!text(&o.stdout).contains("cwd="), "{}", show(&o));

    allow_write_with_credentials(env);
    let o = bh(env, &["--json", "skill", "run", ws, "gitops"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    assert_eq!(v["ok"], true, "{}", show(&o));
    let out = v["output"].as_str().unwrap_or_default().to_string();
    assert!(out.contains("cwd=/mnt/skill\n"), "{out}");
    assert!(
        out.contains("home=/tmp/home home_mode=700 home_entries=[]"),
        "HOME is not a fresh private directory:\n{out}"
    );
    assert!(!out.contains("HOME_IN_WORKSPACE"), "{out}");
    assert!(out.contains("secrets_dir=/tmp/secrets"), "{out}");
    assert!(out.contains("SECRET_FILE_MATCHES"), "secret file: {out}");
    assert!(out.contains("secret_mode=400"), "{out}");
    // git did read the repository (and so its config), and ran nothing of it.
    assert!(
        out.contains("git_ws=0"),
        "git -C /workspace status failed:\n{out}"
    );
    assert!(
        out.contains("init\ngit_log=0"),
        "git log over the repository:\n{out}"
    );
    assert!(
        out.contains("git_cwd=128"),
        "git found a repository above /mnt/skill:\n{out}"
    );
    assert!(
        out.contains("curl=0") && out.contains("curl_in_ws=0"),
        "{out}"
    );
    assert!(out.contains("ssh=255"), "ssh: {out}");
    assert!(out.contains("end"), "{out}");
    assert!(
        !out.contains("PlantedC0nfig"),
        "the token was not redacted:\n{out}"
    );
    for f in ["PLANTED_RAN", "CURLRC_RAN", "stolen-env", "stolen-files"] {
        assert!(
            !files.join(f).exists(),
            "tenant-planted config ran with the skill's credentials: {f} exists\n{out}"
        );
    }
}

#[test]
fn skill_config_agent_background_process_is_frozen_during_a_credentialed_skill() {
    use bulkhead::agent::tools::ToolRegistry;
    use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};

    let Some(iso) = Isolated::new("skill_config_agent_background_process_is_frozen") else {
        return;
    };
    let env = &iso.env;
    let ws_id = iso.id.as_str();
    let o = bh(
        env,
        &["cred", "set", ws_id, "github", &format!("token={TOKEN}")],
    );
    assert!(o.status.success(), "cred set: {}", show(&o));
    // Reads the agent's files; counts the ticker's lines twice, 1.5 s apart.
    skill(
        env,
        ws_id,
        "probe",
        "name = \"probe\"\ndescription = \"watches the tick file\"\nworkspace = \"read\"\ncredentials = [\"github\"]",
        "a=$(wc -l < /workspace/tick); sleep 1.5; b=$(wc -l < /workspace/tick); echo \"during=$a,$b\"\n",
    );
    let bash = |cmd: &str| Reply::tool_call("bash", json!({ "command": cmd }));
    let mock = MockLlm::start(
        Script::new()
            .reply(bash(
                "nohup sh -c 'while :; do date >> /workspace/tick; sleep 0.1; done' >/dev/null 2>&1 & sleep 0.5; echo started",
            ))
            .step(
                Step::reply(Reply::tool_call(
                    "skill_execute",
                    json!({"skill": "probe", "params": {}}),
                ))
                .after_tool_result(true),
            )
            .step(
                Step::reply(bash(
                    "a=$(wc -l < /workspace/tick); sleep 1; b=$(wc -l < /workspace/tick); echo \"after=$a,$b\"",
                ))
                .after_tool_result(true),
            )
            .step(Step::reply(Reply::text("done")).after_tool_result(true)),
    );
    let p = bulkhead::Platform::open(bulkhead::PlatformConfig {
        state_dir: env.state(),
        launcher: Some(bulkhead_tests::bin("bulkhead-launch")),
    })
    .unwrap();
    let ws = p.workspace(ws_id).unwrap();
    let key = bulkhead::CredentialKey::new(KEY);
    let mut tools = ToolRegistry::builtin();
    for t in
        bulkhead::skills::tools::skill_tools(bulkhead::skills::Registry::of(&p), Some(key.clone()))
    {
        tools.register(t).unwrap();
    }
    let mut req = bulkhead::RunRequest::new("tick, then probe");
    req.model = Some("anthropic/claude-sonnet-4-5".into());
    req.fallbacks = Some(vec![]);
    req.base_url = Some(mock.base_url());
    req.env = Some(std::collections::BTreeMap::from([(
        "ANTHROPIC_API_KEY".to_string(),
        "mock-key".to_string(),
    )]));
    req.credential_key = Some(key);
    req.tools = Some(Arc::new(tools));
    let r = ws.run(req).expect("agent run");
    assert_eq!(r.response, "done");
    let all = mock
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let pair = |label: &str| -> (u64, u64) {
        let at = all
            .find(&format!("{label}="))
            .unwrap_or_else(|| panic!("no {label}= in the tool results:\n{all}"));
        let rest = &all[at + label.len() + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == ','))
            .unwrap_or(rest.len());
        let (a, b) = rest[..end].split_once(',').expect("a,b");
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let (a, b) = pair("during");
    assert!(a > 0, "the ticker never ran:\n{all}");
    assert_eq!(
        a, b,
        "the agent's background process advanced while a credentialed skill had the workspace:\n{all}"
    );
    let (c, d) = pair("after");
    assert!(
        c >= b && d > c,
        "the background process did not resume after the skill:\n{all}"
    );
}

#[test]
fn skill_config_doc_lists_every_variable_and_git_override() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/skills.md"),
    )
    .unwrap();
    let section = doc
        .split("<!-- skill-environment -->")
        .nth(1)
        .expect("docs/skills.md has a <!-- skill-environment --> section");
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    for (name, _) in bulkhead::skills::run::skill_env(true) {
        if name.starts_with("GIT_CONFIG_KEY_") || name.starts_with("GIT_CONFIG_VALUE_") {
            continue;
        }
        assert!(
            section.contains(&format!("`{name}`")) || name == "HOME",
            "docs/skills.md's skill environment does not list {name}"
        );
    }
    for (key, _) in bulkhead::skills::run::GIT_OVERRIDES {
        assert!(
            section.contains(&format!("`{key}")),
            "docs/skills.md's skill environment does not list git's {key}"
        );
    }
    assert!(section.contains("[skills] allow_write_with_credentials"));
}

#[test]
fn skill_config_no_sandbox_starts_while_a_credentialed_skill_holds_the_workspace() {
    if !bulkhead_tests::sandbox_or_skip("skill_config_no_sandbox_starts_while_a_skill_holds") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    let p = bulkhead::Platform::open(bulkhead::PlatformConfig {
        state_dir: env.state(),
        launcher: Some(bulkhead_tests::bin("bulkhead-launch")),
    })
    .unwrap();
    let ws = p.workspace("acme").unwrap();
    // What a credentialed skill with the workspace's files holds while it runs, taken by
    // flock(1) for 1.5 s once it says so.
    use std::io::BufRead;
    let mut holder = std::process::Command::new("flock")
        .arg("-x")
        .arg(ws.skill_freeze_lock_path())
        .args(["-c", "echo held; sleep 1.5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1)");
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let started = std::time::Instant::now();
    let ws2 = ws.clone();
    let t = std::thread::spawn(move || {
        let rs = ws2.sandbox(&Default::default()).expect("sandbox");
        let at = std::time::Instant::now();
        rs.shutdown().unwrap();
        at
    });
    let at = t.join().unwrap();
    assert!(holder.wait().unwrap().success());
    assert!(
        at.duration_since(started) >= std::time::Duration::from_millis(1400),
        "a sandbox started while the workspace was held for a credentialed skill"
    );
}
