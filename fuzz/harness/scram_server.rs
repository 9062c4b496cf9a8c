//! Body of the `scram_server` fuzz target: a SCRAM-SHA-256(-PLUS) server exchange against a
//! fixed secret, server nonce and channel-binding data, driven by the input.
//!
//! Input layout: one flags byte (bit 0: the server offers channel binding, as on a TLS
//! connection with a certificate), then `mechanism NUL client-first NUL client-final`, the
//! two client messages as the gateway takes them out of SASLInitialResponse and SASLResponse.
//! Missing parts stop the exchange early. Because secret and nonce are fixed, a recorded
//! exchange replays to success, so seeds reach the proof check.

use pgbastion_auth::scram::{ScramError, ScramSecret, ScramServer, ScramSuccess, ServerBinding};

/// The user's password (only the seeds' client knows it).
pub const PASSWORD: &[u8] = b"fuzz-password";
/// The secret's salt.
pub const SALT: &[u8] = b"pgbastion-fuzz-salt";
/// Few PBKDF2 iterations: the secret is derived for every input.
pub const ITERATIONS: u32 = 2;
/// The server's half of the nonce.
pub const SERVER_NONCE: &str = "pgbastionFuzzServerNonce";
/// The `tls-server-end-point` data the server binds to when it offers binding.
pub const BINDING_DATA: &[u8] = b"certificate hash of the fuzz server";

/// Runs the server side of one exchange over `data`.
pub fn fuzz_scram_server(data: &[u8]) {
    if let Some(Ok(success)) = server_exchange(data) {
        assert!(success.server_final.starts_with(b"v="));
    }
}

/// The outcome of the client-final step, or `None` when the input stopped earlier (no
/// flags, a mechanism that is not UTF-8, a refused client-first or no client-final).
pub fn server_exchange(data: &[u8]) -> Option<Result<ScramSuccess, ScramError>> {
    let (&flags, rest) = data.split_first()?;
    let mut parts = rest.splitn(3, |&b| b == 0);
    let mechanism = std::str::from_utf8(parts.next()?).ok()?;
    let server = ScramServer::with_nonce(secret(), binding(flags), SERVER_NONCE.to_owned());
    let client_first = parts.next().unwrap_or_default();
    let (server, server_first) = server.handle_client_first(mechanism, client_first).ok()?;
    assert!(server_first.starts_with(b"r="), "{server_first:?}");
    Some(server.handle_client_final(parts.next()?))
}

/// A fresh copy of the fixed secret (each exchange consumes one).
fn secret() -> ScramSecret {
    ScramSecret::from_password(PASSWORD, SALT, ITERATIONS)
}

/// What the server offers, from the flags byte.
pub fn binding(flags: u8) -> ServerBinding {
    if flags & 1 == 1 {
        ServerBinding::Offered(BINDING_DATA.to_vec())
    } else {
        ServerBinding::NotOffered
    }
}
