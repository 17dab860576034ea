//! Executing a parsed [`Cli`] against a runner builder.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use flamingock_core::import::{ForeignHistory, HistoryError, ImportOptions, Tool};
use flamingock_core::{
    AuditEntry, AuditState, BlockedChange, ChangeOutcome, CheckPolicy, Error, Event, EventListener,
    Flamingock, FlamingockBuilder, HistoryFilter, LockInfo, PlanAction, RunReport,
    ValidationProblem,
};
use serde::Serialize;
use serde_json::json;

use crate::cli::{AuditCommand, Cli, Command, DriftArg, IssueCommand, LockCommand, Resolution};
use crate::output::{short, state_color, Cell, Color, Out, Table};
use crate::redact::Redactor;
use crate::sql::SqlChanges;

/// The process exit status of a command (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Exit {
    /// 0: done; `validate`: nothing pending.
    Ok,
    /// 1: a store, lock or change failure, a blocked run, drift, a refused fix.
    Failure,
    /// 2: bad flags, an unknown store URL scheme, malformed change files, an invalid pipeline.
    Usage,
    /// 3: `validate` found pending or blocked changes.
    Pending,
    /// 130: `apply` stopped cleanly on SIGINT/SIGTERM (the lock released).
    Interrupted,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::Pending => 3,
            Exit::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e.code())
    }
}

/// Settings of [`run_with`] beyond the parsed command line.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// How operators invoke these commands, used in guidance
    /// (`flamingock`, or `my-app flamingock` for an embedded CLI).
    pub program: String,
    /// The file-based changes in the pipeline, if any: `issue get` then shows
    /// the file and its rollback file.
    pub sql_changes: Option<SqlChanges>,
    /// Masks secrets in everything printed.
    pub redactor: Redactor,
    /// Whether the pipeline was given changes (`plan`, `validate` and
    /// `apply` need them; they would otherwise report every audited change as
    /// orphaned). Embedded applications always have their changes.
    pub has_changes: bool,
    /// Reads another tool's history table, for `import` (the standalone
    /// binary reads it from the store's database).
    pub history: Option<HistoryReader>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            program: "flamingock".into(),
            sql_changes: None,
            redactor: Redactor::default(),
            has_changes: true,
            history: None,
        }
    }
}

/// The future a [`HistoryReader`] returns.
pub type HistoryRead = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Option<ForeignHistory>, HistoryError>> + Send>,
>;

/// Reads a tool's history table (`None` for its default table), e.g. with
/// `flamingock_postgres::read_history` on the application's pool, for the
/// `import` command of an embedded CLI.
///
/// ```
/// # #[cfg(feature = "postgres")]
/// # fn demo(pool: sqlx::PgPool) -> flamingock_cli::RunOptions {
/// use flamingock_cli::{HistoryReader, RunOptions};
/// RunOptions::default().history(HistoryReader::new(move |tool, table| {
///     let pool = pool.clone();
///     Box::pin(async move { flamingock_postgres::read_history(&pool, tool, table.as_deref()).await })
/// }))
/// # }
/// ```
#[derive(Clone)]
pub struct HistoryReader(Arc<dyn Fn(Tool, Option<String>) -> HistoryRead + Send + Sync>);

impl HistoryReader {
    /// A reader calling `read(tool, table)`.
    pub fn new(read: impl Fn(Tool, Option<String>) -> HistoryRead + Send + Sync + 'static) -> Self {
        HistoryReader(Arc::new(read))
    }

    /// Reads `tool`'s history from `table` (its default when `None`).
    pub fn read(&self, tool: Tool, table: Option<String>) -> HistoryRead {
        (self.0)(tool, table)
    }
}

impl std::fmt::Debug for HistoryReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HistoryReader")
    }
}

impl RunOptions {
    /// How operators invoke the commands, for guidance messages.
    pub fn program(mut self, program: impl Into<String>) -> Self {
        self.program = program.into();
        self
    }
    /// The SQL files of the pipeline (for `issue get`).
    pub fn sql_changes(mut self, changes: SqlChanges) -> Self {
        self.sql_changes = Some(changes);
        self
    }
    /// The redactor for everything printed.
    pub fn redactor(mut self, r: Redactor) -> Self {
        self.redactor = r;
        self
    }
    /// Whether the pipeline has changes (see the field).
    pub fn has_changes(mut self, yes: bool) -> Self {
        self.has_changes = yes;
        self
    }
    /// How `import` reads another tool's history (see the field).
    pub fn history(mut self, reader: HistoryReader) -> Self {
        self.history = Some(reader);
        self
    }
}

/// Runs `cli` against the runner `builder` describes (audit store, lock,
/// targets and the application's changes) and returns the exit status.
/// Prints results on stdout and errors on stderr; does not install a
/// tracing subscriber (see [`init_tracing`](crate::init_tracing)).
///
/// ```no_run
/// # async fn demo(builder: flamingock_core::FlamingockBuilder, cli: flamingock_cli::Cli) -> std::process::ExitCode {
/// flamingock_cli::run(cli, builder).await
/// # }
/// ```
pub async fn run(cli: Cli, builder: FlamingockBuilder) -> ExitCode {
    run_with(cli, builder, RunOptions::default()).await.into()
}

/// [`run`] with options; returns the [`Exit`] status.
pub async fn run_with(cli: Cli, builder: FlamingockBuilder, opts: RunOptions) -> Exit {
    let color = crate::output::use_color(cli.output.no_color);
    let out = Out::stdio(
        color,
        cli.output.json,
        cli.output.quiet,
        opts.redactor.clone(),
    );
    execute(cli, builder, &opts, &out).await
}

/// Errors that end a command, with their exit status.
#[derive(Debug)]
enum Fail {
    /// Usage problem (exit 2).
    Usage(String),
    /// A failure (exit 1) with a message.
    Failure(String),
    /// A core error, from building the runner (exit 2) or running (exit 1).
    Core { error: Error, at_build: bool },
}

async fn execute(cli: Cli, builder: FlamingockBuilder, opts: &RunOptions, out: &Out) -> Exit {
    match execute_inner(cli, builder, opts, out).await {
        Ok(code) => code,
        Err(f) => report_failure(f, opts, out),
    }
}

fn build(builder: FlamingockBuilder) -> Result<Flamingock, Fail> {
    builder.build().map_err(|error| Fail::Core {
        error,
        at_build: true,
    })
}

fn core(error: Error) -> Fail {
    Fail::Core {
        error,
        at_build: false,
    }
}

async fn execute_inner(
    cli: Cli,
    mut builder: FlamingockBuilder,
    opts: &RunOptions,
    out: &Out,
) -> Result<Exit, Fail> {
    let policy = |p: DriftArg| match p {
        DriftArg::Warn => CheckPolicy::Warn,
        DriftArg::Error => CheckPolicy::Error,
    };
    if let Some(p) = cli.drift {
        builder = builder.drift(policy(p));
    }
    if let Some(p) = cli.orphans {
        builder = builder.orphans(policy(p));
    }
    // Without the changes every recorded change would look orphaned, and
    // nothing could be built from a declaration.
    let needs_changes = matches!(
        cli.command,
        Command::Plan
            | Command::Validate
            | Command::Apply
            | Command::Baseline { .. }
            | Command::Import { .. }
            | Command::Audit(
                AuditCommand::Retire { .. }
                    | AuditCommand::AcceptChecksum { .. }
                    | AuditCommand::Fix { baseline: true, .. }
            )
    );
    if needs_changes && !opts.has_changes {
        return Err(Fail::Usage(
            "this command needs the changes: give the directory of SQL files with --changes DIR \
             (or FLAMINGOCK_CHANGES_DIR)"
                .into(),
        ));
    }
    match cli.command {
        Command::Audit(AuditCommand::List) => audit_list(&build(builder)?, out).await,
        Command::Audit(AuditCommand::History { change, since }) => {
            let mut filter = HistoryFilter::all();
            if let Some(c) = change {
                filter = filter.change(c);
            }
            if let Some(s) = since {
                filter = filter.since(s);
            }
            audit_history(&build(builder)?, &filter, out).await
        }
        Command::Audit(AuditCommand::Fix {
            change_id,
            resolution,
            reason,
            operator,
            baseline,
        }) => {
            if baseline && resolution != Resolution::Applied {
                return Err(Fail::Usage(
                    "--baseline records a change as applied: use it with --resolution applied"
                        .into(),
                ));
            }
            let (runner, operator) = fixer(builder, operator, &reason)?;
            let kind = match (baseline, resolution) {
                (true, _) => FixKind::Baseline,
                (false, Resolution::Applied) => FixKind::Applied,
                (false, Resolution::RolledBack) => FixKind::RolledBack,
            };
            audit_fix(&runner, &change_id, kind, &reason, &operator, opts, out).await
        }
        Command::Audit(AuditCommand::Retire {
            change_id,
            reason,
            operator,
        }) => {
            let (runner, operator) = fixer(builder, operator, &reason)?;
            let kind = FixKind::Retire;
            audit_fix(&runner, &change_id, kind, &reason, &operator, opts, out).await
        }
        Command::Audit(AuditCommand::AcceptChecksum {
            change_id,
            reason,
            operator,
        }) => {
            let (runner, operator) = fixer(builder, operator, &reason)?;
            let kind = FixKind::AcceptChecksum;
            audit_fix(&runner, &change_id, kind, &reason, &operator, opts, out).await
        }
        Command::Baseline {
            up_to,
            reason,
            operator,
        } => {
            let (runner, operator) = fixer(builder, operator, &reason)?;
            baseline(&runner, &up_to, &reason, &operator, opts, out).await
        }
        Command::Import {
            tool,
            table,
            reason,
            operator,
            accept_mismatches,
            dry_run,
        } => {
            let (runner, operator) = fixer(builder, operator, &reason)?;
            let how = ImportHow {
                table,
                reason: format!("{reason} (operator: {operator})"),
                accept_mismatches,
                dry_run,
            };
            import(&runner, tool.tool(), how, opts, out).await
        }
        Command::Issue(IssueCommand::List) => issue_list(&build(builder)?, opts, out).await,
        Command::Issue(IssueCommand::Get { change_id }) => {
            issue_get(&build(builder)?, &change_id, opts, out).await
        }
        Command::Lock(LockCommand::Status) => lock_status(&build(builder)?, out).await,
        Command::Lock(LockCommand::Release { force: _, yes }) => {
            lock_release(&build(builder)?, yes, out).await
        }
        Command::Plan => plan(&build(builder)?, opts, out).await,
        Command::Validate => validate(&build(builder)?, opts, out).await,
        Command::Apply => {
            let runner = build(builder.listener(Progress::new(out.clone())))?;
            apply(&runner, out).await
        }
    }
}

// ---- audit -----------------------------------------------------------

fn state_cell(s: AuditState) -> Cell {
    Cell::colored(s.as_str(), state_color(s))
}

fn when(e: &AuditEntry) -> String {
    e.created_at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

fn note(e: &AuditEntry) -> String {
    if let Some(err) = &e.error {
        return short(&err.message, 60);
    }
    if let Some(reason) = e.metadata.get("reason").and_then(|r| r.as_str()) {
        return short(&format!("fix: {reason}"), 60);
    }
    String::new()
}

async fn audit_list(runner: &Flamingock, out: &Out) -> Result<Exit, Fail> {
    let snapshot = runner.snapshot().await.map_err(core)?;
    if out.json {
        out.json_doc(&serde_json::to_value(&snapshot).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if snapshot.is_empty() {
        out.line("no change has been recorded here yet (the audit store is created by the first `apply`)");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(&[
        "CHANGE", "STATE", "ORDER", "AUTHOR", "TARGET", "STRATEGY", "AT", "NOTE",
    ]);
    // Pipeline order; entries of changes not in the pipeline after them.
    let position: HashMap<&str, usize> = runner
        .change_ids()
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i))
        .collect();
    let mut sorted: Vec<&AuditEntry> = snapshot.iter().collect();
    sorted.sort_by(|a, b| {
        let at = |e: &AuditEntry| position.get(e.change_id.as_str()).copied();
        (at(a).is_none(), at(a), &a.stage_id, &a.order, &a.change_id).cmp(&(
            at(b).is_none(),
            at(b),
            &b.stage_id,
            &b.order,
            &b.change_id,
        ))
    });
    for e in sorted {
        t.row(vec![
            e.change_id.as_str().into(),
            state_cell(e.state),
            e.order.as_str().into(),
            e.author.as_str().into(),
            e.target_system.as_str().into(),
            e.tx_strategy.as_str().into(),
            when(e).into(),
            note(e).into(),
        ]);
    }
    out.raw(&t.render(out));
    Ok(Exit::Ok)
}

async fn audit_history(
    runner: &Flamingock,
    filter: &HistoryFilter,
    out: &Out,
) -> Result<Exit, Fail> {
    let history = runner.history(filter).await.map_err(core)?;
    if out.json {
        out.json_doc(&serde_json::to_value(&history).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if history.is_empty() {
        out.line("no audit entries match");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(&[
        "AT", "CHANGE", "STATE", "STRATEGY", "MS", "TOKEN", "BY", "NOTE",
    ]);
    for e in &history {
        t.row(vec![
            when(e).into(),
            e.change_id.as_str().into(),
            state_cell(e.state),
            e.tx_strategy.as_str().into(),
            e.duration_ms.to_string().into(),
            e.fencing_token.to_string().into(),
            e.runner_id.as_str().into(),
            note(e).into(),
        ]);
    }
    out.raw(&t.render(out));
    Ok(Exit::Ok)
}

/// Who records a fix: `--operator` / `$FLAMINGOCK_OPERATOR`, else `$USER`
/// / `$USERNAME`, else this host (a container often has no `$USER`, and the
/// commands `issue get` prints must run as printed).
fn operator_name(given: Option<String>) -> String {
    given
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| format!("operator@{}", gethostname::gethostname().to_string_lossy()))
}

/// The runner an operator fix is recorded with, and the operator's name.
fn fixer(
    builder: FlamingockBuilder,
    operator: Option<String>,
    reason: &str,
) -> Result<(Flamingock, String), Fail> {
    if reason.trim().is_empty() {
        return Err(Fail::Usage(
            "--reason must say what was checked; it is recorded in the audit".into(),
        ));
    }
    let operator = operator_name(operator);
    // The operator's name becomes the runner id of the fix entry
    // (`operator@host#uuid`) and is recorded in its reason.
    let runner = build(builder.service(operator.clone()))?;
    Ok((runner, operator))
}

/// What `audit fix|retire|accept-checksum` records.
#[derive(Debug, Clone, Copy)]
enum FixKind {
    Applied,
    RolledBack,
    Baseline,
    Retire,
    AcceptChecksum,
}

async fn audit_fix(
    runner: &Flamingock,
    change_id: &str,
    kind: FixKind,
    reason: &str,
    operator: &str,
    opts: &RunOptions,
    out: &Out,
) -> Result<Exit, Fail> {
    let recorded = format!("{reason} (operator: {operator})");
    let entry = match kind {
        FixKind::Applied => runner.mark_applied(change_id, &recorded).await,
        FixKind::RolledBack => runner.mark_rolled_back(change_id, &recorded).await,
        FixKind::Baseline => runner.baseline(change_id, &recorded).await,
        FixKind::Retire => runner.retire_orphan(change_id, &recorded).await,
        FixKind::AcceptChecksum => runner.accept_checksum(change_id, &recorded).await,
    }
    .map_err(core)?;
    if out.json {
        out.json_doc(&json!({ "fixed": entry }));
        return Ok(Exit::Ok);
    }
    out.line(&format!(
        "recorded {} for '{}' (operator {operator}, fencing token {})",
        out.paint(state_color(entry.state), entry.state.as_str()),
        entry.change_id,
        entry.fencing_token
    ));
    let next = match kind {
        FixKind::Applied | FixKind::Baseline => "it will be skipped from now on",
        FixKind::RolledBack => "it will be applied again",
        FixKind::Retire => "its entries no longer fail validation",
        FixKind::AcceptChecksum => "its current content is the recorded one now",
    };
    out.info(&format!("{next}: run `{} apply` to continue", opts.program));
    Ok(Exit::Ok)
}

async fn baseline(
    runner: &Flamingock,
    up_to: &str,
    reason: &str,
    operator: &str,
    opts: &RunOptions,
    out: &Out,
) -> Result<Exit, Fail> {
    let recorded = format!("{reason} (operator: {operator})");
    let entries = runner
        .baseline_up_to(up_to, &recorded)
        .await
        .map_err(core)?;
    if out.json {
        out.json_doc(&json!({ "baselined": entries }));
        return Ok(Exit::Ok);
    }
    for e in &entries {
        out.line(&format!(
            "recorded {} for '{}'",
            out.paint(state_color(e.state), e.state.as_str()),
            e.change_id
        ));
    }
    match entries.first() {
        None => out.line(&format!(
            "nothing to record: every change up to '{up_to}' was baselined before"
        )),
        Some(first) => out.line(&format!(
            "baseline up to '{up_to}': {} change(s) recorded as applied without running (operator {operator}, fencing token {})",
            entries.len(),
            first.fencing_token
        )),
    }
    out.info(&format!(
        "run `{} apply` to apply the changes after it",
        opts.program
    ));
    Ok(Exit::Ok)
}

/// `import`'s flags.
struct ImportHow {
    table: Option<String>,
    reason: String,
    accept_mismatches: bool,
    dry_run: bool,
}

async fn import(
    runner: &Flamingock,
    tool: Tool,
    how: ImportHow,
    opts: &RunOptions,
    out: &Out,
) -> Result<Exit, Fail> {
    let Some(reader) = &opts.history else {
        return Err(Fail::Usage(format!(
            "this program cannot read {tool}'s history: give RunOptions::history a reader \
             (e.g. flamingock_postgres::read_history on the application's pool)"
        )));
    };
    let wanted = how
        .table
        .as_deref()
        .unwrap_or(tool.default_table())
        .to_owned();
    let history = reader
        .read(tool, how.table.clone())
        .await
        .map_err(|e| Fail::Failure(full_message(&e)))?
        .ok_or_else(|| {
            Fail::Failure(format!(
                "no table {wanted} in the store's database: nothing shows that {tool} migrated \
                 it (give its history table with --table NAME or --table SCHEMA.NAME)"
            ))
        })?;
    let mut options = ImportOptions::new(how.reason).accept_mismatches(how.accept_mismatches);
    if let Some(changes) = &opts.sql_changes {
        options = options.file_checksums(changes.tool_checksums(tool));
    }
    let report = if how.dry_run {
        runner.import_preview(&history, &options).await
    } else {
        runner.import_history(&history, &options).await
    }
    .map_err(core)?;
    let ids = |entries: &[AuditEntry]| -> Vec<String> {
        entries.iter().map(|e| e.change_id.clone()).collect()
    };
    if out.json {
        out.json_doc(&json!({
            "tool": tool.name(),
            "table": report.table,
            "rows": report.rows,
            "dry_run": how.dry_run,
            "imported": ids(&report.imported),
            "already": report.already,
            "not_applied": report.not_applied,
            "mismatches": report.mismatches.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
        return Ok(Exit::Ok);
    }
    let verb = if how.dry_run {
        "would record"
    } else {
        "recorded"
    };
    for e in &report.imported {
        let version = e.metadata.get("foreign_version").and_then(|v| v.as_str());
        out.line(&format!(
            "{verb} {} for '{}' ({tool} version {})",
            out.paint(state_color(e.state), e.state.as_str()),
            e.change_id,
            version.unwrap_or("?")
        ));
    }
    let recorded = if how.dry_run {
        "would be recorded"
    } else {
        "recorded"
    };
    out.line(&format!(
        "{tool} history {}: {} row(s); {} change(s) {recorded} as applied, {} recorded before, {} not applied by {tool}",
        report.table,
        report.rows,
        report.imported.len(),
        report.already.len(),
        report.not_applied.len()
    ));
    if !report.mismatches.is_empty() {
        let left = if how.dry_run && !how.accept_mismatches {
            "the import would be refused for"
        } else {
            "left as they are"
        };
        out.line(&format!(
            "{} row(s) do not fit ({left}):",
            report.mismatches.len()
        ));
        for m in &report.mismatches {
            out.line(&format!("  - {m}"));
        }
    }
    if !report.not_applied.is_empty() {
        out.info(&format!(
            "`{} apply` will run: {}",
            opts.program,
            report.not_applied.join(", ")
        ));
    }
    Ok(Exit::Ok)
}

// ---- issues ----------------------------------------------------------

#[derive(Serialize)]
struct IssueJson<'a> {
    change_id: &'a str,
    stage: &'a str,
    state: AuditState,
    error: Option<&'a str>,
    reason: &'a str,
    resolution: &'a str,
}

fn issue_json(b: &BlockedChange) -> IssueJson<'_> {
    IssueJson {
        change_id: &b.change_id,
        stage: &b.stage,
        state: b.state,
        error: b.error.as_deref(),
        reason: &b.reason,
        resolution: &b.resolution,
    }
}

async fn issue_list(runner: &Flamingock, opts: &RunOptions, out: &Out) -> Result<Exit, Fail> {
    let issues = runner.issues().await.map_err(core)?;
    if out.json {
        let v: Vec<IssueJson<'_>> = issues.iter().map(issue_json).collect();
        out.json_doc(&serde_json::to_value(&v).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if issues.is_empty() {
        out.line("no issues: nothing needs an operator");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(&["CHANGE", "STAGE", "STATE", "ERROR"]);
    for b in &issues {
        t.row(vec![
            b.change_id.as_str().into(),
            b.stage.as_str().into(),
            state_cell(b.state),
            short(b.error.as_deref().unwrap_or(""), 70).into(),
        ]);
    }
    out.raw(&t.render(out));
    out.info(&format!(
        "{} change(s) need an operator: `{} issue get <change-id>` says what to do",
        issues.len(),
        opts.program
    ));
    Ok(Exit::Ok)
}

/// A blocked change in a few lines, with the commands that resolve it
/// (spelled with this program's name and the `--reason` the fix needs).
fn blocked_text(b: &BlockedChange, opts: &RunOptions) -> String {
    let p = &opts.program;
    let id = &b.change_id;
    let mut s = format!("  - '{id}' (stage '{}'): last state {}", b.stage, b.state);
    if let Some(e) = &b.error {
        s.push_str(&format!(", error: {}", short(e, 300)));
    }
    s.push_str(&format!(
        "\n    why: {}\n    resolve: `{p} issue get {id}` explains; then `{p} audit fix {id} --resolution applied|rolled-back --reason \"...\"`",
        b.reason
    ));
    s
}

/// The step-by-step guidance for a blocked change.
fn steps(b: &BlockedChange, target: &str, opts: &RunOptions) -> Vec<String> {
    let p = &opts.program;
    let id = &b.change_id;
    let file = opts.sql_changes.as_ref().and_then(|c| c.get(id));
    let mut out = Vec::new();
    let inspect = match file {
        Some(f) => format!(
            "Inspect target system '{target}': check which effects of {} are in place.",
            f.file_name()
        ),
        None => {
            format!("Inspect target system '{target}': check which effects of '{id}' are in place.")
        }
    };
    out.push(inspect);
    out.push(format!(
        "If they are all in place, record it (it will not run again):\n       {p} audit fix {id} --resolution applied --reason \"<what you checked>\""
    ));
    let undo = match file.and_then(|f| f.rollback()) {
        Some((name, _)) => format!(" (its rollback file {name} undoes it)"),
        None => String::new(),
    };
    out.push(format!(
        "Otherwise undo whatever part is in place{undo}, then record it (it will be applied again):\n       {p} audit fix {id} --resolution rolled-back --reason \"<what you undid>\""
    ));
    out.push(format!(
        "Run `{p} apply` (or restart the application) to continue the stage."
    ));
    out
}

async fn issue_get(
    runner: &Flamingock,
    change_id: &str,
    opts: &RunOptions,
    out: &Out,
) -> Result<Exit, Fail> {
    let snapshot = runner.snapshot().await.map_err(core)?;
    let Some(last) = snapshot.iter().find(|e| e.change_id == change_id) else {
        return Err(Fail::Failure(format!(
            "change '{change_id}' has no audit entry (`{} audit list` shows the recorded changes)",
            opts.program
        )));
    };
    let issues = runner.issues().await.map_err(core)?;
    let issue = issues.iter().find(|b| b.change_id == change_id);
    if out.json {
        let v = json!({
            "change_id": change_id,
            "last": last,
            "issue": issue.map(issue_json),
            "steps": issue.map(|b| steps(b, &last.target_system, opts)).unwrap_or_default(),
        });
        out.json_doc(&v);
        return Ok(Exit::Ok);
    }
    let state = out.paint(state_color(last.state), last.state.as_str());
    out.line(&format!(
        "change '{change_id}' (stage '{}', target '{}')",
        last.stage_id, last.target_system
    ));
    out.line(&format!(
        "  last state: {state} at {} by {} (run {}, strategy {}, token {})",
        when(last),
        last.runner_id,
        last.run_id,
        last.tx_strategy,
        last.fencing_token
    ));
    if let Some(e) = &last.error {
        out.line(&format!("  error:      {}", e.message));
        for c in e.new_causes() {
            out.line(&format!("              caused by: {c}"));
        }
    }
    let Some(b) = issue else {
        out.line(&format!(
            "  no issue: the runner {} this change by itself",
            match last.state {
                AuditState::Applied | AuditState::ManualMarkedAsApplied => "skips",
                _ => "applies",
            }
        ));
        return Ok(Exit::Ok);
    };
    out.line(&format!("  why blocked: {}", b.reason));
    out.line("");
    out.line(&out.paint(Color::Bold, "What to do:"));
    for (i, s) in steps(b, &last.target_system, opts).iter().enumerate() {
        out.line(&format!("  {}. {s}", i + 1));
    }
    Ok(Exit::Ok)
}

// ---- lock ------------------------------------------------------------

fn describe_lock(l: &LockInfo) -> String {
    let left = l.expires_at - Utc::now();
    let expiry = if l.expired || left.num_milliseconds() <= 0 {
        format!("expired at {}", l.expires_at.to_rfc3339())
    } else {
        format!(
            "expires at {} (in {}s)",
            l.expires_at.to_rfc3339(),
            left.num_seconds()
        )
    };
    format!("held by {} (fencing token {}), {expiry}", l.owner, l.token)
}

async fn lock_status(runner: &Flamingock, out: &Out) -> Result<Exit, Fail> {
    let info = runner.lock_status().await.map_err(|e| core(e.into()))?;
    if out.json {
        out.json_doc(&json!({ "held": info.as_ref().is_some_and(|l| !l.expired), "lock": info }));
        return Ok(Exit::Ok);
    }
    match info {
        None => out.line("lock: free"),
        Some(l) => out.line(&format!("lock: {}", describe_lock(&l))),
    }
    Ok(Exit::Ok)
}

async fn lock_release(runner: &Flamingock, yes: bool, out: &Out) -> Result<Exit, Fail> {
    let info = runner.lock_status().await.map_err(|e| core(e.into()))?;
    let Some(current) = info else {
        if out.json {
            out.json_doc(&json!({ "released": null }));
        } else {
            out.line("lock: free, nothing to release");
        }
        return Ok(Exit::Ok);
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Fail::Usage(
                "refusing to force-release the lock without --yes: stdin is not a terminal to confirm on".into(),
            ));
        }
        out.err_raw(&format!(
            "The lock is {}.\nReleasing it lets another runner start while this holder may still be working.\nRelease it? [y/N] ",
            describe_lock(&current)
        ));
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Err(Fail::Failure("not released".into()));
        }
    }
    let removed = runner
        .force_release_lock()
        .await
        .map_err(|e| core(e.into()))?;
    if out.json {
        out.json_doc(&json!({ "released": removed }));
        return Ok(Exit::Ok);
    }
    match removed {
        Some(l) => out.line(&format!(
            "released the lock of {} (lock token {}); its later audit writes are rejected once another runner claims the audit store",
            l.owner, l.token
        )),
        None => out.line("lock: it was released meanwhile, nothing removed"),
    }
    Ok(Exit::Ok)
}

// ---- plan / validate / apply -------------------------------------------

fn action_cell(a: &PlanAction) -> Cell {
    match a {
        PlanAction::Apply => Cell::colored("apply", Color::Yellow),
        PlanAction::Skip => Cell::colored("skip (applied)", Color::Dim),
        PlanAction::ResolveByMarker => Cell::colored("resolve by marker", Color::Cyan),
        PlanAction::Block { .. } => Cell::colored("BLOCKED", Color::Red),
        _ => Cell::from("?"),
    }
}

async fn plan(runner: &Flamingock, opts: &RunOptions, out: &Out) -> Result<Exit, Fail> {
    let items = runner.plan().await.map_err(core)?;
    if out.json {
        out.json_doc(&serde_json::to_value(&items).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    if let Some(c) = &opts.sql_changes {
        out.info(&format!(
            "changes: {} ({} files, {} layout)",
            c.source(),
            c.len(),
            c.layout()
        ));
    }
    if items.is_empty() {
        out.line("no changes");
        return Ok(Exit::Ok);
    }
    let mut t = Table::new(&[
        "#", "STAGE", "ORDER", "CHANGE", "TARGET", "STRATEGY", "ACTION",
    ]);
    for (i, it) in items.iter().enumerate() {
        t.row(vec![
            (i + 1).to_string().into(),
            it.stage.as_str().into(),
            it.order.as_str().into(),
            it.change_id.as_str().into(),
            it.target.as_str().into(),
            it.strategy.as_str().into(),
            action_cell(&it.action),
        ]);
    }
    out.raw(&t.render(out));
    for it in &items {
        if let Some(reason) = &it.reason {
            out.info(&format!(
                "{}: {} because {reason}",
                it.change_id,
                it.strategy.as_str()
            ));
        }
    }
    let pending = items
        .iter()
        .filter(|i| !matches!(i.action, PlanAction::Skip))
        .count();
    let blocked = items
        .iter()
        .filter(|i| matches!(i.action, PlanAction::Block { .. }))
        .count();
    out.info(&format!(
        "{pending} of {} change(s) pending{}",
        items.len(),
        if blocked > 0 {
            format!(", {blocked} blocked (see `issue list`)")
        } else {
            String::new()
        }
    ));
    Ok(Exit::Ok)
}

async fn validate(runner: &Flamingock, opts: &RunOptions, out: &Out) -> Result<Exit, Fail> {
    match runner.validate().await {
        Ok(()) => {
            if out.json {
                out.json_doc(&json!({ "status": "ok" }));
            } else {
                out.line(&format!(
                    "{} nothing pending",
                    out.paint(Color::Green, "ok:")
                ));
            }
            Ok(Exit::Ok)
        }
        Err(Error::Pending { pending }) => {
            if out.json {
                out.json_doc(&json!({ "status": "pending", "pending": pending }));
            } else {
                out.line(&format!(
                    "{} {} change(s) pending: {}",
                    out.paint(Color::Yellow, "pending:"),
                    pending.len(),
                    pending.join(", ")
                ));
                out.info(&format!("run `{} apply` to apply them", opts.program));
            }
            Ok(Exit::Pending)
        }
        Err(Error::Blocked { blocked, .. }) => {
            if out.json {
                let v: Vec<IssueJson<'_>> = blocked.iter().map(issue_json).collect();
                out.json_doc(&json!({ "status": "blocked", "blocked": v }));
            } else {
                out.line(&format!(
                    "{} {} change(s) need an operator:",
                    out.paint(Color::Red, "blocked:"),
                    blocked.len()
                ));
                for b in &blocked {
                    out.line(&blocked_text(b, opts));
                }
            }
            Ok(Exit::Pending)
        }
        Err(e) => Err(core(e)),
    }
}

/// Prints a line per change while `apply` runs.
#[derive(Clone)]
struct Progress {
    out: Out,
    started: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Progress {
    fn new(out: Out) -> Progress {
        Progress {
            out,
            started: Arc::default(),
        }
    }

    fn print(&self, text: &str) {
        if self.out.quiet {
            return;
        }
        if self.out.json {
            self.out.err_line(text);
        } else {
            self.out.line(text);
        }
    }

    fn elapsed(&self, id: &str) -> Duration {
        self.started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(Instant::elapsed)
            .unwrap_or_default()
    }
}

impl EventListener for Progress {
    fn on_event(&self, event: &Event) {
        match event {
            Event::ChangeStarted { change_id } => {
                self.started
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(change_id.clone(), Instant::now());
            }
            Event::ChangeApplied {
                change_id,
                duration,
            } => self.print(&format!(
                "  {} {change_id} ({})",
                self.out.paint(Color::Green, "applied "),
                ms(*duration)
            )),
            Event::ChangeFailed { change_id, error } => self.print(&format!(
                "  {} {change_id} ({}): {}",
                self.out.paint(Color::Red, "failed  "),
                ms(self.elapsed(change_id)),
                short(error, 200)
            )),
            Event::ChangeRolledBack { change_id } => self.print(&format!(
                "  {} {change_id}",
                self.out.paint(Color::Cyan, "rolled back")
            )),
            Event::LockWaiting {
                holder,
                expires_at,
                waited,
                ..
            } => self.print(&format!(
                "  {} for the lock held by {holder} (its lease ends {}; waited {})",
                self.out.paint(Color::Yellow, "waiting "),
                expires_at.format("%H:%M:%S UTC"),
                ms(*waited)
            )),
            Event::LockAcquired { waited, .. } if !waited.is_zero() => self.print(&format!(
                "  {} after waiting {}",
                self.out.paint(Color::Green, "got the lock"),
                ms(*waited)
            )),
            Event::LeaseExtendedLate { left, .. } => self.print(&format!(
                "  {} the lease was extended with only {} left",
                self.out.paint(Color::Yellow, "warning:"),
                ms(*left)
            )),
            Event::LeaseLost { detail, .. } => self.print(&format!(
                "  {} {detail}; stopping before the next write",
                self.out.paint(Color::Red, "lease lost:")
            )),
            Event::ShutdownRequested { detail } => self.print(&format!(
                "  {} {detail}",
                self.out.paint(Color::Yellow, "stopping:")
            )),
            _ => {}
        }
    }
}

fn ms(d: Duration) -> String {
    crate::duration::show(d)
}

/// Completes on the first SIGINT or SIGTERM; a second one exits at once
/// (the lock then stays held until its lease ends).
async fn shutdown_signal(out: Out) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        // No signal handling here: never ask for a stop.
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    };
    out.err_line(&format!(
        "received {name}: finishing or rolling back the current change, then releasing the \
         lock (send it again to exit at once; the lock would then stay held until its lease ends)"
    ));
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        out.err_line(&format!("received {name} again: exiting now"));
        std::process::exit(i32::from(Exit::Interrupted.code()));
    });
}

async fn apply(runner: &Flamingock, out: &Out) -> Result<Exit, Fail> {
    match runner.run_until(shutdown_signal(out.clone())).await {
        Ok(report) => {
            if out.json {
                out.json_doc(&json!({ "status": "ok", "report": report_json(&report) }));
            } else {
                let t = report.totals();
                out.line(&format!(
                    "{} {} applied, {} already applied, in {}",
                    out.paint(Color::Green, "done:"),
                    t.applied,
                    t.skipped,
                    ms(report.duration)
                ));
            }
            Ok(Exit::Ok)
        }
        Err(error) => {
            if !out.json {
                if let Some(r) = error.report() {
                    print_run_summary(r, out);
                }
            }
            Err(core(error))
        }
    }
}

fn report_json(r: &RunReport) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("duration_ms".into(), json!(r.duration.as_millis() as u64));
        o.insert(
            "totals".into(),
            serde_json::to_value(r.totals()).unwrap_or_default(),
        );
        o.remove("duration");
        if let Some(changes) = o.get_mut("changes").and_then(|c| c.as_array_mut()) {
            for (c, line) in changes.iter_mut().zip(&r.changes) {
                if let Some(c) = c.as_object_mut() {
                    c.remove("duration");
                    c.insert(
                        "duration_ms".into(),
                        json!(line.duration.as_millis() as u64),
                    );
                }
            }
        }
    }
    v
}

fn print_run_summary(r: &RunReport, out: &Out) {
    let t = r.totals();
    out.info(&format!(
        "stopped: {} applied, {} already applied, {} failed, {} blocked, {} not run",
        t.applied, t.skipped, t.failed, t.blocked, t.not_run,
    ));
}

// ---- errors ------------------------------------------------------------

fn kind_of(e: &Error) -> &'static str {
    match e {
        Error::Validation(_) => "invalid",
        Error::Blocked { .. } => "blocked",
        Error::ChangeFailed { .. } => "change_failed",
        Error::Pending { .. } => "pending",
        Error::LeaseLost { .. } => "lease_lost",
        Error::Interrupted { .. } => "interrupted",
        Error::Store(_) => "store",
        Error::Lock(_) => "lock",
        Error::Target(_) => "target",
        Error::UnknownChange { .. } => "unknown_change",
        Error::NothingToFix { .. } => "nothing_to_fix",
        Error::FixRefused { .. } => "fix_refused",
        Error::ImportRefused { .. } => "import_refused",
        Error::Config(_) => "config",
        _ => "error",
    }
}

/// The error with its source chain, as one message (a cause already quoted
/// by the message before it is not repeated): core's [`ErrorInfo`](flamingock_core::ErrorInfo) rendering.
pub(crate) fn full_message(e: &(dyn std::error::Error + 'static)) -> String {
    flamingock_core::ErrorInfo::from_error(e).to_string()
}

fn report_failure(f: Fail, opts: &RunOptions, out: &Out) -> Exit {
    let (code, kind, message, extra) = match &f {
        Fail::Usage(m) => (Exit::Usage, "usage", m.clone(), serde_json::Value::Null),
        Fail::Failure(m) => (Exit::Failure, "failure", m.clone(), serde_json::Value::Null),
        Fail::Core { error, at_build } => {
            let code = if *at_build {
                Exit::Usage
            } else if matches!(error, Error::Interrupted { .. }) {
                Exit::Interrupted
            } else {
                Exit::Failure
            };
            let mut message = full_message(error);
            let extra = match error {
                Error::Blocked { blocked, report } => {
                    message = format!(
                        "{} change(s) need an operator; nothing in their stage was run:",
                        blocked.len()
                    );
                    for b in blocked {
                        message.push('\n');
                        message.push_str(&blocked_text(b, opts));
                    }
                    json!({
                        "blocked": blocked.iter().map(issue_json).collect::<Vec<_>>(),
                        "report": report_json(report),
                    })
                }
                Error::ChangeFailed { report, failure } => {
                    let rolled_back = report.changes.iter().any(|c| {
                        *c.change_id == *failure.change_id
                            && matches!(
                                c.outcome,
                                ChangeOutcome::Failed {
                                    rolled_back: true,
                                    ..
                                }
                            )
                    });
                    message.push_str(if rolled_back {
                        "\nthe change was rolled back and recorded as failed: correct it and run apply again"
                    } else {
                        "\nthe change was not undone: it now blocks its stage until an operator resolves it (see `issue get`)"
                    });
                    json!({
                        "change_id": failure.change_id,
                        "rolled_back": rolled_back,
                        "report": report_json(report),
                    })
                }
                Error::Validation(v) => {
                    let drift = v
                        .problems
                        .iter()
                        .any(|p| matches!(p, ValidationProblem::ChecksumDrift { .. }));
                    let p = &opts.program;
                    for problem in &v.problems {
                        match problem {
                            ValidationProblem::ChecksumDrift { change_id, .. } => message.push_str(&format!(
                                "\n'{change_id}': if the edit needs no new change, accept it for good: `{p} audit accept-checksum {change_id} --reason \"<what you checked>\"`"
                            )),
                            ValidationProblem::OrphanAudit { change_ids } => {
                                for id in change_ids {
                                    message.push_str(&format!(
                                        "\n'{id}': if it was removed on purpose, retire it for good: `{p} audit retire {id} --reason \"<why>\"`"
                                    ));
                                }
                                message.push_str("\n(or use --orphans warn to go on with a warning)");
                            }
                            _ => {}
                        }
                    }
                    if drift {
                        message.push_str("\n(or use --drift warn to go on with a warning)");
                    }
                    json!({ "problems": v.problems.iter().map(ToString::to_string).collect::<Vec<_>>() })
                }
                Error::LeaseLost { report, .. } => json!({ "report": report_json(report) }),
                Error::UnknownChange { change_id, .. } => {
                    message.push_str(&format!(
                        "\n(if its effects were put in place outside Flamingock, record it: `{} audit fix {change_id} --resolution applied --baseline --reason \"<what you checked>\"`)",
                        opts.program
                    ));
                    serde_json::Value::Null
                }
                _ => serde_json::Value::Null,
            };
            (code, kind_of(error), message, extra)
        }
    };
    if out.json {
        let mut err = json!({ "kind": kind, "message": message, "exit_code": code.code() });
        if let (Some(o), Some(x)) = (err.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                o.insert(k.clone(), v.clone());
            }
        }
        out.json_doc(&json!({ "status": "error", "error": err }));
    }
    out.error(&message);
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
    use flamingock_core::{Change, ChangeMeta, ChangeResult, Stage};

    struct Put(&'static str, &'static str);
    impl Change for Put {
        type Target = InMemoryTarget;
        fn meta(&self) -> ChangeMeta {
            ChangeMeta::new(self.0).order(self.1).author("ana")
        }
        async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
            tx.put(self.0, "x");
            Ok(())
        }
    }

    fn builder(store: &InMemoryAuditStore) -> FlamingockBuilder {
        Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("kv"))
            .stage(Stage::new("s").change(Put("a", "1")).change(Put("b", "2")))
    }

    async fn go(store: &InMemoryAuditStore, cmd: Command, json: bool) -> (Exit, String) {
        let (out, captured) = Out::capture(false, json);
        let cli = Cli {
            output: crate::cli::OutputArgs {
                json,
                ..Default::default()
            },
            drift: None,
            orphans: None,
            command: cmd,
        };
        let code = execute(cli, builder(store), &RunOptions::default(), &out).await;
        (code, captured.text())
    }

    #[tokio::test]
    async fn validate_apply_validate_against_memory() {
        let store = InMemoryAuditStore::new();
        let (code, text) = go(&store, Command::Validate, false).await;
        assert_eq!(code, Exit::Pending, "{text}");
        assert!(text.contains("2 change(s) pending: a, b"), "{text}");
        let (code, text) = go(&store, Command::Apply, false).await;
        assert_eq!(code, Exit::Ok, "{text}");
        assert!(text.contains("applied  a ("), "{text}");
        assert!(text.contains("done: 2 applied"), "{text}");
        let (code, _) = go(&store, Command::Validate, false).await;
        assert_eq!(code, Exit::Ok);
        let (code, text) = go(&store, Command::Audit(AuditCommand::List), true).await;
        assert_eq!(code, Exit::Ok);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v.as_array().map(Vec::len), Some(2));
        assert_eq!(v[0]["state"], "APPLIED");
        let (code, text) = go(&store, Command::Plan, true).await;
        assert_eq!(code, Exit::Ok);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v[1]["action"]["action"], "skip");
    }

    #[tokio::test]
    async fn audit_list_follows_the_pipeline_order_then_unknown_entries() {
        let store = InMemoryAuditStore::new();
        let pipeline = |with_old: bool| {
            let mut first = Stage::new("zeta").change(Put("z-first", "1"));
            if with_old {
                first.add(Put("old", "2"));
            }
            Flamingock::builder()
                .audit_store(store.clone())
                .target(store.shared_target("kv"))
                .stage(first)
                .stage(Stage::new("alpha").change(Put("a-second", "1")))
        };
        let cli = |command| Cli {
            output: crate::cli::OutputArgs::default(),
            drift: None,
            orphans: None,
            command,
        };
        let (out, _) = Out::capture(false, false);
        let code = execute(
            cli(Command::Apply),
            pipeline(true),
            &RunOptions::default(),
            &out,
        )
        .await;
        assert_eq!(code, Exit::Ok);
        let (out, captured) = Out::capture(false, false);
        let code = execute(
            cli(Command::Audit(AuditCommand::List)),
            pipeline(false),
            &RunOptions::default(),
            &out,
        )
        .await;
        assert_eq!(code, Exit::Ok);
        let text = captured.text();
        let rows: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(rows, ["z-first", "a-second", "old"], "{text}");
    }

    #[tokio::test]
    async fn fix_without_issue_is_refused() {
        let store = InMemoryAuditStore::new();
        go(&store, Command::Apply, false).await;
        let (code, text) = go(
            &store,
            Command::Audit(AuditCommand::Fix {
                change_id: "a".into(),
                resolution: Resolution::Applied,
                reason: "checked".into(),
                operator: Some("ops".into()),
                baseline: false,
            }),
            true,
        )
        .await;
        assert_eq!(code, Exit::Failure);
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"]["kind"], "nothing_to_fix");
    }
}
