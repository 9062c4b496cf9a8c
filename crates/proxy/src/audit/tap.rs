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

use super::event::{ErrorEvent, Event, FunctionCall, Statement};
use super::writer::AuditLog;
use crate::clients::ClientId;
use crate::observed::{Observed, Observer};

/// The most of a message body an event keeps (the rest is cut, and the event says so).
pub const TEXT_LIMIT: usize = 64 * 1024;

/// Client messages audited: Query, Parse, FunctionCall.
const FROM_CLIENT: &[u8] = b"QPF";
/// Server messages audited: ErrorResponse.
const TO_CLIENT: &[u8] = b"E";

/// A client stream, audited when it has a [`Tap`].
pub type Audited<S> = Observed<S, Option<Box<Tap>>>;

/// A session's running totals, read when it ends, and the numbering of its events.
#[derive(Debug, Default)]
pub(super) struct Totals {
    pub(super) from_client: AtomicU64,
    pub(super) to_client: AtomicU64,
    pub(super) transactions: AtomicU64,
    /// The next event's `seq`.
    seq: AtomicU64,
    /// The session's events dropped.
    pub(super) dropped: AtomicU64,
}

impl Totals {
    /// Hands the session's next `event` to `log`, counting it when it is dropped.
    pub(super) fn send(&self, log: &AuditLog, id: ClientId, event: Event) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if !log.send(id, seq, event) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
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
        let (log, id, totals, redact) = (&self.log, self.id, &self.totals, self.log.redacts());
        add(&totals.from_client, bytes);
        self.up.follow(bytes, |kept| {
            let event = match kept.tag {
                b'Q' => Event::Query(Statement::query(&kept, redact)),
                b'P' => Event::Parse(Statement::parse(&kept, redact)),
                _ => Event::FunctionCall(FunctionCall::from_body(&kept.head, redact)),
            };
            totals.send(log, id, event);
        });
    }

    fn client_received(&mut self, bytes: &[u8]) {
        let (log, id, totals, redact) = (&self.log, self.id, &self.totals, self.log.redacts());
        add(&totals.to_client, bytes);
        self.down.follow(bytes, |kept| {
            totals.send(
                log,
                id,
                Event::Error(ErrorEvent::from_body(&kept.head, redact)),
            );
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

    /// Follows `bytes`, handing each audited message, once whole, to `audit`.
    fn follow(&mut self, bytes: &[u8], mut audit: impl FnMut(Kept)) {
        let Self { scanner, body } = self;
        // A length PostgreSQL refuses ends the session; nothing after it is audited.
        let _ = scanner.feed_observed(bytes, &mut |piece| {
            if let Some(kept) = body.piece(piece) {
                audit(kept);
            }
        });
    }
}

/// An audited message's body as kept: all of it up to [`TEXT_LIMIT`] bytes, else its first
/// and last [`HALF`] bytes with what a reader needs to know about the rest.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Kept {
    /// The message's tag.
    pub(super) tag: u8,
    /// The body (whole), or its first [`HALF`] bytes.
    pub(super) head: Vec<u8>,
    /// For a body longer than [`TEXT_LIMIT`]: its end and the facts of the whole.
    pub(super) cut: Option<Cut>,
}

/// What is known of a body too long to keep whole.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Cut {
    /// The last [`HALF`] bytes of the body.
    pub(super) tail: Vec<u8>,
    /// The bytes between the head and the tail, not kept.
    pub(super) omitted: u64,
    /// The SQL text's full length in bytes.
    pub(super) length: u64,
    /// The SHA-256 of the full SQL text.
    pub(super) sha256: [u8; 32],
}

/// How much of the start, and of the end, of a long body is kept.
pub(super) const HALF: usize = TEXT_LIMIT / 2;

/// Collects the bodies of the audited message types: whole up to [`TEXT_LIMIT`] bytes, else
/// head and tail, the length and the SHA-256 of the text computed as the bytes pass.
#[derive(Debug)]
struct Body {
    wanted: &'static [u8],
    bytes: Vec<u8>,
    /// Once the body is longer than [`TEXT_LIMIT`]: the end seen so far and the hash.
    long: Option<Long>,
}

/// A long body's state: `bytes` holds the head ([`HALF`] bytes).
#[derive(Debug)]
struct Long {
    /// The last bytes seen (between [`HALF`] and [`TEXT_LIMIT`] of them).
    tail: Vec<u8>,
    /// All the body's bytes seen.
    seen: u64,
    text: TextHash,
}

/// The SHA-256 and length of the SQL text inside a body: the bytes after `nuls` NULs (a
/// Parse's name comes first), up to the next NUL.
#[derive(Debug)]
struct TextHash {
    hasher: sha2::Sha256,
    nuls: usize,
    done: bool,
    length: u64,
}

impl TextHash {
    fn new(tag: u8) -> Self {
        Self {
            hasher: sha2::Digest::new(),
            nuls: usize::from(tag == b'P'),
            done: false,
            length: 0,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        while !self.done && !bytes.is_empty() {
            let nul = bytes.iter().position(|&b| b == 0);
            if self.nuls > 0 {
                let Some(at) = nul else { return };
                self.nuls -= 1;
                bytes = bytes.get(at + 1..).unwrap_or_default();
                continue;
            }
            let (text, _) = bytes.split_at(nul.unwrap_or(bytes.len()));
            sha2::Digest::update(&mut self.hasher, text);
            self.length += text.len() as u64;
            self.done = nul.is_some();
            return;
        }
    }
}

impl Body {
    fn new(wanted: &'static [u8]) -> Self {
        Self {
            wanted,
            bytes: Vec::new(),
            long: None,
        }
    }

    /// Takes a piece; once an audited message is whole, what was kept of it.
    fn piece(&mut self, piece: BodyPiece<'_>) -> Option<Kept> {
        if !self.wanted.contains(&piece.tag) {
            return None;
        }
        match &mut self.long {
            None if self.bytes.len() + piece.bytes.len() <= TEXT_LIMIT => {
                self.bytes.extend_from_slice(piece.bytes);
            }
            None => {
                self.bytes.extend_from_slice(piece.bytes);
                let mut text = TextHash::new(piece.tag);
                text.update(&self.bytes);
                let tail = self.bytes.split_off(HALF);
                self.long = Some(Long {
                    seen: self.bytes.len() as u64 + tail.len() as u64,
                    tail,
                    text,
                });
                self.trim_tail();
            }
            Some(long) => {
                long.text.update(piece.bytes);
                long.seen += piece.bytes.len() as u64;
                long.tail.extend_from_slice(piece.bytes);
                self.trim_tail();
            }
        }
        if !piece.last {
            return None;
        }
        let head = std::mem::take(&mut self.bytes);
        let cut = self.long.take().map(|long| {
            let mut tail = long.tail;
            let extra = tail.len().saturating_sub(HALF);
            tail.drain(..extra);
            Cut {
                omitted: long.seen - (head.len() + tail.len()) as u64,
                tail,
                length: long.text.length,
                sha256: sha2::Digest::finalize(long.text.hasher).into(),
            }
        });
        Some(Kept {
            tag: piece.tag,
            head,
            cut,
        })
    }

    /// Keeps the tail between [`HALF`] and [`TEXT_LIMIT`] bytes (trimmed only when longer:
    /// each byte is moved at most once or twice).
    fn trim_tail(&mut self) {
        if let Some(long) = &mut self.long {
            if long.tail.len() > TEXT_LIMIT {
                let extra = long.tail.len() - HALF;
                long.tail.drain(..extra);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    fn piece(tag: u8, bytes: &[u8], last: bool) -> BodyPiece<'_> {
        BodyPiece { tag, bytes, last }
    }

    #[test]
    fn bodies_of_audited_messages_are_kept_whole_or_head_and_tail_with_length_and_hash() {
        let mut body = Body::new(FROM_CLIENT);
        assert_eq!(body.piece(piece(b'B', b"x", true)), None);
        let kept = body.piece(piece(b'P', b"\0SELECT 1\0", true)).unwrap();
        assert_eq!(
            (kept.head.as_slice(), kept.cut),
            (&b"\0SELECT 1\0"[..], None)
        );
        // A Parse whose text is 3 × TEXT_LIMIT bytes long, in pieces of 1000 bytes.
        let text: Vec<u8> = (0..3 * TEXT_LIMIT).map(|i| b'a' + (i % 26) as u8).collect();
        let whole = [&b"s1\0"[..], &text, b"\0\0\x01\0\0\0\x17"].concat();
        let chunks: Vec<&[u8]> = whole.chunks(1000).collect();
        for chunk in &chunks[..chunks.len() - 1] {
            assert_eq!(body.piece(piece(b'P', chunk, false)), None);
        }
        let kept = body
            .piece(piece(b'P', chunks[chunks.len() - 1], true))
            .unwrap();
        let cut = kept.cut.unwrap();
        assert_eq!(kept.head, whole[..HALF]);
        assert_eq!(cut.tail, whole[whole.len() - HALF..]);
        assert_eq!(cut.omitted as usize, whole.len() - 2 * HALF);
        assert_eq!(cut.length as usize, text.len());
        assert_eq!(cut.sha256, <[u8; 32]>::from(sha2::Sha256::digest(&text)));
    }
}
