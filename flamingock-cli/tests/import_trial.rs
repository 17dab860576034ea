//! A trial of `import` on a real migration set, which this test never
//! fetches: give it a directory as the tool keeps it.
//!
//! ```sh
//! FLAMINGOCK_IMPORT_TRIAL_DIR=path/to/migrations FLAMINGOCK_IMPORT_TRIAL_TOOL=sqlx \
//!   cargo test -p flamingock-cli --test import_trial -- --ignored --nocapture
//! ```
//!
//! The tool migrates a fresh database with every migration but the last
//! `FLAMINGOCK_IMPORT_TRIAL_HOLD_BACK` (default 1): the real sqlx migrator
//! and refinery runner in-process; for diesel and Flyway, each file run in
//! the tool's order and its history row written as the tool writes it.
//! Then `flamingock import` and `apply` must record exactly what the tool
//! applied and run exactly what it held back. PostgreSQL
//! (`FLAMINGOCK_TEST_POSTGRES_URL`) unless `FLAMINGOCK_IMPORT_TRIAL_DB=sqlite`.
#![cfg(all(feature = "postgres", feature = "sqlite"))]

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{applied_ids, flamingock, flyway_checksum, strings, Output};
use flamingock_cli::SqlChanges;
use flamingock_test_support::{namespace, require_service, services};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create");
    for e in std::fs::read_dir(from).expect("read the set") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

enum Db {
    Pg { base: String, schema: String },
    Sqlite { file: PathBuf },
}

impl Db {
    fn store(&self) -> String {
        match self {
            Db::Pg { base, schema } => {
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}schema={schema}")
            }
            Db::Sqlite { file } => format!("sqlite:{}", file.display()),
        }
    }

    async fn pg(&self) -> sqlx::PgPool {
        let Db::Pg { base, schema } = self else {
            unreachable!()
        };
        let admin = sqlx::PgPool::connect(base).await.expect("connect");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .execute(&admin)
        .await
        .expect("schema");
        admin.close().await;
        let opts = sqlx::postgres::PgConnectOptions::from_str(base)
            .expect("url")
            .options([("search_path", schema.as_str())]);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("connect")
    }

    async fn sqlite(&self) -> sqlx::SqlitePool {
        let Db::Sqlite { file } = self else {
            unreachable!()
        };
        sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", file.display()))
            .await
            .expect("open")
    }

    /// Runs `sql` whole (the tool's own way: one script per file).
    async fn exec(&self, sql: &str) {
        match self {
            Db::Pg { .. } => {
                let pool = self.pg().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql:.200}"));
                pool.close().await;
            }
            Db::Sqlite { .. } => {
                let pool = self.sqlite().await;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                    .execute(&pool)
                    .await
                    .unwrap_or_else(|e| panic!("{e}: {sql:.200}"));
                pool.close().await;
            }
        }
    }
}

fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the tool does to `db` with the migrations in `dir` (in order).
async fn migrate(tool: &str, db: &Db, dir: &Path, changes: &SqlChanges) {
    match tool {
        "sqlx" => {
            let migrator = sqlx::migrate::Migrator::new(dir.to_path_buf())
                .await
                .expect("sqlx reads the set");
            match db {
                Db::Pg { .. } => {
                    let pool = db.pg().await;
                    migrator.run(&pool).await.expect("sqlx migrates");
                    pool.close().await;
                }
                Db::Sqlite { .. } => {
                    let pool = db.sqlite().await;
                    migrator.run(&pool).await.expect("sqlx migrates");
                    pool.close().await;
                }
            }
        }
        "refinery" => {
            let Db::Pg { base, schema } = db else {
                panic!("the refinery trial runs on PostgreSQL")
            };
            db.exec("SELECT 1").await;
            let mut cfg = tokio_postgres::Config::from_str(base).expect("url");
            cfg.options(format!("-c search_path={schema}"));
            let (mut client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
            let conn = tokio::spawn(conn);
            let migrations = refinery::load_sql_migrations(dir).expect("refinery reads the set");
            refinery::Runner::new(&migrations)
                .run_async(&mut client)
                .await
                .expect("refinery migrates");
            drop(client);
            let _ = conn.await;
        }
        "diesel" => {
            db.exec(
                "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (
                   version VARCHAR(50) PRIMARY KEY NOT NULL,
                   run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
            )
            .await;
            for f in changes.files() {
                let version = f
                    .id()
                    .split('_')
                    .next()
                    .unwrap_or_default()
                    .replace('-', "");
                db.exec(&format!(
                    "{}\n;INSERT INTO __diesel_schema_migrations (version) VALUES ({})",
                    f.sql(),
                    sql_quote(&version)
                ))
                .await;
            }
        }
        "flyway" => {
            db.exec(
                "CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL PRIMARY KEY,
                   version VARCHAR(50), description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL,
                   script VARCHAR(1000) NOT NULL, checksum INTEGER, installed_by VARCHAR(100) NOT NULL,
                   installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
                   execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL)",
            )
            .await;
            for (rank, f) in changes.files().into_iter().enumerate() {
                let stem = f.id().strip_prefix('V').unwrap_or(f.id());
                let (version, description) = stem.split_once("__").unwrap_or((stem, ""));
                let raw = std::fs::read_to_string(dir.join(f.file_name())).expect("read");
                // Flyway runs a file PostgreSQL refuses in a transaction
                // (CONCURRENTLY) statement by statement.
                let body = if f.sql().contains("CONCURRENTLY") {
                    for statement in flamingock_postgres::split_statements(f.sql()) {
                        db.exec(statement).await;
                    }
                    String::new()
                } else {
                    f.sql().to_owned()
                };
                db.exec(&format!(
                    "{}\n;INSERT INTO flyway_schema_history VALUES ({}, {}, {}, 'SQL', {}, {}, 'trial', CURRENT_TIMESTAMP, 1, true)",
                    body,
                    rank + 1,
                    sql_quote(&version.replace('_', ".")),
                    sql_quote(&description.replace('_', " ")),
                    sql_quote(f.file_name()),
                    flyway_checksum(&raw),
                ))
                .await;
            }
        }
        other => panic!(
            "FLAMINGOCK_IMPORT_TRIAL_TOOL={other}: expected sqlx, refinery, diesel or flyway"
        ),
    }
}

#[tokio::test]
#[ignore = "a trial on a real migration set: set FLAMINGOCK_IMPORT_TRIAL_DIR and FLAMINGOCK_IMPORT_TRIAL_TOOL"]
async fn a_real_migration_set_is_imported_and_only_the_held_back_part_applies() {
    let (Some(set), Some(tool)) = (
        var("FLAMINGOCK_IMPORT_TRIAL_DIR"),
        var("FLAMINGOCK_IMPORT_TRIAL_TOOL"),
    ) else {
        panic!("set FLAMINGOCK_IMPORT_TRIAL_DIR and FLAMINGOCK_IMPORT_TRIAL_TOOL");
    };
    let hold_back: usize =
        var("FLAMINGOCK_IMPORT_TRIAL_HOLD_BACK").map_or(1, |v| v.parse().expect("a number"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("migrations");
    let held = tmp.path().join("held");
    copy_dir(Path::new(&set), &dir);
    let layout = match tool.as_str() {
        "sqlx" => flamingock_cli::sql::Layout::Sqlx,
        "diesel" => flamingock_cli::sql::Layout::Diesel,
        "refinery" => flamingock_cli::sql::Layout::Refinery,
        _ => flamingock_cli::sql::Layout::Flyway,
    };
    let all = SqlChanges::load_dir_as(&dir, layout).unwrap_or_else(|e| panic!("{e}"));
    let n = all.files().len();
    assert!(n > hold_back, "{n} migrations: nothing left to import");
    // Move the last ones (and their down/undo files) away while the tool runs.
    std::fs::create_dir_all(&held).expect("held");
    let mut held_ids = Vec::new();
    for f in &all.files()[n - hold_back..] {
        held_ids.push(f.id().to_owned());
        let mut names = vec![f.file_name().to_owned()];
        names.extend(f.rollback().map(|(name, _)| name.to_owned()));
        for name in names {
            let top = name.split('/').next().unwrap_or(&name).to_owned();
            if dir.join(&top).exists() {
                std::fs::rename(dir.join(&top), held.join(&top)).expect("hold back");
            }
        }
    }
    let db = match var("FLAMINGOCK_IMPORT_TRIAL_DB").as_deref() {
        Some("sqlite") => Db::Sqlite {
            file: tmp.path().join("trial.db"),
        },
        _ => Db::Pg {
            base: require_service(&services::POSTGRES),
            schema: namespace("trial"),
        },
    };
    let migrated = SqlChanges::load_dir_as(&dir, layout).unwrap_or_else(|e| panic!("{e}"));
    migrate(&tool, &db, &dir, &migrated).await;
    for e in std::fs::read_dir(&held).expect("held") {
        let e = e.expect("entry");
        std::fs::rename(e.path(), dir.join(e.file_name())).expect("restore");
    }
    let store = db.store();
    let dir_text = dir.display().to_string();
    let run = |args: &[&str]| -> Output {
        let mut all = vec!["--store", &store, "--changes", &dir_text];
        all.extend_from_slice(args);
        flamingock(&all)
    };
    let imported = run(&["import", &tool, "--json"]).expect_code(0).json();
    let applied = run(&["apply", "--json"]).expect_code(0).json();
    let ran = applied_ids(&applied);
    let with_checksum = run(&["audit", "list", "--json"]).expect_code(0).json();
    let matching = with_checksum
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["metadata"]["checksum_matches"] == true)
                .count()
        })
        .unwrap_or(0);
    eprintln!(
        "trial {tool} {set}: {n} migrations, {} migrated by {tool}, {} imported ({matching} with matching checksums), {} mismatches {:?}, {} applied after import {:?}",
        n - hold_back,
        strings(&imported["imported"]).len(),
        strings(&imported["mismatches"]).len(),
        strings(&imported["mismatches"]),
        ran.len(),
        ran
    );
    if let Db::Pg { base, schema } = &db {
        let pool = sqlx::PgPool::connect(base).await.expect("connect");
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
    assert_eq!(strings(&imported["imported"]).len(), n - hold_back);
    assert!(strings(&imported["mismatches"]).is_empty());
    assert_eq!(ran, held_ids);
}
