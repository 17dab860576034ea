//! The audit, issue and lock commands on MongoDB and DynamoDB stores
//! (features `mongodb`, `dynamodb`; no SQL file changes there).
#![cfg(any(feature = "mongodb", feature = "dynamodb"))]

mod common;

use common::{flamingock, state_of};
use flamingock_core::{AuditEntry, AuditState, AuditStore, TxStrategy};

/// Records a non-transactional failure of `change_id`: an issue for an operator.
async fn seed_issue(store: &dyn AuditStore, change_id: &str) {
    store.prepare().await.expect("prepare");
    let mut started =
        AuditEntry::new(change_id, AuditState::Started, 1).strategy(TxStrategy::NonTransactional);
    started.stage_id = "stage".into();
    started.target_system = "broker".into();
    store.append(&started).await.expect("append STARTED");
    let mut failed = started.clone();
    failed.state = AuditState::Failed;
    failed.created_at = started.created_at + chrono::Duration::milliseconds(5);
    failed.error = Some(flamingock_core::ErrorInfo {
        message: "topic creation timed out".into(),
        chain: vec![],
    });
    store.append(&failed).await.expect("append FAILED");
}

/// The read-only commands against a store URL where nothing exists yet:
/// they answer, and (checked by the caller) create nothing.
fn reading_session(url: &str) {
    let list = flamingock(&["--store", url, "audit", "list"]);
    list.expect_code(0);
    assert!(
        list.stdout.contains("no change has been recorded here yet"),
        "{}",
        list.all()
    );
    for args in [
        &["audit", "history"][..],
        &["issue", "list"],
        &["lock", "status"],
    ] {
        let mut all = vec!["--store", url];
        all.extend_from_slice(args);
        flamingock(&all).expect_code(0);
    }
}

/// The operator commands against a store URL whose audit has one issue.
fn operator_session(url: &str) {
    let list = flamingock(&["--store", url, "audit", "list", "--json"]);
    list.expect_code(0);
    assert_eq!(
        state_of(&list.json(), "create-topic").as_deref(),
        Some("FAILED")
    );

    let issues = flamingock(&["--store", url, "issue", "list", "--json"]);
    issues.expect_code(0);
    assert_eq!(issues.json()[0]["change_id"], "create-topic");
    let get = flamingock(&["--store", url, "issue", "get", "create-topic"]);
    get.expect_code(0);
    assert!(
        get.stdout.contains("topic creation timed out"),
        "{}",
        get.all()
    );
    assert!(
        get.stdout.contains("Inspect target system 'broker'"),
        "{}",
        get.all()
    );

    let lock = flamingock(&["--store", url, "lock", "status", "--json"]);
    lock.expect_code(0);
    assert_eq!(lock.json()["held"], false);

    let fix = flamingock(&[
        "--store",
        url,
        "audit",
        "fix",
        "create-topic",
        "--resolution",
        "applied",
        "--reason",
        "the topic exists",
        "--operator",
        "ops",
    ]);
    fix.expect_code(0);
    let list = flamingock(&["--store", url, "audit", "list", "--json"]).json();
    assert_eq!(
        state_of(&list, "create-topic").as_deref(),
        Some("MANUAL_MARKED_AS_APPLIED")
    );
    let issues = flamingock(&["--store", url, "issue", "list", "--json"]).json();
    assert_eq!(issues.as_array().map(Vec::len), Some(0));
    let history = flamingock(&[
        "--store",
        url,
        "audit",
        "history",
        "--json",
        "--change",
        "create-topic",
    ])
    .json();
    assert_eq!(history.as_array().map(Vec::len), Some(3));

    // SQL files need a SQL store.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("0001__create.sql"),
        "CREATE TABLE t (x int);",
    )
    .expect("write a change file");
    let d = dir.path().display().to_string();
    let out = flamingock(&["--store", url, "--changes", &d, "plan"]);
    out.expect_code(2);
    assert!(
        out.stderr
            .contains("SQL file changes (--changes) run on a SQL store"),
        "{}",
        out.all()
    );
}

#[cfg(feature = "mongodb")]
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_store_operator_commands() {
    use flamingock_test_support::{namespace, require_service, services};
    let base = require_service(&services::MONGODB);
    let db = namespace("cli");
    let (head, query) = base
        .split_once('?')
        .map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
    let url = format!(
        "{}/{db}{}",
        head.trim_end_matches('/'),
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    let client = flamingock_mongodb::mongodb::Client::with_uri_str(&base)
        .await
        .expect("client");
    let url0 = url.clone();
    tokio::task::spawn_blocking(move || reading_session(&url0))
        .await
        .expect("reading session");
    let created = client
        .database(&db)
        .list_collection_names()
        .await
        .expect("list");
    assert!(created.is_empty(), "reading created {created:?}");
    let store = flamingock_mongodb::MongoAuditStore::builder(client.clone(), &db)
        .build()
        .await
        .expect("store");
    seed_issue(&store, "create-topic").await;
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || operator_session(&url2))
        .await
        .expect("session");
    let _ = client.database(&db).drop().await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_store_operator_commands() {
    use flamingock_dynamodb::aws_sdk_dynamodb::config::{Credentials, Region};
    use flamingock_test_support::{namespace, require_service, services};
    let endpoint = require_service(&services::DYNAMODB);
    let prefix = namespace("cli");
    let host = endpoint
        .split_once("://")
        .map_or(endpoint.as_str(), |(_, h)| h)
        .trim_end_matches('/');
    let url = format!("dynamodb://testing:testing@{host}?region=us-east-1&prefix={prefix}");
    let client = flamingock_dynamodb::connect(Some(&endpoint)).await;
    let conf = client
        .config()
        .to_builder()
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
        .build();
    let client = flamingock_dynamodb::aws_sdk_dynamodb::Client::from_conf(conf);
    let store = flamingock_dynamodb::DynamoAuditStore::builder(client.clone())
        .prefix(&prefix)
        .build()
        .await
        .expect("store");
    let url0 = url.clone();
    tokio::task::spawn_blocking(move || reading_session(&url0))
        .await
        .expect("reading session");
    let tables = client.list_tables().send().await.expect("list tables");
    let created: Vec<_> = tables
        .table_names()
        .iter()
        .filter(|t| t.starts_with(&prefix))
        .collect();
    assert!(created.is_empty(), "reading created {created:?}");
    seed_issue(&store, "create-topic").await;
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || operator_session(&url2))
        .await
        .expect("session");
    // The secret of the URL never shows.
    let out = flamingock(&[
        "--store",
        &url.replace("testing:testing", "AKIA:hunter22"),
        "-vv",
        "audit",
        "list",
    ]);
    assert!(!out.all().contains("hunter22"), "{}", out.all());
    let _ = client.delete_table().table_name(store.table()).send().await;
}

/// The store URL with the CA as a file option: a private SecantusDB with TLS
/// (`tls=true&tlsCAFile=PATH`, the driver's own options, passed through).
#[cfg(feature = "mongodb")]
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_store_over_tls() {
    use flamingock_test_support::standin_server::StandinServer;
    use flamingock_test_support::tls::TestCerts;
    let certs_dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(certs_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let server = StandinServer::secantusdb(Some(&certs)).unwrap_or_else(|e| panic!("{e}"));
    let url_with = |ca: &std::path::Path| {
        format!(
            "mongodb://localhost:{}/cli?directConnection=true&tls=true&tlsCAFile={}&serverSelectionTimeoutMS=3000",
            server.port(),
            ca.display()
        )
    };
    let url = url_with(&certs.ca());
    let url0 = url.clone();
    tokio::task::spawn_blocking(move || reading_session(&url0))
        .await
        .expect("reading session");
    let store = flamingock_mongodb::MongoAuditStore::connect(
        &flamingock_test_support::services::with_path(&url, "cli"),
    )
    .await
    .expect("store over TLS");
    seed_issue(&store, "create-topic").await;
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || operator_session(&url2))
        .await
        .expect("session");
    // A CA that signed nothing here: refused, saying which option to fix.
    let out = flamingock(&["--store", &url_with(&certs.other_ca()), "audit", "list"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("tlsCAFile"), "{}", out.all());
}

/// `dynamodb://host:port?tls=true&tlsCAFile=PATH` against a private moto
/// with HTTPS whose certificate a test CA signed.
#[cfg(feature = "dynamodb")]
#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_store_over_tls() {
    use flamingock_test_support::standin_server::StandinServer;
    use flamingock_test_support::tls::TestCerts;
    let certs_dir = tempfile::tempdir().expect("temp dir");
    let certs = TestCerts::generate(certs_dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let server = StandinServer::moto(Some(&certs)).unwrap_or_else(|e| panic!("{e}"));
    let url_with = |ca: &std::path::Path| {
        format!(
            "dynamodb://testing:testing@localhost:{}?region=us-east-1&prefix=cli&tls=true&tlsCAFile={}",
            server.port(),
            ca.display()
        )
    };
    let url = url_with(&certs.ca());
    let url0 = url.clone();
    tokio::task::spawn_blocking(move || reading_session(&url0))
        .await
        .expect("reading session");
    let client = flamingock_dynamodb::ConnectOptions::new()
        .endpoint_url(format!("https://localhost:{}", server.port()))
        .region("us-east-1")
        .ca_certificate(std::fs::read(certs.ca()).expect("CA"))
        .connect()
        .await
        .expect("client");
    let conf = client
        .config()
        .to_builder()
        .credentials_provider(
            flamingock_dynamodb::aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ),
        )
        .build();
    let store = flamingock_dynamodb::DynamoAuditStore::builder(
        flamingock_dynamodb::aws_sdk_dynamodb::Client::from_conf(conf),
    )
    .prefix("cli")
    .build()
    .await
    .expect("store");
    seed_issue(&store, "create-topic").await;
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || operator_session(&url2))
        .await
        .expect("session");
    // A CA that signed nothing here: refused, saying which option to fix.
    let out = flamingock(&["--store", &url_with(&certs.other_ca()), "audit", "list"]);
    assert_ne!(out.code, 0, "{}", out.all());
    assert!(out.stderr.contains("tlsCAFile"), "{}", out.all());
}
