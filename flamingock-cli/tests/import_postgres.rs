//! `flamingock import` on PostgreSQL: databases migrated by the real sqlx
//! migrator and the real refinery runner (both run in-process here), and
//! diesel's and Flyway's history tables written exactly as their source
//! defines them (neither tool can be run in the test: diesel_cli links
//! libpq, Flyway is Java). After `import`, `apply` runs only what the tool
//! had not, and nothing is re-run: every file here fails when run twice.
#![cfg(feature = "postgres")]

mod common;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{applied_ids, flamingock, flyway_checksum, strings, write_files, Output};
use flamingock_test_support::{namespace, require_service, services};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    base: String,
    schema: String,
    store: String,
}

impl Env {
    fn new(files: &[(&str, &str)]) -> Option<Env> {
        let base = require_service(&services::POSTGRES);
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("migrations");
        write_files(&dir, files);
        let schema = namespace("imp");
        let sep = if base.contains('?') { '&' } else { '?' };
        let store = format!("{base}{sep}schema={schema}");
        Some(Env {
            _tmp: tmp,
            dir,
            base,
            schema,
            store,
        })
    }

    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.display().to_string();
        let mut all = vec!["--store", &self.store, "--changes", &dir];
        all.extend_from_slice(args);
        flamingock(&all)
    }

    fn write(&self, name: &str, content: &str) {
        write_files(&self.dir, &[(name, content)]);
    }

    /// A pool whose unqualified names are the test's schema, as the other
    /// tool would have been configured.
    async fn pool(&self) -> PgPool {
        let admin = PgPool::connect(&self.base).await.expect("connect");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            self.schema
        )))
        .execute(&admin)
        .await
        .expect("create the schema");
        admin.close().await;
        let opts = PgConnectOptions::from_str(&self.base)
            .expect("url")
            .options([("search_path", self.schema.as_str())]);
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("connect")
    }

    async fn exec(&self, sql: &str) {
        let pool = self.pool().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        pool.close().await;
    }

    async fn cleanup(self) {
        let pool = PgPool::connect(&self.base).await.expect("connect");
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
}

/// The metadata of `change_id`'s entry in `audit list --json`.
fn metadata_of(env: &Env, change_id: &str) -> serde_json::Value {
    let list = env.run(&["audit", "list", "--json"]).expect_code(0).json();
    list.as_array()
        .and_then(|a| a.iter().find(|e| e["change_id"] == change_id))
        .map(|e| e["metadata"].clone())
        .unwrap_or_else(|| panic!("{change_id} not in {list}"))
}

const SQLX_FILES: &[(&str, &str)] = &[
    (
        "20240101000000_create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);\n",
    ),
    (
        "20240102000000_add_orders.up.sql",
        "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id));\r\n",
    ),
    ("20240102000000_add_orders.down.sql", "DROP TABLE orders;\n"),
    (
        "20240103000000_index_email.sql",
        "-- no-transaction\nCREATE INDEX CONCURRENTLY users_email ON users (email);\n",
    ),
];

async fn sqlx_migrate(env: &Env, dir: &Path) {
    let pool = env.pool().await;
    let migrator = sqlx::migrate::Migrator::new(dir.to_path_buf())
        .await
        .expect("sqlx reads the directory");
    migrator.run(&pool).await.expect("sqlx migrates");
    pool.close().await;
}

#[tokio::test]
async fn a_database_sqlx_migrated_is_imported_and_only_new_files_apply() {
    let Some(env) = Env::new(SQLX_FILES) else {
        return;
    };
    sqlx_migrate(&env, &env.dir).await;
    env.write(
        "20240104000000_add_name.sql",
        "ALTER TABLE users ADD COLUMN name text;\n",
    );

    // Looking first: nothing written.
    let preview = env
        .run(&["import", "sqlx", "--dry-run", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(strings(&preview["imported"]).len(), 3, "{preview}");
    assert_eq!(preview["dry_run"], true);
    let plan = env.run(&["plan", "--json"]).expect_code(0).json();
    assert_eq!(
        plan.as_array().map(|a| a
            .iter()
            .filter(|i| i["action"]["action"] == "apply")
            .count()),
        Some(4),
        "a dry run records nothing: {plan}"
    );

    let out = env
        .run(&["import", "sqlx", "--reason", "moving off sqlx", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        strings(&out["imported"]),
        [
            "20240101000000_create_users",
            "20240102000000_add_orders",
            "20240103000000_index_email"
        ]
    );
    assert_eq!(strings(&out["not_applied"]), ["20240104000000_add_name"]);
    assert_eq!(out["mismatches"], serde_json::json!([]));
    assert_eq!(out["table"], format!("{}._sqlx_migrations", env.schema));
    let m = metadata_of(&env, "20240102000000_add_orders");
    assert_eq!(m["imported_from"], "sqlx");
    assert_eq!(m["foreign_version"], "20240102000000");
    assert_eq!(m["foreign_description"], "add orders");
    assert_eq!(
        m["checksum_matches"], true,
        "sqlx's SHA-384 of the CRLF file as it is: {m}"
    );
    assert!(m["reason"]
        .as_str()
        .is_some_and(|r| r.starts_with("moving off sqlx")));

    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(
        applied_ids(&applied),
        ["20240104000000_add_name"],
        "{applied}"
    );
    // Idempotent.
    let again = env.run(&["import", "sqlx", "--json"]).expect_code(0).json();
    assert!(strings(&again["imported"]).is_empty(), "{again}");
    assert_eq!(strings(&again["already"]).len(), 3);
    env.cleanup().await;
}

#[tokio::test]
async fn a_file_changed_after_sqlx_applied_it_refuses_the_import_until_accepted() {
    let Some(env) = Env::new(SQLX_FILES) else {
        return;
    };
    sqlx_migrate(&env, &env.dir).await;
    env.write(
        "20240101000000_create_users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, extra int);\n",
    );
    // A migration sqlx applied whose file is gone.
    std::fs::remove_file(env.dir.join("20240103000000_index_email.sql")).expect("remove");
    let refused = env.run(&["import", "sqlx"]);
    refused.expect_code(1);
    for needle in [
        "import from sqlx",
        "nothing recorded",
        "change 20240101000000_create_users: the file changed after the tool applied it",
        "version 20240103000000 (index email): applied by the tool, but no change here matches it",
    ] {
        assert!(
            refused.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            refused.all()
        );
    }
    let list = env.run(&["audit", "list", "--json"]).expect_code(0).json();
    assert_eq!(list, serde_json::json!([]), "nothing recorded");

    let accepted = env
        .run(&["import", "sqlx", "--accept-mismatches", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(strings(&accepted["imported"]).len(), 2, "{accepted}");
    assert_eq!(accepted["mismatches"].as_array().map(Vec::len), Some(2));
    let m = metadata_of(&env, "20240101000000_create_users");
    assert_eq!(m["checksum_matches"], false);
    env.cleanup().await;
}

#[tokio::test]
async fn a_database_refinery_migrated_is_imported_with_matching_checksums() {
    let files: &[(&str, &str)] = &[
        (
            "V1__initial.sql",
            "CREATE TABLE persons (id int PRIMARY KEY, name text);\n",
        ),
        (
            "V2__add_cars.sql",
            "CREATE TABLE cars (id int PRIMARY KEY, owner int REFERENCES persons (id));\n",
        ),
        (
            "V10__index.sql",
            "CREATE INDEX cars_owner ON cars (owner);\n",
        ),
    ];
    let Some(env) = Env::new(files) else {
        return;
    };
    let mut cfg = tokio_postgres::Config::from_str(&env.base).expect("url");
    cfg.options(format!("-c search_path={}", env.schema));
    env.exec("SELECT 1").await; // creates the schema
    let (mut client, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    let conn = tokio::spawn(conn);
    let migrations = refinery::load_sql_migrations(&env.dir).expect("refinery reads the directory");
    refinery::Runner::new(&migrations)
        .run_async(&mut client)
        .await
        .expect("refinery migrates");
    drop(client);
    let _ = conn.await;
    env.write(
        "V11__more.sql",
        "ALTER TABLE persons ADD COLUMN city text;\n",
    );

    let out = env
        .run(&["import", "refinery", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        strings(&out["imported"]),
        ["V1__initial", "V2__add_cars", "V10__index"],
        "{out}"
    );
    assert_eq!(out["mismatches"], serde_json::json!([]));
    let m = metadata_of(&env, "V10__index");
    assert_eq!(m["checksum_matches"], true, "{m}");
    assert_eq!(m["foreign_description"], "index");
    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(applied_ids(&applied), ["V11__more"], "{applied}");
    env.cleanup().await;
}

#[tokio::test]
async fn diesels_history_table_is_read_by_its_versions() {
    let files: &[(&str, &str)] = &[
        (
            "00000000000000_diesel_initial_setup/up.sql",
            "CREATE FUNCTION diesel_noop() RETURNS void AS $$ BEGIN END $$ LANGUAGE plpgsql;\n",
        ),
        (
            "00000000000000_diesel_initial_setup/down.sql",
            "DROP FUNCTION diesel_noop();\n",
        ),
        (
            "2024-03-06-170000_create_posts/up.sql",
            "CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL);\n",
        ),
        (
            "2024-03-06-170000_create_posts/down.sql",
            "DROP TABLE posts;\n",
        ),
        (
            "2024-03-13_170000_add_body/up.sql",
            "ALTER TABLE posts ADD COLUMN body text;\n",
        ),
    ];
    let Some(env) = Env::new(files) else {
        return;
    };
    // What diesel_migrations 2.x runs and records: its setup table, then a
    // row per migration with the version as `version_from_string` makes it
    // (the directory name up to its first `_`, without `-`).
    env.exec(
        "CREATE TABLE IF NOT EXISTS __diesel_schema_migrations (
           version VARCHAR(50) PRIMARY KEY NOT NULL,
           run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
         );
         CREATE FUNCTION diesel_noop() RETURNS void AS $$ BEGIN END $$ LANGUAGE plpgsql;
         INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000');
         CREATE TABLE posts (id serial PRIMARY KEY, title text NOT NULL);
         INSERT INTO __diesel_schema_migrations (version) VALUES ('20240306170000');",
    )
    .await;
    let out = env
        .run(&["import", "diesel", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        strings(&out["imported"]),
        [
            "00000000000000_diesel_initial_setup",
            "2024-03-06-170000_create_posts"
        ],
        "{out}"
    );
    assert_eq!(strings(&out["not_applied"]), ["2024-03-13_170000_add_body"]);
    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(applied_ids(&applied), ["2024-03-13_170000_add_body"]);
    env.cleanup().await;
}

#[tokio::test]
async fn flyways_history_with_a_baseline_a_failure_and_a_repair_is_read_as_flyway_reads_it() {
    let files: &[(&str, &str)] = &[
        ("V1__init.sql", "CREATE TABLE a (id int);\n"),
        ("V1_1__second.sql", "CREATE TABLE b (id int);\n"),
        ("V1.2__third.sql", "CREATE TABLE c (id int);\n"),
        ("V2__fourth.sql", "CREATE TABLE d (id int);\n"),
        ("V3__fifth.sql", "CREATE TABLE e (id int);\n"),
    ];
    let Some(env) = Env::new(files) else {
        return;
    };
    // The PostgreSQL DDL of Flyway 9 to 11 (PostgreSQLDatabase.getRawCreateScript).
    let sum = |f: &str| flyway_checksum(files.iter().find(|x| x.0 == f).map(|x| x.1).unwrap_or(""));
    env.exec(&format!(
        "CREATE TABLE flyway_schema_history (installed_rank INT NOT NULL, version VARCHAR(50),
           description VARCHAR(200) NOT NULL, type VARCHAR(20) NOT NULL, script VARCHAR(1000) NOT NULL,
           checksum INTEGER, installed_by VARCHAR(100) NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT now(),
           execution_time INTEGER NOT NULL, success BOOLEAN NOT NULL);
         ALTER TABLE flyway_schema_history ADD CONSTRAINT flyway_schema_history_pk PRIMARY KEY (installed_rank);
         CREATE TABLE a (id int); CREATE TABLE b (id int); CREATE TABLE c (id int);
         INSERT INTO flyway_schema_history VALUES
           (1, '1.1', '<< Flyway Baseline >>', 'BASELINE', '<< Flyway Baseline >>', NULL, 'ops', now(), 0, true),
           (2, '1.2', 'third', 'SQL', 'V1.2__third.sql', {c}, 'ops', now(), 5, true),
           (3, NULL, 'views', 'SQL', 'R__views.sql', 42, 'ops', now(), 5, true),
           (4, '2', 'fourth', 'SQL', 'V2__fourth.sql', {d}, 'ops', now(), 5, false);",
        c = sum("V1.2__third.sql"),
        d = sum("V2__fourth.sql"),
    ))
    .await;
    // A failed migration: refused with what to do.
    let refused = env.run(&["import", "flyway"]);
    refused.expect_code(1);
    assert!(
        refused
            .stderr
            .contains("version 2 (change V2__fourth): the tool's last attempt failed"),
        "{}",
        refused.all()
    );
    // After `flyway repair` (which deletes the failed row) it goes through.
    env.exec("DELETE FROM flyway_schema_history WHERE installed_rank = 4")
        .await;
    let out = env
        .run(&["import", "flyway", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(
        strings(&out["imported"]),
        ["V1__init", "V1_1__second", "V1.2__third"],
        "the baseline at 1.1 covers 1 and 1.1: {out}"
    );
    assert_eq!(strings(&out["not_applied"]), ["V2__fourth", "V3__fifth"]);
    assert_eq!(metadata_of(&env, "V1.2__third")["checksum_matches"], true);
    assert_eq!(metadata_of(&env, "V1__init")["foreign_baseline"], true);
    let applied = env.run(&["apply", "--json"]).expect_code(0).json();
    assert_eq!(applied_ids(&applied), ["V2__fourth", "V3__fifth"]);
    env.cleanup().await;
}

#[tokio::test]
async fn no_history_table_is_a_clear_failure_and_creates_nothing() {
    let Some(env) = Env::new(&[("V1__a.sql", "CREATE TABLE a (id int);\n")]) else {
        return;
    };
    let out = env.run(&["import", "flyway"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("no table flyway_schema_history") && out.stderr.contains("--table"),
        "{}",
        out.all()
    );
    let custom = env.run(&["import", "flyway", "--table", "nowhere.history"]);
    custom.expect_code(1);
    assert!(
        custom.stderr.contains("no table nowhere.history"),
        "{}",
        custom.all()
    );
    env.cleanup().await;
}
