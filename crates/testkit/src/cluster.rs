//! A throwaway PostgreSQL cluster: copied from the template, on a random port on 127.0.0.1,
//! with the `pg_hba.conf`, settings, TLS and users a test asks for; stopped and removed on
//! drop (kept, with its log printed, when the test panicked).

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::ca::{CertifiedKey, TestCa};
use crate::os::{self, run_checked, server_command};
use crate::template::template;
use crate::TestkitError;

static NEXT_CLUSTER: AtomicUsize = AtomicUsize::new(0);

/// How a test user's password is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswordEncryption {
    /// `md5`
    Md5,
    /// `scram-sha-256`
    ScramSha256,
}

impl PasswordEncryption {
    fn setting(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::ScramSha256 => "scram-sha-256",
        }
    }
}

/// Options for a cluster; see [`Cluster::builder`].
#[derive(Default)]
pub struct ClusterBuilder<'a> {
    hba: Option<Vec<String>>,
    tls: Option<&'a TestCa>,
    certificate: Option<&'a CertifiedKey>,
    settings: Vec<(String, String)>,
    users: Vec<(String, String, PasswordEncryption)>,
}

impl<'a> ClusterBuilder<'a> {
    /// Replaces the default `pg_hba.conf` lines (local and 127.0.0.1 trust). A
    /// `local all postgres trust` line always comes first so the testkit itself can set up
    /// the cluster; tests about authentication go over TCP.
    pub fn hba(mut self, lines: &[&str]) -> Self {
        self.hba = Some(lines.iter().map(|l| (*l).to_owned()).collect());
        self
    }

    /// Turns on TLS with a server certificate for `localhost` and `127.0.0.1` from `ca`, which
    /// is also the `ssl_ca_file` (so `cert` authentication works).
    pub fn tls(mut self, ca: &'a TestCa) -> Self {
        self.tls = Some(ca);
        self
    }

    /// Turns on TLS presenting `certificate` as it is (e.g. a self-signed one made with the
    /// `openssl` command line), without `ssl_ca_file`.
    pub fn tls_certificate(mut self, certificate: &'a CertifiedKey) -> Self {
        self.certificate = Some(certificate);
        self
    }

    /// Adds a `postgresql.conf` setting (the value is written as given: quote strings).
    pub fn config(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Creates a login role with this password, stored with `encryption`.
    pub fn user(mut self, name: &str, password: &str, encryption: PasswordEncryption) -> Self {
        self.users
            .push((name.to_owned(), password.to_owned(), encryption));
        self
    }

    /// Creates and starts the cluster.
    pub fn start(self) -> Result<Cluster, TestkitError> {
        let started = Instant::now();
        let template = template()?;
        let n = NEXT_CLUSTER.fetch_add(1, Ordering::Relaxed);
        let dir = template.base.join(format!("c{n}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("sock"))?;
        run_checked(
            Command::new("cp")
                .arg("-a")
                .arg(&template.data)
                .arg(dir.join("data")),
        )?;
        let mut cluster = Cluster {
            dir,
            bindir: template.bindir.clone(),
            port: 0,
            running: false,
        };
        self.configure(&cluster)?;
        os::give_to_server_user(&cluster.dir)?;
        cluster.start_on_free_port()?;
        for (name, password, encryption) in &self.users {
            cluster.execute_sql(&format!(
                "SET password_encryption = '{}'; CREATE ROLE {} LOGIN PASSWORD {}",
                encryption.setting(),
                quote_ident(name),
                quote_literal(password)
            ))?;
        }
        if std::env::var_os("PGBASTION_TESTKIT_VERBOSE").is_some() {
            eprintln!(
                "testkit: cluster on port {} in {:?}",
                cluster.port,
                started.elapsed()
            );
        }
        Ok(cluster)
    }

    fn configure(&self, cluster: &Cluster) -> Result<(), TestkitError> {
        let data = cluster.data_dir();
        let mut conf = format!(
            "\n# pgbastion-testkit\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 200\nshared_buffers = 16MB\nlog_min_messages = warning\n",
            cluster.socket_dir().display()
        );
        if let Some(ca) = self.tls {
            let server = ca.server_cert(&["localhost", "127.0.0.1"])?;
            server.write_files(&data, "server")?;
            ca.write_cert(&data, "root")?;
            conf.push_str(
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'root.crt'\n",
            );
        }
        if let Some(certificate) = self.certificate {
            certificate.write_files(&data, "server")?;
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        for (name, value) in &self.settings {
            conf.push_str(&format!("{name} = {value}\n"));
        }
        append(&data.join("postgresql.conf"), &conf)?;
        let default_hba = vec![
            "local all all trust".to_owned(),
            "host all all 127.0.0.1/32 trust".to_owned(),
        ];
        let lines = self.hba.as_ref().unwrap_or(&default_hba);
        let hba = format!("local all postgres trust\n{}\n", lines.join("\n"));
        fs::write(data.join("pg_hba.conf"), hba)?;
        Ok(())
    }
}

fn append(path: &Path, text: &str) -> Result<(), TestkitError> {
    use std::io::Write;
    let mut file = fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// `"name"` with quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Options for a new cluster.
    pub fn builder<'a>() -> ClusterBuilder<'a> {
        ClusterBuilder::default()
    }

    /// A cluster with the defaults: trust for local and 127.0.0.1 connections.
    pub fn start() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// Always 127.0.0.1.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The Unix socket directory.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The superuser's name.
    pub fn superuser(&self) -> &'static str {
        "postgres"
    }

    /// The directory of the PostgreSQL binaries in use.
    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    /// A libpq/tokio-postgres key-value connection string over TCP.
    pub fn conninfo(&self, user: &str, password: Option<&str>, database: &str) -> String {
        let mut s = format!(
            "host={} port={} user={user} dbname={database}",
            self.host(),
            self.port
        );
        if let Some(password) = password {
            s.push_str(&format!(" password='{}'", password.replace('\'', "\\'")));
        }
        s
    }

    fn start_on_free_port(&mut self) -> Result<(), TestkitError> {
        let mut last_error = None;
        for _ in 0..5 {
            self.port = free_port()?;
            match self.pg_ctl_start() {
                Ok(()) => {
                    self.running = true;
                    return Ok(());
                }
                Err(e) if self.log_tail(20).contains("could not bind") => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or(TestkitError::Template("no free port".into())))
    }

    fn pg_ctl_start(&self) -> Result<(), TestkitError> {
        run_checked(
            server_command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {}", self.port))
                .arg("start"),
        )
        .map(drop)
        .map_err(|e| TestkitError::Start {
            error: e.to_string(),
            log: self.log_tail(30),
        })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Runs `psql` as the superuser over the Unix socket with `args` and returns stdout
    /// (unaligned, tuples only, stopping at the first error).
    pub fn psql(&self, args: &[&str]) -> Result<String, TestkitError> {
        let psql = self.bindir.join("psql");
        let program = if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let output = run_checked(
            Command::new(program)
                .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(self.socket_dir())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                ])
                .args(args),
        )?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim_end()
            .to_owned())
    }

    /// Runs SQL as the superuser.
    pub fn execute_sql(&self, sql: &str) -> Result<(), TestkitError> {
        self.psql(&["-c", sql]).map(drop)
    }

    /// Runs a query as the superuser and returns its output (one row a line, `|` between
    /// columns).
    pub fn query(&self, sql: &str) -> Result<String, TestkitError> {
        self.psql(&["-c", sql])
    }

    /// Kills the server as a crash would (`pg_ctl stop -m immediate`: every backend dies at
    /// once) and starts it again on the same port.
    pub fn restart_immediate(&self) -> Result<(), TestkitError> {
        self.pg_ctl_stop_immediate()?;
        self.pg_ctl_start()
    }

    fn pg_ctl_stop_immediate(&self) -> Result<(), TestkitError> {
        run_checked(
            server_command(&self.bindir.join("pg_ctl"))
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"]),
        )
        .map(drop)
    }

    /// Stops the server (immediate mode) and removes its directory.
    pub fn stop(mut self) -> Result<(), TestkitError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), TestkitError> {
        if std::mem::take(&mut self.running) {
            self.pg_ctl_stop_immediate()?;
        }
        if self.dir.exists() {
            fs::remove_dir_all(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "testkit: keeping cluster {} (port {}) for inspection; server log tail:\n{}",
                self.dir.display(),
                self.port,
                self.log_tail(30)
            );
            let _ = self.pg_ctl_stop_immediate();
            return;
        }
        if let Err(e) = self.shutdown() {
            eprintln!("testkit: could not clean up {}: {e}", self.dir.display());
        }
    }
}

fn free_port() -> Result<u16, TestkitError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
