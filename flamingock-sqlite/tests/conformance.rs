//! Every conformance suite against SQLite files. No server is needed: each
//! namespace is a fresh database file in a temporary directory, and the
//! separate-transaction targets live in a second file beside it.
// The nested futures of the suites' pipelines need more than the default
// depth to lay out (rustc's query depth, not runtime recursion).
#![recursion_limit = "256"]

use std::path::PathBuf;
use std::sync::Arc;

use flamingock_core::{async_trait, AuditStore, LockProvider, TargetSystem};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteLock, SqliteTarget};
use flamingock_test_support::audit_suite::AuditStoreUnderTest;
use flamingock_test_support::bad_input_suite::{BadInputUnderTest, Misshapen, Unprepared};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::BoxError;
use futures::future::BoxFuture;

/// SQLite files in a temporary directory removed when the test ends.
struct Sqlite {
    dir: Dir,
}

/// Where the files live.
enum Dir {
    /// A directory of this test alone.
    Own(tempfile::TempDir),
    /// A directory shared by a test process and the child processes it
    /// starts (the process-level suite), named after the parent's pid; the
    /// parent removes it, once empty, when its check ends.
    Family(PathBuf),
}

impl Drop for Dir {
    fn drop(&mut self) {
        if let (Dir::Family(p), true) = (
            &*self,
            std::env::var_os("FLAMINGOCK_PROCESS_CHILD").is_none(),
        ) {
            // Fails while another check still has files there: fine.
            let _ = std::fs::remove_dir(p);
        }
    }
}

impl Sqlite {
    fn path(&self) -> &std::path::Path {
        match &self.dir {
            Dir::Own(t) => t.path(),
            Dir::Family(p) => p,
        }
    }
    fn main_file(&self, ns: &str) -> PathBuf {
        self.path().join(format!("{ns}.db"))
    }
    fn other_file(&self, ns: &str) -> PathBuf {
        self.path().join(format!("{ns}-elsewhere.db"))
    }
    /// The main file if it exists, and the tables of both files other than
    /// the suite's `counters`, read through read-only connections.
    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let mut found = Vec::new();
        for (i, file) in [self.main_file(ns), self.other_file(ns)].iter().enumerate() {
            if !file.exists() {
                continue;
            }
            if i == 0 {
                found.push(format!("file {}", file.display()));
            }
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .read_only(true);
            let mut conn = sqlx::ConnectOptions::connect(&opts).await?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'counters%' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(&mut conn)
            .await?;
            found.extend(
                tables
                    .into_iter()
                    .map(|t| format!("{}: {t}", file.display())),
            );
        }
        Ok(found)
    }

    fn remove(&self, ns: &str) -> Result<(), BoxError> {
        for base in [self.main_file(ns), self.other_file(ns)] {
            for suffix in ["", "-wal", "-shm"] {
                let mut p = base.clone().into_os_string();
                p.push(suffix);
                match std::fs::remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }
}

async fn sqlite() -> Option<Sqlite> {
    Some(Sqlite {
        dir: Dir::Own(
            tempfile::Builder::new()
                .prefix("flamingock-sqlite-")
                .tempdir()
                .expect("temporary directory"),
        ),
    })
}

/// For the process-level suite: files in a directory the child processes find too.
async fn sqlite_family() -> Option<Sqlite> {
    let dir = std::env::temp_dir().join(format!(
        "flamingock-sqlite-family-{}",
        flamingock_test_support::process_suite::family_id()
    ));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    Some(Sqlite {
        dir: Dir::Family(dir),
    })
}

#[async_trait]
impl AuditStoreUnderTest for Sqlite {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(
            SqliteAuditStore::connect(self.main_file(ns)).await?,
        ))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }
}

#[async_trait]
impl LockUnderTest for Sqlite {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(
            SqliteLock::builder(self.main_file(ns)).build().await?,
        ))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }
}

const COUNTERS: &str =
    "CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)";

#[async_trait]
impl PipelineUnderTest for Sqlite {
    type Target = SqliteTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<SqliteTarget>, BoxError> {
        let store = SqliteAuditStore::connect(self.main_file(ns)).await?;
        let elsewhere = SqliteTarget::builder("separate-marker", self.other_file(ns))
            .build()
            .await?;
        Ok(PipelineEnv {
            lock: Arc::new(store.lock()),
            shared: Some(
                store
                    .shared_target("shared")
                    .build()
                    .await
                    .expect("shared target"),
            ),
            separate: Some(
                SqliteTarget::builder("separate", elsewhere.pool())
                    .marker(false)
                    .build()
                    .await?,
            ),
            separate_marker: Some(elsewhere),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut SqliteContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            sqlx::query(COUNTERS).execute(ctx.conn()).await?;
            sqlx::query(
                "INSERT INTO counters (key, n) VALUES (?1, 1) \
                 ON CONFLICT (key) DO UPDATE SET n = n + 1",
            )
            .bind(key)
            .execute(ctx.conn())
            .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &SqliteTarget, key: &str) -> Result<u64, BoxError> {
        let _ = target.id();
        sqlx::query(COUNTERS).execute(target.pool()).await?;
        let n: Option<i64> = sqlx::query_scalar("SELECT n FROM counters WHERE key = ?1")
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.remove(ns)
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        Sqlite::footprint(self, ns).await
    }

    fn capabilities(&self) -> PipelineCapabilities {
        // One writer per file: while a change's transaction is open the
        // lease cannot be refreshed. A change that panics keeps it open while
        // the panic hook prints its backtrace (RUST_BACKTRACE=1 symbolises a
        // large debug binary for a second or more), which a 1.2 s lease did
        // not always survive in CI.
        PipelineCapabilities::default()
            .single_writer()
            .lease(std::time::Duration::from_secs(2))
    }
}

/// A read-write pool on `file`, outside the handles under test.
async fn raw_pool(file: &std::path::Path) -> Result<sqlx::SqlitePool, BoxError> {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(file)
        .create_if_missing(true);
    Ok(sqlx::SqlitePool::connect_with(opts).await?)
}

#[async_trait]
impl BadInputUnderTest for Sqlite {
    async fn corrupt_state(&self, ns: &str, id: &str, bad: &str) -> Result<String, BoxError> {
        let pool = raw_pool(&self.main_file(ns)).await?;
        sqlx::query("UPDATE flamingock_audit SET state = ?1 WHERE change_id = ?2")
            .bind(bad)
            .bind(id)
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok("flamingock_audit".into())
    }

    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError> {
        let store = SqliteAuditStore::builder(self.main_file(ns))
            .auto_create(false)
            .build()
            .await?;
        Ok(Unprepared {
            names: vec!["flamingock_audit".into()],
            ddl: Some(store.ddl()),
            store: Arc::new(store),
        })
    }

    async fn run_ddl(&self, ns: &str, ddl: &str) -> Result<(), BoxError> {
        let pool = raw_pool(&self.main_file(ns)).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl.to_owned()))
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(())
    }

    async fn misshape(&self, ns: &str) -> Result<Misshapen, BoxError> {
        let pool = raw_pool(&self.main_file(ns)).await?;
        sqlx::query("CREATE TABLE flamingock_audit (id INTEGER PRIMARY KEY, whatever TEXT)")
            .execute(&pool)
            .await?;
        pool.close().await;
        Ok(Misshapen {
            store: Arc::new(SqliteAuditStore::connect(self.main_file(ns)).await?),
            table: "flamingock_audit".into(),
            detail: "change_id".into(),
        })
    }
}

/// Bad input and failures: the same checks on every backend.
mod bad_input {
    use super::sqlite;
    flamingock_test_support::bad_input_tests!(sqlite,
        run: [
            malformed_entries_are_named_not_misread,
            missing_tables_are_not_ready_without_auto_create,
            misshapen_tables_are_reported_not_used,
            fenced_shared_commit_rolls_the_change_back,
        ],
        ignored: [
            connections_killed_mid_run_lose_nothing = "SQLite is a file: there is no server connection to kill (a killed process is the process-level suite's)",
            wrong_credentials_are_clear_and_hide_the_password = "SQLite has no credentials",
        ],
    );
}

mod audit {
    use super::sqlite;
    flamingock_test_support::audit_store_tests!(sqlite);
}

mod lock {
    use super::sqlite;
    flamingock_test_support::lock_tests!(sqlite);
}

/// Every pipeline check. SQLite has one writer per file, declared through
/// `PipelineCapabilities::single_writer`: `lost_lease_cannot_commit` then
/// pauses the old lease holder before its change's transaction, since while
/// that transaction is open nobody else can write at all.
mod pipeline {
    use super::sqlite;
    flamingock_test_support::pipeline_tests!(sqlite);
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::sqlite_family;
    flamingock_test_support::process_tests!(sqlite_family);
}
