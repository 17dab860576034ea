//! The `flamingock` binary: the store from a URL, the changes from a
//! directory of SQL files, then the same commands an application embeds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::TypedValueParser as _;
use clap::Parser;
use serde_json::json;

use crate::cli::{Cli, EXIT_CODES_HELP};
use crate::output::Out;
use crate::redact::Redactor;
use crate::run::{run_with, Exit, RunOptions};
use crate::sql::SqlChanges;
use crate::store::{OpenOptions, OpenedStore, StoreUrl, StoreUrlError};

/// The standalone command line: where the audit store is, where the SQL
/// changes are, and the command.
#[derive(Debug, Parser)]
#[command(
    name = "flamingock",
    version,
    about = "Inspect and resolve Flamingock's audit and lock, and apply directories of SQL changes",
    after_help = EXIT_CODES_HELP
)]
pub struct Standalone {
    /// The audit store: `sqlite:PATH`, `sqlite::memory:`,
    /// `postgres://user[:password]@host[:port]/db[?schema=S]`.
    #[arg(
        long,
        help = "The audit store: sqlite:PATH, sqlite::memory:, postgres://user[:password]@host[:port]/db[?schema=S]",
        env = "FLAMINGOCK_STORE_URL",
        hide_env_values = true,
        global = true,
        value_name = "URL"
    )]
    pub store: Option<String>,

    /// PostgreSQL schema of the audit tables and of the changes' unqualified names (overrides ?schema=).
    #[arg(long, env = "FLAMINGOCK_SCHEMA", global = true, value_name = "SCHEMA")]
    pub schema: Option<String>,

    /// Directory of SQL change files (`<order>__<id>.sql`, or a sqlx,
    /// diesel, Flyway or refinery directory as it is), needed by plan,
    /// validate, apply and baseline.
    #[arg(
        long,
        help = "Directory of SQL change files (<order>__<id>.sql, or a sqlx, diesel, Flyway or refinery directory as it is), needed by plan, validate, apply and baseline",
        env = "FLAMINGOCK_CHANGES_DIR",
        global = true,
        value_name = "DIR"
    )]
    pub changes: Option<PathBuf>,

    /// How the files of --changes are named: auto (recognised from the
    /// names), flamingock (`<order>__<id>.sql`), sqlx, diesel, flyway or
    /// refinery; read as they are, without renaming.
    #[arg(
        long,
        default_value = "auto",
        value_parser = clap::builder::PossibleValuesParser::new(["auto", "flamingock", "sqlx", "diesel", "flyway", "refinery"])
            .try_map(|s| s.parse::<crate::sql::Layout>()),
        env = "FLAMINGOCK_LAYOUT",
        global = true
    )]
    pub layout: crate::sql::Layout,

    /// PostgreSQL: cancel any statement of a SQL change file that runs longer
    /// than this (e.g. 30s, 5m), failing the change instead of holding the
    /// lock indefinitely. Set with SET LOCAL inside each file's transaction;
    /// for transactional=false files, per statement for the session.
    #[arg(
        long,
        env = "FLAMINGOCK_STATEMENT_TIMEOUT",
        global = true,
        value_name = "DURATION",
        value_parser = crate::duration::parse
    )]
    pub statement_timeout: Option<std::time::Duration>,

    /// The command.
    #[command(flatten)]
    pub cli: Cli,
}

/// The binary's `main`: parses the process arguments, sets up logging and
/// runs the command.
pub fn main() -> ExitCode {
    let args = match Standalone::try_parse() {
        Ok(a) => a,
        Err(e) => {
            // clap prints help/version on stdout (exit 0) and usage errors on stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
    };
    let redactor = args
        .store
        .as_deref()
        .map(Redactor::for_url)
        .unwrap_or_default();
    crate::init_tracing_with(&args.cli.output, redactor.clone());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln_safe(&format!("error: cannot start the async runtime: {e}"));
            return ExitCode::from(Exit::Failure.code());
        }
    };
    rt.block_on(run_standalone(args, redactor)).into()
}

fn eprintln_safe(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Runs parsed standalone arguments.
pub async fn run_standalone(args: Standalone, redactor: Redactor) -> Exit {
    let color = crate::output::use_color(args.cli.output.no_color);
    let out = Out::stdio(
        color,
        args.cli.output.json,
        args.cli.output.quiet,
        redactor.clone(),
    );
    let fail = |code: Exit, kind: &str, message: String| {
        if out.json {
            out.json_doc(&json!({
                "status": "error",
                "error": { "kind": kind, "message": message, "exit_code": code.code() }
            }));
        }
        out.error(&message);
        code
    };
    // Everything that can be checked without the store first: a malformed
    // directory or URL never touches it.
    let url = match StoreUrl::parse(args.store.as_deref().unwrap_or("")) {
        Ok(u) => u,
        Err(e @ StoreUrlError::Missing) => return fail(Exit::Usage, "usage", e.to_string()),
        Err(e) => return fail(Exit::Usage, "store_url", e.to_string()),
    };
    let changes = match &args.changes {
        None => None,
        Some(dir) => match SqlChanges::load_dir_as(dir, args.layout) {
            // An empty directory is a load error: nothing to run is not success.
            Ok(c) => Some(c),
            Err(e) => return fail(Exit::Usage, "change_files", e.to_string()),
        },
    };
    let opts = OpenOptions {
        schema: args.schema.clone(),
    };
    if let Err(e) = opts.check(&url) {
        return fail(Exit::Usage, "store_url", e.to_string());
    }
    let store = match OpenedStore::open(&url, &opts).await {
        Ok(s) => s,
        Err(e) => return fail(Exit::Failure, "store", crate::run::full_message(&e)),
    };
    if changes.is_some() && !store.runs_sql() {
        return fail(
            Exit::Usage,
            "usage",
            "SQL file changes (--changes) run on a SQL store: sqlite: or postgres://".into(),
        );
    }
    if let Some(c) = &changes {
        if let Err(e) = store.check_session_state(c, args.statement_timeout.is_some()) {
            return fail(Exit::Usage, "usage", e);
        }
    }
    let changes = match (changes, args.statement_timeout) {
        (Some(c), Some(limit)) if store.has_statement_timeout() => Some(c.statement_timeout(limit)),
        (Some(_), Some(_)) => {
            return fail(
                Exit::Usage,
                "usage",
                "--statement-timeout needs a PostgreSQL store (SQLite has no statement timeout)"
                    .into(),
            )
        }
        (changes, _) => changes,
    };
    let builder = match store.builder(changes.as_ref()).await {
        Ok(b) => b,
        Err(e) => return fail(Exit::Usage, "target", crate::run::full_message(&e)),
    };
    let mut run_opts = RunOptions::default()
        .redactor(redactor)
        .has_changes(changes.is_some());
    if let Some(c) = changes {
        run_opts = run_opts.sql_changes(c);
    }
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    if store.runs_sql() {
        let store = store.clone();
        run_opts = run_opts.history(crate::run::HistoryReader::new(move |tool, table| {
            let store = store.clone();
            Box::pin(async move { store.read_history(tool, table.as_deref()).await })
        }));
    }
    run_with(args.cli, builder, run_opts).await
}
