//! [`AuditLog`]: the audit writer. Sessions hand it events without waiting: a queue bounded
//! in events (`queue`) and in bytes (`queue_bytes`) feeds one thread that owns the
//! destination; an event that would overfill it is dropped and counted
//! (`pgbastion_audit_events_dropped_total`), so a slow or stuck destination never slows a
//! relay down. A session's start and end may use twice the bounds: they are dropped only
//! when the queue is far behind.
//!
//! Each line is serialized by the session and written by the writer with one `write` call
//! (lines up to 4 KiB are atomic on a pipe shared with another process). At the end of
//! serving, [`AuditLog::close`] lets the writer finish the queue, for a bounded time.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use prometheus_client::metrics::counter::Counter;

use super::event::{Event, Record};
use super::settings::{AuditDestination, AuditSettings};
use crate::clients::ClientId;
use crate::metrics::AuditCounters;

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The destination could not be opened.
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
    /// A line to write (its `\n` included).
    Line(Vec<u8>),
    /// Nothing to write: look at the reopen flag now.
    Wake,
    /// The end: what is queued before it is written, then the writer stops.
    Close,
}

/// What is waiting in the queue.
#[derive(Debug, Default)]
struct Queued {
    events: AtomicU64,
    bytes: AtomicU64,
}

impl Queued {
    /// Counts a line of `len` bytes in, unless that would pass `events` or `bytes`.
    fn admit(&self, len: u64, events: u64, bytes: u64) -> bool {
        let before = self.events.fetch_add(1, Ordering::AcqRel);
        let before_bytes = self.bytes.fetch_add(len, Ordering::AcqRel);
        if before < events && before_bytes + len <= bytes {
            return true;
        }
        self.release(len);
        false
    }

    fn release(&self, len: u64) {
        self.events.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(len, Ordering::AcqRel);
    }
}

/// The writer thread, until it is joined.
#[derive(Debug)]
struct Running {
    thread: JoinHandle<()>,
    /// Says when the writer is done.
    done: Receiver<()>,
}

/// The process's audit log: the queue's sending end.
#[derive(Debug)]
pub struct AuditLog {
    sender: Sender<Message>,
    /// Set by [`AuditLog::close`]: events are dropped from then on.
    closed: AtomicBool,
    queued: Arc<Queued>,
    /// The bounds: events, bytes.
    limits: (u64, u64),
    reopen: Arc<AtomicBool>,
    dropped: Counter,
    redact: bool,
    pid: u32,
    running: Mutex<Option<Running>>,
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
        let (sender, receiver) = channel();
        let (done_sender, done) = channel();
        let reopen = Arc::new(AtomicBool::new(false));
        let queued = Arc::new(Queued::default());
        let writer = Writer {
            out: sink.out,
            path: sink.path,
            receiver,
            queued: queued.clone(),
            reopen: reopen.clone(),
            written: counters.written,
            dropped: counters.dropped.clone(),
            lost: 0,
            torn: false,
        };
        let thread = std::thread::Builder::new()
            .name("pgbastion-audit".to_owned())
            .spawn(move || {
                writer.run();
                let _ = done_sender.send(());
            })
            .map_err(AuditError::Thread)?;
        Ok(Self {
            sender,
            closed: AtomicBool::new(false),
            queued,
            limits: (settings.queue.get() as u64, settings.queue_bytes.get()),
            reopen,
            dropped: counters.dropped,
            redact: settings.redact_literals,
            pid: std::process::id(),
            running: Mutex::new(Some(Running { thread, done })),
        })
    }

    /// Queues event `seq` of connection `id`, or drops and counts it when the queue is
    /// full (or closed); whether it was queued. Never waits.
    pub fn send(&self, id: ClientId, seq: u64, event: Event) -> bool {
        let lasting = matches!(event, Event::SessionStart(_) | Event::SessionEnd(_));
        let (events, bytes) = match lasting {
            true => (self.limits.0 * 2, self.limits.1 * 2),
            false => self.limits,
        };
        // A full queue costs no serializing.
        if self.queued.events.load(Ordering::Acquire) >= events {
            self.dropped.inc();
            return false;
        }
        // A record of strings and numbers always serializes.
        let Ok(mut line) = serde_json::to_vec(&Record::now(self.pid, id, seq, event)) else {
            self.dropped.inc();
            return false;
        };
        line.push(b'\n');
        let len = line.len() as u64;
        if !self.queued.admit(len, events, bytes) {
            self.dropped.inc();
            return false;
        }
        let sent =
            !self.closed.load(Ordering::Acquire) && self.sender.send(Message::Line(line)).is_ok();
        if !sent {
            self.queued.release(len);
            self.dropped.inc();
        }
        sent
    }

    /// Whether literals are redacted (`redact_literals`).
    pub fn redacts(&self) -> bool {
        self.redact
    }

    /// Has the writer open the destination file afresh before its next line (SIGUSR1, for
    /// logrotate); nothing for stdout.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.sender.send(Message::Wake);
    }

    /// Closes the queue (later events are dropped) and waits, at most `limit`, for the
    /// writer to write what it holds; what it could not is logged and counted as dropped.
    /// Blocks: call it off the async runtime's threads.
    pub fn close(&self, limit: Duration) {
        self.closed.store(true, Ordering::Release);
        let _ = self.sender.send(Message::Close);
        let Some(running) = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let finished = match running.done.recv_timeout(limit) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = running.thread.join();
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
        };
        // Left in the queue: behind a writer that did not finish, or sent as it closed.
        let abandoned = self.queued.events.load(Ordering::Acquire);
        if abandoned > 0 {
            self.dropped.inc_by(abandoned);
            tracing::warn!(
                events = abandoned,
                ?limit,
                finished,
                "audit events still queued at the end are lost"
            );
        }
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
                out: Box::new(stdout().map_err(|source| AuditError::Open {
                    path: PathBuf::from("stdout"),
                    source,
                })?),
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

/// Standard output as a file of its own: each line is one `write` call, not buffered.
fn stdout() -> io::Result<File> {
    Ok(File::from(io::stdout().as_fd().try_clone_to_owned()?))
}

/// Appends to `path`, creating it readable by its owner only (audit lines hold query
/// texts). The open never waits: a FIFO nobody reads is refused (ENXIO) instead of
/// blocking the process; once open, writes block again (on the writer thread).
fn open_append(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(code) if code == nix::libc::ENXIO => io::Error::new(
                error.kind(),
                "a FIFO (or device) that no process has open for reading",
            ),
            _ => error,
        })?;
    let flags = OFlag::from_bits_truncate(fcntl(file.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(
        file.as_raw_fd(),
        FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK),
    )?;
    Ok(file)
}

/// The writer thread's state.
struct Writer {
    out: Box<dyn Write + Send>,
    path: Option<PathBuf>,
    receiver: Receiver<Message>,
    queued: Arc<Queued>,
    reopen: Arc<AtomicBool>,
    written: Counter,
    dropped: Counter,
    /// Lines lost in the current failure streak (0: the last write succeeded).
    lost: u64,
    /// Whether the last line was written only in part (the next starts on a new line).
    torn: bool,
}

impl Writer {
    /// Writes until told to close (or every sender is gone).
    fn run(mut self) {
        while let Ok(message) = self.receiver.recv() {
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_file();
            }
            let line = match message {
                Message::Line(line) => line,
                Message::Wake => continue,
                Message::Close => break,
            };
            self.queued.release(line.len() as u64);
            self.write(line);
        }
        if self.lost > 0 {
            tracing::warn!(
                lost = self.lost,
                "the audit log was still failing at the end; events were lost"
            );
        }
    }

    /// Writes `line`, counting it written, or dropped when the write fails; a failure
    /// streak is logged once when it starts and once when it ends, with its count.
    fn write(&mut self, mut line: Vec<u8>) {
        if self.torn {
            line.insert(0, b'\n');
        }
        match self.write_line(&line) {
            Ok(()) => {
                self.written.inc();
                if self.lost > 0 {
                    tracing::warn!(
                        lost = self.lost,
                        "the audit log is written again; events were lost while it failed"
                    );
                    self.lost = 0;
                }
            }
            Err(error) => {
                self.dropped.inc();
                if self.lost == 0 {
                    tracing::warn!(%error, "cannot write to the audit log; events are lost until a write succeeds again");
                }
                self.lost += 1;
            }
        }
    }

    /// One `write` call for the whole line when the destination takes it.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        let mut rest = line;
        while !rest.is_empty() {
            match self.out.write(rest) {
                Ok(0) => {
                    self.torn |= rest.len() < line.len();
                    return Err(io::ErrorKind::WriteZero.into());
                }
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    self.torn |= rest.len() < line.len();
                    return Err(error);
                }
            }
        }
        self.torn = false;
        Ok(())
    }

    fn reopen_file(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        match open_append(&path) {
            Ok(file) => {
                self.out = Box::new(file);
                self.torn = false;
                tracing::info!(path = %path.display(), "SIGUSR1: audit log reopened");
            }
            Err(error) => tracing::warn!(
                path = %path.display(), %error,
                "SIGUSR1: cannot reopen the audit log; still writing to the one open before"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::{NonZeroU64, NonZeroUsize};
    use std::sync::mpsc::{channel, Sender};
    use std::time::{Duration, Instant};

    use super::*;
    use crate::audit::event::ErrorEvent;

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

    /// A [`Gate`] sink, with the test's ends: to open the gate, to hear a write start, to
    /// read what was written.
    fn gated() -> (Sink, Sender<()>, Receiver<()>, Receiver<Vec<u8>>) {
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
        (sink, open, writing, written_lines)
    }

    fn query() -> Event {
        Event::Error(ErrorEvent::from_body(b"C22012\0\0", false))
    }

    fn settings(queue: usize, queue_bytes: u64) -> AuditSettings {
        AuditSettings {
            destination: AuditDestination::Stdout,
            queue: NonZeroUsize::new(queue).unwrap(),
            queue_bytes: NonZeroU64::new(queue_bytes).unwrap(),
            redact_literals: false,
        }
    }

    /// A destination whose writes do what `take` says (given the call's number and the
    /// length offered: how much is taken, or the error); what it takes is kept.
    struct Scripted<F> {
        take: F,
        calls: usize,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl<F: FnMut(usize, usize) -> io::Result<usize>> Write for Scripted<F> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            let n = (self.take)(self.calls, buf.len())?;
            self.taken.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes `events` events to `sink`, to the end; the counters.
    fn write_through(sink: Sink, events: u64) -> AuditCounters {
        let counters = AuditCounters::default();
        let log = AuditLog::with_sink(sink, &settings(100, 1 << 20), counters.clone()).unwrap();
        for seq in 0..events {
            assert!(log.send(ClientId(1), seq, query()));
        }
        log.close(Duration::from_secs(5));
        counters
    }

    /// A [`Scripted`] sink and what it will have taken.
    fn scripted(
        take: impl FnMut(usize, usize) -> io::Result<usize> + Send + 'static,
    ) -> (Sink, Arc<Mutex<Vec<u8>>>) {
        let taken = Arc::new(Mutex::new(Vec::new()));
        let out = Scripted {
            take,
            calls: 0,
            taken: taken.clone(),
        };
        let sink = Sink {
            out: Box::new(out),
            path: None,
        };
        (sink, taken)
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting_and_the_rest_is_written() {
        let (sink, open, writing, written_lines) = gated();
        let counters = AuditCounters::default();
        let log = AuditLog::with_sink(sink, &settings(2, 1 << 20), counters.clone()).unwrap();
        log.send(ClientId(1), 0, query());
        // The writer is now stuck writing the first event out.
        writing.recv_timeout(Duration::from_secs(5)).unwrap();
        let started = Instant::now();
        for seq in 1..=50 {
            log.send(ClientId(1), seq, query());
        }
        assert!(started.elapsed() < Duration::from_secs(1), "send waited");
        assert_eq!(counters.dropped.get(), 48, "two fit in the queue");
        drop(open);
        log.close(Duration::from_secs(5));
        let text = String::from_utf8(written_lines.iter().collect::<Vec<_>>().concat()).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert_eq!(counters.written.get(), 3);
        assert!(text
            .lines()
            .all(|line| line.contains("\"event\":\"error\"")));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_close_writes_what_it_holds() {
        let (sink, open, writing, written_lines) = gated();
        let line_len = serde_json::to_vec(&Record::now(std::process::id(), ClientId(1), 0, query()))
            .unwrap()
            .len() as u64;
        let counters = AuditCounters::default();
        let settings = settings(1000, 3 * line_len + 10);
        let log = AuditLog::with_sink(sink, &settings, counters.clone()).unwrap();
        log.send(ClientId(1), 0, query());
        writing.recv_timeout(Duration::from_secs(5)).unwrap();
        let queued: Vec<bool> = (1..=5)
            .map(|seq| log.send(ClientId(1), seq, query()))
            .collect();
        assert_eq!(queued, [true, true, true, false, false], "three lines fit");
        drop(open);
        log.close(Duration::from_secs(5));
        assert_eq!(counters.written.get(), 4, "close waited for the queue");
        assert!(!log.send(ClientId(1), 6, query()), "closed");
        assert_eq!(counters.dropped.get(), 3);
        assert_eq!(written_lines.try_iter().count(), 4);
    }

    #[test]
    fn failed_writes_count_as_dropped() {
        let line_len =
            serde_json::to_vec(&Record::now(std::process::id(), ClientId(1), 0, query()))
                .unwrap()
                .len()
                + 1;
        // Room for a line and 10 bytes, then ENOSPC (like /dev/full).
        let mut room = line_len + 10;
        let (sink, taken) = scripted(move |_, len| {
            let n = len.min(room);
            room -= n;
            match n {
                0 => Err(io::Error::from_raw_os_error(nix::libc::ENOSPC)),
                n => Ok(n),
            }
        });
        let counters = write_through(sink, 12);
        assert_eq!(counters.written.get(), 1);
        assert_eq!(counters.dropped.get(), 11);
        let taken = taken.lock().unwrap();
        assert_eq!(taken.len(), line_len + 10);
        assert!(taken.starts_with(b"{") && taken[line_len - 1] == b'\n');
    }

    #[test]
    fn after_a_line_written_in_part_the_next_starts_on_a_new_line() {
        // The second write fails, after a first that took 5 bytes.
        let (sink, taken) = scripted(|call, len| match call {
            1 => Ok(len.min(5)),
            2 => Err(io::Error::from_raw_os_error(nix::libc::EIO)),
            _ => Ok(len),
        });
        let counters = write_through(sink, 2);
        assert_eq!((counters.written.get(), counters.dropped.get()), (1, 1));
        let text = String::from_utf8(taken.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0].len(), 5, "{text}");
        let last: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(last["seq"], 1);
    }
}
