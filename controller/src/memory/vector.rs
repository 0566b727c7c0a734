//! The vector index of a workspace: every vector of the configured embedder quantized to
//! int8 and held in one contiguous matrix, scanned in memory for candidates, which search
//! then re-scores exactly with their f32 vectors read from SQLite by id.
//!
//! Quantization is symmetric, one f32 scale per row: `code = round(x / scale)` with
//! `scale = max|x| / 127`, so `x ≈ code × scale` and a row's cosine with the query is about
//! `dot(codes) × scale_row × scale_query`. The held matrix is a quarter of the raw f32 size
//! (plus 12 bytes a row for the id and scale). The ranking error of int8 codes is small
//! against the gaps between neighbours, and the exact re-scoring of a pool several times the
//! size asked for removes it: tests check that the final top 10 matches an exact f32 scan.
//!
//! The scan kernel multiplies 32 lanes at a time into independent i32 accumulators, which
//! LLVM vectorizes (`pmaddwd` on baseline x86-64, wider with AVX2 when the build targets
//! it). The crate forbids `unsafe`, so there is no run-time dispatch to `std::arch` AVX2.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use rusqlite::params;

use super::{embed, Memory};
use crate::error::Result;

/// One matrix row in the scan: its approximate score and its row number.
#[derive(Debug, Clone, Copy)]
struct Scored {
    score: f32,
    row: u32,
}

impl Scored {
    /// `Greater` when `self` ranks below `other`: a lower score, or the same score and a
    /// later row (so ties go to the lower id, ids being in row order).
    fn worse(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.row.cmp(&other.row))
    }
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.worse(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.worse(other)
    }
}

/// The `k` best rows seen: a max-heap on "worse", so its top is the row to evict.
#[derive(Debug)]
struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn offer(&mut self, s: Scored) {
        if self.heap.len() < self.k {
            self.heap.push(s);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if s.worse(&worst) == Ordering::Less {
                *worst = s;
            }
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<Scored> {
        // `into_sorted_vec` is ascending by `Ord`, i.e. from the best to the worst.
        self.heap.into_sorted_vec()
    }
}

/// Lanes per step of [`dot_i8`]: 32 i8 products into 32 independent i32 sums.
const LANES: usize = 32;

/// `a · b` of int8 codes over the shorter length, in i32 (exact: |code| ≤ 127, so a row of
/// up to 133,000 dimensions cannot overflow).
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((s, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *s += i32::from(x) * i32::from(y);
        }
    }
    let mut s: i32 = acc.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        s += i32::from(x) * i32::from(y);
    }
    s
}

/// The plain loop [`dot_i8`] must agree with (tests).
pub fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum()
}

/// Quantizes `v` into `out` (same length), returning the scale: `v[i] ≈ out[i] × scale`.
/// A zero (or non-finite) vector gives zero codes and scale 0.
pub fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let m = v
        .iter()
        .filter(|x| x.is_finite())
        .fold(0f32, |a, x| a.max(x.abs()));
    if m <= 0.0 || !m.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let inv = 127.0 / m;
    for (o, x) in out.iter_mut().zip(v) {
        // `as` saturates, and maps NaN to 0.
        *o = (x * inv).round().clamp(-127.0, 127.0) as i8;
    }
    m / 127.0
}

/// Rows below which a scan is not split across threads (the spawn costs more).
pub const MIN_ROWS_PER_THREAD: usize = 16_384;

/// The configured embedder's vectors, one int8 row per chunk, in one contiguous matrix.
#[derive(Debug)]
pub struct VectorIndex {
    dims: usize,
    /// Chunk ids, ascending (row `i` is chunk `ids[i]`).
    ids: Vec<i64>,
    /// `ids.len() × dims` codes, row-major.
    codes: Vec<i8>,
    /// One scale per row.
    scales: Vec<f32>,
    /// `vectors_gen` of the database when loaded.
    pub(crate) generation: i64,
}

impl VectorIndex {
    /// An empty index of `dims` dimensions, with room for `rows`.
    pub fn with_capacity(dims: usize, rows: usize) -> Self {
        VectorIndex {
            dims,
            ids: Vec::with_capacity(rows),
            codes: Vec::with_capacity(rows.saturating_mul(dims)),
            scales: Vec::with_capacity(rows),
            generation: 0,
        }
    }

    /// An index of `rows` (chunk id, vector), each normalized then quantized; rows of
    /// another length are skipped, and a repeated id keeps its last vector.
    pub fn from_rows<'a>(dims: usize, rows: impl IntoIterator<Item = (i64, &'a [f32])>) -> Self {
        let mut rows: Vec<(i64, &[f32])> = rows.into_iter().collect();
        rows.sort_by_key(|r| r.0);
        rows.reverse();
        rows.dedup_by_key(|r| r.0);
        rows.reverse();
        let mut ix = Self::with_capacity(dims, rows.len());
        let mut buf = Vec::with_capacity(dims);
        for (id, v) in rows {
            buf.clear();
            buf.extend_from_slice(v);
            ix.push_sorted(id, &mut buf);
        }
        ix.shrink();
        ix
    }

    /// Appends a row; `id` must be above every id already in (rows come in id order) and
    /// `v` is normalized in place. A row of the wrong length, or out of order, is skipped
    /// (`false`).
    pub(crate) fn push_sorted(&mut self, id: i64, v: &mut [f32]) -> bool {
        if v.len() != self.dims || self.ids.last().is_some_and(|&last| last >= id) {
            return false;
        }
        embed::normalize(v);
        let start = self.codes.len();
        self.codes.resize(start + self.dims, 0);
        let scale = quantize(v, &mut self.codes[start..]);
        self.scales.push(scale);
        self.ids.push(id);
        true
    }

    fn shrink(&mut self) {
        self.codes.shrink_to_fit();
        self.scales.shrink_to_fit();
        self.ids.shrink_to_fit();
    }

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

    /// Bytes held: the codes, the scales and the ids.
    pub fn heap_bytes(&self) -> usize {
        self.codes.capacity() + self.scales.capacity() * 4 + self.ids.capacity() * 8
    }

    /// Bytes the same rows take as f32 (`rows × dims × 4`), the yardstick of
    /// [`VectorIndex::heap_bytes`].
    pub fn raw_f32_bytes(&self) -> usize {
        self.len() * self.dims * 4
    }

    /// Whether chunk `id` has a row.
    pub fn contains(&self, id: i64) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    /// The chunk ids, ascending.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Chunk `id`'s vector as the index holds it (dequantized: unit length to within the
    /// int8 rounding). Exact vectors are in the database.
    pub fn approx_vector(&self, id: i64) -> Option<Vec<f32>> {
        let i = self.ids.binary_search(&id).ok()?;
        let s = self.scales[i];
        Some(self.row(i).iter().map(|&c| f32::from(c) * s).collect())
    }

    fn row(&self, i: usize) -> &[i8] {
        &self.codes[i * self.dims..(i + 1) * self.dims]
    }

    /// The `k` best rows of `range` for the quantized query `qc`, best first.
    fn scan(&self, qc: &[i8], range: std::ops::Range<usize>, k: usize) -> Vec<Scored> {
        let mut top = TopK::new(k);
        let rows = self.codes[range.start * self.dims..range.end * self.dims]
            .chunks_exact(self.dims)
            .zip(&self.scales[range.clone()]);
        for (i, (row, &scale)) in rows.enumerate() {
            let score = dot_i8(row, qc) as f32 * scale;
            top.offer(Scored {
                score,
                row: (range.start + i) as u32,
            });
        }
        top.into_sorted()
    }

    /// The `k` best (id, approximate cosine) for the unit vector `q`, best first, from the
    /// int8 codes (in one thread). Search re-scores a larger pool of these exactly.
    pub fn top_k(&self, q: &[f32], k: usize) -> Vec<(i64, f32)> {
        self.top_k_threads(q, k, 1)
    }

    /// [`VectorIndex::top_k`] with the scan split across up to `threads` threads (fewer
    /// when there are under [`MIN_ROWS_PER_THREAD`] rows a thread).
    pub fn top_k_threads(&self, q: &[f32], k: usize, threads: usize) -> Vec<(i64, f32)> {
        if self.dims == 0 || q.len() != self.dims || k == 0 || self.is_empty() {
            return Vec::new();
        }
        let mut qv = q.to_vec();
        embed::normalize(&mut qv);
        let mut qc = vec![0i8; self.dims];
        let qs = quantize(&qv, &mut qc);
        let n = self.len();
        let threads = threads.clamp(1, (n / MIN_ROWS_PER_THREAD).max(1));
        let best: Vec<Scored> = if threads == 1 {
            self.scan(&qc, 0..n, k)
        } else {
            let per = n.div_ceil(threads);
            let parts: Vec<Vec<Scored>> = std::thread::scope(|s| {
                let qc = &qc;
                let handles: Vec<_> = (1..threads)
                    .map(|t| {
                        let r = (t * per).min(n)..((t + 1) * per).min(n);
                        s.spawn(move || self.scan(qc, r, k))
                    })
                    .collect();
                let mut parts = vec![self.scan(qc, 0..per.min(n), k)];
                for h in handles {
                    match h.join() {
                        Ok(p) => parts.push(p),
                        Err(e) => std::panic::resume_unwind(e),
                    }
                }
                parts
            });
            let mut all: Vec<Scored> = parts.into_iter().flatten().collect();
            all.sort();
            all.truncate(k);
            all
        };
        best.into_iter()
            .map(|s| (self.ids[s.row as usize], s.score * qs))
            .collect()
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
        let args = params![emb.provider(), emb.model(), dims as i64];
        let rows: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM embeddings WHERE provider = ?1 AND model = ?2 AND dims = ?3",
                args,
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        let mut st = self
            .conn
            .prepare(
                "SELECT chunk_id, vector FROM embeddings
                 WHERE provider = ?1 AND model = ?2 AND dims = ?3 ORDER BY chunk_id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows_it = st.query(args).map_err(|e| self.err(e))?;
        let mut ix = VectorIndex::with_capacity(dims, rows.max(0) as usize);
        ix.generation = generation;
        let mut buf: Vec<f32> = Vec::with_capacity(dims);
        while let Some(r) = rows_it.next().map_err(|e| self.err(e))? {
            let id: i64 = r.get(0).map_err(|e| self.err(e))?;
            let blob = r.get_ref(1).map_err(|e| self.err(e))?;
            let bytes = blob.as_blob().unwrap_or(&[]);
            if bytes.len() != dims * 4 {
                log::warn!(target: "memory", "chunk {id}: vector of {} bytes, want {}", bytes.len(), dims * 4);
                continue;
            }
            buf.clear();
            buf.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            ix.push_sorted(id, &mut buf);
        }
        ix.shrink();
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

    /// The stored vectors of the configured embedder for `ids` (normalized), read from the
    /// database; ids without one (or with another model's) are absent from the map.
    pub fn stored_vectors(&self, ids: &[i64]) -> Result<HashMap<i64, Vec<f32>>> {
        let mut out = HashMap::with_capacity(ids.len());
        let Some(emb) = &self.embedder else {
            return Ok(out);
        };
        let dims = emb.dims();
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT vector FROM embeddings
                 WHERE chunk_id = ?1 AND provider = ?2 AND model = ?3 AND dims = ?4",
            )
            .map_err(|e| self.err(e))?;
        for &id in ids {
            if out.contains_key(&id) {
                continue;
            }
            let mut rows = st
                .query(params![id, emb.provider(), emb.model(), dims as i64])
                .map_err(|e| self.err(e))?;
            let Some(r) = rows.next().map_err(|e| self.err(e))? else {
                continue;
            };
            let blob = r.get_ref(0).map_err(|e| self.err(e))?;
            let Some(mut v) = blob
                .as_blob()
                .ok()
                .filter(|b| b.len() == dims * 4)
                .and_then(embed::from_blob)
            else {
                continue;
            };
            embed::normalize(&mut v);
            out.insert(id, v);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::search::dot;

    /// xorshift64*, for reproducible data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        /// Roughly normal (sum of four uniforms, centred).
        fn gauss(&mut self) -> f32 {
            (0..4)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
                .sum::<f32>()
                - 2.0
        }
        fn unit(&mut self, dims: usize) -> Vec<f32> {
            let mut v: Vec<f32> = (0..dims).map(|_| self.gauss()).collect();
            embed::normalize(&mut v);
            v
        }
    }

    fn exact_top(data: &[(i64, Vec<f32>)], q: &[f32], k: usize) -> Vec<i64> {
        let mut s: Vec<(i64, f32)> = data.iter().map(|(id, v)| (*id, dot(v, q))).collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        s.into_iter().take(k).map(|x| x.0).collect()
    }

    /// What search does: a pool of `4 × k` int8 candidates, re-scored exactly.
    fn pipeline(ix: &VectorIndex, data: &[(i64, Vec<f32>)], q: &[f32], k: usize) -> Vec<i64> {
        let by_id: HashMap<i64, &Vec<f32>> = data.iter().map(|(i, v)| (*i, v)).collect();
        let mut s: Vec<(i64, f32)> = ix
            .top_k(q, 4 * k)
            .into_iter()
            .map(|(id, _)| (id, dot(by_id[&id], q)))
            .collect();
        s.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        s.into_iter().take(k).map(|x| x.0).collect()
    }

    #[test]
    fn kernel_matches_scalar_at_every_length() {
        let mut r = Rng(3);
        for n in [0, 1, 7, 31, 32, 33, 64, 100, 384, 385, 1536] {
            let a: Vec<i8> = (0..n).map(|_| (r.next() % 255) as i8).collect();
            let b: Vec<i8> = (0..n).map(|_| (r.next() % 255) as i8).collect();
            assert_eq!(dot_i8(&a, &b), dot_i8_scalar(&a, &b), "n = {n}");
        }
        // Extremes do not overflow.
        let a = vec![-127i8; 4096];
        assert_eq!(dot_i8(&a, &a), 127 * 127 * 4096);
    }

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let mut r = Rng(5);
        let v = r.unit(384);
        let mut c = vec![0i8; 384];
        let s = quantize(&v, &mut c);
        let m = v.iter().fold(0f32, |a, x| a.max(x.abs()));
        assert!((s * 127.0 - m).abs() < 1e-6);
        assert!(c.iter().any(|&x| x.abs() == 127));
        for (x, q) in v.iter().zip(&c) {
            assert!((x - f32::from(*q) * s).abs() <= s / 2.0 + 1e-7);
        }
        let mut z = vec![1i8; 3];
        assert_eq!(quantize(&[0.0, 0.0, 0.0], &mut z), 0.0);
        assert_eq!(z, vec![0, 0, 0]);
        // Approximate cosine is close to the exact one.
        let w = r.unit(384);
        let mut cw = vec![0i8; 384];
        let sw = quantize(&w, &mut cw);
        let approx = dot_i8(&c, &cw) as f32 * s * sw;
        assert!((approx - dot(&v, &w)).abs() < 0.01, "{approx}");
    }

    #[test]
    fn heap_selection_matches_a_full_sort() {
        let mut r = Rng(9);
        let data: Vec<(i64, Vec<f32>)> = (0..3000).map(|i| (i * 3 + 1, r.unit(48))).collect();
        let ix = VectorIndex::from_rows(48, data.iter().map(|(i, v)| (*i, v.as_slice())));
        let q = r.unit(48);
        let mut qc = vec![0i8; 48];
        let qs = quantize(&q, &mut qc);
        let mut all: Vec<(i64, f32)> = (0..ix.len())
            .map(|i| (ix.ids[i], dot_i8(ix.row(i), &qc) as f32 * ix.scales[i] * qs))
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(25);
        assert_eq!(ix.top_k(&q, 25), all);
        // Split across threads, the same answer.
        let big: Vec<(i64, Vec<f32>)> = (0..(MIN_ROWS_PER_THREAD as i64 * 2 + 7))
            .map(|i| (i, r.unit(16)))
            .collect();
        let ix = VectorIndex::from_rows(16, big.iter().map(|(i, v)| (*i, v.as_slice())));
        let q = r.unit(16);
        assert_eq!(ix.top_k(&q, 40), ix.top_k_threads(&q, 40, 2));
        assert_eq!(ix.top_k(&q, 40), ix.top_k_threads(&q, 40, 3));
        assert_eq!(ix.top_k(&q, 5).len(), 5);
        assert!(ix.top_k(&q, 0).is_empty());
        assert!(ix.top_k(&q[..8], 5).is_empty());
    }

    #[test]
    fn rescored_pool_finds_the_exact_top_10() {
        let dims = 384;
        // Random unit vectors: the hardest case (neighbours nearly equidistant).
        let mut r = Rng(11);
        let data: Vec<(i64, Vec<f32>)> = (1..=5000).map(|i| (i, r.unit(dims))).collect();
        let ix = VectorIndex::from_rows(dims, data.iter().map(|(i, v)| (*i, v.as_slice())));
        assert_eq!(ix.len(), 5000);
        let (mut hit, mut total) = (0, 0);
        for _ in 0..50 {
            let q = r.unit(dims);
            let exact = exact_top(&data, &q, 10);
            let got = pipeline(&ix, &data, &q, 10);
            hit += got.iter().filter(|id| exact.contains(id)).count();
            total += 10;
        }
        let recall = hit as f64 / total as f64;
        assert!(
            recall >= 0.95,
            "recall of the exact top 10 on random data: {recall}"
        );
        // Clustered data (what embeddings look like): identical rankings.
        let centres: Vec<Vec<f32>> = (0..40).map(|_| r.unit(dims)).collect();
        let data: Vec<(i64, Vec<f32>)> = (1..=5000)
            .map(|i| {
                let c = &centres[i as usize % centres.len()];
                let mut v: Vec<f32> = c.iter().map(|x| x + 0.08 * r.gauss()).collect();
                embed::normalize(&mut v);
                (i, v)
            })
            .collect();
        let ix = VectorIndex::from_rows(dims, data.iter().map(|(i, v)| (*i, v.as_slice())));
        for t in 0..50 {
            let mut q: Vec<f32> = centres[t % centres.len()]
                .iter()
                .map(|x| x + 0.08 * r.gauss())
                .collect();
            embed::normalize(&mut q);
            assert_eq!(pipeline(&ix, &data, &q, 10), exact_top(&data, &q, 10));
        }
    }

    #[test]
    fn quarter_of_the_raw_size() {
        let mut r = Rng(13);
        let data: Vec<(i64, Vec<f32>)> = (0..1000).map(|i| (i, r.unit(384))).collect();
        let ix = VectorIndex::from_rows(384, data.iter().map(|(i, v)| (*i, v.as_slice())));
        let ratio = ix.heap_bytes() as f64 / ix.raw_f32_bytes() as f64;
        assert!(ratio < 0.27, "{ratio}");
        assert!(ix.contains(5) && !ix.contains(5000));
        let a = ix.approx_vector(5).unwrap();
        assert!(dot(&a, &data[5].1) > 0.999);
    }

    #[test]
    fn rows_in_any_order_wrong_lengths_and_duplicates() {
        let a = [1.0f32, 0.0];
        let b = [0.0f32, 1.0];
        let c = [1.0f32, 1.0, 1.0];
        let ix = VectorIndex::from_rows(2, [(9, &a[..]), (3, &b[..]), (5, &c[..]), (9, &b[..])]);
        assert_eq!(ix.ids(), &[3, 9]);
        assert_eq!(ix.top_k(&[0.0, 1.0], 2)[0].0, 3);
        let top = ix.top_k(&[0.0, 1.0], 2);
        // Both rows are (0, 1): a tie, broken by the lower id.
        assert!((top[0].1 - 1.0).abs() < 1e-6 && (top[1].1 - 1.0).abs() < 1e-6);
    }
}
