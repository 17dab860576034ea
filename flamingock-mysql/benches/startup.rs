//! Flamingock (MySQL / MariaDB backend) against sqlx's migrator on a real
//! server: applying N changes, and the start-up check once all N are applied.
//!
//! ```sh
//! FLAMINGOCK_TEST_MYSQL_URL=mysql://root@127.0.0.1:3306/test \
//!   cargo bench -p flamingock-mysql --bench startup
//! ```
//!
//! Each tool works in a fresh database; every change is one `INSERT` (DDL
//! would measure the server's DDL, and on MySQL it cannot share a
//! transaction anyway). Flamingock's changes use the shared-transaction
//! strategy (change + APPLIED entry + fence check in one transaction), as
//! sqlx runs each migration in a transaction with its history row. The
//! start-up check is a fresh runner (new pool, as a new process) finding
//! nothing to do: the median of several. `FLAMINGOCK_BENCH_QUICK=1` (and
//! `cargo test --all-targets`, which runs this as a smoke test) shrinks it.
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark prints, and fails loudly

use std::borrow::Cow;
use std::time::{Duration, Instant};

use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, LockConfig, Stage};
use flamingock_mysql::sqlx::{self, AssertSqlSafe, MySqlPool, SqlSafeStr};
use flamingock_mysql::{quote_ident, MysqlAuditStore, MysqlContext, MysqlTarget};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn quick() -> bool {
    std::env::var("FLAMINGOCK_BENCH_QUICK").as_deref() == Ok("1")
        || !std::env::args().any(|a| a == "--bench")
}

struct Insert {
    id: String,
}

impl Change for Insert {
    type Target = MysqlTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id).order(&self.id)
    }
    async fn apply(&self, ctx: &mut MysqlContext) -> ChangeResult {
        sqlx::query("INSERT INTO effects (id) VALUES (?)")
            .bind(&self.id)
            .execute(ctx.conn())
            .await?;
        Ok(())
    }
}

fn pool(url: &str, db: &str) -> MySqlPool {
    let options: MySqlConnectOptions = url.parse().unwrap();
    MySqlPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(options.database(db))
}

async fn exec(pool: &MySqlPool, sql: &str) -> Res<()> {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await?;
    Ok(())
}

async fn flamingock_runner(url: &str, db: &str, n: usize) -> Res<Flamingock> {
    let store = MysqlAuditStore::builder(pool(url, db)).build().await?;
    let mut stage = Stage::new("bench");
    for i in 0..n {
        stage = stage.change(Insert {
            id: format!("c{i:05}"),
        });
    }
    Ok(Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db").build().await?)
        .lock_config(LockConfig::default())
        .stage(stage)
        .build()?)
}

fn migrator(n: usize) -> Migrator {
    let migrations: Vec<Migration> = (0..n)
        .map(|i| {
            Migration::new(
                i as i64 + 1,
                Cow::Owned(format!("m{i:05}")),
                MigrationType::Simple,
                AssertSqlSafe(format!("INSERT INTO effects (id) VALUES ('m{i:05}')"))
                    .into_sql_str(),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Res<()> {
    let Ok(url) = std::env::var("FLAMINGOCK_TEST_MYSQL_URL") else {
        println!("startup: FLAMINGOCK_TEST_MYSQL_URL is not set; nothing measured");
        return Ok(());
    };
    let (n, iters) = if quick() { (100, 3) } else { (1_000, 9) };
    let admin = MySqlPoolOptions::new()
        .max_connections(2)
        .connect_lazy_with(url.parse::<MySqlConnectOptions>()?);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let (fdb, sdb) = (
        format!("bench_f_{}", &tag[..8]),
        format!("bench_s_{}", &tag[..8]),
    );
    for db in [&fdb, &sdb] {
        exec(&admin, &format!("CREATE DATABASE {}", quote_ident(db))).await?;
        exec(
            &admin,
            &format!(
                "CREATE TABLE {}.effects (id VARCHAR(16) PRIMARY KEY)",
                quote_ident(db)
            ),
        )
        .await?;
    }
    let result = async {
        // Apply N.
        let t = Instant::now();
        flamingock_runner(&url, &fdb, n).await?.run().await?;
        let f_apply = t.elapsed();
        let m = migrator(n);
        let p = pool(&url, &sdb);
        let t = Instant::now();
        m.run(&p).await?;
        let s_apply = t.elapsed();
        p.close().await;
        // Start-up check with N applied: a fresh runner / migrator and pool each time.
        let mut f_start = Vec::new();
        let mut s_start = Vec::new();
        for _ in 0..iters {
            let t = Instant::now();
            let report = flamingock_runner(&url, &fdb, n).await?.run().await?;
            f_start.push(t.elapsed());
            assert_eq!(report.applied().len(), 0, "nothing left to apply");
            let p = pool(&url, &sdb);
            let t = Instant::now();
            m.run(&p).await?;
            s_start.push(t.elapsed());
            p.close().await;
        }
        let (f_start, s_start) = (median(f_start), median(s_start));
        println!(
            "MySQL/MariaDB, {n} changes (one INSERT each), medians of {iters} start-up checks:"
        );
        println!("| | flamingock | sqlx migrate | ratio |");
        println!("|---|---|---|---|");
        println!(
            "| apply {n} | {} | {} | {:.2}x |",
            ms(f_apply),
            ms(s_apply),
            f_apply.as_secs_f64() / s_apply.as_secs_f64()
        );
        println!(
            "| start-up check, {n} applied | {} | {} | {:.2}x |",
            ms(f_start),
            ms(s_start),
            f_start.as_secs_f64() / s_start.as_secs_f64()
        );
        Res::Ok(())
    }
    .await;
    for db in [&fdb, &sdb] {
        exec(
            &admin,
            &format!("DROP DATABASE IF EXISTS {}", quote_ident(db)),
        )
        .await?;
    }
    result
}
