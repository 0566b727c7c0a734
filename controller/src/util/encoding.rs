//! Byte encodings the front ends and services share, from the `base64` crate.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

/// Standard alphabet; encodes with padding, decodes with or without it (and tolerates
/// non-zero bits after the last byte, as hand-written decoders and many clients do).
const LENIENT_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    LENIENT_STANDARD.encode(data)
}

/// Decodes standard base64 (padding optional, whitespace refused); `None` when invalid.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    LENIENT_STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0, 255, 128],
        ] {
            let e = base64_encode(s);
            assert_eq!(base64_decode(&e).unwrap(), s);
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert!(base64_decode("Z!==").is_none());
    }

    #[test]
    fn base64_padding_is_optional_and_whitespace_is_refused() {
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zh==").unwrap(), b"f");
        assert!(base64_decode("Zm 8=").is_none());
        assert!(base64_decode("Zm8=\n").is_none());
        assert!(base64_decode("Z").is_none());
    }
}
