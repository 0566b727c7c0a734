use super::*;

fn head(s: &str) -> std::result::Result<RequestHead, String> {
    parse_head(s.as_bytes())
}

fn target(s: &str) -> std::result::Result<Target, String> {
    parse_target(&head(s)?)
}

#[test]
fn parses_connect_and_absolute_form() {
    let t = target("CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n").unwrap();
    assert_eq!(
        t,
        Target::Connect {
            host: Host::Name("pypi.org".into()),
            port: 443
        }
    );
    let t = target("GET http://Example.COM/a/b?c=d#frag HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        t,
        Target::Http {
            host: Host::Name("example.com".into()),
            port: 80,
            path: "/a/b?c=d".into()
        }
    );
    let t = target("GET http://example.com HTTP/1.0\r\n\r\n").unwrap();
    assert!(matches!(t, Target::Http { ref path, .. } if path == "/"));
    let t = target("GET http://example.com:8080?q HTTP/1.1\r\n\r\n").unwrap();
    assert!(matches!(t, Target::Http { port: 8080, ref path, .. } if path == "/?q"));
    let h = head("POST http://x.org/ HTTP/1.1\r\nA: 1\r\nB:2 \r\n\r\n").unwrap();
    assert_eq!(
        h.headers,
        [("A".into(), "1".into()), ("B".into(), "2".into())]
    );
}

#[test]
fn ip_literals_are_read_as_the_guard_reads_them() {
    for (t, ip) in [
        ("CONNECT 127.0.0.1:80", "127.0.0.1"),
        ("CONNECT 2130706433:80", "127.0.0.1"),
        ("CONNECT 0x7f.1:80", "127.0.0.1"),
        ("CONNECT 0177.0.0.1:80", "127.0.0.1"),
        ("CONNECT 127.1:80", "127.0.0.1"),
        ("CONNECT [::1]:80", "::1"),
        ("CONNECT [::ffff:127.0.0.1]:80", "::ffff:127.0.0.1"),
        ("GET http://0x7f000001:80/", "127.0.0.1"),
        ("GET http://[::ffff:7f00:1]/", "::ffff:127.0.0.1"),
    ] {
        let parsed = target(&format!("{t} HTTP/1.1\r\n\r\n")).unwrap();
        let (h, _) = parsed.host_port();
        assert_eq!(h, &Host::Ip(ip.parse().unwrap()), "{t}");
    }
}

#[test]
fn hostile_heads_are_refused() {
    for (req, says) in [
        ("GET http://x.org/ HTTP/1.1\n\n", "CRLF"),
        ("GET http://x.org/ HTTP/1.1\r\nA: b\n\r\n", "CRLF"),
        ("GET http://x.org/ HTTP/1.1\r\nA: b\rc\r\n\r\n", "CRLF"),
        ("GET  http://x.org/ HTTP/1.1\r\n\r\n", "METHOD SP"),
        ("GET http://x.org/ HTTP/2.0\r\n\r\n", "version"),
        ("GET http://x.org/ HTTP/1.1\r\n folded\r\n\r\n", "obs-fold"),
        ("GET http://x.org/ HTTP/1.1\r\nno colon\r\n\r\n", "':'"),
        (
            "GET http://x.org/ HTTP/1.1\r\nBad Name: x\r\n\r\n",
            "header name",
        ),
        ("GET http://x.org/ HTTP/1.1\r\nA: \x01\r\n\r\n", "control"),
        ("G\x00T http://x.org/ HTTP/1.1\r\n\r\n", "method"),
        ("GET http://x.org/\x7f HTTP/1.1\r\n\r\n", "target"),
        ("\r\n\r\n", "METHOD SP"),
    ] {
        let e = head(req).unwrap_err();
        assert!(e.contains(says), "{req:?}: {e}");
    }
    let many = format!(
        "GET http://x.org/ HTTP/1.1\r\n{}\r\n",
        "A: b\r\n".repeat(MAX_HEADERS + 1)
    );
    assert!(head(&many).unwrap_err().contains("header lines"));
    for (req, says) in [
        ("CONNECT user@pypi.org:443", "userinfo"),
        ("CONNECT pypi.org", "host:port"),
        ("CONNECT pypi.org:0", "port"),
        ("CONNECT pypi.org:99999", "port"),
        ("CONNECT ::1:80", "brackets"),
        ("CONNECT [::1]", "host:port"),
        ("CONNECT [fe80::1%25eth0]:80", "host:port"),
        ("CONNECT pypi.org:443/x", "host:port only"),
        ("CONNECT 999.1.1.1:80", "numeric"),
        ("CONNECT ex%61mple.com:80", "host:port only"),
        ("GET /index.html", "absolute URL"),
        ("OPTIONS *", "absolute URL"),
        ("GET https://pypi.org/", "CONNECT"),
        ("GET ftp://pypi.org/", "unsupported scheme"),
        ("GET file:///etc/passwd", "unsupported scheme"),
        ("GET gopher://x.org:70/", "unsupported scheme"),
        ("GET http://user:pw@pypi.org/", "userinfo"),
        ("GET http://pypi.org\\@evil.com/", "backslash"),
        ("GET http://[::1/", "ipv6"),
        ("GET http:pypi.org/", "//"),
    ] {
        let e = target(&format!("{req} HTTP/1.1\r\n\r\n")).unwrap_err();
        assert!(e.contains(says), "{req:?}: {e}");
    }
}

#[test]
fn origin_head_rewrites_and_strips() {
    let h = head(
        "GET http://pkg.test:8080/x?y HTTP/1.1\r\nHost: evil.com\r\nProxy-Authorization: Basic c2VjcmV0\r\n\
         Proxy-Connection: keep-alive\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\nAccept: */*\r\nUpgrade: h2c\r\n\r\n",
    )
    .unwrap();
    let Target::Http { host, port, path } = parse_target(&h).unwrap() else {
        panic!()
    };
    let out = String::from_utf8(origin_head(&h, &host, port, &path).unwrap()).unwrap();
    assert_eq!(
        out,
        "GET /x?y HTTP/1.1\r\nHost: pkg.test:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let h = head(
        "POST http://a.org/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
    let h = head("POST http://a.org/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n")
        .unwrap();
    assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
    let h = head("POST http://a.org/ HTTP/1.1\r\nContent-Length: -3\r\n\r\n").unwrap();
    assert!(origin_head(&h, &Host::Name("a.org".into()), 80, "/").is_err());
}

#[test]
fn rate_limiter_paces() {
    let l = RateLimiter::new(1_000_000);
    let mut waited = Duration::ZERO;
    for _ in 0..10 {
        waited = l.take(100_000);
    }
    // 1 MB at 1 MB/s with 100 ms of burst: the last chunk waits ~0.9 s from now.
    assert!(
        waited > Duration::from_millis(700) && waited < Duration::from_millis(1000),
        "{waited:?}"
    );
    assert!(l.chunk() <= RELAY_BUF);
}

#[test]
fn audit_log_rotates_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_LOG_NAME);
    let log = AuditLog::open_with(&path, 4096)
        .unwrap()
        .with_day_budget(u64::MAX);
    let t0 = Instant::now();
    let mut rec = ConnRecord {
        ts: "2026-01-01T00:00:00.000Z".into(),
        workspace: "acme".into(),
        host: "pypi.org".into(),
        port: 443,
        method: "CONNECT".into(),
        decision: Decision::Allowed,
        reason: None,
        status: Some(200),
        addr: Some("203.0.113.1:443".into()),
        bytes_up: 10,
        bytes_down: 20,
        duration_ms: 5,
        suppressed: None,
    };
    for i in 0..100u32 {
        rec.duration_ms = u64::from(i);
        log.append_at(&rec, t0 + AUDIT_WINDOW * i);
    }
    assert!(std::fs::metadata(&path).unwrap().len() <= 4096);
    assert!(rotated(&path).exists());
    let all = read_audit_log(&path, None).unwrap();
    assert!(all.len() < 100 && all.len() > 10, "{}", all.len());
    assert_eq!(all.last().unwrap().duration_ms, 99);
    let last3 = read_audit_log(&path, Some(3)).unwrap();
    assert_eq!(
        last3.iter().map(|r| r.duration_ms).collect::<Vec<_>>(),
        [97, 98, 99]
    );
    let t = audit_totals(&path).unwrap();
    assert_eq!(t.connections as usize, all.len());
    assert_eq!(t.bytes_down, 20 * all.len() as u64);
    // A torn line is skipped.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"ts\":")
        .unwrap();
    assert_eq!(read_audit_log(&path, None).unwrap().len(), all.len());
}
fn record(decision: Decision, n: u64) -> ConnRecord {
    ConnRecord {
        ts: "2026-01-01T00:00:00.000Z".into(),
        workspace: "acme".into(),
        host: format!("h{n}.test"),
        port: 443,
        method: "CONNECT".into(),
        decision,
        reason: (decision != Decision::Allowed).then(|| "not_allowed: no".into()),
        status: None,
        addr: None,
        bytes_up: 0,
        bytes_down: 0,
        duration_ms: n,
        suppressed: None,
    }
}

/// A burst of refusals writes AUDIT_REFUSALS_PER_SEC lines, then one summary line per
/// kind when the second is over; allowed lines have a rate of their own; totals stay
/// exact.
#[test]
fn refusals_are_rate_limited_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_LOG_NAME);
    let log = AuditLog::open(&path).unwrap();
    let t0 = Instant::now();
    let mut written = 0;
    for i in 0..100 {
        written += log.append_at(&record(Decision::Denied, i), t0) as u32;
        if i % 10 == 0 {
            assert!(log.append_at(&record(Decision::Allowed, 1000 + i), t0));
        }
    }
    for i in 0..5 {
        written += log.append_at(&record(Decision::Failed, 2000 + i), t0) as u32;
    }
    assert_eq!(written, AUDIT_REFUSALS_PER_SEC);
    let lines = read_audit_log(&path, None).unwrap();
    assert_eq!(lines.len(), 20, "10 refusals and 10 allowed");
    assert!(lines.iter().all(|r| r.suppressed.is_none()));
    // Still inside the window: nothing more.
    log.append_at(
        &record(Decision::Denied, 3000),
        t0 + Duration::from_millis(900),
    );
    assert_eq!(read_audit_log(&path, None).unwrap().len(), 20);
    // The next line after the window: the summaries first, then the line itself.
    assert!(log.append_at(&record(Decision::Denied, 4000), t0 + AUDIT_WINDOW));
    let lines = read_audit_log(&path, None).unwrap();
    assert_eq!(lines.len(), 23);
    let denied = &lines[20];
    assert_eq!(
        (denied.decision, denied.suppressed),
        (Decision::Denied, Some(91))
    );
    assert!(
        denied
            .reason
            .as_deref()
            .unwrap()
            .contains("91 more denied connections suppressed"),
        "{denied:?}"
    );
    assert_eq!(lines[21].decision, Decision::Failed);
    assert_eq!(lines[21].suppressed, Some(5));
    assert_eq!(lines[22].duration_ms, 4000);
    let t = audit_totals(&path).unwrap();
    assert_eq!(
        (t.connections, t.allowed, t.denied, t.failed),
        (117, 10, 102, 5)
    );
    // A summary still pending is written when the log is closed.
    for i in 0..20 {
        log.append_at(&record(Decision::Denied, 5000 + i), t0 + AUDIT_WINDOW);
    }
    drop(log);
    let last = read_audit_log(&path, Some(1)).unwrap().pop().unwrap();
    assert_eq!(last.suppressed, Some(11));
}

/// Contexts of one workspace share its limiters: a second context does not get a fresh
/// bandwidth budget. A new rate gets new limiters.
#[test]
fn limiters_are_shared_and_follow_the_rate() {
    let l = Limiters::default();
    let (a, _) = l.for_rate(Some(4096));
    let (b, _) = l.for_rate(Some(4096));
    assert!(Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap()));
    let (c, _) = l.for_rate(Some(8192));
    assert!(!Arc::ptr_eq(a.as_ref().unwrap(), c.as_ref().unwrap()));
    assert!(l.for_rate(None).0.is_none());
    // An unlimited context (a skill's, before it took the workspace's rate) does not
    // clear the pair in force: the same rate gets the same limiters again.
    let (d, _) = l.for_rate(Some(8192));
    assert!(Arc::ptr_eq(c.as_ref().unwrap(), d.as_ref().unwrap()));
}

#[test]
fn a_skill_gets_the_workspace_caps() {
    let skill = NetworkPolicy::allowing(&["api.test".to_string()]).unwrap();
    let ws = NetworkPolicy {
        allow: vec![],
        max_connections: Some(2),
        bandwidth_bytes_per_sec: Some(1000),
    };
    let p = within_workspace(&skill, &ws);
    assert_eq!(p.allow, skill.allow);
    assert_eq!(p.max_connections, Some(2));
    assert_eq!(p.bandwidth_bytes_per_sec, Some(1000));
    // A skill asking for less keeps its lower connection cap.
    let mut tight = skill.clone();
    tight.max_connections = Some(1);
    assert_eq!(within_workspace(&tight, &ws).max_connections, Some(1));
    // An unlimited workspace leaves the skill unlimited in bandwidth, default cap.
    let p = within_workspace(&skill, &NetworkPolicy::default());
    assert_eq!(p.bandwidth_bytes_per_sec, None);
    assert_eq!(
        p.max_connections(),
        NetworkPolicy::default().max_connections()
    );
}

/// Allowed lines past the rate and past the day's budget are counted, never written:
/// the first lines of a flood stay, the totals stay exact.
#[test]
fn allowed_connections_are_rate_limited_and_budgeted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(AUDIT_LOG_NAME);
    let log = AuditLog::open_with(&path, 4096).unwrap();
    assert_eq!(log.day_budget(), 2048);
    let t0 = Instant::now();
    // The proxy stamps records with the time they end: today.
    let today = crate::util::time::timestamp_now();
    let mut first = record(Decision::Allowed, 1);
    first.ts = today.clone();
    first.bytes_down = 7;
    assert!(log.append_at(&first, t0));
    let mut written = 1;
    // 1000 seconds of a flood, 50 a second.
    for sec in 0..1000u32 {
        for i in 0..50u64 {
            let mut r = record(Decision::Allowed, 10 + i);
            r.ts = today.clone();
            r.bytes_down = 7;
            written += log.append_at(&r, t0 + AUDIT_WINDOW * sec) as u64;
        }
    }
    assert!(written < 20, "{written} lines written one by one");
    drop(log);
    assert!(!rotated(&path).exists(), "the flood rotated the log");
    let lines = read_audit_log(&path, None).unwrap();
    assert_eq!(lines[0].duration_ms, 1, "{:?}", lines[0]);
    let t = audit_totals(&path).unwrap();
    assert_eq!((t.connections, t.allowed), (50_001, 50_001));
    assert_eq!(t.bytes_down, 7 * 50_001);
    let summaries: Vec<_> = lines.iter().filter(|r| r.suppressed.is_some()).collect();
    assert!(
        summaries[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("more allowed connections suppressed"),
        "{:?}",
        summaries[0]
    );
    // Reopened the same day: what the file holds of today counts against the budget.
    let log = AuditLog::open_with(&path, 4096).unwrap();
    assert!(!log.append(&record(Decision::Allowed, 99)));
}
