//! Table names, DDL and the shape check of existing tables.

use std::sync::Arc;

use sqlx::sqlite::SqliteArguments;
use sqlx::{AssertSqlSafe, Sqlite, SqliteConnection};

/// Quotes an SQL identifier (`"` doubled), so any prefix is safe to splice.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A query over a statement built from quoted identifiers only.
pub(crate) fn q(sql: &Arc<str>) -> sqlx::query::Query<'static, Sqlite, SqliteArguments> {
    sqlx::query(AssertSqlSafe(sql.clone()))
}

/// A table this crate owns: its name, DDL and expected columns.
#[derive(Debug, Clone)]
pub(crate) struct TableDef {
    pub(crate) name: String,
    pub(crate) ddl: Vec<String>,
    pub(crate) columns: &'static [&'static str],
}

pub(crate) const HISTORY_COLUMNS: &[&str] = &[
    "id",
    "run_id",
    "stage_id",
    "change_id",
    "author",
    "change_order",
    "target_system",
    "state",
    "created_at",
    "duration_ms",
    "hostname",
    "runner_id",
    "error",
    "metadata",
    "tx_strategy",
    "recovery",
    "transactional",
    "fencing_token",
    "checksum",
];

/// The audit store's tables under `prefix`: history, current state, fence.
pub(crate) fn audit_tables(prefix: &str) -> [TableDef; 3] {
    let history = format!("{prefix}_audit");
    let current = format!("{prefix}_audit_current");
    let fence = format!("{prefix}_fence");
    let (h, c, f) = (ident(&history), ident(&current), ident(&fence));
    [
        TableDef {
            // `id` orders the history. No AUTOINCREMENT: that would add
            // SQLite's `sqlite_sequence` table to the user's database, and
            // an append-only table's rowid only grows anyway.
            ddl: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {h} (
                        id INTEGER PRIMARY KEY,
                        run_id TEXT NOT NULL,
                        stage_id TEXT NOT NULL,
                        change_id TEXT NOT NULL,
                        author TEXT NOT NULL,
                        change_order TEXT NOT NULL,
                        target_system TEXT NOT NULL,
                        state TEXT NOT NULL,
                        created_at TEXT NOT NULL,
                        duration_ms INTEGER NOT NULL,
                        hostname TEXT NOT NULL,
                        runner_id TEXT NOT NULL,
                        error TEXT,
                        metadata TEXT NOT NULL,
                        tx_strategy TEXT NOT NULL,
                        recovery TEXT NOT NULL,
                        transactional INTEGER NOT NULL,
                        fencing_token INTEGER NOT NULL,
                        checksum TEXT
                    )"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {h} (change_id, id)",
                    ident(&format!("{history}_by_change"))
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {h} (created_at)",
                    ident(&format!("{history}_by_time"))
                ),
            ],
            name: history,
            columns: HISTORY_COLUMNS,
        },
        TableDef {
            // One row per change pointing at its latest history row: the
            // snapshot is one join sized by the number of changes.
            ddl: vec![format!(
                "CREATE TABLE IF NOT EXISTS {c} (
                    change_id TEXT PRIMARY KEY NOT NULL,
                    history_id INTEGER NOT NULL REFERENCES {h} (id)
                ) WITHOUT ROWID"
            )],
            name: current,
            columns: &["change_id", "history_id"],
        },
        TableDef {
            // The fence row also holds the applied-set summary
            // (flamingock_core::summary), moved by every append in its
            // transaction. NULL means unknown (the row made again over
            // existing entries): the runner then reads the snapshot.
            ddl: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {f} (
                        id INTEGER PRIMARY KEY CHECK (id = 1),
                        token INTEGER NOT NULL,
                        summary_rows INTEGER,
                        summary_applied INTEGER,
                        summary_digest INTEGER
                    )"
                ),
                format!(
                    "INSERT OR IGNORE INTO {f} (id, token, summary_rows, summary_applied, summary_digest)
                     SELECT 1, 0, z, z, z
                       FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM {c}) THEN NULL ELSE 0 END AS z)"
                ),
            ],
            name: fence,
            columns: &[
                "id",
                "token",
                "summary_rows",
                "summary_applied",
                "summary_digest",
            ],
        },
    ]
}

/// The lock table under `prefix` (a single row; the token counter survives releases).
pub(crate) fn lock_table(prefix: &str) -> TableDef {
    let name = format!("{prefix}_lock");
    TableDef {
        ddl: vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                owner TEXT,
                token INTEGER,
                expires_at_ms INTEGER,
                counter INTEGER NOT NULL
            )",
            ident(&name)
        )],
        name,
        columns: &["id", "owner", "token", "expires_at_ms", "counter"],
    }
}

/// The marker table a separate-transaction target keeps under `prefix`.
pub(crate) fn marker_table(prefix: &str) -> TableDef {
    let name = format!("{prefix}_marker");
    TableDef {
        ddl: vec![format!(
            "CREATE TABLE IF NOT EXISTS {} (
                change_id TEXT PRIMARY KEY NOT NULL,
                run_id TEXT NOT NULL,
                fencing_token INTEGER NOT NULL,
                created_at TEXT NOT NULL
            ) WITHOUT ROWID",
            ident(&name)
        )],
        name,
        columns: &["change_id", "run_id", "fencing_token", "created_at"],
    }
}

/// What is wrong with an existing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    Ok,
    Missing,
    /// The table exists without these columns.
    WrongColumns(Vec<&'static str>),
}

/// Compares the table's columns with `def` (read-only: `PRAGMA table_info`).
pub(crate) async fn check_shape(
    conn: &mut SqliteConnection,
    def: &TableDef,
) -> Result<Shape, sqlx::Error> {
    let sql = format!("SELECT name FROM pragma_table_info({})", literal(&def.name));
    let have: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    if have.is_empty() {
        return Ok(Shape::Missing);
    }
    let missing: Vec<&'static str> = def
        .columns
        .iter()
        .copied()
        .filter(|c| !have.iter().any(|h| h.eq_ignore_ascii_case(c)))
        .collect();
    Ok(if missing.is_empty() {
        Shape::Ok
    } else {
        Shape::WrongColumns(missing)
    })
}

/// An SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `defs`' DDL in one write transaction (taken up front).
pub(crate) async fn create(
    conn: &mut SqliteConnection,
    defs: &[&TableDef],
) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    for def in defs {
        for ddl in &def.ddl {
            sqlx::query(AssertSqlSafe(ddl.as_str()))
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await
}

/// Why the tables are not usable.
#[derive(Debug)]
pub(crate) enum EnsureError {
    /// A table is missing and creating it is not allowed.
    NotReady(String),
    /// A table exists with another shape.
    WrongShape {
        table: String,
        missing: Vec<&'static str>,
    },
    /// The database failed.
    Db(sqlx::Error),
}

impl From<sqlx::Error> for EnsureError {
    fn from(e: sqlx::Error) -> Self {
        EnsureError::Db(e)
    }
}

/// Checks `defs` (reads only, so the start-up fast path never takes the
/// write lock) and creates the missing ones when `auto_create` allows.
pub(crate) async fn ensure(
    pool: &sqlx::SqlitePool,
    defs: &[&TableDef],
    auto_create: bool,
) -> Result<(), EnsureError> {
    let mut conn = pool.acquire().await?;
    let mut missing = Vec::new();
    for def in defs {
        match check_shape(&mut conn, def).await? {
            Shape::Ok => {}
            Shape::Missing => missing.push(*def),
            Shape::WrongColumns(cols) => {
                return Err(EnsureError::WrongShape {
                    table: def.name.clone(),
                    missing: cols,
                })
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !auto_create {
        return Err(EnsureError::NotReady(missing[0].name.clone()));
    }
    create(&mut conn, &missing).await?;
    // Another process may have created a table between the check and the
    // CREATE ... IF NOT EXISTS: check what is there now.
    for def in missing {
        if let Shape::WrongColumns(cols) = check_shape(&mut conn, def).await? {
            return Err(EnsureError::WrongShape {
                table: def.name.clone(),
                missing: cols,
            });
        }
    }
    Ok(())
}
