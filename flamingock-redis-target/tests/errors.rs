//! Bad input for the Redis target: an invalid URL, an unreachable server
//! (password hidden), a marker key someone overwrote.

use flamingock_core::error::ErrorChain as _;
use flamingock_core::{ContextMode, TargetError, TargetSystem};
use flamingock_redis_target::redis::AsyncCommands;
use flamingock_redis_target::RedisTarget;

#[tokio::test]
async fn invalid_url_and_prefix_are_refused_at_build() {
    let err = RedisTarget::builder("flags", "http://127.0.0.1:6379")
        .build()
        .await
        .expect_err("not a Redis URL");
    assert!(matches!(err, TargetError::Unsupported { .. }), "{err:?}");
    assert!(
        err.chain().to_string().contains("invalid Redis URL"),
        "{err}"
    );
    let err = RedisTarget::builder("flags", "redis://127.0.0.1:6379/")
        .prefix("bad prefix")
        .build()
        .await
        .expect_err("not a plain name");
    assert!(err.chain().to_string().contains("bad prefix"), "{err}");
}

#[tokio::test]
async fn unreachable_server_is_a_clear_error_without_the_password() {
    let target = RedisTarget::builder("flags", "redis://app:hunter2@127.0.0.1:1/0")
        .build()
        .await
        .expect("no I/O at build");
    let err = target
        .begin(ContextMode::Transaction)
        .await
        .expect_err("unreachable");
    let text = format!("{err} {err:?}");
    assert!(text.contains("connect"), "{text}");
    assert!(text.contains("app:***@127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn an_overwritten_marker_is_an_error_naming_its_key() {
    let url = flamingock_test_support::require_service(&flamingock_test_support::services::REDIS);
    let ns = flamingock_test_support::namespace("rt");
    let target = RedisTarget::builder("flags", url)
        .prefix(ns.clone())
        .build()
        .await
        .expect("target");
    let key = format!("{ns}:marker:c");
    let mut conn = target.connection().await.expect("connect");
    conn.set::<_, _, ()>(&key, "not a marker")
        .await
        .expect("set");
    let err = target.marker("c").await.expect_err("malformed");
    assert!(err.chain().to_string().contains(&key), "{err}");
    conn.set::<_, _, ()>(&key, "7|run-1").await.expect("set");
    let m = target.marker("c").await.expect("read").expect("a marker");
    assert_eq!((m.fencing_token, m.run_id.as_str()), (7, "run-1"));
    target.clear_marker("c").await.expect("clear");
    assert!(target.marker("c").await.expect("read").is_none());
}
