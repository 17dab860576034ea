//! Flamingock on the in-memory reference backends.
#![allow(clippy::print_stdout)] // an example prints its results

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flamingock::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock::{Change, ChangeMeta, ChangeResult, DependencyTarget, Error, Flamingock, Stage};

struct CreateUsers;
impl Change for CreateUsers {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-users").order("0001").author("ana")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.put("schema:users", "id, email");
        Ok(())
    }
}

struct SeedUsers;
impl Change for SeedUsers {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed-users").order("0002").author("ana")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.put("users:1", "ana@example.com");
        Ok(())
    }
}

/// A feature-flag service stands in for any non-transactional system.
#[derive(Clone, Default)]
struct Flags {
    up: Arc<AtomicBool>,
    checkout: Arc<AtomicBool>,
}

struct EnableCheckout;
impl Change for EnableCheckout {
    type Target = DependencyTarget<Flags>;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("enable-checkout")
            .order("0001")
            .author("bo")
            .transactional(false)
    }
    async fn apply(&self, flags: &mut Flags) -> ChangeResult {
        flags.checkout.store(true, Ordering::SeqCst);
        if !flags.up.load(Ordering::SeqCst) {
            return Err("flag service returned 503".into());
        }
        Ok(())
    }
}

fn runner(store: &InMemoryAuditStore, flags: &Flags) -> Result<Flamingock, Error> {
    Flamingock::builder()
        .service("example")
        .audit_store(store.clone())
        .target(store.shared_target("app-db"))
        .target(DependencyTarget::new("flags", flags.clone()))
        .stage(Stage::new("schema").change(CreateUsers).change(SeedUsers))
        .stage(Stage::new("flags").change(EnableCheckout))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = InMemoryAuditStore::new();
    let flags = Flags::default();

    println!("== first run: the flag service is down");
    match runner(&store, &flags)?.run().await {
        Err(e) => println!(
            "{e}\n{}",
            e.report().map(ToString::to_string).unwrap_or_default()
        ),
        Ok(r) => println!("{r}"),
    }

    println!("== second run: refused, the flag change may be half-applied");
    if let Err(e) = runner(&store, &flags)?.run().await {
        println!("{e}");
    }

    println!("== an operator checks the flag, finds it set, and records it");
    let ops = runner(&store, &flags)?;
    for issue in ops.issues().await? {
        println!("issue: {} ({})", issue.change_id, issue.state);
    }
    ops.mark_applied("enable-checkout", "flag verified in the console")
        .await?;

    println!("== third run");
    flags.up.store(true, Ordering::SeqCst);
    println!("{}", runner(&store, &flags)?.run().await?);

    println!("== audit");
    for e in ops.snapshot().await? {
        println!("{:<16} {:<26} {}", e.change_id, e.state, e.tx_strategy);
    }
    Ok(())
}
