//! Which embedder a workspace's memory uses: `[memory] embedder` in `config.toml`
//! (`$BULKHEAD_MEMORY_EMBEDDER`), or a command's `--embedder`.
//!
//! | spec             | embedder                                                            |
//! |------------------|---------------------------------------------------------------------|
//! | `local` (default)| the built-in offline model ([`LocalEmbedder`]): no key, no network  |
//! | `none`           | none: keyword-only memory                                           |
//! | `hash`           | [`HashEmbedder`], the lexical feature-hashing baseline              |
//! | `provider/model` | a remote provider ([`HttpEmbedder`]) behind the SSRF guard          |
//!
//! A provider's key comes from the workspace's credential store when
//! `$BULKHEAD_CREDENTIAL_KEY` unlocks it, else from the environment (`OPENAI_API_KEY`, …).

use std::sync::Arc;

use super::embed::{Embedder, HashEmbedder};
use super::model2vec::LocalEmbedder;
use super::providers::{EmbedNetPolicy, HttpEmbedder, ProviderConfig};
use super::Memory;
use crate::config::Config;
use crate::creds::{CredentialKey, KEY_ENV};
use crate::error::{Error, Result};
use crate::platform::Workspace;

/// The default embedder spec.
pub const DEFAULT_EMBEDDER: &str = "local";

pub use crate::config::check_embedder_spec;

/// The embedder `spec` names (`None` for `none`), with the operator's settings in `cfg`;
/// `ws` gives a provider its workspace's credential store.
pub fn embedder_from_spec(
    spec: &str,
    cfg: &Config,
    ws: Option<&Workspace>,
) -> Result<Option<Arc<dyn Embedder>>> {
    check_embedder_spec(spec).map_err(Error::Invalid)?;
    Ok(match spec {
        "none" => None,
        "hash" => Some(Arc::new(HashEmbedder::default())),
        "local" => Some(Arc::new(LocalEmbedder::builtin())),
        provider_model => {
            let mut pc = ProviderConfig::from_spec(provider_model, cfg.embedding_dims)?;
            if let Some(url) = &cfg.embedding_base_url {
                pc = pc.with_base_url(url);
            }
            let store = match (ws, CredentialKey::from_env_var(KEY_ENV)) {
                (Some(ws), Some(key)) => Some(ws.credentials(&key)?),
                _ => None,
            };
            let env = |k: &str| std::env::var(k).ok();
            Some(Arc::new(HttpEmbedder::resolve(
                pc,
                EmbedNetPolicy::from_config(cfg),
                store.as_ref(),
                &env,
            )?))
        }
    })
}

/// The embedder configured for `ws`'s platform (`[memory] embedder`, default `local`).
pub fn configured_embedder(ws: &Workspace) -> Result<Option<Arc<dyn Embedder>>> {
    let cfg = ws.platform_config()?;
    let spec = cfg
        .memory_embedder
        .clone()
        .unwrap_or_else(|| DEFAULT_EMBEDDER.to_string());
    embedder_from_spec(&spec, &cfg, Some(ws))
}

impl Memory {
    /// Opens the memory of `ws` with the platform's configured embedder.
    pub fn open_configured(ws: &Workspace) -> Result<Memory> {
        let m = Memory::open(ws)?;
        Ok(match configured_embedder(ws)? {
            Some(e) => m.with_embedder(e),
            None => m,
        })
    }

    /// Opens the memory of `ws` with the embedder `spec` names, or the configured one when
    /// `spec` is `None`.
    pub fn open_with_spec(ws: &Workspace, spec: Option<&str>) -> Result<Memory> {
        let Some(spec) = spec else {
            return Self::open_configured(ws);
        };
        let cfg = ws.platform_config()?;
        let m = Memory::open(ws)?;
        Ok(match embedder_from_spec(spec, &cfg, Some(ws))? {
            Some(e) => m.with_embedder(e),
            None => m,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        for ok in [
            "local",
            "none",
            "hash",
            "openai/text-embedding-3-small",
            "x/y",
        ] {
            assert!(check_embedder_spec(ok).is_ok(), "{ok}");
        }
        for bad in ["", "openai", "/m", "p/", "a b/c", "loca"] {
            let e = check_embedder_spec(bad).unwrap_err();
            assert!(e.contains("local, none, hash or provider/model"), "{e}");
        }
        let cfg = Config::default();
        assert!(embedder_from_spec("none", &cfg, None).unwrap().is_none());
        let e = embedder_from_spec("local", &cfg, None).unwrap().unwrap();
        assert_eq!(e.provider(), "local");
        assert_eq!(
            embedder_from_spec("hash", &cfg, None)
                .unwrap()
                .unwrap()
                .provider(),
            "hash"
        );
    }
}
