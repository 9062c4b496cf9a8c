//! PostgreSQL authentication mechanisms as plain synchronous code, with no I/O:
//!
//! - [`md5`]: the stored hash, the salted response, constant-time verification;
//! - [`scram`]: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS, server and client, as consuming state
//!   machines, plus PostgreSQL's stored-secret format;
//! - [`oauthbearer`]: the server side of SASL OAUTHBEARER (RFC 7628) as PostgreSQL 18 speaks
//!   it.
//!
//! The gateway drives these with bytes it read from a socket; tests drive them with recorded
//! exchanges.
//!
//! ```
//! use pgbastion_auth::scram::*;
//!
//! let secret = ScramSecret::generate(b"s3cret", DEFAULT_ITERATIONS);
//! let client = ScramClient::new(
//!     ClientCredential::Password(b"s3cret".to_vec()),
//!     ChannelBinding::NotSupported,
//! );
//! let (server, server_first) = ScramServer::new(secret, ServerBinding::NotOffered)
//!     .handle_client_first(client.mechanism(), &client.client_first_message())
//!     .unwrap();
//! let (client, client_final) = client.handle_server_first(&server_first).unwrap();
//! let success = server.handle_client_final(&client_final).unwrap();
//! client.verify_server_final(&success.server_final).unwrap();
//! ```

pub mod md5;
pub mod oauthbearer;
pub mod scram;
