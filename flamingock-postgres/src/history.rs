//! Reading another migration tool's history table (sqlx, diesel, Flyway,
//! refinery) for [`Flamingock::import_history`](flamingock_core::Flamingock::import_history).

use flamingock_core::import::{ForeignHistory, HistoryError, Tool, ToolRow};
use sqlx::{PgPool, Row};

use crate::names::quote_ident;

/// Reads `tool`'s history from `table` (`name` or `schema.name`; default
/// the tool's own, e.g. `_sqlx_migrations`, looked up on the connection's
/// `search_path`, where the tool created it). `Ok(None)` when there is no
/// such table. Only reads.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use flamingock_core::import::Tool;
/// if let Some(history) = flamingock_postgres::read_history(&pool, Tool::Sqlx, None).await? {
///     println!("{} rows in {}", history.rows.len(), history.table);
/// }
/// # Ok(()) }
/// ```
pub async fn read_history(
    pool: &PgPool,
    tool: Tool,
    table: Option<&str>,
) -> Result<Option<ForeignHistory>, HistoryError> {
    let given = table.unwrap_or(tool.default_table());
    let fail = |source: sqlx::Error| HistoryError::Read {
        tool,
        table: given.to_owned(),
        source: Box::new(source),
    };
    let quoted = match given.split_once('.') {
        Some((schema, name)) => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        None => quote_ident(given),
    };
    let found: Option<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
    )
    .bind(&quoted)
    .fetch_optional(pool)
    .await
    .map_err(fail)?;
    let Some((schema, name)) = found else {
        return Ok(None);
    };
    let qualified = format!("{}.{}", quote_ident(&schema), quote_ident(&name));
    let sql = match tool {
        Tool::Sqlx => format!(
            "SELECT version::text, description::text, NULL::text, installed_on::text, NULL::text, \
             encode(checksum, 'hex'), success FROM {qualified} ORDER BY version"
        ),
        Tool::Diesel => format!(
            "SELECT version::text, NULL::text, NULL::text, run_on::text, NULL::text, NULL::text, \
             NULL::bool FROM {qualified} ORDER BY version"
        ),
        Tool::Flyway => format!(
            "SELECT version::text, description::text, type::text, installed_on::text, \
             installed_by::text, checksum::text, success FROM {qualified} ORDER BY installed_rank"
        ),
        Tool::Refinery => format!(
            "SELECT version::text, name::text, NULL::text, applied_on::text, NULL::text, \
             checksum::text, NULL::bool FROM {qualified} ORDER BY version"
        ),
        other => {
            return Err(HistoryError::BadName {
                tool: other,
                table: given.to_owned(),
                detail: "this tool keeps no history in PostgreSQL".into(),
            })
        }
    };
    // Names are quoted identifiers read from the catalog.
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(fail)?;
    let mut read = Vec::with_capacity(rows.len());
    for r in rows {
        let get = |i: usize| r.try_get::<Option<String>, _>(i);
        let mut row = ToolRow::new(get(0).map_err(fail)?);
        row.description = get(1).map_err(fail)?;
        row.kind = get(2).map_err(fail)?;
        row.applied_at = get(3).map_err(fail)?;
        row.applied_by = get(4).map_err(fail)?;
        row.checksum = get(5).map_err(fail)?;
        row.success = r.try_get::<Option<bool>, _>(6).map_err(fail)?;
        read.extend(tool.row(row));
    }
    Ok(Some(ForeignHistory::new(
        tool,
        format!("{schema}.{name}"),
        read,
    )))
}
