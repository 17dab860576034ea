//! The HTTP API target system.

use std::time::Duration;

use flamingock_core::{CommitWith, ContextMode, TargetCapabilities, TargetError, TargetSystem};

use crate::context::HttpContext;

/// A service's HTTP API that changes call. Non-transactional.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    id: String,
    base: String,
    client: reqwest::Client,
    token: Option<String>,
}

/// Configures an [`HttpTarget`].
#[derive(Debug, Clone)]
#[must_use]
pub struct HttpTargetBuilder {
    id: String,
    base: String,
    token: Option<String>,
    timeout: Duration,
}

impl HttpTarget {
    /// A builder for a target named `id` whose paths are relative to `base`
    /// (`http://host:port`, optionally with a path prefix).
    pub fn builder(id: impl Into<String>, base: impl Into<String>) -> HttpTargetBuilder {
        HttpTargetBuilder {
            id: id.into(),
            base: base.into(),
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

impl HttpTargetBuilder {
    /// Sends `Authorization: Bearer <token>` with every request (never logged).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// The bound of each request (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the base URL. Does no I/O.
    ///
    /// # Errors
    /// [`TargetError::Unsupported`] when the base URL does not parse as `http://` or `https://`.
    pub async fn build(self) -> Result<HttpTarget, TargetError> {
        let invalid = |detail: String| TargetError::Unsupported {
            target: self.id.clone(),
            detail,
        };
        let url = reqwest::Url::parse(&self.base)
            .map_err(|e| invalid(format!("base URL '{}': {e}", self.base)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "base URL '{}' is not http:// or https://",
                self.base
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        Ok(HttpTarget {
            id: self.id,
            base: self.base.trim_end_matches('/').to_owned(),
            client,
            token: self.token,
        })
    }
}

impl TargetSystem for HttpTarget {
    type Context = HttpContext;

    fn id(&self) -> &str {
        &self.id
    }

    fn capabilities(&self) -> TargetCapabilities {
        TargetCapabilities::non_transactional()
    }

    async fn begin(&self, _mode: ContextMode) -> Result<HttpContext, TargetError> {
        Ok(HttpContext::new(
            self.client.clone(),
            self.base.clone(),
            self.token.clone(),
        ))
    }

    async fn commit(&self, _ctx: HttpContext, with: CommitWith<'_>) -> Result<(), TargetError> {
        match with {
            CommitWith::Nothing => Ok(()),
            _ => Err(TargetError::Unsupported {
                target: self.id.clone(),
                detail: "an HTTP API has no transaction to commit an audit entry or a marker in"
                    .into(),
            }),
        }
    }

    async fn abort(&self, _ctx: HttpContext) -> Result<(), TargetError> {
        Ok(())
    }
}
