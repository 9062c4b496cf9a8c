//! What a zero-downtime upgrade needs from the proxy: the listening sockets in force, handed
//! to a new process ([`Proxy::listening_sockets`]); sockets handed over, adopted instead of
//! bound ([`Proxy::bind_adopting`]); and an end to accepting while the sessions in progress
//! go on ([`Proxy::stop_accepting`]), undone when the new process fails before the drain
//! ([`Proxy::resume_accepting`]). Passing the descriptors themselves is the binary's
//! business: the library only gives and takes sockets.
//!
//! The new process accepts on the very sockets the old one did, so the kernel's queue of
//! connections not yet accepted is shared and nothing queued is lost (with `SO_REUSEPORT`
//! and a second socket, whatever is queued on the closing one is reset).

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::PoisonError;

use tokio::net::TcpListener;

use crate::listeners::RunningListeners;
use crate::server::{Proxy, ProxyError};
use crate::settings::Listener;

impl Proxy {
    /// Binds every listener, except those `adopt` has a listening socket for (an already
    /// bound `std` listener, typically inherited from the process this one replaces): those
    /// are served as they are.
    pub async fn bind_adopting(
        &self,
        mut adopt: impl FnMut(SocketAddr) -> Option<std::net::TcpListener>,
    ) -> Result<Vec<(TcpListener, Listener)>, ProxyError> {
        let mut bound = Vec::new();
        for listener in &self.in_force.load().settings.listeners {
            let address = listener.address;
            let socket = match adopt(address) {
                Some(socket) => {
                    tracing::info!(%address, "serving a listening socket handed over (not bound anew)");
                    from_std(socket)
                }
                None => TcpListener::bind(address).await,
            };
            let socket = socket.map_err(|source| ProxyError::Bind { address, source })?;
            bound.push((socket, listener.clone()));
        }
        Ok(bound)
    }

    /// Duplicates of the sockets the proxy accepts on now, by configured address (empty
    /// before [`Proxy::serve`] and once it stopped accepting).
    pub fn listening_sockets(&self) -> std::io::Result<Vec<(SocketAddr, OwnedFd)>> {
        match &*self.running.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(running) => running.sockets(),
            None => Ok(Vec::new()),
        }
    }

    /// Stops accepting: the accept loops end and the proxy's listening sockets close (a new
    /// process holding the same sockets goes on accepting). Sessions in progress go on; a
    /// reload no longer opens listeners. [`Proxy::drain`] ends the sessions.
    pub async fn stop_accepting(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut running) = running {
            running.close_all().await;
        }
    }
}

impl Proxy {
    /// Waits until [`Proxy::serve`] has started its accept loops (a new process reports
    /// ready only then).
    pub async fn accepting(&self) {
        let mut accepting = self.accepting.subscribe();
        // The sender lives in the proxy: the wait cannot fail while it is borrowed.
        let _ = accepting.wait_for(|accepting| *accepting).await;
    }

    /// Accepts again on `sockets` (duplicates taken by [`Proxy::listening_sockets`] before
    /// [`Proxy::stop_accepting`]), each for the configured listener of its address, with the
    /// configuration in force: the new process of an upgrade died before this one drained.
    /// Nothing once the drain has started. A socket that cannot be served is logged and
    /// skipped; a configured address without a socket is not served.
    pub fn resume_accepting(&self, sockets: Vec<(SocketAddr, OwnedFd)>) {
        if self.is_draining() {
            return;
        }
        let in_force = self.in_force.load();
        let mut running = RunningListeners::new(
            tokio::runtime::Handle::current(),
            self.workers.clone(),
            self.drain_handle(),
        );
        for (address, socket) in sockets {
            let Some(listener) = in_force
                .settings
                .listeners
                .iter()
                .find(|l| l.address == address)
            else {
                continue;
            };
            match from_std(std::net::TcpListener::from(socket)) {
                Ok(socket) => {
                    tracing::info!(%address, "accepting again");
                    running.start(socket, listener, in_force.shared.clone());
                }
                Err(error) => tracing::error!(%address, %error, "cannot accept again"),
            }
        }
        *self.running.lock().unwrap_or_else(PoisonError::into_inner) = Some(running);
    }
}

/// A tokio listener on an already bound `std` one.
fn from_std(socket: std::net::TcpListener) -> std::io::Result<TcpListener> {
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket)
}
