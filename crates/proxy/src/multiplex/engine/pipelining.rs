//! What a pipelining client's messages wait for, and what PostgreSQL would refuse that
//! pgbastion answers itself: the translation of a message depends on the outcome of the Sync
//! groups sent before it (a statement they make, a name they give, the unnamed statement
//! they set, the transaction status they leave), so it is made only once that is known.

use pgbastion_wire::TransactionStatus;

use super::super::backend_state::BackendState;
use super::super::expect::Undo;
use super::super::statements::{leading_word, Prepared};
use super::super::wire;
use super::{deallocates_by_name, Multiplexer, MuxError};

impl Multiplexer {
    /// Whether the client message `frame` must wait until the groups sent before it are
    /// answered (a pipelining client): what it means depends on whether a message of those
    /// groups runs, and each may still fail or be skipped after an error. It may use a
    /// statement they make on the backend, a name they give or take back, or (with
    /// `cache_unnamed`) an unnamed statement they set; or replace what their undo would put
    /// back; or be a Parse pgbastion would answer itself, which it can answer as PostgreSQL
    /// would only in a known transaction status; or use a name while a `DEALLOCATE ALL` or
    /// `DISCARD ALL` before it is unanswered. Without an earlier group unanswered (no
    /// pipelining) the answer costs nothing.
    pub(super) fn must_wait(
        &self,
        tag: u8,
        frame: &[u8],
        backend: &BackendState,
    ) -> Result<bool, MuxError> {
        if !self.policy.transaction || !self.expected.owes_client_group() {
            return Ok(false);
        }
        if matches!(tag, b'P' | b'B' | b'D' | b'C') && self.expected.earlier_groups_drop() {
            // Which of the client's names exist is known once the drop is answered.
            return Ok(true);
        }
        let earlier = |touches: &dyn Fn(&Undo) -> bool| self.expected.earlier_groups_undo(touches);
        let (name, server) = match tag {
            // A simple Query drops the unnamed statement, which an earlier group's undo could
            // put back behind its back; a DEALLOCATE of the client's statement is answered
            // (with the transaction status) by pgbastion.
            b'Q' => {
                let sql = wire::query_text(frame);
                return Ok(
                    (self.policy.cache_unnamed && earlier(&|undo| undo.unnamed.is_some()))
                        || deallocates_by_name(sql, backend),
                );
            }
            b'P' => {
                let parse = wire::Parse::split(frame)?;
                if parse.name.is_empty() && deallocates_by_name(parse.query, backend) {
                    // Whether the name exists depends on the groups before (`deallocate_unnamed`).
                    return Ok(true);
                }
                if parse.name.is_empty() && !self.policy.cache_unnamed {
                    // The backend's own unnamed statement: PostgreSQL follows it itself.
                    return Ok(false);
                }
                let made = Prepared::new(parse.query, parse.types, &self.namespace);
                if backend.statements.contains(made.server_name()) {
                    return Ok(true);
                }
                (parse.name, Some(made.server_name().clone()))
            }
            b'B' => {
                let name = wire::Bind::split(frame)?.statement;
                (name, self.server_of(name))
            }
            b'D' | b'C' => match wire::split_target(frame)? {
                (b'S', name) if tag == b'D' => (name, self.server_of(name)),
                (b'S', name) => (name, None),
                _ => return Ok(false),
            },
            _ => return Ok(false),
        };
        let name_at_stake = if name.is_empty() {
            // Without cache_unnamed the backend's own unnamed statement is used as is; a
            // group that made it is its own.
            self.policy.cache_unnamed
                && !(tag != b'P' && self.unnamed_in_group)
                && earlier(&|undo| undo.unnamed.is_some())
        } else {
            let name = String::from_utf8_lossy(name);
            earlier(&|undo| {
                undo.client
                    .as_ref()
                    .is_some_and(|(given, _)| *given == name)
            })
        };
        let statement_at_stake =
            server.is_some_and(|server| earlier(&|undo| undo.cache.as_ref() == Some(&server)));
        Ok(name_at_stake || statement_at_stake)
    }

    /// The backend statement a Bind or Describe of the client's statement `name` uses.
    fn server_of(&self, name: &[u8]) -> Option<std::sync::Arc<str>> {
        self.prepared(name)
            .map(|prepared| self.read_now(prepared).server_name().clone())
    }

    /// The statement of pgbastion's that the client's statement `name` is, if pgbastion
    /// knows it (the unnamed one only with `cache_unnamed`).
    fn prepared(&self, name: &[u8]) -> Option<&std::sync::Arc<Prepared>> {
        if name.is_empty() {
            self.unnamed_stand_in.as_ref()
        } else {
            self.statements.get(&String::from_utf8_lossy(name))
        }
    }

    /// Whether PostgreSQL would refuse `parse` with 25P02 and pgbastion must say so itself:
    /// the transaction failed (and nothing earlier in the group may have ended it), the
    /// backend holds the statement (so its text parses, and pgbastion would answer the Parse
    /// without it), and the text cannot end the transaction.
    pub(super) fn refused_in_failed_transaction(
        &self,
        parse: &wire::Parse<'_>,
        backend: &BackendState,
    ) -> bool {
        if self.status != TransactionStatus::Failed
            || self.exit_in_group
            || (parse.name.is_empty() && !self.policy.cache_unnamed)
            || may_end_transaction(parse.query)
        {
            return false;
        }
        let made = Prepared::new(parse.query, parse.types, &self.namespace);
        backend.statements.contains(made.server_name())
    }
}

/// Whether `sql` may be one of the statements PostgreSQL still runs in a failed transaction
/// (COMMIT, END, ROLLBACK, ABORT, PREPARE TRANSACTION, ROLLBACK TO): true unless it plainly
/// begins with another word.
pub(super) fn may_end_transaction(sql: &str) -> bool {
    let word = leading_word(sql);
    if word.is_empty() {
        // A comment, a parenthesis: not worth reading further.
        return true;
    }
    ["commit", "end", "rollback", "abort", "prepare"]
        .iter()
        .any(|exit| word.eq_ignore_ascii_case(exit))
}

#[cfg(test)]
mod tests {
    use super::may_end_transaction;

    #[test]
    fn only_texts_that_plainly_begin_with_another_word_cannot_end_a_transaction() {
        for text in [
            "ROLLBACK",
            "  commit",
            "END",
            "abort;",
            "PREPARE TRANSACTION 'x'",
            "rollback to savepoint a",
            "/* a comment */ SELECT 1",
            "(SELECT 1)",
            "",
        ] {
            assert!(may_end_transaction(text), "{text:?}");
        }
        for text in [
            "SELECT 1",
            " insert into t values (1)",
            "DEALLOCATE ALL",
            "endless",
        ] {
            assert!(!may_end_transaction(text), "{text:?}");
        }
    }
}
