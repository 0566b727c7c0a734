//! `bulkhead-gen-docs [OUT]`: the man pages and shell completions of the packages, generated
//! from the code so they cannot drift from it.
//!
//! - `OUT/man/man1/bulkhead.1` and one page per subcommand (`bulkhead-workspace-create.1`,
//!   …): the controller's clap command (`bulkhead::cli::command`), plus the state
//!   directory, environment and exit codes.
//! - `OUT/man/man8/bulkhead-launch.8`: the launcher's numbered setup sequence (docs/launcher-audit.md,
//!   between the `launcher-sequence` markers, kept in step with `launcher/src/lib.rs` by a
//!   test), its exit codes (`bulkhead_shared::exit`, `SetupStep`) and the privileged mode.
//! - `OUT/man/man5/bulkhead-policy.5`: `/etc/bulkhead/launch.toml` (the packaged file is the
//!   example) and `config.toml` (the example in `controller/src/config.rs`'s documentation,
//!   and the `BULKHEAD_*` variables that file reads).
//! - `OUT/completions/{bulkhead.bash,_bulkhead,bulkhead.fish}`.
//!
//! It first checks that the packaged `launch.toml` and `config.toml` parse with the
//! launcher's and the controller's own parsers. `OUT` defaults to `target`. `make docs` runs
//! it (after `make release`) and gzips the pages.

use std::path::{Path, PathBuf};

use bulkhead_shared::exit;
use bulkhead_shared::SetupStep;
use clap_complete::Shell;
use roff::{bold, italic, roman, Inline, Roff};

const AUDIT_MAP: &str = include_str!("../../../docs/launcher-audit.md");
const LAUNCH_TOML: &str = include_str!("../../../packaging/launch.toml");
const CONFIG_TOML: &str = include_str!("../../../packaging/config.toml");
const CONFIG_RS: &str = include_str!("../../../controller/src/config.rs");
const VERSION: &str = env!("CARGO_PKG_VERSION");

const STEPS: [SetupStep; 13] = SetupStep::ALL;

/// `launch.toml` keys: name, type, meaning. `main` checks each appears in the packaged file
/// and warns when the launcher's parser (`policy/src/launchconf.rs`) has a key not here.
const LAUNCH_KEYS: &[(&str, &str, &str)] = &[
    ("allowed_users", "array of names or uids", "Users who may call the launcher. root is never listed (it needs no permission)."),
    ("allowed_groups", "array of names or gids", "Groups whose members (primary or supplementary) may call the launcher. At least one of allowed_users and allowed_groups must be set."),
    ("state_roots", "array of absolute paths", "Workspace directories, and directories bound into skill sandboxes, must lie strictly under one of these, reached without following a symlink. Must not be empty."),
    ("host_id_start", "integer", "First host uid/gid of the sandboxes; each workspace runs as one host id of the range. At least 100000; the range must not overlap real accounts."),
    ("host_id_count", "integer", "How many host ids the range has (at most one workspace per id)."),
    ("cgroup_parent", "string, optional", "A cgroup v2 path from the cgroup root (\"/bulkhead.slice\"): the caller's cgroup must be this one or lie inside it."),
    ("bind_paths", "array of absolute paths", "Host directories that may additionally be bound read-only into sandboxes."),
    ("id_registry", "absolute path, optional", "A root-owned directory where the launcher records which caller holds each host id (one file per id); a setuid caller is refused an id another caller holds, and the controller takes another. Unset: one pool for every caller."),
    ("max_ids_per_caller", "integer", "With id_registry: the most host ids one caller may hold (claims are never released); a claim beyond it is refused. Default 16384."),
    ("limits.memory_max", "size", "Largest memory limit a sandbox may ask for."),
    ("limits.swap_max", "size", "Largest swap limit."),
    ("limits.pids_max", "integer", "Most processes and threads in one sandbox."),
    ("limits.tmp_max", "size", "Largest /tmp."),
    ("limits.shm_max", "size", "Largest /dev/shm."),
    ("limits.nofile_max", "integer", "Most open files per process."),
    ("limits.cpu_weight_max", "integer", "Highest cpu weight (1-10000; default 10000)."),
    ("limits.cpu_percent_max", "integer, optional", "Most CPU one sandbox may use, in percent of one CPU (200 = two CPUs); when set, a sandbox without a CPU quota is refused too."),
    ("limits.disk_max", "size, optional", "Largest disk limit a sandbox's /workspace may have (16M to 16T); when set, every writable /workspace must be its own ext4 filesystem of at most this size (see docs/disk-limits.md)."),
    ("limits.inodes_max", "integer, optional", "Most inodes a sandbox's /workspace may have; when set, every writable /workspace needs an inode limit of at most this."),
];

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    if let Err(e) = run(&out) {
        eprintln!("bulkhead-gen-docs: {e}");
        std::process::exit(1);
    }
}

type Res<T> = Result<T, String>;

fn write(path: &Path, text: &str) -> Res<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(out: &Path) -> Res<()> {
    // The packaged configuration files must be ones the launcher and the controller accept.
    bulkhead_policy::LaunchConfig::parse(LAUNCH_TOML)
        .map_err(|e| format!("packaging/launch.toml: {e}"))?;
    bulkhead::config::Config::parse(CONFIG_TOML, "packaging/config.toml")
        .map_err(|e| e.to_string())?;
    let man = out.join("man");
    let comp = out.join("completions");
    for d in [
        man.join("man1"),
        man.join("man5"),
        man.join("man8"),
        comp.clone(),
    ] {
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    // bulkhead(1) and one page per subcommand.
    let cmd = bulkhead::cli::command();
    clap_mangen::generate_to(cmd.clone(), man.join("man1")).map_err(|e| e.to_string())?;
    write(
        &man.join("man1/bulkhead.1"),
        &bulkhead_1(cmd.clone().disable_help_subcommand(true))?,
    )?;
    // Completions.
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut c = cmd.clone();
        clap_complete::generate_to(shell, &mut c, "bulkhead", &comp).map_err(|e| e.to_string())?;
    }
    write(&man.join("man8/bulkhead-launch.8"), &launch_8()?)?;
    write(&man.join("man5/bulkhead-policy.5"), &policy_5()?)?;
    check_launch_keys();
    Ok(())
}

/// Text with `code` spans in bold, the rest roman (Markdown backticks as in the README).
fn md(text: &str) -> Vec<Inline> {
    text.split('`')
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| if i % 2 == 1 { bold(s) } else { roman(s) })
        .collect()
}

fn title(r: &mut Roff, name: &str, section: &str, manual: &str) {
    r.control(
        "TH",
        [
            name.to_uppercase().as_str(),
            section,
            "",
            &format!("bulkhead {VERSION}"),
            manual,
        ],
    );
}

fn sh(r: &mut Roff, s: &str) {
    r.control("SH", [s]);
}

fn para(r: &mut Roff, inl: Vec<Inline>) {
    r.control("PP", []).text(inl);
}

fn tp(r: &mut Roff, tag: Vec<Inline>, body: Vec<Inline>) {
    r.control("TP", []).text(tag).text(body);
}

fn verbatim(r: &mut Roff, text: &str) {
    r.control("PP", []).control("nf", []).control("RS", ["4"]);
    for line in text.lines() {
        r.text([roman(line)]);
    }
    r.control("RE", []).control("fi", []);
}

fn bulkhead_1(cmd: clap::Command) -> Res<String> {
    let man = clap_mangen::Man::new(cmd)
        .section("1")
        .manual("bulkhead manual")
        .source(format!("bulkhead {VERSION}"));
    let mut buf = Vec::new();
    man.render_title(&mut buf).map_err(|e| e.to_string())?;
    man.render_name_section(&mut buf)
        .map_err(|e| e.to_string())?;
    man.render_synopsis_section(&mut buf)
        .map_err(|e| e.to_string())?;
    man.render_description_section(&mut buf)
        .map_err(|e| e.to_string())?;
    man.render_options_section(&mut buf)
        .map_err(|e| e.to_string())?;
    man.render_subcommands_section(&mut buf)
        .map_err(|e| e.to_string())?;
    let mut r = Roff::new();
    sh(&mut r, "STATE DIRECTORY");
    para(&mut r, md("State lives in `--state-dir`, else `$BULKHEAD_STATE_DIR`, else `/var/lib/bulkhead` as root, else `$XDG_STATE_HOME/bulkhead` (`~/.local/state/bulkhead`). It holds `config.toml` (see bulkhead-policy(5)), `skills/` and `workspaces/<id>/`: `workspace.json`, `files/` (the only host directory a sandbox sees, at `/workspace`), `sessions/`, `memory.db`, `creds.enc`, `net-audit.log`, `run/`."));
    para(&mut r, md("The package runs the controller as user `bulkhead` with state in `/var/lib/bulkhead` (mode 0700), one `bulkhead serve --stdio` per connection to `/run/bulkhead/bulkhead.sock` (units `bulkhead.socket`, `bulkhead@.service`)."));
    sh(&mut r, "ENVIRONMENT");
    for (var, what) in env_vars() {
        tp(&mut r, vec![bold(var)], md(&what));
    }
    sh(&mut r, "EXIT STATUS");
    let codes = bulkhead_exit_codes();
    for (code, what) in &codes {
        tp(&mut r, vec![bold(code)], vec![roman(what)]);
    }
    sh(&mut r, "FILES");
    files(&mut r);
    sh(&mut r, "SEE ALSO");
    para(
        &mut r,
        vec![
            bold("bulkhead-launch"),
            roman("(8), "),
            bold("bulkhead-policy"),
            roman("(5), "),
            bold("systemd.socket"),
            roman("(5); each subcommand has its page: "),
            bold("bulkhead-workspace"),
            roman("(1), "),
            bold("bulkhead-exec"),
            roman("(1), "),
            bold("bulkhead-run"),
            roman("(1), …"),
        ],
    );
    let mut text = String::from_utf8(buf).map_err(|e| e.to_string())?;
    text.push_str(&r.to_roff());
    let mut buf = Vec::new();
    man.render_version_section(&mut buf)
        .map_err(|e| e.to_string())?;
    text.push_str(&String::from_utf8(buf).map_err(|e| e.to_string())?);
    Ok(text)
}

/// The exit codes listed in the CLI's own help (`bulkhead --help`), one per line.
fn bulkhead_exit_codes() -> Vec<(String, String)> {
    let help = bulkhead::cli::command()
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut out = Vec::new();
    let mut prefix = String::new();
    for line in help.lines().skip_while(|l| !l.starts_with("Exit codes")) {
        let t = line.trim();
        match t.split_once(char::is_whitespace) {
            Some((code, what)) if code.chars().all(|c| c.is_ascii_digit()) => {
                out.push((code.to_string(), format!("{prefix}{}", what.trim())));
            }
            // "exec: the program's own status, or": a line of its own, and the scope of
            // the codes that follow.
            _ if t.ends_with(" or") => {
                let what = t.trim_end_matches(" or").trim_end_matches(',');
                out.push(("n".into(), what.to_string()));
                if let Some((scope, _)) = what.split_once(": ") {
                    prefix = format!("{scope}: ");
                }
            }
            _ => {}
        }
    }
    out
}

/// `BULKHEAD_*` variables: those `config.rs` reads, and the few read elsewhere.
fn env_vars() -> Vec<(String, String)> {
    let mut v = vec![
        (
            "BULKHEAD_STATE_DIR".to_string(),
            "The state directory (see above).".to_string(),
        ),
        (
            "BULKHEAD_CREDENTIAL_KEY".into(),
            "The credential passphrase, when `--credential-key-file` is not given.".into(),
        ),
        (
            "BULKHEAD_NEW_CREDENTIAL_KEY".into(),
            "`cred rekey`: the new passphrase, when `--new-key-file` is not given.".into(),
        ),
    ];
    for (i, _) in CONFIG_RS.match_indices("get(\"BULKHEAD_") {
        let rest = &CONFIG_RS[i + 5..];
        let Some(end) = rest.find('"') else { continue };
        let var = &rest[..end];
        if v.iter().any(|(n, _)| n == var) {
            continue;
        }
        let key = config_key_for(var);
        v.push((
            var.to_string(),
            match key {
                Some(k) => format!("Overrides `{k}` of `config.toml` (see bulkhead-policy(5))."),
                None => "See bulkhead-policy(5).".into(),
            },
        ));
    }
    v
}

/// The `config.toml` key whose comment in `config.rs` names `var`.
fn config_key_for(var: &str) -> Option<String> {
    let mut section = String::new();
    for line in config_example().lines() {
        let t = line.trim();
        if let Some(s) = t.strip_prefix('[') {
            section = s.split(']').next().unwrap_or("").to_string();
        } else if t.contains(var) {
            let key = t.split('=').next()?.trim();
            return Some(format!("{section}.{key}"));
        }
    }
    None
}

/// The ```toml example of `config.rs`'s module documentation.
fn config_example() -> String {
    CONFIG_RS
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| !l.starts_with("```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn files(r: &mut Roff) {
    for (path, what) in [
        ("/usr/bin/bulkhead", "The controller, bulkhead(1)."),
        ("/usr/libexec/bulkhead/bulkhead-launch", "The launcher, setuid root, mode 4750 root:bulkhead (see bulkhead-launch(8))."),
        ("/usr/libexec/bulkhead/bulkhead-worker", "pid 1 inside each sandbox; the launcher runs the one next to itself."),
        ("/etc/bulkhead/launch.toml", "The launcher's rules (see bulkhead-policy(5))."),
        ("/etc/bulkhead/config.toml", "The platform configuration; /var/lib/bulkhead/config.toml links to it (see bulkhead-policy(5))."),
        ("/var/lib/bulkhead", "The service's state directory."),
        ("/run/bulkhead/bulkhead.sock", "The JSON-RPC socket (bulkhead.socket; group bulkhead)."),
    ] {
        tp(r, vec![bold(path)], md(what));
    }
}

/// The numbered list between docs/launcher-audit.md's `launcher-sequence` markers.
fn launcher_sequence() -> Res<Vec<String>> {
    let start = AUDIT_MAP
        .find("<!-- launcher-sequence -->")
        .ok_or("docs/launcher-audit.md: no <!-- launcher-sequence --> marker")?;
    let end = AUDIT_MAP
        .find("<!-- /launcher-sequence -->")
        .ok_or("docs/launcher-audit.md: no <!-- /launcher-sequence --> marker")?;
    let mut steps: Vec<String> = Vec::new();
    for line in AUDIT_MAP[start..end].lines().skip(1) {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        match t.split_once(". ") {
            Some((n, rest)) if n.parse::<usize>() == Ok(steps.len() + 1) => {
                steps.push(rest.to_string())
            }
            _ => match steps.last_mut() {
                Some(s) => {
                    s.push(' ');
                    s.push_str(t);
                }
                None => return Err(format!("docs/launcher-audit.md: launcher sequence: {t:?}")),
            },
        }
    }
    if steps.len() != STEPS.len() {
        return Err(format!(
            "docs/launcher-audit.md lists {} launcher steps, SetupStep has {}",
            steps.len(),
            STEPS.len()
        ));
    }
    for (i, (s, step)) in steps.iter().zip(STEPS).enumerate() {
        if step.exit_code() != exit::LAUNCH_SETUP_BASE + i as i32 {
            return Err(format!("SetupStep::{step:?} is not step {}", i + 1));
        }
        if !s.starts_with(step.name()) {
            return Err(format!(
                "docs/launcher-audit.md launcher step {:?} does not start with {:?}",
                s,
                step.name()
            ));
        }
    }
    Ok(steps)
}

fn launch_8() -> Res<String> {
    let steps = launcher_sequence()?;
    let mut r = Roff::new();
    title(&mut r, "bulkhead-launch", "8", "bulkhead manual");
    sh(&mut r, "NAME");
    r.text([roman(
        "bulkhead-launch - build one bulkhead sandbox, then supervise it",
    )]);
    sh(&mut r, "SYNOPSIS");
    r.text([bold("/usr/libexec/bulkhead/bulkhead-launch")]);
    r.control("br", []);
    r.text([
        bold("/usr/libexec/bulkhead/bulkhead-launch"),
        roman(" [ "),
        bold("--version"),
        roman(" | "),
        bold("--help"),
        roman(" ]"),
    ]);
    sh(&mut r, "DESCRIPTION");
    para(&mut r, md("`bulkhead-launch` is started by `bulkhead`(1), never by hand: with the controller's socket on fd 3, a report pipe on fd 1 and, for a sandbox with controlled egress, the egress channel on fd 5. It reads one launch spec, re-validates every field, builds the sandbox in the numbered steps below and executes `bulkhead-worker`, the one next to its own executable, as pid 1 inside it. It then stays as the sandbox's supervisor: it waits for the worker, kills it on SIGTERM, SIGINT or SIGHUP, reports OOM kills and removes the sandbox's cgroup."));
    para(&mut r, md("It fails closed: a layer that cannot be applied is an error, never a silent downgrade. A failed step sends a structured error (step, errno, path) to the controller, leaves nothing behind and exits with the step's code (EXIT STATUS)."));
    sh(&mut r, "PRIVILEGED MODE");
    para(&mut r, md("Installed from the package, the launcher is setuid root with mode 4750, owner root, group `bulkhead`: only root and members of group `bulkhead` can execute it at all (the controller runs as user `bulkhead`). File capabilities were not used: the set it needs (SYS_ADMIN, SETUID, SETGID, DAC_OVERRIDE, …) is root-equivalent anyway, and file capabilities do not survive every package format and filesystem."));
    para(&mut r, md("A setuid launcher takes no path and no rule from its caller. It reads `/etc/bulkhead/launch.toml` (bulkhead-policy(5)) and refuses to run unless root owns that file and neither its group nor others can write it. It then refuses a caller not in `allowed_users` or `allowed_groups`, a workspace directory (or a directory to bind) that is not strictly under one of `state_roots` or is reached through a symlink, a caller whose cgroup is not inside `cgroup_parent` when that is set, and any limit above the `[limits]` ceilings. Each workspace runs as its own host uid/gid from `host_id_start` .. `host_id_start + host_id_count - 1`, never as root and never as the caller; inside, the sandbox is uid/gid 1000 with every capability dropped (step 9) and `no_new_privs` set (step 10). The workspace and any bound directory are opened with the caller's own permissions and must be the caller's; they are mounted id-mapped, so files stay the caller's on disk and belong to the sandbox user inside. All cgroup work is done with the caller's effective uid and gid: the caller needs a delegated cgroup (systemd's Delegate=yes)."));
    para(&mut r, md("The launcher's own privileges end with the sandbox's setup: what the worker runs has none. `no_new_privs` on the caller (systemd's `NoNewPrivileges=yes`, or any option that implies it) makes the kernel ignore the setuid bit; the packaged `bulkhead@.service` leaves it off for that reason."));
    sh(&mut r, "ROOTLESS MODE");
    para(&mut r, md("Without the setuid bit (as built in `target/`), the launcher runs as its caller with unprivileged user namespaces: each sandbox maps uid/gid 1000 inside to the caller, and cgroups come from a delegated cgroup (systemd `Delegate=yes`). `bulkhead doctor` tells which mode a host gives and whether every layer works."));
    sh(&mut r, "SEQUENCE");
    for (i, s) in steps.iter().enumerate() {
        r.control("IP", [format!("{}.", i + 1).as_str(), "4"]);
        r.text(md(s));
    }
    sh(&mut r, "EXIT STATUS");
    tp(
        &mut r,
        vec![bold("0")],
        vec![roman("The worker ran and exited cleanly.")],
    );
    let codes = [
        (
            exit::LAUNCH_WORKER_ERROR,
            "The worker exited with an error.",
        ),
        (
            exit::LAUNCH_USAGE,
            "Bad invocation (arguments, no socket on fd 3).",
        ),
        (
            exit::LAUNCH_PROTOCOL,
            "The launch spec could not be read or decoded.",
        ),
    ];
    for (c, what) in codes {
        tp(&mut r, vec![bold(c.to_string())], vec![roman(what)]);
    }
    for step in STEPS {
        tp(
            &mut r,
            vec![bold(step.exit_code().to_string())],
            vec![roman(format!(
                "Setup step {} ({}) failed.",
                step.exit_code() - exit::LAUNCH_SETUP_BASE + 1,
                step.name()
            ))],
        );
    }
    tp(
        &mut r,
        vec![bold("128"), roman(" + "), italic("n")],
        vec![
            roman("The worker was killed by signal "),
            italic("n"),
            roman("."),
        ],
    );
    sh(&mut r, "FILES");
    files(&mut r);
    sh(&mut r, "SEE ALSO");
    para(
        &mut r,
        vec![
            bold("bulkhead"),
            roman("(1), "),
            bold("bulkhead-policy"),
            roman("(5), "),
            bold("user_namespaces"),
            roman("(7), "),
            bold("cgroups"),
            roman("(7), "),
            bold("landlock"),
            roman("(7), "),
            bold("seccomp"),
            roman("(2)"),
        ],
    );
    Ok(r.render())
}

fn policy_5() -> Res<String> {
    let mut r = Roff::new();
    title(&mut r, "bulkhead-policy", "5", "bulkhead manual");
    sh(&mut r, "NAME");
    r.text([roman(
        "bulkhead-policy - /etc/bulkhead/launch.toml and config.toml, bulkhead's configuration files",
    )]);
    sh(&mut r, "SYNOPSIS");
    r.text([bold("/etc/bulkhead/launch.toml")]);
    r.control("br", []);
    r.text([italic("STATE_DIR"), bold("/config.toml")]);
    r.control("br", []);
    r.text([bold("/etc/bulkhead/config.toml")]);
    sh(&mut r, "DESCRIPTION");
    para(&mut r, md("Two TOML files. `launch.toml` is the operator's policy for the setuid-root launcher, bulkhead-launch(8): who may use it and the most any sandbox may get. Only root can change it, and nothing a caller passes can widen it. `config.toml` is the controller's platform configuration: logging, defaults for new workspaces, the launcher's path, the egress and model-server rules no workspace can override. Unknown keys are errors in both, never ignored."));
    sh(&mut r, "LAUNCH.TOML");
    para(&mut r, md("Read by the launcher at every start when it runs setuid root. It must be a regular file owned by root that neither its group nor others can write, or the launcher refuses to run. Sizes are a number of bytes or a string with a K, M, G or T suffix (\"512M\", \"1.5G\", \"8G\"). A request beyond the rules is refused, never clamped."));
    for (key, ty, what) in LAUNCH_KEYS {
        tp(
            &mut r,
            vec![bold(*key), roman(" ("), italic(*ty), roman(")")],
            vec![roman(*what)],
        );
    }
    para(&mut r, vec![roman("The packaged file:")]);
    verbatim(&mut r, LAUNCH_TOML);
    sh(&mut r, "CONFIG.TOML");
    para(&mut r, md("Read by the controller from its state directory: `--state-dir`, else `$BULKHEAD_STATE_DIR`, else `/var/lib/bulkhead` as root, else `$XDG_STATE_HOME/bulkhead`. The package installs `/etc/bulkhead/config.toml` and links `/var/lib/bulkhead/config.toml` (the service's) to it. `BULKHEAD_*` environment variables override the keys they name; the `[network]`, `[llm]` and embedding-address rules are the operator's and come from the file only. Every key:"));
    verbatim(&mut r, &config_example());
    sh(&mut r, "ENVIRONMENT");
    for (var, what) in env_vars() {
        tp(&mut r, vec![bold(&var)], md(&what));
    }
    sh(&mut r, "SEE ALSO");
    para(
        &mut r,
        vec![
            bold("bulkhead"),
            roman("(1), "),
            bold("bulkhead-launch"),
            roman("(8)"),
        ],
    );
    Ok(r.render())
}

/// Warns when the packaged launch.toml or the launcher's parser disagree with `LAUNCH_KEYS`.
fn check_launch_keys() {
    for (key, _, _) in LAUNCH_KEYS {
        let leaf = key.rsplit('.').next().unwrap_or(key);
        if !LAUNCH_TOML.contains(leaf) && *key != "limits.swap_max" {
            eprintln!("bulkhead-gen-docs: warning: packaging/launch.toml does not mention {key}");
        }
    }
    let parser = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policy/src/launchconf.rs");
    let Ok(src) = std::fs::read_to_string(&parser) else {
        return;
    };
    for line in src.lines() {
        if let Some(rest) = line.trim().strip_prefix("pub ") {
            if let Some((field, _)) = rest.split_once(':') {
                let field = field.trim();
                if field.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && field != "limits"
                    && !LAUNCH_KEYS
                        .iter()
                        .any(|(k, _, _)| k.rsplit('.').next() == Some(field))
                {
                    eprintln!("bulkhead-gen-docs: warning: {} has a key `{field}` that bulkhead-policy(5) does not document", parser.display());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
