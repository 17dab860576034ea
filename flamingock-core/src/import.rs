//! Adopting another tool's history: every migration that sqlx, diesel,
//! Flyway, refinery or Mongock applied is recorded here as applied, so a
//! run applies only what that tool had not.
//!
//! A backend reads the tool's table into a [`ForeignHistory`] (e.g.
//! `flamingock_postgres::read_history`); [`Flamingock::import_history`]
//! matches its rows to the pipeline's changes and records each match as a
//! `MANUAL_MARKED_AS_APPLIED` entry whose metadata says where it came from:
//!
//! | key | value |
//! |---|---|
//! | `imported_from` | the tool (`sqlx`, `diesel`, `flyway`, `refinery`, `mongock`) |
//! | `imported_table` | the table or collection read |
//! | `foreign_version` | the row's version (or change id) |
//! | `foreign_description` | its description or name, when it has one |
//! | `foreign_applied_at` | when the tool applied it, as the tool recorded it |
//! | `foreign_applied_by` | who, when the tool records it (Flyway, Mongock) |
//! | `foreign_checksum` | the tool's checksum, when it keeps one |
//! | `checksum_matches` | whether the file's checksum, computed the tool's way, equals it (absent when either is unknown) |
//! | `reason` | why, as given |
//!
//! Rows match changes by [`ForeignKey`]: a version matches the change whose
//! order reads as the same version (numbers compared as numbers, so sqlx's
//! `20230101000000` matches order `0020230101000000` and Flyway's `1.2`
//! matches `1.02`); a change id matches the change of that id.
//!
//! Nothing is guessed. Before anything is written, the import lists every
//! row that does not fit ([`ImportMismatch`]): a migration the tool applied
//! that no change here matches, a row whose last attempt failed, a checksum
//! that differs from the file's, a row two changes match, a change already
//! recorded here in a state other than applied. Any of them refuses the
//! import ([`Error::ImportRefused`]) unless
//! [`ImportOptions::accept_mismatches`] says to record what does match and
//! leave the rest.

use std::collections::HashMap;
use std::fmt;

use tracing::info;

use crate::audit::{AuditEntry, AuditState};
use crate::decision::{decide, Decision};
use crate::error::Error;
use crate::lock::HeldLease;
use crate::pipeline::PlannedChange;
use crate::runner::{append_under, baseline_entry, release_after, Flamingock};

/// A migration tool whose history can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tool {
    /// sqlx (`_sqlx_migrations`).
    Sqlx,
    /// diesel (`__diesel_schema_migrations`).
    Diesel,
    /// Flyway (`flyway_schema_history`).
    Flyway,
    /// refinery (`refinery_schema_history`).
    Refinery,
    /// Mongock (the `mongockChangeLog` collection).
    Mongock,
}

impl Tool {
    /// Every tool.
    pub const ALL: [Tool; 5] = [
        Tool::Sqlx,
        Tool::Diesel,
        Tool::Flyway,
        Tool::Refinery,
        Tool::Mongock,
    ];

    /// The tool's name, lower case (`sqlx`).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Sqlx => "sqlx",
            Tool::Diesel => "diesel",
            Tool::Flyway => "flyway",
            Tool::Refinery => "refinery",
            Tool::Mongock => "mongock",
        }
    }

    /// The table (collection, for Mongock) the tool keeps its history in
    /// unless configured otherwise.
    pub fn default_table(self) -> &'static str {
        match self {
            Tool::Sqlx => "_sqlx_migrations",
            Tool::Diesel => "__diesel_schema_migrations",
            Tool::Flyway => "flyway_schema_history",
            Tool::Refinery => "refinery_schema_history",
            Tool::Mongock => "mongockChangeLog",
        }
    }
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tool {
    type Err = String;
    fn from_str(s: &str) -> Result<Tool, String> {
        Tool::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown tool '{s}': expected one of {}",
                    Tool::ALL.map(Tool::name).join(", ")
                )
            })
    }
}

/// How a row of another tool's history names its migration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForeignKey {
    /// A version: matches the change whose order reads as the same version
    /// (parts split at `.`, `-` removed, each compared as a number, trailing
    /// zero parts ignored, so Flyway's `1` is `1.0`; text that is not a
    /// number compares as text).
    Version(String),
    /// A change id (Mongock's `changeId`): matches the change of that id.
    ChangeId(String),
}

impl ForeignKey {
    /// The version or id, as the tool wrote it.
    pub fn as_str(&self) -> &str {
        match self {
            ForeignKey::Version(v) | ForeignKey::ChangeId(v) => v,
        }
    }
}

impl fmt::Display for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForeignKey::Version(v) => write!(f, "version {v}"),
            ForeignKey::ChangeId(id) => write!(f, "change {id}"),
        }
    }
}

/// A version's numeric parts without trailing zeros (`1.02.0` → `[1, 2]`);
/// `None` when a part is not a number.
fn version_parts(v: &str) -> Option<Vec<u64>> {
    let mut parts = v
        .split('.')
        .map(|p| {
            let digits: String = p.chars().filter(|c| *c != '-').collect();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let trimmed = digits.trim_start_matches('0');
            if trimmed.len() > 19 {
                return None;
            }
            Some(trimmed.parse::<u64>().unwrap_or(0))
        })
        .collect::<Option<Vec<u64>>>()?;
    while parts.len() > 1 && parts.last() == Some(&0) {
        parts.pop();
    }
    Some(parts)
}

/// Where a tool's last word on a migration leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForeignState {
    /// Applied successfully.
    Applied,
    /// The last attempt failed (sqlx and Flyway `success = false`, Mongock
    /// `FAILED`): its effects may be partly in place.
    Failed,
    /// Applied, then undone (Flyway's undo, Mongock's rollback): not in place.
    Undone,
    /// Flyway's baseline row: every version up to and including this one
    /// counts as applied.
    Baseline,
    /// A row the import does not act on (a Flyway schema-creation or
    /// deletion marker, a Mongock `IGNORED` entry).
    Other,
}

/// One row of another tool's history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForeignRow {
    /// The migration it names.
    pub key: ForeignKey,
    /// Its state.
    pub state: ForeignState,
    /// Its description or name, when the tool keeps one.
    pub description: Option<String>,
    /// When the tool applied it, as the tool recorded it.
    pub applied_at: Option<String>,
    /// Who applied it, when the tool records it.
    pub applied_by: Option<String>,
    /// The tool's checksum of the migration, as text, when it keeps one.
    pub checksum: Option<String>,
}

impl ForeignRow {
    /// A row naming `key` in `state`; fill the rest with the `with_` methods.
    pub fn new(key: ForeignKey, state: ForeignState) -> ForeignRow {
        ForeignRow {
            key,
            state,
            description: None,
            applied_at: None,
            applied_by: None,
            checksum: None,
        }
    }

    /// With a description.
    pub fn with_description(mut self, d: Option<String>) -> Self {
        self.description = d;
        self
    }

    /// With when it was applied.
    pub fn with_applied_at(mut self, at: Option<String>) -> Self {
        self.applied_at = at;
        self
    }

    /// With who applied it.
    pub fn with_applied_by(mut self, by: Option<String>) -> Self {
        self.applied_by = by;
        self
    }

    /// With the tool's checksum.
    pub fn with_checksum(mut self, sum: Option<String>) -> Self {
        self.checksum = sum;
        self
    }
}

/// Reading another tool's history failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// The database refused or failed the read.
    #[error("{tool} history {table}: reading it failed")]
    Read {
        /// The tool.
        tool: Tool,
        /// The table or collection.
        table: String,
        /// The driver's error.
        #[source]
        source: crate::error::BoxError,
    },
    /// A table or collection name that cannot be one.
    #[error("{tool} history: '{table}' is not a table name: {detail}")]
    BadName {
        /// The tool.
        tool: Tool,
        /// The name given.
        table: String,
        /// Why.
        detail: String,
    },
}

/// One row of a tool's table as a backend reads it, every column as text
/// (`None` where the tool has no such column or the value is NULL); the
/// tool's own rules turn it into a [`ForeignRow`] ([`Tool::row`]), so each
/// backend only selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ToolRow {
    /// sqlx, diesel, refinery, Flyway: `version`; Mongock: `changeId`.
    pub version: Option<String>,
    /// sqlx, Flyway: `description`; refinery: `name`.
    pub description: Option<String>,
    /// Flyway: `type`; Mongock: `state`.
    pub kind: Option<String>,
    /// sqlx, Flyway: `installed_on`; diesel: `run_on`; refinery:
    /// `applied_on`; Mongock: `timestamp`.
    pub applied_at: Option<String>,
    /// Flyway: `installed_by`; Mongock: `author` on `executionHostname`.
    pub applied_by: Option<String>,
    /// sqlx: `checksum` in lower-case hex; Flyway, refinery: `checksum`.
    pub checksum: Option<String>,
    /// sqlx, Flyway: `success`.
    pub success: Option<bool>,
}

impl ToolRow {
    /// A row naming `version` (or Mongock's change id).
    pub fn new(version: Option<String>) -> ToolRow {
        ToolRow {
            version,
            ..ToolRow::default()
        }
    }
}

impl Tool {
    /// A row of this tool's table as the tool reads it; `None` for a row
    /// that names no migration (Flyway's repeatable and schema rows, which
    /// have no version).
    ///
    /// | tool | applied | failed | undone | other |
    /// |---|---|---|---|---|
    /// | sqlx | `success` | `success = false` | | |
    /// | diesel, refinery | every row | | | |
    /// | Flyway | `success`, any type but those on the right | `success = false` | `UNDO_*`, `DELETE` (written by `repair`) | `*BASELINE` (covers every version up to it), `SCHEMA` |
    /// | Mongock | `EXECUTED`, no state | `FAILED`, `ROLLBACK_FAILED` (after an `EXECUTED` entry: still applied) | `ROLLED_BACK` | `IGNORED` |
    pub fn row(self, r: ToolRow) -> Option<ForeignRow> {
        let version = r.version?;
        let success = r.success.unwrap_or(true);
        let (key, state) = match self {
            Tool::Sqlx | Tool::Diesel | Tool::Refinery => (
                ForeignKey::Version(version),
                if success {
                    ForeignState::Applied
                } else {
                    ForeignState::Failed
                },
            ),
            Tool::Flyway => {
                let kind = r.kind.as_deref().unwrap_or("SQL").to_ascii_uppercase();
                let state = match (kind.as_str(), success) {
                    ("SCHEMA", _) => ForeignState::Other,
                    // `repair` cancels an earlier row with a DELETE row.
                    ("DELETE", _) => ForeignState::Undone,
                    (_, false) => ForeignState::Failed,
                    (k, true) if k.ends_with("BASELINE") => ForeignState::Baseline,
                    (k, true) if k.starts_with("UNDO") => ForeignState::Undone,
                    (_, true) => ForeignState::Applied,
                };
                (ForeignKey::Version(version), state)
            }
            Tool::Mongock => {
                // Mongock counts an entry without state as executed.
                let state = match r.kind.as_deref().unwrap_or("EXECUTED") {
                    "EXECUTED" => ForeignState::Applied,
                    "FAILED" | "ROLLBACK_FAILED" => ForeignState::Failed,
                    "ROLLED_BACK" => ForeignState::Undone,
                    _ => ForeignState::Other,
                };
                (ForeignKey::ChangeId(version), state)
            }
        };
        Some(ForeignRow {
            key,
            state,
            description: r.description,
            applied_at: r.applied_at,
            applied_by: r.applied_by,
            checksum: r.checksum,
        })
    }
}

/// Another tool's history, as a backend read it: its rows in the order the
/// tool wrote them (a later row about the same migration wins).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForeignHistory {
    /// The tool.
    pub tool: Tool,
    /// The table or collection read (schema-qualified where it has one).
    pub table: String,
    /// The rows, oldest first.
    pub rows: Vec<ForeignRow>,
}

impl ForeignHistory {
    /// A history of `tool` read from `table`.
    pub fn new(tool: Tool, table: impl Into<String>, rows: Vec<ForeignRow>) -> ForeignHistory {
        ForeignHistory {
            tool,
            table: table.into(),
            rows,
        }
    }
}

/// How [`Flamingock::import_history`] runs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ImportOptions {
    /// Why (recorded in each entry).
    pub reason: String,
    /// Record what matches and leave the mismatches (each still reported)
    /// instead of refusing.
    pub accept_mismatches: bool,
    /// By change id: the file's checksum computed the tool's way, compared
    /// with the tool's own (the SQL layouts compute it; code-declared
    /// changes have none). More than one when builds of the tool compute it
    /// differently (refinery with 32- or 64-bit versions): any of them matches.
    pub file_checksums: HashMap<String, Vec<String>>,
}

impl ImportOptions {
    /// Options with `reason`.
    pub fn new(reason: impl Into<String>) -> ImportOptions {
        ImportOptions {
            reason: reason.into(),
            ..ImportOptions::default()
        }
    }

    /// See [`ImportOptions::accept_mismatches`].
    pub fn accept_mismatches(mut self, yes: bool) -> Self {
        self.accept_mismatches = yes;
        self
    }

    /// See [`ImportOptions::file_checksums`]: adds one checksum per change.
    pub fn file_checksums(
        mut self,
        sums: impl IntoIterator<Item = (impl Into<String>, impl Into<String>)>,
    ) -> Self {
        for (id, sum) in sums {
            self.file_checksums
                .entry(id.into())
                .or_default()
                .push(sum.into());
        }
        self
    }
}

/// A row of another tool's history that does not fit the changes here.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImportMismatch {
    /// The tool applied a migration no change here matches (a file
    /// removed, renamed, or not in this directory).
    NoChange {
        /// The row's version or id.
        key: ForeignKey,
        /// Its description.
        description: Option<String>,
    },
    /// The tool's last attempt at it failed: its effects may be partly in place.
    Failed {
        /// The row's version or id.
        key: ForeignKey,
        /// The change it matches, if any.
        change_id: Option<String>,
    },
    /// The file's checksum, computed the tool's way, differs from the one
    /// the tool recorded: the file changed after the tool applied it.
    ChecksumDiffers {
        /// The change.
        change_id: String,
        /// The tool's checksum.
        theirs: String,
        /// The file's.
        ours: String,
    },
    /// More than one change matches the row.
    Ambiguous {
        /// The row's version or id.
        key: ForeignKey,
        /// The changes it matches.
        change_ids: Vec<String>,
    },
    /// The change has an entry here already, in a state that says it is
    /// not in place, while the tool says it is.
    Recorded {
        /// The change.
        change_id: String,
        /// Its state here.
        state: AuditState,
    },
}

impl fmt::Display for ImportMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportMismatch::NoChange { key, description } => {
                write!(f, "{key}")?;
                if let Some(d) = description {
                    write!(f, " ({d})")?;
                }
                write!(
                    f,
                    ": applied by the tool, but no change here matches it \
                     (restore its file, or accept that it is not imported)"
                )
            }
            ImportMismatch::Failed { key, change_id } => {
                write!(f, "{key}")?;
                if let Some(c) = change_id {
                    write!(f, " (change {c})")?;
                }
                write!(
                    f,
                    ": the tool's last attempt failed, so its effects may be partly in place \
                     (check the database, then repair it with the tool or resolve it here \
                     with `audit fix --baseline` once imported)"
                )
            }
            ImportMismatch::ChecksumDiffers {
                change_id,
                theirs,
                ours,
            } => write!(
                f,
                "change {change_id}: the file changed after the tool applied it (the tool \
                 recorded checksum {theirs}, the file has {ours}); restore the file, or \
                 accept the difference"
            ),
            ImportMismatch::Ambiguous { key, change_ids } => write!(
                f,
                "{key}: matches {} changes ({}); give each a distinct version",
                change_ids.len(),
                change_ids.join(", ")
            ),
            ImportMismatch::Recorded { change_id, state } => write!(
                f,
                "change {change_id}: recorded here as {state}, while the tool says it is \
                 applied; resolve it with `audit fix`"
            ),
        }
    }
}

/// What an import found and did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ImportReport {
    /// The tool.
    pub tool: Tool,
    /// The table or collection read.
    pub table: String,
    /// The rows read.
    pub rows: usize,
    /// The entries written (for a preview: that would be written).
    pub imported: Vec<AuditEntry>,
    /// Changes the tool applied that are recorded as applied here already
    /// (imported before, or applied here).
    pub already: Vec<String>,
    /// Changes the tool has not applied: a run applies them.
    pub not_applied: Vec<String>,
    /// What does not fit; with [`ImportOptions::accept_mismatches`], left as it is.
    pub mismatches: Vec<ImportMismatch>,
}

/// The plan of an import: what to write and what does not fit.
struct Matched<'a> {
    write: Vec<(&'a PlannedChange, &'a ForeignRow, Option<bool>)>,
    already: Vec<String>,
    not_applied: Vec<String>,
    mismatches: Vec<ImportMismatch>,
}

fn match_rows<'a>(
    history: &'a ForeignHistory,
    changes: &'a [PlannedChange],
    snapshot: &[AuditEntry],
    opts: &ImportOptions,
) -> Matched<'a> {
    let latest: HashMap<&str, &AuditEntry> =
        snapshot.iter().map(|e| (e.change_id.as_str(), e)).collect();
    // The tool's last word on each migration: rows the import does not act
    // on say nothing, and a failure after a success leaves the success
    // (Mongock retries a change without undoing it).
    let mut last: Vec<&ForeignRow> = Vec::new();
    let mut at: HashMap<&ForeignKey, usize> = HashMap::new();
    for row in history
        .rows
        .iter()
        .filter(|r| r.state != ForeignState::Other)
    {
        match at.get(&row.key) {
            Some(&i) => {
                let applied = matches!(
                    last[i].state,
                    ForeignState::Applied | ForeignState::Baseline
                );
                if !(applied && row.state == ForeignState::Failed) {
                    last[i] = row;
                }
            }
            None => {
                at.insert(&row.key, last.len());
                last.push(row);
            }
        }
    }
    let mut m = Matched {
        write: Vec::new(),
        already: Vec::new(),
        not_applied: Vec::new(),
        mismatches: Vec::new(),
    };
    // Which changes each key names, found through an index built once
    // (histories and pipelines of thousands stay linear).
    let index = ChangeIndex::new(changes);
    let hits: Vec<Vec<usize>> = last.iter().map(|r| index.hits(&r.key)).collect();
    // Changes with a row of their own, which a baseline row does not cover.
    let mut own = vec![false; changes.len()];
    for (row, hit) in last.iter().zip(&hits) {
        if row.state != ForeignState::Baseline {
            for i in hit {
                own[*i] = true;
            }
        }
    }
    // Per change, the row that says it is in place.
    let mut applied_by_row: Vec<Option<&ForeignRow>> = vec![None; changes.len()];
    for (row, hits) in last.iter().zip(&hits) {
        match (row.state, hits.as_slice()) {
            (ForeignState::Undone | ForeignState::Other, _) => {}
            (ForeignState::Baseline, _) => {
                // Every change up to the baseline's version counts as applied
                // unless a row of its own says otherwise.
                for (i, c) in changes.iter().enumerate() {
                    if !own[i] && version_at_most(&c.meta.order, row.key.as_str()) {
                        applied_by_row[i] = Some(row);
                    }
                }
            }
            (ForeignState::Failed, hits) => m.mismatches.push(ImportMismatch::Failed {
                key: row.key.clone(),
                change_id: hits.first().map(|i| changes[*i].id.to_string()),
            }),
            (ForeignState::Applied, []) => m.mismatches.push(ImportMismatch::NoChange {
                key: row.key.clone(),
                description: row.description.clone(),
            }),
            (ForeignState::Applied, [one]) => applied_by_row[*one] = Some(row),
            (ForeignState::Applied, many) => m.mismatches.push(ImportMismatch::Ambiguous {
                key: row.key.clone(),
                change_ids: many.iter().map(|i| changes[*i].id.to_string()).collect(),
            }),
        }
    }
    for (c, row) in changes.iter().zip(applied_by_row) {
        let Some(row) = row else {
            let here = latest.get(&*c.id).map(|e| decide(Some(e), c.meta.recovery));
            if here != Some(Decision::Skip) {
                m.not_applied.push(c.id.to_string());
            }
            continue;
        };
        if let Some(e) = latest.get(&*c.id) {
            if decide(Some(e), c.meta.recovery) == Decision::Skip {
                m.already.push(c.id.to_string());
            } else {
                m.mismatches.push(ImportMismatch::Recorded {
                    change_id: c.id.to_string(),
                    state: e.state,
                });
            }
            continue;
        }
        let ours = opts
            .file_checksums
            .get(&*c.id)
            .filter(|sums| !sums.is_empty());
        let matches = match (&row.checksum, ours) {
            (Some(theirs), Some(ours)) if row.state == ForeignState::Applied => {
                Some(ours.contains(theirs))
            }
            _ => None,
        };
        if let (Some(false), Some(theirs), Some(ours)) = (matches, &row.checksum, ours) {
            m.mismatches.push(ImportMismatch::ChecksumDiffers {
                change_id: c.id.to_string(),
                theirs: theirs.clone(),
                ours: ours[0].clone(),
            });
            if !opts.accept_mismatches {
                continue;
            }
        }
        m.write.push((c, row, matches));
    }
    m
}

/// A version as compared: its numeric parts, or its text when it has none.
#[derive(Debug, PartialEq, Eq, Hash)]
enum VersionKey {
    Parts(Vec<u64>),
    Text(String),
}

impl VersionKey {
    fn of(v: &str) -> VersionKey {
        version_parts(v).map_or_else(|| VersionKey::Text(v.to_owned()), VersionKey::Parts)
    }
}

/// The pipeline's changes by the keys a history names them with.
struct ChangeIndex<'a> {
    by_version: HashMap<VersionKey, Vec<usize>>,
    by_id: HashMap<&'a str, usize>,
}

impl<'a> ChangeIndex<'a> {
    fn new(changes: &'a [PlannedChange]) -> Self {
        let mut by_version: HashMap<VersionKey, Vec<usize>> = HashMap::new();
        let mut by_id = HashMap::with_capacity(changes.len());
        for (i, c) in changes.iter().enumerate() {
            by_version
                .entry(VersionKey::of(&c.meta.order))
                .or_default()
                .push(i);
            by_id.insert(&*c.id, i);
        }
        ChangeIndex { by_version, by_id }
    }

    /// The changes `key` names ([`ForeignKey`]'s rules).
    fn hits(&self, key: &ForeignKey) -> Vec<usize> {
        match key {
            ForeignKey::Version(v) => self
                .by_version
                .get(&VersionKey::of(v))
                .cloned()
                .unwrap_or_default(),
            ForeignKey::ChangeId(id) => self.by_id.get(id.as_str()).copied().into_iter().collect(),
        }
    }
}

/// Whether `order` reads as a version at most `limit`.
fn version_at_most(order: &str, limit: &str) -> bool {
    match (version_parts(order), version_parts(limit)) {
        (Some(a), Some(b)) => a <= b,
        _ => false,
    }
}

impl Flamingock {
    /// Records every migration another tool applied (its history, read by a
    /// backend, e.g. `flamingock_postgres::read_history`) as applied here,
    /// so that a run applies only what the tool had not. See the
    /// [module docs](crate::import) for how rows match changes and what
    /// each entry records.
    ///
    /// Refused ([`Error::ImportRefused`]), before anything is written, when
    /// any row does not fit, unless [`ImportOptions::accept_mismatches`].
    /// Idempotent: changes recorded as applied already are left as they
    /// are, and when nothing is left to record the lock is never taken.
    /// Otherwise takes the lock and matches again under it.
    ///
    /// ```
    /// # use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
    /// # use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
    /// use flamingock_core::import::{ForeignHistory, ForeignKey, ForeignRow, ForeignState, ImportOptions, Tool};
    /// # struct Step(&'static str, &'static str);
    /// # impl Change for Step {
    /// #     type Target = InMemoryTarget;
    /// #     fn meta(&self) -> ChangeMeta { ChangeMeta::new(self.0).order(self.1) }
    /// #     async fn apply(&self, tx: &mut KvTx) -> ChangeResult { tx.put(self.0, "v"); Ok(()) }
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flamingock_core::Error> {
    /// let runner = Flamingock::builder()
    ///     .audit_store(InMemoryAuditStore::new())
    ///     .target(InMemoryTarget::new("db"))
    ///     .stage(Stage::new("init")
    ///         .change(Step("20240101000000_create_users", "20240101000000"))
    ///         .change(Step("20240201000000_add_index", "20240201000000")))
    ///     .build()?;
    /// // What sqlx's `_sqlx_migrations` says (a backend reads it).
    /// let applied = ForeignRow::new(ForeignKey::Version("20240101000000".into()), ForeignState::Applied);
    /// let history = ForeignHistory::new(Tool::Sqlx, "_sqlx_migrations", vec![applied]);
    /// let report = runner.import_history(&history, &ImportOptions::new("moving from sqlx")).await?;
    /// assert_eq!(report.imported.len(), 1);
    /// assert_eq!(runner.run().await?.applied(), ["20240201000000_add_index"]);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn import_history(
        &self,
        history: &ForeignHistory,
        opts: &ImportOptions,
    ) -> Result<ImportReport, Error> {
        let snapshot = self.inner.store.snapshot().await?;
        let seen = match_rows(history, &self.inner.changes, &snapshot, opts);
        if !seen.mismatches.is_empty() && !opts.accept_mismatches {
            return Err(refused(history, &seen.mismatches));
        }
        if seen.write.is_empty() {
            return Ok(self.import_report(history, seen, Vec::new()));
        }
        self.prepare().await?;
        let lease = self.operator_lease().await?;
        let result = self.import_locked(history, opts, &lease).await;
        release_after(lease, result).await
    }

    /// What [`import_history`](Self::import_history) would record and
    /// report, without writing anything or taking the lock (the entries in
    /// [`ImportReport::imported`] are the ones it would write). Never
    /// refuses: the mismatches are in the report.
    pub async fn import_preview(
        &self,
        history: &ForeignHistory,
        opts: &ImportOptions,
    ) -> Result<ImportReport, Error> {
        let snapshot = self.inner.store.snapshot().await?;
        let seen = match_rows(history, &self.inner.changes, &snapshot, opts);
        let entries = seen
            .write
            .iter()
            .map(|(c, row, matches)| self.import_entry(history, c, row, *matches, 0, opts))
            .collect();
        Ok(self.import_report(history, seen, entries))
    }

    async fn import_locked(
        &self,
        history: &ForeignHistory,
        opts: &ImportOptions,
        lease: &HeldLease,
    ) -> Result<ImportReport, Error> {
        let store = &*self.inner.store;
        let epoch = store.claim_fence().await?;
        // Again under the lock: another runner may have moved meanwhile.
        let snapshot = store.snapshot().await?;
        let seen = match_rows(history, &self.inner.changes, &snapshot, opts);
        if !seen.mismatches.is_empty() && !opts.accept_mismatches {
            return Err(refused(history, &seen.mismatches));
        }
        let mut written = Vec::with_capacity(seen.write.len());
        for (c, row, matches) in &seen.write {
            let entry = self.import_entry(history, c, row, *matches, epoch, opts);
            append_under(lease, store, &entry).await?;
            written.push(entry);
        }
        info!(
            tool = %history.tool,
            table = %history.table,
            imported = written.len(),
            "history imported"
        );
        Ok(self.import_report(history, seen, written))
    }

    fn import_entry(
        &self,
        history: &ForeignHistory,
        c: &PlannedChange,
        row: &ForeignRow,
        matches: Option<bool>,
        epoch: u64,
        opts: &ImportOptions,
    ) -> AuditEntry {
        let mut entry = baseline_entry(c);
        let mut extra = serde_json::Map::new();
        extra.insert("imported_from".into(), history.tool.name().into());
        extra.insert("imported_table".into(), history.table.clone().into());
        extra.insert("foreign_version".into(), row.key.as_str().into());
        if row.state == ForeignState::Baseline {
            extra.insert("foreign_baseline".into(), true.into());
        }
        let optional = [
            ("foreign_description", &row.description),
            ("foreign_applied_at", &row.applied_at),
            ("foreign_applied_by", &row.applied_by),
            ("foreign_checksum", &row.checksum),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                extra.insert(key.into(), v.clone().into());
            }
        }
        if let Some(m) = matches {
            extra.insert("checksum_matches".into(), m.into());
        }
        self.stamp_operator_entry(
            &mut entry,
            AuditState::ManualMarkedAsApplied,
            epoch,
            &opts.reason,
            None,
            extra,
        );
        entry
    }

    fn import_report(
        &self,
        history: &ForeignHistory,
        seen: Matched<'_>,
        imported: Vec<AuditEntry>,
    ) -> ImportReport {
        ImportReport {
            tool: history.tool,
            table: history.table.clone(),
            rows: history.rows.len(),
            imported,
            already: seen.already,
            not_applied: seen.not_applied,
            mismatches: seen.mismatches,
        }
    }
}

fn refused(history: &ForeignHistory, mismatches: &[ImportMismatch]) -> Error {
    Error::ImportRefused {
        tool: history.tool.name(),
        table: history.table.clone(),
        mismatches: mismatches.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_version(a: &str, b: &str) -> bool {
        VersionKey::of(a) == VersionKey::of(b)
    }

    #[test]
    fn versions_compare_as_numbers() {
        assert!(same_version("20230101000000", "0020230101000000"));
        assert!(same_version("1.2", "1.02"));
        assert!(same_version("1", "1.0"));
        assert!(same_version("20240306170000", "2024-03-06-170000"));
        assert!(!same_version("1.2", "1.20"));
        assert!(!same_version("12", "1.2"));
        assert!(same_version("abc", "abc"));
        assert!(version_at_most("1.01", "1.1"));
        assert!(!version_at_most("1.02", "1.1"));
        assert_eq!("Flyway".parse::<Tool>(), Ok(Tool::Flyway));
        assert!("liquibase".parse::<Tool>().is_err());
    }
}
