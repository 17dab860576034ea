//! Reading Mongock's change log (`mongockChangeLog`) for
//! [`Flamingock::import_history`](flamingock_core::Flamingock::import_history).

use flamingock_core::import::{ForeignHistory, HistoryError, Tool, ToolRow};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::Database;

/// Reads Mongock's change log from `collection` of `db` (default
/// `mongockChangeLog`), oldest entry first. Mongock's own system changes
/// (`systemChange: true`) are left out; an entry's `changeId` is matched
/// to the change of that id. `Ok(None)` when there is no such collection.
/// Only reads.
///
/// ```no_run
/// # async fn demo(db: mongodb::Database) -> Result<(), Box<dyn std::error::Error>> {
/// if let Some(history) = flamingock_mongodb::read_mongock(&db, None).await? {
///     println!("{} entries in {}", history.rows.len(), history.table);
/// }
/// # Ok(()) }
/// ```
pub async fn read_mongock(
    db: &Database,
    collection: Option<&str>,
) -> Result<Option<ForeignHistory>, HistoryError> {
    let name = collection.unwrap_or(Tool::Mongock.default_table());
    let fail = |source: mongodb::error::Error| HistoryError::Read {
        tool: Tool::Mongock,
        table: name.to_owned(),
        source: Box::new(source),
    };
    let found = db.list_collection_names().await.map_err(fail)?;
    if !found.iter().any(|c| c == name) {
        return Ok(None);
    }
    let docs: Vec<Document> = db
        .collection::<Document>(name)
        .find(doc! {})
        .sort(doc! { "timestamp": 1, "_id": 1 })
        .await
        .map_err(fail)?
        .try_collect()
        .await
        .map_err(fail)?;
    let text = |d: &Document, key: &str| match d.get(key) {
        Some(Bson::String(s)) => Some(s.clone()),
        Some(Bson::DateTime(t)) => {
            Some(t.try_to_rfc3339_string().unwrap_or_else(|_| t.to_string()))
        }
        Some(Bson::Null) | None => None,
        Some(other) => Some(other.to_string()),
    };
    let mut rows = Vec::with_capacity(docs.len());
    for d in &docs {
        if d.get_bool("systemChange").unwrap_or(false) {
            continue;
        }
        let mut row = ToolRow::new(text(d, "changeId"));
        row.kind = text(d, "state");
        row.applied_at = text(d, "timestamp");
        row.applied_by = match (text(d, "author"), text(d, "executionHostname")) {
            (Some(a), Some(h)) => Some(format!("{a} on {h}")),
            (a, h) => a.or(h),
        };
        rows.extend(Tool::Mongock.row(row));
    }
    Ok(Some(ForeignHistory::new(Tool::Mongock, name, rows)))
}
