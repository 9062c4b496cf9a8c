//! The audit log's counters: events written, and events dropped because the writer fell
//! behind (its queue was full).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters of the query audit ([`crate::audit::AuditLog`]).
#[derive(Debug, Clone, Default)]
pub struct AuditCounters {
    /// Events handed to the destination.
    pub written: Counter,
    /// Events dropped because the queue was full.
    pub dropped: Counter,
}

impl AuditCounters {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "audit_events_written",
            "Query audit events written to the audit destination",
            self.written.clone(),
        );
        r.register(
            "audit_events_dropped",
            "Query audit events dropped because the writer fell behind (its queue was full)",
            self.dropped.clone(),
        );
    }
}
