//! Recognising why a TLS handshake was refused, so that every backend can
//! say what to do about it in its own words (which option names the CA, how
//! TLS is turned off).
//!
//! The drivers of every backend use rustls, whose verdicts reach the caller
//! only as text, wrapped differently by each driver (an I/O error, a server
//! selection error, an HTTP dispatch failure). One reading of that text lives
//! here.

/// Why a TLS connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRefusal {
    /// The server's certificate is not signed by an authority the client
    /// trusts: the client needs the CA that signed it.
    UnknownAuthority,
    /// The certificate does not name the host the client connected to.
    NameMismatch,
    /// The server does not speak TLS on that port (its first bytes are not a
    /// TLS record), or refused to start TLS.
    NotTls,
}

impl TlsRefusal {
    /// Reads a driver error's text (with its causes, in any case).
    ///
    /// ```
    /// use flamingock_core::tls::TlsRefusal;
    /// let text = "I/O error: invalid peer certificate: UnknownIssuer";
    /// assert_eq!(TlsRefusal::recognise(text), Some(TlsRefusal::UnknownAuthority));
    /// assert_eq!(TlsRefusal::recognise("connection refused"), None);
    /// ```
    pub fn recognise(text: &str) -> Option<TlsRefusal> {
        let text = text.to_ascii_lowercase();
        let any = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
        if any(&["unknownissuer", "unknown issuer", "unknownca", "unknown ca"]) {
            Some(TlsRefusal::UnknownAuthority)
        } else if any(&["notvalidforname", "not valid for name"]) {
            Some(TlsRefusal::NameMismatch)
        } else if any(&[
            "does not support tls",
            "does not support ssl",
            "corrupt message",
            "invalidcontenttype",
            "invalid content type",
            "wrong version number",
        ]) {
            Some(TlsRefusal::NotTls)
        } else {
            None
        }
    }

    /// What went wrong, in a few words, without the remedy (each backend
    /// adds the option that fixes it).
    pub fn what(self) -> &'static str {
        match self {
            TlsRefusal::UnknownAuthority => {
                "the server's certificate is not signed by an authority this client trusts"
            }
            TlsRefusal::NameMismatch => {
                "the server's certificate does not name the host this client connected to"
            }
            TlsRefusal::NotTls => "the server does not accept TLS on that port",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TlsRefusal;

    #[test]
    fn reads_the_verdicts_of_rustls_as_drivers_wrap_them() {
        for (text, want) in [
            (
                "Server selection timeout: ... Error: Kind: I/O error: invalid peer certificate: UnknownIssuer",
                TlsRefusal::UnknownAuthority,
            ),
            (
                "invalid peer certificate: certificate not valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"localhost\")",
                TlsRefusal::NameMismatch,
            ),
            (
                "invalid peer certificate: NotValidForName",
                TlsRefusal::NameMismatch,
            ),
            (
                "dispatch failure: io error: received corrupt message of type InvalidContentType",
                TlsRefusal::NotTls,
            ),
            (
                "error communicating with database: server does not support TLS",
                TlsRefusal::NotTls,
            ),
        ] {
            assert_eq!(TlsRefusal::recognise(text), Some(want), "{text}");
        }
        assert_eq!(
            TlsRefusal::recognise("connection refused (os error 111)"),
            None
        );
    }
}
