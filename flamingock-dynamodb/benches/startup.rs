//! Start-up check (the lock-free fast path) with 1,000 applied changes.
//!
//! ```sh
//! FLAMINGOCK_TEST_DYNAMODB_URL=http://127.0.0.1:8000 cargo bench -p flamingock-dynamodb --bench startup
//! ```
//!
//! Prints the median (and min/max) of several runs of: a whole `run()` that
//! finds nothing pending (one `GetItem` of the fence item: the applied-set
//! summary), one raw consistent `GetItem` with the same client (the floor),
//! and `snapshot()` (the paginated query the check read before the summary).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::AttributeValue;
use flamingock_core::{AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult};
use flamingock_core::{Flamingock, Stage, TxStrategy};
use flamingock_dynamodb::{DynamoAuditStore, DynamoContext, DynamoTarget};
use futures::{StreamExt, TryStreamExt};

const CHANGES: usize = 1_000;
const RUNS: usize = 9;

struct Noop(String);

impl Change for Noop {
    type Target = DynamoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.0).order(&self.0)
    }
    async fn apply(&self, _ctx: &mut DynamoContext) -> ChangeResult {
        Ok(())
    }
}

fn id(i: usize) -> String {
    format!("c{i:05}")
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "median {:>8.2} ms  (min {:.2}, max {:.2}, {} runs)",
        v[v.len() / 2].as_secs_f64() * 1e3,
        v[0].as_secs_f64() * 1e3,
        v[v.len() - 1].as_secs_f64() * 1e3,
        v.len()
    )
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo test --all-targets` also runs harness-less benches: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let Ok(url) = std::env::var("FLAMINGOCK_TEST_DYNAMODB_URL") else {
        println!("startup bench: set FLAMINGOCK_TEST_DYNAMODB_URL to a DynamoDB-API endpoint");
        return Ok(());
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let conf = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&url)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "bench"))
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(conf);
        let prefix = format!(
            "fkbench_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let store = DynamoAuditStore::builder(client.clone())
            .prefix(&prefix)
            .build()
            .await
            .expect("store");
        store.prepare().await?;
        let seeding = Instant::now();
        futures::stream::iter(0..CHANGES)
            .map(|i| {
                let store = store.clone();
                async move {
                    let e = AuditEntry::new(id(i), AuditState::Applied, 0)
                        .strategy(TxStrategy::SharedTx)
                        .run("seed");
                    let mut e = e;
                    e.stage_id = "s".into();
                    e.order = id(i);
                    e.target_system = "db".into();
                    store.append(&e).await
                }
            })
            // One at a time, as under the lock: concurrent appends contend
            // for the summary on the fence item and reread, and moto keeps
            // a copy of the whole table for every cancelled transaction.
            .buffer_unordered(1)
            .try_collect::<Vec<_>>()
            .await?;
        println!(
            "seeded {CHANGES} APPLIED entries in {:?}",
            seeding.elapsed()
        );

        let mut stage = Stage::new("s");
        for i in 0..CHANGES {
            stage.add(Noop(id(i)));
        }
        let runner = Flamingock::builder()
            .audit_store(store.clone())
            .target(
                store
                    .shared_target("db")
                    .build()
                    .await
                    .expect("shared target"),
            )
            .stage(stage)
            .build()?;
        let warm = runner.run().await?;
        assert_eq!(warm.totals().skipped, CHANGES);
        assert!(!warm.took_lock, "fast path");

        let mut runs = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let r = runner.run().await?;
            runs.push(t.elapsed());
            assert!(!r.took_lock);
        }
        let mut raw = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            client
                .get_item()
                .table_name(store.table())
                .key("pk", AttributeValue::S("FENCE".into()))
                .key("sk", AttributeValue::S("FENCE".into()))
                .consistent_read(true)
                .send()
                .await?;
            raw.push(t.elapsed());
        }
        let mut snaps = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let s = store.snapshot().await?;
            snaps.push(t.elapsed());
            assert_eq!(s.len(), CHANGES);
        }
        println!("start-up check, {CHANGES} applied changes: {}", stats(runs));
        println!("one raw GetItem (the floor):             {}", stats(raw));
        println!("snapshot() alone, {CHANGES} items:        {}", stats(snaps));

        client
            .delete_table()
            .table_name(store.table())
            .send()
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
