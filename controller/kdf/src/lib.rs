//! PBKDF2-HMAC-SHA512 from the RustCrypto crates (`pbkdf2`, `hmac`, `sha2`), behind one
//! non-generic function.
//!
//! Why a crate of its own: generic code is compiled in the crate that instantiates it, so
//! `pbkdf2::<Hmac<Sha512>>` called from the controller ran unoptimized in debug builds
//! (about 1 s for 210,000 iterations, 15x release) even with the RustCrypto crates at
//! opt-level 3. Instantiated here, and this crate built at opt-level 3 in every profile
//! (see the workspace `Cargo.toml`), tests and `cargo run` derive keys at release speed.
#![forbid(unsafe_code)]

use hmac::Hmac;
use sha2::Sha512;

/// Fills `out` with PBKDF2-HMAC-SHA512(`passphrase`, `salt`, `iterations`).
///
/// # Panics
/// Never for `iterations > 0`; PBKDF2 with HMAC accepts any passphrase length.
pub fn pbkdf2_hmac_sha512(passphrase: &[u8], salt: &[u8], iterations: u32, out: &mut [u8]) {
    pbkdf2::pbkdf2::<Hmac<Sha512>>(passphrase, salt, iterations, out)
        .expect("HMAC accepts keys of any length");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // PBKDF2-HMAC-SHA512 test vectors (RFC 6070 inputs, SHA-512 outputs).
        let mut k = [0u8; 64];
        pbkdf2_hmac_sha512(b"password", b"salt", 1, &mut k);
        assert_eq!(
            k[..16],
            [
                0x86, 0x7f, 0x70, 0xcf, 0x1a, 0xde, 0x02, 0xcf, 0xf3, 0x75, 0x25, 0x99, 0xa3, 0xa5,
                0x3d, 0xc4
            ]
        );
        pbkdf2_hmac_sha512(b"password", b"salt", 2, &mut k);
        assert_eq!(k[..8], [0xe1, 0xd9, 0xc1, 0x6a, 0xa6, 0x81, 0x70, 0x8a]);
    }
}
