//! The egress proxy through the library API over real loopback TCP, and `bulkhead workspace
//! net` through the CLI.
//!
//! Every origin is a listener this test starts on 127.0.0.1; the operator settings permit
//! loopback and `resolve` maps test names (`pkg.test`) to it. No packet leaves loopback: names
//! that resolve to other addresses are refused before any connection, and the connector every
//! test uses records each address dialed and refuses anything that is not loopback, so a bug
//! would fail the test instead of sending traffic.

use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bulkhead::error::exit;
use bulkhead::net::egress::{NetworkPolicy, OperatorNetwork};
use bulkhead::net::proxy::{
    read_audit_log, serve_channel, serve_connection, AuditLog, ConnRecord, Decision, ProxyContext,
    ProxyTimeouts,
};
use bulkhead::{Platform, PlatformConfig};
use bulkhead_tests::{ok_json, text, TestEnv};
use serde_json::Value;

const LOOP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------------------------------------
// Origins
// ---------------------------------------------------------------------------------------------

/// A TCP echo server on 127.0.0.1.
fn echo_origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 16384];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

/// An HTTP server on 127.0.0.1: `GET /bytes/N` answers N bytes, anything else a short text;
/// every request head received is kept.
struct HttpOrigin {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

fn http_origin() -> HttpOrigin {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let seen = seen.clone();
            std::thread::spawn(move || {
                let mut s = s;
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
                    match s.read(&mut b) {
                        Ok(1) => head.push(b[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("").to_string();
                seen.lock().unwrap().push(head);
                if let Some(n) = path.strip_prefix("/bytes/") {
                    let n: usize = n.parse().unwrap_or(0);
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                    );
                    let chunk = vec![b'x'; 65536];
                    let mut left = n;
                    while left > 0 {
                        let k = left.min(chunk.len());
                        if s.write_all(&chunk[..k]).is_err() {
                            return;
                        }
                        left -= k;
                    }
                } else {
                    let body = format!("hello from origin {path}");
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    HttpOrigin { port, heads }
}

// ---------------------------------------------------------------------------------------------
// The proxy under test
// ---------------------------------------------------------------------------------------------

/// Every address the proxy dialed; anything not on loopback is refused (and recorded).
type Dials = Arc<Mutex<Vec<SocketAddr>>>;

fn recording_connector(
    dials: Dials,
) -> impl Fn(SocketAddr, Duration) -> std::io::Result<TcpStream> + Send + Sync + 'static {
    move |addr: SocketAddr, timeout: Duration| {
        dials.lock().unwrap().push(addr);
        if !addr.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "test connector: refusing a non-loopback address",
            ));
        }
        TcpStream::connect_timeout(&addr, timeout)
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    audit: std::path::PathBuf,
    ctx: Arc<ProxyContext>,
    dials: Dials,
    addr: SocketAddr,
    records: mpsc::Receiver<ConnRecord>,
}

fn operator(allow_loopback: bool, resolve: &[&str]) -> OperatorNetwork {
    OperatorNetwork {
        allow_loopback,
        resolve: OperatorNetwork::parse_resolve(resolve, "resolve").unwrap(),
        ..OperatorNetwork::default()
    }
}

/// A proxy listener on 127.0.0.1 serving with `ctx` (accept → `serve_connection`).
fn harness_with(
    allow: &[String],
    op: OperatorNetwork,
    tweak: impl FnOnce(ProxyContext) -> ProxyContext,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("net-audit.log");
    let dials: Dials = Arc::default();
    let net = NetworkPolicy::allowing(allow).unwrap();
    let ctx = ProxyContext::new("acme", &net, &op)
        .unwrap()
        .with_audit_log(AuditLog::open(&audit).unwrap())
        .with_connector(recording_connector(dials.clone()));
    let ctx = Arc::new(tweak(ctx));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, records) = mpsc::channel();
    let c = ctx.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let c = c.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tx.send(serve_connection(s, &c));
            });
        }
    });
    Harness {
        _dir: dir,
        audit,
        ctx,
        dials,
        addr,
        records,
    }
}

fn harness(allow: &[String]) -> Harness {
    harness_with(allow, operator(true, &["pkg.test:127.0.0.1"]), |c| c)
}

impl Harness {
    fn client(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// Sends `req` and reads the whole answer (the proxy closes after it).
    fn exchange(&self, req: &[u8]) -> String {
        let mut s = self.client();
        s.write_all(req).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    fn record(&self) -> ConnRecord {
        self.records
            .recv_timeout(Duration::from_secs(20))
            .expect("a connection record")
    }

    fn dialed(&self) -> Vec<SocketAddr> {
        self.dials.lock().unwrap().clone()
    }
}

/// Reads a response head off `s` (byte by byte, so nothing after it is consumed).
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn connect_tunnel(h: &Harness, target: &str) -> (TcpStream, String) {
    let mut s = h.client();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let head = read_head(&mut s);
    (s, head)
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn connect_tunnel_relays_bytes_both_ways() {
    let port = echo_origin();
    let h = harness(&[format!("pkg.test:{port}")]);
    let (mut s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    // Bytes sent right behind the CONNECT head must not be lost: they are the client's.
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut w = s.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&p).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echo differs");
    let r = h.record();
    assert_eq!(r.decision, Decision::Allowed, "{r:?}");
    assert_eq!(
        (r.method.as_str(), r.host.as_str(), r.port),
        ("CONNECT", "pkg.test", port)
    );
    assert_eq!((r.bytes_up, r.bytes_down), (200_000, 200_000));
    assert_eq!(
        r.addr.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(h.dialed(), [SocketAddr::new(LOOP, port)]);
    let log = read_audit_log(&h.audit, None).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0], r);
    let t = h.ctx.counters().totals();
    assert_eq!(
        (t.connections, t.allowed, t.bytes_up, t.bytes_down),
        (1, 1, 200_000, 200_000)
    );
}

#[test]
fn absolute_form_get_is_forwarded_in_origin_form() {
    let o = http_origin();
    let h = harness(&[format!("pkg.test:{}", o.port)]);
    let resp = h.exchange(
        format!(
            "GET http://pkg.test:{}/x?y=1 HTTP/1.1\r\nHost: elsewhere.test\r\nUser-Agent: t\r\n\
             Proxy-Authorization: Basic dXNlcjpwYXNz\r\nProxy-Connection: keep-alive\r\n\r\n",
            o.port
        )
        .as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
    assert!(resp.ends_with("hello from origin /x?y=1"), "{resp}");
    let head = o.heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: pkg.test:{}\r\n", o.port)),
        "{head}"
    );
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    assert!(head.contains("\r\nUser-Agent: t\r\n"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("proxy-"), "{head}");
    assert!(!head.contains("elsewhere.test"), "{head}");
    let r = h.record();
    assert_eq!(r.decision, Decision::Allowed, "{r:?}");
    assert_eq!((r.method.as_str(), r.status), ("GET", Some(200)));
    assert_eq!(r.bytes_down as usize, resp.len());
}

#[test]
fn a_host_not_allowed_gets_403_and_a_denied_audit_line() {
    let port = echo_origin();
    let h = harness_with(
        &[format!("pkg.test:{port}")],
        operator(true, &["pkg.test:127.0.0.1", "other.test:127.0.0.1"]),
        |c| c,
    );
    let resp = h.exchange(b"CONNECT other.test:443 HTTP/1.1\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{resp}");
    assert!(
        resp.contains("host other.test is not in this workspace's allowlist")
            && resp.contains("bulkhead workspace net acme allow other.test"),
        "{resp}"
    );
    let resp = h.exchange(format!("GET http://other.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    assert!(resp.contains(&format!("allow other.test:{port}")), "{resp}");
    // Another port of an allowed host is another entry.
    let resp = h.exchange(b"CONNECT pkg.test:443 HTTP/1.1\r\n\r\n");
    assert!(
        resp.contains("port 443 of host pkg.test is not in this workspace's allowlist"),
        "{resp}"
    );
    for _ in 0..3 {
        let r = h.record();
        assert_eq!(r.decision, Decision::Denied, "{r:?}");
        assert!(
            r.reason.as_deref().unwrap().starts_with("not_allowed"),
            "{r:?}"
        );
    }
    let log = read_audit_log(&h.audit, None).unwrap();
    assert_eq!(log.len(), 3);
    assert!(log
        .iter()
        .all(|r| r.decision == Decision::Denied && r.bytes_up == 0));
    // Each connection is logged when it ends, after its answer: the three lines may land
    // in any order.
    let mut hosts: Vec<&str> = log.iter().map(|r| r.host.as_str()).collect();
    hosts.sort();
    assert_eq!(hosts, ["other.test", "other.test", "pkg.test"]);
    assert!(h.dialed().is_empty(), "dialed {:?}", h.dialed());
    let raw = std::fs::read_to_string(&h.audit).unwrap();
    let first: Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert_eq!(first["decision"], "denied");
    for k in [
        "ts",
        "workspace",
        "host",
        "port",
        "method",
        "reason",
        "bytes_up",
        "bytes_down",
        "duration_ms",
    ] {
        assert!(first.get(k).is_some(), "{k} missing in {first}");
    }
}

#[test]
fn a_name_resolving_to_a_private_address_is_refused_before_any_connection() {
    let port = echo_origin();
    let h = harness_with(
        &[format!("private.test:{port}"), format!("mixed.test:{port}")],
        operator(
            true,
            &[
                "private.test:10.0.0.1",
                "mixed.test:127.0.0.1",
                "mixed.test:10.0.0.1",
            ],
        ),
        |c| c,
    );
    let resp = h.exchange(format!("CONNECT private.test:{port} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    assert!(
        resp.contains("private.test resolves to 10.0.0.1, a private address"),
        "{resp}"
    );
    // One refused address refuses the host, even beside a permitted one.
    let resp = h.exchange(format!("GET http://mixed.test:{port}/ HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.contains("mixed.test resolves to 10.0.0.1"), "{resp}");
    for _ in 0..2 {
        let r = h.record();
        assert_eq!(r.decision, Decision::Denied);
        assert!(r.reason.unwrap().starts_with("blocked_address"));
    }
    assert!(h.dialed().is_empty(), "dialed {:?}", h.dialed());
}

#[test]
fn loopback_is_refused_unless_the_operator_allows_it() {
    let port = echo_origin();
    let allow = [
        format!("pkg.test:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
    ];
    let h = harness_with(&allow, operator(false, &["pkg.test:127.0.0.1"]), |c| c);
    let resp = h.exchange(format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 403 "), "{resp}");
    assert!(
        resp.contains("pkg.test resolves to 127.0.0.1, a loopback address"),
        "{resp}"
    );
    // The same address in every form the parser reads.
    for target in [
        format!("127.0.0.1:{port}"),
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let resp = h.exchange(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(resp.starts_with("HTTP/1.1 403 "), "{target}: {resp}");
    }
    assert!(h.dialed().is_empty(), "dialed {:?}", h.dialed());
}

#[test]
fn a_rebinding_resolver_cannot_move_the_dialed_address() {
    let port = echo_origin();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    // First answer: loopback (allowed here). Every later answer: a private address.
    let rebinding = move |_name: &str, _port: u16| -> Result<Vec<IpAddr>, String> {
        if c.fetch_add(1, Ordering::SeqCst) == 0 {
            Ok(vec![LOOP])
        } else {
            Ok(vec!["10.0.0.1".parse().unwrap()])
        }
    };
    let h = harness_with(
        &[format!("rebind.test:{port}")],
        operator(true, &[]),
        |ctx| ctx.with_resolver(rebinding),
    );
    let (mut s, head) = connect_tunnel(&h, &format!("rebind.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    s.write_all(b"still loopback?").unwrap();
    let mut buf = [0u8; 15];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still loopback?");
    drop(s);
    let r = h.record();
    assert_eq!(
        r.addr.as_deref(),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "resolved more than once");
    assert_eq!(h.dialed(), [SocketAddr::new(LOOP, port)]);
    // The next connection resolves afresh and is vetted afresh: refused, nothing dialed.
    let resp = h.exchange(format!("CONNECT rebind.test:{port} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(
        resp.contains("resolves to 10.0.0.1, a private address"),
        "{resp}"
    );
    assert_eq!(h.dialed().len(), 1);
}

#[test]
fn hostile_requests_get_400_or_408() {
    let port = echo_origin();
    let h = harness_with(
        &[format!("pkg.test:{port}")],
        operator(true, &["pkg.test:127.0.0.1"]),
        |c| {
            c.with_timeouts(ProxyTimeouts {
                head: Duration::from_millis(500),
                ..ProxyTimeouts::default()
            })
        },
    );
    let mut huge = format!("GET http://pkg.test:{port}/ HTTP/1.1\r\n").into_bytes();
    huge.extend(vec![b'a'; 20_000]);
    let many = format!(
        "GET http://pkg.test:{port}/ HTTP/1.1\r\n{}\r\n",
        "X-A: b\r\n".repeat(500)
    );
    for (req, says) in [
        (huge, "larger than 16384"),
        (many.into_bytes(), "header lines"),
        (
            format!("GET http://pkg.test:{port}/ HTTP/1.1\n\n").into_bytes(),
            "does not end",
        ),
        (
            format!("CONNECT user@pkg.test:{port} HTTP/1.1\r\n\r\n").into_bytes(),
            "userinfo",
        ),
        (
            format!("GET http://u:p@pkg.test:{port}/ HTTP/1.1\r\n\r\n").into_bytes(),
            "userinfo",
        ),
        (
            b"GET gopher://pkg.test:70/ HTTP/1.1\r\n\r\n".to_vec(),
            "unsupported scheme",
        ),
        (
            b"GET file:///etc/passwd HTTP/1.1\r\n\r\n".to_vec(),
            "unsupported scheme",
        ),
        (b"GET /etc/passwd HTTP/1.1\r\n\r\n".to_vec(), "absolute URL"),
        (
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            "bad request",
        ),
        (
            b"CONNECT [fe80::1%25lo]:80 HTTP/1.1\r\n\r\n".to_vec(),
            "bad request",
        ),
    ] {
        let resp = h.exchange(&req);
        assert!(
            resp.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "{says}: {resp}"
        );
        assert!(resp.contains(says), "{says}: {resp}");
        let r = h.record();
        assert_eq!(r.decision, Decision::Denied);
        assert!(r.reason.unwrap().starts_with("malformed"));
    }
    // A head that never ends: 408 after the head timeout.
    let mut s = h.client();
    s.write_all(b"CONNECT pkg.test:443 HTTP/1.1\r\n").unwrap();
    let t = Instant::now();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5));
    h.record();
    assert!(h.dialed().is_empty());
}

#[test]
fn the_connection_cap_answers_503() {
    let port = echo_origin();
    let mut net = NetworkPolicy::allowing(&[format!("pkg.test:{port}")]).unwrap();
    net.max_connections = Some(1);
    let h = harness_with(
        &[format!("pkg.test:{port}")],
        operator(true, &["pkg.test:127.0.0.1"]),
        |c| {
            c.set_policy(&net).unwrap();
            c
        },
    );
    let (held, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let resp = h.exchange(format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    assert!(resp.contains("1 connections open, its limit"), "{resp}");
    let r = h.record();
    assert_eq!(r.decision, Decision::Denied);
    assert!(r.reason.unwrap().starts_with("connection_limit"));
    drop(held);
    h.record();
    let (_s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "after a close: {head}");
}

#[test]
fn idle_tunnels_are_closed() {
    let port = echo_origin();
    let h = harness_with(
        &[format!("pkg.test:{port}")],
        operator(true, &["pkg.test:127.0.0.1"]),
        |c| {
            c.with_timeouts(ProxyTimeouts {
                idle: Duration::from_millis(400),
                ..ProxyTimeouts::default()
            })
        },
    );
    let (mut s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let t = Instant::now();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let r = h.record();
    assert_eq!(r.decision, Decision::Allowed);
    assert!(r.reason.unwrap().contains("idle"));
}

#[test]
fn the_bandwidth_cap_paces_a_download() {
    let o = http_origin();
    let mut net = NetworkPolicy::allowing(&[format!("pkg.test:{}", o.port)]).unwrap();
    net.bandwidth_bytes_per_sec = Some(256 * 1024);
    let h = harness_with(
        &net.allow.clone(),
        operator(true, &["pkg.test:127.0.0.1"]),
        |c| {
            c.set_policy(&net).unwrap();
            c
        },
    );
    let t = Instant::now();
    let resp = h.exchange(
        format!(
            "GET http://pkg.test:{}/bytes/524288 HTTP/1.1\r\n\r\n",
            o.port
        )
        .as_bytes(),
    );
    let took = t.elapsed();
    assert!(resp.len() > 524_288, "{}", resp.len());
    // 512 KiB at 256 KiB/s with 100 ms of burst: about 1.9 s.
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[test]
fn serve_channel_serves_passed_fds_and_stops_when_the_channel_closes() {
    let port = echo_origin();
    let dir = tempfile::tempdir().unwrap();
    let mut net = NetworkPolicy::allowing(&[format!("pkg.test:{port}")]).unwrap();
    net.max_connections = Some(1);
    let dials: Dials = Arc::default();
    let ctx = Arc::new(
        ProxyContext::new("acme", &net, &operator(true, &["pkg.test:127.0.0.1"]))
            .unwrap()
            .with_audit_log(AuditLog::open(dir.path().join("a.log")).unwrap())
            .with_connector(recording_connector(dials.clone())),
    );
    // Stand-in for the worker's channel: fds arrive on an mpsc queue.
    let (tx, rx) = mpsc::channel::<OwnedFd>();
    let chan: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let c = ctx.clone();
    let server = std::thread::spawn(move || {
        serve_channel(chan, c, move |_chan: &OwnedFd| Ok(rx.recv().ok()))
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // The request is written before the fd is passed, as a client that does not wait would.
    let pass = |tx: &mpsc::Sender<OwnedFd>, req: &str| -> TcpStream {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client.write_all(req.as_bytes()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        tx.send(OwnedFd::from(accepted)).unwrap();
        client
    };
    let req = format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n");
    // Something that is not a socket is closed, and the loop goes on.
    tx.send(std::fs::File::open("/dev/null").unwrap().into())
        .unwrap();
    let mut a = pass(&tx, &req);
    assert!(read_head(&mut a).starts_with("HTTP/1.1 200 "));
    a.write_all(b"hi").unwrap();
    let mut two = [0u8; 2];
    a.read_exact(&mut two).unwrap();
    assert_eq!(&two, b"hi");
    // Over the cap: 503.
    let mut b = pass(&tx, &req);
    let mut out = String::new();
    let _ = b.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    drop(a);
    drop(tx);
    server.join().unwrap().unwrap();
    assert_eq!(dials.lock().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// CLI and persistence
// ---------------------------------------------------------------------------------------------

#[test]
fn workspace_net_commands_round_trip_through_the_config() {
    let env = TestEnv::new();
    env.create("acme");
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "show"]));
    assert_eq!(v["network"], "none");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["max_connections"], 32);
    assert_eq!(v["totals"]["connections"], 0);

    let v = ok_json(&env.bulkhead(&[
        "--json",
        "workspace",
        "net",
        "acme",
        "allow",
        "PyPI.org",
        "*.pythonhosted.org",
        "github.com:443",
    ]));
    assert_eq!(
        v["added"],
        serde_json::json!(["pypi.org", "*.pythonhosted.org", "github.com:443"])
    );
    let file: Value = serde_json::from_slice(
        &std::fs::read(env.state().join("workspaces/acme/workspace.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        file["network"],
        serde_json::json!({"allow": ["pypi.org", "*.pythonhosted.org", "github.com:443"]})
    );
    // Allowing again is a note, not an error.
    let out = env.bulkhead(&["workspace", "net", "acme", "allow", "pypi.org"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("already allowed"),
        "{}",
        text(&out.stderr)
    );

    // Removing something absent: success with a note. A host still covered by another
    // pattern: exit 1 (the removals are kept), the covering pattern named.
    let out = env.bulkhead(&[
        "--json",
        "workspace",
        "net",
        "acme",
        "deny",
        "github.com:443",
        "nothere.com",
        "files.pythonhosted.org",
    ]);
    assert_eq!(
        out.status.code(),
        Some(exit::FAILURE),
        "{}",
        text(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"], serde_json::json!(["github.com:443"]));
    assert_eq!(
        v["not_present"],
        serde_json::json!(["nothere.com", "files.pythonhosted.org"])
    );
    assert_eq!(
        v["still_allowed_by"]["files.pythonhosted.org"],
        serde_json::json!(["*.pythonhosted.org"])
    );
    assert_eq!(
        v["allow"],
        serde_json::json!(["pypi.org", "*.pythonhosted.org"])
    );
    let out = env.bulkhead(&["workspace", "net", "acme", "deny", "nothere.com"]);
    assert_eq!(out.status.code(), Some(exit::OK));
    assert!(text(&out.stderr).contains("was not in the allowlist"));
    let out = env.bulkhead(&["workspace", "net", "acme", "deny", "files.pythonhosted.org"]);
    assert_eq!(out.status.code(), Some(exit::FAILURE));
    let err = text(&out.stderr);
    assert!(
        err.contains("files.pythonhosted.org is still allowed by *.pythonhosted.org")
            && err.contains("bulkhead workspace net acme deny '*.pythonhosted.org'"),
        "{err}"
    );

    // Invalid patterns: exit 2, a message that says how, nothing changed.
    let out = env.bulkhead(&[
        "workspace",
        "net",
        "acme",
        "allow",
        "ok.example.com",
        "https://x.com/",
    ]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let err = text(&out.stderr);
    assert!(
        err.contains("https://x.com/") && err.contains("no scheme") && err.contains("examples:"),
        "{err}"
    );
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "show"]));
    assert_eq!(
        v["allow"],
        serde_json::json!(["pypi.org", "*.pythonhosted.org"])
    );
    let out = env.bulkhead(&["--json", "workspace", "net", "acme", "allow", "*.com"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let e: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["exit_code"], exit::USAGE);

    // No such workspace: exit 3.
    let out = env.bulkhead(&["workspace", "net", "nope", "show"]);
    assert_eq!(out.status.code(), Some(exit::NOT_FOUND));

    // Caps.
    let v = ok_json(&env.bulkhead(&[
        "--json",
        "workspace",
        "net",
        "acme",
        "limits",
        "--max-connections",
        "8",
        "--bandwidth",
        "1M",
    ]));
    assert_eq!(v["max_connections"], 8);
    assert_eq!(v["bandwidth_bytes_per_sec"], 1 << 20);
    let out = env.bulkhead(&[
        "workspace",
        "net",
        "acme",
        "limits",
        "--max-connections",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let out = env.bulkhead(&["workspace", "net", "acme", "limits"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));

    // Text output.
    let out = env.bulkhead(&["workspace", "net", "acme", "show"]);
    let t = text(&out.stdout);
    assert!(
        t.contains("*.pythonhosted.org") && t.contains("max connections: 8"),
        "{t}"
    );

    // Back to none: the caps stay, the allowlist goes.
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "none"]));
    assert_eq!(v["network"], "none");
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "show"]));
    assert_eq!(v["enabled"], false);
    assert_eq!(v["max_connections"], 8);
    // `workspace show` and other commands still read the file.
    assert!(env
        .bulkhead(&["workspace", "show", "acme"])
        .status
        .success());
}

#[test]
fn a_platform_proxy_follows_cli_changes_and_the_log_shows_them() {
    let env = TestEnv::new();
    let port = echo_origin();
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\"]\ndeny = [\"evil.test\"]\n",
    )
    .unwrap();
    env.create("acme");
    let platform = Platform::open(PlatformConfig {
        state_dir: env.state(),
        launcher: None,
    })
    .unwrap();
    let ctx = ProxyContext::for_workspace(&platform, "acme").unwrap();
    let serve = |req: &str| -> (String, ConnRecord) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(req.as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let rec = serve_connection(s, &ctx);
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        (out, rec)
    };
    let req = format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n");
    let (out, _) = serve(&req);
    assert!(
        out.contains("workspace acme has no network access"),
        "{out}"
    );
    assert!(out.contains(&format!("allow pkg.test:{port}")), "{out}");
    // The operator allows it: the next connection goes through, no restart.
    let pattern = format!("pkg.test:{port}");
    assert!(env
        .bulkhead(&["workspace", "net", "acme", "allow", &pattern])
        .status
        .success());
    let (out, rec) = serve(&req);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    assert_eq!(rec.decision, Decision::Allowed);
    // The operator's deny wins over any allowlist, and `allow` says so.
    let out = env.bulkhead(&["workspace", "net", "acme", "allow", "evil.test"]);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("deny rules"),
        "{}",
        text(&out.stderr)
    );
    let (out, _) = serve("CONNECT evil.test:443 HTTP/1.1\r\n\r\n");
    assert!(
        out.contains("refused by the operator's [network] deny rules"),
        "{out}"
    );

    let lines = text(
        &env.bulkhead(&["--json", "workspace", "net", "acme", "log"])
            .stdout,
    );
    let recs: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 3, "{lines}");
    let decisions: Vec<&str> = recs
        .iter()
        .map(|r| r["decision"].as_str().unwrap())
        .collect();
    assert_eq!(decisions, ["denied", "allowed", "denied"]);
    let last = text(
        &env.bulkhead(&["workspace", "net", "acme", "log", "--limit", "1"])
            .stdout,
    );
    assert_eq!(last.lines().count(), 1);
    assert!(last.contains("CONNECT evil.test:443 denied"), "{last}");
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "show"]));
    assert_eq!(v["totals"]["connections"], 3);
    assert_eq!(v["totals"]["denied"], 2);
    assert_eq!(v["operator"]["deny"], serde_json::json!(["evil.test"]));
    // The audit log lives beside files/, not in it.
    let audit = env.state().join("workspaces/acme/net-audit.log");
    assert!(audit.exists());
    assert!(!env.files("acme").join("net-audit.log").exists());

    // A bad [network] setting is refused, naming the key and the file.
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\ndeny = [\"http://x\"]\n",
    )
    .unwrap();
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let err = text(&out.stderr);
    assert!(
        err.contains("network.deny") && err.contains("config.toml"),
        "{err}"
    );
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\nresolve = [\"pkg.test\"]\n",
    )
    .unwrap();
    let err = text(&env.bulkhead(&["workspace", "list"]).stderr);
    assert!(err.contains("network.resolve"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Review findings
// ---------------------------------------------------------------------------------------------

/// An operator's deny of an IPv4 address holds for its IPv6 forms: a mapped or NAT64
/// literal the tenant allowlisted, and a name whose answer is such a form. Nothing is dialed.
#[test]
fn ipv6_forms_of_a_denied_address_are_refused() {
    let op = OperatorNetwork {
        deny: vec!["10.0.0.5".into()],
        allow_private: true,
        allow_loopback: true,
        resolve: OperatorNetwork::parse_resolve(
            &["v6.test:[::ffff:10.0.0.5]", "nat.test:[64:ff9b::a00:5]"],
            "resolve",
        )
        .unwrap(),
        ..OperatorNetwork::default()
    };
    let h = harness_with(
        &[
            "[::ffff:10.0.0.5]".into(),
            "[64:ff9b::a00:5]".into(),
            "v6.test".into(),
            "nat.test".into(),
        ],
        op,
        |c| c,
    );
    for target in [
        "[::ffff:10.0.0.5]:443",
        "[::ffff:a00:5]:443",
        "[64:ff9b::a00:5]:443",
        "v6.test:443",
        "nat.test:443",
    ] {
        let resp = h.exchange(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(resp.starts_with("HTTP/1.1 403 "), "{target}: {resp}");
        assert!(resp.contains("deny rules"), "{target}: {resp}");
        let r = h.record();
        assert!(
            r.reason.as_deref().unwrap().starts_with("operator_deny"),
            "{target}: {r:?}"
        );
    }
    assert!(h.dialed().is_empty(), "dialed {:?}", h.dialed());
}

/// An IPv6 form of an IPv4 address is dialed as the IPv4 address (what the rules saw).
#[test]
fn a_mapped_literal_is_dialed_in_ipv4_form() {
    let port = echo_origin();
    let h = harness(&[format!("[::ffff:127.0.0.1]:{port}")]);
    for target in [
        format!("[::ffff:127.0.0.1]:{port}"),
        format!("127.0.0.1:{port}"),
    ] {
        let (mut s, head) = connect_tunnel(&h, &target);
        assert!(head.starts_with("HTTP/1.1 200 "), "{target}: {head}");
        s.write_all(b"v4?").unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).unwrap();
        drop(s);
        let r = h.record();
        assert_eq!(r.addr, Some(format!("127.0.0.1:{port}")), "{r:?}");
    }
    assert_eq!(h.dialed(), [SocketAddr::new(LOOP, port); 2]);
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`, from
/// /proc/self/task/*/stat (USER_HZ = 100 ticks a second). Also how many there are.
fn threads_cpu(prefix: &str) -> (Duration, usize) {
    let mut ticks = 0u64;
    let mut n = 0;
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        n += 1;
    }
    (Duration::from_millis(ticks * 10), n)
}

/// Attack: the worker keeps a copy of a passed socket and sets O_NONBLOCK on its file
/// description. The relay must neither spin on EAGAIN (CPU) nor fail (a write that would
/// block is a wait, not an error).
#[test]
fn a_client_socket_set_nonblocking_behind_the_proxys_back_neither_spins_nor_breaks() {
    let port = echo_origin();
    let dials: Dials = Arc::default();
    let net = NetworkPolicy::allowing(&[format!("pkg.test:{port}")]).unwrap();
    let ctx = Arc::new(
        ProxyContext::new("acme", &net, &operator(true, &["pkg.test:127.0.0.1"]))
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (served, _) = l.accept().unwrap();
    // The worker's copy: the same open file description.
    let worker_copy = served.try_clone().unwrap();
    const NAME: &str = "egress-nb-relay";
    let c = ctx.clone();
    let server = std::thread::Builder::new()
        .name(NAME.into())
        .spawn(move || serve_connection(served, &c))
        .unwrap();
    write!(client, "CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    let head = read_head(&mut client);
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    worker_copy.set_nonblocking(true).unwrap();

    // Idle for a second: the relay waits in poll, it does not spin. (Its second thread
    // starts right after the 200 is sent: wait for it.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads_cpu(NAME).1 < 2 {
        assert!(
            Instant::now() < deadline,
            "the relay's two threads were not found"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (before, _) = threads_cpu(NAME);
    std::thread::sleep(Duration::from_secs(1));
    let (after, _) = threads_cpu(NAME);
    let spent = after.saturating_sub(before);
    assert!(
        spent < Duration::from_millis(200),
        "the idle relay used {spent:?} of CPU in 1 s"
    );

    // Still relays, both ways, with more than the socket buffers hold in flight.
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 253) as u8).collect();
    let writer = {
        let mut w = client.try_clone().unwrap();
        let p = payload.clone();
        std::thread::spawn(move || {
            w.write_all(&p).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        })
    };
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the echo differs");
    let r = server.join().unwrap();
    assert_eq!(r.decision, Decision::Allowed, "{r:?}");
    assert_eq!((r.bytes_up, r.bytes_down), (4_000_000, 4_000_000));
}

/// A client that keeps trickling bytes after a refusal does not hold the connection
/// thread: the drain ends within about a second.
#[test]
fn the_drain_after_a_refusal_has_a_deadline() {
    let h = harness(&["pkg.test:9".into()]);
    let mut s = h.client();
    s.write_all(b"CONNECT other.test:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let t = Instant::now();
    let trickle = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                if w.write_all(b"x").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let r = h.record();
    let took = t.elapsed();
    assert_eq!(r.decision, Decision::Denied);
    assert!(took < Duration::from_millis(2500), "served for {took:?}");
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    drop(s);
    trickle.join().unwrap();
}

/// The channel's thread never blocks on a refused connection: a passed socket whose send
/// buffer is full (the worker filled it) gets its 503 without a wait, and the next
/// connection is answered at once.
#[test]
fn refusing_on_the_channel_thread_never_blocks() {
    let port = echo_origin();
    let mut net = NetworkPolicy::allowing(&[format!("pkg.test:{port}")]).unwrap();
    net.max_connections = Some(1);
    let dials: Dials = Arc::default();
    let ctx = Arc::new(
        ProxyContext::new("acme", &net, &operator(true, &["pkg.test:127.0.0.1"]))
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    let (tx, rx) = mpsc::channel::<OwnedFd>();
    let chan: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
    let c = ctx.clone();
    let server = std::thread::spawn(move || {
        serve_channel(chan, c, move |_chan: &OwnedFd| Ok(rx.recv().ok()))
    });
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let connect = |req: &str| -> (TcpStream, TcpStream) {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client.write_all(req.as_bytes()).unwrap();
        let (accepted, _) = l.accept().unwrap();
        (client, accepted)
    };
    let req = format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n");
    // A: holds the only slot.
    let (mut a, accepted) = connect(&req);
    tx.send(accepted.into()).unwrap();
    assert!(read_head(&mut a).starts_with("HTTP/1.1 200 "));
    // B: its peer never reads, and its send buffer is full.
    let (_b, stuck) = connect(&req);
    stuck.set_nonblocking(true).unwrap();
    let chunk = vec![0u8; 65536];
    let mut w = &stuck;
    loop {
        match w.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    stuck.set_nonblocking(false).unwrap();
    tx.send(stuck.into()).unwrap();
    // C: over the cap too; answered promptly.
    let (mut c3, accepted) = connect(&req);
    let t = Instant::now();
    tx.send(accepted.into()).unwrap();
    let mut out = String::new();
    let _ = c3.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "the channel thread was blocked for {:?}",
        t.elapsed()
    );
    drop(a);
    drop(tx);
    server.join().unwrap().unwrap();
}

/// A burst of refusals writes about ten audit lines a second; the rest are counted in a
/// summary line (written with the next line once the second is over), so the totals stay
/// exact and allowed connections are always written.
#[test]
fn a_burst_of_refusals_cannot_flood_the_audit_log() {
    let port = echo_origin();
    let h = harness(&[format!("pkg.test:{port}")]);
    let t = Instant::now();
    for _ in 0..40 {
        let resp = h.exchange(b"GET /not-a-proxy-request HTTP/1.1\r\n\r\n");
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");
        h.record();
    }
    let burst = t.elapsed();
    let lines = read_audit_log(&h.audit, None).unwrap();
    let per_line = lines.iter().filter(|r| r.suppressed.is_none()).count();
    let bound = 10 * (burst.as_secs() as usize + 1);
    assert!(per_line <= bound, "{per_line} lines in {burst:?}");
    assert_eq!(h.ctx.counters().totals().denied, 40);
    std::thread::sleep(Duration::from_millis(1100));
    let (s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    drop(s);
    assert_eq!(h.record().decision, Decision::Allowed);
    let lines = read_audit_log(&h.audit, None).unwrap();
    let summaries: Vec<&ConnRecord> = lines.iter().filter(|r| r.suppressed.is_some()).collect();
    assert!(!summaries.is_empty(), "{lines:?}");
    assert!(
        summaries[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("more denied connections suppressed"),
        "{:?}",
        summaries[0]
    );
    assert_eq!(lines.last().unwrap().decision, Decision::Allowed);
    let t = bulkhead::net::proxy::audit_totals(&h.audit).unwrap();
    assert_eq!((t.connections, t.denied, t.allowed), (41, 40, 1));
}

/// The operator's `max_connections_total` caps proxied connections across workspaces.
#[test]
fn the_process_wide_cap_answers_503() {
    let port = echo_origin();
    let gauge = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let op = OperatorNetwork {
        max_connections_total: 1,
        ..operator(true, &["pkg.test:127.0.0.1"])
    };
    let allow = [format!("pkg.test:{port}")];
    let g = gauge.clone();
    let a = harness_with(&allow, op.clone(), |c| c.with_connection_gauge(g));
    let g = gauge.clone();
    let b = harness_with(&allow, op, |c| c.with_connection_gauge(g));
    let (held, head) = connect_tunnel(&a, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(gauge.load(Ordering::SeqCst), 1);
    let resp = b.exchange(format!("CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").as_bytes());
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    assert!(resp.contains("max_connections_total"), "{resp}");
    let r = b.record();
    assert!(r.reason.unwrap().starts_with("connection_limit_total"));
    drop(held);
    a.record();
    assert_eq!(gauge.load(Ordering::SeqCst), 0);
    let (_s, head) = connect_tunnel(&b, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "after a close: {head}");
}

/// Every context of one workspace in a process (one per sandbox) shares the workspace's
/// counters, so its connection cap holds for all its sandboxes together; the operator's
/// ceiling clamps what the workspace sets.
#[test]
fn the_caps_hold_per_workspace_across_its_sandboxes() {
    let env = TestEnv::new();
    let port = echo_origin();
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\"]\nmax_connections_ceiling = 1\n",
    )
    .unwrap();
    env.create("acme");
    let pattern = format!("pkg.test:{port}");
    assert!(env
        .bulkhead(&["workspace", "net", "acme", "allow", &pattern])
        .status
        .success());
    let out = env.bulkhead(&[
        "workspace",
        "net",
        "acme",
        "limits",
        "--max-connections",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("max_connections_ceiling"),
        "{}",
        text(&out.stderr)
    );
    let v = ok_json(&env.bulkhead(&["--json", "workspace", "net", "acme", "show"]));
    assert_eq!(v["max_connections"], 1);
    assert_eq!(v["max_connections_setting"], 5);
    assert_eq!(v["max_connections_clamped"], true);
    assert_eq!(v["operator"]["max_connections_ceiling"], 1);
    assert_eq!(v["operator"]["max_connections_total"], 1024);
    let t = text(&env.bulkhead(&["workspace", "net", "acme", "show"]).stdout);
    assert!(t.contains("capped by the operator"), "{t}");

    let platform = Platform::open(PlatformConfig {
        state_dir: env.state(),
        launcher: None,
    })
    .unwrap();
    let dials: Dials = Arc::default();
    let first = Arc::new(
        ProxyContext::for_workspace(&platform, "acme")
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    let second = ProxyContext::for_workspace(&platform, "acme")
        .unwrap()
        .with_connector(recording_connector(dials.clone()));
    assert!(Arc::ptr_eq(first.counters(), second.counters()));
    let pair = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        (c, l.accept().unwrap().0)
    };
    // A tunnel through the first sandbox's context holds the workspace's only slot...
    let (mut held, s) = pair();
    let f = first.clone();
    let serving = std::thread::spawn(move || serve_connection(s, &f));
    write!(held, "CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_head(&mut held).starts_with("HTTP/1.1 200 "));
    // ...so the second sandbox's context refuses.
    let (mut c, s) = pair();
    write!(c, "CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    let rec = serve_connection(s, &second);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(out.contains("max_connections_ceiling"), "{out}");
    assert!(rec.reason.unwrap().starts_with("connection_limit"));
    drop(held);
    assert_eq!(serving.join().unwrap().decision, Decision::Allowed);
    // One writer, one file: both lines are there.
    let log = read_audit_log(&env.state().join("workspaces/acme/net-audit.log"), None).unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(dials.lock().unwrap().len(), 1);

    // A bad ceiling is refused, naming the key and the file.
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\nmax_connections_ceiling = 0\n",
    )
    .unwrap();
    let out = env.bulkhead(&["workspace", "list"]);
    assert_eq!(out.status.code(), Some(exit::USAGE));
    let err = text(&out.stderr);
    assert!(
        err.contains("network.max_connections_ceiling") && err.contains("config.toml"),
        "{err}"
    );
}

/// A skill's proxy context lives inside its workspace's limits: it takes the workspace's
/// connection cap (a tunnel the workspace holds leaves it none) and shares the workspace's
/// bandwidth limiter (two downloads at once, one each, take as long as both through one).
#[test]
fn a_skill_counts_against_the_workspace_caps() {
    let env = TestEnv::new();
    let o = http_origin();
    let port = echo_origin();
    std::fs::create_dir_all(env.state()).unwrap();
    std::fs::write(
        env.state().join("config.toml"),
        "[network]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\"]\n",
    )
    .unwrap();
    env.create("acme");
    for p in [format!("pkg.test:{port}"), format!("pkg.test:{}", o.port)] {
        assert!(env
            .bulkhead(&["workspace", "net", "acme", "allow", &p])
            .status
            .success());
    }
    let limits = |args: &[&str]| {
        let mut a = vec!["workspace", "net", "acme", "limits"];
        a.extend_from_slice(args);
        let out = env.bulkhead(&a);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    limits(&["--max-connections", "1", "--bandwidth", "256K"]);
    let platform = Platform::open(PlatformConfig {
        state_dir: env.state(),
        launcher: None,
    })
    .unwrap();
    let dials: Dials = Arc::default();
    let skill_net =
        NetworkPolicy::allowing(&[format!("pkg.test:{port}"), format!("pkg.test:{}", o.port)])
            .unwrap();
    let agent = Arc::new(
        ProxyContext::for_workspace(&platform, "acme")
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    let ws = platform.workspace("acme").unwrap();
    let skill = Arc::new(
        ProxyContext::for_skill(&ws, "acme/skill:fetch", &skill_net)
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    assert_eq!(skill.policy().max_connections(), 1);
    assert_eq!(
        skill.policy().network().bandwidth_bytes_per_sec,
        Some(256 * 1024)
    );
    let pair = || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        (c, l.accept().unwrap().0)
    };

    // The agent's tunnel holds the workspace's only slot: the skill gets 503.
    let (mut held, s) = pair();
    let a = agent.clone();
    let serving = std::thread::spawn(move || serve_connection(s, &a));
    write!(held, "CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    assert!(read_head(&mut held).starts_with("HTTP/1.1 200 "));
    let (mut c, s) = pair();
    write!(c, "CONNECT pkg.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    let rec = serve_connection(s, &skill);
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(rec.reason.unwrap().starts_with("connection_limit"));
    assert_eq!(rec.workspace, "acme/skill:fetch");
    drop(held);
    assert_eq!(serving.join().unwrap().decision, Decision::Allowed);

    // Bandwidth: 384 KiB through each at once, one limiter of 256 KiB/s for both: at least
    // 768 KiB / 256 KiB/s - the burst, about 2.9 s. (Each alone would take about 1.4 s.)
    limits(&["--max-connections", "4"]);
    let skill = Arc::new(
        ProxyContext::for_skill(&ws, "acme/skill:fetch", &skill_net)
            .unwrap()
            .with_connector(recording_connector(dials.clone())),
    );
    let t = Instant::now();
    let fetch = |ctx: Arc<ProxyContext>| {
        let (mut c, s) = pair();
        let port = o.port;
        std::thread::spawn(move || {
            let server = std::thread::spawn(move || serve_connection(s, &ctx));
            write!(
                c,
                "GET http://pkg.test:{port}/bytes/393216 HTTP/1.1\r\n\r\n"
            )
            .unwrap();
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            let rec = server.join().unwrap();
            let head = String::from_utf8_lossy(&got[..got.len().min(200)]).into_owned();
            (got.len(), rec, head)
        })
    };
    let a = fetch(agent.clone());
    let b = fetch(skill.clone());
    let (na, ra, ha) = a.join().unwrap();
    let (nb, rb, hb) = b.join().unwrap();
    let took = t.elapsed();
    assert!(
        na > 393_216 && nb > 393_216,
        "{na} {nb}\n{ha}\n{hb}\n{ra:?}\n{rb:?}"
    );
    assert_eq!(
        (ra.decision, rb.decision),
        (Decision::Allowed, Decision::Allowed)
    );
    assert!(
        took >= Duration::from_millis(2500),
        "both downloads took {took:?}: the skill did not share the workspace's limiter"
    );
    assert!(dials.lock().unwrap().iter().all(|a| a.ip().is_loopback()));
}

/// A flood of allowed CONNECTs does not rotate the workspace's audit log: the lines from
/// before it stay, the flood is counted in summary lines past the rate and the day's budget.
#[test]
fn a_flood_of_allowed_connects_keeps_older_audit_lines() {
    let port = echo_origin();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("small-audit.log");
    // A 16 KiB log (8 KiB a day), so a flood of a few hundred would rotate it twice over.
    let h = harness_with(
        &[format!("pkg.test:{port}")],
        operator(true, &["pkg.test:127.0.0.1", "other.test:127.0.0.1"]),
        |c| c.with_audit_log(AuditLog::open_with(&audit, 16 * 1024).unwrap()),
    );
    // The history: one denied, one allowed.
    let (s, head) = connect_tunnel(&h, "other.test:443");
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    drop(s);
    assert_eq!(h.record().decision, Decision::Denied);
    let (s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    drop(s);
    assert_eq!(h.record().decision, Decision::Allowed);

    const FLOOD: u64 = 400;
    for _ in 0..FLOOD {
        let (s, head) = connect_tunnel(&h, &format!("pkg.test:{port}"));
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        drop(s);
        assert_eq!(h.record().decision, Decision::Allowed);
    }
    // One more after a second: it ends the last rate window (summaries written).
    std::thread::sleep(Duration::from_millis(1100));
    let (s, _) = connect_tunnel(&h, &format!("pkg.test:{port}"));
    drop(s);
    h.record();

    let mut rotated = audit.as_os_str().to_owned();
    rotated.push(".1");
    assert!(
        !std::path::Path::new(&rotated).exists(),
        "the flood rotated the audit log"
    );
    let lines = read_audit_log(&audit, None).unwrap();
    assert_eq!(
        (lines[0].decision, lines[0].host.as_str()),
        (Decision::Denied, "other.test"),
        "{:?}",
        lines[0]
    );
    assert_eq!(lines[1].decision, Decision::Allowed);
    let one_by_one = lines.iter().filter(|r| r.suppressed.is_none()).count() as u64;
    assert!(one_by_one < FLOOD / 4, "{one_by_one} lines one by one");
    let counted: u64 = lines.iter().filter_map(|r| r.suppressed).sum();
    assert!(counted > 0, "{lines:?}");
    assert!(lines
        .iter()
        .filter(|r| r.suppressed.is_some())
        .all(|r| r.decision == Decision::Allowed
            && r.reason
                .as_deref()
                .unwrap()
                .contains("allowed connections suppressed")));
    assert!(one_by_one + counted <= FLOOD + 3);
    assert_eq!(h.ctx.counters().totals().allowed, FLOOD + 2);
}
