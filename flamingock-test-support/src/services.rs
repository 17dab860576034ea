//! Test services (DESIGN section 9): an endpoint from an environment
//! variable; without one, a container started through testcontainers when the
//! `testcontainers` feature is on and a Docker daemon is reachable; without
//! either, a failing test that says how to provide the service (or a loud
//! skip: a test never passes without its service).

/// A container that can provide a service.
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpec {
    /// Image name.
    pub image: &'static str,
    /// Image tag.
    pub tag: &'static str,
    /// Port the service listens on inside the container.
    pub port: u16,
    /// A line the service prints on stdout or stderr once it is ready.
    pub ready_line: &'static str,
    /// Environment of the container.
    pub env: &'static [(&'static str, &'static str)],
    /// Arguments replacing the image's command (empty: the image's own).
    pub cmd: &'static [&'static str],
    /// A command run inside the container once it is ready (e.g. initiate a replica set).
    pub init: &'static [&'static str],
    /// The endpoint URL, with `{host}` and `{port}` placeholders.
    pub url: &'static str,
    /// Environment entries whose value holds `{port}`: the service tells
    /// clients its own address (Kafka's advertised listener), so the
    /// container's port is published on the same free host port, which
    /// replaces `{port}`. Empty: a port Docker picks.
    pub port_env: &'static [(&'static str, &'static str)],
}

/// How a backend's tests find their server.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// Human name, e.g. "PostgreSQL".
    pub name: &'static str,
    /// Environment variable holding the endpoint URL.
    pub env_var: &'static str,
    /// How to provide one, shown when it is missing.
    pub how: &'static str,
    /// The container testcontainers starts when no endpoint is given.
    pub container: ContainerSpec,
}

/// PostgreSQL.
pub const POSTGRES: ServiceSpec = ServiceSpec {
    name: "PostgreSQL",
    env_var: "FLAMINGOCK_TEST_POSTGRES_URL",
    how: "run `bash scripts/test.sh` (it finds or starts one), or export FLAMINGOCK_TEST_POSTGRES_URL=postgres://user@host:5432/db",
    container: ContainerSpec {
        image: "postgres",
        tag: "16.4-alpine",
        port: 5432,
        // Printed once by the temporary init server and once by the real one;
        // the wait below asks for the line on stderr, then the first query retries.
        ready_line: "database system is ready to accept connections",
        env: &[("POSTGRES_HOST_AUTH_METHOD", "trust"), ("POSTGRES_DB", "test")],
        cmd: &[],
        init: &[],
        url: "postgres://postgres@{host}:{port}/test",
        port_env: &[],
    },
};

/// MySQL or MariaDB.
pub const MYSQL: ServiceSpec = ServiceSpec {
    name: "MySQL/MariaDB",
    env_var: "FLAMINGOCK_TEST_MYSQL_URL",
    how: "run `bash scripts/test.sh` (it finds or starts MariaDB), or export FLAMINGOCK_TEST_MYSQL_URL=mysql://root@host:3306/test",
    container: ContainerSpec {
        image: "mysql",
        tag: "8.4",
        port: 3306,
        // "ready for connections ... port: 3306": the real server (the
        // temporary one that initialises the data directory says "port: 0").
        ready_line: "port: 3306",
        env: &[("MYSQL_ALLOW_EMPTY_PASSWORD", "yes"), ("MYSQL_DATABASE", "test")],
        cmd: &[],
        init: &[],
        url: "mysql://root@{host}:{port}/test",
        port_env: &[],
    },
};

/// RabbitMQ (targets, not stores).
pub const RABBITMQ: ServiceSpec = ServiceSpec {
    name: "RabbitMQ",
    env_var: "FLAMINGOCK_TEST_RABBITMQ_URL",
    how: "run `bash scripts/test.sh` (it finds or starts one), or export FLAMINGOCK_TEST_RABBITMQ_URL=amqp://guest:guest@host:5672/%2f",
    container: ContainerSpec {
        image: "rabbitmq",
        tag: "3.13-alpine",
        port: 5672,
        ready_line: "Server startup complete",
        env: &[],
        cmd: &[],
        init: &[],
        url: "amqp://guest:guest@{host}:{port}/%2f",
        port_env: &[],
    },
};

/// NATS with JetStream (targets, not stores).
pub const NATS: ServiceSpec = ServiceSpec {
    name: "NATS JetStream",
    env_var: "FLAMINGOCK_TEST_NATS_URL",
    how: "run `bash scripts/test.sh` (it finds or starts one), or export FLAMINGOCK_TEST_NATS_URL=nats://host:4222 (a server started with -js)",
    container: ContainerSpec {
        image: "nats",
        tag: "2.10-alpine",
        port: 4222,
        ready_line: "Server is ready",
        env: &[],
        cmd: &["-js"],
        init: &[],
        url: "nats://{host}:{port}",
        port_env: &[],
    },
};

/// An S3 and SQS API (moto's server here; targets, not stores).
pub const AWS: ServiceSpec = ServiceSpec {
    name: "S3/SQS (moto)",
    env_var: "FLAMINGOCK_TEST_AWS_URL",
    how: "run `bash scripts/test.sh` (it starts moto's server from a virtualenv), or export FLAMINGOCK_TEST_AWS_URL=http://host:5000 (an endpoint serving S3 and SQS)",
    container: ContainerSpec {
        image: "motoserver/moto",
        tag: "5.0.28",
        port: 5000,
        ready_line: "Running on",
        env: &[],
        cmd: &[],
        init: &[],
        url: "http://{host}:{port}",
        port_env: &[],
    },
};

/// Kafka, a single KRaft node (targets, not stores). No broker runs on this
/// project's CI machines; the Kafka tests are ignored there and run with
/// `--ignored` given this variable or Docker.
pub const KAFKA: ServiceSpec = ServiceSpec {
    name: "Kafka",
    env_var: "FLAMINGOCK_TEST_KAFKA_URL",
    how: "export FLAMINGOCK_TEST_KAFKA_URL=host:9092 (a broker whose advertised listener is that address), or enable flamingock-test-support/testcontainers with a Docker daemon",
    container: ContainerSpec {
        image: "apache/kafka",
        tag: "3.9.1",
        port: 9092,
        ready_line: "Kafka Server started",
        env: &[
            ("KAFKA_NODE_ID", "1"),
            ("KAFKA_PROCESS_ROLES", "broker,controller"),
            ("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093"),
            ("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
            (
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ),
            ("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
            ("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
        ],
        cmd: &[],
        init: &[],
        url: "{host}:{port}",
        port_env: &[("KAFKA_ADVERTISED_LISTENERS", "PLAINTEXT://127.0.0.1:{port}")],
    },
};

/// Redis.
pub const REDIS: ServiceSpec = ServiceSpec {
    name: "Redis",
    env_var: "FLAMINGOCK_TEST_REDIS_URL",
    how: "run `bash scripts/test.sh`, or export FLAMINGOCK_TEST_REDIS_URL=redis://host:6379/",
    container: ContainerSpec {
        image: "redis",
        tag: "7.4.1-alpine",
        port: 6379,
        ready_line: "Ready to accept connections",
        env: &[],
        // No persistence, as the lock is meant to survive without it.
        cmd: &["redis-server", "--save", "", "--appendonly", "no"],
        init: &[],
        url: "redis://{host}:{port}/",
        port_env: &[],
    },
};

/// MongoDB (any wire-compatible server with transactions).
pub const MONGODB: ServiceSpec = ServiceSpec {
    name: "MongoDB",
    env_var: "FLAMINGOCK_TEST_MONGODB_URL",
    how: "run `bash scripts/test.sh` (it starts SecantusDB from a virtualenv), or export FLAMINGOCK_TEST_MONGODB_URL=mongodb://host:27017/?directConnection=true",
    container: ContainerSpec {
        image: "mongo",
        tag: "7.0.14",
        port: 27017,
        ready_line: "Waiting for connections",
        env: &[],
        // A single-node replica set: transactions need one.
        cmd: &["--replSet", "rs0", "--bind_ip_all"],
        init: &[
            "mongosh",
            "--quiet",
            "--eval",
            // Initiate, then wait until this node is primary (writable).
            "rs.initiate({_id: 'rs0', members: [{_id: 0, host: 'localhost:27017'}]}); \
             while (!db.hello().isWritablePrimary) { sleep(100); }",
        ],
        url: "mongodb://{host}:{port}/?directConnection=true",
        port_env: &[],
    },
};

/// MongoDB as a standalone server (no replica set, so no transactions): the
/// path where the store detects that and runs without transactions.
pub const MONGODB_STANDALONE: ServiceSpec = ServiceSpec {
    name: "MongoDB (standalone)",
    env_var: "FLAMINGOCK_TEST_MONGODB_STANDALONE_URL",
    how: "run `bash scripts/test.sh` (it starts SecantusDB with --standalone), or export FLAMINGOCK_TEST_MONGODB_STANDALONE_URL=mongodb://host:27017/?directConnection=true for a mongod started without --replSet",
    container: ContainerSpec {
        image: "mongo",
        tag: "7.0.14",
        port: 27017,
        ready_line: "Waiting for connections",
        env: &[],
        cmd: &["--bind_ip_all"],
        init: &[],
        url: "mongodb://{host}:{port}/?directConnection=true",
        port_env: &[],
    },
};

/// DynamoDB (any API-compatible server).
pub const DYNAMODB: ServiceSpec = ServiceSpec {
    name: "DynamoDB",
    env_var: "FLAMINGOCK_TEST_DYNAMODB_URL",
    how: "run `bash scripts/test.sh` (it starts moto's server from a virtualenv), or export FLAMINGOCK_TEST_DYNAMODB_URL=http://host:8000",
    container: ContainerSpec {
        image: "amazon/dynamodb-local",
        tag: "2.5.2",
        port: 8000,
        ready_line: "Initializing DynamoDB Local",
        env: &[],
        // One database whatever the credentials and region (the tests use
        // several), kept in memory.
        cmd: &["-jar", "DynamoDBLocal.jar", "-sharedDb", "-inMemory"],
        init: &[],
        url: "http://{host}:{port}",
        port_env: &[],
    },
};

/// The endpoint for `spec`.
///
/// The URL from the environment; else (feature `testcontainers`, Docker
/// reachable) a container started once per test binary; else the calling
/// test fails with instructions. There is no way to skip: a test that
/// passes without its service would report a check that never ran.
///
/// # Panics
/// When no endpoint can be had.
pub fn require_service(spec: &ServiceSpec) -> String {
    if let Ok(url) = std::env::var(spec.env_var) {
        if !url.trim().is_empty() {
            return url;
        }
    }
    #[cfg(feature = "testcontainers")]
    match docker::url(spec) {
        Some(Ok(url)) => return url,
        Some(Err(e)) => panic!("{}: starting a container failed: {e}", spec.name),
        None => {}
    }
    panic!(
        "{} is required for this test but {} is unset{}: {}. \
         `bash scripts/test.sh` starts every service the tests need.",
        spec.name,
        spec.env_var,
        if cfg!(feature = "testcontainers") {
            " and no Docker daemon is reachable"
        } else {
            ""
        },
        spec.how
    )
}

#[cfg(feature = "testcontainers")]
mod docker {
    //! One container per service per test binary, started on a thread with
    //! its own runtime (each `#[tokio::test]` has a runtime of its own that
    //! ends with the test); testcontainers' reaper removes it at exit.

    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};

    use testcontainers::core::{ExecCommand, IntoContainerPort, WaitFor};
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};

    use super::ServiceSpec;

    fn reachable() -> bool {
        std::env::var_os("DOCKER_HOST").is_some()
            || std::path::Path::new("/var/run/docker.sock").exists()
    }

    static STARTED: OnceLock<Mutex<HashMap<&'static str, Result<String, String>>>> =
        OnceLock::new();

    /// `None` when Docker is not reachable.
    pub(super) fn url(spec: &ServiceSpec) -> Option<Result<String, String>> {
        if !reachable() {
            return None;
        }
        let map = STARTED.get_or_init(Mutex::default);
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        let result = map
            .entry(spec.env_var)
            .or_insert_with(|| start(*spec))
            .clone();
        Some(result)
    }

    /// The endpoints of the containers started so far.
    pub(super) fn started() -> Vec<(&'static str, String)> {
        let Some(map) = STARTED.get() else {
            return Vec::new();
        };
        let map = map.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter_map(|(var, r)| r.as_ref().ok().map(|url| (*var, url.clone())))
            .collect()
    }

    fn start(spec: ServiceSpec) -> Result<String, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let c = spec.container;
                let mut image = GenericImage::new(c.image, c.tag)
                    .with_exposed_port(c.port.tcp())
                    .with_wait_for(WaitFor::message_on_either_std(c.ready_line))
                    .with_cmd(c.cmd.iter().copied());
                for (k, v) in c.env {
                    image = image.with_env_var(*k, *v);
                }
                if !c.port_env.is_empty() {
                    let port = match std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                    {
                        Ok(a) => a.port(),
                        Err(e) => {
                            let _ = tx.send(Err(format!("no free port: {e}")));
                            return;
                        }
                    };
                    image = image.with_mapped_port(port, c.port.tcp());
                    for (k, v) in c.port_env {
                        image = image.with_env_var(*k, v.replace("{port}", &port.to_string()));
                    }
                }
                let container = match image.start().await {
                    Ok(container) => container,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                if !c.init.is_empty() {
                    if let Err(e) = container
                        .exec(ExecCommand::new(c.init.iter().copied()))
                        .await
                    {
                        let _ = tx.send(Err(format!("init command failed: {e}")));
                        return;
                    }
                }
                let url = async {
                    let host = container.get_host().await.map_err(|e| e.to_string())?;
                    let port = container
                        .get_host_port_ipv4(c.port.tcp())
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(
                        c.url
                            .replace("{host}", &host.to_string())
                            .replace("{port}", &port.to_string()),
                    )
                }
                .await;
                let _ = tx.send(url);
                // Keep the container (and this runtime) for the life of the process.
                futures::future::pending::<()>().await;
                drop(container);
            });
        });
        rx.recv()
            .map_err(|_| "the container thread ended".to_owned())?
    }
}

/// The endpoints of the containers this process started, as
/// `(variable, url)`: the process-level suite hands them to its child
/// processes, so that children use the parent's servers instead of starting
/// containers of their own.
pub fn container_endpoints() -> Vec<(&'static str, String)> {
    #[cfg(feature = "testcontainers")]
    {
        docker::started()
    }
    #[cfg(not(feature = "testcontainers"))]
    {
        Vec::new()
    }
}

/// A fresh random namespace: lowercase ASCII letters, digits and `_`, starting
/// with a letter, at most 20 bytes; valid as a SQL schema or table prefix, a
/// MongoDB database name, a DynamoDB table prefix and a Redis key prefix.
pub fn namespace(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(6)
        .collect();
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("fk{clean}_{}", &id[..12])
}

/// `url` (a `scheme://authority/path?query` connection string) with its path
/// set to `/path`: how a test names the database of a MongoDB URL given
/// without one.
///
/// ```
/// use flamingock_test_support::services::with_path;
/// assert_eq!(
///     with_path("mongodb://127.0.0.1:27017/?directConnection=true", "app"),
///     "mongodb://127.0.0.1:27017/app?directConnection=true"
/// );
/// assert_eq!(with_path("mongodb://h/old", "app"), "mongodb://h/app");
/// ```
pub fn with_path(url: &str, path: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[after_scheme..]
        .find('/')
        .map_or(base.len(), |i| after_scheme + i);
    let mut out = format!("{}/{path}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}
