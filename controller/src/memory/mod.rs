//! Per-workspace memory: chunks of text the agent (or an operator) stored, searchable by
//! keyword (SQLite FTS5, BM25), by vector (an [`Embedder`]) or both.
//!
//! Each workspace has its own `memory.db` beside its `files/` (never inside the sandbox's
//! view), so one workspace's memory can never appear in another's search. Text is cut into
//! Markdown-aware chunks ([`chunk_markdown`]); each chunk is a row with an id, its source
//! (`memory_store`, a file path, a session), its text, created/updated times and a content
//! hash (storing the same text from the same source again only bumps `updated`). Two FTS5
//! indexes cover it: `unicode61` for words, `trigram` for CJK and substrings. Embeddings are
//! little-endian f32 BLOBs with the `(provider, model, dims)` that made them; search only
//! compares vectors of the configured embedder's triple, and [`Memory::reembed`] brings the
//! others over explicitly. With no embedder, everything works keyword-only.
//!
//! ```no_run
//! # fn main() -> bulkhead::Result<()> {
//! use bulkhead::memory::{Memory, SearchOptions};
//! # let platform = bulkhead::Platform::open(Default::default())?;
//! # let ws = platform.workspace("acme")?;
//! let mem = Memory::open(&ws)?;
//! mem.store("The deploy key lives in vault path ops/deploy.", "memory_store")?;
//! for r in mem.search("deploy key", &SearchOptions::default())? {
//!     println!("{} {:.3} {}", r.id, r.score, r.snippet);
//! }
//! # Ok(()) }
//! ```

pub mod cache;
pub mod chunk;
pub mod cli;
pub mod db;
pub mod embed;
pub mod index;
pub mod model2vec;
pub mod providers;
pub mod search;
pub mod select;
pub mod stopwords;
pub mod tools;
pub mod vector;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use chunk::{chunk_markdown, ChunkConfig};
pub use embed::{Embedder, HashEmbedder};
pub use model2vec::LocalEmbedder;
pub use search::{SearchMode, SearchOptions, SearchResult};
pub use select::{check_embedder_spec, configured_embedder, embedder_from_spec, DEFAULT_EMBEDDER};

use crate::error::{Error, Result};
use crate::platform::Workspace;
use db::sql_err;

/// File name of a workspace's memory database (in the workspace directory, not `files/`).
pub const DB_FILE: &str = "memory.db";

/// The source recorded for text stored by the agent's `memory_store` tool.
pub const SOURCE_TOOL: &str = "memory_store";

/// Largest text accepted by one [`Memory::store`] call.
pub const MAX_STORE_BYTES: usize = 4 << 20;

/// Longest source name.
pub const MAX_SOURCE_BYTES: usize = 1024;

/// Whether a source is evergreen (exempt from temporal decay): `MEMORY.md`, wherever it is.
pub fn is_evergreen(source: &str) -> bool {
    source.rsplit('/').next() == Some("MEMORY.md")
}

/// The model that made a chunk's vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EmbeddingInfo {
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Dimensions.
    pub dims: usize,
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chunk {
    /// Id (stable; never reused while the database lives... unless it is the highest id
    /// and is removed).
    pub id: i64,
    /// Where it came from.
    pub source: String,
    /// Text.
    pub text: String,
    /// SHA-256 of the text, hex.
    pub hash: String,
    /// Stored, Unix time in milliseconds.
    pub created: i64,
    /// Last stored again, Unix time in milliseconds.
    pub updated: i64,
    /// Its vector's model, if it has one.
    pub embedding: Option<EmbeddingInfo>,
}

/// What [`Memory::store`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stored {
    /// Ids of the chunks of the text, in order (new or already there).
    pub ids: Vec<i64>,
    /// How many chunks were new.
    pub added: usize,
    /// How many were already stored from that source (their `updated` time was bumped).
    pub existing: usize,
}

/// Vector count of one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCount {
    /// The model.
    #[serde(flatten)]
    pub model: EmbeddingInfo,
    /// Vectors it made.
    pub count: u64,
}

/// Totals of a workspace's memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Chunks.
    pub chunks: u64,
    /// Distinct sources.
    pub sources: u64,
    /// Bytes of chunk text.
    pub text_bytes: u64,
    /// Chunks with a vector of the configured embedder (0 without one).
    pub embedded: u64,
    /// Chunks without a vector of the configured embedder (they need
    /// [`Memory::reembed`]; 0 without an embedder).
    pub stale: u64,
    /// Vectors per model.
    pub models: Vec<ModelCount>,
    /// The configured embedder, if any.
    pub embedder: Option<EmbeddingInfo>,
    /// Schema version.
    pub schema_version: i64,
    /// Size of the database file (without its WAL).
    pub db_bytes: u64,
}

/// A workspace's memory: one open `memory.db`.
///
/// Not `Sync` (one SQLite connection); open one per thread, they share the file.
pub struct Memory {
    conn: Connection,
    path: PathBuf,
    embedder: Option<Arc<dyn Embedder>>,
    chunking: ChunkConfig,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory")
            .field("path", &self.path)
            .field("embedder", &self.embedder)
            .finish_non_exhaustive()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sha256_hex(s: &str) -> String {
    let h = Sha256::digest(s.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Memory {
    /// Opens (creating) the memory of `ws`, keyword-only until [`Memory::with_embedder`].
    pub fn open(ws: &Workspace) -> Result<Memory> {
        Self::open_path(&ws.dir().join(DB_FILE))
    }

    /// Opens (creating) the memory database at `path`.
    pub fn open_path(path: &Path) -> Result<Memory> {
        let conn = db::open_db(path)?;
        Ok(Memory {
            conn,
            path: path.to_path_buf(),
            embedder: None,
            chunking: ChunkConfig::default(),
        })
    }

    /// Uses `e` to embed stored text and queries.
    pub fn with_embedder(mut self, e: Arc<dyn Embedder>) -> Memory {
        self.embedder = Some(e);
        self
    }

    /// Sets the chunk sizes for later [`Memory::store`] calls.
    pub fn with_chunking(mut self, c: ChunkConfig) -> Memory {
        self.chunking = c;
        self
    }

    /// The configured embedder.
    pub fn embedder(&self) -> Option<&Arc<dyn Embedder>> {
        self.embedder.as_ref()
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_err(&self.path, e)
    }

    /// Writes chunk `id`'s vector (normalized) with the embedder's (provider, model, dims).
    fn put_embedding(
        &self,
        tx: &rusqlite::Connection,
        id: i64,
        emb: &dyn Embedder,
        mut v: Vec<f32>,
    ) -> Result<()> {
        embed::normalize(&mut v);
        tx.execute(
            "INSERT OR REPLACE INTO embeddings (chunk_id, provider, model, dims, vector)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                id,
                emb.provider(),
                emb.model(),
                emb.dims() as i64,
                embed::to_blob(&v)
            ],
        )
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Stores `content` (chunked) from `source`, now.
    pub fn store(&self, content: &str, source: &str) -> Result<Stored> {
        self.store_at(content, source, now_ms())
    }

    /// Stores `content` from `source` as of `at_ms` (Unix ms; for imports and tests).
    pub fn store_at(&self, content: &str, source: &str, at_ms: i64) -> Result<Stored> {
        if source.trim().is_empty() || source.len() > MAX_SOURCE_BYTES {
            return Err(Error::Invalid(format!(
                "a memory source must be 1 to {MAX_SOURCE_BYTES} bytes"
            )));
        }
        if content.len() > MAX_STORE_BYTES {
            return Err(Error::Invalid(format!(
                "memory text is {} bytes; at most {MAX_STORE_BYTES} per store",
                content.len()
            )));
        }
        let chunks = chunk_markdown(content, &self.chunking);
        if chunks.is_empty() {
            return Err(Error::Invalid("nothing to store: the text is empty".into()));
        }
        let vectors = match &self.embedder {
            Some(e) => {
                let texts: Vec<&str> = chunks.iter().map(String::as_str).collect();
                let v = e.embed(&texts)?;
                if v.len() != texts.len() || v.iter().any(|x| x.len() != e.dims()) {
                    return Err(Error::Invalid(format!(
                        "embedder {}/{} returned vectors of the wrong count or size",
                        e.provider(),
                        e.model()
                    )));
                }
                Some(v)
            }
            None => None,
        };
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let mut out = Stored {
            ids: Vec::new(),
            added: 0,
            existing: 0,
        };
        for (i, text) in chunks.iter().enumerate() {
            let hash = sha256_hex(text);
            let old: Option<i64> = tx
                .query_row(
                    "SELECT id FROM chunks WHERE source = ?1 AND hash = ?2",
                    params![source, hash],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| self.err(e))?;
            let id = match old {
                Some(id) => {
                    tx.execute(
                        "UPDATE chunks SET updated = max(updated, ?2) WHERE id = ?1",
                        params![id, at_ms],
                    )
                    .map_err(|e| self.err(e))?;
                    out.existing += 1;
                    id
                }
                None => {
                    tx.execute(
                        "INSERT INTO chunks (source, text, hash, created, updated)
                         VALUES (?1, ?2, ?3, ?4, ?4)",
                        params![source, text, hash, at_ms],
                    )
                    .map_err(|e| self.err(e))?;
                    out.added += 1;
                    tx.last_insert_rowid()
                }
            };
            if let (Some(vs), Some(e)) = (&vectors, &self.embedder) {
                self.put_embedding(&tx, id, e.as_ref(), vs[i].clone())?;
            }
            out.ids.push(id);
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// A chunk by id (`None` if there is none).
    pub fn get(&self, id: i64) -> Result<Option<Chunk>> {
        self.conn
            .query_row(
                "SELECT c.id, c.source, c.text, c.hash, c.created, c.updated,
                        e.provider, e.model, e.dims
                 FROM chunks c LEFT JOIN embeddings e ON e.chunk_id = c.id WHERE c.id = ?1",
                [id],
                |r| {
                    let provider: Option<String> = r.get(6)?;
                    Ok(Chunk {
                        id: r.get(0)?,
                        source: r.get(1)?,
                        text: r.get(2)?,
                        hash: r.get(3)?,
                        created: r.get(4)?,
                        updated: r.get(5)?,
                        embedding: match provider {
                            Some(provider) => Some(EmbeddingInfo {
                                provider,
                                model: r.get(7)?,
                                dims: r.get::<_, i64>(8)? as usize,
                            }),
                            None => None,
                        },
                    })
                },
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Removes a chunk (and its vector); `false` if there was none.
    pub fn remove(&self, id: i64) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM chunks WHERE id = ?1", [id])
            .map_err(|e| self.err(e))?;
        Ok(n > 0)
    }

    /// Totals.
    pub fn stats(&self) -> Result<Stats> {
        let e = |e| self.err(e);
        let (chunks, sources, text_bytes): (i64, i64, i64) = self
            .conn
            .query_row(
                "SELECT count(*), count(DISTINCT source), coalesce(sum(length(CAST(text AS BLOB))), 0)
                 FROM chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(e)?;
        let mut st = self
            .conn
            .prepare(
                "SELECT provider, model, dims, count(*) FROM embeddings
                 GROUP BY provider, model, dims ORDER BY provider, model, dims",
            )
            .map_err(e)?;
        let models = st
            .query_map([], |r| {
                Ok(ModelCount {
                    model: EmbeddingInfo {
                        provider: r.get(0)?,
                        model: r.get(1)?,
                        dims: r.get::<_, i64>(2)? as usize,
                    },
                    count: r.get::<_, i64>(3)? as u64,
                })
            })
            .map_err(e)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(e)?;
        let embedder = self.embedder.as_ref().map(|x| EmbeddingInfo {
            provider: x.provider().to_string(),
            model: x.model().to_string(),
            dims: x.dims(),
        });
        let embedded = embedder
            .as_ref()
            .and_then(|m| models.iter().find(|c| &c.model == m))
            .map_or(0, |c| c.count);
        let schema_version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(e)?;
        Ok(Stats {
            chunks: chunks as u64,
            sources: sources as u64,
            text_bytes: text_bytes as u64,
            embedded,
            stale: if embedder.is_some() {
                chunks as u64 - embedded
            } else {
                0
            },
            models,
            embedder,
            schema_version,
            db_bytes: std::fs::metadata(&self.path).map_or(0, |m| m.len()),
        })
    }

    /// Embeds, with the configured embedder, every chunk that has no vector of it (none, or
    /// one of another model, which is replaced), `batch` texts per call. Returns how many
    /// were embedded. An error without an embedder.
    pub fn reembed(&self, batch: usize) -> Result<u64> {
        let Some(emb) = self.embedder.clone() else {
            return Err(Error::Invalid("no embedder is configured".into()));
        };
        let batch = batch.max(1);
        let mut done = 0u64;
        loop {
            let rows: Vec<(i64, String)> = {
                let mut st = self
                    .conn
                    .prepare(
                        "SELECT c.id, c.text FROM chunks c LEFT JOIN embeddings e
                           ON e.chunk_id = c.id AND e.provider = ?1 AND e.model = ?2 AND e.dims = ?3
                         WHERE e.chunk_id IS NULL ORDER BY c.id LIMIT ?4",
                    )
                    .map_err(|e| self.err(e))?;
                let rows = st
                    .query_map(
                        params![emb.provider(), emb.model(), emb.dims() as i64, batch as i64],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(|e| self.err(e))?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(|e| self.err(e))?;
                rows
            };
            if rows.is_empty() {
                break;
            }
            let texts: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
            let vs = emb.embed(&texts)?;
            if vs.len() != rows.len() || vs.iter().any(|v| v.len() != emb.dims()) {
                return Err(Error::Invalid(format!(
                    "embedder {}/{} returned vectors of the wrong count or size",
                    emb.provider(),
                    emb.model()
                )));
            }
            let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
            for ((id, _), v) in rows.iter().zip(vs) {
                self.put_embedding(&tx, *id, emb.as_ref(), v)?;
            }
            tx.commit().map_err(|e| self.err(e))?;
            done += rows.len() as u64;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
