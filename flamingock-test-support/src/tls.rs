//! Test certificates and a private PostgreSQL server with TLS, for the
//! checks of TLS connections (success, wrong CA, host name mismatch).
//!
//! Certificates are made with the `openssl` program; the server is the
//! system's PostgreSQL (`initdb` and `postgres` from `PATH` or Debian's
//! `/usr/lib/postgresql/<version>/bin`), run as an unprivileged user when
//! the tests run as root (PostgreSQL refuses root), on a free loopback port,
//! in a temporary directory removed when it stops.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::private_server::{free_port, program, run_as};

/// A certificate authority and a server certificate it signed, for host
/// name `localhost` only (so `127.0.0.1` is a host name mismatch), plus an
/// unrelated authority (a wrong CA), as PEM files in one directory.
#[derive(Debug)]
pub struct TestCerts {
    dir: PathBuf,
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl TestCerts {
    /// Makes the certificates in `dir` (created if missing).
    ///
    /// # Errors
    /// When `openssl` is missing or fails (with its message).
    pub fn generate(dir: &Path) -> Result<TestCerts, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let p = |name: &str| dir.join(name);
        let openssl = || Command::new("openssl");
        for ca in ["ca", "other-ca"] {
            run(
                openssl()
                    .args([
                        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    ])
                    .arg("-keyout")
                    .arg(p(&format!("{ca}.key")))
                    .arg("-out")
                    .arg(p(&format!("{ca}.crt")))
                    .args(["-subj", &format!("/CN=flamingock test {ca}")]),
                "openssl req (CA; `apt-get install openssl` if it is missing)",
            )?;
        }
        run(
            openssl()
                .args([
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                ])
                .arg("-keyout")
                .arg(p("server.key"))
                .arg("-out")
                .arg(p("server.csr")),
            "openssl req (server)",
        )?;
        std::fs::write(
            p("server.ext"),
            "subjectAltName = DNS:localhost\nextendedKeyUsage = serverAuth\n",
        )
        .map_err(|e| format!("server.ext: {e}"))?;
        run(
            openssl()
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p("server.csr"))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p("server.ext"))
                .arg("-out")
                .arg(p("server.crt")),
            "openssl x509 (sign the server certificate)",
        )?;
        Ok(TestCerts {
            dir: dir.to_owned(),
        })
    }

    /// The authority that signed the server certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    /// An authority that signed nothing here.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.join("other-ca.crt")
    }
    /// The server certificate (for `localhost`).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    /// The server certificate's private key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// A PostgreSQL program: in `PATH`, else in Debian's versioned directories
/// (newest first).
fn postgres_bin(name: &str) -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    versions.sort();
    versions.reverse();
    program(name, &versions)
}

/// A private PostgreSQL server with TLS on (certificates of [`TestCerts`]),
/// trust authentication for user `postgres`, on a free loopback port;
/// stopped and removed when dropped.
#[derive(Debug)]
pub struct TlsPostgres {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl TlsPostgres {
    /// Initialises and starts the server in a new temporary directory.
    ///
    /// # Errors
    /// When PostgreSQL's programs are missing or the server does not start
    /// within 30 seconds (with the end of its log).
    pub fn start(certs: &TestCerts) -> Result<TlsPostgres, String> {
        let initdb = postgres_bin("initdb")
            .ok_or("initdb is needed for this test (Debian: apt-get install postgresql)")?;
        let server = postgres_bin("postgres").ok_or("the postgres server program is missing")?;
        let dir = std::env::temp_dir().join(format!(
            "flamingock-tls-pg-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let as_user = match run_as()? {
            Some((_, uid, gid)) => {
                std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {}: {e}", dir.display()))?;
                Some((uid, gid))
            }
            None => None,
        };
        let with_user = |mut cmd: Command| {
            if let Some((uid, gid)) = as_user {
                cmd.uid(uid).gid(gid);
            }
            cmd
        };
        let mut init = with_user(Command::new(&initdb));
        init.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(&mut init, "initdb")?;
        // The key must belong to the server's user and be private.
        for (src, name) in [
            (certs.server_cert(), "server.crt"),
            (certs.server_key(), "server.key"),
        ] {
            let dst = data.join(name);
            std::fs::copy(&src, &dst).map_err(|e| format!("{name}: {e}"))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("{name}: {e}"))?;
            if let Some((uid, gid)) = as_user {
                std::os::unix::fs::chown(&dst, Some(uid), Some(gid))
                    .map_err(|e| format!("chown {name}: {e}"))?;
            }
        }
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = as_user {
            std::os::unix::fs::chown(dir.join("server.log"), Some(uid), Some(gid))
                .map_err(|e| e.to_string())?;
        }
        let mut cmd = with_user(Command::new(&server));
        cmd.arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="])
            .args(["-c", "ssl=on"])
            .args(["-c", "fsync=off"])
            // The pipeline suite's 16 concurrent runners use up to 3 each.
            .args(["-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", server.display()))?;
        let mut pg = TlsPostgres { child, port, dir };
        pg.wait_ready()?;
        Ok(pg)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "postgres exited with {status}: {}",
                    self.log_tail()
                ));
            }
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            if log.contains("ready to accept connections")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "postgres did not start within 30 s: {}",
            self.log_tail()
        ))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// The port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@<host>:<port>/postgres` followed by `query`
    /// (e.g. `sslmode=verify-full&sslrootcert=...`).
    pub fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; nothing here needs to survive.
        if let Some(pid) = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::QUIT);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
