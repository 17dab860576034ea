use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::store::{guard, InMemoryAuditStore};
use crate::audit::AuditEntry;
use crate::error::TargetError;
use crate::shared_audit::{commit_error, SharedAudit};
use crate::target::{CommitWith, ContextMode, Marker, TargetCapabilities, TargetSystem};

#[derive(Debug, Default)]
pub(crate) struct KvData {
    values: BTreeMap<String, String>,
    markers: HashMap<String, Marker>,
}

/// A transactional in-memory key-value target with real commit/rollback
/// semantics: writes are staged in the [`KvTx`] and become visible only on
/// commit; a dropped `KvTx` (a crash) leaves nothing behind.
///
/// * [`InMemoryAuditStore::shared_target`] gives one that shares transactions with
///   the audit store (shared-transaction strategy);
/// * [`InMemoryTarget::new`] gives an independent one that keeps markers
///   (separate transaction with marker); [`InMemoryTarget::without_marker`]
///   turns markers off (plain separate transaction).
///
/// Clones share the same data.
#[derive(Debug, Clone)]
pub struct InMemoryTarget {
    id: String,
    kv: Arc<Mutex<KvData>>,
    shared: Option<SharedAudit<InMemoryAuditStore>>,
    marker: bool,
}

impl InMemoryTarget {
    /// An independent transactional target that keeps markers.
    pub fn new(id: impl Into<String>) -> Self {
        InMemoryTarget {
            id: id.into(),
            kv: Arc::default(),
            shared: None,
            marker: true,
        }
    }

    pub(crate) fn shared(id: String, store: InMemoryAuditStore) -> Self {
        InMemoryTarget {
            id,
            kv: store.inner.kv.clone(),
            shared: Some(SharedAudit::new(store)),
            marker: false,
        }
    }

    /// The same data, without marker support.
    pub fn without_marker(mut self) -> Self {
        self.marker = false;
        self
    }

    /// The same data under another target id (e.g. two ids over one database).
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// A committed value.
    pub fn get(&self, key: &str) -> Option<String> {
        guard(&self.kv).values.get(key).cloned()
    }

    /// All committed values.
    pub fn values(&self) -> BTreeMap<String, String> {
        guard(&self.kv).values.clone()
    }
}

/// The context of an [`InMemoryTarget`] change: a transaction over the key-value data.
#[derive(Debug)]
pub struct KvTx {
    kv: Arc<Mutex<KvData>>,
    staged: BTreeMap<String, Option<String>>,
    transactional: bool,
    /// The APPLIED entry staged by the shared store: written, with the
    /// fence check, at commit, under the same locks as the data.
    pub(crate) audit: Option<AuditEntry>,
}

impl KvTx {
    /// Reads a key, seeing this transaction's own writes.
    pub fn get(&self, key: &str) -> Option<String> {
        match self.staged.get(key) {
            Some(v) => v.clone(),
            None => guard(&self.kv).values.get(key).cloned(),
        }
    }

    /// Writes a key.
    pub fn put(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.write(key.into(), Some(value.into()));
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: impl Into<String>) {
        self.write(key.into(), None);
    }

    /// Adds one to an integer key (missing = 0) and returns the new value.
    pub fn incr(&mut self, key: &str) -> i64 {
        let n = self
            .get(key)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        self.put(key, n.to_string());
        n
    }

    fn write(&mut self, key: String, value: Option<String>) {
        if self.transactional {
            self.staged.insert(key, value);
        } else {
            let mut kv = guard(&self.kv);
            match value {
                Some(v) => kv.values.insert(key, v),
                None => kv.values.remove(&key),
            };
        }
    }

    fn flush(staged: BTreeMap<String, Option<String>>, kv: &mut KvData) {
        for (k, v) in staged {
            match v {
                Some(v) => kv.values.insert(k, v),
                None => kv.values.remove(&k),
            };
        }
    }
}

impl crate::change::ChangeContext for KvTx {
    type Target = InMemoryTarget;
}

impl TargetSystem for InMemoryTarget {
    type Context = KvTx;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        crate::shared_audit::transactional_capabilities(self.shared.as_ref(), self.marker)
    }

    async fn begin(&self, mode: ContextMode) -> Result<KvTx, TargetError> {
        Ok(KvTx {
            kv: self.kv.clone(),
            staged: BTreeMap::new(),
            transactional: mode == ContextMode::Transaction,
            audit: None,
        })
    }

    async fn commit(&self, tx: KvTx, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Audit(entry) => {
                let Some(shared) = &self.shared else {
                    return Err(TargetError::Unsupported {
                        target: self.id.clone(),
                        detail:
                            "asked to commit an audit entry but this target shares no audit store"
                                .into(),
                    });
                };
                let mut tx = tx;
                shared.append(&self.id, &mut tx, entry).await?;
                let store = shared.store();
                // Lock order: audit state, then data (the only place taking both).
                let mut st = guard(&store.inner.state);
                if let Some(entry) = &tx.audit {
                    st.append(&crate::AuditStore::describe(store), entry)
                        .map_err(|e| commit_error(&self.id, e))?;
                }
                KvTx::flush(tx.staged, &mut guard(&self.kv));
            }
            CommitWith::Marker(m) => {
                let mut kv = guard(&self.kv);
                KvTx::flush(tx.staged, &mut kv);
                kv.markers.insert(m.change_id.clone(), m.clone());
            }
            _ => KvTx::flush(tx.staged, &mut guard(&self.kv)),
        }
        Ok(())
    }

    async fn abort(&self, _tx: KvTx) -> Result<(), TargetError> {
        Ok(())
    }

    async fn marker(&self, change_id: &str) -> Result<Option<Marker>, TargetError> {
        Ok(guard(&self.kv).markers.get(change_id).cloned())
    }

    async fn clear_marker(&self, change_id: &str) -> Result<(), TargetError> {
        guard(&self.kv).markers.remove(change_id);
        Ok(())
    }
}
