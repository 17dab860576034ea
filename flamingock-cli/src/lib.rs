//! # flamingock-cli
//!
//! The `flamingock` command line, and the same commands embeddable in an
//! application. Operators see and resolve what the runner refused to do
//! (`issue list`, `issue get`, `audit fix`), inspect the audit and the lock,
//! and small teams apply directories of plain SQL files without compiling
//! anything (`flamingock apply --changes DIR`).
//!
//! ```text
//! flamingock --store sqlite:app.db --changes changes/ plan
//! flamingock --store postgres://app@db/app --changes changes/ apply
//! flamingock --store postgres://app@db/app issue get add-index
//! flamingock --store postgres://app@db/app audit fix add-index --resolution applied --reason "index exists"
//! ```
//!
//! Commands: `audit list|history|fix|retire|accept-checksum`, `issue list|get`, `lock status|release`,
//! `plan`, `validate`, `apply`; `--json` for scripts; exit codes
//! 0 ok, 1 failure, 2 usage, 3 pending/blocked in `validate`
//! ([`Exit`]).
//!
//! ## Embedding
//!
//! An application flattens [`Cli`] into its own clap parser and hands it,
//! with its runner builder (store, targets, its compiled changes), to
//! [`run`]. Directories of SQL files can be compiled into the application
//! with [`embed_sql_dir!`], giving the same change list the CLI loads at run
//! time. Besides this crate, the application depends on `clap` (feature
//! `derive`), `flamingock-core`, `flamingock-sqlite` and `tokio` (features
//! `macros`, `rt-multi-thread`):
//!
//! ```no_run
//! use clap::{Parser, Subcommand};
//! use flamingock_core::Flamingock;
//! use flamingock_sqlite::{SqliteAuditStore, SqliteTarget};
//!
//! #[derive(Parser)]
//! struct App {
//!     #[command(subcommand)]
//!     command: Option<AppCommand>,
//! }
//!
//! #[derive(Subcommand)]
//! enum AppCommand {
//!     /// Inspect and resolve the change audit.
//!     Flamingock(flamingock_cli::Cli),
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<std::process::ExitCode, Box<dyn std::error::Error>> {
//!     let app = App::parse();
//!     // Or compiled in: flamingock_cli::embed_sql_dir!("changes")?
//!     let changes = flamingock_cli::SqlChanges::load_dir("changes")?;
//!     let store = SqliteAuditStore::connect("app.db").await?;
//!     let builder = Flamingock::builder()
//!         .audit_store(store.clone())
//!         .target(store.shared_target("app-db").build().await?)
//!         .stage(changes.stage::<SqliteTarget>("schema", "app-db"));
//!     match app.command {
//!         Some(AppCommand::Flamingock(cli)) => {
//!             flamingock_cli::init_tracing(&cli.output);
//!             Ok(flamingock_cli::run(cli, builder).await)
//!         }
//!         None => {
//!             builder.build()?.run().await?;
//!             // ... serve
//!             Ok(std::process::ExitCode::SUCCESS)
//!         }
//!     }
//! }
//! ```
//!
//! ## Secrets
//!
//! Everything printed, logs included, passes through a [`Redactor`]: the
//! password of the store URL never appears, even when a driver echoes it.
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod cli;
mod duration;
pub mod output;
pub mod redact;
mod run;
pub mod standalone;
pub mod store;

pub use cli::{
    AuditCommand, Cli, Command, DriftArg, ImportTool, IssueCommand, LockCommand, OutputArgs,
    Resolution, EXIT_CODES_HELP,
};
pub use redact::Redactor;
pub use run::{run, run_with, Exit, HistoryRead, HistoryReader, RunOptions};
pub use sql::{SqlChanges, SqlFile, SqlTarget};

/// Re-exported: directories of SQL files as changes (`flamingock-sql`).
pub use flamingock_sql as sql;
pub use flamingock_sql::split;

/// Embeds a directory of SQL change files (relative to the crate's
/// `Cargo.toml`) at compile time, read by the same loader as
/// `flamingock apply --changes DIR` (`flamingock_sql::SqlChanges::from_dir_entries`)
/// in the layout its names show (this project's, sqlx, diesel, Flyway or
/// refinery) or the one given (`embed_sql_dir!("migrations", Layout::Refinery)`).
/// A malformed name, a duplicate id or order, an empty file or a bad header
/// is a compile error with the loader's message. Evaluates to
/// `Result<SqlChanges, LoadErrors>`.
///
/// Editing a file rebuilds the crate (the contents are `include_str!`s);
/// adding or removing one needs `println!("cargo:rerun-if-changed=DIR")` in
/// the crate's `build.rs`. A debug build whose directory is still where it
/// was built from compares it at start-up and warns, naming the files, when
/// it no longer matches what was embedded, so a stale build is not mistaken
/// for a store problem.
///
/// ```
/// let changes = flamingock_cli::embed_sql_dir!("tests/sql/ok")?;
/// assert_eq!(changes.files()[0].id(), "create-users");
/// // The same list as loading the directory at run time:
/// let loaded = flamingock_cli::sql::SqlChanges::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sql/ok"))?;
/// assert_eq!(changes.files(), loaded.files());
/// # Ok::<(), flamingock_cli::sql::LoadErrors>(())
/// ```
///
/// A directory the loader refuses does not compile:
///
/// ```compile_fail
/// let changes = flamingock_cli::embed_sql_dir!("tests/sql/bad");
/// ```
#[macro_export]
macro_rules! embed_sql_dir {
    ($dir:literal) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, Auto)
    };
    ($dir:literal, $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $b:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
    ($dir:literal, $a:ident :: $b:ident :: $c:ident :: $layout:ident) => {
        $crate::__private::embed_sql_dir_impl!($crate::sql, $dir, $layout)
    };
}

#[doc(hidden)]
pub mod __private {
    pub use flamingock_macros::embed_sql_dir_impl;
}

/// Installs a `tracing` subscriber writing to stderr at the level `-q`/`-v`
/// ask for (`RUST_LOG` overrides). Does nothing when one is installed already.
pub fn init_tracing(output: &OutputArgs) {
    init_tracing_with(output, Redactor::default());
}

/// [`init_tracing`], masking secrets with `redactor`.
pub fn init_tracing_with(output: &OutputArgs, redactor: Redactor) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let level = if output.quiet {
        "error"
    } else {
        match output.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        }
    };
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let dedup = from_env.is_none() && output.verbose == 0;
    let filter = EnvFilter::new(from_env.as_deref().unwrap_or(level));
    let ansi = !output.no_color
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        && std::io::stderr().is_terminal();
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(move || redact::RedactingWriter::new(std::io::stderr(), redactor.clone()))
        .with_filter(filter)
        .with_filter(SkipReported { active: dedup });
    let _ = tracing_subscriber::registry().with(layer).try_init();
}

/// Leaves out, at the default verbosity, the core's log lines for failures
/// the CLI reports itself (a failed change, a failed run), so each failure is
/// shown once.
struct SkipReported {
    active: bool,
}

impl<S> tracing_subscriber::layer::Filter<S> for SkipReported {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        if !self.active || !event.metadata().target().starts_with("flamingock_core") {
            return true;
        }
        struct Message(Option<String>);
        impl tracing::field::Visit for Message {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "message" {
                    self.0 = Some(value.to_owned());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = Some(format!("{value:?}"));
                }
            }
        }
        let mut m = Message(None);
        event.record(&mut m);
        !matches!(m.0.as_deref(), Some("run failed" | "change failed"))
    }
}
