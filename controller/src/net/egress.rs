//! Controlled egress: which hosts a workspace's sandbox may reach through the controller's
//! proxy ([`crate::net::proxy`]), and the operator's rules no workspace can override.
//!
//! A sandbox has a network namespace with loopback only. When its workspace has an allowlist,
//! the worker listens on `127.0.0.1:3128` inside and hands each connection to the controller,
//! which serves it as an HTTP proxy (`HTTP_PROXY=http://127.0.0.1:3128`): `CONNECT host:port`
//! tunnels and plain-HTTP absolute-form requests, each checked here, then resolved and pinned
//! through the SSRF guard ([`crate::net::ssrf`]).
//!
//! # The workspace's policy (`workspace.json`, `bulkhead workspace net`)
//!
//! ```json
//! "network": "none"
//! "network": { "allow": ["pypi.org", "*.pythonhosted.org", "github.com:443"],
//!              "max_connections": 32, "bandwidth_bytes_per_sec": 10485760 }
//! ```
//!
//! - `"none"` (the default, also an empty `allow`): no network; the sandbox keeps loopback
//!   only.
//! - A pattern is `host`, `*.domain` or an IP address (`203.0.113.7`, `[2001:db8::1]`), with
//!   an optional `:port`. Host names are lowercased, one trailing dot is dropped.
//! - `*.domain` matches every subdomain at any depth (`files.pythonhosted.org`,
//!   `a.b.pythonhosted.org`), **not** the apex (`pythonhosted.org`): list both when both are
//!   wanted. The domain must have at least two labels (`*.com` is refused) and `*` only
//!   stands as the whole first label (`foo*.com`, `*foo.com`, `a.*.com` are refused).
//! - No port means ports **80 and 443 only** (http and https); any other port must be named
//!   (`registry.example.com:5000`). There is no "any port" pattern.
//! - An IP address in an allowlist matches only a request that names that address; the
//!   operator's address rules (loopback, private ranges, metadata) apply to it as to any
//!   resolved address.
//! - `max_connections` (default [`DEFAULT_MAX_CONNECTIONS`], never more than the operator's
//!   `max_connections_ceiling`): connections open at once through the proxy; one more is
//!   answered `503`.
//! - `bandwidth_bytes_per_sec` (default: unlimited): a cap on each direction, shared by all
//!   the workspace's connections.
//! - Both caps hold for the workspace as a whole (all its sandboxes together) within one
//!   controller process: two processes that each run a sandbox of it (two `bulkhead exec`)
//!   each apply them separately.
//!
//! # The operator's rules (`config.toml`, `[network]`, never from a tenant)
//!
//! ```toml
//! [network]
//! deny = ["*.internal.example.com", "pastebin.com", "198.51.100.7"]
//! allow_loopback = false        # host 127.0.0.0/8 and ::1 reachable through the proxy
//! allow_private = false         # 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7
//! resolve = ["pkg.test:127.0.0.1"]   # static answers, like curl --resolve (before DNS)
//! max_connections_ceiling = 256 # no workspace's max_connections goes above this
//! max_connections_total = 1024  # proxied connections open at once, all workspaces (503 beyond)
//! ```
//!
//! - `deny` uses the same pattern syntax, but a pattern without a port refuses **every**
//!   port. A denied IP address also refuses any name that resolves to it, and every IPv6
//!   form of it (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible, NAT64 `64:ff9b::/96`): rules
//!   compare addresses in canonical form ([`ssrf::canonical_ip`]), and the proxy dials the
//!   IPv4 form.
//! - Cloud metadata names and addresses are refused whatever anyone configures; so are
//!   link-local, multicast, reserved and documentation ranges (see [`crate::net::ssrf`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::net::ssrf::{self, Host, SsrfError, SsrfPolicy};

/// Connections open at once through the proxy, per workspace, when the workspace sets none.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 32;
/// Largest `max_connections` a workspace may set.
pub const MAX_CONNECTIONS_LIMIT: u32 = 4096;
/// Default of the operator's `[network] max_connections_ceiling`: the most connections any
/// workspace may have open at once, whatever it sets.
pub const DEFAULT_MAX_CONNECTIONS_CEILING: u32 = 256;
/// Default of the operator's `[network] max_connections_total`: proxied connections open at
/// once in one controller process, all workspaces together.
pub const DEFAULT_MAX_CONNECTIONS_TOTAL: u32 = 1024;
/// Largest `max_connections_total` accepted (each connection is two threads and three fds).
pub const MAX_CONNECTIONS_TOTAL_LIMIT: u32 = 65536;
/// Smallest bandwidth cap, bytes per second (below this, TLS handshakes time out).
pub const MIN_BANDWIDTH: u64 = 1024;
/// Most patterns in one allowlist (or in the operator's `deny`).
pub const MAX_PATTERNS: usize = 256;
/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 270;

const HOW: &str = "write host, *.domain or an IP address, each with an optional :port \
                   (examples: pypi.org, *.pythonhosted.org, github.com:443, [2001:db8::1]:8443)";

// ---------------------------------------------------------------------------------------------
// Patterns
// ---------------------------------------------------------------------------------------------

/// A validated host pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    host: PatternHost,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternHost {
    Name(String),
    Wildcard(String),
    Ip(IpAddr),
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            PatternHost::Name(n) => f.write_str(n)?,
            PatternHost::Wildcard(d) => write!(f, "*.{d}")?,
            PatternHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}")?,
            PatternHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]")?,
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl Pattern {
    /// Parses and validates a pattern; the error says what is wrong and how to write it.
    pub fn parse(raw: &str) -> Result<Pattern> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "invalid host pattern {:?}: {why}; {HOW}",
                clip(raw)
            ))
        };
        if raw.is_empty() {
            return Err(bad("it is empty"));
        }
        if raw.len() > MAX_PATTERN_LEN {
            return Err(bad("it is too long"));
        }
        if raw.contains("://") {
            return Err(bad("give the host, not a URL (no scheme)"));
        }
        if raw.contains('/') {
            return Err(bad("give the host, not a URL (no path)"));
        }
        if raw.contains('@') {
            return Err(bad("user@ is not part of a host"));
        }
        if raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii())
        {
            return Err(bad(
                "it has spaces, control or non-ASCII characters (write internationalized names in punycode, xn--…)",
            ));
        }
        // Split off the port.
        let (host_part, port_part) = if let Some(inner) = raw.strip_prefix('[') {
            let (v6, rest) = inner
                .split_once(']')
                .ok_or_else(|| bad("unterminated [ipv6] literal"))?;
            let port = match rest {
                "" => None,
                r => Some(
                    r.strip_prefix(':')
                        .ok_or_else(|| bad("junk after the [ipv6] literal"))?,
                ),
            };
            (HostPart::V6(v6), port)
        } else {
            match raw.matches(':').count() {
                0 => (HostPart::Other(raw), None),
                1 => {
                    let (h, p) = raw.split_once(':').unwrap_or((raw, ""));
                    (HostPart::Other(h), Some(p))
                }
                _ => {
                    return Err(bad(
                        "an IPv6 address must be in brackets, e.g. [2001:db8::1]:443",
                    ))
                }
            }
        };
        let port = match port_part {
            None => None,
            Some(p) => {
                if p == "*" {
                    return Err(bad(
                        "there is no any-port pattern: list each port (no port means 80 and 443)",
                    ));
                }
                if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad("the port must be a number from 1 to 65535"));
                }
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => return Err(bad("the port must be a number from 1 to 65535")),
                }
            }
        };
        let host = match host_part {
            HostPart::V6(v6) => {
                if v6.contains('%') {
                    return Err(bad("ipv6 zone ids are not allowed"));
                }
                let ip: Ipv6Addr = v6.parse().map_err(|_| bad("invalid ipv6 address"))?;
                PatternHost::Ip(IpAddr::V6(ip))
            }
            HostPart::Other(h) => {
                let lower = h.to_ascii_lowercase();
                let h = lower.strip_suffix('.').unwrap_or(&lower);
                if h.is_empty() {
                    return Err(bad("the host is empty"));
                }
                if let Some(domain) = h.strip_prefix("*.") {
                    if domain.contains('*') {
                        return Err(bad(
                            "'*' may only be the whole first label, as in *.example.com",
                        ));
                    }
                    match ssrf::parse_host(domain) {
                        Ok(Host::Name(d)) => {
                            if !d.contains('.') {
                                return Err(bad(
                                    "a wildcard needs a domain of at least two labels (*.com would allow a whole top-level domain)",
                                ));
                            }
                            PatternHost::Wildcard(d)
                        }
                        Ok(Host::Ip(_)) => {
                            return Err(bad("a wildcard cannot cover an IP address"))
                        }
                        Err(e) => return Err(bad(&ssrf_reason(&e))),
                    }
                } else if h.contains('*') {
                    return Err(bad(
                        "'*' may only be the whole first label, as in *.example.com",
                    ));
                } else {
                    match ssrf::parse_host(h) {
                        Ok(Host::Name(n)) => PatternHost::Name(n),
                        Ok(Host::Ip(ip)) => {
                            // Only the canonical dotted quad: 0x7f.1 or 2130706433 in a policy
                            // is a mistake or a trick.
                            if ip.to_string() != h {
                                return Err(bad(&format!(
                                    "write the address in dotted-quad form ({ip})"
                                )));
                            }
                            PatternHost::Ip(ip)
                        }
                        Err(e) => return Err(bad(&ssrf_reason(&e))),
                    }
                }
            }
        };
        Ok(Pattern { host, port })
    }

    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Whether this pattern, read as an allowlist entry (no port: 80 and 443), admits
    /// `host:port`.
    pub fn allows(&self, host: &Host, port: u16) -> bool {
        self.allowlist_entries()
            .iter()
            .any(|e| host_allowed_by(e, host, port))
    }

    /// The SSRF guard's allowlist entries for this pattern: with no port, `p:80` and `p:443`.
    fn allowlist_entries(&self) -> Vec<String> {
        match self.port {
            Some(_) => vec![self.to_string()],
            None => [80u16, 443]
                .iter()
                .map(|p| {
                    Pattern {
                        host: self.host.clone(),
                        port: Some(*p),
                    }
                    .to_string()
                })
                .collect(),
        }
    }
}

enum HostPart<'a> {
    V6(&'a str),
    Other(&'a str),
}

/// Whether the SSRF guard's allowlist entry `entry` admits `host:port` (through
/// [`ssrf::check_host`], so the matching rules are the guard's, not a copy).
fn host_allowed_by(entry: &str, host: &Host, port: u16) -> bool {
    let probe = SsrfPolicy {
        allow_loopback: true,
        allow_private: true,
        host_allowlist: Some(vec![entry.to_string()]),
        deny_hosts: Vec::new(),
    };
    ssrf::check_host(host, port, &probe).is_ok()
}

fn ssrf_reason(e: &SsrfError) -> String {
    match e {
        SsrfError::InvalidUrl { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn cap_in_range(v: Option<i64>, default: u32, max: u32, key: &str) -> Result<u32> {
    match v {
        None => Ok(default),
        Some(n) if n >= 1 && n <= i64::from(max) => Ok(n as u32),
        Some(n) => Err(Error::Invalid(format!(
            "{key}: must be from 1 to {max} (got {n})"
        ))),
    }
}

/// A pattern quoted in an error: its first 80 bytes.
fn clip(s: &str) -> String {
    crate::util::text::clip(s, 80)
}

/// Validates a pattern and returns its normalized form (`PyPI.org.` → `pypi.org`).
pub fn normalize_pattern(raw: &str) -> Result<String> {
    Pattern::parse(raw).map(|p| p.to_string())
}

// ---------------------------------------------------------------------------------------------
// The workspace's policy
// ---------------------------------------------------------------------------------------------

/// A workspace's egress policy, stored as `network` in `workspace.json`. [`Default`] is
/// `"none"`: no network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// Allowed host patterns, normalized (see the module docs). Empty: no network.
    pub allow: Vec<String>,
    /// Connections open at once (None: [`DEFAULT_MAX_CONNECTIONS`]).
    pub max_connections: Option<u32>,
    /// Bandwidth cap per direction in bytes per second (None: unlimited).
    pub bandwidth_bytes_per_sec: Option<u64>,
}

/// How `network` is written in `workspace.json`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NetworkRepr {
    Mode(String),
    Rules(RulesRepr),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesRepr {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bandwidth_bytes_per_sec: Option<u64>,
}

impl Serialize for NetworkPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        if self.is_default() {
            NetworkRepr::Mode("none".into()).serialize(s)
        } else {
            NetworkRepr::Rules(RulesRepr {
                allow: self.allow.clone(),
                max_connections: self.max_connections,
                bandwidth_bytes_per_sec: self.bandwidth_bytes_per_sec,
            })
            .serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for NetworkPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let repr = NetworkRepr::deserialize(d).map_err(|_| {
            D::Error::custom(
                "invalid network: expected \"none\" or {\"allow\": [patterns], \"max_connections\": N, \"bandwidth_bytes_per_sec\": N}",
            )
        })?;
        let p = match repr {
            NetworkRepr::Mode(m) if m == "none" => NetworkPolicy::default(),
            NetworkRepr::Mode(m) => {
                return Err(D::Error::custom(format!(
                    "invalid network {m:?}: expected \"none\" or {{\"allow\": [patterns]}}"
                )))
            }
            NetworkRepr::Rules(r) => NetworkPolicy {
                allow: r.allow,
                max_connections: r.max_connections,
                bandwidth_bytes_per_sec: r.bandwidth_bytes_per_sec,
            },
        };
        p.validate().map_err(|e| D::Error::custom(e.to_string()))?;
        Ok(p)
    }
}

impl NetworkPolicy {
    /// A policy allowing `patterns` (validated and normalized).
    pub fn allowing<S: AsRef<str>>(patterns: &[S]) -> Result<NetworkPolicy> {
        let mut p = NetworkPolicy::default();
        p.add(patterns)?;
        Ok(p)
    }

    /// `"none"` with no caps set (what is left out of `workspace.json`).
    pub fn is_default(&self) -> bool {
        *self == NetworkPolicy::default()
    }

    /// Whether the sandbox gets the proxy at all (some host is allowed).
    pub fn is_enabled(&self) -> bool {
        !self.allow.is_empty()
    }

    /// The connection cap in force.
    pub fn max_connections(&self) -> u32 {
        self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS)
    }

    /// Checks every pattern (and that each is stored normalized) and the caps.
    pub fn validate(&self) -> Result<()> {
        if self.allow.len() > MAX_PATTERNS {
            return Err(Error::Invalid(format!(
                "network: at most {MAX_PATTERNS} allow patterns (there are {})",
                self.allow.len()
            )));
        }
        for (i, raw) in self.allow.iter().enumerate() {
            let norm = normalize_pattern(raw)?;
            if &norm != raw {
                return Err(Error::Invalid(format!(
                    "network: allow pattern {raw:?} is not in normal form; write {norm:?}"
                )));
            }
            if self.allow[..i].contains(raw) {
                return Err(Error::Invalid(format!(
                    "network: allow pattern {raw:?} is listed twice"
                )));
            }
        }
        if let Some(n) = self.max_connections {
            if n == 0 || n > MAX_CONNECTIONS_LIMIT {
                return Err(Error::Invalid(format!(
                    "network: max_connections must be from 1 to {MAX_CONNECTIONS_LIMIT} (got {n})"
                )));
            }
        }
        if let Some(b) = self.bandwidth_bytes_per_sec {
            if b < MIN_BANDWIDTH {
                return Err(Error::Invalid(format!(
                    "network: bandwidth must be at least {MIN_BANDWIDTH} bytes/s (got {b}); leave it unset for no cap"
                )));
            }
        }
        Ok(())
    }

    /// Adds patterns (validated first, all or nothing). Returns the normalized patterns added
    /// and those already present.
    pub fn add<S: AsRef<str>>(&mut self, patterns: &[S]) -> Result<(Vec<String>, Vec<String>)> {
        let norm = patterns
            .iter()
            .map(|p| normalize_pattern(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let (mut added, mut already) = (Vec::new(), Vec::new());
        let mut next = self.allow.clone();
        for p in norm {
            if next.contains(&p) {
                if !already.contains(&p) {
                    already.push(p);
                }
            } else {
                next.push(p.clone());
                added.push(p);
            }
        }
        if next.len() > MAX_PATTERNS {
            return Err(Error::Invalid(format!(
                "network: at most {MAX_PATTERNS} allow patterns"
            )));
        }
        self.allow = next;
        Ok((added, already))
    }

    /// Removes patterns (validated first). Returns the normalized patterns removed and those
    /// that were not in the allowlist (not an error: removing is idempotent).
    pub fn remove<S: AsRef<str>>(&mut self, patterns: &[S]) -> Result<(Vec<String>, Vec<String>)> {
        let norm = patterns
            .iter()
            .map(|p| normalize_pattern(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let (mut removed, mut absent) = (Vec::new(), Vec::new());
        for p in norm {
            if let Some(i) = self.allow.iter().position(|a| *a == p) {
                self.allow.remove(i);
                removed.push(p);
            } else if !removed.contains(&p) && !absent.contains(&p) {
                absent.push(p);
            }
        }
        Ok((removed, absent))
    }

    /// The allow patterns that still admit `host:port` (to tell the operator why a removal
    /// did not take something away).
    pub fn allowed_by(&self, host: &Host, port: u16) -> Vec<String> {
        self.allow
            .iter()
            .filter(|p| Pattern::parse(p).is_ok_and(|p| p.allows(host, port)))
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The operator's rules
// ---------------------------------------------------------------------------------------------

/// `[network]` of `config.toml`: rules no workspace can override. [`Default`] fails closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorNetwork {
    /// Patterns refused for every workspace (no port: every port), normalized.
    pub deny: Vec<String>,
    /// Host loopback (`127.0.0.0/8`, `::1`) reachable through the proxy.
    pub allow_loopback: bool,
    /// Private ranges (`10/8`, `172.16/12`, `192.168/16`, `100.64/10`, `fc00::/7`) reachable.
    pub allow_private: bool,
    /// Static answers consulted before DNS (`host` → addresses), like `curl --resolve`.
    pub resolve: Vec<(String, IpAddr)>,
    /// `max_connections_ceiling`: no workspace gets more connections open at once than this,
    /// whatever its `max_connections` says (default [`DEFAULT_MAX_CONNECTIONS_CEILING`]).
    pub max_connections_ceiling: u32,
    /// `max_connections_total`: proxied connections open at once in one controller process,
    /// all workspaces together (default [`DEFAULT_MAX_CONNECTIONS_TOTAL`]); one more is
    /// answered `503`.
    pub max_connections_total: u32,
}

impl Default for OperatorNetwork {
    fn default() -> Self {
        OperatorNetwork {
            deny: Vec::new(),
            allow_loopback: false,
            allow_private: false,
            resolve: Vec::new(),
            max_connections_ceiling: DEFAULT_MAX_CONNECTIONS_CEILING,
            max_connections_total: DEFAULT_MAX_CONNECTIONS_TOTAL,
        }
    }
}

impl OperatorNetwork {
    /// Checks `max_connections_ceiling` (1 to [`MAX_CONNECTIONS_LIMIT`]; `key` names the
    /// setting in errors); `None` is the default.
    pub fn parse_ceiling(v: Option<i64>, key: &str) -> Result<u32> {
        cap_in_range(
            v,
            DEFAULT_MAX_CONNECTIONS_CEILING,
            MAX_CONNECTIONS_LIMIT,
            key,
        )
    }

    /// Checks `max_connections_total` (1 to [`MAX_CONNECTIONS_TOTAL_LIMIT`]); `None` is the
    /// default.
    pub fn parse_total(v: Option<i64>, key: &str) -> Result<u32> {
        cap_in_range(
            v,
            DEFAULT_MAX_CONNECTIONS_TOTAL,
            MAX_CONNECTIONS_TOTAL_LIMIT,
            key,
        )
    }

    /// The connection cap a workspace with `network` gets: its own, clamped to
    /// [`OperatorNetwork::max_connections_ceiling`].
    pub fn effective_max_connections(&self, network: &NetworkPolicy) -> u32 {
        network
            .max_connections()
            .min(self.max_connections_ceiling.max(1))
    }

    /// Validates and normalizes the `deny` patterns (`key` names the setting in errors).
    pub fn parse_deny<S: AsRef<str>>(patterns: &[S], key: &str) -> Result<Vec<String>> {
        if patterns.len() > MAX_PATTERNS {
            return Err(Error::Invalid(format!(
                "{key}: at most {MAX_PATTERNS} patterns"
            )));
        }
        patterns
            .iter()
            .map(|p| {
                normalize_pattern(p.as_ref()).map_err(|e| Error::Invalid(format!("{key}: {e}")))
            })
            .collect()
    }

    /// Parses `resolve` entries: `host:address` (`pkg.test:127.0.0.1`, `pkg.test:[::1]` or
    /// `pkg.test:::1`). A host may be listed more than once (several addresses).
    pub fn parse_resolve<S: AsRef<str>>(entries: &[S], key: &str) -> Result<Vec<(String, IpAddr)>> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref();
            let bad = |why: &str| {
                Error::Invalid(format!(
                    "{key}: invalid entry {:?}: {why}; write host:address, e.g. \"pkg.test:127.0.0.1\" or \"pkg.test:[::1]\"",
                    clip(e)
                ))
            };
            let (h, a) = e.split_once(':').ok_or_else(|| bad("no ':'"))?;
            let name = match ssrf::parse_host(h) {
                Ok(Host::Name(n)) => n,
                Ok(Host::Ip(_)) => return Err(bad("the host must be a name, not an address")),
                Err(err) => return Err(bad(&ssrf_reason(&err))),
            };
            let a = a
                .strip_prefix('[')
                .and_then(|x| x.strip_suffix(']'))
                .unwrap_or(a);
            let ip: IpAddr = a
                .parse()
                .map_err(|_| bad("the address is not an IP address"))?;
            out.push((name, ip));
        }
        Ok(out)
    }

    /// The static answer for `name`, if the operator gave one.
    pub fn resolve_override(&self, name: &str) -> Option<Vec<IpAddr>> {
        let lower = name.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        let v: Vec<IpAddr> = self
            .resolve
            .iter()
            .filter(|(h, _)| h == name)
            .map(|(_, ip)| *ip)
            .collect();
        (!v.is_empty()).then_some(v)
    }
}

/// For a pattern naming one host (not a wildcard): why the proxy would still refuse it
/// under the operator's rules (denied, a metadata name, a refused address class), if it
/// would. Lets `allow` warn that adding it changes nothing.
pub fn operator_refusal(
    workspace: &str,
    pattern: &str,
    operator: &OperatorNetwork,
) -> Option<Denial> {
    let pat = Pattern::parse(pattern).ok()?;
    let host = match &pat.host {
        PatternHost::Name(n) => Host::Name(n.clone()),
        PatternHost::Ip(ip) => Host::Ip(*ip),
        PatternHost::Wildcard(_) => return None,
    };
    let port = pat.port.unwrap_or(443);
    let net = NetworkPolicy {
        allow: vec![pat.to_string()],
        ..NetworkPolicy::default()
    };
    let policy = EgressPolicy::new(workspace, &net, operator).ok()?;
    policy.check(&host, port).err()
}

/// For a pattern naming one host (not a wildcard): the host and a port it covers, to ask
/// which other patterns still allow it.
pub fn pattern_probe(pattern: &str) -> Option<(Host, u16)> {
    let pat = Pattern::parse(pattern).ok()?;
    let port = pat.port.unwrap_or(443);
    match pat.host {
        PatternHost::Name(n) => Some((Host::Name(n), port)),
        PatternHost::Ip(ip) => Some((Host::Ip(ip), port)),
        PatternHost::Wildcard(_) => None,
    }
}

/// Which patterns of `network` still admit what `pattern` named (after it was removed, or
/// when it was never there): for a host or an address, the patterns that allow it on its
/// port (no port: 80 or 443); for `*.domain`, the wildcards that cover every subdomain of it.
/// Empty when nothing does (or `pattern` is invalid).
pub fn still_allowed_by(network: &NetworkPolicy, pattern: &str) -> Vec<String> {
    let Ok(pat) = Pattern::parse(pattern) else {
        return Vec::new();
    };
    let ports: Vec<u16> = match pat.port {
        Some(p) => vec![p],
        None => vec![80, 443],
    };
    let (host, wildcards_only) = match &pat.host {
        PatternHost::Name(n) => (Host::Name(n.clone()), false),
        PatternHost::Ip(ip) => (Host::Ip(*ip), false),
        // A name under the domain stands for all of them; only a wildcard covers them all.
        PatternHost::Wildcard(d) => (Host::Name(format!("bulkhead-probe.{d}")), true),
    };
    network
        .allow
        .iter()
        .filter(|raw| {
            Pattern::parse(raw).is_ok_and(|p| {
                (!wildcards_only || matches!(p.host, PatternHost::Wildcard(_)))
                    && ports.iter().any(|port| p.allows(&host, *port))
            })
        })
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The effective policy
// ---------------------------------------------------------------------------------------------

/// Why a connection was refused: a short reason for the audit log and the message the
/// sandbox's client gets in the `403` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Short machine-friendly reason (`not_allowed`, `operator_deny`, `metadata`,
    /// `blocked_address`, `no_network`).
    pub kind: &'static str,
    /// The whole sentence, for people.
    pub message: String,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A workspace's policy combined with the operator's: what the proxy enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    workspace: String,
    network: NetworkPolicy,
    ssrf: SsrfPolicy,
    deny_only: SsrfPolicy,
    max_connections: u32,
}

impl EgressPolicy {
    /// Combines `network` (validated) with the operator's rules.
    pub fn new(
        workspace: &str,
        network: &NetworkPolicy,
        operator: &OperatorNetwork,
    ) -> Result<EgressPolicy> {
        network.validate()?;
        let mut allowlist = Vec::new();
        for p in &network.allow {
            allowlist.extend(Pattern::parse(p)?.allowlist_entries());
        }
        let ssrf = SsrfPolicy {
            allow_loopback: operator.allow_loopback,
            allow_private: operator.allow_private,
            host_allowlist: Some(allowlist),
            deny_hosts: operator.deny.clone(),
        };
        // For resolved addresses: only the operator's denied addresses (the address classes
        // are checked by the guard during resolution).
        let deny_only = SsrfPolicy {
            allow_loopback: true,
            allow_private: true,
            host_allowlist: None,
            deny_hosts: operator.deny.clone(),
        };
        Ok(EgressPolicy {
            workspace: workspace.to_string(),
            network: network.clone(),
            ssrf,
            deny_only,
            max_connections: operator.effective_max_connections(network),
        })
    }

    /// The workspace id.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The workspace's own policy.
    pub fn network(&self) -> &NetworkPolicy {
        &self.network
    }

    /// Connections the workspace may have open at once: its `max_connections`, clamped to
    /// the operator's `max_connections_ceiling`.
    pub fn max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The SSRF guard policy the proxy resolves and vets through.
    pub fn ssrf(&self) -> &SsrfPolicy {
        &self.ssrf
    }

    /// The name-level check (no DNS): metadata names, the operator's `deny`, the workspace's
    /// allowlist, and for an IP literal the address rules. An address is matched in its
    /// canonical form ([`ssrf::canonical_ip`]): `[::ffff:10.0.0.5]` and `[64:ff9b::a00:5]` are
    /// `10.0.0.5` to every rule.
    pub fn check(&self, host: &Host, port: u16) -> std::result::Result<(), Denial> {
        ssrf::check_host(host, port, &self.ssrf).map_err(|e| self.denial(host, port, &e))
    }

    /// Checks addresses a name resolved to against the operator's denied addresses (the
    /// address classes were checked during resolution).
    pub fn check_resolved(
        &self,
        host: &Host,
        addrs: &[SocketAddr],
    ) -> std::result::Result<(), Denial> {
        for a in addrs {
            let ip = ssrf::canonical_ip(a.ip());
            if let Err(e) = ssrf::check_host(&Host::Ip(ip), a.port(), &self.deny_only) {
                let e = match e {
                    SsrfError::BlockedHost { reason, .. } => SsrfError::BlockedHost {
                        host: format!("{host} (resolves to {})", a.ip()),
                        reason,
                    },
                    SsrfError::BlockedAddress {
                        ip, class, reason, ..
                    } => SsrfError::BlockedAddress {
                        host: host.to_string(),
                        ip,
                        class,
                        reason,
                    },
                    other => other,
                };
                return Err(self.denial(host, a.port(), &e));
            }
        }
        Ok(())
    }

    /// Turns a guard refusal into the proxy's denial.
    pub fn denial(&self, host: &Host, port: u16, e: &SsrfError) -> Denial {
        let ws = &self.workspace;
        let shown = match host {
            Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            h => h.to_string(),
        };
        let suggestion = if port == 80 || port == 443 {
            shown.clone()
        } else {
            format!("{shown}:{port}")
        };
        // A skill's context is named `<ws>/skill:<id>`: its hosts come from its SKILL.md.
        let ask = match ws.split_once("/skill:") {
            Some((_, skill)) => format!(
                "the skill {skill} must declare it: network = [\"{suggestion}\"] in its SKILL.md"
            ),
            None => {
                format!("ask the operator to run: bulkhead workspace net {ws} allow {suggestion}")
            }
        };
        match e {
            SsrfError::NotAllowlisted { .. } if !self.network.is_enabled() => Denial {
                kind: "no_network",
                message: format!(
                    "bulkhead egress: workspace {ws} has no network access (host {shown} port {port} refused); {ask}"
                ),
            },
            SsrfError::NotAllowlisted { .. } => {
                let other_ports = self.network.allow.iter().any(|p| {
                    Pattern::parse(p).is_ok_and(|pat| {
                        [80u16, 443].iter().any(|q| pat.allows(host, *q))
                            || pat.port().is_some_and(|q| pat.allows(host, q))
                    })
                });
                let what = if other_ports {
                    format!("port {port} of host {shown} is not in this workspace's allowlist")
                } else {
                    format!("host {shown} is not in this workspace's allowlist")
                };
                Denial {
                    kind: "not_allowed",
                    message: format!(
                        "bulkhead egress: {what}; {ask}"
                    ),
                }
            }
            SsrfError::BlockedHost {
                host: h,
                reason: reason @ ssrf::HostBlock::MetadataName,
            } => Denial {
                kind: "metadata",
                message: format!("bulkhead egress: host {h} is {reason}; never allowed"),
            },
            SsrfError::BlockedHost { host: h, .. } => Denial {
                kind: "operator_deny",
                message: format!(
                    "bulkhead egress: host {h} is refused by the operator's [network] deny rules"
                ),
            },
            SsrfError::BlockedAddress { .. } => Denial {
                kind: "blocked_address",
                message: format!("bulkhead egress: {}", e.to_string().trim_start_matches("refused: ")),
            },
            other => Denial {
                kind: "invalid",
                message: format!("bulkhead egress: {other}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Host {
        ssrf::parse_host(s).unwrap()
    }

    fn err(raw: &str) -> String {
        Pattern::parse(raw).unwrap_err().to_string()
    }

    #[test]
    fn patterns_normalize() {
        for (raw, norm) in [
            ("PyPI.org", "pypi.org"),
            ("pypi.org.", "pypi.org"),
            ("*.PythonHosted.org", "*.pythonhosted.org"),
            ("github.com:443", "github.com:443"),
            ("203.0.113.7", "203.0.113.7"),
            ("203.0.113.7:8080", "203.0.113.7:8080"),
            ("[2001:DB8::1]", "[2001:db8::1]"),
            ("[2001:db8::1]:8443", "[2001:db8::1]:8443"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("under_score.example.com", "under_score.example.com"),
        ] {
            assert_eq!(normalize_pattern(raw).unwrap(), norm, "{raw}");
        }
    }

    #[test]
    fn bad_patterns_say_what_and_how() {
        for (raw, says) in [
            ("", "empty"),
            ("https://pypi.org", "no scheme"),
            ("pypi.org/simple", "no path"),
            ("user@pypi.org", "user@"),
            ("py pi.org", "spaces"),
            ("bücher.example", "punycode"),
            ("*", "first label"),
            ("*.com", "two labels"),
            ("*.", "first label"),
            ("foo*.com", "first label"),
            ("*foo.com", "first label"),
            ("a.*.com", "first label"),
            ("*.*.com", "first label"),
            ("pypi.org:0", "1 to 65535"),
            ("pypi.org:65536", "1 to 65535"),
            ("pypi.org:", "1 to 65535"),
            ("pypi.org:http", "1 to 65535"),
            ("pypi.org:*", "any-port"),
            ("2001:db8::1", "brackets"),
            ("[2001:db8::1", "unterminated"),
            ("[2001:db8::1]x", "junk"),
            ("[fe80::1%eth0]", "zone"),
            ("[nope]", "invalid ipv6"),
            ("0x7f.1", "dotted-quad"),
            ("2130706433", "dotted-quad"),
            ("1.2.3.4.5", "numeric"),
            ("a..b", "label"),
            ("*.10.0.0.1", "IP address"),
            (&"a".repeat(300), "too long"),
        ] {
            let e = err(raw);
            assert!(e.contains(says), "{raw:?}: {e}");
            assert!(e.contains("examples: pypi.org"), "{raw:?}: {e}");
        }
    }

    #[test]
    fn wildcards_cover_subdomains_not_the_apex() {
        let p = Pattern::parse("*.pythonhosted.org").unwrap();
        assert!(p.allows(&name("files.pythonhosted.org"), 443));
        assert!(p.allows(&name("a.b.pythonhosted.org"), 80));
        assert!(!p.allows(&name("pythonhosted.org"), 443));
        assert!(!p.allows(&name("evilpythonhosted.org"), 443));
        assert!(!p.allows(&name("pythonhosted.org.evil.com"), 443));
    }

    #[test]
    fn no_port_means_80_and_443() {
        let p = Pattern::parse("pypi.org").unwrap();
        assert!(p.allows(&name("pypi.org"), 80));
        assert!(p.allows(&name("pypi.org"), 443));
        assert!(!p.allows(&name("pypi.org"), 22));
        assert!(!p.allows(&name("pypi.org"), 8080));
        let p = Pattern::parse("github.com:443").unwrap();
        assert!(p.allows(&name("github.com"), 443));
        assert!(!p.allows(&name("github.com"), 80));
        let p = Pattern::parse("[2606:4700::1]").unwrap();
        assert!(p.allows(&name("[2606:4700::1]"), 443));
        assert!(!p.allows(&name("[2606:4700::1]"), 22));
    }

    #[test]
    fn policy_serializes_as_none_or_rules() {
        let none = NetworkPolicy::default();
        assert_eq!(
            serde_json::to_value(&none).unwrap(),
            serde_json::json!("none")
        );
        let p = NetworkPolicy::allowing(&["pypi.org", "*.pythonhosted.org"]).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"allow": ["pypi.org", "*.pythonhosted.org"]})
        );
        assert_eq!(serde_json::from_value::<NetworkPolicy>(v).unwrap(), p);
        assert_eq!(
            serde_json::from_value::<NetworkPolicy>(serde_json::json!("none")).unwrap(),
            none
        );
        let capped: NetworkPolicy = serde_json::from_value(
            serde_json::json!({"allow": [], "max_connections": 4, "bandwidth_bytes_per_sec": 65536}),
        )
        .unwrap();
        assert!(!capped.is_enabled());
        assert_eq!(capped.max_connections(), 4);
        for bad in [
            serde_json::json!("all"),
            serde_json::json!({"allow": ["https://x.com"]}),
            serde_json::json!({"allow": ["PyPI.org"]}),
            serde_json::json!({"allow": ["a.com", "a.com"]}),
            serde_json::json!({"allow": [], "max_connections": 0}),
            serde_json::json!({"allow": [], "bandwidth_bytes_per_sec": 10}),
            serde_json::json!({"allow": [], "colour": "red"}),
            serde_json::json!(7),
        ] {
            assert!(
                serde_json::from_value::<NetworkPolicy>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn workspace_config_keeps_old_files_loading() {
        use crate::platform::WorkspaceConfig;
        let old: WorkspaceConfig = serde_json::from_str(r#"{"limits": {}}"#).unwrap();
        assert_eq!(old.network, NetworkPolicy::default());
        let v = serde_json::to_value(WorkspaceConfig::default()).unwrap();
        assert!(v.get("network").is_none(), "{v}");
        let with = WorkspaceConfig {
            network: NetworkPolicy::allowing(&["pypi.org"]).unwrap(),
            ..WorkspaceConfig::default()
        };
        let v = serde_json::to_value(&with).unwrap();
        assert_eq!(v["network"], serde_json::json!({"allow": ["pypi.org"]}));
        assert_eq!(serde_json::from_value::<WorkspaceConfig>(v).unwrap(), with);
        let bad = serde_json::from_str::<WorkspaceConfig>(r#"{"network": {"allow": ["a b"]}}"#)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("invalid host pattern"), "{bad}");
    }

    #[test]
    fn config_toml_network_section() {
        use crate::config::Config;
        let c = Config::parse(
            "[network]\ndeny = [\"Evil.com\", \"*.corp.example.com:22\"]\nallow_loopback = true\nresolve = [\"pkg.test:127.0.0.1\"]\n",
            "/s/config.toml",
        )
        .unwrap();
        assert_eq!(c.network.deny, ["evil.com", "*.corp.example.com:22"]);
        assert!(c.network.allow_loopback && !c.network.allow_private);
        assert_eq!(
            c.network.resolve_override("pkg.test").unwrap(),
            [IpAddr::from([127, 0, 0, 1])]
        );
        assert_eq!(
            Config::parse("", "f").unwrap().network,
            OperatorNetwork::default()
        );
        let c = Config::parse(
            "[network]\nmax_connections_ceiling = 8\nmax_connections_total = 100\n",
            "f",
        )
        .unwrap();
        assert_eq!(
            (
                c.network.max_connections_ceiling,
                c.network.max_connections_total
            ),
            (8, 100)
        );
        for (text, key) in [
            ("[network]\ndeny = [\"http://x\"]\n", "network.deny"),
            ("[network]\nresolve = [\"x\"]\n", "network.resolve"),
            (
                "[network]\nmax_connections_total = 0\n",
                "network.max_connections_total",
            ),
            (
                "[network]\nmax_connections_ceiling = 5000\n",
                "network.max_connections_ceiling",
            ),
            ("[network]\nallow_everything = true\n", "allow_everything"),
        ] {
            let e = Config::parse(text, "/s/config.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(key) && e.contains("/s/config.toml"), "{e}");
        }
    }

    #[test]
    fn add_and_remove_are_idempotent() {
        let mut p = NetworkPolicy::default();
        let (added, already) = p.add(&["PyPI.org", "pypi.org", "github.com:443"]).unwrap();
        assert_eq!(added, ["pypi.org", "github.com:443"]);
        assert_eq!(already, ["pypi.org"]);
        assert!(p.add(&["ok.com", "bad/x"]).is_err());
        assert_eq!(p.allow, ["pypi.org", "github.com:443"], "all or nothing");
        let (removed, absent) = p.remove(&["pypi.org", "nothere.com"]).unwrap();
        assert_eq!(removed, ["pypi.org"]);
        assert_eq!(absent, ["nothere.com"]);
        p.remove(&["github.com:443"]).unwrap();
        assert!(!p.is_enabled());
    }

    #[test]
    fn operator_settings_parse() {
        let d =
            OperatorNetwork::parse_deny(&["Evil.com", "*.internal.example.com"], "network.deny")
                .unwrap();
        assert_eq!(d, ["evil.com", "*.internal.example.com"]);
        let e = OperatorNetwork::parse_deny(&["http://x"], "network.deny")
            .unwrap_err()
            .to_string();
        assert!(e.contains("network.deny"), "{e}");
        let r = OperatorNetwork::parse_resolve(
            &["pkg.test:127.0.0.1", "PKG.test:[::1]", "v6.test:::1"],
            "network.resolve",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[1].0, "pkg.test");
        for bad in [
            "pkg.test",
            "pkg.test:nope",
            "127.0.0.1:127.0.0.1",
            ":1.2.3.4",
        ] {
            let e = OperatorNetwork::parse_resolve(&[bad], "network.resolve")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("network.resolve") && e.contains("host:address"),
                "{e}"
            );
        }
        let op = OperatorNetwork {
            resolve: r,
            ..Default::default()
        };
        assert_eq!(op.resolve_override("pkg.test.").unwrap().len(), 2);
        assert!(op.resolve_override("other.test").is_none());
    }

    #[test]
    fn effective_policy_explains_denials() {
        let op = OperatorNetwork {
            deny: vec!["evil.pypi.org".into(), "198.51.100.7".into()],
            ..Default::default()
        };
        let net = NetworkPolicy::allowing(&["pypi.org", "*.pypi.org", "github.com:443"]).unwrap();
        let p = EgressPolicy::new("acme", &net, &op).unwrap();
        assert!(p.check(&name("pypi.org"), 443).is_ok());
        assert!(p.check(&name("files.pypi.org"), 80).is_ok());
        let d = p.check(&name("evil.com"), 443).unwrap_err();
        assert_eq!(d.kind, "not_allowed");
        assert!(
            d.message
                .contains("host evil.com is not in this workspace's allowlist")
                && d.message
                    .contains("bulkhead workspace net acme allow evil.com"),
            "{d}"
        );
        let d = p.check(&name("github.com"), 80).unwrap_err();
        assert!(d.message.contains("port 80 of host github.com"), "{d}");
        let d = p.check(&name("pypi.org"), 8080).unwrap_err();
        assert!(d.message.contains("allow pypi.org:8080"), "{d}");
        let d = p.check(&name("evil.pypi.org"), 443).unwrap_err();
        assert_eq!(d.kind, "operator_deny", "{d}");
        let d = p.check(&name("metadata.google.internal"), 80).unwrap_err();
        assert_eq!(d.kind, "metadata", "{d}");
        // A denied address refuses a name that resolves to it.
        let addr: SocketAddr = "198.51.100.7:443".parse().unwrap();
        let d = p
            .check_resolved(&name("files.pypi.org"), &[addr])
            .unwrap_err();
        assert_eq!(d.kind, "operator_deny", "{d}");
        // No network at all.
        let p = EgressPolicy::new("acme", &NetworkPolicy::default(), &op).unwrap();
        let d = p.check(&name("pypi.org"), 443).unwrap_err();
        assert_eq!(d.kind, "no_network");
        assert!(d.message.contains("has no network access"), "{d}");
    }

    #[test]
    fn ip_literals_go_through_the_address_rules() {
        let net = NetworkPolicy::allowing(&["127.0.0.1:8080", "10.0.0.1"]).unwrap();
        let p = EgressPolicy::new("acme", &net, &OperatorNetwork::default()).unwrap();
        let d = p.check(&name("127.0.0.1"), 8080).unwrap_err();
        assert_eq!(d.kind, "blocked_address", "{d}");
        assert!(d.message.contains("loopback"), "{d}");
        let d = p.check(&name("10.0.0.1"), 443).unwrap_err();
        assert!(d.message.contains("private"), "{d}");
        // Mapped and odd forms are the same address, and not in the allowlist.
        for h in ["[::ffff:127.0.0.1]", "0x7f.1", "2130706433"] {
            assert!(p.check(&name(h), 8080).is_err(), "{h}");
        }
        let op = OperatorNetwork {
            allow_loopback: true,
            ..Default::default()
        };
        let p = EgressPolicy::new("acme", &net, &op).unwrap();
        assert!(p.check(&name("127.0.0.1"), 8080).is_ok());
        assert!(p.check(&name("2130706433"), 8080).is_ok());
        assert!(p.check(&name("127.0.0.1"), 8081).is_err());
    }
    /// An operator's deny of an IPv4 address holds for its IPv6 forms, as a literal the
    /// tenant allowlisted or as an address a name resolves to.
    #[test]
    fn a_denied_ipv4_address_is_denied_in_every_ipv6_form() {
        let op = OperatorNetwork {
            deny: vec!["10.0.0.5".into()],
            allow_private: true,
            ..Default::default()
        };
        let net = NetworkPolicy::allowing(&[
            "[::ffff:10.0.0.5]",
            "[64:ff9b::a00:5]",
            "[::a00:5]",
            "10.0.0.5",
            "name.test",
            "10.0.0.6",
        ])
        .unwrap();
        let p = EgressPolicy::new("acme", &net, &op).unwrap();
        for h in [
            "[::ffff:10.0.0.5]",
            "[::ffff:a00:5]",
            "[64:ff9b::a00:5]",
            "[::a00:5]",
            "10.0.0.5",
        ] {
            let d = p.check(&name(h), 443).unwrap_err();
            assert_eq!(d.kind, "operator_deny", "{h}: {d}");
        }
        assert!(p.check(&name("10.0.0.6"), 443).is_ok());
        assert!(
            p.check(&name("[::ffff:10.0.0.6]"), 443).is_ok(),
            "allowed as 10.0.0.6"
        );
        for resolved in [
            "[::ffff:10.0.0.5]:443",
            "[64:ff9b::a00:5]:443",
            "10.0.0.5:443",
        ] {
            let a: SocketAddr = resolved.parse().unwrap();
            let d = p.check_resolved(&name("name.test"), &[a]).unwrap_err();
            assert_eq!(d.kind, "operator_deny", "{resolved}: {d}");
            assert!(d.message.contains("name.test"), "{d}");
        }
        // A deny written in a mapped form refuses the IPv4 address too.
        let op = OperatorNetwork {
            deny: vec!["[::ffff:10.0.0.6]".into()],
            allow_private: true,
            ..Default::default()
        };
        let p = EgressPolicy::new("acme", &net, &op).unwrap();
        assert_eq!(
            p.check(&name("10.0.0.6"), 443).unwrap_err().kind,
            "operator_deny"
        );
    }

    #[test]
    fn the_operator_ceiling_clamps_a_workspace_cap() {
        let mut net = NetworkPolicy::allowing(&["pypi.org"]).unwrap();
        net.max_connections = Some(1000);
        let op = OperatorNetwork::default();
        assert_eq!(op.max_connections_ceiling, DEFAULT_MAX_CONNECTIONS_CEILING);
        assert_eq!(op.max_connections_total, DEFAULT_MAX_CONNECTIONS_TOTAL);
        let p = EgressPolicy::new("acme", &net, &op).unwrap();
        assert_eq!(p.max_connections(), 256);
        assert_eq!(p.network().max_connections(), 1000);
        net.max_connections = Some(8);
        assert_eq!(
            EgressPolicy::new("acme", &net, &op)
                .unwrap()
                .max_connections(),
            8
        );
        let low = OperatorNetwork {
            max_connections_ceiling: 4,
            ..Default::default()
        };
        assert_eq!(low.effective_max_connections(&net), 4);
        assert_eq!(OperatorNetwork::parse_ceiling(None, "k").unwrap(), 256);
        assert_eq!(OperatorNetwork::parse_total(Some(5), "k").unwrap(), 5);
        for bad in [0, -1, 4097] {
            let e = OperatorNetwork::parse_ceiling(Some(bad), "network.max_connections_ceiling")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("network.max_connections_ceiling") && e.contains("1 to 4096"),
                "{e}"
            );
        }
        assert!(OperatorNetwork::parse_total(Some(0), "k").is_err());
        assert!(OperatorNetwork::parse_total(Some(65537), "k").is_err());
    }

    #[test]
    fn still_allowed_by_names_the_covering_patterns() {
        let net = NetworkPolicy::allowing(&[
            "*.pythonhosted.org",
            "pypi.org:80",
            "*.b.example.com:8443",
            "[::ffff:10.0.0.5]",
        ])
        .unwrap();
        assert_eq!(
            still_allowed_by(&net, "files.pythonhosted.org"),
            ["*.pythonhosted.org"]
        );
        assert_eq!(still_allowed_by(&net, "pypi.org"), ["pypi.org:80"]);
        assert!(still_allowed_by(&net, "pypi.org:443").is_empty());
        assert_eq!(
            still_allowed_by(&net, "*.x.pythonhosted.org"),
            ["*.pythonhosted.org"]
        );
        assert!(still_allowed_by(&net, "*.pythonhosted.org:22").is_empty());
        assert_eq!(
            still_allowed_by(&net, "*.c.b.example.com:8443"),
            ["*.b.example.com:8443"]
        );
        assert_eq!(still_allowed_by(&net, "10.0.0.5"), ["[::ffff:10.0.0.5]"]);
        assert!(still_allowed_by(&net, "github.com").is_empty());
        assert!(still_allowed_by(&net, "not a pattern").is_empty());
    }
}
