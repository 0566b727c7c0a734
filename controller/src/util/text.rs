//! Tenant text made safe for an operator's terminal, and text cut to a byte budget on a
//! character boundary.
//!
//! Names of files a sandbox wrote, snippets of its notes, model and tool output: all of it is
//! hostile, and a terminal obeys what it prints. An ESC starts an ANSI sequence (recolour,
//! retitle the window, move the cursor over earlier lines, on some terminals write to the
//! clipboard), a carriage return or backspace overwrites what came before, and a bidi
//! override (U+202E …) shows text in another order than the bytes have (`txt.exe` shown as
//! `exe.txt`). [`safe`] and [`safe_line`] escape all of these as `\u{…}` (Rust's
//! `escape_default` form), so what the operator reads is what is there. JSON output needs
//! none of this: JSON escapes every control character, and it is parsed, not shown.

/// Whether `c` changes the direction or joining of the text around it without being
/// visible: the bidi embeddings, overrides and isolates, the directional marks, and the
/// Arabic letter mark.
pub fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

fn escape_into(o: &mut String, c: char) {
    o.extend(c.escape_unicode());
}

fn push_safe(o: &mut String, s: &str, keep_layout: bool) {
    for c in s.chars() {
        let layout = c == '\n' || c == '\t';
        if (c.is_control() && !(keep_layout && layout)) || is_bidi_control(c) {
            escape_into(o, c);
        } else {
            o.push(c);
        }
    }
}

/// Multi-line text made safe for a terminal: control characters other than newline and tab,
/// and bidi controls, are escaped (`\u{1b}`).
pub fn safe(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    push_safe(&mut o, s, true);
    o
}

/// One field of a one-line or tab-separated output made safe for a terminal: as [`safe`],
/// and newline and tab are escaped too, so a name cannot start a line or a column of its
/// own.
pub fn safe_line(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    push_safe(&mut o, s, false);
    o
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix_within(s: &str, max: usize) -> &str {
    let mut end = max.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` after it when cut (for
/// quoting untrusted input in an error message).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", prefix_within(s, max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_on_character_boundaries() {
        assert_eq!(prefix_within("abc", 10), "abc");
        assert_eq!(prefix_within("abc", 2), "ab");
        assert_eq!(prefix_within("", 0), "");
        // `é` is two bytes: a cut inside it keeps neither.
        assert_eq!(prefix_within("aé", 2), "a");
        assert_eq!(prefix_within("aé", 3), "aé");
        assert_eq!(clip("short", 80), "short");
        assert_eq!(clip("aéz", 2), "a…");
        assert_eq!(clip(&"x".repeat(300), 200), format!("{}…", "x".repeat(200)));
    }

    #[test]
    fn escapes_ansi_and_control_characters_keeps_layout() {
        assert_eq!(safe("a\x1b[31mb\nc\td"), "a\\u{1b}[31mb\nc\td");
        assert_eq!(safe("x\ry\x08z\x7f\u{9b}"), "x\\u{d}y\\u{8}z\\u{7f}\\u{9b}");
    }

    #[test]
    fn escapes_bidi_overrides_and_isolates() {
        assert_eq!(safe("report\u{202E}fdp.exe"), "report\\u{202e}fdp.exe");
        assert_eq!(
            safe("\u{2066}a\u{2069}\u{200f}"),
            "\\u{2066}a\\u{2069}\\u{200f}"
        );
    }

    #[test]
    fn line_fields_escape_newline_and_tab() {
        assert_eq!(safe_line("a\nb\tc"), "a\\u{a}b\\u{9}c");
    }

    #[test]
    fn plain_and_non_latin_text_is_unchanged() {
        let s = "Café — 東京の天気 🙂 [brackets] \\u{1b} literal";
        assert_eq!(safe(s), s);
        assert_eq!(safe_line(s), s);
    }
}
