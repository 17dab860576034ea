//! Flamingock on MySQL / MariaDB.
#![allow(clippy::print_stdout)] // an example prints its results

use flamingock::mysql::sqlx::{self, AssertSqlSafe};
use flamingock::mysql::{quote_ident, MysqlAuditStore, MysqlContext, MysqlTarget};
use flamingock::{Change, ChangeMeta, ChangeResult, Flamingock, HistoryFilter, Stage};

const DATABASE: &str = "flamingock_example";

/// DDL: MySQL commits it implicitly, so it runs non-transactionally, alone.
struct CreateCustomers;
impl Change for CreateCustomers {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("create-customers")
            .order("0001")
            .author("ana")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql(
            "CREATE TABLE customers (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL, country CHAR(2))",
        )
        .execute(ctx.conn())
        .await?;
        Ok(())
    }
    /// Used when the apply fails part-way: the change then records ROLLED_BACK
    /// instead of blocking for an operator.
    async fn rollback(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql("DROP TABLE IF EXISTS customers")
            .execute(ctx.conn())
            .await?;
        Ok(())
    }
}

/// Data: committed in one transaction with its APPLIED entry.
struct SeedCustomers;
impl Change for SeedCustomers {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed-customers")
            .order("0002")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        for (id, email, country) in [
            (1_i64, "ana@example.com", "ES"),
            (2, "bo@example.com", "PT"),
        ] {
            sqlx::query("INSERT INTO customers (id, email, country) VALUES (?, ?, ?)")
                .bind(id)
                .bind(email)
                .bind(country)
                .execute(ctx.conn())
                .await?;
        }
        Ok(())
    }
}

/// Declared transactional, but `ALTER TABLE` commits implicitly: the runner
/// notices, records the outcome as non-transactional and warns.
struct IndexEmails;
impl Change for IndexEmails {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("index-customer-emails")
            .order("0003")
            .author("ana")
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::raw_sql("ALTER TABLE customers ADD UNIQUE INDEX customers_email (email)")
            .execute(ctx.conn())
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    // A fresh database for the example, on the server of DATABASE_URL.
    let admin = sqlx::MySqlPool::connect(&url).await?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {}", quote_ident(DATABASE)),
        format!("CREATE DATABASE {}", quote_ident(DATABASE)),
    ] {
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&admin).await?;
    }
    let options: sqlx::mysql::MySqlConnectOptions = url.parse()?;
    let pool = sqlx::MySqlPool::connect_with(options.database(DATABASE)).await?;

    let store = MysqlAuditStore::builder(pool).build().await?;
    let runner = Flamingock::builder()
        .service("example-mysql")
        .audit_store(store.clone())
        .target(store.shared_target("app-db").build().await?)
        .stage(
            Stage::new("customers")
                .change(CreateCustomers)
                .change(SeedCustomers)
                .change(IndexEmails),
        )
        .build()?;
    for item in runner.plan().await? {
        println!("plan: {} ({})", item.change_id, item.strategy.as_str());
    }
    let report = runner.run().await?;
    println!("{report}");
    for e in runner.history(&HistoryFilter::all()).await? {
        println!(
            "history: {:<22} {:<8} {}",
            e.change_id,
            e.state.as_str(),
            e.tx_strategy.as_str()
        );
    }
    // A second start finds nothing to do.
    let again = runner.run().await?;
    println!("second run: {} applied", again.applied().len());
    Ok(())
}
