//! Retrieval-quality evaluation of workspace memory on text nobody on the team wrote: the
//! Debian man pages of section 1 on this machine. Each page's one-line NAME description is a
//! query; the page body (without NAME) is the document that should be found, stored as one
//! source (chunked as usual). Hits are folded to distinct sources in rank order; recall@5 is
//! the share of queries whose page is among the first 5 sources, MRR the mean of 1/rank
//! over the first 10 sources (0 when absent).
//!
//! Configurations: keyword-only, vector-only and hybrid, with and without temporal decay,
//! MMR and query expansion, so the defaults can be chosen by measurement. The only offline
//! embedder available is [`HashEmbedder`] (feature hashing of words and word pairs: a
//! lexical baseline, not a semantic model), so "vector" here means hashed lexical overlap.
//! To give decay something to act on, the pages are stored at ages spread deterministically
//! over a year (age is unrelated to relevance here, so decay can only cost).
//!
//! Run: `cargo run --release -p bulkhead-tests --bin bulkhead-eval-memory [-- --pages N] [--json]`.
//! Exits 2 with a message when `/usr/share/man/man1` is missing.

#[path = "../memory_corpus.rs"]
mod memory_corpus;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use bulkhead::memory::{HashEmbedder, Memory, SearchMode, SearchOptions};

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
            name: "vector (hash)",
            opts: with(Vector, &|_| {}),
        },
        Config {
            name: "vector (hash), mmr",
            opts: with(Vector, &|o| o.mmr = true),
        },
        Config {
            name: "hybrid 0.7/0.3, expand",
            opts: with(Hybrid, &|_| {}),
        },
        Config {
            name: "hybrid 0.7/0.3, no expand",
            opts: with(Hybrid, &|o| o.expand_query = false),
        },
        Config {
            name: "hybrid 0.7/0.3, expand+decay",
            opts: with(Hybrid, &|o| o.decay = true),
        },
        Config {
            name: "hybrid 0.7/0.3, expand+mmr",
            opts: with(Hybrid, &|o| o.mmr = true),
        },
        Config {
            name: "hybrid 0.7/0.3, all (current defaults)",
            opts: with(Hybrid, &|o| {
                o.decay = true;
                o.mmr = true;
            }),
        },
        Config {
            name: "hybrid 0.5/0.5, expand",
            opts: with(Hybrid, &|o| {
                o.vector_weight = 0.5;
                o.keyword_weight = 0.5;
            }),
        },
        Config {
            name: "hybrid 0.3/0.7, expand",
            opts: with(Hybrid, &|o| {
                o.vector_weight = 0.3;
                o.keyword_weight = 0.7;
            }),
        },
    ]
}

fn main() {
    let mut n = 500usize;
    let mut json = false;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--pages" => {
                i += 1;
                n = argv.get(i).and_then(|s| s.parse().ok()).unwrap_or(n);
            }
            "--json" => json = true,
            a => {
                eprintln!("usage: bulkhead-eval-memory [--pages N] [--json] (unknown {a})");
                std::process::exit(2);
            }
        }
        i += 1;
    }
    if let Err(e) = run(n, json) {
        eprintln!("bulkhead-eval-memory: {e}");
        std::process::exit(2);
    }
}

fn run(n: usize, json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let pages = memory_corpus::load_pages(n)?;
    let load_s = t0.elapsed().as_secs_f64();
    let dir = tempfile::tempdir()?;
    let mem = Memory::open_path(&dir.path().join("memory.db"))?
        .with_embedder(Arc::new(HashEmbedder::default()));
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
        println!("embedder: hash/384 (HashEmbedder, feature hashing; the only offline embedder available now: lexical, not semantic)");
        println!("queries: each page's NAME description; relevant: that page; ages spread over 365 days, half-life 30 days");
        println!();
        println!(
            "{:<40} {:>9} {:>7} {:>9} {:>10}",
            "configuration", "recall@5", "MRR", "recall@1", "ms/query"
        );
    }
    let mut out = serde_json::Map::new();
    for c in configs(now) {
        let t = Instant::now();
        let (mut hit5, mut hit1, mut rr) = (0usize, 0usize, 0f64);
        for p in &pages {
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
        if json {
            out.insert(
                c.name.to_string(),
                serde_json::json!({"recall_at_5": r5, "recall_at_1": r1, "mrr": mrr, "ms_per_query": ms}),
            );
        } else {
            println!(
                "{:<40} {:>9.3} {:>7.3} {:>9.3} {:>10.2}",
                c.name, r5, mrr, r1, ms
            );
        }
    }
    if json {
        out.insert("pages".into(), pages.len().into());
        out.insert("chunks".into(), chunks.into());
        println!("{}", serde_json::Value::Object(out));
    } else {
        println!();
        println!(
            "command: cargo run --release -p bulkhead-tests --bin bulkhead-eval-memory -- --pages {n}"
        );
    }
    Ok(())
}
