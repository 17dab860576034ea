//! Start-up cost on a SQLite file: a run applying 1,000 trivial changes,
//! and the start-up check (nothing pending: the lock-free fast path) with
//! those 1,000 changes applied.
//!
//! ```sh
//! cargo bench -p flamingock-sqlite --bench startup
//! ```
#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::{Duration, Instant};

use flamingock_core::{Change, ChangeMeta, ChangeResult, Flamingock, Stage};
use flamingock_sqlite::{sqlx, SqliteAuditStore, SqliteContext, SqliteTarget};

const CHANGES: usize = 1_000;
const RUNS: usize = 5;

struct Trivial {
    id: String,
    order: String,
}

impl Change for Trivial {
    type Target = SqliteTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id, &self.order).author("bench")
    }
    async fn apply(&self, db: &mut SqliteContext) -> ChangeResult {
        sqlx::query("INSERT INTO bench (change_id) VALUES (?1)")
            .bind(&self.id)
            .execute(db.conn())
            .await?;
        Ok(())
    }
}

fn runner(store: &SqliteAuditStore) -> Flamingock {
    let mut stage = Stage::new("bench");
    for i in 0..CHANGES {
        stage.add(Trivial {
            id: format!("change-{i:05}"),
            order: format!("{i:05}"),
        });
    }
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.target("db"))
        .stage(stage)
        .build()
        .expect("valid pipeline")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut apply_runs = Vec::new();
    let mut path = dir.path().join("bench-0.db");
    for r in 0..3 {
        path = dir.path().join(format!("bench-{r}.db"));
        let store = SqliteAuditStore::open(&path).await.expect("open");
        sqlx::query("CREATE TABLE bench (change_id TEXT NOT NULL)")
            .execute(store.pool())
            .await
            .expect("bench table");
        let started = Instant::now();
        let report = runner(&store).run().await.expect("run");
        apply_runs.push(started.elapsed());
        assert_eq!(report.totals().applied, CHANGES);
        store.pool().close().await;
    }
    let apply = median(apply_runs);
    println!(
        "apply {CHANGES} trivial changes (shared transaction, one commit each): median {apply:?} \
         of 3 runs ({:?} per change)",
        apply / CHANGES as u32
    );

    // Start-up check as an application does it: open the file, build the
    // runner, run; nothing is pending.
    let mut checks = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..RUNS {
        let started = Instant::now();
        let store = SqliteAuditStore::open(&path).await.expect("open");
        let r = runner(&store);
        let report = r.run().await.expect("check");
        checks.push(started.elapsed());
        assert!(!report.took_lock);
        assert_eq!(report.totals().skipped, CHANGES);
        // The same on an already open store and runner.
        let started = Instant::now();
        r.run().await.expect("check");
        warm.push(started.elapsed());
        store.pool().close().await;
    }
    println!(
        "start-up check with {CHANGES} applied changes (open + build + run, fast path): median {:?} of {RUNS}",
        median(checks)
    );
    println!(
        "start-up check with {CHANGES} applied changes (run on an open store): median {:?} of {RUNS}",
        median(warm)
    );
}
