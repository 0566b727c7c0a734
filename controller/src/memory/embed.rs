//! Embedders: the [`Embedder`] trait and [`HashEmbedder`], an offline baseline.

use crate::error::Result;

/// Turns texts into vectors. Vectors of different `(provider, model, dims)` are never
/// compared: each stored vector records the triple that made it.
pub trait Embedder: Send + Sync {
    /// One vector of [`Embedder::dims`] floats per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// Provider name (`hash`, `openai`, …).
    fn provider(&self) -> &str;
    /// Model name.
    fn model(&self) -> &str;
    /// Vector length.
    fn dims(&self) -> usize;
    /// Least cosine similarity at which a vector match, with no keyword match beside it,
    /// is a result at all (see [`super::SearchOptions::min_similarity`]). The default, 0,
    /// keeps every positive match; a model whose unrelated texts score well above 0 says so.
    fn min_similarity(&self) -> f32 {
        0.0
    }
}

impl std::fmt::Debug for dyn Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Embedder({}/{}/{})",
            self.provider(),
            self.model(),
            self.dims()
        )
    }
}

/// A deterministic feature-hashing embedder: each lower-cased word (unigram) and each pair
/// of adjacent words (bigram, half weight) adds ±1 at a position given by a hash of it
/// (the sign from another bit of the hash), and the vector is L2-normalized. CJK text,
/// which has no spaces, contributes character bigrams instead of words.
///
/// **It is a baseline, not a semantic model**: two texts are close when they share words,
/// so it finds what keyword search finds (with no stemming and no notion of synonyms). It
/// needs no key, no network and no model file, which makes it right for tests and for a
/// workspace that wants vector plumbing without a provider; a real model replaces it.
#[derive(Debug, Clone)]
pub struct HashEmbedder {
    dims: usize,
}

/// Dimensions of [`HashEmbedder::default`].
pub const HASH_DIMS: usize = 384;

impl Default for HashEmbedder {
    fn default() -> Self {
        HashEmbedder { dims: HASH_DIMS }
    }
}

impl HashEmbedder {
    /// An embedder with `dims` dimensions (at least 1).
    pub fn new(dims: usize) -> Self {
        HashEmbedder { dims: dims.max(1) }
    }

    fn add(&self, v: &mut [f32], feature: &str, weight: f32) {
        // FNV-1a, 64 bits: stable across platforms and releases (stored vectors depend on it).
        let mut x: u64 = 0xcbf2_9ce4_8422_2325;
        for b in feature.bytes() {
            x ^= u64::from(b);
            x = x.wrapping_mul(0x0100_0000_01b3);
        }
        // The SplitMix64 finalizer, so that every bit depends on every input bit.
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        let i = ((x >> 1) % self.dims as u64) as usize;
        let sign = if x & 1 == 0 { 1.0 } else { -1.0 };
        v[i] += sign * weight;
    }

    /// The vector of one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let words = super::search::tokenize(text);
        let mut feats: Vec<String> = Vec::new();
        for w in &words {
            if w.chars().any(super::search::is_cjk) {
                let cs: Vec<char> = w.chars().collect();
                if cs.len() == 1 {
                    feats.push(w.clone());
                }
                for p in cs.windows(2) {
                    feats.push(p.iter().collect());
                }
            } else {
                feats.push(w.clone());
            }
        }
        for f in &feats {
            self.add(&mut v, &format!("1:{f}"), 1.0);
        }
        for p in feats.windows(2) {
            self.add(&mut v, &format!("2:{} {}", p[0], p[1]), 0.5);
        }
        normalize(&mut v);
        v
    }
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 && n.is_finite() {
        for x in v {
            *x /= n;
        }
    }
}

impl Embedder for HashEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
    fn provider(&self) -> &str {
        "hash"
    }
    fn model(&self) -> &str {
        "feature-hash-v1"
    }
    fn dims(&self) -> usize {
        self.dims
    }
}

/// `v` as little-endian f32 bytes.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian f32 bytes back to floats (`None` if the length is not a multiple of 4).
pub fn from_blob(b: &[u8]) -> Option<Vec<f32>> {
    if b.len() % 4 != 0 {
        return None;
    }
    Some(
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::search::dot;

    #[test]
    fn deterministic_normalized_and_word_sensitive() {
        let e = HashEmbedder::default();
        let a = e.embed_one("the cat sat on the mat");
        assert_eq!(a, e.embed_one("the cat sat on the mat"));
        assert_eq!(a.len(), 384);
        assert!((dot(&a, &a) - 1.0).abs() < 1e-5);
        let b = e.embed_one("a cat sat on a mat");
        let c = e.embed_one("quarterly revenue grew in europe");
        assert!(dot(&a, &b) > dot(&a, &c) + 0.3);
        assert_eq!(e.embed_one(""), vec![0.0; 384]);
    }

    #[test]
    fn blob_round_trip() {
        let v = vec![1.5f32, -0.25, 3.0e-7];
        assert_eq!(from_blob(&to_blob(&v)).unwrap(), v);
        assert_eq!(to_blob(&[1.0])[..], 1.0f32.to_le_bytes());
        assert!(from_blob(&[0, 1, 2]).is_none());
    }
}
