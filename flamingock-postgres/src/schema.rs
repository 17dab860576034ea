//! Our tables: their DDL, the check that existing tables have the expected
//! shape, and their idempotent creation, safe under concurrent runners.

use sqlx::{AssertSqlSafe, PgPool, Row};

use crate::names::{quote_ident, Names, Table};

/// Key of the transaction-scoped advisory lock that serialises our DDL:
/// `CREATE ... IF NOT EXISTS` is not safe against concurrent creators (two
/// sessions can both pass the existence check and one then fails on the
/// catalog's unique index). One key for the whole database also covers
/// `CREATE SCHEMA` races between different prefixes.
const DDL_LOCK_KEY: i64 = 0x464c_414d_494e_474f; // "FLAMINGO"

/// Expected columns (name, `format_type` output) of each table. Extra
/// columns are tolerated; missing ones or other types are reported.
fn expected(t: Table) -> Vec<(&'static str, &'static str)> {
    const ENTRY: &[(&str, &str)] = &[
        ("run_id", "text"),
        ("stage_id", "text"),
        ("change_id", "text"),
        ("author", "text"),
        ("change_order", "text"),
        ("target_system", "text"),
        ("state", "text"),
        ("state_rank", "smallint"),
        ("created_at", "timestamp with time zone"),
        ("duration_ms", "bigint"),
        ("hostname", "text"),
        ("runner_id", "text"),
        ("error_message", "text"),
        ("error_chain", "text[]"),
        ("metadata", "jsonb"),
        ("tx_strategy", "text"),
        ("recovery", "text"),
        ("transactional", "boolean"),
        ("fencing_token", "bigint"),
        ("checksum", "text"),
    ];
    match t {
        Table::History => [&[("id", "bigint")], ENTRY].concat(),
        Table::Current => [
            &[("history_id", "bigint")],
            ENTRY,
            &[("applied_term", "bigint"), ("prev_term", "bigint")],
        ]
        .concat(),
        Table::Fence => vec![
            ("id", "smallint"),
            ("fence", "bigint"),
            ("summary_rows", "bigint"),
            ("summary_applied", "bigint"),
            ("summary_digest", "bigint"),
        ],
        Table::Lock => vec![
            ("name", "text"),
            ("owner", "text"),
            ("token", "bigint"),
            ("expires_at", "timestamp with time zone"),
        ],
        Table::Marker => vec![
            ("change_id", "text"),
            ("run_id", "text"),
            ("token", "bigint"),
            ("created_at", "timestamp with time zone"),
        ],
    }
}

const ENTRY_COLUMNS_DDL: &str = "run_id text NOT NULL,
    stage_id text NOT NULL,
    author text NOT NULL,
    change_order text NOT NULL,
    target_system text NOT NULL,
    state text NOT NULL,
    state_rank smallint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_ms bigint NOT NULL,
    hostname text NOT NULL,
    runner_id text NOT NULL,
    error_message text,
    error_chain text[],
    metadata jsonb NOT NULL DEFAULT 'null',
    tx_strategy text NOT NULL,
    recovery text NOT NULL,
    transactional boolean NOT NULL,
    fencing_token bigint NOT NULL,
    checksum text";

/// `CREATE ... IF NOT EXISTS` statements for `t` (without the lock or schema).
pub(crate) fn table_ddl(names: &Names, t: Table) -> String {
    let q = names.qualified(t);
    match t {
        Table::History => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    id bigserial PRIMARY KEY,\n    change_id text NOT NULL,\n    {ENTRY_COLUMNS_DDL}\n);\n\
             CREATE INDEX IF NOT EXISTS {idx} ON {q} (change_id, created_at);\n",
            idx = quote_ident(&format!("{}_change_idx", names.bare(t)))
        ),
        // applied_term: the row's summary term (flamingock_core::summary), 0
        // when its state does not count as applied; prev_term: the value it
        // replaced (NULL after an insert), returned to the summary update.
        Table::Current => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    change_id text PRIMARY KEY,\n    history_id bigint NOT NULL,\n    {ENTRY_COLUMNS_DDL},\n    applied_term bigint NOT NULL DEFAULT 0,\n    prev_term bigint\n);\n"
        ),
        // The fence row also holds the applied-set summary (summary_rows,
        // summary_applied, summary_digest), kept by every append in the same statement. NULL means
        // unknown (a fence row made again over existing entries): the
        // runner then reads the snapshot.
        Table::Fence => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    id smallint PRIMARY KEY CHECK (id = 1),\n    fence bigint NOT NULL,\n    summary_rows bigint,\n    summary_applied bigint,\n    summary_digest bigint\n);\n\
             INSERT INTO {q} (id, fence, summary_rows, summary_applied, summary_digest)\n\
             SELECT 1, 0, z, z, z FROM (SELECT CASE WHEN EXISTS (SELECT 1 FROM {current}) THEN NULL ELSE 0 END AS z) s\n\
             ON CONFLICT (id) DO NOTHING;\n",
            current = names.qualified(Table::Current)
        ),
        Table::Lock => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    name text PRIMARY KEY,\n    owner text,\n    token bigint NOT NULL,\n    expires_at timestamptz NOT NULL\n);\n"
        ),
        Table::Marker => format!(
            "CREATE TABLE IF NOT EXISTS {q} (\n    change_id text PRIMARY KEY,\n    run_id text NOT NULL,\n    token bigint NOT NULL,\n    created_at timestamptz NOT NULL DEFAULT clock_timestamp()\n);\n"
        ),
    }
}

/// The whole script that creates `tables` (what `auto_create` runs).
pub(crate) fn ddl(names: &Names, tables: &[Table]) -> String {
    let mut s = format!(
        "CREATE SCHEMA IF NOT EXISTS {};\n",
        quote_ident(&names.schema)
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
pub(crate) struct Found {
    schema_exists: bool,
    columns: Vec<(String, String, String)>, // (table, column, type)
}

/// Reads what exists of `tables`, in one round trip.
pub(crate) async fn inspect(
    pool: &PgPool,
    pooler: bool,
    names: &Names,
    tables: &[Table],
) -> Result<Found, sqlx::Error> {
    let bare: Vec<String> = tables.iter().map(|t| names.bare(*t)).collect();
    // A sentinel row (empty table name) says whether the schema exists;
    // then every column of the tables we look for.
    let rows = sqlx::query(
        "SELECT '' AS t, 'schema' AS c, '' AS ty FROM pg_catalog.pg_namespace WHERE nspname = $1
         UNION ALL
         SELECT c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod)
           FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
          WHERE n.nspname = $1 AND c.relname = ANY($2) AND c.relkind IN ('r', 'p')",
    )
    .persistent(!pooler)
    .bind(&names.schema)
    .bind(&bare);
    let mut conn = crate::space::conn(pool, pooler).await?;
    let rows = rows.fetch_all(&mut *conn).await?;
    conn.finish().await?;
    let mut found = Found {
        schema_exists: false,
        columns: Vec::with_capacity(rows.len()),
    };
    for r in rows {
        let (t, c, ty): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if t.is_empty() {
            found.schema_exists = true;
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
        for (name, ty) in expected(*t) {
            match cols.iter().find(|(c, _)| *c == name) {
                None => problems.push(format!("column {name} ({ty}) is missing")),
                Some((_, got)) if *got != ty => {
                    problems.push(format!("column {name} is {got}, expected {ty}"))
                }
                Some(_) => {}
            }
        }
        if !problems.is_empty() {
            return Err(SchemaError::WrongShape {
                table: names.display(*t),
                detail: format!(
                    "{}; this table was not created by this version of flamingock-postgres: \
                     migrate or drop it, or configure another schema / table prefix",
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
    pool: &PgPool,
    pooler: bool,
    names: &Names,
    tables: &[Table],
    auto_create: bool,
) -> Result<(), SchemaError> {
    let db = |operation| move |source| SchemaError::Db { operation, source };
    let found = inspect(pool, pooler, names, tables)
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
    // One round trip: a multi-statement simple query runs as one implicit
    // transaction, so the advisory lock is held until every statement is done.
    let mut script = format!("SELECT pg_advisory_xact_lock({DDL_LOCK_KEY});\n");
    if !found.schema_exists {
        script.push_str(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n",
            quote_ident(&names.schema)
        ));
    }
    for t in &missing {
        script.push_str(&table_ddl(names, *t));
    }
    sqlx::raw_sql(AssertSqlSafe(script))
        .execute(pool)
        .await
        .map_err(db("create tables"))?;
    tracing::info!(schema = %names.schema, prefix = %names.prefix, tables = ?missing, "created flamingock tables");
    // Another runner may have created a table of another shape meanwhile.
    let found = inspect(pool, pooler, names, tables)
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
