//! Request bodies, both ways: an Anthropic `/v1/messages` request as an OpenAI
//! `/v1/chat/completions` request ([`messages_to_chat`]) and the reverse
//! ([`chat_to_messages`]), each for the upstream model it is sent to.
//!
//! Invariants: the output is a fresh document holding only fields the target API knows;
//! `model` is the upstream model given; every field of the input is either carried over,
//! dropped because it only steers the provider, or refused with a [`TranslateError`] naming
//! it. Unknown top-level fields (new betas, SDK extras) are dropped: they cannot be carried
//! and refusing them would break every client a step ahead of this table.
//!
//! Choices where the contract is silent, Anthropic → OpenAI:
//! - `system` (string or text blocks) becomes one `system` message, blocks joined by a blank
//!   line: a single string is what every OpenAI-compatible server accepts there.
//! - User blocks become content parts (text, `image_url`, `file`); assistant text blocks are
//!   concatenated as they stand (Anthropic splits one answer into several blocks, e.g. around
//!   citations); thinking and redacted thinking blocks are dropped (they only steer the
//!   provider that made them, and OpenAI-compatible servers reject them back).
//! - `tool_result` blocks become `tool` messages, in order, ahead of a user message with the
//!   blocks beside them (OpenAI wants tool messages right after the assistant's calls). Their
//!   text blocks are joined by a newline; `is_error` becomes an `Error: ` prefix (OpenAI has no
//!   flag for it); their images and documents move to that following user message, because
//!   OpenAI accepts images only from the user.
//! - `max_tokens` stays `max_tokens` (not `max_completion_tokens`): it is the name every
//!   OpenAI-compatible server reads.
//! - `tool_choice` without tools is dropped (OpenAI refuses it); so is `parallel_tool_calls`.
//! - A last assistant message (a prefill) goes as it is: OpenAI has no prefill, so the model
//!   answers after it instead of continuing it. Best effort rather than a refusal, since
//!   the answer still fits the conversation.
//! - Refused: content blocks with no counterpart (server tool blocks, search results,
//!   `thinking` in a user turn…), image or document sources by file id or PDF by URL, server
//!   tools (`web_search_…`, `bash_…`…), `mcp_servers`.
//! - Dropped: `cache_control`, `citations`, `top_k`, `thinking`, `service_tier`,
//!   `container`, `context_management`, `metadata` other than `user_id`, and any field of a
//!   known block this table does not name (a document's `context`, a tool's `strict`…).
//! - `output_format` (structured output) becomes `response_format` `json_schema`.
//!
//! OpenAI → Anthropic:
//! - `system` and `developer` messages, wherever they stand, become the `system` blocks in
//!   order (Anthropic has no mid-conversation system turn); a lone string stays a string.
//! - Consecutive messages of one role merge into one turn (Anthropic wants user and
//!   assistant to alternate; tool results are user turns), with `tool_result` blocks first
//!   in a merged user turn, where Anthropic requires them. Empty text is skipped and a
//!   message left empty is dropped: Anthropic refuses empty text blocks.
//! - Tool call `arguments` must be a JSON object (empty means `{}`); anything else is
//!   refused, since the call could not be made as asked.
//! - `temperature` is clamped to Anthropic's 0–1 (OpenAI allows up to 2).
//! - Refused: `n > 1`, `logprobs` / `top_logprobs`, `response_format` `json_object` or
//!   `json_schema` (the client relies on JSON coming back), audio (`audio`, `modalities`,
//!   `input_audio` parts), legacy `functions` / `function_call` / `function` messages,
//!   non-function tools, `web_search_options`, a non-empty `logit_bias`, file parts by id
//!   or of a type other than PDF or image.
//! - `user` (or `safety_identifier`) becomes `metadata.user_id`.
//! - Dropped: `seed`, `frequency_penalty`, `presence_penalty`, `reasoning_effort`,
//!   `verbosity`, `store`, `metadata`, `prediction`, `service_tier`, `stream_options`,
//!   `prompt_cache_key`, `image_url.detail`, tools' `strict`, assistant
//!   `reasoning_content`, message `name`s.

use serde_json::{Map, Value, json};

use super::{TranslateError, count_of, field, kind, parse_object, to_bytes};

/// `max_tokens` of a request to Anthropic that set none (contract §10).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Separator of system blocks folded into one OpenAI system message.
const SYSTEM_JOIN: &str = "\n\n";
/// Separator of the text blocks of one tool result folded into one tool message.
const TOOL_RESULT_JOIN: &str = "\n";
/// Prefix of a tool message whose Anthropic result had `is_error: true`.
const TOOL_ERROR_PREFIX: &str = "Error: ";
/// File name of a PDF whose document block had no title: OpenAI wants one beside
/// `file_data`.
const DEFAULT_PDF_NAME: &str = "document.pdf";

type Result<T> = std::result::Result<T, TranslateError>;

fn err<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T> {
    Err(TranslateError::new(field, message))
}

// ---------------------------------------------------------------------------------------
// Anthropic Messages → OpenAI Chat Completions

pub use to_chat::messages_to_chat;

/// Anthropic Messages → OpenAI Chat Completions, read and written as [`Node`]s.
mod to_chat {
    use std::borrow::Cow;

    use super::super::node::{Fields, NULL, Node, obj};
    use super::{
        DEFAULT_PDF_NAME, Result, SYSTEM_JOIN, TOOL_ERROR_PREFIX, TOOL_RESULT_JOIN, TranslateError,
        err, to_bytes,
    };

    /// An Anthropic `/v1/messages` request body as an OpenAI `/v1/chat/completions` request for
    /// upstream model `model`.
    ///
    /// The request is read as a [`Node`] (borrowing its keys and strings) and the chat request is
    /// written from one that borrows the same strings: a long conversation is neither copied
    /// into a tree of owned values nor copied again into the output tree.
    pub fn messages_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>> {
        let req = match serde_json::from_slice::<Node>(body) {
            Ok(Node::Obj(fields)) => fields,
            Ok(_) => return err("body", "must be a JSON object"),
            Err(e) => return err("body", format!("is not valid JSON ({e})")),
        };
        let field = |key: &str| req.get(key).filter(|v| !v.is_null());
        let mut out = Fields::default();
        out.insert("model", model);

        let mut messages = Vec::new();
        if let Some(system) = field("system")
            && let Some(text) = system_to_chat(system)?
        {
            messages.push(obj! {"role" => "system", "content" => text});
        }
        let Some(input) = field("messages").and_then(Node::as_array) else {
            return err("messages", "must be an array of messages");
        };
        for (i, m) in input.iter().enumerate() {
            message_to_chat(i, m, &mut messages)?;
        }
        out.insert("messages", messages);

        if let Some(v) = field("max_tokens") {
            out.insert("max_tokens", positive_int(v, "max_tokens")?);
        }
        for key in ["temperature", "top_p"] {
            if let Some(v) = field(key) {
                out.insert(key, number(v, key)?);
            }
        }
        if let Some(v) = field("stop_sequences") {
            let stops = strings(v, "stop_sequences")?;
            if !stops.is_empty() {
                out.insert("stop", stops);
            }
        }
        if let Some(v) = field("stream") {
            let Some(stream) = v.as_bool() else {
                return err("stream", "must be a boolean");
            };
            out.insert("stream", stream);
            if stream {
                // OpenAI reports usage in a stream only when asked, and the translated stream
                // needs it for `message_delta.usage` (and the gateway for its token counts).
                out.insert("stream_options", obj! {"include_usage" => true});
            }
        }
        if let Some(user) = field("metadata")
            .and_then(|m| m.get("user_id"))
            .and_then(Node::as_cow)
        {
            out.insert("user", user);
        }
        if let Some(servers) = field("mcp_servers")
            && servers.as_array().is_none_or(|a| !a.is_empty())
        {
            return err("mcp_servers", "MCP servers have no OpenAI counterpart");
        }

        let tools = match field("tools") {
            Some(v) => tools_to_chat(v)?,
            None => Vec::new(),
        };
        if !tools.is_empty() {
            out.insert("tools", tools);
            if let Some(choice) = field("tool_choice") {
                let (choice, parallel) = tool_choice_to_chat(choice)?;
                out.insert("tool_choice", choice);
                if !parallel {
                    out.insert("parallel_tool_calls", false);
                }
            }
        }
        if let Some(format) = field("output_format") {
            out.insert("response_format", output_format_to_chat(format)?);
        }
        to_bytes(&Node::Obj(out), body.len())
    }

    /// The text of `system`, blocks joined; `None` when there is none.
    fn system_to_chat<'a>(system: &Node<'a>) -> Result<Option<Cow<'a, str>>> {
        let text = match system {
            Node::Str(s) => s.clone(),
            Node::Arr(blocks) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    let path = || format!("system[{j}]");
                    match b.kind() {
                        Some("text") => texts.push(text_of(b, &path)?),
                        Some(other) => {
                            return err(
                                path(),
                                format!("block type {other:?} has no OpenAI counterpart"),
                            );
                        }
                        None => return err(path(), "must be a text block"),
                    }
                }
                join(texts, SYSTEM_JOIN)
            }
            _ => return err("system", "must be a string or an array of text blocks"),
        };
        Ok((!text.is_empty()).then_some(text))
    }

    /// Pieces of text joined by `sep`; a single piece stays borrowed.
    fn join<'a>(mut pieces: Vec<Cow<'a, str>>, sep: &str) -> Cow<'a, str> {
        if pieces.len() == 1 {
            return pieces.pop().unwrap_or_default();
        }
        Cow::Owned(pieces.join(sep))
    }

    fn message_to_chat<'a>(i: usize, m: &Node<'a>, out: &mut Vec<Node<'a>>) -> Result<()> {
        let path = || format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            return err(path(), "must be an object");
        };
        let role = m.get("role").and_then(Node::as_str);
        let content = m.get("content");
        match (role, content) {
            (Some(r @ ("user" | "assistant")), Some(Node::Str(s))) => {
                let role = if r == "user" { "user" } else { "assistant" };
                out.push(obj! {"role" => role, "content" => s.clone()});
                Ok(())
            }
            // Claude Code puts system reminders inside `messages` as `role: "system"` turns:
            // they become system messages in place.
            (Some("system"), Some(Node::Str(s))) => {
                out.push(obj! {"role" => "system", "content" => s.clone()});
                Ok(())
            }
            (Some("system"), Some(Node::Arr(blocks))) => {
                let mut texts = Vec::with_capacity(blocks.len());
                for (j, b) in blocks.iter().enumerate() {
                    match (b.kind(), b.get("text").and_then(Node::as_cow)) {
                        (Some("text"), Some(t)) => texts.push(t),
                        _ => {
                            return err(format!("{}.content[{j}]", path()), "must be a text block");
                        }
                    }
                }
                out.push(obj! {"role" => "system", "content" => join(texts, SYSTEM_JOIN)});
                Ok(())
            }
            (Some("user"), Some(Node::Arr(blocks))) => user_to_chat(&path, blocks, out),
            (Some("assistant"), Some(Node::Arr(blocks))) => assistant_to_chat(&path, blocks, out),
            (Some("user" | "assistant"), _) => err(
                format!("{}.content", path()),
                "must be a string or an array of content blocks",
            ),
            (Some(other), _) => err(
                format!("{}.role", path()),
                format!("must be \"user\", \"assistant\" or \"system\", not {other:?}"),
            ),
            (None, _) => err(
                format!("{}.role", path()),
                "must be \"user\" or \"assistant\"",
            ),
        }
    }

    /// A JSON path, built only when an error names it.
    type PathFn<'p> = &'p dyn Fn() -> String;

    fn user_to_chat<'a>(path: PathFn, blocks: &[Node<'a>], out: &mut Vec<Node<'a>>) -> Result<()> {
        let mut tool_messages = Vec::new();
        // Images and documents returned by tools, shown to the model right after the results.
        let mut carried = Vec::new();
        let mut parts = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let path = || format!("{}.content[{j}]", path());
            match b.kind() {
                Some("text") => parts.push(obj! {"type" => "text", "text" => text_of(b, &path)?}),
                Some("image") => parts.push(image_to_chat(b, &path)?),
                Some("document") => parts.extend(document_to_chat(b, &path)?),
                Some("tool_result") => {
                    tool_messages.push(tool_result_to_chat(b, &path, &mut carried)?)
                }
                Some(t @ ("tool_use" | "thinking" | "redacted_thinking")) => {
                    return err(
                        path(),
                        format!("block type {t:?} is not allowed in a user message"),
                    );
                }
                Some(other) => {
                    return err(
                        path(),
                        format!("block type {other:?} has no OpenAI counterpart"),
                    );
                }
                None => return err(path(), "must be a content block with a type"),
            }
        }
        let had_results = !tool_messages.is_empty();
        out.append(&mut tool_messages);
        carried.append(&mut parts);
        if !carried.is_empty() {
            out.push(obj! {"role" => "user", "content" => carried});
        } else if !had_results {
            // An empty turn stays a turn; the upstream judges it.
            out.push(obj! {"role" => "user", "content" => ""});
        }
        Ok(())
    }

    fn assistant_to_chat<'a>(
        path: PathFn,
        blocks: &[Node<'a>],
        out: &mut Vec<Node<'a>>,
    ) -> Result<()> {
        let mut texts = Vec::new();
        let mut calls = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            let path = || format!("{}.content[{j}]", path());
            match b.kind() {
                Some("text") => texts.push(text_of(b, &path)?),
                Some("tool_use") => calls.push(tool_use_to_chat(b, &path)?),
                Some("thinking" | "redacted_thinking") => {}
                Some(t @ ("tool_result" | "image" | "document")) => {
                    return err(
                        path(),
                        format!("block type {t:?} is not allowed in an assistant message"),
                    );
                }
                Some(other) => {
                    return err(
                        path(),
                        format!("block type {other:?} has no OpenAI counterpart"),
                    );
                }
                None => return err(path(), "must be a content block with a type"),
            }
        }
        texts.retain(|t| !t.is_empty());
        if texts.is_empty() && calls.is_empty() {
            // Only thinking: nothing the target could read.
            return Ok(());
        }
        let content = if texts.is_empty() {
            Node::Null
        } else {
            join(texts, "").into()
        };
        let mut msg = obj! {"role" => "assistant", "content" => content};
        if !calls.is_empty()
            && let Node::Obj(fields) = &mut msg
        {
            fields.insert("tool_calls", calls);
        }
        out.push(msg);
        Ok(())
    }

    fn tool_use_to_chat<'a>(b: &Node<'a>, path: PathFn) -> Result<Node<'a>> {
        let id = str_field(b, "id", path)?;
        let name = str_field(b, "name", path)?;
        let arguments = match b.get("input") {
            Some(input) => serde_json::to_string(input)
                .map_err(|e| TranslateError::new(format!("{}.input", path()), e.to_string()))?,
            None => "{}".to_owned(),
        };
        Ok(obj! {
            "id" => id,
            "type" => "function",
            "function" => obj! {"name" => name, "arguments" => arguments},
        })
    }

    fn tool_result_to_chat<'a>(
        b: &Node<'a>,
        path: PathFn,
        carried: &mut Vec<Node<'a>>,
    ) -> Result<Node<'a>> {
        let id = str_field(b, "tool_use_id", path)?;
        let text = match b.get("content") {
            None | Some(Node::Null) => Cow::Borrowed(""),
            Some(Node::Str(s)) => s.clone(),
            Some(Node::Arr(blocks)) => {
                let mut texts = Vec::new();
                for (k, inner) in blocks.iter().enumerate() {
                    let path = || format!("{}.content[{k}]", path());
                    match inner.kind() {
                        Some("text") => texts.push(text_of(inner, &path)?),
                        Some("image") => carried.push(image_to_chat(inner, &path)?),
                        Some("document") => carried.extend(document_to_chat(inner, &path)?),
                        Some(other) => {
                            return err(
                                path(),
                                format!("block type {other:?} has no OpenAI counterpart"),
                            );
                        }
                        None => return err(path(), "must be a content block with a type"),
                    }
                }
                if texts.is_empty() {
                    Cow::Borrowed("")
                } else {
                    join(texts, TOOL_RESULT_JOIN)
                }
            }
            Some(_) => {
                return err(
                    format!("{}.content", path()),
                    "must be a string or an array of blocks",
                );
            }
        };
        let text = if b.get("is_error").and_then(Node::as_bool) == Some(true) {
            Cow::Owned(format!("{TOOL_ERROR_PREFIX}{text}"))
        } else {
            text
        };
        Ok(obj! {"role" => "tool", "tool_call_id" => id, "content" => text})
    }

    fn image_to_chat<'a>(b: &Node<'a>, path: PathFn) -> Result<Node<'a>> {
        let source = b.get("source").unwrap_or(&NULL);
        let spath = || format!("{}.source", path());
        let url = match source.kind() {
            Some("base64") => {
                let media_type = str_field(source, "media_type", &spath)?;
                let data = str_field(source, "data", &spath)?;
                Cow::Owned(format!("data:{media_type};base64,{data}"))
            }
            Some("url") => str_field(source, "url", &spath)?,
            Some(other) => {
                return err(
                    format!("{}.type", spath()),
                    format!("image source {other:?} has no OpenAI counterpart"),
                );
            }
            None => return err(spath(), "must be an object with a type"),
        };
        Ok(obj! {"type" => "image_url", "image_url" => obj! {"url" => url}})
    }

    /// A document block as content parts: a PDF as a `file` part, text as text parts.
    fn document_to_chat<'a>(b: &Node<'a>, path: PathFn) -> Result<Vec<Node<'a>>> {
        let source = b.get("source").unwrap_or(&NULL);
        let spath = || format!("{}.source", path());
        match source.kind() {
            Some("base64") => {
                let media_type = str_field(source, "media_type", &spath)?;
                let data = str_field(source, "data", &spath)?;
                let filename = b
                    .get("title")
                    .and_then(Node::as_cow)
                    .filter(|t| !t.is_empty())
                    .unwrap_or(Cow::Borrowed(DEFAULT_PDF_NAME));
                Ok(vec![obj! {"type" => "file", "file" => obj! {
                    "filename" => filename,
                    "file_data" => format!("data:{media_type};base64,{data}"),
                }}])
            }
            Some("text") => Ok(vec![
                obj! {"type" => "text", "text" => str_field(source, "data", &spath)?},
            ]),
            Some("content") => match source.get("content") {
                Some(Node::Str(s)) => Ok(vec![obj! {"type" => "text", "text" => s.clone()}]),
                Some(Node::Arr(blocks)) => {
                    let mut parts = Vec::new();
                    for (k, inner) in blocks.iter().enumerate() {
                        let path = || format!("{}.content[{k}]", spath());
                        match inner.kind() {
                            Some("text") => {
                                parts.push(
                                    obj! {"type" => "text", "text" => text_of(inner, &path)?},
                                );
                            }
                            Some("image") => parts.push(image_to_chat(inner, &path)?),
                            _ => return err(path(), "must be a text or image block"),
                        }
                    }
                    Ok(parts)
                }
                _ => err(
                    format!("{}.content", spath()),
                    "must be a string or an array of blocks",
                ),
            },
            Some(other) => err(
                format!("{}.type", spath()),
                format!("document source {other:?} has no OpenAI counterpart"),
            ),
            None => err(spath(), "must be an object with a type"),
        }
    }

    fn tools_to_chat<'a>(tools: &Node<'a>) -> Result<Vec<Node<'a>>> {
        let Some(tools) = tools.as_array() else {
            return err("tools", "must be an array");
        };
        let mut out = Vec::with_capacity(tools.len());
        for (k, t) in tools.iter().enumerate() {
            let path = || format!("tools[{k}]");
            match t.kind() {
                None | Some("custom") => {}
                Some(other) => {
                    return err(
                        path(),
                        format!("tool type {other:?} has no OpenAI counterpart"),
                    );
                }
            }
            let name = str_field(t, "name", &path)?;
            let parameters = match t.get("input_schema") {
                Some(s @ Node::Obj(_)) => s.clone(),
                None | Some(Node::Null) => {
                    obj! {"type" => "object", "properties" => Fields::default()}
                }
                Some(_) => return err(format!("{}.input_schema", path()), "must be an object"),
            };
            let mut function = Fields::default();
            function.insert("name", name);
            function.insert("parameters", parameters);
            if let Some(d) = t.get("description").and_then(Node::as_cow) {
                function.insert("description", d);
            }
            out.push(obj! {"type" => "function", "function" => function});
        }
        Ok(out)
    }

    /// The OpenAI `tool_choice`, and whether parallel tool calls stay allowed.
    fn tool_choice_to_chat<'a>(choice: &Node<'a>) -> Result<(Node<'a>, bool)> {
        let parallel = choice
            .get("disable_parallel_tool_use")
            .and_then(Node::as_bool)
            != Some(true);
        let value = match choice.kind() {
            Some("auto") => Node::from("auto"),
            Some("any") => Node::from("required"),
            Some("none") => return Ok((Node::from("none"), true)),
            Some("tool") => {
                let name = str_field(choice, "name", &|| "tool_choice".to_owned())?;
                obj! {"type" => "function", "function" => obj! {"name" => name}}
            }
            Some(other) => {
                return err(
                    "tool_choice.type",
                    format!("{other:?} has no OpenAI counterpart"),
                );
            }
            None => return err("tool_choice", "must be an object with a type"),
        };
        Ok((value, parallel))
    }

    /// Anthropic's structured output (`output_format`) as OpenAI's `response_format`.
    fn output_format_to_chat<'a>(format: &Node<'a>) -> Result<Node<'a>> {
        match format.kind() {
            Some("json_schema") => match format.get("schema") {
                Some(schema @ Node::Obj(_)) => Ok(obj! {
                    "type" => "json_schema",
                    "json_schema" => obj! {"name" => "output", "schema" => schema.clone(), "strict" => true},
                }),
                _ => err("output_format.schema", "must be an object"),
            },
            _ => err("output_format.type", "must be \"json_schema\""),
        }
    }

    // Field readers of a `Node`, the counterparts of the `Value` ones below.

    fn str_field<'a>(v: &Node<'a>, key: &str, path: PathFn) -> Result<Cow<'a, str>> {
        match v.get(key).and_then(Node::as_cow) {
            Some(s) => Ok(s),
            None => err(format!("{}.{key}", path()), "must be a string"),
        }
    }

    fn text_of<'a>(b: &Node<'a>, path: PathFn) -> Result<Cow<'a, str>> {
        str_field(b, "text", path)
    }

    fn positive_int(v: &Node, path: &str) -> Result<u64> {
        match v.count() {
            Some(n) if n > 0 => Ok(n),
            _ => err(path, "must be a positive integer"),
        }
    }

    fn number<'a>(v: &Node<'a>, path: &str) -> Result<Node<'a>> {
        if v.is_number() {
            Ok(v.clone())
        } else {
            err(path, "must be a number")
        }
    }

    fn strings<'a>(v: &Node<'a>, path: &str) -> Result<Vec<Node<'a>>> {
        let Some(items) = v.as_array() else {
            return err(path, "must be an array of strings");
        };
        items
            .iter()
            .enumerate()
            .map(|(k, s)| match s {
                Node::Str(s) => Ok(Node::Str(s.clone())),
                _ => err(format!("{path}[{k}]"), "must be a string"),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// OpenAI Chat Completions → Anthropic Messages

/// An OpenAI `/v1/chat/completions` request body as an Anthropic `/v1/messages` request for
/// upstream model `model`; `max_tokens` is [`DEFAULT_MAX_TOKENS`] when the request set none.
pub fn chat_to_messages(body: &[u8], model: &str) -> Result<Vec<u8>> {
    let req = parse_object(body)?;
    refuse_chat_only_features(&req)?;

    let Some(input) = field(&req, "messages").and_then(Value::as_array) else {
        return err("messages", "must be an array of messages");
    };
    let mut system = Vec::new();
    let mut system_string = None;
    let mut system_messages = 0usize;
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let path = format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            return err(path, "must be an object");
        };
        let content = m.get("content").unwrap_or(&Value::Null);
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => {
                system_messages += 1;
                if let Value::String(s) = content {
                    system_string = Some(s.clone());
                }
                system.extend(text_parts_to_blocks(content, &path)?);
            }
            Some("user") => push_turn(&mut turns, "user", user_to_blocks(content, &path)?),
            Some("assistant") => push_turn(&mut turns, "assistant", assistant_to_blocks(m, &path)?),
            Some("tool") => {
                let Some(id) = m.get("tool_call_id").and_then(Value::as_str) else {
                    return err(format!("{path}.tool_call_id"), "must be a string");
                };
                let content = match content {
                    Value::String(s) => Value::String(s.clone()),
                    Value::Null => Value::String(String::new()),
                    _ => text_parts_to_blocks(content, &path)?.into(),
                };
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                push_turn(&mut turns, "user", Content::Blocks(vec![block]));
            }
            Some("function") => {
                return err(
                    format!("{path}.role"),
                    "legacy \"function\" messages have no Anthropic counterpart; use tools",
                );
            }
            Some(other) => {
                return err(
                    format!("{path}.role"),
                    format!("{other:?} is not a chat role"),
                );
            }
            None => return err(format!("{path}.role"), "must be a string"),
        }
    }

    let mut out = Map::new();
    out.insert("model".into(), model.into());
    let max_tokens =
        match field(&req, "max_completion_tokens").or_else(|| field(&req, "max_tokens")) {
            Some(v) => positive_int(
                v,
                if field(&req, "max_completion_tokens").is_some() {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                },
            )?,
            None => DEFAULT_MAX_TOKENS,
        };
    out.insert("max_tokens".into(), max_tokens.into());
    match (system_messages, system_string) {
        (1, Some(s)) if !s.is_empty() => {
            out.insert("system".into(), s.into());
        }
        _ if !system.is_empty() => {
            out.insert("system".into(), system.into());
        }
        _ => {}
    }
    out.insert(
        "messages".into(),
        turns
            .into_iter()
            .map(Turn::into_value)
            .collect::<Vec<_>>()
            .into(),
    );

    if let Some(v) = field(&req, "temperature") {
        let t = number(v, "temperature")?.as_f64().unwrap_or(1.0);
        out.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(v) = field(&req, "top_p") {
        out.insert("top_p".into(), number(v, "top_p")?);
    }
    if let Some(v) = field(&req, "stop") {
        let stops = match v {
            Value::String(s) => vec![s.clone()],
            _ => strings(v, "stop")?,
        };
        if !stops.is_empty() {
            out.insert("stop_sequences".into(), stops.into());
        }
    }
    if let Some(v) = field(&req, "stream") {
        let Some(stream) = v.as_bool() else {
            return err("stream", "must be a boolean");
        };
        out.insert("stream".into(), stream.into());
    }
    // `safety_identifier` is OpenAI's newer name for what `user` said.
    if let Some(user) = field(&req, "user")
        .or_else(|| field(&req, "safety_identifier"))
        .and_then(Value::as_str)
    {
        out.insert("metadata".into(), json!({"user_id": user}));
    }

    let tools = match field(&req, "tools") {
        Some(v) => tools_to_messages(v)?,
        None => Vec::new(),
    };
    if !tools.is_empty() {
        out.insert("tools".into(), tools.into());
        let mut choice = match field(&req, "tool_choice") {
            Some(c) => Some(tool_choice_to_messages(c)?),
            None => None,
        };
        if field(&req, "parallel_tool_calls").and_then(Value::as_bool) == Some(false) {
            let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
            if kind(c) != Some("none") {
                c["disable_parallel_tool_use"] = true.into();
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
    }
    to_bytes(&Value::Object(out), body.len())
}

/// Fields whose loss would change what the client gets back.
fn refuse_chat_only_features(req: &Map<String, Value>) -> Result<()> {
    if let Some(n) = field(req, "n").and_then(count_of)
        && n > 1
    {
        return err(
            "n",
            format!("{n} choices have no Anthropic counterpart (only 1)"),
        );
    }
    if field(req, "logprobs").and_then(Value::as_bool) == Some(true) {
        return err(
            "logprobs",
            "log probabilities have no Anthropic counterpart",
        );
    }
    if field(req, "top_logprobs")
        .and_then(count_of)
        .is_some_and(|n| n > 0)
    {
        return err(
            "top_logprobs",
            "log probabilities have no Anthropic counterpart",
        );
    }
    if let Some(format) = field(req, "response_format") {
        match kind(format) {
            Some("text") | None => {}
            Some(t) => {
                return err(
                    "response_format.type",
                    format!("{t:?} has no Anthropic counterpart"),
                );
            }
        }
    }
    if field(req, "audio").is_some() {
        return err("audio", "audio output has no Anthropic counterpart");
    }
    if let Some(m) = field(req, "modalities").and_then(Value::as_array)
        && m.iter().any(|x| x.as_str() != Some("text"))
    {
        return err("modalities", "only \"text\" has an Anthropic counterpart");
    }
    for legacy in ["functions", "function_call"] {
        if field(req, legacy).is_some() {
            return err(
                legacy,
                "legacy function calling has no Anthropic counterpart; use tools",
            );
        }
    }
    if field(req, "web_search_options").is_some() {
        return err(
            "web_search_options",
            "web search has no Anthropic counterpart here",
        );
    }
    if field(req, "logit_bias")
        .and_then(Value::as_object)
        .is_some_and(|m| !m.is_empty())
    {
        return err("logit_bias", "token biases have no Anthropic counterpart");
    }
    Ok(())
}

/// The content of one Anthropic turn while turns are merged.
enum Content {
    /// A single message's string content, kept a string if nothing merges into it.
    Text(String),
    Blocks(Vec<Value>),
}

impl Content {
    fn into_blocks(self) -> Vec<Value> {
        match self {
            Content::Text(s) => vec![json!({"type": "text", "text": s})],
            Content::Blocks(b) => b,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Content::Text(s) => s.is_empty(),
            Content::Blocks(b) => b.is_empty(),
        }
    }
}

struct Turn {
    role: &'static str,
    content: Content,
}

impl Turn {
    fn into_value(self) -> Value {
        let content = match self.content {
            Content::Text(s) => Value::String(s),
            Content::Blocks(b) => Value::Array(b),
        };
        json!({"role": self.role, "content": content})
    }
}

/// Appends a turn, merged into the last one when it has the same role.
fn push_turn(turns: &mut Vec<Turn>, role: &'static str, content: Content) {
    if content.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let prev = std::mem::replace(&mut last.content, Content::Blocks(Vec::new()));
            let mut blocks = prev.into_blocks();
            blocks.extend(content.into_blocks());
            if role == "user" {
                // Anthropic reads tool results only at the head of a user turn.
                let (mut results, rest): (Vec<_>, Vec<_>) = blocks
                    .into_iter()
                    .partition(|b| kind(b) == Some("tool_result"));
                results.extend(rest);
                blocks = results;
            }
            last.content = Content::Blocks(blocks);
        }
        _ => turns.push(Turn { role, content }),
    }
}

/// System/developer or tool content (a string or text parts) as text blocks, empty text
/// skipped.
fn text_parts_to_blocks(content: &Value, path: &str) -> Result<Vec<Value>> {
    match content {
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let path = format!("{path}.content[{j}]");
                match kind(p) {
                    Some("text") => {
                        let t = text_of(p, &path)?;
                        if !t.is_empty() {
                            blocks.push(json!({"type": "text", "text": t}));
                        }
                    }
                    Some(other) => {
                        return err(path, format!("part type {other:?} is not allowed here"));
                    }
                    None => return err(path, "must be a content part with a type"),
                }
            }
            Ok(blocks)
        }
        Value::Null => Ok(Vec::new()),
        _ => err(
            format!("{path}.content"),
            "must be a string or an array of parts",
        ),
    }
}

fn user_to_blocks(content: &Value, path: &str) -> Result<Content> {
    let parts = match content {
        Value::String(s) => return Ok(Content::Text(s.clone())),
        Value::Array(parts) => parts,
        _ => {
            return err(
                format!("{path}.content"),
                "must be a string or an array of parts",
            );
        }
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let path = format!("{path}.content[{j}]");
        match kind(p) {
            Some("text") => {
                let t = text_of(p, &path)?;
                if !t.is_empty() {
                    blocks.push(json!({"type": "text", "text": t}));
                }
            }
            Some("image_url") => blocks.push(image_url_to_block(p, &path)?),
            Some("file") => blocks.push(file_to_block(p, &path)?),
            Some(other) => {
                return err(
                    path,
                    format!("part type {other:?} has no Anthropic counterpart"),
                );
            }
            None => return err(path, "must be a content part with a type"),
        }
    }
    Ok(Content::Blocks(blocks))
}

fn assistant_to_blocks(m: &Map<String, Value>, path: &str) -> Result<Content> {
    if field(m, "function_call").is_some() {
        return err(
            format!("{path}.function_call"),
            "legacy function calling has no Anthropic counterpart; use tool_calls",
        );
    }
    if field(m, "audio").is_some() {
        return err(
            format!("{path}.audio"),
            "audio has no Anthropic counterpart",
        );
    }
    let mut text = String::new();
    match m.get("content") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => text.push_str(s),
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let path = format!("{path}.content[{j}]");
                match kind(p) {
                    Some("text") => text.push_str(&text_of(p, &path)?),
                    Some("refusal") => text.push_str(str_field(p, "refusal", &path)?),
                    Some(other) => {
                        return err(
                            path,
                            format!("part type {other:?} has no Anthropic counterpart"),
                        );
                    }
                    None => return err(path, "must be a content part with a type"),
                }
            }
        }
        Some(_) => {
            return err(
                format!("{path}.content"),
                "must be a string or an array of parts",
            );
        }
    }
    if text.is_empty()
        && let Some(r) = field(m, "refusal").and_then(Value::as_str)
    {
        text.push_str(r);
    }
    let calls = match field(m, "tool_calls") {
        None => &[][..],
        Some(Value::Array(calls)) => calls.as_slice(),
        Some(_) => return err(format!("{path}.tool_calls"), "must be an array"),
    };
    if calls.is_empty() {
        return Ok(Content::Text(text));
    }
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(json!({"type": "text", "text": text}));
    }
    for (j, c) in calls.iter().enumerate() {
        blocks.push(tool_call_to_block(c, &format!("{path}.tool_calls[{j}]"))?);
    }
    Ok(Content::Blocks(blocks))
}

fn tool_call_to_block(c: &Value, path: &str) -> Result<Value> {
    match kind(c) {
        Some("function") | None => {}
        Some(other) => {
            return err(
                format!("{path}.type"),
                format!("tool call type {other:?} has no Anthropic counterpart"),
            );
        }
    }
    let id = str_field(c, "id", path)?;
    let fpath = format!("{path}.function");
    let function = c.get("function").unwrap_or(&Value::Null);
    let name = str_field(function, "name", &fpath)?;
    let arguments = function
        .get("arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = parse_arguments(arguments)
        .map_err(|message| TranslateError::new(format!("{fpath}.arguments"), message))?;
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Tool call arguments as the object Anthropic's `input` must be; empty means no arguments.
pub(crate) fn parse_arguments(arguments: &str) -> std::result::Result<Value, String> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("must be a JSON object".into()),
        Err(e) => Err(format!("is not valid JSON ({e})")),
    }
}

fn image_url_to_block(p: &Value, path: &str) -> Result<Value> {
    let url = match p.get("image_url") {
        Some(Value::String(s)) => s.as_str(),
        Some(obj) => str_field(obj, "url", &format!("{path}.image_url"))?,
        None => return err(format!("{path}.image_url"), "must be an object with a url"),
    };
    let source = match data_url(url) {
        Some((media_type, data)) => {
            json!({"type": "base64", "media_type": media_type, "data": data})
        }
        None if url.starts_with("data:") => {
            return err(format!("{path}.image_url.url"), "must be a base64 data URL");
        }
        None => json!({"type": "url", "url": url}),
    };
    Ok(json!({"type": "image", "source": source}))
}

fn file_to_block(p: &Value, path: &str) -> Result<Value> {
    let fpath = format!("{path}.file");
    let file = p.get("file").unwrap_or(&Value::Null);
    let Some(file_data) = file.get("file_data").and_then(Value::as_str) else {
        return err(
            format!("{fpath}.file_data"),
            "must be a data URL (files by id have no Anthropic counterpart)",
        );
    };
    let Some((media_type, data)) = data_url(file_data) else {
        return err(format!("{fpath}.file_data"), "must be a base64 data URL");
    };
    let source = json!({"type": "base64", "media_type": media_type, "data": data});
    if media_type.starts_with("image/") {
        return Ok(json!({"type": "image", "source": source}));
    }
    if media_type != "application/pdf" {
        return err(
            format!("{fpath}.file_data"),
            format!("file type {media_type:?} has no Anthropic counterpart (only PDF and images)"),
        );
    }
    let mut block = json!({"type": "document", "source": source});
    if let Some(name) = file.get("filename").and_then(Value::as_str)
        && !name.is_empty()
    {
        block["title"] = name.into();
    }
    Ok(block)
}

/// `(media type, base64 data)` of a `data:<type>;base64,<data>` URL.
pub(crate) fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

fn tools_to_messages(tools: &Value) -> Result<Vec<Value>> {
    let Some(tools) = tools.as_array() else {
        return err("tools", "must be an array");
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.iter().enumerate() {
        let path = format!("tools[{k}]");
        match kind(t) {
            Some("function") => {}
            Some(other) => {
                return err(
                    format!("{path}.type"),
                    format!("tool type {other:?} has no Anthropic counterpart"),
                );
            }
            None => return err(format!("{path}.type"), "must be \"function\""),
        }
        let fpath = format!("{path}.function");
        let function = t.get("function").unwrap_or(&Value::Null);
        let name = str_field(function, "name", &fpath)?;
        let schema = match function.get("parameters") {
            Some(s @ Value::Object(_)) => s.clone(),
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(_) => return err(format!("{fpath}.parameters"), "must be an object"),
        };
        let mut tool = json!({"name": name, "input_schema": schema});
        if let Some(d) = function.get("description").and_then(Value::as_str) {
            tool["description"] = d.into();
        }
        out.push(tool);
    }
    Ok(out)
}

fn tool_choice_to_messages(choice: &Value) -> Result<Value> {
    match choice {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(json!({"type": "auto"})),
            "required" => Ok(json!({"type": "any"})),
            "none" => Ok(json!({"type": "none"})),
            other => err(
                "tool_choice",
                format!("{other:?} has no Anthropic counterpart"),
            ),
        },
        Value::Object(_) => match kind(choice) {
            Some("function") => {
                let function = choice.get("function").unwrap_or(&Value::Null);
                let name = str_field(function, "name", "tool_choice.function")?;
                Ok(json!({"type": "tool", "name": name}))
            }
            Some(other) => err(
                "tool_choice.type",
                format!("{other:?} has no Anthropic counterpart"),
            ),
            None => err("tool_choice.type", "must be \"function\""),
        },
        _ => err("tool_choice", "must be a string or an object"),
    }
}

// ---------------------------------------------------------------------------------------
// Field readers

fn str_field<'a>(v: &'a Value, key: &str, path: &str) -> Result<&'a str> {
    match v.get(key).and_then(Value::as_str) {
        Some(s) => Ok(s),
        None => err(format!("{path}.{key}"), "must be a string"),
    }
}

fn text_of(b: &Value, path: &str) -> Result<String> {
    str_field(b, "text", path).map(str::to_owned)
}

fn positive_int(v: &Value, path: &str) -> Result<u64> {
    match count_of(v) {
        Some(n) if n > 0 => Ok(n),
        _ => err(path, "must be a positive integer"),
    }
}

fn number(v: &Value, path: &str) -> Result<Value> {
    if v.is_number() {
        Ok(v.clone())
    } else {
        err(path, "must be a number")
    }
}

fn strings(v: &Value, path: &str) -> Result<Vec<String>> {
    let Some(items) = v.as_array() else {
        return err(path, "must be an array of strings");
    };
    items
        .iter()
        .enumerate()
        .map(|(k, s)| match s.as_str() {
            Some(s) => Ok(s.to_owned()),
            None => err(format!("{path}[{k}]"), "must be a string"),
        })
        .collect()
}
