//! The suites' implementations over the in-memory reference backends, and
//! small stages the lock suite runs.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flamingock_core::memory::{InMemoryAuditStore, InMemoryLock, InMemoryTarget, KvTx};
use flamingock_core::{AuditStore, Change, ChangeMeta, ChangeResult, LockProvider, Stage};
use futures::future::BoxFuture;

use crate::audit_suite::AuditStoreUnderTest;
use crate::lock_suite::LockUnderTest;
use crate::pipeline_suite::{PipelineCapabilities, PipelineEnv, PipelineUnderTest};
use crate::BoxError;

#[derive(Clone)]
struct Namespace {
    store: InMemoryAuditStore,
    lock: InMemoryLock,
    elsewhere: InMemoryTarget,
}

/// "Servers": one set of in-memory backends per namespace, so that opening a
/// namespace twice gives two handles on the same data, as with a database.
static NAMESPACES: LazyLock<Mutex<HashMap<String, Namespace>>> = LazyLock::new(Mutex::default);

fn ns(name: &str) -> Namespace {
    NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name.to_owned())
        .or_insert_with(|| Namespace {
            store: InMemoryAuditStore::new(),
            lock: InMemoryLock::new(),
            elsewhere: InMemoryTarget::new("elsewhere"),
        })
        .clone()
}

fn drop_ns(name: &str) {
    NAMESPACES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(name);
}

/// The in-memory backends under test.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory;

#[async_trait]
impl AuditStoreUnderTest for Memory {
    async fn open(&self, name: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(ns(name).store))
    }
    async fn cleanup(&self, name: &str) -> Result<(), BoxError> {
        drop_ns(name);
        Ok(())
    }
}

#[async_trait]
impl LockUnderTest for Memory {
    async fn open(&self, name: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(ns(name).lock))
    }
    async fn cleanup(&self, name: &str) -> Result<(), BoxError> {
        drop_ns(name);
        Ok(())
    }
}

#[async_trait]
impl PipelineUnderTest for Memory {
    type Target = InMemoryTarget;

    async fn open(&self, name: &str) -> Result<PipelineEnv<InMemoryTarget>, BoxError> {
        let lock = Arc::new(ns(name).store.lock());
        Ok(env_with_lock(name, lock))
    }

    fn bump<'a>(tx: &'a mut KvTx, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            tx.incr(key);
            Ok(())
        })
    }

    async fn count(&self, target: &InMemoryTarget, key: &str) -> Result<u64, BoxError> {
        Ok(match target.get(key) {
            Some(v) => v.parse()?,
            None => 0,
        })
    }

    async fn cleanup(&self, name: &str) -> Result<(), BoxError> {
        drop_ns(name);
        Ok(())
    }

    async fn footprint(&self, name: &str) -> Result<Vec<String>, BoxError> {
        let n = ns(name);
        let mut found = Vec::new();
        if n.store.is_prepared() {
            found.push("audit store (prepared)".to_owned());
        }
        if n.store.history_len() > 0 {
            found.push(format!("{} audit entries", n.store.history_len()));
        }
        if n.store.fence().await? > 0 {
            found.push("a claimed fence".to_owned());
        }
        if n.store.lock().grants() > 0 {
            found.push(format!("{} lock grants", n.store.lock().grants()));
        }
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        PipelineCapabilities::default().repetitions(100)
    }
}

/// The in-memory store and targets of namespace `name` with another lock
/// provider: how a lock-only backend (Redis) runs the pipeline suite. Drop
/// the namespace with [`drop_namespace`].
pub fn env_with_lock(name: &str, lock: Arc<dyn LockProvider>) -> PipelineEnv<InMemoryTarget> {
    let n = ns(name);
    PipelineEnv {
        store: Arc::new(n.store.clone()),
        lock,
        shared: Some(n.store.shared_target("shared")),
        separate_marker: Some(n.elsewhere.clone().with_id("separate-marker")),
        separate: Some(n.elsewhere.without_marker().with_id("separate")),
    }
}

/// Forgets namespace `name` (see [`env_with_lock`]).
pub fn drop_namespace(name: &str) {
    drop_ns(name);
}

/// The suite constructor the macros take.
pub async fn memory() -> Option<Memory> {
    Some(Memory)
}

struct Put {
    id: String,
    wait: Duration,
}

impl Change for Put {
    type Target = InMemoryTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(&self.id).order("0001")
    }
    async fn apply(&self, tx: &mut KvTx) -> ChangeResult {
        tokio::time::sleep(self.wait).await;
        tx.put(&self.id, "done");
        Ok(())
    }
}

/// A stage with one quick in-memory change named `id`.
pub fn one_change_stage(id: &str) -> Stage {
    slow_change_stage(id, Duration::ZERO)
}

/// A stage with one in-memory change that takes `wait`.
pub fn slow_change_stage(id: &str, wait: Duration) -> Stage {
    Stage::new("stage").change(Put {
        id: id.to_owned(),
        wait,
    })
}
