//! Search: keyword (FTS5 BM25, trigram fallback), vector (exact scan), hybrid fusion,
//! temporal decay, MMR re-ranking, query expansion, snippets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::params;
use serde::Serialize;

use super::{embed, is_evergreen, now_ms, Memory};
use crate::error::{Error, Result};

/// Which signals rank the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// BM25 over the full-text indexes only.
    Keyword,
    /// Vector similarity only (needs an embedder).
    Vector,
    /// Both, fused; keyword-only when there is no embedder.
    Hybrid,
}

/// Search settings; [`SearchOptions::default`] gives the defaults described on each field.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOptions {
    /// Most results (default 10).
    pub limit: usize,
    /// Mode (default hybrid).
    pub mode: SearchMode,
    /// Weight of the vector score in hybrid fusion (default 0.7).
    pub vector_weight: f32,
    /// Weight of the keyword score in hybrid fusion (default 0.3).
    pub keyword_weight: f32,
    /// Candidates taken from each signal, as a multiple of `limit` (default 4).
    pub candidate_multiplier: usize,
    /// Temporal decay of scores by age (default on).
    pub decay: bool,
    /// Half-life of the decay, in days (default 30).
    pub half_life_days: f64,
    /// MMR re-ranking for diversity (default on).
    pub mmr: bool,
    /// MMR trade-off: 1 = relevance only, 0 = diversity only (default 0.7).
    pub mmr_lambda: f32,
    /// Drop stop words from the keyword query (default on).
    pub expand_query: bool,
    /// "Now" for the decay, Unix ms (default: the clock).
    pub now_ms: Option<i64>,
}

impl Default for SearchOptions {
    fn default() -> Self {
        // Defaults chosen by measurement (bulkhead-eval-memory, 500 Debian man pages, recall@5
        // / MRR): decay on cost 0.986/0.905 -> 0.250/0.191 where age says nothing about
        // relevance, MMR was neutral to slightly negative, expansion helped keyword search a
        // little, and 0.5/0.5 beat 0.7/0.3 with the lexical offline embedder. Decay and MMR
        // stay available (half-life 30 days, lambda 0.7) for callers who want recency or
        // diversity; re-measure the weights when a semantic embedder is the default.
        SearchOptions {
            limit: 10,
            mode: SearchMode::Hybrid,
            vector_weight: 0.5,
            keyword_weight: 0.5,
            candidate_multiplier: 4,
            decay: false,
            half_life_days: 30.0,
            mmr: false,
            mmr_lambda: 0.7,
            expand_query: true,
            now_ms: None,
        }
    }
}

/// One hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResult {
    /// Chunk id.
    pub id: i64,
    /// Its source.
    pub source: String,
    /// Relevance, 0..1 (fused, after decay).
    pub score: f32,
    /// The text around the first match (or the beginning), at most about 240 characters.
    pub snippet: String,
    /// Last stored, Unix ms.
    pub updated: i64,
}

// ---------------------------------------------------------------------------------------
// Text
// ---------------------------------------------------------------------------------------

/// Whether `c` is Chinese, Japanese or Korean script (text with no spaces between words, or
/// words with attached particles): such queries go to the trigram index.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF     // Hiragana, Katakana
        | 0x31F0..=0x31FF   // Katakana extensions
        | 0x3400..=0x4DBF   // CJK extension A
        | 0x4E00..=0x9FFF   // CJK unified ideographs
        | 0xF900..=0xFAFF   // compatibility ideographs
        | 0xFF66..=0xFF9F   // half-width Katakana
        | 0x1100..=0x11FF   // Hangul Jamo
        | 0x3130..=0x318F   // Hangul compatibility Jamo
        | 0xAC00..=0xD7AF   // Hangul syllables
        | 0x20000..=0x2FA1F // CJK extensions B..
    )
}

/// Lower-cased words: runs of alphanumeric characters (a CJK run is one "word").
pub fn tokenize(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A language's stop words for query expansion. Add a language by adding a row to
/// [`LANGUAGES`] (ES, PT, ZH, JA, KO, AR are to come).
#[derive(Debug)]
pub struct Language {
    /// ISO 639-1 code.
    pub code: &'static str,
    /// Lower-case stop words.
    pub stop_words: &'static [&'static str],
}

const EN_STOP: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can",
    "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "had", "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how",
    "i", "if", "in", "into", "is", "it", "its", "itself", "just", "me", "more", "most", "my", "no",
    "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours", "did", "does", "tell",
    "remember", "recall", "know", "please", "s", "t", "don", "doesn", "didn", "isn", "aren",
    "wasn",
];

/// The languages whose stop words query expansion removes.
pub const LANGUAGES: &[Language] = &[Language {
    code: "en",
    stop_words: EN_STOP,
}];

fn is_stop_word(w: &str) -> bool {
    LANGUAGES.iter().any(|l| l.stop_words.contains(&w))
}

/// The keywords of a query: its words, deduplicated, without stop words (when `expand`)
/// unless nothing else is left.
pub fn query_terms(query: &str, expand: bool) -> Vec<String> {
    let mut seen = HashSet::new();
    let all: Vec<String> = tokenize(query)
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .collect();
    if !expand {
        return all;
    }
    let kept: Vec<String> = all.iter().filter(|w| !is_stop_word(w)).cloned().collect();
    if kept.is_empty() {
        all
    } else {
        kept
    }
}

/// `a · b` over the shorter length, with eight independent accumulators so that the
/// compiler vectorizes it (a single running sum would force sequential adds).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(x).zip(y) {
            *s += x * y;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Byte range of the first case-insensitive occurrence of `needle` (lower-case) in `hay`.
fn find_ci(hay: &str, needle: &str) -> Option<(usize, usize)> {
    if needle.is_empty() {
        return None;
    }
    for (i, _) in hay.char_indices() {
        let mut n = needle.chars();
        let mut end = i;
        let mut ok = true;
        'outer: for (j, c) in hay[i..].char_indices() {
            for lc in c.to_lowercase() {
                match n.next() {
                    Some(x) if x == lc => {}
                    Some(_) => {
                        ok = false;
                        break 'outer;
                    }
                    None => break 'outer,
                }
            }
            end = i + j + c.len_utf8();
            if n.clone().next().is_none() {
                break;
            }
        }
        if ok && n.next().is_none() {
            return Some((i, end));
        }
    }
    None
}

/// Most characters in a snippet.
pub const SNIPPET_CHARS: usize = 240;

/// The text around the earliest match of any of `terms` (or its beginning), trimmed to
/// about [`SNIPPET_CHARS`] characters at word boundaries, with `…` where cut.
pub fn snippet(text: &str, terms: &[String]) -> String {
    let text = text.trim();
    let hit = terms
        .iter()
        .filter_map(|t| find_ci(text, t))
        .min_by_key(|r| r.0)
        .map_or(0, |r| r.0);
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    if chars.len() <= SNIPPET_CHARS {
        return text.split_whitespace().collect::<Vec<_>>().join(" ");
    }
    let hit_ci = chars.partition_point(|(b, _)| *b < hit);
    let mut start = hit_ci.saturating_sub(SNIPPET_CHARS / 4);
    let end = (start + SNIPPET_CHARS).min(chars.len());
    start = end.saturating_sub(SNIPPET_CHARS).min(start);
    // Move to word boundaries (a little).
    let mut s = start;
    if s > 0 {
        while s < hit_ci && s < start + 20 && !chars[s - 1].1.is_whitespace() {
            s += 1;
        }
        if s == hit_ci || s == start + 20 {
            s = start;
        }
    }
    let mut e = end;
    if e < chars.len() {
        while e > s + SNIPPET_CHARS / 2 && e > end - 20 && !chars[e].1.is_whitespace() {
            e -= 1;
        }
        if e == end - 20 {
            e = end;
        }
    }
    let b0 = chars[s].0;
    let b1 = if e < chars.len() {
        chars[e].0
    } else {
        text.len()
    };
    let body = text[b0..b1]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{}{}{}",
        if s > 0 { "…" } else { "" },
        body,
        if e < chars.len() { "…" } else { "" }
    )
}

// ---------------------------------------------------------------------------------------
// Ranking steps (pure, unit-tested)
// ---------------------------------------------------------------------------------------

/// The decay factor for a chunk last stored at `updated_ms`: `0.5^(age / half_life)`,
/// 1 for evergreen sources and for times in the future.
pub fn decay_factor(source: &str, updated_ms: i64, now_ms: i64, half_life_days: f64) -> f32 {
    if is_evergreen(source) || half_life_days <= 0.0 || !half_life_days.is_finite() {
        return 1.0;
    }
    let age_days = (now_ms - updated_ms).max(0) as f64 / 86_400_000.0;
    0.5f64.powf(age_days / half_life_days) as f32
}

/// A candidate for re-ranking: its relevance and what MMR compares it by.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Chunk id.
    pub id: i64,
    /// Relevance.
    pub score: f32,
    /// Unit vector, when it has one of the configured embedder.
    pub vector: Option<Arc<[f32]>>,
    /// Its words (used when either side has no vector).
    pub words: HashSet<String>,
}

fn similarity(a: &Candidate, b: &Candidate) -> f32 {
    match (&a.vector, &b.vector) {
        (Some(x), Some(y)) => dot(x, y).max(0.0),
        _ => {
            let inter = a.words.intersection(&b.words).count();
            let union = a.words.len() + b.words.len() - inter;
            if union == 0 {
                0.0
            } else {
                inter as f32 / union as f32
            }
        }
    }
}

/// Maximal marginal relevance: repeatedly picks the candidate maximizing
/// `λ·relevance − (1−λ)·(max similarity to those picked)`, relevance scaled to 0..1 by the
/// best score. Returns indexes into `cands`, at most `limit`.
pub fn mmr(cands: &[Candidate], lambda: f32, limit: usize) -> Vec<usize> {
    let top = cands.iter().map(|c| c.score).fold(0f32, f32::max);
    let rel = |c: &Candidate| if top > 0.0 { c.score / top } else { 0.0 };
    let mut picked: Vec<usize> = Vec::new();
    let mut left: Vec<usize> = (0..cands.len()).collect();
    while picked.len() < limit && !left.is_empty() {
        let mut best = (0usize, f32::NEG_INFINITY);
        for (k, &i) in left.iter().enumerate() {
            let sim = picked
                .iter()
                .map(|&j| similarity(&cands[i], &cands[j]))
                .fold(0f32, f32::max);
            let v = lambda * rel(&cands[i]) - (1.0 - lambda) * sim;
            if v > best.1 {
                best = (k, v);
            }
        }
        picked.push(left.remove(best.0));
    }
    picked
}

// ---------------------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------------------

/// The configured embedder's unit vectors, one row per chunk, in one contiguous matrix.
#[derive(Debug)]
pub struct VectorIndex {
    dims: usize,
    ids: Vec<i64>,
    data: Vec<f32>,
    pos: HashMap<i64, usize>,
    /// `vectors_gen` of the database when loaded.
    generation: i64,
}

impl VectorIndex {
    /// Rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether it has no row.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Dimensions.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Bytes held (the matrix, ids and the id → row map, roughly).
    pub fn heap_bytes(&self) -> usize {
        self.data.capacity() * 4 + self.ids.capacity() * 8 + self.pos.capacity() * 24
    }

    /// A chunk's vector.
    pub fn vector(&self, id: i64) -> Option<&[f32]> {
        self.pos
            .get(&id)
            .map(|&i| &self.data[i * self.dims..(i + 1) * self.dims])
    }

    /// The `k` best (id, cosine) for the unit vector `q`, best first.
    pub fn top_k(&self, q: &[f32], k: usize) -> Vec<(i64, f32)> {
        if self.dims == 0 || q.len() != self.dims || k == 0 {
            return Vec::new();
        }
        let mut scored: Vec<(i64, f32)> = self
            .data
            .chunks_exact(self.dims)
            .zip(&self.ids)
            .map(|(row, &id)| (id, dot(row, q)))
            .collect();
        let by = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if scored.len() > k {
            scored.select_nth_unstable_by(k - 1, by);
            scored.truncate(k);
        }
        scored.sort_by(by);
        scored
    }
}

/// Key of the process-wide vector cache: database (path and random id) and model.
type CacheKey = (std::path::PathBuf, String, String, String, usize);

/// The use clock, and per key the last use and the matrix.
type VectorCache = (u64, HashMap<CacheKey, (u64, Arc<VectorIndex>)>);

/// Most matrices kept by the process (least recently used ones go first).
pub const VECTOR_CACHE_ENTRIES: usize = 32;

/// Loaded matrices, shared by every [`Memory`] of the process (the agent's tools open the
/// memory per call), with a use counter for LRU eviction.
fn cache() -> &'static Mutex<VectorCache> {
    static CACHE: OnceLock<Mutex<VectorCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new((0, HashMap::new())))
}

impl Memory {
    fn meta_i64(&self, key: &str) -> Result<(String, i64)> {
        self.conn
            .query_row(
                "SELECT (SELECT value FROM meta WHERE key = 'db_id'),
                        (SELECT value FROM meta WHERE key = ?1)",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err(e))
    }

    /// The vector matrix of the configured embedder: loaded at first use, kept for the
    /// process, loaded again after any change to the database's vectors.
    pub fn vector_index(&self) -> Result<Option<Arc<VectorIndex>>> {
        let Some(emb) = &self.embedder else {
            return Ok(None);
        };
        let (db_id, generation) = self.meta_i64("vectors_gen")?;
        let dims = emb.dims();
        let key: CacheKey = (
            self.path.clone(),
            db_id,
            emb.provider().to_string(),
            emb.model().to_string(),
            dims,
        );
        {
            let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
            c.0 += 1;
            let tick = c.0;
            if let Some((used, ix)) = c.1.get_mut(&key) {
                if ix.generation == generation {
                    *used = tick;
                    return Ok(Some(ix.clone()));
                }
            }
        }
        let mut st = self
            .conn
            .prepare(
                "SELECT chunk_id, vector FROM embeddings
                 WHERE provider = ?1 AND model = ?2 AND dims = ?3 ORDER BY chunk_id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st
            .query(params![emb.provider(), emb.model(), dims as i64])
            .map_err(|e| self.err(e))?;
        let mut ix = VectorIndex {
            dims,
            ids: Vec::new(),
            data: Vec::new(),
            pos: HashMap::new(),
            generation,
        };
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let blob = r.get_ref(1).map_err(|e| self.err(e))?;
            let bytes = blob.as_blob().unwrap_or(&[]);
            if bytes.len() != dims * 4 {
                log::warn!(target: "memory", "chunk {id}: vector of {} bytes, want {}", bytes.len(), dims * 4);
                continue;
            }
            let start = ix.data.len();
            ix.data.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            embed::normalize(&mut ix.data[start..]);
            ix.pos.insert(id, ix.ids.len());
            ix.ids.push(id);
        }
        ix.data.shrink_to_fit();
        ix.ids.shrink_to_fit();
        let ix = Arc::new(ix);
        let mut c = cache().lock().unwrap_or_else(|p| p.into_inner());
        c.0 += 1;
        let tick = c.0;
        c.1.insert(key, (tick, ix.clone()));
        while c.1.len() > VECTOR_CACHE_ENTRIES {
            let oldest = c.1.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| k.clone());
            match oldest {
                Some(k) => c.1.remove(&k),
                None => break,
            };
        }
        Ok(Some(ix))
    }

    fn fts(&self, table: &str, expr: &str, k: usize) -> Result<Vec<(i64, f32)>> {
        let sql = format!(
            "SELECT rowid, bm25({table}) FROM {table} WHERE {table} MATCH ?1
             ORDER BY bm25({table}) LIMIT ?2"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![expr, k as i64], |r| {
                Ok((r.get::<_, i64>(0)?, -(r.get::<_, f64>(1)? as f32)))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(normalize_scores(rows))
    }

    /// Keyword candidates, best first, scores 0..1 (BM25 divided by the best BM25).
    /// `unicode61` words first; the trigram index when that finds nothing or the query is
    /// CJK; for terms shorter than three characters there, a substring scan.
    pub fn keyword_candidates(&self, terms: &[String], k: usize) -> Result<Vec<(i64, f32)>> {
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let cjk = terms.iter().any(|t| t.chars().any(is_cjk));
        if !cjk {
            let hits = self.fts("chunks_fts", &or_expr(terms.iter().map(String::as_str)), k)?;
            if !hits.is_empty() {
                return Ok(hits);
            }
        }
        let mut grams: Vec<String> = Vec::new();
        let mut short: Vec<&str> = Vec::new();
        for t in terms {
            let cs: Vec<char> = t.chars().collect();
            if cs.len() < 3 {
                short.push(t);
            } else if cs.iter().any(|&c| is_cjk(c)) {
                grams.extend(cs.windows(3).map(|w| w.iter().collect::<String>()));
            } else {
                grams.push(t.clone());
            }
        }
        if !grams.is_empty() {
            grams.sort();
            grams.dedup();
            let hits = self.fts("chunks_tri", &or_expr(grams.iter().map(String::as_str)), k)?;
            if !hits.is_empty() {
                return Ok(hits);
            }
        }
        if short.is_empty() {
            return Ok(Vec::new());
        }
        // Short terms: a bounded substring scan, scored by the share of terms found.
        let mut counts: HashMap<i64, usize> = HashMap::new();
        let mut st = self
            .conn
            .prepare_cached("SELECT id FROM chunks WHERE instr(lower(text), ?1) > 0 LIMIT ?2")
            .map_err(|e| self.err(e))?;
        for t in &short {
            let ids = st
                .query_map(params![t, (k * 4) as i64], |r| r.get::<_, i64>(0))
                .map_err(|e| self.err(e))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| self.err(e))?;
            for id in ids {
                *counts.entry(id).or_default() += 1;
            }
        }
        let mut hits: Vec<(i64, f32)> = counts
            .into_iter()
            .map(|(id, n)| (id, n as f32 / short.len() as f32))
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(&a.0)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Searches the memory (see [`SearchOptions`]).
    pub fn search(&self, query: &str, opts: &SearchOptions) -> Result<Vec<SearchResult>> {
        if query.trim().is_empty() {
            return Err(Error::Invalid("the search query is empty".into()));
        }
        let limit = opts.limit.max(1);
        let pool = limit.saturating_mul(opts.candidate_multiplier.max(1));
        let terms = query_terms(query, opts.expand_query);
        let index = match opts.mode {
            SearchMode::Keyword => None,
            SearchMode::Vector => {
                if self.embedder.is_none() {
                    return Err(Error::Invalid(
                        "vector search needs an embedder (use keyword or hybrid)".into(),
                    ));
                }
                self.vector_index()?
            }
            SearchMode::Hybrid => self.vector_index()?.filter(|ix| !ix.is_empty()),
        };
        let qvec: Option<Vec<f32>> = match (&index, &self.embedder) {
            (Some(_), Some(e)) => {
                let mut v = e
                    .embed(&[query])?
                    .pop()
                    .ok_or_else(|| Error::Invalid("the embedder returned no vector".into()))?;
                embed::normalize(&mut v);
                Some(v)
            }
            _ => None,
        };
        // Candidates: id -> (keyword score, vector score).
        let mut cand: HashMap<i64, (f32, f32)> = HashMap::new();
        if opts.mode != SearchMode::Vector {
            for (id, s) in self.keyword_candidates(&terms, pool)? {
                cand.entry(id).or_default().0 = s;
            }
        }
        if let (Some(ix), Some(q)) = (&index, &qvec) {
            for (id, s) in ix.top_k(q, pool) {
                cand.entry(id).or_default().1 = s.max(0.0);
            }
            // Keyword candidates get their true vector score too.
            for (id, v) in cand.iter_mut() {
                if v.1 == 0.0 {
                    if let Some(row) = ix.vector(*id) {
                        v.1 = dot(row, q).max(0.0);
                    }
                }
            }
        }
        let fuse = |kw: f32, vs: f32| match (opts.mode, &qvec) {
            (SearchMode::Keyword, _) | (SearchMode::Hybrid, None) => kw,
            (SearchMode::Vector, _) => vs,
            (SearchMode::Hybrid, Some(_)) => {
                let (wv, wk) = (opts.vector_weight.max(0.0), opts.keyword_weight.max(0.0));
                let sum = wv + wk;
                if sum > 0.0 {
                    (wv * vs + wk * kw) / sum
                } else {
                    0.0
                }
            }
        };
        let now = opts.now_ms.unwrap_or_else(now_ms);
        let mut rows: Vec<(Candidate, String, String, i64)> = Vec::new();
        let mut st = self
            .conn
            .prepare_cached("SELECT source, text, updated FROM chunks WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        for (id, (kw, vs)) in cand {
            let row = st.query_row([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            });
            let (source, text, updated) = match row {
                Ok(x) => x,
                Err(rusqlite::Error::QueryReturnedNoRows) => continue,
                Err(e) => return Err(self.err(e)),
            };
            let mut score = fuse(kw, vs);
            if opts.decay {
                score *= decay_factor(&source, updated, now, opts.half_life_days);
            }
            if score <= 0.0 {
                continue;
            }
            let vector = index
                .as_ref()
                .and_then(|ix| ix.vector(id))
                .map(Arc::<[f32]>::from);
            let words = tokenize(&text).into_iter().collect();
            rows.push((
                Candidate {
                    id,
                    score,
                    vector,
                    words,
                },
                source,
                text,
                updated,
            ));
        }
        rows.sort_by(|a, b| b.0.score.total_cmp(&a.0.score).then(b.0.id.cmp(&a.0.id)));
        let order: Vec<usize> = if opts.mmr {
            let cands: Vec<Candidate> = rows.iter().map(|r| r.0.clone()).collect();
            mmr(&cands, opts.mmr_lambda.clamp(0.0, 1.0), limit)
        } else {
            (0..rows.len().min(limit)).collect()
        };
        let snippet_terms = query_terms(query, true);
        Ok(order
            .into_iter()
            .map(|i| {
                let (c, source, text, updated) = &rows[i];
                SearchResult {
                    id: c.id,
                    source: source.clone(),
                    score: c.score,
                    snippet: snippet(text, &snippet_terms),
                    updated: *updated,
                }
            })
            .collect())
    }
}

/// `"a" OR "b"`, each term an FTS5 string (so no term is read as syntax).
fn or_expr<'a>(terms: impl Iterator<Item = &'a str>) -> String {
    terms
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// Divides by the best score (BM25 is unbounded), so the best keyword hit scores 1.
fn normalize_scores(mut rows: Vec<(i64, f32)>) -> Vec<(i64, f32)> {
    let top = rows.iter().map(|r| r.1).fold(0f32, f32::max);
    for r in &mut rows {
        r.1 = if top > 0.0 {
            (r.1 / top).clamp(0.0, 1.0)
        } else {
            1.0
        };
    }
    rows
}
