//! Remote embedding providers: OpenAI and any OpenAI-compatible `/v1/embeddings` (Mistral
//! among them), Gemini (`:batchEmbedContents`), Voyage (`/v1/embeddings` with `input_type`)
//! and Ollama (`/api/embed`), all behind one [`HttpEmbedder`].
//!
//! - **Network**: every request goes through the SSRF guard's [`GuardedClient`] (URL checks,
//!   DNS with every address vetted, the connection pinned to the vetted address, no proxy, no
//!   redirects). The endpoint is vetted when the embedder is built, so a refused base URL
//!   fails before any connection. Loopback (Ollama's default) and private ranges are reachable
//!   only when the operator sets `[memory] allow_loopback_embeddings = true` /
//!   `allow_private_embeddings = true` in `config.toml` ([`EmbedNetPolicy::from_config`]);
//!   nothing a tenant or the agent writes can turn them on. A redirect is refused (it could
//!   carry the key elsewhere).
//! - **Keys**: [`crate::llm::keys::resolve_keys`] (the workspace's credential store first, then
//!   the environment), handed out by a [`KeyRing`]; a key in cooldown is skipped.
//! - **Batching and concurrency**: [`ProviderConfig::batch_size`] texts per request (64 by
//!   default); the batches of one [`Embedder::embed`] call run on at most
//!   [`ProviderConfig::concurrency`] scoped threads (2 by default, the machine's core count),
//!   results kept in input order.
//! - **Retries**: a failed request is classified ([`crate::llm::classify::classify`]) and
//!   retried per [`RetryPolicy`] (exponential backoff with jitter, never sooner than the
//!   server's `Retry-After`); a per-request timeout ([`ProviderConfig::timeout`]).
//! - **Hostile responses**: the body is capped ([`ProviderConfig::max_response_bytes`]);
//!   the number of vectors must equal the number of texts, every vector must have exactly
//!   [`Embedder::dims`] values, and every value must be finite as an `f32` (NaN, infinities
//!   and out-of-range numbers are refused), else the whole call fails.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::embed::Embedder;
use crate::config::Config;
use crate::creds::CredentialStore;
use crate::error::{Error, Result};
use crate::llm::classify::{classify, error_message};
use crate::llm::keys::{resolve_keys, KeySource};
use crate::llm::{ApiKey, FailoverReason, KeyRing, RetryDecision, RetryPolicy};
use crate::net::{
    check_redirect, guarded_agent, AddressClass, GuardConfig, GuardedClient, SsrfError, SsrfPolicy,
};

/// Texts per request by default.
pub const DEFAULT_BATCH: usize = 64;
/// Largest batch accepted.
pub const MAX_BATCH: usize = 2048;
/// Requests in flight at once for one `embed` call, by default.
pub const DEFAULT_CONCURRENCY: usize = 2;
/// Largest response body read by default (64 texts × 3072 dims of JSON floats fit well).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 32 << 20;
/// Default timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The operator setting that allows loopback embedding endpoints, as written in `config.toml`.
pub const LOOPBACK_SETTING: &str = "[memory] allow_loopback_embeddings = true";
/// The operator setting that allows private-range embedding endpoints.
pub const PRIVATE_SETTING: &str = "[memory] allow_private_embeddings = true";

/// The wire protocol of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKind {
    /// `POST {base}/embeddings`, `{"model", "input": [...]}` → `{"data": [{"embedding", "index"}]}`
    /// (OpenAI, Mistral, any OpenAI-compatible server).
    OpenAi,
    /// `POST {base}/models/{model}:batchEmbedContents` → `{"embeddings": [{"values"}]}`.
    Gemini,
    /// OpenAI's shape plus `input_type` (`document` / `query`).
    Voyage,
    /// `POST {base}/api/embed`, `{"model", "input"}` → `{"embeddings": [[...]]}`.
    Ollama,
}

/// Which non-public addresses embedding endpoints may reach: the operator's `config.toml`
/// only. [`Default`] is public addresses only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmbedNetPolicy {
    /// `[memory] allow_loopback_embeddings`.
    pub allow_loopback: bool,
    /// `[memory] allow_private_embeddings`.
    pub allow_private: bool,
}

impl EmbedNetPolicy {
    /// The policy the operator's configuration sets.
    pub fn from_config(c: &Config) -> Self {
        EmbedNetPolicy {
            allow_loopback: c.allow_loopback_embeddings,
            allow_private: c.allow_private_embeddings,
        }
    }

    fn ssrf(self) -> SsrfPolicy {
        SsrfPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private,
            ..SsrfPolicy::default()
        }
    }
}

/// One remote embedding model and how to call it.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Provider name: recorded with the vectors and used for key resolution (`openai`,
    /// `mistral`, `google`, `voyage`, `ollama`, or any name for an OpenAI-compatible server).
    pub provider: String,
    /// Wire protocol.
    pub api: ApiKind,
    /// Model name.
    pub model: String,
    /// Base URL (`https://api.openai.com/v1`, `http://127.0.0.1:11434`, …).
    pub base_url: String,
    /// Vector length the model returns (every response is checked against it).
    pub dims: usize,
    /// Ask the server for `dims` dimensions (OpenAI `dimensions`, Gemini
    /// `outputDimensionality`, Voyage `output_dimension`) instead of the model's default.
    pub request_dims: bool,
    /// Voyage's `input_type` (`document` or `query`).
    pub input_type: Option<String>,
    /// Texts per request.
    pub batch_size: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries.
    pub retry: RetryPolicy,
    /// Timeout of one request (connect included).
    pub timeout: Duration,
    /// Largest response body.
    pub max_response_bytes: u64,
    /// Whether a key is required (OpenAI, Mistral, Gemini, Voyage); Ollama and
    /// OpenAI-compatible servers may have none.
    pub requires_key: bool,
}

/// Vector length of well-known models.
pub fn known_dims(provider: &str, model: &str) -> Option<usize> {
    let d = match (provider, model) {
        (_, "text-embedding-3-small" | "text-embedding-ada-002") => 1536,
        (_, "text-embedding-3-large") => 3072,
        (_, "mistral-embed") => 1024,
        (_, "text-embedding-004" | "embedding-001") => 768,
        (_, "gemini-embedding-001") => 3072,
        (_, "voyage-3" | "voyage-3.5" | "voyage-3-large" | "voyage-code-3") => 1024,
        (_, "voyage-3-lite" | "voyage-3.5-lite") => 512,
        (_, "nomic-embed-text") => 768,
        (_, "all-minilm" | "all-minilm:l6-v2") => 384,
        (_, "mxbai-embed-large") => 1024,
        _ => return None,
    };
    Some(d)
}

impl ProviderConfig {
    /// The configuration of `spec`, `provider/model` (`openai/text-embedding-3-small`,
    /// `mistral/mistral-embed`, `gemini/text-embedding-004`, `voyage/voyage-3`,
    /// `ollama/nomic-embed-text`, or `<name>/<model>` for an OpenAI-compatible server, which
    /// then needs [`ProviderConfig::with_base_url`]). `dims` is needed for a model
    /// [`known_dims`] does not know.
    pub fn from_spec(spec: &str, dims: Option<usize>) -> Result<ProviderConfig> {
        let Some((provider, model)) = spec.split_once('/') else {
            return Err(Error::Invalid(format!(
                "embedder {spec:?}: expected provider/model, e.g. openai/text-embedding-3-small"
            )));
        };
        let (name, api, base, requires_key) = match provider {
            "openai" => ("openai", ApiKind::OpenAi, "https://api.openai.com/v1", true),
            "mistral" => (
                "mistral",
                ApiKind::OpenAi,
                "https://api.mistral.ai/v1",
                true,
            ),
            "gemini" | "google" => (
                "google",
                ApiKind::Gemini,
                "https://generativelanguage.googleapis.com/v1beta",
                true,
            ),
            "voyage" => (
                "voyage",
                ApiKind::Voyage,
                "https://api.voyageai.com/v1",
                true,
            ),
            "ollama" => ("ollama", ApiKind::Ollama, "http://127.0.0.1:11434", false),
            other => (other, ApiKind::OpenAi, "", false),
        };
        check_name("provider", name)?;
        check_name("model", model)?;
        let dims = match dims.or_else(|| known_dims(name, model)) {
            Some(d) if (1..=65536).contains(&d) => d,
            Some(d) => {
                return Err(Error::Invalid(format!(
                    "embedder {spec}: {d} dimensions is out of range (1 to 65536)"
                )))
            }
            None => {
                return Err(Error::Invalid(format!(
                    "embedder {spec}: unknown model; give its dimensions"
                )))
            }
        };
        Ok(ProviderConfig {
            provider: name.to_string(),
            api,
            model: model.to_string(),
            base_url: base.to_string(),
            dims,
            request_dims: false,
            input_type: None,
            batch_size: DEFAULT_BATCH,
            concurrency: DEFAULT_CONCURRENCY,
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            requires_key,
        })
    }

    /// Sets the base URL.
    pub fn with_base_url(mut self, url: &str) -> ProviderConfig {
        self.base_url = url.trim_end_matches('/').to_string();
        self
    }

    /// The URL requests are posted to.
    pub fn endpoint(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        match self.api {
            ApiKind::OpenAi | ApiKind::Voyage => format!("{base}/embeddings"),
            ApiKind::Gemini => format!("{base}/models/{}:batchEmbedContents", self.model),
            ApiKind::Ollama => format!("{base}/api/embed"),
        }
    }
}

/// Names go into URLs and the database: a conservative character set.
fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "embedding {what} {s:?}: letters, digits, '.', '-', '_' and ':' only"
        )))
    }
}

/// A refusal by the guard as a user-facing error, naming the operator setting when one
/// would allow it.
fn refusal(provider: &str, e: &SsrfError) -> Error {
    let hint = match e {
        SsrfError::BlockedAddress {
            class: AddressClass::Loopback,
            ..
        } => format!(
            " (an operator can allow loopback embedding endpoints with `{LOOPBACK_SETTING}` \
             in config.toml)"
        ),
        // (Not UniqueLocal: this hint never named fc00::/7; kept as it was.)
        SsrfError::BlockedAddress {
            class: AddressClass::Private | AddressClass::Shared,
            ..
        } => {
            format!(
                " (an operator can allow private embedding endpoints with `{PRIVATE_SETTING}` \
                 in config.toml)"
            )
        }
        _ => String::new(),
    };
    Error::Invalid(format!("embedding provider {provider}: {e}{hint}"))
}

/// An [`Embedder`] calling a remote provider. See the module docs.
#[derive(Debug)]
pub struct HttpEmbedder {
    cfg: ProviderConfig,
    url: String,
    client: GuardedClient,
    keys: Mutex<KeyRing>,
    requests: AtomicU64,
}

impl HttpEmbedder {
    /// An embedder for `cfg` with `keys`; the endpoint is vetted now (no connection is made),
    /// so a refused URL fails here.
    pub fn new(cfg: ProviderConfig, net: EmbedNetPolicy, keys: KeyRing) -> Result<HttpEmbedder> {
        check_name("provider", &cfg.provider)?;
        check_name("model", &cfg.model)?;
        if cfg.dims == 0 || cfg.dims > 65536 {
            return Err(Error::Invalid(format!(
                "embedder {}/{}: {} dimensions is out of range (1 to 65536)",
                cfg.provider, cfg.model, cfg.dims
            )));
        }
        if cfg.base_url.is_empty() {
            return Err(Error::Invalid(format!(
                "embedder {}/{}: no base URL (an OpenAI-compatible server needs one)",
                cfg.provider, cfg.model
            )));
        }
        if cfg.requires_key && keys.is_empty() {
            return Err(Error::Invalid(format!(
                "embedding provider {}: no API key (store one with `bulkhead cred set <ws> {} \
                 api_key=…` or set {}_API_KEY)",
                cfg.provider,
                cfg.provider,
                cfg.provider.to_ascii_uppercase()
            )));
        }
        let keys = if keys.is_empty() {
            KeyRing::new(&cfg.provider, vec![(ApiKey::none(), KeySource::None)])
        } else {
            keys
        };
        let client = guarded_agent(
            net.ssrf(),
            GuardConfig {
                connect_timeout: cfg.timeout.min(Duration::from_secs(15)),
                request_timeout: cfg.timeout,
                max_body_bytes: cfg.max_response_bytes,
                max_redirects: 0,
            },
        );
        let url = cfg.endpoint();
        client.vet(&url).map_err(|e| refusal(&cfg.provider, &e))?;
        Ok(HttpEmbedder {
            cfg,
            url,
            client,
            keys: Mutex::new(keys),
            requests: AtomicU64::new(0),
        })
    }

    /// [`HttpEmbedder::new`] with the keys of `cfg.provider` from the workspace's credential
    /// store, then the environment read through `env`.
    pub fn resolve(
        cfg: ProviderConfig,
        net: EmbedNetPolicy,
        store: Option<&CredentialStore>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<HttpEmbedder> {
        let keys = resolve_keys(&cfg.provider, store, env);
        let ring = KeyRing::new(&cfg.provider, keys);
        HttpEmbedder::new(cfg, net, ring)
    }

    /// The configuration.
    pub fn config(&self) -> &ProviderConfig {
        &self.cfg
    }

    /// HTTP requests made so far (retries included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn request_body(&self, texts: &[&str]) -> Value {
        let c = &self.cfg;
        match c.api {
            ApiKind::OpenAi => {
                let mut b = json!({"model": c.model, "input": texts});
                if c.provider == "openai" {
                    b["encoding_format"] = json!("float");
                }
                if c.request_dims {
                    b["dimensions"] = json!(c.dims);
                }
                b
            }
            ApiKind::Voyage => {
                let mut b = json!({"model": c.model, "input": texts});
                if let Some(t) = &c.input_type {
                    b["input_type"] = json!(t);
                }
                if c.request_dims {
                    b["output_dimension"] = json!(c.dims);
                }
                b
            }
            ApiKind::Gemini => {
                let model = format!("models/{}", c.model);
                let reqs: Vec<Value> = texts
                    .iter()
                    .map(|t| {
                        let mut r = json!({"model": model, "content": {"parts": [{"text": t}]}});
                        if c.request_dims {
                            r["outputDimensionality"] = json!(c.dims);
                        }
                        r
                    })
                    .collect();
                json!({ "requests": reqs })
            }
            ApiKind::Ollama => json!({"model": c.model, "input": texts}),
        }
    }

    fn fail(&self, msg: impl std::fmt::Display) -> Error {
        Error::Invalid(format!(
            "embedding provider {}/{}: {msg}",
            self.cfg.provider, self.cfg.model
        ))
    }

    /// Reads and checks the vectors of a 2xx response.
    fn parse(&self, body: &[u8], n: usize) -> Result<Vec<Vec<f32>>> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| self.fail(format_args!("unreadable response: {e}")))?;
        let rows: Vec<&Value> = match self.cfg.api {
            ApiKind::OpenAi | ApiKind::Voyage => {
                let data = v
                    .get("data")
                    .and_then(Value::as_array)
                    .ok_or_else(|| self.fail("response has no `data` array"))?;
                let mut slots: Vec<Option<&Value>> = vec![None; data.len()];
                for (pos, item) in data.iter().enumerate() {
                    let idx = match item.get("index") {
                        None => pos,
                        Some(i) => i
                            .as_u64()
                            .map(|i| i as usize)
                            .filter(|i| *i < data.len())
                            .ok_or_else(|| self.fail("response has a bad `index`"))?,
                    };
                    if slots[idx].is_some() {
                        return Err(self.fail("response repeats an `index`"));
                    }
                    slots[idx] = Some(
                        item.get("embedding")
                            .ok_or_else(|| self.fail("response item has no `embedding`"))?,
                    );
                }
                slots.into_iter().flatten().collect()
            }
            ApiKind::Gemini => v
                .get("embeddings")
                .and_then(Value::as_array)
                .ok_or_else(|| self.fail("response has no `embeddings` array"))?
                .iter()
                .map(|e| {
                    e.get("values")
                        .ok_or_else(|| self.fail("response item has no `values`"))
                })
                .collect::<Result<_>>()?,
            ApiKind::Ollama => v
                .get("embeddings")
                .and_then(Value::as_array)
                .ok_or_else(|| self.fail("response has no `embeddings` array"))?
                .iter()
                .collect(),
        };
        if rows.len() != n {
            return Err(self.fail(format_args!(
                "{} vectors returned for {n} texts",
                rows.len()
            )));
        }
        rows.into_iter()
            .map(|r| check_vector(r, self.cfg.dims).map_err(|e| self.fail(e)))
            .collect()
    }

    /// One batch, with retries.
    fn call_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let body = self.request_body(texts);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let (idx, key) = {
                let mut ring = self.keys.lock().unwrap_or_else(|p| p.into_inner());
                match ring.current(Instant::now()) {
                    Some((i, k)) => (i, k.clone()),
                    None => return Err(self.fail("every API key is cooling down after failures")),
                }
            };
            let auth;
            let mut headers: Vec<(&str, &str)> = Vec::new();
            if !key.is_empty() {
                if self.cfg.api == ApiKind::Gemini {
                    headers.push(("x-goog-api-key", key.expose_secret()));
                } else {
                    auth = format!("Bearer {}", key.expose_secret());
                    headers.push(("authorization", &auth));
                }
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let (reason, retry_after, message) =
                match self.client.post_json(&self.url, &headers, &body) {
                    Ok(r) if (200..300).contains(&r.status) => {
                        self.keys
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .report_success(idx);
                        return self.parse(&r.body, texts.len());
                    }
                    Ok(r) if (300..400).contains(&r.status) => {
                        let to = r.location.unwrap_or_default();
                        return Err(match check_redirect(&self.url, &to, self.client.policy()) {
                            Err(e) => refusal(&self.cfg.provider, &e),
                            Ok(u) => self.fail(format_args!(
                                "refused: the endpoint redirected (HTTP {}) to {u}; \
                                 redirects are not followed",
                                r.status
                            )),
                        });
                    }
                    Ok(r) => {
                        let text = String::from_utf8_lossy(&r.body);
                        let hdrs: Vec<(String, String)> = r
                            .retry_after
                            .iter()
                            .map(|v| ("retry-after".to_string(), v.clone()))
                            .collect();
                        let (reason, ra) =
                            classify(&self.cfg.provider, Some(r.status), &text, &hdrs);
                        let msg = error_message(&text)
                            .unwrap_or_else(|| text.chars().take(300).collect());
                        let msg = crate::llm::scrub(&msg, Some(&key));
                        (reason, ra, format!("HTTP {}: {msg}", r.status))
                    }
                    Err(e @ SsrfError::Transport { .. }) => {
                        (FailoverReason::Timeout, None, e.to_string())
                    }
                    Err(e) => return Err(refusal(&self.cfg.provider, &e)),
                };
            self.keys
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .report_failure(idx, reason, retry_after, Instant::now());
            match self.cfg.retry.decide(
                attempt,
                reason,
                retry_after,
                crate::llm::retry::jitter_sample(),
            ) {
                RetryDecision::Wait(d) => {
                    log::debug!(target: "memory", "embedding retry {attempt} after {d:?}: {message}");
                    std::thread::sleep(d);
                }
                RetryDecision::GiveUp(_) => {
                    return Err(self.fail(format_args!(
                        "{message} ({reason}, after {attempt} attempt(s))"
                    )))
                }
            }
        }
    }
}

/// A JSON array of exactly `dims` numbers, each finite as an `f32`.
fn check_vector(v: &Value, dims: usize) -> std::result::Result<Vec<f32>, String> {
    let arr = v.as_array().ok_or("a vector is not an array")?;
    if arr.len() != dims {
        return Err(format!(
            "a vector has {} dimensions, expected {dims}",
            arr.len()
        ));
    }
    arr.iter()
        .map(|x| {
            let f = x.as_f64().ok_or("a vector holds a non-number")? as f32;
            if f.is_finite() {
                Ok(f)
            } else {
                Err("a vector holds a non-finite value".to_string())
            }
        })
        .collect()
}

/// The result of one batch, filled by a worker.
type Slot = Mutex<Option<Result<Vec<Vec<f32>>>>>;

impl Embedder for HttpEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batches: Vec<&[&str]> = texts
            .chunks(self.cfg.batch_size.clamp(1, MAX_BATCH))
            .collect();
        let workers = self.cfg.concurrency.clamp(1, 16).min(batches.len());
        if workers == 1 {
            let mut out = Vec::with_capacity(texts.len());
            for b in batches {
                out.extend(self.call_batch(b)?);
            }
            return Ok(out);
        }
        let results: Vec<Slot> = batches.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = batches.get(i) else { break };
                    let r = self.call_batch(b);
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                });
            }
        });
        let mut out = Vec::with_capacity(texts.len());
        for slot in results {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(r) => out.extend(r?),
                None => return Err(self.fail("a batch was not run after an earlier failure")),
            }
        }
        Ok(out)
    }

    fn provider(&self) -> &str {
        &self.cfg.provider
    }

    fn model(&self) -> &str {
        &self.cfg.model
    }

    fn dims(&self) -> usize {
        self.cfg.dims
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emb(api: ApiKind, dims: usize) -> HttpEmbedder {
        let mut cfg = ProviderConfig::from_spec("compat/m", Some(dims)).unwrap();
        cfg.api = api;
        // Never contacted: parsing only.
        let cfg = cfg.with_base_url("http://127.0.0.1:9/v1");
        let net = EmbedNetPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        HttpEmbedder::new(cfg, net, KeyRing::new("compat", Vec::new())).unwrap()
    }

    #[test]
    fn parses_each_wire_format() {
        let e = emb(ApiKind::OpenAi, 2);
        let body = br#"{"data":[{"index":1,"embedding":[3,4]},{"index":0,"embedding":[1,2]}]}"#;
        assert_eq!(
            e.parse(body, 2).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        let e = emb(ApiKind::Gemini, 2);
        let body = br#"{"embeddings":[{"values":[1,2]}]}"#;
        assert_eq!(e.parse(body, 1).unwrap(), vec![vec![1.0, 2.0]]);
        let e = emb(ApiKind::Ollama, 2);
        let body = br#"{"embeddings":[[0.5,-0.5]]}"#;
        assert_eq!(e.parse(body, 1).unwrap(), vec![vec![0.5, -0.5]]);
    }

    #[test]
    fn hostile_vectors_are_refused() {
        let e = emb(ApiKind::OpenAi, 2);
        for body in [
            r#"{"data":[{"embedding":[1,2,3]}]}"#,
            r#"{"data":[{"embedding":[1]}]}"#,
            r#"{"data":[{"embedding":[1e300,0]}]}"#,
            r#"{"data":[{"embedding":["NaN",0]}]}"#,
            r#"{"data":[{"embedding":[null,0]}]}"#,
            r#"{"data":[{"embedding":[1,2]},{"embedding":[1,2]}]}"#,
            r#"{"data":[{"index":0,"embedding":[1,2]},{"index":0,"embedding":[1,2]}]}"#,
            r#"{"data":[{"index":7,"embedding":[1,2]}]}"#,
            r#"{"data":[]}"#,
            r#"{"error":"x"}"#,
            "not json",
        ] {
            assert!(e.parse(body.as_bytes(), 1).is_err(), "{body}");
        }
    }

    #[test]
    fn specs_and_endpoints() {
        let c = ProviderConfig::from_spec("openai/text-embedding-3-small", None).unwrap();
        assert_eq!(c.dims, 1536);
        assert_eq!(c.endpoint(), "https://api.openai.com/v1/embeddings");
        let c = ProviderConfig::from_spec("gemini/text-embedding-004", None).unwrap();
        assert_eq!(c.provider, "google");
        assert!(c
            .endpoint()
            .ends_with("/models/text-embedding-004:batchEmbedContents"));
        let c = ProviderConfig::from_spec("ollama/nomic-embed-text", None).unwrap();
        assert_eq!(c.endpoint(), "http://127.0.0.1:11434/api/embed");
        assert_eq!(
            ProviderConfig::from_spec("mistral/mistral-embed", None)
                .unwrap()
                .endpoint(),
            "https://api.mistral.ai/v1/embeddings"
        );
        assert!(ProviderConfig::from_spec("voyage/voyage-3", None).is_ok());
        assert!(ProviderConfig::from_spec("openai/unknown-model", None).is_err());
        assert!(ProviderConfig::from_spec("openai", None).is_err());
        assert!(ProviderConfig::from_spec("gemini/../../x", Some(3)).is_err());
        assert!(ProviderConfig::from_spec("gemini/a?b", Some(3)).is_err());
    }

    #[test]
    fn ollama_default_is_refused_without_the_operator_setting() {
        let c = ProviderConfig::from_spec("ollama/nomic-embed-text", None).unwrap();
        let e = HttpEmbedder::new(
            c,
            EmbedNetPolicy::default(),
            KeyRing::new("ollama", Vec::new()),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("allow_loopback_embeddings"), "{e}");
    }

    #[test]
    fn keys_required_where_the_provider_needs_one() {
        let c = ProviderConfig::from_spec("openai/text-embedding-3-small", None).unwrap();
        let e = HttpEmbedder::resolve(c, EmbedNetPolicy::default(), None, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no API key"), "{e}");
    }
}
