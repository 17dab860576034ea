//! The engine's own cost on the in-memory backends (no I/O): what Flamingock
//! adds on top of the systems it drives.
//!
//! `cargo bench -p flamingock-core --bench engine` prints, as medians:
//! * building (validating and binding) a pipeline of 10,000 changes;
//! * the start-up check when all 10,000 are applied (the lock-free fast path
//!   every replica pays at every start), with a short and a long history;
//! * applying 10,000 no-op changes, and the per-change overhead.
//!
//! `FLAMINGOCK_BENCH_QUICK=1` shrinks the sizes for a smoke run, and so does
//! running it as a test (`cargo test --all-targets`, no `--bench` argument).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Flamingock, Stage,
    TxStrategy,
};

struct Noop(String);

impl Change for Noop {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.0).order(&self.0)
    }
    async fn apply(&self, _tx: &mut KvTx) -> ChangeResult {
        Ok(())
    }
}

fn runner(store: &InMemoryAuditStore, n: usize) -> Flamingock {
    let mut stage = Stage::new("bench");
    for i in 0..n {
        stage.add(Noop(format!("{i:06}")));
    }
    Flamingock::builder()
        .audit_store(store.clone())
        .target(store.shared_target("db"))
        .stage(stage)
        .build()
        .unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it: then only a quick smoke run.
    let quick = std::env::var("FLAMINGOCK_BENCH_QUICK").as_deref() == Ok("1")
        || !std::env::args().any(|a| a == "--bench");
    let n = if quick { 1_000 } else { 10_000 };
    let reps = if quick { 3 } else { 7 };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let build = median(
        (0..reps)
            .map(|_| {
                let store = InMemoryAuditStore::new();
                let t = Instant::now();
                let r = runner(&store, n);
                let e = t.elapsed();
                drop(r);
                e
            })
            .collect(),
    );

    let mut apply = Vec::new();
    let mut check = Vec::new();
    let mut check_long = Vec::new();
    for _ in 0..reps {
        let store = InMemoryAuditStore::new();
        let r = runner(&store, n);
        let t = Instant::now();
        let report = rt.block_on(r.run()).unwrap();
        apply.push(t.elapsed());
        assert_eq!(report.totals().applied, n);

        let t = Instant::now();
        let again = rt.block_on(r.run()).unwrap();
        check.push(t.elapsed());
        assert!(!again.took_lock);

        // 100 failed attempts of every 100th change: the check must not care.
        rt.block_on(async {
            for i in (0..n).step_by(100) {
                for _ in 0..100 {
                    let e = AuditEntry::new(format!("{i:06}-old"), AuditState::Failed, 1)
                        .strategy(TxStrategy::SharedTx);
                    store.append(&e).await.unwrap();
                }
                store
                    .append(&AuditEntry::new(
                        format!("{i:06}-old"),
                        AuditState::Applied,
                        1,
                    ))
                    .await
                    .unwrap();
            }
        });
        let r2 = Flamingock::builder()
            .audit_store(store.clone())
            .target(store.shared_target("db"))
            .stage({
                let mut s = Stage::new("bench");
                for i in 0..n {
                    s.add(Noop(format!("{i:06}")));
                }
                for i in (0..n).step_by(100) {
                    s.add(Noop(format!("{i:06}-old")));
                }
                s
            })
            .build()
            .unwrap();
        let t = Instant::now();
        let again = rt.block_on(r2.run()).unwrap();
        check_long.push(t.elapsed());
        assert!(!again.took_lock);
    }
    let apply = median(apply);
    let check = median(check);
    let check_long = median(check_long);
    println!("flamingock-core engine cost, in-memory backends, {n} changes, median of {reps}");
    println!("{:<58} {:>12}", "measure", "median");
    println!(
        "{:<58} {:>12.2?}",
        format!("build + validate pipeline of {n} changes"),
        build
    );
    println!(
        "{:<58} {:>12.2?}",
        format!("start-up check, {n} applied (fast path, no lock)"),
        check
    );
    println!(
        "{:<58} {:>12.2?}",
        format!("  same, +{} changes with 101 history entries each", n / 100),
        check_long
    );
    println!(
        "{:<58} {:>12.2?}",
        format!("apply {n} no-op changes (lock, fence, audit)"),
        apply
    );
    println!(
        "{:<58} {:>12.2?}",
        "  per-change overhead",
        apply / u32::try_from(n).unwrap()
    );
}
