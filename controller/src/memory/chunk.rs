//! Markdown-aware chunking: text is cut into chunks of about 400 tokens (≈ 1600 characters)
//! at heading, then paragraph, then sentence or word boundaries, with about 15% overlap
//! between consecutive chunks of one section. A chunk that continues a section starts with
//! the section's heading line, so each chunk can be understood on its own.

/// Chunk sizes, in characters (a token is about 4 characters of English).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Largest chunk, in characters (a heading prefix may add to it).
    pub max_chars: usize,
    /// Characters repeated from the end of the previous chunk of the same section.
    pub overlap_chars: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            max_chars: 1600,
            overlap_chars: 240,
        }
    }
}

/// A block: a heading line, a paragraph, or a fenced code block.
#[derive(Debug)]
struct Block {
    text: String,
    heading: bool,
}

fn is_heading(line: &str) -> bool {
    let t = line.trim_start();
    let hashes = t.bytes().take_while(|&b| b == b'#').count();
    (1..=6).contains(&hashes) && (t.len() == hashes || t.as_bytes()[hashes] == b' ')
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut cur: Vec<&str> = Vec::new();
    let mut fence: Option<&str> = None;
    let flush = |cur: &mut Vec<&str>, out: &mut Vec<Block>| {
        if !cur.is_empty() {
            let t = cur.join("\n").trim().to_string();
            if !t.is_empty() {
                out.push(Block {
                    text: t,
                    heading: false,
                });
            }
            cur.clear();
        }
    };
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(f) = fence {
            cur.push(line);
            if t.starts_with(f) {
                fence = None;
                flush(&mut cur, &mut out);
            }
            continue;
        }
        if t.starts_with("```") || t.starts_with("~~~") {
            flush(&mut cur, &mut out);
            fence = Some(&t[..3]);
            cur.push(line);
        } else if is_heading(line) {
            flush(&mut cur, &mut out);
            out.push(Block {
                text: t.trim_end().to_string(),
                heading: true,
            });
        } else if t.is_empty() {
            flush(&mut cur, &mut out);
        } else {
            cur.push(line);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// The largest char boundary ≤ `i`.
fn floor_boundary(s: &str, i: usize) -> usize {
    crate::util::text::prefix_within(s, i).len()
}

/// Cuts `s` at most `max` bytes in, preferring a sentence end, then a space, in the second
/// half of the window. Returns the cut position (> 0 for non-empty `s`).
fn cut_point(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    let end = floor_boundary(s, max);
    let window = &s[..end];
    let half = end / 2;
    for pat in [". ", "! ", "? ", "。", "\n"] {
        if let Some(p) = window.rfind(pat) {
            if p >= half {
                return p + pat.len();
            }
        }
    }
    if let Some(p) = window.rfind(char::is_whitespace) {
        if p >= half {
            return p + 1;
        }
    }
    if end == 0 {
        // One char longer than `max`: take it whole.
        s.char_indices().nth(1).map_or(s.len(), |(i, _)| i)
    } else {
        end
    }
}

/// The last `n` bytes (about) of `s`, starting at a word boundary when there is one.
fn tail(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    if s.len() <= n {
        return s;
    }
    let mut start = s.len() - n;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let t = &s[start..];
    match t.find(char::is_whitespace) {
        Some(p) if p < t.len() / 2 => t[p..].trim_start(),
        _ => t,
    }
}

/// Splits markdown `text` into chunks (see the module docs). Empty input gives no chunk.
pub fn chunk_markdown(text: &str, cfg: &ChunkConfig) -> Vec<String> {
    let max = cfg.max_chars.max(64);
    let overlap = cfg.overlap_chars.min(max / 2);
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    // The heading of the current section, repeated at the top of its continuation chunks.
    let mut heading: Option<String> = None;
    // Whether `cur` holds anything besides the heading/overlap it was started with.
    let mut fresh = false;

    fn emit(out: &mut Vec<String>, cur: &mut String, fresh: &mut bool) {
        let t = cur.trim();
        if *fresh && !t.is_empty() {
            out.push(t.to_string());
        }
        cur.clear();
        *fresh = false;
    }

    for b in blocks(text) {
        if b.heading {
            // A heading starts a new chunk unless the current one is still small; a chunk
            // holding only the previous section's heading and overlap is dropped.
            if !fresh || cur.len() >= max / 4 {
                emit(&mut out, &mut cur, &mut fresh);
            }
            if !cur.is_empty() {
                cur.push_str("\n\n");
            }
            cur.push_str(&b.text);
            fresh = true;
            heading = Some(b.text);
            continue;
        }
        let mut rest: &str = &b.text;
        while !rest.is_empty() {
            let sep = if cur.is_empty() { 0 } else { 2 };
            let room = max.saturating_sub(cur.len() + sep);
            if rest.len() <= room {
                if sep > 0 {
                    cur.push_str("\n\n");
                }
                cur.push_str(rest);
                fresh = true;
                break;
            }
            // It does not fit. Close the chunk at the block boundary when the chunk has
            // content of its own and the block would fit in the next one (or little room is
            // left); otherwise fill the chunk with the head of the block.
            let whole_next = rest.len() + overlap + 64 <= max;
            if !(fresh && (whole_next || room < 64)) {
                let take = cut_point(rest, room.max(1));
                if sep > 0 {
                    cur.push_str("\n\n");
                }
                cur.push_str(rest[..take].trim_end());
                fresh = true;
                rest = rest[take..].trim_start();
            }
            let prev = cur.clone();
            emit(&mut out, &mut cur, &mut fresh);
            if rest.is_empty() {
                break;
            }
            // The next chunk: the section's heading, then the overlap.
            let mut body = prev.as_str();
            if let Some(h) = &heading {
                cur.push_str(h);
                body = body.strip_prefix(h.as_str()).unwrap_or(body);
            }
            let ov = tail(body.trim(), overlap);
            if !ov.is_empty() {
                if !cur.is_empty() {
                    cur.push_str("\n\n");
                }
                cur.push_str(ov);
            }
        }
    }
    emit(&mut out, &mut cur, &mut fresh);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn para(word: &str, n: usize) -> String {
        (0..n)
            .map(|i| format!("{word}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
            + "."
    }

    #[test]
    fn small_text_is_one_chunk() {
        let c = chunk_markdown(
            "# Title\n\nHello world.\n\nSecond paragraph.",
            &Default::default(),
        );
        assert_eq!(c, vec!["# Title\n\nHello world.\n\nSecond paragraph."]);
        assert!(chunk_markdown("  \n\n ", &Default::default()).is_empty());
    }

    #[test]
    fn headings_split_sections() {
        let cfg = ChunkConfig {
            max_chars: 400,
            overlap_chars: 60,
        };
        let text = format!(
            "# A\n\n{}\n\n# B\n\n{}\n",
            para("alpha", 20),
            para("beta", 20)
        );
        let c = chunk_markdown(&text, &cfg);
        assert_eq!(c.len(), 2, "{c:#?}");
        assert!(c[0].starts_with("# A") && c[0].contains("alpha19"));
        assert!(c[1].starts_with("# B") && !c[1].contains("alpha"));
    }

    #[test]
    fn long_sections_split_with_overlap_and_heading() {
        let cfg = ChunkConfig::default();
        let mut text = String::from("## Notes\n\n");
        for p in 0..12 {
            text.push_str(&para(&format!("w{p}x"), 40));
            text.push_str("\n\n");
        }
        let c = chunk_markdown(&text, &cfg);
        assert!(c.len() >= 3, "{}", c.len());
        for (i, ch) in c.iter().enumerate() {
            assert!(ch.len() <= cfg.max_chars + 40, "chunk {i}: {}", ch.len());
            assert!(ch.starts_with("## Notes"), "chunk {i} lacks the heading");
        }
        // Consecutive chunks share text (the overlap).
        for w in c.windows(2) {
            let last_word = w[0].split_whitespace().last().unwrap();
            assert!(w[1].contains(last_word), "no overlap: {last_word}");
        }
        // Nothing is lost.
        for p in 0..12 {
            for i in 0..40 {
                let word = format!("w{p}x{i}");
                assert!(c.iter().any(|ch| ch.contains(&word)), "{word} lost");
            }
        }
    }

    #[test]
    fn giant_paragraph_and_cjk_are_split_on_char_boundaries() {
        let cfg = ChunkConfig {
            max_chars: 300,
            overlap_chars: 45,
        };
        let cjk = "東京の天気は晴れです。".repeat(200);
        let c = chunk_markdown(&cjk, &cfg);
        assert!(c.len() > 5);
        assert!(c.iter().all(|ch| ch.len() <= 300 + 10));
        let words = "x".repeat(5000);
        let c = chunk_markdown(&words, &cfg);
        assert!(c.concat().matches('x').count() >= 5000);
    }

    #[test]
    fn code_fences_stay_whole() {
        let text = "# Code\n\n```sh\necho a\n\necho b\n```\n\nafter";
        let c = chunk_markdown(text, &Default::default());
        assert_eq!(c.len(), 1);
        assert!(c[0].contains("echo a\n\necho b"));
    }
}
