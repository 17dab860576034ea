//! Keeping secrets out of everything the CLI prints.
//!
//! Drivers sometimes echo the connection URL in their errors, and logs may
//! quote it too. Every line the CLI writes (results, errors, logs) passes
//! through a [`Redactor`] that knows the password of the store URL (as typed
//! and percent-decoded) and also masks the password part of any
//! `scheme://user:password@host` it sees.

use std::borrow::Cow;
use std::io::Write;
use std::sync::Arc;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Masks known secrets and URL passwords in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// A redactor that also masks the password of `url` wherever it appears
    /// (as written and percent-decoded), and the query values of keys that
    /// look secret (`password`, `secret`, `token`, ...).
    pub fn for_url(url: &str) -> Redactor {
        let mut secrets = Vec::new();
        if let Some(pw) = url_password(url) {
            if let Ok(decoded) = percent_encoding::percent_decode_str(pw).decode_utf8() {
                if decoded != pw {
                    secrets.push(decoded.into_owned());
                }
            }
            secrets.push(pw.to_owned());
        }
        if let Some((_, query)) = url.split_once('?') {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if is_secret_key(k) && !v.is_empty() {
                        if let Ok(decoded) = percent_encoding::percent_decode_str(v).decode_utf8() {
                            secrets.push(decoded.into_owned());
                        }
                        secrets.push(v.to_owned());
                    }
                }
            }
        }
        // Longest first, so a secret containing another is masked whole.
        secrets.retain(|s| s.len() >= 2);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor {
            secrets: Arc::new(secrets),
        }
    }

    /// `text` with every known secret and every URL password masked.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        match mask_url_passwords(&out) {
            Some(masked) => Cow::Owned(masked),
            None => out,
        }
    }
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "key", "credential"]
        .iter()
        .any(|s| k.contains(s))
}

/// The password part of `scheme://user:password@host...`, as written.
fn url_password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then_some(pw)
}

/// `postgres://u:secret@h/db` → `postgres://u:***@h/db`, for a URL alone.
pub fn redact_url(url: &str) -> String {
    mask_url_passwords(url).unwrap_or_else(|| url.to_owned())
}

/// Masks the password of every `scheme://user:password@` in `text`;
/// `None` when there is none.
fn mask_url_passwords(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text;
    let mut changed = false;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The authority ends at the first character a URL authority cannot hold.
        let end = tail
            .find(|c: char| {
                c.is_whitespace()
                    || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`' | ')')
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@').and_then(|at| {
            let userinfo = &authority[..at];
            userinfo.find(':').map(|colon| (colon, at))
        }) {
            Some((colon, at)) if at > colon + 1 => {
                out.push_str(&authority[..=colon]);
                out.push_str(MASK);
                out.push_str(&authority[at..]);
                changed = true;
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// A `Write` that redacts each write (used for the log writer).
pub(crate) struct RedactingWriter<W> {
    inner: W,
    redactor: Redactor,
}

impl<W: Write> RedactingWriter<W> {
    pub(crate) fn new(inner: W, redactor: Redactor) -> Self {
        RedactingWriter { inner, redactor }
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber's fmt layer writes one whole event per call.
        let text = String::from_utf8_lossy(buf);
        self.inner
            .write_all(self.redactor.redact(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_url_passwords_anywhere() {
        assert_eq!(
            redact_url("postgres://u:p4ss@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite:app.db"), "sqlite:app.db");
        let r = Redactor::default();
        assert_eq!(
            r.redact("cannot connect to 'mongodb://a:b%40c@h1,h2/x?tls=true' (timeout); retry postgresql://x:y@z"),
            "cannot connect to 'mongodb://a:***@h1,h2/x?tls=true' (timeout); retry postgresql://x:***@z"
        );
        assert_eq!(r.redact("no urls here"), "no urls here");
    }

    #[test]
    fn masks_known_secrets_even_outside_urls() {
        let r = Redactor::for_url(
            "postgres://ana:s3cr%40t!@db:5432/app?sslmode=require&password=other&token=tk123",
        );
        let leak = "auth failed for ana with s3cr@t! (raw s3cr%40t!), also other and tk123";
        let shown = r.redact(leak);
        for secret in ["s3cr@t!", "s3cr%40t!", "other", "tk123"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert!(shown.contains("ana"), "{shown}");
    }

    #[test]
    fn no_password_no_secrets() {
        let r = Redactor::for_url("postgres://postgres@127.0.0.1:5432/test");
        assert_eq!(
            r.redact("postgres://postgres@127.0.0.1:5432/test"),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }

    #[test]
    fn writer_redacts() {
        let r = Redactor::for_url("dynamodb://AKIA:verysecret@localhost:8000?region=eu-west-1");
        let mut w = RedactingWriter::new(Vec::new(), r);
        w.write_all(b"key verysecret used").expect("write");
        assert_eq!(String::from_utf8(w.inner).expect("utf8"), "key *** used");
    }
}
