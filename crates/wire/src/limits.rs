//! Message length limits, mirroring the ones PostgreSQL applies to its own clients.
//!
//! Every length a peer declares is checked against one of these before anything is
//! buffered or allocated for it. Tagged-message limits bound the declared length (which
//! counts the length word itself), as `pq_getmessage()` in src/backend/libpq/pqcomm.c does.

/// Largest startup-phase packet (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest),
/// counted after the length word: `MAX_STARTUP_PACKET_LENGTH` in src/include/libpq/pqcomm.h,
/// checked in `ProcessStartupPacket()` (src/backend/tcop/backend_startup.c, formerly
/// src/backend/postmaster/postmaster.c).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// Largest "small" frontend message (Sync, Describe, Close, Execute, Flush, CopyDone,
/// CopyFail, Terminate): `PQ_SMALL_MESSAGE_LIMIT` in src/include/libpq/libpq.h, applied per
/// message type in `SocketBackend()` (src/backend/tcop/postgres.c).
pub const PQ_SMALL_MESSAGE_LIMIT: usize = 10_000;

/// Largest "large" frontend message (Query, Parse, Bind, FunctionCall, CopyData):
/// `PQ_LARGE_MESSAGE_LIMIT` = `MaxAllocSize - 1` in src/include/libpq/libpq.h.
pub const PQ_LARGE_MESSAGE_LIMIT: usize = 0x3fff_ffff - 1;

/// Largest PasswordMessage or GSSResponse: `PG_MAX_AUTH_TOKEN_LENGTH` in
/// src/backend/libpq/auth.c (src/include/libpq/auth.h since PostgreSQL 18).
pub const PG_MAX_AUTH_TOKEN_LENGTH: usize = 65_535;

/// Largest SASLInitialResponse or SASLResponse for SCRAM: `PG_MAX_SASL_MESSAGE_LENGTH` in
/// src/backend/libpq/auth-sasl.c (src/include/libpq/sasl.h since PostgreSQL 18, where it is
/// the SCRAM mechanism's `max_message_length`; OAUTHBEARER's is [`PG_MAX_AUTH_TOKEN_LENGTH`],
/// in src/backend/libpq/auth-oauth.c).
pub const PG_MAX_SASL_MESSAGE_LENGTH: usize = 1024;

/// Shortest cancel key (protocol 3.0 keys are exactly this long).
pub const MIN_CANCEL_KEY_LEN: usize = 4;

/// Longest cancel key protocol 3.2 allows: "The minimum and maximum key length are 4 and
/// 256 bytes" (BackendKeyData in doc/src/sgml/protocol.sgml; libpq enforces it in
/// src/interfaces/libpq/fe-protocol3.c). PostgreSQL itself sends 32 bytes.
pub const MAX_CANCEL_KEY_LEN: usize = 256;

/// The limit PostgreSQL applies to a frontend message of type `tag`, as in `SocketBackend()`
/// (src/backend/tcop/postgres.c). `p` (authentication responses) gets the auth-token limit;
/// during a SCRAM exchange, callers apply [`PG_MAX_SASL_MESSAGE_LENGTH`] instead.
pub fn frontend_message_limit(tag: u8) -> usize {
    match tag {
        b'Q' | b'P' | b'B' | b'F' | b'd' => PQ_LARGE_MESSAGE_LIMIT,
        b'p' => PG_MAX_AUTH_TOKEN_LENGTH,
        _ => PQ_SMALL_MESSAGE_LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_and_copy_data_get_the_large_limit_and_control_messages_the_small_one() {
        for tag in *b"QPBFd" {
            assert_eq!(frontend_message_limit(tag), PQ_LARGE_MESSAGE_LIMIT);
        }
        for tag in *b"SDCEHcfX" {
            assert_eq!(frontend_message_limit(tag), PQ_SMALL_MESSAGE_LIMIT);
        }
        assert_eq!(frontend_message_limit(b'p'), PG_MAX_AUTH_TOKEN_LENGTH);
    }
}
