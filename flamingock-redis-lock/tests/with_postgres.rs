//! The pipeline suite with a Redis lock over a PostgreSQL audit store and
//! PostgreSQL targets (`FLAMINGOCK_TEST_REDIS_URL` and
//! `FLAMINGOCK_TEST_POSTGRES_URL`): the lock and the fence live in two
//! different systems. Each namespace is a fresh schema (dropped by
//! `cleanup`) and a fresh pair of Redis keys (deleted by `cleanup`).

// The nested futures of the pipeline over this backend's types need more
// than the default depth to lay out.
#![recursion_limit = "256"]

mod common;

use std::time::Duration;

use common::Redis;
use flamingock_core::{async_trait, BoxError};
use flamingock_postgres::{PgContext, PostgresTarget};
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::postgres::Pg;
use futures::future::BoxFuture;

/// PostgreSQL audit store and targets (the PostgreSQL suites' own setup),
/// Redis lock.
struct PgRedis {
    redis: Redis,
    pg: Pg,
}

async fn pg_redis() -> Option<PgRedis> {
    with_idle_timeout(flamingock_test_support::postgres::IDLE)
}

/// With the targets' `idle_in_transaction_timeout` set to `idle`.
fn with_idle_timeout(idle: Duration) -> Option<PgRedis> {
    let redis = common::redis()?;
    let mut pg = Pg::direct(flamingock_test_support::postgres::url()?);
    pg.idle = idle;
    Some(PgRedis { redis, pg })
}

#[async_trait]
impl PipelineUnderTest for PgRedis {
    type Target = PostgresTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<PostgresTarget>, BoxError> {
        let mut env = self.pg.open(ns).await?;
        env.lock = std::sync::Arc::new(self.redis.lock(ns).await?);
        Ok(env)
    }

    fn bump<'a>(ctx: &'a mut PgContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Pg::bump(ctx, key)
    }

    async fn count(&self, target: &PostgresTarget, key: &str) -> Result<u64, BoxError> {
        self.pg.count(target, key).await
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        PipelineUnderTest::cleanup(&self.pg, ns).await?;
        self.redis.delete_keys(ns).await
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let mut found = self.pg.footprint(ns).await?;
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
