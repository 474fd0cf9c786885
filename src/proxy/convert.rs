//! What crosses the API boundary on one attempt (contract §10): when the client and the
//! target speak the same API (or the target is the in-process mock, which speaks all of
//! them) the request passes through with only `model` rewritten; when they differ, the
//! request, the answer (errors included) and the stream are translated by
//! [`crate::translate`].
//!
//! Invariants: a passthrough never re-encodes a byte; a translation is decided per target,
//! so one chain can mix `openai` and `anthropic` providers; a request that cannot be
//! translated for its target is the client's error (400 `invalid_request` naming the field).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, OutboundBody, UpstreamBody};
use crate::config::ProviderKind;
use crate::error::{Api, GatewayError};
use crate::translate::{self, ChatToMessagesStream, MessagesToChatStream};

/// How one attempt crosses the API boundary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Same API on both sides: bytes pass through.
    Pass,
    /// An OpenAI chat request to an Anthropic provider.
    ChatToMessages,
    /// An Anthropic Messages request to an OpenAI-compatible provider.
    MessagesToChat,
}

/// Decides the conversion for a client request on `path` (with `/v1` removed) to a
/// provider of `kind`.
pub fn plan(client: Api, path: &str, kind: ProviderKind) -> Result<Conversion, GatewayError> {
    let endpoint = path.split('?').next().unwrap_or(path);
    match (client, kind) {
        (_, ProviderKind::Mock) => Ok(Conversion::Pass),
        (Api::OpenAi, ProviderKind::Openai) | (Api::Anthropic, ProviderKind::Anthropic) => {
            Ok(Conversion::Pass)
        }
        (Api::OpenAi, ProviderKind::Anthropic) if endpoint == "/chat/completions" => {
            Ok(Conversion::ChatToMessages)
        }
        (Api::OpenAi, ProviderKind::Anthropic) => Err(GatewayError::Untranslatable(format!(
            "POST /v1{endpoint} has no Anthropic Messages counterpart; route it to an OpenAI-compatible provider"
        ))),
        (Api::Anthropic, ProviderKind::Openai) if endpoint == "/messages" => {
            Ok(Conversion::MessagesToChat)
        }
        (Api::Anthropic, ProviderKind::Openai) => Err(GatewayError::Untranslatable(format!(
            "POST /v1{endpoint} can only be sent to a kind = \"anthropic\" provider"
        ))),
    }
}

/// The upstream path for a request on client `path` (with `/v1` removed): an Anthropic
/// provider's `base_url` has no API prefix, so its paths start with `/v1`.
pub fn upstream_path(conv: Conversion, path: &str, kind: ProviderKind) -> String {
    let path = match conv {
        Conversion::Pass => path,
        Conversion::ChatToMessages => "/messages",
        Conversion::MessagesToChat => "/chat/completions",
    };
    match kind {
        ProviderKind::Anthropic => format!("/v1{path}"),
        _ => path.to_string(),
    }
}

/// The request body for the target: `model` spliced in place, or the whole request
/// translated for `model`.
pub fn request_body(
    conv: Conversion,
    bytes: &Bytes,
    model_range: &std::ops::Range<usize>,
    model_json: &Bytes,
    model: &str,
) -> Result<OutboundBody, GatewayError> {
    let translated = match conv {
        Conversion::Pass => return Ok(crate::payload::rewrite(bytes, model_range, model_json)),
        Conversion::ChatToMessages => translate::chat_to_messages(bytes, model),
        Conversion::MessagesToChat => translate::messages_to_chat(bytes, model),
    };
    translated
        .map(|b| OutboundBody::whole(Bytes::from(b)))
        .map_err(|e| GatewayError::Untranslatable(e.to_string()))
}

/// A whole answer (success or error) in the client's API. `Err` when a success cannot be
/// translated: the provider's answer is unusable for this client.
pub fn answer_body(
    conv: Conversion,
    status: u16,
    body: &Bytes,
    requested_model: &str,
    created: u64,
) -> Result<Bytes, String> {
    let ok = (200..300).contains(&status);
    let out = match (conv, ok) {
        (Conversion::Pass, _) => return Ok(body.clone()),
        (Conversion::ChatToMessages, true) => {
            translate::messages_to_chat_response(body, requested_model, created)
                .map_err(|e| e.to_string())?
        }
        (Conversion::ChatToMessages, false) => translate::error_to_chat(status, body),
        (Conversion::MessagesToChat, true) => {
            translate::chat_to_messages_response(body, requested_model)
                .map_err(|e| e.to_string())?
        }
        (Conversion::MessagesToChat, false) => translate::error_to_messages(status, body),
    };
    Ok(Bytes::from(out))
}

/// A stream translator for the conversion, if it needs one.
pub fn stream_translator(
    conv: Conversion,
    requested_model: &str,
    created: u64,
) -> Option<Translator> {
    match conv {
        Conversion::Pass => None,
        Conversion::ChatToMessages => Some(Translator::ToChat(MessagesToChatStream::new(
            requested_model,
            created,
        ))),
        Conversion::MessagesToChat => Some(Translator::ToMessages(ChatToMessagesStream::new(
            requested_model,
        ))),
    }
}

/// A stream translation state machine, either way.
#[derive(Debug)]
pub enum Translator {
    /// Anthropic events to OpenAI chunks.
    ToChat(MessagesToChatStream),
    /// OpenAI chunks to Anthropic events.
    ToMessages(ChatToMessagesStream),
}

impl Translator {
    /// Translates the next upstream bytes.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Translator::ToChat(t) => t.feed(chunk),
            Translator::ToMessages(t) => t.feed(chunk),
        }
    }

    /// The translated ending once the upstream body ended.
    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            Translator::ToChat(t) => t.finish(),
            Translator::ToMessages(t) => t.finish(),
        }
    }
}

/// An upstream stream seen through a [`Translator`]: what the client's API expects, event
/// for event. Errors of the upstream body pass through (the guarded stream turns them into
/// the client's error event).
pub struct TranslatedBody {
    inner: UpstreamBody,
    tr: Translator,
    ended: bool,
}

impl TranslatedBody {
    /// `inner`, translated from where `tr` stands (it may already have seen a preamble).
    pub fn new(inner: UpstreamBody, tr: Translator) -> Self {
        Self {
            inner,
            tr,
            ended: false,
        }
    }
}

impl Body for TranslatedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    let out = this.tr.feed(&data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    let out = this.tr.finish();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        use Conversion::*;
        let p = |api, path, kind| plan(api, path, kind);
        assert_eq!(
            p(Api::OpenAi, "/chat/completions", ProviderKind::Openai),
            Ok(Pass)
        );
        assert_eq!(
            p(Api::Anthropic, "/messages", ProviderKind::Anthropic),
            Ok(Pass)
        );
        assert_eq!(p(Api::Anthropic, "/messages", ProviderKind::Mock), Ok(Pass));
        assert_eq!(
            p(
                Api::OpenAi,
                "/chat/completions?x=1",
                ProviderKind::Anthropic
            ),
            Ok(ChatToMessages)
        );
        assert_eq!(
            p(Api::Anthropic, "/messages", ProviderKind::Openai),
            Ok(MessagesToChat)
        );
        assert!(p(Api::OpenAi, "/embeddings", ProviderKind::Anthropic).is_err());
        assert!(
            p(
                Api::Anthropic,
                "/messages/count_tokens",
                ProviderKind::Openai
            )
            .is_err()
        );
        assert_eq!(
            upstream_path(Pass, "/messages", ProviderKind::Anthropic),
            "/v1/messages"
        );
        assert_eq!(
            upstream_path(Pass, "/chat/completions?a=b", ProviderKind::Openai),
            "/chat/completions?a=b"
        );
        assert_eq!(
            upstream_path(ChatToMessages, "/chat/completions", ProviderKind::Anthropic),
            "/v1/messages"
        );
        assert_eq!(
            upstream_path(MessagesToChat, "/messages", ProviderKind::Openai),
            "/chat/completions"
        );
    }
}
