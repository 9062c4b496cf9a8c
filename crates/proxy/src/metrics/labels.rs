//! Label sets of the proxy's metrics, and the label values that are closed sets.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Label values in Prometheus's snake_case, from a closed set.
macro_rules! label_values {
    ($type:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $type {
            /// The label value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

/// `listener`: the listener's address as configured.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerLabels {
    pub(super) listener: String,
}

/// A client connection's state.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub(super) enum ConnState {
    /// Accepted, not yet authenticated (PROXY header, TLS, startup, authentication).
    Handshake,
    /// Authenticated and served (relayed, or through a pool).
    Session,
}

label_values!(ConnState { Handshake => "handshake", Session => "session" });

/// `listener` and `state`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StateLabels {
    pub(super) listener: String,
    pub(super) state: ConnState,
}

/// `route`: a route's number (its position in the file, from 1).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RouteLabels {
    pub(super) route: String,
}

impl RouteLabels {
    pub(super) fn new(number: usize) -> Self {
        Self {
            route: number.to_string(),
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// It worked.
    Success,
    /// It did not.
    Failure,
}

impl Outcome {
    /// `Success` when `ok`.
    pub fn of(ok: bool) -> Self {
        if ok {
            Self::Success
        } else {
            Self::Failure
        }
    }
}

label_values!(Outcome { Success => "success", Failure => "failure" });

/// `result`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: Outcome,
}

/// `mode` (a route's `auth`) and `result`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AuthLabels {
    pub(super) mode: &'static str,
    pub(super) result: Outcome,
}

/// Why a connection was refused before its session.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum RefusalReason {
    /// A listener's connection limits (`max_connections`, per address, rate).
    Limits,
    /// A TLS rule: `require_tls`, a route that takes secrets only over TLS, direct TLS on a
    /// listener without TLS.
    Tls,
    /// The PROXY header was missing, malformed, untrusted or not accepted.
    ProxyHeader,
    /// No route matches the startup (or the token's claims).
    NoRoute,
    /// A user not in `[admin] users` authenticated for the admin console.
    NotAdmin,
    /// The client broke the protocol during the handshake.
    Protocol,
    /// The client did not finish authenticating in time.
    Timeout,
    /// The backend login failed after the client authenticated.
    Backend,
}

label_values!(RefusalReason {
    Limits => "limits",
    Tls => "tls",
    ProxyHeader => "proxy_header",
    NoRoute => "no_route",
    NotAdmin => "not_admin",
    Protocol => "protocol",
    Timeout => "timeout",
    Backend => "backend",
});

/// `reason`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: RefusalReason,
}

/// What became of a cancel request.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum CancelResult {
    /// Sent on to the backend that runs the client's query.
    Forwarded,
    /// Dropped: over the rate limit, or a key pgbastion did not mint.
    Ignored,
    /// Meant for a backend that could not be reached in time.
    Failed,
}

label_values!(CancelResult {
    Forwarded => "forwarded",
    Ignored => "ignored",
    Failed => "failed",
});

/// `result`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CancelLabels {
    pub(super) result: CancelResult,
}
