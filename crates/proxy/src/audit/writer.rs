//! [`AuditLog`]: the audit writer. Sessions hand it events without waiting: a bounded queue
//! feeds one thread that owns the destination; when the queue is full the event is dropped
//! and counted (`pgbastion_audit_events_dropped_total`), so a slow or stuck destination
//! never slows a relay down.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use super::event::{Event, Record};
use super::settings::{AuditDestination, AuditSettings};
use crate::clients::ClientId;
use crate::metrics::AuditCounters;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The destination file could not be opened.
    #[error("cannot open the audit log {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread: {0}")]
    Thread(io::Error),
}

/// What goes to the writer thread.
enum Message {
    /// An event to write.
    Record(Record),
    /// Nothing to write: look at the reopen flag now.
    Wake,
}

/// The process's audit log: the queue's sending end.
#[derive(Debug)]
pub struct AuditLog {
    sender: SyncSender<Message>,
    reopen: Arc<AtomicBool>,
    dropped: Counter,
    redact: bool,
    pid: u32,
}

impl AuditLog {
    /// Opens the destination and starts the writer thread.
    pub fn start(settings: &AuditSettings, counters: AuditCounters) -> Result<Self, AuditError> {
        let sink = Sink::open(&settings.destination)?;
        Self::with_sink(sink, settings, counters)
    }

    fn with_sink(
        sink: Sink,
        settings: &AuditSettings,
        counters: AuditCounters,
    ) -> Result<Self, AuditError> {
        let (sender, receiver) = sync_channel(settings.queue.get());
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            out: BufWriter::new(sink.out),
            path: sink.path,
            receiver,
            reopen: reopen.clone(),
            written: counters.written,
            failing: false,
        };
        std::thread::Builder::new()
            .name("pgbastion-audit".to_owned())
            .spawn(move || writer.run())
            .map_err(AuditError::Thread)?;
        Ok(Self {
            sender,
            reopen,
            dropped: counters.dropped,
            redact: settings.redact_literals,
            pid: std::process::id(),
        })
    }

    /// Queues `event` of connection `id`, or drops and counts it when the queue is full.
    /// Never waits.
    pub fn send(&self, id: ClientId, event: Event) {
        if self
            .sender
            .try_send(Message::Record(Record::now(self.pid, id, event)))
            .is_err()
        {
            self.dropped.inc();
        }
    }

    /// Whether literals are redacted (`redact_literals`).
    pub fn redacts(&self) -> bool {
        self.redact
    }

    /// Has the writer open the destination file afresh before its next line (SIGUSR1, for
    /// logrotate); nothing for stdout.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        // A full queue wakes the writer anyway.
        let _ = self.sender.try_send(Message::Wake);
    }
}

/// An open destination.
struct Sink {
    out: Box<dyn Write + Send>,
    /// The file's path (none for stdout).
    path: Option<PathBuf>,
}

impl Sink {
    fn open(destination: &AuditDestination) -> Result<Self, AuditError> {
        Ok(match destination {
            AuditDestination::Stdout => Self {
                out: Box::new(io::stdout()),
                path: None,
            },
            AuditDestination::File(path) => Self {
                out: Box::new(open_append(path).map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                })?),
                path: Some(path.clone()),
            },
        })
    }
}

/// Appends to `path`, creating it readable by its owner only (audit lines hold query texts).
fn open_append(path: &Path) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The writer thread's state.
struct Writer {
    out: BufWriter<Box<dyn Write + Send>>,
    path: Option<PathBuf>,
    receiver: Receiver<Message>,
    reopen: Arc<AtomicBool>,
    written: Counter,
    /// Whether the last write failed (a failure streak is reported once).
    failing: bool,
}

impl Writer {
    /// Writes until every sender is gone, flushing whenever the queue is empty.
    fn run(mut self) {
        while let Ok(message) = self.receiver.recv() {
            let mut next = Some(message);
            while let Some(message) = next {
                self.handle(message);
                next = self.receiver.try_recv().ok();
            }
            let flushed = self.out.flush();
            self.outcome(flushed);
        }
    }

    fn handle(&mut self, message: Message) {
        if self.reopen.swap(false, Ordering::AcqRel) {
            self.reopen_file();
        }
        let Message::Record(record) = message else {
            return;
        };
        // A record of strings and numbers always serializes.
        let Ok(mut line) = serde_json::to_vec(&record) else {
            return;
        };
        line.push(b'\n');
        let wrote = self.out.write_all(&line);
        if wrote.is_ok() {
            self.written.inc();
        }
        self.outcome(wrote);
    }

    fn reopen_file(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let flushed = self.out.flush();
        self.outcome(flushed);
        match open_append(&path) {
            Ok(file) => {
                self.out = BufWriter::new(Box::new(file));
                tracing::info!(path = %path.display(), "SIGUSR1: audit log reopened");
            }
            Err(error) => tracing::warn!(
                path = %path.display(), %error,
                "SIGUSR1: cannot reopen the audit log; still writing to the one open before"
            ),
        }
    }

    /// Reports the first failure of a streak.
    fn outcome(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => self.failing = false,
            Err(error) if !self.failing => {
                self.failing = true;
                tracing::warn!(%error, "cannot write to the audit log; events are lost until a write succeeds again");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::mpsc::{channel, Sender};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::audit::event::Statement;

    /// A destination whose writes say they started, then wait until the test lets them
    /// through (or drops its end).
    struct Gate {
        entered: Sender<()>,
        open: Receiver<()>,
        lines: Sender<Vec<u8>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let _ = self.open.recv();
            let _ = self.lines.send(buf.to_vec());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn query() -> Event {
        Event::Query(Statement::query(b"SELECT 1\0", false, false))
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting_and_the_rest_is_written() {
        let (open, gate) = channel();
        let (entered, writing) = channel();
        let (lines, written_lines) = channel();
        let sink = Sink {
            out: Box::new(Gate {
                entered,
                open: gate,
                lines,
            }),
            path: None,
        };
        let settings = AuditSettings {
            destination: AuditDestination::Stdout,
            queue: NonZeroUsize::new(2).unwrap(),
            redact_literals: false,
        };
        let counters = AuditCounters::default();
        let log = AuditLog::with_sink(sink, &settings, counters.clone()).unwrap();
        log.send(ClientId(1), query());
        // The writer is now stuck writing the first event out.
        writing.recv_timeout(Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        for _ in 0..50 {
            log.send(ClientId(1), query());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "send waited");
        assert_eq!(counters.dropped.get(), 48, "two fit in the queue");
        drop(open);
        drop(log);
        let text = String::from_utf8(written_lines.iter().collect::<Vec<_>>().concat()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(counters.written.get(), 3);
        assert!(text
            .lines()
            .all(|line| line.contains("\"event\":\"query\"")));
    }
}
