//! Opening a database file (or an in-memory database) as a pool, with the
//! settings every handle of this crate relies on.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use flamingock_core::BoxError;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{ConnectOptions, SqliteConnection};
use tracing::debug;

/// Default time a statement waits for another connection's (or process's)
/// write lock before failing with `SQLITE_BUSY`.
pub(crate) const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default pool size for a database file.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 4;

/// Where a database lives, as the user named it.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A file path (created if missing).
    File(PathBuf),
    /// A `sqlite:` URL or `:memory:`, parsed by sqlx.
    Url(String),
}

impl Location {
    pub(crate) fn parse(path: &Path) -> Location {
        match path.to_str() {
            Some(s) if s == ":memory:" || s.starts_with("sqlite:") => Location::Url(s.to_owned()),
            _ => Location::File(path.to_owned()),
        }
    }
}

/// Identity and display name of a pool's database.
#[derive(Debug, Clone)]
pub(crate) struct DbIdentity {
    /// Stable id: canonical file path, or `memory:<name>` for an in-memory database.
    pub(crate) id: String,
    /// What to show in errors: the file path as canonical as we could make it.
    pub(crate) display: String,
}

/// Whether sqlx's options describe an in-memory database. sqlx turns
/// `sqlite::memory:` into a uniquely named shared-cache URI; anything using
/// `mode=memory` is in memory too.
fn is_memory(opts: &SqliteConnectOptions) -> bool {
    let name = opts.get_filename().to_string_lossy();
    name == ":memory:" || name.starts_with("file:sqlx-in-memory-") || name.contains("mode=memory")
}

/// The identity of the database behind `pool`.
pub(crate) fn identity(pool: &SqlitePool) -> DbIdentity {
    let opts = pool.connect_options();
    let name = opts.get_filename();
    if is_memory(&opts) {
        let shown = name.to_string_lossy().into_owned();
        return DbIdentity {
            id: format!("memory:{shown}"),
            display: format!(":memory: ({shown})"),
        };
    }
    // A file not created yet: its directory canonical, so the id does not
    // change when the first write creates it.
    let canonical =
        std::fs::canonicalize(name).unwrap_or_else(|_| match (name.parent(), name.file_name()) {
            (Some(dir), Some(file)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            })
            .map(|d| d.join(file))
            .unwrap_or_else(|_| absolute(name)),
            _ => absolute(name),
        });
    let shown = canonical.display().to_string();
    DbIdentity {
        id: shown.clone(),
        display: shown,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// How the user's location is shown in an error before it could be opened.
pub(crate) fn display_location(loc: &Location) -> String {
    match loc {
        Location::File(p) => absolute(p).display().to_string(),
        Location::Url(u) => u.clone(),
    }
}

/// Pool settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolSettings {
    pub(crate) busy_timeout: Duration,
    pub(crate) max_connections: u32,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Why a location could not be opened; the message names the problem, the
/// caller adds the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error(
        "the path is a directory, not a database file (give a file path such as <dir>/app.db)"
    )]
    IsDirectory,
    #[error("the directory {0} does not exist")]
    NoDirectory(String),
    #[error("invalid SQLite URL")]
    BadUrl(#[source] sqlx::Error),
    #[error("cannot open the file as a SQLite database")]
    Open(#[source] sqlx::Error),
    #[error("the file is not a usable SQLite database")]
    NotADatabase(#[source] sqlx::Error),
    #[error("could not switch the database to WAL journal mode within {timeout:?}")]
    Wal {
        timeout: Duration,
        #[source]
        source: BoxError,
    },
}

/// Whether `pool`'s database is a file that does not exist (yet). Reading
/// such a database would create it; the readers of this crate answer
/// "nothing here" instead.
pub(crate) fn file_missing(pool: &SqlitePool) -> bool {
    let opts = pool.connect_options();
    !is_memory(&opts) && !opts.get_filename().exists()
}

/// Opens `loc` as a pool configured for this crate: `busy_timeout`, foreign
/// keys on; a single, never-closed connection for an in-memory database
/// (every SQLite connection to `:memory:` would otherwise see its own
/// database, and the database disappears with its last connection).
///
/// Opening writes nothing. A file that exists has its header read here, so a
/// directory, a corrupted file or a non-SQLite file fails at once; a file
/// that does not exist is created by the first write through the pool, not
/// before (a read-only command on a wrong path leaves no file behind). The
/// switch to WAL journal mode is made by the first writer ([`ensure_wal`]).
pub(crate) async fn open_pool(
    loc: &Location,
    settings: PoolSettings,
) -> Result<SqlitePool, OpenError> {
    let opts = match loc {
        Location::File(p) => {
            if p.is_dir() {
                return Err(OpenError::IsDirectory);
            }
            if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    return Err(OpenError::NoDirectory(
                        absolute(parent).display().to_string(),
                    ));
                }
            }
            SqliteConnectOptions::new()
                .filename(p)
                .create_if_missing(true)
        }
        Location::Url(u) => SqliteConnectOptions::from_str(u).map_err(OpenError::BadUrl)?,
    }
    .busy_timeout(settings.busy_timeout)
    .foreign_keys(true)
    // sqlx warns about every statement slower than a second, which waiting
    // for another process's write lock easily is: INFO is enough.
    .log_slow_statements(log::LevelFilter::Info, Duration::from_secs(1));
    let memory = is_memory(&opts);
    let acquire = settings.busy_timeout + Duration::from_secs(5);
    if !memory && !opts.get_filename().exists() {
        return Ok(SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(acquire)
            .connect_lazy_with(opts));
    }

    let pool_opts = if memory {
        // An in-memory database lives as long as one connection to it does:
        // the pool keeps its one connection for good.
        SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        SqlitePoolOptions::new().max_connections(settings.max_connections.max(1))
    };
    let pool = pool_opts.acquire_timeout(acquire).connect_lazy_with(opts);
    // One connection, which the pool keeps for the start-up check: it
    // proves the file is a database (a read).
    let mut first = pool.acquire().await.map_err(|e| match e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("26") => {
            OpenError::NotADatabase(sqlx::Error::Database(d))
        }
        e => OpenError::Open(e),
    })?;
    sqlx::query("SELECT count(*) FROM sqlite_master")
        .execute(&mut *first)
        .await
        .map_err(OpenError::NotADatabase)?;
    drop(first);
    Ok(pool)
}

/// Switches a file database to WAL journal mode (readers then never wait
/// for a writer), once per pool; a no-op for in-memory databases and for
/// files already in WAL mode. Called by the first write of a handle, never
/// by a read. Switching needs an exclusive lock that SQLite's busy handler
/// does not wait for, so several processes creating a new file at once
/// retry here instead of failing.
pub(crate) async fn ensure_wal(pool: &SqlitePool, timeout: Duration) -> Result<(), OpenError> {
    if is_memory(&pool.connect_options()) {
        return Ok(());
    }
    let mut conn = pool.acquire().await.map_err(OpenError::Open)?;
    set_wal(&mut conn, timeout).await
}

async fn set_wal(conn: &mut SqliteConnection, timeout: Duration) -> Result<(), OpenError> {
    let started = Instant::now();
    loop {
        let res: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut *conn)
            .await;
        match res {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            // A read-only database cannot change its journal: it still works
            // for reading, and writes fail with SQLite's own clear message.
            Ok(mode) => {
                debug!(%mode, "database stays in its journal mode");
                return Ok(());
            }
            Err(e) if is_busy(&e) && started.elapsed() < timeout => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(OpenError::Wal {
                    timeout,
                    source: Box::new(e),
                })
            }
        }
    }
}

/// `SQLITE_BUSY` / `SQLITE_LOCKED` (and their extended codes).
pub(crate) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code: Option<i64> = code.as_deref().and_then(|c| c.parse().ok());
            matches!(code.map(|c| c & 0xff), Some(5) | Some(6))
        }
        _ => false,
    }
}
