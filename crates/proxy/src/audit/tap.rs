//! [`Audited`]: a client stream whose messages the audit reads as they pass: the Query and
//! Parse texts the client sends, the ErrorResponses it receives, the bytes both ways and the
//! transactions ended. It sits on the client's stream, so the transparent relay and the
//! pooled sessions are audited alike, with no change to either.
//!
//! Without a [`Tap`] (audit off) a read or a write costs one `Option` check. With one, the
//! bytes are followed by two [`FrameScanner`]s and only the bodies of the messages audited
//! are copied, at most [`TEXT_LIMIT`] bytes each.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pgbastion_wire::{BodyPiece, Direction, FrameScanner};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::event::{ErrorEvent, Event, Statement};
use super::writer::AuditLog;
use crate::clients::ClientId;

/// The most of a message body an event keeps (the rest is cut, and the event says so).
pub const TEXT_LIMIT: usize = 64 * 1024;

/// Client messages audited: Query, Parse.
const FROM_CLIENT: &[u8] = b"QP";
/// Server messages audited: ErrorResponse.
const TO_CLIENT: &[u8] = b"E";

/// A session's running totals, read when it ends.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) from_client: AtomicU64,
    pub(super) to_client: AtomicU64,
    pub(super) transactions: AtomicU64,
}

/// The audit's view of one client stream.
#[derive(Debug)]
pub struct Tap {
    log: Arc<AuditLog>,
    id: ClientId,
    totals: Arc<Totals>,
    up: FrameScanner,
    down: FrameScanner,
    up_body: Body,
    down_body: Body,
}

impl Tap {
    pub(super) fn new(log: Arc<AuditLog>, id: ClientId, totals: Arc<Totals>) -> Self {
        Self {
            log,
            id,
            totals,
            up: FrameScanner::new(Direction::Frontend),
            down: FrameScanner::new(Direction::Backend),
            up_body: Body::new(FROM_CLIENT),
            down_body: Body::new(TO_CLIENT),
        }
    }

    /// Bytes the client sent.
    pub(super) fn client_sent(&mut self, bytes: &[u8]) {
        self.totals
            .from_client
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let Self {
            log,
            id,
            up,
            up_body,
            ..
        } = self;
        let redact = log.redacts();
        // A length PostgreSQL refuses ends the session; nothing after it is audited.
        let _ = up.feed_observed(bytes, &mut |piece| {
            if let Some((tag, body, truncated)) = up_body.piece(piece) {
                let statement = match tag {
                    b'Q' => Event::Query(Statement::query(&body, truncated, redact)),
                    _ => Event::Parse(Statement::parse(&body, truncated, redact)),
                };
                log.send(*id, statement);
            }
        });
    }

    /// Bytes the client received.
    fn client_received(&mut self, bytes: &[u8]) {
        self.totals
            .to_client
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let Self {
            log,
            id,
            down,
            down_body,
            ..
        } = self;
        let redact = log.redacts();
        let _ = down.feed_observed(bytes, &mut |piece| {
            if let Some((_, body, _)) = down_body.piece(piece) {
                log.send(*id, Event::Error(ErrorEvent::from_body(&body, redact)));
            }
        });
        self.totals
            .transactions
            .store(self.down.idle_ready_count(), Ordering::Relaxed);
    }
}

/// Collects the bodies of the audited message types, up to [`TEXT_LIMIT`] bytes each.
#[derive(Debug)]
struct Body {
    wanted: &'static [u8],
    bytes: Vec<u8>,
    truncated: bool,
}

impl Body {
    fn new(wanted: &'static [u8]) -> Self {
        Self {
            wanted,
            bytes: Vec::new(),
            truncated: false,
        }
    }

    /// Takes a piece; once an audited message is whole, its tag, body and whether the body
    /// was cut.
    fn piece(&mut self, piece: BodyPiece<'_>) -> Option<(u8, Vec<u8>, bool)> {
        if !self.wanted.contains(&piece.tag) {
            return None;
        }
        let room = TEXT_LIMIT.saturating_sub(self.bytes.len());
        let kept = piece.bytes.get(..room).unwrap_or(piece.bytes);
        self.truncated |= kept.len() < piece.bytes.len();
        self.bytes.extend_from_slice(kept);
        if !piece.last {
            return None;
        }
        let body = std::mem::take(&mut self.bytes);
        Some((piece.tag, body, std::mem::take(&mut self.truncated)))
    }
}

/// A client stream, audited when it has a [`Tap`].
#[derive(Debug)]
pub struct Audited<S> {
    inner: S,
    tap: Option<Box<Tap>>,
}

impl<S> Audited<S> {
    /// `inner`, read by `tap` (if any) from a message boundary on.
    pub fn new(inner: S, tap: Option<Tap>) -> Self {
        Self {
            inner,
            tap: tap.map(Box::new),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Audited<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(tap) = &mut this.tap {
            tap.client_sent(&buf.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Audited<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        if let Some(tap) = &mut this.tap {
            tap.client_received(&buf[..written]);
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(tag: u8, bytes: &[u8], last: bool) -> BodyPiece<'_> {
        BodyPiece { tag, bytes, last }
    }

    #[test]
    fn bodies_of_audited_messages_are_kept_to_the_limit_and_others_ignored() {
        let mut body = Body::new(FROM_CLIENT);
        assert_eq!(body.piece(piece(b'B', b"x", true)), None);
        let big = vec![b'a'; TEXT_LIMIT];
        assert_eq!(body.piece(piece(b'Q', &big[..10], false)), None);
        let (tag, kept, truncated) = body.piece(piece(b'Q', &big, true)).unwrap();
        assert_eq!((tag, kept.len(), truncated), (b'Q', TEXT_LIMIT, true));
        let (_, kept, truncated) = body.piece(piece(b'P', b"\0SELECT 1\0", true)).unwrap();
        assert_eq!((kept.as_slice(), truncated), (&b"\0SELECT 1\0"[..], false));
    }
}
