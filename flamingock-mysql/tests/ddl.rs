//! DDL commits implicitly on MySQL and MariaDB: what the runner records
//! then, for Rust changes and SQL files, and a run killed between two DDL
//! statements. Against the real server (`FLAMINGOCK_TEST_MYSQL_URL`).

use flamingock_core::error::ErrorChain as _;
mod common;

use std::time::Duration;

use flamingock_core::{
    AuditState, Change, ChangeMeta, ChangeResult, Error, Flamingock, HistoryFilter, LockConfig,
    Stage, TxStrategy,
};
use flamingock_mysql::{quote_ident, MysqlAuditStore, MysqlContext, MysqlTarget};
use flamingock_sql::SqlChanges;
use sqlx::{AssertSqlSafe, MySqlPool};

/// A fresh database with a store and its shared target; dropped at the end.
struct World {
    ns: String,
    admin: MySqlPool,
    pool: MySqlPool,
    store: MysqlAuditStore,
}

impl World {
    async fn new() -> World {
        let url = common::url().expect("MySQL");
        let ns = flamingock_test_support::namespace("ddl");
        let admin = common::admin(&url);
        common::create_databases(&admin, &[&ns])
            .await
            .expect("create database");
        let pool = common::pool(&url, &ns, 3);
        let store = MysqlAuditStore::builder(pool.clone())
            .build()
            .await
            .expect("store");
        World {
            ns,
            admin,
            pool,
            store,
        }
    }

    async fn runner(&self, stage: Stage) -> Flamingock {
        Flamingock::builder()
            .audit_store(self.store.clone())
            .target(
                self.store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("target"),
            )
            .lock_config(LockConfig::default().lease(Duration::from_secs(2)))
            .stage(stage)
            .build()
            .expect("runner")
    }

    async fn tables(&self) -> Vec<String> {
        common::footprint(&self.admin, &[&self.ns])
            .await
            .expect("tables")
            .into_iter()
            .filter(|t| !t.contains(".flamingock_"))
            .map(|t| t.rsplit('.').next().unwrap_or_default().to_owned())
            .collect()
    }

    async fn rows(&self, table: &str) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {}",
            quote_ident(table)
        )))
        .fetch_one(&self.pool)
        .await
        .expect("count")
    }

    async fn states(&self, runner: &Flamingock, id: &str) -> Vec<(AuditState, TxStrategy)> {
        runner
            .history(&HistoryFilter::all().change(id))
            .await
            .expect("history")
            .into_iter()
            .map(|e| (e.state, e.tx_strategy))
            .collect()
    }

    async fn cleanup(self) {
        common::drop_databases(&self.admin, &[&self.ns])
            .await
            .expect("drop database");
    }
}

/// A transactional Rust change: `CREATE TABLE`, then `then` (a statement).
struct DdlThen {
    id: &'static str,
    table: &'static str,
    then: &'static str,
    rollback: bool,
}

impl Change for DdlThen {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order("0001")
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE TABLE {} (id INT PRIMARY KEY)",
            self.table
        )))
        .execute(ctx.conn())
        .await?;
        sqlx::raw_sql(AssertSqlSafe(self.then))
            .execute(ctx.conn())
            .await?;
        Ok(())
    }
    async fn rollback(&self, ctx: &mut MysqlContext) -> ChangeResult {
        if !self.rollback {
            return Err(Box::new(flamingock_core::NoRollback));
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}",
            self.table
        )))
        .execute(ctx.conn())
        .await?;
        Ok(())
    }
}

/// A transactional change with data only: an insert, then `then`.
struct DataThen {
    then: &'static str,
}

impl Change for DataThen {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("data").order("0002")
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql("INSERT INTO kept (id) VALUES (1)")
            .execute(ctx.conn())
            .await?;
        sqlx::raw_sql(AssertSqlSafe(self.then))
            .execute(ctx.conn())
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn transactional_change_with_ddl_is_recorded_under_the_non_transactional_rules() {
    let w = World::new().await;
    let change = DdlThen {
        id: "ddl-ok",
        table: "t_ok",
        then: "INSERT INTO t_ok VALUES (1)",
        rollback: false,
    };
    let runner = w.runner(Stage::new("s").change(change)).await;
    runner.run().await.expect("run");
    assert_eq!(w.rows("t_ok").await, 1);
    // No atomicity is claimed: the APPLIED entry says non-transactional.
    assert_eq!(
        w.states(&runner, "ddl-ok").await,
        vec![(AuditState::Applied, TxStrategy::NonTransactional)]
    );
    // Applied once: the next run skips it.
    runner.run().await.expect("second run");
    assert_eq!(w.rows("t_ok").await, 1);
    w.cleanup().await;
}

#[tokio::test]
async fn failure_after_ddl_blocks_instead_of_retrying_silently() {
    let w = World::new().await;
    let change = || DdlThen {
        id: "ddl-fails",
        table: "t_left",
        then: "INSERT INTO no_such_table VALUES (1)",
        rollback: false,
    };
    let runner = w.runner(Stage::new("s").change(change())).await;
    let err = runner.run().await.expect_err("the change fails");
    assert!(
        err.chain().to_string().contains("committed implicitly"),
        "the error says what happened: {err}"
    );
    // The table the DDL made is there: the database committed it.
    assert_eq!(w.tables().await, vec!["t_left".to_owned()]);
    assert_eq!(
        w.states(&runner, "ddl-fails").await,
        vec![(AuditState::Failed, TxStrategy::NonTransactional)]
    );
    // Not re-run (its CREATE TABLE would now fail, and a data change would
    // double): blocked for an operator.
    let again = w.runner(Stage::new("s").change(change())).await;
    match again.run().await {
        Err(Error::Blocked { blocked, .. }) => {
            assert_eq!(blocked.len(), 1);
            assert_eq!(blocked[0].change_id, "ddl-fails");
        }
        other => panic!("expected the change to block, got {other:?}"),
    }
    w.cleanup().await;
}

#[tokio::test]
async fn failure_after_ddl_runs_the_changes_rollback() {
    let w = World::new().await;
    let change = DdlThen {
        id: "ddl-undo",
        table: "t_undo",
        then: "INSERT INTO no_such_table VALUES (1)",
        rollback: true,
    };
    let runner = w.runner(Stage::new("s").change(change)).await;
    runner.run().await.expect_err("the change fails");
    assert!(
        w.tables().await.is_empty(),
        "the rollback dropped the table"
    );
    assert_eq!(
        w.states(&runner, "ddl-undo").await,
        vec![
            (AuditState::Failed, TxStrategy::NonTransactional),
            (AuditState::RolledBack, TxStrategy::NonTransactional)
        ]
    );
    w.cleanup().await;
}

#[tokio::test]
async fn data_only_change_stays_atomic() {
    let w = World::new().await;
    sqlx::raw_sql("CREATE TABLE kept (id INT PRIMARY KEY)")
        .execute(&w.pool)
        .await
        .expect("table");
    let runner = w
        .runner(Stage::new("s").change(DataThen {
            then: "INSERT INTO kept (id) VALUES (1)", // duplicate key
        }))
        .await;
    runner.run().await.expect_err("the change fails");
    // The transaction was rolled back by the database: nothing kept, and
    // the change is simply applied again next time (not blocked).
    assert_eq!(w.rows("kept").await, 0);
    assert_eq!(
        w.states(&runner, "data").await,
        vec![
            (AuditState::Failed, TxStrategy::SharedTx),
            (AuditState::RolledBack, TxStrategy::SharedTx)
        ]
    );
    let fixed = w
        .runner(Stage::new("s").change(DataThen { then: "DO 1" }))
        .await;
    fixed.run().await.expect("applied on the next run");
    assert_eq!(w.rows("kept").await, 1);
    w.cleanup().await;
}

fn files(sources: &[(&str, &str)]) -> SqlChanges {
    SqlChanges::from_sources("changes", sources.iter().copied()).expect("valid files")
}

#[tokio::test]
async fn sql_file_with_ddl_runs_non_transactionally_and_plan_says_why() {
    let w = World::new().await;
    let changes = files(&[
        (
            "0001__create.sql",
            "CREATE TABLE a (id INT PRIMARY KEY);\nINSERT INTO a VALUES (1);",
        ),
        ("0002__seed.sql", "INSERT INTO a VALUES (2);"),
    ]);
    let runner = w.runner(changes.stage::<MysqlTarget>("sql", "db")).await;
    let plan = runner.plan().await.expect("plan");
    assert_eq!(plan[0].strategy, TxStrategy::NonTransactional);
    let why = plan[0].reason.as_deref().expect("a reason");
    assert!(why.contains("statement 1 (CREATE TABLE)"), "{why}");
    assert_eq!(plan[1].strategy, TxStrategy::SharedTx);
    assert_eq!(plan[1].reason, None);
    runner.run().await.expect("run");
    assert_eq!(w.rows("a").await, 2);
    assert_eq!(
        w.states(&runner, "create").await,
        vec![
            (AuditState::Started, TxStrategy::NonTransactional),
            (AuditState::Applied, TxStrategy::NonTransactional)
        ]
    );
    w.cleanup().await;
}

#[tokio::test]
async fn run_killed_between_ddl_statements_blocks_the_file() {
    let w = World::new().await;
    let sources = [(
        "0001__two-tables.sql",
        "CREATE TABLE first_t (id INT);\nDO SLEEP(2);\nCREATE TABLE second_t (id INT);",
    )];
    let runner = w
        .runner(files(&sources).stage::<MysqlTarget>("sql", "db"))
        .await;
    // The run is dropped (the process dies) while the file's second
    // statement runs: its first table exists, its last does not.
    let cut = tokio::time::timeout(Duration::from_millis(800), runner.run()).await;
    assert!(cut.is_err(), "the run was cut short");
    tokio::time::sleep(Duration::from_secs(3)).await; // the dead runner's lease ends
    assert_eq!(w.tables().await, vec!["first_t".to_owned()]);
    let next = w
        .runner(files(&sources).stage::<MysqlTarget>("sql", "db"))
        .await;
    match next.run().await {
        Err(Error::Blocked { blocked, .. }) => {
            assert_eq!(blocked[0].change_id, "two-tables");
        }
        other => panic!("expected the file to block, got {other:?}"),
    }
    // Never re-run silently, never marked applied.
    assert_eq!(w.tables().await, vec!["first_t".to_owned()]);
    assert_eq!(
        w.states(&next, "two-tables").await,
        vec![(AuditState::Started, TxStrategy::NonTransactional)]
    );
    w.cleanup().await;
}

#[tokio::test]
async fn transactional_header_with_ddl_is_refused_before_running() {
    let w = World::new().await;
    let changes = files(&[(
        "0001__forced.sql",
        "-- flamingock: transactional=true\nINSERT INTO nothing_yet VALUES (1);\nCREATE TABLE d (id INT);",
    )]);
    let runner = w.runner(changes.stage::<MysqlTarget>("sql", "db")).await;
    let err = runner.run().await.expect_err("refused");
    let text = format!("{err:?} {err}");
    assert!(
        text.contains("statement 2 (CREATE TABLE)") && text.contains("nothing was run"),
        "{text}"
    );
    assert!(w.tables().await.is_empty());
    w.cleanup().await;
}
