//! [`Control`]: how an admin console session asks the [`Proxy`] for what only it can do
//! (reload, shut down). Sessions do not hold the proxy; they send a [`Request`] that
//! [`Proxy::serve`] answers, during the drain too (a reload is then refused).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::server::Proxy;

/// Requests waiting for the proxy; a console that sends more waits for room.
const QUEUE: usize = 16;

/// What a console asks of the proxy.
#[derive(Debug)]
pub enum Request {
    /// Reload the configuration file; the answer is the outcome's text.
    Reload(oneshot::Sender<Result<String, String>>),
    /// Start the drain: with the configured grace period (`wait`) or none.
    Shutdown {
        /// SHUTDOWN WAIT.
        wait: bool,
    },
}

/// The channel between console sessions and the proxy.
#[derive(Debug)]
pub struct Control {
    sender: mpsc::Sender<Request>,
    receiver: Mutex<Option<mpsc::Receiver<Request>>>,
}

impl Default for Control {
    fn default() -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        Self {
            sender,
            receiver: Mutex::new(Some(receiver)),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
#[error("the proxy did not answer within {0:?} (is it shutting down?)")]
pub struct NoAnswer(Duration);

impl Control {
    /// Sends `request` and waits for its answer on `answer`, at most `limit`.
    pub async fn ask<T>(
        &self,
        request: Request,
        answer: oneshot::Receiver<T>,
        limit: Duration,
    ) -> Result<T, NoAnswer> {
        let asked = async {
            self.sender.send(request).await.ok()?;
            answer.await.ok()
        };
        match tokio::time::timeout(limit, asked).await {
            Ok(Some(answer)) => Ok(answer),
            _ => Err(NoAnswer(limit)),
        }
    }

    /// Sends `request`, which has no answer, waiting at most `limit` for room.
    pub async fn tell(&self, request: Request, limit: Duration) -> Result<(), NoAnswer> {
        match tokio::time::timeout(limit, self.sender.send(request)).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(NoAnswer(limit)),
        }
    }

    /// The receiving end, once: the first [`Proxy::serve`] takes it.
    fn take(&self) -> Option<mpsc::Receiver<Request>> {
        self.receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Proxy {
    /// Answers the consoles' requests, for as long as the proxy serves.
    pub(crate) async fn answer_requests(&self) {
        let Some(mut requests) = self.lasting.control.take() else {
            return std::future::pending().await;
        };
        while let Some(request) = requests.recv().await {
            self.answer(request).await;
        }
        // The sender lives in `Lasting` as long as the proxy: never reached.
        std::future::pending().await
    }

    async fn answer(&self, request: Request) {
        match request {
            Request::Reload(answer) if self.is_upgrading() => {
                let _ = answer.send(Err("an upgrade (SIGUSR2) is under way: RELOAD refused, \
                     the process taking over reads the configuration file itself"
                    .to_owned()));
            }
            Request::Reload(answer) if self.is_draining() => {
                let refused = "the proxy is shutting down (draining): RELOAD refused".to_owned();
                let _ = answer.send(Err(refused));
            }
            Request::Reload(answer) => {
                let outcome = self.reload().await;
                let _ = answer.send(outcome.map(|s| s.to_string()).map_err(|e| e.to_string()));
            }
            Request::Shutdown { wait } => {
                let grace = if wait {
                    self.grace_period()
                } else {
                    Duration::ZERO
                };
                tracing::info!(grace_period = ?grace, "admin console: SHUTDOWN");
                self.drain(grace);
            }
        }
    }
}
