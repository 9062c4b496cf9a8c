//! [`Audited`]: a client stream whose messages the audit reads as they pass: the Query and
//! Parse texts and the FunctionCalls the client sends, the ErrorResponses it receives, the bytes both ways and the
//! transactions ended. It sits on the client's stream ([`Observed`]), so the transparent
//! relay and the pooled sessions are audited alike, with no change to either.
//!
//! Without a [`Tap`] (audit off) a read or a write costs one `Option` check. With one, the
//! bytes are followed by two [`FrameScanner`]s and only the bodies of the messages audited
//! are copied: whole up to [`TEXT_LIMIT`] bytes; of a longer one, its start and its end
//! (at most 1.5 × [`TEXT_LIMIT`] held at once), its middle only hashed and lexed as it
//! passes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pgbastion_wire::{BodyPiece, Direction, FrameScanner};
use sha2::Digest;

use super::event::{ErrorEvent, Event, FunctionCall, Statement};
use super::writer::AuditLog;
use crate::clients::ClientId;
use crate::observed::{Observed, Observer};
use crate::sql_scan::LexState;

/// The most of a message body an event keeps whole (of a longer one, the first and the last
/// half of this are kept, and the event says so).
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
    /// Where the lexer is at the tail's start (for redacting it as the whole would be).
    pub(super) lex: LexState,
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
    /// The text's bytes as they come: hashed, counted.
    hashed: TextBytes,
    hasher: sha2::Sha256,
    length: u64,
    /// The text's bytes as they leave the tail (head and middle): lexed.
    lexed: TextBytes,
    lex: LexState,
}

impl Long {
    /// Drops the tail's start, down to `keep` bytes: those leave through the lexer.
    fn trim(&mut self, keep: usize) {
        let extra = self.tail.len().saturating_sub(keep);
        let gone: Vec<u8> = self.tail.drain(..extra).collect();
        self.lex.feed(self.lexed.text(&gone));
    }
}

/// Picks the SQL text out of a body's bytes as they pass: those after `nuls` NULs (a
/// Parse's name comes first), up to the next NUL.
#[derive(Debug)]
struct TextBytes {
    nuls: usize,
    done: bool,
}

impl TextBytes {
    fn new(tag: u8) -> Self {
        Self {
            nuls: usize::from(tag == b'P'),
            done: false,
        }
    }

    /// The part of `bytes` (the body's next ones) that is text.
    fn text<'a>(&mut self, mut bytes: &'a [u8]) -> &'a [u8] {
        while self.nuls > 0 && !self.done {
            let Some(at) = bytes.iter().position(|&b| b == 0) else {
                return &[];
            };
            self.nuls -= 1;
            bytes = bytes.get(at + 1..).unwrap_or_default();
        }
        if self.done {
            return &[];
        }
        let nul = bytes.iter().position(|&b| b == 0);
        self.done = nul.is_some();
        bytes.get(..nul.unwrap_or(bytes.len())).unwrap_or_default()
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
                let mut hashed = TextBytes::new(piece.tag);
                let text = hashed.text(&self.bytes);
                let mut hasher = sha2::Sha256::new();
                hasher.update(text);
                let length = text.len() as u64;
                let tail = self.bytes.split_off(HALF);
                let mut lexed = TextBytes::new(piece.tag);
                let mut lex = LexState::default();
                lex.feed(lexed.text(&self.bytes));
                let mut long = Long {
                    seen: self.bytes.len() as u64 + tail.len() as u64,
                    tail,
                    hashed,
                    hasher,
                    length,
                    lexed,
                    lex,
                };
                long.trim(TEXT_LIMIT);
                self.long = Some(long);
            }
            Some(long) => {
                let text = long.hashed.text(piece.bytes);
                long.hasher.update(text);
                long.length += text.len() as u64;
                long.seen += piece.bytes.len() as u64;
                long.tail.extend_from_slice(piece.bytes);
                if long.tail.len() > TEXT_LIMIT {
                    long.trim(HALF);
                }
            }
        }
        if !piece.last {
            return None;
        }
        let head = std::mem::take(&mut self.bytes);
        let cut = self.long.take().map(|mut long| {
            long.trim(HALF);
            Cut {
                omitted: long.seen - (head.len() + long.tail.len()) as u64,
                tail: long.tail,
                length: long.length,
                sha256: long.hasher.finalize().into(),
                lex: long.lex,
            }
        });
        Some(Kept {
            tag: piece.tag,
            head,
            cut,
        })
    }
}

#[cfg(test)]
mod tests {
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
