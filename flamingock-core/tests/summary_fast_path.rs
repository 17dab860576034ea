//! The start-up check read from the store's summary reaches the same verdict
//! as the check read from the snapshot, in every case: each state of the
//! decision table, a change without entry, an orphan, a retired orphan,
//! drift and a checksum recorded as none. The same store is read once with
//! its summary and once through a wrapper that hides it (the full path).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use flamingock_core::memory::{InMemoryAuditStore, InMemoryTarget, KvTx};
use flamingock_core::summary::AuditSummary;
use flamingock_core::{
    async_trait, AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Flamingock,
    HistoryFilter, LockProvider, Stage, StoreError, TxStrategy,
};

/// Delegates to the memory store; hides its summary when asked, and counts
/// snapshot reads.
struct Seen {
    inner: InMemoryAuditStore,
    hide_summary: bool,
    snapshots: AtomicUsize,
}

#[async_trait]
impl AuditStore for Seen {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn store_id(&self) -> &str {
        self.inner.store_id()
    }
    async fn prepare(&self) -> Result<(), StoreError> {
        self.inner.prepare().await
    }
    async fn claim_fence(&self) -> Result<u64, StoreError> {
        self.inner.claim_fence().await
    }
    async fn fence(&self) -> Result<u64, StoreError> {
        self.inner.fence().await
    }
    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.inner.append(entry).await
    }
    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        self.snapshots.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot().await
    }
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        self.inner.history(filter).await
    }
    async fn summary(&self) -> Result<Option<AuditSummary>, StoreError> {
        if self.hide_summary {
            Ok(None)
        } else {
            self.inner.summary().await
        }
    }
    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        self.inner.default_lock()
    }
}

struct Put {
    id: &'static str,
    checksum: &'static str,
}

impl Change for Put {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id)
            .order(self.id)
            .checksum(self.checksum)
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tx.incr(self.id);
        Ok(())
    }
}

/// One entry a case writes before the check: (change id, state, checksum).
type Entry = (&'static str, AuditState, Option<&'static str>);

/// The verdict of a validate-only run: nothing pending, or the kind of error.
async fn verdict(store: &InMemoryAuditStore, hide_summary: bool) -> (String, usize) {
    let seen = Arc::new(Seen {
        inner: store.clone(),
        hide_summary,
        snapshots: AtomicUsize::new(0),
    });
    let runner = Flamingock::builder()
        .audit_store(seen.clone())
        .target(store.shared_target("db"))
        .stage(
            Stage::new("s")
                .change(Put {
                    id: "a",
                    checksum: "ca",
                })
                .change(Put {
                    id: "b",
                    checksum: "cb",
                }),
        )
        .validate_only(true)
        .build()
        .expect("build");
    let v = match runner.run().await {
        Ok(report) => format!("ok: skipped {}", report.totals().skipped),
        Err(e) => {
            let debug = format!("{e:?}");
            let kind: String = debug
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            format!("error {kind}: {}", e.to_string().lines().count())
        }
    };
    (v, seen.snapshots.load(Ordering::SeqCst))
}

async fn seeded(seed: &[Entry]) -> InMemoryAuditStore {
    let store = InMemoryAuditStore::new();
    store.prepare().await.expect("prepare");
    for (id, state, checksum) in seed {
        let mut e = AuditEntry::new(*id, *state, 1).strategy(TxStrategy::NonTransactional);
        e.stage_id = "s".into();
        e.target_system = "db".into();
        e.checksum = checksum.map(str::to_owned);
        store.append(&e).await.expect("seed");
    }
    store
}

#[tokio::test]
async fn the_summary_and_the_snapshot_reach_the_same_verdict() {
    use AuditState::*;
    let a = ("a", Applied, Some("ca"));
    let mut cases: Vec<(String, Vec<Entry>)> = vec![
        ("all applied".into(), vec![a, ("b", Applied, Some("cb"))]),
        ("b never ran".into(), vec![a]),
        ("nothing ran".into(), vec![]),
        (
            "b marked applied".into(),
            vec![a, ("b", ManualMarkedAsApplied, Some("cb"))],
        ),
        (
            "an orphan".into(),
            vec![a, ("b", Applied, Some("cb")), ("gone", Applied, None)],
        ),
        (
            "a failed orphan".into(),
            vec![a, ("b", Applied, Some("cb")), ("gone", Failed, None)],
        ),
        ("drift".into(), vec![a, ("b", Applied, Some("old"))]),
        ("no recorded checksum".into(), vec![a, ("b", Applied, None)]),
    ];
    for st in AuditState::ALL {
        cases.push((format!("b last {st}"), vec![a, ("b", st, Some("cb"))]));
        cases.push((
            format!("b applied, then {st}"),
            vec![a, ("b", Applied, Some("cb")), ("b", st, Some("cb"))],
        ));
    }
    let mut fast_hits = 0;
    for (name, seed) in &cases {
        let store = seeded(seed).await;
        let (full, _) = verdict(&store, true).await;
        let (fast, snapshots) = verdict(&store, false).await;
        assert_eq!(fast, full, "case {name}");
        if snapshots == 0 {
            fast_hits += 1;
            assert!(
                full.starts_with("ok"),
                "case {name}: the summary path said {fast}"
            );
        }
    }
    // The summary answered alone exactly where everything is applied with
    // the pipeline's checksums and nothing else is recorded.
    // (all applied; b marked applied; b last, and b applied then, APPLIED or
    // MANUAL_MARKED_AS_APPLIED).
    assert_eq!(fast_hits, 6);
}
