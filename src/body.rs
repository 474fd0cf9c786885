//! The three body types of a proxied exchange:
//!
//! - [`OutboundBody`]: the request body sent upstream, the client's bytes with only the
//!   `model` value replaced, sent as up to three zero-copy slices (no re-serialisation);
//! - [`UpstreamBody`]: what a provider answers with, from the network or the in-process mock;
//! - [`ResponseBody`]: what the client gets, a buffered body or a guarded stream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Boxed error of body streams.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body behind a box: the in-process mock's answers, and the guarded streams the proxy
/// hands to clients. Boxing keeps this module free of the layers that make such bodies.
pub type BoxBody = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// The upstream request body: the client's bytes, spliced around a new `model` value.
#[derive(Debug, Clone, Default)]
pub struct OutboundBody {
    parts: [Bytes; 3],
    next: usize,
}

impl OutboundBody {
    /// A body of one piece.
    pub fn whole(b: Bytes) -> Self {
        Self {
            parts: [b, Bytes::new(), Bytes::new()],
            next: 0,
        }
    }

    /// `head ++ middle ++ tail`, without copying.
    pub fn spliced(head: Bytes, middle: Bytes, tail: Bytes) -> Self {
        Self {
            parts: [head, middle, tail],
            next: 0,
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts[self.next..].iter().map(Bytes::len).sum()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole body in one buffer (for the in-process mock, which must parse it).
    pub fn to_bytes(&self) -> Bytes {
        let rest = &self.parts[self.next..];
        match rest.iter().filter(|p| !p.is_empty()).count() {
            0 => Bytes::new(),
            1 => rest
                .iter()
                .find(|p| !p.is_empty())
                .cloned()
                .unwrap_or_default(),
            _ => Bytes::from(rest.concat()),
        }
    }
}

impl Body for OutboundBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        while self.next < 3 {
            let i = self.next;
            self.next += 1;
            let part = std::mem::take(&mut self.parts[i]);
            if !part.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(part))));
            }
        }
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len() as u64)
    }
}

/// A provider's response body.
pub enum UpstreamBody {
    /// From the network.
    Http(Incoming),
    /// From the in-process mock provider.
    Boxed(BoxBody),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Http(b) => f.debug_tuple("Http").field(b).finish(),
            Self::Boxed(_) => f.write_str("Boxed"),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Http(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Boxed(b) => b.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Http(b) => b.is_end_stream(),
            Self::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Http(b) => b.size_hint(),
            Self::Boxed(b) => b.size_hint(),
        }
    }
}

/// The body the client receives.
pub enum ResponseBody {
    /// A whole body, sent at once.
    Full(Option<Bytes>),
    /// A stream passed through chunk by chunk.
    Stream(BoxBody),
}

impl ResponseBody {
    /// A whole body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self::Full((!b.is_empty()).then_some(b))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full(b) => f.debug_tuple("Full").field(b).finish(),
            Self::Stream(_) => f.write_str("Stream"),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(s) => s.size_hint(),
        }
    }
}

/// Why reading a whole body failed.
#[derive(Debug)]
pub enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// No frame for the idle timeout.
    Idle,
    /// The deadline passed.
    Deadline,
    /// The body stream failed.
    Body(BoxError),
}

/// `now + d`, with `d` clamped to [`crate::config::MAX_DURATION`]: `Instant + Duration`
/// panics on overflow, and the durations added here come from the config or from outside.
pub fn after(now: tokio::time::Instant, d: std::time::Duration) -> tokio::time::Instant {
    now + d.min(crate::config::MAX_DURATION)
}

/// Reads a whole body, at most `max` bytes, with at most `idle` between frames and an
/// optional overall `deadline`. A body that arrives in one frame is not copied.
pub async fn read_to_bytes<B>(
    mut body: B,
    max: u64,
    idle: std::time::Duration,
    deadline: Option<tokio::time::Instant>,
) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    use http_body_util::BodyExt;
    if body.size_hint().lower() > max {
        return Err(ReadError::TooLarge);
    }
    let mut first: Option<Bytes> = None;
    let mut rest: Vec<u8> = Vec::new();
    let mut len: u64 = 0;
    loop {
        let mut until = after(tokio::time::Instant::now(), idle);
        if let Some(d) = deadline {
            until = until.min(d);
        }
        let frame = match tokio::time::timeout_at(until, body.frame()).await {
            Err(_) => {
                return Err(match deadline {
                    Some(d) if tokio::time::Instant::now() >= d => ReadError::Deadline,
                    _ => ReadError::Idle,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Body(e.into())),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len() as u64;
        if len > max {
            return Err(ReadError::TooLarge);
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    // A declared length (bounded by `max` above) is reserved exactly once:
                    // grown by doubling, a 150 KiB body would hold 256 KiB until it is sent.
                    let hint = body.size_hint().lower().saturating_add(len);
                    let want = usize::try_from(hint.min(max)).unwrap_or(0);
                    rest.reserve_exact(want.max(len as usize));
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(rest)))
}
