//! The start-up check (fast path) on MongoDB with 1,000 applied changes.
//!
//! `cargo bench -p flamingock-mongodb --bench startup` (endpoint from
//! `FLAMINGOCK_TEST_MONGODB_URL`) prints, as medians of several runs:
//!
//! * a new runner's first `run()` (prepare: idempotent collection and index
//!   creation, then one snapshot read; no lock taken);
//! * a repeated `run()` of the same runner (snapshot read and planning only);
//! * `snapshot()` alone.
//!
//! Run as a test (`cargo test --all-targets`, no `--bench` argument) or with
//! `FLAMINGOCK_BENCH_QUICK=1` it does a small smoke run instead.
#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::{Duration, Instant};

use flamingock_core::{AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult};
use flamingock_core::{Flamingock, Stage, TxStrategy};
use flamingock_mongodb::mongodb::Client;
use flamingock_mongodb::{MongoAuditStore, MongoContext, MongoTarget};
use flamingock_test_support::{namespace, require_service, services};

struct Noop(String);
impl Change for Noop {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.0).order(&self.0)
    }
    async fn apply(&self, _ctx: &mut MongoContext) -> ChangeResult {
        Ok(())
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn runner(store: &MongoAuditStore, ids: &[String]) -> Flamingock {
    let mut stage = Stage::new("bench");
    for id in ids {
        stage.add(Noop(id.clone()));
    }
    Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stage)
        .build()
        .expect("build")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = require_service(&services::MONGODB);
    let quick = std::env::var("FLAMINGOCK_BENCH_QUICK").as_deref() == Ok("1")
        || !std::env::args().any(|a| a == "--bench");
    let (changes, runs): (usize, usize) = if quick { (50, 3) } else { (1_000, 15) };

    let client = Client::with_uri_str(&url).await.expect("client");
    let db = namespace("bench");
    let store = MongoAuditStore::builder(client.clone(), &db)
        .build()
        .await
        .expect("store");
    store.prepare().await.expect("prepare");
    let ids: Vec<String> = (0..changes).map(|i| format!("{i:05}")).collect();

    // Record every change as applied (16 concurrent appenders).
    let setup = Instant::now();
    let chunks: Vec<Vec<String>> = ids
        .chunks(changes.div_ceil(16))
        .map(<[_]>::to_vec)
        .collect();
    let tasks = chunks.into_iter().map(|chunk| {
        let store = store.clone();
        tokio::spawn(async move {
            for id in chunk {
                let mut e = AuditEntry::new(id.clone(), AuditState::Applied, 0)
                    .strategy(TxStrategy::SharedTx)
                    .run("bench-setup");
                e.stage_id = "bench".into();
                e.order = id;
                e.target_system = "db".into();
                store.append(&e).await.expect("append");
            }
        })
    });
    for t in futures::future::join_all(tasks).await {
        t.expect("setup task");
    }
    println!(
        "setup: {changes} APPLIED entries appended in {:?}",
        setup.elapsed()
    );

    let mut first = Vec::new();
    let mut repeat = Vec::new();
    let mut snapshot = Vec::new();
    for _ in 0..runs {
        let r = runner(&store, &ids).await;
        let t = Instant::now();
        let report = r.run().await.expect("first run");
        first.push(t.elapsed());
        assert!(!report.took_lock, "fast path");
        assert_eq!(report.totals().skipped, changes);
        let t = Instant::now();
        r.run().await.expect("repeat run");
        repeat.push(t.elapsed());
        let t = Instant::now();
        let snap = store.snapshot().await.expect("snapshot");
        snapshot.push(t.elapsed());
        assert_eq!(snap.len(), changes);
    }
    println!(
        "start-up check with {changes} applied changes (median of {runs}): \
         new runner run() {:?}, repeated run() {:?}, snapshot() {:?}",
        median(first),
        median(repeat),
        median(snapshot)
    );
    client
        .database(&db)
        .drop()
        .await
        .expect("drop bench database");
}
