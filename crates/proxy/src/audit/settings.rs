//! `[audit]`: where the audit log goes, how many events may wait for the writer, and whether
//! literals are redacted.

use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::SourceFile;

/// `[audit]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout`, or a file path (relative to the configuration file's directory).
    pub destination: String,
    /// Events that may wait for the writer; when full, new events are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: NonZeroUsize,
    /// Bytes of events (as written) that may wait for the writer; when full, new events
    /// are dropped and counted.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: NonZeroU64,
    /// Whether literals in query texts are replaced by `?` (and error messages left out).
    #[serde(default)]
    pub redact_literals: bool,
}

/// 10000 events by default.
fn default_queue() -> NonZeroUsize {
    NonZeroUsize::new(10_000).unwrap_or(NonZeroUsize::MIN)
}

/// 16 MiB by default.
fn default_queue_bytes() -> NonZeroU64 {
    NonZeroU64::new(16 << 20).unwrap_or(NonZeroU64::MIN)
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// Standard output.
    Stdout,
    /// A file, appended to and reopened on SIGUSR1.
    File(PathBuf),
}

/// `[audit]`, checked and with its path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// Where lines go.
    pub destination: AuditDestination,
    /// How many events may wait for the writer.
    pub queue: NonZeroUsize,
    /// How many bytes of events may wait for the writer.
    pub queue_bytes: NonZeroU64,
    /// Whether literals are redacted.
    pub redact_literals: bool,
}

impl AuditSettings {
    /// The settings of `config`, a path resolved against `file`'s directory; an empty
    /// destination is refused (the message names the key).
    pub fn compile(file: &SourceFile, config: &AuditConfig) -> Result<Self, &'static str> {
        let destination = match config.destination.as_str() {
            "" => return Err("[audit] destination is empty: write \"stdout\" or a file path"),
            "stdout" => AuditDestination::Stdout,
            path => AuditDestination::File(file.resolve(path)),
        };
        Ok(Self {
            destination,
            queue: config.queue,
            queue_bytes: config.queue_bytes,
            redact_literals: config.redact_literals,
        })
    }
}
