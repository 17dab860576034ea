//! The registry of open transactions' sessions, so that the next lock
//! holder can kill the transactions of a runner that was killed or lost its
//! lease: MongoDB keeps such a transaction (and the documents it wrote)
//! until `transactionLifetimeLimitSeconds`, and SecantusDB forever, so the
//! next runner's transactions on the same documents would fail with
//! `WriteConflict` meanwhile.

use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Error as DriverError;
use mongodb::{Client, Collection};
use tracing::{debug, warn};

/// The longest one clean-up spends killing stale transactions.
pub(crate) const KILL_BOUND: Duration = Duration::from_secs(5);

/// Records the session of a transaction that is about to run a change.
pub(crate) async fn register(
    coll: &Collection<Document>,
    lsid: &Document,
) -> Result<(), DriverError> {
    coll.insert_one(doc! { "_id": lsid.clone(), "at": mongodb::bson::DateTime::now() })
        .await
        .map(|_| ())
}

/// Forgets a session once its transaction has ended.
pub(crate) async fn unregister(coll: &Collection<Document>, lsid: &Document) {
    if let Err(e) = coll.delete_one(doc! { "_id": lsid.clone() }).await {
        warn!(error = %e, "could not unregister a finished transaction's session");
    }
}

/// Kills every registered session (`killSessions`) and forgets them, within
/// [`KILL_BOUND`]. Only called by a runner that holds the lock and has not
/// started a change yet: every registered transaction is then a stale one.
/// Best effort: fencing, not this, is what makes a stale commit impossible.
pub(crate) async fn kill_registered(client: &Client, coll: &Collection<Document>) {
    if tokio::time::timeout(KILL_BOUND, kill(client, coll))
        .await
        .is_err()
    {
        warn!(
            "killing the sessions of stale transactions did not finish within {KILL_BOUND:?}; \
             the server aborts them after its transaction lifetime limit"
        );
    }
}

async fn kill(client: &Client, coll: &Collection<Document>) {
    let ids: Vec<Bson> = match coll.find(doc! {}).await {
        Ok(cursor) => match cursor.try_collect::<Vec<Document>>().await {
            Ok(docs) => docs
                .into_iter()
                .filter_map(|mut d| d.remove("_id"))
                .collect(),
            Err(e) => {
                warn!(error = %e, "could not list open transactions");
                return;
            }
        },
        Err(e) => {
            warn!(error = %e, "could not list open transactions");
            return;
        }
    };
    if ids.is_empty() {
        return;
    }
    debug!(
        count = ids.len(),
        "aborting transactions of runners that lost their lease"
    );
    let kill = client
        .database("admin")
        .run_command(doc! { "killSessions": ids.clone() })
        .await;
    if let Err(e) = kill {
        warn!(error = %e, "could not kill the sessions of stale transactions");
        return;
    }
    if let Err(e) = coll.delete_many(doc! { "_id": { "$in": ids } }).await {
        warn!(error = %e, "could not unregister killed sessions");
    }
}
