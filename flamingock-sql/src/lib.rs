//! File-based changes: a directory of plain SQL files, each one a change.
//!
//! ```text
//! changes/
//!   0001__create-users.sql
//!   0002__seed-admin.sql
//!   0002__seed-admin.rollback.sql      (optional, used when a non-transactional change fails)
//!   0003__index-users-email.sql
//! ```
//!
//! * The name is `<order>__<id>.sql`: the change id is `<id>`, it runs in
//!   lexicographic order of `<order>` (zero-pad numbers: `0002` sorts before
//!   `0010`, `2` does not, and mixing widths is refused; so are orders
//!   such as `1_2` and `1_10`, whose numeric parts would run in another
//!   order than their text).
//! * An optional first line configures the change:
//!   `-- flamingock: author=ana transactional=false recovery=always-retry description="..."`
//!   (keys: `author`, `description`, `transactional` = `true|false`,
//!   `recovery` = `manual-intervention|always-retry`).
//! * The content checksum (SHA-256 of the file with CRLF normalised to LF)
//!   is recorded with the change; editing an applied file is reported as
//!   drift by validation, while a change of line endings alone is not.
//! * Statements are split by the target's dialect and executed one by one,
//!   inside the change's transaction unless `transactional=false`.
//! * Statements that need a client to feed them (`COPY ... FROM STDIN`,
//!   psql meta-commands such as `\i` or `\copy`) are refused: the runner
//!   has no input to give and would wait forever, holding the lock.
//!
//! Every problem of a directory (malformed names, duplicate ids or orders,
//! empty files, unknown header keys...) is reported at once, naming the file,
//! before anything runs.
//!
//! ```
//! use flamingock_sql::SqlChanges;
//!
//! let changes = SqlChanges::from_sources(
//!     "changes",
//!     [
//!         ("0001__create-users.sql", "-- flamingock: author=ana\nCREATE TABLE users (id INT);"),
//!         ("0002__seed.sql", "INSERT INTO users VALUES (1);\r\n"),
//!     ],
//! )?;
//! assert_eq!(changes.files()[0].id(), "create-users");
//! assert_eq!(changes.files()[0].author(), "ana");
//! assert_eq!(changes.files()[1].order(), "0002");
//! # Ok::<(), flamingock_sql::LoadErrors>(())
//! ```

#![deny(missing_docs)]
#![warn(unreachable_pub)]

use std::collections::BTreeMap;

mod client_input;
pub mod layout;
pub mod split;
mod tool_checksum;

pub use crate::layout::Layout;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flamingock_core::{
    BoxError, Change, ChangeMeta, ChangeResult, NoRollback, RecoveryStrategy, Stage, TargetSystem,
};
use sha2::{Digest, Sha256};

use crate::split::Statement;

/// The stage id file-based changes are put in unless told otherwise.
pub const DEFAULT_STAGE: &str = "sql-files";

/// The header marker of the optional first line.
const HEADER: &str = "flamingock:";

const KNOWN_KEYS: &[&str] = &["author", "description", "transactional", "recovery"];

/// One change file (with its rollback file, if any), parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlFile {
    file_name: String,
    id: String,
    order: String,
    author: String,
    description: Option<String>,
    transactional: Option<bool>,
    recovery: RecoveryStrategy,
    checksum: String,
    sql: String,
    /// The file as read, when it differs from `sql` (CRLF line endings):
    /// other tools' checksums are of the bytes as they are.
    raw: Option<String>,
    rollback: Option<(String, String)>,
}

impl SqlFile {
    /// The file name, e.g. `0001__create-users.sql`.
    pub fn file_name(&self) -> &str {
        &self.file_name
    }
    /// The change id (`create-users`).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The order (`0001`).
    pub fn order(&self) -> &str {
        &self.order
    }
    /// The author from the header (empty when not given).
    pub fn author(&self) -> &str {
        &self.author
    }
    /// The description from the header.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
    /// `transactional=` from the header; `None` = the target's default (yes).
    pub fn transactional(&self) -> Option<bool> {
        self.transactional
    }
    /// The recovery strategy from the header.
    pub fn recovery(&self) -> RecoveryStrategy {
        self.recovery
    }
    /// `sha256:<hex>` of the content with CRLF normalised to LF.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }
    /// The SQL (CRLF normalised to LF).
    pub fn sql(&self) -> &str {
        &self.sql
    }
    /// The rollback file's name and SQL, if there is one.
    pub fn rollback(&self) -> Option<(&str, &str)> {
        self.rollback
            .as_ref()
            .map(|(n, s)| (n.as_str(), s.as_str()))
    }

    /// The file's checksum computed the way `tool` computes it, to compare
    /// with the one in its history (several when builds of the tool differ;
    /// none when the tool keeps no checksum or the name is not the tool's):
    ///
    /// - sqlx: SHA-384 of the file as read, in lower-case hex;
    /// - Flyway: CRC-32 of the UTF-8 lines without their line endings (a
    ///   byte-order mark dropped), as a signed 32-bit number;
    /// - refinery: SipHash-1-3 (keys 0, 0) of the name, the version (as a
    ///   32-bit or, with refinery's `int8-versions`, 64-bit integer) and the
    ///   SQL, as Rust's `Hash` feeds them, as an unsigned 64-bit number;
    /// - diesel, Mongock: none.
    pub fn tool_checksums(&self, tool: flamingock_core::import::Tool) -> Vec<String> {
        crate::tool_checksum::of(
            tool,
            &self.file_name,
            self.raw.as_deref().unwrap_or(&self.sql),
        )
    }

    /// The change's metadata as core sees it.
    pub fn meta(&self, target_id: &str) -> ChangeMeta {
        let mut m = ChangeMeta::new(&self.id)
            .order(&self.order)
            .author(&self.author)
            .target(target_id)
            .recovery(self.recovery)
            .checksum(&self.checksum);
        if let Some(d) = &self.description {
            m = m.description(d);
        }
        if let Some(t) = self.transactional {
            m = m.transactional(t);
        }
        m
    }
}

/// The content checksum: `sha256:` and the hex digest of `content` with
/// every CRLF replaced by LF, so a checkout with other line endings is not
/// drift.
pub fn checksum(content: &str) -> String {
    let normalised = content.replace("\r\n", "\n");
    let digest = Sha256::digest(normalised.as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A parsed directory of change files, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlChanges {
    source: String,
    layout: Layout,
    files: Vec<Arc<SqlFile>>,
    statement_timeout: Option<Duration>,
}

/// One problem of a change directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The directory could not be read.
    #[error("cannot read the directory: {detail}")]
    Directory {
        /// The OS error.
        detail: String,
    },
    /// A file could not be read, or is not UTF-8.
    #[error("{file}: cannot be read: {detail}")]
    Unreadable {
        /// File name.
        file: String,
        /// Why.
        detail: String,
    },
    /// A `.sql` file whose name is not `<order>__<id>.sql` / `<order>__<id>.rollback.sql`.
    #[error("{file}: malformed name: {detail} (expected <order>__<id>.sql, e.g. 0001__create-users.sql)")]
    MalformedName {
        /// File name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A file name that does not follow the directory's layout (sqlx,
    /// diesel, Flyway, refinery).
    #[error("{file}: malformed {layout} name: {detail}")]
    MalformedLayoutName {
        /// File name.
        file: String,
        /// The layout the directory is read in.
        layout: Layout,
        /// What is wrong.
        detail: String,
    },
    /// The layout of the directory cannot be told, or its names mix layouts.
    #[error("layout: {detail}")]
    Layout {
        /// Which layouts, with examples, and what to do.
        detail: String,
    },
    /// Two files with one change id.
    #[error("change id '{id}' is used by {} files: {}", files.len(), files.join(", "))]
    DuplicateId {
        /// The id.
        id: String,
        /// The files.
        files: Vec<String>,
    },
    /// Two files with one order.
    #[error("order '{order}' is used by {} files: {} (orders must be unique)", files.len(), files.join(", "))]
    DuplicateOrder {
        /// The order.
        order: String,
        /// The files.
        files: Vec<String>,
    },
    /// Numeric orders of different widths, which sort in surprising ways.
    #[error("numeric orders have different widths ({examples}): orders sort as text, so zero-pad them to one width (e.g. 0002, 0010)")]
    MixedOrderWidths {
        /// Some of the offending files.
        examples: String,
    },
    /// Orders that run in text order although their numeric parts say
    /// otherwise (`1_10__c.sql` runs before `1_2__b.sql`).
    #[error("orders run in text order, which their numbers contradict: {}; zero-pad the numeric parts of the orders to one width (e.g. 1_02__b.sql, 1_10__c.sql)", pairs.iter().map(|(a, b)| format!("{a} runs before {b}")).collect::<Vec<_>>().join(", "))]
    NumericOrderMismatch {
        /// `(file that runs first, file that runs second)`, though the
        /// first's number is larger.
        pairs: Vec<(String, String)>,
    },
    /// A directory without a single change file: running it would
    /// "succeed" without doing anything.
    #[error("no change files: {found}; expected <order>__<id>.sql files (e.g. 0001__create-users.sql, optional <order>__<id>.rollback.sql) directly in the directory{hint}")]
    NoChangeFiles {
        /// What the directory holds instead (counts and first names).
        found: String,
        /// A hint for a layout that was recognised but is not supported.
        hint: String,
    },
    /// A statement that needs a client to feed it (`COPY ... FROM STDIN`,
    /// a psql meta-command): the runner has no input to give, so it would
    /// wait forever holding the lock, or fail as a syntax error.
    #[error("{file}: line {line}: {what} needs input from a client such as psql, which the runner does not give: {fix}")]
    ClientInput {
        /// File name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What the statement is.
        what: String,
        /// What to do instead.
        fix: &'static str,
    },
    /// A file with no SQL in it (blank or comments only).
    #[error("{file}: empty: the file has no SQL statement")]
    Empty {
        /// File name.
        file: String,
    },
    /// A header key that is not known.
    #[error("{file}: unknown header key '{key}' (known keys: {})", KNOWN_KEYS.join(", "))]
    UnknownHeaderKey {
        /// File name.
        file: String,
        /// The key.
        key: String,
    },
    /// A header value that does not parse.
    #[error("{file}: header {key}={value:?} is invalid: expected {expected}")]
    BadHeaderValue {
        /// File name.
        file: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A header that is not a list of `key=value`.
    #[error(
        "{file}: malformed header: {detail} (expected `-- flamingock: key=value key2=\"value 2\"`)"
    )]
    MalformedHeader {
        /// File name.
        file: String,
        /// What is wrong.
        detail: String,
    },
    /// A rollback file without its change file.
    #[error("{file}: rollback file without a change file {expected}")]
    OrphanRollback {
        /// The rollback file.
        file: String,
        /// The change file it needs.
        expected: String,
    },
}

/// Every problem found in a change directory. `Debug` prints the same
/// text as `Display`, so `main() -> Result<(), Box<dyn Error>>` shows the
/// list of problems rather than a struct dump.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors {
    /// The directory (or embedded directory name) the files came from.
    pub dir: String,
    /// The problems, in file-name order.
    pub problems: Vec<LoadError>,
}

impl fmt::Debug for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} problem(s) in SQL change files of {}; nothing was run:",
            self.problems.len(),
            self.dir
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

/// A file name, split.
struct Name<'a> {
    order: &'a str,
    id: &'a str,
    rollback: bool,
}

fn parse_name(file: &str) -> Result<Name<'_>, String> {
    let stem = match file.strip_suffix(".sql") {
        Some(s) => s,
        None => return Err("the extension must be `.sql` in lower case".into()),
    };
    let (stem, rollback) = match stem.strip_suffix(".rollback") {
        Some(s) => (s, true),
        None => (stem, false),
    };
    let Some((order, id)) = stem.split_once("__") else {
        return Err("no `__` between the order and the id".into());
    };
    if order.is_empty() {
        return Err("the order (before `__`) is empty".into());
    }
    if let Some(c) = order
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "the order '{order}' contains {c:?}; use letters, digits, '.', '-' or '_'"
        ));
    }
    if id.is_empty() {
        return Err("the id (after `__`) is empty".into());
    }
    if id.starts_with('_') {
        return Err("the id starts with '_' (three underscores after the order?)".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\'))
    {
        return Err(format!("the id '{id}' contains {c:?}"));
    }
    if id.len() > 255 {
        return Err(format!("the id is {} bytes, the limit is 255", id.len()));
    }
    Ok(Name {
        order,
        id,
        rollback,
    })
}

/// Parsed header options.
#[derive(Default)]
struct Header {
    author: Option<String>,
    description: Option<String>,
    transactional: Option<bool>,
    recovery: Option<RecoveryStrategy>,
}

/// Reads the optional `-- flamingock: ...` first line.
fn parse_header(file: &str, content: &str, out: &mut Vec<LoadError>) -> Header {
    let mut h = Header::default();
    let first = content.lines().next().unwrap_or("");
    let Some(rest) = first.trim().strip_prefix("--") else {
        return h;
    };
    let Some(body) = rest.trim_start().strip_prefix(HEADER) else {
        return h;
    };
    let pairs = match tokenize(body) {
        Ok(p) => p,
        Err(detail) => {
            out.push(LoadError::MalformedHeader {
                file: file.to_owned(),
                detail,
            });
            return h;
        }
    };
    for (key, value) in pairs {
        let bad = |expected: &'static str| LoadError::BadHeaderValue {
            file: file.to_owned(),
            key: key.clone(),
            value: value.clone(),
            expected,
        };
        match key.as_str() {
            "author" => h.author = Some(value),
            "description" => h.description = Some(value),
            "transactional" => match value.as_str() {
                "true" => h.transactional = Some(true),
                "false" => h.transactional = Some(false),
                _ => out.push(bad("true or false")),
            },
            "recovery" => match value.to_ascii_lowercase().replace('_', "-").as_str() {
                "manual-intervention" => h.recovery = Some(RecoveryStrategy::ManualIntervention),
                "always-retry" => h.recovery = Some(RecoveryStrategy::AlwaysRetry),
                _ => out.push(bad("manual-intervention or always-retry")),
            },
            _ => out.push(LoadError::UnknownHeaderKey {
                file: file.to_owned(),
                key,
            }),
        }
    }
    h
}

/// `a=b c="d e"` → pairs.
fn tokenize(body: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = body.trim().chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next_if_eq(&'=').is_none() {
            return Err(format!("'{key}' has no `=value`"));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some(c) => value.push(c),
                    None => return Err(format!("the value of '{key}' has no closing quote")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        if key.is_empty() {
            return Err("a `=value` has no key".into());
        }
        out.push((key, value));
    }
}

/// What `load_dir` skipped, to say so when nothing was left.
#[derive(Default)]
struct Ignored {
    files: Vec<String>,
    dirs: Vec<String>,
    /// Subdirectories holding `up.sql` (diesel's layout).
    diesel: usize,
}

impl Ignored {
    fn dir(&mut self, name: &str, path: &Path) {
        if path.join("up.sql").is_file() {
            self.diesel += 1;
        }
        self.dirs.push(name.to_owned());
    }

    fn into_error(mut self) -> LoadError {
        fn some(names: &mut [String]) -> String {
            names.sort();
            let mut s = names
                .iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if names.len() > 3 {
                s.push_str(", ...");
            }
            s
        }
        let mut parts = Vec::new();
        if !self.files.is_empty() {
            parts.push(format!(
                "{} other file(s) ({})",
                self.files.len(),
                some(&mut self.files)
            ));
        }
        if !self.dirs.is_empty() {
            parts.push(format!(
                "{} subdirector{} ({}), which are not read",
                self.dirs.len(),
                if self.dirs.len() == 1 { "y" } else { "ies" },
                some(&mut self.dirs)
            ));
        }
        let found = if parts.is_empty() {
            "the directory is empty".to_owned()
        } else {
            format!("the directory holds {}", parts.join(" and "))
        };
        let hint = if self.diesel > 0 {
            format!(
                "; {} subdirector{} with up.sql look like diesel migrations: read them with --layout diesel (or auto)",
                self.diesel,
                if self.diesel == 1 { "y" } else { "ies" }
            )
        } else {
            String::new()
        };
        LoadError::NoChangeFiles { found, hint }
    }
}

/// diesel's `metadata.toml`: `run_in_transaction = true|false` (comments
/// and blank lines aside); any other key is refused rather than ignored.
fn diesel_run_in_transaction(toml: &str) -> Result<Option<bool>, String> {
    let mut out = None;
    for line in toml.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        match line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
            Some(("run_in_transaction", "true")) => out = Some(true),
            Some(("run_in_transaction", "false")) => out = Some(false),
            Some(("run_in_transaction", v)) => {
                return Err(format!("run_in_transaction = {v}: expected true or false"))
            }
            _ => {
                return Err(format!(
                    "'{line}': only run_in_transaction = true|false is understood"
                ))
            }
        }
    }
    Ok(out)
}

impl SqlChanges {
    /// Reads every `*.sql` file directly in `dir` (hidden files and other
    /// extensions are ignored), in the layout its names show (this
    /// project's, sqlx, diesel, Flyway or refinery; see
    /// [`layout`]); see [`SqlChanges::from_sources`].
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<SqlChanges, LoadErrors> {
        Self::load_dir_as(dir, Layout::Auto)
    }

    /// [`load_dir`](Self::load_dir) in a given layout ([`Layout::Auto`]
    /// recognises it; a directory whose names mix layouts is refused).
    pub fn load_dir_as(dir: impl AsRef<Path>, layout: Layout) -> Result<SqlChanges, LoadErrors> {
        let dir = dir.as_ref();
        let source = dir.display().to_string();
        let fail = |problems| LoadErrors {
            dir: source.clone(),
            problems,
        };
        let rd = std::fs::read_dir(dir).map_err(|e| {
            fail(vec![LoadError::Directory {
                detail: e.to_string(),
            }])
        })?;
        let mut names: Vec<(String, PathBuf)> = Vec::new();
        let mut problems = Vec::new();
        let mut ignored = Ignored::default();
        let mut diesel_dirs: Vec<(String, PathBuf)> = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| {
                fail(vec![LoadError::Directory {
                    detail: e.to_string(),
                }])
            })?;
            let path = entry.path();
            if !path.is_file() {
                if path.is_dir() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if path.join("up.sql").is_file() {
                        diesel_dirs.push((name, path));
                    } else {
                        ignored.dir(&name, &path);
                    }
                }
                continue;
            }
            let raw = entry.file_name();
            let Some(name) = raw.to_str() else {
                problems.push(LoadError::Unreadable {
                    file: raw.to_string_lossy().into_owned(),
                    detail: "the file name is not valid UTF-8".into(),
                });
                continue;
            };
            // The same selection as `embed_sql_dir!`.
            if name.starts_with('.') || !name.to_ascii_lowercase().ends_with(".sql") {
                tracing::debug!(file = name, "not a .sql file: ignored");
                ignored.files.push(name.to_owned());
                continue;
            }
            names.push((name.to_owned(), path));
        }
        if layout != Layout::Diesel && !matches!(layout, Layout::Auto) {
            for (d, path) in &diesel_dirs {
                ignored.dir(d, path);
            }
            diesel_dirs.clear();
        }
        if names.is_empty() && diesel_dirs.is_empty() && problems.is_empty() {
            return Err(fail(vec![ignored.into_error()]));
        }
        // A diesel directory's files, named `<dir>/<leaf>` as the embedded
        // list names them.
        for (d, path) in &diesel_dirs {
            for leaf in ["up.sql", "down.sql", "metadata.toml"] {
                if path.join(leaf).is_file() {
                    names.push((format!("{d}/{leaf}"), path.join(leaf)));
                }
            }
        }
        names.sort();
        let mut sources = Vec::with_capacity(names.len());
        for (name, path) in names {
            match std::fs::read(&path) {
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(s) => sources.push((name, s)),
                    Err(_) => problems.push(LoadError::Unreadable {
                        file: name,
                        detail: "the content is not valid UTF-8".into(),
                    }),
                },
                Err(e) => problems.push(LoadError::Unreadable {
                    file: name,
                    detail: e.to_string(),
                }),
            }
        }
        match Self::from_dir_entries(&source, layout, sources) {
            Ok(c) if problems.is_empty() => Ok(c),
            Ok(_) => Err(fail(problems)),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(fail(problems))
            }
        }
    }

    /// The one loader behind [`load_dir`](Self::load_dir) and
    /// `embed_sql_dir!` (of `flamingock` and `flamingock-cli`): a directory's entries as
    /// `(name, content)`, the `*.sql` files directly in it by file name
    /// and, for a subdirectory holding `up.sql` (diesel's layout), its
    /// `up.sql`, `down.sql` and `metadata.toml` as `<subdirectory>/<file>`;
    /// read in `layout` ([`Layout::Auto`] recognises it from the names).
    pub fn from_dir_entries<N, C>(
        source: &str,
        layout: Layout,
        entries: impl IntoIterator<Item = (N, C)>,
    ) -> Result<SqlChanges, LoadErrors>
    where
        N: AsRef<str>,
        C: AsRef<str>,
    {
        let fail = |problems| LoadErrors {
            dir: source.to_owned(),
            problems,
        };
        let mut top: Vec<(String, String)> = Vec::new();
        let mut nested: Vec<(String, String, String)> = Vec::new(); // (dir, leaf, content)
        for (name, content) in entries {
            let (name, content) = (name.as_ref(), content.as_ref().to_owned());
            match name.split_once('/') {
                Some((d, leaf)) => nested.push((d.to_owned(), leaf.to_owned(), content)),
                None => top.push((name.to_owned(), content)),
            }
        }
        let mut dirs: Vec<String> = nested
            .iter()
            .filter(|(_, leaf, _)| leaf == "up.sql")
            .map(|(d, _, _)| d.clone())
            .collect();
        dirs.dedup();
        let layout = match layout {
            Layout::Auto => {
                let files: Vec<String> = top.iter().map(|(n, _)| n.clone()).collect();
                crate::layout::detect(&files, &dirs)
                    .map_err(|detail| fail(vec![LoadError::Layout { detail }]))?
            }
            other => other,
        };
        if layout != Layout::Diesel {
            return Self::from_sources_in(source, layout, top, &BTreeMap::new());
        }
        // diesel: <dir>/up.sql, <dir>/down.sql and run_in_transaction.
        let mut problems = Vec::new();
        let mut overrides: BTreeMap<String, bool> = BTreeMap::new();
        let mut files: Vec<(String, String)> = Vec::new();
        for (d, leaf, content) in nested {
            if leaf != "metadata.toml" {
                files.push((format!("{d}/{leaf}"), content));
                continue;
            }
            match diesel_run_in_transaction(&content) {
                Ok(Some(yes)) => {
                    overrides.insert(format!("{d}/up.sql"), yes);
                }
                Ok(None) => {}
                Err(detail) => problems.push(LoadError::MalformedLayoutName {
                    file: format!("{d}/metadata.toml"),
                    layout,
                    detail,
                }),
            }
        }
        // Files directly in a diesel directory are not diesel's.
        for (name, _) in top {
            problems.push(LoadError::MalformedLayoutName {
                file: name,
                layout,
                detail: "a diesel migration is a directory <version>_<name>/ holding up.sql".into(),
            });
        }
        match Self::from_sources_in(source, layout, files, &overrides) {
            Ok(c) if problems.is_empty() => Ok(c),
            Ok(_) => Err(fail(problems)),
            Err(mut e) => {
                problems.append(&mut e.problems);
                Err(fail(problems))
            }
        }
    }

    /// What `embed_sql_dir!` expands to, once the directory passed the
    /// loader at compile time: [`from_dir_entries`](Self::from_dir_entries)
    /// on the embedded entries; a debug build first compares them with the
    /// directory they were embedded from, when it is still there, and warns
    /// when they differ.
    #[doc(hidden)]
    pub fn from_embedded(
        source: &str,
        built_from: &str,
        layout: Layout,
        entries: &[(&str, &str)],
    ) -> Result<SqlChanges, LoadErrors> {
        if cfg!(debug_assertions) {
            if let Some(stale) = stale_embedding(source, Path::new(built_from), entries) {
                tracing::warn!("{stale}");
            }
        }
        Self::from_dir_entries(source, layout, entries.iter().copied())
    }

    /// The layout the files were read in.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Parses `(file name, content)` pairs: the one parser behind both
    /// [`SqlChanges::load_dir`] and `embed_sql_dir!` (of `flamingock` and `flamingock-cli`).
    /// `source` names the directory in messages.
    pub fn from_sources<N, C>(
        source: &str,
        files: impl IntoIterator<Item = (N, C)>,
    ) -> Result<SqlChanges, LoadErrors>
    where
        N: AsRef<str>,
        C: AsRef<str>,
    {
        Self::from_sources_in(source, Layout::Flamingock, files, &BTreeMap::new())
    }

    /// [`from_sources`](Self::from_sources) in `layout` (not `Auto`);
    /// `transactional` overrides what a file's own header says, by file name
    /// (diesel's `metadata.toml`).
    fn from_sources_in<N, C>(
        source: &str,
        layout: Layout,
        files: impl IntoIterator<Item = (N, C)>,
        transactional: &BTreeMap<String, bool>,
    ) -> Result<SqlChanges, LoadErrors>
    where
        N: AsRef<str>,
        C: AsRef<str>,
    {
        let foreign = !matches!(layout, Layout::Flamingock | Layout::Auto);
        let mut problems = Vec::new();
        let mut applies: BTreeMap<String, SqlFile> = BTreeMap::new();
        let mut rollbacks: Vec<(String, String, String)> = Vec::new(); // (apply file, rollback file, sql)
        let mut sorted: Vec<(String, String)> = files
            .into_iter()
            .map(|(n, c)| (n.as_ref().to_owned(), c.as_ref().to_owned()))
            .collect();
        if sorted.is_empty() {
            // An embedded directory without files would "succeed" doing nothing.
            return Err(LoadErrors {
                dir: source.to_owned(),
                problems: vec![Ignored::default().into_error()],
            });
        }
        sorted.sort();
        // Foreign layouts: every name first, for the orders' common widths.
        let mut named: Vec<(String, String, crate::layout::Parsed)> = Vec::new();
        for (file, content) in sorted {
            if foreign {
                match crate::layout::parse(layout, &file) {
                    Ok(p) => named.push((file, content, p)),
                    Err(detail) => problems.push(LoadError::MalformedLayoutName {
                        file,
                        layout,
                        detail,
                    }),
                }
                continue;
            }
            match parse_name(&file) {
                Ok(n) => {
                    let p = crate::layout::Parsed {
                        version: Vec::new(),
                        order: n.order.to_owned(),
                        id: n.id.to_owned(),
                        rollback: n.rollback,
                    };
                    named.push((file, content, p));
                }
                Err(detail) => problems.push(LoadError::MalformedName { file, detail }),
            }
        }
        if foreign {
            let mut parsed: Vec<crate::layout::Parsed> =
                named.iter().map(|(_, _, p)| p.clone()).collect();
            crate::layout::fill_orders(&mut parsed);
            for ((_, _, p), filled) in named.iter_mut().zip(parsed) {
                *p = filled;
            }
        }
        for (file, content, name) in named {
            let sql = content.replace("\r\n", "\n");
            if foreign && name.rollback && !split::has_code(&sql) {
                // diesel generates down.sql with only a comment, and many
                // projects leave it so: no rollback, not a malformed file.
                tracing::debug!(file = %file, "empty down/undo file: no rollback");
                continue;
            }
            if !split::has_code(&sql) {
                problems.push(LoadError::Empty { file: file.clone() });
                continue;
            }
            for c in crate::client_input::find(&sql) {
                problems.push(LoadError::ClientInput {
                    file: file.clone(),
                    line: c.line,
                    what: c.what,
                    fix: c.fix,
                });
            }
            if name.rollback {
                let apply = if foreign {
                    name.id.clone()
                } else {
                    format!("{}__{}.sql", name.order, name.id)
                };
                if parse_header_present(&sql) {
                    problems.push(LoadError::MalformedHeader {
                        file: file.clone(),
                        detail: format!("a rollback file takes no header; put it in {apply}"),
                    });
                }
                rollbacks.push((apply, file, sql));
                continue;
            }
            let h = parse_header(&file, &sql, &mut problems);
            // sqlx's `-- no-transaction` first line; diesel's metadata.toml.
            let no_transaction = layout == Layout::Sqlx
                && sql.lines().next().map(str::trim) == Some("-- no-transaction");
            let f = SqlFile {
                id: name.id.clone(),
                order: name.order.clone(),
                author: h.author.unwrap_or_default(),
                description: h.description,
                transactional: transactional
                    .get(&file)
                    .copied()
                    .or(no_transaction.then_some(false))
                    .or(h.transactional),
                recovery: h.recovery.unwrap_or_default(),
                checksum: checksum(&content),
                raw: (content.len() != sql.len()).then(|| content.clone()),
                sql,
                rollback: None,
                file_name: file.clone(),
            };
            applies.insert(file, f);
        }
        for (apply, file, sql) in rollbacks {
            // Foreign layouts pair by change id (sqlx's .down.sql, diesel's
            // down.sql, Flyway's U file), this project's by file name.
            let found = if foreign {
                applies.values_mut().find(|f| f.id == apply)
            } else {
                applies.get_mut(&apply)
            };
            match found {
                Some(f) => f.rollback = Some((file, sql)),
                None => problems.push(LoadError::OrphanRollback {
                    file,
                    expected: apply,
                }),
            }
        }
        let mut by_id: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut by_order: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for f in applies.values() {
            by_id.entry(&f.id).or_default().push(f.file_name.clone());
            by_order
                .entry(&f.order)
                .or_default()
                .push(f.file_name.clone());
        }
        for (id, files) in by_id {
            if files.len() > 1 {
                problems.push(LoadError::DuplicateId {
                    id: id.to_owned(),
                    files,
                });
            }
        }
        for (order, files) in &by_order {
            if files.len() > 1 {
                problems.push(LoadError::DuplicateOrder {
                    order: (*order).to_owned(),
                    files: files.clone(),
                });
            }
        }
        // Foreign versions were padded to one width per part above.
        let numeric: Vec<(&str, &String)> = by_order
            .iter()
            .filter(|(o, _)| !foreign && o.bytes().all(|b| b.is_ascii_digit()))
            .map(|(o, files)| (*o, &files[0]))
            .collect();
        if let (Some(min), Some(max)) = (
            numeric.iter().min_by_key(|(o, _)| o.len()),
            numeric.iter().max_by_key(|(o, _)| o.len()),
        ) {
            if min.0.len() != max.0.len() {
                problems.push(LoadError::MixedOrderWidths {
                    examples: format!("{} vs {}", min.1, max.1),
                });
            }
        }
        // All-digit orders of mixed widths are reported above already.
        let all_digits = |o: &str| o.bytes().all(|b| b.is_ascii_digit());
        let pairs: Vec<(String, String)> =
            flamingock_core::order::numeric_order_conflicts(by_order.keys().copied())
                .into_iter()
                .filter(|(a, b)| !(all_digits(a) && all_digits(b)))
                .map(|(a, b)| (by_order[a][0].clone(), by_order[b][0].clone()))
                .collect();
        if !pairs.is_empty() && !foreign {
            problems.push(LoadError::NumericOrderMismatch { pairs });
        }
        if !problems.is_empty() {
            return Err(LoadErrors {
                dir: source.to_owned(),
                problems,
            });
        }
        let mut files: Vec<Arc<SqlFile>> = applies.into_values().map(Arc::new).collect();
        files.sort_by(|a, b| a.order.cmp(&b.order));
        Ok(SqlChanges {
            source: source.to_owned(),
            layout,
            files,
            statement_timeout: None,
        })
    }

    /// Limits every statement of these files to `timeout` on targets that
    /// support it (PostgreSQL: `SET LOCAL statement_timeout` inside a
    /// transactional file's transaction; for a `transactional=false` file
    /// the session's `statement_timeout` while the file runs, so each
    /// statement gets the whole limit, then `RESET`). A statement that runs
    /// longer fails the change like any other error. On a target without
    /// statement timeouts (SQLite) the change fails saying so.
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = Some(timeout);
        self
    }

    /// By change id, each file's checksum computed the way `tool` computes
    /// it ([`SqlFile::tool_checksums`]), for
    /// [`ImportOptions::file_checksums`](flamingock_core::import::ImportOptions::file_checksums).
    pub fn tool_checksums(&self, tool: flamingock_core::import::Tool) -> Vec<(String, String)> {
        self.files
            .iter()
            .flat_map(|f| {
                f.tool_checksums(tool)
                    .into_iter()
                    .map(|sum| (f.id.clone(), sum))
            })
            .collect()
    }

    /// Where the files came from (directory path, or the embedded directory name).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The changes, in execution order.
    pub fn files(&self) -> Vec<&SqlFile> {
        self.files.iter().map(|f| &**f).collect()
    }

    /// The file of change `id`.
    pub fn get(&self, id: &str) -> Option<&SqlFile> {
        self.files.iter().find(|f| f.id == id).map(|f| &**f)
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// A stage named `stage_id` holding one change per file, for target `target_id`
    /// of type `T` (e.g. `flamingock_sqlite::SqliteTarget` or
    /// `flamingock_postgres::PostgresTarget`).
    pub fn stage<T: SqlTarget>(&self, stage_id: &str, target_id: &str) -> Stage {
        let mut stage = Stage::new(stage_id);
        for f in &self.files {
            let implicit = T::split(&f.sql)
                .into_iter()
                .enumerate()
                .find_map(|(i, stmt)| T::implicit_commit(stmt).map(|kind| (i + 1, kind)));
            stage.add(SqlFileChange::<T> {
                implicit,
                file: f.clone(),
                target_id: target_id.to_owned(),
                statement_timeout: self.statement_timeout,
                _target: PhantomData,
            });
        }
        stage
    }
}

fn parse_header_present(sql: &str) -> bool {
    sql.lines()
        .next()
        .and_then(|l| l.trim().strip_prefix("--"))
        .is_some_and(|r| r.trim_start().starts_with(HEADER))
}

/// A target that can run SQL files: how its dialect splits statements and
/// how one statement is executed on its context. Implemented by the SQLite
/// and PostgreSQL targets (their crates' feature `sql-files`); implement it
/// for another SQL target to run file-based changes there.
pub trait SqlTarget: TargetSystem {
    /// The dialect's statement splitter.
    fn split(script: &str) -> Vec<&str>;

    /// Executes one statement on a change's context.
    fn execute(
        ctx: &mut Self::Context,
        statement: &str,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Whether the context is inside a transaction.
    fn in_transaction(ctx: &Self::Context) -> bool;

    /// Whether the database commits an open transaction implicitly when it
    /// runs `statement` (MySQL's DDL), and what kind of statement it is. A
    /// file with such a statement runs with the non-transactional strategy
    /// unless its header says `transactional=true`, which is then refused
    /// before any statement runs. The default: never (PostgreSQL, SQLite).
    fn implicit_commit(statement: &str) -> Option<&'static str> {
        let _ = statement;
        None
    }

    /// Sets (`Some`) or clears (`None`) the limit of each following
    /// statement on `ctx` (see [`SqlChanges::statement_timeout`]). The
    /// default refuses: the target has no statement timeout.
    fn set_statement_timeout(
        ctx: &mut Self::Context,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = (ctx, timeout);
        std::future::ready(Err(
            "this target has no statement timeout: remove the statement timeout setting".into(),
        ))
    }
}

/// A change backed by one SQL file, for a target of type `T`.
pub struct SqlFileChange<T> {
    file: Arc<SqlFile>,
    /// The first statement the target commits implicitly: 1-based number and kind.
    implicit: Option<(usize, &'static str)>,
    target_id: String,
    statement_timeout: Option<Duration>,
    _target: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for SqlFileChange<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlFileChange")
            .field("file", &self.file.file_name)
            .field("target", &self.target_id)
            .finish()
    }
}

/// A statement that failed, with where it is. The database's message (with
/// its causes) is part of the message, so the audit entry, the progress line
/// and `issue get` all show it in one line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: statement {number} of {total} (line {line}) failed: {detail}")]
#[non_exhaustive]
pub struct StatementError {
    /// The file.
    pub file: String,
    /// 1-based statement number.
    pub number: usize,
    /// Statements in the file.
    pub total: usize,
    /// Line of the file it starts on.
    pub line: usize,
    /// The database's error and its causes.
    pub detail: String,
}

/// [`run_statements`] under the statement timeout, if there is one.
async fn run_script<T: SqlTarget>(
    ctx: &mut T::Context,
    file: &str,
    sql: &str,
    timeout: Option<Duration>,
) -> Result<(), BoxError> {
    let Some(limit) = timeout else {
        return run_statements::<T>(ctx, file, sql).await;
    };
    T::set_statement_timeout(ctx, Some(limit))
        .await
        .map_err(|e| format!("{file}: cannot set the statement timeout: {e}"))?;
    let result = run_statements::<T>(ctx, file, sql).await;
    // In a transaction the setting ends with it (and a failed transaction
    // takes no more statements); outside one it is the session's: clear it.
    if !T::in_transaction(ctx) || result.is_ok() {
        if let Err(e) = T::set_statement_timeout(ctx, None).await {
            if result.is_ok() {
                return Err(format!("{file}: cannot clear the statement timeout: {e}").into());
            }
            tracing::warn!(file, error = %e, "cannot clear the statement timeout");
        }
    }
    result
}

/// When `dir` exists and its entries (as the loader reads them) differ from
/// the `embedded` ones: what differs, and what to do.
fn stale_embedding(source: &str, dir: &Path, embedded: &[(&str, &str)]) -> Option<String> {
    let mut now: BTreeMap<String, String> = BTreeMap::new();
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && path.join("up.sql").is_file() {
            for leaf in ["up.sql", "down.sql", "metadata.toml"] {
                if path.join(leaf).is_file() {
                    now.insert(format!("{name}/{leaf}"), read(&path.join(leaf)));
                }
            }
        } else if path.is_file()
            && !name.starts_with('.')
            && name.to_ascii_lowercase().ends_with(".sql")
        {
            now.insert(name, read(&path));
        }
    }
    let then: BTreeMap<&str, &str> = embedded.iter().copied().collect();
    let added: Vec<&str> = now
        .keys()
        .filter(|k| !then.contains_key(k.as_str()))
        .map(String::as_str)
        .collect();
    let removed: Vec<&str> = then
        .keys()
        .filter(|k| !now.contains_key(**k))
        .copied()
        .collect();
    let edited: Vec<&str> = then
        .iter()
        .filter(|(k, v)| now.get(**k).is_some_and(|c| c != *v))
        .map(|(k, _)| *k)
        .collect();
    if added.is_empty() && removed.is_empty() && edited.is_empty() {
        return None;
    }
    let mut what = Vec::new();
    for (label, names) in [("added", added), ("removed", removed), ("edited", edited)] {
        if !names.is_empty() {
            what.push(format!("{label}: {}", names.join(", ")));
        }
    }
    Some(format!(
        "this binary embeds {} files of {source}; the directory {} now has {} ({}): it was built \
         before they changed, and runs what it embeds. Rebuild it; for builds that must notice \
         added or removed files, add `println!(\"cargo:rerun-if-changed={source}\");` to build.rs",
        then.len(),
        dir.display(),
        now.len(),
        what.join("; ")
    ))
}

async fn run_statements<T: SqlTarget>(
    ctx: &mut T::Context,
    file: &str,
    sql: &str,
) -> Result<(), BoxError> {
    let stmts: Vec<Statement<'_>> = split::with_lines(sql, T::split(sql));
    if T::in_transaction(ctx) {
        if let Some((n, s)) = stmts
            .iter()
            .enumerate()
            .find(|(_, s)| split::is_transaction_control(s.sql))
        {
            return Err(format!(
                "{file}: statement {} (line {}) is transaction control ({}); the runner already \
                 runs the file in a transaction that commits together with its audit entry: \
                 remove it, or declare the file `-- flamingock: transactional=false`",
                n + 1,
                s.line,
                s.sql.split_whitespace().next().unwrap_or_default()
            )
            .into());
        }
    }
    let total = stmts.len();
    for (n, s) in stmts.iter().enumerate() {
        tracing::debug!(file, statement = n + 1, line = s.line, "executing");
        if let Err(e) = T::execute(ctx, s.sql).await {
            return Err(Box::new(StatementError {
                file: file.to_owned(),
                number: n + 1,
                total,
                line: s.line,
                detail: flamingock_core::ErrorInfo::from_error(&*e).to_string(),
            }));
        }
    }
    Ok(())
}

impl<T: SqlTarget> Change for SqlFileChange<T> {
    type Target = T;

    fn meta(&self) -> ChangeMeta {
        let meta = self.file.meta(&self.target_id);
        match (self.file.transactional, self.implicit) {
            (None, Some((n, kind))) => meta.transactional_because(
                false,
                format!(
                    "statement {n} ({kind}) commits implicitly on this database, so the file \
                     runs non-transactionally"
                ),
            ),
            _ => meta,
        }
    }

    async fn apply(&self, ctx: &mut T::Context) -> ChangeResult {
        if let (Some(true), Some((n, kind))) = (self.file.transactional, self.implicit) {
            return Err(format!(
                "{}: the header says transactional=true, but statement {n} ({kind}) commits \
                 the transaction implicitly on this database; nothing was run: remove \
                 transactional=true (the file then runs non-transactionally), or move the \
                 statement to a file of its own",
                self.file.file_name
            )
            .into());
        }
        run_script::<T>(
            ctx,
            &self.file.file_name,
            &self.file.sql,
            self.statement_timeout,
        )
        .await
    }

    async fn rollback(&self, ctx: &mut T::Context) -> ChangeResult {
        match &self.file.rollback {
            Some((name, sql)) => run_script::<T>(ctx, name, sql, self.statement_timeout).await,
            None => Err(Box::new(NoRollback)),
        }
    }
}

#[cfg(test)]
mod tests {
    use flamingock_core::error::ErrorChain as _;

    #[test]
    fn a_directory_changed_since_the_build_is_named_file_by_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("0001__a.sql"), "SELECT 1; -- edited\n").expect("write");
        std::fs::write(tmp.path().join("0002__b.sql"), "SELECT 2;\n").expect("write");
        let embedded: &[(&str, &str)] = &[("0001__a.sql", "SELECT 1;\n"), ("0003__c.sql", "x")];
        let text = stale_embedding("changes", tmp.path(), embedded).expect("stale");
        for needle in [
            "this binary embeds 2 files of changes",
            "now has 2",
            "added: 0002__b.sql",
            "removed: 0003__c.sql",
            "edited: 0001__a.sql",
            "cargo:rerun-if-changed=changes",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
        let same: &[(&str, &str)] = &[
            ("0001__a.sql", "SELECT 1; -- edited\n"),
            ("0002__b.sql", "SELECT 2;\n"),
        ];
        assert_eq!(stale_embedding("changes", tmp.path(), same), None);
        assert_eq!(
            stale_embedding("changes", &tmp.path().join("gone"), same),
            None,
            "no directory: nothing to compare"
        );
    }
    use super::*;

    fn load(files: &[(&str, &str)]) -> Result<SqlChanges, LoadErrors> {
        SqlChanges::from_sources("test-dir", files.iter().copied())
    }

    fn problems(files: &[(&str, &str)]) -> Vec<LoadError> {
        match load(files) {
            Ok(c) => panic!("expected problems, loaded {:?}", c.files()),
            Err(e) => e.problems,
        }
    }

    #[test]
    fn names_headers_and_order() {
        let c = load(&[
            ("0002__seed-admin.sql", "INSERT INTO users VALUES (1);"),
            ("0002__seed-admin.rollback.sql", "DELETE FROM users;"),
            (
                "0001__create-users.sql",
                "-- flamingock: author=ana transactional=false recovery=always-retry description=\"users, with \\\"quotes\\\"\"\nCREATE TABLE users (id INT);",
            ),
            ("0010__later.sql", "SELECT 1"),
        ])
        .expect("valid");
        let ids: Vec<&str> = c.files().iter().map(|f| f.id()).collect();
        assert_eq!(ids, ["create-users", "seed-admin", "later"]);
        let first = c.get("create-users").expect("present");
        assert_eq!(first.author(), "ana");
        assert_eq!(first.transactional(), Some(false));
        assert_eq!(first.recovery(), RecoveryStrategy::AlwaysRetry);
        assert_eq!(first.description(), Some("users, with \"quotes\""));
        let seed = c.get("seed-admin").expect("present");
        assert_eq!(
            seed.rollback(),
            Some(("0002__seed-admin.rollback.sql", "DELETE FROM users;"))
        );
        assert_eq!(seed.author(), "");
        assert_eq!(seed.transactional(), None);
        assert_eq!(seed.recovery(), RecoveryStrategy::ManualIntervention);
        let meta = first.meta("db");
        assert_eq!(meta.id, "create-users");
        assert_eq!(meta.order, "0001");
        assert_eq!(meta.target_system.as_deref(), Some("db"));
        assert_eq!(meta.checksum.as_deref(), Some(first.checksum()));
    }

    #[test]
    fn checksum_ignores_crlf_but_not_content() {
        let lf = checksum("CREATE TABLE a (x INT);\nSELECT 1;\n");
        assert_eq!(lf, checksum("CREATE TABLE a (x INT);\r\nSELECT 1;\r\n"));
        assert_ne!(lf, checksum("CREATE TABLE a (x INT);\nSELECT 2;\n"));
        assert!(lf.starts_with("sha256:") && lf.len() == 7 + 64, "{lf}");
        // Known vector: sha256("abc").
        assert_eq!(
            checksum("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn malformed_names_are_all_reported_at_once() {
        let p = problems(&[
            ("0001_create.sql", "SELECT 1"),
            ("__no-order.sql", "SELECT 1"),
            ("0002__.sql", "SELECT 1"),
            ("0003__UPPER.SQL", "SELECT 1"),
            ("0004__has space.sql", "SELECT 1"),
            ("00 5__x.sql", "SELECT 1"),
            ("0006__ok.sql", "SELECT 1"),
            ("0007___triple.sql", "SELECT 1"),
        ]);
        let files: Vec<&str> = p
            .iter()
            .map(|e| match e {
                LoadError::MalformedName { file, .. } => file.as_str(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            files,
            [
                "00 5__x.sql",
                "0001_create.sql",
                "0002__.sql",
                "0003__UPPER.SQL",
                "0004__has space.sql",
                "0007___triple.sql",
                "__no-order.sql",
            ]
        );
    }

    #[test]
    fn duplicates_empty_files_and_orphan_rollbacks() {
        let p = problems(&[
            ("0001__a.sql", "SELECT 1"),
            ("0002__a.sql", "SELECT 1"),
            ("0003__b.sql", "SELECT 1"),
            ("0003__c.sql", "SELECT 1"),
            ("0004__empty.sql", "  \n-- nothing\n/* here */\n"),
            ("0005__gone.rollback.sql", "SELECT 1"),
        ]);
        assert!(p.contains(&LoadError::DuplicateId {
            id: "a".into(),
            files: vec!["0001__a.sql".into(), "0002__a.sql".into()]
        }));
        assert!(p.contains(&LoadError::DuplicateOrder {
            order: "0003".into(),
            files: vec!["0003__b.sql".into(), "0003__c.sql".into()]
        }));
        assert!(p.contains(&LoadError::Empty {
            file: "0004__empty.sql".into()
        }));
        assert!(p.contains(&LoadError::OrphanRollback {
            file: "0005__gone.rollback.sql".into(),
            expected: "0005__gone.sql".into()
        }));
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn header_problems_name_the_file_and_key() {
        let p = problems(&[
            ("0001__a.sql", "-- flamingock: autor=ana\nSELECT 1"),
            (
                "0002__b.sql",
                "-- flamingock: transactional=maybe\nSELECT 1",
            ),
            ("0003__c.sql", "-- flamingock: recovery=sometimes\nSELECT 1"),
            ("0004__d.sql", "-- flamingock: author\nSELECT 1"),
            ("0005__e.sql", "-- flamingock: description=\"open\nSELECT 1"),
            ("0006__f.rollback.sql", "-- flamingock: author=x\nSELECT 1"),
            ("0006__f.sql", "SELECT 1"),
        ]);
        assert_eq!(p.len(), 6, "{p:#?}");
        let text = LoadErrors {
            dir: "d".into(),
            problems: p,
        }
        .to_string();
        for needle in [
            "0001__a.sql: unknown header key 'autor'",
            "0002__b.sql: header transactional=\"maybe\" is invalid: expected true or false",
            "0003__c.sql: header recovery=\"sometimes\"",
            "0004__d.sql: malformed header",
            "0005__e.sql: malformed header",
            "0006__f.rollback.sql: malformed header: a rollback file takes no header",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn a_plain_comment_first_line_is_not_a_header() {
        let c =
            load(&[("0001__a.sql", "-- creates things: author=nobody\nSELECT 1")]).expect("valid");
        assert_eq!(c.files()[0].author(), "");
    }

    #[test]
    fn mixed_numeric_order_widths_are_refused() {
        let p = problems(&[
            ("1__a.sql", "SELECT 1"),
            ("10__b.sql", "SELECT 1"),
            ("2__c.sql", "SELECT 1"),
        ]);
        assert!(
            matches!(&p[..], [LoadError::MixedOrderWidths { .. }]),
            "{p:?}"
        );
        // Non-numeric orders sort as the user wrote them.
        load(&[("a1__a.sql", "SELECT 1"), ("b__b.sql", "SELECT 1")]).expect("valid");
    }

    #[test]
    fn orders_whose_numbers_sort_differently_than_their_text_are_refused() {
        for files in [
            ["V1_1__a.sql", "V1_2__b.sql", "V1_10__c.sql"],
            ["1_1__a.sql", "1_2__b.sql", "1_10__c.sql"],
        ] {
            let p = problems(&files.map(|f| (f, "SELECT 1")));
            assert_eq!(
                p,
                [LoadError::NumericOrderMismatch {
                    pairs: vec![(files[2].into(), files[1].into())]
                }]
            );
            let text = p[0].to_string();
            assert!(
                text.contains(&format!("{} runs before {}", files[2], files[1]))
                    && text.contains("zero-pad"),
                "{text}"
            );
        }
        // The same orders zero-padded, and orders that sort the same as
        // text and as numbers, are accepted.
        load(&[
            ("V1_01__a.sql", "SELECT 1"),
            ("V1_02__b.sql", "SELECT 1"),
            ("V1_10__c.sql", "SELECT 1"),
        ])
        .expect("zero-padded");
        load(&[("1_1__a.sql", "SELECT 1"), ("1_2__b.sql", "SELECT 1")]).expect("same width");
    }

    #[test]
    fn statements_that_need_client_input_are_refused_with_file_and_line() {
        let p = problems(&[
            (
                "0001__load.sql",
                "-- flamingock: author=ana\nCREATE TABLE t (a int);\nCOPY t (a) FROM stdin;\n1\n\\.\n",
            ),
            ("0002__include.sql", "SELECT 1;\n\\i more.sql\n"),
            ("0002__include.rollback.sql", "\\connect other\nDROP TABLE t;"),
            ("0003__fine.sql", "COPY t FROM '/srv/t.csv';"),
        ]);
        let text = LoadErrors {
            dir: "d".into(),
            problems: p.clone(),
        }
        .to_string();
        for needle in [
            "0001__load.sql: line 3: COPY ... FROM STDIN needs input from a client such as psql",
            "load the data with INSERT statements, or with a server-side COPY ... FROM '<file",
            "0001__load.sql: line 5: psql meta-command \\.",
            "0002__include.sql: line 2: psql meta-command \\i",
            "0002__include.rollback.sql: line 1: psql meta-command \\connect",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert_eq!(p.len(), 4, "{p:#?}");
    }

    #[test]
    fn load_errors_debug_print_as_their_message() {
        let e = load(&[("0001__a.sql", "SELECT 1"), ("0001__b.sql", "SELECT 1")])
            .expect_err("duplicate order");
        let boxed: Box<dyn std::error::Error> = Box::new(e.clone());
        assert_eq!(format!("{boxed:?}"), e.to_string());
        assert!(
            format!("{boxed:?}").starts_with("1 problem(s) in SQL change files of test-dir"),
            "{boxed:?}"
        );
        assert!(!format!("{boxed:?}").contains("problems: ["), "{boxed:?}");
    }

    #[test]
    fn no_files_at_all_is_an_error_for_embedded_directories_too() {
        let e = load(&[]).expect_err("no files");
        assert!(
            matches!(&e.problems[..], [LoadError::NoChangeFiles { .. }]),
            "{e}"
        );
    }

    #[test]
    fn load_dir_reads_sql_files_only_and_matches_from_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("0001__a.sql"),
            "CREATE TABLE a (x INT);\r\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("0002__b.sql"), "SELECT 1;").expect("write");
        std::fs::write(dir.path().join("README.md"), "not sql").expect("write");
        std::fs::write(dir.path().join(".0003__hidden.sql"), "").expect("write");
        std::fs::create_dir(dir.path().join("0004__dir.sql")).expect("mkdir");
        let loaded = SqlChanges::load_dir(dir.path()).expect("valid");
        let same = SqlChanges::from_sources(
            &dir.path().display().to_string(),
            [
                ("0002__b.sql", "SELECT 1;"),
                ("0001__a.sql", "CREATE TABLE a (x INT);\r\n"),
            ],
        )
        .expect("valid");
        assert_eq!(loaded, same);
        assert_eq!(loaded.files()[0].sql(), "CREATE TABLE a (x INT);\n");

        std::fs::write(dir.path().join("0005__bin.sql"), [0xff, 0xfe, 0x00]).expect("write");
        let e = SqlChanges::load_dir(dir.path()).expect_err("non-utf8");
        assert!(
            e.chain()
                .to_string()
                .contains("0005__bin.sql: cannot be read"),
            "{e}"
        );

        let e = SqlChanges::load_dir(dir.path().join("missing")).expect_err("missing dir");
        assert!(
            e.chain().to_string().contains("cannot read the directory"),
            "{e}"
        );
    }

    #[test]
    fn a_directory_without_change_files_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = SqlChanges::load_dir(dir.path()).expect_err("empty dir");
        let text = e.chain().to_string();
        assert!(
            text.contains("no change files: the directory is empty")
                && text.contains("expected <order>__<id>.sql files"),
            "{text}"
        );

        // A diesel layout: one subdirectory per migration with up.sql.
        for m in [
            "2020-01-01-000000_create_users",
            "2020-01-02-000000_add_email",
        ] {
            std::fs::create_dir(dir.path().join(m)).expect("mkdir");
            std::fs::write(dir.path().join(m).join("up.sql"), "SELECT 1;").expect("write");
            // diesel's generated down.sql, left as it is (vaultwarden has 26).
            std::fs::write(
                dir.path().join(m).join("down.sql"),
                "-- This file should undo anything in `up.sql`\n",
            )
            .expect("write");
        }
        std::fs::write(dir.path().join("README.md"), "notes").expect("write");
        // Read as diesel migrations now (auto); in another layout, named.
        let diesel = SqlChanges::load_dir(dir.path()).expect("diesel layout");
        assert_eq!(diesel.layout(), Layout::Diesel);
        let ids: Vec<&str> = diesel.files().iter().map(|f| f.id()).collect();
        assert_eq!(
            ids,
            [
                "2020-01-01-000000_create_users",
                "2020-01-02-000000_add_email"
            ]
        );
        assert!(
            diesel.files()[0].rollback().is_none(),
            "an empty down.sql is no rollback"
        );
        let text = SqlChanges::load_dir_as(dir.path(), Layout::Flamingock)
            .expect_err("no change files")
            .to_string();
        for needle in [
            "1 other file(s) (README.md)",
            "2 subdirectories (2020-01-01-000000_create_users, 2020-01-02-000000_add_email)",
            "look like diesel migrations",
            "--layout diesel",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in {text}");
        }
    }
}
