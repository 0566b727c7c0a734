//! Redaction of secret values from what a skill prints.
//!
//! Every secret value is replaced by [`MARKER`] in these forms:
//! - as is;
//! - base64, standard and URL-safe, padded and not (the `base64` crate's engines), as the
//!   whole encoding and as the *stable inner part* at each alignment: a secret that starts
//!   at byte offset 1 or 2 of a larger encoded input (`user:token` in a Basic auth header, a
//!   JSON body) encodes to characters that depend on the neighbouring bytes only at its two
//!   ends; the characters in between depend on the secret alone and are searched for;
//! - percent-encoded (the `percent-encoding` crate) with the sets real encoders use: RFC 3986
//!   unreserved kept (`A-Za-z0-9-._~`), JavaScript's `encodeURIComponent` (also `!'()*`
//!   kept), `encodeURI`, Python's `quote` (also `/` kept), HTML forms
//!   (`application/x-www-form-urlencoded`: `*-._` kept), and every byte encoded; each with
//!   upper- and lower-case hex, and each also with `+` for a space;
//! - hex of the bytes, lower- and upper-case;
//! - JSON-string-escaped (as serde_json and as Python's `json.dumps` with `ensure_ascii`).
//!
//! Stdout and stderr are redacted together ([`Redactor::redact_streams`]): a secret whose
//! bytes were written partly to one and partly to the other (interleaved writes) is found in
//! the two streams in the order their chunks arrived, and its bytes are replaced in both.
//!
//! This catches accidents (a tool that logs its request, an error that echoes a header),
//! not a skill that hides a secret on purpose (reversed, XORed, split by other output, one
//! byte per line): a skill given a credential is trusted with it.
//!
//! Values shorter than [`MIN_SECRET_LEN`] bytes are not searched for (replacing every `a` or
//! `42` in the output would destroy it and hide nothing worth hiding); the run logs a warning
//! naming the set and key, never the value.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bulkhead_shared::Stream;
use percent_encoding::{percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// What a secret is replaced with.
pub const MARKER: &str = "[REDACTED]";
/// Shortest value searched for.
pub const MIN_SECRET_LEN: usize = 4;
/// Shortest inner base64 part searched for (shorter ones match ordinary text).
const MIN_BASE64_INNER: usize = 4;

/// RFC 3986 unreserved characters kept (Python `quote(safe="")`, Go `QueryEscape` but for
/// the space).
pub const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');
/// JavaScript `encodeURIComponent`.
pub const URI_COMPONENT: &AsciiSet = &UNRESERVED
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');
/// JavaScript `encodeURI`.
pub const URI: &AsciiSet = &URI_COMPONENT
    .remove(b';')
    .remove(b',')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b'#');
/// Python `quote` with its default `safe="/"`, curl's `--data-urlencode` path style.
pub const KEEP_SLASH: &AsciiSet = &UNRESERVED.remove(b'/');
/// `application/x-www-form-urlencoded` (WHATWG URL; the space becomes `+` in the `+` variant).
pub const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');
/// Every byte encoded.
pub const EVERYTHING: &AsciiSet = &AsciiSet::EMPTY.complement();

/// The percent-encoding of `data` with `set`; `lower` writes the hex digits in lower case,
/// `plus` writes a space as `+`.
pub fn percent(data: &[u8], set: &'static AsciiSet, lower: bool, plus: bool) -> String {
    let enc = percent_encode(data, set).to_string();
    // The encoder only writes `%` before two hex digits (a literal `%` is itself encoded), so
    // these rewrites touch nothing else.
    let enc = if plus { enc.replace("%20", "+") } else { enc };
    if !lower {
        return enc;
    }
    let mut out = String::with_capacity(enc.len());
    let mut hex_left = 0;
    for c in enc.chars() {
        if c == '%' {
            hex_left = 2;
            out.push(c);
        } else if hex_left > 0 {
            hex_left -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Every base64 form of `v`: the whole encoding (padded and not) and the stable inner part
/// at offsets 0, 1 and 2, for the standard and URL-safe alphabets.
fn base64_forms(v: &[u8], out: &mut Vec<String>) {
    for (pad, nopad) in [(STANDARD, STANDARD_NO_PAD), (URL_SAFE, URL_SAFE_NO_PAD)] {
        out.push(pad.encode(v));
        out.push(nopad.encode(v));
        for k in 0..3usize {
            // `k` bytes before the secret: character i covers bits [6i, 6i+6) of the input;
            // it depends on the secret alone when 6i >= 8k and 6i + 6 <= 8(k + n).
            let mut buf = vec![0u8; k];
            buf.extend_from_slice(v);
            let enc = nopad.encode(&buf);
            let start = (8 * k).div_ceil(6);
            let end = (8 * buf.len()) / 6;
            if end >= start + MIN_BASE64_INNER {
                if let Some(s) = enc.get(start..end) {
                    out.push(s.to_string());
                }
            }
        }
    }
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

/// Every form searched for of one value (see the module docs).
fn forms_of(s: &str) -> Vec<String> {
    let v = s.as_bytes();
    let mut forms = vec![s.to_string()];
    base64_forms(v, &mut forms);
    for set in [UNRESERVED, URI_COMPONENT, URI, KEEP_SLASH, FORM, EVERYTHING] {
        for lower in [false, true] {
            for plus in [false, true] {
                forms.push(percent(v, set, lower, plus));
            }
        }
    }
    let hex: String = v.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(hex.to_ascii_uppercase());
    forms.push(hex);
    // Inside a JSON string (quotes, backslashes, control and, with ensure_ascii encoders,
    // non-ASCII characters escaped).
    let json = serde_json::to_string(s).unwrap_or_default();
    if let Some(inner) = json.get(1..json.len().saturating_sub(1)) {
        forms.push(inner.to_string());
    }
    forms.push(json_ascii(s));
    forms
}

/// Replaces secrets in text. While it lives, its values are also kept out of log lines
/// (a [`crate::logging::LiveGuard`]), never redacted from other workspaces' output.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first (zeroized on drop).
    forms: Vec<Zeroizing<String>>,
    /// The plain values, live in the log redactor until the last clone is dropped.
    _live: Option<std::sync::Arc<crate::logging::LiveGuard>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.forms.len())
    }
}

/// Calls `hit` with the start of every occurrence of `needle` in `hay`.
fn find_all(hay: &[u8], needle: &[u8], mut hit: impl FnMut(usize)) {
    let Some((&first, _)) = needle.split_first() else {
        return;
    };
    if hay.len() < needle.len() {
        return;
    }
    for i in 0..=hay.len() - needle.len() {
        if hay[i] == first && hay[i..].starts_with(needle) {
            hit(i);
        }
    }
}

/// `data` with every run of masked bytes replaced by one [`MARKER`].
fn apply_mask(data: &[u8], mask: &[bool]) -> String {
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if mask[i] {
            out.extend_from_slice(MARKER.as_bytes());
            while i < data.len() && mask[i] {
                i += 1;
            }
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Redactor {
    /// A redactor for these values (those shorter than [`MIN_SECRET_LEN`] are ignored).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Redactor {
        let mut forms: Vec<String> = Vec::new();
        for s in secrets {
            if s.as_ref().len() >= MIN_SECRET_LEN {
                forms.extend(forms_of(s.as_ref()));
            }
        }
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        forms.dedup();
        let live = crate::logging::Redactor::new(secrets.iter().map(AsRef::as_ref)).live();
        Redactor {
            forms: forms.into_iter().map(Zeroizing::new).collect(),
            _live: Some(std::sync::Arc::new(live)),
        }
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

    /// Stdout and stderr of one run, redacted together: `order` lists the chunks as they
    /// arrived (stream, length), so a form whose bytes were split between the streams is
    /// found in their interleaving and replaced in both. Forms whole in one stream are found
    /// there too, even when chunks of the other stream arrived between their bytes.
    pub fn redact_streams(
        &self,
        stdout: &[u8],
        stderr: &[u8],
        order: &[(Stream, usize)],
    ) -> (String, String) {
        let mut mask_out = vec![false; stdout.len()];
        let mut mask_err = vec![false; stderr.len()];
        if !self.is_empty() {
            // The interleaving: for each byte, its stream and its index there.
            let mut combined: Vec<u8> = Vec::with_capacity(stdout.len() + stderr.len());
            let mut at: Vec<(bool, usize)> = Vec::with_capacity(combined.capacity());
            let (mut o, mut e) = (0usize, 0usize);
            let mut take = |is_err: bool, n: usize, combined: &mut Vec<u8>| {
                let (data, pos) = if is_err {
                    (stderr, &mut e)
                } else {
                    (stdout, &mut o)
                };
                let end = pos.saturating_add(n).min(data.len());
                combined.extend_from_slice(&data[*pos..end]);
                at.extend((*pos..end).map(|i| (is_err, i)));
                *pos = end;
            };
            for &(stream, n) in order {
                take(matches!(stream, Stream::Stderr), n, &mut combined);
            }
            // Bytes `order` did not account for (it should account for all) go last.
            take(false, usize::MAX, &mut combined);
            take(true, usize::MAX, &mut combined);
            for f in &self.forms {
                let f = f.as_bytes();
                find_all(&combined, f, |i| {
                    for &(is_err, j) in &at[i..i + f.len()] {
                        if is_err {
                            mask_err[j] = true;
                        } else {
                            mask_out[j] = true;
                        }
                    }
                });
                find_all(stdout, f, |i| mask_out[i..i + f.len()].fill(true));
                find_all(stderr, f, |i| mask_err[i..i + f.len()].fill(true));
            }
        }
        (apply_mask(stdout, &mask_out), apply_mask(stderr, &mask_err))
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

    const SECRET: &str = "s3cr et/+?=tok!'()*~ä";

    /// `prefix + SECRET + suffix` encoded with `engine` must come out with no trace of the
    /// secret's stable part: the text left is at most the encoding of the prefix and suffix
    /// plus the two boundary characters.
    fn assert_base64_hidden(engine: &base64::engine::GeneralPurpose, prefix: &[u8]) {
        let r = Redactor::new(&[SECRET]);
        for suffix in [&b""[..], b"x", b"yz", b"\"}"] {
            let mut input = prefix.to_vec();
            input.extend_from_slice(SECRET.as_bytes());
            input.extend_from_slice(suffix);
            let enc = engine.encode(&input);
            let out = r.redact(&format!("Authorization: Basic {enc}\n"));
            assert!(
                out.contains(MARKER),
                "offset {} suffix {suffix:?}: {out}",
                prefix.len()
            );
            // What is left of the encoding is the prefix's and suffix's few characters.
            let left = out.replace("Authorization: Basic ", "").replace(MARKER, "");
            assert!(
                left.trim_end().len() <= prefix.len() * 2 + suffix.len() * 2 + 6,
                "offset {}: {out}",
                prefix.len()
            );
        }
    }

    #[test]
    fn skills_base64_every_alphabet_padding_and_alignment() {
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            for prefix in [&b""[..], b"u", b"us", b"use", b"user:", b"{\"token\":\""] {
                assert_base64_hidden(engine, prefix);
            }
        }
    }

    #[test]
    fn skills_base64_offsets_1_and_2_are_caught() {
        // The bug this fixes: `x` + secret and `xy` + secret encode to strings sharing no
        // substring with the secret's own encoding.
        let secret = "Summer2024!x";
        let r = Redactor::new(&[secret]);
        for prefix in ["a", "ab"] {
            let enc = STANDARD.encode(format!("{prefix}{secret}"));
            assert!(
                !enc.contains(&STANDARD_NO_PAD.encode(secret)),
                "the whole-secret form alone would miss {enc}"
            );
            let out = r.redact(&enc);
            assert!(out.contains(MARKER), "{prefix}: {enc} -> {out}");
            assert!(out.len() < MARKER.len() + 8, "{prefix}: {out}");
        }
    }

    #[test]
    fn skills_percent_encoding_variants() {
        let r = Redactor::new(&[SECRET]);
        let v = SECRET.as_bytes();
        for set in [UNRESERVED, URI_COMPONENT, URI, KEEP_SLASH, FORM, EVERYTHING] {
            for lower in [false, true] {
                for plus in [false, true] {
                    let enc = percent(v, set, lower, plus);
                    assert_eq!(r.redact(&format!("q={enc}&n=1")), "q=[REDACTED]&n=1");
                }
            }
        }
        // Spot checks against what real encoders write.
        // encodeURIComponent("s3cr et/+?=tok!'()*~ä")
        let js = "s3cr%20et%2F%2B%3F%3Dtok!'()*~%C3%A4";
        assert_eq!(percent(v, URI_COMPONENT, false, false), js);
        assert_eq!(r.redact(js), MARKER);
        // urllib.parse.quote(s) (keeps `/`) and quote_plus(s)
        let py = "s3cr%20et/%2B%3F%3Dtok%21%27%28%29%2A~%C3%A4";
        assert_eq!(r.redact(py), MARKER);
        let py_plus = "s3cr+et%2F%2B%3F%3Dtok%21%27%28%29%2A~%C3%A4";
        assert_eq!(r.redact(py_plus), MARKER);
        // An HTML form (lower-case hex, as some clients write it).
        let form = "s3cr+et%2f%2b%3f%3dtok%21%27%28%29*%7e%c3%a4";
        assert_eq!(percent(v, FORM, true, true), form);
        assert_eq!(r.redact(form), MARKER);
        // Every byte encoded.
        let all: String = v.iter().map(|b| format!("%{b:02X}")).collect();
        assert_eq!(r.redact(&all), MARKER);
    }

    #[test]
    fn skills_hex_lower_and_upper() {
        let r = Redactor::new(&["hunter2!"]);
        assert_eq!(r.redact("k=68756e74657232 21"), "k=68756e74657232 21");
        assert_eq!(r.redact("k=68756e7465723221."), "k=[REDACTED].");
        assert_eq!(r.redact("k=68756E7465723221."), "k=[REDACTED].");
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

    #[test]
    fn skills_a_secret_split_between_stdout_and_stderr_is_caught() {
        let r = Redactor::new(&["Summer2024!x"]);
        // `printf 'a Summ'; printf 'er20' >&2; printf '24!x b'`: every stream alone is
        // innocent, the interleaving spells the secret.
        let out = b"a Summ24!x b";
        let err = b"er20";
        let order = [
            (Stream::Stdout, 6),
            (Stream::Stderr, 4),
            (Stream::Stdout, 6),
        ];
        let (o, e) = r.redact_streams(out, err, &order);
        assert_eq!(o, "a [REDACTED] b");
        assert_eq!(e, "[REDACTED]");
        // The same bytes in another order spell nothing: nothing is removed.
        let order = [(Stream::Stderr, 4), (Stream::Stdout, 12)];
        let (o, e) = r.redact_streams(out, err, &order);
        assert_eq!((o.as_str(), e.as_str()), ("a Summ24!x b", "er20"));
        // A secret whole in stdout while stderr chunks arrived between its bytes.
        let out = b"[Summer2024!x]";
        let order = [
            (Stream::Stdout, 5),
            (Stream::Stderr, 4),
            (Stream::Stdout, 9),
        ];
        let (o, e) = r.redact_streams(out, b"warn", &order);
        assert_eq!((o.as_str(), e.as_str()), ("[[REDACTED]]", "warn"));
        // Base64 split across the streams.
        let b = STANDARD.encode("Summer2024!x").into_bytes();
        let (o, e) = r.redact_streams(
            &b[..7],
            &b[7..],
            &[(Stream::Stdout, 7), (Stream::Stderr, b.len() - 7)],
        );
        assert_eq!((o.as_str(), e.as_str()), (MARKER, MARKER));
    }

    #[test]
    fn skills_streams_with_an_inconsistent_order_lose_no_byte() {
        let r = Redactor::new(&["Summer2024!x"]);
        let (o, e) = r.redact_streams(b"hello", b"world", &[(Stream::Stdout, 99)]);
        assert_eq!((o.as_str(), e.as_str()), ("hello", "world"));
        let (o, e) = r.redact_streams(b"", b"", &[]);
        assert_eq!((o.as_str(), e.as_str()), ("", ""));
    }
}
