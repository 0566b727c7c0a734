//! Skills end to end through the CLI: registry listing (malformed skills with a reason, bad
//! ids refused), enablement kept out of the agent's reach, execution in a sandbox of its own
//! (no view of any workspace, no network unless declared, declared hosts only through the
//! egress proxy) and credentials injected and redacted from the output.
//!
//! Every listener is on 127.0.0.1; nothing leaves loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bulkhead_tests::{sandbox_or_skip, show, text, TestEnv};
use serde_json::Value;

const KEY: &str = "correct horse battery staple (skills)";
const TOKEN: &str = "ghp_Sk1llT0ken/with+odd=chars?&";

fn cmd(env: &TestEnv) -> Command {
    env.cmd_with_key(Some(KEY))
}

fn bh(env: &TestEnv, args: &[&str]) -> Output {
    cmd(env).args(args).output().expect("run bulkhead")
}

/// Writes `<state>/skills/<id>/SKILL.md` and the entry point.
fn skill(env: &TestEnv, id: &str, front: &str, entry: &str, code: &str) {
    env.write_skill(id, front, entry, code);
}

fn enable(env: &TestEnv, ws: &str, id: &str) {
    let o = bh(env, &["skill", "enable", ws, id]);
    assert!(o.status.success(), "enable {id}: {}", show(&o));
}

/// `skill run --json`; the parsed result and the raw output.
fn run_json(env: &TestEnv, ws: &str, id: &str, params: &str) -> (Value, Output) {
    let o = bh(env, &["--json", "skill", "run", ws, id, "--params", params]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (v, o)
}

fn append_config(env: &TestEnv, extra: &str) {
    env.ensure_config();
    let p = env.state().join("config.toml");
    let mut s = std::fs::read_to_string(&p).unwrap();
    s.push_str(extra);
    std::fs::write(&p, s).unwrap();
}

fn b64(data: &[u8], url: bool, pad: bool) -> String {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine as _;
    match (url, pad) {
        (false, true) => STANDARD.encode(data),
        (false, false) => STANDARD_NO_PAD.encode(data),
        (true, true) => URL_SAFE.encode(data),
        (true, false) => URL_SAFE_NO_PAD.encode(data),
    }
}

#[test]
fn skills_injected_token_is_redacted_in_every_form() {
    if !sandbox_or_skip("skills_injected_token_is_redacted_in_every_form") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    let o = bh(
        &env,
        &["cred", "set", "acme", "github", &format!("token={TOKEN}")],
    );
    assert!(o.status.success(), "cred set: {}", show(&o));
    skill(
        &env,
        "leak",
        "name = \"leak\"\ndescription = \"prints its token\"\ncredentials = [\"github\", \"absent\"]",
        "execute.py",
        r#"import base64, json, os, sys, urllib.parse
t = os.environ.get("GITHUB_TOKEN", "")
p = json.load(sys.stdin)
print("plain", t)
print("plainkey", os.environ.get("token", ""))
print("b64", base64.b64encode(t.encode()).decode())
print("b64nopad", base64.b64encode(t.encode()).decode().rstrip("="))
print("b64url", base64.urlsafe_b64encode(t.encode()).decode())
print("url", urllib.parse.quote(t, safe=""))
print("urlplus", urllib.parse.quote_plus(t))
print("len", len(t), "same", t == os.environ.get("token"), "param", p.get("x"))
print("leak to stderr", t, file=sys.stderr)
"#,
    );
    enable(&env, "acme", "leak");
    let o = bh(
        &env,
        &["skill", "run", "acme", "leak", "--params", "{\"x\": 7}"],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    let forms = [
        TOKEN.to_string(),
        b64(TOKEN.as_bytes(), false, true),
        b64(TOKEN.as_bytes(), false, false),
        b64(TOKEN.as_bytes(), true, true),
        bulkhead::skills::redact::percent(
            TOKEN.as_bytes(),
            bulkhead::skills::redact::UNRESERVED,
            false,
            false,
        ),
        "Sk1llT0ken".to_string(),
    ];
    for f in &forms {
        assert!(!out.contains(f.as_str()), "{f:?} leaked:\n{}", show(&o));
        assert!(
            !text(&o.stderr).contains(f.as_str()),
            "{f:?} leaked on stderr"
        );
    }
    for line in [
        "plain", "plainkey", "b64", "b64nopad", "b64url", "url", "urlplus",
    ] {
        assert!(
            out.contains(&format!("{line} [REDACTED]\n")),
            "{line} not redacted to the marker:\n{out}"
        );
    }
    // The token really was injected under both names.
    assert!(
        out.contains(&format!("len {} same True param 7", TOKEN.len())),
        "{out}"
    );
    // --json: same, as a JSON result.
    let (v, o) = run_json(&env, "acme", "leak", "{}");
    assert_eq!(v["ok"], true, "{}", show(&o));
    assert!(v["output"].as_str().unwrap().contains("plain [REDACTED]"));
    assert!(!text(&o.stdout).contains("Sk1llT0ken"));
}

/// A secret written in pieces to stdout and stderr (each stream alone holds no whole copy),
/// and in the encodings real clients use at every alignment: base64 inside a Basic auth
/// header (the secret at offsets 1 and 2 of the encoded input), hex, `encodeURIComponent`
/// and `quote` keeping `/`. None of it survives, on stdout or in the logged stderr.
#[test]
fn skills_split_and_encoded_secrets_are_redacted() {
    if !sandbox_or_skip("skills_split_and_encoded_secrets_are_redacted") {
        return;
    }
    const SPLIT: &str = "Split/S3cret!Value(x)";
    let env = TestEnv::new();
    env.create("acme");
    let o = bh(
        &env,
        &["cred", "set", "acme", "svc", &format!("token={SPLIT}")],
    );
    assert!(o.status.success(), "cred set: {}", show(&o));
    skill(
        &env,
        "split",
        "name = \"split\"\ndescription = \"prints its token in pieces\"\ncredentials = [\"svc\"]",
        "execute.py",
        r#"import base64, os, re, sys, time, urllib.parse
t = os.environ["SVC_TOKEN"]
json_in = sys.stdin.read()
def out(s):
    sys.stdout.write(s); sys.stdout.flush(); time.sleep(0.3)
def err(s):
    sys.stderr.write(s); sys.stderr.flush(); time.sleep(0.3)
out("split x " + t[:6])
err(t[6:13])
out(t[13:] + " y\n")
for label, prefix in [("basic0", ""), ("basic1", "u"), ("basic2", "us"), ("basic5", "user:")]:
    print(label, base64.b64encode((prefix + t).encode()).decode())
    print(label + "url", base64.urlsafe_b64encode((prefix + t + "!").encode()).decode().rstrip("="))
print("hex", t.encode().hex())
print("HEX", t.encode().hex().upper())
print("uric", urllib.parse.quote(t, safe="!'()*~"))
print("slash", urllib.parse.quote(t))
print("form", re.sub("%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote_plus(t)))
sys.stdout.flush()
"#,
    );
    enable(&env, "acme", "split");
    let o = cmd(&env)
        .env("BULKHEAD_LOG_LEVEL", "info")
        .args(["--json", "skill", "run", "acme", "split", "--params", "{}"])
        .output()
        .expect("run bulkhead");
    assert!(o.status.success(), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let out = v["output"].as_str().unwrap_or_default().to_string();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"split x [REDACTED] y"), "{}", show(&o));
    let labels = [
        "basic0",
        "basic0url",
        "basic1",
        "basic1url",
        "basic2",
        "basic2url",
        "basic5",
        "basic5url",
        "hex",
        "HEX",
        "uric",
        "slash",
        "form",
    ];
    for label in labels {
        let line = lines
            .iter()
            .find(|l| l.split(' ').next() == Some(label))
            .unwrap_or_else(|| panic!("no {label} line in {out}"));
        let rest = &line[label.len() + 1..];
        assert!(rest.contains("[REDACTED]"), "{label} not redacted: {line}");
        // What is left is the encoding of the few bytes around the secret, never a run of
        // characters that could carry part of it.
        let left = rest.replace("[REDACTED]", "");
        assert!(left.len() <= 10, "{label} left too much: {line}");
    }
    // The stderr piece, logged by the controller, is redacted as part of the whole.
    let log = text(&o.stderr);
    assert!(log.contains("[REDACTED]"), "stderr was logged: {log}");
    for piece in ["S3cret", "Split/", "Value(x)"] {
        assert!(!out.contains(piece), "{piece} in the output: {out}");
        assert!(!log.contains(piece), "{piece} in the log: {log}");
    }
}

#[test]
fn skills_cannot_read_any_workspace() {
    if !sandbox_or_skip("skills_cannot_read_any_workspace") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    env.create("other");
    std::fs::write(env.files("acme").join("canary.txt"), "CANARY-ACME").unwrap();
    std::fs::write(env.files("other").join("canary.txt"), "CANARY-OTHER").unwrap();
    let acme = env.files("acme");
    let other = env.files("other");
    let state = env.state();
    let script = format!(
        r#"cd /workspace || exit 9
echo "cwd=$(pwd) entries=[$(echo $(ls -A /workspace))]"
for p in /workspace/canary.txt {acme}/canary.txt {other}/canary.txt {state}/workspaces/acme/files/canary.txt; do
  cat "$p" 2>/dev/null && echo "READ $p"
done
find / -xdev -name canary.txt 2>/dev/null
echo tamper >> /workspace/execute.sh 2>/dev/null && echo WROTE-OWN-CODE
touch /workspace/new 2>/dev/null && echo WROTE-NEW
echo done
"#,
        acme = acme.display(),
        other = other.display(),
        state = state.display()
    );
    skill(
        &env,
        "snoop",
        "name = \"snoop\"\ndescription = \"looks around\"",
        "execute.sh",
        &script,
    );
    enable(&env, "acme", "snoop");
    let o = bh(&env, &["skill", "run", "acme", "snoop"]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    // /workspace is the skill's own files, read-only, and nothing else.
    assert!(
        out.contains("entries=[SKILL.md execute.sh]"),
        "/workspace is not just the skill's files:\n{out}"
    );
    assert!(
        !out.contains("WROTE"),
        "the skill changed its own files:\n{out}"
    );
    assert!(out.contains("done"), "{out}");
    assert!(!out.contains("CANARY"), "a canary was read:\n{out}");
    assert!(!out.contains("READ"), "{out}");
    assert!(!out.contains("canary.txt"), "{out}");
    // The per-run directory is gone afterwards.
    let runs = env.state().join("workspaces/acme/skill-runs");
    let left: Vec<_> = std::fs::read_dir(&runs)
        .map(|r| r.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");

    // Declared read access: the agent's files, read-only.
    skill(
        &env,
        "reader",
        "name = \"reader\"\ndescription = \"reads\"\nworkspace = \"read\"",
        "execute.sh",
        "cat /workspace/canary.txt; echo; echo x > /workspace/new 2>/dev/null && echo WROTE; cat /workspace/../other 2>/dev/null\n\
         echo \"own=[$(echo $(ls -A /mnt/skill))]\"\n\
         echo tamper >> /mnt/skill/execute.sh 2>/dev/null && echo CHANGED-OWN-CODE\n\
         touch /mnt/skill/new 2>/dev/null && echo CHANGED-OWN-DIR; true\n",
    );
    enable(&env, "acme", "reader");
    let o = bh(&env, &["skill", "run", "acme", "reader"]);
    let out = text(&o.stdout);
    assert!(out.contains("CANARY-ACME"), "{}", show(&o));
    assert!(
        !out.contains("WROTE") && !out.contains("CANARY-OTHER"),
        "{out}"
    );
    assert!(!env.files("acme").join("new").exists());
    // Its own files beside the agent's: at /mnt/skill, read-only.
    assert!(out.contains("own=[SKILL.md execute.sh]"), "{out}");
    assert!(
        !out.contains("CHANGED-OWN"),
        "the skill changed its own files:\n{out}"
    );

    // Declared write access: the agent's files writable, its own still read-only.
    skill(
        &env,
        "writer",
        "name = \"writer\"\ndescription = \"writes\"\nworkspace = \"write\"",
        "execute.sh",
        "echo made > /workspace/by-skill && echo WROTE-WS\n\
         echo tamper >> /mnt/skill/execute.sh 2>/dev/null && echo CHANGED-OWN-CODE; true\n",
    );
    enable(&env, "acme", "writer");
    let o = bh(&env, &["skill", "run", "acme", "writer"]);
    let out = text(&o.stdout);
    assert!(out.contains("WROTE-WS"), "{}", show(&o));
    assert!(!out.contains("CHANGED-OWN"), "{out}");
    assert_eq!(
        std::fs::read_to_string(env.files("acme").join("by-skill")).unwrap(),
        "made\n"
    );
}

/// A listener on 127.0.0.1 that counts connections and answers each with a small HTTP
/// response naming itself.
fn listener(name: &'static str) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = format!("hello from {name}");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

const FETCH: &str = r#"import json, socket, sys, urllib.request
p = json.load(sys.stdin)
for url in p["urls"]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            print("GOT", url, r.status, r.read().decode())
    except Exception as e:
        print("FAIL", url, type(e).__name__)
for port in p["direct"]:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
        print("DIRECT-CONNECTED", port)
    except Exception as e:
        print("DIRECT-FAIL", port, type(e).__name__)
"#;

#[test]
fn skills_network_none_and_declared_hosts() {
    if !sandbox_or_skip("skills_network_none_and_declared_hosts") {
        return;
    }
    let env = TestEnv::new();
    append_config(
        &env,
        "\n[network]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\"]\n",
    );
    env.create("acme");
    let (port, hits) = listener("pkg");
    let (port2, hits2) = listener("other");

    // No network declared: the host listener is out of reach, directly and by name.
    skill(
        &env,
        "offline",
        "name = \"offline\"\ndescription = \"no network\"",
        "execute.py",
        FETCH,
    );
    enable(&env, "acme", "offline");
    let params = format!(
        "{{\"urls\": [\"http://pkg.test:{port}/\", \"http://127.0.0.1:{port}/\"], \"direct\": [{port}]}}"
    );
    let o = bh(
        &env,
        &["skill", "run", "acme", "offline", "--params", &params],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        !out.contains("GOT") && !out.contains("DIRECT-CONNECTED"),
        "{out}"
    );
    assert!(out.contains("DIRECT-FAIL"), "{out}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the listener was reached:\n{out}"
    );

    // pkg.test declared: reached through the proxy, and nothing else.
    skill(
        &env,
        "fetch",
        &format!("name = \"fetch\"\ndescription = \"fetches\"\nnetwork = [\"pkg.test:{port}\"]"),
        "execute.py",
        FETCH,
    );
    enable(&env, "acme", "fetch");
    let params = format!(
        "{{\"urls\": [\"http://pkg.test:{port}/\", \"http://127.0.0.1:{port2}/\", \"http://pkg.test:{port2}/\"], \"direct\": [{port}, {port2}]}}"
    );
    let o = bh(
        &env,
        &["skill", "run", "acme", "fetch", "--params", &params],
    );
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        out.contains(&format!("GOT http://pkg.test:{port}/ 200 hello from pkg")),
        "the declared host was not reached:\n{}",
        show(&o)
    );
    assert!(
        out.contains(&format!("FAIL http://127.0.0.1:{port2}/")),
        "{out}"
    );
    assert!(
        out.contains(&format!("FAIL http://pkg.test:{port2}/")),
        "{out}"
    );
    assert!(!out.contains("DIRECT-CONNECTED"), "{out}");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "{out}");
    assert_eq!(hits2.load(Ordering::SeqCst), 0, "{out}");

    // The skill's connections are in the workspace's egress audit log, under its name.
    let o = bh(&env, &["--json", "workspace", "net", "acme", "log"]);
    assert!(o.status.success(), "{}", show(&o));
    let lines: Vec<Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by_skill = |host: &str, decision: &str| {
        lines.iter().any(|l| {
            l["workspace"] == "acme/skill:fetch" && l["host"] == host && l["decision"] == decision
        })
    };
    assert!(by_skill("pkg.test", "allowed"), "{lines:?}");
    assert!(by_skill("pkg.test", "denied"), "{lines:?}");
    let denied = lines
        .iter()
        .find(|l| l["decision"] == "denied")
        .and_then(|l| l["reason"].as_str())
        .unwrap_or("");
    assert!(
        denied.contains("the skill fetch must declare it"),
        "{denied}"
    );

    // The list shows operators which hosts each skill may reach.
    let o = bh(&env, &["--json", "skill", "list"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json list");
    let fetch = v
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "fetch")
        .unwrap();
    assert_eq!(fetch["network"][0], format!("pkg.test:{port}"));
}

#[test]
fn skills_disabled_skill_cannot_run_whatever_the_agent_edits() {
    if !sandbox_or_skip("skills_disabled_skill_cannot_run_whatever_the_agent_edits") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    skill(
        &env,
        "deploy",
        "name = \"deploy\"\ndescription = \"deploys\"",
        "execute.sh",
        "echo DEPLOYED\n",
    );
    // Never enabled.
    let o = bh(&env, &["skill", "run", "acme", "deploy"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("not enabled"), "{}", show(&o));
    assert!(!text(&o.stdout).contains("DEPLOYED"));

    // Enabled then disabled.
    enable(&env, "acme", "deploy");
    let o = bh(&env, &["skill", "run", "acme", "deploy"]);
    assert!(text(&o.stdout).contains("DEPLOYED"), "{}", show(&o));
    let o = bh(&env, &["skill", "disable", "acme", "deploy"]);
    assert!(o.status.success(), "{}", show(&o));

    // The agent (any command in the workspace's sandbox) writes everywhere it can.
    let o = env.sh(
        "acme",
        r#"
for d in /workspace /workspace/.. /tmp / /etc; do
  printf '{"id":"acme","created":0,"skills":["deploy"]}' > "$d/workspace.json" 2>/dev/null
  mkdir -p "$d/skills/deploy" 2>/dev/null && echo enabled > "$d/skills/deploy/enabled" 2>/dev/null
  echo deploy > "$d/.skills" 2>/dev/null
done
find / -xdev -writable -type f 2>/dev/null | while read f; do
  printf '{"skills":["deploy"]}' >> "$f" 2>/dev/null
done
echo edited
"#,
    );
    assert!(text(&o.stdout).contains("edited"), "{}", show(&o));
    let o = bh(&env, &["skill", "run", "acme", "deploy"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(!text(&o.stdout).contains("DEPLOYED"), "{}", show(&o));
    // The same through the library entry point the agent tool uses.
    let p = bulkhead::Platform::open(bulkhead::PlatformConfig {
        state_dir: env.state(),
        launcher: Some(bulkhead_tests::bin("bulkhead-launch")),
    })
    .unwrap();
    let ws = p.workspace("acme").unwrap();
    let reg = bulkhead::skills::Registry::of(&p);
    let r = bulkhead::skills::run_skill(&ws, &reg, "deploy", &serde_json::json!({}), None);
    assert!(
        matches!(&r, Err(bulkhead::Error::Invalid(m)) if m.contains("not enabled")),
        "{r:?}"
    );
    let o = bh(&env, &["--json", "skill", "list", "--workspace", "acme"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["enabled"], false, "{v}");
}

fn write_raw(dir: &Path, id: &str, manifest: &str, entry: Option<&str>) {
    let d = dir.join(id);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("SKILL.md"), manifest).unwrap();
    if let Some(e) = entry {
        std::fs::write(d.join(e), "echo hi\n").unwrap();
    }
}

#[test]
fn skills_malformed_listed_and_bad_ids_refused() {
    let env = TestEnv::new();
    env.create("acme");
    let reg = env.state().join("skills");
    write_raw(
        &reg,
        "good",
        "+++\nname = \"good\"\ndescription = \"fine\"\n+++\nuse it\n",
        Some("execute.sh"),
    );
    write_raw(&reg, "nofront", "just text\n", Some("execute.sh"));
    write_raw(
        &reg,
        "badtimeout",
        "+++\nname = \"x\"\ndescription = \"y\"\ntimeout = 0\n+++\n",
        Some("execute.sh"),
    );
    write_raw(
        &reg,
        "noentry",
        "+++\nname = \"x\"\ndescription = \"y\"\n+++\n",
        None,
    );
    let o = bh(&env, &["--json", "skill", "list"]);
    assert!(o.status.success(), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let get = |id: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed in {v}"))
    };
    assert_eq!(get("good")["status"], "ok");
    assert_eq!(get("good")["network"], serde_json::json!([]));
    for (id, why) in [
        ("nofront", "+++"),
        ("badtimeout", "timeout"),
        ("noentry", "entry point"),
    ] {
        let s = get(id);
        assert_eq!(s["status"], "invalid", "{s}");
        assert!(s["reason"].as_str().unwrap().contains(why), "{s}");
    }
    let o = bh(&env, &["skill", "list"]);
    assert!(text(&o.stdout).contains("nofront\tinvalid"), "{}", show(&o));

    // A malformed skill cannot be enabled; an unknown one is "not found".
    let o = bh(&env, &["skill", "enable", "acme", "nofront"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = bh(&env, &["skill", "show", "nosuch"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let o = bh(&env, &["skill", "enable", "acme", "nosuch"]);
    assert_eq!(o.status.code(), Some(3), "{}", show(&o));
    let o = bh(&env, &["skill", "show", "good"]);
    assert!(text(&o.stdout).contains("use it"), "{}", show(&o));

    for bad in ["../good", "Good", "-x", "a/b", ".x", ""] {
        for args in [
            vec!["skill", "show", bad],
            vec!["skill", "enable", "acme", bad],
            vec!["skill", "disable", "acme", bad],
            vec!["skill", "run", "acme", bad],
        ] {
            let o = bh(&env, &args);
            assert_eq!(o.status.code(), Some(2), "{args:?}: {}", show(&o));
        }
    }
    // workspace.json keeps no bad id.
    let ws = std::fs::read_to_string(env.state().join("workspaces/acme/workspace.json")).unwrap();
    assert!(!ws.contains("\"skills\""), "{ws}");
}

#[test]
fn skills_agent_tools_redact_and_refuse_disabled_skills() {
    use bulkhead::agent::tools::ToolRegistry;
    use bulkhead_tests::mock_llm::{MockLlm, Reply, Script, Step};

    if !sandbox_or_skip("skills_agent_tools_redact_and_refuse_disabled_skills") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    let o = bh(
        &env,
        &["cred", "set", "acme", "github", &format!("token={TOKEN}")],
    );
    assert!(o.status.success(), "cred set: {}", show(&o));
    skill(
        &env,
        "leak",
        "name = \"leak\"\ndescription = \"prints its token\"\ncredentials = [\"github\"]",
        "execute.sh",
        "printf 'token=%s\\n' \"$GITHUB_TOKEN\"; printf '%s' \"$GITHUB_TOKEN\" | base64\n",
    );
    skill(
        &env,
        "deploy",
        "name = \"deploy\"\ndescription = \"deploys\"",
        "execute.sh",
        "echo DEPLOYED\n",
    );
    enable(&env, "acme", "leak");

    let mock = MockLlm::start(
        Script::new()
            .reply(Reply::tool_call("skill_list", serde_json::json!({})))
            .step(
                Step::reply(Reply::tool_call(
                    "skill_execute",
                    serde_json::json!({"skill": "leak", "params": {}}),
                ))
                .after_tool_result(true),
            )
            .step(
                Step::reply(Reply::tool_call(
                    "skill_execute",
                    serde_json::json!({"skill": "deploy"}),
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
    let ws = p.workspace("acme").unwrap();
    let key = bulkhead::CredentialKey::new(KEY);
    let mut tools = ToolRegistry::builtin();
    for t in
        bulkhead::skills::tools::skill_tools(bulkhead::skills::Registry::of(&p), Some(key.clone()))
    {
        tools.register(t).unwrap();
    }
    let mut req = bulkhead::RunRequest::new("use the skills");
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
    let results: Vec<String> = mock
        .requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect();
    let all = results.join("\n---\n");
    assert!(
        !all.contains("Sk1llT0ken"),
        "the token reached the model:\n{all}"
    );
    assert!(!all.contains(&b64(TOKEN.as_bytes(), false, true)), "{all}");
    assert!(all.contains("token=[REDACTED]"), "{all}");
    // skill_list shows only the enabled skill; deploy is refused.
    assert!(
        all.contains("\"leak\"") && !all.contains("\"deploy\","),
        "{all}"
    );
    assert!(all.contains("not enabled"), "{all}");
    assert!(!all.contains("DEPLOYED"), "{all}");
}

#[test]
fn skills_shadowing_credentials_and_timeouts() {
    if !sandbox_or_skip("skills_shadowing_credentials_and_timeouts") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    // Set "ld", key "preload": would be LD_PRELOAD.
    let o = bh(&env, &["cred", "set", "acme", "ld", "preload=/tmp/evil.so"]);
    assert!(o.status.success(), "cred set: {}", show(&o));
    skill(
        &env,
        "shadow",
        "name = \"shadow\"\ndescription = \"d\"\ncredentials = [\"ld\"]",
        "execute.sh",
        "echo RAN\n",
    );
    enable(&env, "acme", "shadow");
    let o = bh(&env, &["skill", "run", "acme", "shadow"]);
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(text(&o.stderr).contains("LD_PRELOAD"), "{}", show(&o));
    assert!(!text(&o.stdout).contains("RAN"));
    assert!(!text(&o.stderr).contains("evil.so"), "a value in an error");

    // Its own timeout: every process killed, exit 124.
    skill(
        &env,
        "slow",
        "name = \"slow\"\ndescription = \"d\"\ntimeout = 1",
        "execute.sh",
        "echo started; sleep 30; echo LATE\n",
    );
    enable(&env, "acme", "slow");
    let t = std::time::Instant::now();
    let (v, o) = run_json(&env, "acme", "slow", "{}");
    assert_eq!(o.status.code(), Some(124), "{}", show(&o));
    assert_eq!(v["timed_out"], true, "{v}");
    assert!(t.elapsed() < Duration::from_secs(15));

    // Parameters are checked against the input schema.
    skill(
        &env,
        "typed",
        "name = \"typed\"\ndescription = \"d\"\n[input_schema]\ntype = \"object\"\nrequired = [\"n\"]\nproperties.n = { type = \"integer\" }",
        "execute.py",
        "import json, sys\nprint(json.dumps({\"double\": json.load(sys.stdin)[\"n\"] * 2}))\n",
    );
    enable(&env, "acme", "typed");
    let (v, o) = run_json(&env, "acme", "typed", "{\"n\": 21}");
    assert_eq!(v["output"]["double"], 42, "{}", show(&o));
    let o = bh(
        &env,
        &[
            "skill",
            "run",
            "acme",
            "typed",
            "--params",
            "{\"n\": \"x\"}",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = bh(
        &env,
        &["skill", "run", "acme", "typed", "--params", "not json"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
}

#[test]
fn skills_cli_run_is_cancelled_by_sigint() {
    if !sandbox_or_skip("skills_cli_run_is_cancelled_by_sigint") {
        return;
    }
    let env = TestEnv::new();
    env.create("acme");
    skill(
        &env,
        "sleeper",
        "name = \"sleeper\"\ndescription = \"sleeps\"\ntimeout = 60",
        "execute.sh",
        "echo started >&2; sleep 50 & sleep 55; echo finished\n",
    );
    enable(&env, "acme", "sleeper");
    let child = cmd(&env)
        .args(["skill", "run", "acme", "sleeper"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Give the sandbox time to start, then interrupt as a terminal would.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let t0 = std::time::Instant::now();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "cancel took {:?}",
        t0.elapsed()
    );
    assert_eq!(o.status.code(), Some(130), "{}", show(&o));
    assert!(text(&o.stderr).contains("cancelled"), "{}", show(&o));
    assert!(!text(&o.stdout).contains("finished"), "{}", show(&o));
    // Nothing of the skill's sandbox is left running.
    let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
    assert!(
        !text(&ps.stdout).lines().any(|l| l.trim() == "sleep 55"),
        "a skill process survived the cancel"
    );
}
