//! Redaction of secret values from what a skill prints.
//!
//! Every secret value is replaced by [`MARKER`] in these forms: as is; standard base64 with
//! and without padding; base64url with and without padding; URL-encoded (percent-encoding of
//! every byte but `A-Za-z0-9-._~`, upper- and lower-case hex, each also in the form variant with
//! `+` for space); JSON-string-escaped (as serde_json and as Python's `json.dumps` with
//! `ensure_ascii` write it). Longest forms are replaced first. Values shorter than [`MIN_SECRET_LEN`]
//! bytes are not searched for (replacing every `a` or `42` in the output would destroy it and
//! hide nothing worth hiding); the run logs a warning naming the set and key, never the value.

/// What a secret is replaced with.
pub const MARKER: &str = "[REDACTED]";
/// Shortest value searched for.
pub const MIN_SECRET_LEN: usize = 4;

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 of `data` with `alphabet`, padded or not.
pub fn base64(data: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded.
pub fn base64_std(data: &[u8]) -> String {
    base64(data, STD, true)
}

/// Percent-encoding of every byte outside `A-Za-z0-9-._~`.
pub fn percent_encode(data: &[u8], upper: bool, plus_for_space: bool) -> String {
    let mut out = String::with_capacity(data.len() * 3);
    for &b in data {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else if b == b' ' && plus_for_space {
            out.push('+');
        } else if upper {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// `s` as inside a JSON string with every non-ASCII character as `\uXXXX` (Python's
/// `json.dumps` default).
fn json_ascii(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Replaces secrets in text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first.
    forms: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.forms.len())
    }
}

impl Redactor {
    /// A redactor for these values (those shorter than [`MIN_SECRET_LEN`] are ignored).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Redactor {
        let mut forms = vec![];
        for s in secrets {
            let v = s.as_ref().as_bytes();
            if v.len() < MIN_SECRET_LEN {
                continue;
            }
            forms.push(s.as_ref().to_string());
            forms.push(base64(v, STD, true));
            forms.push(base64(v, STD, false));
            forms.push(base64(v, URL, true));
            forms.push(base64(v, URL, false));
            forms.push(percent_encode(v, true, false));
            forms.push(percent_encode(v, false, false));
            forms.push(percent_encode(v, true, true));
            forms.push(percent_encode(v, false, true));
            // Inside a JSON string (quotes, backslashes, control and, with ensure_ascii
            // encoders, non-ASCII characters escaped).
            let json = serde_json::to_string(s.as_ref()).unwrap_or_default();
            forms.push(json[1..json.len() - 1].to_string());
            forms.push(json_ascii(s.as_ref()));
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        forms.dedup();
        Redactor { forms }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.forms.is_empty()
    }

    /// `text` with every form replaced by [`MARKER`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for f in &self.forms {
            if out.contains(f.as_str()) {
                out = out.replace(f.as_str(), MARKER);
            }
        }
        out
    }

    /// Like [`Redactor::redact`], for output that was cut off: also removes a tail that is
    /// the start of a form (a secret split by the cut).
    pub fn redact_truncated(&self, text: &str) -> String {
        let mut out = self.redact(text);
        loop {
            // The longest tail that starts some form.
            let cut = self
                .forms
                .iter()
                .filter_map(|f| {
                    (1..f.len())
                        .rev()
                        .filter(|&n| f.is_char_boundary(n))
                        .find(|&n| out.ends_with(&f[..n]))
                })
                .max();
            match cut {
                Some(n) => {
                    let l = out.len() - n;
                    out.truncate(l);
                    out.push_str(MARKER);
                }
                None => return out,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skills_base64_matches_known_vectors() {
        assert_eq!(base64(b"", STD, true), "");
        assert_eq!(base64(b"f", STD, true), "Zg==");
        assert_eq!(base64(b"fo", STD, true), "Zm8=");
        assert_eq!(base64(b"foo", STD, true), "Zm9v");
        assert_eq!(base64(b"foob", STD, false), "Zm9vYg");
        assert_eq!(base64(&[0xfb, 0xff], URL, false), "-_8");
        assert_eq!(base64(&[0xfb, 0xff], STD, true), "+/8=");
    }

    #[test]
    fn skills_redacts_every_form() {
        let secret = "s3cr et/+?=tok";
        let r = Redactor::new(&[secret]);
        let text = format!(
            "a {secret} b {} c {} d {} e {} f {}",
            base64(secret.as_bytes(), STD, true),
            base64(secret.as_bytes(), STD, false),
            base64(secret.as_bytes(), URL, false),
            percent_encode(secret.as_bytes(), true, false),
            percent_encode(secret.as_bytes(), false, true),
        );
        let out = r.redact(&text);
        assert_eq!(
            out,
            "a [REDACTED] b [REDACTED] c [REDACTED] d [REDACTED] e [REDACTED] f [REDACTED]"
        );
    }

    #[test]
    fn skills_redacts_json_escaped_forms() {
        let secret = "p\"ss\\wörd";
        let r = Redactor::new(&[secret]);
        let serde = serde_json::to_string(&serde_json::json!({ "t": secret })).unwrap();
        assert_eq!(r.redact(&serde), "{\"t\":\"[REDACTED]\"}");
        assert_eq!(
            r.redact("{\"t\": \"p\\\"ss\\\\w\\u00f6rd\"}"),
            "{\"t\": \"[REDACTED]\"}"
        );
    }

    #[test]
    fn skills_short_values_are_not_redacted() {
        let r = Redactor::new(&["abc"]);
        assert!(r.is_empty());
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn skills_truncated_tail_is_cut() {
        let r = Redactor::new(&["supersecret"]);
        assert_eq!(r.redact_truncated("x supersec"), "x [REDACTED]");
        assert_eq!(r.redact_truncated("x supersecret y"), "x [REDACTED] y");
    }
}
