//! Network: the host's loopback services and abstract unix sockets are unreachable, only
//! `lo` is visible, AF_VSOCK and raw sockets are denied while inet and unix sockets work.

use super::*;

// ---- loopback services of the host ---------------------------------------------------------

/// Attack: connect to TCP and UDP services the host listens on at 127.0.0.1 (and ::1).
/// Expected: refused (the sandbox has its own loopback); the host sockets received nothing.
#[test]
fn host_loopback_services_are_unreachable() {
    let Some(sb) = Isolated::new("escape_a::host_loopback_services_are_unreachable") else {
        return;
    };
    let tcp = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    tcp.set_nonblocking(true).expect("nonblocking");
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    udp.set_nonblocking(true).expect("nonblocking");
    let tcp6 = TcpListener::bind("[::1]:0").ok();
    if let Some(l) = &tcp6 {
        l.set_nonblocking(true).expect("nonblocking");
    }
    let tport = tcp.local_addr().expect("addr").port();
    let uport = udp.local_addr().expect("addr").port();
    let t6port = tcp6
        .as_ref()
        .map(|l| l.local_addr().expect("addr").port())
        .unwrap_or(0);
    let body = format!(
        r#"
def tcp(fam, host, port):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect((host, port))
        return "CONNECTED"
    except socket.timeout:
        return "timeout"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["tcp4"] = tcp(socket.AF_INET, "127.0.0.1", {tport})
if {t6port}:
    R["tcp6"] = tcp(socket.AF_INET6, "::1", {t6port})
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    try:
        s.connect(("127.0.0.1", {uport}))
        s.send(b"bulkhead-escape-probe")
        s.send(b"bulkhead-escape-probe")
        return "ANSWERED: " + repr(s.recv(100))
    except socket.timeout:
        return "no answer"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["udp"] = udp()
"#
    );
    let (v, shown) = py_json(&sb, &body);
    assert_ne!(
        field(&v, "tcp4"),
        "CONNECTED",
        "connected to the host's 127.0.0.1:{tport} from inside:\n{shown}"
    );
    if tcp6.is_some() {
        assert_ne!(
            field(&v, "tcp6"),
            "CONNECTED",
            "connected to the host's [::1]:{t6port} from inside:\n{shown}"
        );
    }
    assert!(
        !field(&v, "udp").starts_with("ANSWERED"),
        "UDP answer on 127.0.0.1:{uport}:\n{shown}"
    );
    match tcp.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the host's TCP listener on 127.0.0.1:{tport} got a connection: {other:?}\n{shown}"
        ),
    }
    if let Some(l) = &tcp6 {
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            other => panic!(
                "the host's TCP listener on [::1]:{t6port} got a connection: {other:?}\n{shown}"
            ),
        }
    }
    let mut buf = [0u8; 64];
    match udp.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!(
            "the host's UDP socket on 127.0.0.1:{uport} received a datagram: {other:?}\n{shown}"
        ),
    }
}

// ---- abstract unix sockets of the host -----------------------------------------------------

/// Attack: connect to an abstract unix socket the host listens on (abstract names are scoped
/// by network namespace), and to well-known host socket paths.
/// Expected: every connection fails; the host sockets received nothing.
#[test]
fn host_abstract_unix_sockets_are_unreachable() {
    let Some(sb) = Isolated::new("escape_a::host_abstract_unix_sockets_are_unreachable") else {
        return;
    };
    let sname = unique("abstract-stream");
    let dname = unique("abstract-dgram");
    let saddr = SocketAddr::from_abstract_name(sname.as_bytes()).expect("abstract addr");
    let daddr = SocketAddr::from_abstract_name(dname.as_bytes()).expect("abstract addr");
    let listener = UnixListener::bind_addr(&saddr).expect("bind abstract stream socket");
    listener.set_nonblocking(true).expect("nonblocking");
    let dgram = UnixDatagram::bind_addr(&daddr).expect("bind abstract datagram socket");
    dgram.set_nonblocking(true).expect("nonblocking");
    let body = format!(
        r#"
def conn(kind, addr):
    s = socket.socket(socket.AF_UNIX, kind)
    s.settimeout(2)
    try:
        if kind == socket.SOCK_DGRAM:
            s.sendto(b"bulkhead-escape-probe", addr)
            return "SENT"
        s.connect(addr)
        return "CONNECTED"
    except OSError as ex:
        return ename(ex.errno)
    finally:
        s.close()
R["stream"] = conn(socket.SOCK_STREAM, "\0{sname}")
R["dgram"] = conn(socket.SOCK_DGRAM, "\0{dname}")
for p in ["/run/dbus/system_bus_socket", "/var/run/docker.sock", "/run/docker.sock",
          "/run/systemd/private", "/run/systemd/notify", "/tmp/.X11-unix/X0"]:
    R[p] = conn(socket.SOCK_STREAM, p)
"#
    );
    let (v, shown) = py_json(&sb, &body);
    let obj = v.as_object().expect("object");
    let reached: Vec<(&String, &Value)> = obj
        .iter()
        .filter(|(_, r)| r.as_str().is_some_and(|r| r == "CONNECTED" || r == "SENT"))
        .collect();
    assert!(
        reached.is_empty(),
        "host unix sockets reachable from inside: {reached:?}\n{shown}"
    );
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => {
            panic!("the host's abstract socket @{sname} accepted a connection: {other:?}\n{shown}")
        }
    }
    let mut buf = [0u8; 64];
    match dgram.recv_from(&mut buf) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => {
            panic!("the host's abstract datagram socket @{dname} received data: {other:?}\n{shown}")
        }
    }
}

// ---- interfaces other than lo --------------------------------------------------------------

/// Attack: enumerate network interfaces in every way available.
/// Expected: only `lo`; /sys does not exist; the host's interfaces are unknown by name.
#[test]
fn only_loopback_interface_is_visible() {
    let Some(sb) = Isolated::new("escape_a::only_loopback_interface_is_visible") else {
        return;
    };
    let host_ifaces: Vec<String> = host_interfaces()
        .into_iter()
        .filter(|n| n != "lo")
        .collect();
    let host_json = serde_json::to_string(&host_ifaces).expect("json");
    let body = format!(
        r#"
import fcntl, struct
R["proc_net_dev"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:])
R["sys"] = os.path.exists("/sys")
R["sys_class_net"] = oserr(lambda: os.listdir("/sys/class/net"))
try:
    R["if_nameindex"] = sorted(n for _, n in socket.if_nameindex())
except OSError as ex:
    R["if_nameindex"] = "error " + ename(ex.errno)
def ifconf():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf = ctypes.create_string_buffer(40 * 64)
    out = fcntl.ioctl(s.fileno(), 0x8912, struct.pack("iL", len(buf), ctypes.addressof(buf)))
    n = struct.unpack("iL", out)[0]
    return sorted({{buf.raw[i:i + 16].split(b"\0")[0].decode() for i in range(0, n, 40)}})
try:
    R["siocgifconf"] = ifconf()
except OSError as ex:
    R["siocgifconf"] = "error " + ename(ex.errno)
R["host_names"] = {{n: oserr(lambda: socket.if_nametoindex(n)) for n in {host_json}}}
"#
    );
    let (v, shown) = py_json(&sb, &body);
    let lo_only = serde_json::json!(["lo"]);
    assert_eq!(
        v["proc_net_dev"], lo_only,
        "/proc/net/dev inside lists more than lo:\n{shown}"
    );
    assert_eq!(
        v["sys"],
        Value::Bool(false),
        "/sys exists inside the sandbox:\n{shown}"
    );
    assert!(
        !field(&v, "sys_class_net").starts_with("OK"),
        "/sys/class/net is listable inside:\n{shown}"
    );
    // if_nameindex() uses netlink, which seccomp refuses: an error is fine, a list must be lo.
    let ni = &v["if_nameindex"];
    assert!(
        ni == &lo_only || ni.as_str().is_some_and(|s| s.starts_with("error")),
        "if_nameindex inside: {ni}\n{shown}"
    );
    assert_eq!(
        v["siocgifconf"], lo_only,
        "SIOCGIFCONF inside lists more than lo:\n{shown}"
    );
    let known: Vec<(&String, &Value)> = v["host_names"]
        .as_object()
        .expect("object")
        .iter()
        .filter(|(_, r)| r.as_str().is_some_and(|r| r.starts_with("OK")))
        .collect();
    assert!(
        known.is_empty(),
        "host interfaces resolvable by name inside: {known:?}\n{shown}"
    );
}

// ---- AF_VSOCK and raw sockets --------------------------------------------------------------

#[test]
fn vsock_and_raw_sockets_denied_inet_and_unix_work() {
    let Some(sb) = Isolated::new("vsock_and_raw_sockets_denied_inet_and_unix_work") else {
        return;
    };
    // Sockets are only created (never connected) for the denied families; the working
    // families talk to themselves on 127.0.0.1 and a path under /tmp.
    let out = sb.python(
        r#"
import socket, json, errno, os, threading
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
res = {}
for key, fam, typ, proto in [("vsock_stream", 40, socket.SOCK_STREAM, 0),
                             ("vsock_dgram", 40, socket.SOCK_DGRAM, 0),
                             ("inet_raw_icmp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                             ("inet_raw_tcp", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP),
                             ("inet6_raw", socket.AF_INET6, socket.SOCK_RAW, 58),
                             ("packet_raw", 17, socket.SOCK_RAW, 0),
                             ("packet_dgram", 17, socket.SOCK_DGRAM, 0),
                             ("netlink_raw", 16, socket.SOCK_RAW, 0),
                             ("netlink_dgram", 16, socket.SOCK_DGRAM, 0)]:
    try:
        s = socket.socket(fam, typ, proto)
        s.close()
        res[key] = "created"
    except OSError as e:
        res[key] = name(e)
# What must keep working: TCP and UDP on 127.0.0.1, unix sockets.
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind(("127.0.0.1", 0)); srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)
a, _ = srv.accept(); c.sendall(b"ping"); res["tcp"] = a.recv(4).decode()
u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u1.bind(("127.0.0.1", 0))
u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u2.settimeout(5)
u2.sendto(b"pong", u1.getsockname()); u1.settimeout(5); res["udp"] = u1.recv(4).decode()
path = "/tmp/escb.sock"
us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); us.bind(path); us.listen(1)
uc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); uc.connect(path)
ua, _ = us.accept(); uc.sendall(b"unix"); res["unix"] = ua.recv(4).decode()
p1, p2 = socket.socketpair(); p1.sendall(b"pair"); res["pair"] = p2.recv(4).decode()
print(json.dumps(res))
"#,
    );
    assert!(out.status.success(), "{}", show_status(&out));
    let r = json_out(&out);
    for k in [
        "vsock_stream",
        "vsock_dgram",
        "inet_raw_icmp",
        "inet_raw_tcp",
        "inet6_raw",
        "packet_raw",
        "packet_dgram",
        "netlink_raw",
        "netlink_dgram",
    ] {
        assert_eq!(
            r[k].as_str(),
            Some("EPERM"),
            "socket {k}: {}\n{}",
            r[k],
            show_status(&out)
        );
    }
    assert_eq!(r["tcp"].as_str(), Some("ping"), "{}", show_status(&out));
    assert_eq!(r["udp"].as_str(), Some("pong"), "{}", show_status(&out));
    assert_eq!(r["unix"].as_str(), Some("unix"), "{}", show_status(&out));
    assert_eq!(r["pair"].as_str(), Some("pair"), "{}", show_status(&out));

    let out = sb.sh("if command -v ping >/dev/null; then ping -c1 -W1 127.0.0.1; echo ping=$?; else echo ping=absent; fi");
    let so = text(&out.stdout);
    assert!(
        so.contains("ping=") && !so.contains("ping=0"),
        "ping works inside:\n{}",
        show_status(&out)
    );
}
