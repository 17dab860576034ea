//! Test services: endpoints from environment variables, with a failing test
//! (or a loud skip) when none is given. See DESIGN section 9.

/// How a backend's tests find their server.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSpec {
    /// Human name, e.g. "PostgreSQL".
    pub name: &'static str,
    /// Environment variable holding the endpoint URL.
    pub env_var: &'static str,
    /// How to provide one, shown when it is missing.
    pub how: &'static str,
}

/// PostgreSQL.
pub const POSTGRES: ServiceSpec = ServiceSpec {
    name: "PostgreSQL",
    env_var: "FLAMINGOCK_TEST_POSTGRES_URL",
    how: "run `bash scripts/test.sh` (it finds or starts one), or export FLAMINGOCK_TEST_POSTGRES_URL=postgres://user@host:5432/db",
};

/// Redis.
pub const REDIS: ServiceSpec = ServiceSpec {
    name: "Redis",
    env_var: "FLAMINGOCK_TEST_REDIS_URL",
    how: "run `bash scripts/test.sh`, or export FLAMINGOCK_TEST_REDIS_URL=redis://host:6379/",
};

/// MongoDB (any wire-compatible server with transactions).
pub const MONGODB: ServiceSpec = ServiceSpec {
    name: "MongoDB",
    env_var: "FLAMINGOCK_TEST_MONGODB_URL",
    how: "run `bash scripts/test.sh` (it starts SecantusDB from a virtualenv), or export FLAMINGOCK_TEST_MONGODB_URL=mongodb://host:27017/?directConnection=true",
};

/// DynamoDB (any API-compatible server).
pub const DYNAMODB: ServiceSpec = ServiceSpec {
    name: "DynamoDB",
    env_var: "FLAMINGOCK_TEST_DYNAMODB_URL",
    how: "run `bash scripts/test.sh` (it starts moto's server from a virtualenv), or export FLAMINGOCK_TEST_DYNAMODB_URL=http://host:8000",
};

/// The endpoint for `spec`.
///
/// Returns the URL from the environment. Without one, the calling test
/// fails with instructions; with `FLAMINGOCK_TEST_SKIP_MISSING=1` it returns
/// `None` after printing a loud SKIPPED line, and the caller returns.
///
/// # Panics
/// When the variable is unset and skipping was not asked for: a test that
/// silently passes without its service would be a defect.
pub fn require_service(spec: &ServiceSpec) -> Option<String> {
    match std::env::var(spec.env_var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("FLAMINGOCK_TEST_SKIP_MISSING").as_deref() == Ok("1") => {
            eprintln!(
                "SKIPPED: {} tests need {} ({} is unset; FLAMINGOCK_TEST_SKIP_MISSING=1)",
                spec.name, spec.name, spec.env_var
            );
            None
        }
        _ => panic!(
            "{} is required for this test but {} is unset: {}. \
             (Set FLAMINGOCK_TEST_SKIP_MISSING=1 to skip these tests loudly instead.)",
            spec.name, spec.env_var, spec.how
        ),
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
