//! `flamingock import` on SQLite: a database migrated by the real sqlx
//! migrator (run in-process), and diesel's history table as diesel's
//! source defines it. After `import`, `apply` runs only what the tool had
//! not; every file here fails when run twice.
#![cfg(feature = "sqlite")]

mod common;

use common::{applied_ids, flamingock, strings, write_files, Output};
use flamingock_sqlite::sqlx;

struct Env {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    db: std::path::PathBuf,
    store: String,
}

impl Env {
    fn new(files: &[(&str, &str)]) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("migrations");
        write_files(&dir, files);
        let db = tmp.path().join("app.db");
        let store = format!("sqlite:{}", db.display());
        Env {
            _tmp: tmp,
            dir,
            db,
            store,
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.display().to_string();
        let mut all = vec!["--store", &self.store, "--changes", &dir];
        all.extend_from_slice(args);
        flamingock(&all)
    }

    async fn pool(&self) -> sqlx::SqlitePool {
        let url = format!("sqlite://{}?mode=rwc", self.db.display());
        sqlx::SqlitePool::connect(&url).await.expect("open")
    }
}

#[tokio::test]
async fn a_database_sqlx_migrated_is_imported_and_only_new_files_apply() {
    let env = Env::new(&[
        (
            "1_create_users.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL);\n",
        ),
        (
            "2_add_orders.up.sql",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id));\n",
        ),
        ("2_add_orders.down.sql", "DROP TABLE orders;\n"),
    ]);
    let pool = env.pool().await;
    sqlx::migrate::Migrator::new(env.dir.clone())
        .await
        .expect("sqlx reads the directory")
        .run(&pool)
        .await
        .expect("sqlx migrates");
    pool.close().await;
    write_files(
        &env.dir,
        &[(
            "10_add_name.sql",
            "ALTER TABLE users ADD COLUMN name TEXT;\n",
        )],
    );

    let text = env.run(&["import", "sqlx", "--dry-run"]);
    text.expect_code(0);
    assert!(
        text.stdout.contains(
            "would record MANUAL_MARKED_AS_APPLIED for '1_create_users' (sqlx version 1)"
        ) && text
            .stdout
            .contains("2 change(s) would be recorded as applied"),
        "{}",
        text.all()
    );
    let out = env.run(&["import", "sqlx", "--json"]).expect_code(0).json();
    assert_eq!(
        strings(&out["imported"]),
        ["1_create_users", "2_add_orders"]
    );
    assert_eq!(out["table"], "_sqlx_migrations");
    let list = env.run(&["audit", "list", "--json"]).expect_code(0).json();
    let first = &list[0]["metadata"];
    assert_eq!(first["checksum_matches"], true, "{list}");
    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(applied_ids(&applied), ["10_add_name"], "{applied}");
}

#[tokio::test]
async fn diesels_history_on_sqlite_is_read_by_its_versions() {
    let env = Env::new(&[
        (
            "2020-01-01-000000_create_posts/up.sql",
            "CREATE TABLE posts (id INTEGER PRIMARY KEY);\n",
        ),
        (
            "2020-01-02-000000_add_title/up.sql",
            "ALTER TABLE posts ADD COLUMN title TEXT;\n",
        ),
    ]);
    let pool = env.pool().await;
    // diesel's setup_migration_table.sql, then what it records after a run.
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (
           version VARCHAR(50) PRIMARY KEY NOT NULL,
           run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
         );
         CREATE TABLE posts (id INTEGER PRIMARY KEY);
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20200101000000');",
    )
    .execute(&pool)
    .await
    .expect("diesel's table");
    pool.close().await;
    let out = env
        .run(&["import", "diesel", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        strings(&out["imported"]),
        ["2020-01-01-000000_create_posts"]
    );
    assert_eq!(
        strings(&out["not_applied"]),
        ["2020-01-02-000000_add_title"]
    );
    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(applied_ids(&applied), ["2020-01-02-000000_add_title"]);
}
