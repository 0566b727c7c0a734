//! Outbound networking on a tenant's behalf.
//!
//! - [`ssrf`]: the SSRF guard every outbound HTTP call made for a tenant goes through (URL and
//!   host checks, DNS resolution with every address vetted, connections pinned to the vetted
//!   address, redirects re-checked).
//! - [`egress`]: a workspace's egress policy (`network` in `workspace.json`) and the
//!   operator's `[network]` rules.
//! - [`proxy`]: the egress proxy serving the connections a sandbox makes to
//!   `127.0.0.1:3128`: policy check, vetted and pinned resolution, relay, caps, audit log.

pub mod egress;
pub mod fdpass;
pub mod proxy;
pub mod ssrf;

pub use ssrf::{
    check_host, check_ip, check_redirect, guarded_agent, parse_host, parse_url_host,
    resolve_and_check, resolve_and_check_all, GuardConfig, GuardedClient, GuardedResponse,
    GuardingResolver, Host, PinnedResolver, Scheme, SsrfError, SsrfPolicy,
};
pub use ssrf::{AddressClass, HostBlock};
