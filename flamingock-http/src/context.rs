//! What an HTTP API change receives.

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;

/// An error of [`HttpContext`]'s helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The API answered with a status that is not a success.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The status.
        status: StatusCode,
        /// The start of the response body.
        body: String,
    },
    /// The resource changed since it was read (`412 Precondition Failed` on
    /// a compare-and-set): nothing was written.
    #[error("{url} changed since it was read (ETag {expected} no longer matches): nothing was written; read it again and decide")]
    Conflict {
        /// The URL.
        url: String,
        /// The `ETag` the write expected.
        expected: String,
    },
    /// No answer (connection refused, timeout) or an unreadable one.
    #[error("{method} {url} failed")]
    Request {
        /// The method.
        method: Method,
        /// The URL.
        url: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
}

/// A change's view of the API: requests relative to the target's base URL,
/// with its token.
#[derive(Debug)]
pub struct HttpContext {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// How much of an error body an error carries.
const BODY_EXCERPT: usize = 300;

impl HttpContext {
    pub(crate) fn new(client: reqwest::Client, base: String, token: Option<String>) -> Self {
        HttpContext {
            client,
            base,
            token,
        }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// A request to `path`, with the target's token: for anything the
    /// helpers do not cover.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let rb = self.client.request(method, self.url(path));
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        rb: RequestBuilder,
    ) -> Result<Response, HttpError> {
        rb.send().await.map_err(|source| HttpError::Request {
            method,
            url: self.url(path),
            source,
        })
    }

    async fn fail(method: Method, url: String, r: Response) -> HttpError {
        let status = r.status();
        let body = r.text().await.unwrap_or_default();
        let mut body: String = body.chars().take(BODY_EXCERPT).collect();
        if body.is_empty() {
            body = "(no body)".into();
        }
        HttpError::Status {
            method,
            url,
            status,
            body,
        }
    }

    /// The JSON at `path`, or `None` when the API answers 404.
    pub async fn get_json(&mut self, path: &str) -> Result<Option<Value>, HttpError> {
        Ok(self.get_with_etag(path).await?.map(|(v, _)| v))
    }

    /// The JSON at `path` and its `ETag` (if the API sends one), or `None` on 404.
    pub async fn get_with_etag(
        &mut self,
        path: &str,
    ) -> Result<Option<(Value, Option<String>)>, HttpError> {
        let r = self
            .send(Method::GET, path, self.request(Method::GET, path))
            .await?;
        match r.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let etag = r
                    .headers()
                    .get(reqwest::header::ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let v = r.json().await.map_err(|source| HttpError::Request {
                    method: Method::GET,
                    url: self.url(path),
                    source,
                })?;
                Ok(Some((v, etag)))
            }
            _ => Err(Self::fail(Method::GET, self.url(path), r).await),
        }
    }

    /// PUTs `body` to `path`.
    pub async fn put_json(&mut self, path: &str, body: &Value) -> Result<(), HttpError> {
        let r = self
            .send(
                Method::PUT,
                path,
                self.request(Method::PUT, path).json(body),
            )
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(Self::fail(Method::PUT, self.url(path), r).await)
        }
    }

    /// PUTs `body` to `path` unless the API already holds exactly that;
    /// returns whether it wrote.
    pub async fn put_if_changed(&mut self, path: &str, body: &Value) -> Result<bool, HttpError> {
        if self.get_json(path).await?.as_ref() == Some(body) {
            return Ok(false);
        }
        self.put_json(path, body).await?;
        Ok(true)
    }

    /// Compare-and-set: PUTs `body` to `path` with `If-Match: <etag>`; a
    /// resource changed meanwhile (412) is [`HttpError::Conflict`] and nothing
    /// is written.
    pub async fn put_if_match(
        &mut self,
        path: &str,
        etag: &str,
        body: &Value,
    ) -> Result<(), HttpError> {
        let rb = self
            .request(Method::PUT, path)
            .header(reqwest::header::IF_MATCH, etag)
            .json(body);
        let r = self.send(Method::PUT, path, rb).await?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::PRECONDITION_FAILED => Err(HttpError::Conflict {
                url: self.url(path),
                expected: etag.to_owned(),
            }),
            _ => Err(Self::fail(Method::PUT, self.url(path), r).await),
        }
    }

    /// DELETEs `path`; a 404 counts as done.
    pub async fn delete(&mut self, path: &str) -> Result<(), HttpError> {
        let r = self
            .send(Method::DELETE, path, self.request(Method::DELETE, path))
            .await?;
        match r.status() {
            s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(()),
            _ => Err(Self::fail(Method::DELETE, self.url(path), r).await),
        }
    }
}
