//! [`FrameScanner`]: follows message boundaries in a relayed byte stream without buffering
//! it, for a relay that forwards whole reads but must know what passed: the backend's
//! transaction status, whether the client has said Terminate, whether a message is cut in
//! half.
//!
//! Sans-IO: feed it the bytes as they are forwarded, in any split; it keeps only the
//! current message's 5-byte header.

use crate::backend::TransactionStatus;
use crate::limits::frontend_message_limit;

/// Which side of the protocol a stream comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server (after the startup packet: every message is tagged).
    Frontend,
    /// Server to client.
    Backend,
}

/// The tag of a client's Terminate message.
const TERMINATE: u8 = b'X';
/// The tag of a server's ReadyForQuery message.
const READY_FOR_QUERY: u8 = b'Z';
/// Client messages PostgreSQL answers with a ReadyForQuery: Query, FunctionCall, Sync.
const ASKS_FOR_READY: [u8; 3] = [b'Q', b'F', b'S'];
/// Extended-query client messages, answered only up to the next Sync: Parse, Bind,
/// Execute, Describe, Close, Flush.
const EXTENDED_QUERY: [u8; 6] = [b'P', b'B', b'E', b'D', b'C', b'H'];

/// A client message whose declared length PostgreSQL would refuse (below 4, or, counting its
/// own four bytes as PostgreSQL does, above the limit for its type:
/// [`frontend_message_limit`]). PostgreSQL closes the connection on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength {
    /// Where, in the bytes just fed, the refused message starts (0 when its header began in
    /// an earlier feed): what comes before it may still be forwarded.
    pub start: usize,
    /// The message's type byte.
    pub tag: u8,
    /// Its declared length.
    pub length: u32,
}

/// A piece of a message body passing a [`FrameScanner`]: the pieces of one message come in
/// order, the last one marked (a message with an empty body is one empty last piece).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPiece<'a> {
    /// The message's type byte.
    pub tag: u8,
    /// The bytes of its body in this feed.
    pub bytes: &'a [u8],
    /// Whether the body ends with these bytes.
    pub last: bool,
}

/// Tracks message boundaries in one direction of a relayed stream.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    direction: Direction,
    header: [u8; 5],
    have: usize,
    remaining: usize,
    tag: u8,
    last_complete: Option<u8>,
    status: Option<TransactionStatus>,
    terminated: bool,
    bad: Option<BadLength>,
    ready_points: u64,
    unsynced: bool,
    ready: u64,
    idle_ready: u64,
}

impl FrameScanner {
    /// A scanner for a stream that starts at a message boundary.
    pub fn new(direction: Direction) -> Self {
        Self {
            direction,
            header: [0; 5],
            have: 0,
            remaining: 0,
            tag: 0,
            last_complete: None,
            status: None,
            terminated: false,
            bad: None,
            ready_points: 0,
            unsynced: false,
            ready: 0,
            idle_ready: 0,
        }
    }

    /// Feeds the next bytes of the stream. A frontend stream whose next message declares a
    /// length PostgreSQL would refuse is an error, now and for every later feed.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), BadLength> {
        self.feed_observed(data, &mut |_| {})
    }

    /// [`FrameScanner::feed`], showing `observe` every message body as it passes, in pieces
    /// ([`BodyPiece`]): for a reader of a few message types (an audit log) that follows the
    /// stream without a second scanner. Nothing is shown of a refused message.
    pub fn feed_observed(
        &mut self,
        mut data: &[u8],
        observe: &mut impl FnMut(BodyPiece<'_>),
    ) -> Result<(), BadLength> {
        if let Some(bad) = self.bad {
            return Err(BadLength { start: 0, ..bad });
        }
        let total = data.len();
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                if self.tag == READY_FOR_QUERY && self.direction == Direction::Backend {
                    // The status is the body's last (and only) byte.
                    if let Some(&byte) = data[..take].last().filter(|_| take == self.remaining) {
                        self.status = TransactionStatus::from_byte(byte).ok();
                    }
                }
                observe(BodyPiece {
                    tag: self.tag,
                    bytes: &data[..take],
                    last: take == self.remaining,
                });
                self.remaining -= take;
                data = &data[take..];
                if self.remaining == 0 {
                    self.complete();
                }
                continue;
            }
            let header_start = (total - data.len()).saturating_sub(self.have);
            let take = (5 - self.have).min(data.len());
            self.header[self.have..self.have + take].copy_from_slice(&data[..take]);
            self.have += take;
            data = &data[take..];
            if self.have == 5 {
                if let Err(bad) = self.start_message(header_start) {
                    self.bad = Some(bad);
                    return Err(bad);
                }
                if self.remaining == 0 {
                    observe(BodyPiece {
                        tag: self.tag,
                        bytes: &[],
                        last: true,
                    });
                }
            }
        }
        Ok(())
    }

    fn start_message(&mut self, start: usize) -> Result<(), BadLength> {
        self.have = 0;
        self.tag = self.header[0];
        let [_, a, b, c, d] = self.header;
        let length = u32::from_be_bytes([a, b, c, d]);
        let whole = usize::try_from(length).unwrap_or(usize::MAX);
        let body = whole.checked_sub(4);
        // PostgreSQL's pq_getmessage compares the length word itself (which counts its own
        // four bytes) with the limit.
        let refused = match (self.direction, body) {
            (_, None) => true,
            (Direction::Frontend, Some(_)) => whole > frontend_message_limit(self.tag),
            (Direction::Backend, Some(_)) => false,
        };
        if refused {
            return Err(BadLength {
                start,
                tag: self.tag,
                length,
            });
        }
        self.remaining = body.unwrap_or(0);
        if self.remaining == 0 {
            self.complete();
        }
        Ok(())
    }

    fn complete(&mut self) {
        self.last_complete = Some(self.tag);
        match self.direction {
            Direction::Frontend => {
                self.terminated |= self.tag == TERMINATE;
                if ASKS_FOR_READY.contains(&self.tag) {
                    self.ready_points += 1;
                    self.unsynced = false;
                } else if EXTENDED_QUERY.contains(&self.tag) {
                    self.unsynced = true;
                }
            }
            Direction::Backend if self.tag == READY_FOR_QUERY => self.ready_points += 1,
            Direction::Backend => {}
        }
        if self.tag == READY_FOR_QUERY && self.direction == Direction::Backend {
            self.ready += 1;
            if self.status == Some(TransactionStatus::Idle) {
                self.idle_ready += 1;
            }
        }
    }

    /// How many ReadyForQuery messages the stream has asked for (frontend: its complete
    /// Query, FunctionCall and Sync messages) or carried (backend). When a client's count
    /// equals its backend's, every request it sent has been answered to the end.
    pub fn ready_points(&self) -> u64 {
        self.ready_points
    }

    /// Whether extended-query messages have passed since the last Sync (frontend streams):
    /// their answers are not closed by a ReadyForQuery yet.
    pub fn unsynced(&self) -> bool {
        self.unsynced
    }

    /// Whether the stream is between two messages.
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.remaining == 0
    }

    /// The status of the last ReadyForQuery seen (backend streams).
    pub fn status(&self) -> Option<TransactionStatus> {
        self.status
    }

    /// The tag of the last complete message, if any.
    pub fn last_tag(&self) -> Option<u8> {
        self.last_complete
    }

    /// How many complete ReadyForQuery messages have passed (backend streams): one per
    /// query cycle (a simple Query, or an extended-protocol group up to its Sync).
    pub fn ready_count(&self) -> u64 {
        self.ready
    }

    /// How many of those said idle (`I`): one per transaction ended, an implicit one
    /// (a statement outside BEGIN … COMMIT) included.
    pub fn idle_ready_count(&self) -> u64 {
        self.idle_ready
    }

    /// Whether a complete Terminate has passed (frontend streams): from then on the client
    /// expects nothing but the end of the connection.
    pub fn terminated(&self) -> bool {
        self.terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend_stream() -> Vec<u8> {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"C\0\0\0\x0dSELECT 1\0");
        stream.extend_from_slice(b"Z\0\0\0\x05T");
        stream.extend_from_slice(b"D\0\0\0\x06\0\0");
        stream
    }

    #[test]
    fn backend_scanner_follows_messages_across_every_split() {
        let stream = backend_stream();
        for split in 0..stream.len() {
            let mut scanner = FrameScanner::new(Direction::Backend);
            scanner.feed(&stream[..split]).unwrap();
            scanner.feed(&stream[split..]).unwrap();
            assert_eq!(scanner.status(), Some(TransactionStatus::InTransaction));
            assert_eq!(scanner.last_tag(), Some(b'D'));
            assert!(scanner.at_boundary());
        }
        let mut scanner = FrameScanner::new(Direction::Backend);
        scanner.feed(&stream[..stream.len() - 1]).unwrap();
        assert!(!scanner.at_boundary());
        assert_eq!(scanner.last_tag(), Some(b'Z'));
    }

    #[test]
    fn ready_for_query_messages_are_counted_with_the_idle_ones_apart() {
        let stream = backend_stream();
        let mut scanner = FrameScanner::new(Direction::Backend);
        for byte in stream.iter().chain(b"Z\0\0\0\x05I") {
            scanner.feed(&[*byte]).unwrap();
        }
        assert_eq!(scanner.ready_count(), 2);
        assert_eq!(scanner.idle_ready_count(), 1);
    }

    #[test]
    fn observed_bodies_come_whole_in_order_across_every_split() {
        let stream = b"Q\0\0\0\x0dSELECT 1\0S\0\0\0\x04P\0\0\0\x08s\0x\0";
        for split in 0..stream.len() {
            let mut scanner = FrameScanner::new(Direction::Frontend);
            let mut bodies: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut open: Vec<u8> = Vec::new();
            let mut observe = |piece: BodyPiece<'_>| {
                open.extend_from_slice(piece.bytes);
                if piece.last {
                    bodies.push((piece.tag, std::mem::take(&mut open)));
                }
            };
            scanner
                .feed_observed(&stream[..split], &mut observe)
                .unwrap();
            scanner
                .feed_observed(&stream[split..], &mut observe)
                .unwrap();
            let expected: Vec<(u8, Vec<u8>)> = vec![
                (b'Q', b"SELECT 1\0".to_vec()),
                (b'S', Vec::new()),
                (b'P', b"s\0x\0".to_vec()),
            ];
            assert_eq!(bodies, expected, "split at {split}");
        }
    }

    #[test]
    fn a_status_byte_split_from_its_header_is_still_read() {
        let mut scanner = FrameScanner::new(Direction::Backend);
        for byte in b"Z\0\0\0\x05E" {
            scanner.feed(&[*byte]).unwrap();
        }
        assert_eq!(scanner.status(), Some(TransactionStatus::Failed));
    }

    #[test]
    fn frontend_scanner_sees_terminate_only_when_complete_and_at_a_boundary() {
        // A Query whose text contains an 'X' header look-alike, then Terminate.
        let mut stream = Vec::new();
        stream.extend_from_slice(b"Q\0\0\0\x0eX\0\0\0\x04ab\0\0\0");
        let query_end = stream.len();
        stream.extend_from_slice(b"X\0\0\0\x04");
        for split in 0..stream.len() {
            let mut scanner = FrameScanner::new(Direction::Frontend);
            scanner.feed(&stream[..split]).unwrap();
            assert!(!scanner.terminated(), "split at {split}");
            scanner.feed(&stream[split..]).unwrap();
            assert!(scanner.terminated(), "split at {split}");
        }
        let mut scanner = FrameScanner::new(Direction::Frontend);
        scanner.feed(&stream[..query_end]).unwrap();
        assert!(!scanner.terminated());
        assert_eq!(scanner.last_tag(), Some(b'Q'));
    }

    #[test]
    fn requests_and_their_ready_for_query_answers_are_counted() {
        let mut client = FrameScanner::new(Direction::Frontend);
        client.feed(b"Q\0\0\0\x05\0P\0\0\0\x04").unwrap();
        assert_eq!(client.ready_points(), 1);
        assert!(client.unsynced(), "a Parse waits for its Sync");
        client.feed(b"S\0\0\0\x04F\0\0\0\x04").unwrap();
        assert_eq!(client.ready_points(), 3);
        assert!(!client.unsynced());
        let mut backend = FrameScanner::new(Direction::Backend);
        backend.feed(&backend_stream()).unwrap();
        backend.feed(b"Z\0\0\0\x05I").unwrap();
        assert_eq!(backend.ready_points(), 2);
    }

    #[test]
    fn backend_streams_never_count_as_terminated() {
        let mut scanner = FrameScanner::new(Direction::Backend);
        scanner.feed(b"X\0\0\0\x04").unwrap();
        assert!(!scanner.terminated());
    }

    #[test]
    fn a_huge_backend_length_does_not_overflow() {
        let mut scanner = FrameScanner::new(Direction::Backend);
        scanner.feed(b"D\xff\xff\xff\xff").unwrap();
        scanner.feed(&[0; 100]).unwrap();
        assert!(!scanner.at_boundary());
        assert_eq!(scanner.last_tag(), None);
    }

    #[test]
    fn client_lengths_postgresql_refuses_are_reported_where_the_message_starts() {
        let sync = b"S\0\0\0\x04";
        for (header, tag) in [
            (&b"Q\0\0\0\x03"[..], b'Q'),       // below 4
            (&b"Q\x7f\xff\xff\xff"[..], b'Q'), // 2^31-1
            (&b"Q\x40\0\0\x01"[..], b'Q'),     // 1 GiB + 1
            (&b"S\0\0\x27\x15"[..], b'S'),     // a Sync over 10000 bytes
        ] {
            let mut stream = sync.to_vec();
            stream.extend_from_slice(header);
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let expected = BadLength {
                start: 5,
                tag,
                length,
            };
            let mut scanner = FrameScanner::new(Direction::Frontend);
            assert_eq!(scanner.feed(&stream), Err(expected));
            assert_eq!(
                scanner.feed(b"more"),
                Err(BadLength {
                    start: 0,
                    ..expected
                })
            );
            // The header split across feeds: the message started in the earlier one.
            let mut scanner = FrameScanner::new(Direction::Frontend);
            scanner.feed(&stream[..7]).unwrap();
            assert_eq!(
                scanner.feed(&stream[7..]),
                Err(BadLength {
                    start: 0,
                    ..expected
                })
            );
        }
        let mut scanner = FrameScanner::new(Direction::Frontend);
        let mut copy = b"d\0\0\x27\x15".to_vec();
        copy.extend_from_slice(&[0; 10_001]);
        // 1 GiB - 2 is PostgreSQL's largest Query, CopyData, ...: not refused.
        assert_eq!(
            FrameScanner::new(Direction::Frontend).feed(b"Q\x3f\xff\xff\xfe"),
            Ok(())
        );
        assert_eq!(scanner.feed(&copy), Ok(()), "CopyData may be large");
    }
}
