//! [`RunningListeners`]: the accept loops of the listeners in force, opened, updated and
//! closed by reloads without ever rebinding an address that stays.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use pgbastion_gateway::Acceptor;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::drain::Drain;
use crate::limits::ConnectionLimiter;
use crate::session::{serve_client, ListenerContext};
use crate::settings::{Limits, Listener};
use crate::shared::Shared;
use crate::swap::Swap;
use crate::workers::Workers;

/// One listener's accept loop and what it hands each connection.
struct Running {
    /// The context of new connections; a reload replaces it.
    context: Arc<Swap<ListenerContext>>,
    /// The limits its limiter counts against.
    limits: Limits,
    /// Counts its open connections across reloads that keep its limits.
    limiter: Arc<ConnectionLimiter>,
    /// The accept loop; aborting it closes the socket (sessions have their own tasks).
    task: JoinHandle<()>,
    /// A duplicate of the listening socket, to hand to a new process in an upgrade; closed
    /// with the accept loop. `None` when it could not be duplicated (out of descriptors).
    descriptor: Option<OwnedFd>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a reload did to the listeners.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ListenerChanges {
    /// Listeners opened.
    pub opened: usize,
    /// Listeners closed (their sessions continue to their end).
    pub closed: usize,
    /// Listeners kept, with the new settings for new connections.
    pub kept: usize,
}

/// The accept loops in force, by configured address.
pub struct RunningListeners {
    runtime: tokio::runtime::Handle,
    workers: Option<Arc<Workers>>,
    drain: Drain,
    running: HashMap<SocketAddr, Running>,
}

impl RunningListeners {
    /// None yet; accept loops will run on `runtime`, sessions on `workers` when given, and
    /// every session watches `drain`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        workers: Option<Arc<Workers>>,
        drain: Drain,
    ) -> Self {
        Self {
            runtime,
            workers,
            drain,
            running: HashMap::new(),
        }
    }

    /// The runtime the accept loops run on (new sockets are bound there).
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Whether `address` is being served.
    pub fn serves(&self, address: SocketAddr) -> bool {
        self.running.contains_key(&address)
    }

    /// Starts accepting on `socket` for `listener`.
    pub fn start(&mut self, socket: TcpListener, listener: &Listener, shared: Arc<Shared>) {
        let descriptor = socket
            .as_fd()
            .try_clone_to_owned()
            .inspect_err(|error| {
                tracing::warn!(address = %listener.address, %error, "cannot duplicate a listening socket; an upgrade will not be possible");
            })
            .ok();
        let limiter = ConnectionLimiter::new(listener.limits);
        let context = Arc::new(Swap::new(Arc::new(ListenerContext::new(
            shared,
            listener,
            limiter.clone(),
            self.drain.clone(),
        ))));
        let task = self
            .runtime
            .spawn(accept_loop(socket, context.clone(), self.workers.clone()));
        self.running.insert(
            listener.address,
            Running {
                context,
                limits: listener.limits,
                limiter,
                task,
                descriptor,
            },
        );
    }

    /// Duplicates of the listening sockets, by configured address, for a new process to
    /// accept on (a zero-downtime upgrade).
    pub fn sockets(&self) -> std::io::Result<Vec<(SocketAddr, OwnedFd)>> {
        self.running
            .iter()
            .map(|(address, running)| {
                let Some(descriptor) = &running.descriptor else {
                    return Err(std::io::Error::other(format!(
                        "the listening socket of {address} could not be duplicated at start"
                    )));
                };
                Ok((*address, descriptor.try_clone()?))
            })
            .collect()
    }

    /// Puts `listeners` in force with `shared`: kept addresses keep their socket and take the
    /// new settings (TLS certificates included) for new connections, addresses no longer
    /// listed are closed, and new ones start on the sockets in `bound`.
    pub fn update(
        &mut self,
        listeners: &[Listener],
        mut bound: HashMap<SocketAddr, TcpListener>,
        shared: &Arc<Shared>,
    ) -> ListenerChanges {
        let mut changes = ListenerChanges::default();
        let before = self.running.len();
        self.running
            .retain(|address, _| listeners.iter().any(|l| l.address == *address));
        changes.closed = before - self.running.len();
        for listener in listeners {
            if let Some(running) = self.running.get_mut(&listener.address) {
                running.renew(listener, shared.clone(), &self.drain);
                changes.kept += 1;
            } else if let Some(socket) = bound.remove(&listener.address) {
                self.start(socket, listener, shared.clone());
                changes.opened += 1;
            }
        }
        changes
    }

    /// Stops every accept loop and waits until their sockets are closed (sessions in
    /// progress keep their own tasks).
    pub async fn close_all(&mut self) {
        for (_, mut running) in self.running.drain() {
            running.task.abort();
            // The socket closes when the aborted task is dropped, on its runtime.
            let _ = (&mut running.task).await;
        }
    }
}

impl Running {
    /// New connections get `listener`'s settings and `shared`; the limiter is kept when the
    /// limits are unchanged, so that open connections still count.
    fn renew(&mut self, listener: &Listener, shared: Arc<Shared>, drain: &Drain) {
        if listener.limits != self.limits {
            self.limits = listener.limits;
            self.limiter = ConnectionLimiter::new(listener.limits);
        }
        let mut listener = listener.clone();
        if let (Some(previous), Some(switch)) =
            (&self.context.load().switch, &listener.session_switch)
        {
            listener.session_switch = Some(Arc::new(switch.counting_on_from(previous)));
        }
        self.context.store(Arc::new(ListenerContext::new(
            shared,
            &listener,
            self.limiter.clone(),
            drain.clone(),
        )));
    }
}

async fn accept_loop(
    socket: TcpListener,
    context: Arc<Swap<ListenerContext>>,
    workers: Option<Arc<Workers>>,
) {
    // Accept errors (out of file descriptors and the like) are waited out and logged once
    // per burst by the Acceptor; the loop itself never ends.
    let mut acceptor = Acceptor::new(socket);
    loop {
        let (stream, peer) = acceptor.accept().await;
        // Read once per connection: the connection keeps this context (and the
        // configuration in it) to its end, whatever a reload does meanwhile.
        let ctx = context.load();
        match &workers {
            None => {
                tokio::spawn(serve_client(stream, peer, ctx));
            }
            Some(workers) => hand_over(workers, stream, peer, ctx),
        }
    }
}

/// Moves an accepted connection to a worker's runtime.
fn hand_over(workers: &Workers, stream: TcpStream, peer: SocketAddr, ctx: Arc<ListenerContext>) {
    // The socket leaves this runtime's reactor and joins the worker's.
    let stream = match stream.into_std() {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(%peer, %error, "cannot hand a connection to a worker");
            return;
        }
    };
    workers.spawn(move || async move {
        match TcpStream::from_std(stream) {
            Ok(stream) => serve_client(stream, peer, ctx).await,
            Err(error) => tracing::warn!(%peer, %error, "a worker cannot take a connection"),
        }
    });
}
