//! The `flamingock` binary end to end against PostgreSQL, each test in its own
//! schema (`?schema=`), which is also the `search_path` of the changes.
#![cfg(feature = "postgres")]

mod common;

use std::path::PathBuf;

use common::{flamingock, state_of, write_files, Output};
use flamingock_test_support::{namespace, require_service, services};
use sqlx::postgres::PgPool;

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
        let dir = tmp.path().join("changes");
        write_files(&dir, files);
        let schema = namespace("cli");
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

    async fn pool(&self) -> PgPool {
        PgPool::connect(&self.base)
            .await
            .expect("connect to the test server")
    }

    /// A count from a query on the test's schema.
    async fn count(&self, sql: String) -> Result<i64, sqlx::Error> {
        let pool = self.pool().await;
        let n = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
            .fetch_one(&pool)
            .await;
        pool.close().await;
        n
    }

    async fn table_exists(&self, table: &str) -> bool {
        let pool = self.pool().await;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
        )
        .bind(&self.schema)
        .bind(table)
        .fetch_one(&pool)
        .await
        .expect("catalog query");
        pool.close().await;
        n == 1
    }

    async fn cleanup(self) {
        let pool = self.pool().await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&pool)
        .await;
        pool.close().await;
    }
}

const CREATE_USERS: &str = "-- flamingock: author=ana\nCREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE);\n";

const FUNCTIONS: &str = r#"-- flamingock: author=ana description="email normalisation; with a trigger"
CREATE FUNCTION normalise_email() RETURNS trigger AS $body$
BEGIN
  -- a comment; inside the body
  NEW.email := lower(NEW.email); /* another; /* nested; */ comment */
  RETURN NEW;
END;
$body$ LANGUAGE plpgsql;

CREATE TRIGGER users_email BEFORE INSERT OR UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION normalise_email();

INSERT INTO users VALUES (1, 'Ana@Example.COM'), (2, E'o\'brien;@example.com'), (3, 'it''s; x@example.com');
CREATE TABLE "odd;name" (v text DEFAULT $$a;b$$);
"#;

#[tokio::test]
async fn apply_no_op_validate_and_json_in_the_tests_schema() {
    let Some(env) = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__functions.sql", FUNCTIONS),
    ]) else {
        return;
    };
    let plan = env.run(&["plan", "--json"]);
    plan.expect_code(0);
    assert_eq!(plan.json()[1]["strategy"], "SHARED_TX");
    env.run(&["validate"]).expect_code(3);

    let out = env.run(&["apply"]);
    out.expect_code(0);
    assert!(out.stdout.contains("done: 2 applied"), "{}", out.all());
    assert!(
        env.table_exists("users").await,
        "users must be created in the test's schema"
    );
    assert!(env.table_exists("odd;name").await);
    assert!(env.table_exists("flamingock_audit_history").await);
    let lower = env
        .count(format!(
            "SELECT count(*) FROM \"{}\".users WHERE email = lower(email)",
            env.schema
        ))
        .await
        .expect("count");
    assert_eq!(lower, 3, "the trigger from the dollar-quoted function ran");

    let again = env.run(&["apply", "--json"]);
    again.expect_code(0);
    assert_eq!(again.json()["report"]["totals"]["applied"], 0);
    assert_eq!(again.json()["report"]["took_lock"], false);
    env.run(&["validate"]).expect_code(0);

    let list = env.run(&["audit", "list", "--json"]).json();
    assert_eq!(state_of(&list, "functions").as_deref(), Some("APPLIED"));
    let history = env
        .run(&["audit", "history", "--json", "--change", "functions"])
        .json();
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(1),
        "shared transaction: one APPLIED entry"
    );
    env.cleanup().await;
}

/// Looking never writes: every read-only command on a schema that does not
/// exist answers and creates nothing (no schema, no table); a schema name
/// that is not a plain identifier is refused before anything is sent.
#[tokio::test]
async fn reading_commands_create_nothing_and_odd_names_are_refused() {
    let Some(env) = Env::new(&[("0001__create-users.sql", CREATE_USERS)]) else {
        return;
    };
    let plan = env.run(&["plan", "--json"]);
    plan.expect_code(0);
    assert_eq!(plan.json()[0]["action"]["action"], "apply");
    env.run(&["validate"]).expect_code(3);
    for args in [
        &["audit", "list"][..],
        &["audit", "history"],
        &["issue", "list"],
        &["lock", "status"],
    ] {
        env.run(args).expect_code(0);
    }
    let pool = env.pool().await;
    let schemas = |name: String| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
                .bind(name)
                .fetch_one(&pool)
                .await
                .expect("catalog")
        }
    };
    assert_eq!(
        schemas(env.schema.clone()).await,
        0,
        "reading created the schema"
    );

    let odd = format!("{}\"name", env.schema);
    let sep = if env.base.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}schema={}", env.base, odd.replace('"', "%22"));
    let out = flamingock(&["--store", &url, "audit", "list"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("is not a plain identifier"),
        "{}",
        out.all()
    );
    let dir = env.dir.display().to_string();
    let out = flamingock(&["--store", &url, "--changes", &dir, "apply"]);
    out.expect_code(2);
    let out = flamingock(&["--store", &env.base, "--schema", &odd, "audit", "list"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("is not a plain identifier"),
        "{}",
        out.all()
    );
    assert_eq!(schemas(odd).await, 0, "an odd schema name was created");

    env.run(&["apply"]).expect_code(0);
    assert!(env.table_exists("users").await);
    pool.close().await;
    env.cleanup().await;
}

/// Through a real PgBouncer: in transaction mode with `pooler=transaction`
/// four processes apply 20 files into a schema, each exactly once; without
/// it the error says what to declare; a `transactional=false` file that
/// would need the schema's `search_path` is refused before anything runs;
/// in session mode nothing needs declaring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_transaction_and_session_mode() {
    use flamingock_test_support::pgbouncer::{PgBouncer, PoolMode};
    let files: Vec<(String, String)> = (1..=20)
        .map(|i| {
            (
                format!("{i:04}__t{i}.sql"),
                format!("CREATE TABLE t{i} (x int);\nINSERT INTO t{i} VALUES ({i});\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, c)| (n.as_str(), c.as_str()))
        .collect();
    let Some(env) = Env::new(&refs) else { return };
    let bouncer = PgBouncer::start(&env.base, PoolMode::Transaction).expect("pgbouncer");
    let dir = env.dir.display().to_string();
    let with_schema = |base: String| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}schema={}", env.schema)
    };
    let url = |extra: &str| format!("{}{extra}", with_schema(bouncer.url()));

    let undeclared = flamingock(&["--store", &url(""), "--changes", &dir, "apply"]);
    if undeclared.code != 0 {
        assert!(
            undeclared.stderr.contains("pooler=transaction"),
            "{}",
            undeclared.all()
        );
    }
    let declared = url("&pooler=transaction");
    let children: Vec<_> = (0..4)
        .map(|_| {
            let store = declared.clone();
            let dir = dir.clone();
            std::thread::spawn(move || flamingock(&["--store", &store, "--changes", &dir, "apply"]))
        })
        .collect();
    for c in children {
        c.join().expect("process").expect_code(0);
    }
    let list = flamingock(&[
        "--store",
        &declared,
        "--changes",
        &dir,
        "audit",
        "list",
        "--json",
    ])
    .json();
    for i in 1..=20 {
        assert_eq!(
            state_of(&list, &format!("t{i}")).as_deref(),
            Some("APPLIED"),
            "t{i}"
        );
        // The unqualified names landed in the schema, once each.
        let n = env
            .count(format!("SELECT count(*) FROM \"{}\".t{i}", env.schema))
            .await
            .expect("count");
        assert_eq!(n, 1, "t{i}");
    }

    env.write(
        "0021__concurrently.sql",
        "-- flamingock: transactional=false\nCREATE INDEX CONCURRENTLY t1_x ON t1 (x);\n",
    );
    let refused = flamingock(&["--store", &declared, "--changes", &dir, "apply"]);
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("0021__concurrently.sql") && refused.stderr.contains("search_path"),
        "{}",
        refused.all()
    );

    let session = PgBouncer::start(&env.base, PoolMode::Session).expect("pgbouncer");
    let via_session = with_schema(session.url());
    flamingock(&["--store", &via_session, "--changes", &dir, "apply"]).expect_code(0);
    assert!(
        env.count(format!(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = '{}' AND indexname = 't1_x'",
            env.schema
        ))
        .await
        .expect("count")
            == 1
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_file_blocks_with_guidance_and_fix_unblocks() {
    let Some(env) = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        (
            // Outside a transaction (e.g. for CREATE INDEX CONCURRENTLY, left
            // out here: it waits for every older transaction on the server).
            "0002__index-email.sql",
            "-- flamingock: author=luis transactional=false\nCREATE INDEX users_email_lower ON users (lower(email));\nCREATE INDEX users_bad ON users (no_such_column);\n",
        ),
        ("0003__seed.sql", "INSERT INTO users VALUES (1, 'a@example.com');\n"),
    ]) else {
        return;
    };
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(
        out.all()
            .contains("0002__index-email.sql: statement 2 of 2 (line 3) failed"),
        "{}",
        out.all()
    );
    assert!(out.all().contains("no_such_column"), "{}", out.all());

    let get = env.run(&["issue", "get", "index-email"]);
    get.expect_code(0);
    assert!(
        get.stdout
            .contains("flamingock audit fix index-email --resolution rolled-back"),
        "{}",
        get.stdout
    );
    env.run(&["validate"]).expect_code(3);
    env.run(&["apply"]).expect_code(1);
    assert_eq!(
        env.count(format!("SELECT count(*) FROM \"{}\".users", env.schema))
            .await
            .expect("count"),
        0,
        "nothing after the blocked change ran"
    );

    // Undo the half that is in place, record it, correct the file, go on.
    let pool = env.pool().await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX \"{}\".users_email_lower",
        env.schema
    )))
    .execute(&pool)
    .await
    .expect("drop the index");
    pool.close().await;
    let fix = env.run(&[
        "audit",
        "fix",
        "index-email",
        "--resolution",
        "rolled-back",
        "--reason",
        "dropped users_email_lower",
        "--operator",
        "ana",
    ]);
    fix.expect_code(0);
    env.write(
        "0002__index-email.sql",
        "-- flamingock: author=luis transactional=false\nCREATE INDEX users_email_lower ON users (lower(email));\n",
    );
    let done = env.run(&["apply"]);
    done.expect_code(0);
    assert!(
        done.stdout.contains("done: 2 applied, 1 already applied"),
        "{}",
        done.all()
    );
    env.run(&["validate"]).expect_code(0);
    let issues = env.run(&["issue", "list", "--json"]).json();
    assert_eq!(issues.as_array().map(Vec::len), Some(0));
    env.cleanup().await;
}

#[tokio::test]
async fn a_failing_transactional_file_is_rolled_back_whole() {
    let Some(env) = Env::new(&[(
        "0001__users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\nINSERT INTO users VALUES (1);\nINSERT INTO users VALUES (1);\n",
    )]) else {
        return;
    };
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(out.stderr.contains("duplicate key"), "{}", out.all());
    assert!(
        !env.table_exists("users").await,
        "DDL and data rolled back together"
    );
    let list = env.run(&["audit", "list", "--json"]).json();
    assert_eq!(state_of(&list, "users").as_deref(), Some("ROLLED_BACK"));
    env.write(
        "0001__users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\nINSERT INTO users VALUES (1);\n",
    );
    env.run(&["apply"]).expect_code(0);
    assert!(env.table_exists("users").await);
    env.cleanup().await;
}

#[tokio::test]
async fn a_statement_timeout_cancels_slow_statements_of_both_kinds_of_file() {
    let Some(env) = Env::new(&[("0001__slow.sql", "SELECT pg_sleep(3);\n")]) else {
        return;
    };
    let started = std::time::Instant::now();
    let out = env.run(&["apply", "--statement-timeout", "200ms"]);
    out.expect_code(1);
    assert!(
        out.stderr
            .contains("canceling statement due to statement timeout"),
        "{}",
        out.all()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    // The limit was the file's only: without it the file runs.
    env.write("0001__slow.sql", "SELECT pg_sleep(0.3);\n");
    env.run(&["apply"]).expect_code(0);

    env.write(
        "0002__slow-outside-tx.sql",
        "-- flamingock: transactional=false\nSELECT 1;\nSELECT pg_sleep(3);\n",
    );
    let started = std::time::Instant::now();
    let out = env.run(&["apply", "--statement-timeout", "200ms"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("statement 2 of 2")
            && out
                .stderr
                .contains("canceling statement due to statement timeout"),
        "{}",
        out.all()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    let bad = env.run(&["apply", "--statement-timeout", "30"]);
    bad.expect_code(2);
    assert!(bad.stderr.contains("has no unit"), "{}", bad.all());
    env.cleanup().await;
}

#[tokio::test]
async fn database_errors_show_the_file_line_the_sqlstate_and_what_to_do() {
    let Some(env) = Env::new(&[(
        "0001__twice.sql",
        "CREATE TABLE users (id bigint);\nCREATE TABLE users (id bigint);\n",
    )]) else {
        return;
    };
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(
            "0001__twice.sql: statement 2 of 2 (line 2) failed: relation \"users\" already exists (SQLSTATE 42P07)"
        ),
        "{}",
        out.all()
    );
    // No line of PostgreSQL's C source, no sqlx prefix.
    assert!(
        !out.stderr.contains(" at line ") && !out.stderr.contains("error returned from database"),
        "{}",
        out.all()
    );
    std::fs::remove_file(env.dir.join("0001__twice.sql")).expect("rm");
    env.write(
        "0001__index.sql",
        "CREATE TABLE t (a int);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    let out = env.run(&["apply", "--orphans", "warn"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("(SQLSTATE 25001)")
            && out
                .stderr
                .contains("add `transactional=false` to the file's header"),
        "{}",
        out.all()
    );
    env.write(
        "0001__index.sql",
        "-- flamingock: transactional=false\nCREATE TABLE t (a int);\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n",
    );
    env.run(&["apply", "--orphans", "warn"]).expect_code(0);
    env.cleanup().await;
}

#[tokio::test]
async fn a_slow_statement_is_no_warning_at_default_verbosity() {
    let Some(env) = Env::new(&[("0001__slow.sql", "SELECT pg_sleep(1.2);\n")]) else {
        return;
    };
    let out = env.run(&["apply"]);
    out.expect_code(0);
    assert!(!out.stderr.contains("slow statement"), "{}", out.all());
    env.cleanup().await;
}

/// A server that accepts connections and never answers: the connect
/// timeout of the URL is what ends the wait.
#[test]
fn the_urls_connect_timeout_is_honoured() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let url = format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2");
    let started = std::time::Instant::now();
    let out = flamingock(&["--store", &url, "audit", "list"]);
    out.expect_code(1);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "took {:?} (the default is 15 s)",
        started.elapsed()
    );
    assert!(
        out.stderr.contains("no answer within 2.0 s"),
        "{}",
        out.all()
    );
    drop(silent);
}

#[tokio::test]
async fn drift_is_detected_but_crlf_is_not() {
    let Some(env) = Env::new(&[("0001__create-users.sql", CREATE_USERS)]) else {
        return;
    };
    env.run(&["apply"]).expect_code(0);
    env.write(
        "0001__create-users.sql",
        &CREATE_USERS.replace('\n', "\r\n"),
    );
    env.run(&["validate"]).expect_code(0);
    env.write(
        "0001__create-users.sql",
        "CREATE TABLE users (id bigint PRIMARY KEY);\n",
    );
    let v = env.run(&["validate", "--json"]);
    v.expect_code(1);
    assert!(
        v.json()["error"]["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("checksum")),
        "{}",
        v.stdout
    );
    env.run(&["validate", "--drift", "warn"]).expect_code(0);
    env.cleanup().await;
}

#[tokio::test]
async fn the_schema_flag_and_masked_passwords() {
    let Some(env) = Env::new(&[("0001__create-users.sql", CREATE_USERS)]) else {
        return;
    };
    // --schema instead of ?schema=.
    let dir = env.dir.display().to_string();
    let out = flamingock(&[
        "--store",
        &env.base,
        "--schema",
        &env.schema,
        "--changes",
        &dir,
        "apply",
    ]);
    out.expect_code(0);
    assert!(env.table_exists("users").await);

    // A password in the URL never shows, even in driver errors and debug logs.
    let bad_db = with_password_and_db(
        &env.base,
        "Sup3r-S3cret",
        &format!("no_such_database_{}", env.schema),
    );
    for args in [
        &["audit", "list"][..],
        &["-vvv", "audit", "list"],
        &["audit", "list", "--json"],
    ] {
        let mut all = vec!["--store", bad_db.as_str()];
        all.extend_from_slice(args);
        let out = flamingock(&all);
        out.expect_code(1);
        assert!(out.all().contains("does not exist"), "{}", out.all());
        assert!(
            !out.all().contains("Sup3r-S3cret"),
            "password leaked:\n{}",
            out.all()
        );
    }
    env.cleanup().await;
}

/// `scheme://user@host/db?q` → `scheme://user:password@host/other_db`.
fn with_password_and_db(url: &str, password: &str, db: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with ://");
    let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, host)) => (userinfo.split(':').next().unwrap_or("postgres"), host),
        None => ("postgres", authority),
    };
    format!("{scheme}://{user}:{password}@{host}/{db}")
}

/// SIGINT during `apply`: the change in its transaction is rolled back and
/// recorded, the lock is released, the process says what the next run will
/// do and exits 130 at once (not after the statement or the lease).
#[tokio::test]
async fn sigint_rolls_back_releases_the_lock_and_exits_130() {
    let Some(env) = Env::new(&[
        ("0001__create.sql", "CREATE TABLE made (x int);"),
        (
            "0002__slow.sql",
            "INSERT INTO made VALUES (1);\nSELECT pg_sleep(10);",
        ),
    ]) else {
        return;
    };
    let dir = env.dir.display().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_flamingock"))
        .args(["--store", &env.store, "--changes", &dir, "apply"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_remove("RUST_LOG")
        .spawn()
        .expect("start flamingock apply");
    // Wait until the slow change is running (the first one is recorded).
    let mut running = false;
    for _ in 0..200 {
        let list = env.run(&["audit", "list", "--json"]).json();
        if state_of(&list, "create").as_deref() == Some("APPLIED") {
            running = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(running, "the first change never got applied");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).expect("pid")).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::INT).expect("SIGINT");
    let sent = std::time::Instant::now();
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {stderr}");
    assert!(
        sent.elapsed() < std::time::Duration::from_secs(5),
        "it waited for the statement ({:?} after SIGINT)",
        sent.elapsed()
    );
    assert!(stderr.contains("received SIGINT"), "{stderr}");
    assert!(stderr.contains("next run applies 'slow'"), "{stderr}");
    let list = env.run(&["audit", "list", "--json"]).json();
    assert_eq!(
        state_of(&list, "slow").as_deref(),
        Some("ROLLED_BACK"),
        "{list}"
    );
    let lock = env.run(&["lock", "status", "--json"]).json();
    assert_eq!(lock["held"], false, "the lock must be released: {lock}");
    env.cleanup().await;
}
