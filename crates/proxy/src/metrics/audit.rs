//! The audit log's counters: events written, and events dropped (the writer fell behind, a
//! write failed, or the writer could not finish at the end).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// Counters of the query audit ([`crate::audit::AuditLog`]).
#[derive(Debug, Clone, Default)]
pub struct AuditCounters {
    /// Events written to the destination.
    pub written: Counter,
    /// Events dropped: the queue was full, their write failed, or the writer could not
    /// finish them at the end.
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
            "Query audit events dropped: the queue was full, a write failed, or the writer could not finish at the end",
            self.dropped.clone(),
        );
    }
}
