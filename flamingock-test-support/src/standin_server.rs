//! Private copies of the stand-in servers the test command runs (SecantusDB
//! for MongoDB, moto for DynamoDB), started by a test on a free loopback
//! port, optionally with TLS, and stopped when dropped.
//!
//! Where the programs are:
//! * SecantusDB: `FLAMINGOCK_TEST_SECANTUSD` (the test command exports its
//!   virtualenv's `secantusd-py`), else `secantusd-py` on `PATH`;
//! * moto: `FLAMINGOCK_TEST_PYTHON` (the test command exports its
//!   virtualenv's interpreter), else `python3` on `PATH`, running the
//!   workspace's `scripts/moto_server_serial.py` (moto's server with its
//!   requests serialised, see that file).
//!
//! Without them a test fails saying how to provide them. There is no skip:
//! a test that returned early would be reported as passed (libtest hides its
//! output), and the test command always provides both.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::private_server::{free_port, program};
use crate::tls::TestCerts;

/// A stand-in server process of this test, killed (and its directory
/// removed) when dropped.
#[derive(Debug)]
pub struct StandinServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    name: &'static str,
}

fn missing(what: &str, how: &str) -> String {
    format!("this test starts a private {what}, which is missing: {how}")
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

impl StandinServer {
    /// SecantusDB (in memory) on a free port; with `tls`, TLS only, with the
    /// server certificate of `tls` (for `localhost`).
    ///
    /// # Errors
    /// When `secantusd-py` cannot be found or the server does not start
    /// within 60 seconds.
    pub fn secantusdb(tls: Option<&TestCerts>) -> Result<StandinServer, String> {
        let Some(bin) =
            env_path("FLAMINGOCK_TEST_SECANTUSD").or_else(|| program("secantusd-py", &[]))
        else {
            return Err(missing(
                "SecantusDB server",
                "run `bash scripts/test.sh`, or export FLAMINGOCK_TEST_SECANTUSD=/path/to/venv/bin/secantusd-py",
            ));
        };
        let dir = scratch_dir("secantusdb")?;
        // An empty config file turns off the server's config auto-discovery.
        std::fs::write(dir.join("secantusd.toml"), "").map_err(|e| e.to_string())?;
        let port = free_port()?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(dir.join("secantusd.toml"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--storage-path", ":memory:"]);
        if let Some(certs) = tls {
            cmd.arg("--tls-cert-file")
                .arg(certs.server_cert())
                .arg("--tls-key-file")
                .arg(certs.server_key());
        }
        Self::spawn("SecantusDB", cmd, port, dir)
    }

    /// moto's server (requests serialised) on a free port; with `tls`,
    /// HTTPS with the server certificate of `tls` (for `localhost`).
    ///
    /// # Errors
    /// When the interpreter or the wrapper script cannot be found or the
    /// server does not start within 60 seconds.
    pub fn moto(tls: Option<&TestCerts>) -> Result<StandinServer, String> {
        let Some(python) = env_path("FLAMINGOCK_TEST_PYTHON").or_else(|| program("python3", &[]))
        else {
            return Err(missing(
                "moto server",
                "run `bash scripts/test.sh`, or export FLAMINGOCK_TEST_PYTHON=/path/to/venv/bin/python (with moto[server] installed)",
            ));
        };
        let wrapper = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("scripts")
            .join("moto_server_serial.py");
        if !wrapper.is_file() {
            return Err(format!("{} is missing", wrapper.display()));
        }
        let dir = scratch_dir("moto")?;
        let port = free_port()?;
        let mut cmd = Command::new(&python);
        cmd.arg(&wrapper)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        if let Some(certs) = tls {
            cmd.arg("--ssl-cert")
                .arg(certs.server_cert())
                .arg("--ssl-key")
                .arg(certs.server_key());
        }
        Self::spawn("moto", cmd, port, dir)
    }

    fn spawn(
        name: &'static str,
        mut cmd: Command,
        port: u16,
        dir: PathBuf,
    ) -> Result<StandinServer, String> {
        let log = std::fs::File::create(dir.join("server.log")).map_err(|e| e.to_string())?;
        let child = cmd
            .current_dir(&dir)
            .env("TMPDIR", &dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{name}: {e}"))?;
        let mut server = StandinServer {
            child,
            port,
            dir,
            name,
        };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!(
                    "{name} exited with {status}: {}",
                    server.log_tail()
                ));
            }
            if TcpStream::connect_timeout(
                &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                return Ok(server);
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(format!(
                    "{name} did not listen on port {port} within 60 s: {}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Which server this is (`SecantusDB` or `moto`).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

fn scratch_dir(what: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!(
        "flamingock-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

impl Drop for StandinServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
