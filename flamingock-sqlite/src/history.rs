//! Reading another migration tool's history table (sqlx, diesel, Flyway,
//! refinery) for [`Flamingock::import_history`](flamingock_core::Flamingock::import_history).

use flamingock_core::import::{ForeignHistory, HistoryError, Tool, ToolRow};
use sqlx::{Row, SqlitePool};

/// Reads `tool`'s history from `table` (default the tool's own, e.g.
/// `_sqlx_migrations`). `Ok(None)` when the database has no such table.
/// Only reads.
///
/// ```no_run
/// # async fn demo(pool: sqlx::SqlitePool) -> Result<(), Box<dyn std::error::Error>> {
/// use flamingock_core::import::Tool;
/// if let Some(history) = flamingock_sqlite::read_history(&pool, Tool::Diesel, None).await? {
///     println!("{} rows in {}", history.rows.len(), history.table);
/// }
/// # Ok(()) }
/// ```
pub async fn read_history(
    pool: &SqlitePool,
    tool: Tool,
    table: Option<&str>,
) -> Result<Option<ForeignHistory>, HistoryError> {
    let name = table.unwrap_or(tool.default_table());
    let fail = |source: sqlx::Error| HistoryError::Read {
        tool,
        table: name.to_owned(),
        source: Box::new(source),
    };
    let found: Option<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(fail)?;
    let Some(name) = found else {
        return Ok(None);
    };
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let sql = match tool {
        Tool::Sqlx => format!(
            "SELECT CAST(version AS TEXT), description, NULL, CAST(installed_on AS TEXT), NULL, \
             lower(hex(checksum)), success FROM {quoted} ORDER BY version"
        ),
        Tool::Diesel => format!(
            "SELECT CAST(version AS TEXT), NULL, NULL, CAST(run_on AS TEXT), NULL, NULL, NULL \
             FROM {quoted} ORDER BY version"
        ),
        Tool::Flyway => format!(
            "SELECT CAST(version AS TEXT), description, type, CAST(installed_on AS TEXT), \
             installed_by, CAST(checksum AS TEXT), success FROM {quoted} ORDER BY installed_rank"
        ),
        Tool::Refinery => format!(
            "SELECT CAST(version AS TEXT), name, NULL, CAST(applied_on AS TEXT), NULL, \
             CAST(checksum AS TEXT), NULL FROM {quoted} ORDER BY version"
        ),
        other => {
            return Err(HistoryError::BadName {
                tool: other,
                table: name,
                detail: "this tool keeps no history in SQLite".into(),
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
        row.success = r
            .try_get::<Option<i64>, _>(6)
            .map_err(fail)?
            .map(|v| v != 0);
        read.extend(tool.row(row));
    }
    Ok(Some(ForeignHistory::new(tool, name, read)))
}
