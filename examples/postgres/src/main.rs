//! Flamingock on PostgreSQL.
#![allow(clippy::print_stdout)] // an example prints its results

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flamingock::postgres::sqlx::{self, AssertSqlSafe};
use flamingock::postgres::{quote_ident, PgContext, PostgresAuditStore, PostgresTarget};
use flamingock::{Change, ChangeMeta, ChangeResult, DependencyTarget, Error, Flamingock, Stage};

const SCHEMA: &str = "flamingock_example";

fn table(name: &str) -> String {
    format!("{}.{}", quote_ident(SCHEMA), quote_ident(name))
}

/// Runs in one transaction with its APPLIED entry (shared transaction).
struct CreateCustomers;
impl Change for CreateCustomers {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-customers")
            .order("0001")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TABLE {} (id bigint PRIMARY KEY, email text NOT NULL, country text)",
            table("customers")
        )))
        .execute(ctx.conn())
        .await?;
        Ok(())
    }
}

struct SeedCustomers;
impl Change for SeedCustomers {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed-customers")
            .order("0002")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        let insert = format!(
            "INSERT INTO {} (id, email, country) VALUES ($1, $2, $3)",
            table("customers")
        );
        for (id, email, country) in [
            (1_i64, "ana@example.com", "ES"),
            (2, "bo@example.com", "PT"),
        ] {
            sqlx::query(AssertSqlSafe(insert.clone()))
                .bind(id)
                .bind(email)
                .bind(country)
                .execute(ctx.conn())
                .await?;
        }
        Ok(())
    }
}

/// Outside any transaction: `CREATE INDEX CONCURRENTLY` refuses to run in one.
/// Statements go one at a time (`execute_script` splits the script).
struct IndexEmails;
impl Change for IndexEmails {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("index-customer-emails")
            .order("0003")
            .author("ana")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        ctx.execute_script(&format!(
            "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS customers_email ON {0} (email);
             CREATE INDEX CONCURRENTLY IF NOT EXISTS customers_country ON {0} (country);",
            table("customers")
        ))
        .await?;
        Ok(())
    }
    async fn rollback(&self, ctx: &mut PgContext) -> ChangeResult {
        ctx.execute_script(&format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {s}.customers_email;
             DROP INDEX CONCURRENTLY IF EXISTS {s}.customers_country;",
            s = quote_ident(SCHEMA)
        ))
        .await?;
        Ok(())
    }
}

/// A feature-flag service stands in for any system without transactions.
#[derive(Clone, Default)]
struct Flags {
    up: Arc<AtomicBool>,
    new_checkout: Arc<AtomicBool>,
}

struct EnableNewCheckout;
impl Change for EnableNewCheckout {
    type Target = DependencyTarget<Flags>;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("enable-new-checkout")
            .order("0001")
            .author("bo")
            .transactional(false)
    }
    async fn apply(&self, flags: &mut Flags) -> ChangeResult {
        if !flags.up.load(Ordering::SeqCst) {
            return Err("flag service unavailable (503)".into());
        }
        flags.new_checkout.store(true, Ordering::SeqCst);
        Ok(())
    }
}

async fn runner(store: &PostgresAuditStore, flags: &Flags) -> Result<Flamingock, Error> {
    Flamingock::builder()
        .service("example-postgres")
        .audit_store(store.clone())
        .target(store.shared_target("app-db").build().await?)
        .target(DependencyTarget::new("flags", flags.clone()))
        .stage(
            Stage::new("schema")
                .change(CreateCustomers)
                .change(SeedCustomers)
                .change(IndexEmails),
        )
        .stage(Stage::new("rollout").change(EnableNewCheckout))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect(&url)
        .await?;
    // A fresh demo every time.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_ident(SCHEMA)
    )))
    .execute(&pool)
    .await?;
    let store = PostgresAuditStore::builder(pool.clone())
        .schema(SCHEMA)
        .build()
        .await?;
    let flags = Flags::default();

    println!("== first run: the flag service is down");
    match runner(&store, &flags).await?.run().await {
        Err(e) => {
            println!("run failed: {e}");
            if let Some(report) = e.report() {
                println!("{report}");
            }
        }
        Ok(r) => println!("{r}"),
    }

    println!("== second run: refused, the failed non-transactional change needs an operator");
    let ops = runner(&store, &flags).await?;
    if let Err(e) = ops.run().await {
        println!("{e}");
    }
    for issue in ops.issues().await? {
        println!(
            "issue: {} (stage {}), last state {}: {}",
            issue.change_id,
            issue.stage,
            issue.state,
            issue.error.as_deref().unwrap_or("-")
        );
    }

    println!("== the operator checks: the flag was never set; records it as rolled back");
    let fixed = ops
        .mark_rolled_back(
            "enable-new-checkout",
            "flag service was down, nothing changed",
        )
        .await?;
    println!("recorded {} for {}", fixed.state, fixed.change_id);

    println!("== third run: the flag service is back");
    flags.up.store(true, Ordering::SeqCst);
    let report = runner(&store, &flags).await?.run().await?;
    println!("{report}");
    assert!(flags.new_checkout.load(Ordering::SeqCst));

    let customers: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        table("customers")
    )))
    .fetch_one(&pool)
    .await?;
    println!("customers: {customers}");
    println!("== audit history");
    for e in ops.history(&flamingock::HistoryFilter::all()).await? {
        println!(
            "{}  {:<22} {:<28} {}",
            e.created_at.format("%H:%M:%S%.3f"),
            e.change_id,
            e.state,
            e.tx_strategy
        );
    }
    Ok(())
}
