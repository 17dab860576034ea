//! Graceful stop: a request, shared by the run and its background tasks,
//! that the runner checks between changes and while it waits.

use std::future::Future;

use tokio::sync::watch;

/// The runner's view of a shutdown request. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Sets the request.
#[derive(Debug)]
pub(crate) struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A request and its trigger.
    pub(crate) fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger { tx }, Shutdown { rx })
    }

    /// A request that never comes (plain `run()`).
    pub(crate) fn never() -> Shutdown {
        // The sender is dropped at once: `requested` then never completes.
        let (_, rx) = watch::channel(false);
        Shutdown { rx }
    }

    /// Whether a stop was requested.
    pub(crate) fn is_requested(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes when a stop is requested (never, when none can come).
    pub(crate) fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.rx.clone();
        async move {
            if rx.wait_for(|v| *v).await.is_err() {
                // The trigger is gone without firing: no request can come.
                std::future::pending::<()>().await;
            }
        }
    }
}

impl ShutdownTrigger {
    /// Requests the stop.
    pub(crate) fn fire(&self) {
        let _ = self.tx.send(true);
    }
}
