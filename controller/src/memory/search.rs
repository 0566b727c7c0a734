//! Search: keyword (FTS5 BM25, trigram fallback), vector (an int8 scan re-scored exactly,
//! see [`super::vector`]), hybrid fusion (the keyword query and the vector scan run in
//! parallel), temporal decay, MMR re-ranking, query expansion ([`super::stopwords`]),
//! snippets.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rusqlite::params;
use serde::Serialize;

use super::{embed, is_evergreen, now_ms, stopwords, Embedder, Memory};
use crate::error::{Error, Result};

pub use super::stopwords::{Language, LANGUAGES};
pub use super::vector::{VectorIndex, VECTOR_CACHE_ENTRIES};

/// The query's unit vector and the vector scan's candidates (id, approximate cosine).
type QueryScan = (Vec<f32>, Vec<(i64, f32)>);

/// The vector scan takes this many times the candidates it hands on, from the int8 codes;
/// their exact f32 scores pick the final ones.
pub const RESCORE_FACTOR: usize = 4;

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
    /// Weight of the vector score in hybrid fusion (default 0.3).
    pub vector_weight: f32,
    /// Weight of the keyword score in hybrid fusion (default 0.7).
    pub keyword_weight: f32,
    /// Least cosine similarity for a chunk found by its vector alone (no keyword match) to
    /// count as a result, so that a query about nothing in memory returns nothing rather
    /// than the nearest noise. Default: the embedder's [`Embedder::min_similarity`].
    pub min_similarity: Option<f32>,
    /// Candidates taken from each signal, as a multiple of `limit` (default 4).
    pub candidate_multiplier: usize,
    /// Temporal decay of scores by age (default off).
    pub decay: bool,
    /// Half-life of the decay, in days (default 30).
    pub half_life_days: f64,
    /// MMR re-ranking for diversity (default off).
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
        // Defaults chosen by measurement (bulkhead-eval-memory on Debian man pages, recall@5 /
        // MRR, with the built-in local model): decay cost 0.986/0.905 -> 0.22/0.16 where age
        // says nothing about relevance, MMR was neutral to slightly negative, expansion helped
        // keyword search a little, and 0.3 vector / 0.7 keyword kept keyword search's overall
        // recall while adding what only meaning finds (queries sharing few words with their
        // page); 0.5/0.5 and 0.7/0.3 lost more overall than they gained there. Decay and MMR
        // stay available (half-life 30 days, lambda 0.7) for callers who want recency or
        // diversity.
        SearchOptions {
            limit: 10,
            mode: SearchMode::Hybrid,
            vector_weight: 0.3,
            keyword_weight: 0.7,
            min_similarity: None,
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

/// The keywords of a query: its words, deduplicated; when `expand`, without the stop words
/// of any language in [`LANGUAGES`], CJK text cut at its particles and Korean particles
/// stripped ([`stopwords::keywords`]), unless nothing would be left (then the words as
/// they are).
pub fn query_terms(query: &str, expand: bool) -> Vec<String> {
    let mut seen = HashSet::new();
    let all: Vec<String> = tokenize(query)
        .into_iter()
        .filter(|w| seen.insert(w.clone()))
        .collect();
    if !expand {
        return all;
    }
    let mut seen = HashSet::new();
    let kept: Vec<String> = all
        .iter()
        .flat_map(|w| stopwords::keywords(w))
        .filter(|w| seen.insert(w.clone()))
        .collect();
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

/// What one term is taken to add at most to a row's BM25 score, in units of its idf, when
/// MaxScore decides that rows holding only common terms cannot reach the top. FTS5's
/// `bm25()` (k1 1.2, b 0.75) gives `idf × tf × 2.2 / (tf + 1.2 × (0.25 + 0.75 × len / avg))`:
/// 1 for one occurrence in a row of average length, 1.375 for two, 1.57 for three, and 2.2
/// only in the limit of a term repeated without end in an empty row. With the exact bound
/// (2.2) pruning rarely succeeds and its failed tries raised the keyword p99 by about a
/// third on the 100k-chunk bench; with 1.5 it cut the p99 by a third, and on 1,000 queries
/// the top 10 matched the plain query's in 9,995 of 9,996 places (99.9% of the top 40).
/// What it can miss: a row holding only common terms, each several times in a short chunk
/// (the vector side still sees it).
pub const PRUNE_TERM_BOUND: f64 = 1.5;

/// Below this many postings (the sum of the terms' document counts) a keyword query is cheap
/// and runs as one OR query.
pub const PRUNE_MIN_POSTINGS: i64 = 8192;

/// FTS5's inverse document frequency of a term in `df` of `n` rows (floored at 1e-6).
fn bm25_idf(n: i64, df: i64) -> f64 {
    let idf = ((n - df) as f64 + 0.5).ln() - (df as f64 + 0.5).ln();
    if idf <= 0.0 {
        1e-6
    } else {
        idf
    }
}

/// An SQLite varint (as FTS5 writes them) at the start of `b`.
fn read_varint(b: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..9 {
        let c = *b.get(i)?;
        if i == 8 {
            return Some((v << 8) | u64::from(c));
        }
        v = (v << 7) | u64::from(c & 0x7f);
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl Memory {
    /// `(rowid, -bm25)` of the rows matching `expr`, best first, at most `limit`.
    fn fts_rows(&self, table: &str, expr: &str, limit: Option<usize>) -> Result<Vec<(i64, f64)>> {
        let sql = format!(
            "SELECT rowid, bm25({table}) FROM {table} WHERE {table} MATCH ?1
             ORDER BY bm25({table}) LIMIT ?2"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let limit = limit.map_or(-1, |k| k as i64);
        let rows = st
            .query_map(params![expr, limit], |r| {
                Ok((r.get::<_, i64>(0)?, -r.get::<_, f64>(1)?))
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn fts(&self, table: &str, expr: &str, k: usize) -> Result<Vec<(i64, f32)>> {
        let rows = self.fts_rows(table, expr, Some(k))?;
        Ok(normalize_scores(
            rows.into_iter().map(|(id, s)| (id, s as f32)).collect(),
        ))
    }

    /// The rows of `chunks_fts` and, per term, how many hold it (0 for a term the index
    /// spells differently, e.g. with diacritics it folds), from a `fts5vocab` table in this
    /// connection's temp schema. `None` when they cannot be read.
    fn word_doc_counts(&self, terms: &[String]) -> Option<(i64, Vec<i64>)> {
        self.conn
            .prepare_cached(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.bulkhead_words
                 USING fts5vocab(main, chunks_fts, row)",
            )
            .and_then(|mut st| st.execute([]))
            .ok()?;
        // FTS5's totals record (rowid 1 of the data table) starts with the row count.
        let n = self
            .conn
            .query_row("SELECT block FROM chunks_fts_data WHERE id = 1", [], |r| {
                r.get::<_, Vec<u8>>(0)
            })
            .ok()
            .and_then(|b| read_varint(&b))
            .and_then(|n| i64::try_from(n).ok())?;
        let mut st = self
            .conn
            .prepare_cached("SELECT doc FROM temp.bulkhead_words WHERE term = ?1")
            .ok()?;
        let mut df = Vec::with_capacity(terms.len());
        for t in terms {
            let d: i64 = st
                .query_row([stopwords::fold(t).as_ref()], |r| r.get(0))
                .unwrap_or(0);
            df.push(d);
        }
        Some((n, df))
    }

    /// The `k` best rows of the `unicode61` index for `terms` (raw BM25, best first),
    /// computed without scoring every row that holds a common term (MaxScore); `None` when
    /// that does not pay or the bound does not hold (the caller then runs the plain OR
    /// query, which scores every row holding any term: FTS5 has no top-k pruning, and its
    /// per-row `bm25()` is what a keyword query over many rows spends its time on).
    ///
    /// BM25 is a sum over the terms. The terms are split into rare ones `E` (the fewest
    /// postings) and common ones `C`. Every row holding an `E` term is scored exactly with
    /// all terms (`(all) AND (E)` scores `S + S_E`, `E` alone scores `S_E`); a row holding
    /// only `C` terms is taken to score at most `U = Σ_C idf × PRUNE_TERM_BOUND`. When the
    /// `k`-th best exact score beats `U`, those are the `k` best of the whole OR query, and
    /// the long lists of the common terms were only counted, not scored. Otherwise `E` takes
    /// in common terms until `U` falls below that score (it can only rise as more rows are
    /// scored), and is scored again, as long as the postings scored stay under a quarter of
    /// those of the plain query (a failed try costs that much on top of the plain query).
    fn words_top_k_pruned(
        &self,
        terms: &[String],
        k: usize,
        n: i64,
        df: &[i64],
    ) -> Result<Option<Vec<(i64, f64)>>> {
        let total: i64 = df.iter().sum();
        if terms.len() < 2 || k == 0 || total < PRUNE_MIN_POSTINGS {
            return Ok(None);
        }
        let mut order: Vec<usize> = (0..terms.len()).collect();
        order.sort_by_key(|&i| (df[i], i));
        // bound[j]: the most a row holding none of the j rarest terms can score.
        let mut bound = vec![0f64; order.len() + 1];
        for j in (0..order.len()).rev() {
            bound[j] = bound[j + 1] + bm25_idf(n, df[order[j]]) * PRUNE_TERM_BOUND;
        }
        // Start with the rarest term and the next ones while their postings stay under an
        // eighth of the query's.
        let mut j = 1;
        let mut e_sum = df[order[0]];
        while j < order.len() && e_sum + df[order[j]] <= total / 8 {
            e_sum += df[order[j]];
            j += 1;
        }
        let all = or_expr(terms.iter().map(String::as_str));
        let mut spent = 0i64;
        while j < order.len() {
            let e_sum: i64 = order[..j].iter().map(|&i| df[i]).sum();
            spent += 2 * e_sum;
            if spent > total / 4 {
                return Ok(None);
            }
            let e_expr = or_expr(order[..j].iter().map(|&i| terms[i].as_str()));
            let both = self.fts_rows("chunks_fts", &format!("({all}) AND ({e_expr})"), None)?;
            if both.len() < k {
                // Rows holding only common terms are needed to fill k.
                j += 1;
                continue;
            }
            let only: HashMap<i64, f64> = self
                .fts_rows("chunks_fts", &e_expr, None)?
                .into_iter()
                .collect();
            let mut rows: Vec<(i64, f64)> = both
                .into_iter()
                .map(|(id, s)| (id, s - only.get(&id).copied().unwrap_or(0.0)))
                .collect();
            let by = |a: &(i64, f64), b: &(i64, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
            if rows.len() > k {
                rows.select_nth_unstable_by(k - 1, by);
                rows.truncate(k);
            }
            rows.sort_by(by);
            let theta = rows[k - 1].1;
            let beats = |j: usize| theta > bound[j] * (1.0 + 1e-9) + 1e-9;
            if beats(j) {
                return Ok(Some(rows));
            }
            j += 1;
            while j < order.len() && !beats(j) {
                j += 1;
            }
        }
        Ok(None)
    }

    /// The `k` best rows of the `unicode61` index for `terms` (raw BM25, best first): by
    /// MaxScore when it applies, else the plain OR query. In a large query (from
    /// [`PRUNE_MIN_POSTINGS`]), terms in half the rows or more are left out when another term
    /// is left: BM25 gives them 1e-6, so they would only make every row that holds them be
    /// scored (and a row holding nothing else is no keyword candidate then).
    fn words_top_k(&self, terms: &[String], k: usize) -> Result<Vec<(i64, f64)>> {
        let Some((n, df)) = self.word_doc_counts(terms) else {
            return self.fts_rows(
                "chunks_fts",
                &or_expr(terms.iter().map(String::as_str)),
                Some(k),
            );
        };
        let useful: Vec<usize> = (0..terms.len())
            .filter(|&i| bm25_idf(n, df[i]) > 1e-6)
            .collect();
        let small = df.iter().sum::<i64>() < PRUNE_MIN_POSTINGS;
        let (terms, df): (Vec<String>, Vec<i64>) =
            if small || useful.is_empty() || useful.len() == terms.len() {
                (terms.to_vec(), df)
            } else {
                useful.iter().map(|&i| (terms[i].clone(), df[i])).unzip()
            };
        if let Some(rows) = self.words_top_k_pruned(&terms, k, n, &df)? {
            return Ok(rows);
        }
        self.fts_rows(
            "chunks_fts",
            &or_expr(terms.iter().map(String::as_str)),
            Some(k),
        )
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
            let hits = normalize_scores(
                self.words_top_k(terms, k)?
                    .into_iter()
                    .map(|(id, s)| (id, s as f32))
                    .collect(),
            );
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
    ///
    /// The keyword query runs on this connection while another thread embeds the query and
    /// scans the int8 vector matrix for `RESCORE_FACTOR ×` the candidates; the candidates'
    /// f32 vectors are then read from the database by id and scored exactly.
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
        let keyword = opts.mode != SearchMode::Vector;
        let approx_k = pool.saturating_mul(RESCORE_FACTOR);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The vector side touches no SQLite: the query's embedding and the int8 scan.
        let vector_side =
            |ix: &VectorIndex, emb: &dyn Embedder, threads: usize| -> Result<QueryScan> {
                let mut v = emb
                    .embed(&[query])?
                    .pop()
                    .ok_or_else(|| Error::Invalid("the embedder returned no vector".into()))?;
                embed::normalize(&mut v);
                let approx = ix.top_k_threads(&v, approx_k, threads);
                Ok((v, approx))
            };
        let (kw, vs) = match (&index, &self.embedder) {
            // The keyword query keeps this thread (and a core) busy meanwhile.
            (Some(ix), Some(emb)) if keyword => std::thread::scope(|s| {
                let side = &vector_side;
                let threads = cores.saturating_sub(1).max(1);
                let h = s.spawn(move || side(ix, emb.as_ref(), threads));
                let kw = self.keyword_candidates(&terms, pool);
                let vs = h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                (kw, Some(vs))
            }),
            (Some(ix), Some(emb)) => (Ok(Vec::new()), Some(vector_side(ix, emb.as_ref(), cores))),
            _ if keyword => (self.keyword_candidates(&terms, pool), None),
            _ => (Ok(Vec::new()), None),
        };
        let kw = kw?;
        let (qvec, approx) = match vs {
            Some(r) => {
                let (q, a) = r?;
                (Some(q), a)
            }
            None => (None, Vec::new()),
        };
        // Exact vectors of every candidate (the scan's and the keyword query's).
        let exact: HashMap<i64, Vec<f32>> = match &qvec {
            Some(_) => {
                let ids: Vec<i64> = approx.iter().chain(&kw).map(|c| c.0).collect();
                self.stored_vectors(&ids)?
            }
            None => HashMap::new(),
        };
        let exact_score = |id: i64| -> Option<f32> {
            let q = qvec.as_deref()?;
            exact.get(&id).map(|v| dot(v, q))
        };
        let mut vbest: Vec<(i64, f32)> = approx
            .iter()
            .filter_map(|&(id, _)| exact_score(id).map(|s| (id, s)))
            .collect();
        vbest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        vbest.truncate(pool);
        // Candidates: id -> (keyword score, vector score).
        let mut cand: HashMap<i64, (f32, f32)> = HashMap::new();
        for (id, s) in kw {
            cand.entry(id).or_default().0 = s;
        }
        for (id, s) in vbest {
            cand.entry(id).or_default().1 = s.max(0.0);
        }
        // Keyword candidates get their true vector score too.
        for (id, v) in cand.iter_mut() {
            if v.1 == 0.0 {
                v.1 = exact_score(*id).unwrap_or(0.0).max(0.0);
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
        let floor = opts
            .min_similarity
            .unwrap_or_else(|| self.embedder.as_ref().map_or(0.0, |e| e.min_similarity()));
        let now = opts.now_ms.unwrap_or_else(now_ms);
        let mut rows: Vec<(Candidate, String, String, i64)> = Vec::with_capacity(cand.len());
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
            // Found by its vector alone: only when it is close enough to mean something.
            if kw <= 0.0 && vs < floor {
                continue;
            }
            let mut score = fuse(kw, vs);
            if opts.decay {
                score *= decay_factor(&source, updated, now, opts.half_life_days);
            }
            if score <= 0.0 {
                continue;
            }
            // What MMR compares candidates by, only when it runs.
            let (vector, words) = if opts.mmr {
                (
                    exact.get(&id).map(|v| Arc::<[f32]>::from(v.as_slice())),
                    tokenize(&text).into_iter().collect(),
                )
            } else {
                (None, HashSet::new())
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{HashEmbedder, DB_FILE};

    fn mem() -> (tempfile::TempDir, Memory) {
        let d = tempfile::tempdir().unwrap();
        let m = Memory::open_path(&d.path().join(DB_FILE)).unwrap();
        (d, m)
    }

    fn keyword() -> SearchOptions {
        SearchOptions {
            mode: SearchMode::Keyword,
            ..SearchOptions::default()
        }
    }

    #[test]
    fn expansion_drops_stop_words_in_every_language() {
        let (_d, m) = mem();
        // (document, query with stop words, its keywords, stop words that must be gone)
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            (
                "The deploy key lives in the ops vault.",
                "where is the deploy key?",
                &["deploy", "key"],
                &["where", "is", "the"],
            ),
            (
                "La clave de despliegue está guardada en el servidor de producción.",
                "¿dónde está la clave de despliegue?",
                &["clave", "despliegue"],
                &["dónde", "está", "la", "de"],
            ),
            (
                "A senha do banco fica no cofre da equipe de operações.",
                "onde está a senha do banco?",
                &["senha", "banco"],
                &["onde", "está", "a", "do"],
            ),
            (
                "مفتاح النشر موجود في الخزنة الرئيسية",
                "أين هو مفتاح النشر في الخزنة",
                &["مفتاح", "النشر", "الخزنة"],
                &["أين", "هو", "في"],
            ),
            (
                "北京今天的天气很好，适合出去散步。",
                "北京的天气",
                &["北京", "天气"],
                &["的"],
            ),
            (
                "東京の天気は晴れです。明日は雨が降るでしょう。",
                "東京の天気は",
                &["東京", "天気"],
                &["の", "は"],
            ),
            (
                "서울의 날씨는 맑습니다",
                "서울의 날씨는",
                &["서울", "날씨"],
                &["의", "는"],
            ),
        ];
        let ids: Vec<i64> = cases
            .iter()
            .map(|c| m.store(c.0, "notes").unwrap().ids[0])
            .collect();
        for (c, id) in cases.iter().zip(&ids) {
            let terms = query_terms(c.1, true);
            assert_eq!(terms, c.2, "{}", c.1);
            for stop in c.3 {
                assert!(!terms.iter().any(|t| t == stop), "{}: {stop}", c.1);
            }
            let hits = m.search(c.1, &keyword()).unwrap();
            assert_eq!(hits.first().map(|h| h.id), Some(*id), "{}: {hits:?}", c.1);
        }
        // Nothing but stop words: the query is kept as it is.
        assert_eq!(query_terms("de la", true), vec!["de", "la"]);
        assert_eq!(query_terms("の", true), vec!["の"]);
        // Without expansion, the words as they are.
        assert_eq!(query_terms("北京的天气", false), vec!["北京的天气"]);
    }

    #[test]
    fn vector_search_matches_an_exact_scan() {
        let (_d, m) = mem();
        let e = Arc::new(HashEmbedder::default());
        let m = m.with_embedder(e.clone());
        let words: Vec<String> = (0..60).map(|i| format!("w{i}")).collect();
        let mut x = 7u64;
        let mut next = move |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut texts = Vec::new();
        for i in 0..400 {
            let t: Vec<&str> = (0..6).map(|_| words[next(60)].as_str()).collect();
            texts.push(format!("{} n{i}", t.join(" ")));
        }
        for t in &texts {
            m.store(t, "a").unwrap();
        }
        let ids = m.vector_index().unwrap().unwrap().ids().to_vec();
        let all = m.stored_vectors(&ids).unwrap();
        let o = SearchOptions {
            mode: SearchMode::Vector,
            ..SearchOptions::default()
        };
        for qi in 0..30 {
            let q = format!("{} {} {}", words[qi], words[next(60)], words[next(60)]);
            let mut qv = e.embed_one(&q);
            embed::normalize(&mut qv);
            let mut exact: Vec<f32> = all.values().map(|v| dot(v, &qv)).collect();
            exact.sort_by(|a, b| b.total_cmp(a));
            exact.retain(|&s| s > 0.0);
            exact.truncate(10);
            let got: Vec<f32> = m.search(&q, &o).unwrap().iter().map(|h| h.score).collect();
            assert_eq!(got.len(), exact.len(), "{q}");
            for (g, w) in got.iter().zip(&exact) {
                assert!((g - w).abs() < 1e-5, "{q}: {got:?} vs {exact:?}");
            }
        }
    }

    #[test]
    fn maxscore_keeps_the_plain_query_ranking() {
        let (_d, m) = mem();
        {
            let tx = m.conn.unchecked_transaction().unwrap();
            for i in 0..12_000 {
                let mut t = String::from("alpha");
                for (w, every) in [
                    ("beta", 3),
                    ("gamma", 4),
                    ("eta", 6),
                    ("delta", 40),
                    ("omega", 97),
                ] {
                    if i % every == 0 {
                        t.push(' ');
                        t.push_str(w);
                    }
                }
                if i % 300 == 0 {
                    t.push_str(" delta omega");
                }
                for f in 0..(i % 9) {
                    t.push_str(&format!(" filler{f}"));
                }
                t.push_str(&format!(" row{i}"));
                tx.execute(
                    "INSERT INTO chunks (source, text, hash, created, updated)
                     VALUES ('s', ?1, ?2, 0, 0)",
                    params![t, format!("{i}")],
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let mut pruned = 0;
        for q in [
            "beta gamma eta delta",
            "beta gamma eta omega",
            "beta gamma eta delta omega",
            "alpha beta gamma eta omega",
            "beta gamma eta",
            "beta omega",
        ] {
            let terms = query_terms(q, true);
            let (n, df) = m.word_doc_counts(&terms).unwrap();
            assert_eq!(n, 12_000);
            if m.words_top_k_pruned(&terms, 40, n, &df).unwrap().is_some() {
                pruned += 1;
            }
            let got = m.words_top_k(&terms, 40).unwrap();
            let plain = m
                .fts_rows(
                    "chunks_fts",
                    &or_expr(terms.iter().map(String::as_str)),
                    Some(40),
                )
                .unwrap();
            assert_eq!(got.len(), plain.len(), "{q}");
            // Tied rows may come in another order: compare the scores rank by rank.
            for (g, p) in got.iter().zip(&plain) {
                assert!((g.1 - p.1).abs() < 1e-4, "{q}: {got:?}\n{plain:?}");
            }
        }
        assert!(pruned >= 2, "MaxScore never applied");
        assert_eq!(read_varint(&[0x05]), Some(5));
        assert_eq!(read_varint(&[0x81, 0x00]), Some(128));
        assert_eq!(read_varint(&[0x81]), None);
        assert!(bm25_idf(100, 90) == 1e-6 && bm25_idf(100, 1) > 4.0);
    }
}
