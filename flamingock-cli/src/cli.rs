//! The command-line interface as clap types, embeddable in an application's
//! own parser.

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

/// The exit codes, as shown in `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (validate: nothing pending)
  1  failure (a store or lock error, a failed or blocked change, drift, a refused fix)
  2  usage (bad flags, unknown store URL scheme, malformed change files, invalid pipeline)
  3  validate: changes are pending or blocked";

/// The operator commands, with their output options: flatten into an
/// application's clap parser to expose them for the application's own
/// compiled changes (`my-app flamingock audit list`), then hand them to
/// [`run`](crate::run).
///
/// ```
/// use clap::{Parser, Subcommand};
///
/// #[derive(Parser)]
/// struct App {
///     #[command(subcommand)]
///     command: AppCommand,
/// }
///
/// #[derive(Subcommand)]
/// enum AppCommand {
///     /// Start the server.
///     Serve,
///     /// Inspect and resolve the change audit.
///     Flamingock(flamingock_cli::Cli),
/// }
///
/// let app = App::parse_from(["my-app", "flamingock", "audit", "list", "--json"]);
/// let AppCommand::Flamingock(cli) = app.command else { unreachable!() };
/// assert!(cli.output.json);
/// ```
#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Output and logging options.
    #[command(flatten)]
    pub output: OutputArgs,

    /// What to do when an applied change's content changed (plan, validate, apply).
    #[arg(long, global = true, value_enum, value_name = "POLICY")]
    pub drift: Option<DriftArg>,

    /// What to do with audit entries of changes no longer in the changes
    /// (plan, validate, apply); `audit retire` resolves one for good.
    #[arg(long, global = true, value_enum, value_name = "POLICY")]
    pub orphans: Option<DriftArg>,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Output and logging options.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// Print JSON for scripts instead of tables (stable field names).
    #[arg(long, global = true)]
    pub json: bool,

    /// No colours (also off with NO_COLOR set, or when stdout is not a terminal).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// Less output: errors only in logs, no progress lines.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--drift` and `--orphans`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriftArg {
    /// Fail validation (the default).
    Error,
    /// Log a warning and go on.
    Warn,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// The audit: current state, history, operator fixes.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Changes the runner refuses to run until an operator resolves them.
    #[command(subcommand)]
    Issue(IssueCommand),
    /// The distributed lock.
    #[command(subcommand)]
    Lock(LockCommand),
    /// What `apply` would do, in order, with strategy and target (takes no lock).
    Plan,
    /// Check changes against the audit: exit 0 when nothing is pending, 3 when
    /// something is pending or blocked, 1 on drift or orphaned audit entries.
    Validate,
    /// Apply every pending change, in order, exactly once.
    Apply,
    /// Record every change up to and including one as applied without
    /// running it, for a database built by hand, restored from a dump or
    /// migrated by another tool (takes the lock; refused, with the list,
    /// when any of them already has an audit entry; changes baselined before
    /// are left as they are).
    Baseline {
        /// The last change to record: its id, or its order when that names
        /// one change.
        #[arg(long, value_name = "CHANGE_ID|ORDER")]
        up_to: String,
        /// Why: how the database got there (recorded in the audit).
        #[arg(long)]
        reason: String,
        /// Who (recorded in the audit); defaults to $USER, else this host's name.
        #[arg(long, env = "FLAMINGOCK_OPERATOR")]
        operator: Option<String>,
    },
    /// Record every migration another tool applied, as its history table
    /// in the store's database says, as applied here, so that `apply` runs
    /// only what that tool had not (takes the lock when there is something
    /// to record; refused, with the list, when a row does not fit the
    /// changes: a migration without a file, a failed row, a changed file).
    Import {
        /// The tool whose history to read.
        #[arg(value_enum)]
        tool: ImportTool,
        /// Its history table, `name` or `schema.name`, when not the tool's
        /// default (`_sqlx_migrations`, `__diesel_schema_migrations`,
        /// `flyway_schema_history`, `refinery_schema_history`).
        #[arg(long, value_name = "TABLE")]
        table: Option<String>,
        /// Why (recorded in the audit).
        #[arg(long, default_value = "imported from another tool's history")]
        reason: String,
        /// Who (recorded in the audit); defaults to $USER, else this host's name.
        #[arg(long, env = "FLAMINGOCK_OPERATOR")]
        operator: Option<String>,
        /// Record what matches and leave what does not fit (each still listed).
        #[arg(long)]
        accept_mismatches: bool,
        /// Show what would be recorded and what does not fit, writing nothing
        /// and taking no lock.
        #[arg(long)]
        dry_run: bool,
    },
}

/// The tools `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ImportTool {
    /// sqlx (`_sqlx_migrations`).
    Sqlx,
    /// diesel (`__diesel_schema_migrations`).
    Diesel,
    /// Flyway (`flyway_schema_history`).
    Flyway,
    /// refinery (`refinery_schema_history`).
    Refinery,
}

impl ImportTool {
    /// The tool, as core names it.
    pub fn tool(self) -> flamingock_core::import::Tool {
        use flamingock_core::import::Tool;
        match self {
            ImportTool::Sqlx => Tool::Sqlx,
            ImportTool::Diesel => Tool::Diesel,
            ImportTool::Flyway => Tool::Flyway,
            ImportTool::Refinery => Tool::Refinery,
        }
    }
}

/// `audit ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum AuditCommand {
    /// The current state of every change in the audit.
    List,
    /// Every recorded state transition, oldest first.
    History {
        /// Only this change.
        #[arg(long, value_name = "CHANGE_ID")]
        change: Option<String>,
        /// Only entries at or after this instant (RFC 3339, e.g. 2025-01-31T12:00:00Z).
        #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
        since: Option<DateTime<Utc>>,
    },
    /// Record how an operator resolved a blocked change (takes the lock;
    /// refused when the change has no issue, unless --baseline).
    Fix {
        /// The change to resolve.
        change_id: String,
        /// `applied`: its effects are fully in place; `rolled-back`: they are
        /// not (partial effects undone), so it will be applied again.
        #[arg(long, value_enum)]
        resolution: Resolution,
        /// Why: what was checked (recorded in the audit).
        #[arg(long)]
        reason: String,
        /// Who (recorded in the audit); defaults to $USER, else this host's name.
        #[arg(long, env = "FLAMINGOCK_OPERATOR")]
        operator: Option<String>,
        /// With `--resolution applied`: record a change that has no audit entry
        /// at all (applied by hand or by another tool before Flamingock managed
        /// it) as applied, from its declaration in the loaded changes.
        #[arg(long)]
        baseline: bool,
    },
    /// Retire an audit entry whose change was removed from the changes on
    /// purpose, so that it no longer fails validation (takes the lock;
    /// recorded as MANUAL_MARKED_AS_ROLLED_BACK with `retired: true`).
    Retire {
        /// The orphaned change.
        change_id: String,
        /// Why it was removed (recorded in the audit).
        #[arg(long)]
        reason: String,
        /// Who (recorded in the audit); defaults to $USER, else this host's name.
        #[arg(long, env = "FLAMINGOCK_OPERATOR")]
        operator: Option<String>,
    },
    /// Accept the edited content of an applied change (checksum drift) after
    /// checking that it needs no new change (takes the lock; recorded as
    /// MANUAL_MARKED_AS_APPLIED with the new checksum and `previous_checksum`).
    AcceptChecksum {
        /// The drifted change.
        change_id: String,
        /// What was checked (recorded in the audit).
        #[arg(long)]
        reason: String,
        /// Who (recorded in the audit); defaults to $USER, else this host's name.
        #[arg(long, env = "FLAMINGOCK_OPERATOR")]
        operator: Option<String>,
    },
}

/// `--resolution`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resolution {
    /// The change's effects are fully in place.
    Applied,
    /// The change's effects are not in place; apply it again.
    RolledBack,
}

/// `issue ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum IssueCommand {
    /// Every change that needs an operator.
    List,
    /// One change: last state, error, and what to do, step by step.
    Get {
        /// The change.
        change_id: String,
    },
}

/// `lock ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum LockCommand {
    /// Who holds the lock, with its fencing token and expiry.
    Status,
    /// Remove the lock whoever holds it (the fence keeps a stale holder from
    /// writing the audit, but its non-transactional work may still be running).
    Release {
        /// Required: this removes someone else's lock.
        #[arg(long, required = true)]
        force: bool,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

fn parse_rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| format!("'{s}' is not an RFC 3339 instant such as 2025-01-31T12:00:00Z: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct App {
        #[command(flatten)]
        cli: Cli,
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        App::try_parse_from(std::iter::once("flamingock").chain(args.iter().copied()))
            .map(|a| a.cli)
    }

    #[test]
    fn commands_parse() {
        let c = parse(&[
            "audit",
            "history",
            "--change",
            "x",
            "--since",
            "2025-01-31T12:00:00+01:00",
            "--json",
        ])
        .expect("parses");
        match c.command {
            Command::Audit(AuditCommand::History { change, since }) => {
                assert_eq!(change.as_deref(), Some("x"));
                assert_eq!(
                    since.map(|s| s.to_rfc3339()).as_deref(),
                    Some("2025-01-31T11:00:00+00:00")
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(c.output.json);
        let c = parse(&[
            "-vv",
            "audit",
            "fix",
            "c1",
            "--resolution",
            "rolled-back",
            "--reason",
            "checked",
        ])
        .expect("parses");
        assert_eq!(c.output.verbose, 2);
        assert!(matches!(
            c.command,
            Command::Audit(AuditCommand::Fix {
                resolution: Resolution::RolledBack,
                ..
            })
        ));
        let c = parse(&["validate", "--drift", "warn"]).expect("parses");
        assert_eq!(c.drift, Some(DriftArg::Warn));
        let c = parse(&["validate", "--orphans", "warn"]).expect("parses");
        assert_eq!(c.orphans, Some(DriftArg::Warn));
        let c = parse(&["audit", "retire", "old", "--reason", "merged"]).expect("parses");
        assert!(matches!(
            c.command,
            Command::Audit(AuditCommand::Retire { .. })
        ));
        let c = parse(&[
            "audit",
            "fix",
            "c1",
            "--resolution",
            "applied",
            "--reason",
            "made by hand",
            "--baseline",
        ])
        .expect("parses");
        assert!(matches!(
            c.command,
            Command::Audit(AuditCommand::Fix { baseline: true, .. })
        ));
    }

    #[test]
    fn bad_input_is_a_usage_error() {
        for args in [
            &["audit", "history", "--since", "yesterday"][..],
            &[
                "audit",
                "fix",
                "c1",
                "--resolution",
                "maybe",
                "--reason",
                "x",
            ],
            &["audit", "fix", "c1", "--resolution", "applied"],
            &["audit", "retire", "c1"],
            &["audit", "accept-checksum", "c1"],
            &["validate", "--orphans", "maybe"],
            &["lock", "release"],
            &["-q", "-v", "plan"],
            &["frobnicate"],
        ] {
            let e = parse(args).expect_err("usage error");
            assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
        }
    }
}
