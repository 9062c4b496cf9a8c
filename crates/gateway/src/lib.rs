//! Server side of the PostgreSQL protocol (work in progress).
pub mod proxy_protocol;
pub mod stream;
pub mod tls;
