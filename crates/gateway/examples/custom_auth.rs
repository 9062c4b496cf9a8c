//! A server with its own user table and a custom validate hook: cleartext for `alice`, md5
//! for `bob`, SCRAM-SHA-256 for everyone else; queries answer `hello <user>`.
//!
//! ```sh
//! cargo run -p pgbastion-gateway --example custom_auth -- 127.0.0.1:6434
//! PGPASSWORD=wonderland psql "host=127.0.0.1 port=6434 user=alice" -c 'select 1'
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgbastion_auth::scram::{ScramSecret, DEFAULT_ITERATIONS};
use pgbastion_auth::StoredPassword;
use pgbastion_gateway::{
    serve_listener, AuthMethod, ClientConn, ClientIo, ConnectionState, Credential, Flow,
    GatewayConfig, HookResult, Hooks,
};
use pgbastion_wire::{Frame, FrontendTag, TransactionStatus};
use tokio::net::TcpListener;

/// Users and their stored passwords, parsed once at start, with the SCRAM secrets derived
/// from them (none for an md5 hash).
pub struct UserTable {
    passwords: HashMap<String, StoredPassword>,
    scram: HashMap<String, ScramSecret>,
}

impl UserTable {
    /// A table from `(user, stored password)` pairs: plaintext, an `md5…` hash or a
    /// `SCRAM-SHA-256$…` verifier. Unreadable ones (a broken verifier) are left out.
    pub fn new(users: &[(&str, &str)]) -> Self {
        let passwords: HashMap<String, StoredPassword> = users
            .iter()
            .filter_map(|(u, p)| Some(((*u).to_owned(), StoredPassword::parse(p).ok()?)))
            .collect();
        let scram = passwords
            .iter()
            .filter_map(|(u, p)| Some((u.clone(), p.scram_secret(DEFAULT_ITERATIONS)?)))
            .collect();
        Self { passwords, scram }
    }

    fn user(state: &ConnectionState) -> String {
        state
            .client
            .as_ref()
            .map(|c| c.user().to_owned())
            .unwrap_or_default()
    }
}

impl Hooks for UserTable {
    type Data = ();

    fn auth_method(
        &self,
        state: &ConnectionState,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        let method = match Self::user(state).as_str() {
            "alice" => AuthMethod::Cleartext,
            "bob" => AuthMethod::Md5,
            _ => AuthMethod::ScramSha256,
        };
        async move { Ok(method) }
    }

    fn validate_credentials(
        &self,
        _state: &ConnectionState,
        _data: &mut (),
        credential: &Credential,
    ) -> impl Future<Output = HookResult<bool>> + Send {
        // Plaintext and md5 checks are cheap; a table of SCRAM verifiers would run PBKDF2 for
        // cleartext, which belongs off the async threads (spawn_blocking).
        let stored = self.passwords.get(credential.user());
        let valid = match (credential, stored) {
            (Credential::Password { user, password }, Some(stored)) => {
                stored.verify_cleartext(user, password)
            }
            (
                Credential::Md5 {
                    user,
                    response,
                    salt,
                },
                Some(stored),
            ) => stored.verify_md5(user, *salt, response),
            _ => false,
        };
        async move { Ok(valid) }
    }

    fn scram_secret(
        &self,
        state: &ConnectionState,
        _data: &mut (),
    ) -> impl Future<Output = HookResult<Option<ScramSecret>>> + Send {
        let secret = self.scram.get(&Self::user(state)).cloned();
        async move { Ok(secret) }
    }

    async fn on_message<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        _data: &mut (),
        frame: Frame,
    ) -> HookResult<Flow> {
        if FrontendTag::from_byte(frame.tag) != Some(FrontendTag::Query) {
            return Ok(Flow::Continue);
        }
        let greeting = format!(
            "hello {}",
            conn.state()
                .authenticated_user
                .as_deref()
                .unwrap_or("stranger")
        );
        conn.send_text_rows(&["greeting"], [&[Some(greeting.as_str())][..]])?;
        conn.send_ready_for_query(TransactionStatus::Idle)?;
        Ok(Flow::Handled)
    }
}

/// Serves clients from `listener`.
pub async fn run(listener: TcpListener, users: Arc<UserTable>) {
    serve_listener(listener, Arc::new(GatewayConfig::default()), users).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6434".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let users = Arc::new(UserTable::new(&[
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("carol", "singer"),
    ]));
    let listener = TcpListener::bind(addr).await?;
    println!("custom-auth server on {addr}: alice/wonderland (cleartext), bob/builder (md5), carol/singer (SCRAM)");
    run(listener, users).await;
    Ok(())
}
