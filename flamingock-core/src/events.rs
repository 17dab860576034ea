//! Lifecycle events delivered to listeners registered on the builder.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A lifecycle event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A run began.
    PipelineStarted {
        /// Run id.
        run_id: String,
    },
    /// A run finished successfully.
    PipelineCompleted {
        /// Run id.
        run_id: String,
        /// Changes applied.
        applied: usize,
    },
    /// A run ended with an error.
    PipelineFailed {
        /// Run id.
        run_id: String,
        /// The error.
        error: String,
    },
    /// A stage began executing.
    StageStarted {
        /// Stage id.
        stage: String,
    },
    /// A stage finished.
    StageCompleted {
        /// Stage id.
        stage: String,
    },
    /// A stage stopped on a failure or a blocked change.
    StageFailed {
        /// Stage id.
        stage: String,
        /// Why.
        error: String,
    },
    /// A change began executing.
    ChangeStarted {
        /// Change id.
        change_id: String,
    },
    /// A change was applied.
    ChangeApplied {
        /// Change id.
        change_id: String,
        /// How long it took.
        duration: Duration,
    },
    /// A change failed.
    ChangeFailed {
        /// Change id.
        change_id: String,
        /// The error.
        error: String,
    },
    /// A change's effects were undone.
    ChangeRolledBack {
        /// Change id.
        change_id: String,
    },
    /// This runner found the lock held and is waiting: sent when the wait
    /// starts and then every [`LockConfig::report_every`](crate::LockConfig::report_every).
    LockWaiting {
        /// Lock description.
        lock: String,
        /// The current holder's owner id.
        holder: String,
        /// When the holder's lease ends (the lock store's clock).
        expires_at: DateTime<Utc>,
        /// How long this runner has waited so far.
        waited: Duration,
    },
    /// This runner took the lock.
    LockAcquired {
        /// Lock description.
        lock: String,
        /// The lock's token.
        token: u64,
        /// How long it waited.
        waited: Duration,
    },
    /// A refresh succeeded, but so late that the lease had less than the
    /// safety margin left (a slow lock service, a paused process).
    LeaseExtendedLate {
        /// Lock description.
        lock: String,
        /// The lock's token.
        token: u64,
        /// What was left of the lease when the refresh was sent.
        left: Duration,
    },
    /// The lease is not this runner's any more; it stops before its next write.
    LeaseLost {
        /// Lock description.
        lock: String,
        /// The lock's token.
        token: u64,
        /// What the lock service said.
        detail: String,
    },
    /// This runner released the lock.
    LockReleased {
        /// Lock description.
        lock: String,
        /// The lock's token.
        token: u64,
    },
    /// A shutdown was requested: the runner takes no new change, lets the
    /// current one finish or roll back, records it and releases the lock.
    ShutdownRequested {
        /// What the runner is doing about it.
        detail: String,
    },
}

/// Receives events. Called inline: keep it quick, hand heavy work to a channel.
pub trait EventListener: Send + Sync + 'static {
    /// Called for every event.
    fn on_event(&self, event: &Event);
}

impl<F: Fn(&Event) + Send + Sync + 'static> EventListener for F {
    fn on_event(&self, event: &Event) {
        self(event)
    }
}

/// The listeners of one runner, shareable with its background tasks.
#[derive(Clone, Default)]
pub(crate) struct Emitter(Arc<[Arc<dyn EventListener>]>);

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Emitter({} listeners)", self.0.len())
    }
}

impl Emitter {
    pub(crate) fn new(listeners: Vec<Arc<dyn EventListener>>) -> Self {
        Emitter(listeners.into())
    }

    pub(crate) fn emit(&self, event: Event) {
        for l in self.0.iter() {
            l.on_event(&event);
        }
    }
}
