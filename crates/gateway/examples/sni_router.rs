//! An SNI reverse proxy: terminate TLS, read the SNI name, detach, and pipe the decrypted
//! stream (starting with the client's StartupMessage) to the backend chosen for that name.
//!
//! ```sh
//! cargo run -p pgbastion-gateway --example sni_router -- \
//!     127.0.0.1:6435 server.crt server.key tenant1.db.example.com=127.0.0.1:5432
//! psql "host=tenant1.db.example.com hostaddr=127.0.0.1 port=6435 sslmode=require user=postgres"
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use pgbastion_gateway::{
    accept, Acceptor, ClientConn, ClientIo, Flow, GatewayConfig, HookError, HookResult, Hooks,
    Outcome, TlsConfig,
};
use pgbastion_wire::SqlState;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// SNI name → backend address.
pub struct SniRouter {
    routes: HashMap<String, SocketAddr>,
}

impl SniRouter {
    /// A router over `routes`.
    pub fn new(routes: HashMap<String, SocketAddr>) -> Self {
        Self { routes }
    }

    fn backend_for(&self, name: Option<&str>) -> Option<SocketAddr> {
        self.routes.get(name?).copied()
    }
}

impl Hooks for SniRouter {
    /// The backend chosen for the connection's server name.
    type Data = Option<SocketAddr>;

    fn after_tls<S: ClientIo>(
        &self,
        conn: &mut ClientConn<S>,
        backend: &mut Option<SocketAddr>,
    ) -> impl Future<Output = HookResult<Flow>> + Send {
        *backend = self.backend_for(conn.state().server_name());
        let known = backend.is_some();
        let name = conn.state().server_name().unwrap_or("(none)").to_owned();
        async move {
            if known {
                Ok(Flow::Detach)
            } else {
                Err(HookError::new(
                    SqlState::INVALID_CATALOG_NAME,
                    format!("no backend for server name {name}"),
                ))
            }
        }
    }
}

/// Serves clients from `listener`: TLS is required, and each one is piped to its backend.
pub async fn run(listener: TcpListener, tls: TlsConfig, router: Arc<SniRouter>) {
    let config = Arc::new(GatewayConfig {
        tls: Some(tls),
        require_tls: true,
        ..GatewayConfig::default()
    });
    // Not `while let Ok(..) = listener.accept()`: one EMFILE would end the router for good.
    let mut acceptor = Acceptor::new(listener);
    loop {
        let (stream, peer) = acceptor.accept().await;
        let (config, router) = (config.clone(), router.clone());
        tokio::spawn(async move {
            let Ok(Outcome::Detached {
                raw,
                data: Some(backend),
            }) = accept(stream, peer, &config, &*router).await
            else {
                return;
            };
            let Ok(mut upstream) = TcpStream::connect(backend).await else {
                return;
            };
            let mut client = raw.stream;
            if upstream.write_all(&raw.buffered).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, cert, key, routes @ ..] = args.as_slice() else {
        eprintln!("usage: sni_router LISTEN_ADDR CERT_PEM KEY_PEM NAME=HOST:PORT...");
        std::process::exit(2);
    };
    let tls = TlsConfig::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)?;
    let mut table = HashMap::new();
    for route in routes {
        let (name, backend) = route.split_once('=').ok_or("routes are NAME=HOST:PORT")?;
        table.insert(name.to_owned(), backend.parse()?);
    }
    let listener = TcpListener::bind(addr.as_str()).await?;
    println!("SNI router on {addr} for {} names", table.len());
    run(listener, tls, Arc::new(SniRouter::new(table))).await;
    Ok(())
}
