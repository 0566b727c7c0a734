//! The embedding cache: `(provider, model, dims, SHA-256 of the text)` → vector, in the
//! `embedding_cache` table of a workspace's `memory.db` (migration 2), so the same text is
//! never sent to a provider twice while its entry lives.
//!
//! Entries carry a last-used time (Unix ms, strictly increasing within the process so that
//! order is exact even within one millisecond); past [`EmbeddingCache::cap`] entries the least
//! recently used are evicted. [`CachedEmbedder`] wraps any [`Embedder`] with it: hits are
//! served from the table, misses (each distinct text once) go to the inner embedder in one
//! call, and are stored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use super::db::{open_db, sql_err};
use super::embed::{from_blob, to_blob, Embedder};
use crate::error::{Error, Result};

/// Default entry cap.
pub const DEFAULT_CAP: usize = 50_000;

static LAST_TICK: AtomicI64 = AtomicI64::new(0);

/// Now in Unix ms, but always greater than the previous call's value.
fn tick() -> i64 {
    let now = super::now_ms();
    let mut prev = LAST_TICK.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST_TICK.compare_exchange(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(p) => prev = p,
        }
    }
}

/// SHA-256 of `text`, hex.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache table of one `memory.db`.
#[derive(Debug)]
pub struct EmbeddingCache {
    conn: Mutex<Connection>,
    path: PathBuf,
    cap: usize,
}

impl EmbeddingCache {
    /// Opens the cache in the memory database at `path` (creating and migrating it), keeping
    /// at most `cap` entries (at least 1).
    pub fn open(path: &Path, cap: usize) -> Result<EmbeddingCache> {
        Ok(EmbeddingCache {
            conn: Mutex::new(open_db(path)?),
            path: path.to_path_buf(),
            cap: cap.max(1),
        })
    }

    /// The entry cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        sql_err(&self.path, e)
    }

    /// Number of entries.
    pub fn len(&self) -> Result<usize> {
        self.conn()
            .query_row("SELECT count(*) FROM embedding_cache", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(|e| self.err(e))
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The vector of `hash` (bumping its last-used time), if cached with exactly `dims`
    /// values.
    pub fn get(
        &self,
        provider: &str,
        model: &str,
        dims: usize,
        hash: &str,
    ) -> Result<Option<Vec<f32>>> {
        let conn = self.conn();
        let blob: Option<Vec<u8>> = conn
            .query_row(
                "SELECT vector FROM embedding_cache
                 WHERE provider = ?1 AND model = ?2 AND dims = ?3 AND hash = ?4",
                params![provider, model, dims as i64, hash],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        let Some(v) = blob.and_then(|b| from_blob(&b)).filter(|v| v.len() == dims) else {
            return Ok(None);
        };
        conn.execute(
            "UPDATE embedding_cache SET last_used = ?5
             WHERE provider = ?1 AND model = ?2 AND dims = ?3 AND hash = ?4",
            params![provider, model, dims as i64, hash, tick()],
        )
        .map_err(|e| self.err(e))?;
        Ok(Some(v))
    }

    /// Stores vectors by hash, then evicts the least recently used entries past the cap.
    pub fn put_many(
        &self,
        provider: &str,
        model: &str,
        dims: usize,
        entries: &[(String, Vec<f32>)],
    ) -> Result<()> {
        let conn = self.conn();
        let tx = conn.unchecked_transaction().map_err(|e| self.err(e))?;
        for (hash, v) in entries {
            tx.execute(
                "INSERT OR REPLACE INTO embedding_cache
                   (provider, model, dims, hash, vector, last_used)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![provider, model, dims as i64, hash, to_blob(v), tick()],
            )
            .map_err(|e| self.err(e))?;
        }
        let n: i64 = tx
            .query_row("SELECT count(*) FROM embedding_cache", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        let excess = n - self.cap as i64;
        if excess > 0 {
            tx.execute(
                "DELETE FROM embedding_cache WHERE (provider, model, dims, hash) IN
                   (SELECT provider, model, dims, hash FROM embedding_cache
                    ORDER BY last_used ASC LIMIT ?1)",
                [excess],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Whether `text` is cached for the model (without bumping it).
    pub fn contains(&self, provider: &str, model: &str, dims: usize, text: &str) -> Result<bool> {
        self.conn()
            .query_row(
                "SELECT 1 FROM embedding_cache
                 WHERE provider = ?1 AND model = ?2 AND dims = ?3 AND hash = ?4",
                params![provider, model, dims as i64, content_hash(text)],
                |_| Ok(()),
            )
            .optional()
            .map(|x| x.is_some())
            .map_err(|e| self.err(e))
    }
}

/// An [`Embedder`] that serves repeated texts from an [`EmbeddingCache`]; its provider,
/// model and dims are the inner embedder's.
#[derive(Debug)]
pub struct CachedEmbedder {
    inner: Arc<dyn Embedder>,
    cache: EmbeddingCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl CachedEmbedder {
    /// `inner` behind `cache`.
    pub fn new(inner: Arc<dyn Embedder>, cache: EmbeddingCache) -> CachedEmbedder {
        CachedEmbedder {
            inner,
            cache,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cache.
    pub fn cache(&self) -> &EmbeddingCache {
        &self.cache
    }

    /// Texts served from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Texts sent to the inner embedder so far.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

impl Embedder for CachedEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let (p, m, d) = (self.inner.provider(), self.inner.model(), self.inner.dims());
        let hashes: Vec<String> = texts.iter().map(|t| content_hash(t)).collect();
        let mut out: Vec<Option<Vec<f32>>> = Vec::with_capacity(texts.len());
        // Distinct missing texts, in first-seen order.
        let mut missing: Vec<usize> = Vec::new();
        for (i, h) in hashes.iter().enumerate() {
            let got = self.cache.get(p, m, d, h)?;
            if got.is_none() && !missing.iter().any(|&j| hashes[j] == *h) {
                missing.push(i);
            }
            out.push(got);
        }
        self.hits.fetch_add(
            (texts.len() - out.iter().filter(|x| x.is_none()).count()) as u64,
            Ordering::Relaxed,
        );
        if !missing.is_empty() {
            self.misses
                .fetch_add(missing.len() as u64, Ordering::Relaxed);
            let ask: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            let got = self.inner.embed(&ask)?;
            if got.len() != ask.len()
                || got
                    .iter()
                    .any(|v| v.len() != d || v.iter().any(|x| !x.is_finite()))
            {
                return Err(Error::Invalid(format!(
                    "embedder {p}/{m} returned vectors of the wrong count, size or value"
                )));
            }
            let entries: Vec<(String, Vec<f32>)> = missing
                .iter()
                .zip(got)
                .map(|(&i, v)| (hashes[i].clone(), v))
                .collect();
            self.cache.put_many(p, m, d, &entries)?;
            for slot in 0..out.len() {
                if out[slot].is_none() {
                    let h = &hashes[slot];
                    out[slot] = entries
                        .iter()
                        .find(|(eh, _)| eh == h)
                        .map(|(_, v)| v.clone());
                }
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    fn provider(&self) -> &str {
        self.inner.provider()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    fn dims(&self) -> usize {
        self.inner.dims()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::HashEmbedder;

    #[derive(Debug)]
    struct Counting(HashEmbedder, AtomicU64);

    impl Embedder for Counting {
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
            self.1.fetch_add(texts.len() as u64, Ordering::Relaxed);
            self.0.embed(texts)
        }
        fn provider(&self) -> &str {
            "count"
        }
        fn model(&self) -> &str {
            "m"
        }
        fn dims(&self) -> usize {
            self.0.dims()
        }
    }

    #[test]
    fn hits_dedupe_and_lru_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(Counting(HashEmbedder::new(8), AtomicU64::new(0)));
        let cache = EmbeddingCache::open(&dir.path().join("memory.db"), 3).unwrap();
        let c = CachedEmbedder::new(inner.clone(), cache);
        let v = c.embed(&["a", "b", "a"]).unwrap();
        assert_eq!(v[0], v[2]);
        assert_eq!(inner.1.load(Ordering::Relaxed), 2);
        c.embed(&["a", "b"]).unwrap();
        assert_eq!(inner.1.load(Ordering::Relaxed), 2);
        assert_eq!(c.hits(), 2);
        assert_eq!(c.misses(), 2);
        // "a" used last; adding c and d evicts b (the least recently used), then c.
        c.embed(&["a"]).unwrap();
        c.embed(&["c"]).unwrap();
        assert_eq!(c.cache().len().unwrap(), 3);
        c.embed(&["d"]).unwrap();
        assert_eq!(c.cache().len().unwrap(), 3);
        let has = |t| c.cache().contains("count", "m", 8, t).unwrap();
        assert!(has("a") && has("c") && has("d") && !has("b"));
        assert_eq!(v[0], c.embed(&["a"]).unwrap()[0]);
    }
}
