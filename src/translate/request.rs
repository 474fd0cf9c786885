//! Request bodies, both ways: an Anthropic `/v1/messages` request as an OpenAI
//! `/v1/chat/completions` request ([`messages_to_chat`]) and the reverse
//! ([`chat_to_messages`]), each for the upstream model it is sent to.
//!
//! Both directions read the body as a [`Node`] that borrows its strings, and write the
//! translation from `Node`s borrowing the same strings; objects keep the client's key order
//! (a `tool_use.input` becomes `arguments` with its keys as the client sent them).
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

use std::borrow::Cow;

use serde_json::{Value, json};

use super::node::{Fields, NULL, Node, obj};
use super::{TranslateError, parse_fields, to_bytes};

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

/// An Anthropic `/v1/messages` request body as an OpenAI `/v1/chat/completions` request for
/// upstream model `model`.
///
/// The request is read as a [`Node`] (borrowing its keys and strings) and the chat request is
/// written from one that borrows the same strings: a long conversation is neither copied
/// into a tree of owned values nor copied again into the output tree.
pub fn messages_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>> {
    let req = parse_fields(body)?;
    let mut out = Fields::default();
    out.insert("model", model);

    let mut messages = Vec::new();
    if let Some(system) = req.field("system")
        && let Some(text) = system_to_chat(system)?
    {
        messages.push(obj! {"role" => "system", "content" => text});
    }
    let Some(input) = req.field("messages").and_then(Node::as_array) else {
        return err("messages", "must be an array of messages");
    };
    for (i, m) in input.iter().enumerate() {
        message_to_chat(i, m, &mut messages)?;
    }
    out.insert("messages", messages);

    if let Some(v) = req.field("max_tokens") {
        out.insert("max_tokens", positive_int(v, "max_tokens")?);
    }
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.field(key) {
            out.insert(key, number(v, key)?);
        }
    }
    if let Some(v) = req.field("stop_sequences") {
        let stops = strings(v, "stop_sequences")?;
        if !stops.is_empty() {
            out.insert("stop", stops);
        }
    }
    if let Some(v) = req.field("stream") {
        let stream = boolean(v, "stream")?;
        out.insert("stream", stream);
        if stream {
            // OpenAI reports usage in a stream only when asked, and the translated stream
            // needs it for `message_delta.usage` (and the gateway for its token counts).
            out.insert("stream_options", obj! {"include_usage" => true});
        }
    }
    if let Some(user) = req
        .field("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Node::as_cow)
    {
        out.insert("user", user);
    }
    if let Some(servers) = req.field("mcp_servers")
        && servers.as_array().is_none_or(|a| !a.is_empty())
    {
        return err("mcp_servers", "MCP servers have no OpenAI counterpart");
    }

    let tools = match req.field("tools") {
        Some(v) => tools_to_chat(v)?,
        None => Vec::new(),
    };
    if !tools.is_empty() {
        out.insert("tools", tools);
        if let Some(choice) = req.field("tool_choice") {
            let (choice, parallel) = tool_choice_to_chat(choice)?;
            out.insert("tool_choice", choice);
            if !parallel {
                out.insert("parallel_tool_calls", false);
            }
        }
    }
    if let Some(format) = req.field("output_format") {
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
            Some("tool_result") => tool_messages.push(tool_result_to_chat(b, &path, &mut carried)?),
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

fn assistant_to_chat<'a>(path: PathFn, blocks: &[Node<'a>], out: &mut Vec<Node<'a>>) -> Result<()> {
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
    let mut msg = Fields::default();
    msg.insert("role", "assistant");
    msg.insert("content", content);
    if !calls.is_empty() {
        msg.insert("tool_calls", calls);
    }
    out.push(Node::Obj(msg));
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
            join(texts, TOOL_RESULT_JOIN)
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
                            parts.push(obj! {"type" => "text", "text" => text_of(inner, &path)?});
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
        let parameters = schema(t.get("input_schema"), &|| {
            format!("{}.input_schema", path())
        })?;
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
                "json_schema" => obj! {
                    "name" => "output",
                    "schema" => schema.clone(),
                    "strict" => true,
                },
            }),
            _ => err("output_format.schema", "must be an object"),
        },
        _ => err("output_format.type", "must be \"json_schema\""),
    }
}

// ---------------------------------------------------------------------------------------
// OpenAI Chat Completions → Anthropic Messages

/// An OpenAI `/v1/chat/completions` request body as an Anthropic `/v1/messages` request for
/// upstream model `model`; `max_tokens` is [`DEFAULT_MAX_TOKENS`] when the request set none.
///
/// Read and written as [`Node`]s, like [`messages_to_chat`].
pub fn chat_to_messages(body: &[u8], model: &str) -> Result<Vec<u8>> {
    let req = parse_fields(body)?;
    refuse_chat_only_features(&req)?;

    let Some(input) = req.field("messages").and_then(Node::as_array) else {
        return err("messages", "must be an array of messages");
    };
    let mut system = Vec::new();
    let mut system_string = None;
    let mut system_messages = 0usize;
    let mut turns: Vec<Turn> = Vec::new();
    for (i, m) in input.iter().enumerate() {
        let path = || format!("messages[{i}]");
        let Some(m) = m.as_object() else {
            return err(path(), "must be an object");
        };
        let content = m.get("content").unwrap_or(&NULL);
        match m.get("role").and_then(Node::as_str) {
            Some("system" | "developer") => {
                system_messages += 1;
                if let Node::Str(s) = content {
                    system_string = Some(s.clone());
                }
                system.extend(text_parts_to_blocks(content, &path)?);
            }
            Some("user") => push_turn(&mut turns, "user", user_to_blocks(content, &path)?),
            Some("assistant") => push_turn(&mut turns, "assistant", assistant_to_blocks(m, &path)?),
            Some("tool") => {
                let Some(id) = m.get("tool_call_id").and_then(Node::as_cow) else {
                    return err(format!("{}.tool_call_id", path()), "must be a string");
                };
                let content = match content {
                    Node::Str(s) => Node::Str(s.clone()),
                    Node::Null => Node::from(""),
                    _ => text_parts_to_blocks(content, &path)?.into(),
                };
                let block =
                    obj! {"type" => "tool_result", "tool_use_id" => id, "content" => content};
                push_turn(&mut turns, "user", Content::Blocks(vec![block]));
            }
            Some("function") => {
                return err(
                    format!("{}.role", path()),
                    "legacy \"function\" messages have no Anthropic counterpart; use tools",
                );
            }
            Some(other) => {
                return err(
                    format!("{}.role", path()),
                    format!("{other:?} is not a chat role"),
                );
            }
            None => return err(format!("{}.role", path()), "must be a string"),
        }
    }

    let mut out = Fields::default();
    out.insert("model", model);
    let given = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| req.field(k).map(|v| (k, v)));
    let max_tokens = match given {
        Some((key, v)) => positive_int(v, key)?,
        None => DEFAULT_MAX_TOKENS,
    };
    out.insert("max_tokens", max_tokens);
    match (system_messages, system_string) {
        (1, Some(s)) if !s.is_empty() => out.insert("system", s),
        _ if !system.is_empty() => out.insert("system", system),
        _ => {}
    }
    out.insert(
        "messages",
        turns.into_iter().map(Turn::into_node).collect::<Vec<_>>(),
    );

    if let Some(v) = req.field("temperature") {
        let Node::Num(t) = v else {
            return err("temperature", "must be a number");
        };
        out.insert("temperature", t.as_f64().unwrap_or(1.0).clamp(0.0, 1.0));
    }
    if let Some(v) = req.field("top_p") {
        out.insert("top_p", number(v, "top_p")?);
    }
    if let Some(v) = req.field("stop") {
        let stops = match v {
            Node::Str(_) => vec![v.clone()],
            _ => strings(v, "stop")?,
        };
        if !stops.is_empty() {
            out.insert("stop_sequences", stops);
        }
    }
    if let Some(v) = req.field("stream") {
        let stream = boolean(v, "stream")?;
        out.insert("stream", stream);
    }
    // `safety_identifier` is OpenAI's newer name for what `user` said.
    if let Some(user) = req
        .field("user")
        .or_else(|| req.field("safety_identifier"))
        .and_then(Node::as_cow)
    {
        out.insert("metadata", obj! {"user_id" => user});
    }

    let tools = match req.field("tools") {
        Some(v) => tools_to_messages(v)?,
        None => Vec::new(),
    };
    if !tools.is_empty() {
        out.insert("tools", tools);
        let mut choice = match req.field("tool_choice") {
            Some(c) => Some(tool_choice_to_messages(c)?),
            None => None,
        };
        if req.field("parallel_tool_calls").and_then(Node::as_bool) == Some(false) {
            let c = choice.get_or_insert_with(|| obj! {"type" => "auto"});
            if c.kind() != Some("none")
                && let Node::Obj(fields) = c
            {
                fields.insert("disable_parallel_tool_use", true);
            }
        }
        if let Some(c) = choice {
            out.insert("tool_choice", c);
        }
    }
    to_bytes(&Node::Obj(out), body.len())
}

/// Fields whose loss would change what the client gets back.
fn refuse_chat_only_features(req: &Fields) -> Result<()> {
    if let Some(n) = req.field("n").and_then(Node::count)
        && n > 1
    {
        return err(
            "n",
            format!("{n} choices have no Anthropic counterpart (only 1)"),
        );
    }
    if req.field("logprobs").and_then(Node::as_bool) == Some(true) {
        return err(
            "logprobs",
            "log probabilities have no Anthropic counterpart",
        );
    }
    if req
        .field("top_logprobs")
        .and_then(Node::count)
        .is_some_and(|n| n > 0)
    {
        return err(
            "top_logprobs",
            "log probabilities have no Anthropic counterpart",
        );
    }
    if let Some(format) = req.field("response_format") {
        match format.kind() {
            Some("text") | None => {}
            Some(t) => {
                return err(
                    "response_format.type",
                    format!("{t:?} has no Anthropic counterpart"),
                );
            }
        }
    }
    if req.field("audio").is_some() {
        return err("audio", "audio output has no Anthropic counterpart");
    }
    if let Some(m) = req.field("modalities").and_then(Node::as_array)
        && m.iter().any(|x| x.as_str() != Some("text"))
    {
        return err("modalities", "only \"text\" has an Anthropic counterpart");
    }
    for legacy in ["functions", "function_call"] {
        if req.field(legacy).is_some() {
            return err(
                legacy,
                "legacy function calling has no Anthropic counterpart; use tools",
            );
        }
    }
    if req.field("web_search_options").is_some() {
        return err(
            "web_search_options",
            "web search has no Anthropic counterpart here",
        );
    }
    if req
        .field("logit_bias")
        .and_then(Node::as_object)
        .is_some_and(|m| !m.0.is_empty())
    {
        return err("logit_bias", "token biases have no Anthropic counterpart");
    }
    Ok(())
}

/// The content of one Anthropic turn while turns are merged.
enum Content<'a> {
    /// A single message's string content, kept a string if nothing merges into it.
    Text(Cow<'a, str>),
    Blocks(Vec<Node<'a>>),
}

impl<'a> Content<'a> {
    fn into_blocks(self) -> Vec<Node<'a>> {
        match self {
            Content::Text(s) => vec![obj! {"type" => "text", "text" => s}],
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

struct Turn<'a> {
    role: &'static str,
    content: Content<'a>,
}

impl<'a> Turn<'a> {
    fn into_node(self) -> Node<'a> {
        let content = match self.content {
            Content::Text(s) => Node::Str(s),
            Content::Blocks(mut blocks) => {
                if self.role == "user" {
                    // Anthropic reads tool results only at the head of a user turn: those of
                    // the messages merged into it go first, each kind in order. A stable
                    // sort, linear on blocks already in order (a turn of one message).
                    blocks.sort_by_key(|b| b.kind() != Some("tool_result"));
                }
                Node::Arr(blocks)
            }
        };
        obj! {"role" => self.role, "content" => content}
    }
}

/// Appends a turn, merged into the last one when it has the same role.
fn push_turn<'a>(turns: &mut Vec<Turn<'a>>, role: &'static str, content: Content<'a>) {
    if content.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last.role == role => {
            let prev = std::mem::replace(&mut last.content, Content::Blocks(Vec::new()));
            let mut blocks = prev.into_blocks();
            blocks.extend(content.into_blocks());
            last.content = Content::Blocks(blocks);
        }
        _ => turns.push(Turn { role, content }),
    }
}

/// System/developer or tool content (a string or text parts) as text blocks, empty text
/// skipped.
fn text_parts_to_blocks<'a>(content: &Node<'a>, path: PathFn) -> Result<Vec<Node<'a>>> {
    match content {
        Node::Str(s) if s.is_empty() => Ok(Vec::new()),
        Node::Str(s) => Ok(vec![obj! {"type" => "text", "text" => s.clone()}]),
        Node::Arr(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, p) in parts.iter().enumerate() {
                let path = || format!("{}.content[{j}]", path());
                match p.kind() {
                    Some("text") => {
                        let t = text_of(p, &path)?;
                        if !t.is_empty() {
                            blocks.push(obj! {"type" => "text", "text" => t});
                        }
                    }
                    Some(other) => {
                        return err(path(), format!("part type {other:?} is not allowed here"));
                    }
                    None => return err(path(), "must be a content part with a type"),
                }
            }
            Ok(blocks)
        }
        Node::Null => Ok(Vec::new()),
        _ => err(
            format!("{}.content", path()),
            "must be a string or an array of parts",
        ),
    }
}

fn user_to_blocks<'a>(content: &Node<'a>, path: PathFn) -> Result<Content<'a>> {
    let parts = match content {
        Node::Str(s) => return Ok(Content::Text(s.clone())),
        Node::Arr(parts) => parts,
        _ => {
            return err(
                format!("{}.content", path()),
                "must be a string or an array of parts",
            );
        }
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        let path = || format!("{}.content[{j}]", path());
        match p.kind() {
            Some("text") => {
                let t = text_of(p, &path)?;
                if !t.is_empty() {
                    blocks.push(obj! {"type" => "text", "text" => t});
                }
            }
            Some("image_url") => blocks.push(image_url_to_block(p, &path)?),
            Some("file") => blocks.push(file_to_block(p, &path)?),
            Some(other) => {
                return err(
                    path(),
                    format!("part type {other:?} has no Anthropic counterpart"),
                );
            }
            None => return err(path(), "must be a content part with a type"),
        }
    }
    Ok(Content::Blocks(blocks))
}

fn assistant_to_blocks<'a>(m: &Fields<'a>, path: PathFn) -> Result<Content<'a>> {
    if m.field("function_call").is_some() {
        return err(
            format!("{}.function_call", path()),
            "legacy function calling has no Anthropic counterpart; use tool_calls",
        );
    }
    if m.field("audio").is_some() {
        return err(
            format!("{}.audio", path()),
            "audio has no Anthropic counterpart",
        );
    }
    let mut texts = Vec::new();
    match m.get("content") {
        None | Some(Node::Null) => {}
        Some(Node::Str(s)) => texts.push(s.clone()),
        Some(Node::Arr(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let path = || format!("{}.content[{j}]", path());
                match p.kind() {
                    Some("text") => texts.push(text_of(p, &path)?),
                    Some("refusal") => texts.push(str_field(p, "refusal", &path)?),
                    Some(other) => {
                        return err(
                            path(),
                            format!("part type {other:?} has no Anthropic counterpart"),
                        );
                    }
                    None => return err(path(), "must be a content part with a type"),
                }
            }
        }
        Some(_) => {
            return err(
                format!("{}.content", path()),
                "must be a string or an array of parts",
            );
        }
    }
    texts.retain(|t| !t.is_empty());
    let mut text = join(texts, "");
    if text.is_empty()
        && let Some(r) = m.field("refusal").and_then(Node::as_cow)
    {
        text = r;
    }
    let calls = match m.field("tool_calls") {
        None => &[][..],
        Some(Node::Arr(calls)) => calls.as_slice(),
        Some(_) => return err(format!("{}.tool_calls", path()), "must be an array"),
    };
    if calls.is_empty() {
        return Ok(Content::Text(text));
    }
    let mut blocks = Vec::with_capacity(calls.len() + 1);
    if !text.is_empty() {
        blocks.push(obj! {"type" => "text", "text" => text});
    }
    for (j, c) in calls.iter().enumerate() {
        blocks.push(tool_call_to_block(c, &|| {
            format!("{}.tool_calls[{j}]", path())
        })?);
    }
    Ok(Content::Blocks(blocks))
}

fn tool_call_to_block<'a>(c: &Node<'a>, path: PathFn) -> Result<Node<'a>> {
    match c.kind() {
        Some("function") | None => {}
        Some(other) => {
            return err(
                format!("{}.type", path()),
                format!("tool call type {other:?} has no Anthropic counterpart"),
            );
        }
    }
    let id = str_field(c, "id", path)?;
    let fpath = || format!("{}.function", path());
    let function = c.get("function").unwrap_or(&NULL);
    let name = str_field(function, "name", &fpath)?;
    let arguments = function
        .get("arguments")
        .and_then(Node::as_str)
        .unwrap_or("");
    let input = parse_arguments(arguments)
        .map_err(|message| TranslateError::new(format!("{}.arguments", fpath()), message))?;
    Ok(obj! {"type" => "tool_use", "id" => id, "name" => name, "input" => Node::from(input)})
}

fn image_url_to_block<'a>(p: &Node<'a>, path: PathFn) -> Result<Node<'a>> {
    let ipath = || format!("{}.image_url", path());
    let url = match p.get("image_url") {
        Some(Node::Str(s)) => s.clone(),
        Some(obj) => str_field(obj, "url", &ipath)?,
        None => return err(ipath(), "must be an object with a url"),
    };
    let source = match split_data_url(&url) {
        Some((media_type, data)) => {
            obj! {"type" => "base64", "media_type" => media_type, "data" => data}
        }
        None if url.starts_with("data:") => {
            return err(format!("{}.url", ipath()), "must be a base64 data URL");
        }
        None => obj! {"type" => "url", "url" => url},
    };
    Ok(obj! {"type" => "image", "source" => source})
}

/// `(media type, base64 data)` of a `data:` URL, still borrowed from the request where the
/// URL was.
fn split_data_url<'a>(url: &Cow<'a, str>) -> Option<(Cow<'a, str>, Cow<'a, str>)> {
    match url {
        Cow::Borrowed(url) => {
            let (m, d) = data_url(url)?;
            Some((Cow::Borrowed(m), Cow::Borrowed(d)))
        }
        Cow::Owned(url) => {
            let (m, d) = data_url(url)?;
            Some((Cow::Owned(m.to_owned()), Cow::Owned(d.to_owned())))
        }
    }
}

fn file_to_block<'a>(p: &Node<'a>, path: PathFn) -> Result<Node<'a>> {
    let fpath = || format!("{}.file", path());
    let file = p.get("file").unwrap_or(&NULL);
    let Some(file_data) = file.get("file_data").and_then(Node::as_cow) else {
        return err(
            format!("{}.file_data", fpath()),
            "must be a data URL (files by id have no Anthropic counterpart)",
        );
    };
    let Some((media_type, data)) = split_data_url(&file_data) else {
        return err(
            format!("{}.file_data", fpath()),
            "must be a base64 data URL",
        );
    };
    let is_image = media_type.starts_with("image/");
    let is_pdf = media_type == "application/pdf";
    if !is_image && !is_pdf {
        return err(
            format!("{}.file_data", fpath()),
            format!("file type {media_type:?} has no Anthropic counterpart (only PDF and images)"),
        );
    }
    let source = obj! {"type" => "base64", "media_type" => media_type, "data" => data};
    if is_image {
        return Ok(obj! {"type" => "image", "source" => source});
    }
    let mut block = Fields::default();
    block.insert("type", "document");
    block.insert("source", source);
    if let Some(name) = file.get("filename").and_then(Node::as_cow)
        && !name.is_empty()
    {
        block.insert("title", name);
    }
    Ok(Node::Obj(block))
}

fn tools_to_messages<'a>(tools: &Node<'a>) -> Result<Vec<Node<'a>>> {
    let Some(tools) = tools.as_array() else {
        return err("tools", "must be an array");
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.iter().enumerate() {
        let path = || format!("tools[{k}]");
        match t.kind() {
            Some("function") => {}
            Some(other) => {
                return err(
                    format!("{}.type", path()),
                    format!("tool type {other:?} has no Anthropic counterpart"),
                );
            }
            None => return err(format!("{}.type", path()), "must be \"function\""),
        }
        let fpath = || format!("{}.function", path());
        let function = t.get("function").unwrap_or(&NULL);
        let name = str_field(function, "name", &fpath)?;
        let schema = schema(function.get("parameters"), &|| {
            format!("{}.parameters", fpath())
        })?;
        let mut tool = Fields::default();
        tool.insert("name", name);
        tool.insert("input_schema", schema);
        if let Some(d) = function.get("description").and_then(Node::as_cow) {
            tool.insert("description", d);
        }
        out.push(Node::Obj(tool));
    }
    Ok(out)
}

fn tool_choice_to_messages<'a>(choice: &Node<'a>) -> Result<Node<'a>> {
    match choice {
        Node::Str(s) => match &**s {
            "auto" => Ok(obj! {"type" => "auto"}),
            "required" => Ok(obj! {"type" => "any"}),
            "none" => Ok(obj! {"type" => "none"}),
            other => err(
                "tool_choice",
                format!("{other:?} has no Anthropic counterpart"),
            ),
        },
        Node::Obj(_) => match choice.kind() {
            Some("function") => {
                let function = choice.get("function").unwrap_or(&NULL);
                let name = str_field(function, "name", &|| "tool_choice.function".to_owned())?;
                Ok(obj! {"type" => "tool", "name" => name})
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

/// `(media type, base64 data)` of a `data:<type>;base64,<data>` URL.
fn data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    Some((media_type, data))
}

// ---------------------------------------------------------------------------------------
// Field readers

/// A JSON path, built only when an error names it.
type PathFn<'p> = &'p dyn Fn() -> String;

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

/// A tool's JSON schema, either way: an object as it stands; none means no parameters.
fn schema<'a>(v: Option<&Node<'a>>, path: PathFn) -> Result<Node<'a>> {
    match v {
        Some(s @ Node::Obj(_)) => Ok(s.clone()),
        None | Some(Node::Null) => Ok(obj! {"type" => "object", "properties" => Fields::default()}),
        Some(_) => err(path(), "must be an object"),
    }
}

fn boolean(v: &Node, path: &str) -> Result<bool> {
    v.as_bool()
        .map_or_else(|| err(path, "must be a boolean"), Ok)
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

/// Pieces of text joined by `sep`; a single piece stays borrowed, none is empty.
fn join<'a>(mut pieces: Vec<Cow<'a, str>>, sep: &str) -> Cow<'a, str> {
    if pieces.len() <= 1 {
        return pieces.pop().unwrap_or(Cow::Borrowed(""));
    }
    Cow::Owned(pieces.join(sep))
}
