//! The MongoDB implementation under test, shared by the test binaries. Each
//! namespace is a fresh database; separate-transaction targets live in a
//! second database `<ns>_t`.
#![allow(dead_code)]

use std::sync::Arc;

use flamingock_core::{AuditStore, LockProvider};
use flamingock_mongodb::mongodb::bson::{doc, Bson, Document};
use flamingock_mongodb::mongodb::Client;
use flamingock_mongodb::{MongoAuditStore, MongoContext, MongoTarget};
use flamingock_test_support::audit_suite::AuditStoreUnderTest;
use flamingock_test_support::bad_input_suite::{BadInputUnderTest, Misshapen, Unprepared};
use flamingock_test_support::lock_suite::LockUnderTest;
use flamingock_test_support::pipeline_suite::{
    PipelineCapabilities, PipelineEnv, PipelineUnderTest,
};
use flamingock_test_support::{require_service, services, BoxError};
use futures::future::BoxFuture;

/// The backend under test; `no_transactions`: the suites expect the protocol
/// for servers without transactions, forced on a replica set (`force`) or
/// detected on a standalone server.
#[derive(Debug, Clone)]
pub struct Mongo {
    url: String,
    no_transactions: bool,
    force: bool,
    /// Rounds of the pipeline suite's concurrency check (`None`: the default).
    repetitions: Option<usize>,
    /// A private server of this backend, stopped when the last clone goes.
    keep: Option<Keep>,
}

/// Something kept alive with the backend (a private server), opaque.
#[derive(Clone)]
pub struct Keep(pub Arc<dyn std::any::Any + Send + Sync>);

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keep(..)")
    }
}

impl Mongo {
    /// The server at `url` (with transactions), keeping `keep` running while
    /// any clone lives; the concurrency check runs `repetitions` rounds.
    pub fn private(url: String, keep: Keep, repetitions: usize) -> Mongo {
        Mongo {
            url,
            no_transactions: false,
            force: false,
            repetitions: Some(repetitions),
            keep: Some(keep),
        }
    }
}

impl Mongo {
    async fn client(&self) -> Result<Client, BoxError> {
        Ok(Client::with_uri_str(&self.url).await?)
    }

    async fn store(&self, ns: &str) -> Result<MongoAuditStore, BoxError> {
        let store = MongoAuditStore::builder(self.client().await?, ns)
            .assume_no_transactions(self.no_transactions && self.force)
            .build()
            .await?;
        if store.transactions() == self.no_transactions {
            return Err(format!(
                "{}: the store detected transactions={}, the suite expects {}",
                self.url,
                store.transactions(),
                !self.no_transactions
            )
            .into());
        }
        Ok(store)
    }

    async fn drop_all(&self, ns: &str) -> Result<(), BoxError> {
        let client = self.client().await?;
        client.database(ns).drop().await?;
        client.database(&format!("{ns}_t")).drop().await?;
        Ok(())
    }
}

pub async fn mongo() -> Option<Mongo> {
    Some(Mongo {
        url: require_service(&services::MONGODB),
        no_transactions: false,
        force: false,
        repetitions: None,
        keep: None,
    })
}

pub async fn mongo_without_transactions() -> Option<Mongo> {
    Some(Mongo {
        url: require_service(&services::MONGODB),
        no_transactions: true,
        force: true,
        repetitions: None,
        keep: None,
    })
}

/// A standalone server (no replica set): the store finds out by itself.
pub async fn mongo_standalone() -> Option<Mongo> {
    Some(Mongo {
        url: require_service(&services::MONGODB_STANDALONE),
        no_transactions: true,
        force: false,
        repetitions: None,
        keep: None,
    })
}

#[flamingock_core::async_trait]
impl AuditStoreUnderTest for Mongo {
    async fn open(&self, ns: &str) -> Result<Arc<dyn AuditStore>, BoxError> {
        Ok(Arc::new(self.store(ns).await?))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_all(ns).await
    }
}

#[flamingock_core::async_trait]
impl LockUnderTest for Mongo {
    async fn open(&self, ns: &str) -> Result<Arc<dyn LockProvider>, BoxError> {
        Ok(Arc::new(self.store(ns).await?.lock()))
    }
    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_all(ns).await
    }
}

#[flamingock_core::async_trait]
impl PipelineUnderTest for Mongo {
    type Target = MongoTarget;

    async fn open(&self, ns: &str) -> Result<PipelineEnv<MongoTarget>, BoxError> {
        let store = self.store(ns).await?;
        let env = if self.no_transactions {
            // Without transactions only non-transactional changes can run:
            // the suite then drives the store through its dependency target.
            PipelineEnv {
                store: Arc::new(store.clone()),
                lock: Arc::new(store.lock()),
                shared: None,
                separate_marker: None,
                separate: None,
            }
        } else {
            let elsewhere = format!("{ns}_t");
            let other = self.client().await?;
            let marker = MongoTarget::builder("separate-marker", other.clone(), &elsewhere)
                .build()
                .await?;
            let separate = MongoTarget::builder("separate", other, &elsewhere)
                .marker(false)
                .build()
                .await?;
            PipelineEnv {
                store: Arc::new(store.clone()),
                lock: Arc::new(store.lock()),
                shared: Some(
                    store
                        .shared_target("shared")
                        .build()
                        .await
                        .expect("shared target"),
                ),
                separate_marker: Some(marker),
                separate: Some(separate),
            }
        };
        Ok(env)
    }

    fn bump<'a>(ctx: &'a mut MongoContext, key: &'a str) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            ctx.db()
                .collection::<Document>("counters")
                .update_one(doc! { "_id": key }, doc! { "$inc": { "n": 1_i64 } })
                .upsert(true)
                .session(ctx.session())
                .await?;
            Ok(())
        })
    }

    async fn count(&self, target: &MongoTarget, key: &str) -> Result<u64, BoxError> {
        let doc = target
            .database()
            .collection::<Document>("counters")
            .find_one(doc! { "_id": key })
            .await?;
        Ok(match doc.as_ref().and_then(|d| d.get("n")) {
            None => 0,
            Some(Bson::Int64(n)) => u64::try_from(*n)?,
            Some(Bson::Int32(n)) => u64::try_from(*n)?,
            Some(other) => return Err(format!("counter {key} is {other}").into()),
        })
    }

    async fn cleanup(&self, ns: &str) -> Result<(), BoxError> {
        self.drop_all(ns).await
    }

    async fn footprint(&self, ns: &str) -> Result<Vec<String>, BoxError> {
        let client = self.client().await?;
        let mut found = Vec::new();
        for db in [ns.to_owned(), format!("{ns}_t")] {
            let mut names = client.database(&db).list_collection_names().await?;
            names.retain(|n| n != "counters");
            names.sort();
            found.extend(names.into_iter().map(|n| format!("{db}.{n}")));
        }
        Ok(found)
    }

    fn capabilities(&self) -> PipelineCapabilities {
        // The concurrency check matters most with transactions; the
        // non-transactional protocol gets fewer repetitions to keep CI short.
        let reps = self
            .repetitions
            .unwrap_or(if self.no_transactions { 10 } else { 30 });
        let mut caps = PipelineCapabilities::default()
            .runners(16)
            .repetitions(reps);
        // SecantusDB is one Python process: with 16 runners polling for the
        // lock, a lease refresh can take most of a second, and the suite's
        // default 1.2 s lease (refresh every 0.4 s, stop below 0.3 s left)
        // then ends runs with LeaseLost. A longer lease keeps the check about
        // exactly-once rather than about the server's latency.
        caps.lease = std::time::Duration::from_millis(2500);
        caps
    }
}

#[flamingock_core::async_trait]
impl BadInputUnderTest for Mongo {
    async fn corrupt_state(&self, ns: &str, id: &str, bad: &str) -> Result<String, BoxError> {
        self.client()
            .await?
            .database(ns)
            .collection::<Document>("flamingock_audit_current")
            .update_one(doc! { "_id": id }, doc! { "$set": { "state": bad } })
            .await?;
        Ok("flamingock_audit_current".into())
    }

    async fn open_without_auto_create(&self, ns: &str) -> Result<Unprepared, BoxError> {
        let store = MongoAuditStore::builder(self.client().await?, ns)
            .auto_create(false)
            .build()
            .await?;
        Ok(Unprepared {
            store: Arc::new(store),
            names: [
                "flamingock_audit_history",
                "flamingock_audit_current",
                "flamingock_fence",
                "flamingock_lock",
            ]
            .map(String::from)
            .to_vec(),
            ddl: None,
        })
    }

    async fn misshape(&self, _ns: &str) -> Result<Misshapen, BoxError> {
        Err("MongoDB collections have no shape to get wrong".into())
    }

    async fn connect_as(&self, user: &str, secret: &str) -> Result<String, BoxError> {
        let rest = self
            .url
            .strip_prefix("mongodb://")
            .ok_or("a mongodb:// URL")?;
        let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
        let bad = format!("mongodb://{user}:{secret}@{rest}");
        let bad = if bad.contains('?') {
            format!("{bad}&serverSelectionTimeoutMS=3000")
        } else {
            format!("{bad}?serverSelectionTimeoutMS=3000")
        };
        match MongoAuditStore::connect(&services::with_path(&bad, "whatever")).await {
            Ok(_) => Err(format!("connected as {user}").into()),
            Err(e) => Ok(format!("{e} {e:?}")),
        }
    }
}
