//! A client served through a pool: its messages go to whichever backend it holds, checked
//! out when it has something to send and given back when the [`Multiplexer`] says the
//! backend is clean (transaction mode), or at the end of the session (session mode, after a
//! reset). The bytes are moved both ways at once (a client pipelining more than the socket
//! buffers hold cannot deadlock against a backend sending results).

use std::future::Future;
use std::ops::DerefMut;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pgbastion_wire::{BackendMessage, ErrorResponse, Severity, SqlState, TransactionStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::backend::BackendConn;
use crate::cancel::CancelSlot;
use crate::drain::stopper::{Progress, Stopper};
use crate::multiplex::{BackendState, ClientFlow, Multiplexer, MuxError};

/// How much is buffered per direction before reading that side pauses.
const BUFFER_LIMIT: usize = 256 * 1024;

/// How long the backend may take to answer what a client sent before its Terminate, and a
/// leaving client to take its last messages.
const AFTER_TERMINATE: Duration = Duration::from_secs(5);

/// Room made for one read from a client: its messages are mostly small, and an idle client
/// keeps this much.
const CLIENT_READ: usize = 1024;

/// Room made for one read from a backend (a few per pool).
const BACKEND_READ: usize = 16 * 1024;

/// A backend connection as a pool keeps it: the login, and what pgbastion knows of its
/// session state.
pub struct PooledBackend {
    /// The logged-in connection.
    pub conn: BackendConn,
    /// Statements and parameters.
    pub state: BackendState,
}

impl PooledBackend {
    /// A fresh connection, caching at most `statements` prepared statements.
    pub fn new(conn: BackendConn, statements: usize) -> Self {
        let state = BackendState::new(&conn.parameters, statements);
        Self { conn, state }
    }

    /// After the pool's reset: what pgbastion set and prepared is gone, and the parameters
    /// are back to the login's.
    pub fn forget_session(&mut self) {
        self.state = BackendState::new(&self.conn.parameters, self.state.statements.capacity());
    }
}

/// Where pooled backends come from. Dropping a lease closes its connection.
pub trait Lender: Send + Sync {
    /// A checked-out backend.
    type Lease: DerefMut<Target = PooledBackend> + Send;

    /// A backend for this client, or the error the client should see (no backend became
    /// free in time, the backend could not be reached).
    fn checkout(&self) -> impl Future<Output = Result<Self::Lease, ErrorResponse>> + Send;

    /// Ends a lease: the backend goes back clean, goes back after the pool's reset, or is
    /// closed.
    fn give_back(&self, lease: Self::Lease, how: GiveBack) -> impl Future<Output = ()> + Send;
}

/// How a lease ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveBack {
    /// Clean (transaction mode, at ReadyForQuery 'I' with nothing owed).
    Clean,
    /// Clean once the pool's reset ran (session mode, a pinned client).
    Reset,
    /// Closed: the client left it mid-transaction, in COPY or in an unknown state.
    Close,
    /// Closed after a failure (the pool checks its other idle backends).
    Broken,
}

/// What pgbastion says to each backend it checks out for this client before the client's
/// own messages (the session switch): a complete Sync group, given the backend's process ID.
pub type Switch<'a> = Box<dyn Fn(u32) -> Bytes + Send + Sync + 'a>;

/// How a pooled session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PooledEnd {
    /// The client sent Terminate.
    Terminate,
    /// The client went away.
    Client,
    /// The backend failed under the client.
    Backend,
    /// The client broke the protocol.
    Protocol,
    /// pgbastion shut down: the client was told 57P01.
    Shutdown,
}

impl PooledEnd {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminate => "terminate",
            Self::Client => "client",
            Self::Backend => "backend",
            Self::Protocol => "protocol error",
            Self::Shutdown => "shutdown",
        }
    }
}

/// Totals of a pooled session.
#[derive(Debug, Clone, Copy)]
pub struct Pooled {
    /// How it ended.
    pub end: PooledEnd,
    /// Backends checked out.
    pub checkouts: u64,
}

/// One pooled client, from its first message after the greeting to its end. It owns what it
/// uses: an idle client is mostly this session's future, which then holds nothing twice.
pub struct PooledSession<'a, L: Lender> {
    /// Where backends come from.
    pub lender: L,
    /// The client's protocol state.
    pub mux: Multiplexer,
    /// The client's cancel target.
    pub slot: Arc<CancelSlot>,
    /// The session switch, on pooled listeners that have one.
    pub switch: Option<Switch<'a>>,
    /// Session mode: the backend the client holds from its start.
    pub held: Option<L::Lease>,
    /// Whether pgbastion's own messages for this client (its parameters, the switch) have
    /// succeeded once. Until then the client's messages wait for their replies (one round
    /// trip, on the first checkout only): a parameter the server refuses must fail the
    /// client before anything of its own runs, as PostgreSQL would at login.
    pub proven: bool,
    /// Follows pgbastion's shutdown.
    pub drain: Stopper,
}

/// How a wait in the pool's queue ended.
enum Checkout<T> {
    /// With a backend.
    Got(T),
    /// Without one: the client is told why.
    Refused(ErrorResponse),
    /// The proxy is draining.
    Shutdown,
}

enum Turn {
    /// The backend is clean: give it back.
    Release,
    /// The session is over.
    End(PooledEnd),
}

impl<'a, L: Lender> PooledSession<'a, L> {
    /// Serves the client, whose stream comes split in its two halves, until it ends.
    /// `client_in` holds bytes already read from it.
    ///
    /// An `async` block rather than an `async fn`, its arguments taken apart in the signature:
    /// an `async fn` keeps a second copy of its arguments in its future for as long as it
    /// runs (rustc moves them into locals and keeps both), and an idle pooled client is
    /// mostly this future. For the same reason the rare or short waits (a checkout, a give
    /// back) are boxed: the future is sized by its largest wait, and the one it spends its
    /// life in (an idle client's read) is small.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub fn run<R, W>(
        mut self,
        (mut client_read, mut client_write): (R, W),
        mut client_in: BytesMut,
    ) -> impl Future<Output = Pooled> + 'a
    where
        L: 'a,
        R: AsyncRead + Unpin + 'a,
        W: AsyncWrite + Unpin + 'a,
    {
        async move {
            let mut to_client = BytesMut::new();
            let mut lease = self.held.take();
            let mut checkouts = u64::from(lease.is_some());
            // A backend just taken (the session mode one from the start, or a checkout) is made
            // the client's before anything of the client's reaches it.
            let mut fresh = lease.is_some();
            let end = loop {
                let mut to_backend = BytesMut::new();
                if lease.is_none() {
                    match self
                        .await_message(
                            &mut client_read,
                            &mut client_write,
                            &mut client_in,
                            &mut to_client,
                        )
                        .await
                    {
                        Ok(()) => {}
                        Err(end) => break end,
                    }
                    match self
                        .mux
                        .answer_without_backend(&mut client_in, &mut to_client)
                    {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(error) => {
                            report(&error, &mut to_client);
                            break PooledEnd::Protocol;
                        }
                    }
                    match Box::pin(self.checkout()).await {
                        Checkout::Got(got) => {
                            checkouts += 1;
                            fresh = true;
                            lease = Some(got);
                        }
                        Checkout::Shutdown => {
                            // Nothing of what it waits with has run: it ends as an idle one does.
                            to_client.extend_from_slice(&crate::relay::shutdown_notice());
                            break PooledEnd::Shutdown;
                        }
                        Checkout::Refused(refusal) => {
                            if self.mux.refuse(&mut client_in, &refusal, &mut to_client)
                                == ClientFlow::Terminate
                            {
                                break PooledEnd::Terminate;
                            }
                            continue;
                        }
                    }
                }
                if let Some(got) = lease.as_mut().filter(|_| std::mem::take(&mut fresh)) {
                    self.take_up(got, &mut to_backend);
                }
                let Some(held) = lease.as_mut() else {
                    continue;
                };
                let turn = self
                    .with_backend(
                        held,
                        (&mut client_read, &mut client_write),
                        &mut client_in,
                        &mut to_client,
                        to_backend,
                    )
                    .await;
                match turn {
                    Turn::Release => {
                        self.slot.detach().await;
                        if let Some(clean) = lease.take() {
                            let how = if self.mux.take_dirty() {
                                GiveBack::Close
                            } else {
                                GiveBack::Clean
                            };
                            Box::pin(self.lender.give_back(clean, how)).await;
                        }
                    }
                    Turn::End(end) => break end,
                }
            };
            self.slot.detach().await;
            if let Some(held) = lease {
                let how = match end {
                    PooledEnd::Backend => GiveBack::Broken,
                    _ if !self.mux.reusable() || self.mux.dirty() => GiveBack::Close,
                    // Session mode, or a pinned client: the pool's reset makes it anyone's.
                    _ if !self.mux.releasable() => GiveBack::Reset,
                    _ => GiveBack::Clean,
                };
                // Before the last words to the client: a client that does not read them must
                // not keep a backend from the others.
                Box::pin(self.lender.give_back(held, how)).await;
            }
            let goodbye = async {
                if !to_client.is_empty() {
                    client_write.write_all(&to_client).await?;
                }
                client_write.shutdown().await
            };
            let _ = tokio::time::timeout(AFTER_TERMINATE, goodbye).await;
            Pooled { end, checkouts }
        }
    }

    /// Makes a backend just taken the client's: its session parameters and the session
    /// switch go first, and cancels now reach it.
    fn take_up(&mut self, got: &mut L::Lease, to_backend: &mut BytesMut) {
        let pid = got.conn.key.as_ref().map_or(0, |key| key.process_id);
        let switch = self.switch.as_ref().map(|switch| switch(pid));
        let PooledBackend { state, .. } = &mut **got;
        self.mux.begin(state, switch.as_ref(), to_backend);
        if let Some(key) = got.conn.cancel_key() {
            self.slot.attach(key);
        }
    }

    /// Waits for a whole client message while no backend is held, writing what is owed.
    async fn await_message<R, W>(
        &mut self,
        client_read: &mut R,
        client_write: &mut W,
        client_in: &mut BytesMut,
        to_client: &mut BytesMut,
    ) -> Result<(), PooledEnd>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            // Between transactions the client holds no backend: it is idle.
            let idle = Progress {
                running: false,
                idle: true,
                client_open: !client_in.is_empty(),
                at_boundary: true,
            };
            if self.drain.should_end(idle, None).await {
                to_client.extend_from_slice(&crate::relay::shutdown_notice());
                return Err(PooledEnd::Shutdown);
            }
            match self.mux.has_client_message(client_in) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => {
                    report(&error, to_client);
                    return Err(PooledEnd::Protocol);
                }
            }
            room_to_read(client_in, CLIENT_READ);
            // Biased, writes first: what is owed goes out before more is read, and a fixed
            // order spares a random draw per turn (every branch is tried each turn anyway).
            tokio::select! {
                biased;
                written = client_write.write_buf(to_client), if !to_client.is_empty() => {
                    if written.is_err() {
                        return Err(PooledEnd::Client);
                    }
                }
                // A client that does not read what pgbastion answers alone (its Parses and
                // Syncs) waits, as it would at PostgreSQL once its socket is full.
                read = client_read.read_buf(client_in), if to_client.len() < BUFFER_LIMIT => {
                    if !matches!(read, Ok(n) if n > 0) {
                        return Err(PooledEnd::Client);
                    }
                }
                () = self.drain.wake(None) => {}
            }
        }
    }

    /// A backend, waiting in the pool's queue; a cancel request meanwhile ends the wait
    /// with 57014, as a cancelled query would, and a drain ends it (the client holds no
    /// backend: it is between transactions).
    async fn checkout(&mut self) -> Checkout<L::Lease> {
        let seen = self.slot.start_waiting();
        let drain = &mut self.drain;
        let drained = async {
            let idle = Progress {
                running: false,
                idle: true,
                client_open: false,
                at_boundary: true,
            };
            while !drain.should_end(idle, None).await {
                drain.wake(None).await;
            }
        };
        // Biased: a backend that is free at once is taken without setting up the other waits.
        let got = tokio::select! {
            biased;
            got = self.lender.checkout() => match got {
                Ok(lease) => Checkout::Got(lease),
                Err(refusal) => Checkout::Refused(refusal),
            },
            () = self.slot.cancelled_since(seen) => Checkout::Refused(ErrorResponse::new(
                Severity::Error,
                SqlState::QUERY_CANCELED,
                "canceling statement due to user request",
            )),
            () = drained => Checkout::Shutdown,
        };
        self.slot.stop_waiting();
        got
    }

    /// Relays between the client and the backend it holds until the backend is clean
    /// (transaction mode) or the session ends.
    async fn with_backend<R, W>(
        &mut self,
        held: &mut L::Lease,
        (client_read, client_write): (&mut R, &mut W),
        client_in: &mut BytesMut,
        to_client: &mut BytesMut,
        mut to_backend: BytesMut,
    ) -> Turn
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let PooledBackend { conn, state } = &mut **held;
        let mut backend_in = std::mem::take(&mut conn.buffered);
        let backend_key = conn.cancel_key();
        let (mut backend_read, mut backend_write) = tokio::io::split(&mut conn.stream);
        // After the client's Terminate: what it sent before still runs, and its answers are
        // read, for at most AFTER_TERMINATE.
        let mut terminating: Option<tokio::time::Instant> = None;
        let turn = loop {
            if let Err(error) = self.mux.from_backend(&mut backend_in, state, to_client) {
                tracing::warn!(%error, "backend out of step; closing it");
                report(&backend_lost(), to_client);
                break Turn::End(PooledEnd::Backend);
            }
            if !self.proven && !self.mux.owes_own() && !self.mux.own_failed() {
                self.proven = true;
            }
            // What pgbastion answers alone goes to the client at once: a client that does not
            // read is not read either, past a buffer's worth.
            if terminating.is_none()
                && self.proven
                && to_backend.len() < BUFFER_LIMIT
                && to_client.len() < BUFFER_LIMIT
            {
                match self.mux.has_client_message(client_in) {
                    Ok(false) => {}
                    Ok(true) => {
                        match self
                            .mux
                            .from_client(client_in, state, &mut to_backend, to_client)
                        {
                            Ok(ClientFlow::More) => {}
                            Ok(ClientFlow::Terminate) => {
                                terminating = Some(tokio::time::Instant::now() + AFTER_TERMINATE);
                            }
                            Err(error) => {
                                report(&error, to_client);
                                break Turn::End(PooledEnd::Protocol);
                            }
                        }
                    }
                    Err(error) => {
                        report(&error, to_client);
                        break Turn::End(PooledEnd::Protocol);
                    }
                }
            }
            self.slot.set_busy(self.mux.busy());
            if self.mux.own_failed() {
                tracing::warn!("a statement of pgbastion's own failed on the backend; closing it");
                let error = self
                    .mux
                    .own_error()
                    .cloned()
                    .map_or_else(backend_lost, |error| MuxError::Client(error.into_fatal()));
                report(&error, to_client);
                break Turn::End(PooledEnd::Backend);
            }
            if terminating.is_some() && to_backend.is_empty() && !self.mux.busy() {
                break Turn::End(PooledEnd::Terminate);
            }
            if to_backend.is_empty() && backend_in.is_empty() && self.mux.releasable() {
                break Turn::Release;
            }
            let at = Progress {
                running: self.mux.busy(),
                idle: self.mux.status() == TransactionStatus::Idle,
                client_open: !to_backend.is_empty()
                    || !client_in.is_empty()
                    || self.mux.mid_client_message(),
                at_boundary: !self.mux.mid_backend_message(),
            };
            // After the client's Terminate nothing more is said to it: that ends on its own.
            if terminating.is_none() && self.drain.should_end(at, backend_key.as_ref()).await {
                // Overdue sessions end wherever they are: the notice only between messages,
                // never after half of one.
                if at.at_boundary {
                    to_client.extend_from_slice(&crate::relay::shutdown_notice());
                }
                break Turn::End(PooledEnd::Shutdown);
            }
            // A message longer than the buffer is read whole all the same (the decoder bounds
            // it): nothing else can move the client on.
            let read_client = terminating.is_none()
                && (client_in.len() < BUFFER_LIMIT
                    || !matches!(self.mux.has_client_message(client_in), Ok(true)));
            room_to_read(client_in, CLIENT_READ);
            room_to_read(&mut backend_in, BACKEND_READ);
            // Biased, writes first (as above).
            tokio::select! {
                biased;
                written = client_write.write_buf(to_client), if !to_client.is_empty() => {
                    if written.is_err() {
                        break Turn::End(PooledEnd::Client);
                    }
                }
                written = backend_write.write_buf(&mut to_backend), if !to_backend.is_empty() => {
                    if written.is_err() {
                        report(&backend_lost(), to_client);
                        break Turn::End(PooledEnd::Backend);
                    }
                }
                read = backend_read.read_buf(&mut backend_in), if to_client.len() < BUFFER_LIMIT => {
                    if !matches!(read, Ok(n) if n > 0) {
                        if !self.mux.last_was_error() {
                            report(&backend_lost(), to_client);
                        }
                        break Turn::End(PooledEnd::Backend);
                    }
                }
                read = client_read.read_buf(client_in), if read_client => {
                    if !matches!(read, Ok(n) if n > 0) {
                        break Turn::End(PooledEnd::Client);
                    }
                }
                () = sleep_until(terminating) => {
                    break Turn::End(PooledEnd::Terminate);
                }
                () = self.drain.wake(None) => {}
            }
        };
        drop((backend_read, backend_write));
        conn.buffered = backend_in;
        turn
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Makes room in `buf` for a read of about `want` bytes. A read reads at most the spare
/// capacity (64 bytes in a buffer with none), and a read that fills it is followed by another
/// one, a system call that only learns the socket is empty: a reply of a few hundred bytes
/// read 64 at a time costs several.
fn room_to_read(buf: &mut BytesMut, want: usize) {
    if buf.capacity() - buf.len() < want / 2 {
        buf.reserve(want);
    }
}

fn backend_lost() -> MuxError {
    MuxError::Client(ErrorResponse::new(
        Severity::Fatal,
        SqlState::CONNECTION_FAILURE,
        "the connection to the backend was lost",
    ))
}

/// Queues the error that ends the session for the client.
fn report(error: &MuxError, to_client: &mut BytesMut) {
    let response = match error {
        MuxError::Client(response) => response.clone(),
        MuxError::Backend(_) => return report(&backend_lost(), to_client),
    };
    // A short fixed-shape error always encodes.
    let _ = BackendMessage::ErrorResponse(response).encode(to_client);
}
