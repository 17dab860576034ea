//! Stages: ordered groups of changes, type-erased until the runner binds
//! each change to its target.

use std::any::{Any, TypeId};
use std::sync::Arc;

use crate::change::{Change, ChangeMeta};

use crate::pipeline::{Bound, BoundChange};

/// An ordered group of changes. Changes run in lexicographic order of their
/// `order` within the stage; stages run in the order they were added.
///
/// ```
/// use flamingock_core::{Change, ChangeMeta, ChangeResult, Stage};
/// use flamingock_core::memory::{InMemoryTarget, KvTx};
///
/// struct CreateIndex;
/// impl Change for CreateIndex {
///     type Target = InMemoryTarget;
///     fn meta(&self) -> ChangeMeta { ChangeMeta::new("create-index").order("0001") }
///     async fn apply(&self, tx: &mut KvTx) -> ChangeResult { tx.put("index:users", "email"); Ok(()) }
/// }
///
/// let stage = Stage::new("schema").change(CreateIndex);
/// assert_eq!(stage.len(), 1);
/// ```
#[derive(Clone)]
pub struct Stage {
    pub(crate) id: String,
    pub(crate) changes: Vec<Arc<dyn UnboundChange>>,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("id", &self.id)
            .field(
                "changes",
                &self
                    .changes
                    .iter()
                    .map(|c| &c.meta().id)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Stage {
    /// An empty stage.
    pub fn new(id: impl Into<String>) -> Self {
        Stage {
            id: id.into(),
            changes: Vec::new(),
        }
    }

    /// Adds a change (builder style).
    pub fn change<C: Change>(mut self, change: C) -> Self {
        self.add(change);
        self
    }

    /// Adds a change.
    pub fn add<C: Change>(&mut self, change: C) -> &mut Self {
        self.add_shared(Arc::new(change))
    }

    /// Adds a change shared with other pipelines (e.g. several runners in one process).
    pub fn add_shared<C: Change>(&mut self, change: Arc<C>) -> &mut Self {
        let meta = Arc::new(change.meta());
        self.changes.push(Arc::new(Unbound { change, meta }));
        self
    }

    /// The stage id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// Whether the stage has no changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

pub(crate) trait UnboundChange: Send + Sync {
    /// Read once, when the change was added to its stage; shared with the
    /// planned change (no copy per runner built).
    fn meta(&self) -> &Arc<ChangeMeta>;
    fn target_type(&self) -> TypeId;
    fn target_type_name(&self) -> &'static str;
    fn bind(&self, target: &Arc<dyn Any + Send + Sync>) -> Option<Arc<dyn BoundChange>>;
}

struct Unbound<C: Change> {
    change: Arc<C>,
    meta: Arc<ChangeMeta>,
}

impl<C: Change> UnboundChange for Unbound<C> {
    fn meta(&self) -> &Arc<ChangeMeta> {
        &self.meta
    }
    fn target_type(&self) -> TypeId {
        TypeId::of::<C::Target>()
    }
    fn target_type_name(&self) -> &'static str {
        std::any::type_name::<C::Target>()
    }
    fn bind(&self, target: &Arc<dyn Any + Send + Sync>) -> Option<Arc<dyn BoundChange>> {
        let target = target.clone().downcast::<C::Target>().ok()?;
        Some(Arc::new(Bound {
            change: self.change.clone(),
            target,
        }))
    }
}
