//! The provider table, `provider/model` strings, context windows and base URLs.
//!
//! | provider | API | default base URL | key variables | base-URL variables |
//! | --- | --- | --- | --- | --- |
//! | `anthropic` | Anthropic Messages | `https://api.anthropic.com` | `ANTHROPIC_API_KEY(S)` | `ANTHROPIC_BASE_URL` |
//! | `openai` | Chat Completions | `https://api.openai.com/v1` | `OPENAI_API_KEY(S)` | `OPENAI_BASE_URL`, `OPENAI_API_BASE` |
//! | `google` (alias `gemini`) | Gemini `generateContent` | `https://generativelanguage.googleapis.com` | `GEMINI_API_KEY(S)`, `GOOGLE_API_KEY(S)` | `GEMINI_BASE_URL`, `GOOGLE_GEMINI_BASE_URL` |
//! | `groq` | Chat Completions | `https://api.groq.com/openai/v1` | `GROQ_API_KEY(S)` | `GROQ_BASE_URL` |
//! | `cerebras` | Chat Completions | `https://api.cerebras.ai/v1` | `CEREBRAS_API_KEY(S)` | `CEREBRAS_BASE_URL` |
//! | `mistral` | Chat Completions | `https://api.mistral.ai/v1` | `MISTRAL_API_KEY(S)` | `MISTRAL_BASE_URL` |
//! | `xai` (alias `grok`) | Chat Completions | `https://api.x.ai/v1` | `XAI_API_KEY(S)` | `XAI_BASE_URL` |
//! | `openrouter` | Chat Completions | `https://openrouter.ai/api/v1` | `OPENROUTER_API_KEY(S)` | `OPENROUTER_BASE_URL` |
//! | `ollama` | Chat Completions | `http://127.0.0.1:11434/v1` | `OLLAMA_API_KEY` (optional) | `OLLAMA_BASE_URL`, `OLLAMA_HOST` |
//! | `llamacpp` (alias `llama.cpp`) | Chat Completions | `http://127.0.0.1:8080/v1` | `LLAMACPP_API_KEY` (optional) | `LLAMACPP_BASE_URL`, `LLAMA_CPP_BASE_URL` |
//! | `vllm` | Chat Completions | `http://127.0.0.1:8000/v1` | `VLLM_API_KEY` (optional) | `VLLM_BASE_URL` |
//! | `openai-compatible` | Chat Completions | (none: give one) | `OPENAI_COMPATIBLE_API_KEY(S)` (optional) | `OPENAI_COMPATIBLE_BASE_URL` |
//!
//! Base URL resolution, first found wins: the explicit one (the workspace's setting or
//! `--base-url`) → the provider's environment variables in the order above → the default.
//! Anthropic's and Gemini's base URLs are the host (the client adds `/v1/messages`,
//! `/v1beta/models/…`; a base that already ends in a version segment is used as is);
//! Chat Completions base URLs include the version (`…/v1`) and the client adds
//! `/chat/completions`. `OLLAMA_HOST` may be `host:port` without a scheme, as Ollama accepts it.
//!
//! Whatever its source, a base URL is reached through the SSRF guard ([`super::http`]): the
//! local servers' defaults (`ollama`, `llamacpp`, `vllm`, on 127.0.0.1) need the operator's
//! `[llm] allow_loopback = true` in `config.toml` ([`HttpConfig::ssrf`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::anthropic::AnthropicProvider;
use super::gemini::GeminiProvider;
use super::http::{HttpClient, HttpConfig};
use super::openai::{MaxTokensField, OpenAiProvider};
use super::Provider;
use crate::error::{Error, Result};

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFlavor {
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
    /// OpenAI Chat Completions (`/chat/completions`), OpenAI itself and compatible servers.
    OpenAi,
    /// Google Gemini (`generateContent`, `streamGenerateContent?alt=sse`).
    Gemini,
}

/// One row of the provider table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    /// Canonical name (`anthropic`, `openai`, `google`, …): the `provider/` of model strings
    /// and the name of the credential set holding its key.
    pub name: &'static str,
    /// Other names accepted for it.
    pub aliases: &'static [&'static str],
    /// Wire format.
    pub api: ApiFlavor,
    /// Default base URL (empty: one must be given).
    pub default_base_url: &'static str,
    /// Prefixes of the key variables, most specific first (`GEMINI` → `GEMINI_API_KEY`,
    /// `GEMINI_API_KEYS`, `GEMINI_API_KEY_<N>`).
    pub key_env_prefixes: &'static [&'static str],
    /// Environment variables that may hold the base URL, in order.
    pub base_url_env: &'static [&'static str],
    /// Whether calls need a key (local servers do not).
    pub requires_key: bool,
    /// Chat Completions only: the name of the output-token limit field.
    pub max_tokens_field: MaxTokensField,
    /// Chat Completions only: whether to send `stream_options.include_usage` (Mistral refuses
    /// it and reports usage anyway).
    pub stream_usage_option: bool,
}

const fn compat(
    name: &'static str,
    aliases: &'static [&'static str],
    default_base_url: &'static str,
    key_env_prefixes: &'static [&'static str],
    base_url_env: &'static [&'static str],
    requires_key: bool,
) -> ProviderSpec {
    ProviderSpec {
        name,
        aliases,
        api: ApiFlavor::OpenAi,
        default_base_url,
        key_env_prefixes,
        base_url_env,
        requires_key,
        max_tokens_field: MaxTokensField::MaxTokens,
        stream_usage_option: true,
    }
}

/// Every known provider.
pub const PROVIDERS: &[ProviderSpec] = &[
    ProviderSpec {
        name: "anthropic",
        aliases: &["claude"],
        api: ApiFlavor::Anthropic,
        default_base_url: "https://api.anthropic.com",
        key_env_prefixes: &["ANTHROPIC"],
        base_url_env: &["ANTHROPIC_BASE_URL"],
        requires_key: true,
        max_tokens_field: MaxTokensField::MaxTokens,
        stream_usage_option: false,
    },
    ProviderSpec {
        name: "openai",
        aliases: &[],
        api: ApiFlavor::OpenAi,
        default_base_url: "https://api.openai.com/v1",
        key_env_prefixes: &["OPENAI"],
        base_url_env: &["OPENAI_BASE_URL", "OPENAI_API_BASE"],
        requires_key: true,
        // Reasoning models refuse `max_tokens`.
        max_tokens_field: MaxTokensField::MaxCompletionTokens,
        stream_usage_option: true,
    },
    ProviderSpec {
        name: "google",
        aliases: &["gemini", "google-gemini"],
        api: ApiFlavor::Gemini,
        default_base_url: "https://generativelanguage.googleapis.com",
        key_env_prefixes: &["GEMINI", "GOOGLE"],
        base_url_env: &["GEMINI_BASE_URL", "GOOGLE_GEMINI_BASE_URL"],
        requires_key: true,
        max_tokens_field: MaxTokensField::MaxTokens,
        stream_usage_option: false,
    },
    compat(
        "groq",
        &[],
        "https://api.groq.com/openai/v1",
        &["GROQ"],
        &["GROQ_BASE_URL"],
        true,
    ),
    compat(
        "cerebras",
        &[],
        "https://api.cerebras.ai/v1",
        &["CEREBRAS"],
        &["CEREBRAS_BASE_URL"],
        true,
    ),
    ProviderSpec {
        stream_usage_option: false,
        ..compat(
            "mistral",
            &["mistralai"],
            "https://api.mistral.ai/v1",
            &["MISTRAL"],
            &["MISTRAL_BASE_URL"],
            true,
        )
    },
    compat(
        "xai",
        &["grok", "x-ai"],
        "https://api.x.ai/v1",
        &["XAI"],
        &["XAI_BASE_URL"],
        true,
    ),
    compat(
        "openrouter",
        &[],
        "https://openrouter.ai/api/v1",
        &["OPENROUTER"],
        &["OPENROUTER_BASE_URL"],
        true,
    ),
    compat(
        "ollama",
        &[],
        "http://127.0.0.1:11434/v1",
        &["OLLAMA"],
        &["OLLAMA_BASE_URL", "OLLAMA_HOST"],
        false,
    ),
    compat(
        "llamacpp",
        &["llama.cpp", "llama-cpp", "llama_cpp"],
        "http://127.0.0.1:8080/v1",
        &["LLAMACPP"],
        &["LLAMACPP_BASE_URL", "LLAMA_CPP_BASE_URL"],
        false,
    ),
    compat(
        "vllm",
        &[],
        "http://127.0.0.1:8000/v1",
        &["VLLM"],
        &["VLLM_BASE_URL"],
        false,
    ),
    compat(
        "openai-compatible",
        &["openai-compat", "openai_compatible", "compat"],
        "",
        &["OPENAI_COMPATIBLE"],
        &["OPENAI_COMPATIBLE_BASE_URL"],
        false,
    ),
];

/// The table row for `name` (canonical name or alias, any case).
pub fn lookup_provider(name: &str) -> Option<&'static ProviderSpec> {
    let n = name.trim().to_ascii_lowercase();
    PROVIDERS
        .iter()
        .find(|p| p.name == n || p.aliases.contains(&n.as_str()))
}

fn known_names() -> String {
    PROVIDERS
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A `provider/model` reference, e.g. `anthropic/claude-sonnet-4-5`, `ollama/llama3.2`,
/// `openrouter/anthropic/claude-3.5-sonnet` (everything after the first `/` is the model).
/// A bare model name is accepted when the provider is clear from it (`claude-…`, `gpt-…`,
/// `o1`/`o3`/`o4-…`, `gemini-…`, `grok-…`, `mistral-…`/`codestral-…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelRef {
    /// Canonical provider name.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
}

impl ModelRef {
    /// The provider's table row.
    pub fn spec(&self) -> &'static ProviderSpec {
        lookup_provider(&self.provider).expect("ModelRef holds a known provider")
    }

    /// The model's context window in tokens ([`context_window`]).
    pub fn context_window(&self) -> u32 {
        context_window(&self.model)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl FromStr for ModelRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<ModelRef> {
        let s = s.trim();
        if s.is_empty() || s.len() > 256 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Error::Invalid(format!(
                "model {s:?} is invalid: expected provider/model, e.g. anthropic/claude-sonnet-4-5"
            )));
        }
        if let Some((p, m)) = s.split_once('/') {
            if let Some(spec) = lookup_provider(p) {
                if m.is_empty() {
                    return Err(Error::Invalid(format!(
                        "model {s:?} names no model after {p:?}/"
                    )));
                }
                return Ok(ModelRef {
                    provider: spec.name.to_string(),
                    model: m.to_string(),
                });
            }
        }
        if let Some(p) = infer_provider(s) {
            return Ok(ModelRef {
                provider: p.to_string(),
                model: s.to_string(),
            });
        }
        Err(Error::Invalid(format!(
            "model {s:?}: unknown provider; write provider/model with one of: {}",
            known_names()
        )))
    }
}

/// The provider of a bare model name, when its name makes it plain.
pub fn infer_provider(model: &str) -> Option<&'static str> {
    let m = model.to_ascii_lowercase();
    let starts = |p: &str| m.starts_with(p);
    if starts("claude-") {
        Some("anthropic")
    } else if starts("gpt-") || starts("chatgpt-") || starts("o1") || starts("o3") || starts("o4") {
        Some("openai")
    } else if starts("gemini-") {
        Some("google")
    } else if starts("grok-") {
        Some("xai")
    } else if starts("mistral-")
        || starts("codestral-")
        || starts("magistral-")
        || starts("devstral-")
    {
        Some("mistral")
    } else {
        None
    }
}

/// Context window assumed for a model not in [`CONTEXT_WINDOWS`].
pub const DEFAULT_CONTEXT_WINDOW: u32 = 32_768;

/// Known context windows (tokens) by model-name prefix; the longest matching prefix wins.
/// Names are matched after dropping an `org/` prefix (OpenRouter, vLLM) and an `:tag` suffix
/// (Ollama). Local servers may be configured with a smaller window than the model's.
pub const CONTEXT_WINDOWS: &[(&str, u32)] = &[
    // Anthropic
    ("claude-", 200_000),
    // OpenAI
    ("gpt-5", 400_000),
    ("gpt-4.1", 1_047_576),
    ("gpt-4o", 128_000),
    ("gpt-4-turbo", 128_000),
    ("gpt-4", 8_192),
    ("gpt-3.5-turbo", 16_385),
    ("gpt-oss", 131_072),
    ("o1-mini", 128_000),
    ("o1", 200_000),
    ("o3", 200_000),
    ("o4-mini", 200_000),
    ("chatgpt-4o", 128_000),
    // Google
    ("gemini-1.5-pro", 2_097_152),
    ("gemini-1.5-flash", 1_048_576),
    ("gemini-2.0-flash", 1_048_576),
    ("gemini-2.5", 1_048_576),
    ("gemini-3", 1_048_576),
    ("gemma3", 131_072),
    ("gemma-3", 131_072),
    // xAI
    ("grok-4", 256_000),
    ("grok-code-fast", 256_000),
    ("grok-3", 131_072),
    ("grok-2", 131_072),
    // Mistral
    ("mistral-large", 131_072),
    ("mistral-medium", 131_072),
    ("mistral-small", 131_072),
    ("codestral", 256_000),
    ("devstral", 131_072),
    ("magistral", 40_000),
    ("open-mistral-nemo", 131_072),
    ("mistral-nemo", 131_072),
    ("mistral", 32_768),
    ("mixtral", 32_768),
    // Meta and other open models (Groq, Cerebras, Ollama, vLLM names)
    ("llama-3.3", 131_072),
    ("llama-3.1", 131_072),
    ("llama-3.2", 131_072),
    ("llama-4", 131_072),
    ("llama3.3", 131_072),
    ("llama3.2", 131_072),
    ("llama3.1", 131_072),
    ("llama3", 8_192),
    ("meta-llama-3.1", 131_072),
    ("qwen3", 40_960),
    ("qwen-3", 131_072),
    ("qwen2.5", 32_768),
    ("deepseek-r1", 131_072),
    ("deepseek-v3", 131_072),
    ("deepseek-chat", 131_072),
    ("kimi-k2", 131_072),
    ("phi4", 16_384),
];

/// The context window of `model` (a provider's model id), [`DEFAULT_CONTEXT_WINDOW`] when
/// unknown.
pub fn context_window(model: &str) -> u32 {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    let m = m.split(':').next().unwrap_or(m);
    CONTEXT_WINDOWS
        .iter()
        .filter(|(p, _)| m.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .map_or(DEFAULT_CONTEXT_WINDOW, |(_, w)| *w)
}

/// The base URL for `spec`: `explicit` (workspace setting or `--base-url`) → the provider's
/// environment variables (read through `env`) → the default. `None` when there is none
/// (`openai-compatible` without a URL). The result has no trailing `/`.
pub fn resolve_base_url(
    spec: &ProviderSpec,
    explicit: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    if let Some(u) = explicit.map(str::trim).filter(|u| !u.is_empty()) {
        return Some(normalize_base_url(u, false));
    }
    for var in spec.base_url_env {
        if let Some(v) = env(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            return Some(normalize_base_url(&v, *var == "OLLAMA_HOST"));
        }
    }
    (!spec.default_base_url.is_empty()).then(|| spec.default_base_url.to_string())
}

fn normalize_base_url(url: &str, ollama_host: bool) -> String {
    let mut u = url.trim().trim_end_matches('/').to_string();
    if !u.contains("://") {
        // `OLLAMA_HOST=0.0.0.0:11434`, `localhost:8000/v1`.
        u = format!("http://{u}");
    }
    if ollama_host {
        // OLLAMA_HOST names the server, not the API: bind-all means "this machine".
        u = u.replace("://0.0.0.0", "://127.0.0.1");
        let has_path = u
            .split_once("://")
            .is_some_and(|(_, rest)| rest.contains('/'));
        if !has_path {
            u.push_str("/v1");
        }
    }
    u
}

/// Builds the client for `model`'s provider, its base URL resolved by [`resolve_base_url`].
pub fn provider_for(
    model: &ModelRef,
    explicit_base_url: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    http: HttpConfig,
) -> Result<Arc<dyn Provider>> {
    let spec = lookup_provider(&model.provider).ok_or_else(|| {
        Error::Invalid(format!(
            "unknown provider {:?}; known: {}",
            model.provider,
            known_names()
        ))
    })?;
    let base = resolve_base_url(spec, explicit_base_url, env).ok_or_else(|| {
        Error::Invalid(format!(
            "provider {} has no default base URL: give one with --base-url or {}",
            spec.name,
            spec.base_url_env.join(" / ")
        ))
    })?;
    Ok(build_provider(spec, &base, http))
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `[::1]`).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Builds the client for `spec` at `base_url` (used as given). A server on this machine is
/// always reached directly, whatever the proxy variables say.
pub fn build_provider(spec: &ProviderSpec, base_url: &str, http: HttpConfig) -> Arc<dyn Provider> {
    let mut http = http;
    if is_loopback_url(base_url) {
        http.proxy_from_env = false;
    }
    let client = Arc::new(HttpClient::new(http));
    match spec.api {
        ApiFlavor::Anthropic => Arc::new(AnthropicProvider::new(base_url, client)),
        ApiFlavor::Gemini => Arc::new(GeminiProvider::new(spec.name, base_url, client)),
        ApiFlavor::OpenAi => Arc::new(OpenAiProvider::new(
            spec.name,
            base_url,
            client,
            spec.max_tokens_field,
            spec.stream_usage_option,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k: &str| m.get(k).cloned()
    }

    fn parse(s: &str) -> ModelRef {
        s.parse().unwrap()
    }

    #[test]
    fn model_strings() {
        assert_eq!(
            parse("anthropic/claude-sonnet-4-5"),
            ModelRef {
                provider: "anthropic".into(),
                model: "claude-sonnet-4-5".into()
            }
        );
        assert_eq!(parse("openai/gpt-4o").model, "gpt-4o");
        assert_eq!(parse("google/gemini-2.5-flash").provider, "google");
        assert_eq!(parse("gemini/gemini-2.5-flash").provider, "google");
        assert_eq!(parse("groq/llama-3.3-70b-versatile").provider, "groq");
        assert_eq!(parse("ollama/llama3.2").model, "llama3.2");
        assert_eq!(parse("ollama/qwen2.5-coder:7b").model, "qwen2.5-coder:7b");
        assert_eq!(parse("llama.cpp/local").provider, "llamacpp");
        assert_eq!(parse("XAI/grok-4").provider, "xai");
        let or = parse("openrouter/anthropic/claude-3.5-sonnet");
        assert_eq!(
            (or.provider.as_str(), or.model.as_str()),
            ("openrouter", "anthropic/claude-3.5-sonnet")
        );
        assert_eq!(or.to_string(), "openrouter/anthropic/claude-3.5-sonnet");
        // Bare names whose provider is plain.
        assert_eq!(parse("claude-opus-4-1").provider, "anthropic");
        assert_eq!(parse("gpt-4o-mini").provider, "openai");
        assert_eq!(parse("o3-mini").provider, "openai");
        assert_eq!(parse("gemini-2.5-pro").provider, "google");
        // vLLM-style model ids keep their org.
        assert_eq!(
            parse("vllm/meta-llama/Llama-3.1-8B-Instruct").model,
            "meta-llama/Llama-3.1-8B-Instruct"
        );
    }

    #[test]
    fn bad_model_strings() {
        for s in [
            "",
            "nope/model",
            "llama3",
            "anthropic/",
            "a b/c",
            "openai/gpt\n4",
        ] {
            let e = s.parse::<ModelRef>().unwrap_err();
            assert!(matches!(e, Error::Invalid(_)), "{s}: {e}");
        }
        let e = "nope/x".parse::<ModelRef>().unwrap_err().to_string();
        assert!(e.contains("anthropic") && e.contains("ollama"), "{e}");
    }

    #[test]
    fn context_windows() {
        assert_eq!(context_window("claude-sonnet-4-5"), 200_000);
        assert_eq!(context_window("gpt-4o"), 128_000);
        assert_eq!(context_window("gpt-4o-mini"), 128_000);
        assert_eq!(context_window("gpt-4"), 8_192);
        assert_eq!(context_window("gpt-4.1-mini"), 1_047_576);
        assert_eq!(context_window("o1-mini"), 128_000);
        assert_eq!(context_window("gemini-2.5-flash"), 1_048_576);
        assert_eq!(context_window("llama-3.3-70b-versatile"), 131_072);
        assert_eq!(context_window("llama3.2:3b"), 131_072);
        assert_eq!(context_window("llama3:8b"), 8_192);
        assert_eq!(context_window("anthropic/claude-3.5-sonnet"), 200_000);
        assert_eq!(context_window("mistral-large-latest"), 131_072);
        assert_eq!(context_window("mistral:7b"), 32_768);
        assert_eq!(context_window("something-new"), DEFAULT_CONTEXT_WINDOW);
        assert_eq!(parse("xai/grok-4").context_window(), 256_000);
    }

    #[test]
    fn base_url_resolution_order() {
        let spec = lookup_provider("openai").unwrap();
        let env = env_of(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("OPENAI_API_BASE", "http://x/v1"),
        ]);
        // Explicit beats the environment.
        assert_eq!(
            resolve_base_url(spec, Some("http://explicit:1/v1"), &env).unwrap(),
            "http://explicit:1/v1"
        );
        // The first variable beats the second; trailing slashes go.
        assert_eq!(
            resolve_base_url(spec, None, &env).unwrap(),
            "http://127.0.0.1:9/v1"
        );
        let env2 = env_of(&[("OPENAI_API_BASE", "http://legacy/v1")]);
        assert_eq!(
            resolve_base_url(spec, None, &env2).unwrap(),
            "http://legacy/v1"
        );
        // Then the default.
        assert_eq!(
            resolve_base_url(spec, None, &env_of(&[])).unwrap(),
            "https://api.openai.com/v1"
        );
        // An empty explicit value does not count.
        assert_eq!(
            resolve_base_url(spec, Some("  "), &env_of(&[])).unwrap(),
            "https://api.openai.com/v1"
        );
    }

    #[test]
    fn provider_specific_base_url_variables() {
        let google = lookup_provider("google").unwrap();
        let env = env_of(&[("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:5")]);
        assert_eq!(
            resolve_base_url(google, None, &env).unwrap(),
            "http://127.0.0.1:5"
        );
        let env = env_of(&[
            ("GEMINI_BASE_URL", "http://a"),
            ("GOOGLE_GEMINI_BASE_URL", "http://b"),
        ]);
        assert_eq!(resolve_base_url(google, None, &env).unwrap(), "http://a");
        let anthropic = lookup_provider("anthropic").unwrap();
        let env = env_of(&[("ANTHROPIC_BASE_URL", "http://127.0.0.1:4000")]);
        assert_eq!(
            resolve_base_url(anthropic, None, &env).unwrap(),
            "http://127.0.0.1:4000"
        );

        let ollama = lookup_provider("ollama").unwrap();
        assert_eq!(
            resolve_base_url(ollama, None, &env_of(&[])).unwrap(),
            "http://127.0.0.1:11434/v1"
        );
        for (host, want) in [
            ("0.0.0.0:11434", "http://127.0.0.1:11434/v1"),
            ("127.0.0.1:11500", "http://127.0.0.1:11500/v1"),
            ("http://gpu-box:11434", "http://gpu-box:11434/v1"),
            ("https://ollama.example/v1", "https://ollama.example/v1"),
        ] {
            let env = env_of(&[("OLLAMA_HOST", host)]);
            assert_eq!(
                resolve_base_url(ollama, None, &env).unwrap(),
                want,
                "{host}"
            );
        }
        // OLLAMA_BASE_URL comes first and is used as given.
        let env = env_of(&[("OLLAMA_BASE_URL", "http://h:1/v1"), ("OLLAMA_HOST", "x:2")]);
        assert_eq!(
            resolve_base_url(ollama, None, &env).unwrap(),
            "http://h:1/v1"
        );

        let compat = lookup_provider("openai-compatible").unwrap();
        assert_eq!(resolve_base_url(compat, None, &env_of(&[])), None);
        let m = parse("openai-compatible/my-model");
        let err = provider_for(&m, None, &env_of(&[]), HttpConfig::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("--base-url"), "{err}");
    }

    #[test]
    fn loopback_urls() {
        for u in [
            "http://127.0.0.1:11434/v1",
            "http://localhost:8080/v1",
            "http://[::1]:8000/v1",
            "http://127.1.2.3",
            "http://user:pw@localhost:1/v1",
        ] {
            assert!(is_loopback_url(u), "{u}");
        }
        for u in [
            "https://api.openai.com/v1",
            "http://10.0.0.5:8000",
            "http://localhost.example.com",
            "http://[2001:db8::1]/",
        ] {
            assert!(!is_loopback_url(u), "{u}");
        }
    }

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for p in PROVIDERS {
            assert!(names.insert(p.name), "duplicate {}", p.name);
            for a in p.aliases {
                assert!(names.insert(a), "duplicate alias {a}");
            }
            assert!(!p.key_env_prefixes.is_empty());
            assert!(!p.base_url_env.is_empty());
            assert_eq!(lookup_provider(p.name).unwrap().name, p.name);
        }
        let built = provider_for(
            &parse("groq/llama-3.3-70b-versatile"),
            None,
            &env_of(&[]),
            HttpConfig::default(),
        )
        .unwrap();
        assert_eq!(built.name(), "groq");
    }
}
