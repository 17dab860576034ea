//! The fenced lease lock on one MongoDB document.

use std::time::Duration;

use chrono::{DateTime, Utc};
use flamingock_core::{async_trait, Acquire, Lease, LockError, LockInfo, LockProvider};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::Error as DriverError;
use mongodb::options::ReturnDocument;
use mongodb::{Client, Collection};

use crate::codec::{self, Reader};

/// A fenced lease lock: one document `{_id, owner, token, expiresAt}` in a
/// collection (`<prefix>_lock` when taken from
/// [`MongoAuditStore::lock`](crate::MongoAuditStore::lock)).
///
/// * Acquire is one `findOneAndUpdate` with upsert whose filter matches a
///   free, expired or own lock and whose update pipeline increments `token`
///   and sets `expiresAt = $$NOW + lease`: expiry is judged by the server's
///   clock. A duplicate-key error on `_id` means the lock is held; the holder
///   is read and returned as [`Acquire::Held`].
/// * `extend` and `release` are conditional on owner and token; `release`
///   sets `owner: null` and keeps `token`, so tokens keep increasing across
///   releases, expiries and force releases.
#[derive(Debug, Clone)]
pub struct MongoLock {
    coll: Collection<Document>,
    id: String,
    describe: String,
}

/// Configures a standalone [`MongoLock`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MongoLockBuilder {
    client: Client,
    database: String,
    prefix: String,
}

impl MongoLockBuilder {
    /// Prefix of the lock's collection, `<prefix>_lock` (default `flamingock`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Checks the names. Does no I/O.
    pub async fn build(self) -> Result<MongoLock, LockError> {
        flamingock_core::names::plain_identifier("database", &self.database, &['-'], 63)
            .and_then(|()| {
                flamingock_core::names::plain_identifier(
                    "collection prefix",
                    &self.prefix,
                    &[],
                    100,
                )
            })
            .map_err(|e| LockError::InvalidConfig {
                lock: format!("mongodb-lock({}.{}_lock)", self.database, self.prefix),
                detail: e.to_string(),
            })?;
        let coll = self
            .client
            .database(&self.database)
            .collection(&format!("{}_lock", self.prefix));
        Ok(MongoLock::in_collection(coll, &self.prefix))
    }
}

impl MongoLock {
    /// A builder for a standalone lock in database `database` of `client`
    /// (the audit store's own comes from
    /// [`MongoAuditStore::lock`](crate::MongoAuditStore::lock)).
    pub fn builder(client: Client, database: impl Into<String>) -> MongoLockBuilder {
        MongoLockBuilder {
            client,
            database: database.into(),
            prefix: "flamingock".to_owned(),
        }
    }

    pub(crate) fn in_collection(coll: Collection<Document>, name: &str) -> Self {
        let describe = format!(
            "mongodb-lock({}.{}/{name})",
            coll.namespace().db,
            coll.name()
        );
        MongoLock {
            coll,
            id: name.to_owned(),
            describe,
        }
    }

    fn backend(&self, operation: &'static str) -> impl FnOnce(DriverError) -> LockError + '_ {
        move |e| LockError::Backend {
            lock: self.describe.clone(),
            operation,
            source: crate::explain::boxed(e),
        }
    }

    fn lost(&self, owner: &str, token: u64) -> LockError {
        LockError::Lost {
            lock: self.describe.clone(),
            owner: owner.to_owned(),
            token,
        }
    }

    fn malformed(&self, detail: String) -> LockError {
        LockError::Malformed {
            lock: self.describe.clone(),
            detail,
        }
    }

    fn lease_ms(&self, lease: Duration) -> Result<i64, LockError> {
        i64::try_from(lease.as_millis()).map_err(|_| LockError::Backend {
            lock: self.describe.clone(),
            operation: "acquire",
            source: format!("lease {lease:?} is too long").into(),
        })
    }

    fn token_bson(&self, token: u64) -> Result<Bson, LockError> {
        codec::u64_to_bson(token).ok_or_else(|| self.malformed(format!("token {token} too large")))
    }

    /// The lock document with the server's clock, `None` when there is none.
    async fn read(&self) -> Result<Option<(Document, DateTime<Utc>)>, LockError> {
        let docs: Vec<Document> = self
            .coll
            .aggregate(vec![
                doc! { "$match": { "_id": &self.id } },
                doc! { "$addFields": { "__now": "$$NOW" } },
            ])
            .await
            .map_err(self.backend("read lock"))?
            .try_collect()
            .await
            .map_err(self.backend("read lock"))?;
        let Some(mut d) = docs.into_iter().next() else {
            return Ok(None);
        };
        let now = match d.remove("__now") {
            Some(Bson::DateTime(t)) => codec::from_bson_date(t),
            _ => None,
        }
        .ok_or_else(|| self.malformed("the server returned no $$NOW".into()))?;
        Ok(Some((d, now)))
    }

    /// Holder info of a lock document; `None` when it has no owner.
    fn info(&self, d: &Document, now: DateTime<Utc>) -> Result<Option<LockInfo>, LockError> {
        let r = Reader::new(self.coll.name(), d);
        let bad = |detail: String| self.malformed(format!("{}: {detail}", r.what));
        let owner = r.opt_str("owner").map_err(bad)?;
        let Some(owner) = owner else { return Ok(None) };
        let token = r.u64("token").map_err(bad)?;
        let expires_at = r.date("expiresAt").map_err(bad)?;
        Ok(Some(LockInfo::new(
            owner,
            token,
            expires_at,
            expires_at <= now,
        )))
    }

    fn lease_of(&self, d: &Document) -> Result<Lease, LockError> {
        let r = Reader::new(self.coll.name(), d);
        let bad = |detail: String| self.malformed(format!("{}: {detail}", r.what));
        Ok(Lease::new(
            r.u64("token").map_err(bad)?,
            r.date("expiresAt").map_err(bad)?,
        ))
    }

    /// After a failed write: a malformed lock document explains it better
    /// than the server's type error.
    async fn explain(&self, err: LockError) -> LockError {
        if let Ok(Some((d, now))) = self.read().await {
            if let Err(m @ LockError::Malformed { .. }) = self.info(&d, now) {
                return m;
            }
        }
        err
    }
}

#[async_trait]
impl LockProvider for MongoLock {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn stall_hint(&self) -> Option<String> {
        Some(crate::store::STALL_HINT.to_owned())
    }

    async fn try_acquire(&self, owner: &str, lease: Duration) -> Result<Acquire, LockError> {
        let ms = self.lease_ms(lease)?;
        // Expiry compares `$toLong` of both dates rather than the dates
        // themselves: equivalent on MongoDB, and correct on SecantusDB,
        // which compares `$$NOW` with stored dates wrongly (crate docs).
        let filter = doc! {
            "_id": &self.id,
            "$or": [
                { "owner": Bson::Null },
                { "owner": owner },
                { "$expr": { "$lte": [ { "$toLong": "$expiresAt" }, { "$toLong": "$$NOW" } ] } },
            ],
        };
        let update = vec![doc! { "$set": {
            "owner": owner,
            "token": { "$add": [ { "$ifNull": [ "$token", 0_i64 ] }, 1_i64 ] },
            "expiresAt": { "$add": [ "$$NOW", ms ] },
        } }];
        // A holder that releases between our failed upsert and our read
        // leaves nothing to report: try again a few times.
        for _ in 0..3 {
            let res = self
                .coll
                .find_one_and_update(filter.clone(), update.clone())
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            match res {
                Ok(Some(d)) => return self.lease_of(&d).map(Acquire::Acquired),
                Err(e) if !codec::is_duplicate_key(&e) => {
                    let err = self.backend("acquire")(e);
                    return Err(self.explain(err).await);
                }
                // The filter missed: held by someone else. MongoDB answers the
                // upsert with a duplicate key on `_id`; SecantusDB sometimes
                // with no document when upserts race. Same meaning.
                Ok(None) | Err(_) => {
                    if let Some((d, now)) = self.read().await? {
                        if let Some(info) = self.info(&d, now)? {
                            if !info.expired && info.owner != owner {
                                return Ok(Acquire::Held(info));
                            }
                        }
                    }
                }
            }
        }
        Err(LockError::Backend {
            lock: self.describe.clone(),
            operation: "acquire",
            source: "the lock document kept changing between attempts".into(),
        })
    }

    async fn extend(&self, owner: &str, token: u64, lease: Duration) -> Result<Lease, LockError> {
        let ms = self.lease_ms(lease)?;
        let res = self
            .coll
            .find_one_and_update(
                doc! { "_id": &self.id, "owner": owner, "token": self.token_bson(token)? },
                vec![doc! { "$set": { "expiresAt": { "$add": [ "$$NOW", ms ] } } }],
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(self.backend("extend"))?;
        match res {
            Some(d) => self.lease_of(&d),
            None => Err(self.lost(owner, token)),
        }
    }

    async fn release(&self, owner: &str, token: u64) -> Result<(), LockError> {
        let res = self
            .coll
            .update_one(
                doc! { "_id": &self.id, "owner": owner, "token": self.token_bson(token)? },
                doc! { "$set": { "owner": Bson::Null } },
            )
            .await
            .map_err(self.backend("release"))?;
        if res.matched_count == 0 {
            return Err(self.lost(owner, token));
        }
        Ok(())
    }

    async fn inspect(&self) -> Result<Option<LockInfo>, LockError> {
        match self.read().await? {
            Some((d, now)) => self.info(&d, now),
            None => Ok(None),
        }
    }

    async fn force_release(&self) -> Result<Option<LockInfo>, LockError> {
        let before = self.inspect().await?;
        let Some(info) = before else { return Ok(None) };
        // Conditional on the holder we report, so we never report one and
        // remove another.
        let res = self
            .coll
            .update_one(
                doc! { "_id": &self.id, "owner": &info.owner, "token": self.token_bson(info.token)? },
                doc! { "$set": { "owner": Bson::Null } },
            )
            .await
            .map_err(self.backend("force release"))?;
        if res.matched_count == 0 {
            // Changed hands meanwhile: report what is removed now.
            return Box::pin(self.force_release()).await;
        }
        Ok(Some(info))
    }
}
