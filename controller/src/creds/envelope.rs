//! The `creds.enc` envelope: header layout, key derivation (with its per-process cache) and
//! the AEAD. The layout is documented in [`crate::creds`]; every number is big-endian.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::Aes256Gcm;
use chacha20poly1305::XChaCha20Poly1305;
use hmac::{Hmac, Mac};
use sha2::Sha512;
use zeroize::Zeroizing;

use super::CredentialKey;

/// First 8 bytes of every `creds.enc`.
pub const MAGIC: [u8; 8] = *b"BHCREDS\0";
/// The envelope format this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of the fixed part of the header (before salt and nonce).
pub const FIXED_HEADER_LEN: usize = 22;
/// Purpose string at the start of the associated data.
pub const AAD_PURPOSE: &[u8] = b"bulkhead/creds/v1";
/// AEAD tag length (both ciphers).
pub const TAG_LEN: usize = 16;
/// Salt length written.
pub const SALT_LEN: usize = 32;
/// Salt lengths accepted on read.
pub const SALT_LEN_RANGE: std::ops::RangeInclusive<usize> = 16..=64;
/// KDF id of PBKDF2-HMAC-SHA512 (the only one so far).
pub const KDF_PBKDF2_SHA512: u8 = 1;
/// Default (and, outside tests, minimum) PBKDF2 iteration count (OWASP 2023 for SHA-512).
pub const DEFAULT_ITERATIONS: u32 = 210_000;
/// Highest iteration count accepted from a file, so a hostile header cannot make us spin.
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Largest ciphertext accepted on read (the payload limits keep real files far below).
pub const MAX_CIPHERTEXT: usize = 8 << 20;
/// Largest file accepted on read.
pub const MAX_FILE: usize = FIXED_HEADER_LEN + 64 + 24 + MAX_CIPHERTEXT;

const KEY_LEN: usize = 32;

pub use crate::config::cipher::Cipher;

/// Key-derivation parameters: PBKDF2-HMAC-SHA512 with an iteration count.
///
/// [`KdfParams::default`] is 210,000 iterations; [`KdfParams::pbkdf2_sha512`] refuses fewer.
/// Only [`KdfParams::insecure_for_tests`] goes lower, and nothing reads it from the
/// environment or a file, so no setting an attacker controls can weaken new files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KdfParams {
    iterations: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            iterations: DEFAULT_ITERATIONS,
        }
    }
}

impl KdfParams {
    /// PBKDF2-HMAC-SHA512 with `iterations` (210,000 ..= 10,000,000).
    pub fn pbkdf2_sha512(iterations: u32) -> Result<KdfParams, String> {
        if !(DEFAULT_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "{iterations} PBKDF2 iterations: use {DEFAULT_ITERATIONS} to {MAX_ITERATIONS}"
            ));
        }
        Ok(KdfParams { iterations })
    }

    /// A cheap KDF for tests and benchmarks only (clamped to 1 ..= 10,000,000). Never use it
    /// for real credentials: the passphrase is then cheap to guess from a stolen file.
    #[doc(hidden)]
    pub fn insecure_for_tests(iterations: u32) -> KdfParams {
        KdfParams {
            iterations: iterations.clamp(1, MAX_ITERATIONS),
        }
    }

    /// Iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

/// The parsed header of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub cipher: Cipher,
    pub kdf: KdfParams,
    pub salt: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ct_len: usize,
}

impl Header {
    fn encode(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(FIXED_HEADER_LEN + self.salt.len() + self.nonce.len());
        h.extend_from_slice(&MAGIC);
        h.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        h.push(self.cipher.id());
        h.push(KDF_PBKDF2_SHA512);
        h.extend_from_slice(&self.kdf.iterations.to_be_bytes());
        h.push(self.salt.len() as u8);
        h.push(self.nonce.len() as u8);
        h.extend_from_slice(&(self.ct_len as u32).to_be_bytes());
        h.extend_from_slice(&self.salt);
        h.extend_from_slice(&self.nonce);
        h
    }

    /// Parses and bounds-checks the header; returns it and its length. The error says what
    /// is wrong (it never holds file bytes beyond numbers).
    pub fn parse(data: &[u8]) -> Result<(Header, usize), String> {
        if data.len() < FIXED_HEADER_LEN {
            return Err(format!(
                "truncated: {} bytes, shorter than the {FIXED_HEADER_LEN}-byte header",
                data.len()
            ));
        }
        if data[..8] != MAGIC {
            return Err("not a bulkhead credential file (bad magic)".into());
        }
        let version = u16::from_be_bytes([data[8], data[9]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this bulkhead reads version {FORMAT_VERSION}"
            ));
        }
        let cipher =
            Cipher::from_id(data[10]).ok_or_else(|| format!("unknown cipher id {}", data[10]))?;
        if data[11] != KDF_PBKDF2_SHA512 {
            return Err(format!("unknown KDF id {}", data[11]));
        }
        let iterations = u32::from_be_bytes([data[12], data[13], data[14], data[15]]);
        if !(1..=MAX_ITERATIONS).contains(&iterations) {
            return Err(format!(
                "KDF iteration count {iterations} outside 1..={MAX_ITERATIONS}"
            ));
        }
        let salt_len = usize::from(data[16]);
        if !SALT_LEN_RANGE.contains(&salt_len) {
            return Err(format!("salt length {salt_len} outside {SALT_LEN_RANGE:?}"));
        }
        let nonce_len = usize::from(data[17]);
        if nonce_len != cipher.nonce_len() {
            return Err(format!(
                "nonce length {nonce_len}, {cipher} uses {}",
                cipher.nonce_len()
            ));
        }
        let ct_len = u32::from_be_bytes([data[18], data[19], data[20], data[21]]) as usize;
        if !(TAG_LEN..=MAX_CIPHERTEXT).contains(&ct_len) {
            return Err(format!(
                "ciphertext length {ct_len} outside {TAG_LEN}..={MAX_CIPHERTEXT}"
            ));
        }
        let header_len = FIXED_HEADER_LEN + salt_len + nonce_len;
        let total = header_len + ct_len;
        if data.len() != total {
            return Err(if data.len() < total {
                format!("truncated: {} bytes, the header says {total}", data.len())
            } else {
                format!(
                    "{} trailing bytes after the {total} the header says",
                    data.len() - total
                )
            });
        }
        let salt = data[FIXED_HEADER_LEN..FIXED_HEADER_LEN + salt_len].to_vec();
        let nonce = data[FIXED_HEADER_LEN + salt_len..header_len].to_vec();
        Ok((
            Header {
                cipher,
                kdf: KdfParams { iterations },
                salt,
                nonce,
                ct_len,
            },
            header_len,
        ))
    }
}

/// Associated data: purpose, workspace id, and the header bytes (so the file is bound to
/// its workspace and any header change fails authentication).
fn aad(workspace_id: &str, header: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(AAD_PURPOSE.len() + workspace_id.len() + 2 + header.len());
    a.extend_from_slice(AAD_PURPOSE);
    a.push(0);
    a.extend_from_slice(workspace_id.as_bytes());
    a.push(0);
    a.extend_from_slice(header);
    a
}

/// Fresh random bytes from the OS.
pub(crate) fn random(n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    getrandom::getrandom(&mut v).map_err(std::io::Error::other)?;
    Ok(v)
}

/// A derived AEAD key, zeroized on drop.
pub(crate) struct DerivedKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey([redacted])")
    }
}

/// Cache of derived keys: (passphrase fingerprint, salt, iterations) → key. The
/// fingerprint is an HMAC under a per-process random key, so it is useless outside this
/// process and never a cheap hash of the passphrase.
#[derive(PartialEq, Eq, Hash)]
struct CacheKey {
    fingerprint: [u8; 32],
    salt: Vec<u8>,
    iterations: u32,
}

/// Entries kept before the cache is emptied (each entry is one derived key).
const CACHE_MAX: usize = 4096;

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<DerivedKey>>> {
    static C: OnceLock<Mutex<HashMap<CacheKey, Arc<DerivedKey>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Forgets (and zeroizes, once no store holds them) every cached key: the next unlock runs
/// the KDF again.
pub fn clear_key_cache() {
    if let Ok(mut c) = cache().lock() {
        c.clear();
    }
}

/// HMAC-SHA512 of the passphrase under a per-process random key, truncated to 32 bytes.
pub(crate) fn fingerprint(passphrase: &[u8]) -> [u8; 32] {
    static PROCESS_KEY: OnceLock<Zeroizing<Vec<u8>>> = OnceLock::new();
    let k = PROCESS_KEY.get_or_init(|| {
        // Falls back to a fixed key only if the OS has no randomness, in which case
        // sealing fails anyway (it needs random salts and nonces).
        Zeroizing::new(random(32).unwrap_or_else(|_| vec![0x5a; 32]))
    });
    let mut mac = <Hmac<Sha512> as Mac>::new_from_slice(k).expect("HMAC takes any key length");
    mac.update(b"bulkhead/creds/fingerprint\0");
    mac.update(passphrase);
    let out = mac.finalize().into_bytes();
    let mut fp = [0u8; 32];
    fp.copy_from_slice(&out[..32]);
    fp
}

/// Runs PBKDF2-HMAC-SHA512 (no cache).
pub(crate) fn pbkdf2_sha512(passphrase: &[u8], salt: &[u8], iterations: u32) -> DerivedKey {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    // The `pbkdf2` crate, instantiated in `bulkhead-kdf` so debug builds run it optimized.
    bulkhead_kdf::pbkdf2_hmac_sha512(passphrase, salt, iterations, &mut key[..]);
    DerivedKey(key)
}

/// The key for (passphrase, salt, iterations), derived once per process.
pub(crate) fn derive(key: &CredentialKey, salt: &[u8], kdf: KdfParams) -> Arc<DerivedKey> {
    let ck = CacheKey {
        fingerprint: key.fingerprint(),
        salt: salt.to_vec(),
        iterations: kdf.iterations,
    };
    if let Some(k) = cache().lock().ok().and_then(|c| c.get(&ck).cloned()) {
        return k;
    }
    // Derive without holding the lock: other threads' unlocks need not wait for this one.
    let started = std::time::Instant::now();
    let derived = Arc::new(pbkdf2_sha512(key.passphrase(), salt, kdf.iterations));
    log::debug!(target: "creds",
        "derived a credential key ({} PBKDF2-HMAC-SHA512 iterations, {} ms)",
        kdf.iterations, started.elapsed().as_millis());
    if let Ok(mut c) = cache().lock() {
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(ck, derived.clone());
    }
    derived
}

/// Encrypts `body` (the plaintext, with spare capacity for the tag so it is never
/// reallocated) in place and returns the whole file.
pub(crate) fn seal(
    cipher: Cipher,
    kdf: KdfParams,
    salt: &[u8],
    key: &DerivedKey,
    workspace_id: &str,
    mut body: Zeroizing<Vec<u8>>,
) -> std::io::Result<Vec<u8>> {
    let header = Header {
        cipher,
        kdf,
        salt: salt.to_vec(),
        nonce: random(cipher.nonce_len())?,
        ct_len: body.len() + TAG_LEN,
    };
    let head = header.encode();
    let ad = aad(workspace_id, &head);
    aead_in_place(cipher, key, &header.nonce, &ad, &mut body, true)
        .map_err(|()| std::io::Error::other("encryption failed"))?;
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Why a file did not open.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The header is malformed (the detail says how).
    Malformed(String),
    /// Authentication failed: wrong key, altered bytes, or another workspace's file.
    Auth,
}

/// Parses, derives (cached) and decrypts. The plaintext is zeroized on drop.
pub(crate) fn open(
    data: &[u8],
    workspace_id: &str,
    key: &CredentialKey,
) -> Result<(Header, Zeroizing<Vec<u8>>), OpenError> {
    let (header, header_len) = Header::parse(data).map_err(OpenError::Malformed)?;
    let derived = derive(key, &header.salt, header.kdf);
    let ad = aad(workspace_id, &data[..header_len]);
    let mut body = Zeroizing::new(Vec::with_capacity(header.ct_len));
    body.extend_from_slice(&data[header_len..]);
    aead_in_place(
        header.cipher,
        &derived,
        &header.nonce,
        &ad,
        &mut body,
        false,
    )
    .map_err(|()| OpenError::Auth)?;
    Ok((header, body))
}

/// One AEAD operation in place (`Vec` gains or loses the tag).
fn aead_in_place(
    cipher: Cipher,
    key: &DerivedKey,
    nonce: &[u8],
    ad: &[u8],
    buf: &mut Vec<u8>,
    encrypt: bool,
) -> Result<(), ()> {
    match cipher {
        Cipher::Aes256Gcm => {
            let c = Aes256Gcm::new_from_slice(&key.0[..]).map_err(|_| ())?;
            let n = aes_gcm::Nonce::from_slice(nonce);
            if encrypt {
                c.encrypt_in_place(n, ad, buf)
            } else {
                c.decrypt_in_place(n, ad, buf)
            }
        }
        Cipher::XChaCha20Poly1305 => {
            let c = XChaCha20Poly1305::new_from_slice(&key.0[..]).map_err(|_| ())?;
            let n = chacha20poly1305::XNonce::from_slice(nonce);
            if encrypt {
                c.encrypt_in_place(n, ad, buf)
            } else {
                c.decrypt_in_place(n, ad, buf)
            }
        }
    }
    .map_err(|_| ())
}

/// Baselines for the benchmark: one raw decrypt of `len` bytes, outside the store.
#[doc(hidden)]
pub mod bench {
    use super::*;

    /// A sealed blob of `len` zero bytes under a fixed key, and a function opening it.
    pub fn raw_aead(cipher: Cipher, len: usize) -> (Vec<u8>, impl Fn(&[u8]) -> usize) {
        let key = DerivedKey(Zeroizing::new([7u8; KEY_LEN]));
        let nonce = vec![1u8; cipher.nonce_len()];
        let mut buf = vec![0u8; len];
        aead_in_place(cipher, &key, &nonce, b"ad", &mut buf, true).expect("seal");
        let open = move |ct: &[u8]| {
            let mut b = ct.to_vec();
            aead_in_place(cipher, &key, &nonce, b"ad", &mut b, false).expect("open");
            b.len()
        };
        (buf, open)
    }

    /// One raw PBKDF2-HMAC-SHA512 derivation.
    pub fn raw_pbkdf2(passphrase: &[u8], salt: &[u8], iterations: u32) -> u8 {
        pbkdf2_sha512(passphrase, salt, iterations).0[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bounds() {
        let h = Header {
            cipher: Cipher::XChaCha20Poly1305,
            kdf: KdfParams::insecure_for_tests(1000),
            salt: vec![3; SALT_LEN],
            nonce: vec![4; 24],
            ct_len: 20,
        };
        let mut bytes = h.encode();
        assert_eq!(bytes.len(), FIXED_HEADER_LEN + SALT_LEN + 24);
        bytes.extend_from_slice(&[0; 20]);
        let (back, len) = Header::parse(&bytes).unwrap();
        assert_eq!(back, h);
        assert_eq!(len, FIXED_HEADER_LEN + SALT_LEN + 24);
        // A hostile iteration count is refused before any work.
        let mut evil = bytes.clone();
        evil[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Header::parse(&evil).unwrap_err().contains("iteration"));
        evil[12..16].copy_from_slice(&0u32.to_be_bytes());
        assert!(Header::parse(&evil).is_err());
        assert!(Header::parse(&bytes[..bytes.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        let mut long = bytes.clone();
        long.push(0);
        assert!(Header::parse(&long).unwrap_err().contains("trailing"));
    }

    #[test]
    fn cipher_names() {
        for c in Cipher::ALL {
            assert_eq!(c.name().parse::<Cipher>().unwrap(), c);
            assert_eq!(Cipher::from_id(c.id()), Some(c));
        }
        assert_eq!(
            "XChaCha20-Poly1305".parse::<Cipher>().unwrap(),
            Cipher::XChaCha20Poly1305
        );
        assert!("rot13".parse::<Cipher>().unwrap_err().contains("rot13"));
    }

    #[test]
    fn kdf_bounds() {
        assert_eq!(KdfParams::default().iterations(), 210_000);
        assert!(KdfParams::pbkdf2_sha512(1000).is_err());
        assert!(KdfParams::pbkdf2_sha512(MAX_ITERATIONS + 1).is_err());
        assert_eq!(
            KdfParams::pbkdf2_sha512(300_000).unwrap().iterations(),
            300_000
        );
    }

    #[test]
    fn pbkdf2_matches_a_known_vector() {
        // RFC 6070-style vector for PBKDF2-HMAC-SHA512 ("password", "salt", 1 iteration).
        let k = pbkdf2_sha512(b"password", b"salt", 1);
        assert_eq!(k.0[..8], [0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf]);
    }
}
