//! Benchmark of workspace memory at 100,000 chunks (10,000 with `--quick`), 384 dimensions,
//! the offline hash embedder, with a naive baseline in the same run:
//!
//! - ingest: chunks per second through `Memory::store_at`, without and with embeddings
//!   (the API has no batched store: each call is one chunk in its own transaction, so this is
//!   the per-store rate);
//! - search latency p50/p99 through `Memory::search` (default options: decay and MMR on) for
//!   keyword, vector and hybrid, after a first search that loads the vector matrix (timed
//!   apart), against the old system's way: every vector JSON-encoded (held in memory here,
//!   which favours the baseline), decoded per query, cosine in a scalar loop, full sort;
//! - memory of the loaded vector matrix (`VectorIndex::heap_bytes`, and the RSS growth of
//!   the process while loading it) against the raw size (rows × dims × 4 bytes).
//!
//! Text: chunks of 2–4 sentences sampled from the Debian man pages on this machine (or from
//! a generated vocabulary when they are missing); queries: 3–5 words from sampled sentences.
//! Run: `cargo run --release -p bulkhead-tests --bin bulkhead-bench-memory [-- --quick] [--json]`.

#[path = "../memory_corpus.rs"]
mod memory_corpus;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulkhead::memory::{Embedder, HashEmbedder, Memory, SearchMode, SearchOptions};
use memory_corpus::Rng;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
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

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let argv: Vec<String> = std::env::args().collect();
    let quick = argv.iter().any(|a| a == "--quick");
    let json = argv.iter().any(|a| a == "--json");
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
    // Ingest without embeddings (keyword-only workspace), then with.
    let plain = Memory::open_path(&dir.path().join("plain.db"))?;
    let rate_plain = ingest(&plain, &texts, now)?;
    drop(plain);
    let mem = Memory::open_path(&dir.path().join("memory.db"))?.with_embedder(emb.clone());
    let rate_emb = ingest(&mem, &texts, now)?;
    let t = Instant::now();
    for tx in texts.iter().take(5000) {
        black_box(emb.embed_one(tx));
    }
    let embed_rate = 5000f64.min(n as f64) / t.elapsed().as_secs_f64();
    if !json {
        println!("ingest, one chunk per store (no batched API): {rate_plain:.0} chunks/s without embeddings, {rate_emb:.0} chunks/s with (hash embedding alone: {embed_rate:.0} texts/s)");
    }

    // Load the matrix (first vector search), measuring memory.
    let rss0 = rss_kb();
    let t = Instant::now();
    let ix = mem.vector_index()?.ok_or("no vector index")?;
    let load = t.elapsed();
    let rss1 = rss_kb();
    let raw = ix.len() * ix.dims() * 4;
    let heap = ix.heap_bytes();
    let rss_delta = (rss1.saturating_sub(rss0) * 1024) as usize;

    let opts = |mode| SearchOptions {
        mode,
        now_ms: Some(now),
        ..SearchOptions::default()
    };
    let mut lat = serde_json::Map::new();
    let mut hybrid = (Duration::ZERO, Duration::ZERO);
    let mut rows = Vec::new();
    for (name, mode) in [
        ("keyword", SearchMode::Keyword),
        ("vector", SearchMode::Vector),
        ("hybrid", SearchMode::Hybrid),
    ] {
        let o = opts(mode);
        // One warm-up query.
        black_box(mem.search(&queries[0], &o)?);
        let mut d: Vec<Duration> = queries
            .iter()
            .map(|q| {
                let t = Instant::now();
                let r = mem.search(q, &o);
                let e = t.elapsed();
                black_box(r.map(|r| r.len()).unwrap_or(0));
                e
            })
            .collect();
        let (p50, p99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
        if mode == SearchMode::Hybrid {
            hybrid = (p50, p99);
        }
        lat.insert(
            name.into(),
            serde_json::json!({"p50_ms": ms(p50), "p99_ms": ms(p99)}),
        );
        rows.push((name.to_string(), p50, p99, queries.len()));
    }

    // Where vector time goes: the f32 scan alone (VectorIndex::top_k), and a projection of
    // an int8-quantized scan (bench-only code, not in the product) with f32 re-scoring.
    let qvecs: Vec<Vec<f32>> = queries.iter().map(|q| emb.embed_one(q)).collect();
    let mut d: Vec<Duration> = qvecs
        .iter()
        .map(|q| {
            let t = Instant::now();
            black_box(ix.top_k(q, 40));
            t.elapsed()
        })
        .collect();
    let (s50, s99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
    rows.push((
        "  f32 scan alone (top_k 40)".into(),
        s50,
        s99,
        queries.len(),
    ));
    let quant = |v: &[f32]| -> (Vec<i8>, f32) {
        let m = v.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-12);
        let s = m / 127.0;
        (v.iter().map(|x| (x / s).round() as i8).collect(), s)
    };
    let mut q8: Vec<i8> = Vec::with_capacity(n * dims);
    let mut scales: Vec<f32> = Vec::with_capacity(n);
    let mut rowids: Vec<i64> = Vec::with_capacity(n);
    for id in 1..=(n as i64 + 1) {
        if let Some(v) = ix.vector(id) {
            let (q, s) = quant(v);
            q8.extend_from_slice(&q);
            scales.push(s);
            rowids.push(id);
        }
    }
    let mut d: Vec<Duration> = qvecs
        .iter()
        .map(|q| {
            let t = Instant::now();
            let (qq, qs) = quant(q);
            let mut scored: Vec<(usize, i32)> = q8
                .chunks_exact(dims)
                .enumerate()
                .map(|(i, row)| {
                    let mut acc = [0i32; 16];
                    for (x, y) in row.chunks_exact(16).zip(qq.chunks_exact(16)) {
                        for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
                            *a += i32::from(i16::from(x) * i16::from(y));
                        }
                    }
                    (i, acc.iter().sum::<i32>())
                })
                .collect();
            let k = 160.min(scored.len());
            scored.select_nth_unstable_by(k - 1, |a, b| {
                (b.1 as f32 * scales[b.0]).total_cmp(&(a.1 as f32 * scales[a.0]))
            });
            let mut best: Vec<(i64, f32)> = scored[..k]
                .iter()
                .filter_map(|&(i, _)| {
                    ix.vector(rowids[i])
                        .map(|v| (rowids[i], bulkhead::memory::search::dot(v, q)))
                })
                .collect();
            best.sort_by(|a, b| b.1.total_cmp(&a.1));
            best.truncate(40);
            black_box((best, qs));
            t.elapsed()
        })
        .collect();
    let (i50, i99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
    rows.push((
        "  int8 scan + f32 rescore (projection)".into(),
        i50,
        i99,
        queries.len(),
    ));
    drop(q8);

    // Naive baseline: JSON-encoded vectors decoded per query, scalar cosine, full sort.
    let encoded: Vec<String> = texts
        .iter()
        .map(|t| serde_json::to_string(&emb.embed_one(t)).unwrap_or_default())
        .collect();
    let mut d: Vec<Duration> = queries
        .iter()
        .take(naive_queries)
        .map(|q| {
            let t = Instant::now();
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
            t.elapsed()
        })
        .collect();
    let (np50, np99) = (pct(&mut d, 0.5), pct(&mut d, 0.99));
    lat.insert(
        "naive_json_scan".into(),
        serde_json::json!({"p50_ms": ms(np50), "p99_ms": ms(np99)}),
    );
    rows.push((
        "naive (JSON decode + scalar scan)".into(),
        np50,
        np99,
        naive_queries,
    ));

    let goal = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mem_ratio = heap as f64 / raw as f64;
    let rss_ratio = rss_delta as f64 / raw as f64;
    let goals = [
        (
            format!("hybrid p50 ≤ 10 ms: {:.2} ms", ms(hybrid.0)),
            ms(hybrid.0) <= 10.0,
        ),
        (
            format!("hybrid p99 ≤ 30 ms: {:.2} ms", ms(hybrid.1)),
            ms(hybrid.1) <= 30.0,
        ),
        (
            format!("vector memory ≤ 1.2 × raw: {mem_ratio:.3} × (RSS growth {rss_ratio:.3} ×)"),
            mem_ratio <= 1.2 && rss_ratio <= 1.2,
        ),
    ];
    if json {
        let v = serde_json::json!({
            "chunks": n,
            "dims": dims,
            "ingest_chunks_per_s": {"without_embeddings": rate_plain, "with_embeddings": rate_emb},
            "vector_load_ms": ms(load),
            "vector_bytes": {"raw": raw, "heap": heap, "rss_growth": rss_delta},
            "latency": lat,
            "goals": goals.iter().map(|(g, ok)| serde_json::json!({"goal": g, "pass": ok})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "vector matrix: {} rows loaded in {:.0} ms; raw {:.1} MB, held {:.1} MB ({mem_ratio:.3} ×), RSS growth {:.1} MB ({rss_ratio:.3} ×)",
        ix.len(),
        ms(load),
        raw as f64 / 1e6,
        heap as f64 / 1e6,
        rss_delta as f64 / 1e6
    );
    println!();
    println!(
        "{:<36} {:>10} {:>10} {:>8}",
        "search (limit 10, defaults)", "p50 ms", "p99 ms", "queries"
    );
    for (name, p50, p99, q) in &rows {
        println!("{name:<36} {:>10.2} {:>10.2} {q:>8}", ms(*p50), ms(*p99));
    }
    println!(
        "hybrid vs naive at p50: {:.0}× faster",
        ms(np50) / ms(hybrid.0).max(1e-6)
    );
    println!();
    for (g, ok) in &goals {
        println!("  {} {g}", goal(*ok));
    }
    Ok(())
}
