//! How the proxy resolves names and opens connections (pluggable for tests: [`Resolve`], [`Connect`]), and its timeouts.

use super::*;

/// Resolves a host name to addresses. The proxy calls it once per connection and connects
/// only to what it returned (after vetting). A closure `|name: &str, port: u16| -> Result<Vec<IpAddr>, String>`
/// is one.
pub trait Resolve: Send + Sync {
    /// The addresses of `name` (lowercase, no trailing dot), or why there are none.
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String>;
}

impl<F> Resolve for F
where
    F: Fn(&str, u16) -> std::result::Result<Vec<IpAddr>, String> + Send + Sync,
{
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String> {
        self(name, port)
    }
}

/// The default resolver: the operator's `[network] resolve` answers first, then the system
/// resolver (with a timeout).
#[derive(Debug, Clone)]
pub struct DnsResolver {
    pub(super) operator: OperatorNetwork,
    pub(super) timeout: Duration,
}

impl DnsResolver {
    /// Overrides from `operator.resolve`, then DNS, each lookup given at most `timeout`.
    pub fn new(operator: &OperatorNetwork, timeout: Duration) -> Self {
        DnsResolver {
            operator: operator.clone(),
            timeout,
        }
    }
}

impl Resolve for DnsResolver {
    fn resolve(&self, name: &str, port: u16) -> std::result::Result<Vec<IpAddr>, String> {
        if let Some(v) = self.operator.resolve_override(name) {
            return Ok(v);
        }
        ssrf::system_lookup(name, port, self.timeout)
            .map(|v| v.into_iter().map(|a| a.ip()).collect())
            .map_err(|e| match e {
                SsrfError::Resolve { message, .. } => message,
                other => other.to_string(),
            })
    }
}

/// Opens the connection to a vetted address. The default is
/// [`TcpStream::connect_timeout`]; a test can wrap it to record every address dialed.
pub trait Connect: Send + Sync {
    /// Connects to `addr` within `timeout`.
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream>;
}

impl<F> Connect for F
where
    F: Fn(SocketAddr, Duration) -> io::Result<TcpStream> + Send + Sync,
{
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        self(addr, timeout)
    }
}

/// [`TcpStream::connect_timeout`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectConnect;

impl Connect for DirectConnect {
    fn connect(&self, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        TcpStream::connect_timeout(&addr, timeout)
    }
}

/// Timeouts of the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyTimeouts {
    /// Reading the whole request head (default 10 s).
    pub head: Duration,
    /// DNS resolution (default 10 s).
    pub resolve: Duration,
    /// Connecting to one vetted address (default 10 s).
    pub connect: Duration,
    /// A relay with no byte either way for this long is closed (default 5 min); also the
    /// longest a write may block.
    pub idle: Duration,
}

impl Default for ProxyTimeouts {
    fn default() -> Self {
        ProxyTimeouts {
            head: Duration::from_secs(10),
            resolve: Duration::from_secs(10),
            connect: Duration::from_secs(10),
            idle: Duration::from_secs(300),
        }
    }
}
