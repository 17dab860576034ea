//! Our tables: their DDL, the check that existing tables have the expected
//! shape, and their idempotent creation.
//!
//! `CREATE TABLE IF NOT EXISTS` is safe between concurrent runners on MySQL
//! and MariaDB (the metadata lock serialises creators; the second one sees
//! the table and only warns), and the rows the tables start with are
//! written with `INSERT IGNORE`, so no lock of our own is needed.

use sqlx::{AssertSqlSafe, MySqlPool, Row};

use crate::names::{quote_ident, Names, Table};

/// Table options: InnoDB (transactions, row locks) and a binary collation,
/// so change ids compare byte for byte (`Create-Users` and `create-users`
/// are two changes, as everywhere else).
const TABLE_OPTIONS: &str = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// The name of the lock row (one lock per database + prefix).
pub(crate) const LOCK_NAME: &str = "flamingock";

/// Expected columns (name, accepted `DATA_TYPE`s) of each table. Extra
/// columns are tolerated; missing ones or other types are reported.
/// MariaDB reports `JSON` columns as `longtext` (JSON is an alias there).
fn expected(t: Table) -> Vec<(&'static str, &'static [&'static str])> {
    const TEXT: &[&str] = &["text", "mediumtext", "longtext", "varchar"];
    const JSON: &[&str] = &["json", "longtext"];
    const BIGINT: &[&str] = &["bigint"];
    const TIME: &[&str] = &["datetime"];
    let entry: Vec<(&str, &[&str])> = vec![
        ("run_id", TEXT),
        ("stage_id", TEXT),
        ("change_id", &["varchar"]),
        ("author", TEXT),
        ("change_order", TEXT),
        ("target_system", TEXT),
        ("state", &["varchar"]),
        ("state_rank", &["smallint"]),
        ("created_at", TIME),
        ("duration_ms", BIGINT),
        ("hostname", TEXT),
        ("runner_id", TEXT),
        ("error_message", TEXT),
        ("error_chain", JSON),
        ("metadata", JSON),
        ("tx_strategy", &["varchar"]),
        ("recovery", &["varchar"]),
        ("transactional", &["tinyint"]),
        ("fencing_token", BIGINT),
        ("checksum", TEXT),
    ];
    match t {
        Table::History => [vec![("id", BIGINT)], entry].concat(),
        Table::Current => [
            vec![("history_id", BIGINT)],
            entry,
            vec![("applied_term", BIGINT)],
        ]
        .concat(),
        Table::Fence => vec![
            ("id", &["smallint"]),
            ("fence", BIGINT),
            ("summary_rows", BIGINT),
            ("summary_applied", BIGINT),
            ("summary_digest", BIGINT),
        ],
        Table::Lock => vec![
            ("name", &["varchar"]),
            ("owner", &["varchar"]),
            ("token", BIGINT),
            ("expires_at", TIME),
        ],
        Table::Marker => vec![
            ("change_id", &["varchar"]),
            ("run_id", TEXT),
            ("token", BIGINT),
            ("created_at", TIME),
        ],
    }
}

const ENTRY_COLUMNS_DDL: &str = "run_id TEXT NOT NULL,
    stage_id TEXT NOT NULL,
    author TEXT NOT NULL,
    change_order TEXT NOT NULL,
    target_system TEXT NOT NULL,
    state VARCHAR(32) NOT NULL,
    state_rank SMALLINT NOT NULL,
    created_at DATETIME(6) NOT NULL,
    duration_ms BIGINT NOT NULL,
    hostname TEXT NOT NULL,
    runner_id TEXT NOT NULL,
    error_message LONGTEXT NULL,
    error_chain JSON NULL,
    metadata JSON NULL,
    tx_strategy VARCHAR(32) NOT NULL,
    recovery VARCHAR(32) NOT NULL,
    transactional BOOLEAN NOT NULL,
    fencing_token BIGINT NOT NULL,
    checksum TEXT NULL";

/// The statements that create `t` and its first rows, each ending in `;\n`.
pub(crate) fn table_ddl(names: &Names, t: Table) -> String {
    let q = names.qualified(t);
    match t {
        Table::History => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,\n    change_id VARCHAR(255) NOT NULL,\n    {ENTRY_COLUMNS_DDL},\n    KEY {idx} (change_id, created_at)\n) {TABLE_OPTIONS};\n",
            idx = quote_ident(&format!("{}_change_idx", names.bare(t)))
        ),
        // applied_term: the row's summary term (flamingock_core::summary), 0
        // when its state does not count as applied.
        Table::Current => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    change_id VARCHAR(255) NOT NULL PRIMARY KEY,\n    history_id BIGINT NOT NULL,\n    {ENTRY_COLUMNS_DDL},\n    applied_term BIGINT NOT NULL DEFAULT 0\n) {TABLE_OPTIONS};\n"
        ),
        // The fence row also holds the applied-set summary, kept by every
        // append in the same transaction. NULL means unknown (a fence row
        // made again over existing entries): the runner then reads the snapshot.
        Table::Fence => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    id SMALLINT NOT NULL PRIMARY KEY,\n    fence BIGINT NOT NULL,\n    summary_rows BIGINT NULL,\n    summary_applied BIGINT NULL,\n    summary_digest BIGINT NULL\n) {TABLE_OPTIONS};\n\
             INSERT IGNORE INTO {q} (id, fence, summary_rows, summary_applied, summary_digest)\n\
             SELECT 1, 0, z, z, z FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM {current}) THEN NULL ELSE 0 END AS z) s;\n",
            current = names.qualified(Table::Current)
        ),
        // The lock row exists from the start (free: owner NULL), so taking
        // the lock is a row lock on an existing row, never a gap lock race.
        Table::Lock => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    name VARCHAR(255) NOT NULL PRIMARY KEY,\n    owner VARCHAR(255) NULL,\n    token BIGINT NOT NULL,\n    expires_at DATETIME(6) NOT NULL\n) {TABLE_OPTIONS};\n\
             INSERT IGNORE INTO {q} (name, owner, token, expires_at) VALUES ('{LOCK_NAME}', NULL, 0, '1970-01-02 00:00:00');\n"
        ),
        Table::Marker => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    change_id VARCHAR(255) NOT NULL PRIMARY KEY,\n    run_id TEXT NOT NULL,\n    token BIGINT NOT NULL,\n    created_at DATETIME(6) NOT NULL\n) {TABLE_OPTIONS};\n"
        ),
    }
}

/// The whole script that creates `tables` (what `auto_create` runs, and the
/// database when missing).
pub(crate) fn ddl(names: &Names, tables: &[Table]) -> String {
    let mut s = format!(
        "CREATE DATABASE IF NOT EXISTS {};\n",
        quote_ident(&names.database)
    );
    for t in tables {
        s.push_str(&table_ddl(names, *t));
    }
    s
}

/// Why the tables are not usable.
#[derive(Debug)]
pub(crate) enum SchemaError {
    /// Tables are missing and creation is off.
    Missing { detail: String },
    /// A table exists with another shape.
    WrongShape { table: String, detail: String },
    /// The server failed.
    Db {
        operation: &'static str,
        source: sqlx::Error,
    },
}

/// What the catalog says about our tables.
#[derive(Debug)]
struct Found {
    database_exists: bool,
    columns: Vec<(String, String, String)>, // (table, column, data type)
}

/// Reads what exists of `tables`, in one round trip.
async fn inspect(pool: &MySqlPool, names: &Names, tables: &[Table]) -> Result<Found, sqlx::Error> {
    let bare: Vec<String> = tables.iter().map(|t| names.bare(*t)).collect();
    let list = bare.iter().map(|_| "?").collect::<Vec<_>>().join(", ");
    // A sentinel row (empty table name) says whether the database exists.
    // The catalog's text columns are cast to binary-safe utf8mb4 so the
    // driver reads them as strings on MySQL 8 and MariaDB alike.
    let sql = format!(
        "SELECT '' AS t, 'database' AS c, '' AS ty FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?
         UNION ALL
         SELECT CAST(TABLE_NAME AS CHAR), CAST(COLUMN_NAME AS CHAR), CAST(LOWER(DATA_TYPE) AS CHAR)
           FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN ({list})"
    );
    let mut q = sqlx::query(AssertSqlSafe(sql))
        .bind(&names.database)
        .bind(&names.database);
    for b in &bare {
        q = q.bind(b);
    }
    let rows = q.fetch_all(pool).await?;
    let mut found = Found {
        database_exists: false,
        columns: Vec::with_capacity(rows.len()),
    };
    for r in rows {
        let (t, c, ty): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if t.is_empty() {
            found.database_exists = true;
        } else {
            found.columns.push((t, c, ty));
        }
    }
    Ok(found)
}

/// Tables of `tables` absent from `found`, and shape problems of the others.
fn diagnose(names: &Names, tables: &[Table], found: &Found) -> Result<Vec<Table>, SchemaError> {
    let mut missing = Vec::new();
    for t in tables {
        let bare = names.bare(*t);
        let cols: Vec<(&str, &str)> = found
            .columns
            .iter()
            .filter(|(tn, _, _)| *tn == bare)
            .map(|(_, c, ty)| (c.as_str(), ty.as_str()))
            .collect();
        if cols.is_empty() {
            missing.push(*t);
            continue;
        }
        let mut problems = Vec::new();
        for (name, types) in expected(*t) {
            match cols.iter().find(|(c, _)| *c == name) {
                None => problems.push(format!("column {name} ({}) is missing", types[0])),
                Some((_, got)) if !types.contains(got) => problems.push(format!(
                    "column {name} is {got}, expected {}",
                    types.join(" or ")
                )),
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(SchemaError::WrongShape {
                table: names.display(*t),
                detail: format!(
                    "{}; this table was not created by this version of flamingock-mysql: \
                     migrate or drop it, or configure another database / table prefix",
                    problems.join(", ")
                ),
            });
        }
    }
    Ok(missing)
}

/// Makes sure `tables` exist with the expected shape, creating missing ones
/// when `auto_create` is on. Costs one catalog query when everything exists.
pub(crate) async fn ensure(
    pool: &MySqlPool,
    names: &Names,
    tables: &[Table],
    auto_create: bool,
) -> Result<(), SchemaError> {
    let db = |operation| move |source| SchemaError::Db { operation, source };
    let found = inspect(pool, names, tables)
        .await
        .map_err(db("read the catalog"))?;
    let missing = diagnose(names, tables, &found)?;
    if missing.is_empty() {
        return Ok(());
    }
    if !auto_create {
        let list: Vec<String> = missing.iter().map(|t| names.display(*t)).collect();
        return Err(SchemaError::Missing {
            detail: format!(
                "table(s) {} do not exist and auto_create is off: create them with the script \
                 from `ddl()` (or enable auto_create):\n{}",
                list.join(", "),
                ddl(names, &missing)
            ),
        });
    }
    // One statement at a time: every DDL statement commits by itself anyway.
    let mut script = Vec::new();
    if !found.database_exists {
        script.push(format!(
            "CREATE DATABASE IF NOT EXISTS {}",
            quote_ident(&names.database)
        ));
    }
    for t in &missing {
        script.extend(
            table_ddl(names, *t)
                .split(";\n")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    let mut conn = pool.acquire().await.map_err(db("create tables"))?;
    for stmt in script {
        sqlx::raw_sql(AssertSqlSafe(stmt))
            .execute(&mut *conn)
            .await
            .map_err(db("create tables"))?;
    }
    drop(conn);
    tracing::info!(database = %names.database, prefix = %names.prefix, tables = ?missing, "created flamingock tables");
    // Another runner may have created a table of another shape meanwhile.
    let found = inspect(pool, names, tables)
        .await
        .map_err(db("read the catalog"))?;
    match diagnose(names, tables, &found)?.first() {
        None => Ok(()),
        Some(t) => Err(SchemaError::Missing {
            detail: format!(
                "table {} is still missing after creating it",
                names.display(*t)
            ),
        }),
    }
}
