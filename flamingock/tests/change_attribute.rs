//! `#[flamingock::change]`: an async function declares the same change a
//! hand-written `Change` impl does.
#![cfg(feature = "macros")]

use flamingock::memory::{InMemoryAuditStore, KvTx};
use flamingock::prelude::*;

#[flamingock::change(id = "create-users", order = "0001", author = "ana")]
async fn create_users(tx: &mut KvTx) -> ChangeResult {
    tx.put("users", "created");
    Ok(())
}

async fn undo_index(tx: &mut KvTx) -> ChangeResult {
    tx.put("index", "dropped");
    Ok(())
}

/// Doc comments stay on the generated type.
#[flamingock::change(
    id = "add-index",
    order = "0002",
    description = "an index on users",
    target = "db",
    transactional = false,
    recovery = "always-retry",
    rollback = undo_index
)]
async fn add_index(tx: &mut KvTx) -> ChangeResult {
    tx.put("index", "built");
    Ok(())
}

async fn flag_is_on(tx: &mut KvTx) -> Result<bool, flamingock::BoxError> {
    Ok(tx.get("flag").as_deref() == Some("on"))
}

/// A non-transactional change with an "already in place" check.
#[flamingock::change(
    id = "flag-on",
    order = "0003",
    transactional = false,
    check = flag_is_on
)]
async fn turn_flag_on(tx: &mut KvTx) -> ChangeResult {
    tx.put("flag", "on");
    Ok(())
}

#[tokio::test]
async fn a_declared_check_is_the_changes_already_in_place_check() {
    let store = InMemoryAuditStore::new();
    let target = store.shared_target("db");
    let mut tx = target
        .begin(flamingock::ContextMode::NonTransactional)
        .await
        .expect("context");
    assert!(!turn_flag_on.is_applied(&mut tx).await.expect("check"));
    turn_flag_on.apply(&mut tx).await.expect("apply");
    assert!(turn_flag_on.is_applied(&mut tx).await.expect("check"));
    // Without `check`, the change has none.
    let err = create_users
        .is_applied(&mut tx)
        .await
        .expect_err("no check declared");
    assert!(err.is::<flamingock::NoCheck>(), "{err}");
}

#[test]
fn the_metadata_is_what_a_hand_written_meta_gives() {
    assert_eq!(
        create_users.meta(),
        ChangeMeta::new("create-users").order("0001").author("ana")
    );
    assert_eq!(
        add_index.meta(),
        ChangeMeta::new("add-index")
            .order("0002")
            .description("an index on users")
            .target("db")
            .transactional(false)
            .recovery(RecoveryStrategy::AlwaysRetry)
    );
}

#[tokio::test]
async fn declared_changes_run_in_order_once_and_roll_back_with_their_function() {
    let store = InMemoryAuditStore::new();
    let target = store.shared_target("db");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(Stage::new("s").change(add_index).change(create_users))
        .build()
        .expect("build");
    let report = runner.run().await.expect("run");
    assert_eq!(report.applied(), ["create-users", "add-index"]);
    assert_eq!(target.get("index").as_deref(), Some("built"));
    assert!(runner.run().await.expect("again").applied().is_empty());

    let mut tx = target
        .begin(flamingock::ContextMode::NonTransactional)
        .await
        .expect("context");
    add_index.rollback(&mut tx).await.expect("rollback");
    assert_eq!(target.get("index").as_deref(), Some("dropped"));
    create_users
        .rollback(&mut tx)
        .await
        .expect_err("no rollback declared");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_sqlite_change_through_the_facade() {
    use flamingock::sqlite::{sqlx, SqliteAuditStore, SqliteContext};

    #[flamingock::change(id = "create-products", order = "0001")]
    async fn create_products(db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("CREATE TABLE products (id INTEGER PRIMARY KEY)")
            .execute(db.conn())
            .await?;
        Ok(())
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteAuditStore::connect(dir.path().join("app.db"))
        .await
        .expect("open");
    let report = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("app-db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(Stage::new("schema").change(create_products))
        .build()
        .expect("build")
        .run()
        .await
        .expect("run");
    assert_eq!(report.applied(), ["create-products"]);
}

mod discovered {
    use flamingock::memory::KvTx;
    use flamingock::prelude::*;

    #[flamingock::change(stage = "found", id = "later", order = "0002")]
    async fn later(tx: &mut KvTx) -> ChangeResult {
        tx.put("later", "1");
        Ok(())
    }

    pub(super) mod elsewhere {
        use flamingock::memory::KvTx;
        use flamingock::prelude::*;

        #[flamingock::change(stage = "found", id = "earlier", order = "0001")]
        async fn earlier(tx: &mut KvTx) -> ChangeResult {
            tx.put("earlier", "1");
            Ok(())
        }
    }
}

#[tokio::test]
async fn changes_declared_for_a_stage_anywhere_are_discovered_in_order() {
    let store = InMemoryAuditStore::new();
    let stage = Stage::discover("found");
    assert_eq!(stage.len(), 2);
    assert_eq!(Stage::discover("nothing-declared").len(), 0);
    let report = Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(stage)
        .build()
        .expect("build")
        .run()
        .await
        .expect("run");
    assert_eq!(report.applied(), ["earlier", "later"]);
}
