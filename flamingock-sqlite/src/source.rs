//! Where a SQLite handle finds its database: a path, a `sqlite:` URL or a pool.

use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

use crate::connect::Location;

/// The database a [`SqliteAuditStore`](crate::SqliteAuditStore),
/// [`SqliteLock`](crate::SqliteLock) or [`SqliteTarget`](crate::SqliteTarget)
/// works on: a file path (created by the first write), a `sqlite:` URL
/// (`sqlite::memory:`, `sqlite://app.db?mode=ro`), `":memory:"`, or a pool
/// you built. Every builder takes `impl Into<SqliteSource>`, so any of these
/// can be passed as is:
///
/// ```no_run
/// # async fn f(pool: sqlx::SqlitePool) -> Result<(), flamingock_core::StoreError> {
/// use flamingock_sqlite::SqliteAuditStore;
/// let on_file = SqliteAuditStore::connect("app.db").await?;
/// let in_memory = SqliteAuditStore::connect("sqlite::memory:").await?;
/// let on_your_pool = SqliteAuditStore::builder(pool).build().await?;
/// # let _ = (on_file, in_memory, on_your_pool); Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteSource(pub(crate) Source);

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Location(Location),
    Pool(SqlitePool),
}

impl From<SqlitePool> for SqliteSource {
    fn from(pool: SqlitePool) -> Self {
        SqliteSource(Source::Pool(pool))
    }
}

impl From<&SqlitePool> for SqliteSource {
    fn from(pool: &SqlitePool) -> Self {
        SqliteSource(Source::Pool(pool.clone()))
    }
}

impl From<&Path> for SqliteSource {
    fn from(path: &Path) -> Self {
        SqliteSource(Source::Location(Location::parse(path)))
    }
}

impl From<PathBuf> for SqliteSource {
    fn from(path: PathBuf) -> Self {
        Self::from(path.as_path())
    }
}

impl From<&PathBuf> for SqliteSource {
    fn from(path: &PathBuf) -> Self {
        Self::from(path.as_path())
    }
}

impl From<&str> for SqliteSource {
    fn from(path: &str) -> Self {
        Self::from(Path::new(path))
    }
}

impl From<String> for SqliteSource {
    fn from(path: String) -> Self {
        Self::from(Path::new(&path))
    }
}

impl From<&String> for SqliteSource {
    fn from(path: &String) -> Self {
        Self::from(Path::new(path))
    }
}
