//! [`BackendSocket`]: the socket under a backend connection (TCP or Unix), which can move to
//! another worker's runtime.
//!
//! A tokio socket is registered with the runtime it was made in, and its readiness wakes that
//! runtime's thread. A pooled connection serves clients of every worker: when a checkout on
//! another worker takes it, [`BackendSocket::rehome`] moves the registration to that worker
//! (two `epoll_ctl` calls, once), instead of every read crossing threads while it is used there.

use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A backend connection's socket.
#[derive(Debug)]
pub enum BackendSocket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain socket.
    Unix(UnixStream),
    /// Lost while moving (the move failed): every use fails.
    Detached,
}

impl BackendSocket {
    /// Registers the socket with the calling thread's runtime (it must be called inside one),
    /// for an idle connection: one the backend closed, or sent something on, while it sat
    /// idle is refused (a new registration knows nothing yet of what happened before). On
    /// failure the socket is closed and the error returned.
    pub fn rehome(&mut self) -> io::Result<()> {
        *self = match std::mem::replace(self, Self::Detached) {
            Self::Tcp(socket) => {
                let socket = socket.into_std()?;
                quiet(&socket)?;
                Self::Tcp(TcpStream::from_std(socket)?)
            }
            Self::Unix(socket) => {
                let socket = socket.into_std()?;
                quiet(&socket)?;
                Self::Unix(UnixStream::from_std(socket)?)
            }
            Self::Detached => return Err(detached()),
        };
        Ok(())
    }
}

/// Fails unless the socket has nothing to read (a look that never waits and takes nothing).
fn quiet(socket: &impl AsRawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(socket.as_raw_fd(), &mut byte, flags) {
        Err(Errno::EAGAIN) => Ok(()),
        Ok(0) => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the backend closed the connection while it was idle",
        )),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the backend sent something unasked while the connection was idle",
        )),
        Err(errno) => Err(errno.into()),
    }
}

fn detached() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the backend socket was lost while moving",
    )
}

impl AsyncRead for BackendSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(socket) => Pin::new(socket).poll_read(cx, buf),
            Self::Unix(socket) => Pin::new(socket).poll_read(cx, buf),
            Self::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for BackendSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(socket) => Pin::new(socket).poll_write(cx, buf),
            Self::Unix(socket) => Pin::new(socket).poll_write(cx, buf),
            Self::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            Self::Unix(socket) => Pin::new(socket).poll_write_vectored(cx, bufs),
            Self::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(socket) => socket.is_write_vectored(),
            Self::Unix(socket) => socket.is_write_vectored(),
            Self::Detached => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(socket) => Pin::new(socket).poll_flush(cx),
            Self::Unix(socket) => Pin::new(socket).poll_flush(cx),
            Self::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(socket) => Pin::new(socket).poll_shutdown(cx),
            Self::Unix(socket) => Pin::new(socket).poll_shutdown(cx),
            Self::Detached => Poll::Ready(Err(detached())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn a_socket_moved_to_another_runtime_is_woken_there() {
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (mut ours, theirs) = first.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let (ours, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
            (BackendSocket::Tcp(ours.unwrap()), accepted.unwrap().0)
        });
        let theirs_runtime = std::thread::spawn(move || {
            // The peer writes from a runtime of its own, after a pause.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let mut theirs = TcpStream::from_std(theirs.into_std().unwrap()).unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    theirs.write_all(b"hello").await.unwrap();
                    theirs
                })
        });
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The first runtime stops running: only a socket moved to the second can be woken.
        second.block_on(async {
            ours.rehome().unwrap();
            let mut read = [0; 5];
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                ours.read_exact(&mut read),
            )
            .await
            .expect("woken on the runtime it moved to")
            .unwrap();
            assert_eq!(&read, b"hello");
        });
        drop(theirs_runtime.join().unwrap());
        drop(first);
    }

    #[tokio::test]
    async fn a_socket_its_peer_closed_or_wrote_on_is_not_moved() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        for peer_writes in [false, true] {
            let (ours, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
            let mut ours = BackendSocket::Tcp(ours.unwrap());
            let mut theirs = accepted.unwrap().0;
            ours.rehome().expect("a quiet socket moves");
            if peer_writes {
                theirs.write_all(b"N").await.unwrap();
            }
            drop(theirs);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let error = ours.rehome().expect_err("not quiet");
            assert!(matches!(
                error.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::InvalidData
            ));
            assert!(ours.read_u8().await.is_err(), "and it is closed");
        }
    }
}
