//! The HTTP transport the provider clients share: `ureq`, blocking, JSON in, JSON or SSE out,
//! with timeouts and size caps, and errors classified and scrubbed of the key.
//!
//! - **SSRF guard**: a base URL comes from the workspace's settings, `--base-url` or the
//!   environment, so every destination goes through [`crate::net::ssrf`] with the policy in
//!   [`HttpConfig::ssrf`] (default: public addresses only). Before a request the URL is read
//!   with [`parse_url_host`] and the host checked with [`check_host`] (IP literals in every
//!   form, cloud metadata names); the agent's resolver is a [`GuardingResolver`], so DNS
//!   answers are vetted address by address at connect time and the connection goes only to a
//!   vetted address (no rebinding between check and connect). When a proxy from the
//!   environment is in use, the proxy resolves the target itself: the target is then also
//!   resolved and vetted before the request ([`GuardedClient::vet`]), and the proxy's own
//!   address (the operator's) is not checked. Loopback and private ranges are reachable only
//!   when the operator allows them (`[llm] allow_loopback` / `allow_private` in
//!   `config.toml`, see [`ssrf_policy`]); cloud metadata addresses never are. A refusal fails
//!   before any connection with [`FailoverReason::Blocked`] (not retried, no key rotation;
//!   the next model of the chain is tried) and a message naming the URL (no query, no
//!   userinfo), the reason, and the setting that would allow it.
//! - **Redirects are never followed** (an LLM API does not redirect a `POST`, and a redirect
//!   could carry the key header to another host or to a blocked address): a 3xx answer is a
//!   [`FailoverReason::Blocked`] error naming where it pointed.
//! - Error bodies are read up to 1 MiB, success bodies and streams up to
//!   [`HttpConfig::max_body_bytes`], SSE lines up to [`HttpConfig::max_line_bytes`].
//! - A non-streaming call may take [`HttpConfig::request_timeout`]; a stream may be silent at
//!   most [`HttpConfig::stream_idle_timeout`] between two reads, after which it ends as
//!   [`FailoverReason::Timeout`].

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::Value;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use super::classify::{classify, classify_refusal, error_message};
use super::sse::{SseError, SseLimits, SseReader};
use super::{ApiKey, FailoverReason, ProviderError};
use crate::config::LlmConfig;
use crate::net::{
    check_host, guarded_agent, parse_url_host, AddressClass, GuardConfig, GuardedClient,
    GuardingResolver, SsrfError, SsrfPolicy,
};

/// The operator setting that lets model calls reach loopback, as written in `config.toml`.
pub const LOOPBACK_SETTING: &str = "[llm] allow_loopback = true";
/// The operator setting that lets model calls reach private ranges.
pub const PRIVATE_SETTING: &str = "[llm] allow_private = true";

/// The guard's policy for model calls from the operator's `[llm]` settings in `config.toml`:
/// public addresses, plus loopback and private ranges when allowed. Nothing a tenant or a
/// workspace's settings can change.
pub fn ssrf_policy(llm: &LlmConfig) -> SsrfPolicy {
    SsrfPolicy {
        allow_loopback: llm.allow_loopback,
        allow_private: llm.allow_private,
        ..SsrfPolicy::default()
    }
}

/// Timeouts, caps and proxy use of the provider clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Connecting (DNS, TCP, TLS).
    pub connect_timeout: Duration,
    /// A whole non-streaming response, and the wait for a stream's response headers.
    pub request_timeout: Duration,
    /// Longest silence inside a stream (between two reads of the socket, the wait for the
    /// response headers included).
    pub stream_idle_timeout: Duration,
    /// Largest response body or stream, in bytes.
    pub max_body_bytes: u64,
    /// Longest SSE line, in bytes.
    pub max_line_bytes: usize,
    /// Use the `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY` (and `NO_PROXY`) environment variables
    /// (never for a base URL on this machine, see
    /// [`build_provider`](super::models::build_provider)).
    pub proxy_from_env: bool,
    /// What calls may reach (the SSRF guard). The default is public addresses only; the agent
    /// sets it from the operator's `[llm]` settings ([`ssrf_policy`]).
    pub ssrf: SsrfPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(15),
            request_timeout: Duration::from_secs(600),
            stream_idle_timeout: Duration::from_secs(120),
            max_body_bytes: 16 << 20,
            max_line_bytes: 4 << 20,
            proxy_from_env: true,
            ssrf: SsrfPolicy::default(),
        }
    }
}

/// Most bytes of an error body read.
const MAX_ERROR_BODY: u64 = 1 << 20;

/// A `ureq` agent with the settings of an [`HttpConfig`], behind the SSRF guard.
pub struct HttpClient {
    agent: ureq::Agent,
    cfg: HttpConfig,
    /// Vets a target (DNS included) before a request that goes through a proxy.
    guard: GuardedClient,
    /// Whether a proxy from the environment is in use.
    proxied: bool,
}

/// The resolver of the provider clients' agent: every destination goes through the guard's
/// [`GuardingResolver`] (host checks, DNS, every address vetted, only vetted addresses given
/// to the connector), except the host and port of the operator's proxy, which come from the
/// controller's environment and are resolved as usual.
#[derive(Debug)]
pub(crate) struct LlmResolver {
    pub(crate) guard: GuardingResolver,
    /// The proxy's host (as in its URI) and explicit port.
    pub(crate) proxy: Option<(String, Option<u16>)>,
}

impl Resolver for LlmResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if let Some((host, port)) = &self.proxy {
            let same_host = uri.host().is_some_and(|h| h.eq_ignore_ascii_case(host));
            if same_host && uri.port_u16() == *port {
                return DefaultResolver::default().resolve(uri, config, timeout);
            }
        }
        self.guard.resolve(uri, config, timeout)
    }
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Who a call is for: names errors and scrubs the key from them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub provider: &'a str,
    pub model: &'a str,
    pub key: &'a ApiKey,
    /// The call ends by then ([`ChatRequest::deadline`](super::ChatRequest::deadline)).
    pub deadline: Option<Instant>,
}

impl<'a> Call<'a> {
    /// A call of `req` to `provider` with `key` (its model and deadline are the request's).
    pub fn of(provider: &'a str, req: &'a super::ChatRequest, key: &'a ApiKey) -> Self {
        Call {
            provider,
            model: &req.model,
            key,
            deadline: req.deadline,
        }
    }

    /// The call's deadline has passed.
    pub fn deadline_passed(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// A classified error for this call (message scrubbed of the key).
    pub fn err(
        &self,
        reason: FailoverReason,
        status: Option<u16>,
        message: impl Into<String>,
        retry_after: Option<Duration>,
    ) -> ProviderError {
        ProviderError::new(
            reason,
            status,
            message,
            retry_after,
            self.provider,
            self.model,
            Some(self.key),
        )
    }

    /// An error sent with HTTP 200 (an `error` event in a stream, or an error object in
    /// place of a reply): classified from its body, with no status.
    pub fn stream_error(&self, data: &str) -> ProviderError {
        let (reason, retry_after) = classify(self.provider, None, data, &[]);
        let msg = error_message(data).unwrap_or_else(|| data.to_string());
        self.err(reason, None, msg, retry_after)
    }

    /// One chunk of a stream as JSON. An error object in its place (an `error` and no
    /// `reply_key`, as OpenAI-style and Gemini streams send) is the provider's error.
    pub fn stream_chunk(&self, data: &str, reply_key: &str) -> Result<Value, ProviderError> {
        let v: Value = serde_json::from_str(data)
            .map_err(|e| self.format(format!("invalid JSON in stream chunk: {e}")))?;
        if is_error_object(&v, reply_key) {
            return Err(self.stream_error(data));
        }
        Ok(v)
    }

    /// A reply that does not have the expected shape.
    pub fn format(&self, what: impl std::fmt::Display) -> ProviderError {
        self.err(FailoverReason::Format, None, what.to_string(), None)
    }

    /// A stream that ended before the reply was complete (retryable).
    pub fn truncated(&self) -> ProviderError {
        self.err(
            FailoverReason::Unknown,
            None,
            "the stream ended before the reply was complete",
            None,
        )
    }
}

/// Whether a reply is an error object sent with HTTP 200: an `error` and no `reply_key`.
fn is_error_object(v: &Value, reply_key: &str) -> bool {
    v.get("error").is_some() && v.get(reply_key).is_none()
}

/// The URL without credentials or query, for messages.
pub(crate) fn display_url(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => {
            let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{scheme}://{host}{path}")
        }
        None => no_query.to_string(),
    }
}

/// A refusal of the SSRF guard as a classified error ([`classify_refusal`]): names the URL
/// (without query or userinfo), what was refused and why, and the operator setting that
/// would allow it, if one would.
pub(crate) fn refusal(call: &Call<'_>, url: &str, e: &SsrfError) -> ProviderError {
    let shown = display_url(url);
    let reason = classify_refusal(e);
    let detail = match e {
        SsrfError::BlockedAddress {
            host,
            ip,
            class,
            reason,
        } => {
            let what = if *host == ip.to_string() {
                format!("the host is {ip} ({reason})")
            } else {
                format!("{host} resolves to {ip} ({reason})")
            };
            let hint = if *class == AddressClass::Loopback {
                format!(
                    "which this host's operator does not allow; set `{LOOPBACK_SETTING}` in \
                     config.toml for a local model server"
                )
            } else if matches!(
                class,
                AddressClass::Private | AddressClass::Shared | AddressClass::UniqueLocal
            ) {
                format!(
                    "which this host's operator does not allow; set `{PRIVATE_SETTING}` in \
                     config.toml for a model server on a private network"
                )
            } else {
                "which is never allowed".to_string()
            };
            format!("{what}, {hint}")
        }
        SsrfError::BlockedHost { host, reason } => {
            format!("{host} is {reason}, which is never allowed")
        }
        // The URL itself may carry credentials: name the problem, not the URL.
        SsrfError::Userinfo { .. } => {
            "the URL carries userinfo (user@host), which is not allowed".to_string()
        }
        SsrfError::InvalidUrl { reason, .. } => format!("the URL cannot be used: {reason}"),
        SsrfError::Resolve { host, message } => format!("could not resolve {host}: {message}"),
        other => other
            .to_string()
            .trim_start_matches("refused: ")
            .to_string(),
    };
    let message = if reason == FailoverReason::Blocked {
        format!("refused {shown}: {detail}; no request was sent")
    } else {
        format!("could not reach {shown}: {detail}")
    };
    call.err(reason, None, message, None)
}

/// A 3xx answer: never followed (see the module docs).
fn redirect_error(
    call: &Call<'_>,
    url: &str,
    resp: &ureq::http::Response<ureq::Body>,
) -> ProviderError {
    let status = resp.status().as_u16();
    let to = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(|l| format!(" to {}", display_url(l)))
        .unwrap_or_default();
    call.err(
        FailoverReason::Blocked,
        Some(status),
        format!(
            "{}: the server answered with a redirect{to}, which is never followed (it could \
             carry the API key elsewhere); set the base URL to the final address",
            display_url(url)
        ),
        None,
    )
}

fn is_timeout(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
        return true;
    }
    match e.get_ref().and_then(|i| i.downcast_ref::<ureq::Error>()) {
        Some(ureq::Error::Timeout(_)) => true,
        Some(ureq::Error::Io(inner)) => is_timeout(inner),
        _ => false,
    }
}

/// The [`SsrfError`] a guarded resolver put in a `ureq` error, if any.
fn guard_refusal(e: &ureq::Error) -> Option<&SsrfError> {
    match e {
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<SsrfError>()),
        _ => None,
    }
}

impl HttpClient {
    /// A client with `cfg`.
    pub fn new(cfg: HttpConfig) -> Self {
        let proxy = if cfg.proxy_from_env {
            ureq::Proxy::try_from_env()
        } else {
            None
        };
        Self::with_proxy(cfg, proxy)
    }

    /// A client with `cfg` going through `proxy` (the operator's; `None`: direct).
    pub(crate) fn with_proxy(cfg: HttpConfig, proxy: Option<ureq::Proxy>) -> Self {
        let resolver = LlmResolver {
            guard: GuardingResolver::new(cfg.ssrf.clone()),
            proxy: proxy
                .as_ref()
                .map(|p| (p.host().to_string(), p.uri().port_u16())),
        };
        let proxied = proxy.is_some();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(proxy)
            .timeout_connect(Some(cfg.connect_timeout))
            .user_agent(concat!("bulkhead/", env!("CARGO_PKG_VERSION")))
            .build();
        let guard = guarded_agent(
            cfg.ssrf.clone(),
            GuardConfig {
                connect_timeout: cfg.connect_timeout,
                ..GuardConfig::default()
            },
        );
        HttpClient {
            agent: ureq::Agent::with_parts(config, DefaultConnector::new(), resolver),
            cfg,
            guard,
            proxied,
        }
    }

    /// The settings.
    pub fn config(&self) -> &HttpConfig {
        &self.cfg
    }

    /// Checks `url` against the guard before any connection: the URL's form and host (IP
    /// literals, metadata names) always; DNS too when a proxy will resolve the host (without
    /// one, the resolver vets DNS answers at connect time and pins the connection to them).
    pub(crate) fn vet(&self, call: &Call<'_>, url: &str) -> Result<(), ProviderError> {
        let checked = if self.proxied {
            self.guard.vet(url).map(drop)
        } else {
            parse_url_host(url).and_then(|(_, host, port)| check_host(&host, port, &self.cfg.ssrf))
        };
        checked.map_err(|e| refusal(call, url, &e))
    }

    fn send(
        &self,
        call: &Call<'_>,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
        stream: bool,
    ) -> Result<ureq::http::Response<ureq::Body>, ProviderError> {
        self.vet(call, url)?;
        let bytes = serde_json::to_vec(body)
            .map_err(|e| call.format(format!("could not encode the request: {e}")))?;
        let mut rb = self
            .agent
            .post(url)
            .header("content-type", "application/json")
            .header(
                "accept",
                if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        for (k, v) in headers {
            rb = rb.header(*k, v.as_str());
        }
        let per_read = if stream {
            self.cfg.stream_idle_timeout
        } else {
            self.cfg.request_timeout
        };
        let mut cb = rb
            .config()
            .timeout_per_read(Some(per_read))
            .timeout_recv_response(Some(self.cfg.request_timeout));
        if !stream {
            cb = cb.timeout_recv_body(Some(self.cfg.request_timeout));
        }
        if let Some(d) = call.deadline {
            // The run's time limit: end to end, from connecting to the last byte of the
            // body or stream (ureq checks it on every read of the body too).
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(call.err(
                    FailoverReason::Timeout,
                    None,
                    "the run's time limit was reached before the call",
                    None,
                ));
            }
            cb = cb.timeout_global(Some(left));
        }
        log::debug!(target: "llm", provider = call.provider, model = call.model; "POST {}", display_url(url));
        let resp = cb
            .build()
            .send(&bytes[..])
            .map_err(|e| self.transport_error(call, url, e))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        if (300..400).contains(&status) {
            return Err(redirect_error(call, url, &resp));
        }
        Err(self.status_error(call, resp))
    }

    fn transport_error(&self, call: &Call<'_>, url: &str, e: ureq::Error) -> ProviderError {
        if let Some(refused) = guard_refusal(&e) {
            return refusal(call, url, refused);
        }
        let shown = display_url(url);
        if call.deadline_passed() && matches!(e, ureq::Error::Timeout(_) | ureq::Error::Io(_)) {
            return call.err(
                FailoverReason::Timeout,
                None,
                format!("{shown}: the run's time limit was reached"),
                None,
            );
        }
        match e {
            ureq::Error::Timeout(t) => call.err(
                FailoverReason::Timeout,
                None,
                format!("{shown}: timed out ({t})"),
                None,
            ),
            ureq::Error::Io(io) if is_timeout(&io) => call.err(
                FailoverReason::Timeout,
                None,
                format!("{shown}: timed out: {io}"),
                None,
            ),
            ureq::Error::TooManyRedirects | ureq::Error::RedirectFailed => call.err(
                FailoverReason::Blocked,
                None,
                format!("{shown}: the server answered with a redirect, which is never followed (check the base URL)"),
                None,
            ),
            other => call.err(
                FailoverReason::Unknown,
                None,
                format!("could not reach {shown}: {other}"),
                None,
            ),
        }
    }

    fn status_error(
        &self,
        call: &Call<'_>,
        resp: ureq::http::Response<ureq::Body>,
    ) -> ProviderError {
        let status = resp.status();
        let headers: Vec<(String, String)> = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let mut raw = Vec::new();
        let _ = resp
            .into_body()
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_end(&mut raw);
        let body = String::from_utf8_lossy(&raw);
        let (reason, retry_after) = classify(call.provider, Some(status.as_u16()), &body, &headers);
        let canonical = status.canonical_reason().unwrap_or("");
        let message = match error_message(&body) {
            Some(m) if !m.trim_start().starts_with('<') => m,
            _ => format!("HTTP {} {canonical}", status.as_u16())
                .trim_end()
                .to_string(),
        };
        call.err(reason, Some(status.as_u16()), message, retry_after)
    }

    fn read_error(&self, call: &Call<'_>, e: &std::io::Error) -> ProviderError {
        if call.deadline_passed() {
            call.err(
                FailoverReason::Timeout,
                None,
                "the run's time limit was reached while reading the response",
                None,
            )
        } else if is_timeout(e) {
            call.err(
                FailoverReason::Timeout,
                None,
                format!(
                    "no data from the server for {:.1}s",
                    self.cfg.request_timeout.as_secs_f64()
                ),
                None,
            )
        } else {
            call.err(
                FailoverReason::Unknown,
                None,
                format!("reading the response: {e}"),
                None,
            )
        }
    }

    /// POSTs `body` and returns the JSON reply.
    pub(crate) fn post_json(
        &self,
        call: &Call<'_>,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        let resp = self.send(call, url, headers, body, false)?;
        let mut raw = Vec::new();
        resp.into_body()
            .into_reader()
            .take(self.cfg.max_body_bytes + 1)
            .read_to_end(&mut raw)
            .map_err(|e| self.read_error(call, &e))?;
        if raw.len() as u64 > self.cfg.max_body_bytes {
            return Err(call.format(format!(
                "the response is larger than {} bytes",
                self.cfg.max_body_bytes
            )));
        }
        serde_json::from_slice(&raw).map_err(|e| {
            let start: String = String::from_utf8_lossy(&raw).chars().take(200).collect();
            call.format(format!("the response is not valid JSON ({e}): {start}"))
        })
    }

    /// A chat call without streaming: POSTs `body`, refuses a reply that is an error object
    /// (an `error` and no `reply_key`, where the provider sends those with HTTP 200), parses
    /// it with `parse`, and passes its text to `on_text_delta` whole.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn chat_once(
        &self,
        call: &Call<'_>,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
        reply_key: Option<&str>,
        parse: fn(&serde_json::Value) -> Result<super::ChatResponse, String>,
        on_text_delta: &mut dyn FnMut(&str),
    ) -> Result<super::ChatResponse, ProviderError> {
        let v = self.post_json(call, url, headers, body)?;
        if reply_key.is_some_and(|k| is_error_object(&v, k)) {
            return Err(call.stream_error(&v.to_string()));
        }
        let resp = parse(&v).map_err(|e| call.format(e))?;
        if !resp.text.is_empty() {
            on_text_delta(&resp.text);
        }
        Ok(resp)
    }

    /// POSTs `body` and returns the event stream of the reply.
    pub(crate) fn post_sse(
        &self,
        call: &Call<'_>,
        url: &str,
        headers: &[(&str, String)],
        body: &serde_json::Value,
    ) -> Result<SseStream, ProviderError> {
        let resp = self.send(call, url, headers, body, true)?;
        let limits = SseLimits {
            max_line: self.cfg.max_line_bytes,
            max_event: self.cfg.max_body_bytes.min(usize::MAX as u64) as usize,
            max_total: self.cfg.max_body_bytes,
        };
        Ok(SseStream {
            reader: SseReader::new(Box::new(resp.into_body().into_reader()), limits),
            idle: self.cfg.stream_idle_timeout,
        })
    }
}

/// The events of a streamed reply.
pub(crate) struct SseStream {
    reader: SseReader<Box<dyn Read + Send>>,
    idle: Duration,
}

impl SseStream {
    /// The next event, `Ok(None)` at the end of the stream. A stalled stream is
    /// [`FailoverReason::Timeout`]; an oversized one [`FailoverReason::Format`].
    pub fn next(&mut self, call: &Call<'_>) -> Result<Option<super::sse::SseEvent>, ProviderError> {
        self.reader.next_event().map_err(|e| match e {
            SseError::Io(_) if call.deadline_passed() => call.err(
                FailoverReason::Timeout,
                None,
                "the run's time limit was reached during the stream",
                None,
            ),
            SseError::Io(io) if is_timeout(&io) => call.err(
                FailoverReason::Timeout,
                None,
                format!(
                    "the stream stalled: no data for {:.1}s",
                    self.idle.as_secs_f64()
                ),
                None,
            ),
            SseError::Io(io) => call.err(
                FailoverReason::Unknown,
                None,
                format!("reading the stream: {io}"),
                None,
            ),
            other => call.format(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials_or_query() {
        assert_eq!(
            display_url("https://user:secret@api.example.com/v1/x?key=abc"),
            "https://api.example.com/v1/x"
        );
        assert_eq!(
            display_url("http://127.0.0.1:8/v1"),
            "http://127.0.0.1:8/v1"
        );
        assert_eq!(display_url("http://h"), "http://h");
    }
}
