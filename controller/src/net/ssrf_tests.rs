//! Tests of the SSRF guard. No traffic leaves 127.0.0.0/8: blocked addresses are checked to be
//! refused before any connection, and allowed paths go only to listeners on 127.0.0.1.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::thread::JoinHandle;
use std::time::Duration;

use super::*;

fn loopback() -> SsrfPolicy {
    SsrfPolicy {
        allow_loopback: true,
        ..SsrfPolicy::default()
    }
}

fn client(policy: SsrfPolicy) -> GuardedClient {
    guarded_agent(
        policy,
        GuardConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            ..GuardConfig::default()
        },
    )
}

/// URLs the default policy must refuse. Host names here are either refused by name or resolve
/// from /etc/hosts (`localhost`), so no query leaves the machine; nothing is connected to.
const REFUSED: &[&str] = &[
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f000001/",
    "http://0x7f.1/",
    "http://127.1/",
    "http://127.0.1/",
    "http://127.0.0.1./",
    "http://017700000001/",
    "http://127.0.0.1:8080/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]:8080/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://[::127.0.0.1]/",
    "http://[::ffff:0:7f00:1]/",
    "http://[2002:7f00:1::]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[64:ff9b::a00:1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[64:ff9b:1::a00:1]/",
    "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
    "http://10.0.0.1/",
    "http://012.0.0.1/",
    "http://172.16.5.4/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://169.254.1.1/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[100::1]/",
    "http://[2001:db8::1]/",
    "http://[ff02::1]/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    "http://256.0.0.1/",
    "http://1.2.3.4.5/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.GOOGLE.INTERNAL./",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://localhost/",
    "http://localhost:11434/",
    "http://user@127.0.0.1/",
    "http://user:pass@example.com@127.0.0.1/",
    "http://example.com@169.254.169.254/",
    "http://example.com\\@127.0.0.1/",
    "http:// 127.0.0.1/",
    "http://127.0.0.1:0/",
    "http://127.0.0.1:99999/",
    "http:127.0.0.1/",
    "file:///etc/passwd",
    "gopher://127.0.0.1:70/_stats",
    "dict://127.0.0.1:11211/stat",
    "ftp://example.com/",
    "ws://127.0.0.1/",
];

#[test]
fn refused_urls() {
    assert!(REFUSED.len() >= 40);
    let c = client(SsrfPolicy::default());
    for url in REFUSED {
        match c.vet(url) {
            Ok(addrs) => panic!("{url} was allowed ({addrs:?})"),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.starts_with("refused: "), "{url}: {msg}");
            }
        }
    }
}

#[test]
fn ipv4_forms_are_read_as_addresses() {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for raw in [
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "0X7F.0.0.1",
        "127.1",
        "127.0.1",
        "0x7f000001",
        "017700000001",
        "127.0.0.1.",
        "00000000177.0.0.1",
    ] {
        assert_eq!(parse_host(raw), Ok(Host::Ip(lo)), "{raw}");
    }
    assert_eq!(
        parse_host("1.2.65535"),
        Ok(Host::Ip(IpAddr::V4(Ipv4Addr::new(1, 2, 255, 255))))
    );
    for bad in [
        "127.0.0.256",
        "0x100000000",
        "08.0.0.1",
        "1.2.3.4.5",
        "1..2",
        "0xg.1",
    ] {
        assert!(
            matches!(parse_host(bad), Err(SsrfError::InvalidUrl { .. })),
            "{bad}"
        );
    }
    assert_eq!(
        parse_host("Example.COM."),
        Ok(Host::Name("example.com".into()))
    );
    assert!(parse_host("exa mple.com").is_err());
    assert!(parse_host("bücher.example").is_err());
    assert!(parse_host("[fe80::1%eth0]").is_err());
}

#[test]
fn parse_url_host_reads_scheme_host_port() {
    assert_eq!(
        parse_url_host("https://API.example.com/v1?x=1"),
        Ok((Scheme::Https, Host::Name("api.example.com".into()), 443))
    );
    assert_eq!(
        parse_url_host("http://[2606:4700::1111]:8080/x"),
        Ok((
            Scheme::Http,
            Host::Ip("2606:4700::1111".parse().unwrap()),
            8080
        ))
    );
    assert_eq!(
        parse_url_host("HTTP://example.com#@127.0.0.1"),
        Ok((Scheme::Http, Host::Name("example.com".into()), 80))
    );
    assert!(matches!(
        parse_url_host("http://a@b/"),
        Err(SsrfError::Userinfo { .. })
    ));
    assert_eq!(
        parse_url_host("file:///etc/passwd"),
        Err(SsrfError::UnsupportedScheme("file".into()))
    );
}

#[test]
fn public_addresses_pass() {
    let p = SsrfPolicy::default();
    for ip in [
        "8.8.8.8",
        "1.1.1.1",
        "9.9.9.9",
        "93.184.216.34",
        "11.0.0.1",
        "172.32.0.1",
        "172.15.255.255",
        "100.128.0.1",
        "192.169.0.1",
        "223.255.255.254",
        "2606:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::808:808",
    ] {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(check_ip(ip, &p), Ok(()), "{ip}");
    }
}

#[test]
fn messages_name_host_and_reason() {
    let p = SsrfPolicy::default();
    let e = check_ip("169.254.169.254".parse().unwrap(), &p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: 169.254.169.254 is a link-local / cloud metadata address"
    );
    let e = check_ip("::ffff:10.1.2.3".parse().unwrap(), &p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: ::ffff:10.1.2.3 is a private address (ipv4-mapped form of 10.1.2.3)"
    );
    let e = client(p.clone())
        .vet("http://metadata.google.internal/")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: metadata.google.internal is a cloud metadata host name"
    );
}

#[test]
fn hostname_resolving_to_loopback_is_refused() {
    let e = resolve_and_check("localhost", 80, &SsrfPolicy::default()).unwrap_err();
    match &e {
        SsrfError::BlockedAddress {
            host, ip, reason, ..
        } => {
            assert_eq!(host, "localhost");
            assert!(ip.is_loopback(), "{ip}");
            assert_eq!(reason, "loopback address");
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().starts_with("refused: localhost resolves to "));
    // With the operator's loopback allowance, the name resolves to vetted loopback addresses.
    let addrs = resolve_and_check_all("localhost", 80, &loopback()).unwrap();
    assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
}

#[test]
fn policy_allowances_are_narrow() {
    let lo = loopback();
    let ok = |ip: &str, p: &SsrfPolicy| check_ip(ip.parse().unwrap(), p).is_ok();
    assert!(ok("127.0.0.1", &lo));
    assert!(ok("127.5.6.7", &lo));
    assert!(ok("::1", &lo));
    assert!(!ok("0.0.0.0", &lo));
    assert!(!ok("10.0.0.1", &lo));
    assert!(!ok("169.254.169.254", &lo));
    let private = SsrfPolicy {
        allow_private: true,
        ..SsrfPolicy::default()
    };
    assert!(ok("10.0.0.1", &private));
    assert!(ok("192.168.1.1", &private));
    assert!(ok("fd12::1", &private));
    assert!(ok("100.64.0.1", &private));
    assert!(!ok("127.0.0.1", &private));
    assert!(!ok("fd00:ec2::254", &private));
    assert!(!ok("100.100.100.200", &private));
    assert!(!ok("169.254.169.254", &private));
    assert!(!ok("fe80::1", &private));
}

#[test]
fn embedded_ipv4_forms_are_checked() {
    let p = SsrfPolicy::default();
    let refused = |ip: &str| check_ip(ip.parse::<Ipv6Addr>().unwrap().into(), &p).is_err();
    assert!(refused("2002:c0a8:101::")); // 6to4 of 192.168.1.1
    assert!(refused("2002:a9fe:a9fe::")); // 6to4 of the metadata address
    assert!(refused("64:ff9b::c0a8:101")); // NAT64 of 192.168.1.1
                                           // Teredo with server 65.54.227.120 and client 10.0.0.1 (inverted: f5ff:fffe)
    assert!(refused("2001:0:4136:e378:8000:63bf:f5ff:fffe"));
    // Teredo with a private server
    assert!(refused("2001:0:a00:1:8000:63bf:f7f7:f7f7"));
    assert!(refused("::10.0.0.1"));
}

#[test]
fn allowlist_and_denylist_patterns() {
    let p = SsrfPolicy {
        host_allowlist: Some(vec![
            "api.example.com".into(),
            "*.corp.example:8443".into(),
            "127.0.0.1:11434".into(),
            "[2606:4700::1111]".into(),
        ]),
        deny_hosts: vec!["bad.corp.example".into(), "*.evil.corp.example".into()],
        ..SsrfPolicy::default()
    };
    let check = |url: &str, p: &SsrfPolicy| {
        let (_, h, port) = parse_url_host(url).unwrap();
        check_host(&h, port, p)
    };
    assert_eq!(check("https://api.example.com/", &p), Ok(()));
    assert_eq!(check("https://API.EXAMPLE.COM./", &p), Ok(()));
    assert_eq!(check("https://a.corp.example:8443/", &p), Ok(()));
    assert_eq!(check("https://a.b.corp.example:8443/", &p), Ok(()));
    assert_eq!(check("https://[2606:4700::1111]/", &p), Ok(()));
    for url in [
        "https://x.api.example.com/",
        "https://example.com/",
        "https://corp.example:8443/",
        "https://a.corp.example/",
        "https://evilcorp.example:8443/",
        "https://a.corp.example.attacker.net:8443/",
        "http://127.0.0.1/",
    ] {
        assert!(
            matches!(check(url, &p), Err(SsrfError::NotAllowlisted { .. })),
            "{url}"
        );
    }
    for url in [
        "https://bad.corp.example:8443/",
        "https://x.evil.corp.example:8443/",
    ] {
        assert!(
            matches!(check(url, &p), Err(SsrfError::BlockedHost { .. })),
            "{url}"
        );
    }
    // The allowlist does not override the address rules...
    assert!(matches!(
        check("http://127.0.0.1:11434/", &p),
        Err(SsrfError::BlockedAddress { .. })
    ));
    // ...the operator's loopback allowance does.
    let p2 = SsrfPolicy {
        allow_loopback: true,
        ..p.clone()
    };
    assert_eq!(check("http://127.0.0.1:11434/", &p2), Ok(()));
    let msg = check("https://example.com/", &p).unwrap_err().to_string();
    assert_eq!(msg, "refused: example.com:443 is not in the host allowlist");
}

#[test]
fn redirects_are_rechecked() {
    let p = SsrfPolicy::default();
    let from = "https://api.example.com/v1/items?page=2";
    assert!(matches!(
        check_redirect(from, "http://10.0.0.1/", &p),
        Err(SsrfError::BlockedAddress { .. })
    ));
    assert!(matches!(
        check_redirect(from, "//169.254.169.254/latest/meta-data/", &p),
        Err(SsrfError::BlockedAddress { .. })
    ));
    assert!(matches!(
        check_redirect(from, "http://[::ffff:127.0.0.1]/", &p),
        Err(SsrfError::BlockedAddress { .. })
    ));
    assert!(matches!(
        check_redirect(from, "http://metadata.google.internal/", &p),
        Err(SsrfError::BlockedHost { .. })
    ));
    assert!(matches!(
        check_redirect(from, "file:///etc/passwd", &p),
        Err(SsrfError::UnsupportedScheme(_))
    ));
    assert_eq!(
        check_redirect(from, "/v2/items", &p).unwrap(),
        "https://api.example.com/v2/items"
    );
    assert_eq!(
        check_redirect(from, "other", &p).unwrap(),
        "https://api.example.com/v1/other"
    );
    assert_eq!(
        check_redirect("http://[2606:4700::1111]:8080/a/b", "/c", &p).unwrap(),
        "http://[2606:4700::1111]:8080/c"
    );
    let allow = SsrfPolicy {
        host_allowlist: Some(vec!["api.example.com".into()]),
        ..SsrfPolicy::default()
    };
    assert!(matches!(
        check_redirect(from, "https://elsewhere.example/", &allow),
        Err(SsrfError::NotAllowlisted { .. })
    ));
}

// ---- against listeners on 127.0.0.1 only ----

/// Serves one connection with `response`, returning the request it read.
fn serve_once(listener: TcpListener, response: String) -> JoinHandle<String> {
    std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        s.write_all(response.as_bytes()).unwrap();
        String::from_utf8_lossy(&buf).to_string()
    })
}

fn listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    (l, port)
}

const OK: &str = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";

fn assert_no_connection(l: &TcpListener) {
    l.set_nonblocking(true).unwrap();
    match l.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("unexpected connection from {peer}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn loopback_listener_refused_by_default_reached_with_allowance() {
    let (l, port) = listener();
    let url = format!("http://127.0.0.1:{port}/hello");
    let e = client(SsrfPolicy::default()).get(&url).unwrap_err();
    assert_eq!(e.to_string(), "refused: 127.0.0.1 is a loopback address");
    assert_no_connection(&l);

    let server = serve_once(l, OK.to_string());
    let resp = client(loopback()).get(&url).unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"ok");
    let req = server.join().unwrap();
    assert!(req.starts_with("GET /hello HTTP/1.1\r\n"), "{req}");
}

#[test]
fn pinned_resolver_connects_only_to_the_vetted_address() {
    let (l, port) = listener();
    let vetted = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let agent = |host: &str| {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_global(Some(Duration::from_secs(10)))
            .build();
        ureq::Agent::with_parts(
            config,
            DefaultConnector::new(),
            PinnedResolver::new(Host::Name(host.into()), port, vec![vetted]),
        )
    };
    // Another host than the one pinned fails in the resolver, before any connection.
    let err = agent("pinned.invalid")
        .get(&format!("http://other.invalid:{port}/"))
        .call()
        .unwrap_err();
    assert!(
        err.to_string().contains("vetted for pinned.invalid"),
        "{err}"
    );
    assert_no_connection(&l);

    // The pinned name (which no DNS knows) goes to the vetted address.
    let server = serve_once(l, OK.to_string());
    let mut resp = agent("pinned.invalid")
        .get(&format!("http://PINNED.invalid:{port}/x"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "ok");
    let req = server.join().unwrap();
    assert!(
        req.to_ascii_lowercase().contains("host: pinned.invalid"),
        "{req}"
    );
}

#[test]
fn redirect_to_metadata_is_not_followed() {
    let (l, port) = listener();
    let server = serve_once(
        l,
        "HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/latest/meta-data/\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
            .to_string(),
    );
    let c = client(loopback());
    let url = format!("http://127.0.0.1:{port}/start");
    let e = c.get_following(&url).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: 169.254.169.254 is a link-local / cloud metadata address"
    );
    server.join().unwrap();
}

#[test]
fn redirect_is_returned_not_followed_by_get() {
    let (l, port) = listener();
    let server = serve_once(
        l,
        "HTTP/1.1 301 Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
            .to_string(),
    );
    let resp = client(loopback())
        .get(&format!("http://127.0.0.1:{port}/"))
        .unwrap();
    assert_eq!(resp.status, 301);
    assert_eq!(resp.location.as_deref(), Some("/elsewhere"));
    server.join().unwrap();
}

#[test]
fn post_json_reaches_allowed_loopback() {
    let (l, port) = listener();
    let server = serve_once(
        l,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\
         Connection: close\r\n\r\n{\"ok\":true}"
            .to_string(),
    );
    let c = client(SsrfPolicy {
        allow_loopback: true,
        host_allowlist: Some(vec![format!("127.0.0.1:{port}")]),
        ..SsrfPolicy::default()
    });
    let resp = c
        .post_json(
            &format!("http://127.0.0.1:{port}/v1/embeddings"),
            &[("authorization", "Bearer test")],
            &serde_json::json!({"input": "hi"}),
        )
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.content_type.as_deref(), Some("application/json"));
    assert_eq!(resp.body, br#"{"ok":true}"#);
    let req = server.join().unwrap();
    assert!(req.starts_with("POST /v1/embeddings HTTP/1.1\r\n"), "{req}");
    assert!(req.ends_with(r#"{"input":"hi"}"#), "{req}");
}

#[test]
fn guarding_resolver_refuses_at_connect_time() {
    let (l, port) = listener();
    let config = ureq::Agent::config_builder()
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(10)))
        .build();
    let agent = ureq::Agent::with_parts(
        config,
        DefaultConnector::new(),
        GuardingResolver::new(SsrfPolicy::default()),
    );
    let err = agent
        .get(&format!("http://127.0.0.1:{port}/"))
        .call()
        .unwrap_err();
    assert!(err.to_string().contains("loopback address"), "{err}");
    assert_no_connection(&l);
}

#[test]
fn oversized_body_is_an_error() {
    let (l, port) = listener();
    let server = serve_once(
        l,
        "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789".to_string(),
    );
    let c = guarded_agent(
        loopback(),
        GuardConfig {
            max_body_bytes: 4,
            ..GuardConfig::default()
        },
    );
    let e = c.get(&format!("http://127.0.0.1:{port}/")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "request to 127.0.0.1 failed: the response body exceeds 4 bytes"
    );
    server.join().unwrap();
}

#[test]
fn refusals_carry_a_typed_class_that_callers_choose_their_hint_from() {
    let class = |ip: &str| match check_ip(ip.parse().unwrap(), &SsrfPolicy::default()) {
        Err(SsrfError::BlockedAddress { class, .. }) => class,
        other => panic!("{ip}: {other:?}"),
    };
    assert_eq!(class("127.0.0.1"), AddressClass::Loopback);
    assert_eq!(class("::1"), AddressClass::Loopback);
    // An embedded form is the class of the address it embeds (its text says more).
    assert_eq!(class("::ffff:127.0.0.1"), AddressClass::Loopback);
    assert_eq!(class("64:ff9b::a00:1"), AddressClass::Private);
    assert_eq!(class("10.1.2.3"), AddressClass::Private);
    assert_eq!(class("192.168.0.1"), AddressClass::Private);
    assert_eq!(class("100.64.0.1"), AddressClass::Shared);
    assert_eq!(class("fd12::1"), AddressClass::UniqueLocal);
    assert_eq!(class("169.254.169.254"), AddressClass::Metadata);
    assert_eq!(class("fd00:ec2::254"), AddressClass::Metadata);
    assert_eq!(class("169.254.1.1"), AddressClass::Reserved);
    assert_eq!(class("224.0.0.1"), AddressClass::Reserved);
    // The text for humans is what it was.
    let e = check_ip("::ffff:127.0.0.1".parse().unwrap(), &SsrfPolicy::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "refused: ::ffff:127.0.0.1 is a loopback address (ipv4-mapped form of 127.0.0.1)"
    );

    let policy = SsrfPolicy {
        deny_hosts: vec!["evil.example".into()],
        ..SsrfPolicy::default()
    };
    let host = |h: &str| match check_host(&parse_host(h).unwrap(), 443, &policy) {
        Err(SsrfError::BlockedHost { reason, .. }) => reason,
        other => panic!("{h}: {other:?}"),
    };
    assert_eq!(host("metadata.google.internal"), HostBlock::MetadataName);
    assert_eq!(host("evil.example"), HostBlock::Denied);
    let e = check_host(&parse_host("evil.example").unwrap(), 443, &policy).unwrap_err();
    assert_eq!(e.to_string(), "refused: evil.example is denied by policy");
}
