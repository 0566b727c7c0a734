//! API keys: where they come from, and rotation between them.
//!
//! Keys of a provider are gathered in this order, duplicates dropped (first place kept):
//!
//! 1. The workspace's credential store (so each tenant brings its own key): the credential
//!    set named after the provider's canonical name (`anthropic`, `openai`, `google`, `groq`,
//!    …; an alias such as `gemini` is read too), key `api_key`, then key `api_keys` (a list,
//!    separated like the environment's). Store one with
//!    `bulkhead cred set <ws> anthropic api_key=sk-ant-…`.
//! 2. The environment, for each of the provider's prefixes (`ANTHROPIC`; Gemini reads
//!    `GEMINI` then `GOOGLE`): `<PREFIX>_API_KEY`, then the list in `<PREFIX>_API_KEYS`
//!    (separated by commas, spaces or semicolons), then `<PREFIX>_API_KEY_1` …
//!    `<PREFIX>_API_KEY_32` (gaps allowed).
//!
//! The environment is read through a function given by the caller, so tests never touch the
//! process environment. Every key from the environment is registered as an operator secret;
//! a stored key stays the workspace's (see [`ApiKey::of_workspace`]).
//!
//! A [`KeyRing`] hands out one key at a time; on a rate-limit, quota/billing or auth failure
//! the key is put in cooldown and the next one is used. Providers that need no key (Ollama,
//! llama.cpp, vLLM) get a ring holding [`ApiKey::none`] when no key is configured.

use std::fmt;
use std::time::{Duration, Instant};

use super::models::lookup_provider;
use super::{ApiKey, FailoverReason};
use crate::creds::CredentialStore;

/// Where a key came from (shown in events; never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The workspace's credential store: set and key names.
    Credentials {
        /// Credential set.
        set: String,
        /// Key within the set.
        key: String,
    },
    /// An environment variable.
    Env(String),
    /// No key: the provider needs none.
    None,
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Credentials { set, key } => write!(f, "credential {set}.{key}"),
            KeySource::Env(v) => write!(f, "${v}"),
            KeySource::None => f.write_str("no key"),
        }
    }
}

/// Highest `<PREFIX>_API_KEY_<N>` probed.
pub const MAX_NUMBERED_KEYS: u32 = 32;

/// Splits a key list on commas, semicolons and whitespace.
pub fn split_key_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|k| !k.is_empty())
}

/// Every key of `provider`, in the order described in the module docs, without duplicates.
pub fn resolve_keys(
    provider: &str,
    store: Option<&CredentialStore>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(ApiKey, KeySource)> {
    let spec = lookup_provider(provider);
    let mut set_names: Vec<String> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    match spec {
        Some(s) => {
            set_names.push(s.name.to_string());
            set_names.extend(s.aliases.iter().map(|a| a.to_string()));
            prefixes.extend(s.key_env_prefixes.iter().map(|p| p.to_string()));
        }
        None => {
            set_names.push(provider.to_string());
            prefixes.push(provider.to_ascii_uppercase().replace(['-', '.'], "_"));
        }
    }

    let mut out: Vec<(ApiKey, KeySource)> = Vec::new();
    let mut push = |value: &str, source: KeySource| {
        let v = value.trim();
        if !v.is_empty() && !out.iter().any(|(k, _)| k.expose_secret() == v) {
            // A stored key is the workspace's secret (its run redacts it); a key from the
            // environment is the operator's (redacted everywhere).
            let key = match source {
                KeySource::Credentials { .. } => ApiKey::of_workspace(v),
                _ => ApiKey::new(v),
            };
            out.push((key, source));
        }
    };

    if let Some(store) = store {
        for set in &set_names {
            let Some(entries) = store.get(set) else {
                continue;
            };
            if let Some(v) = entries.get("api_key") {
                push(
                    v.expose_secret(),
                    KeySource::Credentials {
                        set: set.clone(),
                        key: "api_key".into(),
                    },
                );
            }
            if let Some(v) = entries.get("api_keys") {
                for k in split_key_list(v.expose_secret()) {
                    push(
                        k,
                        KeySource::Credentials {
                            set: set.clone(),
                            key: "api_keys".into(),
                        },
                    );
                }
            }
        }
    }

    for p in &prefixes {
        let single = format!("{p}_API_KEY");
        if let Some(v) = env(&single) {
            push(&v, KeySource::Env(single));
        }
        let list = format!("{p}_API_KEYS");
        if let Some(v) = env(&list) {
            for k in split_key_list(&v) {
                push(k, KeySource::Env(list.clone()));
            }
        }
        for n in 1..=MAX_NUMBERED_KEYS {
            let var = format!("{p}_API_KEY_{n}");
            if let Some(v) = env(&var) {
                push(&v, KeySource::Env(var));
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Entry {
    key: ApiKey,
    source: KeySource,
    cooldown_until: Option<Instant>,
    last_failure: Option<FailoverReason>,
}

/// The keys of one provider, handed out one at a time, with per-key cooldowns.
///
/// Not shared between threads by itself; wrap it in a `Mutex` to share one ring between the
/// runs of a workspace.
#[derive(Debug, Clone)]
pub struct KeyRing {
    provider: String,
    entries: Vec<Entry>,
    current: usize,
}

impl KeyRing {
    /// A ring over `keys`, tried in order.
    pub fn new(provider: &str, keys: Vec<(ApiKey, KeySource)>) -> Self {
        KeyRing {
            provider: provider.to_string(),
            entries: keys
                .into_iter()
                .map(|(key, source)| Entry {
                    key,
                    source,
                    cooldown_until: None,
                    last_failure: None,
                })
                .collect(),
            current: 0,
        }
    }

    /// The ring of `provider`'s keys ([`resolve_keys`]); a provider that needs no key and has
    /// none gets one [`ApiKey::none`].
    pub fn resolve(
        provider: &str,
        store: Option<&CredentialStore>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let mut keys = resolve_keys(provider, store, env);
        let needs_key = lookup_provider(provider).map_or(true, |s| s.requires_key);
        if keys.is_empty() && !needs_key {
            keys.push((ApiKey::none(), KeySource::None));
        }
        KeyRing::new(provider, keys)
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no key at all (the caller reports "no API key for `<provider>`",
    /// naming where keys are read from).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The key to use now: the current one, or the next one not in cooldown (which becomes
    /// current). `None` when every key is cooling down (see [`KeyRing::next_ready_at`]) or
    /// there is none.
    pub fn current(&mut self, now: Instant) -> Option<(usize, &ApiKey)> {
        let n = self.entries.len();
        let idx = (0..n)
            .map(|i| (self.current + i) % n)
            .find(|&i| self.entries[i].cooldown_until.map_or(true, |t| t <= now))?;
        self.current = idx;
        Some((idx, &self.entries[idx].key))
    }

    /// Where key `idx` came from.
    pub fn source(&self, idx: usize) -> Option<&KeySource> {
        self.entries.get(idx).map(|e| &e.source)
    }

    /// The last failure recorded for key `idx`.
    pub fn last_failure(&self, idx: usize) -> Option<FailoverReason> {
        self.entries.get(idx).and_then(|e| e.last_failure)
    }

    /// How long a key is set aside after failing with `reason`: rate limit → the provider's
    /// `Retry-After` or 60 s; billing/quota → 1 h; auth → 24 h; other reasons are not the
    /// key's fault → none.
    pub fn cooldown_for(reason: FailoverReason, retry_after: Option<Duration>) -> Option<Duration> {
        match reason {
            FailoverReason::RateLimit => Some(
                retry_after
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_secs(1)),
            ),
            FailoverReason::Billing => Some(Duration::from_secs(3600)),
            FailoverReason::Auth | FailoverReason::AuthPermanent => {
                Some(Duration::from_secs(24 * 3600))
            }
            _ => None,
        }
    }

    /// Records that key `idx` failed with `reason`. When the reason is the key's
    /// ([`FailoverReason::rotates_key`]), the key cools down ([`KeyRing::cooldown_for`]) and
    /// the ring moves to the next key; returns whether another key is available now.
    pub fn report_failure(
        &mut self,
        idx: usize,
        reason: FailoverReason,
        retry_after: Option<Duration>,
        now: Instant,
    ) -> bool {
        let n = self.entries.len();
        let Some(e) = self.entries.get_mut(idx) else {
            return false;
        };
        e.last_failure = Some(reason);
        if !reason.rotates_key() {
            return false;
        }
        if let Some(d) = Self::cooldown_for(reason, retry_after) {
            let until = now + d;
            e.cooldown_until = Some(e.cooldown_until.map_or(until, |t| t.max(until)));
        }
        if n > 1 {
            self.current = (idx + 1) % n;
        }
        self.entries
            .iter()
            .enumerate()
            .any(|(i, e)| i != idx && e.cooldown_until.map_or(true, |t| t <= now))
    }

    /// Records that key `idx` worked: its cooldown and failure are cleared.
    pub fn report_success(&mut self, idx: usize) {
        if let Some(e) = self.entries.get_mut(idx) {
            e.cooldown_until = None;
            e.last_failure = None;
        }
    }

    /// When the first key comes out of cooldown, if every key is cooling down.
    pub fn next_ready_at(&self) -> Option<Instant> {
        if self.entries.iter().any(|e| e.cooldown_until.is_none()) {
            return None;
        }
        self.entries.iter().filter_map(|e| e.cooldown_until).min()
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

    fn values(keys: &[(ApiKey, KeySource)]) -> Vec<String> {
        keys.iter()
            .map(|(k, _)| k.expose_secret().to_string())
            .collect()
    }

    #[test]
    fn environment_order_and_dedup() {
        let env = env_of(&[
            ("OPENAI_API_KEY", "sk-one-aaaaaaaa"),
            (
                "OPENAI_API_KEYS",
                "sk-two-bbbbbbbb, sk-three-cccccc;sk-one-aaaaaaaa  sk-four-dddddd",
            ),
            ("OPENAI_API_KEY_2", "sk-six-ffffffff"),
            ("OPENAI_API_KEY_1", "sk-five-eeeeeee"),
            ("OPENAI_API_KEY_7", "sk-two-bbbbbbbb"),
            ("ANTHROPIC_API_KEY", "not-for-openai"),
        ]);
        let keys = resolve_keys("openai", None, &env);
        assert_eq!(
            values(&keys),
            vec![
                "sk-one-aaaaaaaa",
                "sk-two-bbbbbbbb",
                "sk-three-cccccc",
                "sk-four-dddddd",
                "sk-five-eeeeeee",
                "sk-six-ffffffff"
            ]
        );
        assert_eq!(keys[0].1, KeySource::Env("OPENAI_API_KEY".into()));
        assert_eq!(keys[1].1, KeySource::Env("OPENAI_API_KEYS".into()));
        assert_eq!(keys[4].1, KeySource::Env("OPENAI_API_KEY_1".into()));
        assert_eq!(keys[4].1.to_string(), "$OPENAI_API_KEY_1");
    }

    #[test]
    fn gemini_reads_gemini_then_google_variables() {
        let env = env_of(&[
            ("GOOGLE_API_KEY", "g-google-1111"),
            ("GEMINI_API_KEYS", "g-gem-2222 g-gem-3333"),
            ("GEMINI_API_KEY", "g-gem-1111"),
        ]);
        for name in ["google", "gemini"] {
            let keys = resolve_keys(name, None, &env);
            assert_eq!(
                values(&keys),
                vec!["g-gem-1111", "g-gem-2222", "g-gem-3333", "g-google-1111"]
            );
        }
    }

    #[test]
    fn stored_keys_stay_the_workspaces_and_env_keys_are_the_operators() {
        let dir = tempfile::tempdir().unwrap();
        let ck = crate::CredentialKey::new("test passphrase");
        let opts =
            crate::CredentialOptions::default().with_kdf(crate::KdfParams::insecure_for_tests(10));
        let mut store = CredentialStore::open(dir.path(), "tenant", &ck, opts).unwrap();
        let mut set = std::collections::BTreeMap::new();
        set.insert("api_key".to_string(), "sk-ant-tenant-only-5555".into());
        store.set("anthropic", set).unwrap();
        // Reopened: decrypting registers nothing process-wide.
        let store = CredentialStore::open(dir.path(), "tenant", &ck, opts).unwrap();
        let env = env_of(&[("ANTHROPIC_API_KEY", "sk-ant-operator-6666")]);
        let keys = resolve_keys("anthropic", Some(&store), &env);
        assert_eq!(
            values(&keys),
            vec!["sk-ant-tenant-only-5555", "sk-ant-operator-6666"]
        );
        let text = "sk-ant-tenant-only-5555 sk-ant-operator-6666";
        // Another tenant's output (operator secrets only) keeps the tenant's key...
        assert_eq!(
            crate::logging::redact_operator(text),
            "sk-ant-tenant-only-5555 [redacted]"
        );
        // ...and the tenant's own run redacts it.
        assert_eq!(store.redactor().redact(text), "[redacted] [redacted]");
    }

    #[test]
    fn credential_store_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let ck = crate::CredentialKey::new("test passphrase");
        let opts =
            crate::CredentialOptions::default().with_kdf(crate::KdfParams::insecure_for_tests(10));
        let mut store = CredentialStore::open(dir.path(), "keys", &ck, opts).unwrap();
        let mut set = std::collections::BTreeMap::new();
        set.insert("api_key".to_string(), "sk-ant-store-1111".into());
        set.insert(
            "api_keys".to_string(),
            "sk-ant-store-2222,sk-ant-env-1111".into(),
        );
        store.set("anthropic", set).unwrap();

        let env = env_of(&[
            ("ANTHROPIC_API_KEY", "sk-ant-env-1111"),
            ("ANTHROPIC_API_KEY_3", "sk-ant-env-3333"),
        ]);
        let keys = resolve_keys("anthropic", Some(&store), &env);
        assert_eq!(
            values(&keys),
            vec![
                "sk-ant-store-1111",
                "sk-ant-store-2222",
                "sk-ant-env-1111",
                "sk-ant-env-3333"
            ]
        );
        assert_eq!(
            keys[0].1,
            KeySource::Credentials {
                set: "anthropic".into(),
                key: "api_key".into()
            }
        );
        // The env copy of a stored key is a duplicate: the store's place is kept.
        assert_eq!(
            keys[2].1,
            KeySource::Credentials {
                set: "anthropic".into(),
                key: "api_keys".into()
            }
        );
        // No store set: environment only.
        assert_eq!(
            values(&resolve_keys("openai", Some(&store), &env)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn keyless_providers_get_an_empty_key() {
        let ring = KeyRing::resolve("ollama", None, &env_of(&[]));
        assert_eq!(ring.len(), 1);
        let mut ring = ring;
        let (_, k) = ring.current(Instant::now()).unwrap();
        assert!(k.is_empty());
        assert!(KeyRing::resolve("anthropic", None, &env_of(&[])).is_empty());
        let ring = KeyRing::resolve("vllm", None, &env_of(&[("VLLM_API_KEY", "token-abcdef")]));
        assert_eq!(ring.source(0), Some(&KeySource::Env("VLLM_API_KEY".into())));
    }

    #[test]
    fn rotation_and_cooldowns() {
        let env = env_of(&[("GROQ_API_KEYS", "gsk-aaaaaaaa,gsk-bbbbbbbb,gsk-cccccccc")]);
        let mut ring = KeyRing::resolve("groq", None, &env);
        let t0 = Instant::now();
        let (i, k) = ring.current(t0).unwrap();
        assert_eq!((i, k.expose_secret()), (0, "gsk-aaaaaaaa"));

        // A rate limit on key 0: rotate to key 1, key 0 cools down for Retry-After.
        assert!(ring.report_failure(
            0,
            FailoverReason::RateLimit,
            Some(Duration::from_secs(10)),
            t0
        ));
        assert_eq!(ring.current(t0).unwrap().0, 1);
        // Overloaded is not the key's fault: no rotation.
        assert!(!ring.report_failure(1, FailoverReason::Overloaded, None, t0));
        assert_eq!(ring.current(t0).unwrap().0, 1);
        // Billing on key 1: long cooldown, on to key 2.
        assert!(ring.report_failure(1, FailoverReason::Billing, None, t0));
        assert_eq!(ring.current(t0).unwrap().0, 2);
        // Auth on key 2: nothing left now.
        assert!(!ring.report_failure(2, FailoverReason::Auth, None, t0));
        assert!(ring.current(t0).is_none());
        assert_eq!(ring.next_ready_at(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(ring.last_failure(2), Some(FailoverReason::Auth));

        // After 10 s key 0 is back; keys 1 and 2 are still out.
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(ring.current(t1).unwrap().0, 0);
        ring.report_success(0);
        assert_eq!(ring.last_failure(0), None);
        assert_eq!(ring.next_ready_at(), None);
        // An hour later key 1 is back too.
        let t2 = t0 + Duration::from_secs(3601);
        assert!(ring.report_failure(0, FailoverReason::RateLimit, None, t2));
        assert_eq!(ring.current(t2).unwrap().0, 1);
    }

    #[test]
    fn a_longer_cooldown_is_not_shortened() {
        let mut ring = KeyRing::new(
            "openai",
            vec![(ApiKey::new("sk-x-aaaaaaaa"), KeySource::None)],
        );
        let t0 = Instant::now();
        ring.report_failure(0, FailoverReason::Billing, None, t0);
        ring.report_failure(
            0,
            FailoverReason::RateLimit,
            Some(Duration::from_secs(1)),
            t0,
        );
        assert_eq!(ring.next_ready_at(), Some(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn key_lists_split_on_every_separator() {
        let v: Vec<&str> = split_key_list(" a,b;c d\te\n,,f ").collect();
        assert_eq!(v, vec!["a", "b", "c", "d", "e", "f"]);
    }
}
