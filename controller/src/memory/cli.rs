//! `bulkhead memory …`: store, search, get, rm and stats of a workspace's memory.

use std::io::{Read, Write};

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Memory, SearchMode, SearchOptions};
use crate::error::{exit, Error, Result};
use crate::platform::Platform;
use crate::util::text::{safe, safe_line};

/// Options shared by the commands that embed.
#[derive(Debug, Clone, Args)]
pub struct EmbedArgs {
    /// Embedder for stored text and queries: local (the built-in offline model), none
    /// (keyword-only), hash (lexical baseline) or provider/model. Default: `[memory] embedder`
    /// in config.toml, else local.
    #[arg(long, value_name = "SPEC", value_parser = parse_spec)]
    pub embedder: Option<String>,
}

fn parse_spec(s: &str) -> std::result::Result<String, String> {
    super::check_embedder_spec(s).map(|()| s.to_string())
}

/// `bulkhead memory …`.
#[derive(Debug, Subcommand)]
pub enum MemoryCmd {
    /// Store text (chunked) in a workspace's memory; prints the chunk ids.
    #[command(
        after_help = "Examples:\n  bulkhead memory store acme 'The staging DB is on port 5433.'\n  cat notes.md | bulkhead memory store acme --source notes.md -"
    )]
    Store {
        /// Workspace id.
        workspace: String,
        /// The text, or - to read standard input.
        content: String,
        /// Source recorded with it.
        #[arg(long, default_value = "cli")]
        source: String,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Search a workspace's memory.
    #[command(
        after_help = "Examples:\n  bulkhead memory search acme 'staging database port'\n  bulkhead --json memory search acme --mode keyword --limit 3 deploy"
    )]
    Search {
        /// Workspace id.
        workspace: String,
        /// Query.
        query: String,
        /// Most results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Ranking: keyword (BM25), vector (needs an embedder) or hybrid (keyword-only
        /// with --embedder none).
        #[arg(long, value_enum, default_value = "hybrid")]
        mode: SearchMode,
        /// Favour recent memories (temporal decay, half-life 30 days; MEMORY.md exempt).
        /// Off by default: on measured recall it hurt wherever age says nothing of relevance.
        #[arg(long)]
        decay: bool,
        /// Diversify results (MMR re-ranking, lambda 0.7). Off by default (measured neutral).
        #[arg(long)]
        mmr: bool,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Print a chunk.
    #[command(after_help = "Example:\n  bulkhead memory get acme 12")]
    Get {
        /// Workspace id.
        workspace: String,
        /// Chunk id.
        id: i64,
    },
    /// Delete a chunk.
    #[command(
        visible_alias = "remove",
        after_help = "Example:\n  bulkhead memory rm acme 12"
    )]
    Rm {
        /// Workspace id.
        workspace: String,
        /// Chunk id.
        id: i64,
    },
    /// Embed every chunk that has no vector of the chosen embedder (after a model change,
    /// or text stored keyword-only).
    #[command(
        after_help = "Example:\n  bulkhead memory reembed acme\n  bulkhead memory reembed acme --embedder openai/text-embedding-3-small"
    )]
    Reembed {
        /// Workspace id.
        workspace: String,
        #[command(flatten)]
        embed: EmbedArgs,
    },
    /// Index the workspace's notes (`MEMORY.md`, `memory/**/*.md` in its files) and its
    /// session transcripts into its memory, incrementally.
    #[command(
        after_help = "Examples:\n  bulkhead memory index acme\n  bulkhead --json memory index acme --session-min-messages 1\n  bulkhead memory index acme --watch"
    )]
    Index(super::index::IndexArgs),
    /// Totals: chunks, sources, vectors per model.
    #[command(after_help = "Example:\n  bulkhead --json memory stats acme")]
    Stats {
        /// Workspace id.
        workspace: String,
        #[command(flatten)]
        embed: EmbedArgs,
    },
}

pub(super) fn open(p: &Platform, ws: &str, e: Option<&EmbedArgs>) -> Result<Memory> {
    let ws = p.workspace(ws)?;
    match e {
        Some(e) => Memory::open_with_spec(&ws, e.embedder.as_deref()),
        None => Memory::open(&ws),
    }
}

/// Writes a line to standard output; a closed pipe (`| head`) is not an error.
pub(super) fn say(line: impl std::fmt::Display) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("standard output", e))
        }
        _ => Ok(()),
    }
}

fn no_such_chunk(ws: &str, id: i64, json: bool) -> i32 {
    let msg = format!("no memory chunk {id} in workspace {ws:?}");
    if json {
        eprintln!("{}", json!({"error": msg, "exit_code": exit::NOT_FOUND}));
    } else {
        eprintln!("bulkhead: {msg}");
    }
    exit::NOT_FOUND
}

/// Runs `bulkhead memory …`; returns the exit code.
pub fn run(p: &Platform, cmd: MemoryCmd, json: bool) -> Result<i32> {
    match cmd {
        MemoryCmd::Store {
            workspace,
            content,
            source,
            embed,
        } => {
            let m = open(p, &workspace, Some(&embed))?;
            let text = if content == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .take(super::MAX_STORE_BYTES as u64 + 1)
                    .read_to_string(&mut s)
                    .map_err(|e| Error::Invalid(format!("reading standard input: {e}")))?;
                s
            } else {
                content
            };
            let s = m.store(&text, &source)?;
            if json {
                say(serde_json::to_string(&s).unwrap_or_default())?;
            } else {
                for id in &s.ids {
                    say(format_args!("{id}"))?;
                }
            }
            Ok(exit::OK)
        }
        MemoryCmd::Search {
            workspace,
            query,
            limit,
            mode,
            decay,
            mmr,
            embed,
        } => {
            let m = open(p, &workspace, Some(&embed))?;
            let opts = SearchOptions {
                limit,
                mode,
                decay,
                mmr,
                ..SearchOptions::default()
            };
            let hits = m.search(&query, &opts)?;
            if json {
                say(serde_json::to_string(&hits).unwrap_or_default())?;
            } else if hits.is_empty() {
                eprintln!("no matches");
            } else {
                for h in hits {
                    say(format_args!(
                        "{}\t{:.3}\t{}\t{}",
                        h.id,
                        h.score,
                        safe_line(&h.source),
                        safe_line(&h.snippet)
                    ))?;
                }
            }
            Ok(exit::OK)
        }
        MemoryCmd::Get { workspace, id } => {
            let m = open(p, &workspace, None)?;
            let Some(c) = m.get(id)? else {
                return Ok(no_such_chunk(&workspace, id, json));
            };
            if json {
                say(serde_json::to_string(&c).unwrap_or_default())?;
            } else {
                say(safe(&c.text))?;
            }
            Ok(exit::OK)
        }
        MemoryCmd::Rm { workspace, id } => {
            let m = open(p, &workspace, None)?;
            if !m.remove(id)? {
                return Ok(no_such_chunk(&workspace, id, json));
            }
            if json {
                say(json!({"removed": id}))?;
            } else {
                say(format_args!("removed chunk {id}"))?;
            }
            Ok(exit::OK)
        }
        MemoryCmd::Reembed { workspace, embed } => {
            let m = open(p, &workspace, Some(&embed))?;
            let n = m.reembed(64)?;
            if json {
                say(json!({"embedded": n}))?;
            } else {
                say(format_args!("embedded {n} chunk(s)"))?;
            }
            Ok(exit::OK)
        }
        MemoryCmd::Index(a) => super::index::run_cli(p, a, json),
        MemoryCmd::Stats { workspace, embed } => {
            let m = open(p, &workspace, Some(&embed))?;
            let s = m.stats()?;
            if json {
                say(serde_json::to_string(&s).unwrap_or_default())?;
            } else {
                say(format_args!("chunks:   {}", s.chunks))?;
                say(format_args!("sources:  {}", s.sources))?;
                say(format_args!("text:     {} bytes", s.text_bytes))?;
                for mc in &s.models {
                    say(format_args!(
                        "vectors:  {} ({}/{}, {} dims)",
                        mc.count, mc.model.provider, mc.model.model, mc.model.dims
                    ))?;
                }
                if let Some(e) = &s.embedder {
                    say(format_args!(
                        "embedder: {}/{}: {} embedded, {} without a vector",
                        e.provider, e.model, s.embedded, s.stale
                    ))?;
                }
                say(format_args!(
                    "database: {} bytes, schema {}",
                    s.db_bytes, s.schema_version
                ))?;
            }
            Ok(exit::OK)
        }
    }
}
