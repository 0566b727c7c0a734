//! The offline local embedder: a static (Model2Vec-style) model distilled from
//! all-MiniLM-L6-v2, built into the binary, needing no key, no network and no model file.
//!
//! A text's vector is the mean of the rows of its WordPiece tokens (BERT's uncased
//! tokenization), L2-normalized. Rows are int8 with one f32 scale each. How the rows were made,
//! and how to remake them byte for byte, is in `controller/model/distill.py`; why this model
//! (measured against the feature-hashing baseline on real text) is in docs/memory.md.
//!
//! The model is hostile-input safe by construction: the tokenizer is a bounded greedy scan
//! (words longer than [`MAX_WORD_CHARS`] become `[UNK]`), and embedding cost is linear in the
//! text's length.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use unicode_normalization::UnicodeNormalization;

use super::embed::{normalize, Embedder};
use crate::error::{Error, Result};

/// The built-in model file (see `controller/model/distill.py` for its format and origin).
static BUILTIN: &[u8] = include_bytes!("../../model/minilm-l6-m2v.bin");

/// Words longer than this (in characters) are one `[UNK]`, as in BERT.
pub const MAX_WORD_CHARS: usize = 100;

const MAGIC: &[u8; 8] = b"BHM2V\0\x01\0";

/// The least cosine similarity at which a vector-only match of this model counts. Measured:
/// texts about the same thing in different words score 0.5 to 0.65, unrelated ones mostly
/// below 0.3 and at most about 0.4 (made-up words share sub-word pieces with anything).
pub const MIN_SIMILARITY: f32 = 0.45;

/// A loaded static model: vocabulary and int8 rows.
pub struct StaticModel {
    name: String,
    dims: usize,
    vocab: HashMap<String, u32>,
    unk: Option<u32>,
    scales: Vec<f32>,
    rows: Vec<i8>,
}

impl std::fmt::Debug for StaticModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticModel")
            .field("name", &self.name)
            .field("dims", &self.dims)
            .field("vocab", &self.vocab.len())
            .finish()
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len());
        let end = end.ok_or_else(|| Error::Invalid("model file is truncated".into()))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<usize> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
    }
}

impl StaticModel {
    /// The model built into this binary (parsed once per process).
    pub fn builtin() -> Arc<StaticModel> {
        static MODEL: OnceLock<Arc<StaticModel>> = OnceLock::new();
        MODEL
            .get_or_init(|| {
                Arc::new(StaticModel::parse(BUILTIN).expect("the built-in model file is valid"))
            })
            .clone()
    }

    /// Parses a model file (format in `controller/model/distill.py`).
    pub fn parse(b: &[u8]) -> Result<StaticModel> {
        let mut r = Reader { b, at: 0 };
        if r.take(8)? != MAGIC {
            return Err(Error::Invalid(
                "not a bulkhead static model file (bad magic)".into(),
            ));
        }
        let (v, dims) = (r.u32()?, r.u32()?);
        if v == 0 || dims == 0 || dims > 4096 || v > 2_000_000 {
            return Err(Error::Invalid(format!(
                "model file has an implausible shape {v} x {dims}"
            )));
        }
        let n = r.u32()?;
        let name = std::str::from_utf8(r.take(n)?)
            .map_err(|_| Error::Invalid("model name is not UTF-8".into()))?
            .to_string();
        let n = r.u32()?;
        let block = std::str::from_utf8(r.take(n)?)
            .map_err(|_| Error::Invalid("model vocabulary is not UTF-8".into()))?;
        let tokens: Vec<&str> = block.split_terminator('\n').collect();
        if tokens.len() != v {
            return Err(Error::Invalid(format!(
                "model vocabulary has {} tokens, header says {v}",
                tokens.len()
            )));
        }
        let scales: Vec<f32> = r
            .take(v * 4)?
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let rows: Vec<i8> = r.take(v * dims)?.iter().map(|&x| x as i8).collect();
        if r.at != b.len() {
            return Err(Error::Invalid("model file has trailing bytes".into()));
        }
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let unk = vocab.get("[UNK]").copied();
        Ok(StaticModel {
            name,
            dims,
            vocab,
            unk,
            scales,
            rows,
        })
    }

    /// The model's name (recorded with every vector it makes).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Vector length.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// WordPiece token ids of `text` (no `[CLS]`/`[SEP]`; unknown words are `[UNK]`).
    pub fn token_ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for word in basic_tokenize(text) {
            self.wordpiece(&word, &mut ids);
        }
        ids
    }

    /// Greedy longest-match-first WordPiece of one word into `out`.
    fn wordpiece(&self, word: &str, out: &mut Vec<u32>) {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        if chars.len() > MAX_WORD_CHARS {
            out.extend(self.unk);
            return;
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut key = String::new();
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                let from = chars[start].0;
                let to = chars.get(end).map_or(word.len(), |c| c.0);
                key.clear();
                if start > 0 {
                    key.push_str("##");
                }
                key.push_str(&word[from..to]);
                if let Some(&id) = self.vocab.get(key.as_str()) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => {
                    out.extend(self.unk);
                    return;
                }
            }
        }
        out.extend(pieces);
    }

    /// The vector of one text: the mean of its known tokens' rows, normalized (zero when it
    /// has none).
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        for id in self.token_ids(text) {
            if Some(id) == self.unk {
                continue;
            }
            let i = id as usize;
            let s = self.scales[i];
            for (x, &q) in v
                .iter_mut()
                .zip(&self.rows[i * self.dims..(i + 1) * self.dims])
            {
                *x += s * f32::from(q);
            }
        }
        normalize(&mut v);
        v
    }
}

/// BERT's basic tokenization for an uncased vocabulary: control characters dropped, CJK
/// ideographs split into single characters, lower-cased, accents stripped (NFD, combining marks
/// removed), punctuation split off as words of its own.
pub fn basic_tokenize(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, words: &mut Vec<String>| {
        if !cur.is_empty() {
            words.push(std::mem::take(cur));
        }
    };
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            flush(&mut cur, &mut words);
            continue;
        }
        if is_cjk_ideograph(c) || is_punctuation(c) {
            flush(&mut cur, &mut words);
            words.push(c.to_string());
            continue;
        }
        for l in c.to_lowercase() {
            for d in std::iter::once(l).nfd() {
                if !is_combining_mark(d) {
                    cur.push(d);
                }
            }
        }
    }
    flush(&mut cur, &mut words);
    words
}

/// The CJK ideograph blocks BERT splits into single characters (kana and Hangul are not).
fn is_cjk_ideograph(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// ASCII punctuation (BERT counts `$`, `+`, `^`, `` ` `` and the like) and the Unicode
/// punctuation blocks.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(c as u32,
            0xA1 | 0xA7 | 0xAB | 0xB6 | 0xB7 | 0xBB | 0xBF
            | 0x2010..=0x2027 | 0x2030..=0x205E | 0x3001..=0x3003 | 0x3008..=0x3011
            | 0x3014..=0x301F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20 | 0xFF3B..=0xFF40
            | 0xFF5B..=0xFF65 | 0x060C | 0x061B | 0x061F | 0x066A..=0x066D | 0x06D4)
}

/// Combining marks that accent stripping removes after NFD.
fn is_combining_mark(c: char) -> bool {
    matches!(c as u32,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

/// [`StaticModel`] as an [`Embedder`]: provider `local`.
#[derive(Debug, Clone)]
pub struct LocalEmbedder {
    model: Arc<StaticModel>,
}

impl LocalEmbedder {
    /// The built-in model.
    pub fn builtin() -> LocalEmbedder {
        LocalEmbedder {
            model: StaticModel::builtin(),
        }
    }

    /// A model file made by `controller/model/distill.py` (to compare distillation settings).
    pub fn from_file(path: &std::path::Path) -> Result<LocalEmbedder> {
        let b = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let model = StaticModel::parse(&b)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(LocalEmbedder {
            model: Arc::new(model),
        })
    }

    /// The model.
    pub fn model_ref(&self) -> &StaticModel {
        &self.model
    }
}

impl Embedder for LocalEmbedder {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.model.embed_one(t)).collect())
    }
    fn provider(&self) -> &str {
        "local"
    }
    fn model(&self) -> &str {
        self.model.name()
    }
    fn dims(&self) -> usize {
        self.model.dims()
    }
    fn min_similarity(&self) -> f32 {
        MIN_SIMILARITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::search::dot;

    #[test]
    fn basic_tokenization_follows_bert_uncased() {
        assert_eq!(
            basic_tokenize("Héllo, WORLD! naïve\tcafé 東京"),
            ["hello", ",", "world", "!", "naive", "cafe", "東", "京"]
        );
        assert_eq!(basic_tokenize("a\u{0}b\u{7}c"), ["abc"]);
        assert!(basic_tokenize(" \n\t ").is_empty());
    }

    #[test]
    fn wordpiece_splits_and_unknowns() {
        let m = StaticModel::builtin();
        let id = |t: &str| m.vocab[t];
        assert_eq!(m.token_ids("the"), [id("the")]);
        // A word not in the vocabulary splits into pieces, the later ones marked ##.
        let ids = m.token_ids("unaffable");
        assert!(ids.len() > 1, "{ids:?}");
        assert!(!ids.contains(&m.unk.unwrap()));
        // A 200-character word is one [UNK].
        assert_eq!(m.token_ids(&"x".repeat(200)), [m.unk.unwrap()]);
    }

    #[test]
    fn vectors_are_normalized_and_semantic() {
        let e = LocalEmbedder::builtin();
        assert_eq!(e.provider(), "local");
        let v = |t: &str| e.model_ref().embed_one(t);
        let a = v("How do I reset my password?");
        assert_eq!(a.len(), e.dims());
        assert!((dot(&a, &a) - 1.0).abs() < 1e-4);
        // Meaning, not shared words: no word of the first pair is shared.
        let near = dot(&v("automobile repair shop"), &v("car mechanic garage"));
        let far = dot(&v("automobile repair shop"), &v("chocolate cake recipe"));
        assert!(near > far + 0.1, "near {near} far {far}");
        assert_eq!(v(""), vec![0.0; e.dims()]);
        assert_eq!(v(&"\u{1}".repeat(10)), vec![0.0; e.dims()]);
    }

    #[test]
    fn malformed_model_files_are_refused() {
        assert!(StaticModel::parse(b"").is_err());
        assert!(StaticModel::parse(b"BHM2V\0\x01\0").is_err());
        let mut b = BUILTIN.to_vec();
        b.push(0);
        assert!(StaticModel::parse(&b).is_err());
        assert!(StaticModel::parse(&BUILTIN[..BUILTIN.len() - 1]).is_err());
        let mut b = BUILTIN.to_vec();
        b[0] = b'X';
        assert!(StaticModel::parse(&b).is_err());
    }
}
