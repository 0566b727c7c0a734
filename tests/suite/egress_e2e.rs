//! Controlled egress end to end, as an operator and a tenant would use it: `bulkhead
//! workspace net` sets the policy, `bulkhead exec` runs a client in the sandbox, the request
//! goes through the proxy endpoint inside the sandbox to the controller's proxy, which checks
//! the allowlist, resolves through the SSRF guard and relays to an origin the test runs on the
//! host's loopback (`[network] allow_loopback = true` and `resolve = ["pkg.test:127.0.0.1"]`
//! in the operator's config let the test name it). Other hosts are denied with a message and
//! an audit line; `none` leaves the sandbox with nowhere to go.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use bulkhead_tests::{sandbox_or_skip, text, TestEnv};
use serde_json::Value;

/// An HTTP origin on 127.0.0.1 answering every request with `hello from origin <path>`;
/// returns its port and a request counter.
fn origin() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                    break;
                }
            }
            let body = format!("hello from origin {path}");
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, hits)
}

/// A python3 client fetching `url` with the environment's proxy settings (urllib reads
/// HTTP_PROXY); prints `STATUS <code>` and the body, or `ERROR <reason>`.
const FETCH: &str = r#"
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
        print("STATUS", r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print("STATUS", e.code); print(e.read().decode())
except Exception as e:
    print("ERROR", type(e).__name__, e)
"#;

fn fetch(env: &TestEnv, ws: &str, url: &str) -> String {
    let out = env.exec(ws, &["--timeout", "30"], &["python3", "-c", FETCH, url]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn allowlisted_hosts_are_reached_through_the_proxy_and_nothing_else() {
    if !sandbox_or_skip("allowlisted_hosts_are_reached_through_the_proxy_and_nothing_else") {
        return;
    }
    let env = TestEnv::new();
    env.ensure_config();
    let cfg = env.state().join("config.toml");
    let base = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        format!(
            "{base}\n[network]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\", \"other.test:127.0.0.1\", \"private.test:10.9.8.7\"]\n"
        ),
    )
    .unwrap();
    env.create("acme");
    let (port, hits) = origin();

    // Default: no network. The proxy endpoint does not exist and the host's loopback
    // listener is out of reach (the sandbox has its own network namespace).
    let r = fetch(&env, "acme", &format!("http://pkg.test:{port}/a"));
    assert!(r.starts_with("ERROR"), "{r}");
    let r = fetch(&env, "acme", &format!("http://127.0.0.1:{port}/direct"));
    assert!(r.starts_with("ERROR"), "{r}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    let out = env.bulkhead(&[
        "workspace",
        "net",
        "acme",
        "allow",
        &format!("pkg.test:{port}"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Allowed: through the proxy to the origin.
    let r = fetch(&env, "acme", &format!("http://pkg.test:{port}/hello"));
    assert!(
        r.contains("STATUS 200") && r.contains("hello from origin /hello"),
        "{r}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    // Another host (same address, not allowlisted): 403 with the reason.
    let r = fetch(&env, "acme", &format!("http://other.test:{port}/x"));
    assert!(r.contains("STATUS 403") && r.contains("other.test"), "{r}");
    // A host resolving to a private address: refused, never dialed.
    let out = env.bulkhead(&["workspace", "net", "acme", "allow", "private.test"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = fetch(&env, "acme", "http://private.test/x");
    assert!(r.contains("STATUS 403") && r.contains("10.9.8.7"), "{r}");
    // A direct connection that ignores the proxy still goes nowhere.
    let r = fetch(&env, "acme", &format!("http://127.0.0.1:{port}/direct"));
    assert!(
        r.contains("STATUS 403") || r.starts_with("ERROR"),
        "via the proxy 127.0.0.1 is not allowlisted; {r}"
    );
    let direct = env.exec(
        "acme",
        &[],
        &[
            "python3",
            "-c",
            &format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"),
        ],
    );
    assert!(
        !direct.status.success(),
        "a direct connect reached the host"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "only the allowed request");

    // The audit log has every decision.
    let out = env.bulkhead(&["--json", "workspace", "net", "acme", "log"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |host: &str, decision: &str| {
        lines
            .iter()
            .any(|l| l["host"] == host && l["decision"] == decision)
    };
    assert!(find("pkg.test", "allowed"), "{lines:?}");
    assert!(find("other.test", "denied"), "{lines:?}");
    assert!(find("private.test", "denied"), "{lines:?}");

    // Back to none: the endpoint is gone again.
    let out = env.bulkhead(&["workspace", "net", "acme", "none"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = fetch(&env, "acme", &format!("http://pkg.test:{port}/again"));
    assert!(r.starts_with("ERROR"), "{r}");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
