//! Token usage as providers report it: `usage` of a plain JSON answer, or of the stream
//! chunk that carries it (chat/completions with `stream_options.include_usage`, or the
//! Responses API's `response.completed` event). The gateway never edits a request to ask
//! for usage; it only reads what comes back.

use serde::Deserialize;

/// Tokens of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt: u64,
    /// Completion (output) tokens.
    pub completion: u64,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

impl Fields {
    fn usage(&self) -> Option<Usage> {
        let prompt = self.prompt_tokens.or(self.input_tokens);
        let completion = self.completion_tokens.or(self.output_tokens);
        (prompt.is_some() || completion.is_some()).then(|| Usage {
            prompt: prompt.unwrap_or(0),
            completion: completion.unwrap_or(0),
        })
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    usage: Option<Fields>,
    #[serde(default)]
    response: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    #[serde(default)]
    usage: Option<Fields>,
}

/// `usage` (or `response.usage`) of one JSON document.
pub fn from_json(doc: &[u8]) -> Option<Usage> {
    let e: Envelope = serde_json::from_slice(doc).ok()?;
    e.usage
        .and_then(|f| f.usage())
        .or_else(|| e.response.and_then(|r| r.usage).and_then(|f| f.usage()))
}

/// Longest SSE line kept while looking for usage; longer lines are skipped.
const MAX_LINE: usize = 1 << 20;

/// Follows an SSE stream chunk by chunk and keeps the last usage it carried.
#[derive(Debug, Default)]
pub struct SseUsage {
    line: Vec<u8>,
    overflow: bool,
    /// The last usage seen.
    pub last: Option<Usage>,
}

impl SseUsage {
    /// Feeds the next chunk of the stream. A line that lies whole inside one chunk (the
    /// common case) is read in place; only a line split across chunks is gathered in the
    /// buffer, which keeps its capacity from line to line.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let (part, tail) = rest.split_at(i);
            if self.line.is_empty() && !self.overflow {
                if part.len() <= MAX_LINE
                    && let Some(u) = usage_of_line(part)
                {
                    self.last = Some(u);
                }
            } else {
                self.push(part);
                self.finish_line();
            }
            rest = tail.get(1..).unwrap_or_default();
        }
        self.push(rest);
    }

    fn push(&mut self, part: &[u8]) {
        if self.overflow || self.line.len() + part.len() > MAX_LINE {
            self.overflow = true;
            self.line.clear();
        } else {
            self.line.extend_from_slice(part);
        }
    }

    fn finish_line(&mut self) {
        if !std::mem::take(&mut self.overflow)
            && let Some(u) = usage_of_line(&self.line)
        {
            self.last = Some(u);
        }
        self.line.clear();
    }
}

/// The usage an SSE line carries, if it is a `data:` line that has some.
fn usage_of_line(line: &[u8]) -> Option<Usage> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let data = line.strip_prefix(b"data:")?;
    if !contains(data, b"\"usage\"") {
        return None;
    }
    from_json(data.trim_ascii())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_answers() {
        let chat =
            br#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(
            from_json(chat),
            Some(Usage {
                prompt: 12,
                completion: 5
            })
        );
        let responses = br#"{"object":"response","usage":{"input_tokens":3,"output_tokens":4}}"#;
        assert_eq!(
            from_json(responses),
            Some(Usage {
                prompt: 3,
                completion: 4
            })
        );
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":8,"total_tokens":8}}"#;
        assert_eq!(
            from_json(embeddings),
            Some(Usage {
                prompt: 8,
                completion: 0
            })
        );
        assert_eq!(from_json(br#"{"usage":null}"#), None);
        assert_eq!(from_json(b"not json"), None);
    }

    #[test]
    fn stream_usage_split_across_chunks() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n";
        for split in [1, 7, 30, 64, stream.len()] {
            let mut s = SseUsage::default();
            for c in stream.chunks(split) {
                s.feed(c);
            }
            assert_eq!(
                s.last,
                Some(Usage {
                    prompt: 7,
                    completion: 2
                }),
                "split {split}"
            );
        }
    }

    #[test]
    fn responses_stream_completed_event() {
        let mut s = SseUsage::default();
        s.feed(b"event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":9}}}\r\n\r\n");
        assert_eq!(
            s.last,
            Some(Usage {
                prompt: 1,
                completion: 9
            })
        );
    }
}
