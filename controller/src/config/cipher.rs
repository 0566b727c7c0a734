//! The credential file's cipher as settings name it (`credential_cipher`,
//! `BULKHEAD_CREDENTIAL_CIPHER`); the encryption itself is the creds service's.

use std::fmt;
use std::str::FromStr;

/// The AEAD of a credential file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Cipher {
    /// AES-256-GCM, 96-bit random nonce (id 1, the default).
    #[default]
    Aes256Gcm,
    /// XChaCha20-Poly1305, 192-bit random nonce (id 2).
    XChaCha20Poly1305,
}

impl Cipher {
    /// Every cipher, in id order.
    pub const ALL: [Cipher; 2] = [Cipher::Aes256Gcm, Cipher::XChaCha20Poly1305];

    /// Id stored in the header.
    pub fn id(self) -> u8 {
        match self {
            Cipher::Aes256Gcm => 1,
            Cipher::XChaCha20Poly1305 => 2,
        }
    }

    /// The cipher with this header id.
    pub fn from_id(id: u8) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.id() == id)
    }

    /// Name used in settings (`BULKHEAD_CREDENTIAL_CIPHER`, `config.toml`).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "aes-256-gcm",
            Cipher::XChaCha20Poly1305 => "xchacha20poly1305",
        }
    }

    /// Nonce length in bytes.
    pub fn nonce_len(self) -> usize {
        match self {
            Cipher::Aes256Gcm => 12,
            Cipher::XChaCha20Poly1305 => 24,
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Cipher {
    type Err = String;

    /// `aes-256-gcm` (also `aes256gcm`, `aes-gcm`) or `xchacha20poly1305` (also
    /// `xchacha20-poly1305`), case-insensitive.
    fn from_str(s: &str) -> Result<Cipher, String> {
        let norm: String = s
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        match norm.as_str() {
            "aes256gcm" | "aesgcm" => Ok(Cipher::Aes256Gcm),
            "xchacha20poly1305" => Ok(Cipher::XChaCha20Poly1305),
            _ => Err(format!(
                "{s:?} is not a credential cipher (aes-256-gcm or xchacha20poly1305)"
            )),
        }
    }
}
