//! Changes declared anywhere in the binary with
//! `#[flamingock::change(stage = "...", ...)]`, collected into a stage by
//! name, so that nobody lists every change by hand.

use crate::stage::Stage;

/// One change registered for a stage (written by `#[change(stage = ...)]`).
#[derive(Debug)]
#[doc(hidden)]
pub struct Registration {
    stage: &'static str,
    module: &'static str,
    add: fn(&mut Stage),
}

impl Registration {
    /// A registration of a change for `stage`, declared in `module`.
    pub const fn new(stage: &'static str, module: &'static str, add: fn(&mut Stage)) -> Self {
        Registration { stage, module, add }
    }
}

inventory::collect!(Registration);

impl Stage {
    /// A stage holding every change declared with
    /// `#[flamingock::change(stage = "<id>", ...)]` anywhere in the binary
    /// (run in order of their `order`, as any stage's). Duplicate ids or
    /// orders fail validation as usual, naming both.
    ///
    /// ```
    /// use flamingock_core::memory::{InMemoryAuditStore, KvTx};
    /// use flamingock_core::{ChangeResult, Flamingock, Stage};
    ///
    /// #[flamingock_macros::change(crate = flamingock_core, stage = "kv", id = "b", order = "0002")]
    /// async fn second(tx: &mut KvTx) -> ChangeResult { tx.put("b", "1"); Ok(()) }
    ///
    /// #[flamingock_macros::change(crate = flamingock_core, stage = "kv", id = "a", order = "0001")]
    /// async fn first(tx: &mut KvTx) -> ChangeResult { tx.put("a", "1"); Ok(()) }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), flamingock_core::Error> {
    /// let store = InMemoryAuditStore::new();
    /// let report = Flamingock::builder()
    ///     .audit_store(store.clone())
    ///     .target(store.shared_target("db"))
    ///     .stage(Stage::discover("kv"))
    ///     .build()?
    ///     .run()
    ///     .await?;
    /// assert_eq!(report.applied(), ["a", "b"]);
    /// # Ok(()) }
    /// ```
    pub fn discover(id: impl Into<String>) -> Stage {
        let mut stage = Stage::new(id);
        let mut found: Vec<&Registration> = inventory::iter::<Registration>
            .into_iter()
            .filter(|r| r.stage == stage.id())
            .collect();
        // A stable order of addition (the run orders by `order` anyway).
        found.sort_by_key(|r| r.module);
        for r in found {
            (r.add)(&mut stage);
        }
        stage
    }
}

#[doc(hidden)]
pub use inventory;
