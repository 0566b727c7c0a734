//! The SSRF guard: what an outbound HTTP call made on a tenant's behalf may reach.
//!
//! A call goes through four gates, and fails closed at each:
//!
//! 1. [`parse_url_host`]: `http`/`https` only, no userinfo, no backslashes, spaces or control
//!    characters, IPv4 hosts read in every form a resolver or a browser would accept
//!    (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`), bracketed IPv6 without zone ids; a host
//!    whose last label starts with a digit must be a valid IPv4 address or it is refused.
//! 2. [`check_host`]: cloud metadata host names are refused by name, then the policy's
//!    `deny_hosts` and `host_allowlist` (exact hosts and `*.suffix` wildcards, optional
//!    `:port`).
//! 3. [`resolve_and_check`]: DNS resolution, and every resolved address goes through
//!    [`check_ip`]; one blocked address refuses the whole host (a name that resolves to both a
//!    public and a private address is refused).
//! 4. The connection is made to the vetted addresses only: [`PinnedResolver`] is the resolver of
//!    the `ureq` agent, so DNS rebinding between check and connect cannot swap the address. The
//!    agent has no proxy and follows no redirects; [`check_redirect`] re-checks a hop the caller
//!    chooses to follow ([`GuardedClient::get_following`] does this).
//!
//! [`check_ip`] refuses loopback, unspecified, private, link-local, CGNAT, multicast, broadcast,
//! reserved, documentation, benchmarking and IETF-protocol addresses, the IPv6 forms that embed
//! IPv4 (mapped, compatible, translated, 6to4, Teredo, NAT64), site-local, discard-only, and
//! everything outside global unicast `2000::/3`. Loopback is allowed only with
//! [`SsrfPolicy::allow_loopback`] and private ranges only with [`SsrfPolicy::allow_private`]:
//! both come from the operator's `config.toml`, never from anything a tenant or the agent can
//! write. Cloud metadata addresses are refused whatever the policy says.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

/// What outbound calls may reach. [`Default`] fails closed: public addresses only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    /// Allow `127.0.0.0/8` and `::1` (a local model server such as Ollama). Only from the
    /// operator's configuration.
    pub allow_loopback: bool,
    /// Allow the private ranges `10/8`, `172.16/12`, `192.168/16`, `100.64/10` (CGNAT) and
    /// `fc00::/7`. Only from the operator's configuration. Metadata addresses stay refused.
    pub allow_private: bool,
    /// If set, only these hosts may be reached: `api.example.com`, `*.example.com` (any
    /// subdomain, not the apex), each optionally with `:port` (`[::1]:8080` for IPv6).
    pub host_allowlist: Option<Vec<String>>,
    /// Hosts refused even when allowed otherwise; same pattern syntax as the allowlist.
    pub deny_hosts: Vec<String>,
}

/// The class of a refused address: callers pick their hint (which operator setting, if any,
/// would allow it) from this, never from [`SsrfError::BlockedAddress`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Loopback (`127/8`, `::1`); [`SsrfPolicy::allow_loopback`] allows it.
    Loopback,
    /// Private (`10/8`, `172.16/12`, `192.168/16`); [`SsrfPolicy::allow_private`] allows it.
    Private,
    /// Shared (CGNAT, `100.64/10`); [`SsrfPolicy::allow_private`] allows it.
    Shared,
    /// IPv6 unique local (`fc00::/7`); [`SsrfPolicy::allow_private`] allows it.
    UniqueLocal,
    /// A cloud metadata address; never allowed.
    Metadata,
    /// Any other address no setting allows (link-local, multicast, documentation, reserved).
    Reserved,
}

/// Why a host name is refused whatever it resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostBlock {
    /// A cloud metadata host name (`metadata.google.internal`, ...); never allowed.
    MetadataName,
    /// A `deny_hosts` rule names it.
    Denied,
}

impl fmt::Display for HostBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostBlock::MetadataName => "a cloud metadata host name",
            HostBlock::Denied => "denied by policy",
        })
    }
}

/// Why an outbound call was refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsrfError {
    /// A scheme other than `http` or `https`.
    UnsupportedScheme(String),
    /// The URL could not be read safely.
    InvalidUrl {
        /// The URL (truncated).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL carries userinfo (`user@host`).
    Userinfo {
        /// The URL (truncated, userinfo kept so the trick is visible).
        url: String,
    },
    /// The host is an address, or resolves to an address, that the policy refuses.
    BlockedAddress {
        /// The host as named.
        host: String,
        /// The refused address.
        ip: IpAddr,
        /// Its class, for a caller choosing a hint (never decide on `reason`'s text).
        class: AddressClass,
        /// Which kind of address it is, for humans.
        reason: String,
    },
    /// The host name is refused (metadata name, `deny_hosts`).
    BlockedHost {
        /// The host.
        host: String,
        /// Why.
        reason: HostBlock,
    },
    /// An allowlist is set and does not name this host and port.
    NotAllowlisted {
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// DNS resolution failed or found nothing.
    Resolve {
        /// The host.
        host: String,
        /// The resolver's message.
        message: String,
    },
    /// The HTTP client was asked to connect to a host other than the one vetted.
    PinMismatch {
        /// The vetted host and port.
        vetted: String,
        /// What the client asked for.
        requested: String,
    },
    /// The request failed after the checks (connection, TLS, protocol, body size).
    Transport {
        /// The host.
        host: String,
        /// What happened.
        message: String,
    },
    /// More redirects than allowed.
    TooManyRedirects {
        /// The last URL reached.
        url: String,
    },
}

impl fmt::Display for SsrfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SsrfError::UnsupportedScheme(s) => {
                write!(
                    f,
                    "refused: scheme {s:?} is not allowed (http and https only)"
                )
            }
            SsrfError::InvalidUrl { url, reason } => {
                write!(f, "refused: invalid url {url:?}: {reason}")
            }
            SsrfError::Userinfo { url } => {
                write!(
                    f,
                    "refused: url {url:?} carries userinfo (user@host), which is not allowed"
                )
            }
            SsrfError::BlockedAddress {
                host, ip, reason, ..
            } => {
                if host == &ip.to_string() {
                    write!(f, "refused: {host} is a {reason}")
                } else {
                    write!(f, "refused: {host} resolves to {ip}, a {reason}")
                }
            }
            SsrfError::BlockedHost { host, reason } => write!(f, "refused: {host} is {reason}"),
            SsrfError::NotAllowlisted { host, port } => {
                write!(f, "refused: {host}:{port} is not in the host allowlist")
            }
            SsrfError::Resolve { host, message } => {
                write!(f, "refused: could not resolve {host}: {message}")
            }
            SsrfError::PinMismatch { vetted, requested } => write!(
                f,
                "refused: the connection was vetted for {vetted} but asked for {requested}"
            ),
            SsrfError::Transport { host, message } => {
                write!(f, "request to {host} failed: {message}")
            }
            SsrfError::TooManyRedirects { url } => {
                write!(f, "refused: too many redirects (last: {url})")
            }
        }
    }
}

impl std::error::Error for SsrfError {}

/// A URL scheme the guard accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `http`
    Http,
    /// `https`
    Https,
}

impl Scheme {
    /// The default port.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// A host, normalized: an IP address, or a lowercase DNS name without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IP literal (IPv4 in any accepted form, or bracketed IPv6).
    Ip(IpAddr),
    /// A DNS name.
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Host names of cloud metadata services, refused by name whatever the policy.
const METADATA_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "metadata.internal",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
];

/// Cloud metadata addresses, refused whatever the policy.
const METADATA_V4: &[Ipv4Addr] = &[
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean…
    Ipv4Addr::new(169, 254, 170, 2),   // AWS ECS task metadata
    Ipv4Addr::new(169, 254, 169, 123), // AWS time sync
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
];
const METADATA_V6: &[Ipv6Addr] = &[
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254), // AWS IMDS over IPv6
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),  // AWS NTP over IPv6
];
const METADATA_REASON: &str = "link-local / cloud metadata address";

/// A URL quoted in an error: its first 200 bytes.
fn clip(s: &str) -> String {
    crate::util::text::clip(s, 200)
}

fn invalid(url: &str, reason: impl Into<String>) -> SsrfError {
    SsrfError::InvalidUrl {
        url: clip(url),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Address checks
// ---------------------------------------------------------------------------------------------

/// Checks one address against the policy.
pub fn check_ip(ip: IpAddr, policy: &SsrfPolicy) -> Result<(), SsrfError> {
    let r = match ip {
        IpAddr::V4(v4) => check_v4(v4, policy).map_err(|(c, r)| (c, r.to_string())),
        IpAddr::V6(v6) => check_v6(v6, policy),
    };
    r.map_err(|(class, reason)| SsrfError::BlockedAddress {
        host: ip.to_string(),
        ip,
        class,
        reason,
    })
}

fn v4_in(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn v6_in(ip: Ipv6Addr, net: Ipv6Addr, bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

fn check_v4(ip: Ipv4Addr, p: &SsrfPolicy) -> Result<(), (AddressClass, &'static str)> {
    if METADATA_V4.contains(&ip) {
        return Err((AddressClass::Metadata, METADATA_REASON));
    }
    if ip.is_unspecified() {
        return Err((AddressClass::Reserved, "unspecified address"));
    }
    if v4_in(ip, [0, 0, 0, 0], 8) {
        return Err((
            AddressClass::Reserved,
            "reserved \"this network\" address (0.0.0.0/8)",
        ));
    }
    if v4_in(ip, [127, 0, 0, 0], 8) {
        return if p.allow_loopback {
            Ok(())
        } else {
            Err((AddressClass::Loopback, "loopback address"))
        };
    }
    if v4_in(ip, [10, 0, 0, 0], 8)
        || v4_in(ip, [172, 16, 0, 0], 12)
        || v4_in(ip, [192, 168, 0, 0], 16)
    {
        return if p.allow_private {
            Ok(())
        } else {
            Err((AddressClass::Private, "private address"))
        };
    }
    if v4_in(ip, [100, 64, 0, 0], 10) {
        return if p.allow_private {
            Ok(())
        } else {
            Err((AddressClass::Shared, "shared (cgnat) address"))
        };
    }
    if v4_in(ip, [169, 254, 0, 0], 16) {
        return Err((AddressClass::Reserved, "link-local address"));
    }
    if v4_in(ip, [192, 0, 0, 0], 24) {
        return Err((
            AddressClass::Reserved,
            "ietf protocol assignment address (192.0.0.0/24)",
        ));
    }
    if v4_in(ip, [192, 0, 2, 0], 24)
        || v4_in(ip, [198, 51, 100, 0], 24)
        || v4_in(ip, [203, 0, 113, 0], 24)
    {
        return Err((AddressClass::Reserved, "documentation address"));
    }
    if v4_in(ip, [198, 18, 0, 0], 15) {
        return Err((AddressClass::Reserved, "benchmarking address"));
    }
    if v4_in(ip, [192, 88, 99, 0], 24) {
        return Err((
            AddressClass::Reserved,
            "deprecated 6to4 relay anycast address",
        ));
    }
    if ip.is_broadcast() {
        return Err((AddressClass::Reserved, "broadcast address"));
    }
    if v4_in(ip, [224, 0, 0, 0], 4) {
        return Err((AddressClass::Reserved, "multicast address"));
    }
    if v4_in(ip, [240, 0, 0, 0], 4) {
        return Err((AddressClass::Reserved, "reserved address (240.0.0.0/4)"));
    }
    Ok(())
}

/// The address a host really is when `ip` is an IPv6 form that names an IPv4 address: the
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`, not `::` or `::1`) and NAT64 well-known-prefix (`64:ff9b::a.b.c.d`) forms
/// become `a.b.c.d`; anything else is returned as is. Rules that name addresses (deny and
/// allow patterns) compare canonical forms on both sides, and what is dialed is the
/// canonical form, so `[::ffff:10.0.0.5]` is `10.0.0.5` to every rule.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    let n = u128::from(v6);
    let embeds_v4 = n >> 32 == 0xffff
        || n >> 32 == 0xffff_0000
        || (n >> 32 == 0 && n > 1)
        || v6_in(v6, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
    if embeds_v4 {
        IpAddr::V4(low_v4(v6))
    } else {
        ip
    }
}

/// [`canonical_ip`] of a host that is an address; a name is returned as is.
pub fn canonical_host(host: &Host) -> Host {
    match host {
        Host::Ip(ip) => Host::Ip(canonical_ip(*ip)),
        h => h.clone(),
    }
}

fn embedded(form: &str, v4: Ipv4Addr, p: &SsrfPolicy) -> Result<(), (AddressClass, String)> {
    check_v4(v4, p).map_err(|(c, r)| (c, format!("{r} ({form} of {v4})")))
}

fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    Ipv4Addr::from(u128::from(ip) as u32)
}

fn check_v6(ip: Ipv6Addr, p: &SsrfPolicy) -> Result<(), (AddressClass, String)> {
    let n = u128::from(ip);
    let s = ip.segments();
    if METADATA_V6.contains(&ip) {
        return Err((AddressClass::Metadata, METADATA_REASON.into()));
    }
    if ip.is_unspecified() {
        return Err((AddressClass::Reserved, "unspecified address".into()));
    }
    if ip.is_loopback() {
        return if p.allow_loopback {
            Ok(())
        } else {
            Err((AddressClass::Loopback, "loopback address".into()))
        };
    }
    // Forms that embed an IPv4 address: the embedded address must pass the same rules.
    if n >> 32 == 0xffff {
        return embedded("ipv4-mapped form", low_v4(ip), p);
    }
    if n >> 32 == 0 {
        return embedded("ipv4-compatible form", low_v4(ip), p);
    }
    if n >> 32 == 0xffff_0000 {
        return embedded("ipv4-translated form", low_v4(ip), p);
    }
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return embedded("nat64 form", low_v4(ip), p);
    }
    if v6_in(ip, Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48) {
        // RFC 8215: local-use translation prefix; where the IPv4 address sits depends on the
        // local prefix length, so the whole prefix is refused.
        return Err((
            AddressClass::Reserved,
            "local-use nat64 address (64:ff9b:1::/48)".into(),
        ));
    }
    if v6_in(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        let v4 = Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32);
        return embedded("6to4 form", v4, p);
    }
    if v6_in(ip, Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 32) {
        // Teredo: server address in bits 32..64, client address obfuscated (inverted) in the
        // low 32 bits. Either may lead to an internal host.
        let server = Ipv4Addr::from(((s[2] as u32) << 16) | s[3] as u32);
        let client = Ipv4Addr::from(!(((s[6] as u32) << 16) | s[7] as u32));
        embedded("teredo server", server, p)?;
        return embedded("teredo client", client, p);
    }
    if v6_in(ip, Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7) {
        return if p.allow_private {
            Ok(())
        } else {
            Err((
                AddressClass::UniqueLocal,
                "unique local (private) address".into(),
            ))
        };
    }
    if v6_in(ip, Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10) {
        return Err((AddressClass::Reserved, "link-local address".into()));
    }
    if v6_in(ip, Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10) {
        return Err((AddressClass::Reserved, "site-local address".into()));
    }
    if v6_in(ip, Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0), 8) {
        return Err((AddressClass::Reserved, "multicast address".into()));
    }
    if v6_in(ip, Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64) {
        return Err((AddressClass::Reserved, "discard-only address".into()));
    }
    if v6_in(ip, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32)
        || v6_in(ip, Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20)
    {
        return Err((AddressClass::Reserved, "documentation address".into()));
    }
    if v6_in(ip, Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23) {
        return Err((
            AddressClass::Reserved,
            "ietf protocol assignment address (2001::/23)".into(),
        ));
    }
    if v6_in(ip, Ipv6Addr::new(0x5f00, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Err((
            AddressClass::Reserved,
            "srv6 segment identifier address".into(),
        ));
    }
    if !v6_in(ip, Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3) {
        return Err((
            AddressClass::Reserved,
            "reserved address (not global unicast)".into(),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// URL and host parsing
// ---------------------------------------------------------------------------------------------

/// Reads an IPv4 address the way `inet_aton(3)` and the WHATWG URL parser do: one to four
/// dot-separated parts, each decimal, octal (leading `0`) or hex (`0x`), the last part filling
/// the remaining bytes. `None` if it is not such an address (or a part overflows).
fn parse_ipv4_loose(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for part in &parts {
        nums.push(parse_ipv4_part(part)?);
    }
    let (last, init) = nums.split_last()?;
    let mut v: u64 = 0;
    for (i, n) in init.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        v |= n << (8 * (3 - i));
    }
    let rest_bits = 8 * (4 - init.len() as u32);
    if rest_bits < 64 && *last >= (1u64 << rest_bits) {
        return None;
    }
    v |= last;
    Some(Ipv4Addr::from(u32::try_from(v).ok()?))
}

fn parse_ipv4_part(p: &str) -> Option<u64> {
    if p.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        if h.is_empty() {
            return Some(0);
        }
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Strip leading zeros so long zero runs do not overflow.
    let trimmed = digits.trim_start_matches('0');
    if trimmed.is_empty() {
        return Some(0);
    }
    if trimmed.len() > 12 {
        return None;
    }
    u64::from_str_radix(trimmed, radix).ok()
}

/// Normalizes a host as it appears in a URL or a CONNECT request: an IPv6 literal in brackets
/// (no zone id), an IPv4 literal in any `inet_aton` form, or a DNS name (ASCII letters, digits,
/// `-`, `_`; lowercased; one trailing dot dropped). A name whose last label starts with a digit
/// must be an IPv4 address, or it is refused.
pub fn parse_host(raw: &str) -> Result<Host, SsrfError> {
    let bad = |why: &str| invalid(raw, why.to_string());
    if raw.is_empty() {
        return Err(bad("empty host"));
    }
    if let Some(inner) = raw.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad("unterminated ipv6 literal"))?;
        if inner.contains('%') {
            return Err(bad("ipv6 zone ids are not allowed"));
        }
        let v6: Ipv6Addr = inner.parse().map_err(|_| bad("invalid ipv6 literal"))?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    if raw.contains(':') {
        // A bare IPv6 address (from a resolver or a CONNECT target written without brackets).
        if raw.contains('%') {
            return Err(bad("ipv6 zone ids are not allowed"));
        }
        let v6: Ipv6Addr = raw.parse().map_err(|_| bad("invalid host"))?;
        return Ok(Host::Ip(IpAddr::V6(v6)));
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "host has characters other than letters, digits, '-', '_' and '.' (use punycode)",
        ));
    }
    let lower = raw.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name.is_empty() || name.len() > 253 {
        return Err(bad("bad host length"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.iter().any(|l| l.is_empty() || l.len() > 63) {
        return Err(bad("empty or overlong label in host"));
    }
    let last = labels[labels.len() - 1];
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        return parse_ipv4_loose(name)
            .map(|v4| Host::Ip(IpAddr::V4(v4)))
            .ok_or_else(|| bad("host looks numeric but is not a valid ipv4 address"));
    }
    Ok(Host::Name(name.to_string()))
}

/// Reads the scheme, host and port of an `http`/`https` URL, refusing anything ambiguous.
pub fn parse_url_host(url: &str) -> Result<(Scheme, Host, u16), SsrfError> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(url, "control or whitespace characters"));
    }
    let (scheme, rest) = url
        .split_once(':')
        .ok_or_else(|| invalid(url, "no scheme"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(SsrfError::UnsupportedScheme(clip(other))),
    };
    let rest = rest
        .strip_prefix("//")
        .ok_or_else(|| invalid(url, "expected '//' after the scheme"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.contains('\\') {
        return Err(invalid(url, "backslash in the authority"));
    }
    if authority.contains('@') {
        return Err(SsrfError::Userinfo { url: clip(url) });
    }
    if authority.contains('%') {
        return Err(invalid(url, "percent-encoding in the host"));
    }
    let (host_raw, port_raw) = if authority.starts_with('[') {
        let close = authority
            .find(']')
            .ok_or_else(|| invalid(url, "unterminated ipv6 literal"))?;
        let after = &authority[close + 1..];
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| invalid(url, "junk after the ipv6 literal"))?,
            ),
        };
        (&authority[..=close], port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port_raw {
        None => scheme.default_port(),
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(url, "bad port"));
            }
            match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(invalid(url, "bad port")),
            }
        }
    };
    let host = parse_host(host_raw).map_err(|e| match e {
        SsrfError::InvalidUrl { reason, .. } => invalid(url, reason),
        other => other,
    })?;
    Ok((scheme, host, port))
}

// ---------------------------------------------------------------------------------------------
// Host policy
// ---------------------------------------------------------------------------------------------

/// Whether `host:port` matches `pattern` (`host`, `*.suffix`, each with an optional `:port`).
fn pattern_matches(pattern: &str, host: &Host, port: u16) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let (hpat, ppat) = if let Some(inner) = pattern.strip_prefix('[') {
        match inner.split_once(']') {
            Some((h, rest)) => (h.to_string(), rest.strip_prefix(':').map(str::to_string)),
            None => return false,
        }
    } else {
        match pattern.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p.to_string())),
            _ => (pattern.clone(), None),
        }
    };
    if let Some(p) = ppat {
        if p.parse::<u16>().ok() != Some(port) {
            return false;
        }
    }
    match host {
        // Both sides canonical: a mapped, compatible or NAT64 form of an IPv4 address is that
        // address (a deny of 10.0.0.5 refuses [::ffff:10.0.0.5], and the other way round).
        Host::Ip(ip) => {
            let pip = match parse_host(&hpat) {
                Ok(Host::Ip(pip)) => Some(pip),
                _ => hpat.parse::<IpAddr>().ok(),
            };
            pip.is_some_and(|pip| canonical_ip(pip) == canonical_ip(*ip))
        }
        Host::Name(name) => {
            let hpat = hpat.strip_suffix('.').unwrap_or(&hpat);
            if let Some(suffix) = hpat.strip_prefix("*.") {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix)
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            } else {
                name == hpat
            }
        }
    }
}

/// The name-level checks: metadata host names, `deny_hosts`, `host_allowlist`, and for an IP
/// literal [`check_ip`]. Does not resolve DNS.
pub fn check_host(host: &Host, port: u16, policy: &SsrfPolicy) -> Result<(), SsrfError> {
    if let Host::Name(name) = host {
        if METADATA_NAMES.contains(&name.as_str()) {
            return Err(SsrfError::BlockedHost {
                host: name.clone(),
                reason: HostBlock::MetadataName,
            });
        }
    }
    if policy
        .deny_hosts
        .iter()
        .any(|p| pattern_matches(p, host, port))
    {
        return Err(SsrfError::BlockedHost {
            host: host.to_string(),
            reason: HostBlock::Denied,
        });
    }
    if let Some(allow) = &policy.host_allowlist {
        if !allow.iter().any(|p| pattern_matches(p, host, port)) {
            return Err(SsrfError::NotAllowlisted {
                host: host.to_string(),
                port,
            });
        }
    }
    if let Host::Ip(ip) = host {
        check_ip(*ip, policy)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resolution
// ---------------------------------------------------------------------------------------------

/// Longest wait for DNS when no timeout is given.
const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most system lookups in flight at once in this process. A lookup runs on a detached
/// thread (`getaddrinfo` cannot be cancelled) that outlives a timed-out caller; past this
/// many, a new lookup is refused at once instead of starting one more thread.
pub const MAX_OUTSTANDING_LOOKUPS: usize = 64;

/// A count of lookup threads in flight, with a ceiling.
struct LookupSlots {
    max: usize,
    busy: AtomicUsize,
}

/// Releases a slot when the lookup thread ends (or was never started).
struct LookupSlot(&'static LookupSlots);

impl Drop for LookupSlot {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

impl LookupSlots {
    const fn new(max: usize) -> Self {
        LookupSlots {
            max,
            busy: AtomicUsize::new(0),
        }
    }

    fn take(&'static self) -> Option<LookupSlot> {
        let prev = self.busy.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(LookupSlot(self))
    }
}

static LOOKUPS: LookupSlots = LookupSlots::new(MAX_OUTSTANDING_LOOKUPS);

fn lookup(name: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, SsrfError> {
    let target = (name.to_string(), port);
    lookup_in(&LOOKUPS, name, timeout, move || {
        target
            .to_socket_addrs()
            .map(|it| it.collect::<Vec<_>>())
            .map_err(|e| e.to_string())
    })
}

/// Runs `resolve` on a detached thread holding one of `slots`, waiting at most `timeout`.
fn lookup_in(
    slots: &'static LookupSlots,
    name: &str,
    timeout: Duration,
    resolve: impl FnOnce() -> Result<Vec<SocketAddr>, String> + Send + 'static,
) -> Result<Vec<SocketAddr>, SsrfError> {
    let Some(slot) = slots.take() else {
        return Err(SsrfError::Resolve {
            host: name.to_string(),
            message: format!(
                "too many DNS lookups in progress ({} waiting for an answer); try again later",
                slots.max
            ),
        });
    };
    let (tx, rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("bulkhead-dns".into())
        .spawn(move || {
            let _slot = slot;
            let _ = tx.send(resolve());
        });
    if let Err(e) = spawned {
        return Err(SsrfError::Resolve {
            host: name.to_string(),
            message: format!("cannot start a lookup thread: {e}"),
        });
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(message)) => Err(SsrfError::Resolve {
            host: name.to_string(),
            message,
        }),
        Err(_) => Err(SsrfError::Resolve {
            host: name.to_string(),
            message: format!("timed out after {timeout:?}"),
        }),
    }
}

/// The system resolver (`getaddrinfo`), given at most `timeout`: what [`resolve_and_check`]
/// uses. No address is checked here; pass it to [`resolve_and_check_with`] for that.
pub fn system_lookup(
    name: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, SsrfError> {
    lookup(name, port, timeout)
}

fn resolve_all_with(
    host: &Host,
    port: u16,
    policy: &SsrfPolicy,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, SsrfError> {
    resolve_and_check_with(host, port, policy, |name, port| lookup(name, port, timeout))
}

/// [`resolve_and_check_all`] with the resolver given: [`check_host`], then `lookup(name,
/// port)` for a DNS name (an IP literal is not looked up), then [`check_ip`] on every address
/// (one blocked address refuses the host). Returns the vetted addresses in their canonical
/// form ([`canonical_ip`]: an IPv6 form of an IPv4 address is that IPv4 address, which is
/// what gets dialed), deduplicated, in resolver order. For callers that resolve through overrides or a test resolver (the egress
/// proxy); the caller then connects to these addresses only.
pub fn resolve_and_check_with(
    host: &Host,
    port: u16,
    policy: &SsrfPolicy,
    lookup: impl FnOnce(&str, u16) -> Result<Vec<SocketAddr>, SsrfError>,
) -> Result<Vec<SocketAddr>, SsrfError> {
    check_host(host, port, policy)?;
    let name = match host {
        Host::Ip(ip) => return Ok(vec![SocketAddr::new(canonical_ip(*ip), port)]),
        Host::Name(n) => n,
    };
    let addrs = lookup(name, port)?;
    if addrs.is_empty() {
        return Err(SsrfError::Resolve {
            host: name.clone(),
            message: "no addresses".into(),
        });
    }
    for a in &addrs {
        check_ip(a.ip(), policy).map_err(|e| match e {
            SsrfError::BlockedAddress {
                ip, class, reason, ..
            } => SsrfError::BlockedAddress {
                host: name.clone(),
                ip,
                class,
                reason,
            },
            other => other,
        })?;
    }
    let mut out: Vec<SocketAddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        let a = SocketAddr::new(canonical_ip(a.ip()), a.port());
        if !out.contains(&a) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Checks `host` (as in a URL or CONNECT target), resolves it, and vets every address: one
/// blocked address refuses the host. Returns every vetted address, in resolver order.
pub fn resolve_and_check_all(
    host: &str,
    port: u16,
    policy: &SsrfPolicy,
) -> Result<Vec<SocketAddr>, SsrfError> {
    resolve_all_with(&parse_host(host)?, port, policy, DEFAULT_RESOLVE_TIMEOUT)
}

/// Like [`resolve_and_check_all`], returning the first vetted address (the one to connect to).
pub fn resolve_and_check(
    host: &str,
    port: u16,
    policy: &SsrfPolicy,
) -> Result<SocketAddr, SsrfError> {
    resolve_and_check_all(host, port, policy).map(|v| v[0])
}

/// Resolves `location` (a redirect's `Location`) against `from` and checks the target URL:
/// scheme, host name rules and, for an IP literal, the address. DNS is checked when the hop is
/// fetched (through [`GuardedClient`] or [`resolve_and_check`]). Returns the absolute URL.
pub fn check_redirect(
    from: &str,
    location: &str,
    policy: &SsrfPolicy,
) -> Result<String, SsrfError> {
    let (scheme, host, port) = parse_url_host(from)?;
    let location = location.trim();
    let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            && !s.contains('/')
    });
    let authority = match &host {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        h => h.to_string(),
    };
    let origin = if port == scheme.default_port() {
        format!("{}://{authority}", scheme.as_str())
    } else {
        format!("{}://{authority}:{port}", scheme.as_str())
    };
    let target = if has_scheme {
        location.to_string()
    } else if location.starts_with("//") {
        format!("{}:{location}", scheme.as_str())
    } else if location.starts_with('/') {
        format!("{origin}{location}")
    } else {
        let after = &from[from.find("://").map(|i| i + 3).unwrap_or(0)..];
        let path_start = after.find('/');
        let path = match path_start {
            Some(i) => {
                let p = &after[i..];
                let p = &p[..p.find(['?', '#']).unwrap_or(p.len())];
                &p[..=p.rfind('/').unwrap_or(0)]
            }
            None => "/",
        };
        format!("{origin}{path}{location}")
    };
    let (_, next_host, next_port) = parse_url_host(&target)?;
    check_host(&next_host, next_port, policy)?;
    Ok(target)
}

// ---------------------------------------------------------------------------------------------
// ureq integration
// ---------------------------------------------------------------------------------------------

fn uri_target(uri: &ureq::http::Uri) -> Result<(Host, u16), SsrfError> {
    let s = uri.to_string();
    let raw = uri.host().ok_or_else(|| invalid(&s, "no host"))?;
    let host = parse_host(raw)?;
    let port = match uri.port_u16() {
        Some(p) => p,
        None => match uri.scheme_str() {
            Some("http") => 80,
            Some("https") => 443,
            Some(other) => return Err(SsrfError::UnsupportedScheme(other.to_string())),
            None => return Err(invalid(&s, "no scheme")),
        },
    };
    Ok((host, port))
}

fn to_ureq(e: SsrfError) -> ureq::Error {
    ureq::Error::Io(std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))
}

/// A `ureq` resolver that answers only for the vetted host and port, with the vetted
/// addresses: DNS is never asked again, so rebinding cannot swap the address, and a request to
/// any other host fails before a connection.
#[derive(Debug, Clone)]
pub struct PinnedResolver {
    host: Host,
    port: u16,
    addrs: Vec<SocketAddr>,
}

impl PinnedResolver {
    /// Pins `host:port` to `addrs` (already vetted; at least one).
    pub fn new(host: Host, port: u16, addrs: Vec<SocketAddr>) -> Self {
        PinnedResolver { host, port, addrs }
    }

    /// The pinned addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Resolver for PinnedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (host, port) = uri_target(uri).map_err(to_ureq)?;
        if host != self.host || port != self.port || self.addrs.is_empty() {
            return Err(to_ureq(SsrfError::PinMismatch {
                vetted: format!("{}:{}", self.host, self.port),
                requested: format!("{host}:{port}"),
            }));
        }
        let mut out = self.empty();
        for a in self.addrs.iter().take(16) {
            out.push(*a);
        }
        Ok(out)
    }
}

/// A `ureq` resolver that runs the whole guard ([`check_host`], DNS, [`check_ip`] on every
/// address) at connect time and hands `ureq` only vetted addresses. For long-lived agents
/// (connection reuse); use it with `proxy(None)`, since a proxy would resolve the host itself.
#[derive(Debug, Clone)]
pub struct GuardingResolver {
    policy: SsrfPolicy,
}

impl GuardingResolver {
    /// A resolver enforcing `policy`.
    pub fn new(policy: SsrfPolicy) -> Self {
        GuardingResolver { policy }
    }
}

impl Resolver for GuardingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (host, port) = uri_target(uri).map_err(to_ureq)?;
        let wait = if timeout.after.is_not_happening() {
            DEFAULT_RESOLVE_TIMEOUT
        } else {
            *timeout.after
        };
        let addrs = resolve_all_with(&host, port, &self.policy, wait).map_err(to_ureq)?;
        let mut out = self.empty();
        for a in addrs.into_iter().take(16) {
            out.push(a);
        }
        Ok(out)
    }
}

/// Timeouts and caps of a [`GuardedClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    /// DNS resolution, and the TCP/TLS connect.
    pub connect_timeout: Duration,
    /// A whole request.
    pub request_timeout: Duration,
    /// Largest response body read, in bytes.
    pub max_body_bytes: u64,
    /// Most redirects [`GuardedClient::get_following`] follows.
    pub max_redirects: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(120),
            max_body_bytes: 16 << 20,
            max_redirects: 5,
        }
    }
}

/// A response read through the guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedResponse {
    /// HTTP status (3xx included: redirects are not followed automatically).
    pub status: u16,
    /// The `Location` header, if any.
    pub location: Option<String>,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Retry-After` header, if any (as sent; parse it with
    /// [`crate::llm::classify::parse_retry_after`]).
    pub retry_after: Option<String>,
    /// The body (a larger one is an error).
    pub body: Vec<u8>,
    /// The URL fetched last.
    pub url: String,
}

/// An HTTP client whose every request goes through the guard: parse → check → resolve → pinned
/// connect, no proxy, no automatic redirects.
#[derive(Debug, Clone)]
pub struct GuardedClient {
    policy: SsrfPolicy,
    cfg: GuardConfig,
}

/// A [`GuardedClient`] enforcing `policy`.
pub fn guarded_agent(policy: SsrfPolicy, config: GuardConfig) -> GuardedClient {
    GuardedClient {
        policy,
        cfg: config,
    }
}

/// A vetted request target.
struct Vetted {
    host: Host,
    port: u16,
    addrs: Vec<SocketAddr>,
}

impl GuardedClient {
    /// The policy.
    pub fn policy(&self) -> &SsrfPolicy {
        &self.policy
    }

    /// Parses and checks `url` and resolves its host, returning the vetted addresses; no
    /// connection is made.
    pub fn vet(&self, url: &str) -> Result<Vec<SocketAddr>, SsrfError> {
        self.vet_inner(url).map(|v| v.addrs)
    }

    fn vet_inner(&self, url: &str) -> Result<Vetted, SsrfError> {
        let (_, host, port) = parse_url_host(url)?;
        let addrs = resolve_all_with(&host, port, &self.policy, self.cfg.connect_timeout)?;
        Ok(Vetted { host, port, addrs })
    }

    fn agent(&self, v: &Vetted) -> ureq::Agent {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(self.cfg.connect_timeout))
            .timeout_global(Some(self.cfg.request_timeout))
            .user_agent(concat!("bulkhead/", env!("CARGO_PKG_VERSION")))
            .build();
        ureq::Agent::with_parts(
            config,
            DefaultConnector::new(),
            PinnedResolver::new(v.host.clone(), v.port, v.addrs.clone()),
        )
    }

    fn finish(
        &self,
        url: &str,
        host: &Host,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<GuardedResponse, SsrfError> {
        let transport = |e: ureq::Error| -> SsrfError {
            if let ureq::Error::Io(io) = &e {
                if let Some(s) = io.get_ref().and_then(|i| i.downcast_ref::<SsrfError>()) {
                    return s.clone();
                }
            }
            SsrfError::Transport {
                host: host.to_string(),
                message: e.to_string(),
            }
        };
        let mut resp = r.map_err(transport)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let location = header("location");
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        let mut body = Vec::new();
        resp.body_mut()
            .as_reader()
            .take(self.cfg.max_body_bytes.saturating_add(1))
            .read_to_end(&mut body)
            .map_err(|e| SsrfError::Transport {
                host: host.to_string(),
                message: format!("reading the body: {e}"),
            })?;
        if body.len() as u64 > self.cfg.max_body_bytes {
            return Err(SsrfError::Transport {
                host: host.to_string(),
                message: format!(
                    "the response body exceeds {} bytes",
                    self.cfg.max_body_bytes
                ),
            });
        }
        Ok(GuardedResponse {
            status,
            location,
            content_type,
            retry_after,
            body,
            url: url.to_string(),
        })
    }

    /// `GET url` (a 3xx is returned as is).
    pub fn get(&self, url: &str) -> Result<GuardedResponse, SsrfError> {
        let v = self.vet_inner(url)?;
        let r = self.agent(&v).get(url).call();
        self.finish(url, &v.host, r)
    }

    /// `POST url` with a JSON body and extra headers (a 3xx is returned as is: a redirect
    /// could carry the headers to another host).
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &serde_json::Value,
    ) -> Result<GuardedResponse, SsrfError> {
        let v = self.vet_inner(url)?;
        let bytes = serde_json::to_vec(body).map_err(|e| SsrfError::Transport {
            host: v.host.to_string(),
            message: format!("encoding the body: {e}"),
        })?;
        let mut rb = self
            .agent(&v)
            .post(url)
            .header("content-type", "application/json");
        for (k, val) in headers {
            rb = rb.header(*k, *val);
        }
        let r = rb.send(&bytes[..]);
        self.finish(url, &v.host, r)
    }

    /// `GET url`, following up to [`GuardConfig::max_redirects`] redirects, each hop checked
    /// with [`check_redirect`] and then vetted and pinned like a new request.
    pub fn get_following(&self, url: &str) -> Result<GuardedResponse, SsrfError> {
        let mut current = url.to_string();
        for _ in 0..=self.cfg.max_redirects {
            let resp = self.get(&current)?;
            match (&resp.status, &resp.location) {
                (301 | 302 | 303 | 307 | 308, Some(loc)) => {
                    current = check_redirect(&current, loc, &self.policy)?;
                }
                _ => return Ok(resp),
            }
        }
        Err(SsrfError::TooManyRedirects {
            url: clip(&current),
        })
    }
}

#[cfg(test)]
#[path = "ssrf_tests.rs"]
mod tests;

#[cfg(test)]
mod canonical_tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_forms_of_an_ipv4_address_are_that_address() {
        for (form, v4) in [
            ("::ffff:10.0.0.5", "10.0.0.5"),
            ("::ffff:a00:5", "10.0.0.5"),
            ("::ffff:0:10.0.0.5", "10.0.0.5"),
            ("::10.0.0.5", "10.0.0.5"),
            ("64:ff9b::10.0.0.5", "10.0.0.5"),
            ("64:ff9b::a00:5", "10.0.0.5"),
            ("10.0.0.5", "10.0.0.5"),
        ] {
            assert_eq!(canonical_ip(ip(form)), ip(v4), "{form}");
        }
        for same in [
            "::1",
            "::",
            "2001:db8::1",
            "64:ff9b:1::a00:5",
            "2002:a00:5::1",
        ] {
            assert_eq!(canonical_ip(ip(same)), ip(same), "{same}");
        }
    }

    /// A deny of an IPv4 address holds for every IPv6 form of it, and the other way round;
    /// an allow pattern matches the same way.
    #[test]
    fn address_patterns_match_canonical_forms_on_both_sides() {
        let p = SsrfPolicy {
            allow_loopback: false,
            allow_private: true,
            host_allowlist: None,
            deny_hosts: vec!["10.0.0.5".into(), "[::ffff:10.0.0.6]".into()],
        };
        for h in [
            "[::ffff:10.0.0.5]",
            "[::ffff:a00:5]",
            "[::10.0.0.5]",
            "[64:ff9b::10.0.0.5]",
            "[::ffff:0:10.0.0.5]",
            "10.0.0.5",
            "10.0.0.6",
            "[64:ff9b::a00:6]",
        ] {
            let e = check_host(&parse_host(h).unwrap(), 443, &p).unwrap_err();
            assert!(matches!(e, SsrfError::BlockedHost { .. }), "{h}: {e:?}");
        }
        assert!(check_host(&parse_host("10.0.0.7").unwrap(), 443, &p).is_ok());
        let allow = SsrfPolicy {
            host_allowlist: Some(vec!["[::ffff:10.0.0.9]:443".into()]),
            deny_hosts: Vec::new(),
            ..p
        };
        assert!(check_host(&parse_host("10.0.0.9").unwrap(), 443, &allow).is_ok());
        assert!(check_host(&parse_host("[64:ff9b::a00:9]").unwrap(), 443, &allow).is_ok());
    }

    #[test]
    fn vetted_addresses_come_back_in_ipv4_form() {
        let p = SsrfPolicy {
            allow_private: true,
            ..SsrfPolicy::default()
        };
        let h = parse_host("[::ffff:10.0.0.5]").unwrap();
        let v = resolve_and_check_with(&h, 443, &p, |_, _| unreachable!()).unwrap();
        assert_eq!(v, [SocketAddr::new(ip("10.0.0.5"), 443)]);
        let h = parse_host("pkg.test").unwrap();
        let v = resolve_and_check_with(&h, 80, &p, |_, port| {
            Ok(vec![
                SocketAddr::new(ip("::ffff:10.0.0.5"), port),
                SocketAddr::new(ip("10.0.0.5"), port),
                SocketAddr::new(ip("64:ff9b::a00:6"), port),
            ])
        })
        .unwrap();
        assert_eq!(
            v,
            [
                SocketAddr::new(ip("10.0.0.5"), 80),
                SocketAddr::new(ip("10.0.0.6"), 80)
            ]
        );
    }

    /// Lookups left running by callers that timed out hold their slot until they end; past
    /// the ceiling a new one is refused at once, without a thread.
    #[test]
    fn outstanding_lookups_are_bounded() {
        static SLOTS: LookupSlots = LookupSlots::new(2);
        let mut release = Vec::new();
        for _ in 0..2 {
            let (tx, rx) = mpsc::channel::<()>();
            release.push(tx);
            let e = lookup_in(&SLOTS, "slow.test", Duration::from_millis(20), move || {
                let _ = rx.recv();
                Ok(Vec::new())
            })
            .unwrap_err();
            assert!(e.to_string().contains("timed out"), "{e}");
        }
        let t = std::time::Instant::now();
        let e = lookup_in(&SLOTS, "more.test", Duration::from_secs(5), || {
            Ok(Vec::new())
        })
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(1));
        assert!(e.to_string().contains("too many DNS lookups"), "{e}");
        drop(release);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while SLOTS.busy.load(Ordering::Acquire) > 0 {
            assert!(std::time::Instant::now() < deadline, "slots not released");
            std::thread::sleep(Duration::from_millis(5));
        }
        let a = SocketAddr::new(ip("127.0.0.1"), 1);
        let v = lookup_in(&SLOTS, "ok.test", Duration::from_secs(5), move || {
            Ok(vec![a])
        });
        assert_eq!(v.unwrap(), [a]);
    }
}
