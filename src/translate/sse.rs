//! Server-sent events as the stream translators read and write them.
//!
//! The reader takes byte chunks split anywhere — inside a line, between `\r` and `\n` —
//! and yields whole events: lines end with `\n`, `\r\n` or `\r`; `:` lines are comments;
//! `event:` names the event; `data:` lines join with `\n`; a blank line dispatches; other
//! fields (`id:`, `retry:`) are ignored. Invariant: it never holds more than
//! [`MAX_SSE_LINE`] bytes of a line, nor of an event's data, so a hostile upstream cannot
//! grow it without bound. The writers emit exactly `event: <name>\ndata: <json>\n\n`
//! (Anthropic) or `data: <json>\n\n` (OpenAI).

use serde_json::Value;

/// Longest SSE line (and longest event data) a stream translator accepts from an upstream;
/// beyond it the stream fails instead of buffering on.
pub const MAX_SSE_LINE: usize = 16 << 20;

/// A line buffer whose capacity grew past this is released rather than kept for reuse.
const KEEP_CAPACITY: usize = 64 << 10;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    /// The `event:` field, if any.
    pub name: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: Vec<u8>,
}

/// A line or an event's data went past [`MAX_SSE_LINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong;

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    line: Vec<u8>,
    /// The last byte seen ended a line with `\r`: a `\n` right after it ends no second line.
    after_cr: bool,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
}

impl Reader {
    /// Reads one chunk; complete events are appended to `out`.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if let Some((b'\n', rest)) = chunk.split_first() {
                chunk = rest;
            }
        }
        while let Some(i) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = chunk.split_at(i);
            self.push(head)?;
            self.end_line(out)?;
            chunk = match rest.split_first() {
                Some((b'\r', rest)) => match rest.split_first() {
                    Some((b'\n', rest)) => rest,
                    Some(_) => rest,
                    // The `\n` of this `\r\n` may be the first byte of the next chunk.
                    None => {
                        self.after_cr = true;
                        rest
                    }
                },
                Some((_, rest)) => rest,
                None => rest,
            };
        }
        self.push(chunk)
    }

    /// The end of the stream: a last line without its newline, and a last event without its
    /// blank line, still count (lenient: some servers end on `data: [DONE]` alone).
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Result<(), TooLong> {
        if !self.line.is_empty() {
            self.end_line(out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn push(&mut self, bytes: &[u8]) -> Result<(), TooLong> {
        if self.line.len().saturating_add(bytes.len()) > MAX_SSE_LINE {
            return Err(TooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<Event>) -> Result<(), TooLong> {
        let mut line = std::mem::take(&mut self.line);
        let result = self.read_line(&line, out);
        if line.capacity() <= KEEP_CAPACITY {
            line.clear();
            self.line = line;
        }
        result
    }

    fn read_line(&mut self, line: &[u8], out: &mut Vec<Event>) -> Result<(), TooLong> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return Ok(()), // a comment
            Some(i) => {
                let (field, rest) = line.split_at(i);
                let value = rest.get(1..).unwrap_or_default();
                (field, value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => self.name = Some(String::from_utf8_lossy(value).into_owned()),
            b"data" => {
                let extra = usize::from(self.has_data);
                if self
                    .data
                    .len()
                    .saturating_add(value.len())
                    .saturating_add(extra)
                    > MAX_SSE_LINE
                {
                    return Err(TooLong);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        let name = self.name.take();
        if std::mem::take(&mut self.has_data) {
            out.push(Event {
                name,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub(crate) fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    write_data(out, data);
}

/// Appends `data: <json>\n\n`.
pub(crate) fn write_data(out: &mut Vec<u8>, data: &Value) {
    out.extend_from_slice(b"data: ");
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and a Vec takes any
    // write. Were it to, the frame would still end well-formed, with `null`.
    if serde_json::to_writer(&mut *out, data).is_err() {
        out.extend_from_slice(b"null");
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends OpenAI's end of stream, `data: [DONE]\n\n`.
pub(crate) fn write_done(out: &mut Vec<u8>) {
    out.extend_from_slice(b"data: [DONE]\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<(Option<String>, String)> {
        let mut r = Reader::default();
        let mut out = Vec::new();
        for c in chunks {
            r.feed(c, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        out.into_iter()
            .map(|e| (e.name, String::from_utf8(e.data).unwrap()))
            .collect()
    }

    #[test]
    fn line_endings_comments_and_fields() {
        let text = b": keep-alive\r\nevent: ping\r\ndata: {}\r\n\r\nid: 7\ndata: a\ndata:b\n\nretry: 5\rdata: c\r\rdata: d\r\n\n";
        let want = vec![
            (Some("ping".to_owned()), "{}".to_owned()),
            (None, "a\nb".to_owned()),
            (None, "c".to_owned()),
            (None, "d".to_owned()),
        ];
        assert_eq!(events(&[text]), want);
        // Split at every byte, including between `\r` and `\n`.
        let bytes: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(events(&bytes), want);
    }

    #[test]
    fn an_event_without_data_is_not_dispatched() {
        assert!(events(&[b"event: ping\n\n"]).is_empty());
    }

    #[test]
    fn a_last_event_without_its_blank_line_counts_at_the_end() {
        assert_eq!(
            events(&[b"data: [DONE]"]),
            vec![(None, "[DONE]".to_owned())]
        );
    }

    #[test]
    fn an_overlong_line_is_refused_not_buffered() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_SSE_LINE];
        assert_eq!(r.feed(b"data: ", &mut out), Ok(()));
        assert_eq!(r.feed(&big, &mut out), Err(TooLong));
        assert!(r.line.len() <= MAX_SSE_LINE);
    }

    #[test]
    fn overlong_data_across_lines_is_refused() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        let mut line = b"data: ".to_vec();
        line.extend(std::iter::repeat_n(b'x', MAX_SSE_LINE / 4));
        line.push(b'\n');
        for _ in 0..3 {
            assert_eq!(r.feed(&line, &mut out), Ok(()));
        }
        // The fourth quarter and the newlines joining the lines go past the limit.
        assert_eq!(r.feed(&line, &mut out), Err(TooLong));
    }
}
