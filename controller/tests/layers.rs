//! The controller's layer order, and the test that keeps `controller/src` to it.
//!
//! Every top-level module of `controller/src` sits in one layer; [`ORDER`] lists them from
//! the bottom up. A module may use a module listed *before* it, never one listed after it:
//! that is "one direction only", and it also orders the siblings inside a layer (net before
//! sandbox before llm ...) so that no two services can import each other.
//!
//! The test walks the module tree from `lib.rs` (following `mod x;` and `#[path]`, skipping
//! `#[cfg(test)]` items: test code may set up whatever it needs), and collects every edge:
//! each `use crate::…`/`use super::…` item and each `crate::x`/`super::x` path in the code.
//! Re-exports are resolved (a `pub use crate::agent::Attempt` in `error.rs` makes
//! `crate::error::Attempt` an edge to `agent`), so an upward edge cannot hide behind one.
//! A violation names the file, the line, the two modules and the path.
//!
//! This table is the one place the order is declared; docs/ARCHITECTURE.md describes it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The layers, bottom first, each with its modules in order (a module may use the modules
/// before it in this whole list).
pub const ORDER: &[(&str, &[&str])] = &[
    // Leaves: no knowledge of any service. util: text, sizes, time, cancellation, the JSON
    // Schema check; error: the error type and what it carries (model attempts).
    ("leaves", &["util", "error", "state", "config", "logging"]),
    // Services, each using only the leaves and the services before it. disk: a workspace's
    // own filesystem; net: SSRF checks, egress policy and proxy; sandbox: the launcher and
    // the worker; platform: the workspace store (`Platform`, `Workspace`: records, limits,
    // starting sandboxes), which every service that acts on a workspace builds on; creds:
    // encrypted credentials; llm: providers over net's checked HTTP; sessions: transcripts;
    // tool: the `Tool` trait the agent, memory and skills implement; memory: SQLite and
    // embeddings; skills: skills run in a sandbox of their own.
    (
        "services",
        &[
            "disk", "net", "sandbox", "platform", "creds", "llm", "sessions", "tool", "memory",
            "skills",
        ],
    ),
    // The agent: the loop, its tools, context, failover, hooks, subagents.
    ("agent", &["agent"]),
    // The library API as an embedder sees it: the re-exports of lib.rs.
    ("library", &["lib"]),
    // Front ends: thin translations of arguments to library calls and results to text/JSON.
    // `bulkhead serve` is a CLI command, so cli comes after rpc.
    ("front ends", &["doctor", "rpc", "cli"]),
];

/// Upward edges that are known and not yet removed: (file under controller/src, from, to,
/// path). The list may only shrink: an edge not listed fails the test, and so does an entry
/// that no longer occurs (delete it when the edge goes).
///
/// - `config.rs` still holds and parses `[network]` as net's `OperatorNetwork` (its
///   parsers need net's host patterns and addresses); the next step is to move that value
///   type into config (as `config/limits.rs`, `cipher.rs`, `subagents.rs` did) or to keep
///   the raw settings in config and let net build its policy from them.
/// - `net/proxy/` (its `mod.rs`) re-reads a workspace's policy through `platform::Workspace` while
///   `Workspace::sandbox` starts the proxy; the next step is a small trait in net that
///   `Workspace` implements (left for after the proxy.rs split, which touches the same code).
pub const PENDING: &[(&str, &str, &str, &str)] = &[
    (
        "config.rs",
        "config",
        "net",
        "crate::net::egress::OperatorNetwork",
    ),
    (
        "config.rs",
        "config",
        "net",
        "crate::net::egress::OperatorNetwork::parse_deny",
    ),
    (
        "config.rs",
        "config",
        "net",
        "crate::net::egress::OperatorNetwork::parse_resolve",
    ),
    (
        "config.rs",
        "config",
        "net",
        "crate::net::egress::OperatorNetwork::parse_ceiling",
    ),
    (
        "config.rs",
        "config",
        "net",
        "crate::net::egress::OperatorNetwork::parse_total",
    ),
    (
        "net/proxy/mod.rs",
        "net",
        "platform",
        "crate::platform::Platform",
    ),
    (
        "net/proxy/mod.rs",
        "net",
        "platform",
        "crate::platform::Workspace",
    ),
];

fn pending(e: &Edge, src: &Path) -> Option<usize> {
    let rel = e.file.strip_prefix(src).unwrap_or(&e.file);
    PENDING.iter().position(|(f, from, to, path)| {
        rel == Path::new(f) && e.from == *from && e.to == *to && e.path == *path
    })
}

/// One use of a module by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub file: PathBuf,
    pub line: usize,
    pub from: String,
    pub to: String,
    pub path: String,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} -> {} (`{}`)",
            self.file.display(),
            self.line,
            self.from,
            self.to,
            self.path
        )
    }
}

/// Edges against [`ORDER`] (and edges to or from a module the order does not list).
pub fn violations(edges: &[Edge], order: &[(&str, &[&str])]) -> Vec<String> {
    let rank: HashMap<&str, usize> = order
        .iter()
        .flat_map(|(_, mods)| mods.iter())
        .enumerate()
        .map(|(i, m)| (*m, i))
        .collect();
    let layer_of = |m: &str| {
        order
            .iter()
            .find(|(_, mods)| mods.contains(&m))
            .map(|(l, _)| *l)
            .unwrap_or("?")
    };
    let mut out = Vec::new();
    for e in edges {
        match (rank.get(e.from.as_str()), rank.get(e.to.as_str())) {
            (Some(f), Some(t)) if t < f => {}
            (Some(_), Some(_)) => out.push(format!(
                "{e}: {} ({}) may not use {} ({}): it comes later in the layer order",
                e.from,
                layer_of(&e.from),
                e.to,
                layer_of(&e.to)
            )),
            _ => out.push(format!(
                "{e}: module not in the declared layer order (add it to ORDER in {})",
                file!()
            )),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Reading the module tree.

/// A source file of the crate and the module path it defines.
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    /// The text with comments, strings and `#[cfg(test)]` items blanked (same offsets).
    text: String,
    /// Inline `mod name { … }` blocks: byte range and name.
    inline: Vec<(usize, usize, String)>,
}

/// Reads the crate rooted at `src/lib.rs` and returns every cross-module edge.
pub fn crate_edges(src: &Path) -> Result<Vec<Edge>, String> {
    let files = module_tree(src)?;
    let mut modules: HashSet<Vec<String>> = HashSet::new();
    for f in &files {
        modules.insert(f.module.clone());
        for (s, _, _) in &f.inline {
            modules.insert(module_at(f, *s + 1));
        }
    }
    // Every `use` in every module, as (module path + name) -> target path: resolves
    // re-exports and names a child module reaches through `super::`.
    let mut aliases: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    let mut uses = Vec::new();
    for f in &files {
        for (offset, tree) in use_decls(&f.text) {
            let here = module_at(f, offset);
            for (path, alias) in tree {
                let Some(abs) = absolute(&here, &path, &modules) else {
                    continue;
                };
                if let Some(name) = alias.or_else(|| path.last().cloned()) {
                    if name != "*" && name != "_" {
                        let mut key = here.clone();
                        key.push(name);
                        aliases.insert(key, abs.clone());
                    }
                }
                uses.push((f, offset, path.join("::"), abs));
            }
        }
    }
    let mut edges = Vec::new();
    let mut push = |f: &SourceFile, offset: usize, shown: String, abs: Vec<String>| {
        let to = top_module(resolve(abs, &aliases), &modules);
        let from = f.module.first().cloned().unwrap_or_else(|| "lib".into());
        if to != from {
            edges.push(Edge {
                file: f.path.clone(),
                line: f.text[..offset].matches('\n').count() + 1,
                from,
                to,
                path: shown,
            });
        }
    };
    for (f, offset, shown, abs) in uses {
        push(f, offset, shown, abs);
    }
    for f in &files {
        let blanked = blank_use_decls(&f.text);
        for (offset, path) in paths_in(&blanked) {
            let here = module_at(f, offset);
            if let Some(abs) = absolute(&here, &path, &modules) {
                push(f, offset, path.join("::"), abs);
            }
        }
    }
    Ok(edges)
}

/// The top-level module an absolute path lands in (`lib` for the crate root's own items).
fn top_module(abs: Vec<String>, modules: &HashSet<Vec<String>>) -> String {
    match abs.into_iter().next() {
        Some(m) if modules.contains(std::slice::from_ref(&m)) => m,
        _ => "lib".into(),
    }
}

/// Follows `use` aliases (re-exports) on the longest matching prefix, a few times over.
fn resolve(mut abs: Vec<String>, aliases: &HashMap<Vec<String>, Vec<String>>) -> Vec<String> {
    for _ in 0..16 {
        let hit = (1..=abs.len())
            .rev()
            .find_map(|k| aliases.get(&abs[..k]).map(|t| (k, t.clone())));
        match hit {
            Some((k, target)) if target != abs[..k] => {
                let mut next = target;
                next.extend_from_slice(&abs[k..]);
                abs = next;
            }
            _ => break,
        }
    }
    // A name only the crate root defines or re-exports (`crate::Error` without a `pub use`
    // we could follow) stays in `lib`.
    abs
}

/// `crate::a::b` -> [a, b]; `super::x` from module [m, n] -> [m, x]; `self::x` -> [m, n, x].
/// `m::x` where `m` is a child module of `here` -> [here.., m, x]. None for paths that are
/// not crate-relative (std, other crates, local items).
fn absolute(
    here: &[String],
    path: &[String],
    modules: &HashSet<Vec<String>>,
) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "super" | "self" => here.to_vec(),
        _ => {
            let mut child = here.to_vec();
            child.push(first.clone());
            if !modules.contains(&child) {
                return None;
            }
            child.extend(path[1..].iter().cloned());
            return Some(child);
        }
    };
    let mut rest = &path[1..];
    if first == "super" {
        base.pop()?;
        while rest.first().map(String::as_str) == Some("super") {
            base.pop()?;
            rest = &rest[1..];
        }
    }
    base.extend(rest.iter().filter(|s| *s != "self").cloned());
    Some(base)
}

fn module_at(f: &SourceFile, offset: usize) -> Vec<String> {
    let mut m = f.module.clone();
    let mut inner: Vec<_> = f
        .inline
        .iter()
        .filter(|(s, e, _)| *s <= offset && offset < *e)
        .collect();
    inner.sort_by_key(|(s, _, _)| *s);
    m.extend(inner.into_iter().map(|(_, _, n)| n.clone()));
    m
}

fn module_tree(src: &Path) -> Result<Vec<SourceFile>, String> {
    let mut out = Vec::new();
    let mut todo = vec![(src.join("lib.rs"), Vec::<String>::new(), true)];
    while let Some((path, module, is_mod_rs)) = todo.pop() {
        let raw = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let (text, test_mods) = strip(&raw);
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut inline = Vec::new();
        for m in mod_decls(&text, &raw) {
            if let Some((s, e)) = m.body {
                inline.push((s, e, m.name.clone()));
                continue;
            }
            if test_mods.contains(&m.name) {
                continue;
            }
            // Nested inside an inline module: its files live one directory further down.
            let mut child = module.clone();
            let mut child_dir = if is_mod_rs {
                dir.clone()
            } else {
                dir.join(path.file_stem().unwrap_or_default())
            };
            for (s, e, n) in &inline {
                if *s <= m.offset && m.offset < *e {
                    child.push(n.clone());
                    child_dir = child_dir.join(n);
                }
            }
            child.push(m.name.clone());
            let file = if let Some(p) = m.path_attr {
                (dir.join(p), false)
            } else if child_dir.join(format!("{}.rs", m.name)).exists() {
                (child_dir.join(format!("{}.rs", m.name)), false)
            } else {
                (child_dir.join(&m.name).join("mod.rs"), true)
            };
            todo.push((file.0, child, file.1));
        }
        out.push(SourceFile {
            path,
            module,
            text,
            inline,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// A small lexer: enough of Rust to find paths without being fooled by comments and strings.

/// Blanks comments, string and char literals (keeping newlines and offsets), then blanks
/// every item under `#[cfg(test)]`. Returns the text and the names of `#[cfg(test)] mod x;`.
fn strip(src: &str) -> (String, Vec<String>) {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |n| i + n);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c == b'r' || (c == b'b' && b.get(i + 1) == Some(&b'r')))
            && !prev_is_ident(b, i)
            && raw_string_start(b, if c == b'b' { i + 1 } else { i }).is_some()
        {
            let start = if c == b'b' { i + 1 } else { i };
            let (hashes, body) = raw_string_start(b, start).unwrap_or((0, start));
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat('#').take(hashes))
                .collect();
            let end = src[body..]
                .find(&close)
                .map_or(b.len(), |n| body + n + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = (j + 1).min(b.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{1F600}', a multi-byte char) or a lifetime.
            if b.get(i + 1) == Some(&b'\\') {
                let end = src[i + 2..].find('\'').map_or(b.len(), |n| i + 2 + n + 1);
                blank(&mut out, i, end);
                i = end;
            } else if let Some(ch) = src[i + 1..].chars().next() {
                let after = i + 1 + ch.len_utf8();
                if b.get(after) == Some(&b'\'') {
                    blank(&mut out, i, after + 1);
                    i = after + 1;
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    let mut text = String::from_utf8_lossy(&out).into_owned();
    // Items under #[cfg(test)]: from the attribute to the end of the item.
    let mut test_mods = Vec::new();
    let mut from = 0;
    while let Some(n) = text[from..].find("#[cfg(test)]") {
        let start = from + n;
        let end = item_end(text.as_bytes(), start + "#[cfg(test)]".len());
        let item = text[start..end].to_string();
        let words: Vec<&str> = item
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect();
        if let Some(p) = words.iter().position(|w| *w == "mod") {
            if let Some(name) = words.get(p + 1) {
                test_mods.push((*name).to_string());
            }
        }
        let mut bytes = std::mem::take(&mut text).into_bytes();
        blank(&mut bytes, start, end);
        text = String::from_utf8_lossy(&bytes).into_owned();
        from = end;
    }
    (text, test_mods)
}

fn prev_is_ident(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// At `r`: `r"`, `r#"`, `r##"` … -> (number of hashes, offset of the body).
fn raw_string_start(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if b.get(i) != Some(&b'r') {
        return None;
    }
    let mut j = i + 1;
    while b.get(j) == Some(&b'#') {
        j += 1;
    }
    (b.get(j) == Some(&b'"')).then_some((j - i - 1, j + 1))
}

/// The end of the item starting at `i`: its first `;` at depth 0, or the `}` closing its
/// first block (attributes in between are part of it).
fn item_end(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0i32;
    while i < b.len() {
        match b[i] {
            b'[' | b'(' => depth += 1,
            b']' | b')' => depth -= 1,
            b';' if depth == 0 => return i + 1,
            b'{' if depth == 0 => return matching_brace(b, i),
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Offset just past the `}` matching the `{` at `open`.
fn matching_brace(b: &[u8], open: usize) -> usize {
    let mut depth = 0i32;
    for (j, c) in b.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    b.len()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Offsets of the keyword `kw` standing alone (not part of a longer identifier).
fn keyword_at(text: &str, kw: &str) -> Vec<usize> {
    let b = text.as_bytes();
    text.match_indices(kw)
        .map(|(i, _)| i)
        .filter(|&i| {
            (i == 0 || !is_ident(b[i - 1]) && b[i - 1] != b'$')
                && !b.get(i + kw.len()).is_some_and(|c| is_ident(*c))
        })
        .collect()
}

struct ModDecl {
    name: String,
    offset: usize,
    body: Option<(usize, usize)>,
    path_attr: Option<String>,
}

fn mod_decls(text: &str, raw: &str) -> Vec<ModDecl> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in keyword_at(text, "mod") {
        let rest = &text[i + 3..];
        let name: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let after = i + 3 + (rest.len() - rest.trim_start().len()) + name.len();
        let next = text[after..].trim_start();
        let at = after + (text[after..].len() - next.len());
        let body = if next.starts_with('{') {
            Some((at, matching_brace(b, at)))
        } else if next.starts_with(';') {
            None
        } else {
            continue;
        };
        out.push(ModDecl {
            name,
            offset: i,
            body,
            path_attr: path_attr_before(text, raw, i),
        });
    }
    out
}

/// The value of a `#[path = "x.rs"]` attribute just before the `mod` at `i` (found in the
/// blanked text, read from the raw source at the same offsets).
fn path_attr_before(text: &str, raw: &str, i: usize) -> Option<String> {
    let before = text[..i].trim_end();
    let before = before
        .strip_suffix("pub(crate)")
        .or_else(|| before.strip_suffix("pub"))
        .unwrap_or(before)
        .trim_end();
    let open = before.rfind("#[")?;
    if !before.ends_with(']') || !before[open..].starts_with("#[path") {
        return None;
    }
    let attr = &raw[open..before.len()];
    let q1 = attr.find('"')?;
    let q2 = attr[q1 + 1..].find('"')?;
    Some(attr[q1 + 1..q1 + 1 + q2].to_string())
}

/// Every `use` declaration: offset of the keyword and the paths it imports (with aliases).
/// One imported path and its `as` alias.
type UseItem = (Vec<String>, Option<String>);

fn use_decls(text: &str) -> Vec<(usize, Vec<UseItem>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    for i in keyword_at(text, "use") {
        let end = item_end(b, i + 3);
        let body = text[i + 3..end].trim_end_matches(';');
        let tokens = tokenize(body);
        let mut pos = 0;
        let mut paths = Vec::new();
        use_tree(&tokens, &mut pos, &[], &mut paths);
        out.push((i, paths));
    }
    out
}

fn blank_use_decls(text: &str) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for i in keyword_at(text, "use") {
        let end = item_end(&bytes, i + 3);
        for c in &mut bytes[i..end] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if is_ident(c) {
            let j = i + b[i..].iter().take_while(|c| is_ident(**c)).count();
            out.push(s[i..j].to_string());
            i = j;
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push((c as char).to_string());
            i += 1;
        }
    }
    out
}

/// Parses one use tree (`a::b::{c, d::e as f, self}`) into full paths.
fn use_tree(t: &[String], pos: &mut usize, prefix: &[String], out: &mut Vec<UseItem>) {
    let mut path = prefix.to_vec();
    if t.get(*pos).map(String::as_str) == Some("::") {
        *pos += 1;
    }
    while let Some(tok) = t.get(*pos) {
        match tok.as_str() {
            "{" => {
                *pos += 1;
                loop {
                    match t.get(*pos).map(String::as_str) {
                        None => return,
                        Some("}") => {
                            *pos += 1;
                            return;
                        }
                        Some(",") => *pos += 1,
                        _ => use_tree(t, pos, &path, out),
                    }
                }
            }
            "::" => *pos += 1,
            "," | "}" => break,
            "as" => {
                *pos += 1;
                let alias = t.get(*pos).cloned();
                *pos += 1;
                out.push((path, alias));
                return;
            }
            "self" if !path.is_empty() => *pos += 1,
            _ => {
                path.push(tok.clone());
                *pos += 1;
            }
        }
    }
    if path.len() > prefix.len() || !path.is_empty() {
        out.push((path, None));
    }
}

/// `crate::…`, `super::…` and `self::…` paths outside `use` declarations.
fn paths_in(text: &str) -> Vec<(usize, Vec<String>)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut starts: Vec<usize> = ["crate", "super", "self"]
        .iter()
        .flat_map(|kw| keyword_at(text, kw))
        .collect();
    starts.sort_unstable();
    let mut covered = 0;
    for i in starts {
        if i < covered {
            continue;
        }
        let mut segs = Vec::new();
        let mut j = i;
        loop {
            let n = b[j..].iter().take_while(|c| is_ident(**c)).count();
            if n == 0 {
                break;
            }
            segs.push(text[j..j + n].to_string());
            j += n;
            let ws = b[j..]
                .iter()
                .take_while(|c| c.is_ascii_whitespace())
                .count();
            if b.get(j + ws) == Some(&b':') && b.get(j + ws + 1) == Some(&b':') {
                j += ws + 2;
                j += b[j..]
                    .iter()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
            } else {
                break;
            }
        }
        covered = j;
        if segs.len() >= 2 {
            out.push((i, segs));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

fn controller_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn controller_modules_respect_the_layer_order() {
    let src = controller_src();
    let edges = crate_edges(&src).expect("read controller/src");
    assert!(
        edges.len() > 100,
        "the parser found only {} edges in controller/src: it is not reading the tree",
        edges.len()
    );
    let mut seen = vec![false; PENDING.len()];
    let mut checked = Vec::new();
    for e in edges {
        match pending(&e, &src) {
            Some(i) => seen[i] = true,
            None => checked.push(e),
        }
    }
    let bad = violations(&checked, ORDER);
    assert!(
        bad.is_empty(),
        "{} edge(s) against the layer order in controller/tests/layers.rs:\n{}",
        bad.len(),
        bad.join("\n")
    );
    let gone: Vec<_> = PENDING
        .iter()
        .zip(&seen)
        .filter(|(_, s)| !**s)
        .map(|(p, _)| p)
        .collect();
    assert!(
        gone.is_empty(),
        "these PENDING edges no longer occur: delete them from PENDING: {gone:?}"
    );
}

#[test]
fn every_top_level_module_is_in_the_order() {
    let src = controller_src();
    let files = module_tree(&src).expect("read controller/src");
    let listed: Vec<&str> = ORDER.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|f| f.module.first().cloned())
        .collect();
    tops.sort();
    tops.dedup();
    let missing: Vec<_> = tops
        .iter()
        .filter(|t| !listed.contains(&t.as_str()))
        .collect();
    assert!(missing.is_empty(), "modules not in ORDER: {missing:?}");
}

/// Summary for the report: edge counts per pair (`cargo test -p bulkhead --test layers --
/// --ignored --nocapture edge_counts`).
#[test]
#[ignore]
fn edge_counts() {
    // LAYERS_SRC=<dir>: count another tree (e.g. `git archive` of an older commit).
    let src = std::env::var_os("LAYERS_SRC").map_or_else(controller_src, PathBuf::from);
    let edges = crate_edges(&src).expect("read controller/src");
    let mut pairs: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &edges {
        *pairs.entry((e.from.clone(), e.to.clone())).or_default() += 1;
    }
    for ((f, t), n) in &pairs {
        println!("{n:4} {f} -> {t}");
    }
    let bad = violations(&edges, ORDER);
    for v in &bad {
        println!("{v}");
    }
    println!("{} edges, {} against the order", edges.len(), bad.len());
}

// ---------------------------------------------------------------------------------------
// The checker itself: it must find what it is for.

fn write(root: &Path, rel: &str, body: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

const TINY_ORDER: &[(&str, &[&str])] = &[
    ("leaves", &["error"]),
    ("services", &["net", "llm"]),
    ("front ends", &["lib", "cli"]),
];

fn synthetic(extra_llm: &str, extra_net: &str) -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    write(
        src,
        "lib.rs",
        "pub mod error;\npub mod net;\npub mod llm;\npub mod cli;\npub use error::Error;\n",
    );
    write(src, "error.rs", "pub struct Error;\n");
    write(
        src,
        "net/mod.rs",
        &format!("pub mod ssrf;\nuse crate::Error;\n{extra_net}\n"),
    );
    write(
        src,
        "net/ssrf.rs",
        "// crate::cli::run in a comment is no edge\nconst S: &str = \"crate::cli::x\";\n\
         pub fn check() -> Result<(), super::super::error::Error> { Ok(()) }\n\
         #[cfg(test)]\nmod tests { use crate::cli::main; }\n",
    );
    write(
        src,
        "llm/mod.rs",
        &format!("use crate::net::ssrf;\npub fn call() {{ crate::net::ssrf::check().ok(); }}\n{extra_llm}\n"),
    );
    write(
        src,
        "cli.rs",
        "use crate::{llm, net::{self, ssrf::check as c}};\npub fn main() { llm::call(); }\n",
    );
    let edges = crate_edges(src).unwrap();
    let v = violations(&edges, TINY_ORDER);
    (dir, v)
}

#[test]
fn a_clean_tree_has_no_violation() {
    let (_d, v) = synthetic("", "");
    assert!(v.is_empty(), "{v:#?}");
}

#[test]
fn an_upward_use_is_reported_with_file_line_and_edge() {
    let (_d, v) = synthetic("", "use crate::llm::call;");
    assert_eq!(v.len(), 1, "{v:#?}");
    assert!(
        v[0].contains("net/mod.rs:3: net -> llm (`crate::llm::call`)"),
        "{}",
        v[0]
    );
    assert!(
        v[0].contains("net (services) may not use llm (services)"),
        "{}",
        v[0]
    );
}

#[test]
fn an_upward_path_in_code_and_through_super_is_reported() {
    let (_d, v) = synthetic(
        "fn f() { super::cli::main() }",
        "fn g() { crate :: cli :: main(); }",
    );
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v
        .iter()
        .any(|s| s.contains("llm/mod.rs:3: llm -> cli (`super::cli::main`)")));
    assert!(v
        .iter()
        .any(|s| s.contains("net/mod.rs:3: net -> cli (`crate::cli::main`)")));
}

#[test]
fn an_upward_edge_behind_a_re_export_is_reported() {
    // error re-exports llm's item; net uses it through error: that is net -> llm.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    write(
        src,
        "lib.rs",
        "pub mod error;\npub mod net;\npub mod llm;\n",
    );
    write(src, "error.rs", "pub use crate::llm::Attempt;\n");
    write(src, "llm.rs", "pub struct Attempt;\n");
    write(src, "net.rs", "use crate::error::Attempt;\n");
    let edges = crate_edges(src).unwrap();
    let v = violations(&edges, TINY_ORDER);
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().any(|s| s.contains("error.rs:1: error -> llm")));
    assert!(v
        .iter()
        .any(|s| s.contains("net.rs:1: net -> llm (`crate::error::Attempt`)")));
}

#[test]
fn a_module_missing_from_the_order_is_reported() {
    let (_d, v) = synthetic("", "fn h() { crate::cli::main() }");
    assert!(v.iter().any(|s| s.contains("net -> cli")), "{v:#?}");
    let edges = vec![Edge {
        file: "x.rs".into(),
        line: 1,
        from: "mystery".into(),
        to: "error".into(),
        path: "crate::error::Error".into(),
    }];
    let v = violations(&edges, TINY_ORDER);
    assert!(v[0].contains("not in the declared layer order"), "{v:#?}");
}
