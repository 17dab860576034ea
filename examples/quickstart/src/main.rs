//! Flamingock quickstart: three changes applied to a SQLite file, exactly
//! once, with their audit in the same file. Run it twice: the second run
//! finds nothing pending and returns without taking the lock.
//!
//! ```sh
//! cargo run -p example-quickstart            # ./quickstart.db
//! cargo run -p example-quickstart -- my.db   # another file
//! ```
#![allow(clippy::print_stdout)] // an example prints its results

use flamingock::prelude::*;
use flamingock::sqlite::{sqlx, SqliteAuditStore, SqliteContext};

/// Every change is an async function taking its target's context; the
/// attribute gives it its id, order and the rest of its metadata.
#[flamingock::change(
    id = "create-products-table",
    order = "0001",
    author = "quickstart",
    description = "the products table"
)]
async fn create_products(db: &mut SqliteContext) -> ChangeResult {
    sqlx::query(
        "CREATE TABLE products (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            price_cents INTEGER NOT NULL
        )",
    )
    .execute(db.conn())
    .await?;
    Ok(())
}

#[flamingock::change(id = "seed-products", order = "0002", author = "quickstart")]
async fn seed_products(db: &mut SqliteContext) -> ChangeResult {
    for (name, price) in [("tea", 350), ("coffee", 420), ("cake", 600)] {
        sqlx::query("INSERT INTO products (name, price_cents) VALUES (?1, ?2)")
            .bind(name)
            .bind(price)
            .execute(db.conn())
            .await?;
    }
    Ok(())
}

/// SQLite DDL is transactional, so a failed `apply` is undone by the
/// database and the rollback never runs here. It documents how to undo the
/// change, and is what runs if the change is declared `transactional = false`.
#[flamingock::change(
    id = "add-stock-column",
    order = "0003",
    author = "quickstart",
    rollback = drop_stock
)]
async fn add_stock(db: &mut SqliteContext) -> ChangeResult {
    sqlx::query("ALTER TABLE products ADD COLUMN stock INTEGER NOT NULL DEFAULT 0")
        .execute(db.conn())
        .await?;
    Ok(())
}

async fn drop_stock(db: &mut SqliteContext) -> ChangeResult {
    sqlx::query("ALTER TABLE products DROP COLUMN stock")
        .execute(db.conn())
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "quickstart.db".into());
    match run(&path).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(path: &str) -> Result<(), Box<dyn std::error::Error>> {
    // The audit store, its lock and the target all live in one file. The
    // target comes from the store, so each change commits in one
    // transaction together with its audit entry.
    let store = SqliteAuditStore::connect(path).await?;
    let runner = Flamingock::builder()
        .service("quickstart")
        .audit_store(store.clone())
        .target(store.shared_target("app-db").build().await?)
        .stage(
            Stage::new("catalog")
                .change(create_products)
                .change(seed_products)
                .change(add_stock),
        )
        .build()?;

    let report = runner.run().await?;
    print!("{report}");
    if report.totals().applied == 0 {
        println!("nothing pending (lock taken: {})", report.took_lock);
    }

    println!("\naudit of {}:", store.file());
    println!(
        "  {:<22} {:<8} {:<10} {:>5}  at",
        "change", "state", "strategy", "token"
    );
    let mut audit = runner.snapshot().await?;
    audit.sort_by_key(|e| e.created_at);
    for e in audit {
        println!(
            "  {:<22} {:<8} {:<10} {:>5}  {}",
            e.change_id,
            e.state,
            e.tx_strategy,
            e.fencing_token,
            e.created_at.format("%Y-%m-%d %H:%M:%S")
        );
    }
    Ok(())
}
