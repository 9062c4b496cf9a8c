//! [`Audited`]: a client stream whose messages the audit reads as they pass: the Query and
//! Parse texts the client sends, the ErrorResponses it receives, the bytes both ways and the
//! transactions ended. It sits on the client's stream ([`Observed`]), so the transparent
//! relay and the pooled sessions are audited alike, with no change to either.
//!
//! Without a [`Tap`] (audit off) a read or a write costs one `Option` check. With one, the
//! bytes are followed by two [`FrameScanner`]s and only the bodies of the messages audited
//! are copied, at most [`TEXT_LIMIT`] bytes each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pgbastion_wire::{BodyPiece, Direction, FrameScanner};

use super::event::{ErrorEvent, Event, Statement};
use super::writer::AuditLog;
use crate::clients::ClientId;
use crate::observed::{Observed, Observer};

/// The most of a message body an event keeps (the rest is cut, and the event says so).
pub const TEXT_LIMIT: usize = 64 * 1024;

/// Client messages audited: Query, Parse.
const FROM_CLIENT: &[u8] = b"QP";
/// Server messages audited: ErrorResponse.
const TO_CLIENT: &[u8] = b"E";

/// A client stream, audited when it has a [`Tap`].
pub type Audited<S> = Observed<S, Option<Box<Tap>>>;

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
    up: Side,
    down: Side,
}

impl Tap {
    pub(super) fn new(log: Arc<AuditLog>, id: ClientId, totals: Arc<Totals>) -> Self {
        Self {
            log,
            id,
            totals,
            up: Side::new(Direction::Frontend, FROM_CLIENT),
            down: Side::new(Direction::Backend, TO_CLIENT),
        }
    }
}

impl Observer for Tap {
    fn client_sent(&mut self, bytes: &[u8]) {
        let (log, id, redact) = (&self.log, self.id, self.log.redacts());
        add(&self.totals.from_client, bytes);
        self.up.follow(bytes, |tag, body, truncated| {
            let statement = match tag {
                b'Q' => Event::Query(Statement::query(body, truncated, redact)),
                _ => Event::Parse(Statement::parse(body, truncated, redact)),
            };
            log.send(id, statement);
        });
    }

    fn client_received(&mut self, bytes: &[u8]) {
        let (log, id, redact) = (&self.log, self.id, self.log.redacts());
        add(&self.totals.to_client, bytes);
        self.down.follow(bytes, |_, body, _| {
            log.send(id, Event::Error(ErrorEvent::from_body(body, redact)));
        });
        let transactions = self.down.scanner.idle_ready_count();
        self.totals
            .transactions
            .store(transactions, Ordering::Relaxed);
    }
}

impl Observer for Option<Box<Tap>> {
    fn client_sent(&mut self, bytes: &[u8]) {
        if let Some(tap) = self {
            tap.client_sent(bytes);
        }
    }

    fn client_received(&mut self, bytes: &[u8]) {
        if let Some(tap) = self {
            tap.client_received(bytes);
        }
    }
}

fn add(total: &AtomicU64, bytes: &[u8]) {
    total.fetch_add(bytes.len() as u64, Ordering::Relaxed);
}

/// One direction of the stream: its messages, and the body being collected.
#[derive(Debug)]
struct Side {
    scanner: FrameScanner,
    body: Body,
}

impl Side {
    fn new(direction: Direction, wanted: &'static [u8]) -> Self {
        Self {
            scanner: FrameScanner::new(direction),
            body: Body::new(wanted),
        }
    }

    /// Follows `bytes`, handing each audited message, once whole, to `audit` (its tag, its
    /// body, whether that was cut).
    fn follow(&mut self, bytes: &[u8], mut audit: impl FnMut(u8, &[u8], bool)) {
        let Self { scanner, body } = self;
        // A length PostgreSQL refuses ends the session; nothing after it is audited.
        let _ = scanner.feed_observed(bytes, &mut |piece| {
            if let Some((tag, whole, truncated)) = body.piece(piece) {
                audit(tag, &whole, truncated);
            }
        });
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
