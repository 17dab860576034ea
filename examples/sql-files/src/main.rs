//! An application whose schema changes are plain SQL files compiled into the
//! binary, with Flamingock's operator commands as a subcommand:
//!
//! ```text
//! cargo run -p example-sql-files                        # apply pending changes, then "serve"
//! cargo run -p example-sql-files -- flamingock audit list
//! cargo run -p example-sql-files -- flamingock issue list
//! ```
#![allow(clippy::print_stdout)] // an example prints its results

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flamingock::cli::RunOptions;
use flamingock::sqlite::{sqlx, SqliteAuditStore, SqliteTarget};
use flamingock::Flamingock;

#[derive(Parser)]
#[command(
    name = "example-sql-files",
    about = "A small app with embedded SQL changes"
)]
struct App {
    /// The application's SQLite database (also holds the audit and the lock).
    #[arg(long, env = "APP_DB", default_value = "app.db", global = true)]
    db: PathBuf,
    #[command(subcommand)]
    command: Option<AppCommand>,
}

#[derive(Subcommand)]
enum AppCommand {
    /// Apply pending changes and start (the default).
    Serve,
    /// Inspect and resolve the change audit and lock.
    Flamingock(flamingock::cli::Cli),
}

/// The audit store and, on the same database, the target the SQL files run on.
async fn open(
    db: &std::path::Path,
) -> Result<(SqliteAuditStore, SqliteTarget), Box<dyn std::error::Error>> {
    let store = SqliteAuditStore::connect(db).await?;
    let target = store.shared_target("app-db").build().await?;
    Ok((store, target))
}

#[tokio::main]
async fn main() -> ExitCode {
    let app = App::parse();
    // Checked at start-up like the CLI checks a directory: same parser, same messages.
    let changes = match flamingock::cli::embed_sql_dir!("changes") {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (store, target) = match open(&app.db).await {
        Ok(opened) => opened,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let builder = Flamingock::builder()
        .service("example-sql-files")
        .audit_store(store.clone())
        .target(target)
        .stage(changes.stage::<SqliteTarget>("schema", "app-db"));

    match app.command {
        Some(AppCommand::Flamingock(cli)) => {
            flamingock::cli::init_tracing(&cli.output);
            let opts = RunOptions::default()
                .program("example-sql-files flamingock")
                .sql_changes(changes);
            flamingock::cli::run_with(cli, builder, opts).await.into()
        }
        None | Some(AppCommand::Serve) => {
            let runner = match builder.build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match runner.run().await {
                Ok(report) => print!("{report}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            let users: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM users")
                .fetch_one(store.pool())
                .await;
            match users {
                Ok(n) => println!("serving with {n} user(s)"),
                Err(e) => eprintln!("error: {e}"),
            }
            ExitCode::SUCCESS
        }
    }
}
