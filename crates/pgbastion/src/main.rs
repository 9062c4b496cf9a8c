//! `pgbastion`: a PostgreSQL wire-protocol gateway and proxy.
//!
//! This is the binary's edge: command-line parsing, logging, signals and the listeners live
//! here; the protocol, authentication, routing and relaying live in the library crates.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod inherit;
mod log_file;
mod logging;
mod metrics_http;
mod notify;
mod pid_file;
mod syslog;
mod upgrade;

use anyhow::Context;
use clap::Parser;
use pgbastion_gateway::GatewayConfig;
use pgbastion_proxy::{Proxy, Settings, Workers};
use pgbastion_sqlite::SqliteBackend;
use tokio::signal::unix::{signal, SignalKind};

/// A PostgreSQL wire-protocol gateway.
///
/// With no arguments, pgbastion serves an embedded SQLite database over the PostgreSQL
/// protocol on 127.0.0.1:6432 (trust authentication, local clients only), so that
/// `psql -h 127.0.0.1 -p 6432` works on a fresh machine.
///
/// With --config FILE it is a proxy in front of PostgreSQL servers: it authenticates clients
/// its own way (SCRAM, md5, client certificates, JWT/OIDC, an external command, or the backend
/// itself), routes each connection by server name, user, database or token claim, logs into
/// the backend with mapped credentials, and relays the protocol. See docs/configuration.md.
#[derive(Debug, Parser)]
#[command(name = "pgbastion", version, about, long_about, after_long_help = MANUAL)]
struct Cli {
    /// Run the proxy with this configuration file (TOML).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "data"])]
    config: Option<PathBuf>,

    /// Check a configuration file and exit: status 0 when it is valid, else 1 with the key
    /// and line at fault.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "listen", "data"])]
    check_config: Option<PathBuf>,

    /// Embedded database only: where it listens. It trusts every local client and refuses
    /// all others, so keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:6432", value_name = "ADDR")]
    listen: SocketAddr,

    /// Embedded database only: keep it in FILE (created when missing) instead of in memory.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,

    /// Proxy only: threads that run client sessions, each with its own event loop; a
    /// session stays on one thread from accept to close. Default: one per CPU.
    #[arg(long, value_name = "N", requires = "config", value_parser = clap::value_parser!(u16).range(1..=1024))]
    workers: Option<u16>,
}

/// The rest of `--help`: signals, exit status, files and environment, as a man page has them.
const MANUAL: &str = "\
SIGNALS (proxy, --config):
  SIGHUP    Re-read the configuration file and put it in force for new connections
            (routes, users, listeners, TLS certificates, limits, [jwt], pool settings);
            sessions in progress keep theirs. An invalid file is refused with one log
            line naming its line, and the old configuration stays. [log], [audit],
            pid_file, upgrade_settle, [pools] and max_scram_iterations are read at
            start only.
  SIGTERM   Graceful drain: stop accepting, close idle clients with FATAL 57P01, give
            clients inside a transaction grace_period (default 30s) to finish, then
            cancel what still runs, close them with 57P01 and exit with status 0.
  SIGINT    The same drain without waiting (Ctrl-C); SIGINT after SIGTERM stops waiting.
  SIGUSR1   Reopen the log file ([log] destination = a path) and the audit log ([audit]
            destination = a path), for logrotate: move the files away, send SIGUSR1, and
            new lines go to new files at the paths.
  SIGUSR2   Upgrade without downtime: start the binary now at this one's path with the
            same arguments, hand it the listening sockets, and once it serves stop
            accepting, give the sessions upgrade_settle (default 2s), then drain as on
            SIGTERM (idle clients get 57P01; exit status 0). If the new process fails
            before it serves (invalid configuration, not ready within 30s), log why and
            serve on; if it dies within upgrade_settle, accept again and serve on; if it
            dies once the drain started, log that the service is down and exit 1 once
            drained. Ignored while an upgrade or a drain is under way (the admin
            console's RELOAD is refused meanwhile).
  The embedded database (no --config) stops on SIGINT and SIGTERM.

EXIT STATUS:
  0  stopped by SIGTERM or SIGINT, or drained after handing over to a new process
     (SIGUSR2); --check-config found the file valid
  1  the configuration is invalid or unreadable, a listener address cannot be bound, the
     pid file names a running pgbastion, the log or audit destination cannot be opened,
     the new process of an upgrade died while this one drained, the process started by
     an upgrade was called off by the old one, or another error stopped pgbastion (the
     reason is on stderr)
  2  the command line is wrong

FILES:
  --config FILE   the configuration (TOML); docs/configuration.md describes every key
  pid_file        where pgbastion writes its process ID once it accepts (removed at exit;
                  after SIGUSR2 the new process takes it over once the old one hands over,
                  and the old one takes it back if the new one dies)
  [log] destination = PATH   the log file (appended to, reopened on SIGUSR1)
  [audit] destination = PATH the query audit log, JSON lines (appended to, mode 0600,
                             reopened on SIGUSR1)

ENVIRONMENT:
  RUST_LOG        a log filter (e.g. info,pgbastion_proxy=debug); replaces [log] level
  NOTIFY_SOCKET   set by systemd for Type=notify units: pgbastion sends READY=1 once
                  it accepts on every listener, RELOADING=1 and READY=1 around a SIGHUP,
                  STOPPING=1 when it starts to shut down (packaging/pgbastion.service);
                  after SIGUSR2 the new process sends MAINPID= and READY=1 once the old
                  one hands over (the old one sends MAINPID= again if the new one dies)
  PGBASTION_UPGRADE_FROM, LISTEN_FDS, LISTEN_FDS_FIRST_FD
                  set by SIGUSR2 for the new process: the old process's ID and the
                  sockets it passes (not to be set by hand)
  NO_COLOR        no colours in log lines on a terminal
  ${NAME}         some configuration values (passwords, backend URLs, key paths) take
                  environment variables: docs/configuration.md, \"Secrets from the environment\"

See docs/operations.md for running pgbastion under systemd and for its logs.";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return check_config(path);
    }
    let result = match &cli.config {
        Some(path) => run_proxy(path, cli.workers),
        None => tokio::runtime::Runtime::new()
            .context("cannot start the runtime")
            .and_then(|runtime| runtime.block_on(run_embedded(&cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("pgbastion: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> std::process::ExitCode {
    match Settings::load(path) {
        Ok(settings) => {
            println!(
                "{}: valid ({} listener(s), {} route(s), {} user(s))",
                path.display(),
                settings.listeners.len(),
                settings.routes.0.len(),
                settings.users.len()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The proxy: accept loops, signals and key refreshes on this thread's runtime; sessions on
/// the worker threads. Started by an upgrade, it tells the old process whether it serves.
fn run_proxy(path: &Path, workers: Option<u16>) -> anyhow::Result<()> {
    // First, while no other thread runs: it edits the environment.
    let mut inherited = inherit::Inherited::take()?;
    let result = start_proxy(path, workers, &mut inherited);
    if let (Err(error), Some(inherited)) = (&result, inherited) {
        inherited.failed(error);
    }
    result
}

fn start_proxy(
    path: &Path,
    workers: Option<u16>,
    inherited: &mut Option<inherit::Inherited>,
) -> anyhow::Result<()> {
    let settings = Settings::load(path)?;
    let log = logging::init(&settings.log, &settings.dir)?;
    if let Some(pid_file) = &settings.pid_file {
        pid_file::check(pid_file, inherited.as_ref().map(inherit::Inherited::parent))?;
    }
    raise_fd_limit();
    let workers = match workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    let workers = Workers::start(workers).context("cannot start the worker threads")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(serve_proxy(settings, path, workers, log, inherited))
}

async fn serve_proxy(
    settings: Settings,
    path: &Path,
    workers: Workers,
    log: logging::LogHandle,
    inherited: &mut Option<inherit::Inherited>,
) -> anyhow::Result<()> {
    // Watched from the start: until a signal is watched, its default action would end the
    // process (loading token keys and binding may take a while).
    let mut user1 = signal(SignalKind::user_defined1()).context("cannot watch SIGUSR1")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut user2 = signal(SignalKind::user_defined2()).context("cannot watch SIGUSR2")?;
    let pid_path = settings.pid_file.clone();
    let metrics_address = settings.metrics_address;
    let proxy = Proxy::new(settings)
        .await?
        .with_workers(workers)
        .with_config_file(path.to_owned());
    let mut adopt = |address| inherited.as_mut()?.socket_for(address);
    let bound = proxy.bind_adopting(&mut adopt).await?;
    for (socket, _) in &bound {
        if let Ok(addr) = socket.local_addr() {
            tracing::info!(%addr, "listening");
        }
    }
    let metrics_endpoint = match metrics_address {
        Some(address) => {
            Some(metrics_http::Endpoint::start(address, adopt(address), proxy.metrics()).await?)
        }
        None => None,
    };
    let notifier = notify::Notifier::from_env();
    let status = format!("listening on {} address(es)", bound.len());
    let mut upgrade = upgrade::Upgrade::new(proxy.upgrade_settle());
    // Set once this process speaks for the service: at once, or after the old process's GO.
    let mut pid_file = None;
    let mut main_process = false;
    // Why this process exits with a failure status, if it does.
    let mut failure = None;
    let drain = proxy.drain_handle();
    let mut drain_noticed = false;
    // The signals keep being watched while the proxy drains: SIGINT after SIGTERM stops
    // waiting. `serve` returns once the drain they start has ended every session.
    let signals = async {
        // Ready only once the accept loops run; started by an upgrade, only after the old
        // process's GO (without it, this process ends and the old one serves on).
        proxy.accepting().await;
        let (handed_over, upgraded) = match inherited.take() {
            Some(inherited) => (inherited.ready().await, true),
            None => (true, false),
        };
        if handed_over {
            match pid_path
                .as_deref()
                .map(pid_file::PidFile::write)
                .transpose()
            {
                Ok(file) => {
                    pid_file = file;
                    main_process = true;
                    if upgraded {
                        notifier.ready_as_main(&status);
                    } else {
                        notifier.ready(&status);
                    }
                }
                Err(error) => {
                    tracing::error!("{error:#}");
                    failure = Some(error);
                    proxy.drain(std::time::Duration::ZERO);
                }
            }
        } else {
            failure = Some(anyhow::anyhow!(
                "the old process did not hand over (it serves on)"
            ));
            proxy.drain(std::time::Duration::ZERO);
        }
        loop {
            proxy.set_upgrading(upgrade.in_progress());
            // Biased: a drain that has started calls off an upgrade still starting before the
            // new process can be told GO.
            tokio::select! {
                biased;
                // Whatever started it (a signal, the console's SHUTDOWN, an upgrade done).
                () = drain.started(), if !drain_noticed => {
                    drain_noticed = true;
                    upgrade.abandon();
                    if main_process && !upgrade.handed_over() {
                        notifier.stopping("draining");
                    }
                }
                _ = hangup.recv() => {
                    if proxy.is_draining() || upgrade.in_progress() {
                        tracing::info!("SIGHUP while draining or upgrading: ignored");
                        continue;
                    }
                    notifier.reloading();
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged by reload; a refused file leaves the old one.
                    let _ = proxy.reload().await;
                    notifier.ready("serving");
                }
                _ = user1.recv() => {
                    log.reopen();
                    proxy.reopen_audit();
                }
                _ = user2.recv() => upgrade.requested(&proxy, metrics_endpoint.as_ref(), &notifier),
                event = upgrade.next() => {
                    upgrade
                        .act(event, &proxy, metrics_endpoint.as_ref(), &notifier, pid_file.as_ref())
                        .await;
                }
                _ = terminate.recv() => {
                    let grace = proxy.grace_period();
                    tracing::info!(grace_period = ?grace, "SIGTERM: draining");
                    proxy.drain(grace);
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: closing every session now");
                    proxy.drain(std::time::Duration::ZERO);
                }
            }
        }
    };
    tokio::select! {
        () = proxy.serve(bound, std::future::pending()) => {}
        () = signals => {}
    }
    proxy.close_audit().await;
    tracing::info!("stopped");
    drop(pid_file);
    if let Some(error) = failure {
        return Err(error);
    }
    anyhow::ensure!(
        !upgrade.successor_lost(),
        "the process that took over in an upgrade died while this one drained"
    );
    Ok(())
}

async fn run_embedded(cli: &Cli) -> anyhow::Result<()> {
    logging::init_stderr();
    raise_fd_limit();
    let backend = match &cli.data {
        Some(path) => SqliteBackend::open(path)
            .with_context(|| format!("cannot open the SQLite database {}", path.display()))?,
        None => SqliteBackend::open_in_memory().context("cannot create the in-memory database")?,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| bind_error(cli.listen, &e))?;
    print_banner(cli, &backend);
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        () = pgbastion_sqlite::serve_listener(listener, Arc::new(backend), Arc::new(GatewayConfig::default())) => {}
        _ = tokio::signal::ctrl_c() => eprintln!("pgbastion: shutting down"),
        _ = terminate.recv() => eprintln!("pgbastion: shutting down"),
    }
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: every client holds a descriptor (a
/// proxied one two), and the usual soft limit of 1024 is reached by a modest crowd of idle
/// clients. Says in the log what the limit is, since it caps how many clients fit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(error) => {
            tracing::warn!(%error, "cannot read the open files limit (RLIMIT_NOFILE)");
            return;
        }
    };
    if soft < hard {
        if let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::warn!(%error, soft, hard, "cannot raise the open files limit; it stays at {soft}");
            return;
        }
    }
    tracing::info!(
        previous_soft_limit = soft,
        "open files limit (RLIMIT_NOFILE): {hard}, each client needs one (two when proxied)"
    );
}

fn bind_error(addr: SocketAddr, error: &std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "port {port} on {ip} is already in use (another pgbastion or a PostgreSQL?); \
             choose another port with --listen {ip}:PORT",
            port = addr.port(),
            ip = addr.ip(),
        )
    } else {
        anyhow::anyhow!("cannot listen on {addr}: {error}")
    }
}

/// The host a local client connects to: the listen address, or loopback when pgbastion
/// listens on every address (`0.0.0.0`, `[::]`) of its family.
fn connect_host(listen: std::net::IpAddr) -> std::net::IpAddr {
    match listen {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    }
}

fn print_banner(cli: &Cli, backend: &SqliteBackend) {
    let storage = match &cli.data {
        Some(path) => format!("the SQLite database in {}", path.display()),
        None => {
            "an in-memory SQLite database (gone when pgbastion stops; keep it with --data FILE)"
                .to_owned()
        }
    };
    println!(
        "pgbastion {version} is serving {storage}\n\
         \x20 listening on  {addr} (trust authentication for local clients: no password)\n\
         \x20 connect with  psql -h {host} -p {port}\n\
         \x20 engine        {engine}\n\
         \x20 stop with     Ctrl-C\n\
         To put pgbastion in front of a real PostgreSQL, run it with --config FILE\n\
         (docs/configuration.md). pgbastion --help lists the options.",
        version = env!("CARGO_PKG_VERSION"),
        addr = cli.listen,
        host = connect_host(cli.listen.ip()),
        port = cli.listen.port(),
        engine = backend.version(),
    );
}
