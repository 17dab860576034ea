use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Duration as ChronoDuration, Utc};

use super::lock::InMemoryLock;
use super::target::{InMemoryTarget, KvData};
use crate::audit::{AuditEntry, AuditStore, HistoryFilter};
use crate::error::StoreError;
use crate::lock::LockProvider;

#[derive(Debug, Default)]
pub(crate) struct StoreState {
    history: Vec<AuditEntry>,
    current: BTreeMap<String, AuditEntry>,
    /// Kept with `current`, under the same mutex.
    summary: crate::summary::AuditSummary,
    fence: u64,
    last_ts: Option<DateTime<Utc>>,
    /// `prepare` ran: the "tables" exist (reads before that find nothing).
    prepared: bool,
}

impl StoreState {
    /// The store's clock: strictly increasing, so the history order is total.
    fn now(&mut self) -> DateTime<Utc> {
        let mut now = Utc::now();
        if let Some(last) = self.last_ts {
            if now <= last {
                now = last + ChronoDuration::microseconds(1);
            }
        }
        self.last_ts = Some(now);
        now
    }

    pub(crate) fn check_fence(&self, store: &str, token: u64) -> Result<(), StoreError> {
        if token < self.fence {
            return Err(StoreError::Fenced {
                store: store.to_owned(),
                token,
                fence: self.fence,
            });
        }
        Ok(())
    }

    /// History row + current-state row + fence check, under one mutex.
    pub(crate) fn append(&mut self, store: &str, entry: &AuditEntry) -> Result<(), StoreError> {
        self.check_fence(store, entry.fencing_token)?;
        let mut e = entry.clone();
        e.created_at = self.now();
        match self.current.get(&e.change_id) {
            Some(cur) if !e.supersedes(cur) => {}
            old => {
                self.summary.replace(old, &e);
                self.current.insert(e.change_id.clone(), e.clone());
            }
        }
        self.history.push(e);
        Ok(())
    }
}

pub(crate) struct StoreInner {
    id: String,
    pub(crate) state: Mutex<StoreState>,
    pub(crate) kv: Arc<Mutex<KvData>>,
    lock: InMemoryLock,
}

/// An in-memory audit store with a current-state map, a fence, and its own
/// lock ([`AuditStore::default_lock`]). Clones share the same data, so clones
/// stand for several runners connected to one store.
///
/// ```
/// use flamingock_core::memory::InMemoryAuditStore;
/// use flamingock_core::AuditStore;
/// let store = InMemoryAuditStore::new();
/// let target = store.shared_target("kv"); // shares transactions with the store
/// assert_eq!(target.capabilities().shared_audit_store.as_deref(), Some(store.store_id()));
/// # use flamingock_core::TargetSystem;
/// ```
#[derive(Clone)]
pub struct InMemoryAuditStore {
    pub(crate) inner: Arc<StoreInner>,
}

impl std::fmt::Debug for InMemoryAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryAuditStore")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl Default for InMemoryAuditStore {
    fn default() -> Self {
        Self::new()
    }
}

pub(crate) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the guard cannot leave these maps half-written
    // (every mutation is a single insert/push), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl InMemoryAuditStore {
    /// An empty store.
    pub fn new() -> Self {
        let id = format!("memory:{}", uuid::Uuid::new_v4());
        InMemoryAuditStore {
            inner: Arc::new(StoreInner {
                lock: InMemoryLock::named(&format!("{id}/lock")),
                id,
                state: Mutex::new(StoreState::default()),
                kv: Arc::new(Mutex::new(KvData::default())),
            }),
        }
    }

    /// A transactional key-value target living in the same "database": its
    /// changes commit together with their APPLIED entry (shared transaction).
    pub fn shared_target(&self, id: impl Into<String>) -> InMemoryTarget {
        InMemoryTarget::shared(id.into(), self.clone())
    }

    /// The store's own lock.
    pub fn lock(&self) -> InMemoryLock {
        self.inner.lock.clone()
    }

    /// Number of history entries (for tests).
    pub fn history_len(&self) -> usize {
        guard(&self.inner.state).history.len()
    }

    /// Whether [`AuditStore::prepare`] ever ran on this store (for tests
    /// checking that reading never prepares a store).
    pub fn is_prepared(&self) -> bool {
        guard(&self.inner.state).prepared
    }
}

#[async_trait]
impl AuditStore for InMemoryAuditStore {
    fn describe(&self) -> String {
        self.inner.id.clone()
    }

    fn store_id(&self) -> &str {
        &self.inner.id
    }

    async fn prepare(&self) -> Result<(), StoreError> {
        guard(&self.inner.state).prepared = true;
        Ok(())
    }

    async fn claim_fence(&self) -> Result<u64, StoreError> {
        tokio::task::yield_now().await;
        let mut st = guard(&self.inner.state);
        st.fence += 1;
        Ok(st.fence)
    }

    async fn fence(&self) -> Result<u64, StoreError> {
        Ok(guard(&self.inner.state).fence)
    }

    async fn append(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        guard(&self.inner.state).append(&self.inner.id, entry)
    }

    async fn snapshot(&self) -> Result<Vec<AuditEntry>, StoreError> {
        tokio::task::yield_now().await;
        Ok(guard(&self.inner.state).current.values().cloned().collect())
    }

    async fn summary(&self) -> Result<Option<crate::summary::AuditSummary>, StoreError> {
        let state = guard(&self.inner.state);
        Ok(state.prepared.then_some(state.summary))
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(guard(&self.inner.state)
            .history
            .iter()
            .filter(|e| filter.matches(e))
            .cloned()
            .collect())
    }

    fn default_lock(&self) -> Option<Arc<dyn LockProvider>> {
        Some(Arc::new(self.inner.lock.clone()))
    }
}

/// The in-memory "transaction" is the change's [`KvTx`]: the entry is staged
/// in it and written, with the fence check, when the target commits it,
/// under the same locks as the data (like a store whose transaction is one
/// request sent at commit).
impl crate::shared_audit::AppendInTransaction for InMemoryAuditStore {
    type Transaction = super::target::KvTx;

    async fn append_in_transaction(
        &self,
        tx: &mut super::target::KvTx,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        tx.audit = Some(entry.clone());
        Ok(())
    }
}
