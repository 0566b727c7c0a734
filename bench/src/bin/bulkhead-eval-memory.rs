//! Retrieval-quality evaluation of workspace memory on text nobody on the team wrote: the
//! Debian man pages of section 1 on this machine. Each page's one-line NAME description is a
//! query; the page body (without NAME) is the document that should be found, stored as one
//! source (chunked as usual). Hits are folded to distinct sources in rank order; recall@5 is
//! the share of queries whose page is among the first 5 sources, MRR the mean of 1/rank
//! over the first 10 sources (0 when absent).
//!
//! Configurations: keyword-only, vector-only and hybrid, with and without temporal decay,
//! MMR and query expansion, so the defaults can be chosen by measurement, for each embedder
//! given with `--embedder` (default: `local`, the built-in static model distilled from
//! all-MiniLM-L6-v2, and `hash`, the lexical feature-hashing baseline; a path names a model
//! file made by `controller/model/distill.py`, to compare distillation settings).
//! To give decay something to act on, the pages are stored at ages spread deterministically
//! over a year (age is unrelated to relevance here, so decay can only cost).
//!
//! Run: `cargo run --release -p bulkhead-bench --bin bulkhead-eval-memory [-- --pages N] [--embedder local|hash|FILE]... [--json]`.
//! Exits 2 with a message when `/usr/share/man/man1` is missing.

use bulkhead_bench::memory_corpus;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bulkhead::memory::{Embedder, HashEmbedder, LocalEmbedder, Memory, SearchMode, SearchOptions};

const DAY_MS: i64 = 86_400_000;

struct Config {
    name: &'static str,
    opts: SearchOptions,
}

fn configs(now: i64) -> Vec<Config> {
    let base = SearchOptions {
        limit: 10,
        decay: false,
        mmr: false,
        expand_query: true,
        now_ms: Some(now),
        ..SearchOptions::default()
    };
    let with = |mode: SearchMode, f: &dyn Fn(&mut SearchOptions)| {
        let mut o = base.clone();
        o.mode = mode;
        f(&mut o);
        o
    };
    use SearchMode::{Hybrid, Keyword, Vector};
    vec![
        Config {
            name: "keyword, expand",
            opts: with(Keyword, &|_| {}),
        },
        Config {
            name: "keyword, no expand",
            opts: with(Keyword, &|o| o.expand_query = false),
        },
        Config {
            name: "keyword, expand+decay",
            opts: with(Keyword, &|o| o.decay = true),
        },
        Config {
            name: "keyword, expand+mmr",
            opts: with(Keyword, &|o| o.mmr = true),
        },
        Config {
            name: "vector",
            opts: with(Vector, &|_| {}),
        },
        Config {
            name: "vector, no similarity floor",
            opts: with(Vector, &|o| o.min_similarity = Some(0.0)),
        },
        Config {
            name: "vector, mmr",
            opts: with(Vector, &|o| o.mmr = true),
        },
        Config {
            name: "hybrid 0.3/0.7, expand (default)",
            opts: with(Hybrid, &|_| {}),
        },
        Config {
            name: "hybrid 0.3/0.7, no expand",
            opts: with(Hybrid, &|o| o.expand_query = false),
        },
        Config {
            name: "hybrid 0.3/0.7, expand+decay",
            opts: with(Hybrid, &|o| o.decay = true),
        },
        Config {
            name: "hybrid 0.3/0.7, expand+mmr",
            opts: with(Hybrid, &|o| o.mmr = true),
        },
        Config {
            name: "hybrid 0.3/0.7, no similarity floor",
            opts: with(Hybrid, &|o| o.min_similarity = Some(0.0)),
        },
        Config {
            name: "hybrid 0.5/0.5, expand",
            opts: with(Hybrid, &|o| {
                o.vector_weight = 0.5;
                o.keyword_weight = 0.5;
            }),
        },
        Config {
            name: "hybrid 0.7/0.3, expand",
            opts: with(Hybrid, &|o| {
                o.vector_weight = 0.7;
                o.keyword_weight = 0.3;
            }),
        },
    ]
}

fn main() {
    let mut n = 500usize;
    let mut json = false;
    let mut embedders: Vec<String> = Vec::new();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--pages" => {
                i += 1;
                n = argv.get(i).and_then(|s| s.parse().ok()).unwrap_or(n);
            }
            "--json" => json = true,
            "--embedder" => {
                i += 1;
                embedders.push(argv.get(i).cloned().unwrap_or_default());
            }
            a => {
                eprintln!("usage: bulkhead-eval-memory [--pages N] [--embedder local|hash|FILE]... [--json] (unknown {a})");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if embedders.is_empty() {
        embedders = vec!["local".into(), "hash".into()];
    }
    let mut all = serde_json::Map::new();
    for e in &embedders {
        match run(n, json, e) {
            Ok(v) => {
                all.insert(e.clone(), v);
            }
            Err(err) => {
                eprintln!("bulkhead-eval-memory: {e}: {err}");
                std::process::exit(2);
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Object(all));
    }
}

/// Whether at most half of the query's words (3+ letters, lower-cased) occur in the page:
/// the queries where keyword search has little to hold on to, and meaning must do the work.
fn lexical_gap(query: &str, body: &str) -> bool {
    let words = |t: &str| -> HashSet<String> {
        t.split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 3)
            .map(str::to_lowercase)
            .collect()
    };
    let q = words(query);
    if q.is_empty() {
        return false;
    }
    let b = words(body);
    let shared = q.iter().filter(|w| b.contains(*w)).count();
    shared * 2 <= q.len()
}

fn embedder(spec: &str) -> Result<Arc<dyn Embedder>, Box<dyn std::error::Error>> {
    Ok(match spec {
        "hash" => Arc::new(HashEmbedder::default()),
        "local" => Arc::new(LocalEmbedder::builtin()),
        path => Arc::new(LocalEmbedder::from_file(std::path::Path::new(path))?),
    })
}

fn run(n: usize, json: bool, spec: &str) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let emb = embedder(spec)?;
    let t0 = Instant::now();
    let pages = memory_corpus::load_pages(n)?;
    let load_s = t0.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let mem = Memory::open_path(&dir.path().join("memory.db"))?.with_embedder(emb.clone());
    let now = 1_790_000_000_000i64;
    let t1 = Instant::now();
    let mut chunks = 0usize;
    let mut body_bytes = 0usize;
    for (i, p) in pages.iter().enumerate() {
        let age_days = (i as i64 * 37) % 365;
        let st = mem.store_at(
            &p.body,
            &format!("man1/{}", p.name),
            now - age_days * DAY_MS,
        )?;
        chunks += st.ids.len();
        body_bytes += p.body.len();
    }
    let ingest_s = t1.elapsed().as_secs_f64();
    if !json {
        println!(
            "corpus: {} man pages from {} ({} chunks, {:.1} MB of body text; parsed in {:.1} s, stored in {:.1} s)",
            pages.len(),
            memory_corpus::MAN_DIR,
            chunks,
            body_bytes as f64 / 1e6,
            load_s,
            ingest_s
        );
        println!(
            "embedder: {}/{}/{} ({spec})",
            emb.provider(),
            emb.model(),
            emb.dims()
        );
        println!("queries: each page's NAME description; relevant: that page; ages spread over 365 days, half-life 30 days");
        println!();
        println!(
            "{:<40} {:>9} {:>7} {:>9} {:>7} {:>7} {:>10}",
            "configuration", "recall@5", "MRR", "recall@1", "gap@5", "gapMRR", "ms/query"
        );
    }
    let hard: Vec<bool> = pages
        .iter()
        .map(|p| lexical_gap(&p.description, &p.body))
        .collect();
    let n_hard = hard.iter().filter(|h| **h).count();
    if !json {
        println!(
            "lexical-gap slice: {n_hard} queries with at most half of their words in their page (\"gap\" columns)"
        );
    }
    let mut out = serde_json::Map::new();
    for c in configs(now) {
        let t = Instant::now();
        let (mut hit5, mut hit1, mut rr) = (0usize, 0usize, 0f64);
        let (mut gap5, mut gap_rr) = (0usize, 0f64);
        for (p, &is_hard) in pages.iter().zip(&hard) {
            let want = format!("man1/{}", p.name);
            let res = mem.search(&p.description, &c.opts)?;
            let mut seen = HashSet::new();
            let ranked: Vec<&str> = res
                .iter()
                .map(|r| r.source.as_str())
                .filter(|s| seen.insert(*s))
                .collect();
            if let Some(pos) = ranked.iter().position(|s| *s == want) {
                if pos < 5 {
                    hit5 += 1;
                    gap5 += usize::from(is_hard);
                }
                if is_hard {
                    gap_rr += 1.0 / (pos + 1) as f64;
                }
                if pos == 0 {
                    hit1 += 1;
                }
                rr += 1.0 / (pos + 1) as f64;
            }
        }
        let q = pages.len() as f64;
        let ms = t.elapsed().as_secs_f64() * 1e3 / q;
        let (r5, r1, mrr) = (hit5 as f64 / q, hit1 as f64 / q, rr / q);
        let h = n_hard.max(1) as f64;
        let (g5, gmrr) = (gap5 as f64 / h, gap_rr / h);
        if json {
            out.insert(
                c.name.to_string(),
                serde_json::json!({"recall_at_5": r5, "recall_at_1": r1, "mrr": mrr,
                    "gap_recall_at_5": g5, "gap_mrr": gmrr, "ms_per_query": ms}),
            );
        } else {
            println!(
                "{:<40} {:>9.3} {:>7.3} {:>9.3} {:>7.3} {:>7.3} {:>10.2}",
                c.name, r5, mrr, r1, g5, gmrr, ms
            );
        }
    }
    out.insert("pages".into(), pages.len().into());
    out.insert("chunks".into(), chunks.into());
    if !json {
        println!();
        println!(
            "command: cargo run --release -p bulkhead-bench --bin bulkhead-eval-memory -- --pages {n} --embedder {spec}"
        );
        println!();
    }
    Ok(serde_json::Value::Object(out))
}
