//! The `bulkhead` command line: one client of the library.

use std::io::{Read, Write};
use std::path::PathBuf;

use bulkhead_shared::{Command as WireCommand, ExecRequest, ExitKind, Stream};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::error::{exit, Error, Result};
use crate::platform::{
    IoMaxSetting, LimitsConfig, Platform, PlatformConfig, Workspace, WorkspaceConfig,
};
use crate::util::{human_size, parse_size};

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    failure
  2    invalid usage or input
  3    no such workspace (or session, credential set, memory chunk)
  4    workspace (or session) already exists
  5    doctor: a required isolation layer is missing
  6    cred: wrong credential key or damaged creds.enc
  7    cred: no credential key ($BULKHEAD_CREDENTIAL_KEY or --credential-key-file)
  8    session in use by another run
  9    run: every model failed (each attempt is listed)
  10   run: the step limit was reached without a final answer
  130  run: cancelled (SIGINT/SIGTERM)
  exec: the program's own status, or
  124  timed out (every process of the command was killed)
  125  sandbox setup failed
  126  program not executable
  127  program not found
  137  killed by the memory limit";

/// Run many AI agents on one Linux box, each in its own kernel-enforced sandbox.
#[derive(Debug, Parser)]
#[command(name = "bulkhead", version, after_help = EXIT_CODES)]
pub struct Cli {
    /// State directory (default: $BULKHEAD_STATE_DIR, /var/lib/bulkhead as root, else
    /// $XDG_STATE_HOME/bulkhead).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// File holding the credential passphrase (e.g. a systemd credential); default:
    /// $BULKHEAD_CREDENTIAL_KEY.
    #[arg(long, global = true, value_name = "PATH")]
    pub credential_key_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create, list, show and delete workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Run a program in a workspace's sandbox (cwd /workspace).
    #[command(
        after_help = "Examples:\n  bulkhead exec acme -- ls -la\n  bulkhead exec acme --timeout 10 --memory 256M -- python3 build.py\n  echo hi | bulkhead exec acme -i -- cat"
    )]
    Exec(ExecArgs),
    /// Check which isolation layers this host gives, then start a trial sandbox.
    #[command(
        after_help = "Examples:\n  bulkhead doctor\n  bulkhead --json doctor | jq '.checks[] | select(.ok | not)'\nExit status 5 when a required layer is missing."
    )]
    Doctor,
    /// List, show and delete a workspace's session transcripts.
    #[command(subcommand)]
    Session(crate::sessions::SessionCmd),
    /// Set, list and remove a workspace's encrypted credentials; rekey them all.
    #[command(subcommand)]
    Cred(crate::creds::cli::CredCmd),
    /// Store, search, show and delete a workspace's memory (chunked notes, FTS5 + vectors).
    #[command(subcommand)]
    Memory(crate::memory::cli::MemoryCmd),
    /// Run the agent on a message in a workspace: the model works with tools in the
    /// workspace's sandbox until it answers.
    #[command(
        after_help = "Events (tool calls, retries, fallbacks, compactions) go to stderr, the answer to stdout;\n--json prints every event as a JSON line on stdout instead.\n\nExamples:\n  bulkhead run acme --model anthropic/claude-sonnet-4-5 'list the files and summarize README.md'\n  bulkhead run acme --session s1 --fallback openai/gpt-4o --fallback google/gemini-2.5-flash 'continue'\n  echo 'what changed?' | bulkhead --json run acme --base-url http://127.0.0.1:11434/v1 --model ollama/qwen3 -\nKeys: the workspace's credentials (with --credential-key-file or $BULKHEAD_CREDENTIAL_KEY), then\n$ANTHROPIC_API_KEY, $OPENAI_API_KEY, $GEMINI_API_KEY, … (and *_API_KEYS lists). Exit 9: every model\nfailed; 10: --max-steps reached; 8: the session is in use; 130: cancelled."
    )]
    Run(crate::agent::cli::RunArgs),
    /// List, show, enable, disable and run skills (each run in a sandbox of its own).
    #[command(subcommand)]
    Skill(crate::skills::cli::SkillCmd),
    /// Serve the library's operations as JSON-RPC 2.0 on stdin/stdout, one JSON object per
    /// line (for host apps in any language).
    #[command(
        after_help = "Examples:\n  bulkhead serve --stdio\n  bulkhead serve --describe   # the methods, as OpenRPC 1.2.6 JSON\nEnd of input shuts the server down (in-flight requests get --shutdown-grace, then are cancelled)."
    )]
    Serve(crate::rpc::cli::ServeArgs),
}

#[derive(Debug, Subcommand)]
enum WorkspaceCmd {
    /// Create a workspace.
    #[command(after_help = "Example:\n  bulkhead workspace create acme --memory 1G --pids 512")]
    Create {
        /// Id: [a-z0-9][a-z0-9_-]{0,62}.
        id: String,
        /// Primary model, provider/model (e.g. anthropic/claude-sonnet-4-5).
        #[arg(long, value_name = "PROVIDER/MODEL")]
        model: Option<String>,
        /// Fallback model, provider/model; repeatable, tried in order.
        #[arg(long = "fallback", value_name = "PROVIDER/MODEL")]
        fallbacks: Vec<String>,
        /// Base URL of the model server (self-hosted or local).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// Enable a skill of the platform registry; repeatable.
        #[arg(long = "skill", value_name = "ID")]
        skills: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// Change a workspace's limits (only the ones given). A new --disk or --inodes makes the
    /// workspace a filesystem of that size and copies files/ into it: refused while one of
    /// its sandboxes runs or when the files do not fit.
    #[command(
        after_help = "Examples:\n  bulkhead workspace set acme --disk 10G --inodes 500000\n  bulkhead workspace set acme --memory 2G --pids 1024"
    )]
    Set {
        /// Id.
        id: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        disk: DiskArgs,
    },
    /// List workspaces.
    #[command(
        after_help = "Examples:\n  bulkhead workspace list\n  bulkhead --json workspace list | jq -r '.[].id'"
    )]
    List,
    /// Show one workspace.
    #[command(
        after_help = "Examples:\n  bulkhead workspace show acme\n  bulkhead --json workspace show acme"
    )]
    Show {
        /// Id.
        id: String,
    },
    /// Delete a workspace: stop its sandboxes, wipe its files, sessions and credentials.
    #[command(after_help = "Example:\n  bulkhead workspace delete acme")]
    Delete {
        /// Id.
        id: String,
    },
    /// Show and change which hosts a workspace's sandbox may reach through the egress proxy.
    #[command(after_help = NET_HELP)]
    Net {
        /// Workspace id.
        id: String,
        #[command(subcommand)]
        action: NetCmd,
    },
    /// Add, remove and list a workspace's lifecycle hook executables.
    #[command(after_help = HOOK_HELP)]
    Hook {
        /// Workspace id.
        id: String,
        #[command(subcommand)]
        action: HookCmd,
    },
}

const HOOK_HELP: &str = "\
Events: session_start, before_agent_start, before_tool_call, after_tool_call, after_agent_end,
session_end, on_error. A hook is a host executable (absolute path) chosen by the operator: it
gets the event as JSON on stdin and may print {\"decision\":\"allow\"},
{\"decision\":\"veto\",\"reason\":\"...\"} or {\"decision\":\"rewrite\",\"arguments\":{...}}.
It runs with an empty environment; a failing before_tool_call hook refuses the call.

Examples:
  bulkhead workspace hook acme add before_tool_call /etc/bulkhead/hooks/policy.sh --timeout 2
  bulkhead workspace hook acme add on_error /usr/local/bin/page-oncall --priority -10
  bulkhead workspace hook acme list
  bulkhead workspace hook acme rm before_tool_call /etc/bulkhead/hooks/policy.sh";

#[derive(Debug, Subcommand)]
enum HookCmd {
    /// Add a hook (the same event and path again updates its timeout and priority).
    Add {
        /// The event.
        event: String,
        /// Absolute path of an executable regular file on the host.
        path: PathBuf,
        /// Timeout in seconds (default 5, at most 300).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// Priority: lower runs first (default 0).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        priority: Option<i32>,
    },
    /// Remove a hook.
    Rm {
        /// The event.
        event: String,
        /// The path, as added.
        path: PathBuf,
    },
    /// List the hooks.
    List,
}

const NET_HELP: &str = "\
Patterns: host, *.domain (every subdomain, not the apex) or an IP address ([v6] in brackets),
each with an optional :port. No port means ports 80 and 443 only.
The operator's [network] rules in config.toml (deny, allow_loopback, allow_private,
max_connections_ceiling, max_connections_total) apply on top and no workspace can override them.
Changes apply to the next connection. `deny` only removes patterns from the allowlist: it exits 1
when a host it names stays reachable through another pattern (e.g. *.domain), naming that one.

Examples:
  bulkhead workspace net acme allow pypi.org files.pythonhosted.org '*.githubusercontent.com' github.com:443
  bulkhead workspace net acme deny github.com:443
  bulkhead workspace net acme limits --max-connections 8 --bandwidth 10M
  bulkhead workspace net acme show
  bulkhead --json workspace net acme log --limit 20
  bulkhead workspace net acme none";

#[derive(Debug, Subcommand)]
enum NetCmd {
    /// The policy, the operator's rules, and totals over the audit log.
    Show,
    /// Add host patterns to the allowlist (one already there is noted, not an error).
    Allow {
        /// host, *.domain or IP, optional :port (no port: 80 and 443).
        #[arg(required = true, value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// Remove patterns from the allowlist (one not there is noted, not an error). Removing
    /// the last one leaves the workspace with no network. Exit 1 when something named stays
    /// reachable through another pattern (a wildcard, another port): the removal is kept, and
    /// the message (and `still_allowed_by` in --json) names the pattern to remove as well.
    Deny {
        /// Patterns, written as they were allowed.
        #[arg(required = true, value_name = "PATTERN")]
        patterns: Vec<String>,
    },
    /// No network: empty the allowlist (the caps are kept).
    #[command(name = "none")]
    Off,
    /// Set the caps: connections open at once (default 32, never more than the operator's
    /// `max_connections_ceiling`), bandwidth per direction (default unlimited). Both hold for
    /// all the workspace's sandboxes together, per controller process.
    Limits {
        /// Connections open at once, 1-4096 (clamped to the operator's ceiling), or `default` (32).
        #[arg(long, value_name = "N|default")]
        max_connections: Option<String>,
        /// Bytes per second per direction (K, M, G suffixes), or `unlimited`.
        #[arg(long, value_name = "RATE|unlimited")]
        bandwidth: Option<String>,
    },
    /// Print the audit log (one line per connection), newest last.
    Log {
        /// Most lines (the newest).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
}

#[derive(Debug, Args, Default)]
struct LimitArgs {
    /// Memory limit (bytes, or with K, M, G suffix).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    memory: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<u32>,
    /// CPU weight, 1-10000 (100 = normal).
    #[arg(long, value_name = "N")]
    cpu_weight: Option<u32>,
    /// CPU quota in percent of one CPU.
    #[arg(long, value_name = "PCT")]
    cpu_percent: Option<u32>,
    /// Size of /tmp (bytes, or with K, M, G suffix).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    tmp_size: Option<u64>,
    /// IO weight, 1-10000 (100 = normal); best effort: applied where the kernel offers
    /// io.weight / blkio.weight.
    #[arg(long, value_name = "N")]
    io_weight: Option<u32>,
    /// IO ceilings on the workspace's disk: rbps=SIZE,wbps=SIZE,riops=N,wiops=N (any of
    /// them), or `none`. Refused where the kernel cannot enforce them.
    #[arg(long, value_name = "SPEC")]
    io_max: Option<IoMaxSetting>,
}

impl LimitArgs {
    fn config(&self) -> LimitsConfig {
        LimitsConfig {
            memory_bytes: self.memory,
            pids: self.pids,
            cpu_weight: self.cpu_weight,
            cpu_percent: self.cpu_percent,
            tmp_bytes: self.tmp_size,
            io_weight: self.io_weight,
            io_max: self.io_max,
            disk_bytes: None,
            inodes: None,
        }
    }
}

/// Workspace settings only (not per run): the workspace's own filesystem.
#[derive(Debug, Args, Default)]
struct DiskArgs {
    /// Disk limit: /workspace becomes a filesystem of this size of its own (bytes, or with
    /// K, M, G, T suffix; at least 16M). Needs root; see "Disk limits" in the README.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    disk: Option<u64>,
    /// Inodes (files and directories) of that filesystem; needs --disk.
    #[arg(long, value_name = "N")]
    inodes: Option<u64>,
}

impl DiskArgs {
    fn apply(&self, mut l: LimitsConfig) -> LimitsConfig {
        l.disk_bytes = self.disk.or(l.disk_bytes);
        l.inodes = self.inodes.or(l.inodes);
        l
    }
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// Workspace id.
    id: String,
    /// Kill the program (and everything it started) after SECS seconds; exit 124.
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Feed this process's stdin to the program.
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Add an environment variable (KEY=VALUE); repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[command(flatten)]
    limits: LimitArgs,
    /// Program and arguments.
    #[arg(last = true, required = true, value_name = "PROG")]
    argv: Vec<String>,
}

/// The command-line interface as a clap [`clap::Command`] (man pages, shell completions).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Entry point used by `main.rs`: parses arguments, runs, returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.json;
    let state_dir = cli
        .state_dir
        .clone()
        .unwrap_or_else(crate::state::default_state_dir);
    let setup = crate::config::Config::load(&state_dir).and_then(|cfg| {
        crate::logging::init(&cfg.log).map_err(|e| {
            Error::Invalid(format!(
                "cannot open the log file {}: {e}",
                cfg.log
                    .file
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })
    });
    // A bug fails this command with the internal-error exit code (70), after the panic
    // message on stderr, instead of an abort.
    let result = setup.and_then(|()| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)))
            .unwrap_or_else(|_| Err(Error::Internal("the command failed".into())))
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                let v = json!({"error": e.to_string(), "exit_code": e.exit_code()});
                eprintln!("{v}");
            } else {
                eprintln!("bulkhead: {e}");
            }
            e.exit_code()
        }
    }
}

fn platform(cli: &Cli) -> Result<Platform> {
    let mut cfg = PlatformConfig::default();
    if let Some(d) = &cli.state_dir {
        cfg.state_dir = d.clone();
    }
    Platform::open(cfg)
}

fn run(cli: Cli) -> Result<i32> {
    let p = platform(&cli)?;
    let json = cli.json;
    match cli.command {
        Cmd::Workspace(WorkspaceCmd::Create {
            id,
            model,
            fallbacks,
            base_url,
            skills,
            limits,
            disk,
        }) => {
            let w = p.create_workspace(
                &id,
                WorkspaceConfig {
                    model,
                    fallbacks,
                    base_url,
                    skills,
                    limits: disk.apply(limits.config()),
                    network: Default::default(),
                    hooks: Vec::new(),
                },
            )?;
            if json {
                println!("{}", w.to_json());
            } else {
                println!("created workspace {}", w.id());
            }
            Ok(exit::OK)
        }
        Cmd::Workspace(WorkspaceCmd::List) => {
            let all = p.list_workspaces()?;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(all.iter().map(Workspace::to_json).collect())
                );
            } else {
                for w in all {
                    println!("{}", w.id());
                }
            }
            Ok(exit::OK)
        }
        Cmd::Workspace(WorkspaceCmd::Show { id }) => {
            let w = p.workspace(&id)?;
            let v = w.to_json();
            if json {
                println!("{v}");
            } else {
                let l = &v["limits"];
                println!("id:      {}", w.id());
                println!("path:    {}", w.dir().display());
                println!("files:   {}", w.files_dir().display());
                if let Some(u) = w.record().host_uid {
                    println!("host uid: {u}");
                }
                let c = &w.record().config;
                if let Some(m) = &c.model {
                    println!("model:   {m}");
                }
                if !c.fallbacks.is_empty() {
                    println!("fallbacks: {}", c.fallbacks.join(", "));
                }
                if let Some(u) = &c.base_url {
                    println!("base url: {u}");
                }
                if !c.skills.is_empty() {
                    println!("skills:  {}", c.skills.join(", "));
                }
                println!(
                    "memory:  {} MiB",
                    l["memory_bytes"].as_u64().unwrap_or(0) >> 20
                );
                println!("pids:    {}", l["pids"]);
                println!("cpu:     weight {}", l["cpu_weight"]);
                println!(
                    "io:      weight {}, max {}",
                    l["io_weight"],
                    l["io_max"].as_str().unwrap_or("none")
                );
                println!(
                    "/tmp:    {} MiB",
                    l["tmp_bytes"].as_u64().unwrap_or(0) >> 20
                );
                match (l["disk_bytes"].as_u64().unwrap_or(0), w.disk_usage()) {
                    (0, _) => println!("disk:    no limit (shares the state filesystem)"),
                    (d, Some(u)) => println!(
                        "disk:    {} MiB limit, {} of {} MiB used, {} of {} inodes used",
                        d >> 20,
                        u.used_bytes >> 20,
                        u.size_bytes >> 20,
                        u.inodes_used,
                        u.inodes
                    ),
                    (d, None) => println!("disk:    {} MiB limit (not mounted here)", d >> 20),
                }
            }
            Ok(exit::OK)
        }
        Cmd::Workspace(WorkspaceCmd::Set { id, limits, disk }) => {
            let mut w = p.workspace(&id)?;
            w.set_limits(&disk.apply(limits.config()))?;
            if json {
                println!("{}", w.to_json());
            } else {
                println!("changed the limits of workspace {id}");
            }
            Ok(exit::OK)
        }
        Cmd::Workspace(WorkspaceCmd::Delete { id }) => {
            p.delete_workspace(&id)?;
            if json {
                println!("{}", json!({"deleted": id}));
            } else {
                println!("deleted workspace {id}");
            }
            Ok(exit::OK)
        }
        Cmd::Workspace(WorkspaceCmd::Net { id, action }) => net(&p, &id, action, json),
        Cmd::Workspace(WorkspaceCmd::Hook { id, action }) => hook(&p, &id, action, json),
        Cmd::Exec(args) => exec(&p, args),
        Cmd::Session(c) => crate::sessions::run(&p, c, json),
        Cmd::Cred(c) => crate::creds::cli::run(&p, c, json, cli.credential_key_file.as_deref()),
        Cmd::Memory(c) => crate::memory::cli::run(&p, c, json),
        Cmd::Run(a) => crate::agent::cli::run(&p, a, json, cli.credential_key_file.as_deref()),
        Cmd::Skill(c) => crate::skills::cli::run(&p, c, json, cli.credential_key_file.as_deref()),
        Cmd::Serve(a) => crate::rpc::cli::run(&a, p, cli.credential_key_file.clone()),
        Cmd::Doctor => {
            let r = crate::doctor::run(&p);
            if json {
                println!("{}", serde_json::to_string(&r).unwrap_or_default());
            } else {
                println!("mode: {}", r.mode);
                for c in &r.checks {
                    let mark = if c.ok {
                        "ok     "
                    } else if c.required {
                        "MISSING"
                    } else {
                        "absent "
                    };
                    println!("{mark} {:<16} {}", c.layer, c.detail);
                }
            }
            Ok(if r.ok { exit::OK } else { exit::DOCTOR_MISSING })
        }
    }
}

/// Writes a line to standard output; a closed pipe (`| head`) is not an error.
fn say(line: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("standard output", e))
        }
        _ => Ok(()),
    }
}

fn net_ports(pattern: &str) -> &'static str {
    match crate::net::egress::Pattern::parse(pattern).map(|p| p.port()) {
        Ok(None) => " (ports 80 and 443)",
        _ => "",
    }
}

/// A pattern as a shell word (`'*.pythonhosted.org'`, `'[::1]:8080'`; plain names as is).
fn net_quote(pattern: &str) -> String {
    if pattern
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
    {
        pattern.to_string()
    } else {
        format!("'{pattern}'")
    }
}

/// `bulkhead workspace hook <id> …`. An invalid event, path or timeout is exit 2 and
/// changes nothing; removing a hook that is not there is an error (exit 2).
fn hook(p: &Platform, id: &str, cmd: HookCmd, json: bool) -> Result<i32> {
    use crate::agent::hooks::{HookEventKind, HookSpec};
    let mut w = p.workspace(id)?;
    match cmd {
        HookCmd::Add {
            event,
            path,
            timeout,
            priority,
        } => {
            let event: HookEventKind = event.parse()?;
            let spec = HookSpec {
                event,
                path,
                timeout_secs: timeout,
                priority: priority.unwrap_or(0),
            };
            let replaced = w.add_hook(spec.clone())?;
            if json {
                say(json!({"workspace": w.id(), "added": spec, "replaced": replaced}))?;
            } else {
                say(format_args!(
                    "{} hook {} on {} (timeout {}s, priority {})",
                    if replaced { "updated" } else { "added" },
                    spec.path.display(),
                    spec.event,
                    spec.timeout().as_secs(),
                    spec.priority
                ))?;
            }
        }
        HookCmd::Rm { event, path } => {
            let event: HookEventKind = event.parse()?;
            w.remove_hook(event, &path)?;
            if json {
                say(json!({"workspace": w.id(), "removed": {"event": event, "path": path}}))?;
            } else {
                say(format_args!("removed {event} hook {}", path.display()))?;
            }
        }
        HookCmd::List => {
            let mut hooks = w.hooks().to_vec();
            hooks.sort_by_key(|h| (h.event, h.priority));
            if json {
                say(json!({"workspace": w.id(), "hooks": hooks}))?;
            } else if hooks.is_empty() {
                say(format_args!("no hooks for workspace {}", w.id()))?;
            } else {
                for h in &hooks {
                    say(format_args!(
                        "{:<18} {:>4}  {:>3}s  {}",
                        h.event.as_str(),
                        h.priority,
                        h.timeout().as_secs(),
                        h.path.display()
                    ))?;
                }
            }
        }
    }
    Ok(exit::OK)
}

/// `bulkhead workspace net <id> …`. Decisions: `allow` of a pattern already there and
/// `deny` of one not there succeed with a note (the end state is what was asked); an
/// invalid pattern is exit 2 and changes nothing; a missing workspace is exit 3. `deny` of
/// something another pattern still allows (a wildcard, another port) is exit 1: the
/// removal is kept (it is part of what was asked), but what was asked for, that host being
/// refused, is not the end state, so a script must not take it as done.
fn net(p: &Platform, id: &str, cmd: NetCmd, json: bool) -> Result<i32> {
    let mut w = p.workspace(id)?;
    let note = |m: String| {
        if !json {
            eprintln!("note: {m}");
        }
    };
    match cmd {
        NetCmd::Show => {
            let v = w.net_json(p)?;
            if json {
                say(v)?;
                return Ok(exit::OK);
            }
            let n = w.network();
            say(format_args!("workspace:       {}", w.id()))?;
            if n.is_enabled() {
                say(format_args!(
                    "network:         allow ({} pattern{}; no port = 80 and 443)",
                    n.allow.len(),
                    if n.allow.len() == 1 { "" } else { "s" }
                ))?;
                for a in &n.allow {
                    say(format_args!("  {a}"))?;
                }
            } else {
                say("network:         none (loopback only inside the sandbox)")?;
            }
            let effective = p.operator_network().effective_max_connections(n);
            say(format_args!(
                "max connections: {effective}{} (all the workspace's sandboxes together, per controller process)",
                if effective < n.max_connections() {
                    format!(
                        " (set to {}, capped by the operator's [network] max_connections_ceiling)",
                        n.max_connections()
                    )
                } else if n.max_connections.is_none() {
                    " (default)".into()
                } else {
                    String::new()
                }
            ))?;
            say(format_args!(
                "bandwidth:       {}",
                n.bandwidth_bytes_per_sec
                    .map(|b| format!("{}/s per direction", human_size(b)))
                    .unwrap_or_else(|| "unlimited".into())
            ))?;
            let op = p.operator_network();
            say(format_args!(
                "operator:        deny [{}]; loopback {}; private ranges {}; at most {} connections per workspace, {} in all",
                op.deny.join(", "),
                if op.allow_loopback {
                    "allowed"
                } else {
                    "refused"
                },
                if op.allow_private {
                    "allowed"
                } else {
                    "refused"
                },
                op.max_connections_ceiling,
                op.max_connections_total
            ))?;
            let t = &v["totals"];
            say(format_args!(
                "totals:          {} connections ({} allowed, {} denied, {} failed), {} up, {} down",
                t["connections"],
                t["allowed"],
                t["denied"],
                t["failed"],
                human_size(t["bytes_up"].as_u64().unwrap_or(0)),
                human_size(t["bytes_down"].as_u64().unwrap_or(0))
            ))?;
            say(format_args!(
                "audit log:       {}",
                w.net_audit_log().display()
            ))?;
        }
        NetCmd::Allow { patterns } => {
            let v = w.net_allow(p, &patterns)?;
            if json {
                say(&v)?;
            } else {
                let strs = |k: &str| -> Vec<String> {
                    serde_json::from_value(v[k].clone()).unwrap_or_default()
                };
                let (added, already) = (strs("added"), strs("already_allowed"));
                let refused = v["refused_by_operator"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default();
                for a in &added {
                    say(format_args!(
                        "allowed {a}{} for workspace {}",
                        net_ports(a),
                        w.id()
                    ))?;
                }
                for a in &already {
                    note(format!("{a} was already allowed"));
                }
                for (a, why) in &refused {
                    note(format!(
                        "{a} stays unreachable whatever the allowlist says: {}",
                        why.as_str().unwrap_or_default()
                    ));
                }
            }
        }
        NetCmd::Deny { patterns } => {
            let v = w.net_deny(&patterns)?;
            let still = v["still_allowed_by"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            if json {
                say(&v)?;
            } else {
                let strs = |k: &str| -> Vec<String> {
                    serde_json::from_value(v[k].clone()).unwrap_or_default()
                };
                let (removed, absent) = (strs("removed"), strs("not_present"));
                for r in &removed {
                    say(format_args!("removed {r} from workspace {}", w.id()))?;
                }
                for a in &absent {
                    note(format!("{a} was not in the allowlist (nothing to remove)"));
                }
                for (r, by) in &still {
                    let by: Vec<&str> = by
                        .as_array()
                        .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
                        .unwrap_or_default();
                    let quoted: Vec<String> = by.iter().map(|b| net_quote(b)).collect();
                    eprintln!(
                        "error: {r} is still allowed by {}; to refuse it, remove that too: bulkhead workspace net {} deny {}",
                        by.join(", "),
                        w.id(),
                        quoted.join(" ")
                    );
                }
                if !w.network().is_enabled() {
                    note(format!("workspace {} has no network now", w.id()));
                }
            }
            if !still.is_empty() {
                return Ok(exit::FAILURE);
            }
        }
        NetCmd::Off => {
            let removed = w.update_network(|n| Ok(std::mem::take(&mut n.allow)))?;
            if json {
                say(json!({"workspace": w.id(), "network": "none", "removed": removed}))?;
            } else {
                say(format_args!(
                    "workspace {}: no network (loopback only inside the sandbox)",
                    w.id()
                ))?;
            }
        }
        NetCmd::Limits {
            max_connections,
            bandwidth,
        } => {
            let v = w.net_limits(p, max_connections.as_deref(), bandwidth.as_deref())?;
            let n = w.network();
            let effective = p.operator_network().effective_max_connections(n);
            if json {
                say(v)?;
            } else {
                if effective < n.max_connections() {
                    note(format!(
                        "max connections {} is above the operator's [network] max_connections_ceiling; {effective} apply",
                        n.max_connections()
                    ));
                }
                say(format_args!(
                    "workspace {}: at most {} connections, bandwidth {}",
                    w.id(),
                    effective,
                    n.bandwidth_bytes_per_sec
                        .map(|b| format!("{}/s per direction", human_size(b)))
                        .unwrap_or_else(|| "unlimited".into())
                ))?;
            }
        }
        NetCmd::Log { limit } => {
            let recs = crate::net::proxy::read_audit_log(&w.net_audit_log(), Some(limit))?;
            for r in recs {
                if json {
                    say(serde_json::to_string(&r).unwrap_or_default())?;
                    continue;
                }
                // Hosts, methods and reasons come from what a sandbox sent: escaped.
                use crate::util::text::safe_line;
                if r.suppressed.is_some() {
                    say(format_args!(
                        "{} {}",
                        safe_line(&r.ts),
                        safe_line(r.reason.as_deref().unwrap_or_default())
                    ))?;
                    continue;
                }
                let host = safe_line(&r.host);
                let target = if host.contains(':') {
                    format!("[{host}]:{}", r.port)
                } else {
                    format!("{host}:{}", r.port)
                };
                let tail = match &r.reason {
                    Some(why) if r.decision != crate::net::proxy::Decision::Allowed => {
                        format!(": {}", safe_line(why))
                    }
                    _ => format!(
                        ", {} up, {} down",
                        human_size(r.bytes_up),
                        human_size(r.bytes_down)
                    ),
                };
                say(format_args!(
                    "{} {} {} {} {} ms{}",
                    safe_line(&r.ts),
                    safe_line(&r.method),
                    target,
                    r.decision.as_str(),
                    r.duration_ms,
                    tail
                ))?;
            }
        }
    }
    Ok(exit::OK)
}

fn exec(p: &Platform, args: ExecArgs) -> Result<i32> {
    let ws = p.workspace(&args.id)?;
    let mut env = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::Invalid(format!("--env {kv:?}: expected KEY=VALUE")))?;
        if k.is_empty() {
            return Err(Error::Invalid(format!("--env {kv:?}: empty key")));
        }
        env.push((k.to_string(), v.to_string()));
    }
    let mut stdin = Vec::new();
    if args.stdin {
        std::io::stdin()
            .take(bulkhead_shared::MAX_FRAME_BYTES as u64 / 2)
            .read_to_end(&mut stdin)
            .map_err(|e| Error::Invalid(format!("reading stdin: {e}")))?;
    }
    let timeout_ms = match args.timeout {
        Some(t) if t.is_finite() && t > 0.0 => (t * 1000.0).ceil() as u64,
        Some(_) => {
            return Err(Error::Invalid(
                "--timeout must be a positive number of seconds".into(),
            ))
        }
        None => 0,
    };
    let limits = args.limits.config();
    let memory = ws.limits(&limits).memory_bytes;
    let req = ExecRequest {
        command: WireCommand::Argv(args.argv.clone()),
        cwd: "/workspace".into(),
        env,
        stdin,
        timeout_ms,
        output_cap: u64::MAX / 2,
        kill_stragglers: true,
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let outcome = ws.exec(req, &limits, &mut |stream, data| {
        let _ = match stream {
            Stream::Stdout => out.write_all(data).and_then(|_| out.flush()),
            Stream::Stderr => err.write_all(data).and_then(|_| err.flush()),
        };
    });
    let outcome = match outcome {
        Ok(o) => o,
        Err(e @ Error::Tool(_)) => {
            eprintln!("bulkhead: {e}");
            return Ok(e.exit_code());
        }
        Err(e) => return Err(e),
    };
    let r = &outcome.result;
    let prog = &args.argv[0];
    if r.timed_out {
        eprintln!(
            "bulkhead: {prog} timed out after {}s; every process it started was killed",
            timeout_ms as f64 / 1000.0
        );
        return Ok(exit::EXEC_TIMEOUT);
    }
    Ok(match r.exit {
        ExitKind::Code(c) => c,
        ExitKind::Signal(_) => {
            if outcome.oom_killed {
                eprintln!("bulkhead: {prog} was killed by the memory limit ({} MiB); raise it with --memory", memory >> 20);
                exit::EXEC_OOM
            } else {
                r.exit.shell_status()
            }
        }
    })
}
