//! Flamingock (PostgreSQL backend) against sqlx's migrator and refinery
//! (tokio-postgres driver) on a real server.
//!
//! ```sh
//! FLAMINGOCK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p flamingock-postgres --bench vs_sqlx_refinery
//! ```
//!
//! `FLAMINGOCK_BENCH_QUICK=1` shrinks every size. Each tool works in a fresh
//! schema (selected with `search_path`, so all three run the same SQL);
//! every change is one `CREATE TABLE`. Flamingock's changes use the
//! shared-transaction strategy (change + APPLIED entry + fence check in one
//! transaction), the same guarantee as the peers' one transaction per
//! migration. Pools: 2 connections, no ping before acquire (the setting this
//! crate's docs recommend; a row with sqlx's default pool is printed too).
#![allow(clippy::print_stdout, clippy::unwrap_used)] // a benchmark prints, and fails loudly

use std::borrow::Cow;
use std::str::FromStr;
use std::time::{Duration, Instant};

use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, LockConfig, Stage};
use flamingock_postgres::sqlx::{self, AssertSqlSafe, Executor, PgPool};
use flamingock_postgres::{quote_ident, PgContext, PostgresAuditStore, PostgresTarget};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(Clone, Copy)]
struct Sizes {
    iters: usize,
    startup_changes: usize,
    apply_changes: usize,
    apply_iters: usize,
    history_rows: usize,
    runners: usize,
    concurrent_changes: usize,
    rss_changes: usize,
}

/// Quick sizes on request, and when run by `cargo test --all-targets` (which
/// passes no `--bench` argument): then the bench is a smoke test.
fn quick() -> bool {
    std::env::var("FLAMINGOCK_BENCH_QUICK").as_deref() == Ok("1")
        || !std::env::args().any(|a| a == "--bench")
}

fn sizes() -> Sizes {
    if quick() {
        Sizes {
            iters: 3,
            startup_changes: 200,
            apply_changes: 100,
            apply_iters: 2,
            history_rows: 20_000,
            runners: 4,
            concurrent_changes: 50,
            rss_changes: 1_000,
        }
    } else {
        Sizes {
            iters: 7,
            startup_changes: 1_000,
            apply_changes: 500,
            apply_iters: 3,
            history_rows: 100_000,
            runners: 8,
            concurrent_changes: 200,
            rss_changes: 10_000,
        }
    }
}

/// `FLAMINGOCK_BENCH_ONLY=1,3` runs only those scenarios.
fn wanted(n: u8) -> bool {
    match std::env::var("FLAMINGOCK_BENCH_ONLY") {
        Ok(v) => v.split(',').any(|s| s.trim() == n.to_string()),
        Err(_) => true,
    }
}

fn url() -> String {
    std::env::var("FLAMINGOCK_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn ddl(i: usize) -> String {
    format!("CREATE TABLE t_{i:05} (id bigint, v text)")
}

// ---------------------------------------------------------------- tools

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Flamingock,
    /// Flamingock on a pool with sqlx's defaults (ping before every acquire).
    FlamingockPinged,
    Sqlx,
    Refinery,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Flamingock => "flamingock",
            Tool::FlamingockPinged => "flamingock (ping pool)",
            Tool::Sqlx => "sqlx",
            Tool::Refinery => "refinery",
        }
    }
    fn parse(s: &str) -> Option<Tool> {
        [
            Tool::Flamingock,
            Tool::FlamingockPinged,
            Tool::Sqlx,
            Tool::Refinery,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

struct Sql {
    id: String,
    order: String,
    sql: String,
}

impl Change for Sql {
    type Target = PostgresTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id).order(&self.order)
    }
    async fn apply(&self, ctx: &mut PgContext) -> ChangeResult {
        ctx.conn().execute(AssertSqlSafe(self.sql.as_str())).await?;
        Ok(())
    }
}

fn stage(n: usize) -> Stage {
    let mut s = Stage::new("bench");
    for i in 0..n {
        s.add(Sql {
            id: format!("c{i:05}"),
            order: format!("{i:05}"),
            sql: ddl(i),
        });
    }
    s
}

fn sqlx_migrator(n: usize) -> Migrator {
    Migrator::with_migrations(
        (0..n)
            .map(|i| {
                Migration::new(
                    i as i64 + 1,
                    Cow::Owned(format!("c{i:05}")),
                    MigrationType::Simple,
                    AssertSqlSafe(ddl(i)).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

fn refinery_runner(n: usize) -> refinery::Runner {
    let migrations: Vec<refinery::Migration> = (0..n)
        .map(|i| refinery::Migration::unapplied(&format!("V{}__c{i:05}", i + 1), &ddl(i)).unwrap())
        .collect();
    refinery::Runner::new(&migrations)
}

use sqlx::SqlSafeStr;

/// One configured tool on one schema, ready to run repeatedly.
enum Prepared {
    Flamingock {
        pool: PgPool,
        schema: String,
        lock: LockConfig,
        n: usize,
    },
    Sqlx {
        pool: PgPool,
        migrator: Migrator,
    },
    Refinery {
        client: tokio_postgres::Client,
        runner: refinery::Runner,
    },
}

fn opts(schema: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&url())
        .unwrap()
        .options([("search_path", schema)])
}

fn pool(schema: &str, ping: bool) -> PgPool {
    let max = std::env::var("FLAMINGOCK_BENCH_POOL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    PgPoolOptions::new()
        .max_connections(max)
        .test_before_acquire(ping)
        .connect_lazy_with(opts(schema))
}

async fn refinery_client(schema: &str) -> Res<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::from_str(&url())?;
    cfg.options(format!("-c search_path={schema}"));
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn prepare(tool: Tool, schema: &str, n: usize, lock: LockConfig) -> Res<Prepared> {
    Ok(match tool {
        Tool::Flamingock | Tool::FlamingockPinged => Prepared::Flamingock {
            pool: pool(schema, tool == Tool::FlamingockPinged),
            schema: schema.to_owned(),
            lock,
            n,
        },
        Tool::Sqlx => Prepared::Sqlx {
            pool: pool(schema, false),
            migrator: sqlx_migrator(n),
        },
        Tool::Refinery => Prepared::Refinery {
            client: refinery_client(schema).await?,
            runner: refinery_runner(n),
        },
    })
}

impl Prepared {
    /// A full start: the tool checks what is applied and applies the rest.
    /// Flamingock's stage is built outside (as sqlx's `migrate!` and
    /// refinery's `embed_migrations!` build their lists at compile time).
    async fn run(&mut self, stage: Option<Stage>) -> Res<()> {
        match self {
            Prepared::Flamingock {
                pool,
                schema,
                lock,
                n,
            } => {
                let store = PostgresAuditStore::builder(pool.clone())
                    .schema(schema.as_str())
                    .build()
                    .await?;
                let runner = Flamingock::builder()
                    .audit_store(store.clone())
                    .target(
                        store
                            .shared_target("db")
                            .build()
                            .await
                            .expect("shared target"),
                    )
                    .stage(stage.unwrap_or_else(|| self::stage(*n)))
                    .lock_config(*lock)
                    .build()?;
                runner.run().await?;
            }
            Prepared::Sqlx { pool, migrator } => migrator.run(&*pool).await?,
            Prepared::Refinery { client, runner } => {
                runner.run_async(client).await?;
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- helpers

struct Admin {
    pool: PgPool,
    seq: std::sync::atomic::AtomicUsize,
}

impl Admin {
    async fn schema(&self, tag: &str) -> Res<String> {
        let n = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let s = format!("fkbench_{tag}_{}_{n}", std::process::id());
        self.drop_schema(&s).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {}", quote_ident(&s))))
            .execute(&self.pool)
            .await?;
        Ok(s)
    }

    /// Drops tables in batches first: one DROP SCHEMA over 10,000 tables
    /// would need more locks than a default server has slots.
    async fn drop_schema(&self, s: &str) -> Res<()> {
        loop {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = $1 LIMIT 500",
            )
            .bind(s)
            .fetch_all(&self.pool)
            .await?;
            if tables.is_empty() {
                break;
            }
            let list: Vec<String> = tables
                .iter()
                .map(|t| format!("{}.{}", quote_ident(s), quote_ident(t)))
                .collect();
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP TABLE IF EXISTS {} CASCADE",
                list.join(", ")
            )))
            .execute(&self.pool)
            .await?;
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {} CASCADE",
            quote_ident(s)
        )))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn count_tables(&self, s: &str) -> Res<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 't\\_%'",
        )
        .bind(s)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn count(&self, sql: String) -> Res<i64> {
        Ok(sqlx::query_scalar(AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await?)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn fast_lock() -> LockConfig {
    LockConfig::default().retry_interval(Duration::from_millis(50))
}

// ---------------------------------------------------------------- scenarios

fn is_flamingock(t: Tool) -> bool {
    matches!(t, Tool::Flamingock | Tool::FlamingockPinged)
}

/// (1) start-up with everything applied; tools interleaved in every
/// iteration so that a change of load on the machine hits all of them.
async fn startup(admin: &Admin, tools: &[Tool], sz: Sizes) -> Res<Vec<Duration>> {
    let mut prepared = Vec::new();
    for t in tools {
        let s = admin.schema("startup").await?;
        let mut p = prepare(*t, &s, sz.startup_changes, LockConfig::default()).await?;
        p.run(None).await?; // apply everything
        p.run(None).await?; // warm the connection and statement caches
        prepared.push((s, p));
    }
    let mut times = vec![Vec::new(); tools.len()];
    for _ in 0..sz.iters {
        for (i, t) in tools.iter().enumerate() {
            let st = is_flamingock(*t).then(|| stage(sz.startup_changes));
            let t0 = Instant::now();
            prepared[i].1.run(st).await?;
            times[i].push(t0.elapsed());
        }
    }
    for (s, p) in prepared {
        drop(p);
        admin.drop_schema(&s).await?;
    }
    Ok(times.into_iter().map(median).collect())
}

/// (7) the start-up check alone: a runner built once and `run()` again and
/// again (what a replica's check costs once its process and pool exist),
/// against sqlx's `Migrator::run` on its own pool and one `SELECT 1` round
/// trip, with `n` changes applied; medians of `iters` interleaved rounds.
async fn check_alone(admin: &Admin, n: usize, iters: usize) -> Res<[Duration; 3]> {
    let fs = admin.schema("check").await?;
    let fpool = pool(&fs, false);
    let store = PostgresAuditStore::builder(fpool.clone())
        .schema(fs.as_str())
        .build()
        .await?;
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stage(n))
        .build()?;
    runner.run().await?;
    runner.run().await?;
    let ss = admin.schema("check").await?;
    let spool = pool(&ss, false);
    let migrator = sqlx_migrator(n);
    migrator.run(&spool).await?;
    migrator.run(&spool).await?;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..iters {
        let t0 = Instant::now();
        let report = runner.run().await?;
        times[0].push(t0.elapsed());
        assert!(!report.took_lock, "nothing was pending");
        let t0 = Instant::now();
        migrator.run(&spool).await?;
        times[1].push(t0.elapsed());
        let t0 = Instant::now();
        sqlx::query("SELECT 1").execute(&fpool).await?;
        times[2].push(t0.elapsed());
    }
    drop((runner, store, fpool, spool));
    admin.drop_schema(&fs).await?;
    admin.drop_schema(&ss).await?;
    let [a, b, c] = times;
    Ok([median(a), median(b), median(c)])
}

/// (8) where a whole start's time goes: building the store handle, building
/// the runner (validation of `n` changes), and `run()`; medians.
async fn start_parts(admin: &Admin, n: usize, iters: usize) -> Res<[Duration; 3]> {
    let fs = admin.schema("parts").await?;
    let fpool = pool(&fs, false);
    let build_store = || async {
        PostgresAuditStore::builder(fpool.clone())
            .schema(fs.as_str())
            .build()
            .await
    };
    let store = build_store().await?;
    Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stage(n))
        .build()?
        .run()
        .await?;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..iters {
        let st = stage(n);
        let t0 = Instant::now();
        let store = build_store().await?;
        times[0].push(t0.elapsed());
        let t0 = Instant::now();
        let runner = Flamingock::builder()
            .audit_store(store.clone())
            .target(
                store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("shared target"),
            )
            .stage(st)
            .build()?;
        times[1].push(t0.elapsed());
        let t0 = Instant::now();
        runner.run().await?;
        times[2].push(t0.elapsed());
    }
    drop(fpool);
    admin.drop_schema(&fs).await?;
    let [a, b, c] = times;
    Ok([median(a), median(b), median(c)])
}

/// (2) applying N changes from empty, tools interleaved.
async fn apply(admin: &Admin, tools: &[Tool], sz: Sizes) -> Res<Vec<Duration>> {
    let mut times = vec![Vec::new(); tools.len()];
    for _ in 0..sz.apply_iters {
        for (i, t) in tools.iter().enumerate() {
            let s = admin.schema("apply").await?;
            let mut p = prepare(*t, &s, sz.apply_changes, LockConfig::default()).await?;
            let st = is_flamingock(*t).then(|| stage(sz.apply_changes));
            let t0 = Instant::now();
            p.run(st).await?;
            times[i].push(t0.elapsed());
            drop(p);
            assert_eq!(admin.count_tables(&s).await?, sz.apply_changes as i64);
            admin.drop_schema(&s).await?;
        }
    }
    Ok(times.into_iter().map(median).collect())
}

/// (3) Flamingock's start-up check with a short and a long history.
async fn long_history(admin: &Admin, sz: Sizes) -> Res<(Duration, Duration)> {
    let mut prepared = Vec::new();
    for rows in [sz.startup_changes, sz.history_rows] {
        let s = admin.schema("history").await?;
        let mut p = prepare(
            Tool::Flamingock,
            &s,
            sz.startup_changes,
            LockConfig::default(),
        )
        .await?;
        p.run(None).await?;
        let extra = rows.saturating_sub(sz.startup_changes);
        // Older failed attempts of existing changes, inserted directly: the
        // history grows, the current state stays.
        sqlx::raw_sql(AssertSqlSafe(format!(
            "INSERT INTO {s}.flamingock_audit_history
               (run_id, stage_id, change_id, author, change_order, target_system, state, state_rank,
                created_at, duration_ms, hostname, runner_id, error_message, error_chain, metadata,
                tx_strategy, recovery, transactional, fencing_token, checksum)
             SELECT 'old-run', 'bench', format('c%s', lpad((g % {n})::text, 5, '0')), '',
                    lpad((g % {n})::text, 5, '0'), 'db', 'FAILED', 2,
                    now() - interval '1 day' + g * interval '1 ms', 1, 'host', 'old', 'boom',
                    ARRAY['cause'], 'null', 'SHARED_TX', 'MANUAL_INTERVENTION', true, 1, NULL
               FROM generate_series(1, {extra}) g",
            s = quote_ident(&s),
            n = sz.startup_changes,
        )))
        .execute(&admin.pool)
        .await?;
        // Same state for both: statistics fresh, nothing left for autovacuum.
        for t in ["flamingock_audit_history", "flamingock_audit_current"] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "VACUUM ANALYZE {}.{t}",
                quote_ident(&s)
            )))
            .execute(&admin.pool)
            .await?;
        }
        let total = admin
            .count(format!(
                "SELECT count(*) FROM {}.flamingock_audit_history",
                quote_ident(&s)
            ))
            .await?;
        assert_eq!(total, rows as i64);
        p.run(None).await?;
        prepared.push((s, p));
    }
    let _ = sqlx::raw_sql("CHECKPOINT").execute(&admin.pool).await;
    let mut times = vec![Vec::new(), Vec::new()];
    for _ in 0..sz.iters * 2 {
        for (i, (_, p)) in prepared.iter_mut().enumerate() {
            let st = Some(stage(sz.startup_changes));
            let t = Instant::now();
            p.run(st).await?;
            times[i].push(t.elapsed());
        }
    }
    for (s, p) in prepared {
        drop(p);
        admin.drop_schema(&s).await?;
    }
    let mut m = times.into_iter().map(median);
    Ok((m.next().unwrap(), m.next().unwrap()))
}

/// (4) R runners at once, N changes: wall time and exactly-once.
async fn concurrent(
    admin: &Admin,
    tool: Tool,
    sz: Sizes,
    lock: LockConfig,
) -> Res<(Duration, String)> {
    let mut times = Vec::new();
    let mut verdict = String::from("ok");
    for _ in 0..3 {
        let s = admin.schema("conc").await?;
        let mut runners = Vec::new();
        for _ in 0..sz.runners {
            runners.push(prepare(tool, &s, sz.concurrent_changes, lock).await?);
        }
        let t = Instant::now();
        let tasks: Vec<_> = runners
            .into_iter()
            .map(|mut p| {
                tokio::spawn(async move {
                    let r = p.run(None).await.map_err(|e| e.to_string());
                    drop(p);
                    r
                })
            })
            .collect();
        let results = futures::future::join_all(tasks).await;
        times.push(t.elapsed());
        let failed: Vec<String> = results
            .into_iter()
            .filter_map(|r| r.unwrap().err())
            .collect();
        let tables = admin.count_tables(&s).await?;
        let audited = match tool {
            Tool::Flamingock | Tool::FlamingockPinged => {
                admin
                    .count(format!(
                        "SELECT count(*) FROM {}.flamingock_audit_history WHERE state = 'APPLIED'",
                        quote_ident(&s)
                    ))
                    .await?
            }
            Tool::Sqlx => {
                admin
                    .count(format!(
                        "SELECT count(*) FROM {}._sqlx_migrations",
                        quote_ident(&s)
                    ))
                    .await?
            }
            Tool::Refinery => admin
                .count(format!(
                    "SELECT count(*) FROM {}.refinery_schema_history",
                    quote_ident(&s)
                ))
                .await
                .unwrap_or(-1),
        };
        let n = sz.concurrent_changes as i64;
        if !failed.is_empty() || tables != n || audited != n {
            verdict = format!(
                "NOT exactly-once: {} of {} runners failed (first: {}), {tables} tables, {audited} audit rows",
                failed.len(),
                sz.runners,
                failed.first().map(|e| e.chars().take(80).collect::<String>()).unwrap_or_default()
            );
        }
        admin.drop_schema(&s).await?;
    }
    Ok((median(times), verdict))
}

/// (5) peak RSS of a child process applying N changes.
async fn rss(admin: &Admin, tool: Option<Tool>, n: usize) -> Res<u64> {
    let s = admin.schema("rss").await?;
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe)
        .arg("--rss-child")
        .arg(tool.map_or("baseline", Tool::name))
        .arg(n.to_string())
        .arg(&s)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM_kB="))
        .ok_or_else(|| {
            format!(
                "child failed: {}{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .trim()
        .parse()?;
    if tool.is_some() {
        assert_eq!(
            admin.count_tables(&s).await?,
            n as i64,
            "{tool:?} applied everything"
        );
    }
    admin.drop_schema(&s).await?;
    Ok(kb)
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn rss_child(tool: &str, n: usize, schema: &str) -> Res<()> {
    match Tool::parse(tool) {
        Some(t) => {
            let mut p = prepare(t, schema, n, LockConfig::default()).await?;
            p.run(None).await?;
        }
        None => {
            // Baseline: the runtime and one connection, no tool.
            let pool = pool(schema, false);
            sqlx::query("SELECT 1").execute(&pool).await?;
        }
    }
    println!("VmHWM_kB={}", vm_hwm_kb());
    Ok(())
}

/// (9) a cold process with nothing pending: exec, runtime, connect, build,
/// check, exit; whole-process wall time measured by the parent, tools
/// interleaved. Each child reports how many connections its pool opened.
async fn cold(admin: &Admin, n: usize, iters: usize) -> Res<Vec<(String, Vec<Duration>, String)>> {
    let mut schemas = Vec::new();
    for tool in [Tool::Flamingock, Tool::Sqlx] {
        let s = admin.schema("cold").await?;
        let mut p = prepare(tool, &s, n, LockConfig::default()).await?;
        p.run(None).await?;
        schemas.push((tool.name().to_owned(), s));
    }
    let floor = admin.schema("cold").await?;
    schemas.push(("SELECT 1".to_owned(), floor));
    let exe = std::env::current_exe()?;
    let mut out: Vec<(String, Vec<Duration>, String)> = schemas
        .iter()
        .map(|(name, _)| (name.clone(), Vec::new(), String::new()))
        .collect();
    for _ in 0..iters {
        for (i, (name, schema)) in schemas.iter().enumerate() {
            let t0 = Instant::now();
            let child = tokio::process::Command::new(&exe)
                .arg("--cold-child")
                .arg(if name == "SELECT 1" { "baseline" } else { name })
                .arg(n.to_string())
                .arg(schema)
                .output()
                .await?;
            out[i].1.push(t0.elapsed());
            let text = String::from_utf8_lossy(&child.stdout).into_owned();
            out[i].2 = text
                .lines()
                .find_map(|l| l.strip_prefix("connections="))
                .ok_or_else(|| {
                    format!(
                        "cold child {name} failed: {text}{}",
                        String::from_utf8_lossy(&child.stderr)
                    )
                })?
                .to_owned();
        }
    }
    for (_, s) in &schemas {
        admin.drop_schema(s).await?;
    }
    Ok(out)
}

async fn cold_child(tool: &str, n: usize, schema: &str) -> Res<()> {
    let pool = pool(schema, false);
    match Tool::parse(tool) {
        Some(Tool::Sqlx) => sqlx_migrator(n).run(&pool).await?,
        Some(_) => {
            let store = PostgresAuditStore::builder(pool.clone())
                .schema(schema)
                .build()
                .await?;
            let report = Flamingock::builder()
                .audit_store(store.clone())
                .target(
                    store
                        .shared_target("db")
                        .build()
                        .await
                        .expect("shared target"),
                )
                .stage(stage(n))
                .build()?
                .run()
                .await?;
            assert!(!report.took_lock, "nothing was pending");
        }
        None => {
            sqlx::query("SELECT 1").execute(&pool).await?;
        }
    }
    println!("connections={}", pool.size());
    Ok(())
}

// ---------------------------------------------------------------- main

/// (6, on request) where a shared-transaction change's time goes, against
/// the same transaction with a plain INSERT as bookkeeping.
async fn profile(admin: &Admin, n: usize) -> Res<()> {
    use flamingock_core::{
        AuditEntry, AuditState, AuditStore, CommitWith, ContextMode, TargetSystem,
    };
    let s = admin.schema("profile").await?;
    let pool = pool(&s, false);
    let store = PostgresAuditStore::builder(pool.clone())
        .schema(s.as_str())
        .build()
        .await?;
    store.prepare().await?;
    store.claim_fence().await?;
    let target = store
        .shared_target("db")
        .build()
        .await
        .expect("shared target");
    sqlx::raw_sql("CREATE TABLE plain_log (id bigint, name text, at timestamptz DEFAULT now())")
        .execute(&pool)
        .await?;
    let mut steps = vec![Vec::new(); 8];
    for i in 0..n {
        let t0 = Instant::now();
        let mut ctx = target.begin(ContextMode::Transaction).await?;
        let t1 = Instant::now();
        ctx.conn()
            .execute(AssertSqlSafe(format!(
                "CREATE TABLE f_{i:05} (id bigint, v text)"
            )))
            .await?;
        let t2 = Instant::now();
        let entry = AuditEntry::new(format!("c{i:05}"), AuditState::Applied, 1);
        target.commit(ctx, CommitWith::Audit(&entry)).await?;
        let t3 = Instant::now();
        let mut tx = pool.begin().await?;
        let t4 = Instant::now();
        tx.execute(AssertSqlSafe(format!(
            "CREATE TABLE p_{i:05} (id bigint, v text)"
        )))
        .await?;
        let t5 = Instant::now();
        sqlx::query("INSERT INTO plain_log (id, name) VALUES ($1, $2)")
            .bind(i as i64)
            .bind("x")
            .execute(&mut *tx)
            .await?;
        let t6 = Instant::now();
        tx.commit().await?;
        let t7 = Instant::now();
        for (k, d) in [
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3,
            t5 - t4,
            t6 - t5,
            t7 - t6,
            t7 - t0,
        ]
        .into_iter()
        .enumerate()
        {
            steps[k].push(d);
        }
    }
    let m: Vec<String> = steps.into_iter().map(|v| ms(median(v))).collect();
    say(format!("(6) per change, medians of {n}: flamingock begin {} | CREATE {} | audit+COMMIT {} || plain BEGIN {} | CREATE {} | INSERT {} | COMMIT {}", m[0], m[1], m[2], m[3], m[4], m[5], m[6]));
    drop(pool);
    admin.drop_schema(&s).await?;
    Ok(())
}

fn say(line: String) {
    println!("{line}");
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

async fn bench() -> Res<()> {
    let sz = sizes();
    let admin = Admin {
        pool: PgPoolOptions::new()
            .max_connections(2)
            .connect(&url())
            .await?,
        seq: Default::default(),
    };
    let tools = [
        Tool::Flamingock,
        Tool::FlamingockPinged,
        Tool::Sqlx,
        Tool::Refinery,
    ];
    say(format!(
        "flamingock-postgres vs sqlx 0.9 migrator vs refinery 0.10 (tokio-postgres); medians; sizes {}",
        if quick() { "quick" } else { "full" }
    ));

    if wanted(1) {
        let s1: Vec<(Tool, Duration)> = tools
            .into_iter()
            .zip(startup(&admin, &tools, sz).await?)
            .collect();
        say(format!(
            "(1) start-up, {} changes applied",
            sz.startup_changes
        ));
        let sqlx1 = s1[2].1;
        for (t, d) in &s1 {
            say(format!(
                "    {:<24} {:>12}   vs sqlx {}",
                t.name(),
                ms(*d),
                ratio(*d, sqlx1)
            ));
        }
    }

    if wanted(2) {
        let s2: Vec<(Tool, Duration)> = tools
            .into_iter()
            .zip(apply(&admin, &tools, sz).await?)
            .collect();
        say(format!(
            "(2) apply {} changes (one CREATE TABLE each) from empty",
            sz.apply_changes
        ));
        let sqlx2 = s2[2].1;
        for (t, d) in &s2 {
            say(format!(
                "    {:<24} {:>12}   vs sqlx {}   per change {:.3} ms",
                t.name(),
                ms(*d),
                ratio(*d, sqlx2),
                d.as_secs_f64() * 1e3 / sz.apply_changes as f64
            ));
        }
    }

    if wanted(3) {
        let (short, long) = long_history(&admin, sz).await?;
        say(format!(
        "(3) flamingock start-up, {} changes: {} history rows {} / {} history rows {}   ratio {}",
        sz.startup_changes,
        sz.startup_changes,
        ms(short),
        sz.history_rows,
        ms(long),
        ratio(long, short)
    ));
    }

    if wanted(4) {
        say(format!(
            "(4) {} runners at once, {} changes (3 rounds): wall time, exactly-once",
            sz.runners, sz.concurrent_changes
        ));
        let mut s4 = Vec::new();
        for (t, lock, label) in [
            (
                Tool::Flamingock,
                LockConfig::default(),
                "flamingock (retry 1 s)",
            ),
            (Tool::Flamingock, fast_lock(), "flamingock (retry 50 ms)"),
            (Tool::Sqlx, LockConfig::default(), "sqlx"),
            (Tool::Refinery, LockConfig::default(), "refinery"),
        ] {
            let (d, verdict) = concurrent(&admin, t, sz, lock).await?;
            s4.push((label, d, verdict));
        }
        let sqlx4 = s4[2].1;
        for (label, d, verdict) in &s4 {
            say(format!(
                "    {:<24} {:>12}   vs sqlx {}   {}",
                label,
                ms(*d),
                ratio(*d, sqlx4),
                verdict
            ));
        }
    }

    if wanted(7) {
        let iters = sz.iters * 5;
        say(format!(
            "(7) the start-up check alone (runner reused, warm pool), medians of {iters}"
        ));
        let mut at_small = None;
        for n in [sz.startup_changes, sz.startup_changes * 10] {
            let [f, x, one] = check_alone(&admin, n, iters).await?;
            say(format!(
                "    {n:>6} applied: flamingock {}   sqlx {}   SELECT 1 {}   flamingock/sqlx {}   flamingock/SELECT 1 {}",
                ms(f),
                ms(x),
                ms(one),
                ratio(f, x),
                ratio(f, one)
            ));
            match at_small {
                None => at_small = Some(f),
                Some(small) => say(format!(
                    "    flamingock with {n} vs {} applied: {}",
                    sz.startup_changes,
                    ratio(f, small)
                )),
            }
        }
    }

    if wanted(8) {
        let iters = sz.iters * 3;
        let [store, runner, run] = start_parts(&admin, sz.startup_changes, iters).await?;
        say(format!(
            "(8) one start, {} applied, in parts (medians of {iters}): build the store {}   build the runner {}   run() {}",
            sz.startup_changes,
            ms(store),
            ms(runner),
            ms(run)
        ));
    }

    if wanted(9) {
        let iters = sz.iters * 2;
        let runs = cold(&admin, sz.startup_changes, iters).await?;
        say(format!(
            "(9) cold process, {} applied: exec, connect, build, check, exit (medians of {iters}, min-max)",
            sz.startup_changes
        ));
        let sqlx9 = median(runs[1].1.clone());
        let floor9 = median(runs[2].1.clone());
        for (name, times, conns) in runs {
            let (lo, hi) = (*times.iter().min().unwrap(), *times.iter().max().unwrap());
            let m = median(times);
            say(format!(
                "    {name:<24} {} ({}-{})   connections {conns}   vs sqlx {}   vs SELECT 1 process {}",
                ms(m),
                ms(lo),
                ms(hi),
                ratio(m, sqlx9),
                ratio(m, floor9)
            ));
        }
    }

    if std::env::var("FLAMINGOCK_BENCH_ONLY").is_ok_and(|v| v.contains('6')) {
        profile(&admin, 200).await?;
    }

    if wanted(5) {
        say(format!(
            "(5) peak RSS (VmHWM) of a child process applying {} changes",
            sz.rss_changes
        ));
        let base = rss(&admin, None, 0).await?;
        say(format!("    {:<24} {:>9} kB", "baseline (no tool)", base));
        let mut s5 = Vec::new();
        for t in [Tool::Flamingock, Tool::Sqlx, Tool::Refinery] {
            s5.push((t, rss(&admin, Some(t), sz.rss_changes).await?));
        }
        let sqlx5 = s5[1].1;
        for (t, kb) in &s5 {
            say(format!(
                "    {:<24} {:>9} kB   vs sqlx {:.2}x",
                t.name(),
                kb,
                *kb as f64 / sqlx5 as f64
            ));
        }
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--cold-child") {
        let n: usize = args[i + 2].parse()?;
        return rt.block_on(cold_child(&args[i + 1], n, &args[i + 3]));
    }
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        let tool = &args[i + 1];
        let n: usize = args[i + 2].parse()?;
        return rt.block_on(rss_child(tool, n, &args[i + 3]));
    }
    // `cargo bench` passes `--bench`; anything else is ignored.
    rt.block_on(bench())
}
