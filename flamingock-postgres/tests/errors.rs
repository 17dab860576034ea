//! PostgreSQL's own bad input and failures on a real server: a missing
//! database, a column of another type, malformed history columns, invalid
//! names, and non-transactional changes (`CREATE INDEX CONCURRENTLY`). The
//! checks every backend shares (malformed states, missing and misshapen
//! tables, fence rejections inside a change's transaction, connections
//! killed mid-run, wrong credentials) are the bad-input suite's, run from
//! `tests/conformance.rs`.

use flamingock_core::error::ErrorChain as _;
mod common;

use std::sync::Arc;

use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, ContextMode, Error,
    Flamingock, HistoryFilter, TargetSystem, TxStrategy,
};
use flamingock_postgres::{
    quote_ident, PgContext, PostgresAuditStore, PostgresLock, PostgresTarget,
};
use flamingock_test_support::namespace;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, PgPool};

struct Schema {
    admin: PgPool,
    name: String,
}

impl Schema {
    async fn new(url: &str, prefix: &str) -> Schema {
        let admin = common::pool(url, 2);
        let name = namespace(prefix);
        exec(&admin, &format!("CREATE SCHEMA {}", quote_ident(&name))).await;
        Schema { admin, name }
    }
    fn q(&self) -> String {
        quote_ident(&self.name)
    }
    async fn drop(self) {
        common::drop_schemas(&self.admin, &[&self.name])
            .await
            .expect("drop schema");
    }
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn store(url: &str, schema: &str) -> PostgresAuditStore {
    PostgresAuditStore::builder(common::pool(url, 3))
        .schema(schema)
        .build()
        .await
        .expect("build store")
}

#[tokio::test]
async fn missing_database_is_a_clear_connect_error() {
    let Some(url) = common::url() else { return };
    let bad = common::options(&url)
        .database("flamingock_no_such_db")
        .to_url_lossy()
        .to_string();
    let err = PostgresAuditStore::connect(&bad)
        .await
        .expect_err("must not connect");
    let text = err.chain().to_string();
    assert!(text.contains("flamingock_no_such_db"), "{text}");
    assert!(text.contains("connect failed"), "{text}");
    // The same through a lazy pool: building does no I/O, the first
    // operation (here the start-up check's read) names the database.
    let lazy = PgPoolOptions::new().connect_lazy_with(common::options(&bad));
    let store = PostgresAuditStore::builder(lazy)
        .build()
        .await
        .expect("building does no I/O");
    let err = store.summary().await.expect_err("must not read");
    assert!(
        err.chain().to_string().contains("flamingock_no_such_db"),
        "{err}"
    );
}

/// A column of another type is named with both types (a missing column is
/// the bad-input suite's `misshapen_tables_are_reported_not_used`).
#[tokio::test]
async fn a_column_of_another_type_is_named_with_both_types() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "shape").await;
    exec(
        &s.admin,
        &format!(
            "CREATE TABLE {}.flamingock_fence (id smallint PRIMARY KEY, fence text)",
            s.q()
        ),
    )
    .await;
    let store = self::store(&url, &s.name).await;
    let text = store.prepare().await.expect_err("wrong type").to_string();
    assert!(
        text.contains("column fence is text, expected bigint"),
        "{text}"
    );
    s.drop().await;
}

/// Malformed history columns are named with the change (a malformed state
/// is the bad-input suite's `malformed_entries_are_named_not_misread`).
#[tokio::test]
async fn malformed_history_columns_are_errors_naming_column_and_change() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "badrow").await;
    let store = store(&url, &s.name).await;
    store.prepare().await.expect("prepare");
    for id in ["good", "bad-duration"] {
        store
            .append(&AuditEntry::new(id, AuditState::Applied, 0))
            .await
            .expect("append");
    }
    exec(
        &s.admin,
        &format!(
            "UPDATE {0}.flamingock_audit_history SET duration_ms = -5 WHERE change_id = 'bad-duration';
             UPDATE {0}.flamingock_audit_history SET tx_strategy = 'TELEPATHY' WHERE change_id = 'good';",
            s.q()
        ),
    )
    .await;
    let text = store
        .history(&HistoryFilter::all().change("bad-duration"))
        .await
        .expect_err("negative duration")
        .to_string();
    assert!(
        text.contains("duration_ms") && text.contains("bad-duration"),
        "{text}"
    );
    let text = store
        .history(&HistoryFilter::all().change("good"))
        .await
        .expect_err("unknown strategy")
        .to_string();
    assert!(text.contains("TELEPATHY"), "{text}");
    s.drop().await;
}

#[tokio::test]
async fn store_id_names_database_schema_and_prefix_across_pools() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "ids").await;
    let a = store(&url, &s.name).await;
    let b = store(&url, &s.name).await;
    assert_eq!(a.store_id(), b.store_id());
    assert!(a.store_id().starts_with("postgres:"), "{}", a.store_id());
    assert!(a.store_id().ends_with(&format!("/{}/flamingock", s.name)));
    // A target from the other pool shares transactions with the first store.
    let caps = b
        .shared_target("t")
        .build()
        .await
        .expect("target")
        .capabilities();
    assert_eq!(caps.shared_audit_store.as_deref(), Some(a.store_id()));
    let other = PostgresAuditStore::builder(common::pool(&url, 1))
        .schema(&s.name)
        .prefix("other")
        .build()
        .await
        .expect("build");
    assert_ne!(other.store_id(), a.store_id());
    s.drop().await;
}

/// A non-transactional change that builds an index concurrently.
struct ConcurrentIndex {
    schema: String,
}

impl Change for ConcurrentIndex {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("concurrent-index")
            .order("0002")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        assert!(!ctx.is_transactional());
        let s = quote_ident(&self.schema);
        ctx.execute_script(&format!(
            "-- two statements: each must run on its own
             CREATE INDEX CONCURRENTLY IF NOT EXISTS items_name ON {s}.items (name);
             CREATE INDEX CONCURRENTLY IF NOT EXISTS items_id_name ON {s}.items (id, name);"
        ))
        .await?;
        Ok(())
    }
}

struct CreateItems {
    schema: String,
}

impl Change for CreateItems {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-items").order("0001")
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        assert!(ctx.is_transactional());
        ctx.execute_script(&format!(
            "CREATE TABLE {0}.items (id int PRIMARY KEY, name text);
             INSERT INTO {0}.items VALUES (1, 'a;b'), (2, $$c;d$$);",
            quote_ident(&self.schema)
        ))
        .await?;
        Ok(())
    }
}

#[tokio::test]
async fn non_transactional_change_creates_index_concurrently() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "conc").await;
    let store = store(&url, &s.name).await;
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(
            flamingock_core::Stage::new("s")
                .change(CreateItems {
                    schema: s.name.clone(),
                })
                .change(ConcurrentIndex {
                    schema: s.name.clone(),
                }),
        )
        .build()
        .expect("build");
    let report = runner.run().await.expect("run");
    assert_eq!(report.applied(), ["create-items", "concurrent-index"]);
    let plan = runner.plan().await.expect("plan");
    assert_eq!(plan[0].strategy, TxStrategy::SharedTx);
    assert_eq!(plan[1].strategy, TxStrategy::NonTransactional);
    let indexes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = $1 AND indexname IN ('items_name', 'items_id_name')",
    )
    .bind(&s.name)
    .fetch_one(&s.admin)
    .await
    .expect("indexes");
    assert_eq!(indexes, 2);
    s.drop().await;
}

#[tokio::test]
async fn a_script_error_names_the_failing_statement() {
    let Some(url) = common::url() else { return };
    let pool = common::pool(&url, 1);
    let target = PostgresTarget::builder("db", pool)
        .marker(false)
        .build()
        .await
        .expect("target");
    let mut ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    let err = ctx
        .execute_script("SELECT 1; SELECT * FROM flamingock_no_such_table; SELECT 3")
        .await
        .expect_err("second statement fails");
    assert_eq!(err.index, 1);
    assert!(err.chain().to_string().contains("statement #2"), "{err}");
    assert!(
        err.chain().to_string().contains("flamingock_no_such_table"),
        "{err}"
    );
    // PostgreSQL's message and SQLSTATE; not sqlx's prefix, nor the line of
    // the server's C source (`at line 1454`), and the cause printed once.
    let text = err.chain().to_string();
    assert!(text.contains("does not exist (SQLSTATE 42P01)"), "{text}");
    assert!(
        !text.contains(" at line ") && !text.contains("error returned from database"),
        "{text}"
    );
    assert!(std::error::Error::source(&err).is_none());
    assert_eq!(
        flamingock_postgres::sqlstate(&err.source).as_deref(),
        Some("42P01")
    );
    target.abort(ctx).await.expect("abort");
}

#[tokio::test]
async fn a_separate_target_keeps_its_marker_in_the_connections_schema() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "marker_home").await;
    // A pool whose connections work in the test's schema, as an
    // application's role with its own search_path would.
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("url");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(options.options([("search_path", s.name.as_str())]));
    let target = PostgresTarget::builder("db", pool)
        .build()
        .await
        .expect("target");
    assert_eq!(target.schema(), None, "not asked before a change needs it");
    let ctx = target.begin(ContextMode::Transaction).await.expect("begin");
    assert_eq!(ctx.schema(), s.name, "the change is told the schema");
    target.abort(ctx).await.expect("abort");
    assert_eq!(target.schema(), Some(s.name.as_str()));
    let here: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename = 'flamingock_marker'",
    )
    .bind(&s.name)
    .fetch_one(&s.admin)
    .await
    .expect("catalog");
    assert_eq!(here, 1, "the marker table is in the connection's schema");
    s.drop().await;
}

#[tokio::test]
async fn a_shared_target_refuses_marker_settings() {
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "shared_marker").await;
    let store = store(&url, &s.name).await;
    let err = store
        .shared_target("db")
        .marker(true)
        .build()
        .await
        .expect_err("a shared target keeps no marker");
    assert!(err.chain().to_string().contains("keeps no marker"), "{err}");
    let err = store
        .shared_target("db")
        .prefix("x")
        .build()
        .await
        .expect_err("nor a marker prefix");
    assert!(err.chain().to_string().contains("prefix"), "{err}");
    s.drop().await;
}

#[tokio::test]
async fn invalid_names_are_rejected_before_any_sql() {
    let Some(url) = common::url() else { return };
    let err = PostgresAuditStore::builder(common::pool(&url, 1))
        .prefix("")
        .build()
        .await
        .expect_err("empty prefix");
    assert!(err.chain().to_string().contains("table prefix"), "{err}");
    assert!(
        matches!(err, flamingock_core::StoreError::InvalidConfig { .. }),
        "{err:?}"
    );
    let err = PostgresAuditStore::builder(common::pool(&url, 1))
        .schema("s".repeat(70))
        .build()
        .await
        .expect_err("long schema");
    assert!(err.chain().to_string().contains("too long"), "{err}");
    // A name that is not a plain identifier is refused before anything is
    // sent: no schema of that name appears.
    let odd = format!("{}\"; DROP", namespace("odd"));
    let err = PostgresAuditStore::builder(common::pool(&url, 2))
        .schema(&odd)
        .build()
        .await
        .expect_err("odd schema");
    assert!(
        err.chain()
            .to_string()
            .contains("is not a plain identifier"),
        "{err}"
    );
    let lock = PostgresLock::builder(common::pool(&url, 1))
        .schema(&odd)
        .build()
        .await
        .expect_err("odd lock schema");
    assert!(
        lock.chain()
            .to_string()
            .contains("is not a plain identifier"),
        "{lock}"
    );
    let admin = common::pool(&url, 1);
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&odd)
        .fetch_one(&admin)
        .await
        .expect("catalog");
    assert_eq!(found, 0, "a schema named {odd:?} was created");
}

#[tokio::test]
async fn blocked_run_lists_issue_for_non_transactional_failure() {
    struct Broken;
    impl Change for Broken {
        type Target = PostgresTarget;
        fn meta(&self) -> ChangeMeta {
            ChangeMeta::new("broken").order("0001").transactional(false)
        }
        async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
            ctx.execute_script("SELECT * FROM flamingock_missing_relation")
                .await?;
            Ok(())
        }
    }
    let Some(url) = common::url() else { return };
    let s = Schema::new(&url, "issues").await;
    let store = store(&url, &s.name).await;
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(flamingock_core::Stage::new("s").change(Broken))
        .build()
        .expect("build");
    let err = runner.run().await.expect_err("fails");
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err}");
    assert!(
        err.chain()
            .to_string()
            .contains("flamingock_missing_relation"),
        "{err}"
    );
    let issues = runner.issues().await.expect("issues");
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].state, AuditState::Failed);
    runner
        .mark_rolled_back("broken", "nothing was done")
        .await
        .expect("fix");
    assert!(runner.issues().await.expect("issues").is_empty());
    let _ = Arc::new(store);
    s.drop().await;
}
