//! Bad input against a real Redis: unreachable servers, wrong credentials,
//! keys of the wrong shape under the lock's name, unusable names. Each must
//! give an error that says what and where; none may panic.

use flamingock_core::error::ErrorChain as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flamingock_core::{Acquire, LockError, LockProvider};
use flamingock_redis_lock::{RedisLock, RedisLockError};
use flamingock_test_support::{namespace, require_service, services};

fn url() -> Option<String> {
    Some(require_service(&services::REDIS))
}

/// The local server's URL with credentials added.
fn with_credentials(url: &str, credentials: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{credentials}@{rest}"),
        None => panic!("unexpected test URL shape"),
    }
}

/// A plain connection for arranging keys, nothing of the crate's.
async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect")
}

async fn del(url: &str, keys: &[&str]) {
    let mut c = raw(url).await;
    let _: i64 = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut c)
        .await
        .expect("del");
}

#[tokio::test]
async fn unreachable_server_is_named() {
    // Port 1 on loopback: nothing listens there.
    let started = std::time::Instant::now();
    let err = RedisLock::builder("redis://127.0.0.1:1/")
        .name("ns")
        .connection_timeout(Duration::from_secs(2))
        .reconnect_retries(0)
        .build()
        .await
        .expect_err("nothing listens on port 1");
    let text = err.chain().to_string();
    assert!(matches!(err, RedisLockError::Connect { .. }), "{err:?}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(text.contains("unreachable"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "gave up quickly"
    );
}

#[tokio::test]
async fn wrong_password_says_authentication_failed_and_hides_it() {
    let Some(url) = url() else { return };
    // A password alone is refused by a server that has none; an unknown
    // user is refused anywhere. (A user name without a password sends no
    // AUTH at all, and the passwordless `default` user accepts any password.)
    for credentials in [":not-the-password", "nobody:not-the-password"] {
        let bad = with_credentials(&url, credentials);
        let err = RedisLock::builder(&bad)
            .name("ns")
            .build()
            .await
            .expect_err("the server must refuse these credentials");
        let text = err.chain().to_string();
        assert!(matches!(err, RedisLockError::Connect { .. }), "{err:?}");
        assert!(
            text.contains("authentication failed"),
            "{credentials}: {text}"
        );
        assert!(
            !text.contains("not-the-password"),
            "the password must not be repeated: {text}"
        );
    }
}

#[tokio::test]
async fn unparseable_url_is_rejected_without_echoing_it() {
    let err = RedisLock::builder("http://user:secret@127.0.0.1:6379/")
        .name("ns")
        .build()
        .await
        .expect_err("not a redis URL");
    assert!(matches!(err, RedisLockError::InvalidUrl { .. }), "{err:?}");
    assert!(!err.chain().to_string().contains("secret"), "{err}");
}

#[tokio::test]
async fn unusable_names_are_rejected() {
    for (ns, prefix) in [
        ("", "flamingock"),
        ("a}b", "flamingock"),
        ("a{b", "flamingock"),
        ("has space", "flamingock"),
        ("tab\there", "flamingock"),
        ("ok", ""),
        ("ok", "pre}fix"),
    ] {
        let long = "x".repeat(201);
        for (ns, prefix) in [(ns, prefix), (long.as_str(), "p")] {
            let err = RedisLock::builder("redis://127.0.0.1:1/")
                .name(ns)
                .prefix(prefix)
                .build()
                .await
                .expect_err("rejected before connecting");
            assert!(
                matches!(err, RedisLockError::InvalidName { .. }),
                "{ns:?}/{prefix:?}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn keys_share_a_hash_tag() {
    let Some(url) = url() else { return };
    let lock = RedisLock::builder(&url)
        .name("orders")
        .prefix("myapp")
        .build()
        .await
        .expect("connect");
    assert_eq!(lock.lock_key(), "{myapp:orders}:lock");
    assert_eq!(lock.token_key(), "{myapp:orders}:token");
    let default = RedisLock::builder(&url)
        .name("orders")
        .build()
        .await
        .expect("connect");
    assert_eq!(default.lock_key(), "{flamingock:orders}:lock");
    assert!(default.describe().contains("{flamingock:orders}:lock"));
    let unnamed = RedisLock::connect(&url).await.expect("connect");
    assert_eq!(unnamed.lock_key(), "{flamingock}:lock");
    assert_eq!(unnamed.token_key(), "{flamingock}:token");
}

#[tokio::test]
async fn connection_settings_on_your_own_connection_are_refused() {
    let Some(url) = url() else { return };
    let conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_connection_manager()
        .await
        .expect("connect");
    let err = RedisLock::builder(conn.clone())
        .response_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect_err("the timeout belongs on the caller's connection manager");
    assert!(
        matches!(err, RedisLockError::InvalidSetting { .. }),
        "{err:?}"
    );
    assert!(
        err.chain().to_string().contains("connection manager"),
        "{err}"
    );
    let lock = RedisLock::builder(conn).build().await.expect("no settings");
    assert_eq!(lock.lock_key(), "{flamingock}:lock");
}

/// Arranges `setup` on the lock key of a fresh namespace, then runs every
/// operation; each must answer `Malformed` naming the key.
async fn every_operation_is_malformed(url: &str, setup: &[&[&str]], key_of: &str, expect: &str) {
    let ns = namespace("bad");
    let lock = RedisLock::builder(url)
        .name(&ns)
        .build()
        .await
        .expect("connect");
    let key = if key_of == "lock" {
        lock.lock_key().to_owned()
    } else {
        lock.token_key().to_owned()
    };
    let mut c = raw(url).await;
    for cmd in setup {
        let mut command = redis::cmd(cmd[0]);
        command.arg(&key).arg(&cmd[1..]);
        let _: redis::Value = command.query_async(&mut c).await.expect("arrange");
    }
    let results: Vec<(&str, Result<String, LockError>)> = vec![
        (
            "try_acquire",
            lock.try_acquire("me", Duration::from_secs(5))
                .await
                .map(|a| format!("{a:?}")),
        ),
        (
            "extend",
            lock.extend("me", 1, Duration::from_secs(5))
                .await
                .map(|l| format!("{l:?}")),
        ),
        (
            "release",
            lock.release("me", 1).await.map(|()| String::new()),
        ),
        ("inspect", lock.inspect().await.map(|i| format!("{i:?}"))),
        (
            "force_release",
            lock.force_release().await.map(|i| format!("{i:?}")),
        ),
    ];
    for (op, r) in results {
        // The counter is only read by try_acquire.
        if key_of == "token" && op != "try_acquire" {
            continue;
        }
        match r {
            Err(LockError::Malformed { detail, .. }) => {
                assert!(detail.contains(&key), "{op}: names the key: {detail}");
                assert!(
                    detail.contains(expect),
                    "{op}: says what is wrong: {detail}"
                );
            }
            other => panic!("{op} on {setup:?}: expected Malformed, got {other:?}"),
        }
    }
    // Nothing was overwritten.
    let kind: String = redis::cmd("TYPE")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("type");
    assert_ne!(kind, "none", "the foreign key is left in place");
    del(url, &[lock.lock_key(), lock.token_key()]).await;
}

#[tokio::test]
async fn lock_key_of_the_wrong_type_is_malformed() {
    let Some(url) = url() else { return };
    every_operation_is_malformed(&url, &[&["RPUSH", "x", "y"]], "lock", "holds a list").await;
    every_operation_is_malformed(&url, &[&["SET", "owner|7"]], "lock", "holds a string").await;
    every_operation_is_malformed(&url, &[&["SADD", "x"]], "lock", "holds a set").await;
}

#[tokio::test]
async fn token_counter_of_the_wrong_shape_is_malformed() {
    let Some(url) = url() else { return };
    every_operation_is_malformed(&url, &[&["SET", "seven"]], "token", "not a token counter").await;
    every_operation_is_malformed(&url, &[&["SET", "-3"]], "token", "not a token counter").await;
    every_operation_is_malformed(
        &url,
        &[&["SET", "99999999999999999999"]],
        "token",
        "not a token counter",
    )
    .await;
    every_operation_is_malformed(&url, &[&["HSET", "a", "b"]], "token", "holds a hash").await;
}

#[tokio::test]
async fn damaged_lock_records() {
    let Some(url) = url() else { return };
    let mut c = raw(&url).await;
    let cases: [(&[&str], &str); 4] = [
        (&["owner", "someone"], "has no token field"),
        (&["token", "3"], "has no owner field"),
        (
            &["owner", "someone", "token", "three"],
            "not a positive integer",
        ),
        (
            &["owner", "someone", "token", "0"],
            "not a positive integer",
        ),
    ];
    for (fields, expect) in cases {
        let ns = namespace("dmg");
        let lock = RedisLock::builder(&url)
            .name(&ns)
            .build()
            .await
            .expect("connect");
        let _: i64 = redis::cmd("HSET")
            .arg(lock.lock_key())
            .arg(fields)
            .query_async(&mut c)
            .await
            .expect("arrange");
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(lock.lock_key())
            .arg(60_000)
            .query_async(&mut c)
            .await
            .expect("arrange");
        for (op, r) in [
            (
                "try_acquire",
                lock.try_acquire("me", Duration::from_secs(5))
                    .await
                    .map(|a| format!("{a:?}")),
            ),
            ("inspect", lock.inspect().await.map(|i| format!("{i:?}"))),
        ] {
            match r {
                Err(LockError::Malformed { detail, .. }) => {
                    assert!(detail.contains(lock.lock_key()), "{op}: {detail}");
                    assert!(detail.contains(expect), "{op} {fields:?}: {detail}");
                    assert!(detail.contains("force_release"), "{op}: says the fix");
                }
                other => panic!("{op} on {fields:?}: expected Malformed, got {other:?}"),
            }
        }
        // Extend and release refuse (not our lease) without panicking.
        assert!(matches!(
            lock.extend("me", 1, Duration::from_secs(5)).await,
            Err(LockError::Lost { .. })
        ));
        assert!(matches!(
            lock.release("me", 1).await,
            Err(LockError::Lost { .. })
        ));
        // An operator can clear it; the lock then works.
        assert_eq!(lock.force_release().await.expect("force release"), None);
        assert!(matches!(
            lock.try_acquire("me", Duration::from_secs(5)).await,
            Ok(Acquire::Acquired(_))
        ));
        del(&url, &[lock.lock_key(), lock.token_key()]).await;
    }
}

#[tokio::test]
async fn lock_record_without_expiry() {
    let Some(url) = url() else { return };
    let ns = namespace("noexp");
    let lock = RedisLock::builder(&url)
        .name(&ns)
        .build()
        .await
        .expect("connect");
    let mut c = raw(&url).await;
    let _: i64 = redis::cmd("HSET")
        .arg(lock.lock_key())
        .arg(&["owner", "forever", "token", "4"])
        .query_async(&mut c)
        .await
        .expect("arrange");
    match lock.try_acquire("me", Duration::from_secs(5)).await {
        Err(LockError::Malformed { detail, .. }) => {
            assert!(detail.contains("no expiry"), "{detail}")
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
    let removed = lock
        .force_release()
        .await
        .expect("force release")
        .expect("removed the record");
    assert_eq!((removed.owner.as_str(), removed.token), ("forever", 4));
    assert!(matches!(
        lock.try_acquire("me", Duration::from_secs(5)).await,
        Ok(Acquire::Acquired(_))
    ));
    del(&url, &[lock.lock_key(), lock.token_key()]).await;
}

#[tokio::test]
async fn extreme_leases_and_owners() {
    let Some(url) = url() else { return };
    let ns = namespace("edge");
    let lock = RedisLock::builder(&url)
        .name(&ns)
        .build()
        .await
        .expect("connect");
    // A zero lease is sent as 1 ms; an absurd one is capped.
    let t0 = match lock.try_acquire("me", Duration::ZERO).await.expect("zero") {
        Acquire::Acquired(l) => l.token,
        other => panic!("{other:?}"),
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(lock.inspect().await.expect("inspect").is_none(), "expired");
    let owner = "ünïcødé owner with spaces, \"quotes\" and | pipes";
    let t1 = match lock.try_acquire(owner, Duration::MAX).await.expect("max") {
        Acquire::Acquired(l) => l.token,
        other => panic!("{other:?}"),
    };
    assert!(t1 > t0);
    let info = lock.inspect().await.expect("inspect").expect("held");
    assert_eq!((info.owner.as_str(), info.token), (owner, t1));
    lock.extend(owner, t1, Duration::MAX).await.expect("extend");
    lock.release(owner, t1).await.expect("release");
    del(&url, &[lock.lock_key(), lock.token_key()]).await;
}

/// A loopback TCP proxy to the test server that can cut every connection
/// and stop listening (the server "goes away"), then come back on the same port.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String, port: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let t2 = tasks.clone();
        let up = upstream.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let up = up.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(up).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                t2.lock().unwrap_or_else(|p| p.into_inner()).push(pipe);
            }
        });
        tasks.lock().unwrap_or_else(|p| p.into_inner()).push(accept);
        Proxy {
            port,
            upstream,
            tasks,
        }
    }

    fn cut(&self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_gone_mid_use_is_a_backend_error_then_recovers() {
    let Some(url) = url() else { return };
    let upstream = redis::Client::open(url.as_str())
        .expect("url")
        .get_connection_info()
        .addr()
        .to_string();
    let proxy = Proxy::start(upstream, 0).await;
    let ns = namespace("gone");
    let lock = RedisLock::builder(format!("redis://127.0.0.1:{}/", proxy.port))
        .name(&ns)
        .response_timeout(Duration::from_secs(1))
        .connection_timeout(Duration::from_secs(1))
        .build()
        .await
        .expect("connect through the proxy");
    let token = match lock.try_acquire("me", Duration::from_secs(30)).await {
        Ok(Acquire::Acquired(l)) => l.token,
        other => panic!("{other:?}"),
    };

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    match lock.extend("me", token, Duration::from_secs(30)).await {
        Err(LockError::Backend {
            operation, source, ..
        }) => {
            assert_eq!(operation, "extend");
            let text = source.chain().to_string();
            assert!(
                text.contains("dropped") || text.contains("unreachable"),
                "says the connection went away: {text}"
            );
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failed fast, did not hang"
    );

    // The server comes back on the same address: the lock works again and
    // the lease, still in Redis, is still ours.
    let back = Proxy::start(proxy.upstream.clone(), proxy.port).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match lock.extend("me", token, Duration::from_secs(30)).await {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the lock did not reconnect: {e}"),
        }
    }
    lock.release("me", token).await.expect("release");
    back.cut();
    del(&url, &[lock.lock_key(), lock.token_key()]).await;
}

/// A loopback listener that answers every connection with `reply` (or with
/// nothing) and keeps it open.
async fn fake_server(reply: Option<&'static [u8]>) -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            if let Some(r) = reply {
                let _ = s.write_all(r).await;
            }
            open.push(s);
        }
    });
    (port, task)
}

#[tokio::test]
async fn server_that_never_answers_times_out() {
    let (port, task) = fake_server(None).await;
    let started = std::time::Instant::now();
    let err = RedisLock::builder(format!("redis://127.0.0.1:{port}/"))
        .name("ns")
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .reconnect_retries(0)
        .build()
        .await
        .expect_err("a silent server");
    task.abort();
    assert!(matches!(err, RedisLockError::Connect { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}: {err}",
        started.elapsed()
    );
}

#[tokio::test]
async fn server_that_is_not_redis_is_an_error() {
    let (port, task) = fake_server(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n")).await;
    let err = RedisLock::builder(format!("redis://127.0.0.1:{port}/"))
        .name("ns")
        .connection_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(500))
        .reconnect_retries(0)
        .build()
        .await
        .expect_err("not a Redis server");
    task.abort();
    assert!(matches!(err, RedisLockError::Connect { .. }), "{err:?}");
    assert!(
        err.chain().to_string().contains("not the Redis protocol"),
        "{err}"
    );
}
