//! Freezing a workspace's running sandboxes, and thawing them after.
//!
//! While a skill holding credentials works on a workspace's files, nothing the tenant started
//! may run: a background process in the agent's sandbox could rewrite the files the skill is
//! reading (plant a `.git/config` after the skill looked) while the secrets are in use. The
//! skill run freezes every other sandbox of the workspace first ([`freeze`], through
//! `Workspace::freeze_sandboxes`) and thaws them when it ends ([`Frozen`]'s drop).
//!
//! How, per sandbox, from the cgroup directories its launcher reported:
//! - cgroup v2: `cgroup.freeze` = 1, then wait for `frozen 1` in `cgroup.events`;
//! - a v1 `freezer` directory: `freezer.state` = `FROZEN`, wait until it reads `FROZEN`;
//! - v1 without a freezer hierarchy (the launcher places sandboxes in memory, pids and cpu):
//!   `SIGSTOP` to every process listed in the sandbox cgroup's `cgroup.procs`, through a
//!   pidfd opened before the pid is checked to still be listed (a reused pid is never
//!   signalled), repeated until two passes in a row find every listed process stopped.
//!   Thawing sends `SIGCONT` through the same pidfds.
//!
//! Anything else (a timeout, a permission error, a cgroup path that is not under
//! `/sys/fs/cgroup`) is an error; the caller then stops that sandbox instead.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long one sandbox may take to freeze.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(5);
/// Most processes read from one `cgroup.procs` (the launcher's pids limit is far below).
const MAX_PIDS: usize = 1 << 16;
/// Where cgroup hierarchies are mounted; a reported directory elsewhere is refused.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One running sandbox as its run file (`workspaces/<id>/run/<launcher pid>`) records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunEntry {
    /// The launcher's pid.
    pub launcher_pid: u32,
    /// Its start time (clock ticks since boot), to tell it from a reused pid.
    pub start: u64,
    /// The sandbox's cgroup directories on the host (one for v2, one per v1 hierarchy).
    pub cgroup_dirs: Vec<PathBuf>,
}

impl RunEntry {
    /// Parses `"<pid> <start>\n"` followed by one cgroup directory per line (files written
    /// before the directories were recorded have none).
    pub fn parse(text: &str) -> Option<RunEntry> {
        let mut lines = text.lines();
        let mut first = lines.next()?.split_whitespace();
        let launcher_pid = first.next()?.parse().ok()?;
        let start = first.next()?.parse().ok()?;
        let cgroup_dirs = lines
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect();
        Some(RunEntry {
            launcher_pid,
            start,
            cgroup_dirs,
        })
    }

    /// The run file's text.
    pub fn render(&self) -> String {
        let mut s = format!("{} {}\n", self.launcher_pid, self.start);
        for d in &self.cgroup_dirs {
            s.push_str(&d.to_string_lossy());
            s.push('\n');
        }
        s
    }
}

/// How one sandbox is held.
#[derive(Debug)]
enum Held {
    /// A freezer file written; `thaw` is written back.
    Cgroup { file: PathBuf, thaw: &'static str },
    /// Processes stopped with `SIGSTOP`, by pidfd.
    Stopped(Vec<OwnedFd>),
}

/// Sandboxes frozen by this process; thawed on drop.
#[derive(Debug, Default)]
pub struct Frozen {
    held: Vec<Held>,
}

impl Frozen {
    /// Number of sandboxes held frozen.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// None held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Adds the sandboxes `other` holds (they are thawed with these).
    pub fn merge(&mut self, mut other: Frozen) {
        self.held.append(&mut other.held);
    }

    /// Thaws every sandbox now (also done on drop).
    pub fn thaw(mut self) {
        self.thaw_all();
    }

    fn thaw_all(&mut self) {
        for h in self.held.drain(..) {
            match h {
                Held::Cgroup { file, thaw } => {
                    if let Err(e) = write_file(&file, thaw) {
                        log::warn!(target: "sandbox", "cannot thaw {}: {e}", file.display());
                    }
                }
                Held::Stopped(fds) => {
                    for fd in fds {
                        // ESRCH: it died meanwhile (killed with its sandbox); nothing to do.
                        let _ =
                            rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::CONT);
                    }
                }
            }
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.thaw_all();
    }
}

/// A cgroup directory reported by a launcher, checked: absolute, under [`CGROUP_ROOT`],
/// no `.` or `..` components.
pub fn checked_cgroup_dir(dir: &Path) -> Result<&Path, String> {
    // On the text: `Path::components` drops `.` and repeated `/`.
    let plain = dir.to_str().is_some_and(|t| {
        t.strip_prefix('/').is_some_and(|rest| {
            rest.split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
        })
    });
    if !dir.is_absolute()
        || !plain
        || !dir.starts_with(CGROUP_ROOT)
        || dir == Path::new(CGROUP_ROOT)
    {
        return Err(format!(
            "{} is not a cgroup directory under {CGROUP_ROOT}",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Freezes the sandbox `entry` describes (see the module doc). The caller has checked that
/// its launcher is alive.
pub fn freeze(entry: &RunEntry) -> Result<Frozen, String> {
    if entry.cgroup_dirs.is_empty() {
        return Err("its run file records no cgroup directory".into());
    }
    let dirs = entry
        .cgroup_dirs
        .iter()
        .map(|d| checked_cgroup_dir(d))
        .collect::<Result<Vec<_>, _>>()?;
    let mut frozen = Frozen::default();
    // A freezer where there is one (v2: the one directory; v1: a `freezer` hierarchy).
    for dir in &dirs {
        if dir.join("cgroup.freeze").exists() {
            freeze_file(dir, "cgroup.freeze", "1", "0", &mut frozen, |d| {
                Ok(fs::read_to_string(d.join("cgroup.events"))
                    .map_err(|e| e.to_string())?
                    .lines()
                    .any(|l| l.trim() == "frozen 1"))
            })?;
            return Ok(frozen);
        }
        if dir.join("freezer.state").exists() {
            freeze_file(dir, "freezer.state", "FROZEN", "THAWED", &mut frozen, |d| {
                Ok(fs::read_to_string(d.join("freezer.state"))
                    .map_err(|e| e.to_string())?
                    .trim()
                    == "FROZEN")
            })?;
            return Ok(frozen);
        }
    }
    stop_processes(&dirs[0].join("cgroup.procs"), &mut frozen)?;
    Ok(frozen)
}

fn freeze_file(
    dir: &Path,
    name: &str,
    value: &str,
    thaw: &'static str,
    frozen: &mut Frozen,
    done: impl Fn(&Path) -> Result<bool, String>,
) -> Result<(), String> {
    let file = dir.join(name);
    write_file(&file, value).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    // Held from now on: a failure below thaws it when `frozen` is dropped.
    frozen.held.push(Held::Cgroup { file, thaw });
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if done(dir)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not freeze within {} s",
                dir.display(),
                FREEZE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn write_file(path: &Path, value: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(value.as_bytes())
}

fn read_pids(procs: &Path) -> Result<Vec<i32>, String> {
    let text =
        fs::read_to_string(procs).map_err(|e| format!("cannot read {}: {e}", procs.display()))?;
    let pids: Vec<i32> = text
        .split_whitespace()
        .filter_map(|w| w.parse::<i32>().ok())
        .filter(|p| *p > 0)
        .take(MAX_PIDS + 1)
        .collect();
    if pids.len() > MAX_PIDS {
        return Err(format!("{} lists too many processes", procs.display()));
    }
    Ok(pids)
}

/// `T` (stopped) or `t` (traced) in `/proc/<pid>/stat`, or gone (a zombie or reaped).
fn is_stopped(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .and_then(|rest| rest.chars().next());
    matches!(state, Some('T' | 't' | 'Z' | 'X') | None)
}

/// `SIGSTOP` to every process in `procs`, until two passes in a row find all of them stopped.
fn stop_processes(procs: &Path, frozen: &mut Frozen) -> Result<(), String> {
    use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
    let mut fds: BTreeMap<i32, OwnedFd> = BTreeMap::new();
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    let mut clean_passes = 0;
    let result = loop {
        let listed = match read_pids(procs) {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let mut opened = Vec::new();
        let mut open_error = None;
        for &pid in &listed {
            if fds.contains_key(&pid) {
                continue;
            }
            let Some(p) = Pid::from_raw(pid) else {
                continue;
            };
            match pidfd_open(p, PidfdFlags::empty()) {
                Ok(fd) => opened.push((pid, fd)),
                Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    open_error = Some(format!("cannot open process {pid} of the sandbox: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = open_error {
            break Err(e);
        }
        // The pid may have been reused between the read and the open: signal only a process
        // that, now pinned by its pidfd, is still listed (a listed pid is the sandbox's).
        let relisted = match read_pids(procs) {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let mut new = false;
        let mut signal_error = None;
        for (pid, fd) in opened {
            if !relisted.contains(&pid) {
                continue;
            }
            match pidfd_send_signal(&fd, Signal::STOP) {
                Ok(()) | Err(rustix::io::Errno::SRCH) => {}
                Err(e) => {
                    signal_error = Some(format!("cannot stop process {pid} of the sandbox: {e}"));
                    break;
                }
            }
            fds.insert(pid, fd);
            new = true;
        }
        if let Some(e) = signal_error {
            break Err(e);
        }
        let all_stopped = relisted
            .iter()
            .all(|p| fds.contains_key(p) && is_stopped(*p));
        if all_stopped && !new {
            clean_passes += 1;
            if clean_passes >= 2 {
                break Ok(());
            }
        } else {
            clean_passes = 0;
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "the processes in {} did not all stop within {} s",
                procs.display(),
                FREEZE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(POLL);
    };
    frozen.held.push(Held::Stopped(fds.into_values().collect()));
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_entries_round_trip_and_old_files_parse() {
        let e = RunEntry {
            launcher_pid: 42,
            start: 7,
            cgroup_dirs: vec![
                PathBuf::from("/sys/fs/cgroup/memory/x/bulkhead-ws"),
                PathBuf::from("/sys/fs/cgroup/pids/x/bulkhead-ws"),
            ],
        };
        assert_eq!(RunEntry::parse(&e.render()), Some(e));
        let old = RunEntry::parse("42 7\n").unwrap();
        assert!(old.cgroup_dirs.is_empty());
        assert_eq!(RunEntry::parse("x 7\n"), None);
        assert_eq!(RunEntry::parse(""), None);
    }

    #[test]
    fn only_plain_paths_under_the_cgroup_root_are_taken() {
        assert!(checked_cgroup_dir(Path::new("/sys/fs/cgroup/a/b")).is_ok());
        for bad in [
            "/sys/fs/cgroup",
            "/sys/fs/cgroup/../../etc",
            "/sys/fs/cgroup/a/./b",
            "/sys/fs/cgroup//a",
            "/sys/fs/cgroup/a/",
            "sys/fs/cgroup/a",
            "/tmp/a",
            "/sys/fs/cgroupx/a",
        ] {
            assert!(checked_cgroup_dir(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_entry_without_cgroups_is_refused() {
        let e = RunEntry {
            launcher_pid: 1,
            start: 1,
            cgroup_dirs: vec![],
        };
        assert!(freeze(&e).unwrap_err().contains("no cgroup"));
    }
}
