//! The `flamingock` binary end to end against SQLite files.
#![cfg(feature = "sqlite")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{flamingock, flamingock_without, state_of, write_files, Output};
use flamingock_core::{Acquire, LockProvider};
use flamingock_sqlite::{sqlx, SqliteAuditStore};

const CREATE_USERS: &str = "-- flamingock: author=ana\nCREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE);\n";
const SEED_USERS: &str = "INSERT INTO users (id, email) VALUES (1, 'a@example.com');\nINSERT INTO users (id, email) VALUES (2, 'it''s; b@example.com');\n";

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    db: PathBuf,
    store: String,
}

impl Env {
    fn new(files: &[(&str, &str)]) -> Env {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("changes");
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

    /// `flamingock --store S --changes D <args>`.
    fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.display().to_string();
        let mut all = vec!["--store", &self.store, "--changes", &dir];
        all.extend_from_slice(args);
        flamingock(&all)
    }

    /// `flamingock --store S <args>` (no changes directory).
    fn run_store(&self, args: &[&str]) -> Output {
        let mut all = vec!["--store", &self.store];
        all.extend_from_slice(args);
        flamingock(&all)
    }

    fn write(&self, name: &str, content: &str) {
        write_files(&self.dir, &[(name, content)]);
    }

    async fn query_i64(&self, sql: &'static str) -> Result<i64, sqlx::Error> {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", self.db.display())).await?;
        let n = sqlx::query_scalar(sql).fetch_one(&pool).await;
        pool.close().await;
        n
    }
}

#[tokio::test]
async fn apply_then_second_run_is_a_no_op() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__seed-users.sql", SEED_USERS),
    ]);
    let out = env.run(&["--no-color", "apply"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("applied  create-users"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("applied  seed-users"), "{}", out.all());
    assert!(
        out.stdout.contains("done: 2 applied, 0 already applied"),
        "{}",
        out.all()
    );
    assert!(
        !out.stdout.contains("\x1b["),
        "no colour when stdout is not a terminal"
    );
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        2
    );

    let again = env.run(&["apply"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("done: 0 applied, 2 already applied"),
        "{}",
        again.all()
    );
    assert!(
        !again.stdout.contains("applied  "),
        "no progress line: nothing ran\n{}",
        again.all()
    );
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        2
    );

    let list = env.run_store(&["audit", "list", "--json"]);
    list.expect_code(0);
    let v = list.json();
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(state_of(&v, "create-users").as_deref(), Some("APPLIED"));
    let e = &v.as_array().expect("array")[0];
    for field in [
        "run_id",
        "stage_id",
        "change_id",
        "author",
        "order",
        "target_system",
        "state",
        "created_at",
        "tx_strategy",
        "fencing_token",
        "checksum",
    ] {
        assert!(e.get(field).is_some(), "field {field} missing in {e}");
    }
    assert_eq!(e["tx_strategy"], "SHARED_TX");
    assert!(e["checksum"]
        .as_str()
        .is_some_and(|c| c.starts_with("sha256:")));
}

/// Looking never writes: every read-only command on a database file that
/// does not exist answers (nothing recorded, everything pending, lock free)
/// and leaves no file behind; `apply` then creates it.
#[test]
fn reading_commands_never_create_the_database() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    let plan = env.run(&["plan", "--json"]);
    plan.expect_code(0);
    assert_eq!(plan.json()[0]["action"]["action"], "apply");
    env.run(&["validate"]).expect_code(3);
    let list = env.run(&["audit", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("no change has been recorded here yet"),
        "{}",
        list.all()
    );
    for args in [
        &["audit", "history"][..],
        &["audit", "list", "--json"],
        &["issue", "list"],
        &["lock", "status"],
    ] {
        env.run(args).expect_code(0);
    }
    env.run_store(&["lock", "status"]).expect_code(0);
    let leftovers: Vec<_> = std::fs::read_dir(env.db.parent().expect("dir"))
        .expect("list")
        .map(|e| e.expect("entry").file_name())
        .filter(|n| n != "changes")
        .collect();
    assert!(leftovers.is_empty(), "reading created {leftovers:?}");

    env.run(&["apply"]).expect_code(0);
    assert!(env.db.exists());
}

#[tokio::test]
async fn every_command_has_json_output_that_parses() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    let plan = env.run(&["plan", "--json"]);
    plan.expect_code(0);
    let p = plan.json();
    assert_eq!(p[0]["change_id"], "create-users");
    assert_eq!(p[0]["order"], "0001");
    assert_eq!(p[0]["target"], "database");
    assert_eq!(p[0]["strategy"], "SHARED_TX");
    assert_eq!(p[0]["action"]["action"], "apply");

    let validate = env.run(&["validate", "--json"]);
    validate.expect_code(3);
    assert_eq!(validate.json()["status"], "pending");
    assert_eq!(validate.json()["pending"][0], "create-users");

    let apply = env.run(&["apply", "--json"]);
    apply.expect_code(0);
    let a = apply.json();
    assert_eq!(a["status"], "ok");
    assert_eq!(a["report"]["totals"]["applied"], 1);
    assert_eq!(a["report"]["changes"][0]["outcome"]["outcome"], "applied");
    assert!(
        apply.stderr.contains("applied  create-users"),
        "progress goes to stderr in JSON mode: {}",
        apply.all()
    );

    for args in [
        &["audit", "list", "--json"][..],
        &["audit", "history", "--json"],
        &[
            "audit",
            "history",
            "--json",
            "--change",
            "create-users",
            "--since",
            "2000-01-01T00:00:00Z",
        ],
        &["issue", "list", "--json"],
        &["lock", "status", "--json"],
        &["validate", "--json"],
        &["plan", "--json"],
    ] {
        let out = env.run(args);
        out.expect_code(0);
        let _ = out.json();
    }
    let history = env.run(&[
        "audit",
        "history",
        "--json",
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert_eq!(history.json().as_array().map(Vec::len), Some(0));
    let lock = env.run(&["lock", "status", "--json"]).json();
    assert_eq!(lock["held"], false);
    assert!(lock["lock"].is_null() || lock["lock"].is_object());
}

#[tokio::test]
async fn a_failing_non_transactional_file_blocks_with_guidance_and_fix_unblocks() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        (
            "0002__add-phone.sql",
            "-- flamingock: author=luis transactional=false\nALTER TABLE users ADD COLUMN phone TEXT;\nUPDATE users SET phone = no_such_function(email);\n",
        ),
        ("0003__seed-users.sql", SEED_USERS),
    ]);
    let first = env.run(&["apply"]);
    first.expect_code(1);
    assert!(
        first
            .all()
            .contains("0002__add-phone.sql: statement 2 of 2 (line 3) failed"),
        "{}",
        first.all()
    );
    assert!(first.stderr.contains("blocks its stage"), "{}", first.all());
    // Reported once, not once more by the core's own log line.
    assert_eq!(
        first
            .stderr
            .matches("change 'add-phone' (stage 'sql-files') failed")
            .count(),
        1,
        "{}",
        first.stderr
    );

    let issues = env.run_store(&["issue", "list", "--json"]);
    issues.expect_code(0);
    let i = issues.json();
    assert_eq!(i.as_array().map(Vec::len), Some(1), "{i}");
    assert_eq!(i[0]["change_id"], "add-phone");
    assert_eq!(i[0]["state"], "FAILED");

    let get = env.run(&["issue", "get", "add-phone"]);
    get.expect_code(0);
    for needle in [
        "last state: FAILED",
        "no such function: no_such_function",
        "0002__add-phone.sql",
        "flamingock audit fix add-phone --resolution applied",
        "flamingock audit fix add-phone --resolution rolled-back",
        "flamingock apply",
    ] {
        assert!(
            get.stdout.contains(needle),
            "missing {needle:?}:\n{}",
            get.stdout
        );
    }
    let get_json = env.run(&["issue", "get", "add-phone", "--json"]).json();
    assert_eq!(get_json["issue"]["state"], "FAILED");
    assert!(get_json["steps"].as_array().is_some_and(|s| s.len() == 4));

    // Blocked: nothing of its stage runs, validate says 3, apply fails again.
    let validate = env.run(&["validate", "--json"]);
    validate.expect_code(3);
    assert_eq!(validate.json()["status"], "blocked");
    let again = env.run(&["apply"]);
    again.expect_code(1);
    assert!(
        again
            .stderr
            .contains("need an operator; nothing in their stage was run"),
        "{}",
        again.all()
    );
    assert!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("count")
            == 0,
        "seed-users must not run"
    );

    // A fix is refused for a change without an issue, and needs an operator.
    let refused = env.run_store(&[
        "audit",
        "fix",
        "create-users",
        "--resolution",
        "applied",
        "--reason",
        "x",
        "--operator",
        "ana",
    ]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("has no issue to fix"),
        "{}",
        refused.all()
    );
    let unknown = env.run_store(&[
        "audit",
        "fix",
        "nope",
        "--resolution",
        "applied",
        "--reason",
        "x",
        "--operator",
        "ana",
    ]);
    unknown.expect_code(1);
    assert!(
        unknown.stderr.contains("'nope' has no audit entry"),
        "{}",
        unknown.all()
    );

    // The operator undoes the partial effect and records it.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", env.db.display()))
        .await
        .expect("pool");
    sqlx::query("ALTER TABLE users DROP COLUMN phone")
        .execute(&pool)
        .await
        .expect("undo");
    pool.close().await;
    let fix = env.run_store(&[
        "audit",
        "fix",
        "add-phone",
        "--resolution",
        "rolled-back",
        "--reason",
        "dropped the phone column",
        "--operator",
        "ana",
    ]);
    fix.expect_code(0);
    assert!(
        fix.stdout.contains("MANUAL_MARKED_AS_ROLLED_BACK"),
        "{}",
        fix.all()
    );
    let history = env
        .run_store(&["audit", "history", "--change", "add-phone", "--json"])
        .json();
    let last = history.as_array().and_then(|h| h.last()).expect("entries");
    assert_eq!(last["state"], "MANUAL_MARKED_AS_ROLLED_BACK");
    assert_eq!(last["tx_strategy"], "MANUAL");
    assert!(
        last["metadata"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("dropped the phone column") && r.contains("operator: ana")),
        "{last}"
    );
    assert!(
        last["runner_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("ana@")),
        "{last}"
    );

    // Corrected file: the stage goes on.
    env.write("0002__add-phone.sql", "-- flamingock: author=luis transactional=false\nALTER TABLE users ADD COLUMN phone TEXT;\nUPDATE users SET phone = lower(email);\n");
    let done = env.run(&["apply"]);
    done.expect_code(0);
    assert!(
        done.stdout.contains("done: 2 applied, 1 already applied"),
        "{}",
        done.all()
    );
    env.run(&["validate"]).expect_code(0);
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        2
    );
    assert_eq!(
        env.query_i64("SELECT count(*) FROM pragma_table_info('users') WHERE name = 'phone'")
            .await
            .expect("columns"),
        1
    );
}

#[tokio::test]
async fn a_failing_transactional_file_leaves_nothing_and_is_retried() {
    let env = Env::new(&[(
        "0001__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\nINSERT INTO users VALUES (1);\nINSERT INTO nope VALUES (1);\n",
    )]);
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("rolled back and recorded as failed"),
        "{}",
        out.all()
    );
    assert!(
        env.query_i64("SELECT count(*) FROM users").await.is_err(),
        "the table must have been rolled back"
    );
    let list = env.run_store(&["audit", "list", "--json"]).json();
    assert_eq!(state_of(&list, "users").as_deref(), Some("ROLLED_BACK"));
    assert_eq!(
        env.run_store(&["issue", "list", "--json"])
            .json()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    // Transaction control inside a transactional file is refused before anything runs.
    env.write(
        "0001__users.sql",
        "BEGIN;\nCREATE TABLE users (id INTEGER PRIMARY KEY);\nCOMMIT;\n",
    );
    let tc = env.run(&["apply"]);
    tc.expect_code(1);
    assert!(tc.stderr.contains("transaction control"), "{}", tc.all());
    env.write(
        "0001__users.sql",
        "CREATE TABLE users (id INTEGER PRIMARY KEY);\nINSERT INTO users VALUES (1);\n",
    );
    env.run(&["apply"]).expect_code(0);
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        1
    );
}

#[tokio::test]
async fn triggers_and_rollback_files_run_on_sqlite() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        (
            "0002__user-log.sql",
            "CREATE TABLE user_log (user_id INTEGER, note TEXT);\nCREATE TRIGGER users_ai AFTER INSERT ON users\nBEGIN\n  INSERT INTO user_log VALUES (new.id, 'created; ok');\n  INSERT INTO user_log VALUES (new.id, CASE WHEN new.id > 1 THEN 'big;' ELSE 'small' END);\nEND;\n",
        ),
        ("0003__seed-users.sql", "-- flamingock: transactional=false\nINSERT INTO users VALUES (1, 'a');\nINSERT INTO users VALUES (1, 'duplicate');\n"),
        ("0003__seed-users.rollback.sql", "DELETE FROM users WHERE id = 1;\n"),
    ]);
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(
        out.stdout.contains("rolled back seed-users"),
        "the rollback file ran: {}",
        out.all()
    );
    // The first insert's trigger wrote two rows; the failed insert's were undone with it.
    assert_eq!(
        env.query_i64("SELECT count(*) FROM user_log")
            .await
            .expect("log"),
        2
    );
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        0
    );
    let list = env.run_store(&["audit", "list", "--json"]).json();
    assert_eq!(
        state_of(&list, "seed-users").as_deref(),
        Some("ROLLED_BACK")
    );
}

#[tokio::test]
async fn drift_is_detected_but_line_endings_are_not_drift() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__seed-users.sql", SEED_USERS),
    ]);
    env.run(&["apply"]).expect_code(0);
    // Same content, CRLF line endings: not drift.
    env.write("0002__seed-users.sql", &SEED_USERS.replace('\n', "\r\n"));
    env.run(&["validate"]).expect_code(0);
    env.run(&["apply"]).expect_code(0);
    // Edited content: drift, validate and apply fail naming the change.
    env.write(
        "0002__seed-users.sql",
        "INSERT INTO users VALUES (3, 'c@example.com');\n",
    );
    let v = env.run(&["validate"]);
    v.expect_code(1);
    assert!(
        v.stderr
            .contains("change 'seed-users' was applied with checksum sha256:"),
        "{}",
        v.all()
    );
    assert!(v.stderr.contains("--drift warn"), "{}", v.all());
    let j = env.run(&["validate", "--json"]);
    j.expect_code(1);
    assert_eq!(j.json()["error"]["kind"], "invalid");
    env.run(&["apply"]).expect_code(1);
    // With --drift warn: a warning, and nothing is re-applied.
    let warn = env.run(&["validate", "--drift", "warn"]);
    warn.expect_code(0);
    assert!(warn.stderr.contains("checksum drift"), "{}", warn.all());
    env.run(&["apply", "--drift", "warn"]).expect_code(0);
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("users"),
        2
    );
}

#[tokio::test]
async fn a_removed_file_can_be_retired_for_good() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__seed-users.sql", SEED_USERS),
    ]);
    env.run(&["apply"]).expect_code(0);
    std::fs::remove_file(env.dir.join("0002__seed-users.sql")).expect("rm");
    let v = env.run(&["validate"]);
    v.expect_code(1);
    for needle in [
        "no longer in the pipeline: seed-users",
        "flamingock audit retire seed-users --reason",
        "--orphans warn",
    ] {
        assert!(
            v.stderr.contains(needle),
            "missing {needle:?}:\n{}",
            v.all()
        );
    }
    assert!(
        !v.stderr.contains("or use OrphanPolicy::Warn)"),
        "{}",
        v.all()
    );
    env.run(&["validate", "--orphans", "warn"]).expect_code(0);
    // A change that is still in the changes cannot be retired.
    let refused = env.run(&["audit", "retire", "create-users", "--reason", "x"]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("still in the pipeline"),
        "{}",
        refused.all()
    );
    let retired = env.run(&[
        "audit",
        "retire",
        "seed-users",
        "--reason",
        "seed data moved to the app",
        "--operator",
        "ana",
    ]);
    retired.expect_code(0);
    env.run(&["validate"]).expect_code(0);
    env.run(&["apply"]).expect_code(0);
    let history = env
        .run_store(&["audit", "history", "--change", "seed-users", "--json"])
        .json();
    let last = &history[history.as_array().map_or(0, Vec::len) - 1];
    assert_eq!(last["state"], "MANUAL_MARKED_AS_ROLLED_BACK");
    assert_eq!(last["metadata"]["retired"], true);
    assert!(
        last["metadata"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("seed data moved") && r.contains("ana")),
        "{last}"
    );
}

#[tokio::test]
async fn an_edited_file_can_be_accepted_for_good() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    env.run(&["apply"]).expect_code(0);
    env.write(
        "0001__create-users.sql",
        &format!("{CREATE_USERS}-- a comment\n"),
    );
    let v = env.run(&["validate"]);
    v.expect_code(1);
    assert!(
        v.stderr
            .contains("flamingock audit accept-checksum create-users --reason"),
        "{}",
        v.all()
    );
    env.run(&[
        "audit",
        "accept-checksum",
        "create-users",
        "--reason",
        "comment only",
    ])
    .expect_code(0);
    env.run(&["validate"]).expect_code(0);
    let history = env
        .run_store(&["audit", "history", "--change", "create-users", "--json"])
        .json();
    assert_eq!(history[1]["state"], "MANUAL_MARKED_AS_APPLIED");
    assert_eq!(
        history[1]["metadata"]["previous_checksum"],
        history[0]["checksum"]
    );
    assert_ne!(history[1]["checksum"], history[0]["checksum"]);
}

#[tokio::test]
async fn a_change_without_entry_can_be_recorded_as_a_baseline() {
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__seed-users.sql", SEED_USERS),
    ]);
    let refused = env.run(&[
        "audit",
        "fix",
        "create-users",
        "--resolution",
        "applied",
        "--reason",
        "made by hand",
    ]);
    refused.expect_code(1);
    assert!(refused.stderr.contains("--baseline"), "{}", refused.all());
    let without_changes = env.run_store(&[
        "audit",
        "fix",
        "create-users",
        "--resolution",
        "applied",
        "--baseline",
        "--reason",
        "made by hand",
    ]);
    without_changes.expect_code(2);
    env.run(&[
        "audit",
        "fix",
        "create-users",
        "--resolution",
        "applied",
        "--baseline",
        "--reason",
        "created by hand before flamingock",
    ])
    .expect_code(0);
    let list = env.run_store(&["audit", "list", "--json"]).json();
    assert_eq!(
        state_of(&list, "create-users").as_deref(),
        Some("MANUAL_MARKED_AS_APPLIED")
    );
    assert_eq!(list[0]["metadata"]["baseline"], true);
    // The baseline change is skipped: the seed fails, as the table does not exist.
    let out = env.run(&["apply"]);
    out.expect_code(1);
    assert!(out.stderr.contains("no such table: users"), "{}", out.all());
}

#[tokio::test]
async fn the_fix_that_issue_get_prints_runs_without_user() {
    let env = Env::new(&[(
        "0001__add-phone.sql",
        "-- flamingock: transactional=false\nCREATE TABLE t (a INT);\nSELECT no_such_function();\n",
    )]);
    env.run(&["apply"]).expect_code(1);
    let get = env.run(&["issue", "get", "add-phone"]);
    let printed = get
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("flamingock audit fix add-phone --resolution applied"))
        .unwrap_or_else(|| panic!("no fix command in:\n{}", get.stdout))
        .replace("<what you checked>", "table t exists");
    let words: Vec<&str> = printed
        .strip_prefix("flamingock ")
        .unwrap_or_default()
        .split(" --reason ")
        .collect();
    let mut args: Vec<&str> = vec!["--store", &env.store];
    args.extend(words[0].split_whitespace());
    args.extend(["--reason", words[1].trim_matches('"')]);
    let fixed = flamingock_without(&args, &["USER", "USERNAME", "LOGNAME"]);
    fixed.expect_code(0);
    let list = env.run_store(&["audit", "list", "--json"]).json();
    assert_eq!(
        state_of(&list, "add-phone").as_deref(),
        Some("MANUAL_MARKED_AS_APPLIED")
    );
    assert!(
        list[0]["runner_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("operator@")),
        "{list}"
    );
}

fn assert_usage(out: &Output, needles: &[&str]) {
    out.expect_code(2);
    for n in needles {
        assert!(
            out.stderr.contains(n),
            "missing {n:?} in stderr:\n{}",
            out.all()
        );
    }
}

#[tokio::test]
async fn bad_change_directories_are_reported_at_once_and_nothing_runs() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    env.run(&["apply"]).expect_code(0);
    let before = env.run_store(&["audit", "history", "--json"]).json();

    env.write("0002_missing-underscore.sql", "SELECT 1;");
    env.write("0003__.sql", "SELECT 1;");
    env.write("0004__create-users.sql", "SELECT 1;");
    env.write("0005__empty.sql", "-- nothing here\n\n");
    env.write("0006__a.sql", "-- flamingock: autor=ana\nSELECT 1;");
    env.write("0006__b.sql", "SELECT 1;");
    let out = env.run(&["apply"]);
    assert_usage(
        &out,
        &[
            "0002_missing-underscore.sql: malformed name",
            "0003__.sql: malformed name: the id (after `__`) is empty",
            "change id 'create-users' is used by 2 files: 0001__create-users.sql, 0004__create-users.sql",
            "0005__empty.sql: empty",
            "0006__a.sql: unknown header key 'autor'",
            "order '0006' is used by 2 files",
            "nothing was run",
        ],
    );
    for args in [&["plan"][..], &["validate"], &["audit", "list"]] {
        env.run(args).expect_code(2);
    }
    let json = env.run(&["apply", "--json"]);
    json.expect_code(2);
    assert_eq!(json.json()["error"]["kind"], "change_files");
    // Nothing recorded was touched.
    assert_eq!(
        env.run_store(&["audit", "history", "--json"]).json(),
        before
    );
}

#[test]
fn a_changes_directory_without_change_files_is_a_usage_error() {
    let env = Env::new(&[]);
    let out = env.run(&["apply"]);
    assert_usage(
        &out,
        &[
            "no change files: the directory is empty",
            "<order>__<id>.sql",
        ],
    );
    assert!(!env.db.exists(), "the store was not even opened");
    // A diesel layout: named as such when another layout is asked for,
    // read when the layout is recognised.
    std::fs::create_dir(env.dir.join("2020-01-01-000000_create_users")).expect("mkdir");
    env.write("2020-01-01-000000_create_users/up.sql", "SELECT 1;");
    let out = env.run(&["--layout", "flamingock", "apply"]);
    assert_usage(
        &out,
        &[
            "1 subdirectory (2020-01-01-000000_create_users)",
            "diesel migrations",
            "--layout diesel",
        ],
    );
    env.run(&["apply"]).expect_code(0);
}

#[test]
fn a_statement_timeout_needs_a_postgres_store() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    let out = env.run(&["apply", "--statement-timeout", "30s"]);
    assert_usage(&out, &["--statement-timeout needs a PostgreSQL store"]);
}

#[tokio::test]
async fn bad_store_urls_and_unreachable_stores() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    let dir = env.dir.display().to_string();

    let out = flamingock(&["--changes", &dir, "apply"]);
    assert_usage(
        &out,
        &["no audit store: give --store URL or set FLAMINGOCK_STORE_URL"],
    );

    let out = flamingock(&[
        "--store",
        "oracle://root:hunter2@db:1521/app",
        "audit",
        "list",
    ]);
    assert_usage(
        &out,
        &[
            "unknown store URL scheme 'oracle'",
            "postgres://",
            "sqlite:",
        ],
    );
    assert!(!out.all().contains("hunter2"), "{}", out.all());

    let out = flamingock(&["--store", "redis://u:hunter2@h", "audit", "list", "--json"]);
    out.expect_code(2);
    assert_eq!(out.json()["error"]["kind"], "store_url");
    assert!(!out.all().contains("hunter2"));

    // The environment variable works as --store.
    let out = {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flamingock"));
        cmd.args(["audit", "list", "--json"])
            .env("FLAMINGOCK_STORE_URL", &env.store)
            .stdin(std::process::Stdio::null());
        cmd.output().expect("run")
    };
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A directory is not a database file: a failure (1), naming the path.
    let as_dir = format!("sqlite:{}", env.dir.display());
    let out = flamingock(&["--store", &as_dir, "audit", "list"]);
    out.expect_code(1);
    assert!(out.stderr.contains("directory"), "{}", out.all());

    // Unreachable PostgreSQL server: a failure (1), the password masked.
    #[cfg(feature = "postgres")]
    {
        let out = flamingock(&[
            "--store",
            "postgres://ana:hunter2@127.0.0.1:1/app",
            "audit",
            "list",
        ]);
        out.expect_code(1);
        assert!(
            out.stderr
                .contains("postgres(postgres://ana:***@127.0.0.1:1/app)"),
            "{}",
            out.all()
        );
        assert!(!out.all().contains("hunter2"), "{}", out.all());
        let verbose = flamingock(&[
            "--store",
            "postgres://ana:hunter2@127.0.0.1:1/app",
            "-vvv",
            "audit",
            "list",
        ]);
        verbose.expect_code(1);
        assert!(
            !verbose.all().contains("hunter2"),
            "logs leak the password:\n{}",
            verbose.all()
        );
    }

    // Unreachable MySQL server, and one without a database: the password masked.
    #[cfg(feature = "mysql")]
    {
        let out = flamingock(&[
            "--store",
            "mysql://ana:hunter2@127.0.0.1:1/app",
            "audit",
            "list",
        ]);
        out.expect_code(1);
        assert!(
            out.stderr
                .contains("mysql(mysql://ana:***@127.0.0.1:1/app)"),
            "{}",
            out.all()
        );
        assert!(!out.all().contains("hunter2"), "{}", out.all());
        let out = flamingock(&["--store", "mariadb://ana:hunter2@db", "audit", "list"]);
        assert_usage(&out, &["invalid mariadb store URL", "no database"]);
        assert!(!out.all().contains("hunter2"), "{}", out.all());
    }

    // Usage errors from clap are exit 2 too.
    flamingock(&[
        "--store",
        &env.store,
        "audit",
        "fix",
        "x",
        "--resolution",
        "maybe",
        "--reason",
        "r",
    ])
    .expect_code(2);
    flamingock(&[
        "--store",
        &env.store,
        "audit",
        "history",
        "--since",
        "last tuesday",
    ])
    .expect_code(2);
    // Commands that need changes say so.
    let out = flamingock(&["--store", &env.store, "plan"]);
    assert_usage(&out, &["--changes DIR"]);
    let help = flamingock(&["--help"]);
    help.expect_code(0);
    assert!(
        help.stdout.contains("Exit codes:") && help.stdout.contains("3  validate"),
        "{}",
        help.stdout
    );
}

#[tokio::test]
async fn lock_status_and_forced_release() {
    let env = Env::new(&[("0001__create-users.sql", CREATE_USERS)]);
    env.run(&["apply"]).expect_code(0);
    let free = env.run_store(&["lock", "status"]);
    free.expect_code(0);
    assert!(free.stdout.contains("lock: free"), "{}", free.all());

    let store = SqliteAuditStore::connect(&env.db).await.expect("open");
    let lock = store.lock();
    let Acquire::Acquired(lease) = lock
        .try_acquire("other-runner@host#1", Duration::from_secs(300))
        .await
        .expect("acquire")
    else {
        panic!("lock should be free");
    };
    let held = env.run_store(&["lock", "status"]);
    held.expect_code(0);
    assert!(
        held.stdout.contains("held by other-runner@host#1"),
        "{}",
        held.all()
    );
    assert!(
        held.stdout
            .contains(&format!("fencing token {}", lease.token)),
        "{}",
        held.all()
    );
    let held_json = env.run_store(&["lock", "status", "--json"]).json();
    assert_eq!(held_json["held"], true);
    assert_eq!(held_json["lock"]["owner"], "other-runner@host#1");

    // No terminal on stdin: refused without --yes, the lock stays.
    let refused = env.run_store(&["lock", "release", "--force"]);
    assert_usage(&refused, &["without --yes"]);
    assert!(lock.inspect().await.expect("inspect").is_some());

    // On a terminal it asks; "n" keeps the lock.
    match on_a_terminal(
        &format!(
            "{} --store {} lock release --force",
            env!("CARGO_BIN_EXE_flamingock"),
            env.store
        ),
        "n\n",
    ) {
        Some((code, text)) => {
            assert_eq!(code, 1, "{text}");
            assert!(text.contains("Release it? [y/N]"), "{text}");
            assert!(text.contains("not released"), "{text}");
            assert!(lock.inspect().await.expect("inspect").is_some());
        }
        None => eprintln!(
            "SKIPPED the terminal confirmation check: util-linux `script` is not installed"
        ),
    }

    let released = env.run_store(&["lock", "release", "--force", "--yes"]);
    released.expect_code(0);
    assert!(
        released
            .stdout
            .contains("released the lock of other-runner@host#1"),
        "{}",
        released.all()
    );
    assert!(lock.inspect().await.expect("inspect").is_none());
    // The old holder's lease is gone, and a new runner gets a higher token.
    let out = env.run(&["apply", "--json"]);
    out.expect_code(0);
}

#[test]
fn the_installed_binary_shows_fix_usage() {
    let out = flamingock(&["audit", "fix", "--help"]);
    out.expect_code(0);
    assert!(
        out.stdout.contains("--resolution <RESOLUTION>"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("rolled-back"), "{}", out.stdout);
}

/// Runs `command` with a pseudo-terminal as stdin (util-linux `script`),
/// typing `input`; `None` when `script` is not available.
fn on_a_terminal(command: &str, input: &str) -> Option<(i32, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("type the answer");
    let out = child.wait_with_output().expect("wait for script");
    Some((
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// A database built before Flamingock (here: by hand) is adopted with one
/// command: `baseline --up-to` records the changes it already has, and
/// `apply` runs only the rest.
#[tokio::test]
async fn a_database_built_by_hand_is_adopted_with_one_baseline() {
    const ADD_PHONE: &str = "ALTER TABLE users ADD COLUMN phone TEXT;\n";
    let env = Env::new(&[
        ("0001__create-users.sql", CREATE_USERS),
        ("0002__seed-users.sql", SEED_USERS),
        ("0003__add-phone.sql", ADD_PHONE),
    ]);
    // Built by hand: the first two files' effects, no audit.
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", env.db.display()))
            .await
            .expect("open");
        for sql in [CREATE_USERS, SEED_USERS] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .expect("by hand");
        }
        pool.close().await;
    }
    // Without the changes, or without a reason: usage errors.
    env.run_store(&["baseline", "--up-to", "0002", "--reason", "x"])
        .expect_code(2);
    env.run(&["baseline", "--up-to", "0002", "--reason", " "])
        .expect_code(2);
    let unknown = env.run(&["baseline", "--up-to", "0009", "--reason", "built by hand"]);
    unknown.expect_code(1);
    assert!(
        unknown
            .stderr
            .contains("no change of the loaded pipeline has this id or order"),
        "{}",
        unknown.all()
    );

    let out = env.run(&[
        "--no-color",
        "baseline",
        "--up-to",
        "0002",
        "--reason",
        "built by hand before flamingock",
        "--operator",
        "ana",
    ]);
    out.expect_code(0);
    assert!(
        out.stdout
            .contains("baseline up to '0002': 2 change(s) recorded"),
        "{}",
        out.all()
    );
    let list = env.run_store(&["audit", "list", "--json"]).json();
    for id in ["create-users", "seed-users"] {
        assert_eq!(
            state_of(&list, id).as_deref(),
            Some("MANUAL_MARKED_AS_APPLIED"),
            "{id}"
        );
    }
    // Again: nothing to do.
    let again = env.run(&["baseline", "--up-to", "seed-users", "--reason", "again"]);
    again.expect_code(0);
    assert!(
        again.stdout.contains("nothing to record"),
        "{}",
        again.all()
    );

    let applied = env.run(&["--no-color", "apply"]);
    applied.expect_code(0);
    assert!(
        applied
            .stdout
            .contains("done: 1 applied, 2 already applied"),
        "{}",
        applied.all()
    );
    assert_eq!(
        env.query_i64("SELECT count(*) FROM users")
            .await
            .expect("rows"),
        2,
        "the seed did not run twice"
    );
    // Up to a change that is now applied by Flamingock: refused, listed.
    let refused = env.run(&["baseline", "--up-to", "0003", "--reason", "x"]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("add-phone (APPLIED)"),
        "{}",
        refused.all()
    );
}

/// Other tools' layouts are read as they are: sqlx, Flyway and diesel
/// directories apply in their tools' numeric order, with their
/// no-transaction settings and down/undo files, and `plan` names the layout.
#[tokio::test]
async fn sqlx_flyway_and_diesel_directories_apply_without_renaming() {
    // sqlx: versions as numbers, a reversible pair, `-- no-transaction`.
    let sqlx_env = Env::new(&[
        (
            "1_create_users.sql",
            "CREATE TABLE users (id INTEGER PRIMARY KEY);\n",
        ),
        (
            "2_add_email.up.sql",
            "ALTER TABLE users ADD COLUMN email TEXT;\n",
        ),
        (
            "2_add_email.down.sql",
            "ALTER TABLE users DROP COLUMN email;\n",
        ),
        ("10_vacuum.sql", "-- no-transaction\nVACUUM;\n"),
    ]);
    let plan = sqlx_env.run(&["--no-color", "plan"]);
    plan.expect_code(0);
    assert!(plan.all().contains("sqlx layout"), "{}", plan.all());
    let ids: Vec<&str> = ["1_create_users", "2_add_email", "10_vacuum"]
        .into_iter()
        .filter(|id| plan.stdout.contains(id))
        .collect();
    assert_eq!(ids.len(), 3, "{}", plan.stdout);
    assert!(
        plan.stdout.find("2_add_email") < plan.stdout.find("10_vacuum"),
        "2 runs before 10: {}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.contains("10_vacuum") && l.contains("NON_TRANSACTIONAL")),
        "-- no-transaction is kept: {}",
        plan.stdout
    );
    sqlx_env.run(&["apply"]).expect_code(0);
    assert_eq!(
        sqlx_env
            .query_i64("SELECT count(*) FROM pragma_table_info('users') WHERE name = 'email'")
            .await
            .expect("columns"),
        1
    );

    // Flyway: dotted versions compared as numbers; an undo file pairs up.
    let flyway = Env::new(&[
        ("V1__init.sql", "CREATE TABLE t (a INT);\n"),
        ("V1.10__third.sql", "INSERT INTO t VALUES (3);\n"),
        ("V1.2__second.sql", "INSERT INTO t VALUES (2);\n"),
        ("U1.2__second.sql", "DELETE FROM t WHERE a = 2;\n"),
    ]);
    let out = flyway.run(&["--layout", "flyway", "--no-color", "apply"]);
    out.expect_code(0);
    let second = out.stdout.find("V1.2__second").expect("second applied");
    let third = out.stdout.find("V1.10__third").expect("third applied");
    assert!(second < third, "1.2 before 1.10: {}", out.stdout);
    // Auto cannot tell Flyway's undo from refinery's unversioned U files.
    let u = flyway.run(&["plan"]);
    u.expect_code(2);
    assert!(u.stderr.contains("--layout flyway"), "{}", u.all());
    flyway.write("R__views.sql", "SELECT 1;\n");
    let r = flyway.run(&["--layout", "flyway", "plan"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("R__views.sql") && r.stderr.contains("repeatable"),
        "{}",
        r.all()
    );

    // diesel: one directory per migration, metadata.toml's run_in_transaction.
    let diesel = Env::new(&[]);
    for (dir, up, meta) in [
        (
            "2024-01-01-000000_create_posts",
            "CREATE TABLE posts (id INT);",
            None,
        ),
        (
            "2024-02-01-000000_index",
            "CREATE INDEX posts_id ON posts (id);",
            Some("run_in_transaction = false\n"),
        ),
    ] {
        let d = diesel.dir.join(dir);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("up.sql"), up).expect("up");
        std::fs::write(d.join("down.sql"), "SELECT 1;").expect("down");
        if let Some(m) = meta {
            std::fs::write(d.join("metadata.toml"), m).expect("metadata");
        }
    }
    let plan = diesel.run(&["--no-color", "plan"]);
    plan.expect_code(0);
    assert!(plan.all().contains("diesel layout"), "{}", plan.all());
    assert!(
        plan.stdout
            .lines()
            .any(|l| l.contains("2024-02-01-000000_index") && l.contains("NON_TRANSACTIONAL")),
        "{}",
        plan.stdout
    );
    diesel.run(&["apply"]).expect_code(0);

    // Names of two layouts in one directory: refused, both named.
    let mixed = Env::new(&[
        ("0001__a.sql", "SELECT 1;\n"),
        ("20240101000000_b.sql", "SELECT 1;\n"),
    ]);
    let out = mixed.run(&["plan"]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("0001__a.sql") && out.stderr.contains("20240101000000_b.sql"),
        "{}",
        out.all()
    );
}
