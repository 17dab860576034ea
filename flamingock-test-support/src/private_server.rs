//! What the private servers of the tests (PgBouncer, PostgreSQL with TLS,
//! the stand-ins) share: a free loopback port, the system program to run, and the
//! unprivileged user to run it as when the tests run as root (PgBouncer and
//! PostgreSQL both refuse root).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// `name` in `PATH`, else in `extra` directories (in that order).
pub(crate) fn program(name: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The user to run a server as: `None` when we are not root, else
/// `(name, uid, gid)` of `postgres` if it exists, or of `nobody`.
pub(crate) fn run_as() -> Result<Option<(String, u32, u32)>, String> {
    if !rustix::process::geteuid().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").arg(flag).arg(name).output().ok()?;
            String::from_utf8(out.stdout).ok()?.trim().parse().ok()
        };
        if let (Some(uid), Some(gid)) = (id("-u"), id("-g")) {
            return Ok(Some((name.to_owned(), uid, gid)));
        }
    }
    Err("running as root, and neither user postgres nor nobody exists".into())
}
