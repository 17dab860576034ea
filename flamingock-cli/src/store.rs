//! Choosing and opening the audit store from a URL.
//!
//! | URL | store |
//! |---|---|
//! | `sqlite:app.db`, `sqlite://path/app.db`, `sqlite::memory:` | SQLite file (created by `apply` or a fix when missing; reading commands never create it); in memory |
//! | `postgres://user:pw@host:5432/db?schema=ops&prefix=flamingock` (or `postgresql://`) | PostgreSQL; `schema` (default `public`) also becomes the connection's `search_path`, so unqualified names in SQL files land there |
//! | `mysql://user:pw@host:3306/db?prefix=flamingock` (or `mariadb://`) | MySQL or MariaDB, database `db`; a SQL file with DDL runs non-transactionally (MySQL commits DDL implicitly), and `plan` says so |
//! | `mongodb://user:pw@host:27017/db?prefix=flamingock` (feature `mongodb`) | MongoDB, database `db` (default `flamingock`); no SQL file changes |
//! | `dynamodb://[KEY:SECRET@]host:port?region=eu-west-1&prefix=flamingock&tls=true` (feature `dynamodb`) | DynamoDB at that endpoint (`dynamodb://` alone: AWS's own, credentials from the standard chain); no SQL file changes |
//!
//! A store's own database is also the target of file-based changes (id
//! [`TARGET_ID`]), so each file commits in one transaction with its audit entry.

use std::fmt;

use flamingock_core::{Flamingock, FlamingockBuilder, StoreError};

use crate::redact::redact_url;
use crate::sql::SqlChanges;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
use crate::sql::DEFAULT_STAGE;

/// The id of the target system file-based changes run on: the store's own database.
pub const TARGET_ID: &str = "database";

/// A parsed store URL.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreUrl {
    /// `sqlite:PATH` / `sqlite://PATH`; `None` = `sqlite::memory:`.
    Sqlite {
        /// The database file.
        path: Option<String>,
    },
    /// `postgres://` or `postgresql://`.
    Postgres {
        /// The URL for the driver, without this crate's own query options.
        url: String,
        /// `?schema=` (default `public`).
        schema: Option<String>,
        /// `?prefix=` (table prefix, default `flamingock`).
        prefix: Option<String>,
        /// `?connect_timeout=` in seconds, as libpq reads it (at least 2);
        /// `None` = 15 seconds.
        connect_timeout: Option<std::time::Duration>,
        /// `?pooler=transaction`: a pooler in transaction mode (PgBouncer's
        /// `pool_mode = transaction`) sits in front of the server.
        pooler: bool,
    },
    /// `mysql://` or `mariadb://`.
    Mysql {
        /// The URL for the driver, without this crate's own query options.
        url: String,
        /// `?prefix=` (table prefix, default `flamingock`).
        prefix: Option<String>,
    },
    /// `mongodb://` / `mongodb+srv://`.
    Mongodb {
        /// The URI for the driver, without this crate's own query options.
        uri: String,
        /// The database (the URI's path; default `flamingock`).
        database: String,
        /// `?prefix=` (collection prefix).
        prefix: Option<String>,
    },
    /// `dynamodb://`.
    Dynamodb {
        /// `http(s)://host:port`; `None` = AWS's endpoint for the region.
        endpoint: Option<String>,
        /// `?region=`.
        region: Option<String>,
        /// Access key id and secret from the URL's user info.
        credentials: Option<(String, String)>,
        /// `?prefix=` (table prefix).
        prefix: Option<String>,
        /// `?tlsCAFile=`: the certificate authority to trust for an HTTPS endpoint.
        ca_file: Option<std::path::PathBuf>,
    },
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreUrl::Postgres {
                url,
                schema,
                prefix,
                connect_timeout,
                pooler,
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("schema", schema)
                .field("prefix", prefix)
                .field("connect_timeout", connect_timeout)
                .field("pooler", pooler)
                .finish(),
            StoreUrl::Mysql { url, prefix } => f
                .debug_struct("Mysql")
                .field("url", &redact_url(url))
                .field("prefix", prefix)
                .finish(),
            StoreUrl::Mongodb {
                uri,
                database,
                prefix,
            } => f
                .debug_struct("Mongodb")
                .field("uri", &redact_url(uri))
                .field("database", database)
                .field("prefix", prefix)
                .finish(),
            StoreUrl::Dynamodb {
                endpoint,
                region,
                credentials,
                prefix,
                ca_file,
            } => f
                .debug_struct("Dynamodb")
                .field("endpoint", endpoint)
                .field("region", region)
                .field("key_id", &credentials.as_ref().map(|(k, _)| k))
                .field("prefix", prefix)
                .field("ca_file", ca_file)
                .finish(),
        }
    }
}

/// Why a store URL was refused or a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreUrlError {
    /// No URL given.
    #[error("no audit store: give --store URL or set FLAMINGOCK_STORE_URL (e.g. sqlite:app.db, postgres://user@host/db)")]
    Missing,
    /// A scheme this build does not know.
    #[error("unknown store URL scheme '{scheme}': expected {expected}")]
    UnknownScheme {
        /// The scheme.
        scheme: String,
        /// What this build accepts.
        expected: String,
    },
    /// A scheme whose backend is not compiled in.
    #[error("store URL scheme '{scheme}' needs the `{feature}` feature of flamingock-cli, which this build does not have (cargo install flamingock-cli --features {feature})")]
    NotCompiled {
        /// The scheme.
        scheme: String,
        /// The feature.
        feature: &'static str,
    },
    /// A URL that does not parse (not echoed: it may hold a password in a
    /// place no parser recognises).
    #[error("invalid {scheme} store URL: {detail}")]
    Invalid {
        /// The scheme, or `store` when there is none.
        scheme: String,
        /// What is wrong.
        detail: String,
    },
}

fn expected_schemes() -> String {
    let mut s: Vec<&str> = Vec::new();
    if cfg!(feature = "postgres") {
        s.extend(["postgres://", "postgresql://"]);
    }
    if cfg!(feature = "mysql") {
        s.extend(["mysql://", "mariadb://"]);
    }
    if cfg!(feature = "sqlite") {
        s.push("sqlite:");
    }
    if cfg!(feature = "mongodb") {
        s.push("mongodb://");
    }
    if cfg!(feature = "dynamodb") {
        s.push("dynamodb://");
    }
    s.join(", ")
}

/// `url` without the query options named in `own`, and those options' values.
fn split_own_options(
    url: &str,
    own: &[&str],
) -> Result<(String, std::collections::HashMap<String, String>), String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut mine = std::collections::HashMap::new();
    let mut rest = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let k = part.split_once('=').map_or(part, |(k, _)| k);
        if own.contains(&k) {
            mine.extend(query_pairs(part)?);
        } else {
            rest.push(part);
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mine))
}

/// Splits `?a=b&c=d`, percent-decoding values.
fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| format!("query option '{k}' is not valid UTF-8 once decoded"))?;
        out.push((k.to_owned(), v.into_owned()));
    }
    Ok(out)
}

impl StoreUrl {
    /// The URL's scheme as this crate names it (`sqlite`, `postgres`, `mongodb`, `dynamodb`).
    pub fn scheme(&self) -> &'static str {
        match self {
            StoreUrl::Sqlite { .. } => "sqlite",
            StoreUrl::Postgres { .. } => "postgres",
            StoreUrl::Mysql { .. } => "mysql",
            StoreUrl::Mongodb { .. } => "mongodb",
            StoreUrl::Dynamodb { .. } => "dynamodb",
        }
    }

    /// Parses a store URL.
    ///
    /// ```
    /// use flamingock_cli::store::StoreUrl;
    /// assert!(matches!(StoreUrl::parse("sqlite::memory:"), Ok(StoreUrl::Sqlite { path: None })));
    /// let e = StoreUrl::parse("redis://u:secret@h").unwrap_err();
    /// assert!(e.to_string().contains("unknown store URL scheme 'redis'"));
    /// assert!(!e.to_string().contains("secret"));
    /// ```
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreUrlError::Missing);
        }
        let Some(colon) = url.find(':') else {
            return Err(StoreUrlError::Invalid {
                scheme: "store".into(),
                detail: "no scheme: write sqlite:PATH for a SQLite file, or postgres://...".into(),
            });
        };
        let scheme = url[..colon].to_ascii_lowercase();
        let invalid = |detail: String| StoreUrlError::Invalid {
            scheme: scheme.clone(),
            detail,
        };
        match scheme.as_str() {
            "sqlite" => {
                let rest = &url[colon + 1..];
                let path = rest.strip_prefix("//").unwrap_or(rest);
                let path = path.split_once('?').map_or(path, |(p, _)| p);
                if path == ":memory:" || path.is_empty() && rest.starts_with(":memory:") {
                    return Ok(StoreUrl::Sqlite { path: None });
                }
                if path.is_empty() {
                    return Err(invalid(
                        "no file path after `sqlite:` (e.g. sqlite:app.db)".into(),
                    ));
                }
                let decoded = percent_encoding::percent_decode_str(path)
                    .decode_utf8()
                    .map_err(|_| invalid("the path is not valid UTF-8".into()))?;
                Ok(StoreUrl::Sqlite {
                    path: Some(decoded.into_owned()),
                })
            }
            "postgres" | "postgresql" => {
                if !url[colon..].starts_with("://") {
                    return Err(invalid(
                        "expected postgres://[user[:password]@]host[:port]/database".into(),
                    ));
                }
                let (base, query) = url.split_once('?').unwrap_or((url, ""));
                let mut schema = None;
                let mut prefix = None;
                let mut connect_timeout = None;
                let mut pooler = false;
                let mut keep = Vec::new();
                for (k, v) in query_pairs(query).map_err(invalid)? {
                    match k.as_str() {
                        "schema" => schema = Some(v),
                        "prefix" => prefix = Some(v),
                        "pooler" => {
                            pooler = match v.as_str() {
                                "transaction" => true,
                                "session" | "none" => false,
                                other => return Err(invalid(format!(
                                    "pooler={other}: expected transaction (PgBouncer's pool_mode = transaction), session or none"
                                ))),
                            }
                        }
                        // sqlx ignores it; libpq reads whole seconds, at least 2.
                        "connect_timeout" => {
                            let secs: u64 = v.trim().parse().map_err(|_| {
                                invalid(format!("connect_timeout={v}: expected whole seconds"))
                            })?;
                            if secs == 0 {
                                return Err(invalid(
                                    "connect_timeout=0 (wait forever) is not supported: give seconds, e.g. connect_timeout=10".into(),
                                ));
                            }
                            connect_timeout = Some(std::time::Duration::from_secs(secs.max(2)));
                        }
                        _ => keep.push(k),
                    }
                }
                // Hand the driver its own options exactly as written (the
                // libpq-style spelling statement_cache_capacity as sqlx's).
                let rest: Vec<String> = query
                    .split('&')
                    .filter(|p| {
                        let k = p.split_once('=').map_or(*p, |(k, _)| k);
                        !p.is_empty() && keep.iter().any(|x| x == k)
                    })
                    .map(|p| match p.strip_prefix("statement_cache_capacity=") {
                        Some(v) => format!("statement-cache-capacity={v}"),
                        None => p.to_owned(),
                    })
                    .collect();
                let url = if rest.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", rest.join("&"))
                };
                plain("schema", schema.as_deref(), &[], PG_MAX_SCHEMA).map_err(invalid)?;
                plain("prefix", prefix.as_deref(), &[], PG_MAX_PREFIX).map_err(invalid)?;
                Ok(StoreUrl::Postgres {
                    url,
                    schema,
                    prefix,
                    connect_timeout,
                    pooler,
                })
            }
            "mysql" | "mariadb" if cfg!(feature = "mysql") => {
                if !url[colon..].starts_with("://") {
                    return Err(invalid(format!(
                        "expected {scheme}://[user[:password]@]host[:port]/database"
                    )));
                }
                let (rest, pairs) =
                    split_own_options(&url[colon..], &["prefix"]).map_err(invalid)?;
                let url = format!("mysql{rest}");
                let path = rest[3..].split_once('?').map_or(&rest[3..], |(r, _)| r);
                let database = path.split_once('/').map(|(_, db)| db).unwrap_or("");
                if database.is_empty() {
                    return Err(invalid(format!(
                        "no database: expected {scheme}://[user[:password]@]host[:port]/database"
                    )));
                }
                plain("database", Some(database), &[], 64).map_err(invalid)?;
                plain(
                    "prefix",
                    pairs.get("prefix").map(String::as_str),
                    &[],
                    64 - "_audit_history_change_idx".len(),
                )
                .map_err(invalid)?;
                Ok(StoreUrl::Mysql {
                    url,
                    prefix: pairs.get("prefix").cloned(),
                })
            }
            "mongodb" | "mongodb+srv" if cfg!(feature = "mongodb") => {
                let (uri, pairs) = split_own_options(url, &["prefix"]).map_err(invalid)?;
                let rest = &uri[colon + 3..];
                let rest = rest.split_once('?').map_or(rest, |(r, _)| r);
                let database = rest
                    .split_once('/')
                    .map(|(_, db)| db)
                    .filter(|db| !db.is_empty())
                    .unwrap_or("flamingock");
                let database = percent_encoding::percent_decode_str(database)
                    .decode_utf8()
                    .map_err(|_| invalid("the database name is not valid UTF-8".into()))?
                    .into_owned();
                plain("database", Some(&database), &['-'], 63).map_err(invalid)?;
                plain("prefix", pairs.get("prefix").map(String::as_str), &[], 100)
                    .map_err(invalid)?;
                Ok(StoreUrl::Mongodb {
                    uri: uri.clone(),
                    database,
                    prefix: pairs.get("prefix").cloned(),
                })
            }
            "dynamodb" if cfg!(feature = "dynamodb") => {
                let Some(rest) = url[colon..].strip_prefix("://") else {
                    return Err(invalid(
                        "expected dynamodb://[KEY:SECRET@]host:port?region=R".into(),
                    ));
                };
                let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
                let authority = authority.trim_end_matches('/');
                let pairs: std::collections::HashMap<String, String> =
                    query_pairs(query).map_err(invalid)?.into_iter().collect();
                for k in pairs.keys() {
                    if !matches!(k.as_str(), "region" | "prefix" | "tls" | "tlsCAFile") {
                        return Err(invalid(format!(
                            "unknown option '{k}' (known: region, prefix, tls, tlsCAFile)"
                        )));
                    }
                }
                let (credentials, host) = match authority.rsplit_once('@') {
                    Some((userinfo, host)) => {
                        let (k, s) = userinfo
                            .split_once(':')
                            .ok_or_else(|| invalid("credentials must be KEY:SECRET@".into()))?;
                        let dec = |v: &str| {
                            percent_encoding::percent_decode_str(v)
                                .decode_utf8()
                                .map(|c| c.into_owned())
                                .map_err(|_| invalid("credentials are not valid UTF-8".into()))
                        };
                        (Some((dec(k)?, dec(s)?)), host)
                    }
                    None => (None, authority),
                };
                let tls = match pairs.get("tls").map(String::as_str) {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return Err(invalid(format!("tls={other}: expected true or false")))
                    }
                };
                plain(
                    "prefix",
                    pairs.get("prefix").map(String::as_str),
                    &['-', '.'],
                    200,
                )
                .map_err(invalid)?;
                let ca_file = pairs.get("tlsCAFile").map(std::path::PathBuf::from);
                if ca_file.is_some() && !tls && !host.is_empty() {
                    return Err(invalid(
                        "tlsCAFile is for HTTPS endpoints: add tls=true".into(),
                    ));
                }
                let endpoint = (!host.is_empty())
                    .then(|| format!("{}://{host}", if tls { "https" } else { "http" }));
                Ok(StoreUrl::Dynamodb {
                    endpoint,
                    region: pairs.get("region").cloned(),
                    credentials,
                    prefix: pairs.get("prefix").cloned(),
                    ca_file,
                })
            }
            "mysql" | "mariadb" => Err(StoreUrlError::NotCompiled {
                scheme,
                feature: "mysql",
            }),
            "mongodb" | "mongodb+srv" => Err(StoreUrlError::NotCompiled {
                scheme,
                feature: "mongodb",
            }),
            "dynamodb" => Err(StoreUrlError::NotCompiled {
                scheme,
                feature: "dynamodb",
            }),
            _ => Err(StoreUrlError::UnknownScheme {
                scheme,
                expected: expected_schemes(),
            }),
        }
    }
}

/// An opened audit store, with its database as the target of file-based changes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum OpenedStore {
    /// SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(flamingock_sqlite::SqliteAuditStore),
    /// PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(flamingock_postgres::PostgresAuditStore),
    /// MySQL or MariaDB.
    #[cfg(feature = "mysql")]
    Mysql(flamingock_mysql::MysqlAuditStore),
    /// MongoDB (no SQL file changes).
    #[cfg(feature = "mongodb")]
    Mongodb(flamingock_mongodb::MongoAuditStore),
    /// DynamoDB (no SQL file changes).
    #[cfg(feature = "dynamodb")]
    Dynamodb(flamingock_dynamodb::DynamoAuditStore),
}

/// Longest PostgreSQL schema name (PostgreSQL truncates identifiers at 63 bytes).
const PG_MAX_SCHEMA: usize = 63;
/// Longest PostgreSQL table prefix: room for the longest suffix the backend
/// appends (`_audit_history_change_idx`).
const PG_MAX_PREFIX: usize = 63 - "_audit_history_change_idx".len();

/// A name the URL gives (schema, prefix, database) must be a plain
/// identifier: refused before anything is sent, so a typo never creates a
/// schema or table of that name.
fn plain(kind: &'static str, name: Option<&str>, also: &[char], max: usize) -> Result<(), String> {
    match name {
        Some(n) => {
            flamingock_core::names::plain_identifier(kind, n, also, max).map_err(|e| e.to_string())
        }
        None => Ok(()),
    }
}

/// Options for [`OpenedStore::open`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Overrides the URL's `?schema=` (PostgreSQL).
    pub schema: Option<String>,
}

impl OpenOptions {
    /// Checks the options against `url` before anything is sent: a
    /// `--schema` must be a plain identifier.
    pub fn check(&self, url: &StoreUrl) -> Result<(), StoreUrlError> {
        plain("schema", self.schema.as_deref(), &[], PG_MAX_SCHEMA).map_err(|detail| {
            StoreUrlError::Invalid {
                scheme: url.scheme().into(),
                detail: format!("--{detail}"),
            }
        })
    }
}

impl OpenedStore {
    /// Connects to the store `url` names. Fails when the server cannot be
    /// reached or refuses the credentials; the error never shows the password.
    pub async fn open(url: &StoreUrl, opts: &OpenOptions) -> Result<OpenedStore, StoreError> {
        let _ = opts;
        match url {
            #[cfg(feature = "sqlite")]
            StoreUrl::Sqlite { path } => {
                let store = match path {
                    None => flamingock_sqlite::SqliteAuditStore::connect("sqlite::memory:").await?,
                    Some(p) => flamingock_sqlite::SqliteAuditStore::connect(p).await?,
                };
                Ok(OpenedStore::Sqlite(store))
            }
            #[cfg(feature = "postgres")]
            StoreUrl::Postgres {
                url,
                schema,
                prefix,
                connect_timeout,
                pooler,
            } => {
                let schema = opts.schema.clone().or_else(|| schema.clone());
                let timeout = connect_timeout.unwrap_or(CONNECT_TIMEOUT);
                open_postgres(url, schema.as_deref(), prefix.as_deref(), timeout, *pooler)
                    .await
                    .map(OpenedStore::Postgres)
            }
            #[cfg(feature = "mysql")]
            StoreUrl::Mysql { url, prefix } => {
                let shown = format!("mysql({})", redact_url(url));
                let options: flamingock_mysql::sqlx::mysql::MySqlConnectOptions =
                    url.parse().map_err(|e: flamingock_mysql::sqlx::Error| {
                        StoreError::InvalidConfig {
                            store: shown.clone(),
                            detail: format!("invalid URL: {e}"),
                        }
                    })?;
                let pool = flamingock_mysql::sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(3)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(|e| StoreError::Backend {
                        store: shown.clone(),
                        operation: "connect",
                        source: flamingock_mysql::describe_error(&e).into(),
                    })?;
                let mut b = flamingock_mysql::MysqlAuditStore::builder(pool);
                if let Some(p) = prefix {
                    b = b.prefix(p);
                }
                b.build().await.map(OpenedStore::Mysql)
            }
            #[cfg(feature = "mongodb")]
            StoreUrl::Mongodb {
                uri,
                database,
                prefix,
            } => {
                let client = flamingock_mongodb::mongodb::Client::with_uri_str(uri)
                    .await
                    .map_err(|e| StoreError::Backend {
                        store: format!("mongodb({})", redact_url(uri)),
                        operation: "parse the connection string",
                        source: Box::new(e),
                    })?;
                let mut b = flamingock_mongodb::MongoAuditStore::builder(client, database);
                if let Some(p) = prefix {
                    b = b.prefix(p);
                }
                b.build().await.map(OpenedStore::Mongodb)
            }
            #[cfg(feature = "dynamodb")]
            StoreUrl::Dynamodb {
                endpoint,
                region,
                credentials,
                prefix,
                ca_file,
            } => {
                use flamingock_dynamodb::aws_sdk_dynamodb::config::{Credentials, Region};
                let mut options = flamingock_dynamodb::ConnectOptions::new();
                if let Some(e) = endpoint {
                    options = options.endpoint_url(e.clone());
                }
                if let Some(path) = ca_file {
                    let pem = std::fs::read(path).map_err(|e| StoreError::InvalidConfig {
                        store: "dynamodb".into(),
                        detail: format!("cannot read tlsCAFile {}: {e}", path.display()),
                    })?;
                    options = options.ca_certificate(pem);
                }
                let client = options
                    .connect()
                    .await
                    .map_err(|e| StoreError::InvalidConfig {
                        store: "dynamodb".into(),
                        detail: format!("tlsCAFile: {e}"),
                    })?;
                let mut conf = client.config().to_builder();
                if let Some(r) = region {
                    conf = conf.region(Region::new(r.clone()));
                }
                if let Some((key, secret)) = credentials {
                    conf = conf.credentials_provider(Credentials::new(
                        key,
                        secret,
                        None,
                        None,
                        "flamingock-cli store URL",
                    ));
                }
                let client = flamingock_dynamodb::aws_sdk_dynamodb::Client::from_conf(conf.build());
                let mut b = flamingock_dynamodb::DynamoAuditStore::builder(client);
                if let Some(p) = prefix {
                    b = b.prefix(p);
                }
                let store = b.build().await?;
                // Reach the endpoint now, so a wrong one fails here, clearly
                // (a read: it creates nothing, even when the table is missing).
                flamingock_core::AuditStore::fence(&store).await?;
                Ok(OpenedStore::Dynamodb(store))
            }
            #[allow(unreachable_patterns)]
            other => Err(StoreError::InvalidConfig {
                store: format!("{other:?}"),
                detail: "this build of flamingock-cli has no backend for it".into(),
            }),
        }
    }

    /// Whether SQL file changes on this store's database can be given a
    /// statement timeout ([`SqlChanges::statement_timeout`]).
    pub fn has_statement_timeout(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            OpenedStore::Postgres(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Behind a transaction pooler no session setting survives a
    /// transaction, so a `transactional=false` file can get neither the
    /// schema's `search_path` nor a statement timeout: such files are
    /// refused (listed, with what to do) before anything runs.
    pub fn check_session_state(
        &self,
        changes: &SqlChanges,
        statement_timeout: bool,
    ) -> Result<(), String> {
        let _ = (changes, statement_timeout);
        #[cfg(feature = "postgres")]
        #[allow(irrefutable_let_patterns)] // the only variant with postgres alone
        if let OpenedStore::Postgres(s) = self {
            if !s.is_behind_transaction_pooler() {
                return Ok(());
            }
            let schema = s.schema() != flamingock_postgres::DEFAULT_SCHEMA;
            let files: Vec<&str> = changes
                .files()
                .into_iter()
                .filter(|f| f.transactional() == Some(false))
                .map(|f| f.file_name())
                .collect();
            if files.is_empty() || !(schema || statement_timeout) {
                return Ok(());
            }
            let needs = match (schema, statement_timeout) {
                (true, true) => "the schema's search_path and the statement timeout",
                (true, false) => "the schema's search_path",
                _ => "the statement timeout",
            };
            return Err(format!(
                "behind a transaction pooler (pooler=transaction) a transactional=false file \
                 runs outside any transaction, where {needs} cannot be set (a session setting \
                 would stay on a server connection other clients share): {}. Qualify the \
                 names in these files and drop --statement-timeout (set statement_timeout for \
                 the role instead), or run them through a direct or session-pooled connection",
                files.join(", ")
            ));
        }
        Ok(())
    }

    /// Reads `tool`'s history table from this store's database (PostgreSQL
    /// and SQLite; `None` when there is no such table). Only reads.
    pub async fn read_history(
        &self,
        tool: flamingock_core::import::Tool,
        table: Option<&str>,
    ) -> Result<
        Option<flamingock_core::import::ForeignHistory>,
        flamingock_core::import::HistoryError,
    > {
        match self {
            #[cfg(feature = "sqlite")]
            OpenedStore::Sqlite(s) => flamingock_sqlite::read_history(s.pool(), tool, table).await,
            #[cfg(feature = "postgres")]
            OpenedStore::Postgres(s) => {
                flamingock_postgres::read_history(s.pool(), tool, table).await
            }
            #[allow(unreachable_patterns)]
            _ => Err(flamingock_core::import::HistoryError::BadName {
                tool,
                table: table.unwrap_or(tool.default_table()).to_owned(),
                detail: "the command line reads other tools' history from a SQL store \
                         (sqlite: or postgres://)"
                    .into(),
            }),
        }
    }

    /// Whether SQL file changes can run on this store's database.
    pub fn runs_sql(&self) -> bool {
        match self {
            #[cfg(feature = "sqlite")]
            OpenedStore::Sqlite(_) => true,
            #[cfg(feature = "postgres")]
            OpenedStore::Postgres(_) => true,
            #[cfg(feature = "mysql")]
            OpenedStore::Mysql(_) => true,
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// A runner builder on this store (its own lock), with its database as
    /// target [`TARGET_ID`] and, when given, the file-based `changes` in one
    /// stage ([`DEFAULT_STAGE`]; ignored by stores that do not
    /// [run SQL](Self::runs_sql)).
    ///
    /// # Errors
    /// The target's settings are refused (see the backends' target builders).
    pub async fn builder(
        &self,
        changes: Option<&SqlChanges>,
    ) -> Result<FlamingockBuilder, flamingock_core::TargetError> {
        let b = Flamingock::builder().service("flamingock-cli");
        match self {
            #[cfg(feature = "sqlite")]
            OpenedStore::Sqlite(s) => {
                let target = s.shared_target(TARGET_ID).build().await?;
                let b = b.audit_store(s.clone()).target(target);
                Ok(match changes {
                    Some(c) => b.stage(
                        c.stage::<flamingock_sqlite::SqliteTarget>(DEFAULT_STAGE, TARGET_ID),
                    ),
                    None => b,
                })
            }
            #[cfg(feature = "postgres")]
            OpenedStore::Postgres(s) => {
                let mut target = s.shared_target(TARGET_ID);
                if s.schema() != flamingock_postgres::DEFAULT_SCHEMA {
                    // Each change's transaction sets the path itself (SET
                    // LOCAL, in BEGIN's round trip), also where the
                    // connection's own setting is there: behind a transaction
                    // pooler nobody declared, the connection's SET went to
                    // one server connection and the change's transaction may
                    // run on another, which put tables in `public`.
                    target = target.search_path(search_path(s.schema()));
                }
                let b = b.audit_store(s.clone()).target(target.build().await?);
                Ok(match changes {
                    Some(c) => b.stage(
                        c.stage::<flamingock_postgres::PostgresTarget>(DEFAULT_STAGE, TARGET_ID),
                    ),
                    None => b,
                })
            }
            #[cfg(feature = "mysql")]
            OpenedStore::Mysql(s) => {
                let b = b
                    .audit_store(s.clone())
                    .target(s.shared_target(TARGET_ID).build().await?);
                Ok(match changes {
                    Some(c) => {
                        b.stage(c.stage::<flamingock_mysql::MysqlTarget>(DEFAULT_STAGE, TARGET_ID))
                    }
                    None => b,
                })
            }
            #[cfg(feature = "mongodb")]
            OpenedStore::Mongodb(s) => Ok(b.audit_store(s.clone())),
            #[cfg(feature = "dynamodb")]
            OpenedStore::Dynamodb(s) => Ok(b.audit_store(s.clone())),
            // Without any store feature the enum is empty.
            #[allow(unreachable_patterns)]
            _ => {
                let _ = changes;
                Ok(b)
            }
        }
    }
}

/// How long connecting to a server may take, unless the URL's
/// `?connect_timeout=` says otherwise.
#[cfg(any(feature = "postgres", feature = "mysql"))]
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// The `search_path` of SQL file changes on schema `schema`.
#[cfg(feature = "postgres")]
fn search_path(schema: &str) -> String {
    format!("{}, public", flamingock_postgres::quote_ident(schema))
}

#[cfg(feature = "postgres")]
async fn open_postgres(
    url: &str,
    schema: Option<&str>,
    prefix: Option<&str>,
    connect_timeout: std::time::Duration,
    pooler: bool,
) -> Result<flamingock_postgres::PostgresAuditStore, StoreError> {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
    use sqlx::ConnectOptions;

    flamingock_postgres::install_tls_provider();
    let shown = format!("postgres({})", redact_url(url));
    // PostgreSQL's own words (message, SQLSTATE, hint), without sqlx's line
    // of the server's C source that reads like a line of the user's file.
    let backend = |operation: &'static str, e: sqlx::Error| StoreError::Backend {
        store: shown.clone(),
        operation,
        source: flamingock_postgres::describe_error(&e).into(),
    };
    let mut options = PgConnectOptions::from_str(url)
        .map_err(|e| backend("parse the URL", e))?
        // A slow migration statement is no warning (seen with -v).
        .log_slow_statements(log::LevelFilter::Info, std::time::Duration::from_secs(1))
        // sqlx sends it by default and PgBouncer refuses it; floats are read in binary.
        .extra_float_digits(None);
    if pooler {
        // Named statements do not survive a transaction pooler.
        options = options.statement_cache_capacity(0);
    }
    let no_answer = || StoreError::Backend {
        store: shown.clone(),
        operation: "connect",
        source: format!(
            "no answer within {} (?connect_timeout=SECONDS changes the limit)",
            crate::duration::show(connect_timeout)
        )
        .into(),
    };
    // A refused connection fails at once (the pool would retry it until its
    // acquire timeout) and a black-holed host after the connect timeout: a
    // bare socket connect, which the server does not even log.
    match tokio::time::timeout(connect_timeout, reach(&options)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(backend("connect", sqlx::Error::Io(e))),
        Err(_) => return Err(no_answer()),
    }
    let mut pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(connect_timeout);
    if let (Some(s), false) = (schema, pooler) {
        // Unqualified names in SQL files land in the store's schema: a
        // session setting of each connection (a `search_path` startup option
        // would be refused by PgBouncer). Behind a transaction pooler each
        // change's transaction sets it instead (see `OpenedStore::builder`).
        let set: std::sync::Arc<str> = format!("SET search_path = {}", search_path(s)).into();
        pool = pool.after_connect(move |conn, _| {
            let set = set.clone();
            Box::pin(async move {
                use sqlx::Executor;
                conn.execute(sqlx::AssertSqlSafe(&*set)).await.map(drop)
            })
        });
    }
    let pool = pool.connect_lazy_with(options);
    // The session the whole command then uses: opened here so that bad
    // credentials or a server that never answers are reported as such, and
    // given back to the pool, so a start with nothing pending opens one
    // connection in all.
    match tokio::time::timeout(connect_timeout, pool.acquire()).await {
        Ok(Ok(conn)) => drop(conn),
        Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => return Err(no_answer()),
        Ok(Err(e)) => return Err(backend("connect", e)),
    }
    let mut b = flamingock_postgres::PostgresAuditStore::builder(pool).transaction_pooler(pooler);
    if let Some(s) = schema {
        b = b.schema(s);
    }
    if let Some(p) = prefix {
        b = b.prefix(p);
    }
    b.build().await
}

/// Whether the server's socket accepts a connection (TCP, or the Unix
/// socket of a `host=/dir` URL); nothing is sent.
#[cfg(feature = "postgres")]
async fn reach(options: &sqlx::postgres::PgConnectOptions) -> std::io::Result<()> {
    let port = options.get_port();
    #[cfg(unix)]
    if let Some(dir) = options.get_socket() {
        let path = if dir.is_dir() {
            dir.join(format!(".s.PGSQL.{port}"))
        } else {
            dir.clone()
        };
        return tokio::net::UnixStream::connect(path).await.map(drop);
    }
    tokio::net::TcpStream::connect((options.get_host(), port))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamingock_core::error::ErrorChain as _;

    #[test]
    fn sqlite_urls() {
        for (url, path) in [
            ("sqlite:app.db", Some("app.db")),
            ("sqlite://app.db", Some("app.db")),
            ("sqlite:///tmp/x y.db", Some("/tmp/x y.db")),
            ("sqlite:/tmp/x%20y.db", Some("/tmp/x y.db")),
            ("sqlite:app.db?mode=rwc", Some("app.db")),
            ("sqlite::memory:", None),
            ("sqlite://:memory:", None),
        ] {
            assert_eq!(
                StoreUrl::parse(url).expect(url),
                StoreUrl::Sqlite {
                    path: path.map(str::to_owned)
                },
                "{url}"
            );
        }
        assert!(StoreUrl::parse("sqlite:").is_err());
    }

    #[test]
    fn postgres_urls_keep_driver_options_and_take_ours() {
        let u = StoreUrl::parse("postgresql://u:p@h:5432/db?sslmode=disable&schema=ops%5Fx&prefix=fk&application_name=a")
            .expect("parses");
        assert_eq!(
            u,
            StoreUrl::Postgres {
                url: "postgresql://u:p@h:5432/db?sslmode=disable&application_name=a".into(),
                schema: Some("ops_x".into()),
                prefix: Some("fk".into()),
                connect_timeout: None,
                pooler: false,
            }
        );
        // Pooler and statement cache: ours, and the libpq spelling as sqlx's.
        let u = StoreUrl::parse(
            "postgres://h/db?pooler=transaction&statement_cache_capacity=0&sslmode=verify-full&sslrootcert=/ca.pem",
        )
        .expect("parses");
        assert!(
            matches!(
                &u,
                StoreUrl::Postgres { url, pooler: true, .. }
                    if url == "postgres://h/db?statement-cache-capacity=0&sslmode=verify-full&sslrootcert=/ca.pem"
            ),
            "{u:?}"
        );
        assert!(StoreUrl::parse("postgres://h/db?pooler=statement")
            .is_err_and(|e| e.chain().to_string().contains("expected transaction")));
        // Names that are not plain identifiers never reach the server.
        for bad in [
            "schema=ops%20x",
            "schema=bad%22name",
            "prefix=a-b",
            "schema=",
        ] {
            let e = StoreUrl::parse(&format!("postgres://h/db?{bad}")).expect_err(bad);
            assert!(
                e.chain().to_string().contains("is not a plain identifier"),
                "{bad}: {e}"
            );
        }
        // connect_timeout is ours (sqlx ignores it), in seconds like libpq.
        let u =
            StoreUrl::parse("postgres://h/db?connect_timeout=3&sslmode=disable").expect("parses");
        assert!(
            matches!(&u, StoreUrl::Postgres { url, connect_timeout: Some(t), .. }
                if url == "postgres://h/db?sslmode=disable" && *t == std::time::Duration::from_secs(3)),
            "{u:?}"
        );
        let u = StoreUrl::parse("postgres://h/db?connect_timeout=1").expect("parses");
        assert!(
            matches!(u, StoreUrl::Postgres { connect_timeout: Some(t), .. } if t.as_secs() == 2)
        );
        for bad in [
            "postgres://h/db?connect_timeout=0",
            "postgres://h/db?connect_timeout=5s",
        ] {
            let e = StoreUrl::parse(bad).expect_err(bad);
            assert!(e.chain().to_string().contains("connect_timeout"), "{e}");
        }
        assert!(!format!("{u:?}").contains(":p@"), "{u:?}");
        let u = StoreUrl::parse("postgres://h/db").expect("parses");
        assert!(matches!(u, StoreUrl::Postgres { schema: None, .. }));
        assert!(StoreUrl::parse("postgres:h/db").is_err());
    }

    #[test]
    fn bad_schemes_are_named_and_never_show_the_password() {
        for url in [
            "oracle://root:hunter2@db/app",
            "HTTP://a:hunter2@b",
            "postgres:x:hunter2@h",
        ] {
            let e = StoreUrl::parse(url).expect_err(url).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
        let e = StoreUrl::parse("oracle://root:hunter2@db/app").expect_err("oracle");
        assert!(
            e.chain()
                .to_string()
                .contains("unknown store URL scheme 'oracle'"),
            "{e}"
        );
        // MySQL: parsed, the password never shown, the database required.
        let u = StoreUrl::parse("mariadb://root:hunter2@db:3306/app?prefix=ops").expect("mysql");
        assert_eq!(u.scheme(), "mysql");
        assert!(!format!("{u:?}").contains("hunter2"), "{u:?}");
        let e = StoreUrl::parse("mysql://root:hunter2@db").expect_err("no database");
        assert!(e.chain().to_string().contains("no database"), "{e}");
        assert!(!e.chain().to_string().contains("hunter2"), "{e}");
        #[cfg(not(feature = "mongodb"))]
        assert!(matches!(
            StoreUrl::parse("mongodb://h:27017/db"),
            Err(StoreUrlError::NotCompiled {
                feature: "mongodb",
                ..
            })
        ));
        #[cfg(not(feature = "dynamodb"))]
        assert!(matches!(
            StoreUrl::parse("dynamodb://localhost:8000"),
            Err(StoreUrlError::NotCompiled {
                feature: "dynamodb",
                ..
            })
        ));
        assert!(matches!(StoreUrl::parse("  "), Err(StoreUrlError::Missing)));
    }

    #[cfg(feature = "mongodb")]
    #[test]
    fn mongodb_urls() {
        let u = StoreUrl::parse("mongodb://u:p@h1:27017,h2/app?replicaSet=rs0&prefix=fk")
            .expect("parses");
        assert_eq!(
            u,
            StoreUrl::Mongodb {
                uri: "mongodb://u:p@h1:27017,h2/app?replicaSet=rs0".into(),
                database: "app".into(),
                prefix: Some("fk".into()),
            }
        );
        assert!(!format!("{u:?}").contains(":p@"));
        let u = StoreUrl::parse("mongodb://h").expect("parses");
        assert!(
            matches!(u, StoreUrl::Mongodb { ref database, .. } if database == "flamingock"),
            "{u:?}"
        );
    }

    #[cfg(feature = "dynamodb")]
    #[test]
    fn dynamodb_urls() {
        let u =
            StoreUrl::parse("dynamodb://AKIA:s%2Fecret@127.0.0.1:8000?region=eu-west-1&prefix=fk")
                .expect("parses");
        assert_eq!(
            u,
            StoreUrl::Dynamodb {
                endpoint: Some("http://127.0.0.1:8000".into()),
                region: Some("eu-west-1".into()),
                credentials: Some(("AKIA".into(), "s/ecret".into())),
                prefix: Some("fk".into()),
                ca_file: None,
            }
        );
        assert!(!format!("{u:?}").contains("ecret"));
        let u = StoreUrl::parse("dynamodb://?region=us-east-2").expect("parses");
        assert!(
            matches!(u, StoreUrl::Dynamodb { endpoint: None, .. }),
            "{u:?}"
        );
        let u = StoreUrl::parse("dynamodb://ddb.example.com?tls=true").expect("parses");
        assert!(
            matches!(u, StoreUrl::Dynamodb { endpoint: Some(ref e), .. } if e == "https://ddb.example.com"),
            "{u:?}"
        );
        assert!(StoreUrl::parse("dynamodb://h?colour=blue").is_err());
        let u = StoreUrl::parse("dynamodb://localhost:4566?tls=true&tlsCAFile=/etc/ca.pem")
            .expect("parses");
        assert!(
            matches!(u, StoreUrl::Dynamodb { ca_file: Some(ref p), .. } if p == std::path::Path::new("/etc/ca.pem")),
            "{u:?}"
        );
        let err = StoreUrl::parse("dynamodb://localhost:4566?tlsCAFile=/etc/ca.pem")
            .expect_err("a CA without TLS");
        assert!(err.chain().to_string().contains("add tls=true"), "{err}");
    }
}
