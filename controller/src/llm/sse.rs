//! A Server-Sent Events parser that takes bytes as they arrive.
//!
//! It follows the WHATWG event-stream rules: lines end with LF, CRLF or a lone CR (a CR at the
//! end of one read waits for the next byte to see whether an LF follows); `:` starts a comment;
//! `field: value` drops one leading space; several `data:` lines join with `\n`; a blank line
//! dispatches the event; an event with no data is dropped; a leading UTF-8 BOM is skipped.
//! Unlike the spec, a final event whose last line ended but which has no blank line after it is
//! still dispatched at end of stream ([`SseParser::finish`]): some OpenAI-compatible servers
//! end that way. A line cut off mid-way is dropped with its event (the stream was truncated).
//!
//! Responses are hostile input: a line longer than [`SseLimits::max_line`], an event whose data
//! grows past [`SseLimits::max_event`] or a stream past [`SseLimits::max_total`] is an error,
//! never an unbounded allocation.

use std::io::Read;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` name, empty when none was given (the spec's default is `message`).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen, if any.
    pub id: Option<String>,
}

/// Size caps for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// Longest line, in bytes.
    pub max_line: usize,
    /// Largest event (all its data lines together), in bytes.
    pub max_event: usize,
    /// Largest whole stream, in bytes.
    pub max_total: u64,
}

impl Default for SseLimits {
    fn default() -> Self {
        SseLimits {
            max_line: 4 << 20,
            max_event: 8 << 20,
            max_total: 16 << 20,
        }
    }
}

/// Why a stream was refused or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SseError {
    /// A line exceeded [`SseLimits::max_line`].
    #[error("event stream line longer than {0} bytes")]
    LineTooLong(usize),
    /// An event exceeded [`SseLimits::max_event`].
    #[error("event stream event larger than {0} bytes")]
    EventTooLarge(usize),
    /// The stream exceeded [`SseLimits::max_total`].
    #[error("event stream larger than {0} bytes")]
    StreamTooLarge(u64),
    /// Reading failed (including a read timeout).
    #[error("reading the event stream: {0}")]
    Io(#[from] std::io::Error),
}

/// Incremental parser: feed it bytes, take events out.
#[derive(Debug)]
pub struct SseParser {
    limits: SseLimits,
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF starting the next chunk belongs to it.
    after_cr: bool,
    at_start: bool,
    event: String,
    data: String,
    has_data: bool,
    id: Option<String>,
    total: u64,
}

impl SseParser {
    /// A parser with these caps.
    pub fn new(limits: SseLimits) -> Self {
        SseParser {
            limits,
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            event: String::new(),
            data: String::new(),
            has_data: false,
            id: None,
            total: 0,
        }
    }

    /// Takes the next bytes of the stream; complete events are pushed to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.total += chunk.len() as u64;
        if self.total > self.limits.max_total {
            return Err(SseError::StreamTooLarge(self.limits.max_total));
        }
        let mut rest = chunk;
        if self.at_start && !rest.is_empty() {
            // The BOM may be split across reads; only strip it when whole.
            if self.line.is_empty() && rest.starts_with(b"\xEF\xBB\xBF") {
                rest = &rest[3..];
            }
            self.at_start = false;
        }
        for &b in rest {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.end_line(out)?,
                b'\r' => {
                    self.end_line(out)?;
                    self.after_cr = true;
                }
                _ => {
                    if self.line.len() >= self.limits.max_line {
                        return Err(SseError::LineTooLong(self.limits.max_line));
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(())
    }

    /// Ends the stream. An event whose last line was complete is dispatched even without its
    /// blank line; a line cut off mid-way (a truncated stream) is dropped with its event.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            self.line.clear();
            self.data.clear();
            self.has_data = false;
            self.event.clear();
            return Ok(());
        }
        self.dispatch(out);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment (keep-alive)
        }
        let (name, value) = match line.iter().position(|&c| c == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"data" => {
                let extra = value.len() + usize::from(self.has_data);
                if self.data.len() + extra > self.limits.max_event {
                    return Err(SseError::EventTooLarge(self.limits.max_event));
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
            }
            b"event" => self.event = value.into_owned(),
            b"id" if !value.contains('\0') => self.id = Some(value.into_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return;
        }
        self.has_data = false;
        out.push(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.id.clone(),
        });
    }
}

/// Reads events from a byte stream (e.g. an HTTP response body), one at a time.
#[derive(Debug)]
pub struct SseReader<R> {
    reader: R,
    parser: SseParser,
    pending: std::collections::VecDeque<SseEvent>,
    buf: Vec<u8>,
    done: bool,
}

impl<R: Read> SseReader<R> {
    /// Wraps `reader`.
    pub fn new(reader: R, limits: SseLimits) -> Self {
        SseReader {
            reader,
            parser: SseParser::new(limits),
            pending: Default::default(),
            buf: vec![0; 16 * 1024],
            done: false,
        }
    }

    /// The next event, `Ok(None)` at the end of the stream.
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            let n = loop {
                match self.reader.read(&mut self.buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(SseError::Io(e)),
                }
            };
            let mut out = Vec::new();
            if n == 0 {
                self.done = true;
                self.parser.finish(&mut out)?;
            } else {
                self.parser.feed(&self.buf[..n], &mut out)?;
            }
            self.pending.extend(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new(SseLimits::default());
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        out
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn basic_events_and_names() {
        let got = parse_chunks(&[b"event: ping\ndata: {}\n\ndata: hello\n\n"]);
        assert_eq!(got, vec![ev("ping", "{}"), ev("", "hello")]);
    }

    #[test]
    fn multi_line_data_joins_with_newline() {
        let got = parse_chunks(&[b"data: a\ndata: b\ndata:c\n\n"]);
        assert_eq!(got, vec![ev("", "a\nb\nc")]);
    }

    #[test]
    fn comments_and_unknown_fields_are_ignored() {
        let got = parse_chunks(&[
            b": keep-alive\n\n:OPENROUTER PROCESSING\n\nretry: 100\nfoo: bar\ndata: x\n\n",
        ]);
        assert_eq!(got, vec![ev("", "x")]);
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        let got = parse_chunks(&[b"data: one\r\n\r\ndata: two\r\rdata: three\n\n"]);
        assert_eq!(got, vec![ev("", "one"), ev("", "two"), ev("", "three")]);
    }

    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        // "\r" ends one read, "\n" starts the next: still one line ending, not two.
        let got = parse_chunks(&[b"data: a\r", b"\ndata: b\r\n", b"\r\n"]);
        assert_eq!(got, vec![ev("", "a\nb")]);
    }

    #[test]
    fn partial_reads_byte_by_byte() {
        let stream =
            b"event: content_block_delta\ndata: {\"x\": 1}\n\nevent: done\ndata: [DONE]\n\n";
        let chunks: Vec<&[u8]> = stream.chunks(1).collect();
        let got = parse_chunks(&chunks);
        assert_eq!(
            got,
            vec![
                ev("content_block_delta", "{\"x\": 1}"),
                ev("done", "[DONE]")
            ]
        );
    }

    #[test]
    fn event_without_data_is_dropped_and_name_resets() {
        let got = parse_chunks(&[b"event: a\n\ndata: x\n\n"]);
        assert_eq!(got, vec![ev("", "x")]);
    }

    #[test]
    fn field_without_colon_and_value_without_space() {
        let got = parse_chunks(&[b"data\n\ndata:no-space\n\n"]);
        assert_eq!(got, vec![ev("", ""), ev("", "no-space")]);
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        let got = parse_chunks(&[b"data:  two spaces\n\n"]);
        assert_eq!(got, vec![ev("", " two spaces")]);
    }

    #[test]
    fn bom_is_skipped_and_ids_kept() {
        let got = parse_chunks(&[b"\xEF\xBB\xBFid: 7\ndata: x\n\n"]);
        assert_eq!(
            got,
            vec![SseEvent {
                event: String::new(),
                data: "x".into(),
                id: Some("7".into())
            }]
        );
    }

    #[test]
    fn trailing_event_without_blank_line_is_dispatched_at_eof() {
        let got = parse_chunks(&[b"data: first\n\ndata: last\n"]);
        assert_eq!(got, vec![ev("", "first"), ev("", "last")]);
        // A line cut off mid-way is a truncated stream: dropped with its event.
        let got = parse_chunks(&[b"data: first\n\ndata: a\ndata: {\"cut"]);
        assert_eq!(got, vec![ev("", "first")]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let got = parse_chunks(&[b"data: \xff\xfe ok\n\n"]);
        assert_eq!(got.len(), 1);
        assert!(got[0].data.ends_with(" ok"));
    }

    #[test]
    fn caps_are_enforced() {
        let limits = SseLimits {
            max_line: 16,
            max_event: 12,
            max_total: 64,
        };
        let mut p = SseParser::new(limits);
        let mut out = Vec::new();
        assert!(matches!(
            p.feed(b"data: 12345678901\n", &mut out),
            Err(SseError::LineTooLong(16))
        ));
        let mut p = SseParser::new(limits);
        assert!(matches!(
            p.feed(b"data: 12345\ndata: 67890\ndata: 9\n", &mut out),
            Err(SseError::EventTooLarge(12))
        ));
        let mut p = SseParser::new(limits);
        assert!(matches!(
            p.feed(&[b':'; 65], &mut out),
            Err(SseError::StreamTooLarge(64))
        ));
    }

    #[test]
    fn reader_yields_events_from_a_slow_reader() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(3).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut r = SseReader::new(
            Trickle(b"data: a\r\n\r\n: c\n\ndata: b\n\n"),
            SseLimits::default(),
        );
        assert_eq!(r.next_event().unwrap(), Some(ev("", "a")));
        assert_eq!(r.next_event().unwrap(), Some(ev("", "b")));
        assert_eq!(r.next_event().unwrap(), None);
        assert_eq!(r.next_event().unwrap(), None);
    }
}
