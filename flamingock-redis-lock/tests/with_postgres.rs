//! The pipeline suite with a Redis lock over a PostgreSQL audit store and
//! PostgreSQL targets (`FLAMINGOCK_TEST_REDIS_URL` and
//! `FLAMINGOCK_TEST_POSTGRES_URL`): the lock and the fence live in two
//! different systems. Each namespace is a fresh schema (dropped by
//! `cleanup`) and a fresh pair of Redis keys (deleted by `cleanup`).

mod common;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use common::Redis;
use flamingock_core::{async_trait, BoxError};
use flamingock_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use flamingock_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use flamingock_postgres::{quote_ident, PgContext, PostgresAuditStore, PostgresTarget};
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::{require_service, services};
use futures::future::BoxFuture;

/// PostgreSQL audit store and targets, Redis lock.
struct PgRedis {
    redis: Redis,
    /// The targets' `idle_in_transaction_timeout`.
    idle: Duration,
    pg_url: String,
    admin: PgPool,
}

/// A small lazy pool, so 16 concurrent runners fit in the server's
/// default `max_connections`.
fn pool(url: &str, max: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .min_connections(0)
        .idle_timeout(Some(Duration::from_secs(5)))
        .acquire_timeout(Duration::from_secs(60))
        .connect_lazy_with(
            PgConnectOptions::from_str(url).expect("FLAMINGOCK_TEST_POSTGRES_URL is not a URL"),
        )
}

async fn pg_redis() -> Option<PgRedis> {
    with_idle_timeout(IDLE)
}

fn with_idle_timeout(idle: Duration) -> Option<PgRedis> {
    let redis = common::redis()?;
    let pg_url = require_service(&services::POSTGRES);
    Some(PgRedis {
        redis,
        idle,
        admin: pool(&pg_url, 2),
        pg_url,
    })
}

/// A stalled runner's transaction ends this long after it went idle, so the
/// runner that took over its lease is not blocked by its row locks for
/// long (the suite's lease is 1.2 s).
const IDLE: Duration = Duration::from_secs(2);

/// The schema of the separate targets of namespace `ns`.
fn elsewhere(ns: &str) -> String {
    format!("{ns}_t")
}

#[async_trait]
impl PipelineUnderTest for PgRedis {
    type Target = PostgresTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<PostgresTarget>, BoxError> {
        let other = elsewhere(ns);
        // The counters the test changes bump, in both schemas (serialised:
        // concurrent CREATE SCHEMA IF NOT EXISTS can collide).
        let mut ddl = String::from("SELECT pg_advisory_xact_lock(4242);\n");
        for s in [ns, other.as_str()] {
            let s = quote_ident(s);
            ddl.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {s};
                 CREATE TABLE IF NOT EXISTS {s}.counters (key text PRIMARY KEY, n bigint NOT NULL);\n"
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(ddl))
            .execute(&self.admin)
            .await?;
        let store = PostgresAuditStore::builder(pool(&self.pg_url, 2))
            .schema(ns)
            .build()
            .await?;
        let elsewhere =
            |id: &str| PostgresTarget::builder(id, pool(&self.pg_url, 1)).schema(other.clone());
        Ok(PipelineEnv {
            lock: Arc::new(self.redis.lock(ns).await?),
            shared: Some(
                store
                    .shared_target("shared")
                    .idle_in_transaction_timeout(Some(self.idle))
                    .build()
                    .await?,
            ),
            separate: Some(elsewhere("separate").marker(false).build().await?),
            separate_marker: Some(elsewhere("separate-marker").build().await?),
            store: Arc::new(store),
        })
    }

    fn bump<'a>(ctx: &'a mut PgContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let q = format!(
                "INSERT INTO {}.counters (key, n) VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE SET n = counters.n + 1",
                quote_ident(ctx.schema())
            );
            sqlx::query(AssertSqlSafe(q))
                .bind(key)
                .execute(ctx.conn())
                .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &PostgresTarget, key: &str) -> Result<u64, BoxError> {
        let q = format!(
            "SELECT n FROM {}.counters WHERE key = $1",
            quote_ident(target.schema().expect("a schema is set"))
        );
        let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(q))
            .bind(key)
            .fetch_optional(target.pool())
            .await?;
        Ok(u64::try_from(n.unwrap_or(0))?)
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        for s in [ns.to_owned(), elsewhere(ns)] {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&s)
            )))
            .execute(&self.admin)
            .await?;
        }
        self.redis.delete_keys(ns).await
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let names = vec![ns.to_owned(), elsewhere(ns)];
        let mut found: Vec<String> = sqlx::query_scalar(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = ANY($1) AND c.relname NOT LIKE 'counters%'
              ORDER BY 1",
        )
        .bind(&names)
        .fetch_all(&self.admin)
        .await?;
        found.extend(self.redis.keys_of(ns).await?);
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default()
    }
}

mod pipeline {
    use super::pg_redis;
    flamingock_test_support::pipeline_tests!(pg_redis);
}

/// A runner whose Redis lease vanished mid-change cannot commit: the fence
/// check inside its PostgreSQL transaction rejects it; the next runner does
/// the work exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_lease_cannot_commit_past_the_postgres_fence() {
    // The stalled runner's transaction must outlive the check, so that the
    // fence, not the server's idle timeout, is what stops it.
    let Some(sut) = with_idle_timeout(Duration::from_secs(60)) else {
        return;
    };
    common::expired_lease_cannot_commit(&sut, &sut.redis).await;
}

/// The process-level suite: real child processes killed, paused and racing.
mod process {
    use super::pg_redis;
    flamingock_test_support::process_tests!(pg_redis);
}

/// Field defect: the lock service forgets its tokens. Runner A (a real
/// process) holds the Redis lock and is paused at the start of a change;
/// the private Redis server is killed and restarted without persistence;
/// runner B gets the lock, with the same token A had, and applies every
/// change; A resumes. A must record and commit nothing: B's epoch, claimed
/// from the PostgreSQL audit store, fences A out whatever Redis forgot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_service_restarted_without_persistence() {
    use flamingock_core::fault::FaultPoint;
    use flamingock_test_support::pipeline_suite::Kind;
    use flamingock_test_support::process_suite::ChildSpec;

    let Some(sut) = pg_redis().await else { return };
    let mut server = private_redis::PrivateRedis::start();
    let url = server.url();
    let ns = flamingock_test_support::namespace("restart");
    let a_spec = ChildSpec::new(&ns, Kind::Shared, 3)
        .stop_at(FaultPoint::BeforeStart, 0)
        .env("FLAMINGOCK_TEST_REDIS_URL", &url);
    let b_spec = ChildSpec::new(&ns, Kind::Shared, 3).env("FLAMINGOCK_TEST_REDIS_URL", &url);
    let (a, b, token_a, token_b) = tokio::task::spawn_blocking(move || {
        let mut a = a_spec.spawn("runner A");
        let token_a = a.wait_for("LOCKED").to_owned();
        a.wait_for("AT ");
        a.signal(rustix::process::Signal::STOP);
        server.restart();
        let mut b = b_spec.spawn("runner B");
        let token_b = b.wait_for("LOCKED").to_owned();
        let b = b.finish();
        a.signal(rustix::process::Signal::CONT);
        a.go_on();
        (a.finish(), b, token_a, token_b)
    })
    .await
    .expect("join");
    assert_eq!(
        token_a, token_b,
        "the restarted Redis granted B the token A holds (the defect's precondition)"
    );
    assert_eq!(b.code, Some(0), "runner B: {b:?}");
    assert_eq!(a.code, Some(3), "runner A must stop with lease lost: {a:?}");
    eprintln!("runner A stopped with: {:?}", a.result);
    let env = sut.open(&ns).await.expect("open");
    let shared = env.shared.clone().expect("shared target");
    for id in ["c01", "c02", "c03"] {
        assert_eq!(
            sut.count(&shared, id).await.expect("count"),
            1,
            "{id} exactly once"
        );
    }
    let applied = env
        .store
        .history(&flamingock_core::HistoryFilter::all().change("c01"))
        .await
        .expect("history")
        .iter()
        .filter(|e| e.state == flamingock_core::AuditState::Applied)
        .count();
    assert_eq!(applied, 1, "one APPLIED entry for c01");
    let _ = sut.cleanup(&ns).await;
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence, that the test can kill and start again.
mod private_redis {
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    pub struct PrivateRedis {
        port: u16,
        child: Option<Child>,
        dir: std::path::PathBuf,
    }

    impl PrivateRedis {
        pub fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let dir = std::env::temp_dir().join(format!("flamingock-redis-{port}"));
            std::fs::create_dir_all(&dir).expect("scratch dir");
            let mut r = PrivateRedis {
                port,
                child: None,
                dir,
            };
            r.spawn();
            r
        }

        pub fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/", self.port)
        }

        fn spawn(&mut self) {
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--save", "", "--appendonly", "no"])
                .current_dir(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect(
                    "redis-server is needed for this test (Debian: apt-get install redis-server)",
                );
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "private redis-server did not start"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// SIGKILL and start again: everything it held is gone.
        pub fn restart(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            self.spawn();
        }
    }

    impl Drop for PrivateRedis {
        fn drop(&mut self) {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
