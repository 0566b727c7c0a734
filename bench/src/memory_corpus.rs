//! Real text for the memory evaluation and benchmark: the Debian man pages of section 1 on
//! this machine (`/usr/share/man/man1/*.1.gz`), decompressed with `gzip -dc` and stripped of
//! roff markup crudely. Shared by `bulkhead-eval-memory` and `bulkhead-bench-memory`
//! (`bulkhead_bench::memory_corpus`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the pages are.
pub const MAN_DIR: &str = "/usr/share/man/man1";

/// One man page: its name, the one-line NAME description, and the body without NAME.
#[derive(Debug, Clone)]
pub struct Page {
    pub name: String,
    pub description: String,
    pub body: String,
}

/// The `*.1.gz` regular files (no symlinks), sorted by name; an error naming the directory
/// when it is missing or holds none.
pub fn page_files() -> Result<Vec<PathBuf>, String> {
    let dir = Path::new(MAN_DIR);
    let rd = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{MAN_DIR} is not readable ({e}): this needs the Debian man pages \
             (apt-get install man-db manpages, and no `path-exclude /usr/share/man/*` in dpkg.cfg.d)"
        )
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".1.gz"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{MAN_DIR} holds no *.1.gz page"));
    }
    Ok(files)
}

/// Decompresses one page.
pub fn gunzip(path: &Path) -> Option<String> {
    let out = Command::new("gzip").arg("-dc").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Roff escapes out of one line of text, crudely.
fn unescape(line: &str) -> String {
    let cs: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    // Skips a roff name after an escape: `(xx`, `[name]` or one character.
    let skip_name = |i: usize| -> usize {
        match cs.get(i) {
            Some('(') => i + 3,
            Some('[') => cs[i..]
                .iter()
                .position(|&c| c == ']')
                .map_or(cs.len(), |p| i + p + 1),
            Some(_) => i + 1,
            None => i,
        }
    };
    while i < cs.len() {
        let c = cs[i];
        if c != '\\' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        match cs.get(i) {
            None => break,
            Some('"') => break, // comment
            Some('-') => {
                out.push('-');
                i += 1;
            }
            Some('e') | Some('\\') => {
                out.push('\\');
                i += 1;
            }
            Some('f') | Some('*') | Some('n') | Some('F') => i = skip_name(i + 1),
            Some('(') | Some('[') => {
                out.push(' ');
                i = skip_name(i);
            }
            Some('s') => {
                i += 1;
                while i < cs.len() && (cs[i] == '-' || cs[i] == '+' || cs[i].is_ascii_digit()) {
                    i += 1;
                }
            }
            Some(' ') | Some('~') => {
                out.push(' ');
                i += 1;
            }
            Some(_) => i += 1, // \& \% \, \/ \| \^ and the like: nothing
        }
    }
    out
}

/// Macro arguments, without their quotes.
fn args(rest: &str) -> String {
    rest.replace('"', "")
}

/// Text-producing macros (man and mdoc) whose arguments are kept.
const TEXT_MACROS: &[&str] = &[
    "B", "I", "BI", "BR", "IB", "IR", "RB", "RI", "SM", "SB", "Nm", "Nd", "Ar", "Fl", "Op", "Xr",
    "Cm", "Pa", "Em", "Sy", "Dq", "Sq", "Ql", "Li", "Va", "Ev", "Ic", "Dv", "Er", "Fn", "Ft", "Ad",
    "An", "Lk", "Mt", "Ms", "It", "TQ", "IP",
];

/// A page, or `None` when it is a `.so` redirect or has no usable NAME line.
pub fn parse_page(name: &str, roff: &str) -> Option<Page> {
    let mut in_name = false;
    let mut name_text = String::new();
    let mut body = String::new();
    for raw in roff.lines() {
        let line = raw.trim_end();
        if line.starts_with(".so ") {
            return None;
        }
        let text = if let Some(m) = line.strip_prefix('.').or(line.strip_prefix('\'')) {
            let m = m.trim_start();
            let (mac, rest) = m.split_once(char::is_whitespace).unwrap_or((m, ""));
            if mac == "SH" || mac == "Sh" {
                in_name = args(rest).trim().eq_ignore_ascii_case("NAME");
                if !in_name {
                    body.push('\n');
                    body.push_str(&unescape(&args(rest)));
                    body.push('\n');
                }
                continue;
            }
            if mac == "Nd" {
                format!("- {}", args(rest))
            } else if TEXT_MACROS.contains(&mac) {
                args(rest)
            } else {
                if matches!(mac, "PP" | "P" | "LP" | "Pp" | "TP" | "SS" | "Ss") {
                    body.push('\n');
                }
                continue;
            }
        } else {
            line.to_string()
        };
        let t = unescape(&text);
        if in_name {
            name_text.push(' ');
            name_text.push_str(t.trim());
        } else {
            body.push_str(t.trim());
            body.push('\n');
        }
    }
    let name_text = name_text.split_whitespace().collect::<Vec<_>>().join(" ");
    let (_, desc) = name_text.split_once(" - ")?;
    let description = desc.trim().to_string();
    let body = body.trim().to_string();
    if description.split_whitespace().count() < 3 || body.len() < 300 {
        return None;
    }
    Some(Page {
        name: name.to_string(),
        description,
        body,
    })
}

/// `n` pages chosen deterministically: the sorted file list at a fixed stride (further passes
/// at shifted offsets until `n` usable pages are found), unique descriptions.
pub fn load_pages(n: usize) -> Result<Vec<Page>, String> {
    let files = page_files()?;
    let stride = (files.len() / (n + n / 2).max(1)).max(1);
    let mut seen = std::collections::HashSet::new();
    let mut pages = Vec::new();
    'outer: for offset in 0..stride {
        for f in files.iter().skip(offset).step_by(stride) {
            let name = f
                .file_name()
                .and_then(|s| s.to_str())
                .unwrap_or("")
                .trim_end_matches(".1.gz")
                .to_string();
            let Some(roff) = gunzip(f) else { continue };
            let Some(p) = parse_page(&name, &roff) else {
                continue;
            };
            if seen.insert(p.description.to_lowercase()) {
                pages.push(p);
                if pages.len() == n {
                    break 'outer;
                }
            }
        }
    }
    if pages.is_empty() {
        return Err(format!("no usable man page under {MAN_DIR}"));
    }
    Ok(pages)
}

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Sentences of the bodies: split at `. ` and newlines, 30 to 300 characters, with letters.
pub fn sentences(pages: &[Page]) -> Vec<String> {
    let mut out = Vec::new();
    for p in pages {
        for para in p.body.split("\n\n") {
            let flat = para.split_whitespace().collect::<Vec<_>>().join(" ");
            for s in flat.split(". ") {
                let s = s.trim();
                if (30..=300).contains(&s.len())
                    && s.chars().filter(|c| c.is_alphabetic()).count() > s.len() / 2
                {
                    out.push(s.to_string());
                }
            }
        }
    }
    out
}
