//! `bulkhead-bench-egress`: what the egress proxy costs against a direct loopback connection.
//!
//! An HTTP origin on 127.0.0.1 serves `GET /bytes/N` (N bytes) and `GET /small` (2 bytes).
//! The proxy is `bulkhead::net::proxy::serve_connection` behind a loopback listener (one
//! thread per connection, as the controller runs it), with the operator's `resolve` mapping
//! `origin.bench` to the origin, the allowlist naming it, and the audit log written to a
//! temporary file. Variants:
//!
//! - throughput: one download of `--mb` MB (default 100): direct, through the proxy as a
//!   plain-HTTP absolute-form request, and through a `CONNECT` tunnel; `--rounds` rounds
//!   (default 5), median MB/s (MB = 10^6 bytes);
//! - latency: a small `GET` on a new connection each time (what an HTTP client without
//!   keep-alive through a proxy pays): direct, proxied absolute-form, `CONNECT` + `GET`;
//!   `--requests` each (default 500), median and p90 µs, and the added median.
//!
//! Every round runs each variant once, round-robin with a rotating start, so machine noise
//! hits all alike. Prints figures and ratios; asserts nothing.
//!
//! ```text
//! cargo run --release -p bulkhead-bench --bin bulkhead-bench-egress -- [--mb N] [--rounds R]
//!     [--requests N] [--json]
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use bulkhead::net::egress::{NetworkPolicy, OperatorNetwork};
use bulkhead::net::proxy::{serve_connection, AuditLog, ProxyContext};
use bulkhead_bench::bench_util::{percentile, ratio};

const USAGE: &str = "\
usage: bulkhead-bench-egress [--mb N] [--rounds R] [--requests N] [--json]

  --mb N        size of the download in MB (default 100)
  --rounds R    downloads per variant (default 5)
  --requests N  small requests per variant (default 500)
  --json        one JSON object instead of the table";

/// The origin: `GET /bytes/N` or `GET /small`, `Connection: close`.
fn origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind origin");
    let addr = l.local_addr().expect("origin addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || serve_origin(s));
        }
    });
    addr
}

fn serve_origin(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 16384 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let path = text.split(' ').nth(1).unwrap_or("/");
    let n: usize = path
        .strip_prefix("/bytes/")
        .and_then(|n| n.parse().ok())
        .unwrap_or(2);
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    );
    let chunk = vec![b'x'; 256 * 1024];
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        if s.write_all(&chunk[..k]).is_err() {
            return;
        }
        left -= k;
    }
}

/// The proxy behind a loopback listener.
fn proxy(origin_port: u16, audit: &std::path::Path) -> SocketAddr {
    let op = OperatorNetwork {
        allow_loopback: true,
        resolve: OperatorNetwork::parse_resolve(&["origin.bench:127.0.0.1"], "resolve")
            .expect("resolve"),
        ..OperatorNetwork::default()
    };
    let mut net =
        NetworkPolicy::allowing(&[format!("origin.bench:{origin_port}")]).expect("policy");
    net.max_connections = Some(4096);
    let ctx = Arc::new(
        ProxyContext::new("bench", &net, &op)
            .expect("context")
            .with_audit_log(AuditLog::open(audit).expect("audit log")),
    );
    let l = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = l.local_addr().expect("proxy addr");
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let c = ctx.clone();
            std::thread::spawn(move || {
                serve_connection(s, &c);
            });
        }
    });
    addr
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    Absolute,
    Connect,
}

const VIAS: [Via; 3] = [Via::Direct, Via::Absolute, Via::Connect];

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct (baseline)",
            Via::Absolute => "proxy, GET http://… (absolute form)",
            Via::Connect => "proxy, CONNECT tunnel + GET",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Absolute => "proxy_absolute",
            Via::Connect => "proxy_connect",
        }
    }
}

/// Reads a response head byte by byte (nothing after it is consumed).
fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => panic!(
                "connection closed in a response head: {}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    head
}

/// One `GET path` through `via`; returns the bytes read after the request was sent.
fn fetch(via: Via, origin: SocketAddr, proxy: SocketAddr, path: &str, buf: &mut [u8]) -> u64 {
    let port = origin.port();
    let mut s = match via {
        Via::Direct => TcpStream::connect(origin),
        _ => TcpStream::connect(proxy),
    }
    .expect("connect");
    let _ = s.set_nodelay(true);
    match via {
        Via::Direct => write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        ),
        Via::Absolute => write!(
            s,
            "GET http://origin.bench:{port}{path} HTTP/1.1\r\nHost: origin.bench:{port}\r\n\r\n"
        ),
        Via::Connect => {
            write!(
                s,
                "CONNECT origin.bench:{port} HTTP/1.1\r\nHost: origin.bench:{port}\r\n\r\n"
            )
            .expect("write");
            let head = read_head(&mut s);
            assert!(head.starts_with(b"HTTP/1.1 200 "), "CONNECT refused");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: origin.bench:{port}\r\nConnection: close\r\n\r\n"
            )
        }
    }
    .expect("write request");
    let mut total = 0u64;
    loop {
        match s.read(buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    total
}

fn main() {
    let mut mb = 100u64;
    let mut rounds = 5usize;
    let mut requests = 500usize;
    let mut json = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next().unwrap_or_else(|| {
                eprintln!("{a} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--mb" => mb = val().parse().expect("--mb N"),
            "--rounds" => rounds = val().parse().expect("--rounds R"),
            "--requests" => requests = val().parse().expect("--requests N"),
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            _ => {
                eprintln!("unknown argument {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    assert!(mb > 0 && rounds > 0 && requests > 0);
    let dir = tempfile::tempdir().expect("temp dir");
    let o = origin();
    let p = proxy(o.port(), &dir.path().join("net-audit.log"));
    let mut buf = vec![0u8; 256 * 1024];
    let bytes = mb * 1_000_000;
    let big = format!("/bytes/{bytes}");

    // Warm up every path once.
    for v in VIAS {
        fetch(v, o, p, "/small", &mut buf);
        fetch(v, o, p, "/bytes/1000000", &mut buf);
    }

    // Throughput.
    let mut mbps: Vec<Vec<f64>> = vec![Vec::new(); VIAS.len()];
    for round in 0..rounds {
        for j in 0..VIAS.len() {
            let i = (round + j) % VIAS.len();
            let t = Instant::now();
            let got = fetch(VIAS[i], o, p, &big, &mut buf);
            let secs = t.elapsed().as_secs_f64();
            assert!(got >= bytes, "short download: {got} of {bytes} bytes");
            mbps[i].push(bytes as f64 / 1e6 / secs);
        }
    }

    // Latency of a small request on a new connection.
    let mut us: Vec<Vec<f64>> = vec![Vec::with_capacity(requests); VIAS.len()];
    for round in 0..requests {
        for j in 0..VIAS.len() {
            let i = (round + j) % VIAS.len();
            let t = Instant::now();
            fetch(VIAS[i], o, p, "/small", &mut buf);
            us[i].push(t.elapsed().as_secs_f64() * 1e6);
        }
    }

    let tp: Vec<Option<f64>> = mbps.iter().map(|v| percentile(v, 0.5)).collect();
    let lat: Vec<(Option<f64>, Option<f64>)> = us
        .iter()
        .map(|v| (percentile(v, 0.5), percentile(v, 0.9)))
        .collect();
    let audit_lines = std::fs::read_to_string(dir.path().join("net-audit.log"))
        .map(|s| s.lines().count())
        .unwrap_or(0);

    if json {
        let mut out = serde_json::Map::new();
        out.insert("mb".into(), mb.into());
        out.insert("rounds".into(), rounds.into());
        out.insert("requests".into(), requests.into());
        for (i, v) in VIAS.iter().enumerate() {
            out.insert(
                v.key().into(),
                serde_json::json!({
                    "throughput_mb_s": tp[i],
                    "throughput_vs_direct": ratio(tp[i], tp[0]),
                    "latency_median_us": lat[i].0,
                    "latency_p90_us": lat[i].1,
                    "latency_added_us": lat[i].0.zip(lat[0].0).map(|(a, b)| a - b),
                    "latency_vs_direct": ratio(lat[i].0, lat[0].0),
                }),
            );
        }
        out.insert("audit_lines".into(), audit_lines.into());
        println!("{}", serde_json::Value::Object(out));
        return;
    }
    let f = |x: Option<f64>, prec: usize| {
        x.map(|v| format!("{v:.prec$}"))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "egress proxy vs direct loopback; {mb} MB download x {rounds} rounds, {requests} small requests per variant, round-robin"
    );
    println!(
        "{:<38} {:>10} {:>8}   {:>10} {:>10} {:>10} {:>8}",
        "variant", "MB/s", "vs dir", "median µs", "p90 µs", "added µs", "vs dir"
    );
    for (i, v) in VIAS.iter().enumerate() {
        let added = lat[i].0.zip(lat[0].0).map(|(a, b)| a - b);
        println!(
            "{:<38} {:>10} {:>8}   {:>10} {:>10} {:>10} {:>8}",
            v.name(),
            f(tp[i], 0),
            f(ratio(tp[i], tp[0]), 2),
            f(lat[i].0, 1),
            f(lat[i].1, 1),
            if i == 0 { "-".into() } else { f(added, 1) },
            f(ratio(lat[i].0, lat[0].0), 2)
        );
    }
    println!("(audit log: {audit_lines} lines written, one per proxied connection)");
}
