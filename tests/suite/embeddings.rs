//! Remote embedding providers (`bulkhead::memory::providers`) and the embedding cache
//! against a tiny OpenAI-compatible `/v1/embeddings` server started on 127.0.0.1 by each
//! test: vectors returned and stored, batching, 429 with `Retry-After`, hostile vectors
//! refused, cache hits and LRU eviction; and a table of embedding base URLs refused before
//! any connection (the local listener sees nothing), a redirect to a private address, and
//! loopback without the operator's `config.toml` setting.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::config::Config;
use bulkhead::llm::{KeyRing, RetryPolicy};
use bulkhead::memory::cache::{CachedEmbedder, EmbeddingCache};
use bulkhead::memory::providers::{EmbedNetPolicy, HttpEmbedder, ProviderConfig};
use bulkhead::memory::{Embedder, Memory, SearchOptions};
use serde_json::{json, Value};

const DIMS: usize = 4;

/// What the server answers: status, extra headers, body.
type Reply = (u16, Vec<(String, String)>, String);
type Handler = dyn Fn(usize, &Value) -> Reply + Send + Sync;

struct Server {
    port: u16,
    /// Requests received (connections accepted and read).
    hits: Arc<AtomicUsize>,
    /// Request bodies, in arrival order.
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Server {
    fn start(handler: impl Fn(usize, &Value) -> Reply + Send + Sync + 'static) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let hits = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let (h2, b2) = (hits.clone(), bodies.clone());
        let handler: Box<Handler> = Box::new(handler);
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut stream) = stream else { continue };
                let n = h2.fetch_add(1, Ordering::SeqCst);
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                b2.lock().unwrap().push(req.clone());
                let (status, headers, text) = handler(n, &req);
                let mut resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    text.len()
                );
                for (k, v) in headers {
                    resp.push_str(&format!("{k}: {v}\r\n"));
                }
                resp.push_str("\r\n");
                resp.push_str(&text);
                let _ = stream.write_all(resp.as_bytes());
            }
        });
        Server { port, hits, bodies }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The vector the server returns for a text: `[n, 1, 0, 0]` for `t<n>`, else
/// `[len, 1, 0, 0]`.
fn vector_of(text: &str) -> Vec<f32> {
    let first = text
        .strip_prefix('t')
        .and_then(|n| n.parse::<f32>().ok())
        .unwrap_or(text.len() as f32);
    vec![first, 1.0, 0.0, 0.0]
}

/// An OpenAI-style success body for the request.
fn ok_body(req: &Value) -> String {
    let data: Vec<Value> = req["input"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": vector_of(t.as_str().unwrap_or(""))}))
        .collect();
    json!({"object": "list", "data": data, "model": req["model"]}).to_string()
}

fn ok(_: usize, req: &Value) -> Reply {
    (200, Vec::new(), ok_body(req))
}

fn loopback() -> EmbedNetPolicy {
    let cfg = Config::parse(
        "[memory]\nallow_loopback_embeddings = true\n",
        "config.toml",
    )
    .unwrap();
    let p = EmbedNetPolicy::from_config(&cfg);
    assert!(p.allow_loopback && !p.allow_private);
    p
}

fn config(base: &str) -> ProviderConfig {
    let mut c = ProviderConfig::from_spec("compat/test-model", Some(DIMS))
        .unwrap()
        .with_base_url(base);
    c.retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
        jitter: 0.0,
    };
    c.timeout = Duration::from_secs(10);
    c
}

fn embedder(s: &Server) -> HttpEmbedder {
    HttpEmbedder::new(
        config(&s.base()),
        loopback(),
        KeyRing::new("compat", Vec::new()),
    )
    .unwrap()
}

#[test]
fn vectors_are_returned_and_stored() {
    let s = Server::start(ok);
    let e = embedder(&s);
    assert_eq!(
        e.embed(&["t7", "abc"]).unwrap(),
        vec![vector_of("t7"), vector_of("abc")]
    );
    assert_eq!(s.bodies.lock().unwrap()[0]["model"], "test-model");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("memory.db");
    let cached = CachedEmbedder::new(Arc::new(e), EmbeddingCache::open(&db, 100).unwrap());
    let mem = Memory::open_path(&db)
        .unwrap()
        .with_embedder(Arc::new(cached));
    let ids = mem
        .store("The deploy key lives in vault.", "memory_store")
        .unwrap()
        .ids;
    let c = mem.get(ids[0]).unwrap().unwrap();
    let info = c.embedding.unwrap();
    assert_eq!(
        (info.provider.as_str(), info.model.as_str(), info.dims),
        ("compat", "test-model", DIMS)
    );
    let hits = mem.search("deploy key", &SearchOptions::default()).unwrap();
    assert_eq!(hits[0].id, ids[0]);
    assert_eq!(mem.stats().unwrap().embedded, 1);
}

#[test]
fn batches_of_64_in_order() {
    let s = Server::start(ok);
    let e = embedder(&s);
    let texts: Vec<String> = (0..130).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let v = e.embed(&refs).unwrap();
    assert_eq!(v.len(), 130);
    for (i, x) in v.iter().enumerate() {
        assert_eq!(x[0], i as f32);
    }
    assert_eq!(s.hits(), 3, "ceil(130 / 64) requests");
    assert_eq!(e.requests(), 3);
    let mut sizes: Vec<usize> = s
        .bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| b["input"].as_array().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes, vec![2, 64, 64]);
}

#[test]
fn rate_limit_with_retry_after_then_success() {
    let s = Server::start(|n, req| {
        if n == 0 {
            (
                429,
                vec![("retry-after".into(), "1".into())],
                json!({"error": {"message": "slow down", "type": "rate_limit_exceeded"}})
                    .to_string(),
            )
        } else {
            ok(n, req)
        }
    });
    let e = embedder(&s);
    let t = Instant::now();
    assert_eq!(e.embed(&["t1"]).unwrap(), vec![vector_of("t1")]);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(s.hits(), 2);
}

#[test]
fn hostile_vectors_are_refused() {
    for bad in [
        json!({"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1.0, 2.0, 3.0, 4.0, 5.0]}]}),
        json!({"data": [{"index": 0, "embedding": [1e300, 0.0, 0.0, 0.0]}]}),
        json!({"data": [{"index": 0, "embedding": ["NaN", 0.0, 0.0, 0.0]}]}),
        json!({"data": []}),
    ] {
        let body = bad.to_string();
        let s = Server::start(move |_, _| (200, Vec::new(), body.clone()));
        let err = embedder(&s).embed(&["x"]).unwrap_err().to_string();
        assert!(err.contains("compat/test-model"), "{err}");
        assert_eq!(s.hits(), 1, "not retried");
    }
    // Wrong dimensions by name.
    let s = Server::start(|_, _| {
        (
            200,
            Vec::new(),
            json!({"data": [{"embedding": [1.0, 2.0]}]}).to_string(),
        )
    });
    let err = embedder(&s).embed(&["x"]).unwrap_err().to_string();
    assert!(err.contains("2 dimensions, expected 4"), "{err}");
    // An oversized body is cut off, not read whole.
    let s = Server::start(|_, _| (200, Vec::new(), " ".repeat(4096)));
    let mut c = config(&s.base());
    c.max_response_bytes = 1024;
    c.retry.max_attempts = 1;
    let e = HttpEmbedder::new(c, loopback(), KeyRing::new("compat", Vec::new())).unwrap();
    let err = e.embed(&["x"]).unwrap_err().to_string();
    assert!(err.contains("exceeds 1024 bytes"), "{err}");
}

#[test]
fn cache_hit_avoids_a_request_and_lru_evicts_at_the_cap() {
    let s = Server::start(ok);
    let dir = tempfile::tempdir().unwrap();
    let cache = EmbeddingCache::open(&dir.path().join("memory.db"), 2).unwrap();
    let c = CachedEmbedder::new(Arc::new(embedder(&s)), cache);
    let a = c.embed(&["t1"]).unwrap();
    assert_eq!(c.embed(&["t1"]).unwrap(), a);
    assert_eq!(s.hits(), 1, "second embed served from the cache");
    c.embed(&["t2"]).unwrap();
    c.embed(&["t1"]).unwrap(); // t1 is now the most recently used
    assert_eq!(s.hits(), 2);
    c.embed(&["t3"]).unwrap(); // evicts t2, the least recently used
    assert_eq!(s.hits(), 3);
    assert_eq!(c.cache().len().unwrap(), 2);
    c.embed(&["t1", "t3"]).unwrap();
    assert_eq!(s.hits(), 3, "t1 and t3 still cached");
    c.embed(&["t2"]).unwrap();
    assert_eq!(s.hits(), 4, "t2 was evicted");
}

#[test]
fn loopback_is_refused_without_the_operator_setting() {
    let s = Server::start(ok);
    for cfg_text in [
        "",
        "[memory]\nallow_loopback_embeddings = false\n",
        "[memory]\nallow_private_embeddings = true\n",
    ] {
        let cfg = Config::parse(cfg_text, "config.toml").unwrap();
        let err = HttpEmbedder::new(
            config(&s.base()),
            EmbedNetPolicy::from_config(&cfg),
            KeyRing::new("compat", Vec::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("allow_loopback_embeddings"), "{err}");
    }
    // The setting is not a key a workspace can set anywhere else, and unknown keys fail.
    assert!(Config::parse("[memory]\nallow_loopback = true\n", "config.toml").is_err());
    assert_eq!(s.hits(), 0);
}

#[test]
fn redirects_are_refused() {
    for to in [
        "http://10.0.0.1/v1/embeddings",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/v1/embeddings",
        "/v1/other",
    ] {
        let s =
            Server::start(move |_, _| (307, vec![("location".into(), to.into())], String::new()));
        let err = embedder(&s).embed(&["x"]).unwrap_err().to_string();
        assert!(err.contains("refused"), "{to}: {err}");
        assert_eq!(s.hits(), 1, "{to}: the redirect is not followed");
    }
}

#[test]
fn blocked_base_urls_are_refused_before_any_connection() {
    let s = Server::start(ok);
    let p = s.port;
    let urls: Vec<String> = [
        "http://127.0.0.1:{P}/v1",
        "http://127.0.0.2/v1",
        "http://localhost:{P}/v1",
        "http://LOCALHOST:{P}/v1",
        "http://localhost.:{P}/v1",
        "http://[::1]:{P}/v1",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:127.0.0.1]:{P}/v1",
        "http://[::ffff:7f00:1]/",
        "http://[::ffff:7f00:1]:{P}/v1",
        "http://[0:0:0:0:0:ffff:127.0.0.1]:{P}/",
        "http://[::127.0.0.1]:{P}/",
        "http://[64:ff9b::7f00:1]:{P}/",
        "http://[2002:7f00:1::]:{P}/",
        "http://2130706433/",
        "http://2130706433:{P}/v1",
        "http://0177.0.0.1/",
        "http://0177.0.0.1:{P}/v1",
        "http://017700000001:{P}/",
        "http://0x7f000001:{P}/",
        "http://0x7f.0.0.1:{P}/",
        "http://127.1:{P}/",
        "http://127.0.1:{P}/",
        "http://0:{P}/",
        "http://0.0.0.0:{P}/",
        "http://[::]:{P}/",
        "http://10.0.0.1/",
        "http://012.0.0.1/",
        "http://167772161/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://[::ffff:10.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://[fc00::1]/",
        "http://[fd12:3456::1]/",
        "http://[fe80::1]/",
        "http://169.254.169.254/",
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0251.0376.0251.0376/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/",
        "http://169.254.170.2/",
        "http://100.100.100.200/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/",
        "http://metadata/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://192.0.2.1/",
        "http://198.51.100.1/",
        "http://203.0.113.1/",
        "http://198.18.0.1/",
        "http://user:pass@example.com/",
        "http://example.com\\@127.0.0.1:{P}/",
        "file:///etc/passwd",
        "ftp://127.0.0.1:{P}/",
        "gopher://127.0.0.1:{P}/",
    ]
    .iter()
    .map(|u| u.replace("{P}", &p.to_string()))
    .collect();
    assert!(urls.len() >= 40);
    for u in &urls {
        match HttpEmbedder::new(
            config(u),
            EmbedNetPolicy::default(),
            KeyRing::new("compat", Vec::new()),
        ) {
            Ok(_) => panic!("{u} was accepted"),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("refused") || m.contains("invalid"), "{u}: {m}");
            }
        }
    }
    // Ollama's default (loopback) names the operator setting.
    let c = ProviderConfig::from_spec("ollama/nomic-embed-text", None).unwrap();
    let m = HttpEmbedder::new(
        c,
        EmbedNetPolicy::default(),
        KeyRing::new("ollama", Vec::new()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        m.contains("[memory] allow_loopback_embeddings = true"),
        "{m}"
    );
    assert_eq!(s.hits(), 0, "the local listener saw no connection");
}
