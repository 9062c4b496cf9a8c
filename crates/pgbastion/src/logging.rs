//! Log output: text or JSON, to stderr, a file (reopened on SIGUSR1) or syslog. Field values
//! often hold what a client chose (user and database names, server names, startup
//! parameters): in text lines every control character is escaped, so no client can forge a
//! line or send terminal escapes to the operator's screen. Colours only when the lines go to
//! stderr, stderr is a terminal and `NO_COLOR` is unset.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, IsTerminal};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use pgbastion_proxy::config::{LogConfig, LogDestination, LogFormat};
use tracing::{Level, Metadata};
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::log_file::LogFile;
use crate::syslog::{Syslog, DEV_LOG};

/// What the running process keeps of its logging: the log file, to reopen on SIGUSR1.
#[derive(Debug, Clone, Default)]
pub struct LogHandle {
    file: Option<Arc<LogFile>>,
}

impl LogHandle {
    /// Reopens the log file (SIGUSR1), logging the outcome; nothing to do for other
    /// destinations.
    pub fn reopen(&self) {
        let Some(file) = &self.file else {
            tracing::info!("SIGUSR1: logs do not go to a file; nothing to reopen");
            return;
        };
        match file.reopen() {
            Ok(()) => tracing::info!(path = %file.path().display(), "SIGUSR1: log file reopened"),
            Err(error) => tracing::warn!(
                path = %file.path().display(), %error,
                "SIGUSR1: cannot reopen the log file; still writing to the one open before"
            ),
        }
    }
}

/// Installs the global subscriber for `config` (a relative file path starts at `dir`).
pub fn init(config: &LogConfig, dir: &Path) -> anyhow::Result<LogHandle> {
    let (sink, handle) = match &config.destination {
        LogDestination::Stderr => (Sink::Stderr, LogHandle::default()),
        LogDestination::File(path) => {
            let path = dir.join(path);
            let file = LogFile::open(&path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            let file = Arc::new(file);
            let handle = LogHandle {
                file: Some(file.clone()),
            };
            (Sink::File(file), handle)
        }
        LogDestination::Syslog => {
            let syslog = Syslog::connect(Path::new(DEV_LOG))
                .with_context(|| format!("cannot log to syslog through {DEV_LOG}"))?;
            (Sink::Syslog(Arc::new(syslog)), LogHandle::default())
        }
    };
    install(config.format, config.level.as_deref(), sink);
    Ok(handle)
}

/// Installs the subscriber the embedded database uses: text on stderr.
pub fn init_stderr() {
    install(LogFormat::Text, None, Sink::Stderr);
}

fn install(format: LogFormat, level: Option<&str>, sink: Sink) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    // Syslog stamps each line itself; JSON objects keep their timestamp field.
    let clock = match (&sink, format) {
        (Sink::Syslog(_), LogFormat::Text) => Clock::None,
        _ => Clock::System,
    };
    let colours = matches!(sink, Sink::Stderr) && colours_wanted();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_timer(clock)
        .with_writer(sink)
        .with_ansi(colours);
    match format {
        // JSON strings escape control characters themselves.
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.fmt_fields(escaped_fields()).init(),
    }
}

/// Whether to colour text lines: only for a person at a terminal who has not said no.
fn colours_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Where formatted lines go.
#[derive(Debug, Clone)]
enum Sink {
    Stderr,
    File(Arc<LogFile>),
    Syslog(Arc<Syslog>),
}

/// One line's writer (the formatter writes each line whole, in one call).
enum SinkWriter<'a> {
    Stderr(io::Stderr),
    File(&'a LogFile),
    Syslog(&'a Syslog, Level),
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        self.writer(Level::INFO)
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> SinkWriter<'a> {
        self.writer(*meta.level())
    }
}

impl Sink {
    fn writer(&self, level: Level) -> SinkWriter<'_> {
        match self {
            Self::Stderr => SinkWriter::Stderr(io::stderr()),
            Self::File(file) => SinkWriter::File(file),
            Self::Syslog(syslog) => SinkWriter::Syslog(syslog, level),
        }
    }
}

impl io::Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stderr(stderr) => stderr.write(buf),
            Self::File(file) => {
                file.append(buf);
                Ok(buf.len())
            }
            Self::Syslog(syslog, level) => {
                syslog.send(*level, buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stderr(stderr) => stderr.flush(),
            Self::File(_) | Self::Syslog(..) => Ok(()),
        }
    }
}

/// The time at the start of a line: the system's, or none where the destination adds it.
#[derive(Debug, Clone, Copy)]
enum Clock {
    System,
    None,
}

impl FormatTime for Clock {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match self {
            Self::System => SystemTime.format_time(w),
            Self::None => Ok(()),
        }
    }
}

/// The text formatter's fields (of events and spans): `name=value`, the message bare, every
/// value with its control characters escaped.
fn escaped_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static {
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        let text = format!("{value:?}");
        let text = escape_controls(&text);
        if field.name() == "message" {
            write!(writer, "{text}")
        } else {
            write!(writer, "{field}={text}")
        }
    })
    .delimited(" ")
}

/// `text` with each control character (newline, carriage return, ESC, …) written as its
/// Rust escape (`\n`, `\r`, `\u{1b}`); other text unchanged.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_other_text_kept() {
        assert_eq!(escape_controls("alice"), "alice");
        assert_eq!(escape_controls("ünïcödé ok"), "ünïcödé ok");
        assert_eq!(
            escape_controls("evil\n2026 INFO forged\r\u{1b}[31m\t"),
            "evil\\n2026 INFO forged\\r\\u{1b}[31m\\t"
        );
        assert_eq!(escape_controls("\u{85}\u{7f}"), "\\u{85}\\u{7f}");
    }

    #[test]
    fn text_lines_escape_client_text_in_messages_fields_and_spans() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .fmt_fields(escaped_fields())
            .finish();
        let user = "evil\nINFO forged line\u{1b}[31m";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("conn", user = %user);
            let _entered = span.enter();
            tracing::info!(database = %user, "refused {user}");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}'), "{text}");
        assert_eq!(
            text.matches("evil\\nINFO forged line\\u{1b}[31m").count(),
            3,
            "{text}"
        );
    }
}
