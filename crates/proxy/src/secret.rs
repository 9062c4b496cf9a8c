//! [`Secret`]: a password, token or URL that may hold one, which `Debug` and `Display` never
//! show, so that printing a configuration or a table cannot leak it into a log.

use std::fmt;

/// Text that must not reach a log line. Read it with [`Secret::expose`] where it is used.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text itself, for the one place that needs it (a login, a comparison).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact_and_expose_gives_the_text() {
        let secret = Secret::new("hunter2");
        assert_eq!(
            format!("{secret:?} {secret} {secret:#?}"),
            "<redacted> <redacted> <redacted>"
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
