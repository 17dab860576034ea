//! The audit store contract.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Duration as ChronoDuration, Utc};
use flamingock_core::{
    reduce_snapshot, AuditEntry, AuditState, AuditStore, ErrorInfo, HistoryFilter,
    RecoveryStrategy, StoreError, TxStrategy,
};

use crate::{namespace, BoxError};

/// What an audit store supports; decides which checks apply.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AuditCapabilities {
    /// The store stamps `created_at` with its own clock (so ties on equal
    /// client timestamps cannot be provoked).
    pub store_clock: bool,
    /// Concurrent appenders used by [`concurrent_appends`].
    pub concurrent_writers: usize,
}

impl Default for AuditCapabilities {
    fn default() -> Self {
        AuditCapabilities {
            store_clock: true,
            concurrent_writers: 16,
        }
    }
}

impl AuditCapabilities {
    /// A store that keeps the client's `created_at`.
    pub fn client_clock(mut self) -> Self {
        self.store_clock = false;
        self
    }
    /// Sets the number of concurrent writers.
    pub fn writers(mut self, n: usize) -> Self {
        self.concurrent_writers = n;
        self
    }
}

/// An audit store implementation under test.
#[async_trait]
pub trait AuditStoreUnderTest: Send + Sync + 'static {
    /// Opens a store on namespace `ns`: the same `ns` gives the same data,
    /// every call gives new connections.
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError>;
    /// Drops everything of `ns`.
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError>;
    /// What the store supports.
    fn capabilities(&self) -> AuditCapabilities {
        AuditCapabilities::default()
    }
}

/// Runs `check` on a fresh, prepared store and cleans up, whatever happened.
async fn with_store<S, F, Fut>(sut: &S, check: F)
where
    S: AuditStoreUnderTest,
    F: FnOnce(Arc<dyn AuditStore>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ns = namespace("audit");
    let store = sut.open(&ns).await.expect("open store");
    store.prepare().await.expect("prepare store");
    let result =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(check(store, ns.clone())))
            .await;
    if let Err(e) = sut.cleanup(&ns).await {
        eprintln!("cleanup of {ns} failed: {e}");
    }
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A fully populated entry.
pub fn sample_entry(change_id: &str, state: AuditState, token: u64) -> AuditEntry {
    let mut e = AuditEntry::new(change_id, state, token);
    e.run_id = "run-1".into();
    e.stage_id = "stage-a".into();
    e.author = "ana".into();
    e.order = "0001".into();
    e.target_system = "db".into();
    e.duration_ms = 42;
    e.hostname = "host-1".into();
    e.runner_id = "svc@host-1#abc".into();
    e.metadata = serde_json::json!({"team": "payments", "n": 3, "nested": {"ok": true}});
    e.tx_strategy = TxStrategy::SeparateTxWithMarker;
    e.recovery = RecoveryStrategy::AlwaysRetry;
    e.transactional = true;
    e.checksum = Some("sha256:0f00".into());
    e
}

fn same_fields(stored: &AuditEntry, written: &AuditEntry) {
    let mut a = stored.clone();
    a.created_at = written.created_at;
    assert_eq!(&a, written, "stored entry differs from what was written");
}

/// Fresh stores are empty; `prepare` is idempotent, also from a second handle.
pub async fn empty_store_and_idempotent_prepare<S: AuditStoreUnderTest>(sut: &S) {
    with_store(sut, |store, ns| async move {
        store.prepare().await.expect("second prepare");
        let other = sut.open(&ns).await.expect("open second handle");
        other.prepare().await.expect("prepare from second handle");
        assert!(store.snapshot().await.expect("snapshot").is_empty());
        assert!(store
            .history(&HistoryFilter::all())
            .await
            .expect("history")
            .is_empty());
        assert_eq!(store.fence().await.expect("fence"), 0);
    })
    .await;
}

/// Every field survives the round trip; the snapshot holds the latest state per change.
pub async fn append_and_snapshot<S: AuditStoreUnderTest>(sut: &S) {
    with_store(sut, |store, _| async move {
        let started = sample_entry("a", AuditState::Started, 1);
        let mut applied = sample_entry("a", AuditState::Applied, 1);
        applied.created_at = started.created_at + ChronoDuration::milliseconds(5);
        let mut failed = sample_entry("b", AuditState::Failed, 1);
        failed.error = Some(ErrorInfo {
            message: "boom: ünïcödé; quote ' and \" and \\".into(),
            chain: vec!["cause one".into(), "root cause".into()],
        });
        failed.checksum = None;
        failed.metadata = serde_json::Value::Null;
        failed.tx_strategy = TxStrategy::NonTransactional;
        failed.recovery = RecoveryStrategy::ManualIntervention;
        failed.transactional = false;
        for e in [&started, &applied, &failed] {
            store.append(e).await.expect("append");
        }
        let snap = store.snapshot().await.expect("snapshot");
        assert_eq!(snap.len(), 2, "one entry per change: {snap:#?}");
        assert_eq!(snap[0].change_id, "a");
        assert_eq!(snap[0].state, AuditState::Applied);
        assert_eq!(snap[1].change_id, "b");
        same_fields(&snap[0], &applied);
        same_fields(&snap[1], &failed);
        let hist = store.history(&HistoryFilter::all()).await.expect("history");
        assert_eq!(hist.len(), 3);
        same_fields(&hist[0], &started);
    })
    .await;
}

/// Long, unicode and boundary values survive.
pub async fn large_and_odd_values_roundtrip<S: AuditStoreUnderTest>(sut: &S) {
    with_store(sut, |store, _| async move {
        let long_id: String = "x".repeat(255);
        let mut e = sample_entry(&long_id, AuditState::Failed, u64::from(u32::MAX) + 7);
        e.error = Some(ErrorInfo {
            message: "é".repeat(5_000),
            chain: (0..20).map(|i| format!("level {i}")).collect(),
        });
        e.metadata = serde_json::json!({"list": (0..200).collect::<Vec<_>>(), "s": "日本語"});
        e.duration_ms = u64::from(u32::MAX);
        store.append(&e).await.expect("append");
        let snap = store.snapshot().await.expect("snapshot");
        assert_eq!(snap.len(), 1);
        same_fields(&snap[0], &e);
    })
    .await;
}

/// The snapshot follows DESIGN section 4: latest `created_at`, ties broken by state order.
pub async fn snapshot_ordering_and_ties<S: AuditStoreUnderTest>(sut: &S) {
    let caps = sut.capabilities();
    with_store(sut, |store, _| async move {
        if caps.store_clock {
            // The store's clock orders appends: the later append wins.
            for states in [
                [AuditState::Failed, AuditState::RolledBack],
                [AuditState::RolledBack, AuditState::Failed],
                [AuditState::Applied, AuditState::Started],
            ] {
                let id = format!("c-{}-{}", states[0], states[1]);
                for st in states {
                    store
                        .append(&sample_entry(&id, st, 1))
                        .await
                        .expect("append");
                }
                let snap = store.snapshot().await.expect("snapshot");
                let got = snap.iter().find(|e| e.change_id == id).expect("entry");
                assert_eq!(got.state, states[1], "{id}: the later append must win");
            }
        } else {
            let t0 = Utc::now();
            // Equal timestamps: the later state in the list wins, whatever the append order.
            for (first, second) in [
                (AuditState::RolledBack, AuditState::Failed),
                (AuditState::Applied, AuditState::Started),
                (AuditState::ManualMarkedAsRolledBack, AuditState::Applied),
            ] {
                let id = format!("tie-{first}-{second}");
                store
                    .append(&sample_entry(&id, first, 1).at(t0))
                    .await
                    .expect("append");
                store
                    .append(&sample_entry(&id, second, 1).at(t0))
                    .await
                    .expect("append");
                let want = first.max(second);
                let snap = store.snapshot().await.expect("snapshot");
                let got = snap.iter().find(|e| e.change_id == id).expect("entry");
                assert_eq!(got.state, want, "{id}: tie must go to {want}");
            }
            // An older entry appended later does not win.
            let id = "older-later";
            store
                .append(&sample_entry(id, AuditState::Applied, 1).at(t0))
                .await
                .expect("append");
            store
                .append(
                    &sample_entry(id, AuditState::Failed, 1).at(t0 - ChronoDuration::seconds(10)),
                )
                .await
                .expect("append");
            let snap = store.snapshot().await.expect("snapshot");
            let got = snap.iter().find(|e| e.change_id == id).expect("entry");
            assert_eq!(got.state, AuditState::Applied);
        }
        let hist = store.history(&HistoryFilter::all()).await.expect("history");
        assert_eq!(
            store.snapshot().await.expect("snapshot"),
            reduce_snapshot(hist),
            "the current-state view must equal the reduction of the history"
        );
    })
    .await;
}

/// History is oldest first and filters by change and time.
pub async fn history_filters<S: AuditStoreUnderTest>(sut: &S) {
    with_store(sut, |store, _| async move {
        let t0 = Utc::now() - ChronoDuration::seconds(60);
        for (i, (id, st)) in [
            ("a", AuditState::Started),
            ("b", AuditState::Started),
            ("a", AuditState::Applied),
            ("b", AuditState::Failed),
            ("b", AuditState::RolledBack),
        ]
        .into_iter()
        .enumerate()
        {
            let e = sample_entry(id, st, 1).at(t0 + ChronoDuration::seconds(i as i64));
            store.append(&e).await.expect("append");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let all = store.history(&HistoryFilter::all()).await.expect("history");
        let order: Vec<(&str, AuditState)> = all
            .iter()
            .map(|e| (e.change_id.as_str(), e.state))
            .collect();
        assert_eq!(
            order,
            [
                ("a", AuditState::Started),
                ("b", AuditState::Started),
                ("a", AuditState::Applied),
                ("b", AuditState::Failed),
                ("b", AuditState::RolledBack)
            ]
        );
        let b = store
            .history(&HistoryFilter::all().change("b"))
            .await
            .expect("history b");
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|e| e.change_id == "b"));
        let since = all[2].created_at;
        let recent = store
            .history(&HistoryFilter::all().since(since))
            .await
            .expect("history since");
        assert_eq!(recent.len(), 3, "since is inclusive: {recent:#?}");
        let none = store
            .history(&HistoryFilter::all().change("zzz"))
            .await
            .expect("history none");
        assert!(none.is_empty());
    })
    .await;
}

/// Each claim returns a new epoch, strictly greater than every epoch claimed
/// before (on any handle, concurrently too); a write below the fence is
/// rejected without a trace; appends never move the fence.
pub async fn fence_claim_and_reject<S: AuditStoreUnderTest>(sut: &S) {
    with_store(sut, |store, ns| async move {
        assert_eq!(store.fence().await.expect("fence"), 0, "a new store has no fence");
        let first = store.claim_fence().await.expect("claim");
        assert!(first >= 1, "the first epoch is at least 1, got {first}");
        let second = store.claim_fence().await.expect("claim again");
        assert!(second > first, "epochs strictly increase: {first} then {second}");
        assert_eq!(store.fence().await.expect("fence"), second);
        match store
            .append(&sample_entry("x", AuditState::Applied, first))
            .await
        {
            Err(StoreError::Fenced { token, fence, .. }) => {
                assert_eq!((token, fence), (first, second));
            }
            other => panic!(
                "append with epoch {first} below fence {second} must fail with Fenced, got {other:?}"
            ),
        }
        assert!(
            store.snapshot().await.expect("snapshot").is_empty(),
            "a fenced write must leave nothing"
        );
        assert!(store
            .history(&HistoryFilter::all())
            .await
            .expect("history")
            .is_empty());
        store
            .append(&sample_entry("x", AuditState::Applied, second))
            .await
            .expect("epoch equal to the fence");
        assert_eq!(
            store.fence().await.expect("fence"),
            second,
            "appends do not move the fence"
        );
        // The fence is shared by every handle on the namespace, and claims
        // made at once on separate connections never hand out one epoch twice.
        let mut handles = Vec::new();
        for _ in 0..4 {
            handles.push(sut.open(&ns).await.expect("another handle"));
        }
        let claims = futures::future::join_all(handles.iter().map(|h| h.claim_fence())).await;
        let mut epochs: Vec<u64> = claims
            .into_iter()
            .map(|c| c.expect("concurrent claim"))
            .collect();
        epochs.sort_unstable();
        let n = epochs.len();
        epochs.dedup();
        assert_eq!(epochs.len(), n, "an epoch was handed out twice: {epochs:?}");
        assert!(epochs[0] > second, "{epochs:?} after {second}");
        let newest = *epochs.last().expect("claims");
        assert_eq!(store.fence().await.expect("fence"), newest);
        assert!(matches!(
            store
                .append(&sample_entry("z", AuditState::Applied, second))
                .await,
            Err(StoreError::Fenced { fence, .. }) if fence == newest
        ));
        assert_eq!(store.snapshot().await.expect("snapshot").len(), 1);
    })
    .await;
}

/// Concurrent appenders on separate connections lose nothing, and the
/// current-state view stays the reduction of the history.
pub async fn concurrent_appends<S: AuditStoreUnderTest>(sut: &S) {
    let writers = sut.capabilities().concurrent_writers;
    with_store(sut, |store, ns| async move {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let handle = sut.open(&ns).await.expect("open handle");
            tasks.push(async move {
                for i in 0..5 {
                    let own = sample_entry(&format!("w{w}-c{i}"), AuditState::Applied, 1);
                    handle.append(&own).await.expect("append own");
                    let st = AuditState::ALL[(w + i) % AuditState::ALL.len()];
                    handle
                        .append(&sample_entry("shared", st, 1))
                        .await
                        .expect("append shared");
                }
            });
        }
        futures::future::join_all(tasks).await;
        let hist = store.history(&HistoryFilter::all()).await.expect("history");
        assert_eq!(hist.len(), writers * 10, "every append is in the history");
        let snap = store.snapshot().await.expect("snapshot");
        assert_eq!(snap.len(), writers * 5 + 1);
        assert_eq!(
            snap,
            reduce_snapshot(hist),
            "current state == reduction of history"
        );
    })
    .await;
}

/// The applied-set summary ([`AuditStore::summary`]) equals the summary of
/// the snapshot after every kind of write: each state of the decision table
/// in turn, a checksum that changes (drift), entries that do not supersede
/// the current one, a fenced write, and concurrent writers. This is what
/// lets the runner trust it instead of reading the snapshot.
///
/// For stores that keep a summary; list it under `ignored:` for the others.
pub async fn summary_matches_snapshot<S: AuditStoreUnderTest>(sut: &S) {
    use flamingock_core::summary::AuditSummary;
    let writers = sut.capabilities().concurrent_writers.min(8);
    with_store(sut, |store, ns| async move {
        async fn agrees(store: &dyn AuditStore, when: &str) -> AuditSummary {
            let summary = store.summary().await.expect("summary").unwrap_or_else(|| {
                panic!(
                    "this store keeps no summary (summary() is None after prepare): list \
                     summary_matches_snapshot under `ignored:` in audit_store_tests! with the \
                     reason, so it shows as ignored"
                )
            });
            let snap = store.snapshot().await.expect("snapshot");
            assert_eq!(summary, AuditSummary::of_snapshot(&snap), "after {when}");
            summary
        }
        assert_eq!(agrees(&*store, "prepare").await, AuditSummary::default());
        // Every state in turn, on two changes, with a checksum that changes.
        for (i, st) in AuditState::ALL
            .iter()
            .chain(AuditState::ALL.iter())
            .enumerate()
        {
            let mut e = sample_entry("x", *st, 1);
            e.checksum = Some(format!("sha256:{}", i % 3));
            store.append(&e).await.expect("append x");
            agrees(&*store, &format!("x -> {st}")).await;
            let mut y = sample_entry("y", AuditState::ALL[(i + 3) % 7], 1);
            y.checksum = (i % 2 == 0).then(|| "sha256:y".to_owned());
            store.append(&y).await.expect("append y");
            agrees(&*store, &format!("y, step {i}")).await;
        }
        // An entry stamped long ago: the current row moves only where the
        // store keeps the client's clock and it supersedes.
        let old = sample_entry("x", AuditState::Applied, 1).at(chrono::DateTime::UNIX_EPOCH);
        store.append(&old).await.expect("append old");
        agrees(&*store, "an entry stamped long ago").await;
        // A fenced write changes nothing.
        let epoch = store.claim_fence().await.expect("claim");
        assert!(epoch >= 1, "{epoch}");
        let before = agrees(&*store, "the claim").await;
        let stale = sample_entry("z", AuditState::Applied, epoch - 1);
        store.append(&stale).await.expect_err("fenced");
        assert_eq!(agrees(&*store, "a fenced write").await, before);
        // Concurrent writers on shared and own changes.
        let mut tasks = Vec::new();
        for w in 0..writers {
            let handle = sut.open(&ns).await.expect("open handle");
            tasks.push(async move {
                for i in 0..4 {
                    let own = sample_entry(&format!("w{w}-c{i}"), AuditState::Applied, epoch);
                    handle.append(&own).await.expect("append own");
                    let st = AuditState::ALL[(w + i) % AuditState::ALL.len()];
                    handle
                        .append(&sample_entry("shared", st, epoch))
                        .await
                        .expect("append shared");
                }
            });
        }
        futures::future::join_all(tasks).await;
        let after = agrees(&*store, "concurrent writers").await;
        assert_eq!(
            after.rows,
            2 + writers as u64 * 4 + 1,
            "x, y, the own changes, shared"
        );
        // What the runner compares: equal exactly when all are applied.
        let snap = store.snapshot().await.expect("snapshot");
        let all = AuditSummary::all_applied(
            snap.iter()
                .map(|e| (e.change_id.as_str(), e.checksum.as_deref())),
        );
        let every_applied = snap
            .iter()
            .all(|e| flamingock_core::summary::counts_as_applied(e.state));
        assert_eq!(after == all, every_applied);
    })
    .await;
}

/// Expands to one `#[tokio::test]` per audit-store check. Takes the path of an
/// `async fn() -> Option<impl AuditStoreUnderTest>` (a missing service makes
/// [`require_service`](crate::require_service) fail the test; a `None` from
/// another precondition returns without checking, so do not return one). A store
/// that keeps no summary lists `summary_matches_snapshot` as ignored, with
/// the reason: `audit_store_tests!(sut, ignored: [summary_matches_snapshot =
/// "..."])`.
#[macro_export]
macro_rules! audit_store_tests {
    ($sut:path) => {
        $crate::audit_store_tests!($sut, ignored: []);
        $crate::__suite_tests!($sut, audit_suite: [summary_matches_snapshot]);
    };
    ($sut:path, ignored: [$($skip:ident = $why:literal),* $(,)?] $(,)?) => {
        $crate::__suite_tests!($sut, audit_suite: [
            empty_store_and_idempotent_prepare,
            append_and_snapshot,
            large_and_odd_values_roundtrip,
            snapshot_ordering_and_ties,
            history_filters,
            fence_claim_and_reject,
            concurrent_appends,
        ]);
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            #[ignore = $why]
            async fn $skip() {
                let sut = $sut()
                    .await
                    .expect("the backend under test is unavailable: a check never passes without running");
                $crate::audit_suite::$skip(&sut).await;
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __suite_tests {
    ($sut:path, $module:ident: [$($check:ident),* $(,)?]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let sut = $sut()
                    .await
                    .expect("the backend under test is unavailable: a check never passes without running");
                $crate::$module::$check(&sut).await;
            }
        )*
    };
}
