//! Lifecycle events delivered to listeners registered on the builder.

use std::time::Duration;

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
