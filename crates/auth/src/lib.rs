//! PostgreSQL authentication mechanisms as plain synchronous code, with no I/O:
//!
//! - [`ct`]: constant-time comparison of secrets, for every mechanism and caller;
//! - [`md5`]: the stored hash and the salted response;
//! - [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server and client, as consuming state
//!   machines, plus PostgreSQL's stored-secret format and `tls-server-end-point` channel
//!   binding data;
//! - [`stored`]: a stored password (SCRAM verifier, md5 hash or plaintext) parsed once into
//!   [`StoredPassword`], with what each kind can verify;
//! - [`oauthbearer`]: the server side of SASL OAUTHBEARER (RFC 7628) as PostgreSQL 18 speaks
//!   it.
//!
//! The gateway drives these with bytes it read from a socket; tests drive them with recorded
//! exchanges. Nothing here reads a clock, a socket or a global.
//!
//! # SCRAM state machines
//!
//! Each side is a value consumed by each step, which returns the next state and the bytes
//! to send, so steps cannot be repeated or taken out of order:
//!
//! | side | state | step | sends |
//! |---|---|---|---|
//! | server | [`ScramServer`](scram::ScramServer) | `handle_client_first(mechanism, bytes)` | server-first (AuthenticationSASLContinue) |
//! | server | [`ScramServerFirstSent`](scram::ScramServerFirstSent) | `handle_client_final(bytes)` | server-final (AuthenticationSASLFinal), in [`ScramSuccess`](scram::ScramSuccess) |
//! | client | [`ScramClient`](scram::ScramClient) | `client_first_message()` | client-first (SASLInitialResponse, with `mechanism()`) |
//! | client | [`ScramClient`](scram::ScramClient) | `handle_server_first(bytes)` | client-final (SASLResponse) |
//! | client | [`ScramClientFinalSent`](scram::ScramClientFinalSent) | `verify_server_final(bytes)` | nothing: the server is authenticated |
//!
//! Any error is final: the caller reports it and closes the exchange. On success the server
//! also learns the client's `ClientKey`, with which a client built from
//! [`ClientCredential::Keys`](scram::ClientCredential::Keys) can log into a backend holding
//! the same secret without knowing the password.
//!
//! ```
//! use pgbastion_auth::scram::*;
//!
//! // What the server stores (`pg_authid.rolpassword`), and what the client knows.
//! let secret = ScramSecret::generate(b"s3cret", DEFAULT_ITERATIONS);
//! let client = ScramClient::new(
//!     ClientCredential::Password(b"s3cret".to_vec()),
//!     ChannelBinding::NotSupported,
//! );
//! let server = ScramServer::new(secret, ServerBinding::NotOffered);
//! assert_eq!(server.mechanisms(), [SCRAM_SHA_256]);
//!
//! let (server, server_first) = server
//!     .handle_client_first(client.mechanism(), &client.client_first_message())
//!     .unwrap();
//! let (client, client_final) = client.handle_server_first(&server_first).unwrap();
//! let success = server.handle_client_final(&client_final).unwrap();
//! client.verify_server_final(&success.server_final).unwrap();
//! ```
//!
//! With TLS, both sides compute the binding data from the server's certificate (DER) and the
//! client selects SCRAM-SHA-256-PLUS; a man in the middle presenting another certificate
//! fails with [`ChannelBindingMismatch`](scram::ScramError::ChannelBindingMismatch):
//!
//! ```
//! use pgbastion_auth::scram::*;
//!
//! # let cert_der: &[u8] = b"the server certificate, DER";
//! let secret = ScramSecret::generate(b"s3cret", DEFAULT_ITERATIONS);
//! let client = ScramClient::new(
//!     ClientCredential::Password(b"s3cret".to_vec()),
//!     ChannelBinding::TlsServerEndPoint(tls_server_end_point(cert_der)),
//! );
//! let server = ScramServer::new(secret, ServerBinding::Offered(tls_server_end_point(cert_der)));
//! let (server, server_first) = server
//!     .handle_client_first(client.mechanism(), &client.client_first_message())
//!     .unwrap();
//! let (client, client_final) = client.handle_server_first(&server_first).unwrap();
//! let success = server.handle_client_final(&client_final).unwrap();
//! client.verify_server_final(&success.server_final).unwrap();
//! ```
//!
//! # md5
//!
//! ```
//! use pgbastion_auth::md5::*;
//! use pgbastion_auth::StoredPassword;
//!
//! let stored = StoredPassword::parse(&md5_hash("alice", "s3cret")).unwrap(); // as in pg_authid
//! let salt = random_salt(); // sent in AuthenticationMD5Password
//! let response = md5_client_response("alice", "s3cret", salt); // the PasswordMessage
//! assert!(stored.verify_md5("alice", salt, &response));
//! ```

pub mod ct;
pub mod md5;
pub mod oauthbearer;
pub mod scram;
pub mod stored;

pub use stored::StoredPassword;
