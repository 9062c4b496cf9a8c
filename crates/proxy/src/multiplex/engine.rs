//! [`Multiplexer`]: one pooled client's side of the protocol, sans IO. It reads the client's
//! messages and the backend's replies, keeps the queue of replies the backend owes, and so
//! knows exactly when the backend may go back to the pool (every Sync and Query answered,
//! the last ReadyForQuery idle, no COPY, nothing half-sent).
//!
//! In transaction mode it also makes protocol-level prepared statements survive backend
//! changes: client names are mapped to pgbastion's ([`Prepared`]), a statement is prepared
//! on whichever backend serves a Bind or Describe that needs it (its ParseComplete
//! swallowed), a Parse of a statement the backend already holds is answered by pgbastion,
//! and Close of a statement acts on the client's names only.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use pgbastion_wire::{
    BackendMessage, ErrorResponse, FrameDecoder, Severity, SqlState, TransactionStatus,
};

use super::backend_state::BackendState;
use super::expect::{Care, Expect, Expected, Kind, Show, Undo, UnnamedBefore};
use super::statements::{
    encode_parse, may_change_reading, mentions, ClientStatements, Prepared, SERVER_PREFIX,
};
use super::wire;
use crate::sql_scan::{self, Discard, Effect, StringLiterals};

mod pipelining;

use pipelining::may_end_transaction;

/// The client frame streamed through as it arrives, however long: CopyData.
const STREAMED_FROM_CLIENT: u8 = b'd';

/// Backend frames streamed through as they arrive: DataRow and CopyData.
const STREAMED_FROM_BACKEND: [u8; 2] = [b'D', b'd'];

/// The largest backend message pgbastion reads whole (every one it must look into is small).
const MAX_INSPECTED_BACKEND_MESSAGE: usize = 1 << 20;

/// How one client shares backends.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Transaction pooling: statements are renamed and the backend is released at idle.
    /// Otherwise (session pooling) messages pass unchanged and only the state is followed.
    pub transaction: bool,
    /// The most named statements one client may hold (transaction mode).
    pub statements_per_client: usize,
    /// Transaction mode: the client's unnamed statements are made on backends as named
    /// statements of pgbastion's (named by their text, like the client's named ones), so a
    /// backend parses each text once rather than at every execution.
    pub cache_unnamed: bool,
    /// Refuse statements that leave session state behind (transaction mode) instead of
    /// pinning the client to its backend.
    pub refuse_session_state: bool,
    /// The longest client message accepted.
    pub max_message_len: usize,
}

/// The client broke the protocol, or the backend's replies do not fit what it was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    /// A client message PostgreSQL would refuse; the client gets this error and is closed.
    #[error("{}", .0.message())]
    Client(ErrorResponse),
    /// The backend sent something that answers nothing asked (the connection is unusable).
    #[error("backend reply out of step: {0}")]
    Backend(String),
}

/// What a statement's text means for sharing the backend.
enum Verdict {
    /// Send it, following what it does.
    Go(Care),
    /// `DEALLOCATE` of the client's own statement `name`: answered by pgbastion.
    Deallocate(String),
    /// Refused with this error.
    Refuse(ErrorResponse),
}

/// What a client message stream asks next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFlow {
    /// Everything complete was handled; read more.
    More,
    /// The client sent Terminate (nothing after it is read).
    Terminate,
}

/// One pooled client's protocol state.
#[derive(Debug)]
pub struct Multiplexer {
    policy: Policy,
    decoder: FrameDecoder,
    statements: ClientStatements,
    /// The client's last unnamed Parse, as it sent it.
    unnamed: Option<Bytes>,
    /// Whether the current backend holds that unnamed statement.
    unnamed_here: bool,
    /// Counts the changes of the client's unnamed statement: an undo puts back the one
    /// before a Parse only while that Parse's is still the client's (without
    /// `cache_unnamed`, a later group's Parse may have replaced it before the undo).
    unnamed_generation: u64,
    /// With the pool's `cache_unnamed`: the client's last unnamed Parse (as it sent it,
    /// under the namespace it was made in) and the named statement of pgbastion's that
    /// stands for it on backends. Kept when the statement is dropped: the same text comes
    /// again.
    stand_in: Option<(Bytes, Arc<str>, Arc<Prepared>)>,
    /// The statement of pgbastion's that the client's unnamed statement is, when it is a
    /// cached one (then `unnamed` is `None`).
    unnamed_stand_in: Option<Arc<Prepared>>,
    /// Statements whose execution drops statements or parameters (`DEALLOCATE ALL`,
    /// `DISCARD ALL`, `RESET ALL` prepared through the extended protocol), by their name on
    /// the backend, or `None` for the backend's own unnamed statement; rarely any.
    dropping: Vec<(Option<Arc<str>>, Care)>,
    /// The portals bound to one of those (the last [`PORTALS_CARED_FOR`]), and what their
    /// execution does.
    portal_care: Vec<(Vec<u8>, Care)>,
    /// Whether the client's current Sync group made its unnamed statement (a Bind of it then
    /// depends on nothing sent before the group).
    unnamed_in_group: bool,
    /// Whether a message of the client's current Sync group may end a failed transaction (a
    /// Bind, or a Parse of a text that may be ROLLBACK or COMMIT): a failed status is then no
    /// longer known to hold for the rest of the group.
    exit_in_group: bool,
    /// Namespace of prepared statements: the client's settings that change what a text
    /// means when it is parsed ([`namespace_of`]).
    namespace: Arc<str>,
    /// Those settings' values on the backend the client holds (what pgbastion sets at
    /// checkout, then what the backend reports), which `namespace` is made of.
    in_force: Vec<(String, String)>,
    /// The client's parameters went back to its startup values (`RESET ALL`): the backend
    /// gets them at the next checkout, and the namespace with them.
    in_force_stale: bool,
    /// A statement of pgbastion's that the settings in `in_force` may change was parsed on
    /// the backend since its last ReadyForQuery.
    parsed_since_ready: bool,
    /// The message being handled may change those settings (its text, or that of the
    /// prepared statement it binds, says so).
    changes_reading: bool,
    /// A statement that may change them is unanswered, or in the current Sync group: a
    /// change that is undone before the group's ReadyForQuery (`SET LOCAL`, a second `SET`,
    /// a failure after it) is never reported, so what is parsed meanwhile is suspect.
    reading_unsettled: bool,
    /// Session parameters the client has (startup values, then what the backend reported
    /// while serving it).
    wanted: Vec<(String, String)>,
    /// The startup values (what `RESET ALL` returns to).
    startup: Vec<(String, String)>,
    expected: Expected,
    /// The server side ignores client messages until the next Sync (after an error).
    discarding: bool,
    status: TransactionStatus,
    /// Why the client keeps its backend for the rest of its session.
    pinned: Option<String>,
    /// The backend is in COPY.
    copy: bool,
    /// A message pgbastion sent for itself failed: the backend's state is unknown.
    own_failed: bool,
    /// The first error of such a message.
    own_error: Option<ErrorResponse>,
    /// An error came in the reply at the front of the queue.
    front_failed: bool,
    /// The backend's statements are unknown: it is closed when the client gives it back.
    dirty: bool,
    /// The client is inside an extended-query group (a message since its last Sync): the
    /// backend holds its portals and implicit transaction until the Sync.
    in_group: bool,
    /// The backend is in COPY FROM STDIN: it ignores the client's Sync and Flush until the
    /// client's CopyDone or CopyFail.
    copy_in: bool,
    /// Bytes of a streamed client frame still to forward.
    client_stream: usize,
    /// Bytes of a streamed backend frame still to pass on (or drop).
    backend_stream: usize,
    /// The tag of the last whole backend message.
    last_backend_tag: u8,
    backend_stream_forward: bool,
    /// A Flush was sent to the backend when the client reached [`OWED_LIMIT`].
    flushed_at_limit: bool,
    /// The last statement text [`judge`](Self::judge) found to leave nothing behind, with
    /// how its literals were lexed: clients send the same text again and again (an unnamed
    /// Parse per execution), and such a text means the same whatever the session's state.
    harmless: Option<(StringLiterals, String)>,
}

/// The statement of pgbastion's that a client's `DEALLOCATE name` deallocates on the backend
/// (made just before; clients cannot name it: it has pgbastion's prefix).
const SCRATCH_STATEMENT: &str = "pgbastion_deallocate";

/// The longest statement text remembered as harmless.
const HARMLESS_MEMO: usize = 256;

/// How many portals bound to a statement that drops statements or parameters are followed
/// at once (a client holds one or two; a bound keeps a client from growing the list).
const PORTALS_CARED_FOR: usize = 8;

/// How many replies a client may be owed before its next messages wait: a client that
/// sends without reading gets what PostgreSQL's output buffer would give it, not memory
/// without bound (the answers pgbastion makes itself wait behind the backend's).
const OWED_LIMIT: usize = 4096;

impl Multiplexer {
    /// A client with `wanted` session parameters (names as PostgreSQL reports them).
    pub fn new(policy: Policy, wanted: Vec<(String, String)>) -> Self {
        let in_force = read_under(&wanted);
        let namespace = namespace_of(&in_force);
        Self {
            decoder: FrameDecoder::frontend(policy.max_message_len),
            statements: ClientStatements::new(policy.statements_per_client),
            policy,
            unnamed: None,
            unnamed_here: false,
            unnamed_generation: 0,
            stand_in: None,
            unnamed_stand_in: None,
            unnamed_in_group: false,
            exit_in_group: false,
            dropping: Vec::new(),
            portal_care: Vec::new(),
            namespace,
            in_force,
            in_force_stale: false,
            parsed_since_ready: false,
            changes_reading: false,
            reading_unsettled: false,
            startup: wanted.clone(),
            wanted,
            expected: Expected::default(),
            discarding: false,
            status: TransactionStatus::Idle,
            pinned: None,
            copy: false,
            own_failed: false,
            own_error: None,
            front_failed: false,
            dirty: false,
            in_group: false,
            copy_in: false,
            client_stream: 0,
            backend_stream: 0,
            last_backend_tag: 0,
            backend_stream_forward: true,
            flushed_at_limit: false,
            harmless: None,
        }
    }

    /// Whether the backend may go back to the pool now: transaction mode, not pinned, and
    /// [`reusable`](Self::reusable).
    pub fn releasable(&self) -> bool {
        self.policy.transaction && self.pinned.is_none() && self.reusable()
    }

    /// Whether the backend is in a state another client could start from (after a reset in
    /// session mode): nothing owed, idle, not in COPY, no message half-relayed, and every
    /// message of pgbastion's own succeeded.
    pub fn reusable(&self) -> bool {
        self.expected.is_empty()
            && self.status == TransactionStatus::Idle
            && !self.copy
            && !self.own_failed
            && self.client_stream == 0
            && self.backend_stream == 0
            && !self.discarding
            && !self.in_group
    }

    /// Whether a client message is half passed on to the backend.
    pub fn mid_client_message(&self) -> bool {
        self.client_stream > 0
    }

    /// Whether a backend message is half passed on to the client (nothing may be said to
    /// the client until it is whole).
    pub fn mid_backend_message(&self) -> bool {
        self.backend_stream > 0
    }

    /// Whether the backend is working for the client (a cancel may be forwarded).
    pub fn busy(&self) -> bool {
        !self.expected.is_empty()
    }

    /// The last transaction status the backend reported.
    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    /// Keeps the client on its backend for the rest of its session; returns whether it was
    /// not pinned before (for one log line).
    pub fn pin(&mut self, why: &str) -> bool {
        let first = self.pinned.is_none();
        if first {
            self.pinned = Some(why.to_owned());
        }
        first
    }

    /// Why the client is pinned, if it is.
    pub fn pinned(&self) -> Option<&str> {
        self.pinned.as_deref()
    }

    /// Whether the backend must be closed rather than given back: what it holds is unknown.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Whether the backend must be closed when it goes back ([`dirty`](Self::dirty)); the
    /// next one starts clean.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Whether a message of pgbastion's own failed (the backend must be closed).
    pub fn own_failed(&self) -> bool {
        self.own_failed
    }

    /// The backend's error for a message of pgbastion's own (a session parameter it would
    /// not take, a session switch that failed).
    pub fn own_error(&self) -> Option<&ErrorResponse> {
        self.own_error.as_ref()
    }

    /// Whether a group of pgbastion's own (session parameters, the switch) is still
    /// unanswered.
    pub fn owes_own(&self) -> bool {
        self.expected.owes_hidden_group()
    }

    /// The session parameters the client has now.
    pub fn wanted(&self) -> &[(String, String)] {
        &self.wanted
    }

    /// Whether the backend's last message was an ErrorResponse (when it then closes, the
    /// client has been told why).
    pub fn last_was_error(&self) -> bool {
        self.last_backend_tag == b'E'
    }

    /// No backend could be had: every whole client message in `input` is answered as
    /// PostgreSQL answers a failed batch (the error once, then ReadyForQuery for each Sync,
    /// Query or FunctionCall), and consumed.
    pub fn refuse(
        &mut self,
        input: &mut BytesMut,
        error: &ErrorResponse,
        to_client: &mut BytesMut,
    ) -> ClientFlow {
        let error = wire::error(error.clone());
        let mut told = false;
        while let Ok(Some((tag, total))) = self.decoder.peek_header(input) {
            if input.len() < total {
                break;
            }
            let _ = input.split_to(total);
            if tag == b'X' {
                return ClientFlow::Terminate;
            }
            if !told {
                to_client.extend_from_slice(&error);
                told = true;
            }
            if tag == b'P' {
                // Whatever it prepared, the unnamed statement is not the one it had.
                self.forget_unnamed();
            }
            if matches!(tag, b'S' | b'Q' | b'F') {
                to_client.extend_from_slice(&wire::ready(self.status));
                told = false;
            }
        }
        // The rest of a group cut here must not run on the next backend: as after any error,
        // the client's messages are ignored up to its Sync.
        self.discarding |= told;
        ClientFlow::More
    }

    /// Whether `input` holds a client message to handle (the caller then needs a backend).
    pub fn has_client_message(&self, input: &[u8]) -> Result<bool, MuxError> {
        if self.client_stream > 0 {
            return Ok(!input.is_empty());
        }
        match self.decoder.peek_header(input) {
            Ok(Some((tag, total))) => Ok(tag == STREAMED_FROM_CLIENT || input.len() >= total),
            Ok(None) => Ok(false),
            Err(_) => Err(invalid_length()),
        }
    }

    /// A backend was checked out for this client: queues what makes it the client's (its
    /// session parameters; `switch`, pgbastion's own statement telling the backend who the
    /// client is) into `to_backend`, in a Sync group of its own whose replies the client
    /// never sees; then closes statements evicted from the backend's cache.
    pub fn begin(
        &mut self,
        backend: &mut BackendState,
        switch: Option<&Bytes>,
        to_backend: &mut BytesMut,
    ) {
        self.unnamed_here = false;
        self.status = TransactionStatus::Idle;
        self.parsed_since_ready = false;
        // Nothing the client sent before is unanswered.
        self.reading_unsettled = false;
        if std::mem::take(&mut self.in_force_stale) {
            self.in_force = read_under(&self.wanted);
            self.namespace = namespace_of(&self.in_force);
        }
        let changes = backend.changes_for(&self.wanted);
        if !changes.is_empty() {
            wire::set_config(&changes, to_backend);
            self.own_group();
        }
        if let Some(switch) = switch {
            to_backend.extend_from_slice(switch);
            self.own_group();
        }
        if self.policy.transaction {
            self.evict(backend, to_backend);
        }
    }

    /// Closes the statements beyond the backend cache's capacity (replies unseen).
    fn evict(&mut self, backend: &mut BackendState, to_backend: &mut BytesMut) {
        for name in backend.statements.evict() {
            wire::close_statement(&name, to_backend);
            self.own(Kind::Close, Show::Nothing);
        }
    }

    /// Expects the replies of an unnamed Parse, Bind, Execute and Sync of pgbastion's own.
    fn own_group(&mut self) {
        for kind in [Kind::Parse, Kind::Bind, Kind::Execute, Kind::Sync] {
            self.own(kind, Show::Nothing);
        }
    }

    fn own(&mut self, kind: Kind, show: Show) {
        self.expected.push(Expect::Reply {
            kind,
            show,
            undo: Undo::default(),
            care: Care::default(),
        });
    }

    /// Handles every complete client message in `input` (consuming it): what goes to the
    /// backend is appended to `to_backend`, pgbastion's own answers to `to_client` (in turn).
    pub fn from_client(
        &mut self,
        input: &mut BytesMut,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<ClientFlow, MuxError> {
        if self.policy.transaction && self.expected.is_empty() && !self.in_group {
            // Between exchanges: the statements beyond the cache's capacity are closed.
            self.evict(backend, to_backend);
        }
        loop {
            if self.client_stream > 0 {
                let take = self.client_stream.min(input.len());
                if take == 0 {
                    return Ok(ClientFlow::More);
                }
                if !self.discarding {
                    to_backend.extend_from_slice(&input[..take]);
                }
                input.advance(take);
                self.client_stream -= take;
                continue;
            }
            let Some((tag, total)) = self
                .decoder
                .peek_header(input)
                .map_err(|_| invalid_length())?
            else {
                return Ok(ClientFlow::More);
            };
            if tag == STREAMED_FROM_CLIENT {
                self.client_stream = total;
                continue;
            }
            if input.len() < total {
                return Ok(ClientFlow::More);
            }
            if self.expected.len() >= OWED_LIMIT {
                // The front reply may be one the backend keeps until a Flush or a Sync.
                if !std::mem::replace(&mut self.flushed_at_limit, true) && !self.copy_in {
                    to_backend.extend_from_slice(wire::FLUSH);
                }
                return Ok(ClientFlow::More);
            }
            self.flushed_at_limit = false;
            if !self.discarding && self.must_wait(tag, &input[..total], backend)? {
                // Read again once the backend has answered what came before.
                return Ok(ClientFlow::More);
            }
            if tag == b'X' {
                input.clear();
                return Ok(ClientFlow::Terminate);
            }
            let frame = input.split_to(total).freeze();
            self.client_message(tag, frame, backend, to_backend, to_client)?;
            // (After the message: its own Parse is read under the settings before it.)
            self.reading_unsettled |= std::mem::take(&mut self.changes_reading);
        }
    }

    fn client_message(
        &mut self,
        tag: u8,
        frame: Bytes,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<(), MuxError> {
        if self.discarding && tag != b'S' {
            // As PostgreSQL after an error: everything up to Sync is ignored.
            return Ok(());
        }
        let ends_group = matches!(tag, b'Q' | b'F') || (tag == b'S' && !self.copy_in);
        if ends_group {
            self.unnamed_in_group = false;
            self.exit_in_group = false;
        }
        self.in_group = matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C' | b'H')
            || (self.in_group && !ends_group);
        match tag {
            b'S' | b'H' if self.copy_in => {
                // Ignored by PostgreSQL in COPY FROM STDIN: no reply is owed.
                to_backend.extend_from_slice(&frame);
            }
            b'S' => {
                self.discarding = false;
                self.forward(Kind::Sync, frame, to_backend);
            }
            b'c' | b'f' => {
                self.copy_in = false;
                to_backend.extend_from_slice(&frame);
            }
            b'H' => to_backend.extend_from_slice(&frame),
            b'F' if self.policy.transaction => {
                // What a fastpath call does cannot be read: when unsure, pin.
                self.pin_for("a function call (fastpath)");
                self.forward(Kind::FunctionCall, frame, to_backend);
            }
            b'Q' if self.policy.transaction => self.query(frame, backend, to_backend, to_client),
            b'Q' => self.forward(Kind::Query, frame, to_backend),
            b'F' => self.forward(Kind::FunctionCall, frame, to_backend),
            b'E' => {
                let portal = wire::execute_portal(&frame)?;
                let care = self
                    .portal_care
                    .iter()
                    .find(|(bound, _)| **bound == *portal)
                    .map_or_else(Care::default, |(_, care)| *care);
                self.forward_with(Kind::Execute, frame, care, to_backend);
            }
            b'P' | b'B' | b'C' | b'D' if !self.policy.transaction => {
                let kind = match tag {
                    b'P' => Kind::Parse,
                    b'B' => Kind::Bind,
                    b'C' => Kind::Close,
                    _ => Kind::Describe,
                };
                self.forward(kind, frame, to_backend);
            }
            b'P' => self.parse(frame, backend, to_backend, to_client)?,
            b'B' => {
                // A Bind in a failed transaction runs only for a ROLLBACK or COMMIT.
                self.exit_in_group = true;
                let bind = wire::Bind::split(&frame)?;
                match self.statement_for(bind.statement, backend, to_backend)? {
                    Some(prepared) => {
                        self.changes_reading |= prepared.changes_reading();
                        let server = prepared.server_name();
                        if !self.dropping.is_empty() || !self.portal_care.is_empty() {
                            self.bound(bind.portal, Some(server));
                        }
                        self.forward(Kind::Bind, bind.renamed(server), to_backend);
                    }
                    // The backend's unnamed statement is the client's only when it holds the
                    // client's (otherwise it may be anyone's: another client's, the switch's).
                    None if bind.statement.is_empty() && self.unnamed_here => {
                        if !self.dropping.is_empty() || !self.portal_care.is_empty() {
                            self.bound(bind.portal, None);
                        }
                        self.forward(Kind::Bind, frame, to_backend);
                    }
                    None => self.missing_statement(bind.statement, to_client),
                }
            }
            b'D' | b'C' => {
                let (target, name) = wire::split_target(&frame)?;
                let kind = if tag == b'D' {
                    Kind::Describe
                } else {
                    Kind::Close
                };
                if target != b'S' {
                    self.forward(kind, frame, to_backend);
                    return Ok(());
                }
                let name = name.to_vec();
                if kind == Kind::Close {
                    self.close_statement(&name, frame, to_backend, to_client);
                    return Ok(());
                }
                match self.statement_for(&name, backend, to_backend)? {
                    Some(prepared) => {
                        let describe = wire::describe_statement(prepared.server_name());
                        self.forward(Kind::Describe, describe, to_backend);
                    }
                    None if name.is_empty() && self.unnamed_here => {
                        self.forward(kind, frame, to_backend);
                    }
                    None => self.missing_statement(&name, to_client),
                }
            }
            other => return Err(wire::unknown_message(other)),
        }
        Ok(())
    }

    fn forward(&mut self, kind: Kind, frame: Bytes, to_backend: &mut BytesMut) {
        self.forward_with(kind, frame, Care::default(), to_backend);
    }

    fn forward_with(&mut self, kind: Kind, frame: Bytes, care: Care, to_backend: &mut BytesMut) {
        to_backend.extend_from_slice(&frame);
        self.expected.push(Expect::Reply {
            kind,
            show: Show::All,
            undo: Undo::default(),
            care,
        });
    }

    /// Queues an answer of pgbastion's own, sent as soon as its turn comes.
    fn answer(&mut self, message: Bytes, undo: Undo, to_client: &mut BytesMut) {
        self.expected.push(Expect::Own { message, undo });
        self.emit_own(to_client);
    }

    /// Sends the answers of pgbastion's own that have come to the front.
    fn emit_own(&mut self, to_client: &mut BytesMut) {
        while matches!(self.expected.front(), Some(Expect::Own { .. })) {
            if let Some(Expect::Own { message, .. }) = self.expected.pop() {
                to_client.extend_from_slice(&message);
            }
        }
    }

    /// An error of pgbastion's own for the current extended-query batch: the rest of it is
    /// ignored up to Sync, as PostgreSQL would.
    fn fail_batch(&mut self, code: SqlState, message: String, to_client: &mut BytesMut) {
        self.fail_batch_with(
            ErrorResponse::new(Severity::Error, code, message),
            to_client,
        );
    }

    fn fail_batch_with(&mut self, error: ErrorResponse, to_client: &mut BytesMut) {
        self.answer(wire::error(error), Undo::default(), to_client);
        self.discarding = true;
    }

    /// A simple query in transaction mode: judged for session state first; `DEALLOCATE` of
    /// one of the client's statements is answered here.
    fn query(
        &mut self,
        frame: Bytes,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) {
        // A simple query drops the unnamed statement.
        self.forget_unnamed();
        let sql = wire::query_text(&frame);
        match self.judge(sql, backend) {
            Verdict::Go(care) => self.forward_with(Kind::Query, frame, care, to_backend),
            // Answered here only when the transaction status it reports is known: a
            // pipelining client's waits for its groups before (`must_wait`), and only
            // extended messages without their Sync can still be owed here.
            Verdict::Deallocate(_) if self.expected.owes_client() => {
                self.forward(Kind::Query, frame, to_backend);
            }
            Verdict::Deallocate(_) if self.status == TransactionStatus::Failed => {
                self.answer(
                    wire::error(in_failed_transaction()),
                    Undo::default(),
                    to_client,
                );
                self.answer(wire::ready(self.status), Undo::default(), to_client);
            }
            Verdict::Deallocate(name) => {
                self.statements.remove(&name);
                let done = wire::encode(&BackendMessage::CommandComplete {
                    tag: "DEALLOCATE".into(),
                });
                self.answer(done, Undo::default(), to_client);
                self.answer(wire::ready(self.status), Undo::default(), to_client);
            }
            Verdict::Refuse(error) => {
                self.answer(wire::error(error), Undo::default(), to_client);
                self.answer(wire::ready(self.status), Undo::default(), to_client);
            }
        }
    }

    /// What `sql` means for sharing the backend: statements that leave session state
    /// behind pin the client (or are refused, as the route says); parameters the backend
    /// reports are followed; dropping statements or parameters is followed.
    fn judge(&mut self, sql: &str, backend: &BackendState) -> Verdict {
        let literals = literals_of(backend);
        if self
            .harmless
            .as_ref()
            .is_some_and(|(lexed, text)| *lexed == literals && text == sql)
        {
            return Verdict::Go(Care::default());
        }
        let scan = sql_scan::scan_with(sql, literals);
        let changes = changes_reading(sql, &scan.effects);
        self.changes_reading |= changes;
        if scan.effects.is_empty()
            && sql.len() <= HARMLESS_MEMO
            && !changes
            && !mentions_search_path(sql)
        {
            // Its verdict depends on nothing else: no effect to weigh against the session.
            let (lexed, text) = self.harmless.get_or_insert_with(Default::default);
            *lexed = literals;
            text.clear();
            text.push_str(sql);
            return Verdict::Go(Care::default());
        }
        let mut care = Care::default();
        for effect in scan.effects {
            let sticky = match effect {
                Effect::Sticky { what } => what.to_owned(),
                // Statements are shared by what they mean, search_path included: a client
                // that changes it keeps its backend.
                Effect::SetParameter { name } if name == "search_path" => {
                    "SET search_path".to_owned()
                }
                Effect::SetParameter { name } if backend.reports(&name) => continue,
                Effect::SetParameter { name } => format!("SET {name}"),
                Effect::ResetAll => {
                    care.reapply = true;
                    continue;
                }
                Effect::Discard(Discard::All) => {
                    care.reapply = true;
                    care.drops_statements = true;
                    care.several = scan.statements > 1;
                    continue;
                }
                Effect::Deallocate { name: None } => {
                    care.drops_statements = true;
                    care.several = scan.statements > 1;
                    continue;
                }
                Effect::Deallocate { name: Some(name) } if name.starts_with(SERVER_PREFIX) => {
                    // pgbastion's own statements are shared; clients see only their names.
                    return Verdict::Refuse(ErrorResponse::new(
                        Severity::Error,
                        SqlState::INVALID_SQL_STATEMENT_NAME,
                        format!("prepared statement \"{name}\" does not exist"),
                    ));
                }
                Effect::Deallocate { name: Some(name) } => {
                    if scan.statements == 1 && self.statements.get(&name).is_some() {
                        return Verdict::Deallocate(name);
                    }
                    continue;
                }
                Effect::Discard(Discard::Temp) => "DISCARD TEMP".to_owned(),
                Effect::Discard(Discard::Plans | Discard::Sequences) => continue,
            };
            if self.pinned.is_some() {
                continue;
            }
            if self.policy.refuse_session_state {
                return Verdict::Refuse(ErrorResponse::new(
                    Severity::Error,
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!(
                        "{sticky} is not available through a transaction pool: it would stay \
                         on a backend that other clients share (this route's pool refuses it; \
                         with session_state = \"pin\" the client would keep its backend)"
                    ),
                ));
            }
            self.pin_for(&sticky);
        }
        if self.pinned.is_none() && mentions_search_path(sql) {
            // SET LOCAL search_path and set_config('search_path', …, true) leave nothing
            // behind, but statements prepared meanwhile would be shared under the wrong
            // path: when unsure, pin.
            self.pin_for("search_path changed in a transaction");
        }
        Verdict::Go(care)
    }

    /// Pins the client, with one log line.
    fn pin_for(&mut self, why: &str) {
        if self.pin(why) {
            tracing::info!(
                reason = why,
                "client pinned to its backend for the rest of its session"
            );
        }
    }

    fn missing_statement(&mut self, name: &[u8], to_client: &mut BytesMut) {
        let message = if name.is_empty() {
            "unnamed prepared statement does not exist".to_owned()
        } else {
            format!(
                "prepared statement \"{}\" does not exist",
                String::from_utf8_lossy(name)
            )
        };
        self.fail_batch(SqlState::INVALID_SQL_STATEMENT_NAME, message, to_client);
    }

    fn parse(
        &mut self,
        frame: Bytes,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<(), MuxError> {
        let parse = wire::Parse::split(&frame)?;
        // (Whatever the status now: a pipelining client's may be older than the group.)
        self.exit_in_group |= may_end_transaction(parse.query);
        let care = match self.judge(parse.query, backend) {
            Verdict::Go(care) if care == Care::default() => care,
            Verdict::Go(care) => {
                // Its execution is followed (the Execute of a portal bound to it), but what
                // it drops reaches past pgbastion's view: the client keeps its backend.
                self.pin_for("DEALLOCATE, DISCARD or RESET ALL as a prepared statement");
                care
            }
            // Rewritten once the groups before are answered (whether the name exists may
            // depend on them); in any transaction status, PostgreSQL answers the rewritten
            // Parse as it would the client's.
            Verdict::Deallocate(name)
                if parse.name.is_empty() && !self.expected.owes_client_group() =>
            {
                self.deallocate_unnamed(name, &parse, to_backend);
                return Ok(());
            }
            Verdict::Deallocate(_) => {
                self.pin_for("DEALLOCATE as a prepared statement");
                Care::default()
            }
            Verdict::Refuse(error) => {
                self.fail_batch_with(error, to_client);
                return Ok(());
            }
        };
        if self.refused_in_failed_transaction(&parse, backend) {
            self.refuse_in_failed_transaction(parse.name.is_empty(), to_client);
            return Ok(());
        }
        if parse.name.is_empty() {
            let before = self.unnamed_before();
            self.unnamed_in_group = true;
            if self.policy.cache_unnamed {
                let prepared = self.cache_unnamed(&frame, &parse);
                let undo = self.unnamed_replaced(before);
                self.note_dropping(Some(prepared.server_name()), care);
                self.prepare_here(&prepared, undo, backend, to_backend, to_client);
                return Ok(());
            }
            self.note_dropping(None, care);
            self.forget_unnamed();
            self.unnamed = Some(frame.clone());
            self.unnamed_here = true;
            let undo = self.unnamed_replaced(before);
            to_backend.extend_from_slice(&frame);
            self.expected.push(Expect::Reply {
                kind: Kind::Parse,
                show: Show::All,
                undo,
                care: Care::default(),
            });
            return Ok(());
        }
        let (name, prepared, previous) = match self.register(&parse) {
            Ok(registered) => registered,
            Err((code, message)) => {
                self.fail_batch(code, message, to_client);
                return Ok(());
            }
        };
        let undo = Undo {
            client: Some((name, previous)),
            ..Undo::default()
        };
        self.note_dropping(Some(prepared.server_name()), care);
        self.prepare_here(&prepared, undo, backend, to_backend, to_client);
        Ok(())
    }

    /// Refuses a Parse as PostgreSQL does in a failed transaction (an unnamed one drops the
    /// unnamed statement first).
    fn refuse_in_failed_transaction(&mut self, unnamed: bool, to_client: &mut BytesMut) {
        if unnamed {
            self.forget_unnamed();
        }
        self.fail_batch_with(in_failed_transaction(), to_client);
    }

    /// `DEALLOCATE name` of the client's own statement, parsed unnamed (psycopg deallocates
    /// the statements its cache evicts so): the client's name is dropped, and the backend,
    /// which knows the statement under its shared name, deallocates a statement of
    /// pgbastion's made for the purpose instead, so that the client gets PostgreSQL's own
    /// replies to its Bind, Describe and Execute.
    fn deallocate_unnamed(
        &mut self,
        name: String,
        parse: &wire::Parse<'_>,
        to_backend: &mut BytesMut,
    ) {
        let before = self.unnamed_before();
        let previous = self.statements.remove(&name);
        // Closed first: one left by a group that failed before its DEALLOCATE ran.
        wire::close_statement(SCRATCH_STATEMENT, to_backend);
        self.own(Kind::Close, Show::Nothing);
        // ROLLBACK: a text PostgreSQL parses in a failed transaction too (it is never run).
        to_backend.extend_from_slice(&encode_parse(SCRATCH_STATEMENT, "ROLLBACK", &[0, 0]));
        self.own(Kind::Parse, Show::Nothing);
        let frame = encode_parse("", &format!("DEALLOCATE {SCRATCH_STATEMENT}"), parse.types);
        self.forget_unnamed();
        self.unnamed = Some(frame.clone());
        self.unnamed_here = true;
        self.unnamed_in_group = true;
        to_backend.extend_from_slice(&frame);
        let undo = Undo {
            client: Some((name, previous)),
            ..self.unnamed_replaced(before)
        };
        self.expected.push(Expect::Reply {
            kind: Kind::Parse,
            show: Show::All,
            undo,
            care: Care::default(),
        });
    }

    /// Remembers that executing the statement `server` (`None`: the backend's unnamed one)
    /// does what `care` says.
    fn note_dropping(&mut self, server: Option<&Arc<str>>, care: Care) {
        let server = server.cloned();
        self.dropping.retain(|(known, _)| *known != server);
        if care != Care::default() {
            self.dropping.push((server, care));
        }
    }

    /// A Bind of the statement `server` (`None`: the backend's unnamed one) to `portal`:
    /// what executing that portal does is followed.
    fn bound(&mut self, portal: &[u8], server: Option<&Arc<str>>) {
        // A portal bound again is another (the unnamed one is, at every Bind).
        self.portal_care.retain(|(bound, _)| bound != portal);
        let care = self
            .dropping
            .iter()
            .find(|(known, _)| known.as_ref() == server)
            .map(|(_, care)| *care);
        if let Some(care) = care {
            if self.portal_care.len() == PORTALS_CARED_FOR {
                self.portal_care.remove(0);
            }
            self.portal_care.push((portal.to_vec(), care));
        }
    }

    /// A client's Parse of `prepared`: answered here when the backend has the statement
    /// already, else sent as pgbastion's Parse, whose reply the client sees. `undo` is what
    /// a failure takes back.
    fn prepare_here(
        &mut self,
        prepared: &Prepared,
        mut undo: Undo,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) {
        let server = prepared.server_name().clone();
        if backend.statements.touch(&server) {
            if !self.statements_uncertain() {
                self.answer(wire::PARSE_COMPLETE.clone(), undo, to_client);
                return;
            }
            self.close_before_remaking(&server, to_backend);
        }
        backend.statements.insert(server.clone());
        to_backend.extend_from_slice(prepared.parse());
        undo.cache = Some(server);
        self.parse_sent(prepared);
        self.expected.push(Expect::Reply {
            kind: Kind::Parse,
            show: Show::All,
            undo,
            care: Care::of_parse(prepared),
        });
    }

    /// The client's unnamed Parse `frame` makes its unnamed statement, stood in for by a
    /// named statement of pgbastion's (made once for a run of the same text), which is
    /// returned.
    fn cache_unnamed(&mut self, frame: &Bytes, parse: &wire::Parse<'_>) -> Arc<Prepared> {
        self.forget_unnamed();
        let prepared = match &self.stand_in {
            Some((last, namespace, prepared)) if last == frame && *namespace == self.namespace => {
                prepared.clone()
            }
            _ => {
                let prepared = Arc::new(Prepared::new(parse.query, parse.types, &self.namespace));
                self.stand_in = Some((frame.clone(), self.namespace.clone(), prepared.clone()));
                prepared
            }
        };
        self.unnamed_stand_in = Some(prepared.clone());
        prepared
    }

    /// The client's unnamed statement is gone (or replaced).
    fn forget_unnamed(&mut self) {
        self.unnamed = None;
        self.unnamed_here = false;
        self.unnamed_stand_in = None;
        self.unnamed_generation += 1;
    }

    /// The client's unnamed statement now, for an undo.
    fn unnamed_before(&self) -> UnnamedBefore {
        UnnamedBefore {
            parse: self.unnamed.clone(),
            here: self.unnamed_here,
            stand_in: self.unnamed_stand_in.clone(),
            generation: self.unnamed_generation,
            made: self.unnamed_generation,
        }
    }

    /// The backend reported `name` (one of [`READ_UNDER`]) now `value`, whatever changed it
    /// (a `SET`, `SET LOCAL` or `set_config` in any statement, the end of the transaction
    /// that set it, `RESET ALL`). Texts are read under it from now on; one of pgbastion's
    /// statements parsed since the backend's last ReadyForQuery, or still to be, may have been
    /// read under it already while named after the settings before: the backend's
    /// statements are then unknown (made again before each use, the backend closed when
    /// given back), so that no other client meets such a statement.
    fn reading_changed(&mut self, name: &str, value: &str) {
        set(&mut self.in_force, name.to_owned(), value.to_owned());
        let namespace = namespace_of(&self.in_force);
        if namespace != self.namespace {
            self.namespace = namespace;
            if self.parsed_since_ready || self.expected.parse_pending() {
                self.dirty = true;
            }
        }
    }

    /// A Parse of `prepared` under its shared name is sent: while a statement that may change
    /// how it reads is unanswered, what it will mean is not known, and the backend's
    /// statements count as unknown (see [`reading_changed`](Self::reading_changed)).
    fn parse_sent(&mut self, prepared: &Prepared) {
        if self.reading_unsettled && prepared.read_under_settings() {
            self.dirty = true;
        }
    }

    /// `prepared` as the client reads it now: made under settings it has changed since, the
    /// same text and types under the ones it has now. (PostgreSQL would keep the first
    /// reading; what must not happen is a statement read under one client's settings named
    /// after another's.)
    fn read_now(&self, prepared: &Arc<Prepared>) -> Arc<Prepared> {
        let reading = &self.namespace;
        if prepared.namespace() == reading {
            return prepared.clone();
        }
        match wire::Parse::split(prepared.parse()) {
            Ok(parse) => Arc::new(Prepared::new(parse.query, parse.types, reading)),
            Err(_) => prepared.clone(),
        }
    }

    /// The undo of a Parse that replaced the client's unnamed statement, which was `before`.
    fn unnamed_replaced(&self, before: UnnamedBefore) -> Undo {
        Undo {
            unnamed: Some(UnnamedBefore {
                made: self.unnamed_generation,
                ..before
            }),
            ..Undo::default()
        }
    }

    /// Gives the client's statement its name: refused when the name is taken or the client
    /// holds as many statements as it may. Returns the name, the statement, and what the
    /// name meant before (for an undo).
    #[allow(clippy::type_complexity)]
    fn register(
        &mut self,
        parse: &wire::Parse<'_>,
    ) -> Result<(String, Arc<Prepared>, Option<Arc<Prepared>>), (SqlState, String)> {
        let name = String::from_utf8_lossy(parse.name).into_owned();
        if self.statements.get(&name).is_some() {
            let message = format!("prepared statement \"{name}\" already exists");
            return Err((SqlState::DUPLICATE_PREPARED_STATEMENT, message));
        }
        if self.statements.is_full() {
            let message = format!(
                "too many prepared statements: a client may hold {} through a transaction pool \
                 (close some, or raise the pool's statements_per_client)",
                self.policy.statements_per_client
            );
            return Err((SqlState::PROGRAM_LIMIT_EXCEEDED, message));
        }
        let prepared = Arc::new(Prepared::new(parse.query, parse.types, &self.namespace));
        let previous = self.statements.insert(name.clone(), prepared.clone());
        Ok((name, prepared, previous))
    }

    /// With no backend held (transaction mode, between transactions): answers the whole
    /// Sync groups at the start of `input` that only prepare or close statements, as a
    /// backend would, without taking one from the pool. The statements are prepared on a
    /// backend when a Bind or Describe first needs them (an error in their text then shows
    /// there). Besides sparing a checkout, this keeps a client that prepares synchronously
    /// (pgbench -M prepared, PQprepare) from waiting for a backend while other clients of
    /// the same thread hold every backend in their transactions. Returns whether anything was
    /// answered.
    pub fn answer_without_backend(
        &mut self,
        input: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<bool, MuxError> {
        if !self.policy.transaction || !self.expected.is_empty() || self.client_stream > 0 {
            return Ok(false);
        }
        let mut answered = false;
        while let Some(group) = self.local_group(input)? {
            let frames = input.split_to(group).freeze();
            let mut at = 0;
            while at < frames.len() {
                let total = u32::from_be_bytes([
                    frames[at + 1],
                    frames[at + 2],
                    frames[at + 3],
                    frames[at + 4],
                ]) as usize
                    + 1;
                let frame = frames.slice(at..at + total);
                at += total;
                if self.discarding && frame[0] != b'S' {
                    continue;
                }
                match frame[0] {
                    b'P' => {
                        let parse = wire::Parse::split(&frame)?;
                        if parse.name.is_empty() && self.policy.cache_unnamed {
                            self.cache_unnamed(&frame, &parse);
                            to_client.extend_from_slice(&wire::PARSE_COMPLETE);
                        } else if parse.name.is_empty() {
                            self.forget_unnamed();
                            self.unnamed = Some(frame.clone());
                            to_client.extend_from_slice(&wire::PARSE_COMPLETE);
                        } else {
                            match self.register(&parse) {
                                Ok(_) => to_client.extend_from_slice(&wire::PARSE_COMPLETE),
                                Err((code, message)) => {
                                    let error = ErrorResponse::new(Severity::Error, code, message);
                                    to_client.extend_from_slice(&wire::error(error));
                                    self.discarding = true;
                                }
                            }
                        }
                    }
                    b'C' => {
                        let (_, name) = wire::split_target(&frame)?;
                        if name.is_empty() {
                            self.forget_unnamed();
                        } else {
                            self.statements.remove(&String::from_utf8_lossy(name));
                        }
                        to_client.extend_from_slice(&wire::CLOSE_COMPLETE);
                    }
                    b'S' => {
                        self.discarding = false;
                        to_client.extend_from_slice(&wire::ready(TransactionStatus::Idle));
                    }
                    // Flush: everything is answered already.
                    _ => {}
                }
            }
            answered = true;
        }
        Ok(answered)
    }

    /// The length of the Sync group at the start of `input` if it is whole and pgbastion can
    /// answer it alone: named or unnamed Parses whose text changes no session state, Closes
    /// of statements, Flushes, then the Sync.
    fn local_group(&self, input: &[u8]) -> Result<Option<usize>, MuxError> {
        // The messages first, the texts only then: a group with a Bind (the usual one) needs
        // a backend whatever its Parse says.
        let mut at = 0;
        let end = loop {
            let Some((tag, total)) = self
                .decoder
                .peek_header(&input[at..])
                .map_err(|_| invalid_length())?
            else {
                return Ok(None);
            };
            let Some(frame) = input.get(at..at + total) else {
                return Ok(None);
            };
            at += total;
            match tag {
                b'S' => break at,
                // Ignored up to the Sync (after an error): nothing needs a backend.
                b'd' | b'X' => return Ok(None),
                _ if self.discarding => {}
                b'H' | b'P' => {}
                b'C' if wire::split_target(frame)?.0 == b'S' => {}
                _ => return Ok(None),
            }
        };
        if !self.discarding {
            let mut at = 0;
            while at < end {
                // Whole and valid: the first pass read these headers.
                let Ok(Some((tag, total))) = self.decoder.peek_header(&input[at..]) else {
                    return Ok(None);
                };
                if tag == b'P' {
                    let parse = wire::Parse::split(&input[at..at + total])?;
                    if mentions_search_path(parse.query)
                        || !sql_scan::scan(parse.query).effects.is_empty()
                    {
                        return Ok(None);
                    }
                }
                at += total;
            }
        }
        Ok(Some(end))
    }

    /// The statement of pgbastion's that the client's statement `name` is, prepared first on
    /// this backend if it lacks it (the reply swallowed). `None` for the unnamed statement
    /// when it is the backend's own, and for a name the client never prepared.
    fn statement_for(
        &mut self,
        name: &[u8],
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
    ) -> Result<Option<Arc<Prepared>>, MuxError> {
        if name.is_empty() {
            if let Some(prepared) = &self.unnamed_stand_in {
                let now = self.read_now(prepared);
                self.unnamed_stand_in = Some(now.clone());
                self.made_here(&now, backend, to_backend);
                return Ok(Some(now));
            }
        }
        if name.is_empty() {
            if !self.unnamed_here {
                if let Some(parse) = &self.unnamed {
                    // The client's unnamed statement was made on another backend.
                    to_backend.extend_from_slice(parse);
                    self.own(Kind::Parse, Show::Errors);
                    self.unnamed_here = true;
                }
            }
            return Ok(None);
        }
        let name = std::str::from_utf8(name).map_err(|_| wire::malformed("Bind"))?;
        let Some(prepared) = self.statements.get(name) else {
            return Ok(None);
        };
        let now = self.read_now(prepared);
        if !Arc::ptr_eq(&now, prepared) {
            self.statements.insert(name.to_owned(), now.clone());
        }
        self.made_here(&now, backend, to_backend);
        Ok(Some(now))
    }

    /// Makes `prepared` on the backend if it is not there (the reply swallowed).
    fn made_here(
        &mut self,
        prepared: &Prepared,
        backend: &mut BackendState,
        to_backend: &mut BytesMut,
    ) {
        let server = prepared.server_name();
        let held = backend.statements.touch(server);
        let uncertain = self.statements_uncertain();
        if held && uncertain {
            self.close_before_remaking(server, to_backend);
        }
        if !held || uncertain {
            to_backend.extend_from_slice(prepared.parse());
            backend.statements.insert(server.clone());
            self.parse_sent(prepared);
            self.expected.push(Expect::Reply {
                kind: Kind::Parse,
                show: Show::Errors,
                undo: Undo {
                    cache: Some(server.clone()),
                    ..Undo::default()
                },
                care: Care::of_parse(prepared),
            });
        }
    }

    /// Whether the statements the backend holds may not be what pgbastion recorded: a
    /// statement sent before, still to run, may drop them all (`DEALLOCATE ALL`), or one
    /// of them outlived a change of its table (0A000: the backend is retired when given back,
    /// and until then a client that sends its next query at once must not meet it again).
    fn statements_uncertain(&self) -> bool {
        self.dirty || self.expected.drops_pending()
    }

    /// Closes `server` on the backend (reply unseen) before it is made again while
    /// [`statements_uncertain`](Self::statements_uncertain): a Close followed by a Parse is
    /// right whether the backend still holds it or not.
    fn close_before_remaking(&mut self, server: &str, to_backend: &mut BytesMut) {
        wire::close_statement(server, to_backend);
        self.own(Kind::Close, Show::Nothing);
    }

    /// Close of a statement: the client's name is forgotten; the backend's statement stays
    /// for others (the unnamed one is closed on the backend when it is there).
    fn close_statement(
        &mut self,
        name: &[u8],
        frame: Bytes,
        to_backend: &mut BytesMut,
        to_client: &mut BytesMut,
    ) {
        if name.is_empty() {
            // A cached one stays on its backends for the next run of its text.
            let here = self.unnamed_here;
            self.forget_unnamed();
            if here {
                self.forward(Kind::Close, frame, to_backend);
                return;
            }
            self.answer(wire::CLOSE_COMPLETE.clone(), Undo::default(), to_client);
            return;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        let previous = self.statements.remove(&name);
        let undo = Undo {
            client: previous.map(|p| (name, Some(p))),
            ..Undo::default()
        };
        self.answer(wire::CLOSE_COMPLETE.clone(), undo, to_client);
    }

    /// Handles the backend bytes in `input` (consuming what it can): the client's share goes
    /// to `to_client`, with pgbastion's own answers in their turn.
    pub fn from_backend(
        &mut self,
        input: &mut BytesMut,
        backend: &mut BackendState,
        to_client: &mut BytesMut,
    ) -> Result<(), MuxError> {
        loop {
            if self.backend_stream > 0 {
                let take = self.backend_stream.min(input.len());
                if take == 0 {
                    return Ok(());
                }
                if self.backend_stream_forward {
                    to_client.extend_from_slice(&input[..take]);
                }
                input.advance(take);
                self.backend_stream -= take;
                continue;
            }
            let Some(&[tag, a, b, c, d]) = input.get(..5) else {
                return Ok(());
            };
            let total = u32::from_be_bytes([a, b, c, d]) as usize + 1;
            if total < 5 {
                return Err(MuxError::Backend(format!("message length {}", total - 1)));
            }
            if STREAMED_FROM_BACKEND.contains(&tag) {
                self.backend_stream = total;
                self.backend_stream_forward =
                    self.expected.front().is_none_or(|e| e.show() == Show::All);
                if self.expected.is_empty() && !self.copy {
                    return Err(MuxError::Backend(format!(
                        "{} with nothing asked",
                        tag as char
                    )));
                }
                continue;
            }
            if total > MAX_INSPECTED_BACKEND_MESSAGE {
                return Err(MuxError::Backend(format!(
                    "a {} message of {total} bytes",
                    tag as char
                )));
            }
            if input.len() < total {
                return Ok(());
            }
            // Read in place, then dropped from the buffer: splitting it off would make the
            // buffer shared (an allocation and atomic counts) for a message that is only copied.
            let frame = &input[..total];
            self.last_backend_tag = tag;
            if self.backend_message(tag, &frame[5..], backend)? {
                to_client.extend_from_slice(frame);
            }
            input.advance(total);
            self.emit_own(to_client);
        }
    }

    /// One whole backend message: whether the client sees it.
    fn backend_message(
        &mut self,
        tag: u8,
        body: &[u8],
        backend: &mut BackendState,
    ) -> Result<bool, MuxError> {
        let forwards = self.expected.front().is_none_or(|e| e.show() == Show::All);
        match tag {
            // Asynchronous: notices and notifications reach the client unless they come
            // from pgbastion's own messages.
            b'N' | b'A' => return Ok(forwards || tag == b'A'),
            b'S' => {
                // Parameter changes always reach the client, so that its view is the
                // backend's, whoever caused them.
                if let Some((name, value)) = wire::parameter_status(body) {
                    backend.reported.insert(name.clone(), value.clone());
                    if READ_UNDER
                        .iter()
                        .any(|read| read.eq_ignore_ascii_case(&name))
                    {
                        self.reading_changed(&name, &value);
                    }
                    set(&mut self.wanted, name, value);
                }
                return Ok(true);
            }
            _ => {}
        }
        // pgbastion's own answers leave the front as soon as they reach it, so the front is
        // always a reply the backend owes.
        let (kind, show, care) = match self.expected.front() {
            Some(Expect::Reply {
                kind, show, care, ..
            }) => (*kind, *show, *care),
            Some(Expect::Own { .. }) | None if tag == b'E' => {
                // An error nobody asked for (the backend is shutting down): the client
                // learns it, and the backend is not reused.
                self.own_failed = true;
                return Ok(true);
            }
            _ => {
                return Err(MuxError::Backend(format!(
                    "{} with nothing asked",
                    tag as char
                )))
            }
        };
        let complete = match (tag, kind) {
            (b'1', Kind::Parse) | (b'2', Kind::Bind) | (b'3', Kind::Close) => true,
            (b't', Kind::Describe) => false,
            (b'T' | b'n', Kind::Describe) => true,
            (b'C' | b'I' | b's', Kind::Execute) => {
                self.copy = false;
                if tag == b'C' && care.drops_statements {
                    self.statements_dropped(backend, false, false);
                }
                if tag == b'C' && care.reapply {
                    self.reapply_startup(backend);
                }
                true
            }
            (b'G' | b'H' | b'W', Kind::Execute | Kind::Query) => {
                self.copy = true;
                if tag == b'G' {
                    // Syncs the client sent after this message reach a backend in COPY
                    // FROM STDIN, which ignores them: none of them will be answered.
                    self.copy_in = true;
                    self.expected.drop_syncs_after_front();
                }
                false
            }
            (b'c', Kind::Execute | Kind::Query) => false,
            (b'T' | b'C' | b'I', Kind::Query) => {
                self.copy = false;
                false
            }
            (b'V', Kind::FunctionCall) => false,
            (b'E', kind) => {
                self.copy = false;
                self.copy_in = false;
                self.front_failed = true;
                if kind != Kind::Query
                    && wire::error_code(body) == Some(*SqlState::FEATURE_NOT_SUPPORTED.as_bytes())
                {
                    // "cached plan must not change result type": a statement shared on this
                    // backend outlived a change of its table. The backend is retired when
                    // the client gives it back, so that statements are prepared afresh.
                    self.dirty = true;
                }
                if show == Show::Nothing {
                    self.own_failed = true;
                    if self.own_error.is_none() {
                        self.own_error = ErrorResponse::decode(body).ok();
                    }
                }
                if !kind.ends_at_ready() {
                    self.fail_front(backend);
                }
                return Ok(show != Show::Nothing);
            }
            (b'Z', kind) if kind.ends_at_ready() => {
                let status = body.first().copied().unwrap_or(0);
                self.status = TransactionStatus::from_byte(status)
                    .map_err(|_| MuxError::Backend("ReadyForQuery status".to_owned()))?;
                self.copy = false;
                let failed = std::mem::take(&mut self.front_failed);
                if care.drops_statements {
                    self.statements_dropped(backend, failed, care.several);
                }
                if care.reapply && !failed {
                    self.reapply_startup(backend);
                }
                true
            }
            (tag, kind) => {
                return Err(MuxError::Backend(format!(
                    "{} in reply to {kind:?}",
                    tag as char
                )))
            }
        };
        if complete {
            if let Some(Expect::Reply { kind, care, .. }) = self.expected.pop() {
                if kind.ends_at_ready() {
                    self.parsed_since_ready = false;
                    if !self.expected.owes_client_group() && !self.in_group {
                        self.reading_unsettled = false;
                    }
                } else if care.read_under_settings {
                    self.parsed_since_ready = true;
                }
            }
        }
        Ok(show == Show::All)
    }

    /// A Query with `DEALLOCATE ALL` or `DISCARD ALL` was answered: when it succeeded the
    /// backend holds no statement, and the client none; when it failed alone, nothing was
    /// dropped; when it failed among other statements, what the backend holds is unknown and
    /// it is closed instead of going back to the pool.
    fn statements_dropped(&mut self, backend: &mut BackendState, failed: bool, several: bool) {
        if !failed {
            // What was sent after it (a pipelining client) is made after the drop: kept.
            let mut names = Vec::new();
            let mut made = Vec::new();
            for entry in self.expected.behind_front() {
                let undo = entry.undo();
                names.extend(undo.client.as_ref().map(|(name, _)| name.clone()));
                made.extend(undo.cache.clone());
            }
            self.statements
                .retain(|name| names.iter().any(|kept| kept == name));
            backend
                .statements
                .retain(|server| made.iter().any(|kept| kept == server));
        } else if several {
            self.dirty = true;
        }
    }

    /// The client reset its parameters (`RESET ALL`, `DISCARD ALL`): as on its own
    /// backend, they go back to its startup values; the backend is told at the next
    /// checkout (what pgbastion set there is gone).
    fn reapply_startup(&mut self, backend: &mut BackendState) {
        backend.forget_applied();
        for (name, value) in &self.startup {
            set(&mut self.wanted, name.clone(), value.clone());
        }
        self.in_force_stale = true;
    }

    /// The front message failed: its undo applies, and the backend skips the rest up to
    /// Sync, so those entries go too (their undos newest first).
    fn fail_front(&mut self, backend: &mut BackendState) {
        let mut dropped = self.expected.drain_until_sync();
        if !self.expected.has_sync() {
            self.discarding = true;
        }
        // `drain_until_sync` returns newest first; the failed one is the oldest, the others
        // were skipped.
        let failed = dropped.len().saturating_sub(1);
        for (at, entry) in dropped.iter_mut().enumerate() {
            self.undo(entry, backend, at == failed);
        }
    }

    /// Takes back what the message of `entry` did in pgbastion's view: it `failed`, or was
    /// skipped after an earlier error.
    fn undo(&mut self, entry: &mut Expect, backend: &mut BackendState, failed: bool) {
        let undo = match entry {
            Expect::Reply { undo, .. } | Expect::Own { undo, .. } => std::mem::take(undo),
        };
        if let Some((name, previous)) = undo.client {
            match previous {
                Some(previous) => {
                    self.statements.insert(name, previous);
                }
                None => {
                    self.statements.remove(&name);
                }
            }
        }
        if let Some(server) = undo.cache {
            backend.statements.remove(&server);
        }
        match undo.unnamed {
            // Replaced since by a later group's Parse (without cache_unnamed, no one waits for
            // the groups before): that one stands.
            Some(before) if before.made != self.unnamed_generation => {}
            // PostgreSQL dropped the unnamed statement before the Parse failed.
            Some(_) if failed => self.forget_unnamed(),
            Some(before) => {
                self.unnamed = before.parse;
                self.unnamed_here = before.here;
                self.unnamed_stand_in = before.stand_in;
                self.unnamed_generation = before.generation;
            }
            None => {}
        }
    }
}

/// The settings under which PostgreSQL reads a statement's text differently (where names
/// resolve; how date, time and interval literals, folded into constants at parse time, and
/// backslashes read; how the text's bytes convert), as `name=length:value` lines: clients whose
/// values differ do not share statements.
fn namespace_of(wanted: &[(String, String)]) -> Arc<str> {
    let mut namespace = String::new();
    for setting in READ_UNDER {
        if let Some((_, value)) = wanted
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(setting))
        {
            // As PostgreSQL reports it, whichever way the client spelled it (`utf-8` and
            // `UTF8`, `iso, mdy` and `ISO, MDY`): the same settings share statements.
            let value = match setting {
                "search_path" => value.clone(),
                "client_encoding" => value.replace(['-', '_'], "").to_ascii_uppercase(),
                _ => value.replace(' ', "").to_ascii_lowercase(),
            };
            // Length first: no value can pass for another's.
            let _ = writeln!(namespace, "{setting}={}:{value}", value.len());
        }
    }
    namespace.into()
}

/// The entries of `parameters` that texts are read under ([`READ_UNDER`]).
fn read_under(parameters: &[(String, String)]) -> Vec<(String, String)> {
    parameters
        .iter()
        .filter(|(name, _)| {
            READ_UNDER
                .iter()
                .any(|read| read.eq_ignore_ascii_case(name))
        })
        .cloned()
        .collect()
}

/// The settings a statement's text is read under, as PostgreSQL reports them.
const READ_UNDER: [&str; 6] = [
    "search_path",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "client_encoding",
];

/// Whether `sql` (with its `effects`) may change how later texts are read: it sets one of
/// [`READ_UNDER`] but `search_path` (which pins the client instead), or resets every
/// parameter, or its text may ([`may_change_reading`]: `SET LOCAL`, `set_config`, …).
fn changes_reading(sql: &str, effects: &[Effect]) -> bool {
    effects.iter().any(|effect| match effect {
        Effect::SetParameter { name } => READ_UNDER[1..]
            .iter()
            .any(|setting| setting.eq_ignore_ascii_case(name)),
        Effect::ResetAll | Effect::Discard(Discard::All) => true,
        _ => false,
    }) || may_change_reading(sql)
}

/// How the backend reads string literals (`standard_conforming_strings`).
fn literals_of(backend: &BackendState) -> StringLiterals {
    match backend.reported_value("standard_conforming_strings") {
        Some("off") => StringLiterals::BackslashEscapes,
        _ => StringLiterals::Standard,
    }
}

/// Whether `sql` deallocates a statement by its name (which [`Multiplexer::judge`] may find
/// to be one of the client's, answered or rewritten by pgbastion).
fn deallocates_by_name(sql: &str, backend: &BackendState) -> bool {
    mentions(sql, b"deallocate")
        && sql_scan::scan_with(sql, literals_of(backend))
            .effects
            .iter()
            .any(|effect| matches!(effect, Effect::Deallocate { name: Some(_) }))
}

/// PostgreSQL's error for a statement other than a transaction's end in a failed
/// transaction.
fn in_failed_transaction() -> ErrorResponse {
    ErrorResponse::new(
        Severity::Error,
        SqlState::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}

/// Whether `sql` names `search_path` anywhere (in any case).
fn mentions_search_path(sql: &str) -> bool {
    mentions(sql, b"search_path")
}

fn set(list: &mut Vec<(String, String)>, name: String, value: String) {
    match list.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
        Some(entry) => entry.1 = value,
        None => list.push((name, value)),
    }
}

fn invalid_length() -> MuxError {
    MuxError::Client(ErrorResponse::new(
        Severity::Fatal,
        SqlState::PROTOCOL_VIOLATION,
        "invalid message length",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;
    use pgbastion_wire::frontend as fe;

    fn policy(transaction: bool) -> Policy {
        Policy {
            transaction,
            statements_per_client: 100,
            cache_unnamed: false,
            refuse_session_state: false,
            max_message_len: 1 << 20,
        }
    }

    fn caching() -> Multiplexer {
        let policy = Policy {
            cache_unnamed: true,
            ..policy(true)
        };
        Multiplexer::new(policy, vec![])
    }

    fn query(sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        fe::write_query(&mut out, sql).unwrap();
        out
    }

    /// Backend replies, by tag, with the bodies the tests need.
    fn replies(tags: &str) -> BytesMut {
        let mut out = BytesMut::new();
        for tag in tags.bytes() {
            let body: &[u8] = match tag {
                b'Z' => b"I",
                b'C' => b"SELECT 1\0",
                b'D' => b"\0\x01\0\0\0\x011",
                b'E' => b"SERROR\0C42601\0Msyntax error\0\0",
                _ => b"",
            };
            out.put_u8(tag);
            out.put_u32(body.len() as u32 + 4);
            out.put_slice(body);
        }
        out
    }

    fn tags(bytes: &[u8]) -> String {
        let mut out = String::new();
        let mut rest = bytes;
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            out.push(rest[0] as char);
            rest = &rest[1 + len..];
        }
        out
    }

    struct Run {
        mux: Multiplexer,
    }

    impl Run {
        /// Sends `client` bytes, answers them with `backend` replies; returns what reached
        /// the backend and the client.
        fn exchange(
            &mut self,
            backend: &mut BackendState,
            client: BytesMut,
            reply: &str,
        ) -> (BytesMut, BytesMut) {
            let (mut to_backend, mut to_client) = (BytesMut::new(), BytesMut::new());
            let mut input = client;
            let flow = self
                .mux
                .from_client(&mut input, backend, &mut to_backend, &mut to_client)
                .unwrap();
            assert_eq!(flow, ClientFlow::More);
            let mut answers = replies(reply);
            self.mux
                .from_backend(&mut answers, backend, &mut to_client)
                .unwrap();
            assert!(answers.is_empty());
            (to_backend, to_client)
        }
    }

    fn parse(name: &str, sql: &str) -> BytesMut {
        let mut out = BytesMut::new();
        fe::write_parse(&mut out, name, sql, &[]).unwrap();
        out
    }

    fn bind_execute_sync(statement: &str) -> BytesMut {
        let mut out = BytesMut::new();
        fe::write_bind(&mut out, "", statement, &[], [], &[]).unwrap();
        fe::write_execute(&mut out, "", 0).unwrap();
        fe::write_sync(&mut out).unwrap();
        out
    }

    fn sync() -> BytesMut {
        let mut out = BytesMut::new();
        fe::write_sync(&mut out).unwrap();
        out
    }

    fn names_in(bytes: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        text.match_indices("pgbastion_")
            .map(|(i, _)| text[i..i + 42].to_owned())
            .collect()
    }

    #[test]
    fn a_statement_prepared_on_one_backend_is_prepared_again_on_the_next() {
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut first = BackendState::new(&[], 10);
        let mut input = parse("s1", "SELECT 1");
        input.extend_from_slice(&sync());
        let (sent, seen) = run.exchange(&mut first, input, "1Z");
        assert_eq!(tags(&sent), "PS");
        let server = names_in(&sent);
        assert_eq!(server.len(), 1, "renamed: {sent:?}");
        assert_eq!(tags(&seen), "1Z");
        assert!(run.mux.releasable());

        let mut second = BackendState::new(&[], 10);
        run.mux.begin(&mut second, None, &mut BytesMut::new());
        let (sent, seen) = run.exchange(&mut second, bind_execute_sync("s1"), "12DCZ");
        assert_eq!(tags(&sent), "PBES");
        assert_eq!(names_in(&sent), vec![server[0].clone(), server[0].clone()]);
        assert_eq!(
            tags(&seen),
            "2DCZ",
            "ParseComplete of our own Parse swallowed"
        );

        // Back on the first backend, which has it: nothing is prepared again.
        run.mux.begin(&mut first, None, &mut BytesMut::new());
        let (sent, seen) = run.exchange(&mut first, bind_execute_sync("s1"), "2DCZ");
        assert_eq!(tags(&sent), "BES");
        assert_eq!(tags(&seen), "2DCZ");
    }

    #[test]
    fn a_cached_unnamed_statement_is_parsed_once_per_backend_and_text() {
        let mut run = Run { mux: caching() };
        let mut first = BackendState::new(&[], 10);
        let mut once = parse("", "SELECT 1");
        once.extend_from_slice(&bind_execute_sync(""));
        let (sent, seen) = run.exchange(&mut first, once.clone(), "12DCZ");
        assert_eq!(tags(&sent), "PBES");
        let server = names_in(&sent);
        assert_eq!(server.len(), 2, "Parse and Bind both renamed: {sent:?}");
        assert_eq!(server[0], server[1]);
        assert_eq!(tags(&seen), "12DCZ");
        assert!(run.mux.releasable());

        // The same text again: answered here, the Bind goes to the backend's statement.
        let (sent, seen) = run.exchange(&mut first, once.clone(), "2DCZ");
        assert_eq!(tags(&sent), "BES");
        assert_eq!(names_in(&sent), vec![server[0].clone()]);
        assert_eq!(tags(&seen), "12DCZ");

        // On another backend it is made once, with the client's own Parse.
        let mut second = BackendState::new(&[], 10);
        run.mux.begin(&mut second, None, &mut BytesMut::new());
        let (sent, _) = run.exchange(&mut second, once.clone(), "12DCZ");
        assert_eq!(tags(&sent), "PBES");
        // A Bind of the unnamed statement alone, on a backend that lacks it: made first, the
        // reply swallowed.
        let mut third = BackendState::new(&[], 10);
        run.mux.begin(&mut third, None, &mut BytesMut::new());
        let (sent, seen) = run.exchange(&mut third, bind_execute_sync(""), "12DCZ");
        assert_eq!(tags(&sent), "PBES");
        assert_eq!(tags(&seen), "2DCZ");

        // Another text is another statement; a simple query drops the unnamed one.
        let mut other = parse("", "SELECT 2");
        other.extend_from_slice(&bind_execute_sync(""));
        let (sent, _) = run.exchange(&mut first, other, "12DCZ");
        assert_eq!(tags(&sent), "PBES");
        assert_ne!(names_in(&sent)[0], server[0]);
        let (_, _) = run.exchange(&mut first, query("SELECT 3"), "CZ");
        // No statement of ours stands in any more, and the backend's unnamed one is not the
        // client's: 26000 from pgbastion, as from PostgreSQL.
        let (sent, seen) = run.exchange(&mut first, bind_execute_sync(""), "Z");
        assert_eq!(tags(&sent), "S");
        assert_eq!(tags(&seen), "EZ");
    }

    #[test]
    fn a_cached_unnamed_parse_that_fails_leaves_nothing_behind() {
        let mut run = Run { mux: caching() };
        let mut backend = BackendState::new(&[], 10);
        let mut input = parse("", "SELEC 1");
        input.extend_from_slice(&bind_execute_sync(""));
        let (sent, seen) = run.exchange(&mut backend, input, "EZ");
        assert_eq!(tags(&sent), "PBES");
        assert_eq!(tags(&seen), "EZ");
        assert!(backend.statements.is_empty(), "not recorded as made");
        // Not standing in for the client's unnamed statement either: its next Bind is the
        // client's own, unchanged.
        let (sent, _) = run.exchange(&mut backend, bind_execute_sync(""), "EZ");
        assert!(names_in(&sent).is_empty());
        // Closing the unnamed statement leaves the backend's statement for the next run of
        // its text, and is answered here.
        let mut good = parse("", "SELECT 1");
        good.extend_from_slice(&sync());
        run.exchange(&mut backend, good, "1Z");
        let mut close = BytesMut::new();
        fe::write_close(&mut close, pgbastion_wire::Target::Statement, "").unwrap();
        close.extend_from_slice(&sync());
        let (sent, seen) = run.exchange(&mut backend, close, "Z");
        assert_eq!(tags(&sent), "S");
        assert_eq!(tags(&seen), "3Z");
        assert_eq!(backend.statements.len(), 1);
    }

    /// `sql` parsed unnamed, bound, executed and synced.
    fn unnamed_run(sql: &str) -> BytesMut {
        let mut out = parse("", sql);
        out.extend_from_slice(&bind_execute_sync(""));
        out
    }

    /// Runs as much of `input` as the multiplexer takes now: what reached the backend.
    fn send(mux: &mut Multiplexer, backend: &mut BackendState, input: &mut BytesMut) -> BytesMut {
        let (mut to_backend, mut to_client) = (BytesMut::new(), BytesMut::new());
        mux.from_client(input, backend, &mut to_backend, &mut to_client)
            .unwrap();
        to_backend
    }

    /// Answers with `reply`: what reached the client.
    fn answer(mux: &mut Multiplexer, backend: &mut BackendState, reply: &str) -> BytesMut {
        let mut to_client = BytesMut::new();
        mux.from_backend(&mut replies(reply), backend, &mut to_client)
            .unwrap();
        to_client
    }

    #[test]
    fn a_cached_unnamed_parse_skipped_after_an_error_leaves_the_one_before() {
        let mut run = Run { mux: caching() };
        let mut backend = BackendState::new(&[], 10);
        let (made, _) = run.exchange(&mut backend, unnamed_run("SELECT 15"), "12DCZ");
        let fifteen = names_in(&made)[0].clone();
        // SELECT 1/0 parses, fails when run; the Parse of SELECT 15 after it is skipped.
        let mut group = parse("", "SELECT 1/0");
        group.extend_from_slice(&bind_execute_sync("")[..]);
        let sync_len = sync().len();
        group.truncate(group.len() - sync_len);
        group.extend_from_slice(&unnamed_run("SELECT 15"));
        let (sent, seen) = run.exchange(&mut backend, group, "12EZ");
        let failing = names_in(&sent)[0].clone();
        assert_ne!(failing, fifteen);
        assert_eq!(tags(&seen), "12EZ", "the skipped Parse is not answered");
        // As in PostgreSQL, the unnamed statement is SELECT 1/0's.
        let (sent, _) = run.exchange(&mut backend, bind_execute_sync(""), "2EZ");
        assert_eq!(names_in(&sent), vec![failing]);
    }

    #[test]
    fn a_pipelined_group_waits_when_it_relies_on_what_an_earlier_one_may_not_do() {
        let mut mux = caching();
        let mut backend = BackendState::new(&[], 10);
        // The first group fails at its first Parse: PostgreSQL skips the second, so SELECT 2
        // is not on the backend when the next group comes.
        let mut input = parse("", "SELEC 1");
        input.extend_from_slice(&bind_execute_sync("")[..]);
        input.truncate(input.len() - sync().len());
        input.extend_from_slice(&unnamed_run("SELECT 2"));
        let first_len = input.len();
        input.extend_from_slice(&unnamed_run("SELECT 2"));
        let sent = send(&mut mux, &mut backend, &mut input);
        assert_eq!(tags(&sent), "PBEPBES", "the first group only");
        assert_eq!(
            input.len(),
            unnamed_run("SELECT 2").len(),
            "the second waits ({first_len} bytes went)"
        );
        assert_eq!(
            send(&mut mux, &mut backend, &mut input).len(),
            0,
            "still waiting"
        );
        assert_eq!(tags(&answer(&mut mux, &mut backend, "EZ")), "EZ");
        // Answered: SELECT 2 is made for real, not taken for present.
        let sent = send(&mut mux, &mut backend, &mut input);
        assert!(input.is_empty());
        assert_eq!(tags(&sent), "PBES");
        let names = names_in(&sent);
        assert_eq!(names.len(), 2);
        assert_eq!(tags(&answer(&mut mux, &mut backend, "12DCZ")), "12DCZ");

        // A Bind of the unnamed statement alone waits for the group that set it.
        let mut input = unnamed_run("SELECT 1/0");
        input.extend_from_slice(&bind_execute_sync(""));
        let sent = send(&mut mux, &mut backend, &mut input);
        assert_eq!(tags(&sent), "PBES");
        let failing = names_in(&sent)[0].clone();
        assert_eq!(tags(&input), "BES", "waits");
        answer(&mut mux, &mut backend, "12EZ");
        let sent = send(&mut mux, &mut backend, &mut input);
        assert_eq!(
            names_in(&sent),
            vec![failing],
            "bound to SELECT 1/0's, as PostgreSQL"
        );

        // A Parse answered here waits for the transaction status of the groups before it
        // (in a failed transaction PostgreSQL refuses it); groups that rely on nothing
        // unanswered are pipelined.
        answer(&mut mux, &mut backend, "2EZ");
        let mut input = unnamed_run("SELECT 2");
        input.extend_from_slice(&unnamed_run("SELECT 2"));
        let sent = send(&mut mux, &mut backend, &mut input);
        assert_eq!(tags(&sent), "BES");
        assert_eq!(tags(&input), "PBES", "waits");
        answer(&mut mux, &mut backend, "2DCZ");
        assert_eq!(tags(&send(&mut mux, &mut backend, &mut input)), "BES");
        let mut input = bind_execute_sync("");
        input.extend_from_slice(&bind_execute_sync(""));
        let sent = send(&mut mux, &mut backend, &mut input);
        assert!(input.is_empty());
        assert_eq!(tags(&sent), "BESBES", "pipelined");
    }

    #[test]
    fn a_parse_of_a_statement_held_here_is_refused_in_a_failed_transaction() {
        let mut run = Run { mux: caching() };
        let mut backend = BackendState::new(&[], 10);
        run.exchange(&mut backend, unnamed_run("SELECT 8"), "12DCZ");
        let mut failed = BytesMut::new();
        failed.put_u8(b'Z');
        failed.put_u32(5);
        failed.put_u8(b'E');
        let mut input = query("SELECT 1/0");
        let (mut to_backend, mut to_client) = (BytesMut::new(), BytesMut::new());
        run.mux
            .from_client(&mut input, &mut backend, &mut to_backend, &mut to_client)
            .unwrap();
        let mut reply = replies("E");
        reply.extend_from_slice(&failed);
        run.mux
            .from_backend(&mut reply, &mut backend, &mut to_client)
            .unwrap();
        assert_eq!(run.mux.status(), TransactionStatus::Failed);
        let (sent, seen) = run.exchange(&mut backend, unnamed_run("SELECT 8"), "Z");
        assert_eq!(tags(&sent), "S", "refused here, as PostgreSQL refuses it");
        assert_eq!(tags(&seen), "EZ");
        assert!(String::from_utf8_lossy(&seen).contains("25P02"));
        // ROLLBACK is parsed in a failed transaction.
        run.exchange(&mut backend, unnamed_run("ROLLBACK"), "12CZ");
    }

    #[test]
    fn deallocate_all_run_as_a_prepared_statement_is_followed() {
        for cached in [true, false] {
            let mut run = Run {
                mux: if cached {
                    caching()
                } else {
                    Multiplexer::new(policy(true), vec![])
                },
            };
            let mut backend = BackendState::new(&[], 10);
            let mut named = parse("s1", "SELECT 13");
            named.extend_from_slice(&sync());
            run.exchange(&mut backend, named, "1Z");
            run.exchange(&mut backend, unnamed_run("SELECT 14"), "12DCZ");
            let held = backend.statements.len();
            assert_eq!(held, if cached { 1 } else { 0 } + 1);
            run.exchange(&mut backend, unnamed_run("DEALLOCATE ALL"), "12CZ");
            assert!(run.mux.pinned().is_some());
            assert!(backend.statements.is_empty(), "cached: {cached}");
            // The client's named statement is gone, as in PostgreSQL; a cached unnamed one is
            // made again.
            let (_, seen) = run.exchange(&mut backend, bind_execute_sync("s1"), "Z");
            assert_eq!(tags(&seen), "EZ");
            let (sent, _) = run.exchange(&mut backend, unnamed_run("SELECT 14"), "12DCZ");
            assert_eq!(tags(&sent), "PBES", "cached: {cached}");
        }
    }

    #[test]
    fn texts_that_may_change_how_later_texts_read_are_told_from_the_rest() {
        for (sql, changes) in [
            ("SET TimeZone = 'UTC'", true),
            ("SET TIME ZONE 'UTC'", true),
            ("SET LOCAL TIME ZONE 'UTC'", true),
            ("set local datestyle to sql", true),
            ("SET NAMES 'LATIN1'", true),
            ("SELECT set_config('DateStyle', 'SQL', true)", true),
            ("RESET ALL", true),
            ("DISCARD ALL", true),
            ("SELECT now() AT TIME ZONE 'UTC'", false),
            ("SELECT current_setting('TimeZone')", false),
            ("SET work_mem = '64MB'", false),
            ("SET search_path TO app", false),
            ("SELECT 1", false),
        ] {
            let effects = sql_scan::scan(sql).effects;
            assert_eq!(changes_reading(sql, &effects), changes, "{sql}");
        }
    }

    #[test]
    fn a_deallocate_all_portal_is_followed_beside_another_portal() {
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut backend = BackendState::new(&[], 10);
        // PostgreSQL: the DEALLOCATE ALL runs at its Execute and drops "x", parsed before it;
        // the portal bound to "x" lives on.
        let mut input = parse("", "DEALLOCATE ALL");
        fe::write_bind(&mut input, "", "", &[], [], &[]).unwrap();
        input.extend_from_slice(&parse("x", "SELECT 1"));
        fe::write_bind(&mut input, "p2", "x", &[], [], &[]).unwrap();
        fe::write_execute(&mut input, "", 0).unwrap();
        fe::write_execute(&mut input, "p2", 0).unwrap();
        input.extend_from_slice(&sync());
        let (_, seen) = run.exchange(&mut backend, input, "1212CDCZ");
        assert_eq!(tags(&seen), "1212CDCZ");
        assert!(backend.statements.is_empty(), "the backend holds nothing");
        let (sent, seen) = run.exchange(&mut backend, bind_execute_sync("x"), "Z");
        assert_eq!(
            tags(&sent),
            "S",
            "26000 from pgbastion, for the client's name"
        );
        assert_eq!(tags(&seen), "EZ");
    }

    #[test]
    fn a_parse_the_backend_already_holds_is_answered_in_turn() {
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut backend = BackendState::new(&[], 10);
        let mut input = parse("a", "SELECT 1");
        input.extend_from_slice(&parse("b", "SELECT 1"));
        input.extend_from_slice(&bind_execute_sync("b"));
        let (sent, seen) = run.exchange(&mut backend, input, "12DCZ");
        assert_eq!(tags(&sent), "PBES", "the second Parse is not sent");
        assert_eq!(tags(&seen), "112DCZ");
    }

    #[test]
    fn a_failed_parse_leaves_no_statement_and_the_rest_of_the_batch_is_skipped() {
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut backend = BackendState::new(&[], 10);
        let mut input = parse("bad", "SELEC 1");
        input.extend_from_slice(&bind_execute_sync("bad"));
        let (sent, seen) = run.exchange(&mut backend, input, "EZ");
        assert_eq!(tags(&sent), "PBES");
        assert_eq!(tags(&seen), "EZ");
        assert!(backend.statements.is_empty());
        assert!(run.mux.releasable());
        // The name is free, as in PostgreSQL.
        let (_, seen) = run.exchange(&mut backend, bind_execute_sync("bad"), "Z");
        assert_eq!(
            tags(&seen),
            "EZ",
            "26000 of our own, then the Sync's ReadyForQuery"
        );
        assert!(String::from_utf8_lossy(&seen).contains("26000"));
    }

    #[test]
    fn close_forgets_the_client_name_only_and_a_duplicate_parse_is_refused() {
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut backend = BackendState::new(&[], 10);
        let mut input = parse("s", "SELECT 1");
        input.extend_from_slice(&parse("s", "SELECT 2"));
        input.extend_from_slice(&sync());
        let (sent, seen) = run.exchange(&mut backend, input, "1Z");
        assert_eq!(tags(&sent), "PS");
        assert_eq!(tags(&seen), "1EZ");
        assert!(String::from_utf8_lossy(&seen).contains("42P05"));

        let mut close = BytesMut::new();
        fe::write_close(&mut close, pgbastion_wire::Target::Statement, "s").unwrap();
        close.extend_from_slice(&sync());
        let (sent, seen) = run.exchange(&mut backend, close, "Z");
        assert_eq!(
            tags(&sent),
            "S",
            "the backend keeps the statement for others"
        );
        assert_eq!(tags(&seen), "3Z");
        assert_eq!(backend.statements.len(), 1);
    }

    #[test]
    fn session_parameters_are_set_out_of_sight_at_checkout() {
        let wanted = vec![("TimeZone".to_owned(), "Asia/Tokyo".to_owned())];
        let mut run = Run {
            mux: Multiplexer::new(policy(true), wanted),
        };
        let mut backend = BackendState::new(&[("TimeZone".into(), "UTC".into())], 10);
        let mut sent = BytesMut::new();
        run.mux.begin(&mut backend, None, &mut sent);
        assert_eq!(tags(&sent), "PBES");
        let mut status = BytesMut::new();
        status.put_u8(b'S');
        status.put_u32(4 + 20);
        status.put_slice(b"TimeZone\0Asia/Tokyo\0");
        let mut answers = replies("12");
        answers.extend_from_slice(&status);
        answers.extend_from_slice(&replies("DCZ"));
        let mut seen = BytesMut::new();
        run.mux
            .from_backend(&mut answers, &mut backend, &mut seen)
            .unwrap();
        assert_eq!(
            tags(&seen),
            "S",
            "only the parameter change reaches the client"
        );
        assert!(run.mux.releasable());
        let mut again = BytesMut::new();
        run.mux.begin(&mut backend, None, &mut again);
        assert!(again.is_empty(), "nothing to set twice");
    }

    #[test]
    fn session_mode_passes_statements_unchanged_and_is_never_released() {
        let mut run = Run {
            mux: Multiplexer::new(policy(false), vec![]),
        };
        let mut backend = BackendState::new(&[], 10);
        let mut input = parse("s1", "SELECT 1");
        input.extend_from_slice(&bind_execute_sync("s1"));
        let expected = input.clone();
        let (sent, seen) = run.exchange(&mut backend, input, "12DCZ");
        assert_eq!(sent, expected);
        assert_eq!(tags(&seen), "12DCZ");
        assert!(!run.mux.releasable());
        assert!(run.mux.reusable());
    }

    #[test]
    fn a_backend_reply_nobody_asked_for_is_an_error() {
        let mut mux = Multiplexer::new(policy(true), vec![]);
        let mut backend = BackendState::new(&[], 10);
        let mut answers = replies("2");
        assert!(matches!(
            mux.from_backend(&mut answers, &mut backend, &mut BytesMut::new()),
            Err(MuxError::Backend(_))
        ));
    }

    #[test]
    fn a_text_remembered_as_harmless_is_judged_by_its_exact_text_and_literals() {
        let backend = BackendState::new(&[], 10);
        let mut mux = Multiplexer::new(policy(true), vec![]);
        let select = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
        for _ in 0..2 {
            assert!(
                matches!(mux.judge(select, &backend), Verdict::Go(care) if care == Care::default())
            );
        }
        assert!(mux.harmless.is_some());
        // A text that differs only by what follows is lexed again.
        assert!(matches!(
            mux.judge(
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1; LISTEN x",
                &backend
            ),
            Verdict::Go(_)
        ));
        assert_eq!(mux.pinned(), Some("LISTEN"));
        // How literals are lexed decides what a text hides: remembered under one way, the
        // same text is lexed again under the other.
        let mut mux = Multiplexer::new(policy(true), vec![]);
        let hidden = r"SELECT 'a\'; LISTEN y; SELECT '1'";
        let mut escaping = BackendState::new(&[], 10);
        escaping
            .reported
            .insert("standard_conforming_strings".into(), "off".into());
        assert!(matches!(mux.judge(hidden, &escaping), Verdict::Go(_)));
        assert_eq!(mux.pinned(), None, "with backslash escapes: one string");
        assert!(mux.harmless.is_some());
        assert!(matches!(mux.judge(hidden, &backend), Verdict::Go(_)));
        assert_eq!(mux.pinned(), Some("LISTEN"), "standard literals: a LISTEN");
        // Texts that name search_path are never remembered.
        let mut mux = Multiplexer::new(policy(true), vec![]);
        assert!(matches!(
            mux.judge("SELECT current_setting('search_path')", &backend),
            Verdict::Go(_)
        ));
        assert!(mux.harmless.is_none());
    }

    #[test]
    fn session_state_pins_the_client_or_is_refused_as_the_route_says() {
        let mut backend = BackendState::new(&[("TimeZone".into(), "UTC".into())], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let (sent, _) = run.exchange(&mut backend, query("SET TimeZone = 'UTC'"), "CZ");
        assert_eq!(tags(&sent), "Q");
        assert!(
            run.mux.releasable(),
            "a reported parameter is followed, not pinned"
        );
        run.exchange(&mut backend, query("SELECT 1; LISTEN jobs"), "CCZ");
        assert_eq!(run.mux.pinned(), Some("LISTEN"));
        assert!(!run.mux.releasable());

        let refusing = Policy {
            refuse_session_state: true,
            ..policy(true)
        };
        let mut run = Run {
            mux: Multiplexer::new(refusing, vec![]),
        };
        let (sent, seen) = run.exchange(&mut backend, query("SET work_mem = '64MB'"), "");
        assert!(
            sent.is_empty(),
            "refused statements never reach the backend"
        );
        assert_eq!(tags(&seen), "EZ");
        let text = String::from_utf8_lossy(&seen);
        assert!(
            text.contains("0A000") && text.contains("SET work_mem"),
            "{text}"
        );
        assert!(run.mux.releasable());
    }

    #[test]
    fn deallocate_of_a_protocol_statement_is_answered_on_the_clients_view() {
        let mut backend = BackendState::new(&[], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut input = parse("s1", "SELECT 1");
        input.extend_from_slice(&sync());
        run.exchange(&mut backend, input, "1Z");
        let (sent, seen) = run.exchange(&mut backend, query("DEALLOCATE s1"), "");
        assert!(sent.is_empty());
        assert_eq!(tags(&seen), "CZ");
        assert_eq!(backend.statements.len(), 1, "others may still use it");
        let mut again = parse("s1", "SELECT 2");
        again.extend_from_slice(&sync());
        let (_, seen) = run.exchange(&mut backend, again, "1Z");
        assert_eq!(tags(&seen), "1Z", "the name is free again");
    }

    #[test]
    fn reset_all_brings_back_the_startup_values_at_the_next_checkout() {
        let startup = vec![("DateStyle".to_owned(), "German".to_owned())];
        let mut backend = BackendState::new(&[("DateStyle".into(), "ISO".into())], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), startup),
        };
        let mut sent = BytesMut::new();
        run.mux.begin(&mut backend, None, &mut sent);
        let mut answers = replies("12CZ");
        run.mux
            .from_backend(&mut answers, &mut backend, &mut BytesMut::new())
            .unwrap();
        backend.reported.insert("DateStyle".into(), "German".into());
        run.exchange(&mut backend, query("RESET ALL"), "CZ");
        // The backend went back to its own default and said so.
        backend.reported.insert("DateStyle".into(), "ISO".into());
        let mut again = BytesMut::new();
        run.mux.begin(&mut backend, None, &mut again);
        assert_eq!(tags(&again), "PBES", "German is set again");
    }

    #[test]
    fn a_group_without_its_sync_keeps_the_backend() {
        let mut backend = BackendState::new(&[], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut input = parse("", "SELECT generate_series(1, 20)");
        fe::write_bind(&mut input, "", "", &[], [], &[]).unwrap();
        fe::write_execute(&mut input, "", 10).unwrap();
        input.extend_from_slice(b"H\0\0\0\x04");
        let (sent, _) = run.exchange(&mut backend, input, "12Ds");
        assert_eq!(tags(&sent), "PBEH");
        assert!(!run.mux.releasable(), "the portal lives until the Sync");
        let (_, seen) = run.exchange(&mut backend, sync(), "Z");
        assert_eq!(tags(&seen), "Z");
        assert!(run.mux.releasable());
    }

    #[test]
    fn a_sync_sent_into_copy_from_stdin_is_not_waited_for() {
        let mut backend = BackendState::new(&[], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let mut input = parse("", "COPY t FROM STDIN");
        fe::write_bind(&mut input, "", "", &[], [], &[]).unwrap();
        fe::write_execute(&mut input, "", 0).unwrap();
        input.extend_from_slice(&sync());
        let (_, seen) = run.exchange(&mut backend, input, "12G");
        assert_eq!(tags(&seen), "12G");
        let mut rest = BytesMut::new();
        fe::write_copy_data(&mut rest, b"1\n").unwrap();
        rest.extend_from_slice(b"c\0\0\0\x04");
        rest.extend_from_slice(&sync());
        let (sent, seen) = run.exchange(&mut backend, rest, "CZ");
        assert_eq!(tags(&sent), "dcS");
        assert_eq!(tags(&seen), "CZ");
        assert!(
            run.mux.releasable(),
            "nothing is owed: {:?}",
            run.mux.expected
        );
    }

    #[test]
    fn the_rest_of_a_refused_group_is_ignored_up_to_its_sync() {
        let mut mux = Multiplexer::new(policy(true), vec![]);
        let mut input = BytesMut::new();
        fe::write_bind(&mut input, "", "s1", &[], [], &[]).unwrap();
        let error = ErrorResponse::new(Severity::Error, SqlState::TOO_MANY_CONNECTIONS, "full");
        let mut seen = BytesMut::new();
        assert_eq!(mux.refuse(&mut input, &error, &mut seen), ClientFlow::More);
        assert_eq!(tags(&seen), "E");
        let mut rest = BytesMut::new();
        fe::write_execute(&mut rest, "", 0).unwrap();
        rest.extend_from_slice(&sync());
        let mut seen = BytesMut::new();
        assert!(mux.answer_without_backend(&mut rest, &mut seen).unwrap());
        assert_eq!(tags(&seen), "Z", "no backend for a group that cannot run");
    }

    #[test]
    fn pgbastions_own_statements_cannot_be_deallocated_by_a_client() {
        let mut backend = BackendState::new(&[], 10);
        let mut run = Run {
            mux: Multiplexer::new(policy(true), vec![]),
        };
        let (sent, seen) = run.exchange(&mut backend, query("DEALLOCATE pgbastion_0123"), "");
        assert!(sent.is_empty());
        assert_eq!(tags(&seen), "EZ");
        assert!(String::from_utf8_lossy(&seen).contains("26000"));
    }

    #[test]
    fn closes_of_evicted_statements_do_not_hold_back_the_clients_first_messages() {
        let wanted = vec![("TimeZone".to_owned(), "Asia/Tokyo".to_owned())];
        let mut mux = Multiplexer::new(policy(true), wanted);
        let mut backend = BackendState::new(&[("TimeZone".into(), "UTC".into())], 1);
        for name in ["pgbastion_a", "pgbastion_b"] {
            backend.statements.insert(Arc::from(name));
        }
        let mut sent = BytesMut::new();
        mux.begin(&mut backend, None, &mut sent);
        assert_eq!(tags(&sent), "PBESC", "the set_config group, then one Close");
        assert!(mux.owes_own());
        // PostgreSQL answers the group; the Close's reply waits for the client's Sync.
        let mut answers = replies("12DCZ");
        mux.from_backend(&mut answers, &mut backend, &mut BytesMut::new())
            .unwrap();
        assert!(!mux.owes_own(), "the client's messages may go now");
    }
}
