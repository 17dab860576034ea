//! A private PgBouncer in front of the test PostgreSQL server, on a free
//! loopback port, in transaction or session pooling mode: how the backend's
//! suites run through a real pooler.
//!
//! The `pgbouncer` program comes from the system (Debian's package
//! `pgbouncer`, which `scripts/test.sh` installs when missing). PgBouncer
//! refuses to run as root: as root it is started with `-u` as the owner of
//! the PostgreSQL installation (user `postgres`) or `nobody`.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::private_server::{free_port, program, run_as};

/// PgBouncer's `pool_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// A server connection per transaction: the mode of hosted PostgreSQL's
    /// poolers, where no session state survives a transaction.
    Transaction,
    /// A server connection per client connection, reset when it ends.
    Session,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Transaction => "transaction",
            PoolMode::Session => "session",
        }
    }
}

/// A running private PgBouncer; stopped when dropped.
///
/// Its pool holds 60 server connections per database and user: in session
/// mode each client connection keeps one for its life, and a client beyond
/// the pool waits in PgBouncer's queue (a runner's lease refresh among them),
/// so the pool must cover every connection of the runners under test.
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    port: u16,
    mode: PoolMode,
    dir: PathBuf,
    upstream: Upstream,
}

/// The parts of a `postgres://user[:password]@host[:port]/db[?query]` URL.
#[derive(Debug, Clone)]
struct Upstream {
    user: String,
    password: Option<String>,
    host: String,
    port: u16,
    db: String,
    query: Option<String>,
}

fn parse(url: &str) -> Result<Upstream, String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a URL: {url}"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q.to_owned())),
        None => (rest, None),
    };
    let (authority, db) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let (userinfo, hostport) = authority
        .rsplit_once('@')
        .unwrap_or(("postgres", authority));
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u.to_owned(), Some(p.to_owned())),
        None => (userinfo.to_owned(), None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse().map_err(|_| format!("bad port in {url}"))?,
        ),
        None => (hostport.to_owned(), 5432),
    };
    Ok(Upstream {
        user,
        password,
        host: if host.is_empty() {
            "127.0.0.1".into()
        } else {
            host
        },
        port,
        db: if db.is_empty() {
            "postgres".into()
        } else {
            db.to_owned()
        },
        query,
    })
}

impl PgBouncer {
    /// Starts PgBouncer in `mode` in front of the server of `upstream` (a
    /// PostgreSQL URL), and waits until it accepts connections.
    ///
    /// # Errors
    /// When the `pgbouncer` program is missing (the message says how to
    /// install it) or it does not start within 10 seconds (with its log).
    pub fn start(upstream: &str, mode: PoolMode) -> Result<PgBouncer, String> {
        let up = parse(upstream)?;
        let program = program("pgbouncer", &[PathBuf::from("/usr/sbin")]).ok_or(
            "pgbouncer is needed for this test: run `bash scripts/test.sh` (it installs \
             Debian's package when missing) or `apt-get install pgbouncer`",
        )?;
        let dir = std::env::temp_dir().join(format!(
            "flamingock-pgbouncer-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = free_port()?;
        let password = up
            .password
            .as_deref()
            .map(|p| format!(" password={p}"))
            .unwrap_or_default();
        let config = format!(
            "[databases]\n\
             * = host={host} port={uport}{password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = {mode}\n\
             max_client_conn = 1000\n\
             default_pool_size = 60\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            host = up.host,
            uport = up.port,
            dir = dir.display(),
            mode = mode.as_str(),
        );
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("pgbouncer.ini", &config)?;
        write("users.txt", &format!("\"{}\" \"\"\n", up.user))?;
        let mut cmd = Command::new(&program);
        if let Some((name, uid, gid)) = run_as()? {
            for entry in ["", "pgbouncer.ini", "users.txt"] {
                std::os::unix::fs::chown(dir.join(entry), Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", dir.display()))?;
            }
            cmd.arg("-u").arg(name);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let mut bouncer = PgBouncer {
            child,
            port,
            mode,
            dir,
            upstream: up,
        };
        bouncer.wait_ready()?;
        Ok(bouncer)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "pgbouncer exited with {status}: {}",
                    self.log_tail()
                ));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "pgbouncer did not listen on port {} within 10 s: {}",
            self.port,
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// The pooling mode.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// The port PgBouncer listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The upstream URL with PgBouncer's address instead of the server's.
    pub fn url(&self) -> String {
        let up = &self.upstream;
        let auth = match &up.password {
            Some(p) => format!("{}:{p}", up.user),
            None => up.user.clone(),
        };
        let query = up
            .query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        format!("postgres://{auth}@127.0.0.1:{}/{}{query}", self.port, up.db)
    }

    /// The directory of its configuration and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn upstream_urls_are_split() {
        let u = parse("postgres://ana:pw@db:6543/app?sslmode=disable").expect("parses");
        assert_eq!(
            (
                u.user.as_str(),
                u.password.as_deref(),
                u.host.as_str(),
                u.port,
                u.db.as_str()
            ),
            ("ana", Some("pw"), "db", 6543, "app")
        );
        assert_eq!(u.query.as_deref(), Some("sslmode=disable"));
        let u = parse("postgres://postgres@127.0.0.1/test").expect("parses");
        assert_eq!((u.port, u.password), (5432, None));
    }
}
