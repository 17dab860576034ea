//! MongoDB's own bad input and failures: an unreachable server, documents
//! of the wrong shape, a server without transactions, and a server killed in
//! the middle of a run (the checks every backend shares, wrong credentials
//! and missing collections among them, are the bad-input suite's, in
//! `tests/conformance.rs`).

use flamingock_core::error::ErrorChain as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flamingock_core::{
    AuditEntry, AuditState, AuditStore, Change, ChangeMeta, ChangeResult, Error, Flamingock,
    LockError, LockProvider, Stage, StoreError, TargetSystem, TxStrategy,
};
use flamingock_mongodb::mongodb::bson::{doc, Document};
use flamingock_mongodb::mongodb::options::IndexOptions;
use flamingock_mongodb::mongodb::{Client, IndexModel};
use flamingock_mongodb::{MongoAuditStore, MongoContext, MongoTarget};
use flamingock_test_support::{namespace, require_service, services};

fn url() -> Option<String> {
    Some(require_service(&services::MONGODB))
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" / ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

struct Db {
    client: Client,
    ns: String,
}

impl Db {
    async fn new(url: &str) -> Db {
        Db {
            client: Client::with_uri_str(url).await.expect("client"),
            ns: namespace("err"),
        }
    }
    fn coll(&self, name: &str) -> flamingock_mongodb::mongodb::Collection<Document> {
        self.client.database(&self.ns).collection(name)
    }
    async fn drop(self) {
        self.client
            .database(&self.ns)
            .drop()
            .await
            .expect("drop database");
    }
}

#[tokio::test]
async fn unreachable_server_fails_fast_with_a_clear_error() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let started = Instant::now();
    let err = MongoAuditStore::connect(&flamingock_test_support::services::with_path(
        &format!("mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=500"),
        "app",
    ))
    .await
    .expect_err("nothing listens there");
    let text = chain(&err);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        text.contains("handshake") && text.contains(&port.to_string()),
        "{text}"
    );
}

#[tokio::test]
async fn malformed_documents_are_reported_with_collection_and_id() {
    let Some(url) = url() else { return };
    let db = Db::new(&url).await;
    let store = MongoAuditStore::builder(db.client.clone(), &db.ns)
        .build()
        .await
        .expect("store");
    store.prepare().await.expect("prepare");

    db.coll("flamingock_audit_current")
        .insert_one(doc! { "_id": "bad-change", "state": 42 })
        .await
        .expect("insert");
    for err in [
        store.snapshot().await.expect_err("malformed current"),
        store
            .append(&AuditEntry::new("bad-change", AuditState::Applied, 0))
            .await
            .expect_err("append over a malformed current state"),
    ] {
        let text = err.chain().to_string();
        assert!(matches!(err, StoreError::Malformed { .. }), "{text}");
        assert!(
            text.contains("flamingock_audit_current") && text.contains("bad-change"),
            "{text}"
        );
    }
    assert!(
        store
            .history(&flamingock_core::HistoryFilter::all())
            .await
            .expect("history")
            .is_empty(),
        "the refused append left nothing"
    );

    db.coll("flamingock_audit_history")
        .insert_one(doc! { "_id": "odd", "change_id": "x", "state": "APPLIED" })
        .await
        .expect("insert");
    let err = store
        .history(&flamingock_core::HistoryFilter::all())
        .await
        .expect_err("malformed history");
    assert!(
        matches!(&err, StoreError::Malformed { what, .. } if what.contains("flamingock_audit_history") && what.contains("odd")),
        "{err}"
    );

    // A prepared store already has its fence document (it holds the
    // summary): replace it.
    db.coll("flamingock_fence")
        .replace_one(
            doc! { "_id": "fence" },
            doc! { "_id": "fence", "fence": "seven" },
        )
        .upsert(true)
        .await
        .expect("replace");
    let err = store.fence().await.expect_err("malformed fence");
    assert!(
        matches!(&err, StoreError::Malformed { what, .. } if what.contains("flamingock_fence")),
        "{err}"
    );
    let err = store
        .claim_fence()
        .await
        .expect_err("claim over a malformed fence");
    assert!(matches!(err, StoreError::Malformed { .. }), "{err}");

    db.coll("flamingock_lock")
        .insert_one(doc! {
            "_id": "flamingock",
            "owner": "someone",
            "token": "seven",
            "expiresAt": flamingock_mongodb::mongodb::bson::DateTime::from_millis(
                chrono::Utc::now().timestamp_millis() + 60_000
            ),
        })
        .await
        .expect("insert");
    let lock = store.lock();
    let err = lock.inspect().await.expect_err("malformed lock");
    assert!(
        matches!(&err, LockError::Malformed { detail, .. } if detail.contains("token")),
        "{err}"
    );
    let err = lock
        .try_acquire("me", Duration::from_secs(5))
        .await
        .expect_err("acquire over a malformed lock");
    assert!(matches!(err, LockError::Malformed { .. }), "{err}");
    db.drop().await;
}

struct NeedsTx;
impl Change for NeedsTx {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("seed").order("0002")
    }
    async fn apply(&self, _ctx: &mut MongoContext) -> ChangeResult {
        Ok(())
    }
}

/// Index builds cannot run in a transaction: a non-transactional change.
struct EmailIndex;
impl Change for EmailIndex {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("email-index")
            .order("0001")
            .transactional(false)
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        assert!(!ctx.in_transaction());
        ctx.db()
            .collection::<Document>("users")
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(IndexOptions::builder().unique(true).build())
                    .build(),
            )
            .session(ctx.session())
            .await?;
        Ok(())
    }
}

async fn check_without_transactions(store: MongoAuditStore, target: MongoTarget, ns: &str) {
    let caps = target.capabilities();
    assert!(!caps.transactions);
    let why = caps.transactions_unavailable.expect("a reason");
    assert!(
        why.contains("replica set") && why.contains(".transactional(false)"),
        "{why}"
    );
    let err = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .stage(Stage::new("s").change(EmailIndex).change(NeedsTx))
        .build()
        .expect_err("a transactional change on a server without transactions");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::Validation(_)), "{text}");
    assert!(
        text.contains("seed") && !text.contains("email-index"),
        "{text}"
    );

    let report = Flamingock::builder()
        .audit_store(store.clone())
        .target(target)
        .stage(Stage::new("s").change(EmailIndex))
        .build()
        .expect("non-transactional changes are fine")
        .run()
        .await
        .expect("run");
    assert_eq!(report.applied(), ["email-index"]);
    let entry = store
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .find(|e| e.change_id == "email-index")
        .expect("audited");
    assert_eq!(entry.tx_strategy, TxStrategy::NonTransactional);
    let names = store
        .client()
        .database(ns)
        .collection::<Document>("users")
        .list_index_names()
        .await
        .expect("indexes");
    assert!(names.iter().any(|n| n.starts_with("email")), "{names:?}");
}

#[tokio::test]
async fn forced_no_transactions_fails_validation_and_runs_non_transactional_changes() {
    let Some(url) = url() else { return };
    let db = Db::new(&url).await;
    let store = MongoAuditStore::builder(db.client.clone(), &db.ns)
        .assume_no_transactions(true)
        .build()
        .await
        .expect("store");
    assert!(!store.transactions());
    check_without_transactions(
        store.clone(),
        store
            .shared_target("app-db")
            .build()
            .await
            .expect("shared target"),
        &db.ns,
    )
    .await;
    db.drop().await;
}

// ---- Tests on a private server this test starts (and kills) ----

/// The SecantusDB executable for private servers: `FLAMINGOCK_TEST_SECANTUSD`,
/// else `secantusd-py` on `PATH`; without either the test fails saying how to
/// provide one, as
/// `require_service` does for endpoints.
fn secantusd() -> Option<PathBuf> {
    const VAR: &str = "FLAMINGOCK_TEST_SECANTUSD";
    if let Some(p) = std::env::var_os(VAR).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("secantusd-py"))
            .find(|f| f.is_file())
    }) {
        return Some(found);
    }
    panic!(
        "this test starts and kills a private SecantusDB server, but {VAR} is unset and \
         secantusd-py is not on PATH: run `bash scripts/test.sh`, or export \
         {VAR}=/path/to/venv/bin/secantusd-py (pip install SecantusDB in a virtualenv)"
    )
}

/// A SecantusDB process on a free port, killed when dropped.
struct Server {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
    extra: Vec<&'static str>,
}

impl Server {
    async fn start(bin: PathBuf, extra: &[&'static str]) -> Server {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let dir = std::env::temp_dir().join(format!("flamingock-mongo-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("secantusd.toml"), "").expect("empty config");
        let child = Self::spawn(&bin, port, &dir, extra);
        let server = Server {
            child,
            port,
            dir,
            bin,
            extra: extra.to_vec(),
        };
        server.wait_ready().await;
        server
    }

    fn spawn(
        bin: &PathBuf,
        port: u16,
        dir: &std::path::Path,
        extra: &[&str],
    ) -> tokio::process::Child {
        tokio::process::Command::new(bin)
            .arg("--config")
            .arg(dir.join("secantusd.toml"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.join("data"))
            .args(extra)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start secantusd-py")
    }

    fn url(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/?directConnection=true&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000",
            self.port
        )
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) = Client::with_uri_str(self.url()).await {
                if c.database("admin")
                    .run_command(doc! { "ping": 1 })
                    .await
                    .is_ok()
                {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "private SecantusDB did not start"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn kill(&mut self) {
        self.child.kill().await.expect("kill server");
    }

    /// Starts the server again on the same port and data directory.
    async fn restart(&mut self) {
        self.child = Self::spawn(&self.bin, self.port, &self.dir, &self.extra);
        self.wait_ready().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_server_is_detected_from_hello() {
    let Some(bin) = secantusd() else { return };
    let server = Server::start(bin, &["--standalone"]).await;
    let client = Client::with_uri_str(server.url()).await.expect("client");
    let store = MongoAuditStore::builder(client.clone(), "app")
        .build()
        .await
        .expect("store");
    assert!(
        !store.transactions(),
        "a standalone server has no transactions"
    );
    let target = MongoTarget::builder("other", client, "other")
        .build()
        .await
        .expect("target");
    let why = target
        .capabilities()
        .transactions_unavailable
        .expect("unavailable");
    assert!(why.contains("standalone"), "{why}");
    check_without_transactions(store, target, "other").await;
}

struct Insert {
    id: &'static str,
    order: &'static str,
    kill: Option<tokio::sync::mpsc::Sender<()>>,
}

impl Change for Insert {
    type Target = MongoTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new(self.id).order(self.order)
    }
    async fn apply(&self, ctx: &mut MongoContext) -> ChangeResult {
        ctx.db()
            .collection::<Document>("items")
            .update_one(doc! { "_id": self.id }, doc! { "$inc": { "n": 1 } })
            .upsert(true)
            .session(ctx.session())
            .await?;
        if let Some(kill) = &self.kill {
            // The server dies while this change's transaction is open.
            kill.send(()).await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_mid_run_loses_nothing_recorded() {
    let Some(bin) = secantusd() else { return };
    // SecantusDB acknowledges writes before they are durable unless asked
    // (MongoDB journals majority writes before acknowledging them).
    let mut server = Server::start(bin, &["--sync-on-commit"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let stages = |kill: Option<tokio::sync::mpsc::Sender<()>>| {
        Stage::new("s")
            .change(Insert {
                id: "one",
                order: "0001",
                kill: None,
            })
            .change(Insert {
                id: "two",
                order: "0002",
                kill,
            })
    };
    let client = Client::with_uri_str(server.url()).await.expect("client");
    let store = MongoAuditStore::builder(client.clone(), "app")
        .build()
        .await
        .expect("store");
    let runner = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("app-db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stages(Some(tx)))
        .lock_config(flamingock_core::LockConfig::default().lease(Duration::from_secs(3)))
        .build()
        .expect("build");
    let run = tokio::spawn(async move { runner.run().await });
    rx.recv().await.expect("change two started");
    server.kill().await;
    let killed_at = Instant::now();
    let result = run.await.expect("join");
    eprintln!("the run stopped {:?} after the kill", killed_at.elapsed());
    let err = result.expect_err("the server died mid-run");
    let text = chain(&err);
    eprintln!("error of the run whose server died: {text}");
    assert!(
        text.contains("two") || text.contains("app-db") || text.contains("mongodb"),
        "the error names what failed: {text}"
    );

    let restarted_at = Instant::now();
    server.restart().await;
    eprintln!("restart took {:?}", restarted_at.elapsed());
    let client = Client::with_uri_str(server.url()).await.expect("client");
    let store = MongoAuditStore::builder(client.clone(), "app")
        .build()
        .await
        .expect("store");
    let snap = store.snapshot().await.expect("snapshot after restart");
    let one = snap
        .iter()
        .find(|e| e.change_id == "one")
        .expect("one kept");
    assert_eq!(one.state, AuditState::Applied);
    assert!(
        snap.iter()
            .all(|e| e.change_id != "two" || e.state != AuditState::Applied),
        "two never committed: {snap:#?}"
    );
    // The lease of the dead run must run out before the next run goes on.
    let report = Flamingock::builder()
        .audit_store(store.clone())
        .target(
            store
                .shared_target("app-db")
                .build()
                .await
                .expect("shared target"),
        )
        .stage(stages(None))
        .lock_config(
            flamingock_core::LockConfig::default()
                .retry_interval(Duration::from_millis(200))
                .acquire_timeout(Duration::from_secs(120)),
        )
        .build()
        .expect("build")
        .run()
        .await
        .expect("run after restart");
    assert_eq!(report.applied(), ["two"]);
    let items = client.database("app").collection::<Document>("items");
    for id in ["one", "two"] {
        let d = items
            .find_one(doc! { "_id": id })
            .await
            .expect("read")
            .expect("present");
        let n = d
            .get_i32("n")
            .map(i64::from)
            .or_else(|_| d.get_i64("n"))
            .expect("a counter");
        assert_eq!(n, 1, "{id} applied exactly once");
    }
}
