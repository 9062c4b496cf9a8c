//! [`Observed`]: a client stream that shows the bytes passing through it, both ways, to an
//! [`Observer`] — the metrics ([`crate::metrics::Metered`]) and the query audit
//! ([`crate::audit::Audited`]) — so that the relay and the pooled sessions are measured and
//! audited with no change to either.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What looks at a client stream's traffic.
pub trait Observer {
    /// Bytes read from the client (never empty).
    fn client_sent(&mut self, bytes: &[u8]);
    /// Bytes written to the client.
    fn client_received(&mut self, bytes: &[u8]);
}

/// A stream whose traffic an [`Observer`] sees.
#[derive(Debug)]
pub struct Observed<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> Observed<S, O> {
    /// `inner`, seen by `observer` from now on.
    pub fn new(inner: S, observer: O) -> Self {
        Self { inner, observer }
    }
}

impl<S: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for Observed<S, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let read = &buf.filled()[before..];
        if !read.is_empty() {
            this.observer.client_sent(read);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for Observed<S, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf))?;
        this.observer.client_received(&buf[..written]);
        Poll::Ready(Ok(written))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
