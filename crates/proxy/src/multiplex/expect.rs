//! What a backend owes: one entry per message sent to it that gets a reply, in order, plus
//! the replies pgbastion makes itself, kept in the same queue so that they reach the client
//! in the order the client asked.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use super::statements::Prepared;

/// The kind of message a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Parse → ParseComplete.
    Parse,
    /// Bind → BindComplete.
    Bind,
    /// Close → CloseComplete.
    Close,
    /// Describe → (ParameterDescription) RowDescription or NoData.
    Describe,
    /// Execute → rows, then CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// Sync → ReadyForQuery.
    Sync,
    /// Query → everything up to ReadyForQuery.
    Query,
    /// FunctionCall → FunctionCallResponse, ReadyForQuery.
    FunctionCall,
}

impl Kind {
    /// Whether the reply ends with ReadyForQuery (and an error inside it is part of it).
    pub fn ends_at_ready(self) -> bool {
        matches!(self, Self::Sync | Self::Query | Self::FunctionCall)
    }
}

/// Which replies to a message the client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    /// All: the client sent the message.
    All,
    /// Only an error: pgbastion sent the message for the client's next one (a statement
    /// prepared again on this backend), whose failure this is.
    Errors,
    /// None: pgbastion's own business (session parameters, evictions); an error means the
    /// backend's state is unknown.
    Nothing,
}

/// What to put back if the message an entry stands for turns out not to have run (it
/// failed, or the backend skipped it after an earlier error).
#[derive(Debug, Default)]
pub struct Undo {
    /// The client's name and what it named before.
    pub client: Option<(String, Option<Arc<Prepared>>)>,
    /// A statement recorded as present on the backend.
    pub cache: Option<Arc<str>>,
    /// The client's unnamed statement was replaced: what it was before.
    pub unnamed: Option<UnnamedBefore>,
}

/// The client's unnamed statement before a Parse replaced it. PostgreSQL drops the unnamed
/// statement when an unnamed Parse begins, so a Parse that fails leaves none; one skipped
/// after an earlier error leaves this.
#[derive(Debug, Clone, Default)]
pub struct UnnamedBefore {
    /// The client's own unnamed Parse, as it sent it.
    pub parse: Option<Bytes>,
    /// Whether the backend held it.
    pub here: bool,
    /// The statement of pgbastion's that stood in for it (`cache_unnamed`).
    pub stand_in: Option<Arc<Prepared>>,
    /// Its generation (the client's unnamed statement changes count up).
    pub generation: u64,
    /// The generation the Parse made: what was before comes back only while the client's
    /// unnamed statement is still that one.
    pub made: u64,
}

/// What a Query does to the backend's state that pgbastion must follow.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Care {
    /// It drops every prepared statement (`DEALLOCATE ALL`, `DISCARD ALL`): followed once
    /// it succeeded.
    pub drops_statements: bool,
    /// It holds several statements (a failure may come after the drop).
    pub several: bool,
    /// It reset session parameters (`RESET ALL`, `DISCARD ALL`): once it is answered, the
    /// client's startup values are what it should have, and they are set again at the next
    /// checkout.
    pub reapply: bool,
    /// A Parse of a statement of pgbastion's whose reading the client's settings may change
    /// (DateStyle, TimeZone, …; not a `SET` or `RESET`).
    pub read_under_settings: bool,
}

impl Care {
    /// The care of a Parse of `prepared` under its shared name.
    pub fn of_parse(prepared: &Prepared) -> Self {
        Self {
            read_under_settings: prepared.read_under_settings(),
            ..Self::default()
        }
    }
}

/// One expected reply.
#[derive(Debug)]
pub enum Expect {
    /// A backend reply to a message sent to it.
    Reply {
        /// What was sent.
        kind: Kind,
        /// Which replies the client sees.
        show: Show,
        /// What to put back if it did not run.
        undo: Undo,
        /// What its ReadyForQuery or error means beyond the client's view.
        care: Care,
    },
    /// A reply pgbastion makes itself, sent to the client when its turn comes.
    Own {
        /// The encoded message(s).
        message: Bytes,
        /// What to put back if its turn never comes (an earlier message failed).
        undo: Undo,
    },
}

impl Expect {
    /// Whether this entry is a Sync's.
    pub fn is_sync(&self) -> bool {
        matches!(
            self,
            Self::Reply {
                kind: Kind::Sync,
                ..
            }
        )
    }

    /// Whether this entry ends a group of the client's (its Sync, Query or function call).
    pub fn ends_client_group(&self) -> bool {
        matches!(self, Self::Reply { kind, show, .. } if kind.ends_at_ready() && *show != Show::Nothing)
    }

    /// What its undo would put back.
    pub fn undo(&self) -> &Undo {
        match self {
            Self::Reply { undo, .. } | Self::Own { undo, .. } => undo,
        }
    }

    /// Which replies the client sees.
    pub fn show(&self) -> Show {
        match self {
            Self::Reply { show, .. } => *show,
            Self::Own { .. } => Show::All,
        }
    }
}

/// The queue of expected replies of one backend, with counts kept as entries come and go
/// (a pipelining client may have tens of thousands queued, and these are asked per message).
#[derive(Debug, Default)]
pub struct Expected {
    entries: VecDeque<Expect>,
    /// Entries that end a group of the client's (its Sync, Query or function call).
    client_groups: usize,
    /// Entries with something to undo.
    undos: usize,
    /// Entries whose success drops every prepared statement.
    drops: usize,
}

/// How many queued entries [`Expected::earlier_groups_undo`] reads before it answers "maybe".
const SCAN_LIMIT: usize = 128;

impl Expected {
    /// Follows `entry` in the counts as it is `added` or removed.
    fn count(&mut self, entry: &Expect, added: bool) {
        let step = |count: &mut usize, yes: bool| {
            if yes {
                *count = if added { *count + 1 } else { *count - 1 };
            }
        };
        let group = entry.ends_client_group();
        let drops = matches!(entry, Expect::Reply { care, .. } if care.drops_statements);
        let undo = entry.undo();
        let undoes = undo.cache.is_some() || undo.client.is_some() || undo.unnamed.is_some();
        step(&mut self.client_groups, group);
        step(&mut self.undos, undoes);
        step(&mut self.drops, drops);
    }

    /// Adds an entry at the back.
    pub fn push(&mut self, entry: Expect) {
        self.count(&entry, true);
        self.entries.push_back(entry);
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&Expect> {
        self.entries.front()
    }

    /// Removes the oldest entry.
    pub fn pop(&mut self) -> Option<Expect> {
        let entry = self.entries.pop_front()?;
        self.count(&entry, false);
        Some(entry)
    }

    /// Whether nothing is owed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries behind the oldest one (sent after it).
    pub fn behind_front(&self) -> impl Iterator<Item = &Expect> {
        self.entries.iter().skip(1)
    }

    /// How many replies are owed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether a statement that drops every prepared statement is still to complete.
    pub fn drops_pending(&self) -> bool {
        self.drops > 0
    }

    /// Whether such a statement is in a group of the client's sent before the current one:
    /// the client's names mean what they mean after it only once it is answered.
    pub fn earlier_groups_drop(&self) -> bool {
        if self.drops == 0 || self.client_groups == 0 {
            return false;
        }
        let Some(last_end) = self.entries.iter().rposition(Expect::ends_client_group) else {
            return false;
        };
        self.entries
            .iter()
            .take(last_end + 1)
            .any(|entry| matches!(entry, Expect::Reply { care, .. } if care.drops_statements))
    }

    /// Whether a Parse of a statement of pgbastion's that the settings may change is
    /// unanswered.
    pub fn parse_pending(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| matches!(entry, Expect::Reply { care, .. } if care.read_under_settings))
    }

    /// Whether a reply the client sees is owed (of a group of its own, finished or not).
    pub fn owes_client(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.show() != Show::Nothing)
    }

    /// Whether a Sync group of pgbastion's own is still unanswered. (Closes of evicted
    /// statements are not waited for: PostgreSQL answers them only at the client's Sync.)
    pub fn owes_hidden_group(&self) -> bool {
        self.entries
            .iter()
            .any(|entry| entry.is_sync() && entry.show() == Show::Nothing)
    }

    /// Whether a Sync is queued (an error's skipping ends there).
    pub fn has_sync(&self) -> bool {
        self.entries.iter().any(Expect::is_sync)
    }

    /// Whether a group of the client's sent before the current one (a Sync's, a Query's or a
    /// function call's) is unanswered: the transaction's status after it is not known yet.
    pub fn owes_client_group(&self) -> bool {
        self.client_groups > 0
    }

    /// Whether an entry of a Sync group sent before the current one (and not answered yet)
    /// may have an undo that `touches`: read up to [`SCAN_LIMIT`] entries, beyond which the
    /// answer is yes (the caller waits for the backend to catch up rather than read more).
    pub fn earlier_groups_undo(&self, touches: impl Fn(&Undo) -> bool) -> bool {
        if self.undos == 0 || self.client_groups == 0 {
            return false;
        }
        if self.entries.len() > SCAN_LIMIT {
            return true;
        }
        let Some(last_sync) = self.entries.iter().rposition(Expect::is_sync) else {
            return false;
        };
        self.entries
            .iter()
            .take(last_sync)
            .any(|entry| touches(entry.undo()))
    }

    /// Removes the Sync entries right behind the oldest entry (a backend in COPY FROM STDIN
    /// ignores those Syncs).
    pub fn drop_syncs_after_front(&mut self) {
        while self.entries.get(1).is_some_and(Expect::is_sync) {
            if let Some(entry) = self.entries.remove(1) {
                self.count(&entry, false);
            }
        }
    }

    /// Removes the entries before the first queued Sync (the backend skips those messages
    /// after an error), newest first, so their undos apply in reverse order.
    pub fn drain_until_sync(&mut self) -> Vec<Expect> {
        let end = self
            .entries
            .iter()
            .position(Expect::is_sync)
            .unwrap_or(self.entries.len());
        let mut dropped: Vec<Expect> = self.entries.drain(..end).collect();
        for entry in &dropped {
            self.count(entry, false);
        }
        dropped.reverse();
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(kind: Kind, undo: Undo, drops_statements: bool) -> Expect {
        Expect::Reply {
            kind,
            show: Show::All,
            undo,
            care: Care {
                drops_statements,
                ..Care::default()
            },
        }
    }

    fn named() -> Undo {
        Undo {
            client: Some(("s1".to_owned(), None)),
            ..Undo::default()
        }
    }

    #[test]
    fn the_counts_follow_entries_in_and_out_whichever_way_they_leave() {
        let mut queue = Expected::default();
        queue.push(reply(Kind::Parse, named(), false));
        queue.push(reply(Kind::Sync, Undo::default(), false));
        queue.push(reply(Kind::Execute, Undo::default(), true));
        assert!(queue.owes_client_group());
        assert!(queue.drops_pending());
        assert!(queue.earlier_groups_undo(|undo| undo.client.is_some()));
        assert!(!queue.earlier_groups_undo(|undo| undo.cache.is_some()));
        // An error at the Parse: it goes, up to the Sync.
        assert_eq!(queue.drain_until_sync().len(), 1);
        assert!(
            !queue.earlier_groups_undo(|_| true),
            "nothing undoable is left"
        );
        queue.pop();
        assert!(!queue.owes_client_group());
        queue.pop();
        assert!(!queue.drops_pending());
        assert!(queue.is_empty());
        // Syncs sent into COPY FROM STDIN are dropped: they count no more.
        queue.push(reply(Kind::Execute, Undo::default(), false));
        queue.push(reply(Kind::Sync, Undo::default(), false));
        queue.drop_syncs_after_front();
        assert!(!queue.owes_client_group());
    }

    #[test]
    fn a_long_queue_with_something_to_undo_answers_maybe_without_reading_it() {
        let mut queue = Expected::default();
        queue.push(reply(Kind::Parse, named(), false));
        queue.push(reply(Kind::Sync, Undo::default(), false));
        for _ in 0..SCAN_LIMIT {
            queue.push(reply(Kind::Bind, Undo::default(), false));
        }
        assert!(
            queue.earlier_groups_undo(|_| false),
            "maybe: the caller waits"
        );
        queue.pop();
        assert!(
            !queue.earlier_groups_undo(|_| true),
            "nothing undoable left"
        );
    }
}
