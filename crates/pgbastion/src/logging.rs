//! Log output: text or JSON on stderr. Field values often hold what a client chose (user and
//! database names, server names, startup parameters): in text lines every control
//! character is escaped, so no client can forge a line or send terminal escapes to the
//! operator's screen. Colours only when stderr is a terminal and `NO_COLOR` is unset.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::IsTerminal;

use pgbastion_proxy::config::LogFormat;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(level.unwrap_or("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colours_wanted());
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
