//! What the hooks keep for a connection (`Hooks::Data`) reaches each hook in turn, SCRAM keys
//! arrive by move, and `accept` hands it back with the connection.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

mod common;

use std::future::Future;

use pgbastion_auth::scram::{SaltedKeyCache, ScramSecret};
use pgbastion_gateway::{
    accept, AuthMethod, ClientConn, ClientIo, ConnectionState, Flow, GatewayConfig, HookResult,
    Hooks, Outcome, ScramKeys,
};
use tokio::net::TcpListener;

use common::{within, PASSWORD};

/// The hooks that ran, in order, and the keys of the SCRAM exchange.
#[derive(Default)]
struct Trail {
    hooks: Vec<&'static str>,
    keys: Option<ScramKeys>,
}

/// SCRAM for everyone, with one secret; every hook leaves its name in the trail.
struct Recording {
    secret: ScramSecret,
}

impl Hooks for Recording {
    type Data = Trail;

    fn on_connect(
        &self,
        _state: &ConnectionState,
        data: &mut Trail,
    ) -> impl Future<Output = HookResult<()>> + Send {
        data.hooks.push("on_connect");
        async { Ok(()) }
    }

    fn on_startup<S: ClientIo>(
        &self,
        _conn: &mut ClientConn<S>,
        data: &mut Trail,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        data.hooks.push("on_startup");
        async { Ok(Flow::Continue) }
    }

    fn auth_method(
        &self,
        _state: &ConnectionState,
        data: &mut Trail,
    ) -> impl Future<Output = HookResult<AuthMethod>> + Send {
        data.hooks.push("auth_method");
        async { Ok(AuthMethod::ScramSha256) }
    }

    fn scram_secret(
        &self,
        _state: &ConnectionState,
        data: &mut Trail,
    ) -> impl Future<Output = HookResult<Option<ScramSecret>>> + Send {
        data.hooks.push("scram_secret");
        let secret = self.secret.clone();
        async move { Ok(Some(secret)) }
    }

    fn scram_verified(&self, data: &mut Trail, keys: ScramKeys) {
        data.hooks.push("scram_verified");
        data.keys = Some(keys);
    }

    fn after_auth<S: ClientIo>(
        &self,
        _conn: &mut ClientConn<S>,
        data: &mut Trail,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        data.hooks.push("after_auth");
        async { Ok(Flow::Continue) }
    }
}

#[tokio::test]
async fn hook_data_passes_through_every_hook_and_returns_with_the_connection() {
    let secret = ScramSecret::generate(PASSWORD.as_bytes(), 4096);
    let hooks = Recording {
        secret: secret.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = async {
        let (stream, peer) = listener.accept().await.unwrap();
        accept(stream, peer, &GatewayConfig::default(), &hooks).await
    };
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(addr.port())
        .user("alice")
        .password(PASSWORD);
    let client = config.connect(tokio_postgres::NoTls);
    let (outcome, connected) =
        within("a SCRAM login", async { tokio::join!(server, client) }).await;

    assert!(connected.is_ok(), "the client logged in");
    let Ok(Outcome::Authenticated { conn, data }) = outcome else {
        panic!("the client was not authenticated");
    };
    assert_eq!(conn.state().authenticated_user.as_deref(), Some("alice"));
    assert_eq!(
        data.hooks,
        [
            "on_connect",
            "on_startup",
            "auth_method",
            "scram_secret",
            "scram_verified",
            "after_auth"
        ]
    );
    let keys = data.keys.expect("the SCRAM keys reached the hooks");
    let (client_key, server_key) =
        SaltedKeyCache::default().keys(PASSWORD.as_bytes(), &secret.salt, secret.iterations);
    assert_eq!(keys.client_key, client_key);
    assert_eq!(keys.server_key, server_key);
}
