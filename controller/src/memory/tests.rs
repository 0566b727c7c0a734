//! Library tests of the memory store and search.

use std::sync::Arc;

use super::search::{mmr, query_terms, snippet, Candidate};
use super::*;

const DAY: i64 = 86_400_000;

fn mem() -> (tempfile::TempDir, Memory) {
    let d = tempfile::tempdir().unwrap();
    let m = Memory::open_path(&d.path().join(DB_FILE)).unwrap();
    (d, m)
}

fn hash_mem() -> (tempfile::TempDir, Memory) {
    let (d, m) = mem();
    (d, m.with_embedder(Arc::new(HashEmbedder::default())))
}

fn plain() -> SearchOptions {
    SearchOptions {
        decay: false,
        mmr: false,
        ..SearchOptions::default()
    }
}

#[test]
fn crud_round_trip_and_dedup() {
    let (_d, m) = mem();
    let s = m
        .store("The staging database listens on port 5433.", "cli")
        .unwrap();
    assert_eq!((s.ids.len(), s.added, s.existing), (1, 1, 0));
    let id = s.ids[0];
    let c = m.get(id).unwrap().unwrap();
    assert_eq!(c.source, "cli");
    assert_eq!(c.text, "The staging database listens on port 5433.");
    assert_eq!(c.hash.len(), 64);
    assert!(c.embedding.is_none());
    // The same text from the same source is not stored twice; from another source it is.
    let again = m
        .store("The staging database listens on port 5433.", "cli")
        .unwrap();
    assert_eq!(
        (again.ids.clone(), again.added, again.existing),
        (vec![id], 0, 1)
    );
    let other = m
        .store("The staging database listens on port 5433.", "x")
        .unwrap();
    assert_ne!(other.ids[0], id);
    let st = m.stats().unwrap();
    assert_eq!((st.chunks, st.sources, st.embedded, st.stale), (2, 2, 0, 0));
    assert_eq!(st.schema_version, db::latest_version());
    assert!(m.remove(id).unwrap());
    assert!(!m.remove(id).unwrap());
    assert!(m.get(id).unwrap().is_none());
    assert_eq!(m.stats().unwrap().chunks, 1);
    // Removed text is gone from both indexes.
    let hits = m.search("staging", &plain()).unwrap();
    assert_eq!(
        hits.iter().map(|h| h.id).collect::<Vec<_>>(),
        vec![other.ids[0]]
    );
    assert!(m.store("  \n ", "cli").is_err());
    assert!(m.store("x", "").is_err());
}

#[test]
fn keyword_search_ranks_and_normalizes() {
    let (_d, m) = mem();
    let a = m
        .store(
            "Deploy keys rotate every 90 days; the deploy key is in vault.",
            "a",
        )
        .unwrap()
        .ids[0];
    let b = m
        .store("The cafeteria serves lunch at noon.", "b")
        .unwrap()
        .ids[0];
    let c = m
        .store("A key to the office is at the front desk.", "c")
        .unwrap()
        .ids[0];
    let hits = m.search("where is the deploy key?", &plain()).unwrap();
    assert_eq!(hits[0].id, a);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert!(hits.iter().all(|h| (0.0..=1.0).contains(&h.score)));
    assert!(hits.iter().any(|h| h.id == c));
    assert!(hits.iter().all(|h| h.id != b));
    assert!(hits[0].snippet.contains("Deploy keys"));
    // Stop words alone still search (nothing else is left).
    assert!(m.search("the", &plain()).unwrap().iter().any(|h| h.id == b));
    // FTS syntax in a query is taken literally.
    m.search("\"unbalanced AND OR (", &plain()).unwrap();
    assert!(m.search("   ", &plain()).is_err());
}

#[test]
fn cjk_and_substrings_use_trigrams() {
    let (_d, m) = mem();
    let tokyo = m
        .store("東京の天気は晴れです。明日は雨が降るでしょう。", "ja")
        .unwrap()
        .ids[0];
    let beijing = m
        .store("北京今天的天气很好，适合出去散步。", "zh")
        .unwrap()
        .ids[0];
    let en = m
        .store("Kubernetes autoscaling configuration notes", "en")
        .unwrap()
        .ids[0];
    let ko = m.store("서울의 날씨는 맑습니다", "ko").unwrap().ids[0];
    let ids = |q: &str| -> Vec<i64> {
        m.search(q, &plain())
            .unwrap()
            .iter()
            .map(|h| h.id)
            .collect()
    };
    assert_eq!(ids("東京の天気"), vec![tokyo]);
    assert_eq!(ids("天气很好"), vec![beijing]);
    // Two characters: below a trigram, found by the substring scan.
    assert_eq!(ids("東京"), vec![tokyo]);
    assert_eq!(ids("날씨"), vec![ko]);
    // A partial word: unicode61 finds nothing, the trigram index does.
    assert_eq!(ids("autoscal"), vec![en]);
    assert!(ids("zzzzqqq").is_empty());
}

#[test]
fn decay_prefers_recent_except_evergreen() {
    let (_d, m) = mem();
    let now = 1_800_000_000_000;
    // The old chunk matches better (both words, twice).
    let old = m
        .store_at(
            "backup schedule: the backup schedule is nightly",
            "notes",
            now - 120 * DAY,
        )
        .unwrap()
        .ids[0];
    let new = m
        .store_at("the backup runs on sundays", "notes", now - DAY)
        .unwrap()
        .ids[0];
    let q = "backup schedule";
    let mut o = SearchOptions {
        now_ms: Some(now),
        mmr: false,
        decay: false,
        ..SearchOptions::default()
    };
    let order =
        |o: &SearchOptions| -> Vec<i64> { m.search(q, o).unwrap().iter().map(|h| h.id).collect() };
    assert_eq!(order(&o), vec![old, new]);
    o.decay = true;
    assert_eq!(order(&o), vec![new, old]);
    let hits = m.search(q, &o).unwrap();
    // 120 days at a 30-day half-life: 1/16.
    assert!(hits[1].score < 0.07, "{}", hits[1].score);
    // The same old text in MEMORY.md does not decay.
    let ever = m
        .store_at(
            "backup schedule: the backup schedule is nightly",
            "files/MEMORY.md",
            now - 120 * DAY,
        )
        .unwrap()
        .ids[0];
    assert_eq!(order(&o)[0], ever);
    assert_eq!(search::decay_factor("MEMORY.md", 0, now, 30.0), 1.0);
    assert!((search::decay_factor("x", now - 30 * DAY, now, 30.0) - 0.5).abs() < 1e-6);
}

#[test]
fn mmr_promotes_diversity() {
    let words = |s: &str| search::tokenize(s).into_iter().collect();
    let cands = vec![
        Candidate {
            id: 1,
            score: 1.0,
            vector: None,
            words: words("rust async runtime tokio guide"),
        },
        Candidate {
            id: 2,
            score: 0.95,
            vector: None,
            words: words("rust async runtime tokio guide copy"),
        },
        Candidate {
            id: 3,
            score: 0.8,
            vector: None,
            words: words("rust borrow checker lifetimes"),
        },
    ];
    assert_eq!(mmr(&cands, 1.0, 3), vec![0, 1, 2]);
    assert_eq!(mmr(&cands, 0.7, 3), vec![0, 2, 1]);
    // End to end: near-duplicates are spread out.
    let (_d, m) = hash_mem();
    let a = m
        .store("rust async runtime tokio guide for beginners", "a")
        .unwrap()
        .ids[0];
    // The same note saved twice (two sources), and a different one almost as relevant.
    let b = m
        .store("rust async runtime tokio guide for beginners", "b")
        .unwrap()
        .ids[0];
    let c = m
        .store("rust async error handling with anyhow", "c")
        .unwrap()
        .ids[0];
    let q = "rust async guide";
    let ids = |mmr: bool| -> Vec<i64> {
        let o = SearchOptions {
            mmr,
            decay: false,
            limit: 2,
            ..SearchOptions::default()
        };
        m.search(q, &o).unwrap().iter().map(|h| h.id).collect()
    };
    let without = ids(false);
    assert!(without.contains(&a) && without.contains(&b), "{without:?}");
    let with = ids(true);
    assert!(with.contains(&c), "{with:?}");
}

#[test]
fn vector_and_hybrid_with_the_hash_embedder() {
    let (_d, m) = hash_mem();
    let a = m
        .store("postgres replication lag alerting runbook", "a")
        .unwrap()
        .ids[0];
    let _b = m
        .store("team offsite planning and travel budget", "b")
        .unwrap()
        .ids[0];
    assert_eq!(m.get(a).unwrap().unwrap().embedding.unwrap().dims, 384);
    let st = m.stats().unwrap();
    assert_eq!((st.embedded, st.stale), (2, 0));
    for mode in [SearchMode::Vector, SearchMode::Hybrid, SearchMode::Keyword] {
        let o = SearchOptions { mode, ..plain() };
        let hits = m.search("replication lag runbook", &o).unwrap();
        assert_eq!(hits[0].id, a, "{mode:?}");
    }
    // Vector mode without an embedder is an error; hybrid degrades to keyword.
    let (_d2, k) = mem();
    k.store("postgres replication lag alerting runbook", "a")
        .unwrap();
    let o = SearchOptions {
        mode: SearchMode::Vector,
        ..plain()
    };
    assert!(matches!(k.search("lag", &o), Err(Error::Invalid(_))));
    let hits = k.search("replication lag", &plain()).unwrap();
    assert_eq!(hits.len(), 1);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
}

#[test]
fn model_change_needs_an_explicit_reembed() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(DB_FILE);
    let m = Memory::open_path(&p)
        .unwrap()
        .with_embedder(Arc::new(HashEmbedder::new(64)));
    let id = m.store("alpha beta gamma", "a").unwrap().ids[0];
    drop(m);
    let m = Memory::open_path(&p)
        .unwrap()
        .with_embedder(Arc::new(HashEmbedder::default()));
    let st = m.stats().unwrap();
    assert_eq!((st.embedded, st.stale, st.models.len()), (0, 1, 1));
    // Vectors of the old model are not compared with the new one's.
    let o = SearchOptions {
        mode: SearchMode::Vector,
        ..plain()
    };
    assert!(m.search("alpha", &o).unwrap().is_empty());
    assert_eq!(m.reembed(16).unwrap(), 1);
    assert_eq!(m.stats().unwrap().stale, 0);
    assert_eq!(m.get(id).unwrap().unwrap().embedding.unwrap().dims, 384);
    assert_eq!(m.search("alpha", &o).unwrap()[0].id, id);
}

#[test]
fn vector_index_sees_other_connections_writes() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(DB_FILE);
    let e: Arc<dyn Embedder> = Arc::new(HashEmbedder::default());
    let m1 = Memory::open_path(&p).unwrap().with_embedder(e.clone());
    let m2 = Memory::open_path(&p).unwrap().with_embedder(e);
    m1.store("first note about kafka", "a").unwrap();
    let o = SearchOptions {
        mode: SearchMode::Vector,
        ..plain()
    };
    assert_eq!(m1.search("kafka", &o).unwrap().len(), 1);
    m2.store("second note about kafka", "a").unwrap();
    let hits = m1.search("kafka", &o).unwrap();
    assert_eq!(hits.len(), 2);
    let ix = m1.vector_index().unwrap().unwrap();
    assert_eq!((ix.len(), ix.dims()), (2, 384));
    // Unchanged: the cached matrix is reused (same allocation).
    assert!(Arc::ptr_eq(&ix, &m2.vector_index().unwrap().unwrap()));
    // Removing a chunk drops its vector (cascade) and the cached matrix.
    assert!(m2.remove(hits[0].id).unwrap());
    assert_eq!(m1.vector_index().unwrap().unwrap().len(), 1);
    assert_eq!(m1.search("kafka", &o).unwrap().len(), 1);
    // A new database at the same path is not served from the old one's cache.
    drop((m1, m2));
    std::fs::remove_file(&p).unwrap();
    let _ = std::fs::remove_file(d.path().join("memory.db-wal"));
    let _ = std::fs::remove_file(d.path().join("memory.db-shm"));
    let m3 = Memory::open_path(&p)
        .unwrap()
        .with_embedder(Arc::new(HashEmbedder::default()));
    assert!(m3.search("kafka", &o).unwrap().is_empty());
    assert!(m3.vector_index().unwrap().unwrap().is_empty());
}

#[test]
fn long_text_is_chunked() {
    let (_d, m) = mem();
    let mut text = String::from("# Runbook\n\n");
    for i in 0..40 {
        text.push_str(&format!(
            "Step {i}: check the service number {i} and restart it if needed.\n\n"
        ));
    }
    let s = m.store(&text, "runbook.md").unwrap();
    assert!(s.ids.len() >= 2, "{}", s.ids.len());
    for id in &s.ids {
        assert!(m.get(*id).unwrap().unwrap().text.starts_with("# Runbook"));
    }
}

#[test]
fn query_terms_and_snippets() {
    assert_eq!(
        query_terms("What is the deploy key?", true),
        vec!["deploy", "key"]
    );
    assert_eq!(query_terms("the THE the", true), vec!["the"]);
    assert_eq!(query_terms("What is it", false), vec!["what", "is", "it"]);
    let long = format!(
        "{} needle here {}",
        "word ".repeat(100),
        "tail ".repeat(100)
    );
    let s = snippet(&long, &["needle".to_string()]);
    assert!(s.contains("needle here"), "{s}");
    assert!(s.starts_with('…') && s.ends_with('…'));
    assert!(s.chars().count() <= search::SNIPPET_CHARS + 2);
    assert_eq!(snippet("short text", &[]), "short text");
    let s = snippet(&"日本語のテキスト".repeat(60), &["テキスト".to_string()]);
    assert!(s.contains("テキスト"));
}

#[test]
fn dot_matches_scalar() {
    let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
    let scalar: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((search::dot(&a, &b) - scalar).abs() < 1e-3);
}

/// A smoke figure, not the bench: `cargo test --release -p bulkhead --lib memory_scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn memory_scale_smoke() {
    let (_d, m) = hash_mem();
    let n = 100_000;
    let words = [
        "deploy", "kafka", "postgres", "rust", "lunch", "budget", "review", "latency", "replica",
        "token", "cache", "index", "vector", "search", "memory", "agent",
    ];
    let t = std::time::Instant::now();
    for i in 0..n {
        let text = format!(
            "note {i}: {} {} {} and {}",
            words[i % 16],
            words[(i / 16) % 16],
            words[(i / 256) % 16],
            words[(i * 7) % 16]
        );
        m.store(&text, "bench").unwrap();
    }
    eprintln!("ingest: {:.0}/s", n as f64 / t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    let ix = m.vector_index().unwrap().unwrap();
    eprintln!(
        "load: {:?}, {} rows, {} MiB",
        t.elapsed(),
        ix.len(),
        ix.heap_bytes() >> 20
    );
    for mode in [SearchMode::Keyword, SearchMode::Vector, SearchMode::Hybrid] {
        let o = SearchOptions {
            mode,
            ..SearchOptions::default()
        };
        let mut ts: Vec<f64> = (0..50)
            .map(|i| {
                let t = std::time::Instant::now();
                m.search(
                    &format!("{} {} latency", words[i % 16], words[(i * 3) % 16]),
                    &o,
                )
                .unwrap();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ts.sort_by(f64::total_cmp);
        eprintln!("{mode:?}: p50 {:.2} ms, p99 {:.2} ms", ts[25], ts[49]);
    }
}
