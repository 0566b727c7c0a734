//! The provider clients behind the SSRF guard: base URLs in every blocked class are refused
//! before any connection under the default policy (a real listener on loopback counts the
//! connections it gets: none), loopback ones reach that listener once the operator allows
//! loopback, and the proxy path vets the target itself. No test sends a packet off this
//! host: addresses outside loopback are only ever checked (no connection is attempted), or
//! sent to a fake proxy on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ureq::unversioned::resolver::Resolver;
use ureq::unversioned::transport::NextTimeout;

use super::http::{Call, HttpClient, LlmResolver, LOOPBACK_SETTING, PRIVATE_SETTING};
use super::models::{build_provider, lookup_provider};
use super::*;
use crate::config::{Config, LlmConfig};
use crate::net::{GuardingResolver, SsrfPolicy};

const REPLY: &str = r#"{"choices":[{"message":{"role":"assistant","content":"hi from loopback"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#;

/// Accepts connections on one port (127.0.0.1, and ::1 when this host has IPv6), counts
/// them, and answers each with [`REPLY`].
struct Listener {
    port: u16,
    v6: bool,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn read_head_and_body(s: &mut TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end - 4;
    while have < len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

fn serve(l: TcpListener, hits: Arc<AtomicUsize>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let _ = s.set_nonblocking(false);
                    read_head_and_body(&mut s);
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{REPLY}",
                        REPLY.len()
                    );
                    let _ = s.write_all(resp.as_bytes());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return,
            }
        }
    })
}

impl Listener {
    fn start() -> Listener {
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        // The same port on both loopbacks, so `localhost` reaches it whichever comes first.
        for _ in 0..20 {
            let v4 = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
            let port = v4.local_addr().unwrap().port();
            let v6 = match TcpListener::bind((Ipv6Addr::LOCALHOST, port)) {
                Ok(l) => Some(l),
                // No IPv6 on this host: the v6 cases only check the refusal.
                Err(_) if TcpListener::bind("[::1]:0").is_err() => None,
                // The port is taken on ::1: try another one.
                Err(_) => continue,
            };
            let mut threads = vec![serve(v4, hits.clone(), stop.clone())];
            let has_v6 = v6.is_some();
            if let Some(l) = v6 {
                threads.push(serve(l, hits.clone(), stop.clone()));
            }
            return Listener {
                port,
                v6: has_v6,
                hits,
                stop,
                threads,
            };
        }
        panic!("no port free on both 127.0.0.1 and ::1");
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn http(ssrf: SsrfPolicy) -> HttpConfig {
    HttpConfig {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
        stream_idle_timeout: Duration::from_secs(2),
        proxy_from_env: false,
        ssrf,
        ..HttpConfig::default()
    }
}

fn loopback_allowed() -> SsrfPolicy {
    SsrfPolicy {
        allow_loopback: true,
        ..SsrfPolicy::default()
    }
}

fn request() -> ChatRequest {
    ChatRequest {
        model: "local-model".into(),
        messages: vec![Message::User { text: "hi".into() }],
        max_tokens: 16,
        ..ChatRequest::default()
    }
}

/// One model call through the OpenAI-compatible client (`vllm`: no key needed).
fn chat(base: &str, cfg: HttpConfig) -> std::result::Result<ChatResponse, ProviderError> {
    let p = build_provider(lookup_provider("vllm").unwrap(), base, cfg);
    p.chat(&request(), &ApiKey::none(), &mut |_| {})
}

/// Base URLs that all name this host's loopback, `{port}` replaced by the listener's.
/// `true`: the URL connects over IPv6.
const LOOPBACK_FORMS: &[(&str, bool)] = &[
    ("http://127.0.0.1:{port}/v1", false),
    ("http://127.1:{port}/v1", false),
    ("http://2130706433:{port}/v1", false),
    ("http://0177.0.0.1:{port}/v1", false),
    ("http://0x7f.0.0.1:{port}/v1", false),
    ("http://[::1]:{port}/v1", true),
    ("http://[::ffff:127.0.0.1]:{port}/v1", true),
    ("http://localhost:{port}/v1", false),
    ("http://LocalHost.:{port}/v1", false),
];

#[test]
fn loopback_base_urls_are_refused_before_any_connection_by_default() {
    let l = Listener::start();
    for (form, _) in LOOPBACK_FORMS {
        let url = form.replace("{port}", &l.port.to_string());
        let t0 = Instant::now();
        let e = chat(&url, http(SsrfPolicy::default())).unwrap_err();
        assert_eq!(e.reason, FailoverReason::Blocked, "{url}: {e}");
        assert!(!e.reason.is_retryable() && !e.reason.rotates_key(), "{url}");
        assert_eq!(e.status, None, "{url}");
        assert!(
            e.message.starts_with("refused http://")
                && e.message.contains("/v1/chat/completions")
                && e.message.contains("loopback address")
                && e.message.contains(LOOPBACK_SETTING)
                && e.message.contains("config.toml")
                && e.message.contains("no request was sent"),
            "{url}: {}",
            e.message
        );
        assert!(t0.elapsed() < Duration::from_secs(2), "{url}: slow refusal");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(l.hits(), 0, "a refused base URL reached the listener");
}

#[test]
fn loopback_base_urls_reach_the_listener_when_the_operator_allows_loopback() {
    let l = Listener::start();
    let mut expected = 0;
    for (form, v6) in LOOPBACK_FORMS {
        let url = form.replace("{port}", &l.port.to_string());
        if *v6 && !l.v6 {
            eprintln!("{url}: skipped, this host has no IPv6 loopback");
            continue;
        }
        let r = chat(&url, http(loopback_allowed())).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(r.text, "hi from loopback", "{url}");
        expected += 1;
        assert_eq!(l.hits(), expected, "{url}: one connection per call");
    }
    // Private ranges stay refused when only loopback is allowed.
    let e = chat("http://10.1.2.3:8000/v1", http(loopback_allowed())).unwrap_err();
    assert_eq!(e.reason, FailoverReason::Blocked, "{e}");
}

/// Classes outside loopback: `(base URL, what the message says, allowed with private
/// ranges allowed)`. Checked with [`HttpClient::vet`] (which never connects), and through a
/// fake proxy on loopback (so even a regression could not send a packet elsewhere).
const OTHER_CLASSES: &[(&str, &str, bool)] = &[
    (
        "http://169.254.169.254/latest/meta-data/",
        "cloud metadata address), which is never allowed",
        false,
    ),
    (
        "http://[fd00:ec2::254]/latest/meta-data/",
        "cloud metadata address), which is never allowed",
        false,
    ),
    (
        "http://metadata.google.internal/computeMetadata/v1/",
        "metadata.google.internal is a cloud metadata host name, which is never allowed",
        false,
    ),
    (
        "http://169.254.10.1/v1",
        "link-local address), which is never allowed",
        false,
    ),
    (
        "http://0.0.0.0:8000/v1",
        "unspecified address), which is never allowed",
        false,
    ),
    ("http://10.0.0.5:8000/v1", PRIVATE_SETTING, true),
    ("http://012.0.0.5:8000/v1", PRIVATE_SETTING, true),
    ("http://172.16.3.4/v1", PRIVATE_SETTING, true),
    ("http://192.168.1.20:11434/v1", PRIVATE_SETTING, true),
    ("http://3232235796:11434/v1", PRIVATE_SETTING, true),
    ("http://100.64.0.1/v1", PRIVATE_SETTING, true),
    ("http://[fc00::1]:8000/v1", PRIVATE_SETTING, true),
    ("http://[fd12:3456::1]/v1", PRIVATE_SETTING, true),
    ("http://[::ffff:10.0.0.1]/v1", PRIVATE_SETTING, true),
    (
        "https://user:pass@api.example.com/v1",
        "carries userinfo",
        false,
    ),
    ("ftp://api.example.com/v1", "scheme", false),
];

fn call_for(key: &ApiKey) -> Call<'_> {
    Call {
        provider: "vllm",
        model: "local-model",
        key,
        deadline: None,
    }
}

#[test]
fn other_blocked_classes_are_refused_and_named() {
    let key = ApiKey::none();
    let strict = HttpClient::new(http(SsrfPolicy::default()));
    let everything = HttpClient::new(http(SsrfPolicy {
        allow_loopback: true,
        allow_private: true,
        ..SsrfPolicy::default()
    }));
    for (base, says, private) in OTHER_CLASSES {
        let url = format!("{base}/chat/completions");
        let e = strict.vet(&call_for(&key), &url).unwrap_err();
        assert_eq!(e.reason, FailoverReason::Blocked, "{base}: {e}");
        assert!(e.message.contains(says), "{base}: {}", e.message);
        assert!(
            !e.message.contains("pass@") && !e.message.contains(":pass"),
            "{base}: userinfo shown: {}",
            e.message
        );
        match everything.vet(&call_for(&key), &url) {
            Ok(()) => assert!(*private, "{base}: allowed with every setting on"),
            Err(e) => {
                assert!(!*private, "{base}: still refused with private allowed: {e}");
                assert_eq!(e.reason, FailoverReason::Blocked, "{base}: {e}");
            }
        }
    }
}

#[test]
fn through_a_proxy_the_target_is_vetted_before_the_proxy_sees_it() {
    // A fake proxy on loopback: the operator's, so reachable although loopback is not
    // allowed for targets. Every call below must be refused before it is contacted.
    let proxy = Listener::start();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let client = |policy: SsrfPolicy| {
        HttpClient::with_proxy(
            http(policy),
            Some(ureq::Proxy::new(&proxy_url).expect("proxy url")),
        )
    };
    let key = ApiKey::none();
    let strict = client(SsrfPolicy::default());
    let targets: Vec<&str> = OTHER_CLASSES
        .iter()
        .map(|(b, _, _)| *b)
        // Host names other than `localhost` would be looked up in DNS here.
        .filter(|b| !b.contains("metadata.google"))
        .chain([
            "http://localhost:9/v1",
            "http://127.0.0.1:9/v1",
            "http://[::1]:9/v1",
        ])
        .collect();
    for base in targets {
        let url = format!("{base}/chat/completions");
        let e = strict
            .post_json(
                &call_for(&key),
                &url,
                &[],
                &serde_json::json!({"model": "m"}),
            )
            .unwrap_err();
        assert_eq!(e.reason, FailoverReason::Blocked, "{base}: {e}");
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(proxy.hits(), 0, "a refused target reached the proxy");
}

fn resolve(r: &LlmResolver, url: &str) -> std::result::Result<Vec<SocketAddr>, String> {
    let uri: ureq::http::Uri = url.parse().unwrap();
    let config = ureq::Agent::config_builder().build();
    let timeout = NextTimeout {
        after: ureq::unversioned::transport::time::Duration::from_secs(5),
        reason: ureq::Timeout::Resolve,
        per_read: None,
        per_write: None,
    };
    r.resolve(&uri, &config, timeout)
        .map(|a| a.iter().copied().collect())
        .map_err(|e| e.to_string())
}

#[test]
fn the_operators_proxy_is_exempt_and_nothing_else() {
    let r = LlmResolver {
        guard: GuardingResolver::new(SsrfPolicy::default()),
        proxy: Some(("127.0.0.1".into(), Some(3128))),
    };
    // The proxy's own address resolves, although loopback is not allowed.
    assert_eq!(
        resolve(&r, "http://127.0.0.1:3128").unwrap(),
        vec!["127.0.0.1:3128".parse::<SocketAddr>().unwrap()]
    );
    // Another port, or another form of the same host, goes through the guard.
    for url in [
        "http://127.0.0.1:3129/",
        "http://127.0.0.2:3128/",
        "http://2130706433:3128/",
        "http://localhost:3128/",
    ] {
        let e = resolve(&r, url).unwrap_err();
        assert!(e.contains("loopback address"), "{url}: {e}");
    }
}

#[test]
fn redirects_are_classified_blocked_and_not_retried() {
    // The redirect itself is covered in testserver.rs; the reason is what failover reads.
    assert!(!FailoverReason::Blocked.is_retryable());
    assert!(!FailoverReason::Blocked.rotates_key());
    assert!(!FailoverReason::Blocked.needs_compaction());
    assert_eq!(FailoverReason::Blocked.as_str(), "blocked");
    assert_eq!(
        serde_json::to_string(&FailoverReason::Blocked).unwrap(),
        "\"blocked\""
    );
}

#[test]
fn a_failed_lookup_is_not_a_refusal() {
    use crate::net::SsrfError;
    let e = SsrfError::Resolve {
        host: "model.invalid".into(),
        message: "name or service not known".into(),
    };
    assert_eq!(classify::classify_refusal(&e), FailoverReason::Unknown);
    let key = ApiKey::none();
    let pe = super::http::refusal(&call_for(&key), "https://model.invalid/v1/x?k=secret", &e);
    assert_eq!(pe.reason, FailoverReason::Unknown);
    assert_eq!(
        pe.message,
        "could not reach https://model.invalid/v1/x: could not resolve model.invalid: name or service not known"
    );
}

#[test]
fn messages_name_the_url_without_query_or_userinfo() {
    let key = ApiKey::none();
    let strict = HttpClient::new(http(SsrfPolicy::default()));
    let e = strict
        .vet(
            &call_for(&key),
            "http://127.0.0.1:8080/v1/chat/completions?api_key=sk-secret-value",
        )
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "refused http://127.0.0.1:8080/v1/chat/completions: the host is 127.0.0.1 \
             (loopback address), which this host's operator does not allow; set \
             `{LOOPBACK_SETTING}` in config.toml for a local model server; no request was sent"
        )
    );
    assert_eq!(
        e.to_string(),
        format!("vllm/local-model: blocked: {}", e.message)
    );
}

#[test]
fn the_policy_comes_from_the_operators_llm_section() {
    assert_eq!(
        http::ssrf_policy(&LlmConfig::default()),
        SsrfPolicy::default()
    );
    assert_eq!(HttpConfig::default().ssrf, SsrfPolicy::default());
    let c = Config::parse("[llm]\nallow_loopback = true\n", "config.toml").unwrap();
    assert_eq!(http::ssrf_policy(&c.llm), loopback_allowed());
    let c = Config::parse("[llm]\nallow_private = true\n", "config.toml").unwrap();
    let p = http::ssrf_policy(&c.llm);
    assert!(p.allow_private && !p.allow_loopback);
    // The environment cannot widen it.
    let mut c = Config::parse("", "config.toml").unwrap();
    c.apply_env(|k| k.starts_with("BULKHEAD_LLM_").then(|| "1".to_string()))
        .unwrap();
    assert_eq!(c.llm, LlmConfig::default());
    // Unknown keys are errors naming the key.
    let e = Config::parse("[llm]\nallow_loopbak = true\n", "/s/config.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("allow_loopbak") && e.contains("/s/config.toml"),
        "{e}"
    );
    let e = Config::parse("[llm]\nallow_loopback = \"yes\"\n", "/s/config.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("allow_loopback"), "{e}");
}
