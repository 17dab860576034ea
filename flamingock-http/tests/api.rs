//! The HTTP API target against a small feature-flag service the test starts
//! on a free loopback port (axum): writes once, compare-and-set, a refused
//! token, an unreachable API, and a crash settled by the check.

use flamingock_core::error::ErrorChain as _;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use flamingock_core::fault::{FaultInjector, FaultPoint};
use flamingock_core::{
    AuditState, AuditStore, BoxError, Change, ChangeMeta, ChangeOutcome, ChangeResult, ContextMode,
    Error, Flamingock, HistoryFilter, LockConfig, Stage, TargetSystem,
};
use flamingock_http::{HttpContext, HttpError, HttpTarget};
use flamingock_sqlite::SqliteAuditStore;
use flamingock_test_support::faults::{crash_at, Fault, FaultAction};
use serde_json::{json, Value};

const TOKEN: &str = "s3cret-token";

/// name → (value, version); every PUT counted.
#[derive(Default)]
struct Flags {
    map: HashMap<String, (Value, u64)>,
    puts: usize,
}

type Shared = Arc<Mutex<Flags>>;

fn authorised(h: &HeaderMap) -> bool {
    h.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

async fn get_flag(State(s): State<Shared>, h: HeaderMap, Path(name): Path<String>) -> Response {
    if !authorised(&h) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let flags = s.lock().expect("lock");
    match flags.map.get(&name) {
        Some((v, version)) => {
            ([("etag", format!("\"{version}\""))], Json(v.clone())).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn put_flag(
    State(s): State<Shared>,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(v): Json<Value>,
) -> Response {
    if !authorised(&h) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let mut flags = s.lock().expect("lock");
    let current = flags.map.get(&name).map(|(_, ver)| format!("\"{ver}\""));
    if let Some(expected) = h.get("if-match").and_then(|v| v.to_str().ok()) {
        if current.as_deref() != Some(expected) {
            return StatusCode::PRECONDITION_FAILED.into_response();
        }
    }
    let version = flags.map.get(&name).map_or(1, |(_, ver)| ver + 1);
    flags.map.insert(name, (v, version));
    flags.puts += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn serve() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/flags/{name}", get(get_flag).put(put_flag))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), shared)
}

struct EnableCheckout;

impl Change for EnableCheckout {
    type Target = HttpTarget;
    fn meta(&self) -> ChangeMeta {
        ChangeMeta::new("enable-checkout")
            .order("0001")
            .author("suite")
    }
    async fn apply(&self, api: &mut HttpContext) -> ChangeResult {
        api.put_if_changed("/flags/checkout", &json!({"enabled": true}))
            .await?;
        Ok(())
    }
    async fn is_applied(&self, api: &mut HttpContext) -> Result<bool, BoxError> {
        Ok(api.get_json("/flags/checkout").await? == Some(json!({"enabled": true})))
    }
}

async fn runner(
    target: &HttpTarget,
    store: &SqliteAuditStore,
    fault: Option<Arc<Fault>>,
) -> Flamingock {
    let mut b = Flamingock::builder()
        .audit_store(store.clone())
        .target(target.clone())
        .lock_config(LockConfig::default().lease(std::time::Duration::from_secs(1)))
        .stage(Stage::new("flags").change(EnableCheckout));
    if let Some(f) = fault {
        b = b.fault_injector(f as Arc<dyn FaultInjector>);
    }
    b.build().expect("runner")
}

async fn target(base: &str, token: &str) -> HttpTarget {
    HttpTarget::builder("flags-api", base)
        .bearer_token(token)
        .build()
        .await
        .expect("target")
}

#[tokio::test]
async fn a_flag_is_written_once() {
    let (base, flags) = serve().await;
    let t = target(&base, TOKEN).await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    runner(&t, &store, None).await.run().await.expect("run");
    runner(&t, &store, None)
        .await
        .run()
        .await
        .expect("second run");
    let f = flags.lock().expect("lock");
    assert_eq!(f.map["checkout"].0, json!({"enabled": true}));
    assert_eq!(f.puts, 1, "written once");
}

#[tokio::test]
async fn compare_and_set_refuses_a_concurrent_edit() {
    let (base, flags) = serve().await;
    let t = target(&base, TOKEN).await;
    let mut api = t.begin(ContextMode::NonTransactional).await.expect("ctx");
    api.put_json("/flags/limit", &json!({"max": 10}))
        .await
        .expect("put");
    let (v, etag) = api
        .get_with_etag("/flags/limit")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(v, json!({"max": 10}));
    let etag = etag.expect("the service sends an ETag");
    // Someone else edits it meanwhile.
    api.put_json("/flags/limit", &json!({"max": 20}))
        .await
        .expect("other edit");
    match api
        .put_if_match("/flags/limit", &etag, &json!({"max": 50}))
        .await
    {
        Err(HttpError::Conflict { url, expected }) => {
            assert!(url.ends_with("/flags/limit"));
            assert_eq!(expected, etag);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        flags.lock().expect("lock").map["limit"].0,
        json!({"max": 20})
    );
    assert!(!api
        .put_if_changed("/flags/limit", &json!({"max": 20}))
        .await
        .expect("same"));
}

#[tokio::test]
async fn a_refused_token_and_an_unreachable_api_are_clear_errors() {
    let (base, _) = serve().await;
    let t = target(&base, "wrong").await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let err = runner(&t, &store, None)
        .await
        .run()
        .await
        .expect_err("refused");
    let text = err.chain().to_string();
    assert!(matches!(err, Error::ChangeFailed { .. }), "{err:?}");
    assert!(
        text.contains("GET") && text.contains("/flags/checkout"),
        "{text}"
    );
    assert!(text.contains("401") && text.contains("bad token"), "{text}");
    assert!(!text.contains("wrong"), "the token is never shown: {text}");
    let gone = target("http://127.0.0.1:1", TOKEN).await;
    let mut api = gone
        .begin(ContextMode::NonTransactional)
        .await
        .expect("ctx");
    match api.get_json("/flags/x").await {
        Err(HttpError::Request { url, .. }) => assert_eq!(url, "http://127.0.0.1:1/flags/x"),
        other => panic!("expected a request error, got {other:?}"),
    }
    let err = HttpTarget::builder("x", "ftp://host")
        .build()
        .await
        .expect_err("not http");
    assert!(
        err.chain().to_string().contains("not http:// or https://"),
        "{err}"
    );
}

#[tokio::test]
async fn a_crash_after_the_write_is_settled_by_the_check() {
    let (base, flags) = serve().await;
    let t = target(&base, TOKEN).await;
    let store = SqliteAuditStore::connect("sqlite::memory:")
        .await
        .expect("store");
    let fault = Fault::new(
        FaultPoint::AfterCommit,
        "enable-checkout",
        FaultAction::Crash,
    );
    crash_at(runner(&t, &store, Some(fault.clone())).await.run(), &fault).await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await; // the lease ends
    let report = runner(&t, &store, None)
        .await
        .run()
        .await
        .expect("next run");
    let line = report
        .changes
        .iter()
        .find(|c| c.change_id.as_ref() == "enable-checkout")
        .expect("reported");
    assert_eq!(line.outcome, ChangeOutcome::RecoveredApplied);
    let states: Vec<AuditState> = store
        .history(&HistoryFilter::all().change("enable-checkout"))
        .await
        .expect("history")
        .into_iter()
        .map(|e| e.state)
        .collect();
    assert_eq!(states, [AuditState::Started, AuditState::Applied]);
    assert_eq!(flags.lock().expect("lock").puts, 1, "not written twice");
}
