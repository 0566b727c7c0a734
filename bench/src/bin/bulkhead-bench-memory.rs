//! Benchmark of workspace memory at 100,000 chunks (10,000 with `--quick`), 384 dimensions,
//! the offline hash embedder, with a naive baseline in the same run:
//!
//! - ingest: chunks per second through `Memory::store_at`, without and with embeddings
//!   (the API has no batched store: each call is one chunk in its own transaction, so this is
//!   the per-store rate);
//! - search latency p50/p99 through `Memory::search` (default options: limit 10, decay and
//!   MMR off) for keyword, vector and hybrid, after a first search that loads the vector
//!   matrix (timed apart), against the old system's way: every vector JSON-encoded (held in
//!   memory here, which favours the baseline), decoded per query, cosine in a scalar loop,
//!   full sort;
//! - where hybrid time goes: each step of a hybrid search timed alone on the same queries
//!   (keyword candidates; query embedding; the int8 scan in one thread and in all; reading
//!   and re-scoring the candidates' f32 vectors; the row fetches, fusion and snippets are the
//!   rest), and an exact f32 scan of the whole matrix (the previous vector index) for
//!   comparison, with the recall of vector search against that exact scan;
//! - memory of the loaded vector matrix (`VectorIndex::heap_bytes`, and the RSS growth of
//!   the process while loading it) against the raw size (rows × dims × 4 bytes).
//!
//! Text: chunks of 2–4 sentences sampled from the Debian man pages on this machine (or from
//! a generated vocabulary when they are missing); queries: 3–5 words from sampled sentences.
//! Run: `cargo run --release -p bulkhead-bench --bin bulkhead-bench-memory [-- --quick]
//! [--json] [--db FILE]`. With `--db`, the embedded workspace is kept in FILE and reused by
//! the next run with the same size (ingest is then skipped and not reported).

use bulkhead_bench::memory_corpus;

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bulkhead::memory::search::{query_terms, RESCORE_FACTOR};
use bulkhead::memory::{Embedder, HashEmbedder, Memory, SearchMode, SearchOptions};
use bulkhead_bench::bench_util::{percentile, ratio};
use memory_corpus::Rng;

/// p50 and p99 of durations in milliseconds.
fn p50_p99(v: &[f64]) -> (f64, f64) {
    (
        percentile(v, 0.5).unwrap_or(f64::NAN),
        percentile(v, 0.99).unwrap_or(f64::NAN),
    )
}

/// Runs `f` once per item, returning the milliseconds of each call.
fn timed<T>(items: &[T], mut f: impl FnMut(&T)) -> Vec<f64> {
    items
        .iter()
        .map(|x| {
            let t = Instant::now();
            f(x);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|x| x.parse().ok()))
        })
        .unwrap_or(0)
}

/// Sentences to sample from: the man pages, or generated words when there are none.
fn sentence_pool() -> (Vec<String>, &'static str) {
    if let Ok(pages) = memory_corpus::load_pages(1500) {
        let s = memory_corpus::sentences(&pages);
        if s.len() > 1000 {
            return (s, "sentences sampled from Debian man pages (section 1)");
        }
    }
    let mut rng = Rng(7);
    let letters = b"etaoinshrdlucmfwypvbgkqjxz";
    let vocab: Vec<String> = (0..5000)
        .map(|_| {
            let len = 3 + rng.below(8);
            (0..len)
                .map(|_| letters[rng.below(letters.len()).min(rng.below(letters.len()))] as char)
                .collect()
        })
        .collect();
    let s = (0..20_000)
        .map(|_| {
            let n = 6 + rng.below(14);
            (0..n)
                .map(|_| vocab[rng.below(vocab.len()).min(rng.below(vocab.len()))].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    (
        s,
        "generated vocabulary of 5,000 words (no man pages found)",
    )
}

fn chunk_text(rng: &mut Rng, pool: &[String], i: usize) -> String {
    let n = 2 + rng.below(3);
    let mut t = String::new();
    for _ in 0..n {
        t.push_str(&pool[rng.below(pool.len())]);
        t.push_str(". ");
    }
    // A unique tail, so no two chunks are equal (stores are deduplicated by content hash).
    t.push_str(&format!("(note {i})"));
    t
}

fn ingest(mem: &Memory, texts: &[String], now: i64) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    for (i, text) in texts.iter().enumerate() {
        let src = format!("notes/{}.md", i / 20);
        mem.store_at(text, &src, now - (i as i64 % 365) * 86_400_000)?;
    }
    Ok(texts.len() as f64 / t.elapsed().as_secs_f64())
}

/// One row of the latency table.
struct Row {
    name: String,
    p50: f64,
    p99: f64,
    queries: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let json = argv.iter().any(|a| a == "--json");
    let keep: Option<PathBuf> = argv
        .iter()
        .position(|a| a == "--db")
        .and_then(|i| argv.get(i + 1))
        .map(PathBuf::from);
    let n: usize = if quick { 10_000 } else { 100_000 };
    let queries_n = 200usize;
    let naive_queries = if quick { 20 } else { 5 };

    let (pool, pool_desc) = sentence_pool();
    let mut rng = Rng(42);
    let texts: Vec<String> = (0..n).map(|i| chunk_text(&mut rng, &pool, i)).collect();
    let queries: Vec<String> = (0..queries_n)
        .map(|_| {
            let s = &pool[rng.below(pool.len())];
            let words: Vec<&str> = s.split_whitespace().collect();
            let k = (3 + rng.below(3)).min(words.len());
            let start = rng.below(words.len() - k + 1);
            words[start..start + k].join(" ")
        })
        .collect();
    let avg_len = texts.iter().map(String::len).sum::<usize>() / n;
    let now = 1_790_000_000_000i64;
    let dir = tempfile::tempdir()?;
    let emb = Arc::new(HashEmbedder::default());
    let dims = emb.dims();

    if !json {
        println!(
            "memory bench: {n} chunks ({avg_len} bytes on average; {pool_desc}), {dims} dims, hash embedder"
        );
    }
    let db = keep.unwrap_or_else(|| dir.path().join("memory.db"));
    let mem = Memory::open_path(&db)?.with_embedder(emb.clone());
    let reused = mem.stats()?;
    let (rate_plain, rate_emb) = if reused.chunks == n as u64 && reused.embedded == n as u64 {
        if !json {
            println!("ingest: skipped, reusing {} ({n} chunks)", db.display());
        }
        (None, None)
    } else {
        if reused.chunks > 0 {
            return Err(format!(
                "{} holds {} chunks, not {n}: remove it or name another file",
                db.display(),
                reused.chunks
            )
            .into());
        }
        // Ingest without embeddings (keyword-only workspace), then with.
        let plain = Memory::open_path(&dir.path().join("plain.db"))?;
        let rate_plain = ingest(&plain, &texts, now)?;
        drop(plain);
        let rate_emb = ingest(&mem, &texts, now)?;
        let t = Instant::now();
        for tx in texts.iter().take(5000) {
            black_box(emb.embed_one(tx));
        }
        let embed_rate = 5000f64.min(n as f64) / t.elapsed().as_secs_f64();
        // The built-in local model (the default embedder, 256 dims) on the same texts.
        let local = bulkhead::memory::LocalEmbedder::builtin();
        let t = Instant::now();
        for tx in texts.iter().take(5000) {
            black_box(local.model_ref().embed_one(tx));
        }
        let local_rate = 5000f64.min(n as f64) / t.elapsed().as_secs_f64();
        if !json {
            println!("ingest, one chunk per store (no batched API): {rate_plain:.0} chunks/s without embeddings, {rate_emb:.0} chunks/s with (hash embedding alone: {embed_rate:.0} texts/s; the built-in local model alone: {local_rate:.0} texts/s)");
        }
        (Some(rate_plain), Some(rate_emb))
    };

    // Load the matrix (first vector search), measuring memory.
    let rss0 = rss_kb();
    let t = Instant::now();
    let ix = mem.vector_index()?.ok_or("no vector index")?;
    let load = t.elapsed().as_secs_f64() * 1e3;
    let rss1 = rss_kb();
    let raw = ix.raw_f32_bytes();
    let heap = ix.heap_bytes();
    let rss_delta = (rss1.saturating_sub(rss0) * 1024) as usize;

    let opts = |mode| SearchOptions {
        mode,
        now_ms: Some(now),
        ..SearchOptions::default()
    };
    let mut lat = serde_json::Map::new();
    let mut by_mode = std::collections::HashMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for (name, mode) in [
        ("keyword", SearchMode::Keyword),
        ("vector", SearchMode::Vector),
        ("hybrid", SearchMode::Hybrid),
    ] {
        let o = opts(mode);
        // One warm-up query.
        black_box(mem.search(&queries[0], &o)?);
        let d = timed(&queries, |q| {
            black_box(mem.search(q, &o).map(|r| r.len()).unwrap_or(0));
        });
        let (p50, p99) = p50_p99(&d);
        by_mode.insert(name, (p50, p99));
        lat.insert(
            name.into(),
            serde_json::json!({"p50_ms": p50, "p99_ms": p99}),
        );
        rows.push(Row {
            name: name.into(),
            p50,
            p99,
            queries: queries.len(),
        });
    }

    // Where hybrid time goes: each step alone, on the same queries.
    let o = opts(SearchMode::Hybrid);
    let k_pool = o.limit * o.candidate_multiplier;
    let approx_k = k_pool * RESCORE_FACTOR;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let qvecs: Vec<Vec<f32>> = queries.iter().map(|q| emb.embed_one(q)).collect();
    let mut profile = serde_json::Map::new();
    let mut step = |name: String, d: Vec<f64>, rows: &mut Vec<Row>| {
        let (p50, p99) = p50_p99(&d);
        profile.insert(
            name.trim().into(),
            serde_json::json!({"p50_ms": p50, "p99_ms": p99}),
        );
        rows.push(Row {
            name,
            p50,
            p99,
            queries: d.len(),
        });
    };
    let d = timed(&queries, |q| {
        black_box(mem.keyword_candidates(&query_terms(q, true), k_pool).ok());
    });
    step(format!("  keyword candidates ({k_pool})"), d, &mut rows);
    let d = timed(&queries, |q| {
        black_box(emb.embed_one(q));
    });
    step("  query embedding".into(), d, &mut rows);
    let d = timed(&qvecs, |q| {
        black_box(ix.top_k(q, approx_k));
    });
    step(format!("  int8 scan, 1 thread ({approx_k})"), d, &mut rows);
    let d = timed(&qvecs, |q| {
        black_box(ix.top_k_threads(q, approx_k, threads));
    });
    step(
        format!("  int8 scan, {threads} threads ({approx_k})"),
        d,
        &mut rows,
    );
    let cand_ids: Vec<Vec<i64>> = qvecs
        .iter()
        .map(|q| ix.top_k(q, approx_k).into_iter().map(|c| c.0).collect())
        .collect();
    let d = timed(&cand_ids, |ids| {
        black_box(mem.stored_vectors(ids).map(|m| m.len()).ok());
    });
    step(
        format!("  f32 re-score ({approx_k} read by id)"),
        d,
        &mut rows,
    );

    // The previous vector index, for comparison: every f32 vector in one matrix, scanned
    // exactly (built here, after the memory was measured). Also the reference for recall.
    let mut f32_ids: Vec<i64> = Vec::with_capacity(ix.len());
    let mut f32_data: Vec<f32> = Vec::with_capacity(ix.len() * dims);
    for ids in ix.ids().chunks(1000) {
        let m = mem.stored_vectors(ids)?;
        for id in ids {
            if let Some(v) = m.get(id) {
                f32_ids.push(*id);
                f32_data.extend_from_slice(v);
            }
        }
    }
    let exact_top = |q: &[f32], k: usize| -> Vec<(i64, f32)> {
        let mut s: Vec<(i64, f32)> = f32_data
            .chunks_exact(dims)
            .zip(&f32_ids)
            .map(|(row, &id)| (id, bulkhead::memory::search::dot(row, q)))
            .collect();
        let by = |a: &(i64, f32), b: &(i64, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if s.len() > k {
            s.select_nth_unstable_by(k - 1, by);
            s.truncate(k);
        }
        s.sort_by(by);
        s
    };
    let d = timed(&qvecs, |q| {
        black_box(exact_top(q, k_pool));
    });
    step(
        format!("  f32 exact scan ({k_pool}; the previous index)"),
        d,
        &mut rows,
    );
    // Recall of vector search (int8 scan, exact re-score) against the exact f32 top 10. Many
    // chunks share sentences, so exact ties are common: a hit is a result whose exact score
    // reaches the exact 10th best, and a query is "the same" when the scores match rank by
    // rank (ties may come in another order).
    let vo = opts(SearchMode::Vector);
    let (mut hit, mut total, mut same) = (0usize, 0usize, 0usize);
    for (q, qv) in queries.iter().zip(&qvecs) {
        let want: Vec<f32> = exact_top(qv, vo.limit)
            .into_iter()
            .map(|c| c.1)
            .filter(|&s| s > 0.0)
            .collect();
        let got: Vec<f32> = mem.search(q, &vo)?.iter().map(|h| h.score).collect();
        let floor = want.last().copied().unwrap_or(f32::INFINITY) - 1e-5;
        hit += got.iter().filter(|&&s| s >= floor).count().min(want.len());
        total += want.len();
        same += usize::from(
            got.len() == want.len() && got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
        );
    }
    let recall = if total == 0 {
        1.0
    } else {
        hit as f64 / total as f64
    };
    drop(f32_data);

    // Naive baseline: JSON-encoded vectors decoded per query, scalar cosine, full sort.
    let encoded: Vec<String> = texts
        .iter()
        .map(|t| serde_json::to_string(&emb.embed_one(t)).unwrap_or_default())
        .collect();
    let d = timed(&queries[..naive_queries], |q| {
        let qv = emb.embed_one(q);
        let mut scored: Vec<(usize, f32)> = encoded
            .iter()
            .enumerate()
            .map(|(i, js)| {
                let v: Vec<f32> = serde_json::from_str(js).unwrap_or_default();
                let (mut dotp, mut na, mut nb) = (0f32, 0f32, 0f32);
                for j in 0..v.len().min(qv.len()) {
                    dotp += v[j] * qv[j];
                    na += v[j] * v[j];
                    nb += qv[j] * qv[j];
                }
                (i, dotp / (na.sqrt() * nb.sqrt()).max(1e-12))
            })
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        black_box(&scored[..10.min(scored.len())]);
    });
    let (np50, np99) = p50_p99(&d);
    lat.insert(
        "naive_json_scan".into(),
        serde_json::json!({"p50_ms": np50, "p99_ms": np99}),
    );
    rows.push(Row {
        name: "naive (JSON decode + scalar scan)".into(),
        p50: np50,
        p99: np99,
        queries: naive_queries,
    });

    let hybrid = by_mode["hybrid"];
    let vector = by_mode["vector"];
    let goal = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mem_ratio = heap as f64 / raw as f64;
    let rss_ratio = rss_delta as f64 / raw as f64;
    let goals = [
        (
            format!("hybrid p50 ≤ 10 ms: {:.2} ms", hybrid.0),
            hybrid.0 <= 10.0,
        ),
        (
            format!("hybrid p99 ≤ 30 ms: {:.2} ms", hybrid.1),
            hybrid.1 <= 30.0,
        ),
        (
            format!("vector memory ≤ 1.2 × raw: {mem_ratio:.3} × (RSS growth {rss_ratio:.3} ×)"),
            mem_ratio <= 1.2 && rss_ratio <= 1.2,
        ),
    ];
    let speedup = |a: (f64, f64)| {
        (
            ratio(Some(np50), Some(a.0)).unwrap_or(f64::NAN),
            ratio(Some(np99), Some(a.1)).unwrap_or(f64::NAN),
        )
    };
    let (h50x, h99x) = speedup(hybrid);
    let (v50x, v99x) = speedup(vector);
    if json {
        let v = serde_json::json!({
            "chunks": n,
            "dims": dims,
            "ingest_chunks_per_s": {"without_embeddings": rate_plain, "with_embeddings": rate_emb},
            "vector_load_ms": load,
            "vector_bytes": {"raw": raw, "heap": heap, "rss_growth": rss_delta},
            "latency": lat,
            "hybrid_profile": profile,
            "vector_recall_at_10": recall,
            "vector_same_top_10_share": same as f64 / queries.len() as f64,
            "naive_over_hybrid": {"p50": h50x, "p99": h99x},
            "naive_over_vector": {"p50": v50x, "p99": v99x},
            "goals": goals.iter().map(|(g, ok)| serde_json::json!({"goal": g, "pass": ok})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "vector matrix (int8, one f32 scale a row): {} rows loaded in {load:.0} ms; raw f32 {:.1} MB, held {:.1} MB ({mem_ratio:.3} ×), RSS growth {:.1} MB ({rss_ratio:.3} ×)",
        ix.len(),
        raw as f64 / 1e6,
        heap as f64 / 1e6,
        rss_delta as f64 / 1e6
    );
    println!();
    println!(
        "{:<44} {:>9} {:>9} {:>8}",
        "search (limit 10, defaults)", "p50 ms", "p99 ms", "queries"
    );
    for r in &rows {
        if r.name.starts_with("  keyword candidates") {
            println!("where hybrid time goes (each step alone):");
        }
        println!(
            "{:<44} {:>9.2} {:>9.2} {:>8}",
            r.name, r.p50, r.p99, r.queries
        );
    }
    println!(
        "vector search against an exact f32 scan: recall@10 {recall:.4}, the same 10 scores for {same} of {} queries",
        queries.len()
    );
    println!("naive / hybrid: {h50x:.0}× at p50, {h99x:.0}× at p99; naive / vector: {v50x:.0}× at p50, {v99x:.0}× at p99");
    println!();
    for (g, ok) in &goals {
        println!("  {} {g}", goal(*ok));
    }
    Ok(())
}
